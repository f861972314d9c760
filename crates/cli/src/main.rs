//! `podmesh`: the one binary. The routing core's commands — `explain` (what happens to a request, and why),
//! `routes` (a sidecar's computed config) and `check` (manifest validation and contract pitfalls), all reading
//! Kubernetes manifests with `-f` — the data plane's: `proxy` (the sidecar), `capture` (its iptables rules),
//! `ca` (certificates from a local mesh CA) and `echo` (the test workload) — and the control plane's: `control`
//! (config over xDS and the CA), `token` (a pod's bootstrap token) and `proxy-status`.

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use podmesh_compute::Index;
use podmesh_model::{Diagnostic, ObjectKey, Source};
use podmesh_route::explain::{Query, explain};

mod bench;
mod control;
mod dataplane;
mod inject;
mod install;
mod table;
mod up;

#[derive(Parser, Debug)]
#[command(name = "podmesh", version, about = "A service mesh for Kubernetes with one clear routing contract")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct Manifests {
    /// A manifest file, a directory of them (*.yaml, *.yml, *.json; not recursive), or - for stdin. Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Explain what the mesh does with one request: the source sidecar's decision, the destination's admission,
    /// the rules applied, the reason code and, when refused, what to change.
    Explain {
        #[command(flatten)]
        manifests: Manifests,
        /// The sending pod: NAMESPACE/POD, or NAMESPACE/WORKLOAD for the first pod of a Deployment/StatefulSet.
        #[arg(long, value_name = "NS/POD")]
        from: String,
        /// http://HOST[:PORT]/PATH, HOST:PORT or IP:PORT.
        target: String,
        /// The Host header to send (default: the target's host[:port]).
        #[arg(long, value_name = "HOST")]
        host: Option<String>,
        /// Send raw TCP bytes instead of an HTTP request.
        #[arg(long)]
        tcp: bool,
        /// HTTP method.
        #[arg(short = 'X', long, default_value = "GET")]
        method: String,
        /// Extra request header, "Name: value" (for VirtualService header matches). Repeatable.
        #[arg(short = 'H', long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Show the config computed for one pod's sidecar (like istioctl proxy-config). `-o json` is the file the
    /// sidecar runs on.
    Routes {
        #[command(flatten)]
        manifests: Manifests,
        /// NAMESPACE/POD, or NAMESPACE/WORKLOAD for its first pod.
        #[arg(long, value_name = "NS/POD")]
        pod: String,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: RoutesOutput,
    },
    /// Validate manifests and report contract pitfalls. Exits 1 when there are errors.
    Check {
        #[command(flatten)]
        manifests: Manifests,
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: TextOrJson,
    },
    /// Run one workload's sidecar: captured connections in, routed and secured connections out (R3-R6).
    Proxy(Box<dataplane::ProxyArgs>),
    /// The iptables rules that send a pod's TCP through its sidecar.
    #[command(subcommand)]
    Capture(dataplane::CaptureCommand),
    /// A local mesh CA: create a root, issue workload certificates.
    #[command(subcommand)]
    Ca(dataplane::CaCommand),
    /// The echo workload: answers HTTP and TCP with its name and what it received.
    Echo(dataplane::EchoArgs),
    /// Run the control plane: watch manifests (or the Kubernetes API: --kube), stream each sidecar its config over
    /// xDS, and sign workload certificates for pods that present their bootstrap (or ServiceAccount) token.
    Control(control::ControlArgs),
    /// Print a pod's bootstrap token (what its sidecar presents to get a certificate).
    Token(control::TokenArgs),
    /// Every sidecar connected to the control plane, with its config generation, sync state and last NACK.
    ProxyStatus(control::ProxyStatusArgs),
    /// Print the manifests with the sidecar injected into every workload (as `istioctl kube-inject`): the capture
    /// init container, the sidecar, its volumes, the application's probes through 15020.
    Inject(inject::InjectArgs),
    /// Print the control plane's Kubernetes manifests (Istio's CRDs it reads, its namespace, RBAC, CA Secret,
    /// Deployment, Service and the sidecar injector's webhook), or server-side apply them with `--apply`.
    Install(install::InstallArgs),
    /// Run the manifests' pods on this machine, each in its own network namespace with its sidecar, with the
    /// control plane, cluster DNS and Service NAT, all inside private namespaces. In the foreground until Ctrl-C;
    /// `-d` returns once every pod is ready.
    Up(up::UpArgs),
    /// Apply manifests to the running local mesh (as `kubectl apply`).
    Apply(up::FilesArgs),
    /// Delete the objects manifests name from the running local mesh.
    Delete(up::FilesArgs),
    /// List the local mesh's pods, services or endpoints.
    Get(up::GetArgs),
    /// Run a command in a pod: its network namespace, its resolv.conf and hosts; the exit code is passed through.
    Exec(up::ExecArgs),
    /// A container's log (`-c sidecar`: the sidecar's, with its access log).
    Logs(up::LogsArgs),
    /// Set a Deployment's or StatefulSet's replicas.
    Scale(up::ScaleArgs),
    /// Restart a part of the local mesh (`control-plane`).
    Restart(up::RestartArgs),
    /// Stop the local mesh: every pod, the control plane, the network; nothing is left behind.
    Down(up::StateArg),
    /// Benchmarks: `bench proxy` compares the sidecar pair with direct, nginx and HAProxy (needs root).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum TextOrJson {
    Text,
    Json,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum RoutesOutput {
    Table,
    Json,
    Yaml,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Explain { manifests, from, target, host, tcp, method, headers, output } => {
            let ix = load_index(&manifests)?;
            let from = pod_arg(&ix, &from)?;
            let mut q = if tcp { Query::tcp(from, &target)? } else { Query::http(from, &target)? };
            q.host = host;
            q.method = method;
            for h in headers {
                let (k, v) = h.split_once(':').ok_or_else(|| anyhow!("header {h:?} is not \"Name: value\""))?;
                q.headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
            let e = explain(&ix, &q)?;
            match output {
                TextOrJson::Text => print!("{}", e.to_text(color())),
                TextOrJson::Json => println!("{}", serde_json::to_string_pretty(&e)?),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Routes { manifests, pod, output } => {
            let ix = load_index(&manifests)?;
            let pod = pod_arg(&ix, &pod)?;
            let cfg = ix.proxy_config(&pod)?;
            match output {
                RoutesOutput::Json => println!("{}", serde_json::to_string_pretty(&cfg)?),
                RoutesOutput::Yaml => print!("{}", podmesh_model::yaml::to_string(&serde_json::to_value(&cfg)?)),
                RoutesOutput::Table => print!("{}", table::routes(&cfg)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { manifests, output } => check(&manifests, output),
        Command::Proxy(a) => dataplane::proxy(*a),
        Command::Capture(c) => dataplane::capture(c),
        Command::Ca(c) => dataplane::ca(c),
        Command::Echo(a) => dataplane::echo(a),
        Command::Control(a) => control::control(a),
        Command::Token(a) => control::token(a),
        Command::ProxyStatus(a) => control::proxy_status(a),
        Command::Bench(b) => bench::run(b),
        Command::Inject(a) => inject::inject(a),
        Command::Install(a) => install::install(a),
        Command::Up(a) => up::up(a),
        Command::Apply(a) => up::apply(a),
        Command::Delete(a) => up::delete(a),
        Command::Get(a) => up::get(a),
        Command::Exec(a) => up::exec(a),
        Command::Logs(a) => up::logs(a),
        Command::Scale(a) => up::scale(a),
        Command::Restart(a) => up::restart(a),
        Command::Down(a) => up::down(a),
    }
}

fn sources(m: &Manifests) -> Vec<Source> {
    m.files.iter().map(|f| Source::from_arg(f)).collect()
}

/// Loads and indexes; on errors prints every one and fails. Warnings are summarized on stderr.
fn load_index(m: &Manifests) -> Result<Index> {
    let loaded = match podmesh_model::load(&sources(m)) {
        Ok(l) => l,
        Err(e) => {
            for d in e.errors() {
                eprintln!("{d}");
            }
            bail!("the manifests have {} error(s); run `podmesh check` for details", e.errors().count());
        }
    };
    let ix = Index::new(loaded.cluster);
    let warnings = loaded.warnings.len() + ix.diagnostics().len();
    if warnings > 0 {
        eprintln!("note: {warnings} warning(s) about the manifests; run `podmesh check -f ...` to see them");
    }
    Ok(ix)
}

/// NS/POD, or NS/WORKLOAD meaning its first pod.
fn pod_arg(ix: &Index, arg: &str) -> Result<ObjectKey> {
    let key = ObjectKey::parse(arg).ok_or_else(|| anyhow!("{arg:?} is not NAMESPACE/POD"))?;
    if ix.pod(&key).is_some() {
        return Ok(key);
    }
    if let Some(first) = ix.cluster().pods_of(&key).next() {
        eprintln!("note: {key} is a workload; using its first pod {}", first.key);
        return Ok(first.key.clone());
    }
    let known: Vec<String> =
        ix.cluster().pods.keys().filter(|k| k.namespace == key.namespace).map(|k| k.name.to_string()).take(8).collect();
    bail!(
        "no pod or workload {key}; pods in namespace {}: {}",
        key.namespace,
        if known.is_empty() { "none".into() } else { known.join(", ") }
    )
}

fn check(m: &Manifests, output: TextOrJson) -> Result<ExitCode> {
    let mut diags: Vec<Diagnostic> = match podmesh_model::load(&sources(m)) {
        Err(e) => e.diagnostics,
        Ok(loaded) => {
            let ix = Index::new(loaded.cluster);
            let mut d = loaded.warnings;
            d.extend(podmesh_compute::check::pitfalls(&ix));
            d
        }
    };
    diags.sort_by(|a, b| {
        (a.severity, &a.origin, &a.object, &a.field).cmp(&(b.severity, &b.origin, &b.object, &b.field))
    });
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    match output {
        TextOrJson::Json => {
            let doc = serde_json::json!({ "errors": errors, "warnings": warnings, "diagnostics": diags });
            println!("{}", serde_json::to_string_pretty(&doc)?);
        }
        TextOrJson::Text => {
            for d in &diags {
                println!("{d}");
            }
            if diags.is_empty() {
                println!("ok: no errors, no warnings");
            } else {
                println!("{errors} error(s), {warnings} warning(s)");
            }
        }
    }
    Ok(if errors > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
