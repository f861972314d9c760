//! Control-plane scale benchmark: the synthetic cluster of the routing core's benchmark (10,000 Services, 100,000
//! pods at full scale) served to simulated sidecars (1,000 at full scale). The sidecars run in a child process
//! (this same binary, started with `PODMESH_BENCH_SIDECARS=1`), so the control plane's memory is measured alone.
//! Each is a real client: a certificate from the CA for its pod's token, then a delta xDS stream over mTLS that
//! ACKs every response (it skims each response's header fields and decodes no resource: it measures the control
//! plane, not a sidecar's config assembly).
//!
//! Measured, all on the control plane's side: time to index the cluster and encode its resources; time until
//! every simulated sidecar has ACKed its initial config; after one endpoint change (a pod turns not ready, a pod
//! is deleted), time from the change until each affected sidecar's ACK arrived (target p99 < 100 ms), and the
//! resource bytes sent for it; the same for a whole new version from the file source, a VirtualService edit
//! (applied in place) and the one change that re-indexes (a MeshConfig edit); the control plane's peak RSS
//! (target < 1 GiB).
//!
//! ```text
//! cargo bench -p podmesh-control --bench scale                            # full scale, release
//! PODMESH_BENCH_SCALE=0.1 cargo bench -p podmesh-control --bench scale    # 10% of the counts
//! cargo test -p podmesh-control --benches                                 # smoke run at 0.01, debug build
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use podmesh_api::Kind;
use podmesh_api::xds::DeltaDiscoveryRequest;
use podmesh_control::{Authority, Change, Control, Version};
use podmesh_model::{Cluster, Kind as ObjectKind, ObjectKey, ObjectRef, Source};
use podmesh_testkit::synthetic::{dimensions, files, plan, scale_and_command};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const FULL_PROXIES: usize = 1_000;
const TARGET_CHANGE_P99: Duration = Duration::from_millis(100);
const TARGET_RSS_MIB: u64 = 1024;
/// How many times each endpoint change is made (each time to another pod); the p99 is over every affected sidecar
/// of every one of them. A whole version, which the benchmark copies the cluster for, is made fewer times.
const REPEATS: usize = 10;
const WHOLE_REPEATS: usize = 3;
/// Set in the child process that runs the simulated sidecars.
const SIDECARS_ENV: &str = "PODMESH_BENCH_SIDECARS";
const DELTA_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

/// What the child process is told: where the control plane is, the roots, and each sidecar's pod and token.
#[derive(Serialize, Deserialize)]
struct SidecarPlan {
    address: SocketAddr,
    roots_pem: String,
    sidecars: Vec<(String, String)>,
}

/// The header fields of a `DeltaDiscoveryResponse`; resources are kept as undecoded bytes (counted, not read).
#[derive(Clone, PartialEq, prost::Message)]
struct Skim {
    #[prost(string, tag = "1")]
    system_version_info: String,
    #[prost(bytes = "bytes", repeated, tag = "2")]
    resources: Vec<bytes::Bytes>,
    #[prost(string, tag = "4")]
    type_url: String,
    #[prost(string, tag = "5")]
    nonce: String,
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    if std::env::var_os(SIDECARS_ENV).is_some() {
        rt.block_on(sidecars());
        return;
    }
    let (scale, command) = scale_and_command("podmesh-control", 1.0);
    rt.block_on(run(scale, command));
}

async fn run(scale: f64, command: String) {
    println!("podmesh control-plane scale benchmark");
    println!("command:  {command}");
    println!("build:    {}", if cfg!(debug_assertions) { "debug (timings NOT meaningful)" } else { "release" });
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine:  {cpus} CPU(s); the control plane and the simulated sidecars share them");

    // The cluster.
    let (namespaces, per_ns) = dimensions(scale);
    let plans = plan(namespaces, per_ns);
    let (texts, docs) = files(&plans, per_ns);
    let sources: Vec<Source> = texts.into_iter().map(|(name, text)| Source::Text { name, text }).collect();
    let cluster = podmesh_model::load(&sources).unwrap().cluster;
    drop(sources);
    let pods = cluster.pods.len();
    println!("cluster:  {} Services, {pods} pods ({docs} documents)", cluster.services.len());
    let authority = Authority::ephemeral("cluster.local", Duration::from_secs(24 * 3600), b"bench token key").unwrap();
    let t = Instant::now();
    let control = Control::new(cluster, "start".into(), authority).unwrap();
    let first = t.elapsed();
    let snapshot = control.shared.current();
    let resources: usize = snapshot.shared.values().map(|m| m.len()).sum();
    let bytes: usize = snapshot.shared.values().flat_map(|m| m.values()).map(|e| e.body_len).sum();
    println!(
        "index + encode: {} ({resources} shared resources, {:.1} MB: what every sidecar is sent first)",
        fmt(first),
        bytes as f64 / 1e6
    );
    let per_kind: Vec<String> = snapshot
        .shared
        .iter()
        .map(|(k, m)| {
            let b: usize = m.values().map(|e| e.body_len).sum();
            format!("{k} {} ({:.1} MB)", m.len(), b as f64 / 1e6)
        })
        .collect();
    println!("  by kind: {}", per_kind.join(", "));
    // From here the peak is the control plane's serving peak, not the benchmark's generating and parsing of YAML.
    let rss_control = rss_kib().0;
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = control.clone();
    tokio::spawn(async move { serving.serve(listener, None, NoChanges, std::future::pending()).await.unwrap() });

    // The simulated sidecars: meshed pods, spread over the cluster.
    let n = ((FULL_PROXIES as f64 * scale).round() as usize).max(10);
    let meshed: Vec<ObjectKey> = {
        let index = control.shared.index.read();
        index.cluster().pods.keys().filter(|k| index.proxy_config(k).is_ok()).cloned().collect()
    };
    let step = (meshed.len() / n).max(1);
    let chosen: Vec<ObjectKey> = meshed.iter().step_by(step).take(n).cloned().collect();
    let plan = SidecarPlan {
        address: addr,
        roots_pem: control.shared.authority.trust_anchors().join(""),
        sidecars: chosen.iter().map(|p| (p.to_string(), control.shared.authority.token(p))).collect(),
    };
    let (mut child, lines) = start_sidecars(&plan);
    SIDECARS_PID.store(child.id(), std::sync::atomic::Ordering::Relaxed);
    let signed = lines.recv().unwrap();
    println!("sidecars: {} simulated, in a child process; {signed}", chosen.len());

    let start = Instant::now();
    let _ = lines.recv().unwrap(); // "streaming": every stream is being opened.
    wait_synced(&control, chosen.len(), 1).await;
    let initial = start.elapsed();
    let st = stats(ack_times(&control, 1, start));
    let sent: u64 = push_bytes(&control);
    println!(
        "initial push: every sidecar ACKed in {} (per sidecar p50 {} p99 {} max {}); {:.1} MB of resources sent",
        fmt(initial),
        fmt(st.0),
        fmt(st.1),
        fmt(st.2),
        sent as f64 / 1e6
    );

    let push_peak = rss_kib().1;
    let _ = std::fs::write("/proc/self/clear_refs", "5");

    // Endpoint changes, as the control plane gets them: a pod turns not ready (a readiness probe, as the runtime
    // reports it: `Control::set_pod_ready`), and a pod is deleted (a watch event: only the changed object). Each
    // is made REPEATS times, to a different pod (a ready, meshed one that no simulated sidecar stands for).
    let victims: Vec<ObjectKey> = {
        let index = control.shared.index.read();
        let simulated: std::collections::BTreeSet<&ObjectKey> = chosen.iter().collect();
        let candidates: Vec<&ObjectKey> =
            meshed.iter().filter(|p| !simulated.contains(p) && index.cluster().pods[*p].ready).collect();
        let step = (candidates.len() / (2 * REPEATS + WHOLE_REPEATS)).max(1);
        candidates.into_iter().step_by(step).cloned().collect()
    };
    let mut changes = Vec::new();
    let mut runs = Vec::new();
    for pod in &victims[..REPEATS] {
        runs.push(measure_change(&control, chosen.len(), || Control::set_pod_ready(&control.shared, pod, false)).await);
    }
    changes.push(("a pod turns not ready", report("endpoint change: a pod turns not ready", runs)));
    let mut runs = Vec::new();
    for pod in &victims[REPEATS..2 * REPEATS] {
        let deleted = ObjectRef::new(ObjectKind::Pod, pod.clone());
        let change = Change::Objects { objects: Cluster::default(), changed: vec![deleted] };
        let version = Version { change, cause: format!("{pod} deleted") };
        runs.push(measure_change(&control, chosen.len(), || Control::apply(&control.shared, version)).await);
    }
    changes.push(("a pod is deleted", report("endpoint change: a pod is deleted", runs)));
    let (_, endpoint_peak) = rss_kib();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    // The same as a whole new version of the cluster, as the file source gives it (the control plane works out
    // which objects changed by comparing every object).
    let mut runs = Vec::new();
    for pod in &victims[2 * REPEATS..2 * REPEATS + WHOLE_REPEATS] {
        let mut whole = control.shared.index.read().cluster().clone();
        whole.set_pod_ready(pod, false);
        let version = Version { change: Change::Whole(whole), cause: format!("{pod} not ready (whole version)") };
        runs.push(measure_change(&control, chosen.len(), || Control::apply(&control.shared, version)).await);
    }
    changes.push((
        "a whole new version of the cluster",
        report("endpoint change: a whole new version from the file source", runs),
    ));
    let (_, whole_peak) = rss_kib();

    // A routing change, applied in place: a VirtualService edited (its routes' timeout).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let (vs, objects) = {
        let index = control.shared.index.read();
        let (key, vs) = index.cluster().virtual_services.iter().next().unwrap();
        let mut edited = vs.clone();
        for r in &mut edited.http {
            r.timeout = Some(r.timeout.unwrap_or(Duration::from_secs(15)) + Duration::from_secs(1));
        }
        let mut objects = Cluster::default();
        objects.virtual_services.insert(key.clone(), edited);
        (ObjectRef::new(ObjectKind::VirtualService, key.clone()), objects)
    };
    let version = Version { cause: format!("{vs} edited"), change: Change::Objects { objects, changed: vec![vs] } };
    let run = measure_change(&control, chosen.len(), || Control::apply(&control.shared, version)).await;
    let routed = report("routing change: a VirtualService edited", vec![run]);
    let (_, routing_peak) = rss_kib();

    // The one change that re-indexes: the MeshConfig edited (its outbound traffic policy, which every sidecar's
    // Workload carries).
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let mut objects = Cluster { mesh: control.shared.index.read().cluster().mesh.clone(), ..Cluster::default() };
    objects.mesh.outbound_traffic_policy = match objects.mesh.outbound_traffic_policy {
        podmesh_model::OutboundPolicy::AllowAny => podmesh_model::OutboundPolicy::RegistryOnly,
        podmesh_model::OutboundPolicy::RegistryOnly => podmesh_model::OutboundPolicy::AllowAny,
    };
    let mesh = ObjectRef::new(ObjectKind::MeshConfig, ObjectKey::new("", "mesh"));
    let version =
        Version { change: Change::Objects { objects, changed: vec![mesh] }, cause: "MeshConfig edited".into() };
    let run = measure_change(&control, chosen.len(), || Control::apply(&control.shared, version)).await;
    let reindexed = report("the change that re-indexes: the MeshConfig edited", vec![run]);
    let (rss, reindex_peak) = rss_kib();
    let (child_rss, child_hwm) = status_kib(&format!("/proc/{}/status", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "memory: control plane RSS {} MiB after index + encode (before any sidecar); peaks: {} MiB during the \
         initial push, {} MiB during the two endpoint changes, {} MiB during the whole version (the benchmark's \
         copy of the cluster, given to the control plane, included), {} MiB during the VirtualService edit, {} MiB \
         during the re-index; now {} MiB; the simulated sidecars' process: peak {} MiB, now {} MiB",
        rss_control / 1024,
        push_peak / 1024,
        endpoint_peak / 1024,
        whole_peak / 1024,
        routing_peak / 1024,
        reindex_peak / 1024,
        rss / 1024,
        child_hwm / 1024,
        child_rss / 1024
    );
    println!("targets (full scale: 10,000 Services, 100,000 pods, 1,000 sidecars; this run at scale {scale}):");
    for (what, p99) in &changes {
        println!(
            "  {}  after one endpoint change ({what}), p99 until each affected sidecar ACKed < 100 ms (over every sidecar of every change): {}",
            if *p99 < TARGET_CHANGE_P99 { "PASS" } else { "MISS" },
            fmt(*p99)
        );
    }
    println!("  (no target) a routing change (a VirtualService edited): p99 {}", fmt(routed));
    println!("  (no target) the change that re-indexes (the MeshConfig edited): p99 {}", fmt(reindexed));
    for (what, peak) in [
        ("the initial push and the endpoint changes", push_peak.max(endpoint_peak)),
        ("a whole version from the file source", whole_peak),
        ("a VirtualService edit", routing_peak),
        ("a re-index (the MeshConfig edited)", reindex_peak),
    ] {
        println!(
            "  {}  control-plane RSS < 1 GiB during {what}: peak {} MiB",
            if peak / 1024 < TARGET_RSS_MIB { "PASS" } else { "MISS" },
            peak / 1024
        );
    }
}

/// What one change cost.
struct Measured {
    cause: String,
    /// The kinds it changed, with how many resources put and removed.
    changed: String,
    published: Duration,
    /// From the change until each affected sidecar's last ACK of it.
    acks: Vec<Duration>,
    /// From the change until every sidecar was in sync.
    all: Duration,
    bytes: u64,
    /// Write system calls made meanwhile by the control plane and by the simulated sidecars' process.
    writes: (u64, u64),
}

/// Makes one change with `change` (which returns its generation), waits until every sidecar is in sync, and
/// returns what it cost.
async fn measure_change<F: Future<Output = Result<u64, String>>>(
    control: &Control,
    n: usize,
    change: impl FnOnce() -> F,
) -> Measured {
    let before_bytes = push_bytes(control);
    let before_writes = writes();
    let t = Instant::now();
    let generation = change().await.unwrap();
    let published = control.shared.current().created.saturating_duration_since(t);
    wait_synced(control, n, generation).await;
    let all = t.elapsed();
    let acks = ack_times(control, generation, t);
    let after_writes = writes();
    let writes = (after_writes.0 - before_writes.0, after_writes.1 - before_writes.1);
    let bytes = push_bytes(control) - before_bytes;
    let snapshot = control.shared.current();
    let kinds: Vec<String> = snapshot
        .changed
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(k, d)| format!("{k} {}+{}-", d.put.len(), d.removed.len()))
        .collect();
    Measured { cause: snapshot.cause.clone(), changed: kinds.join(", "), published, acks, all, bytes, writes }
}

/// Prints what the changes `runs` (of one kind) cost; returns the p99, over every affected sidecar of every
/// change, of the time from the change until that sidecar's last ACK.
fn report(what: &str, runs: Vec<Measured>) -> Duration {
    let count = runs.len();
    let affected = runs.iter().map(|r| r.acks.len()).max().unwrap_or(0);
    let bytes = runs.iter().map(|r| r.bytes).sum::<u64>() / count.max(1) as u64;
    let published = stats(runs.iter().map(|r| r.published).collect());
    let all = stats(runs.iter().map(|r| r.all).collect());
    let writes = |f: fn(&Measured) -> u64| {
        let mut w: Vec<u64> = runs.iter().map(f).collect();
        w.sort();
        w.get(w.len() / 2).copied().unwrap_or(0)
    };
    let (control_writes, sidecar_writes) = (writes(|r| r.writes.0), writes(|r| r.writes.1));
    let example = runs.first().map(|r| format!("{}; changed: {}", r.cause, r.changed)).unwrap_or_default();
    let st = stats(runs.into_iter().flat_map(|r| r.acks).collect());
    println!(
        "{what}, {count} time(s) (e.g. {example}): published after median {} (max {}); {affected} sidecars affected, ACKed p50 {} p99 {} max {} after the change, over all {count} change(s) (all in sync after median {}, max {}); {:.1} KB of resources sent per change ({:.0} bytes per affected sidecar); median write system calls per change: {control_writes} by the control plane, {sidecar_writes} by the sidecars",
        fmt(published.0),
        fmt(published.2),
        fmt(st.0),
        fmt(st.1),
        fmt(st.2),
        fmt(all.0),
        fmt(all.2),
        bytes as f64 / 1e3,
        bytes as f64 / affected.max(1) as f64
    );
    st.1
}

/// For each sidecar that was sent something of `generation`: from `since` until its last ACK of it arrived.
fn ack_times(control: &Control, generation: u64, since: Instant) -> Vec<Duration> {
    control
        .shared
        .proxies
        .list()
        .iter()
        .filter_map(|p| {
            let sent = p.sent.iter().filter(|(_, g)| **g == generation);
            let last = sent.filter_map(|(k, _)| p.acked_at.get(k)).max()?;
            Some(last.saturating_duration_since(since))
        })
        .collect()
}

/// Resource bytes the control plane has sent, over all kinds (its `podmesh_control_push_bytes` counter).
fn push_bytes(control: &Control) -> u64 {
    Kind::ALL
        .into_iter()
        .map(|k| control.shared.metrics.push_bytes.get_or_create(&podmesh_control::status::Metrics::kind(k)).get())
        .sum()
}

/// Starts the child process of simulated sidecars; its stdout lines arrive on the returned channel.
fn start_sidecars(plan: &SidecarPlan) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(SIDECARS_ENV, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&serde_json::to_vec(plan).unwrap()).unwrap();
    stdin.write_all(b"\n").unwrap();
    // Kept open: the child exits when it closes (when this process ends, or kills it).
    std::mem::forget(stdin);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// The child process: signs a certificate per sidecar, then opens every stream and ACKs every response until
/// its stdin closes.
async fn sidecars() {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let plan: SidecarPlan = serde_json::from_str(&line).unwrap();
    let control_id = podmesh_control::control_identity("cluster.local");
    let t = Instant::now();
    let mut creds = Vec::new();
    for (_, token) in &plan.sidecars {
        let opts = podmesh_proxy::ControlOptions {
            address: plan.address.into(),
            token: token.clone().into(),
            roots_pem: plan.roots_pem.clone(),
            control_identity: control_id.clone(),
            cert_ttl: None,
            dialer: podmesh_proxy::Dialer::default(),
        };
        let (_, _, c, _) = podmesh_proxy::control::request_certificate(&opts).await.unwrap();
        creds.push(c);
    }
    println!("their {} certificates signed in {}", creds.len(), fmt(t.elapsed()));
    println!("streaming");
    std::io::stdout().flush().unwrap();
    for ((pod, _), c) in plan.sidecars.into_iter().zip(creds) {
        let tls = Arc::new(ArcSwap::new(podmesh_proxy::control::client_tls(&c, &control_id).unwrap()));
        tokio::spawn(sidecar(plan.address, pod, tls));
    }
    tokio::task::spawn_blocking(|| std::io::stdin().read_line(&mut String::new())).await.unwrap().unwrap();
}

/// One simulated sidecar's stream: subscribe to every kind, ACK every response.
async fn sidecar(address: SocketAddr, pod: String, tls: Arc<ArcSwap<rustls::ClientConfig>>) {
    // A real sidecar retries with backoff; a thousand handshakes at once on two CPUs can time out.
    let mut attempt = 0;
    let channel = loop {
        match podmesh_proxy::control::channel(&address.into(), Arc::clone(&tls), &podmesh_proxy::Dialer::default())
            .await
        {
            Ok(c) => break c,
            Err(e) if attempt >= 20 => panic!("{pod}: {e}"),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    };
    let (tx, rx) = mpsc::channel(64);
    for req in podmesh_api::subscriptions(&pod, |_| Default::default()) {
        tx.send(req).await.unwrap();
    }
    let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(256 << 20);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<DeltaDiscoveryRequest, Skim>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(DELTA_PATH);
    let mut stream =
        grpc.streaming(tonic::Request::new(ReceiverStream::new(rx)), path, codec).await.unwrap().into_inner();
    while let Ok(Some(r)) = stream.message().await {
        let ack = DeltaDiscoveryRequest { type_url: r.type_url, response_nonce: r.nonce, ..Default::default() };
        if tx.send(ack).await.is_err() {
            return;
        }
    }
}

/// Waits until `n` sidecars are connected and SYNCED at `generation` (at most 10 minutes).
async fn wait_synced(control: &Control, n: usize, generation: u64) {
    let start = Instant::now();
    loop {
        let (connected, synced) = control.shared.proxies.synced(generation);
        if connected >= n && synced == connected {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "not synced after 10 minutes");
        // ACK times are recorded as they arrive; polling often would only take CPU from what is measured.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A source with no changes: the benchmark applies its change itself.
struct NoChanges;

impl podmesh_control::Source for NoChanges {
    async fn next(&mut self) -> Option<Result<Version, String>> {
        std::future::pending().await
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    if v.is_empty() {
        return (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    }
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.5), at(0.99), v[v.len() - 1])
}

fn fmt(d: Duration) -> String {
    if d >= Duration::from_secs(1) {
        format!("{:.2} s", d.as_secs_f64())
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    }
}

/// (VmRSS, VmHWM) of this process in KiB.
/// The process of simulated sidecars, once started (for its write counts).
static SIDECARS_PID: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Write system calls so far (`syscw` of `/proc/<pid>/io`): the control plane's, and the simulated sidecars'.
fn writes() -> (u64, u64) {
    let syscw = |path: String| {
        let io = std::fs::read_to_string(path).unwrap_or_default();
        io.lines().find_map(|l| l.strip_prefix("syscw:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0u64)
    };
    let child = SIDECARS_PID.load(std::sync::atomic::Ordering::Relaxed);
    (syscw("/proc/self/io".into()), syscw(format!("/proc/{child}/io")))
}

fn rss_kib() -> (u64, u64) {
    status_kib("/proc/self/status")
}

/// (VmRSS, VmHWM) in KiB from a `/proc/<pid>/status` file.
fn status_kib(path: &str) -> (u64, u64) {
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}
