#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Kubelet probes rewritten to 15020 (`--app-probes`, Istio's `ISTIO_KUBE_APP_PROBERS`), against real application
//! servers on 127.0.0.1: what the kubelet gets back for each answer the application gives (or fails to give),
//! the request the application sees, TCP probes, HTTPS probes, unknown paths, and a bad value refused by name.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use podmesh_proxy::probe::AppProbes;
use podmesh_proxy::{Proxy, serve_stats};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

const STRICT: &[&str] = &["examples/quickstart", "examples/quickstart/strict"];
/// Every wait in this file ends by then.
const WAIT: Duration = Duration::from_secs(10);

/// Aborts the servers a test started, however it ends.
struct Tasks(Vec<JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// What the application saw of one request.
#[derive(Debug)]
struct Seen {
    path: String,
    headers: http::HeaderMap,
}

/// An application: `/status/<code>` answers that code, `/slow` answers after 30 s (beyond any probe's timeout);
/// every request is reported on the channel. With `tls`, it serves HTTPS with that certificate.
async fn app(tasks: &mut Tasks, tls: Option<Arc<rustls::ServerConfig>>) -> (u16, mpsc::UnboundedReceiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (seen, rx) = mpsc::unbounded_channel();
    tasks.0.push(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else { continue };
            let (seen, tls) = (seen.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let _ = seen.send(Seen { path: path.clone(), headers: req.headers().clone() });
                        let status = match path.strip_prefix("/status/") {
                            Some(code) => code.parse().unwrap(),
                            None if path == "/slow" => {
                                tokio::time::sleep(Duration::from_secs(30)).await;
                                200
                            }
                            None => 404,
                        };
                        let resp = http::Response::builder().status(status).body(Full::new(Bytes::from("app\n")));
                        Ok::<_, Infallible>(resp.unwrap())
                    }
                });
                let server = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => drop(server.serve_connection(TokioIo::new(stream), svc).await),
                    Some(config) => {
                        let Ok(stream) = tokio_rustls::TlsAcceptor::from(config).accept(stream).await else { return };
                        drop(server.serve_connection(TokioIo::new(stream), svc).await)
                    }
                }
            });
        }
    }));
    (port, rx)
}

/// A port nothing listens on (bound, then closed).
async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// An HTTPS server config with a certificate of the mesh's test CA, which the probe does not trust (nor does the
/// kubelet check it).
fn tls_config(mesh: &Mesh) -> Arc<rustls::ServerConfig> {
    let id = podmesh_compute::Identity::new("cluster.local", "shop", "web");
    let cert = mesh.ca.issue(&id, Duration::from_secs(3600)).unwrap();
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes()).collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// 15020 for `proxy`, with `probes` (JSON), on a fresh port.
async fn stats(tasks: &mut Tasks, proxy: &Arc<Proxy>, probes: &str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tasks.0.push(serve_stats(proxy, l, None, AppProbes::parse(probes).unwrap()));
    addr
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(WAIT, rx.recv()).await.expect("the application saw no request").unwrap()
}

fn web_proxy(mesh: &Mesh) -> Arc<Proxy> {
    Arc::clone(&mesh.sidecars[&mesh.pods_of("web")[0]])
}

// ------------------------------------------------------------------------------------------------ tests

#[tokio::test]
async fn http_probes_answer_as_the_kubelet_reads_the_application() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let (port, mut seen) = app(&mut tasks, None).await;
    let closed = closed_port().await;
    let probe =
        |path: &str, port: u16| format!(r#"{{"httpGet":{{"path":"{path}","port":{port}}},"timeoutSeconds":1}}"#);
    let probes = format!(
        r#"{{"/app-health/web/readyz":{},"/app-health/web/livez":{},"/app-health/web/startupz":{},
            "/app-health/moved/readyz":{},"/app-health/closed/readyz":{},"/app-health/missing/readyz":{},
            "/app-health/headers/readyz":{{"httpGet":{{"path":"/status/204?q=1","port":{port},
                "httpHeaders":[{{"name":"X-Probe","value":"yes"}},{{"name":"Host","value":"web.example"}},
                               {{"name":"User-Agent","value":"custom"}}]}}}}}}"#,
        probe("/status/200", port),
        probe("/status/503", port),
        probe("status/200", port),
        probe("/status/302", port),
        probe("/", closed),
        probe("/nowhere", port),
    );
    let addr = stats(&mut tasks, &web_proxy(&mesh), &probes).await;

    // 200..=399 pass as 200; a failing status is passed on as it is (Istio's behaviour).
    let r = get(addr, "/app-health/web/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("answered 200 OK"), "{r:?}");
    let s = next_seen(&mut seen).await;
    assert_eq!(s.path, "/status/200");
    // The kubelet's request, by default: Host the address dialled, kube-probe's user agent.
    assert_eq!(s.headers["host"], format!("127.0.0.1:{port}").as_str());
    assert!(s.headers["user-agent"].to_str().unwrap().starts_with("kube-probe/"), "{s:?}");

    let r = get(addr, "/app-health/web/livez").await;
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.body.contains("/app-health/web/livez") && r.body.contains("answered 503"), "{r:?}");
    assert_eq!(next_seen(&mut seen).await.path, "/status/503");

    // A path without its leading slash is read as the kubelet reads it.
    assert_eq!(get(addr, "/app-health/web/startupz").await.status, 200);
    assert_eq!(next_seen(&mut seen).await.path, "/status/200");

    let r = get(addr, "/app-health/moved/readyz").await;
    assert_eq!(r.status, 200, "a redirect passes, as for the kubelet: {r:?}");
    assert_eq!(next_seen(&mut seen).await.path, "/status/302");

    let r = get(addr, "/app-health/missing/readyz").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("answered 404"), "{r:?}");
    next_seen(&mut seen).await;

    // Nothing listening: 500 saying what failed, on one line.
    let r = get(addr, "/app-health/closed/readyz").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains(&format!("connecting to 127.0.0.1:{closed}")), "{r:?}");
    assert_eq!(r.body.trim_end().lines().count(), 1, "{r:?}");

    // The probe's headers, over the defaults; its query.
    let r = get(addr, "/app-health/headers/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
    let s = next_seen(&mut seen).await;
    assert_eq!(s.path, "/status/204");
    assert_eq!(s.headers["x-probe"], "yes");
    assert_eq!(s.headers.get_all("host").iter().collect::<Vec<_>>(), ["web.example"]);
    assert_eq!(s.headers.get_all("user-agent").iter().collect::<Vec<_>>(), ["custom"]);
}

#[tokio::test]
async fn a_slow_application_fails_the_probe_within_its_timeout() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let (port, mut seen) = app(&mut tasks, None).await;
    let probes = format!(
        r#"{{"/app-health/web/readyz":{{"httpGet":{{"path":"/slow","port":{port}}},"timeoutSeconds":1}},
            "/app-health/web/livez":{{"httpGet":{{"path":"/slow","port":{port}}},"timeoutSeconds":2}}}}"#
    );
    let addr = stats(&mut tasks, &web_proxy(&mesh), &probes).await;
    for (path, secs) in [("/app-health/web/readyz", 1), ("/app-health/web/livez", 2)] {
        let started = Instant::now();
        let r = get(addr, path).await;
        let took = started.elapsed();
        assert_eq!(r.status, 500, "{r:?}");
        assert!(r.body.contains(&format!("no answer from 127.0.0.1:{port} within {secs} s")), "{r:?}");
        let timeout = Duration::from_secs(secs);
        assert!(took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(2), "{took:?}");
        assert_eq!(next_seen(&mut seen).await.path, "/slow");
    }
}

#[tokio::test]
async fn tcp_probes_pass_when_the_port_accepts() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    // A listener the application never accepts on: the kernel completes the handshake, as for the kubelet.
    let open = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open_port = open.local_addr().unwrap().port();
    let closed = closed_port().await;
    let probes = format!(
        r#"{{"/app-health/db/livez":{{"tcpSocket":{{"port":{open_port}}},"timeoutSeconds":2}},
            "/app-health/db/readyz":{{"tcpSocket":{{"port":{closed}}}}}}}"#
    );
    let addr = stats(&mut tasks, &web_proxy(&mesh), &probes).await;
    let r = get(addr, "/app-health/db/livez").await;
    assert_eq!(r.status, 200, "{r:?}");
    let r = get(addr, "/app-health/db/readyz").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains(&format!("connecting to 127.0.0.1:{closed}")), "{r:?}");
    drop(open);
}

#[tokio::test]
async fn https_probes_do_not_verify_the_certificate_as_the_kubelet() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let (tls_port, mut seen) = app(&mut tasks, Some(tls_config(&mesh))).await;
    let (plain_port, _plain_seen) = app(&mut tasks, None).await;
    let probes = format!(
        r#"{{"/app-health/web/readyz":{{"httpGet":{{"path":"/status/200","port":{tls_port},"scheme":"HTTPS"}}}},
            "/app-health/web/livez":{{"httpGet":{{"path":"/status/500","port":{tls_port},"scheme":"HTTPS"}}}},
            "/app-health/plain/readyz":{{"httpGet":{{"path":"/status/200","port":{plain_port},"scheme":"HTTPS"}}}}}}"#
    );
    let addr = stats(&mut tasks, &web_proxy(&mesh), &probes).await;
    let r = get(addr, "/app-health/web/readyz").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(next_seen(&mut seen).await.path, "/status/200");
    assert_eq!(get(addr, "/app-health/web/livez").await.status, 500);
    // HTTPS to a plaintext port: the handshake fails, and the answer says so.
    let r = get(addr, "/app-health/plain/readyz").await;
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.body.contains("TLS handshake"), "{r:?}");
}

#[tokio::test]
async fn only_the_configured_paths_are_probes_and_15020_is_otherwise_unchanged() {
    let mesh = Mesh::start(STRICT).await;
    let mut tasks = Tasks(vec![]);
    let (port, _seen) = app(&mut tasks, None).await;
    let proxy = web_proxy(&mesh);
    let probes = format!(r#"{{"/app-health/web/readyz":{{"httpGet":{{"path":"/status/200","port":{port}}}}}}}"#);
    let addr = stats(&mut tasks, &proxy, &probes).await;

    let r = get(addr, "/app-health/web/livez").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("Configured: /app-health/web/readyz"), "{r:?}");
    assert_eq!(get(addr, "/app-health/").await.status, 404);
    assert_eq!(get(addr, "/app-health/web/readyz/more").await.status, 404);
    assert_eq!(call(addr, "POST", "/app-health/web/readyz").await.status, 405);
    assert_eq!(call(addr, "HEAD", "/app-health/web/readyz").await.status, 200);

    // The other endpoints as before.
    assert_eq!(get(addr, "/healthz/ready").await.status, 503);
    proxy.set_ready(true);
    assert_eq!(get(addr, "/healthz/ready").await.status, 200);
    let r = get(addr, "/stats/prometheus").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(get(addr, "/nowhere").await.status, 404);

    // Without probes, every /app-health/ path is a 404.
    let none = stats(&mut tasks, &proxy, "").await;
    let r = get(none, "/app-health/web/readyz").await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(r.body.contains("Configured: none"), "{r:?}");
}

#[test]
fn a_bad_value_is_refused_naming_the_path_and_the_field() {
    let e = AppProbes::parse(r#"{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":"http"}}}"#).unwrap_err();
    assert!(e.contains("\"/app-health/web/readyz\": httpGet: port: \"http\" is not a port number"), "{e}");
    let e = AppProbes::parse(r#"{"/app-health/db/livez":{"tcpSocket":{"port":5432},"timeoutSecond":2}}"#).unwrap_err();
    assert!(e.contains("\"/app-health/db/livez\": unknown field `timeoutSecond`"), "{e}");
}
