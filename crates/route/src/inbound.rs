//! R4 — what the destination sidecar admits. The destination decides, whatever the client did (R4.6).

use podmesh_compute::names;
use podmesh_compute::{InboundPort, ProxyConfig};
use podmesh_model::{MtlsMode, TargetPort};

use crate::reason::{ReasonCode, Rejection, Rule, Side};
use crate::request::{Addressed, Peer, ports};

/// The decision for a new inbound connection.
#[derive(Debug, Clone, Copy)]
pub enum Connection<'c> {
    /// R7/R8: a sidecar port other pods may reach (15020 metrics, 15021 readiness), served by the sidecar.
    SidecarPort(u16),
    /// Admitted to a declared port (R4.1, R4.2); HTTP requests are then checked one by one (R4.3), TCP by
    /// [`tcp`] (R4.4).
    Admit(&'c InboundPort),
}

/// R4.1 and R4.2: the port must be declared, and the peer-authentication mode must admit how the client came.
/// `peer` is the client's mesh mTLS evidence; None for plaintext.
pub fn connection<'c>(cfg: &'c ProxyConfig, port: u16, peer: Option<&Peer>) -> Result<Connection<'c>, Rejection> {
    let w = &cfg.workload;
    if ports::ALL.contains(&port) {
        return if ports::SERVED_TO_PODS.contains(&port) {
            Ok(Connection::SidecarPort(port))
        } else {
            Err(Rejection::new(
                ReasonCode::UpstreamConnectFailure,
                Side::Destination,
                Rule::R7,
                format!("port {port} of {} is the sidecar's own, reachable only from inside the pod.", w.pod),
                format!(
                    "scrape {}:{} for metrics and health; call the application on a declared port",
                    w.ip,
                    ports::STATS
                ),
            ))
        };
    }
    let Some(p) = cfg.inbound.ports.get(&TargetPort(port)) else {
        return Err(undeclared(cfg, port));
    };
    if p.mtls == MtlsMode::Strict && peer.is_none() {
        return Err(Rejection::new(
            ReasonCode::MtlsRequired,
            Side::Destination,
            Rule::R4_2,
            format!(
                "port {port} of {} admits only mesh mTLS (STRICT, from {}), and the client came in plaintext.",
                w.pod, p.mtls_from
            ),
            format!(
                "call it from a pod with a sidecar, or make port {port} PERMISSIVE with a PeerAuthentication selecting {} (portLevelMtls: {{{port}: {{mode: PERMISSIVE}}}})",
                w.selector_hint()
            ),
        ));
    }
    Ok(Connection::Admit(p))
}

fn undeclared(cfg: &ProxyConfig, port: u16) -> Rejection {
    let w = &cfg.workload;
    let declared: Vec<String> = cfg
        .inbound
        .ports
        .values()
        .map(|p| {
            let via: Vec<String> =
                p.services.iter().map(|s| format!("{}.{}:{}", s.service.name, s.service.namespace, s.port)).collect();
            format!("{} (via {})", p.port, via.join(", "))
        })
        .collect();
    let known = if declared.is_empty() {
        "no Service selects it".to_string()
    } else {
        format!("declared: {}", declared.join("; "))
    };
    Rejection::new(
        ReasonCode::UndeclaredPort,
        Side::Destination,
        Rule::R4_1,
        format!("no Service selecting {} declares target port {port} ({known}).", w.pod),
        format!(
            "add port {port} to a Service selecting {} (a headless one to reach each pod directly), or call a declared port",
            w.selector_hint()
        ),
    )
}

/// How an admitted HTTP request's Host was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// An R2 name (canonical form) of a Service declaring the port, or a VirtualService host routed to one.
    Name(String),
    /// A headless Service declares the port: any Host (R4.3).
    HeadlessFallback,
}

/// R4.3: the Host of an HTTP request on an admitted port. Short names resolve against the client's namespace,
/// taken from its mTLS identity; for plaintext clients, against this pod's namespace.
pub fn http_request(
    cfg: &ProxyConfig,
    port: &InboundPort,
    host: Option<&str>,
    peer: Option<&Peer>,
) -> Result<HostMatch, Rejection> {
    if port.headless {
        return Ok(HostMatch::HeadlessFallback);
    }
    let w = &cfg.workload;
    let client_ns = peer.and_then(|p| p.identity.namespace()).unwrap_or(&w.pod.namespace);
    let normalized = host.and_then(names::normalize);
    if let Some(name) = normalized.as_ref().and_then(|h| port.accepts(h, client_ns, &cfg.mesh.cluster_domain)) {
        return Ok(HostMatch::Name(name));
    }
    let shown = normalized.map_or_else(|| "(none)".to_string(), |h| h.to_string());
    let services: Vec<String> =
        port.services.iter().map(|s| format!("{}.{}", s.service.name, s.service.namespace)).collect();
    Err(Rejection::new(
        ReasonCode::NoRoute,
        Side::Destination,
        Rule::R4_3,
        format!(
            "Host {shown:?} is not a name of a Service declaring port {} of {} (those are: {}).",
            port.port,
            w.pod,
            services.join(", ")
        ),
        format!(
            "send Host {} — or, to reach this pod by its IP with any Host, declare port {} in a headless Service selecting {}",
            services.first().map_or("<service>.<namespace>", String::as_str),
            port.port,
            w.selector_hint()
        ),
    ))
}

/// R4.4: a TCP connection over mTLS that addressed this pod directly needs a headless Service declaring the port.
/// Plaintext TCP carries no such evidence and is admitted on declared ports.
pub fn tcp(cfg: &ProxyConfig, port: &InboundPort, peer: Option<&Peer>) -> Result<(), Rejection> {
    if port.headless || !matches!(peer, Some(Peer { addressed: Addressed::Direct, .. })) {
        return Ok(());
    }
    let w = &cfg.workload;
    let via: Vec<String> =
        port.services.iter().map(|s| format!("{}.{}:{}", s.service.name, s.service.namespace, s.port)).collect();
    Err(Rejection::new(
        ReasonCode::DirectNotHeadless,
        Side::Destination,
        Rule::R4_4,
        format!(
            "{} is reachable on port {} only through a Service ({}), and this connection dialled the pod directly.",
            w.ip,
            port.port,
            via.join(", ")
        ),
        format!(
            "call {} instead, or create a headless Service (clusterIP: None) selecting {} with port {}",
            via.first().map_or("the Service", String::as_str),
            w.selector_hint(),
            port.port
        ),
    ))
}
