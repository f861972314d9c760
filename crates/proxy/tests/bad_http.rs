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
