//! One version of what the control plane serves: every shared resource encoded once for all sidecars, and what
//! changed since the version before. A new version re-encodes only the resources its change can reach (the
//! index's `Impact`) and records which of them changed, so each sidecar's stream sends exactly those.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use podmesh_api::xds::{Any, DeltaDiscoveryResponse};
use podmesh_api::{Kind, Resource, WorkloadPart, encode, encode_trust_bundle};
use podmesh_compute::{ComputeError, DirectPod, Impact, Index, RouteTable, Upstream};
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

/// Resources of one kind by name. A persistent map: versions share all but the entries a change touched, so a
/// new version of 100,000 direct-pod entries costs the entries changed, not a copy, and an old one is freed as
/// cheaply.
pub type Named = imbl::OrdMap<String, Arc<Encoded>>;

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
    /// Every shared resource (all kinds but Workload), by kind and name; unchanged kinds are shared between
    /// versions.
    pub shared: BTreeMap<Kind, Arc<Named>>,
    /// What this version changed from the one before it (`generation - 1`), per kind.
    pub changed: BTreeMap<Kind, Diff>,
    /// The pods whose Workload this version may have changed; `None`: any pod's (a re-index).
    pub inbound: Option<Arc<BTreeSet<ObjectKey>>>,
    /// What made this version: the files or objects that changed. Named in NACK reports.
    pub cause: String,
    /// When this version was made: push latency is measured from here to each sidecar's ACK.
    pub created: Instant,
}

impl Snapshot {
    /// The version after `prev` (or the first) for an index that a change reaching `impact` brought about:
    /// only the resources `impact` names are encoded and compared (all of them without one: a re-index), and a
    /// resource whose bytes did not change keeps its encoding and is not sent.
    pub fn next(
        prev: Option<&Snapshot>,
        index: &Index,
        impact: Option<&Impact>,
        trust_anchors: &[String],
        cause: String,
    ) -> Snapshot {
        let out = index.outbound();
        let old = |k: Kind| prev.and_then(|p| p.shared.get(&k)).map_or_else(Arc::default, Arc::clone);
        let mut shared = BTreeMap::new();
        let mut changed = BTreeMap::new();
        let mut record = |kind: Kind, (named, diff): (Arc<Named>, Diff)| {
            shared.insert(kind, named);
            changed.insert(kind, diff);
        };
        match impact {
            None => {
                record(Kind::Cluster, recheck(&old(Kind::Cluster), out.clusters.iter(), None));
                record(Kind::DirectPod, recheck(&old(Kind::DirectPod), out.pods.iter(), None));
                record(Kind::RouteTable, recheck(&old(Kind::RouteTable), out.routes.iter(), None));
                record(Kind::Listener, recheck(&old(Kind::Listener), out.listeners.iter(), None));
            }
            Some(imp) => {
                let clusters = old(Kind::Cluster);
                let checked = match &imp.clusters {
                    // The clusters the update made again, by name.
                    Some(names) => {
                        let gone = names.iter().map(<Upstream as Resource>::name).collect();
                        recheck(&clusters, names.iter().filter_map(|n| out.clusters.get_key_value(n)), Some(gone))
                    }
                    // An impact that does not name its clusters (not an update's): every one is checked.
                    None => recheck(&clusters, out.clusters.iter(), None),
                };
                record(Kind::Cluster, checked);
                // Listeners are named `ip:port`: those on the impact's ClusterIPs.
                let ips = &imp.listener_ips;
                let listeners = old(Kind::Listener);
                let on = |name: &str| name.parse::<std::net::SocketAddr>().is_ok_and(|a| ips.contains(&a.ip()));
                let gone = if ips.is_empty() { vec![] } else { listeners.keys().filter(|n| on(n)).cloned().collect() };
                let now = out.listeners.iter().filter(|(a, _)| ips.contains(&a.ip()));
                record(Kind::Listener, recheck(&listeners, now, Some(gone)));
                let tables = old(Kind::RouteTable);
                let gone = imp.route_tables.iter().map(<RouteTable as Resource>::name).collect();
                let now = imp.route_tables.iter().filter_map(|p| out.routes.get_key_value(p));
                record(Kind::RouteTable, recheck(&tables, now, Some(gone)));
                let pods = old(Kind::DirectPod);
                let gone = imp.pods.iter().map(<DirectPod as Resource>::name).collect();
                let now = imp.pods.iter().filter_map(|ip| out.pods.get_key_value(ip));
                record(Kind::DirectPod, recheck(&pods, now, Some(gone)));
            }
        }
        let bundle = Encoded::new(podmesh_api::TRUST_BUNDLE, encode_trust_bundle(trust_anchors.to_vec()));
        let bundles = old(Kind::TrustBundle);
        let diff = match bundles.get(podmesh_api::TRUST_BUNDLE) {
            Some(o) if o.version == bundle.version => (bundles, Diff::default()),
            _ => (
                Arc::new(Named::unit(podmesh_api::TRUST_BUNDLE.to_string(), bundle)),
                Diff { put: vec![podmesh_api::TRUST_BUNDLE.to_string()], removed: vec![] },
            ),
        };
        record(Kind::TrustBundle, diff);
        Snapshot {
            generation: prev.map_or(1, |p| p.generation + 1),
            shared,
            changed,
            inbound: impact.map(|i| Arc::new(i.inbound.clone())),
            cause,
            created: Instant::now(),
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

/// One sidecar's own resource: its Workload, or `None` when the pod is gone or has no sidecar.
pub fn workload(index: &Index, pod: &ObjectKey) -> Option<Arc<Encoded>> {
    match index.proxy_config(pod) {
        Ok(c) => {
            let part = WorkloadPart { workload: c.workload, mesh: c.mesh, inbound: c.inbound };
            Some(Encoded::new(&WorkloadPart::name(pod), encode(&part)))
        }
        Err(ComputeError::NoSuchPod(_) | ComputeError::NotMeshed(_)) => None,
    }
}

/// The resources of one kind after a change: `now` are the resources to check as they are now, and `gone` the
/// names to check that may have been there before (`None`: every resource is in `now`, so any other name is
/// gone). Each is encoded and
/// compared with what `old` holds by version; unchanged ones keep their encoding. `old` itself is returned when
/// nothing changed.
fn recheck<'a, V: Resource + 'a>(
    old: &Arc<Named>,
    now: impl Iterator<Item = (&'a V::Key, &'a V)>,
    gone: Option<Vec<String>>,
) -> (Arc<Named>, Diff) {
    let mut seen = BTreeSet::new();
    let mut put = Vec::new();
    for (key, value) in now {
        let name = V::name(key);
        let e = Encoded::new(&name, encode(value));
        seen.insert(name.clone());
        match old.get(&name) {
            Some(o) if o.version == e.version => {}
            _ => put.push((name, e)),
        }
    }
    let mut removed: Vec<String> = match gone {
        None => old.keys().filter(|n| !seen.contains(*n)).cloned().collect(),
        Some(names) => names.into_iter().filter(|n| old.contains_key(n) && !seen.contains(n)).collect(),
    };
    if put.is_empty() && removed.is_empty() {
        return (Arc::clone(old), Diff::default());
    }
    let mut named = (**old).clone();
    for n in &removed {
        named.remove(n);
    }
    put.sort_by(|a, b| a.0.cmp(&b.0));
    removed.sort();
    let mut diff = Diff { put: Vec::with_capacity(put.len()), removed };
    for (name, e) in put {
        diff.put.push(name.clone());
        named.insert(name, e);
    }
    (Arc::new(named), diff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use podmesh_model::Cluster;

    use super::*;

    fn quickstart() -> Cluster {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart");
        podmesh_model::load(&[podmesh_model::Source::Path(root)]).unwrap().cluster
    }

    fn versions(s: &Snapshot) -> BTreeMap<Kind, BTreeMap<String, String>> {
        s.shared.iter().map(|(k, n)| (*k, n.iter().map(|(n, e)| (n.clone(), e.version.clone())).collect())).collect()
    }

    /// Applies `edit` as an in-place update and as a re-index: both versions serve the same resources, and the
    /// update names exactly what differs from the version before.
    fn check(edit: impl Fn(&mut Cluster)) -> Snapshot {
        let cluster = quickstart();
        let mut ix = Index::new(cluster.clone());
        let first = Snapshot::next(None, &ix, None, &[], "start".into());
        let mut after = cluster;
        edit(&mut after);
        let changed = ix.cluster().changes(&after);
        let full = Snapshot::next(Some(&first), &Index::new(after.clone()), None, &[], "re-index".into());
        let imp = ix.update(&mut after, &changed).expect("an in-place change");
        let next = Snapshot::next(Some(&first), &ix, Some(&imp), &[], "update".into());
        assert_eq!(versions(&next), versions(&full));
        assert_eq!(next.changed, full.changed);
        assert_eq!(next.generation, 2);
        next
    }

    #[test]
    fn an_update_re_encodes_and_names_only_what_changed() {
        let web = |c: &Cluster| c.pods.keys().find(|k| k.name.starts_with("web-")).unwrap().clone();
        // One web pod turns not ready: its Services' clusters change; nothing else.
        let next = check(|c| {
            let pod = web(c);
            assert!(c.set_pod_ready(&pod, false));
        });
        assert_eq!(
            next.changed[&Kind::Cluster].put,
            vec![
                "outbound|7000||web.shop.svc.cluster.local".to_string(),
                "outbound|80||web.shop.svc.cluster.local".into()
            ]
        );
        for k in [Kind::Listener, Kind::RouteTable, Kind::TrustBundle, Kind::DirectPod] {
            assert!(next.changed[&k].is_empty(), "{k}: {:?}", next.changed[&k]);
        }
        // Its own Workload is the only one that may have changed.
        assert_eq!(next.inbound.as_deref().map(|s| s.len()), Some(1));

        // The pod deleted: its direct entry goes too.
        let next = check(|c| {
            let pod = web(c);
            c.pods.remove(&pod);
        });
        assert_eq!(next.changed[&Kind::DirectPod].removed.len(), 1);
        assert_eq!(next.changed[&Kind::Cluster].put.len(), 2);
        // A Service without VirtualServices edited: its listener and route tables change with it.
        let next = check(|c| {
            let echo = c.services.values_mut().find(|s| &*s.key.name == "echo").unwrap();
            echo.ports[0].port = podmesh_model::ServicePort(echo.ports[0].port.0 + 1);
        });
        assert!(!next.changed[&Kind::Listener].put.is_empty());
    }

    #[test]
    fn nothing_changed_shares_every_resource() {
        let ix = Index::new(quickstart());
        let first = Snapshot::next(None, &ix, None, &[], "start".into());
        let same = Snapshot::next(Some(&first), &Index::new(quickstart()), None, &[], "again".into());
        assert!(same.changed.values().all(Diff::is_empty), "{:?}", same.changed);
        for (k, named) in &same.shared {
            assert!(Arc::ptr_eq(named, &first.shared[k]), "{k}");
        }
    }
}
