//! The control plane's commands: `control` (serve config and certificates), `token` (a pod's bootstrap token)
//! and `proxy-status` (every connected sidecar and how far it has synced).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use podmesh_control::server::Syncz;
use podmesh_control::{AbortOnDrop, Authority, Control, FileSource, Source};
use podmesh_model::{Cluster, ObjectKey};

#[derive(Args, Debug)]
pub struct ControlArgs {
    /// Manifests to serve: files or directories (watched: every add, edit and delete applies live). Repeatable.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        required_unless_present = "kube",
        conflicts_with = "kube"
    )]
    files: Vec<PathBuf>,
    /// Serve the cluster the Kubernetes API holds (watched live), with the kubeconfig ($KUBECONFIG, else
    /// ~/.kube/config) or, in a pod, its ServiceAccount. Sidecars then also authenticate with their projected
    /// ServiceAccount tokens (checked by TokenReview), and the roots are kept in every namespace's ConfigMap
    /// podmesh-root.
    #[arg(long)]
    kube: bool,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME", requires = "kube")]
    context: Option<String>,
    /// Serve the sidecar-injection admission webhook (HTTPS, POST /inject) on this address.
    #[arg(long, value_name = "ADDR", requires = "kube")]
    webhook: Option<SocketAddr>,
    /// The webhook's Service as the API server calls it, NAME.NAMESPACE: its certificate names
    /// NAME.NAMESPACE.svc.
    #[arg(long, value_name = "NAME.NAMESPACE", default_value = "podmesh-control.podmesh-system")]
    webhook_service: String,
    /// The image the injected containers run (the webhook's `podmesh inject --image`).
    #[arg(long, value_name = "IMAGE")]
    proxy_image: Option<String>,
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
    /// Load the cluster and the CA state, say what would be served, and exit.
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
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(async move {
        if a.kube {
            return kube::control(a).await;
        }
        let (source, first, cause) =
            FileSource::open(a.files.clone(), Duration::from_millis(a.poll_ms.max(10))).map_err(|e| anyhow!(e))?;
        let authority = Authority::open(&a.state, &first.mesh.trust_domain, ttl(&a))?;
        serve(&a, source, first, cause, authority, |_| Ok(Vec::new())).await
    })
}

fn ttl(a: &ControlArgs) -> Duration {
    Duration::from_secs(a.cert_ttl_seconds.max(60))
}

/// Serves `source` (its first version `first`, from `cause`) until SIGTERM or Ctrl-C, with the tasks `beside`
/// makes (what the Kubernetes source adds) running alongside; or with `--check`, says what would be served.
async fn serve(
    a: &ControlArgs,
    source: impl Source + 'static,
    first: Cluster,
    cause: String,
    authority: Authority,
    beside: impl FnOnce(&Control) -> Result<Vec<Task>>,
) -> Result<ExitCode> {
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
    let grpc = tokio::net::TcpListener::bind(a.listen).await.with_context(|| format!("binding {}", a.listen))?;
    let monitoring =
        tokio::net::TcpListener::bind(a.monitoring).await.with_context(|| format!("binding {}", a.monitoring))?;
    let _beside: Vec<AbortOnDrop> = beside(&control)?.into_iter().map(|t| AbortOnDrop(tokio::spawn(t))).collect();
    eprintln!("podmesh control: {summary}; gRPC (xDS, CA) on {}, monitoring on {}", a.listen, a.monitoring);
    control.serve(grpc, Some(monitoring), source, crate::dataplane::shutdown_signal()).await.map_err(|e| anyhow!(e))?;
    eprintln!("podmesh control: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Something that runs beside the control plane until it stops.
type Task = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The Kubernetes source: `control --kube`.
#[cfg(feature = "kube")]
mod kube {
    use std::sync::Arc;

    use super::*;
    use podmesh_kube::{KubeSource, review::TokenReviewer, roots};

    pub async fn control(a: ControlArgs) -> Result<ExitCode> {
        let client = podmesh_kube::client(a.context.as_deref()).await.map_err(|e| anyhow!(e))?;
        let (source, first, cause) = KubeSource::connect(client.clone()).await.map_err(|e| anyhow!(e))?;
        let authority = Authority::open(&a.state, &first.mesh.trust_domain, ttl(&a))?
            .with_token_review(Arc::new(TokenReviewer::new(client.clone(), podmesh_kube::review::AUDIENCE)));
        let roots_pem = authority.trust_anchors().join("");
        let beside = |control: &Control| {
            let mut tasks: Vec<Task> = vec![Box::pin(roots::publish(client, roots_pem, roots::Timing::default()))];
            if let Some(addr) = a.webhook {
                tasks.push(webhook(addr, &a, control)?);
            }
            Ok(tasks)
        };
        serve(&a, source, first, cause, authority, beside).await
    }

    /// The sidecar-injection webhook on `addr`, with a certificate for the Service the API server calls.
    fn webhook(addr: SocketAddr, a: &ControlArgs, control: &Control) -> Result<Task> {
        use podmesh_control::webhook;
        let (service, namespace) = a
            .webhook_service
            .split_once('.')
            .filter(|(s, n)| !s.is_empty() && !n.is_empty() && !n.contains('.'))
            .ok_or_else(|| anyhow!("--webhook-service {:?} is not NAME.NAMESPACE", a.webhook_service))?;
        let names = webhook::service_dns_names(service, namespace);
        let tls = webhook::serving_config(&control.shared.authority, &names).map_err(|e| anyhow!(e))?;
        let tls = Arc::new(arc_swap::ArcSwap::new(tls));
        let mut config =
            podmesh_inject::Config { trust_domain: control.shared.trust_domain.clone(), ..Default::default() };
        if let Some(image) = &a.proxy_image {
            config.image = image.clone();
        }
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(listener)?;
        eprintln!(
            "podmesh control: sidecar-injection webhook on {addr} (POST {}; certificate for {})",
            webhook::PATH,
            names.join(", ")
        );
        let shared = Arc::clone(&control.shared);
        Ok(Box::pin(async move {
            let _renew = AbortOnDrop(tokio::spawn(webhook::renew(shared, names, Arc::clone(&tls))));
            webhook::serve(listener, tls, Arc::new(config)).await;
        }))
    }
}

/// Without the `kube` feature, `--kube` says so.
#[cfg(not(feature = "kube"))]
mod kube {
    use super::*;

    pub async fn control(_: ControlArgs) -> Result<ExitCode> {
        bail!("this podmesh was built without the `kube` feature (cargo build --features kube)")
    }
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
