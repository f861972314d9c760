//! # podmesh-testkit
//!
//! Test support for podmesh. Its centre is [`echo`], the echo workload that every end-to-end test and example runs
//! as its application: each pod runs one, and a test tells which pod served a request from its answer. It behaves
//! like an ordinary, well-behaved server (HTTP/1.1, h2c, upgrades, trailers, 100-continue, raw TCP), so a proxy put
//! in front of it can be tested for transparency.
//!
//! More helpers (a test CA, in-process meshes) will join it, each in its own module.

pub mod echo;
pub mod json_patch;
pub mod kube_api;
pub mod synthetic;

pub use echo::{Echo, Reply};
