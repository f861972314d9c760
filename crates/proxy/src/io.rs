//! Byte-level pieces: a stream with bytes put back in front ([`Prefixed`]), protocol detection (R1.3), resets.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Any byte stream the proxy handles: TCP, TLS over TCP, with or without replayed bytes.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A stream whose first bytes were read for detection and are replayed before the rest.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// What a connection's first bytes are (R1.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniffed {
    /// An HTTP/1.x request line.
    Http1,
    /// The HTTP/2 prior-knowledge preface.
    Http2,
    /// A TLS handshake record (a ClientHello).
    Tls,
    /// Anything else, or nothing before the timeout, or end of stream.
    Opaque,
}

impl Sniffed {
    pub fn is_http(self) -> bool {
        matches!(self, Sniffed::Http1 | Sniffed::Http2)
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Enough for the preface and any HTTP/1 method; a request line is recognised by its method and the space.
const SNIFF_MAX: usize = 24;
const METHODS: &[&[u8]] =
    &[b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH "];

/// Classifies `bytes`; `None` while more bytes could change the answer.
pub fn classify(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.is_empty() {
        return None;
    }
    // A TLS handshake record: content type 22, version major 3.
    if bytes[0] == 0x16 {
        return match bytes.get(1) {
            None => None,
            Some(3) => Some(Sniffed::Tls),
            Some(_) => Some(Sniffed::Opaque),
        };
    }
    let n = bytes.len().min(H2_PREFACE.len());
    if bytes[..n] == H2_PREFACE[..n] {
        // "PRI " is also not an HTTP/1 method we route, so a full preface or nothing.
        return (n == H2_PREFACE.len()).then_some(Sniffed::Http2);
    }
    let mut undecided = false;
    for m in METHODS {
        let k = bytes.len().min(m.len());
        if bytes[..k] == m[..k] {
            if k == m.len() {
                return Some(Sniffed::Http1);
            }
            undecided = true;
        }
    }
    if undecided { None } else { Some(Sniffed::Opaque) }
}

/// Reads a connection's first bytes until they can be classified, the stream ends, or `timeout` passes (then it
/// is opaque: a client that waits for the server speaks first-server TCP). The bytes read come back to be
/// replayed.
pub async fn sniff<S: AsyncRead + Unpin>(stream: &mut S, timeout: Duration) -> io::Result<(Sniffed, BytesMut)> {
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(kind) = classify(&buf) {
            return Ok((kind, buf));
        }
        if buf.len() >= SNIFF_MAX {
            return Ok((Sniffed::Opaque, buf));
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Ok((Sniffed::Opaque, buf)),
            Ok(Ok(0)) => return Ok((Sniffed::Opaque, buf)),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Reads until `buf` holds a whole HTTP/1 request head (`\r\n\r\n`, or bare `\n\n`), up to `max` bytes, the
/// stream's end or `timeout`: true when it does. An HTTP/2 preface is not an HTTP/1 head: false at once.
pub async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
    timeout: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if buf.starts_with(b"PRI ") {
            return false;
        }
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return true;
        }
        if buf.len() >= max {
            return false;
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return false,
        }
    }
}

/// Reads more of a TLS ClientHello, up to `max` bytes in all, for parsing.
pub async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut BytesMut, timeout: Duration) -> bool {
    matches!(tokio::time::timeout(timeout, stream.read_buf(buf)).await, Ok(Ok(n)) if n > 0)
}

/// Closes with a TCP reset (RST) rather than an orderly FIN: how R6's "TCP reset" reaches the client.
pub fn reset(stream: &TcpStream) {
    // SO_LINGER 0: close() sends RST and discards unsent data.
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// The address the client dialled before capture redirected it (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(stream);
    let local = stream.local_addr()?;
    let addr = match local.ip() {
        IpAddr::V4(_) => sock.original_dst_v4()?,
        IpAddr::V6(_) => sock.original_dst_v6()?,
    };
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "original destination is not an IP address"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http1));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Sniffed::Http1));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(classify(H2_PREFACE), Some(Sniffed::Http2));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n\r\nXX"), Some(Sniffed::Opaque));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(&[0x16, 3, 1]), Some(Sniffed::Tls));
        assert_eq!(classify(&[0x16, 9]), Some(Sniffed::Opaque));
        assert_eq!(classify(b"ping\n"), Some(Sniffed::Opaque));
        assert_eq!(classify(b"get / HTTP/1.1"), Some(Sniffed::Opaque));
        assert_eq!(classify(b"\x00\x00"), Some(Sniffed::Opaque));
    }

    #[tokio::test]
    async fn sniff_stops_at_a_decision_a_timeout_or_the_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GET /x HTTP/1.1\r\n").await.unwrap();
        let (kind, buf) = sniff(&mut b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(kind, Sniffed::Http1);
        let mut replay = Prefixed::new(buf, b);
        let mut line = vec![0u8; 17];
        replay.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"GET /x HTTP/1.1\r\n");

        let (_a, mut b) = tokio::io::duplex(64);
        let (kind, buf) = sniff(&mut b, Duration::from_millis(20)).await.unwrap();
        assert_eq!((kind, buf.len()), (Sniffed::Opaque, 0));

        let (mut a, mut b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b"GE").await.unwrap();
        drop(a);
        let (kind, buf) = sniff(&mut b, Duration::from_secs(5)).await.unwrap();
        assert_eq!((kind, &buf[..]), (Sniffed::Opaque, &b"GE"[..]));
    }
}
