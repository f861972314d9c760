//! The xDS server: Envoy's `AggregatedDiscoveryService`, delta variant, carrying podmesh's resource types.
//!
//! A sidecar opens one stream over mTLS (its workload certificate) and names its pod in `node.id`; the pod's
//! identity must be the certificate's. It subscribes to each kind with an initial request (wildcard for the
//! shared kinds, its own pod for the Workload) carrying the versions it already holds after a reconnect. The
//! server answers each kind with what differs, then pushes every new generation's changes in [`Kind`] order
//! (what is referred to before what refers to it). Each response has a nonce; the sidecar ACKs it, or NACKs with
//! a reason and keeps its last good config, and the server records the refusal with the change that caused it.

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use podmesh_api::Kind;
use podmesh_api::xds::{self, DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse};
use podmesh_model::ObjectKey;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::Shared;
use crate::server::ConnInfo;
use crate::snapshot::{Diff, Encoded, Named, Snapshot, diff};
use crate::status::{Metrics, Nack, ProxyStatus, unix_now};

/// At most this many resources, or about this many bytes of them, per response: no message nears gRPC's size
/// limits at scale, and what a stream holds in memory while its sidecar reads is bounded (a large push is
/// several responses of one kind in a row).
pub const MAX_RESOURCES_PER_RESPONSE: usize = 1000;
pub const MAX_BYTES_PER_RESPONSE: usize = 256 << 10;
/// Responses a stream queues ahead of its sidecar: with the byte bound above, under 1 MiB per sidecar.
const QUEUED_RESPONSES: usize = 2;

#[derive(Debug, Clone)]
pub struct Ads {
    pub shared: Arc<Shared>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

#[tonic::async_trait]
impl xds::AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = BoxStream<DiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        _req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented("podmesh serves delta xDS only: use DeltaAggregatedResources"))
    }

    type DeltaAggregatedResourcesStream = BoxStream<DeltaDiscoveryResponse>;

    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let conn = req.extensions().get::<ConnInfo>().cloned();
        let Some(peer) = conn.as_ref().and_then(|c| c.identity.clone()) else {
            return Err(Status::unauthenticated(
                "xDS needs the sidecar's mesh certificate: get one from the CA first (CreateCertificate with the \
                 bootstrap token)",
            ));
        };
        let address = conn.map(|c| c.remote.to_string()).unwrap_or_default();
        let mut incoming = req.into_inner();
        // The first request names the pod; it must be this certificate's.
        let first = match incoming.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Status::invalid_argument("the stream ended before its first request")),
            Err(e) => return Err(e),
        };
        let pod = node_pod(&first).map_err(Status::invalid_argument)?;
        let snapshot = self.shared.current();
        match snapshot.index.pod(&pod) {
            None => return Err(Status::not_found(format!("no pod {pod} in the mesh's manifests"))),
            Some(p) if snapshot.index.identity_of(p) != peer => {
                return Err(Status::permission_denied(format!(
                    "pod {pod} runs as {}, but this sidecar's certificate is {}",
                    snapshot.index.identity_of(p).as_str(),
                    peer.as_str()
                )));
            }
            Some(_) => {}
        }
        let (tx, rx) = mpsc::channel(QUEUED_RESPONSES);
        let id = STREAM_IDS.fetch_add(1, Ordering::Relaxed);
        self.shared.proxies.insert(
            id,
            ProxyStatus {
                pod: pod.to_string(),
                identity: peer.as_str().to_string(),
                address,
                connected_since: unix_now(),
                pushed: 0,
                sent: BTreeMap::new(),
                acked: BTreeMap::new(),
                last_nack: None,
            },
        );
        self.shared.metrics.connected.inc();
        let stream = StreamState {
            id,
            pod,
            shared: Arc::clone(&self.shared),
            tx,
            sent: BTreeMap::new(),
            workload: None,
            pending: HashMap::new(),
            nonce: 0,
        };
        tokio::spawn(stream.run(first, incoming, self.shared.snapshots.subscribe()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a sidecar's request asks, decided from its fields alone: the one place the xDS stream reads untrusted
/// input (fuzzed: `fuzz/fuzz_targets/xds_request.rs`).
#[derive(Debug, PartialEq, Eq)]
pub enum Asked {
    /// A type this server does not serve.
    Unknown(String),
    /// The answer to the response with `nonce`: an ACK, or a NACK with the sidecar's reason (at most
    /// [`MAX_REASON_CHARS`]).
    Answer { kind: Kind, nonce: String, nack: Option<String> },
    /// A subscription to `kind`, with the versions the sidecar says it holds (after a reconnect).
    Subscribe { kind: Kind, held: HashMap<String, String> },
}

/// How much of a NACK's reason is kept.
pub const MAX_REASON_CHARS: usize = 4096;

pub fn asked(req: DeltaDiscoveryRequest) -> Asked {
    let Some(kind) = Kind::from_type_url(&req.type_url) else { return Asked::Unknown(req.type_url) };
    if !req.response_nonce.is_empty() {
        let nack = req.error_detail.map(|s| {
            let reason: String = s.message.chars().take(MAX_REASON_CHARS).collect();
            if reason.is_empty() { format!("(no reason given; code {})", s.code) } else { reason }
        });
        return Asked::Answer { kind, nonce: req.response_nonce, nack };
    }
    Asked::Subscribe { kind, held: req.initial_resource_versions.into_iter().collect() }
}

/// The pod a stream's first request names in `node.id` ("namespace/name").
pub fn node_pod(first: &DeltaDiscoveryRequest) -> Result<ObjectKey, String> {
    let node = first.node.as_ref().map(|n| n.id.as_str()).unwrap_or_default();
    ObjectKey::parse(node).ok_or_else(|| {
        let shown: String = node.chars().take(256).collect();
        format!("node.id must be the sidecar's pod, \"namespace/name\"; got {shown:?}")
    })
}

/// One sidecar's stream.
struct StreamState {
    id: u64,
    pod: ObjectKey,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    /// Per subscribed shared kind: the version of the resources last sent.
    sent: BTreeMap<Kind, Arc<Snapshot>>,
    /// The Workload last sent (its version), once subscribed.
    workload: Option<Option<String>>,
    /// Responses not yet answered: nonce → kind, the version sent, and whether it pushed a new generation (whose
    /// ACK ends a push-latency measurement) rather than answered a subscription.
    pending: HashMap<String, (Kind, Arc<Snapshot>, bool)>,
    nonce: u64,
}

impl StreamState {
    async fn run(
        mut self,
        first: DeltaDiscoveryRequest,
        mut incoming: Streaming<DeltaDiscoveryRequest>,
        mut snapshots: watch::Receiver<Arc<Snapshot>>,
    ) {
        let mut next = Some(first);
        loop {
            if let Some(req) = next.take()
                && self.handle(req).await.is_err()
            {
                break;
            }
            tokio::select! {
                msg = incoming.message() => match msg {
                    Ok(Some(r)) => next = Some(r),
                    Ok(None) | Err(_) => break,
                },
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let s = Arc::clone(&snapshots.borrow_and_update());
                    if self.push(&s).await.is_err() {
                        break;
                    }
                }
            }
        }
        self.shared.proxies.remove(self.id);
        self.shared.metrics.connected.dec();
    }

    /// A request: an ACK or NACK of a response, or a kind's subscription.
    async fn handle(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        let (kind, held) = match asked(req) {
            Asked::Unknown(type_url) => {
                // Not ours: an empty answer, without ending the stream.
                let nonce = self.next_nonce();
                return self.send(DeltaDiscoveryResponse { type_url, nonce, ..Default::default() }).await;
            }
            Asked::Answer { kind, nonce, nack } => {
                self.answered(kind, &nonce, nack);
                return Ok(());
            }
            Asked::Subscribe { kind, held } => (kind, held),
        };
        let snapshot = self.shared.current();
        if kind == Kind::Workload {
            let current = snapshot.workload(&self.pod).ok().flatten();
            let known = held.get(&self.pod.to_string()).cloned();
            self.workload = Some(known);
            return self.push_workload(&snapshot, current, true).await;
        }
        // What the sidecar holds is what it says it holds (after a reconnect: its last good resources).
        let new = snapshot.named(kind);
        let put: Vec<String> =
            new.iter().filter(|(n, r)| held.get(*n) != Some(&r.version)).map(|(n, _)| n.clone()).collect();
        let removed: Vec<String> = held.keys().filter(|n| !new.contains_key(*n)).cloned().collect();
        self.sent.insert(kind, Arc::clone(&snapshot));
        self.send_diff(kind, &snapshot, new, Diff { put, removed }, true).await?;
        self.pushed(snapshot.generation);
        Ok(())
    }

    /// A new generation: each subscribed kind's changes, in push order.
    async fn push(&mut self, snapshot: &Arc<Snapshot>) -> Result<(), ()> {
        for kind in Kind::ALL {
            if kind == Kind::Workload {
                if self.workload.is_some() {
                    let current = snapshot.workload(&self.pod).ok().flatten();
                    self.push_workload(snapshot, current, false).await?;
                }
                continue;
            }
            let Some(old) = self.sent.get(&kind).cloned() else { continue };
            if old.generation == snapshot.generation {
                continue;
            }
            let d = if old.generation + 1 == snapshot.generation {
                snapshot.changed.get(&kind).cloned().unwrap_or_default()
            } else {
                diff(old.named(kind), snapshot.named(kind))
            };
            self.sent.insert(kind, Arc::clone(snapshot));
            self.send_diff(kind, snapshot, snapshot.named(kind), d, false).await?;
        }
        self.pushed(snapshot.generation);
        Ok(())
    }

    fn pushed(&self, generation: u64) {
        self.shared.proxies.update(self.id, |s| s.pushed = s.pushed.max(generation));
    }

    async fn push_workload(
        &mut self,
        snapshot: &Arc<Snapshot>,
        current: Option<Arc<Encoded>>,
        subscription: bool,
    ) -> Result<(), ()> {
        let had = self.workload.clone().flatten();
        let now = current.as_ref().map(|e| e.version.clone());
        if had == now && !(subscription && had.is_none()) {
            return Ok(());
        }
        self.workload = Some(now);
        let name = self.pod.to_string();
        let mut named = Named::new();
        let d = match current {
            Some(e) => {
                named.insert(name.clone(), e);
                Diff { put: vec![name], removed: vec![] }
            }
            None if had.is_some() => Diff { put: vec![], removed: vec![name] },
            // Nothing held and nothing to send: the subscription is still answered, so the sidecar knows.
            None => Diff::default(),
        };
        self.send_diff(Kind::Workload, snapshot, &named, d, subscription).await
    }

    /// Sends `d` (in responses bounded by MAX_RESOURCES_PER_RESPONSE and MAX_BYTES_PER_RESPONSE). A subscription is always answered, even
    /// with nothing; a new generation only when it changed something.
    async fn send_diff(
        &mut self,
        kind: Kind,
        snapshot: &Arc<Snapshot>,
        named: &Named,
        d: Diff,
        subscription: bool,
    ) -> Result<(), ()> {
        if d.is_empty() && !subscription {
            return Ok(());
        }
        let mut put = d.put.into_iter().peekable();
        let mut removed = Some(d.removed);
        loop {
            let (mut resources, mut bytes) = (Vec::new(), 0usize);
            while resources.len() < MAX_RESOURCES_PER_RESPONSE && bytes < MAX_BYTES_PER_RESPONSE {
                let Some(name) = put.next() else { break };
                if let Some(e) = named.get(&name) {
                    bytes += e.body.value.len();
                    resources.push(xds::Resource {
                        name,
                        version: e.version.clone(),
                        resource: Some(e.body.clone()),
                        ..Default::default()
                    });
                }
            }
            let nonce = self.next_nonce();
            self.pending.insert(nonce.clone(), (kind, Arc::clone(snapshot), !subscription));
            let label = Metrics::kind(kind);
            self.shared.metrics.pushes.get_or_create(&label).inc();
            self.shared.metrics.push_bytes.get_or_create(&label).inc_by(bytes as u64);
            let generation = snapshot.generation;
            self.shared.proxies.update(self.id, |s| {
                s.sent.insert(kind.as_str().to_string(), generation);
            });
            self.send(DeltaDiscoveryResponse {
                system_version_info: snapshot.generation.to_string(),
                resources,
                type_url: kind.type_url().to_string(),
                removed_resources: removed.take().unwrap_or_default(),
                nonce,
                ..Default::default()
            })
            .await?;
            if put.peek().is_none() {
                return Ok(());
            }
        }
    }

    fn answered(&mut self, kind: Kind, nonce: &str, nack: Option<String>) {
        let Some((_, snapshot, measured)) = self.pending.remove(nonce) else { return };
        let generation = snapshot.generation;
        match nack {
            None => {
                if measured {
                    self.shared.metrics.push_seconds.observe(snapshot.created.elapsed().as_secs_f64());
                }
                self.shared.proxies.update(self.id, |s| {
                    let acked = s.acked.entry(kind.as_str().to_string()).or_default();
                    *acked = (*acked).max(generation);
                });
            }
            Some(reason) => {
                self.shared.metrics.nacks.get_or_create(&Metrics::kind(kind)).inc();
                eprintln!(
                    "podmesh control: {} refused generation {generation} ({kind}): {reason}; caused by {}",
                    self.pod, snapshot.cause
                );
                let cause = snapshot.cause.clone();
                let nack = Nack { generation, kind: kind.as_str().to_string(), reason, cause, at: unix_now() };
                self.shared.proxies.update(self.id, |s| s.last_nack = Some(nack));
            }
        }
    }

    fn next_nonce(&mut self) -> String {
        self.nonce += 1;
        self.nonce.to_string()
    }

    async fn send(&self, r: DeltaDiscoveryResponse) -> Result<(), ()> {
        self.tx.send(Ok(r)).await.map_err(|_| ())
    }
}
