//! `podmesh check`: contract pitfalls in otherwise valid manifests.
//!
//! Each finding names the object and what to change. Findings that make traffic fail for certain are errors
//! (a `targetPort` naming no container port); the rest are warnings.

use std::collections::{BTreeMap, BTreeSet};

use podmesh_model::{Diagnostic, Kind, L4Protocol, ObjectKey, ObjectRef, Pod, TargetPortRef};

use crate::config::Inbound;
use crate::index::{Index, ProtocolConflict};
use crate::protocol::Protocol;

/// Every pitfall found, plus the index's own diagnostics (conflicts, references to nothing), sorted.
pub fn pitfalls(ix: &Index) -> Vec<Diagnostic> {
    let mut out: Vec<Diagnostic> = ix.diagnostics().to_vec();
    // Every pod's inbound ports, computed once for the checks that need them.
    let inbound: BTreeMap<&ObjectKey, (Inbound, Vec<ProtocolConflict>)> =
        ix.cluster().pods.values().map(|p| (&p.key, ix.inbound(p))).collect();
    statefulsets_without_headless_service(ix, &mut out);
    undeclared_container_ports(ix, &inbound, &mut out);
    unresolvable_target_ports(ix, &mut out);
    port_level_mtls_on_service_ports(ix, &inbound, &mut out);
    protocol_conflicts(ix, &inbound, &mut out);
    out.sort_by(|a, b| {
        (a.severity, &a.origin, &a.object, &a.field, &a.message)
            .cmp(&(b.severity, &b.origin, &b.object, &b.field, &b.message))
    });
    out.dedup();
    out
}

/// The object a pod's problem is best reported on: its Deployment/StatefulSet, else the pod.
fn owner_ref(pod: &Pod) -> ObjectRef {
    match &pod.owner {
        Some(o) => ObjectRef::new(
            match o.kind {
                podmesh_model::WorkloadKind::Deployment => Kind::Deployment,
                podmesh_model::WorkloadKind::StatefulSet => Kind::StatefulSet,
            },
            ObjectKey::new(pod.key.namespace.clone(), o.name.clone()),
        ),
        None => ObjectRef::new(Kind::Pod, pod.key.clone()),
    }
}

fn statefulsets_without_headless_service(ix: &Index, out: &mut Vec<Diagnostic>) {
    let c = ix.cluster();
    for w in c.workloads.values().filter(|w| w.kind == podmesh_model::WorkloadKind::StatefulSet) {
        let object = ObjectRef::new(Kind::StatefulSet, w.key.clone());
        let problem = match &w.service_name {
            None => Some("missing, so the pods get no per-pod DNS names".to_string()),
            Some(name) => match c.services.get(&ObjectKey::new(w.key.namespace.clone(), name.clone())) {
                None => Some(format!("{name:?} names no Service, so the pods get no per-pod DNS names")),
                Some(s) if !s.headless => Some(format!(
                    "Service {name:?} is not headless, so the pods get no per-pod DNS names and cannot be called directly"
                )),
                Some(_) => None,
            },
        };
        if let Some(message) = problem {
            out.push(
                Diagnostic::warning("statefulset-without-headless-service", message)
                    .at(w.origin.as_ref())
                    .object(object)
                    .field("spec.serviceName")
                    .hint(format!(
                        "create a headless Service (clusterIP: None) named {} selecting the StatefulSet's pods, declaring the ports peers use",
                        w.service_name.as_deref().unwrap_or(&w.key.name)
                    )),
            );
        }
    }
}

type InboundOf<'a> = BTreeMap<&'a ObjectKey, (Inbound, Vec<ProtocolConflict>)>;

fn undeclared_container_ports(ix: &Index, inbound_of: &InboundOf<'_>, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for pod in ix.cluster().pods.values().filter(|p| p.sidecar) {
        let Some((inbound, _)) = inbound_of.get(&pod.key) else { continue };
        for cp in pod.container_ports().filter(|p| p.protocol == L4Protocol::Tcp) {
            if inbound.ports.contains_key(&cp.port) {
                continue;
            }
            let object = owner_ref(pod);
            if !seen.insert((object.clone(), cp.port)) {
                continue;
            }
            let name = cp.name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default();
            out.push(
                Diagnostic::warning(
                    "undeclared-container-port",
                    format!("container port {}{name} is declared by no Service selecting the pods, so the mesh refuses traffic to it (undeclared_port)", cp.port),
                )
                .at(pod.origin.as_ref())
                .object(object)
                .hint(format!("add port {} to a Service selecting these pods, or remove it from the container's ports", cp.port)),
            );
        }
    }
}

fn unresolvable_target_ports(ix: &Index, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for svc in ix.cluster().services.values() {
        for (i, spec) in svc.ports.iter().enumerate() {
            let TargetPortRef::Name(name) = &spec.target_port else { continue };
            for pod in ix.pods_of_service(&svc.key) {
                if pod.named_port(name).is_some() || !seen.insert((svc.key.clone(), i, owner_ref(pod))) {
                    continue;
                }
                out.push(
                    Diagnostic::error(
                        "unknown-target-port",
                        format!("targetPort {name:?} names no container port of {} it selects, so those pods get no traffic on port {}", owner_ref(pod), spec.port),
                    )
                    .at(svc.origin.as_ref())
                    .object(ObjectRef::new(Kind::Service, svc.key.clone()))
                    .field(format!("spec.ports[{i}].targetPort"))
                    .hint(format!("name a container port {name:?} in the pod template, or use the port number")),
                );
            }
        }
    }
}

fn port_level_mtls_on_service_ports(ix: &Index, inbound_of: &InboundOf<'_>, out: &mut Vec<Diagnostic>) {
    let c = ix.cluster();
    for pa in c.peer_authentications.values() {
        let Some(selector) = &pa.selector else { continue };
        let pods: Vec<&Pod> = c
            .pods
            .values()
            .filter(|p| p.key.namespace == pa.key.namespace && podmesh_model::selector_matches(selector, &p.labels))
            .collect();
        for port in pa.port_level.keys() {
            let is_target =
                pods.iter().any(|p| inbound_of.get(&p.key).is_some_and(|(i, _)| i.ports.contains_key(port)));
            if is_target {
                continue;
            }
            let service_port = pods.iter().flat_map(|p| ix.services_of_pod(&p.key)).find_map(|s| {
                s.ports.iter().find(|sp| sp.port.0 == port.0).map(|sp| (s.key.clone(), sp.target_port.clone()))
            });
            let (message, hint) = match service_port {
                Some((svc, target)) => (
                    format!(
                        "portLevelMtls key {port} is a port of Service {svc}, not a target port; pods receive that traffic on {target}"
                    ),
                    format!("key portLevelMtls by the target port ({target})"),
                ),
                None => (
                    format!(
                        "portLevelMtls key {port} is not a declared target port of any pod it selects; it has no effect"
                    ),
                    "key portLevelMtls by a target port the selected pods' Services declare".to_string(),
                ),
            };
            out.push(
                Diagnostic::warning("port-level-mtls-not-target-port", message)
                    .at(pa.origin.as_ref())
                    .object(ObjectRef::new(Kind::PeerAuthentication, pa.key.clone()))
                    .field(format!("spec.portLevelMtls.{port}"))
                    .hint(hint),
            );
        }
    }
}

fn protocol_conflicts(ix: &Index, inbound_of: &InboundOf<'_>, out: &mut Vec<Diagnostic>) {
    let mut seen = BTreeSet::new();
    for pod in ix.cluster().pods.values() {
        let Some((_, conflicts)) = inbound_of.get(&pod.key) else { continue };
        for conflict in conflicts {
            let (chosen, other) = (&conflict.chosen, &conflict.other);
            if !seen.insert((conflict.port, chosen.clone(), other.clone())) {
                continue;
            }
            let svc = ix.cluster().services.get(&other.1);
            let name = |p: Protocol| p.as_str();
            out.push(
                Diagnostic::warning(
                    "protocol-conflict",
                    format!(
                        "gives target port {} of {} protocol {}, but Service {} gives it {}; {} applies (the first Service by name)",
                        conflict.port,
                        owner_ref(pod),
                        name(other.0),
                        chosen.1,
                        name(chosen.0),
                        name(chosen.0)
                    ),
                )
                .at(svc.and_then(|s| s.origin.as_ref()))
                .object(ObjectRef::new(Kind::Service, other.1.clone()))
                .hint("declare the same appProtocol for this target port in every Service that selects these pods"),
            );
        }
    }
}
