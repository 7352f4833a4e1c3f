//! HTTPRoutes whose parent is a Service (Gateway API's GAMMA): each becomes a `Route` of that
//! service's `WaypointService`, served by the waypoint the service is bound to; each backend
//! service is sent to that waypoint too (it needs their endpoints).
//!
//! Status is Gateway API's, per parent: `Accepted` (the parent is a Service bound to a waypoint,
//! and every match is valid) and `ResolvedRefs` (every backendRef names a Service of the
//! route's namespace, with a port). A backendRef that does not resolve keeps its share of the
//! traffic and that share is answered 500, as the Gateway API asks. What the waypoint does not
//! apply yet is named in the `Accepted` message.

use std::collections::{BTreeMap, BTreeSet};

use mesh_core::k8s::{HttpRoute, HttpRouteFilter, HttpRouteRule, Kind, ObjectKey, ParentReference};
use mesh_core::proto::mesh::waypoint::v1 as pb;

use super::service::Services;
use super::{Condition, MeshConfig};
use crate::store::Snapshot;

pub const ACCEPTED: &str = "Accepted";
pub const RESOLVED_REFS: &str = "ResolvedRefs";

/// The routes of every waypoint-bound service, and who routes to which backend.
#[derive(Default)]
pub struct Routes {
    /// Parent service key (`<namespace>/<hostname>`) -> its routes, oldest first.
    pub by_parent: BTreeMap<String, Vec<pb::Route>>,
    /// Backend service key -> the waypoints whose routes send to it.
    pub backend_of: BTreeMap<String, BTreeSet<String>>,
}

fn path_modifier(p: &mesh_core::k8s::HttpPathModifier) -> Option<pb::PathModifier> {
    let kind = match p.type_.as_str() {
        "ReplaceFullPath" => pb::path_modifier::Kind::ReplaceFullPath(p.replace_full_path.clone()?),
        "ReplacePrefixMatch" => {
            pb::path_modifier::Kind::ReplacePrefixMatch(p.replace_prefix_match.clone()?)
        }
        _ => return None,
    };
    Some(pb::PathModifier { kind: Some(kind) })
}

fn headers(list: &[mesh_core::k8s::HttpHeader]) -> Vec<pb::Header> {
    list.iter()
        .map(|h| pb::Header {
            name: h.name.clone(),
            value: h.value.clone(),
        })
        .collect()
}

fn modifier(m: &mesh_core::k8s::HttpHeaderModifier) -> pb::HeaderModifier {
    pb::HeaderModifier {
        set: headers(&m.set),
        add: headers(&m.add),
        remove: m.remove.clone(),
    }
}

/// The filter as the waypoint applies it, or a note saying it is not applied.
fn filter(f: &HttpRouteFilter, notes: &mut BTreeSet<String>) -> Option<pb::RouteFilter> {
    use pb::route_filter::Kind as F;
    let kind = match f.type_.as_str() {
        "RequestHeaderModifier" => {
            F::RequestHeaderModifier(modifier(f.request_header_modifier.as_ref()?))
        }
        "ResponseHeaderModifier" => {
            F::ResponseHeaderModifier(modifier(f.response_header_modifier.as_ref()?))
        }
        "URLRewrite" => {
            let r = f.url_rewrite.as_ref()?;
            F::UrlRewrite(pb::UrlRewrite {
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().and_then(path_modifier),
            })
        }
        "RequestRedirect" => {
            let r = f.request_redirect.as_ref()?;
            F::RequestRedirect(pb::Redirect {
                scheme: r.scheme.clone().unwrap_or_default(),
                hostname: r.hostname.clone().unwrap_or_default(),
                path: r.path.as_ref().and_then(path_modifier),
                port: r.port.map(u32::from).unwrap_or(0),
                status_code: r.status_code.map(u32::from).unwrap_or(302),
            })
        }
        other => {
            notes.insert(format!(
                "the {other} filter is not applied by the waypoint yet"
            ));
            return None;
        }
    };
    Some(pb::RouteFilter { kind: Some(kind) })
}

fn check_regex(value: &str, at: &str) -> Result<(), String> {
    regex::Regex::new(value)
        .map(|_| ())
        .map_err(|e| format!("{at}: {value:?} is not a valid regular expression: {e}"))
}

/// One rule for the waypoint; an invalid regex refuses the route.
fn rule(
    r: &HttpRouteRule,
    i: usize,
    route_ns: &str,
    services: &Services,
    mesh: &MeshConfig,
    notes: &mut BTreeSet<String>,
    unresolved: &mut Vec<String>,
) -> Result<pb::RouteRule, String> {
    let mut matches = Vec::with_capacity(r.matches.len());
    for (m, mat) in r.matches.iter().enumerate() {
        let at = format!("spec.rules[{i}].matches[{m}]");
        let path = mat.path.as_ref().map(|p| {
            let ty = match p.type_.as_deref().unwrap_or("PathPrefix") {
                "Exact" => pb::PathMatchType::Exact,
                "RegularExpression" => pb::PathMatchType::Regex,
                _ => pb::PathMatchType::Prefix,
            };
            pb::PathMatch {
                r#type: ty as i32,
                value: p.value.clone().unwrap_or_else(|| "/".into()),
            }
        });
        if let Some(p) = &path {
            if p.r#type == pb::PathMatchType::Regex as i32 {
                check_regex(&p.value, &format!("{at}.path"))?;
            }
        }
        let values = |list: &[mesh_core::k8s::HttpValueMatch], what: &str| {
            list.iter()
                .enumerate()
                .map(|(k, v)| {
                    let regex = v.type_.as_deref() == Some("RegularExpression");
                    if regex {
                        check_regex(&v.value, &format!("{at}.{what}[{k}]"))?;
                    }
                    Ok(pb::ValueMatch {
                        name: v.name.clone(),
                        value: v.value.clone(),
                        regex,
                    })
                })
                .collect::<Result<Vec<_>, String>>()
        };
        matches.push(pb::RouteMatch {
            path,
            headers: values(&mat.headers, "headers")?,
            query_params: values(&mat.query_params, "queryParams")?,
            method: mat.method.clone().unwrap_or_default(),
        });
    }
    let filters = r.filters.iter().filter_map(|f| filter(f, notes)).collect();
    let mut backends = Vec::with_capacity(r.backend_refs.len());
    for (b, backend) in r.backend_refs.iter().enumerate() {
        let at = format!("spec.rules[{i}].backendRefs[{b}]");
        let kind_ok = backend.kind.as_deref().unwrap_or("Service") == "Service"
            && matches!(backend.group.as_deref(), None | Some("") | Some("core"));
        let ns = backend.namespace.as_deref().unwrap_or(route_ns);
        let resolved = if !kind_ok {
            unresolved.push(format!("{at}: only Service backends are supported"));
            None
        } else if ns != route_ns {
            unresolved.push(format!(
                "{at}: Service {ns}/{} is in another namespace, and ReferenceGrant is not supported yet",
                backend.name
            ));
            None
        } else if backend.port.is_none() {
            unresolved.push(format!("{at}: a Service backend needs a port"));
            None
        } else if !services.contains_key(&(ns.to_string(), backend.name.clone())) {
            unresolved.push(format!("{at}: Service {ns}/{} was not found", backend.name));
            None
        } else {
            Some(format!("{ns}/{}", mesh.service_hostname(ns, &backend.name)))
        };
        backends.push(pb::WeightedBackend {
            service: resolved.unwrap_or_default(),
            port: backend.port.map(u32::from).unwrap_or(0),
            weight: backend.weight.unwrap_or(1),
            filters: backend
                .filters
                .iter()
                .filter_map(|f| filter(f, notes))
                .collect(),
        });
    }
    let mut timeout_ms = 0;
    if let Some(t) = &r.timeouts {
        if let Some(req) = &t.request {
            // Validation already parsed it; "0s" means no timeout.
            timeout_ms = mesh_core::time_text::parse_duration(req)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
        }
        if t.backend_request.is_some() {
            notes
                .insert("timeouts.backendRequest is not applied yet (retries come with it)".into());
        }
    }
    if r.retry.is_some() {
        notes.insert("retry is not applied by the waypoint yet".into());
    }
    if r.session_persistence.is_some() {
        notes.insert("sessionPersistence is not applied by the waypoint yet".into());
    }
    Ok(pb::RouteRule {
        matches,
        filters,
        backends,
        timeout_ms,
    })
}

fn describe(parent: &ParentReference) -> String {
    format!("{} {}", parent.kind(), parent.name)
}

pub fn translate_routes(
    snapshot: &Snapshot,
    mesh: &MeshConfig,
    services: &Services,
    statuses: &mut BTreeMap<ObjectKey, Vec<Condition>>,
) -> Routes {
    let mut out = Routes::default();
    // Both kinds as HTTPRoutes (a GRPCRoute's method match is a path match), in Gateway API's
    // precedence between routes: the oldest first, then by name.
    let mut routes: Vec<(ObjectKey, Option<&str>, HttpRoute)> = snapshot
        .http_routes
        .iter()
        .map(|((ns, name), r)| {
            (
                ObjectKey::new(Kind::HttpRoute, ns, name),
                r.metadata.creation_timestamp.as_deref(),
                (**r).clone(),
            )
        })
        .chain(snapshot.grpc_routes.iter().map(|((ns, name), r)| {
            (
                ObjectKey::new(Kind::GrpcRoute, ns, name),
                r.metadata.creation_timestamp.as_deref(),
                HttpRoute {
                    metadata: r.metadata.clone(),
                    spec: r.as_http(),
                },
            )
        }))
        .collect();
    routes.sort_by(|(ka, ta, _), (kb, tb, _)| {
        (ta, &ka.namespace, &ka.name, ka.kind).cmp(&(tb, &kb.namespace, &kb.name, kb.kind))
    });
    for (key, _, route) in routes {
        let (ns, name) = (&key.namespace, &key.name);
        let mut notes = BTreeSet::new();
        if !route.spec.hostnames.is_empty() {
            notes.insert("hostnames are ignored for Service parents (GAMMA)".to_string());
        }
        let mut unresolved = Vec::new();
        let rules: Result<Vec<pb::RouteRule>, String> = route
            .spec
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| rule(r, i, ns, services, mesh, &mut notes, &mut unresolved))
            .collect();
        let mut conditions = Vec::new();
        for parent in &route.spec.parent_refs {
            let parent_ns = parent.namespace.as_deref().unwrap_or(ns);
            let accepted = if parent.is_service() && parent_ns != ns.as_str() {
                Err((
                    "UnsupportedValue",
                    format!(
                        "Service {parent_ns}/{} is in another namespace: such a route is a consumer route (for clients in {ns} only), which is not supported yet; a producer route lives in {parent_ns}",
                        parent.name
                    ),
                ))
            } else if !parent.is_service() {
                Err((
                    "NoMatchingParent",
                    format!(
                        "{} is not a Service: waypoints serve routes whose parent is a Service (GAMMA)",
                        describe(parent)
                    ),
                ))
            } else {
                match services.get(&(parent_ns.to_string(), parent.name.clone())) {
                    None => Err(("NoMatchingParent", format!("Service {parent_ns}/{} was not found", parent.name))),
                    Some(svc) => match &svc.gateway {
                        None => Err((
                            "NoMatchingParent",
                            format!(
                                "Service {parent_ns}/{} is not bound to a waypoint, so nothing enforces this route; label it (or its namespace) istio.io/use-waypoint=<waypoint>",
                                parent.name
                            ),
                        )),
                        Some(gateway) => match &rules {
                            Err(e) => Err(("UnsupportedValue", e.clone())),
                            Ok(rules) => Ok((svc, gateway, rules)),
                        },
                    },
                }
            };
            let (type_ok, reason, message) = match accepted {
                Ok((svc, gateway, rules)) => {
                    let parent_key = format!("{parent_ns}/{}", svc.xds.hostname);
                    out.by_parent
                        .entry(parent_key)
                        .or_default()
                        .push(pb::Route {
                            name: format!("{ns}/{name}"),
                            port: parent.port.map(u32::from).unwrap_or(0),
                            rules: rules.clone(),
                        });
                    for b in rules.iter().flat_map(|r| &r.backends) {
                        if !b.service.is_empty() {
                            out.backend_of
                                .entry(b.service.clone())
                                .or_default()
                                .insert(gateway.clone());
                        }
                    }
                    let mut message = format!("served by waypoint {gateway}");
                    for n in &notes {
                        message.push_str("; ");
                        message.push_str(n);
                    }
                    (true, "Accepted", message)
                }
                Err((reason, message)) => (false, reason, message),
            };
            conditions.push(Condition::new(ACCEPTED, type_ok, reason, message).for_parent(parent));
            let resolved = if unresolved.is_empty() {
                Condition::new(
                    RESOLVED_REFS,
                    true,
                    "ResolvedRefs",
                    "every backendRef resolved",
                )
            } else {
                let reason = if unresolved.iter().any(|u| u.contains("another namespace")) {
                    "RefNotPermitted"
                } else if unresolved.iter().any(|u| u.contains("only Service")) {
                    "InvalidKind"
                } else {
                    "BackendNotFound"
                };
                Condition::new(
                    RESOLVED_REFS,
                    false,
                    reason,
                    format!(
                        "{}; requests sent to these backends are answered 500",
                        unresolved.join("; ")
                    ),
                )
            };
            conditions.push(resolved.for_parent(parent));
        }
        statuses.insert(key.clone(), conditions);
    }
    out
}
