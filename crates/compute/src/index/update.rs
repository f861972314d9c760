//! Incremental indexing: [`Index::update`] applies the objects that changed between two versions of the cluster
//! in place, touching only the relations, DNS records, modes and outbound resources they reach. After it, the
//! index is equal (`==`) to [`Index::new`] of the new cluster; `tests/update.rs` checks this for random sequences
//! of changes.
//!
//! Each change is applied in three steps: the old objects' contributions are retracted (using the relations as
//! they were), the objects are replaced, and the new contributions are added. What is retracted and re-added is
//! decided up front: the "dirty" Services, whose members, endpoints, records or routes can differ, and the pods
//! whose relations or modes can differ. The relations of the few routing objects (DestinationRules and
//! VirtualServices) and of the PeerAuthentications are built again whole.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use podmesh_model::{Cluster, Kind, ObjectKey, ObjectRef, ServicePort, selector_matches};

use super::{Impact, Index, add_pod_relations, add_slice_relations, sorted_insert};
use crate::config::{ClusterName, Outbound, PortModes, RouteTable};
use crate::fxmap::FxMap;
use crate::mtls::Policies;
use crate::names::service_fqdn;

/// Each namespace's modes, made once per update (the pods of a namespace share them, as in a built index).
type NamespaceModes = FxMap<Arc<str>, Arc<PortModes>>;

impl Index {
    /// Whether [`Index::update`] applies these changes in place: every kind is, but the MeshConfig, whose
    /// settings (domain, trust domain, root namespace) every name and identity is made from; a change to it
    /// re-indexes.
    pub fn updates_in_place(&self, changed: &[ObjectRef]) -> bool {
        changed.iter().all(|o| o.kind != Kind::MeshConfig)
    }

    /// Applies `changed` — the objects that differ between this index's cluster and `next`
    /// ([`Cluster::changes`]) — in place, moving the new versions of those objects out of `next`. Returns what
    /// the change can reach in the sidecar configs (the impact before and after, merged), or `None`, with
    /// nothing touched, when [`Index::updates_in_place`] says a re-index is needed.
    pub fn update(&mut self, next: &mut Cluster, changed: &[ObjectRef]) -> Option<Impact> {
        if !self.updates_in_place(changed) {
            return None;
        }
        let mut imp = Impact::default();
        for o in changed {
            imp.merge(self.impact(o));
        }
        let keys = |kind: Kind| -> BTreeSet<ObjectKey> {
            changed.iter().filter(|o| o.kind == kind).map(|o| o.key.clone()).collect()
        };
        let (pods, services, slices) = (keys(Kind::Pod), keys(Kind::Service), keys(Kind::EndpointSlice));
        let routing =
            changed.iter().any(|o| matches!(o.kind, Kind::Service | Kind::VirtualService | Kind::DestinationRule));
        let policy = changed.iter().any(|o| o.kind == Kind::PeerAuthentication);
        // Pods whose modes a changed PeerAuthentication reaches, before and after.
        let moded: BTreeSet<ObjectKey> = if policy { self.policy_scope(next, changed) } else { BTreeSet::new() };
        let touched_pods: Vec<ObjectKey> = pods.union(&moded).cloned().collect();
        let mut dirty = self.dirty_services(next, &touched_pods, &services, &slices);
        // Services whose virtual hosts (and subsets) are made again with their listeners: the changed ones, and
        // those a changed routing object reaches.
        let mut routed = services.clone();
        if routing {
            routed.extend(self.routing_dirty(next, changed));
            dirty.extend(routed.iter().cloned());
        }
        let mut outbound = std::mem::take(&mut self.outbound);
        let mut touched = BTreeSet::new();
        let out = Arc::make_mut(&mut outbound);

        // 1. Retract what the old objects contributed.
        for s in &dirty {
            self.retract_service(s, routed.contains(s), out, &mut touched);
        }
        for p in &pods {
            self.retract_pod(p, out);
        }
        for p in moded.difference(&pods) {
            self.modes.remove(p);
            self.mode_conflicts.remove(p);
        }
        for l in &slices {
            self.retract_slice(l);
        }

        // 2. Replace the objects, and build the few relations that are built whole again.
        self.cluster.apply_changes(next, changed);
        for s in &services {
            let fqdn = service_fqdn(&s.name, &s.namespace, self.domain());
            match self.cluster.services.contains_key(s) {
                true => self.service_by_fqdn.insert(fqdn, s.clone()),
                false => self.service_by_fqdn.remove(&fqdn),
            };
        }
        if policy {
            self.policy_diagnostics.clear();
            self.policies = Policies::new(&self.cluster, &mut self.policy_diagnostics);
        }
        if routing {
            self.index_routing();
        }

        // 3. Add what the new objects contribute: slices and pods first, as members and endpoints come from them.
        for l in &slices {
            if let Some(slice) = self.cluster.endpoint_slices.get(l) {
                add_slice_relations(
                    &mut self.slices_of_service,
                    &mut self.slices_by_addr,
                    &mut self.slices_by_pod,
                    slice,
                );
            }
        }
        let mut namespace_modes = NamespaceModes::default();
        for p in &pods {
            self.add_pod(p, &mut namespace_modes, out);
        }
        for p in moded.difference(&pods) {
            self.add_modes(p, &mut namespace_modes, out);
        }
        let mut tables = BTreeSet::new();
        remove_virtual_hosts(out, &routed, &mut tables);
        for s in &dirty {
            self.add_service(s, routed.contains(s), out, &mut tables, &mut touched);
        }
        if routing {
            self.replace_literal_hosts(out, &mut tables);
        }
        for port in tables {
            if let Some(table) = out.routes.get_mut(&port) {
                if table.virtual_hosts.is_empty() {
                    out.routes.remove(&port);
                } else {
                    *table = RouteTable::from(std::mem::take(&mut table.virtual_hosts));
                }
            }
        }
        self.outbound = outbound;
        for o in changed {
            imp.merge(self.impact(o));
        }
        imp.clusters = Some(touched);
        Some(imp)
    }

    /// The pods whose modes the changed PeerAuthentications reach, as they were and as they are in `next` (a
    /// mesh-wide policy reaches every pod).
    fn policy_scope(&self, next: &Cluster, changed: &[ObjectRef]) -> BTreeSet<ObjectKey> {
        let mut out = BTreeSet::new();
        for o in changed.iter().filter(|o| o.kind == Kind::PeerAuthentication) {
            let versions = [self.cluster.peer_authentications.get(&o.key), next.peer_authentications.get(&o.key)];
            for pa in versions.into_iter().flatten() {
                out.extend(Policies::scope(&self.cluster, pa).map(|p| p.key.clone()));
            }
        }
        out
    }

    /// The Services whose routes or subsets a change to Services, DestinationRules or VirtualServices can alter:
    /// those the changed routing objects apply to or could apply to (any Service a host of theirs can name,
    /// before or after), and those whose VirtualService names a changed Service (a destination's ports choose
    /// the route's cluster). A changed Service is itself dirty already.
    fn routing_dirty(&self, next: &Cluster, changed: &[ObjectRef]) -> BTreeSet<ObjectKey> {
        let (mut vss, mut drs) = (BTreeSet::new(), BTreeSet::new());
        for o in changed {
            match o.kind {
                Kind::VirtualService => {
                    vss.insert(&o.key);
                }
                Kind::DestinationRule => {
                    drs.insert(&o.key);
                }
                // A DestinationRule applies to the one Service its host names, which is dirty when it changes (a
                // host's candidate names can name at most one Service: names and namespaces are DNS labels). A
                // VirtualService's routes also depend on their destinations' ports.
                Kind::Service => {
                    let fqdn = service_fqdn(&o.key.name, &o.key.namespace, self.domain());
                    vss.extend(self.vs_by_name.get(&fqdn).into_iter().flatten());
                }
                _ => {}
            }
        }
        let mut dirty: BTreeSet<ObjectKey> = BTreeSet::new();
        dirty.extend(self.vs_of_service.iter().filter(|(_, v)| vss.contains(v)).map(|(s, _)| s.clone()));
        dirty.extend(self.dr_of_service.iter().filter(|(_, d)| drs.contains(d)).map(|(s, _)| s.clone()));
        for key in vss {
            for vs in [self.cluster.virtual_services.get(key), next.virtual_services.get(key)].into_iter().flatten() {
                for host in &vs.hosts {
                    dirty.extend(self.services_named(host, &key.namespace));
                }
            }
        }
        for key in drs {
            for dr in [self.cluster.destination_rules.get(key), next.destination_rules.get(key)].into_iter().flatten() {
                dirty.extend(self.services_named(&dr.host, &key.namespace));
            }
        }
        dirty
    }

    /// Every Service a host written in namespace `ns` can name (whichever of its candidate names exist).
    fn services_named(&self, host: &str, ns: &str) -> Vec<ObjectKey> {
        self.candidate_names(host, ns).into_iter().filter_map(|n| self.service_by_fqdn.get(&n).cloned()).collect()
    }

    /// Replaces the virtual hosts of literal VirtualService hosts: after the Services' ones, in host order.
    fn replace_literal_hosts(&self, out: &mut Outbound, tables: &mut BTreeSet<ServicePort>) {
        for (port, table) in out.routes.iter_mut() {
            let before = table.virtual_hosts.len();
            table.virtual_hosts.retain(|vh| vh.service.is_some());
            if table.virtual_hosts.len() != before {
                tables.insert(*port);
            }
        }
        for (port, vh) in self.literal_virtual_hosts(&mut Vec::new()) {
            out.routes.entry(port).or_default().virtual_hosts.push(vh);
            tables.insert(port);
        }
    }

    /// The Services whose members, endpoints, DNS records or outbound resources the change can alter: the
    /// changed Services; those of changed EndpointSlices (before and after); for a changed pod, the Services
    /// that declare ports for it now, those whose selector matches its new labels, and those whose slices list
    /// its old or new address or its name.
    fn dirty_services(
        &self,
        next: &Cluster,
        pods: &[ObjectKey],
        services: &BTreeSet<ObjectKey>,
        slices: &BTreeSet<ObjectKey>,
    ) -> BTreeSet<ObjectKey> {
        let mut dirty = services.clone();
        for l in slices {
            for slice in [self.cluster.endpoint_slices.get(l), next.endpoint_slices.get(l)].into_iter().flatten() {
                dirty.insert(ObjectKey::new(slice.key.namespace.clone(), slice.service.clone()));
            }
        }
        for p in pods {
            dirty.extend(self.services_of_pod.get(p).into_iter().flatten().cloned());
            for pod in [self.cluster.pods.get(p), next.pods.get(p)].into_iter().flatten() {
                let listing = self.slices_by_addr.get(&pod.ip).into_iter().chain(self.slices_by_pod.get(p)).flatten();
                for slice in listing.filter_map(|k| self.cluster.endpoint_slices.get(k)) {
                    dirty.insert(ObjectKey::new(slice.key.namespace.clone(), slice.service.clone()));
                }
            }
            if let Some(pod) = next.pods.get(p) {
                let start = ObjectKey::new(pod.key.namespace.clone(), "");
                let same_namespace =
                    self.cluster.services.range(start..).take_while(|(k, _)| k.namespace == pod.key.namespace);
                for (key, svc) in same_namespace {
                    if svc.selector.as_ref().is_some_and(|sel| selector_matches(sel, &pod.labels)) {
                        dirty.insert(key.clone());
                    }
                }
            }
        }
        dirty
    }

    /// Removes a Service's members and DNS records, and its clusters; for a `routed` one also its listeners and
    /// name (its virtual hosts are replaced in `add_service`).
    fn retract_service(
        &mut self,
        key: &ObjectKey,
        routed: bool,
        out: &mut Outbound,
        touched: &mut BTreeSet<ClusterName>,
    ) {
        let Some(svc) = self.cluster.services.get(key) else { return };
        for (name, _) in self.service_dns(svc) {
            self.dns.remove(&name);
        }
        let fqdn = service_fqdn(&key.name, &key.namespace, self.domain());
        let subsets = self.subsets_of(key);
        for spec in &svc.ports {
            let names = std::iter::once(None).chain(subsets.iter().map(|(s, _)| Some(s.as_str())));
            for name in names.map(|subset| ClusterName::new(&fqdn, spec.port, subset)) {
                if out.clusters.remove(&name).is_some() {
                    touched.insert(name);
                }
            }
            if routed {
                for ip in &svc.cluster_ips {
                    let addr = SocketAddr::new(*ip, spec.port.0);
                    if out.listeners.get(&addr).is_some_and(|l| l.service == *key) {
                        out.listeners.remove(&addr);
                    }
                }
            }
        }
        for pod in self.pods_of_service.remove(key).into_iter().flatten() {
            remove_from(&mut self.services_of_pod, &pod, key);
        }
    }

    /// Removes a pod from the relations that hold it and from the direct table.
    fn retract_pod(&mut self, key: &ObjectKey, out: &mut Outbound) {
        let Some(pod) = self.cluster.pods.get(key) else { return };
        self.pod_by_ip.remove(&pod.ip);
        self.identities.remove(key);
        if let Some(owner) = &pod.owner {
            remove_from(&mut self.pods_by_owner, &ObjectKey::new(key.namespace.clone(), owner.name.clone()), key);
        }
        if let Some(names) = self.by_label.get_mut(&key.namespace) {
            for (k, v) in &pod.labels {
                if let Some(values) = names.get_mut(k) {
                    remove_from(values, v, key);
                    if values.is_empty() {
                        names.remove(k);
                    }
                }
            }
            if names.is_empty() {
                self.by_label.remove(&key.namespace);
            }
        }
        self.modes.remove(key);
        self.mode_conflicts.remove(key);
        out.pods.remove(&pod.ip);
    }

    fn retract_slice(&mut self, key: &ObjectKey) {
        let Some(slice) = self.cluster.endpoint_slices.get(key) else { return };
        remove_from(&mut self.slices_of_service, &ObjectKey::new(key.namespace.clone(), slice.service.clone()), key);
        for ep in &slice.endpoints {
            for addr in &ep.addresses {
                remove_from(&mut self.slices_by_addr, addr, key);
            }
            if let Some(pod) = &ep.pod {
                remove_from(&mut self.slices_by_pod, pod, key);
            }
        }
    }

    /// Adds a pod (if it exists now) to the relations, with its modes, and its direct-table entry.
    fn add_pod(&mut self, key: &ObjectKey, namespace_modes: &mut NamespaceModes, out: &mut Outbound) {
        let Some(pod) = self.cluster.pods.get(key) else { return };
        add_pod_relations(
            &mut self.pod_by_ip,
            &mut self.identities,
            &mut self.pods_by_owner,
            &mut self.by_label,
            &self.cluster,
            pod,
        );
        self.add_modes(key, namespace_modes, out);
    }

    /// Sets a pod's modes (if it exists and is meshed) and its direct-table entry, which carries them.
    fn add_modes(&mut self, key: &ObjectKey, namespace_modes: &mut NamespaceModes, out: &mut Outbound) {
        let Some(pod) = self.cluster.pods.get(key) else { return };
        if pod.sidecar {
            let ns = match namespace_modes.get(&key.namespace) {
                Some(ns) => Arc::clone(ns),
                None => {
                    let ns = Arc::new(self.policies.namespace_modes(&self.cluster, &key.namespace));
                    namespace_modes.insert(key.namespace.clone(), Arc::clone(&ns));
                    ns
                }
            };
            let (modes, conflict) = self.pod_modes(pod, &ns);
            self.modes.insert(key.clone(), modes);
            if let Some(pair) = conflict {
                self.mode_conflicts.insert(key.clone(), pair);
            }
        }
        out.pods.insert(pod.ip, self.direct_pod(pod));
    }

    /// Adds a Service's members, DNS records and clusters (if it exists now); for a `routed` one also its name,
    /// listeners and virtual hosts (whose old ones `remove_virtual_hosts` took out; the ports of route tables
    /// touched are added to `tables`).
    fn add_service(
        &mut self,
        key: &ObjectKey,
        routed: bool,
        out: &mut Outbound,
        tables: &mut BTreeSet<ServicePort>,
        touched: &mut BTreeSet<ClusterName>,
    ) {
        let Some(svc) = self.cluster.services.get(key) else { return };
        let members = self.members(svc);
        for pod in &members {
            sorted_insert(self.services_of_pod.entry(pod.clone()).or_default(), key);
        }
        self.pods_of_service.insert(key.clone(), members);
        let Some(svc) = self.cluster.services.get(key) else { return };
        for (name, ips) in self.service_dns(svc) {
            self.dns.insert(name, ips);
        }
        let made = self.service_outbound(svc);
        touched.extend(made.clusters.iter().map(|(name, _)| name.clone()));
        out.clusters.extend(made.clusters);
        if !routed {
            return;
        }
        out.listeners.extend(made.listeners);
        for (port, vh) in made.virtual_hosts {
            let hosts = &mut out.routes.entry(port).or_default().virtual_hosts;
            // Service hosts in Service order, then literal VirtualService hosts: as a re-index writes them.
            let at = hosts.iter().position(|h| h.service.as_ref().is_none_or(|s| s > key)).unwrap_or(hosts.len());
            hosts.insert(at, vh);
            tables.insert(port);
        }
    }
}

/// Removes `item` from the sorted list at `key`, and the key when its list is left empty.
fn remove_from<K, T, Q>(map: &mut std::collections::HashMap<K, Vec<T>, Q>, key: &K, item: &T)
where
    K: std::hash::Hash + Eq,
    T: Ord,
    Q: std::hash::BuildHasher,
{
    if let Some(list) = map.get_mut(key) {
        if let Ok(i) = list.binary_search(item) {
            list.remove(i);
        }
        if list.is_empty() {
            map.remove(key);
        }
    }
}

/// Takes the virtual hosts of `services` out of every route table (the ports of the tables touched are added to
/// `tables`); `add_service` puts their new ones in.
fn remove_virtual_hosts(out: &mut Outbound, services: &BTreeSet<ObjectKey>, tables: &mut BTreeSet<ServicePort>) {
    if services.is_empty() {
        return;
    }
    for (port, table) in out.routes.iter_mut() {
        let before = table.virtual_hosts.len();
        table.virtual_hosts.retain(|vh| vh.service.as_ref().is_none_or(|s| !services.contains(s)));
        if table.virtual_hosts.len() != before {
            tables.insert(*port);
        }
    }
}
