//! The network-namespace tier: pods as network namespaces on a bridge, real iptables capture installed by
//! `podmesh capture install`, the real `podmesh proxy` and `podmesh echo` binaries, driven with curl.
//!
//! Nothing on the host changes: the test re-runs itself under `unshare --net --mount --pid --fork`, and builds
//! its bridge, pod namespaces and rules inside that private tree. When the test process ends — passed, failed or
//! killed — the kernel tears all of it down, processes included (they live in the test's PID namespace).
//!
//! Needs `unshare`, `ip`, `iptables-restore`, `setpriv` and `curl`, and root (CI runs as root) or unprivileged
//! user namespaces: without root the test runs as root of a user namespace of its own (the uid exclusion is
//! then replaced by the mark, as no other uid exists there). Where neither is possible the test says so and
//! passes without running (the in-process tier covers the logic there).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use podmesh_compute::{Index, ProxyConfig};
use podmesh_model::Source;

/// Set in the re-run: the lab's working directory (config, certificates, logs), made and removed outside.
const INNER: &str = "PODMESH_LAB_DIR";
/// Set in the re-run when it is root only inside a user namespace: no other uid exists there.
const ROOTLESS: &str = "PODMESH_LAB_ROOTLESS";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn podmesh() -> &'static str {
    env!("CARGO_BIN_EXE_podmesh")
}

/// Runs `test` inside a private net+mount+pid namespace tree (see the module doc). Returns false when it ran
/// out here instead (the caller returns: the assertions ran in the child).
fn in_private_namespaces(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    // As root: private net, mount and pid namespaces. Otherwise a user namespace first, in which we are root
    // (ztunnel's pattern), where the kernel allows unprivileged user namespaces.
    let mut namespaces = vec!["--net", "--mount", "--pid", "--fork", "--mount-proc"];
    let rootless = !is_root();
    if rootless {
        let userns = Command::new("unshare").args(["--user", "--map-root-user", "true"]).status();
        if !userns.is_ok_and(|s| s.success()) {
            eprintln!("SKIPPED {test}: needs root, or unprivileged user namespaces, for network namespaces");
            return false;
        }
        namespaces.splice(0..0, ["--user", "--map-root-user"]);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = std::env::temp_dir().join(format!("podmesh-lab-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut unshare = Command::new("unshare");
    unshare.args(&namespaces).arg("--").arg(exe).args([test, "--exact", "--nocapture", "--test-threads=1"]);
    if rootless {
        unshare.env(ROOTLESS, "1");
    }
    let out = unshare.env(INNER, &dir).output().expect("running unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The processes' own logs, for a failure.
    let mut logs = String::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "err" || e == "out") {
            let text = read(&p);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            logs.push_str(&format!("--- {}\n{}\n", p.display(), tail.into_iter().rev().collect::<Vec<_>>().join("\n")));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(out.status.success(), "the lab failed:\n{stdout}\n{stderr}\n{logs}");
    // The inner run must really have run the test (not filtered it away).
    assert!(stdout.contains("1 passed"), "the lab did not run {test}:\n{stdout}\n{stderr}");
    false
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn sh(args: &[&str]) -> Output {
    run(Command::new(args[0]).args(&args[1..]))
}

/// The lab: a bridge and one network namespace per pod, with the pod's IP from the manifests.
struct Lab {
    dir: PathBuf,
    index: Index,
    children: Vec<Child>,
    /// Pods whose sidecar's stdout is a pipe nobody reads (a stuck log collector).
    unread_stdout: Vec<String>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Lab {
    /// The bridge carries the first address of the mesh's pod CIDR (IPv4 or IPv6) and is every pod's gateway.
    fn new(dirs: &[&str]) -> Lab {
        let dir = PathBuf::from(std::env::var_os(INNER).unwrap());
        let sources: Vec<Source> = dirs.iter().map(|d| Source::Path(root().join(d))).collect();
        let index = Index::new(podmesh_model::load(&sources).unwrap().cluster);
        // `ip netns add` bind-mounts under /run/netns: a tmpfs of our own keeps those mounts in our namespace.
        std::fs::create_dir_all("/run/netns").unwrap();
        sh(&["mount", "-t", "tmpfs", "podmesh-lab", "/run/netns"]);
        sh(&["ip", "link", "set", "lo", "up"]);
        sh(&["ip", "link", "add", "pm0", "type", "bridge"]);
        let lab = Lab { dir, index, children: vec![], unread_stdout: vec![] };
        sh(&["ip", "addr", "add", &lab.on_bridge(lab.gateway()), "dev", "pm0", "nodad"]);
        sh(&["ip", "link", "set", "pm0", "up"]);
        let mut args = vec!["ca", "create", "--dir"];
        let ca = lab.dir.join("ca");
        args.push(ca.to_str().unwrap());
        run(Command::new(podmesh()).args(&args));
        lab
    }

    fn gateway(&self) -> IpAddr {
        match self.index.cluster().mesh.pod_cidr.network() {
            IpAddr::V4(n) => IpAddr::V4((u32::from(n) + 1).into()),
            IpAddr::V6(n) => IpAddr::V6((u128::from(n) + 1).into()),
        }
    }

    fn ipv6(&self) -> bool {
        self.gateway().is_ipv6()
    }

    /// `ip` CIDR notation for an address on the bridge's subnet.
    fn on_bridge(&self, ip: IpAddr) -> String {
        format!("{ip}/{}", self.index.cluster().mesh.pod_cidr.prefix_len())
    }

    fn pod_ip(&self, pod: &str) -> IpAddr {
        self.index.cluster().pods.values().find(|p| &*p.key.name == pod).unwrap().ip
    }

    fn service_ip(&self, name: &str) -> IpAddr {
        self.index.cluster().services.values().find(|s| &*s.key.name == name).unwrap().cluster_ips[0]
    }

    fn pods_of(&self, workload: &str) -> Vec<String> {
        let pods = self.index.cluster().pods.values();
        pods.filter(|p| p.owner.as_ref().is_some_and(|o| o.name == workload)).map(|p| p.key.name.to_string()).collect()
    }

    fn exec(&self, pod: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", pod]);
        c
    }

    /// A pod: its namespace on the bridge, and its application (the echo workload on `ports`).
    fn pod(&mut self, pod: &str, ports: &[u16]) {
        let ip = self.pod_ip(pod);
        // Interface names are limited to 15 bytes: number the host ends.
        let host_end = format!("pmv{}", self.children.len());
        let host_end = host_end.as_str();
        sh(&["ip", "netns", "add", pod]);
        sh(&["ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", pod]);
        sh(&["ip", "link", "set", host_end, "master", "pm0", "up"]);
        // nodad: an IPv6 address is usable at once, not after duplicate address detection.
        sh(&["ip", "-n", pod, "addr", "add", &self.on_bridge(ip), "dev", "eth0", "nodad"]);
        sh(&["ip", "-n", pod, "link", "set", "eth0", "up"]);
        sh(&["ip", "-n", pod, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", pod, "route", "add", "default", "via", &self.gateway().to_string()]);
        let mut echo = self.exec(pod);
        echo.args([podmesh(), "echo", "--name", pod]);
        for p in ports {
            echo.args(["--port", &p.to_string()]);
        }
        self.spawn(pod, "app", echo, "serving HTTP and TCP");
    }

    /// The pod's sidecar: config from `podmesh routes`, a certificate from the lab CA, capture rules, the proxy.
    /// `as_uid`: run the proxy as that user and exclude it from capture by uid (as in a real pod); otherwise it
    /// runs as root and is excluded by socket mark.
    fn sidecar(&mut self, pod: &str, as_uid: Option<u32>, extra: &[&str]) {
        let key = self.index.cluster().pods.values().find(|p| &*p.key.name == pod).unwrap().key.clone();
        let cfg: ProxyConfig = self.index.proxy_config(&key).unwrap();
        let dir = self.dir.join(pod);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        let ca = self.dir.join("ca");
        run(Command::new(podmesh())
            .args(["ca", "issue", "--dir", ca.to_str().unwrap(), "--identity", cfg.workload.identity.as_str()])
            .args(["--out", dir.to_str().unwrap()]));
        let mut capture = self.exec(pod);
        capture.args([podmesh(), "capture", "install"]);
        if self.ipv6() {
            capture.arg("--ipv6");
        }
        let mut proxy = self.exec(pod);
        let as_uid = as_uid.filter(|uid| {
            let rootless = std::env::var_os(ROOTLESS).is_some();
            if rootless {
                eprintln!("{pod}: excluded by mark, not uid {uid}: a rootless lab maps no other uid");
            }
            !rootless
        });
        match as_uid {
            Some(uid) => {
                capture.args(["--uid", &uid.to_string()]);
                sh(&["chown", "-R", &format!("{uid}:{uid}"), dir.to_str().unwrap()]);
                proxy.args(["setpriv", "--reuid", &uid.to_string(), "--regid", &uid.to_string(), "--clear-groups"]);
                proxy.args([podmesh(), "proxy", "--mark", "0"]);
            }
            None => {
                proxy.args([podmesh(), "proxy"]);
            }
        }
        run(&mut capture);
        let file = |f: &str| dir.join(f).to_str().unwrap().to_string();
        proxy.args(["--config", &file("config.json"), "--cert", &file("cert.pem"), "--key", &file("key.pem")]);
        proxy.args(["--roots", &file("roots.pem")]).args(extra);
        self.spawn(pod, "sidecar", proxy, "podmesh proxy: sidecar of");
    }

    /// Like `sidecar`, but the proxy gets its certificate and config from the control plane at `control`
    /// (`podmesh control` in the lab's root namespace) with only the pod's bootstrap token and the mesh root.
    fn joined_sidecar(&mut self, pod: &str, control: &str, state: &Path) {
        let key = self.index.cluster().pods.values().find(|p| &*p.key.name == pod).unwrap().key.clone();
        let dir = self.dir.join(pod);
        std::fs::create_dir_all(&dir).unwrap();
        let token = run(Command::new(podmesh()).args(["token", &key.to_string(), "--state", state.to_str().unwrap()]));
        std::fs::write(dir.join("token"), &token.stdout).unwrap();
        let mut capture = self.exec(pod);
        run(capture.args([podmesh(), "capture", "install"]));
        let mut proxy = self.exec(pod);
        proxy.args([podmesh(), "proxy", "--control", control, "--token-file", dir.join("token").to_str().unwrap()]);
        proxy.args(["--control-roots", state.join("root.pem").to_str().unwrap()]);
        self.spawn(pod, "sidecar", proxy, "podmesh proxy: sidecar of");
    }

    /// Starts a long-running process with stdout and stderr in files, and waits until stderr shows `ready`.
    fn spawn(&mut self, pod: &str, what: &str, mut cmd: Command, ready: &str) {
        let out = self.dir.join(format!("{pod}.{what}.out"));
        let err = self.dir.join(format!("{pod}.{what}.err"));
        if what == "sidecar" && self.unread_stdout.iter().any(|p| p == pod) {
            // Kept open in the Child and never read: it fills up (64 KiB) and stays full.
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(std::fs::File::create(&out).unwrap());
        }
        cmd.stderr(std::fs::File::create(&err).unwrap());
        cmd.stdin(Stdio::null());
        self.children.push(cmd.spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(20);
        while !std::fs::read_to_string(&err).unwrap_or_default().contains(ready) {
            assert!(Instant::now() < deadline, "{pod} {what} not ready: {}", read(&err));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The sidecar's access log. Its lines are written every 100 ms by a thread of their own, so a reply reaches
    /// curl before its line is written: read until the file has not changed for 250 ms.
    fn log(&self, pod: &str) -> Vec<serde_json::Value> {
        let path = self.dir.join(format!("{pod}.sidecar.out"));
        let mut text = read(&path);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(250));
            let again = read(&path);
            if again == text {
                break;
            }
            text = again;
        }
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("access log line {l:?}: {e}"))).collect()
    }

    /// curl from inside `pod`: (exit code, stdout).
    fn curl(&self, pod: &str, args: &[&str]) -> (i32, String) {
        // --max-time bounds each URL; `timeout` bounds the whole run of many URLs.
        let out =
            self.exec(pod).args(["timeout", "60", "curl", "-sS", "--max-time", "10"]).args(args).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        if code != 0 {
            let shown = &args[..args.len().min(4)];
            let more = if args.len() > shown.len() {
                format!(" (and {} more)", args.len() - shown.len())
            } else {
                String::new()
            };
            eprintln!("curl {shown:?}{more} from {pod}: exit {code}: {}", String::from_utf8_lossy(&out.stderr).trim());
        }
        (code, String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// curl's exit codes for a connection reset: while receiving (56), before any reply (52), while still sending the
/// request (55: the reset came first, as a refusal at accept can on a loaded machine), or so soon after the
/// handshake that curl still counts it as the connect failing (7).
fn is_reset(code: i32) -> bool {
    matches!(code, 7 | 52 | 55 | 56)
}

fn pods_in(bodies: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    let de = serde_json::Deserializer::from_str(bodies).into_iter::<serde_json::Value>();
    for v in de {
        let pod = v.unwrap()["pod"].as_str().unwrap().to_string();
        *m.entry(pod).or_insert(0) += 1;
    }
    m
}

#[test]
fn pods_in_network_namespaces_with_real_capture() {
    if !in_private_namespaces("pods_in_network_namespaces_with_real_capture") {
        return;
    }
    let mut lab = Lab::new(&["examples/quickstart", "examples/quickstart/strict"]);
    let web = lab.pods_of("web");
    for pod in ["client", "legacy", "db-1"].iter().map(|s| s.to_string()).chain(web.iter().cloned()) {
        lab.pod(&pod, &[8080, 7000, 5000, 9090]);
    }
    // The client's sidecar runs as uid 1337 and is excluded by uid; the others by socket mark.
    lab.sidecar("client", Some(1337), &[]);
    lab.sidecar("db-1", None, &[]);
    for pod in &web {
        // The echo's own /metrics, merged into the sidecar's 15020 (R8).
        lab.sidecar(pod, None, &["--app-metrics-port", "8080", "--app-metrics-path", "/metrics"]);
    }

    // R9 row 1: one keep-alive connection (curl reuses it for every URL), balanced per request over both pods.
    let web_ip = lab.service_ip("web");
    let url = format!("http://{web_ip}/");
    let urls: Vec<&str> = std::iter::repeat_n(url.as_str(), 40).collect();
    let mut args = vec!["-H", "Host: web.shop"];
    args.extend(urls);
    let (code, bodies) = lab.curl("client", &args);
    assert_eq!(code, 0, "{bodies}");
    let served = pods_in(&bodies);
    let mut sorted = web.clone();
    sorted.sort();
    assert_eq!(served.keys().cloned().collect::<Vec<_>>(), sorted, "{served:?}");
    assert!(served.values().all(|&n| n >= 8), "{served:?}");
    let log = lab.log("client");
    let ok = log.iter().filter(|r| r["reason"] == "ok" && r["direction"] == "outbound").count();
    assert_eq!(ok, 40, "client access log: {log:?}");
    assert!(log.iter().all(|r| r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"), "{log:?}");
    let inbound: Vec<_> = web.iter().flat_map(|p| lab.log(p)).collect();
    assert!(inbound.iter().all(|r| r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/client"));

    // The same from db-1, whose sidecar is excluded from capture by socket mark rather than uid.
    let (code, bodies) = lab.curl("db-1", &["-H", "Host: web.shop", &url, &url, &url, &url]);
    assert_eq!(code, 0, "{bodies}");
    assert_eq!(pods_in(&bodies).values().sum::<usize>(), 4);

    // Row 3: a web pod by IP with its IP as Host: the destination's 404, with the reason header.
    let pod_ip = lab.pod_ip(&web[0]);
    let (code, head) = lab.curl("client", &["-o", "/dev/null", "-D", "-", &format!("http://{pod_ip}:8080/")]);
    assert_eq!(code, 0);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(head.contains("x-podmesh-reason: no_route; side=destination; rule=R4.3"), "{head}");

    // Row 7: db-1 by IP, any Host: the headless fallback; exactly db-1 serves.
    let (code, body) = lab.curl("client", &[&format!("http://{}:8080/", lab.pod_ip("db-1"))]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(pods_in(&body).into_keys().collect::<Vec<_>>(), ["db-1"]);

    // Row 5: an undeclared port: reset by the destination, and the source passes the reset on.
    let (code, _) = lab.curl("client", &[&format!("http://{pod_ip}:9090/")]);
    assert!(is_reset(code), "curl exit {code}");
    assert!(lab.log(&web[0]).iter().any(|r| r["reason"] == "undeclared_port"));

    // Row 2 (STRICT): a plain pod calling a meshed pod in plaintext is reset, and the application sees nothing.
    let (code, _) = lab.curl("legacy", &["-H", "Host: web.shop", &format!("http://{pod_ip}:8080/")]);
    assert!(is_reset(code), "curl exit {code}");
    assert!(lab.log(&web[0]).iter().any(|r| r["reason"] == "mtls_required"));

    // Row 19: outside the cluster, ALLOW_ANY: passthrough. 10.244.0.1 (the bridge) is no pod or Service.
    // Nothing listens there, so the connect fails; the source logs the passthrough attempt.
    let (code, _) = lab.curl("client", &["http://10.244.0.1:1/"]);
    assert_ne!(code, 0);
    assert!(lab.log("client").iter().any(|r| r["reason"] == "upstream_connect_failure" && r["dst"] == "10.244.0.1:1"));

    // Row 16: a plain pod scrapes a meshed pod's 15020 in plaintext, even under STRICT: the proxy's metrics
    // and the application's own. A meshed client reaches it too (sent as is: sidecar ports are not captured).
    let stats = format!("http://{pod_ip}:15020/stats/prometheus");
    for from in ["legacy", "client"] {
        let (code, text) = lab.curl(from, &[&stats]);
        assert_eq!(code, 0, "{from}: {text}");
        assert!(text.contains("istio_requests_total{reporter=\"destination\""), "{from}: {text}");
        assert!(text.contains("source_principal=\"spiffe://cluster.local/ns/shop/sa/client\""), "{text}");
        assert!(text.contains(&format!("echo_requests_total{{pod=\"{}\"}}", web[0])), "{from}: {text}");
    }
    let (code, _) = lab.curl("legacy", &["-f", &format!("http://{pod_ip}:15021/healthz/ready")]);
    assert_eq!(code, 0, "readiness");

    // No loops, ever (R7): db-0's proxy runs without the mark its capture rules exclude, so its own connections
    // come back to its 15001. It recognises them as its own: the request fails at once with the reason and the
    // fix in the log, instead of being proxied again without end.
    lab.pod("db-0", &[8080]);
    lab.sidecar("db-0", None, &["--mark", "0"]);
    let (code, head) = lab.curl("db-0", &["-o", "/dev/null", "-D", "-", "-H", "Host: web.shop", &url]);
    assert_eq!(code, 0);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let log = lab.log("db-0");
    let looped = |r: &&serde_json::Value| r["message"].as_str().is_some_and(|m| m.contains("routing loop"));
    assert!(log.iter().any(|r| looped(&r) && r["reason"] == "upstream_connect_failure"), "{log:?}");
    assert!(log.len() < 10, "each attempt is refused once, not proxied again: {log:?}");

    // A sidecar whose stdout nobody reads: once the pipe is full, access-log lines are dropped and counted, and
    // traffic goes on. 400 requests log far more than a pipe holds.
    lab.unread_stdout.push("db-2".into());
    lab.pod("db-2", &[8080]);
    lab.sidecar("db-2", None, &[]);
    let db2 = format!("http://{}:8080/", lab.pod_ip("db-2"));
    let mut args = vec!["-H", "Host: db-2.db.shop"];
    args.extend(std::iter::repeat_n(db2.as_str(), 400));
    let (code, bodies) = lab.curl("client", &args);
    assert_eq!(code, 0);
    assert_eq!(pods_in(&bodies).get("db-2"), Some(&400));
    let (code, text) = lab.curl("legacy", &[&format!("http://{}:15020/stats/prometheus", lab.pod_ip("db-2"))]);
    assert_eq!(code, 0);
    let dropped = text.lines().find_map(|l| l.strip_prefix("podmesh_access_log_dropped_lines_total "));
    assert_eq!(dropped, Some("0"), "nothing dropped yet: lines wait in memory up to 16 MiB");

    // The proxies' own connections were not captured again: every request above arrived exactly once.
    let web_requests: usize = web.iter().map(|p| lab.log(p).iter().filter(|r| r["reason"] == "ok").count()).sum();
    assert_eq!(web_requests, 44, "inbound ok lines on the web pods");
}

/// The same data-plane rows over IPv6 only: capture by ip6tables, the original destination of an IPv6 socket, the
/// proxy's IPv6 listeners, mTLS and the reasons, all with IPv6 pod and Service addresses.
#[test]
fn ipv6_pods_with_real_capture() {
    if !in_private_namespaces("ipv6_pods_with_real_capture") {
        return;
    }
    let mut lab = Lab::new(&["examples/quickstart", "examples/quickstart/strict", "crates/cli/tests/ipv6"]);
    assert!(lab.ipv6() && lab.service_ip("web").is_ipv6(), "the fixture makes an IPv6 cluster");
    let web = lab.pods_of("web");
    for pod in ["client", "legacy", "db-1"].iter().map(|s| s.to_string()).chain(web.iter().cloned()) {
        lab.pod(&pod, &[8080, 9090]);
    }
    lab.sidecar("client", Some(1337), &[]);
    lab.sidecar("db-1", None, &[]);
    for pod in &web {
        lab.sidecar(pod, None, &[]);
    }
    let url = |ip: IpAddr, port: u16| format!("http://{}/", std::net::SocketAddr::new(ip, port));

    // Row 1: the Service's IPv6 ClusterIP, balanced per request over both pods on one connection, over mTLS.
    let service = url(lab.service_ip("web"), 80);
    let mut args = vec!["-H", "Host: web.shop"];
    args.extend(std::iter::repeat_n(service.as_str(), 20));
    let (code, bodies) = lab.curl("client", &args);
    assert_eq!(code, 0, "{bodies}");
    let served = pods_in(&bodies);
    assert_eq!(served.len(), 2, "{served:?}");
    assert_eq!(served.values().sum::<usize>(), 20, "{served:?}");
    let log = lab.log("client");
    let dst = std::net::SocketAddr::new(lab.service_ip("web"), 80).to_string();
    let ok: Vec<_> = log.iter().filter(|r| r["reason"] == "ok" && r["dst"] == dst.as_str()).collect();
    assert_eq!(ok.len(), 20, "the original IPv6 destination is in every record: {log:?}");
    assert!(ok.iter().all(|r| r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"), "{log:?}");

    // Row 7: db-1 by its IPv6 address: exactly db-1.
    let (code, body) = lab.curl("client", &[&url(lab.pod_ip("db-1"), 8080)]);
    assert_eq!(code, 0, "{body}");
    assert_eq!(pods_in(&body).into_keys().collect::<Vec<_>>(), ["db-1"]);

    // Row 3: a web pod by address: the destination's 404 with the reason header.
    let pod_ip = lab.pod_ip(&web[0]);
    let (code, head) = lab.curl("client", &["-o", "/dev/null", "-D", "-", &url(pod_ip, 8080)]);
    assert_eq!(code, 0);
    assert!(head.contains("x-podmesh-reason: no_route; side=destination; rule=R4.3"), "{head}");

    // Row 2 (STRICT): the plain pod in plaintext is reset by the destination's IPv6 inbound capture.
    let (code, _) = lab.curl("legacy", &["-H", "Host: web.shop", &url(pod_ip, 8080)]);
    assert!(is_reset(code), "curl exit {code}");
    assert!(lab.log(&web[0]).iter().any(|r| r["reason"] == "mtls_required"));

    // Nothing was captured twice.
    let web_requests: usize = web.iter().map(|p| lab.log(p).iter().filter(|r| r["reason"] == "ok").count()).sum();
    assert_eq!(web_requests, 20, "inbound ok lines on the web pods");
}

/// Sidecars that start with only the control plane's address, their pod's bootstrap token and the mesh root
/// (real `podmesh control` and `podmesh proxy` processes, real capture): they serve mTLS traffic, and a manifest
/// edit (a new Service) reaches both sides live.
#[test]
fn sidecars_join_a_running_control_plane_with_real_capture() {
    if !in_private_namespaces("sidecars_join_a_running_control_plane_with_real_capture") {
        return;
    }
    let mut lab = Lab::new(&["examples/quickstart"]);
    let manifests = lab.dir.join("manifests");
    std::fs::create_dir_all(&manifests).unwrap();
    for e in std::fs::read_dir(root().join("examples/quickstart")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&p, manifests.join(p.file_name().unwrap())).unwrap();
        }
    }
    let state = lab.dir.join("state");
    let listen = std::net::SocketAddr::new(lab.gateway(), 15012).to_string();
    let mut control = Command::new(podmesh());
    control.args(["control", "-f", manifests.to_str().unwrap(), "--state", state.to_str().unwrap()]);
    control.args(["--listen", &listen, "--monitoring", "127.0.0.1:15014", "--poll-ms", "50"]);
    lab.spawn("control-plane", "control", control, "podmesh control: ");
    let web = lab.pods_of("web");
    for pod in ["client".to_string()].iter().chain(&web) {
        lab.pod(pod, &[8080]);
        lab.joined_sidecar(pod, &listen, &state);
    }

    // R9 row 1 through sidecars that joined: balanced per request, mTLS with the identities the CA gave.
    let url = format!("http://{}/", lab.service_ip("web"));
    let mut args = vec!["-H", "Host: web.shop"];
    args.extend(std::iter::repeat_n(url.as_str(), 20));
    let (code, bodies) = lab.curl("client", &args);
    assert_eq!(code, 0, "{bodies}");
    assert_eq!(pods_in(&bodies).len(), 2, "{bodies}");
    let log = lab.log("client");
    assert!(log.iter().all(|r| r["peer_identity"] == "spiffe://cluster.local/ns/shop/sa/web"), "{log:?}");

    // A new Service over the web pods appears in the manifests: the client gets its listener and the web pods
    // accept its name, live.
    let web2 = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web2\n  namespace: shop\nspec:\n  selector:\n    app: web\n  ports:\n    - name: http\n      port: 80\n      targetPort: 8080\n";
    std::fs::write(manifests.join("web2.yaml"), web2).unwrap();
    let edited = Index::new(podmesh_model::load(&[Source::Path(manifests.clone())]).unwrap().cluster);
    let web2_ip = edited.cluster().services.values().find(|s| &*s.key.name == "web2").unwrap().cluster_ips[0];
    let url2 = format!("http://{web2_ip}/");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = lab.curl("client", &["-H", "Host: web2.shop", &url2]);
        if code == 0 && pods_in(&body).keys().all(|p| web.contains(p)) && !body.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the new Service never worked: exit {code}: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every sidecar is in sync with the control plane, as `podmesh proxy-status` reports it.
    let out = run(Command::new(podmesh()).args(["proxy-status", "--monitoring", "127.0.0.1:15014"]));
    let status = String::from_utf8_lossy(&out.stdout);
    assert_eq!(status.matches("SYNCED").count(), 3, "{status}");
}
