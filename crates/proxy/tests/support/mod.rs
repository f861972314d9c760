//! The in-process tier: a whole mesh on 127.0.0.1. Every pod's application is a real echo server, every meshed
//! pod has a real sidecar with real certificates from a test CA, and the routing comes from real manifests.
//! What capture does in a pod is stood in for by listeners: each one stands for one original destination, and
//! each sidecar's dialer maps pod IPs to the loopback sockets that play them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podmesh_compute::Index;
use podmesh_identity::{Ca, Credentials};
use podmesh_model::{ObjectKey, Source};
use podmesh_proxy::{AccessLog, AccessRecord, ConfigHandle, Dialer, OrigDst, Proxy, Tls};
use podmesh_testkit::echo::Echo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The port every application also listens on without any Service declaring it (R9 rows 5).
pub const UNDECLARED: u16 = 9090;

pub struct Mesh {
    pub index: Index,
    pub ca: Ca,
    /// pod IP:port → the application serving it.
    pub apps: HashMap<SocketAddr, Echo>,
    /// A meshed pod's IP:port → the loopback listener standing for its inbound capture.
    pub inbound: HashMap<SocketAddr, SocketAddr>,
    pub sidecars: HashMap<String, Arc<Proxy>>,
    pub logs: HashMap<String, AccessLog>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A control plane serving a copy of the manifests (which tests edit) from a state directory of its own.
pub struct ControlPlane {
    pub control: podmesh_control::Control,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub grpc: SocketAddr,
    pub ttl: Duration,
    task: Option<JoinHandle<()>>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
        if let Some(dir) = self.manifests.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl ControlPlane {
    /// Copies the manifests of `dirs` into a fresh directory and serves them on 127.0.0.1, polling every 50 ms,
    /// with certificates of an hour.
    pub async fn start(dirs: &[&str]) -> ControlPlane {
        Self::start_with_ttl(dirs, Duration::from_secs(3600)).await
    }

    /// The same, with certificates of `ttl` (sidecars renew at half of it).
    pub async fn start_with_ttl(dirs: &[&str], ttl: Duration) -> ControlPlane {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let top = std::env::temp_dir().join(format!("podmesh-control-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let manifests = top.join("manifests");
        std::fs::create_dir_all(&manifests).unwrap();
        for d in dirs {
            for e in std::fs::read_dir(root().join(d)).unwrap() {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "yaml") {
                    std::fs::copy(&path, manifests.join(path.file_name().unwrap())).unwrap();
                }
            }
        }
        let state = top.join("state");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = listener.local_addr().unwrap();
        let (control, task) = Self::serve(&manifests, &state, ttl, listener);
        ControlPlane { control, manifests, state, grpc, ttl, task: Some(task) }
    }

    fn serve(
        manifests: &std::path::Path,
        state: &std::path::Path,
        ttl: Duration,
        listener: TcpListener,
    ) -> (podmesh_control::Control, JoinHandle<()>) {
        let (source, first, cause) =
            podmesh_control::FileSource::open(vec![manifests.to_path_buf()], Duration::from_millis(50)).unwrap();
        let authority = podmesh_control::Authority::open(state, "cluster.local", ttl).unwrap();
        let control = podmesh_control::Control::new(first, cause, authority).unwrap();
        let serving = control.clone();
        let task = tokio::spawn(async move {
            serving.serve(listener, None, source, std::future::pending()).await.unwrap();
        });
        (control, task)
    }

    /// Stops serving: open streams end, new connections are refused.
    pub async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Starts again on the same address from the same state directory and manifests (a restarted control plane).
    pub async fn restart(&mut self) {
        self.stop().await;
        let listener = TcpListener::bind(self.grpc).await.unwrap();
        let (control, task) = Self::serve(&self.manifests, &self.state, self.ttl, listener);
        (self.control, self.task) = (control, Some(task));
    }

    /// What a sidecar of `pod` is started with: the address, the pod's token and the mesh root.
    pub fn options(&self, pod: &ObjectKey) -> podmesh_proxy::ControlOptions {
        self.options_with_token(self.control.shared.authority.token(pod))
    }

    pub fn options_with_token(&self, token: String) -> podmesh_proxy::ControlOptions {
        podmesh_proxy::ControlOptions {
            address: self.grpc.into(),
            token: token.into(),
            roots_pem: self.control.shared.authority.trust_anchors().join(""),
            control_identity: podmesh_control::control_identity("cluster.local"),
            cert_ttl: Some(self.ttl),
            dialer: Dialer::default(),
        }
    }

    /// Every connected sidecar's status, by pod.
    pub fn status(&self) -> Vec<podmesh_control::ProxyStatus> {
        self.control.shared.proxies.list()
    }

    pub fn generation(&self) -> u64 {
        self.control.shared.current().generation
    }
}

impl Mesh {
    /// Loads `dirs` (relative to the repository root) and starts every application and sidecar.
    pub async fn start(dirs: &[&str]) -> Mesh {
        Self::start_with(dirs, None).await
    }

    /// The same mesh, but every sidecar joins through `control`: a certificate for its bootstrap token, then its
    /// config over xDS, both followed for as long as the mesh runs.
    pub async fn start_joined(dirs: &[&str], control: &ControlPlane) -> Mesh {
        Self::start_with(dirs, Some(control)).await
    }

    async fn start_with(dirs: &[&str], control: Option<&ControlPlane>) -> Mesh {
        let sources: Vec<Source> = dirs.iter().map(|d| Source::Path(root().join(d))).collect();
        let loaded = podmesh_model::load(&sources).unwrap();
        let index = Index::new(loaded.cluster);
        let ca = Ca::new(&index.cluster().mesh.trust_domain).unwrap();

        // Every application socket: each endpoint of each Service, and an undeclared port on every pod.
        let outbound = Arc::clone(index.outbound());
        let mut sockets: HashMap<SocketAddr, String> = HashMap::new();
        for up in outbound.clusters.values() {
            for ep in &up.endpoints {
                if let Some(pod) = &ep.pod {
                    sockets.insert(ep.address, pod.name.to_string());
                }
            }
        }
        for (ip, pod) in &outbound.pods {
            sockets.insert(SocketAddr::new(*ip, UNDECLARED), pod.pod.name.to_string());
        }
        let mut apps = HashMap::new();
        for (addr, name) in &sockets {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            apps.insert(*addr, Echo::start(listener, name).await);
        }
        let meshed: HashMap<IpAddr, ObjectKey> =
            outbound.pods.iter().filter(|(_, p)| p.identity.is_some()).map(|(ip, p)| (*ip, p.pod.clone())).collect();
        let mut inbound_listeners = HashMap::new();
        let mut inbound = HashMap::new();
        for addr in sockets.keys().filter(|a| meshed.contains_key(&a.ip())) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            inbound.insert(*addr, listener.local_addr().unwrap());
            inbound_listeners.insert(*addr, listener);
        }

        let mut mesh = Mesh { index, ca, apps, inbound, sidecars: HashMap::new(), logs: HashMap::new(), tasks: vec![] };
        for (ip, pod) in &meshed {
            let cfg = mesh.index.proxy_config(pod).unwrap();
            // A pod dials its own application directly, other meshed pods through their inbound capture.
            let rewrites: HashMap<SocketAddr, SocketAddr> = mesh
                .apps
                .iter()
                .map(|(addr, echo)| {
                    let target = match mesh.inbound.get(addr) {
                        Some(l) if addr.ip() != *ip => *l,
                        _ => echo.local_addr(),
                    };
                    (*addr, target)
                })
                .collect();
            let log = AccessLog::memory();
            let (cfg, creds, source) = match control {
                None => (cfg.clone(), mesh.credentials(&cfg.workload.identity, Duration::from_secs(3600)), None),
                Some(cp) => {
                    let join = podmesh_proxy::ControlSource::join(cp.options(pod), Duration::from_secs(20));
                    let (source, joined, creds) = join.await.unwrap();
                    assert_eq!(joined, cfg, "the config over xDS is the one the routing core computes");
                    (joined, creds, Some(source))
                }
            };
            let proxy = Proxy::new(
                ConfigHandle::new(cfg),
                Tls::new(creds).unwrap(),
                Dialer::default().with_rewrites(rewrites),
                log.clone(),
            );
            if let Some(source) = source {
                let follower = Arc::clone(&proxy);
                mesh.tasks.push(tokio::spawn(async move { podmesh_proxy::follow(source, &follower, |_| {}).await }));
            }
            let own: Vec<SocketAddr> = inbound_listeners.keys().filter(|a| a.ip() == *ip).copied().collect();
            for addr in own {
                let listener = inbound_listeners.remove(&addr).unwrap();
                mesh.tasks.push(proxy.serve_inbound(listener, OrigDst::Fixed(addr)));
            }
            mesh.sidecars.insert(pod.name.to_string(), proxy);
            mesh.logs.insert(pod.name.to_string(), log);
        }
        mesh
    }

    pub fn credentials(&self, identity: &podmesh_compute::Identity, ttl: Duration) -> Credentials {
        let cert = self.ca.issue(identity, ttl).unwrap();
        Credentials::from_pem(&cert.cert_chain_pem, &cert.key_pem, &self.ca.cert_pem()).unwrap()
    }

    /// Where `pod`'s application connects to reach `dst` through its sidecar: a listener standing for the
    /// outbound capture of connections to `dst`.
    pub async fn via_sidecar(&mut self, pod: &str, dst: SocketAddr) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = &self.sidecars[pod];
        self.tasks.push(proxy.serve_outbound(listener, OrigDst::Fixed(dst)));
        addr
    }

    /// Where a plain pod's connection to `dst` lands: the destination's inbound capture if it is meshed, else its
    /// application. (A plain client's ClusterIP traffic is kube-proxy's: tests pick the endpoint.)
    pub fn plain(&self, dst: SocketAddr) -> SocketAddr {
        self.inbound.get(&dst).copied().unwrap_or_else(|| self.apps[&dst].local_addr())
    }

    pub fn pod_ip(&self, name: &str) -> IpAddr {
        self.index.cluster().pods.values().find(|p| &*p.key.name == name).unwrap().ip
    }

    /// The pods of a workload, by name.
    pub fn pods_of(&self, workload: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .index
            .cluster()
            .pods
            .values()
            .filter(|p| p.owner.as_ref().is_some_and(|o| o.name == workload))
            .map(|p| p.key.name.to_string())
            .collect();
        v.sort();
        v
    }

    pub fn service(&self, name: &str, port: u16) -> SocketAddr {
        let svc = self.index.cluster().services.values().find(|s| &*s.key.name == name).unwrap();
        SocketAddr::new(svc.cluster_ips[0], port)
    }

    pub fn log(&self, pod: &str) -> Vec<AccessRecord> {
        self.logs[pod].records()
    }
}

/// An HTTP/1.1 connection.
pub async fn h1(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// An HTTP/2 connection with prior knowledge (h2c).
pub async fn h2(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// A response: status, the pod that served it (the echo's header), the reason header, the body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub pod: Option<String>,
    pub reason: Option<String>,
    pub body: String,
}

pub fn request(host: &str, path: &str) -> http::Request<Empty<Bytes>> {
    http::Request::builder().uri(path).header("host", host).body(Empty::new()).unwrap()
}

pub async fn got(resp: http::Response<hyper::body::Incoming>) -> Got {
    let status = resp.status().as_u16();
    let header = |n: &str| resp.headers().get(n).map(|v| v.to_str().unwrap().to_string());
    let (pod, reason) = (header("x-echo-pod"), header("x-podmesh-reason"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got { status, pod, reason, body: String::from_utf8_lossy(&body).into_owned() }
}

pub async fn get1(sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>, host: &str, path: &str) -> Got {
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request(host, path)))
        .await
        .expect("timed out")
        .unwrap();
    got(resp).await
}

/// Sends `bytes`, closes the write side, and reads until the other side closes. `Err` when it was reset.
pub async fn tcp_exchange(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(bytes).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// True when the connection was refused by a reset (or closed without an answer) rather than answered.
pub async fn is_reset(addr: SocketAddr, bytes: &[u8]) -> bool {
    match tcp_exchange(addr, bytes).await {
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
        Ok(s) => s.is_empty(),
    }
}

/// One answer of [`call`].
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// One HTTP/1.1 request on a fresh connection, as a scraper, a kubelet or an operator's client sends it; 10 s at
/// most.
pub async fn call(addr: SocketAddr, method: &str, path: &str) -> Reply {
    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", addr.to_string())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let content_type = resp.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Reply { status, content_type, body: String::from_utf8(body.to_vec()).unwrap() }
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .unwrap_or_else(|_| panic!("{method} {path} on {addr}: no answer"))
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    call(addr, "GET", path).await
}
