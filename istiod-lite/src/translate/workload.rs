//! Pods -> `istio.workload.Workload`. A pod is an HBONE workload when it is enrolled: its own
//! `istio.io/dataplane-mode` label says `ambient`, or its namespace's does and the pod does not
//! say `none`; a sidecar-injected pod or a host-network pod is never enrolled. Other pods are
//! plain TCP workloads (still listed, so ztunnel knows where they are).

use std::collections::BTreeMap;

use mesh_core::k8s::{
    IntOrString, Namespace, Pod, DATAPLANE_MODE_LABEL, SIDECAR_STATUS_ANNOTATION,
};
use mesh_core::proto::istio::workload::{
    NetworkMode, Port, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::authorization::SelectorPolicies;
use super::peer_authentication::PeerAuthentications;
use super::service::Services;
use super::waypoint::{binding, ip_bytes, TrafficType, Waypoints, GATEWAY_NAME_LABEL};
use super::MeshConfig;
use crate::store::Snapshot;

/// Whether ztunnel captures this pod's traffic.
pub fn is_enrolled(pod: &Pod, ns: Option<&Namespace>) -> bool {
    if pod.spec.host_network
        || pod
            .metadata
            .annotations
            .contains_key(SIDECAR_STATUS_ANNOTATION)
    {
        return false;
    }
    match pod
        .metadata
        .labels
        .get(DATAPLANE_MODE_LABEL)
        .map(String::as_str)
    {
        Some("ambient") => true,
        Some(_) => false,
        None => ns
            .and_then(|n| n.metadata.labels.get(DATAPLANE_MODE_LABEL))
            .is_some_and(|m| m == "ambient"),
    }
}

fn first_label<'a>(pod: &'a Pod, keys: &[&str]) -> Option<&'a str> {
    keys.iter()
        .find_map(|k| pod.metadata.labels.get(*k))
        .map(String::as_str)
}

/// Workload kind and name from the controlling owner, as Istio derives them.
fn workload_type_and_name(pod: &Pod) -> (WorkloadType, String) {
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .find(|o| o.controller == Some(true))
        .or(pod.metadata.owner_references.first());
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            // A Deployment's ReplicaSet is `<deployment>-<pod-template-hash>`.
            let name = match pod.metadata.labels.get("pod-template-hash") {
                Some(hash) => o
                    .name
                    .strip_suffix(&format!("-{hash}"))
                    .unwrap_or(&o.name)
                    .to_string(),
                None => o.name.clone(),
            };
            (WorkloadType::Deployment, name)
        }
        Some(o) if o.kind == "Job" => (WorkloadType::Job, o.name.clone()),
        Some(o) if o.kind == "CronJob" => (WorkloadType::Cronjob, o.name.clone()),
        Some(o) => (WorkloadType::Deployment, o.name.clone()),
        None => (WorkloadType::Pod, pod.metadata.name.clone()),
    }
}

pub fn translate_workloads(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    waypoints: &Waypoints,
    services: &Services,
    selector_policies: &SelectorPolicies,
    peer: &mut PeerAuthentications,
) -> BTreeMap<String, Workload> {
    let mut out = BTreeMap::new();
    // Services with selectors, per namespace, so a pod only checks its own namespace's.
    let mut by_namespace: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for ((ns, _), svc) in services {
        if svc.selector().is_some() {
            by_namespace.entry(ns.as_str()).or_default().push(svc);
        }
    }
    for ((ns, name), pod) in &snapshot.pods {
        let addresses: Vec<Vec<u8>> = pod.ips().into_iter().map(ip_bytes).collect();
        // Pods not yet started, or finished, have nothing to route to.
        if addresses.is_empty() || pod.is_terminal() {
            continue;
        }
        let ns_obj = snapshot.namespace(ns);
        let labels = &pod.metadata.labels;
        let mut svc_ports: std::collections::HashMap<String, PortList> = Default::default();
        for svc in by_namespace.get(ns.as_str()).into_iter().flatten() {
            let Some(selector) = svc.selector() else {
                continue;
            };
            if !mesh_core::k8s::selector_matches(selector, labels) {
                continue;
            }
            let ports = svc
                .tcp_ports()
                .filter_map(|p| {
                    let target = match &p.target_port {
                        None => p.port,
                        Some(IntOrString::Int(t)) => *t,
                        Some(IntOrString::String(s)) => match s.parse::<u16>() {
                            Ok(n) => n,
                            Err(_) => pod.named_port(s)?,
                        },
                    };
                    Some(Port {
                        service_port: u32::from(p.port),
                        target_port: u32::from(target),
                        app_protocol: 0,
                    })
                })
                .collect();
            svc_ports.insert(format!("{ns}/{}", svc.xds.hostname), PortList { ports });
        }
        let mut policies: Vec<String> = selector_policies.keys_for(ns, labels).cloned().collect();
        policies.extend(peer.policy_for(ns, labels));
        policies.sort();
        policies.dedup();

        let is_waypoint_pod = labels.contains_key(GATEWAY_NAME_LABEL);
        let waypoint = if is_waypoint_pod {
            None
        } else {
            waypoints.resolve(&binding(labels, ns, ns_obj), TrafficType::Workload)
        };
        let (workload_type, workload_name) = workload_type_and_name(pod);
        let canonical_name = first_label(
            pod,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .unwrap_or(&workload_name)
        .to_string();
        let canonical_revision = first_label(
            pod,
            &[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ],
        )
        .unwrap_or("latest")
        .to_string();
        let tunnel = if is_enrolled(pod, ns_obj) {
            TunnelProtocol::Hbone
        } else {
            TunnelProtocol::None
        };
        let uid = mesh.workload_uid(ns, name);
        let workload = Workload {
            uid: uid.clone(),
            name: name.clone(),
            namespace: ns.clone(),
            addresses,
            tunnel_protocol: tunnel as i32,
            trust_domain: mesh.trust_domain.clone(),
            service_account: pod.service_account().to_string(),
            waypoint,
            node: pod.spec.node_name.clone().unwrap_or_default(),
            canonical_name,
            canonical_revision,
            workload_type: workload_type as i32,
            workload_name,
            services: svc_ports,
            authorization_policies: policies,
            status: if pod.is_ready() {
                WorkloadStatus::Healthy
            } else {
                WorkloadStatus::Unhealthy
            } as i32,
            cluster_id: mesh.cluster_id.clone(),
            network_mode: if pod.spec.host_network {
                NetworkMode::HostNetwork
            } else {
                NetworkMode::Standard
            } as i32,
            ..Default::default()
        };
        out.insert(uid, workload);
    }
    out
}
