//! The waypoint's view of the mesh: the services it serves and their endpoints, as istiod-lite
//! sends them (`WaypointService` resources). xDS writes it ([`Handler`]); the data path only
//! reads it, taking an `Arc` of a service per request, so an update never disturbs a request
//! or connection in flight.
//!
//! An endpoint keeps its in-flight request count across updates (the load balancer's input),
//! as long as the update still lists the same pod at the same address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use mesh_core::identity::Identity;
use mesh_core::proto::mesh::waypoint::v1 as pb;
use mesh_core::xds::{Changes, Handler, Rejection};

/// What the traffic of a port is, when its Service says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Not declared: detected per connection.
    Undeclared,
    Http1,
    Http2,
    Grpc,
    Tcp,
    Tls,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    pub port: u16,
    /// 0: a named port, resolved per endpoint.
    pub target_port: u16,
    pub name: String,
    pub protocol: Protocol,
}

/// How the waypoint reaches an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// HBONE to the endpoint's ztunnel (`<ip>:15008`).
    Hbone,
    /// Plain TCP: the endpoint is not in the mesh.
    Plaintext,
}

#[derive(Debug)]
pub struct Endpoint {
    /// `<namespace>/<pod>`.
    pub workload: String,
    pub address: IpAddr,
    pub identity: Option<Identity>,
    /// Service port -> target port.
    pub ports: HashMap<u16, u16>,
    pub tunnel: Tunnel,
    pub healthy: bool,
    pub node: String,
    /// Its workload (e.g. the Deployment), for metrics.
    pub workload_name: String,
    /// Requests in flight to it now (least-request balancing).
    pub active: Arc<AtomicUsize>,
}

impl Endpoint {
    /// The endpoint's port for a service port: its own mapping, else the service's target port.
    pub fn target_port(&self, service_port: &ServicePort) -> Option<u16> {
        match self.ports.get(&service_port.port) {
            Some(p) => Some(*p),
            None if service_port.target_port != 0 => Some(service_port.target_port),
            None => None,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

#[derive(Debug)]
pub struct Service {
    /// The xDS resource name, `<namespace>/<hostname>`.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    pub vips: Vec<IpAddr>,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Its AuthorizationPolicies, compiled.
    pub policies: Vec<crate::authz::Policy>,
    /// Its HTTPRoutes, compiled.
    pub routes: crate::route_table::RouteTable,
    /// Bound to this waypoint: it takes this service's traffic. Otherwise the service is only
    /// a backend of a route, reached through another service.
    pub bound: bool,
}

impl Service {
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }
}

/// Where a CONNECT authority leads.
#[derive(Clone, Debug)]
pub enum Destination {
    /// A service VIP and one of its ports.
    Service { service: Arc<Service>, port: u16 },
    /// A pod of a served service, addressed directly (`podIP:port`).
    Workload {
        service: Arc<Service>,
        endpoint: Arc<Endpoint>,
        port: u16,
    },
}

impl Destination {
    pub fn service(&self) -> &Arc<Service> {
        match self {
            Destination::Service { service, .. } | Destination::Workload { service, .. } => service,
        }
    }
}

#[derive(Default)]
pub struct State {
    services: HashMap<String, Arc<Service>>,
    by_vip: HashMap<IpAddr, String>,
    by_endpoint: HashMap<IpAddr, String>,
}

impl State {
    pub fn service(&self, key: &str) -> Option<Arc<Service>> {
        self.services.get(key).cloned()
    }

    pub fn services(&self) -> impl Iterator<Item = &Arc<Service>> {
        self.services.values()
    }

    /// The destination of a CONNECT to `addr`: a VIP of a served service (on one of its ports),
    /// else a pod of one.
    pub fn destination(&self, addr: SocketAddr) -> Option<Destination> {
        let ip = addr.ip();
        let port = addr.port();
        if let Some(service) = self.by_vip.get(&ip).and_then(|k| self.services.get(k)) {
            service.port(port)?;
            return Some(Destination::Service {
                service: service.clone(),
                port,
            });
        }
        let service = self
            .by_endpoint
            .get(&ip)
            .and_then(|k| self.services.get(k))?;
        let endpoint = service.endpoints.iter().find(|e| e.address == ip)?.clone();
        Some(Destination::Workload {
            service: service.clone(),
            endpoint,
            port,
        })
    }

    /// The endpoint at `ip`, in any served service.
    pub fn endpoint(&self, ip: IpAddr) -> Option<Arc<Endpoint>> {
        let service = self
            .by_endpoint
            .get(&ip)
            .and_then(|k| self.services.get(k))?;
        service.endpoints.iter().find(|e| e.address == ip).cloned()
    }

    fn insert(&mut self, service: Service) {
        let previous = self.remove(&service.key);
        let mut service = service;
        // Keep the load counters of endpoints that stayed.
        if let Some(prev) = previous {
            for e in &mut service.endpoints {
                if let Some(old) = prev
                    .endpoints
                    .iter()
                    .find(|o| o.workload == e.workload && o.address == e.address)
                {
                    if let Some(e) = Arc::get_mut(e) {
                        e.active = old.active.clone();
                    }
                }
            }
        }
        if service.bound {
            for vip in &service.vips {
                self.by_vip.insert(*vip, service.key.clone());
            }
            for e in &service.endpoints {
                self.by_endpoint
                    .entry(e.address)
                    .or_insert_with(|| service.key.clone());
            }
        }
        self.services.insert(service.key.clone(), Arc::new(service));
    }

    fn remove(&mut self, key: &str) -> Option<Arc<Service>> {
        let old = self.services.remove(key)?;
        for vip in &old.vips {
            if self.by_vip.get(vip).map(String::as_str) == Some(key) {
                self.by_vip.remove(vip);
            }
        }
        for e in &old.endpoints {
            if self.by_endpoint.get(&e.address).map(String::as_str) == Some(key) {
                self.by_endpoint.remove(&e.address);
                // Another served service may list the same pod.
                if let Some(other) = self
                    .services
                    .values()
                    .find(|s| s.bound && s.endpoints.iter().any(|o| o.address == e.address))
                {
                    self.by_endpoint.insert(e.address, other.key.clone());
                }
            }
        }
        Some(old)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResourceError {
    #[error("{0} is not an IPv4 or IPv6 address ({1} bytes)")]
    Address(&'static str, usize),
    #[error("port {0} is out of range")]
    Port(u32),
    #[error("endpoint {workload}: identity: {reason}")]
    Identity { workload: String, reason: String },
    #[error("{0}")]
    Policy(String),
    #[error("resource name {name:?} is not {expected:?}")]
    Name { name: String, expected: String },
}

fn ip(bytes: &[u8], what: &'static str) -> Result<IpAddr, ResourceError> {
    match bytes.len() {
        4 => Ok(IpAddr::from(<[u8; 4]>::try_from(bytes).unwrap_or_default())),
        16 => Ok(IpAddr::from(
            <[u8; 16]>::try_from(bytes).unwrap_or_default(),
        )),
        n => Err(ResourceError::Address(what, n)),
    }
}

fn port(p: u32) -> Result<u16, ResourceError> {
    u16::try_from(p).map_err(|_| ResourceError::Port(p))
}

fn protocol(p: i32) -> Protocol {
    match pb::Protocol::try_from(p).unwrap_or(pb::Protocol::Undeclared) {
        pb::Protocol::Undeclared => Protocol::Undeclared,
        pb::Protocol::Http1 => Protocol::Http1,
        pb::Protocol::Http2 => Protocol::Http2,
        pb::Protocol::Grpc => Protocol::Grpc,
        pb::Protocol::Tcp => Protocol::Tcp,
        pb::Protocol::Tls => Protocol::Tls,
    }
}

/// Validates one resource into a [`Service`]; `bound`: this waypoint takes its traffic.
pub fn service_from(
    name: &str,
    s: &pb::WaypointService,
    bound: bool,
) -> Result<Service, ResourceError> {
    let expected = format!("{}/{}", s.namespace, s.hostname);
    if name != expected {
        return Err(ResourceError::Name {
            name: name.to_string(),
            expected,
        });
    }
    let vips = s
        .vips
        .iter()
        .map(|v| ip(v, "a VIP"))
        .collect::<Result<_, _>>()?;
    let ports = s
        .ports
        .iter()
        .map(|p| {
            Ok(ServicePort {
                port: port(p.port)?,
                target_port: port(p.target_port)?,
                name: p.name.clone(),
                protocol: protocol(p.protocol),
            })
        })
        .collect::<Result<_, ResourceError>>()?;
    let mut endpoints = Vec::with_capacity(s.endpoints.len());
    for e in &s.endpoints {
        let identity = if e.identity.is_empty() {
            None
        } else {
            Some(
                e.identity
                    .parse::<Identity>()
                    .map_err(|err| ResourceError::Identity {
                        workload: e.workload.clone(),
                        reason: err.to_string(),
                    })?,
            )
        };
        let tunnel = match pb::Tunnel::try_from(e.tunnel).unwrap_or(pb::Tunnel::Hbone) {
            pb::Tunnel::Hbone => Tunnel::Hbone,
            pb::Tunnel::Plaintext => Tunnel::Plaintext,
        };
        // Fail closed: an HBONE endpoint without an identity could not be verified.
        if tunnel == Tunnel::Hbone && identity.is_none() {
            return Err(ResourceError::Identity {
                workload: e.workload.clone(),
                reason: "an HBONE endpoint must name its identity".into(),
            });
        }
        let ports = e
            .ports
            .iter()
            .map(|(k, v)| Ok((port(*k)?, port(*v)?)))
            .collect::<Result<_, ResourceError>>()?;
        endpoints.push(Arc::new(Endpoint {
            workload: e.workload.clone(),
            address: ip(&e.address, "an endpoint address")?,
            identity,
            ports,
            tunnel,
            healthy: e.healthy,
            node: e.node.clone(),
            workload_name: e.workload_name.clone(),
            active: Arc::new(AtomicUsize::new(0)),
        }));
    }
    let policies = s
        .policies
        .iter()
        .map(crate::authz::compile)
        .collect::<Result<_, _>>()
        .map_err(ResourceError::Policy)?;
    let routes =
        crate::route_table::RouteTable::compile(&s.routes).map_err(ResourceError::Policy)?;
    Ok(Service {
        policies,
        routes,
        bound,
        key: name.to_string(),
        namespace: s.namespace.clone(),
        name: s.name.clone(),
        hostname: s.hostname.clone(),
        vips,
        ports,
        endpoints,
    })
}

/// The xDS handler: keeps the services that name this waypoint.
pub struct StateHandler {
    pub state: Arc<RwLock<State>>,
    /// This waypoint, `<namespace>/<gateway name>`.
    pub waypoint: String,
}

impl Handler<pb::WaypointService> for StateHandler {
    fn apply(&self, changes: Changes<pb::WaypointService>) -> Vec<Rejection> {
        let mut rejected = Vec::new();
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        for name in changes.removed {
            state.remove(&name);
        }
        for (name, resource) in changes.updated {
            let bound = resource.waypoints.contains(&self.waypoint);
            if !bound && !resource.backend_of.contains(&self.waypoint) {
                // Another waypoint's service (or one that moved away from us).
                state.remove(&name);
                continue;
            }
            match service_from(&name, &resource, bound) {
                Ok(service) => state.insert(service),
                Err(e) => rejected.push(Rejection {
                    name,
                    reason: e.to_string(),
                }),
            }
        }
        rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(endpoints: Vec<pb::Endpoint>) -> pb::WaypointService {
        pb::WaypointService {
            waypoints: vec!["demo/waypoint".into()],
            namespace: "demo".into(),
            name: "web".into(),
            hostname: "web.demo.svc.cluster.local".into(),
            vips: vec![vec![10, 96, 0, 1]],
            ports: vec![pb::ServicePort {
                port: 80,
                target_port: 8080,
                name: "http".into(),
                protocol: pb::Protocol::Http1 as i32,
            }],
            endpoints,
            policies: vec![],
            backend_of: vec![],
            routes: vec![],
        }
    }

    fn endpoint(ip: [u8; 4], identity: &str) -> pb::Endpoint {
        pb::Endpoint {
            workload: format!("demo/web-{}", ip[3]),
            address: ip.to_vec(),
            identity: identity.into(),
            ports: HashMap::new(),
            tunnel: pb::Tunnel::Hbone as i32,
            healthy: true,
            node: "node1".into(),
            workload_name: "web".into(),
        }
    }

    const NAME: &str = "demo/web.demo.svc.cluster.local";
    const WEB: &str = "spiffe://cluster.local/ns/demo/sa/web";

    fn handler() -> StateHandler {
        StateHandler {
            state: Arc::default(),
            waypoint: "demo/waypoint".into(),
        }
    }

    #[test]
    fn services_resolve_by_vip_and_by_pod() {
        let h = handler();
        let r = resource(vec![endpoint([10, 0, 0, 5], WEB)]);
        assert!(h
            .apply(Changes {
                updated: vec![(NAME.into(), r)],
                removed: vec![]
            })
            .is_empty());
        let state = h.state.read().unwrap();
        let vip: SocketAddr = "10.96.0.1:80".parse().unwrap();
        assert!(matches!(
            state.destination(vip),
            Some(Destination::Service { port: 80, .. })
        ));
        assert!(
            state.destination("10.96.0.1:81".parse().unwrap()).is_none(),
            "a port the service does not have"
        );
        match state.destination("10.0.0.5:8080".parse().unwrap()) {
            Some(Destination::Workload { endpoint, .. }) => {
                assert_eq!(endpoint.workload, "demo/web-5");
                assert_eq!(
                    endpoint.target_port(state.service(NAME).unwrap().port(80).unwrap()),
                    Some(8080)
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bad_resource_is_refused_and_the_last_good_one_stays() {
        let h = handler();
        h.apply(Changes {
            updated: vec![(NAME.into(), resource(vec![endpoint([10, 0, 0, 5], WEB)]))],
            removed: vec![],
        });
        let bad = resource(vec![endpoint([10, 0, 0, 6], "web")]);
        let rejected = h.apply(Changes {
            updated: vec![(NAME.into(), bad)],
            removed: vec![],
        });
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].reason.contains("demo/web-6"), "{rejected:?}");
        let state = h.state.read().unwrap();
        assert_eq!(
            state.service(NAME).unwrap().endpoints[0].workload,
            "demo/web-5"
        );

        // An HBONE endpoint with no identity cannot be verified: refused.
        drop(state);
        let rejected = h.apply(Changes {
            updated: vec![(NAME.into(), resource(vec![endpoint([10, 0, 0, 7], "")]))],
            removed: vec![],
        });
        assert!(
            rejected[0].reason.contains("must name its identity"),
            "{rejected:?}"
        );
    }

    #[test]
    fn load_counters_survive_an_update_and_other_waypoints_are_ignored() {
        let h = handler();
        h.apply(Changes {
            updated: vec![(NAME.into(), resource(vec![endpoint([10, 0, 0, 5], WEB)]))],
            removed: vec![],
        });
        let e = h
            .state
            .read()
            .unwrap()
            .endpoint("10.0.0.5".parse().unwrap())
            .unwrap();
        e.active.fetch_add(3, Ordering::Relaxed);
        h.apply(Changes {
            updated: vec![(
                NAME.into(),
                resource(vec![
                    endpoint([10, 0, 0, 5], WEB),
                    endpoint([10, 0, 0, 6], WEB),
                ]),
            )],
            removed: vec![],
        });
        let again = h
            .state
            .read()
            .unwrap()
            .endpoint("10.0.0.5".parse().unwrap())
            .unwrap();
        assert_eq!(again.in_flight(), 3);

        let mut other = resource(vec![]);
        other.waypoints = vec!["demo/other".into()];
        h.apply(Changes {
            updated: vec![(NAME.into(), other)],
            removed: vec![],
        });
        assert!(h.state.read().unwrap().service(NAME).is_none());
    }
}
