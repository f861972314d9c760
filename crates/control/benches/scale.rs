//! Control-plane scale benchmark: the synthetic cluster of the routing core's benchmark (10,000 Services, 100,000
//! pods at full scale) served to simulated sidecars (1,000 at full scale), each a real client: a certificate
//! from the CA for its pod's token, then a delta xDS stream over mTLS that ACKs every response (it decodes
//! nothing: it measures the control plane, not a sidecar's config assembly).
//!
//! Measured: time to index the cluster and encode its resources; time until every simulated sidecar has ACKed its
//! initial config; after one endpoint change (a pod turns not ready), time until every affected sidecar has
//! ACKed (target p99 < 100 ms), and the bytes sent for it; the process's peak RSS (target < 1 GiB; it includes
//! the simulated sidecars' buffers, so it overstates the control plane's).
//!
//! ```text
//! cargo bench -p podmesh-control --bench scale                            # full scale, release
//! PODMESH_BENCH_SCALE=0.1 cargo bench -p podmesh-control --bench scale    # 10% of the counts
//! cargo test -p podmesh-control --benches                                 # smoke run at 0.01, debug build
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use podmesh_api::Kind;
use podmesh_api::xds::{AggregatedDiscoveryServiceClient, DeltaDiscoveryRequest, Node};
use podmesh_control::{Authority, Control, Version};
use podmesh_model::{ObjectKey, Source};
use podmesh_testkit::synthetic::{dimensions, files, plan, scale_and_command};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const FULL_PROXIES: usize = 1_000;
const TARGET_CHANGE_P99: Duration = Duration::from_millis(100);
const TARGET_RSS_MIB: u64 = 1024;

/// One simulated sidecar's record: when each generation's last response arrived (ACKed at once), and bytes.
#[derive(Default)]
struct Seen {
    last_response: BTreeMap<u64, Instant>,
    bytes: u64,
}

fn main() {
    let (scale, command) = scale_and_command("podmesh-control", 1.0);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
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
    let pods = cluster.pods.len();
    println!("cluster:  {} Services, {pods} pods ({docs} documents)", cluster.services.len());
    let authority = Authority::ephemeral("cluster.local", Duration::from_secs(24 * 3600), b"bench token key").unwrap();
    let t = Instant::now();
    let control = Control::new(Version { cluster: cluster.clone(), cause: "start".into() }, authority).unwrap();
    let first = t.elapsed();
    let snapshot = control.shared.current();
    let resources: usize = snapshot.shared.values().map(|m| m.len()).sum();
    let bytes: usize = snapshot.shared.values().flat_map(|m| m.values()).map(|e| e.body.value.len()).sum();
    println!(
        "index + encode: {} ({resources} shared resources, {:.1} MB: what every sidecar is sent first)",
        fmt(first),
        bytes as f64 / 1e6
    );
    let per_kind: Vec<String> = snapshot
        .shared
        .iter()
        .map(|(k, m)| {
            let b: usize = m.values().map(|e| e.body.value.len()).sum();
            format!("{k} {} ({:.1} MB)", m.len(), b as f64 / 1e6)
        })
        .collect();
    println!("  by kind: {}", per_kind.join(", "));
    let rss_control = rss_kib().0;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = control.clone();
    tokio::spawn(async move { serving.serve(listener, None, NoChanges, std::future::pending()).await.unwrap() });

    // The simulated sidecars: meshed pods, spread over the cluster.
    let n = ((FULL_PROXIES as f64 * scale).round() as usize).max(10);
    let meshed: Vec<ObjectKey> =
        cluster.pods.keys().filter(|k| snapshot.index.proxy_config(k).is_ok()).cloned().collect();
    let step = (meshed.len() / n).max(1);
    let chosen: Vec<ObjectKey> = meshed.iter().step_by(step).take(n).cloned().collect();
    let roots = control.shared.authority.trust_anchors().join("");
    let control_id = podmesh_control::control_identity("cluster.local");
    let t = Instant::now();
    let mut creds = Vec::new();
    for pod in &chosen {
        let opts = podmesh_proxy::ControlOptions {
            address: addr,
            token: control.shared.authority.token(pod),
            roots_pem: roots.clone(),
            control_identity: control_id.clone(),
            cert_ttl: None,
            dialer: podmesh_proxy::Dialer::default(),
        };
        let (_, _, c, _) = podmesh_proxy::control::request_certificate(&opts).await.unwrap();
        creds.push(c);
    }
    println!(
        "sidecars: {} simulated; their {} certificates signed in {}",
        chosen.len(),
        chosen.len(),
        fmt(t.elapsed())
    );

    let start = Instant::now();
    let mut seen = Vec::new();
    for (pod, c) in chosen.iter().zip(creds) {
        let tls = Arc::new(ArcSwap::new(podmesh_proxy::control::client_tls(&c, &control_id).unwrap()));
        let record = Arc::new(std::sync::Mutex::new(Seen::default()));
        seen.push(Arc::clone(&record));
        let pod = pod.to_string();
        tokio::spawn(async move {
            // A real sidecar retries with backoff; a thousand handshakes at once on two CPUs can time out.
            let mut attempt = 0;
            let channel = loop {
                match podmesh_proxy::control::channel(addr, Arc::clone(&tls), &podmesh_proxy::Dialer::default()).await {
                    Ok(c) => break c,
                    Err(e) if attempt >= 20 => panic!("{pod}: {e}"),
                    Err(_) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                    }
                }
            };
            let mut client = AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
            let (tx, rx) = mpsc::channel(64);
            for (i, kind) in Kind::ALL.into_iter().enumerate() {
                let req = DeltaDiscoveryRequest {
                    node: (i == 0).then(|| Node { id: pod.clone(), ..Default::default() }),
                    type_url: kind.type_url().into(),
                    resource_names_subscribe: if kind.is_shared() { vec![] } else { vec![pod.clone()] },
                    ..Default::default()
                };
                tx.send(req).await.unwrap();
            }
            let mut stream = client.delta_aggregated_resources(ReceiverStream::new(rx)).await.unwrap().into_inner();
            while let Ok(Some(r)) = stream.message().await {
                let generation: u64 = r.system_version_info.parse().unwrap_or(0);
                {
                    let mut s = record.lock().unwrap();
                    s.last_response.insert(generation, Instant::now());
                    s.bytes += r
                        .resources
                        .iter()
                        .map(|x| x.resource.as_ref().map_or(0, |a| a.value.len()) as u64)
                        .sum::<u64>();
                }
                let ack = DeltaDiscoveryRequest { type_url: r.type_url, response_nonce: r.nonce, ..Default::default() };
                if tx.send(ack).await.is_err() {
                    return;
                }
            }
        });
    }
    wait_synced(&control, chosen.len(), 1).await;
    let initial = start.elapsed();
    let initial_times: Vec<Duration> =
        seen.iter().map(|s| s.lock().unwrap().last_response.get(&1).map_or(Duration::MAX, |t| *t - start)).collect();
    let initial_bytes: u64 = seen.iter().map(|s| s.lock().unwrap().bytes).sum();
    let st = stats(initial_times);
    println!(
        "initial push: every sidecar ACKed in {} (per sidecar p50 {} p99 {} max {}); {:.1} MB sent",
        fmt(initial),
        fmt(st.0),
        fmt(st.1),
        fmt(st.2),
        initial_bytes as f64 / 1e6
    );

    // One endpoint change, twice: a pod of a Service turns not ready as the runtime reports a readiness probe
    // (published at once: `Control::set_pod_ready`), then another as a whole new version of the cluster from the
    // source (re-indexed: `Control::apply`, what a manifest edit costs).
    let mut victims = chosen.iter().filter(|p| snapshot.index.cluster().pods[*p].ready);
    let (fast_victim, full_victim) = (victims.next().cloned().unwrap(), victims.next().cloned().unwrap());
    let fast = measure_change(&control, &seen, chosen.len(), "readiness (patched)", || async {
        Control::set_pod_ready(&control.shared, &fast_victim, false).await.unwrap()
    })
    .await;
    let mut changed = snapshot.index.cluster().clone();
    changed.set_pod_ready(&fast_victim, false);
    changed.set_pod_ready(&full_victim, false);
    let cause = format!("{full_victim} not ready");
    let full = measure_change(&control, &seen, chosen.len(), "a new version (re-indexed)", || async {
        Control::apply(&control.shared, Version { cluster: changed, cause }).await.unwrap()
    })
    .await;
    let (rss, hwm) = rss_kib();
    println!(
        "memory: RSS {} MiB after index + encode (before any sidecar); peak {} MiB for the whole process, now {} MiB",
        rss_control / 1024,
        hwm / 1024,
        rss / 1024
    );
    println!("targets (full scale: 10,000 Services, 100,000 pods, 1,000 sidecars; this run at scale {scale}):");
    for (what, p99) in [("a readiness change", fast), ("a new version of the cluster", full)] {
        println!(
            "  {}  after one endpoint change ({what}), p99 until each affected sidecar ACKed < 100 ms: {}",
            if p99 < TARGET_CHANGE_P99 { "PASS" } else { "MISS" },
            fmt(p99)
        );
    }
    println!(
        "  {}  control-plane RSS < 1 GiB: peak {} MiB (process, including the simulated sidecars)",
        if hwm / 1024 < TARGET_RSS_MIB { "PASS" } else { "MISS" },
        hwm / 1024
    );
}

/// Makes one change with `change` (which returns its generation), waits until every sidecar is in sync, and
/// prints what it cost. Returns the p99 of the time from the change until each affected sidecar's last ACK.
async fn measure_change<F: Future<Output = u64>>(
    control: &Control,
    seen: &[Arc<std::sync::Mutex<Seen>>],
    n: usize,
    what: &str,
    change: impl FnOnce() -> F,
) -> Duration {
    let before_bytes: u64 = seen.iter().map(|s| s.lock().unwrap().bytes).sum();
    let t = Instant::now();
    let generation = change().await;
    let published = t.elapsed();
    wait_synced(control, n, generation).await;
    let all = t.elapsed();
    let times: Vec<Duration> =
        seen.iter().filter_map(|s| s.lock().unwrap().last_response.get(&generation).map(|x| *x - t)).collect();
    let affected = times.len();
    let bytes: u64 = seen.iter().map(|s| s.lock().unwrap().bytes).sum::<u64>() - before_bytes;
    let st = stats(times);
    let snapshot = control.shared.current();
    let kinds: Vec<String> = snapshot
        .changed
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(k, d)| format!("{k} {}+{}-", d.put.len(), d.removed.len()))
        .collect();
    println!(
        "one endpoint change, {what} ({}; changed: {}): published after {}; {affected} sidecars affected, ACKed p50 {} p99 {} max {} after the change (all in sync after {}); {:.1} KB sent ({:.0} bytes per affected sidecar)",
        snapshot.cause,
        kinds.join(", "),
        fmt(published),
        fmt(st.0),
        fmt(st.1),
        fmt(st.2),
        fmt(all),
        bytes as f64 / 1e3,
        bytes as f64 / affected.max(1) as f64
    );
    st.1
}

/// Waits until `n` sidecars are connected and SYNCED at `generation` (at most 10 minutes).
async fn wait_synced(control: &Control, n: usize, generation: u64) {
    let start = Instant::now();
    loop {
        let list = control.shared.proxies.list();
        if list.len() >= n && list.iter().all(|p| p.sync_state() == "SYNCED" && p.config_generation() >= generation) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(600), "not synced after 10 minutes");
        tokio::time::sleep(Duration::from_millis(1)).await;
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

/// (VmRSS, VmHWM) in KiB.
fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
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
