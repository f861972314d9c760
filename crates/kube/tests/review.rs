#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Identity on a cluster: a sidecar's certificate request with its projected ServiceAccount token, judged by the
//! API server's TokenReview, against recorded answers (`recorded/tokenreview-*.json`) served by the fake API
//! server of `fake/mod.rs`. The sidecar side is the real one (`podmesh_proxy::control::request_certificate`) over
//! the control plane's real gRPC and TLS on 127.0.0.1.

mod fake;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake::FakeApi;
use podmesh_control::{Authority, Control, ReviewError, Reviewed, TokenReview};
use podmesh_kube::review::{AUDIENCE, TokenReviewer};
use serde_json::Value;

const REVIEWS: &str = "POST /apis/authentication.k8s.io/v1/tokenreviews";

fn recorded(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recorded").join(name)).unwrap()
}

/// The recorded answer with `username` and `pod` in place of the recording's.
fn bound_to(username: &str, pod: &str) -> String {
    let mut v: Value = serde_json::from_str(&recorded("tokenreview-bound.json")).unwrap();
    v["status"]["user"]["username"] = Value::String(username.into());
    v["status"]["user"]["extra"]["authentication.kubernetes.io/pod-name"] = serde_json::json!([pod]);
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_review_asks_for_the_podmesh_audience_and_reads_the_answer() {
    let api = FakeApi::start(Default::default()).await;
    let reviewer = TokenReviewer::new(fake::client(&api), AUDIENCE);
    let review = |status: u16, body: String| {
        api.answer_with(REVIEWS, vec![(status, body)]);
        let reviewer = reviewer.clone();
        async move { reviewer.review("the-token").await }
    };
    assert_eq!(
        review(201, recorded("tokenreview-bound.json")).await.unwrap(),
        Reviewed { namespace: "shop".into(), service_account: "client".into(), pod: Some("client".into()) }
    );
    let sent = api.recorded().pop().unwrap();
    assert_eq!(sent.method, "POST");
    let body: Value = serde_json::from_str(&sent.body).unwrap();
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["spec"], serde_json::json!({"token": "the-token", "audiences": ["podmesh"]}));

    assert_eq!(review(201, recorded("tokenreview-unbound.json")).await.unwrap().pod, None);
    assert_eq!(
        review(201, recorded("tokenreview-expired.json")).await,
        Err(ReviewError::Refused("[invalid bearer token, service account token has expired]".into()))
    );
    match review(403, recorded("tokenreview-forbidden.json")).await {
        Err(ReviewError::Unavailable(why)) => assert!(why.contains("403") && why.contains("create"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// The control plane with the quickstart's pods, its CA accepting tokens as `api` reviews them, serving on
/// 127.0.0.1 (the cluster stays as loaded: no source follows).
async fn control_plane(api: &FakeApi) -> (Control, std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
    let cluster = podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap().cluster;
    let authority = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"review test")
        .unwrap()
        .with_token_review(Arc::new(TokenReviewer::new(fake::client(api), AUDIENCE)));
    let control = Control::new(cluster, "start".into(), authority).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (c, never) = (control.clone(), std::future::pending::<()>());
    let server = tokio::spawn(async move {
        c.serve(listener, None, Idle, never).await.unwrap();
    });
    (control, addr, server)
}

/// A source with no next version.
struct Idle;

impl podmesh_control::Source for Idle {
    async fn next(&mut self) -> Option<Result<podmesh_control::Version, String>> {
        std::future::pending().await
    }
}

async fn ask(control: &Control, addr: std::net::SocketAddr, token: &str) -> Result<(String, String), String> {
    let opts = podmesh_proxy::ControlOptions {
        address: addr.into(),
        token: token.to_string().into(),
        roots_pem: control.shared.authority.trust_anchors().join(""),
        control_identity: podmesh_control::control_identity("cluster.local"),
        cert_ttl: None,
        dialer: podmesh_proxy::Dialer::default(),
    };
    let asked = tokio::time::timeout(Duration::from_secs(10), podmesh_proxy::control::request_certificate(&opts));
    let (_, _, creds, pod) = asked.await.expect("no answer within 10 s")?;
    Ok((creds.identity().to_string(), pod))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_gets_its_pods_identity_for_its_service_account_token_and_nothing_else() {
    let api = FakeApi::start(Default::default()).await;
    let (control, addr, server) = control_plane(&api).await;

    // The pod's own projected token: its identity, and the control plane says which pod.
    api.answer_with(REVIEWS, vec![(201, recorded("tokenreview-bound.json"))]);
    assert_eq!(
        ask(&control, addr, "projected-token").await.unwrap(),
        ("spiffe://cluster.local/ns/shop/sa/client".to_string(), "shop/client".to_string())
    );
    let sent: Value = serde_json::from_str(&api.recorded().pop().unwrap().body).unwrap();
    assert_eq!(sent["spec"]["token"], "projected-token");

    // Every other answer is a refusal that says why.
    let refused = |answer: (u16, String), why: &'static str| {
        api.answer_with(REVIEWS, vec![answer]);
        let control = control.clone();
        async move {
            let e = ask(&control, addr, "projected-token").await.unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    };
    refused((201, recorded("tokenreview-expired.json")), "service account token has expired").await;
    refused((201, recorded("tokenreview-unbound.json")), "bound to no pod").await;
    refused((403, recorded("tokenreview-forbidden.json")), "cannot review the token now").await;
    // Another ServiceAccount's token bound to this pod's name: the pod runs as `client`, so no.
    refused((201, bound_to("system:serviceaccount:shop:web", "client")), "runs as ServiceAccount client").await;
    // A token of another namespace's pod of the same name.
    refused((201, bound_to("system:serviceaccount:other:client", "client")), "no pod other/client").await;
    // A pod without a sidecar gets no identity.
    refused((201, bound_to("system:serviceaccount:shop:default", "legacy")), "has no sidecar").await;

    // The bootstrap tokens of `podmesh up` still work, without asking the API server.
    let before = api.recorded().len();
    let token = control.shared.authority.token(&podmesh_model::ObjectKey::new("shop", "client"));
    assert_eq!(ask(&control, addr, &token).await.unwrap().1, "shop/client");
    assert_eq!(api.recorded().len(), before);
    server.abort();
}
