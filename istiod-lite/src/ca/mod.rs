//! The mesh CA: `istio.v1.auth.IstioCertificateService/CreateCertificate` on the xDS port.
//!
//! Who may have which identity:
//! * a node's ztunnel may obtain, by impersonation (`ImpersonatedIdentity` metadata), the
//!   identity of any service account that has a pod scheduled on its own node;
//! * a workload may obtain only its own identity, never impersonate.
//!
//! Everything else is PermissionDenied, with a message that says why.

pub mod authority;

use std::sync::Arc;
use std::time::Duration;

use mesh_core::identity::Identity;
use mesh_core::proto::istio::ca::istio_certificate_service_server::IstioCertificateService;
use mesh_core::proto::istio::ca::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Caller};
use crate::metrics::Metrics;
use crate::store::Store;
pub use authority::Authority;

pub use mesh_core::identity::manager::IMPERSONATED_IDENTITY;

pub struct CaService {
    pub authority: Arc<Authority>,
    pub authenticator: Arc<dyn Authenticator>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub default_ttl: Duration,
    pub max_ttl: Duration,
}

impl CaService {
    fn refuse(&self, reason: &str, status: Status) -> Status {
        self.metrics
            .certs_refused
            .with_label_values(&[reason])
            .inc();
        tracing::warn!(
            reason,
            message = status.message(),
            "certificate request refused"
        );
        status
    }

    /// Which identity the caller may receive for this request.
    fn authorize(&self, caller: &Caller, impersonated: Option<&str>) -> Result<Identity, Status> {
        let td = self.authority.trust_domain();
        match (caller, impersonated) {
            (Caller::Node { node }, Some(requested)) => {
                let id: Identity = requested.parse().map_err(|e| {
                    Status::invalid_argument(format!("{IMPERSONATED_IDENTITY}: {e}"))
                })?;
                if id.trust_domain != td {
                    return Err(Status::permission_denied(format!(
                        "{id} is not in this mesh's trust domain {td}"
                    )));
                }
                let snapshot = self.store.snapshot();
                let runs_here = crate::store::in_namespace(&snapshot.pods, &id.namespace).any(|p| {
                    p.spec.node_name.as_deref() == Some(node.as_str())
                        && p.service_account() == id.service_account
                        && !p.is_terminal()
                });
                if !runs_here {
                    return Err(Status::permission_denied(format!(
                        "the ztunnel of node {node} may not obtain certificates for {id}: no pod with service account {}/{} is scheduled on {node}",
                        id.namespace, id.service_account
                    )));
                }
                Ok(id)
            }
            (Caller::Node { node }, None) => Err(Status::permission_denied(format!(
                "the ztunnel of node {node} must name the pod identity it requests in {IMPERSONATED_IDENTITY} metadata"
            ))),
            (Caller::Workload { .. }, Some(_)) => Err(Status::permission_denied(format!(
                "{caller} may not impersonate other identities; only node proxies may"
            ))),
            (
                Caller::Workload {
                    namespace,
                    service_account,
                },
                None,
            ) => Ok(Identity::new(td, namespace, service_account)),
        }
    }
}

fn impersonated_identity(req: &IstioCertificateRequest) -> Result<Option<&str>, Status> {
    let Some(value) = req
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    match &value.kind {
        Some(prost_types::value::Kind::StringValue(s)) => Ok(Some(s.as_str())),
        _ => Err(Status::invalid_argument(format!(
            "{IMPERSONATED_IDENTITY} metadata must be a string"
        ))),
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        self.metrics.csr_total.inc();
        let caller = self
            .authenticator
            .authenticate(request.metadata())
            .map_err(|s| self.refuse("unauthenticated", s))?;
        let req = request.get_ref();
        let impersonated =
            impersonated_identity(req).map_err(|s| self.refuse("invalid_request", s))?;
        let identity = self.authorize(&caller, impersonated).map_err(|s| {
            let reason = if s.code() == tonic::Code::InvalidArgument {
                "invalid_request"
            } else {
                "permission_denied"
            };
            self.refuse(reason, s)
        })?;
        let ttl = match req.validity_duration {
            d if d > 0 => Duration::from_secs(d as u64).min(self.max_ttl),
            _ => self.default_ttl,
        };
        // Signing is CPU work (an ECDSA signature and a verification): keep it off the reactor.
        let authority = self.authority.clone();
        let csr = req.csr.clone();
        let id = identity.clone();
        let chain = tokio::task::spawn_blocking(move || authority.sign_csr(&csr, &id, ttl))
            .await
            .map_err(|e| Status::internal(format!("signer task failed: {e}")))?
            .map_err(|e| match e {
                authority::SignError::Csr(e) => {
                    self.refuse("invalid_csr", Status::invalid_argument(e.to_string()))
                }
                authority::SignError::Internal(e) => self.refuse("internal", Status::internal(e)),
            })?;
        self.metrics.certs_issued.inc();
        tracing::info!(caller = %caller, identity = %identity, ttl_seconds = ttl.as_secs(), "certificate issued");
        Ok(Response::new(IstioCertificateResponse {
            cert_chain: chain,
        }))
    }
}
