//! Pods -> `istio.workload.Workload`. A pod is an HBONE workload when it is enrolled: its own
//! `istio.io/dataplane-mode` label says `ambient`, or its namespace's does and the pod does not
//! say `none`; a sidecar-injected pod or a host-network pod is never enrolled. Other pods are
//! plain TCP workloads (still listed, so ztunnel knows where they are).

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use mesh_core::k8s::{IntOrString, Pod};
use mesh_core::proto::istio::workload::{
    NetworkMode, Port, PortList, TunnelProtocol, Workload, WorkloadStatus, WorkloadType,
};

use super::authorization::SelectorPolicies;
use super::peer_authentication::PeerAuthentications;
use super::service::{ServiceInfo, Services};
use super::waypoint::{binding, ip_bytes, TrafficType, Waypoints, GATEWAY_NAME_LABEL};
use super::MeshConfig;
use crate::store::{in_namespace, Snapshot};

pub use mesh_core::k8s::is_enrolled;

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

/// What every pod of a namespace is translated against.
struct Context<'a> {
    snapshot: &'a Snapshot,
    mesh: &'a MeshConfig,
    waypoints: &'a Waypoints,
    selector_policies: &'a SelectorPolicies,
    peer: &'a PeerAuthentications,
    /// Services with selectors in this namespace.
    services: &'a [&'a ServiceInfo],
}

/// Translations of one namespace's pods, valid while the namespace's context is unchanged.
#[derive(Default)]
pub struct NamespaceMemo {
    fingerprint: u64,
    /// By pod name: the pod translated (kept alive so its address stays unique) and the result.
    pods: HashMap<String, (Arc<Pod>, Option<Arc<Workload>>)>,
}

/// Per-namespace memo of workload translations: a pod is translated again only when it or
/// its namespace's context (the Namespace, its Services and policies, mesh-wide policies,
/// waypoints) changed. Objects are compared by `Arc` identity: the store replaces an object's
/// `Arc` when, and only when, the object changes.
pub type WorkloadMemo = HashMap<String, NamespaceMemo>;

fn ptr<T>(a: &Arc<T>) -> usize {
    Arc::as_ptr(a) as usize
}

/// Hash of everything outside a pod that its translation reads, by object identity.
fn fingerprint(snapshot: &Snapshot, ns: &str, global: u64, services: &[&ServiceInfo]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    global.hash(&mut h);
    snapshot
        .namespaces
        .get(&(String::new(), ns.to_string()))
        .map(ptr)
        .hash(&mut h);
    for s in services {
        ptr(&s.source).hash(&mut h);
    }
    for a in in_namespace(&snapshot.authorization_policies, ns) {
        ptr(a).hash(&mut h);
    }
    for p in in_namespace(&snapshot.peer_authentications, ns) {
        ptr(p).hash(&mut h);
    }
    h.finish()
}

/// Hash of the mesh-wide inputs: root-namespace policies and every Gateway.
fn global_fingerprint(snapshot: &Snapshot, mesh: &MeshConfig) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for a in in_namespace(&snapshot.authorization_policies, &mesh.root_namespace) {
        ptr(a).hash(&mut h);
    }
    for p in in_namespace(&snapshot.peer_authentications, &mesh.root_namespace) {
        ptr(p).hash(&mut h);
    }
    for g in snapshot.gateways.values() {
        ptr(g).hash(&mut h);
    }
    h.finish()
}

pub fn translate_workloads(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    waypoints: &Waypoints,
    services: &Services,
    selector_policies: &SelectorPolicies,
    peer: &PeerAuthentications,
    memo: &mut WorkloadMemo,
) -> BTreeMap<String, Arc<Workload>> {
    // Collected in order and built in bulk: inserting one by one compares long UIDs.
    let mut out = Vec::with_capacity(snapshot.pods.len());
    // Services with selectors, per namespace, so a pod only checks its own namespace's.
    let mut by_namespace: HashMap<&str, Vec<&ServiceInfo>> = HashMap::new();
    for ((ns, _), svc) in services {
        if svc.selector().is_some() {
            by_namespace.entry(ns.as_str()).or_default().push(svc);
        }
    }
    let global = global_fingerprint(snapshot, mesh);
    let mut next_memo = WorkloadMemo::new();
    // The namespace being walked (pods are sorted by namespace): its memo from the last run,
    // if still valid, and the one being built.
    let mut walking: Option<(String, NamespaceMemo, NamespaceMemo)> = None;
    for ((ns, name), pod) in &snapshot.pods {
        if walking.as_ref().is_none_or(|(n, _, _)| n != ns) {
            if let Some((n, _, built)) = walking.take() {
                next_memo.insert(n, built);
            }
            let svcs = by_namespace
                .get(ns.as_str())
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let fp = fingerprint(snapshot, ns, global, svcs);
            let old = memo
                .remove(ns)
                .filter(|m| m.fingerprint == fp)
                .unwrap_or_default();
            let built = NamespaceMemo {
                fingerprint: fp,
                pods: HashMap::new(),
            };
            walking = Some((ns.clone(), old, built));
        }
        let Some((_, old, built)) = walking.as_mut() else {
            continue;
        };
        let entry = match old.pods.remove(name) {
            Some((p, w)) if Arc::ptr_eq(&p, pod) => (p, w),
            _ => {
                let ctx = Context {
                    snapshot,
                    mesh,
                    waypoints,
                    selector_policies,
                    peer,
                    services: by_namespace
                        .get(ns.as_str())
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                };
                (
                    pod.clone(),
                    translate_workload(&ctx, ns, name, pod).map(Arc::new),
                )
            }
        };
        if let Some(w) = &entry.1 {
            out.push((w.uid.clone(), w.clone()));
        }
        built.pods.insert(name.clone(), entry);
    }
    if let Some((n, _, built)) = walking.take() {
        next_memo.insert(n, built);
    }
    *memo = next_memo;
    out.into_iter().collect()
}

fn translate_workload(ctx: &Context<'_>, ns: &str, name: &str, pod: &Pod) -> Option<Workload> {
    let (snapshot, mesh, waypoints, selector_policies, peer) = (
        ctx.snapshot,
        ctx.mesh,
        ctx.waypoints,
        ctx.selector_policies,
        ctx.peer,
    );
    let addresses: Vec<Vec<u8>> = pod.ips().into_iter().map(ip_bytes).collect();
    // Pods not yet started, or finished, have nothing to route to.
    if addresses.is_empty() || pod.is_terminal() {
        return None;
    }
    let ns_obj = snapshot.namespace(ns);
    let labels = &pod.metadata.labels;
    let mut svc_ports: std::collections::HashMap<String, PortList> = Default::default();
    let mut guards = Vec::new();
    for svc in ctx.services {
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
        if super::waypoint_guard::guarded(svc) {
            guards.push(super::waypoint_guard::guard_key(ns, &svc.xds.name));
        }
    }
    let mut policies: Vec<String> = selector_policies.keys_for(ns, labels).cloned().collect();
    policies.extend(guards);
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
        name: name.to_string(),
        namespace: ns.to_string(),
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
    Some(workload)
}
