//! The xDS client: one delta ADS stream to istiod-lite (or Istio's istiod), writing [`State`].
//!
//! * Subscribes to workloads/services and L4 policies (wildcard), announcing on reconnect the
//!   versions it still holds so only differences are sent.
//! * Applies each resource on its own: a bad one is refused and reported in the NACK
//!   (`<name>: <reason>`, joined by `; `), the others apply.
//! * Ready once every type has had one fully accepted response.
//! * On any error it reconnects with backoff (10 ms doubling to 15 s); the state is kept, so
//!   proxies go on serving the last good config while the control plane is away.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_core::proto::envoy::config::core::v3::Node;
use mesh_core::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use mesh_core::proto::google::rpc::Status as RpcStatus;
use mesh_core::proto::istio::security::Authorization;
use mesh_core::proto::istio::workload::Address;
use mesh_core::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::state::State;

const TYPES: [&str; 2] = [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL];
const MAX_BACKOFF: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct XdsConfig {
    /// `https://host:port` of the control plane.
    pub address: String,
    /// Name the control plane's certificate must carry (its URL's host by default).
    pub server_name: String,
    /// PEM roots for the control plane's TLS.
    pub root_pem: String,
    /// Bearer token.
    pub token: String,
    /// This node's name (sent as node metadata `NODE_NAME`).
    pub node_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error("connecting to {0}: {1}")]
    Connect(String, tonic::transport::Error),
    #[error("xDS stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("bad address {0:?}")]
    Address(String),
}

/// What the client reports about itself (for readiness and the admin endpoint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct XdsStatus {
    /// Every type has had a fully accepted response (stays true across reconnects).
    pub ready: bool,
    /// A stream is up.
    pub connected: bool,
    /// Streams opened so far.
    pub sessions: u64,
    /// Responses applied so far: changes whenever the state may have changed.
    pub applied: u64,
}

/// Keeps `state` in sync with the control plane, forever.
pub async fn run(config: XdsConfig, state: Arc<RwLock<State>>, status: watch::Sender<XdsStatus>) {
    let mut backoff = Duration::from_millis(10);
    loop {
        let result = session(&config, &state, &status, &mut backoff).await;
        status.send_if_modified(|s| std::mem::replace(&mut s.connected, false));
        match result {
            Ok(()) => {
                tracing::info!(address = %config.address, "xDS stream closed by the server; reconnecting")
            }
            Err(e) => {
                tracing::warn!(address = %config.address, error = %e, retry_in_ms = backoff.as_millis() as u64,
                "xDS stream failed; serving the last good config meanwhile")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn node(config: &XdsConfig) -> Node {
    let meta = [("NODE_NAME", config.node_name.as_str())]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
                },
            )
        })
        .collect();
    Node {
        id: format!(
            "ztunnel~0.0.0.0~ztunnel.{}~svc.cluster.local",
            config.node_name
        ),
        metadata: Some(prost_types::Struct { fields: meta }),
        ..Default::default()
    }
}

async fn session(
    config: &XdsConfig,
    state: &Arc<RwLock<State>>,
    status: &watch::Sender<XdsStatus>,
    backoff: &mut Duration,
) -> Result<(), XdsError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&config.root_pem))
        .domain_name(config.server_name.clone());
    let channel = Channel::from_shared(config.address.clone())
        .map_err(|_| XdsError::Address(config.address.clone()))?
        .tls_config(tls)
        .map_err(|e| XdsError::Connect(config.address.clone(), e))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| XdsError::Connect(config.address.clone(), e))?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(200 << 20);
    let (tx, rx) = mpsc::channel(16);
    for type_url in TYPES {
        let known = state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .versions
            .get(type_url)
            .cloned()
            .unwrap_or_default();
        let req = DeltaDiscoveryRequest {
            node: Some(node(config)),
            type_url: type_url.to_string(),
            initial_resource_versions: known,
            ..Default::default()
        };
        // The channel holds 16; these are the first two messages.
        let _ = tx.send(req).await;
    }
    let mut request = tonic::Request::new(ReceiverStream::new(rx));
    let auth = format!("Bearer {}", config.token)
        .parse()
        .map_err(|_| XdsError::Address("token is not valid header text".into()))?;
    request.metadata_mut().insert("authorization", auth);
    let mut stream = client
        .delta_aggregated_resources(request)
        .await?
        .into_inner();
    status.send_modify(|s| {
        s.connected = true;
        s.sessions += 1;
    });
    let mut waiting: HashSet<&str> = TYPES.into_iter().collect();
    while let Some(resp) = stream.message().await? {
        *backoff = Duration::from_millis(10);
        let errors = apply(state, &resp);
        status.send_modify(|s| s.applied += 1);
        let nack = if errors.is_empty() {
            None
        } else {
            let message = errors.join("; ");
            tracing::warn!(type_url = %resp.type_url, %message, "rejecting xDS resources");
            Some(RpcStatus {
                code: tonic::Code::InvalidArgument as i32,
                message,
                details: vec![],
            })
        };
        if nack.is_none() {
            waiting.remove(resp.type_url.as_str());
            if waiting.is_empty() {
                status.send_if_modified(|s| !std::mem::replace(&mut s.ready, true));
            }
        }
        let ack = DeltaDiscoveryRequest {
            type_url: resp.type_url.clone(),
            response_nonce: resp.nonce.clone(),
            error_detail: nack,
            ..Default::default()
        };
        if tx.send(ack).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Applies one response; returns the refusals as `<name>: <reason>`.
fn apply(state: &Arc<RwLock<State>>, resp: &DeltaDiscoveryResponse) -> Vec<String> {
    let mut errors = Vec::new();
    let mut st = state.write().unwrap_or_else(|e| e.into_inner());
    let type_url = resp.type_url.as_str();
    if !TYPES.contains(&type_url) {
        tracing::warn!(
            type_url,
            "response of a type this client did not ask for; ignored"
        );
        return errors;
    }
    let mut versions = st.versions.remove(type_url).unwrap_or_default();
    for res in &resp.resources {
        let body = res
            .resource
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        let result = match type_url {
            ADDRESS_TYPE_URL => Address::decode(body)
                .map_err(|e| format!("does not decode: {e}"))
                .and_then(|a| st.apply_address(&res.name, &a)),
            _ => Authorization::decode(body)
                .map_err(|e| format!("does not decode: {e}"))
                .and_then(|a| st.apply_authorization(&res.name, &a)),
        };
        match result {
            Ok(()) => {
                versions.insert(res.name.clone(), res.version.clone());
            }
            Err(e) => {
                // Not recorded: on reconnect the server sends it again.
                versions.remove(&res.name);
                errors.push(format!("{}: {e}", res.name));
            }
        }
    }
    for name in &resp.removed_resources {
        match type_url {
            ADDRESS_TYPE_URL => st.remove_address(name),
            _ => st.remove_authorization(name),
        }
        versions.remove(name);
    }
    st.versions.insert(type_url.to_string(), versions);
    let (w, s, p) = st.counts();
    tracing::debug!(
        type_url,
        resources = resp.resources.len(),
        removed = resp.removed_resources.len(),
        workloads = w,
        services = s,
        policies = p,
        "xDS applied"
    );
    errors
}

/// For tests and the admin endpoint: versions held per type.
pub fn held_versions(state: &State) -> HashMap<String, usize> {
    state
        .versions
        .iter()
        .map(|(k, v)| (k.clone(), v.len()))
        .collect()
}
