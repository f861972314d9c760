//! Scale benchmark: a synthetic cluster of 10,000 Services and 100,000 pods.
//!
//! Targets (from the issue): model load + indexing < 3 s, one workload's config < 5 ms, one explain query < 1 ms
//! after load; memory reported.
//!
//! ```text
//! cargo bench -p podmesh-route --bench scale                           # full scale, release
//! PODMESH_BENCH_SCALE=0.01 cargo bench -p podmesh-route --bench scale  # 1% of the counts
//! cargo test -p podmesh-route --benches                                # smoke run at 0.01, debug build
//! ```
//!
//! The cluster is generated as multi-document YAML text in memory (one text per namespace, like a directory of
//! per-namespace files), so the real parse path is measured: `podmesh_model::load` (split, YAML parse, typed
//! validation, workload expansion, address assignment), then `Index::new`. Each explanation's reason is checked
//! against what the generator built; any mismatch fails the run (exit 1), so the numbers describe correct work.
//! A missed target is reported as MISS and does not fail the run.
//!
//! Without `--bench` on the command line (that is, under `cargo test --benches`) and without
//! `PODMESH_BENCH_SCALE`, the scale defaults to 0.01 so a debug build finishes in seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use podmesh_compute::Index;
use podmesh_model::{ObjectKey, ObjectRef, Source};
use podmesh_route::ReasonCode;
use podmesh_route::explain::{Explanation, Query, explain};
use podmesh_testkit::synthetic::*;

const TARGET_LOAD_INDEX: Duration = Duration::from_secs(3);
const TARGET_CONFIG: Duration = Duration::from_millis(5);
const TARGET_EXPLAIN: Duration = Duration::from_millis(1);

const CONFIG_SAMPLES: usize = 1_000;
const EXPLAIN_SAMPLES: usize = 3_000;
const LOAD_RUNS: usize = 3;

// ---------------------------------------------------------------- measuring helpers

/// xorshift64*: deterministic picks without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
}

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    mean: Duration,
}

/// Nearest-rank percentiles.
fn stats(samples: &mut [Duration]) -> Stats {
    samples.sort_unstable();
    let n = samples.len();
    if n == 0 {
        return Stats { n, p50: Duration::ZERO, p99: Duration::ZERO, max: Duration::ZERO, mean: Duration::ZERO };
    }
    let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
    let total: Duration = samples.iter().sum();
    Stats { n, p50: rank(0.50), p99: rank(0.99), max: samples[n - 1], mean: total / n as u32 }
}

fn fmt_d(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{:.3} s", us / 1e6)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// `VmRSS` and `VmHWM` of this process, in KiB.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// This thread's scheduler accounting (`/proc/thread-self/schedstat`): nanoseconds on a CPU, nanoseconds waiting
/// on a run queue (runnable but not running: another process had the CPU), and how many times it was scheduled
/// in. The run-queue wait is exact at every reschedule; the on-CPU time of a running thread can lag by one tick,
/// so it is only used over long phases.
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    cpu_ns: u64,
    wait_ns: u64,
    slices: u64,
}

fn sched() -> Sched {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
    Sched { cpu_ns: f.next().unwrap_or(0), wait_ns: f.next().unwrap_or(0), slices: f.next().unwrap_or(0) }
}

impl std::ops::Sub for Sched {
    type Output = Sched;
    fn sub(self, o: Sched) -> Sched {
        Sched {
            cpu_ns: self.cpu_ns.saturating_sub(o.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(o.wait_ns),
            slices: self.slices.saturating_sub(o.slices),
        }
    }
}

/// Times `f`, and says whether the thread was descheduled meanwhile (the sample then includes someone else's
/// time slice).
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration, Sched) {
    let before = sched();
    let t = Instant::now();
    let out = f();
    let d = t.elapsed();
    (out, d, sched() - before)
}

fn ms(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}

fn mib(kib: u64) -> String {
    format!("{:.0} MiB", kib as f64 / 1024.0)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name").map(|v| v.trim_start_matches([' ', '\t', ':']).to_string()))
        })
        .unwrap_or_else(|| "unknown".into())
}

// ---------------------------------------------------------------- queries

/// The kinds of explain query, each with the reason the generated cluster must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// HTTP to a Service name (non-VirtualService; every shape, headless included).
    HttpService,
    /// HTTP to a VirtualService-routed Service: canary header, /api/ weighted, default or no_route.
    HttpVirtualService,
    /// HTTP straight to a pod IP, with a Host naming its Service.
    HttpPodWithHost,
    /// HTTP straight to a pod IP, Host = the IP: no_route unless headless (or plain).
    HttpPodNoHost,
    /// TCP straight to a headless pod's TCP port.
    TcpPodHeadless,
    /// TCP straight to a non-headless pod's TCP port: direct_not_headless.
    TcpPodNotHeadless,
    /// TCP to a Service's TCP port.
    TcpService,
    /// HTTP to a Service with a Host that names nothing: no_route at the source.
    NoRouteHost,
    /// From a plain (sidecar-less) pod to an HTTP Service: mtls_required in STRICT namespaces, else ok.
    PlainSource,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::HttpService,
        Kind::HttpVirtualService,
        Kind::HttpPodWithHost,
        Kind::HttpPodNoHost,
        Kind::TcpPodHeadless,
        Kind::TcpPodNotHeadless,
        Kind::TcpService,
        Kind::NoRouteHost,
        Kind::PlainSource,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::HttpService => "http via Service name",
            Kind::HttpVirtualService => "http via VirtualService",
            Kind::HttpPodWithHost => "http to pod IP, Service Host",
            Kind::HttpPodNoHost => "http to pod IP, no Host",
            Kind::TcpPodHeadless => "tcp to headless pod",
            Kind::TcpPodNotHeadless => "tcp to non-headless pod",
            Kind::TcpService => "tcp via Service",
            Kind::NoRouteHost => "http, unknown Host",
            Kind::PlainSource => "from plain pod (kube-proxy)",
        }
    }
}

/// One query and what its explanation must say.
struct Case {
    kind: Kind,
    query: Query,
    reason: ReasonCode,
    /// The route name, when the reason is ok and a route applies.
    route: Option<&'static str>,
    /// How many endpoints serve it, when known.
    endpoints: Option<usize>,
}

struct World<'a> {
    index: &'a Index,
    plans: &'a [SvcPlan],
    meshed_pods: Vec<ObjectKey>,
    plain_pods: Vec<ObjectKey>,
}

impl World<'_> {
    fn pods_of(&self, p: &SvcPlan) -> Vec<&podmesh_model::Pod> {
        self.index.pods_of_service(&p.key).collect()
    }

    fn services(&self, f: impl Fn(&SvcPlan) -> bool) -> Vec<&SvcPlan> {
        self.plans.iter().filter(|p| f(p)).collect()
    }
}

fn build_cases(w: &World<'_>, rng: &mut Rng, n: usize) -> Vec<Case> {
    let non_vs = w.services(|p| p.vs.is_none());
    let with_vs = w.services(|p| p.vs.is_some());
    let http_8080 = w.services(|p| matches!(p.shape, Shape::Http | Shape::HttpTcp | Shape::Headless));
    let headless = w.services(|p| p.shape == Shape::Headless);
    let http_tcp = w.services(|p| p.shape == Shape::HttpTcp);
    let plain_targets = w.services(|p| p.shape == Shape::Http && p.vs.is_none() && !p.plain);
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| match k {
            Kind::HttpVirtualService => !with_vs.is_empty(),
            Kind::TcpPodHeadless => !headless.is_empty(),
            Kind::TcpPodNotHeadless | Kind::TcpService => !http_tcp.is_empty(),
            Kind::PlainSource => !w.plain_pods.is_empty() && !plain_targets.is_empty(),
            _ => true,
        })
        .collect();
    let mut cases = Vec::with_capacity(n);
    for q in 0..n {
        let kind = kinds[q % kinds.len()];
        let from = rng.pick(&w.meshed_pods).clone();
        let case = match kind {
            Kind::HttpService => {
                let p = *rng.pick(&non_vs);
                let url = match p.shape {
                    Shape::Http | Shape::HttpTcp => format!("http://{}/", p.short()),
                    Shape::Auto => format!("http://{}:9000/", p.short()),
                    Shape::Grpc => format!("http://{}:50051/greeter.Greeter/SayHello", p.short()),
                    Shape::Headless => format!("http://{}:8080/", p.short()),
                };
                // A headless name resolves to pod IPs: one pod is explained.
                let endpoints = if p.shape == Shape::Headless { 1 } else { REPLICAS as usize };
                Case {
                    kind,
                    query: Query::http(from, &url).unwrap(),
                    reason: ReasonCode::Ok,
                    route: (p.shape != Shape::Headless).then_some("default"),
                    endpoints: Some(endpoints),
                }
            }
            Kind::HttpVirtualService => {
                let p = *rng.pick(&with_vs);
                let vs = p.vs.as_ref().unwrap();
                let v2 = (REPLICAS - REPLICAS * 8 / 10) as usize;
                let mut query = Query::http(from.clone(), &format!("http://{}/", p.short())).unwrap();
                let (reason, route, endpoints) = match rng.below(4) {
                    0 => {
                        query.headers.push(("X-Canary".into(), "true".into()));
                        (ReasonCode::Ok, Some("canary"), Some(v2))
                    }
                    1 => {
                        query = Query::http(from, &format!("http://{}/api/v1/items?page=2", p.short())).unwrap();
                        (ReasonCode::Ok, Some("api"), Some(REPLICAS as usize))
                    }
                    2 if vs.literal_host.is_some() => {
                        // Host wins: the literal host's virtual host, same VirtualService.
                        query = query.with_host(vs.literal_host.as_deref().unwrap());
                        query.headers.push(("x-canary".into(), "true".into()));
                        (ReasonCode::Ok, Some("canary"), Some(v2))
                    }
                    _ if vs.default_route => (ReasonCode::Ok, Some("default"), Some((REPLICAS * 8 / 10) as usize)),
                    _ => (ReasonCode::NoRoute, None, None),
                };
                Case { kind, query, reason, route, endpoints }
            }
            Kind::HttpPodWithHost | Kind::HttpPodNoHost => {
                let p = *rng.pick(&http_8080);
                let pods = w.pods_of(p);
                let pod = *rng.pick(&pods);
                let url = format!("http://{}:8080/healthz", pod.ip);
                let mut query = Query::http(from, &url).unwrap();
                let reason = if kind == Kind::HttpPodWithHost {
                    query = query.with_host(&p.short());
                    ReasonCode::Ok
                } else if p.shape == Shape::Headless || p.plain {
                    ReasonCode::Ok
                } else {
                    ReasonCode::NoRoute
                };
                let endpoints = (reason == ReasonCode::Ok).then_some(1);
                Case { kind, query, reason, route: None, endpoints }
            }
            Kind::TcpPodHeadless => {
                let p = *rng.pick(&headless);
                let pods = w.pods_of(p);
                let pod = *rng.pick(&pods);
                let query = Query::tcp(from, &format!("{}:5000", pod.ip)).unwrap();
                Case { kind, query, reason: ReasonCode::Ok, route: None, endpoints: Some(1) }
            }
            Kind::TcpPodNotHeadless => {
                let p = *rng.pick(&http_tcp);
                let pods = w.pods_of(p);
                let pod = *rng.pick(&pods);
                let query = Query::tcp(from, &format!("{}:7000", pod.ip)).unwrap();
                Case { kind, query, reason: ReasonCode::DirectNotHeadless, route: None, endpoints: None }
            }
            Kind::TcpService => {
                let p = *rng.pick(&http_tcp);
                let query = Query::tcp(from, &format!("{}:7000", p.short())).unwrap();
                Case { kind, query, reason: ReasonCode::Ok, route: None, endpoints: Some(REPLICAS as usize) }
            }
            Kind::NoRouteHost => {
                let p = *rng.pick(&non_vs);
                let url = match p.shape {
                    Shape::Auto => format!("http://{}:9000/", p.short()),
                    Shape::Grpc => format!("http://{}:50051/", p.short()),
                    // Headless names resolve to pods, where any Host is accepted: use a ClusterIP Service.
                    Shape::Headless => format!("http://{}/", w.plans[0].short()),
                    _ => format!("http://{}/", p.short()),
                };
                let query = Query::http(from, &url).unwrap().with_host("no-such-host.invalid");
                Case { kind, query, reason: ReasonCode::NoRoute, route: None, endpoints: None }
            }
            Kind::PlainSource => {
                let p = *rng.pick(&plain_targets);
                let from = rng.pick(&w.plain_pods).clone();
                let query = Query::http(from, &format!("http://{}/", p.short())).unwrap();
                let (reason, endpoints) = if p.strict_ns() {
                    (ReasonCode::MtlsRequired, None)
                } else {
                    (ReasonCode::Ok, Some(REPLICAS as usize))
                };
                Case { kind, query, reason, route: None, endpoints }
            }
        };
        cases.push(case);
    }
    cases
}

/// Checks an explanation against its case; the mismatch, if any.
fn check(case: &Case, e: &Explanation) -> Option<String> {
    let mut wrong = Vec::new();
    if e.reason != case.reason {
        wrong.push(format!("reason {} (expected {})", e.reason, case.reason));
    }
    if let Some(route) = case.route
        && e.route.as_deref() != Some(route)
    {
        wrong.push(format!("route {:?} (expected {route:?})", e.route));
    }
    if let Some(n) = case.endpoints
        && e.endpoints.len() != n
    {
        wrong.push(format!("{} endpoints (expected {n})", e.endpoints.len()));
    }
    (!wrong.is_empty()).then(|| wrong.join(", "))
}

// ---------------------------------------------------------------- main

fn main() {
    let (scale, command) = scale_and_command("podmesh-route", 10.0);
    let (namespaces, services_per_ns) = dimensions(scale);

    println!("podmesh scale benchmark");
    println!("=======================");
    println!("command:  {command}");
    println!(
        "build:    {}",
        if cfg!(debug_assertions) { "debug (timings NOT meaningful)" } else { "release (bench profile)" }
    );
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("machine:  {cpus} CPU(s), {}", cpu_model());
    println!(
        "load avg: {} (at start; the machine is shared, timings are noisy)",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!("scale:    {scale}");
    println!();

    // ---- generate
    let (rss0, _) = memory();
    let t = Instant::now();
    let plans = plan(namespaces, services_per_ns);
    let (texts, docs) = files(&plans, services_per_ns);
    let gen_time = t.elapsed();
    let yaml_bytes: usize = texts.iter().map(|(_, t)| t.len()).sum();
    let count = |f: &dyn Fn(&SvcPlan) -> bool| plans.iter().filter(|p| f(p)).count();
    println!("synthetic cluster");
    println!(
        "  {} namespaces × {} Services = {} Services; {} replicas each",
        namespaces,
        services_per_ns,
        plans.len(),
        REPLICAS
    );
    println!(
        "  shapes: {} http, {} http+tcp, {} auto, {} grpc, {} headless (StatefulSet); {} plain (no sidecar)",
        count(&|p| p.shape == Shape::Http),
        count(&|p| p.shape == Shape::HttpTcp),
        count(&|p| p.shape == Shape::Auto),
        count(&|p| p.shape == Shape::Grpc),
        count(&|p| p.shape == Shape::Headless),
        count(&|p| p.plain)
    );
    println!(
        "  {} VirtualServices + DestinationRules ({} without a default route, {} with a literal host, {} with a regex match)",
        count(&|p| p.vs.is_some()),
        count(&|p| p.vs.as_ref().is_some_and(|v| !v.default_route)),
        count(&|p| p.vs.as_ref().is_some_and(|v| v.literal_host.is_some())),
        count(&|p| p.vs.as_ref().is_some_and(|v| v.regex))
    );
    println!(
        "  PeerAuthentications: 1 mesh-wide PERMISSIVE, {} namespace STRICT, {} namespace PERMISSIVE, {} workload with portLevelMtls",
        namespaces.div_ceil(2),
        namespaces / 2,
        count(&|p| p.workload_pa.is_some())
    );
    println!(
        "  YAML: {:.1} MB in {} texts (mesh.yaml and one per namespace), {} documents; generated in {}",
        yaml_bytes as f64 / 1e6,
        texts.len(),
        docs,
        fmt_d(gen_time)
    );
    let sources: Vec<Source> =
        texts.iter().map(|(name, text)| Source::Text { name: name.clone(), text: text.clone() }).collect();
    println!();

    // ---- load + index, several times
    println!("load + index ({LOAD_RUNS} runs; each: podmesh_model::load on the YAML texts, then Index::new)");
    println!("  wall time, and in brackets this thread's run-queue wait (runnable, but the CPU was someone else's)");
    let mut runs: Vec<Run> = Vec::new();
    let mut index: Option<Index> = None;
    let mut mem_after_first = (0, 0);
    let mut rss_before_first = 0;
    let mut drops: Vec<Duration> = Vec::new();
    for run in 0..LOAD_RUNS {
        // Drop the previous snapshot first, so only one is alive at a time (timed: a control plane pays it too).
        if let Some(old) = index.take() {
            let ((), d, _) = timed(|| drop(old));
            drops.push(d);
        }
        if run == 0 {
            rss_before_first = memory().0;
        }
        let (loaded, load, load_s) = timed(|| podmesh_model::load(&sources));
        let loaded = match loaded {
            Ok(l) => l,
            Err(e) => {
                eprintln!("the synthetic cluster does not load:");
                for d in e.diagnostics.iter().take(20) {
                    eprintln!("  {d}");
                }
                std::process::exit(1);
            }
        };
        let warnings = loaded.warnings.len();
        let warning_texts: Vec<String> = loaded.warnings.iter().map(|d| d.to_string()).collect();
        let (ix, idx, idx_s) = timed(|| Index::new(loaded.cluster));
        if run == 0 {
            mem_after_first = memory();
            let c = ix.cluster();
            println!(
                "  loaded: {} namespaces, {} Services, {} workloads, {} pods ({} meshed), {} VirtualServices, {} DestinationRules, {} PeerAuthentications",
                c.namespaces.len(),
                c.services.len(),
                c.workloads.len(),
                c.pods.len(),
                c.pods.values().filter(|p| p.sidecar).count(),
                c.virtual_services.len(),
                c.destination_rules.len(),
                c.peer_authentications.len()
            );
            println!("  load warnings: {warnings}; index diagnostics: {}", ix.diagnostics().len());
            let mut codes: BTreeMap<String, usize> = BTreeMap::new();
            for d in warning_texts.into_iter().chain(ix.diagnostics().iter().map(|d| d.to_string())) {
                *codes.entry(d.chars().take(120).collect()).or_default() += 1;
            }
            for (msg, n) in codes.iter().take(5) {
                println!("    {n} × {msg}");
            }
            let out = ix.outbound();
            println!(
                "  shared outbound tables: {} listeners, {} route tables / {} virtual hosts, {} clusters / {} endpoints, {} direct pods",
                out.listeners.len(),
                out.routes.len(),
                out.routes.values().map(|t| t.virtual_hosts.len()).sum::<usize>(),
                out.clusters.len(),
                out.clusters.values().map(|c| c.endpoints.len()).sum::<usize>(),
                out.pods.len()
            );
            if c.services.len() != plans.len() || c.pods.len() != plans.len() * REPLICAS as usize {
                eprintln!(
                    "wrong cluster: {} Services and {} pods, expected {} and {}",
                    c.services.len(),
                    c.pods.len(),
                    plans.len(),
                    plans.len() * REPLICAS as usize
                );
                std::process::exit(1);
            }
        }
        let r = Run { load, load_s, index: idx, index_s: idx_s };
        println!(
            "  run {}: load {:>9} [{:>9}]   index {:>9} [{:>9}]   total {:>9} [{:>9}]",
            run + 1,
            fmt_d(load),
            fmt_d(ms(load_s.wait_ns)),
            fmt_d(idx),
            fmt_d(ms(idx_s.wait_ns)),
            fmt_d(r.total()),
            fmt_d(ms(r.wait_ns()))
        );
        runs.push(r);
        index = Some(ix);
    }
    let index = index.expect("at least one run");
    let median = |f: &dyn Fn(&Run) -> Duration| {
        let mut v: Vec<Duration> = runs.iter().map(f).collect();
        v.sort_unstable();
        v[v.len() / 2]
    };
    let total_med = median(&|r| r.total());
    let busy_med = median(&|r| r.total().saturating_sub(ms(r.wait_ns())));
    println!(
        "  median: load {:>9}   index {:>9}   total {:>9}",
        fmt_d(median(&|r| r.load)),
        fmt_d(median(&|r| r.index)),
        fmt_d(total_med)
    );
    println!(
        "  median of (wall − run-queue wait), i.e. time actually running: load {}   index {}   total {}",
        fmt_d(median(&|r| r.load.saturating_sub(ms(r.load_s.wait_ns)))),
        fmt_d(median(&|r| r.index.saturating_sub(ms(r.index_s.wait_ns)))),
        fmt_d(busy_med)
    );
    if !drops.is_empty() {
        let d: Vec<String> = drops.iter().map(|d| fmt_d(*d)).collect();
        println!("  (not in the totals) dropping the previous Index took: {}", d.join(", "));
    }
    println!();

    // ---- memory
    let (rss_end_load, hwm_end_load) = memory();
    println!("memory (/proc/self/status)");
    println!("  VmRSS at start                         {:>9}", mib(rss0));
    println!(
        "  VmRSS with the YAML texts in memory    {:>9}   (texts and their Source copies: {:.0} MiB)",
        mib(rss_before_first),
        2.0 * yaml_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  VmRSS after the first load + index     {:>9}   (+{}: Cluster + Index, and freed parse memory the allocator keeps)",
        mib(mem_after_first.0),
        mib(mem_after_first.0.saturating_sub(rss_before_first))
    );
    println!("  VmHWM after the first load + index     {:>9}   (peak so far)", mib(mem_after_first.1));
    println!("  VmRSS / VmHWM after {LOAD_RUNS} runs              {:>9} / {}", mib(rss_end_load), mib(hwm_end_load));

    // ---- the pods to query from
    let c = index.cluster();
    let meshed_pods: Vec<ObjectKey> = c.pods.values().filter(|p| p.sidecar).map(|p| p.key.clone()).collect();
    let plain_pods: Vec<ObjectKey> = c.pods.values().filter(|p| !p.sidecar).map(|p| p.key.clone()).collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // One config's size. Each buffer is dropped before the next is made, so this adds little to the peak.
    let sample = rng.pick(&meshed_pods).clone();
    let cfg = index.proxy_config(&sample).expect("meshed pod");
    let (full_len, ser_time, _) = timed(|| serde_json::to_vec(&cfg).unwrap().len());
    let outbound_len = serde_json::to_vec(&*cfg.outbound).unwrap().len();
    let own_len = serde_json::to_vec(&(&cfg.workload, &cfg.inbound)).unwrap().len();
    drop(cfg);
    let (_, hwm_json) = memory();
    println!(
        "  one ProxyConfig as JSON ({sample}): {:.1} MB, serialized in {}; of which the shared outbound tables {:.1} MB, this pod's own workload + inbound {own_len} bytes",
        full_len as f64 / 1e6,
        fmt_d(ser_time),
        outbound_len as f64 / 1e6,
    );
    println!("  VmHWM after serializing it              {:>9}", mib(hwm_json));
    println!();

    // ---- proxy_config
    let mut samples = Vec::with_capacity(CONFIG_SAMPLES);
    let mut inbound_ports = 0usize;
    for _ in 0..CONFIG_SAMPLES {
        let pod = rng.pick(&meshed_pods);
        let (cfg, d, s) = timed(|| index.proxy_config(pod));
        let cfg = cfg.expect("meshed pod has a config");
        inbound_ports += cfg.inbound.ports.len();
        samples.push((d, s));
        drop(cfg);
    }
    let cfg_stats = Sampled::new(&samples);
    println!("proxy_config ({} random meshed pods; outbound is a shared Arc, inbound built per pod)", samples.len());
    println!(
        "  p50 {:>9}   p99 {:>9}   max {:>9}   mean {:>9}   ({:.2} inbound ports per config)",
        fmt_d(cfg_stats.all.p50),
        fmt_d(cfg_stats.all.p99),
        fmt_d(cfg_stats.all.max),
        fmt_d(cfg_stats.all.mean),
        inbound_ports as f64 / CONFIG_SAMPLES as f64
    );
    println!("  {}", cfg_stats.noise());
    println!();

    // ---- change impact (what the control plane asks on every change)
    println!("impact (which configs a change to one object can touch; one call each)");
    let c = index.cluster();
    let mut probes: Vec<(&str, ObjectRef)> = Vec::new();
    if let Some(pod) = meshed_pods.first() {
        probes.push(("one pod", ObjectRef::new(podmesh_model::Kind::Pod, (*pod).clone())));
    }
    if let Some(svc) = c.services.keys().next() {
        probes.push(("one Service", ObjectRef::new(podmesh_model::Kind::Service, svc.clone())));
    }
    if let Some(w) = c.workloads.keys().next() {
        probes.push(("one Deployment", ObjectRef::new(podmesh_model::Kind::Deployment, w.clone())));
    }
    for (label, root) in [("namespace PeerAuthentication", false), ("mesh-wide PeerAuthentication", true)] {
        let pa = c
            .peer_authentications
            .values()
            .find(|pa| pa.selector.is_none() && (*pa.key.namespace == *c.mesh.root_namespace) == root);
        if let Some(pa) = pa {
            probes.push((label, ObjectRef::new(podmesh_model::Kind::PeerAuthentication, pa.key.clone())));
        }
    }
    for (label, object) in probes {
        let (imp, d, _) = timed(|| index.impact(&object));
        println!(
            "  {label:<30} {:>9}   ({} pods' inbound, {} Services' clusters, {} direct entries)",
            fmt_d(d),
            imp.inbound.len(),
            imp.cluster_services.len(),
            imp.pods.len()
        );
    }
    println!();

    // ---- explain
    let world = World { index: &index, plans: &plans, meshed_pods, plain_pods };
    let cases = build_cases(&world, &mut rng, EXPLAIN_SAMPLES);
    let mut all = Vec::with_capacity(cases.len());
    let mut by_kind: BTreeMap<Kind, KindResults> = BTreeMap::new();
    let mut mismatches: Vec<String> = Vec::new();
    for case in &cases {
        let (result, d, s) = timed(|| explain(&index, &case.query));
        all.push((d, s));
        let entry = by_kind.entry(case.kind).or_default();
        entry.0.push((d, s));
        match result {
            Ok(e) => {
                *entry.1.entry(e.reason).or_default() += 1;
                if let Some(why) = check(case, &e) {
                    mismatches.push(format!(
                        "{}: from {} to {} (Host {:?}): {why}",
                        case.kind.label(),
                        case.query.from,
                        case.query.target.authority,
                        e.host
                    ));
                }
            }
            Err(err) => mismatches.push(format!("{}: {err}", case.kind.label())),
        }
    }
    let ex_stats = Sampled::new(&all);
    println!("explain ({} queries, mixed kinds, each checked against the expected reason)", all.len());
    println!("  {:<30} {:>5} {:>10} {:>10} {:>10} {:>7}   reasons", "kind", "n", "p50", "p99", "max", "desched");
    for (kind, (samples, reasons)) in &by_kind {
        let s = Sampled::new(samples);
        let reasons: Vec<String> = reasons.iter().map(|(r, n)| format!("{r} {n}")).collect();
        println!(
            "  {:<30} {:>5} {:>10} {:>10} {:>10} {:>7}   {}",
            kind.label(),
            s.all.n,
            fmt_d(s.all.p50),
            fmt_d(s.all.p99),
            fmt_d(s.all.max),
            s.descheduled,
            reasons.join(", ")
        );
    }
    println!(
        "  {:<30} {:>5} {:>10} {:>10} {:>10} {:>7}   mean {}",
        "all",
        ex_stats.all.n,
        fmt_d(ex_stats.all.p50),
        fmt_d(ex_stats.all.p99),
        fmt_d(ex_stats.all.max),
        ex_stats.descheduled,
        fmt_d(ex_stats.all.mean)
    );
    println!("  {}", ex_stats.noise());
    println!("  mismatches: {}", mismatches.len());
    for m in mismatches.iter().take(10) {
        println!("    {m}");
    }
    println!();

    // ---- verdict
    println!(
        "targets{} — verdicts on wall time as measured; [bracketed] the same without time spent descheduled",
        if scale == 1.0 { "" } else { " (stated for scale 1.0; this run is at another scale)" }
    );
    println!(
        "  load + index < {:<8}  median {:>9}  (worst {:>9})  [{:>9}]   {}",
        fmt_d(TARGET_LOAD_INDEX),
        fmt_d(total_med),
        fmt_d(runs.iter().map(Run::total).max().unwrap_or_default()),
        fmt_d(busy_med),
        verdict(total_med < TARGET_LOAD_INDEX)
    );
    println!(
        "  one config < {:<8}    p99    {:>9}  (max   {:>9})  [{:>9}]   {}",
        fmt_d(TARGET_CONFIG),
        fmt_d(cfg_stats.all.p99),
        fmt_d(cfg_stats.all.max),
        fmt_d(cfg_stats.undisturbed.p99),
        verdict(cfg_stats.all.p99 < TARGET_CONFIG)
    );
    println!(
        "  one explain < {:<8}   p99    {:>9}  (max   {:>9})  [{:>9}]   {}",
        fmt_d(TARGET_EXPLAIN),
        fmt_d(ex_stats.all.p99),
        fmt_d(ex_stats.all.max),
        fmt_d(ex_stats.undisturbed.p99),
        verdict(ex_stats.all.p99 < TARGET_EXPLAIN)
    );
    println!(
        "  memory (reported)        VmRSS {} after load + index; VmHWM {} over {LOAD_RUNS} load + index runs",
        mib(mem_after_first.0),
        mib(hwm_end_load)
    );
    println!(
        "  correctness              {} of {} explanations as expected",
        cases.len() - mismatches.len(),
        cases.len()
    );
    if !mismatches.is_empty() {
        eprintln!("FAILED: {} explanation(s) differ from what the synthetic cluster implies", mismatches.len());
        std::process::exit(1);
    }
}

/// Per query kind: the timed samples, and how many explanations gave each reason.
type KindResults = (Vec<(Duration, Sched)>, BTreeMap<ReasonCode, usize>);

/// One load + index run.
#[derive(Debug, Clone, Copy)]
struct Run {
    load: Duration,
    load_s: Sched,
    index: Duration,
    index_s: Sched,
}

impl Run {
    fn total(&self) -> Duration {
        self.load + self.index
    }
    fn wait_ns(&self) -> u64 {
        self.load_s.wait_ns + self.index_s.wait_ns
    }
}

/// Percentiles of timed samples: all of them, and those during which the thread was never descheduled.
struct Sampled {
    all: Stats,
    undisturbed: Stats,
    descheduled: usize,
    wait: Duration,
}

impl Sampled {
    fn new(samples: &[(Duration, Sched)]) -> Self {
        let mut all: Vec<Duration> = samples.iter().map(|(d, _)| *d).collect();
        let mut quiet: Vec<Duration> =
            samples.iter().filter(|(_, s)| s.slices == 0 && s.wait_ns == 0).map(|(d, _)| *d).collect();
        let wait = samples.iter().map(|(_, s)| ms(s.wait_ns)).sum();
        Sampled { descheduled: all.len() - quiet.len(), all: stats(&mut all), undisturbed: stats(&mut quiet), wait }
    }

    fn noise(&self) -> String {
        format!(
            "{} of {} samples were descheduled while timed (run-queue wait {} in all); the {} undisturbed ones: p50 {}, p99 {}, max {}",
            self.descheduled,
            self.all.n,
            fmt_d(self.wait),
            self.undisturbed.n,
            fmt_d(self.undisturbed.p50),
            fmt_d(self.undisturbed.p99),
            fmt_d(self.undisturbed.max)
        )
    }
}
