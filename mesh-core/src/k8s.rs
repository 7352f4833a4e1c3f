//! The Kubernetes object model the mesh reads: only the kinds and fields it acts on, in the exact
//! JSON/YAML shape of the Kubernetes API so that a YAML file, a `kubectl get -o yaml` dump and a
//! kube-rs watch event all decode into the same types.
//!
//! Decoding is two steps: [`Object::from_value`] checks `apiVersion`/`kind` and decodes the typed
//! struct (reporting the field path of any type error), then [`Object::validate`] checks what the
//! API server's validation (and Istio's webhook) would refuse. Unknown fields are ignored, as the
//! API server does for fields a client does not know.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

pub type Labels = BTreeMap<String, String>;

/// Label that enrols a namespace or pod (`ambient`) or opts a pod out (`none`).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// Label that binds a namespace, service or pod to a waypoint by name.
pub const USE_WAYPOINT_LABEL: &str = "istio.io/use-waypoint";
/// Label naming the namespace of the waypoint in [`USE_WAYPOINT_LABEL`].
pub const USE_WAYPOINT_NAMESPACE_LABEL: &str = "istio.io/use-waypoint-namespace";
/// Label on a waypoint Gateway saying which traffic it takes: service, workload, all, none.
pub const WAYPOINT_FOR_LABEL: &str = "istio.io/waypoint-for";
/// Annotation making an AuthorizationPolicy evaluate-and-log only.
pub const DRY_RUN_ANNOTATION: &str = "istio.io/dry-run";
/// Annotation a sidecar-injected pod carries; a sidecar wins over ambient.
pub const SIDECAR_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// GatewayClass of waypoints.
pub const WAYPOINT_GATEWAY_CLASS: &str = "istio-waypoint";

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<bool>,
}

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

/// `spec.selector` of the Istio policy kinds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTargetReference {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct AuthorizationPolicy {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: AuthorizationPolicySpec,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl fmt::Display for AuthorizationAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthorizationAction::Allow => "ALLOW",
            AuthorizationAction::Deny => "DENY",
            AuthorizationAction::Audit => "AUDIT",
            AuthorizationAction::Custom => "CUSTOM",
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_ref: Option<PolicyTargetReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_refs: Vec<PolicyTargetReference>,
    #[serde(default)]
    pub action: AuthorizationAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ExtensionProvider>,
    /// `None` (absent) and `Some([])` both mean "no rule", which never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<Rule>>,
}

impl AuthorizationPolicySpec {
    /// `targetRef` and `targetRefs` together.
    pub fn all_target_refs(&self) -> impl Iterator<Item = &PolicyTargetReference> {
        self.target_ref.iter().chain(self.target_refs.iter())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Source,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Operation,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Source {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_request_principals: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_service_accounts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_remote_ip_blocks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_trust_domains: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_paths: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(default)]
    pub key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_values: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct MutualTls {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum MtlsMode {
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Gateway {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GatewaySpec,
    #[serde(default)]
    pub status: GatewayStatus,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    #[serde(default)]
    pub gateway_class_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<Listener>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Listener {
    #[serde(default)]
    pub name: String,
    pub port: u16,
    #[serde(default)]
    pub protocol: String,
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

/// The kinds the mesh reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Namespace,
    ServiceAccount,
    Pod,
    Service,
    AuthorizationPolicy,
    PeerAuthentication,
    Gateway,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Namespace,
        Kind::ServiceAccount,
        Kind::Pod,
        Kind::Service,
        Kind::AuthorizationPolicy,
        Kind::PeerAuthentication,
        Kind::Gateway,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
        }
    }

    pub fn from_name(kind: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == kind)
    }

    /// apiVersions accepted for the kind.
    pub fn api_versions(self) -> &'static [&'static str] {
        match self {
            Kind::Namespace | Kind::ServiceAccount | Kind::Pod | Kind::Service => &["v1"],
            Kind::AuthorizationPolicy | Kind::PeerAuthentication => {
                &["security.istio.io/v1", "security.istio.io/v1beta1"]
            }
            Kind::Gateway => &[
                "gateway.networking.k8s.io/v1",
                "gateway.networking.k8s.io/v1beta1",
            ],
        }
    }

    pub fn is_namespaced(self) -> bool {
        self != Kind::Namespace
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Identifies one object: kind, namespace ("" for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Self {
        ObjectKey {
            kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One decoded object of a kind the mesh reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Pod(Pod),
    Service(Service),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Gateway(Gateway),
}

/// Why an object was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObjectError {
    #[error("missing apiVersion or kind")]
    MissingTypeMeta,
    #[error("kind {0:?} is not one istiod-lite reads")]
    UnknownKind(String),
    #[error("apiVersion {api_version:?} is not supported for {kind} (use {expected})")]
    ApiVersion {
        kind: Kind,
        api_version: String,
        expected: String,
    },
    #[error("{path}: {message}")]
    Decode { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl Object {
    /// Decodes one document. Cluster-scoped kinds get namespace `""`, namespaced kinds without a
    /// namespace get `default`, as `kubectl apply` does.
    pub fn from_value(value: serde_json::Value) -> Result<Object, ObjectError> {
        let api_version = value.get("apiVersion").and_then(|v| v.as_str());
        let kind_name = value.get("kind").and_then(|v| v.as_str());
        let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
            return Err(ObjectError::MissingTypeMeta);
        };
        let group = |v: &str| {
            v.rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default()
        };
        // Another API's kind of the same name (an Istio networking Gateway, a Knative Service)
        // is not ours and not broken: it is simply not read.
        let kind = Kind::from_name(kind_name)
            .filter(|k| group(k.api_versions()[0]) == group(api_version))
            .ok_or_else(|| ObjectError::UnknownKind(format!("{kind_name} ({api_version})")))?;
        if !kind.api_versions().contains(&api_version) {
            return Err(ObjectError::ApiVersion {
                kind,
                api_version: api_version.to_string(),
                expected: kind.api_versions().join(" or "),
            });
        }
        let mut object = match kind {
            Kind::Namespace => Object::Namespace(decode(value)?),
            Kind::ServiceAccount => Object::ServiceAccount(decode(value)?),
            Kind::Pod => Object::Pod(decode(value)?),
            Kind::Service => Object::Service(decode(value)?),
            Kind::AuthorizationPolicy => Object::AuthorizationPolicy(decode(value)?),
            Kind::PeerAuthentication => Object::PeerAuthentication(decode(value)?),
            Kind::Gateway => Object::Gateway(decode(value)?),
        };
        let meta = object.metadata_mut();
        if kind.is_namespaced() {
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some("default".to_string());
            }
        } else {
            meta.namespace = None;
        }
        Ok(object)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::Gateway(_) => Kind::Gateway,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::AuthorizationPolicy(o) => &mut o.metadata,
            Object::PeerAuthentication(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or(""),
            &meta.name,
        )
    }

    /// Checks what the API server (and Istio's validating webhook) would refuse.
    pub fn validate(&self) -> Result<(), ObjectError> {
        let meta = self.metadata();
        check_name("metadata.name", &meta.name)?;
        if let Some(ns) = &meta.namespace {
            check_label("metadata.namespace", ns)?;
        }
        if self.kind() == Kind::Namespace {
            check_label("metadata.name", &meta.name)?;
        }
        match self {
            Object::Pod(pod) => validate_pod(pod),
            Object::Service(svc) => validate_service(svc),
            Object::AuthorizationPolicy(ap) => validate_authorization_policy(ap),
            Object::PeerAuthentication(pa) => validate_peer_authentication(pa),
            Object::Gateway(gw) => validate_gateway(gw),
            Object::Namespace(_) | Object::ServiceAccount(_) => Ok(()),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, ObjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| ObjectError::Decode {
        path: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

fn invalid(message: impl Into<String>) -> ObjectError {
    ObjectError::Invalid(message.into())
}

/// RFC 1123 label/subdomain rules used for object names.
fn check_name(field: &str, name: &str) -> Result<(), ObjectError> {
    if name.is_empty() {
        return Err(invalid(format!("{field} is required")));
    }
    if name.len() > 253 {
        return Err(invalid(format!("{field} is longer than 253 characters")));
    }
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    let ok_ends = name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if !ok_chars || !ok_ends {
        return Err(invalid(format!(
            "{field} {name:?} must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character"
        )));
    }
    Ok(())
}

/// RFC 1123 label rules (namespaces: no dots, at most 63 characters).
fn check_label(field: &str, name: &str) -> Result<(), ObjectError> {
    check_name(field, name)?;
    if name.len() > 63 || name.contains('.') {
        return Err(invalid(format!(
            "{field} {name:?} must be a DNS label: at most 63 characters, no dots"
        )));
    }
    Ok(())
}

fn validate_pod(pod: &Pod) -> Result<(), ObjectError> {
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

fn validate_service(svc: &Service) -> Result<(), ObjectError> {
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

fn validate_authorization_policy(ap: &AuthorizationPolicy) -> Result<(), ObjectError> {
    let spec = &ap.spec;
    let has_selector = spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    if has_selector && spec.all_target_refs().next().is_some() {
        return Err(invalid(
            "only one of spec.selector and spec.targetRefs may be set",
        ));
    }
    if spec.target_refs.len() > 16 {
        return Err(invalid("spec.targetRefs holds at most 16 entries"));
    }
    for (i, t) in spec.all_target_refs().enumerate() {
        if t.kind.is_empty() || t.name.is_empty() {
            return Err(invalid(format!("spec.targetRefs[{i}] needs kind and name")));
        }
    }
    match (spec.action, &spec.provider) {
        (AuthorizationAction::Custom, None) => {
            return Err(invalid("action CUSTOM needs spec.provider.name"));
        }
        (a, Some(_)) if a != AuthorizationAction::Custom => {
            return Err(invalid("spec.provider is only allowed with action CUSTOM"));
        }
        _ => {}
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        for (f, from) in rule.from.iter().enumerate() {
            let s = &from.source;
            let at = format!("spec.rules[{r}].from[{f}].source");
            for ip in s.ip_blocks.iter().chain(&s.not_ip_blocks) {
                parse_cidr(ip).map_err(|e| invalid(format!("{at}: {e}")))?;
            }
            for ip in s.remote_ip_blocks.iter().chain(&s.not_remote_ip_blocks) {
                parse_cidr(ip).map_err(|e| invalid(format!("{at}: {e}")))?;
            }
            let has_sa = !s.service_accounts.is_empty() || !s.not_service_accounts.is_empty();
            let has_id = !s.principals.is_empty()
                || !s.not_principals.is_empty()
                || !s.namespaces.is_empty()
                || !s.not_namespaces.is_empty();
            if has_sa && has_id {
                return Err(invalid(format!(
                    "{at}: serviceAccounts cannot be combined with principals or namespaces"
                )));
            }
            for sa in s.service_accounts.iter().chain(&s.not_service_accounts) {
                if sa.contains('*') || sa.split('/').count() > 2 || sa.is_empty() {
                    return Err(invalid(format!(
                        "{at}: service account {sa:?} must be <namespace>/<name> or <name>, without wildcards"
                    )));
                }
            }
        }
        for (t, to) in rule.to.iter().enumerate() {
            for port in to.operation.ports.iter().chain(&to.operation.not_ports) {
                parse_port(port)
                    .map_err(|e| invalid(format!("spec.rules[{r}].to[{t}].operation: {e}")))?;
            }
        }
        for (w, cond) in rule.when.iter().enumerate() {
            let at = format!("spec.rules[{r}].when[{w}]");
            if cond.key.is_empty() {
                return Err(invalid(format!("{at}.key is required")));
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                return Err(invalid(format!(
                    "{at}: one of values or notValues is required"
                )));
            }
            for v in cond.values.iter().chain(&cond.not_values) {
                match cond.key.as_str() {
                    "source.ip" | "destination.ip" | "remote.ip" => {
                        parse_cidr(v).map_err(|e| invalid(format!("{at}: {e}")))?;
                    }
                    "destination.port" => {
                        parse_port(v).map_err(|e| invalid(format!("{at}: {e}")))?;
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

fn validate_peer_authentication(pa: &PeerAuthentication) -> Result<(), ObjectError> {
    for port in pa.spec.port_level_mtls.keys() {
        parse_port(port).map_err(|e| invalid(format!("spec.portLevelMtls: {e}")))?;
    }
    Ok(())
}

fn validate_gateway(gw: &Gateway) -> Result<(), ObjectError> {
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

/// Parses `a.b.c.d`, `a.b.c.d/len`, or the IPv6 forms; returns the address and prefix length.
pub fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?} has an invalid prefix length"))?,
    };
    Ok((ip, len))
}

/// Parses a port given as a string, 1-65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("port {s:?} must be a number from 1 to 65535"))
}

/// Whether `labels` satisfy every `selector` entry. An empty selector selects everything.
pub fn selector_matches(selector: &Labels, labels: &Labels) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether ztunnel captures this pod's traffic: the pod's own `istio.io/dataplane-mode` says
/// `ambient`, or its namespace's does and the pod says nothing; a sidecar-injected or
/// host-network pod never is. (The CNI plugin and istiod-lite decide with this one rule.)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_pod_with_defaults() {
        let obj = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1"},
            "status": {"podIP": "10.0.1.5"}
        }))
        .unwrap();
        assert_eq!(obj.key(), ObjectKey::new(Kind::Pod, "default", "web-1"));
        let Object::Pod(pod) = obj else { panic!() };
        assert_eq!(pod.service_account(), "default");
        assert_eq!(pod.ips(), vec!["10.0.1.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn reports_field_path_of_type_errors() {
        let err = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("spec.ports[0].port:"), "{msg}");
    }

    #[test]
    fn rejects_wrong_api_version_and_unknown_action() {
        let err = Object::from_value(json!({
            "apiVersion": "security.istio.io/v2", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"}
        }))
        .unwrap_err();
        assert!(matches!(err, ObjectError::ApiVersion { .. }), "{err}");
        // The same kind name in another API group is not ours: ignored, not rejected.
        let err = Object::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "ingress"}
        }))
        .unwrap_err();
        assert!(matches!(err, ObjectError::UnknownKind(_)), "{err}");
        let err = Object::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"}, "spec": {"action": "PERMIT"}
        }))
        .unwrap_err();
        assert!(err.to_string().starts_with("spec.action:"), "{err}");
    }

    #[test]
    fn validation_catches_semantic_errors() {
        let bad = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a.b"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"podIP": "10.0.0.300"}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"selector": {"matchLabels": {"a": "b"}},
                            "targetRefs": [{"kind": "Gateway", "name": "w"}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "p"}, "spec": {"portLevelMtls": {"x": {"mode": "STRICT"}}}}),
        ];
        for doc in bad {
            let obj = Object::from_value(doc.clone()).unwrap();
            assert!(obj.validate().is_err(), "{doc} was accepted");
        }
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.1.0.0/16").unwrap(),
            ("10.1.0.0".parse().unwrap(), 16)
        );
        assert_eq!(parse_cidr("fd00::1").unwrap().1, 128);
        assert!(parse_cidr("fd00::/129").is_err());
        assert!(parse_cidr("host").is_err());
    }
}
