#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use super::*;

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn index_of(sources: &[PathBuf]) -> podmesh_compute::Index {
    let sources: Vec<_> = sources.iter().map(|p| podmesh_model::Source::Path(p.clone())).collect();
    let loaded = podmesh_model::load(&sources).unwrap_or_else(|e| panic!("{sources:?}: {e}"));
    podmesh_compute::Index::new(loaded.cluster)
}

fn quickstart_config(pod: &str) -> ProxyConfig {
    let index = index_of(&[examples_dir().join("quickstart")]);
    let key = index.cluster().pods.keys().find(|k| &*k.name == pod).unwrap().clone();
    index.proxy_config(&key).unwrap()
}

/// Every example, as `podmesh check` is run on it: each directory under `examples/` with the directories above
/// it (an overlay such as `quickstart/strict` is used with `-f quickstart -f quickstart/strict`, as it says).
fn example_sets() -> Vec<Vec<PathBuf>> {
    fn subdirs(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        v.sort();
        v
    }
    fn walk(dir: &Path, above: &[PathBuf], sets: &mut Vec<Vec<PathBuf>>) {
        let mut set = above.to_vec();
        set.push(dir.to_path_buf());
        for d in subdirs(dir) {
            walk(&d, &set, sets);
        }
        sets.push(set);
    }
    let mut sets = Vec::new();
    for d in subdirs(&examples_dir()) {
        walk(&d, &[], &mut sets);
    }
    sets
}

/// A cluster with what the examples lack, so that every field of every message carries a value: a
/// VirtualService with every kind of match, timeouts and retries, DestinationRule subsets, an IPv6 pod network,
/// each level of PeerAuthentication with a DISABLE port, every clause of R1, a pod that is not ready, a plain pod,
/// and a Service whose endpoints are not pods.
const KITCHEN_SINK: &str = r#"
apiVersion: podmesh.io/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  trustDomain: example.org
  clusterDomain: example.internal
  rootNamespace: mesh-root
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
  podCIDR: fd00:10:244::/64
  serviceCIDR: fd00:10:96::/112
  protocolDetectionTimeout: 250ms
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh-root}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Namespace
metadata: {name: other}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: mesh, namespace: mesh-root}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  mtls: {mode: STRICT}
  portLevelMtls: {"9080": {mode: DISABLE}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {serviceAccountName: reviews, containers: [{name: r, ports: [{name: http, containerPort: 9080}]}]}
---
apiVersion: v1
kind: Pod
metadata: {name: reviews-v2, namespace: shop, labels: {app: reviews, version: v2}}
spec: {serviceAccountName: reviews, containers: [{name: r, ports: [{name: http, containerPort: 9080}]}]}
status:
  podIP: fd00:10:244::99
  conditions: [{type: Ready, status: "False"}]
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: api, port: 81, targetPort: 9081, appProtocol: grpc}
    - {name: db, port: 3306, targetPort: 3306}
    - {name: other, port: 8080, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: reviews-peers, namespace: shop}
spec:
  clusterIP: None
  selector: {app: reviews}
  ports: [{name: tcp-peer, port: 7000, targetPort: 7000}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews, reviews.example.com]
  http:
    - name: jason
      match: [{headers: {end-user: {exact: jason}, x-canary: {regex: "yes|true"}}}]
      route: [{destination: {host: reviews, subset: v2}}]
      timeout: 1500ms
      retries: {attempts: 0}
    - name: writes
      match: [{uri: {prefix: /api/}, method: {exact: POST}, port: 80}]
      route: [{destination: {host: reviews, subset: v1, port: {number: 80}}}]
      retries: {attempts: 3}
    - name: items
      match: [{uri: {regex: "/items/[0-9]+"}}, {method: {prefix: G}}]
      route:
        - {destination: {host: reviews, subset: v1}, weight: 90}
        - {destination: {host: reviews, subset: v2}, weight: 10}
      timeout: 0s
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  namespace: shop
  labels: {app: legacy}
  annotations: {sidecar.podmesh.io/inject: "false"}
spec: {containers: [{name: l}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy, namespace: shop}
spec:
  selector: {app: legacy}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: external-db, namespace: shop}
spec:
  ports: [{name: tcp-db, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: external-db-1, namespace: shop, labels: {kubernetes.io/service-name: external-db}}
addressType: IPv4
endpoints: [{addresses: ["192.0.2.10"], conditions: {ready: false}}]
ports: [{name: tcp-db, port: 5432}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: other, labels: {app: client}}
spec: {containers: [{name: c}]}
"#;

fn kitchen_sink() -> podmesh_compute::Index {
    let loaded = podmesh_model::load_str(&[("kitchen-sink.yaml", KITCHEN_SINK)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    podmesh_compute::Index::new(loaded.cluster)
}

/// Every config of every pod with a sidecar.
fn configs(index: &podmesh_compute::Index) -> Vec<ProxyConfig> {
    index.cluster().pods.keys().filter_map(|k| index.proxy_config(k).ok()).collect()
}

/// Splits a config, puts it back together from its resources, and checks that each resource decodes and
/// re-encodes to exactly its bytes (the encoding is canonical, so versions are stable).
fn round_trip(config: &ProxyConfig) {
    let me = &config.workload.pod;
    let mut parts = Parts::default();
    for (kind, named) in by_kind(split(config)) {
        for (name, body) in &named {
            let again = match kind {
                Kind::Workload => encode(&decode::<WorkloadPart>(name, body).unwrap()),
                Kind::Cluster => encode(&decode::<Upstream>(name, body).unwrap()),
                Kind::DirectPod => encode(&decode::<podmesh_compute::DirectPod>(name, body).unwrap()),
                Kind::RouteTable => encode(&decode::<RouteTable>(name, body).unwrap()),
                Kind::Listener => encode(&decode::<Listener>(name, body).unwrap()),
                Kind::TrustBundle => unreachable!("split sends no trust bundle"),
            };
            assert_eq!(&again, body, "{me}: {kind} {name} re-encodes differently");
        }
        let changes = named.iter().map(|(name, body)| Change::Put { name, body });
        parts.apply(kind, changes).unwrap_or_else(|e| panic!("{me}: {e}"));
    }
    assert_eq!(parts.config().as_ref(), Some(config), "{me}");
}

#[test]
fn a_config_split_into_resources_is_put_back_together_exactly() {
    let sets = example_sets();
    assert!(sets.len() >= 5, "{sets:?}");
    let mut all = Vec::new();
    for set in &sets {
        let configs = configs(&index_of(set));
        assert!(!configs.is_empty(), "{set:?}: no pod with a sidecar");
        for config in &configs {
            round_trip(config);
        }
        all.extend(configs);
    }
    let configs = configs(&kitchen_sink());
    for config in &configs {
        round_trip(config);
    }
    all.extend(configs);
    every_field_has_a_value_somewhere(&all);
}

/// The configs above give every optional field, every enum value and every kind of match a value, so the round
/// trip exercises all of the encoding (checked on their JSON, where each shows by name).
fn every_field_has_a_value_somewhere(configs: &[ProxyConfig]) {
    let json: String = configs.iter().map(|c| serde_json::to_string(c).unwrap()).collect();
    for needle in [
        // Protocol, ProtocolFrom
        r#""protocol":"http""#,
        r#""protocol":"http2""#,
        r#""protocol":"tcp""#,
        r#""protocol":"auto""#,
        r#""by":"app_protocol""#,
        r#""by":"port_name""#,
        r#""by":"server_first_port""#,
        r#""by":"unspecified""#,
        // MtlsMode, MtlsFrom, per-port overrides
        r#""mtls":"STRICT""#,
        r#""mtls":"PERMISSIVE""#,
        r#""mtls":"DISABLE""#,
        r#""level":"default""#,
        r#""level":"mesh""#,
        r#""level":"namespace""#,
        r#""level":"workload""#,
        r#""level":"port""#,
        r#""ports":{"9080":["DISABLE""#,
        // MeshConfig
        r#""outboundTrafficPolicy":"ALLOW_ANY""#,
        r#""outboundTrafficPolicy":"REGISTRY_ONLY""#,
        r#""podCIDR":"fd00:10:244::/64""#,
        // Inbound
        r#""headless":true"#,
        r#""headless":false"#,
        // Routes
        r#""virtualService":"shop/reviews""#,
        r#""service":"shop/reviews""#,
        r#""exact":"#,
        r#""prefix":"#,
        r#""regex":"#,
        r#""headers":{"#,
        r#""method":{"#,
        r#""port":80}"#,
        r#""timeout":1500"#,
        r#""timeout":0"#,
        r#""retries":3"#,
        r#""retries":0"#,
        r#""weight":90"#,
        // Clusters, endpoints, direct pods
        r#""subset":"v1""#,
        r#""ready":false"#,
        r#""ready":true"#,
        r#""tls":"spiffe://"#,
        r#""address":"[fd00:10:244::99]:9080""#,
        r#""address":"192.0.2.10:5432","ready":false}"#,
        r#""workload":"legacy"}"#,
    ] {
        assert!(json.contains(needle), "no config has {needle}");
    }
    let labels = configs.iter().any(|c| !c.workload.labels.is_empty());
    let v6 = configs.iter().any(|c| c.workload.ip.is_ipv6());
    let endpoint_without_tls = configs
        .iter()
        .any(|c| c.outbound.clusters.values().any(|u| u.endpoints.iter().any(|e| e.tls.is_none() && e.pod.is_some())));
    let plain_pod = configs.iter().any(|c| c.outbound.pods.values().any(|p| p.identity.is_none() && p.mtls.is_none()));
    let no_subset = configs.iter().any(|c| c.outbound.clusters.values().any(|u| u.subset.is_none()));
    let services =
        configs.iter().any(|c| c.inbound.ports.values().any(|p| !p.services.is_empty() && !p.hosts.is_empty()));
    assert!(
        labels && v6 && endpoint_without_tls && plain_pod && no_subset && services,
        "labels {labels}, IPv6 pod {v6}, endpoint without TLS {endpoint_without_tls}, plain pod {plain_pod}, \
         cluster without subset {no_subset}, inbound port with services {services}"
    );
}

/// The first resource of `kind` in a config's split whose name passes `pick`, as its message.
fn message_of<R: Resource>(config: &ProxyConfig, pick: impl Fn(&str) -> bool) -> (String, R::Message) {
    let (name, any) =
        split(config).into_iter().find(|(k, n, _)| *k == R::KIND && pick(n)).map(|(_, n, a)| (n, a)).unwrap();
    (name, R::Message::decode(&any.value[..]).unwrap())
}

fn any_of<M: Message>(kind: Kind, m: &M) -> xds::Any {
    xds::Any { type_url: kind.type_url().into(), value: m.encode_to_vec() }
}

/// The error `Parts::decode` gives for one put.
fn refusal(kind: Kind, name: &str, body: &xds::Any) -> String {
    Parts::decode(kind, [Change::Put { name, body }]).unwrap_err().0
}

#[test]
fn a_bad_resource_changes_nothing_and_says_which_it_was() {
    let config = quickstart_config("client");
    let mut parts = Parts::default();
    for (kind, named) in by_kind(split(&config)) {
        parts.apply(kind, named.iter().map(|(name, body)| Change::Put { name, body })).unwrap();
    }
    let (name, good) = {
        let all = by_kind(split(&config));
        all[&Kind::Cluster].iter().next().map(|(n, a)| (n.clone(), a.clone())).unwrap()
    };
    // Not protobuf at all (a field 1 with a length that runs past the end), and protobuf without the Service.
    let garbage = xds::Any { type_url: Kind::Cluster.type_url().into(), value: vec![0x0a, 0x7f, b'{'] };
    let empty = any_of(Kind::Cluster, &pb::Cluster::default());
    let wrong_type = xds::Any { type_url: Kind::Listener.type_url().into(), value: good.value.clone() };
    let bad_name = Change::Remove { name: "not-an-ip" };
    for (kind, changes) in [
        (Kind::Cluster, vec![Change::Remove { name: &name }, Change::Put { name: "x", body: &garbage }]),
        (Kind::Cluster, vec![Change::Remove { name: &name }, Change::Put { name: "x", body: &empty }]),
        (Kind::Cluster, vec![Change::Put { name: &name, body: &wrong_type }]),
        (Kind::DirectPod, vec![bad_name]),
    ] {
        let e = parts.apply(kind, changes).unwrap_err();
        assert!(e.0.starts_with(kind.as_str()), "{e}");
        assert_eq!(parts.config().unwrap(), config, "{e}");
    }
    assert_eq!(refusal(Kind::Cluster, "x", &empty), "cluster x: service: required, but absent");
    let mut parts2 = parts.clone();
    parts2.apply(Kind::Cluster, [Change::Remove { name: &name }]).unwrap();
    assert_ne!(parts2.config().unwrap(), config);
}

#[test]
fn bad_fields_are_refused_with_their_path() {
    let config = quickstart_config("client");
    let web80 = "outbound|80||web.shop.svc.cluster.local";

    // An IP address of the wrong length.
    let (name, mut m) = message_of::<Upstream>(&config, |n| n == web80);
    assert!(m.endpoints.len() >= 2, "{m:?}");
    m.endpoints[1].address = vec![10, 0, 0, 1, 7];
    assert_eq!(
        refusal(Kind::Cluster, &name, &any_of(Kind::Cluster, &m)),
        format!("cluster {web80}: endpoints[1].address: 5 bytes is not an IPv4 or IPv6 address (4 or 16 bytes)")
    );
    m.endpoints[1].address = vec![];
    assert!(
        refusal(Kind::Cluster, &name, &any_of(Kind::Cluster, &m))
            .ends_with("endpoints[1].address: 0 bytes is not an IPv4 or IPv6 address (4 or 16 bytes)")
    );

    // An unspecified or unknown enum value.
    let (name, mut m) = message_of::<Listener>(&config, |_| true);
    m.protocol = 0;
    assert_eq!(
        refusal(Kind::Listener, &name, &any_of(Kind::Listener, &m)),
        format!("listener {name}: protocol: 0 (PROTOCOL_UNSPECIFIED) is not allowed: the field is required")
    );
    m.protocol = 9;
    assert_eq!(
        refusal(Kind::Listener, &name, &any_of(Kind::Listener, &m)),
        format!("listener {name}: protocol: 9 is not a value of enum Protocol")
    );

    // A port that does not fit in 16 bits.
    let (name, mut m) = message_of::<WorkloadPart>(&quickstart_config("db-0"), |_| true);
    let inbound = m.inbound.as_mut().unwrap();
    assert!(!inbound.ports.is_empty(), "db-0 declares no port");
    inbound.ports[0].port = 70000;
    assert_eq!(
        refusal(Kind::Workload, &name, &any_of(Kind::Workload, &m)),
        "workload shop/db-0: inbound.ports[0].port: 70000 is not a port (at most 65535)"
    );

    // A required sub-message that is missing.
    let (name, mut m) = message_of::<podmesh_compute::DirectPod>(&config, |_| true);
    m.mtls.as_mut().unwrap().mtls_from = None;
    assert_eq!(
        refusal(Kind::DirectPod, &name, &any_of(Kind::DirectPod, &m)),
        format!("direct_pod {name}: mtls.mtls_from: required, but absent")
    );
    let (name, mut m) = message_of::<WorkloadPart>(&config, |_| true);
    m.mesh = None;
    assert_eq!(
        refusal(Kind::Workload, &name, &any_of(Kind::Workload, &m)),
        "workload shop/client: mesh: required, but absent"
    );

    // A regular expression that does not compile.
    let regex = |r: &str| pb::StringMatch { kind: Some(pb::string_match::Kind::Regex(r.into())) };
    let table = pb::RouteTable {
        virtual_hosts: vec![pb::VirtualHost {
            name: "web.shop.svc.cluster.local:80".into(),
            routes: vec![
                pb::Route { name: "ok".into(), ..Default::default() },
                pb::Route {
                    name: "bad".into(),
                    matches: vec![pb::HttpMatch {
                        uri: Some(regex("/items/[0-9]+")),
                        headers: [("x-user".to_string(), regex("(unclosed"))].into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        }],
    };
    let e = refusal(Kind::RouteTable, "80", &any_of(Kind::RouteTable, &table));
    assert!(
        e.starts_with(
            "route_table 80: virtual_hosts[0].routes[1].matches[0].headers[\"x-user\"].regex: \"(unclosed\" is not a \
             valid regular expression: "
        ),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");

    // A resource of another type.
    let (name, m) = message_of::<Listener>(&config, |_| true);
    assert_eq!(
        refusal(Kind::Cluster, &name, &any_of(Kind::Listener, &m)),
        format!(
            "cluster {name}: carries type.googleapis.com/podmesh.v1.Listener, expected \
             type.googleapis.com/podmesh.v1.Cluster"
        )
    );
}

#[test]
fn values_of_the_wrong_shape_are_refused_too() {
    let config = quickstart_config("db-0");
    let (_, workload) = message_of::<WorkloadPart>(&config, |_| true);
    let (_, pod) = message_of::<podmesh_compute::DirectPod>(&config, |_| true);
    let (_, listener) = message_of::<Listener>(&config, |_| true);
    let cases: Vec<(Kind, xds::Any, &str)> = vec![
        (
            Kind::Workload,
            any_of(Kind::Workload, &{
                let mut m = workload.clone();
                m.workload.as_mut().unwrap().identity = "spiffe://cluster.local/ns/shop".into();
                m
            }),
            "workload.identity: \"spiffe://cluster.local/ns/shop\" is not a mesh SPIFFE identity: its path is not \
             /ns/<namespace>/sa/<service account>",
        ),
        (
            Kind::Workload,
            any_of(Kind::Workload, &{
                let mut m = workload.clone();
                m.workload.as_mut().unwrap().pod.as_mut().unwrap().name = "a/b".into();
                m
            }),
            "workload.pod.name: \"a/b\" contains \"/\"",
        ),
        (
            Kind::Workload,
            any_of(Kind::Workload, &{
                let mut m = workload.clone();
                m.mesh.as_mut().unwrap().pod_cidr = "10.0.0.0/33".into();
                m
            }),
            "mesh.pod_cidr: \"10.0.0.0/33\" is not a CIDR",
        ),
        (
            Kind::Workload,
            any_of(Kind::Workload, &{
                let mut m = workload.clone();
                let ports = &mut m.inbound.as_mut().unwrap().ports;
                ports.push(ports[0].clone());
                m
            }),
            "is listed twice",
        ),
        (
            Kind::DirectPod,
            any_of(Kind::DirectPod, &{
                let mut m = pod.clone();
                m.mtls.as_mut().unwrap().mtls_from =
                    Some(pb::MtlsFrom { level: pb::MtlsLevel::Default.into(), policy: m.pod.clone() });
                m
            }),
            "mtls.mtls_from.policy: given, but the DEFAULT level has none",
        ),
        (
            Kind::DirectPod,
            any_of(Kind::DirectPod, &{
                let mut m = pod.clone();
                m.mtls.as_mut().unwrap().mtls_from =
                    Some(pb::MtlsFrom { level: pb::MtlsLevel::Port.into(), policy: None });
                m
            }),
            "mtls.mtls_from.policy: required, but absent",
        ),
        (
            Kind::Listener,
            any_of(Kind::Listener, &{
                let mut m = listener.clone();
                m.protocol_from =
                    Some(pb::ProtocolFrom { by: pb::ProtocolRule::ServerFirstPort.into(), value: "x".into() });
                m
            }),
            "protocol_from.value: \"x\" given, but PROTOCOL_RULE_SERVER_FIRST_PORT takes none",
        ),
        (
            Kind::RouteTable,
            any_of(
                Kind::RouteTable,
                &pb::RouteTable {
                    virtual_hosts: vec![pb::VirtualHost {
                        routes: vec![pb::Route {
                            matches: vec![pb::HttpMatch {
                                method: Some(pb::StringMatch { kind: None }),
                                ..Default::default()
                            }],
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                },
            ),
            "virtual_hosts[0].routes[0].matches[0].method: one of exact, prefix or regex is required",
        ),
    ];
    for (kind, any, expected) in cases {
        let name = match kind {
            Kind::Workload => "shop/db-0",
            Kind::DirectPod => "10.244.0.1",
            Kind::Listener => "10.96.0.1:80",
            _ => "80",
        };
        let e = refusal(kind, name, &any);
        assert!(e.starts_with(&format!("{kind} {name}: ")) && e.contains(expected), "{e}\nexpected: {expected}");
    }
}

/// The typed bodies are smaller than the JSON of the same values (JSON being what resources carried before).
#[test]
fn typed_bodies_are_smaller_than_json() {
    let config = quickstart_config("client");
    let o = &config.outbound;
    let json = |v: &dyn Fn() -> Vec<usize>| v().into_iter().sum::<usize>();
    let json_sizes: BTreeMap<Kind, usize> = [
        (Kind::Cluster, json(&|| o.clusters.values().map(|v| serde_json::to_vec(v).unwrap().len()).collect())),
        (Kind::DirectPod, json(&|| o.pods.values().map(|v| serde_json::to_vec(v).unwrap().len()).collect())),
        (Kind::RouteTable, json(&|| o.routes.values().map(|v| serde_json::to_vec(v).unwrap().len()).collect())),
        (Kind::Listener, json(&|| o.listeners.values().map(|v| serde_json::to_vec(v).unwrap().len()).collect())),
    ]
    .into();
    let mut typed_sizes: BTreeMap<Kind, usize> = BTreeMap::new();
    for (kind, _, any) in outbound_resources(o) {
        *typed_sizes.entry(kind).or_default() += any.value.len();
    }
    for (kind, json) in &json_sizes {
        let typed = typed_sizes[kind];
        assert!(typed > 0 && typed < *json, "{kind}: typed {typed} bytes, JSON {json}");
    }
    let (typed, json): (usize, usize) = (typed_sizes.values().sum(), json_sizes.values().sum());
    assert!(typed < json, "typed {typed} bytes, JSON {json}");
}

#[test]
fn type_urls_round_trip_and_push_order_puts_references_first() {
    for k in Kind::ALL {
        assert_eq!(Kind::from_type_url(k.type_url()), Some(k));
    }
    assert!(Kind::Cluster < Kind::RouteTable && Kind::RouteTable < Kind::Listener);
    assert_eq!(Kind::from_type_url("type.googleapis.com/envoy.config.cluster.v3.Cluster"), None);
}

/// Writes the seeds of the `resource_decode` fuzz target (`fuzz/corpus/resource_decode/`): resource bodies of the
/// quickstart and the kitchen sink above. Run by hand when the encoding changes:
/// `cargo nextest run -p podmesh-api --run-ignored only writes_the_fuzz_seeds`.
#[test]
#[ignore = "writes into fuzz/corpus; run by hand"]
fn writes_the_fuzz_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/resource_decode");
    std::fs::create_dir_all(&dir).unwrap();
    let quickstart = quickstart_config("db-0");
    let sink = configs(&kitchen_sink()).into_iter().find(|c| &*c.workload.pod.name == "reviews-v2").unwrap();
    let pick = |config: &ProxyConfig, kind: Kind, name: &str| {
        split(config).into_iter().find(|(k, n, _)| *k == kind && n == name).map(|(_, _, a)| a.value).unwrap()
    };
    let first = |config: &ProxyConfig, kind: Kind| {
        split(config).into_iter().find(|(k, _, _)| *k == kind).map(|(_, _, a)| a.value).unwrap()
    };
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("quickstart-cluster-web-80", pick(&quickstart, Kind::Cluster, "outbound|80||web.shop.svc.cluster.local")),
        ("quickstart-direct-pod", first(&quickstart, Kind::DirectPod)),
        ("quickstart-workload-db-0", first(&quickstart, Kind::Workload)),
        ("quickstart-listener", first(&quickstart, Kind::Listener)),
        ("quickstart-route-table", first(&quickstart, Kind::RouteTable)),
        ("kitchen-sink-workload-reviews-v2", first(&sink, Kind::Workload)),
        ("kitchen-sink-direct-pod-reviews-v2", pick(&sink, Kind::DirectPod, "fd00:10:244::99")),
        ("kitchen-sink-route-table-80", pick(&sink, Kind::RouteTable, "80")),
        ("kitchen-sink-cluster-v1", pick(&sink, Kind::Cluster, "outbound|80|v1|reviews.shop.svc.example.internal")),
        ("trust-bundle", pb::TrustBundle { roots_pem: vec!["-----BEGIN CERTIFICATE-----".into()] }.encode_to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
