//! The one source of truth of a ztunnel: workloads, services and L4 policies as xDS delivered
//! them. The xDS client writes it; the proxies only read it.
//!
//! Resources are validated on the way in (an address of the wrong length, an unknown tunnel
//! protocol, a service key without `/`): a bad resource is refused with a reason (which the
//! xDS client sends back as a NACK) and the rest of the response still applies.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_core::hbone::HBONE_PORT;
use mesh_core::identity::Identity;
use mesh_core::proto::istio::security::Authorization;
use mesh_core::proto::istio::workload::{
    address, gateway_address, Address, GatewayAddress, Service, TunnelProtocol, Workload,
};

use crate::rbac::{Policy, PolicyError, Scope};

/// Why a resource was refused (sent back to the control plane in the NACK).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("an address of {0} bytes is neither IPv4 nor IPv6")]
    AddressLength(usize),
    #[error("port {0} is out of range")]
    Port(u32),
    #[error("workload without uid")]
    NoUid,
    #[error("unsupported tunnel protocol: legacy istio mtls")]
    LegacyTunnel,
    #[error("unknown tunnel protocol {0}")]
    UnknownTunnel(i32),
    #[error("service key {0:?} is not <namespace>/<hostname>")]
    ServiceKey(String),
    #[error("waypoint without destination")]
    WaypointDestination,
    #[error("resource {name:?} carries {kind} {carried:?}")]
    NameMismatch {
        name: String,
        kind: &'static str,
        carried: String,
    },
    #[error("address with neither workload nor service")]
    EmptyAddress,
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Where a waypoint is: the destination of a service's or workload's `waypoint`, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaypointTarget {
    /// A waypoint service, by `ns/hostname` (its endpoints are the waypoint's pods).
    Service(String),
    /// A waypoint workload, by address.
    Workload { network: String, ip: IpAddr },
}

/// A waypoint: where it is and the port it takes HBONE on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waypoint {
    pub target: WaypointTarget,
    pub hbone_port: u16,
}

impl TryFrom<&GatewayAddress> for Waypoint {
    type Error = ResourceError;

    fn try_from(gw: &GatewayAddress) -> Result<Self, ResourceError> {
        let hbone_port = match port(gw.hbone_mtls_port)? {
            0 => HBONE_PORT,
            p => p,
        };
        let target = match &gw.destination {
            Some(gateway_address::Destination::Hostname(h)) => {
                WaypointTarget::Service(format!("{}/{}", h.namespace, h.hostname))
            }
            Some(gateway_address::Destination::Address(a)) => WaypointTarget::Workload {
                network: a.network.clone(),
                ip: ip_from(&a.address)?,
            },
            None => return Err(ResourceError::WaypointDestination),
        };
        Ok(Waypoint { target, hbone_port })
    }
}

impl std::fmt::Display for Waypoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            WaypointTarget::Service(key) => write!(f, "{key}:{}", self.hbone_port),
            WaypointTarget::Workload { network, ip } => {
                write!(f, "{network}/{}", SocketAddr::new(*ip, self.hbone_port))
            }
        }
    }
}

/// A workload ready to route to.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadInfo {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub ips: Vec<IpAddr>,
    pub network: String,
    pub hbone: bool,
    pub identity: Identity,
    pub node: String,
    pub healthy: bool,
    /// `ns/hostname` -> (service port -> target port).
    pub services: HashMap<String, HashMap<u16, u16>>,
    pub authorization_policies: Vec<String>,
    pub waypoint: Option<Waypoint>,
    pub canonical_name: String,
    pub canonical_revision: String,
    pub workload_name: String,
    pub cluster_id: String,
}

/// A service with its VIPs and ports.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    /// `ns/hostname`.
    pub key: String,
    pub name: String,
    pub namespace: String,
    pub hostname: String,
    pub vips: Vec<(String, IpAddr)>,
    /// service port -> target port (0: per endpoint).
    pub ports: HashMap<u16, u16>,
    pub waypoint: Option<Waypoint>,
    /// Identities its endpoints may also present (parsed once, here).
    pub subject_alt_names: Vec<Identity>,
}

fn ip_from(bytes: &[u8]) -> Result<IpAddr, ResourceError> {
    if let Ok(v4) = <[u8; 4]>::try_from(bytes) {
        return Ok(IpAddr::from(v4));
    }
    <[u8; 16]>::try_from(bytes)
        .map(IpAddr::from)
        .map_err(|_| ResourceError::AddressLength(bytes.len()))
}

fn port(p: u32) -> Result<u16, ResourceError> {
    u16::try_from(p).map_err(|_| ResourceError::Port(p))
}

impl TryFrom<&Workload> for WorkloadInfo {
    type Error = ResourceError;

    fn try_from(w: &Workload) -> Result<Self, ResourceError> {
        if w.uid.is_empty() {
            return Err(ResourceError::NoUid);
        }
        let hbone = match TunnelProtocol::try_from(w.tunnel_protocol) {
            Ok(TunnelProtocol::None) => false,
            Ok(TunnelProtocol::Hbone) => true,
            Ok(TunnelProtocol::LegacyIstioMtls) => return Err(ResourceError::LegacyTunnel),
            Err(_) => return Err(ResourceError::UnknownTunnel(w.tunnel_protocol)),
        };
        let ips = w
            .addresses
            .iter()
            .map(|a| ip_from(a))
            .collect::<Result<Vec<_>, _>>()?;
        let mut services = HashMap::new();
        for (key, list) in &w.services {
            if !key.contains('/') {
                return Err(ResourceError::ServiceKey(key.clone()));
            }
            let mut ports = HashMap::new();
            for p in &list.ports {
                ports.insert(port(p.service_port)?, port(p.target_port)?);
            }
            services.insert(key.clone(), ports);
        }
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        Ok(WorkloadInfo {
            uid: w.uid.clone(),
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            ips,
            network: w.network.clone(),
            hbone,
            identity: Identity::new(
                &or(&w.trust_domain, "cluster.local"),
                &w.namespace,
                &or(&w.service_account, "default"),
            ),
            node: w.node.clone(),
            healthy: w.status == 0,
            services,
            authorization_policies: w.authorization_policies.clone(),
            waypoint: w.waypoint.as_ref().map(Waypoint::try_from).transpose()?,
            canonical_name: w.canonical_name.clone(),
            canonical_revision: w.canonical_revision.clone(),
            workload_name: w.workload_name.clone(),
            cluster_id: w.cluster_id.clone(),
        })
    }
}

impl TryFrom<&Service> for ServiceInfo {
    type Error = ResourceError;

    fn try_from(s: &Service) -> Result<Self, ResourceError> {
        let vips = s
            .addresses
            .iter()
            .map(|a| Ok((a.network.clone(), ip_from(&a.address)?)))
            .collect::<Result<Vec<_>, ResourceError>>()?;
        let mut ports = HashMap::new();
        for p in &s.ports {
            ports.insert(port(p.service_port)?, port(p.target_port)?);
        }
        let key = format!("{}/{}", s.namespace, s.hostname);
        // A SAN that is not a SPIFFE identity cannot be what a peer's certificate proves here;
        // it is left out, and said so once, now.
        let subject_alt_names = s
            .subject_alt_names
            .iter()
            .filter_map(|san| {
                san.parse()
                    .inspect_err(|e| tracing::warn!(service = %key, %san, error = %e, "subject alt name is not a SPIFFE identity; left out"))
                    .ok()
            })
            .collect();
        Ok(ServiceInfo {
            key,
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            vips,
            ports,
            waypoint: s.waypoint.as_ref().map(Waypoint::try_from).transpose()?,
            subject_alt_names,
        })
    }
}

/// Everything a ztunnel knows.
#[derive(Default, Debug)]
pub struct State {
    workloads: HashMap<String, Arc<WorkloadInfo>>,
    workload_by_ip: HashMap<(String, IpAddr), String>,
    services: HashMap<String, Arc<ServiceInfo>>,
    service_by_vip: HashMap<(String, IpAddr), String>,
    /// Service key -> UIDs of workloads that name it (endpoints may arrive before the service).
    endpoints: HashMap<String, BTreeSet<String>>,
    policies: HashMap<String, Arc<Policy>>,
}

impl State {
    /// Applies one `istio.workload.Address` resource named `name`.
    pub fn apply_address(&mut self, name: &str, addr: &Address) -> Result<(), ResourceError> {
        match &addr.r#type {
            Some(address::Type::Workload(w)) => {
                let info = WorkloadInfo::try_from(w)?;
                if info.uid != name {
                    return Err(ResourceError::NameMismatch {
                        name: name.to_string(),
                        kind: "workload",
                        carried: info.uid,
                    });
                }
                self.remove_workload(name);
                for ip in &info.ips {
                    self.workload_by_ip
                        .insert((info.network.clone(), *ip), info.uid.clone());
                }
                for svc in info.services.keys() {
                    self.endpoints
                        .entry(svc.clone())
                        .or_default()
                        .insert(info.uid.clone());
                }
                self.workloads.insert(info.uid.clone(), Arc::new(info));
                Ok(())
            }
            Some(address::Type::Service(s)) => {
                let info = ServiceInfo::try_from(s)?;
                self.remove_service(&info.key);
                for (net, vip) in &info.vips {
                    self.service_by_vip
                        .insert((net.clone(), *vip), info.key.clone());
                }
                self.services.insert(info.key.clone(), Arc::new(info));
                Ok(())
            }
            None => Err(ResourceError::EmptyAddress),
        }
    }

    fn remove_workload(&mut self, uid: &str) -> bool {
        let Some(old) = self.workloads.remove(uid) else {
            return false;
        };
        for ip in &old.ips {
            let k = (old.network.clone(), *ip);
            if self.workload_by_ip.get(&k).map(String::as_str) == Some(uid) {
                self.workload_by_ip.remove(&k);
            }
        }
        for svc in old.services.keys() {
            if let Some(set) = self.endpoints.get_mut(svc) {
                set.remove(uid);
                if set.is_empty() {
                    self.endpoints.remove(svc);
                }
            }
        }
        true
    }

    fn remove_service(&mut self, key: &str) -> bool {
        let Some(old) = self.services.remove(key) else {
            return false;
        };
        for (net, vip) in &old.vips {
            let k = (net.clone(), *vip);
            if self.service_by_vip.get(&k).map(String::as_str) == Some(key) {
                self.service_by_vip.remove(&k);
            }
        }
        true
    }

    /// Removes an Address resource: a workload by UID, else a service by `ns/hostname`.
    pub fn remove_address(&mut self, name: &str) {
        if !self.remove_workload(name) {
            self.remove_service(name);
        }
    }

    pub fn apply_authorization(
        &mut self,
        name: &str,
        a: &Authorization,
    ) -> Result<(), ResourceError> {
        let policy = Policy::try_from(a)?;
        if policy.key != name {
            return Err(ResourceError::NameMismatch {
                name: name.to_string(),
                kind: "policy",
                carried: policy.key,
            });
        }
        self.policies.insert(policy.key.clone(), Arc::new(policy));
        Ok(())
    }

    pub fn remove_authorization(&mut self, name: &str) {
        self.policies.remove(name);
    }

    pub fn workload(&self, uid: &str) -> Option<Arc<WorkloadInfo>> {
        self.workloads.get(uid).cloned()
    }

    pub fn workload_by_ip(&self, network: &str, ip: IpAddr) -> Option<Arc<WorkloadInfo>> {
        let uid = self.workload_by_ip.get(&(network.to_string(), ip))?;
        self.workload(uid)
    }

    pub fn service_by_vip(&self, network: &str, ip: IpAddr) -> Option<Arc<ServiceInfo>> {
        let key = self.service_by_vip.get(&(network.to_string(), ip))?;
        self.services.get(key).cloned()
    }

    pub fn service(&self, key: &str) -> Option<Arc<ServiceInfo>> {
        self.services.get(key).cloned()
    }

    /// Healthy endpoints of a service that serve `service_port`, with their target port.
    pub fn endpoints(
        &self,
        service: &ServiceInfo,
        service_port: u16,
    ) -> Vec<(Arc<WorkloadInfo>, u16)> {
        let Some(uids) = self.endpoints.get(&service.key) else {
            return Vec::new();
        };
        uids.iter()
            .filter_map(|uid| self.workloads.get(uid))
            .filter(|w| w.healthy)
            .filter_map(|w| {
                let target = w.services.get(&service.key)?.get(&service_port).copied()?;
                Some((w.clone(), target))
            })
            .collect()
    }

    /// The policies in effect for a destination workload: global, its namespace's, and the
    /// selector policies it names (a named policy not received yet is skipped).
    pub fn policies_for(&self, w: &WorkloadInfo) -> Vec<Arc<Policy>> {
        let mut out: Vec<Arc<Policy>> = self
            .policies
            .values()
            .filter(|p| match p.scope {
                Scope::Global => true,
                Scope::Namespace => p.namespace == w.namespace,
                Scope::WorkloadSelector => false,
            })
            .cloned()
            .collect();
        for key in &w.authorization_policies {
            match self.policies.get(key) {
                Some(p) => out.push(p.clone()),
                None => {
                    tracing::warn!(workload = %w.uid, policy = %key, "policy named by the workload is not known yet")
                }
            }
        }
        out
    }

    pub fn counts(&self) -> (usize, usize, usize) {
        (
            self.workloads.len(),
            self.services.len(),
            self.policies.len(),
        )
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Arc<WorkloadInfo>> {
        self.workloads.values()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<ServiceInfo>> {
        self.services.values()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Arc<Policy>> {
        self.policies.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_core::proto::istio::workload::{NetworkAddress, Port, PortList};

    fn workload(uid: &str, ip: [u8; 4], svc: &str, healthy: bool) -> Address {
        Address {
            r#type: Some(address::Type::Workload(Workload {
                uid: uid.into(),
                name: uid.rsplit('/').next().unwrap().into(),
                namespace: "demo".into(),
                addresses: vec![ip.to_vec()],
                tunnel_protocol: TunnelProtocol::Hbone as i32,
                services: [(
                    svc.to_string(),
                    PortList {
                        ports: vec![Port {
                            service_port: 80,
                            target_port: 8080,
                            app_protocol: 0,
                        }],
                    },
                )]
                .into_iter()
                .collect(),
                status: if healthy { 0 } else { 1 },
                ..Default::default()
            })),
        }
    }

    #[test]
    fn endpoints_follow_workloads_even_before_their_service() {
        let mut s = State::default();
        let svc_key = "demo/web.demo.svc.cluster.local";
        s.apply_address("u1", &workload("u1", [10, 0, 0, 1], svc_key, true))
            .unwrap();
        s.apply_address("u2", &workload("u2", [10, 0, 0, 2], svc_key, false))
            .unwrap();
        let svc = Address {
            r#type: Some(address::Type::Service(Service {
                name: "web".into(),
                namespace: "demo".into(),
                hostname: "web.demo.svc.cluster.local".into(),
                addresses: vec![NetworkAddress {
                    network: String::new(),
                    address: vec![10, 96, 0, 1],
                    length: None,
                }],
                ports: vec![Port {
                    service_port: 80,
                    target_port: 8080,
                    app_protocol: 0,
                }],
                ..Default::default()
            })),
        };
        s.apply_address(svc_key, &svc).unwrap();
        let service = s.service_by_vip("", "10.96.0.1".parse().unwrap()).unwrap();
        let eps = s.endpoints(&service, 80);
        assert_eq!(eps.len(), 1, "only the healthy endpoint");
        assert_eq!((eps[0].0.uid.as_str(), eps[0].1), ("u1", 8080));
        assert!(s.endpoints(&service, 81).is_empty());
        // Removal by UID clears the IP index and the endpoint.
        s.remove_address("u1");
        assert!(s.workload_by_ip("", "10.0.0.1".parse().unwrap()).is_none());
        assert!(s.endpoints(&service, 80).is_empty());
        s.remove_address(svc_key);
        assert!(s.service_by_vip("", "10.96.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn bad_resources_are_refused_with_a_reason() {
        let mut s = State::default();
        let mut bad = workload("u1", [10, 0, 0, 1], "demo/x", true);
        if let Some(address::Type::Workload(w)) = bad.r#type.as_mut() {
            w.addresses = vec![vec![1, 2, 3]];
        }
        assert_eq!(
            s.apply_address("u1", &bad),
            Err(ResourceError::AddressLength(3))
        );
        let mut legacy = workload("u1", [10, 0, 0, 1], "demo/x", true);
        if let Some(address::Type::Workload(w)) = legacy.r#type.as_mut() {
            w.tunnel_protocol = TunnelProtocol::LegacyIstioMtls as i32;
        }
        assert_eq!(
            s.apply_address("u1", &legacy),
            Err(ResourceError::LegacyTunnel)
        );
        let mut no_way = workload("u1", [10, 0, 0, 1], "demo/x", true);
        if let Some(address::Type::Workload(w)) = no_way.r#type.as_mut() {
            w.waypoint = Some(GatewayAddress {
                destination: None,
                hbone_mtls_port: 15008,
            });
        }
        assert_eq!(
            s.apply_address("u1", &no_way),
            Err(ResourceError::WaypointDestination)
        );
        assert_eq!(s.counts(), (0, 0, 0));
    }
}
