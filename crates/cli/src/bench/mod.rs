//! `podmesh bench proxy`: what a pair of podmesh sidecars with mTLS costs, against a direct connection and the
//! nginx and HAProxy mTLS sidecar pairs, all measured in the same run on the same machine.
//!
//! The benchmark re-runs itself under `unshare --net --mount --pid --fork --mount-proc --kill-child`, and builds
//! its two network namespaces, capture rules and processes inside that private tree: nothing on the host
//! changes, and when the benchmark ends — finished, failed or interrupted — the kernel tears all of it down,
//! processes included. `lab.rs` is the lab, `loadgen.rs` the load generator (a child process per run, in the
//! client namespace, pinned apart from the system under test), `report.rs` the medians, table and verdicts.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

mod lab;
mod loadgen;
mod report;

use lab::{App, Component, Lab, Pinning};
use loadgen::LoadResult;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Compare the podmesh sidecar pair (mTLS, transparent capture) with a direct connection and the nginx and
    /// HAProxy mTLS sidecar pairs: latency at fixed rates (coordinated-omission corrected) and at saturation,
    /// throughput, sidecar CPU and memory. Needs root (it builds network namespaces in a private namespace
    /// tree; nothing on the host changes). `--quick` takes about a minute.
    Proxy(ProxyBenchArgs),
    /// The load generator one measurement runs (inside the lab); prints one JSON object.
    #[command(hide = true)]
    Loadgen(loadgen::LoadgenArgs),
}

#[derive(Args, Debug, Clone)]
pub struct ProxyBenchArgs {
    /// About a minute: one round of 3 s runs (each setting below still overrides).
    #[arg(long)]
    quick: bool,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: Output,
    /// The fixed rates, requests per second (the targets are stated at 1000 and 5000).
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    rates: Vec<u32>,
    /// Seconds per fixed-rate run [default: 10, --quick 3].
    #[arg(long)]
    duration: Option<f64>,
    /// Seconds per saturation run [default: --duration].
    #[arg(long)]
    sat_duration: Option<f64>,
    /// Rounds; each round runs every configuration, in an order rotated by one per round [default: 3, --quick 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// The configurations to run (comma-separated). direct always runs: the others are measured against it.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Config>,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    /// Seconds of warm-up at the first rate before each configuration's runs [default: 1, --quick 0.5].
    #[arg(long)]
    warmup: Option<f64>,
    /// The application behind every configuration; auto: nginx if installed, else podmesh echo.
    #[arg(long, value_enum, default_value = "auto")]
    app: AppChoice,
    /// Worker threads (podmesh, HAProxy) or processes (nginx) per sidecar and for the app.
    #[arg(long, default_value_t = 1)]
    workers: u32,
    /// Don't pin the load generator and the system under test to different CPUs.
    #[arg(long)]
    no_pin: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Output {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum AppChoice {
    Auto,
    Nginx,
    Echo,
}

/// The configurations, in the order rounds start from.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Config {
    /// The client straight to the app.
    #[value(alias = "a")]
    Direct,
    /// podmesh client and server sidecars, mTLS, transparent capture, calling the Service's ClusterIP.
    #[value(alias = "p")]
    Podmesh,
    /// The nginx mTLS sidecar pair.
    #[value(alias = "n")]
    Nginx,
    /// The HAProxy mTLS sidecar pair.
    #[value(alias = "h")]
    Haproxy,
}

impl Config {
    const ALL: [Config; 4] = [Config::Direct, Config::Podmesh, Config::Nginx, Config::Haproxy];

    pub fn label(self) -> &'static str {
        match self {
            Config::Direct => "direct",
            Config::Podmesh => "podmesh mTLS pair",
            Config::Nginx => "nginx mTLS pair",
            Config::Haproxy => "haproxy mTLS pair",
        }
    }

    /// The lab's names of its processes (besides the app).
    fn processes(self) -> &'static [&'static str] {
        match self {
            Config::Direct => &[],
            Config::Podmesh => &["podmesh-client", "podmesh-server"],
            Config::Nginx => &["nginx-out", "nginx-in"],
            Config::Haproxy => &["haproxy-out", "haproxy-in"],
        }
    }

    fn url(self, app: App) -> String {
        let path = app.path();
        match self {
            Config::Direct => format!("http://{}:{}{path}", lab::IP_SRV, lab::P_APP),
            Config::Podmesh => format!("http://{}:80{path}", lab::CLUSTER_IP),
            Config::Nginx => format!("http://127.0.0.1:{}{path}", lab::P_NGX_OUT),
            Config::Haproxy => format!("http://127.0.0.1:{}{path}", lab::P_HAP_OUT),
        }
    }
}

/// A test of one configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Test {
    Rate(u32),
    Saturation,
}

impl Test {
    fn label(self) -> String {
        match self {
            Test::Rate(r) => format!("rate {r}"),
            Test::Saturation => "saturation".into(),
        }
    }
}

/// The settings a run used, after --quick and the defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub rounds: u32,
    pub rates: Vec<u32>,
    pub duration_s: f64,
    pub sat_duration_s: f64,
    pub warmup_s: f64,
    pub pause_s: f64,
    pub conns: usize,
    pub workers: u32,
    pub app: String,
    pub pinning: Option<String>,
    pub configs: Vec<Config>,
}

/// One measurement: a load generator run, and what the processes under test used meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub round: u32,
    pub config: Config,
    pub test: Test,
    pub load: LoadResult,
    /// CPU seconds per component (client, server, app) during the run.
    pub cpu_s: BTreeMap<String, f64>,
    /// VmRSS at the end of the run and VmHWM (peak so far), KiB, per component.
    pub rss_kib: BTreeMap<String, u64>,
    pub hwm_kib: BTreeMap<String, u64>,
    /// The whole machine's busy and steal shares from /proc/stat. Tick-sampled: at low rates, where every process
    /// sleeps between short bursts, it reads far too low; a rough sign of other load, no more.
    pub host_busy_pct: f64,
    pub host_steal_pct: f64,
}

/// The machine, read when the run starts and ends.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub kernel: String,
    pub nginx: Option<String>,
    pub haproxy: Option<String>,
}

/// Set in the re-run inside the private namespaces: the lab's working directory.
const LAB_ENV: &str = "PODMESH_BENCH_LAB";
/// The command line as typed, for the report.
const COMMAND_ENV: &str = "PODMESH_BENCH_COMMAND";
const INSTALL_PEERS: &str = "apt-get install -y nginx-light haproxy";

pub fn run(cmd: BenchCommand) -> Result<ExitCode> {
    match cmd {
        BenchCommand::Proxy(a) => proxy(&a),
        BenchCommand::Loadgen(a) => loadgen::run(&a),
    }
}

fn is_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // "Uid: real effective saved fs"
    status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().nth(1)) == Some("0")
}

/// PATH plus the sbin directories, where nginx, haproxy, ip and iptables-restore live (a user's PATH under sudo
/// may lack them).
fn search_path() -> OsString {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&search_path()).map(|d| d.join(tool)).find(|p| p.is_file())
}

fn proxy(a: &ProxyBenchArgs) -> Result<ExitCode> {
    if let Some(dir) = std::env::var_os(LAB_ENV) {
        return inner(a, Path::new(&dir));
    }
    if !is_root() {
        eprintln!(
            "podmesh bench proxy needs root: it builds network namespaces and iptables rules (inside a private \
             namespace tree; nothing on the host changes). Run it as root, e.g. sudo."
        );
        return Ok(ExitCode::from(2));
    }
    let missing: Vec<&str> =
        ["unshare", "ip", "iptables-restore", "mount"].into_iter().filter(|t| which(t).is_none()).collect();
    if !missing.is_empty() {
        bail!("missing {}: apt-get install -y util-linux iproute2 iptables mount", missing.join(", "));
    }
    let exe = std::env::current_exe().context("finding the podmesh binary")?;
    let dir = std::env::temp_dir().join(format!("podmesh-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let typed: Vec<String> = std::env::args().collect();
    let status = Command::new("unshare")
        .args(["--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(LAB_ENV, &dir)
        .env(COMMAND_ENV, typed.join(" "))
        .env("PATH", search_path())
        .status()
        .context("running unshare (util-linux)")?;
    if status.success() {
        let _ = std::fs::remove_dir_all(&dir);
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("podmesh bench: the lab's logs are in {}", dir.display());
        Ok(ExitCode::from(status.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)))
    }
}

/// A note for the report (one line: a process's log tail may span several) and for stderr now.
fn add_note(notes: &mut Vec<String>, note: String) {
    let note = note.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" / ");
    eprintln!("podmesh bench: {note}");
    notes.push(note);
}

fn first_line(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    let text = if out.stdout.is_empty() { out.stderr } else { out.stdout };
    String::from_utf8_lossy(&text).lines().next().map(|l| l.trim().to_string())
}

fn loadavg() -> String {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    s.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// What was started for a configuration: its sidecars (client, server) and the app.
#[derive(Debug, Clone)]
struct Started {
    config: Config,
    components: Vec<Component>,
}

fn inner(a: &ProxyBenchArgs, dir: &Path) -> Result<ExitCode> {
    let began = Instant::now();
    let date = SystemTime::now();
    let command = std::env::var(COMMAND_ENV).unwrap_or_else(|_| std::env::args().collect::<Vec<_>>().join(" "));
    let nginx = which("nginx");
    let haproxy = which("haproxy");
    let mut machine = Machine {
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        loadavg_before: loadavg(),
        loadavg_after: String::new(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        nginx: nginx.as_ref().and_then(|p| first_line(Command::new(p).arg("-v"))),
        haproxy: haproxy.as_ref().and_then(|p| first_line(Command::new(p).arg("-v"))),
    };
    let mut notes: Vec<String> = Vec::new();
    let app = match (a.app, &nginx) {
        (AppChoice::Nginx, None) => bail!("--app nginx: nginx is not installed ({INSTALL_PEERS})"),
        (AppChoice::Auto | AppChoice::Nginx, Some(_)) => App::Nginx,
        (AppChoice::Auto | AppChoice::Echo, None) | (AppChoice::Echo, Some(_)) => App::Echo,
    };
    let mut configs: Vec<Config> = if a.only.is_empty() {
        Config::ALL.to_vec()
    } else {
        Config::ALL.into_iter().filter(|c| a.only.contains(c)).collect()
    };
    if !configs.contains(&Config::Direct) {
        configs.insert(0, Config::Direct);
    }
    for (config, tool, found) in [(Config::Nginx, "nginx", &nginx), (Config::Haproxy, "haproxy", &haproxy)] {
        if configs.contains(&config) && found.is_none() {
            let note = format!("{} not measured: {tool} is not installed; {INSTALL_PEERS}", config.label());
            add_note(&mut notes, note);
            configs.retain(|c| *c != config);
        }
    }
    let pin = if a.no_pin || machine.nproc < 2 || which("taskset").is_none() {
        notes.push("not pinned: the load generator and the system under test share the CPUs".into());
        None
    } else {
        Some(Pinning { loadgen: "0".into(), sut: "1".into() })
    };
    let settings = Settings {
        rounds: a.rounds.unwrap_or(if a.quick { 1 } else { 3 }).max(1),
        rates: a.rates.iter().copied().filter(|r| *r > 0).collect(),
        duration_s: a.duration.unwrap_or(if a.quick { 3.0 } else { 10.0 }),
        sat_duration_s: a.sat_duration.or(a.duration).unwrap_or(if a.quick { 3.0 } else { 10.0 }),
        warmup_s: a.warmup.unwrap_or(if a.quick { 0.5 } else { 1.0 }),
        pause_s: if a.quick { 0.2 } else { 0.5 },
        conns: a.conns,
        workers: a.workers.max(1),
        app: app.describe().to_string(),
        pinning: pin
            .as_ref()
            .map(|p| format!("load generator on CPU {}, app and sidecars on CPU {}", p.loadgen, p.sut)),
        configs: configs.clone(),
    };
    let valid = settings.duration_s > 0.0 && settings.sat_duration_s > 0.0 && settings.duration_s <= 600.0;
    if !valid || settings.sat_duration_s > 600.0 {
        bail!("--duration and --sat-duration must be in (0, 600] seconds");
    }
    let exe = std::env::current_exe().context("finding the podmesh binary")?;

    let mut lab = Lab::up(dir, &exe, pin, settings.workers)?;
    lab.make_certs()?;
    lab.make_configs()?;
    let app_component = lab.start_app(app)?;
    let mut started: Vec<Started> = Vec::new();
    for &config in &configs {
        let pair = match config {
            Config::Direct => Ok(Vec::new()),
            Config::Podmesh => lab.start_podmesh_pair().map(Vec::from),
            Config::Nginx => lab.start_nginx_pair().map(Vec::from),
            Config::Haproxy => lab.start_haproxy_pair().map(Vec::from),
        };
        match pair {
            Ok(mut components) => {
                components.push(app_component.clone());
                started.push(Started { config, components });
            }
            Err(e) if config != Config::Direct => {
                let note = format!("{} not measured: it did not start: {e:#}", config.label());
                add_note(&mut notes, note);
                lab.retire(config.processes());
            }
            Err(e) => return Err(e),
        }
    }
    let mut checked = Vec::new();
    for s in started {
        match check(&mut lab, s.config, app) {
            Ok(()) => checked.push(s),
            Err(e) if s.config != Config::Direct => {
                let note = format!("{} not measured: its check failed: {e:#}", s.config.label());
                add_note(&mut notes, note);
                lab.retire(s.config.processes());
            }
            Err(e) => return Err(e.context("the direct configuration does not work")),
        }
    }
    // Direct again: the capture rules are gone once the podmesh checks are over.
    check(&mut lab, Config::Direct, app).context("direct after the capture rules were removed")?;

    let per_config = settings.warmup_s
        + settings.rates.len() as f64 * settings.duration_s
        + settings.sat_duration_s
        + (settings.rates.len() + 2) as f64 * (settings.pause_s + 0.15);
    eprintln!(
        "podmesh bench: {} configuration(s) x {} round(s), about {:.0} s of load",
        checked.len(),
        settings.rounds,
        per_config * checked.len() as f64 * f64::from(settings.rounds)
    );
    let mut records = Vec::new();
    for round in 0..settings.rounds {
        let k = round as usize % checked.len().max(1);
        let order: Vec<Started> = checked[k..].iter().chain(&checked[..k]).cloned().collect();
        for s in order {
            match measure_config(&mut lab, &s, app, &settings, round) {
                Ok((recs, note)) => {
                    records.extend(recs);
                    if let Some(note) = note {
                        add_note(&mut notes, note);
                    }
                }
                // Its numbers stay out of the medians; the rest of the run still compares the others.
                Err(e) if s.config != Config::Direct => {
                    let note = format!("{} stopped in round {}: {e:#}", s.config.label(), round + 1);
                    add_note(&mut notes, note);
                    lab.retire(s.config.processes());
                    checked.retain(|c| c.config != s.config);
                }
                Err(e) => return Err(e.context("measuring direct")),
            }
        }
    }
    machine.loadavg_after = loadavg();
    drop(lab);
    let rep = report::Report::new(command, date, machine, settings, notes, records, began.elapsed());
    match a.output {
        Output::Text => print!("{}", rep.text()),
        Output::Json => println!("{}", serde_json::to_string_pretty(&rep)?),
    }
    Ok(ExitCode::SUCCESS)
}

fn loadgen_args(url: &str, conns: usize, rate: f64, duration: f64, requests: Option<u64>) -> Vec<String> {
    let mut v = vec![
        "--url".into(),
        url.into(),
        "--host".into(),
        lab::HOST.into(),
        "--conns".into(),
        conns.to_string(),
        "--rate".into(),
        rate.to_string(),
        "--duration".into(),
        duration.to_string(),
    ];
    if let Some(n) = requests {
        v.extend(["--requests".into(), n.to_string()]);
    }
    v
}

/// That a configuration serves 200 with the 1 KiB body, and (for the sidecar pairs) that its server side refuses
/// a client without a mesh certificate. Retries the first for a while: nginx and HAProxy give no ready signal.
fn check(lab: &mut Lab, config: Config, app: App) -> Result<()> {
    if config == Config::Podmesh {
        lab.capture(true)?;
    }
    let result = check_paths(lab, config, app);
    if config == Config::Podmesh {
        lab.capture(false)?;
    }
    result
}

fn check_paths(lab: &mut Lab, config: Config, app: App) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        lab.alive(config.processes())?;
        let r = lab.loadgen(&loadgen_args(&config.url(app), 1, 0.0, 5.0, Some(20)), 5.0)?;
        if r.ok == 20 && r.body_min == lab::BODY_BYTES && r.body_max == lab::BODY_BYTES {
            eprintln!("podmesh bench: check: {} answers 200 with {} bytes", config.label(), lab::BODY_BYTES);
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{} answers {} of 20 requests with 200 and a {}-byte body (bodies {}..{} bytes; {})",
                config.url(app),
                r.ok,
                lab::BODY_BYTES,
                r.body_min,
                r.body_max,
                r.first_error.as_deref().unwrap_or("no error")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // A client without a certificate: over TLS for nginx and HAProxy, plaintext for podmesh (STRICT).
    let refused = |lab: &Lab, url: String, tls: bool| -> Result<()> {
        let mut args = loadgen_args(&url, 1, 0.0, 3.0, Some(1));
        if tls {
            let ca = lab.dir.join("certs/peer/ca.pem");
            args.extend(["--tls-ca".into(), ca.to_string_lossy().into_owned()]);
            args.extend(["--tls-name".into(), lab::PEER_NAME.into()]);
        }
        let r = lab.loadgen(&args, 3.0)?;
        if r.ok > 0 {
            bail!("{url} answered 200 to a client without a certificate");
        }
        let how = r.first_error.unwrap_or_default();
        eprintln!("podmesh bench: check: {} refuses a client without a certificate ({how})", config.label());
        Ok(())
    };
    match config {
        Config::Direct => Ok(()),
        Config::Podmesh => {
            // Without the client namespace's capture, so that the request leaves in plaintext, not through the
            // client sidecar; the server namespace's rules still take it to the server sidecar.
            lab.capture_in(&[lab::NS_CLI], false)?;
            let r = refused(lab, format!("http://{}:{}/", lab::IP_SRV, lab::P_APP), false);
            lab.capture_in(&[lab::NS_CLI], true)?;
            r
        }
        Config::Nginx => refused(lab, format!("http://{}:{}/", lab::IP_SRV, lab::P_NGX_IN), true),
        Config::Haproxy => refused(lab, format!("http://{}:{}/", lab::IP_SRV, lab::P_HAP_IN), true),
    }
}

/// One configuration's turn in a round: warm-up, the fixed rates, saturation.
/// The records, and a note when the warm-up saw failures (those stay out of the numbers, but are worth knowing:
/// the first requests after an idle period are where connection reuse goes wrong).
fn measure_config(
    lab: &mut Lab,
    s: &Started,
    app: App,
    st: &Settings,
    round: u32,
) -> Result<(Vec<Record>, Option<String>)> {
    let url = s.config.url(app);
    if s.config == Config::Podmesh {
        lab.capture(true)?;
    }
    let result = (|| {
        let mut out = Vec::new();
        let mut note = None;
        if st.warmup_s > 0.0 {
            let first = st.rates.first().copied().unwrap_or(1000);
            let w = lab.loadgen(&loadgen_args(&url, st.conns, f64::from(first), st.warmup_s, None), st.warmup_s)?;
            if w.non_200 + w.errors + w.unsent > 0 {
                note = Some(format!(
                    "{} warm-up, round {}: {} of {} request(s) not answered 200 (first: {}); not counted in the \
                     numbers",
                    s.config.label(),
                    round + 1,
                    w.non_200 + w.errors + w.unsent,
                    w.responses + w.errors + w.unsent,
                    w.first_error.as_deref().unwrap_or("?")
                ));
            }
            std::thread::sleep(Duration::from_secs_f64(st.pause_s));
        }
        let tests = st.rates.iter().map(|r| Test::Rate(*r)).chain([Test::Saturation]);
        for test in tests {
            let (rate, duration) = match test {
                Test::Rate(r) => (f64::from(r), st.duration_s),
                Test::Saturation => (0.0, st.sat_duration_s),
            };
            let rec = measure(lab, s, round, test, &loadgen_args(&url, st.conns, rate, duration, None), duration)?;
            eprintln!("{}", progress(&rec, st.rounds));
            out.push(rec);
            std::thread::sleep(Duration::from_secs_f64(st.pause_s));
        }
        lab.alive(s.config.processes())?;
        Ok((out, note))
    })();
    if s.config == Config::Podmesh {
        lab.capture(false)?;
    }
    result
}

fn measure(lab: &mut Lab, s: &Started, round: u32, test: Test, args: &[String], duration: f64) -> Result<Record> {
    let cpu_before: Vec<f64> = s.components.iter().map(|c| lab::tree_cpu(c.pid)).collect();
    let host_before = lab::cpu_sample();
    let load = lab.loadgen(args, duration)?;
    let host_after = lab::cpu_sample();
    let cpu_after: Vec<f64> = s.components.iter().map(|c| lab::tree_cpu(c.pid)).collect();
    let (busy, steal) = lab::busy_steal(&host_before, &host_after);
    let mut cpu_s = BTreeMap::new();
    let mut rss_kib = BTreeMap::new();
    let mut hwm_kib = BTreeMap::new();
    for (i, c) in s.components.iter().enumerate() {
        cpu_s.insert(c.role.to_string(), (cpu_after[i] - cpu_before[i]).max(0.0));
        let (rss, hwm) = lab::tree_mem_kib(c.pid);
        rss_kib.insert(c.role.to_string(), rss);
        hwm_kib.insert(c.role.to_string(), hwm);
    }
    Ok(Record {
        round,
        config: s.config,
        test,
        load,
        cpu_s,
        rss_kib,
        hwm_kib,
        host_busy_pct: busy,
        host_steal_pct: steal,
    })
}

fn progress(r: &Record, rounds: u32) -> String {
    let sidecars: f64 = r.cpu_s.iter().filter(|(k, _)| k.as_str() != "app").map(|(_, v)| v).sum();
    let l = &r.load;
    format!(
        "round {}/{rounds} {:<18} {:<10} {:>7.0} req/s  p50 {:.3}  p99 {:.3}  max {:.2} ms  sidecars {:.2} CPU-s  \
         errors {}  non-200 {}",
        r.round + 1,
        r.config.label(),
        r.test.label(),
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        sidecars,
        l.errors + l.unsent,
        l.non_200,
    )
}
