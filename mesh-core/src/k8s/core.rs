//! The core kinds the mesh reads (Namespace, ServiceAccount, Pod, Service) and what the API
//! server would refuse of them.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::meta::{invalid, Labels, ObjectError, ObjectMeta};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Namespace {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ServiceAccount {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Pod {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub container_port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, rename = "podIPs", skip_serializing_if = "Vec::is_empty")]
    pub pod_ips: Vec<PodIp>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodCondition>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PodCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
}

impl Pod {
    /// The pod's IPs: `status.podIPs`, else `status.podIP`. Unparsable entries are refused by
    /// [`Object::validate`], so here they are simply skipped.
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = self
            .status
            .pod_ips
            .iter()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        if ips.is_empty() {
            ips.extend(
                self.status
                    .pod_ip
                    .as_deref()
                    .and_then(|s| s.parse::<IpAddr>().ok()),
            );
        }
        ips
    }

    pub fn service_account(&self) -> &str {
        match self.spec.service_account_name.as_deref() {
            Some(sa) if !sa.is_empty() => sa,
            _ => "default",
        }
    }

    /// Ready unless a `Ready` condition says otherwise, or the pod is terminating.
    pub fn is_ready(&self) -> bool {
        if self.metadata.deletion_timestamp.is_some() {
            return false;
        }
        !self
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status != "True")
    }

    /// Finished pods keep no address worth routing to.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.status.phase.as_deref(),
            Some("Succeeded") | Some("Failed")
        )
    }

    /// Resolves a named container port.
    pub fn named_port(&self, name: &str) -> Option<u16> {
        self.spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter())
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Service {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: ServiceSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Labels>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ServicePort>,
    #[serde(default, rename = "clusterIP", skip_serializing_if = "Option::is_none")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs", skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<String>,
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<IntOrString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum IntOrString {
    Int(u16),
    String(String),
}

impl Service {
    /// Cluster VIPs; `None` (headless) and empty values give none.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut raw: Vec<&str> = self.spec.cluster_ips.iter().map(String::as_str).collect();
        if raw.is_empty() {
            raw.extend(self.spec.cluster_ip.as_deref());
        }
        raw.into_iter().filter_map(|s| s.parse().ok()).collect()
    }
}

pub(super) fn validate_pod(pod: &Pod) -> Result<(), ObjectError> {
    let ips = pod
        .status
        .pod_ip
        .iter()
        .chain(pod.status.pod_ips.iter().map(|p| &p.ip));
    for ip in ips {
        ip.parse::<IpAddr>()
            .map_err(|_| invalid(format!("status.podIP {ip:?} is not an IP address")))?;
    }
    Ok(())
}

pub(super) fn validate_service(svc: &Service) -> Result<(), ObjectError> {
    for (i, p) in svc.spec.ports.iter().enumerate() {
        if p.port == 0 {
            return Err(invalid(format!("spec.ports[{i}].port must be 1-65535")));
        }
        if let Some(IntOrString::Int(0)) = p.target_port {
            return Err(invalid(format!(
                "spec.ports[{i}].targetPort must be 1-65535"
            )));
        }
    }
    let ips = svc
        .spec
        .cluster_ip
        .iter()
        .chain(svc.spec.cluster_ips.iter());
    for ip in ips {
        if !ip.is_empty() && ip != "None" && ip.parse::<IpAddr>().is_err() {
            return Err(invalid(format!(
                "spec.clusterIP {ip:?} is not an IP address"
            )));
        }
    }
    Ok(())
}
