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

use std::sync::Arc;
use std::time::Duration;

use podmesh_api::pb::certificate_service_server::CertificateServiceServer;
use podmesh_compute::Index;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use authority::{Authority, control_identity};
pub use snapshot::Snapshot;
pub use source::{FileSource, Source, Version};
pub use status::{Metrics, Proxies, ProxyStatus};

/// What every part of the control plane shares.
#[derive(Debug)]
pub struct Shared {
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
}

/// A control plane with its first version, ready to serve.
#[derive(Debug, Clone)]
pub struct Control {
    pub shared: Arc<Shared>,
}

impl Control {
    /// Indexes the first version. The trust domain is the mesh's (its MeshConfig), which the CA's identities use.
    pub fn new(first: Version, authority: Authority) -> Result<Control, String> {
        let trust_domain = first.cluster.mesh.trust_domain.clone();
        let index = Arc::new(Index::new(first.cluster));
        let snapshot = Snapshot::build(None, index, authority.trust_anchors(), first.cause);
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        metrics.generation.set(1);
        let (snapshots, _) = watch::channel(Arc::new(snapshot));
        let shared = Shared {
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

    /// Applies one version of the cluster: indexes it and publishes the resources that changed.
    pub async fn apply(shared: &Arc<Shared>, version: Version) -> Result<u64, String> {
        let index = tokio::task::spawn_blocking(move || (Arc::new(Index::new(version.cluster)), version.cause))
            .await
            .map_err(|e| format!("indexing failed: {e}"))?;
        let _publishing = shared.publishing.lock().await;
        let prev = shared.current();
        Ok(publish(shared, Snapshot::build(Some(&prev), index.0, shared.authority.trust_anchors(), index.1)))
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Control {
    /// A pod's readiness changed (its readiness probe, as the runtime reports it): the clusters that list it are
    /// recomputed from the served tables and published at once, without re-indexing (`Index::pod_readiness_patch`
    /// is exactly what a re-index would change). The source's next version, which carries readiness too,
    /// replaces the patch. Returns the generation that carries it.
    pub async fn set_pod_ready(
        shared: &Arc<Shared>,
        pod: &podmesh_model::ObjectKey,
        ready: bool,
    ) -> Result<u64, String> {
        let _publishing = shared.publishing.lock().await;
        let prev = shared.current();
        let patch = prev
            .index
            .pod_readiness_patch(prev.clusters(), pod, ready)
            .ok_or_else(|| format!("no pod {pod} in the mesh's manifests"))?;
        if patch.is_empty() {
            return Ok(prev.generation);
        }
        let state = if ready { "ready" } else { "not ready" };
        Ok(publish(shared, Snapshot::patched(&prev, patch, format!("{pod} {state}"))))
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
                Control::apply(&shared, v).await.map(|g| format!("generation {g}: {cause}"))
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
