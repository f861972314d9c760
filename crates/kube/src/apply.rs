//! `podmesh install --apply`: the control plane's objects, server-side applied.
//!
//! Each object is applied (`PATCH` with `application/apply-patch+yaml`, forced, under one field manager) through
//! an [`ApiResource`] from a fixed table of the kinds `install` makes, so nothing asks the API server for its
//! discovery documents. An object of any other kind is an error, before anything is applied.
//!
//! Two kinds of objects are left as the cluster has them:
//! - a CustomResourceDefinition that exists without the label `app.kubernetes.io/managed-by: podmesh`: Istio's
//!   own (or another installer's), which serves the same kinds podmesh reads;
//! - a Secret that exists: it holds the running CA's keys, and replacing them would make every certificate the
//!   control plane has signed, and the webhook's `caBundle`, wrong. The caller reads it first
//!   ([`existing_secret_data`]) to build the rest from it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::Value;

use crate::Kind;

/// The label every object podmesh installs carries.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "podmesh");

const CRD: &str = "CustomResourceDefinition";

/// Every kind [`apply`] knows.
const KINDS: [Kind; 9] = [
    Kind {
        group: "apiextensions.k8s.io",
        version: "v1",
        kind: CRD,
        plural: "customresourcedefinitions",
        namespaced: false,
        crd: false,
    },
    Kind { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false, crd: false },
    Kind { group: "", version: "v1", kind: "ServiceAccount", plural: "serviceaccounts", namespaced: true, crd: false },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRole",
        plural: "clusterroles",
        namespaced: false,
        crd: false,
    },
    Kind {
        group: "rbac.authorization.k8s.io",
        version: "v1",
        kind: "ClusterRoleBinding",
        plural: "clusterrolebindings",
        namespaced: false,
        crd: false,
    },
    Kind { group: "", version: "v1", kind: "Secret", plural: "secrets", namespaced: true, crd: false },
    Kind { group: "apps", version: "v1", kind: "Deployment", plural: "deployments", namespaced: true, crd: false },
    Kind { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true, crd: false },
    Kind {
        group: "admissionregistration.k8s.io",
        version: "v1",
        kind: "MutatingWebhookConfiguration",
        plural: "mutatingwebhookconfigurations",
        namespaced: false,
        crd: false,
    },
];

/// One object checked against the table, before anything is sent.
struct Target<'a> {
    kind: Kind,
    name: &'a str,
    namespace: Option<&'a str>,
    /// "Deployment podmesh-system/podmesh-control", "CustomResourceDefinition virtualservices.networking.istio.io".
    describe: String,
    object: &'a Value,
}

fn target(object: &Value) -> Result<Target<'_>, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind_name = object["kind"].as_str().unwrap_or_default();
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    let Some(kind) = KINDS.iter().find(|k| k.kind == kind_name && k.api_version() == api_version) else {
        let known: Vec<String> = KINDS.iter().map(|k| format!("{} {}", k.api_version(), k.kind)).collect();
        return Err(format!(
            "{kind_name} {name} (apiVersion {api_version:?}): unknown kind; podmesh install applies only {}",
            known.join(", ")
        ));
    };
    if name.is_empty() {
        return Err(format!("a {kind_name} without metadata.name"));
    }
    let namespace = match (kind.namespaced, object["metadata"]["namespace"].as_str()) {
        (true, Some(ns)) if !ns.is_empty() => Some(ns),
        (true, _) => return Err(format!("{kind_name} {name}: no metadata.namespace")),
        (false, _) => None,
    };
    let describe = match namespace {
        Some(ns) => format!("{kind_name} {ns}/{name}"),
        None => format!("{kind_name} {name}"),
    };
    Ok(Target { kind: *kind, name, namespace, describe, object })
}

/// What an API error says: the API server's message and its code.
fn api_error(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(r) if r.message.is_empty() => format!("{} ({})", r.reason, r.code),
        kube::Error::Api(r) => format!("{} ({} {})", r.message, r.code, r.reason),
        other => other.to_string(),
    }
}

/// `GET`, with 404 as `None` (whether the API server says NotFound or does not serve the path at all).
async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(kube::Error::Api(r)) if r.code == 404 => Ok(None),
        Err(e) => Err(e),
    }
}

/// Server-side applies `objects` in order, as `field_manager`, forcing conflicts (podmesh owns these fields).
/// Returns one line per object: "created …", "configured …" or "left alone: … (why)". Stops at the first error,
/// which names the object and says what the API server answered. An object of a kind not in the table (see the
/// module docs) is an error before any request.
pub async fn apply(client: Client, objects: &[Value], field_manager: &str) -> Result<Vec<String>, String> {
    let targets = objects.iter().map(target).collect::<Result<Vec<_>, _>>()?;
    let params = PatchParams::apply(field_manager).force();
    let mut lines = Vec::with_capacity(targets.len());
    for t in &targets {
        let resource = t.kind.resource();
        let api: Api<DynamicObject> = match t.namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let done = lines.len();
        let failed = |what: &str, e: &kube::Error| {
            let done = if done == 0 { String::new() } else { format!(" ({done} object(s) applied before it)") };
            format!("{}: {what}: {}{done}", t.describe, api_error(e))
        };
        let existing = get_opt(&api, t.name).await.map_err(|e| failed("reading it", &e))?;
        if let Some(existing) = &existing {
            if t.kind.kind == CRD && !managed_by_podmesh(existing) {
                lines.push(format!("left alone: {} (installed by someone else)", t.describe));
                continue;
            }
            if t.kind.kind == "Secret" {
                lines.push(format!("left alone: {} (exists: the running CA's keys are kept)", t.describe));
                continue;
            }
        }
        api.patch(t.name, &params, &Patch::Apply(t.object)).await.map_err(|e| failed("applying it", &e))?;
        let verb = if existing.is_some() { "configured" } else { "created" };
        lines.push(format!("{verb} {}", t.describe));
    }
    Ok(lines)
}

fn managed_by_podmesh(o: &DynamicObject) -> bool {
    o.metadata.labels.as_ref().and_then(|l| l.get(MANAGED_BY.0)).is_some_and(|v| v == MANAGED_BY.1)
}

/// The data of the Secret `namespace/name` (decoded), or `None` when there is no such Secret.
pub async fn existing_secret_data(
    client: Client,
    namespace: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let secret =
        get_opt(&api, name).await.map_err(|e| format!("Secret {namespace}/{name}: reading it: {}", api_error(&e)))?;
    Ok(secret.map(|s| s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect()))
}
