//! The control plane's commands: `control` (serve config and certificates), `token` (a pod's bootstrap token)
//! and `proxy-status` (every connected sidecar and how far it has synced).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use podmesh_control::server::Syncz;
use podmesh_control::{Authority, Control, FileSource};
use podmesh_model::ObjectKey;

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Manifests to serve: files or directories (watched: every add, edit and delete applies live). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    /// Where the CA keeps its root, its token key and extra trusted roots (created on first start).
    #[arg(long, value_name = "DIR", default_value = ".podmesh/control")]
    state: PathBuf,
    /// gRPC over TLS: xDS and the CA (istiod's 15012).
    #[arg(long, default_value = "127.0.0.1:15012")]
    listen: SocketAddr,
    /// Plain HTTP: /metrics, /debug/syncz (what `podmesh proxy-status` reads), /ready (istiod's 15014).
    #[arg(long, default_value = "127.0.0.1:15014")]
    monitoring: SocketAddr,
    /// Workload certificate lifetime, in seconds (Istio's default: 24 h); sidecars renew at half of it.
    #[arg(long, value_name = "SECONDS", default_value_t = 24 * 3600)]
    cert_ttl_seconds: u64,
    /// How often the manifests are checked for changes, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 200)]
    poll_ms: u64,
    /// Load the manifests and the CA state, say what would be served, and exit.
    #[arg(long)]
    check: bool,
}

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The pod, NAMESPACE/NAME.
    pod: String,
    /// The control plane's state directory (`control --state`).
    #[arg(long, value_name = "DIR", default_value = ".podmesh/control")]
    state: PathBuf,
}

#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// The control plane's monitoring address (`control --monitoring`).
    #[arg(long, default_value = "127.0.0.1:15014")]
    monitoring: SocketAddr,
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    output: crate::TextOrJson,
}

pub fn control(a: ControlArgs) -> Result<ExitCode> {
    let (source, first, cause) =
        FileSource::open(a.files.clone(), Duration::from_millis(a.poll_ms.max(10))).map_err(|e| anyhow!(e))?;
    let ttl = Duration::from_secs(a.cert_ttl_seconds.max(60));
    let authority = Authority::open(&a.state, &first.mesh.trust_domain, ttl)?;
    let (pods, services) = (first.pods.len(), first.services.len());
    let control = Control::new(first, cause, authority).map_err(|e| anyhow!(e))?;
    let summary = format!(
        "{pods} pod(s), {services} service(s); trust domain {}; CA in {}",
        control.shared.trust_domain,
        a.state.display()
    );
    if a.check {
        println!("ok: {summary}");
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        let grpc = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {}", a.listen))?;
        let monitoring =
            tokio::net::TcpListener::bind(a.monitoring).await.with_context(|| format!("binding {}", a.monitoring))?;
        eprintln!("podmesh control: {summary}; gRPC (xDS, CA) on {}, monitoring on {}", a.listen, a.monitoring);
        control
            .serve(grpc, Some(monitoring), source, crate::dataplane::shutdown_signal())
            .await
            .map_err(|e| anyhow!(e))?;
        eprintln!("podmesh control: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

pub fn token(a: TokenArgs) -> Result<ExitCode> {
    let pod = ObjectKey::parse(&a.pod).ok_or_else(|| anyhow!("{:?} is not NAMESPACE/NAME", a.pod))?;
    if !a.state.join("token-key").exists() {
        bail!("{}: no control-plane state here (run `podmesh control --state {0}` once)", a.state.display());
    }
    // The trust domain and lifetime do not matter for a token.
    let authority = Authority::open(&a.state, "cluster.local", Duration::from_secs(3600))?;
    println!("{}", authority.token(&pod));
    Ok(ExitCode::SUCCESS)
}

pub fn proxy_status(a: ProxyStatusArgs) -> Result<ExitCode> {
    let body = http_get(a.monitoring, "/debug/syncz")?;
    let syncz: Syncz = serde_json::from_str(&body).context("reading /debug/syncz")?;
    if a.output == crate::TextOrJson::Json {
        println!("{}", serde_json::to_string_pretty(&serde_json::from_str::<serde_json::Value>(&body)?)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("control plane at generation {} ({})", syncz.generation, syncz.cause);
    let mut rows =
        vec![["NAME".to_string(), "IDENTITY".into(), "SYNC".into(), "GENERATION".into(), "LAST NACK".into()]];
    for p in &syncz.proxies {
        let nack = p
            .last_nack
            .as_ref()
            .map_or("-".to_string(), |n| format!("{} (generation {}, caused by {})", n.reason, n.generation, n.cause));
        rows.push([p.pod.clone(), p.identity.clone(), p.sync_state.clone(), p.config_generation.to_string(), nack]);
    }
    let widths: Vec<usize> = (0..5).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// A plain HTTP/1.0 GET (the monitoring port is loopback or in-cluster plaintext).
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the control plane's monitoring port at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    s.take(64 << 20).read_to_string(&mut text)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("{addr}{path}: not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{addr}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}
