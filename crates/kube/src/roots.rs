//! The mesh's roots in every namespace: the ConfigMap `podmesh-root` (key `root.pem`) that injected sidecars mount
//! to check the control plane's certificate before they have one of their own (istiod's `istio-ca-root-cert`).
//!
//! The control plane writes it by server-side apply (field manager `podmesh-control`) into every namespace it sees
//! (a watch of Namespaces), except the cluster's own (`kube-system`, `kube-public`, `kube-node-lease`) and those
//! being deleted. A write that fails is retried; every namespace is written again periodically, which puts back
//! a ConfigMap that was deleted or edited (an unchanged apply changes nothing). The control plane needs `create`
//! on configmaps and `patch` on those named `podmesh-root` (`podmesh install` grants exactly that).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// The ConfigMap's name and the key of the roots (PEM) in it.
pub const CONFIG_MAP: &str = podmesh_inject::ROOT_CONFIGMAP;
pub const KEY: &str = "root.pem";

/// The field manager of the writes.
pub const FIELD_MANAGER: &str = "podmesh-control";

/// Namespaces that get no ConfigMap: the cluster's own.
const CLUSTER_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// How often failed writes are retried, and how often every namespace is written again.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry: Duration,
    pub refresh: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing { retry: Duration::from_secs(10), refresh: Duration::from_secs(600) }
    }
}

/// Writes `roots` (PEM) into every namespace's ConfigMap, following the namespaces, until dropped.
pub async fn publish(client: Client, roots: String, timing: Timing) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut events = std::pin::pin!(watcher::watcher(namespaces, watcher::Config::default()).default_backoff());
    // Namespaces the roots are in, and those still to write.
    let (mut written, mut pending) = (BTreeSet::<String>::new(), BTreeSet::<String>::new());
    let mut retry = tokio::time::interval(timing.retry);
    let mut refresh = tokio::time::interval(timing.refresh);
    refresh.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                None => return,
                Some(Ok(watcher::Event::InitApply(ns) | watcher::Event::Apply(ns))) => {
                    let name = ns.metadata.name.clone().unwrap_or_default();
                    if wanted(&ns) && !written.contains(&name) {
                        pending.insert(name);
                    }
                }
                Some(Ok(watcher::Event::Delete(ns))) => {
                    let name = ns.metadata.name.unwrap_or_default();
                    written.remove(&name);
                    pending.remove(&name);
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => eprintln!("podmesh control: watching Namespaces for {CONFIG_MAP}: {e}; retrying"),
            },
            _ = retry.tick() => {}
            _ = refresh.tick() => pending.append(&mut written),
        }
        let todo: Vec<String> = pending.iter().cloned().collect();
        for namespace in todo {
            match write(&client, &namespace, &roots).await {
                Ok(()) => {
                    pending.remove(&namespace);
                    written.insert(namespace);
                }
                Err(e) => {
                    // The rest wait for the retry: a failing API server is not asked once per namespace at once.
                    eprintln!("podmesh control: writing ConfigMap {namespace}/{CONFIG_MAP}: {e}; retrying");
                    break;
                }
            }
        }
    }
}

/// A namespace the mesh may run in, and not being deleted.
fn wanted(ns: &Namespace) -> bool {
    let name = ns.metadata.name.as_deref().unwrap_or_default();
    let terminating = ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    !name.is_empty() && !CLUSTER_NAMESPACES.contains(&name) && ns.metadata.deletion_timestamp.is_none() && !terminating
}

/// The ConfigMap of one namespace, applied.
async fn write(client: &Client, namespace: &str, roots: &str) -> Result<(), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let config_map = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some(CONFIG_MAP.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([("app.kubernetes.io/managed-by".to_string(), "podmesh".to_string())])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(KEY.to_string(), roots.to_string())])),
        ..Default::default()
    };
    // Server-side apply needs the type's apiVersion and kind in the body.
    let mut body = serde_json::to_value(&config_map).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    api.patch(CONFIG_MAP, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body)).await.map(|_| ())
}
