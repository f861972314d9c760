//! `podmesh check` pitfalls and the deterministic resolution of conflicts (issue: "resolved deterministically and
//! reported"): two Services giving one target port different protocols, and one host routed twice.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use podmesh_compute::{Index, Protocol, check};
use podmesh_model::{Diagnostic, ObjectKey, TargetPort};

const PODS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec: {containers: [{name: api, ports: [{name: web, containerPort: 8080}]}]}
"#;

fn index(extra: &str) -> Index {
    let loaded = podmesh_model::load_str(&[("pods.yaml", PODS), ("extra.yaml", extra)]).unwrap();
    Index::new(loaded.cluster)
}

fn found(ix: &Index, code: &str) -> Vec<Diagnostic> {
    check::pitfalls(ix).into_iter().filter(|d| d.code == code).collect()
}

fn service(name: &str, app_protocol: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  selector: {{app: api}}\n  \
         ports: [{{name: p, port: 80, targetPort: 8080, appProtocol: {app_protocol}}}]\n"
    )
}

#[test]
fn conflicting_protocols_resolve_to_the_first_service_by_name_and_are_reported() {
    // Loaded in reverse name order: the outcome must not depend on it.
    let ix = index(&format!("{}{}", service("zeta", "tcp"), service("alpha", "http")));
    let pod = ix.cluster().pods_of(&ObjectKey::new("shop", "api")).next().unwrap().key.clone();
    let cfg = ix.proxy_config(&pod).unwrap();
    assert_eq!(cfg.inbound.ports[&TargetPort(8080)].protocol, Protocol::Http);
    let d = found(&ix, "protocol-conflict");
    assert_eq!(d.len(), 1, "one report for the pair, not one per pod: {d:?}");
    assert_eq!(d[0].object.as_ref().unwrap().to_string(), "Service shop/zeta");
    assert!(d[0].message.contains("protocol tcp") && d[0].message.contains("shop/alpha gives it http"), "{}", d[0]);
}

#[test]
fn an_explicit_protocol_beats_auto_without_a_conflict() {
    let ix = index(&format!("{}{}", service("alpha", "example.com/unknown"), service("beta", "tcp")));
    let pod = ix.cluster().pods_of(&ObjectKey::new("shop", "api")).next().unwrap().key.clone();
    assert_eq!(ix.proxy_config(&pod).unwrap().inbound.ports[&TargetPort(8080)].protocol, Protocol::Tcp);
    assert!(found(&ix, "protocol-conflict").is_empty());
}

#[test]
fn one_host_routed_by_two_virtual_services_keeps_the_first_by_name() {
    let vs = |name: &str, dest: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: shop}}\n\
             spec:\n  hosts: [shop.example.com]\n  http: [{{route: [{{destination: {{host: {dest}}}}}]}}]\n"
        )
    };
    let ix = index(&format!("{}{}{}", service("api", "http"), vs("second", "api"), vs("first", "api")));
    let d = found(&ix, "duplicate-host");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].object.as_ref().unwrap().to_string(), "VirtualService shop/second");
    assert!(d[0].message.contains("already routed by VirtualService shop/first"), "{}", d[0]);
    let vh =
        ix.outbound().routes.values().flat_map(|t| &t.virtual_hosts).find(|v| v.name.starts_with("shop.example.com"));
    assert_eq!(vh.unwrap().virtual_service, Some(ObjectKey::new("shop", "first")));
}

#[test]
fn a_destination_naming_no_service_or_subset_is_reported() {
    let extra = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api, namespace: shop}}\n\
         spec:\n  hosts: [api]\n  http:\n    - route: [{{destination: {{host: api, subset: v9}}, weight: 50}}, {{destination: {{host: nothing}}, weight: 50}}]\n",
        service("api", "http")
    );
    let ix = index(&extra);
    assert_eq!(found(&ix, "unknown-subset").len(), 1);
    let unknown = found(&ix, "unknown-host");
    assert_eq!(unknown.len(), 1);
    assert_eq!(unknown[0].field.as_deref(), Some("spec.http[0].route[1].destination.host"));
}
