//! The node agent: what the kubelet does for the pods of one machine. Given the cluster as it should be, it
//! starts the pods that should run and stops the ones that should not ([`Node::reconcile`]). Each pod gets:
//!
//! 1. its network namespace on the node's bridge, with its address ([`crate::net`]), its own `resolv.conf` and
//!    `hosts`, and a directory per emptyDir volume;
//! 2. when meshed, the sidecar's capture rules, then the sidecar itself (`podmesh proxy --control`, with the pod's
//!    bootstrap token), and the application is held until the sidecar answers on its readiness port, as a native
//!    sidecar holds a pod's containers;
//! 3. its containers as supervised processes ([`crate::process`]), each with its readiness probe
//!    ([`crate::probe`]).
//!
//! A pod is ready when every container is running and passes its probe (a container without a probe passes once
//! it runs). Each change of a pod's readiness, and each pod that is gone, is reported as a [`NodeEvent`], which
//! `podmesh up` turns into an endpoint change for the control plane.
//!
//! A StatefulSet with `podManagementPolicy: OrderedReady` gets its pods one at a time, in ordinal order, each
//! once the one before is ready; scaled down, the highest ordinal goes first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use podmesh_model::{Cluster, ObjectKey, Pod, PodManagement, ProbeAction, RestartPolicy, TargetPortRef, WorkloadKind};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::env::{self, Placement};
use crate::net::{self, Network};
use crate::probe::{self, Outcome, Target};
use crate::process::{self, Backoff, Event, Spec};

/// The sidecar's readiness port and path (R7).
const SIDECAR_READY_PORT: u16 = 15021;
const SIDECAR_READY_PATH: &str = "/healthz/ready";

/// What every pod of the node shares.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `spec.nodeName` of every pod.
    pub name: String,
    /// Where each pod keeps its files: `DIR/pods/NAMESPACE/NAME/`.
    pub state: PathBuf,
    /// The `podmesh` binary: the sidecar, its capture rules, and the examples' `podmesh echo`.
    pub exe: PathBuf,
    /// `PATH` for the containers (the directory of `exe` first, so `podmesh` resolves to it).
    pub path: String,
    /// The control plane's gRPC address, as pods reach it.
    pub control: SocketAddr,
    /// The mesh root the sidecars trust the control plane by (PEM file).
    pub control_roots: PathBuf,
    pub trust_domain: String,
    pub cluster_domain: String,
    /// The cluster DNS server, as pods reach it.
    pub dns: IpAddr,
    /// The node's address on the pod network (`status.hostIP`).
    pub host_ip: IpAddr,
    /// The address the node's probes come from, which the pods' capture rules let through.
    pub probe_source: IpAddr,
    /// Between SIGTERM and SIGKILL when a pod stops.
    pub grace: Duration,
    /// How long a removed pod keeps running after its endpoint is withdrawn, before SIGTERM: the time for every
    /// sidecar to hear that it is gone, so no request is sent to a pod that is stopping (what a preStop sleep
    /// does in Kubernetes). Not waited for when the whole node stops.
    pub termination_delay: Duration,
    /// The restart back-off of containers and sidecars.
    pub backoff: Backoff,
}

/// What the node reports as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A pod's readiness changed.
    Ready { pod: ObjectKey, ready: bool },
    /// A pod is stopped and its namespace removed.
    Gone { pod: ObjectKey },
}

/// A pod's state as `podmesh get pods` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    /// Pending (being set up, or held until its sidecar is ready), Running, Terminating or Failed (it could not
    /// be set up; `message` says why).
    pub phase: Phase,
    pub ready: bool,
    pub sidecar: Option<SidecarStatus>,
    pub containers: Vec<ContainerStatus>,
    /// Why the pod is not running or not ready, when known.
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Terminating,
    Failed,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SidecarStatus {
    pub ready: bool,
    pub restarts: u32,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStatus {
    pub name: String,
    /// "waiting", "running" or "terminated".
    pub state: &'static str,
    pub ready: bool,
    pub restarts: u32,
    pub last_exit_code: Option<i32>,
    /// The last probe failure, or why it could not start.
    pub message: Option<String>,
}

/// The pods of one machine.
pub struct Node {
    config: Arc<NodeConfig>,
    net: Arc<Mutex<Network>>,
    tokens: Arc<dyn Fn(&ObjectKey) -> String + Send + Sync>,
    events: mpsc::UnboundedSender<NodeEvent>,
    pods: BTreeMap<ObjectKey, Running>,
    /// Pods being stopped, until their namespace is gone.
    stopping: BTreeMap<ObjectKey, JoinHandle<()>>,
}

#[derive(Debug)]
struct Running {
    pod: Arc<Pod>,
    stop: CancellationToken,
    /// Set when it is to stop without the termination delay.
    immediate: Arc<AtomicBool>,
    status: Arc<Mutex<PodStatus>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("config", &self.config).field("pods", &self.pods.keys()).finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no pods yet. `tokens` gives a pod's bootstrap token; `events` receives readiness changes.
    pub fn new(
        config: NodeConfig,
        net: Network,
        tokens: Arc<dyn Fn(&ObjectKey) -> String + Send + Sync>,
        events: mpsc::UnboundedSender<NodeEvent>,
    ) -> Node {
        Node {
            config: Arc::new(config),
            net: Arc::new(Mutex::new(net)),
            tokens,
            events,
            pods: BTreeMap::new(),
            stopping: BTreeMap::new(),
        }
    }

    /// Starts what `cluster` has and the node does not run (in the order its StatefulSets allow), restarts what
    /// changed, and stops what `cluster` no longer has. Call again on every [`NodeEvent`]: an OrderedReady
    /// StatefulSet moves on when a pod gets ready or is gone.
    pub fn reconcile(&mut self, cluster: &Cluster) {
        self.stopping.retain(|_, task| !task.is_finished());
        // Gone or changed: stopped (a StatefulSet's highest ordinal first, one at a time when OrderedReady).
        let mut to_stop: Vec<ObjectKey> = Vec::new();
        for (key, running) in &self.pods {
            match cluster.pods.get(key) {
                Some(want) if same_spec(want, &running.pod) => {}
                _ => to_stop.push(key.clone()),
            }
        }
        to_stop.sort_by_key(|k| std::cmp::Reverse(ordinal(&k.name)));
        let mut ordered_stopping: Vec<ObjectKey> = Vec::new();
        for key in to_stop {
            if let Some(set) = ordered_set(cluster, self.pods.get(&key).map(|r| &*r.pod)) {
                if ordered_stopping.contains(&set) || self.stopping.keys().any(|k| owner_key(k, &set)) {
                    continue;
                }
                ordered_stopping.push(set);
            }
            self.stop(&key, false);
        }
        for (key, want) in &cluster.pods {
            if self.pods.contains_key(key) {
                continue;
            }
            if let Some(set) = ordered_set(cluster, Some(want))
                && !self.predecessors_ready(cluster, &set, want)
            {
                continue;
            }
            let previous = self.stopping.remove(key);
            self.start(want.clone(), previous);
        }
    }

    /// Stops every pod and waits until each is gone (bounded by the grace period and the time to remove it).
    pub async fn shutdown(&mut self) {
        let keys: Vec<ObjectKey> = self.pods.keys().cloned().collect();
        for key in keys {
            self.stop(&key, true);
        }
        let bound = self.config.grace + Duration::from_secs(10);
        for (_, task) in std::mem::take(&mut self.stopping) {
            let _ = tokio::time::timeout(bound, task).await;
        }
    }

    /// Every pod the node runs, with its state.
    pub fn statuses(&self) -> Vec<(Arc<Pod>, PodStatus)> {
        self.pods.values().map(|r| (Arc::clone(&r.pod), lock(&r.status).clone())).collect()
    }

    /// Where a pod's files are: its `resolv.conf`, `hosts`, volumes and logs.
    pub fn pod_dir(&self, pod: &ObjectKey) -> PathBuf {
        pod_dir(&self.config.state, pod)
    }

    /// The network namespace a pod runs in.
    pub fn netns(pod: &ObjectKey) -> String {
        netns_name(pod)
    }

    /// What a process run in a pod's container sees over the machine's files (`podmesh exec`): the same as the
    /// container's own processes. `container`: the pod's first when None.
    pub fn container_files(&self, pod: &ObjectKey, container: Option<&str>) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        let running = self.pods.get(pod).ok_or_else(|| format!("pod {pod} is not running"))?;
        let c = match container {
            None => running.pod.containers.first(),
            Some(name) => running.pod.containers.iter().find(|c| c.name == name),
        };
        let c = c.ok_or_else(|| {
            let names: Vec<&str> = running.pod.containers.iter().map(|c| c.name.as_str()).collect();
            format!("pod {pod} has no container {:?} (containers: {})", container.unwrap_or(""), names.join(", "))
        })?;
        container_files(&self.pod_dir(pod), c)
    }

    fn predecessors_ready(&self, cluster: &Cluster, set: &ObjectKey, pod: &Pod) -> bool {
        let Some(n) = ordinal(&pod.key.name) else { return true };
        cluster
            .pods_of(set)
            .filter(|p| ordinal(&p.key.name).is_some_and(|m| m < n))
            .all(|p| self.pods.get(&p.key).is_some_and(|r| lock(&r.status).ready && same_spec(p, &r.pod)))
            && !self.stopping.keys().any(|k| owner_key(k, set))
    }

    fn start(&mut self, pod: Pod, previous: Option<JoinHandle<()>>) {
        let pod = Arc::new(pod);
        let stop = CancellationToken::new();
        let immediate = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(PodStatus {
            phase: Phase::Pending,
            ready: false,
            sidecar: pod.sidecar.then_some(SidecarStatus { ready: false, restarts: 0 }),
            containers: pod
                .containers
                .iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    state: "waiting",
                    ready: false,
                    restarts: 0,
                    last_exit_code: None,
                    message: None,
                })
                .collect(),
            message: None,
        }));
        let ctx = PodContext {
            config: Arc::clone(&self.config),
            net: Arc::clone(&self.net),
            token: (self.tokens)(&pod.key),
            pod: Arc::clone(&pod),
            status: Arc::clone(&status),
            events: self.events.clone(),
            stop: stop.clone(),
            immediate: Arc::clone(&immediate),
        };
        let task = tokio::spawn(async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            ctx.run().await;
        });
        self.pods.insert(pod.key.clone(), Running { pod, stop, immediate, status, task });
    }

    fn stop(&mut self, key: &ObjectKey, immediate: bool) {
        if let Some(running) = self.pods.remove(key) {
            lock(&running.status).phase = Phase::Terminating;
            running.immediate.store(immediate, Ordering::Relaxed);
            running.stop.cancel();
            self.stopping.insert(key.clone(), running.task);
        }
    }
}

/// Whether a running pod is what the cluster wants: what it runs and how it is addressed (labels and
/// annotations may change under a running pod, as in Kubernetes).
fn same_spec(a: &Pod, b: &Pod) -> bool {
    a.ip == b.ip
        && a.containers == b.containers
        && a.sidecar == b.sidecar
        && a.restart_policy == b.restart_policy
        && a.volumes == b.volumes
        && a.service_account == b.service_account
        && a.hostname == b.hostname
        && a.subdomain == b.subdomain
}

/// The OrderedReady StatefulSet a pod belongs to.
fn ordered_set(cluster: &Cluster, pod: Option<&Pod>) -> Option<ObjectKey> {
    let owner = pod?.owner.as_ref()?;
    if owner.kind != WorkloadKind::StatefulSet {
        return None;
    }
    let key = ObjectKey::new(pod?.key.namespace.clone(), owner.name.as_str());
    let set = cluster.workloads.get(&key)?;
    (set.pod_management == PodManagement::OrderedReady).then_some(key)
}

fn owner_key(pod: &ObjectKey, set: &ObjectKey) -> bool {
    pod.namespace == set.namespace
        && pod.name.strip_prefix(&*set.name).and_then(|r| r.strip_prefix('-')).is_some_and(|r| r.parse::<u32>().is_ok())
}

/// A StatefulSet pod's ordinal: the number after its last dash.
fn ordinal(name: &str) -> Option<u32> {
    name.rsplit_once('-')?.1.parse().ok()
}

fn pod_dir(state: &Path, pod: &ObjectKey) -> PathBuf {
    state.join("pods").join(&*pod.namespace).join(&*pod.name)
}

/// A pod's network namespace name (a file name under /run/netns).
fn netns_name(pod: &ObjectKey) -> String {
    format!("{}.{}", pod.namespace, pod.name)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Everything one pod's task needs.
struct PodContext {
    config: Arc<NodeConfig>,
    net: Arc<Mutex<Network>>,
    token: String,
    pod: Arc<Pod>,
    status: Arc<Mutex<PodStatus>>,
    events: mpsc::UnboundedSender<NodeEvent>,
    stop: CancellationToken,
    immediate: Arc<AtomicBool>,
}

/// What a pod's containers and probes tell its task.
enum PodSignal {
    Container(usize, Event),
    Ended(usize, process::Ended),
    Probe(usize, bool, String),
}

impl PodContext {
    async fn run(self) {
        let key = self.pod.key.clone();
        let netns = netns_name(&key);
        let dir = pod_dir(&self.config.state, &key);
        match self.set_up(&netns, &dir).await {
            Ok(()) => self.serve(&netns, &dir).await,
            Err(message) => {
                {
                    let mut s = lock(&self.status);
                    s.phase = Phase::Failed;
                    s.message = Some(message);
                }
                self.stop.cancelled().await;
            }
        }
        let net = Arc::clone(&self.net);
        let ns = netns.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&net).remove_pod(&ns)).await;
        let _ = std::fs::remove_dir_all(&dir);
        let _ = self.events.send(NodeEvent::Gone { pod: key });
    }

    /// The pod's files and network namespace.
    async fn set_up(&self, netns: &str, dir: &Path) -> Result<(), String> {
        let pod = &self.pod;
        let c = &self.config;
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| io(&format!("creating {}", dir.display()), e))?;
        std::fs::write(dir.join("resolv.conf"), net::resolv_conf(c.dns, &pod.key.namespace, &c.cluster_domain))
            .map_err(|e| io("writing resolv.conf", e))?;
        let fqdn = pod
            .subdomain
            .as_ref()
            .map(|sub| format!("{}.{sub}.{}.svc.{}", pod.effective_hostname(), pod.key.namespace, c.cluster_domain));
        std::fs::write(dir.join("hosts"), net::hosts_file(pod.ip, pod.effective_hostname(), fqdn.as_deref()))
            .map_err(|e| io("writing hosts", e))?;
        for volume in &pod.volumes {
            std::fs::create_dir_all(dir.join("volumes").join(volume))
                .map_err(|e| io(&format!("creating emptyDir {volume}"), e))?;
        }
        write_private(&dir.join("token"), &self.token).map_err(|e| io("writing the bootstrap token", e))?;
        let net = Arc::clone(&self.net);
        let (ns, ip) = (netns.to_string(), pod.ip);
        tokio::task::spawn_blocking(move || lock(&net).add_pod(&ns, ip))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("wiring the pod's network: {e}"))?;
        if pod.sidecar {
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(&c.exe)
                .args(["capture", "install", "--inbound-bypass", &c.probe_source.to_string()])
                .output()
                .await
                .map_err(|e| format!("installing the capture rules: {e}"))?;
            if !out.status.success() {
                return Err(format!("installing the capture rules: {}", String::from_utf8_lossy(&out.stderr).trim()));
            }
        }
        Ok(())
    }

    /// Runs the sidecar, then the containers, until the pod is stopped.
    async fn serve(&self, netns: &str, dir: &Path) {
        let pod = &self.pod;
        let c = &self.config;
        let mut tasks: Vec<JoinHandle<()>> = Vec::new();
        let sidecar_stop = CancellationToken::new();
        if pod.sidecar {
            tasks.push(self.run_sidecar(netns, dir, sidecar_stop.clone()));
            if !self.wait_for_sidecar().await {
                sidecar_stop.cancel();
                join_all(tasks, c.grace).await;
                return;
            }
        }
        lock(&self.status).phase = Phase::Running;
        let (tx, mut rx) = mpsc::unbounded_channel::<PodSignal>();
        let containers_stop = CancellationToken::new();
        let mut container_tasks = Vec::new();
        for (i, container) in pod.containers.iter().enumerate() {
            let spec = match self.container_spec(i, netns, dir) {
                Ok(spec) => spec,
                Err(message) => {
                    let mut s = lock(&self.status);
                    if let Some(cs) = s.containers.get_mut(i) {
                        cs.message = Some(message);
                    }
                    continue;
                }
            };
            let (tx, stop) = (tx.clone(), containers_stop.clone());
            let name = container.name.clone();
            container_tasks.push(tokio::spawn(async move {
                let events = tx.clone();
                let ended = process::supervise(&spec, &stop, move |e| {
                    let _ = events.send(PodSignal::Container(i, e));
                })
                .await;
                let _ = tx.send(PodSignal::Ended(i, ended));
                drop(name);
            }));
        }
        drop(tx);
        let mut probes: BTreeMap<usize, JoinHandle<()>> = BTreeMap::new();
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<PodSignal>();
        let mut ready = false;
        loop {
            let signal = tokio::select! {
                () = self.stop.cancelled() => break,
                Some(s) = rx.recv() => s,
                Some(s) = probe_rx.recv() => s,
                else => { self.stop.cancelled().await; break; }
            };
            self.apply(signal, netns, dir, &mut probes, &probe_tx);
            let now = self.update_readiness();
            if now != ready {
                ready = now;
                let _ = self.events.send(NodeEvent::Ready { pod: pod.key.clone(), ready });
            }
        }
        for (_, p) in probes {
            p.abort();
        }
        if ready {
            lock(&self.status).ready = false;
            let _ = self.events.send(NodeEvent::Ready { pod: pod.key.clone(), ready: false });
        }
        // Its endpoint is withdrawn already (the pod is gone from the cluster, or not ready); running on a moment
        // lets every sidecar hear it first.
        if !self.immediate.load(Ordering::Relaxed) {
            tokio::time::sleep(c.termination_delay).await;
        }
        // The application first, then its sidecar (which drains what is in flight), as Kubernetes stops a pod
        // with a native sidecar.
        containers_stop.cancel();
        join_all(container_tasks, c.grace + Duration::from_secs(5)).await;
        sidecar_stop.cancel();
        join_all(tasks, c.grace + Duration::from_secs(5)).await;
    }

    fn apply(
        &self,
        signal: PodSignal,
        netns: &str,
        dir: &Path,
        probes: &mut BTreeMap<usize, JoinHandle<()>>,
        probe_tx: &mpsc::UnboundedSender<PodSignal>,
    ) {
        let mut s = lock(&self.status);
        match signal {
            PodSignal::Container(i, event) => {
                let Some(cs) = s.containers.get_mut(i) else { return };
                match event {
                    Event::Started { restarts, .. } => {
                        cs.state = "running";
                        cs.restarts = restarts;
                        let probe = self.pod.containers.get(i).and_then(|c| c.readiness.clone());
                        cs.ready = probe.is_none();
                        if let Some(old) = probes.remove(&i) {
                            old.abort();
                        }
                        if let Some(probe) = probe {
                            probes.insert(i, self.spawn_probe(i, probe, netns, dir, probe_tx.clone()));
                        }
                    }
                    Event::NotStarted(message) => {
                        cs.state = "waiting";
                        cs.message = Some(message);
                    }
                    Event::Exited { code } => {
                        cs.state = "terminated";
                        cs.ready = false;
                        cs.last_exit_code = code;
                        if let Some(old) = probes.remove(&i) {
                            old.abort();
                        }
                    }
                    Event::BackOff { delay } => {
                        cs.state = "waiting";
                        cs.message = Some(format!("back-off {} s restarting the failed container", delay.as_secs()));
                    }
                }
            }
            PodSignal::Ended(i, ended) => {
                let Some(cs) = s.containers.get_mut(i) else { return };
                cs.state = "terminated";
                cs.ready = false;
                if ended == process::Ended::NoCommand {
                    cs.message = Some("no command: podmesh runs a container's command and ignores its image".into());
                }
            }
            PodSignal::Probe(i, ready, message) => {
                let Some(cs) = s.containers.get_mut(i) else { return };
                if cs.state == "running" {
                    cs.ready = ready;
                    cs.message = (!message.is_empty()).then_some(message);
                }
            }
        }
    }

    /// Recomputes the pod's readiness from its containers'; returns it.
    fn update_readiness(&self) -> bool {
        let mut s = lock(&self.status);
        s.ready = !s.containers.is_empty() && s.containers.iter().all(|c| c.ready);
        s.ready
    }

    fn spawn_probe(
        &self,
        i: usize,
        probe: podmesh_model::Probe,
        netns: &str,
        dir: &Path,
        tx: mpsc::UnboundedSender<PodSignal>,
    ) -> JoinHandle<()> {
        let pod = Arc::clone(&self.pod);
        let source = self.config.probe_source;
        let files = self.mounts(i, dir).unwrap_or_default();
        let netns = netns.to_string();
        let path = self.config.path.clone();
        tokio::spawn(async move {
            let exec = move |argv: &[String]| {
                let whole = Network::argv_with_files(&netns, &files, argv);
                let mut cmd = tokio::process::Command::new("ip");
                cmd.args(whole.iter().skip(1)).env("PATH", &path);
                cmd
            };
            let target = Target { ip: pod.ip, source: Some(source), pod: &pod, exec: &exec };
            // As `probe::run`, and every failure is said too (`get pods -o wide` shows why a pod is not ready).
            tokio::time::sleep(probe.initial_delay).await;
            let mut ticks = tokio::time::interval(probe.period.max(Duration::from_millis(1)));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut readiness = probe::Readiness::new(probe.success_threshold, probe.failure_threshold);
            loop {
                ticks.tick().await;
                let outcome = probe::check(&probe.action, &target, probe.timeout).await;
                let changed = readiness.observe(&outcome);
                let message = match &outcome {
                    Outcome::Success => String::new(),
                    Outcome::Failure(why) => format!("readiness probe failed: {why}"),
                };
                if changed.is_some() || matches!(outcome, Outcome::Failure(_)) {
                    let _ = tx.send(PodSignal::Probe(i, readiness.ready(), message));
                }
            }
        })
    }

    /// The sidecar: `podmesh proxy` joined to the control plane with the pod's token, restarted whenever it exits.
    fn run_sidecar(&self, netns: &str, dir: &Path, stop: CancellationToken) -> JoinHandle<()> {
        let c = &self.config;
        let mut argv: Vec<String> = vec![
            c.exe.to_string_lossy().into_owned(),
            "proxy".into(),
            "--control".into(),
            c.control.to_string(),
            "--token-file".into(),
            dir.join("token").to_string_lossy().into_owned(),
            "--control-roots".into(),
            c.control_roots.to_string_lossy().into_owned(),
            "--trust-domain".into(),
            c.trust_domain.clone(),
        ];
        // The application's own metrics, merged into 15020 (R8), as the pod's annotations name them.
        if let Some(port) = self.pod.annotations.get("prometheus.io/port") {
            argv.extend(["--app-metrics-port".into(), port.clone()]);
            if let Some(path) = self.pod.annotations.get("prometheus.io/path") {
                argv.extend(["--app-metrics-path".into(), path.clone()]);
            }
        }
        let spec = Spec {
            name: format!("{}/sidecar", self.pod.key),
            argv,
            env: vec![("PATH".into(), c.path.clone())],
            netns: Some(netns.to_string()),
            log: dir.join("logs").join("sidecar.log"),
            restart: RestartPolicy::Always,
            backoff: c.backoff,
            grace: c.grace,
        };
        let status = Arc::clone(&self.status);
        tokio::spawn(async move {
            process::supervise(&spec, &stop, |e| {
                let mut s = lock(&status);
                if let Some(side) = s.sidecar.as_mut() {
                    match e {
                        Event::Started { restarts, .. } => side.restarts = restarts,
                        Event::Exited { .. } | Event::NotStarted(_) | Event::BackOff { .. } => side.ready = false,
                    }
                }
            })
            .await;
        })
    }

    /// Holds the application until the sidecar answers on its readiness port; false when the pod was stopped
    /// first.
    async fn wait_for_sidecar(&self) -> bool {
        let check = ProbeAction::HttpGet {
            path: SIDECAR_READY_PATH.into(),
            port: TargetPortRef::Number(podmesh_model::TargetPort(SIDECAR_READY_PORT)),
            https: false,
            headers: Vec::new(),
        };
        let no_exec = |_: &[String]| tokio::process::Command::new("false");
        let target = Target { ip: self.pod.ip, source: None, pod: &self.pod, exec: &no_exec };
        let started = tokio::time::Instant::now();
        loop {
            let outcome = probe::check(&check, &target, Duration::from_secs(1)).await;
            {
                let mut s = lock(&self.status);
                match &outcome {
                    Outcome::Success => {
                        if let Some(side) = s.sidecar.as_mut() {
                            side.ready = true;
                        }
                        s.message = None;
                        return true;
                    }
                    Outcome::Failure(why) if started.elapsed() > Duration::from_secs(10) => {
                        s.message = Some(format!(
                            "held until the sidecar is ready ({why}); see `podmesh logs {} -c sidecar`",
                            self.pod.key
                        ));
                    }
                    Outcome::Failure(_) => {}
                }
            }
            tokio::select! {
                () = self.stop.cancelled() => return false,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// What container `i` runs: its command in the pod's namespace with the pod's files over the machine's.
    fn container_spec(&self, i: usize, netns: &str, dir: &Path) -> Result<Spec, String> {
        let c = &self.config;
        let container = self.pod.containers.get(i).ok_or("no such container")?;
        let placement = Placement { node_name: &c.name, host_ip: c.host_ip };
        let mut vars = vec![
            ("PATH".to_string(), c.path.clone()),
            ("HOSTNAME".to_string(), self.pod.effective_hostname().to_string()),
        ];
        for (k, v) in env::environment(container, &self.pod, placement) {
            match vars.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = v,
                None => vars.push((k, v)),
            }
        }
        let command = env::command_line(container, &vars);
        let files = self.mounts(i, dir)?;
        let argv = if command.is_empty() { Vec::new() } else { Network::argv_with_files(netns, &files, &command) };
        Ok(Spec {
            name: format!("{}/{}", self.pod.key, container.name),
            argv,
            env: vars,
            netns: None,
            log: dir.join("logs").join(format!("{}.log", container.name)),
            restart: self.pod.restart_policy,
            backoff: c.backoff,
            grace: c.grace,
        })
    }

    /// The files bind-mounted for container `i`.
    fn mounts(&self, i: usize, dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
        match self.pod.containers.get(i) {
            Some(container) => container_files(dir, container),
            None => Ok(Vec::new()),
        }
    }
}

/// What a container's processes see over the machine's files: the pod's resolver files, and its emptyDir volumes
/// at their mount paths (which must exist on the machine: containers run on its filesystem, and podmesh makes
/// nothing outside its state directory).
fn container_files(dir: &Path, container: &podmesh_model::Container) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    let mut files =
        vec![(dir.join("resolv.conf"), "/etc/resolv.conf".into()), (dir.join("hosts"), "/etc/hosts".into())];
    for mount in &container.mounts {
        let target = PathBuf::from(&mount.path);
        if !target.is_dir() {
            return Err(format!(
                "emptyDir {:?}: mountPath {} is not a directory on this machine; podmesh runs containers on the \
                 machine's filesystem and creates nothing outside its state directory: use an existing directory \
                 (e.g. /tmp or /mnt)",
                mount.volume, mount.path
            ));
        }
        files.push((dir.join("volumes").join(&mount.volume), target));
    }
    Ok(files)
}

async fn join_all(tasks: Vec<JoinHandle<()>>, bound: Duration) {
    for task in tasks {
        let _ = tokio::time::timeout(bound, task).await;
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn ordinals_and_owners() {
        assert_eq!(ordinal("db-12"), Some(12));
        assert_eq!(ordinal("web-5rtrjppjfm-t5v72"), None);
        let set = ObjectKey::new("shop", "db");
        assert!(owner_key(&ObjectKey::new("shop", "db-0"), &set));
        assert!(!owner_key(&ObjectKey::new("shop", "dbx-0"), &set));
        assert!(!owner_key(&ObjectKey::new("other", "db-0"), &set));
    }
}
