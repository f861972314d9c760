//! HTTP plumbing shared by both directions: locally generated responses (R6), the upstream connection pool, and
//! preparing a request for the next hop without changing what the application sees.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podmesh_compute::Identity;
use podmesh_route::reason::REASON_HEADER;
use podmesh_route::request::Headers;
use podmesh_route::{Rejection, Rule, Side};

use crate::body::Counted;
use crate::io::Io;

/// Bodies the proxy returns: the upstream's, streamed, or one it generated.
pub type RespBody = Either<Counted<Incoming>, Full<Bytes>>;

/// Request bodies the proxy forwards: the client's, counted.
pub type ReqBody = Counted<Incoming>;

/// A locally generated response for a rejection: the documented status, the reason header
/// (`<code>; side=<side>; rule=<rule>`) and the one-line body with the fix (R6).
pub fn rejection_response(r: &Rejection) -> Response<RespBody> {
    let status = r.reason.http_status().unwrap_or(503);
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(r.body()))));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("{}; side={}; rule={}", r.reason, r.side, r.rule)) {
        h.insert(HeaderName::from_static(REASON_HEADER), v);
    }
    if r.reason == podmesh_route::ReasonCode::ProtocolError {
        // After a malformed request, the rest of the connection cannot be trusted to be framed as it claims.
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// Request heads an intermediary must not forward (RFC 9112 §6.3, §3.2; RFC 9113 §8.3.1): two parties could
/// read their framing or their target differently — request smuggling, or a Host check passed for one name and
/// routed by another. The HTTP parser (hyper, httparse) already refuses bad syntax: obsolete line folding,
/// whitespace before a colon, CR, LF or NUL in a value, an invalid or conflicting Content-Length, a
/// Transfer-Encoding other than chunked.
pub fn malformed<B>(req: &Request<B>, side: Side) -> Option<Rejection> {
    let h = req.headers();
    let count = |name: header::HeaderName| h.get_all(name).iter().count();
    let problem = if count(header::HOST) > 1 {
        "the request has several Host headers"
    } else if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
        "the request has both Content-Length and Transfer-Encoding"
    } else if count(header::CONTENT_LENGTH) > 1 {
        "the request has several Content-Length headers"
    } else if let (Some(authority), Some(host)) = (req.uri().authority(), h.get(header::HOST)) {
        if host.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()) {
            return None;
        }
        if req.version() == Version::HTTP_2 {
            "the request's Host header differs from its :authority"
        } else {
            "the request's absolute target names another host than its Host header"
        }
    } else {
        return None;
    };
    Some(Rejection::new(
        podmesh_route::ReasonCode::ProtocolError,
        side,
        Rule::R6,
        format!("{problem}: an intermediary cannot forward it unambiguously."),
        "send one Host (or :authority), and frame the body by Content-Length or chunked encoding, not both",
    ))
}

/// Whether forwarding failed because the client's own request body was malformed (e.g. a bad chunk size): the
/// body is streamed, so this shows up only while sending it on.
pub fn client_body_error(e: &hyper::Error) -> bool {
    // hyper's client reports a failing request body as a user error whose cause is the server side's own
    // error reading that body from the client (a bad chunk, or the client going away mid-body).
    e.is_user() && std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<hyper::Error>().is_some())
}

/// The refusal for a malformed request body. The request was already on its way (bodies are streamed), so the
/// application saw it aborted, never complete.
pub fn body_error(e: &hyper::Error, side: Side) -> Rejection {
    Rejection::new(
        podmesh_route::ReasonCode::ProtocolError,
        side,
        Rule::R6,
        format!("the request body is malformed: {e}"),
        "frame the body correctly (valid chunk sizes, or exactly Content-Length bytes)",
    )
}

/// Serves one client connection with the hardening limits, and logs a request the HTTP parser refused (it
/// answers 400 itself and closes) as `protocol_error`.
pub async fn serve_connection<S>(
    log: &crate::AccessLog,
    io: Box<dyn Io>,
    svc: S,
    mut rec: crate::AccessRecord,
    mut drain: tokio::sync::watch::Receiver<bool>,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<RespBody>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let start = std::time::Instant::now();
    let limits = crate::limits::Limits::default();
    // The first request's head, checked on its raw bytes: hyper resolves some ambiguities silently (it lets
    // Transfer-Encoding win over Content-Length and drops the latter), which the contract refuses outright.
    let mut io = io;
    let mut head = bytes::BytesMut::new();
    if crate::io::read_head(&mut io, &mut head, limits.max_header_bytes, limits.header_read_timeout).await
        && let Some(problem) = precheck(&head)
    {
        let rej = Rejection::new(
            podmesh_route::ReasonCode::ProtocolError,
            rec_side(&rec),
            Rule::R6,
            format!("{problem}: an intermediary cannot forward it unambiguously."),
            "send well-formed HTTP/1.1 (RFC 9112): one Host, and a body framed by Content-Length or chunked, not both",
        );
        let _ = tokio::io::AsyncWriteExt::write_all(&mut io, &raw_response(&rej)).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut io).await;
        if let Ok(req) = httparse_head(&head) {
            rec.method = req.0;
            rec.path = req.1;
        }
        rec.rejected(&rej);
        rec.status = Some(400);
        log.write(rec, start.elapsed());
        return;
    }
    let io: Box<dyn Io> = Box::new(crate::io::Prefixed::new(head, io));
    let builder = limits.server();
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        // Draining: HTTP/2 gets GOAWAY, HTTP/1 finishes the request in flight with `Connection: close`.
        // (The guard `wait_for` returns is dropped inside, so the future stays Send.)
        _ = async { drop(drain.wait_for(|d| *d).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = served {
        let parse = e.downcast_ref::<hyper::Error>().is_some_and(|e| e.is_parse() || e.is_parse_too_large());
        if parse {
            rec.rejected(&Rejection::new(
                podmesh_route::ReasonCode::ProtocolError,
                rec_side(&rec),
                Rule::R6,
                format!("the HTTP parser refused the request: {e}"),
                "send well-formed HTTP/1.1 (RFC 9112) or HTTP/2",
            ));
            rec.status = Some(if e.to_string().contains("too large") { 431 } else { 400 });
            log.write(rec, start.elapsed());
        }
    }
}

/// What is wrong with a complete HTTP/1 request head, when it is something podmesh answers itself: bad syntax
/// (httparse, with hyper's own strictness), or framing and target ambiguities. `None` also for what hyper refuses
/// on its own terms (too many headers: 431).
fn precheck(head: &[u8]) -> Option<String> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Err(httparse::Error::TooManyHeaders) | Ok(httparse::Status::Partial) => return None,
        Err(e) => return Some(format!("the request head is malformed ({e})")),
        Ok(httparse::Status::Complete(_)) => {}
    }
    let count = |name: &str| req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).count();
    let problem = if count("host") > 1 {
        "the request has several Host headers"
    } else if count("transfer-encoding") > 0 && count("content-length") > 0 {
        "the request has both Content-Length and Transfer-Encoding"
    } else if count("content-length") > 1 {
        "the request has several Content-Length headers"
    } else {
        return None;
    };
    Some(problem.to_string())
}

/// Method and path of a head, for the access log.
fn httparse_head(head: &[u8]) -> Result<(Option<String>, Option<String>), httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head)?;
    Ok((req.method.map(str::to_string), req.path.map(str::to_string)))
}

/// A rejection as HTTP/1.1 bytes, for answering before hyper has the connection.
fn raw_response(r: &Rejection) -> Vec<u8> {
    let resp = rejection_response(r);
    let body = r.body();
    let mut out = format!("HTTP/1.1 {}\r\n", resp.status());
    for (name, value) in resp.headers() {
        out.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or_default()));
    }
    out.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    out.into_bytes()
}

fn rec_side(rec: &crate::AccessRecord) -> Side {
    match rec.direction {
        crate::Direction::Outbound => Side::Source,
        crate::Direction::Inbound => Side::Destination,
    }
}

/// A client's request made ready for the next hop, in the same HTTP version (HTTP/1.0 goes on as 1.1): its
/// hop-by-hop headers removed, its target in that version's form, its body counted. Returns the version and the
/// counter of request body bytes too.
pub fn for_next_hop(mut req: Request<Incoming>) -> (Request<ReqBody>, Version, Arc<AtomicU64>) {
    let version = if req.version() == Version::HTTP_2 { Version::HTTP_2 } else { Version::HTTP_11 };
    let upgrade = wants_upgrade(&req);
    strip_hop_by_hop(req.headers_mut(), upgrade);
    set_target(&mut req, version);
    let count = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&count);
    (req.map(|b| Counted::new(b, counter, None)), version, count)
}

/// The upstream's response on its way to the client: its body is counted, and the request's record is written
/// when that body ends, with both byte counts and the whole duration. A response cut short is `upstream_reset`.
pub fn finish_response(
    log: &crate::AccessLog,
    resp: Response<Incoming>,
    mut rec: crate::AccessRecord,
    request_bytes: Arc<AtomicU64>,
    start: std::time::Instant,
) -> Response<RespBody> {
    rec.status = Some(resp.status().as_u16());
    let log = log.clone();
    let sent = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&sent);
    let on_end: crate::body::OnEnd = Box::new(move |complete| {
        rec.bytes_received = request_bytes.load(Ordering::Relaxed);
        rec.bytes_sent = sent.load(Ordering::Relaxed);
        if !complete {
            rec.reason(podmesh_route::ReasonCode::UpstreamReset);
            rec.message = Some("the response was cut short (the upstream or the client went away)".into());
        }
        log.write(rec, start.elapsed());
    });
    resp.map(|b| Either::Left(Counted::new(b, counted, Some(on_end))))
}

/// Answers a refused request (R6) and logs it with its reason and status.
pub fn refuse_request(
    log: &crate::AccessLog,
    mut rec: crate::AccessRecord,
    rej: &Rejection,
    start: std::time::Instant,
) -> Response<RespBody> {
    rec.rejected(rej);
    let resp = rejection_response(rej);
    rec.status = Some(resp.status().as_u16());
    log.write(rec, start.elapsed());
    resp
}

/// `Infallible` service results.
pub type ServiceResult = Result<Response<RespBody>, Infallible>;

/// The route functions' view of hyper's headers.
#[derive(Debug)]
pub struct HeaderView<'a>(pub &'a HeaderMap);

impl Headers for HeaderView<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The Host of a request: the Host header (HTTP/1.1), else the URI's authority (HTTP/2 `:authority`, or an
/// absolute-form HTTP/1 request line).
pub fn host_of<B>(req: &Request<B>) -> Option<&str> {
    req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().authority().map(|a| a.as_str()))
}

pub fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "http/2",
        Version::HTTP_10 => "http/1.0",
        _ => "http/1.1",
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1); each hop sets its own. An upgrade
/// keeps `Connection: upgrade` and `Upgrade`, which are the request.
///
/// Two exceptions carry on what the next hop must know to give the client the same answer: `TE: trailers` (the
/// proxy relays trailers, and an HTTP/1.1 server sends them only to a client that asked, whether or not `Connection`
/// also names TE as RFC 9110 §10.1.4 has it), and `Transfer-Encoding` (HTTP/1.1 to HTTP/1.1: hyper frames the body
/// as that header says, so a chunked request stays chunked, whatever its method).
///
/// The map is rebuilt in order rather than `remove`d from: `HeaderMap::remove` moves the last header into the
/// removed one's place, which would reorder the end-to-end headers the application sees.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most requests carry none of these: nothing to remove, and the map is left as it is.
    const HOP_BY_HOP: [HeaderName; 7] = [
        header::CONNECTION,
        header::TE,
        header::UPGRADE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ];
    if !HOP_BY_HOP.iter().any(|n| headers.contains_key(n)) {
        return;
    }
    let tokens = |name: HeaderName| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let listed = tokens(header::CONNECTION);
    let trailers = tokens(header::TE).iter().any(|t| t == "trailers");
    let keep = |name: &HeaderName| match name.as_str() {
        "connection" | "upgrade" => upgrade,
        "te" => trailers,
        "transfer-encoding" => true,
        "keep-alive" | "proxy-connection" | "proxy-authenticate" | "proxy-authorization" => false,
        other => !listed.iter().any(|t| t == other),
    };
    let mut kept = HeaderMap::with_capacity(headers.len());
    let mut current: Option<HeaderName> = None;
    for (name, value) in std::mem::take(headers) {
        if let Some(name) = name {
            current = Some(name);
        }
        let Some(name) = current.as_ref().filter(|n| keep(n)) else { continue };
        // One value each for the two whose value the proxy sets: what it asks of the next hop.
        let value = match name.as_str() {
            "connection" | "te" if kept.contains_key(name) => continue,
            "connection" => HeaderValue::from_static("upgrade"),
            "te" => HeaderValue::from_static("trailers"),
            _ => value,
        };
        kept.append(name.clone(), value);
    }
    *headers = kept;
}

/// Whether a request asks to switch protocols (HTTP/1.1 Upgrade, e.g. WebSocket).
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")))
}

/// Rewrites the request target for the upstream's HTTP version: origin form for HTTP/1, absolute for HTTP/2
/// (which carries scheme and authority as pseudo-headers).
pub fn set_target<B>(req: &mut Request<B>, version: Version) {
    if version != Version::HTTP_2 && req.uri().scheme().is_none() && req.uri().authority().is_none() {
        return; // Already in origin form.
    }
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string();
    let uri = if version == Version::HTTP_2 {
        let authority = host_of(req).unwrap_or("localhost").to_string();
        format!("http://{authority}{path}")
    } else {
        path
    };
    if let Ok(uri) = uri.parse() {
        *req.uri_mut() = uri;
    }
}

/// A connection to an upstream, ready for requests.
#[derive(Debug)]
pub enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

impl Sender {
    /// An HTTP/1 connection with no request in flight.
    fn is_idle(&self) -> bool {
        matches!(self, Sender::H1(h) if h.is_ready())
    }

    fn usable(&self) -> bool {
        match self {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Sends `req`; when the connection could not take it (closed under us), the request comes back unsent.
    pub async fn send(&mut self, req: Request<ReqBody>) -> Result<Response<Incoming>, SendError> {
        let result = match self {
            Sender::H1(s) => s.try_send_request(req).await,
            Sender::H2(s) => s.try_send_request(req).await,
        };
        result.map_err(|mut e| match e.take_message() {
            Some(req) => SendError::NotSent(Box::new(req)),
            None => SendError::Failed(e.into_error()),
        })
    }

    /// Opens a connection over `io` speaking `version`.
    pub async fn handshake(io: Box<dyn Io>, version: Version) -> Result<Sender, hyper::Error> {
        let io = TokioIo::new(io);
        if version == Version::HTTP_2 {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn.with_upgrades());
            Ok(Sender::H1(sender))
        }
    }
}

#[derive(Debug)]
pub enum SendError {
    NotSent(Box<Request<ReqBody>>),
    Failed(hyper::Error),
}

/// What identifies a reusable upstream connection: where, how secured, and which protocol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    /// The identity required of the server and the SNI sent (R3.6), or plaintext.
    pub tls: Option<(Identity, String)>,
    pub version: Version,
}

/// Idle upstream connections. HTTP/2 connections are shared by concurrent requests; an HTTP/1 connection serves
/// one request at a time and is taken again once hyper reports it ready, the one idle longest first.
#[derive(Default)]
pub struct Pool {
    /// Each with when it was put back (an HTTP/1 one is idle at most that long).
    idle: Mutex<HashMap<PoolKey, Vec<(Sender, std::time::Instant)>>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// Connections kept per key beyond those in use.
const MAX_IDLE_PER_KEY: usize = 64;

/// An idle HTTP/1 connection older than this is not reused: servers close idle keep-alive connections (podmesh's
/// inbound side after its 10 s header timeout, Node.js after 5 s), and a request sent as the server closes is
/// lost with no way to know it was not processed. Below the shortest common server timeout.
pub const MAX_IDLE_H1: std::time::Duration = std::time::Duration::from_secs(4);

impl Pool {
    pub fn take(&self, key: &PoolKey) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.get_mut(key)?;
        list.retain(|(s, since)| {
            s.usable() && (matches!(s, Sender::H2(_)) || since.elapsed() < MAX_IDLE_H1 || !s.is_idle())
        });
        if let Some((Sender::H2(s), _)) = list.iter().find(|(s, _)| matches!(s, Sender::H2(_))) {
            // Shared: hand out a clone and keep it pooled.
            return Some(Sender::H2(s.clone()));
        }
        // The one idle longest (the list stays in the order connections were returned): under a steady load every
        // pooled connection is used well within MAX_IDLE_H1, so a burst finds them all warm. Taking the newest
        // lets all but a few age out between bursts, and each burst then pays new TCP + mTLS handshakes; a
        // swap_remove here once did the same to part of the pool.
        let pos = list.iter().position(|(s, _)| s.is_idle())?;
        Some(list.remove(pos).0)
    }

    pub fn put(&self, key: PoolKey, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.entry(key).or_default();
        if matches!(sender, Sender::H2(_)) && list.iter().any(|(s, _)| matches!(s, Sender::H2(_))) {
            return;
        }
        if list.len() < MAX_IDLE_PER_KEY {
            list.push((sender, std::time::Instant::now()));
        }
    }
}

/// Why a request could not be forwarded.
#[derive(Debug)]
pub enum ForwardError {
    /// No connection (TCP or TLS) to the upstream: try another endpoint.
    Connect(std::io::Error),
    /// The connection failed before a response arrived.
    Send(hyper::Error),
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Connect(e) => write!(f, "connect: {e}"),
            ForwardError::Send(e) => write!(f, "{e}"),
        }
    }
}

/// Sends `req` over a pooled or new connection for `key`. A pooled connection that closed under us is replaced
/// (the request was not sent, so this is safe for any method). An HTTP/1.1 upgrade (101) joins the two upgraded
/// connections byte for byte. When no connection could be made, the request comes back for another endpoint.
pub async fn forward(
    proxy: &crate::Proxy,
    key: PoolKey,
    mut req: Request<ReqBody>,
) -> Result<Response<Incoming>, (ForwardError, Option<Request<ReqBody>>)> {
    let upgrade = wants_upgrade(&req);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (mut sender, fresh) = match proxy.pool.take(&key) {
            Some(s) if !upgrade => (s, false),
            _ => {
                let opened = match connect(proxy, &key).await {
                    Ok(io) => Sender::handshake(io, key.version).await.map_err(std::io::Error::other),
                    Err(e) => Err(e),
                };
                match opened {
                    Ok(sender) => (sender, true),
                    Err(e) => return Err((ForwardError::Connect(e), Some(req))),
                }
            }
        };
        match sender.send(req).await {
            Ok(mut resp) => {
                if !upgrade {
                    proxy.pool.put(key, sender);
                } else if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                    && let Some(down) = downstream_upgrade
                {
                    let up = hyper::upgrade::on(&mut resp);
                    tokio::spawn(async move {
                        if let (Ok(a), Ok(b)) = (down.await, up.await) {
                            let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
                        }
                    });
                } else if let Some(down) = downstream_upgrade {
                    // Declined (e.g. `Upgrade: h2c` answered in HTTP/1.1): the connection goes on, but hyper still
                    // hands its stream to this upgrade when it ends, instead of shutting it down; close it in order
                    // then (over mTLS, a close_notify), or the far side sees a truncated stream and resets.
                    tokio::spawn(async move {
                        if let Ok(client) = down.await {
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut TokioIo::new(client)).await;
                        }
                    });
                }
                return Ok(resp);
            }
            Err(SendError::NotSent(r)) if !fresh && attempts < 3 => req = *r,
            Err(SendError::NotSent(r)) => {
                return Err((ForwardError::Connect(std::io::Error::other("the upstream connection closed")), Some(*r)));
            }
            Err(SendError::Failed(e)) => return Err((ForwardError::Send(e), None)),
        }
    }
}

/// TCP, then mTLS when the key asks for it.
pub async fn connect(proxy: &crate::Proxy, key: &PoolKey) -> std::io::Result<Box<dyn Io>> {
    if key.tls.is_some() {
        proxy.tls.check_unexpired()?;
    }
    let tcp = proxy.dialer.connect(key.addr).await?;
    match &key.tls {
        None => Ok(Box::new(tcp)),
        Some((identity, sni)) => Ok(Box::new(proxy.tls.connect(tcp, identity, sni).await?)),
    }
}
