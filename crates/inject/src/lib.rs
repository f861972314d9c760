//! # podmesh-inject
//!
//! Sidecar injection, as `istioctl kube-inject` and Istio's injection webhook do it: a workload's pod template gets
//! the capture rules' init container (`podmesh capture install`, needing only NET_ADMIN and NET_RAW), the sidecar
//! (`podmesh proxy --control …`, uid 1337, read-only root filesystem, started before the application as a native
//! sidecar where the cluster has them), its token and mesh-root volumes, and the application's kubelet probes
//! rewritten to go through the sidecar's port 15020, so that STRICT mTLS does not refuse them.
//!
//! One pure function over the objects as JSON ([`inject`]), used by `podmesh inject -f` and by the control plane's
//! admission webhook alike. Injecting twice changes nothing: an injected pod template carries
//! [`STATUS_ANNOTATION`], and is left as it is.
//!
//! It sits beside the pure core (model → compute → route): it reads nothing but the object it is given.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Marks an injected pod template (what was added, for `kubectl describe` and for a second injection to skip).
pub const STATUS_ANNOTATION: &str = "sidecar.podmesh.io/status";
/// `"false"` keeps a pod plain (Istio's annotation is honoured too).
pub const INJECT_ANNOTATIONS: [&str; 2] = ["sidecar.podmesh.io/inject", "sidecar.istio.io/inject"];
/// `"false"` leaves the application's probes as written (Istio's annotation).
pub const REWRITE_PROBES_ANNOTATION: &str = "sidecar.istio.io/rewriteAppHTTPProbers";

/// The init container that installs the capture rules.
pub const INIT_NAME: &str = "podmesh-init";
/// The sidecar container.
pub const PROXY_NAME: &str = "podmesh-proxy";
/// The sidecar's user: the capture rules let its traffic through by this uid (Istio's 1337).
pub const PROXY_UID: u64 = 1337;
/// The volume with the pod's ServiceAccount token for the control plane (projected, audience [`TOKEN_AUDIENCE`]).
pub const TOKEN_VOLUME: &str = "podmesh-token";
/// The audience of that token, which the control plane asks TokenReview to check.
pub const TOKEN_AUDIENCE: &str = "podmesh";
/// The volume with the mesh root (a ConfigMap the control plane keeps in every namespace, as istio-ca-root-cert).
pub const ROOT_VOLUME: &str = "podmesh-root";
pub const ROOT_CONFIGMAP: &str = "podmesh-root";
const TOKEN_DIR: &str = "/var/run/secrets/tokens";
const ROOT_DIR: &str = "/etc/podmesh/root";
/// The sidecar's health and rewritten-probe port (R7).
const STATS_PORT: u16 = 15020;
const READY_PORT: u16 = 15021;

/// The pod annotations that opt traffic out of capture (Istio's names), and the `capture install` flag each
/// becomes.
pub const TRAFFIC_ANNOTATIONS: [(&str, &str); 5] = [
    ("traffic.sidecar.istio.io/excludeInboundPorts", "--exclude-inbound-ports"),
    ("traffic.sidecar.istio.io/includeInboundPorts", "--include-inbound-ports"),
    ("traffic.sidecar.istio.io/excludeOutboundPorts", "--exclude-outbound-ports"),
    ("traffic.sidecar.istio.io/excludeOutboundIPRanges", "--exclude-outbound-ip-ranges"),
    ("traffic.sidecar.istio.io/includeOutboundIPRanges", "--include-outbound-ip-ranges"),
];

/// What is injected, and where the sidecar finds the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The `podmesh` image (its entrypoint is the `podmesh` binary).
    pub image: String,
    /// The control plane's gRPC address as pods reach it (`podmesh-control.podmesh-system.svc:15012`).
    pub control: String,
    pub trust_domain: String,
    /// The sidecar as a native sidecar (an init container with `restartPolicy: Always`, Kubernetes 1.29 and
    /// later): started, and ready, before the application, stopped after it. Otherwise the first container.
    pub native_sidecar: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            image: format!("ghcr.io/podmesh/podmesh:{}", env!("CARGO_PKG_VERSION")),
            control: "podmesh-control.podmesh-system.svc:15012".into(),
            trust_domain: "cluster.local".into(),
            native_sidecar: true,
        }
    }
}

/// What injection did to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Injected before: left as it is.
    AlreadyInjected,
    /// Left plain, and why (an opt-out annotation, host networking).
    Skipped(String),
    /// Not a kind with a pod template (a Service, a ConfigMap, ...): passed through.
    NotAWorkload,
}

/// A field that is not what Kubernetes would accept, so the object cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InjectError {
    pub field: String,
    pub message: String,
}

fn error(field: &str, message: impl Into<String>) -> InjectError {
    InjectError { field: field.into(), message: message.into() }
}

/// Where a kind keeps its pod template.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" | "ReplicationController" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

/// Injects the sidecar into `object` (a Pod, or a workload with a pod template), in place.
pub fn inject(object: &mut Value, config: &Config) -> Result<Outcome, InjectError> {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(path) = template_path(&kind) else { return Ok(Outcome::NotAWorkload) };
    let mut template = &mut *object;
    let mut at = String::new();
    for key in path {
        at = if at.is_empty() { (*key).to_string() } else { format!("{at}.{key}") };
        template = template.get_mut(*key).ok_or_else(|| error(&at, "missing"))?;
    }
    let prefix = if at.is_empty() { String::new() } else { format!("{at}.") };
    let template = template.as_object_mut().ok_or_else(|| error(&at, "not an object"))?;
    inject_template(template, config, &prefix)
}

fn inject_template(template: &mut Map<String, Value>, config: &Config, at: &str) -> Result<Outcome, InjectError> {
    let annotations: BTreeMap<String, String> = template
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .map(|a| a.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default();
    if annotations.contains_key(STATUS_ANNOTATION) {
        return Ok(Outcome::AlreadyInjected);
    }
    if let Some((name, _)) = INJECT_ANNOTATIONS
        .iter()
        .find_map(|a| annotations.get(*a).map(|v| (a, v)))
        .filter(|(_, v)| v.as_str() == "false")
    {
        return Ok(Outcome::Skipped(format!("annotation {name}: \"false\"")));
    }
    let spec = template
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or_else(|| error(&format!("{at}spec"), "missing or not an object"))?;
    if spec.get("hostNetwork").and_then(Value::as_bool) == Some(true) {
        return Ok(Outcome::Skipped(
            "hostNetwork: the pod shares the node's network, which a sidecar cannot capture".into(),
        ));
    }
    let containers = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .ok_or_else(|| error(&format!("{at}spec.containers"), "missing or not a list"))?;
    for (i, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        if name == PROXY_NAME || name == INIT_NAME {
            return Err(error(
                &format!("{at}spec.containers[{i}].name"),
                format!("{name:?} is the name of podmesh's own container"),
            ));
        }
    }

    // The application's probes, through the sidecar (unless asked not to).
    let mut probers = Map::new();
    if annotations.get(REWRITE_PROBES_ANNOTATION).map(String::as_str) != Some("false") {
        for container in containers.iter_mut() {
            rewrite_probes(container, &mut probers);
        }
    }

    let mut init_args: Vec<String> = ["capture", "install", "--uid", &PROXY_UID.to_string()].map(String::from).to_vec();
    for (annotation, flag) in TRAFFIC_ANNOTATIONS {
        if let Some(value) = annotations.get(annotation) {
            init_args.push(flag.into());
            init_args.push(value.clone());
        }
    }
    let init = json!({
        "name": INIT_NAME,
        "image": config.image,
        "args": init_args,
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
        }
    });
    let mut proxy = json!({
        "name": PROXY_NAME,
        "image": config.image,
        "args": [
            "proxy",
            "--control", config.control,
            "--token-file", format!("{TOKEN_DIR}/{TOKEN_VOLUME}"),
            "--control-roots", format!("{ROOT_DIR}/root.pem"),
            "--trust-domain", config.trust_domain,
            "--mark", "0"
        ],
        "ports": [{"name": "http-podmesh", "containerPort": STATS_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {"path": "/healthz/ready", "port": READY_PORT},
            "periodSeconds": 2,
            "failureThreshold": 30
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
        "securityContext": {
            "runAsUser": PROXY_UID,
            "runAsGroup": PROXY_UID,
            "runAsNonRoot": true,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "volumeMounts": [
            {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true},
            {"name": ROOT_VOLUME, "mountPath": ROOT_DIR, "readOnly": true}
        ]
    });
    if !probers.is_empty() {
        let text = Value::Object(probers).to_string();
        proxy["env"] = json!([{"name": "PODMESH_APP_PROBES", "value": text}]);
    }
    let containers =
        spec.get_mut("containers").and_then(Value::as_array_mut).ok_or_else(|| error("spec.containers", "missing"))?;
    if config.native_sidecar {
        // The application starts once the sidecar's startup probe passes: no request leaves unmeshed.
        proxy["restartPolicy"] = json!("Always");
        proxy["startupProbe"] = json!({
            "httpGet": {"path": "/healthz/ready", "port": READY_PORT},
            "periodSeconds": 1,
            "failureThreshold": 600
        });
    } else {
        containers.insert(0, proxy.clone());
    }
    let inits = spec.entry("initContainers").or_insert_with(|| json!([]));
    let inits = inits.as_array_mut().ok_or_else(|| error(&format!("{at}spec.initContainers"), "not a list"))?;
    // The capture rules first (nothing leaves the pod before them), then the sidecar, then the pod's own.
    inits.insert(0, init);
    if config.native_sidecar {
        inits.insert(1, proxy);
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let volumes = volumes.as_array_mut().ok_or_else(|| error(&format!("{at}spec.volumes"), "not a list"))?;
    volumes.push(json!({
        "name": TOKEN_VOLUME,
        "projected": {"sources": [{"serviceAccountToken": {
            "audience": TOKEN_AUDIENCE, "expirationSeconds": 43200, "path": TOKEN_VOLUME
        }}]}
    }));
    volumes.push(json!({"name": ROOT_VOLUME, "configMap": {"name": ROOT_CONFIGMAP}}));

    let status = json!({
        "initContainers": if config.native_sidecar { json!([INIT_NAME, PROXY_NAME]) } else { json!([INIT_NAME]) },
        "containers": if config.native_sidecar { json!([]) } else { json!([PROXY_NAME]) },
        "volumes": [TOKEN_VOLUME, ROOT_VOLUME],
        "version": env!("CARGO_PKG_VERSION")
    });
    let metadata = template.entry("metadata").or_insert_with(|| json!({}));
    let metadata = metadata.as_object_mut().ok_or_else(|| error(&format!("{at}metadata"), "not an object"))?;
    let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
    let annotations =
        annotations.as_object_mut().ok_or_else(|| error(&format!("{at}metadata.annotations"), "not an object"))?;
    annotations.insert(STATUS_ANNOTATION.into(), Value::String(status.to_string()));
    Ok(Outcome::Injected)
}

/// Rewrites a container's httpGet and tcpSocket probes to the sidecar's `/app-health/<container>/<kind>z` on
/// 15020, and records each original in `probers` (what the sidecar's `--app-probes` reads). A probe on a named port
/// the container does not declare is left as written (the kubelet would fail it the same way).
fn rewrite_probes(container: &mut Value, probers: &mut Map<String, Value>) {
    let name = container.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
    let ports: BTreeMap<String, u64> = container
        .get("ports")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| Some((p.get("name")?.as_str()?.to_string(), p.get("containerPort")?.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    for (field, kind) in [("readinessProbe", "readyz"), ("livenessProbe", "livez"), ("startupProbe", "startupz")] {
        let Some(probe) = container.get_mut(field).and_then(Value::as_object_mut) else { continue };
        let resolve = |port: &Value| match port {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok().or_else(|| ports.get(s).copied()),
            _ => None,
        };
        let original = if let Some(get) = probe.get("httpGet") {
            let Some(port) = get.get("port").and_then(resolve) else { continue };
            let mut action = get.clone();
            action["port"] = json!(port);
            json!({"httpGet": action})
        } else if let Some(tcp) = probe.get("tcpSocket") {
            let Some(port) = tcp.get("port").and_then(resolve) else { continue };
            json!({"tcpSocket": {"port": port}})
        } else {
            continue;
        };
        let path = format!("/app-health/{name}/{kind}");
        let mut entry = original;
        if let Some(timeout) = probe.get("timeoutSeconds") {
            entry["timeoutSeconds"] = timeout.clone();
        }
        probers.insert(path.clone(), entry);
        probe.remove("httpGet");
        probe.remove("tcpSocket");
        probe.insert("httpGet".into(), json!({"path": path, "port": STATS_PORT, "scheme": "HTTP"}));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}, "annotations": {
                        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432"
                    }},
                    "spec": {"containers": [{
                        "name": "web",
                        "image": "web:1",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "timeoutSeconds": 3},
                        "livenessProbe": {"tcpSocket": {"port": 8080}},
                        "startupProbe": {"exec": {"command": ["true"]}}
                    }]}
                }
            }
        })
    }

    #[test]
    fn a_deployment_gets_the_init_container_the_native_sidecar_and_rewritten_probes() {
        let mut d = deployment();
        assert_eq!(inject(&mut d, &Config::default()).unwrap(), Outcome::Injected);
        let spec = &d["spec"]["template"]["spec"];
        let inits = spec["initContainers"].as_array().unwrap();
        assert_eq!(inits[0]["name"], INIT_NAME);
        assert_eq!(
            inits[0]["args"],
            json!(["capture", "install", "--uid", "1337", "--exclude-outbound-ports", "5432"])
        );
        assert_eq!(inits[0]["securityContext"]["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
        assert_eq!(inits[1]["name"], PROXY_NAME);
        assert_eq!(inits[1]["restartPolicy"], "Always");
        assert_eq!(inits[1]["securityContext"]["runAsUser"], 1337);
        assert_eq!(spec["containers"].as_array().unwrap().len(), 1);
        let web = &spec["containers"][0];
        assert_eq!(
            web["readinessProbe"]["httpGet"],
            json!({"path": "/app-health/web/readyz", "port": 15020, "scheme": "HTTP"})
        );
        assert_eq!(web["readinessProbe"]["timeoutSeconds"], 3);
        assert_eq!(web["livenessProbe"]["httpGet"]["path"], "/app-health/web/livez");
        assert!(web["livenessProbe"].get("tcpSocket").is_none());
        assert_eq!(web["startupProbe"], json!({"exec": {"command": ["true"]}}), "exec probes run in the container");
        let probers: Value = serde_json::from_str(inits[1]["env"][0]["value"].as_str().unwrap()).unwrap();
        assert_eq!(
            probers["/app-health/web/readyz"],
            json!({"httpGet": {"path": "/ready", "port": 8080}, "timeoutSeconds": 3})
        );
        assert_eq!(probers["/app-health/web/livez"], json!({"tcpSocket": {"port": 8080}}));
        let volumes: Vec<&str> =
            spec["volumes"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
        assert_eq!(volumes, [TOKEN_VOLUME, ROOT_VOLUME]);
        assert!(d["spec"]["template"]["metadata"]["annotations"][STATUS_ANNOTATION].is_string());
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let mut once = deployment();
        inject(&mut once, &Config::default()).unwrap();
        let mut twice = once.clone();
        assert_eq!(inject(&mut twice, &Config::default()).unwrap(), Outcome::AlreadyInjected);
        assert_eq!(once, twice);
    }

    #[test]
    fn without_native_sidecars_the_proxy_is_the_first_container() {
        let mut d = deployment();
        let config = Config { native_sidecar: false, ..Config::default() };
        inject(&mut d, &config).unwrap();
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["name"], PROXY_NAME);
        assert!(spec["containers"][0].get("restartPolicy").is_none());
        assert_eq!(spec["initContainers"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn opted_out_host_network_and_other_kinds_are_left_alone() {
        let mut d = deployment();
        d["spec"]["template"]["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false");
        let before = d.clone();
        assert!(matches!(inject(&mut d, &Config::default()).unwrap(), Outcome::Skipped(_)));
        assert_eq!(d, before);
        let mut d = deployment();
        d["spec"]["template"]["spec"]["hostNetwork"] = json!(true);
        assert!(matches!(inject(&mut d, &Config::default()).unwrap(), Outcome::Skipped(_)));
        let mut svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert_eq!(inject(&mut svc, &Config::default()).unwrap(), Outcome::NotAWorkload);
    }

    #[test]
    fn every_kind_with_a_pod_template() {
        for (kind, path) in [
            ("Pod", vec![]),
            ("StatefulSet", vec!["spec", "template"]),
            ("DaemonSet", vec!["spec", "template"]),
            ("Job", vec!["spec", "template"]),
            ("CronJob", vec!["spec", "jobTemplate", "spec", "template"]),
        ] {
            let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "app", "image": "a"}]}});
            let mut object = pod;
            for key in path.iter().rev() {
                object = json!({ *key: object });
            }
            object["kind"] = json!(kind);
            object["apiVersion"] = json!("v1");
            assert_eq!(inject(&mut object, &Config::default()).unwrap(), Outcome::Injected, "{kind}");
        }
    }

    #[test]
    fn what_cannot_be_injected_is_named() {
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"] = json!("nope");
        let e = inject(&mut d, &Config::default()).unwrap_err();
        assert_eq!(e.field, "spec.template.spec.containers");
        let mut d = deployment();
        d["spec"]["template"]["spec"]["containers"][0]["name"] = json!(PROXY_NAME);
        assert!(inject(&mut d, &Config::default()).unwrap_err().message.contains("podmesh's own"));
    }
}
