//! Long pushes and push slots: a sidecar's initial config takes many responses, and only
//! `push_concurrency()` streams have such a push in flight at once. Sidecars that wait for a slot must still get
//! their whole config, and every slot must come back once the sidecars have answered.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use podmesh_api::Kind;
use podmesh_api::xds::{AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use podmesh_control::ads::MAX_BYTES_PER_RESPONSE;
use podmesh_control::{Authority, Change, Control, Version};
use podmesh_model::Source;
use podmesh_testkit::synthetic::{dimensions, files, plan};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

struct NoChanges;

impl podmesh_control::Source for NoChanges {
    async fn next(&mut self) -> Option<Result<Version, String>> {
        std::future::pending().await
    }
}

/// A sidecar's open stream: its requests and its responses.
type Open = (mpsc::Sender<DeltaDiscoveryRequest>, tonic::Streaming<DeltaDiscoveryResponse>);

/// One sidecar's stream: subscribes to every kind and ACKs every response until it holds `shared` shared
/// resources and its Workload. Returns how many shared resources it was sent, and the stream, still open.
async fn join(
    control: &Control,
    addr: std::net::SocketAddr,
    pod: &podmesh_model::ObjectKey,
    shared: usize,
) -> (usize, Open) {
    let control_id = podmesh_control::control_identity("cluster.local");
    let opts = podmesh_proxy::ControlOptions {
        address: addr.into(),
        token: control.shared.authority.token(pod).into(),
        roots_pem: control.shared.authority.trust_anchors().join(""),
        control_identity: control_id.clone(),
        cert_ttl: None,
        dialer: podmesh_proxy::Dialer::default(),
    };
    let (_, _, creds, _) = podmesh_proxy::control::request_certificate(&opts).await.unwrap();
    let tls = Arc::new(ArcSwap::new(podmesh_proxy::control::client_tls(&creds, &control_id).unwrap()));
    let channel = podmesh_proxy::control::channel(&addr.into(), tls, &podmesh_proxy::Dialer::default()).await.unwrap();
    let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel(64);
    for req in podmesh_api::subscriptions(&pod.to_string(), |_| Default::default()) {
        tx.send(req).await.unwrap();
    }
    let mut stream = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
    let (mut got, mut workload) = (0, false);
    while got < shared || !workload {
        let r = stream.message().await.unwrap().expect("the stream ended early");
        if r.type_url == Kind::Workload.type_url() {
            workload |= !r.resources.is_empty();
        } else {
            got += r.resources.len();
        }
        let ack = DeltaDiscoveryRequest { type_url: r.type_url, response_nonce: r.nonce, ..Default::default() };
        tx.send(ack).await.unwrap();
    }
    (got, (tx, stream))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_waiting_for_a_push_slot_all_get_their_whole_config_and_every_slot_comes_back() {
    let (namespaces, per_ns) = dimensions(0.01);
    let plans = plan(namespaces, per_ns);
    let (texts, _) = files(&plans, per_ns);
    let sources: Vec<Source> = texts.into_iter().map(|(name, text)| Source::Text { name, text }).collect();
    let cluster = podmesh_model::load(&sources).unwrap().cluster;
    let authority = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"push test key").unwrap();
    let control = Control::new(cluster, "start".into(), authority).unwrap();
    let snapshot = control.shared.current();
    let shared: usize = snapshot.shared.values().map(|m| m.len()).sum();
    let bytes: usize = snapshot.shared.values().flat_map(|m| m.values()).map(|e| e.body_len).sum();
    assert!(bytes > 4 * MAX_BYTES_PER_RESPONSE, "the config must take several responses: {bytes} bytes");

    // All slots but one are taken: the sidecars' long pushes go one at a time.
    let held = Arc::clone(&control.shared.push_slots)
        .acquire_many_owned(control.shared.push_slots.available_permits() as u32 - 1)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = control.clone();
    let server = tokio::spawn(async move { serving.serve(listener, None, NoChanges, std::future::pending()).await });

    let pods: Vec<_> = {
        let index = control.shared.index.read();
        index.cluster().pods.keys().filter(|k| index.proxy_config(k).is_ok()).take(4).cloned().collect()
    };
    let joins: Vec<_> = pods
        .iter()
        .map(|p| {
            let (control, pod) = (control.clone(), p.clone());
            tokio::spawn(async move { join(&control, addr, &pod, shared).await })
        })
        .collect();
    // Each stream stays open: a slot must come back when its sidecar answers, not when its stream ends.
    let mut open = Vec::new();
    for j in joins {
        let (got, stream) = tokio::time::timeout(Duration::from_secs(60), j).await.expect("a sidecar stalled").unwrap();
        assert_eq!(got, shared);
        open.push(stream);
    }
    // Every sidecar answered its last response: the one free slot is free again (once the last ACK is read).
    let start = std::time::Instant::now();
    while control.shared.push_slots.available_permits() != 1 {
        assert!(start.elapsed() < Duration::from_secs(5), "a push slot was not given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(open);
    drop(held);
    server.abort();
}

/// One response above the byte budget (here the route table of port 80, which 600 Services share) is a long push
/// on its own: with every slot taken it waits, and it is sent as soon as a slot is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_response_above_the_byte_budget_waits_for_a_push_slot() {
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: big, labels: {app: a0}}\n\
         spec: {containers: [{name: app, ports: [{containerPort: 8080}]}]}\n",
    );
    for i in 0..600 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: service-{i:03}, namespace: big}}\n\
             spec: {{selector: {{app: a{i}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n"
        ));
    }
    let cluster = podmesh_model::load_str(&[("big.yaml", &yaml)]).unwrap().cluster;
    let authority = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"push test key").unwrap();
    let control = Control::new(cluster, "start".into(), authority).unwrap();
    let snapshot = control.shared.current();
    let table = snapshot.named(Kind::RouteTable).get("80").unwrap().body_len;
    assert!(table > MAX_BYTES_PER_RESPONSE, "the route table must be above the budget: {table} bytes");
    let shared: usize = snapshot.shared.values().map(|m| m.len()).sum();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = control.clone();
    let server = tokio::spawn(async move { serving.serve(listener, None, NoChanges, std::future::pending()).await });
    let pod = podmesh_model::ObjectKey::new("big", "client");
    let (_, (tx, mut stream)) = join(&control, addr, &pod, shared).await;
    // Wait until the join's last ACK has given its slot back, then take every slot.
    let slots = &control.shared.push_slots;
    let start = std::time::Instant::now();
    while slots.available_permits() != podmesh_control::ads::push_concurrency() {
        assert!(start.elapsed() < Duration::from_secs(5), "the join's slot was not given back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = Arc::clone(slots).acquire_many_owned(slots.available_permits() as u32).await.unwrap();

    // A Service deleted: its cluster and listener go, and port 80's route table changes.
    let deleted = podmesh_model::ObjectRef::new(
        podmesh_model::Kind::Service,
        podmesh_model::ObjectKey::new("big", "service-300"),
    );
    let change = Change::Objects { objects: podmesh_model::Cluster::default(), changed: vec![deleted] };
    Control::apply(&control.shared, Version { change, cause: "service-300 deleted".into() }).await.unwrap();
    let mut got = Vec::new();
    let route_table = loop {
        let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
        let Ok(r) = next else { break None };
        let r = r.unwrap().unwrap();
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        };
        tx.send(ack).await.unwrap();
        if r.type_url == Kind::RouteTable.type_url() {
            break Some(r);
        }
        got.push(r.type_url);
    };
    assert!(route_table.is_none(), "the large route table was sent without a push slot");
    assert_eq!(got, vec![Kind::Cluster.type_url().to_string()], "what comes before it is sent");
    drop(held);
    let r =
        tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("never sent").unwrap().unwrap();
    assert_eq!(r.type_url, Kind::RouteTable.type_url());
    assert_eq!(r.resources.len(), 1);
    server.abort();
}
