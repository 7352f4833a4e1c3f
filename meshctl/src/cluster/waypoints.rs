//! Waypoint proxies of the local cluster, deployed the way istiod deploys them on Kubernetes:
//! for each Gateway of class `istio-waypoint`, a Service named after it selecting its pods
//! (port 15008, `mesh`), and a pod `<gateway>-0` running the `waypoint` binary as the
//! Gateway's service account, outside ambient capture (`istio.io/dataplane-mode: none`), with
//! its own token for istiod-lite (the CA gives it that identity only). When the Gateway goes,
//! its pod, Service and token go too (Kubernetes does it by owner reference).
//!
//! The supervisor calls [`reconcile`] every few seconds on a thread of its own, so a Gateway
//! written by `meshctl waypoint apply`, `meshctl apply -f`, or straight into the config
//! directory gets its proxy.

use std::collections::BTreeSet;
use std::path::PathBuf;

use mesh_core::cluster_dir::write_atomic;
use mesh_core::k8s::{Kind, DATAPLANE_MODE_LABEL, WAYPOINT_GATEWAY_CLASS};
use serde_json::{json, Value};

use super::home::{node_name, random_token, xds_address, Home, PodRecord, Record};
use super::pods::{delete_pod, run_pod, PodError, RunOptions};
use crate::objects::{labels_of, str_field, Api};

/// The label the waypoint's pods and Service carry (Gateway API's, as istiod sets it).
pub const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
/// Marks what this module made, so it never touches a user's object of the same name.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "meshctl-waypoints";

/// A waypoint Gateway: (namespace, name).
type GatewayKey = (String, String);

/// The pod that runs a Gateway's proxy.
pub fn pod_name(gateway: &str) -> String {
    format!("{gateway}-0")
}

fn token_dir(home: &Home) -> PathBuf {
    home.istiod_dir().join("waypoint-tokens")
}

fn token_file(home: &Home, (ns, name): &GatewayKey) -> PathBuf {
    token_dir(home).join(format!("{ns}.{name}.token"))
}

fn managed(object: &Value) -> bool {
    labels_of(object).get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
}

fn waypoint_gateways(api: &Api) -> anyhow::Result<BTreeSet<GatewayKey>> {
    Ok(api
        .list(Kind::Gateway, None)?
        .iter()
        .filter(|gw| str_field(gw, &["spec", "gatewayClassName"]) == Some(WAYPOINT_GATEWAY_CLASS))
        .filter_map(|gw| {
            Some((
                str_field(gw, &["metadata", "namespace"])?.to_string(),
                str_field(gw, &["metadata", "name"])?.to_string(),
            ))
        })
        .collect())
}

/// istiod-lite's token file: every node's token, then every waypoint's. Written only when it
/// changes (istiod-lite reloads it when its modification time moves).
fn write_tokens(
    home: &Home,
    record: &Record,
    gateways: &BTreeSet<GatewayKey>,
) -> Result<(), PodError> {
    let mut text = String::from("tokens:\n");
    for i in 1..=record.nodes {
        if let Ok(t) = std::fs::read_to_string(home.token_file(i)) {
            text.push_str(&format!(
                "- token: {}\n  node: {}\n",
                t.trim(),
                node_name(i)
            ));
        }
    }
    for key in gateways {
        let path = token_file(home, key);
        let token = match std::fs::read_to_string(&path) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let t = format!(
                    "meshctl-waypoint-{}",
                    random_token().map_err(|source| PodError::Run {
                        program: "/dev/urandom".into(),
                        source,
                    })?
                );
                std::fs::create_dir_all(token_dir(home)).map_err(|source| PodError::Run {
                    program: "mkdir".into(),
                    source,
                })?;
                write_atomic(&path, format!("{t}\n").as_bytes())
                    .map_err(super::home::HomeError::from)?;
                t
            }
        };
        // The Gateway's name is its service account, as Istio deploys waypoints.
        text.push_str(&format!(
            "- token: {token}\n  namespace: {}\n  serviceAccount: {}\n",
            key.0, key.1
        ));
    }
    let file = home.istiod_dir().join("tokens.yaml");
    if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
        write_atomic(&file, text.as_bytes()).map_err(super::home::HomeError::from)?;
    }
    Ok(())
}

fn service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {GATEWAY_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY},
        },
        "spec": {
            "clusterIP": "None",
            "selector": {GATEWAY_NAME_LABEL: name},
            "ports": [{"name": "mesh", "port": 15008, "targetPort": 15008, "protocol": "TCP"}],
        },
    })
}

fn run_proxy(home: &Home, api: &Api, key: &GatewayKey) -> Result<(), PodError> {
    let (ns, name) = key;
    let pod = pod_name(name);
    let root = home.istiod_dir().join("ca/root-cert.pem");
    let command = vec![
        "waypoint".to_string(),
        format!("--gateway={ns}/{name}"),
        format!("--xds-address={}", xds_address()),
        format!("--root-cert={}", root.display()),
        format!("--token-file={}", token_file(home, key).display()),
        format!("--pod-name={pod}"),
    ];
    run_pod(
        home,
        api,
        RunOptions {
            namespace: ns.clone(),
            name: pod,
            node: None,
            service_account: name.clone(),
            labels: vec![
                (GATEWAY_NAME_LABEL.to_string(), name.clone()),
                (DATAPLANE_MODE_LABEL.to_string(), "none".to_string()),
                (MANAGED_BY_LABEL.to_string(), MANAGED_BY.to_string()),
            ],
            ports: vec![15008, 15020, 15021],
            command,
        },
    )
}

/// What one pass changed, for the supervisor's log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub started: Vec<String>,
    pub removed: Vec<String>,
}

/// Brings the waypoint proxies in line with the Gateways: one pass.
pub fn reconcile(home: &Home, api: &Api) -> Result<Changes, PodError> {
    let Some(record) = Record::load(home)? else {
        return Err(PodError::NoCluster);
    };
    let gateways = waypoint_gateways(api)?;
    let mut changes = Changes::default();
    write_tokens(home, &record, &gateways)?;
    for key in &gateways {
        let (ns, name) = key;
        match api.read(Kind::Service, ns, name)? {
            None => {
                api.put(service(ns, name))?;
            }
            Some(existing) if !managed(&existing) => {
                // A user's Service of that name: leave it, and use it if it selects the pods.
            }
            Some(_) => {}
        }
        let pod = pod_name(name);
        if PodRecord::load(home, ns, &pod).is_none() && api.read(Kind::Pod, ns, &pod)?.is_none() {
            run_proxy(home, api, key)?;
            changes.started.push(format!("{ns}/{pod}"));
        }
    }
    // What a removed Gateway left.
    for pod in api.list(Kind::Pod, None)?.iter().filter(|p| managed(p)) {
        let (Some(ns), Some(name)) = (
            str_field(pod, &["metadata", "namespace"]),
            str_field(pod, &["metadata", "name"]),
        ) else {
            continue;
        };
        let gateway = labels_of(pod)
            .get(GATEWAY_NAME_LABEL)
            .cloned()
            .unwrap_or_default();
        if !gateways.contains(&(ns.to_string(), gateway.clone())) {
            delete_pod(home, api, ns, name)?;
            changes.removed.push(format!("{ns}/{name}"));
            if let Some(svc) = api.read(Kind::Service, ns, &gateway)? {
                if managed(&svc) {
                    api.remove(Kind::Service, ns, &gateway)?;
                }
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(token_dir(home)) {
        for entry in dir.flatten() {
            let file = entry.file_name().to_string_lossy().to_string();
            let key = file
                .strip_suffix(".token")
                .and_then(|k| k.split_once('.'))
                .map(|(ns, name)| (ns.to_string(), name.to_string()));
            if key.is_some_and(|k| !gateways.contains(&k)) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    Ok(changes)
}
