//! The Gateway API kind the mesh reads: a `Gateway` of class `istio-waypoint` is a waypoint.

use serde::{Deserialize, Serialize};

use super::meta::{invalid, ObjectError, ObjectMeta, WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Gateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
    #[serde(default)]
    pub status: GatewayStatus,
}

/// `spec` of a Gateway. Fields of the Gateway API schema that a waypoint does not act on are
/// kept as they were written (so a `kubectl get -o yaml` round-trips); a field the schema
/// does not have is refused.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub infrastructure: Option<serde_json::Value>,
    #[serde(
        default,
        rename = "backendTLS",
        skip_serializing_if = "Option::is_none"
    )]
    pub backend_tls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listeners: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_routes: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct GatewayStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<GatewayStatusAddress>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct GatewayStatusAddress {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub value: String,
}

impl Gateway {
    pub fn is_waypoint(&self) -> bool {
        self.spec.gateway_class_name == WAYPOINT_GATEWAY_CLASS
    }

    /// The HBONE listener port (protocol HBONE), 15008 when none is declared.
    pub fn hbone_port(&self) -> u16 {
        self.spec
            .listeners
            .iter()
            .find(|l| l.protocol == "HBONE")
            .map(|l| l.port)
            .unwrap_or(15008)
    }

    /// What traffic this waypoint takes (`istio.io/waypoint-for`), `service` by default.
    pub fn waypoint_for(&self) -> &str {
        self.metadata
            .labels
            .get(WAYPOINT_FOR_LABEL)
            .map(String::as_str)
            .unwrap_or("service")
    }
}

pub(super) fn validate_gateway(gw: &Gateway) -> Result<(), ObjectError> {
    if gw.spec.gateway_class_name.is_empty() {
        return Err(invalid("spec.gatewayClassName is required"));
    }
    if gw.is_waypoint() {
        if let Some(l) = gw.spec.listeners.iter().find(|l| l.port == 0) {
            return Err(invalid(format!("listener {:?} needs a port", l.name)));
        }
        let kind = gw.waypoint_for();
        if !matches!(kind, "service" | "workload" | "all" | "none") {
            return Err(invalid(format!(
                "label {WAYPOINT_FOR_LABEL}={kind:?} must be service, workload, all or none"
            )));
        }
    }
    if gw.metadata.name == "none" && gw.is_waypoint() {
        return Err(invalid("the waypoint name \"none\" is reserved"));
    }
    Ok(())
}
