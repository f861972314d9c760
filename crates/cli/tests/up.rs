//! End to end: `podmesh up` runs the quickstart manifests for real (pods as network namespaces, each meshed pod
//! with its capture rules and sidecar, the control plane, cluster DNS and Service NAT), and real clients (curl for
//! HTTP/1.1, nghttp for HTTP/2 over h2c, a raw TCP client in python3) make the R9 matrix's requests from inside
//! the pods with `podmesh exec`. Every row is checked against `podmesh explain` on the same manifests: the reason code (from
//! the `x-podmesh-reason` header, or for a refused TCP connection from the deciding sidecar's access log), and
//! which pods served.
//!
//! Each mesh lives in the private namespaces `podmesh up` makes, so nothing on the host changes; it runs in the
//! foreground under `setpriv --pdeathsig`, so it ends with the test however the test ends, and `down` stops it
//! when the test is done. Needs root (CI) or unprivileged user namespaces, and curl, nghttp (nghttp2-client) and
//! python3; without namespaces each test says so and passes without running.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn podmesh() -> &'static str {
    env!("CARGO_BIN_EXE_podmesh")
}

fn examples(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

fn can_run(test: &str) -> bool {
    // The clients run in the pods are the machine's own: say which is missing rather than fail on it later.
    let missing: Vec<&str> =
        [("curl", "curl"), ("nghttp", "nghttp2-client"), ("python3", "python3"), ("pkill", "procps")]
            .into_iter()
            .filter(|(tool, _)| {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .map(|(_, package)| package)
            .collect();
    assert!(missing.is_empty(), "{test} needs these packages: apt-get install -y {}", missing.join(" "));
    if is_root()
        || Command::new("unshare").args(["--user", "--map-root-user", "true"]).status().is_ok_and(|s| s.success())
    {
        return true;
    }
    eprintln!("SKIPPED {test}: needs root, or unprivileged user namespaces");
    false
}

/// A running local mesh.
struct Mesh {
    state: PathBuf,
    up: Child,
    /// The manifests it was started from (what `explain` is given).
    files: Vec<PathBuf>,
    /// The podmesh binary, and the user every command runs as (None: this process's).
    bin: PathBuf,
    user: Option<u32>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = self.podmesh(&["down"]);
        let _ = self.up.kill();
        let _ = self.up.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.state);
        } else {
            eprintln!("the mesh's state and logs are kept in {}", self.state.display());
        }
    }
}

impl Mesh {
    /// Starts `podmesh up` on `files` and waits (at most 90 s) until every pod is ready.
    fn start(test: &str, files: &[PathBuf]) -> Mesh {
        Mesh::start_as(test, files, None)
    }

    /// The same, as `user` (with a copy of the binary it can run, in a state directory it owns).
    fn start_as(test: &str, files: &[PathBuf], user: Option<u32>) -> Mesh {
        let mesh = Mesh::spawn(test, files, user);
        mesh.wait_ready(Duration::from_secs(90));
        mesh
    }

    /// Starts `podmesh up`, not waiting for anything.
    fn spawn(test: &str, files: &[PathBuf], user: Option<u32>) -> Mesh {
        let state = std::env::temp_dir().join(format!("pm-up-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(state.join("bin")).unwrap();
        let bin = match user {
            None => PathBuf::from(podmesh()),
            Some(uid) => {
                let bin = state.join("bin/podmesh");
                std::fs::copy(podmesh(), &bin).unwrap();
                let chown = Command::new("chown").args(["-R", &format!("{uid}:{uid}")]).arg(&state).status();
                assert!(chown.unwrap().success());
                bin
            }
        };
        let log = std::fs::File::create(state.join("test-up.log")).unwrap();
        let mut cmd = Command::new("setpriv");
        if let Some(uid) = user {
            cmd.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups"]);
        }
        cmd.args(["--pdeathsig", "KILL", "--"]).arg(&bin).args(["up", "--state"]).arg(&state);
        for f in files {
            cmd.arg("-f").arg(f);
        }
        // A process group of its own, as a terminal gives a foreground command (Ctrl-C signals the whole group).
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let up = cmd.stdin(Stdio::null()).stdout(log.try_clone().unwrap()).stderr(log).spawn().unwrap();
        Mesh { state, up, files: files.to_vec(), bin, user }
    }

    fn podmesh(&self, args: &[&str]) -> Output {
        let mut cmd = match self.user {
            None => Command::new(&self.bin),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.args(["--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups", "--"]);
                c.arg(&self.bin);
                c
            }
        };
        cmd.args(args).env("PODMESH_STATE", &self.state).current_dir(&self.state).output().unwrap()
    }

    fn up_log(&self) -> String {
        std::fs::read_to_string(self.state.join("test-up.log")).unwrap_or_default()
    }

    fn pods(&self) -> Vec<Value> {
        let out = self.podmesh(&["get", "pods", "-o", "json"]);
        if !out.status.success() {
            return Vec::new();
        }
        serde_json::from_slice::<Vec<Value>>(&out.stdout).unwrap_or_default()
    }

    fn wait_ready(&self, bound: Duration) {
        let start = Instant::now();
        loop {
            let pods = self.pods();
            if !pods.is_empty() && pods.iter().all(|p| p["ready"] == true) {
                return;
            }
            if start.elapsed() >= bound {
                let rows: Vec<String> = pods
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} ready={} {} {}",
                            p["namespace"], p["name"], p["ready"], p["phase"], p["containers"]
                        )
                    })
                    .collect();
                panic!("not every pod ready within {bound:?}:\n{}\n{}", rows.join("\n"), self.up_log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ip(&self, pod: &str) -> String {
        let pods = self.pods();
        let p = pods.iter().find(|p| p["name"] == pod).unwrap_or_else(|| panic!("no pod {pod}"));
        p["ip"].as_str().unwrap().to_string()
    }

    fn pods_of(&self, prefix: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .pods()
            .iter()
            .filter_map(|p| p["name"].as_str())
            .filter(|n| n.starts_with(&format!("{prefix}-")))
            .map(|n| format!("shop/{n}"))
            .collect();
        v.sort();
        v
    }

    /// `n` requests to http://web.shop/ from the client on one connection, in a thread of their own.
    fn load(&self, n: usize) -> std::thread::JoinHandle<Seen> {
        let view = self.view();
        std::thread::spawn(move || {
            let seen = curl(&view, "shop/client", &vec!["http://web.shop/".to_string(); n], &["-m", "60"]);
            // The mesh is not this view's to stop.
            std::mem::forget(view);
            seen
        })
    }

    /// Requests to http://web.shop/ from the client, 100 per connection, until `stop` is set (at most 2 minutes).
    fn load_until(&self, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<Seen> {
        let view = self.view();
        std::thread::spawn(move || {
            let mut all = Seen::default();
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
                let seen = curl(&view, "shop/client", &vec!["http://web.shop/".to_string(); 100], &["-m", "60"]);
                all.statuses.extend(seen.statuses);
                for (pod, n) in seen.served {
                    *all.served.entry(pod).or_default() += n;
                }
                if all.reason.is_empty() || all.reason == "ok" {
                    all.reason = seen.reason;
                }
            }
            std::mem::forget(view);
            all
        })
    }

    /// Another handle on the same mesh, for a thread (never stops it: forget it when done).
    fn view(&self) -> Mesh {
        let up = Command::new("true").spawn().unwrap();
        Mesh { state: self.state.clone(), up, files: self.files.clone(), bin: self.bin.clone(), user: self.user }
    }

    fn exec(&self, pod: &str, argv: &[&str]) -> Output {
        let mut args = vec!["exec", pod, "--"];
        args.extend_from_slice(argv);
        self.podmesh(&args)
    }

    /// The sidecar's access log of `pod` (NS/NAME), one JSON object per line.
    fn access_log(&self, pod: &str) -> Vec<Value> {
        let out = self.podmesh(&["logs", pod, "-c", "sidecar"]);
        String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// What `podmesh explain` predicts for a request, on the manifests the mesh runs plus `extra`.
    fn explain(&self, extra: &[PathBuf], from: &str, target: &str, args: &[&str]) -> Value {
        let mut cmd = Command::new(podmesh());
        cmd.arg("explain");
        for f in self.files.iter().chain(extra) {
            cmd.arg("-f").arg(f);
        }
        cmd.args(["-o", "json", "--from", from, target]).args(args);
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "explain {target}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// What a client saw.
#[derive(Debug, Default)]
struct Seen {
    /// The reason code: the response's `x-podmesh-reason`, "ok" for the application's own response, or the
    /// reason the deciding sidecar logged for a connection it refused.
    reason: String,
    /// Which pod served each request or connection (its answer names it), with counts.
    served: BTreeMap<String, usize>,
    /// HTTP status codes seen.
    statuses: Vec<u16>,
    /// The connection was reset or closed with nothing.
    refused: bool,
}

/// `curl` in `from`: each response's status, reason and serving pod. `urls` are fetched in one invocation
/// (one connection, kept alive or multiplexed).
fn curl(mesh: &Mesh, from: &str, urls: &[String], extra: &[&str]) -> Seen {
    // Each response's head and body to stdout, ended by a marker.
    let mut argv: Vec<&str> = vec!["curl", "-sS", "-m", "20", "-D", "-", "-w", "BODY\\n"];
    argv.extend_from_slice(extra);
    argv.extend(urls.iter().map(String::as_str));
    let out = mesh.exec(from, &argv);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut seen = Seen::default();
    let mut reasons = Vec::new();
    // A transfer with no response (reset, closed) still prints its marker; it has no status line.
    for response in text.split("BODY\n").filter(|r| r.starts_with("HTTP/")) {
        let status = response
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u16>().ok())
            .unwrap_or(0);
        seen.statuses.push(status);
        let reason = response
            .lines()
            .find_map(|l| l.to_ascii_lowercase().strip_prefix("x-podmesh-reason:").map(|r| r.trim().to_string()))
            .map(|r| r.split(';').next().unwrap_or("").to_string());
        reasons.push(reason.unwrap_or_else(|| if (200..400).contains(&status) { "ok".into() } else { "?".into() }));
        if let Some(pod) = response.split("\"pod\":\"").nth(1).and_then(|r| r.split('"').next()) {
            *seen.served.entry(format!("shop/{pod}")).or_default() += 1;
        }
    }
    reasons.dedup();
    seen.reason = reasons.join(",");
    seen.refused = !out.status.success() && seen.statuses.is_empty();
    seen
}

const TCP_CLIENT: &str = r#"
import socket, sys
host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode() + b"\n"
try:
    s = socket.create_connection((host, port), timeout=5)
    print("LOCAL %s:%d" % s.getsockname()[:2], flush=True)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    print("DATA " + data.decode(errors="replace").strip().replace("\n", "|"))
except Exception as e:
    print("REFUSED " + type(e).__name__)
"#;

/// A raw TCP connection from `from` to `host:port`: sends one line, reads until EOF.
fn tcp(mesh: &Mesh, from: &str, host: &str, port: u16, payload: &str) -> String {
    let port = port.to_string();
    let out = mesh.exec(from, &["python3", "-c", TCP_CLIENT, host, &port, payload]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A TCP connection's outcome: the serving pod from the echo's answer, or refused with the reason the deciding
/// sidecar (one of `deciders`) logged for it.
fn tcp_seen(mesh: &Mesh, from: &str, host: &str, port: u16, payload: &str, deciders: &[String]) -> Seen {
    // Lines of earlier connections are written within one batch interval (100 ms) of their end.
    if !deciders.is_empty() {
        std::thread::sleep(Duration::from_millis(250));
    }
    let before: Vec<usize> = deciders.iter().map(|p| mesh.access_log(p).len()).collect();
    let answer = tcp(mesh, from, host, port, payload);
    let local = answer.lines().find_map(|l| l.strip_prefix("LOCAL ")).unwrap_or("").to_string();
    let answer = answer.lines().filter(|l| !l.starts_with("LOCAL ")).collect::<Vec<_>>().join(" ");
    let mut seen = Seen::default();
    if let Some(data) = answer.strip_prefix("DATA ").filter(|d| d.ends_with(payload)) {
        let pod = data.split(' ').next().unwrap_or("");
        seen.served.insert(format!("shop/{pod}"), 1);
        seen.reason = "ok".into();
        return seen;
    }
    seen.refused = true;
    // The access log is written in batches (every 100 ms), a connection's line when it ends: wait for it (at most
    // 5 s). The line is the one from this client's address when the sidecar saw it (a source-side decision, or a
    // plain client's connection at the destination), else the first new refusal of a connection to this port.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        let logs: Vec<Vec<Value>> = deciders.iter().map(|p| mesh.access_log(p)).collect();
        let exact = logs.iter().flatten().find(|l| !local.is_empty() && l["src"] == local.as_str());
        let new_refusal = || {
            logs.iter().zip(&before).find_map(|(log, n)| {
                log.get(*n..)?.iter().find(|l| {
                    l["reason"] != "ok" && l["dst"].as_str().is_some_and(|d| d.ends_with(&format!(":{port}")))
                })
            })
        };
        if let Some(line) = exact.or_else(new_refusal) {
            seen.reason = line["reason"].as_str().unwrap_or("?").to_string();
            return seen;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    seen.reason = format!("no access log line ({answer}, from {local})");
    seen
}

fn endpoints(e: &Value) -> Vec<String> {
    let mut v: Vec<String> =
        e["endpoints"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// Asserts an HTTP row: the reason, and that every serving pod is one `explain` names.
fn check_http(row: &str, seen: &Seen, predicted: &Value) {
    let reason = predicted["reason"].as_str().unwrap();
    if predicted["client_sees"] == "reset" {
        assert!(seen.refused, "{row}: explain predicts a reset ({reason}), the client saw {seen:?}");
        return;
    }
    assert_eq!(seen.reason, reason, "{row}: {seen:?}\nexplain: {predicted}");
    if let Some(status) = predicted["client_sees"]["status"].as_u64() {
        assert!(seen.statuses.iter().all(|s| u64::from(*s) == status), "{row}: {seen:?}");
    }
    let allowed = endpoints(predicted);
    for pod in seen.served.keys() {
        assert!(allowed.contains(pod), "{row}: served by {pod}, explain says only {allowed:?}");
    }
    if reason == "ok" {
        assert!(!seen.served.is_empty(), "{row}: no pod named itself: {seen:?}");
    }
}

fn check_tcp(row: &str, seen: &Seen, predicted: &Value) {
    let reason = predicted["reason"].as_str().unwrap();
    assert_eq!(seen.reason, reason, "{row}: {seen:?}\nexplain: {predicted}");
    let allowed = endpoints(predicted);
    for pod in seen.served.keys() {
        assert!(allowed.contains(pod), "{row}: served by {pod}, explain says only {allowed:?}");
    }
}

/// The R9 rows that read the same in both columns, then the rows that differ, PERMISSIVE first; then STRICT is
/// applied live and the differing rows are run again.
#[test]
fn r9_matrix_runs_as_explain_predicts_in_both_columns() {
    if !can_run("r9_matrix_runs_as_explain_predicts_in_both_columns") {
        return;
    }
    let mesh = Mesh::start("r9", &[examples("quickstart")]);
    let web = mesh.pods_of("web");
    let (web0, web0_ip) = (web[0].clone(), mesh.ip(web[0].trim_start_matches("shop/")));
    let (db1_ip, db2_ip, db0_ip) = (mesh.ip("db-1"), mesh.ip("db-2"), mesh.ip("db-0"));
    let none: &[PathBuf] = &[];

    // Addresses are the ones explain computes from the same manifests.
    let predicted = mesh.explain(none, "shop/client", &format!("http://{web0_ip}:8080/"), &["--host", "web.shop"]);
    assert_eq!(endpoints(&predicted), vec![web0.clone()], "{predicted}");

    // Row 1: 100 requests on one keep-alive connection, balanced per request over both web pods.
    let urls: Vec<String> = (0..100).map(|_| "http://web.shop/".to_string()).collect();
    let seen = curl(&mesh, "shop/client", &urls, &[]);
    check_http("row 1", &seen, &mesh.explain(none, "shop/client", "http://web.shop/", &[]));
    assert_eq!(seen.served.values().sum::<usize>(), 100, "{seen:?}");
    assert!(seen.served.values().all(|n| *n >= 30) && seen.served.len() == 2, "row 1: {seen:?}");

    // Row 3: a web pod by IP, Host the IP: no_route from the destination.
    let url = format!("http://{web0_ip}:8080/");
    check_http(
        "row 3",
        &curl(&mesh, "shop/client", std::slice::from_ref(&url), &[]),
        &mesh.explain(none, "shop/client", &url, &[]),
    );
    // Row 4: the same with Host web.shop: exactly that pod.
    let seen = curl(&mesh, "shop/client", &[url.clone(), url.clone(), url.clone()], &["-H", "Host: web.shop"]);
    check_http("row 4", &seen, &mesh.explain(none, "shop/client", &url, &["--host", "web.shop"]));
    assert_eq!(seen.served.get(&web0), Some(&3), "row 4: {seen:?}");
    // Row 5: an undeclared port: undeclared_port, refused by the destination.
    let target = format!("{web0_ip}:9090");
    let seen = tcp_seen(&mesh, "shop/client", &web0_ip, 9090, "hello", std::slice::from_ref(&web0));
    check_tcp("row 5", &seen, &mesh.explain(none, "shop/client", &target, &["--tcp"]));
    // Row 6: a StatefulSet pod by its own DNS name: exactly db-1.
    let url = "http://db-1.db.shop.svc.cluster.local:8080/".to_string();
    let seen = curl(&mesh, "shop/client", &[url.clone(), url.clone()], &[]);
    check_http("row 6", &seen, &mesh.explain(none, "shop/client", &url, &[]));
    assert_eq!(seen.served.get("shop/db-1"), Some(&2), "row 6: {seen:?}");
    // Row 7: db-1 by IP (headless fallback).
    let url = format!("http://{db1_ip}:8080/");
    let seen = curl(&mesh, "shop/client", std::slice::from_ref(&url), &[]);
    check_http("row 7", &seen, &mesh.explain(none, "shop/client", &url, &[]));
    assert_eq!(seen.served.get("shop/db-1"), Some(&1), "row 7: {seen:?}");
    // Row 8: raw TCP to db-2: ok, db-2.
    let seen = tcp_seen(&mesh, "shop/client", &db2_ip, 5000, "hello", &[]);
    check_tcp("row 8", &seen, &mesh.explain(none, "shop/client", &format!("{db2_ip}:5000"), &["--tcp"]));
    assert_eq!(seen.served.get("shop/db-2"), Some(&1), "row 8: {seen:?}");
    // Row 9: raw TCP to a web pod's 7000, which only a ClusterIP Service declares: direct_not_headless.
    let seen = tcp_seen(&mesh, "shop/client", &web0_ip, 7000, "hello", std::slice::from_ref(&web0));
    check_tcp("row 9", &seen, &mesh.explain(none, "shop/client", &format!("{web0_ip}:7000"), &["--tcp"]));
    // Row 10: TCP connections to web.shop:7000 spread per connection over both pods (20, so that both showing
    // up is all but certain under random choice).
    let predicted = mesh.explain(none, "shop/client", "web.shop:7000", &["--tcp"]);
    let mut spread: BTreeMap<String, usize> = BTreeMap::new();
    for _ in 0..20 {
        let seen = tcp_seen(&mesh, "shop/client", "web.shop", 7000, "hello", &[]);
        check_tcp("row 10", &seen, &predicted);
        for pod in seen.served.keys() {
            *spread.entry(pod.clone()).or_default() += 1;
        }
    }
    assert_eq!(spread.len(), 2, "row 10: {spread:?}");
    // Row 11: an unknown Host through the Service: no_route from the source.
    let seen = curl(&mesh, "shop/client", &["http://web.shop/".into()], &["-H", "Host: nothing.example"]);
    check_http("row 11", &seen, &mesh.explain(none, "shop/client", "http://web.shop/", &["--host", "nothing.example"]));
    // Row 14: non-HTTP bytes to an HTTP port: protocol_error at the source.
    let seen = tcp_seen(&mesh, "shop/client", "web.shop", 80, "hello", &["shop/client".into()]);
    check_tcp("row 14", &seen, &mesh.explain(none, "shop/client", "web.shop:80", &["--tcp"]));
    // Row 15: a detected port: HTTP balanced per request, TCP per connection.
    let urls: Vec<String> = (0..20).map(|_| "http://echo.shop:9000/".to_string()).collect();
    let seen = curl(&mesh, "shop/client", &urls, &[]);
    check_http("row 15 (HTTP)", &seen, &mesh.explain(none, "shop/client", "http://echo.shop:9000/", &[]));
    assert_eq!(seen.served.len(), 2, "row 15: {seen:?}");
    let seen = tcp_seen(&mesh, "shop/client", "echo.shop", 9000, "hello", &[]);
    check_tcp("row 15 (TCP)", &seen, &mesh.explain(none, "shop/client", "echo.shop:9000", &["--tcp"]));
    // Row 16: a plain pod scrapes a meshed pod's merged metrics.
    let url = format!("http://{}:15020/stats/prometheus", mesh.ip("client"));
    let out = mesh.exec("shop/legacy", &["curl", "-sS", "-m", "10", &url]);
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && body.contains("istio_requests_total{"), "row 16: {body}");
    assert!(body.contains("echo_requests_total{pod=\"client\"}"), "row 16, the application's metrics: {body}");
    assert_eq!(mesh.explain(none, "shop/legacy", &url, &[])["reason"], "ok");
    // Row 17: a Service whose pod is plain, from a meshed pod: ok, plaintext.
    let seen = curl(&mesh, "shop/client", &["http://legacy.shop/".into()], &[]);
    check_http("row 17", &seen, &mesh.explain(none, "shop/client", "http://legacy.shop/", &[]));
    assert_eq!(seen.served.get("shop/legacy"), Some(&1), "row 17: {seen:?}");
    // Row 18: 100 h2c calls on one HTTP/2 connection (nghttp, from nghttp2: one connection per authority, streams
    // multiplexed), spread per request.
    let urls: Vec<String> = (0..100).map(|i| format!("http://greeter.shop:50051/greet?call={i}")).collect();
    let mut argv = vec!["nghttp"];
    argv.extend(urls.iter().map(String::as_str));
    let out = mesh.exec("shop/client", &argv);
    let mut seen = Seen { reason: "ok".into(), ..Seen::default() };
    for pod in String::from_utf8_lossy(&out.stdout).split("\"pod\":\"").skip(1) {
        *seen.served.entry(format!("shop/{}", pod.split('"').next().unwrap())).or_default() += 1;
    }
    check_http("row 18", &seen, &mesh.explain(none, "shop/client", "http://greeter.shop:50051/greet", &[]));
    assert_eq!(seen.served.values().sum::<usize>(), 100, "row 18: {seen:?} {out:?}");
    assert!(seen.served.len() == 2 && seen.served.values().all(|n| *n >= 20), "row 18: {seen:?}");

    // The rows that differ, PERMISSIVE (no PeerAuthentication).
    // Row 2: a plain pod, 100 requests on one connection: all on one pod (kube-proxy picks per connection).
    let urls: Vec<String> = (0..100).map(|_| "http://web.shop/".to_string()).collect();
    let seen = curl(&mesh, "shop/legacy", &urls, &[]);
    check_http("row 2 PERMISSIVE", &seen, &mesh.explain(none, "shop/legacy", "http://web.shop/", &[]));
    assert!(seen.served.len() == 1 && seen.served.values().sum::<usize>() == 100, "row 2: {seen:?}");
    // Row 13: a plain pod, raw TCP to db-0: ok.
    let seen = tcp_seen(&mesh, "shop/legacy", &db0_ip, 5000, "hello", &[]);
    check_tcp("row 13 PERMISSIVE", &seen, &mesh.explain(none, "shop/legacy", &format!("{db0_ip}:5000"), &["--tcp"]));

    // Row 19: an address outside the cluster (the node's, where the control plane's monitoring port answers):
    // passthrough, the destination's own response.
    let node_ip = mesh.pods()[0]["nodeIp"].as_str().unwrap().to_string();
    let outside = format!("http://{node_ip}:15014/ready");
    let predicted = mesh.explain(none, "shop/client", &outside, &[]);
    assert_eq!(predicted["reason"], "passthrough", "{predicted}");
    let (before, dst) = (mesh.access_log("shop/client").len(), format!("{node_ip}:15014"));
    let seen = curl(&mesh, "shop/client", std::slice::from_ref(&outside), &[]);
    assert_eq!(seen.statuses, [200], "row 19: {seen:?}");
    assert_eq!(seen.reason, "ok", "row 19: the node's own answer, nothing the mesh made: {seen:?}");
    wait_for(
        || {
            mesh.access_log("shop/client")
                .get(before..)
                .is_some_and(|new| new.iter().any(|r| r["reason"] == "passthrough" && r["dst"] == dst.as_str()))
        },
        "row 19 in the client's access log as passthrough",
    );

    // STRICT, applied to the running mesh: the sidecars follow.
    let strict = [examples("quickstart/strict")];
    let out = mesh.podmesh(&["apply", "-f", strict[0].to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let start = Instant::now();
    let url = vec!["http://web.shop/".to_string()];
    while !curl(&mesh, "shop/legacy", &url, &[]).refused {
        assert!(start.elapsed() < Duration::from_secs(20), "STRICT did not reach the web pods' sidecars");
        std::thread::sleep(Duration::from_millis(200));
    }
    let seen = tcp_seen(&mesh, "shop/legacy", "web.shop", 80, "GET / HTTP/1.1", &web);
    check_tcp("row 2 STRICT", &seen, &mesh.explain(&strict, "shop/legacy", "web.shop:80", &["--tcp"]));
    let seen = tcp_seen(&mesh, "shop/legacy", &db0_ip, 5000, "hello", &["shop/db-0".into()]);
    check_tcp("row 13 STRICT", &seen, &mesh.explain(&strict, "shop/legacy", &format!("{db0_ip}:5000"), &["--tcp"]));
    // Meshed clients are unaffected (row 1 again, fewer requests), and a plain pod still scrapes metrics (row 16).
    let urls: Vec<String> = (0..20).map(|_| "http://web.shop/".to_string()).collect();
    let seen = curl(&mesh, "shop/client", &urls, &[]);
    check_http("row 1 STRICT", &seen, &mesh.explain(&strict, "shop/client", "http://web.shop/", &[]));
    let url = format!("http://{web0_ip}:15020/stats/prometheus");
    let out = mesh.exec("shop/legacy", &["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}", &url]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "row 16 STRICT");

    // Row 19 under REGISTRY_ONLY (a MeshConfig, applied live): unknown_destination, 502 from the source.
    let registry_only = [examples("quickstart/strict"), examples("quickstart/registry-only")];
    let out = mesh.podmesh(&["apply", "-f", registry_only[1].to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut seen = Seen::default();
    wait_for(
        || {
            seen = curl(&mesh, "shop/client", std::slice::from_ref(&outside), &[]);
            seen.reason != "ok"
        },
        "REGISTRY_ONLY at the client's sidecar",
    );
    check_http("row 19 REGISTRY_ONLY", &seen, &mesh.explain(&registry_only, "shop/client", &outside, &[]));
}

/// A StatefulSet's peers reach each other by their per-pod DNS names under STRICT (examples/statefulset-peers).
#[test]
fn statefulset_peers_reach_each_other_by_name_under_strict() {
    if !can_run("statefulset_peers_reach_each_other_by_name_under_strict") {
        return;
    }
    let mesh = Mesh::start("peers", &[examples("statefulset-peers")]);
    for from in ["kv-0", "kv-1", "kv-2"] {
        for to in ["kv-0", "kv-1", "kv-2"] {
            let host = format!("{to}.kv.store.svc.cluster.local");
            let answer = tcp(&mesh, &format!("store/{from}"), &host, 2380, "ping");
            assert!(answer.ends_with(&format!("\nDATA {to} ping")), "{from} -> {host}:2380: {answer}");
        }
    }
    let out = mesh.exec("store/kv-0", &["curl", "-sS", "-m", "5", "http://kv-2.kv:2379/"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"pod\":\"kv-2\""), "{out:?}");

    // The cluster DNS as a peer discovering the others does it: SRV of the named peer port, one record per peer
    // by its own name (over UDP, from the pod's resolv.conf), and NXDOMAIN for a name that does not exist.
    let out = mesh.exec("store/kv-0", &["python3", "-c", DNS_QUERY, "_tcp-peer._tcp.kv.store.svc.cluster.local", "33"]);
    let answer = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(answer.starts_with("rcode 0 answers 3"), "{answer} {out:?}");
    for peer in ["kv-0", "kv-1", "kv-2"] {
        assert!(answer.contains(&format!("srv 2380 {peer}.kv.store.svc.cluster.local")), "{peer}: {answer}");
    }
    let out = mesh.exec("store/kv-0", &["python3", "-c", DNS_QUERY, "kv-9.kv.store.svc.cluster.local", "1"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("rcode 3 answers 0"), "{out:?}");
}

/// A DNS query (name, type) to the pod's nameserver over UDP: prints the rcode, the answer count, and each SRV
/// record's port and target.
const DNS_QUERY: &str = r#"
import random, socket, struct, sys
name, qtype = sys.argv[1], int(sys.argv[2])
server = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
q = struct.pack(">HHHHHH", random.randint(0, 65535), 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0" + struct.pack(">HH", qtype, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(q, (server, 53))
r = s.recv(4096)
rcode, an = r[3] & 15, struct.unpack(">H", r[6:8])[0]
def read_name(i):
    labels = []
    while r[i]:
        if r[i] & 0xC0:
            labels.append(read_name(struct.unpack(">H", r[i:i+2])[0] & 0x3FFF)[0]); return ".".join(labels), i + 2
        labels.append(r[i+1:i+1+r[i]].decode()); i += 1 + r[i]
    return ".".join(labels), i + 1
i = len(q)
out = ["rcode %d answers %d" % (rcode, an)]
for _ in range(an):
    _, i = read_name(i)
    t, _, _, n = struct.unpack(">HHIH", r[i:i+10]); i += 10
    if t == 33:
        port = struct.unpack(">H", r[i+4:i+6])[0]
        out.append("srv %d %s" % (port, read_name(i + 6)[0]))
    i += n
print("\n".join(out))
"#;

/// Faults and changes under load: an application process killed (its endpoint leaves, requests to the others keep
/// succeeding, it comes back); a Service deleted and applied again; a Deployment scaled down to none (row 12:
/// no_healthy_upstream, as explain predicts for no ready pod) and up again.
#[test]
fn faults_and_changes_reach_the_sidecars_live() {
    if !can_run("faults_and_changes_reach_the_sidecars_live") {
        return;
    }
    let mesh = Mesh::start("faults", &[examples("quickstart")]);
    let victim = mesh.pods_of("web")[0].clone();

    // Under load (one client, 400 requests on one connection, balanced per request), kill the victim's
    // application, as a crash would. Its endpoint leaves at once (the kubelet sees the exit), comes back when the
    // restarted container passes its readiness probe, and requests to the other pod keep succeeding: the only
    // ones that may fail are those already sent to the victim before its sidecars heard, which its own sidecar
    // answers with upstream_connect_failure (there is no retry of a request once delivered, R3.1).
    let log_before = mesh.access_log("shop/client").len();
    let load = mesh.load(400);
    std::thread::sleep(Duration::from_millis(500));
    let victim_name = victim.trim_start_matches("shop/");
    // pkill sees the processes of every pod; the bracket keeps the pattern from matching pkill's own callers.
    let pattern = format!("echo --name [{}]{} ", &victim_name[..1], &victim_name[1..]);
    let out = mesh.exec(&victim, &["pkill", "-f", "--", &pattern]);
    assert!(out.status.success(), "pkill found no process of {victim}: {out:?}");
    let seen = load.join().unwrap();
    assert_eq!(seen.statuses.len(), 400, "{seen:?}");
    wait_for(
        || mesh.pods().iter().any(|p| p["name"] == victim_name && p["ready"] == true && p["restarts"] == 1),
        "the killed container back",
    );
    assert!(mesh.up_log().contains(&format!("{victim} not ready")), "its endpoint never left: {}", mesh.up_log());
    std::thread::sleep(Duration::from_millis(300));
    let records: Vec<Value> = mesh.access_log("shop/client")[log_before..]
        .iter()
        .filter(|r| r["direction"] == "outbound" && r["host"] == "web.shop")
        .cloned()
        .collect();
    assert_eq!(records.len(), 400, "the client's sidecar logged every request");
    let failed: Vec<&Value> = records.iter().filter(|r| r["reason"] != "ok").collect();
    for r in &failed {
        assert_eq!(r["upstream_pod"], victim.as_str(), "a request to another pod failed: {r}");
        assert_eq!(r["reason"], "upstream_connect_failure", "{r}");
    }
    // They end once the endpoint has left: all within a moment of the kill.
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        let ms = |r: &Value| {
            let t = r["time"].as_str().unwrap();
            let (s, ms) = t[17..23].split_once('.').unwrap();
            s.parse::<u64>().unwrap() * 1000 + ms.parse::<u64>().unwrap()
        };
        let span = (ms(last) + 60_000 - ms(first)) % 60_000;
        assert!(span < 1000, "requests to the killed pod failed for {span} ms: {failed:?}");
    }
    let seen = curl(&mesh, "shop/client", &vec!["http://web.shop/".to_string(); 40], &[]);
    assert!(seen.reason == "ok" && seen.served.get(&victim).is_some_and(|n| *n > 0), "{seen:?}");

    // Scaled up and down under load: a new pod takes requests once it is ready, a removed one only until every
    // sidecar has heard it is gone (it stops a moment later); not one request fails.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = mesh.load_until(std::sync::Arc::clone(&stop));
    let out = mesh.podmesh(&["scale", "deployment/web", "--replicas", "3", "-n", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(|| mesh.pods_of("web").len() == 3 && mesh.pods().iter().all(|p| p["ready"] == true), "3 web pods");
    std::thread::sleep(Duration::from_secs(1));
    let out = mesh.podmesh(&["scale", "deployment/web", "--replicas", "1", "-n", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let web_pods = || mesh.pods().iter().filter(|p| p["name"].as_str().unwrap().starts_with("web-")).count();
    wait_for(|| web_pods() == 1, "1 web pod");
    // Past the removed pods' termination delay: they have stopped under the load.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.statuses.len() >= 100, "{seen:?}");
    assert_eq!(seen.reason, "ok", "{seen:?}");
    assert!(seen.statuses.iter().all(|s| *s == 200), "{seen:?}");
    assert_eq!(seen.served.len(), 3, "the third pod served too: {:?}", seen.served);

    // And back to two.
    let out = mesh.podmesh(&["scale", "deployment/web", "--replicas", "2", "-n", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(|| mesh.pods_of("web").len() == 2 && mesh.pods().iter().all(|p| p["ready"] == true), "2 web pods");
    let seen = curl(&mesh, "shop/client", &vec!["http://web.shop/".to_string(); 20], &[]);
    assert!(seen.reason == "ok" && seen.served.len() == 2, "{seen:?}");

    // The control plane restarted under load: the sidecars keep serving with what they have, reconnect, and
    // follow the next change (a third web pod, which the client's sidecar can only learn from the new one).
    let load = mesh.load(600);
    std::thread::sleep(Duration::from_millis(200));
    let out = mesh.podmesh(&["restart", "control-plane"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen = load.join().unwrap();
    assert!(seen.reason == "ok" && seen.statuses.len() == 600, "{seen:?}");
    let out = mesh.podmesh(&["scale", "deployment/web", "--replicas", "3", "-n", "shop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_for(|| mesh.pods_of("web").len() == 3 && mesh.pods().iter().all(|p| p["ready"] == true), "3 web pods");
    wait_for(
        || curl(&mesh, "shop/client", &vec!["http://web.shop/".to_string(); 30], &[]).served.len() == 3,
        "the third pod served after the restart",
    );
    let node_ip = mesh.pods()[0]["nodeIp"].as_str().unwrap().to_string();
    let status = mesh.exec("shop/client", &["podmesh", "proxy-status", "--monitoring", &format!("{node_ip}:15014")]);
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert_eq!(status.lines().filter(|l| l.contains("SYNCED")).count(), 11, "{status}");
}

fn wait_for(mut done: impl FnMut() -> bool, what: &str) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Rootless: the whole mesh as an unprivileged user, in a user namespace of its own (run here only when this
/// test runs as root, which can become another user; run as that user, every test above is rootless already).
#[test]
fn an_unprivileged_user_runs_the_mesh() {
    const NOBODY: u32 = 65534;
    if !is_root() {
        eprintln!("SKIPPED an_unprivileged_user_runs_the_mesh: not root (the other tests ran rootless)");
        return;
    }
    let userns = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ])
        .status();
    if !userns.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED an_unprivileged_user_runs_the_mesh: this kernel keeps user namespaces from other users");
        return;
    }
    let mesh = Mesh::start_as("rootless", &[examples("quickstart")], Some(NOBODY));
    // The mesh's processes are the user's, none root's.
    let up = mesh.podmesh(&["exec", "shop/client", "--", "id", "-u"]);
    assert_eq!(String::from_utf8_lossy(&up.stdout).trim(), "0", "root inside its user namespace: {up:?}");
    let owner = std::fs::metadata(mesh.state.join("up.sock")).map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    assert_eq!(owner.unwrap(), NOBODY);
    let info: Value = serde_json::from_str(&std::fs::read_to_string(mesh.state.join("up.json")).unwrap()).unwrap();
    let status = std::fs::read_to_string(format!("/proc/{}/status", info["pid"])).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().skip(1).all(|u| u == NOBODY.to_string()), "{uid}");
    // Rows 1 and 9, as root runs them.
    let urls: Vec<String> = (0..20).map(|_| "http://web.shop/".to_string()).collect();
    let seen = curl(&mesh, "shop/client", &urls, &[]);
    assert!(seen.reason == "ok" && seen.served.len() == 2, "{seen:?}");
    let web = mesh.pods_of("web");
    let ip = mesh.ip(web[0].trim_start_matches("shop/"));
    let seen = tcp_seen(&mesh, "shop/client", &ip, 7000, "hello", &web[..1]);
    assert_eq!(seen.reason, "direct_not_headless", "{seen:?}");
    let down = mesh.podmesh(&["down"]);
    assert!(down.status.success(), "{down:?}");
}

/// What `up` refuses, it refuses before changing anything: bad manifests (each error named by file, document
/// and field) and a machine without the tools it needs (each named with its package).
#[test]
fn up_stops_before_changing_anything() {
    let dir = std::env::temp_dir().join(format!("pm-up-{}-refused", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: Service\nmetadata:\n  name: s\nspec:\n  ports:\n    - port: 99999\n")
        .unwrap();
    let state = dir.join("state");
    let out = Command::new(podmesh()).args(["up", "-f"]).arg(&bad).arg("--state").arg(&state).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("bad.yaml") && stderr.contains("spec.ports[0].port"), "{stderr}");
    assert!(stderr.contains("nothing was changed") && !state.exists(), "{stderr}");

    // No iproute2, iptables or util-linux on the PATH.
    let empty = dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let out = Command::new(podmesh())
        .args(["up", "-f"])
        .arg(examples("quickstart"))
        .arg("--state")
        .arg(&state)
        .env("PATH", &empty)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for (tool, package) in [("ip", "iproute2"), ("iptables-restore", "iptables"), ("unshare", "util-linux")] {
        assert!(stderr.contains(&format!("`{tool}`")) && stderr.contains(package), "{tool}: {stderr}");
    }
    assert!(stderr.contains("nothing was changed") && !state.exists(), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The kubelet's parts that the quickstart does not use: a StatefulSet's pods started one at a time in ordinal
/// order, each once the one before is ready (OrderedReady), or all at once (Parallel); a headless Service's
/// publishNotReadyAddresses (per-pod names resolve before the pods are ready); emptyDir volumes, each pod's own,
/// seen by `exec` as by the container, and removed with the pod.
#[test]
fn statefulset_ordering_unready_names_and_empty_dirs() {
    if !can_run("statefulset_ordering_unready_names_and_empty_dirs") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("pm-up-{}-kubelet-manifests", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let go = dir.join("go");
    std::fs::create_dir_all(&go).unwrap();
    // Each pod waits for its own file in `go` before it listens; its probe passes once it listens.
    let set = |name: &str, policy: &str, publish: bool| {
        format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: kubelet}}
spec:
  clusterIP: None
  publishNotReadyAddresses: {publish}
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: {name}, namespace: kubelet}}
spec:
  serviceName: {name}
  replicas: 2
  podManagementPolicy: {policy}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{sidecar.podmesh.io/inject: "false"}}
    spec:
      containers:
        - name: app
          command: ["sh", "-c", "while [ ! -e {go}/$(POD_NAME) ]; do sleep 0.1; done; exec podmesh echo --name $(POD_NAME) --http 8080"]
          env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{tcpSocket: {{port: http}}, periodSeconds: 1}}
---
"#,
            go = go.display()
        )
    };
    // Two pods, each writing its own name into its own emptyDir at /mnt.
    let scratch = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: kubelet}}
spec:
  containers:
    - name: app
      command: ["sh", "-c", "echo $(POD_NAME) > /mnt/who && exec sleep infinity"]
      env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
      volumeMounts: [{{name: scratch, mountPath: /mnt}}]
  volumes: [{{name: scratch, emptyDir: {{}}}}]
"#
        )
    };
    let volumes = format!("{}---\n{}", scratch("scratch-a"), scratch("scratch-b"));
    let manifest = dir.join("kubelet.yaml");
    let text = format!("{}{}{volumes}", set("ordered", "OrderedReady", true), set("parallel", "Parallel", false));
    std::fs::write(&manifest, text).unwrap();
    let mesh = Mesh::spawn("kubelet", std::slice::from_ref(&manifest), None);
    let phase = |pod: &str| -> String {
        let pods = mesh.pods();
        let p = pods.iter().find(|p| p["name"] == pod);
        p.map_or("absent".into(), |p| {
            format!("{}{}", p["phase"].as_str().unwrap(), if p["ready"] == true { "+ready" } else { "" })
        })
    };
    wait_for(|| phase("scratch-a") == "Running+ready" && phase("parallel-1") == "Running", "the first pods");
    // OrderedReady: ordered-1 is not even started while ordered-0 is not ready; Parallel: both run at once.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(phase("ordered-0"), "Running");
    assert_eq!(phase("ordered-1"), "Pending", "ordered-1 started before ordered-0 was ready");
    assert_eq!((phase("parallel-0"), phase("parallel-1")), ("Running".into(), "Running".into()));
    // publishNotReadyAddresses: a not-ready pod's own name resolves under the Service that publishes it, and not
    // under the one that does not.
    let resolves = |name: &str| mesh.exec("kubelet/scratch-a", &["getent", "hosts", name]).status.success();
    assert!(resolves("ordered-0.ordered.kubelet.svc.cluster.local"));
    assert!(!resolves("parallel-0.parallel.kubelet.svc.cluster.local"));
    std::fs::write(go.join("ordered-0"), "").unwrap();
    wait_for(|| phase("ordered-0") == "Running+ready" && phase("ordered-1") == "Running", "ordered-1 started");
    std::fs::write(go.join("ordered-1"), "").unwrap();
    std::fs::write(go.join("parallel-0"), "").unwrap();
    std::fs::write(go.join("parallel-1"), "").unwrap();
    mesh.wait_ready(Duration::from_secs(30));
    assert!(resolves("parallel-0.parallel.kubelet.svc.cluster.local"), "a ready pod's name resolves");

    // emptyDir: each pod has its own, which exec sees as the container does; the machine's /mnt is untouched.
    for pod in ["scratch-a", "scratch-b"] {
        let out = mesh.exec(&format!("kubelet/{pod}"), &["cat", "/mnt/who"]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), pod, "{out:?}");
    }
    assert!(!std::path::Path::new("/mnt/who").exists(), "the volume leaked onto the machine's /mnt");
    let volume = mesh.state.join("pods/kubelet/scratch-b/volumes/scratch/who");
    assert!(volume.exists());
    // Removed with the pod.
    let only_b = dir.join("scratch-b.yaml");
    std::fs::write(&only_b, scratch("scratch-b")).unwrap();
    let out = mesh.podmesh(&["delete", "-f", only_b.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    wait_for(|| !volume.exists(), "scratch-b's volume removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A crash leaves nothing behind: the mesh's first process killed outright takes every pod, sidecar and network
/// namespace with it (they live in its PID and network namespaces), and `up` tidies the state directory.
#[test]
fn a_crashed_mesh_leaves_nothing_behind() {
    if !can_run("a_crashed_mesh_leaves_nothing_behind") {
        return;
    }
    let mesh = Mesh::start("crash", &[examples("statefulset-peers")]);
    let info: Value = serde_json::from_str(&std::fs::read_to_string(mesh.state.join("up.json")).unwrap()).unwrap();
    let unshare = info["pid"].as_u64().unwrap();
    // Each thread's children (the runtime starts processes from its worker threads).
    let children = |pid: u64| -> Vec<u64> {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let text: String =
            tasks.map(|t| std::fs::read_to_string(t.unwrap().path().join("children")).unwrap()).collect();
        text.split_whitespace().map(|p| p.parse().unwrap()).collect()
    };
    let first = children(unshare)[0];
    // Its children: each pod's sidecar and application (3 each).
    let pods = children(first);
    assert!(pods.len() >= 6, "{pods:?}");
    assert!(Command::new("kill").args(["-KILL", &first.to_string()]).status().unwrap().success());
    let alive = |pid: &u64| std::path::Path::new(&format!("/proc/{pid}")).exists();
    wait_for(|| !pods.iter().any(alive) && !alive(&first) && !alive(&unshare), "every process of the mesh gone");
    wait_for(|| !mesh.state.join("pods").exists() && !mesh.state.join("up.sock").exists(), "the state tidied");
    // The host has none of the mesh's network.
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains("podmesh0"));
}

/// Ctrl-C on a foreground `up` (SIGINT to its whole process group, as a terminal sends it) stops every pod, and
/// `up` exits once the mesh is gone, leaving nothing in its state directory but the CA.
#[test]
fn ctrl_c_stops_the_mesh_and_leaves_nothing_behind() {
    if !can_run("ctrl_c_stops_the_mesh_and_leaves_nothing_behind") {
        return;
    }
    let mut mesh = Mesh::start("ctrl-c", &[examples("statefulset-peers")]);
    let pgid = mesh.up.id();
    assert!(Command::new("kill").args(["-INT", "--", &format!("-{pgid}")]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = mesh.up.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "up did not end after Ctrl-C: {}", mesh.up_log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status:?}: {}", mesh.up_log());
    assert!(mesh.up_log().contains("every pod stopped"), "{}", mesh.up_log());
    let left: Vec<String> = std::fs::read_dir(&mesh.state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !["control", "bin", "test-up.log"].contains(&n.as_str()))
        .collect();
    assert!(left.is_empty(), "left in the state directory: {left:?}");
    let state = mesh.state.to_str().unwrap().to_string();
    let out = Command::new("pgrep").args(["-f", &state]).output().unwrap();
    assert!(out.stdout.is_empty(), "processes left: {}", String::from_utf8_lossy(&out.stdout));
}
