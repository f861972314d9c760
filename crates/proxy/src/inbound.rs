//! R4 on the wire: what the destination sidecar admits, and forwarding what it admits to the application at
//! `<pod IP>:<target port>` (R4.5). Every decision is `podmesh_route::inbound`'s.

use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use podmesh_compute::{InboundPort, Protocol};
use podmesh_model::{MtlsMode, TargetPort};
use podmesh_route::inbound::{self, Connection};
use podmesh_route::request::{Detected, Handling, Peer, handling};
use podmesh_route::{ReasonCode, Rejection, Rule, Side};
use tokio::net::TcpStream;

use crate::Proxy;
use crate::http::{
    ForwardError, PoolKey, RespBody, ServiceResult, body_error, client_body_error, finish_response, for_next_hop,
    forward, host_of, malformed, protocol_name, refuse_request, serve_connection,
};
use crate::io::{Io, Prefixed, Sniffed, read_more, sniff};
use crate::log::{AccessRecord, Direction};
use crate::outbound::request_fields;
use crate::tls::{Hello, client_hello};

/// The largest ClientHello read before giving up on it (a normal one is well under 2 KiB).
const MAX_HELLO: usize = 16 * 1024;

/// A second handle on the client's socket, to reset it whatever wraps the stream by then (TLS, replay).
struct ResetHandle(Option<OwnedFd>);

impl ResetHandle {
    fn new(stream: &TcpStream) -> Self {
        Self(stream.as_fd().try_clone_to_owned().ok())
    }

    /// R6 "TCP reset": the socket is closed with RST once every handle is dropped.
    fn reset(&self) {
        if let Some(fd) = &self.0 {
            let _ = socket2::SockRef::from(fd).set_linger(Some(std::time::Duration::ZERO));
        }
    }
}

pub(crate) async fn handle(proxy: Arc<Proxy>, mut stream: TcpStream, src: SocketAddr, dst: SocketAddr) {
    let start = Instant::now();
    let cfg = proxy.config.current();
    let port = dst.port();
    let resetter = ResetHandle::new(&stream);
    let mut rec = AccessRecord::new(Direction::Inbound, "tcp", src, dst);
    let refuse = |mut rec: AccessRecord, rej: &Rejection| {
        rec.rejected(rej);
        resetter.reset();
        proxy.log.write(rec, start.elapsed());
    };

    // R4.1 before reading a byte: an undeclared port is refused at once.
    let Some(declared) = cfg.inbound.ports.get(&TargetPort(port)) else {
        match inbound::connection(&cfg, port, None) {
            Err(rej) => refuse(rec, &rej),
            // The sidecar's own ports are not captured (R7); reaching them here means the capture rules are wrong.
            Ok(_) => refuse(rec, &sidecar_port_captured(port)),
        }
        return;
    };
    // DISABLE on a TCP port: nothing to look for, so nothing to wait for (server-first protocols work).
    let (sniffed, mut buf) = if declared.mtls == MtlsMode::Disable && declared.protocol == Protocol::Tcp {
        (Sniffed::Opaque, BytesMut::new())
    } else {
        match sniff(&mut stream, proxy.detection_timeout()).await {
            Ok(s) => s,
            Err(_) => return,
        }
    };

    // Mesh mTLS (R5) or not: a mesh client offers our ALPN; any other TLS is the application's own.
    let mut hello = Hello::Other;
    if sniffed == Sniffed::Tls {
        hello = client_hello(&buf);
        while hello == Hello::Incomplete
            && buf.len() < MAX_HELLO
            && read_more(&mut stream, &mut buf, proxy.detection_timeout()).await
        {
            hello = client_hello(&buf);
        }
    }
    let (client, peer): (Box<dyn Io>, Option<Peer>) = if hello == Hello::Mesh {
        match proxy.tls.accept(Prefixed::new(buf, stream)).await {
            Ok((tls, peer)) => (Box::new(tls), Some(peer)),
            Err(e) => {
                let rej = Rejection::new(
                    ReasonCode::MtlsRequired,
                    Side::Destination,
                    Rule::R5,
                    format!("the mesh mTLS handshake from {src} failed: {e}"),
                    "the client's certificate must chain to this mesh's trust anchors and be valid now",
                );
                refuse(rec, &rej);
                return;
            }
        }
    } else {
        let buf = std::mem::take(&mut buf);
        (Box::new(Prefixed::new(buf, stream)), None)
    };
    rec.peer_identity = peer.as_ref().map(|p| p.identity.as_str().to_string());

    // R4.1, R4.2: the port's mode admits how the client came?
    let admitted = match inbound::connection(&cfg, port, peer.as_ref()) {
        Ok(Connection::Admit(p)) => p.clone(),
        Ok(Connection::SidecarPort(_)) => return refuse(rec, &sidecar_port_captured(port)),
        Err(rej) => return refuse(rec, &rej),
    };

    // R1: what the client speaks (inside the tunnel, for mTLS).
    let (detected, client) = if peer.is_some() {
        let mut client = client;
        match sniff(&mut client, proxy.detection_timeout()).await {
            Ok((kind, inner)) => (kind, Box::new(Prefixed::new(inner, client)) as Box<dyn Io>),
            Err(_) => return,
        }
    } else {
        (sniffed, client)
    };
    let detected = if detected.is_http() { Detected::Http } else { Detected::Opaque };
    let what = format!("port {port} of {}", cfg.workload.pod);
    match handling(admitted.protocol, &admitted.protocol_from, detected, Side::Destination, &what) {
        Err(rej) => refuse(rec, &rej),
        Ok(Handling::Http) => serve_http(proxy, client, admitted, peer, src, dst).await,
        Ok(Handling::Tcp) => {
            // R4.4: direct TCP over mTLS needs a headless Service declaring the port.
            if let Err(rej) = inbound::tcp(&cfg, &admitted, peer.as_ref()) {
                return refuse(rec, &rej);
            }
            let app = SocketAddr::new(cfg.workload.ip, port);
            rec.upstream = Some(app);
            match proxy.dialer.connect(app).await {
                Ok(mut upstream) => {
                    let mut client = client;
                    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                        Ok((up, down)) => {
                            rec.bytes_received = up;
                            rec.bytes_sent = down;
                        }
                        Err(e) => {
                            rec.reason(ReasonCode::UpstreamReset);
                            rec.message = Some(format!("connection failed mid-stream: {e}"));
                            resetter.reset();
                        }
                    }
                    proxy.log.write(rec, start.elapsed());
                }
                Err(e) => refuse(rec, &app_unreachable(app, &e)),
            }
        }
    }
}

/// R4.3 per request, then on to the application.
async fn serve_http(
    proxy: Arc<Proxy>,
    client: Box<dyn Io>,
    port: InboundPort,
    peer: Option<Peer>,
    src: SocketAddr,
    dst: SocketAddr,
) {
    let mut rec = AccessRecord::new(Direction::Inbound, "http/1.1", src, dst);
    rec.peer_identity = peer.as_ref().map(|p| p.identity.as_str().to_string());
    let shared = Arc::new((port, peer));
    let log = proxy.log.clone();
    let draining = proxy.draining();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (proxy, shared) = (Arc::clone(&proxy), Arc::clone(&shared));
        async move { ServiceResult::Ok(request(&proxy, &shared.0, shared.1.as_ref(), req, src, dst).await) }
    });
    serve_connection(&log, client, svc, rec, draining).await;
}

async fn request(
    proxy: &Proxy,
    port: &InboundPort,
    peer: Option<&Peer>,
    req: Request<Incoming>,
    src: SocketAddr,
    dst: SocketAddr,
) -> http::Response<RespBody> {
    let start = Instant::now();
    let cfg = proxy.config.current();
    let mut rec = AccessRecord::new(Direction::Inbound, protocol_name(req.version()), src, dst);
    request_fields(&mut rec, &req);
    rec.peer_identity = peer.map(|p| p.identity.as_str().to_string());
    if let Some(rej) = malformed(&req, Side::Destination) {
        return refuse_request(&proxy.log, rec, &rej, start);
    }
    // The port as configured now (a reload may have changed its hosts), else as admitted.
    let port = cfg.inbound.ports.get(&port.port).unwrap_or(port);
    if let Err(rej) = inbound::http_request(&cfg, port, host_of(&req), peer) {
        return refuse_request(&proxy.log, rec, &rej, start);
    }
    let (req, version, request_bytes) = for_next_hop(req);
    let app = SocketAddr::new(cfg.workload.ip, port.port.0);
    rec.upstream = Some(app);
    match forward(proxy, PoolKey { addr: app, tls: None, version }, req).await {
        Ok(resp) => finish_response(&proxy.log, resp, rec, request_bytes, start),
        Err((ForwardError::Connect(e), _)) => refuse_request(&proxy.log, rec, &app_unreachable(app, &e), start),
        Err((ForwardError::Send(e), _)) if client_body_error(&e) => {
            refuse_request(&proxy.log, rec, &body_error(&e, Side::Destination), start)
        }
        Err((ForwardError::Send(e), _)) => {
            let rej = Rejection::new(
                ReasonCode::UpstreamReset,
                Side::Destination,
                Rule::R4_5,
                format!("the application at {app} reset the request before responding: {e}"),
                "check the application's logs",
            );
            refuse_request(&proxy.log, rec, &rej, start)
        }
    }
}

fn app_unreachable(app: SocketAddr, e: &std::io::Error) -> Rejection {
    Rejection::new(
        ReasonCode::UpstreamConnectFailure,
        Side::Destination,
        Rule::R4_5,
        format!("the application does not accept connections on {app}: {e}"),
        format!("make the application listen on port {} (on the pod IP or 0.0.0.0)", app.port()),
    )
}

fn sidecar_port_captured(port: u16) -> Rejection {
    Rejection::new(
        ReasonCode::UpstreamConnectFailure,
        Side::Destination,
        Rule::R7,
        format!("port {port} is one of the sidecar's own ports, which capture must not redirect."),
        "reinstall the capture rules with `podmesh capture install`",
    )
}
