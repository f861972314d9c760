//! The echo workload: one port that speaks HTTP/1.1, h2c (HTTP/2 with prior knowledge) and a raw TCP line protocol,
//! and says in every answer which pod served it.
//!
//! The server is client-first: it reads the client's first line before deciding. An HTTP/1.x request line or the
//! HTTP/2 preface (`PRI * HTTP/2.0`) selects HTTP, served by `hyper_util::server::conn::auto`; anything else (including
//! an immediate EOF) selects the line protocol, which answers every line `L` with `<pod> L\n`. A client that sends
//! nothing gets nothing.
//!
//! HTTP endpoints (every response carries `x-echo-pod: <pod>`):
//!
//! | path | answer |
//! |---|---|
//! | anything else | 200, JSON [`Reply`] describing the request (the body is read and counted) |
//! | `/echo` | the request body streamed back as it arrives, with its `content-type` and trailers |
//! | `/status/<code>` | that status, short text body |
//! | `/bytes/<n>` | n bytes (n ≤ 64 MiB) of `b'a' + i % 26`, streamed in 64 KiB chunks |
//! | `/slow/<ms>` | the JSON reply after `ms` milliseconds (≤ 30 000) |
//! | `/close` | the JSON reply, then the connection is closed (`connection: close` in h1, GOAWAY in h2) |
//! | `/ws` | HTTP/1.1 Upgrade: 101 echoing the `Upgrade` token, then raw bytes are echoed until EOF (426 without) |
//! | any `CONNECT` | 200, then the tunnel echoes raw bytes until EOF (HTTP/1.1 and HTTP/2) |
//!
//! A request body that cannot be read (a malformed chunk, a reset stream) is answered 400. Requests hyper cannot
//! parse at all are answered by hyper itself, without `x-echo-pod`.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, EXPECT, HOST, TRAILER, UPGRADE};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// The longest line of the line protocol; a longer one is answered in pieces of this size.
pub const MAX_LINE: usize = 64 * 1024;
/// The largest `/bytes/<n>`.
pub const MAX_BYTES: u64 = 64 * 1024 * 1024;
/// The longest `/slow/<ms>`, in milliseconds.
pub const MAX_SLOW_MS: u64 = 30_000;
/// The response header naming the pod.
pub const POD_HEADER: &str = "x-echo-pod";

const CHUNK: usize = 64 * 1024;
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Serves one listening socket until the returned handle is dropped or [`Echo::shutdown`] is called.
#[derive(Debug)]
pub struct Echo {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Dropping it stops the accept loop, which then closes every connection.
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    name: String,
    /// `name` as a header value; `None` if the name cannot be one.
    header: Option<HeaderValue>,
    connections: AtomicU64,
    requests: AtomicU64,
}

impl Echo {
    /// Starts serving `listener` as pod `name`. One port serves HTTP/1.1, h2c and the raw TCP line protocol.
    pub async fn start(listener: TcpListener, name: &str) -> Echo {
        let addr = listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            header: HeaderValue::from_str(name).ok(),
            connections: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        });
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, Arc::clone(&shared), stopped));
        Echo { addr, shared, stop, task }
    }

    /// Binds `addr` and starts serving it (see [`Echo::start`]).
    pub async fn start_on(addr: SocketAddr, name: &str) -> io::Result<Echo> {
        Ok(Echo::start(TcpListener::bind(addr).await?, name).await)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The pod name it reports.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Connections accepted so far, whatever they turned out to speak.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// HTTP requests served so far (counted when a request reaches the application, before it is answered).
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// Stops listening and closes every connection; returns once the socket and all connections are closed.
    pub async fn shutdown(self) {
        let Echo { stop, task, .. } = self;
        drop(stop);
        // The task ends by itself once `stop` is dropped; a panic in it (there is none) would be no concern of ours.
        let _ = task.await;
    }
}

/// The JSON body of the default answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// The pod that served the request.
    pub pod: String,
    pub method: String,
    /// Path and query as received (the whole request target for forms that have no path, such as CONNECT's).
    pub path: String,
    /// The Host header in HTTP/1 (the URI's authority if there is none), the `:authority` in HTTP/2 (the Host
    /// header if there is none).
    pub host: Option<String>,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Request headers as `[name, value]` pairs, names lower-case, values lossy UTF-8. Names appear in the order
    /// they were first received; repeated values of one name are together, in received order (that is what
    /// `http::HeaderMap` keeps).
    pub headers: Vec<(String, String)>,
    /// Request body bytes read.
    pub body_bytes: u64,
    /// The client's socket address as the server saw it.
    pub peer: String,
}

impl Reply {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    // Small answers should not wait for Nagle; failing to set it changes nothing else.
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve_connection(stream, peer, Arc::clone(&shared)));
                }
                // Out of descriptors or similar: don't spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

async fn serve_connection(mut stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let mut buf = BytesMut::with_capacity(4096);
    let Ok((http, eof)) = sniff(&mut stream, &mut buf).await else { return };
    if http {
        serve_http(Prefixed { prefix: buf.freeze(), io: stream }, peer, shared).await;
    } else {
        // An error only means the client went away; there is nobody to tell.
        let _ = serve_lines(stream, buf, eof, &shared.name).await;
    }
}

/// Reads until the first line is complete (or EOF, or [`MAX_LINE`] bytes) and says whether it starts HTTP, and
/// whether EOF was seen.
async fn sniff(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<(bool, bool)> {
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            let line = &buf[..=end];
            return Ok((line == H2_PREFACE_LINE || is_http1_request_line(line), false));
        }
        if buf.len() >= MAX_LINE {
            return Ok((false, false));
        }
        buf.reserve(8192);
        if stream.read_buf(buf).await? == 0 {
            return Ok((false, true));
        }
    }
}

/// `token SP target SP HTTP/1.<digit> [CR] LF`, as RFC 9112 section 3 has it.
fn is_http1_request_line(line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let tchar = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    !method.is_empty()
        && method.iter().all(tchar)
        && !target.is_empty()
        && target.iter().all(|&b| b > b' ' && b != 0x7f)
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit())
}

/// The line protocol: `<name> <line>\n` for every line; at EOF, the last unterminated line, then a write shutdown.
async fn serve_lines(mut stream: TcpStream, mut buf: BytesMut, mut eof: bool, name: &str) -> io::Result<()> {
    let mut out = Vec::new();
    loop {
        while let Some(line) = next_line(&mut buf, eof) {
            out.reserve(name.len() + line.len() + 2);
            out.extend_from_slice(name.as_bytes());
            out.push(b' ');
            out.extend_from_slice(&line);
            out.push(b'\n');
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if eof {
            return stream.shutdown().await;
        }
        buf.reserve(8192);
        eof = stream.read_buf(&mut buf).await? == 0;
    }
}

/// Takes the next complete line (without its `\n`) off `buf`: one ended by `\n`, a [`MAX_LINE`] piece of a longer
/// one, or at EOF whatever is left.
fn next_line(buf: &mut BytesMut, eof: bool) -> Option<BytesMut> {
    let window = buf.len().min(MAX_LINE + 1);
    if let Some(end) = buf[..window].iter().position(|&b| b == b'\n') {
        let mut line = buf.split_to(end + 1);
        line.truncate(end);
        Some(line)
    } else if buf.len() >= MAX_LINE {
        Some(buf.split_to(MAX_LINE))
    } else if eof && !buf.is_empty() {
        Some(buf.split())
    } else {
        None
    }
}

/// A stream whose first reads return `prefix` (the bytes sniffed before choosing the protocol).
struct Prefixed {
    prefix: Bytes,
    io: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        let head = self.prefix.split_to(n);
        buf.put_slice(&head);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

type ResBody = BoxBody<Bytes, hyper::Error>;

/// What the request handlers share with the connection that runs them.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    /// Notified by `/close` over HTTP/2: the connection then shuts down gracefully (GOAWAY).
    close: Notify,
    /// Set by `/ws` and an HTTP/1.1 CONNECT: the connection hands its socket over once the answer is written.
    upgrade: Mutex<Option<OnUpgrade>>,
}

async fn serve_http(io: Prefixed, peer: SocketAddr, shared: Arc<Shared>) {
    let conn = Arc::new(Conn { shared, peer, close: Notify::new(), upgrade: Mutex::new(None) });
    let for_service = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&for_service)));
    let builder = auto::Builder::new(TokioExecutor::new());
    let http = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(http);
    let served = tokio::select! {
        served = http.as_mut() => served,
        () = conn.close.notified() => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if served.is_err() {
        return;
    }
    let pending = conn.upgrade.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(pending) = pending {
        echo_raw(pending).await;
    }
}

/// After an upgrade or a CONNECT: echoes raw bytes until the client's EOF, then shuts down the write side.
async fn echo_raw(pending: OnUpgrade) {
    let Ok(upgraded) = pending.await else { return };
    let (mut reader, mut writer) = tokio::io::split(TokioIo::new(upgraded));
    if tokio::io::copy(&mut reader, &mut writer).await.is_ok() {
        let _ = writer.shutdown().await;
    }
}

/// Has the connection hand its stream over to [`echo_raw`] once the response is sent. In HTTP/1.1 the socket itself
/// is handed over when the connection future ends (see `serve_http`), so it stays a task of the server; an HTTP/2
/// CONNECT stream is echoed by a task of its own, which ends with the connection.
fn hand_over(pending: OnUpgrade, version: Version, conn: &Conn) {
    if version == Version::HTTP_2 {
        tokio::spawn(echo_raw(pending));
    } else {
        *conn.upgrade.lock().unwrap_or_else(PoisonError::into_inner) = Some(pending);
    }
}

async fn handle(req: Request<Incoming>, conn: Arc<Conn>) -> Result<Response<ResBody>, Infallible> {
    conn.shared.requests.fetch_add(1, Ordering::Relaxed);
    let h1 = req.version() < Version::HTTP_2;
    let head = req.method() == Method::HEAD;
    // The only error is a request body that could not be read (a broken chunk, a reset stream).
    let mut response = route(req, &conn).await.unwrap_or_else(|_| {
        let mut response = text(StatusCode::BAD_REQUEST, "could not read the request body\n");
        if h1 {
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        }
        response
    });
    if let Some(pod) = &conn.shared.header {
        response.headers_mut().insert(POD_HEADER, pod.clone());
    }
    if head && !h1 {
        // A HEAD answer has the GET's headers, its length included, and no body; hyper drops the body itself only
        // over HTTP/1.
        let (mut parts, body) = response.into_parts();
        if let Some(len) = hyper::body::Body::size_hint(&body).exact() {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
        }
        response = Response::from_parts(parts, full(Vec::new()));
    }
    Ok(response)
}

async fn route(req: Request<Incoming>, conn: &Conn) -> Result<Response<ResBody>, hyper::Error> {
    if req.method() == Method::CONNECT {
        return Ok(connect(req, conn));
    }
    let path = req.uri().path();
    if path == "/echo" {
        return echo_body(req).await;
    }
    if path == "/ws" {
        return Ok(upgrade(req, conn));
    }
    if path == "/metrics" {
        // The application's own Prometheus metrics, for the sidecar to merge into 15020 (R8).
        drain(req.into_body()).await?;
        let s = &conn.shared;
        let body = format!(
            "# HELP echo_requests_total HTTP requests served by the echo workload.\n\
             # TYPE echo_requests_total counter\n\
             echo_requests_total{{pod=\"{}\"}} {}\n\
             # HELP echo_connections_total Connections accepted by the echo workload.\n\
             # TYPE echo_connections_total counter\n\
             echo_connections_total{{pod=\"{}\"}} {}\n",
            s.name,
            s.requests.load(Ordering::Relaxed),
            s.name,
            s.connections.load(Ordering::Relaxed)
        );
        let mut response = Response::new(full(body.into_bytes()));
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
        return Ok(response);
    }
    if path == "/close" {
        let h1 = req.version() < Version::HTTP_2;
        let mut response = reply(req, conn).await?;
        if h1 {
            response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
        } else {
            conn.close.notify_one();
        }
        return Ok(response);
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let code = code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok());
        drain(req.into_body()).await?;
        return Ok(match code {
            Some(code) if !code.is_informational() => status(code),
            _ => text(StatusCode::BAD_REQUEST, "/status/<code> takes a status code from 200 to 999\n"),
        });
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n = n.parse::<u64>().ok().filter(|&n| n <= MAX_BYTES);
        drain(req.into_body()).await?;
        let Some(n) = n else {
            return Ok(text(StatusCode::BAD_REQUEST, "/bytes/<n> takes a byte count up to 67108864\n"));
        };
        let mut response = Response::new(Pattern { sent: 0, len: n }.map_err(|never| match never {}).boxed());
        response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        return Ok(response);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let Some(ms) = ms.parse::<u64>().ok().filter(|&ms| ms <= MAX_SLOW_MS) else {
            drain(req.into_body()).await?;
            return Ok(text(StatusCode::BAD_REQUEST, "/slow/<ms> takes milliseconds up to 30000\n"));
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    reply(req, conn).await
}

/// The default answer: the request described as JSON.
async fn reply(req: Request<Incoming>, conn: &Conn) -> Result<Response<ResBody>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body_bytes = drain(body).await?;
    let host_header = parts.headers.get(HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    let host = if parts.version == Version::HTTP_2 { authority.or(host_header) } else { host_header.or(authority) };
    let path = match parts.uri.path_and_query() {
        Some(pq) => pq.as_str().to_owned(),
        None => parts.uri.to_string(),
    };
    let reply = Reply {
        pod: conn.shared.name.clone(),
        method: parts.method.as_str().to_owned(),
        path,
        host,
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
        body_bytes,
        peer: conn.peer.to_string(),
    };
    let Ok(json) = serde_json::to_vec(&reply) else {
        return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "could not encode the reply\n"));
    };
    let mut response = Response::new(full(json));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

/// `/echo`: the request body, frames and trailers, becomes the response body as it arrives.
async fn echo_body(req: Request<Incoming>) -> Result<Response<ResBody>, hyper::Error> {
    let (parts, mut body) = req.into_parts();
    // hyper sends `100 Continue` when the body is first read, but only if no response has started: with `Expect:
    // 100-continue`, read the first frame before answering, or the client would wait for a 100 that never comes.
    let expects_continue =
        parts.headers.get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let body = if expects_continue && !body.is_end_stream() {
        match body.frame().await.transpose()? {
            Some(first) => Replay { first: Some(first), rest: body }.boxed(),
            None => empty(),
        }
    } else {
        body.boxed()
    };
    let mut response = Response::new(body);
    if let Some(content_type) = parts.headers.get(CONTENT_TYPE) {
        response.headers_mut().insert(CONTENT_TYPE, content_type.clone());
    }
    // HTTP/1.1 sends response trailers only when they are announced in `Trailer` (and the client sent `TE:
    // trailers`, which hyper checks); announce the ones the client announced.
    if parts.version < Version::HTTP_2 {
        for announced in parts.headers.get_all(TRAILER) {
            response.headers_mut().append(TRAILER, announced.clone());
        }
    }
    Ok(response)
}

/// A body whose first frame was read already.
struct Replay {
    first: Option<Frame<Bytes>>,
    rest: Incoming,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.first.take() {
            Some(first) => Poll::Ready(Some(Ok(first))),
            None => Pin::new(&mut self.rest).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.first.is_none() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let first = self.first.as_ref().and_then(Frame::data_ref).map_or(0, |d| d.len() as u64);
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower().saturating_add(first));
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper.saturating_add(first));
        }
        hint
    }
}

/// `/ws`: 101 with the requested `Upgrade`, then the connection echoes raw bytes (see `serve_http`).
fn upgrade(mut req: Request<Incoming>, conn: &Conn) -> Response<ResBody> {
    let wants_upgrade = req
        .headers()
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    let protocol = req.headers().get(UPGRADE).filter(|v| !v.is_empty()).cloned();
    let (Version::HTTP_11, true, Some(protocol)) = (req.version(), wants_upgrade, protocol) else {
        return text(
            StatusCode::UPGRADE_REQUIRED,
            "/ws needs an HTTP/1.1 request with Connection: upgrade and Upgrade\n",
        );
    };
    hand_over(hyper::upgrade::on(&mut req), Version::HTTP_11, conn);
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("upgrade"));
    response.headers_mut().insert(UPGRADE, protocol);
    response
}

/// CONNECT (any target, HTTP/1.1 or HTTP/2): 200, then the tunnel echoes raw bytes.
fn connect(mut req: Request<Incoming>, conn: &Conn) -> Response<ResBody> {
    hand_over(hyper::upgrade::on(&mut req), req.version(), conn);
    Response::new(empty())
}

/// Reads a body to its end and counts its data bytes.
async fn drain(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

fn status(code: StatusCode) -> Response<ResBody> {
    // These statuses carry no body.
    if code == StatusCode::NO_CONTENT || code == StatusCode::RESET_CONTENT || code == StatusCode::NOT_MODIFIED {
        let mut response = Response::new(empty());
        *response.status_mut() = code;
        return response;
    }
    let reason = code.canonical_reason().unwrap_or("");
    text(code, &format!("{} {reason}\n", code.as_u16()))
}

fn text(code: StatusCode, body: &str) -> Response<ResBody> {
    let mut response = Response::new(full(body.as_bytes().to_vec()));
    *response.status_mut() = code;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn full(body: Vec<u8>) -> ResBody {
    Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed()
}

fn empty() -> ResBody {
    full(Vec::new())
}

/// `/bytes/<n>`: `b'a' + i % 26` for i in 0..n, produced a chunk at a time.
struct Pattern {
    sent: u64,
    len: u64,
}

impl Body for Pattern {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let start = self.sent;
        let end = self.len.min(start + CHUNK as u64);
        if start >= end {
            return Poll::Ready(None);
        }
        let chunk: Vec<u8> = (start..end).map(|i| b'a' + (i % 26) as u8).collect();
        self.sent = end;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(chunk)))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len - self.sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        assert!(is_http1_request_line(b"GET / HTTP/1.1\r\n"));
        assert!(is_http1_request_line(b"POST /a?b=c HTTP/1.0\n"));
        assert!(is_http1_request_line(b"OPTIONS * HTTP/1.1\r\n"));
        assert!(is_http1_request_line(b"CONNECT example.com:443 HTTP/1.1\r\n"));
        assert!(!is_http1_request_line(b"PRI * HTTP/2.0\r\n"));
        assert!(!is_http1_request_line(b"hello world\n"));
        assert!(!is_http1_request_line(b"GET /\n"));
        assert!(!is_http1_request_line(b"GET  / HTTP/1.1\r\n"));
        assert!(!is_http1_request_line(b"GET / HTTP/1.1 extra\r\n"));
        assert!(!is_http1_request_line(b"G(T / HTTP/1.1\r\n"));
        assert!(!is_http1_request_line(b"GET /\x01 HTTP/1.1\r\n"));
        assert!(!is_http1_request_line(b"\n"));
    }

    #[test]
    fn lines_are_split_and_capped() {
        let mut buf = BytesMut::from(&b"a\n\nbc"[..]);
        assert_eq!(next_line(&mut buf, false).as_deref(), Some(&b"a"[..]));
        assert_eq!(next_line(&mut buf, false).as_deref(), Some(&b""[..]));
        assert_eq!(next_line(&mut buf, false), None);
        assert_eq!(next_line(&mut buf, true).as_deref(), Some(&b"bc"[..]));
        assert_eq!(next_line(&mut buf, true), None);

        let mut exact = BytesMut::from(&[b'x'; MAX_LINE][..]);
        exact.extend_from_slice(b"\n");
        assert_eq!(next_line(&mut exact, false).map(|l| l.len()), Some(MAX_LINE));
        assert!(exact.is_empty());

        let mut long = BytesMut::from(&[b'y'; MAX_LINE + 10][..]);
        assert_eq!(next_line(&mut long, false).map(|l| l.len()), Some(MAX_LINE));
        assert_eq!(next_line(&mut long, false), None);
        assert_eq!(next_line(&mut long, true).map(|l| l.len()), Some(10));
    }

    #[test]
    fn pattern_is_exact() {
        let mut body = Pattern { sent: 0, len: (CHUNK as u64) * 2 + 3 };
        let mut all = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            all.extend_from_slice(frame.data_ref().map(|d| &d[..]).unwrap_or_default());
        }
        assert_eq!(all.len(), CHUNK * 2 + 3);
        assert!(all.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8));
        assert!(body.is_end_stream());
    }
}
