//! Property tests of the contract:
//! - any Host that inbound admission accepts on target port P of pod X is an R2 name of a Service that selects X
//!   and declares P (or a VirtualService host routed to one), or X has a headless Service declaring P — checked
//!   against an oracle written from the text of R2, not from the implementation; and every such name is accepted;
//! - explain is deterministic;
//! - the order in which documents are loaded does not change any computed config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use podmesh_compute::Index;
use podmesh_model::{ObjectKey, Service, Source, TargetPort};
use podmesh_route::explain::{Query, explain};
use podmesh_route::inbound;
use podmesh_route::request::{Addressed, Peer};
use proptest::prelude::*;

const EXTRA: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web-alias, namespace: shop}
spec:
  hosts: [www.example.com]
  http: [{route: [{destination: {host: web}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo-to-web, namespace: shop}
spec:
  hosts: [echo]
  http: [{route: [{destination: {host: web.shop.svc.cluster.local, port: {number: 80}}}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web-alt, namespace: shop}
spec:
  selector: {app: web}
  ports: [{name: http, port: 8000, targetPort: http}]
"#;

fn examples(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir)
}

fn sources() -> Vec<Source> {
    vec![
        Source::Path(examples("quickstart")),
        Source::Path(examples("statefulset-peers")),
        Source::Text { name: "extra.yaml".into(), text: EXTRA.into() },
    ]
}

fn load_index() -> Index {
    Index::new(podmesh_model::load(&sources()).unwrap().cluster)
}

/// One index shared by all cases (loading is what the load-order property tests; the others need not repeat it).
fn shared() -> &'static Index {
    static IX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    IX.get_or_init(load_index)
}

/// A second, independently loaded index.
fn shared_again() -> &'static Index {
    static IX: std::sync::OnceLock<Index> = std::sync::OnceLock::new();
    IX.get_or_init(load_index)
}

// ---------------------------------------------------------------- the R2 oracle

/// R2, literally: the names of Service `svc` for a client in namespace `client_ns`.
fn r2_names(svc: &Service, client_ns: &str, domain: &str) -> Vec<String> {
    let (s, ns) = (&svc.key.name, &svc.key.namespace);
    let mut v = vec![format!("{s}.{ns}.svc.{domain}"), format!("{s}.{ns}.svc"), format!("{s}.{ns}")];
    v.extend(svc.cluster_ips.iter().map(|ip| ip.to_string()));
    if client_ns == &**ns {
        v.push(s.to_string());
    }
    v
}

/// R2 comparison: case-insensitive, `:port` ignored, trailing dot ignored.
fn oracle_normalize(host: &str) -> String {
    let mut h = host.to_ascii_lowercase();
    if let Some((name, port)) = h.rsplit_once(':')
        && !name.contains(':')
        && port.bytes().all(|b| b.is_ascii_digit())
    {
        h = name.to_string();
    }
    h.strip_suffix('.').map(str::to_string).unwrap_or(h)
}

/// Names pod `pod` must accept on target `port` for a client in `client_ns`, and whether any Host is accepted.
fn expected(ix: &Index, pod: &ObjectKey, port: TargetPort, client_ns: &str) -> (BTreeSet<String>, bool) {
    let c = ix.cluster();
    let domain = &c.mesh.cluster_domain;
    let p = &c.pods[pod];
    let mut names = BTreeSet::new();
    let mut headless = false;
    let declaring: Vec<&Service> = c
        .services
        .values()
        .filter(|s| s.key.namespace == p.key.namespace)
        .filter(|s| s.selector.as_ref().is_some_and(|sel| sel.iter().all(|(k, v)| p.labels.get(k) == Some(v))))
        .filter(|s| {
            s.ports.iter().any(|sp| match &sp.target_port {
                podmesh_model::TargetPortRef::Number(n) => *n == port,
                podmesh_model::TargetPortRef::Name(n) => p.named_port(n) == Some(port),
            })
        })
        .collect();
    for s in &declaring {
        headless |= s.headless;
        names.extend(r2_names(s, client_ns, domain));
    }
    // VirtualService hosts routing to a declaring Service.
    for vs in c.virtual_services.values() {
        let routes_here = vs.http.iter().flat_map(|r| &r.destinations).any(|d| {
            declaring.iter().any(|s| {
                let h = d.host.trim_end_matches('.');
                h == &*s.key.name && vs.key.namespace == s.key.namespace
                    || h == format!("{}.{}", s.key.name, s.key.namespace)
                    || h == format!("{}.{}.svc.{domain}", s.key.name, s.key.namespace)
            })
        });
        if !routes_here {
            continue;
        }
        for h in &vs.hosts {
            let named = c.services.values().find(|s| s.key.namespace == vs.key.namespace && *s.key.name == **h);
            match named {
                Some(s) => names.extend(r2_names(s, client_ns, domain)),
                None => {
                    names.insert(h.clone());
                }
            }
        }
    }
    (names, headless)
}

fn host_pool(ix: &Index) -> Vec<String> {
    let c = ix.cluster();
    let mut pool = BTreeSet::new();
    for s in c.services.values() {
        for ns in ["shop", "store", "other"] {
            pool.extend(r2_names(s, ns, &c.mesh.cluster_domain));
        }
        pool.insert(s.key.name.to_string());
        pool.insert(format!("{}.{}.svc.cluster", s.key.name, s.key.namespace));
    }
    for p in c.pods.values() {
        pool.insert(p.ip.to_string());
        if let Some(sub) = &p.subdomain {
            let h = p.effective_hostname();
            pool.insert(format!("{h}.{sub}.{}.svc.cluster.local", p.key.namespace));
            pool.insert(format!("{h}.{sub}"));
        }
    }
    pool.extend(
        ["www.example.com", "example.com", "nothing.example", "web.shop.svc.cluster.local.shop", "a", ""]
            .map(String::from),
    );
    pool.into_iter().collect()
}

fn mangle(host: &str, upper: &[bool], dot: bool, port: Option<u16>) -> String {
    let mut h: String =
        host.chars().zip(upper.iter().cycle()).map(|(c, up)| if *up { c.to_ascii_uppercase() } else { c }).collect();
    if dot && !h.is_empty() && h.parse::<std::net::IpAddr>().is_err() {
        h.push('.');
    }
    if let Some(p) = port {
        h = format!("{h}:{p}");
    }
    h
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn inbound_accepts_exactly_the_r2_names(
        pod_i in 0usize..1000,
        port_i in 0usize..10,
        host_i in 0usize..10_000,
        client_ns in prop::sample::select(vec!["shop", "store", "other"]),
        upper in prop::collection::vec(any::<bool>(), 1..8),
        dot in any::<bool>(),
        port in prop::option::of(1u16..65535),
    ) {
        let ix = shared();
        let meshed: Vec<&podmesh_model::Pod> = ix.cluster().pods.values().filter(|p| p.sidecar).collect();
        let pod = meshed[pod_i % meshed.len()];
        let cfg = ix.proxy_config(&pod.key).unwrap();
        let ports: Vec<TargetPort> = cfg.inbound.ports.keys().copied().collect();
        prop_assume!(!ports.is_empty());
        let target = ports[port_i % ports.len()];
        let pool = host_pool(ix);
        let raw = &pool[host_i % pool.len()];
        let host = mangle(raw, &upper, dot, port);
        let peer = Peer {
            identity: podmesh_compute::Identity::new("cluster.local", client_ns, "default"),
            addressed: Addressed::Direct,
        };
        let admitted = inbound::http_request(&cfg, &cfg.inbound.ports[&target], Some(&host), Some(&peer)).is_ok();
        let (names, headless) = expected(ix, &pod.key, target, client_ns);
        let should = headless || names.contains(&oracle_normalize(&host));
        prop_assert_eq!(admitted, should, "pod {} port {} host {:?} from {}: oracle {:?}", pod.key, target, host, client_ns, names);
    }

    #[test]
    fn explain_is_deterministic(
        from_i in 0usize..100,
        target_i in 0usize..10_000,
        host_i in prop::option::of(0usize..10_000),
        tcp in any::<bool>(),
        port in prop::sample::select(vec![80u16, 7000, 8080, 5000, 9000, 9090, 15020, 2379, 2380, 50051]),
    ) {
        let a = shared();
        let b = shared_again();
        let pods: Vec<ObjectKey> = a.cluster().pods.keys().cloned().collect();
        let from = pods[from_i % pods.len()].clone();
        let pool = host_pool(a);
        let target = format!("{}:{port}", pool[target_i % pool.len()]);
        let Ok(mut q) = (if tcp { Query::tcp(from, &target) } else { Query::http(from, &target) }) else {
            return Ok(());
        };
        q.host = host_i.map(|i| pool[i % pool.len()].clone());
        let first = explain(a, &q).map(|e| serde_json::to_string(&e).unwrap());
        let again = explain(a, &q).map(|e| serde_json::to_string(&e).unwrap());
        let other = explain(b, &q).map(|e| serde_json::to_string(&e).unwrap());
        prop_assert_eq!(&first, &again);
        prop_assert_eq!(&first, &other);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn load_order_does_not_change_any_config(seed in any::<u64>(), files in 1usize..5) {
        // Every document of the test cluster, shuffled and dealt into `files` files.
        let mut docs: Vec<String> = Vec::new();
        for src in sources() {
            let texts: Vec<String> = match src {
                Source::Path(dir) => {
                    let mut paths: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
                    paths.sort();
                    paths.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect()
                }
                Source::Text { text, .. } => vec![text],
                Source::Stdin => unreachable!(),
            };
            for t in texts {
                docs.extend(t.split("\n---\n").map(String::from));
            }
        }
        let mut rng = seed;
        for i in (1..docs.len()).rev() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            docs.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        let mut dealt = vec![String::new(); files];
        for (i, d) in docs.iter().enumerate() {
            dealt[i % files].push_str(&format!("---\n{d}\n"));
        }
        let shuffled: Vec<Source> =
            dealt.into_iter().enumerate().map(|(i, text)| Source::Text { name: format!("f{i}.yaml"), text }).collect();
        let a = shared();
        let b = Index::new(podmesh_model::load(&shuffled).unwrap().cluster);
        prop_assert_eq!(a.cluster().pods.len(), b.cluster().pods.len());
        for pod in a.cluster().pods.values() {
            let ca = a.proxy_config(&pod.key).map(|c| serde_json::to_string(&c).unwrap());
            let cb = b.proxy_config(&pod.key).map(|c| serde_json::to_string(&c).unwrap());
            prop_assert_eq!(ca, cb, "config of {} differs", pod.key);
        }
        let da: Vec<String> = a.diagnostics().iter().map(|d| format!("{} {:?} {:?} {}", d.code, d.object, d.field, d.message)).collect();
        let db: Vec<String> = b.diagnostics().iter().map(|d| format!("{} {:?} {:?} {}", d.code, d.object, d.field, d.message)).collect();
        prop_assert_eq!(da, db);
    }
}
