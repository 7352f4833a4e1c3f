//! What each waypoint serves (`mesh.waypoint.v1.WaypointService`): every service bound to a
//! waypoint Gateway, with its ports and its endpoints, the pods that back it with their
//! addresses, identities, port mappings, tunnel and readiness. Built from the translated
//! services and workloads, so it says exactly what ztunnel is told about the same pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_core::proto::istio::workload::{TunnelProtocol, Workload, WorkloadStatus};
use mesh_core::proto::mesh::waypoint::v1::{Endpoint, ServicePort, Tunnel, WaypointService};

use super::service::Services;
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
    })
}

pub fn translate_waypoint_services(
    services: &Services,
    workloads: &BTreeMap<String, Arc<Workload>>,
    policies: &[WaypointPolicy],
) -> BTreeMap<String, WaypointService> {
    let mut out = BTreeMap::new();
    let bound: HashMap<String, (&String, &super::service::ServiceInfo)> = services
        .values()
        .filter_map(|s| {
            let gateway = s.gateway.as_ref()?;
            Some((
                format!("{}/{}", s.xds.namespace, s.xds.hostname),
                (gateway, s),
            ))
        })
        .collect();
    if bound.is_empty() {
        return out;
    }
    let mut endpoints: HashMap<&str, Vec<Endpoint>> = HashMap::new();
    for w in workloads.values() {
        for key in w.services.keys() {
            if let Some((k, _)) = bound.get_key_value(key) {
                if let Some(e) = endpoint(w, key) {
                    endpoints.entry(k.as_str()).or_default().push(e);
                }
            }
        }
    }
    for (key, (gateway, info)) in &bound {
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
        let mut applied: Vec<_> = policies
            .iter()
            .filter(|p| p.services.contains(key) || p.gateways.contains(*gateway))
            .map(|p| p.policy.clone())
            .collect();
        applied.sort_by(|a, b| a.name.cmp(&b.name));
        out.insert(
            key.clone(),
            WaypointService {
                waypoint: (*gateway).clone(),
                namespace: s.namespace.clone(),
                name: s.name.clone(),
                hostname: s.hostname.clone(),
                vips: s.addresses.iter().map(|a| a.address.clone()).collect(),
                ports,
                endpoints: eps,
                policies: applied,
            },
        );
    }
    out
}
