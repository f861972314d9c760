//! R3 on the wire: what the source sidecar does with each connection the application opens, and with each HTTP
//! request on it. Every decision is `podmesh_route::outbound`'s; this module carries bytes and balances.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use http::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use podmesh_balance::{Rng, least_loaded, p2c};
use podmesh_compute::{Endpoint, Listener, Protocol, ProxyConfig, Upstream};
use podmesh_route::outbound::{self, Connection};
use podmesh_route::request::{Addressed, Detected, Handling, HttpRequest, handling};
use podmesh_route::{ReasonCode, Rejection, Rule, Side};
use tokio::net::TcpStream;

use crate::Proxy;
use crate::http::{
    ForwardError, HeaderView, PoolKey, RespBody, ServiceResult, body_error, client_body_error, finish_response,
    for_next_hop, forward, host_of, malformed, protocol_name, refuse_request, rejection_response, serve_connection,
};
use crate::io::{Prefixed, Sniffed, reset, sniff};
use crate::log::{AccessRecord, Direction};
use crate::tls::server_name;

/// Endpoints tried for one request or connection: the first and at most 2 retries, each on another (R3.1).
const MAX_ATTEMPTS: usize = 3;

pub(crate) async fn handle(proxy: Arc<Proxy>, stream: TcpStream, src: SocketAddr, dst: SocketAddr) {
    let start = Instant::now();
    let cfg = proxy.config.current();
    let tcp_record = |reason: ReasonCode| {
        let mut r = AccessRecord::new(Direction::Outbound, "tcp", src, dst);
        r.reason(reason);
        r
    };
    match outbound::connection(&cfg, dst) {
        Err(rej) => reject_connection(&proxy, stream, src, dst, &rej, start).await,
        Ok(Connection::Passthrough) => {
            let client = Prefixed::new(BytesMut::new(), stream);
            splice(&proxy, client, dst, None, tcp_record(ReasonCode::Passthrough), start).await;
        }
        Ok(Connection::SidecarPort { .. }) => {
            let client = Prefixed::new(BytesMut::new(), stream);
            splice(&proxy, client, dst, None, tcp_record(ReasonCode::Ok), start).await;
        }
        Ok(Connection::Direct { pod, port, tls }) => {
            // R3.3: exactly the pod dialled, whatever the bytes say; the destination decides what it admits.
            let mut rec = tcp_record(ReasonCode::Ok);
            rec.upstream_pod = Some(pod.pod.to_string());
            rec.peer_identity = tls.map(|i| i.as_str().to_string());
            let tls = tls.map(|id| (id.clone(), server_name(&Addressed::Direct, None, port, &cfg.mesh.cluster_domain)));
            let client = Prefixed::new(BytesMut::new(), stream);
            splice(&proxy, client, dst, tls, rec, start).await;
        }
        Ok(Connection::Service(listener)) => {
            let listener = listener.clone();
            service_connection(proxy, &cfg, stream, &listener, src, dst, start).await;
        }
    }
}

/// R3.1/R3.2: a connection to a Service's ClusterIP. A TCP port never waits for the client (server-first
/// protocols work); other ports look at the first bytes (R1.3).
async fn service_connection(
    proxy: Arc<Proxy>,
    cfg: &ProxyConfig,
    mut stream: TcpStream,
    listener: &Listener,
    src: SocketAddr,
    dst: SocketAddr,
    start: Instant,
) {
    let (sniffed, buf) = if listener.protocol == Protocol::Tcp {
        (Sniffed::Opaque, BytesMut::new())
    } else {
        match sniff(&mut stream, proxy.detection_timeout()).await {
            Ok(s) => s,
            Err(_) => return,
        }
    };
    let detected = if sniffed.is_http() { Detected::Http } else { Detected::Opaque };
    let what = format!("port {} of Service {}", listener.port, listener.service);
    let client = Prefixed::new(buf, stream);
    match handling(listener.protocol, &listener.protocol_from, detected, Side::Source, &what) {
        Ok(Handling::Http) => serve_http(proxy, client, listener.clone(), src, dst).await,
        Ok(Handling::Tcp) => tcp_service(&proxy, cfg, client, listener, src, dst, start).await,
        Err(rej) => {
            let mut rec = AccessRecord::new(Direction::Outbound, "tcp", src, dst);
            rec.service = Some(listener.service.to_string());
            rec.rejected(&rej);
            reset(client.inner());
            proxy.log.write(rec, start.elapsed());
        }
    }
}

/// A refused connection: an HTTP client gets the documented status, anything else a reset (R6).
async fn reject_connection(
    proxy: &Proxy,
    mut stream: TcpStream,
    src: SocketAddr,
    dst: SocketAddr,
    rej: &Rejection,
    start: Instant,
) {
    let http = rej.reason.http_status().is_some();
    let sniffed = if http { sniff(&mut stream, proxy.detection_timeout()).await.ok() } else { None };
    match sniffed {
        Some((kind, buf)) if kind.is_http() => {
            let log = proxy.log.clone();
            let rej = rej.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let mut rec = AccessRecord::new(Direction::Outbound, protocol_name(req.version()), src, dst);
                request_fields(&mut rec, &req);
                rec.rejected(&rej);
                let resp = rejection_response(&rej);
                rec.status = Some(resp.status().as_u16());
                log.write(rec, start.elapsed());
                async move { ServiceResult::Ok(resp) }
            });
            let rec = AccessRecord::new(Direction::Outbound, "http/1.1", src, dst);
            serve_connection(&proxy.log, Box::new(Prefixed::new(buf, stream)), svc, rec, proxy.draining()).await;
        }
        _ => {
            let mut rec = AccessRecord::new(Direction::Outbound, "tcp", src, dst);
            rec.rejected(rej);
            reset(&stream);
            proxy.log.write(rec, start.elapsed());
        }
    }
}

/// R3.2: one connection to one endpoint of the Service, least connections, another endpoint on connect failure.
async fn tcp_service(
    proxy: &Proxy,
    cfg: &ProxyConfig,
    client: Prefixed<TcpStream>,
    listener: &Listener,
    src: SocketAddr,
    dst: SocketAddr,
    start: Instant,
) {
    let mut rec = AccessRecord::new(Direction::Outbound, "tcp", src, dst);
    rec.service = Some(listener.service.to_string());
    let up = match outbound::tcp_connection(cfg, listener) {
        Ok(up) => up,
        Err(rej) => {
            rec.rejected(&rej);
            reset(client.inner());
            proxy.log.write(rec, start.elapsed());
            return;
        }
    };
    let addressed = Addressed::Service { service: up.service.clone(), port: up.port };
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = String::new();
    while tried.len() < MAX_ATTEMPTS {
        let candidates: Vec<&Endpoint> = up.ready().filter(|e| !tried.contains(&e.address)).collect();
        let turn = proxy.connections.next_turn();
        let Some(i) = least_loaded(candidates.len(), |i| proxy.connections.load(&candidates[i].address), turn) else {
            break;
        };
        let ep = candidates[i];
        tried.push(ep.address);
        let key = endpoint_key(cfg, up, ep, &addressed, http::Version::HTTP_11);
        match crate::http::connect(proxy, &key).await {
            Ok(upstream) => {
                let _guard = proxy.connections.start(&ep.address);
                fill_endpoint(&mut rec, ep);
                copy(proxy, client, upstream, rec, start).await;
                return;
            }
            Err(e) => last_error = format!("{}: {e}", ep.address),
        }
    }
    rec.rejected(&connect_failure(up, &last_error));
    reset(client.inner());
    proxy.log.write(rec, start.elapsed());
}

/// Forwards the connection's bytes to `addr` (mTLS when `tls` is set) and logs it.
async fn splice(
    proxy: &Proxy,
    client: Prefixed<TcpStream>,
    addr: SocketAddr,
    tls: Option<(podmesh_compute::Identity, String)>,
    mut rec: AccessRecord,
    start: Instant,
) {
    let key = PoolKey { addr, tls, version: http::Version::HTTP_11 };
    rec.upstream = Some(addr);
    match crate::http::connect(proxy, &key).await {
        Ok(upstream) => copy(proxy, client, upstream, rec, start).await,
        Err(e) => {
            rec.rejected(&Rejection::new(
                ReasonCode::UpstreamConnectFailure,
                Side::Source,
                Rule::R3_3,
                format!("cannot connect to {addr}: {e}"),
                "check that the destination is running and listening on that port",
            ));
            reset(client.inner());
            proxy.log.write(rec, start.elapsed());
        }
    }
}

/// Copies both ways until both sides are done; a reset on one side resets the other (R6 `upstream_reset`).
async fn copy(
    proxy: &Proxy,
    mut client: Prefixed<TcpStream>,
    mut upstream: Box<dyn crate::io::Io>,
    mut rec: AccessRecord,
    start: Instant,
) {
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => {
            rec.bytes_received = sent;
            rec.bytes_sent = received;
        }
        Err(e) => {
            if rec.reason == ReasonCode::Ok {
                rec.reason(ReasonCode::UpstreamReset);
                rec.message = Some(format!("connection failed mid-stream: {e}"));
            }
            reset(client.inner());
        }
    }
    proxy.log.write(rec, start.elapsed());
}

/// R3.1: the client's connection is parsed as HTTP (1.1 or 2) and each request routed on its own.
async fn serve_http(
    proxy: Arc<Proxy>,
    client: Prefixed<TcpStream>,
    listener: Listener,
    src: SocketAddr,
    dst: SocketAddr,
) {
    let listener = Arc::new(listener);
    let log = proxy.log.clone();
    let draining = proxy.draining();
    let svc = service_fn(move |req: Request<Incoming>| {
        let (proxy, listener) = (Arc::clone(&proxy), Arc::clone(&listener));
        async move { ServiceResult::Ok(request(&proxy, &listener, req, src, dst).await) }
    });
    let rec = AccessRecord::new(Direction::Outbound, "http/1.1", src, dst);
    serve_connection(&log, Box::new(client), svc, rec, draining).await;
}

/// One HTTP request on a Service connection: route by Host (Host wins), pick a destination by weight, an endpoint
/// by least request (P2C), and retry another endpoint when the connection cannot be made.
async fn request(
    proxy: &Proxy,
    listener: &Listener,
    req: Request<Incoming>,
    src: SocketAddr,
    dst: SocketAddr,
) -> http::Response<RespBody> {
    let start = Instant::now();
    // The config of this request: a reload applies to the next request, never to one in flight.
    let cfg = proxy.config.current();
    let mut rec = AccessRecord::new(Direction::Outbound, protocol_name(req.version()), src, dst);
    request_fields(&mut rec, &req);
    if let Some(rej) = malformed(&req, Side::Source) {
        return refuse_request(&proxy.log, rec, &rej, start);
    }
    let mut rng = Rng::from_entropy();
    let up = {
        let headers = HeaderView(req.headers());
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        let hreq = HttpRequest { host: host_of(&req), method: req.method().as_str(), path, headers: &headers };
        match outbound::http_request(&cfg, listener, &hreq).and_then(|fwd| fwd.pick(rng.next_u64())) {
            Ok(up) => up,
            Err(rej) => return refuse_request(&proxy.log, rec, &rej, start),
        }
    };
    rec.service = Some(up.service.to_string());
    let (mut req, version, request_bytes) = for_next_hop(req);
    let addressed = Addressed::Service { service: up.service.clone(), port: up.port };
    let ready: Vec<&Endpoint> = up.ready().collect();
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut last_error = String::new();
    while tried.len() < MAX_ATTEMPTS {
        let candidates: Vec<&Endpoint> = ready.iter().copied().filter(|e| !tried.contains(&e.address)).collect();
        let Some(i) = p2c(candidates.len(), |i| proxy.requests.load(&candidates[i].address), &mut rng) else {
            break;
        };
        let ep = candidates[i];
        tried.push(ep.address);
        let key = endpoint_key(&cfg, up, ep, &addressed, version);
        let guard = proxy.requests.start(&ep.address);
        fill_endpoint(&mut rec, ep);
        match forward(proxy, key, req).await {
            Ok(resp) => {
                drop(guard);
                return finish_response(&proxy.log, resp, rec, request_bytes, start);
            }
            Err((ForwardError::Connect(e), Some(back))) => {
                last_error = format!("{}: {e}", ep.address);
                req = back;
            }
            Err((ForwardError::Send(e), _)) if client_body_error(&e) => {
                return refuse_request(&proxy.log, rec, &body_error(&e, Side::Source), start);
            }
            Err((e, _)) => {
                let rej = Rejection::new(
                    ReasonCode::UpstreamReset,
                    Side::Source,
                    Rule::R3_1,
                    format!("{} reset the request before responding: {e}", ep.address),
                    "check the application's logs on that pod",
                );
                return refuse_request(&proxy.log, rec, &rej, start);
            }
        }
    }
    refuse_request(&proxy.log, rec, &connect_failure(up, &last_error), start)
}

fn connect_failure(up: &Upstream, last_error: &str) -> Rejection {
    Rejection::new(
        ReasonCode::UpstreamConnectFailure,
        Side::Source,
        Rule::R3_1,
        format!(
            "no ready endpoint of Service {} port {} accepted a connection (last: {last_error}).",
            up.service, up.port
        ),
        format!("check that the pods behind {} listen on their target port", up.service),
    )
}

/// The pool key of an endpoint: mTLS with the expected identity and the R3.6 SNI when the endpoint asks for it.
fn endpoint_key(
    cfg: &ProxyConfig,
    up: &Upstream,
    ep: &Endpoint,
    addressed: &Addressed,
    version: http::Version,
) -> PoolKey {
    let tls = ep.tls.as_ref().map(|id| {
        let port = podmesh_model::TargetPort(ep.address.port());
        (id.clone(), server_name(addressed, up.subset.as_deref(), port, &cfg.mesh.cluster_domain))
    });
    PoolKey { addr: ep.address, tls, version }
}

fn fill_endpoint(rec: &mut AccessRecord, ep: &Endpoint) {
    rec.upstream = Some(ep.address);
    rec.upstream_pod = ep.pod.as_ref().map(ToString::to_string);
    rec.peer_identity = ep.tls.as_ref().map(|i| i.as_str().to_string());
}

pub(crate) fn request_fields<B>(rec: &mut AccessRecord, req: &Request<B>) {
    rec.host = host_of(req).map(str::to_string);
    rec.method = Some(req.method().to_string());
    rec.path = Some(req.uri().path_and_query().map_or("/", |p| p.as_str()).to_string());
}
