//! Metrics (R8): each [`AccessRecord`] — the one point where every request and TCP connection ends — also becomes
//! Prometheus samples. Istio's standard metric names and labels, so Istio's dashboards and Kiali's queries work on a
//! podmesh mesh unchanged, and podmesh's own counters by reason code (R6), so a rejection seen in a graph leads to
//! the rule that made it. [`crate::admin`] serves them on 15020.
//!
//! | metric | type | recorded from |
//! |---|---|---|
//! | `istio_requests_total` | counter | each HTTP request record |
//! | `istio_request_duration_milliseconds` | histogram | its duration |
//! | `istio_request_bytes`, `istio_response_bytes` | histograms | its `bytes_received`, `bytes_sent` |
//! | `istio_tcp_connections_opened_total`, `istio_tcp_connections_closed_total` | counters | each TCP record |
//! | `istio_tcp_received_bytes_total`, `istio_tcp_sent_bytes_total` | counters | its `bytes_received`, `bytes_sent` |
//! | `podmesh_requests_total{direction,reason,side}` | counter | each HTTP request record |
//! | `podmesh_connections_total{direction,reason,side}` | counter | each TCP record |
//! | `podmesh_app_scrape_errors_total` | counter | failed scrapes of the application's metrics (R8) |
//! | `podmesh_access_log_dropped_lines_total` | counter | access-log lines dropped because stdout is not read |
//!
//! A TCP connection yields one record, when it closes, so `istio_tcp_connections_opened_total` is counted then too:
//! it equals the closed count and lags a long-lived connection's open. Counting at open would need a hook in the
//! connection handlers; a record at close is the single point this module builds on.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use podmesh_compute::names::{normalize, service_fqdn};
use podmesh_compute::{DirectPod, ProxyConfig, spiffe_namespace};
use podmesh_model::{ObjectKey, TargetPort};
use podmesh_route::{ReasonCode, Side};
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::intake::ConfigHandle;
use crate::log::{AccessRecord, Direction};

/// The `Content-Type` of [`Metrics::encode`]'s output: the Prometheus text format, version 0.0.4.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Istio's buckets for `istio_request_duration_milliseconds`.
pub const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5,
    1.0,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1_000.0,
    2_500.0,
    5_000.0,
    10_000.0,
    30_000.0,
    60_000.0,
    300_000.0,
    600_000.0,
    1_800_000.0,
    3_600_000.0,
];

/// Istio's buckets for `istio_request_bytes` and `istio_response_bytes`: 1, 10, 100, … 1e9.
pub const SIZE_BUCKETS: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// A label value that is not known (Istio's spelling).
pub const UNKNOWN: &str = "unknown";

/// The labels Istio puts on every request and TCP metric.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct IstioLabels {
    /// `source` from the client's sidecar (outbound records), `destination` from the server's (inbound).
    pub reporter: &'static str,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    /// `<name>.<namespace>.svc.<cluster domain>` of the Service the traffic went through, when one is known.
    pub destination_service: String,
    pub destination_principal: String,
    /// `http` or `tcp`.
    pub request_protocol: &'static str,
    /// The Envoy flag of the reason code (R6), `-` when none.
    pub response_flags: &'static str,
    /// `mutual_tls` or `none` as the destination saw the connection; `unknown` from the source, as in Istio.
    pub connection_security_policy: &'static str,
}

/// [`IstioLabels`] and the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub istio: IstioLabels,
    /// The status the client got; 0 when it got none.
    pub response_code: u16,
}

/// podmesh's outcome counters: by reason code, so a graph of rejections names the rule (R6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// The R6 reason code, e.g. `ok`, `no_route`.
    pub reason: &'static str,
    /// The sidecar that decided a rejection, `source` or `destination`; `-` when nothing was rejected.
    pub side: &'static str,
}

/// A histogram family whose histograms all get the same buckets.
type Histograms<S> = Family<S, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

/// One sidecar's metric families, created once; recording takes only each family's internal read lock (and its
/// write lock the first time a label set appears).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Histograms<RequestLabels>,
    request_bytes: Histograms<RequestLabels>,
    response_bytes: Histograms<RequestLabels>,
    tcp_opened: Family<IstioLabels, Counter>,
    tcp_closed: Family<IstioLabels, Counter>,
    tcp_received: Family<IstioLabels, Counter>,
    tcp_sent: Family<IstioLabels, Counter>,
    podmesh_requests: Family<ReasonLabels, Counter>,
    podmesh_connections: Family<ReasonLabels, Counter>,
    app_scrape_errors: Counter,
    access_log_dropped: Counter,
    series: SeriesCache,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Metrics {
            registry: Registry::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(size_histogram),
            response_bytes: Family::new_with_constructor(size_histogram),
            tcp_opened: Family::default(),
            tcp_closed: Family::default(),
            tcp_received: Family::default(),
            tcp_sent: Family::default(),
            podmesh_requests: Family::default(),
            podmesh_connections: Family::default(),
            app_scrape_errors: Counter::default(),
            access_log_dropped: Counter::default(),
            series: SeriesCache::default(),
        };
        let mut r = Registry::default();
        // Counters are registered without `_total`: the encoder appends it (and a debug build panics if the name
        // already has it).
        r.register("istio_requests", "Requests handled by the sidecar", m.requests.clone());
        r.register(
            "istio_request_duration_milliseconds",
            "Request durations, from the request's arrival at the sidecar until its response body was sent",
            m.request_duration.clone(),
        );
        r.register("istio_request_bytes", "Request body sizes", m.request_bytes.clone());
        r.register("istio_response_bytes", "Response body sizes", m.response_bytes.clone());
        r.register(
            "istio_tcp_connections_opened",
            "TCP connections opened (counted when they close, with their outcome)",
            m.tcp_opened.clone(),
        );
        r.register("istio_tcp_connections_closed", "TCP connections closed", m.tcp_closed.clone());
        r.register(
            "istio_tcp_received_bytes",
            "Bytes received from the client of TCP connections",
            m.tcp_received.clone(),
        );
        r.register("istio_tcp_sent_bytes", "Bytes sent to the client of TCP connections", m.tcp_sent.clone());
        r.register("podmesh_requests", "HTTP requests by reason code (R6)", m.podmesh_requests.clone());
        r.register("podmesh_connections", "TCP connections by reason code (R6)", m.podmesh_connections.clone());
        r.register(
            "podmesh_app_scrape_errors",
            "Failed scrapes of the application's own metrics for the merged endpoint (R8)",
            m.app_scrape_errors.clone(),
        );
        r.register(
            "podmesh_access_log_dropped_lines",
            "Access-log lines dropped because standard output was not being read",
            m.access_log_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    /// Turns one access record into samples. `cfg` is the sidecar's config: who it is, and the pod table that
    /// names the peer.
    ///
    /// Building a sample's labels (a dozen strings) and finding its series in five families costs more than the
    /// rest of a request's bookkeeping, and a sidecar sees few distinct label sets. So the series of each
    /// combination of the record fields that decide the labels are found once and kept, for as long as the config
    /// they were named with is in force.
    pub fn record(&self, cfg: &Arc<ProxyConfig>, rec: &AccessRecord, elapsed: Duration) {
        let key = SeriesKey::of(rec);
        let hash = self.series.state.hash_one(&key);
        let mut cache = self.series.map.lock().unwrap_or_else(PoisonError::into_inner);
        if !cache.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, cfg)) || cache.len >= MAX_CACHED_SERIES {
            *cache = SeriesMap { config: Some(Arc::clone(cfg)), ..SeriesMap::default() };
        }
        let SeriesMap { by_hash, len, .. } = &mut *cache;
        let bucket = by_hash.entry(hash).or_default();
        let at = match bucket.iter().position(|(k, _)| k.map(|s| &**s) == key) {
            Some(at) => at,
            None => {
                bucket.push((key.map(|s| Box::<str>::from(*s)), self.series_of(cfg, rec)));
                *len += 1;
                bucket.len() - 1
            }
        };
        let Some((_, series)) = bucket.get(at) else { return };
        match series {
            Series::Tcp { reason, opened, closed, received, sent } => {
                reason.inc();
                opened.inc();
                closed.inc();
                received.inc_by(rec.bytes_received);
                sent.inc_by(rec.bytes_sent);
            }
            Series::Http { reason, requests, duration, request_bytes, response_bytes } => {
                reason.inc();
                requests.inc();
                duration.observe(elapsed.as_secs_f64() * 1000.0);
                request_bytes.observe(rec.bytes_received as f64);
                response_bytes.observe(rec.bytes_sent as f64);
            }
        }
    }

    /// The series a record with these fields counts in, created in their families if new.
    fn series_of(&self, cfg: &ProxyConfig, rec: &AccessRecord) -> Series {
        let reason = ReasonLabels {
            direction: rec.direction.as_str(),
            reason: rec.reason.as_str(),
            side: rec.side.map_or("-", Side::as_str),
        };
        let istio = istio_labels(cfg, rec);
        if istio.request_protocol == "tcp" {
            Series::Tcp {
                reason: self.podmesh_connections.get_or_create(&reason).clone(),
                opened: self.tcp_opened.get_or_create(&istio).clone(),
                closed: self.tcp_closed.get_or_create(&istio).clone(),
                received: self.tcp_received.get_or_create(&istio).clone(),
                sent: self.tcp_sent.get_or_create(&istio).clone(),
            }
        } else {
            let labels = RequestLabels { istio, response_code: rec.status.unwrap_or(0) };
            Series::Http {
                reason: self.podmesh_requests.get_or_create(&reason).clone(),
                requests: self.requests.get_or_create(&labels).clone(),
                duration: self.request_duration.get_or_create(&labels).clone(),
                request_bytes: self.request_bytes.get_or_create(&labels).clone(),
                response_bytes: self.response_bytes.get_or_create(&labels).clone(),
            }
        }
    }

    /// Counts an access-log line dropped because stdout is not being read.
    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Counts a failed scrape of the application's metrics.
    pub fn app_scrape_failed(&self) {
        self.app_scrape_errors.inc();
    }

    /// Appends every family in the Prometheus text format ([`CONTENT_TYPE`]): the format any scraper accepts, and
    /// the one applications' own metrics are usually in, so the two can be served as one document (R8).
    pub fn encode(&self, out: &mut String) -> std::fmt::Result {
        prometheus_text::encode(out, &self.registry)
    }
}

/// Distinct label-deciding combinations kept before the cache starts over (the families keep every series).
const MAX_CACHED_SERIES: usize = 4096;

/// Handles on the series one record counts in: they share their values with the families' own.
#[derive(Debug)]
enum Series {
    Tcp {
        reason: Counter,
        opened: Counter,
        closed: Counter,
        received: Counter,
        sent: Counter,
    },
    Http {
        reason: Counter,
        requests: Counter,
        duration: Histogram,
        request_bytes: Histogram,
        response_bytes: Histogram,
    },
}

/// The fields of an [`AccessRecord`] that decide its labels ([`istio_labels`], [`ReasonLabels`], the status):
/// borrowed from the record (`S = &str`) to look a series up, owned (`S = Box<str>`) as the cache keeps it.
#[derive(Debug, PartialEq, Hash)]
struct SeriesKey<S> {
    direction: Direction,
    protocol: &'static str,
    peer_identity: Option<S>,
    upstream: Option<std::net::IpAddr>,
    upstream_pod: Option<S>,
    service: Option<S>,
    src: std::net::IpAddr,
    dst_port: u16,
    host: Option<S>,
    reason: ReasonCode,
    side: Option<Side>,
    status: Option<u16>,
}

impl<'a> SeriesKey<&'a str> {
    fn of(rec: &'a AccessRecord) -> Self {
        SeriesKey {
            direction: rec.direction,
            protocol: rec.protocol,
            peer_identity: rec.peer_identity.as_deref(),
            upstream: rec.upstream.map(|a| a.ip()),
            upstream_pod: rec.upstream_pod.as_deref(),
            service: rec.service.as_deref(),
            src: rec.src.ip(),
            dst_port: rec.dst.port(),
            host: rec.host.as_deref(),
            reason: rec.reason,
            side: rec.side,
            status: rec.status,
        }
    }
}

impl<S> SeriesKey<S> {
    /// The same key with each string field mapped by `f`.
    fn map<'b, T>(&'b self, f: impl Fn(&'b S) -> T) -> SeriesKey<T> {
        SeriesKey {
            direction: self.direction,
            protocol: self.protocol,
            peer_identity: self.peer_identity.as_ref().map(&f),
            upstream: self.upstream,
            upstream_pod: self.upstream_pod.as_ref().map(&f),
            service: self.service.as_ref().map(&f),
            src: self.src,
            dst_port: self.dst_port,
            host: self.host.as_ref().map(&f),
            reason: self.reason,
            side: self.side,
            status: self.status,
        }
    }
}

/// A [`SeriesKey`] as the cache keeps it.
type OwnedKey = SeriesKey<Box<str>>;

/// Series found so far, by the hash of their borrowed [`SeriesKey`], for one config.
#[derive(Debug, Default)]
struct SeriesMap {
    config: Option<Arc<ProxyConfig>>,
    by_hash: HashMap<u64, Vec<(OwnedKey, Series)>>,
    len: usize,
}

#[derive(Debug, Default)]
struct SeriesCache {
    state: std::hash::RandomState,
    map: Mutex<SeriesMap>,
}

/// What the sidecar knows of one end of the traffic.
struct Party {
    workload: String,
    namespace: String,
}

impl Party {
    fn unknown() -> Self {
        Party { workload: UNKNOWN.into(), namespace: UNKNOWN.into() }
    }

    fn of_pod(pod: &DirectPod) -> Self {
        let workload = if pod.workload.is_empty() { UNKNOWN } else { &pod.workload };
        Party { workload: workload.into(), namespace: pod.pod.namespace.to_string() }
    }
}

fn istio_labels(cfg: &ProxyConfig, rec: &AccessRecord) -> IstioLabels {
    let me = &cfg.workload;
    let own = Party { workload: me.workload.clone(), namespace: me.pod.namespace.to_string() };
    // Principals are the identities of the mTLS connection (Istio's meaning), so plaintext has none.
    let mtls = rec.peer_identity.is_some();
    let own_principal = if mtls { me.identity.as_str() } else { UNKNOWN };
    let peer_principal = rec.peer_identity.as_deref().unwrap_or(UNKNOWN);
    let request_protocol = if rec.protocol == "tcp" { "tcp" } else { "http" };
    let domain = &cfg.mesh.cluster_domain;
    match rec.direction {
        Direction::Outbound => {
            let server = outbound_peer(cfg, rec.upstream, rec.upstream_pod.as_deref());
            let service =
                rec.service.as_deref().and_then(ObjectKey::parse).map(|k| service_fqdn(&k.name, &k.namespace, domain));
            IstioLabels {
                reporter: "source",
                source_workload: own.workload,
                source_workload_namespace: own.namespace,
                source_principal: own_principal.into(),
                destination_workload: server.workload,
                destination_workload_namespace: server.namespace,
                destination_service: service.unwrap_or_else(|| UNKNOWN.into()),
                destination_principal: peer_principal.into(),
                request_protocol,
                response_flags: rec.flag,
                connection_security_policy: UNKNOWN,
            }
        }
        Direction::Inbound => {
            let client_ns = rec.peer_identity.as_deref().and_then(spiffe_namespace);
            let client = inbound_peer(cfg, rec.src, rec.peer_identity.as_deref(), client_ns);
            let service = inbound_service(cfg, rec, client_ns.unwrap_or(&me.pod.namespace));
            IstioLabels {
                reporter: "destination",
                source_workload: client.workload,
                source_workload_namespace: client.namespace,
                source_principal: peer_principal.into(),
                destination_workload: own.workload,
                destination_workload_namespace: own.namespace,
                destination_service: service.unwrap_or_else(|| UNKNOWN.into()),
                destination_principal: own_principal.into(),
                request_protocol,
                response_flags: rec.flag,
                connection_security_policy: if mtls { "mutual_tls" } else { "none" },
            }
        }
    }
}

/// The server of outbound traffic: the pod at the upstream address, from the mesh's pod table.
fn outbound_peer(cfg: &ProxyConfig, upstream: Option<SocketAddr>, upstream_pod: Option<&str>) -> Party {
    if let Some(pod) = upstream.and_then(|a| cfg.outbound.pods.get(&a.ip())) {
        return Party::of_pod(pod);
    }
    // A config reload between the request and its record can drop the address; the record still names the pod.
    match upstream_pod.and_then(ObjectKey::parse) {
        Some(k) => Party { workload: UNKNOWN.into(), namespace: k.namespace.to_string() },
        None => Party::unknown(),
    }
}

/// The client of inbound traffic. Its mTLS identity is the evidence: it gives the namespace, and the pod table
/// gives the workload of the client's address only when that pod has this very identity (an address can be
/// reused; an identity cannot be forged). Plaintext has only the address.
fn inbound_peer(cfg: &ProxyConfig, src: SocketAddr, identity: Option<&str>, identity_ns: Option<&str>) -> Party {
    let pod = cfg.outbound.pods.get(&src.ip());
    match (identity, pod) {
        (None, Some(pod)) => Party::of_pod(pod),
        (Some(id), Some(pod)) if pod.identity.as_ref().is_some_and(|p| p.as_str() == id) => Party::of_pod(pod),
        _ => Party { workload: UNKNOWN.into(), namespace: identity_ns.unwrap_or(UNKNOWN).into() },
    }
}

/// The Service an inbound request or connection came through: the one Service declaring the target port, or,
/// when several do, the one the Host names (R4.3's match). Unknown when it cannot be told.
fn inbound_service(cfg: &ProxyConfig, rec: &AccessRecord, client_ns: &str) -> Option<String> {
    let port = cfg.inbound.ports.get(&TargetPort(rec.dst.port()))?;
    let domain = &cfg.mesh.cluster_domain;
    let fqdn = |k: &ObjectKey| service_fqdn(&k.name, &k.namespace, domain);
    let first = &port.services.first()?.service;
    if port.services.iter().all(|s| s.service == *first) {
        return Some(fqdn(first));
    }
    let host = normalize(rec.host.as_deref()?)?;
    let matched = port.accepts(&host, client_ns, domain)?;
    port.services.iter().map(|s| fqdn(&s.service)).find(|f| *f == matched)
}

/// What every access record also feeds: the metrics, with the config that names the peers, and the runtime switch
/// of the access log itself. One per [`crate::Proxy`], shared by every clone of its [`crate::AccessLog`].
#[derive(Debug)]
pub struct Telemetry {
    config: ConfigHandle,
    metrics: Metrics,
    /// Read on every record: an atomic, so the switch costs the hot path no lock.
    access_log: AtomicBool,
}

impl Telemetry {
    pub fn new(config: ConfigHandle) -> Self {
        Telemetry { config, metrics: Metrics::new(), access_log: AtomicBool::new(true) }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records `rec` against the config in force now.
    pub fn record(&self, rec: &AccessRecord, elapsed: Duration) {
        self.metrics.record(&self.config.current(), rec, elapsed);
    }

    pub fn access_log_enabled(&self) -> bool {
        self.access_log.load(Ordering::Relaxed)
    }

    pub fn set_access_log_enabled(&self, on: bool) {
        self.access_log.store(on, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prometheus_text_without_an_eof() {
        let m = Metrics::new();
        m.app_scrape_failed();
        let mut out = String::new();
        assert!(m.encode(&mut out).is_ok());
        // Families with no sample yet are left out; the unlabelled counters always have one. The encoder adds the
        // help text's final period.
        assert_eq!(
            out,
            "# HELP podmesh_app_scrape_errors_total Failed scrapes of the application's own metrics for the merged \
             endpoint (R8).\n# TYPE podmesh_app_scrape_errors_total counter\npodmesh_app_scrape_errors_total 1\n\
             # HELP podmesh_access_log_dropped_lines_total Access-log lines dropped because standard output was not \
             being read.\n# TYPE podmesh_access_log_dropped_lines_total counter\n\
             podmesh_access_log_dropped_lines_total 0\n"
        );
    }

    /// The series cache must never put a sample in another series than its labels name: not after a config
    /// reload renames the workload, and not for records that differ in any label-deciding field.
    #[test]
    fn cached_series_follow_the_record_and_the_config() {
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        let loaded = podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap();
        let index = podmesh_compute::Index::new(loaded.cluster);
        let pod = index.outbound().pods.values().find(|p| p.identity.is_some()).unwrap().pod.clone();
        let cfg = Arc::new(index.proxy_config(&pod).unwrap());
        let m = Metrics::new();
        let src: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let dst: SocketAddr = "10.96.0.1:80".parse().unwrap();
        let record = |status: u16, reason: ReasonCode| {
            let mut r = AccessRecord::new(Direction::Outbound, "http/1.1", src, dst);
            r.status = Some(status);
            r.reason(reason);
            r
        };
        let ms = Duration::from_millis(1);
        m.record(&cfg, &record(200, ReasonCode::Ok), ms);
        m.record(&cfg, &record(200, ReasonCode::Ok), ms);
        m.record(&cfg, &record(503, ReasonCode::NoHealthyUpstream), ms);
        let mut renamed = (*cfg).clone();
        renamed.workload.workload = "renamed".into();
        m.record(&Arc::new(renamed), &record(200, ReasonCode::Ok), ms);

        let mut out = String::new();
        assert!(m.encode(&mut out).is_ok());
        let count = |needles: &[&str]| -> Vec<String> {
            out.lines()
                .filter(|l| l.starts_with("istio_requests_total{") && needles.iter().all(|n| l.contains(n)))
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_string())
                .collect()
        };
        let own = format!("source_workload=\"{}\"", cfg.workload.workload);
        assert_eq!(count(&[&own, "response_code=\"200\""]), ["2"], "{out}");
        assert_eq!(count(&[&own, "response_code=\"503\"", "response_flags=\"UH\""]), ["1"], "{out}");
        assert_eq!(count(&["source_workload=\"renamed\"", "response_code=\"200\""]), ["1"], "{out}");
    }
}
