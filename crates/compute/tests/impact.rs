//! The index's change impact is sound: for a random change to one object, every part of every sidecar config
//! that actually differs after the change is inside `impact(before) ∪ impact(after)`. This is what lets the
//! control plane recompute and push only what a change touches.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use podmesh_compute::{Impact, Index};
use podmesh_model::*;
use proptest::prelude::*;

const EXTRA: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: shop}
spec:
  host: web
  subsets: [{name: a, labels: {app: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web, namespace: shop}
spec:
  hosts: [web, www.example.com]
  http:
    - match: [{uri: {prefix: /a}}]
      route: [{destination: {host: web, subset: a}}]
    - route: [{destination: {host: web}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: later, namespace: shop}
spec:
  hosts: [later]
  http: [{route: [{destination: {host: echo}}]}]
"#;

fn base() -> Cluster {
    let ex = |d: &str| Source::Path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(d));
    let sources =
        vec![ex("quickstart"), ex("statefulset-peers"), Source::Text { name: "extra.yaml".into(), text: EXTRA.into() }];
    podmesh_model::load(&sources).unwrap().cluster
}

fn k(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

/// Applies mutation `m` (with parameter `x`) and says which object changed.
fn mutate(c: &mut Cluster, m: usize, x: usize) -> ObjectRef {
    let pods: Vec<ObjectKey> = c.pods.keys().cloned().collect();
    let services: Vec<ObjectKey> = c.services.keys().cloned().collect();
    let pod = pods[x % pods.len()].clone();
    let svc = services[x % services.len()].clone();
    match m % 14 {
        0 => {
            let p = c.pods.get_mut(&pod).unwrap();
            p.ready = !p.ready;
            ObjectRef::new(Kind::Pod, pod)
        }
        1 => {
            c.pods.get_mut(&pod).unwrap().labels.insert("app".into(), "moved".into());
            ObjectRef::new(Kind::Pod, pod)
        }
        2 => {
            c.pods.get_mut(&pod).unwrap().service_account = "renamed".into();
            ObjectRef::new(Kind::Pod, pod)
        }
        3 => {
            c.pods.remove(&pod);
            ObjectRef::new(Kind::Pod, pod)
        }
        4 => {
            let s = c.services.get_mut(&svc).unwrap();
            if let Some(p) = s.ports.first_mut() {
                p.target_port = TargetPortRef::Number(TargetPort(9090));
            }
            ObjectRef::new(Kind::Service, svc)
        }
        5 => {
            let s = c.services.get_mut(&svc).unwrap();
            for p in &mut s.ports {
                p.app_protocol = Some("tcp".into());
            }
            ObjectRef::new(Kind::Service, svc)
        }
        6 => {
            c.services.get_mut(&svc).unwrap().selector = Some(Labels::from([("app".to_string(), "echo".to_string())]));
            ObjectRef::new(Kind::Service, svc)
        }
        7 => {
            c.services.remove(&svc);
            ObjectRef::new(Kind::Service, svc)
        }
        8 => {
            // A new Service named like a VirtualService host ("later"): the VS now names it.
            let key = ObjectKey::new("shop", "later");
            c.services.insert(
                key.clone(),
                Service {
                    key: key.clone(),
                    labels: Labels::new(),
                    cluster_ips: vec!["10.96.200.1".parse().unwrap()],
                    headless: false,
                    selector: Some(Labels::from([("app".to_string(), "db".to_string())])),
                    ports: vec![ServicePortSpec {
                        name: Some("http".into()),
                        port: ServicePort(80),
                        target_port: TargetPortRef::Number(TargetPort(8080)),
                        protocol: L4Protocol::Tcp,
                        app_protocol: None,
                    }],
                    publish_not_ready_addresses: false,
                    origin: None,
                },
            );
            ObjectRef::new(Kind::Service, key)
        }
        9 => {
            let ns = ["shop", "store", "podmesh-system"][x % 3];
            let key = ObjectKey::new(ns, "pa");
            let mode = [MtlsMode::Strict, MtlsMode::Disable][x % 2];
            let selector = x.is_multiple_of(4).then(|| Labels::from([("app".to_string(), "web".to_string())]));
            let port_level = if selector.is_some() {
                BTreeMap::from([(TargetPort(7000), Some(MtlsMode::Disable))])
            } else {
                BTreeMap::new()
            };
            c.peer_authentications.insert(
                key.clone(),
                PeerAuthentication { key: key.clone(), selector, mode: Some(mode), port_level, origin: None },
            );
            ObjectRef::new(Kind::PeerAuthentication, key)
        }
        10 => {
            c.virtual_services.remove(&k("shop/web"));
            ObjectRef::new(Kind::VirtualService, k("shop/web"))
        }
        11 => {
            let vs = c.virtual_services.get_mut(&k("shop/later")).unwrap();
            vs.http[0].destinations[0].host = ["greeter", "db", "legacy"][x % 3].into();
            ObjectRef::new(Kind::VirtualService, k("shop/later"))
        }
        12 => {
            c.destination_rules.remove(&k("shop/web"));
            ObjectRef::new(Kind::DestinationRule, k("shop/web"))
        }
        _ => {
            // A Deployment scaled down: its pods go.
            let owned: Vec<ObjectKey> = c.pods_of(&k("shop/web")).map(|p| p.key.clone()).collect();
            if let Some(last) = owned.last() {
                c.pods.remove(last);
            }
            ObjectRef::new(Kind::Deployment, k("shop/web"))
        }
    }
}

fn diff_keys<K: Ord + Clone, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> BTreeSet<K> {
    a.keys().chain(b.keys()).filter(|key| a.get(*key) != b.get(*key)).cloned().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn impact_covers_every_change(m in 0usize..14, x in 0usize..1000) {
        let before = base();
        let mut after = before.clone();
        let object = mutate(&mut after, m, x);
        let old = Index::new(before);
        let new = Index::new(after);
        let mut imp: Impact = old.impact(&object);
        imp.merge(new.impact(&object));
        prop_assume!(!imp.everything);

        let (a, b) = (old.outbound(), new.outbound());
        for addr in diff_keys(&a.listeners, &b.listeners) {
            prop_assert!(imp.listener_ips.contains(&addr.ip()), "{object}: listener {addr} changed outside {imp:?}");
        }
        for port in diff_keys(&a.routes, &b.routes) {
            prop_assert!(imp.route_tables.contains(&port), "{object}: route table {port} changed outside {imp:?}");
        }
        for name in diff_keys(&a.clusters, &b.clusters) {
            prop_assert!(imp.covers_cluster(&name), "{object}: cluster {name} changed outside {imp:?}");
        }
        for ip in diff_keys(&a.pods, &b.pods) {
            prop_assert!(imp.pods.contains(&ip), "{object}: direct entry {ip} changed outside {imp:?}");
        }
        let pods: BTreeSet<ObjectKey> = old.cluster().pods.keys().chain(new.cluster().pods.keys()).cloned().collect();
        for pod in pods {
            let ca = old.proxy_config(&pod).ok().map(|c| (c.workload, c.inbound));
            let cb = new.proxy_config(&pod).ok().map(|c| (c.workload, c.inbound));
            if ca != cb {
                prop_assert!(imp.inbound.contains(&pod), "{object}: inbound of {pod} changed outside {imp:?}");
            }
        }
    }
}

#[test]
fn impact_is_narrow_for_a_pod_change() {
    // Not everything: a readiness change of one web pod touches its own config and web's clusters only.
    let ix = Index::new(base());
    let web0 = ix.cluster().pods_of(&k("shop/web")).next().unwrap().key.clone();
    let imp = ix.impact(&ObjectRef::new(Kind::Pod, web0.clone()));
    assert!(!imp.everything);
    assert_eq!(imp.inbound, BTreeSet::from([web0]));
    assert!(imp.listener_ips.is_empty() && imp.route_tables.is_empty());
    assert_eq!(imp.cluster_services, BTreeSet::from(["web.shop.svc.cluster.local".to_string()]));
}

/// A pod's readiness flipped: `pod_readiness_patch` gives exactly the clusters a full re-index changes, each
/// exactly as re-indexed, and nothing else in the shared outbound tables changes. (What lets the control plane
/// publish a readiness change before re-indexing.)
#[test]
fn a_readiness_patch_is_exactly_what_re_indexing_changes() {
    let slices = r#"
apiVersion: v1
kind: Service
metadata: {name: sliced, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: sliced-1, namespace: shop, labels: {kubernetes.io/service-name: sliced}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.244.230.19]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: db-1, namespace: shop}
"#;
    let mut cluster = base();
    let extra = podmesh_model::load_str(&[("slices.yaml", slices)]).unwrap().cluster;
    cluster.services.extend(extra.services);
    cluster.endpoint_slices.extend(extra.endpoint_slices);
    let before = Index::new(cluster.clone());
    let mut patched_any = 0;
    for pod in cluster.pods.keys() {
        for ready in [false, true] {
            let mut flipped = cluster.clone();
            flipped.set_pod_ready(pod, ready);
            let after = Index::new(flipped);
            let patch: BTreeMap<_, _> =
                before.pod_readiness_patch(&before.outbound().clusters, pod, ready).unwrap().into_iter().collect();
            patched_any += patch.len();
            let (o, n) = (before.outbound(), after.outbound());
            let changed: BTreeMap<_, _> = n
                .clusters
                .iter()
                .filter(|(k, v)| o.clusters.get(*k) != Some(*v))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(patch, changed, "{pod} ready={ready}");
            assert_eq!(o.clusters.len(), n.clusters.len());
            assert!(o.listeners == n.listeners && o.routes == n.routes && o.pods == n.pods, "{pod} ready={ready}");
        }
    }
    assert!(patched_any > 10, "the test flipped no endpoint");
    assert!(before.pod_readiness_patch(&before.outbound().clusters, &k("shop/ghost"), false).is_none());
}
