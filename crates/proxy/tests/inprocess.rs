//! The R9 rows that need only the data plane, through real sidecars on 127.0.0.1 (see `support`): each row's
//! reason, the side that decided, and exactly which pods served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use podmesh_proxy::Proxy;
use podmesh_route::ReasonCode;
use support::*;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const PERMISSIVE: &[&str] = &["examples/quickstart"];
const STRICT: &[&str] = &["examples/quickstart", "examples/quickstart/strict"];

fn counts(pods: impl IntoIterator<Item = Option<String>>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for p in pods {
        *m.entry(p.unwrap_or_else(|| "(none)".into())).or_default() += 1;
    }
    m
}

#[tokio::test]
async fn row1_http_through_a_service_is_balanced_per_request_on_one_connection() {
    for dirs in [PERMISSIVE, STRICT] {
        let mut mesh = Mesh::start(dirs).await;
        let web = mesh.service("web", 80);
        let mut conn = h1(mesh.via_sidecar("client", web).await).await;
        let mut served = Vec::new();
        for _ in 0..100 {
            let g = get1(&mut conn, "web.shop", "/").await;
            assert_eq!(g.status, 200, "{g:?}");
            served.push(g.pod);
        }
        let c = counts(served);
        let pods = mesh.pods_of("web");
        assert_eq!(c.keys().cloned().collect::<Vec<_>>(), pods, "{c:?}");
        assert!(c.values().all(|&n| n >= 30), "{c:?}");
        // The source logged each request as ok, sent over mTLS to the web pods' identity.
        let log = mesh.log("client");
        assert_eq!(log.iter().filter(|r| r.reason == ReasonCode::Ok && r.status == Some(200)).count(), 100);
        assert!(log.iter().all(|r| r.peer_identity.as_deref() == Some("spiffe://cluster.local/ns/shop/sa/web")));
        // The destinations saw mTLS from the client's identity.
        let inbound: Vec<_> = pods.iter().flat_map(|p| mesh.log(p)).collect();
        assert_eq!(inbound.len(), 100);
        assert!(inbound.iter().all(|r| r.peer_identity.as_deref() == Some("spiffe://cluster.local/ns/shop/sa/client")));
    }
}

#[tokio::test]
async fn row2_a_plain_client_is_refused_under_strict_and_served_by_one_pod_under_permissive() {
    let mesh = Mesh::start(PERMISSIVE).await;
    let pod = &mesh.pods_of("web")[0];
    // kube-proxy picked this endpoint for the connection; every request on it lands there.
    let target = mesh.plain(SocketAddr::new(mesh.pod_ip(pod), 8080));
    let mut conn = h1(target).await;
    for _ in 0..10 {
        let g = get1(&mut conn, "web.shop", "/").await;
        assert_eq!((g.status, g.pod.as_deref()), (200, Some(pod.as_str())));
    }
    let mesh = Mesh::start(STRICT).await;
    let pod = &mesh.pods_of("web")[0];
    let target = mesh.plain(SocketAddr::new(mesh.pod_ip(pod), 8080));
    assert!(is_reset(target, b"GET / HTTP/1.1\r\nhost: web.shop\r\n\r\n").await);
    let log = mesh.log(pod);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].reason, ReasonCode::MtlsRequired);
    assert_eq!(mesh.apps[&SocketAddr::new(mesh.pod_ip(pod), 8080)].connections(), 0, "nothing reached the app");
}

#[tokio::test]
async fn rows3_to_5_direct_to_a_web_pod() {
    let mut mesh = Mesh::start(STRICT).await;
    let pod = mesh.pods_of("web")[1].clone();
    let ip = mesh.pod_ip(&pod);
    let to_pod = mesh.via_sidecar("client", SocketAddr::new(ip, 8080)).await;
    let mut conn = h1(to_pod).await;
    // Row 3: Host is the pod IP: no Service name, so the destination refuses it.
    let g = get1(&mut conn, &format!("{ip}:8080"), "/").await;
    assert_eq!(g.status, 404, "{g:?}");
    assert_eq!(g.reason.as_deref(), Some("no_route; side=destination; rule=R4.3"));
    assert!(g.body.contains("Fix:"), "{}", g.body);
    // Row 4: a Service's name: exactly the pod dialled.
    for _ in 0..5 {
        let g = get1(&mut conn, "web.shop", "/").await;
        assert_eq!((g.status, g.pod.as_deref()), (200, Some(pod.as_str())));
    }
    // Row 5: an undeclared port is reset by the destination, and the application never sees a byte.
    let undeclared = mesh.via_sidecar("client", SocketAddr::new(ip, UNDECLARED)).await;
    assert!(is_reset(undeclared, b"GET / HTTP/1.1\r\nhost: web.shop\r\n\r\n").await);
    assert_eq!(mesh.apps[&SocketAddr::new(ip, UNDECLARED)].connections(), 0);
    assert!(mesh.log(&pod).iter().any(|r| r.reason == ReasonCode::UndeclaredPort));
}

/// Under a steady trickle of requests every pooled upstream connection stays in use, so the next burst finds
/// them all warm instead of paying new TCP + mTLS handshakes for the ones that aged past the pool's idle limit
/// (4 s) in between.
#[tokio::test]
async fn a_steady_trickle_keeps_every_pooled_connection_warm_for_the_next_burst() {
    let mut mesh = Mesh::start(STRICT).await;
    let to_db1 = mesh.via_sidecar("client", SocketAddr::new(mesh.pod_ip("db-1"), 8080)).await;
    let host = "db-1.db.shop.svc.cluster.local:8080";
    let burst = || async move {
        let calls: Vec<_> =
            (0..3).map(|_| tokio::spawn(async move { get1(&mut h1(to_db1).await, host, "/slow/300").await })).collect();
        let mut peers = std::collections::BTreeSet::new();
        for c in calls {
            let g = c.await.unwrap();
            assert_eq!(g.status, 200, "{g:?}");
            peers.insert(echo_peer(&g));
        }
        peers
    };
    // Three requests at once: three connections in each sidecar's pool (the application sees db-1's sidecar's).
    let warm = burst().await;
    assert_eq!(warm.len(), 3, "the burst was not concurrent: {warm:?}");
    // One at a time for longer than the idle limit, then another burst: still the same three connections.
    let mut conn = h1(to_db1).await;
    for _ in 0..25 {
        let g = get1(&mut conn, host, "/").await;
        assert_eq!(g.status, 200, "{g:?}");
        assert!(warm.contains(&echo_peer(&g)), "a new upstream connection during the trickle: {g:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(burst().await, warm, "connections left idle during the trickle were replaced");
}

fn echo_peer(g: &Got) -> String {
    let v: serde_json::Value = serde_json::from_str(&g.body).unwrap();
    v["peer"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn rows6_to_9_headless_pods_and_direct_tcp() {
    let mut mesh = Mesh::start(STRICT).await;
    // Rows 6 and 7: db-1 by IP, any Host (the headless fallback).
    let db1 = mesh.pod_ip("db-1");
    let mut conn = h1(mesh.via_sidecar("client", SocketAddr::new(db1, 8080)).await).await;
    for host in ["db-1.db.shop.svc.cluster.local:8080", &format!("{db1}:8080")] {
        let g = get1(&mut conn, host, "/").await;
        assert_eq!((g.status, g.pod.as_deref()), (200, Some("db-1")), "{host}");
    }
    // Row 8: raw TCP to db-2:5000 over mTLS.
    let db2 = mesh.via_sidecar("client", SocketAddr::new(mesh.pod_ip("db-2"), 5000)).await;
    assert_eq!(tcp_exchange(db2, b"ping\n").await.unwrap(), "db-2 ping\n");
    let inbound = mesh.log("db-2");
    assert_eq!(inbound.last().unwrap().peer_identity.as_deref(), Some("spiffe://cluster.local/ns/shop/sa/client"));
    // Row 9: raw TCP straight to a web pod's TCP port: it is not headless.
    let web = mesh.pods_of("web")[0].clone();
    let to_web = mesh.via_sidecar("client", SocketAddr::new(mesh.pod_ip(&web), 7000)).await;
    assert!(is_reset(to_web, b"ping\n").await);
    assert_eq!(mesh.log(&web).last().unwrap().reason, ReasonCode::DirectNotHeadless);
}

#[tokio::test]
async fn row10_tcp_through_a_service_is_balanced_per_connection() {
    let mut mesh = Mesh::start(STRICT).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 7000)).await;
    let mut served = BTreeMap::new();
    for i in 0..10 {
        let answer = tcp_exchange(web, format!("hello {i}\n").as_bytes()).await.unwrap();
        let pod = answer.split(' ').next().unwrap().to_string();
        assert_eq!(answer, format!("{pod} hello {i}\n"));
        *served.entry(pod).or_insert(0) += 1;
    }
    assert_eq!(served.keys().cloned().collect::<Vec<_>>(), mesh.pods_of("web"), "{served:?}");
}

#[tokio::test]
async fn rows11_and_14_unknown_host_and_non_http_bytes() {
    let mut mesh = Mesh::start(STRICT).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let mut conn = h1(web).await;
    let g = get1(&mut conn, "nothing.example", "/").await;
    assert_eq!(g.status, 404);
    assert_eq!(g.reason.as_deref(), Some("no_route; side=source; rule=R3.1"));
    // Row 14: not HTTP on an HTTP port.
    assert!(is_reset(web, b"\x00\x01hello\n").await);
    assert!(mesh.log("client").iter().any(|r| r.reason == ReasonCode::ProtocolError));
}

#[tokio::test]
async fn row13_plain_tcp_to_a_headless_pod() {
    let mesh = Mesh::start(STRICT).await;
    let db0 = mesh.plain(SocketAddr::new(mesh.pod_ip("db-0"), 5000));
    assert!(is_reset(db0, b"ping\n").await);
    let mesh = Mesh::start(PERMISSIVE).await;
    let db0 = mesh.plain(SocketAddr::new(mesh.pod_ip("db-0"), 5000));
    assert_eq!(tcp_exchange(db0, b"ping\n").await.unwrap(), "db-0 ping\n");
}

#[tokio::test]
async fn row15_auto_port_http_per_request_and_tcp_per_connection() {
    let mut mesh = Mesh::start(STRICT).await;
    let echo = mesh.via_sidecar("client", mesh.service("echo", 9000)).await;
    let mut conn = h1(echo).await;
    let mut served = Vec::new();
    for _ in 0..40 {
        let g = get1(&mut conn, "echo.shop:9000", "/").await;
        assert_eq!(g.status, 200);
        served.push(g.pod);
    }
    assert_eq!(counts(served).len(), 2, "HTTP on an auto port is balanced per request");
    let answer = tcp_exchange(echo, b"raw\n").await.unwrap();
    assert!(answer.ends_with(" raw\n"), "{answer}");
}

#[tokio::test]
async fn row17_a_service_of_plain_pods_is_reached_in_plaintext() {
    let mut mesh = Mesh::start(STRICT).await;
    let legacy = mesh.via_sidecar("client", mesh.service("legacy", 80)).await;
    let mut conn = h1(legacy).await;
    let g = get1(&mut conn, "legacy.shop", "/").await;
    assert_eq!((g.status, g.pod.as_deref()), (200, Some("legacy")));
    assert_eq!(mesh.log("client").last().unwrap().peer_identity, None);
}

#[tokio::test]
async fn row18_http2_calls_on_one_connection_are_spread_per_request() {
    let mut mesh = Mesh::start(STRICT).await;
    let greeter = mesh.via_sidecar("client", mesh.service("greeter", 50051)).await;
    let mut conn = h2(greeter).await;
    let mut served = Vec::new();
    for _ in 0..100 {
        let req = http::Request::builder()
            .uri("http://greeter.shop:50051/helloworld.Greeter/SayHello")
            .method("POST")
            .body(http_body_util::Empty::new())
            .unwrap();
        let g = got(conn.send_request(req).await.unwrap()).await;
        assert_eq!(g.status, 200, "{g:?}");
        served.push(g.pod);
    }
    let c = counts(served);
    assert_eq!(c.len(), 2, "{c:?}");
    assert!(c.values().all(|&n| n >= 30), "{c:?}");
}

/// The files a sidecar's file source watches, in a directory of their own: its config and certificates.
struct WatchedFiles {
    dir: std::path::PathBuf,
    paths: podmesh_proxy::FilePaths,
}

impl WatchedFiles {
    fn new(name: &str) -> WatchedFiles {
        let dir = std::env::temp_dir().join(format!("podmesh-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let paths = podmesh_proxy::FilePaths {
            config: dir.join("config.json"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            roots: dir.join("roots.pem"),
        };
        WatchedFiles { dir, paths }
    }

    /// Writes aside and renames over, as tools that replace config files (and Kubernetes volumes) do.
    fn put(&self, path: &std::path::Path, bytes: &[u8]) {
        let tmp = self.dir.join("tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn config(&self, cfg: &podmesh_compute::ProxyConfig) {
        self.put(&self.paths.config, &serde_json::to_vec(cfg).unwrap());
    }

    /// A certificate for `identity` from `ca`, with `ca` as the trust anchor.
    fn certificates(&self, ca: &podmesh_identity::Ca, identity: &podmesh_compute::Identity) {
        let cert = ca.issue(identity, Duration::from_secs(3600)).unwrap();
        self.put(&self.paths.key, cert.key_pem.as_bytes());
        self.put(&self.paths.roots, ca.cert_pem().as_bytes());
        self.put(&self.paths.cert, cert.cert_chain_pem.as_bytes());
    }

    /// Starts following the files for `proxy`; events arrive on the receiver.
    fn follow(&self, proxy: &Arc<Proxy>) -> (JoinHandle<()>, Events) {
        let (source, _, _) = podmesh_proxy::FileSource::open(self.paths.clone(), Duration::from_millis(20)).unwrap();
        let (events, heard) = tokio::sync::mpsc::unbounded_channel();
        let proxy = Arc::clone(proxy);
        let task = tokio::spawn(async move {
            podmesh_proxy::follow(source, &proxy, move |e| {
                let _ = events.send(e);
            })
            .await
        });
        (task, heard)
    }
}

impl Drop for WatchedFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

type Events = tokio::sync::mpsc::UnboundedReceiver<Result<&'static str, String>>;

async fn next(heard: &mut Events) -> Result<&'static str, String> {
    tokio::time::timeout(Duration::from_secs(5), heard.recv()).await.unwrap().unwrap()
}

#[tokio::test]
async fn row12_and_reload_a_new_config_file_applies_to_the_next_request() {
    use podmesh_proxy::read_config;

    let mut mesh = Mesh::start(STRICT).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let mut conn = h1(web).await;
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);

    // The files the sidecar watches: the same config, then one where no web pod is ready (row 12).
    let files = WatchedFiles::new("reload");
    let proxy = &mesh.sidecars["client"];
    let good = (*proxy.config.current()).clone();
    files.config(&good);
    files.certificates(&mesh.ca, &good.workload.identity);
    let (watcher, mut heard) = files.follow(proxy);
    let mut none_ready = good.clone();
    let mut outbound = (*none_ready.outbound).clone();
    for up in outbound.clusters.values_mut().filter(|u| &*u.service.name == "web") {
        for ep in &mut up.endpoints {
            ep.ready = false;
        }
    }
    none_ready.outbound = Arc::new(outbound);
    files.config(&none_ready);
    assert_eq!(next(&mut heard).await, Ok("config reloaded"));
    // The same client connection: the next request sees the new config.
    let g = get1(&mut conn, "web.shop", "/").await;
    assert_eq!(g.status, 503, "{g:?}");
    assert_eq!(g.reason.as_deref(), Some("no_healthy_upstream; side=source; rule=R3.1"));

    // A broken file is refused and the last good config stays.
    std::fs::write(&files.paths.config, b"{ not json").unwrap();
    let e = next(&mut heard).await.unwrap_err();
    assert!(e.contains("not a sidecar config"), "{e}");
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 503);
    assert_eq!(read_config(&files.paths.config).unwrap_err(), e);

    // So is the config of another sidecar: an identity never changes.
    let other = mesh.index.proxy_config(&podmesh_model::ObjectKey::new("shop", "db-1")).unwrap();
    files.config(&other);
    let e = next(&mut heard).await.unwrap_err();
    assert!(e.contains("refused a config for shop/db-1"), "{e}");
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 503);

    files.config(&good);
    assert_eq!(next(&mut heard).await, Ok("config reloaded"));
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);
    watcher.abort();
}

/// Certificates from files (R5 rotation): new handshakes use each new set, a set for another identity is refused.
/// Shown with a CA the mesh does not trust: once the client sidecar rotates to its certificate, a new connection
/// to a STRICT pod is refused by the destination; rotating back to the mesh CA's restores it.
#[tokio::test]
async fn rotated_certificates_apply_to_new_handshakes() {
    let mut mesh = Mesh::start(STRICT).await;
    // Direct pod traffic: one new mTLS connection per client connection.
    let db1 = mesh.via_sidecar("client", SocketAddr::new(mesh.pod_ip("db-1"), 8080)).await;
    let get = || async move { get1(&mut h1(db1).await, "db-1.db.shop", "/").await };
    assert_eq!(get().await.status, 200);

    let files = WatchedFiles::new("rotate");
    let proxy = &mesh.sidecars["client"];
    let me = proxy.tls.identity();
    files.config(&proxy.config.current());
    files.certificates(&mesh.ca, &me);
    let (watcher, mut heard) = files.follow(proxy);

    let stranger = podmesh_identity::Ca::new("cluster.local").unwrap();
    files.certificates(&stranger, &me);
    assert_eq!(next_applied(&mut heard).await, "certificates reloaded");
    let refused = tokio::time::timeout(Duration::from_secs(5), async {
        let conn = TcpStream::connect(db1).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(conn)).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request("db-1.db.shop", "/")).await
    })
    .await
    .unwrap();
    assert!(refused.is_err(), "a connection with the untrusted certificate was served: {refused:?}");
    assert!(mesh.log("db-1").iter().any(|r| r.reason == ReasonCode::MtlsRequired), "{:#?}", mesh.log("db-1"));

    // Certificates for another identity are refused; the ones in force stay.
    let db = mesh.index.proxy_config(&podmesh_model::ObjectKey::new("shop", "db-1")).unwrap().workload.identity;
    files.certificates(&mesh.ca, &db);
    let e = loop {
        if let Err(e) = next(&mut heard).await {
            break e;
        }
    };
    assert!(e.contains("refused certificates for spiffe://cluster.local/ns/shop/sa/db"), "{e}");
    assert_eq!(proxy.tls.identity(), me);

    files.certificates(&mesh.ca, &me);
    assert_eq!(next_applied(&mut heard).await, "certificates reloaded");
    assert_eq!(get().await.status, 200);
    watcher.abort();
}

/// The next applied update. Three files are replaced one by one, so the source may first see a partial set,
/// which fails to load (a key that does not match its certificate) and is read again when the rest arrives.
async fn next_applied(heard: &mut Events) -> &'static str {
    loop {
        match next(heard).await {
            Ok(what) => return what,
            Err(e) => assert!(e.contains("cert.pem"), "not a partial certificate set: {e}"),
        }
    }
}

#[tokio::test]
async fn drain_finishes_requests_in_flight_and_stops_accepting() {
    let mut mesh = Mesh::start(STRICT).await;
    let web = mesh.service("web", 80);
    let listener = mesh.via_sidecar("client", web).await;
    let mut h1conn = h1(listener).await;
    let mut h2conn = h2(listener).await;
    // Both connections are established and have served a request.
    assert_eq!(get1(&mut h1conn, "web.shop", "/").await.status, 200);
    let h2req = |path: &str| {
        http::Request::builder()
            .uri(format!("http://web.shop{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    assert_eq!(got(h2conn.send_request(h2req("/")).await.unwrap()).await.status, 200);

    // Requests in flight when the drain begins.
    let slow1 = tokio::spawn(async move {
        let resp = h1conn.send_request(request("web.shop", "/slow/400")).await.unwrap();
        let close = resp.headers().get("connection").map(|v| v.to_str().unwrap().to_string());
        (got(resp).await.status, close)
    });
    let slow2 = tokio::spawn(h2conn.send_request(h2req("/slow/400")));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let proxy = std::sync::Arc::clone(&mesh.sidecars["client"]);
    let drained = tokio::spawn(async move { proxy.drain(std::time::Duration::from_secs(5)).await });

    let (status, close) = slow1.await.unwrap();
    assert_eq!((status, close.as_deref()), (200, Some("close")), "HTTP/1: answered, then closed");
    assert_eq!(got(slow2.await.unwrap().unwrap()).await.status, 200, "HTTP/2: the stream in flight completes");
    assert_eq!(drained.await.unwrap(), 0, "every connection ended within the grace period");
    // No new connections are accepted.
    assert!(tokio::net::TcpStream::connect(listener).await.is_err());
    assert!(!mesh.sidecars["client"].is_ready());
}

#[tokio::test]
async fn the_access_log_counts_body_bytes_both_ways_and_ends_with_the_response() {
    use http_body_util::Full;
    let mut mesh = Mesh::start(STRICT).await;
    let pod = mesh.pods_of("web")[0].clone();
    let to_pod = mesh.via_sidecar("client", SocketAddr::new(mesh.pod_ip(&pod), 8080)).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let stream = tokio::net::TcpStream::connect(web).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let body = vec![b'x'; 100_000];
    let req =
        http::Request::post("/echo").header("host", "web.shop").body(Full::new(bytes::Bytes::from(body))).unwrap();
    let g = got(sender.send_request(req).await.unwrap()).await;
    assert_eq!((g.status, g.body.len()), (200, 100_000));
    // The record is written once the response body has been sent.
    let rec = record(&mesh, "client", |r| r.path.as_deref() == Some("/echo")).await;
    assert_eq!((rec.bytes_received, rec.bytes_sent, rec.reason), (100_000, 100_000, ReasonCode::Ok), "{rec:?}");
    let served = rec.upstream_pod.clone().unwrap();
    let name = served.split('/').nth(1).unwrap();
    let rec = record(&mesh, name, |r| r.path.as_deref() == Some("/echo")).await;
    assert_eq!((rec.bytes_received, rec.bytes_sent), (100_000, 100_000), "{rec:?}");
    // A response the client walks away from is logged as cut short, with what was sent until then.
    let mut conn = h1(web).await;
    let resp = conn.send_request(request("web.shop", "/bytes/50000000")).await.unwrap();
    drop(resp);
    drop(conn);
    let cut = record(&mesh, "client", |r| r.path.as_deref() == Some("/bytes/50000000")).await;
    assert_eq!(cut.reason, ReasonCode::UpstreamReset, "{cut:?}");
    assert!(cut.bytes_sent < 50_000_000, "{cut:?}");
    // Direct pod traffic is spliced, and logged once per connection as TCP, with its bytes.
    let mut conn = h1(to_pod).await;
    assert_eq!(get1(&mut conn, "web.shop", "/").await.status, 200);
    drop(conn);
    let direct = record(&mesh, "client", |r| r.dst.port() == 8080 && r.protocol == "tcp").await;
    assert!(direct.bytes_received > 0 && direct.bytes_sent > 0, "{direct:?}");
}

/// The first access record of `pod` matching `pred`, waiting up to 10 s for it (records are written when an
/// exchange ends).
async fn record(
    mesh: &Mesh,
    pod: &str,
    pred: impl Fn(&podmesh_proxy::AccessRecord) -> bool,
) -> podmesh_proxy::AccessRecord {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(r) = mesh.log(pod).into_iter().find(&pred) {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "no such record: {:#?}", mesh.log(pod));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_reset_at_accept() {
    let mut mesh = Mesh::start(STRICT).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    mesh.sidecars["client"].set_max_connections(2);
    let mut a = h1(web).await;
    let mut b = h1(web).await;
    assert_eq!(get1(&mut a, "web.shop", "/").await.status, 200);
    assert_eq!(get1(&mut b, "web.shop", "/").await.status, 200);
    assert!(is_reset(web, b"GET / HTTP/1.1\r\nhost: web.shop\r\n\r\n").await, "a third connection is refused");
    drop(a);
    // Once one closes, there is room again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while mesh.sidecars["client"].active_connections() >= 2 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut c = h1(web).await;
    assert_eq!(get1(&mut c, "web.shop", "/").await.status, 200);
}
