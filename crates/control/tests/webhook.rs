#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The injection webhook as the Kubernetes API server meets it: TLS with a certificate for the webhook Service's
//! DNS name, checked against the mesh root (the caBundle), `POST /inject?timeout=10s` over HTTP/1.1 or HTTP/2 with
//! an AdmissionReview, answered with a JSON Patch. The client is the real `curl`, so the TLS, ALPN and HTTP are
//! checked by an implementation other than ours.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use podmesh_control::{Authority, webhook};
use podmesh_inject::Config;
use podmesh_testkit::json_patch::apply;
use serde_json::{Value, json};
use tokio::net::TcpListener;

const NAME: &str = "podmesh-control.podmesh-system.svc";

/// A webhook served on loopback, and a directory for the files curl reads.
struct Fixture {
    port: u16,
    dir: PathBuf,
    root: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    /// `None` (and a message) when curl is not installed.
    async fn start() -> Option<Fixture> {
        let version = tokio::process::Command::new("curl").arg("--version").output().await;
        if !version.is_ok_and(|o| o.status.success()) {
            eprintln!("SKIPPED: curl is not installed");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "podmesh-webhook-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let authority = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"webhook test").unwrap();
        let root = dir.join("root.pem");
        std::fs::write(&root, &authority.trust_anchors()[0]).unwrap();
        let names = webhook::service_dns_names("podmesh-control", "podmesh-system");
        assert_eq!(names[0], NAME);
        let tls = Arc::new(ArcSwap::new(webhook::serving_config(&authority, &names).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(webhook::serve(listener, tls, Arc::new(Config::default())));
        Some(Fixture { port, dir, root, server })
    }

    fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        format!("@{}", path.display())
    }

    /// curl to `https://NAME:port{path}` trusting `root`, with `extra` arguments.
    async fn curl(&self, root: &std::path::Path, path: &str, extra: &[&str]) -> Curl {
        let port = self.port;
        let mut cmd = tokio::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "20", "-w", "\n%{http_code} %{http_version}", "--cacert"])
            .arg(root)
            .args(["--resolve", &format!("{NAME}:{port}:127.0.0.1")])
            .args(extra)
            .arg(format!("https://{NAME}:{port}{path}"))
            .kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("curl hung").unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let (code, version) = status.split_once(' ').unwrap_or((status, ""));
        Curl {
            exit: out.status.code(),
            status: code.parse().unwrap_or(0),
            http_version: version.to_string(),
            body: body.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn post(&self, path: &str, body: &[u8], extra: &[&str]) -> Curl {
        let data = self.write("body", body);
        let mut args = vec!["-H", "content-type: application/json", "--data-binary", &data];
        args.extend_from_slice(extra);
        self.curl(&self.root, path, &args).await
    }
}

#[derive(Debug)]
struct Curl {
    exit: Option<i32>,
    status: u16,
    http_version: String,
    body: String,
    stderr: String,
}

fn client_pod() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/clients.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    podmesh_model::objects(&text, false).into_iter().find(|(k, _)| k == "Pod shop/client").unwrap().1
}

fn review(uid: &str, object: &Value) -> Vec<u8> {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
    .to_string()
    .into_bytes()
}

fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c:?}"),
    };
    assert_eq!(text.len() % 4, 0, "padded to a multiple of four");
    let mut out = Vec::new();
    for group in text.as_bytes().chunks(4) {
        let data: Vec<u8> = group.iter().copied().filter(|c| *c != b'=').collect();
        let n = data.iter().enumerate().fold(0u32, |n, (i, c)| n | (value(*c) << (18 - 6 * i)));
        for i in 0..data.len() - 1 {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

#[tokio::test]
async fn a_review_over_http1_and_http2_is_answered_with_the_patch_that_injects_the_pod() {
    let Some(fx) = Fixture::start().await else { return };
    let pod = client_pod();
    let mut expected = pod.clone();
    podmesh_inject::inject(&mut expected, &Config::default()).unwrap();
    for (uid, http, version) in [("uid-h1", "--http1.1", "1.1"), ("uid-h2", "--http2", "2")] {
        let out = fx.post("/inject?timeout=10s", &review(uid, &pod), &[http]).await;
        assert_eq!((out.exit, out.status), (Some(0), 200), "{out:?}");
        assert_eq!(out.http_version, version, "ALPN picks {version}: {out:?}");
        let answer: Value = serde_json::from_str(&out.body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        let response = &answer["response"];
        assert_eq!(response["uid"], uid);
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch: Value = serde_json::from_slice(&decode_base64(response["patch"].as_str().unwrap())).unwrap();
        assert_eq!(apply(&pod, &patch), expected);
    }
    // An injected pod comes back allowed and untouched.
    let out = fx.post("/inject", &review("uid-again", &expected), &[]).await;
    assert_eq!(out.status, 200, "{out:?}");
    let answer: Value = serde_json::from_str(&out.body).unwrap();
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
}

#[tokio::test]
async fn a_wrong_path_method_or_body_is_refused() {
    let Some(fx) = Fixture::start().await else { return };
    let out = fx.post("/mutate", &review("u", &client_pod()), &[]).await;
    assert_eq!(out.status, 404, "{out:?}");
    let out = fx.curl(&fx.root, "/inject", &[]).await;
    assert_eq!(out.status, 405, "{out:?}");
    let out = fx.post("/inject?timeout=10s", b"{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}", &[]).await;
    assert_eq!(out.status, 400, "{out:?}");
    assert!(out.body.contains("not an AdmissionReview"), "{out:?}");
    let out = fx.post("/inject", b"not json", &["--http2"]).await;
    assert_eq!(out.status, 400, "{out:?}");
    assert!(out.body.contains("not JSON"), "{out:?}");
    // Over 16 MiB: refused by its declared length, without reading it (HTTP/1.1, where curl waits for the 100
    // Continue that never comes; curl 7.x reports the reset of an HTTP/2 stream refused early as an error of its
    // own instead of the answer), or once 16 MiB of a body of unknown length have come.
    let huge = vec![b' '; 17 * 1024 * 1024];
    let out = fx.post("/inject", &huge, &["--http1.1"]).await;
    assert_eq!(out.status, 413, "{out:?}");
    // Just over, so that all of it is sent before the server stops reading and closes the connection.
    let just_over = vec![b' '; 16 * 1024 * 1024 + 1024];
    let out = fx.post("/inject", &just_over, &["--http1.1", "-H", "transfer-encoding: chunked"]).await;
    assert_eq!(out.status, 413, "{out:?}");
    let out = fx.post("/inject", &huge, &["--http2"]).await;
    assert!(out.status == 413 || out.exit == Some(92), "{out:?}");
    // The server still serves.
    let out = fx.post("/inject", &review("after", &client_pod()), &[]).await;
    assert_eq!(out.status, 200, "{out:?}");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_mesh_root_or_dials_another_name_fails_the_handshake() {
    let Some(fx) = Fixture::start().await else { return };
    let other = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"other").unwrap();
    let other_root = fx.dir.join("other-root.pem");
    std::fs::write(&other_root, &other.trust_anchors()[0]).unwrap();
    let body = fx.write("review", &review("u", &client_pod()));
    let out = fx.curl(&other_root, "/inject", &["--data-binary", &body]).await;
    assert_ne!(out.exit, Some(0), "{out:?}");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stderr.to_lowercase().contains("certificate"), "{out:?}");

    // The right root, a name the certificate does not carry.
    let port = fx.port;
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&fx.root)
        .args(["--resolve", &format!("elsewhere.podmesh-system.svc:{port}:127.0.0.1")])
        .args(["--data-binary", &body])
        .arg(format!("https://elsewhere.podmesh-system.svc:{port}/inject"))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output()).await.expect("curl hung").unwrap();
    assert!(!out.status.success(), "{out:?}");

    // And the server is none the worse for either.
    let out = fx.post("/inject", &review("after", &client_pod()), &[]).await;
    assert_eq!(out.status, 200, "{out:?}");
}
