//! Sidecars that start with only the control plane's address, a bootstrap token and the mesh root: they get
//! their certificate from the control plane's CA and their config over delta xDS, serve mTLS traffic, and
//! follow manifest edits live (see `support` for the in-process mesh).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use podmesh_model::ObjectKey;
use podmesh_proxy::ControlSource;
use support::*;

const PERMISSIVE: &[&str] = &["examples/quickstart"];

const WEB_TO_LEGACY: &str = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: web-to-legacy
  namespace: shop
spec:
  hosts: [web]
  http:
    - route:
        - destination:
            host: legacy
            port:
              number: 80
";

/// Sends requests to web.shop through the client's sidecar until `pod` answers one, for at most 10 s: how long
/// the edit took to reach the sidecar.
async fn until_served_by(conn: &mut Sender, pred: impl Fn(&str) -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        let g = get1(conn, "web.shop", "/").await;
        assert_eq!(g.status, 200, "{g:?}");
        if g.pod.as_deref().is_some_and(&pred) {
            return start.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the edit did not reach the sidecar within 10 s");
}

type Sender = hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>;

async fn until_synced(cp: &ControlPlane, sidecars: usize) {
    let start = Instant::now();
    loop {
        let s = cp.status();
        let g = cp.generation();
        if s.len() == sidecars && s.iter().all(|p| p.sync_state() == "SYNCED" && p.config_generation() == g) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "not all synced at generation {g}: {s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sidecars_that_join_with_a_token_serve_mtls_and_follow_a_manifest_edit_live() {
    let cp = ControlPlane::start(PERMISSIVE).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    let meshed = mesh.sidecars.len();
    until_synced(&cp, meshed).await;

    let web = mesh.service("web", 80);
    let mut conn = h1(mesh.via_sidecar("client", web).await).await;
    let web_pods = mesh.pods_of("web");
    for _ in 0..10 {
        let g = get1(&mut conn, "web.shop", "/").await;
        assert_eq!(g.status, 200, "{g:?}");
        assert!(web_pods.contains(g.pod.as_ref().unwrap()), "{g:?}");
    }
    // mTLS both ways, with the identities the CA gave for the tokens.
    assert!(
        mesh.log("client").iter().all(|r| r.peer_identity.as_deref() == Some("spiffe://cluster.local/ns/shop/sa/web"))
    );
    let inbound: Vec<_> = web_pods.iter().flat_map(|p| mesh.log(p)).collect();
    assert_eq!(inbound.len(), 10);
    assert!(inbound.iter().all(|r| r.peer_identity.as_deref() == Some("spiffe://cluster.local/ns/shop/sa/client")));

    // A VirtualService appears: web.shop now goes to the legacy pod, on the same client connection.
    let before = cp.generation();
    std::fs::write(cp.manifests.join("web-to-legacy.yaml"), WEB_TO_LEGACY).unwrap();
    let took = until_served_by(&mut conn, |p| p == "legacy").await;
    eprintln!("a new VirtualService routed requests after {took:?}");
    assert!(cp.generation() > before);
    assert_eq!(cp.control.shared.current().cause, "VirtualService shop/web-to-legacy added in web-to-legacy.yaml");
    // It goes away: back to the web pods.
    std::fs::remove_file(cp.manifests.join("web-to-legacy.yaml")).unwrap();
    let took = until_served_by(&mut conn, |p| web_pods.iter().any(|w| w == p)).await;
    eprintln!("its deletion applied after {took:?}");
    assert_eq!(cp.control.shared.current().cause, "VirtualService shop/web-to-legacy deleted from web-to-legacy.yaml");
    until_synced(&cp, meshed).await;
    for _ in 0..10 {
        let g = get1(&mut conn, "web.shop", "/").await;
        assert!(web_pods.contains(g.pod.as_ref().unwrap()), "{g:?}");
    }
}

#[tokio::test]
async fn a_config_the_sidecar_refuses_is_nacked_and_the_last_good_one_keeps_serving() {
    let cp = ControlPlane::start(PERMISSIVE).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    until_synced(&cp, mesh.sidecars.len()).await;
    // The client pod's service account changes: its config now names another identity than its certificate's,
    // which a running sidecar never takes.
    let clients = cp.manifests.join("clients.yaml");
    let text = std::fs::read_to_string(&clients).unwrap();
    std::fs::write(&clients, text.replace("serviceAccountName: client", "serviceAccountName: robot")).unwrap();
    let start = Instant::now();
    let nack = loop {
        let client = cp.status().into_iter().find(|p| p.pod == "shop/client").unwrap();
        if client.sync_state() == "NACKED" {
            break client.last_nack.unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "no NACK: {client:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(nack.kind, "workload");
    assert!(nack.reason.contains("spiffe://cluster.local/ns/shop/sa/robot"), "{nack:?}");
    // It names the object the edit changed, and where.
    assert_eq!(nack.cause, "Pod shop/client edited in clients.yaml", "{nack:?}");
    // The last good config still serves.
    let web = mesh.service("web", 80);
    let mut conn = h1(mesh.via_sidecar("client", web).await).await;
    let g = get1(&mut conn, "web.shop", "/").await;
    assert_eq!(g.status, 200, "{g:?}");
    // The other sidecars took the new generation.
    let others = cp.status().into_iter().filter(|p| p.pod != "shop/client").collect::<Vec<_>>();
    assert!(others.iter().all(|p| p.sync_state() == "SYNCED"), "{others:#?}");
}

#[tokio::test]
async fn bootstrap_with_a_wrong_or_missing_token_is_refused() {
    let cp = ControlPlane::start(PERMISSIVE).await;
    let other = ControlPlane::start(PERMISSIVE).await;
    let client = ObjectKey::new("shop", "client");
    let cases = [
        ("no token", String::new(), "bootstrap token refused"),
        ("garbage", "let me in".to_string(), "bootstrap token refused"),
        ("another control plane's token", other.control.shared.authority.token(&client), "bootstrap token refused"),
        (
            "a pod that does not exist",
            cp.control.shared.authority.token(&ObjectKey::new("shop", "ghost")),
            "no pod shop/ghost",
        ),
        (
            "a pod without a sidecar",
            cp.control.shared.authority.token(&ObjectKey::new("shop", "legacy")),
            "has no sidecar",
        ),
    ];
    for (what, token, says) in cases {
        let e = ControlSource::join(cp.options_with_token(token), Duration::from_millis(300)).await.unwrap_err();
        assert!(e.contains(says), "{what}: {e}");
    }
    // The good token joins, and a sidecar for shop/client gets shop/client's identity.
    let (_, config, creds) = ControlSource::join(cp.options(&client), Duration::from_secs(10)).await.unwrap();
    assert_eq!(creds.identity().as_str(), "spiffe://cluster.local/ns/shop/sa/client");
    assert_eq!(config.workload.pod, client);
    // A control plane that is not the mesh's (its certificate chains to another root) is refused by the sidecar.
    let mut wrong_root = cp.options(&client);
    wrong_root.roots_pem = other.control.shared.authority.trust_anchors().join("");
    assert!(ControlSource::join(wrong_root, Duration::from_millis(300)).await.is_err());
}

/// Requests through the client's sidecar to `dst` (Host `host`) until `stop` is set (and at most `limit`), a new
/// connection every 10th request so new handshakes happen throughout. Returns (sent, failures, pods served).
fn traffic(
    to: SocketAddr,
    host: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    limit: Duration,
) -> tokio::task::JoinHandle<(usize, Vec<String>, std::collections::BTreeMap<String, usize>)> {
    tokio::spawn(async move {
        let start = Instant::now();
        let (mut sent, mut failures, mut served) = (0, Vec::new(), std::collections::BTreeMap::new());
        while !stop.load(std::sync::atomic::Ordering::Relaxed) && start.elapsed() < limit {
            let mut conn = h1(to).await;
            for _ in 0..10 {
                let g = get1(&mut conn, host, "/").await;
                sent += 1;
                if g.status != 200 {
                    failures.push(format!("{g:?}"));
                }
                *served.entry(g.pod.unwrap_or_default()).or_insert(0) += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        (sent, failures, served)
    })
}

fn flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

#[tokio::test]
async fn the_control_plane_restarts_while_sidecars_serve_and_no_request_fails() {
    let mut cp = ControlPlane::start(PERMISSIVE).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    let meshed = mesh.sidecars.len();
    until_synced(&cp, meshed).await;
    let to_web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let stop = flag();
    let load = traffic(to_web, "web.shop", stop.clone(), Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Down for half a second: every stream ends; the sidecars serve on with what they have.
    cp.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!load.is_finished());
    cp.restart().await;
    // They find it again (jittered backoff from 0.1 s), say what they hold, and are in sync.
    until_synced(&cp, meshed).await;
    // And follow the restarted control plane's changes.
    let mut conn = h1(to_web).await;
    std::fs::write(cp.manifests.join("web-to-legacy.yaml"), WEB_TO_LEGACY).unwrap();
    until_served_by(&mut conn, |p| p == "legacy").await;
    std::fs::remove_file(cp.manifests.join("web-to-legacy.yaml")).unwrap();
    until_served_by(&mut conn, |p| p != "legacy").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failures, _) = load.await.unwrap();
    assert!(sent > 50, "only {sent} requests");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
}

#[tokio::test]
async fn certificates_rotated_every_few_seconds_fail_no_request() {
    // Three-second certificates: each sidecar renews about every 1.5 s.
    let cp = ControlPlane::start_with_ttl(PERMISSIVE, Duration::from_secs(3)).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    let meshed = mesh.sidecars.len();
    let signed = || {
        let label = podmesh_control::status::ResultLabel { result: "signed".into() };
        cp.control.shared.metrics.csrs.get_or_create(&label).get()
    };
    let at_start = signed();
    let to_web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let stop = flag();
    let load = traffic(to_web, "web.shop", stop.clone(), Duration::from_secs(30));
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failures, _) = load.await.unwrap();
    let renewed = signed() - at_start;
    assert!(renewed >= 2 * meshed as u64, "only {renewed} renewals for {meshed} sidecars in 5 s");
    assert!(sent > 50, "only {sent} requests");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    // Renewals never cut a response short: every sidecar answered everything it was sent.
    until_synced(&cp, meshed).await;
    // The certificate in force is a fresh one, well inside its life.
    let client = &mesh.sidecars["client"];
    let left = client.tls.credentials().not_after().duration_since(std::time::SystemTime::now()).unwrap();
    assert!(left > Duration::from_millis(500), "{left:?}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_and_nothing_goes_in_plaintext() {
    // Two-second certificates, and no control plane to renew them once the sidecars have joined.
    let mut cp = ControlPlane::start_with_ttl(PERMISSIVE, Duration::from_secs(2)).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    cp.stop().await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(mesh.sidecars["client"].tls.credentials().is_expired(std::time::SystemTime::now()));
    let web_apps: Vec<(SocketAddr, u64)> =
        mesh.apps.iter().filter(|(_, e)| e.name().starts_with("web-")).map(|(a, e)| (*a, e.requests())).collect();
    // PERMISSIVE: the web pods would take plaintext, so only the client sidecar's refusal to send it keeps the
    // request from getting through.
    let mut conn = h1(mesh.via_sidecar("client", mesh.service("web", 80)).await).await;
    let g = get1(&mut conn, "web.shop", "/").await;
    assert_eq!(g.status, 503, "{g:?}");
    assert_eq!(g.reason.as_deref().map(|r| r.split(';').next().unwrap()), Some("upstream_connect_failure"), "{g:?}");
    for (addr, before) in web_apps {
        assert_eq!(mesh.apps[&addr].requests(), before, "{addr} was reached");
    }
    // The client sidecar did not even connect: it checks its certificate before dialing.
    for pod in mesh.pods_of("web") {
        assert!(mesh.log(&pod).is_empty(), "{pod}: {:?}", mesh.log(&pod));
    }
}

#[tokio::test]
async fn endpoints_added_and_removed_every_100_ms_fail_no_request() {
    const CHURN: &[&str] = &["crates/proxy/tests/churn"];
    let cp = ControlPlane::start(CHURN).await;
    let mut mesh = Mesh::start_joined(CHURN, &cp).await;
    until_synced(&cp, mesh.sidecars.len()).await;
    let flap = cp.manifests.join("flap.yaml");
    let pods = std::fs::read_to_string(&flap).unwrap();
    let to_api = mesh.via_sidecar("client", mesh.service("api", 80)).await;
    let stop = flag();
    let load = traffic(to_api, "api.churn", stop.clone(), Duration::from_secs(30));
    // api-2 and api-3 go and come back every 100 ms, 30 times.
    let before = cp.generation();
    for i in 0..30 {
        let text = if i % 2 == 0 { "# (deleted for now)\n" } else { pods.as_str() };
        std::fs::write(&flap, text).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(&flap, &pods).unwrap();
    until_synced(&cp, mesh.sidecars.len()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failures, served) = load.await.unwrap();
    let generations = cp.generation() - before;
    eprintln!("{sent} requests over {generations} generations, served by {served:?}");
    assert!(generations >= 10, "only {generations} generations: the edits were not seen");
    assert!(sent > 100, "only {sent} requests");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(served.get("api-0").is_some_and(|n| *n > 10) && served.get("api-1").is_some_and(|n| *n > 10), "{served:?}");
}

/// Root rotation as the README describes it, with traffic throughout and four-second certificates (so
/// sidecars renew within each phase): (1) the new root is added to `trusted-roots.pem` and the control plane
/// restarted, so every sidecar trusts both; (2) the new root signs and the old one moves to
/// `trusted-roots.pem`; sidecars reconnect to a control plane whose certificate only the new root vouches for,
/// and renew from it. No request fails.
#[tokio::test]
async fn the_root_is_rotated_in_two_restarts_without_a_failed_request() {
    let mut cp = ControlPlane::start_with_ttl(PERMISSIVE, Duration::from_secs(4)).await;
    let mut mesh = Mesh::start_joined(PERMISSIVE, &cp).await;
    let meshed = mesh.sidecars.len();
    until_synced(&cp, meshed).await;
    let to_web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let stop = flag();
    let load = traffic(to_web, "web.shop", stop.clone(), Duration::from_secs(60));
    let old_root = std::fs::read_to_string(cp.state.join("root.pem")).unwrap();
    let new = podmesh_identity::Ca::new("cluster.local").unwrap();

    // 1. Trust the new root too.
    std::fs::write(cp.state.join("trusted-roots.pem"), new.cert_pem()).unwrap();
    cp.restart().await;
    until_synced(&cp, meshed).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. Sign with the new root; keep trusting the old one while its certificates live.
    std::fs::write(cp.state.join("root.pem"), new.cert_pem()).unwrap();
    std::fs::write(cp.state.join("root-key.pem"), new.key_pem()).unwrap();
    std::fs::write(cp.state.join("trusted-roots.pem"), &old_root).unwrap();
    cp.restart().await;
    until_synced(&cp, meshed).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (sent, failures, _) = load.await.unwrap();
    assert!(sent > 100, "only {sent} requests");
    assert!(failures.is_empty(), "{} of {sent} failed: {:?}", failures.len(), &failures[..failures.len().min(3)]);
    // The restarted control plane signs with the new root only, and every sidecar renewed from it.
    let label = podmesh_control::status::ResultLabel { result: "signed".into() };
    let renewed = cp.control.shared.metrics.csrs.get_or_create(&label).get();
    assert!(renewed >= meshed as u64, "{renewed} certificates from the new root for {meshed} sidecars");
    assert_eq!(cp.control.shared.authority.trust_anchors(), [new.cert_pem(), old_root]);
}
