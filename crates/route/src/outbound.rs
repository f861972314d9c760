//! R3 — what the source sidecar does with a connection to `IP:port`, and with each HTTP request on it.
//!
//! These functions run on the sidecar's data path: the happy path returns references into the config and
//! allocates nothing; strings are built only for rejections.

use std::net::SocketAddr;

use podmesh_compute::names::{self, HostName};
use podmesh_compute::{DirectPod, Identity, Listener, ProxyConfig, Route, RouteDestination, Upstream, VirtualHost};
use podmesh_model::{OutboundPolicy, TargetPort};

use crate::reason::{ReasonCode, Rejection, Rule, Side};
use crate::request::{HttpRequest, ports};

/// The decision for a new outbound connection.
#[derive(Debug, Clone, Copy)]
pub enum Connection<'c> {
    /// R3.1/R3.2: `ClusterIP:port` of a Service. HTTP is routed per request, TCP per connection.
    Service(&'c Listener),
    /// R3.3: a pod IP. Every request of the connection goes to exactly this pod; mTLS when `tls` is set (R3.5).
    Direct { pod: &'c DirectPod, port: TargetPort, tls: Option<&'c Identity> },
    /// R7: a sidecar port of a meshed pod (e.g. 15020 metrics). Never captured at the destination, so it is
    /// sent as is, in plaintext.
    SidecarPort { pod: &'c DirectPod, port: u16 },
    /// R3.4 under ALLOW_ANY: an address outside the cluster, forwarded as is (reason `passthrough`).
    Passthrough,
}

/// R3: classify a connection by its original destination.
pub fn connection(cfg: &ProxyConfig, dst: SocketAddr) -> Result<Connection<'_>, Rejection> {
    let out = &cfg.outbound;
    if let Some(listener) = out.listeners.get(&dst) {
        return Ok(Connection::Service(listener));
    }
    if let Some(pod) = out.pods.get(&dst.ip()) {
        if pod.identity.is_some() && ports::ALL.contains(&dst.port()) {
            return Ok(Connection::SidecarPort { pod, port: dst.port() });
        }
        let port = TargetPort(dst.port());
        return Ok(Connection::Direct { pod, port, tls: pod.tls_for(port) });
    }
    if let Some(listener) = out.listeners_on(dst.ip()).next() {
        let declared: Vec<String> = out.listeners_on(dst.ip()).map(|l| l.port.to_string()).collect();
        let svc = &listener.service;
        return Err(Rejection::new(
            ReasonCode::NoRoute,
            Side::Source,
            Rule::R3_1,
            format!("{} is the ClusterIP of Service {svc}, which does not declare port {}.", dst.ip(), dst.port()),
            format!(
                "call {}.{} on a declared port ({}), or add port {} to Service {svc}",
                svc.name,
                svc.namespace,
                declared.join(", "),
                dst.port()
            ),
        ));
    }
    match cfg.mesh.outbound_traffic_policy {
        OutboundPolicy::AllowAny => Ok(Connection::Passthrough),
        OutboundPolicy::RegistryOnly => Err(Rejection::new(
            ReasonCode::UnknownDestination,
            Side::Source,
            Rule::R3_4,
            format!("{dst} is outside the cluster and outboundTrafficPolicy is REGISTRY_ONLY."),
            "call a Service of the mesh, or set outboundTrafficPolicy.mode: ALLOW_ANY in the MeshConfig",
        )),
    }
}

/// A routed HTTP request: the virtual host and route chosen (R3.1), with at least one destination that has a
/// ready endpoint.
#[derive(Debug, Clone)]
pub struct Forward<'c> {
    pub virtual_host: &'c VirtualHost,
    /// The canonical name the Host matched (R2).
    pub matched_host: String,
    pub route: &'c Route,
    cfg: &'c ProxyConfig,
}

impl<'c> Forward<'c> {
    /// The destinations that can receive traffic (weight > 0), with their clusters (None: not defined).
    pub fn destinations(&self) -> impl Iterator<Item = (&'c RouteDestination, Option<&'c Upstream>)> + 'c {
        let out = &self.cfg.outbound;
        self.route.destinations.iter().filter(|d| d.weight > 0).map(move |d| (d, out.clusters.get(&d.cluster)))
    }

    /// Picks a destination by weight from a uniform random `r`, and checks it has a ready endpoint. Balancing
    /// among its endpoints (least request, P2C) is the sidecar's.
    pub fn pick(&self, r: u64) -> Result<&'c Upstream, Rejection> {
        let total: u64 = self.destinations().map(|(d, _)| u64::from(d.weight)).sum();
        let mut x = if total == 0 { 0 } else { r % total };
        let mut chosen = None;
        for (d, up) in self.destinations() {
            if x < u64::from(d.weight) {
                chosen = Some((d, up));
                break;
            }
            x -= u64::from(d.weight);
        }
        match chosen {
            Some((_, Some(up))) if up.ready().next().is_some() => Ok(up),
            Some((d, up)) => Err(no_healthy_upstream(&d.cluster.0, up)),
            None => Err(no_healthy_upstream(&self.route.name, None)),
        }
    }
}

pub(crate) fn no_healthy_upstream(what: &str, up: Option<&Upstream>) -> Rejection {
    let (message, fix) = match up {
        None => (
            format!("{what} does not exist (a route names a Service, port or subset that is not defined)."),
            "point the route at a defined Service and subset (podmesh check lists such routes)".to_string(),
        ),
        Some(up) => (
            format!(
                "Service {} port {}{} has {} endpoint(s), none ready.",
                up.service,
                up.port,
                up.subset.as_ref().map(|s| format!(" subset {s}")).unwrap_or_default(),
                up.endpoints.len()
            ),
            format!("start or fix the pods behind Service {} until they are ready", up.service),
        ),
    };
    Rejection::new(ReasonCode::NoHealthyUpstream, Side::Source, Rule::R3_1, message, fix)
}

/// R3.1: route one HTTP request that arrived on a Service listener. The Host picks the virtual host (it may name
/// a Service other than the one dialled: Host wins), the first matching route picks the destinations.
pub fn http_request<'c>(
    cfg: &'c ProxyConfig,
    listener: &'c Listener,
    req: &HttpRequest<'_>,
) -> Result<Forward<'c>, Rejection> {
    let port = listener.port;
    let no_route =
        |message: String, fix: String| Rejection::new(ReasonCode::NoRoute, Side::Source, Rule::R3_1, message, fix);
    let Some(host) = req.host.and_then(names::normalize) else {
        let message = match req.host {
            Some(h) => format!("Host {h:?} is not a host name or address."),
            None => "the request has no Host header.".into(),
        };
        return Err(no_route(
            message,
            format!("send a Host naming a Service on port {port}, e.g. {}", short_name(&listener.service)),
        ));
    };
    let Some((vh, matched_host)) = cfg.find_virtual_host(port, &host) else {
        return Err(no_route(
            format!("Host {:?} is not a name of any Service on port {port}.", host_text(&host)),
            format!(
                "send Host {} (or another name of {}), or route {:?} with a VirtualService",
                short_name(&listener.service),
                listener.service,
                host_text(&host)
            ),
        ));
    };
    let Some(route) = vh.routes.iter().find(|r| r.matches.is_empty() || r.matches.iter().any(|m| req.matches(m)))
    else {
        let vs = vh.virtual_service.as_ref().map(|k| k.to_string()).unwrap_or_default();
        return Err(no_route(
            format!("no route of VirtualService {vs} matches {} {}.", req.method, req.path),
            format!(
                "add a route without match (a default) to VirtualService {vs}, or send a request one of its routes matches"
            ),
        ));
    };
    let fwd = Forward { virtual_host: vh, matched_host, route, cfg };
    if !fwd.destinations().any(|(_, up)| up.is_some_and(|u| u.ready().next().is_some())) {
        let (what, up) =
            fwd.destinations().next().map_or((route.name.as_str(), None), |(d, up)| (d.cluster.0.as_str(), up));
        return Err(no_healthy_upstream(what, up));
    }
    Ok(fwd)
}

/// R3.2: a TCP connection to a Service listener (or an `auto` one whose bytes are not HTTP): its endpoints,
/// balanced per connection by the sidecar.
pub fn tcp_connection<'c>(cfg: &'c ProxyConfig, listener: &'c Listener) -> Result<&'c Upstream, Rejection> {
    match cfg.outbound.clusters.get(&listener.cluster) {
        Some(up) if up.ready().next().is_some() => Ok(up),
        up => Err(no_healthy_upstream(&listener.cluster.0, up)),
    }
}

fn host_text(h: &HostName<'_>) -> String {
    h.to_string()
}

/// `svc.ns`: the shortest name of a Service that works from every namespace.
pub fn short_name(svc: &podmesh_model::ObjectKey) -> String {
    format!("{}.{}", svc.name, svc.namespace)
}
