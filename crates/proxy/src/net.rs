//! Where connections come from and how the proxy opens its own.
//!
//! In a pod, capture rules send every outbound connection to 15001 and every inbound one to 15006, and the
//! original destination is read back from the socket ([`OrigDst::Socket`]); the proxy's own connections carry a
//! socket mark (or run under the proxy's uid) so capture skips them. The in-process test tier has no capture:
//! there each listener stands for one original destination ([`OrigDst::Fixed`]) and the [`Dialer`] maps the
//! cluster's addresses to loopback sockets. Everything between accept and connect is the same code.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// How an accepted connection's original destination is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrigDst {
    /// Read from the socket (SO_ORIGINAL_DST): the connection was redirected by capture rules.
    Socket,
    /// This listener stands for one destination (the in-process tier, or an explicit listener).
    Fixed(SocketAddr),
}

impl OrigDst {
    pub fn of(self, stream: &TcpStream) -> io::Result<SocketAddr> {
        match self {
            OrigDst::Socket => crate::io::original_dst(stream),
            OrigDst::Fixed(addr) => Ok(addr),
        }
    }
}

/// Opens the proxy's own connections: to upstream endpoints, and to its application. It remembers the local
/// port of each while it is open, so the proxy can recognise one of them arriving at its outbound listener: a
/// connection the capture rules failed to exclude, which would otherwise be proxied again, and again (a loop).
#[derive(Debug, Clone)]
pub struct Dialer {
    mark: Option<u32>,
    rewrites: Arc<HashMap<SocketAddr, SocketAddr>>,
    timeout: Duration,
    own: Arc<Mutex<OwnConnections>>,
}

impl Default for Dialer {
    fn default() -> Self {
        Self { mark: None, rewrites: Arc::default(), timeout: Duration::from_secs(5), own: Arc::default() }
    }
}

/// The local ports of the proxy's open connections, each with a token that dies with its connection.
#[derive(Debug, Default)]
struct OwnConnections {
    by_port: HashMap<u16, Weak<()>>,
    /// The size at which the next insert first drops the entries of closed connections.
    sweep_at: usize,
}

impl OwnConnections {
    fn insert(&mut self, port: u16, open: &Arc<()>) {
        if self.by_port.len() >= self.sweep_at {
            self.by_port.retain(|_, w| w.strong_count() > 0);
            self.sweep_at = (self.by_port.len() * 2).max(64);
        }
        self.by_port.insert(port, Arc::downgrade(open));
    }
}

impl Dialer {
    /// Marks every socket with SO_MARK `mark`, which the capture rules exclude (R7).
    pub fn with_mark(mut self, mark: u32) -> Self {
        self.mark = Some(mark);
        self
    }

    /// Connects to the mapped address instead of the one asked for (the in-process tier: pod IPs to loopback).
    pub fn with_rewrites(mut self, rewrites: HashMap<SocketAddr, SocketAddr>) -> Self {
        self.rewrites = Arc::new(rewrites);
        self
    }

    pub async fn connect(&self, addr: SocketAddr) -> io::Result<Dialed> {
        let target = self.rewrites.get(&addr).copied().unwrap_or(addr);
        let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(mark) = self.mark {
            socket2::SockRef::from(&socket).set_mark(mark)?;
        }
        // The local port is taken before the connection is attempted, and known before its SYN can come back
        // through capture to our own listener. A port bound this way belongs to this socket alone: connections
        // that other processes open without binding never share it.
        let any = if target.is_ipv4() { SocketAddr::from(([0, 0, 0, 0], 0)) } else { SocketAddr::from(([0u16; 8], 0)) };
        socket.bind(any)?;
        let open = Arc::new(());
        self.own.lock().unwrap_or_else(PoisonError::into_inner).insert(socket.local_addr()?.port(), &open);
        let stream = tokio::time::timeout(self.timeout, socket.connect(target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
        stream.set_nodelay(true)?;
        Ok(Dialed { stream, _open: open })
    }

    /// Whether `client`, a connection from this pod captured on its way out, is one the proxy itself opened and
    /// still holds: its source port is one of the proxy's (R7 says the proxy's sockets are never captured). Only
    /// meaningful for outbound capture, whose clients are all local.
    pub fn is_own(&self, client: SocketAddr) -> bool {
        let own = self.own.lock().unwrap_or_else(PoisonError::into_inner);
        own.by_port.get(&client.port()).is_some_and(|w| w.strong_count() > 0)
    }
}

/// A connection the proxy opened ([`Dialer::connect`]); the dialer knows its local address until it is dropped.
#[derive(Debug)]
pub struct Dialed {
    stream: TcpStream,
    _open: Arc<()>,
}

impl AsyncRead for Dialed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Dialed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Listens on `addr`; when that is the IPv4 wildcard (`0.0.0.0`), on the IPv6 wildcard of the same port too, as a
/// separate IPv6-only socket, so a pod's IPv6 traffic is served like its IPv4 traffic (and each socket's original
/// destination is of its own family). Where the kernel has no IPv6, the IPv4 listener alone is returned.
pub fn bind_wildcards(addr: SocketAddr) -> io::Result<Vec<TcpListener>> {
    /// Linux's "address family not supported": a kernel or namespace without IPv6.
    const EAFNOSUPPORT: i32 = 97;
    let v4 = listen(addr, false)?;
    let port = v4.local_addr()?.port();
    let mut listeners = vec![v4];
    if addr.ip() == std::net::Ipv4Addr::UNSPECIFIED {
        match listen(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)), true) {
            Ok(v6) => listeners.push(v6),
            Err(e) if e.raw_os_error() == Some(EAFNOSUPPORT) || e.kind() == io::ErrorKind::AddrNotAvailable => {}
            Err(e) => return Err(e),
        }
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if v6_only {
        socket2::SockRef::from(&socket).set_only_v6(true)?;
    }
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
