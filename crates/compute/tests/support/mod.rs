//! What the index tests share: a cluster with every kind of relation, and random changes to it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use podmesh_compute::{ClusterName, Impact, Inbound, Index, Outbound, WorkloadInfo};
use podmesh_model::*;

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
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: legacy, namespace: shop}
spec:
  hosts: [legacy]
  # No port: the destination's only one, until it has several.
  http: [{route: [{destination: {host: greeter}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: external, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-1, namespace: shop, labels: {kubernetes.io/service-name: external}}
addressType: IPv4
ports: [{name: http, port: 8080}]
endpoints:
  - addresses: [10.244.230.19]
    conditions: {ready: true}
    targetRef: {kind: Pod, name: db-1, namespace: shop}
  - addresses: [10.244.251.7]
"#;

pub fn base() -> Cluster {
    let ex = |d: &str| Source::Path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(d));
    let sources =
        vec![ex("quickstart"), ex("statefulset-peers"), Source::Text { name: "extra.yaml".into(), text: EXTRA.into() }];
    podmesh_model::load(&sources).unwrap().cluster
}

pub fn k(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

/// How many mutations `mutate` knows.
pub const MUTATIONS: usize = 31;

/// Applies mutation `m` (with parameter `x`) and says which object changed.
pub fn mutate(c: &mut Cluster, m: usize, x: usize) -> ObjectRef {
    let pods: Vec<ObjectKey> = c.pods.keys().cloned().collect();
    let services: Vec<ObjectKey> = c.services.keys().cloned().collect();
    let pod = pods[x % pods.len()].clone();
    let svc = services[x % services.len()].clone();
    match m % MUTATIONS {
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
        13 => {
            // A Deployment scaled down: its pods go.
            let owned: Vec<ObjectKey> = c.pods_of(&k("shop/web")).map(|p| p.key.clone()).collect();
            if let Some(last) = owned.last() {
                c.pods.remove(last);
            }
            ObjectRef::new(Kind::Deployment, k("shop/web"))
        }
        14 => {
            // A Deployment scaled up: a pod like its others, with a new name and address.
            let mut p = c.pods_of(&k("shop/web")).next().unwrap_or(&c.pods[&pod]).clone();
            p.key = ObjectKey::new("shop", format!("web-new-{}", x % 3));
            p.ip = free_ip(c, x);
            let key = p.key.clone();
            c.pods.insert(key.clone(), p);
            ObjectRef::new(Kind::Pod, key)
        }
        15 => {
            // A pod moves to another address (one of them is listed by the `external` EndpointSlice).
            let ip = if x.is_multiple_of(2) { "10.244.251.7".parse().unwrap() } else { free_ip(c, x) };
            if c.pods.values().all(|p| p.ip != ip) {
                c.pods.get_mut(&pod).unwrap().ip = ip;
            }
            ObjectRef::new(Kind::Pod, pod)
        }
        16 => {
            let p = c.pods.get_mut(&pod).unwrap();
            p.subdomain = Some(["kv", "kv-peers", "other"][x % 3].into());
            p.hostname = x.is_multiple_of(2).then(|| "renamed".into());
            ObjectRef::new(Kind::Pod, pod)
        }
        17 => {
            let p = c.pods.get_mut(&pod).unwrap();
            p.sidecar = !p.sidecar;
            ObjectRef::new(Kind::Pod, pod)
        }
        18 => {
            // A new EndpointSlice for some Service, listing one pod by name and another by address only.
            let other = c.pods[&pods[(x / 7) % pods.len()]].ip;
            let key = ObjectKey::new(svc.namespace.clone(), format!("{}-extra", svc.name));
            let slice = EndpointSlice {
                key: key.clone(),
                service: svc.name.to_string(),
                endpoints: vec![
                    SliceEndpoint {
                        addresses: vec![c.pods[&pod].ip],
                        ready: x.is_multiple_of(2),
                        hostname: None,
                        pod: Some(pod.clone()),
                    },
                    SliceEndpoint { addresses: vec![other], ready: true, hostname: None, pod: None },
                ],
                ports: vec![SlicePort { name: Some("http".into()), port: TargetPort(8080), protocol: L4Protocol::Tcp }],
                origin: None,
            };
            c.endpoint_slices.insert(key.clone(), slice);
            ObjectRef::new(Kind::EndpointSlice, key)
        }
        19 => {
            let key = k("shop/external-1");
            let Some(slice) = c.endpoint_slices.get_mut(&key) else {
                // Deleted by an earlier change: back as it was.
                let first = base().endpoint_slices.remove(&key).unwrap();
                c.endpoint_slices.insert(key.clone(), first);
                return ObjectRef::new(Kind::EndpointSlice, key);
            };
            match x % 3 {
                0 => slice.endpoints[0].ready = !slice.endpoints[0].ready,
                1 => slice.endpoints.pop().map_or((), |_| ()),
                _ => slice.service = "web".into(),
            }
            ObjectRef::new(Kind::EndpointSlice, key)
        }
        20 => {
            c.endpoint_slices.remove(&k("shop/external-1"));
            ObjectRef::new(Kind::EndpointSlice, k("shop/external-1"))
        }
        21 => {
            let s = c.services.get_mut(&svc).unwrap();
            s.headless = true;
            s.cluster_ips.clear();
            ObjectRef::new(Kind::Service, svc)
        }
        22 => {
            let s = c.services.get_mut(&svc).unwrap();
            s.publish_not_ready_addresses = !s.publish_not_ready_addresses;
            ObjectRef::new(Kind::Service, svc)
        }
        23 => {
            let s = c.services.get_mut(&svc).unwrap();
            s.ports.push(ServicePortSpec {
                name: Some("extra".into()),
                port: ServicePort(8000 + (x % 3) as u16),
                target_port: TargetPortRef::Name("http".into()),
                protocol: L4Protocol::Tcp,
                app_protocol: x.is_multiple_of(2).then(|| "http".into()),
            });
            ObjectRef::new(Kind::Service, svc)
        }
        24 => {
            let p = c.pods.get_mut(&pod).unwrap();
            match p.containers.first_mut().and_then(|c| c.ports.first_mut()) {
                Some(port) => port.port = TargetPort(port.port.0 + 1),
                None => p.containers.push(Container {
                    name: "app".into(),
                    ports: vec![ContainerPortSpec {
                        name: Some("http".into()),
                        port: TargetPort(9000),
                        protocol: L4Protocol::Tcp,
                    }],
                    ..Container::default()
                }),
            }
            ObjectRef::new(Kind::Pod, pod)
        }
        26 => {
            // A VirtualService named to sort before the others: it takes a Service's host from one of them, and
            // routes a literal host to another Service (a subset, a port it may not have).
            let key = ObjectKey::new(svc.namespace.clone(), "aa-early");
            if c.virtual_services.remove(&key).is_none() {
                let dest = &services[(x / 3) % services.len()];
                let vs = VirtualService {
                    key: key.clone(),
                    hosts: vec![svc.name.to_string(), format!("api-{}.example.com", x % 2)],
                    http: vec![HttpRoute {
                        name: None,
                        matches: vec![],
                        destinations: vec![WeightedDestination {
                            host: format!("{}.{}", dest.name, dest.namespace),
                            subset: x.is_multiple_of(2).then(|| "a".into()),
                            port: (x % 3 == 1).then_some(ServicePort(80)),
                            weight: 100,
                        }],
                        timeout: None,
                        retries: None,
                    }],
                    origin: None,
                };
                c.virtual_services.insert(key.clone(), vs);
            }
            ObjectRef::new(Kind::VirtualService, key)
        }
        27 => {
            // A DestinationRule named to sort before the others, for some Service (it may already have one).
            let key = ObjectKey::new(svc.namespace.clone(), "aa-rule");
            if c.destination_rules.remove(&key).is_none() {
                let app = ["web", "db", "echo"][x % 3].to_string();
                let subsets = vec![
                    Subset { name: "a".into(), labels: Labels::from([("app".to_string(), app)]) },
                    Subset { name: format!("b{}", x % 2), labels: Labels::new() },
                ];
                let dr = DestinationRule { key: key.clone(), host: svc.name.to_string(), subsets, origin: None };
                c.destination_rules.insert(key.clone(), dr);
            }
            ObjectRef::new(Kind::DestinationRule, key)
        }
        28 => {
            // A PeerAuthentication deleted (or, with none left, the DestinationRule `web` edited).
            let pas: Vec<ObjectKey> = c.peer_authentications.keys().cloned().collect();
            if pas.is_empty() {
                let key = k("shop/web");
                if let Some(dr) = c.destination_rules.get_mut(&key) {
                    dr.subsets.push(Subset { name: format!("s{}", x % 3), labels: Labels::new() });
                }
                return ObjectRef::new(Kind::DestinationRule, key);
            }
            let key = pas[x % pas.len()].clone();
            c.peer_authentications.remove(&key);
            ObjectRef::new(Kind::PeerAuthentication, key)
        }
        29 => {
            // The hosts of VirtualService `web` edited: a literal host added, or a Service's host given up.
            let key = k("shop/web");
            if let Some(vs) = c.virtual_services.get_mut(&key) {
                match x % 3 {
                    0 => vs.hosts.push(format!("extra-{}.example.com", x % 5)),
                    1 => vs.hosts.retain(|h| h != "web"),
                    _ => vs.hosts.push("db".into()),
                }
            }
            ObjectRef::new(Kind::VirtualService, key)
        }
        30 => {
            // A Namespace's labels edited.
            let Some(name) = c.namespaces.keys().nth(x % c.namespaces.len().max(1)).cloned() else {
                return ObjectRef::new(Kind::Pod, pod);
            };
            let ns = c.namespaces.get_mut(&name).unwrap();
            ns.labels.insert("team".into(), format!("t{}", x % 3));
            ObjectRef::new(Kind::Namespace, ObjectKey::new(name.clone(), name))
        }
        _ => {
            // Labels that another Service's selector (and a workload policy's) matches.
            let p = c.pods.get_mut(&pod).unwrap();
            p.labels.insert("app".into(), ["db", "web", "kv", "greeter"][x % 4].into());
            ObjectRef::new(Kind::Pod, pod)
        }
    }
}

/// An address in the pod range that no pod has.
fn free_ip(c: &Cluster, x: usize) -> std::net::IpAddr {
    (0..250u8)
        .map(|i| std::net::IpAddr::from([10, 244, 252, ((x % 250) as u8).wrapping_add(i) % 250]))
        .find(|ip| c.pods.values().all(|p| p.ip != *ip))
        .unwrap()
}

/// Each pod's own part of its config (None: no such pod, or no sidecar).
pub type Configs = BTreeMap<ObjectKey, Option<(WorkloadInfo, Inbound)>>;

pub fn configs(ix: &Index) -> Configs {
    ix.cluster().pods.keys().map(|p| (p.clone(), ix.proxy_config(p).ok().map(|c| (c.workload, c.inbound)))).collect()
}

/// What changed between two versions (outbound tables `a` → `b`, pods' own parts) that `imp` does not name.
pub fn outside(imp: &Impact, a: &Outbound, b: &Outbound, before: &Configs, after: &Configs) -> Vec<String> {
    let mut out = Vec::new();
    if imp.everything {
        return out;
    }
    let listeners = diff_keys(&a.listeners, &b.listeners);
    out.extend(listeners.iter().filter(|l| !imp.listener_ips.contains(&l.ip())).map(|l| format!("listener {l}")));
    let tables = diff_keys(&a.routes, &b.routes);
    out.extend(tables.iter().filter(|p| !imp.route_tables.contains(p)).map(|p| format!("route table {p}")));
    let clusters = diff_keys(&a.clusters, &b.clusters);
    let exact = |n: &ClusterName| imp.clusters.as_ref().is_none_or(|names| names.contains(n));
    out.extend(clusters.iter().filter(|n| !imp.covers_cluster(n) || !exact(n)).map(|n| format!("cluster {n}")));
    let pods = diff_keys(&a.pods, &b.pods);
    out.extend(pods.iter().filter(|ip| !imp.pods.contains(ip)).map(|ip| format!("direct entry {ip}")));
    let own = diff_keys(before, after);
    out.extend(own.iter().filter(|p| !imp.inbound.contains(*p)).map(|p| format!("inbound of {p}")));
    out
}

fn diff_keys<K: Ord + Clone, V: PartialEq>(a: &BTreeMap<K, V>, b: &BTreeMap<K, V>) -> BTreeSet<K> {
    a.keys().chain(b.keys()).filter(|key| a.get(*key) != b.get(*key)).cloned().collect()
}
