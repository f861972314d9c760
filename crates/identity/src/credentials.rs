//! What a sidecar holds, and the rustls configs of mesh mTLS made from it.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podmesh_compute::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::Error;
use crate::spiffe::leaf_identity;

const CHAIN: &str = "certificate chain";
const KEY: &str = "private key";
const ROOTS: &str = "trust anchors";

/// What a sidecar holds: its certificate chain and key, its identity (read from the leaf), its expiry, and the trust
/// anchors.
#[derive(Clone)]
pub struct Credentials {
    // Kept as rustls's parsed key rather than DER so that the secret is not reachable from this crate's API.
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    identity: Identity,
    not_after: SystemTime,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.certified.cert.len())
            .field("trust_anchors", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// `cert_chain_pem` is the leaf first, which must have exactly one spiffe:// URI SAN. `roots_pem` may hold several
    /// certificates (root rotation: old and new trusted together).
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str, roots_pem: &str) -> Result<Credentials, Error> {
        let chain = parse_chain(cert_chain_pem)?;
        let key = parse_key(key_pem)?;
        let roots = parse_roots(roots_pem)?;
        Self::assemble(chain, key, roots).map_err(|(_, e)| e)
    }

    /// Like [`Credentials::from_pem`], reading the three PEM files; every error names the file at fault.
    pub fn load(cert_chain: &Path, key: &Path, roots: &Path) -> Result<Credentials, Error> {
        let read =
            |path: &Path| std::fs::read_to_string(path).map_err(|cause| Error::Read { path: path.into(), cause });
        let chain_pem = read(cert_chain)?;
        let key_pem = read(key)?;
        let roots_pem = read(roots)?;
        let chain = parse_chain(&chain_pem).map_err(|e| e.in_file(cert_chain))?;
        let key_der = parse_key(&key_pem).map_err(|e| e.in_file(key))?;
        let store = parse_roots(&roots_pem).map_err(|e| e.in_file(roots))?;
        Self::assemble(chain, key_der, store).map_err(|(culprit, e)| match culprit {
            Culprit::Chain => e.in_file(cert_chain),
            Culprit::Key => e.in_file(key),
        })
    }

    fn assemble(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        roots: RootCertStore,
    ) -> Result<Credentials, (Culprit, Error)> {
        let leaf = chain.first().ok_or((Culprit::Chain, Error::NoCertificate { what: CHAIN }))?;
        let identity = leaf_identity(leaf, CHAIN).map_err(|e| (Culprit::Chain, e))?;
        let not_after = not_after(leaf).map_err(|e| (Culprit::Chain, e))?;
        let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => (Culprit::Key, Error::KeyMismatch { what: "leaf certificate" }),
            rustls::Error::InvalidCertificate(_) => {
                (Culprit::Chain, Error::BadCertificate { what: CHAIN, reason: e.to_string() })
            }
            cause => (Culprit::Key, Error::UnusableKey { cause }),
        })?;
        Ok(Credentials { certified: Arc::new(certified), roots: Arc::new(roots), identity, not_after })
    }

    /// Whether `pem` is a usable set of trust anchors (one certificate or more).
    pub fn check_roots(pem: &str) -> Result<(), Error> {
        parse_roots(pem).map(|_| ())
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now > self.not_after
    }

    /// Server side of mesh mTLS: presents our chain, REQUIRES a client certificate chaining to the trust anchors.
    /// `alpn` is set as the server's ALPN list.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.server_config_with(alpn, false)
    }

    /// The control plane's server side: presents our chain; a client certificate is optional (a sidecar calling
    /// the CA with its bootstrap token has none yet) but, when presented, must chain to the trust anchors. Each
    /// service then decides what an unauthenticated caller may do.
    pub fn server_config_client_optional(&self, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>, Error> {
        self.server_config_with(alpn, true)
    }

    fn server_config_with(&self, alpn: &[&[u8]], client_optional: bool) -> Result<Arc<rustls::ServerConfig>, Error> {
        let provider = provider();
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::clone(&self.roots), Arc::clone(&provider));
        let builder = if client_optional { builder.allow_unauthenticated() } else { builder };
        let verifier = builder.build().map_err(|cause| Error::ClientVerifier { cause })?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|cause| Error::Tls { cause })?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(&self.certified))));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// Client side: presents our chain; accepts the server only if its chain verifies to the trust anchors AND its
    /// leaf's URI SAN equals `expected`. There is no DNS-name check (mesh certificates carry only the SPIFFE URI),
    /// so any server name may be sent as SNI.
    pub fn client_config(&self, expected: &Identity, alpn: &[&[u8]]) -> Result<Arc<rustls::ClientConfig>, Error> {
        spiffe_client_config(Arc::clone(&self.roots), expected, alpn, Some(&self.certified))
    }
}

/// A client with no certificate of its own that accepts only a server whose chain verifies to `roots_pem` and
/// whose SPIFFE ID is `expected`: a sidecar calling the CA before it has a certificate.
pub fn anonymous_client_config(
    roots_pem: &str,
    expected: &Identity,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, Error> {
    spiffe_client_config(Arc::new(parse_roots(roots_pem)?), expected, alpn, None)
}

fn spiffe_client_config(
    roots: Arc<RootCertStore>,
    expected: &Identity,
    alpn: &[&[u8]],
    certified: Option<&Arc<CertifiedKey>>,
) -> Result<Arc<rustls::ClientConfig>, Error> {
    let provider = provider();
    let verifier = SpiffeServerVerifier { roots, expected: expected.clone(), provider: Arc::clone(&provider) };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|cause| Error::Tls { cause })?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match certified {
        Some(c) => builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(Arc::clone(c)))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Which input an error of [`Credentials::assemble`] is about, so [`Credentials::load`] can name the file.
enum Culprit {
    Chain,
    Key,
}

/// Only ring is compiled in, but naming it keeps rustls from consulting (or panicking over) a process default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn parse_certs(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|cause| Error::Pem { what, cause })?;
    if certs.is_empty() {
        return Err(Error::NoCertificate { what });
    }
    Ok(certs)
}

fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    parse_certs(pem, CHAIN)
}

fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, Error> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|cause| Error::Pem { what: KEY, cause })
}

fn parse_roots(pem: &str) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem, ROOTS)? {
        roots.add(cert).map_err(|e| Error::BadCertificate { what: ROOTS, reason: e.to_string() })?;
    }
    Ok(roots)
}

fn not_after(der: &[u8]) -> Result<SystemTime, Error> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| Error::BadCertificate { what: CHAIN, reason: e.to_string() })?;
    let secs = cert.validity().not_after.timestamp();
    let offset = Duration::from_secs(secs.unsigned_abs());
    let time =
        if secs >= 0 { SystemTime::UNIX_EPOCH.checked_add(offset) } else { SystemTime::UNIX_EPOCH.checked_sub(offset) };
    time.ok_or_else(|| Error::BadCertificate { what: CHAIN, reason: format!("notAfter {secs} is out of range") })
}

/// Checks the server's chain against the trust anchors and its SPIFFE ID against the one expected, instead of a
/// DNS name: mesh certificates carry only the SPIFFE URI, so the stock verifier would reject every one of them.
#[derive(Debug)]
struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Identity,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let invalid = |e: Error| rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))));
        let presented = leaf_identity(end_entity, "server's certificate").map_err(invalid)?;
        if presented != self.expected {
            return Err(invalid(Error::IdentityMismatch { expected: self.expected.clone(), presented }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_is_read_from_the_leaf() {
        let ca = crate::Ca::new("cluster.local").unwrap();
        let ttl = Duration::from_secs(3600);
        let before = SystemTime::now();
        let cert = ca.issue(&Identity::new("cluster.local", "default", "web"), ttl).unwrap();
        let creds = Credentials::from_pem(&cert.cert_chain_pem, &cert.key_pem, &ca.cert_pem()).unwrap();
        // rcgen drops sub-second precision.
        assert!(creds.not_after() + Duration::from_secs(1) >= before + ttl);
        assert!(creds.not_after() <= SystemTime::now() + ttl);
        assert!(!creds.is_expired(SystemTime::now()));
        assert!(creds.is_expired(SystemTime::now() + ttl + Duration::from_secs(1)));
        let dbg = format!("{creds:?}");
        assert!(dbg.contains("spiffe://cluster.local/ns/default/sa/web"), "{dbg}");
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let ca = crate::Ca::new("cluster.local").unwrap();
        let id = Identity::new("cluster.local", "default", "web");
        let a = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let b = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let err = Credentials::from_pem(&a.cert_chain_pem, &b.key_pem, &ca.cert_pem()).unwrap_err();
        assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    }
}
