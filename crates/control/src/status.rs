//! Which sidecars are connected and how far each has synced: what `podmesh proxy-status` lists, and the control
//! plane's metrics.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use podmesh_api::Kind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// One connected sidecar, as `proxy-status` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyStatus {
    pub pod: String,
    pub identity: String,
    pub address: String,
    /// Seconds since the Unix epoch.
    pub connected_since: u64,
    /// The generation this stream has been brought up to (kinds a generation did not change are not resent).
    pub pushed: u64,
    /// Per resource kind: the generation of the last response sent and of the last acknowledged.
    pub sent: BTreeMap<String, u64>,
    pub acked: BTreeMap<String, u64>,
    /// Per resource kind: when its last ACK arrived (how long a push took to be applied, as the control plane
    /// sees it).
    #[serde(skip)]
    pub acked_at: BTreeMap<String, Instant>,
    pub last_nack: Option<Nack>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Nack {
    pub generation: u64,
    pub kind: String,
    /// What the sidecar said.
    pub reason: String,
    /// What made the refused version (the changed manifest files or objects).
    pub cause: String,
    pub at: u64,
}

impl ProxyStatus {
    /// SYNCED: every kind sent was acknowledged; NACKED: the newest answer was a refusal; STALE: waiting.
    pub fn sync_state(&self) -> &'static str {
        if let Some(n) = &self.last_nack
            && self.acked.get(&n.kind).is_none_or(|a| *a < n.generation)
        {
            return "NACKED";
        }
        if self.sent.iter().all(|(k, g)| self.acked.get(k) == Some(g)) { "SYNCED" } else { "STALE" }
    }

    /// The generation this sidecar runs: the one pushed, once every response is acknowledged; else the oldest
    /// acknowledgement still waiting on a newer response.
    pub fn config_generation(&self) -> u64 {
        let waiting = self.sent.iter().filter(|(k, g)| self.acked.get(*k) != Some(g));
        waiting.map(|(k, _)| self.acked.get(k).copied().unwrap_or(0)).min().unwrap_or(self.pushed)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabel {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HowLabel {
    pub how: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Control-plane metrics (Istio's counterparts: pilot_xds, pilot_xds_pushes, pilot_proxy_convergence_time,
/// pilot_total_xds_rejects, citadel_server_success_cert_issue_count).
#[derive(Debug)]
pub struct Metrics {
    pub connected: Gauge,
    pub generation: Gauge,
    pub pushes: Family<TypeLabel, Counter>,
    pub push_bytes: Family<TypeLabel, Counter>,
    pub push_seconds: Histogram,
    pub nacks: Family<TypeLabel, Counter>,
    pub csrs: Family<ResultLabel, Counter>,
    pub config_errors: Counter,
    /// Versions applied, by how: `in_place` (`Index::update`) or `reindex`.
    pub updates: Family<HowLabel, Counter>,
    /// Each kind's series of `pushes` and `push_bytes`, looked up once: every response counts in them.
    per_kind: BTreeMap<Kind, (Counter, Counter)>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            connected: Gauge::default(),
            generation: Gauge::default(),
            pushes: Family::default(),
            push_bytes: Family::default(),
            push_seconds: Histogram::new([0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            nacks: Family::default(),
            csrs: Family::default(),
            config_errors: Counter::default(),
            updates: Family::default(),
            per_kind: BTreeMap::new(),
        };
        let mut m = m;
        for kind in Kind::ALL {
            let label = Metrics::kind(kind);
            let series = (m.pushes.get_or_create(&label).clone(), m.push_bytes.get_or_create(&label).clone());
            m.per_kind.insert(kind, series);
        }
        registry.register("podmesh_control_connected_proxies", "Sidecars with an open xDS stream", m.connected.clone());
        registry.register("podmesh_control_config_generation", "Generation of the config served", m.generation.clone());
        registry.register("podmesh_control_pushes", "xDS responses sent, per resource type", m.pushes.clone());
        registry.register("podmesh_control_push_bytes", "Resource bytes sent, per resource type", m.push_bytes.clone());
        registry.register(
            "podmesh_control_push_duration_seconds",
            "From a new config generation to a sidecar's ACK of it",
            m.push_seconds.clone(),
        );
        registry.register("podmesh_control_nacks", "Responses sidecars refused, per resource type", m.nacks.clone());
        registry.register("podmesh_control_csrs", "Certificate requests, signed or refused", m.csrs.clone());
        registry.register(
            "podmesh_control_updates",
            "Versions applied: in place (only what the change reaches) or by re-indexing",
            m.updates.clone(),
        );
        registry.register(
            "podmesh_control_config_errors",
            "Source versions that could not be served (the last good one stayed)",
            m.config_errors.clone(),
        );
        m
    }

    pub fn kind(kind: Kind) -> TypeLabel {
        TypeLabel { r#type: kind.as_str().to_string() }
    }

    /// Counts one version applied, in place or by re-indexing.
    pub fn updated(&self, in_place: bool) {
        let how = if in_place { "in_place" } else { "reindex" };
        self.updates.get_or_create(&HowLabel { how: how.to_string() }).inc();
    }

    /// Counts one response of `kind` carrying `bytes` of resources.
    pub fn pushed(&self, kind: Kind, bytes: u64) {
        if let Some((pushes, sent)) = self.per_kind.get(&kind) {
            pushes.inc();
            sent.inc_by(bytes);
        }
    }
}

/// Connected sidecars by stream.
#[derive(Debug, Default)]
pub struct Proxies {
    streams: Mutex<BTreeMap<u64, ProxyStatus>>,
}

impl Proxies {
    pub fn insert(&self, id: u64, status: ProxyStatus) {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).insert(id, status);
    }

    pub fn remove(&self, id: u64) {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    pub fn update(&self, id: u64, f: impl FnOnce(&mut ProxyStatus)) {
        if let Some(s) = self.streams.lock().unwrap_or_else(PoisonError::into_inner).get_mut(&id) {
            f(s);
        }
    }

    /// How many sidecars are connected, and how many of them are SYNCED at `generation` or later: counted in
    /// place, without copying every status (what a wait for a push to land polls).
    pub fn synced(&self, generation: u64) -> (usize, usize) {
        let streams = self.streams.lock().unwrap_or_else(PoisonError::into_inner);
        let synced =
            streams.values().filter(|p| p.sync_state() == "SYNCED" && p.config_generation() >= generation).count();
        (streams.len(), synced)
    }

    /// Every connected sidecar, by pod.
    pub fn list(&self) -> Vec<ProxyStatus> {
        let mut v: Vec<ProxyStatus> =
            self.streams.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect();
        v.sort_by(|a, b| a.pod.cmp(&b.pod).then(a.connected_since.cmp(&b.connected_since)));
        v
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs()
}
