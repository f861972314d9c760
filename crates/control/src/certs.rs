//! The CA's gRPC service: a CSR in, a certificate for the token's pod out.

use std::sync::Arc;
use std::time::Duration;

use podmesh_api::pb::{CertificateRequest, CertificateResponse, certificate_service_server::CertificateService};
use podmesh_compute::Index;
use tonic::{Request, Response, Status};

use crate::status::ResultLabel;
use crate::{Authority, Shared};

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
        let result = self.sign(req);
        let label = ResultLabel { result: if result.is_ok() { "signed" } else { "refused" }.to_string() };
        self.shared.metrics.csrs.get_or_create(&label).inc();
        if let Err(e) = &result {
            eprintln!("podmesh control: certificate request refused: {}", e.message());
        }
        result.map(Response::new)
    }
}

impl Certs {
    fn sign(&self, req: Request<CertificateRequest>) -> Result<CertificateResponse, Status> {
        let token = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_string);
        sign_for(&self.shared.authority, &self.shared.index.read(), token.as_deref(), req.into_inner())
    }
}

/// Decides one certificate request: the token (the `authorization` header's value) must be this CA's for a pod
/// with a sidecar in `index`; the certificate gets that pod's identity. The one place the CA reads untrusted input
/// (fuzzed: `fuzz/fuzz_targets/certificate_request.rs`).
pub fn sign_for(
    authority: &Authority,
    index: &Index,
    authorization: Option<&str>,
    req: CertificateRequest,
) -> Result<CertificateResponse, Status> {
    let token = authorization.and_then(|v| v.strip_prefix("Bearer ")).ok_or_else(|| {
        Status::unauthenticated("no bootstrap token: send the pod's token as `authorization: Bearer <token>`")
    })?;
    let pod = authority
        .verify_token(token)
        .ok_or_else(|| Status::unauthenticated("bootstrap token refused: this control plane's CA did not make it"))?;
    let identity = match index.pod(&pod) {
        Some(p) if p.sidecar => index.identity_of(p),
        Some(_) => return Err(Status::permission_denied(format!("pod {pod} has no sidecar, so it gets no identity"))),
        None => return Err(Status::permission_denied(format!("no pod {pod} in the mesh's manifests"))),
    };
    let ttl = Duration::from_secs(u64::try_from(req.validity_seconds).unwrap_or(0));
    let chain = authority
        .sign(&req.csr, &identity, ttl)
        .map_err(|e| Status::invalid_argument(format!("the CSR cannot be signed: {e}")))?;
    Ok(CertificateResponse {
        cert_chain: vec![chain],
        trust_anchors: authority.trust_anchors().to_vec(),
        pod: pod.to_string(),
    })
}
