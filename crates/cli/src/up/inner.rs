//! The running local mesh: what `podmesh up` runs inside its private namespaces. One process holds the node
//! (the pod network, the pods, their sidecars and probes: `podmesh_runtime::node`), the control plane (in
//! process, serving the sidecars on the node's address), the cluster DNS and the node's Service NAT; its control
//! socket takes `apply`, `delete`, `scale`, `get` and `down`.
//!
//! Every change is applied in one place, in order: a pod's readiness (from the node) goes to the control plane
//! as a change of that pod; an apply, delete or scale rebuilds the cluster from the applied manifests, with each
//! running pod's readiness as the node has it, and the control plane works out what changed. Then the node
//! reconciles, and the NAT rules follow each generation.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use podmesh_control::{Authority, Change, Control, Shared, Version};
use podmesh_model::{Cluster, ObjectKey};
use podmesh_runtime::dns::{self, Records, Srv};
use podmesh_runtime::nat;
use podmesh_runtime::net::Network;
use podmesh_runtime::node::{Node, NodeConfig, NodeEvent};
use podmesh_runtime::process::Backoff;
use podmesh_runtime::store::Store;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::wire::{self, EndpointsRow, File, PodRow, Request, Response, ServiceRow, Status};

/// The node's bridge.
const BRIDGE: &str = "podmesh0";
/// Where the node's probes come from: pods' capture rules let it through (Istio ambient's kubelet probe address).
pub const PROBE_SOURCE: IpAddr = IpAddr::V4(Ipv4Addr::new(169, 254, 7, 127));
/// The node's name (`spec.nodeName`).
const NODE_NAME: &str = "podmesh-node";

/// Runs the mesh until `down`, SIGINT or SIGTERM.
pub fn run(files: &[PathBuf], state: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    rt.block_on(run_async(files, state))
}

async fn run_async(files: &[PathBuf], state: &Path) -> Result<()> {
    let started = Instant::now();
    let mut store = Store::default();
    for file in read_files(files)? {
        store.apply(&file.name, &file.text);
    }
    let mut cluster = load(&store)?;
    for pod in cluster.pods.values_mut() {
        pod.ready = false;
    }
    let mesh = cluster.mesh.clone();
    let net = Network::create(BRIDGE, mesh.pod_cidr).map_err(|e| anyhow!("making the pod network: {e}"))?;
    net.route_services(mesh.service_cidr).map_err(|e| anyhow!("routing the Service CIDR: {e}"))?;
    net.add_node_address(PROBE_SOURCE).map_err(|e| anyhow!("adding the probe address: {e}"))?;
    let gateway = net.gateway();

    let control_dir = state.join("control");
    let grpc_addr = SocketAddr::new(gateway, 15012);
    let control = ControlPlane::start(&cluster, &control_dir, gateway, "podmesh up").await?;
    let current = Arc::new(std::sync::RwLock::new(Arc::clone(&control.shared)));

    // The cluster DNS on the node's address, over UDP and TCP.
    let records: Arc<dyn Records> =
        Arc::new(IndexRecords { current: Arc::clone(&current), domain: mesh.cluster_domain.clone() });
    let dns_addr = SocketAddr::new(gateway, 53);
    let udp = tokio::net::UdpSocket::bind(dns_addr).await.with_context(|| format!("binding DNS on {dns_addr}"))?;
    let tcp = tokio::net::TcpListener::bind(dns_addr).await.with_context(|| format!("binding DNS on {dns_addr}"))?;
    tokio::spawn(dns::serve(udp, Arc::clone(&records)));
    tokio::spawn(dns::serve_tcp(tcp, records));

    let exe = std::env::current_exe().context("finding the podmesh binary")?;
    let path = match (exe.parent(), std::env::var("PATH")) {
        (Some(dir), Ok(p)) => format!("{}:{p}", dir.display()),
        (Some(dir), Err(_)) => format!("{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", dir.display()),
        (None, p) => p.unwrap_or_default(),
    };
    let config = NodeConfig {
        name: NODE_NAME.into(),
        state: state.to_path_buf(),
        exe,
        path,
        control: grpc_addr,
        control_roots: control_dir.join("root.pem"),
        trust_domain: mesh.trust_domain.clone(),
        cluster_domain: mesh.cluster_domain.clone(),
        dns: gateway,
        host_ip: gateway,
        probe_source: PROBE_SOURCE,
        grace: Duration::from_secs(10),
        termination_delay: Duration::from_secs(1),
        backoff: Backoff::KUBELET,
    };
    // Tokens are made with the CA's key, which a restarted control plane reads again from the same directory.
    let tokens = {
        let shared = Arc::clone(&control.shared);
        Arc::new(move |pod: &ObjectKey| shared.authority.token(pod))
    };
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut node = Node::new(config, net, tokens, events_tx);

    let (requests_tx, mut requests) = mpsc::channel::<(Request, oneshot::Sender<Response>)>(16);
    let socket = state.join("up.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    tokio::spawn(accept(listener, requests_tx));

    let mut mesh = Mesh {
        store,
        cluster,
        control,
        current,
        control_dir,
        gateway,
        ready: BTreeMap::new(),
        announced: false,
        started,
    };
    mesh.progress(&node);
    node.reconcile(&mesh.cluster);
    let mut down: Option<oneshot::Sender<Response>> = None;
    loop {
        tokio::select! {
            Some(event) = events.recv() => {
                mesh.on_event(event).await;
                node.reconcile(&mesh.cluster);
                mesh.progress(&node);
            }
            Some((request, reply)) = requests.recv() => {
                if matches!(request, Request::Down) {
                    down = Some(reply);
                    break;
                }
                let response = mesh.handle(request, &node).await;
                node.reconcile(&mesh.cluster);
                let _ = reply.send(response);
            }
            () = crate::dataplane::shutdown_signal() => break,
        }
    }
    eprintln!("[{:7.1}s] stopping {} pod(s)", started.elapsed().as_secs_f64(), mesh.cluster.pods.len());
    node.shutdown().await;
    eprintln!("[{:7.1}s] every pod stopped", started.elapsed().as_secs_f64());
    mesh.control.stop().await;
    let _ = std::fs::remove_file(&socket);
    if let Some(reply) = down {
        let _ = reply.send(Response::ok(serde_json::Value::Null));
        // The connection's task writes the answer; the runtime ends (and drops its tasks) when this returns.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("podmesh up: stopped");
    Ok(())
}

/// The mesh's state as the main loop holds it.
struct Mesh {
    store: Store,
    /// The cluster as last applied, with the node's readiness.
    cluster: Cluster,
    control: ControlPlane,
    /// The control plane being served, as the DNS reads it.
    current: Arc<std::sync::RwLock<Arc<Shared>>>,
    control_dir: PathBuf,
    /// The node's address on the pod network.
    gateway: IpAddr,
    /// Each running pod's readiness as the node last said.
    ready: BTreeMap<ObjectKey, bool>,
    announced: bool,
    started: Instant,
}

impl Mesh {
    async fn on_event(&mut self, event: NodeEvent) {
        match event {
            NodeEvent::Ready { pod, ready } => {
                self.ready.insert(pod.clone(), ready);
                if let Some(p) = self.cluster.pods.get_mut(&pod) {
                    p.ready = ready;
                    if let Err(e) = Control::set_pod_ready(&self.control.shared, &pod, ready).await {
                        eprintln!("podmesh up: {pod}: {e}");
                    }
                }
                let t = self.started.elapsed().as_secs_f64();
                eprintln!("[{t:7.1}s] {pod} {}", if ready { "ready" } else { "not ready" });
            }
            NodeEvent::Gone { pod } => {
                self.ready.remove(&pod);
                eprintln!("[{:7.1}s] {pod} stopped", self.started.elapsed().as_secs_f64());
            }
        }
    }

    /// Says once when every pod is ready.
    fn progress(&mut self, node: &Node) {
        let total = self.cluster.pods.len();
        let ready = self.cluster.pods.values().filter(|p| p.ready).count();
        if !self.announced && ready == total {
            self.announced = true;
            eprint!("{}", super::pods_table(&self.status(node), None, true));
            eprintln!(
                "podmesh up: all {total} pod(s) ready in {:.1} s; changes are shown as they happen (Ctrl-C stops the \
                 mesh)",
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    async fn handle(&mut self, request: Request, node: &Node) -> Response {
        let result = match request {
            Request::Status => Ok(serde_json::to_value(self.status(node)).unwrap_or_default()),
            Request::Apply { files } => {
                let mut next = self.store.clone();
                let changed: Vec<String> = files.iter().flat_map(|f| next.apply(&f.name, &f.text)).collect();
                self.commit(next, format!("apply: {}", names(&files))).await.map(|()| serde_json::json!(changed))
            }
            Request::Delete { files } => {
                let mut next = self.store.clone();
                let removed: Vec<String> =
                    files.iter().flat_map(|f| next.delete(&f.text, f.name.ends_with(".json"))).collect();
                self.commit(next, format!("delete: {}", names(&files))).await.map(|()| serde_json::json!(removed))
            }
            Request::Scale { kind, namespace, name, replicas } => {
                let mut next = self.store.clone();
                match next.scale(&kind, &namespace, &name, replicas) {
                    Ok(()) => self
                        .commit(next, format!("scale {kind}/{name} -n {namespace} to {replicas}"))
                        .await
                        .map(|()| serde_json::Value::Null),
                    Err(e) => Err(e),
                }
            }
            Request::Files { namespace, name, container } => node
                .container_files(&ObjectKey::new(namespace, name), container.as_deref())
                .map(|files| serde_json::json!(files)),
            Request::RestartControlPlane => self.restart_control().await.map(|g| serde_json::json!(g)),
            Request::Down => Ok(serde_json::Value::Null),
        };
        match result {
            Ok(data) => Response::ok(data),
            Err(e) => Response::error(e),
        }
    }

    /// Makes `store` the applied manifests: the cluster is loaded from it, each pod with the readiness the node
    /// reports (a new pod is not ready), and given to the control plane. A store that does not load is refused
    /// and changes nothing.
    async fn commit(&mut self, store: Store, cause: String) -> Result<(), String> {
        let mut cluster = load(&store).map_err(|e| format!("{e:#}"))?;
        for pod in cluster.pods.values_mut() {
            pod.ready = self.ready.get(&pod.key).copied().unwrap_or(false);
        }
        let version = Version { change: Change::Whole(cluster.clone()), cause };
        Control::apply(&self.control.shared, version).await?;
        self.store = store;
        self.cluster = cluster;
        self.announced = self.cluster.pods.values().all(|p| p.ready);
        Ok(())
    }

    /// Stops the control plane (every sidecar's stream and certificate connection is cut; they keep serving with
    /// what they have) and starts a new one from the applied manifests and the same CA directory, as a restarted
    /// istiod starts from the API server. Returns its generation.
    async fn restart_control(&mut self) -> Result<u64, String> {
        self.control.stop().await;
        let next = ControlPlane::start(&self.cluster, &self.control_dir, self.gateway, "podmesh up: restarted")
            .await
            .map_err(|e| format!("{e:#}"))?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::clone(&next.shared);
        self.control = next;
        eprintln!("[{:7.1}s] control plane restarted", self.started.elapsed().as_secs_f64());
        Ok(self.control.shared.current().generation)
    }

    fn status(&self, node: &Node) -> Status {
        let running: BTreeMap<ObjectKey, _> =
            node.statuses().into_iter().map(|(pod, status)| (pod.key.clone(), status)).collect();
        let node_ip = self.gateway.to_string();
        let pods = self
            .cluster
            .pods
            .values()
            .map(|p| {
                let status = running.get(&p.key);
                PodRow {
                    namespace: p.key.namespace.to_string(),
                    name: p.key.name.to_string(),
                    ip: p.ip.to_string(),
                    node: NODE_NAME.into(),
                    node_ip: node_ip.clone(),
                    ready: status.is_some_and(|s| s.ready),
                    phase: status.map_or("Pending".into(), |s| format!("{:?}", s.phase)),
                    restarts: status.map_or(0, |s| s.containers.iter().map(|c| c.restarts).sum()),
                    sidecar: p.sidecar,
                    sidecar_status: status.and_then(|s| serde_json::to_value(&s.sidecar).ok()).unwrap_or_default(),
                    containers: status.and_then(|s| serde_json::to_value(&s.containers).ok()).unwrap_or_default(),
                    message: status.and_then(|s| {
                        s.message.clone().or_else(|| s.containers.iter().find_map(|c| c.message.clone()))
                    }),
                }
            })
            .collect();
        let index = self.control.shared.index.read();
        let mut services = Vec::new();
        let mut endpoints = Vec::new();
        for svc in self.cluster.services.values() {
            services.push(ServiceRow {
                namespace: svc.key.namespace.to_string(),
                name: svc.key.name.to_string(),
                cluster_ip: svc.cluster_ips.first().map_or("None".into(), ToString::to_string),
                ports: svc
                    .ports
                    .iter()
                    .map(|p| format!("{}:{}/{}", p.port, p.target_port, p.protocol.as_str()))
                    .collect(),
                headless: svc.headless,
            });
            let (mut ready, mut not_ready) = (Vec::new(), Vec::new());
            for pod in index.pods_of_service(&svc.key) {
                for port in &svc.ports {
                    let target = match &port.target_port {
                        podmesh_model::TargetPortRef::Number(n) => Some(*n),
                        podmesh_model::TargetPortRef::Name(name) => pod.named_port(name),
                    };
                    let Some(target) = target else { continue };
                    let addr = SocketAddr::new(pod.ip, target.0).to_string();
                    if pod.ready { ready.push(addr) } else { not_ready.push(addr) }
                }
            }
            endpoints.push(EndpointsRow {
                namespace: svc.key.namespace.to_string(),
                name: svc.key.name.to_string(),
                ready,
                not_ready,
            });
        }
        Status { pods, services, endpoints, generation: self.control.shared.current().generation }
    }
}

fn names(files: &[File]) -> String {
    files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn load(store: &Store) -> Result<Cluster> {
    match podmesh_model::load(&store.sources()) {
        Ok(loaded) => Ok(loaded.cluster),
        Err(e) => {
            let errors: Vec<String> = e.errors().map(ToString::to_string).collect();
            Err(anyhow!("the manifests have {} error(s):\n{}", errors.len(), errors.join("\n")))
        }
    }
}

/// The manifest files of `paths` (a directory's `*.yaml`, `*.yml` and `*.json`, in name order, as `kubectl apply
/// -f DIR`), each with its text.
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<File>> {
    let mut out = Vec::new();
    for path in paths {
        let mut files = Vec::new();
        if path.is_dir() {
            let entries = std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
            for entry in entries {
                let p = entry?.path();
                let manifest =
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
                if manifest && p.is_file() {
                    files.push(p);
                }
            }
            files.sort();
        } else {
            files.push(path.clone());
        }
        for f in files {
            let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
            out.push(File { name: f.display().to_string(), text });
        }
    }
    Ok(out)
}

/// The control plane's own source: none. Every change comes from the main loop, applied in order with the pods'
/// readiness.
struct Never;

impl podmesh_control::Source for Never {
    async fn next(&mut self) -> Option<Result<Version, String>> {
        std::future::pending().await
    }
}

/// The control plane in process: its gRPC (xDS and CA) and monitoring listeners on the node's address, and the
/// node's Service NAT following its generations.
struct ControlPlane {
    shared: Arc<Shared>,
    stop: tokio_util::sync::CancellationToken,
    serving: tokio::task::JoinHandle<Result<(), String>>,
    nat: tokio::task::JoinHandle<()>,
}

impl ControlPlane {
    async fn start(cluster: &Cluster, dir: &Path, gateway: IpAddr, cause: &str) -> Result<ControlPlane> {
        let ttl = Duration::from_secs(24 * 3600);
        let authority = Authority::open(dir, &cluster.mesh.trust_domain, ttl)?;
        let control = Control::new(cluster.clone(), cause.into(), authority).map_err(|e| anyhow!(e))?;
        let grpc_addr = SocketAddr::new(gateway, 15012);
        let grpc = bind(grpc_addr).await?;
        // Monitoring on the node's address, as istiod's 15014 is reachable in a cluster: `podmesh proxy-status
        // --monitoring 10.244.0.1:15014` from a pod shows every sidecar's sync state.
        let monitoring_addr = SocketAddr::new(gateway, 15014);
        let monitoring = bind(monitoring_addr).await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let serving = {
            let (control, stop) = (control.clone(), stop.clone());
            tokio::spawn(async move { control.serve(grpc, Some(monitoring), Never, stop.cancelled_owned()).await })
        };
        // The node's Service NAT, made again for each generation.
        let nat = tokio::spawn(follow_nat(Arc::clone(&control.shared)));
        Ok(ControlPlane { shared: control.shared, stop, serving, nat })
    }

    async fn stop(&mut self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.serving).await;
        self.serving.abort();
        self.nat.abort();
    }
}

/// Binds a listener. A control plane being restarted may still hold the address for a moment (its tasks are
/// aborted, not yet dropped): a bind that finds it in use is tried again, for at most 5 s.
async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    let start = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.with_context(|| format!("binding {addr}")),
        }
    }
}

/// The cluster DNS's view of the control plane's index.
struct IndexRecords {
    current: Arc<std::sync::RwLock<Arc<Shared>>>,
    domain: String,
}

impl IndexRecords {
    fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Records for IndexRecords {
    fn addresses(&self, name: &str) -> Option<Vec<IpAddr>> {
        Records::addresses(&*self.shared().index.read(), name)
    }

    fn services(&self, name: &str) -> Option<Vec<Srv>> {
        Records::services(&*self.shared().index.read(), name)
    }

    fn domain(&self) -> &str {
        &self.domain
    }
}

/// Loads the node's NAT rules for each generation the control plane publishes.
async fn follow_nat(shared: Arc<Shared>) {
    let mut generations = shared.snapshots.subscribe();
    let mut last = String::new();
    loop {
        let rules = {
            let index = shared.index.read();
            nat::rules(index.outbound(), nat::Family::V4)
        };
        if rules != last {
            match restore(&rules).await {
                Ok(()) => last = rules,
                Err(e) => eprintln!("podmesh up: loading the Service NAT rules: {e}"),
            }
        }
        if generations.changed().await.is_err() {
            return;
        }
    }
}

async fn restore(rules: &str) -> Result<(), String> {
    let mut child = tokio::process::Command::new("iptables-restore")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("running iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(rules.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().await.map_err(|e| e.to_string())?;
    if out.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&out.stderr).trim().to_string()) }
}

/// Takes requests from the control socket to the main loop.
async fn accept(listener: UnixListener, requests: mpsc::Sender<(Request, oneshot::Sender<Response>)>) {
    while let Ok((stream, _)) = listener.accept().await {
        let requests = requests.clone();
        tokio::spawn(async move {
            let _ = serve_one(stream, requests).await;
        });
    }
}

async fn serve_one(
    stream: UnixStream,
    requests: mpsc::Sender<(Request, oneshot::Sender<Response>)>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(wire::MAX_LINE as u64));
    let mut line = String::new();
    let response = match tokio::time::timeout(Duration::from_secs(30), reader.read_line(&mut line)).await {
        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (tx, rx) = oneshot::channel();
                if requests.send((request, tx)).await.is_err() {
                    Response::error("the mesh is stopping")
                } else {
                    rx.await.unwrap_or_else(|_| Response::error("the mesh is stopping"))
                }
            }
            Err(e) => Response::error(format!("not a request: {e}")),
        },
        Ok(Err(e)) => Response::error(format!("reading the request: {e}")),
        Err(_) => Response::error("no request within 30 s"),
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}
