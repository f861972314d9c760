//! Reading SPIFFE identities out of strings and certificates.

use podmesh_compute::Identity;
use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;

/// Parses `spiffe://<td>/ns/<ns>/sa/<sa>` ([`Identity::parse`]), as this crate's error.
pub fn parse_identity(uri: &str) -> Result<Identity, Error> {
    Identity::parse(uri).map_err(|reason| Error::InvalidSpiffeId { uri: uri.to_string(), reason })
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
    use podmesh_compute::valid_trust_domain;

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
