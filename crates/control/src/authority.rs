//! The mesh CA as the control plane runs it: a root created on first start and kept in a state directory (or
//! provided there as files), per-pod bootstrap tokens, and signing CSRs for the identity a token's pod has.
//!
//! State directory: `root.pem` and `root-key.pem` (the signing root, the layout `podmesh ca create` writes),
//! `token-key` (the secret bootstrap tokens are derived from) and, optionally, `trusted-roots.pem`: more roots
//! every sidecar trusts alongside the signing one. That file is the root-rotation path, in two restarts: first
//! the new root goes there (every sidecar learns to trust it), then it moves to `root.pem` and the old root to
//! `trusted-roots.pem` until the old one's certificates have expired.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use podmesh_identity::{Ca, Identity};
use podmesh_model::ObjectKey;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The identity the control plane's own serving certificate carries; sidecars accept no other.
pub fn control_identity(trust_domain: &str) -> Identity {
    Identity::new(trust_domain, "podmesh-system", "podmesh-control")
}

#[derive(Debug, thiserror::Error)]
pub enum AuthorityError {
    #[error("{path}: {cause}")]
    Io { path: PathBuf, cause: std::io::Error },
    #[error("{path}: {cause}")]
    Certificate { path: PathBuf, cause: podmesh_identity::Error },
    #[error("{path}: not a token key (64 hex digits)")]
    TokenKey { path: PathBuf },
    #[error("creating the root CA: {0}")]
    Create(podmesh_identity::Error),
    #[error("no random numbers from the system")]
    Random,
}

/// What the CA holds: the signing root, every trusted root, the token secret, and on a Kubernetes cluster the
/// API server's word on ServiceAccount tokens.
pub struct Authority {
    ca: Ca,
    trust_anchors: Vec<String>,
    token_key: hmac::Key,
    /// Certificate lifetime when the caller does not ask for one, and the most it may ask for.
    pub default_ttl: Duration,
    token_review: Option<Arc<dyn TokenReview>>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_anchors", &self.trust_anchors.len())
            .field("token_review", &self.token_review)
            .finish_non_exhaustive()
    }
}

/// Who a ServiceAccount token belongs to, as the Kubernetes API server says (a TokenReview's answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub namespace: String,
    pub service_account: String,
    /// The pod a projected token is bound to (`authentication.kubernetes.io/pod-name`); `None` for a token bound
    /// to no pod (a legacy Secret token), which names no pod and so gets no certificate.
    pub pod: Option<String>,
}

/// Why a token was not reviewed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The API server says the token is not valid (expired, revoked, another audience, not a ServiceAccount's).
    #[error("{0}")]
    Refused(String),
    /// The API server could not be asked (unreachable, or the control plane may not create TokenReviews): the
    /// sidecar should try again.
    #[error("{0}")]
    Unavailable(String),
}

/// Checks a ServiceAccount token with the API server (`podmesh-kube`'s TokenReview).
pub trait TokenReview: Send + Sync + std::fmt::Debug {
    fn review<'a>(&'a self, token: &'a str)
    -> Pin<Box<dyn Future<Output = Result<Reviewed, ReviewError>> + Send + 'a>>;
}

const TOKEN_PREFIX: &str = "podmesh-v1";

impl Authority {
    /// Opens the state in `dir`, creating the root and the token key on first start.
    pub fn open(dir: &Path, trust_domain: &str, default_ttl: Duration) -> Result<Authority, AuthorityError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| AuthorityError::Io { path, cause }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (root, root_key) = (dir.join("root.pem"), dir.join("root-key.pem"));
        let ca = if root.exists() {
            let cert = std::fs::read_to_string(&root).map_err(io(&root))?;
            let key = std::fs::read_to_string(&root_key).map_err(io(&root_key))?;
            Ca::from_pem(&cert, &key).map_err(|cause| AuthorityError::Certificate { path: root.clone(), cause })?
        } else {
            let ca = Ca::new(trust_domain).map_err(AuthorityError::Create)?;
            write_private(&root_key, &ca.key_pem())?;
            std::fs::write(&root, ca.cert_pem()).map_err(io(&root))?;
            ca
        };
        let mut trust_anchors = vec![ca.cert_pem()];
        let extra = dir.join("trusted-roots.pem");
        if extra.exists() {
            let pem = std::fs::read_to_string(&extra).map_err(io(&extra))?;
            // Checked here so that a bad file is named at start, not by every sidecar.
            podmesh_identity::Credentials::check_roots(&pem)
                .map_err(|cause| AuthorityError::Certificate { path: extra.clone(), cause })?;
            trust_anchors.push(pem);
        }
        let key_path = dir.join("token-key");
        let secret = if key_path.exists() {
            let text = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
            from_hex(text.trim()).filter(|k| k.len() == 32).ok_or(AuthorityError::TokenKey { path: key_path })?
        } else {
            let mut k = [0u8; 32];
            SystemRandom::new().fill(&mut k).map_err(|_| AuthorityError::Random)?;
            write_private(&key_path, &to_hex(&k))?;
            k.to_vec()
        };
        let token_key = hmac::Key::new(hmac::HMAC_SHA256, &secret);
        Ok(Authority { ca, trust_anchors, token_key, default_ttl, token_review: None })
    }

    /// A CA that lives in memory only, with `token_secret` as its token key (for tests and fuzzing).
    pub fn ephemeral(
        trust_domain: &str,
        default_ttl: Duration,
        token_secret: &[u8],
    ) -> Result<Authority, AuthorityError> {
        let ca = Ca::new(trust_domain).map_err(AuthorityError::Create)?;
        let trust_anchors = vec![ca.cert_pem()];
        let token_key = hmac::Key::new(hmac::HMAC_SHA256, token_secret);
        Ok(Authority { ca, trust_anchors, token_key, default_ttl, token_review: None })
    }

    /// Also accepts ServiceAccount tokens, as `review` judges them (on a Kubernetes cluster: TokenReview).
    pub fn with_token_review(mut self, review: Arc<dyn TokenReview>) -> Authority {
        self.token_review = Some(review);
        self
    }

    /// What judges ServiceAccount tokens, if this CA accepts them.
    pub fn token_review(&self) -> Option<&Arc<dyn TokenReview>> {
        self.token_review.as_ref()
    }

    /// Whether `token` has the form of this CA's bootstrap tokens (whether or not this CA made it).
    pub fn is_bootstrap_token(token: &str) -> bool {
        token.trim().starts_with(TOKEN_PREFIX) && token.trim()[TOKEN_PREFIX.len()..].starts_with('/')
    }

    /// The bootstrap token of one pod: what the runtime hands that pod's sidecar. It proves nothing but the pod's
    /// name, so it is worth exactly that pod's identity, and is as secret as a ServiceAccount token.
    pub fn token(&self, pod: &ObjectKey) -> String {
        let claim = format!("{TOKEN_PREFIX}/{}/{}", pod.namespace, pod.name);
        let tag = hmac::sign(&self.token_key, claim.as_bytes());
        format!("{claim}/{}", to_hex(tag.as_ref()))
    }

    /// The pod a token was made for, if this CA made it.
    pub fn verify_token(&self, token: &str) -> Option<ObjectKey> {
        let (claim, tag) = token.trim().rsplit_once('/')?;
        let mut parts = claim.split('/');
        let (prefix, ns, name) = (parts.next()?, parts.next()?, parts.next()?);
        if prefix != TOKEN_PREFIX || parts.next().is_some() || ns.is_empty() || name.is_empty() {
            return None;
        }
        hmac::verify(&self.token_key, claim.as_bytes(), &from_hex(tag)?).ok()?;
        Some(ObjectKey::new(ns, name))
    }

    /// Signs `csr_pem` for `identity`, for `ttl` capped at the default lifetime (0: the default).
    pub fn sign(&self, csr_pem: &str, identity: &Identity, ttl: Duration) -> Result<String, podmesh_identity::Error> {
        let ttl = if ttl.is_zero() { self.default_ttl } else { ttl.min(self.default_ttl) };
        self.ca.sign_csr(csr_pem, identity, ttl)
    }

    /// A certificate and key for the control plane itself.
    pub fn issue(&self, identity: &Identity) -> Result<podmesh_identity::WorkloadCert, podmesh_identity::Error> {
        self.ca.issue(identity, self.default_ttl)
    }

    /// A certificate and key for a server the Kubernetes API server dials by DNS name (the admission webhook), for
    /// the default lifetime.
    pub fn issue_server(
        &self,
        dns_names: &[String],
    ) -> Result<podmesh_identity::WorkloadCert, podmesh_identity::Error> {
        self.ca.issue_server(dns_names, self.default_ttl)
    }

    /// Every root sidecars trust (PEM), the signing root first.
    pub fn trust_anchors(&self) -> &[String] {
        &self.trust_anchors
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), AuthorityError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |cause| AuthorityError::Io { path: path.to_path_buf(), cause };
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    #[test]
    fn tokens_name_one_pod_and_only_this_ca_makes_them() {
        let dir = std::env::temp_dir().join(format!("podmesh-authority-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let a = Authority::open(&dir, "cluster.local", Duration::from_secs(3600)).unwrap();
        let pod = ObjectKey::new("shop", "web-0");
        let t = a.token(&pod);
        assert_eq!(a.verify_token(&t), Some(pod.clone()));
        // Another pod's name with this pod's tag, a cut tag, garbage: refused.
        let forged = t.replace("web-0", "web-1");
        assert_eq!(a.verify_token(&forged), None);
        assert_eq!(a.verify_token(&t[..t.len() - 2]), None);
        assert_eq!(a.verify_token("podmesh-v1/shop/web-0/zz"), None);
        assert_eq!(a.verify_token(""), None);
        // Reopened from the same directory: the same root and the same tokens.
        let b = Authority::open(&dir, "cluster.local", Duration::from_secs(3600)).unwrap();
        assert_eq!(b.trust_anchors(), a.trust_anchors());
        assert_eq!(b.verify_token(&t), Some(pod.clone()));
        // Another state directory: another CA, whose tokens this one refuses.
        let other_dir = dir.join("other");
        let c = Authority::open(&other_dir, "cluster.local", Duration::from_secs(3600)).unwrap();
        assert_eq!(a.verify_token(&c.token(&pod)), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
