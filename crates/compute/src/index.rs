//! The index: a [`Cluster`] with the relations every config needs precomputed — which Services select which
//! pods, peer-authentication modes, VirtualService and DestinationRule attachment, DNS names — and the outbound
//! tables that every sidecar shares. From it, one workload's config is assembled in microseconds
//! ([`Index::proxy_config`]), and the effect of a change to one object is bounded without recomputing
//! ([`Index::impact`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use podmesh_model::{
    Cluster, Diagnostic, Kind, ObjectKey, ObjectRef, Pod, Service, ServicePort, ServicePortSpec, TargetPort,
    TargetPortRef, VirtualService, selector_matches,
};

use crate::config::*;
use crate::fxmap::FxMap;
use crate::mtls::{Policies, report_workload_conflicts};
use crate::names::{self, pod_fqdn, service_fqdn};
use crate::protocol::{self, Protocol, ProtocolFrom};

mod update;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComputeError {
    #[error("no pod {0} in the manifests")]
    NoSuchPod(ObjectKey),
    #[error("pod {0} has no sidecar (it is a plain pod), so it has no sidecar config")]
    NotMeshed(ObjectKey),
}

/// Every map is kept exactly as [`Index::new`] builds it, also after [`Index::update`]: list values are sorted
/// and hold each key once, and a key whose list would be empty is absent (except `pods_of_service`, which has
/// every Service). `PartialEq` compares all of it, which is how the tests check that an update and a re-index
/// agree.
#[derive(Debug)]
pub struct Index {
    cluster: Cluster,
    pod_by_ip: FxMap<IpAddr, ObjectKey>,
    /// Pods by namespace, label name and value: a selector only looks at pods carrying one of its labels.
    by_label: LabelIndex,
    /// Services that declare ports for a pod: their selector matches it, or their EndpointSlices list it.
    services_of_pod: FxMap<ObjectKey, Vec<ObjectKey>>,
    /// The reverse: pods a Service selects or lists.
    pods_of_service: FxMap<ObjectKey, Vec<ObjectKey>>,
    slices_of_service: FxMap<ObjectKey, Vec<ObjectKey>>,
    /// EndpointSlices listing an address, or naming a pod in a targetRef (for change impact).
    slices_by_addr: FxMap<IpAddr, Vec<ObjectKey>>,
    slices_by_pod: FxMap<ObjectKey, Vec<ObjectKey>>,
    /// Pods of each Deployment/StatefulSet.
    pods_by_owner: FxMap<ObjectKey, Vec<ObjectKey>>,
    /// Every pod's SPIFFE identity, built once and shared by its endpoints and direct-table entry.
    identities: FxMap<ObjectKey, Identity>,
    /// Peer-authentication modes of meshed pods; pods no workload policy selects share their namespace's.
    modes: FxMap<ObjectKey, Arc<PortModes>>,
    policies: Policies,
    /// Meshed pods that two workload policies select: the one that applies, and the other (reported).
    mode_conflicts: FxMap<ObjectKey, (ObjectKey, ObjectKey)>,
    service_by_fqdn: FxMap<String, ObjectKey>,
    /// The VirtualService whose routes a Service's host uses (first by name when several name it).
    vs_of_service: FxMap<ObjectKey, ObjectKey>,
    /// VirtualService literal hosts (naming no Service).
    vs_literal: BTreeMap<String, ObjectKey>,
    /// Canonical hosts accepted by the pods of a Service because a VirtualService routes them there (R4.3).
    vs_hosts_of_dest: FxMap<ObjectKey, BTreeSet<String>>,
    /// VirtualServices by every FQDN their hosts and destinations could name, for change impact.
    vs_by_name: FxMap<String, BTreeSet<ObjectKey>>,
    dr_of_service: FxMap<ObjectKey, ObjectKey>,
    dr_by_name: FxMap<String, BTreeSet<ObjectKey>>,
    /// A records: Service FQDNs (ClusterIPs, or ready pod IPs when headless) and per-pod names.
    dns: FxMap<String, Vec<IpAddr>>,
    outbound: Arc<Outbound>,
    /// Problems found in the PeerAuthentications (but for the workload-policy conflicts, made from
    /// `mode_conflicts`).
    policy_diagnostics: Vec<Diagnostic>,
    /// Problems found in the DestinationRules and VirtualServices and in the routes made from them.
    routing_diagnostics: Vec<Diagnostic>,
}

impl Index {
    /// The parts in which two indexes differ, by field name (empty when equal): what a test reports when an
    /// update and a re-index disagree.
    pub fn differing_parts(&self, other: &Index) -> Vec<&'static str> {
        // Destructured, so a new field cannot be left out of the comparison.
        let Index {
            cluster,
            pod_by_ip,
            by_label,
            services_of_pod,
            pods_of_service,
            slices_of_service,
            slices_by_addr,
            slices_by_pod,
            pods_by_owner,
            identities,
            modes,
            policies,
            mode_conflicts,
            service_by_fqdn,
            vs_of_service,
            vs_literal,
            vs_hosts_of_dest,
            vs_by_name,
            dr_of_service,
            dr_by_name,
            dns,
            outbound,
            policy_diagnostics,
            routing_diagnostics,
        } = self;
        let mut out = Vec::new();
        if *cluster != other.cluster {
            out.push("cluster");
        }
        if *pod_by_ip != other.pod_by_ip {
            out.push("pod_by_ip");
        }
        if *by_label != other.by_label {
            out.push("by_label");
        }
        if *services_of_pod != other.services_of_pod {
            out.push("services_of_pod");
        }
        if *pods_of_service != other.pods_of_service {
            out.push("pods_of_service");
        }
        if *slices_of_service != other.slices_of_service {
            out.push("slices_of_service");
        }
        if *slices_by_addr != other.slices_by_addr {
            out.push("slices_by_addr");
        }
        if *slices_by_pod != other.slices_by_pod {
            out.push("slices_by_pod");
        }
        if *pods_by_owner != other.pods_by_owner {
            out.push("pods_by_owner");
        }
        if *identities != other.identities {
            out.push("identities");
        }
        if *modes != other.modes {
            out.push("modes");
        }
        if *policies != other.policies {
            out.push("policies");
        }
        if *mode_conflicts != other.mode_conflicts {
            out.push("mode_conflicts");
        }
        if *service_by_fqdn != other.service_by_fqdn {
            out.push("service_by_fqdn");
        }
        if *vs_of_service != other.vs_of_service {
            out.push("vs_of_service");
        }
        if *vs_literal != other.vs_literal {
            out.push("vs_literal");
        }
        if *vs_hosts_of_dest != other.vs_hosts_of_dest {
            out.push("vs_hosts_of_dest");
        }
        if *vs_by_name != other.vs_by_name {
            out.push("vs_by_name");
        }
        if *dr_of_service != other.dr_of_service {
            out.push("dr_of_service");
        }
        if *dr_by_name != other.dr_by_name {
            out.push("dr_by_name");
        }
        if *dns != other.dns {
            out.push("dns");
        }
        if *outbound != other.outbound {
            out.push("outbound");
        }
        if *policy_diagnostics != other.policy_diagnostics {
            out.push("policy_diagnostics");
        }
        if *routing_diagnostics != other.routing_diagnostics {
            out.push("routing_diagnostics");
        }
        out
    }
}

impl PartialEq for Index {
    fn eq(&self, other: &Index) -> bool {
        self.differing_parts(other).is_empty()
    }
}

/// What one Service contributes to the outbound tables ([`Index::service_outbound`]).
#[derive(Debug, Default)]
struct ServiceOutbound {
    clusters: Vec<(ClusterName, Upstream)>,
    listeners: Vec<(SocketAddr, Listener)>,
    virtual_hosts: Vec<(ServicePort, VirtualHost)>,
}

/// namespace → label name → label value → pods (sorted).
type LabelIndex = FxMap<Arc<str>, FxMap<String, FxMap<String, Vec<ObjectKey>>>>;

impl Index {
    pub fn new(cluster: Cluster) -> Self {
        let mut ix = Index {
            cluster,
            pod_by_ip: FxMap::default(),
            by_label: FxMap::default(),
            services_of_pod: FxMap::default(),
            pods_of_service: FxMap::default(),
            slices_of_service: FxMap::default(),
            slices_by_addr: FxMap::default(),
            slices_by_pod: FxMap::default(),
            pods_by_owner: FxMap::default(),
            identities: FxMap::default(),
            modes: FxMap::default(),
            policies: Policies::default(),
            mode_conflicts: FxMap::default(),
            service_by_fqdn: FxMap::default(),
            vs_of_service: FxMap::default(),
            vs_literal: BTreeMap::new(),
            vs_hosts_of_dest: FxMap::default(),
            vs_by_name: FxMap::default(),
            dr_of_service: FxMap::default(),
            dr_by_name: FxMap::default(),
            dns: FxMap::default(),
            outbound: Arc::new(Outbound::default()),
            policy_diagnostics: Vec::new(),
            routing_diagnostics: Vec::new(),
        };
        ix.index_pods_and_services();
        ix.index_modes();
        ix.index_routing();
        ix.index_dns();
        ix.outbound = Arc::new(ix.build_outbound());
        ix
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    pub fn into_cluster(self) -> Cluster {
        self.cluster
    }

    /// Problems found while indexing: conflicts resolved deterministically, references to nothing.
    pub fn diagnostics(&self) -> Vec<Diagnostic> {
        let mut out = self.policy_diagnostics.clone();
        out.extend(self.routing_diagnostics.iter().cloned());
        let pairs: BTreeSet<(ObjectKey, ObjectKey)> = self.mode_conflicts.values().cloned().collect();
        report_workload_conflicts(&self.cluster, pairs, &mut out);
        out
    }

    pub fn domain(&self) -> &str {
        &self.cluster.mesh.cluster_domain
    }

    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    pub fn pod(&self, key: &ObjectKey) -> Option<&Pod> {
        self.cluster.pods.get(key)
    }

    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Pod> {
        self.pod_by_ip.get(&ip).and_then(|k| self.cluster.pods.get(k))
    }

    /// Services that declare ports for this pod.
    pub fn services_of_pod(&self, pod: &ObjectKey) -> impl Iterator<Item = &Service> {
        self.services_of_pod.get(pod).into_iter().flatten().filter_map(|k| self.cluster.services.get(k))
    }

    pub fn pods_of_service(&self, service: &ObjectKey) -> impl Iterator<Item = &Pod> {
        self.pods_of_service.get(service).into_iter().flatten().filter_map(|k| self.cluster.pods.get(k))
    }

    pub fn identity_of(&self, pod: &Pod) -> Identity {
        match self.identities.get(&pod.key) {
            Some(id) => id.clone(),
            None => Identity::new(&self.cluster.mesh.trust_domain, &pod.key.namespace, &pod.service_account),
        }
    }

    /// Resolves a name as cluster DNS would for a client in `client_ns`: the FQDN it matched and its addresses.
    /// Only cluster names: anything else is None (it would go to upstream DNS).
    pub fn resolve_dns(&self, name: &str, client_ns: &str) -> Option<(String, Vec<IpAddr>)> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        names::resolve(&name, client_ns, self.domain(), |c| self.dns.get(c).cloned()).map(|(ips, fqdn)| (fqdn, ips))
    }

    /// The addresses cluster DNS gives one absolute name (lowercase, without the trailing dot): a Service's
    /// ClusterIPs, a headless Service's endpoint addresses, a pod's own name under its headless Service. None
    /// when the name does not exist.
    pub fn dns_addresses(&self, fqdn: &str) -> Option<&[IpAddr]> {
        self.dns.get(fqdn).map(Vec::as_slice)
    }

    /// The SRV records of `_<port>._<protocol>.<service>.<namespace>.svc.<domain>` for a named port, as cluster
    /// DNS gives them: the Service's name and port; for a headless Service, each endpoint pod that has its own
    /// name under it (`hostname.service.namespace.svc.<domain>`) with the pod's port behind it. None when no
    /// Service has such a port.
    pub fn dns_services(&self, name: &str) -> Option<Vec<SrvRecord>> {
        let rest = name.strip_suffix(self.domain())?.strip_suffix(".svc.")?;
        let mut labels = rest.split('.');
        let (port, proto, svc, ns) = (labels.next()?, labels.next()?, labels.next()?, labels.next()?);
        if labels.next().is_some() {
            return None;
        }
        let (port, proto) = (port.strip_prefix('_')?, proto.strip_prefix('_')?);
        let svc = self.cluster.services.get(&ObjectKey::new(ns, svc))?;
        let spec = svc
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(port) && p.protocol.as_str().eq_ignore_ascii_case(proto))?;
        let fqdn = service_fqdn(&svc.key.name, &svc.key.namespace, self.domain());
        if !svc.headless {
            return Some(vec![SrvRecord { port: spec.port.0, target: fqdn }]);
        }
        let mut out = Vec::new();
        for pod in self.pods_of_service(&svc.key) {
            let named = pod.subdomain.as_deref() == Some(&*svc.key.name);
            if !(named && (pod.ready || svc.publish_not_ready_addresses)) {
                continue;
            }
            if let Some(p) = self.pod_target_port(svc, spec, pod) {
                let target = pod_fqdn(pod.effective_hostname(), &svc.key.name, &svc.key.namespace, self.domain());
                out.push(SrvRecord { port: p.0, target });
            }
        }
        Some(out)
    }

    // ------------------------------------------------------------ building

    fn index_pods_and_services(&mut self) {
        let c = &self.cluster;
        // In key order, so every list below is sorted as it is built.
        for pod in c.pods.values() {
            add_pod_relations(
                &mut self.pod_by_ip,
                &mut self.identities,
                &mut self.pods_by_owner,
                &mut self.by_label,
                c,
                pod,
            );
        }
        for slice in c.endpoint_slices.values() {
            add_slice_relations(&mut self.slices_of_service, &mut self.slices_by_addr, &mut self.slices_by_pod, slice);
        }
        let mut pods_of = Vec::with_capacity(c.services.len());
        for svc in c.services.values() {
            pods_of.push((svc.key.clone(), self.members(svc)));
        }
        for (svc, pods) in pods_of {
            for p in &pods {
                self.services_of_pod.entry(p.clone()).or_default().push(svc.clone());
            }
            self.pods_of_service.insert(svc, pods);
        }
        for svc in c.services.values() {
            let fqdn = service_fqdn(&svc.key.name, &svc.key.namespace, &c.mesh.cluster_domain);
            self.service_by_fqdn.insert(fqdn, svc.key.clone());
        }
    }

    /// The pods a Service declares ports for, sorted: those its selector matches (through the label index), and
    /// those its EndpointSlices list by targetRef or address.
    fn members(&self, svc: &Service) -> Vec<ObjectKey> {
        let c = &self.cluster;
        let mut set = BTreeSet::new();
        if let Some(sel) = &svc.selector {
            let labels = self.by_label.get(&svc.key.namespace);
            let smallest = sel
                .iter()
                .map(|(k, v)| labels.and_then(|l| l.get(k)).and_then(|l| l.get(v)))
                .min_by_key(|p| p.map_or(0, |v| v.len()));
            if let Some(Some(candidates)) = smallest {
                for key in candidates {
                    if c.pods.get(key).is_some_and(|p| selector_matches(sel, &p.labels)) {
                        set.insert(key.clone());
                    }
                }
            }
        }
        for slice_key in self.slices_of_service.get(&svc.key).into_iter().flatten() {
            let Some(slice) = c.endpoint_slices.get(slice_key) else { continue };
            for ep in &slice.endpoints {
                let by_ref = ep.pod.as_ref().filter(|k| c.pods.contains_key(*k)).cloned();
                let by_ip = || ep.addresses.iter().find_map(|a| self.pod_by_ip.get(a).cloned());
                if let Some(k) = by_ref.or_else(by_ip) {
                    set.insert(k);
                }
            }
        }
        set.into_iter().collect()
    }

    fn index_modes(&mut self) {
        let c = &self.cluster;
        self.policy_diagnostics.clear();
        self.policies = Policies::new(c, &mut self.policy_diagnostics);
        let mut per_namespace: FxMap<&str, Arc<PortModes>> = FxMap::default();
        for pod in c.pods.values().filter(|p| p.sidecar) {
            let ns = per_namespace
                .entry(&*pod.key.namespace)
                .or_insert_with(|| Arc::new(self.policies.namespace_modes(c, &pod.key.namespace)));
            let (modes, conflict) = self.pod_modes(pod, ns);
            self.modes.insert(pod.key.clone(), modes);
            if let Some(pair) = conflict {
                self.mode_conflicts.insert(pod.key.clone(), pair);
            }
        }
    }

    /// A meshed pod's modes: a workload policy's, or else its namespace's `ns`; and a second workload policy
    /// that selects it too (a conflict: the first by name applies).
    fn pod_modes(&self, pod: &Pod, ns: &Arc<PortModes>) -> (Arc<PortModes>, Option<(ObjectKey, ObjectKey)>) {
        match self.policies.workload_modes(&self.cluster, pod, ns) {
            Some((modes, conflict)) => (Arc::new(modes), conflict),
            None => (Arc::clone(ns), None),
        }
    }

    /// Resolves a host written in an object of namespace `ns` to a Service, as a client in `ns` would.
    fn resolve_service(&self, host: &str, ns: &str) -> Option<(ObjectKey, String)> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        names::resolve(&host, ns, self.domain(), |c| self.service_by_fqdn.get(c).cloned())
    }

    /// Every FQDN a host written in namespace `ns` could name, for impact lookups by name.
    fn candidate_names(&self, host: &str, ns: &str) -> Vec<String> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let mut out = Vec::new();
        names::resolve(&host, ns, self.domain(), |c| {
            out.push(c.to_string());
            None::<()>
        });
        out
    }

    fn index_destination_rules(&mut self) {
        let mut diags = Vec::new();
        for (key, dr) in &self.cluster.destination_rules {
            for name in self.candidate_names(&dr.host, &key.namespace) {
                self.dr_by_name.entry(name).or_default().insert(key.clone());
            }
            let object = ObjectRef::new(Kind::DestinationRule, key.clone());
            match self.resolve_service(&dr.host, &key.namespace) {
                None => diags.push(
                    Diagnostic::warning(
                        "unknown-host",
                        format!("host {:?} names no Service; the rule has no effect", dr.host),
                    )
                    .at(dr.origin.as_ref())
                    .object(object)
                    .field("spec.host"),
                ),
                Some((svc, _)) => match self.dr_of_service.get(&svc) {
                    Some(first) => diags.push(
                        Diagnostic::warning(
                            "duplicate-host",
                            format!("DestinationRule {first} already applies to Service {svc}; this one is ignored"),
                        )
                        .at(dr.origin.as_ref())
                        .object(object)
                        .field("spec.host")
                        .hint("keep one DestinationRule per Service and merge their subsets"),
                    ),
                    None => {
                        self.dr_of_service.insert(svc, key.clone());
                    }
                },
            }
        }
        self.routing_diagnostics.extend(diags);
    }

    fn index_virtual_services(&mut self) {
        let mut diags = Vec::new();
        let mut dest_hosts: FxMap<ObjectKey, BTreeSet<String>> = FxMap::default();
        for (key, vs) in &self.cluster.virtual_services {
            let object = ObjectRef::new(Kind::VirtualService, key.clone());
            let mut canonical_hosts = Vec::new();
            for (i, host) in vs.hosts.iter().enumerate() {
                for name in self.candidate_names(host, &key.namespace) {
                    self.vs_by_name.entry(name).or_default().insert(key.clone());
                }
                let field = format!("spec.hosts[{i}]");
                let dup = |owner: &ObjectKey| {
                    Diagnostic::warning(
                        "duplicate-host",
                        format!("host {host:?} is already routed by VirtualService {owner}; ignored here"),
                    )
                    .at(vs.origin.as_ref())
                    .object(object.clone())
                    .field(field.clone())
                    .hint("route one host from one VirtualService; merge the two")
                };
                match self.resolve_service(host, &key.namespace) {
                    Some((svc, fqdn)) => {
                        canonical_hosts.push(fqdn);
                        if let Some(s) = self.cluster.services.get(&svc) {
                            canonical_hosts.extend(s.cluster_ips.iter().map(|ip| ip.to_string()));
                        }
                        match self.vs_of_service.get(&svc) {
                            Some(owner) if owner != key => diags.push(dup(owner)),
                            Some(_) => {}
                            None => {
                                self.vs_of_service.insert(svc, key.clone());
                            }
                        }
                    }
                    None => {
                        let literal = literal_host(host);
                        canonical_hosts.push(literal.clone());
                        match self.vs_literal.get(&literal) {
                            Some(owner) if owner != key => diags.push(dup(owner)),
                            Some(_) => {}
                            None => {
                                self.vs_literal.insert(literal, key.clone());
                            }
                        }
                    }
                }
            }
            for (i, route) in vs.http.iter().enumerate() {
                for (j, d) in route.destinations.iter().enumerate() {
                    for name in self.candidate_names(&d.host, &key.namespace) {
                        self.vs_by_name.entry(name).or_default().insert(key.clone());
                    }
                    match self.resolve_service(&d.host, &key.namespace) {
                        Some((svc, _)) => {
                            dest_hosts.entry(svc).or_default().extend(canonical_hosts.iter().cloned());
                        }
                        None => diags.push(
                            Diagnostic::warning(
                                "unknown-host",
                                format!(
                                    "destination {:?} names no Service; requests routed there get no_healthy_upstream",
                                    d.host
                                ),
                            )
                            .at(vs.origin.as_ref())
                            .object(object.clone())
                            .field(format!("spec.http[{i}].route[{j}].destination.host")),
                        ),
                    }
                }
            }
        }
        self.vs_hosts_of_dest = dest_hosts;
        self.routing_diagnostics.extend(diags);
    }

    fn index_dns(&mut self) {
        let mut dns = FxMap::default();
        for svc in self.cluster.services.values() {
            dns.extend(self.service_dns(svc));
        }
        self.dns = dns;
    }

    /// The A records one Service makes, in the order they are written: a ClusterIP Service's name, or a headless
    /// one's per-pod names and then its name with the addresses of its endpoints (ready ones, unless
    /// publishNotReadyAddresses).
    fn service_dns(&self, svc: &Service) -> Vec<(String, Vec<IpAddr>)> {
        let domain = self.domain();
        let fqdn = service_fqdn(&svc.key.name, &svc.key.namespace, domain);
        if !svc.headless {
            return vec![(fqdn, svc.cluster_ips.clone())];
        }
        let mut out = Vec::new();
        let mut ips: Vec<IpAddr> = Vec::new();
        for pod in self.pods_of_service(&svc.key) {
            if pod.ready || svc.publish_not_ready_addresses {
                ips.push(pod.ip);
                if pod.subdomain.as_deref() == Some(&*svc.key.name) {
                    let name = pod_fqdn(pod.effective_hostname(), &svc.key.name, &svc.key.namespace, domain);
                    out.push((name, vec![pod.ip]));
                }
            }
        }
        ips.sort();
        out.push((fqdn, ips));
        out
    }

    /// The DestinationRule and VirtualService relations, with the diagnostics of those objects and of the routes
    /// made from them. Built whole, also by [`Index::update`] whenever a Service, DestinationRule or
    /// VirtualService changes: they are few next to the pods and endpoints.
    fn index_routing(&mut self) {
        self.dr_of_service.clear();
        self.dr_by_name.clear();
        self.vs_of_service.clear();
        self.vs_literal.clear();
        self.vs_hosts_of_dest.clear();
        self.vs_by_name.clear();
        self.routing_diagnostics.clear();
        self.index_destination_rules();
        self.index_virtual_services();
        let routes = self.route_diagnostics();
        self.routing_diagnostics.extend(routes);
    }

    /// What the routes of the VirtualServices report (unknown ports and subsets, ambiguous ports), sorted.
    fn route_diagnostics(&self) -> Vec<Diagnostic> {
        let mut diags = Vec::new();
        for svc in self.vs_of_service.keys().filter_map(|k| self.cluster.services.get(k)) {
            self.virtual_hosts_of(svc, &mut diags);
        }
        self.literal_virtual_hosts(&mut diags);
        diags.sort_by(|a, b| (&a.object, &a.field, &a.message).cmp(&(&b.object, &b.field, &b.message)));
        diags.dedup();
        diags
    }

    fn build_outbound(&mut self) -> Outbound {
        let mut out = Outbound::default();
        for svc in self.cluster.services.values() {
            let made = self.service_outbound(svc);
            out.clusters.extend(made.clusters);
            out.listeners.extend(made.listeners);
            for (port, vh) in made.virtual_hosts {
                out.routes.entry(port).or_default().virtual_hosts.push(vh);
            }
        }
        for (port, vh) in self.literal_virtual_hosts(&mut Vec::new()) {
            out.routes.entry(port).or_default().virtual_hosts.push(vh);
        }
        // Rebuild each table's name index now that it is complete.
        for table in out.routes.values_mut() {
            *table = RouteTable::from(std::mem::take(&mut table.virtual_hosts));
        }
        for pod in self.cluster.pods.values() {
            out.pods.insert(pod.ip, self.direct_pod(pod));
        }
        out
    }

    /// The virtual hosts of literal VirtualService hosts (naming no Service), in host order: on every port their
    /// destinations (or matches) name. They follow the Services' virtual hosts in each route table.
    fn literal_virtual_hosts(&self, diags: &mut Vec<Diagnostic>) -> Vec<(ServicePort, VirtualHost)> {
        let mut out = Vec::new();
        for (host, key) in &self.vs_literal {
            let Some(vs) = self.cluster.virtual_services.get(key) else { continue };
            for port in self.vs_ports(vs) {
                let routes = self.vs_routes(vs, port, diags);
                if routes.is_empty() {
                    continue;
                }
                let vh = VirtualHost {
                    name: format!("{host}:{port}"),
                    domains: vec![host.clone()],
                    service: None,
                    virtual_service: Some(key.clone()),
                    routes,
                };
                out.push((port, vh));
            }
        }
        out
    }

    /// A pod's entry in the direct table (R3.3).
    fn direct_pod(&self, pod: &Pod) -> DirectPod {
        DirectPod {
            pod: pod.key.clone(),
            workload: pod.workload_name().to_string(),
            identity: pod.sidecar.then(|| self.identity_of(pod)),
            mtls: self.modes.get(&pod.key).cloned(),
        }
    }

    /// What one Service contributes to the outbound tables: a cluster per port and per subset of its
    /// DestinationRule, a listener per ClusterIP and port, and a virtual host per HTTP port (its route table's).
    fn service_outbound(&self, svc: &Service) -> ServiceOutbound {
        let mut out = ServiceOutbound::default();
        let fqdn = service_fqdn(&svc.key.name, &svc.key.namespace, self.domain());
        for spec in &svc.ports {
            let Some((proto, from)) = protocol::of_service_port(spec) else { continue };
            let subsets = self.subsets_of(&svc.key);
            let base = ClusterName::new(&fqdn, spec.port, None);
            let endpoints = self.endpoints(svc, spec);
            for (subset, labels) in &subsets {
                let eps = endpoints
                    .iter()
                    .filter(|e| {
                        e.pod
                            .as_ref()
                            .and_then(|k| self.cluster.pods.get(k))
                            .is_some_and(|p| selector_matches(labels, &p.labels))
                    })
                    .cloned()
                    .collect();
                out.clusters.push((
                    ClusterName::new(&fqdn, spec.port, Some(subset)),
                    Upstream {
                        service: svc.key.clone(),
                        port: spec.port,
                        subset: Some(subset.clone()),
                        protocol: proto,
                        endpoints: eps,
                    },
                ));
            }
            out.clusters.push((
                base.clone(),
                Upstream { service: svc.key.clone(), port: spec.port, subset: None, protocol: proto, endpoints },
            ));
            if svc.headless {
                // Headless names resolve to pod IPs: clients reach its pods directly (R3.3).
                continue;
            }
            for ip in &svc.cluster_ips {
                out.listeners.push((
                    SocketAddr::new(*ip, spec.port.0),
                    Listener {
                        service: svc.key.clone(),
                        port: spec.port,
                        protocol: proto,
                        protocol_from: from.clone(),
                        cluster: base.clone(),
                    },
                ));
            }
        }
        out.virtual_hosts = self.virtual_hosts_of(svc, &mut Vec::new());
        out
    }

    /// A Service's virtual hosts: one per HTTP port of a ClusterIP Service, routed by its VirtualService or to
    /// its own cluster. What the VirtualService's routes report goes to `diags`.
    fn virtual_hosts_of(&self, svc: &Service, diags: &mut Vec<Diagnostic>) -> Vec<(ServicePort, VirtualHost)> {
        let mut out = Vec::new();
        if svc.headless {
            return out;
        }
        let fqdn = service_fqdn(&svc.key.name, &svc.key.namespace, self.domain());
        let vs = self.vs_of_service.get(&svc.key).and_then(|k| self.cluster.virtual_services.get(k));
        for spec in &svc.ports {
            if protocol::of_service_port(spec).is_none_or(|(proto, _)| proto == Protocol::Tcp) {
                continue;
            }
            let mut domains = vec![fqdn.clone()];
            domains.extend(svc.cluster_ips.iter().map(|ip| ip.to_string()));
            let routes = match vs {
                Some(vs) => self.vs_routes(vs, spec.port, diags),
                None => vec![default_route(ClusterName::new(&fqdn, spec.port, None))],
            };
            let vh = VirtualHost {
                name: format!("{fqdn}:{}", spec.port),
                domains,
                service: Some(svc.key.clone()),
                virtual_service: vs.map(|v| v.key.clone()),
                routes,
            };
            out.push((spec.port, vh));
        }
        out
    }

    fn subsets_of(&self, svc: &ObjectKey) -> Vec<(String, podmesh_model::Labels)> {
        self.dr_of_service
            .get(svc)
            .and_then(|k| self.cluster.destination_rules.get(k))
            .map(|dr| dr.subsets.iter().map(|s| (s.name.clone(), s.labels.clone())).collect())
            .unwrap_or_default()
    }

    /// The ports a literal-host VirtualService is reachable on: its match ports, and the ports of its
    /// destinations (the destination port, or every HTTP port of the destination Service).
    fn vs_ports(&self, vs: &VirtualService) -> BTreeSet<ServicePort> {
        let mut ports = BTreeSet::new();
        for r in &vs.http {
            ports.extend(r.matches.iter().filter_map(|m| m.port));
            for d in &r.destinations {
                match d.port {
                    Some(p) => {
                        ports.insert(p);
                    }
                    None => {
                        if let Some(svc) = self
                            .resolve_service(&d.host, &vs.key.namespace)
                            .and_then(|(k, _)| self.cluster.services.get(&k))
                        {
                            ports.extend(
                                svc.ports
                                    .iter()
                                    .filter(|p| protocol::of_service_port(p).is_some_and(|(pr, _)| pr != Protocol::Tcp))
                                    .map(|p| p.port),
                            );
                        }
                    }
                }
            }
        }
        ports
    }

    /// A VirtualService's routes as they apply on one port: match entries for other ports dropped, routes left
    /// without any applicable match dropped, destinations resolved to clusters.
    fn vs_routes(&self, vs: &VirtualService, port: ServicePort, diags: &mut Vec<Diagnostic>) -> Vec<Route> {
        let mut routes = Vec::new();
        for (i, r) in vs.http.iter().enumerate() {
            let matches: Vec<_> = r.matches.iter().filter(|m| m.port.is_none_or(|p| p == port)).cloned().collect();
            if !r.matches.is_empty() && matches.is_empty() {
                continue;
            }
            let destinations = r
                .destinations
                .iter()
                .enumerate()
                .map(|(j, d)| RouteDestination {
                    cluster: self.destination_cluster(vs, i, j, port, diags),
                    weight: d.weight,
                })
                .collect();
            routes.push(Route {
                name: r.name.clone().unwrap_or_else(|| format!("{}#{i}", vs.key)),
                matches,
                destinations,
                timeout: r.timeout,
                retries: r.retries,
            });
        }
        routes
    }

    fn destination_cluster(
        &self,
        vs: &VirtualService,
        i: usize,
        j: usize,
        port: ServicePort,
        diags: &mut Vec<Diagnostic>,
    ) -> ClusterName {
        let d = &vs.http[i].destinations[j];
        let field = format!("spec.http[{i}].route[{j}].destination");
        let warn = |code, msg: String| {
            Diagnostic::warning(code, msg)
                .at(vs.origin.as_ref())
                .object(ObjectRef::new(Kind::VirtualService, vs.key.clone()))
                .field(field.clone())
        };
        let Some((key, fqdn)) = self.resolve_service(&d.host, &vs.key.namespace) else {
            // Reported in index_virtual_services; a cluster that does not exist gets no_healthy_upstream.
            return ClusterName::new(&literal_host(&d.host), d.port.unwrap_or(port), d.subset.as_deref());
        };
        let Some(svc) = self.cluster.services.get(&key) else { return ClusterName::new(&fqdn, port, None) };
        let chosen = match d.port {
            Some(p) => p,
            None if svc.port(port).is_some() => port,
            None if svc.ports.len() == 1 => svc.ports[0].port,
            None => {
                diags.push(warn(
                    "ambiguous-port",
                    format!("Service {key} has several ports and none is {port}: set destination.port.number"),
                ));
                port
            }
        };
        if svc.port(chosen).is_none() {
            diags.push(warn("unknown-port", format!("Service {key} does not declare port {chosen}")));
        }
        if let Some(subset) = &d.subset
            && !self.subsets_of(&key).iter().any(|(n, _)| n == subset)
        {
            diags.push(warn(
                    "unknown-subset",
                    format!("subset {subset:?} is not defined by a DestinationRule for {key}; requests routed there get no_healthy_upstream"),
                ));
        }
        ClusterName::new(&fqdn, chosen, d.subset.as_deref())
    }

    /// The endpoints of one Service port: from its EndpointSlices when it has any, else from the pods its selector
    /// matches (R3.1). Sorted by address.
    fn endpoints(&self, svc: &Service, spec: &ServicePortSpec) -> Vec<Endpoint> {
        let c = &self.cluster;
        let mut eps: BTreeMap<SocketAddr, Endpoint> = BTreeMap::new();
        let slices = self.slices_of_service.get(&svc.key);
        if let Some(slices) = slices.filter(|s| !s.is_empty()) {
            for slice in slices.iter().filter_map(|k| c.endpoint_slices.get(k)) {
                let Some(port) = slice.ports.iter().find(|p| p.name == spec.name && p.protocol == spec.protocol) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    for addr in &ep.addresses {
                        let pod = ep.pod.as_ref().and_then(|k| c.pods.get(k)).or_else(|| self.pod_by_ip(*addr));
                        let address = SocketAddr::new(*addr, port.port.0);
                        eps.insert(
                            address,
                            Endpoint {
                                address,
                                pod: pod.map(|p| p.key.clone()),
                                ready: ep.ready,
                                tls: self.tls_to(pod, port.port),
                            },
                        );
                    }
                }
            }
        } else {
            for pod in self.pods_of_service(&svc.key) {
                let Some(port) = target_port(pod, &spec.target_port) else { continue };
                let address = SocketAddr::new(pod.ip, port.0);
                eps.insert(
                    address,
                    Endpoint {
                        address,
                        pod: Some(pod.key.clone()),
                        ready: pod.ready || svc.publish_not_ready_addresses,
                        tls: self.tls_to(Some(pod), port),
                    },
                );
            }
        }
        eps.into_values().collect()
    }

    /// R3.5: mTLS to a meshed pod unless its mode for the port is DISABLE; plaintext to anything else.
    fn tls_to(&self, pod: Option<&Pod>, port: TargetPort) -> Option<Identity> {
        let pod = pod.filter(|p| p.sidecar)?;
        mtls_identity(self.identities.get(&pod.key), self.modes.get(&pod.key).map(|m| &**m), port).cloned()
    }

    // ------------------------------------------------------------ per workload

    /// The sidecar config of one pod (R1–R5).
    pub fn proxy_config(&self, pod: &ObjectKey) -> Result<ProxyConfig, ComputeError> {
        let p = self.cluster.pods.get(pod).ok_or_else(|| ComputeError::NoSuchPod(pod.clone()))?;
        if !p.sidecar {
            return Err(ComputeError::NotMeshed(pod.clone()));
        }
        let (inbound, _) = self.inbound(p);
        Ok(ProxyConfig {
            workload: WorkloadInfo {
                pod: p.key.clone(),
                ip: p.ip,
                identity: self.identity_of(p),
                service_account: p.service_account.clone(),
                workload: p.workload_name().to_string(),
                labels: p.labels.clone(),
            },
            mesh: self.cluster.mesh.clone(),
            inbound,
            outbound: Arc::clone(&self.outbound),
        })
    }

    /// The inbound ports of a pod (R4), and the protocol conflicts found on the way.
    pub fn inbound(&self, pod: &Pod) -> (Inbound, Vec<ProtocolConflict>) {
        let domain = self.domain();
        let modes = self.modes.get(&pod.key);
        struct Acc {
            services: BTreeSet<InboundService>,
            protocols: Vec<(Protocol, ProtocolFrom, ObjectKey)>,
            hosts: BTreeSet<String>,
        }
        let mut ports: BTreeMap<TargetPort, Acc> = BTreeMap::new();
        for svc in self.services_of_pod(&pod.key) {
            for spec in &svc.ports {
                let Some(declared) =
                    protocol::declared(spec.protocol, spec.name.as_deref(), spec.app_protocol.as_deref())
                else {
                    continue;
                };
                let Some(port) = self.pod_target_port(svc, spec, pod) else { continue };
                let (proto, from) = protocol::effective(declared, port.0);
                let acc = ports.entry(port).or_insert_with(|| Acc {
                    services: BTreeSet::new(),
                    protocols: vec![],
                    hosts: BTreeSet::new(),
                });
                acc.services.insert(InboundService {
                    service: svc.key.clone(),
                    port: spec.port,
                    headless: svc.headless,
                });
                acc.protocols.push((proto, from, svc.key.clone()));
                acc.hosts.insert(service_fqdn(&svc.key.name, &svc.key.namespace, domain));
                acc.hosts.extend(svc.cluster_ips.iter().map(|ip| ip.to_string()));
                if let Some(vs_hosts) = self.vs_hosts_of_dest.get(&svc.key) {
                    acc.hosts.extend(vs_hosts.iter().cloned());
                }
            }
        }
        let mut conflicts = Vec::new();
        let ports = ports
            .into_iter()
            .map(|(port, acc)| {
                // Explicit beats auto; among explicit protocols the first Service by name wins (reported).
                let chosen =
                    acc.protocols.iter().find(|(p, _, _)| *p != Protocol::Auto).unwrap_or(&acc.protocols[0]).clone();
                for (p, _, svc) in &acc.protocols {
                    if *p != Protocol::Auto && *p != chosen.0 {
                        conflicts.push(ProtocolConflict {
                            pod: pod.key.clone(),
                            port,
                            chosen: (chosen.0, chosen.2.clone()),
                            other: (*p, svc.clone()),
                        });
                    }
                }
                let (mtls, mtls_from) = modes.map_or((podmesh_model::MtlsMode::Permissive, MtlsFrom::Default), |m| {
                    let (mode, from) = m.mode(port);
                    (mode, from.clone())
                });
                let headless = acc.services.iter().any(|s| s.headless);
                (
                    port,
                    InboundPort {
                        port,
                        protocol: chosen.0,
                        protocol_from: chosen.1,
                        mtls,
                        mtls_from,
                        services: acc.services.into_iter().collect(),
                        headless,
                        hosts: acc.hosts,
                    },
                )
            })
            .collect();
        (Inbound { ports }, conflicts)
    }

    /// The pod's port behind a Service port: a number, a named container port, or (for pods listed in the
    /// Service's EndpointSlices) the slice's port of the same name.
    fn pod_target_port(&self, svc: &Service, spec: &ServicePortSpec, pod: &Pod) -> Option<TargetPort> {
        let c = &self.cluster;
        for slice in self.slices_of_service.get(&svc.key).into_iter().flatten().filter_map(|k| c.endpoint_slices.get(k))
        {
            let listed =
                slice.endpoints.iter().any(|e| e.pod.as_ref() == Some(&pod.key) || e.addresses.contains(&pod.ip));
            if listed && let Some(p) = slice.ports.iter().find(|p| p.name == spec.name && p.protocol == spec.protocol) {
                return Some(p.port);
            }
        }
        target_port(pod, &spec.target_port)
    }

    // ------------------------------------------------------------ change impact

    /// What a change to `object` (created, edited or deleted) can change in the sidecar configs, judged from this
    /// snapshot. The control plane takes the union of this on the snapshots before and after the change: configs
    /// outside it are unaffected and need not be recomputed or pushed.
    pub fn impact(&self, object: &ObjectRef) -> Impact {
        let mut imp = Impact::default();
        let c = &self.cluster;
        let key = &object.key;
        match object.kind {
            Kind::MeshConfig => imp.everything = true,
            Kind::Namespace => {
                for pod in c.pods.values().filter(|p| p.key.namespace == key.name) {
                    self.pod_impact(pod, &mut imp);
                }
            }
            Kind::Pod => {
                if let Some(pod) = c.pods.get(key) {
                    self.pod_impact(pod, &mut imp);
                }
            }
            Kind::Deployment | Kind::StatefulSet => {
                for pod in self.pods_by_owner.get(key).into_iter().flatten().filter_map(|k| c.pods.get(k)) {
                    self.pod_impact(pod, &mut imp);
                }
            }
            Kind::Service => self.service_impact(key, &mut imp),
            Kind::EndpointSlice => {
                if let Some(slice) = c.endpoint_slices.get(key) {
                    let svc = ObjectKey::new(key.namespace.clone(), slice.service.clone());
                    self.service_clusters_impact(&svc, &mut imp);
                    imp.inbound.extend(self.pods_of_service.get(&svc).into_iter().flatten().cloned());
                    for ep in &slice.endpoints {
                        imp.inbound.extend(ep.pod.iter().cloned());
                        imp.inbound.extend(ep.addresses.iter().filter_map(|a| self.pod_by_ip.get(a).cloned()));
                    }
                }
            }
            Kind::VirtualService => {
                if let Some(vs) = c.virtual_services.get(key) {
                    self.vs_impact(vs, &mut imp);
                }
            }
            Kind::DestinationRule => {
                if let Some(dr) = c.destination_rules.get(key)
                    && let Some((svc, _)) = self.resolve_service(&dr.host, &key.namespace)
                {
                    self.service_clusters_impact(&svc, &mut imp);
                    // Routes naming subsets resolve against the rule's subsets.
                    self.route_tables_naming(&svc, &mut imp);
                }
            }
            Kind::PeerAuthentication => {
                if let Some(pa) = c.peer_authentications.get(key) {
                    for pod in Policies::scope(c, pa) {
                        self.pod_impact(pod, &mut imp);
                    }
                }
            }
        }
        imp
    }

    fn pod_impact(&self, pod: &Pod, imp: &mut Impact) {
        imp.inbound.insert(pod.key.clone());
        imp.pods.insert(pod.ip);
        for svc in self.services_of_pod.get(&pod.key).into_iter().flatten() {
            self.service_clusters_impact(svc, imp);
        }
        // Slices that list the pod (by IP, or by targetRef) make it an endpoint of their Service.
        let slices = self.slices_by_addr.get(&pod.ip).into_iter().chain(self.slices_by_pod.get(&pod.key)).flatten();
        for slice in slices.filter_map(|k| self.cluster.endpoint_slices.get(k)) {
            self.service_clusters_impact(&ObjectKey::new(slice.key.namespace.clone(), slice.service.clone()), imp);
        }
    }

    /// Every cluster of the Service, whatever the port and subset (clusters are named `outbound|port|subset|fqdn`).
    fn service_clusters_impact(&self, svc: &ObjectKey, imp: &mut Impact) {
        imp.cluster_services.insert(service_fqdn(&svc.name, &svc.namespace, self.domain()));
    }

    fn service_impact(&self, key: &ObjectKey, imp: &mut Impact) {
        let c = &self.cluster;
        let fqdn = service_fqdn(&key.name, &key.namespace, self.domain());
        self.service_clusters_impact(key, imp);
        if let Some(svc) = c.services.get(key) {
            for ip in &svc.cluster_ips {
                imp.listener_ips.insert(*ip);
            }
            for p in &svc.ports {
                imp.route_tables.insert(p.port);
            }
        }
        imp.inbound.extend(self.pods_of_service.get(key).into_iter().flatten().cloned());
        // VirtualServices and DestinationRules that name it change meaning when it appears or goes.
        for vs in self.vs_by_name.get(&fqdn).into_iter().flatten().filter_map(|k| c.virtual_services.get(k)) {
            self.vs_impact(vs, imp);
        }
        if self.dr_by_name.contains_key(&fqdn) {
            self.route_tables_naming(key, imp);
        }
    }

    fn vs_impact(&self, vs: &VirtualService, imp: &mut Impact) {
        let ns = &vs.key.namespace;
        imp.route_tables.extend(self.vs_ports(vs));
        for host in &vs.hosts {
            if let Some(svc) = self.resolve_service(host, ns).and_then(|(k, _)| self.cluster.services.get(&k)) {
                imp.route_tables.extend(svc.ports.iter().map(|p| p.port));
            } else {
                // A literal host: one VirtualService routes it (the first by name), and a change can hand it
                // from one to another, whose virtual hosts are on its own ports.
                let naming = self.candidate_names(host, ns).into_iter().filter_map(|n| self.vs_by_name.get(&n));
                for other in naming.flatten().filter_map(|k| self.cluster.virtual_services.get(k)) {
                    imp.route_tables.extend(self.vs_ports(other));
                }
            }
        }
        for r in &vs.http {
            for d in &r.destinations {
                if let Some((svc, _)) = self.resolve_service(&d.host, ns) {
                    imp.inbound.extend(self.pods_of_service.get(&svc).into_iter().flatten().cloned());
                }
            }
        }
    }

    /// Route tables whose routes point at a Service's clusters (their subset references may change).
    fn route_tables_naming(&self, svc: &ObjectKey, imp: &mut Impact) {
        let fqdn = service_fqdn(&svc.name, &svc.namespace, self.domain());
        let suffix = format!("|{fqdn}");
        for (port, table) in &self.outbound.routes {
            let names_it = table
                .virtual_hosts
                .iter()
                .flat_map(|vh| vh.routes.iter())
                .flat_map(|r| r.destinations.iter())
                .any(|d| d.cluster.0.ends_with(&suffix));
            if names_it {
                imp.route_tables.insert(*port);
            }
        }
    }
}

/// What a change can reach. Outbound resources are shared by every sidecar, so "which workloads" is: every
/// sidecar for outbound resources listed here (only those resources change), and the pods in `inbound` for their
/// own inbound part.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Impact {
    /// A mesh-wide setting changed: recompute everything.
    pub everything: bool,
    /// Pods whose inbound config may change.
    pub inbound: BTreeSet<ObjectKey>,
    /// ClusterIPs whose listeners may change.
    pub listener_ips: BTreeSet<IpAddr>,
    pub route_tables: BTreeSet<ServicePort>,
    /// Service FQDNs whose clusters (every port and subset, including ones that do not exist yet) may change.
    pub cluster_services: BTreeSet<String>,
    /// From [`Index::update`]: exactly the clusters it made again, by their names before and after (every
    /// cluster that changed is among them). `None` from [`Index::impact`], which bounds clusters by Service.
    pub clusters: Option<BTreeSet<ClusterName>>,
    /// Pod IPs whose direct-table entries may change.
    pub pods: BTreeSet<IpAddr>,
}

impl Impact {
    pub fn merge(&mut self, other: Impact) {
        self.everything |= other.everything;
        self.inbound.extend(other.inbound);
        self.listener_ips.extend(other.listener_ips);
        self.route_tables.extend(other.route_tables);
        self.cluster_services.extend(other.cluster_services);
        // Exact only when both are.
        self.clusters = match (self.clusters.take(), other.clusters) {
            (Some(mut mine), Some(theirs)) => {
                mine.extend(theirs);
                Some(mine)
            }
            _ => None,
        };
        self.pods.extend(other.pods);
    }

    /// Whether a cluster may change under this impact.
    pub fn covers_cluster(&self, name: &ClusterName) -> bool {
        self.everything || name.0.rsplit('|').next().is_some_and(|fqdn| self.cluster_services.contains(fqdn))
    }
}

/// One SRV record of cluster DNS ([`Index::dns_services`]): a port and the name that serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub port: u16,
    pub target: String,
}

/// Two Services give one target port of a pod different protocols; `chosen` applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProtocolConflict {
    pub pod: ObjectKey,
    pub port: TargetPort,
    pub chosen: (Protocol, ObjectKey),
    pub other: (Protocol, ObjectKey),
}

fn target_port(pod: &Pod, target: &TargetPortRef) -> Option<TargetPort> {
    match target {
        TargetPortRef::Number(n) => Some(*n),
        TargetPortRef::Name(name) => pod.named_port(name),
    }
}

fn default_route(cluster: ClusterName) -> Route {
    Route {
        name: "default".into(),
        matches: vec![],
        destinations: vec![RouteDestination { cluster, weight: 1 }],
        timeout: None,
        retries: None,
    }
}

/// A literal host in canonical form (lowercase, no trailing dot).
fn literal_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Adds one pod to the relations that hold pods: by address, identity, owner and labels. Lists stay sorted.
fn add_pod_relations(
    pod_by_ip: &mut FxMap<IpAddr, ObjectKey>,
    identities: &mut FxMap<ObjectKey, Identity>,
    pods_by_owner: &mut FxMap<ObjectKey, Vec<ObjectKey>>,
    by_label: &mut LabelIndex,
    c: &Cluster,
    pod: &Pod,
) {
    pod_by_ip.insert(pod.ip, pod.key.clone());
    identities.insert(pod.key.clone(), Identity::new(&c.mesh.trust_domain, &pod.key.namespace, &pod.service_account));
    if let Some(owner) = &pod.owner {
        let workload = ObjectKey::new(pod.key.namespace.clone(), owner.name.clone());
        sorted_insert(pods_by_owner.entry(workload).or_default(), &pod.key);
    }
    let names = by_label.entry(pod.key.namespace.clone()).or_default();
    for (k, v) in &pod.labels {
        let values = match names.get_mut(k) {
            Some(values) => values,
            None => names.entry(k.clone()).or_default(),
        };
        let pods = match values.get_mut(v) {
            Some(pods) => pods,
            None => values.entry(v.clone()).or_default(),
        };
        sorted_insert(pods, &pod.key);
    }
}

/// Adds one EndpointSlice to the relations that hold slices: by Service, address and targetRef.
fn add_slice_relations(
    slices_of_service: &mut FxMap<ObjectKey, Vec<ObjectKey>>,
    slices_by_addr: &mut FxMap<IpAddr, Vec<ObjectKey>>,
    slices_by_pod: &mut FxMap<ObjectKey, Vec<ObjectKey>>,
    slice: &podmesh_model::EndpointSlice,
) {
    let svc = ObjectKey::new(slice.key.namespace.clone(), slice.service.clone());
    sorted_insert(slices_of_service.entry(svc).or_default(), &slice.key);
    for ep in &slice.endpoints {
        for addr in &ep.addresses {
            sorted_insert(slices_by_addr.entry(*addr).or_default(), &slice.key);
        }
        if let Some(pod) = &ep.pod {
            sorted_insert(slices_by_pod.entry(pod.clone()).or_default(), &slice.key);
        }
    }
}

/// Inserts `key` into a sorted list unless it is there. Appending in order (as a build does) costs one compare.
fn sorted_insert<T: Ord + Clone>(list: &mut Vec<T>, key: &T) {
    match list.last() {
        Some(last) if last < key => list.push(key.clone()),
        None => list.push(key.clone()),
        _ => {
            if let Err(i) = list.binary_search(key) {
                list.insert(i, key.clone());
            }
        }
    }
}
