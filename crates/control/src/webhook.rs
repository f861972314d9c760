//! The sidecar-injection admission webhook: the Kubernetes API server sends each Pod it is about to create to
//! `POST /inject` as an AdmissionReview (`admission.k8s.io/v1`), and gets back a JSON Patch that turns the Pod into
//! what `podmesh inject` ([`podmesh_inject::inject`]) makes of it, as Istio's sidecar injector does.
//!
//! The API server dials the webhook's Service by DNS name over TLS and checks the name against the caBundle of the
//! MutatingWebhookConfiguration (the mesh root), so the webhook serves a certificate with DNS SANs
//! ([`service_dns_names`], [`serving_config`]) rather than the control plane's SPIFFE one, renewed at half its
//! lifetime ([`renew`]). The API server presents no client certificate.
//!
//! [`review`] is pure (bytes in, AdmissionReview out) so that tests feed it directly; [`serve`] is the HTTP edge.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body as _;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use podmesh_inject::{Config, Outcome};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{Authority, Shared};

/// Where the webhook is served (the `path` of the MutatingWebhookConfiguration's `clientConfig.service`).
pub const PATH: &str = "/inject";
/// The largest AdmissionReview accepted: the API server's own limit on a request body is 3 MiB, and a review
/// carries the object once or twice, so a larger body is not from the API server.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";
/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The soonest a certificate is renewed again, also after a failed renewal.
const MIN_RENEW: Duration = Duration::from_secs(1);
const RETRY_RENEW: Duration = Duration::from_secs(60);

/// The names the API server dials the webhook's Service `service` in `namespace` by: `service.namespace.svc`
/// (what it uses for a `clientConfig.service`) and the fully qualified `service.namespace.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.cluster.local")]
}

/// A body that is not an AdmissionReview the webhook can answer; the server answers it 400 with this message.
#[derive(Debug, thiserror::Error)]
pub enum BadReview {
    #[error("the body is not JSON ({cause}); expected an AdmissionReview of admission.k8s.io/v1")]
    NotJson { cause: serde_json::Error },
    #[error(
        "the body is {found}, not an AdmissionReview of admission.k8s.io/v1; list v1 in the webhook's admissionReviewVersions"
    )]
    NotAReview { found: String },
    #[error("the AdmissionReview has no `request` object")]
    NoRequest,
    #[error("the AdmissionReview request has no `uid`")]
    NoUid,
    #[error("the AdmissionReview request for a {operation} has no `object` (or it is not a JSON object)")]
    NoObject { operation: String },
}

/// What the webhook answers one review with, and the line it logs about it (if any).
#[derive(Debug)]
struct Answer {
    review: Value,
    log: Option<String>,
}

/// Answers the AdmissionReview `body` for the injection config `config`: allowed, with a base64 JSON Patch when the
/// object was injected; allowed with no patch when it is injected already, opted out, not a workload or not being
/// created; refused (status 400, the field at fault) when it cannot be injected because it is invalid.
pub fn review(body: &[u8], config: &Config) -> Result<Value, BadReview> {
    answer(body, config).map(|a| a.review)
}

fn answer(body: &[u8], config: &Config) -> Result<Answer, BadReview> {
    // serde_json refuses nesting deeper than 128 levels, so no input can exhaust the stack here.
    let review: Value = serde_json::from_slice(body).map_err(|cause| BadReview::NotJson { cause })?;
    let api_version = review.get("apiVersion").and_then(Value::as_str);
    let kind = review.get("kind").and_then(Value::as_str);
    if api_version != Some(API_VERSION) || kind != Some(KIND) {
        let found = match &review {
            Value::Object(_) => format!(
                "apiVersion {}, kind {}",
                api_version.map_or_else(|| "(none)".to_string(), |v| format!("{v:?}")),
                kind.map_or_else(|| "(none)".to_string(), |k| format!("{k:?}")),
            ),
            Value::Array(_) => "a JSON array".into(),
            _ => "a JSON scalar".into(),
        };
        return Err(BadReview::NotAReview { found });
    }
    let request = review.get("request").and_then(Value::as_object).ok_or(BadReview::NoRequest)?;
    let uid = request.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()).ok_or(BadReview::NoUid)?;
    // A Pod's containers cannot change after it is created, so only a CREATE is injected; anything else the API
    // server sends (an UPDATE, a DELETE, which carries no object) passes untouched.
    let operation = request.get("operation").and_then(Value::as_str).unwrap_or("CREATE");
    if operation != "CREATE" {
        return Ok(Answer { review: response(uid, json!({"allowed": true})), log: None });
    }
    let original = request
        .get("object")
        .filter(|o| o.is_object())
        .ok_or_else(|| BadReview::NoObject { operation: operation.to_string() })?;

    let mut object = original.clone();
    let namespace_added = complete(&mut object, request);
    let what = describe(&object, request);
    match podmesh_inject::inject(&mut object, config) {
        Ok(Outcome::Injected) => {
            let ops = patch(original, &object, namespace_added);
            if ops.is_empty() {
                return Ok(Answer { review: response(uid, json!({"allowed": true})), log: None });
            }
            let patch = STANDARD.encode(Value::Array(ops).to_string());
            Ok(Answer {
                review: response(uid, json!({"allowed": true, "patchType": "JSONPatch", "patch": patch})),
                log: Some(format!("injected {what}")),
            })
        }
        Ok(Outcome::AlreadyInjected | Outcome::Skipped(_) | Outcome::NotAWorkload) => {
            Ok(Answer { review: response(uid, json!({"allowed": true})), log: None })
        }
        Err(e) => {
            let message = format!("podmesh injection: {e}");
            let log = Some(format!("refused {what}: {message}"));
            Ok(Answer {
                review: response(uid, json!({"allowed": false, "status": {"code": 400, "message": message}})),
                log,
            })
        }
    }
}

/// An AdmissionReview answering the request `uid` with `fields` (allowed, patch, status).
fn response(uid: &str, fields: Value) -> Value {
    let mut response = Map::new();
    response.insert("uid".into(), Value::String(uid.to_string()));
    if let Value::Object(fields) = fields {
        response.extend(fields);
    }
    json!({"apiVersion": API_VERSION, "kind": KIND, "response": response})
}

/// Gives `object` what `inject` reads but the API server may leave out of a review's object: its kind and
/// apiVersion (from `request.kind`) and its namespace (from `request.namespace`: a Pod created in a namespace
/// need not name it). Returns whether `metadata.namespace` was added, which the patch must then leave out.
fn complete(object: &mut Value, request: &Map<String, Value>) -> bool {
    let Some(fields) = object.as_object_mut() else { return false };
    let gvk = request.get("kind");
    let text = |key: &str| gvk.and_then(|k| k.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty());
    if !fields.contains_key("kind")
        && let Some(kind) = text("kind")
    {
        fields.insert("kind".into(), Value::String(kind.to_string()));
    }
    if !fields.contains_key("apiVersion")
        && let Some(version) = text("version")
    {
        let api_version = match text("group") {
            Some(group) => format!("{group}/{version}"),
            None => version.to_string(),
        };
        fields.insert("apiVersion".into(), Value::String(api_version));
    }
    let Some(namespace) = request.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return false;
    };
    let metadata = fields.entry("metadata").or_insert_with(|| json!({}));
    match metadata.as_object_mut() {
        Some(m) if !m.contains_key("namespace") => {
            m.insert("namespace".into(), Value::String(namespace.to_string()));
            true
        }
        _ => false,
    }
}

/// `kind namespace/name` for the log (`generateName` and `*` when the API server has not named it yet, as for the
/// pods of a ReplicaSet).
fn describe(object: &Value, request: &Map<String, Value>) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("object").to_lowercase();
    let metadata = object.get("metadata");
    let text = |key: &str| metadata.and_then(|m| m.get(key)).and_then(Value::as_str).filter(|s| !s.is_empty());
    let name = match (text("name"), text("generateName")) {
        (Some(name), _) => name.to_string(),
        (None, Some(prefix)) => format!("{prefix}*"),
        (None, None) => request.get("name").and_then(Value::as_str).unwrap_or("(unnamed)").to_string(),
    };
    match text("namespace").or_else(|| request.get("namespace").and_then(Value::as_str)) {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// The JSON Patch (RFC 6902) operations that turn `original` into `injected`, member by member of `metadata` and
/// `spec` (all `inject` changes): an `add` of each member that is new or changed (`add` replaces an existing
/// member), a `remove` of each one gone; the whole of `metadata` or `spec` when the original has none or it is
/// not an object. Nothing else (kind, apiVersion) is touched, and never the root. `metadata.namespace` is left
/// out when [`complete`] added it.
fn patch(original: &Value, injected: &Value, namespace_added: bool) -> Vec<Value> {
    let mut ops = Vec::new();
    for member in ["metadata", "spec"] {
        let skip: &[&str] = if member == "metadata" && namespace_added { &["namespace"] } else { &[] };
        diff_member(member, original.get(member), injected.get(member), skip, &mut ops);
    }
    ops
}

fn diff_member(member: &str, before: Option<&Value>, after: Option<&Value>, skip: &[&str], ops: &mut Vec<Value>) {
    let path = format!("/{}", escape(member));
    let kept = |key: &String| !skip.contains(&key.as_str());
    match (before, after) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            for (key, value) in after.iter().filter(|(k, _)| kept(k)) {
                if before.get(key) != Some(value) {
                    ops.push(json!({"op": "add", "path": format!("{path}/{}", escape(key)), "value": value}));
                }
            }
            for key in before.keys().filter(|k| kept(k) && !after.contains_key(*k)) {
                ops.push(json!({"op": "remove", "path": format!("{path}/{}", escape(key))}));
            }
        }
        (before, Some(after)) => {
            let after = match after {
                Value::Object(fields) => {
                    Value::Object(fields.iter().filter(|(k, _)| kept(k)).map(|(k, v)| (k.clone(), v.clone())).collect())
                }
                other => other.clone(),
            };
            if before != Some(&after) {
                ops.push(json!({"op": "add", "path": path, "value": after}));
            }
        }
        (Some(_), None) => ops.push(json!({"op": "remove", "path": path})),
        (None, None) => {}
    }
}

/// One reference token of a JSON Pointer (RFC 6901): `~` is `~0` and `/` is `~1`, in that order.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The webhook's TLS config: a certificate from `authority` for `dns_names` (see [`service_dns_names`]), no client
/// certificate asked for (the API server presents none), HTTP/2 and HTTP/1.1 offered (the API server speaks
/// either).
pub fn serving_config(authority: &Authority, dns_names: &[String]) -> Result<Arc<rustls::ServerConfig>, String> {
    let cert = authority.issue_server(dns_names).map_err(|e| format!("issuing the webhook's certificate: {e}"))?;
    let chain = CertificateDer::pem_slice_iter(cert.cert_chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the webhook's certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).map_err(|e| format!("the webhook's key: {e}"))?;
    // Only ring is compiled in; naming it keeps rustls from consulting a process default.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("the webhook's TLS config: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Renews the webhook's certificate (for `dns_names`) at half its lifetime, as the control plane renews its own;
/// a failed renewal is logged and tried again a minute later. Runs until dropped.
pub async fn renew(shared: Arc<Shared>, dns_names: Vec<String>, tls: Arc<ArcSwap<rustls::ServerConfig>>) {
    let mut wait = shared.authority.default_ttl / 2;
    loop {
        tokio::time::sleep(wait.max(MIN_RENEW)).await;
        match serving_config(&shared.authority, &dns_names) {
            Ok(c) => {
                tls.store(c);
                wait = shared.authority.default_ttl / 2;
            }
            Err(e) => {
                eprintln!("podmesh control: webhook: renewing its certificate: {e}");
                wait = RETRY_RENEW.min(shared.authority.default_ttl / 2);
            }
        }
    }
}

/// Serves the webhook on `listener` until dropped (which ends every connection too): TLS with the config in `tls`
/// (re-read for every handshake, so a renewal applies to the next connection), HTTP/1.1 or HTTP/2, each connection
/// in a task of its own. A failed handshake just drops the connection.
pub async fn serve(listener: TcpListener, tls: Arc<ArcSwap<rustls::ServerConfig>>, config: Arc<Config>) {
    // Dropping the set aborts every connection's task.
    let mut conns = tokio::task::JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, remote) = match listener.accept().await {
            Ok(c) => c,
            Err(_) => {
                // Out of file descriptors, most likely: wait for some to be freed rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = TlsAcceptor::from(tls.load_full());
        let config = Arc::clone(&config);
        conns.spawn(async move {
            let Ok(Ok(io)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await else { return };
            let service = hyper::service::service_fn(move |req| {
                let config = Arc::clone(&config);
                async move { Ok::<_, Infallible>(handle(req, &config, remote).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), service)
                .await;
        });
    }
}

async fn handle(req: Request<hyper::body::Incoming>, config: &Config, remote: SocketAddr) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let refuse = |status: StatusCode, message: String| {
        eprintln!("podmesh control: webhook: {} {} from {remote}: {status}: {message}", parts.method, parts.uri.path());
        reply(status, "text/plain; charset=utf-8", format!("{message}\n"))
    };
    if parts.uri.path() != PATH || parts.method != Method::POST {
        // Read (up to the limit) before answering: an HTTP/2 stream answered with its request body unread is
        // reset, which some clients report as an error instead of the answer.
        let _ = Limited::new(body, MAX_BODY).collect().await;
        if parts.uri.path() != PATH {
            return refuse(StatusCode::NOT_FOUND, format!("not found: the webhook is POST {PATH}"));
        }
        let mut r = refuse(StatusCode::METHOD_NOT_ALLOWED, format!("{PATH} takes POST only"));
        r.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
        return r;
    }
    let too_large = || format!("the body is over {} MiB, more than any AdmissionReview", MAX_BODY >> 20);
    // A declared length (Content-Length) over the limit is refused before a byte of the body is read.
    if body.size_hint().lower() > MAX_BODY as u64 {
        return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
    }
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return refuse(StatusCode::PAYLOAD_TOO_LARGE, too_large());
        }
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("reading the body: {e}")),
    };
    match answer(&body, config) {
        Ok(Answer { review, log }) => {
            if let Some(line) = log {
                eprintln!("podmesh control: webhook: {line}");
            }
            reply(StatusCode::OK, "application/json", review.to_string())
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    /// A Pod of the quickstart (`clients.yaml`), as the API server would send it.
    fn quickstart_pod(name: &str) -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart/clients.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let key = format!("Pod shop/{name}");
        podmesh_model::objects(&text, false).into_iter().find(|(k, _)| *k == key).unwrap().1
    }

    fn review_body(uid: &str, operation: &str, object: &Value) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": uid,
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "resource": {"group": "", "version": "v1", "resource": "pods"},
                "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
                "object": object,
                "oldObject": null,
                "dryRun": false
            }
        })
        .to_string()
        .into_bytes()
    }

    fn injected(object: &Value) -> Value {
        let mut object = object.clone();
        assert_eq!(podmesh_inject::inject(&mut object, &Config::default()).unwrap(), Outcome::Injected);
        object
    }

    fn decode_base64(text: &str) -> Vec<u8> {
        STANDARD.decode(text).unwrap()
    }

    use podmesh_testkit::json_patch::apply;

    /// The response of a review, checked to be for `uid`.
    fn response_for(review: &Value, uid: &str) -> Value {
        assert_eq!(review["apiVersion"], API_VERSION);
        assert_eq!(review["kind"], KIND);
        assert_eq!(review["response"]["uid"], uid);
        review["response"].clone()
    }

    /// The patch a response carries, decoded.
    fn patch_of(response: &Value) -> Value {
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        serde_json::from_slice(&decode_base64(response["patch"].as_str().unwrap())).unwrap()
    }

    #[test]
    fn a_quickstart_pod_gets_a_patch_that_makes_it_the_injected_pod() {
        let pod = quickstart_pod("client");
        let answered = review(&review_body("u-1", "CREATE", &pod), &Config::default()).unwrap();
        let patch = patch_of(&response_for(&answered, "u-1"));
        for op in patch.as_array().unwrap() {
            let path = op["path"].as_str().unwrap();
            assert!(path.starts_with("/metadata/") || path.starts_with("/spec/"), "{op}");
        }
        assert_eq!(apply(&pod, &patch), injected(&pod));
        // The annotations are patched as a whole, the application's own kept.
        let annotations = &apply(&pod, &patch)["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert!(annotations[podmesh_inject::STATUS_ANNOTATION].is_string());
    }

    #[test]
    fn every_workload_of_the_examples_is_patched_into_its_injected_self() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
        let mut count = 0;
        for dir in ["quickstart", "statefulset-peers"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_none_or(|e| e != "yaml") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for (key, object) in podmesh_model::objects(&text, false) {
                    let mut expected = object.clone();
                    let outcome = podmesh_inject::inject(&mut expected, &Config::default()).unwrap();
                    let answered = review(&review_body("u", "CREATE", &object), &Config::default()).unwrap();
                    let response = response_for(&answered, "u");
                    if outcome == Outcome::Injected {
                        assert_eq!(apply(&object, &patch_of(&response)), expected, "{key}");
                        count += 1;
                    } else {
                        assert!(response.get("patch").is_none(), "{key}");
                    }
                }
            }
        }
        assert!(count >= 5, "only {count} workloads injected");
    }

    #[test]
    fn what_the_review_fills_in_for_inject_stays_out_of_the_patch() {
        // No kind, apiVersion or namespace in the object: taken from the request for `inject`, not patched in.
        let mut pod = quickstart_pod("client");
        let fields = pod.as_object_mut().unwrap();
        fields.remove("kind");
        fields.remove("apiVersion");
        fields["metadata"].as_object_mut().unwrap().remove("namespace");
        let answered = review(&review_body("u-2", "CREATE", &pod), &Config::default()).unwrap();
        let patch = patch_of(&response_for(&answered, "u-2"));
        let mut full = pod.clone();
        full["kind"] = json!("Pod");
        full["apiVersion"] = json!("v1");
        full["metadata"]["namespace"] = json!("shop");
        let mut expected = injected(&full);
        let fields = expected.as_object_mut().unwrap();
        fields.remove("kind");
        fields.remove("apiVersion");
        fields["metadata"].as_object_mut().unwrap().remove("namespace");
        assert_eq!(apply(&pod, &patch), expected);

        // No metadata at all: one `add` of the whole of it, without the namespace.
        let pod = json!({"spec": {"containers": [{"name": "app", "image": "app:1"}]}});
        let answered = review(&review_body("u-3", "CREATE", &pod), &Config::default()).unwrap();
        let patch = patch_of(&response_for(&answered, "u-3"));
        let metadata_ops: Vec<&Value> = patch
            .as_array()
            .unwrap()
            .iter()
            .filter(|op| op["path"].as_str().unwrap().starts_with("/metadata"))
            .collect();
        assert_eq!(metadata_ops.len(), 1, "{patch}");
        assert_eq!(metadata_ops[0]["path"], "/metadata");
        assert!(metadata_ops[0]["value"].get("namespace").is_none());
        let patched = apply(&pod, &patch);
        assert!(patched.get("kind").is_none() && patched.get("apiVersion").is_none());
        assert!(patched["metadata"]["annotations"][podmesh_inject::STATUS_ANNOTATION].is_string());
    }

    #[test]
    fn injected_opted_out_and_other_objects_get_no_patch() {
        let allowed_without_patch = |object: &Value, operation: &str| {
            let answered = review(&review_body("u", operation, object), &Config::default()).unwrap();
            let response = response_for(&answered, "u");
            assert_eq!(response["allowed"], true, "{response}");
            assert!(response.get("patch").is_none() && response.get("patchType").is_none(), "{response}");
        };
        let pod = quickstart_pod("client");
        allowed_without_patch(&injected(&pod), "CREATE");
        let mut istio_off = pod.clone();
        istio_off["metadata"]["annotations"]["sidecar.istio.io/inject"] = json!("false");
        allowed_without_patch(&istio_off, "CREATE");
        allowed_without_patch(&quickstart_pod("legacy"), "CREATE");
        let mut host = pod.clone();
        host["spec"]["hostNetwork"] = json!(true);
        allowed_without_patch(&host, "CREATE");
        allowed_without_patch(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}), "CREATE");
        // Only a creation is injected: an update, or a delete (which has no object), passes.
        allowed_without_patch(&pod, "UPDATE");
        allowed_without_patch(&Value::Null, "DELETE");
    }

    #[test]
    fn a_pod_that_cannot_be_injected_is_refused_with_the_field() {
        let mut pod = quickstart_pod("client");
        pod["spec"]["containers"][0]["name"] = json!(podmesh_inject::PROXY_NAME);
        let answer = answer(&review_body("u-4", "CREATE", &pod), &Config::default()).unwrap();
        let response = response_for(&answer.review, "u-4");
        assert_eq!(response["allowed"], false);
        assert!(response.get("patch").is_none());
        assert_eq!(response["status"]["code"], 400);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.starts_with("podmesh injection: spec.containers[0].name: "), "{message}");
        assert!(message.contains("podmesh's own"), "{message}");
        assert!(answer.log.unwrap().starts_with("refused pod shop/client: podmesh injection"));

        let mut pod = quickstart_pod("client");
        pod["spec"]["containers"] = json!("nope");
        let answered = review(&review_body("u-5", "CREATE", &pod), &Config::default()).unwrap();
        let response = response_for(&answered, "u-5");
        assert_eq!(response["allowed"], false);
        assert!(response["status"]["message"].as_str().unwrap().contains("spec.containers"));
    }

    #[test]
    fn a_review_logs_what_it_injected() {
        let mut pod = quickstart_pod("client");
        let answer = answer(&review_body("u", "CREATE", &pod), &Config::default()).unwrap();
        assert_eq!(answer.log.as_deref(), Some("injected pod shop/client"));
        let metadata = pod["metadata"].as_object_mut().unwrap();
        metadata.remove("name");
        metadata.insert("generateName".into(), json!("client-7d9f-"));
        let answer = super::answer(&review_body("u", "CREATE", &pod), &Config::default()).unwrap();
        assert_eq!(answer.log.as_deref(), Some("injected pod shop/client-7d9f-*"));
    }

    #[test]
    fn what_is_not_an_admission_review_is_an_error_and_nothing_panics() {
        let config = Config::default();
        let err = |body: &[u8]| review(body, &config).unwrap_err();
        assert!(matches!(err(b"not json"), BadReview::NotJson { .. }));
        assert!(matches!(err(b""), BadReview::NotJson { .. }));
        assert!(matches!(err(b"{}"), BadReview::NotAReview { .. }));
        assert!(matches!(err(b"[1]"), BadReview::NotAReview { .. }));
        assert!(matches!(err(b"null"), BadReview::NotAReview { .. }));
        let v1beta1 = br#"{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview", "request": {}}"#;
        let e = err(v1beta1);
        assert!(e.to_string().contains("admission.k8s.io/v1beta1"), "{e}");
        let base = |request: Value| json!({"apiVersion": API_VERSION, "kind": KIND, "request": request}).to_string();
        assert!(matches!(
            err(json!({"apiVersion": API_VERSION, "kind": KIND}).to_string().as_bytes()),
            BadReview::NoRequest
        ));
        assert!(matches!(err(base(json!("x")).as_bytes()), BadReview::NoRequest));
        assert!(matches!(err(base(json!({"object": {}})).as_bytes()), BadReview::NoUid));
        assert!(matches!(err(base(json!({"uid": 7, "object": {}})).as_bytes()), BadReview::NoUid));
        assert!(matches!(err(base(json!({"uid": "", "object": {}})).as_bytes()), BadReview::NoUid));
        assert!(matches!(err(base(json!({"uid": "u", "operation": "CREATE"})).as_bytes()), BadReview::NoObject { .. }));
        assert!(matches!(err(base(json!({"uid": "u", "object": [1]})).as_bytes()), BadReview::NoObject { .. }));

        // Nested deeper than any parser stack could take, alone and as a review's object.
        let deep = format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000));
        assert!(matches!(err(deep.as_bytes()), BadReview::NotJson { .. }));
        let deep_object = format!(
            r#"{{"apiVersion": "{API_VERSION}", "kind": "{KIND}", "request": {{"uid": "u", "object": {{"spec": {}}}}}}}"#,
            deep
        );
        assert!(matches!(err(deep_object.as_bytes()), BadReview::NotJson { .. }));

        // Every prefix of a real review, and odd shapes of every field inject reads: an answer or an error.
        let body = review_body("u", "CREATE", &quickstart_pod("client"));
        for end in 0..body.len() {
            let _ = review(&body[..end], &config);
        }
        for (pointer, value) in [
            ("/request/kind", json!("Pod")),
            ("/request/namespace", json!(5)),
            ("/request/object/metadata", json!(null)),
            ("/request/object/metadata", json!([1])),
            ("/request/object/metadata/annotations", json!("x")),
            ("/request/object/spec", json!(null)),
            ("/request/object/spec/initContainers", json!({})),
            ("/request/object/spec/volumes", json!(3)),
            ("/request/object/spec/containers/0", json!("c")),
            ("/request/object/kind", json!(["Pod"])),
        ] {
            let mut review_value: Value = serde_json::from_slice(&body).unwrap();
            let (parent, last) = pointer.rsplit_once('/').unwrap();
            match review_value.pointer_mut(parent).unwrap() {
                Value::Object(fields) => {
                    fields.insert(last.to_string(), value);
                }
                Value::Array(items) => items[last.parse::<usize>().unwrap()] = value,
                other => panic!("{pointer}: the parent is {other}"),
            }
            let _ = review(review_value.to_string().as_bytes(), &config);
        }
    }

    #[test]
    fn keys_with_slash_and_tilde_are_escaped_and_read_back() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
        assert_eq!(escape("~1"), "~01", "`~` first, so `~1` does not come back as `/`");
        // An annotation with both survives the patch (annotations are patched as one member).
        let mut pod = quickstart_pod("client");
        pod["metadata"]["annotations"]["example.com/a~b"] = json!("x");
        let answered = review(&review_body("u", "CREATE", &pod), &Config::default()).unwrap();
        let patched = apply(&pod, &patch_of(&response_for(&answered, "u")));
        assert_eq!(patched, injected(&pod));
        assert_eq!(patched["metadata"]["annotations"]["example.com/a~b"], "x");
        // A member whose own name has both, changed, added and removed, through the applier's decoding.
        let before = json!({"metadata": {"we/ird~1": 1, "gone/~": 2, "same": 3}, "spec": {}});
        let after = json!({"metadata": {"we/ird~1": 9, "new~/": 4, "same": 3}, "spec": {"a/b": []}});
        let ops = Value::Array(patch(&before, &after, false));
        let paths: Vec<&str> = ops.as_array().unwrap().iter().map(|op| op["path"].as_str().unwrap()).collect();
        assert_eq!(paths, ["/metadata/new~0~1", "/metadata/we~1ird~01", "/metadata/gone~1~0", "/spec/a~1b"]);
        assert_eq!(apply(&before, &ops), after);
    }

    #[test]
    fn the_names_the_api_server_dials() {
        assert_eq!(
            service_dns_names("podmesh-control", "podmesh-system"),
            ["podmesh-control.podmesh-system.svc", "podmesh-control.podmesh-system.svc.cluster.local"]
        );
    }
}
