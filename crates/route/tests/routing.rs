//! R2 and R3.1 in detail: Host matching (case, trailing dot, `:port`, short names per client namespace,
//! ClusterIPs, per-pod names, VirtualService hosts), VirtualService matches (uri, headers, method) and weighted
//! subset destinations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use podmesh_compute::{Index, ProxyConfig};
use podmesh_model::ObjectKey;
use podmesh_route::explain::{ExplainError, Explanation, Query, explain};
use podmesh_route::outbound::{self, Connection};
use podmesh_route::request::HttpRequest;
use podmesh_route::{ReasonCode, Side};

const CLUSTER: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {serviceAccountName: reviews, containers: [{name: r, ports: [{containerPort: 9080}]}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec: {serviceAccountName: reviews, containers: [{name: r, ports: [{containerPort: 9080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 80, targetPort: 9080}]
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
  hosts: [reviews]
  http:
    - name: jason
      match: [{headers: {end-user: {exact: jason}}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - name: api-writes
      match: [{uri: {prefix: /api/}, method: {exact: POST}}]
      route: [{destination: {host: reviews, subset: v2}}]
    - name: items
      match: [{uri: {regex: "/items/[0-9]+"}}, {headers: {x-canary: {prefix: "yes"}}}]
      route: [{destination: {host: reviews, subset: v1}}]
    - name: split
      route:
        - {destination: {host: reviews, subset: v1}, weight: 90}
        - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ratings, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: ratings}}
  template:
    metadata: {labels: {app: ratings}}
    spec: {containers: [{name: r, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  selector: {app: ratings}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: ratings-external-name, namespace: shop}
spec:
  hosts: [ratings.example.com]
  http:
    - route: [{destination: {host: ratings.shop.svc.cluster.local}}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: catalog, namespace: shop}
spec:
  selector: {matchLabels: {app: catalog}}
  template:
    metadata: {labels: {app: catalog}}
    spec: {containers: [{name: c, ports: [{containerPort: 8080}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: catalog, namespace: shop}
spec:
  selector: {app: catalog}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata: {name: catalog, namespace: shop}
spec:
  hosts: [catalog.shop]
  http:
    - name: v1-only
      match: [{uri: {prefix: /v1/}}]
      route: [{destination: {host: catalog}}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop}
spec: {containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {name: tester, namespace: other}
spec: {containers: [{name: c}]}
"#;

fn ix() -> Index {
    let loaded = podmesh_model::load_str(&[("cluster.yaml", CLUSTER)]).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    let ix = Index::new(loaded.cluster);
    assert!(ix.diagnostics().is_empty(), "{:?}", ix.diagnostics());
    ix
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

fn pods(ix: &Index, workload: &str) -> Vec<String> {
    ix.cluster().pods_of(&key(workload)).map(|p| p.key.to_string()).collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn run(
    ix: &Index,
    from: &str,
    target: &str,
    host: Option<&str>,
    method: &str,
    headers: &[(&str, &str)],
) -> Explanation {
    let mut q = Query::http(key(from), target).unwrap();
    q.host = host.map(String::from);
    q.method = method.into();
    q.headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    explain(ix, &q).unwrap()
}

fn get(ix: &Index, target: &str) -> Explanation {
    run(ix, "shop/client", target, None, "GET", &[])
}

#[test]
fn virtual_service_header_match() {
    let ix = ix();
    let e = run(&ix, "shop/client", "http://reviews/", None, "GET", &[("end-user", "jason")]);
    assert_eq!((e.reason, e.route.as_deref(), e.subset.as_deref()), (ReasonCode::Ok, Some("jason"), Some("v2")));
    assert_eq!(e.endpoints, pods(&ix, "shop/reviews-v2"));
    // Header values are case-sensitive; a different user falls through to the split.
    let e = run(&ix, "shop/client", "http://reviews/", None, "GET", &[("end-user", "Jason")]);
    assert_eq!(e.route.as_deref(), Some("split"));
}

#[test]
fn virtual_service_uri_and_method_must_both_match() {
    let ix = ix();
    let e = run(&ix, "shop/client", "http://reviews/api/items", None, "POST", &[]);
    assert_eq!(e.route.as_deref(), Some("api-writes"));
    let e = run(&ix, "shop/client", "http://reviews/api/items", None, "GET", &[]);
    assert_eq!(e.route.as_deref(), Some("split"));
}

#[test]
fn virtual_service_regex_is_a_full_match_and_any_match_entry_selects() {
    let ix = ix();
    assert_eq!(get(&ix, "http://reviews/items/42").route.as_deref(), Some("items"));
    assert_eq!(get(&ix, "http://reviews/items/42?x=1").route.as_deref(), Some("items"));
    assert_eq!(get(&ix, "http://reviews/items/42/more").route.as_deref(), Some("split"));
    assert_eq!(get(&ix, "http://reviews/items/abc").route.as_deref(), Some("split"));
    let e = run(&ix, "shop/client", "http://reviews/x", None, "GET", &[("x-canary", "yes-please")]);
    assert_eq!(e.route.as_deref(), Some("items"));
    assert_eq!(sorted(e.endpoints), sorted(pods(&ix, "shop/reviews-v1")));
}

#[test]
fn weighted_split_spreads_by_weight_over_subsets() {
    let ix = ix();
    let e = get(&ix, "http://reviews/");
    assert_eq!(e.route.as_deref(), Some("split"));
    let mut all = pods(&ix, "shop/reviews-v1");
    all.extend(pods(&ix, "shop/reviews-v2"));
    assert_eq!(sorted(e.endpoints), sorted(all));
    // The data path's own pick: a uniform r lands 90% on v1 and 10% on v2.
    let cfg = ix.proxy_config(&key("shop/client")).unwrap();
    let fwd = reviews_split(&ix, &cfg);
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for r in 0..1000u64 {
        *counts.entry(fwd.pick(r).unwrap().subset.clone().unwrap()).or_default() += 1;
    }
    assert_eq!(counts, BTreeMap::from([("v1".to_string(), 900), ("v2".to_string(), 100)]));
}

#[test]
fn subset_without_ready_pods_gets_no_healthy_upstream_only_for_its_share() {
    let mut cluster = ix().into_cluster();
    let v2: Vec<ObjectKey> = cluster.pods_of(&key("shop/reviews-v2")).map(|p| p.key.clone()).collect();
    for p in &v2 {
        cluster.set_pod_ready(p, false);
    }
    let ix = Index::new(cluster);
    // The jason route goes only to v2: nothing ready.
    let e = run(&ix, "shop/client", "http://reviews/", None, "GET", &[("end-user", "jason")]);
    assert_eq!((e.reason, e.side), (ReasonCode::NoHealthyUpstream, Side::Source));
    // The split still works for v1's share, and picks of v2 fail with the same code.
    assert_eq!(get(&ix, "http://reviews/").reason, ReasonCode::Ok);
    let cfg = ix.proxy_config(&key("shop/client")).unwrap();
    let fwd = reviews_split(&ix, &cfg);
    assert!(fwd.pick(10).is_ok());
    assert_eq!(fwd.pick(95).unwrap_err().reason, ReasonCode::NoHealthyUpstream);
}

#[test]
fn virtual_service_without_a_matching_route_is_no_route() {
    let ix = ix();
    assert_eq!(get(&ix, "http://catalog.shop/v1/list").reason, ReasonCode::Ok);
    let e = get(&ix, "http://catalog.shop/v2/list");
    assert_eq!((e.reason, e.side), (ReasonCode::NoRoute, Side::Source));
    assert!(e.steps.last().unwrap().text.contains("VirtualService shop/catalog"), "{}", e.to_text(false));
}

#[test]
fn host_wins_over_the_dialled_service() {
    let ix = ix();
    // Dial catalog's ClusterIP, name ratings in the Host: ratings serves it.
    let e = run(&ix, "shop/client", "http://catalog.shop/", Some("ratings.shop"), "GET", &[]);
    assert_eq!(e.reason, ReasonCode::Ok);
    assert_eq!(sorted(e.endpoints), sorted(pods(&ix, "shop/ratings")));
}

#[test]
fn virtual_service_literal_host_routes_and_is_accepted_by_its_destination() {
    let ix = ix();
    let e = run(&ix, "shop/client", "http://ratings.shop/", Some("ratings.example.com"), "GET", &[]);
    assert_eq!((e.reason, e.side), (ReasonCode::Ok, Side::Destination), "{}", e.to_text(false));
    assert_eq!(sorted(e.endpoints), sorted(pods(&ix, "shop/ratings")));
    // Directly at a ratings pod: accepted because a VirtualService routes that host to ratings (R4.3) …
    let ratings0 = ix.pod(&key(&pods(&ix, "shop/ratings")[0])).unwrap().ip;
    let target = format!("http://{ratings0}:8080/");
    assert_eq!(run(&ix, "shop/client", &target, Some("ratings.example.com"), "GET", &[]).reason, ReasonCode::Ok);
    // … but not at a reviews pod.
    let reviews0 = ix.pod(&key(&pods(&ix, "shop/reviews-v1")[0])).unwrap().ip;
    let target = format!("http://{reviews0}:9080/");
    let e = run(&ix, "shop/client", &target, Some("ratings.example.com"), "GET", &[]);
    assert_eq!((e.reason, e.side), (ReasonCode::NoRoute, Side::Destination));
}

#[test]
fn host_comparison_ignores_case_trailing_dot_and_port() {
    let ix = ix();
    for host in ["RATINGS.Shop", "ratings.shop.", "ratings.shop:80", "Ratings.Shop.Svc.Cluster.Local.:8080", "ratings"]
    {
        let e = run(&ix, "shop/client", "http://ratings.shop/", Some(host), "GET", &[]);
        assert_eq!(e.reason, ReasonCode::Ok, "{host}: {}", e.to_text(false));
    }
    // The ClusterIP is a name of the Service too.
    let ip = ix.cluster().services[&key("shop/ratings")].cluster_ips[0];
    let e = run(&ix, "shop/client", "http://ratings.shop/", Some(&format!("{ip}:80")), "GET", &[]);
    assert_eq!(e.reason, ReasonCode::Ok);
}

#[test]
fn short_service_name_only_from_its_own_namespace() {
    let ix = ix();
    // DNS: `ratings` does not resolve from namespace other.
    let err = explain(&ix, &Query::http(key("other/tester"), "http://ratings/").unwrap()).unwrap_err();
    assert!(matches!(err, ExplainError::Unresolvable { .. }), "{err}");
    assert!(err.to_string().contains("NXDOMAIN"));
    // Host: `ratings` on ratings' ClusterIP from namespace other is no name at all: no_route at the source.
    let e = run(&ix, "other/tester", "http://ratings.shop/", Some("ratings"), "GET", &[]);
    assert_eq!((e.reason, e.side), (ReasonCode::NoRoute, Side::Source));
    assert_eq!(run(&ix, "other/tester", "http://ratings.shop/", None, "GET", &[]).reason, ReasonCode::Ok);
    // At the destination the client's namespace comes from its mTLS identity.
    let ratings0 = ix.pod(&key(&pods(&ix, "shop/ratings")[0])).unwrap().ip;
    let target = format!("http://{ratings0}:8080/");
    let e = run(&ix, "other/tester", &target, Some("ratings"), "GET", &[]);
    assert_eq!((e.reason, e.side), (ReasonCode::NoRoute, Side::Destination));
    assert_eq!(run(&ix, "shop/client", &target, Some("ratings"), "GET", &[]).reason, ReasonCode::Ok);
    assert_eq!(run(&ix, "other/tester", &target, Some("ratings.shop.svc"), "GET", &[]).reason, ReasonCode::Ok);
}

#[test]
fn clusterip_on_an_undeclared_port_is_no_route_at_the_source() {
    let ix = ix();
    let ip = ix.cluster().services[&key("shop/ratings")].cluster_ips[0];
    let e = run(&ix, "shop/client", &format!("http://{ip}:8080/"), None, "GET", &[]);
    assert_eq!((e.reason, e.side), (ReasonCode::NoRoute, Side::Source));
    assert!(e.fix.unwrap().contains("ratings.shop"));
}

/// The data path's decision for `GET http://reviews/` from the client: the weighted split route.
fn reviews_split<'c>(ix: &Index, cfg: &'c ProxyConfig) -> outbound::Forward<'c> {
    let req = HttpRequest { host: Some("reviews"), method: "GET", path: "/", headers: &Vec::new() };
    outbound::http_request(cfg, listener(ix, cfg, "shop/reviews"), &req).unwrap()
}

fn listener<'c>(ix: &Index, cfg: &'c ProxyConfig, svc: &str) -> &'c podmesh_compute::Listener {
    let ip = ix.cluster().services[&key(svc)].cluster_ips[0];
    match outbound::connection(cfg, std::net::SocketAddr::new(ip, 80)).unwrap() {
        Connection::Service(l) => l,
        other => panic!("{other:?}"),
    }
}
