//! The control plane (`podmesh control`): it watches a [`Source`] of Kubernetes objects, keeps the routing core's
//! index of them, and streams every sidecar its config over xDS ([`ads`]), pushing only the resources a change
//! touched; and it runs the mesh CA ([`authority`], [`certs`]) that gives each sidecar its identity in exchange
//! for its pod's bootstrap token. Its listeners are in [`server`].
//!
//! Sits at the top of the picture in DESIGN.md: model → compute → control ══xDS══> proxy.

pub mod ads;
pub mod authority;
pub mod certs;
pub mod server;
pub mod snapshot;
pub mod source;
pub mod status;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use podmesh_api::pb::certificate_service_server::CertificateServiceServer;
use podmesh_compute::Index;
use podmesh_model::{Cluster, Kind, ObjectKey, ObjectRef};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use authority::{Authority, ReviewError, Reviewed, TokenReview, control_identity};
pub use snapshot::Snapshot;
pub use source::{Change, FileSource, Source, Version};
pub use status::{Metrics, Proxies, ProxyStatus};

/// What every part of the control plane shares.
#[derive(Debug)]
pub struct Shared {
    /// The index of the cluster as it is now, updated in place by each change (`Index::update`). Streams read
    /// it to make their sidecar's Workload, the CA to find a pod's identity.
    pub index: RwLock<Index>,
    pub snapshots: watch::Sender<Arc<Snapshot>>,
    pub proxies: Proxies,
    pub metrics: Metrics,
    pub registry: Registry,
    pub authority: Authority,
    pub trust_domain: String,
    /// Held while a version is made and published, so versions follow one another.
    pub publishing: tokio::sync::Mutex<()>,
    /// Streams with a push of more than one response in flight ([`ads::push_concurrency`]).
    pub push_slots: Arc<tokio::sync::Semaphore>,
}

impl Shared {
    /// The version being served.
    pub fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshots.borrow())
    }

    /// A sidecar's Workload as the index has it now (which may be ahead of the version being served: a stream
    /// that uses it is never behind).
    pub fn workload(&self, pod: &ObjectKey) -> Option<Arc<snapshot::Encoded>> {
        snapshot::workload(&self.index.read(), pod)
    }
}

/// A control plane with its first version, ready to serve.
#[derive(Debug, Clone)]
pub struct Control {
    pub shared: Arc<Shared>,
}

impl Control {
    /// Indexes the first version of the cluster (`cause`: where it came from). The trust domain is the mesh's
    /// (its MeshConfig), which the CA's identities use.
    pub fn new(first: Cluster, cause: String, authority: Authority) -> Result<Control, String> {
        let trust_domain = first.mesh.trust_domain.clone();
        let index = Index::new(first);
        let snapshot = Snapshot::next(None, &index, None, authority.trust_anchors(), cause);
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.generation.set(1);
        let (snapshots, _) = watch::channel(Arc::new(snapshot));
        let shared = Shared {
            index: RwLock::new(index),
            snapshots,
            proxies: Proxies::default(),
            metrics,
            registry,
            authority,
            trust_domain,
            publishing: tokio::sync::Mutex::new(()),
            push_slots: Arc::new(tokio::sync::Semaphore::new(ads::push_concurrency())),
        };
        Ok(Control { shared: Arc::new(shared) })
    }

    /// Serves gRPC on `grpc` and monitoring on `monitoring`, and follows `source`, until `shutdown` resolves (or
    /// this future is dropped); then every connection is closed, so sidecars notice at once and reconnect.
    pub async fn serve(
        &self,
        grpc: TcpListener,
        monitoring: Option<TcpListener>,
        source: impl Source + 'static,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), String> {
        let tls = Arc::new(arc_swap::ArcSwap::new(server::serving_config(&self.shared)?));
        // Each ends with this future, also when it is dropped.
        let _renew = AbortOnDrop(tokio::spawn(renew_serving(Arc::clone(&self.shared), Arc::clone(&tls))));
        let _follow = AbortOnDrop(tokio::spawn(follow(Arc::clone(&self.shared), source)));
        let _monitor =
            monitoring.map(|l| AbortOnDrop(tokio::spawn(server::serve_monitoring(l, Arc::clone(&self.shared)))));
        // Cancelled when this future ends or is dropped: every connection then fails, and its streams with it.
        let stop = tokio_util::sync::CancellationToken::new();
        let _stop_on_exit = stop.clone().drop_guard();
        let incoming = server::accept_tls(grpc, tls, stop.clone());
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(ads::Ads { shared: Arc::clone(&self.shared) })
            .add_service(CertificateServiceServer::new(certs::Certs { shared: Arc::clone(&self.shared) }))
            .serve_with_incoming_shutdown(incoming, async move {
                shutdown.await;
                stop.cancel();
            })
            .await
            .map_err(|e| format!("serving gRPC: {e}"))
    }

    /// Applies a new version of the cluster and publishes the resources it changed; returns the generation that
    /// carries it (the current one when no object changed).
    pub async fn apply(shared: &Arc<Shared>, version: Version) -> Result<u64, String> {
        Ok(apply_version(shared, version).await?.generation)
    }
}

/// How a version was applied (logged, and counted in `podmesh_control_updates`).
#[derive(Debug, Clone, Copy)]
struct Applied {
    generation: u64,
    /// In place (`Index::update`), or by re-indexing; `None` when no object changed.
    in_place: Option<bool>,
    took: Duration,
}

async fn apply_version(shared: &Arc<Shared>, version: Version) -> Result<Applied, String> {
    let _publishing = shared.publishing.lock().await;
    apply_off_runtime(shared, version).await
}

/// `apply_now` on a blocking thread (the caller holds `Shared::publishing`).
async fn apply_off_runtime(shared: &Arc<Shared>, version: Version) -> Result<Applied, String> {
    let worker = Arc::clone(shared);
    let start = std::time::Instant::now();
    let (generation, in_place) = tokio::task::spawn_blocking(move || apply_now(&worker, version))
        .await
        .map_err(|e| format!("indexing failed: {e}"))?;
    if let Some(in_place) = in_place {
        shared.metrics.updated(in_place);
    }
    Ok(Applied { generation, in_place, took: start.elapsed() })
}

/// Applies `version` (the caller holds `Shared::publishing`). Every kind of object but the MeshConfig is updated
/// in the index in place, and only the resources it reaches are re-encoded; a MeshConfig change re-indexes (see
/// `Index::updates_in_place`). What is left to free (a whole version's objects, an old index) is freed on a
/// thread of its own.
fn apply_now(shared: &Shared, version: Version) -> (u64, Option<bool>) {
    let Version { change, cause } = version;
    let (mut objects, changed, whole) = match change {
        Change::Whole(cluster) => {
            let changed = shared.index.read().cluster().changes(&cluster);
            (cluster, changed, true)
        }
        Change::Objects { objects, mut changed } => {
            // Each object once: a second mention would find it already moved out of `objects`, and delete it.
            changed.sort();
            changed.dedup();
            (objects, changed, false)
        }
    };
    let prev = shared.current();
    if changed.is_empty() {
        return (prev.generation, None);
    }
    let anchors = shared.authority.trust_anchors();
    let mut index = shared.index.write();
    if let Some(impact) = index.update(&mut objects, &changed) {
        // Streams may read the index again while the resources are encoded.
        let index = parking_lot::RwLockWriteGuard::downgrade(index);
        let next = Snapshot::next(Some(&prev), &index, Some(&impact), anchors, cause);
        drop(index);
        let generation = publish(shared, next);
        free_later(objects);
        return (generation, Some(true));
    }
    // A re-index (the MeshConfig changed: every name and identity is made from it). The old index's relations
    // are dropped before the new ones are built, so the control plane never holds two indexes (at 100,000 pods
    // that would be over 1 GiB). Until it is done (seconds at that scale) new streams and certificate requests
    // wait for the index; every sidecar keeps serving with the config it has.
    let old = std::mem::replace(&mut *index, Index::new(Cluster::default()));
    let cluster = if whole {
        free_later(old);
        objects
    } else {
        let mut cluster = old.into_cluster();
        cluster.apply_changes(&mut objects, &changed);
        cluster
    };
    *index = Index::new(cluster);
    let index = parking_lot::RwLockWriteGuard::downgrade(index);
    let next = Snapshot::next(Some(&prev), &index, None, anchors, cause);
    drop(index);
    (publish(shared, next), Some(false))
}

/// Frees a large value (a whole version's objects, an old index: up to a few hundred milliseconds for 100,000
/// pods) on a thread of its own, so the next version need not wait for it.
fn free_later<T: Send + 'static>(value: T) {
    // When no thread can be started, the closure, and the value with it, is dropped here instead.
    let _ = std::thread::Builder::new().name("podmesh-free".into()).spawn(move || drop(value));
}

/// A task that ends when this is dropped.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Control {
    /// A pod's readiness changed (its readiness probe, as the runtime reports it): applied as a change of that
    /// one Pod, which updates only the clusters that list it. Returns the generation that carries it.
    pub async fn set_pod_ready(shared: &Arc<Shared>, pod: &ObjectKey, ready: bool) -> Result<u64, String> {
        // Held from reading the pod to publishing, so no other change to it comes in between.
        let _publishing = shared.publishing.lock().await;
        let mut objects = Cluster::default();
        {
            let index = shared.index.read();
            let p = index.pod(pod).ok_or_else(|| format!("no pod {pod} in the mesh's manifests"))?;
            if p.ready == ready {
                return Ok(shared.current().generation);
            }
            let mut p = p.clone();
            p.ready = ready;
            objects.pods.insert(pod.clone(), p);
        }
        let state = if ready { "ready" } else { "not ready" };
        let change = Change::Objects { objects, changed: vec![ObjectRef::new(Kind::Pod, pod.clone())] };
        Ok(apply_off_runtime(shared, Version { change, cause: format!("{pod} {state}") }).await?.generation)
    }
}

/// Makes `next` the version every stream follows (the caller holds `Shared::publishing`); returns its generation.
fn publish(shared: &Shared, next: Snapshot) -> u64 {
    let generation = next.generation;
    shared.metrics.generation.set(i64::try_from(generation).unwrap_or(i64::MAX));
    shared.snapshots.send_replace(Arc::new(next));
    generation
}

async fn follow(shared: Arc<Shared>, mut source: impl Source) {
    while let Some(version) = source.next().await {
        let result = match version {
            Ok(v) => {
                let cause = v.cause.clone();
                apply_version(&shared, v).await.map(|a| {
                    let how = match a.in_place {
                        Some(true) => "updated in place",
                        Some(false) => "re-indexed",
                        None => "no object changed",
                    };
                    format!("generation {} ({how} in {} ms): {cause}", a.generation, a.took.as_millis())
                })
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(msg) => eprintln!("podmesh control: serving {msg}"),
            Err(e) => {
                shared.metrics.config_errors.inc();
                eprintln!("podmesh control: keeping generation {}: {e}", shared.current().generation);
            }
        }
    }
}

/// Renews the control plane's own certificate at half its lifetime.
async fn renew_serving(shared: Arc<Shared>, tls: Arc<arc_swap::ArcSwap<rustls::ServerConfig>>) {
    loop {
        tokio::time::sleep(shared.authority.default_ttl / 2).await;
        match server::serving_config(&shared) {
            Ok(c) => tls.store(c),
            Err(e) => eprintln!("podmesh control: renewing its certificate: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn control() -> Control {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        let cluster = podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap().cluster;
        let authority = Authority::ephemeral("cluster.local", Duration::from_secs(3600), b"lib test key").unwrap();
        Control::new(cluster, "start".into(), authority).unwrap()
    }

    /// A watch event that names an object twice applies it once (the second mention must not delete it).
    #[tokio::test]
    async fn an_object_named_twice_is_applied_once_and_each_version_counts_by_how_it_was_applied() {
        let control = control();
        let web = control.shared.index.read().cluster().pods.keys().find(|k| k.name.starts_with("web-")).cloned();
        let web = web.unwrap();
        let mut pod = control.shared.index.read().pod(&web).unwrap().clone();
        pod.ready = false;
        let mut objects = Cluster::default();
        objects.pods.insert(web.clone(), pod);
        let named = ObjectRef::new(Kind::Pod, web.clone());
        let change = Change::Objects { objects, changed: vec![named.clone(), named] };
        let generation = Control::apply(&control.shared, Version { change, cause: "twice".into() }).await.unwrap();
        assert_eq!(generation, 2);
        assert_eq!(control.shared.index.read().pod(&web).map(|p| p.ready), Some(false));
        // Setting the readiness it already has publishes nothing.
        assert_eq!(Control::set_pod_ready(&control.shared, &web, false).await.unwrap(), 2);
        assert_eq!(Control::set_pod_ready(&control.shared, &web, true).await.unwrap(), 3);
        // A policy is applied in place too; a MeshConfig change re-indexes. Each version counts once, by how it
        // was applied.
        let key = ObjectKey::new("shop", "strict");
        let mut objects = Cluster::default();
        let pa = podmesh_model::PeerAuthentication {
            key: key.clone(),
            selector: None,
            mode: Some(podmesh_model::MtlsMode::Strict),
            port_level: Default::default(),
            origin: None,
        };
        objects.peer_authentications.insert(key.clone(), pa);
        let change = Change::Objects { objects, changed: vec![ObjectRef::new(Kind::PeerAuthentication, key)] };
        assert_eq!(Control::apply(&control.shared, Version { change, cause: "policy".into() }).await.unwrap(), 4);
        let mut objects = Cluster { mesh: control.shared.index.read().cluster().mesh.clone(), ..Cluster::default() };
        objects.mesh.outbound_traffic_policy = match objects.mesh.outbound_traffic_policy {
            podmesh_model::OutboundPolicy::AllowAny => podmesh_model::OutboundPolicy::RegistryOnly,
            podmesh_model::OutboundPolicy::RegistryOnly => podmesh_model::OutboundPolicy::AllowAny,
        };
        let mesh = ObjectRef::new(Kind::MeshConfig, ObjectKey::new("", "mesh"));
        let change = Change::Objects { objects, changed: vec![mesh] };
        assert_eq!(Control::apply(&control.shared, Version { change, cause: "mesh".into() }).await.unwrap(), 5);
        let updates =
            |how: &str| control.shared.metrics.updates.get_or_create(&status::HowLabel { how: how.into() }).get();
        assert_eq!((updates("in_place"), updates("reindex")), (3, 1));
        assert_eq!(control.shared.index.read().cluster().peer_authentications.len(), 1);
    }
}
