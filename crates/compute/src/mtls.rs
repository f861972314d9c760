//! R5 — peer-authentication mode of each pod and port, from PeerAuthentication objects.
//!
//! Mesh-wide (root namespace, no selector) → namespace (no selector) → workload (selector) → `portLevelMtls`
//! (keyed by target port): the narrowest level that sets a value wins; `UNSET` inherits; nothing set anywhere is
//! PERMISSIVE. When two policies claim the same level for a pod, the first by name applies and the conflict is
//! reported (Istio takes the oldest, which files do not have).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use podmesh_model::{
    Cluster, Diagnostic, Kind, MtlsMode, ObjectKey, ObjectRef, PeerAuthentication, Pod, selector_matches,
};

use crate::config::{MtlsFrom, PortModes};

#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Policies {
    mesh: Option<ObjectKey>,
    namespaces: BTreeMap<Arc<str>, ObjectKey>,
    /// Selector policies per namespace, in name order.
    workloads: BTreeMap<Arc<str>, Vec<ObjectKey>>,
}

impl Policies {
    pub fn new(cluster: &Cluster, diags: &mut Vec<Diagnostic>) -> Self {
        let mut p = Policies::default();
        let root = &cluster.mesh.root_namespace;
        for (key, pa) in &cluster.peer_authentications {
            match &pa.selector {
                Some(_) => p.workloads.entry(key.namespace.clone()).or_default().push(key.clone()),
                None if *key.namespace == **root => claim(&mut p.mesh, key, pa, "mesh-wide", diags),
                None => {
                    let mut slot = p.namespaces.get(&key.namespace).cloned();
                    claim(&mut slot, key, pa, "namespace-wide", diags);
                    if let Some(s) = slot {
                        p.namespaces.insert(key.namespace.clone(), s);
                    }
                }
            }
        }
        p
    }

    /// The modes of the pods of a namespace that no workload policy selects (mesh and namespace levels).
    pub fn namespace_modes(&self, cluster: &Cluster, namespace: &str) -> PortModes {
        let get = |k: &ObjectKey| cluster.peer_authentications.get(k);
        let mut mode = MtlsMode::Permissive;
        let mut from = MtlsFrom::Default;
        if let Some((k, m)) = self.mesh.as_ref().and_then(|k| Some((k, get(k)?.mode?))) {
            (mode, from) = (m, MtlsFrom::Mesh(k.clone()));
        }
        if let Some((k, m)) = self.namespaces.get(namespace).and_then(|k| Some((k, get(k)?.mode?))) {
            (mode, from) = (m, MtlsFrom::Namespace(k.clone()));
        }
        PortModes { default: mode, default_from: from, ports: BTreeMap::new() }
    }

    /// The modes of one pod when a workload policy selects it (None otherwise: the namespace's modes apply), and
    /// a second workload policy that also selects it (a conflict: the first by name applies).
    pub fn workload_modes(
        &self,
        cluster: &Cluster,
        pod: &Pod,
        namespace_modes: &PortModes,
    ) -> Option<(PortModes, Option<(ObjectKey, ObjectKey)>)> {
        let pas = &cluster.peer_authentications;
        let mut matching = self.workloads.get(&pod.key.namespace).into_iter().flatten().filter(|k| {
            pas.get(*k).and_then(|pa| pa.selector.as_ref()).is_some_and(|s| selector_matches(s, &pod.labels))
        });
        let key = matching.next()?;
        let conflict = matching.next().map(|other| (key.clone(), other.clone()));
        let pa = pas.get(key)?;
        let mut modes = namespace_modes.clone();
        if let Some(m) = pa.mode {
            (modes.default, modes.default_from) = (m, MtlsFrom::Workload(key.clone()));
        }
        for (port, m) in &pa.port_level {
            if let Some(m) = m {
                modes.ports.insert(*port, (*m, MtlsFrom::Port(key.clone())));
            }
        }
        Some((modes, conflict))
    }

    /// The pods a policy's decision reaches (for change impact): a mesh-wide policy reaches every pod.
    pub fn scope<'c>(cluster: &'c Cluster, pa: &'c PeerAuthentication) -> Box<dyn Iterator<Item = &'c Pod> + 'c> {
        let root = &cluster.mesh.root_namespace;
        match &pa.selector {
            None if *pa.key.namespace == **root => Box::new(cluster.pods.values()),
            None => Box::new(cluster.pods.values().filter(move |p| p.key.namespace == pa.key.namespace)),
            Some(sel) => Box::new(
                cluster
                    .pods
                    .values()
                    .filter(move |p| p.key.namespace == pa.key.namespace && selector_matches(sel, &p.labels)),
            ),
        }
    }
}

fn claim(
    slot: &mut Option<ObjectKey>,
    key: &ObjectKey,
    pa: &PeerAuthentication,
    level: &str,
    diags: &mut Vec<Diagnostic>,
) {
    match slot {
        None => *slot = Some(key.clone()),
        Some(first) => diags.push(
            Diagnostic::warning(
                "policy-conflict",
                format!(
                    "two {level} PeerAuthentications in namespace {}: {} applies, this one is ignored",
                    key.namespace, first.name
                ),
            )
            .at(pa.origin.as_ref())
            .object(ObjectRef::new(Kind::PeerAuthentication, key.clone()))
            .hint("keep one PeerAuthentication per level; merge the two"),
        ),
    }
}

/// Reports pairs of workload policies that select the same pod, once per pair.
pub(crate) fn report_workload_conflicts(
    cluster: &Cluster,
    pairs: BTreeSet<(ObjectKey, ObjectKey)>,
    diags: &mut Vec<Diagnostic>,
) {
    for (applied, ignored) in pairs {
        let pa = cluster.peer_authentications.get(&ignored);
        diags.push(
            Diagnostic::warning(
                "policy-conflict",
                format!("selects the same pods as PeerAuthentication {applied}, which applies to them; this one is ignored there"),
            )
            .at(pa.and_then(|p| p.origin.as_ref()))
            .object(ObjectRef::new(Kind::PeerAuthentication, ignored))
            .hint("make the selectors disjoint, or merge the two policies"),
        );
    }
}
