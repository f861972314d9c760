//! The xDS server: Envoy's `AggregatedDiscoveryService`, delta variant, carrying podmesh's resource types.
//!
//! A sidecar opens one stream over mTLS (its workload certificate) and names its pod in `node.id`; the pod's
//! identity must be the certificate's. It subscribes to each kind with an initial request (wildcard for the
//! shared kinds, its own pod for the Workload) carrying the versions it already holds after a reconnect. The
//! server answers each kind with what differs, then pushes every new generation's changes in [`Kind`] order
//! (what is referred to before what refers to it). Each response has a nonce; the sidecar ACKs it, or NACKs with
//! a reason and keeps its last good config, and the server records the refusal with the change that caused it.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, Bytes};
use podmesh_api::Kind;
use podmesh_api::xds::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use podmesh_model::ObjectKey;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::Codec;
use tonic::codegen::{BoxFuture, Context, Poll, Service, StdError, http};
use tonic::server::NamedService;
use tonic::{Status, Streaming};

use crate::Shared;
use crate::server::ConnInfo;
use crate::snapshot::{Encoded, Snapshot, diff};
use crate::status::{Metrics, Nack, ProxyStatus, unix_now};

/// At most this many resources, or about this many bytes of them, per response: no message nears gRPC's size
/// limits at scale, and what a stream holds in memory while its sidecar reads is bounded (a large push is
/// several responses of one kind in a row).
pub const MAX_RESOURCES_PER_RESPONSE: usize = 1000;
pub const MAX_BYTES_PER_RESPONSE: usize = 64 << 10;
/// Batches of responses a stream queues ahead of its sidecar (besides what gRPC and HTTP/2 buffer).
const QUEUED_RESPONSES: usize = 1;
/// How many streams may have a push of several responses (a sidecar's initial config, a large change), or of one
/// response above the byte budget (a large route table), in flight at once: two per CPU, at least four. A stream
/// takes a slot for its second response (or before its one large response) and gives it back when the sidecar
/// has answered its last, so the slot covers what waits in gRPC, HTTP/2 and TLS buffers too; the others
/// wait their turn. What is in flight, and so the control plane's memory, stays bounded however many sidecars
/// join at once, while the CPUs stay busy: the pushes are CPU-bound (TLS), and more at once only buffer more.
/// Measured at 30% scale on 2 CPUs (300 sidecars, 2.7 GB): 1 slot 10.0 s and a 271 MiB peak, 4 slots 7.3-8.2 s
/// and 338 MiB, 64 slots 8.8 s and 372 MiB. (istiod has the same kind of limit: PILOT_PUSH_THROTTLE, 100.)
pub fn push_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).saturating_mul(2).max(4)
}

/// The ADS gRPC service (`envoy.service.discovery.v3.AggregatedDiscoveryService`). Written by hand rather than
/// taken from envoy-types' generated server so that a response is its header fields followed by resources encoded
/// once per version ([`Encoded::entry`]): each stream copies bytes instead of encoding the same resources again.
/// The wire format is the standard one; sidecars decode ordinary `DeltaDiscoveryResponse`s.
#[derive(Debug, Clone)]
pub struct Ads {
    pub shared: Arc<Shared>,
}

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
const SOTW_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
/// The largest request accepted: sidecars send subscriptions and ACKs, a reconnecting one the versions it holds.
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// One response as sent: the header fields (version, type, nonce, removed names) and the resources' entries.
#[derive(Debug, Default)]
pub struct Outgoing {
    pub head: DeltaDiscoveryResponse,
    pub resources: Vec<Bytes>,
}

impl Outgoing {
    /// The bytes this response takes on the wire (without gRPC framing).
    pub fn encoded_len(&self) -> usize {
        self.head.encoded_len() + self.resources.iter().map(Bytes::len).sum::<usize>()
    }
}

/// Below this size a resource's entry is copied into the response's current chunk; from it up, it is a chunk of
/// its own, passed down as the very bytes the snapshot holds. Small entries would otherwise each be an HTTP/2
/// DATA frame with its 9-byte header.
const OWN_CHUNK_BYTES: usize = 4 << 10;
/// The size the chunks of small entries are gathered to.
const CHUNK_BYTES: usize = 16 << 10;

/// The body of a stream's HTTP response: each [`Outgoing`] as one gRPC message (the 5-byte prefix, the header
/// fields, the resources' entries), then the `grpc-status` trailers. It holds no buffer of its own between
/// messages: large entries go down to HTTP/2 and TLS as the snapshot's shared bytes, small ones in fresh chunks.
/// (tonic's own encoder reuses one buffer per stream, which keeps the size of the largest message the stream
/// ever carried: a thousand streams that were sent a 1.7 MB route table kept 1.7 GB.)
struct ResponseBody {
    responses: BoxStream<Vec<Outgoing>>,
    /// The chunks of the message being sent.
    pending: std::collections::VecDeque<Bytes>,
    done: bool,
}

impl ResponseBody {
    /// Frames a batch of responses into chunks: small entries and the messages' prefixes and header fields are
    /// gathered into chunks of up to CHUNK_BYTES, across messages, so a batch of small responses (a change of two
    /// kinds) is one DATA frame and one write; large entries are chunks of their own.
    fn frame(&mut self, batch: Vec<Outgoing>) {
        let mut chunk = bytes::BytesMut::new();
        for out in batch {
            let len = out.encoded_len();
            chunk.reserve(CHUNK_BYTES.min(len) + 5 + out.head.encoded_len());
            chunk.put_u8(0);
            chunk.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
            out.head.encode_raw(&mut chunk);
            for r in out.resources {
                if r.len() >= OWN_CHUNK_BYTES {
                    if !chunk.is_empty() {
                        self.pending.push_back(chunk.split().freeze());
                    }
                    self.pending.push_back(r);
                    continue;
                }
                if chunk.len() + r.len() > CHUNK_BYTES && !chunk.is_empty() {
                    self.pending.push_back(chunk.split().freeze());
                    chunk.reserve(CHUNK_BYTES);
                }
                chunk.put_slice(&r);
            }
        }
        if !chunk.is_empty() {
            self.pending.push_back(chunk.freeze());
        }
    }
}

impl hyper::body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Status>>> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            let status = match self.responses.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(batch))) => {
                    self.frame(batch);
                    continue;
                }
                Poll::Ready(Some(Err(status))) => status,
                Poll::Ready(None) => Status::ok(""),
            };
            self.done = true;
            let mut trailers = http::HeaderMap::new();
            if status.add_header(&mut trailers).is_err() {
                trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
            }
            return Poll::Ready(Some(Ok(hyper::body::Frame::trailers(trailers))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_empty()
    }
}

impl NamedService for Ads {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for Ads
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let ads = self.clone();
        Box::pin(async move {
            let status = match req.uri().path() {
                DELTA_PATH => {
                    let (parts, body) = req.into_parts();
                    let conn = parts.extensions.get::<ConnInfo>().cloned();
                    let decoder =
                        tonic_prost::ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default().decoder();
                    let incoming = Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES));
                    match ads.delta_aggregated_resources(conn, incoming).await {
                        Ok(responses) => {
                            let body = ResponseBody { responses, pending: Default::default(), done: false };
                            let mut response = http::Response::new(tonic::body::Body::new(body));
                            response
                                .headers_mut()
                                .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
                            return Ok(response);
                        }
                        Err(status) => status,
                    }
                }
                SOTW_PATH => Status::unimplemented("podmesh serves delta xDS only: use DeltaAggregatedResources"),
                other => Status::unimplemented(format!("no method {other}")),
            };
            Ok(status.into_http())
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

static STREAM_IDS: AtomicU64 = AtomicU64::new(1);

impl Ads {
    /// Opens one sidecar's stream: `conn` is its connection (address and certificate identity), `incoming` its
    /// requests; the stream's responses are returned.
    async fn delta_aggregated_resources(
        &self,
        conn: Option<ConnInfo>,
        mut incoming: Streaming<DeltaDiscoveryRequest>,
    ) -> Result<BoxStream<Vec<Outgoing>>, Status> {
        let Some(peer) = conn.as_ref().and_then(|c| c.identity.clone()) else {
            return Err(Status::unauthenticated(
                "xDS needs the sidecar's mesh certificate: get one from the CA first (CreateCertificate with the \
                 bootstrap token)",
            ));
        };
        let address = conn.map(|c| c.remote.to_string()).unwrap_or_default();
        // The first request names the pod; it must be this certificate's.
        let first = match incoming.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err(Status::invalid_argument("the stream ended before its first request")),
            Err(e) => return Err(e),
        };
        let pod = node_pod(&first).map_err(Status::invalid_argument)?;
        let identity = {
            let index = self.shared.index.read();
            index.pod(&pod).map(|p| index.identity_of(p))
        };
        match identity {
            None => return Err(Status::not_found(format!("no pod {pod} in the mesh's manifests"))),
            Some(id) if id != peer => {
                return Err(Status::permission_denied(format!(
                    "pod {pod} runs as {}, but this sidecar's certificate is {}",
                    id.as_str(),
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
                acked_at: BTreeMap::new(),
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
            workload_seen: 0,
            slot: None,
            pending: HashMap::new(),
            nonce: 0,
            batch: Vec::new(),
            batch_bytes: 0,
        };
        tokio::spawn(stream.run(first, incoming, self.shared.snapshots.subscribe()));
        Ok(Box::pin(ReceiverStream::new(rx)))
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

/// The resources a response sequence sends. Boxed: the iterators' closures, held across awaits, would otherwise
/// trip the compiler's check that the stream's future is `Send`.
type Puts<'a> = Box<dyn Iterator<Item = &'a Arc<Encoded>> + Send + 'a>;

/// One sidecar's stream.
struct StreamState {
    id: u64,
    pod: ObjectKey,
    shared: Arc<Shared>,
    tx: mpsc::Sender<Result<Vec<Outgoing>, Status>>,
    /// Responses made but not yet handed to gRPC: what one request or one generation makes goes down as one
    /// batch, so HTTP/2 and TLS write it at once (a pod deleted changes two kinds: one write per sidecar, not
    /// two), up to about MAX_BYTES_PER_RESPONSE.
    batch: Vec<Outgoing>,
    batch_bytes: usize,
    /// Per subscribed shared kind: the version of the resources last sent.
    sent: BTreeMap<Kind, Arc<Snapshot>>,
    /// The Workload last sent (its version), once subscribed.
    workload: Option<Option<String>>,
    /// The last generation whose change to this sidecar's Workload was looked at (the Workload sent is at least
    /// as new: it is made from the index, which a generation updates before it is published).
    workload_seen: u64,
    /// A push slot, held until the sidecar answers the response with this nonce (the last of a long push).
    slot: Option<(tokio::sync::OwnedSemaphorePermit, String)>,
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
                && (self.handle(req).await.is_err() || self.flush().await.is_err())
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
                    if self.push(&s).await.is_err() || self.flush().await.is_err() {
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
                let head = DeltaDiscoveryResponse { type_url, nonce, ..Default::default() };
                return self.send(Outgoing { head, resources: Vec::new() }).await;
            }
            Asked::Answer { kind, nonce, nack } => {
                self.answered(kind, &nonce, nack);
                return Ok(());
            }
            Asked::Subscribe { kind, held } => (kind, held),
        };
        let snapshot = self.shared.current();
        if kind == Kind::Workload {
            self.workload = Some(held.get(&self.pod.to_string()).cloned());
            return self.push_workload(&snapshot, true).await;
        }
        // What the sidecar holds is what it says it holds (after a reconnect: its last good resources).
        // The resources to send are walked in place, not listed: a thousand sidecars subscribing at once would
        // otherwise each hold a copy of every name.
        let new = snapshot.named(kind);
        let put: Puts<'_> = Box::new(new.iter().filter(|(n, r)| held.get(*n) != Some(&r.version)).map(|(_, r)| r));
        let removed: Vec<String> = held.keys().filter(|n| !new.contains_key(*n)).cloned().collect();
        self.sent.insert(kind, Arc::clone(&snapshot));
        self.send_diff(kind, &snapshot, put, removed, true).await?;
        self.pushed(snapshot.generation);
        Ok(())
    }

    /// A new generation: each subscribed kind's changes, in push order.
    async fn push(&mut self, snapshot: &Arc<Snapshot>) -> Result<(), ()> {
        for kind in Kind::ALL {
            if kind == Kind::Workload {
                // Made again when this generation may have changed it, or when generations were skipped.
                let skipped = self.workload_seen + 1 != snapshot.generation;
                let reached = snapshot.inbound.as_ref().is_none_or(|pods| pods.contains(&self.pod));
                if self.workload.is_some() && (skipped || reached) {
                    self.push_workload(snapshot, false).await?;
                }
                self.workload_seen = self.workload_seen.max(snapshot.generation);
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
            let named = snapshot.named(kind);
            let put: Puts<'_> = Box::new(d.put.iter().filter_map(|n| named.get(n)));
            self.send_diff(kind, snapshot, put, d.removed, false).await?;
        }
        self.pushed(snapshot.generation);
        Ok(())
    }

    fn pushed(&self, generation: u64) {
        self.shared.proxies.update(self.id, |s| s.pushed = s.pushed.max(generation));
    }

    /// Sends this sidecar's Workload if it differs from the one it holds (or answers its subscription).
    async fn push_workload(&mut self, snapshot: &Arc<Snapshot>, subscription: bool) -> Result<(), ()> {
        let current = self.shared.workload(&self.pod);
        self.workload_seen = self.workload_seen.max(snapshot.generation);
        let had = self.workload.clone().flatten();
        let now = current.as_ref().map(|e| e.version.clone());
        if had == now && !(subscription && had.is_none()) {
            return Ok(());
        }
        self.workload = Some(now);
        // Nothing held and nothing to send: the subscription is still answered (empty), so the sidecar knows.
        let removed = if current.is_none() && had.is_some() { vec![self.pod.to_string()] } else { vec![] };
        self.send_diff(Kind::Workload, snapshot, Box::new(current.iter()), removed, subscription).await
    }

    /// Sends `put` and `removed` in responses bounded by MAX_RESOURCES_PER_RESPONSE and MAX_BYTES_PER_RESPONSE. A
    /// subscription is always answered, even with nothing; a new generation only when it changed something.
    async fn send_diff(
        &mut self,
        kind: Kind,
        snapshot: &Arc<Snapshot>,
        put: Puts<'_>,
        removed: Vec<String>,
        subscription: bool,
    ) -> Result<(), ()> {
        let mut put = put.peekable();
        if put.peek().is_none() && removed.is_empty() && !subscription {
            return Ok(());
        }
        let mut removed = Some(removed);
        let mut long = false;
        loop {
            let (mut resources, mut bytes) = (Vec::new(), 0usize);
            while resources.len() < MAX_RESOURCES_PER_RESPONSE && bytes < MAX_BYTES_PER_RESPONSE {
                let Some(e) = put.next() else { break };
                bytes += e.body_len;
                resources.push(e.entry.clone());
            }
            // One response above the byte budget (a resource larger than it: the route table of a port thousands
            // of Services share) is a long push on its own, and waits for a slot before it is sent.
            let heavy = bytes > MAX_BYTES_PER_RESPONSE;
            if heavy && self.slot.is_none() {
                self.flush().await?;
                let permit = Arc::clone(&self.shared.push_slots).acquire_owned().await.map_err(|_| ())?;
                self.slot = Some((permit, String::new()));
            }
            let nonce = self.next_nonce();
            if (long || heavy)
                && let Some((_, last)) = &mut self.slot
            {
                last.clone_from(&nonce);
            }
            self.pending.insert(nonce.clone(), (kind, Arc::clone(snapshot), !subscription));
            self.shared.metrics.pushed(kind, bytes as u64);
            let generation = snapshot.generation;
            self.shared.proxies.update(self.id, |s| set(&mut s.sent, kind, generation));
            let head = DeltaDiscoveryResponse {
                system_version_info: snapshot.generation.to_string(),
                type_url: kind.type_url().to_string(),
                removed_resources: removed.take().unwrap_or_default(),
                nonce,
                ..Default::default()
            };
            self.send(Outgoing { head, resources }).await?;
            if put.peek().is_none() {
                return Ok(());
            }
            // More than one response: the rest needs a push slot (this stream may hold one already).
            if self.slot.is_none() {
                self.flush().await?;
                let permit = Arc::clone(&self.shared.push_slots).acquire_owned().await.map_err(|_| ())?;
                self.slot = Some((permit, String::new()));
            }
            long = true;
        }
    }

    fn answered(&mut self, kind: Kind, nonce: &str, nack: Option<String>) {
        if self.slot.as_ref().is_some_and(|(_, last)| last == nonce) {
            self.slot = None;
        }
        let Some((_, snapshot, measured)) = self.pending.remove(nonce) else { return };
        let generation = snapshot.generation;
        match nack {
            None => {
                if measured {
                    self.shared.metrics.push_seconds.observe(snapshot.created.elapsed().as_secs_f64());
                }
                let now = std::time::Instant::now();
                self.shared.proxies.update(self.id, |s| {
                    let newest = s.acked.get(kind.as_str()).map_or(generation, |a| generation.max(*a));
                    set(&mut s.acked, kind, newest);
                    set(&mut s.acked_at, kind, now);
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

    /// Adds a response to the batch, which goes down when it is full, before a wait for a push slot, and when the
    /// request or generation is answered ([`StreamState::flush`]).
    async fn send(&mut self, r: Outgoing) -> Result<(), ()> {
        self.batch_bytes += r.encoded_len();
        self.batch.push(r);
        if self.batch_bytes >= MAX_BYTES_PER_RESPONSE {
            self.flush().await?;
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), ()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        self.batch_bytes = 0;
        self.tx.send(Ok(std::mem::take(&mut self.batch))).await.map_err(|_| ())
    }
}

/// Sets a kind's entry of a status map, allocating its key only the first time (every response and ACK sets one).
fn set<V>(map: &mut BTreeMap<String, V>, kind: Kind, value: V) {
    match map.get_mut(kind.as_str()) {
        Some(v) => *v = value,
        None => {
            map.insert(kind.as_str().to_string(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::snapshot::Encoded;
    use hyper::body::Body;

    fn response(kind: Kind, nonce: &str, bodies: &[usize], removed: &[&str]) -> (Outgoing, DeltaDiscoveryResponse) {
        let encoded: Vec<Arc<Encoded>> = bodies
            .iter()
            .enumerate()
            .map(|(i, len)| {
                let body = podmesh_api::xds::Any { type_url: kind.type_url().into(), value: vec![i as u8; *len] };
                Encoded::new(&format!("r{i}"), body)
            })
            .collect();
        let head = DeltaDiscoveryResponse {
            system_version_info: "7".into(),
            type_url: kind.type_url().into(),
            nonce: nonce.into(),
            removed_resources: removed.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut whole = head.clone();
        for e in &encoded {
            whole.resources.extend(DeltaDiscoveryResponse::decode(e.entry.clone()).unwrap().resources);
        }
        (Outgoing { head, resources: encoded.iter().map(|e| e.entry.clone()).collect() }, whole)
    }

    /// The DATA frames a body yields for `batches`, and the messages they decode to.
    fn frames(batches: Vec<Vec<Outgoing>>) -> (Vec<Bytes>, Vec<DeltaDiscoveryResponse>) {
        let stream = tokio_stream::iter(batches.into_iter().map(Ok));
        let mut body = ResponseBody { responses: Box::pin(stream), pending: Default::default(), done: false };
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut data = Vec::new();
        while let Poll::Ready(Some(frame)) = Pin::new(&mut body).poll_frame(&mut cx) {
            if let Ok(bytes) = frame.unwrap().into_data() {
                data.push(bytes);
            }
        }
        assert!(body.is_end_stream());
        let mut all = bytes::BytesMut::new();
        for d in &data {
            all.extend_from_slice(d);
        }
        let mut all = all.freeze();
        let mut messages = Vec::new();
        while !all.is_empty() {
            assert_eq!(all[0], 0, "uncompressed");
            let len = u32::from_be_bytes([all[1], all[2], all[3], all[4]]) as usize;
            let message = all.slice(5..5 + len);
            all = all.slice(5 + len..);
            messages.push(DeltaDiscoveryResponse::decode(message).unwrap());
        }
        (data, messages)
    }

    /// A change of two kinds (a pod deleted: its clusters and its direct entry) is one batch, and its two small
    /// responses go down as one DATA frame: one write per sidecar. Large entries keep frames of their own, and
    /// every message decodes to exactly what was meant.
    #[test]
    fn a_batch_of_small_responses_is_one_frame_and_every_message_decodes_whole() {
        let (clusters, want_clusters) = response(Kind::Cluster, "1", &[300], &[]);
        let (direct, want_direct) = response(Kind::DirectPod, "2", &[], &["10.0.0.1"]);
        let (data, got) = frames(vec![vec![clusters, direct]]);
        assert_eq!(data.len(), 1);
        assert_eq!(got, vec![want_clusters, want_direct]);

        let (small, want_small) = response(Kind::Listener, "3", &[10, 20], &[]);
        let (large, want_large) = response(Kind::RouteTable, "4", &[100, OWN_CHUNK_BYTES, 40_000, 50], &["old"]);
        let (workload, want_workload) = response(Kind::Workload, "5", &[64], &[]);
        let (data, got) = frames(vec![vec![small, large], vec![workload]]);
        assert_eq!(got, vec![want_small, want_large, want_workload]);
        // The two large entries are frames of their own; the rest is gathered around them, per batch.
        assert_eq!(data.len(), 5, "{:?}", data.iter().map(Bytes::len).collect::<Vec<_>>());
        assert!(data.iter().all(|d| d.len() <= CHUNK_BYTES || d.len() >= OWN_CHUNK_BYTES));
    }
}
