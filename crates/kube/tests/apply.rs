#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `podmesh_kube::apply` (what `podmesh install --apply` does) against the fake API server of `fake/mod.rs`:
//! every object server-side applied at its path, as podmesh-install, forced; a CRD someone else installed and a
//! Secret that exists left alone; errors that name the object and say what the API server answered.

mod fake;

use std::collections::HashMap;

use fake::{FakeApi, WAIT};
use podmesh_kube::apply::{apply, existing_secret_data};
use serde_json::{Value, json};

const MANAGER: &str = "podmesh-install";
const CRD: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/virtualservices.networking.istio.io";
const SECRET: &str = "/api/v1/namespaces/podmesh-system/secrets/podmesh-ca";

fn labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "podmesh", "app.kubernetes.io/name": "podmesh"})
}

/// One object of each kind `install` makes, and the path each is applied at.
fn objects() -> Vec<(String, Value)> {
    let meta = |name: &str| json!({"name": name, "labels": labels()});
    let ns_meta = |name: &str| json!({"name": name, "namespace": "podmesh-system", "labels": labels()});
    vec![
        (
            CRD.into(),
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                   "metadata": meta("virtualservices.networking.istio.io"),
                   "spec": {"group": "networking.istio.io", "scope": "Namespaced",
                            "names": {"kind": "VirtualService", "plural": "virtualservices"},
                            "versions": [{"name": "v1", "served": true, "storage": true,
                                          "schema": {"openAPIV3Schema": {"type": "object",
                                              "x-kubernetes-preserve-unknown-fields": true}}}]}}),
        ),
        (
            "/api/v1/namespaces/podmesh-system".into(),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": meta("podmesh-system")}),
        ),
        (
            "/api/v1/namespaces/podmesh-system/serviceaccounts/podmesh-control".into(),
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": ns_meta("podmesh-control")}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/podmesh-control".into(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                   "metadata": meta("podmesh-control"),
                   "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        ),
        (
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/podmesh-control".into(),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                   "metadata": meta("podmesh-control"),
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                               "name": "podmesh-control"},
                   "subjects": [{"kind": "ServiceAccount", "name": "podmesh-control",
                                 "namespace": "podmesh-system"}]}),
        ),
        (
            SECRET.into(),
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": ns_meta("podmesh-ca"), "type": "Opaque",
                   "data": {"root.pem": "bG9jYWw=", "root-key.pem": "a2V5", "token-key": "dG9rZW4="}}),
        ),
        (
            "/apis/apps/v1/namespaces/podmesh-system/deployments/podmesh-control".into(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": ns_meta("podmesh-control"),
                   "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "podmesh-control"}},
                            "template": {"metadata": {"labels": {"app": "podmesh-control"}},
                                         "spec": {"containers": [{"name": "control", "image": "podmesh:test"}]}}}}),
        ),
        (
            "/api/v1/namespaces/podmesh-system/services/podmesh-control".into(),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": ns_meta("podmesh-control"),
                   "spec": {"selector": {"app": "podmesh-control"},
                            "ports": [{"name": "grpc-xds", "port": 15012, "targetPort": 15012}]}}),
        ),
        (
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/podmesh-sidecar-injector".into(),
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
                   "metadata": meta("podmesh-sidecar-injector"),
                   "webhooks": [{"name": "sidecar-injector.podmesh.io", "sideEffects": "None",
                                 "admissionReviewVersions": ["v1"],
                                 "clientConfig": {"service": {"name": "podmesh-control",
                                     "namespace": "podmesh-system", "path": "/inject", "port": 443}}}]}),
        ),
    ]
}

/// A fake API server that answers every object's apply with the object itself.
async fn server(objects: &[(String, Value)]) -> FakeApi {
    let answers: HashMap<String, Vec<(u16, String)>> =
        objects.iter().map(|(path, o)| (format!("PATCH {path}"), vec![(200, o.to_string())])).collect();
    FakeApi::start(answers).await
}

async fn run(api: &FakeApi, objects: &[Value]) -> Result<Vec<String>, String> {
    tokio::time::timeout(WAIT, apply(fake::client(api), objects, MANAGER)).await.expect("apply within WAIT")
}

fn values(objects: &[(String, Value)]) -> Vec<Value> {
    objects.iter().map(|(_, o)| o.clone()).collect()
}

fn patches(api: &FakeApi) -> Vec<fake::Recorded> {
    api.recorded().into_iter().filter(|r| r.method == "PATCH").collect()
}

#[tokio::test]
async fn every_object_is_server_side_applied_at_its_path_in_order() {
    let objects = objects();
    let api = server(&objects).await;
    // The Deployment exists already: configured, not created.
    let deployment = &objects[6];
    api.answer_with(&deployment.0, vec![(200, deployment.1.to_string())]);
    let lines = run(&api, &values(&objects)).await.unwrap();
    assert_eq!(
        lines,
        [
            "created CustomResourceDefinition virtualservices.networking.istio.io",
            "created Namespace podmesh-system",
            "created ServiceAccount podmesh-system/podmesh-control",
            "created ClusterRole podmesh-control",
            "created ClusterRoleBinding podmesh-control",
            "created Secret podmesh-system/podmesh-ca",
            "configured Deployment podmesh-system/podmesh-control",
            "created Service podmesh-system/podmesh-control",
            "created MutatingWebhookConfiguration podmesh-sidecar-injector",
        ]
    );
    let patches = patches(&api);
    assert_eq!(patches.len(), objects.len(), "{patches:#?}");
    for (p, (path, object)) in patches.iter().zip(&objects) {
        let (target_path, query) = p.target.split_once('?').unwrap();
        assert_eq!(target_path, path);
        let params: Vec<&str> = query.split('&').collect();
        assert!(params.contains(&"fieldManager=podmesh-install"), "{query}");
        assert!(params.contains(&"force=true"), "{query}");
        assert_eq!(p.content_type, "application/apply-patch+yaml", "{path}");
        let body: Value = serde_json::from_str(&p.body).unwrap();
        assert_eq!(&body, object, "{path}: the body is the object");
    }
    // Each object was read before it was applied (to say created or configured, and to leave some alone), and
    // nothing asked for discovery documents.
    for r in api.recorded().iter().filter(|r| r.method == "GET") {
        let path = r.target.split('?').next().unwrap();
        assert!(objects.iter().any(|(p, _)| p == path), "unexpected GET {}", r.target);
    }
}

#[tokio::test]
async fn a_crd_installed_by_someone_else_is_left_alone_and_podmesh_s_own_is_configured() {
    let objects = objects();
    let api = server(&objects).await;
    let mut istio = objects[0].1.clone();
    istio["metadata"]["labels"] = json!({"app.kubernetes.io/managed-by": "Helm", "app": "istio-pilot"});
    api.answer_with(CRD, vec![(200, istio.to_string())]);
    let lines = run(&api, &values(&objects[..2])).await.unwrap();
    assert_eq!(
        lines,
        [
            "left alone: CustomResourceDefinition virtualservices.networking.istio.io (installed by someone else)",
            "created Namespace podmesh-system",
        ]
    );
    assert!(patches(&api).iter().all(|p| !p.target.starts_with(CRD)), "{:#?}", patches(&api));

    // One podmesh installed before: applied again.
    let api = server(&objects).await;
    api.answer_with(CRD, vec![(200, objects[0].1.to_string())]);
    let lines = run(&api, &values(&objects[..1])).await.unwrap();
    assert_eq!(lines, ["configured CustomResourceDefinition virtualservices.networking.istio.io"]);
    assert_eq!(patches(&api).len(), 1);
}

#[tokio::test]
async fn an_existing_ca_secret_is_kept_and_its_root_is_what_the_caller_gets() {
    let objects = objects();
    let api = server(&objects).await;
    assert_eq!(
        tokio::time::timeout(WAIT, existing_secret_data(fake::client(&api), "podmesh-system", "podmesh-ca"))
            .await
            .unwrap(),
        Ok(None),
        "no Secret yet"
    );
    let running = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "podmesh-ca", "namespace": "podmesh-system"}, "type": "Opaque",
        // "the running root", "its key", "a token key"
        "data": {"root.pem": "dGhlIHJ1bm5pbmcgcm9vdA==", "root-key.pem": "aXRzIGtleQ==",
                 "token-key": "YSB0b2tlbiBrZXk="}});
    api.answer_with(SECRET, vec![(200, running.to_string())]);
    let data = tokio::time::timeout(WAIT, existing_secret_data(fake::client(&api), "podmesh-system", "podmesh-ca"))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(data["root.pem"], b"the running root");
    assert_eq!(data["root-key.pem"], b"its key");
    assert_eq!(data["token-key"], b"a token key");

    let lines = run(&api, &values(&objects)).await.unwrap();
    assert!(
        lines.contains(&"left alone: Secret podmesh-system/podmesh-ca (exists: the running CA's keys are kept)".into()),
        "{lines:#?}"
    );
    assert!(patches(&api).iter().all(|p| !p.target.starts_with(SECRET)), "{:#?}", patches(&api));
    assert_eq!(patches(&api).len(), objects.len() - 1);
}

#[tokio::test]
async fn a_refusal_names_the_object_and_says_what_the_api_server_answered() {
    let objects = objects();
    let api = server(&objects).await;
    let message = "clusterroles.rbac.authorization.k8s.io \"podmesh-control\" is forbidden: user \"dev\" \
                   (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not currently held";
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": message, "reason": "Forbidden", "code": 403});
    api.answer_with(&format!("PATCH {}", objects[3].0), vec![(403, status.to_string())]);
    let e = run(&api, &values(&objects)).await.unwrap_err();
    assert!(e.starts_with("ClusterRole podmesh-control: applying it: "), "{e}");
    assert!(e.contains(message) && e.contains("403"), "{e}");
    assert!(e.contains("3 object(s) applied before it"), "{e}");
    // It stopped there.
    assert_eq!(patches(&api).len(), 4);

    // A refused read is an error too, and nothing of that object is applied.
    let api = server(&objects).await;
    api.answer_with(SECRET, vec![(403, status.to_string().replace("clusterroles", "secrets"))]);
    let e = tokio::time::timeout(WAIT, existing_secret_data(fake::client(&api), "podmesh-system", "podmesh-ca"))
        .await
        .unwrap()
        .unwrap_err();
    assert!(e.starts_with("Secret podmesh-system/podmesh-ca: reading it: ") && e.contains("forbidden"), "{e}");
}

#[tokio::test]
async fn an_unknown_kind_is_an_error_before_anything_is_applied() {
    let mut objects = values(&objects());
    objects.insert(3, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "n"}}));
    let api = server(&[]).await;
    let e = run(&api, &objects).await.unwrap_err();
    assert!(e.starts_with("ConfigMap x (apiVersion \"v1\"): unknown kind"), "{e}");
    // A known kind with another version is unknown too.
    let e = run(&api, &[json!({"apiVersion": "apps/v1beta1", "kind": "Deployment", "metadata": {"name": "d"}})])
        .await
        .unwrap_err();
    assert!(e.contains("Deployment d (apiVersion \"apps/v1beta1\"): unknown kind"), "{e}");
    // A namespaced object without its namespace.
    let e = run(&api, &[json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})]).await.unwrap_err();
    assert_eq!(e, "Secret s: no metadata.namespace");
    assert!(api.recorded().is_empty(), "{:#?}", api.recorded());
}
