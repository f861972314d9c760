//! # podmesh-route
//!
//! The last stage of the pure core (`model` → `compute` → **route**): the decisions of the routing contract as
//! functions over a sidecar's [`podmesh_compute::ProxyConfig`] and the facts of a connection or request.
//!
//! - [`outbound`] (R3): what the source sidecar does with a connection to `IP:port`, and with each HTTP request.
//! - [`inbound`] (R4): what the destination sidecar admits.
//! - [`reason`] (R6): reason codes, sides, rule ids, rejections with a fix hint.
//! - [`explain`]: `podmesh explain` — the same functions, run offline for both sidecars of one request, each
//!   decision recorded with its rule. The sidecar calls the same functions on its data path, so an explanation
//!   cannot drift from what the proxy does.

pub mod explain;
pub mod inbound;
pub mod outbound;
pub mod reason;
pub mod request;

pub use explain::{Explanation, Query, Target, explain};
pub use reason::{ClientSees, ReasonCode, Rejection, Rule, Side};
