//! The typed protobuf bodies of the resources (`proto/podmesh/v1/podmesh.proto`): each podmesh-compute type to
//! its message, which cannot fail, and back, which checks everything the Rust type needs and refuses the rest
//! with the path of the field: IP addresses of 4 or 16 bytes, ports that fit in 16 bits, enum values that are
//! known and not UNSPECIFIED, required sub-messages present, regular expressions that compile again, SPIFFE
//! identities and `namespace/name` keys of the right shape, keyed lists without a key twice. Nothing here
//! panics, whatever the input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use podmesh_compute::{
    ClusterName, DirectPod, Endpoint, Identity, Inbound, InboundPort, InboundService, Listener, MtlsFrom, PortModes,
    Protocol, ProtocolFrom, Route, RouteDestination, RouteTable, Upstream, VirtualHost, WorkloadInfo,
};
use podmesh_model::{
    HttpMatch, MeshConfig, MtlsMode, ObjectKey, OutboundPolicy, Pattern, ServicePort, StringMatch, TargetPort,
};

use crate::{Kind, WorkloadPart, pb};

/// A resource body: a value that travels as the protobuf message of one [`Kind`] (every kind but the trust
/// bundle, whose body is its message).
pub trait Resource: Sized {
    /// The kind of resource this is the body of.
    const KIND: Kind;
    /// Its protobuf message.
    type Message: prost::Message + Default;
    /// What a resource of this kind is keyed by in a config (a cluster's name, a pod's IP, a port...).
    type Key: Ord;
    /// The resource's name on the wire: the one naming rule for each kind, used by the control plane and tools.
    fn name(key: &Self::Key) -> String;
    /// The message: every value has one.
    fn to_message(&self) -> Self::Message;
    /// The value a message carries, checked; the error names the field.
    fn from_message(message: Self::Message) -> Result<Self, FieldError>;
}

/// Why a message does not decode: the path of the field (e.g. `endpoints[3].address`) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Innermost first: each level of the decoder adds its segment on the way out.
    path: Vec<Segment>,
    what: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Field(&'static str),
    Index(usize),
    Key(String),
}

impl FieldError {
    fn new(what: impl Into<String>) -> Self {
        FieldError { path: Vec::new(), what: what.into() }
    }

    /// The path, outermost first: `virtual_hosts[0].routes[2].matches[0].headers["x-user"].regex`.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for seg in self.path.iter().rev() {
            match seg {
                Segment::Field(f) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(f);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
                Segment::Key(k) => out.push_str(&format!("[{k:?}]")),
            }
        }
        out
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() { f.write_str(&self.what) } else { write!(f, "{}: {}", self.path(), self.what) }
    }
}

impl std::error::Error for FieldError {}

type Checked<T> = Result<T, FieldError>;

/// Adds the segment of the enclosing level to an error on its way out.
trait Within<T> {
    fn field(self, name: &'static str) -> Checked<T>;
}

impl<T> Within<T> for Checked<T> {
    fn field(self, name: &'static str) -> Checked<T> {
        self.map_err(|mut e| {
            e.path.push(Segment::Field(name));
            e
        })
    }
}

/// Decodes every item of a list, naming the index of the one that fails.
fn list<P, T>(items: Vec<P>, mut decode: impl FnMut(P) -> Checked<T>) -> Checked<Vec<T>> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            decode(item).map_err(|mut e| {
                e.path.push(Segment::Index(i));
                e
            })
        })
        .collect()
}

/// A sub-message the Rust type cannot do without.
fn required<P>(m: Option<P>) -> Checked<P> {
    m.ok_or_else(|| FieldError::new("required, but absent"))
}

// ---------------------------------------------------------------- scalars

fn port(v: u32) -> Checked<u16> {
    u16::try_from(v).map_err(|_| FieldError::new(format!("{v} is not a port (at most 65535)")))
}

fn ip_to_pb(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn ip(bytes: &[u8]) -> Checked<IpAddr> {
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(a));
    }
    if let Ok(a) = <[u8; 16]>::try_from(bytes) {
        return Ok(IpAddr::from(a));
    }
    let n = bytes.len();
    let unit = if n == 1 { "byte" } else { "bytes" };
    Err(FieldError::new(format!("{n} {unit} is not an IPv4 or IPv6 address (4 or 16 bytes)")))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn key_to_pb(k: &ObjectKey) -> pb::ObjectKey {
    pb::ObjectKey { namespace: k.namespace.to_string(), name: k.name.to_string() }
}

fn key(k: pb::ObjectKey) -> Checked<ObjectKey> {
    for (part, v) in [("namespace", &k.namespace), ("name", &k.name)] {
        if v.is_empty() {
            return Err(FieldError::new("empty")).field(part);
        }
        if v.contains('/') {
            return Err(FieldError::new(format!("{v:?} contains \"/\""))).field(part);
        }
    }
    Ok(ObjectKey::new(k.namespace, k.name))
}

/// A SPIFFE identity of the mesh's shape ([`Identity::parse`]).
fn identity(s: String) -> Checked<Identity> {
    Identity::parse(&s).map_err(|reason| FieldError::new(format!("{s:?} is not a mesh SPIFFE identity: {reason}")))
}

// ---------------------------------------------------------------- enums

/// An enum value the message's enum knows (the UNSPECIFIED value is refused by each caller's match).
fn known<E: TryFrom<i32>>(v: i32, name: &str) -> Checked<E> {
    E::try_from(v).map_err(|_| FieldError::new(format!("{v} is not a value of enum {name}")))
}

fn unspecified(name: &str) -> FieldError {
    FieldError::new(format!("0 ({name}) is not allowed: the field is required"))
}

fn protocol_to_pb(p: Protocol) -> i32 {
    i32::from(match p {
        Protocol::Http => pb::Protocol::Http,
        Protocol::Http2 => pb::Protocol::Http2,
        Protocol::Tcp => pb::Protocol::Tcp,
        Protocol::Auto => pb::Protocol::Auto,
    })
}

fn protocol(v: i32) -> Checked<Protocol> {
    Ok(match known(v, "Protocol")? {
        pb::Protocol::Http => Protocol::Http,
        pb::Protocol::Http2 => Protocol::Http2,
        pb::Protocol::Tcp => Protocol::Tcp,
        pb::Protocol::Auto => Protocol::Auto,
        pb::Protocol::Unspecified => return Err(unspecified(pb::Protocol::Unspecified.as_str_name())),
    })
}

fn protocol_from_to_pb(f: &ProtocolFrom) -> pb::ProtocolFrom {
    let (by, value) = match f {
        ProtocolFrom::AppProtocol(v) => (pb::ProtocolRule::AppProtocol, v.clone()),
        ProtocolFrom::PortName(v) => (pb::ProtocolRule::PortName, v.clone()),
        ProtocolFrom::ServerFirstPort => (pb::ProtocolRule::ServerFirstPort, String::new()),
        ProtocolFrom::Unspecified => (pb::ProtocolRule::Detected, String::new()),
    };
    pb::ProtocolFrom { by: i32::from(by), value }
}

fn protocol_from(m: pb::ProtocolFrom) -> Checked<ProtocolFrom> {
    let by: pb::ProtocolRule = known(m.by, "ProtocolRule").field("by")?;
    let without_value = |f: ProtocolFrom| {
        if m.value.is_empty() {
            Ok(f)
        } else {
            Err(FieldError::new(format!("{:?} given, but {} takes none", m.value, by.as_str_name()))).field("value")
        }
    };
    match by {
        pb::ProtocolRule::AppProtocol => Ok(ProtocolFrom::AppProtocol(m.value)),
        pb::ProtocolRule::PortName => Ok(ProtocolFrom::PortName(m.value)),
        pb::ProtocolRule::ServerFirstPort => without_value(ProtocolFrom::ServerFirstPort),
        pb::ProtocolRule::Detected => without_value(ProtocolFrom::Unspecified),
        pb::ProtocolRule::Unspecified => Err(unspecified(by.as_str_name())).field("by"),
    }
}

fn mtls_mode_to_pb(m: MtlsMode) -> i32 {
    i32::from(match m {
        MtlsMode::Strict => pb::MtlsMode::Strict,
        MtlsMode::Permissive => pb::MtlsMode::Permissive,
        MtlsMode::Disable => pb::MtlsMode::Disable,
    })
}

fn mtls_mode(v: i32) -> Checked<MtlsMode> {
    Ok(match known(v, "MtlsMode")? {
        pb::MtlsMode::Strict => MtlsMode::Strict,
        pb::MtlsMode::Permissive => MtlsMode::Permissive,
        pb::MtlsMode::Disable => MtlsMode::Disable,
        pb::MtlsMode::Unspecified => return Err(unspecified(pb::MtlsMode::Unspecified.as_str_name())),
    })
}

fn mtls_from_to_pb(f: &MtlsFrom) -> pb::MtlsFrom {
    let (level, policy) = match f {
        MtlsFrom::Default => (pb::MtlsLevel::Default, None),
        MtlsFrom::Mesh(k) => (pb::MtlsLevel::Mesh, Some(k)),
        MtlsFrom::Namespace(k) => (pb::MtlsLevel::Namespace, Some(k)),
        MtlsFrom::Workload(k) => (pb::MtlsLevel::Workload, Some(k)),
        MtlsFrom::Port(k) => (pb::MtlsLevel::Port, Some(k)),
    };
    pb::MtlsFrom { level: i32::from(level), policy: policy.map(key_to_pb) }
}

fn mtls_from(m: pb::MtlsFrom) -> Checked<MtlsFrom> {
    let level: pb::MtlsLevel = known(m.level, "MtlsLevel").field("level")?;
    let given = m.policy.is_some();
    let policy = move || required(m.policy).and_then(key).field("policy");
    Ok(match level {
        pb::MtlsLevel::Default if given => {
            return Err(FieldError::new("given, but the DEFAULT level has none")).field("policy");
        }
        pb::MtlsLevel::Default => MtlsFrom::Default,
        pb::MtlsLevel::Mesh => MtlsFrom::Mesh(policy()?),
        pb::MtlsLevel::Namespace => MtlsFrom::Namespace(policy()?),
        pb::MtlsLevel::Workload => MtlsFrom::Workload(policy()?),
        pb::MtlsLevel::Port => MtlsFrom::Port(policy()?),
        pb::MtlsLevel::Unspecified => return Err(unspecified(level.as_str_name())).field("level"),
    })
}

fn outbound_policy_to_pb(p: OutboundPolicy) -> i32 {
    i32::from(match p {
        OutboundPolicy::AllowAny => pb::OutboundPolicy::AllowAny,
        OutboundPolicy::RegistryOnly => pb::OutboundPolicy::RegistryOnly,
    })
}

fn outbound_policy(v: i32) -> Checked<OutboundPolicy> {
    Ok(match known(v, "OutboundPolicy")? {
        pb::OutboundPolicy::AllowAny => OutboundPolicy::AllowAny,
        pb::OutboundPolicy::RegistryOnly => OutboundPolicy::RegistryOnly,
        pb::OutboundPolicy::Unspecified => return Err(unspecified(pb::OutboundPolicy::Unspecified.as_str_name())),
    })
}

// ---------------------------------------------------------------- Workload

impl Resource for WorkloadPart {
    const KIND: Kind = Kind::Workload;
    type Message = pb::Workload;
    type Key = podmesh_model::ObjectKey;

    fn name(key: &podmesh_model::ObjectKey) -> String {
        key.to_string()
    }

    fn to_message(&self) -> pb::Workload {
        pb::Workload {
            workload: Some(workload_info_to_pb(&self.workload)),
            mesh: Some(mesh_to_pb(&self.mesh)),
            inbound: Some(inbound_to_pb(&self.inbound)),
        }
    }

    fn from_message(m: pb::Workload) -> Checked<Self> {
        Ok(WorkloadPart {
            workload: required(m.workload).and_then(workload_info).field("workload")?,
            mesh: required(m.mesh).and_then(mesh).field("mesh")?,
            inbound: required(m.inbound).and_then(inbound).field("inbound")?,
        })
    }
}

fn workload_info_to_pb(w: &WorkloadInfo) -> pb::WorkloadInfo {
    pb::WorkloadInfo {
        pod: Some(key_to_pb(&w.pod)),
        ip: ip_to_pb(w.ip),
        identity: w.identity.as_str().to_string(),
        service_account: w.service_account.clone(),
        workload: w.workload.clone(),
        labels: w.labels.clone(),
    }
}

fn workload_info(m: pb::WorkloadInfo) -> Checked<WorkloadInfo> {
    Ok(WorkloadInfo {
        pod: required(m.pod).and_then(key).field("pod")?,
        ip: ip(&m.ip).field("ip")?,
        identity: identity(m.identity).field("identity")?,
        service_account: m.service_account,
        workload: m.workload,
        labels: m.labels,
    })
}

fn mesh_to_pb(m: &MeshConfig) -> pb::MeshConfig {
    pb::MeshConfig {
        trust_domain: m.trust_domain.clone(),
        cluster_domain: m.cluster_domain.clone(),
        root_namespace: m.root_namespace.clone(),
        outbound_traffic_policy: outbound_policy_to_pb(m.outbound_traffic_policy),
        pod_cidr: m.pod_cidr.to_string(),
        service_cidr: m.service_cidr.to_string(),
        protocol_detection_timeout_ms: millis(m.protocol_detection_timeout),
    }
}

fn cidr(s: &str) -> Checked<ipnet::IpNet> {
    s.parse().map_err(|e| FieldError::new(format!("{s:?} is not a CIDR: {e}")))
}

fn mesh(m: pb::MeshConfig) -> Checked<MeshConfig> {
    Ok(MeshConfig {
        outbound_traffic_policy: outbound_policy(m.outbound_traffic_policy).field("outbound_traffic_policy")?,
        pod_cidr: cidr(&m.pod_cidr).field("pod_cidr")?,
        service_cidr: cidr(&m.service_cidr).field("service_cidr")?,
        protocol_detection_timeout: Duration::from_millis(m.protocol_detection_timeout_ms),
        trust_domain: m.trust_domain,
        cluster_domain: m.cluster_domain,
        root_namespace: m.root_namespace,
    })
}

fn inbound_to_pb(i: &Inbound) -> pb::Inbound {
    pb::Inbound { ports: i.ports.values().map(inbound_port_to_pb).collect() }
}

fn inbound(m: pb::Inbound) -> Checked<Inbound> {
    let mut ports = BTreeMap::new();
    list(m.ports, |p| {
        let p = inbound_port(p)?;
        let at = p.port;
        if ports.insert(at, p).is_some() {
            return Err(FieldError::new(format!("{at} is listed twice"))).field("port");
        }
        Ok(())
    })
    .field("ports")?;
    Ok(Inbound { ports })
}

fn inbound_port_to_pb(p: &InboundPort) -> pb::InboundPort {
    pb::InboundPort {
        port: u32::from(p.port.0),
        protocol: protocol_to_pb(p.protocol),
        protocol_from: Some(protocol_from_to_pb(&p.protocol_from)),
        mtls: mtls_mode_to_pb(p.mtls),
        mtls_from: Some(mtls_from_to_pb(&p.mtls_from)),
        services: p
            .services
            .iter()
            .map(|s| pb::InboundService {
                service: Some(key_to_pb(&s.service)),
                port: u32::from(s.port.0),
                headless: s.headless,
            })
            .collect(),
        headless: p.headless,
        hosts: p.hosts.iter().cloned().collect(),
    }
}

fn inbound_port(m: pb::InboundPort) -> Checked<InboundPort> {
    let mut hosts = BTreeSet::new();
    list(m.hosts, |h| {
        if hosts.contains(&h) {
            return Err(FieldError::new(format!("{h:?} is listed twice")));
        }
        hosts.insert(h);
        Ok(())
    })
    .field("hosts")?;
    Ok(InboundPort {
        port: TargetPort(port(m.port).field("port")?),
        protocol: protocol(m.protocol).field("protocol")?,
        protocol_from: required(m.protocol_from).and_then(protocol_from).field("protocol_from")?,
        mtls: mtls_mode(m.mtls).field("mtls")?,
        mtls_from: required(m.mtls_from).and_then(mtls_from).field("mtls_from")?,
        services: list(m.services, |s| {
            Ok(InboundService {
                service: required(s.service).and_then(key).field("service")?,
                port: ServicePort(port(s.port).field("port")?),
                headless: s.headless,
            })
        })
        .field("services")?,
        headless: m.headless,
        hosts,
    })
}

// ---------------------------------------------------------------- Listener

impl Resource for Listener {
    const KIND: Kind = Kind::Listener;
    type Message = pb::Listener;
    type Key = std::net::SocketAddr;

    fn name(key: &std::net::SocketAddr) -> String {
        key.to_string()
    }

    fn to_message(&self) -> pb::Listener {
        pb::Listener {
            service: Some(key_to_pb(&self.service)),
            port: u32::from(self.port.0),
            protocol: protocol_to_pb(self.protocol),
            protocol_from: Some(protocol_from_to_pb(&self.protocol_from)),
            cluster: self.cluster.0.clone(),
        }
    }

    fn from_message(m: pb::Listener) -> Checked<Self> {
        Ok(Listener {
            service: required(m.service).and_then(key).field("service")?,
            port: ServicePort(port(m.port).field("port")?),
            protocol: protocol(m.protocol).field("protocol")?,
            protocol_from: required(m.protocol_from).and_then(protocol_from).field("protocol_from")?,
            cluster: ClusterName(m.cluster),
        })
    }
}

// ---------------------------------------------------------------- RouteTable

impl Resource for RouteTable {
    const KIND: Kind = Kind::RouteTable;
    type Message = pb::RouteTable;
    type Key = podmesh_model::ServicePort;

    fn name(key: &podmesh_model::ServicePort) -> String {
        key.0.to_string()
    }

    fn to_message(&self) -> pb::RouteTable {
        pb::RouteTable { virtual_hosts: self.virtual_hosts.iter().map(virtual_host_to_pb).collect() }
    }

    fn from_message(m: pb::RouteTable) -> Checked<Self> {
        Ok(RouteTable::from(list(m.virtual_hosts, virtual_host).field("virtual_hosts")?))
    }
}

fn virtual_host_to_pb(v: &VirtualHost) -> pb::VirtualHost {
    pb::VirtualHost {
        name: v.name.clone(),
        domains: v.domains.clone(),
        service: v.service.as_ref().map(key_to_pb),
        virtual_service: v.virtual_service.as_ref().map(key_to_pb),
        routes: v.routes.iter().map(route_to_pb).collect(),
    }
}

fn virtual_host(m: pb::VirtualHost) -> Checked<VirtualHost> {
    Ok(VirtualHost {
        name: m.name,
        domains: m.domains,
        service: m.service.map(key).transpose().field("service")?,
        virtual_service: m.virtual_service.map(key).transpose().field("virtual_service")?,
        routes: list(m.routes, route).field("routes")?,
    })
}

fn route_to_pb(r: &Route) -> pb::Route {
    pb::Route {
        name: r.name.clone(),
        matches: r.matches.iter().map(http_match_to_pb).collect(),
        destinations: r
            .destinations
            .iter()
            .map(|d| pb::RouteDestination { cluster: d.cluster.0.clone(), weight: d.weight })
            .collect(),
        timeout_ms: r.timeout.map(millis),
        retries: r.retries,
    }
}

fn route(m: pb::Route) -> Checked<Route> {
    Ok(Route {
        name: m.name,
        matches: list(m.matches, http_match).field("matches")?,
        destinations: m
            .destinations
            .into_iter()
            .map(|d| RouteDestination { cluster: ClusterName(d.cluster), weight: d.weight })
            .collect(),
        timeout: m.timeout_ms.map(Duration::from_millis),
        retries: m.retries,
    })
}

fn http_match_to_pb(m: &HttpMatch) -> pb::HttpMatch {
    pb::HttpMatch {
        uri: m.uri.as_ref().map(string_match_to_pb),
        headers: m.headers.iter().map(|(k, v)| (k.clone(), string_match_to_pb(v))).collect(),
        method: m.method.as_ref().map(string_match_to_pb),
        port: m.port.map(|p| u32::from(p.0)),
    }
}

fn http_match(m: pb::HttpMatch) -> Checked<HttpMatch> {
    let mut headers = BTreeMap::new();
    for (name, v) in m.headers {
        let v = string_match(v)
            .map_err(|mut e| {
                e.path.push(Segment::Key(name.clone()));
                e
            })
            .field("headers")?;
        headers.insert(name, v);
    }
    Ok(HttpMatch {
        uri: m.uri.map(string_match).transpose().field("uri")?,
        headers,
        method: m.method.map(string_match).transpose().field("method")?,
        port: m.port.map(port).transpose().field("port")?.map(ServicePort),
    })
}

fn string_match_to_pb(m: &StringMatch) -> pb::StringMatch {
    use pb::string_match::Kind as K;
    pb::StringMatch {
        kind: Some(match m {
            StringMatch::Exact(s) => K::Exact(s.clone()),
            StringMatch::Prefix(s) => K::Prefix(s.clone()),
            StringMatch::Regex(p) => K::Regex(p.source().to_string()),
        }),
    }
}

fn string_match(m: pb::StringMatch) -> Checked<StringMatch> {
    use pb::string_match::Kind as K;
    match required(m.kind).map_err(|_| FieldError::new("one of exact, prefix or regex is required"))? {
        K::Exact(s) => Ok(StringMatch::Exact(s)),
        K::Prefix(s) => Ok(StringMatch::Prefix(s)),
        K::Regex(s) => match Pattern::new(&s) {
            Ok(p) => Ok(StringMatch::Regex(p)),
            Err(e) => {
                // A syntax error renders over several lines, showing the anchored pattern actually compiled; keep
                // one line, about the pattern as sent (as the manifest loader does).
                let e = e.to_string();
                let detail = e.lines().last().unwrap_or_default().trim_start_matches("error: ");
                Err(FieldError::new(format!("{s:?} is not a valid regular expression: {detail}"))).field("regex")
            }
        },
    }
}

// ---------------------------------------------------------------- Cluster

impl Resource for Upstream {
    const KIND: Kind = Kind::Cluster;
    type Message = pb::Cluster;
    type Key = podmesh_compute::ClusterName;

    fn name(key: &podmesh_compute::ClusterName) -> String {
        key.0.clone()
    }

    fn to_message(&self) -> pb::Cluster {
        pb::Cluster {
            service: Some(key_to_pb(&self.service)),
            port: u32::from(self.port.0),
            subset: self.subset.clone(),
            protocol: protocol_to_pb(self.protocol),
            endpoints: self.endpoints.iter().map(endpoint_to_pb).collect(),
        }
    }

    fn from_message(m: pb::Cluster) -> Checked<Self> {
        Ok(Upstream {
            service: required(m.service).and_then(key).field("service")?,
            port: ServicePort(port(m.port).field("port")?),
            subset: m.subset,
            protocol: protocol(m.protocol).field("protocol")?,
            endpoints: list(m.endpoints, endpoint).field("endpoints")?,
        })
    }
}

fn endpoint_to_pb(e: &Endpoint) -> pb::Endpoint {
    pb::Endpoint {
        address: ip_to_pb(e.address.ip()),
        port: u32::from(e.address.port()),
        pod: e.pod.as_ref().map(key_to_pb),
        ready: e.ready,
        tls_identity: e.tls.as_ref().map(|i| i.as_str().to_string()),
    }
}

fn endpoint(m: pb::Endpoint) -> Checked<Endpoint> {
    Ok(Endpoint {
        address: SocketAddr::new(ip(&m.address).field("address")?, port(m.port).field("port")?),
        pod: m.pod.map(key).transpose().field("pod")?,
        ready: m.ready,
        tls: m.tls_identity.map(identity).transpose().field("tls_identity")?,
    })
}

// ---------------------------------------------------------------- DirectPod

impl Resource for DirectPod {
    const KIND: Kind = Kind::DirectPod;
    type Message = pb::DirectPod;
    type Key = std::net::IpAddr;

    fn name(key: &std::net::IpAddr) -> String {
        key.to_string()
    }

    fn to_message(&self) -> pb::DirectPod {
        pb::DirectPod {
            pod: Some(key_to_pb(&self.pod)),
            workload: self.workload.clone(),
            identity: self.identity.as_ref().map(|i| i.as_str().to_string()),
            mtls: self.mtls.as_deref().map(port_modes_to_pb),
        }
    }

    fn from_message(m: pb::DirectPod) -> Checked<Self> {
        Ok(DirectPod {
            pod: required(m.pod).and_then(key).field("pod")?,
            workload: m.workload,
            identity: m.identity.map(identity).transpose().field("identity")?,
            mtls: m.mtls.map(port_modes).transpose().field("mtls")?.map(Arc::new),
        })
    }
}

fn port_modes_to_pb(m: &PortModes) -> pb::PortModes {
    pb::PortModes {
        mtls: mtls_mode_to_pb(m.default),
        mtls_from: Some(mtls_from_to_pb(&m.default_from)),
        ports: m
            .ports
            .iter()
            .map(|(p, (mode, from))| pb::PortMode {
                port: u32::from(p.0),
                mtls: mtls_mode_to_pb(*mode),
                mtls_from: Some(mtls_from_to_pb(from)),
            })
            .collect(),
    }
}

fn port_modes(m: pb::PortModes) -> Checked<PortModes> {
    let mut ports = BTreeMap::new();
    list(m.ports, |p| {
        let at = TargetPort(port(p.port).field("port")?);
        let mode = mtls_mode(p.mtls).field("mtls")?;
        let from = required(p.mtls_from).and_then(mtls_from).field("mtls_from")?;
        if ports.insert(at, (mode, from)).is_some() {
            return Err(FieldError::new(format!("{at} is listed twice"))).field("port");
        }
        Ok(())
    })
    .field("ports")?;
    Ok(PortModes {
        default: mtls_mode(m.mtls).field("mtls")?,
        default_from: required(m.mtls_from).and_then(mtls_from).field("mtls_from")?,
        ports,
    })
}
