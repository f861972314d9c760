//! # podmesh-runtime
//!
//! The embedded local cluster's runtime: it runs the pods of a set of manifests on one machine, each pod in its own
//! network namespace. Its first parts: the cluster DNS ([`dns`]), which answers the cluster's service and pod names
//! the way Kubernetes' cluster DNS does; a container's environment and command line ([`env`]), made the way the
//! kubelet makes them; and the pod network ([`net`]): a bridge, and a network namespace per pod.

pub mod dns;
pub mod env;
pub mod nat;
pub mod net;
pub mod node;
pub mod prereq;
pub mod probe;
pub mod process;
pub mod store;
#[cfg(test)]
mod testdir;
