//! Inbound HBONE (port 15008 of a local workload): the decisions taken for each CONNECT stream,
//! in Istio's order (`docs/istio-compatibility.md` §3.3):
//!
//! 1. the authority must be `ip:port` with the IP the connection arrived on (else 400);
//! 2. the target port must not be one of ztunnel's own (else 400);
//! 3. the destination workload must be known (else 503);
//! 4. L4 authorization with the peer's verified identity (a deny is 401);
//! 5. the upstream connection must open (else 503).
//!
//! Each refusal is logged with its reason and counted by the caller.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use http::StatusCode;
use mesh_core::identity::Identity;

use crate::rbac::{evaluate, Connection, Decision};
use crate::state::{State, WorkloadInfo};

/// Ports ztunnel listens on inside a pod; never a tunnel's target.
pub const PROXY_PORTS: [u16; 3] = [15001, 15006, 15008];

/// Why an inbound stream was refused; each kind knows the status it is answered with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("authority {0:?} is not ip:port")]
    Authority(String),
    #[error("ip mismatch: {target} != {arrived_on}")]
    IpMismatch { target: IpAddr, arrived_on: IpAddr },
    #[error("port {0} is ztunnel's own")]
    ProxyPort(u16),
    #[error("no workload known at {0}")]
    UnknownWorkload(IpAddr),
    /// L4 authorization said no; `policy` is the DENY policy that matched, if one did.
    #[error("{reason}")]
    Denied {
        policy: Option<String>,
        reason: String,
    },
}

impl Refusal {
    /// The HTTP status of the CONNECT response (Istio's ztunnel answers the same).
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Authority(_) | Refusal::IpMismatch { .. } | Refusal::ProxyPort(_) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::UnknownWorkload(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Denied { .. } => StatusCode::UNAUTHORIZED,
        }
    }

    /// The metrics' `response_flags`: `DENY` for a policy decision, else `CONNECT`.
    pub fn response_flags(&self) -> &'static str {
        match self {
            Refusal::Denied { .. } => "DENY",
            _ => "CONNECT",
        }
    }

    /// The policy that denied, for DENY decisions.
    pub fn policy(&self) -> Option<&str> {
        match self {
            Refusal::Denied { policy, .. } => policy.as_deref(),
            _ => None,
        }
    }
}

/// What inbound decided: the upstream address to open for an allowed stream.
#[derive(Debug)]
pub struct Admitted {
    pub upstream: SocketAddr,
    pub workload: Arc<WorkloadInfo>,
}

/// Steps 1-4 for one CONNECT: where to connect, or why not.
pub fn admit(
    state: &RwLock<State>,
    authority: &str,
    arrived_on: IpAddr,
    peer: Option<&Identity>,
    peer_ip: IpAddr,
) -> Result<Admitted, Refusal> {
    let target: SocketAddr = authority
        .parse()
        .map_err(|_| Refusal::Authority(authority.to_string()))?;
    if target.ip() != arrived_on {
        return Err(Refusal::IpMismatch {
            target: target.ip(),
            arrived_on,
        });
    }
    if PROXY_PORTS.contains(&target.port()) {
        return Err(Refusal::ProxyPort(target.port()));
    }
    let st = state.read().unwrap_or_else(|e| e.into_inner());
    let workload = st
        .workload_by_ip("", arrived_on)
        .ok_or(Refusal::UnknownWorkload(arrived_on))?;
    let policies = st.policies_for(&workload);
    drop(st);
    let conn = Connection {
        src_identity: peer.cloned(),
        src_ip: peer_ip,
        dst_ip: target.ip(),
        dst_port: target.port(),
    };
    match evaluate(policies.iter().map(|p| p.as_ref()), &conn) {
        Decision::Allow => Ok(Admitted {
            upstream: target,
            workload,
        }),
        Decision::Deny { policy, reason } => Err(Refusal::Denied { policy, reason }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::proto::istio::security::{self as xds_sec, string_match};
    use mesh_core::proto::istio::workload::{address, Address, TunnelProtocol, Workload};

    fn state() -> RwLock<State> {
        let mut s = State::default();
        let w = Address {
            r#type: Some(address::Type::Workload(Workload {
                uid: "u-b".into(),
                name: "b".into(),
                namespace: "demo".into(),
                addresses: vec![vec![10, 0, 0, 3]],
                tunnel_protocol: TunnelProtocol::Hbone as i32,
                ..Default::default()
            })),
        };
        s.apply_address("u-b", &w).unwrap();
        let only_client = xds_sec::Authorization {
            name: "only-client".into(),
            namespace: "demo".into(),
            scope: xds_sec::Scope::Namespace as i32,
            action: xds_sec::Action::Allow as i32,
            rules: vec![xds_sec::Rule {
                clauses: vec![xds_sec::Clause {
                    matches: vec![xds_sec::Match {
                        principals: vec![xds_sec::StringMatch {
                            match_type: Some(string_match::MatchType::Exact(
                                "cluster.local/ns/demo/sa/client".into(),
                            )),
                        }],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        s.apply_authorization("demo/only-client", &only_client)
            .unwrap();
        RwLock::new(s)
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_order_of_checks_gives_istios_statuses() {
        let st = state();
        let client: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
        let other: Identity = "spiffe://cluster.local/ns/demo/sa/other".parse().unwrap();
        let here = ip("10.0.0.3");
        let peer = ip("10.0.0.2");
        let ok = admit(&st, "10.0.0.3:8080", here, Some(&client), peer).unwrap();
        assert_eq!(ok.upstream, "10.0.0.3:8080".parse().unwrap());
        let status = |r: Result<Admitted, Refusal>| r.unwrap_err().status();
        assert_eq!(
            status(admit(&st, "web:80", here, Some(&client), peer)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(admit(&st, "10.0.0.9:8080", here, Some(&client), peer)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(admit(&st, "10.0.0.3:15006", here, Some(&client), peer)),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(admit(
                &st,
                "10.0.0.7:8080",
                ip("10.0.0.7"),
                Some(&client),
                peer
            )),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let denied = admit(&st, "10.0.0.3:8080", here, Some(&other), peer).unwrap_err();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(denied.response_flags(), "DENY");
        assert_eq!(denied.to_string(), "allow policies exist, but none allowed");
        assert_eq!(
            status(admit(&st, "10.0.0.3:8080", here, None, peer)),
            StatusCode::UNAUTHORIZED
        );
    }
}
