//! Reading SPIFFE identities out of strings and certificates.

use podmesh_compute::Identity;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// Parses `spiffe://<td>/ns/<ns>/sa/<sa>`. Anything else is rejected: the rest of the mesh (authorization,
/// metrics labels) reads the namespace and service account out of the identity and relies on this shape.
pub fn parse_identity(uri: &str) -> Result<Identity, Error> {
    let invalid = |reason| Error::InvalidSpiffeId { uri: uri.to_string(), reason };
    let rest = uri.strip_prefix("spiffe://").ok_or_else(|| invalid("it does not start with spiffe://"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [td, "ns", ns, "sa", sa] = parts.as_slice() else {
        return Err(invalid("its path is not /ns/<namespace>/sa/<service account>"));
    };
    if !valid_trust_domain(td) {
        return Err(invalid("the trust domain may only hold lowercase letters, digits, `.`, `-` and `_`"));
    }
    if !valid_segment(ns) || !valid_segment(sa) {
        return Err(invalid("namespace and service account may only hold letters, digits, `.`, `-` and `_`"));
    }
    Ok(Identity::new(td, ns, sa))
}

/// The SPIFFE ID spec's character set for trust domains. Anything wider would let two spellings name one domain.
pub(crate) fn valid_trust_domain(td: &str) -> bool {
    !td.is_empty() && td.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// The SPIFFE ID spec's character set for path segments; `.` and `..` are excluded there too.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The identity of a leaf certificate: its one URI SAN, which must be a podmesh SPIFFE ID. A second URI SAN
/// is refused rather than ignored, since a verifier that picked either one could be made to accept an identity
/// the CA never meant to grant alone.
pub(crate) fn leaf_identity(der: &[u8], what: &'static str) -> Result<Identity, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::BadCertificate { what, reason: e.to_string() })?;
    let san = cert.subject_alternative_name().map_err(|e| Error::BadCertificate { what, reason: e.to_string() })?;
    let uris: Vec<&str> = san
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    match uris.as_slice() {
        [] => Err(Error::NoUriSan),
        [uri] => parse_identity(uri),
        many => Err(Error::ManyUriSans { count: many.len(), uris: many.join(", ") }),
    }
}

/// The SPIFFE identity in the URI SAN of the end-entity certificate (the first of `chain`), e.g. read after a
/// handshake from `ServerConnection::peer_certificates()`.
pub fn peer_identity(chain: &[CertificateDer<'_>]) -> Result<Identity, Error> {
    let leaf = chain.first().ok_or(Error::NoPeerCertificate)?;
    leaf_identity(leaf, "peer's certificate chain")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_podmesh_form() {
        let id = parse_identity("spiffe://cluster.local/ns/default/sa/reviews").unwrap();
        assert_eq!(id, Identity::new("cluster.local", "default", "reviews"));
        assert_eq!(id.namespace(), Some("default"));
        assert!(parse_identity("spiffe://td_1-x/ns/a.b/sa/Svc_Acc-1").is_ok());
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            "https://cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local",
            "spiffe://cluster.local/",
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe://cluster.local/ns//sa/reviews",
            "spiffe://cluster.local/ns/default/sa/reviews/",
            "spiffe://cluster.local/ns/default/sa/reviews/extra",
            "spiffe://cluster.local/sa/reviews/ns/default",
            "spiffe:///ns/default/sa/reviews",
            "spiffe://Cluster.Local/ns/default/sa/reviews",
            "spiffe://user@cluster.local/ns/default/sa/reviews",
            "spiffe://cluster.local:8443/ns/default/sa/reviews",
            "spiffe://cluster.local/ns/../sa/reviews",
            "spiffe://cluster.local/ns/default/sa/reviews?x=1",
            "spiffe://cluster.local/ns/default/sa/re%2Fviews",
        ] {
            let err = parse_identity(bad).unwrap_err();
            assert!(matches!(err, Error::InvalidSpiffeId { .. }), "{bad}: {err}");
            assert!(err.to_string().contains(bad), "{err}");
        }
    }

    #[test]
    fn trust_domain_charset() {
        assert!(valid_trust_domain("cluster.local"));
        assert!(valid_trust_domain("prod-1_eu"));
        assert!(!valid_trust_domain(""));
        assert!(!valid_trust_domain("Cluster.local"));
        assert!(!valid_trust_domain("a/b"));
    }

    #[test]
    fn peer_identity_of_an_empty_chain() {
        assert!(matches!(peer_identity(&[]), Err(Error::NoPeerCertificate)));
    }
}
