//! The CA's gRPC service: a CSR in, a certificate for the token's pod out. The token is this CA's bootstrap token
//! for one pod (`podmesh up`, `podmesh token`) or, on a Kubernetes cluster, the pod's projected ServiceAccount
//! token, which the API server reviews ([`crate::TokenReview`]).

use std::sync::Arc;
use std::time::Duration;

use podmesh_api::pb::{CertificateRequest, CertificateResponse, certificate_service_server::CertificateService};
use podmesh_compute::Index;
use podmesh_identity::Identity;
use podmesh_model::ObjectKey;
use tonic::{Request, Response, Status};

use crate::status::ResultLabel;
use crate::{Authority, ReviewError, Reviewed, Shared};

#[derive(Debug, Clone)]
pub struct Certs {
    pub shared: Arc<Shared>,
}

#[tonic::async_trait]
impl CertificateService for Certs {
    async fn create_certificate(
        &self,
        req: Request<CertificateRequest>,
    ) -> Result<Response<CertificateResponse>, Status> {
        let result = self.sign(req).await;
        let label = ResultLabel { result: if result.is_ok() { "signed" } else { "refused" }.to_string() };
        self.shared.metrics.csrs.get_or_create(&label).inc();
        if let Err(e) = &result {
            eprintln!("podmesh control: certificate request refused: {}", e.message());
        }
        result.map(Response::new)
    }
}

impl Certs {
    async fn sign(&self, req: Request<CertificateRequest>) -> Result<CertificateResponse, Status> {
        let token = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        let authority = &self.shared.authority;
        let (bearer, review) = match (bearer(token.as_deref()), authority.token_review()) {
            (Ok(t), Some(review)) if !Authority::is_bootstrap_token(t) => (t, review),
            _ => return sign_for(authority, &self.shared.index.read(), token.as_deref(), req.into_inner()),
        };
        let reviewed = review.review(bearer).await.map_err(|e| match e {
            ReviewError::Refused(why) => Status::unauthenticated(format!("ServiceAccount token refused: {why}")),
            ReviewError::Unavailable(why) => Status::unavailable(format!("cannot review the token now: {why}")),
        })?;
        sign_for_account(authority, &self.shared.index.read(), &reviewed, req.into_inner())
    }
}

/// The token of an `authorization: Bearer <token>` value.
fn bearer(authorization: Option<&str>) -> Result<&str, Status> {
    authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| Status::unauthenticated("no token: send the pod's token as `authorization: Bearer <token>`"))
}

/// Decides one certificate request with a bootstrap token: the token (the `authorization` header's value) must be
/// this CA's for a pod with a sidecar in `index`; the certificate gets that pod's identity. The one place the CA
/// reads untrusted input (fuzzed: `fuzz/fuzz_targets/certificate_request.rs`).
pub fn sign_for(
    authority: &Authority,
    index: &Index,
    authorization: Option<&str>,
    req: CertificateRequest,
) -> Result<CertificateResponse, Status> {
    let token = bearer(authorization)?;
    let pod = authority
        .verify_token(token)
        .ok_or_else(|| Status::unauthenticated("bootstrap token refused: this control plane's CA did not make it"))?;
    let identity = match index.pod(&pod) {
        Some(p) if p.sidecar => index.identity_of(p),
        Some(_) => return Err(Status::permission_denied(format!("pod {pod} has no sidecar, so it gets no identity"))),
        None => return Err(Status::permission_denied(format!("no pod {pod} in the mesh's manifests"))),
    };
    sign_as(authority, &pod, &identity, req)
}

/// Decides one certificate request with a ServiceAccount token the API server has vouched for (`reviewed`): the
/// token must be bound to a pod with a sidecar in `index` that runs as the token's ServiceAccount, so the
/// identity signed (`spiffe://<td>/ns/<namespace>/sa/<service account>`) is exactly the token's.
pub fn sign_for_account(
    authority: &Authority,
    index: &Index,
    reviewed: &Reviewed,
    req: CertificateRequest,
) -> Result<CertificateResponse, Status> {
    let account = format!("{}/{}", reviewed.namespace, reviewed.service_account);
    let Some(name) = &reviewed.pod else {
        return Err(Status::unauthenticated(format!(
            "the token of ServiceAccount {account} is bound to no pod: mount a projected ServiceAccount token \
             (audience podmesh), as `podmesh inject` does"
        )));
    };
    let pod = ObjectKey::new(reviewed.namespace.as_str(), name.as_str());
    let identity = match index.pod(&pod) {
        Some(p) if !p.sidecar => {
            return Err(Status::permission_denied(format!("pod {pod} has no sidecar, so it gets no identity")));
        }
        Some(p) if p.service_account != reviewed.service_account => {
            return Err(Status::permission_denied(format!(
                "pod {pod} runs as ServiceAccount {}, but the token is {account}'s",
                p.service_account
            )));
        }
        Some(p) => index.identity_of(p),
        None => return Err(Status::unavailable(format!("no pod {pod} in the mesh yet (its watch event may be late)"))),
    };
    let expected = Identity::new(&index.cluster().mesh.trust_domain, &reviewed.namespace, &reviewed.service_account);
    if identity != expected {
        return Err(Status::permission_denied(format!(
            "pod {pod}'s identity is {identity}, not the token's {expected}"
        )));
    }
    sign_as(authority, &pod, &identity, req)
}

fn sign_as(
    authority: &Authority,
    pod: &ObjectKey,
    identity: &Identity,
    req: CertificateRequest,
) -> Result<CertificateResponse, Status> {
    let ttl = Duration::from_secs(u64::try_from(req.validity_seconds).unwrap_or(0));
    let chain = authority
        .sign(&req.csr, identity, ttl)
        .map_err(|e| Status::invalid_argument(format!("the CSR cannot be signed: {e}")))?;
    Ok(CertificateResponse {
        cert_chain: vec![chain],
        trust_anchors: authority.trust_anchors().to_vec(),
        pod: pod.to_string(),
    })
}
