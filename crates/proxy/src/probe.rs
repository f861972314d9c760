//! Kubelet probes answered by the sidecar, as Istio's pilot-agent does (`ISTIO_KUBE_APP_PROBERS`).
//!
//! Under STRICT mTLS the kubelet's plaintext probe of an application port is refused like any plaintext client
//! (R4), so the injector rewrites each application container's `httpGet`/`tcpSocket` probe into an `httpGet` of
//! the sidecar's 15020 at `/app-health/<container>/readyz` (or `livez`, `startupz`), and hands the sidecar the
//! original probes as JSON (`podmesh proxy --app-probes`). The sidecar performs the original probe against the
//! application over the pod's loopback, which capture never redirects, and answers for it ([`crate::admin`]).
//!
//! The format is Istio's, a JSON object of rewritten path to the original probe:
//! `{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080,"scheme":"HTTP","httpHeaders":[{"name":"X",
//! "value":"y"}]},"timeoutSeconds":1},"/app-health/db/livez":{"tcpSocket":{"port":5432},"timeoutSeconds":2}}`.
//! Ports are numbers: the injector resolves a container's named ports, the sidecar cannot see them. A `host`
//! field is accepted and ignored, as Istio does: the probe always goes to the pod's own loopback.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use http::uri::PathAndQuery;
use http::{HeaderName, HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, Visitor};
use tokio_rustls::TlsConnector;

use crate::net::Dialer;

/// The only paths answered as application probes: what Istio's injector rewrites probes to.
pub const PATH_PREFIX: &str = "/app-health/";

/// Kubernetes' default `timeoutSeconds`, and its minimum.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// The `User-Agent` of a probe unless its headers give one: applications that tell probes apart by the kubelet's
/// `kube-probe/<version>` prefix keep doing so.
const PROBE_USER_AGENT: &str = "kube-probe/podmesh";

/// The rewritten probes, by the path the kubelet now asks 15020 for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppProbes(BTreeMap<String, AppProbe>);

impl AppProbes {
    /// Parses the JSON of `--app-probes`. An error names the rewritten path and the field at fault, so a bad
    /// injector value stops the sidecar at startup with something to fix, not a probe failing forever after.
    /// Blank is no probes: an injector may set the variable on every sidecar, empty where nothing was rewritten.
    pub fn parse(json: &str) -> Result<Self, String> {
        if json.trim().is_empty() {
            return Ok(Self::default());
        }
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).map_err(|e| {
            format!("not a JSON object of rewritten path to probe ({{\"/app-health/...\": {{...}}}}): {e}")
        })?;
        let mut probes = BTreeMap::new();
        for (path, value) in raw {
            check_path(&path).map_err(|e| format!("{path:?}: {e}"))?;
            let spec = Spec::deserialize(value).map_err(|e| format!("{path:?}: {e}"))?;
            probes.insert(path.clone(), AppProbe::try_from(spec).map_err(|e| format!("{path:?}: {e}"))?);
        }
        Ok(Self(probes))
    }

    /// The probe the kubelet asks for at `path` (the request's path, without a query).
    pub fn get(&self, path: &str) -> Option<&AppProbe> {
        self.0.get(path)
    }

    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A path the kubelet can ask for and 15020 can tell from its other endpoints.
fn check_path(path: &str) -> Result<(), String> {
    let rest = path.strip_prefix(PATH_PREFIX).unwrap_or_default();
    if rest.is_empty() {
        return Err(format!(
            "the rewritten path must start with {PATH_PREFIX} (as /app-health/web/readyz): only those are answered \
             as application probes"
        ));
    }
    if rest.contains(['?', '#']) || rest.contains(char::is_whitespace) {
        return Err("the rewritten path must be a plain path, without a query, fragment or spaces".to_string());
    }
    Ok(())
}

/// One original probe: what to do, and how long it may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppProbe {
    pub action: Action,
    /// `timeoutSeconds`, at least [`DEFAULT_TIMEOUT`] (Kubernetes reads 0 as its default, 1).
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    HttpGet(HttpGet),
    TcpSocket { port: u16 },
}

impl Action {
    pub fn port(&self) -> u16 {
        match self {
            Action::HttpGet(get) => get.port,
            Action::TcpSocket { port } => *port,
        }
    }
}

/// An `httpGet` probe, validated: its path and headers are known to make a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpGet {
    pub port: u16,
    pub path: PathAndQuery,
    pub scheme: Scheme,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    #[default]
    Http,
    /// TLS without verifying the certificate, as the kubelet does (it has no name to check it against).
    Https,
}

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP probe got this status from the application.
    Answered(StatusCode),
    /// A TCP probe's connection was accepted.
    Connected,
    /// No answer: one line saying what failed.
    Failed(String),
}

impl AppProbe {
    /// Performs the probe against `127.0.0.1:<port>` with the proxy's dialer (its sockets carry the mark capture
    /// excludes; loopback is never captured anyway), all of it within the probe's timeout.
    pub async fn run(&self, dialer: &Dialer) -> Outcome {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.action.port()));
        let probe = async {
            match &self.action {
                Action::HttpGet(get) => http_get(dialer, addr, get).await.map(Outcome::Answered),
                Action::TcpSocket { .. } => dialer
                    .connect(addr)
                    .await
                    .map(|_| Outcome::Connected)
                    .map_err(|e| format!("connecting to {addr}: {e}")),
            }
        };
        match tokio::time::timeout(self.timeout, probe).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(e)) => Outcome::Failed(e.replace(['\r', '\n'], " ")),
            Err(_) => Outcome::Failed(format!("no answer from {addr} within {} s", self.timeout.as_secs())),
        }
    }
}

async fn http_get(dialer: &Dialer, addr: SocketAddr, get: &HttpGet) -> Result<StatusCode, String> {
    let what = |e: String| format!("GET {} on {addr}: {e}", get.path);
    let request = get.request(addr).map_err(what)?;
    let stream = dialer.connect(addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
    match get.scheme {
        Scheme::Http => exchange(stream, request).await.map_err(what),
        Scheme::Https => {
            let tls = TlsConnector::from(any_certificate_config()?)
                .connect(ServerName::IpAddress(addr.ip().into()), stream)
                .await
                .map_err(|e| format!("TLS handshake with {addr}: {e}"))?;
            exchange(tls, request).await.map_err(what)
        }
    }
}

impl HttpGet {
    /// The kubelet's request: the probe's headers, over its defaults (`Host` the address dialled, `User-Agent`
    /// kube-probe, `Accept: */*`), and `Connection: close` since each probe uses a connection of its own.
    fn request(&self, addr: SocketAddr) -> Result<Request<Empty<Bytes>>, String> {
        let mut req = Request::get(self.path.as_str()).body(Empty::new()).map_err(|e| e.to_string())?;
        let headers = req.headers_mut();
        let defaults = [
            (HOST, HeaderValue::from_str(&addr.to_string()).map_err(|e| e.to_string())?),
            (USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT)),
            (ACCEPT, HeaderValue::from_static("*/*")),
        ];
        for (name, value) in defaults {
            if !self.headers.iter().any(|(n, _)| *n == name) {
                headers.insert(name, value);
            }
        }
        for (name, value) in &self.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        Ok(req)
    }
}

/// One request on `stream`; the status of the answer. The connection is driven here rather than in a task of its
/// own, so that dropping this future (the probe's timeout) closes the socket at once.
async fn exchange<S>(stream: S, request: Request<Empty<Bytes>>) -> Result<StatusCode, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    let mut conn = pin!(conn);
    let mut send = pin!(sender.send_request(request));
    let response = tokio::select! {
        biased;
        r = &mut send => r,
        // The connection ended: the request has its answer or its error by now.
        _ = &mut conn => send.await,
    };
    response.map(|r| r.status()).map_err(|e| e.to_string())
}

/// The client config of HTTPS probes: any certificate, as the kubelet (`InsecureSkipVerify`). Built once.
fn any_certificate_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            // Only ring is compiled in; naming it keeps rustls from consulting a process default.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("the TLS config of HTTPS probes: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// Accepts any server certificate: the kubelet does not verify an HTTPS probe's certificate either (it has no
/// name to check it against), so an application serving a self-signed certificate passes here as it does without
/// the mesh. The handshake signatures are still checked, so the session is a sound TLS session.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ------------------------------------------------------------------------------------------------ the JSON

/// One probe as Istio writes it (a Kubernetes `Probe`'s action and timeout). Every field's errors are prefixed
/// with its name (see [`named`]): serde's own messages would say what was wrong but not where.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Spec {
    #[serde(default, deserialize_with = "http_get_field")]
    http_get: Option<HttpGetSpec>,
    #[serde(default, deserialize_with = "tcp_socket_field")]
    tcp_socket: Option<TcpSocketSpec>,
    /// Known, so that it is refused with a reason rather than as an unknown field.
    #[serde(default)]
    grpc: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "timeout_field")]
    timeout_seconds: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpGetSpec {
    #[serde(default, deserialize_with = "path_field")]
    path: Option<String>,
    #[serde(deserialize_with = "port_field")]
    port: Port,
    /// Ignored, as Istio does: the probe goes to the pod's loopback whatever host the kubelet would have used.
    #[serde(default)]
    #[allow(dead_code)]
    host: Option<IgnoredAny>,
    #[serde(default, deserialize_with = "scheme_field")]
    scheme: Option<Scheme>,
    #[serde(default, deserialize_with = "headers_field")]
    http_headers: Option<Vec<HeaderSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TcpSocketSpec {
    #[serde(deserialize_with = "port_field")]
    port: Port,
    /// Ignored, as for `httpGet`.
    #[serde(default)]
    #[allow(dead_code)]
    host: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderSpec {
    #[serde(deserialize_with = "header_name_field")]
    name: HeaderName,
    #[serde(deserialize_with = "header_value_field")]
    value: HeaderValue,
}

impl TryFrom<Spec> for AppProbe {
    type Error = String;

    fn try_from(spec: Spec) -> Result<Self, String> {
        let action = match (spec.http_get, spec.tcp_socket, spec.grpc) {
            (_, _, Some(_)) => {
                return Err("grpc: gRPC probes are not supported by this sidecar; probe an HTTP or TCP port instead"
                    .to_string());
            }
            (Some(_), Some(_), None) => return Err("give httpGet or tcpSocket, not both".to_string()),
            (None, None, None) => return Err("no httpGet or tcpSocket: nothing to probe".to_string()),
            (Some(get), None, None) => {
                let path = normalize_path(get.path.as_deref().unwrap_or_default());
                let path = path.parse::<PathAndQuery>().map_err(|e| format!("httpGet: path: {path:?}: {e}"))?;
                Action::HttpGet(HttpGet {
                    port: get.port.0,
                    path,
                    scheme: get.scheme.unwrap_or_default(),
                    headers: get.http_headers.unwrap_or_default().into_iter().map(|h| (h.name, h.value)).collect(),
                })
            }
            (None, Some(tcp), None) => Action::TcpSocket { port: tcp.port.0 },
        };
        let timeout = Duration::from_secs(u64::from(spec.timeout_seconds.unwrap_or(0))).max(DEFAULT_TIMEOUT);
        Ok(AppProbe { action, timeout })
    }
}

/// The kubelet's reading of a probe path: empty is `/`, and a leading `/` is implied.
fn normalize_path(path: &str) -> String {
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

/// Deserializes a `T`, prefixing any error with `field`: nested, `httpGet: port: ...`.
fn named<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D, field: &str) -> Result<T, D::Error> {
    T::deserialize(d).map_err(|e| de::Error::custom(format_args!("{field}: {e}")))
}

fn http_get_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HttpGetSpec>, D::Error> {
    named(d, "httpGet")
}

fn tcp_socket_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TcpSocketSpec>, D::Error> {
    named(d, "tcpSocket")
}

fn timeout_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    named(d, "timeoutSeconds")
}

fn path_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "path")
}

fn port_field<'de, D: Deserializer<'de>>(d: D) -> Result<Port, D::Error> {
    named(d, "port")
}

fn scheme_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Scheme>, D::Error> {
    named(d, "scheme")
}

fn headers_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<HeaderSpec>>, D::Error> {
    named(d, "httpHeaders")
}

fn header_name_field<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
    let name = named::<D, String>(d, "name")?;
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| de::Error::custom(format_args!("name: {name:?} is not a header name")))
}

fn header_value_field<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderValue, D::Error> {
    let value = named::<D, String>(d, "value")?;
    HeaderValue::from_str(&value)
        .map_err(|_| de::Error::custom(format_args!("value: {value:?} is not a valid header value")))
}

/// A port number, 1 to 65535. A name (`"http"`) is refused with the reason: the injector resolves named ports
/// against the container's, which the sidecar does not see.
#[derive(Debug, Clone, Copy)]
struct Port(u16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl Visitor<'_> for PortVisitor {
            type Value = Port;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number, 1 to 65535")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|p| *p != 0)
                    .map(Port)
                    .ok_or_else(|| E::custom(format_args!("{v} is not a port number (1 to 65535)")))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format_args!("{v} is not a port number (1 to 65535)"))),
                }
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                Err(E::custom(format_args!(
                    "{v:?} is not a port number: named ports must be resolved to numbers by the injector"
                )))
            }
        }
        d.deserialize_any(PortVisitor)
    }
}

impl<'de> Deserialize<'de> for Scheme {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.to_ascii_uppercase().as_str() {
            "HTTP" => Ok(Scheme::Http),
            "HTTPS" => Ok(Scheme::Https),
            _ => Err(de::Error::custom(format_args!("{s:?} is neither HTTP nor HTTPS"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn istio_format_parses() {
        let probes = AppProbes::parse(
            r#"{"/app-health/web/readyz":{"httpGet":{"path":"ready?x=1","port":8080,"scheme":"HTTPS",
                "httpHeaders":[{"name":"X","value":"y"}]},"timeoutSeconds":3},
                "/app-health/db/livez":{"tcpSocket":{"port":5432,"host":"10.0.0.1"}},
                "/app-health/web/startupz":{"httpGet":{"port":8080},"timeoutSeconds":0}}"#,
        )
        .unwrap();
        assert_eq!(probes.len(), 3);
        let web = probes.get("/app-health/web/readyz").unwrap();
        assert_eq!(web.timeout, Duration::from_secs(3));
        let Action::HttpGet(get) = &web.action else { panic!("{web:?}") };
        assert_eq!((get.port, get.path.as_str(), get.scheme), (8080, "/ready?x=1", Scheme::Https));
        assert_eq!(get.headers, vec![(HeaderName::from_static("x"), HeaderValue::from_static("y"))]);
        let db = probes.get("/app-health/db/livez").unwrap();
        assert_eq!((&db.action, db.timeout), (&Action::TcpSocket { port: 5432 }, DEFAULT_TIMEOUT));
        let startup = probes.get("/app-health/web/startupz").unwrap();
        let Action::HttpGet(get) = &startup.action else { panic!("{startup:?}") };
        assert_eq!((get.path.as_str(), get.scheme, startup.timeout), ("/", Scheme::Http, DEFAULT_TIMEOUT));
        assert_eq!(AppProbes::parse("{}").unwrap(), AppProbes::default());
        assert_eq!(AppProbes::parse(" ").unwrap(), AppProbes::default());
    }

    #[test]
    fn errors_name_the_path_and_the_field() {
        let err = |json: &str| AppProbes::parse(json).unwrap_err();
        let cases = [
            (r#"{"/app-health/a/readyz":{"httpGet":{"port":"http"}}}"#, "httpGet: port: \"http\" is not a port number"),
            (r#"{"/app-health/a/readyz":{"tcpSocket":{"port":70000}}}"#, "tcpSocket: port: 70000"),
            (r#"{"/app-health/a/readyz":{"tcpSocket":{"port":0}}}"#, "tcpSocket: port: 0"),
            (r#"{"/app-health/a/readyz":{"tcpSocket":{}}}"#, "tcpSocket: missing field `port`"),
            (r#"{"/app-health/a/readyz":{"httpGet":{"port":1,"prot":2}}}"#, "httpGet: unknown field `prot`"),
            (r#"{"/app-health/a/readyz":{"httpGet":{"port":1,"scheme":"FTP"}}}"#, "httpGet: scheme: \"FTP\""),
            (r#"{"/app-health/a/readyz":{"httpGet":{"port":1,"path":"/a b"}}}"#, "httpGet: path:"),
            (
                r#"{"/app-health/a/readyz":{"httpGet":{"port":1,"httpHeaders":[{"name":"a b","value":"c"}]}}}"#,
                "httpGet: httpHeaders: name: \"a b\"",
            ),
            (
                r#"{"/app-health/a/readyz":{"httpGet":{"port":1,"httpHeaders":[{"name":"a"}]}}}"#,
                "httpGet: httpHeaders: missing field `value`",
            ),
            (r#"{"/app-health/a/readyz":{"tcpSocket":{"port":1},"timeoutSeconds":-1}}"#, "timeoutSeconds:"),
            (r#"{"/app-health/a/readyz":{"tcpSocket":{"port":1},"httpGet":{"port":1}}}"#, "not both"),
            (r#"{"/app-health/a/readyz":{"timeoutSeconds":1}}"#, "nothing to probe"),
            (r#"{"/app-health/a/readyz":{"grpc":{"port":1}}}"#, "grpc: gRPC probes are not supported"),
            (r#"{"/app-health/a/readyz":{"exec":{"command":["true"]}}}"#, "unknown field `exec`"),
        ];
        for (json, want) in cases {
            let e = err(json);
            assert!(e.starts_with("\"/app-health/a/readyz\": "), "{json}: {e}");
            assert!(e.contains(want), "{json}: {e} lacks {want:?}");
        }
        assert!(err(r#"{"/healthz/x":{"tcpSocket":{"port":1}}}"#).contains("must start with /app-health/"));
        assert!(err(r#"{"/app-health/":{"tcpSocket":{"port":1}}}"#).contains("must start with /app-health/"));
        assert!(err(r#"{"/app-health/a?b":{"tcpSocket":{"port":1}}}"#).contains("without a query"));
        assert!(err("[1]").contains("not a JSON object"));
        assert!(err("{").contains("not a JSON object"));
    }

    #[test]
    fn the_request_carries_the_probe_headers_over_the_defaults() {
        let get = HttpGet {
            port: 8080,
            path: PathAndQuery::from_static("/ready"),
            scheme: Scheme::Http,
            headers: vec![
                (HOST, HeaderValue::from_static("web.example")),
                (HeaderName::from_static("x"), HeaderValue::from_static("1")),
                (HeaderName::from_static("x"), HeaderValue::from_static("2")),
            ],
        };
        let req = get.request(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))).unwrap();
        assert_eq!(req.uri(), "/ready");
        let h = req.headers();
        assert_eq!(h.get_all(HOST).iter().collect::<Vec<_>>(), ["web.example"]);
        assert_eq!(h.get_all("x").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert_eq!(h[USER_AGENT], PROBE_USER_AGENT);
        assert_eq!(h[CONNECTION], "close");
        let plain = HttpGet { headers: vec![], ..get };
        let req = plain.request(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080))).unwrap();
        assert_eq!(req.headers()[HOST], "127.0.0.1:8080");
    }
}
