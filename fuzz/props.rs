//! The properties the fuzz targets check, one plain function per target.
//!
//! Each `fuzz_targets/<target>.rs` calls its function on the bytes libFuzzer makes up, and
//! `crates/proxy/tests/fuzz_corpus.rs` calls the same function on every file of `corpus/<target>/`, so
//! `cargo nextest run` replays the seed corpus on stable, without cargo-fuzz. A function panics (an `assert!`)
//! exactly when a property fails: any other panic is a bug in the code under test.
//!
//! Included with `#[path]` by both, so it depends only on crates both have: the podmesh crates, serde_json,
//! rustls and httparse.

use std::net::IpAddr;

use podmesh_compute::ProxyConfig;
use podmesh_compute::names::{self, HostName};
use podmesh_model::yaml::{self, Limits};
use podmesh_model::{Diagnostic, ObjectKey, ServicePort, TargetPort};
use podmesh_proxy::io::{Sniffed, classify};
use podmesh_proxy::tls::{Hello, addressed_from_sni, client_hello as parse_hello, server_name};
use podmesh_route::request::Addressed;

// ---------------------------------------------------------------- detect

/// R1.3's signatures: an HTTP/1 request line starts with a method and a space, HTTP/2 with the prior-knowledge
/// preface, TLS with a handshake record header (content type 22, version major 3). The methods are the ones
/// `io::classify` knows; a method added there must be added here, on purpose.
const METHODS: [&[u8]; 9] =
    [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"DELETE ", b"CONNECT ", b"OPTIONS ", b"TRACE ", b"PATCH "];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const TLS_RECORD: &[u8] = &[0x16, 0x03];
/// `io::sniff` stops reading here and calls the bytes opaque, so a classification must be decided by then.
const SNIFF_MAX: usize = 24;

/// What R1.3 says `bytes` are: decided as soon as a signature is complete or none can match any more.
fn detect_spec(bytes: &[u8]) -> Option<Sniffed> {
    if bytes.starts_with(TLS_RECORD) {
        Some(Sniffed::Tls)
    } else if bytes.starts_with(H2_PREFACE) {
        Some(Sniffed::Http2)
    } else if METHODS.iter().any(|m| bytes.starts_with(m)) {
        Some(Sniffed::Http1)
    } else if METHODS.iter().chain([&H2_PREFACE, &TLS_RECORD]).any(|sig| sig.starts_with(bytes)) {
        // A proper prefix of a signature: more bytes decide.
        None
    } else {
        Some(Sniffed::Opaque)
    }
}

/// `io::classify`: never panics; an answer, once given, is kept by every longer input (the sniffer acts on the
/// first answer); undecided only while the bytes are a proper prefix of a signature, so never at `SNIFF_MAX`
/// bytes; and Opaque only for bytes that are no prefix of any signature.
pub fn detect(data: &[u8]) {
    let data = &data[..data.len().min(4 * SNIFF_MAX)];
    let mut decided: Option<(usize, Sniffed)> = None;
    for k in 0..=data.len() {
        let got = classify(&data[..k]);
        assert_eq!(got, detect_spec(&data[..k]), "classify({:?})", String::from_utf8_lossy(&data[..k]));
        match (decided, got) {
            (Some((at, first)), _) => assert_eq!(
                got,
                Some(first),
                "classify changed its mind: {first:?} after {at} bytes, {got:?} after {k}: {:?}",
                String::from_utf8_lossy(&data[..k])
            ),
            (None, Some(kind)) => decided = Some((k, kind)),
            (None, None) => assert!(k < SNIFF_MAX, "still undecided after {k} bytes"),
        }
    }
}

// ---------------------------------------------------------------- client_hello

/// Fuzz bytes read as choices, giving zeros once they run out.
struct Choices<'a>(&'a [u8]);

impl Choices<'_> {
    fn byte(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().map_or((0, &[][..]), |(b, r)| (*b, r));
        self.0 = rest;
        first
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A valid DNS label (RFC 1123) of 1..=`max` characters: what Kubernetes requires of Service and namespace
    /// names, and what a cluster domain is made of.
    fn label(&mut self, max: u8) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789-";
        let len = 1 + usize::from(self.byte() % max);
        let mut s: Vec<u8> = (0..len).map(|_| ALPHABET[usize::from(self.byte()) % ALPHABET.len()]).collect();
        for edge in [0, len - 1] {
            if s[edge] == b'-' {
                s[edge] = b'x';
            }
        }
        s.into_iter().map(char::from).collect()
    }
}

/// `tls::client_hello` and the R3.6 SNI: the hello parser never panics; a ClientHello it reads as the mesh's is
/// TLS to detection too, and every prefix of it is incomplete (or the same); `addressed_from_sni` never panics,
/// reads back what `server_name` writes for any valid names, and what it reads from any name it reads again from
/// the name `server_name` writes for that.
pub fn client_hello(data: &[u8]) {
    let hello = parse_hello(data);
    if hello == Hello::Mesh {
        assert_eq!(classify(data), Some(Sniffed::Tls), "a mesh ClientHello that detection does not call TLS");
        for k in [0, 1, 4, 5, data.len() / 2, data.len().saturating_sub(1)] {
            let prefix = parse_hello(&data[..k.min(data.len())]);
            assert!(matches!(prefix, Hello::Incomplete | Hello::Mesh), "the first {k} bytes are {prefix:?}");
        }
    }

    let sni = String::from_utf8_lossy(data);
    if let Some(addressed) = addressed_from_sni(&sni) {
        let again = server_name(&addressed, None, TargetPort(8080), "cluster.local");
        assert_eq!(addressed_from_sni(&again), Some(addressed), "{sni:?} then {again:?}");
    }

    // Any valid names, built from the same bytes.
    let mut c = Choices(data);
    let addressed = if c.byte() % 4 == 0 {
        Addressed::Direct
    } else {
        let (namespace, name) = (c.label(63), c.label(63));
        Addressed::Service { service: ObjectKey::new(namespace, name), port: ServicePort(c.u16()) }
    };
    // DestinationRule subset names are not validated in podmesh-model; here they are DNS labels, at most 62
    // characters because `server_name` appends `_` to the label (a 63-character subset makes a 64-character
    // label, which rustls refuses as an SNI).
    let subset = (c.byte() % 2 == 0).then(|| c.label(62));
    let direct_port = TargetPort(c.u16());
    let mut domain = (0..1 + c.byte() % 3).map(|_| c.label(20)).collect::<Vec<_>>().join(".");
    // A top-level label is not all digits (RFC 1123 §2.1; rustls refuses such names).
    let last = domain.rfind('.').map_or(0, |i| i + 1);
    if domain[last..].starts_with(|c: char| c.is_ascii_digit()) {
        domain.replace_range(last..=last, "x");
    }
    let sni = server_name(&addressed, subset.as_deref(), direct_port, &domain);
    assert_eq!(addressed_from_sni(&sni), Some(addressed), "{sni:?}");
    // The client hands the name to rustls: it must be a valid DNS name whenever it fits in one.
    if sni.len() <= 253 {
        assert!(rustls::pki_types::ServerName::try_from(sni.as_str()).is_ok(), "{sni:?} is not a valid SNI");
    }
}

// ---------------------------------------------------------------- host

/// Canonical names the lookups below can hit (extra ones come from the input's further lines).
const HOSTS: [&str; 5] =
    ["web.shop.svc.cluster.local", "db-1.db.shop.svc.cluster.local", "api.example.com", "a.b.c.d.e.f", "10.96.0.10"];

fn shown(h: Option<HostName<'_>>) -> Option<String> {
    h.map(|h| h.to_string())
}

/// `names::normalize` and `names::resolve`. The first line of the input is a Host header, further lines are
/// extra names in the table it is looked up in.
///
/// normalize never panics; it ignores ASCII case; a name it gives is non-empty, lowercase, without a trailing
/// dot, `:`, whitespace or control characters; an address it gives prints as itself; and its output, read
/// again (also with a trailing dot or a `:port` added), gives the same text. resolve never panics, asks for the
/// candidates of the Kubernetes search path (`ndots: 5`) in order, and returns the first one found.
pub fn host(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let header = lines.next().unwrap_or_default();
    let table: Vec<&str> = HOSTS.iter().copied().chain(lines).collect();

    let normalized = names::normalize(header);
    let out = shown(normalized.clone());
    assert_eq!(shown(names::normalize(&header.to_ascii_uppercase())), out, "case matters for {header:?}");
    assert_eq!(shown(names::normalize(&header.to_ascii_lowercase())), out, "case matters for {header:?}");
    if let Some(h) = normalized {
        let t = h.to_string();
        let with_port = match &h {
            HostName::Name(n) => {
                assert!(!n.is_empty(), "{header:?} normalizes to an empty name");
                assert!(!n.ends_with('.'), "{header:?} normalizes to {n:?}, with a trailing dot");
                assert!(
                    !n.chars().any(|c| c == ':' || c.is_whitespace() || c.is_control() || c.is_ascii_uppercase()),
                    "{header:?} normalizes to {n:?}"
                );
                assert_eq!(shown(names::normalize(&format!("{t}."))), Some(t.clone()), "{t:?} with a trailing dot");
                format!("{t}:8080")
            }
            HostName::Ip(ip) => {
                assert_eq!(t.parse::<IpAddr>().ok(), Some(*ip));
                if ip.is_ipv6() { format!("[{t}]:8080") } else { format!("{t}:8080") }
            }
        };
        assert_eq!(shown(names::normalize(&t)), Some(t.clone()), "normalize is not idempotent on {header:?}");
        assert_eq!(shown(names::normalize(&with_port)), Some(t.clone()), "{with_port:?}");
        if let HostName::Name(n) = &h {
            check_resolve(n, &table);
        }
    }
    // resolve does not rely on its input being normalized.
    check_resolve(header, &table);
}

fn check_resolve(name: &str, table: &[&str]) {
    let (ns, domain) = ("shop", "cluster.local");
    let mut asked = Vec::new();
    let got = names::resolve(name, ns, domain, |candidate| {
        asked.push(candidate.to_string());
        table.iter().position(|t| *t == candidate)
    });
    let search = [format!("{name}.{ns}.svc.{domain}"), format!("{name}.svc.{domain}"), format!("{name}.{domain}")];
    let mut candidates: Vec<String> = search.to_vec();
    if name.matches('.').count() >= 5 {
        candidates.insert(0, name.to_string());
    } else {
        candidates.push(name.to_string());
    }
    let hit = candidates.iter().position(|c| table.contains(&c.as_str()));
    let asks = hit.map_or(candidates.len(), |i| i + 1);
    assert_eq!(asked, candidates[..asks], "the candidates resolve asked for {name:?}");
    let want = hit.and_then(|i| Some((table.iter().position(|t| *t == candidates[i])?, candidates[i].clone())));
    assert_eq!(got, want, "resolve({name:?})");
}

// ---------------------------------------------------------------- config

/// `ProxyConfig` from JSON (the file `podmesh routes -o json` writes and the sidecar runs on): never panics;
/// a config that parses serializes, parses again to an equal config, and serializes to the same bytes again.
pub fn config(data: &[u8]) {
    let Ok(config) = serde_json::from_slice::<ProxyConfig>(data) else { return };
    let json = match serde_json::to_vec(&config) {
        Ok(json) => json,
        Err(e) => panic!("a config that parsed does not serialize: {e}"),
    };
    let again = match serde_json::from_slice::<ProxyConfig>(&json) {
        Ok(again) => again,
        Err(e) => panic!("a serialized config does not parse: {e}\n{}", String::from_utf8_lossy(&json)),
    };
    assert!(again == config, "the config changed through JSON:\n{}", String::from_utf8_lossy(&json));
    assert!(serde_json::to_vec(&again).ok() == Some(json), "serializing is not stable");
}

// ---------------------------------------------------------------- manifest

/// The load's outcome, comparable: the cluster (its Debug text; all its maps are ordered) and the diagnostics.
fn load(text: &str) -> (Option<String>, Vec<Diagnostic>) {
    match podmesh_model::load_str(&[("fuzz.yaml", text)]) {
        Ok(loaded) => (Some(format!("{:?}", loaded.cluster)), loaded.warnings),
        Err(e) => (None, e.diagnostics),
    }
}

/// Loading manifests and the YAML reader: never panics (the loader catches a parser panic and reports it, so a
/// diagnostic saying so fails here); loading the same text twice gives the same cluster and diagnostics, which
/// point into the text; and a value `yaml::parse` reads, printed by `yaml::to_string`, reads back equal.
pub fn manifest(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = load(&text);
    for d in &first.1 {
        assert!(!d.message.contains("parser failed"), "the YAML parser panicked: {d}");
        if let Some(origin) = &d.origin {
            assert_eq!(&*origin.file, "fuzz.yaml", "{d}");
            assert!(origin.line >= 1 && origin.line <= text.split('\n').count(), "{d}");
        }
    }
    assert!(load(&text) == first, "loading the same text twice gave different results");

    if let Ok(value) = yaml::parse(&text, Limits::default()) {
        let printed = yaml::to_string(&value);
        assert_eq!(yaml::parse(&printed, Limits::default()), Ok(value), "printed as:\n{printed}");
    }
}

// ---------------------------------------------------------------- http_head

/// An HTTP/1 request head read by httparse (the parser under hyper): never panics; a complete head lies within
/// the input and parses alike from its own bytes; and one that starts with a method detection knows is HTTP/1
/// to detection too. (Detection calls a head with another method, or after an empty line, opaque.)
pub fn http_head(data: &[u8]) {
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(n)) = req.parse(data) else { return };
    assert!(n <= data.len());
    let head = (req.method, req.path, req.version, req.headers.iter().map(|h| (h.name, h.value)).collect::<Vec<_>>());

    let mut headers = [httparse::EMPTY_HEADER; 100];
    let mut again = httparse::Request::new(&mut headers);
    assert_eq!(again.parse(&data[..n]).ok(), Some(httparse::Status::Complete(n)));
    let again = (again.method, again.path, again.version, again.headers.iter().map(|h| (h.name, h.value)).collect());
    assert_eq!(again, head);

    if let Some(method) = head.0
        && data.starts_with(method.as_bytes())
        && METHODS.iter().any(|m| m.strip_suffix(b" ") == Some(method.as_bytes()))
    {
        assert_eq!(classify(data), Some(Sniffed::Http1), "httparse reads a {method} request");
    }
}

// ---------------------------------------------------------------- xds_request

/// What the control plane reads from a sidecar's xDS stream (a sidecar is not trusted): any bytes that decode as a
/// `DeltaDiscoveryRequest` are classified without panicking; a known type is recognised by its URL exactly; a
/// NACK's reason is bounded and never empty; the node's pod, when accepted, is a valid "namespace/name".
pub fn xds_request(data: &[u8]) {
    use podmesh_api::xds::DeltaDiscoveryRequest;
    use podmesh_control::ads::{Asked, MAX_REASON_CHARS, asked, node_pod};
    use prost::Message;
    let Ok(req) = DeltaDiscoveryRequest::decode(data) else { return };
    if let Ok(pod) = node_pod(&req) {
        assert!(!pod.namespace.is_empty() && !pod.name.is_empty() && !pod.name.contains('/'), "{pod:?}");
    }
    let type_url = req.type_url.clone();
    match asked(req) {
        Asked::Unknown(url) => assert!(url == type_url && podmesh_api::Kind::from_type_url(&url).is_none()),
        Asked::Answer { kind, nonce, nack } => {
            assert!(kind.type_url() == type_url && !nonce.is_empty());
            if let Some(reason) = nack {
                assert!(!reason.is_empty() && reason.chars().count() <= MAX_REASON_CHARS);
            }
        }
        Asked::Subscribe { kind, .. } => assert!(kind.type_url() == type_url),
    }
}

// ---------------------------------------------------------------- certificate_request

/// The CA of the quickstart cluster, with a fixed token key, made once.
fn fuzz_ca() -> &'static (podmesh_control::Authority, podmesh_compute::Index) {
    static CA: std::sync::OnceLock<(podmesh_control::Authority, podmesh_compute::Index)> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
        let root = if root.exists() {
            root
        } else {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/quickstart")
        };
        let loaded = podmesh_model::load(&[podmesh_model::Source::Path(root)]).expect("the quickstart loads");
        let ttl = std::time::Duration::from_secs(3600);
        let authority =
            podmesh_control::Authority::ephemeral("cluster.local", ttl, b"podmesh fuzzing token key").expect("a CA");
        (authority, podmesh_compute::Index::new(loaded.cluster))
    })
}

/// What the CA reads from a caller: `data` is a one-byte length, that many bytes of `authorization` header, and
/// a `CertificateRequest`. Never panics; a certificate is issued only for a token this CA made, for the token's
/// pod, which has a sidecar; its identity is that pod's whatever the CSR asked.
pub fn certificate_request(data: &[u8]) {
    use podmesh_api::pb::CertificateRequest;
    use prost::Message;
    let Some((&n, rest)) = data.split_first() else { return };
    let (auth, body) = rest.split_at(usize::from(n).min(rest.len()));
    let Ok(auth) = std::str::from_utf8(auth) else { return };
    let Ok(req) = CertificateRequest::decode(body) else { return };
    let (authority, index) = fuzz_ca();
    let Ok(resp) = podmesh_control::certs::sign_for(authority, index, Some(auth), req) else { return };
    let token = auth.strip_prefix("Bearer ").expect("issued without a bearer token");
    let pod = authority.verify_token(token).expect("issued for a token the CA did not make");
    assert!(resp.pod == pod.to_string());
    let expected = index.proxy_config(&pod).expect("issued for a pod without a sidecar").workload.identity;
    let chain = resp.cert_chain.join("");
    let leaf = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(chain.as_bytes()).expect("a PEM certificate")
    };
    let got = podmesh_identity::peer_identity(&[leaf]).expect("a SPIFFE identity");
    assert!(got == expected, "issued {} for {pod}, whose identity is {}", got.as_str(), expected.as_str());
}

// ---------------------------------------------------------------- resource_decode

/// What a sidecar reads from the control plane (trusted, but a bug there must not take a sidecar down): the bytes,
/// as the body of one resource of each kind, are accepted or refused by `Parts::decode`, never a panic. A refusal
/// names the resource. `Parts::decode` and `podmesh_api::decode` agree, and what decodes has a canonical form: it
/// encodes to bytes that decode to the same value and encode to the same bytes again.
pub fn resource_decode(data: &[u8]) {
    use podmesh_api::xds::Any;
    use podmesh_api::{Change, Kind, Parts, WorkloadPart};
    use podmesh_compute::{DirectPod, Listener, RouteTable, Upstream};
    for kind in Kind::ALL {
        let name = match kind {
            Kind::TrustBundle => podmesh_api::TRUST_BUNDLE,
            Kind::Cluster => "outbound|80||web.shop.svc.cluster.local",
            Kind::DirectPod => "10.244.0.1",
            Kind::Workload => "shop/client",
            Kind::RouteTable => "80",
            Kind::Listener => "10.96.0.1:80",
        };
        let body = Any { type_url: kind.type_url().to_string(), value: data.to_vec() };
        let accepted = match Parts::decode(kind, [Change::Put { name, body: &body }]) {
            Ok(decoded) => !decoded.is_empty(),
            Err(e) => {
                assert!(e.0.starts_with(&format!("{kind} {name}: ")), "a refusal that does not name the resource: {e}");
                false
            }
        };
        let decodes = match kind {
            Kind::TrustBundle => accepted,
            Kind::Cluster => canonical::<Upstream>(name, &body),
            Kind::DirectPod => canonical::<DirectPod>(name, &body),
            Kind::Workload => canonical::<WorkloadPart>(name, &body),
            Kind::RouteTable => canonical::<RouteTable>(name, &body),
            Kind::Listener => canonical::<Listener>(name, &body),
        };
        assert!(accepted == decodes, "{kind}: Parts::decode accepted: {accepted}, decode: {decodes}");
    }
}

/// Whether `body` decodes as an `R`; if it does, re-encoding is canonical.
fn canonical<R: podmesh_api::Resource + PartialEq + std::fmt::Debug>(name: &str, body: &podmesh_api::xds::Any) -> bool {
    use podmesh_api::{decode, encode};
    let Ok(value) = decode::<R>(name, body) else { return false };
    let again = encode(&value);
    let back =
        decode::<R>(name, &again).unwrap_or_else(|e| panic!("{value:?} encodes to bytes that do not decode: {e}"));
    assert!(back == value, "{value:?} decodes back as {back:?}");
    assert!(encode(&back) == again, "{value:?}: its encoding is not canonical");
    true
}
