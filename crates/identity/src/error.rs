use std::path::PathBuf;
use std::time::Duration;

use podmesh_compute::Identity;

/// Everything that can go wrong in this crate. The messages are written for the operator who has to fix the input.
///
/// Each message is self-contained (it includes its cause) because the proxy logs errors with `Display` only;
/// for the same reason causes are not also exposed through `source()`, which would print them twice in a chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("cannot read {path}: {cause}")]
    Read { path: PathBuf, cause: std::io::Error },

    /// An error about the content of one file; the file is named so the operator knows which one to replace.
    #[error("{path}: {cause}")]
    File { path: PathBuf, cause: Box<Error> },

    #[error("the {what} is not valid PEM ({cause}); expected PEM text with `-----BEGIN ...-----` blocks")]
    Pem { what: &'static str, cause: rustls_pki_types::pem::Error },

    #[error("the {what} holds no `-----BEGIN CERTIFICATE-----` block")]
    NoCertificate { what: &'static str },

    #[error("the {what} holds a certificate that cannot be parsed as X.509 ({reason})")]
    BadCertificate { what: &'static str, reason: String },

    #[error("the private key does not belong to the {what}; pass the key that was generated with that certificate")]
    KeyMismatch { what: &'static str },

    #[error("the private key cannot be used ({cause}); expected an ECDSA, Ed25519 or RSA key in PEM")]
    UnusableKey { cause: rustls::Error },

    #[error("the CA {reason}")]
    InvalidCa { reason: String },

    #[error("the CA private key cannot be used ({cause}); expected a PKCS#8 PEM key such as `Ca::key_pem` writes")]
    CaKey { cause: rcgen::Error },

    #[error("the certificate has no URI SAN; a mesh certificate must carry exactly one spiffe:// URI SAN")]
    NoUriSan,

    #[error(
        "the certificate has {count} URI SANs ({uris}); a mesh certificate must carry exactly one spiffe:// URI SAN"
    )]
    ManyUriSans { count: usize, uris: String },

    #[error(
        "`{uri}` is not a podmesh SPIFFE ID ({reason}); expected spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
    )]
    InvalidSpiffeId { uri: String, reason: &'static str },

    #[error("`{trust_domain}` is not a valid SPIFFE trust domain; use lowercase letters, digits, `.`, `-` and `_`")]
    InvalidTrustDomain { trust_domain: String },

    #[error("a server certificate needs at least one DNS name")]
    NoDnsName,

    #[error(
        "`{name}` is not a valid DNS name for a certificate; use letters, digits, `-` and `.` (no wildcard, IP address or trailing dot)"
    )]
    InvalidDnsName { name: String },

    #[error("a certificate lifetime of {ttl:?} is out of range; certificates cannot expire after the year 9999")]
    TtlOutOfRange { ttl: Duration },

    #[error("the CSR cannot be parsed ({cause}); expected a PEM `CERTIFICATE REQUEST` such as `new_csr` produces")]
    CsrParse { cause: rcgen::Error },

    #[error("the CSR signature does not verify: it was altered after signing; have the workload send a new CSR")]
    CsrSignature,

    #[error("cannot generate a key or certificate: {cause}")]
    Generate { cause: rcgen::Error },

    #[error("the peer presented no certificate")]
    NoPeerCertificate,

    /// Returned (inside a `rustls::Error`) by the client verifier; both identities are in the text because the
    /// proxy logs it and the operator must see which side is misconfigured.
    #[error("the server presented identity {presented} but {expected} was expected")]
    IdentityMismatch { expected: Identity, presented: Identity },

    #[error("the trust anchors cannot verify client certificates: {cause}")]
    ClientVerifier { cause: rustls::server::VerifierBuilderError },

    #[error("cannot build the TLS config: {cause}")]
    Tls { cause: rustls::Error },
}

impl Error {
    pub(crate) fn in_file(self, path: &std::path::Path) -> Error {
        Error::File { path: path.to_path_buf(), cause: Box::new(self) }
    }
}
