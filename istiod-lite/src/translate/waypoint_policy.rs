//! AuthorizationPolicies attached to waypoints (`targetRefs` a waypoint Gateway or a Service
//! bound to one), as waypoints enforce them (`mesh.waypoint.v1.Policy`): the rules as written,
//! service accounts resolved to `<namespace>/<name>`, the dry-run annotation read.
//!
//! What the waypoint cannot do is said in the policy's status: CUSTOM has no external
//! authorizer to ask, so what its rules match is denied (Envoy's behaviour with an unreachable
//! authorizer); there is no JWT authentication, so request principals are always empty.

use std::collections::BTreeSet;

use mesh_core::k8s::{AuthorizationAction, AuthorizationPolicy, DRY_RUN_ANNOTATION};
use mesh_core::proto::mesh::waypoint::v1::{
    Policy, PolicyAction, PolicyCondition, PolicyOperation, PolicyRule, PolicySource,
};

/// A policy and what it applies to.
pub struct WaypointPolicy {
    pub policy: Policy,
    /// Gateways (`<namespace>/<name>`) all of whose services it applies to.
    pub gateways: BTreeSet<String>,
    /// Services (`<namespace>/<hostname>`) it applies to.
    pub services: BTreeSet<String>,
}

/// The policy for waypoints, and notes on what they cannot enforce as written.
pub fn convert(ap: &AuthorizationPolicy) -> (Policy, Vec<String>) {
    let ns = ap.metadata.namespace.as_deref().unwrap_or("default");
    let mut notes = Vec::new();
    let action = match ap.spec.action {
        AuthorizationAction::Allow => PolicyAction::Allow,
        AuthorizationAction::Deny => PolicyAction::Deny,
        AuthorizationAction::Audit => PolicyAction::Audit,
        AuthorizationAction::Custom => {
            notes.push(format!(
                "CUSTOM: the waypoint cannot reach an external authorizer ({}), so the requests the rules match are denied",
                ap.spec.provider.as_ref().map(|p| p.name.as_str()).unwrap_or("")
            ));
            PolicyAction::Custom
        }
    };
    let sa = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|s| {
                if s.contains('/') {
                    s.clone()
                } else {
                    format!("{ns}/{s}")
                }
            })
            .collect()
    };
    let mut uses_jwt = false;
    let rules = ap
        .spec
        .rules
        .iter()
        .flatten()
        .map(|r| PolicyRule {
            from: r
                .from
                .iter()
                .map(|f| {
                    let s = &f.source;
                    uses_jwt |=
                        !s.request_principals.is_empty() || !s.not_request_principals.is_empty();
                    PolicySource {
                        principals: s.principals.clone(),
                        not_principals: s.not_principals.clone(),
                        request_principals: s.request_principals.clone(),
                        not_request_principals: s.not_request_principals.clone(),
                        namespaces: s.namespaces.clone(),
                        not_namespaces: s.not_namespaces.clone(),
                        service_accounts: sa(&s.service_accounts),
                        not_service_accounts: sa(&s.not_service_accounts),
                        ip_blocks: s.ip_blocks.clone(),
                        not_ip_blocks: s.not_ip_blocks.clone(),
                        remote_ip_blocks: s.remote_ip_blocks.clone(),
                        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
                    }
                })
                .collect(),
            to: r
                .to
                .iter()
                .map(|t| {
                    let o = &t.operation;
                    PolicyOperation {
                        hosts: o.hosts.clone(),
                        not_hosts: o.not_hosts.clone(),
                        ports: o.ports.clone(),
                        not_ports: o.not_ports.clone(),
                        methods: o.methods.clone(),
                        not_methods: o.not_methods.clone(),
                        paths: o.paths.clone(),
                        not_paths: o.not_paths.clone(),
                    }
                })
                .collect(),
            when: r
                .when
                .iter()
                .map(|c| {
                    uses_jwt |= c.key.starts_with("request.auth.");
                    PolicyCondition {
                        key: c.key.clone(),
                        values: c.values.clone(),
                        not_values: c.not_values.clone(),
                    }
                })
                .collect(),
        })
        .collect();
    if uses_jwt {
        notes.push(
            "no RequestAuthentication (JWT) is supported yet: request principals and request.auth claims are always empty".into(),
        );
    }
    let policy = Policy {
        name: format!("{ns}/{}", ap.metadata.name),
        action: action as i32,
        dry_run: ap
            .metadata
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v == "true"),
        rules,
    };
    (policy, notes)
}
