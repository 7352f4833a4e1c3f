//! The certificates of the identities a proxy serves, from the mesh CA
//! (`istio.v1.auth.IstioCertificateService/CreateCertificate`): a fresh P-256 key and CSR per
//! request, and renewal at half life. While a renewal is under way (or failing, with backoff),
//! the old certificate keeps serving until it expires.
//!
//! Who asks decides how: a node proxy (ztunnel) asks on a pod's behalf, naming the pod's identity
//! in `ImpersonatedIdentity` metadata; a workload proxy (a waypoint) asks as itself, and the CA
//! gives it the identity its token names and no other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use tokio::sync::watch;

use super::Identity;
use crate::control_plane::ControlPlane;
use crate::mtls::WorkloadCertificate;
use crate::proto::istio::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::proto::istio::ca::IstioCertificateRequest;

/// The metadata key naming the identity a node proxy asks for on a pod's behalf.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(150);

/// Whose certificates a proxy asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requester {
    /// A node proxy, for the pods of its node: every request names the identity
    /// (`ImpersonatedIdentity`).
    Node,
    /// A workload, for its own identity only.
    Workload,
}

#[derive(Clone, Debug)]
pub struct CaConfig {
    /// The CA (istiod-lite's xDS port, by default).
    pub control_plane: ControlPlane,
    pub requester: Requester,
    /// Lifetime to ask for.
    pub ttl: Duration,
}

#[derive(Debug, thiserror::Error, Clone)]
pub enum IdentityError {
    #[error("making a CSR: {0}")]
    Csr(String),
    #[error("reaching the CA at {0}: {1}")]
    Connect(String, String),
    #[error("the CA refused {identity}: {status}")]
    Refused { identity: String, status: String },
    #[error("the CA's answer for {0} is unusable: {1}")]
    Response(String, String),
}

/// Requests one certificate for `id`.
pub async fn request(
    config: &CaConfig,
    id: &Identity,
) -> Result<WorkloadCertificate, IdentityError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    let mut params = CertificateParams::default();
    // Empty subject: the SAN (marked critical for that reason) is the identity.
    params.distinguished_name = DistinguishedName::new();
    let uri = id
        .to_string()
        .try_into()
        .map_err(|_| IdentityError::Csr("identity is not IA5 text".into()))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| IdentityError::Csr(e.to_string()))?;
    let cp = &config.control_plane;
    let connect_err = |e: String| IdentityError::Connect(cp.address.clone(), e);
    let channel = cp.connect().await.map_err(|e| connect_err(e.to_string()))?;
    let metadata = match config.requester {
        Requester::Node => Some(prost_types::Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(id.to_string())),
                },
            )]
            .into_iter()
            .collect(),
        }),
        Requester::Workload => None,
    };
    let req = cp
        .request(IstioCertificateRequest {
            csr,
            validity_duration: config.ttl.as_secs() as i64,
            metadata,
        })
        .map_err(|e| connect_err(e.to_string()))?;
    let resp = IstioCertificateServiceClient::new(channel)
        .create_certificate(req)
        .await
        .map_err(|s| IdentityError::Refused {
            identity: id.to_string(),
            status: format!("{:?}: {}", s.code(), s.message()),
        })?
        .into_inner();
    WorkloadCertificate::from_pem(&resp.cert_chain, &key.serialize_pem(), id)
        .map_err(|e| IdentityError::Response(id.to_string(), e.to_string()))
}

/// When a certificate received at `received` should be renewed: half-way through what was left
/// of its life then. (Counting from `not_before` would renew at once: the CA backdates it for
/// clock skew, which for short lifetimes is most of the life.)
pub fn renew_at(cert: &WorkloadCertificate, received: SystemTime) -> SystemTime {
    let left = cert.not_after.duration_since(received).unwrap_or_default();
    received + left / 2
}

struct Slot {
    cert: watch::Sender<Option<Arc<WorkloadCertificate>>>,
    renewal: Option<tokio::task::JoinHandle<()>>,
}

/// The certificates of every identity a proxy serves.
pub struct IdentityManager {
    config: CaConfig,
    slots: Mutex<HashMap<Identity, Slot>>,
}

impl IdentityManager {
    pub fn new(config: CaConfig) -> Arc<Self> {
        Arc::new(IdentityManager {
            config,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The current certificate of `id`, fetching it (and starting its renewal) on first use.
    /// Waits while the first fetch is under way; an expired certificate is never returned.
    pub async fn certificate(
        self: &Arc<Self>,
        id: &Identity,
    ) -> Result<Arc<WorkloadCertificate>, IdentityError> {
        // Either wait on the slot someone else is filling, or create it and fill it.
        let existing = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get(id) {
                Some(slot) => Some(slot.cert.subscribe()),
                None => {
                    let (tx, _) = watch::channel(None);
                    let slot = Slot {
                        cert: tx,
                        renewal: None,
                    };
                    slots.insert(id.clone(), slot);
                    None
                }
            }
        };
        let Some(mut rx) = existing else {
            let cert = Arc::new(request(&self.config, id).await.inspect_err(|_| {
                self.slots
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(id);
            })?);
            tracing::info!(identity = %id, expires = ?cert.not_after, "certificate issued");
            self.install(id, cert.clone());
            return Ok(cert);
        };
        let failed = || {
            IdentityError::Connect(
                self.config.control_plane.address.clone(),
                "the first fetch failed".into(),
            )
        };
        let cert = rx
            .wait_for(|c| c.as_ref().is_some_and(|c| c.not_after > SystemTime::now()))
            .await
            .map_err(|_| failed())?;
        cert.as_ref().cloned().ok_or_else(failed)
    }

    fn install(self: &Arc<Self>, id: &Identity, cert: Arc<WorkloadCertificate>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let Some(slot) = slots.get_mut(id) else {
            return;
        };
        slot.cert.send_replace(Some(cert.clone()));
        if slot.renewal.is_none() {
            let me = Arc::downgrade(self);
            slot.renewal = Some(tokio::spawn(renew(me, id.clone(), cert)));
        }
    }

    /// Drops an identity no local workload uses any more.
    pub fn forget(&self, id: &Identity) {
        if let Some(slot) = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
        {
            if let Some(task) = slot.renewal {
                task.abort();
            }
        }
    }

    /// Identities held, with their expiry (for admin endpoints).
    pub fn held(&self) -> Vec<(Identity, Option<SystemTime>)> {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(id, s)| (id.clone(), s.cert.borrow().as_ref().map(|c| c.not_after)))
            .collect()
    }
}

/// Renews `id` at half life for as long as its manager lives, retrying with backoff.
async fn renew(
    manager: std::sync::Weak<IdentityManager>,
    id: Identity,
    mut current: Arc<WorkloadCertificate>,
) {
    let mut received = SystemTime::now();
    loop {
        let wait = renew_at(&current, received)
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::sleep(wait).await;
        let mut backoff = INITIAL_BACKOFF;
        loop {
            let Some(manager) = manager.upgrade() else {
                return;
            };
            match request(&manager.config, &id).await {
                Ok(new) => {
                    current = Arc::new(new);
                    received = SystemTime::now();
                    tracing::info!(identity = %id, expires = ?current.not_after, "certificate renewed");
                    if let Some(slot) = manager
                        .slots
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&id)
                    {
                        slot.cert.send_replace(Some(current.clone()));
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(identity = %id, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "certificate renewal failed; the current certificate serves until it expires");
                    drop(manager);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl Drop for IdentityManager {
    fn drop(&mut self) {
        for slot in self
            .slots
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            if let Some(task) = &slot.renewal {
                task.abort();
            }
        }
    }
}
