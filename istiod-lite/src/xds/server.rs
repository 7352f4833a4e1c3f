//! The delta ADS stream (`DeltaAggregatedResources`), one task per connected client.
//!
//! Per type URL a client subscribes to (wildcard, as ztunnel does), the server remembers the
//! resource set it last sent. The first request of a type is answered at once, even when there
//! is nothing to send, so the client can become ready; later config changes send only changed
//! and removed resources. ACKs and NACKs are matched by nonce; a NACK is logged with the
//! client's message and counted, and the stream goes on (the client keeps its last good
//! resources; the next change of a rejected resource is sent as usual).
//!
//! A full state for a large mesh is megabytes: at most [`MAX_FULL_PUSHES`] clients may have an
//! unacknowledged full push at a time, so a reconnect storm cannot hold a copy per client.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use mesh_core::proto::envoy::config::core::v3::ControlPlane;
use mesh_core::proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryService;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::resources::{Delta, ResourceSet, XdsState, TYPE_URLS};
use crate::auth::{Authenticator, Caller};
use crate::metrics::Metrics;

/// Clients that may hold an unacknowledged full push at once.
pub const MAX_FULL_PUSHES: usize = 8;
/// A full push whose ACK does not come by then no longer holds its slot.
const FULL_PUSH_SLOT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct AdsServer {
    pub state: watch::Receiver<Arc<XdsState>>,
    pub authenticator: Arc<dyn Authenticator>,
    pub metrics: Arc<Metrics>,
    pub full_pushes: Arc<Semaphore>,
    pub identifier: String,
}

impl AdsServer {
    pub fn new(
        state: watch::Receiver<Arc<XdsState>>,
        authenticator: Arc<dyn Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AdsServer {
            state,
            authenticator,
            metrics,
            full_pushes: Arc::new(Semaphore::new(MAX_FULL_PUSHES)),
            identifier: format!("istiod-lite-{}", std::process::id()),
        }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsServer {
    type DeltaAggregatedResourcesStream = ReceiverStream<Result<DeltaDiscoveryResponse, Status>>;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let caller = self
            .authenticator
            .authenticate(request.metadata())
            .inspect_err(|s| tracing::warn!(message = s.message(), "xDS client refused"))?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let (tx, rx) = mpsc::channel(2);
        let conn = Connection {
            caller,
            peer,
            tx,
            state: self.state.clone(),
            metrics: self.metrics.clone(),
            full_pushes: self.full_pushes.clone(),
            identifier: self.identifier.clone(),
            subscriptions: HashMap::new(),
            pending: HashMap::new(),
            next_nonce: 0,
        };
        tokio::spawn(conn.run(request.into_inner()));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

struct Subscription {
    /// What the client was last sent for this type.
    sent: Arc<ResourceSet>,
}

/// A response awaiting its ACK or NACK.
struct Pending {
    type_url: String,
    sent_at: Instant,
    /// Held while an initial full push is unacknowledged.
    slot: Option<OwnedSemaphorePermit>,
}

struct Connection {
    caller: Caller,
    peer: String,
    tx: mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
    state: watch::Receiver<Arc<XdsState>>,
    metrics: Arc<Metrics>,
    full_pushes: Arc<Semaphore>,
    identifier: String,
    subscriptions: HashMap<String, Subscription>,
    pending: HashMap<String, Pending>,
    next_nonce: u64,
}

/// Why a stream ended.
enum End {
    ClientClosed,
    ClientError(Status),
    ResponseDropped,
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        self.metrics.xds_clients.inc();
        tracing::info!(caller = %self.caller, peer = %self.peer, "xDS client connected");
        // The current state is what a new subscription gets; later changes arrive as deltas.
        self.state.mark_unchanged();
        let end = loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    None => break End::ClientClosed,
                    Some(Err(status)) => break End::ClientError(status),
                    Some(Ok(req)) => {
                        if self.on_request(req).await.is_err() {
                            break End::ResponseDropped;
                        }
                    }
                },
                changed = self.state.changed() => {
                    if changed.is_err() {
                        break End::ResponseDropped; // the server is shutting down
                    }
                    if self.push_changes().await.is_err() {
                        break End::ResponseDropped;
                    }
                }
            }
            self.expire_slots();
        };
        self.metrics.xds_clients.dec();
        match end {
            End::ClientClosed => {
                tracing::info!(caller = %self.caller, peer = %self.peer, "xDS client disconnected")
            }
            End::ClientError(s) => {
                tracing::info!(caller = %self.caller, peer = %self.peer, code = ?s.code(), message = s.message(), "xDS stream ended by the client")
            }
            End::ResponseDropped => {
                tracing::info!(caller = %self.caller, peer = %self.peer, "xDS stream closed")
            }
        }
    }

    /// Releases full-push slots whose ACK is overdue, so one silent client cannot block others.
    fn expire_slots(&mut self) {
        for p in self.pending.values_mut() {
            if p.slot.is_some() && p.sent_at.elapsed() > FULL_PUSH_SLOT_TIMEOUT {
                p.slot = None;
            }
        }
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        if !req.response_nonce.is_empty() {
            self.on_ack(&req);
            return Ok(());
        }
        if !TYPE_URLS.contains(&req.type_url.as_str()) {
            tracing::warn!(caller = %self.caller, type_url = %req.type_url, "request for a type this server does not serve; answering with no resources");
            let resp = self.response(&req.type_url, &Delta::default());
            return self.send(resp, None, None).await;
        }
        if !req.resource_names_subscribe.is_empty() || !req.resource_names_unsubscribe.is_empty() {
            tracing::debug!(caller = %self.caller, type_url = %req.type_url,
                "named (on-demand) subscriptions are served as wildcard: every resource is sent");
        }
        if self.subscriptions.contains_key(&req.type_url) {
            // A repeated subscription request on a live stream: nothing new to send.
            return Ok(());
        }
        let state = self.state.borrow().clone();
        let Some(current) = state.set(&req.type_url).cloned() else {
            return Ok(());
        };
        let delta = Delta::from_versions(&req.initial_resource_versions, &current);
        // A full push waits for a slot; an up-to-date reconnect does not need one.
        let slot = if delta.changed.len() > 100 {
            match self.full_pushes.clone().acquire_owned().await {
                Ok(permit) => Some(permit),
                Err(_) => return Err(()),
            }
        } else {
            None
        };
        tracing::info!(caller = %self.caller, type_url = %req.type_url, resources = delta.changed.len(),
            removed = delta.removed.len(), known = req.initial_resource_versions.len(), "xDS subscription");
        let resp = self.response(&req.type_url, &delta);
        self.subscriptions
            .insert(req.type_url.clone(), Subscription { sent: current });
        self.send(resp, slot, Some(state.changed_at)).await
    }

    fn on_ack(&mut self, req: &DeltaDiscoveryRequest) {
        let Some(pending) = self.pending.remove(&req.response_nonce) else {
            tracing::debug!(caller = %self.caller, nonce = %req.response_nonce, "ACK for an unknown or superseded nonce");
            return;
        };
        match &req.error_detail {
            Some(err) => {
                self.metrics
                    .xds_rejects
                    .with_label_values(&[&pending.type_url])
                    .inc();
                tracing::warn!(caller = %self.caller, peer = %self.peer, type_url = %pending.type_url,
                    nonce = %req.response_nonce, code = err.code, message = %err.message,
                    "xDS response NACKed by the client; it keeps its last good resources");
            }
            None => tracing::debug!(caller = %self.caller, type_url = %pending.type_url,
                nonce = %req.response_nonce, latency_ms = pending.sent_at.elapsed().as_millis() as u64, "ACK"),
        }
    }

    async fn push_changes(&mut self) -> Result<(), ()> {
        let state = self.state.borrow_and_update().clone();
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        for type_url in types {
            let held = self.subscriptions[&type_url].sent.clone();
            let Some(delta) = state.delta_from(&type_url, &held) else {
                continue;
            };
            let Some(current) = state.set(&type_url).cloned() else {
                continue;
            };
            if let Some(sub) = self.subscriptions.get_mut(&type_url) {
                sub.sent = current;
            }
            if delta.is_empty() {
                continue;
            }
            let resp = self.response(&type_url, &delta);
            self.send(resp, None, Some(state.changed_at)).await?;
        }
        Ok(())
    }

    fn response(&mut self, type_url: &str, delta: &Delta) -> DeltaDiscoveryResponse {
        self.next_nonce += 1;
        DeltaDiscoveryResponse {
            system_version_info: self.state.borrow().generation.to_string(),
            type_url: type_url.to_string(),
            nonce: self.next_nonce.to_string(),
            resources: delta
                .changed
                .iter()
                .map(|(name, entry)| Resource {
                    name: name.clone(),
                    version: entry.version.clone(),
                    resource: Some(prost_types::Any {
                        type_url: type_url.to_string(),
                        value: entry.body.to_vec(),
                    }),
                    ..Default::default()
                })
                .collect(),
            removed_resources: delta.removed.clone(),
            control_plane: Some(ControlPlane {
                identifier: self.identifier.clone(),
            }),
        }
    }

    async fn send(
        &mut self,
        resp: DeltaDiscoveryResponse,
        slot: Option<OwnedSemaphorePermit>,
        changed_at: Option<Instant>,
    ) -> Result<(), ()> {
        let type_url = resp.type_url.clone();
        let nonce = resp.nonce.clone();
        let (n, removed) = (resp.resources.len(), resp.removed_resources.len());
        self.tx.send(Ok(resp)).await.map_err(|_| ())?;
        self.metrics
            .xds_pushes
            .with_label_values(&[&type_url])
            .inc();
        if let Some(t) = changed_at {
            self.metrics
                .xds_push_time
                .with_label_values(&[&type_url])
                .observe(t.elapsed().as_secs_f64());
        }
        tracing::debug!(caller = %self.caller, type_url = %type_url, nonce = %nonce, resources = n, removed, "xDS push");
        // Only the newest responses can still be acknowledged usefully; bound the map.
        if self.pending.len() > 64 {
            self.pending.retain(|_, p| p.slot.is_some());
        }
        self.pending.insert(
            nonce,
            Pending {
                type_url,
                sent_at: Instant::now(),
                slot,
            },
        );
        Ok(())
    }
}
