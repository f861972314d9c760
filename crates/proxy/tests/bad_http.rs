//! Malformed HTTP/1 against both listeners of the sidecar: the outbound one (a meshed client's own requests) and
//! the inbound one (a plain client calling a meshed pod, PERMISSIVE). Each gets 400 (or 431 for oversized heads)
//! and a closed connection, and nothing reaches the application.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use podmesh_route::ReasonCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PERMISSIVE: &[&str] = &["examples/quickstart"];

/// (name, request bytes, expected status)
fn cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let head = |extra: &str| format!("POST / HTTP/1.1\r\nhost: web.shop\r\n{extra}\r\n").into_bytes();
    let big = head(&format!("x-big: {}\r\n", "a".repeat(70 * 1024)));
    let many: String = (0..150).map(|i| format!("x-h{i}: v\r\n")).collect();
    vec![
        ("content-length with transfer-encoding", head("content-length: 5\r\ntransfer-encoding: chunked\r\n"), 400),
        ("two different content-lengths", head("content-length: 5\r\ncontent-length: 6\r\n"), 400),
        ("two equal content-lengths", head("content-length: 3\r\ncontent-length: 3\r\n"), 400),
        ("invalid content-length", head("content-length: 3x\r\n"), 400),
        ("a transfer-encoding other than chunked", head("transfer-encoding: gzip\r\n"), 400),
        ("obsolete line folding", head("x-a: b\r\n c\r\n"), 400),
        ("whitespace before the colon", head("x-a : b\r\n"), 400),
        ("NUL in a value", head("x-a: b\0c\r\n"), 400),
        ("CR in a value", head("x-a: b\rc\r\n"), 400),
        ("two Host headers", head("host: other.shop\r\n"), 400),
        (
            "an absolute target naming another host",
            b"GET http://other.shop/ HTTP/1.1\r\nhost: web.shop\r\n\r\n".to_vec(),
            400,
        ),
        ("a head over 64 KiB", big, 431),
        ("150 headers", head(&many), 431),
    ]
}

/// Sends `bytes` and reads the answer until the connection closes: (status, whole answer).
async fn exchange(addr: SocketAddr, bytes: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading everything; that is fine.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    if read.is_err() {
        eprintln!("HANG after {:?}", String::from_utf8_lossy(&out));
    }
    assert!(read.is_ok(), "the connection was not closed after the answer");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn app_requests(mesh: &Mesh) -> u64 {
    mesh.pods_of("web").iter().map(|p| mesh.apps[&SocketAddr::new(mesh.pod_ip(p), 8080)].requests()).sum()
}

#[tokio::test]
async fn malformed_requests_are_refused_by_the_source_sidecar() {
    let mut mesh = Mesh::start(PERMISSIVE).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    for (name, bytes, want) in cases() {
        let (status, text) = exchange(web, &bytes).await;
        assert_eq!(status, want, "{name}: {text}");
        assert_eq!(app_requests(&mesh), 0, "{name} reached the application");
    }
    // Each is logged as a protocol error by the source.
    let log = mesh.log("client");
    assert_eq!(log.iter().filter(|r| r.reason == ReasonCode::ProtocolError).count(), cases().len(), "{log:#?}");
    // The checks the proxy makes itself (not the parser) carry the reason header.
    let (_, text) = exchange(web, &cases()[0].1).await;
    assert!(text.contains("x-podmesh-reason: protocol_error; side=source; rule=R6"), "{text}");
    // And a well-formed request still works.
    let (status, _) = exchange(web, b"GET / HTTP/1.1\r\nhost: web.shop\r\nconnection: close\r\n\r\n").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn malformed_requests_are_refused_by_the_destination_sidecar() {
    let mesh = Mesh::start(PERMISSIVE).await;
    let pod = &mesh.pods_of("web")[0];
    let inbound = mesh.plain(SocketAddr::new(mesh.pod_ip(pod), 8080));
    for (name, bytes, want) in cases() {
        let (status, text) = exchange(inbound, &bytes).await;
        assert_eq!(status, want, "{name}: {text}");
        assert_eq!(app_requests(&mesh), 0, "{name} reached the application");
    }
    let log = mesh.log(pod);
    assert_eq!(log.iter().filter(|r| r.reason == ReasonCode::ProtocolError).count(), cases().len(), "{log:#?}");
    let (_, text) = exchange(inbound, &cases()[9].1).await;
    assert!(text.contains("x-podmesh-reason: protocol_error; side=destination; rule=R6"), "{text}");
}

#[tokio::test]
async fn a_bad_chunk_size_is_a_protocol_error_and_the_application_never_gets_a_complete_request() {
    let mut mesh = Mesh::start(PERMISSIVE).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let bytes = b"POST /echo HTTP/1.1\r\nhost: web.shop\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n";
    let (status, text) = exchange(web, bytes).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("protocol_error"), "{text}");
    // Bodies are streamed, so the head may have been forwarded; the body never completed there.
    let inbound: Vec<_> = mesh.pods_of("web").iter().flat_map(|p| mesh.log(p)).collect();
    assert!(inbound.iter().all(|r| r.reason != ReasonCode::Ok || r.status != Some(200)), "{inbound:#?}");
}

// ------------------------------------------------------------------------------------------------ HTTP/2

/// One HTTP/2 frame: 9-byte header, then the payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// HPACK for `GET http://web.shop/`: static-table method, scheme and path, and the authority as a literal that
/// leaves the dynamic table alone; then `extra` as further literal bytes.
fn get_block(extra: &[u8]) -> Vec<u8> {
    let mut b = vec![0x82, 0x86, 0x84, 0x01, 8];
    b.extend(b"web.shop");
    b.extend(extra);
    b
}

/// The client preface and an empty SETTINGS frame.
fn preface() -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out
}

/// Reads frames until the server closes the connection (or 10 s pass): (kind, flags, stream, payload) each.
async fn frames_until_close(s: &mut TcpStream) -> Vec<(u8, u8, u32, Vec<u8>)> {
    let mut raw = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    let mut frames = Vec::new();
    let mut rest = raw.as_slice();
    while rest.len() >= 9 {
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
        let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff;
        let Some(payload) = rest.get(9..9 + len) else { break };
        frames.push((rest[3], rest[4], stream, payload.to_vec()));
        rest = &rest[9 + len..];
    }
    frames
}

/// The rapid-reset attack (CVE-2023-44487): a client opens streams and cancels each at once, so the server does
/// work for requests nobody waits for. After a few such streams the sidecar sends GOAWAY (ENHANCE_YOUR_CALM) and
/// closes; far fewer requests than were opened reach the application.
#[tokio::test]
async fn http2_rapid_reset_gets_goaway() {
    let mut mesh = Mesh::start(PERMISSIVE).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let mut s = TcpStream::connect(web).await.unwrap();
    let mut burst = preface();
    const STREAMS: u32 = 500;
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        burst.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get_block(&[])));
        burst.extend(frame(RST_STREAM, 0, id, &0x8u32.to_be_bytes())); // CANCEL
    }
    // The server may close before reading everything.
    let _ = s.write_all(&burst).await;
    let frames = frames_until_close(&mut s).await;
    let goaway = frames.iter().find(|f| f.0 == GOAWAY).expect("a GOAWAY");
    let code = u32::from_be_bytes(goaway.3[4..8].try_into().unwrap());
    assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM, got {code:#x} in {frames:?}");
    // Give requests already on their way time to land, then count.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reached = app_requests(&mesh);
    assert!(reached < u64::from(STREAMS) / 4, "{reached} of {STREAMS} cancelled requests reached the application");
}

/// A header block larger than the limit (64 KiB), sent as HEADERS and a stream of CONTINUATION frames (the
/// CONTINUATION flood): the sidecar answers the stream 431 and the application sees nothing. The server's SETTINGS
/// carry the concurrent-stream limit.
#[tokio::test]
async fn http2_oversized_header_block_is_refused() {
    let mut mesh = Mesh::start(PERMISSIVE).await;
    let web = mesh.via_sidecar("client", mesh.service("web", 80)).await;
    let mut s = TcpStream::connect(web).await.unwrap();
    let mut out = preface();
    // One literal header `x-big: <100 KiB>` without indexing: 0x00, name length + name, value length (HPACK
    // integer, 7-bit prefix) + value.
    let value_len: usize = 100 * 1024;
    let mut extra = vec![0x00, 5];
    extra.extend(b"x-big");
    extra.push(0x7f);
    let mut rest = value_len - 127;
    while rest >= 128 {
        extra.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    extra.push(rest as u8);
    extra.extend(std::iter::repeat_n(b'a', value_len));
    let block = get_block(&extra);
    let mut chunks = block.chunks(16 * 1024).peekable();
    let first = chunks.next().unwrap();
    out.extend(frame(HEADERS, END_STREAM, 1, first));
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() { END_HEADERS } else { 0 };
        out.extend(frame(CONTINUATION, flags, 1, chunk));
    }
    let _ = s.write_all(&out).await;
    // Half-close our side so a server that keeps the connection after refusing the stream ends it too.
    let _ = s.shutdown().await;
    let frames = frames_until_close(&mut s).await;
    // The server's SETTINGS carry the concurrent-stream limit (SETTINGS_MAX_CONCURRENT_STREAMS = 1000).
    let settings = frames.iter().find(|f| f.0 == 0x4 && f.1 == 0).expect("the server's SETTINGS");
    let limit =
        settings.3.chunks(6).find(|p| p[..2] == [0, 3]).map(|p| u32::from_be_bytes(p[2..6].try_into().unwrap()));
    assert_eq!(limit, Some(1000), "{frames:?}");
    // The stream is answered 431 and ended. HPACK: a `:status` literal (indexed name 8) whose value is "431",
    // plain (0x03 "431") or Huffman-coded (0x83 0x69 0x90 0xff: '4' 011010, '3' 011001, '1' 00001, then EOS bits).
    let answer = frames.iter().find(|f| f.0 == HEADERS && f.2 == 1).expect("an answer on stream 1");
    let status_431 = [&[0x48, 0x03, b'4', b'3', b'1'][..], &[0x48, 0x83, 0x69, 0x90, 0xff][..]];
    assert!(answer.1 & END_STREAM != 0 && status_431.contains(&answer.3.as_slice()), "{frames:?}");
    assert_eq!(app_requests(&mesh), 0, "the oversized request reached the application");
}
