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
//!   connection is access-logged with its reason ([`log`]), and the same record feeds the Istio-style metrics
//!   ([`metrics`]) that [`admin`] serves on 15020 with readiness (15021) and the admin API (127.0.0.1:15000).
//!
//! I/O sits at the edges ([`net`]): where connections come from (captured, with their original destination read
//! from the socket, or a listener standing for one destination in the in-process tests) and how the proxy dials.

pub mod admin;
pub mod body;
pub mod capture;
pub mod control;
pub mod http;
pub mod inbound;
pub mod intake;
pub mod io;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod net;
pub mod outbound;
pub mod probe;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use podmesh_balance::Loads;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use admin::{AppMetrics, serve_admin, serve_readiness, serve_stats};
pub use control::{ControlAddress, ControlOptions, ControlSource, Token};
pub use intake::{ConfigHandle, FilePaths, FileSource, Intake, Update, follow, read_config};
pub use log::{AccessLog, AccessRecord, Direction};
pub use metrics::{Metrics, Telemetry};
pub use net::{Dialer, OrigDst};
pub use tls::Tls;

/// Everything a connection handler needs, shared by all of them.
#[derive(Debug)]
pub struct Proxy {
    pub config: ConfigHandle,
    pub tls: Tls,
    pub dialer: Dialer,
    /// The access log given to [`Proxy::new`], with this proxy's telemetry attached: every record written to it
    /// also feeds the metrics.
    pub log: AccessLog,
    telemetry: Arc<Telemetry>,
    /// Set by whoever starts the proxy once its listeners are bound; `/healthz/ready` answers 503 until then.
    ready: AtomicBool,
    /// HTTP requests in flight per endpoint (least request).
    requests: Loads<SocketAddr>,
    /// Open TCP connections per endpoint (least connections).
    connections: Loads<SocketAddr>,
    pool: http::Pool,
    /// Set to true when draining: accept loops stop, HTTP connections finish their request and close.
    drain: tokio::sync::watch::Sender<bool>,
    /// Client connections being handled, for the drain to wait on and the connection cap.
    active: Arc<AtomicUsize>,
    max_connections: AtomicUsize,
    /// Whether a routing loop was already reported on stderr.
    loop_reported: AtomicBool,
}

impl Proxy {
    pub fn new(config: ConfigHandle, tls: Tls, dialer: Dialer, log: AccessLog) -> Arc<Self> {
        let telemetry = Arc::new(Telemetry::new(config.clone()));
        let log = log.with_telemetry(Arc::clone(&telemetry));
        Arc::new(Self {
            config,
            tls,
            dialer,
            log,
            telemetry,
            ready: AtomicBool::new(false),
            requests: Loads::default(),
            connections: Loads::default(),
            pool: http::Pool::default(),
            drain: tokio::sync::watch::Sender::new(false),
            active: Arc::new(AtomicUsize::new(0)),
            max_connections: AtomicUsize::new(limits::Limits::default().max_connections),
            loop_reported: AtomicBool::new(false),
        })
    }

    /// This sidecar's metrics, fed by every access record.
    pub fn metrics(&self) -> &Metrics {
        self.telemetry.metrics()
    }

    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Marks the proxy ready (or not) for `/healthz/ready`: call it once the capture listeners are bound.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// HTTP requests in flight to `endpoint` now (what least-request balancing sees).
    pub fn requests_in_flight(&self, endpoint: &SocketAddr) -> u64 {
        self.requests.load(endpoint)
    }

    /// Open TCP connections to `endpoint` now (what least-connections balancing sees).
    pub fn open_connections(&self, endpoint: &SocketAddr) -> u64 {
        self.connections.load(endpoint)
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
        let mut draining = self.drain.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    // Draining: stop accepting; the listener closes when this task ends.
                    _ = async { drop(draining.wait_for(|d| *d).await) } => return,
                };
                let (stream, src) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        eprintln!("podmesh proxy: accept on {direction:?} listener failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if proxy.active.load(Ordering::Relaxed) >= proxy.max_connections.load(Ordering::Relaxed) {
                    // Over the cap: refuse at once rather than queue (the client may retry elsewhere).
                    io::reset(&stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let dst = match orig.of(&stream) {
                    Ok(d) => d,
                    Err(e) => {
                        eprintln!("podmesh proxy: no original destination for {src}: {e}");
                        io::reset(&stream);
                        continue;
                    }
                };
                if direction == Direction::Outbound && proxy.dialer.is_own(src) {
                    proxy.refuse_loop(&stream, src, dst);
                    continue;
                }
                let proxy = Arc::clone(&proxy);
                let active = ActiveGuard::new(&proxy.active);
                tokio::spawn(async move {
                    let _active = active;
                    match direction {
                        Direction::Outbound => outbound::handle(proxy, stream, src, dst).await,
                        Direction::Inbound => inbound::handle(proxy, stream, src, dst).await,
                    }
                });
            }
        })
    }

    /// R7: one of the proxy's own connections came back through outbound capture — the rules do not exclude the
    /// proxy. Proxying it would open another that comes back too, without end; it is reset, logged with the fix,
    /// and said once on stderr.
    fn refuse_loop(&self, stream: &tokio::net::TcpStream, src: SocketAddr, dst: SocketAddr) {
        io::reset(stream);
        let rej = podmesh_route::Rejection::new(
            podmesh_route::ReasonCode::UpstreamConnectFailure,
            podmesh_route::Side::Source,
            podmesh_route::Rule::R7,
            format!("a routing loop: the connection from {src} to {dst} is the sidecar's own, captured again."),
            "exclude the proxy from capture: run it as the uid given to `capture install --uid`, or give \
             `proxy --mark` the mark the rules exclude (default 1337)",
        );
        if !self.loop_reported.swap(true, Ordering::Relaxed) {
            eprintln!("podmesh proxy: {}", rej.body().trim_end());
        }
        let mut rec = AccessRecord::new(Direction::Outbound, "tcp", src, dst);
        rec.rejected(&rej);
        self.log.write(rec, std::time::Duration::ZERO);
    }

    /// Graceful drain (SIGTERM): stop accepting, tell HTTP clients to go (HTTP/2 GOAWAY; HTTP/1 `Connection:
    /// close` on the response in flight, then close), and wait until every connection has ended or `grace` has
    /// passed. Returns the number of connections still open at the end (TCP tunnels end only with the process).
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        self.set_ready(false);
        self.drain.send_replace(true);
        let deadline = tokio::time::Instant::now() + grace;
        while self.active.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.active.load(Ordering::Relaxed)
    }

    /// Resolves when a drain has begun.
    pub(crate) fn draining(&self) -> tokio::sync::watch::Receiver<bool> {
        self.drain.subscribe()
    }

    /// Changes the connection cap (`Limits::max_connections`).
    pub fn set_max_connections(&self, n: usize) {
        self.max_connections.store(n, Ordering::Relaxed);
    }

    /// Client connections being handled now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// How long to wait for a client's first bytes before treating the connection as opaque TCP (R1.3).
    fn detection_timeout(&self) -> std::time::Duration {
        self.config.current().mesh.protocol_detection_timeout
    }
}

/// Counts one client connection for as long as its task runs.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(count))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
