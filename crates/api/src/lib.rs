//! podmesh's control-plane API (`proto/podmesh/v1/podmesh.proto`): the mesh CA's signing service, and the
//! resources the control plane streams to sidecars over Envoy's delta xDS transport. A sidecar's
//! [`ProxyConfig`] travels as one [`Kind::Workload`] resource (its own) plus the shared outbound resources every
//! sidecar holds (listeners, route tables, clusters, direct pods), so a change sends only the pieces it touched.
//! Each body is a typed protobuf message, converted to and from the compute type it carries by [`typed`]
//! ([`encode`] cannot fail; [`decode`] is strict and names the field it refuses). [`Parts`] is the sidecar's side:
//! resources in, a whole config out.
//!
//! Sits between `compute` (whose types the resources carry) and both `control` and `proxy`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use podmesh_compute::{ClusterName, Inbound, Listener, Outbound, ProxyConfig, RouteTable, Upstream, WorkloadInfo};
use podmesh_model::{MeshConfig, ServicePort};
use prost::Message;

pub mod typed;
pub use typed::{FieldError, Resource};

/// The generated protobuf messages and the CA service's client and server.
#[allow(missing_debug_implementations, clippy::all, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod pb {
    tonic::include_proto!("podmesh.v1");
}

/// Envoy's discovery messages and the ADS service (from envoy-types: generated ahead of time, no protoc).
pub mod xds {
    pub use envoy_types::pb::envoy::config::core::v3::Node;
    pub use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    pub use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
        AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
    };
    pub use envoy_types::pb::envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
    };
    pub use envoy_types::pb::google::protobuf::Any;
    pub use envoy_types::pb::google::rpc::Status as RpcStatus;
}

/// The resource types, in the order a push sends them: what is referred to before what refers to it (clusters
/// and pods before the route tables and listeners that name them), so a sidecar never holds a route to a
/// cluster it has not been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    TrustBundle,
    Cluster,
    DirectPod,
    Workload,
    RouteTable,
    Listener,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::TrustBundle, Kind::Cluster, Kind::DirectPod, Kind::Workload, Kind::RouteTable, Kind::Listener];

    pub fn type_url(self) -> &'static str {
        match self {
            Kind::TrustBundle => "type.googleapis.com/podmesh.v1.TrustBundle",
            Kind::Cluster => "type.googleapis.com/podmesh.v1.Cluster",
            Kind::DirectPod => "type.googleapis.com/podmesh.v1.DirectPod",
            Kind::Workload => "type.googleapis.com/podmesh.v1.Workload",
            Kind::RouteTable => "type.googleapis.com/podmesh.v1.RouteTable",
            Kind::Listener => "type.googleapis.com/podmesh.v1.Listener",
        }
    }

    pub fn from_type_url(url: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.type_url() == url)
    }

    /// Short name, for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::TrustBundle => "trust_bundle",
            Kind::Cluster => "cluster",
            Kind::DirectPod => "direct_pod",
            Kind::Workload => "workload",
            Kind::RouteTable => "route_table",
            Kind::Listener => "listener",
        }
    }

    /// Whether every sidecar holds every resource of this kind (a wildcard subscription); a Workload is each
    /// sidecar's own.
    pub fn is_shared(self) -> bool {
        self != Kind::Workload
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The requests that open a sidecar's xDS stream: one subscription per kind, in push order (wildcard for the
/// shared kinds, its own pod for the Workload), the first naming the pod in `node.id`, each with the versions
/// `held` says the sidecar holds (after a reconnect).
pub fn subscriptions(
    pod: &str,
    mut held: impl FnMut(Kind) -> std::collections::HashMap<String, String>,
) -> Vec<xds::DeltaDiscoveryRequest> {
    Kind::ALL
        .into_iter()
        .enumerate()
        .map(|(i, kind)| xds::DeltaDiscoveryRequest {
            node: (i == 0).then(|| xds::Node { id: pod.to_string(), ..Default::default() }),
            type_url: kind.type_url().to_string(),
            resource_names_subscribe: if kind.is_shared() { vec![] } else { vec![pod.to_string()] },
            initial_resource_versions: held(kind),
            ..Default::default()
        })
        .collect()
}

/// The name of the single trust bundle resource.
pub const TRUST_BUNDLE: &str = "roots";

/// The body of a [`Kind::Workload`] resource: everything of a config that is this sidecar's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadPart {
    pub workload: WorkloadInfo,
    pub mesh: MeshConfig,
    pub inbound: Inbound,
}

/// Why a resource could not be used. The sidecar NACKs with this text and keeps its last good config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

/// Encodes one resource: its typed protobuf message, packed in an `Any` of its kind's type URL.
pub fn encode<R: Resource>(body: &R) -> xds::Any {
    xds::Any { type_url: R::KIND.type_url().to_string(), value: body.to_message().encode_to_vec() }
}

/// Decodes one resource of `R`'s kind named `name`, strictly: the error names the resource and, when the message
/// is well-formed protobuf but not a valid body, the field (`cluster outbound|80||web.shop.svc.cluster.local:
/// endpoints[3].address: 5 bytes is not an IPv4 or IPv6 address (4 or 16 bytes)`).
pub fn decode<R: Resource>(name: &str, any: &xds::Any) -> Result<R, DecodeError> {
    let kind = R::KIND;
    let err = |what: String| DecodeError(format!("{kind} {name}: {what}"));
    if any.type_url != kind.type_url() {
        return Err(err(format!("carries {}, expected {}", any.type_url, kind.type_url())));
    }
    let message =
        R::Message::decode(&any.value[..]).map_err(|e| err(format!("not a protobuf message of its type: {e}")))?;
    R::from_message(message).map_err(|e| err(e.to_string()))
}

pub fn encode_trust_bundle(roots_pem: Vec<String>) -> xds::Any {
    xds::Any { type_url: Kind::TrustBundle.type_url().into(), value: pb::TrustBundle { roots_pem }.encode_to_vec() }
}

/// A whole config as named resources, per kind (what the control plane sends a sidecar for `config`).
pub fn split(config: &ProxyConfig) -> Vec<(Kind, String, xds::Any)> {
    let part =
        WorkloadPart { workload: config.workload.clone(), mesh: config.mesh.clone(), inbound: config.inbound.clone() };
    let mut out = vec![(Kind::Workload, WorkloadPart::name(&config.workload.pod), encode(&part))];
    out.extend(outbound_resources(&config.outbound));
    out
}

/// The shared resources of an outbound table.
pub fn outbound_resources(o: &Outbound) -> Vec<(Kind, String, xds::Any)> {
    fn named<R: Resource>(map: &BTreeMap<R::Key, R>) -> impl Iterator<Item = (Kind, String, xds::Any)> + '_ {
        map.iter().map(|(k, v)| (R::KIND, R::name(k), encode(v)))
    }
    named(&o.clusters).chain(named(&o.pods)).chain(named(&o.routes)).chain(named(&o.listeners)).collect()
}

/// A sidecar's resources as received, and the config they make together. Every change is checked first
/// ([`Parts::decode`]): a resource that does not decode leaves everything as it was.
#[derive(Debug, Default, Clone)]
pub struct Parts {
    workload: Option<WorkloadPart>,
    outbound: Outbound,
    trust_anchors: Option<Vec<String>>,
}

/// One resource change of a delta response.
#[derive(Debug)]
pub enum Change<'a> {
    Put { name: &'a str, body: &'a xds::Any },
    Remove { name: &'a str },
}

/// One response's changes, decoded and checked but not yet applied: [`Parts::commit`] cannot fail, so a
/// response is applied whole or, when [`Parts::decode`] refuses it, not at all, without copying what is held.
#[derive(Debug)]
pub struct Decoded {
    ops: Vec<Op>,
}

#[derive(Debug)]
enum Op {
    Workload(Option<Box<WorkloadPart>>),
    TrustBundle(Option<Vec<String>>),
    Cluster(ClusterName, Option<Upstream>),
    DirectPod(IpAddr, Option<podmesh_compute::DirectPod>),
    RouteTable(ServicePort, Option<RouteTable>),
    Listener(SocketAddr, Option<Listener>),
}

impl Decoded {
    /// The Workload this response installs, if it installs one.
    pub fn workload(&self) -> Option<&WorkloadPart> {
        self.ops.iter().rev().find_map(|op| match op {
            Op::Workload(w) => w.as_deref(),
            _ => None,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Parts {
    /// Applies the changes of one response of `kind`, all or none.
    pub fn apply<'a>(&mut self, kind: Kind, changes: impl IntoIterator<Item = Change<'a>>) -> Result<(), DecodeError> {
        let decoded = Self::decode(kind, changes)?;
        self.commit(decoded);
        Ok(())
    }

    /// Decodes the changes of one response of `kind`; the first that does not decode refuses the response.
    pub fn decode<'a>(kind: Kind, changes: impl IntoIterator<Item = Change<'a>>) -> Result<Decoded, DecodeError> {
        let mut ops = Vec::new();
        for change in changes {
            ops.push(match change {
                Change::Put { name, body } => Self::decode_put(kind, name, body)?,
                Change::Remove { name } => Self::decode_remove(kind, name)?,
            });
        }
        Ok(Decoded { ops })
    }

    /// Applies decoded changes.
    pub fn commit(&mut self, decoded: Decoded) {
        let o = &mut self.outbound;
        for op in decoded.ops {
            match op {
                Op::Workload(w) => self.workload = w.map(|w| *w),
                Op::TrustBundle(t) => self.trust_anchors = t,
                Op::Cluster(k, v) => put_or_remove(&mut o.clusters, k, v),
                Op::DirectPod(k, v) => put_or_remove(&mut o.pods, k, v),
                Op::RouteTable(k, v) => put_or_remove(&mut o.routes, k, v),
                Op::Listener(k, v) => put_or_remove(&mut o.listeners, k, v),
            }
        }
    }

    fn decode_put(kind: Kind, name: &str, body: &xds::Any) -> Result<Op, DecodeError> {
        let bad_name = || DecodeError(format!("{kind} {name:?}: not a valid resource name"));
        Ok(match kind {
            Kind::Workload => Op::Workload(Some(Box::new(decode(name, body)?))),
            Kind::TrustBundle => {
                if body.type_url != kind.type_url() {
                    return Err(DecodeError(format!("{kind} {name}: carries {}", body.type_url)));
                }
                let b = pb::TrustBundle::decode(&body.value[..])
                    .map_err(|e| DecodeError(format!("{kind} {name}: not a protobuf message of its type: {e}")))?;
                Op::TrustBundle(Some(b.roots_pem))
            }
            Kind::Cluster => Op::Cluster(ClusterName(name.to_string()), Some(decode(name, body)?)),
            Kind::DirectPod => {
                let ip: IpAddr = name.parse().map_err(|_| bad_name())?;
                Op::DirectPod(ip, Some(decode(name, body)?))
            }
            Kind::RouteTable => {
                let port: u16 = name.parse().map_err(|_| bad_name())?;
                Op::RouteTable(ServicePort(port), Some(decode(name, body)?))
            }
            Kind::Listener => {
                let addr: SocketAddr = name.parse().map_err(|_| bad_name())?;
                Op::Listener(addr, Some(decode(name, body)?))
            }
        })
    }

    fn decode_remove(kind: Kind, name: &str) -> Result<Op, DecodeError> {
        let bad_name = || DecodeError(format!("{kind} {name:?}: not a valid resource name"));
        Ok(match kind {
            Kind::Workload => Op::Workload(None),
            Kind::TrustBundle => Op::TrustBundle(None),
            Kind::Cluster => Op::Cluster(ClusterName(name.to_string()), None),
            Kind::DirectPod => Op::DirectPod(name.parse().map_err(|_| bad_name())?, None),
            Kind::RouteTable => Op::RouteTable(ServicePort(name.parse().map_err(|_| bad_name())?), None),
            Kind::Listener => Op::Listener(name.parse().map_err(|_| bad_name())?, None),
        })
    }

    /// The config these resources make, once this sidecar's Workload has arrived.
    pub fn config(&self) -> Option<ProxyConfig> {
        let w = self.workload.as_ref()?;
        Some(ProxyConfig {
            workload: w.workload.clone(),
            mesh: w.mesh.clone(),
            inbound: w.inbound.clone(),
            outbound: Arc::new(self.outbound.clone()),
        })
    }

    /// The trust anchors, once sent.
    pub fn trust_anchors(&self) -> Option<&[String]> {
        self.trust_anchors.as_deref()
    }
}

fn put_or_remove<K: Ord, V>(map: &mut BTreeMap<K, V>, key: K, value: Option<V>) {
    match value {
        Some(v) => {
            map.insert(key, v);
        }
        None => {
            map.remove(&key);
        }
    }
}

/// The resources of every kind, by name: what `split` gives, grouped (for tests and tools).
pub fn by_kind(resources: Vec<(Kind, String, xds::Any)>) -> BTreeMap<Kind, BTreeMap<String, xds::Any>> {
    let mut m: BTreeMap<Kind, BTreeMap<String, xds::Any>> = BTreeMap::new();
    for (k, n, a) in resources {
        m.entry(k).or_default().insert(n, a);
    }
    m
}

#[cfg(test)]
mod tests;
