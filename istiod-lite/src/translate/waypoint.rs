//! Waypoint binding: which waypoint (a Gateway of class `istio-waypoint`) a service or workload
//! sends its traffic through, from the `istio.io/use-waypoint` labels on namespaces, services
//! and pods (a service or pod label beats the namespace label; `none` opts out).

use std::collections::HashMap;

use mesh_core::k8s::{
    Gateway, Labels, Namespace, USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL,
};
use mesh_core::proto::istio::workload::{
    gateway_address, GatewayAddress, NamespacedHostname, NetworkAddress,
};

use super::{Condition, MeshConfig};
use crate::store::Snapshot;

/// Label the waypoint's own pods carry (set by whoever deploys them).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";

/// Which traffic a binding is for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum TrafficType {
    Service,
    Workload,
}

struct WaypointInfo {
    address: GatewayAddress,
    for_: String,
}

/// Waypoint Gateways by (namespace, name).
pub struct Waypoints {
    by_name: HashMap<(String, String), WaypointInfo>,
}

/// Where a binding label points.
pub enum Binding {
    /// No label anywhere.
    None,
    /// A label says `none`.
    OptedOut,
    /// A label names this waypoint.
    Named { namespace: String, name: String },
}

fn binding_from_labels(labels: &Labels, own_namespace: &str) -> Option<Binding> {
    let name = labels.get(USE_WAYPOINT_LABEL)?;
    if name == "none" {
        return Some(Binding::OptedOut);
    }
    let namespace = labels
        .get(USE_WAYPOINT_NAMESPACE_LABEL)
        .cloned()
        .unwrap_or_else(|| own_namespace.to_string());
    Some(Binding::Named {
        namespace,
        name: name.clone(),
    })
}

/// The binding of an object: its own label, else its namespace's.
pub fn binding(labels: &Labels, namespace: &str, ns: Option<&Namespace>) -> Binding {
    binding_from_labels(labels, namespace)
        .or_else(|| ns.and_then(|n| binding_from_labels(&n.metadata.labels, namespace)))
        .unwrap_or(Binding::None)
}

fn address_of(gw: &Gateway, mesh: &MeshConfig) -> GatewayAddress {
    let ns = gw.metadata.namespace.as_deref().unwrap_or("default");
    let ip = gw
        .status
        .addresses
        .iter()
        .filter(|a| a.type_.as_deref().unwrap_or("IPAddress") == "IPAddress")
        .find_map(|a| a.value.parse::<std::net::IpAddr>().ok());
    let destination = match ip {
        Some(ip) => gateway_address::Destination::Address(NetworkAddress {
            network: String::new(),
            address: ip_bytes(ip),
            length: None,
        }),
        // The waypoint's Service is named after its Gateway.
        None => gateway_address::Destination::Hostname(NamespacedHostname {
            namespace: ns.to_string(),
            hostname: mesh.service_hostname(ns, &gw.metadata.name),
        }),
    };
    GatewayAddress {
        destination: Some(destination),
        hbone_mtls_port: u32::from(gw.hbone_port()),
    }
}

pub fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

impl Waypoints {
    pub fn index(snapshot: &Snapshot, mesh: &MeshConfig) -> Waypoints {
        let by_name = snapshot
            .gateways
            .iter()
            .filter(|(_, gw)| gw.is_waypoint())
            .map(|((ns, name), gw)| {
                let info = WaypointInfo {
                    address: address_of(gw, mesh),
                    for_: gw.waypoint_for().to_string(),
                };
                ((ns.clone(), name.clone()), info)
            })
            .collect();
        Waypoints { by_name }
    }

    pub fn exists(&self, namespace: &str, name: &str) -> bool {
        self.by_name
            .contains_key(&(namespace.to_string(), name.to_string()))
    }

    /// The waypoint address for a binding, if the waypoint exists and takes this traffic type.
    pub fn resolve(&self, binding: &Binding, traffic: TrafficType) -> Option<GatewayAddress> {
        self.resolve_named(binding, traffic).map(|(_, a)| a)
    }

    /// [`Waypoints::resolve`], with the Gateway's `<namespace>/<name>`.
    pub fn resolve_named(
        &self,
        binding: &Binding,
        traffic: TrafficType,
    ) -> Option<(String, GatewayAddress)> {
        let Binding::Named { namespace, name } = binding else {
            return None;
        };
        let info = self.by_name.get(&(namespace.clone(), name.clone()))?;
        let accepts = match traffic {
            TrafficType::Service => matches!(info.for_.as_str(), "service" | "all"),
            TrafficType::Workload => matches!(info.for_.as_str(), "workload" | "all"),
        };
        accepts.then(|| (format!("{namespace}/{name}"), info.address.clone()))
    }
}

/// `Accepted`/`Programmed` conditions of waypoint Gateways. Programmed means a waypoint proxy pod
/// (labelled with the Gateway's name) is running with an address.
pub fn gateway_statuses(
    snapshot: &Snapshot,
    statuses: &mut std::collections::BTreeMap<mesh_core::k8s::ObjectKey, Vec<Condition>>,
) {
    for ((ns, name), gw) in &snapshot.gateways {
        if !gw.is_waypoint() {
            continue;
        }
        let running = crate::store::in_namespace(&snapshot.pods, ns).any(|p| {
            p.metadata.labels.get(GATEWAY_NAME_LABEL) == Some(name)
                && !p.ips().is_empty()
                && p.is_ready()
        });
        let programmed = if running {
            Condition::new(
                "Programmed",
                true,
                "Programmed",
                "a waypoint proxy is running",
            )
        } else {
            Condition::new(
                "Programmed",
                false,
                "Pending",
                "no waypoint proxy is running for this Gateway yet",
            )
        };
        let accepted = Condition::new(
            "Accepted",
            true,
            "Accepted",
            format!(
                "waypoint of class istio-waypoint; the pods of the services bound to it refuse connections that skip it (a Service annotated {}: \"off\" opts out)",
                super::waypoint_guard::GUARD_ANNOTATION
            ),
        );
        let key = mesh_core::k8s::ObjectKey::new(mesh_core::k8s::Kind::Gateway, ns, name);
        statuses.insert(key, vec![accepted, programmed]);
    }
}
