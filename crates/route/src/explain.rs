//! `podmesh explain`: what happens to one request, and why.
//!
//! An explanation is not a second implementation of the contract: it runs the very functions the sidecars run —
//! [`crate::outbound`] in the source's config, then [`crate::inbound`] in the destination's — and records each
//! decision with its rule. A plain (sidecar-less) source is modelled as Kubernetes does it: DNS, then kube-proxy's
//! per-connection NAT for ClusterIPs.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use podmesh_compute::{ComputeError, Endpoint, Identity, Index, ProxyConfig};
use podmesh_model::{ObjectKey, Pod};
use serde::Serialize;

use crate::inbound;
use crate::outbound::{self, Connection};
use crate::reason::{ClientSees, ReasonCode, Rejection, Rule, Side};
use crate::request::{Addressed, Detected, Handling, HttpRequest, Peer, handling, ports};

/// What to explain.
#[derive(Debug, Clone)]
pub struct Query {
    /// The pod that sends the request.
    pub from: ObjectKey,
    pub target: Target,
    /// Host header to send instead of the target's authority.
    pub host: Option<String>,
    /// Send raw (non-HTTP) bytes instead of an HTTP request.
    pub tcp: bool,
    pub method: String,
    /// Extra request headers, for VirtualService header matches.
    pub headers: Vec<(String, String)>,
}

impl Query {
    pub fn http(from: ObjectKey, target: &str) -> Result<Self, ExplainError> {
        let target: Target = target.parse()?;
        let tcp = target.tls;
        Ok(Query { from, target, host: None, tcp, method: "GET".into(), headers: vec![] })
    }

    pub fn tcp(from: ObjectKey, target: &str) -> Result<Self, ExplainError> {
        Ok(Query { tcp: true, ..Self::http(from, target)? })
    }

    pub fn with_host(mut self, host: &str) -> Self {
        self.host = Some(host.into());
        self
    }
}

/// A request target: a URL (`http://web.shop/path`), `HOST:PORT` or `IP:PORT`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// As written: a name or an IP.
    pub host: String,
    pub port: u16,
    pub path: String,
    /// What an HTTP client sends as Host: `host[:port]` as written.
    pub authority: String,
    /// `https://`: the application speaks TLS itself, so the mesh sees opaque bytes.
    #[serde(skip)]
    pub tls: bool,
}

impl FromStr for Target {
    type Err = ExplainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| ExplainError::BadTarget(format!("{s:?}: {why}"));
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
            None => (None, s),
        };
        let (default_port, tls) = match scheme.as_deref() {
            None => (None, false),
            Some("http") => (Some(80), false),
            Some("https") => (Some(443), true),
            Some(other) => {
                return Err(bad(&format!("scheme {other}:// is not supported (use http://, https:// or HOST:PORT)")));
            }
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let path = if path.starts_with('?') { format!("/{path}") } else { path };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h.to_string(), Some(p)),
                _ => (authority.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let port = match (port, default_port) {
            (Some(p), _) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("the port must be 1-65535"))?,
            (None, Some(d)) => d,
            (None, None) => return Err(bad("give a port (HOST:PORT) or a URL (http://HOST/)")),
        };
        Ok(Target { host: host.to_ascii_lowercase(), port, path, authority: authority.to_string(), tls })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("bad target {0}")]
    BadTarget(String),
    #[error("no pod {0} in the manifests (give NAMESPACE/POD, or NAMESPACE/DEPLOYMENT for its first pod)")]
    NoSuchPod(ObjectKey),
    #[error(
        "{name:?} does not resolve from namespace {namespace}: no Service or pod has that name (cluster DNS answers NXDOMAIN)"
    )]
    Unresolvable { name: String, namespace: String },
    #[error("{name:?} resolves to no address: it is a headless Service with no ready pod")]
    NoAddress { name: String },
}

/// Where a step of the explanation happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum At {
    /// Cluster DNS resolving the target name.
    Dns,
    /// The source sidecar.
    Source,
    /// Node NAT for a ClusterIP, when the source has no sidecar.
    KubeProxy,
    /// The destination sidecar (or, for a plain pod, the application).
    Destination,
}

impl At {
    fn label(self) -> &'static str {
        match self {
            At::Dns => "dns",
            At::Source => "source",
            At::KubeProxy => "kube-proxy",
            At::Destination => "destination",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub at: At,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<Rule>,
    pub text: String,
}

/// How requests are spread over the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancing {
    /// Each HTTP request is balanced on its own (least request, power of two choices).
    PerRequest,
    /// Each connection is balanced once (least connections; or kube-proxy's random pick for a plain client).
    PerConnection,
    /// Exactly the pod dialled.
    None,
}

/// The answer. Its JSON form is a documented, stable schema (`podmesh explain -o json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The source pod, `NS/NAME`.
    pub from: String,
    /// Whether the source has a sidecar.
    pub from_sidecar: bool,
    pub target: Target,
    /// `http` or `tcp`: what the client sends.
    pub protocol: &'static str,
    /// The Host header sent (HTTP only).
    pub host: Option<String>,
    /// The address the client connects to, after DNS.
    pub address: Option<SocketAddr>,
    /// The R6 code of the final outcome.
    pub reason: ReasonCode,
    /// Who decided: for a rejection the sidecar that rejected; for `ok` the destination sidecar when it admitted
    /// the request, else the source (a plain destination has no sidecar to decide).
    pub side: Side,
    pub client_sees: ClientSees,
    /// The rules applied, in order, without repeats.
    pub rules: Vec<Rule>,
    /// The Service the request is routed through, `NS/NAME`, if any.
    pub service: Option<String>,
    /// The route chosen (VirtualService route name, or `default`).
    pub route: Option<String>,
    pub subset: Option<String>,
    /// The pods that may serve it, `NS/NAME` (or `IP:PORT` for an endpoint that is not a pod).
    pub endpoints: Vec<String>,
    pub balancing: Balancing,
    /// Whether the hop to the destination is mesh mTLS.
    pub mtls: bool,
    pub steps: Vec<Step>,
    /// What to change when the outcome is a rejection; null when allowed.
    pub fix: Option<String>,
}

/// One place the request may land, as the source sends it.
struct Candidate {
    endpoint: Endpoint,
    addressed: Addressed,
}

struct Outcome {
    endpoint: String,
    meshed: bool,
    result: Result<(), Rejection>,
    steps: Vec<Step>,
}

struct Builder<'a> {
    ix: &'a Index,
    q: &'a Query,
    src: &'a Pod,
    steps: Vec<Step>,
    service: Option<String>,
    route: Option<String>,
    subset: Option<String>,
    balancing: Balancing,
    address: Option<SocketAddr>,
}

impl Builder<'_> {
    fn step(&mut self, at: At, rule: Option<Rule>, text: impl Into<String>) {
        self.steps.push(Step { at, rule, text: text.into() });
    }

    fn host_header(&self) -> Option<String> {
        (!self.q.tcp).then(|| self.q.host.clone().unwrap_or_else(|| self.q.target.authority.clone()))
    }

    fn finish(
        self,
        reason: ReasonCode,
        side: Side,
        endpoints: Vec<String>,
        mtls: bool,
        fix: Option<String>,
    ) -> Explanation {
        let mut rules: Vec<Rule> = Vec::new();
        for r in self.steps.iter().filter_map(|s| s.rule) {
            if !rules.contains(&r) {
                rules.push(r);
            }
        }
        let http = !self.q.tcp;
        Explanation {
            from: self.src.key.to_string(),
            from_sidecar: self.src.sidecar,
            target: self.q.target.clone(),
            protocol: if http { "http" } else { "tcp" },
            host: self.host_header(),
            address: self.address,
            reason,
            side,
            client_sees: reason.client_sees(http),
            rules,
            service: self.service,
            route: self.route,
            subset: self.subset,
            endpoints,
            balancing: self.balancing,
            mtls,
            steps: self.steps,
            fix,
        }
    }

    fn reject(mut self, at: At, r: Rejection) -> Explanation {
        self.step(at, Some(r.rule), format!("{}: {}", r.reason, r.message));
        let fix = Some(r.fix);
        self.finish(r.reason, r.side, vec![], false, fix)
    }
}

/// Explains one request (see the module docs).
pub fn explain(ix: &Index, q: &Query) -> Result<Explanation, ExplainError> {
    let src = ix.pod(&q.from).ok_or_else(|| ExplainError::NoSuchPod(q.from.clone()))?;
    let mut b = Builder {
        ix,
        q,
        src,
        steps: vec![],
        service: None,
        route: None,
        subset: None,
        balancing: Balancing::None,
        address: None,
    };
    let ip = match resolve(ix, src, &q.target.host, &mut b)? {
        Some(ip) => ip,
        None => {
            // A name outside the cluster: resolved by upstream DNS, so outside the mesh (R3.4).
            return Ok(outside(b, None));
        }
    };
    let dst = SocketAddr::new(ip, q.target.port);
    b.address = Some(dst);
    let detected = if q.tcp { Detected::Opaque } else { Detected::Http };
    if !src.sidecar {
        return Ok(from_plain_pod(b, dst));
    }
    let cfg = match ix.proxy_config(&src.key) {
        Ok(c) => c,
        Err(ComputeError::NoSuchPod(k)) => return Err(ExplainError::NoSuchPod(k)),
        Err(ComputeError::NotMeshed(_)) => return Ok(from_plain_pod(b, dst)),
    };
    let conn = match outbound::connection(&cfg, dst) {
        Ok(c) => c,
        Err(r) => return Ok(b.reject(At::Source, r)),
    };
    let identity = cfg.workload.identity.clone();
    let candidates = match conn {
        Connection::Passthrough => return Ok(outside(b, Some(dst))),
        Connection::SidecarPort { pod, port } => {
            b.step(
                At::Source,
                Some(Rule::R7),
                format!("{dst} is sidecar port {port} of pod {}: not captured there, sent as is in plaintext", pod.pod),
            );
            vec![Candidate {
                endpoint: Endpoint { address: dst, pod: Some(pod.pod.clone()), ready: true, tls: None },
                addressed: Addressed::Direct,
            }]
        }
        Connection::Direct { pod, port, tls } => {
            b.step(
                At::Source,
                Some(Rule::R3_3),
                format!("{} is pod {}: direct traffic, no balancing and no re-routing by Host; every request goes to exactly this pod", dst.ip(), pod.pod),
            );
            tls_step(&mut b, tls);
            vec![Candidate {
                endpoint: Endpoint {
                    address: SocketAddr::new(dst.ip(), port.0),
                    pod: Some(pod.pod.clone()),
                    ready: true,
                    tls: tls.cloned(),
                },
                addressed: Addressed::Direct,
            }]
        }
        Connection::Service(listener) => match via_service(&mut b, &cfg, listener, detected) {
            Ok(candidates) => candidates,
            Err(r) => return Ok(b.reject(At::Source, r)),
        },
    };
    Ok(destinations(b, candidates, Some(identity), detected))
}

/// R3.1/R3.2 at the source: a connection to a Service's ClusterIP. Returns the endpoints that may receive it, each
/// with how it was addressed, or the source's refusal.
fn via_service(
    b: &mut Builder<'_>,
    cfg: &ProxyConfig,
    listener: &podmesh_compute::Listener,
    detected: Detected,
) -> Result<Vec<Candidate>, Rejection> {
    let rule = if listener.protocol == podmesh_compute::Protocol::Tcp { Rule::R3_2 } else { Rule::R3_1 };
    b.step(
        At::Source,
        Some(rule),
        format!(
            "{} is the ClusterIP of Service {} port {}: {} ({})",
            b.address.map(|a| a.to_string()).unwrap_or_default(),
            listener.service,
            listener.port,
            listener.protocol,
            listener.protocol_from
        ),
    );
    b.service = Some(listener.service.to_string());
    let what = format!("port {} of Service {}", listener.port, listener.service);
    let via = |up: &podmesh_compute::Upstream, e: &Endpoint| Candidate {
        endpoint: e.clone(),
        addressed: Addressed::Service { service: up.service.clone(), port: up.port },
    };
    if handling(listener.protocol, &listener.protocol_from, detected, Side::Source, &what)? == Handling::Tcp {
        let up = outbound::tcp_connection(cfg, listener)?;
        b.balancing = Balancing::PerConnection;
        let ready: Vec<Candidate> = up.ready().map(|e| via(up, e)).collect();
        let text = format!(
            "TCP: each connection goes to one of {} ready endpoint(s) of {}, least connections",
            ready.len(),
            listener.cluster
        );
        b.step(At::Source, Some(Rule::R3_2), text);
        return Ok(ready);
    }
    let host = b.host_header();
    let q = b.q;
    let req = HttpRequest { host: host.as_deref(), method: &q.method, path: &q.target.path, headers: &q.headers };
    let fwd = outbound::http_request(cfg, listener, &req)?;
    let vh = fwd.virtual_host;
    let names = vh
        .service
        .as_ref()
        .map_or_else(|| format!("VirtualService host {}", vh.domains.join(", ")), |s| format!("Service {s}"));
    let text = format!("Host {:?} is {}, a name of {names}", host.unwrap_or_default(), fwd.matched_host);
    b.step(At::Source, Some(Rule::R2), text);
    if let Some(svc) = &vh.service {
        b.service = Some(svc.to_string());
    }
    if let Some(vs) = &vh.virtual_service {
        let text = format!("VirtualService {vs} routes this host: route {:?} matches", fwd.route.name);
        b.step(At::Source, Some(Rule::R3_1), text);
    }
    b.route = Some(fwd.route.name.clone());
    b.balancing = Balancing::PerRequest;
    let total: u32 = fwd.destinations().map(|(d, _)| d.weight).sum();
    let mut candidates = Vec::new();
    for (d, up) in fwd.destinations() {
        let pct = if total == 0 { 0 } else { u64::from(d.weight) * 100 / u64::from(total) };
        let Some(up) = up else {
            let text = format!("{pct}% to {}: not defined, those requests get no_healthy_upstream", d.cluster);
            b.step(At::Source, Some(Rule::R3_1), text);
            continue;
        };
        let text = format!(
            "{pct}% to {}: {} of {} endpoint(s) ready; each request is balanced on its own (least request, power of two choices)",
            d.cluster,
            up.ready().count(),
            up.endpoints.len()
        );
        b.step(At::Source, Some(Rule::R3_1), text);
        if up.subset.is_some() {
            b.subset = up.subset.clone();
        }
        b.service = Some(up.service.to_string());
        candidates.extend(up.ready().map(|e| via(up, e)));
    }
    if let Some(c) = candidates.first() {
        tls_step(b, c.endpoint.tls.as_ref());
    }
    Ok(candidates)
}

fn tls_step(b: &mut Builder<'_>, tls: Option<&Identity>) {
    match tls {
        Some(id) => b.step(
            At::Source,
            Some(Rule::R3_5),
            format!("mTLS, expecting the server to be {id}; the handshake says how the pod was addressed (R3.6)"),
        ),
        None => b.step(
            At::Source,
            Some(Rule::R3_5),
            "plaintext: the destination has no sidecar, or its mode for this port is DISABLE",
        ),
    }
}

/// DNS step: Some(ip) for cluster addresses (and IP literals), None for names outside the cluster.
fn resolve(ix: &Index, src: &Pod, host: &str, b: &mut Builder<'_>) -> Result<Option<IpAddr>, ExplainError> {
    if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
        return Ok(Some(ip));
    }
    match ix.resolve_dns(host, &src.key.namespace) {
        Some((fqdn, ips)) => {
            let Some(first) = ips.first().copied() else {
                return Err(ExplainError::NoAddress { name: host.to_string() });
            };
            let what = if ips.len() > 1 {
                format!(
                    "{host} resolves to {} pod IPs ({fqdn}, headless); a client connects to one of them — explaining {first}",
                    ips.len()
                )
            } else {
                format!("{host} resolves to {first} ({fqdn})")
            };
            b.step(At::Dns, Some(Rule::R2), what);
            Ok(Some(first))
        }
        None => {
            let domain = ix.domain();
            let looks_internal = !host.contains('.') || host.ends_with(".svc") || host.ends_with(&format!(".{domain}"));
            if looks_internal {
                return Err(ExplainError::Unresolvable {
                    name: host.to_string(),
                    namespace: src.key.namespace.to_string(),
                });
            }
            b.step(
                At::Dns,
                None,
                format!("{host} is not a cluster name: resolved by upstream DNS, outside the cluster"),
            );
            Ok(None)
        }
    }
}

/// R3.4: an address outside the cluster.
fn outside(mut b: Builder<'_>, dst: Option<SocketAddr>) -> Explanation {
    let what = dst.map_or_else(|| b.q.target.host.clone(), |d| d.to_string());
    if !b.src.sidecar {
        b.step(At::Source, None, format!("{} has no sidecar: traffic to {what} leaves the pod as is", b.src.key));
        return b.finish(ReasonCode::Passthrough, Side::Source, vec![what], false, None);
    }
    match b.ix.cluster().mesh.outbound_traffic_policy {
        podmesh_model::OutboundPolicy::AllowAny => {
            b.step(
                At::Source,
                Some(Rule::R3_4),
                format!("{what} is outside the cluster; outboundTrafficPolicy ALLOW_ANY forwards it as is, plaintext"),
            );
            b.finish(ReasonCode::Passthrough, Side::Source, vec![what], false, None)
        }
        podmesh_model::OutboundPolicy::RegistryOnly => b.reject(
            At::Source,
            Rejection::new(
                ReasonCode::UnknownDestination,
                Side::Source,
                Rule::R3_4,
                format!("{what} is outside the cluster and outboundTrafficPolicy is REGISTRY_ONLY."),
                "call a Service of the mesh, or set outboundTrafficPolicy.mode: ALLOW_ANY in the MeshConfig",
            ),
        ),
    }
}

/// A source without a sidecar: kube-proxy NAT for ClusterIPs (per connection), plain routing otherwise.
fn from_plain_pod(mut b: Builder<'_>, dst: SocketAddr) -> Explanation {
    let ix = b.ix;
    let out = ix.outbound();
    let detected = if b.q.tcp { Detected::Opaque } else { Detected::Http };
    let refused = |b: Builder<'_>, message: String, fix: String| {
        b.reject(
            At::KubeProxy,
            Rejection::new(ReasonCode::UpstreamConnectFailure, Side::Source, Rule::R6, message, fix),
        )
    };
    let candidates = if let Some(listener) = out.listeners.get(&dst) {
        b.service = Some(listener.service.to_string());
        b.balancing = Balancing::PerConnection;
        let ready: Vec<Endpoint> =
            out.clusters.get(&listener.cluster).map(|u| u.ready().cloned().collect()).unwrap_or_default();
        if ready.is_empty() {
            return refused(
                b,
                format!(
                    "{dst} is Service {} port {}, which has no ready endpoint: kube-proxy refuses the connection.",
                    listener.service, listener.port
                ),
                format!("start or fix the pods behind Service {}", listener.service),
            );
        }
        b.step(
            At::KubeProxy,
            None,
            format!(
                "{} has no sidecar: kube-proxy NATs the connection to one of {} ready endpoint(s) of Service {} port {}, once per connection — every request on it lands on the same pod",
                b.src.key,
                ready.len(),
                listener.service,
                listener.port
            ),
        );
        ready
            .into_iter()
            .map(|e| Candidate {
                endpoint: e,
                addressed: Addressed::Service { service: listener.service.clone(), port: listener.port },
            })
            .collect()
    } else if let Some(svc) = out.listeners_on(dst.ip()).next() {
        return refused(
            b,
            format!(
                "{} is the ClusterIP of Service {}, which does not declare port {}: kube-proxy has no rule, the connection is refused.",
                dst.ip(),
                svc.service,
                dst.port()
            ),
            format!("call a port Service {} declares", svc.service),
        );
    } else if let Some(pod) = out.pods.get(&dst.ip()) {
        b.step(
            At::Source,
            None,
            format!("{} has no sidecar: the connection goes straight to pod {}, in plaintext", b.src.key, pod.pod),
        );
        vec![Candidate {
            endpoint: Endpoint { address: dst, pod: Some(pod.pod.clone()), ready: true, tls: None },
            addressed: Addressed::Direct,
        }]
    } else {
        return outside(b, Some(dst));
    };
    destinations(b, candidates, None, detected)
}

/// Runs the destination side for each candidate endpoint and builds the explanation. `source_identity` is the
/// client's identity when it has a sidecar (it then presents it over mTLS).
fn destinations(
    mut b: Builder<'_>,
    candidates: Vec<Candidate>,
    source_identity: Option<Identity>,
    detected: Detected,
) -> Explanation {
    let host = b.host_header();
    let outcomes: Vec<Outcome> =
        candidates.iter().map(|c| destination(b.ix, c, source_identity.as_ref(), detected, host.as_deref())).collect();
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_ok()).collect();
    let mtls = source_identity.is_some()
        && candidates
            .iter()
            .zip(&outcomes)
            .find(|(_, o)| o.result.is_ok())
            .or(candidates.iter().zip(&outcomes).next())
            .is_some_and(|(c, _)| c.endpoint.tls.is_some());
    if let Some(first_ok) = ok.first() {
        let side = if first_ok.meshed { Side::Destination } else { Side::Source };
        let endpoints: Vec<String> = ok.iter().map(|o| o.endpoint.clone()).collect();
        let steps = first_ok.steps.clone();
        let n_ok = ok.len();
        let rejected: Vec<String> = outcomes
            .iter()
            .filter_map(|o| o.result.as_ref().err().map(|r| format!("{} ({})", o.endpoint, r.reason)))
            .collect();
        b.steps.extend(steps);
        if n_ok > 1 {
            b.step(At::Destination, None, format!("the other {} endpoint(s) decide the same", n_ok - 1));
        }
        if !rejected.is_empty() {
            b.step(At::Destination, None, format!("but these endpoints would refuse it: {}", rejected.join(", ")));
        }
        return b.finish(ReasonCode::Ok, side, endpoints, mtls, None);
    }
    let Some((r, steps)) = outcomes.into_iter().find_map(|o| match o.result {
        Err(r) => Some((r, o.steps)),
        Ok(()) => None,
    }) else {
        // No candidate at all: the route's destinations had no ready endpoint.
        return b.reject(At::Source, outbound::no_healthy_upstream("the route", None));
    };
    b.steps.extend(steps);
    let fix = Some(r.fix);
    b.finish(r.reason, r.side, vec![], mtls, fix)
}

/// The destination side for one endpoint.
fn destination(
    ix: &Index,
    c: &Candidate,
    source_identity: Option<&Identity>,
    detected: Detected,
    host: Option<&str>,
) -> Outcome {
    let e = &c.endpoint;
    let mut steps = Vec::new();
    let mut step = |rule: Option<Rule>, text: String| steps.push(Step { at: At::Destination, rule, text });
    let Some(pod) = e.pod.as_ref().and_then(|k| ix.pod(k)) else {
        step(None, format!("{} is not a pod: forwarded there in plaintext", e.address));
        return Outcome { endpoint: e.address.to_string(), meshed: false, result: Ok(()), steps };
    };
    let name = pod.key.to_string();
    if !pod.sidecar {
        step(None, format!("{name} has no sidecar: the application at {} answers whatever arrives", e.address));
        return Outcome { endpoint: name, meshed: false, result: Ok(()), steps };
    }
    let cfg: ProxyConfig = match ix.proxy_config(&pod.key) {
        Ok(cfg) => cfg,
        Err(_) => return Outcome { endpoint: name, meshed: false, result: Ok(()), steps },
    };
    let peer = match (source_identity, &e.tls) {
        (Some(id), Some(_)) => Some(Peer { identity: id.clone(), addressed: c.addressed.clone() }),
        _ => None,
    };
    let port = e.address.port();
    let fail = |mut steps: Vec<Step>, r: Rejection| {
        steps.push(Step { at: At::Destination, rule: Some(r.rule), text: format!("{}: {}", r.reason, r.message) });
        Outcome { endpoint: name.clone(), meshed: true, result: Err(r), steps }
    };
    let admitted = match inbound::connection(&cfg, port, peer.as_ref()) {
        Err(r) => return fail(steps, r),
        Ok(inbound::Connection::SidecarPort(p)) => {
            let what = if p == ports::STATS {
                "serves the sidecar's metrics merged with the application's at /stats/prometheus, and /healthz/ready, in plaintext even under STRICT (R8)"
            } else {
                "serves the sidecar's readiness, in plaintext"
            };
            step(
                Some(if p == ports::STATS { Rule::R8 } else { Rule::R7 }),
                format!("{name}: port {p} is the sidecar's own and {what}"),
            );
            return Outcome { endpoint: name, meshed: true, result: Ok(()), steps };
        }
        Ok(inbound::Connection::Admit(p)) => p,
    };
    let via: Vec<String> =
        admitted.services.iter().map(|s| format!("{}.{}:{}", s.service.name, s.service.namespace, s.port)).collect();
    step(Some(Rule::R4_1), format!("{name}: target port {port} is declared by {}", via.join(", ")));
    let how = match &peer {
        Some(p) => format!("mesh mTLS from {} admitted", p.identity),
        None => "plaintext admitted".to_string(),
    };
    step(Some(Rule::R4_2), format!("{} on port {port} ({}): {how}", admitted.mtls, admitted.mtls_from));
    let what = format!("port {port} of {name}");
    let handled = match handling(admitted.protocol, &admitted.protocol_from, detected, Side::Destination, &what) {
        Err(r) => return fail(steps, r),
        Ok(h) => h,
    };
    match handled {
        Handling::Http => match inbound::http_request(&cfg, admitted, host, peer.as_ref()) {
            Err(r) => return fail(steps, r),
            Ok(inbound::HostMatch::HeadlessFallback) => {
                step(Some(Rule::R4_3), format!("any Host is accepted: a headless Service declares port {port}"));
            }
            Ok(inbound::HostMatch::Name(n)) => {
                step(Some(Rule::R4_3), format!("Host {:?} is {n}, accepted on this port", host.unwrap_or_default()))
            }
        },
        Handling::Tcp => {
            if let Err(r) = inbound::tcp(&cfg, admitted, peer.as_ref()) {
                return fail(steps, r);
            }
            let why = match (&peer, admitted.headless) {
                (Some(Peer { addressed: Addressed::Direct, .. }), true) => {
                    "dialled directly, and a headless Service declares the port"
                }
                (Some(_), _) => "came through a Service",
                (None, _) => "plaintext carries no addressing evidence; the port is declared",
            };
            step(Some(Rule::R4_4), format!("TCP admitted: {why}"));
        }
    }
    step(Some(Rule::R4_5), format!("forwarded to the application at {}", e.address));
    Outcome { endpoint: name, meshed: true, result: Ok(()), steps }
}

// ---------------------------------------------------------------- text output

impl Explanation {
    /// Compact, readable text; ANSI colour when `color`.
    pub fn to_text(&self, color: bool) -> String {
        let paint = |code: &str, s: &str| if color { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_string() };
        let mut out = String::new();
        let what = match &self.host {
            Some(h) if self.protocol == "http" => format!("HTTP {} (Host: {h})", self.target_text()),
            _ => format!("TCP {}", self.target_text()),
        };
        let sidecar = if self.from_sidecar { "with sidecar" } else { "no sidecar" };
        let _ = writeln!(out, "{what} from {} ({sidecar})", self.from);
        let verdict = match self.reason {
            ReasonCode::Ok | ReasonCode::Passthrough => paint("1;32", self.reason.as_str()),
            _ => paint("1;31", self.reason.as_str()),
        };
        let served = if self.endpoints.is_empty() {
            String::new()
        } else {
            let by = match self.balancing {
                Balancing::PerRequest => ", balanced per request",
                Balancing::PerConnection => ", balanced per connection",
                Balancing::None => "",
            };
            format!(" — served by {}{by}", self.endpoints.join(" or "))
        };
        let _ = writeln!(out, "=> {verdict} ({} decides; client sees {}){served}", self.side, self.client_sees);
        let _ = writeln!(out);
        for s in &self.steps {
            let rule = s.rule.map_or(String::new(), |r| r.to_string());
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                paint("2", &format!("{:<11}", s.at.label())),
                paint("36", &format!("{rule:<4}")),
                s.text
            );
        }
        if let Some(fix) = &self.fix {
            let _ = writeln!(out);
            let _ = writeln!(out, "  {} {fix}", paint("1;33", "fix:"));
        }
        out
    }

    fn target_text(&self) -> String {
        if self.protocol == "http" {
            format!("{}{}", self.target.authority, self.target.path)
        } else {
            self.target.authority.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t: Target = "http://web.shop/".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port, t.path.as_str(), t.authority.as_str()), ("web.shop", 80, "/", "web.shop"));
        let t: Target = "http://db-1.db.shop.svc.cluster.local:8080/x?y=1".parse().unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (8080, "/x?y=1", "db-1.db.shop.svc.cluster.local:8080")
        );
        let t: Target = "10.1.2.3:5000".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("10.1.2.3", 5000));
        let t: Target = "[fd00::1]:80".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("fd00::1", 80));
        let t: Target = "https://example.com/".parse().unwrap();
        assert!(t.tls);
        assert_eq!(t.port, 443);
        assert!("web.shop".parse::<Target>().is_err());
        assert!("ftp://x/".parse::<Target>().is_err());
        assert!("web.shop:0".parse::<Target>().is_err());
        assert!("web.shop:99999".parse::<Target>().is_err());
        assert!("http://:80/".parse::<Target>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn target_parsing_never_panics(s in ".{0,80}") {
            if let Ok(t) = s.parse::<Target>() {
                proptest::prop_assert!(t.port > 0 && !t.host.is_empty() && t.path.starts_with('/'));
            }
        }
    }
}
