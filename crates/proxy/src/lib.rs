//! # podmesh-proxy
//!
//! The sidecar (DESIGN.md: the **proxy**). It runs beside one workload and carries every TCP connection into and
//! out of it, deciding each one — and each HTTP request — with the very functions `podmesh explain` runs
//! (`podmesh_route::{outbound, inbound}`), so what the sidecar does and what explain says cannot drift apart.
//!
//! - [`outbound`] (R3): connections the application opens, captured to 15001. Service traffic is routed per
//!   HTTP request by Host and balanced per request (least request, P2C) or per TCP connection (least
//!   connections); direct pod traffic goes to exactly the pod dialled; meshed destinations get mTLS that carries
//!   how they were addressed (R3.6).
//! - [`inbound`] (R4): connections to the workload, captured to 15006: declared ports only, the port's mTLS
//!   mode, the Host check with the headless fallback, the direct-TCP check; then on to the application.
//! - Rejections answer with the documented status, a reason header and a one-line fix (R6); every request and
//!   connection is access-logged with its reason ([`log`]).
//!
//! I/O sits at the edges ([`net`]): where connections come from (captured, with their original destination read
//! from the socket, or a listener standing for one destination in the in-process tests) and how the proxy dials.

pub mod capture;
pub mod http;
pub mod inbound;
pub mod intake;
pub mod io;
pub mod log;
pub mod net;
pub mod outbound;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use podmesh_balance::Loads;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use intake::{ConfigHandle, FileSource, read_config};
pub use log::{AccessLog, AccessRecord, Direction};
pub use net::{Dialer, OrigDst};
pub use tls::Tls;

/// Everything a connection handler needs, shared by all of them.
#[derive(Debug)]
pub struct Proxy {
    pub config: ConfigHandle,
    pub tls: Tls,
    pub dialer: Dialer,
    pub log: AccessLog,
    /// HTTP requests in flight per endpoint (least request).
    requests: Loads<SocketAddr>,
    /// Open TCP connections per endpoint (least connections).
    connections: Loads<SocketAddr>,
    pool: http::Pool,
}

impl Proxy {
    pub fn new(config: ConfigHandle, tls: Tls, dialer: Dialer, log: AccessLog) -> Arc<Self> {
        Arc::new(Self {
            config,
            tls,
            dialer,
            log,
            requests: Loads::default(),
            connections: Loads::default(),
            pool: http::Pool::default(),
        })
    }

    /// Accepts outbound connections (the application's own, captured) until the task is aborted.
    pub fn serve_outbound(self: &Arc<Self>, listener: TcpListener, orig: OrigDst) -> JoinHandle<()> {
        self.serve(listener, orig, Direction::Outbound)
    }

    /// Accepts inbound connections (to the application, captured) until the task is aborted.
    pub fn serve_inbound(self: &Arc<Self>, listener: TcpListener, orig: OrigDst) -> JoinHandle<()> {
        self.serve(listener, orig, Direction::Inbound)
    }

    fn serve(self: &Arc<Self>, listener: TcpListener, orig: OrigDst, direction: Direction) -> JoinHandle<()> {
        let proxy = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                let (stream, src) = match listener.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        eprintln!("podmesh proxy: accept on {direction:?} listener failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let dst = match orig.of(&stream) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("podmesh proxy: no original destination for {src}: {e}");
                        io::reset(&stream);
                        continue;
                    }
                };
                let proxy = Arc::clone(&proxy);
                tokio::spawn(async move {
                    match direction {
                        Direction::Outbound => outbound::handle(proxy, stream, src, dst).await,
                        Direction::Inbound => inbound::handle(proxy, stream, src, dst).await,
                    }
                });
            }
        })
    }

    /// How long to wait for a client's first bytes before treating the connection as opaque TCP (R1.3).
    fn detection_timeout(&self) -> std::time::Duration {
        self.config.current().mesh.protocol_detection_timeout
    }
}
