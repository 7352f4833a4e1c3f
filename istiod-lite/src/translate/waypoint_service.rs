//! What each waypoint serves (`mesh.waypoint.v1.WaypointService`): every service bound to a
//! waypoint Gateway, with its ports, its endpoints (the pods that back it with their
//! addresses, identities, port mappings, tunnel and readiness), its policies and its routes;
//! and every service those routes send to. Built from the translated services and workloads,
//! so it says exactly what ztunnel is told about the same pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_core::proto::istio::workload::{TunnelProtocol, Workload, WorkloadStatus};
use mesh_core::proto::mesh::waypoint::v1::{Endpoint, ServicePort, Tunnel, WaypointService};

use super::route::Routes;
use super::service::{ServiceInfo, Services};
use super::waypoint_policy::WaypointPolicy;

fn endpoint(w: &Workload, service_key: &str) -> Option<Endpoint> {
    let ports = w
        .services
        .get(service_key)?
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    let hbone = w.tunnel_protocol == TunnelProtocol::Hbone as i32;
    Some(Endpoint {
        workload: format!("{}/{}", w.namespace, w.name),
        address: w.addresses.first()?.clone(),
        identity: format!(
            "spiffe://{}/ns/{}/sa/{}",
            w.trust_domain, w.namespace, w.service_account
        ),
        ports,
        tunnel: if hbone {
            Tunnel::Hbone
        } else {
            Tunnel::Plaintext
        } as i32,
        healthy: w.status == WorkloadStatus::Healthy as i32,
        node: w.node.clone(),
        workload_name: w.workload_name.clone(),
    })
}

pub fn translate_waypoint_services(
    services: &Services,
    workloads: &BTreeMap<String, Arc<Workload>>,
    policies: &[WaypointPolicy],
    routes: &Routes,
) -> BTreeMap<String, WaypointService> {
    let mut out = BTreeMap::new();
    // Services a waypoint needs: those bound to it, and the backends of their routes.
    let needed: HashMap<String, &ServiceInfo> = services
        .values()
        .map(|s| (format!("{}/{}", s.xds.namespace, s.xds.hostname), s))
        .filter(|(key, s)| s.gateway.is_some() || routes.backend_of.contains_key(key))
        .collect();
    if needed.is_empty() {
        return out;
    }
    let mut endpoints: HashMap<&str, Vec<Endpoint>> = HashMap::new();
    for w in workloads.values() {
        for key in w.services.keys() {
            if let Some((k, _)) = needed.get_key_value(key) {
                if let Some(e) = endpoint(w, key) {
                    endpoints.entry(k.as_str()).or_default().push(e);
                }
            }
        }
    }
    for (key, info) in &needed {
        let s = &info.xds;
        let ports = s
            .ports
            .iter()
            .map(|p| ServicePort {
                port: p.service_port,
                target_port: p.target_port,
                name: info
                    .source
                    .spec
                    .ports
                    .iter()
                    .find(|sp| u32::from(sp.port) == p.service_port)
                    .and_then(|sp| sp.name.clone())
                    .unwrap_or_default(),
                // Same numbering as istio.workload.AppProtocol.
                protocol: p.app_protocol,
            })
            .collect();
        let mut eps = endpoints.remove(key.as_str()).unwrap_or_default();
        eps.sort_by(|a, b| a.workload.cmp(&b.workload));
        let gateway = info.gateway.as_ref();
        let mut applied: Vec<_> = match gateway {
            Some(g) => policies
                .iter()
                .filter(|p| p.services.contains(key) || p.gateways.contains(g))
                .map(|p| p.policy.clone())
                .collect(),
            None => Vec::new(),
        };
        applied.sort_by(|a, b| a.name.cmp(&b.name));
        let backend_of = routes
            .backend_of
            .get(key)
            .map(|set| {
                set.iter()
                    .filter(|g| Some(*g) != gateway)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.insert(
            key.clone(),
            WaypointService {
                waypoints: gateway.cloned().into_iter().collect(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                hostname: s.hostname.clone(),
                vips: s.addresses.iter().map(|a| a.address.clone()).collect(),
                ports,
                endpoints: eps,
                policies: applied,
                backend_of,
                routes: match gateway {
                    Some(_) => routes.by_parent.get(key).cloned().unwrap_or_default(),
                    None => Vec::new(),
                },
            },
        );
    }
    out
}
