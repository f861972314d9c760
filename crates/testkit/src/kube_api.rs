//! A fake Kubernetes API server on 127.0.0.1, for the contract tests of the Kubernetes source
//! (`crates/kube/tests`) and the end-to-end tests of `podmesh control --kube` and `podmesh install --apply`.
//!
//! No API server runs here, so this small HTTP server answers kube-rs's requests as the API server would:
//! - a GET list (`GET /api/v1/pods?limit=500…`) from the list responses given for its path;
//! - a GET watch (`…&watch=true…`) with a response that stays open and carries the events the test pushes, one
//!   JSON line each, exactly as the API server streams them (see `recorded/README.md`);
//! - any other method (`POST /apis/authentication.k8s.io/v1/tokenreviews`, `PATCH …`) from the answers given for
//!   `"METHOD path"`;
//! - a PATCH it was not given answers the object sent (what a server-side apply answers);
//! - other paths it was not given answer 404: `404 page not found`, as the API server does for a group it does not
//!   serve, or, after [`FakeApi::objects_absent`], the `NotFound` Status it answers for an object that is not there.
//!
//! It records every request (method, path and query, body, `Authorization` header). Every wait is bounded, and
//! being test support, it panics on what a test did not expect.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use podmesh_model::{Cluster, ObjectKey, Owner, Pod, WorkloadKind};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

pub const WAIT: Duration = Duration::from_secs(10);

/// Answers given in turn (status, body); the last one is given again and again.
pub type Answers = HashMap<String, Vec<(u16, String)>>;

/// One request the server got.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// `path?query`.
    pub target: String,
    pub body: String,
    pub authorization: String,
    pub content_type: String,
}

#[derive(Debug, Default)]
struct State {
    /// Per path (GET) or per `"METHOD path"` (any other method), the answers still to give.
    answers: Answers,
    /// Per path, the open watch response's sender of lines.
    watches: HashMap<String, mpsc::UnboundedSender<Bytes>>,
    requests: Vec<Recorded>,
    /// 404s are `NotFound` Statuses.
    objects_absent: bool,
}

#[derive(Debug, Clone)]
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApi {
    pub async fn start(answers: Answers) -> FakeApi {
        Self::start_with(answers, None).await
    }

    /// The server, over TLS when `tls` is given.
    pub async fn start_with(answers: Answers, tls: Option<tokio_rustls::TlsAcceptor>) -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State { answers, ..State::default() }));
        let api = FakeApi { addr, state };
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let server = server.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.answer(req).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = match tls {
                        None => http.serve_connection(TokioIo::new(stream), service).await,
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else { return };
                            http.serve_connection(TokioIo::new(stream), service).await
                        }
                    };
                });
            }
        });
        api
    }

    /// Answers 404s as the API server does for an object that is not there (a `NotFound` Status).
    pub fn objects_absent(&self) {
        self.state.lock().unwrap().objects_absent = true;
    }

    /// The URL of this server (plain HTTP).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig whose context `fake` is this server (no credentials), and whose current context is a server
    /// that is not there (so a test that forgets `--context fake` fails).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: elsewhere\nclusters:\n\
             - name: fake\n  cluster: {{server: \"{}\"}}\n\
             - name: elsewhere\n  cluster: {{server: \"http://127.0.0.1:1\"}}\n\
             contexts:\n- name: fake\n  context: {{cluster: fake, user: nobody}}\n\
             - name: elsewhere\n  context: {{cluster: elsewhere, user: nobody}}\n\
             users:\n- name: nobody\n  user: {{}}\n",
            self.url()
        )
    }

    /// Adds (or replaces) the answers for `key`: a path for GET, `"METHOD path"` otherwise.
    pub fn answer_with(&self, key: &str, answers: Vec<(u16, String)>) {
        self.state.lock().unwrap().answers.insert(key.to_string(), answers);
    }

    async fn answer(&self, req: Request<hyper::body::Incoming>) -> Response<Body> {
        let method = req.method().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let (authorization, content_type) = (header("authorization"), header("content-type"));
        let body = match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => return text(400, "unreadable body"),
        };
        let mut state = self.state.lock().unwrap();
        state.requests.push(Recorded {
            method: method.clone(),
            target: format!("{path}?{query}"),
            body,
            authorization,
            content_type,
        });
        let key = if method == "GET" { path.clone() } else { format!("{method} {path}") };
        let watch = method == "GET" && query.split('&').any(|p| p == "watch=true" || p == "watch=1");
        let Some(answers) = state.answers.get_mut(&key) else {
            if method == "PATCH" {
                let sent = state.requests.last().map(|r| r.body.clone()).unwrap_or_default();
                return text(200, &sent);
            }
            if state.objects_absent {
                return text(404, &not_found(&path));
            }
            return text(404, "404 page not found");
        };
        let (status, body) = if answers.len() > 1 { answers.remove(0) } else { answers[0].clone() };
        if status != 200 || !watch {
            return text(status, &body);
        }
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        state.watches.insert(path, tx);
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|b| Ok(Frame::data(b)));
        Response::builder()
            .header("content-type", "application/json")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .unwrap()
    }

    /// Every request so far, `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.recorded().into_iter().map(|r| r.target).collect()
    }

    /// Every request so far, whole.
    pub fn recorded(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// How many list (`watch` false) and watch requests `path` got.
    pub fn count(&self, path: &str, watch: bool) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.split('?').next() == Some(path) && r.contains("watch=true") == watch)
            .count()
    }

    /// Waits until `path` has been asked for `n` watches and the last one is open.
    pub async fn watching(&self, path: &str, n: usize) {
        wait_for(&format!("watch {n} of {path}"), || {
            self.count(path, true) >= n && self.state.lock().unwrap().watches.contains_key(path)
        })
        .await;
    }

    /// Sends one event line on the open watch of `path`.
    pub fn push(&self, path: &str, line: &str) {
        let state = self.state.lock().unwrap();
        let tx = state.watches.get(path).unwrap_or_else(|| panic!("no watch of {path} open"));
        tx.send(Bytes::from(format!("{}\n", line.trim_end()))).unwrap();
    }

    /// Ends the open watch response of `path`, as the API server does after an ERROR event.
    pub fn end(&self, path: &str) {
        self.state.lock().unwrap().watches.remove(path);
    }
}

// ------------------------------------------------------------- a directory of manifests as the API would show it

/// The paths of the kinds the control plane watches.
pub const PODS: &str = "/api/v1/pods";
pub const SERVICES: &str = "/api/v1/services";
pub const NAMESPACES: &str = "/api/v1/namespaces";
pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
pub const CRDS: [&str; 3] = [
    "/apis/networking.istio.io/v1/virtualservices",
    "/apis/networking.istio.io/v1/destinationrules",
    "/apis/security.istio.io/v1/peerauthentications",
];

/// The documents of the manifests in `dir` as written, in file order.
pub fn documents(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| podmesh_model::objects(&std::fs::read_to_string(f).unwrap(), false))
        .map(|(_, v)| v)
        .collect()
}

pub fn list(kind: &str, resource_version: &str, items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": format!("{kind}List"), "metadata": {"resourceVersion": resource_version},
           "items": items})
    .to_string()
}

/// A list item: the API gives items no apiVersion and kind.
pub fn item(mut v: Value, uid: &str) -> Value {
    let map = v.as_object_mut().unwrap();
    map.remove("apiVersion");
    map.remove("kind");
    map["metadata"]["uid"] = json!(uid);
    map["metadata"]["resourceVersion"] = json!("10");
    map["metadata"]["creationTimestamp"] = json!("2026-11-27T06:00:00Z");
    v
}

/// The Namespaces of `dir` as written.
pub fn api_namespaces(dir: &Path) -> Vec<Value> {
    documents(dir).into_iter().filter(|d| d["kind"] == "Namespace").map(|d| item(d, "ns-uid")).collect()
}

/// The Services of `dir` as written, with the ClusterIP the API server gave them (`file`'s: the file source's).
pub fn api_services(dir: &Path, file: &Cluster) -> Vec<Value> {
    documents(dir)
        .into_iter()
        .filter(|d| d["kind"] == "Service")
        .map(|mut d| {
            let key =
                ObjectKey::new(d["metadata"]["namespace"].as_str().unwrap(), d["metadata"]["name"].as_str().unwrap());
            let svc = &file.services[&key];
            let spec = d["spec"].as_object_mut().unwrap();
            if !svc.headless {
                spec.insert("clusterIP".into(), json!(svc.cluster_ips[0].to_string()));
                let ips: Vec<String> = svc.cluster_ips.iter().map(|ip| ip.to_string()).collect();
                spec.insert("clusterIPs".into(), json!(ips));
            }
            spec.insert("type".into(), json!("ClusterIP"));
            spec.insert("sessionAffinity".into(), json!("None"));
            spec.insert("ipFamilies".into(), json!(["IPv4"]));
            spec.insert("ipFamilyPolicy".into(), json!("SingleStack"));
            spec.insert("internalTrafficPolicy".into(), json!("Cluster"));
            item(d, &format!("svc-uid-{}", key.name))
        })
        .collect()
}

/// One pod as the API server shows it: its controller, the fields the kubelet and admission add (for a pod with a
/// sidecar, the injected `podmesh-proxy` native sidecar), its IP and its Ready condition.
pub fn api_pod(pod: &Pod) -> Value {
    let mut meta = json!({
        "name": pod.key.name, "namespace": pod.key.namespace, "uid": format!("pod-uid-{}", pod.key.name),
        "labels": pod.labels, "annotations": pod.annotations, "resourceVersion": "10",
        "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "fieldsType": "FieldsV1"}],
    });
    match &pod.owner {
        Some(Owner { kind: WorkloadKind::Deployment, name }) => {
            let hash = &pod.labels["pod-template-hash"];
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "name": format!("{name}-{hash}"), "uid": "rs-uid", "controller": true, "blockOwnerDeletion": true}]);
        }
        Some(Owner { kind: WorkloadKind::StatefulSet, name }) => {
            meta["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": name,
                "uid": "sts-uid", "controller": true, "blockOwnerDeletion": true}]);
        }
        None => {}
    }
    let containers: Vec<Value> = pod
        .containers
        .iter()
        .map(|c| {
            let ports: Vec<Value> = c
                .ports
                .iter()
                .map(|p| {
                    let mut port = json!({"containerPort": p.port.0, "protocol": p.protocol});
                    if let Some(n) = &p.name {
                        port["name"] = json!(n);
                    }
                    port
                })
                .collect();
            json!({"name": c.name, "image": "podmesh:dev", "ports": ports, "volumeMounts": [
                {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                 "readOnly": true}]})
        })
        .collect();
    let mut spec = json!({
        "containers": containers, "serviceAccountName": pod.service_account, "serviceAccount": pod.service_account,
        "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "nodeName": "node-1", "schedulerName": "default-scheduler",
        "volumes": [{"name": "kube-api-access", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}],
    });
    if pod.sidecar {
        spec["initContainers"] = json!([{"name": "podmesh-proxy", "image": "podmesh:dev", "restartPolicy": "Always",
            "args": ["proxy", "--control", "podmesh-control.podmesh-system.svc:15012"]}]);
    }
    if let Some(h) = &pod.hostname {
        spec["hostname"] = json!(h);
    }
    if let Some(s) = &pod.subdomain {
        spec["subdomain"] = json!(s);
    }
    let ready = if pod.ready { "True" } else { "False" };
    json!({
        "metadata": meta,
        "spec": spec,
        "status": {"phase": "Running", "hostIP": "172.18.0.2", "podIP": pod.ip.to_string(),
                   "podIPs": [{"ip": pod.ip.to_string()}],
                   "conditions": [{"type": "PodScheduled", "status": "True"}, {"type": "Ready", "status": ready},
                                  {"type": "ContainersReady", "status": ready}]},
    })
}

/// The list responses of the quickstart, CRDs served (and empty) or not (404).
pub fn cluster_lists(dir: &Path, file: &Cluster, crds: bool) -> Answers {
    let pods: Vec<Value> = file.pods.values().map(api_pod).collect();
    let mut lists = HashMap::from([
        (NAMESPACES.to_string(), vec![(200, list("Namespace", "100", api_namespaces(dir)))]),
        (SERVICES.to_string(), vec![(200, list("Service", "100", api_services(dir, file)))]),
        (SLICES.to_string(), vec![(200, list("EndpointSlice", "100", vec![]))]),
        (PODS.to_string(), vec![(200, list("Pod", "100", pods))]),
    ]);
    if crds {
        for path in CRDS {
            lists.insert(path.to_string(), vec![(200, list("X", "100", vec![]))]);
        }
    }
    lists
}

/// A watch event line (`{"type": …, "object": …}`) of `pod` as the API shows it (see [`api_pod`]), with the given
/// readiness and resourceVersion.
pub fn pod_event(event: &str, pod: &Pod, ready: bool, resource_version: &str) -> String {
    let mut pod = pod.clone();
    pod.ready = ready;
    let mut object = api_pod(&pod);
    object["apiVersion"] = json!("v1");
    object["kind"] = json!("Pod");
    object["metadata"]["resourceVersion"] = json!(resource_version);
    json!({"type": event, "object": object}).to_string()
}

/// The Status the API server answers for an object that is not there.
pub fn not_found(path: &str) -> String {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("{path} not found"), "reason": "NotFound", "code": 404})
    .to_string()
}

pub fn text(status: u16, body: &str) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(status).unwrap())
        .header("content-type", if body.starts_with('{') { "application/json" } else { "text/plain" })
        .body(BodyExt::boxed(Full::new(Bytes::from(body.to_string()))))
        .unwrap()
}

pub async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
