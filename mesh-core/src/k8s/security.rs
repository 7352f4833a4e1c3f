//! Istio's security kinds (AuthorizationPolicy, PeerAuthentication) and what Istio's
//! validation would refuse of them.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::meta::{invalid, parse_cidr, parse_port, Labels, ObjectError, ObjectMeta};

/// `spec.selector` of the Istio policy kinds.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<RuleFrom>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<RuleTo>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFrom {
    #[serde(default)]
    pub source: Source,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTo {
    #[serde(default)]
    pub operation: Operation,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
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
#[serde(deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<WorkloadSelector>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MutualTls>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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

pub(super) fn validate_authorization_policy(ap: &AuthorizationPolicy) -> Result<(), ObjectError> {
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
            let identities: [(&str, &[String]); 6] = [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
            ];
            for (field, list) in identities {
                if let Some(k) = list.iter().position(String::is_empty) {
                    return Err(invalid(format!("{at}.{field}[{k}] must not be empty")));
                }
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
            let o = &to.operation;
            let lists: [(&str, &[String]); 6] = [
                ("hosts", &o.hosts),
                ("notHosts", &o.not_hosts),
                ("methods", &o.methods),
                ("notMethods", &o.not_methods),
                ("paths", &o.paths),
                ("notPaths", &o.not_paths),
            ];
            for (field, list) in lists {
                if let Some(k) = list.iter().position(String::is_empty) {
                    return Err(invalid(format!(
                        "spec.rules[{r}].to[{t}].operation.{field}[{k}] must not be empty"
                    )));
                }
            }
            for path in o.paths.iter().chain(&o.not_paths) {
                check_path_template(path).map_err(|e| {
                    invalid(format!("spec.rules[{r}].to[{t}].operation.paths: {e}"))
                })?;
            }
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
            if !supported_condition_key(&cond.key) {
                return Err(invalid(format!(
                    "{at}.key {:?} is not supported: use request.headers[<name>], source.ip, remote.ip, source.namespace, source.principal, request.auth.principal, request.auth.audiences, request.auth.presenter, request.auth.claims[<name>], destination.ip, destination.port or connection.sni",
                    cond.key
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

/// A path with `{` is a template: `{*}` and `{**}` must be whole segments, `{**}` the last.
fn check_path_template(path: &str) -> Result<(), String> {
    if !path.contains('{') && !path.contains('}') {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(format!("path template {path:?} must start with /"));
    };
    let parts: Vec<&str> = rest.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        match *part {
            "{*}" => {}
            "{**}" if i == parts.len() - 1 => {}
            "{**}" => {
                return Err(format!(
                    "path template {path:?}: {{**}} may only be the last segment"
                ))
            }
            p if p.contains('{') || p.contains('}') || p.contains('*') => {
                return Err(format!(
                    "path template {path:?}: {{*}} and {{**}} must be whole segments"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The `when` keys Istio documents (its experimental ones aside).
fn supported_condition_key(key: &str) -> bool {
    let bracketed = |prefix: &str| {
        key.strip_prefix(prefix)
            .and_then(|k| k.strip_suffix(']'))
            .is_some_and(|name| !name.is_empty())
    };
    matches!(
        key,
        "source.ip"
            | "remote.ip"
            | "source.namespace"
            | "source.principal"
            | "request.auth.principal"
            | "request.auth.audiences"
            | "request.auth.presenter"
            | "destination.ip"
            | "destination.port"
            | "connection.sni"
    ) || bracketed("request.headers[")
        || bracketed("request.auth.claims[")
}

pub(super) fn validate_peer_authentication(pa: &PeerAuthentication) -> Result<(), ObjectError> {
    for port in pa.spec.port_level_mtls.keys() {
        parse_port(port).map_err(|e| invalid(format!("spec.portLevelMtls: {e}")))?;
    }
    Ok(())
}
