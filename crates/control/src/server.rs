//! The control plane's listeners: gRPC over TLS (xDS and the CA on one port, as istiod's 15012) and plain-HTTP
//! monitoring (metrics, `/debug/syncz` for `podmesh proxy-status`, readiness; istiod's 15014).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use podmesh_identity::{Credentials, Identity, peer_identity};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

use crate::Shared;
use crate::status::{Nack, ProxyStatus};

/// Who is on the other end of a gRPC connection: its address and, when it presented one, its mesh identity.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub identity: Option<Identity>,
}

/// An accepted TLS connection, with what the handshake established, for tonic. It fails every read and write
/// once the control plane stops (`stop` is cancelled), so its streams end then and sidecars reconnect, rather
/// than outliving the server they belonged to.
pub struct TlsConn {
    io: TlsStream<TcpStream>,
    info: ConnInfo,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl std::fmt::Debug for TlsConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConn").field("info", &self.info).finish_non_exhaustive()
    }
}

impl TlsConn {
    fn check_stopped(&mut self, cx: &mut Context<'_>) -> std::io::Result<()> {
        match self.stopped.as_mut().poll(cx) {
            Poll::Ready(()) => Err(std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "control plane stopped")),
            Poll::Pending => Ok(()),
        }
    }
}

impl Connected for TlsConn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        me.check_stopped(cx)?;
        Pin::new(&mut me.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        me.check_stopped(cx)?;
        Pin::new(&mut me.io).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let me = self.get_mut();
        me.check_stopped(cx)?;
        Pin::new(&mut me.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS connections accepted on `listener`, each handshake in a task of its own so a slow client holds up no one.
/// The serving certificate is re-read from `tls` for every handshake (it is renewed at half its lifetime).
pub fn accept_tls(
    listener: TcpListener,
    tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>,
    stop: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<std::io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            // Stopping closes the listener at once (a restarted control plane binds the same address).
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = stop.cancelled() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.load_full());
            let conns = tx.clone();
            let stopped = Box::pin(stop.clone().cancelled_owned());
            tokio::spawn(async move {
                let Ok(Ok(io)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else { return };
                let identity = io.get_ref().1.peer_certificates().and_then(|c| peer_identity(c).ok());
                let _ = conns.send(Ok(TlsConn { io, info: ConnInfo { remote, identity }, stopped })).await;
            });
            if tx.is_closed() || stop.is_cancelled() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The serving TLS config of the control plane: its own certificate, client certificates optional.
pub fn serving_config(shared: &Shared) -> Result<Arc<rustls::ServerConfig>, String> {
    let identity = crate::authority::control_identity(&shared.trust_domain);
    let cert =
        shared.authority.issue(&identity).map_err(|e| format!("issuing the control plane's certificate: {e}"))?;
    let creds = Credentials::from_pem(&cert.cert_chain_pem, &cert.key_pem, &shared.authority.trust_anchors().join(""))
        .map_err(|e| format!("the control plane's certificate: {e}"))?;
    creds.server_config_client_optional(&[b"h2"]).map_err(|e| format!("the control plane's TLS config: {e}"))
}

/// Serves monitoring on `listener` until the task is dropped.
pub async fn serve_monitoring(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = Arc::clone(&shared);
                async move { Ok::<_, Infallible>(monitoring(&shared, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc).await;
        });
    }
}

/// What `/debug/syncz` serves.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Syncz {
    pub generation: u64,
    pub cause: String,
    pub proxies: Vec<SyncEntry>,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncEntry {
    pub pod: String,
    pub identity: String,
    pub address: String,
    pub sync_state: String,
    pub config_generation: u64,
    pub last_nack: Option<Nack>,
}

impl SyncEntry {
    fn of(p: &ProxyStatus) -> SyncEntry {
        SyncEntry {
            pod: p.pod.clone(),
            identity: p.identity.clone(),
            address: p.address.clone(),
            sync_state: p.sync_state().to_string(),
            config_generation: p.config_generation(),
            last_nack: p.last_nack.clone(),
        }
    }
}

fn monitoring(shared: &Shared, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, ctype: &'static str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
        r
    };
    match req.uri().path() {
        "/metrics" => {
            let mut text = String::new();
            match prometheus_client::encoding::text::encode(&mut text, &shared.registry) {
                Ok(()) => reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
                Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", format!("{e}\n")),
            }
        }
        "/debug/syncz" => {
            let s = shared.current();
            let body = Syncz {
                generation: s.generation,
                cause: s.cause.clone(),
                proxies: shared.proxies.list().iter().map(SyncEntry::of).collect(),
            };
            let text = serde_json::to_string_pretty(&body).unwrap_or_default();
            reply(StatusCode::OK, "application/json", text + "\n")
        }
        "/ready" => reply(StatusCode::OK, "text/plain", "ready\n".into()),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found: /metrics, /debug/syncz, /ready\n".into()),
    }
}
