//! From parsed documents to a validated [`Cluster`]: per-kind conversion with field-path errors, expansion of
//! Deployments and StatefulSets into pods, and address assignment.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cluster::*;
use crate::diag::{Diagnostic, LoadErrors, Origin};
use crate::keys::{Kind, ObjectKey, ObjectRef};
use crate::load::Loaded;
use crate::mesh::{MeshConfig, OutboundPolicy, parse_duration};
use crate::net::{Allocator, ServicePort, TargetPort, fnv1a, key_hash};
use crate::wire;

/// Replicas above this are refused: podmesh computes a config per pod, and a typo like `replicas: 1000000` should
/// be an error, not an out-of-memory.
pub const MAX_REPLICAS: i64 = 10_000;

/// Annotations that opt a pod out of (or into) the sidecar. podmesh's own first, then Istio's for compatibility.
pub const INJECT_ANNOTATIONS: [&str; 2] = ["sidecar.podmesh.io/inject", "sidecar.istio.io/inject"];
/// Namespace label that makes pods plain by default: `podmesh.io/inject: "false"`.
pub const NAMESPACE_INJECT_LABEL: &str = "podmesh.io/inject";

#[derive(Default)]
pub(crate) struct Builder {
    pub diagnostics: Vec<Diagnostic>,
    cluster: Cluster,
    mesh: Option<(wire::MeshConfigSpec, Origin)>,
    /// Pods to create from Deployments and StatefulSets once everything is read.
    templates: Vec<Expansion>,
    /// Services whose address is to be assigned in `finish` (pods carry `ip_allocated` for the same purpose).
    services_without_ip: BTreeSet<ObjectKey>,
    /// The document each object came from, to name both when a name is used twice.
    seen: HashMap<ObjectRef, Origin>,
}

struct Expansion {
    workload: Workload,
    template: wire::PodTemplate,
    template_hash: String,
}

/// Context for converting one document: where it is and what it is, for messages.
struct Doc<'a> {
    origin: &'a Origin,
    object: ObjectRef,
    diags: &'a mut Vec<Diagnostic>,
    failed: bool,
}

impl Doc<'_> {
    fn error(&mut self, field: &str, message: impl Into<String>) {
        self.failed = true;
        let d = Diagnostic::error("invalid-field", message).at(Some(self.origin)).object(self.object.clone());
        self.diags.push(if field.is_empty() { d } else { d.field(field) });
    }

    fn warn(&mut self, code: &'static str, field: &str, message: impl Into<String>) {
        let d = Diagnostic::warning(code, message).at(Some(self.origin)).object(self.object.clone());
        self.diags.push(if field.is_empty() { d } else { d.field(field) });
    }
}

const ISTIO_NETWORKING: [&str; 3] =
    ["networking.istio.io/v1", "networking.istio.io/v1beta1", "networking.istio.io/v1alpha3"];
const ISTIO_SECURITY: [&str; 2] = ["security.istio.io/v1", "security.istio.io/v1beta1"];

impl Builder {
    /// Adds a converted document: its diagnostics and objects, in the order they were found.
    pub fn add_converted(&mut self, origin: &Origin, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::Diagnostic(d) => self.diagnostics.push(d),
                Step::Object(o) => self.insert_object(origin, o),
            }
        }
    }

    fn insert_object(&mut self, origin: &Origin, object: Object) {
        match object {
            Object::Namespace(ns) => self.insert_namespace(ns, origin),
            Object::Service(svc, needs_ip) => {
                if needs_ip {
                    self.services_without_ip.insert(svc.key.clone());
                }
                self.insert(Kind::Service, svc.key.clone(), origin, |c| &mut c.services, svc);
            }
            Object::Pod(pod) => {
                self.insert(Kind::Pod, pod.key.clone(), origin, |c| &mut c.pods, pod);
            }
            Object::Workload(kind, workload, template, template_hash) => {
                if self.insert(kind, workload.key.clone(), origin, |c| &mut c.workloads, workload.clone()) {
                    self.templates.push(Expansion { workload, template: *template, template_hash });
                }
            }
            Object::EndpointSlice(s) => {
                self.insert(Kind::EndpointSlice, s.key.clone(), origin, |c| &mut c.endpoint_slices, s);
            }
            Object::VirtualService(vs) => {
                self.insert(Kind::VirtualService, vs.key.clone(), origin, |c| &mut c.virtual_services, vs);
            }
            Object::DestinationRule(dr) => {
                self.insert(Kind::DestinationRule, dr.key.clone(), origin, |c| &mut c.destination_rules, dr);
            }
            Object::PeerAuthentication(pa) => {
                self.insert(Kind::PeerAuthentication, pa.key.clone(), origin, |c| &mut c.peer_authentications, pa);
            }
            Object::MeshConfig(spec, object) => {
                if let Some((_, first)) = &self.mesh {
                    let msg = format!("a second MeshConfig; the first is at {first}");
                    self.diagnostics.push(
                        Diagnostic::error("duplicate-object", msg)
                            .at(Some(origin))
                            .object(object)
                            .hint("a mesh has one MeshConfig: merge their settings into one"),
                    );
                } else {
                    self.mesh = Some((spec, origin.clone()));
                }
            }
        }
    }

    /// Records an object under its key; a second object of the same kind and name is an error naming both.
    fn insert<T>(
        &mut self,
        kind: Kind,
        key: ObjectKey,
        origin: &Origin,
        map: impl FnOnce(&mut Cluster) -> &mut BTreeMap<ObjectKey, T>,
        value: T,
    ) -> bool {
        // Deployments and StatefulSets share one map; their names are distinct objects in Kubernetes but a pod
        // name collision between them is caught at expansion.
        let object = ObjectRef::new(kind, key.clone());
        if let Some(first) = self.seen.get(&object) {
            self.diagnostics.push(
                Diagnostic::error("duplicate-object", format!("defined twice; the first definition is at {first}"))
                    .at(Some(origin))
                    .object(object)
                    .hint("rename one of them or remove the duplicate"),
            );
            return false;
        }
        self.seen.insert(object, origin.clone());
        let map = map(&mut self.cluster);
        if map.contains_key(&key) {
            // A Deployment and a StatefulSet with the same name: both are valid Kubernetes objects, but podmesh
            // keys workloads by name, so say so.
            let other = if kind == Kind::Deployment { Kind::StatefulSet } else { Kind::Deployment };
            let first = self.seen.get(&ObjectRef::new(other, key.clone())).map(|o| format!(" (defined at {o})"));
            self.diagnostics.push(
                Diagnostic::error(
                    "duplicate-object",
                    format!(
                        "a {other} has the same name{}; podmesh names workloads by name",
                        first.unwrap_or_default()
                    ),
                )
                .at(Some(origin))
                .object(ObjectRef::new(kind, key))
                .hint("rename one of them"),
            );
            return false;
        }
        map.insert(key, value);
        true
    }

    fn insert_namespace(&mut self, ns: Namespace, origin: &Origin) {
        let object = ObjectRef::new(Kind::Namespace, ObjectKey::new(ns.name.clone(), ns.name.clone()));
        if let Some(first) = self.seen.get(&object) {
            self.diagnostics.push(
                Diagnostic::error("duplicate-object", format!("defined twice; the first definition is at {first}"))
                    .at(Some(origin))
                    .object(object),
            );
            return;
        }
        self.seen.insert(object, origin.clone());
        self.cluster.namespaces.insert(ns.name.clone(), ns);
    }

    /// Applies the mesh config, expands workloads, assigns addresses and returns the cluster, or every error.
    pub fn finish(mut self) -> Result<Loaded, LoadErrors> {
        let mesh = match self.mesh.take() {
            Some((spec, origin)) => mesh_config(spec, &origin, &mut self.diagnostics),
            None => MeshConfig::default(),
        };
        self.cluster.mesh = mesh;
        for expansion in std::mem::take(&mut self.templates) {
            self.expand(expansion);
        }
        self.assign_service_ips();
        self.assign_pod_ips();
        self.apply_namespaces();

        let diagnostics = std::mem::take(&mut self.diagnostics);
        if diagnostics.iter().any(Diagnostic::is_error) {
            return Err(LoadErrors { diagnostics });
        }
        Ok(Loaded { cluster: self.cluster, warnings: diagnostics })
    }

    fn expand(&mut self, e: Expansion) {
        let w = &e.workload;
        let Some(origin) = w.origin.clone() else { return };
        let kind = match w.kind {
            WorkloadKind::Deployment => Kind::Deployment,
            WorkloadKind::StatefulSet => Kind::StatefulSet,
        };
        let sts = w.kind == WorkloadKind::StatefulSet;
        // Kubernetes' pod-template-hash: a hash of the template, so names change when the template does.
        let hash = fnv1a(&[w.key.namespace.as_bytes(), w.key.name.as_bytes(), e.template_hash.as_bytes()]);
        let template_hash = safe_encode(hash, 10);
        let name_of = |i: u32| match w.kind {
            WorkloadKind::Deployment => {
                let suffix = safe_encode(fnv1a(&[template_hash.as_bytes(), &i.to_le_bytes()]), 5);
                format!("{}-{}-{}", w.key.name, template_hash, suffix)
            }
            WorkloadKind::StatefulSet => format!("{}-{}", w.key.name, i),
        };
        let mut doc = Doc {
            origin: &origin,
            object: ObjectRef::new(kind, w.key.clone()),
            diags: &mut self.diagnostics,
            failed: false,
        };
        // The template is validated once, as the first replica (also at 0 replicas, so that its errors are reported
        // whatever the scale); the other replicas are copies with their own name.
        let mut spec = e.template.spec.clone().unwrap_or_default();
        if sts {
            spec.hostname = Some(name_of(0));
            spec.subdomain = w.service_name.clone();
        }
        let owner = Owner { kind: w.kind, name: w.key.name.to_string() };
        let first = ObjectKey::new(w.key.namespace.clone(), name_of(0));
        let Some((template, _)) =
            pod(&mut doc, first, &e.template.metadata, &spec, None, "spec.template.", Some(owner))
        else {
            return;
        };
        if sts && !is_dns_label(&name_of(w.replicas.saturating_sub(1))) {
            doc.error("metadata.name", "too long for its pods' hostnames: <name>-<ordinal> must fit in 63 characters");
            return;
        }
        for i in 0..w.replicas {
            let name = name_of(i);
            let key = ObjectKey::new(w.key.namespace.clone(), name.clone());
            // Every Pod document is in already, so the pod map itself finds collisions.
            if let Some(first) = self.cluster.pods.get(&key) {
                let at = first.origin.as_ref().map(|o| format!(" at {o}")).unwrap_or_default();
                self.diagnostics.push(
                    Diagnostic::error("duplicate-object", format!("creates pod {key}, which is also defined{at}"))
                        .at(Some(&origin))
                        .object(ObjectRef::new(kind, w.key.clone())),
                );
                continue;
            }
            let mut pod = template.clone();
            if sts {
                pod.labels.insert("statefulset.kubernetes.io/pod-name".into(), name.clone());
                pod.hostname = Some(name);
            } else {
                pod.labels.insert("pod-template-hash".into(), template_hash.clone());
            }
            pod.key = key.clone();
            // To be assigned in `finish`.
            pod.ip_allocated = true;
            self.cluster.pods.insert(key, pod);
        }
    }

    fn assign_service_ips(&mut self) {
        let mut alloc = Allocator::new(self.cluster.mesh.service_cidr);
        let mut owners: BTreeMap<IpAddr, &Service> = BTreeMap::new();
        for svc in self.cluster.services.values() {
            for ip in &svc.cluster_ips {
                alloc.reserve(*ip);
                if let Some(other) = owners.insert(*ip, svc) {
                    self.diagnostics.push(
                        Diagnostic::error(
                            "duplicate-address",
                            format!(
                                "ClusterIP {ip} is also the ClusterIP of Service {}{}",
                                other.key,
                                at(&other.origin)
                            ),
                        )
                        .at(svc.origin.as_ref())
                        .object(ObjectRef::new(Kind::Service, svc.key.clone()))
                        .field("spec.clusterIP"),
                    );
                }
            }
        }
        for key in &self.services_without_ip {
            let Some(svc) = self.cluster.services.get_mut(key) else { continue };
            match alloc.allocate(&key.to_string()) {
                Some(ip) => svc.cluster_ips = vec![ip],
                None => self.diagnostics.push(
                    Diagnostic::error(
                        "address-exhausted",
                        format!("no free address in serviceCIDR {}", self.cluster.mesh.service_cidr),
                    )
                    .object(ObjectRef::new(Kind::Service, key.clone())),
                ),
            }
        }
    }

    fn assign_pod_ips(&mut self) {
        let mut alloc = Allocator::new(self.cluster.mesh.pod_cidr);
        let mut owners: BTreeMap<IpAddr, &Pod> = BTreeMap::new();
        for pod in self.cluster.pods.values().filter(|p| !p.ip_allocated) {
            alloc.reserve(pod.ip);
            if let Some(other) = owners.insert(pod.ip, pod) {
                self.diagnostics.push(
                    Diagnostic::error(
                        "duplicate-address",
                        format!("pod IP {} is also the IP of pod {}{}", pod.ip, other.key, at(&other.origin)),
                    )
                    .at(pod.origin.as_ref())
                    .object(ObjectRef::new(Kind::Pod, pod.key.clone()))
                    .field("status.podIP"),
                );
            }
        }
        // In name order, so addresses do not depend on load order; the hash is of `namespace/name`.
        let pod_cidr = self.cluster.mesh.pod_cidr;
        for pod in self.cluster.pods.values_mut().filter(|p| p.ip_allocated) {
            match alloc.allocate_hashed(key_hash(&pod.key.namespace, &pod.key.name)) {
                Some(ip) => pod.ip = ip,
                None => self.diagnostics.push(
                    Diagnostic::error("address-exhausted", format!("no free address in podCIDR {pod_cidr}"))
                        .object(ObjectRef::new(Kind::Pod, pod.key.clone())),
                ),
            }
        }
    }

    /// Creates the namespaces objects live in but no manifest declares, and applies namespace-wide sidecar opt-out.
    fn apply_namespaces(&mut self) {
        let c = &mut self.cluster;
        let keys = c
            .services
            .keys()
            .chain(c.pods.keys())
            .chain(c.workloads.keys())
            .chain(c.endpoint_slices.keys())
            .chain(c.virtual_services.keys())
            .chain(c.destination_rules.keys())
            .chain(c.peer_authentications.keys());
        for key in keys {
            if !c.namespaces.contains_key(&*key.namespace) {
                let name = key.namespace.to_string();
                c.namespaces.insert(name.clone(), Namespace { name, labels: Labels::new(), origin: None });
            }
        }
        for pod in c.pods.values_mut() {
            let explicit = INJECT_ANNOTATIONS.iter().find_map(|a| pod.annotations.get(*a));
            pod.sidecar = match explicit {
                Some(v) => v != "false",
                None => c
                    .namespaces
                    .get(&*pod.key.namespace)
                    .and_then(|ns| ns.labels.get(NAMESPACE_INJECT_LABEL))
                    .is_none_or(|v| v != "false"),
            };
        }
    }
}

/// What converting a document yields, in the order found: diagnostics, and the objects to insert.
#[derive(Debug)]
pub(crate) enum Step {
    Diagnostic(Diagnostic),
    Object(Object),
}

/// A validated object, ready to be inserted into the cluster.
#[derive(Debug)]
pub(crate) enum Object {
    Namespace(Namespace),
    /// The Service, and whether it still needs a ClusterIP.
    Service(Service, bool),
    Pod(Pod),
    /// Deployment or StatefulSet, its pod template and the template's hash input.
    Workload(Kind, Workload, Box<wire::PodTemplate>, String),
    EndpointSlice(EndpointSlice),
    VirtualService(VirtualService),
    DestinationRule(DestinationRule),
    PeerAuthentication(PeerAuthentication),
    MeshConfig(wire::MeshConfigSpec, ObjectRef),
}

/// Converts one parsed document. Pure (no builder state), so documents convert in parallel and are then added in
/// their order with [`Builder::add_converted`].
pub(crate) fn convert(origin: &Origin, value: Value) -> Vec<Step> {
    let mut out = Vec::new();
    convert_into(origin, value, &mut out);
    out
}

fn convert_into(origin: &Origin, value: Value, out: &mut Vec<Step>) {
    let Value::Object(map) = &value else {
        out.push(Step::Diagnostic(
            Diagnostic::error(
                "invalid-field",
                format!("a manifest must be a mapping with apiVersion, kind and metadata, not {}", describe(&value)),
            )
            .at(Some(origin)),
        ));
        return;
    };
    let field_str = |f: &str| map.get(f).and_then(Value::as_str).map(str::to_string);
    let (Some(api), Some(kind)) = (field_str("apiVersion"), field_str("kind")) else {
        let missing = if field_str("apiVersion").is_none() { "apiVersion" } else { "kind" };
        out.push(Step::Diagnostic(
            Diagnostic::error("invalid-field", "missing or not a string; every document needs apiVersion and kind")
                .at(Some(origin))
                .field(missing),
        ));
        return;
    };
    if kind == "List" {
        let items = map.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        for item in items {
            convert_into(origin, item, out);
        }
        return;
    }
    let api = api.as_str();
    let known = match kind.as_str() {
        "Namespace" if api == "v1" => Some(Kind::Namespace),
        "Service" if api == "v1" => Some(Kind::Service),
        "Pod" if api == "v1" => Some(Kind::Pod),
        "Deployment" if api == "apps/v1" => Some(Kind::Deployment),
        "StatefulSet" if api == "apps/v1" => Some(Kind::StatefulSet),
        "EndpointSlice" if api == "discovery.k8s.io/v1" => Some(Kind::EndpointSlice),
        "VirtualService" if ISTIO_NETWORKING.contains(&api) => Some(Kind::VirtualService),
        "DestinationRule" if ISTIO_NETWORKING.contains(&api) => Some(Kind::DestinationRule),
        "PeerAuthentication" if ISTIO_SECURITY.contains(&api) => Some(Kind::PeerAuthentication),
        "MeshConfig" if api == "podmesh.io/v1alpha1" => Some(Kind::MeshConfig),
        _ => None,
    };
    let Some(kind) = known else {
        out.push(Step::Diagnostic(
            Diagnostic::warning("skipped-kind", format!("{api} {kind} is not read by podmesh; skipped"))
                .at(Some(origin)),
        ));
        return;
    };
    let meta = |f: &str| value.pointer(&format!("/metadata/{f}")).and_then(Value::as_str).map(str::to_string);
    let name = meta("name").unwrap_or_else(|| "<unnamed>".into());
    let ns_name = match kind {
        Kind::Namespace | Kind::MeshConfig => name.clone(),
        _ => meta("namespace").unwrap_or_else(|| "default".into()),
    };
    let object = ObjectRef::new(kind, ObjectKey::new(ns_name, name));
    let mut diags = Vec::new();
    let mut doc = Doc { origin, object, diags: &mut diags, failed: false };
    // Kubernetes ignores a field it does not know, and kubectl warns; a top-level one is most often a field
    // indented too little (a container's `command` that became the document's), which changes what runs.
    let own: &[&str] = match kind {
        Kind::EndpointSlice => &["addressType", "endpoints", "ports"],
        _ => &["spec", "status"],
    };
    for key in
        map.keys().filter(|k| !["apiVersion", "kind", "metadata"].contains(&k.as_str()) && !own.contains(&k.as_str()))
    {
        doc.warn(
            "unknown-field",
            key,
            format!(
                "unknown field at the top of the {}, ignored (as Kubernetes does): is it indented too little?",
                kind.as_str()
            ),
        );
    }
    // serde would read a list of exactly as many values as the struct has fields as the struct, and otherwise
    // say "invalid length 2, expected struct ObjectMeta with 4 elements": say what is wrong instead.
    if let Some((field, v)) = ["metadata", "spec", "status"]
        .into_iter()
        .find_map(|f| map.get(f).filter(|v| !v.is_object() && !v.is_null()).map(|v| (f, v)))
    {
        doc.error(field, format!("must be a mapping, not {}", describe(v)));
        out.extend(diags.into_iter().map(Step::Diagnostic));
        return;
    }
    let object = match kind {
        Kind::Namespace => {
            parse::<wire::Namespace>(&mut doc, value).and_then(|n| namespace(&mut doc, n)).map(Object::Namespace)
        }
        Kind::Service => {
            parse(&mut doc, value).and_then(|s| service(&mut doc, s)).map(|(s, needs_ip)| Object::Service(s, needs_ip))
        }
        Kind::Pod => parse::<wire::Pod>(&mut doc, value).and_then(|p| {
            let key = doc.object.key.clone();
            let spec = p.spec.clone().unwrap_or_default();
            let (mut pod, has_ip) = pod(&mut doc, key, &p.metadata, &spec, p.status.as_ref(), "", None)?;
            // To be assigned in `finish`.
            pod.ip_allocated = !has_ip;
            Some(Object::Pod(pod))
        }),
        Kind::Deployment | Kind::StatefulSet => {
            let wk = if kind == Kind::Deployment { WorkloadKind::Deployment } else { WorkloadKind::StatefulSet };
            // Deployment pod names carry a hash of the template (StatefulSet pods are numbered).
            let template_hash = match wk {
                WorkloadKind::Deployment => value.pointer("/spec/template").map(|t| t.to_string()).unwrap_or_default(),
                WorkloadKind::StatefulSet => String::new(),
            };
            parse(&mut doc, value)
                .and_then(|w| workload(&mut doc, wk, w))
                .map(|(w, template)| Object::Workload(kind, w, Box::new(template), template_hash))
        }
        Kind::EndpointSlice => {
            parse(&mut doc, value).and_then(|s| endpoint_slice(&mut doc, s)).map(Object::EndpointSlice)
        }
        Kind::VirtualService => {
            parse(&mut doc, value).and_then(|v| virtual_service(&mut doc, v)).map(Object::VirtualService)
        }
        Kind::DestinationRule => {
            parse(&mut doc, value).and_then(|d| destination_rule(&mut doc, d)).map(Object::DestinationRule)
        }
        Kind::PeerAuthentication => {
            parse(&mut doc, value).and_then(|p| peer_authentication(&mut doc, p)).map(Object::PeerAuthentication)
        }
        Kind::MeshConfig => {
            let object = doc.object.clone();
            parse::<wire::MeshConfig>(&mut doc, value).map(|m| Object::MeshConfig(m.spec, object))
        }
    };
    out.extend(diags.into_iter().map(Step::Diagnostic));
    out.extend(object.map(Step::Object));
}

/// What a YAML value is, for messages: "a list", "a string", ...
fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// " (defined at FILE: document N (line L))", or nothing for an object without a document.
fn at(origin: &Option<Origin>) -> String {
    origin.as_ref().map(|o| format!(" (defined at {o})")).unwrap_or_default()
}

/// Typed parse of a document with the failing field's path in the error.
fn parse<T: DeserializeOwned>(doc: &mut Doc<'_>, value: Value) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." { String::new() } else { path };
            doc.error(&field, e.into_inner().to_string());
            None
        }
    }
}

/// Kubernetes' rand.SafeEncodeString alphabet: no vowels (no words), no confusable characters.
fn safe_encode(mut h: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(char::from(ALPHABET[(h % ALPHABET.len() as u64) as usize]));
        h /= ALPHABET.len() as u64;
        if h == 0 {
            h = fnv1a(&[s.as_bytes()]);
        }
    }
    s
}

// ---------------------------------------------------------------- names

/// RFC 1123 label: what Service and Namespace names (and pod hostnames) must be, since they become DNS labels.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: what most other object names must be.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// IANA service name: what a named port must be (at most 15 characters, lowercase alphanumerics and '-', at
/// least one letter, no leading, trailing or doubled '-').
pub fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn check_meta(doc: &mut Doc<'_>, meta: &wire::ObjectMeta, label_name: bool) {
    match &meta.name {
        None => doc.error("metadata.name", "missing"),
        Some(n) if label_name && !is_dns_label(n) => doc.error(
            "metadata.name",
            format!("{n:?} is not a valid name: use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
        ),
        Some(n) if !label_name && !is_dns_subdomain(n) => doc.error(
            "metadata.name",
            format!("{n:?} is not a valid name: use lowercase letters, digits, '-' and '.'"),
        ),
        Some(_) => {}
    }
    if let Some(ns) = &meta.namespace
        && !is_dns_label(ns)
    {
        doc.error("metadata.namespace", format!("{ns:?} is not a valid namespace name"));
    }
}

// The helpers below take the field's path as a closure: it is formatted only for a message, so the happy path of a
// large load (one call per port of each of 100,000 pods) formats nothing.

fn parse_ip(doc: &mut Doc<'_>, field: impl FnOnce() -> String, s: &str) -> Option<IpAddr> {
    match s.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            doc.error(&field(), format!("{s:?} is not an IP address"));
            None
        }
    }
}

fn l4_protocol(doc: &mut Doc<'_>, field: impl FnOnce() -> String, p: Option<&str>) -> L4Protocol {
    match p {
        None | Some("TCP") => L4Protocol::Tcp,
        Some("UDP") => L4Protocol::Udp,
        Some("SCTP") => L4Protocol::Sctp,
        Some(other) => {
            doc.error(&field(), format!("{other:?} is not a protocol: use TCP, UDP or SCTP"));
            L4Protocol::Tcp
        }
    }
}

fn port_number(doc: &mut Doc<'_>, field: impl FnOnce() -> String, p: Option<u16>) -> Option<u16> {
    match p {
        None => {
            doc.error(&field(), "missing");
            None
        }
        Some(0) => {
            doc.error(&field(), "0 is not a port: use 1-65535");
            None
        }
        Some(n) => Some(n),
    }
}

// ---------------------------------------------------------------- per kind

fn namespace(doc: &mut Doc<'_>, n: wire::Namespace) -> Option<Namespace> {
    check_meta(doc, &n.metadata, true);
    let name = n.metadata.name?;
    (!doc.failed).then(|| Namespace {
        name,
        labels: n.metadata.labels.unwrap_or_default(),
        origin: Some(doc.origin.clone()),
    })
}

/// Returns the Service and whether it still needs a ClusterIP.
fn service(doc: &mut Doc<'_>, s: wire::Service) -> Option<(Service, bool)> {
    check_meta(doc, &s.metadata, true);
    let Some(spec) = s.spec else {
        doc.error("spec", "missing");
        return None;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        doc.warn("unsupported", "spec.type", "ExternalName Services are not proxied by podmesh; skipped");
        return None;
    }
    if let Some(t) = spec.type_.as_deref()
        && !["ClusterIP", "NodePort", "LoadBalancer"].contains(&t)
    {
        doc.error(
            "spec.type",
            format!("{t:?} is not a Service type: use ClusterIP, NodePort, LoadBalancer or ExternalName"),
        );
    }
    let mut headless = false;
    let mut ips = Vec::new();
    let listed: Vec<(String, &str)> = match (&spec.cluster_ip, &spec.cluster_ips) {
        (_, Some(list)) => {
            list.iter().enumerate().map(|(i, s)| (format!("spec.clusterIPs[{i}]"), s.as_str())).collect()
        }
        (Some(one), None) => vec![("spec.clusterIP".to_string(), one.as_str())],
        (None, None) => vec![],
    };
    if let (Some(one), Some(list)) = (&spec.cluster_ip, &spec.cluster_ips)
        && list.first() != Some(one)
    {
        doc.error("spec.clusterIPs", format!("must start with spec.clusterIP ({one})"));
    }
    for (field, value) in listed {
        match value {
            "None" => headless = true,
            "" => {}
            ip => {
                if let Some(ip) = parse_ip(doc, || field.clone(), ip) {
                    ips.push(ip);
                }
            }
        }
    }
    if headless && !ips.is_empty() {
        doc.error("spec.clusterIP", "a headless Service (clusterIP: None) cannot also have addresses");
    }
    let mut ports = Vec::new();
    let wire_ports = spec.ports.unwrap_or_default();
    let mut seen = BTreeSet::new();
    for (i, p) in wire_ports.iter().enumerate() {
        let f = |name: &str| format!("spec.ports[{i}].{name}");
        let Some(port) = port_number(doc, || f("port"), p.port) else { continue };
        let target_port = match &p.target_port {
            None => TargetPortRef::Number(TargetPort(port)),
            Some(value) => match port_ref(doc, &f("targetPort"), value) {
                Some(r) => r,
                None => continue,
            },
        };
        let protocol = l4_protocol(doc, || f("protocol"), p.protocol.as_deref());
        if !seen.insert((port, protocol)) {
            doc.error(&f("port"), format!("port {port} is declared twice"));
        }
        if wire_ports.len() > 1 && p.name.as_deref().is_none_or(str::is_empty) {
            doc.error(&f("name"), "missing; every port of a Service with several ports must be named");
        }
        ports.push(ServicePortSpec {
            name: p.name.clone().filter(|n| !n.is_empty()),
            port: ServicePort(port),
            target_port,
            protocol,
            app_protocol: p.app_protocol.clone().filter(|a| !a.is_empty()),
        });
    }
    if doc.failed {
        return None;
    }
    let needs_ip = !headless && ips.is_empty();
    let svc = Service {
        key: doc.object.key.clone(),
        labels: s.metadata.labels.unwrap_or_default(),
        cluster_ips: ips,
        headless,
        selector: spec.selector.filter(|s| !s.is_empty()),
        ports,
        publish_not_ready_addresses: spec.publish_not_ready_addresses.unwrap_or(false),
        origin: Some(doc.origin.clone()),
    };
    Some((svc, needs_ip))
}

/// Builds a pod from metadata and spec (a Pod document, or a workload's template with `prefix` = "spec.template.").
/// Returns the pod and whether its IP came from the manifest.
fn pod(
    doc: &mut Doc<'_>,
    key: ObjectKey,
    meta: &wire::ObjectMeta,
    spec: &wire::PodSpec,
    status: Option<&wire::PodStatus>,
    prefix: &str,
    owner: Option<Owner>,
) -> Option<(Pod, bool)> {
    if owner.is_none() {
        check_meta(doc, meta, false);
    }
    let f = |s: &str| format!("{prefix}{s}");
    let (declared, volumes) = volumes(doc, &f, spec.volumes.as_deref().unwrap_or_default());
    let mut containers = Vec::new();
    let mut port_names = BTreeSet::new();
    for (ci, c) in spec.containers.iter().flatten().enumerate() {
        let mut ports = Vec::new();
        for (pi, p) in c.ports.iter().flatten().enumerate() {
            let pf = |s: &str| f(&format!("spec.containers[{ci}].ports[{pi}].{s}"));
            let Some(port) = port_number(doc, || pf("containerPort"), p.container_port) else { continue };
            let protocol = l4_protocol(doc, || pf("protocol"), p.protocol.as_deref());
            if let Some(name) = &p.name {
                if !is_port_name(name) {
                    doc.error(
                        &pf("name"),
                        format!(
                            "{name:?} is not a port name (at most 15 lowercase letters, digits and '-', with a letter)"
                        ),
                    );
                } else if !port_names.insert(name.clone()) {
                    doc.error(&pf("name"), format!("port name {name:?} is used twice in this pod"));
                }
            }
            ports.push(ContainerPortSpec { name: p.name.clone(), port: TargetPort(port), protocol });
        }
        let cf = |s: &str| f(&format!("spec.containers[{ci}].{s}"));
        containers.push(Container {
            name: c.name.clone().unwrap_or_else(|| format!("container-{ci}")),
            ports,
            command: c.command.clone().unwrap_or_default(),
            args: c.args.clone().unwrap_or_default(),
            env: env(doc, &cf, c.env.as_deref().unwrap_or_default()),
            readiness: c.readiness_probe.as_ref().and_then(|p| probe(doc, &|s| cf(&format!("readinessProbe.{s}")), p)),
            mounts: mounts(doc, &cf, c.volume_mounts.as_deref().unwrap_or_default(), &declared, &volumes),
        });
    }
    let restart_policy = match spec.restart_policy.as_deref() {
        None | Some("Always") => RestartPolicy::Always,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some("Never") => RestartPolicy::Never,
        Some(other) => {
            doc.error(&f("spec.restartPolicy"), format!("{other:?} is not Always, OnFailure or Never"));
            RestartPolicy::Always
        }
    };
    if owner.is_some() && restart_policy != RestartPolicy::Always {
        doc.error(
            &f("spec.restartPolicy"),
            "a Deployment's or StatefulSet's pods always restart: only Always is allowed",
        );
    }
    for (field, value) in [("spec.hostname", &spec.hostname), ("spec.subdomain", &spec.subdomain)] {
        if let Some(v) = value
            && !is_dns_label(v)
        {
            doc.error(&f(field), format!("{v:?} is not a DNS label"));
        }
    }
    let mut ip = None;
    let mut ready = true;
    if let Some(status) = status {
        if let Some(s) = status.pod_ip.as_deref().filter(|s| !s.is_empty()) {
            ip = parse_ip(doc, || "status.podIP".into(), s);
        } else if let Some(first) = status.pod_ips.as_ref().and_then(|l| l.first()).and_then(|e| e.ip.as_deref()) {
            ip = parse_ip(doc, || "status.podIPs[0].ip".into(), first);
        }
        if let Some(conds) = &status.conditions
            && let Some(c) = conds.iter().find(|c| c.type_.as_deref() == Some("Ready"))
        {
            ready = c.status.as_deref() == Some("True");
        }
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            ready = false;
        }
    }
    if doc.failed {
        return None;
    }
    let has_ip = ip.is_some();
    let pod = Pod {
        key,
        labels: meta.labels.clone().unwrap_or_default(),
        annotations: meta.annotations.clone().unwrap_or_default(),
        ip: ip.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        ip_allocated: false,
        ready,
        hostname: spec.hostname.clone(),
        subdomain: spec.subdomain.clone(),
        service_account: spec
            .service_account_name
            .clone()
            .or_else(|| spec.service_account.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        containers,
        restart_policy,
        volumes,
        sidecar: true,
        owner,
        origin: Some(doc.origin.clone()),
    };
    Some((pod, has_ip))
}

/// A port given as a number or as the name of a container port (a Service's `targetPort`, a probe's `port`).
fn port_ref(doc: &mut Doc<'_>, field: &str, value: &wire::IntOrString) -> Option<TargetPortRef> {
    match value {
        wire::IntOrString::Int(n) => match u16::try_from(*n) {
            Ok(n) if n > 0 => Some(TargetPortRef::Number(TargetPort(n))),
            _ => {
                doc.error(field, format!("{n} is not a port: use 1-65535 or a container port name"));
                None
            }
        },
        wire::IntOrString::String(name) if is_port_name(name) => Some(TargetPortRef::Name(name.clone())),
        wire::IntOrString::String(name) => {
            doc.error(
                field,
                format!("{name:?} is not a port name (at most 15 lowercase letters, digits and '-', with a letter)"),
            );
            None
        }
    }
}

/// The pod's volumes: every name declared, and the ones podmesh provides (`emptyDir`: a directory of the pod's
/// own). Other sources are reported, and not mounted.
fn volumes(doc: &mut Doc<'_>, f: &dyn Fn(&str) -> String, list: &[wire::Volume]) -> (BTreeSet<String>, Vec<String>) {
    let (mut declared, mut provided) = (BTreeSet::new(), Vec::new());
    for (i, v) in list.iter().enumerate() {
        let Some(name) = v.name.as_deref().filter(|n| !n.is_empty()) else {
            doc.error(&f(&format!("spec.volumes[{i}].name")), "missing");
            continue;
        };
        if !declared.insert(name.to_string()) {
            doc.error(&f(&format!("spec.volumes[{i}].name")), format!("volume {name:?} is declared twice"));
            continue;
        }
        if v.empty_dir.is_some() {
            provided.push(name.to_string());
        } else {
            let source = v.other.keys().next().map_or("(no source)", String::as_str);
            doc.warn(
                "unsupported-field",
                &f(&format!("spec.volumes[{i}].{source}")),
                format!("podmesh provides only emptyDir volumes: volume {name:?} is not mounted"),
            );
        }
    }
    (declared, provided)
}

/// A container's volume mounts of the volumes podmesh provides.
fn mounts(
    doc: &mut Doc<'_>,
    cf: &dyn Fn(&str) -> String,
    list: &[wire::VolumeMount],
    declared: &BTreeSet<String>,
    provided: &[String],
) -> Vec<VolumeMount> {
    let mut out = Vec::new();
    for (i, m) in list.iter().enumerate() {
        let mf = |s: &str| cf(&format!("volumeMounts[{i}].{s}"));
        let Some(name) = m.name.as_deref().filter(|n| !n.is_empty()) else {
            doc.error(&mf("name"), "missing");
            continue;
        };
        let Some(path) = m.mount_path.as_deref().filter(|p| !p.is_empty()) else {
            doc.error(&mf("mountPath"), "missing");
            continue;
        };
        if !path.starts_with('/') {
            doc.error(&mf("mountPath"), format!("{path:?} is not an absolute path"));
            continue;
        }
        if !declared.contains(name) {
            doc.error(&mf("name"), format!("{name:?} is not one of the pod's volumes"));
            continue;
        }
        // A volume podmesh does not provide is reported where it is declared.
        if provided.iter().any(|p| p == name) {
            out.push(VolumeMount {
                volume: name.to_string(),
                path: path.to_string(),
                read_only: m.read_only == Some(true),
            });
        }
    }
    out
}

/// A container's environment, in order. Sources podmesh does not have (Secrets, ConfigMaps, resources) are
/// reported, and their variables left unset.
fn env(doc: &mut Doc<'_>, cf: &dyn Fn(&str) -> String, vars: &[wire::EnvVar]) -> Vec<EnvVar> {
    let mut out = Vec::new();
    for (i, v) in vars.iter().enumerate() {
        let vf = |s: &str| cf(&format!("env[{i}].{s}"));
        let Some(name) = v.name.as_deref().filter(|n| !n.is_empty()) else {
            doc.error(&vf("name"), "missing");
            continue;
        };
        if !name.bytes().all(|b| b.is_ascii_graphic() && b != b'=') {
            doc.error(&vf("name"), format!("{name:?} is not a variable name (printable characters other than '=')"));
            continue;
        }
        let value = match (&v.value, &v.value_from) {
            (Some(_), Some(_)) => {
                doc.error(&vf("valueFrom"), "may not be set together with value");
                continue;
            }
            (value, None) => EnvValue::Value(value.clone().unwrap_or_default()),
            (None, Some(from)) => match (&from.field_ref, from.other.keys().next()) {
                (Some(r), None) => {
                    let path = r.field_path.as_deref().unwrap_or_default();
                    match pod_field(path) {
                        Some(field) => EnvValue::Field(field),
                        None => {
                            doc.error(
                                &vf("valueFrom.fieldRef.fieldPath"),
                                format!(
                                    "{path:?} is not a field podmesh gives: use metadata.name, metadata.namespace, \
                                     metadata.labels['KEY'], metadata.annotations['KEY'], spec.nodeName, \
                                     spec.serviceAccountName, status.hostIP, status.podIP or status.podIPs"
                                ),
                            );
                            continue;
                        }
                    }
                }
                (None, Some(source)) if from.other.len() == 1 => {
                    doc.warn(
                        "unsupported-field",
                        &vf(&format!("valueFrom.{source}")),
                        format!("podmesh has no {source} source: {name} is left unset"),
                    );
                    continue;
                }
                _ => {
                    doc.error(&vf("valueFrom"), "must set exactly one source");
                    continue;
                }
            },
        };
        out.push(EnvVar { name: name.to_string(), value });
    }
    out
}

/// The downward-API field a `fieldPath` names.
fn pod_field(path: &str) -> Option<PodField> {
    let key = |prefix: &str| {
        let rest = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(rest.to_string()).filter(|k| !k.is_empty())
    };
    Some(match path {
        "metadata.name" => PodField::Name,
        "metadata.namespace" => PodField::Namespace,
        "spec.nodeName" => PodField::NodeName,
        "spec.serviceAccountName" => PodField::ServiceAccountName,
        "status.hostIP" => PodField::HostIp,
        "status.podIP" => PodField::PodIp,
        "status.podIPs" => PodField::PodIps,
        _ => {
            if let Some(k) = key("metadata.labels['") {
                PodField::Label(k)
            } else {
                PodField::Annotation(key("metadata.annotations['")?)
            }
        }
    })
}

/// A readiness probe, with Kubernetes' defaults (period 10 s, timeout 1 s, thresholds 1 and 3).
fn probe(doc: &mut Doc<'_>, pf: &dyn Fn(&str) -> String, p: &wire::Probe) -> Option<Probe> {
    let handlers = [p.http_get.is_some(), p.tcp_socket.is_some(), p.exec.is_some(), p.grpc.is_some()];
    if handlers.iter().filter(|h| **h).count() != 1 {
        doc.error(&pf("httpGet"), "a probe sets exactly one of httpGet, tcpSocket, exec and grpc");
        return None;
    }
    let port = |doc: &mut Doc<'_>, field: &str, value: &Option<wire::IntOrString>| match value {
        Some(v) => port_ref(doc, field, v),
        None => {
            doc.error(field, "missing");
            None
        }
    };
    let action = if let Some(h) = &p.http_get {
        let port = port(doc, &pf("httpGet.port"), &h.port)?;
        if h.host.is_some() {
            doc.warn("unsupported-field", &pf("httpGet.host"), "ignored: podmesh probes the pod's own address");
        }
        let https = match h.scheme.as_deref() {
            None | Some("HTTP") => false,
            Some("HTTPS") => true,
            Some(other) => {
                doc.error(&pf("httpGet.scheme"), format!("{other:?} is not HTTP or HTTPS"));
                return None;
            }
        };
        let headers = h.http_headers.iter().flatten();
        let headers = headers.filter_map(|x| Some((x.name.clone()?, x.value.clone().unwrap_or_default()))).collect();
        let path = h.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
        ProbeAction::HttpGet { path, port, https, headers }
    } else if let Some(t) = &p.tcp_socket {
        let port = port(doc, &pf("tcpSocket.port"), &t.port)?;
        if t.host.is_some() {
            doc.warn("unsupported-field", &pf("tcpSocket.host"), "ignored: podmesh probes the pod's own address");
        }
        ProbeAction::TcpSocket { port }
    } else if let Some(e) = &p.exec {
        match e.command.clone().filter(|c| !c.is_empty()) {
            Some(command) => ProbeAction::Exec { command },
            None => {
                doc.error(&pf("exec.command"), "missing");
                return None;
            }
        }
    } else {
        doc.warn("unsupported-field", &pf("grpc"), "gRPC probes are not supported: the container counts as ready");
        return None;
    };
    let mut number = |field: &str, value: Option<i64>, default: u32, min: u32| -> Option<u32> {
        match value.map(u32::try_from) {
            None => Some(default),
            Some(Ok(n)) if n >= min => Some(n),
            Some(_) => {
                doc.error(&pf(field), format!("{} is out of range: at least {min}", value.unwrap_or_default()));
                None
            }
        }
    };
    let secs = |n: u32| std::time::Duration::from_secs(u64::from(n));
    Some(Probe {
        action,
        initial_delay: secs(number("initialDelaySeconds", p.initial_delay_seconds, 0, 0)?),
        period: secs(number("periodSeconds", p.period_seconds, 10, 1)?),
        timeout: secs(number("timeoutSeconds", p.timeout_seconds, 1, 1)?),
        success_threshold: number("successThreshold", p.success_threshold, 1, 1)?,
        failure_threshold: number("failureThreshold", p.failure_threshold, 3, 1)?,
    })
}

fn workload(doc: &mut Doc<'_>, kind: WorkloadKind, w: wire::Workload) -> Option<(Workload, wire::PodTemplate)> {
    check_meta(doc, &w.metadata, kind == WorkloadKind::StatefulSet);
    let Some(spec) = w.spec else {
        doc.error("spec", "missing");
        return None;
    };
    let replicas = spec.replicas.unwrap_or(1);
    if !(0..=MAX_REPLICAS).contains(&replicas) {
        doc.error("spec.replicas", format!("{replicas} is out of range: podmesh runs 0 to {MAX_REPLICAS} replicas"));
    }
    let Some(template) = spec.template else {
        doc.error("spec.template", "missing");
        return None;
    };
    let selector = spec.selector.and_then(|s| s.match_labels).unwrap_or_default();
    if selector.is_empty() {
        doc.error("spec.selector.matchLabels", "missing; it must select the template's labels");
    } else if !selector_matches(&selector, template.metadata.labels.as_ref().unwrap_or(&Labels::new())) {
        doc.error("spec.template.metadata.labels", "do not match spec.selector.matchLabels");
    }
    if let Some(sn) = &spec.service_name
        && !is_dns_label(sn)
    {
        doc.error("spec.serviceName", format!("{sn:?} is not a Service name"));
    }
    let pod_management = match (kind, spec.pod_management_policy.as_deref()) {
        (_, None) => PodManagement::OrderedReady,
        (WorkloadKind::StatefulSet, Some("OrderedReady")) => PodManagement::OrderedReady,
        (WorkloadKind::StatefulSet, Some("Parallel")) => PodManagement::Parallel,
        (WorkloadKind::StatefulSet, Some(other)) => {
            doc.error("spec.podManagementPolicy", format!("{other:?} is not OrderedReady or Parallel"));
            PodManagement::OrderedReady
        }
        (_, Some(_)) => {
            doc.warn("unsupported-field", "spec.podManagementPolicy", "only a StatefulSet has it; ignored");
            PodManagement::OrderedReady
        }
    };
    if doc.failed {
        return None;
    }
    let workload = Workload {
        kind,
        key: doc.object.key.clone(),
        replicas: u32::try_from(replicas).unwrap_or(0),
        service_name: spec.service_name.filter(|s| !s.is_empty()),
        pod_management,
        origin: Some(doc.origin.clone()),
    };
    Some((workload, template))
}

fn endpoint_slice(doc: &mut Doc<'_>, s: wire::EndpointSlice) -> Option<EndpointSlice> {
    check_meta(doc, &s.metadata, false);
    let Some(service) = s.metadata.labels.as_ref().and_then(|l| l.get("kubernetes.io/service-name")).cloned() else {
        doc.warn(
            "unsupported",
            "metadata.labels",
            "no kubernetes.io/service-name label, so this slice belongs to no Service; skipped",
        );
        return None;
    };
    match s.address_type.as_deref() {
        Some("IPv4" | "IPv6") => {}
        Some("FQDN") => {
            doc.warn("unsupported", "addressType", "FQDN endpoints are not supported; skipped");
            return None;
        }
        other => {
            doc.error("addressType", format!("{:?} is not an address type: use IPv4 or IPv6", other.unwrap_or("")));
        }
    }
    let ns = doc.object.key.namespace.clone();
    let mut endpoints = Vec::new();
    for (i, e) in s.endpoints.iter().flatten().enumerate() {
        let mut addresses = Vec::new();
        for (j, a) in e.addresses.iter().flatten().enumerate() {
            if let Some(ip) = parse_ip(doc, || format!("endpoints[{i}].addresses[{j}]"), a) {
                addresses.push(ip);
            }
        }
        let pod = e.target_ref.as_ref().filter(|r| r.kind.as_deref() == Some("Pod")).and_then(|r| {
            r.name
                .as_ref()
                .map(|n| ObjectKey::new(r.namespace.clone().map_or_else(|| ns.clone(), Into::into), n.clone()))
        });
        endpoints.push(SliceEndpoint {
            addresses,
            ready: e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
            hostname: e.hostname.clone(),
            pod,
        });
    }
    let mut ports = Vec::new();
    for (i, p) in s.ports.iter().flatten().enumerate() {
        let Some(port) = port_number(doc, || format!("ports[{i}].port"), p.port) else { continue };
        let protocol = l4_protocol(doc, || format!("ports[{i}].protocol"), p.protocol.as_deref());
        ports.push(SlicePort { name: p.name.clone().filter(|n| !n.is_empty()), port: TargetPort(port), protocol });
    }
    (!doc.failed).then(|| EndpointSlice {
        key: doc.object.key.clone(),
        service,
        endpoints,
        ports,
        origin: Some(doc.origin.clone()),
    })
}

fn string_match(doc: &mut Doc<'_>, field: &str, m: &wire::StringMatch) -> Option<StringMatch> {
    match (&m.exact, &m.prefix, &m.regex) {
        (Some(e), None, None) => Some(StringMatch::Exact(e.clone())),
        (None, Some(p), None) => Some(StringMatch::Prefix(p.clone())),
        (None, None, Some(r)) => match Pattern::new(r) {
            Ok(p) => Some(StringMatch::Regex(p)),
            Err(e) => {
                // A syntax error renders over several lines, showing the anchored pattern actually compiled
                // (`^(?:...)$`); keep the diagnostic to one line, about the pattern as written.
                let detail = match &e {
                    regex::Error::Syntax(s) => {
                        s.lines().last().unwrap_or_default().trim_start_matches("error: ").to_string()
                    }
                    other => other.to_string(),
                };
                doc.error(&format!("{field}.regex"), format!("{r:?} is not a valid regular expression: {detail}"));
                None
            }
        },
        _ => {
            doc.error(field, "set exactly one of exact, prefix or regex");
            None
        }
    }
}

fn virtual_service(doc: &mut Doc<'_>, v: wire::VirtualService) -> Option<VirtualService> {
    check_meta(doc, &v.metadata, false);
    let Some(spec) = v.spec else {
        doc.error("spec", "missing");
        return None;
    };
    if let Some(gw) = &spec.gateways
        && !gw.iter().any(|g| g == "mesh")
    {
        doc.warn(
            "unsupported",
            "spec.gateways",
            "binds only to gateways (not \"mesh\"), so it does not apply to sidecars; skipped",
        );
        return None;
    }
    let hosts = spec.hosts.unwrap_or_default();
    if hosts.is_empty() {
        doc.error("spec.hosts", "missing; list at least one host");
    }
    for (i, h) in hosts.iter().enumerate() {
        if h.is_empty() || h.contains('*') || h.contains('/') {
            doc.error(
                &format!("spec.hosts[{i}]"),
                format!("{h:?} is not supported: use a Service name or an exact hostname (no wildcards)"),
            );
        }
    }
    for (field, value) in [("spec.tcp", &spec.tcp), ("spec.tls", &spec.tls)] {
        if value.is_some() {
            doc.warn("unsupported", field, "TCP and TLS routes are not supported by podmesh; ignored");
        }
    }
    let mut http = Vec::new();
    for (i, r) in spec.http.iter().flatten().enumerate() {
        let f = |s: &str| format!("spec.http[{i}].{s}");
        for (name, value) in
            [("redirect", &r.redirect), ("rewrite", &r.rewrite), ("fault", &r.fault), ("mirror", &r.mirror)]
        {
            if value.is_some() {
                doc.warn("unsupported", &f(name), format!("{name} is not supported by podmesh; ignored"));
            }
        }
        let mut matches = Vec::new();
        for (j, m) in r.match_.iter().flatten().enumerate() {
            let mf = |s: &str| f(&format!("match[{j}].{s}"));
            let mut out = HttpMatch::default();
            if let Some(u) = &m.uri {
                out.uri = string_match(doc, &mf("uri"), u);
            }
            if let Some(me) = &m.method {
                out.method = string_match(doc, &mf("method"), me);
            }
            for (name, hm) in m.headers.iter().flatten() {
                if let Some(sm) = string_match(doc, &mf(&format!("headers.{name}")), hm) {
                    out.headers.insert(name.to_ascii_lowercase(), sm);
                }
            }
            if let Some(p) = m.port {
                out.port = port_number(doc, || mf("port"), Some(p)).map(ServicePort);
            }
            matches.push(out);
        }
        let routes = r.route.as_deref().unwrap_or_default();
        if routes.is_empty() {
            doc.error(&f("route"), "missing; list at least one destination");
        }
        let all_unweighted = routes.iter().all(|d| d.weight.is_none());
        let mut destinations = Vec::new();
        for (j, d) in routes.iter().enumerate() {
            let df = |s: &str| f(&format!("route[{j}].{s}"));
            let Some(dest) = &d.destination else {
                doc.error(&df("destination"), "missing");
                continue;
            };
            let Some(host) = dest.host.clone().filter(|h| !h.is_empty()) else {
                doc.error(&df("destination.host"), "missing");
                continue;
            };
            let weight = match d.weight {
                None if all_unweighted => 1,
                None => 0,
                Some(w) if (0..=1_000_000).contains(&w) => w as u32,
                Some(w) => {
                    doc.error(&df("weight"), format!("{w} is out of range: weights are relative, from 0 to 1000000"));
                    // Left out, rather than counted as 0, so that "every destination has weight 0" does not follow.
                    continue;
                }
            };
            let port = match dest.port.as_ref().and_then(|p| p.number) {
                Some(n) => port_number(doc, || df("destination.port.number"), Some(n)).map(ServicePort),
                None => None,
            };
            destinations.push(WeightedDestination { host, subset: dest.subset.clone(), port, weight });
        }
        if !destinations.is_empty() && destinations.iter().all(|d| d.weight == 0) {
            doc.error(&f("route"), "every destination has weight 0, so no request could be routed");
        }
        let timeout = r.timeout.as_deref().and_then(|t| {
            let d = parse_duration(t);
            if d.is_none() {
                doc.error(&f("timeout"), format!("{t:?} is not a duration (e.g. 5s, 250ms)"));
            }
            d
        });
        http.push(HttpRoute {
            name: r.name.clone(),
            matches,
            destinations,
            timeout,
            retries: r.retries.as_ref().and_then(|r| r.attempts),
        });
    }
    (!doc.failed).then(|| VirtualService { key: doc.object.key.clone(), hosts, http, origin: Some(doc.origin.clone()) })
}

fn destination_rule(doc: &mut Doc<'_>, d: wire::DestinationRule) -> Option<DestinationRule> {
    check_meta(doc, &d.metadata, false);
    let Some(spec) = d.spec else {
        doc.error("spec", "missing");
        return None;
    };
    let Some(host) = spec.host.filter(|h| !h.is_empty()) else {
        doc.error("spec.host", "missing");
        return None;
    };
    if spec.traffic_policy.is_some() {
        doc.warn(
            "unsupported",
            "spec.trafficPolicy",
            "trafficPolicy is not supported by podmesh (it balances by least request); ignored",
        );
    }
    let mut subsets = Vec::new();
    let mut names = BTreeSet::new();
    for (i, s) in spec.subsets.iter().flatten().enumerate() {
        let Some(name) = s.name.clone().filter(|n| !n.is_empty()) else {
            doc.error(&format!("spec.subsets[{i}].name"), "missing");
            continue;
        };
        // Istio requires a DNS label; the sidecar also carries the subset in a TLS server name (R3.6), where a
        // label is at most 63 bytes including the `_` it appends.
        if !is_dns_label(&name) || name.len() > 62 {
            doc.error(
                &format!("spec.subsets[{i}].name"),
                format!("{name:?} is not a valid subset name: use lowercase letters, digits and '-', at most 62"),
            );
        }
        if !names.insert(name.clone()) {
            doc.error(&format!("spec.subsets[{i}].name"), format!("subset {name:?} is defined twice"));
        }
        if s.traffic_policy.is_some() {
            doc.warn(
                "unsupported",
                &format!("spec.subsets[{i}].trafficPolicy"),
                "trafficPolicy is not supported by podmesh; ignored",
            );
        }
        subsets.push(Subset { name, labels: s.labels.clone().unwrap_or_default() });
    }
    (!doc.failed).then(|| DestinationRule {
        key: doc.object.key.clone(),
        host,
        subsets,
        origin: Some(doc.origin.clone()),
    })
}

fn mtls_mode(doc: &mut Doc<'_>, field: &str, mode: Option<&str>) -> Option<MtlsMode> {
    match mode {
        None | Some("UNSET") => None,
        Some("STRICT") => Some(MtlsMode::Strict),
        Some("PERMISSIVE") => Some(MtlsMode::Permissive),
        Some("DISABLE") => Some(MtlsMode::Disable),
        Some(other) => {
            doc.error(field, format!("{other:?} is not a mode: use STRICT, PERMISSIVE, DISABLE or UNSET"));
            None
        }
    }
}

fn peer_authentication(doc: &mut Doc<'_>, p: wire::PeerAuthentication) -> Option<PeerAuthentication> {
    check_meta(doc, &p.metadata, false);
    let spec = p.spec;
    let selector = spec.selector.and_then(|s| s.match_labels).filter(|m| !m.is_empty());
    let mode = mtls_mode(doc, "spec.mtls.mode", spec.mtls.as_ref().and_then(|m| m.mode.as_deref()));
    let mut port_level = BTreeMap::new();
    for (port, m) in spec.port_level_mtls.iter().flatten() {
        let field = format!("spec.portLevelMtls.{port}");
        match port.parse::<u16>() {
            Ok(n) if n > 0 => {
                let mode = mtls_mode(doc, &format!("{field}.mode"), m.mode.as_deref());
                port_level.insert(TargetPort(n), mode);
            }
            _ => doc.error(&field, format!("{port:?} is not a port number")),
        }
    }
    if !port_level.is_empty() && selector.is_none() {
        doc.error(
            "spec.portLevelMtls",
            "portLevelMtls needs a workload selector (as in Istio): ports are a workload's, not a namespace's",
        );
    }
    (!doc.failed).then(|| PeerAuthentication {
        key: doc.object.key.clone(),
        selector,
        mode,
        port_level,
        origin: Some(doc.origin.clone()),
    })
}

fn mesh_config(spec: wire::MeshConfigSpec, origin: &Origin, diags: &mut Vec<Diagnostic>) -> MeshConfig {
    let mut doc =
        Doc { origin, object: ObjectRef::new(Kind::MeshConfig, ObjectKey::new("", "mesh")), diags, failed: false };
    let mut mesh = MeshConfig::default();
    let nonempty = |doc: &mut Doc<'_>, field: &str, v: Option<String>, into: &mut String| {
        if let Some(v) = v {
            if is_dns_subdomain(&v) {
                *into = v;
            } else {
                doc.error(field, format!("{v:?} is not a DNS name"));
            }
        }
    };
    nonempty(&mut doc, "spec.trustDomain", spec.trust_domain, &mut mesh.trust_domain);
    nonempty(&mut doc, "spec.clusterDomain", spec.cluster_domain, &mut mesh.cluster_domain);
    nonempty(&mut doc, "spec.rootNamespace", spec.root_namespace, &mut mesh.root_namespace);
    if let Some(mode) = spec.outbound_traffic_policy.and_then(|p| p.mode) {
        mesh.outbound_traffic_policy = match mode.as_str() {
            "ALLOW_ANY" => OutboundPolicy::AllowAny,
            "REGISTRY_ONLY" => OutboundPolicy::RegistryOnly,
            other => {
                doc.error(
                    "spec.outboundTrafficPolicy.mode",
                    format!("{other:?} is not a mode: use ALLOW_ANY or REGISTRY_ONLY"),
                );
                OutboundPolicy::AllowAny
            }
        };
    }
    for (field, value, into) in [
        ("spec.podCIDR", spec.pod_cidr, &mut mesh.pod_cidr),
        ("spec.serviceCIDR", spec.service_cidr, &mut mesh.service_cidr),
    ] {
        if let Some(v) = value {
            match v.parse::<ipnet::IpNet>() {
                Ok(net) if net.prefix_len() < net.max_prefix_len() - 4 => *into = net.trunc(),
                Ok(_) => doc.error(field, format!("{v} is too small: use a range of at least 32 addresses")),
                Err(_) => doc.error(field, format!("{v:?} is not a CIDR (e.g. 10.244.0.0/16)")),
            }
        }
    }
    if let Some(t) = spec.protocol_detection_timeout {
        match parse_duration(&t) {
            Some(d) => mesh.protocol_detection_timeout = d,
            None => doc.error("spec.protocolDetectionTimeout", format!("{t:?} is not a duration (e.g. 5s, 250ms)")),
        }
    }
    mesh
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_label("web-1"));
        assert!(!is_dns_label("Web"));
        assert!(!is_dns_label("-web"));
        assert!(!is_dns_label(&"a".repeat(64)));
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
        assert!(is_port_name("http-web"));
        assert!(!is_port_name("8080"));
        assert!(!is_port_name("http--x"));
        assert!(!is_port_name("a-very-long-port-name"));
    }

    #[test]
    fn safe_encoding_is_stable() {
        assert_eq!(safe_encode(12345, 10), safe_encode(12345, 10));
        assert_eq!(safe_encode(0, 5).len(), 5);
        assert!(safe_encode(u64::MAX, 10).bytes().all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b)));
    }
}
