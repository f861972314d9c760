//! The mesh CA and workload certificate issuance.

use std::fmt;
use std::time::{Duration, SystemTime};

use podmesh_compute::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::spiffe::parse_identity;
use podmesh_compute::valid_trust_domain;

/// How far back certificates are valid from, so that a peer whose clock is slightly behind ours accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Ten years, leap days included.
const CA_LIFETIME: Duration = Duration::from_secs(3653 * 24 * 3600);
/// 9999-12-31T23:59:59Z: the last instant X.509 (GeneralizedTime) and rcgen's date type can express; rcgen
/// would panic converting a later time, so lifetimes are checked against it first.
const LAST_EXPRESSIBLE: Duration = Duration::from_secs(253_402_300_799);

/// The mesh CA: a self-signed root (ECDSA P-256), or one loaded from PEM.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    subject: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca").field("subject", &self.subject).finish_non_exhaustive()
    }
}

impl Ca {
    /// A new self-signed root for `trust_domain`: CN `podmesh root CA (<td>)`, valid ten years.
    pub fn new(trust_domain: &str) -> Result<Ca, Error> {
        if !valid_trust_domain(trust_domain) {
            return Err(Error::InvalidTrustDomain { trust_domain: trust_domain.to_string() });
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("podmesh root CA ({trust_domain})"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.serial_number = Some(random_serial()?);
        let (not_before, not_after) = validity(CA_LIFETIME)?;
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.self_signed(&key).map_err(generate)?;
        Ok(Ca {
            subject: format!("CN=podmesh root CA ({trust_domain})"),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a root CA written by [`Ca::cert_pem`] and [`Ca::key_pem`] (or any self-signed CA certificate and its
    /// PKCS#8 key).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, Error> {
        const WHAT: &str = "CA certificate";
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|cause| Error::Pem { what: WHAT, cause })?;
        let der = match certs.as_slice() {
            [] => return Err(Error::NoCertificate { what: WHAT }),
            [one] => one,
            _ => {
                return Err(Error::InvalidCa {
                    reason: format!("PEM holds {} certificates; pass the root certificate only", certs.len()),
                });
            }
        };
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| Error::BadCertificate { what: WHAT, reason: e.to_string() })?;
        let is_ca = cert
            .basic_constraints()
            .map_err(|e| Error::BadCertificate { what: WHAT, reason: e.to_string() })?
            .is_some_and(|bc| bc.value.ca);
        let subject = cert.subject().to_string();
        if !is_ca {
            return Err(Error::InvalidCa {
                reason: format!("certificate {subject} is not a CA (basicConstraints CA:false)"),
            });
        }
        // Issued chains are the leaf alone, so the CA must itself be the trust anchor peers hold.
        if cert.subject().as_raw() != cert.issuer().as_raw() {
            return Err(Error::InvalidCa {
                reason: format!("certificate {subject} is not self-signed; intermediate CAs are not supported"),
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|cause| Error::CaKey { cause })?;
        if key.der_bytes() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(Error::KeyMismatch { what: WHAT });
        }
        let issuer = Issuer::from_ca_cert_der(der, key)
            .map_err(|e| Error::BadCertificate { what: WHAT, reason: e.to_string() })?;
        Ok(Ca { issuer, cert_pem: cert_pem.to_string(), subject })
    }

    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A fresh key and a certificate for `identity`: the SPIFFE URI SAN only (no DNS SAN), EKU serverAuth+clientAuth,
    /// not CA, valid from now−1 min (clock skew) to now+ttl.
    pub fn issue(&self, identity: &Identity, ttl: Duration) -> Result<WorkloadCert, Error> {
        let params = leaf_params(identity, ttl)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(WorkloadCert { cert_chain_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// A fresh key and a certificate for a TLS server reached by DNS name (the control plane's admission webhook,
    /// which the Kubernetes API server dials as `<service>.<namespace>.svc`): `dns_names` as its only SANs (no
    /// SPIFFE URI: it is not a mesh identity), EKU serverAuth only, not CA, valid from now−1 min (clock skew) to
    /// now+ttl. Refuses an empty list and any name that is not a valid DNS name (no wildcards, no IP addresses, no
    /// trailing dot).
    pub fn issue_server(&self, dns_names: &[String], ttl: Duration) -> Result<WorkloadCert, Error> {
        let params = server_params(dns_names, ttl)?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(generate)?;
        Ok(WorkloadCert { cert_chain_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// Signs a CSR (PEM) for `identity`: the certificate carries `identity` as its only URI SAN whatever the CSR asked
    /// (the caller has authenticated who may have which identity); rejects a CSR whose signature does not verify.
    /// Returns the certificate chain (PEM, leaf first).
    pub fn sign_csr(&self, csr_pem: &str, identity: &Identity, ttl: Duration) -> Result<String, Error> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|cause| match cause {
            rcgen::Error::InvalidCertificationRequestSignature => Error::CsrSignature,
            cause => Error::CsrParse { cause },
        })?;
        // Only the public key is taken from the request: its SANs, key usages or CA flag are the requester's
        // wishes, and honouring them would let a workload mint itself another identity or a CA.
        let params = leaf_params(identity, ttl)?;
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(generate)?;
        Ok(cert.pem())
    }
}

/// A workload's key and certificate chain (leaf first), PEM.
#[derive(Clone)]
pub struct WorkloadCert {
    pub cert_chain_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for WorkloadCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCert").field("cert_chain_pem", &self.cert_chain_pem).finish_non_exhaustive()
    }
}

/// For the CSR flow: a new key and a CSR for `identity` (PEM of each).
pub fn new_csr(identity: &Identity) -> Result<(String, String), Error> {
    parse_identity(identity.as_str())?;
    csr_with(vec![uri_san(identity)?])
}

/// For the CSR flow when the CA decides the identity (the control plane's, from the caller's bootstrap token): a
/// new key and a CSR naming nothing (PEM of each).
pub fn new_unnamed_csr() -> Result<(String, String), Error> {
    csr_with(Vec::new())
}

fn csr_with(subject_alt_names: Vec<SanType>) -> Result<(String, String), Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = subject_alt_names;
    let csr = params.serialize_request(&key).map_err(generate)?;
    let csr_pem = csr.pem().map_err(generate)?;
    Ok((key.serialize_pem(), csr_pem))
}

fn leaf_params(identity: &Identity, ttl: Duration) -> Result<CertificateParams, Error> {
    // `Identity::new` accepts any strings; issuing only the validated form keeps peers able to read it back.
    parse_identity(identity.as_str())?;
    let mut params = CertificateParams::default();
    // An empty subject makes rcgen mark the SAN critical (RFC 5280 4.2.1.6), as SPIFFE X.509-SVIDs do.
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(identity)?];
    params.is_ca = IsCa::ExplicitNoCa;
    // SPIFFE X.509-SVID: a leaf has digitalSignature and must not have keyCertSign or cRLSign.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    // Lets verifiers pick the right root when two (old and new, same subject) are trusted during rotation.
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let (not_before, not_after) = validity(ttl)?;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

fn server_params(dns_names: &[String], ttl: Duration) -> Result<CertificateParams, Error> {
    let Some(first) = dns_names.first() else { return Err(Error::NoDnsName) };
    let mut subject_alt_names = Vec::with_capacity(dns_names.len());
    for name in dns_names {
        let invalid = || Error::InvalidDnsName { name: name.clone() };
        // webpki's own rules (the ones a rustls client checks the name with), plus no trailing dot, which a SAN
        // must not carry (RFC 5280 4.2.1.6: "preferred name syntax").
        rustls_pki_types::DnsName::try_from(name.as_str()).map_err(|_| invalid())?;
        if name.ends_with('.') {
            return Err(invalid());
        }
        subject_alt_names.push(SanType::DnsName(name.as_str().try_into().map_err(|_| invalid())?));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    // Clients match the SANs only; the CN is for people reading the certificate.
    params.distinguished_name.push(DnType::CommonName, first.as_str());
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.serial_number = Some(random_serial()?);
    let (not_before, not_after) = validity(ttl)?;
    params.not_before = not_before.into();
    params.not_after = not_after.into();
    Ok(params)
}

fn uri_san(identity: &Identity) -> Result<SanType, Error> {
    let uri = identity.as_str().try_into().map_err(generate)?;
    Ok(SanType::URI(uri))
}

/// From now−[`CLOCK_SKEW`] to now+`ttl`.
fn validity(ttl: Duration) -> Result<(SystemTime, SystemTime), Error> {
    validity_at(SystemTime::now(), ttl)
}

fn validity_at(now: SystemTime, ttl: Duration) -> Result<(SystemTime, SystemTime), Error> {
    let out_of_range = Error::TtlOutOfRange { ttl };
    let last = SystemTime::UNIX_EPOCH + LAST_EXPRESSIBLE;
    let not_after = now.checked_add(ttl).filter(|t| *t <= last).ok_or(out_of_range)?;
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    Ok((not_before, not_after))
}

/// rcgen's default serial is a hash of the public key, which repeats when a workload renews with the same key;
/// RFC 5280 wants serials unique per CA.
fn random_serial() -> Result<SerialNumber, Error> {
    let mut bytes = [0u8; 16];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Generate { cause: rcgen::Error::RingUnspecified })?;
    // A positive INTEGER that DER encodes in at most 16 bytes.
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn generate(cause: rcgen::Error) -> Error {
    Error::Generate { cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_window() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (nb, na) = validity_at(now, Duration::from_secs(3600)).unwrap();
        assert_eq!(nb, now - CLOCK_SKEW);
        assert_eq!(na, now + Duration::from_secs(3600));
        assert!(matches!(validity_at(now, Duration::MAX), Err(Error::TtlOutOfRange { .. })));
        let to_the_limit = LAST_EXPRESSIBLE - Duration::from_secs(1_800_000_000);
        assert!(validity_at(now, to_the_limit).is_ok());
        assert!(validity_at(now, to_the_limit + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn serials_are_positive_and_distinct() {
        let a = random_serial().unwrap();
        let b = random_serial().unwrap();
        assert_ne!(a, b);
        assert!(a.as_ref()[0] < 0x80);
    }

    #[test]
    fn debug_hides_keys() {
        let ca = Ca::new("cluster.local").unwrap();
        let dbg = format!("{ca:?}");
        assert!(dbg.contains("podmesh root CA (cluster.local)"), "{dbg}");
        assert!(!dbg.contains("PRIVATE KEY"), "{dbg}");
        let cert = ca.issue(&Identity::new("cluster.local", "default", "web"), Duration::from_secs(60)).unwrap();
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn issue_rejects_an_identity_not_of_the_podmesh_form() {
        let ca = Ca::new("cluster.local").unwrap();
        let bad = Identity::new("cluster.local", "a/b", "web");
        assert!(matches!(ca.issue(&bad, Duration::from_secs(60)), Err(Error::InvalidSpiffeId { .. })));
    }

    #[test]
    fn ca_from_its_own_pem_and_bad_inputs() {
        let ca = Ca::new("cluster.local").unwrap();
        let again = Ca::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(again.subject, "CN=podmesh root CA (cluster.local)");
        let other = Ca::new("cluster.local").unwrap();
        assert!(matches!(Ca::from_pem(&ca.cert_pem(), &other.key_pem()), Err(Error::KeyMismatch { .. })));
        assert!(matches!(Ca::from_pem("nothing", &ca.key_pem()), Err(Error::NoCertificate { .. })));
        assert!(matches!(Ca::from_pem(&ca.cert_pem(), "nothing"), Err(Error::CaKey { .. })));
        let two = format!("{}{}", ca.cert_pem(), other.cert_pem());
        assert!(matches!(Ca::from_pem(&two, &ca.key_pem()), Err(Error::InvalidCa { .. })));
        let leaf = ca.issue(&Identity::new("cluster.local", "default", "web"), Duration::from_secs(60)).unwrap();
        let err = Ca::from_pem(&leaf.cert_chain_pem, &leaf.key_pem).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
        assert!(matches!(Ca::new("Cluster.Local"), Err(Error::InvalidTrustDomain { .. })));
    }

    #[test]
    fn a_server_certificate_verifies_for_its_dns_names_only_and_carries_no_uri() {
        use rustls::client::WebPkiServerVerifier;
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::{ServerName, UnixTime};
        use x509_parser::extensions::GeneralName;

        let ca = Ca::new("cluster.local").unwrap();
        let names = vec![
            "podmesh-control.podmesh-system.svc".to_string(),
            "podmesh-control.podmesh-system.svc.cluster.local".to_string(),
        ];
        let cert = ca.issue_server(&names, Duration::from_secs(3600)).unwrap();
        let der = CertificateDer::from_pem_slice(cert.cert_chain_pem.as_bytes()).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(roots), provider).build().unwrap();
        let verify = |name: &str| {
            let name = ServerName::try_from(name.to_string()).unwrap();
            verifier.verify_server_cert(&der, &[], &name, &[], UnixTime::now())
        };
        for name in &names {
            verify(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        assert!(verify("other.podmesh-system.svc").is_err());
        // Another CA's root does not verify it.
        let other = Ca::new("cluster.local").unwrap();
        let mut other_roots = rustls::RootCertStore::empty();
        other_roots.add(CertificateDer::from_pem_slice(other.cert_pem().as_bytes()).unwrap()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let stranger =
            WebPkiServerVerifier::builder_with_provider(std::sync::Arc::new(other_roots), provider).build().unwrap();
        let name = ServerName::try_from(names[0].clone()).unwrap();
        assert!(stranger.verify_server_cert(&der, &[], &name, &[], UnixTime::now()).is_err());

        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        let dns: Vec<&str> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => *d,
                other => panic!("a SAN other than a DNS name: {other:?}"),
            })
            .collect();
        assert_eq!(dns, names);
        assert!(!parsed.is_ca());
        let eku = parsed.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        // The key is the certificate's.
        let key = KeyPair::from_pem(&cert.key_pem).unwrap();
        assert_eq!(key.der_bytes(), parsed.public_key().subject_public_key.data.as_ref());
    }

    #[test]
    fn a_server_certificate_needs_valid_dns_names() {
        let ca = Ca::new("cluster.local").unwrap();
        let ttl = Duration::from_secs(60);
        assert!(matches!(ca.issue_server(&[], ttl), Err(Error::NoDnsName)));
        for bad in ["", "*.svc", "a..b", "-a.svc", "10.0.0.1", "a b.svc", "spiffe://x/y", "svc.", "é.svc"] {
            let names = vec!["ok.svc".to_string(), bad.to_string()];
            assert!(matches!(ca.issue_server(&names, ttl), Err(Error::InvalidDnsName { .. })), "{bad:?}");
        }
        assert!(matches!(ca.issue_server(&["ok.svc".to_string()], Duration::MAX), Err(Error::TtlOutOfRange { .. })));
    }
}
