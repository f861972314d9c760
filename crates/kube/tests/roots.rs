#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The mesh's roots published in every namespace (`podmesh_kube::roots`), against the fake API server of
//! `fake/mod.rs`: a list and a watch of Namespaces, and the API server's answers to the ConfigMap applies.

mod fake;

use std::time::Duration;

use fake::{FakeApi, wait_for};
use podmesh_kube::roots::{self, Timing};
use serde_json::{Value, json};

const NAMESPACES: &str = "/api/v1/namespaces";
const ROOTS: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn namespace(name: &str, phase: &str) -> Value {
    json!({"metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "5"},
           "status": {"phase": phase}})
}

fn apply_path(ns: &str) -> String {
    format!("PATCH /api/v1/namespaces/{ns}/configmaps/podmesh-root")
}

/// The applies of ConfigMaps so far, by namespace, in order.
fn applies(api: &FakeApi) -> Vec<(String, Value, String)> {
    api.recorded()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            let ns = r.target.trim_start_matches("/api/v1/namespaces/").split('/').next().unwrap().to_string();
            (ns, serde_json::from_str(&r.body).unwrap(), r.target)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_of_the_mesh_gets_the_roots_and_a_failed_write_is_retried() {
    let list = json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "7"}, "items": [
        namespace("shop", "Active"), namespace("kube-system", "Active"), namespace("gone", "Terminating"),
        namespace("data", "Active")]});
    let api = FakeApi::start([(NAMESPACES.to_string(), vec![(200, list.to_string())])].into()).await;
    let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "podmesh-root"}}).to_string();
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
        "message": "configmaps \"podmesh-root\" is forbidden", "code": 403})
    .to_string();
    api.answer_with(&apply_path("shop"), vec![(200, ok.clone())]);
    // `data` fails once, then works.
    api.answer_with(&apply_path("data"), vec![(403, forbidden), (200, ok.clone())]);
    api.answer_with(&apply_path("new"), vec![(200, ok.clone())]);

    let timing = Timing { retry: Duration::from_millis(100), refresh: Duration::from_secs(3600) };
    let task = tokio::spawn(roots::publish(fake::client(&api), ROOTS.to_string(), timing));
    wait_for("the roots in shop and data", || {
        let done: Vec<String> = applies(&api).into_iter().map(|a| a.0).collect();
        done.contains(&"shop".to_string()) && done.iter().filter(|n| *n == "data").count() == 2
    })
    .await;
    let all = applies(&api);
    for (ns, body, target) in &all {
        assert_eq!(
            body,
            &json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "podmesh-root", "namespace": ns,
                             "labels": {"app.kubernetes.io/managed-by": "podmesh"}},
                "data": {"root.pem": ROOTS}})
        );
        assert!(target.contains("fieldManager=podmesh-control") && target.contains("force=true"), "{target}");
    }
    let content_types: Vec<String> =
        api.recorded().into_iter().filter(|r| r.method == "PATCH").map(|r| r.content_type).collect();
    assert!(content_types.iter().all(|c| c == "application/apply-patch+yaml"), "{content_types:?}");

    // A namespace created later gets it too; the cluster's own and one being deleted never do.
    api.watching(NAMESPACES, 1).await;
    api.push(NAMESPACES, &json!({"type": "ADDED", "object": namespace("new", "Active")}).to_string());
    wait_for("the roots in new", || applies(&api).iter().any(|a| a.0 == "new")).await;
    let namespaces: Vec<String> = applies(&api).into_iter().map(|a| a.0).collect();
    assert!(!namespaces.iter().any(|n| n == "kube-system" || n == "gone"), "{namespaces:?}");
    // Written once each (and `data` once more after its failure): nothing is written again before the refresh.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut counts: Vec<(String, usize)> = Vec::new();
    for n in applies(&api).into_iter().map(|a| a.0) {
        match counts.iter_mut().find(|c| c.0 == n) {
            Some(c) => c.1 += 1,
            None => counts.push((n, 1)),
        }
    }
    counts.sort();
    assert_eq!(counts, vec![("data".into(), 2), ("new".into(), 1), ("shop".into(), 1)]);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_roots_are_written_again_at_each_refresh() {
    let list = json!({"apiVersion": "v1", "kind": "NamespaceList", "metadata": {"resourceVersion": "7"},
        "items": [namespace("shop", "Active")]});
    let api = FakeApi::start([(NAMESPACES.to_string(), vec![(200, list.to_string())])].into()).await;
    api.answer_with(&apply_path("shop"), vec![(200, "{}".to_string())]);
    let timing = Timing { retry: Duration::from_millis(50), refresh: Duration::from_millis(200) };
    let task = tokio::spawn(roots::publish(fake::client(&api), ROOTS.to_string(), timing));
    wait_for("three writes (a deleted ConfigMap comes back)", || applies(&api).len() >= 3).await;
    task.abort();
}
