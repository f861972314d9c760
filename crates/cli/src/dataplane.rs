//! The data-plane commands: `proxy` (the sidecar), `capture` (its iptables rules), `ca` (certificates from a
//! local mesh CA, until the control plane issues them) and `echo` (the test workload).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Subcommand, ValueEnum};
use podmesh_identity::Ca;
use podmesh_proxy::capture::{self, Exclude, Family};
use podmesh_proxy::net::bind_wildcards;
use podmesh_proxy::probe::AppProbes;
use podmesh_proxy::{
    AccessLog, AppMetrics, ConfigHandle, ControlOptions, ControlSource, Dialer, FilePaths, FileSource, Intake, OrigDst,
    Proxy, Tls, Update,
};

#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// The sidecar config: the JSON `podmesh routes -o json` prints. Re-read when the file changes.
    #[arg(long, value_name = "FILE", required_unless_present = "control", requires_all = ["cert", "key", "roots"])]
    config: Option<PathBuf>,
    /// This workload's certificate chain (PEM, leaf first), its key, and the mesh trust anchors.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    #[arg(long, value_name = "FILE")]
    roots: Option<PathBuf>,
    /// Instead of the files: the control plane's gRPC address (`podmesh control --listen`), an IP or a DNS name with
    /// its port (in a cluster, `podmesh-control.podmesh-system.svc:15012`, resolved at each connection). The sidecar gets its
    /// certificate from the control plane's CA with the pod's bootstrap token, then its config over xDS, and
    /// follows both.
    #[arg(long, value_name = "ADDR", conflicts_with_all = ["config", "cert", "key", "roots"],
          requires_all = ["token_file", "control_roots"])]
    control: Option<podmesh_proxy::ControlAddress>,
    /// The pod's bootstrap token (a file holding what `podmesh token` prints).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The mesh root(s), PEM (the control plane's `root.pem`): the control plane must prove it holds a
    /// certificate chaining to one.
    #[arg(long, value_name = "FILE")]
    control_roots: Option<PathBuf>,
    /// The mesh's trust domain: the control plane's identity is spiffe://DOMAIN/ns/podmesh-system/sa/podmesh-control.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    trust_domain: String,
    /// Workload certificate lifetime to ask the CA for, in seconds (0: the CA's default); renewed at half-life.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    cert_ttl_seconds: u64,
    /// How long to wait for the control plane's certificate and first config before giving up.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    join_timeout_seconds: u64,
    /// Where captured outbound connections arrive (R7: 15001).
    #[arg(long, default_value = "0.0.0.0:15001")]
    outbound: SocketAddr,
    /// Where captured inbound connections arrive (R7: 15006).
    #[arg(long, default_value = "0.0.0.0:15006")]
    inbound: SocketAddr,
    /// Merged Prometheus metrics (`/stats/prometheus`: the proxy's and the application's) and health, reachable
    /// by other pods in plaintext (R7, R8).
    #[arg(long, default_value = "0.0.0.0:15020")]
    stats: SocketAddr,
    /// Readiness (`/healthz/ready`), for the kubelet.
    #[arg(long, default_value = "0.0.0.0:15021")]
    readiness: SocketAddr,
    /// Admin (`/config_dump`, `/clusters`, `/logging`); loopback clients only.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// The application's own metrics port (the pod's `prometheus.io/port`), merged into /stats/prometheus.
    #[arg(long, value_name = "PORT")]
    app_metrics_port: Option<u16>,
    /// Their path (`prometheus.io/path`).
    #[arg(long, value_name = "PATH", default_value = "/metrics", requires = "app_metrics_port")]
    app_metrics_path: String,
    /// The application's kubelet probes, as the injector rewrote them to 15020 `/app-health/<container>/readyz`
    /// (`livez`, `startupz`): a JSON object of rewritten path to the original probe, in Istio's
    /// `ISTIO_KUBE_APP_PROBERS` format (`{"/app-health/web/readyz":{"httpGet":{"path":"/ready","port":8080},
    /// "timeoutSeconds":1}}`, or `tcpSocket`). Under STRICT the kubelet's plaintext probe of the application would be
    /// refused, so the sidecar performs it over loopback and answers for it.
    #[arg(long, value_name = "JSON", env = "PODMESH_APP_PROBES")]
    app_probes: Option<String>,
    /// SO_MARK on every connection the proxy opens, which the capture rules exclude. 0: no mark (the proxy
    /// runs under its own uid instead).
    #[arg(long, default_value_t = capture::DEFAULT_MARK)]
    mark: u32,
    /// Access log: one JSON line per request and TCP connection.
    #[arg(long, value_enum, default_value = "stdout")]
    access_log: LogTarget,
    /// On SIGTERM: stop accepting, let requests in flight finish (HTTP/2 GOAWAY, HTTP/1 `Connection: close`) for
    /// up to this many seconds, then exit. Istio's terminationDrainDuration is 5 s.
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    drain_seconds: u64,
    /// Worker threads (Istio's `concurrency`). 1 runs everything on one thread with no cross-thread wake-ups, the
    /// cheapest per request (Linkerd's proxy does the same when it has one core), and suits a machine shared by
    /// many sidecars; raise it for a workload that needs more than one core of proxying. 0 means one per CPU.
    #[arg(long, value_name = "N", default_value_t = 1)]
    concurrency: usize,
    /// Validate the config and certificates, print what would run, and exit.
    #[arg(long)]
    check: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogTarget {
    Stdout,
    Off,
}

#[derive(Subcommand, Debug)]
pub enum CaptureCommand {
    /// Install the capture rules in the current network namespace (run inside the pod, as root or with
    /// NET_ADMIN), atomically with iptables-restore.
    Install(CaptureArgs),
    /// Print the rules instead of installing them.
    Print(CaptureArgs),
}

#[derive(Args, Debug)]
pub struct CaptureArgs {
    /// Exclude the proxy's connections by this socket mark (the proxy's --mark).
    #[arg(long, conflicts_with = "uid", default_value_t = capture::DEFAULT_MARK)]
    mark: u32,
    /// Exclude the proxy's connections by its user id instead.
    #[arg(long)]
    uid: Option<u32>,
    /// Also install IPv6 rules (ip6tables-restore).
    #[arg(long)]
    ipv6: bool,
    /// Let inbound connections from this address through to the application uncaptured: the node's probes
    /// (`podmesh up` gives them 169.254.7.127, as Istio's ambient mode does). Repeatable.
    #[arg(long, value_name = "IP")]
    inbound_bypass: Vec<std::net::IpAddr>,
    // The traffic options below take the values of Istio's `traffic.sidecar.istio.io/*` pod annotations as they
    // are (comma-separated), so `podmesh inject` passes them through; a bad item is refused here, by name.
    /// Inbound TCP to these destination ports reaches the application uncaptured, e.g. `8081,9000`
    /// (excludeInboundPorts).
    #[arg(long, value_name = "PORTS", default_value = "")]
    exclude_inbound_ports: capture::List<u16>,
    /// Capture inbound TCP only to these destination ports: `*` all, `''` none, or a list (includeInboundPorts).
    /// The sidecar's own ports are never captured.
    #[arg(long, value_name = "PORTS", default_value = "*")]
    include_inbound_ports: capture::Include<u16>,
    /// Outbound TCP to these destination ports leaves uncaptured, e.g. `5432` (excludeOutboundPorts).
    #[arg(long, value_name = "PORTS", default_value = "")]
    exclude_outbound_ports: capture::List<u16>,
    /// Outbound TCP to these destinations leaves uncaptured, e.g. `10.0.0.0/8,169.254.169.254/32`
    /// (excludeOutboundIPRanges). Each family's rules take their own ranges.
    #[arg(long, value_name = "CIDRS", default_value = "")]
    exclude_outbound_ip_ranges: capture::List<capture::Cidr>,
    /// Capture outbound TCP only to these destinations: `*` all, `''` none, or CIDRs (includeOutboundIPRanges).
    #[arg(long, value_name = "CIDRS", default_value = "*")]
    include_outbound_ip_ranges: capture::Include<capture::Cidr>,
}

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create a mesh root CA in DIR (root.pem, root-key.pem).
    Create {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
    },
    /// Issue a workload certificate from the CA in DIR into OUT (cert.pem, key.pem, roots.pem).
    Issue {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The workload identity, spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT (what `routes` shows).
        #[arg(long)]
        identity: String,
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
        /// Lifetime, in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
    },
}

#[derive(Args, Debug)]
pub struct EchoArgs {
    /// The name it answers with (the pod name).
    #[arg(long)]
    name: String,
    /// A port to serve HTTP/1.1, h2c and line-echo TCP on, on all addresses. Repeatable; --http and --tcp are
    /// the same (every port speaks both).
    #[arg(long = "port", aliases = ["http", "tcp", "auto", "h2c"], value_name = "PORT", required = true)]
    ports: Vec<u16>,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// The proxy's runtime: `threads` workers (0: one per CPU); a single thread runs tasks where they are woken.
fn proxy_runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    let mut b = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    b.enable_all().build().context("starting the async runtime")
}

/// Where a sidecar's config and certificates come from: files, or the control plane.
enum Source {
    Files(Box<FileSource>),
    Control(Box<ControlSource>),
}

impl Intake for Source {
    async fn next(&mut self) -> Option<Result<Update, String>> {
        match self {
            Source::Files(s) => s.next().await,
            Source::Control(s) => s.next().await,
        }
    }
}

async fn open_source(
    a: &ProxyArgs,
    dialer: &Dialer,
) -> Result<(Source, podmesh_compute::ProxyConfig, podmesh_identity::Credentials)> {
    let read = |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    if let (Some(address), Some(token), Some(roots)) = (&a.control, &a.token_file, &a.control_roots) {
        let opts = ControlOptions {
            address: address.clone(),
            // Read again at each certificate request (a projected token rotates); checked now.
            token: {
                read(token)?;
                podmesh_proxy::Token::File(token.clone())
            },
            roots_pem: read(roots)?,
            control_identity: podmesh_control::control_identity(&a.trust_domain),
            cert_ttl: (a.cert_ttl_seconds > 0).then(|| Duration::from_secs(a.cert_ttl_seconds)),
            dialer: dialer.clone(),
        };
        let (source, config, creds) = ControlSource::join(opts, Duration::from_secs(a.join_timeout_seconds))
            .await
            .map_err(|e| anyhow!("joining the mesh through the control plane at {address}: {e}"))?;
        return Ok((Source::Control(Box::new(source)), config, creds));
    }
    let (Some(config), Some(cert), Some(key), Some(roots)) = (&a.config, &a.cert, &a.key, &a.roots) else {
        bail!("give --config, --cert, --key and --roots, or --control with --token-file and --control-roots");
    };
    let paths = FilePaths { config: config.clone(), cert: cert.clone(), key: key.clone(), roots: roots.clone() };
    let (source, config, creds) = FileSource::open(paths, Duration::from_secs(1)).map_err(|e| anyhow!(e))?;
    Ok((Source::Files(Box::new(source)), config, creds))
}

pub fn proxy(a: ProxyArgs) -> Result<ExitCode> {
    proxy_runtime(a.concurrency)?.block_on(run_proxy(a))
}

async fn run_proxy(a: ProxyArgs) -> Result<ExitCode> {
    // Before joining the mesh: a bad value is the injector's mistake, said at once whatever else is right.
    let app_probes = match &a.app_probes {
        Some(json) => AppProbes::parse(json).map_err(|e| anyhow!("--app-probes (PODMESH_APP_PROBES): {e}"))?,
        None => AppProbes::default(),
    };
    // Every connection the proxy opens carries the mark its capture rules exclude, the control plane's too.
    let dialer = if a.mark == 0 { Dialer::default() } else { Dialer::default().with_mark(a.mark) };
    let (source, config, creds) = open_source(&a, &dialer).await?;
    if creds.identity() != &config.workload.identity {
        bail!(
            "the certificate is for {} but the config is the sidecar of {} ({}): issue a certificate for that identity",
            creds.identity().as_str(),
            config.workload.pod,
            config.workload.identity.as_str()
        );
    }
    let summary = format!(
        "sidecar of {} ({}), identity {}: {} inbound port(s), {} outbound listener(s), {} direct pod(s), {} app \
         probe(s)",
        config.workload.pod,
        config.workload.ip,
        creds.identity().as_str(),
        config.inbound.ports.len(),
        config.outbound.listeners.len(),
        config.outbound.pods.len(),
        app_probes.len()
    );
    if a.check {
        println!("ok: {summary}");
        return Ok(ExitCode::SUCCESS);
    }
    let log = match a.access_log {
        LogTarget::Stdout => AccessLog::stdout(),
        LogTarget::Off => AccessLog::off(),
    };
    {
        let handle = ConfigHandle::new(config);
        let proxy = Proxy::new(handle.clone(), Tls::new(creds)?, dialer, log);
        // A wildcard address is served on IPv4 and IPv6 (where the kernel has it).
        let bind = |addr: SocketAddr| bind_wildcards(addr).with_context(|| format!("binding {addr}"));
        let app_metrics = a.app_metrics_port.map(|port| AppMetrics::new(port, &a.app_metrics_path));
        let mut tasks = Vec::new();
        for l in bind(a.outbound)? {
            tasks.push(proxy.serve_outbound(l, OrigDst::Socket));
        }
        for l in bind(a.inbound)? {
            tasks.push(proxy.serve_inbound(l, OrigDst::Socket));
        }
        for l in bind(a.stats)? {
            tasks.push(podmesh_proxy::serve_stats(&proxy, l, app_metrics.clone(), app_probes.clone()));
        }
        for l in bind(a.readiness)? {
            tasks.push(podmesh_proxy::serve_readiness(&proxy, l));
        }
        for l in bind(a.admin)? {
            tasks.push(podmesh_proxy::serve_admin(&proxy, l));
        }
        // Ready once every listener is bound: the application may now start (its traffic will be captured).
        proxy.set_ready(true);
        // Config and certificate changes, applied as they come (new connections and requests use them).
        let follower = Arc::clone(&proxy);
        tokio::spawn(async move {
            podmesh_proxy::follow(source, &follower, |event| match event {
                Ok(what) => eprintln!("podmesh proxy: {what}"),
                Err(e) => eprintln!("podmesh proxy: kept the config and certificates in force: {e}"),
            })
            .await
        });
        eprintln!(
            "podmesh proxy: {summary}; outbound {}, inbound {}, stats {}, readiness {}, admin {}",
            a.outbound, a.inbound, a.stats, a.readiness, a.admin
        );
        shutdown_signal().await;
        eprintln!("podmesh proxy: draining for up to {} s", a.drain_seconds);
        let left = proxy.drain(Duration::from_secs(a.drain_seconds)).await;
        proxy.log.flush();
        eprintln!("podmesh proxy: exiting ({left} connection(s) still open)");
        Ok(ExitCode::SUCCESS)
    }
}

pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

pub fn capture(c: CaptureCommand) -> Result<ExitCode> {
    let options = |a: CaptureArgs| capture::CaptureOptions {
        exclude: a.uid.map_or(Exclude::Mark(a.mark), Exclude::Uid),
        inbound_bypass: a.inbound_bypass,
        include_inbound_ports: a.include_inbound_ports,
        exclude_inbound_ports: a.exclude_inbound_ports.0,
        exclude_outbound_ports: a.exclude_outbound_ports.0,
        include_outbound_ip_ranges: a.include_outbound_ip_ranges,
        exclude_outbound_ip_ranges: a.exclude_outbound_ip_ranges.0,
    };
    match c {
        CaptureCommand::Print(a) => {
            let ipv6 = a.ipv6;
            let opts = options(a);
            print!("{}", capture::rules(Family::V4, &opts));
            if ipv6 {
                print!("{}", capture::rules(Family::V6, &opts));
            }
        }
        CaptureCommand::Install(a) => {
            let ipv6 = a.ipv6;
            capture::install(&options(a), ipv6)?;
            eprintln!("podmesh capture: rules installed (outbound TCP -> 15001, inbound TCP -> 15006)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn ca(c: CaCommand) -> Result<ExitCode> {
    match c {
        CaCommand::Create { dir, trust_domain } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let ca = Ca::new(&trust_domain)?;
            write(&dir.join("root.pem"), &ca.cert_pem())?;
            write_private(&dir.join("root-key.pem"), &ca.key_pem())?;
            eprintln!("podmesh ca: root CA for trust domain {trust_domain} in {}", dir.display());
        }
        CaCommand::Issue { dir, identity, out, hours } => {
            let read = |f: &str| {
                let p = dir.join(f);
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
            };
            let ca = Ca::from_pem(&read("root.pem")?, &read("root-key.pem")?)?;
            let identity = podmesh_identity::parse_identity(&identity)?;
            let cert = ca.issue(&identity, Duration::from_secs(hours * 3600))?;
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            write(&out.join("cert.pem"), &cert.cert_chain_pem)?;
            write_private(&out.join("key.pem"), &cert.key_pem)?;
            write(&out.join("roots.pem"), &ca.cert_pem())?;
            eprintln!("podmesh ca: {} for {hours} h in {}", identity.as_str(), out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Keys are readable by their owner only.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

pub fn echo(a: EchoArgs) -> Result<ExitCode> {
    runtime()?.block_on(async move {
        let mut servers = Vec::new();
        for port in &a.ports {
            // IPv4 and, where the kernel has it, IPv6.
            let any = SocketAddr::from(([0, 0, 0, 0], *port));
            for listener in bind_wildcards(any).with_context(|| format!("binding port {port}"))? {
                servers.push(podmesh_testkit::echo::Echo::start(listener, &a.name).await);
            }
        }
        let ports: Vec<String> = a.ports.iter().map(u16::to_string).collect();
        eprintln!("podmesh echo: {} serving HTTP and TCP on port(s) {}", a.name, ports.join(", "));
        shutdown_signal().await;
        Ok(ExitCode::SUCCESS)
    })
}
