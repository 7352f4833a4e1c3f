//! The delta-xDS client every proxy uses: one ADS stream to the control plane, any number of
//! resource types, each handed to a [`Handler`] that turns protos into the proxy's typed state.
//!
//! The client keeps what the protocol needs (nonces, the version of every accepted resource, so
//! that a reconnect announces them in `initial_resource_versions` and only differences are
//! sent); the handlers keep the domain state. So a proxy's state never holds protocol types.
//!
//! * Each resource applies on its own: one that does not decode or that its handler refuses is
//!   reported in the NACK (`<name>: <reason>`, joined by `; `) and the others apply.
//! * [`ClientStatus::ready`] turns true once every type has had a fully accepted response.
//! * On any error the client reconnects with backoff (10 ms doubling to 15 s). Handlers keep
//!   their state, so a proxy goes on serving the last good config while the control plane is
//!   away.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::control_plane::{ControlPlane, ControlPlaneError};
use crate::proto::envoy::config::core::v3::Node;
use crate::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use crate::proto::envoy::service::discovery::v3::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use crate::proto::google::rpc::Status as RpcStatus;

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// Large enough for the full state of a big cluster in one response.
const MAX_MESSAGE: usize = 200 << 20;

/// One response's worth of changes to a type, decoded.
pub struct Changes<T> {
    /// Resources added or replaced, by name.
    pub updated: Vec<(String, T)>,
    /// Names removed.
    pub removed: Vec<String>,
}

/// A resource the handler did not accept, and why (sent back in the NACK).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub name: String,
    pub reason: String,
}

/// Applies the changes of one resource type to a proxy's state.
pub trait Handler<T>: Send + Sync + 'static {
    /// Applies every acceptable resource and removal; returns the refused ones. A refused
    /// resource must leave the state as it was for that name.
    fn apply(&self, changes: Changes<T>) -> Vec<Rejection>;
}

/// A type-erased subscription: decodes its type and calls its handler.
trait Subscription: Send + Sync {
    fn apply(&self, resp: &DeltaDiscoveryResponse) -> Vec<Rejection>;
}

struct Typed<T, H> {
    handler: H,
    _type: std::marker::PhantomData<fn() -> T>,
}

impl<T, H> Subscription for Typed<T, H>
where
    T: Message + Default + 'static,
    H: Handler<T>,
{
    fn apply(&self, resp: &DeltaDiscoveryResponse) -> Vec<Rejection> {
        let mut rejected = Vec::new();
        let mut updated = Vec::with_capacity(resp.resources.len());
        for res in &resp.resources {
            let body = res
                .resource
                .as_ref()
                .map(|a| a.value.as_slice())
                .unwrap_or_default();
            match T::decode(body) {
                Ok(v) => updated.push((res.name.clone(), v)),
                Err(e) => rejected.push(Rejection {
                    name: res.name.clone(),
                    reason: format!("does not decode: {e}"),
                }),
            }
        }
        rejected.extend(self.handler.apply(Changes {
            updated,
            removed: resp.removed_resources.clone(),
        }));
        rejected
    }
}

/// What the client reports about itself (for readiness and admin endpoints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientStatus {
    /// Every type has had a fully accepted response (stays true across reconnects).
    pub ready: bool,
    /// A stream is up.
    pub connected: bool,
    /// Streams opened so far.
    pub sessions: u64,
    /// Responses applied so far: changes whenever the state may have changed.
    pub applied: u64,
    /// Accepted resources held, per type URL.
    pub held: BTreeMap<String, usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    #[error(transparent)]
    ControlPlane(#[from] ControlPlaneError),
    #[error("xDS stream: {0}")]
    Stream(#[from] tonic::Status),
}

/// The client: built with [`Client::new`] and [`Client::subscribe`], then [`Client::run`].
pub struct Client {
    control_plane: ControlPlane,
    node: Node,
    subscriptions: Vec<(&'static str, Box<dyn Subscription>)>,
    /// Accepted resource name -> version, per type URL.
    versions: HashMap<&'static str, HashMap<String, String>>,
}

impl Client {
    /// A client identifying itself as `node_id` (Envoy's `<type>~<ip>~<id>~<domain>` form) with
    /// string `metadata` (e.g. `NODE_NAME`).
    pub fn new(control_plane: ControlPlane, node_id: String, metadata: &[(&str, &str)]) -> Self {
        let fields = metadata
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    prost_types::Value {
                        kind: Some(prost_types::value::Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect();
        Client {
            control_plane,
            node: Node {
                id: node_id,
                metadata: Some(prost_types::Struct { fields }),
                ..Default::default()
            },
            subscriptions: Vec::new(),
            versions: HashMap::new(),
        }
    }

    /// Subscribes (wildcard) to `type_url`, whose resources decode as `T`.
    pub fn subscribe<T, H>(mut self, type_url: &'static str, handler: H) -> Self
    where
        T: Message + Default + 'static,
        H: Handler<T>,
    {
        let typed = Typed::<T, H> {
            handler,
            _type: std::marker::PhantomData,
        };
        self.subscriptions.push((type_url, Box::new(typed)));
        self
    }

    /// Keeps the handlers in sync with the control plane, forever.
    pub async fn run(mut self, status: watch::Sender<ClientStatus>) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let result = self.session(&status, &mut backoff).await;
            status.send_if_modified(|s| std::mem::replace(&mut s.connected, false));
            let address = &self.control_plane.address;
            match result {
                Ok(()) => {
                    tracing::info!(%address, "xDS stream closed by the server; reconnecting")
                }
                Err(e) => {
                    tracing::warn!(%address, error = %e, retry_in_ms = backoff.as_millis() as u64,
                        "xDS stream failed; serving the last good config meanwhile")
                }
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn session(
        &mut self,
        status: &watch::Sender<ClientStatus>,
        backoff: &mut Duration,
    ) -> Result<(), XdsError> {
        let channel = self.control_plane.connect().await?;
        let mut ads =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE);
        // Room for every subscription's first request, so none of these sends waits.
        let (tx, rx) = mpsc::channel(self.subscriptions.len().max(1) * 2 + 8);
        for (type_url, _) in &self.subscriptions {
            let req = DeltaDiscoveryRequest {
                node: Some(self.node.clone()),
                type_url: type_url.to_string(),
                initial_resource_versions: self.versions.get(type_url).cloned().unwrap_or_default(),
                ..Default::default()
            };
            let _ = tx.send(req).await;
        }
        let request = self.control_plane.request(ReceiverStream::new(rx))?;
        let mut stream = ads.delta_aggregated_resources(request).await?.into_inner();
        status.send_modify(|s| {
            s.connected = true;
            s.sessions += 1;
        });
        let mut waiting: HashSet<&str> = self.subscriptions.iter().map(|(t, _)| *t).collect();
        while let Some(resp) = stream.message().await? {
            *backoff = FIRST_BACKOFF;
            let rejected = self.apply(&resp);
            let held = self
                .versions
                .iter()
                .map(|(t, v)| (t.to_string(), v.len()))
                .collect();
            status.send_modify(|s| {
                s.applied += 1;
                s.held = held;
            });
            let nack = if rejected.is_empty() {
                waiting.remove(resp.type_url.as_str());
                if waiting.is_empty() {
                    status.send_if_modified(|s| !std::mem::replace(&mut s.ready, true));
                }
                None
            } else {
                let message = rejected
                    .iter()
                    .map(|r| format!("{}: {}", r.name, r.reason))
                    .collect::<Vec<_>>()
                    .join("; ");
                tracing::warn!(type_url = %resp.type_url, %message, "rejecting xDS resources");
                Some(RpcStatus {
                    code: tonic::Code::InvalidArgument as i32,
                    message,
                    details: vec![],
                })
            };
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

    /// Applies one response and records the versions of what was accepted.
    fn apply(&mut self, resp: &DeltaDiscoveryResponse) -> Vec<Rejection> {
        let Some((type_url, subscription)) =
            self.subscriptions.iter().find(|(t, _)| *t == resp.type_url)
        else {
            tracing::warn!(type_url = %resp.type_url, "response of a type this client did not ask for; ignored");
            return Vec::new();
        };
        let rejected = subscription.apply(resp);
        let refused: HashSet<&str> = rejected.iter().map(|r| r.name.as_str()).collect();
        let versions = self.versions.entry(type_url).or_default();
        for res in &resp.resources {
            if refused.contains(res.name.as_str()) {
                // Not recorded: on reconnect the server sends it again.
                versions.remove(&res.name);
            } else {
                versions.insert(res.name.clone(), res.version.clone());
            }
        }
        for name in &resp.removed_resources {
            versions.remove(name);
        }
        tracing::debug!(
            type_url = %resp.type_url,
            resources = resp.resources.len(),
            removed = resp.removed_resources.len(),
            refused = rejected.len(),
            "xDS applied"
        );
        rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::envoy::service::discovery::v3::Resource;
    use std::sync::{Arc, Mutex};

    /// A handler over strings that refuses the resource named "bad".
    #[derive(Clone, Default)]
    struct Names(Arc<Mutex<Vec<String>>>);

    impl Handler<String> for Names {
        fn apply(&self, changes: Changes<String>) -> Vec<Rejection> {
            let mut held = self.0.lock().unwrap();
            let mut rejected = Vec::new();
            for (name, value) in changes.updated {
                if name == "bad" {
                    rejected.push(Rejection {
                        name,
                        reason: "refused".into(),
                    });
                } else {
                    held.retain(|n| *n != name);
                    held.push(format!("{name}={value}"));
                }
            }
            held.retain(|n| {
                !changes
                    .removed
                    .iter()
                    .any(|r| n.starts_with(&format!("{r}=")))
            });
            rejected
        }
    }

    fn resource(name: &str, version: &str, body: Vec<u8>) -> Resource {
        Resource {
            name: name.into(),
            version: version.into(),
            resource: Some(prost_types::Any {
                type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
                value: body,
            }),
            ..Default::default()
        }
    }

    fn client(names: Names) -> Client {
        let cp = ControlPlane {
            address: "https://localhost:1".into(),
            server_name: "localhost".into(),
            root_pem: String::new(),
            token: "t".into(),
        };
        Client::new(cp, "test~0.0.0.0~t~svc.cluster.local".into(), &[]).subscribe("strings", names)
    }

    #[test]
    fn versions_are_kept_for_accepted_resources_only() {
        let names = Names::default();
        let mut c = client(names.clone());
        let resp = DeltaDiscoveryResponse {
            type_url: "strings".into(),
            resources: vec![
                resource("a", "1", "x".to_string().encode_to_vec()),
                resource("bad", "1", "y".to_string().encode_to_vec()),
                resource("garbled", "1", vec![0xff, 0xff]),
            ],
            ..Default::default()
        };
        let rejected = c.apply(&resp);
        let reasons: Vec<_> = rejected.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(reasons, ["garbled", "bad"]);
        assert!(rejected[0].reason.starts_with("does not decode"));
        assert_eq!(*names.0.lock().unwrap(), ["a=x"]);
        let held = &c.versions["strings"];
        assert_eq!(held.len(), 1);
        assert_eq!(held["a"], "1");

        let removal = DeltaDiscoveryResponse {
            type_url: "strings".into(),
            removed_resources: vec!["a".into()],
            ..Default::default()
        };
        assert!(c.apply(&removal).is_empty());
        assert!(names.0.lock().unwrap().is_empty());
        assert!(c.versions["strings"].is_empty());
    }

    #[test]
    fn a_type_nobody_asked_for_is_ignored() {
        let names = Names::default();
        let mut c = client(names.clone());
        let resp = DeltaDiscoveryResponse {
            type_url: "other".into(),
            resources: vec![resource("a", "1", "x".to_string().encode_to_vec())],
            ..Default::default()
        };
        assert!(c.apply(&resp).is_empty());
        assert!(names.0.lock().unwrap().is_empty());
        assert!(!c.versions.contains_key("other"));
    }
}
