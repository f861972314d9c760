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
use std::sync::Arc;
use std::time::Duration;

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

/// Opens the proxy's own connections: to upstream endpoints, and to its application.
#[derive(Debug, Clone)]
pub struct Dialer {
    mark: Option<u32>,
    rewrites: Arc<HashMap<SocketAddr, SocketAddr>>,
    timeout: Duration,
}

impl Default for Dialer {
    fn default() -> Self {
        Self { mark: None, rewrites: Arc::default(), timeout: Duration::from_secs(5) }
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

    pub async fn connect(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let target = self.rewrites.get(&addr).copied().unwrap_or(addr);
        let socket = if target.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        if let Some(mark) = self.mark {
            socket2::SockRef::from(&socket).set_mark(mark)?;
        }
        let stream = tokio::time::timeout(self.timeout, socket.connect(target))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))??;
        stream.set_nodelay(true)?;
        Ok(stream)
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
