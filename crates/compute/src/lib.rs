//! # podmesh-compute
//!
//! The second stage of the pure core (`model` → **compute** → `route`): from a [`podmesh_model::Cluster`] to the
//! config of one workload's sidecar ([`ProxyConfig`]), covering R1–R5 of the routing contract — the protocol of
//! each port, the hostnames of each Service, outbound listeners and per-port route tables (with VirtualService
//! matches and weighted, subset-aware destinations), endpoints with readiness and expected identity, the direct
//! pod-IP table, and inbound declared ports with accepted hosts, headless fallback and mTLS mode.
//!
//! [`Index`] does the work once per snapshot; configs are then cheap to assemble, and [`Index::impact`] says which
//! parts of which configs a change to one object can touch. No I/O.

pub mod check;
pub mod config;
mod fxmap;
mod index;
mod mtls;
pub mod names;
pub mod protocol;

pub use config::*;
pub use index::{ComputeError, Impact, Index, ProtocolConflict, SrvRecord};
pub use protocol::{Protocol, ProtocolFrom};
