//! Services: each Kubernetes Service with a cluster IP becomes an `istio.workload.Service` named
//! `<namespace>/<hostname>`. Its endpoints are not listed here: each workload names the services
//! it belongs to (see `workload.rs`), which is how Istio's workload API carries endpoints.

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_core::k8s::{IntOrString, Labels, Service, ServicePort};
use mesh_core::proto::istio::workload::{AppProtocol, NetworkAddress, Port, Service as XdsService};

use super::waypoint::{binding, ip_bytes, TrafficType, Waypoints, GATEWAY_NAME_LABEL};
use super::MeshConfig;
use crate::store::Snapshot;

/// A translated service plus what workload translation needs to map its endpoints.
pub struct ServiceInfo {
    pub xds: XdsService,
    pub source: Arc<Service>,
    /// The waypoint Gateway serving it, `<namespace>/<name>`.
    pub gateway: Option<String>,
}

impl ServiceInfo {
    pub fn selector(&self) -> Option<&Labels> {
        self.source.spec.selector.as_ref().filter(|s| !s.is_empty())
    }

    /// The TCP ports of the service.
    pub fn tcp_ports(&self) -> impl Iterator<Item = &ServicePort> {
        self.source
            .spec
            .ports
            .iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
    }
}

/// Services by (namespace, name).
pub type Services = BTreeMap<(String, String), ServiceInfo>;

fn app_protocol(port: &ServicePort) -> i32 {
    let declared = port
        .app_protocol
        .as_deref()
        .or_else(|| {
            port.name
                .as_deref()
                .map(|n| n.split('-').next().unwrap_or(n))
        })
        .unwrap_or("")
        .to_ascii_lowercase();
    let p = match declared.as_str() {
        "http" | "http1" | "kubernetes.io/http" => AppProtocol::Http11,
        "http2" | "h2c" | "kubernetes.io/h2c" => AppProtocol::Http2,
        "grpc" => AppProtocol::Grpc,
        "tcp" => AppProtocol::Tcp,
        "tls" | "https" => AppProtocol::Tls,
        _ => AppProtocol::Unknown,
    };
    p as i32
}

pub fn translate_services(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    waypoints: &Waypoints,
) -> Services {
    let mut out = Services::new();
    for ((ns, name), svc) in &snapshot.services {
        if svc.spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let hostname = mesh.service_hostname(ns, name);
        let addresses = svc
            .vips()
            .into_iter()
            .map(|ip| NetworkAddress {
                network: String::new(),
                address: ip_bytes(ip),
                length: None,
            })
            .collect();
        let ports = svc
            .spec
            .ports
            .iter()
            .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
            .map(|p| Port {
                service_port: u32::from(p.port),
                target_port: match &p.target_port {
                    None => u32::from(p.port),
                    Some(IntOrString::Int(t)) => u32::from(*t),
                    // Named target ports resolve per endpoint; 0 says so.
                    Some(IntOrString::String(s)) => s.parse::<u32>().unwrap_or(0),
                },
                app_protocol: app_protocol(p),
            })
            .collect();
        // A waypoint's own service never goes through a waypoint.
        let is_waypoint =
            waypoints.exists(ns, name) || svc.metadata.labels.contains_key(GATEWAY_NAME_LABEL);
        let (gateway, waypoint) = if is_waypoint {
            (None, None)
        } else {
            let b = binding(&svc.metadata.labels, ns, snapshot.namespace(ns));
            waypoints
                .resolve_named(&b, TrafficType::Service)
                .map_or((None, None), |(g, a)| (Some(g), Some(a)))
        };
        let xds = XdsService {
            name: name.clone(),
            namespace: ns.clone(),
            hostname,
            addresses,
            ports,
            waypoint,
            ..Default::default()
        };
        out.insert(
            (ns.clone(), name.clone()),
            ServiceInfo {
                xds,
                source: svc.clone(),
                gateway,
            },
        );
    }
    out
}
