#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `KubeSource` against recorded Kubernetes API responses.
//!
//! No API server runs here, so the fake API server of `fake/mod.rs` answers kube-rs's requests on 127.0.0.1.
//!
//! The lists are made from `examples/quickstart` as the API would show them; `recorded/pods-watch.ndjson` is a
//! committed watch stream.

mod fake;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake::{CRDS, FakeApi, NAMESPACES, PODS, SERVICES, SLICES, WAIT, api_pod, list, pod_event};
use podmesh_compute::Index;
use podmesh_control::{Change, Source, Version};
use podmesh_kube::KubeSource;
use podmesh_model::{Cluster, ObjectKey, Pod, WorkloadKind};
use serde_json::{Value, json};

/// The next version, within [`WAIT`].
async fn next(source: &mut KubeSource) -> Version {
    match tokio::time::timeout(WAIT, source.next()).await {
        Ok(Some(Ok(v))) => v,
        Ok(Some(Err(e))) => panic!("a version that does not load: {e}"),
        Ok(None) => panic!("the source ended"),
        Err(_) => panic!("no version within {WAIT:?}"),
    }
}

/// Applies `v` to `current` as the control plane does (a watch batch carries just the objects it changed), and
/// gives the cluster it makes, with the version's cause.
fn follow(current: &mut Cluster, v: Version) -> (Cluster, String) {
    match v.change {
        Change::Whole(c) => *current = c,
        Change::Objects { mut objects, changed } => current.apply_changes(&mut objects, &changed),
    }
    (current.clone(), v.cause)
}

// --------------------------------------------------------------------------------- fixtures from the quickstart

fn quickstart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart")
}

fn file_cluster() -> Cluster {
    podmesh_model::load(&[podmesh_model::Source::Path(quickstart())]).unwrap().cluster
}

fn api_services(file: &Cluster) -> Vec<Value> {
    fake::api_services(&quickstart(), file)
}

fn quickstart_lists(file: &Cluster, crds: bool) -> HashMap<String, Vec<(u16, String)>> {
    fake::cluster_lists(&quickstart(), file, crds)
}

fn recorded(name: &str) -> Vec<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/recorded").join(name);
    std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

async fn connect(api: &FakeApi) -> (KubeSource, Cluster, String) {
    match KubeSource::connect_within(fake::client(api), WAIT).await {
        Ok(x) => x,
        Err(e) => panic!("connect: {e}; requests: {:#?}", api.requests()),
    }
}

fn pod(c: &Cluster, ns: &str, name: &str) -> Option<Pod> {
    c.pods.get(&ObjectKey::new(ns, name)).cloned()
}

// ------------------------------------------------------------------------------------------------------- tests

/// Contract 1: the quickstart through the API is the quickstart from its files: the same pods (IPs, readiness,
/// labels, service accounts, workloads), Services (ClusterIPs, ports) and Namespaces, and for every pod the same
/// sidecar config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_gives_the_cluster_and_sidecar_configs_of_the_files() {
    let file = file_cluster();
    let api = FakeApi::start(quickstart_lists(&file, true)).await;
    let (_source, cluster, cause) = connect(&api).await;
    assert!(cause.starts_with("start: Kubernetes API (1 Namespaces, "), "{cause}");
    assert!(file.pods.len() >= 8, "the quickstart has its pods");

    assert_eq!(cluster.namespaces.keys().collect::<Vec<_>>(), file.namespaces.keys().collect::<Vec<_>>());
    for (name, ns) in &file.namespaces {
        assert_eq!(cluster.namespaces[name].labels, ns.labels, "namespace {name}");
    }
    assert_eq!(cluster.services.keys().collect::<Vec<_>>(), file.services.keys().collect::<Vec<_>>());
    for (key, svc) in &file.services {
        let got = &cluster.services[key];
        assert_eq!(
            (&got.cluster_ips, got.headless, &got.selector, &got.ports, got.publish_not_ready_addresses),
            (&svc.cluster_ips, svc.headless, &svc.selector, &svc.ports, svc.publish_not_ready_addresses),
            "service {key}"
        );
    }
    assert_eq!(cluster.pods.keys().collect::<Vec<_>>(), file.pods.keys().collect::<Vec<_>>());
    for (key, p) in &file.pods {
        let got = &cluster.pods[key];
        assert_eq!(
            (got.ip, got.ready, &got.labels, &got.annotations, got.sidecar, &got.service_account),
            (p.ip, p.ready, &p.labels, &p.annotations, p.sidecar, &p.service_account),
            "pod {key}"
        );
        assert_eq!((&got.hostname, &got.subdomain, &got.owner), (&p.hostname, &p.subdomain, &p.owner), "pod {key}");
        assert_eq!(got.workload_name(), p.workload_name(), "pod {key}");
        let ports = |p: &Pod| p.container_ports().cloned().collect::<Vec<_>>();
        assert_eq!(ports(got), ports(p), "pod {key}");
        assert!(!got.ip_allocated, "pod {key}: the API gives its IP");
    }
    assert!(cluster.pods.values().any(|p| p.owner.as_ref().is_some_and(|o| o.kind == WorkloadKind::StatefulSet)));
    assert!(cluster.pods.values().any(|p| p.owner.as_ref().is_some_and(|o| o.kind == WorkloadKind::Deployment)));

    let (from_api, from_files) = (Index::new(cluster), Index::new(file.clone()));
    let mut meshed = 0;
    for key in file.pods.keys() {
        let (a, f) = (from_api.proxy_config(key), from_files.proxy_config(key));
        match (a, f) {
            (Ok(a), Ok(f)) => {
                assert_eq!(a, f, "sidecar config of {key}");
                meshed += 1;
            }
            (Err(a), Err(f)) => assert_eq!(a.to_string(), f.to_string(), "pod {key}"),
            (a, f) => panic!("pod {key}: through the API {a:?}, through the files {f:?}"),
        }
    }
    assert!(meshed >= 7, "{meshed} meshed pods compared");

    // kube-rs listed each kind, then watched it from the list's resourceVersion.
    for path in [NAMESPACES, SERVICES, SLICES, PODS].into_iter().chain(CRDS) {
        assert!(api.count(path, false) >= 1, "{path} listed: {:#?}", api.requests());
    }
    api.watching(PODS, 1).await;
    let watch = api.requests().into_iter().find(|r| r.starts_with(PODS) && r.contains("watch=true")).unwrap();
    assert!(watch.contains("resourceVersion=100") && watch.contains("allowWatchBookmarks=true"), "{watch}");
}

/// The quickstart served and connected to, with the Pods' and Services' watches open.
struct Watching {
    /// The cluster from the files.
    file: Cluster,
    api: FakeApi,
    source: KubeSource,
    /// The source's first version.
    first: Cluster,
    /// A web pod (of the files).
    web: Pod,
}

async fn watching() -> Watching {
    let file = file_cluster();
    let api = FakeApi::start(quickstart_lists(&file, true)).await;
    let (source, first, _) = connect(&api).await;
    api.watching(PODS, 1).await;
    api.watching(SERVICES, 1).await;
    let web = file.pods.values().find(|p| p.labels.get("app").map(String::as_str) == Some("web")).unwrap().clone();
    Watching { file, api, source, first, web }
}

/// Contract 2: watch events make the next version: a pod turned not ready (MODIFIED), a Service DELETED; a
/// BOOKMARK makes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_events_make_the_next_version() {
    let Watching { file, api, mut source, first, web } = watching().await;
    let web = &web;
    let mut current = first.clone();
    assert!(pod(&first, "shop", &web.key.name).unwrap().ready);
    let mut not_ready = web.clone();
    not_ready.ready = false;
    let mut object = api_pod(&not_ready);
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    object["metadata"]["resourceVersion"] = json!("101");
    api.push(PODS, &json!({"type": "MODIFIED", "object": object}).to_string());
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert!(!pod(&c, "shop", &web.key.name).unwrap().ready, "{cause}");
    assert_eq!(cause, format!("Pod shop/{} edited", web.key.name));
    assert_eq!(c.pods.len(), file.pods.len());

    let legacy = api_services(&file).into_iter().find(|s| s["metadata"]["name"] == "legacy").unwrap();
    let mut legacy = legacy;
    legacy["metadata"]["resourceVersion"] = json!("102");
    api.push(SERVICES, &json!({"type": "DELETED", "object": legacy}).to_string());
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "Service shop/legacy deleted");
    assert!(!c.services.contains_key(&ObjectKey::new("shop", "legacy")));
    assert_eq!(c.services.len(), file.services.len() - 1);

    api.push(
        PODS,
        r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"103"}}}"#,
    );
    assert!(tokio::time::timeout(Duration::from_millis(500), source.next()).await.is_err(), "a bookmark is no version");

    // What the model does not read makes no version either: the kubelet's status churn (restart counts, probe
    // times), and a pod without an IP yet.
    object["metadata"]["resourceVersion"] = json!("104");
    object["status"]["containerStatuses"] = json!([{"name": "web", "restartCount": 3, "ready": false}]);
    object["status"]["conditions"][1]["lastProbeTime"] = json!("2026-11-27T06:30:00Z");
    api.push(PODS, &json!({"type": "MODIFIED", "object": object}).to_string());
    let mut pending = api_pod(web);
    pending["metadata"]["name"] = json!("web-pending");
    pending["metadata"]["resourceVersion"] = json!("105");
    pending["status"] = json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]});
    api.push(PODS, &json!({"type": "ADDED", "object": pending}).to_string());
    assert!(tokio::time::timeout(Duration::from_millis(500), source.next()).await.is_err(), "no change to the model");
    // Once it has an IP, it is there.
    pending["metadata"]["resourceVersion"] = json!("106");
    pending["status"] = json!({"phase": "Running", "podIP": "10.244.201.1",
        "conditions": [{"type": "Ready", "status": "False"}]});
    api.push(PODS, &json!({"type": "MODIFIED", "object": pending}).to_string());
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "Pod shop/web-pending added");
    let p = pod(&c, "shop", "web-pending").unwrap();
    assert!(!p.ready && p.owner == web.owner, "{p:?}");
}

/// In a cluster every Service with a selector has EndpointSlices, made by the EndpointSlice controller from the
/// pods; with them the sidecar configs are still those of the files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_as_the_controller_makes_them_give_the_same_configs() {
    let file = file_cluster();
    let mut lists = quickstart_lists(&file, true);
    let mut slices = Vec::new();
    for svc in file.services.values() {
        let Some(selector) = &svc.selector else { continue };
        let pods: Vec<&Pod> = file
            .pods
            .values()
            .filter(|p| {
                p.key.namespace == svc.key.namespace && selector.iter().all(|(k, v)| p.labels.get(k) == Some(v))
            })
            .collect();
        let endpoints: Vec<Value> = pods
            .iter()
            .map(|p| {
                let mut e = json!({"addresses": [p.ip.to_string()],
                    "conditions": {"ready": p.ready, "serving": p.ready, "terminating": false},
                    "targetRef": {"kind": "Pod", "namespace": p.key.namespace, "name": p.key.name, "uid": "u"},
                    "nodeName": "node-1"});
                if let (Some(h), Some(sub)) = (&p.hostname, &p.subdomain)
                    && **sub == *svc.key.name
                {
                    e["hostname"] = json!(h);
                }
                e
            })
            .collect();
        let ports: Vec<Value> = svc
            .ports
            .iter()
            .filter_map(|sp| {
                let port = match &sp.target_port {
                    podmesh_model::TargetPortRef::Number(n) => n.0,
                    podmesh_model::TargetPortRef::Name(n) => pods.first()?.named_port(n)?.0,
                };
                let mut out = json!({"port": port, "protocol": sp.protocol});
                if let Some(n) = &sp.name {
                    out["name"] = json!(n);
                }
                if let Some(a) = &sp.app_protocol {
                    out["appProtocol"] = json!(a);
                }
                Some(out)
            })
            .collect();
        slices.push(json!({
            "metadata": {"name": format!("{}-abcde", svc.key.name), "namespace": svc.key.namespace,
                "resourceVersion": "10", "labels": {"kubernetes.io/service-name": svc.key.name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports,
        }));
    }
    assert!(slices.len() >= 5);
    lists.insert(SLICES.to_string(), vec![(200, list("EndpointSlice", "100", slices))]);
    let api = FakeApi::start(lists).await;
    let (_source, cluster, _) = connect(&api).await;
    assert_eq!(cluster.endpoint_slices.len(), file.services.values().filter(|s| s.selector.is_some()).count());
    let (from_api, from_files) = (Index::new(cluster), Index::new(file.clone()));
    for key in file.pods.keys() {
        assert_eq!(from_api.proxy_config(key).ok(), from_files.proxy_config(key).ok(), "sidecar config of {key}");
    }
}

/// Contract 2 and 3 on the committed stream `recorded/pods-watch.ndjson`: ADDED, MODIFIED, BOOKMARK, DELETED,
/// then ERROR 410 Gone, after which kube-rs lists again; a pod missing from that list is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorded_watch_stream_and_a_relist_after_410_gone() {
    let file = file_cluster();
    let mut lists = quickstart_lists(&file, true);
    // The second list of pods (after the 410) no longer has `client`: it was deleted while the watch was down.
    let pods: Vec<Value> = file.pods.values().filter(|p| &*p.key.name != "client").map(api_pod).collect();
    lists.get_mut(PODS).unwrap().push((200, list("Pod", "150", pods)));
    let api = FakeApi::start(lists).await;
    let (mut source, first, _) = connect(&api).await;
    let mut current = first.clone();
    assert!(pod(&first, "shop", "client").is_some());
    api.watching(PODS, 1).await;
    let stream = recorded("pods-watch.ndjson");
    assert_eq!(stream.len(), 5);

    api.push(PODS, &stream[0]); // ADDED
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "Pod shop/debug added");
    let debug = pod(&c, "shop", "debug").unwrap();
    assert!(debug.ready && debug.sidecar && debug.owner.is_none());
    assert_eq!(debug.ip.to_string(), "10.244.200.9");
    assert_eq!(Index::new(c).proxy_config(&debug.key).unwrap().workload.workload, "debug");

    api.push(PODS, &stream[1]); // MODIFIED: not ready
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "Pod shop/debug edited");
    assert!(!pod(&c, "shop", "debug").unwrap().ready);

    api.push(PODS, &stream[2]); // BOOKMARK
    assert!(tokio::time::timeout(Duration::from_millis(500), source.next()).await.is_err(), "a bookmark is no version");

    api.push(PODS, &stream[3]); // DELETED
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "Pod shop/debug deleted");
    assert!(pod(&c, "shop", "debug").is_none());
    assert_eq!(c.pods.len(), file.pods.len());

    assert_eq!(api.count(PODS, false), 1);
    api.push(PODS, &stream[4]); // ERROR 410 Gone
    api.end(PODS);
    let (c, cause) = follow(&mut current, next(&mut source).await);
    assert_eq!(cause, "re-list of Pods; Pod shop/client deleted");
    assert!(pod(&c, "shop", "client").is_none());
    assert_eq!(c.pods.len(), file.pods.len() - 1);
    assert_eq!(api.count(PODS, false), 2, "listed again: {:#?}", api.requests());
    // And watches again from the new list's resourceVersion.
    api.watching(PODS, 2).await;
    let last = api.requests().into_iter().rfind(|r| r.starts_with(PODS) && r.contains("watch=true")).unwrap();
    assert!(last.contains("resourceVersion=150"), "{last}");
}

/// Contract 4: Istio's CRDs not installed (404 on their lists): empty kinds and a warning, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_not_installed_are_empty() {
    let file = file_cluster();
    let api = FakeApi::start(quickstart_lists(&file, false)).await;
    let (_source, cluster, cause) = connect(&api).await;
    assert!(cluster.virtual_services.is_empty() && cluster.destination_rules.is_empty());
    assert!(cluster.peer_authentications.is_empty());
    assert_eq!(cluster.pods.len(), file.pods.len());
    for kind in ["VirtualServices", "DestinationRules", "PeerAuthentications"] {
        assert!(cause.contains(&format!("{kind} (")) && cause.contains("not served"), "{kind}: {cause}");
    }
    for path in CRDS {
        assert!(api.count(path, false) >= 1, "{path}");
        assert_eq!(api.count(path, true), 0, "{path} is not watched before it lists");
    }
}

/// Istio objects are read from the API: a VirtualService listed is in the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_objects_are_read() {
    let file = file_cluster();
    let mut lists = quickstart_lists(&file, true);
    let vs = json!({"metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9"},
        "spec": {"hosts": ["web"], "http": [{"route": [{"destination": {"host": "web"}}]}]}});
    lists.insert(CRDS[0].to_string(), vec![(200, list("VirtualService", "100", vec![vs]))]);
    let pa = json!({"metadata": {"name": "default", "namespace": "shop", "resourceVersion": "9"},
        "spec": {"mtls": {"mode": "STRICT"}}});
    lists.insert(CRDS[2].to_string(), vec![(200, list("PeerAuthentication", "100", vec![pa]))]);
    let api = FakeApi::start(lists).await;
    let (_source, cluster, _) = connect(&api).await;
    assert!(cluster.virtual_services.contains_key(&ObjectKey::new("shop", "web")));
    assert!(cluster.peer_authentications.contains_key(&ObjectKey::new("shop", "default")));
}

/// A batch of watch events is a version of just the objects it changed, each loaded alone exactly as in the whole
/// cluster (the pod edited equals the whole load's, but for what changed), applied in place; an object in it that
/// does not load is refused, named in the cause, and the rest of the batch applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_the_objects_it_changed_and_a_bad_one_does_not_stop_the_rest() {
    let Watching { file, api, mut source, first, web } = watching().await;
    let web = &web;
    let mut current = first.clone();

    let legacy = api_pod(&file.pods[&ObjectKey::new("shop", "legacy")]);
    let extra = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "extra", "namespace": "shop",
        "resourceVersion": "102"}, "spec": {"clusterIP": "10.96.8.8", "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 81, "targetPort": 8080}]}});
    let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "shop",
        "resourceVersion": "103"}, "spec": {"ports": [{"port": 70000}]}});
    api.push(PODS, &pod_event("MODIFIED", web, false, "101"));
    api.push(PODS, &json!({"type": "DELETED", "object": legacy}).to_string());
    api.push(SERVICES, &json!({"type": "ADDED", "object": extra}).to_string());
    api.push(SERVICES, &json!({"type": "ADDED", "object": bad}).to_string());

    // One batch, as a rule; the four events come on two watches, so allow for them arriving in two.
    let lines = [
        format!("Pod shop/{} edited", web.key.name),
        "Pod shop/legacy deleted".into(),
        "Service shop/extra added".into(),
        "Service shop/bad added".into(),
        "Service shop/bad refused (its last good version stays): ".into(),
    ];
    let (mut cause, mut c) = (String::new(), current.clone());
    for _ in 0..2 {
        let version = next(&mut source).await;
        assert!(matches!(version.change, Change::Objects { .. }), "a watch batch is not a whole version");
        let (now, more) = follow(&mut current, version);
        (c, cause) = (now, format!("{cause}{more}; "));
        if lines.iter().all(|l| cause.contains(l.as_str())) {
            break;
        }
    }
    for line in &lines {
        assert!(cause.contains(line.as_str()), "{line:?} not in {cause}");
    }

    // The pod edited is the whole load's, not ready; the legacy pod is gone; Service extra is there, bad is not.
    let mut expected = first.pods[&web.key].clone();
    expected.ready = false;
    assert_eq!(c.pods[&web.key], expected);
    assert!(!c.pods.contains_key(&ObjectKey::new("shop", "legacy")));
    assert!(c.services.contains_key(&ObjectKey::new("shop", "extra")));
    assert!(!c.services.contains_key(&ObjectKey::new("shop", "bad")));
    // Everything else is as it was.
    for (k, p) in &first.pods {
        if *k != web.key && k.name.as_ref() != "legacy" {
            assert_eq!(c.pods.get(k), Some(p), "{k}");
        }
    }
    assert_eq!(c.services.len(), first.services.len() + 1);
    assert_eq!((c.namespaces.clone(), c.mesh.clone()), (first.namespaces.clone(), first.mesh.clone()));
}

/// A version that does not load is an `Err` (the control plane keeps the last good one), and the source goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_does_not_load_is_an_error() {
    let file = file_cluster();
    let api = FakeApi::start(quickstart_lists(&file, true)).await;
    let (mut source, mut current, _) = connect(&api).await;
    api.watching(SERVICES, 1).await;
    let bad = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "shop",
        "resourceVersion": "101"}, "spec": {"ports": [{"port": 70000}]}});
    api.push(SERVICES, &json!({"type": "ADDED", "object": bad}).to_string());
    match tokio::time::timeout(WAIT, source.next()).await {
        Ok(Some(Err(e))) => assert!(e.starts_with("after Service shop/bad added: "), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    let fixed = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "shop",
        "resourceVersion": "102"}, "spec": {"clusterIP": "10.96.7.7", "ports": [{"port": 80}]}});
    api.push(SERVICES, &json!({"type": "MODIFIED", "object": fixed}).to_string());
    let (c, _) = follow(&mut current, next(&mut source).await);
    assert!(c.services.contains_key(&ObjectKey::new("shop", "bad")));
}

/// Without the API's answers, `connect` gives up in time and says which kinds it waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_in_time() {
    let file = file_cluster();
    let mut lists = quickstart_lists(&file, true);
    lists.insert(PODS.to_string(), vec![(403, r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pods is forbidden","reason":"Forbidden","code":403}"#.to_string())]);
    let api = FakeApi::start(lists).await;
    match KubeSource::connect_within(fake::client(&api), Duration::from_secs(2)).await {
        Err(e) => assert!(e.contains("did not list Pods (") && e.contains("forbidden"), "{e}"),
        Ok(_) => panic!("connected without pods"),
    }
}

/// Over TLS (rustls with the ring provider only, as in the rest of the workspace): kube-rs's client builds its
/// rustls config without panicking and verifies the API server's certificate against the kubeconfig's CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls() {
    let file = file_cluster();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.signing_key.serialize_der().into());
    let server = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(vec![cert.clone()], private);
    let tls = tokio_rustls::TlsAcceptor::from(Arc::new(server.unwrap()));
    let api = FakeApi::start_with(quickstart_lists(&file, true), Some(tls.clone())).await;

    let mut config = kube::Config::new(format!("https://{}", api.addr).parse().unwrap());
    config.root_cert = Some(vec![cert.to_vec()]);
    let (_source, cluster, _) =
        KubeSource::connect_within(kube::Client::try_from(config).unwrap(), WAIT).await.unwrap();
    assert_eq!(cluster.pods.len(), file.pods.len());

    // A server certificate the client does not trust: no request gets through, and `connect` gives up.
    let api = FakeApi::start_with(quickstart_lists(&file, true), Some(tls)).await;
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let mut config = kube::Config::new(format!("https://{}", api.addr).parse().unwrap());
    config.root_cert = Some(vec![other.cert.der().to_vec()]);
    match KubeSource::connect_within(kube::Client::try_from(config).unwrap(), Duration::from_secs(2)).await {
        Err(e) => assert!(e.contains("did not list"), "{e}"),
        Ok(_) => panic!("trusted a certificate it was not given"),
    }
    assert_eq!(api.requests(), Vec::<String>::new(), "no request got through");
}

/// A kubeconfig's context chooses the API server (the other context's server does not answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_context() {
    let file = file_cluster();
    let api = FakeApi::start(quickstart_lists(&file, true)).await;
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: other\n\
         clusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
         - name: other\n  cluster:\n    server: http://{closed}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n\
         - name: other\n  context:\n    cluster: other\n    user: me\n\
         users:\n- name: me\n  user:\n    token: t0ken\n",
        api.addr
    );
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml).unwrap();
    let client = podmesh_kube::client_from(kubeconfig, Some("fake")).await.unwrap();
    let (_source, cluster, _) = KubeSource::connect_within(client, WAIT).await.unwrap();
    assert_eq!(cluster.pods.len(), file.pods.len());
    assert!(api.count(PODS, false) >= 1);
    let auth: Vec<String> = api.recorded().into_iter().map(|r| r.authorization).collect();
    assert!(!auth.is_empty() && auth.iter().all(|a| a == "Bearer t0ken"), "{auth:?}");
}
