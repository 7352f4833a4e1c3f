//! Translation: a store snapshot in, the xDS resources and policy status out. Pure functions: no
//! I/O, no clock, no randomness, so the same snapshot always gives the same resources.
//!
//! Semantics follow Istio's ambient controller (`docs/istio-compatibility.md` §10, resources as
//! in §5): enrolment, services and their endpoints, waypoint binding, and the L4 translation of
//! AuthorizationPolicy and PeerAuthentication.

mod authorization;
mod peer_authentication;
mod route;
mod service;
mod waypoint;
mod waypoint_guard;
mod waypoint_policy;
mod waypoint_service;
mod workload;

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::k8s::ObjectKey;
use mesh_core::proto::istio::security::Authorization;
use mesh_core::proto::istio::workload::{Service as XdsService, Workload};
use mesh_core::proto::mesh::waypoint::v1::WaypointService;

use crate::store::Snapshot;

pub use authorization::convert_authorization_policy;

/// Mesh-wide settings translation depends on.
#[derive(Clone, Debug)]
pub struct MeshConfig {
    pub trust_domain: String,
    /// Policies here apply mesh-wide (Istio's `istio-system`).
    pub root_namespace: String,
    /// Prefix of workload UIDs and the `cluster_id` field.
    pub cluster_id: String,
    /// Services are `<name>.<namespace>.svc.<domain_suffix>`.
    pub domain_suffix: String,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            cluster_id: "Kubernetes".into(),
            domain_suffix: "cluster.local".into(),
        }
    }
}

impl MeshConfig {
    pub fn service_hostname(&self, namespace: &str, name: &str) -> String {
        format!("{name}.{namespace}.svc.{}", self.domain_suffix)
    }

    pub fn workload_uid(&self, namespace: &str, name: &str) -> String {
        format!("{}//Pod/{namespace}/{name}", self.cluster_id)
    }
}

/// One status condition, as it appears in `status.conditions` of an object, or (Gateway API
/// routes) in `status.parents[]` of the parent it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
    pub parent: Option<Box<mesh_core::k8s::ParentReference>>,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status,
            reason,
            message: message.into(),
            parent: None,
        }
    }

    /// The condition about one parent of a route.
    pub fn for_parent(mut self, parent: &mesh_core::k8s::ParentReference) -> Self {
        self.parent = Some(Box::new(parent.clone()));
        self
    }
}

pub const ZTUNNEL_ACCEPTED: &str = "ZtunnelAccepted";
pub const WAYPOINT_ACCEPTED: &str = "WaypointAccepted";
/// False while the newest version of an object was refused (a file holds an invalid document);
/// the object's last good version, if any, is what is enforced.
pub const VALIDATED: &str = "Validated";

/// Everything translation produces from one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    /// Workload resources, by UID (their xDS resource name).
    pub workloads: BTreeMap<String, Arc<Workload>>,
    /// Service resources, by `<namespace>/<hostname>`.
    pub services: BTreeMap<String, XdsService>,
    /// L4 policies, by `<namespace>/<name>`.
    pub authorizations: BTreeMap<String, Authorization>,
    /// What waypoints serve: each service bound to a waypoint, by `<namespace>/<hostname>`.
    pub waypoint_services: BTreeMap<String, WaypointService>,
    /// Status conditions of every policy and waypoint Gateway.
    pub statuses: BTreeMap<ObjectKey, Vec<Condition>>,
}

/// Translates snapshots, remembering per-namespace results so that a change retranslates only
/// what it can affect. The output is the same as a fresh translation's (tests check this).
pub struct Translator {
    mesh: MeshConfig,
    memo: workload::WorkloadMemo,
    /// The last snapshot, kept alive: the memo compares objects by address, and a live object's
    /// address cannot be reused by a new one.
    previous: Option<Arc<Snapshot>>,
}

impl Translator {
    pub fn new(mesh: MeshConfig) -> Self {
        Translator {
            mesh,
            memo: Default::default(),
            previous: None,
        }
    }

    pub fn translate(&mut self, snapshot: &Arc<Snapshot>) -> Translation {
        let mesh = &self.mesh;
        let mut out = Translation::default();
        let waypoints = waypoint::Waypoints::index(snapshot, mesh);
        let services = service::translate_services(snapshot, mesh, &waypoints);
        let policies =
            authorization::translate_policies(snapshot, mesh, &waypoints, &mut out.statuses);
        let peer =
            peer_authentication::PeerAuthentications::index(snapshot, mesh, &mut out.statuses);
        out.workloads = workload::translate_workloads(
            snapshot,
            mesh,
            &waypoints,
            &services,
            &policies.selectors,
            &peer,
            &mut self.memo,
        );
        for pa in peer.authorizations() {
            out.authorizations
                .insert(format!("{}/{}", pa.namespace, pa.name), pa);
        }
        for (key, auth) in policies.authorizations {
            out.authorizations.insert(key, auth);
        }
        for (key, auth) in waypoint_guard::guards(&services) {
            out.authorizations.insert(key, auth);
        }
        let routes = route::translate_routes(snapshot, mesh, &services, &mut out.statuses);
        out.waypoint_services = waypoint_service::translate_waypoint_services(
            &services,
            &out.workloads,
            &policies.waypoint,
            &routes,
        );
        out.services = services
            .into_values()
            .map(|s| (format!("{}/{}", s.xds.namespace, s.xds.hostname), s.xds))
            .collect();
        waypoint::gateway_statuses(snapshot, &mut out.statuses);
        refusal_statuses(snapshot, &mut out.statuses);
        self.previous = Some(snapshot.clone());
        out
    }
}

/// A `Validated=False` condition on each object with status whose newest version was refused.
/// Kubernetes would refuse such an apply outright; a directory cannot, so the object says it.
fn refusal_statuses(snapshot: &Snapshot, statuses: &mut BTreeMap<ObjectKey, Vec<Condition>>) {
    use mesh_core::k8s::Kind;
    for (key, refusal) in &snapshot.refused {
        let k = (key.namespace.clone(), key.name.clone());
        let kept = match key.kind {
            Kind::AuthorizationPolicy => snapshot.authorization_policies.contains_key(&k),
            Kind::PeerAuthentication => snapshot.peer_authentications.contains_key(&k),
            Kind::Gateway => snapshot.gateways.contains_key(&k),
            Kind::HttpRoute => snapshot.http_routes.contains_key(&k),
            Kind::GrpcRoute => snapshot.grpc_routes.contains_key(&k),
            _ => continue,
        };
        let outcome = if kept {
            "the last good version stays in force"
        } else {
            "no version of this object is applied"
        };
        let message = format!(
            "the newest version ({}, document {}) was refused: {}; {outcome}",
            refusal.source, refusal.document, refusal.reason
        );
        statuses
            .entry(key.clone())
            .or_default()
            .push(Condition::new(VALIDATED, false, "Invalid", message));
    }
}

/// Translates one snapshot from scratch.
pub fn translate(snapshot: &Arc<Snapshot>, mesh: &MeshConfig) -> Translation {
    Translator::new(mesh.clone()).translate(snapshot)
}

#[cfg(test)]
mod tests;
