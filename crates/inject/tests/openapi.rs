//! Every object `inject` makes is a valid Kubernetes object: it survives a round trip through the Kubernetes API's
//! own types (k8s-openapi) unchanged — a misspelt or misplaced field would be dropped on the way — for every
//! workload of the examples and a fixture of every kind with a pod template, both sidecar styles.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use k8s_openapi::api::{apps, batch, core};
use podmesh_inject::{Config, Outcome, inject};
use serde_json::{Value, json};

fn round_trip<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, v: &Value) {
    let typed: T = serde_path_to_error::deserialize(v.clone()).unwrap_or_else(|e| panic!("{what}: {e}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(&back, v, "{what}: changed by the Kubernetes types (a field they do not know, or a wrong type)");
}

fn check(what: &str, v: &Value) {
    match v["kind"].as_str().unwrap() {
        "Pod" => round_trip::<core::v1::Pod>(what, v),
        "Deployment" => round_trip::<apps::v1::Deployment>(what, v),
        "StatefulSet" => round_trip::<apps::v1::StatefulSet>(what, v),
        "DaemonSet" => round_trip::<apps::v1::DaemonSet>(what, v),
        "Job" => round_trip::<batch::v1::Job>(what, v),
        "CronJob" => round_trip::<batch::v1::CronJob>(what, v),
        other => panic!("{what}: unexpected kind {other}"),
    }
}

fn examples() -> Vec<(String, Value)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut out = Vec::new();
    for dir in ["quickstart", "statefulset-peers"] {
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir)).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files.iter().filter(|f| f.extension().is_some_and(|e| e == "yaml")) {
            let text = std::fs::read_to_string(f).unwrap();
            out.extend(
                podmesh_model::objects(&text, false).into_iter().map(|(k, v)| (format!("{}: {k}", f.display()), v)),
            );
        }
    }
    out
}

fn fixture() -> Vec<(String, Value)> {
    let template = json!({
        "metadata": {"labels": {"app": "a"}, "annotations": {
            "traffic.sidecar.istio.io/excludeInboundPorts": "9000",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "169.254.169.254/32"
        }},
        "spec": {
            "restartPolicy": "OnFailure",
            "containers": [{
                "name": "app", "image": "app:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http",
                    "httpHeaders": [{"name": "X-Probe", "value": "1"}]}, "periodSeconds": 5},
                "livenessProbe": {"tcpSocket": {"port": 8080}},
                "startupProbe": {"grpc": {"port": 9000}}
            }],
            "initContainers": [{"name": "migrate", "image": "app:1", "command": ["migrate"]}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    });
    let meta = |name: &str| json!({"name": name, "namespace": "n"});
    let selector = json!({"matchLabels": {"app": "a"}});
    let mut pod = template.clone();
    pod["apiVersion"] = json!("v1");
    pod["kind"] = json!("Pod");
    pod["metadata"]["name"] = json!("p");
    vec![
        ("Pod".into(), pod),
        (
            "Deployment".into(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta("d"),
            "spec": {"replicas": 2, "selector": selector, "template": template}}),
        ),
        (
            "StatefulSet".into(),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta("s"),
            "spec": {"serviceName": "s", "selector": selector, "template": template}}),
        ),
        (
            "DaemonSet".into(),
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta("ds"),
            "spec": {"selector": selector, "template": template}}),
        ),
        (
            "Job".into(),
            json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta("j"),
            "spec": {"template": template}}),
        ),
        (
            "CronJob".into(),
            json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta("c"),
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template}}}}),
        ),
    ]
}

#[test]
fn every_injected_object_is_a_valid_kubernetes_object() {
    let mut injected = 0;
    for native in [true, false] {
        let config = Config { native_sidecar: native, ..Config::default() };
        for (what, mut v) in examples().into_iter().chain(fixture()) {
            match inject(&mut v, &config).unwrap() {
                Outcome::Injected => {
                    injected += 1;
                    check(&what, &v);
                }
                Outcome::NotAWorkload | Outcome::Skipped(_) => {}
                Outcome::AlreadyInjected => panic!("{what}: injected before"),
            }
        }
    }
    // The examples' ten meshed workloads and pods (legacy opts out) and the fixture's six, twice.
    assert_eq!(injected, 2 * (6 + 6), "objects injected");
}
