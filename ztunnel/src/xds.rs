//! ztunnel's subscriptions on the shared delta-xDS client ([`mesh_core::xds`]): workloads and
//! services (`istio.workload.Address`) and L4 policies (`istio.security.Authorization`), both
//! wildcard, each written into [`State`] by its handler. The client keeps versions and nonces,
//! reconnects with backoff, and leaves the state as it was while the control plane is away.

use std::sync::{Arc, RwLock};

use mesh_core::control_plane::ControlPlane;
use mesh_core::proto::istio::security::Authorization;
use mesh_core::proto::istio::workload::Address;
use mesh_core::xds::{Changes, Client, ClientStatus, Handler, Rejection};
use mesh_core::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use tokio::sync::watch;

use crate::state::{ResourceError, State};

#[derive(Clone, Debug)]
pub struct XdsConfig {
    pub control_plane: ControlPlane,
    /// This node's name (sent as node metadata `NODE_NAME`).
    pub node_name: String,
}

/// Keeps `state` in sync with the control plane, forever.
pub async fn run(
    config: XdsConfig,
    state: Arc<RwLock<State>>,
    status: watch::Sender<ClientStatus>,
) {
    let node_id = format!(
        "ztunnel~0.0.0.0~ztunnel.{}~svc.cluster.local",
        config.node_name
    );
    Client::new(
        config.control_plane,
        node_id,
        &[("NODE_NAME", &config.node_name)],
    )
    .subscribe(ADDRESS_TYPE_URL, Addresses(state.clone()))
    .subscribe(AUTHORIZATION_TYPE_URL, Policies(state))
    .run(status)
    .await
}

/// Workloads and services.
struct Addresses(Arc<RwLock<State>>);
/// L4 authorization policies.
struct Policies(Arc<RwLock<State>>);

/// Applies `changes` under one write lock, so proxies see a response whole or not at all.
fn apply<T>(
    state: &RwLock<State>,
    changes: Changes<T>,
    put: fn(&mut State, &str, &T) -> Result<(), ResourceError>,
    remove: fn(&mut State, &str),
) -> Vec<Rejection> {
    let mut st = state.write().unwrap_or_else(|e| e.into_inner());
    let mut rejected = Vec::new();
    for (name, resource) in &changes.updated {
        if let Err(e) = put(&mut st, name, resource) {
            rejected.push(Rejection {
                name: name.clone(),
                reason: e.to_string(),
            });
        }
    }
    for name in &changes.removed {
        remove(&mut st, name);
    }
    let (workloads, services, policies) = st.counts();
    tracing::debug!(workloads, services, policies, "state updated");
    rejected
}

impl Handler<Address> for Addresses {
    fn apply(&self, changes: Changes<Address>) -> Vec<Rejection> {
        apply(
            &self.0,
            changes,
            State::apply_address,
            State::remove_address,
        )
    }
}

impl Handler<Authorization> for Policies {
    fn apply(&self, changes: Changes<Authorization>) -> Vec<Rejection> {
        apply(
            &self.0,
            changes,
            State::apply_authorization,
            State::remove_authorization,
        )
    }
}
