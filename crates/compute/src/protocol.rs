//! R1 — the protocol of a port.

use std::fmt;

use podmesh_model::{L4Protocol, ServicePortSpec};
use serde::{Deserialize, Serialize};

/// What the sidecar does with the bytes on a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP; the application speaks HTTP/1.1 (R1.1, R1.2). Clients may use HTTP/1.1 or HTTP/2 (R1.5).
    Http,
    /// HTTP; the application speaks HTTP/2 (`http2`, `h2c`, `grpc`), so the sidecar speaks HTTP/2 to it (R1.5).
    Http2,
    /// Opaque TCP: bytes are forwarded per connection.
    Tcp,
    /// Detected per connection from the client's first bytes (R1.3).
    Auto,
}

impl Protocol {
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Tcp => "tcp",
            Protocol::Auto => "auto",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a port has its protocol: the clause of R1 that decided.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "by", content = "value")]
pub enum ProtocolFrom {
    /// R1.1: `appProtocol` (its value).
    AppProtocol(String),
    /// R1.2: the port name (its value).
    PortName(String),
    /// R1.3: a server-first port (25, 3306, 27017), TCP without waiting.
    ServerFirstPort,
    /// R1.3: nothing declared; detected per connection.
    Unspecified,
}

impl fmt::Display for ProtocolFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolFrom::AppProtocol(v) => write!(f, "appProtocol {v:?} (R1.1)"),
            ProtocolFrom::PortName(v) => write!(f, "port name {v:?} (R1.2)"),
            ProtocolFrom::ServerFirstPort => f.write_str("a server-first port, never sniffed (R1.3)"),
            ProtocolFrom::Unspecified => f.write_str("no appProtocol or protocol-prefixed name: detected (R1.3)"),
        }
    }
}

/// Ports whose protocol speaks first from the server (SMTP, MySQL, MongoDB): waiting for client bytes would hang,
/// so an `auto` port with one of these numbers is TCP at once (R1.3).
pub const SERVER_FIRST_PORTS: [u16; 3] = [25, 3306, 27017];

/// `appProtocol` values that are known not to be HTTP. Anything else unknown is `auto`.
const NON_HTTP_APP_PROTOCOLS: &[&str] = &[
    "tcp",
    "tls",
    "https",
    "mongo",
    "redis",
    "mysql",
    "kubernetes.io/wss",
    "postgres",
    "postgresql",
    "kafka",
    "zookeeper",
    "amqp",
    "mqtt",
    "nats",
    "memcached",
    "cassandra",
];

/// The protocol a port declares (R1.1, R1.2), before the server-first rule. None for ports that are not
/// proxied: UDP and SCTP (R1.4), and TCP ports named `udp-…`.
pub fn declared(l4: L4Protocol, name: Option<&str>, app_protocol: Option<&str>) -> Option<(Protocol, ProtocolFrom)> {
    if l4 != L4Protocol::Tcp {
        return None;
    }
    if let Some(ap) = app_protocol {
        let lower = ap.to_ascii_lowercase();
        let p = match lower.as_str() {
            "http" | "kubernetes.io/ws" | "grpc-web" => Protocol::Http,
            "http2" | "h2c" | "grpc" | "kubernetes.io/h2c" => Protocol::Http2,
            v if NON_HTTP_APP_PROTOCOLS.contains(&v) => Protocol::Tcp,
            _ => Protocol::Auto,
        };
        return Some((p, ProtocolFrom::AppProtocol(ap.to_string())));
    }
    if let Some(name) = name {
        let lower = name.to_ascii_lowercase();
        // `grpc-web` has a dash in the protocol itself.
        let prefix = if lower == "grpc-web" || lower.starts_with("grpc-web-") {
            "grpc-web"
        } else {
            lower.split('-').next().unwrap_or_default()
        };
        let p = match prefix {
            "http" | "grpc-web" => Some(Protocol::Http),
            "http2" | "grpc" => Some(Protocol::Http2),
            "tcp" | "tls" | "https" | "mongo" | "redis" | "mysql" => Some(Protocol::Tcp),
            "udp" => return None,
            _ => None,
        };
        if let Some(p) = p {
            return Some((p, ProtocolFrom::PortName(name.to_string())));
        }
    }
    Some((Protocol::Auto, ProtocolFrom::Unspecified))
}

/// The protocol the sidecar uses on `port`: what the port declares, with `auto` on a server-first port
/// turned into TCP (R1.3).
pub fn effective(declared: (Protocol, ProtocolFrom), port: u16) -> (Protocol, ProtocolFrom) {
    match declared {
        (Protocol::Auto, _) if SERVER_FIRST_PORTS.contains(&port) => (Protocol::Tcp, ProtocolFrom::ServerFirstPort),
        other => other,
    }
}

/// The protocol of a Service port as a client dials it. None if the port is not proxied.
pub fn of_service_port(spec: &ServicePortSpec) -> Option<(Protocol, ProtocolFrom)> {
    declared(spec.protocol, spec.name.as_deref(), spec.app_protocol.as_deref()).map(|d| effective(d, spec.port.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: Option<&str>, ap: Option<&str>) -> Option<Protocol> {
        declared(L4Protocol::Tcp, name, ap).map(|(p, _)| p)
    }

    #[test]
    fn r1_1_app_protocol_decides_and_name_is_ignored() {
        assert_eq!(p(Some("tcp-x"), Some("http")), Some(Protocol::Http));
        assert_eq!(p(None, Some("kubernetes.io/ws")), Some(Protocol::Http));
        for h2 in ["http2", "h2c", "grpc", "kubernetes.io/h2c", "GRPC"] {
            assert_eq!(p(Some("http"), Some(h2)), Some(Protocol::Http2), "{h2}");
        }
        for tcp in ["tcp", "tls", "https", "mongo", "redis", "mysql", "kafka"] {
            assert_eq!(p(Some("http"), Some(tcp)), Some(Protocol::Tcp), "{tcp}");
        }
        // Unknown appProtocol: auto, and the name is still ignored.
        assert_eq!(p(Some("http"), Some("example.com/custom")), Some(Protocol::Auto));
    }

    #[test]
    fn r1_2_name_prefix() {
        assert_eq!(p(Some("http"), None), Some(Protocol::Http));
        assert_eq!(p(Some("HTTP-web"), None), Some(Protocol::Http));
        assert_eq!(p(Some("http2-x"), None), Some(Protocol::Http2));
        assert_eq!(p(Some("grpc"), None), Some(Protocol::Http2));
        assert_eq!(p(Some("grpc-web"), None), Some(Protocol::Http));
        assert_eq!(p(Some("grpc-web-ui"), None), Some(Protocol::Http));
        assert_eq!(p(Some("grpc-api"), None), Some(Protocol::Http2));
        for tcp in ["tcp", "tls-x", "https", "mongo-0", "redis", "mysql"] {
            assert_eq!(p(Some(tcp), None), Some(Protocol::Tcp), "{tcp}");
        }
        // No dash: not a prefix.
        assert_eq!(p(Some("httpfoo"), None), Some(Protocol::Auto));
        assert_eq!(p(Some("web"), None), Some(Protocol::Auto));
        assert_eq!(p(None, None), Some(Protocol::Auto));
    }

    #[test]
    fn r1_3_server_first_ports_are_tcp_without_waiting() {
        for port in SERVER_FIRST_PORTS {
            assert_eq!(effective((Protocol::Auto, ProtocolFrom::Unspecified), port).0, Protocol::Tcp);
        }
        assert_eq!(effective((Protocol::Auto, ProtocolFrom::Unspecified), 9000).0, Protocol::Auto);
        // A declared protocol is kept even on those ports.
        let http = (Protocol::Http, ProtocolFrom::PortName("http".into()));
        assert_eq!(effective(http, 3306).0, Protocol::Http);
    }

    #[test]
    fn r1_4_udp_and_sctp_are_not_proxied() {
        assert_eq!(declared(L4Protocol::Udp, Some("http"), None), None);
        assert_eq!(declared(L4Protocol::Sctp, None, None), None);
        assert_eq!(p(Some("udp-dns"), None), None);
    }
}
