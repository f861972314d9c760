//! R5: PeerAuthentication composition (mesh → namespace → workload → portLevelMtls; narrowest set value wins;
//! UNSET inherits; nothing set is PERMISSIVE), and its effect on what the source sends (R3.5).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use podmesh_compute::{Index, MtlsFrom};
use podmesh_model::{MtlsMode, ObjectKey, TargetPort};

const APP: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: api, ports: [{containerPort: 8080}, {containerPort: 9000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: shop, labels: {app: other}}
spec:
  containers: [{name: other, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: api, namespace: dev, labels: {app: api}}
spec:
  containers: [{name: api, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: shop}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}, {name: tcp, port: 9000}]
---
apiVersion: v1
kind: Service
metadata: {name: other, namespace: shop}
spec:
  selector: {app: other}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: api, namespace: dev}
spec:
  selector: {app: api}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

fn pa(name: &str, ns: &str, selector: Option<&str>, mode: Option<&str>, ports: &[(u16, &str)]) -> String {
    let mut s = format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n"
    );
    if let Some(app) = selector {
        s += &format!("  selector: {{matchLabels: {{app: {app}}}}}\n");
    }
    if let Some(m) = mode {
        s += &format!("  mtls: {{mode: {m}}}\n");
    }
    if !ports.is_empty() {
        s += "  portLevelMtls:\n";
        for (p, m) in ports {
            s += &format!("    {p}: {{mode: {m}}}\n");
        }
    }
    s
}

fn index(policies: &[String]) -> Index {
    let mut files = vec![("app.yaml".to_string(), APP.to_string())];
    for (i, p) in policies.iter().enumerate() {
        files.push((format!("pa{i}.yaml"), p.clone()));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    Index::new(podmesh_model::load_str(&refs).unwrap().cluster)
}

fn mode(ix: &Index, pod: &str, port: u16) -> (MtlsMode, MtlsFrom) {
    let cfg = ix.proxy_config(&ObjectKey::parse(pod).unwrap()).unwrap();
    let p = &cfg.inbound.ports[&TargetPort(port)];
    (p.mtls, p.mtls_from.clone())
}

fn k(s: &str) -> ObjectKey {
    ObjectKey::parse(s).unwrap()
}

#[test]
fn nothing_set_is_permissive() {
    let ix = index(&[]);
    assert_eq!(mode(&ix, "shop/api", 8080), (MtlsMode::Permissive, MtlsFrom::Default));
}

#[test]
fn mesh_wide_policy_lives_in_the_root_namespace() {
    let ix = index(&[pa("default", "podmesh-system", None, Some("STRICT"), &[])]);
    assert_eq!(mode(&ix, "shop/api", 8080), (MtlsMode::Strict, MtlsFrom::Mesh(k("podmesh-system/default"))));
    assert_eq!(mode(&ix, "dev/api", 8080).0, MtlsMode::Strict);
    // A selector-less policy elsewhere is only namespace-wide.
    let ix = index(&[pa("default", "dev", None, Some("STRICT"), &[])]);
    assert_eq!(mode(&ix, "shop/api", 8080).0, MtlsMode::Permissive);
    assert_eq!(mode(&ix, "dev/api", 8080), (MtlsMode::Strict, MtlsFrom::Namespace(k("dev/default"))));
}

#[test]
fn narrowest_set_value_wins() {
    let ix = index(&[
        pa("mesh", "podmesh-system", None, Some("STRICT"), &[]),
        pa("ns", "shop", None, Some("PERMISSIVE"), &[]),
        pa("api", "shop", Some("api"), Some("DISABLE"), &[(9000, "STRICT")]),
    ]);
    assert_eq!(mode(&ix, "shop/api", 8080), (MtlsMode::Disable, MtlsFrom::Workload(k("shop/api"))));
    assert_eq!(mode(&ix, "shop/api", 9000), (MtlsMode::Strict, MtlsFrom::Port(k("shop/api"))));
    assert_eq!(mode(&ix, "shop/other", 8080), (MtlsMode::Permissive, MtlsFrom::Namespace(k("shop/ns"))));
    assert_eq!(mode(&ix, "dev/api", 8080), (MtlsMode::Strict, MtlsFrom::Mesh(k("podmesh-system/mesh"))));
}

#[test]
fn unset_inherits_at_every_level() {
    let ix = index(&[
        pa("mesh", "podmesh-system", None, Some("STRICT"), &[]),
        pa("ns", "shop", None, Some("UNSET"), &[]),
        pa("api", "shop", Some("api"), None, &[(8080, "UNSET"), (9000, "PERMISSIVE")]),
    ]);
    assert_eq!(mode(&ix, "shop/api", 8080), (MtlsMode::Strict, MtlsFrom::Mesh(k("podmesh-system/mesh"))));
    assert_eq!(mode(&ix, "shop/api", 9000), (MtlsMode::Permissive, MtlsFrom::Port(k("shop/api"))));
}

#[test]
fn port_level_is_keyed_by_target_port() {
    // 8080 is the target port of service port 80: keying by 80 does nothing, and check says so.
    let ix = index(&[pa("api", "shop", Some("api"), Some("STRICT"), &[(80, "DISABLE")])]);
    assert_eq!(mode(&ix, "shop/api", 8080).0, MtlsMode::Strict);
    let found = podmesh_compute::check::pitfalls(&ix);
    let d = found.iter().find(|d| d.code == "port-level-mtls-not-target-port").expect("pitfall reported");
    assert!(d.message.contains("port 80") || d.message.contains("key 80"), "{d}");
    assert!(d.message.contains("8080"), "{d}");
    assert_eq!(d.field.as_deref(), Some("spec.portLevelMtls.80"));
}

#[test]
fn conflicting_policies_resolve_by_name_and_are_reported() {
    let ix = index(&[
        pa("a", "shop", None, Some("STRICT"), &[]),
        pa("b", "shop", None, Some("DISABLE"), &[]),
        pa("w1", "shop", Some("api"), Some("PERMISSIVE"), &[]),
        pa("w2", "shop", Some("api"), Some("DISABLE"), &[]),
    ]);
    assert_eq!(mode(&ix, "shop/other", 8080), (MtlsMode::Strict, MtlsFrom::Namespace(k("shop/a"))));
    assert_eq!(mode(&ix, "shop/api", 8080), (MtlsMode::Permissive, MtlsFrom::Workload(k("shop/w1"))));
    let codes: Vec<String> = ix
        .diagnostics()
        .iter()
        .filter(|d| d.code == "policy-conflict")
        .map(|d| d.object.as_ref().unwrap().to_string())
        .collect();
    assert_eq!(codes, vec!["PeerAuthentication shop/b", "PeerAuthentication shop/w2"]);
}

#[test]
fn r3_5_source_uses_mtls_unless_the_destination_port_is_disable() {
    let ix = index(&[pa("api", "shop", Some("api"), Some("DISABLE"), &[(9000, "STRICT")])]);
    let out = ix.outbound();
    let api = ix.pod(&k("shop/api")).unwrap();
    let ep = |cluster: &str| out.clusters[&podmesh_compute::ClusterName(cluster.into())].endpoints[0].clone();
    assert_eq!(ep("outbound|80||api.shop.svc.cluster.local").tls, None);
    assert_eq!(
        ep("outbound|9000||api.shop.svc.cluster.local").tls.map(|i| i.as_str().to_string()),
        Some("spiffe://cluster.local/ns/shop/sa/default".into())
    );
    let direct = &out.pods[&api.ip];
    assert_eq!(direct.tls_for(TargetPort(8080)), None);
    assert!(direct.tls_for(TargetPort(9000)).is_some());
    // An undeclared port still follows the pod's mode (the destination then refuses it).
    assert_eq!(direct.tls_for(TargetPort(1234)), None);
}
