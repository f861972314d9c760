//! The facts of a request or connection that decisions look at.

use podmesh_compute::{Identity, Protocol, ProtocolFrom};
use podmesh_model::{HttpMatch, ObjectKey, ServicePort};
use serde::{Deserialize, Serialize};

use crate::reason::{ReasonCode, Rejection, Rule, Side};

/// The sidecar's own ports (R7, Istio's numbering). They are never captured.
pub mod ports {
    pub const ADMIN: u16 = 15000;
    pub const OUTBOUND_CAPTURE: u16 = 15001;
    pub const INBOUND_CAPTURE: u16 = 15006;
    /// Merged Prometheus metrics and health (R8): `/stats/prometheus`, `/healthz/ready`.
    pub const STATS: u16 = 15020;
    pub const READINESS: u16 = 15021;
    pub const DNS: u16 = 15053;
    pub const ALL: [u16; 6] = [ADMIN, OUTBOUND_CAPTURE, INBOUND_CAPTURE, STATS, READINESS, DNS];
    /// The ones other pods may reach (in plaintext, even under STRICT).
    pub const SERVED_TO_PODS: [u16; 2] = [STATS, READINESS];
}

/// Header lookup, so the decision functions work over any header map (hyper's in the sidecar, a list in
/// `explain`). Names are asked for in lowercase.
pub trait Headers {
    fn get(&self, name: &str) -> Option<&str>;
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP request as the route functions see it.
#[derive(Clone, Copy)]
pub struct HttpRequest<'a> {
    /// The Host header (HTTP/1.1) or `:authority` (HTTP/2).
    pub host: Option<&'a str>,
    pub method: &'a str,
    /// Path and query, as on the request line.
    pub path: &'a str,
    pub headers: &'a dyn Headers,
}

impl std::fmt::Debug for HttpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("host", &self.host)
            .field("method", &self.method)
            .field("path", &self.path)
            .finish()
    }
}

impl HttpRequest<'_> {
    /// Whether one VirtualService `match` entry holds (every condition set in it). The URI is compared without
    /// its query string, as Envoy does for exact and regex matches.
    pub fn matches(&self, m: &HttpMatch) -> bool {
        let path = self.path.split('?').next().unwrap_or(self.path);
        m.uri.as_ref().is_none_or(|u| u.matches(path))
            && m.method.as_ref().is_none_or(|x| x.matches(self.method))
            && m.headers.iter().all(|(name, sm)| self.headers.get(name).is_some_and(|v| sm.matches(v)))
    }
}

/// How the source addressed the destination, carried inside the mTLS handshake (R3.6).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum Addressed {
    /// Through a Service's ClusterIP (or a Host routed to it).
    Service { service: ObjectKey, port: ServicePort },
    /// A pod IP (or per-pod DNS name): exactly this pod.
    Direct,
}

/// What a destination knows of its client after a mesh mTLS handshake. Plaintext connections have none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub identity: Identity,
    pub addressed: Addressed,
}

/// What the first bytes of a connection look like (R1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// HTTP/1.x request line or the HTTP/2 prior-knowledge preface.
    Http,
    /// Anything else (or nothing before the detection timeout).
    Opaque,
}

/// How the sidecar handles a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Handling {
    /// Parsed, routed and checked per request.
    Http,
    /// Forwarded as bytes, per connection.
    Tcp,
}

/// R1: how bytes of kind `detected` are handled on a port of `protocol`. Non-HTTP bytes on an HTTP port are
/// `protocol_error` (R1), reported by `side` with `what` naming the port.
pub fn handling(
    protocol: Protocol,
    from: &ProtocolFrom,
    detected: Detected,
    side: Side,
    what: &str,
) -> Result<Handling, Rejection> {
    match (protocol, detected) {
        (Protocol::Tcp, _) | (Protocol::Auto, Detected::Opaque) => Ok(Handling::Tcp),
        (Protocol::Auto, Detected::Http) => Ok(Handling::Http),
        (Protocol::Http | Protocol::Http2, Detected::Http) => Ok(Handling::Http),
        (Protocol::Http | Protocol::Http2, Detected::Opaque) => Err(Rejection::new(
            ReasonCode::ProtocolError,
            side,
            Rule::R1_1,
            format!("{what} is HTTP ({from}), but the client's bytes are not HTTP."),
            "send HTTP to this port, or declare the port as TCP (appProtocol: tcp, or a name starting with tcp-)",
        )),
    }
}
