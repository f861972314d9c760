//! The sidecar's own HTTP endpoints (R7), plain HTTP/1.1 on listeners the caller binds:
//!
//! - **15020** ([`serve_stats`]): `/stats/prometheus`, the proxy's metrics merged with the application's own (R8),
//!   and `/healthz/ready`. Plaintext even under STRICT, so any Prometheus can scrape every pod. Also the
//!   application's kubelet probes, rewritten by the injector to `/app-health/<container>/{readyz,livez,startupz}`
//!   (`--app-probes`, Istio's `ISTIO_KUBE_APP_PROBERS`; [`crate::probe`]): under STRICT the kubelet's plaintext
//!   probe of the application port would be refused, so the sidecar performs the original probe over the pod's
//!   loopback and answers for it — 200 for an HTTP status 200–399 or an accepted TCP connection, the application's
//!   own status otherwise, 500 with a one-line reason when it could not be reached in time. Only the configured
//!   paths are answered; any other `/app-health/...` is a 404.
//! - **15021** ([`serve_readiness`]): `/healthz/ready` only, for the kubelet's readiness probe.
//! - **127.0.0.1:15000** ([`serve_admin`]): `/config_dump` (the config in force, as JSON), `/clusters` (each
//!   upstream cluster's endpoints with their live load), `/logging` (the access log's runtime switch). Bind it to
//!   loopback only: it shows the whole mesh's config and changes the proxy's behaviour.
//!
//! Where the application's metrics are: the pod's `prometheus.io/port` and `prometheus.io/path` annotations, as
//! Prometheus' Kubernetes discovery reads them. The sidecar's config (`ProxyConfig.workload`) carries the pod's
//! labels but not its annotations, so whoever starts the sidecar reads them from the pod ([`AppMetrics::from_annotations`])
//! and passes them in (`podmesh proxy --app-metrics-port/--app-metrics-path`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ACCEPT, ALLOW, CONTENT_TYPE, HOST};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use podmesh_compute::ProxyConfig;

use crate::Proxy;
use crate::metrics::CONTENT_TYPE as PROMETHEUS_TEXT;
use crate::probe::{self, AppProbe, AppProbes, Outcome};

/// How long one scrape of the application may take: under Prometheus' default scrape timeout (10 s), so a slow
/// application still leaves time to serve the proxy's own metrics.
pub const APP_SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest application metrics body merged; a larger one counts as a failed scrape.
pub const APP_METRICS_MAX_BYTES: usize = 32 * 1024 * 1024;

/// A client must send its request headers within this time (the endpoints face the pod network).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Where the application serves its own Prometheus metrics, on the pod's loopback (R8).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMetrics {
    pub port: u16,
    /// The request path, starting with `/` (may carry a query).
    pub path: String,
}

impl AppMetrics {
    pub const SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
    pub const PORT_ANNOTATION: &str = "prometheus.io/port";
    pub const PATH_ANNOTATION: &str = "prometheus.io/path";
    /// Prometheus' default when the path annotation is absent.
    pub const DEFAULT_PATH: &str = "/metrics";

    /// `path` gets a leading `/` if it lacks one; empty means [`Self::DEFAULT_PATH`].
    pub fn new(port: u16, path: &str) -> Self {
        let path = match path.trim() {
            "" => Self::DEFAULT_PATH.to_string(),
            p if p.starts_with('/') => p.to_string(),
            p => format!("/{p}"),
        };
        AppMetrics { port, path }
    }

    /// From a pod's annotations: `prometheus.io/port` (required to merge anything) and `prometheus.io/path`; none
    /// when there is no port or `prometheus.io/scrape` is `"false"`. An unparsable port is an error that says so.
    pub fn from_annotations(annotations: &BTreeMap<String, String>) -> Result<Option<Self>, String> {
        if annotations.get(Self::SCRAPE_ANNOTATION).is_some_and(|s| s.trim().eq_ignore_ascii_case("false")) {
            return Ok(None);
        }
        let Some(port) = annotations.get(Self::PORT_ANNOTATION) else { return Ok(None) };
        let port: u16 = port
            .trim()
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("annotation {}: {port:?} is not a port number", Self::PORT_ANNOTATION))?;
        let path = annotations.get(Self::PATH_ANNOTATION).map_or(Self::DEFAULT_PATH, String::as_str);
        Ok(Some(Self::new(port, path)))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}{}", self.port, self.path)
    }
}

/// 15020: `/stats/prometheus` (merged metrics, R8), `/healthz/ready`, and the application's rewritten kubelet
/// probes (`app_probes`, empty when none were rewritten). Runs until the task is aborted, which also closes the
/// connections it serves.
pub fn serve_stats(
    proxy: &Arc<Proxy>,
    listener: TcpListener,
    app_metrics: Option<AppMetrics>,
    app_probes: AppProbes,
) -> JoinHandle<()> {
    let proxy = Arc::clone(proxy);
    let app = app_metrics.map(Arc::new);
    let probes = Arc::new(app_probes);
    serve(listener, "stats", false, move |req| {
        let (proxy, app, probes) = (Arc::clone(&proxy), app.clone(), Arc::clone(&probes));
        async move {
            match req.uri().path() {
                "/stats/prometheus" => match read_only(&req) {
                    Some(refused) => refused,
                    None => prometheus(&proxy, app.as_deref()).await,
                },
                "/healthz/ready" => read_only(&req).unwrap_or_else(|| readiness(&proxy)),
                path if path.starts_with(probe::PATH_PREFIX) => match (probes.get(path), read_only(&req)) {
                    (None, _) => unknown_probe(path, &probes),
                    (Some(_), Some(refused)) => refused,
                    (Some(probe), None) => app_probe(&proxy, path, probe).await,
                },
                _ => not_found("/stats/prometheus /healthz/ready"),
            }
        }
    })
}

/// 15021: `/healthz/ready` only. Runs until the task is aborted.
pub fn serve_readiness(proxy: &Arc<Proxy>, listener: TcpListener) -> JoinHandle<()> {
    let proxy = Arc::clone(proxy);
    serve(listener, "readiness", false, move |req| {
        let proxy = Arc::clone(&proxy);
        async move {
            match req.uri().path() {
                "/healthz/ready" => read_only(&req).unwrap_or_else(|| readiness(&proxy)),
                _ => not_found("/healthz/ready"),
            }
        }
    })
}

/// 127.0.0.1:15000: `/config_dump`, `/clusters`, `/logging`. Runs until the task is aborted. Bind it to loopback;
/// a connection from any other address is closed unanswered all the same (R7: localhost only), since the endpoint
/// shows the mesh's whole config and switches the access log.
pub fn serve_admin(proxy: &Arc<Proxy>, listener: TcpListener) -> JoinHandle<()> {
    let proxy = Arc::clone(proxy);
    serve(listener, "admin", true, move |req| {
        let proxy = Arc::clone(&proxy);
        async move {
            match req.uri().path() {
                "/config_dump" => read_only(&req).unwrap_or_else(|| json(&*proxy.config.current())),
                "/clusters" => read_only(&req).unwrap_or_else(|| json(&clusters(&proxy, &proxy.config.current()))),
                "/logging" => logging(&proxy, &req),
                _ => not_found("/config_dump /clusters /logging"),
            }
        }
    })
}

/// Accepts connections and serves each with `handler` until the task is aborted. The connections live in a
/// `JoinSet` owned by the task, so aborting it also ends every keep-alive connection it was serving.
/// `loopback_only`: connections from any other address are closed unanswered.
fn serve<H, F>(listener: TcpListener, what: &'static str, loopback_only: bool, handler: H) -> JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    // `to_canonical`: a dual-stack socket sees 127.0.0.1 as ::ffff:127.0.0.1.
                    Ok((_, peer)) if loopback_only && !peer.ip().to_canonical().is_loopback() => {}
                    Ok((stream, _)) => {
                        let handler = handler.clone();
                        connections.spawn(async move {
                            let svc = service_fn(move |req| {
                                let response = handler(req);
                                async move { Ok::<_, Infallible>(response.await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .timer(TokioTimer::new())
                                .header_read_timeout(HEADER_READ_TIMEOUT)
                                .serve_connection(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off rather than spin.
                        eprintln!("podmesh proxy: accept on the {what} listener failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                // Reap finished connections so the set does not grow with every scrape.
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    })
}

/// The proxy's metrics, then the application's (R8). A failed application scrape never fails the response: the
/// proxy's metrics are served with a comment saying what failed, and `podmesh_app_scrape_errors_total` counts it.
async fn prometheus(proxy: &Proxy, app: Option<&AppMetrics>) -> Response<Full<Bytes>> {
    // Scraped first, so that a failure is already in the counter the proxy's metrics below show.
    let scraped = match app {
        Some(app) => Some((app, scrape_app(proxy, app).await)),
        None => None,
    };
    if let Some((_, Err(_))) = &scraped {
        proxy.metrics().app_scrape_failed();
    }
    let mut body = String::with_capacity(16 * 1024);
    if proxy.metrics().encode(&mut body).is_err() {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "podmesh: encoding the metrics failed\n");
    }
    match scraped {
        None => {}
        Some((_, Ok(app_text))) => append_app_metrics(&mut body, &app_text),
        Some((app, Err(e))) => {
            // A comment line: scrapers skip it, a human reading the page sees why the application's part is missing.
            let e = e.replace(['\r', '\n'], " ");
            let _ = writeln!(body, "# podmesh: the application's metrics at {} could not be scraped: {e}", app.url());
        }
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(PROMETHEUS_TEXT));
    resp
}

/// Appends the application's metrics as they came, less an OpenMetrics `# EOF` (the document goes on after it)
/// and with a final newline.
fn append_app_metrics(body: &mut String, app: &str) {
    for line in app.lines() {
        if line.trim_end() == "# EOF" {
            continue;
        }
        body.push_str(line);
        body.push('\n');
    }
}

/// GETs the application's metrics over the pod's loopback, through the proxy's dialer so the connection carries the
/// proxy's socket mark and is not captured (R7).
async fn scrape_app(proxy: &Proxy, app: &AppMetrics) -> Result<String, String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, app.port));
    let scrape = async {
        let stream = proxy.dialer.connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
        // The connection task ends when the sender is dropped (here, or by the timeout below).
        tokio::spawn(conn);
        let req = Request::get(app.path.as_str())
            .header(HOST, format!("127.0.0.1:{}", app.port))
            // The classic text format first: it is what the merged document is served as.
            .header(ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("bad path {:?}: {e}", app.path))?;
        let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let body = Limited::new(resp.into_body(), APP_METRICS_MAX_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the body: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| "the body is not UTF-8 text".to_string())
    };
    tokio::time::timeout(APP_SCRAPE_TIMEOUT, scrape)
        .await
        .map_err(|_| format!("no complete answer within {} s", APP_SCRAPE_TIMEOUT.as_secs()))?
}

/// Performs an application probe and answers for it as the kubelet reads answers (200–399 pass, anything else
/// fails): the application's own failing status is passed on, as Istio does, so the pod's events show it.
async fn app_probe(proxy: &Proxy, path: &str, probe: &AppProbe) -> Response<Full<Bytes>> {
    let port = probe.action.port();
    match probe.run(&proxy.dialer).await {
        Outcome::Answered(status) if (200..400).contains(&status.as_u16()) => {
            text(StatusCode::OK, format!("ok: the application on port {port} answered {status}\n"))
        }
        Outcome::Answered(status) if status.as_u16() >= 400 => {
            text(status, format!("podmesh: app probe {path}: the application on port {port} answered {status}\n"))
        }
        Outcome::Answered(status) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "podmesh: app probe {path}: the application on port {port} answered {status}, not a final answer\n"
            ),
        ),
        Outcome::Connected => {
            text(StatusCode::OK, format!("ok: the application accepted a connection on port {port}\n"))
        }
        Outcome::Failed(why) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("podmesh: app probe {path}: {why}\n")),
    }
}

/// A 404 for an `/app-health/...` path that was not rewritten, listing those that were: a probe pointing at the
/// wrong container or kind (`readyz`, `livez`, `startupz`) shows what to point it at.
fn unknown_probe(path: &str, probes: &AppProbes) -> Response<Full<Bytes>> {
    let configured = if probes.is_empty() { "none".to_string() } else { probes.paths().collect::<Vec<_>>().join(" ") };
    text(
        StatusCode::NOT_FOUND,
        format!("podmesh: no application probe is configured at {path} (--app-probes). Configured: {configured}\n"),
    )
}

fn readiness(proxy: &Proxy) -> Response<Full<Bytes>> {
    if proxy.is_ready() {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "not ready: the proxy's listeners are not serving yet\n")
    }
}

/// One upstream cluster in `/clusters`.
#[derive(Debug, Serialize)]
struct ClusterView<'a> {
    name: &'a str,
    service: String,
    port: &'a podmesh_model::ServicePort,
    #[serde(skip_serializing_if = "Option::is_none")]
    subset: Option<&'a str>,
    protocol: &'a podmesh_compute::Protocol,
    endpoints: Vec<EndpointView<'a>>,
}

#[derive(Debug, Serialize)]
struct EndpointView<'a> {
    address: SocketAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pod: Option<String>,
    ready: bool,
    /// The identity required of it over mTLS; none: plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<&'a str>,
    /// Live load, as the balancers see it. Loads are per address, so an endpoint in several clusters shows the
    /// same numbers in each.
    requests_in_flight: u64,
    open_connections: u64,
}

#[derive(Debug, Serialize)]
struct ClustersView<'a> {
    clusters: Vec<ClusterView<'a>>,
}

fn clusters<'a>(proxy: &Proxy, cfg: &'a ProxyConfig) -> ClustersView<'a> {
    ClustersView {
        clusters: cfg
            .outbound
            .clusters
            .iter()
            .map(|(name, up)| ClusterView {
                name: &name.0,
                service: up.service.to_string(),
                port: &up.port,
                subset: up.subset.as_deref(),
                protocol: &up.protocol,
                endpoints: up
                    .endpoints
                    .iter()
                    .map(|ep| EndpointView {
                        address: ep.address,
                        pod: ep.pod.as_ref().map(ToString::to_string),
                        ready: ep.ready,
                        identity: ep.tls.as_ref().map(|i| i.as_str()),
                        requests_in_flight: proxy.requests_in_flight(&ep.address),
                        open_connections: proxy.open_connections(&ep.address),
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `GET /logging` shows the access log's state; `POST /logging?level=off|on` switches it at runtime (metrics are
/// recorded either way). A change needs POST, as Envoy's admin API does, so no stray GET can turn logging off.
fn logging(proxy: &Proxy, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let level = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| match kv.split_once('=') {
            Some(("level", v)) => Some(v),
            _ => None,
        })
    });
    match (req.method(), level) {
        (&Method::GET | &Method::HEAD, None) => {}
        (&Method::POST, Some(level)) => {
            let on = match level {
                "on" => true,
                "off" => false,
                other => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("podmesh admin: unknown level {other:?}; use POST /logging?level=off or ?level=on\n"),
                    );
                }
            };
            if !proxy.log.set_enabled(on) {
                return text(StatusCode::CONFLICT, "podmesh admin: this access log has no runtime switch\n");
            }
        }
        (&Method::POST, None) => {
            return text(StatusCode::BAD_REQUEST, "podmesh admin: use POST /logging?level=off or ?level=on\n");
        }
        _ => return method_not_allowed("GET, HEAD, POST", "change the access log with POST /logging?level=off|on"),
    }
    json(&serde_json::json!({
        "access_log": if proxy.log.enabled() { "on" } else { "off" },
        "sink": proxy.log.sink_name(),
    }))
}

/// None for GET and HEAD; the 405 for anything else.
fn read_only<B>(req: &Request<B>) -> Option<Response<Full<Bytes>>> {
    match *req.method() {
        Method::GET | Method::HEAD => None,
        _ => Some(method_not_allowed("GET, HEAD", "this endpoint is read-only")),
    }
}

fn method_not_allowed(allow: &'static str, why: &str) -> Response<Full<Bytes>> {
    let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, format!("podmesh: method not allowed: {why}\n"));
    resp.headers_mut().insert(ALLOW, http::HeaderValue::from_static(allow));
    resp
}

fn not_found(endpoints: &str) -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, format!("podmesh: no such endpoint. Endpoints here: {endpoints}\n"))
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(TEXT));
    resp
}

fn json<T: Serialize + ?Sized>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            resp.headers_mut().insert(CONTENT_TYPE, http::HeaderValue::from_static(JSON));
            resp
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("podmesh: encoding JSON failed: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn app_metrics_from_annotations() {
        let a = |pairs: &[(&str, &str)]| AppMetrics::from_annotations(&annotations(pairs));
        assert_eq!(a(&[]), Ok(None));
        assert_eq!(a(&[("prometheus.io/port", "9090")]), Ok(Some(AppMetrics::new(9090, "/metrics"))));
        assert_eq!(
            a(&[("prometheus.io/port", " 8080 "), ("prometheus.io/path", "stats")]),
            Ok(Some(AppMetrics { port: 8080, path: "/stats".into() }))
        );
        assert_eq!(a(&[("prometheus.io/port", "9090"), ("prometheus.io/scrape", "false")]), Ok(None));
        assert!(a(&[("prometheus.io/port", "http")]).is_err());
        assert!(a(&[("prometheus.io/port", "0")]).is_err());
    }

    #[test]
    fn app_metrics_lose_their_eof_and_end_in_a_newline() {
        let mut body = String::from("a 1\n");
        append_app_metrics(&mut body, "# TYPE b counter\nb_total 2\n# EOF\n");
        append_app_metrics(&mut body, "c 3");
        assert_eq!(body, "a 1\n# TYPE b counter\nb_total 2\nc 3\n");
    }
}
