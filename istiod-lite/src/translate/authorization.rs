//! AuthorizationPolicy -> `istio.security.Authorization`, Istio's L4 translation for ztunnel:
//!
//! * `selector` policies are WORKLOAD_SELECTOR scoped (root-namespace ones match in every
//!   namespace); no selector is NAMESPACE scope, or GLOBAL in the root namespace;
//! * `targetRefs` policies belong to waypoints and are not sent to ztunnel;
//! * AUDIT and CUSTOM are not sent to ztunnel;
//! * an ALLOW rule that uses an HTTP attribute is dropped whole (stricter than written); a DENY
//!   rule loses only its HTTP parts (denies more than written). Both are said in the status.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mesh_core::k8s::{
    parse_cidr, parse_port, selector_matches, AuthorizationAction, AuthorizationPolicy, Kind,
    Labels, ObjectKey, Rule as K8sRule, DRY_RUN_ANNOTATION,
};
use mesh_core::proto::istio::security::{
    string_match, Action, Address, Authorization, Clause, Match, Rule, Scope, ServiceAccountMatch,
    StringMatch,
};

use super::waypoint::{binding, Binding, TrafficType, Waypoints};
use super::{Condition, MeshConfig, WAYPOINT_ACCEPTED, ZTUNNEL_ACCEPTED};
use crate::store::Snapshot;

/// Selector-scoped policy keys, for attaching to workloads.
#[derive(Default)]
pub struct SelectorPolicies {
    by_namespace: HashMap<String, Vec<(Labels, String)>>,
    /// Root-namespace selector policies: they select in every namespace.
    mesh_wide: Vec<(Labels, String)>,
}

impl SelectorPolicies {
    /// Keys (`ns/name`) of the selector policies that select a workload.
    pub fn keys_for<'a>(
        &'a self,
        namespace: &str,
        labels: &'a Labels,
    ) -> impl Iterator<Item = &'a String> + 'a {
        self.by_namespace
            .get(namespace)
            .into_iter()
            .flatten()
            .chain(self.mesh_wide.iter())
            .filter(move |(sel, _)| selector_matches(sel, labels))
            .map(|(_, key)| key)
    }
}

pub struct Policies {
    pub authorizations: Vec<(String, Authorization)>,
    pub selectors: SelectorPolicies,
    /// `targetRefs` policies, for the waypoints they are bound to.
    pub waypoint: Vec<super::waypoint_policy::WaypointPolicy>,
}

pub fn translate_policies(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    waypoints: &Waypoints,
    statuses: &mut BTreeMap<ObjectKey, Vec<Condition>>,
) -> Policies {
    let mut out = Policies {
        authorizations: Vec::new(),
        selectors: SelectorPolicies::default(),
        waypoint: Vec::new(),
    };
    for ((ns, name), ap) in &snapshot.authorization_policies {
        let key = ObjectKey::new(Kind::AuthorizationPolicy, ns, name);
        if ap.spec.all_target_refs().next().is_some() {
            let condition = match waypoint_targets(ap, snapshot, waypoints, mesh) {
                Ok(targets) => {
                    let (policy, notes) = super::waypoint_policy::convert(ap);
                    let mut message = format!(
                        "bound to {}",
                        targets.bound.iter().cloned().collect::<Vec<_>>().join(", ")
                    );
                    for n in notes {
                        message.push_str("; ");
                        message.push_str(&n);
                    }
                    out.waypoint.push(super::waypoint_policy::WaypointPolicy {
                        policy,
                        gateways: targets.gateways,
                        services: targets.services,
                    });
                    Condition::new(WAYPOINT_ACCEPTED, true, "Accepted", message)
                }
                Err(c) => c,
            };
            statuses.insert(key, vec![condition]);
            continue;
        }
        let (auth, condition) = convert_authorization_policy(ap, &mesh.root_namespace);
        statuses.insert(key, vec![condition]);
        let Some(auth) = auth else { continue };
        let resource = format!("{ns}/{name}");
        if auth.scope == Scope::WorkloadSelector as i32 {
            let labels = ap
                .spec
                .selector
                .as_ref()
                .map(|s| s.match_labels.clone())
                .unwrap_or_default();
            if *ns == mesh.root_namespace {
                out.selectors.mesh_wide.push((labels, resource.clone()));
            } else {
                out.selectors
                    .by_namespace
                    .entry(ns.clone())
                    .or_default()
                    .push((labels, resource.clone()));
            }
        }
        out.authorizations.push((resource, auth));
    }
    out
}

/// What a `targetRefs` policy applies to.
struct Targets {
    /// The waypoints that enforce it, `<namespace>/<name>` (for the status).
    bound: BTreeSet<String>,
    /// Gateways it targets: all their services.
    gateways: BTreeSet<String>,
    /// Services it targets, `<namespace>/<hostname>`.
    services: BTreeSet<String>,
}

/// Where a `targetRefs` policy is enforced: the waypoints it is bound to, or why none (the
/// condition to report).
fn waypoint_targets(
    ap: &AuthorizationPolicy,
    snapshot: &Snapshot,
    waypoints: &Waypoints,
    mesh: &MeshConfig,
) -> Result<Targets, Condition> {
    let policy_ns = ap.metadata.namespace.as_deref().unwrap_or("default");
    let mut bound = BTreeSet::new();
    let mut gateways = BTreeSet::new();
    let mut services = BTreeSet::new();
    for target in ap.spec.all_target_refs() {
        let ns = target.namespace.as_deref().unwrap_or(policy_ns);
        // Istio refuses it: a policy in one namespace must not allow (or deny) into another.
        if ns != policy_ns {
            return Err(Condition::new(
                WAYPOINT_ACCEPTED,
                false,
                "TargetNotFound",
                format!("targetRefs may not name another namespace ({ns}); put the policy in {ns}"),
            ));
        }
        match target.kind.as_str() {
            "Gateway" => {
                if !waypoints.exists(ns, &target.name) {
                    let why = if snapshot
                        .gateways
                        .contains_key(&(ns.to_string(), target.name.clone()))
                    {
                        "is not of class istio-waypoint"
                    } else {
                        "was not found"
                    };
                    return Err(Condition::new(
                        WAYPOINT_ACCEPTED,
                        false,
                        "TargetNotFound",
                        format!("Gateway {ns}/{} {why}", target.name),
                    ));
                }
                bound.insert(format!("{ns}/{}", target.name));
                gateways.insert(format!("{ns}/{}", target.name));
            }
            "Service" => {
                let Some(svc) = snapshot
                    .services
                    .get(&(ns.to_string(), target.name.clone()))
                else {
                    return Err(Condition::new(
                        WAYPOINT_ACCEPTED,
                        false,
                        "TargetNotFound",
                        format!("Service {ns}/{} was not found", target.name),
                    ));
                };
                let b = binding(&svc.metadata.labels, ns, snapshot.namespace(ns));
                match (&b, waypoints.resolve(&b, TrafficType::Service)) {
                    (Binding::Named { namespace, name }, Some(_)) => {
                        bound.insert(format!("{namespace}/{name}"));
                        services
                            .insert(format!("{ns}/{}", mesh.service_hostname(ns, &target.name)));
                    }
                    _ => {
                        return Err(Condition::new(
                            WAYPOINT_ACCEPTED,
                            false,
                            "AncestorNotBound",
                            format!(
                                "Service {ns}/{} is not bound to a waypoint that takes service traffic; label it (or its namespace) istio.io/use-waypoint=<waypoint>",
                                target.name
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(Condition::new(
                    WAYPOINT_ACCEPTED,
                    false,
                    "TargetNotFound",
                    format!("targetRefs kind {other:?} is not supported (use Gateway or Service)"),
                ));
            }
        }
    }
    Ok(Targets {
        bound,
        gateways,
        services,
    })
}

/// What the HTTP-attribute rewriting found in one policy.
#[derive(Default)]
struct L7Findings {
    attributes: BTreeSet<String>,
}

/// Converts one selector or namespace policy for ztunnel. Returns the resource (None when it is
/// not sent to ztunnel) and its `ZtunnelAccepted` condition.
pub fn convert_authorization_policy(
    ap: &AuthorizationPolicy,
    root_namespace: &str,
) -> (Option<Authorization>, Condition) {
    let ns = ap
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let action = match ap.spec.action {
        AuthorizationAction::Allow => Action::Allow,
        AuthorizationAction::Deny => Action::Deny,
        other => {
            return (
                None,
                Condition::new(
                    ZTUNNEL_ACCEPTED,
                    false,
                    "UnsupportedValue",
                    format!("ztunnel does not support the {other} action"),
                ),
            );
        }
    };
    let has_selector = ap
        .spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty());
    let scope = if has_selector {
        Scope::WorkloadSelector
    } else if ns == root_namespace {
        Scope::Global
    } else {
        Scope::Namespace
    };
    let mut findings = L7Findings::default();
    let rules = ap
        .spec
        .rules
        .iter()
        .flatten()
        .filter_map(|r| convert_rule(r, action, &ns, &mut findings))
        .collect();
    let auth = Authorization {
        name: ap.metadata.name.clone(),
        namespace: ns,
        scope: scope as i32,
        action: action as i32,
        rules,
        dry_run: ap
            .metadata
            .annotations
            .get(DRY_RUN_ANNOTATION)
            .is_some_and(|v| v.eq_ignore_ascii_case("true")),
        extensions: vec![],
    };
    let condition = if findings.attributes.is_empty() {
        Condition::new(ZTUNNEL_ACCEPTED, true, "Accepted", "attached to ztunnel")
    } else {
        let found: Vec<&str> = findings.attributes.iter().map(String::as_str).collect();
        let consequence = match action {
            Action::Allow => "Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.",
            Action::Deny => "Within a DENY policy, rules with HTTP attributes are enforced without the HTTP attributes. This will be more restrictive than requested.",
        };
        Condition::new(
            ZTUNNEL_ACCEPTED,
            false,
            "UnsupportedValue",
            format!(
                "ztunnel does not support HTTP attributes (found: {}). In ambient mode you must use a waypoint proxy to enforce HTTP rules. {consequence}",
                found.join(", ")
            ),
        )
    };
    (Some(auth), condition)
}

/// One clause being built: its matches, and whether an entry matched everything after removing
/// HTTP attributes (which makes the whole OR clause match everything).
struct ClauseBuilder {
    matches: Vec<Match>,
    matches_all: bool,
}

impl ClauseBuilder {
    fn new() -> Self {
        ClauseBuilder {
            matches: Vec::new(),
            matches_all: false,
        }
    }

    fn push(&mut self, m: Match) {
        if m == Match::default() {
            self.matches_all = true;
        } else {
            self.matches.push(m);
        }
    }

    fn finish(self) -> Option<Clause> {
        (!self.matches_all && !self.matches.is_empty()).then_some(Clause {
            matches: self.matches,
        })
    }
}

fn convert_rule(
    rule: &K8sRule,
    action: Action,
    ns: &str,
    findings: &mut L7Findings,
) -> Option<Rule> {
    let mut l7 = BTreeSet::new();
    let mut clauses = Vec::new();

    if !rule.from.is_empty() {
        let mut clause = ClauseBuilder::new();
        for from in &rule.from {
            let s = &from.source;
            for (name, present) in [
                ("requestPrincipals", !s.request_principals.is_empty()),
                ("notRequestPrincipals", !s.not_request_principals.is_empty()),
                ("remoteIpBlocks", !s.remote_ip_blocks.is_empty()),
                ("notRemoteIpBlocks", !s.not_remote_ip_blocks.is_empty()),
                ("trustDomains", !s.trust_domains.is_empty()),
                ("notTrustDomains", !s.not_trust_domains.is_empty()),
            ] {
                if present {
                    l7.insert(name.to_string());
                }
            }
            clause.push(Match {
                principals: s.principals.iter().map(|p| principal_match(p)).collect(),
                not_principals: s
                    .not_principals
                    .iter()
                    .map(|p| principal_match(p))
                    .collect(),
                namespaces: s.namespaces.iter().map(|p| string_match(p)).collect(),
                not_namespaces: s.not_namespaces.iter().map(|p| string_match(p)).collect(),
                service_accounts: s
                    .service_accounts
                    .iter()
                    .map(|sa| sa_match(sa, ns))
                    .collect(),
                not_service_accounts: s
                    .not_service_accounts
                    .iter()
                    .map(|sa| sa_match(sa, ns))
                    .collect(),
                source_ips: s.ip_blocks.iter().filter_map(|c| address(c)).collect(),
                not_source_ips: s.not_ip_blocks.iter().filter_map(|c| address(c)).collect(),
                ..Default::default()
            });
        }
        clauses.extend(clause.finish());
    }

    if !rule.to.is_empty() {
        let mut clause = ClauseBuilder::new();
        for to in &rule.to {
            let o = &to.operation;
            for (name, present) in [
                ("hosts", !o.hosts.is_empty()),
                ("notHosts", !o.not_hosts.is_empty()),
                ("methods", !o.methods.is_empty()),
                ("notMethods", !o.not_methods.is_empty()),
                ("paths", !o.paths.is_empty()),
                ("notPaths", !o.not_paths.is_empty()),
            ] {
                if present {
                    l7.insert(name.to_string());
                }
            }
            clause.push(Match {
                destination_ports: o.ports.iter().filter_map(|p| port(p)).collect(),
                not_destination_ports: o.not_ports.iter().filter_map(|p| port(p)).collect(),
                ..Default::default()
            });
        }
        clauses.extend(clause.finish());
    }

    for cond in &rule.when {
        let values = &cond.values;
        let not_values = &cond.not_values;
        let m = match cond.key.as_str() {
            "source.ip" => Match {
                source_ips: values.iter().filter_map(|v| address(v)).collect(),
                not_source_ips: not_values.iter().filter_map(|v| address(v)).collect(),
                ..Default::default()
            },
            "source.namespace" => Match {
                namespaces: values.iter().map(|v| string_match(v)).collect(),
                not_namespaces: not_values.iter().map(|v| string_match(v)).collect(),
                ..Default::default()
            },
            "source.principal" => Match {
                principals: values.iter().map(|v| principal_match(v)).collect(),
                not_principals: not_values.iter().map(|v| principal_match(v)).collect(),
                ..Default::default()
            },
            "destination.ip" => Match {
                destination_ips: values.iter().filter_map(|v| address(v)).collect(),
                not_destination_ips: not_values.iter().filter_map(|v| address(v)).collect(),
                ..Default::default()
            },
            "destination.port" => Match {
                destination_ports: values.iter().filter_map(|v| port(v)).collect(),
                not_destination_ports: not_values.iter().filter_map(|v| port(v)).collect(),
                ..Default::default()
            },
            other => {
                l7.insert(format!("when[{other}]"));
                continue;
            }
        };
        let mut clause = ClauseBuilder::new();
        clause.push(m);
        clauses.extend(clause.finish());
    }

    if l7.is_empty() {
        return Some(Rule { clauses });
    }
    findings.attributes.extend(l7);
    match action {
        // The rule could only match on what ztunnel cannot see: it never matches.
        Action::Allow => None,
        // HTTP-only parts count as matching: what remains still denies.
        Action::Deny => Some(Rule { clauses }),
    }
}

fn string_match(s: &str) -> StringMatch {
    let m = if s == "*" {
        string_match::MatchType::Presence(())
    } else if let Some(prefix) = s.strip_suffix('*') {
        string_match::MatchType::Prefix(prefix.to_string())
    } else if let Some(suffix) = s.strip_prefix('*') {
        string_match::MatchType::Suffix(suffix.to_string())
    } else {
        string_match::MatchType::Exact(s.to_string())
    };
    StringMatch {
        match_type: Some(m),
    }
}

/// Principals are compared without `spiffe://`.
fn principal_match(s: &str) -> StringMatch {
    string_match(s.strip_prefix("spiffe://").unwrap_or(s))
}

fn sa_match(sa: &str, policy_ns: &str) -> ServiceAccountMatch {
    match sa.split_once('/') {
        Some((ns, name)) => ServiceAccountMatch {
            namespace: ns.to_string(),
            service_account: name.to_string(),
        },
        None => ServiceAccountMatch {
            namespace: policy_ns.to_string(),
            service_account: sa.to_string(),
        },
    }
}

/// Validation has already refused bad CIDRs and ports; these only skip what cannot occur.
fn address(cidr: &str) -> Option<Address> {
    let (ip, len) = parse_cidr(cidr).ok()?;
    Some(Address {
        address: super::waypoint::ip_bytes(ip),
        length: u32::from(len),
    })
}

fn port(p: &str) -> Option<u32> {
    parse_port(p).ok().map(u32::from)
}
