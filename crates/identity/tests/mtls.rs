#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Real mesh mTLS handshakes over loopback TCP, with certificates from our own CA.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use podmesh_identity::{Ca, Credentials, Error, Identity, new_csr, peer_identity};
use rcgen::{CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateSigningRequestDer, ServerName};
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

const TD: &str = "cluster.local";
const HOUR: Duration = Duration::from_secs(3600);
const ALPN: &[u8] = b"podmesh/1";

fn id(sa: &str) -> Identity {
    Identity::new(TD, "default", sa)
}

fn creds(ca: &Ca, sa: &str) -> Credentials {
    creds_trusting(ca, sa, &ca.cert_pem())
}

fn creds_trusting(ca: &Ca, sa: &str, roots_pem: &str) -> Credentials {
    let cert = ca.issue(&id(sa), HOUR).unwrap();
    Credentials::from_pem(&cert.cert_chain_pem, &cert.key_pem, roots_pem).unwrap()
}

/// A certificate signed by `ca` with whatever SANs and validity the test needs, bypassing `Ca::issue`'s rules.
fn custom_cert(ca: &Ca, sans: Vec<SanType>, expired: bool) -> (String, String) {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem(), KeyPair::from_pem(&ca.key_pem()).unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = if expired { rcgen::date_time_ymd(2020, 1, 2) } else { rcgen::date_time_ymd(2100, 1, 1) };
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// What each side saw: the peer's identity, or the error text. The client also returns the negotiated ALPN.
#[derive(Debug)]
struct Outcome {
    server: Result<Identity, String>,
    client: Result<(Identity, Option<Vec<u8>>), std::io::Error>,
}

/// One connection: handshake, then a byte each way, because with TLS 1.3 a client learns that the server refused
/// its certificate only on its first read.
async fn exchange(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    tokio::time::timeout(Duration::from_secs(10), exchange_inner(server, client)).await.expect("handshake hung")
}

async fn exchange_inner(server: Arc<rustls::ServerConfig>, client: Arc<rustls::ClientConfig>) -> Outcome {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = TlsAcceptor::from(server).accept(tcp).await.map_err(|e| e.to_string())?;
        let peer = peer_identity(tls.get_ref().1.peer_certificates().unwrap_or_default()).map_err(|e| e.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(b"!").await.map_err(|e| e.to_string())?;
        tls.shutdown().await.map_err(|e| e.to_string())?;
        Ok(peer)
    });
    let client = async {
        let tcp = TcpStream::connect(addr).await?;
        // Any name will do: the verifier checks the SPIFFE ID, not the SNI.
        let name = ServerName::try_from("outbound_.9080_._.reviews.default.svc.cluster.local").unwrap();
        let mut tls = TlsConnector::from(client).connect(name, tcp).await?;
        let conn = tls.get_ref().1;
        let peer = peer_identity(conn.peer_certificates().unwrap_or_default()).map_err(std::io::Error::other)?;
        let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
        tls.write_all(b"?").await?;
        tls.flush().await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        Ok((peer, alpn))
    }
    .await;
    Outcome { server: server.await.unwrap(), client }
}

async fn connect(server: &Credentials, client: &Credentials, expected: &Identity) -> Outcome {
    exchange(server.server_config(&[ALPN]).unwrap(), client.client_config(expected, &[ALPN]).unwrap()).await
}

fn assert_fails(outcome: &Outcome) {
    assert!(outcome.server.is_err(), "server accepted: {outcome:?}");
    assert!(outcome.client.is_err(), "client succeeded: {outcome:?}");
}

// (1)
#[tokio::test]
async fn matching_identities_see_each_other() {
    let ca = Ca::new(TD).unwrap();
    let server = creds(&ca, "reviews");
    let client = creds(&ca, "productpage");
    assert_eq!(server.identity(), &id("reviews"));
    let out = connect(&server, &client, &id("reviews")).await;
    assert_eq!(out.server.unwrap(), id("productpage"));
    let (seen, alpn) = out.client.unwrap();
    assert_eq!(seen, id("reviews"));
    assert_eq!(alpn.as_deref(), Some(ALPN));

    // And the other way round, with the roles swapped.
    let out = connect(&client, &server, &id("productpage")).await;
    assert_eq!(out.server.unwrap(), id("reviews"));
    assert_eq!(out.client.unwrap().0, id("productpage"));
}

// (2)
#[tokio::test]
async fn another_server_identity_than_expected_is_refused_naming_both() {
    let ca = Ca::new(TD).unwrap();
    let server = creds(&ca, "reviews");
    let client = creds(&ca, "productpage");
    let out = connect(&server, &client, &id("ratings")).await;
    assert_fails(&out);
    let err = out.client.unwrap_err();
    let tls_err = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).expect("a rustls::Error");
    let text = tls_err.to_string();
    assert!(text.contains("spiffe://cluster.local/ns/default/sa/ratings"), "{text}");
    assert!(text.contains("spiffe://cluster.local/ns/default/sa/reviews"), "{text}");
    assert!(matches!(tls_err, rustls::Error::InvalidCertificate(_)), "{tls_err:?}");
}

// (3)
#[tokio::test]
async fn certificate_from_another_ca_is_refused_on_either_side() {
    let ours = Ca::new(TD).unwrap();
    let theirs = Ca::new(TD).unwrap();
    let server = creds(&ours, "reviews");

    // A client whose certificate comes from the other CA (it trusts ours, so only the server can object).
    let stranger = creds_trusting(&theirs, "productpage", &ours.cert_pem());
    let out = connect(&server, &stranger, &id("reviews")).await;
    assert_fails(&out);
    assert!(out.server.unwrap_err().contains("invalid peer certificate"));

    // A server whose certificate comes from the other CA.
    let client = creds(&ours, "productpage");
    let imposter = creds_trusting(&theirs, "reviews", &ours.cert_pem());
    let out = connect(&imposter, &client, &id("reviews")).await;
    assert_fails(&out);
    // Same trust domain, so the same root subject: webpki finds our root and the signature does not match.
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("invalid peer certificate: BadSignature"), "{err}");

    // A CA of another trust domain is not even a candidate issuer.
    let foreign = Ca::new("other.example").unwrap();
    let imposter = creds_trusting(&foreign, "reviews", &ours.cert_pem());
    let out = connect(&imposter, &client, &id("reviews")).await;
    assert_fails(&out);
    let err = out.client.unwrap_err().to_string();
    assert!(err.contains("invalid peer certificate: UnknownIssuer"), "{err}");
}

/// Presents no client certificate.
#[derive(Debug)]
struct NoClientCert;

impl ResolvesClientCert for NoClientCert {
    fn resolve(&self, _: &[&[u8]], _: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        None
    }
    fn has_certs(&self) -> bool {
        false
    }
}

// (4)
#[tokio::test]
async fn client_without_certificate_is_refused() {
    let ca = Ca::new(TD).unwrap();
    let server = creds(&ca, "reviews");
    let client = creds(&ca, "productpage");
    let mut config = (*client.client_config(&id("reviews"), &[ALPN]).unwrap()).clone();
    config.client_auth_cert_resolver = Arc::new(NoClientCert);
    let out = exchange(server.server_config(&[ALPN]).unwrap(), Arc::new(config)).await;
    assert_fails(&out);
    let err = out.server.unwrap_err();
    assert!(err.contains("peer sent no certificates"), "{err}");
}

// (5)
#[tokio::test]
async fn expired_certificate_is_refused_on_either_side() {
    let ca = Ca::new(TD).unwrap();
    let (cert, key) = custom_cert(&ca, vec![uri("spiffe://cluster.local/ns/default/sa/reviews")], true);
    let expired = Credentials::from_pem(&cert, &key, &ca.cert_pem()).unwrap();
    assert!(expired.is_expired(SystemTime::now()));
    assert!(expired.not_after() < SystemTime::now());
    let fresh = creds(&ca, "productpage");
    assert!(!fresh.is_expired(SystemTime::now()));

    let out = connect(&expired, &fresh, &id("reviews")).await;
    assert_fails(&out);
    assert!(out.client.unwrap_err().to_string().contains("certificate expired"));

    let out = connect(&fresh, &expired, &id("productpage")).await;
    assert_fails(&out);
    assert!(out.server.unwrap_err().contains("certificate expired"));
}

// (5, through `Ca::issue`)
#[tokio::test]
async fn certificate_issued_with_a_tiny_ttl_expires() {
    let ca = Ca::new(TD).unwrap();
    let cert = ca.issue(&id("reviews"), Duration::from_secs(1)).unwrap();
    let server = Credentials::from_pem(&cert.cert_chain_pem, &cert.key_pem, &ca.cert_pem()).unwrap();
    let client = creds(&ca, "productpage");
    // webpki treats notAfter as valid through that second, so wait until the following one has passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(server.is_expired(SystemTime::now()));
    let out = connect(&server, &client, &id("reviews")).await;
    assert_fails(&out);
}

// (6)
#[tokio::test]
async fn root_rotation_trusts_old_and_new_roots_together() {
    let old = Ca::new(TD).unwrap();
    let new = Ca::new(TD).unwrap();
    let both = format!("{}{}", old.cert_pem(), new.cert_pem());
    let on_old = creds_trusting(&old, "reviews", &both);
    let on_new = creds_trusting(&new, "productpage", &both);

    let out = connect(&on_old, &on_new, &id("reviews")).await;
    assert_eq!(out.server.unwrap(), id("productpage"));
    assert_eq!(out.client.unwrap().0, id("reviews"));

    let out = connect(&on_new, &on_old, &id("productpage")).await;
    assert_eq!(out.server.unwrap(), id("reviews"));
    assert_eq!(out.client.unwrap().0, id("productpage"));

    // Once the old root is dropped, its certificates are no longer accepted.
    let new_only = creds_trusting(&new, "productpage", &new.cert_pem());
    let out = connect(&on_old, &new_only, &id("reviews")).await;
    assert_fails(&out);
}

// (7)
#[tokio::test]
async fn csr_flow_issues_the_identity_the_ca_decides() {
    let ca = Ca::new(TD).unwrap();
    let (key_pem, csr_pem) = new_csr(&id("admin")).unwrap();
    let chain = ca.sign_csr(&csr_pem, &id("reviews"), HOUR).unwrap();
    let server = Credentials::from_pem(&chain, &key_pem, &ca.cert_pem()).unwrap();
    assert_eq!(server.identity(), &id("reviews"));

    let out = connect(&server, &creds(&ca, "productpage"), &id("reviews")).await;
    assert_eq!(out.server.unwrap(), id("productpage"));
    assert_eq!(out.client.unwrap().0, id("reviews"));
}

#[test]
fn tampered_csr_is_rejected() {
    let ca = Ca::new(TD).unwrap();
    let (_, csr_pem) = new_csr(&id("reviews")).unwrap();
    let mut der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).unwrap().as_ref().to_vec();
    let asked = b"sa/reviews";
    let at = der.windows(asked.len()).position(|w| w == asked).unwrap();
    der[at + 3] = b'p'; // "sa/peviews": still a well-formed request, but no longer the one that was signed
    let tampered = pem("CERTIFICATE REQUEST", &der);
    let err = ca.sign_csr(&tampered, &id("reviews"), HOUR).unwrap_err();
    assert!(matches!(err, Error::CsrSignature), "{err}");
    assert!(err.to_string().contains("signature does not verify"), "{err}");

    let err = ca.sign_csr("not a csr", &id("reviews"), HOUR).unwrap_err();
    assert!(matches!(err, Error::CsrParse { .. }), "{err}");
}

// (8)
#[test]
fn credentials_from_pem_errors_are_clear() {
    let ca = Ca::new(TD).unwrap();
    let roots = ca.cert_pem();

    let (cert, key) = custom_cert(&ca, vec![SanType::DnsName("reviews.default.svc".try_into().unwrap())], false);
    let err = Credentials::from_pem(&cert, &key, &roots).unwrap_err();
    assert!(matches!(err, Error::NoUriSan), "{err}");
    assert!(err.to_string().contains("exactly one spiffe:// URI SAN"), "{err}");

    let two =
        vec![uri("spiffe://cluster.local/ns/default/sa/reviews"), uri("spiffe://cluster.local/ns/default/sa/admin")];
    let (cert, key) = custom_cert(&ca, two, false);
    let err = Credentials::from_pem(&cert, &key, &roots).unwrap_err();
    assert!(matches!(err, Error::ManyUriSans { count: 2, .. }), "{err}");
    assert!(err.to_string().contains("sa/admin"), "{err}");

    let (cert, key) = custom_cert(&ca, vec![uri("https://reviews.example.com/")], false);
    let err = Credentials::from_pem(&cert, &key, &roots).unwrap_err();
    assert!(matches!(err, Error::InvalidSpiffeId { .. }), "{err}");
    assert!(err.to_string().contains("https://reviews.example.com/"), "{err}");

    let (cert, key) = custom_cert(&ca, vec![uri("spiffe://cluster.local/workload/reviews")], false);
    let err = Credentials::from_pem(&cert, &key, &roots).unwrap_err();
    assert!(matches!(err, Error::InvalidSpiffeId { .. }), "{err}");

    let good = ca.issue(&id("reviews"), HOUR).unwrap();
    let err = Credentials::from_pem("garbage", &good.key_pem, &roots).unwrap_err();
    assert!(matches!(err, Error::NoCertificate { what: "certificate chain" }), "{err}");
    let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
    let err = Credentials::from_pem(broken, &good.key_pem, &roots).unwrap_err();
    assert!(matches!(err, Error::Pem { what: "certificate chain", .. }), "{err}");
    let junk_der = pem("CERTIFICATE", b"definitely not DER");
    let err = Credentials::from_pem(&junk_der, &good.key_pem, &roots).unwrap_err();
    assert!(matches!(err, Error::BadCertificate { .. }), "{err}");
    let err = Credentials::from_pem(&good.cert_chain_pem, "garbage", &roots).unwrap_err();
    assert!(matches!(err, Error::Pem { what: "private key", .. }), "{err}");
    let err = Credentials::from_pem(&good.cert_chain_pem, &good.key_pem, "garbage").unwrap_err();
    assert!(matches!(err, Error::NoCertificate { what: "trust anchors" }), "{err}");
}

#[test]
fn load_names_the_file_at_fault() {
    let ca = Ca::new(TD).unwrap();
    let good = ca.issue(&id("reviews"), HOUR).unwrap();
    let dir = std::env::temp_dir().join(format!("podmesh-identity-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (chain, key, roots) = (dir.join("cert-chain.pem"), dir.join("key.pem"), dir.join("root-cert.pem"));
    std::fs::write(&chain, &good.cert_chain_pem).unwrap();
    std::fs::write(&key, &good.key_pem).unwrap();
    std::fs::write(&roots, ca.cert_pem()).unwrap();
    assert_eq!(Credentials::load(&chain, &key, &roots).unwrap().identity(), &id("reviews"));

    let missing = dir.join("missing.pem");
    let err = Credentials::load(&chain, &missing, &roots).unwrap_err();
    assert!(matches!(err, Error::Read { .. }) && err.to_string().contains("missing.pem"), "{err}");

    let other = ca.issue(&id("reviews"), HOUR).unwrap();
    let wrong_key = dir.join("wrong-key.pem");
    std::fs::write(&wrong_key, &other.key_pem).unwrap();
    let err = Credentials::load(&chain, &wrong_key, &roots).unwrap_err();
    assert!(err.to_string().starts_with(&wrong_key.display().to_string()), "{err}");

    let err = Credentials::load(&chain, &key, &key).unwrap_err();
    assert!(err.to_string().starts_with(&key.display().to_string()), "{err}");
    assert!(err.to_string().contains("trust anchors"), "{err}");

    std::fs::remove_dir_all(&dir).unwrap();
}

/// PEM-encodes `der`; the tests need it to write back DER they altered.
fn pem(label: &str, der: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::new();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                b64.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                b64.push('=');
            }
        }
    }
    let body: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
    format!("-----BEGIN {label}-----\n{}\n-----END {label}-----\n", body.join("\n"))
}
