//! One version of what the control plane serves: the index of the cluster, and every shared resource encoded
//! once for all sidecars. A new version re-encodes only the resources whose computed value changed and records
//! which names changed, so each sidecar's stream sends exactly those.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use podmesh_api::xds::{Any, DeltaDiscoveryResponse};
use podmesh_api::{Kind, Resource, WorkloadPart, encode, encode_trust_bundle};
use podmesh_compute::{ClusterName, ComputeError, Index, Outbound, Upstream};
use podmesh_model::ObjectKey;
use prost::Message;

/// A resource as sent: the version sidecars acknowledge (a hash of the body), and the resource encoded once for
/// every stream that sends it.
#[derive(Debug)]
pub struct Encoded {
    pub version: String,
    /// The bytes of the body (the `Any`'s value), for size accounting.
    pub body_len: usize,
    /// The resource (name, version, body) as one entry of a `DeltaDiscoveryResponse`'s `resources` field, tag and
    /// length included: a response is its header fields followed by such entries, so streams copy bytes instead
    /// of encoding the same message a thousand times ([`crate::ads::Outgoing`]).
    pub entry: Bytes,
}

impl Encoded {
    pub fn new(name: &str, body: Any) -> Arc<Encoded> {
        let mut h = std::hash::DefaultHasher::new();
        body.type_url.hash(&mut h);
        body.value.hash(&mut h);
        let version = format!("{:016x}", h.finish());
        let body_len = body.value.len();
        // A response with only this resource encodes as exactly this resource's entry: every other field is
        // empty, and proto3 omits empty fields.
        let entry = DeltaDiscoveryResponse {
            resources: vec![podmesh_api::xds::Resource {
                name: name.to_string(),
                version: version.clone(),
                resource: Some(body),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec();
        Arc::new(Encoded { version, body_len, entry: Bytes::from(entry) })
    }
}

/// Resources of one kind by name.
pub type Named = BTreeMap<String, Arc<Encoded>>;

/// Names put (new or changed) and removed between two versions of one kind.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    pub put: Vec<String>,
    pub removed: Vec<String>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.put.is_empty() && self.removed.is_empty()
    }
}

/// Compares two versions of one kind. Unchanged resources are shared between versions, so this compares pointers.
pub fn diff(old: &Named, new: &Named) -> Diff {
    let mut d = Diff::default();
    for (name, r) in new {
        if old.get(name).is_none_or(|o| !Arc::ptr_eq(o, r)) {
            d.put.push(name.clone());
        }
    }
    d.removed = old.keys().filter(|n| !new.contains_key(*n)).cloned().collect();
    d
}

#[derive(Debug)]
pub struct Snapshot {
    /// Increases by one per version served.
    pub generation: u64,
    /// The index of the version the source gave. Readiness changes published since ([`Snapshot::patched`]) are
    /// not in it: they live only in `patched`, and nothing else of a config depends on a pod's readiness.
    pub index: Arc<Index>,
    /// Clusters recomputed for readiness changes since the index was made, served instead of the index's.
    pub patched: Arc<BTreeMap<ClusterName, Upstream>>,
    /// Every shared resource (all kinds but Workload), by kind and name; unchanged kinds are shared between
    /// versions.
    pub shared: BTreeMap<Kind, Arc<Named>>,
    /// What this version changed from the one before it (`generation - 1`), per kind.
    pub changed: BTreeMap<Kind, Diff>,
    /// What made this version: the files or objects that changed. Named in NACK reports.
    pub cause: String,
    /// When this version was made: push latency is measured from here to each sidecar's ACK.
    pub created: Instant,
    /// The generation since which every Workload is as in this version: a readiness patch changes none, so a
    /// stream need not recompute its sidecar's Workload for one.
    pub workloads_since: u64,
}

impl Snapshot {
    /// The first version, or the next after `prev`: resources equal to `prev`'s are shared with it, not re-encoded.
    pub fn build(prev: Option<&Snapshot>, index: Arc<Index>, trust_anchors: &[String], cause: String) -> Snapshot {
        let empty = Outbound::default();
        let old_out: &Outbound = prev.map_or(&empty, |p| p.index.outbound());
        let old_patched = prev.map(|p| &*p.patched);
        let out = index.outbound();
        let old = |k: Kind| prev.and_then(|p| p.shared.get(&k)).map(|n| &**n);
        let mut shared = BTreeMap::new();
        // A cluster is compared with what was served: the previous version's patch if it had one for it.
        let old_clusters =
            |name: &ClusterName| old_patched.and_then(|p| p.get(name)).or_else(|| old_out.clusters.get(name));
        shared.insert(Kind::Cluster, encode_kind(&out.clusters, old_clusters, old(Kind::Cluster)));
        shared.insert(Kind::DirectPod, encode_kind(&out.pods, |k| old_out.pods.get(k), old(Kind::DirectPod)));
        shared.insert(Kind::RouteTable, encode_kind(&out.routes, |k| old_out.routes.get(k), old(Kind::RouteTable)));
        shared.insert(Kind::Listener, encode_kind(&out.listeners, |k| old_out.listeners.get(k), old(Kind::Listener)));
        let bundle = Encoded::new(podmesh_api::TRUST_BUNDLE, encode_trust_bundle(trust_anchors.to_vec()));
        let bundle = match old(Kind::TrustBundle).and_then(|o| o.get(podmesh_api::TRUST_BUNDLE)) {
            Some(o) if o.version == bundle.version => Arc::clone(o),
            _ => bundle,
        };
        shared.insert(Kind::TrustBundle, BTreeMap::from([(podmesh_api::TRUST_BUNDLE.to_string(), bundle)]));
        let none = Named::new();
        let changed: BTreeMap<Kind, Diff> =
            shared.iter().map(|(k, named)| (*k, diff(old(*k).unwrap_or(&none), named))).collect();
        // A kind that did not change keeps the previous version's map.
        let shared = shared
            .into_iter()
            .map(|(k, named)| match prev.and_then(|p| p.shared.get(&k)) {
                Some(o) if changed.get(&k).is_some_and(Diff::is_empty) => (k, Arc::clone(o)),
                _ => (k, Arc::new(named)),
            })
            .collect();
        let generation = prev.map_or(1, |p| p.generation + 1);
        Snapshot {
            generation,
            index,
            patched: Arc::default(),
            shared,
            changed,
            cause,
            created: Instant::now(),
            workloads_since: generation,
        }
    }

    /// The next version after `prev` with `patch` (clusters as recomputed for a pod's readiness change, from
    /// [`Index::pod_readiness_patch`]) applied: only those clusters are re-encoded and sent; the index stays.
    pub fn patched(prev: &Snapshot, patch: Vec<(ClusterName, Upstream)>, cause: String) -> Snapshot {
        let mut patched = (*prev.patched).clone();
        let mut clusters = prev.named(Kind::Cluster).clone();
        let mut put = Vec::new();
        for (name, up) in patch {
            let n = Upstream::name(&name);
            clusters.insert(n.clone(), Encoded::new(&n, encode(&up)));
            put.push(n);
            patched.insert(name, up);
        }
        let mut shared = prev.shared.clone();
        shared.insert(Kind::Cluster, Arc::new(clusters));
        let mut changed: BTreeMap<Kind, Diff> = shared.keys().map(|k| (*k, Diff::default())).collect();
        changed.insert(Kind::Cluster, Diff { put, removed: vec![] });
        Snapshot {
            generation: prev.generation + 1,
            index: Arc::clone(&prev.index),
            patched: Arc::new(patched),
            shared,
            changed,
            cause,
            created: Instant::now(),
            workloads_since: prev.workloads_since,
        }
    }

    /// Every cluster as served: the index's, or its readiness patch.
    pub fn clusters(&self) -> impl Iterator<Item = (&ClusterName, &Upstream)> {
        self.index.outbound().clusters.iter().map(|(n, u)| (n, self.patched.get(n).unwrap_or(u)))
    }

    /// One sidecar's own resource: its Workload, or `None` when the pod is gone or has no sidecar.
    pub fn workload(&self, pod: &ObjectKey) -> Option<Arc<Encoded>> {
        match self.index.proxy_config(pod) {
            Ok(c) => {
                let part = WorkloadPart { workload: c.workload, mesh: c.mesh, inbound: c.inbound };
                Some(Encoded::new(&WorkloadPart::name(pod), encode(&part)))
            }
            Err(ComputeError::NoSuchPod(_) | ComputeError::NotMeshed(_)) => None,
        }
    }

    pub fn empty_named() -> &'static Named {
        static EMPTY: std::sync::OnceLock<Named> = std::sync::OnceLock::new();
        EMPTY.get_or_init(Named::new)
    }

    pub fn named(&self, kind: Kind) -> &Named {
        self.shared.get(&kind).map_or(Self::empty_named(), |n| &**n)
    }
}

/// The resources of one kind: entries equal to the previous version's reuse its encoding.
fn encode_kind<'a, V: PartialEq + Resource + 'a>(
    new: &BTreeMap<V::Key, V>,
    old: impl Fn(&V::Key) -> Option<&'a V>,
    old_encoded: Option<&Named>,
) -> Named {
    let mut out = Named::new();
    for (k, v) in new {
        let n = V::name(k);
        let reuse = old(k).filter(|o| *o == v).and_then(|_| old_encoded?.get(&n));
        let e = match reuse {
            Some(e) => Arc::clone(e),
            None => Encoded::new(&n, encode(v)),
        };
        out.insert(n, e);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn quickstart() -> podmesh_model::Cluster {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap().cluster
    }

    #[test]
    fn a_new_generation_re_encodes_and_names_only_what_changed() {
        let cluster = quickstart();
        let first = Snapshot::build(None, Arc::new(Index::new(cluster.clone())), &[], "start".into());
        // Nothing changed: nothing is named, and every resource is the same allocation.
        let same = Snapshot::build(Some(&first), Arc::new(Index::new(cluster.clone())), &[], "again".into());
        assert!(same.changed.values().all(Diff::is_empty), "{:?}", same.changed);
        assert_eq!(same.generation, 2);
        // One web pod turns not ready: its Services' clusters change, and its direct-pod entry; nothing else.
        let mut changed = cluster;
        let web = changed.pods.keys().find(|k| k.name.starts_with("web-")).unwrap().clone();
        assert!(changed.set_pod_ready(&web, false));
        let next = Snapshot::build(Some(&same), Arc::new(Index::new(changed)), &[], "web not ready".into());
        let names = |k: Kind| next.changed[&k].put.clone();
        assert_eq!(
            names(Kind::Cluster),
            vec![
                "outbound|7000||web.shop.svc.cluster.local".to_string(),
                "outbound|80||web.shop.svc.cluster.local".into()
            ]
        );
        for k in [Kind::Listener, Kind::RouteTable, Kind::TrustBundle] {
            assert!(next.changed[&k].is_empty(), "{k}: {:?}", next.changed[&k]);
        }
        assert!(next.changed.values().all(|d| d.removed.is_empty()));
        let unchanged = "outbound|80||legacy.shop.svc.cluster.local";
        assert!(Arc::ptr_eq(&same.named(Kind::Cluster)[unchanged], &next.named(Kind::Cluster)[unchanged]));
    }

    #[test]
    fn a_readiness_patch_is_what_the_next_full_version_serves_so_it_sends_nothing_more() {
        let cluster = quickstart();
        let first = Snapshot::build(None, Arc::new(Index::new(cluster.clone())), &[], "start".into());
        let web = cluster.pods.keys().find(|k| k.name.starts_with("web-")).unwrap().clone();
        // Not ready, then ready again, then not ready: each a patch on what is served.
        let mut s = first;
        let mut flipped = cluster.clone();
        for ready in [false, true, false] {
            let patch = s.index.pod_readiness_patch(s.clusters(), &web, ready).unwrap();
            assert_eq!(patch.len(), 2, "ready={ready}: both web clusters");
            s = Snapshot::patched(&s, patch, format!("web ready={ready}"));
            assert_eq!(s.changed[&Kind::Cluster].put.len(), 2);
            assert!(s.changed.iter().filter(|(k, _)| **k != Kind::Cluster).all(|(_, d)| d.is_empty()));
            flipped.set_pod_ready(&web, ready);
        }
        // The source's next version has the pod not ready too: nothing differs from what was served.
        let full = Snapshot::build(Some(&s), Arc::new(Index::new(flipped)), &[], "full".into());
        assert!(full.changed.values().all(Diff::is_empty), "{:?}", full.changed);
        assert!(full.patched.is_empty());
    }
}
