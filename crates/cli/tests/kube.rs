#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg(feature = "kube")]
//! `podmesh control --kube` as a process, against the fake Kubernetes API server (`podmesh_testkit::kube_api`)
//! serving the quickstart as the API would show it: it reads the cluster from the API (`--check` and serving), keeps
//! the mesh root in every namespace's ConfigMap, serves the injection webhook (checked with the real curl over TLS,
//! trusting the root as the webhook configuration's caBundle does), and signs a sidecar's certificate for its
//! ServiceAccount token as the API server's TokenReview judges it. No API server runs on these machines, so this
//! is the whole path short of a cluster.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use podmesh_testkit::kube_api::{self, FakeApi};
use serde_json::{Value, json};

const REVIEWS: &str = "POST /apis/authentication.k8s.io/v1/tokenreviews";
const WEBHOOK_NAME: &str = "podmesh-control.podmesh-system.svc";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn quickstart() -> PathBuf {
    root().join("examples/quickstart")
}

/// A scratch directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("podmesh-kube-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The fake API server with the quickstart, on a runtime of its own (which also runs the test's async parts).
struct Api {
    api: FakeApi,
    file: podmesh_model::Cluster,
    runtime: tokio::runtime::Runtime,
    dir: TempDir,
}

impl Api {
    fn start(name: &str) -> Api {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let file = podmesh_model::load(&[podmesh_model::Source::Path(quickstart())]).unwrap().cluster;
        let api = runtime.block_on(FakeApi::start(kube_api::cluster_lists(&quickstart(), &file, true)));
        let recorded = root().join("crates/kube/tests/recorded/tokenreview-bound.json");
        api.answer_with(REVIEWS, vec![(201, std::fs::read_to_string(recorded).unwrap())]);
        let dir = TempDir::new(name);
        std::fs::write(dir.0.join("kubeconfig"), api.kubeconfig()).unwrap();
        Api { api, file, runtime, dir }
    }

    /// `podmesh control --kube` with this server's kubeconfig context and `args`.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_podmesh"));
        cmd.args(["control", "--kube", "--context", "fake", "--state"])
            .arg(self.dir.0.join("state"))
            .args(args)
            .env("KUBECONFIG", self.dir.0.join("kubeconfig"))
            .env("HOME", &self.dir.0);
        cmd
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits (at most 20 s) for `done`.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The status line of `GET path` from a plain HTTP server, if it answers.
fn http_status(port: u16, path: &str) -> Option<String> {
    http_get(port, path).and_then(|text| text.lines().next().map(str::to_string))
}

/// The whole answer (head and body) to `GET path` from a plain HTTP server, if it answers.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

/// Kills the control plane when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn check_reads_the_cluster_from_the_api() {
    let api = Api::start("check");
    let out = api.command(&["--check"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let expected = format!(
        "ok: {} pod(s), {} service(s); trust domain cluster.local",
        api.file.pods.len(),
        api.file.services.len()
    );
    assert!(stdout.starts_with(&expected), "{stdout}\nexpected: {expected}");
    // It listed every kind, and wrote nothing (no ConfigMap: `--check` serves nothing).
    let recorded = api.api.recorded();
    for path in [kube_api::NAMESPACES, kube_api::SERVICES, kube_api::SLICES, kube_api::PODS] {
        assert!(recorded.iter().any(|r| r.target.starts_with(&format!("{path}?"))), "{path} not listed");
    }
    assert!(recorded.iter().all(|r| r.method == "GET"), "{recorded:#?}");

    // No API server there: it says so and fails.
    let out = api.command(&["--check"]).env("KUBECONFIG", api.dir.0.join("missing")).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kubeconfig"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn serving_publishes_the_root_injects_pods_and_signs_for_service_account_tokens() {
    let api = Api::start("serve");
    let (grpc, monitoring, webhook) = (free_port(), free_port(), free_port());
    let addr = |p: u16| format!("127.0.0.1:{p}");
    let child = api
        .command(&[
            "--listen",
            &addr(grpc),
            "--monitoring",
            &addr(monitoring),
            "--webhook",
            &addr(webhook),
            "--proxy-image",
            "registry.example/podmesh:test",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(api.dir.0.join("control.log")).unwrap())
        .spawn()
        .unwrap();
    let mut control = Running(child);
    wait_for("/ready", || http_status(monitoring, "/ready").is_some_and(|s| s.contains(" 200")));
    let root_pem = std::fs::read_to_string(api.dir.0.join("state/root.pem")).unwrap();

    // The root, in every namespace's ConfigMap podmesh-root.
    let applied = |ns: &str| {
        api.api.recorded().into_iter().find(|r| {
            r.method == "PATCH" && r.target.starts_with(&format!("/api/v1/namespaces/{ns}/configmaps/podmesh-root?"))
        })
    };
    wait_for("the root in namespace shop", || applied("shop").is_some());
    let body: Value = serde_json::from_str(&applied("shop").unwrap().body).unwrap();
    assert_eq!(body["data"]["root.pem"], json!(root_pem));

    // The webhook: curl trusting only the mesh root, dialling the Service's name.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app", "namespace": "shop"},
        "spec": {"containers": [{"name": "app", "image": "app:1"}]}});
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "shop",
        "operation": "CREATE", "object": pod}});
    let (root_file, body_file) = (api.dir.0.join("root-for-curl.pem"), api.dir.0.join("review.json"));
    std::fs::write(&root_file, &root_pem).unwrap();
    std::fs::write(&body_file, review.to_string()).unwrap();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&root_file)
        .args(["--resolve", &format!("{WEBHOOK_NAME}:{webhook}:127.0.0.1"), "-H", "content-type: application/json"])
        .arg("--data-binary")
        .arg(format!("@{}", body_file.display()))
        .arg(format!("https://{WEBHOOK_NAME}:{webhook}/inject?timeout=10s"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl: {}", String::from_utf8_lossy(&out.stderr));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let patch = STANDARD.decode(answer["response"]["patch"].as_str().unwrap()).unwrap();
    let patch = String::from_utf8(patch).unwrap();
    assert!(patch.contains("registry.example/podmesh:test") && patch.contains("podmesh-proxy"), "{patch}");

    // A sidecar's certificate for its projected token: the API server's review says pod shop/client of
    // ServiceAccount client, so it gets spiffe://cluster.local/ns/shop/sa/client.
    let opts = podmesh_proxy::ControlOptions {
        address: std::net::SocketAddr::from(([127, 0, 0, 1], grpc)).into(),
        token: "the-projected-token".to_string().into(),
        roots_pem: root_pem.clone(),
        control_identity: podmesh_control::control_identity("cluster.local"),
        cert_ttl: None,
        dialer: podmesh_proxy::Dialer::default(),
    };
    let asked = api.runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), podmesh_proxy::control::request_certificate(&opts)).await
    });
    let (_, _, creds, pod) = asked.expect("no certificate within 20 s").unwrap();
    assert_eq!(
        (creds.identity().to_string(), pod.as_str()),
        ("spiffe://cluster.local/ns/shop/sa/client".into(), "shop/client")
    );
    let reviews: Vec<Value> = api
        .api
        .recorded()
        .into_iter()
        .filter(|r| r.method == "POST")
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["spec"], json!({"token": "the-projected-token", "audiences": ["podmesh"]}));

    // A watch event reaches the sidecars: a web pod not ready is the next generation, applied as that one pod.
    let web = api.file.pods.values().find(|p| p.key.name.starts_with("web-")).unwrap();
    api.runtime.block_on(api.api.watching(kube_api::PODS, 1));
    api.api.push(kube_api::PODS, &kube_api::pod_event("MODIFIED", web, false, "101"));
    let edited = format!("Pod shop/{} edited", web.key.name);
    let served = || {
        let text = http_get(monitoring, "/debug/syncz").unwrap_or_default();
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        serde_json::from_str::<Value>(&body).unwrap_or_default()
    };
    wait_for(&format!("generation 2: {edited}"), || served()["cause"] == json!(edited));
    assert_eq!(served()["generation"], 2);
    let log = std::fs::read_to_string(api.dir.0.join("control.log")).unwrap();
    assert!(log.contains("serving generation 2 (updated in place in"), "{log}");

    // SIGTERM: it stops, and says so by its exit status.
    let pid = control.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = control.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
