//! The local mesh's commands, kubectl-like: `up` (run a directory of manifests as pods on this machine), `apply`,
//! `delete`, `get`, `exec`, `logs`, `scale` and `down`.
//!
//! `up` checks the manifests and the machine first, then re-runs itself (`up --inner`, [`inner`]) under
//! `unshare`, in a user, network, mount and PID namespace of its own (without the user namespace when run as
//! root). Everything it makes lives there, and goes with it: when the mesh's first process ends, however it ends,
//! the kernel ends every process in its PID namespace and removes its network namespaces. The other commands talk
//! to it over its control socket ([`wire`]) in the state directory; `exec` enters its namespaces with `nsenter`.

mod inner;
mod wire;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use podmesh_runtime::net::Network;
use podmesh_runtime::node::Node;
use serde::{Deserialize, Serialize};

use wire::{Request, Status};

#[derive(Args, Debug, Clone)]
pub struct StateArg {
    /// Where the running mesh keeps its socket, pods' files and logs, and its CA.
    #[arg(long, value_name = "DIR", env = "PODMESH_STATE", default_value = ".podmesh/up")]
    state: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Manifest files or directories (*.yaml, *.yml, *.json; not recursive). Repeatable.
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    /// Return once every pod is ready, leaving the mesh running (`podmesh down` stops it).
    #[arg(short = 'd', long)]
    detach: bool,
    /// With -d: how long to wait for every pod to be ready.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout_seconds: u64,
    #[command(flatten)]
    state: StateArg,
    /// Run the mesh here (in the namespaces `up` made).
    #[arg(long, hide = true)]
    inner: bool,
}

#[derive(Args, Debug)]
pub struct FilesArgs {
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    state: StateArg,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    #[value(alias = "pod", alias = "po")]
    Pods,
    #[value(alias = "service", alias = "svc")]
    Services,
    #[value(alias = "ep")]
    Endpoints,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetOutput {
    Table,
    Wide,
    Json,
}

#[derive(Args, Debug)]
pub struct GetArgs {
    what: Resource,
    /// Only this namespace (default: all).
    #[arg(short = 'n', long)]
    namespace: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: GetOutput,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// NAMESPACE/POD.
    pod: String,
    /// The container whose files (emptyDir volumes) the command sees; default: the pod's first.
    #[arg(short = 'c', long)]
    container: Option<String>,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true)]
    command: Vec<String>,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// NAMESPACE/POD.
    pod: String,
    /// The container (`sidecar` for the sidecar's log: its access log); default: the pod's only container.
    #[arg(short = 'c', long)]
    container: Option<String>,
    #[command(flatten)]
    state: StateArg,
}

#[derive(Args, Debug)]
pub struct ScaleArgs {
    /// deployment/NAME or statefulset/NAME.
    target: String,
    #[arg(long)]
    replicas: u32,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    state: StateArg,
}

/// What `up` records for the other commands: the process whose namespaces the mesh lives in.
#[derive(Debug, Serialize, Deserialize)]
struct UpInfo {
    pid: u32,
    user_namespace: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

fn call(state: &Path, request: &Request, timeout: Duration) -> Result<serde_json::Value> {
    runtime()?.block_on(wire::call(state, request, timeout))
}

fn status(state: &Path) -> Result<Status> {
    Ok(serde_json::from_value(call(state, &Request::Status, Duration::from_secs(30))?)?)
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

pub fn up(a: UpArgs) -> Result<ExitCode> {
    let state = &a.state.state;
    if a.inner {
        inner::run(&a.files, state)?;
        return Ok(ExitCode::SUCCESS);
    }
    // Nothing changes before the manifests and the machine are known to be good.
    let files = inner::read_files(&a.files)?;
    validate(&files)?;
    let root = is_root();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let problems = podmesh_runtime::prereq::check(&path, root, || {
        Command::new("unshare")
            .args(["--user", "--map-root-user", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("{p}");
        }
        bail!("podmesh up cannot run on this machine yet ({} problem(s) above); nothing was changed", problems.len());
    }
    if state.join("up.sock").exists() && call(state, &Request::Status, Duration::from_secs(5)).is_ok() {
        bail!("a mesh is already running with its state in {} (`podmesh down` stops it)", state.display());
    }
    std::fs::create_dir_all(state).with_context(|| format!("creating {}", state.display()))?;
    let state = state.canonicalize()?;
    let _ = std::fs::remove_dir_all(state.join("pods"));
    let exe = std::env::current_exe().context("finding the podmesh binary")?;
    let mut namespaces = vec!["--net", "--mount", "--pid", "--fork", "--mount-proc", "--kill-child=SIGTERM"];
    if !root {
        namespaces.splice(0..0, ["--user", "--map-root-user"]);
    }
    // Detached, the mesh gets a session of its own (no terminal signals reach it); in the foreground, it ends
    // when this process does, however that happens.
    let mut cmd = if a.detach {
        Command::new("setsid")
    } else {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "TERM", "--"]);
        c
    };
    cmd.arg("unshare");
    cmd.args(&namespaces).arg("--").arg(&exe).args(["up", "--inner", "--state"]).arg(&state);
    for f in &a.files {
        cmd.arg("-f").arg(f.canonicalize().with_context(|| format!("{}", f.display()))?);
    }
    if a.detach {
        let log = std::fs::File::create(state.join("up.log"))?;
        cmd.stdin(Stdio::null()).stdout(Stdio::from(log.try_clone()?)).stderr(Stdio::from(log));
    }
    let mut child = cmd.spawn().context("running unshare (util-linux)")?;
    let info = UpInfo { pid: child.id(), user_namespace: !root };
    std::fs::write(state.join("up.json"), serde_json::to_string(&info)?)?;
    if a.detach {
        return wait_ready(&state, &mut child, Duration::from_secs(a.timeout_seconds));
    }
    // In the foreground, Ctrl-C reaches the mesh too (the terminal signals the whole process group): this
    // process stays until the mesh has stopped, then tidies the state directory. SIGTERM is passed on.
    let pid = child.id();
    let status = runtime()?.block_on(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        let mut wait = tokio::task::spawn_blocking(move || child.wait());
        loop {
            tokio::select! {
                status = &mut wait => return Ok::<_, anyhow::Error>(status??),
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {
                    let _ = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status();
                }
            }
        }
    })?;
    wait_stopped(&state, Duration::from_secs(30));
    tidy(&state);
    Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Checks the manifests as `podmesh check` would, naming each error's file, document and field.
fn validate(files: &[wire::File]) -> Result<()> {
    let sources: Vec<podmesh_model::Source> =
        files.iter().map(|f| podmesh_model::Source::Text { name: f.name.clone(), text: f.text.clone() }).collect();
    if let Err(e) = podmesh_model::load(&sources) {
        for d in e.errors() {
            eprintln!("{d}");
        }
        bail!("the manifests have {} error(s); nothing was changed", e.errors().count());
    }
    Ok(())
}

/// `-d`: waits until every pod is ready, then shows them.
fn wait_ready(state: &Path, child: &mut std::process::Child, timeout: Duration) -> Result<ExitCode> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(exit) = child.try_wait()? {
            let log = std::fs::read_to_string(state.join("up.log")).unwrap_or_default();
            tidy(state);
            bail!("the mesh stopped ({exit}):\n{log}");
        }
        if let Ok(status) = status(state) {
            let ready = status.pods.iter().filter(|p| p.ready).count();
            let line = format!("{ready}/{} pod(s) ready", status.pods.len());
            if line != last {
                eprintln!("podmesh up: {line}");
                last = line;
            }
            if ready == status.pods.len() {
                print!("{}", pods_table(&status, None, false));
                eprintln!(
                    "podmesh up: the mesh runs in the background (state in {}; log in {}); `podmesh down` stops it",
                    state.display(),
                    state.join("up.log").display()
                );
                return Ok(ExitCode::SUCCESS);
            }
            if start.elapsed() > timeout {
                print!("{}", pods_table(&status, None, true));
                bail!(
                    "not every pod was ready within {} s (the mesh is still running; `podmesh down` stops it)",
                    timeout.as_secs()
                );
            }
        } else if start.elapsed() > timeout {
            bail!("the mesh did not answer within {} s; see {}", timeout.as_secs(), state.join("up.log").display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits (at most `bound`) until the mesh's first process is gone.
fn wait_stopped(state: &Path, bound: Duration) {
    let start = Instant::now();
    let Some(info) = up_info(state).ok() else { return };
    while Path::new(&format!("/proc/{}", info.pid)).exists() && start.elapsed() < bound {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Removes what a stopped mesh left in its state directory (its CA stays, so tokens stay valid).
fn tidy(state: &Path) {
    for f in ["up.sock", "up.json"] {
        let _ = std::fs::remove_file(state.join(f));
    }
    let _ = std::fs::remove_dir_all(state.join("pods"));
}

fn up_info(state: &Path) -> Result<UpInfo> {
    let path = state.join("up.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no local mesh is running with its state in {}", state.display()))?;
    Ok(serde_json::from_str(&text)?)
}

pub fn apply(a: FilesArgs) -> Result<ExitCode> {
    let files = inner::read_files(&a.files)?;
    validate(&files)?;
    let changed = call(&a.state.state, &Request::Apply { files }, Duration::from_secs(60))?;
    report_objects(&changed, "configured");
    Ok(ExitCode::SUCCESS)
}

pub fn delete(a: FilesArgs) -> Result<ExitCode> {
    let files = inner::read_files(&a.files)?;
    let removed = call(&a.state.state, &Request::Delete { files }, Duration::from_secs(60))?;
    report_objects(&removed, "deleted");
    Ok(ExitCode::SUCCESS)
}

fn report_objects(keys: &serde_json::Value, verb: &str) {
    let keys: Vec<&str> = keys.as_array().map(|a| a.iter().filter_map(|k| k.as_str()).collect()).unwrap_or_default();
    if keys.is_empty() {
        println!("nothing {verb}: no object changed");
    }
    for k in keys {
        println!("{k} {verb}");
    }
}

pub fn scale(a: ScaleArgs) -> Result<ExitCode> {
    let (kind, name) =
        a.target.split_once('/').ok_or_else(|| anyhow!("{:?} is not KIND/NAME (e.g. deployment/web)", a.target))?;
    let request =
        Request::Scale { kind: kind.into(), namespace: a.namespace.clone(), name: name.into(), replicas: a.replicas };
    call(&a.state.state, &request, Duration::from_secs(60))?;
    println!("{kind}/{name} scaled to {}", a.replicas);
    Ok(ExitCode::SUCCESS)
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restartable {
    /// The control plane: every sidecar's connection to it is cut, and a new one starts from the applied
    /// manifests (what a restart of istiod does).
    ControlPlane,
}

#[derive(Args, Debug)]
pub struct RestartArgs {
    what: Restartable,
    #[command(flatten)]
    state: StateArg,
}

pub fn restart(a: RestartArgs) -> Result<ExitCode> {
    match a.what {
        Restartable::ControlPlane => {
            let generation = call(&a.state.state, &Request::RestartControlPlane, Duration::from_secs(60))?;
            println!("control plane restarted (generation {generation}); the sidecars reconnect");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn down(a: StateArg) -> Result<ExitCode> {
    let state = &a.state;
    match call(state, &Request::Down, Duration::from_secs(120)) {
        Ok(_) => {
            wait_stopped(state, Duration::from_secs(30));
            tidy(state);
            println!("the mesh is stopped");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // A mesh that crashed leaves its files behind, and nothing else.
            wait_stopped(state, Duration::from_secs(5));
            if up_info(state).is_ok_and(|i| !Path::new(&format!("/proc/{}", i.pid)).exists()) {
                tidy(state);
                println!("the mesh had already stopped; its files are removed");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e)
        }
    }
}

pub fn get(a: GetArgs) -> Result<ExitCode> {
    let status = status(&a.state.state)?;
    let ns = a.namespace.as_deref();
    let keep = |namespace: &str| ns.is_none_or(|n| n == namespace);
    match (a.what, a.output) {
        (Resource::Pods, GetOutput::Json) => {
            let pods: Vec<_> = status.pods.iter().filter(|p| keep(&p.namespace)).collect();
            out(&format!("{}\n", serde_json::to_string_pretty(&pods)?))?;
        }
        (Resource::Services, GetOutput::Json) => {
            let svcs: Vec<_> = status.services.iter().filter(|s| keep(&s.namespace)).collect();
            out(&format!("{}\n", serde_json::to_string_pretty(&svcs)?))?;
        }
        (Resource::Endpoints, GetOutput::Json) => {
            let eps: Vec<_> = status.endpoints.iter().filter(|e| keep(&e.namespace)).collect();
            out(&format!("{}\n", serde_json::to_string_pretty(&eps)?))?;
        }
        (Resource::Pods, o) => out(&pods_table(&status, ns, o == GetOutput::Wide))?,
        (Resource::Services, _) => {
            let mut rows = vec![vec!["NAMESPACE".to_string(), "NAME".into(), "CLUSTER-IP".into(), "PORTS".into()]];
            for s in status.services.iter().filter(|s| keep(&s.namespace)) {
                rows.push(vec![s.namespace.clone(), s.name.clone(), s.cluster_ip.clone(), s.ports.join(",")]);
            }
            out(&table(&rows))?;
        }
        (Resource::Endpoints, _) => {
            let mut rows = vec![vec!["NAMESPACE".to_string(), "NAME".into(), "ENDPOINTS".into(), "NOT READY".into()]];
            for e in status.endpoints.iter().filter(|e| keep(&e.namespace)) {
                let list = |v: &[String]| if v.is_empty() { "<none>".to_string() } else { v.join(",") };
                rows.push(vec![e.namespace.clone(), e.name.clone(), list(&e.ready), list(&e.not_ready)]);
            }
            out(&table(&rows))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
fn out(text: &str) -> Result<()> {
    use std::io::Write as _;
    match std::io::stdout().write_all(text.as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(super) fn pods_table(status: &Status, ns: Option<&str>, wide: bool) -> String {
    let mut head = vec!["NAMESPACE".to_string(), "NAME".into(), "READY".into(), "STATUS".into(), "RESTARTS".into()];
    if wide {
        head.extend(["IP".into(), "NODE".into(), "SIDECAR".into(), "MESSAGE".into()]);
    }
    let mut rows = vec![head];
    for p in status.pods.iter().filter(|p| ns.is_none_or(|n| n == p.namespace)) {
        let mut row = vec![
            p.namespace.clone(),
            p.name.clone(),
            if p.ready { "true".into() } else { "false".into() },
            p.phase.clone(),
            p.restarts.to_string(),
        ];
        if wide {
            row.extend([
                p.ip.clone(),
                p.node.clone(),
                if p.sidecar { "meshed".into() } else { "plain".into() },
                p.message.clone().unwrap_or_default(),
            ]);
        }
        rows.push(row);
    }
    table(&rows)
}

fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns).map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// NAMESPACE/POD of a running pod, checked against the mesh.
fn running_pod(state: &Path, arg: &str) -> Result<podmesh_model::ObjectKey> {
    let key = podmesh_model::ObjectKey::parse(arg).ok_or_else(|| anyhow!("{arg:?} is not NAMESPACE/POD"))?;
    let status = status(state)?;
    let Some(pod) = status.pods.iter().find(|p| p.namespace == *key.namespace && p.name == *key.name) else {
        let names: Vec<String> =
            status.pods.iter().filter(|p| p.namespace == *key.namespace).map(|p| p.name.clone()).collect();
        bail!("no pod {key}; pods in namespace {}: {}", key.namespace, names.join(", "));
    };
    if pod.phase != "Running" {
        bail!("pod {key} is {}{}", pod.phase, pod.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default());
    }
    Ok(key)
}

pub fn exec(a: ExecArgs) -> Result<ExitCode> {
    let state = a.state.state.canonicalize().unwrap_or(a.state.state.clone());
    let key = running_pod(&state, &a.pod)?;
    let info = up_info(&state)?;
    let request = Request::Files {
        namespace: key.namespace.to_string(),
        name: key.name.to_string(),
        container: a.container.clone(),
    };
    let files: Vec<(PathBuf, PathBuf)> = serde_json::from_value(call(&state, &request, Duration::from_secs(30))?)?;
    let argv = Network::argv_with_files(&Node::netns(&key), &files, &a.command);
    // The mesh's first process (unshare's child): its PID namespace is the pods' (and its /proc is mounted).
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", info.pid)).unwrap_or_default();
    let mesh = children.split_whitespace().next().ok_or_else(|| anyhow!("the mesh (process {}) is gone", info.pid))?;
    let mut cmd = Command::new("nsenter");
    cmd.args(["-t", mesh]);
    if info.user_namespace {
        // Keeping our own ids, which the namespace maps to its root: changing them (setgroups) is denied there.
        cmd.args(["--user", "--preserve-credentials"]);
    }
    cmd.args(["--mount", "--pid", "--"]).args(&argv);
    if let (Ok(exe), Ok(path)) = (std::env::current_exe(), std::env::var("PATH"))
        && let Some(dir) = exe.parent()
    {
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let status = cmd.status().context("running nsenter (util-linux)")?;
    Ok(match status.code() {
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::from(128 + 9),
    })
}

pub fn logs(a: LogsArgs) -> Result<ExitCode> {
    let key = podmesh_model::ObjectKey::parse(&a.pod).ok_or_else(|| anyhow!("{:?} is not NAMESPACE/POD", a.pod))?;
    let dir = a.state.state.join("pods").join(&*key.namespace).join(&*key.name).join("logs");
    let mut containers: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("no logs of pod {key} (is it running? `podmesh get pods`)"))?
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix(".log").map(String::from))
        .filter(|n| n != "sidecar")
        .collect();
    containers.sort();
    let name = match (a.container, containers.as_slice()) {
        (Some(c), _) => c,
        (None, [only]) => only.clone(),
        (None, _) => bail!("pod {key} has containers {}: choose one with -c", containers.join(", ")),
    };
    let path = dir.join(format!("{name}.log"));
    let text = std::fs::read(&path).with_context(|| {
        format!("pod {key} has no container {name:?} (containers: {}, and sidecar)", containers.join(", "))
    })?;
    out(&String::from_utf8_lossy(&text))?;
    Ok(ExitCode::SUCCESS)
}
