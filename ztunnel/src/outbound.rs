//! Outbound routing: where a captured connection from a local workload goes, decided from the
//! state alone (`docs/istio-compatibility.md` §4, §8):
//!
//! 1. a service VIP whose service has a waypoint: HBONE to the waypoint, authority = the
//!    original `VIP:port` as dialled;
//! 2. a service VIP: a healthy endpoint that maps the port, chosen by `pick`; HBONE to it if
//!    it is in the mesh (authority `podIP:targetPort`), plain TCP if not; none: refused;
//! 3. a workload IP: its waypoint if it has one (unless the source is that waypoint); else HBONE
//!    if it is in the mesh, plain TCP if not (a workload's waypoint is not used for
//!    service-addressed traffic);
//! 4. anything else leaves as plain TCP to the original destination (it is not in the mesh).

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::hbone::HBONE_PORT;
use mesh_core::identity::Identity;

use crate::state::{ServiceInfo, State, Waypoint, WaypointTarget, WorkloadInfo};

#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// An HBONE tunnel to `next_hop`, asking for `authority`, to a peer holding one of
    /// `identities`.
    Hbone {
        next_hop: SocketAddr,
        authority: SocketAddr,
        identities: Vec<Identity>,
        workload: Arc<WorkloadInfo>,
        service: Option<Arc<ServiceInfo>>,
        via_waypoint: bool,
    },
    /// Plain TCP to `target`: a destination outside the mesh.
    Passthrough { target: SocketAddr },
    /// Nothing can take it: the connection is refused.
    Refused(Unroutable),
}

/// Why an outbound connection has nowhere to go.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    #[error("no healthy upstream for service {service} port {port}")]
    NoHealthyUpstream { service: String, port: u16 },
    #[error("waypoint service {0} is not known")]
    UnknownWaypointService(String),
    #[error("waypoint {0} has no healthy endpoint")]
    WaypointUnhealthy(String),
    #[error("waypoint {0} is not a known workload")]
    UnknownWaypointWorkload(std::net::IpAddr),
    #[error("workload {0} has no address")]
    NoAddress(String),
}

/// The HBONE route to a waypoint, tunnelling `original` unchanged.
fn to_waypoint(
    state: &State,
    waypoint: &Waypoint,
    original: SocketAddr,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Route {
    let port = waypoint.hbone_port;
    match &waypoint.target {
        WaypointTarget::Service(key) => {
            let Some(svc) = state.service(key) else {
                return Route::Refused(Unroutable::UnknownWaypointService(key.clone()));
            };
            let eps = state.endpoints(&svc, port);
            if eps.is_empty() {
                return Route::Refused(Unroutable::WaypointUnhealthy(key.clone()));
            }
            let (w, target) = eps[pick(eps.len()) % eps.len()].clone();
            let Some(ip) = w.ips.first().copied() else {
                return Route::Refused(Unroutable::NoAddress(w.uid.clone()));
            };
            let mut identities = vec![w.identity.clone()];
            identities.extend(svc.subject_alt_names.iter().cloned());
            Route::Hbone {
                next_hop: SocketAddr::new(ip, target),
                authority: original,
                identities,
                workload: w,
                service: Some(svc),
                via_waypoint: true,
            }
        }
        WaypointTarget::Workload { network, ip } => match state.workload_by_ip(network, *ip) {
            Some(w) => Route::Hbone {
                next_hop: SocketAddr::new(*ip, port),
                authority: original,
                identities: vec![w.identity.clone()],
                workload: w,
                service: None,
                via_waypoint: true,
            },
            None => Route::Refused(Unroutable::UnknownWaypointWorkload(*ip)),
        },
    }
}

fn direct(w: Arc<WorkloadInfo>, port: u16, service: Option<Arc<ServiceInfo>>) -> Route {
    let Some(ip) = w.ips.first().copied() else {
        return Route::Refused(Unroutable::NoAddress(w.uid.clone()));
    };
    if !w.hbone {
        return Route::Passthrough {
            target: SocketAddr::new(ip, port),
        };
    }
    let mut identities = vec![w.identity.clone()];
    if let Some(s) = &service {
        identities.extend(s.subject_alt_names.iter().cloned());
    }
    Route::Hbone {
        next_hop: SocketAddr::new(ip, HBONE_PORT),
        authority: SocketAddr::new(ip, port),
        identities,
        workload: w,
        service,
        via_waypoint: false,
    }
}

/// Decides the route of a connection from `source` to `original` (as dialled).
pub fn route(
    state: &State,
    source: &WorkloadInfo,
    original: SocketAddr,
    pick: &mut dyn FnMut(usize) -> usize,
) -> Route {
    let network = source.network.as_str();
    if let Some(svc) = state.service_by_vip(network, original.ip()) {
        if let Some(gw) = &svc.waypoint {
            return to_waypoint(state, gw, original, pick);
        }
        let eps = state.endpoints(&svc, original.port());
        if eps.is_empty() {
            return Route::Refused(Unroutable::NoHealthyUpstream {
                service: svc.key.clone(),
                port: original.port(),
            });
        }
        let (w, target) = eps[pick(eps.len()) % eps.len()].clone();
        return direct(w, target, Some(svc));
    }
    if let Some(w) = state.workload_by_ip(network, original.ip()) {
        if let Some(gw) = &w.waypoint {
            let to_self = match to_waypoint(state, gw, original, pick) {
                Route::Hbone { workload, .. } if workload.uid == source.uid => None,
                r => Some(r),
            };
            if let Some(r) = to_self {
                return r;
            }
        }
        return direct(w, original.port(), None);
    }
    Route::Passthrough { target: original }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::proto::istio::workload::{
        address, gateway_address, Address, GatewayAddress, NamespacedHostname, NetworkAddress,
        Port, PortList, Service, TunnelProtocol, Workload,
    };

    fn add_workload(
        s: &mut State,
        uid: &str,
        ip: [u8; 4],
        hbone: bool,
        svc: Option<(&str, u32, u32)>,
        sa: &str,
    ) {
        let services = svc
            .map(|(k, p, t)| {
                (
                    k.to_string(),
                    PortList {
                        ports: vec![Port {
                            service_port: p,
                            target_port: t,
                            app_protocol: 0,
                        }],
                    },
                )
            })
            .into_iter()
            .collect();
        let w = Workload {
            uid: uid.into(),
            name: uid.into(),
            namespace: "demo".into(),
            addresses: vec![ip.to_vec()],
            tunnel_protocol: if hbone {
                TunnelProtocol::Hbone
            } else {
                TunnelProtocol::None
            } as i32,
            service_account: sa.into(),
            services,
            ..Default::default()
        };
        s.apply_address(
            uid,
            &Address {
                r#type: Some(address::Type::Workload(w)),
            },
        )
        .unwrap();
    }

    fn add_service(s: &mut State, name: &str, vip: [u8; 4], port: u32, waypoint: Option<&str>) {
        let svc = Service {
            name: name.into(),
            namespace: "demo".into(),
            hostname: format!("{name}.demo.svc.cluster.local"),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: vip.to_vec(),
                length: None,
            }],
            ports: vec![Port {
                service_port: port,
                target_port: 8080,
                app_protocol: 0,
            }],
            waypoint: waypoint.map(|w| GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                    namespace: "demo".into(),
                    hostname: format!("{w}.demo.svc.cluster.local"),
                })),
                hbone_mtls_port: 15008,
            }),
            ..Default::default()
        };
        let key = format!("demo/{name}.demo.svc.cluster.local");
        s.apply_address(
            &key,
            &Address {
                r#type: Some(address::Type::Service(svc)),
            },
        )
        .unwrap();
    }

    fn sa(addr: &str) -> SocketAddr {
        addr.parse().unwrap()
    }

    fn first(_: usize) -> usize {
        0
    }

    #[test]
    fn routes_follow_istios_rules() {
        let mut s = State::default();
        add_workload(&mut s, "client", [10, 0, 0, 2], true, None, "client");
        add_workload(
            &mut s,
            "web-1",
            [10, 0, 0, 3],
            true,
            Some(("demo/web.demo.svc.cluster.local", 80, 8080)),
            "web",
        );
        add_workload(&mut s, "legacy", [10, 0, 0, 4], false, None, "legacy");
        add_service(&mut s, "web", [10, 96, 0, 1], 80, None);
        add_service(&mut s, "empty", [10, 96, 0, 2], 80, None);
        let client = s.workload("client").unwrap();

        // Service VIP: an endpoint, with the target port in the authority.
        match route(&s, &client, sa("10.96.0.1:80"), &mut first) {
            Route::Hbone {
                next_hop,
                authority,
                identities,
                via_waypoint,
                ..
            } => {
                assert_eq!(next_hop, sa("10.0.0.3:15008"));
                assert_eq!(authority, sa("10.0.0.3:8080"));
                assert_eq!(
                    identities[0].to_string(),
                    "spiffe://cluster.local/ns/demo/sa/web"
                );
                assert!(!via_waypoint);
            }
            other => panic!("{other:?}"),
        }
        // A port the service does not map, and a service without endpoints: refused.
        assert_eq!(
            route(&s, &client, sa("10.96.0.1:81"), &mut first),
            Route::Refused(Unroutable::NoHealthyUpstream {
                service: "demo/web.demo.svc.cluster.local".into(),
                port: 81
            })
        );
        assert!(matches!(
            route(&s, &client, sa("10.96.0.2:80"), &mut first),
            Route::Refused(Unroutable::NoHealthyUpstream { .. })
        ));
        // Pod IP in the mesh: HBONE with the port as dialled.
        match route(&s, &client, sa("10.0.0.3:9000"), &mut first) {
            Route::Hbone { authority, .. } => assert_eq!(authority, sa("10.0.0.3:9000")),
            other => panic!("{other:?}"),
        }
        // Outside the mesh: plain TCP.
        assert_eq!(
            route(&s, &client, sa("10.0.0.4:5432"), &mut first),
            Route::Passthrough {
                target: sa("10.0.0.4:5432")
            }
        );
        assert_eq!(
            route(&s, &client, sa("192.0.2.1:443"), &mut first),
            Route::Passthrough {
                target: sa("192.0.2.1:443")
            }
        );
    }

    #[test]
    fn service_waypoints_get_the_original_destination() {
        let mut s = State::default();
        add_workload(&mut s, "client", [10, 0, 0, 2], true, None, "client");
        add_workload(
            &mut s,
            "web-1",
            [10, 0, 0, 3],
            true,
            Some(("demo/web.demo.svc.cluster.local", 80, 8080)),
            "web",
        );
        add_workload(
            &mut s,
            "wp",
            [10, 0, 0, 9],
            true,
            Some(("demo/waypoint.demo.svc.cluster.local", 15008, 15008)),
            "waypoint",
        );
        add_service(&mut s, "web", [10, 96, 0, 1], 80, Some("waypoint"));
        add_service(&mut s, "waypoint", [10, 96, 0, 9], 15008, None);
        let client = s.workload("client").unwrap();
        match route(&s, &client, sa("10.96.0.1:80"), &mut first) {
            Route::Hbone {
                next_hop,
                authority,
                identities,
                via_waypoint,
                ..
            } => {
                assert_eq!(next_hop, sa("10.0.0.9:15008"));
                assert_eq!(authority, sa("10.96.0.1:80"), "the VIP as dialled");
                assert_eq!(
                    identities[0].to_string(),
                    "spiffe://cluster.local/ns/demo/sa/waypoint"
                );
                assert!(via_waypoint);
            }
            other => panic!("{other:?}"),
        }
        // The pod itself, addressed directly, has no workload waypoint: direct.
        match route(&s, &client, sa("10.0.0.3:8080"), &mut first) {
            Route::Hbone {
                next_hop,
                via_waypoint,
                ..
            } => {
                assert_eq!(next_hop, sa("10.0.0.3:15008"));
                assert!(!via_waypoint);
            }
            other => panic!("{other:?}"),
        }
    }
}
