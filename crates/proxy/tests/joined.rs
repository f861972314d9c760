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
    // It goes away: back to the web pods.
    std::fs::remove_file(cp.manifests.join("web-to-legacy.yaml")).unwrap();
    let took = until_served_by(&mut conn, |p| web_pods.iter().any(|w| w == p)).await;
    eprintln!("its deletion applied after {took:?}");
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
    assert!(nack.cause.contains("clients.yaml (edited)"), "{nack:?}");
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
    let _ = SocketAddr::from(([127, 0, 0, 1], 0));
}
