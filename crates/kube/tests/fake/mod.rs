//! The fake Kubernetes API server (`podmesh_testkit::kube_api`), and a kube-rs client of it.
#![allow(dead_code, unused_imports, clippy::unwrap_used)]

pub use podmesh_testkit::kube_api::*;

/// A client of `api` (plain HTTP, no credentials).
pub fn client(api: &FakeApi) -> kube::Client {
    kube::Client::try_from(kube::Config::new(api.url().parse().unwrap())).unwrap()
}
