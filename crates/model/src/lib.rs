//! # podmesh-model
//!
//! Kubernetes and Istio objects in, one typed and validated [`Cluster`] snapshot out.
//!
//! This is the first stage of podmesh's pure core (`model` → `compute` → `route`). It reads multi-document YAML
//! (or JSON) from files, directories and stdin ([`load`]), understands the subset of Namespace, Service, Pod,
//! Deployment, StatefulSet, EndpointSlice, VirtualService, DestinationRule and PeerAuthentication that the routing
//! contract needs, expands workloads into the pods their controllers would create, and assigns deterministic
//! addresses to pods and Services that have none. Every malformed document is a [`Diagnostic`] naming the file,
//! the document and the field; loading never panics.
//!
//! It does no I/O beyond reading the files it is given.

mod build;
pub mod cluster;
pub mod diag;
pub mod keys;
pub mod load;
pub mod mesh;
pub mod net;
mod wire;
pub mod yaml;

pub use build::{
    INJECT_ANNOTATIONS, MAX_REPLICAS, NAMESPACE_INJECT_LABEL, is_dns_label, is_dns_subdomain, is_port_name,
};
pub use cluster::*;
pub use diag::{Diagnostic, LoadErrors, Origin, Severity};
pub use keys::{Kind, ObjectKey, ObjectRef};
pub use load::{LoadOptions, Loaded, Source, load, load_str, load_with, object_fingerprints, objects};
pub use mesh::{MeshConfig, OutboundPolicy};
pub use net::{ServicePort, TargetPort};
