//! # podmesh-kube
//!
//! The control plane's Kubernetes API source: the cluster as the API server holds it, one version per batch of
//! changes.
//!
//! Where it sits: `model` → `compute` → `control` ← sources. The control plane (`podmesh-control`) takes versions
//! of the cluster from a [`Source`]; `control::FileSource` reads manifests from files, and [`KubeSource`] watches
//! the API server. It watches Namespaces, Services, EndpointSlices (discovery.k8s.io/v1), Pods, and Istio's
//! VirtualServices and DestinationRules (networking.istio.io/v1) and PeerAuthentications (security.istio.io/v1),
//! all as JSON ([`DynamicObject`]): the model reads them with its own types, exactly as it reads files.
//! Deployments and StatefulSets are not watched: the API's Pods are the truth, and expanding workloads again would
//! duplicate them. Each Pod's controller (its `ownerReferences`) names its workload instead.
//!
//! The first version is whole: `podmesh_model::load` of every object listed, each object a JSON document. After
//! that, each batch of watch events (those arriving within [`COALESCE`] of the first) makes a version of just the
//! objects it changed (`Change::Objects`: each loaded the same way, alone; one deleted is named and absent), which
//! the control plane applies to its index in place, so a pod becoming ready costs that pod, not the cluster. An
//! object that does not load is refused and keeps its last good version; the rest of its batch applies. The watches are kube-runtime's watchers:
//! they list, then watch from the list's resourceVersion, and list again after an error (a 410 Gone included,
//! with backoff); a re-list replaces the kind's whole set, so objects deleted while disconnected disappear. A
//! CRD that is not installed (404 on its list) is an empty kind, with a warning.
//!
//! Which objects are left out, because the model would take them for something they are not: Pods without an IP
//! yet (the model would allocate one), Pods that have ended (phase Succeeded or Failed: their IP may already be
//! another pod's), and `hostNetwork` Pods (they share the node's IP with each other, and are never meshed). A Pod
//! runs a sidecar when it has the container `podmesh-proxy` (injection adds it), whatever its annotations and
//! namespace label say: that is set on the model's Pod after loading, as its owner is, so a pod reads the same
//! loaded alone as in the whole cluster. Of a Pod's status only what the
//! model reads is kept (phase, IPs, the Ready condition), so the kubelet's status updates make no version;
//! `metadata.managedFields` and `metadata.resourceVersion` are dropped from every object.

pub mod apply;
pub mod review;
pub mod roots;

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use kube::{Api, Client};
use podmesh_control::{Change, Source, Version};
use podmesh_model::{Cluster, Kind as ModelKind, ObjectKey, ObjectRef, Owner, Source as ManifestSource, WorkloadKind};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Watch events arriving within this time of the first one make one version.
pub const COALESCE: Duration = Duration::from_millis(50);

/// How long [`KubeSource::connect`] waits for every kind's first list.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A kind podmesh reads (the watches) or writes (`install --apply`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kind {
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) plural: &'static str,
    /// Its objects live in namespaces.
    pub(crate) namespaced: bool,
    /// A custom resource, whose absence (404) is an empty kind rather than an error.
    pub(crate) crd: bool,
}

/// Every kind watched, in the order their objects are loaded.
const KINDS: [Kind; 7] = [
    Kind { group: "", version: "v1", kind: "Namespace", plural: "namespaces", namespaced: false, crd: false },
    Kind { group: "", version: "v1", kind: "Service", plural: "services", namespaced: true, crd: false },
    Kind {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        namespaced: true,
        crd: false,
    },
    Kind { group: "", version: "v1", kind: "Pod", plural: "pods", namespaced: true, crd: false },
    Kind {
        group: "networking.istio.io",
        version: "v1",
        kind: "VirtualService",
        plural: "virtualservices",
        namespaced: true,
        crd: true,
    },
    Kind {
        group: "networking.istio.io",
        version: "v1",
        kind: "DestinationRule",
        plural: "destinationrules",
        namespaced: true,
        crd: true,
    },
    Kind {
        group: "security.istio.io",
        version: "v1",
        kind: "PeerAuthentication",
        plural: "peerauthentications",
        namespaced: true,
        crd: true,
    },
];

impl Kind {
    pub(crate) fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    pub(crate) fn resource(&self) -> ApiResource {
        ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }
}

/// One event of one kind's watcher.
#[derive(Debug)]
struct Report {
    kind: usize,
    event: Result<watcher::Event<DynamicObject>, watcher::Error>,
}

/// One object as the model will read it.
#[derive(Debug, Clone, PartialEq)]
struct Stored {
    /// The object as a JSON document (without `metadata.managedFields` and `metadata.resourceVersion`), or
    /// `None` for an object left out (see the crate docs), kept so that its changes are still seen.
    text: Option<String>,
    /// A Pod's workload, from its controller.
    owner: Option<Owner>,
    /// A Pod runs the injected sidecar (see [`runs_sidecar`]).
    sidecar: bool,
}

/// What podmesh holds of one kind.
#[derive(Debug, Default)]
struct KindState {
    /// By `namespace/name` (`name` for Namespaces).
    objects: BTreeMap<String, Stored>,
    /// A list in progress (between the watcher's `Init` and `InitDone`): it replaces `objects` when it ends.
    listing: Option<BTreeMap<String, Stored>>,
    /// The first list has ended (or the CRD is not installed).
    listed: bool,
    /// The CRD is not installed: the last list answered 404.
    absent: bool,
    /// The last error of the watcher, until its next list or event.
    error: Option<String>,
}

/// The cluster as the Kubernetes API server holds it. See the crate docs.
#[derive(Debug)]
pub struct KubeSource {
    events: mpsc::Receiver<Report>,
    kinds: Vec<KindState>,
    /// Warnings not yet said in a version's cause (a CRD not installed).
    warnings: Vec<String>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for KubeSource {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl KubeSource {
    /// Starts the watches and waits (at most [`CONNECT_TIMEOUT`]) for every kind's first list: the first version
    /// (the cluster and where it came from), and the source that follows the watches for the next.
    pub async fn connect(client: Client) -> Result<(KubeSource, Cluster, String), String> {
        Self::connect_within(client, CONNECT_TIMEOUT).await
    }

    /// [`connect`](Self::connect), waiting at most `timeout` for the first lists.
    pub async fn connect_within(client: Client, timeout: Duration) -> Result<(KubeSource, Cluster, String), String> {
        let mut source = Self::start(client);
        let deadline = Instant::now() + timeout;
        while !source.kinds.iter().all(|k| k.listed) {
            match tokio::time::timeout_at(deadline, source.events.recv()).await {
                Ok(Some(report)) => {
                    source.apply(report);
                }
                Ok(None) => return Err("the Kubernetes API watches ended".to_string()),
                Err(_) => {
                    let waiting: Vec<String> = KINDS
                        .iter()
                        .zip(&source.kinds)
                        .filter(|(_, s)| !s.listed)
                        .map(|(k, s)| match &s.error {
                            Some(e) => format!("{}s ({e})", k.kind),
                            None => format!("{}s", k.kind),
                        })
                        .collect();
                    return Err(format!(
                        "the Kubernetes API did not list {} within {} s",
                        waiting.join(", "),
                        timeout.as_secs()
                    ));
                }
            }
        }
        let counts: Vec<String> =
            KINDS.iter().zip(&source.kinds).map(|(k, s)| format!("{} {}s", s.objects.len(), k.kind)).collect();
        let mut cause = format!("start: Kubernetes API ({})", counts.join(", "));
        if !source.warnings.is_empty() {
            cause = format!("{cause}; {}", std::mem::take(&mut source.warnings).join("; "));
        }
        let cluster = source.load().await?;
        Ok((source, cluster, cause))
    }

    /// Starts one watcher per kind, each sending its events to the source.
    fn start(client: Client) -> KubeSource {
        let (tx, events) = mpsc::channel(1024);
        let mut tasks = Vec::new();
        for (i, kind) in KINDS.iter().enumerate() {
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
            let tx = tx.clone();
            let task = tokio::spawn(async move {
                // Backoff between a failed list or watch and the next attempt (0.8 s doubling to 30 s, jittered).
                let mut stream = std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
                while let Some(event) = stream.next().await {
                    if tx.send(Report { kind: i, event }).await.is_err() {
                        break;
                    }
                }
            });
            tasks.push(task.abort_handle());
        }
        KubeSource { events, kinds: KINDS.iter().map(|_| KindState::default()).collect(), warnings: vec![], tasks }
    }

    /// Applies one watcher event; returns what changed ("Pod shop/web-1 edited").
    fn apply(&mut self, report: Report) -> Batch {
        let mut changes = Batch::default();
        let Some(kind) = KINDS.get(report.kind) else { return changes };
        let Some(state) = self.kinds.get_mut(report.kind) else { return changes };
        let i = report.kind;
        match report.event {
            Ok(watcher::Event::Init) => state.listing = Some(BTreeMap::new()),
            Ok(watcher::Event::InitApply(obj)) => {
                let (key, stored) = stored(kind, &obj);
                state.listing.get_or_insert_default().insert(key, stored);
            }
            Ok(watcher::Event::InitDone) => {
                let listed = state.listing.take().unwrap_or_default();
                for (key, new) in &listed {
                    changes.record(i, key, state.objects.get(key), Some(new));
                }
                for (key, old) in state.objects.iter().filter(|(k, _)| !listed.contains_key(*k)) {
                    changes.record(i, key, Some(old), None);
                }
                if state.listed && !changes.lines.is_empty() {
                    changes.lines.insert(0, format!("re-list of {}s", kind.kind));
                }
                state.objects = listed;
                state.listed = true;
                state.absent = false;
                state.error = None;
            }
            Ok(watcher::Event::Apply(obj)) => {
                let (key, new) = stored(kind, &obj);
                let old = state.objects.insert(key.clone(), new.clone());
                changes.record(i, &key, old.as_ref(), Some(&new));
                state.error = None;
            }
            Ok(watcher::Event::Delete(obj)) => {
                let (key, _) = stored(kind, &obj);
                let old = state.objects.remove(&key);
                changes.record(i, &key, old.as_ref(), None);
                state.error = None;
            }
            Err(e) if kind.crd && not_found(&e) => {
                // Not installed: an empty kind, said once (the watcher keeps trying, with backoff, and lists the
                // objects once the CRD is installed).
                state.listing = None;
                if !state.absent {
                    let warning = format!(
                        "{}s ({}) are not served by the API server (CRD not installed?): none",
                        kind.kind,
                        kind.api_version()
                    );
                    eprintln!("podmesh kube: warning: {warning}");
                    self.warnings.push(warning);
                    for (key, old) in &state.objects {
                        changes.record(i, key, Some(old), None);
                    }
                    state.objects.clear();
                    state.absent = true;
                }
                state.listed = true;
            }
            Err(e) => {
                // The watcher lists again (after a 410 Gone, or any failed list) or watches again, after backoff.
                eprintln!("podmesh kube: watching {}s: {e}; retrying", kind.kind);
                state.error = Some(e.to_string());
            }
        }
        changes
    }

    /// The cluster of every object held (see [`KubeSource::load_objects`]).
    async fn load(&self) -> Result<Cluster, String> {
        let all =
            KINDS.iter().enumerate().zip(&self.kinds).flat_map(|((i, _), s)| s.objects.keys().map(move |k| (i, k)));
        let all: Vec<(usize, String)> = all.map(|(i, k)| (i, k.clone())).collect();
        load_documents(self.documents(&all)).await
    }

    /// The documents of `objects` (those held and not left out) and what is set on their Pods after loading.
    fn documents(&self, objects: &[(usize, String)]) -> Documents {
        let mut docs = Documents::default();
        for (i, key) in objects {
            let (Some(kind), Some(state)) = (KINDS.get(*i), self.kinds.get(*i)) else { continue };
            let Some(stored) = state.objects.get(key) else { continue };
            let Some(text) = &stored.text else { continue };
            docs.sources.push(ManifestSource::Text { name: format!("{} {key}.json", kind.kind), text: text.clone() });
            if KINDS.get(*i).is_some_and(|k| k.kind == "Pod") {
                docs.pods.push((key.clone(), stored.owner.clone(), stored.sidecar));
            }
        }
        docs
    }

    /// The version of a batch: the objects it changed, as they are now (one deleted, or left out, is named but
    /// absent). An object that does not load is left as the control plane has it (its last good version), and
    /// the cause says why; the rest of the batch applies.
    async fn objects_version(&self, batch: Batch) -> Result<(Cluster, Vec<ObjectRef>, Vec<String>), String> {
        let mut objects = batch.objects;
        objects.sort();
        objects.dedup();
        if let Ok(cluster) = load_documents(self.documents(&objects)).await {
            return Ok((cluster, refs(&objects), Vec::new()));
        }
        // Some object does not load: find which, one by one, and leave them out.
        let (mut good, mut refused) = (Vec::new(), Vec::new());
        for object in objects {
            match load_documents(self.documents(std::slice::from_ref(&object))).await {
                Ok(_) => good.push(object),
                Err(e) => refused.push(format!(
                    "{} {} refused (its last good version stays): {e}",
                    kind_name(object.0),
                    object.1
                )),
            }
        }
        let cluster = load_documents(self.documents(&good)).await?;
        Ok((cluster, refs(&good), refused))
    }
}

/// What a batch of watch events changed: a line for each change, and the objects, by kind (an index into
/// [`KINDS`]) and key.
#[derive(Debug, Default)]
struct Batch {
    lines: Vec<String>,
    objects: Vec<(usize, String)>,
}

impl Batch {
    /// Records a change of the object `key` of kind `KINDS[i]` from `old` to `new`, if it is one to the model.
    fn record(&mut self, i: usize, key: &str, old: Option<&Stored>, new: Option<&Stored>) {
        let Some(kind) = KINDS.get(i) else { return };
        if let Some(line) = change(kind, key, old, new) {
            self.lines.push(line);
            self.objects.push((i, key.to_string()));
        }
    }

    fn extend(&mut self, other: Batch) {
        self.lines.extend(other.lines);
        self.objects.extend(other.objects);
    }
}

/// Objects as documents for the model, with what is set on each Pod after loading: its owner, and whether it
/// runs a sidecar.
#[derive(Debug, Default)]
struct Documents {
    sources: Vec<ManifestSource>,
    pods: Vec<(String, Option<Owner>, bool)>,
}

/// `podmesh_model::load` of the documents (off the async threads), each Pod's workload then set from its controller.
async fn load_documents(docs: Documents) -> Result<Cluster, String> {
    let loaded = tokio::task::spawn_blocking(move || {
        let mut cluster = podmesh_model::load(&docs.sources).map_err(|e| e.to_string())?.cluster;
        set_pods(&mut cluster, docs.pods);
        Ok(cluster)
    })
    .await;
    loaded.map_err(|e| format!("loading failed: {e}"))?
}

fn kind_name(i: usize) -> &'static str {
    KINDS.get(i).map_or("object", |k| k.kind)
}

/// The model's names of objects.
fn refs(objects: &[(usize, String)]) -> Vec<ObjectRef> {
    objects
        .iter()
        .filter_map(|(i, key)| {
            let kind = match kind_name(*i) {
                "Namespace" => {
                    return Some(ObjectRef::new(ModelKind::Namespace, ObjectKey::new(key.as_str(), key.as_str())));
                }
                "Service" => ModelKind::Service,
                "EndpointSlice" => ModelKind::EndpointSlice,
                "Pod" => ModelKind::Pod,
                "VirtualService" => ModelKind::VirtualService,
                "DestinationRule" => ModelKind::DestinationRule,
                "PeerAuthentication" => ModelKind::PeerAuthentication,
                _ => return None,
            };
            let (namespace, name) = key.split_once('/')?;
            Some(ObjectRef::new(kind, ObjectKey::new(namespace, name)))
        })
        .collect()
}

/// A client of the cluster: with the kubeconfig (`$KUBECONFIG`, else `~/.kube/config`) in `context` or its
/// current one when there is a kubeconfig, else the in-cluster service account.
pub async fn client(context: Option<&str>) -> Result<Client, String> {
    match kube::config::Kubeconfig::read() {
        Ok(kubeconfig) => client_from(kubeconfig, context).await,
        Err(e) if context.is_some() => Err(format!("kubeconfig (needed for the context): {e}")),
        Err(_) => {
            Client::try_default().await.map_err(|e| format!("Kubernetes client (no kubeconfig, in-cluster): {e}"))
        }
    }
}

/// A client of the cluster of a kubeconfig already read, in `context` or its current one.
pub async fn client_from(kubeconfig: kube::config::Kubeconfig, context: Option<&str>) -> Result<Client, String> {
    let options = kube::config::KubeConfigOptions { context: context.map(str::to_string), ..Default::default() };
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &options).await.map_err(|e| format!("kubeconfig: {e}"))?;
    Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

impl Source for KubeSource {
    async fn next(&mut self) -> Option<Result<Version, String>> {
        loop {
            let first = self.events.recv().await?;
            let mut batch = self.apply(first);
            let deadline = Instant::now() + COALESCE;
            while let Ok(Some(report)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
                batch.extend(self.apply(report));
            }
            if batch.lines.is_empty() {
                continue;
            }
            let mut cause = summary(&batch.lines);
            if !self.warnings.is_empty() {
                cause = format!("{cause}; {}", std::mem::take(&mut self.warnings).join("; "));
            }
            return Some(match self.objects_version(batch).await {
                // Nothing of the batch loads: the version cannot be read, as a whole one that does not load.
                Ok((_, changed, refused)) if changed.is_empty() && !refused.is_empty() => {
                    Err(format!("after {cause}: {}", refused.join("; ")))
                }
                Ok((objects, changed, refused)) => {
                    for r in &refused {
                        eprintln!("podmesh kube: {r}");
                    }
                    if !refused.is_empty() {
                        cause = format!("{cause}; {}", refused.join("; "));
                    }
                    Ok(Version { change: Change::Objects { objects, changed }, cause })
                }
                Err(e) => Err(format!("after {cause}: {e}")),
            });
        }
    }
}

/// Whether a watcher error is the API server's 404: the kind is not served.
fn not_found(e: &watcher::Error) -> bool {
    match e {
        watcher::Error::InitialListFailed(kube::Error::Api(r))
        | watcher::Error::WatchStartFailed(kube::Error::Api(r))
        | watcher::Error::WatchFailed(kube::Error::Api(r))
        | watcher::Error::WatchError(r) => r.code == 404,
        _ => false,
    }
}

/// What a change of one object is to the model ("Pod shop/web-1 edited"), if anything: an object left out is as
/// good as absent.
fn change(kind: &Kind, key: &str, old: Option<&Stored>, new: Option<&Stored>) -> Option<String> {
    let what = match (old.filter(|s| s.text.is_some()), new.filter(|s| s.text.is_some())) {
        (None, None) => return None,
        (None, Some(_)) => "added",
        (Some(_), None) => "deleted",
        (Some(o), Some(n)) if o != n => "edited",
        (Some(_), Some(_)) => return None,
    };
    Some(format!("{} {key} {what}", kind.kind))
}

/// The changes of a batch, at most ten named.
fn summary(changes: &[String]) -> String {
    const NAMED: usize = 10;
    let mut out = changes.iter().take(NAMED).cloned().collect::<Vec<_>>().join("; ");
    if changes.len() > NAMED {
        out.push_str(&format!("; and {} more", changes.len() - NAMED));
    }
    out
}

/// An object's key and what the model reads of it.
fn stored(kind: &Kind, obj: &DynamicObject) -> (String, Stored) {
    let name = obj.metadata.name.clone().unwrap_or_default();
    let key = match &obj.metadata.namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    };
    let Ok(mut value) = serde_json::to_value(obj) else {
        return (key, Stored { text: None, owner: None, sidecar: false });
    };
    (key, object(kind, &mut value))
}

/// The document the model reads for one object of `kind` (`value` is the object as the API serves it).
fn object(kind: &Kind, value: &mut Value) -> Stored {
    if let Some(map) = value.as_object_mut() {
        // List items carry no apiVersion and kind.
        map.insert("apiVersion".into(), Value::String(kind.api_version()));
        map.insert("kind".into(), Value::String(kind.kind.to_string()));
        if let Some(meta) = map.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
            meta.remove("resourceVersion");
        }
    }
    let (mut owner, mut sidecar) = (None, false);
    if kind.kind == "Pod" {
        if left_out(value) {
            return Stored { text: None, owner: None, sidecar: false };
        }
        owner = pod_owner(value);
        sidecar = runs_sidecar(value);
        slim_pod_status(value);
    }
    Stored { text: Some(value.to_string()), owner, sidecar }
}

/// Keeps of a Pod's status what the model reads (phase, IPs, the Ready condition's status): the kubelet updates
/// the rest (container states, restart counts, probe times) all the time, and none of it changes the cluster.
fn slim_pod_status(pod: &mut Value) {
    let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) else { return };
    let ready: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
        .map(|c| serde_json::json!({"type": "Ready", "status": c.get("status").cloned().unwrap_or(Value::Null)}))
        .collect();
    status.retain(|k, _| matches!(k.as_str(), "phase" | "podIP" | "podIPs" | "hostIP" | "hostIPs"));
    status.insert("conditions".into(), Value::Array(ready));
}

/// Whether a Pod runs the sidecar. In a cluster the truth is the pod itself: injection (the webhook, `podmesh
/// inject`) adds the container `podmesh-proxy`, and a pod without one has no sidecar, whatever its annotations
/// and its namespace's label say. It is set on the model's Pod after loading (the model would go by those), so a
/// pod reads the same loaded alone (a watch event) as in the whole cluster.
fn runs_sidecar(pod: &Value) -> bool {
    ["/spec/containers", "/spec/initContainers"].iter().any(|list| {
        pod.pointer(list).and_then(Value::as_array).is_some_and(|cs| {
            cs.iter().any(|c| c.get("name").and_then(Value::as_str) == Some(podmesh_inject::PROXY_NAME))
        })
    })
}

/// A Pod the model must not see: no IP yet, ended, or on the host's network.
fn left_out(pod: &Value) -> bool {
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str).unwrap_or_default();
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    let host_network = pod.pointer("/spec/hostNetwork").and_then(Value::as_bool).unwrap_or(false);
    ip.is_empty() || phase == "Succeeded" || phase == "Failed" || host_network
}

/// A Pod's workload, from its controller: a StatefulSet, or the Deployment of a ReplicaSet (the ReplicaSet's name
/// less `-<pod-template-hash>`). `None` for a Pod without one (or of another controller): the model then names
/// the Pod itself.
fn pod_owner(pod: &Value) -> Option<Owner> {
    let refs = pod.pointer("/metadata/ownerReferences")?.as_array()?;
    let controller = refs.iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))?;
    let name = controller.get("name")?.as_str()?;
    match controller.get("kind")?.as_str()? {
        "StatefulSet" => Some(Owner { kind: WorkloadKind::StatefulSet, name: name.to_string() }),
        "ReplicaSet" => {
            let hash = pod.pointer("/metadata/labels/pod-template-hash")?.as_str()?;
            let deployment = name.strip_suffix(hash)?.strip_suffix('-')?;
            (!deployment.is_empty()).then(|| Owner { kind: WorkloadKind::Deployment, name: deployment.to_string() })
        }
        _ => None,
    }
}

/// Sets each Pod's owner (the model reads no `ownerReferences`) and whether it runs a sidecar.
fn set_pods(cluster: &mut Cluster, pods: Vec<(String, Option<Owner>, bool)>) {
    for (key, owner, sidecar) in pods {
        let Some((namespace, name)) = key.split_once('/') else { continue };
        if let Some(pod) = cluster.pods.get_mut(&ObjectKey::new(namespace, name)) {
            pod.owner = owner;
            pod.sidecar = sidecar;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn pod_kind() -> &'static Kind {
        KINDS.iter().find(|k| k.kind == "Pod").unwrap()
    }

    #[test]
    fn pods_the_model_must_not_see_are_left_out() {
        let base = serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "managedFields": [{}], "resourceVersion": "7"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": "10.0.0.1", "phase": "Running"}
        });
        let s = object(pod_kind(), &mut base.clone());
        let text = s.text.unwrap();
        assert!(text.contains("\"kind\":\"Pod\"") && text.contains("\"apiVersion\":\"v1\""));
        assert!(!text.contains("managedFields") && !text.contains("resourceVersion"));
        for (pointer, v) in [
            ("/status/podIP", serde_json::json!("")),
            ("/status/phase", serde_json::json!("Succeeded")),
            ("/status/phase", serde_json::json!("Failed")),
        ] {
            let mut p = base.clone();
            *p.pointer_mut(pointer).unwrap() = v;
            assert_eq!(object(pod_kind(), &mut p).text, None, "{pointer}");
        }
        let mut p = base.clone();
        p["spec"]["hostNetwork"] = serde_json::json!(true);
        assert_eq!(object(pod_kind(), &mut p).text, None);
    }

    #[test]
    fn a_pod_has_a_sidecar_exactly_when_it_runs_the_injected_one() {
        let pod = |spec: Value, annotation: &str| {
            let mut p = serde_json::json!({"metadata": {"name": "p", "namespace": "n",
                "annotations": {"sidecar.podmesh.io/inject": annotation}}, "spec": spec,
                "status": {"podIP": "10.0.0.1", "phase": "Running"}});
            object(pod_kind(), &mut p).sidecar
        };
        let app = serde_json::json!({"name": "app"});
        let proxy = serde_json::json!({"name": "podmesh-proxy", "restartPolicy": "Always"});
        assert!(!pod(serde_json::json!({"containers": [app]}), "true"));
        assert!(pod(serde_json::json!({"containers": [app], "initContainers": [proxy]}), "false"));
        assert!(pod(serde_json::json!({"containers": [proxy, app]}), "false"));
    }

    #[test]
    fn only_what_the_model_reads_of_a_pod_status_is_kept() {
        let pod = |restarts: u32, ready: &str| {
            let mut p = serde_json::json!({
                "metadata": {"name": "p", "namespace": "n"},
                "status": {"podIP": "10.0.0.1", "phase": "Running", "hostIP": "172.18.0.2",
                    "conditions": [
                        {"type": "PodScheduled", "status": "True"},
                        {"type": "Ready", "status": ready, "lastTransitionTime": format!("t{restarts}")}],
                    "containerStatuses": [{"name": "c", "restartCount": restarts}]}
            });
            object(pod_kind(), &mut p)
        };
        let text = pod(0, "True").text.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["status"],
            serde_json::json!({"podIP": "10.0.0.1", "phase": "Running", "hostIP": "172.18.0.2",
                "conditions": [{"type": "Ready", "status": "True"}]})
        );
        let kind = pod_kind();
        assert_eq!(change(kind, "n/p", Some(&pod(0, "True")), Some(&pod(3, "True"))), None);
        assert_eq!(change(kind, "n/p", Some(&pod(0, "True")), Some(&pod(0, "False"))).unwrap(), "Pod n/p edited");
        let pending = Stored { text: None, owner: None, sidecar: false };
        assert_eq!(change(kind, "n/p", Some(&pending), None), None);
        assert_eq!(change(kind, "n/p", None, Some(&pending)), None);
        assert_eq!(change(kind, "n/p", Some(&pending), Some(&pod(0, "True"))).unwrap(), "Pod n/p added");
        assert_eq!(change(kind, "n/p", Some(&pod(0, "True")), Some(&pending)).unwrap(), "Pod n/p deleted");
    }

    #[test]
    fn owners_come_from_the_controller() {
        let pod = |kind: &str, name: &str, hash: Option<&str>| {
            let mut p = serde_json::json!({"metadata": {"name": "x", "ownerReferences": [
                {"kind": "Node", "name": "n"},
                {"kind": kind, "name": name, "controller": true}
            ]}});
            if let Some(h) = hash {
                p["metadata"]["labels"] = serde_json::json!({"pod-template-hash": h});
            }
            pod_owner(&p)
        };
        assert_eq!(
            pod("ReplicaSet", "web-abc12", Some("abc12")),
            Some(Owner { kind: WorkloadKind::Deployment, name: "web".into() })
        );
        assert_eq!(pod("ReplicaSet", "web", None), None);
        assert_eq!(pod("ReplicaSet", "web-zzz", Some("abc12")), None);
        assert_eq!(pod("StatefulSet", "db", None), Some(Owner { kind: WorkloadKind::StatefulSet, name: "db".into() }));
        assert_eq!(pod("DaemonSet", "agent", None), None);
    }
}
