#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The echo workload against real clients: hyper's HTTP/1.1 and HTTP/2 clients, raw sockets, and `curl` where it is
//! installed.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::{Command, Output};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST, TE, TRAILER, UPGRADE};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podmesh_testkit::echo::{Echo, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

type ReqBody = BoxBody<Bytes, Infallible>;

async fn within<F: Future>(what: &str, f: F) -> F::Output {
    timeout(WAIT, f).await.unwrap_or_else(|_| panic!("{what}: timed out"))
}

async fn echo(name: &str) -> Echo {
    Echo::start_on("127.0.0.1:0".parse().unwrap(), name).await.unwrap()
}

fn full(body: impl Into<Bytes>) -> ReqBody {
    Full::new(body.into()).boxed()
}

fn empty() -> ReqBody {
    full(Bytes::new())
}

/// A request body fed frame by frame from a channel (unknown length: chunked in HTTP/1.1).
struct ChannelBody(mpsc::Receiver<Frame<Bytes>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|frame| frame.map(Ok))
    }
}

fn channel_body() -> (mpsc::Sender<Frame<Bytes>>, ReqBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody(rx).boxed())
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// An HTTP/1.1 client connection (with upgrades) and the client's local address.
async fn h1(addr: SocketAddr) -> (hyper::client::conn::http1::SendRequest<ReqBody>, SocketAddr) {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let local = stream.local_addr().unwrap();
    let (send, conn) =
        within("h1 handshake", hyper::client::conn::http1::handshake(TokioIo::new(stream))).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    (send, local)
}

/// An HTTP/2 (prior knowledge) client connection and the task driving it, which ends when the connection closes.
async fn h2(addr: SocketAddr) -> (hyper::client::conn::http2::SendRequest<ReqBody>, JoinHandle<()>) {
    let stream = within("connect", TcpStream::connect(addr)).await.unwrap();
    let (send, conn) =
        within("h2 handshake", hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)))
            .await
            .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

async fn send1(
    send: &mut hyper::client::conn::http1::SendRequest<ReqBody>,
    req: Request<ReqBody>,
) -> Response<Incoming> {
    within("h1 ready", send.ready()).await.unwrap();
    within("h1 response", send.send_request(req)).await.unwrap()
}

async fn send2(
    send: &mut hyper::client::conn::http2::SendRequest<ReqBody>,
    req: Request<ReqBody>,
) -> Response<Incoming> {
    within("h2 ready", send.ready()).await.unwrap();
    within("h2 response", send.send_request(req)).await.unwrap()
}

async fn body_of(response: Response<Incoming>) -> Bytes {
    within("response body", response.into_body().collect()).await.unwrap().to_bytes()
}

async fn reply_of(response: Response<Incoming>) -> Reply {
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
    serde_json::from_slice(&body_of(response).await).unwrap()
}

fn pod(response: &Response<Incoming>) -> &str {
    response.headers().get("x-echo-pod").expect("x-echo-pod").to_str().unwrap()
}

/// Waits until `f` holds (bounded).
async fn eventually(what: &str, f: impl Fn() -> bool) {
    within(what, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

// ---- curl ----

/// Runs `curl -sS --max-time 15 ARGS`; `None` (with a note) when curl is not installed.
async fn curl(args: &[&str]) -> Option<Output> {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("note: curl is not on PATH; skipping this curl case (CI installs it)");
        return None;
    }
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let run =
        tokio::task::spawn_blocking(move || Command::new("curl").args(["-sS", "--max-time", "15"]).args(args).output());
    let output = within("curl", run).await.unwrap().unwrap();
    assert!(output.status.success(), "curl failed: {}", String::from_utf8_lossy(&output.stderr));
    Some(output)
}

/// Splits `curl -D -` output into its header blocks (interim responses first) and the body.
fn curl_response(stdout: &[u8]) -> (Vec<String>, Vec<u8>) {
    let mut rest = stdout;
    let mut heads = Vec::new();
    while rest.starts_with(b"HTTP/") {
        let end = rest.windows(4).position(|w| w == b"\r\n\r\n").expect("end of a header block");
        heads.push(String::from_utf8_lossy(&rest[..end]).to_ascii_lowercase());
        rest = &rest[end + 4..];
    }
    (heads, rest.to_vec())
}

// ---- HTTP: the default JSON answer ----

#[tokio::test]
async fn h1_json_describes_the_request() {
    let echo = echo("pod-a").await;
    let (mut send, local) = h1(echo.local_addr()).await;
    let req = Request::post("/some/path?x=1&y=%20")
        .header(HOST, "web.shop:8080")
        .header("x-first", "1")
        .header("x-bytes", HeaderValue::from_bytes(b"caf\xc3\xa9 \xff").unwrap())
        .header("x-first", "2")
        .body(full("twelve bytes"))
        .unwrap();
    let response = send1(&mut send, req).await;
    assert_eq!(pod(&response), "pod-a");
    let reply = reply_of(response).await;
    assert_eq!(reply.pod, "pod-a");
    assert_eq!(reply.method, "POST");
    assert_eq!(reply.path, "/some/path?x=1&y=%20");
    assert_eq!(reply.host.as_deref(), Some("web.shop:8080"));
    assert_eq!(reply.version, "HTTP/1.1");
    assert_eq!(reply.body_bytes, 12);
    assert_eq!(reply.peer, local.to_string());
    let names: Vec<&str> = reply.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["host", "x-first", "x-first", "x-bytes", "content-length"]);
    assert_eq!(reply.header("X-Bytes"), Some("café \u{fffd}"));
    assert_eq!(reply.headers[1].1, "1");
    assert_eq!(reply.headers[2].1, "2");
    assert_eq!(echo.requests(), 1);
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn h2_json_describes_the_request() {
    let echo = echo("pod-b").await;
    let (mut send, _driver) = h2(echo.local_addr()).await;
    let req = Request::get("http://reviews.shop:9080/r?q=1").header("x-test", "yes").body(empty()).unwrap();
    let response = send2(&mut send, req).await;
    assert_eq!(pod(&response), "pod-b");
    let reply = reply_of(response).await;
    assert_eq!(reply.pod, "pod-b");
    assert_eq!(reply.method, "GET");
    assert_eq!(reply.path, "/r?q=1");
    assert_eq!(reply.host.as_deref(), Some("reviews.shop:9080"));
    assert_eq!(reply.version, "HTTP/2.0");
    assert_eq!(reply.header("x-test"), Some("yes"));
    assert_eq!(reply.body_bytes, 0);
}

#[tokio::test]
async fn http10_without_host_has_null_host() {
    let echo = echo("pod-c").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    within("HTTP/1.0 answer", stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 200 OK\r\n"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let reply: Reply = serde_json::from_str(body).unwrap();
    assert_eq!(reply.version, "HTTP/1.0");
    assert_eq!(reply.host, None);
    assert_eq!(reply.path, "/old");
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["host"], serde_json::Value::Null);
}

#[tokio::test]
async fn curl_h1_and_h2c_json() {
    let echo = echo("pod-curl").await;
    let url = format!("http://{}/a/b?c=d", echo.local_addr());
    for (flag, version, status_line) in
        [("--http1.1", "HTTP/1.1", "http/1.1 200 ok"), ("--http2-prior-knowledge", "HTTP/2.0", "http/2 200")]
    {
        let Some(out) = curl(&[flag, "-D", "-", "-H", "x-test: one", &url]).await else { return };
        let (heads, body) = curl_response(&out.stdout);
        assert_eq!(heads.len(), 1, "{heads:?}");
        assert!(heads[0].starts_with(status_line), "{heads:?}");
        assert!(heads[0].contains("\r\nx-echo-pod: pod-curl"), "{heads:?}");
        assert!(heads[0].contains("\r\ncontent-type: application/json"), "{heads:?}");
        let reply: Reply = serde_json::from_slice(&body).unwrap();
        assert_eq!(reply.pod, "pod-curl");
        assert_eq!(reply.version, version);
        assert_eq!(reply.method, "GET");
        assert_eq!(reply.path, "/a/b?c=d");
        assert_eq!(reply.host, Some(echo.local_addr().to_string()));
        assert_eq!(reply.header("x-test"), Some("one"));
        assert!(reply.header("user-agent").unwrap().starts_with("curl/"));
    }
    assert_eq!(echo.connections(), 2);
    assert_eq!(echo.requests(), 2);
}

// ---- keep-alive ----

#[tokio::test]
async fn h1_keep_alive_serves_many_requests_on_one_connection() {
    let echo = echo("pod-ka").await;
    let (mut send, local) = h1(echo.local_addr()).await;
    for i in 0..5 {
        let req = Request::get(format!("/n/{i}")).header(HOST, "x").body(full(vec![b'z'; i])).unwrap();
        let reply = reply_of(send1(&mut send, req).await).await;
        assert_eq!(reply.path, format!("/n/{i}"));
        assert_eq!(reply.body_bytes, i as u64);
        assert_eq!(reply.peer, local.to_string());
    }
    // Endpoints that do not answer with JSON keep the connection too.
    for path in ["/status/404", "/bytes/10", "/echo"] {
        let response = send1(&mut send, Request::post(path).header(HOST, "x").body(full("abc")).unwrap()).await;
        body_of(response).await;
    }
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 8);
}

#[tokio::test]
async fn h2_streams_share_one_connection() {
    let echo = echo("pod-h2ka").await;
    let (send, _driver) = h2(echo.local_addr()).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let mut send = send.clone();
        tasks.push(tokio::spawn(async move {
            let req = Request::get(format!("http://x/slow/{}", 20 * (i % 3))).body(empty()).unwrap();
            reply_of(send2(&mut send, req).await).await
        }));
    }
    for task in tasks {
        assert_eq!(within("h2 stream", task).await.unwrap().version, "HTTP/2.0");
    }
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 8);
}

#[tokio::test]
async fn curl_reuses_its_connection() {
    let echo = echo("pod-reuse").await;
    let url = format!("http://{}/", echo.local_addr());
    let Some(_) = curl(&["-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", &url, &url, &url]).await else {
        return;
    };
    assert_eq!(echo.connections(), 1);
    assert_eq!(echo.requests(), 3);
}

// ---- /echo ----

async fn echo_5mb_h1(addr: SocketAddr) {
    let data = Bytes::from(pattern(5_000_000));
    let (mut send, _) = h1(addr).await;
    let req = Request::put("/echo")
        .header(HOST, "x")
        .header(CONTENT_TYPE, "application/x-test")
        .body(full(data.clone()))
        .unwrap();
    let response = send1(&mut send, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_TYPE], "application/x-test");
    assert_eq!(response.headers()[CONTENT_LENGTH], "5000000");
    let back = body_of(response).await;
    assert!(back == data, "echoed {} bytes, not the same", back.len());
}

#[tokio::test]
async fn echo_5mb_h1_and_h2() {
    let echo = echo("pod-e").await;
    echo_5mb_h1(echo.local_addr()).await;

    let data = Bytes::from(pattern(5_000_000));
    let (mut send, _driver) = h2(echo.local_addr()).await;
    let req = Request::post("http://x/echo").body(full(data.clone())).unwrap();
    let response = send2(&mut send, req).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(pod(&response), "pod-e");
    let back = body_of(response).await;
    assert!(back == data, "echoed {} bytes, not the same", back.len());
}

/// The first chunk comes back before the client has sent the second: nothing is buffered whole.
#[tokio::test]
async fn echo_streams_as_the_body_arrives() {
    let echo = echo("pod-stream").await;
    let (mut send1_, _) = h1(echo.local_addr()).await;
    let (mut send2_, _driver) = h2(echo.local_addr()).await;
    for h2 in [false, true] {
        let (tx, body) = channel_body();
        let response = if h2 {
            send2(&mut send2_, Request::post("http://x/echo").body(body).unwrap()).await
        } else {
            send1(&mut send1_, Request::post("/echo").header(HOST, "x").body(body).unwrap()).await
        };
        let mut incoming = response.into_body();
        for chunk in ["first chunk", "second chunk"] {
            tx.send(Frame::data(Bytes::from(chunk))).await.unwrap();
            let mut got = Vec::new();
            while got.len() < chunk.len() {
                let frame = within("echoed chunk", incoming.frame()).await.unwrap().unwrap();
                got.extend_from_slice(frame.data_ref().unwrap());
            }
            assert_eq!(got, chunk.as_bytes(), "h2={h2}");
        }
        drop(tx);
        let rest = within("end of echo", incoming.collect()).await.unwrap();
        assert!(rest.to_bytes().is_empty(), "h2={h2}");
    }
}

#[tokio::test]
async fn echo_returns_trailers() {
    let echo = echo("pod-t").await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc123"));

    // HTTP/2: always.
    let (mut send, _driver) = h2(echo.local_addr()).await;
    let (tx, body) = channel_body();
    tx.send(Frame::data(Bytes::from_static(b"payload"))).await.unwrap();
    tx.send(Frame::trailers(trailers.clone())).await.unwrap();
    drop(tx);
    let response = send2(&mut send, Request::post("http://x/echo").header(TE, "trailers").body(body).unwrap()).await;
    let collected = within("h2 echo", response.into_body().collect()).await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(collected.to_bytes(), "payload");

    // HTTP/1.1: chunked, announced in Trailer, and the client accepts them (TE: trailers).
    let (mut send, _) = h1(echo.local_addr()).await;
    let (tx, body) = channel_body();
    tx.send(Frame::data(Bytes::from_static(b"payload"))).await.unwrap();
    tx.send(Frame::trailers(trailers.clone())).await.unwrap();
    drop(tx);
    let req = Request::post("/echo")
        .header(HOST, "x")
        .header(TE, "trailers")
        .header(TRAILER, "x-checksum")
        .body(body)
        .unwrap();
    let response = send1(&mut send, req).await;
    assert_eq!(response.headers()[TRAILER], "x-checksum");
    let collected = within("h1 echo", response.into_body().collect()).await.unwrap();
    assert_eq!(collected.trailers(), Some(&trailers));
    assert_eq!(collected.to_bytes(), "payload");
}

#[tokio::test]
async fn curl_echo_5mb() {
    let echo = echo("pod-ce").await;
    let dir = std::env::temp_dir().join(format!("podmesh-testkit-echo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (input, output) = (dir.join("in"), dir.join("out"));
    let data = pattern(5_000_000);
    std::fs::write(&input, &data).unwrap();
    let url = format!("http://{}/echo", echo.local_addr());
    let upload = format!("@{}", input.display());
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let out = output.to_str().unwrap();
        let Some(_) = curl(&[flag, "--data-binary", &upload, "-H", "Expect:", "-o", out, &url]).await else { break };
        let back = std::fs::read(&output).unwrap();
        assert!(back == data, "{flag}: echoed {} bytes, not the same", back.len());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- /status, /bytes, /slow ----

#[tokio::test]
async fn status_bytes_and_slow() {
    let echo = echo("pod-s").await;
    let (mut send, _) = h1(echo.local_addr()).await;

    let response = send1(&mut send, Request::get("/status/503").header(HOST, "x").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(pod(&response), "pod-s");
    assert_eq!(body_of(response).await, "503 Service Unavailable\n");

    let response = send1(&mut send, Request::get("/status/204").header(HOST, "x").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(body_of(response).await.is_empty());

    for bad in ["/status/abc", "/status/100", "/status/1000", "/bytes/67108865", "/bytes/-1", "/slow/30001"] {
        let response = send1(&mut send, Request::get(bad).header(HOST, "x").body(empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        body_of(response).await;
    }

    let response = send1(&mut send, Request::get("/bytes/1000000").header(HOST, "x").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[CONTENT_LENGTH], "1000000");
    assert_eq!(body_of(response).await, pattern(1_000_000));

    let response = send1(&mut send, Request::get("/bytes/0").header(HOST, "x").body(empty()).unwrap()).await;
    assert!(body_of(response).await.is_empty());

    let started = Instant::now();
    let response = send1(&mut send, Request::get("/slow/150").header(HOST, "x").body(empty()).unwrap()).await;
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(reply_of(response).await.path, "/slow/150");
    assert_eq!(echo.connections(), 1);
}

#[tokio::test]
async fn curl_status_and_bytes() {
    let echo = echo("pod-cs").await;
    let base = format!("http://{}", echo.local_addr());
    let Some(out) = curl(&["-D", "-", &format!("{base}/status/503")]).await else { return };
    let (heads, body) = curl_response(&out.stdout);
    assert!(heads[0].starts_with("http/1.1 503"), "{heads:?}");
    assert!(heads[0].contains("\r\nx-echo-pod: pod-cs"), "{heads:?}");
    assert_eq!(body, b"503 Service Unavailable\n");

    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let out = curl(&[flag, "-o", "/dev/null", "-w", "%{size_download}", &format!("{base}/bytes/1000000")]).await;
        assert_eq!(out.unwrap().stdout, b"1000000", "{flag}");
    }
}

// ---- Expect: 100-continue ----

/// hyper sends the 100 when the application reads the body, for every endpoint that reads one.
#[tokio::test]
async fn expect_100_continue_raw() {
    let echo = echo("pod-100").await;
    for (path, expected) in [("/up", "\"body_bytes\":5"), ("/echo", "\r\n\r\nhello"), ("/status/201", "201 Created")] {
        let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut interim = [0u8; 25];
        within("100 Continue", stream.read_exact(&mut interim)).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n", "{path}");
        stream.write_all(b"hello").await.unwrap();
        let mut answer = Vec::new();
        within("final answer", stream.read_to_end(&mut answer)).await.unwrap();
        let answer = String::from_utf8(answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 20"), "{path}: {answer}");
        assert!(answer.contains(expected), "{path}: {answer}");
    }
}

#[tokio::test]
async fn curl_expect_100_continue() {
    let echo = echo("pod-c100").await;
    for path in ["/up", "/echo"] {
        let url = format!("http://{}{path}", echo.local_addr());
        let started = Instant::now();
        // curl waits up to --expect100-timeout for the 100 before sending anyway: a quick answer shows it came.
        let args = ["--http1.1", "-D", "-", "-H", "Expect: 100-continue", "--expect100-timeout", "8", "--data-binary"];
        let Some(out) = curl(&[&args[..], &["some body bytes", &url]].concat()).await else { return };
        assert!(started.elapsed() < Duration::from_secs(6), "{path}: curl waited for a 100 Continue that never came");
        let (heads, body) = curl_response(&out.stdout);
        assert_eq!(heads.len(), 2, "{heads:?}");
        assert!(heads[0].starts_with("http/1.1 100 continue"), "{heads:?}");
        assert!(heads[1].starts_with("http/1.1 200 ok"), "{heads:?}");
        if path == "/echo" {
            assert_eq!(body, b"some body bytes");
        } else {
            let reply: Reply = serde_json::from_slice(&body).unwrap();
            assert_eq!(reply.body_bytes, 15);
            assert_eq!(reply.header("expect"), Some("100-continue"));
        }
    }
}

// ---- /ws ----

#[tokio::test]
async fn ws_upgrade_then_raw_echo() {
    let echo = echo("pod-ws").await;
    let (mut send, _) = h1(echo.local_addr()).await;
    let req = Request::get("/ws")
        .header(HOST, "x")
        .header(CONNECTION, "keep-alive, Upgrade")
        .header(UPGRADE, "websocket")
        .body(empty())
        .unwrap();
    let response = send1(&mut send, req).await;
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[UPGRADE], "websocket");
    assert_eq!(pod(&response), "pod-ws");
    let upgraded = within("upgrade", hyper::upgrade::on(response)).await.unwrap();
    let mut io = TokioIo::new(upgraded);
    let message = b"not a websocket frame \x00\xff\r\n";
    io.write_all(message).await.unwrap();
    let mut back = vec![0u8; message.len()];
    within("echo after upgrade", io.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, message);
    io.write_all(b"more").await.unwrap();
    io.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("EOF after upgrade", io.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"more");

    // Without the upgrade headers, /ws says what it needs.
    let (mut send, _) = h1(echo.local_addr()).await;
    let response = send1(&mut send, Request::get("/ws").header(HOST, "x").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
}

#[tokio::test]
async fn connect_tunnels_echo_raw_bytes() {
    let echo = echo("pod-tunnel").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.write_all(b"CONNECT db-0.db:5000 HTTP/1.1\r\nHost: db-0.db:5000\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        within("CONNECT answer", stream.read_exact(&mut byte)).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("x-echo-pod: pod-tunnel\r\n"), "{head}");
    stream.write_all(b"through the tunnel").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("tunnel echo", stream.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"through the tunnel");

    let (mut send, _driver) = h2(echo.local_addr()).await;
    let response = send2(&mut send, Request::connect("db-0.db:5000").body(empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(pod(&response), "pod-tunnel");
    let mut io = TokioIo::new(within("h2 tunnel", hyper::upgrade::on(response)).await.unwrap());
    io.write_all(b"over h2").await.unwrap();
    io.shutdown().await.unwrap();
    let mut back = Vec::new();
    within("h2 tunnel echo", io.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"over h2");
}

#[tokio::test]
async fn broken_request_body_is_a_400() {
    let echo = echo("pod-bad").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.write_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n").await.unwrap();
    let mut answer = Vec::new();
    // The server closes after answering; a reset instead of a clean close is fine too.
    let _ = within("answer", stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
    assert!(answer.contains("x-echo-pod: pod-bad\r\n"), "{answer}");
}

#[tokio::test]
async fn request_line_may_arrive_in_pieces() {
    let echo = echo("pod-slow-client").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    for piece in [&b"GE"[..], b"T /pie", b"ces HTTP/1.1\r", b"\nHost: a\r\nConnection: close\r\n\r\n"] {
        stream.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut answer = Vec::new();
    within("answer", stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.contains("\"path\":\"/pieces\""), "{answer}");
}

// ---- /close ----

#[tokio::test]
async fn close_ends_the_connection() {
    let echo = echo("pod-close").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.write_all(b"GET /close HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    within("h1 close", stream.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8(answer).unwrap().to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200 ok\r\n"), "{answer}");
    assert!(answer.contains("\r\nconnection: close\r\n"), "{answer}");
    assert!(answer.contains("\"path\":\"/close\""), "{answer}");

    let (mut send, driver) = h2(echo.local_addr()).await;
    let reply = reply_of(send2(&mut send, Request::get("http://x/close").body(empty()).unwrap()).await).await;
    assert_eq!(reply.version, "HTTP/2.0");
    within("h2 close", driver).await.unwrap();
}

// ---- the TCP line protocol ----

#[tokio::test]
async fn tcp_lines_are_answered_one_by_one() {
    let echo = echo("pod-tcp").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.write_all(b"hello\n").await.unwrap();
    let mut first = [0u8; 14];
    within("first line", stream.read_exact(&mut first)).await.unwrap();
    assert_eq!(&first, b"pod-tcp hello\n");
    stream.write_all(b"\nbinary \x00\xff\r\nlast without newline").await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("rest and EOF", stream.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(rest, b"pod-tcp \npod-tcp binary \x00\xff\r\npod-tcp last without newline\n");
    assert_eq!(echo.requests(), 0);
}

#[tokio::test]
async fn tcp_long_lines_are_capped() {
    let echo = echo("p").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    let mut line = pattern(64 * 1024 + 100);
    line.push(b'\n');
    let (mut reader, mut writer) = stream.split();
    let write = async {
        writer.write_all(&line).await.unwrap();
        writer.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = reader.read_to_end(&mut back);
    within("long line", async { tokio::join!(write, read) }).await.1.unwrap();
    let mut expected = b"p ".to_vec();
    expected.extend_from_slice(&line[..64 * 1024]);
    expected.extend_from_slice(b"\np ");
    expected.extend_from_slice(&line[64 * 1024..]);
    assert_eq!(back.len(), expected.len());
    assert!(back == expected);
}

#[tokio::test]
async fn tcp_client_that_closes_at_once_gets_a_clean_close() {
    let echo = echo("pod-eof").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut rest = Vec::new();
    within("EOF", stream.read_to_end(&mut rest)).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn silent_client_gets_nothing() {
    let echo = echo("pod-quiet").await;
    let mut stream = TcpStream::connect(echo.local_addr()).await.unwrap();
    let mut buf = [0u8; 16];
    let read = timeout(Duration::from_millis(200), stream.read(&mut buf)).await;
    assert!(read.is_err(), "the server spoke first: {read:?}");
    eventually("accepted", || echo.connections() == 1).await;
    assert_eq!(echo.requests(), 0);
}

// ---- lifecycle ----

#[tokio::test]
async fn shutdown_closes_the_port_and_its_connections() {
    let echo = echo("pod-end").await;
    let addr = echo.local_addr();
    assert_eq!(echo.name(), "pod-end");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"one\n").await.unwrap();
    let mut line = [0u8; 12];
    within("line", stream.read_exact(&mut line)).await.unwrap();
    within("shutdown", echo.shutdown()).await;
    let mut rest = Vec::new();
    // Closed by the server: EOF, or a reset.
    let _ = within("closed", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_handle_stops_it() {
    let echo = echo("pod-drop").await;
    let addr = echo.local_addr();
    drop(echo);
    within("port closed", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_counts_so_far() {
    let echo = echo("pod-m").await;
    let (mut send, _) = h1(echo.local_addr()).await;
    for _ in 0..3 {
        body_of(send1(&mut send, Request::get("/").header(HOST, "x").body(empty()).unwrap()).await).await;
    }
    let response = send1(&mut send, Request::get("/metrics").header(HOST, "x").body(empty()).unwrap()).await;
    assert_eq!(response.headers()[CONTENT_TYPE], "text/plain; version=0.0.4");
    let text = String::from_utf8(body_of(response).await.to_vec()).unwrap();
    // The scrape itself is the fourth request; one connection.
    assert!(text.contains("# TYPE echo_requests_total counter\necho_requests_total{pod=\"pod-m\"} 4\n"), "{text}");
    assert!(text.contains("echo_connections_total{pod=\"pod-m\"} 1\n"), "{text}");
}
