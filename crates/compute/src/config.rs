//! The config of one sidecar: what `podmesh routes -o json` prints and what the sidecar runs on.
//!
//! Outbound tables are the same for every sidecar in the mesh (Host short names are resolved against the
//! client's own namespace at lookup time, see [`crate::names`]), so they are built once and shared behind an
//! `Arc`; only the inbound part is per pod. All maps are ordered, so the serialized form is deterministic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use podmesh_model::{HttpMatch, MeshConfig, MtlsMode, ObjectKey, ServicePort, TargetPort};
use serde::{Deserialize, Serialize};

use crate::names::{self, HostName};
use crate::protocol::{Protocol, ProtocolFrom};

/// A SPIFFE identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>` (R5).
///
/// Shared (`Arc<str>`): one pod's identity appears in every endpoint and direct-table entry of that pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(Arc<str>);

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity(format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").into())
    }

    /// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`; the error says what is wrong. Anything else is rejected: the rest of
    /// the mesh (authorization, metrics labels) reads the namespace and service account out of the identity and
    /// relies on this shape, with the SPIFFE ID spec's character sets.
    pub fn parse(uri: &str) -> Result<Identity, &'static str> {
        let rest = uri.strip_prefix("spiffe://").ok_or("it does not start with spiffe://")?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [td, "ns", ns, "sa", sa] = parts.as_slice() else {
            return Err("its path is not /ns/<namespace>/sa/<service account>");
        };
        if !valid_trust_domain(td) {
            return Err("the trust domain may only hold lowercase letters, digits, `.`, `-` and `_`");
        }
        if !valid_segment(ns) || !valid_segment(sa) {
            return Err("namespace and service account may only hold letters, digits, `.`, `-` and `_`");
        }
        Ok(Identity::new(td, ns, sa))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace part, if the identity has the podmesh/Istio shape.
    pub fn namespace(&self) -> Option<&str> {
        spiffe_namespace(&self.0)
    }
}

/// The SPIFFE ID spec's character set for trust domains. Anything wider would let two spellings name one domain.
pub fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty() && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The SPIFFE ID spec's character set for path segments; `.` and `..` are excluded there too.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The namespace of `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, for identities held as text
/// (e.g. in an access record). None for any other shape, or an empty namespace.
pub fn spiffe_namespace(id: &str) -> Option<&str> {
    let mut parts = id.strip_prefix("spiffe://")?.split('/');
    parts.next()?;
    (parts.next()? == "ns").then_some(())?;
    parts.next().filter(|ns| !ns.is_empty())
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an upstream cluster, Istio style: `outbound|<port>|<subset>|<service fqdn>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClusterName(pub String);

impl ClusterName {
    pub fn new(fqdn: &str, port: ServicePort, subset: Option<&str>) -> Self {
        ClusterName(format!("outbound|{}|{}|{}", port, subset.unwrap_or(""), fqdn))
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub workload: WorkloadInfo,
    pub mesh: MeshConfig,
    pub inbound: Inbound,
    pub outbound: Arc<Outbound>,
}

impl ProxyConfig {
    /// Looks up an HTTP Host on the route table of a dialled port (R2, R3.1), resolving short names against
    /// this workload's namespace.
    pub fn find_virtual_host(&self, port: ServicePort, host: &HostName<'_>) -> Option<(&VirtualHost, String)> {
        let table = self.outbound.routes.get(&port)?;
        table.find(host, &self.workload.pod.namespace, &self.mesh.cluster_domain)
    }
}

/// Who this sidecar is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadInfo {
    pub pod: ObjectKey,
    pub ip: IpAddr,
    pub identity: Identity,
    pub service_account: String,
    /// Deployment/StatefulSet name, or the pod name: the `*_workload` label of metrics.
    pub workload: String,
    /// The pod's labels (for metrics, and for fix hints that say which selector would match it).
    pub labels: podmesh_model::Labels,
}

impl WorkloadInfo {
    /// The labels a Service would select this pod by: its labels without the ones controllers add per pod.
    pub fn selector_hint(&self) -> String {
        const GENERATED: [&str; 3] =
            ["pod-template-hash", "statefulset.kubernetes.io/pod-name", "controller-revision-hash"];
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| !GENERATED.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if labels.is_empty() { format!("pod {}", self.pod) } else { labels.join(",") }
    }
}

// ---------------------------------------------------------------- inbound (R4)

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Inbound {
    /// Target ports some Service selecting this pod declares (R4.1); every other port is `undeclared_port`.
    pub ports: BTreeMap<TargetPort, InboundPort>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundPort {
    pub port: TargetPort,
    pub protocol: Protocol,
    pub protocol_from: ProtocolFrom,
    /// Effective peer-authentication mode for this port (R5) and which policy set it.
    pub mtls: MtlsMode,
    pub mtls_from: MtlsFrom,
    /// The Services that declare this port for this pod.
    pub services: Vec<InboundService>,
    /// A headless Service declares the port: any Host is accepted (R4.3), and direct TCP is allowed (R4.4).
    pub headless: bool,
    /// Canonical Host names accepted (R4.3): FQDNs and ClusterIPs of the Services above, and VirtualService
    /// hosts routing to them. Looked up with [`names::resolve`], so short forms work as R2 says.
    pub hosts: BTreeSet<String>,
}

impl InboundPort {
    /// The accepted name a Host matches, resolving short names against `client_ns`.
    pub fn accepts(&self, host: &HostName<'_>, client_ns: &str, domain: &str) -> Option<String> {
        match host {
            HostName::Ip(ip) => {
                let s = ip.to_string();
                self.hosts.contains(&s).then_some(s)
            }
            HostName::Name(n) => {
                names::resolve(n, client_ns, domain, |c| self.hosts.contains(c).then_some(())).map(|((), name)| name)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundService {
    pub service: ObjectKey,
    pub port: ServicePort,
    pub headless: bool,
}

/// Which PeerAuthentication set a mode (R5: mesh → namespace → workload → port, narrowest set value wins).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "level", content = "policy")]
pub enum MtlsFrom {
    /// Nothing set anywhere: PERMISSIVE.
    Default,
    Mesh(ObjectKey),
    Namespace(ObjectKey),
    Workload(ObjectKey),
    Port(ObjectKey),
}

impl fmt::Display for MtlsFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MtlsFrom::Default => f.write_str("no PeerAuthentication applies (default)"),
            MtlsFrom::Mesh(k) => write!(f, "mesh-wide PeerAuthentication {k}"),
            MtlsFrom::Namespace(k) => write!(f, "namespace PeerAuthentication {k}"),
            MtlsFrom::Workload(k) => write!(f, "workload PeerAuthentication {k}"),
            MtlsFrom::Port(k) => write!(f, "portLevelMtls of PeerAuthentication {k}"),
        }
    }
}

/// A pod's peer-authentication modes: one for the pod, overrides per target port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortModes {
    pub default: MtlsMode,
    pub default_from: MtlsFrom,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<TargetPort, (MtlsMode, MtlsFrom)>,
}

impl PortModes {
    pub fn mode(&self, port: TargetPort) -> (MtlsMode, &MtlsFrom) {
        match self.ports.get(&port) {
            Some((m, from)) => (*m, from),
            None => (self.default, &self.default_from),
        }
    }
}

// ---------------------------------------------------------------- outbound (R3)

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Outbound {
    /// Every `ClusterIP:port` a client may dial (R3.1, R3.2).
    pub listeners: BTreeMap<SocketAddr, Listener>,
    /// HTTP route tables, one per dialled port: the Host picks the virtual host (R3.1).
    pub routes: BTreeMap<ServicePort, RouteTable>,
    pub clusters: BTreeMap<ClusterName, Upstream>,
    /// Every pod IP, for direct traffic (R3.3).
    pub pods: BTreeMap<IpAddr, DirectPod>,
}

impl Outbound {
    /// The listeners of one ClusterIP (every port the Service declares).
    pub fn listeners_on(&self, ip: IpAddr) -> impl Iterator<Item = &Listener> {
        self.listeners.range(SocketAddr::new(ip, 0)..=SocketAddr::new(ip, u16::MAX)).map(|(_, l)| l)
    }
}

/// `ClusterIP:port` of a Service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    pub service: ObjectKey,
    pub port: ServicePort,
    pub protocol: Protocol,
    pub protocol_from: ProtocolFrom,
    /// Where TCP connections (and `auto` connections that turn out not to be HTTP) go, per connection.
    pub cluster: ClusterName,
}

/// The virtual hosts of one port. Serialized as the list of virtual hosts; the name index is rebuilt on load.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(from = "Vec<VirtualHost>", into = "Vec<VirtualHost>")]
pub struct RouteTable {
    pub virtual_hosts: Vec<VirtualHost>,
    index: HashMap<String, usize>,
}

impl From<Vec<VirtualHost>> for RouteTable {
    fn from(virtual_hosts: Vec<VirtualHost>) -> Self {
        let mut index = HashMap::new();
        for (i, vh) in virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                // First wins: the compute step already reported duplicates.
                index.entry(d.clone()).or_insert(i);
            }
        }
        RouteTable { virtual_hosts, index }
    }
}

impl From<RouteTable> for Vec<VirtualHost> {
    fn from(t: RouteTable) -> Self {
        t.virtual_hosts
    }
}

impl RouteTable {
    /// The virtual host a Host names, with the canonical name it matched.
    pub fn find(&self, host: &HostName<'_>, client_ns: &str, domain: &str) -> Option<(&VirtualHost, String)> {
        let i = match host {
            HostName::Ip(ip) => {
                let s = ip.to_string();
                let i = *self.index.get(&s)?;
                return Some((&self.virtual_hosts[i], s));
            }
            HostName::Name(n) => names::resolve(n, client_ns, domain, |c| self.index.get(c).copied()),
        };
        i.map(|(i, name)| (&self.virtual_hosts[i], name))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualHost {
    /// `<fqdn or literal host>:<port>`
    pub name: String,
    /// Canonical names: the Service FQDN and ClusterIPs, or a VirtualService's literal host.
    pub domains: Vec<String>,
    /// The Service the host names, if it names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ObjectKey>,
    /// The VirtualService that supplies the routes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<ObjectKey>,
    /// In order; the first whose match holds is used. With a VirtualService and no match: `no_route`.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub name: String,
    /// Any one holding selects the route; empty matches every request.
    #[serde(default, rename = "match", skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpMatch>,
    pub destinations: Vec<RouteDestination>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "podmesh_model::cluster::duration_ms")]
    pub timeout: Option<std::time::Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    pub cluster: ClusterName,
    pub weight: u32,
}

/// The endpoints of one Service port (and subset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    pub service: ObjectKey,
    pub port: ServicePort,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// What the application behind it speaks (an `http2` port gets HTTP/2 from the sidecar).
    pub protocol: Protocol,
    pub endpoints: Vec<Endpoint>,
}

impl Upstream {
    pub fn ready(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.iter().filter(|e| e.ready)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    /// `<pod IP>:<target port>`
    pub address: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<ObjectKey>,
    pub ready: bool,
    /// Some: wrap in mTLS and expect this identity from the server (R3.5, R5). None: plaintext (a plain pod, or
    /// the destination's mode for this port is DISABLE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Identity>,
}

/// A pod as a destination of direct traffic (R3.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectPod {
    pub pod: ObjectKey,
    /// The Deployment/StatefulSet that owns the pod, else the pod's name: the peer's `*_workload` metrics label.
    /// Empty in configs written before the field existed.
    #[serde(default)]
    pub workload: String,
    /// None for a plain pod (no sidecar): traffic to it is plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// The pod's peer-authentication modes (meshed pods only), so the source knows when to use mTLS (R3.5).
    /// Shared by the pods of a namespace that no workload policy selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<Arc<PortModes>>,
}

impl DirectPod {
    /// The identity to expect over mTLS when connecting to `port`, or None for plaintext (R3.5).
    pub fn tls_for(&self, port: TargetPort) -> Option<&Identity> {
        mtls_identity(self.identity.as_ref(), self.mtls.as_deref(), port)
    }
}

/// R3.5, the one place it is decided: traffic to a meshed pod (one with an identity) is mTLS, expecting that
/// identity, unless the pod's mode for the target port is DISABLE; traffic to a plain pod is plaintext (None).
pub fn mtls_identity<'a>(
    identity: Option<&'a Identity>,
    modes: Option<&PortModes>,
    port: TargetPort,
) -> Option<&'a Identity> {
    match modes.map(|m| m.mode(port).0) {
        Some(MtlsMode::Disable) => None,
        _ => identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_namespaces() {
        assert_eq!(spiffe_namespace("spiffe://cluster.local/ns/shop/sa/web"), Some("shop"));
        assert_eq!(spiffe_namespace("spiffe://cluster.local/ns//sa/web"), None);
        assert_eq!(spiffe_namespace("spiffe://cluster.local/other/shop"), None);
        assert_eq!(spiffe_namespace("https://example.com/ns/shop"), None);
        assert_eq!(Identity::new("cluster.local", "shop", "web").namespace(), Some("shop"));
    }
}
