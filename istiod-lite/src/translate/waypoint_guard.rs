//! The waypoint guard: a service bound to a waypoint admits only that waypoint. Istio asks its
//! users to write this DENY by hand; here istiod-lite adds it for every such service, as an L4
//! `istio.security.Authorization` (so any ztunnel, ours or Istio's, enforces it): on the
//! service's target ports, the pods that back it refuse every source but the waypoint's
//! identity (plaintext clients included). A connection that skips the waypoint (straight to a
//! pod's IP) is refused by the destination's ztunnel, and connections opened before the binding
//! are closed when ztunnel re-checks them, so the app reconnects through the waypoint.
//!
//! A Service annotated `mesh.waypoint/guard: "off"` has no guard (its pods then also take
//! traffic that skips the waypoint, and its L7 policies can be bypassed).

use mesh_core::k8s::IntOrString;
use mesh_core::proto::istio::security::{
    Action, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch,
};

use super::service::{ServiceInfo, Services};

/// The annotation that turns the guard off for one Service.
pub const GUARD_ANNOTATION: &str = "mesh.waypoint/guard";

/// Whether `svc` gets a guard: bound to a waypoint, and not opted out.
pub fn guarded(svc: &ServiceInfo) -> bool {
    svc.gateway.is_some()
        && svc
            .source
            .metadata
            .annotations
            .get(GUARD_ANNOTATION)
            .is_none_or(|v| v != "off")
}

/// The guard's resource key, `<namespace>/<name>`. The `_` keeps it apart from any
/// AuthorizationPolicy (Kubernetes names cannot hold one).
pub fn guard_key(namespace: &str, service: &str) -> String {
    format!("{namespace}/_waypoint-guard.{service}")
}

fn guard(svc: &ServiceInfo) -> Option<Authorization> {
    let gateway = svc.gateway.as_ref()?;
    let (gw_ns, gw_name) = gateway.split_once('/')?;
    // The service's target ports; a named one differs per pod, so then every port is guarded.
    let mut ports = Vec::new();
    let mut named = false;
    for p in svc.tcp_ports() {
        match &p.target_port {
            None => ports.push(u32::from(p.port)),
            Some(IntOrString::Int(t)) => ports.push(u32::from(*t)),
            Some(IntOrString::String(s)) => match s.parse::<u32>() {
                Ok(n) => ports.push(n),
                Err(_) => named = true,
            },
        }
    }
    if named {
        ports.clear();
    }
    ports.sort_unstable();
    ports.dedup();
    Some(Authorization {
        name: format!("_waypoint-guard.{}", svc.xds.name),
        namespace: svc.xds.namespace.clone(),
        scope: Scope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        rules: vec![Rule {
            clauses: vec![Clause {
                matches: vec![Match {
                    // The Gateway's name is its service account, as Istio deploys waypoints.
                    not_service_accounts: vec![ServiceAccountMatch {
                        namespace: gw_ns.to_string(),
                        service_account: gw_name.to_string(),
                    }],
                    destination_ports: ports,
                    ..Default::default()
                }],
            }],
        }],
        dry_run: false,
        extensions: vec![],
    })
}

/// Every guard, by key.
pub fn guards(services: &Services) -> Vec<(String, Authorization)> {
    services
        .values()
        .filter(|s| guarded(s) && s.selector().is_some())
        .filter_map(|s| Some((guard_key(&s.xds.namespace, &s.xds.name), guard(s)?)))
        .collect()
}
