//! `podmesh install`: the control plane's Kubernetes manifests — Istio's CRDs podmesh reads, the namespace, the
//! control plane's least-privilege RBAC, its CA as a Secret, its Deployment and Service, and the sidecar injector's
//! MutatingWebhookConfiguration — printed (multi-document YAML, or `-o json`: one `v1 List`), or server-side
//! applied to a cluster with `--apply` (the `kube` feature; `podmesh_kube::apply`).
//!
//! The CA comes from a local state directory (`--state`, created on first run by `Authority::open`, reused after),
//! so that printing twice prints the same manifests and the webhook's `caBundle` is the root the control plane
//! serves with. With `--apply`, a CA Secret already in the cluster wins: the running CA is kept, and the webhook
//! trusts its root.
//!
//! [`objects`] builds every object from plain data (no I/O), for the printer, `--apply` and the tests alike.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, ValueEnum};
use podmesh_control::Authority;
use serde_json::{Value, json};

/// The namespace the control plane runs in (its identity, `control_identity`, names it too).
pub const NAMESPACE: &str = "podmesh-system";
/// The control plane's name: its ServiceAccount, ClusterRole(Binding), Deployment and Service.
pub const CONTROL: &str = "podmesh-control";
/// The Secret that holds the CA state directory's files.
pub const CA_SECRET: &str = "podmesh-ca";
/// Where the control plane's container finds the CA Secret's files (its `--state`).
const CA_MOUNT: &str = "/var/run/podmesh/ca";

/// The trust domain `control --kube` serves (the default MeshConfig's; MeshConfig is not read from the API yet).
const TRUST_DOMAIN: &str = "cluster.local";
/// The field manager of `--apply`'s server-side apply.
#[cfg(feature = "kube")]
const FIELD_MANAGER: &str = "podmesh-install";
/// How long `--apply` may take in all.
#[cfg(feature = "kube")]
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// The CA's state directory: root.pem, root-key.pem, token-key (created on first run, reused after). Its files
    /// become the Secret podmesh-ca; keep the directory as you would keep the CA's key.
    #[arg(long, value_name = "DIR", default_value = ".podmesh/cluster")]
    state: PathBuf,
    /// The podmesh image the control plane runs.
    #[arg(long, value_name = "IMAGE", default_value_t = podmesh_inject::Config::default().image)]
    image: String,
    /// Leave out the Istio CRDs (VirtualService, DestinationRule, PeerAuthentication): Istio's are installed.
    #[arg(long)]
    no_crds: bool,
    /// yaml: one document per object; json: one `v1 List` of them.
    #[arg(short = 'o', long, value_enum, default_value = "yaml", conflicts_with = "apply")]
    output: Output,
    /// Server-side apply the objects to the cluster (kubeconfig, else in-cluster) instead of printing them. A CA
    /// Secret already there is kept, and so are CRDs podmesh did not install.
    #[arg(long)]
    apply: bool,
    /// The kubeconfig context of --apply (default: the current one).
    #[arg(long, value_name = "CTX", requires = "apply")]
    context: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Yaml,
    Json,
}

/// What the objects depend on, besides the CA.
#[derive(Debug, Clone)]
pub struct Options {
    /// The control plane's image.
    pub image: String,
    /// Include the Istio CRDs.
    pub crds: bool,
}

/// The files of a CA state directory, as the Secret holds them.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFiles {
    /// `root.pem`: the signing root (the webhook's `caBundle`).
    pub root: Vec<u8>,
    /// `root-key.pem`.
    pub root_key: Vec<u8>,
    /// `token-key`: the secret bootstrap tokens are derived from.
    pub token_key: Vec<u8>,
    /// `trusted-roots.pem`, when the directory has one: roots trusted alongside (the root-rotation path).
    pub trusted_roots: Option<Vec<u8>>,
}

impl std::fmt::Debug for CaFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No key material in logs.
        f.debug_struct("CaFiles").field("root", &String::from_utf8_lossy(&self.root)).finish_non_exhaustive()
    }
}

const ROOT: &str = "root.pem";
const ROOT_KEY: &str = "root-key.pem";
const TOKEN_KEY: &str = "token-key";
const TRUSTED_ROOTS: &str = "trusted-roots.pem";

impl CaFiles {
    /// The files of `dir` (after `Authority::open` made sure they are there and valid).
    pub fn read(dir: &Path) -> Result<CaFiles> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
        };
        let trusted = dir.join(TRUSTED_ROOTS);
        Ok(CaFiles {
            root: read(ROOT)?,
            root_key: read(ROOT_KEY)?,
            token_key: read(TOKEN_KEY)?,
            trusted_roots: if trusted.exists() { Some(read(TRUSTED_ROOTS)?) } else { None },
        })
    }

    /// The files of the CA Secret's data.
    #[cfg(feature = "kube")]
    fn from_secret(data: &std::collections::BTreeMap<String, Vec<u8>>) -> Result<CaFiles> {
        let get = |name: &str| {
            data.get(name).cloned().with_context(|| {
                format!(
                    "the cluster's Secret {NAMESPACE}/{CA_SECRET} has no {name}: the running CA is incomplete; \
                     fix or delete that Secret, then install again"
                )
            })
        };
        Ok(CaFiles {
            root: get(ROOT)?,
            root_key: get(ROOT_KEY)?,
            token_key: get(TOKEN_KEY)?,
            trusted_roots: data.get(TRUSTED_ROOTS).cloned(),
        })
    }

    /// The Secret's `data`: each file's name and its contents in base64.
    fn data(&self) -> serde_json::Map<String, Value> {
        let files = [
            (ROOT, Some(&self.root)),
            (ROOT_KEY, Some(&self.root_key)),
            (TOKEN_KEY, Some(&self.token_key)),
            (TRUSTED_ROOTS, self.trusted_roots.as_ref()),
        ];
        files
            .into_iter()
            .filter_map(|(name, bytes)| Some((name.to_string(), Value::String(STANDARD.encode(bytes?)))))
            .collect()
    }
}

pub fn install(a: InstallArgs) -> Result<ExitCode> {
    let created = !a.state.join(ROOT).exists();
    // Creates the root and the token key on first run, checks them after; the lifetime does not matter here.
    // The trust domain is the one `control --kube` serves (MeshConfig is not read from the API yet).
    Authority::open(&a.state, TRUST_DOMAIN, Duration::from_secs(24 * 3600))?;
    let local = CaFiles::read(&a.state)?;
    if created {
        eprintln!("podmesh install: created a CA for {TRUST_DOMAIN} in {}", a.state.display());
    }
    let opts = Options { image: a.image.clone(), crds: !a.no_crds };
    if a.apply {
        return apply(&a, &opts, local);
    }
    let objects = objects(&opts, &local);
    match a.output {
        Output::Yaml => {
            let mut out = String::new();
            for o in &objects {
                out.push_str("---\n");
                out.push_str(&podmesh_model::yaml::to_string(o));
            }
            print!("{out}");
        }
        Output::Json => {
            let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "kube")]
fn apply(a: &InstallArgs, opts: &Options, local: CaFiles) -> Result<ExitCode> {
    use anyhow::anyhow;
    use podmesh_kube::apply as kube_apply;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let state = a.state.display().to_string();
    let work = async move {
        let client = podmesh_kube::client(a.context.as_deref()).await.map_err(|e| anyhow!(e))?;
        let running =
            kube_apply::existing_secret_data(client.clone(), NAMESPACE, CA_SECRET).await.map_err(|e| anyhow!(e))?;
        let ca = match running {
            None => local,
            Some(data) => {
                let running = CaFiles::from_secret(&data)?;
                if running.root != local.root {
                    eprintln!(
                        "note: the cluster's Secret {NAMESPACE}/{CA_SECRET} holds another CA than {state}; the \
                         running CA is kept, and the webhook trusts its root"
                    );
                }
                running
            }
        };
        let lines = kube_apply::apply(client, &objects(opts, &ca), FIELD_MANAGER).await.map_err(|e| anyhow!(e))?;
        for line in lines {
            println!("{line}");
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    };
    rt.block_on(async {
        tokio::time::timeout(APPLY_TIMEOUT, work)
            .await
            .map_err(|_| anyhow!("install --apply did not finish within {} s", APPLY_TIMEOUT.as_secs()))?
    })
}

#[cfg(not(feature = "kube"))]
fn apply(a: &InstallArgs, _opts: &Options, _local: CaFiles) -> Result<ExitCode> {
    let _ = &a.context;
    anyhow::bail!(
        "this podmesh was built without the `kube` feature: `install --apply` cannot reach a cluster; print the \
         manifests (without --apply) and apply them with kubectl"
    )
}

/// The labels every object carries.
fn labels() -> Value {
    json!({"app.kubernetes.io/managed-by": "podmesh", "app.kubernetes.io/name": "podmesh"})
}

fn metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut m = json!({"name": name, "labels": labels()});
    if let Some(ns) = namespace {
        m["namespace"] = json!(ns);
    }
    m
}

/// Every object `install` makes, in the order they are applied: the CRDs (unless left out), the namespace, RBAC,
/// the CA Secret, the Deployment, the Service and the webhook (last: it fails pod creation until the control
/// plane serves it, so it comes after what serves it).
pub fn objects(opts: &Options, ca: &CaFiles) -> Vec<Value> {
    let mut out = Vec::new();
    if opts.crds {
        out.push(crd("networking.istio.io", "VirtualService", "virtualservices", "vs", &["v1", "v1beta1", "v1alpha3"]));
        out.push(crd(
            "networking.istio.io",
            "DestinationRule",
            "destinationrules",
            "dr",
            &["v1", "v1beta1", "v1alpha3"],
        ));
        // security.istio.io has no v1alpha3: Istio serves PeerAuthentication as v1 and v1beta1 only.
        out.push(crd("security.istio.io", "PeerAuthentication", "peerauthentications", "pa", &["v1", "v1beta1"]));
    }
    out.push(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata(NAMESPACE, None)}));
    out.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(CONTROL, Some(NAMESPACE))}));
    out.push(cluster_role());
    out.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(CONTROL, None),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROL},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROL, "namespace": NAMESPACE}],
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(CA_SECRET, Some(NAMESPACE)),
        "type": "Opaque",
        "data": ca.data(),
    }));
    out.push(deployment(&opts.image));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(CONTROL, Some(NAMESPACE)),
        "spec": {
            "selector": {"app": CONTROL},
            "ports": [
                {"name": "grpc-xds", "port": 15012, "targetPort": 15012},
                {"name": "http-monitoring", "port": 15014, "targetPort": 15014},
                {"name": "https-webhook", "port": 443, "targetPort": 15017},
            ],
        },
    }));
    out.push(webhook(&ca.root));
    out
}

/// One of Istio's CRDs, as podmesh needs it: every version Istio serves (the first the storage one), with a
/// schema that keeps every field (podmesh's model validates what it reads).
fn crd(group: &str, kind: &str, plural: &str, short: &str, versions: &[&str]) -> Value {
    let category = format!("{}-istio-io", group.split('.').next().unwrap_or_default());
    let versions: Vec<Value> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v,
                "served": true,
                "storage": i == 0,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata(&format!("{plural}.{group}"), None),
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_ascii_lowercase(),
                "shortNames": [short],
                "categories": ["istio-io", category],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    })
}

/// What the control plane reads and writes, and nothing else: it watches the objects the model reads, reviews
/// bootstrap tokens (TokenReview), and server-side applies one ConfigMap per namespace (the mesh's root
/// certificate, `podmesh-root`). RBAC cannot limit `create` by name, so `create` is on every ConfigMap; reading
/// and changing are on that one name only. No Secrets: the CA comes from the mounted Secret.
fn cluster_role() -> Value {
    let watch = json!(["get", "list", "watch"]);
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(CONTROL, None),
        "rules": [
            {"apiGroups": [""], "resources": ["namespaces", "services", "pods"], "verbs": watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch},
            {
                "apiGroups": ["networking.istio.io"],
                "resources": ["virtualservices", "destinationrules"],
                "verbs": watch,
            },
            {"apiGroups": ["security.istio.io"], "resources": ["peerauthentications"], "verbs": watch},
            {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "resourceNames": ["podmesh-root"],
                "verbs": ["get", "patch"],
            },
        ],
    })
}

fn deployment(image: &str) -> Value {
    let mut pod_labels = labels();
    pod_labels["app"] = json!(CONTROL);
    let args = [
        "control",
        "--kube",
        "--state",
        CA_MOUNT,
        "--listen",
        "0.0.0.0:15012",
        "--monitoring",
        "0.0.0.0:15014",
        "--webhook",
        "0.0.0.0:15017",
        "--proxy-image",
        image,
    ];
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(CONTROL, Some(NAMESPACE)),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": CONTROL}},
            "template": {
                "metadata": {
                    "labels": pod_labels,
                    // The control plane is not meshed: sidecars get their config and certificates from it.
                    "annotations": {"sidecar.istio.io/inject": "false"},
                },
                "spec": {
                    "serviceAccountName": CONTROL,
                    "securityContext": {"runAsNonRoot": true, "runAsUser": 1337, "runAsGroup": 1337, "fsGroup": 1337},
                    "containers": [{
                        "name": "control",
                        "image": image,
                        "args": args,
                        "ports": [
                            {"name": "grpc-xds", "containerPort": 15012},
                            {"name": "http-monitoring", "containerPort": 15014},
                            {"name": "https-webhook", "containerPort": 15017},
                        ],
                        "readinessProbe": {"httpGet": {"path": "/ready", "port": 15014}, "periodSeconds": 2},
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "ca", "mountPath": CA_MOUNT, "readOnly": true}],
                    }],
                    // 0440: the keys readable by the control plane's group (fsGroup) only.
                    "volumes": [{"name": "ca", "secret": {"secretName": CA_SECRET, "defaultMode": 0o440}}],
                },
            },
        },
    })
}

/// The sidecar injector: pods created in namespaces labelled `podmesh.io/inject: enabled` (the label `podmesh up`
/// reads too), except those labelled `sidecar.istio.io/inject: "false"`, are sent to the control plane's
/// `/inject` (which leaves pods annotated out as they are), whose serving certificate the CA's root signs.
fn webhook(root: &[u8]) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": metadata("podmesh-sidecar-injector", None),
        "webhooks": [{
            "name": "sidecar-injector.podmesh.io",
            "clientConfig": {
                "service": {"name": CONTROL, "namespace": NAMESPACE, "path": "/inject", "port": 443},
                "caBundle": STANDARD.encode(root),
            },
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "timeoutSeconds": 10,
            "reinvocationPolicy": "Never",
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "namespaceSelector": {"matchLabels": {podmesh_model::NAMESPACE_INJECT_LABEL: "enabled"}},
            "objectSelector": {
                "matchExpressions": [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}],
            },
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trusted_roots_file_travels_in_the_secret_too() {
        let ca =
            CaFiles { root: b"r".to_vec(), root_key: b"k".to_vec(), token_key: b"t".to_vec(), trusted_roots: None };
        let data = ca.data();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["root-key.pem", "root.pem", "token-key"]);
        let ca = CaFiles { trusted_roots: Some(b"old".to_vec()), ..ca };
        assert_eq!(ca.data()[TRUSTED_ROOTS], "b2xk");
    }
}
