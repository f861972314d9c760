//! Transparency: every case is run directly against the echo application of one web pod, and through the client's
//! sidecar → the web pod's sidecar (mTLS, STRICT), both to the pod's IP and to the web Service, and what the
//! application-level client observes (status, response headers, body, trailers) and what the application observed
//! (the echo's JSON: method, path, host, version, the request headers in order, body bytes) must be the same.
//!
//! What may differ, by design, and is normalised away before comparing:
//! - the `date` response header (a clock, not the message);
//! - the echo's `peer` field (the application's client is the server sidecar, not the client application), and with
//!   it the JSON's `content-length`, which is checked against the body it frames instead;
//! - through the Service, which web pod answered (`x-echo-pod`, the JSON's `pod`): it must be one of web's pods.
//!
//! Hop-by-hop differences accepted (RFC 9110 §7.6.1) are noted where a case allows them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podmesh_proxy::Direction;
use podmesh_testkit::echo::{Echo, Reply};
use support::Mesh;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const STRICT: &[&str] = &["examples/quickstart", "examples/quickstart/strict"];
const HOST: &str = "web.shop";
/// The bound on every single wait; nothing in this file waits unbounded.
const WAIT: Duration = Duration::from_secs(15);
const CLIENT_ID: &str = "spiffe://cluster.local/ns/shop/sa/client";

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What a client observes
// ---------------------------------------------------------------------------------------------------------------

/// One response as the application-level client saw it, normalised (see the module docs).
#[derive(Clone, PartialEq)]
struct Seen {
    status: u16,
    /// Response headers in received order, names lower-case, without `date`.
    headers: Vec<(String, String)>,
    /// The body bytes (empty when it was the echo's JSON, which is in `reply`).
    body: Bytes,
    /// The echo's JSON, `peer` cleared.
    reply: Option<Reply>,
    trailers: Vec<(String, String)>,
    /// Whatever else a case observed (connection state, timings that must hold on every path, ...).
    notes: Vec<String>,
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let head = &self.body[..self.body.len().min(120)];
        f.debug_struct("Seen")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .field("body_head", &String::from_utf8_lossy(head))
            .field("reply", &self.reply)
            .field("trailers", &self.trailers)
            .field("notes", &self.notes)
            .finish()
    }
}

fn header_list(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter().map(|(n, v)| (n.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

impl Seen {
    fn new(status: u16, headers: Vec<(String, String)>, body: Bytes, trailers: Vec<(String, String)>) -> Seen {
        let mut headers: Vec<(String, String)> =
            headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).filter(|(n, _)| n != "date").collect();
        let json = headers.iter().any(|(n, v)| n == "content-type" && v == "application/json");
        let mut reply = None;
        let mut body = body;
        if json && !body.is_empty() {
            let mut r: Reply = serde_json::from_slice(&body)
                .unwrap_or_else(|e| panic!("not the echo's JSON ({e}): {}", String::from_utf8_lossy(&body)));
            r.peer.clear();
            for (n, v) in &mut headers {
                if n == "content-length" {
                    assert_eq!(v.parse::<usize>().unwrap(), body.len(), "content-length frames the JSON body");
                    *v = "<length of the body>".into();
                }
            }
            reply = Some(r);
            body = Bytes::new();
        }
        Seen { status, headers, body, reply, trailers, notes: vec![] }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn reply(&self) -> &Reply {
        self.reply.as_ref().unwrap_or_else(|| panic!("no JSON reply in {self:?}"))
    }

    fn note(mut self, n: impl Into<String>) -> Seen {
        self.notes.push(n.into());
        self
    }
}

/// Observations that can say "some web pod" instead of which one (through the Service, any pod may answer).
trait Observation: PartialEq + std::fmt::Debug {
    fn any_pod(&mut self, pods: &[String]);
}

const ANY_POD: &str = "<a web pod>";

impl Observation for Seen {
    fn any_pod(&mut self, pods: &[String]) {
        for (n, v) in &mut self.headers {
            if n == "x-echo-pod" {
                assert!(pods.contains(v), "{v} is not a web pod");
                *v = ANY_POD.into();
            }
        }
        if let Some(r) = &mut self.reply {
            assert!(pods.contains(&r.pod), "{} is not a web pod", r.pod);
            r.pod = ANY_POD.into();
        }
    }
}

impl<T: Observation> Observation for Vec<T> {
    fn any_pod(&mut self, pods: &[String]) {
        for o in self {
            o.any_pod(pods);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The three paths to one web pod's application
// ---------------------------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// The client talks to the application itself.
    Direct,
    /// client → client sidecar → (mTLS) → web pod's sidecar → application, dialling the pod IP.
    ViaPod,
    /// The same, dialling the web Service's ClusterIP (balanced per request over web's pods).
    ViaService,
}

struct Paths {
    mesh: Mesh,
    /// The web pod addressed directly and by pod IP.
    pod: String,
    pods: Vec<String>,
    app_addr: SocketAddr,
    direct: SocketAddr,
    via_pod: SocketAddr,
    via_service: SocketAddr,
}

impl Paths {
    async fn start() -> Paths {
        let mut mesh = Mesh::start(STRICT).await;
        let pods = mesh.pods_of("web");
        let pod = pods[0].clone();
        let app_addr = SocketAddr::new(mesh.pod_ip(&pod), 8080);
        let direct = mesh.apps[&app_addr].local_addr();
        let via_pod = mesh.via_sidecar("client", app_addr).await;
        let via_service = mesh.via_sidecar("client", mesh.service("web", 80)).await;
        Paths { mesh, pod, pods, app_addr, direct, via_pod, via_service }
    }

    fn app(&self) -> &Echo {
        &self.mesh.apps[&self.app_addr]
    }

    /// Runs `case` on every path and asserts the meshed paths observed what the direct one did. Returns the direct
    /// observation for the case's own absolute checks.
    async fn same<T, F, Fut>(&self, what: &str, case: F) -> T
    where
        T: Observation + Clone,
        F: Fn(SocketAddr, Path) -> Fut,
        Fut: Future<Output = T>,
    {
        // Shown with a failure: which case and path were running.
        println!("case: {what}");
        let direct = within(&format!("{what} (direct)"), case(self.direct, Path::Direct)).await;
        println!("case: {what}: direct done");
        let via_pod = within(&format!("{what} (via pod IP)"), case(self.via_pod, Path::ViaPod)).await;
        assert_eq!(via_pod, direct, "{what}: through the sidecars to the pod IP, left; directly, right");
        println!("case: {what}: via pod IP done");
        let mut via_service = within(&format!("{what} (via Service)"), case(self.via_service, Path::ViaService)).await;
        via_service.any_pod(&self.pods);
        let mut expected = direct.clone();
        expected.any_pod(&self.pods);
        assert_eq!(via_service, expected, "{what}: through the sidecars to the Service, left; directly, right");
        direct
    }

    /// Every request that crossed the mesh did so over mTLS from the client's identity, and was answered `ok`.
    fn assert_mtls(&self) {
        let inbound: Vec<_> = self.pods.iter().flat_map(|p| self.mesh.log(p)).collect();
        assert!(!inbound.is_empty(), "nothing reached the web pods' sidecars");
        for r in &inbound {
            assert_eq!(r.direction, Direction::Inbound);
            assert_eq!(r.peer_identity.as_deref(), Some(CLIENT_ID), "{r:?}");
            assert_eq!(r.reason, podmesh_route::ReasonCode::Ok, "{r:?}");
        }
        for r in self.mesh.log("client") {
            assert_eq!(r.reason, podmesh_route::ReasonCode::Ok, "{r:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------------------------

type Body = BoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn empty() -> Body {
    full(Bytes::new())
}

/// A body of unknown length (HTTP/1.1 sends it chunked), produced a piece at a time, then optional trailers.
struct Streamed(mpsc::Receiver<Frame<Bytes>>);

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|f| f.map(Ok))
    }
}

fn streamed(pieces: Vec<Bytes>, trailers: Option<HeaderMap>) -> Body {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for p in pieces {
            if tx.send(Frame::data(p)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(t) = trailers {
            let _ = tx.send(Frame::trailers(t)).await;
        }
    });
    Streamed(rx).boxed()
}

async fn h1_conn(addr: SocketAddr) -> (http1::SendRequest<Body>, SocketAddr) {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (sender, conn) = within("h1 handshake", http1::handshake(TokioIo::new(stream))).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    (sender, local)
}

async fn h2_conn(addr: SocketAddr) -> http2::SendRequest<Body> {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (sender, conn) =
        within("h2 handshake", http2::handshake(TokioExecutor::new(), TokioIo::new(stream))).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/1.1 request: origin-form target, `Host: web.shop` first, then `headers` in order.
fn req1(method: &str, target: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(target).header("host", HOST);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).unwrap()
}

/// An HTTP/2 request: `:authority` web.shop, `headers` in order.
fn req2(method: &str, path: &str, headers: &[(&str, &str)], body: Body) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(format!("http://{HOST}{path}")).version(Version::HTTP_2);
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(body).unwrap()
}

async fn observe(resp: Response<Incoming>) -> Seen {
    let status = resp.status().as_u16();
    let headers = header_list(resp.headers());
    let collected = within("response body", resp.into_body().collect()).await.unwrap();
    let trailers = collected.trailers().map(header_list).unwrap_or_default();
    Seen::new(status, headers, collected.to_bytes(), trailers)
}

async fn send1(sender: &mut http1::SendRequest<Body>, req: Request<Body>) -> Seen {
    within("h1 ready", sender.ready()).await.unwrap();
    let resp = within("h1 response", sender.send_request(req)).await.unwrap();
    observe(resp).await
}

async fn send2(sender: &mut http2::SendRequest<Body>, req: Request<Body>) -> Seen {
    within("h2 ready", sender.ready()).await.unwrap();
    let resp = within("h2 response", sender.send_request(req)).await.unwrap();
    observe(resp).await
}

/// One request on a new HTTP/1.1 connection.
async fn once1(addr: SocketAddr, req: Request<Body>) -> Seen {
    send1(&mut h1_conn(addr).await.0, req).await
}

/// One request on a new h2c connection.
async fn once2(addr: SocketAddr, req: Request<Body>) -> Seen {
    send2(&mut h2_conn(addr).await, req).await
}

/// A raw HTTP/1.1 connection, for byte-level control.
struct Raw {
    s: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw { s: within("connect", TcpStream::connect(addr)).await.unwrap(), buf: BytesMut::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        within("write", self.s.write_all(bytes)).await.unwrap();
    }

    /// Reads more into the buffer; false at end of stream.
    async fn fill(&mut self) -> bool {
        within("read", self.s.read_buf(&mut self.buf)).await.unwrap() > 0
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i + 2);
                return String::from_utf8_lossy(&line[..i]).into_owned();
            }
            assert!(self.fill().await, "the connection ended mid-line: {:?}", String::from_utf8_lossy(&self.buf));
        }
    }

    async fn exact(&mut self, n: usize) -> Bytes {
        while self.buf.len() < n {
            assert!(self.fill().await, "the connection ended {} bytes short", n - self.buf.len());
        }
        self.buf.split_to(n).freeze()
    }

    /// A response head: status and headers in order.
    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        assert_eq!(parts.next(), Some("HTTP/1.1"), "{status_line}");
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{status_line}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return (status, headers);
            }
            let (n, v) = line.split_once(':').unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }

    /// A whole response (final, or the interim one it reads first); `head_request` when it answers a HEAD.
    async fn response(&mut self, head_request: bool) -> Seen {
        let (status, headers) = self.head().await;
        let get = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut trailers = Vec::new();
        let body = if head_request || status < 200 || status == 204 || status == 304 {
            Bytes::new()
        } else if get("transfer-encoding").is_some_and(|te| te.to_ascii_lowercase().ends_with("chunked")) {
            let mut body = BytesMut::new();
            loop {
                let size_line = self.line().await;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).unwrap();
                if size == 0 {
                    loop {
                        let t = self.line().await;
                        if t.is_empty() {
                            break;
                        }
                        let (n, v) = t.split_once(':').unwrap();
                        trailers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                    break;
                }
                body.extend_from_slice(&self.exact(size).await);
                assert_eq!(self.line().await, "", "a chunk ends with CRLF");
            }
            body.freeze()
        } else if let Some(n) = get("content-length") {
            self.exact(n.parse().unwrap()).await
        } else {
            // Delimited by the end of the connection.
            while self.fill().await {}
            self.buf.split().freeze()
        };
        Seen::new(status, headers, body, trailers)
    }

    /// The client is done: it closes its side and reads how the connection ends ("closed in order" directly: the
    /// server answers the FIN with its own, not a reset).
    async fn finish(mut self) -> String {
        within("shutdown", self.s.shutdown()).await.unwrap();
        match within("the end of the connection", self.s.read_buf(&mut self.buf)).await {
            Ok(0) => "closed in order".to_string(),
            Ok(_) => format!("unexpected bytes {:?}", String::from_utf8_lossy(&self.buf)),
            Err(e) => format!("{:?}", e.kind()),
        }
    }

    /// Whether the server has closed the connection, and how (within a short wait: an idle one is "open").
    async fn state(&mut self) -> &'static str {
        match tokio::time::timeout(Duration::from_millis(300), self.s.read_buf(&mut self.buf)).await {
            Err(_) => "open",
            Ok(Ok(0)) => "closed in order",
            Ok(Ok(_)) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&self.buf)),
            Ok(Err(_)) => "reset",
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Cases
// ---------------------------------------------------------------------------------------------------------------

/// End-to-end headers in an order the echo reports back, one of them repeated.
const HEADERS: &[(&str, &str)] = &[
    ("x-first", "1"),
    ("accept", "*/*"),
    ("user-agent", "transparency/1"),
    ("x-multi", "a"),
    ("x-multi", "b"),
    ("authorization", "Bearer abc"),
    ("cookie", "a=1; b=2"),
    ("x-last", "z"),
];

const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];

fn with_body(method: &str) -> Option<&'static str> {
    matches!(method, "POST" | "PUT" | "PATCH" | "DELETE").then_some("{\"hello\":\"world\"}")
}

#[tokio::test]
async fn methods_over_http1() {
    let p = Paths::start().await;
    for &method in METHODS {
        let seen = p
            .same(&format!("{method} over HTTP/1.1"), |addr, _| async move {
                let mut headers = HEADERS.to_vec();
                let body = match with_body(method) {
                    Some(b) => {
                        headers.push(("content-type", "application/json; charset=utf-8"));
                        full(b)
                    }
                    None => empty(),
                };
                let mut seen = once1(addr, req1(method, "/things/1?x=1", &headers, body)).await;
                if method == "HEAD" {
                    // The length of the JSON a GET would carry (it has the peer in it): checked, not compared.
                    let len = seen.header("content-length").map(str::to_string);
                    assert!(len.is_some_and(|l| l.parse::<usize>().unwrap() > 100), "{seen:?}");
                    seen.headers.retain(|(n, _)| n != "content-length");
                    seen = seen.note("HEAD had a content-length like the GET's");
                }
                seen
            })
            .await;
        assert_eq!(seen.status, 200);
        if method != "HEAD" {
            let r = seen.reply();
            assert_eq!((r.method.as_str(), r.path.as_str(), r.host.as_deref()), (method, "/things/1?x=1", Some(HOST)));
            assert_eq!(r.version, "HTTP/1.1");
            assert_eq!(r.body_bytes, with_body(method).map_or(0, |b| b.len() as u64));
        }
    }
    // The asterisk form (OPTIONS * HTTP/1.1), passed on as it is.
    let seen =
        p.same("OPTIONS *", |addr, _| async move { once1(addr, req1("OPTIONS", "*", HEADERS, empty())).await }).await;
    assert_eq!((seen.status, seen.reply().path.as_str()), (200, "*"));
    p.assert_mtls();
}

#[tokio::test]
async fn methods_over_http2() {
    let p = Paths::start().await;
    // HEAD over h2c is `head_over_http2`, below.
    for &method in METHODS.iter().filter(|&&m| m != "HEAD") {
        let seen = p
            .same(&format!("{method} over h2c"), |addr, _| async move {
                let body = with_body(method).map_or_else(empty, full);
                once2(addr, req2(method, "/things/2?y=2", HEADERS, body)).await
            })
            .await;
        assert_eq!(seen.status, 200);
        let r = seen.reply();
        assert_eq!((r.method.as_str(), r.path.as_str(), r.host.as_deref()), (method, "/things/2?y=2", Some(HOST)));
        assert_eq!(r.version, "HTTP/2.0");
    }
    p.assert_mtls();
}

/// HEAD over h2c: the GET's headers, its content-length included, and no body (RFC 9110 §9.3.2), directly and
/// through the mesh.
#[tokio::test]
async fn head_over_http2() {
    let p = Paths::start().await;
    let seen = p
        .same("HEAD over h2c", |addr, _| async move {
            let mut seen = once2(addr, req2("HEAD", "/things/2?y=2", HEADERS, empty())).await;
            // The length of the JSON a GET would carry (it has the peer in it): checked, not compared.
            let len = seen.header("content-length").map(str::to_string);
            assert!(len.is_some_and(|l| l.parse::<usize>().unwrap() > 100), "{seen:?}");
            seen.headers.retain(|(n, _)| n != "content-length");
            seen
        })
        .await;
    assert_eq!((seen.status, seen.body.len()), (200, 0));
    p.assert_mtls();
}

fn pattern(n: usize, seed: u8) -> Bytes {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 10) as u8).collect::<Vec<u8>>().into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5_mb_body_is_echoed_byte_for_byte() {
    let p = Paths::start().await;
    let body = pattern(5 * 1024 * 1024, 7);
    let headers = [("content-type", "application/octet-stream")];
    let seen = p
        .same("5 MB POST /echo over HTTP/1.1", |addr, _| {
            let body = body.clone();
            async move { once1(addr, req1("POST", "/echo", &headers, full(body))).await }
        })
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen.body == body, "the echoed body differs from the one sent");
    assert_eq!(seen.header("content-type"), Some("application/octet-stream"));
    let seen = p
        .same("5 MB POST /echo over h2c", |addr, _| {
            let body = body.clone();
            async move { once2(addr, req2("POST", "/echo", &headers, full(body))).await }
        })
        .await;
    assert!(seen.body == body, "the echoed body differs from the one sent (h2)");
    p.assert_mtls();
}

fn pieces(seed: u8) -> Vec<Bytes> {
    // Odd sizes, from 1 byte to more than a TLS record and more than hyper's read buffer.
    [1, 17, 4096, 16_385, 3, 70_000, 250, 1, 131_072, 999].iter().map(|&n| pattern(n, seed)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_streamed_in_pieces_is_echoed_byte_for_byte() {
    let p = Paths::start().await;
    let whole: Bytes = pieces(3).concat().into();
    let headers = [("content-type", "application/x-pieces"), ("x-after", "1")];
    let seen = p
        .same("chunked POST /echo", |addr, _| async move {
            once1(addr, req1("POST", "/echo", &headers, streamed(pieces(3), None))).await
        })
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen.body == whole, "the echoed body differs from the one sent");
    // The application's view of a chunked request: the framing header where the client put it, the bytes counted.
    let seen = p
        .same("chunked POST / (the application's view)", |addr, _| async move {
            once1(addr, req1("POST", "/upload", &headers, streamed(pieces(3), None))).await
        })
        .await;
    let r = seen.reply();
    assert_eq!(r.body_bytes, whole.len() as u64);
    assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{r:?}");
    assert_eq!(r.header("content-length"), None);
    p.assert_mtls();
}

/// A raw chunked request whose `Transfer-Encoding` is not the last header, on methods that rarely carry a body.
#[tokio::test]
async fn a_raw_chunked_request_keeps_its_body_and_its_header_order() {
    let p = Paths::start().await;
    for method in ["POST", "GET", "DELETE"] {
        let seen = p
            .same(&format!("raw chunked {method}"), |addr, _| async move {
                let mut c = Raw::connect(addr).await;
                let head = format!(
                    "{method} /raw HTTP/1.1\r\nHost: {HOST}\r\nX-One: 1\r\nTransfer-Encoding: chunked\r\nX-Two: 2\r\n\
                     X-Three: 3\r\n\r\n"
                );
                c.send(head.as_bytes()).await;
                c.send(b"5\r\nhello\r\n").await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                c.send(b"7\r\n, world\r\n0\r\n\r\n").await;
                let seen = c.response(false).await;
                seen.note(c.finish().await)
            })
            .await;
        let r = seen.reply();
        assert_eq!(r.body_bytes, 12, "{method}: the body reached the application");
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "x-one", "transfer-encoding", "x-two", "x-three"], "{method}");
    }
    p.assert_mtls();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_from_bytes() {
    let p = Paths::start().await;
    for n in [0usize, 1, 65_535, 65_537, 3 * 1024 * 1024 + 5] {
        let seen = p
            .same(&format!("GET /bytes/{n} over HTTP/1.1"), |addr, _| async move {
                once1(addr, req1("GET", &format!("/bytes/{n}"), &[], empty())).await
            })
            .await;
        assert_eq!(seen.status, 200);
        assert_eq!(seen.body.len(), n);
        assert!(seen.body.iter().enumerate().all(|(i, &b)| b == b'a' + (i % 26) as u8), "/bytes/{n} pattern");
        assert_eq!(seen.header("content-length"), Some(n.to_string().as_str()));
        let seen = p
            .same(&format!("GET /bytes/{n} over h2c"), |addr, _| async move {
                once2(addr, req2("GET", &format!("/bytes/{n}"), &[], empty())).await
            })
            .await;
        assert_eq!(seen.body.len(), n);
    }
    p.assert_mtls();
}

fn trailers() -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("x-checksum", HeaderValue::from_static("abc123"));
    t.append("x-multi-trailer", HeaderValue::from_static("one"));
    t.append("x-multi-trailer", HeaderValue::from_static("two"));
    t.insert("grpc-status", HeaderValue::from_static("0"));
    t
}

fn trailer_list() -> Vec<(String, String)> {
    header_list(&trailers())
}

#[tokio::test]
async fn trailers_over_http2() {
    let p = Paths::start().await;
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let seen = p
        .same("h2 POST /echo with trailers", |addr, _| async move {
            once2(addr, req2("POST", "/echo", &headers, streamed(pieces(9), Some(trailers())))).await
        })
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen.body == pieces(9).concat(), "the echoed body differs from the one sent");
    assert_eq!(seen.trailers, trailer_list());
    p.assert_mtls();
}

#[tokio::test]
async fn trailers_over_http1() {
    let p = Paths::start().await;
    // Announced in `Trailer`, and `TE: trailers` says the client takes response trailers; RFC 9110 §10.1.4 has
    // the sender of TE also name it in `Connection`, so both ways are tried.
    let announce = ("trailer", "x-checksum, x-multi-trailer, grpc-status");
    let plain: &[(&str, &str)] = &[("content-type", "text/plain"), ("te", "trailers"), announce];
    let with_connection: &[(&str, &str)] =
        &[("content-type", "text/plain"), ("connection", "TE"), ("te", "trailers"), announce];
    for headers in [plain, with_connection] {
        let seen = p
            .same(&format!("h1 chunked POST /echo with trailers, {headers:?}"), |addr, _| async move {
                once1(addr, req1("POST", "/echo", headers, streamed(pieces(5), Some(trailers())))).await
            })
            .await;
        assert_eq!(seen.status, 200);
        assert!(seen.body == pieces(5).concat(), "the echoed body differs from the one sent");
        assert_eq!(seen.trailers, trailer_list());
    }
    p.assert_mtls();
}

#[tokio::test]
async fn http2_prior_knowledge_end_to_end() {
    let p = Paths::start().await;
    // Many concurrent streams on one client connection; each answer is the application's own, over HTTP/2.
    let seen = p
        .same("20 concurrent h2c streams on one connection", |addr, _| async move {
            let conn = h2_conn(addr).await;
            let mut tasks = Vec::new();
            for i in 0..20 {
                let mut conn = conn.clone();
                tasks.push(tokio::spawn(async move {
                    let path = format!("/stream/{i}?n={}", i % 3);
                    let body = if i % 2 == 0 { full(format!("body {i}")) } else { empty() };
                    send2(&mut conn, req2("POST", &path, &[("x-stream", &i.to_string())], body)).await
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(within("h2 stream", t).await.unwrap());
            }
            all
        })
        .await;
    for (i, s) in seen.iter().enumerate() {
        let r = s.reply();
        assert_eq!((r.version.as_str(), r.path.clone()), ("HTTP/2.0", format!("/stream/{i}?n={}", i % 3)));
        assert_eq!(r.header("x-stream"), Some(i.to_string().as_str()));
    }
    // Through the Service, the client's sidecar parsed them as HTTP/2, all on the application's one connection.
    let web = p.mesh.service("web", 80);
    let routed: Vec<_> = p.mesh.log("client").into_iter().filter(|r| r.dst == web).collect();
    assert_eq!(routed.len(), 20);
    assert!(routed.iter().all(|r| r.protocol == "http/2" && r.src == routed[0].src), "{routed:?}");
    // To the pod IP, the client's sidecar carries the connection as it is (R3.3); the pod's sidecar saw HTTP/2 too.
    let inbound = p.mesh.log(&p.pod);
    assert!(inbound.iter().all(|r| r.protocol == "http/2"), "{inbound:?}");
    p.assert_mtls();
}

#[tokio::test]
async fn websocket_upgrade_then_raw_bytes_both_ways() {
    let p = Paths::start().await;
    let big = pattern(300_000, 11);
    let seen = p
        .same("GET /ws upgrade", |addr, _| {
            let big = big.clone();
            async move {
                let mut c = Raw::connect(addr).await;
                c.send(
                    format!(
                        "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await;
                let mut seen = c.response(false).await;
                assert_eq!(seen.status, 101, "{seen:?}");
                // Small messages, each echoed before the next is sent.
                for msg in [&b"hello"[..], b"\x00\x01\x02binary\xff", b"x"] {
                    c.send(msg).await;
                    assert_eq!(&c.exact(msg.len()).await[..], msg);
                }
                // A large one, written while it is read back.
                let Raw { s, buf } = c;
                assert!(buf.is_empty());
                let (mut rd, mut wr) = s.into_split();
                let writer = tokio::spawn(async move {
                    wr.write_all(&big).await.unwrap();
                    // Half-close: the echo answers the end of the stream with its own.
                    wr.shutdown().await.unwrap();
                    wr
                });
                let mut back = Vec::new();
                within("echoed bytes until EOF", rd.read_to_end(&mut back)).await.unwrap();
                let _wr = within("writer", writer).await.unwrap();
                seen.body = back.into();
                seen.note("EOF after the echo")
            }
        })
        .await;
    assert_eq!(seen.header("upgrade"), Some("websocket"));
    assert!(seen.body == big, "the large message came back intact");
    p.assert_mtls();
}

const EXPECT_BODY_LEN: usize = 200_000;

#[tokio::test]
async fn expect_100_continue_with_a_raw_client() {
    let p = Paths::start().await;
    let body = pattern(EXPECT_BODY_LEN, 1);
    for target in ["/echo", "/upload"] {
        let seen = p
            .same(&format!("Expect: 100-continue POST {target}"), |addr, _| {
                let body = body.clone();
                async move {
                    let mut c = Raw::connect(addr).await;
                    c.send(
                        format!(
                            "POST {target} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n\
                             Content-Length: {}\r\nExpect: 100-continue\r\nX-After: 1\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
                    // Nothing of the body is sent before the interim response.
                    let interim = c.response(false).await;
                    assert_eq!(interim.status, 100, "{interim:?}");
                    c.send(&body).await;
                    let last = c.response(false).await;
                    vec![interim, last.note(c.finish().await)]
                }
            })
            .await;
        assert_eq!(seen[1].status, 200);
        if target == "/echo" {
            assert!(seen[1].body == body);
        } else {
            let r = seen[1].reply();
            assert_eq!(r.body_bytes, EXPECT_BODY_LEN as u64);
            assert_eq!(r.header("expect"), Some("100-continue"));
        }
    }
    p.assert_mtls();
}

#[tokio::test]
async fn expect_100_continue_with_curl() {
    if std::process::Command::new("curl").arg("--version").output().is_err() {
        println!("SKIPPED expect_100_continue_with_curl: curl is not installed");
        return;
    }
    let p = Paths::start().await;
    let dir = std::env::temp_dir().join(format!("podmesh-transparency-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("body");
    let body = pattern(EXPECT_BODY_LEN, 2);
    std::fs::write(&file, &body).unwrap();
    let seen = p
        .same("curl -H 'Expect: 100-continue' --data-binary @file", |addr, path| {
            let (file, out) = (file.clone(), dir.join(format!("out-{path:?}")));
            async move {
                let run = tokio::task::spawn_blocking(move || {
                    let o = std::process::Command::new("curl")
                        .args(["-sS", "-v", "--max-time", "10", "-H", "Expect: 100-continue", "-H"])
                        .arg(format!("Host: {HOST}"))
                        .args(["-H", "Content-Type: application/octet-stream", "--data-binary"])
                        .arg(format!("@{}", file.display()))
                        .arg("-o")
                        .arg(&out)
                        .args(["-w", "%{http_code}"])
                        .arg(format!("http://{addr}/echo"))
                        .output()
                        .unwrap();
                    (o, std::fs::read(&out).unwrap_or_default())
                });
                let (o, got) = within("curl", run).await.unwrap();
                let stderr = String::from_utf8_lossy(&o.stderr);
                assert!(o.status.success(), "curl failed: {stderr}");
                let code: u16 = String::from_utf8_lossy(&o.stdout).parse().unwrap();
                // curl waits up to 1 s for the 100 and then sends anyway ("Done waiting for 100-continue"): the
                // interim response must have come, and before that.
                assert!(stderr.contains("< HTTP/1.1 100 Continue"), "no 100 Continue: {stderr}");
                assert!(!stderr.contains("Done waiting for 100-continue"), "curl gave up waiting: {stderr}");
                Seen::new(code, vec![], got.into(), vec![]).note("100 Continue before the body")
            }
        })
        .await;
    assert_eq!(seen.status, 200);
    assert!(seen.body == body);
    let _ = std::fs::remove_dir_all(&dir);
    p.assert_mtls();
}

#[tokio::test]
async fn keep_alive_many_requests_on_one_connection() {
    const N: usize = 30;
    let p = Paths::start().await;
    let seen = p
        .same("30 requests on one HTTP/1.1 connection", |addr, path| {
            let p = &p;
            async move {
                let (app, log) = (p.app(), if path == Path::Direct { None } else { Some(&p.mesh) });
                let before = app.requests();
                let (mut conn, local) = h1_conn(addr).await;
                let mut all = Vec::new();
                for i in 0..N {
                    let body = if i % 2 == 0 { empty() } else { full(vec![b'k'; i * 100]) };
                    let method = if i % 2 == 0 { "GET" } else { "POST" };
                    all.push(
                        send1(&mut conn, req1(method, &format!("/ka/{i}"), &[("x-i", &i.to_string())], body)).await,
                    );
                }
                // The connection is still open and usable.
                all.push(send1(&mut conn, req1("GET", "/ka/last", &[], empty())).await);
                if path != Path::ViaService {
                    assert_eq!(app.requests() - before, N as u64 + 1, "the application saw every request");
                }
                match (path, log) {
                    (Path::ViaService, Some(mesh)) => {
                        // The client's sidecar served every request on the application's one connection.
                        let mine = mesh.log("client").into_iter().filter(|r| r.src == local).count();
                        assert_eq!(mine, N + 1, "every request on the client's one connection");
                    }
                    (Path::ViaPod, Some(mesh)) => {
                        // To a pod IP the client's sidecar carries the connection as it is (R3.3): the pod's
                        // sidecar saw all of them arrive on one connection from it.
                        let inbound = mesh.log(&p.pod);
                        let last: Vec<_> = inbound.iter().rev().take(N + 1).collect();
                        assert_eq!(last.len(), N + 1);
                        assert!(last.iter().all(|r| r.src == last[0].src), "{last:?}");
                    }
                    _ => {}
                }
                all
            }
        })
        .await;
    for (i, s) in seen.iter().take(N).enumerate() {
        assert_eq!(s.reply().path, format!("/ka/{i}"));
        assert_eq!(s.header("connection"), None);
    }
    p.assert_mtls();
}

/// Hop-by-hop headers RFC 9110 §7.6.1 lets (in fact requires) an intermediary to drop: the connection-specific
/// `Connection` and `Keep-Alive`, and any header `Connection` names. They are removed from what the application saw
/// before comparing; every other header must arrive, in order.
const HOP_BY_HOP: &[&str] = &["connection", "keep-alive", "x-hop"];

fn end_to_end(mut s: Seen) -> Seen {
    if let Some(r) = &mut s.reply {
        r.headers.retain(|(n, _)| !HOP_BY_HOP.contains(&n.as_str()));
    }
    s
}

#[tokio::test]
async fn keep_alive_pipelined_with_hop_by_hop_headers() {
    let p = Paths::start().await;
    let seen = p
        .same("pipelined keep-alive requests with Connection headers", |addr, _| async move {
            let mut c = Raw::connect(addr).await;
            let mut all = Vec::new();
            // Sequential: each answered before the next is sent.
            let layouts = [
                "X-A: 1\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: timeout=5\r\nX-Hop: dropped\r\nX-B: 2\r\nX-C: 3",
                "X-A: 1\r\nConnection: keep-alive\r\nX-B: 2\r\nX-C: 3",
                "Connection: X-Hop\r\nX-A: 1\r\nX-Hop: dropped\r\nX-B: 2\r\nX-C: 3",
                "X-A: 1\r\nKeep-Alive: timeout=5\r\nX-B: 2\r\nX-C: 3\r\nConnection: keep-alive",
                "X-A: 1\r\nX-B: 2\r\nX-C: 3",
            ];
            for (i, layout) in layouts.iter().enumerate() {
                c.send(format!("GET /seq/{i} HTTP/1.1\r\nHost: {HOST}\r\n{layout}\r\n\r\n").as_bytes()).await;
                all.push(end_to_end(c.response(false).await));
            }
            // Pipelined: five requests in one write, answered in order.
            let mut burst = String::new();
            for i in 0..5 {
                burst.push_str(&format!("GET /pipe/{i} HTTP/1.1\r\nHost: {HOST}\r\nX-Z: {i}\r\nX-Y: y\r\n\r\n"));
            }
            c.send(burst.as_bytes()).await;
            for _ in 0..5 {
                all.push(end_to_end(c.response(false).await));
            }
            all.push(Seen::new(0, vec![], Bytes::new(), vec![]).note(c.state().await));
            all.push(Seen::new(0, vec![], Bytes::new(), vec![]).note(c.finish().await));
            all
        })
        .await;
    for s in &seen[..5] {
        let names: Vec<&str> = s.reply().headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "x-a", "x-b", "x-c"]);
    }
    assert_eq!(seen[seen.len() - 2].notes, ["open"]);
    assert_eq!(seen[seen.len() - 1].notes, ["closed in order"]);
    p.assert_mtls();
}

#[tokio::test]
async fn the_applications_own_error_statuses_pass_through() {
    let p = Paths::start().await;
    for code in [503u16, 500, 404, 429, 204, 302] {
        let seen = p
            .same(&format!("GET /status/{code}"), |addr, _| async move {
                once1(addr, req1("GET", &format!("/status/{code}"), &[], empty())).await
            })
            .await;
        assert_eq!(seen.status, code);
        assert!(seen.header("x-podmesh-reason").is_none(), "{seen:?}");
        assert!(seen.header("x-echo-pod").is_some(), "the application's own answer: {seen:?}");
        let seen = p
            .same(&format!("h2 GET /status/{code}"), |addr, _| async move {
                once2(addr, req2("GET", &format!("/status/{code}"), &[], empty())).await
            })
            .await;
        assert_eq!(seen.status, code);
    }
    p.assert_mtls();
}

#[tokio::test]
async fn close_after_response() {
    let p = Paths::start().await;
    let seen = p
        .same("GET /close over HTTP/1.1", |addr, path| async move {
            let mut c = Raw::connect(addr).await;
            c.send(format!("GET /close HTTP/1.1\r\nHost: {HOST}\r\nX-A: 1\r\n\r\n").as_bytes()).await;
            let mut seen = c.response(false).await;
            let state = c.state().await;
            // `Connection: close` is hop-by-hop (RFC 9110 §7.6.1): the application closes its connection (to the
            // server sidecar); whether the client's connection to its own sidecar closes too is the sidecar's
            // choice (today it passes the header on, and closes). Not compared; but never with a reset.
            seen.headers.retain(|(n, _)| n != "connection");
            if path == Path::Direct {
                assert_eq!(state, "closed in order", "the application closes after /close");
            } else {
                assert!(["closed in order", "open"].contains(&state), "{path:?}: {state}");
            }
            // A new connection is served as before (the mesh replaced the pooled connection the app closed).
            let mut next = once1(addr, req1("GET", "/after-close", &[], empty())).await;
            next.headers.retain(|(n, _)| n != "connection");
            vec![seen, next]
        })
        .await;
    assert_eq!(seen[0].reply().path, "/close");
    assert_eq!(seen[1].reply().path, "/after-close");
    let seen = p
        .same("GET /close over h2c", |addr, _| async move {
            let mut conn = h2_conn(addr).await;
            let first = send2(&mut conn, req2("GET", "/close", &[], empty())).await;
            // Directly the application sent GOAWAY; through the mesh, connection management is per hop (the
            // client's connection to its sidecar may stay open). Either way the next request is answered.
            let second = match tokio::time::timeout(Duration::from_secs(5), conn.ready()).await {
                Ok(Ok(())) => send2(&mut conn, req2("GET", "/after-close", &[], empty())).await,
                _ => once2(addr, req2("GET", "/after-close", &[], empty())).await,
            };
            vec![first, second]
        })
        .await;
    assert_eq!(seen[1].reply().path, "/after-close");
    p.assert_mtls();
}

#[tokio::test]
async fn a_slow_answer_is_still_answered() {
    let p = Paths::start().await;
    let seen = p
        .same("GET /slow/300", |addr, _| async move {
            let start = Instant::now();
            let seen = once1(addr, req1("GET", "/slow/300", &[("x-a", "1")], empty())).await;
            assert!(start.elapsed() >= Duration::from_millis(300));
            seen
        })
        .await;
    assert_eq!((seen.status, seen.reply().path.as_str()), (200, "/slow/300"));
    let seen = p
        .same("h2 GET /slow/300", |addr, _| async move { once2(addr, req2("GET", "/slow/300", &[], empty())).await })
        .await;
    assert_eq!(seen.status, 200);
    p.assert_mtls();
}

#[tokio::test]
async fn a_60_kb_header_value() {
    let p = Paths::start().await;
    let big: String = (0..60 * 1024).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let seen = p
        .same("a 60 KB header value over HTTP/1.1", |addr, _| {
            let big = big.clone();
            async move {
                once1(addr, req1("GET", "/big-header", &[("x-a", "1"), ("x-big", &big), ("x-z", "2")], empty())).await
            }
        })
        .await;
    assert_eq!(seen.status, 200);
    assert_eq!(seen.reply().header("x-big"), Some(big.as_str()));
    p.assert_mtls();
}

const TARGETS: &[&str] = &[
    "/a%20b/c%2Fd/%7Euser?x=1&y=%26z&empty=&q=a+b&q=c",
    "/%E2%9C%93/caf%C3%A9?utf8=%E2%9C%93&sp=%20",
    "//double//slash/?a=b=c",
    "/semi;param=1/x;y?%00=%ff",
    "/dot/./segments/../x?",
    "/UPPER/Case?Mixed=Case&MIXED=case",
    "/trailing/slash/",
    "/?only=query",
];

#[tokio::test]
async fn query_strings_and_percent_encoded_paths_are_unchanged() {
    let p = Paths::start().await;
    for &target in TARGETS {
        let seen = p
            .same(&format!("GET {target} over HTTP/1.1"), |addr, _| async move {
                once1(addr, req1("GET", target, &[], empty())).await
            })
            .await;
        assert_eq!(seen.reply().path, target);
        let seen = p
            .same(&format!("GET {target} over h2c"), |addr, _| async move {
                once2(addr, req2("GET", target, &[], empty())).await
            })
            .await;
        assert_eq!(seen.reply().path, target);
    }
    p.assert_mtls();
}

/// Bodies of nothing, framed three ways, and a header value that is not UTF-8.
#[tokio::test]
async fn empty_bodies_and_opaque_header_bytes() {
    let p = Paths::start().await;
    let requests: &[&[u8]] = &[
        b"POST /empty HTTP/1.1\r\nHost: web.shop\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n",
        b"POST /none HTTP/1.1\r\nHost: web.shop\r\nX-A: 1\r\n\r\n",
        b"PUT /last-chunk-only HTTP/1.1\r\nHost: web.shop\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n0\r\n\r\n",
        b"GET /latin HTTP/1.1\r\nHost: web.shop\r\nX-Latin: caf\xe9\r\nX-A: 1\r\n\r\n",
    ];
    for &request in requests {
        let what = String::from_utf8_lossy(request).lines().next().unwrap().to_string();
        let seen = p
            .same(&what, |addr, _| async move {
                let mut c = Raw::connect(addr).await;
                c.send(request).await;
                let seen = c.response(false).await;
                seen.note(c.finish().await)
            })
            .await;
        assert_eq!((seen.status, seen.reply().body_bytes), (200, 0), "{what}");
    }
    p.assert_mtls();
}

/// `curl --http2` on a plain-text URL asks to upgrade to h2c; the echo (like most servers) declines by answering in
/// HTTP/1.1, and the connection goes on. The upgrade request's hop-by-hop parts (`HTTP2-Settings`, named in
/// `Connection`) may be dropped on the way (RFC 9113 §3.2 makes it a connection-specific header).
#[tokio::test]
async fn a_declined_h2c_upgrade_is_answered_in_http1() {
    let p = Paths::start().await;
    let seen = p
        .same("GET / with Upgrade: h2c", |addr, _| async move {
            let mut c = Raw::connect(addr).await;
            c.send(
                format!(
                    "GET /h2c-please HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\
                     HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nX-A: 1\r\n\r\n"
                )
                .as_bytes(),
            )
            .await;
            let mut first = c.response(false).await;
            if let Some(r) = &mut first.reply {
                r.headers.retain(|(n, _)| !["connection", "http2-settings"].contains(&n.as_str()));
            }
            c.send(format!("GET /next HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await;
            let next = c.response(false).await;
            vec![first, next.note(c.finish().await)]
        })
        .await;
    assert_eq!(seen[0].status, 200);
    assert_eq!(seen[0].reply().header("upgrade"), Some("h2c"));
    assert_eq!(seen[1].reply().path, "/next");
    p.assert_mtls();
}
