//! The control-plane source of [`Intake`]: a sidecar that has only the control plane's address, its pod's
//! bootstrap token and the mesh root gets its certificate from the CA (a CSR authenticated by the token), then
//! its config over delta xDS (an mTLS stream with that certificate), and follows both: every push becomes an
//! [`Update::Config`], every renewal (at half the certificate's life) or trust-bundle change an
//! [`Update::Credentials`]. When the stream breaks it reconnects with jittered backoff, telling the control
//! plane which resource versions it holds, and keeps serving its last good config meanwhile.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use podmesh_api::pb::CertificateRequest;
use podmesh_api::pb::certificate_service_client::CertificateServiceClient;
use podmesh_api::xds::{AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest, DeltaDiscoveryResponse, RpcStatus};
use podmesh_api::{Change, Kind, Parts};
use podmesh_compute::{Identity, ProxyConfig};
use podmesh_identity::Credentials;
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;
use tonic::transport::{Channel, Endpoint};

use crate::intake::{Intake, Update};

/// What a sidecar needs to join the mesh.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The control plane's gRPC address (istiod's 15012): an IP and port, or a name and port resolved at each
    /// connection (`podmesh-control.podmesh-system.svc:15012` in a cluster).
    pub address: ControlAddress,
    /// The pod's token: its bootstrap token, or in a cluster its projected ServiceAccount token, which the
    /// kubelet rotates (read again for each certificate request).
    pub token: Token,
    /// The mesh root(s), PEM: the control plane's certificate must chain to one.
    pub roots_pem: String,
    /// The control plane's SPIFFE identity (`spiffe://<trust domain>/ns/podmesh-system/sa/podmesh-control`).
    pub control_identity: Identity,
    /// The certificate lifetime to ask for; `None`: the CA's default.
    pub cert_ttl: Option<Duration>,
    /// How the control plane is dialled: the proxy's own dialer, whose socket mark keeps the connection out of
    /// the pod's capture rules (like every connection the proxy opens).
    pub dialer: crate::net::Dialer,
}

/// Largest message accepted from the control plane (a push is split into responses well below this).
const MAX_MESSAGE: usize = 64 << 20;
/// Backoff between attempts to reach the control plane.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(15);

/// Why joining failed.
pub type JoinError = String;

/// The control plane as a sidecar sees it.
pub struct ControlSource {
    opts: ControlOptions,
    pod: String,
    /// The certificate in use (PEM) and its key: kept to rebuild credentials when only the roots change.
    chain_pem: String,
    key_pem: String,
    credentials: Credentials,
    /// The TLS config the xDS connection dials with (it follows renewals).
    client_tls: Arc<ArcSwap<rustls::ClientConfig>>,
    renew_at: Instant,
    parts: Parts,
    /// Resource versions held, per kind: told to the control plane on reconnect.
    versions: HashMap<Kind, HashMap<String, String>>,
    stream: Option<Stream>,
    /// Whether a response changed anything since the config was last built.
    changed: bool,
    backoff: Duration,
}

impl std::fmt::Debug for ControlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlSource")
            .field("pod", &self.pod)
            .field("address", &self.opts.address)
            .finish_non_exhaustive()
    }
}

struct Stream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl ControlSource {
    /// Joins the mesh: a certificate from the CA, then the first whole config. Ready to serve once this returns.
    /// Gives up after `deadline` (the control plane may be starting: attempts are retried until then).
    pub async fn join(
        opts: ControlOptions,
        deadline: Duration,
    ) -> Result<(ControlSource, ProxyConfig, Credentials), JoinError> {
        let give_up = Instant::now() + deadline;
        let mut backoff = BACKOFF_MIN;
        let (chain_pem, key_pem, credentials, pod) = loop {
            match request_certificate(&opts).await {
                Ok(c) => break c,
                Err(e) if Instant::now() + backoff > give_up => return Err(e),
                Err(_) => {
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        };
        let client_tls = Arc::new(ArcSwap::new(client_tls(&credentials, &opts.control_identity)?));
        let mut source = ControlSource {
            renew_at: renewal_time(&credentials),
            opts,
            pod,
            chain_pem,
            key_pem,
            credentials,
            client_tls,
            parts: Parts::default(),
            versions: HashMap::new(),
            stream: None,
            changed: false,
            backoff: BACKOFF_MIN,
        };
        loop {
            let remaining = give_up.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(format!("no config from the control plane at {} in time", source.opts.address));
            }
            match tokio::time::timeout(remaining, source.next_config(give_up)).await {
                Ok(Ok(Some(config))) => {
                    let creds = source.credentials.clone();
                    return Ok((source, config, creds));
                }
                Ok(Err(e)) if Instant::now() + source.backoff > give_up => return Err(e),
                Ok(Err(_)) => source.wait_backoff().await,
                Ok(Ok(None)) | Err(_) => {
                    return Err(format!("no config from the control plane at {} in time", source.opts.address));
                }
            }
        }
    }

    async fn wait_backoff(&mut self) {
        tokio::time::sleep(jitter(self.backoff)).await;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Opens the xDS stream and subscribes to every kind, telling what is held.
    async fn connect(&mut self) -> Result<(), String> {
        let channel = channel(&self.opts.address, Arc::clone(&self.client_tls), &self.opts.dialer).await?;
        let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        let (tx, rx) = mpsc::channel(16);
        for req in podmesh_api::subscriptions(&self.pod, |kind| self.versions.get(&kind).cloned().unwrap_or_default()) {
            tx.send(req).await.map_err(|_| "the xDS stream closed".to_string())?;
        }
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await
            .map_err(|s| format!("the control plane refused the xDS stream: {}", s.message()))?
            .into_inner();
        self.stream = Some(Stream { tx, rx });
        Ok(())
    }

    /// Reads responses until the config changes, answering each, or until `until` passes while waiting for one
    /// (`Ok(None)`). Applies everything that has already arrived before building the config, so a push of
    /// several kinds becomes one update. Only the wait for a response gives way to `until`: a response is always
    /// applied and answered whole.
    async fn next_config(&mut self, until: Instant) -> Result<Option<ProxyConfig>, String> {
        loop {
            if self.stream.is_none() {
                self.connect().await?;
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            let message = tokio::select! {
                m = stream.rx.message() => m,
                () = tokio::time::sleep_until(until.into()) => return Ok(None),
            };
            let first = match message {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.stream = None;
                    return Err("the control plane ended the xDS stream".into());
                }
                Err(s) => {
                    self.stream = None;
                    return Err(format!("the xDS stream broke: {}", s.message()));
                }
            };
            self.backoff = BACKOFF_MIN;
            self.answer(first).await?;
            // Whatever else has arrived belongs with it.
            while let Some(stream) = self.stream.as_mut() {
                match tokio::time::timeout(Duration::ZERO, stream.rx.message()).await {
                    Ok(Ok(Some(r))) => self.answer(r).await?,
                    Ok(Ok(None) | Err(_)) => {
                        self.stream = None;
                        break;
                    }
                    Err(_) => break,
                }
            }
            if self.changed
                && let Some(config) = self.parts.config()
            {
                self.changed = false;
                return Ok(Some(config));
            }
        }
    }

    /// Applies one response and ACKs it, or NACKs it and keeps what was held.
    async fn answer(&mut self, r: DeltaDiscoveryResponse) -> Result<(), String> {
        let error = match Kind::from_type_url(&r.type_url) {
            None => Some(format!("unknown resource type {}", r.type_url)),
            Some(kind) => self.check_and_apply(kind, &r).err(),
        };
        if let Some(e) = &error {
            eprintln!("podmesh proxy: refused generation {} from the control plane: {e}", r.system_version_info);
        }
        let ack = DeltaDiscoveryRequest {
            type_url: r.type_url,
            response_nonce: r.nonce,
            error_detail: error.map(|message| RpcStatus { code: 3, message, details: vec![] }),
            ..Default::default()
        };
        let Some(stream) = self.stream.as_ref() else { return Ok(()) };
        if stream.tx.send(ack).await.is_err() {
            self.stream = None;
        }
        Ok(())
    }

    /// Decodes one response, checks it, and applies it in place (nothing held is copied: at scale a push is
    /// hundreds of responses). A Workload naming another identity than the certificate's is refused.
    fn check_and_apply(&mut self, kind: Kind, r: &DeltaDiscoveryResponse) -> Result<(), String> {
        let puts = r
            .resources
            .iter()
            .filter_map(|res| res.resource.as_ref().map(|body| Change::Put { name: &res.name, body }));
        let removes = r.removed_resources.iter().map(|name| Change::Remove { name });
        let decoded = Parts::decode(kind, puts.chain(removes)).map_err(|e| e.to_string())?;
        if let Some(w) = decoded.workload()
            && w.workload.identity != *self.credentials.identity()
        {
            return Err(format!(
                "the config is for {} ({}), but this sidecar is {}: a sidecar's identity never changes; restart it",
                w.workload.pod,
                w.workload.identity.as_str(),
                self.credentials.identity().as_str()
            ));
        }
        self.changed |= !decoded.is_empty();
        self.parts.commit(decoded);
        let held = self.versions.entry(kind).or_default();
        for res in &r.resources {
            held.insert(res.name.clone(), res.version.clone());
        }
        for name in &r.removed_resources {
            held.remove(name);
        }
        Ok(())
    }

    /// A new certificate from the CA, with the current roots.
    async fn renew(&mut self) -> Result<Credentials, String> {
        let (chain_pem, key_pem, credentials, _) = request_certificate(&self.opts).await?;
        self.install(chain_pem, key_pem, credentials)
    }

    fn install(&mut self, chain_pem: String, key_pem: String, c: Credentials) -> Result<Credentials, String> {
        self.client_tls.store(client_tls(&c, &self.opts.control_identity)?);
        self.renew_at = renewal_time(&c);
        (self.chain_pem, self.key_pem, self.credentials) = (chain_pem, key_pem, c.clone());
        Ok(c)
    }

    /// The trust bundle the control plane sent, if it differs from the roots in use.
    fn new_roots(&mut self) -> Option<Result<Credentials, String>> {
        let roots = self.parts.trust_anchors()?.join("");
        if roots == self.opts.roots_pem {
            return None;
        }
        self.opts.roots_pem = roots.clone();
        let c = Credentials::from_pem(&self.chain_pem, &self.key_pem, &roots).map_err(|e| e.to_string());
        Some(c.and_then(|c| self.install(self.chain_pem.clone(), self.key_pem.clone(), c)))
    }
}

impl Intake for ControlSource {
    async fn next(&mut self) -> Option<Result<Update, String>> {
        if let Some(r) = self.new_roots() {
            return Some(r.map(|c| Update::Credentials(Box::new(c))));
        }
        loop {
            match self.next_config(self.renew_at).await {
                Ok(Some(c)) => return Some(Ok(Update::Config(Box::new(c)))),
                Ok(None) => match self.renew().await {
                    Ok(c) => return Some(Ok(Update::Credentials(Box::new(c)))),
                    Err(e) => {
                        // Retried soon; until it succeeds the old certificate serves, and once it has expired
                        // this sidecar opens no mesh connection: nothing is ever sent in plaintext instead.
                        eprintln!("podmesh proxy: renewing the certificate: {e}");
                        self.renew_at = Instant::now() + jitter(Duration::from_secs(5));
                    }
                },
                Err(e) => {
                    eprintln!("podmesh proxy: {e}; serving the last good config, retrying");
                    self.wait_backoff().await;
                }
            }
        }
    }
}

/// Asks the CA for a certificate: a fresh key, a CSR, the token. Returns the chain, key, credentials and the pod.
pub async fn request_certificate(opts: &ControlOptions) -> Result<(String, String, Credentials, String), String> {
    let (key_pem, csr) = podmesh_identity::new_unnamed_csr().map_err(|e| e.to_string())?;
    let tls = podmesh_identity::anonymous_client_config(&opts.roots_pem, &opts.control_identity, &[b"h2"])
        .map_err(|e| format!("the mesh roots given: {e}"))?;
    let channel = channel(&opts.address, Arc::new(ArcSwap::new(tls)), &opts.dialer).await?;
    let mut client = CertificateServiceClient::new(channel);
    let mut req = tonic::Request::new(CertificateRequest {
        csr,
        validity_seconds: opts.cert_ttl.map_or(0, |t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX)),
    });
    let bearer = format!("Bearer {}", opts.token.read()?.trim());
    req.metadata_mut().insert(
        "authorization",
        bearer.parse().map_err(|_| "the bootstrap token has characters a header cannot carry".to_string())?,
    );
    let resp = client
        .create_certificate(req)
        .await
        .map_err(|s| format!("the CA refused the certificate request: {}", s.message()))?
        .into_inner();
    let chain = resp.cert_chain.join("");
    let roots = if resp.trust_anchors.is_empty() { opts.roots_pem.clone() } else { resp.trust_anchors.join("") };
    let creds = Credentials::from_pem(&chain, &key_pem, &roots).map_err(|e| format!("the CA's answer: {e}"))?;
    Ok((chain, key_pem, creds, resp.pod))
}

/// The TLS config of the xDS connection: this sidecar's certificate, the control plane's identity required.
pub fn client_tls(c: &Credentials, control: &Identity) -> Result<Arc<rustls::ClientConfig>, String> {
    c.client_config(control, &[b"h2"]).map_err(|e| e.to_string())
}

/// A gRPC channel to `addr` over TLS with the config in `tls` at the time of each connection.
pub async fn channel(
    addr: &ControlAddress,
    tls: Arc<ArcSwap<rustls::ClientConfig>>,
    dialer: &crate::net::Dialer,
) -> Result<Channel, String> {
    let dialer = dialer.clone();
    let target = addr.clone();
    Endpoint::from_static("http://podmesh-control")
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect_with_connector(tower::service_fn(move |_| {
            let (tls, dialer, target) = (tls.load_full(), dialer.clone(), target.clone());
            async move {
                let tcp = dialer.connect(target.resolve().await?).await?;
                let name = ServerName::try_from("podmesh-control").map_err(std::io::Error::other)?;
                let io = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(io))
            }
        }))
        .await
        .map_err(|e| format!("cannot reach the control plane at {addr}: {e}"))
}

/// What a sidecar proves its pod with.
#[derive(Clone, PartialEq, Eq)]
pub enum Token {
    Value(String),
    /// Read at each use: a projected ServiceAccount token is replaced by the kubelet before it expires.
    File(std::path::PathBuf),
}

impl Token {
    pub fn read(&self) -> Result<String, String> {
        match self {
            Token::Value(v) => Ok(v.clone()),
            Token::File(p) => std::fs::read_to_string(p)
                .map(|t| t.trim().to_string())
                .map_err(|e| format!("reading the token {}: {e}", p.display())),
        }
    }
}

impl From<String> for Token {
    fn from(v: String) -> Self {
        Token::Value(v)
    }
}

/// A token is a secret: its value is never printed.
impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Token::Value(_) => f.write_str("Token(<value>)"),
            Token::File(p) => write!(f, "Token(file {})", p.display()),
        }
    }
}

/// Where the control plane is: an address, or a DNS name resolved again at each connection (a restarted control
/// plane may come back at another address behind its Service name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlAddress {
    Ip(SocketAddr),
    Name { host: String, port: u16 },
}

impl ControlAddress {
    /// The address to dial now (a name's first address).
    pub async fn resolve(&self) -> std::io::Result<SocketAddr> {
        match self {
            ControlAddress::Ip(a) => Ok(*a),
            ControlAddress::Name { host, port } => tokio::net::lookup_host((host.as_str(), *port))
                .await?
                .next()
                .ok_or_else(|| std::io::Error::other(format!("{host} has no address"))),
        }
    }
}

impl From<SocketAddr> for ControlAddress {
    fn from(a: SocketAddr) -> Self {
        ControlAddress::Ip(a)
    }
}

impl std::str::FromStr for ControlAddress {
    type Err = String;

    /// `IP:PORT`, `[IPv6]:PORT` or `NAME:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(ControlAddress::Ip(a));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
        let port: u16 = port.parse().map_err(|_| format!("{s:?}: {port:?} is not a port"))?;
        let valid = !host.is_empty()
            && host.len() <= 253
            && host
                .split('.')
                .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        if !valid || port == 0 {
            return Err(format!("{s:?} is not HOST:PORT (an IP address or a DNS name, and a port)"));
        }
        Ok(ControlAddress::Name { host: host.to_ascii_lowercase(), port })
    }
}

impl std::fmt::Display for ControlAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ControlAddress::Ip(a) => a.fmt(f),
            ControlAddress::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// When to renew: half way through the certificate's remaining life (Istio's default grace ratio).
fn renewal_time(c: &Credentials) -> Instant {
    let left = c.not_after().duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
    Instant::now() + left / 2
}

/// `d` scaled by a random factor in [0.5, 1.5): sidecars that lost the control plane together do not return
/// together.
fn jitter(d: Duration) -> Duration {
    let r = std::collections::hash_map::RandomState::new().build_hasher().finish();
    d.mul_f64(0.5 + (r % 1000) as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[tokio::test]
    async fn a_control_address_is_an_ip_or_a_name_resolved_at_each_connection() {
        let ip: ControlAddress = "10.244.0.1:15012".parse().unwrap();
        assert_eq!(ip, ControlAddress::Ip("10.244.0.1:15012".parse().unwrap()));
        assert_eq!("[::1]:15012".parse::<ControlAddress>().unwrap().to_string(), "[::1]:15012");
        let name: ControlAddress = "podmesh-control.podmesh-system.SVC:15012".parse().unwrap();
        assert_eq!(name.to_string(), "podmesh-control.podmesh-system.svc:15012");
        for bad in ["podmesh-control", "host:", "host:99999", "host:0", ":15012", "a b:1", "a..b:1", "-x_y:1"] {
            assert!(bad.parse::<ControlAddress>().is_err(), "{bad}");
        }
        let token = std::env::temp_dir().join(format!("podmesh-token-{}", std::process::id()));
        std::fs::write(&token, "first\n").unwrap();
        let t = Token::File(token.clone());
        assert_eq!(t.read().unwrap(), "first");
        std::fs::write(&token, "rotated").unwrap();
        assert_eq!(t.read().unwrap(), "rotated", "read again at each use");
        assert!(!format!("{t:?}{:?}", Token::from("secret".to_string())).contains("secret"));
        std::fs::remove_file(&token).unwrap();
        assert!(t.read().unwrap_err().contains("reading the token"));
        let local: ControlAddress = "localhost:15012".parse().unwrap();
        let addr = local.resolve().await.unwrap();
        assert!(addr.ip().is_loopback() && addr.port() == 15012, "{addr}");
    }
}
