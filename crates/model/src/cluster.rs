//! The validated snapshot: every object podmesh reads, typed, with defaults applied and addresses assigned.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::diag::Origin;
use crate::keys::{Kind, ObjectKey, ObjectRef};
use crate::mesh::MeshConfig;
use crate::net::{ServicePort, TargetPort};

pub type Labels = BTreeMap<String, String>;

/// Moves `key`'s value (or its absence) from `from` into `to`.
fn move_object<K: Ord + Clone, V>(to: &mut BTreeMap<K, V>, from: &mut BTreeMap<K, V>, key: &K) {
    match from.remove(key) {
        Some(v) => {
            to.insert(key.clone(), v);
        }
        None => {
            to.remove(key);
        }
    }
}

/// Appends the keys whose values differ between `old` and `new` (present in one only, or unequal), in key order.
fn changed<K: Ord, V: PartialEq>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
    reference: impl Fn(&K) -> ObjectRef,
    out: &mut Vec<ObjectRef>,
) {
    use std::cmp::Ordering;
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some((ka, _)), Some((kb, _))) => ka.cmp(kb),
        };
        match order {
            // Only in `old`: deleted.
            Ordering::Less => out.extend(a.next().map(|(k, _)| reference(k))),
            // Only in `new`: added.
            Ordering::Greater => out.extend(b.next().map(|(k, _)| reference(k))),
            Ordering::Equal => {
                if let (Some((k, va)), Some((_, vb))) = (a.next(), b.next())
                    && va != vb
                {
                    out.push(reference(k));
                }
            }
        }
    }
}

/// True when every `key: value` of `selector` is among `labels` (Kubernetes' matchLabels). An empty selector
/// matches everything, as in Kubernetes.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Everything podmesh knows about a cluster at one moment. Maps are keyed by `namespace/name`, so iteration order
/// — and therefore everything computed from a `Cluster` — does not depend on the order manifests were loaded in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cluster {
    pub mesh: MeshConfig,
    pub namespaces: BTreeMap<String, Namespace>,
    pub services: BTreeMap<ObjectKey, Service>,
    pub pods: BTreeMap<ObjectKey, Pod>,
    pub workloads: BTreeMap<ObjectKey, Workload>,
    pub endpoint_slices: BTreeMap<ObjectKey, EndpointSlice>,
    pub virtual_services: BTreeMap<ObjectKey, VirtualService>,
    pub destination_rules: BTreeMap<ObjectKey, DestinationRule>,
    pub peer_authentications: BTreeMap<ObjectKey, PeerAuthentication>,
}

impl Cluster {
    /// Changes a pod's readiness, as a readiness probe would. Returns false if there is no such pod.
    pub fn set_pod_ready(&mut self, pod: &ObjectKey, ready: bool) -> bool {
        match self.pods.get_mut(pod) {
            Some(p) => {
                p.ready = ready;
                true
            }
            None => false,
        }
    }

    /// The objects that differ between this version and `next`: added, edited (any field, its origin included)
    /// or deleted, each once, by kind. What a watch of the API server would report between the two; a control
    /// plane applies exactly these to its index.
    pub fn changes(&self, next: &Cluster) -> Vec<ObjectRef> {
        let mut out = Vec::new();
        if self.mesh != next.mesh {
            out.push(ObjectRef::new(Kind::MeshConfig, ObjectKey::new("", "mesh")));
        }
        let namespace = |name: &String| ObjectKey::new(name.clone(), name.clone());
        changed(&self.namespaces, &next.namespaces, |n| ObjectRef::new(Kind::Namespace, namespace(n)), &mut out);
        changed(&self.services, &next.services, |k| ObjectRef::new(Kind::Service, k.clone()), &mut out);
        changed(&self.pods, &next.pods, |k| ObjectRef::new(Kind::Pod, k.clone()), &mut out);
        let workload_kind = |k: &ObjectKey| {
            let w = next.workloads.get(k).or_else(|| self.workloads.get(k));
            match w.map(|w| w.kind) {
                Some(WorkloadKind::StatefulSet) => Kind::StatefulSet,
                _ => Kind::Deployment,
            }
        };
        changed(&self.workloads, &next.workloads, |k| ObjectRef::new(workload_kind(k), k.clone()), &mut out);
        changed(
            &self.endpoint_slices,
            &next.endpoint_slices,
            |k| ObjectRef::new(Kind::EndpointSlice, k.clone()),
            &mut out,
        );
        changed(
            &self.virtual_services,
            &next.virtual_services,
            |k| ObjectRef::new(Kind::VirtualService, k.clone()),
            &mut out,
        );
        changed(
            &self.destination_rules,
            &next.destination_rules,
            |k| ObjectRef::new(Kind::DestinationRule, k.clone()),
            &mut out,
        );
        changed(
            &self.peer_authentications,
            &next.peer_authentications,
            |k| ObjectRef::new(Kind::PeerAuthentication, k.clone()),
            &mut out,
        );
        out
    }

    /// Makes the objects `changed` names (each once) as they are in `from`, moving them out of it: one absent
    /// from `from` is deleted here. `from` may be a whole version of the cluster or hold just the changed objects (as a watch
    /// event carries them); a MeshConfig change copies `from`'s.
    pub fn apply_changes(&mut self, from: &mut Cluster, changed: &[ObjectRef]) {
        for o in changed {
            let key = &o.key;
            match o.kind {
                Kind::MeshConfig => self.mesh = from.mesh.clone(),
                Kind::Namespace => move_object(&mut self.namespaces, &mut from.namespaces, &key.name.to_string()),
                Kind::Service => move_object(&mut self.services, &mut from.services, key),
                Kind::Pod => move_object(&mut self.pods, &mut from.pods, key),
                Kind::Deployment | Kind::StatefulSet => move_object(&mut self.workloads, &mut from.workloads, key),
                Kind::EndpointSlice => move_object(&mut self.endpoint_slices, &mut from.endpoint_slices, key),
                Kind::VirtualService => move_object(&mut self.virtual_services, &mut from.virtual_services, key),
                Kind::DestinationRule => move_object(&mut self.destination_rules, &mut from.destination_rules, key),
                Kind::PeerAuthentication => {
                    move_object(&mut self.peer_authentications, &mut from.peer_authentications, key)
                }
            }
        }
    }

    /// The pods a workload (Deployment or StatefulSet) owns, in name order.
    pub fn pods_of(&self, workload: &ObjectKey) -> impl Iterator<Item = &Pod> {
        self.pods.values().filter(move |p| {
            p.key.namespace == workload.namespace && p.owner.as_ref().is_some_and(|o| *o.name == *workload.name)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    pub name: String,
    pub labels: Labels,
    /// None when the namespace is implied by objects in it rather than declared.
    pub origin: Option<Origin>,
}

// ---------------------------------------------------------------- Service

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub key: ObjectKey,
    pub labels: Labels,
    /// The ClusterIPs (one per family). Empty exactly when the Service is headless.
    pub cluster_ips: Vec<IpAddr>,
    pub headless: bool,
    /// None: the Service has no selector and its endpoints come from EndpointSlices only.
    pub selector: Option<Labels>,
    pub ports: Vec<ServicePortSpec>,
    pub publish_not_ready_addresses: bool,
    pub origin: Option<Origin>,
}

impl Service {
    pub fn port(&self, port: ServicePort) -> Option<&ServicePortSpec> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// One entry of `Service.spec.ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortSpec {
    pub name: Option<String>,
    pub port: ServicePort,
    pub target_port: TargetPortRef,
    pub protocol: L4Protocol,
    pub app_protocol: Option<String>,
}

/// A `targetPort`: a number, or the name of a container port resolved per pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetPortRef {
    Number(TargetPort),
    Name(String),
}

impl fmt::Display for TargetPortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetPortRef::Number(n) => n.fmt(f),
            TargetPortRef::Name(n) => write!(f, "\"{n}\""),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum L4Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl L4Protocol {
    /// As written in manifests: "TCP", "UDP", "SCTP".
    pub fn as_str(self) -> &'static str {
        match self {
            L4Protocol::Tcp => "TCP",
            L4Protocol::Udp => "UDP",
            L4Protocol::Sctp => "SCTP",
        }
    }
}

// ---------------------------------------------------------------- Pod and workloads

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub key: ObjectKey,
    pub labels: Labels,
    pub annotations: Labels,
    pub ip: IpAddr,
    /// True when podmesh assigned the IP (the manifest had no `status.podIP`).
    pub ip_allocated: bool,
    pub ready: bool,
    pub hostname: Option<String>,
    pub subdomain: Option<String>,
    pub service_account: String,
    pub containers: Vec<Container>,
    /// What happens when a container exits (`spec.restartPolicy`).
    pub restart_policy: RestartPolicy,
    /// The pod's volumes that podmesh provides: `emptyDir` ones (others are reported and not mounted).
    pub volumes: Vec<String>,
    /// Whether the pod has a podmesh sidecar ("meshed") or not ("plain").
    pub sidecar: bool,
    /// The Deployment or StatefulSet that created the pod, when it came from one.
    pub owner: Option<Owner>,
    pub origin: Option<Origin>,
}

impl Pod {
    /// The workload name used in metrics and logs: the owning Deployment/StatefulSet, else the pod itself.
    pub fn workload_name(&self) -> &str {
        self.owner.as_ref().map_or(&self.key.name, |o| &o.name)
    }

    /// Resolves a named container port.
    pub fn named_port(&self, name: &str) -> Option<TargetPort> {
        self.container_ports().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port)
    }

    pub fn container_ports(&self) -> impl Iterator<Item = &ContainerPortSpec> {
        self.containers.iter().flat_map(|c| c.ports.iter())
    }

    /// The hostname Kubernetes gives the pod: `spec.hostname`, else the pod name.
    pub fn effective_hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.key.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub name: String,
    pub ports: Vec<ContainerPortSpec>,
    /// The program and its arguments as written (`command`, then `args`), `$(VAR)` references not yet expanded:
    /// the runtime expands them with the container's environment, as the kubelet does. Images are ignored, so a
    /// container without a command has nothing to run.
    pub command: Vec<String>,
    pub args: Vec<String>,
    /// In order: a variable may refer to the ones before it with `$(NAME)`.
    pub env: Vec<EnvVar>,
    pub readiness: Option<Probe>,
    pub mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvValue {
    /// `value`, `$(VAR)` references not yet expanded.
    Value(String),
    /// `valueFrom.fieldRef`: the downward API.
    Field(PodField),
}

/// A field of the pod a variable can carry (`valueFrom.fieldRef.fieldPath`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodField {
    /// `metadata.name`
    Name,
    /// `metadata.namespace`
    Namespace,
    /// `metadata.labels['KEY']`
    Label(String),
    /// `metadata.annotations['KEY']`
    Annotation(String),
    /// `spec.nodeName`
    NodeName,
    /// `spec.serviceAccountName`
    ServiceAccountName,
    /// `status.hostIP`: the node's address.
    HostIp,
    /// `status.podIP`
    PodIp,
    /// `status.podIPs`: the pod's addresses, comma-separated.
    PodIps,
}

/// A readiness probe: its check and timing (Kubernetes' defaults where unset).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub action: ProbeAction,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeAction {
    /// Ready when a GET of `path` on the pod's `port` answers 200-399.
    HttpGet { path: String, port: TargetPortRef, https: bool, headers: Vec<(String, String)> },
    /// Ready when a TCP connection to the pod's `port` opens.
    TcpSocket { port: TargetPortRef },
    /// Ready when the command, run in the container's context, exits 0.
    Exec { command: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeMount {
    /// One of the pod's `volumes`.
    pub volume: String,
    /// An absolute path.
    pub path: String,
    pub read_only: bool,
}

/// `spec.restartPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerPortSpec {
    pub name: Option<String>,
    pub port: TargetPort,
    pub protocol: L4Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
}

impl fmt::Display for WorkloadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub kind: WorkloadKind,
    pub name: String,
}

/// A Deployment or StatefulSet, kept after its pods are expanded (for `check` and for owner lookups).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    pub key: ObjectKey,
    pub replicas: u32,
    /// StatefulSet `spec.serviceName`.
    pub service_name: Option<String>,
    /// StatefulSet `spec.podManagementPolicy`: how the local runtime starts and stops its pods.
    pub pod_management: PodManagement,
    pub origin: Option<Origin>,
}

/// How a StatefulSet's pods are started and stopped (`spec.podManagementPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodManagement {
    /// One at a time, in ordinal order, each once the one before is running and ready; stopped in reverse.
    #[default]
    OrderedReady,
    /// All at once.
    Parallel,
}

// ---------------------------------------------------------------- EndpointSlice

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointSlice {
    pub key: ObjectKey,
    /// The Service it belongs to (label `kubernetes.io/service-name`), in the slice's namespace.
    pub service: String,
    pub endpoints: Vec<SliceEndpoint>,
    pub ports: Vec<SlicePort>,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEndpoint {
    pub addresses: Vec<IpAddr>,
    /// `conditions.ready`; absent means ready, as the EndpointSlice API says.
    pub ready: bool,
    pub hostname: Option<String>,
    /// `targetRef` when it names a Pod.
    pub pod: Option<ObjectKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicePort {
    pub name: Option<String>,
    pub port: TargetPort,
    pub protocol: L4Protocol,
}

// ---------------------------------------------------------------- Istio

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtualService {
    pub key: ObjectKey,
    /// Hosts as written; short names are relative to the VirtualService's namespace.
    pub hosts: Vec<String>,
    pub http: Vec<HttpRoute>,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Any one matching selects the route; empty matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    pub destinations: Vec<WeightedDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "duration_ms")]
    pub timeout: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// One `match` entry: every condition set in it must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<StringMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServicePort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Regex(Pattern),
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Regex(p) => p.is_match(value),
        }
    }
}

impl fmt::Display for StringMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StringMatch::Exact(s) => write!(f, "= {s:?}"),
            StringMatch::Prefix(s) => write!(f, "prefix {s:?}"),
            StringMatch::Regex(p) => write!(f, "~ {:?}", p.source()),
        }
    }
}

/// A regular expression matched against the whole value (RE2 syntax and full-match semantics, as Istio).
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: regex::Regex,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$")).size_limit(1 << 20).build()?;
        Ok(Self { source: source.to_string(), regex })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Pattern {}

impl Serialize for Pattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Pattern::new(&s).map_err(serde::de::Error::custom)
    }
}

/// A route destination: a host (a Service name, relative to the VirtualService's namespace), optional subset and
/// port, and its weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightedDestination {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<ServicePort>,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationRule {
    pub key: ObjectKey,
    pub host: String,
    pub subsets: Vec<Subset>,
    pub origin: Option<Origin>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subset {
    pub name: String,
    pub labels: Labels,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    Strict,
    Permissive,
    Disable,
}

impl fmt::Display for MtlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MtlsMode::Strict => "STRICT",
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Disable => "DISABLE",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAuthentication {
    pub key: ObjectKey,
    /// None: applies to the whole namespace (or the mesh, in the root namespace).
    pub selector: Option<Labels>,
    /// None is `UNSET`: inherit.
    pub mode: Option<MtlsMode>,
    /// `portLevelMtls`, keyed by target port; a None mode inherits.
    pub port_level: BTreeMap<TargetPort, Option<MtlsMode>>,
    pub origin: Option<Origin>,
}

/// Serde helper: an optional Duration as integer milliseconds.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Serde helper: a Duration as integer milliseconds.
pub mod duration_ms_required {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}
