//! The R9 acceptance matrix of SEMANTICS.md, both columns, as `explain` cases over examples/quickstart — the
//! manifests a user runs. Each row asserts the reason code, the side that decided and exactly which pods may serve.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use podmesh_compute::Index;
use podmesh_model::{ObjectKey, Source};
use podmesh_route::explain::{Balancing, Explanation, Query, explain};
use podmesh_route::{ClientSees, ReasonCode, Rule, Side};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Column {
    Strict,
    Permissive,
}

fn examples(dir: &str) -> Source {
    Source::Path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(dir))
}

fn index(column: Column, extra: &[&str]) -> Index {
    let mut sources = vec![examples("quickstart")];
    sources.push(examples(match column {
        Column::Strict => "quickstart/strict",
        Column::Permissive => "quickstart/permissive",
    }));
    sources.extend(extra.iter().map(|d| examples(d)));
    let loaded = podmesh_model::load(&sources).unwrap();
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    Index::new(loaded.cluster)
}

fn key(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

/// Pods of a workload, as `ns/name`, sorted.
fn pods(ix: &Index, workload: &str) -> Vec<String> {
    let mut v: Vec<String> = ix.cluster().pods_of(&key(workload)).map(|p| p.key.to_string()).collect();
    v.sort();
    v
}

fn ip(ix: &Index, pod: &str) -> String {
    ix.pod(&key(pod)).unwrap().ip.to_string()
}

fn http(ix: &Index, from: &str, target: &str, host: Option<&str>) -> Explanation {
    let mut q = Query::http(key(from), target).unwrap();
    q.host = host.map(String::from);
    explain(ix, &q).unwrap()
}

fn tcp(ix: &Index, from: &str, target: &str) -> Explanation {
    explain(ix, &Query::tcp(key(from), target).unwrap()).unwrap()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[track_caller]
fn assert_outcome(e: &Explanation, reason: ReasonCode, side: Side) {
    assert_eq!((e.reason, e.side), (reason, side), "{}", e.to_text(false));
    // A rejection always says what to change; an allowed request never does.
    assert_eq!(e.fix.is_some(), !matches!(reason, ReasonCode::Ok | ReasonCode::Passthrough), "{}", e.to_text(false));
    if e.fix.is_some() {
        assert!(e.endpoints.is_empty(), "{}", e.to_text(false));
    }
}

fn both(test: impl Fn(Column, &Index)) {
    for column in [Column::Strict, Column::Permissive] {
        test(column, &index(column, &[]));
    }
}

#[test]
fn row01_http_through_a_service_is_balanced_per_request_over_mtls() {
    both(|_, ix| {
        let e = http(ix, "shop/client", "http://web.shop/", None);
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(sorted(e.endpoints.clone()), pods(ix, "shop/web"));
        assert_eq!(e.balancing, Balancing::PerRequest);
        assert!(e.mtls);
        assert_eq!(e.service.as_deref(), Some("shop/web"));
        for r in [Rule::R2, Rule::R3_1, Rule::R3_5, Rule::R4_1, Rule::R4_2, Rule::R4_3, Rule::R4_5] {
            assert!(e.rules.contains(&r), "{r} missing: {:?}", e.rules);
        }
    });
}

#[test]
fn row02_plain_client_through_a_service() {
    both(|column, ix| {
        let e = http(ix, "shop/legacy", "http://web.shop/", None);
        assert!(!e.from_sidecar);
        match column {
            Column::Strict => {
                assert_outcome(&e, ReasonCode::MtlsRequired, Side::Destination);
                assert_eq!(e.client_sees, ClientSees::Reset);
            }
            Column::Permissive => {
                assert_outcome(&e, ReasonCode::Ok, Side::Destination);
                // kube-proxy balances the connection once: every request on it lands on the same pod.
                assert_eq!(e.balancing, Balancing::PerConnection);
                assert_eq!(sorted(e.endpoints.clone()), pods(ix, "shop/web"));
                assert!(!e.mtls);
            }
        }
    });
}

#[test]
fn row03_pod_ip_with_the_ip_as_host_is_no_route_at_the_destination() {
    both(|_, ix| {
        let web0 = &pods(ix, "shop/web")[0];
        let e = http(ix, "shop/client", &format!("http://{}:8080/", ip(ix, web0)), None);
        assert_outcome(&e, ReasonCode::NoRoute, Side::Destination);
        assert_eq!(e.client_sees, ClientSees::Status(404));
        assert!(e.rules.contains(&Rule::R3_3) && e.rules.contains(&Rule::R4_3), "{:?}", e.rules);
        let fix = e.fix.unwrap();
        assert!(fix.contains("web.shop") && fix.contains("headless"), "{fix}");
    });
}

#[test]
fn row04_pod_ip_with_a_service_host_is_served_by_exactly_that_pod() {
    both(|_, ix| {
        for web in pods(ix, "shop/web") {
            let e = http(ix, "shop/client", &format!("{}:8080", ip(ix, &web)), Some("web.shop"));
            assert_outcome(&e, ReasonCode::Ok, Side::Destination);
            assert_eq!(e.endpoints, vec![web.clone()]);
            assert_eq!(e.balancing, Balancing::None);
            assert!(e.mtls);
        }
    });
}

#[test]
fn row05_undeclared_port_is_refused_by_the_destination() {
    both(|_, ix| {
        let web0 = &pods(ix, "shop/web")[0];
        for e in [
            http(ix, "shop/client", &format!("http://{}:9090/", ip(ix, web0)), None),
            tcp(ix, "shop/client", &format!("{}:9090", ip(ix, web0))),
        ] {
            assert_outcome(&e, ReasonCode::UndeclaredPort, Side::Destination);
            assert_eq!(e.client_sees, ClientSees::Reset);
            assert!(e.fix.as_ref().unwrap().contains("9090"));
        }
    });
}

#[test]
fn row06_per_pod_dns_name_reaches_that_pod() {
    both(|_, ix| {
        for (name, pod) in [
            ("http://db-1.db.shop.svc.cluster.local:8080/", "shop/db-1"),
            ("http://db-1.db:8080/", "shop/db-1"),
            ("http://db-2.db.shop:8080/", "shop/db-2"),
        ] {
            let e = http(ix, "shop/client", name, None);
            assert_outcome(&e, ReasonCode::Ok, Side::Destination);
            assert_eq!(e.endpoints, vec![pod.to_string()], "{name}");
            assert_eq!(e.address.unwrap().ip().to_string(), ip(ix, pod));
        }
    });
}

#[test]
fn row07_headless_pod_ip_accepts_any_host() {
    both(|_, ix| {
        let e = http(ix, "shop/client", &format!("http://{}:8080/", ip(ix, "shop/db-1")), None);
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.endpoints, vec!["shop/db-1".to_string()]);
        assert!(
            e.steps.iter().any(|s| s.rule == Some(Rule::R4_3) && s.text.contains("headless")),
            "{}",
            e.to_text(false)
        );
    });
}

#[test]
fn row08_raw_tcp_to_a_headless_pod_is_mtls_to_exactly_that_pod() {
    both(|_, ix| {
        let e = tcp(ix, "shop/client", &format!("{}:5000", ip(ix, "shop/db-2")));
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.endpoints, vec!["shop/db-2".to_string()]);
        assert!(e.mtls);
        assert!(e.rules.contains(&Rule::R4_4));
    });
}

#[test]
fn row09_raw_tcp_to_a_pod_behind_a_clusterip_service_is_direct_not_headless() {
    both(|_, ix| {
        let web0 = &pods(ix, "shop/web")[0];
        let e = tcp(ix, "shop/client", &format!("{}:7000", ip(ix, web0)));
        assert_outcome(&e, ReasonCode::DirectNotHeadless, Side::Destination);
        assert!(e.rules.contains(&Rule::R4_4));
        let fix = e.fix.unwrap();
        assert!(fix.contains("web.shop:7000") && fix.contains("headless"), "{fix}");
    });
}

#[test]
fn row10_tcp_through_a_service_is_balanced_per_connection() {
    both(|_, ix| {
        let e = tcp(ix, "shop/client", "web.shop:7000");
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.balancing, Balancing::PerConnection);
        assert_eq!(sorted(e.endpoints.clone()), pods(ix, "shop/web"));
        assert!(e.rules.contains(&Rule::R3_2));
    });
}

#[test]
fn row11_unknown_host_on_a_service_port_is_no_route_at_the_source() {
    both(|_, ix| {
        let e = http(ix, "shop/client", "http://web.shop/", Some("nothing.example"));
        assert_outcome(&e, ReasonCode::NoRoute, Side::Source);
        assert_eq!(e.client_sees, ClientSees::Status(404));
    });
}

#[test]
fn row12_service_without_ready_pods_is_no_healthy_upstream() {
    for column in [Column::Strict, Column::Permissive] {
        let mut cluster = index(column, &[]).into_cluster();
        let web: Vec<ObjectKey> = cluster.pods_of(&key("shop/web")).map(|p| p.key.clone()).collect();
        for p in &web {
            assert!(cluster.set_pod_ready(p, false));
        }
        let ix = Index::new(cluster);
        let e = http(&ix, "shop/client", "http://web.shop/", None);
        assert_outcome(&e, ReasonCode::NoHealthyUpstream, Side::Source);
        assert_eq!(e.client_sees, ClientSees::Status(503));
        // TCP gets the same code, as a reset.
        let e = tcp(&ix, "shop/client", "web.shop:7000");
        assert_outcome(&e, ReasonCode::NoHealthyUpstream, Side::Source);
        assert_eq!(e.client_sees, ClientSees::Reset);
    }
}

#[test]
fn row13_plain_client_raw_tcp_to_a_headless_pod() {
    both(|column, ix| {
        let e = tcp(ix, "shop/legacy", &format!("{}:5000", ip(ix, "shop/db-0")));
        match column {
            Column::Strict => assert_outcome(&e, ReasonCode::MtlsRequired, Side::Destination),
            Column::Permissive => {
                assert_outcome(&e, ReasonCode::Ok, Side::Destination);
                assert_eq!(e.endpoints, vec!["shop/db-0".to_string()]);
                assert!(!e.mtls);
            }
        }
    });
}

#[test]
fn row14_non_http_bytes_to_an_http_port_are_a_protocol_error() {
    both(|_, ix| {
        let e = tcp(ix, "shop/client", "web.shop:80");
        assert_outcome(&e, ReasonCode::ProtocolError, Side::Source);
        assert!(e.rules.contains(&Rule::R1_1));
    });
}

#[test]
fn row15_auto_port_http_per_request_tcp_per_connection() {
    both(|_, ix| {
        let echo = pods(ix, "shop/echo");
        let e = http(ix, "shop/client", "http://echo.shop:9000/", None);
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.balancing, Balancing::PerRequest);
        assert_eq!(sorted(e.endpoints.clone()), echo);
        let e = tcp(ix, "shop/client", "echo.shop:9000");
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.balancing, Balancing::PerConnection);
        assert_eq!(sorted(e.endpoints.clone()), echo);
    });
}

#[test]
fn row16_plain_prometheus_scrapes_every_meshed_pod_on_15020() {
    both(|_, ix| {
        let meshed: Vec<String> = ix.cluster().pods.values().filter(|p| p.sidecar).map(|p| p.key.to_string()).collect();
        assert!(meshed.len() >= 10);
        for pod in meshed {
            let e = http(ix, "shop/legacy", &format!("http://{}:15020/stats/prometheus", ip(ix, &pod)), None);
            assert_outcome(&e, ReasonCode::Ok, Side::Destination);
            assert_eq!(e.endpoints, vec![pod]);
            assert!(e.rules.contains(&Rule::R8), "{:?}", e.rules);
        }
    });
}

#[test]
fn row17_service_with_plain_pods_is_reached_in_plaintext() {
    both(|_, ix| {
        let e = http(ix, "shop/client", "http://legacy.shop/", None);
        assert_outcome(&e, ReasonCode::Ok, Side::Source);
        assert_eq!(e.endpoints, vec!["shop/legacy".to_string()]);
        assert!(!e.mtls);
    });
}

#[test]
fn row18_grpc_port_is_http2_balanced_per_request() {
    both(|_, ix| {
        let e = http(ix, "shop/client", "http://greeter.shop:50051/helloworld.Greeter/SayHello", None);
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.balancing, Balancing::PerRequest);
        assert_eq!(sorted(e.endpoints.clone()), pods(ix, "shop/greeter"));
        let listener = ix.outbound().listeners.values().find(|l| l.service == key("shop/greeter")).unwrap();
        assert_eq!(listener.protocol, podmesh_compute::Protocol::Http2);
    });
}

#[test]
fn row19_outside_the_cluster() {
    both(|_, ix| {
        let e = http(ix, "shop/client", "http://203.0.113.7/", None);
        assert_outcome(&e, ReasonCode::Passthrough, Side::Source);
        let e = http(ix, "shop/client", "http://example.com/", None);
        assert_outcome(&e, ReasonCode::Passthrough, Side::Source);
    });
    for column in [Column::Strict, Column::Permissive] {
        let ix = index(column, &["quickstart/registry-only"]);
        let e = http(&ix, "shop/client", "http://203.0.113.7/", None);
        assert_outcome(&e, ReasonCode::UnknownDestination, Side::Source);
        assert_eq!(e.client_sees, ClientSees::Status(502));
        let e = tcp(&ix, "shop/client", "203.0.113.7:443");
        assert_outcome(&e, ReasonCode::UnknownDestination, Side::Source);
        assert_eq!(e.client_sees, ClientSees::Reset);
        // Cluster traffic is unaffected.
        assert_eq!(http(&ix, "shop/client", "http://web.shop/", None).reason, ReasonCode::Ok);
    }
}

#[test]
fn statefulset_peers_reach_each_other_by_per_pod_names_under_strict() {
    let loaded = podmesh_model::load(&[examples("statefulset-peers")]).unwrap();
    let ix = Index::new(loaded.cluster);
    for from in ["store/kv-0", "store/kv-1", "store/kv-2"] {
        for to in ["kv-0", "kv-1", "kv-2"] {
            let e = tcp(&ix, from, &format!("{to}.kv:2380"));
            assert_outcome(&e, ReasonCode::Ok, Side::Destination);
            assert_eq!(e.endpoints, vec![format!("store/{to}")]);
            assert!(e.mtls);
            let e = http(&ix, from, &format!("http://{to}.kv.store.svc.cluster.local:2379/v3/kv/range"), None);
            assert_outcome(&e, ReasonCode::Ok, Side::Destination);
            assert_eq!(e.endpoints, vec![format!("store/{to}")]);
        }
        let e = http(&ix, from, "http://kv-client:2379/", None);
        assert_outcome(&e, ReasonCode::Ok, Side::Destination);
        assert_eq!(e.endpoints.len(), 3);
    }
}
