//! The admin port's `/config_dump`: what the waypoint serves now, as it sees it (services,
//! endpoints with their in-flight requests, the certificate it holds, the xDS session). No
//! private keys.

use std::sync::RwLock;

use mesh_core::identity::manager::IdentityManager;
use mesh_core::xds::ClientStatus;
use serde_json::{json, Value};

use crate::state::State;

pub fn config_dump(
    state: &RwLock<State>,
    identities: &IdentityManager,
    xds: &ClientStatus,
) -> Value {
    let state = state.read().unwrap_or_else(|e| e.into_inner());
    let mut services: Vec<Value> = state
        .services()
        .map(|s| {
            json!({
                "key": s.key,
                "hostname": s.hostname,
                "vips": s.vips.iter().map(|v| v.to_string()).collect::<Vec<_>>(),
                "ports": s.ports.iter().map(|p| json!({
                    "port": p.port, "targetPort": p.target_port, "name": p.name,
                    "protocol": format!("{:?}", p.protocol),
                })).collect::<Vec<_>>(),
                "endpoints": s.endpoints.iter().map(|e| json!({
                    "workload": e.workload,
                    "address": e.address.to_string(),
                    "identity": e.identity.as_ref().map(|i| i.to_string()),
                    "tunnel": format!("{:?}", e.tunnel),
                    "healthy": e.healthy,
                    "node": e.node,
                    "inFlight": e.in_flight(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    services.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
    let certificates: Vec<Value> = identities
        .held()
        .into_iter()
        .map(|(id, expires)| {
            json!({
                "identity": id.to_string(),
                "expires": expires.map(mesh_core::time_text::rfc3339),
            })
        })
        .collect();
    json!({
        "services": services,
        "certificates": certificates,
        "xds": {
            "ready": xds.ready,
            "connected": xds.connected,
            "sessions": xds.sessions,
            "applied": xds.applied,
            "held": xds.held,
        },
    })
}
