//! # podmesh-identity
//!
//! Who a workload is, and how mesh peers prove it to each other: SPIFFE identities read from certificates, the
//! mesh CA that issues workload certificates (directly or from a CSR), and the rustls configs of mesh mTLS, which
//! check the peer's SPIFFE ID instead of a DNS name. Used by the sidecar, and later by the control plane's CA.
//!
//! Only the *ring* crypto provider is used, and it is named explicitly in every config (see
//! `shared/ecosystem.md`, "Version conflicts" trap 1).

mod ca;
mod credentials;
mod error;
mod spiffe;

pub use ca::{Ca, WorkloadCert, new_csr, new_unnamed_csr};
pub use credentials::{Credentials, anonymous_client_config};
pub use error::Error;
pub use podmesh_compute::Identity;
pub use spiffe::{parse_identity, peer_identity};
