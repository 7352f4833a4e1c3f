//! Gateway API's `HTTPRoute` (v1), as the mesh reads it: routes whose parentRef is a Service
//! (GAMMA) are served by that service's waypoint. Decoded strictly like the other Gateway API
//! kinds; fields the waypoint does not act on yet (`retry`, `sessionPersistence`, the
//! `RequestMirror`, `CORS`, `ExternalAuth` and `ExtensionRef` filters) are kept as written, and
//! the route's status says they are not applied.

use serde::{Deserialize, Serialize};

use super::meta::{invalid, ObjectError, ObjectMeta};

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct HttpRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: HttpRouteSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParentReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
}

impl ParentReference {
    /// The parent's kind: `Gateway` when not written (Gateway API's default).
    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("Gateway")
    }

    /// A core-group Service (GAMMA).
    pub fn is_service(&self) -> bool {
        self.kind() == "Service" && matches!(self.group.as_deref(), None | Some("") | Some("core"))
    }
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HttpRouteTimeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_params: Vec<HttpValueMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathMatch {
    /// `Exact`, `PathPrefix` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpValueMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HttpUrlRewrite>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HttpRequestRedirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    pub name: String,
    pub value: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathModifier {
    /// `ReplaceFullPath` or `ReplacePrefixMatch`.
    #[serde(rename = "type")]
    pub type_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpUrlRewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRequestRedirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpBackendRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteTimeouts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request: Option<String>,
}

const FILTER_TYPES: [&str; 8] = [
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "URLRewrite",
    "RequestRedirect",
    "RequestMirror",
    "ExtensionRef",
    "CORS",
    "ExternalAuth",
];

fn validate_filter(f: &HttpRouteFilter, at: &str) -> Result<(), ObjectError> {
    if !FILTER_TYPES.contains(&f.type_.as_str()) {
        return Err(invalid(format!(
            "{at}.type {:?} is not a filter type ({})",
            f.type_,
            FILTER_TYPES.join(", ")
        )));
    }
    let set = [
        ("RequestHeaderModifier", f.request_header_modifier.is_some()),
        (
            "ResponseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        ("URLRewrite", f.url_rewrite.is_some()),
        ("RequestRedirect", f.request_redirect.is_some()),
        ("RequestMirror", f.request_mirror.is_some()),
        ("ExtensionRef", f.extension_ref.is_some()),
        ("CORS", f.cors.is_some()),
        ("ExternalAuth", f.external_auth.is_some()),
    ];
    for (ty, present) in set {
        if present != (ty == f.type_) {
            let field = {
                let mut c = ty.chars();
                let first = c.next().map(|c| c.to_ascii_lowercase()).unwrap_or_default();
                let rest: String = c.collect();
                match ty {
                    "URLRewrite" => "urlRewrite".to_string(),
                    "CORS" => "cors".to_string(),
                    _ => format!("{first}{rest}"),
                }
            };
            return Err(invalid(if present {
                format!("{at}.{field} is set but the filter's type is {}", f.type_)
            } else {
                format!("{at}: a {ty} filter needs {field}")
            }));
        }
    }
    let paths = [
        f.url_rewrite.as_ref().and_then(|r| r.path.as_ref()),
        f.request_redirect.as_ref().and_then(|r| r.path.as_ref()),
    ];
    for p in paths.into_iter().flatten() {
        match (p.type_.as_str(), &p.replace_full_path, &p.replace_prefix_match) {
            ("ReplaceFullPath", Some(v), None) | ("ReplacePrefixMatch", None, Some(v))
                if v.starts_with('/') => {}
            _ => {
                return Err(invalid(format!(
                    "{at}: path.type ReplaceFullPath needs replaceFullPath, ReplacePrefixMatch needs replacePrefixMatch, each a path starting with /"
                )))
            }
        }
    }
    if let Some(code) = f.request_redirect.as_ref().and_then(|r| r.status_code) {
        if !matches!(code, 301 | 302 | 303 | 307 | 308) {
            return Err(invalid(format!(
                "{at}.requestRedirect.statusCode {code} must be 301, 302, 303, 307 or 308"
            )));
        }
    }
    for m in [&f.request_header_modifier, &f.response_header_modifier]
        .into_iter()
        .flatten()
    {
        for h in m.set.iter().chain(&m.add) {
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err()
                || http::HeaderValue::from_str(&h.value).is_err()
            {
                return Err(invalid(format!("{at}: header {:?} is not valid", h.name)));
            }
        }
    }
    Ok(())
}

pub(super) fn validate_http_route(r: &HttpRoute) -> Result<(), ObjectError> {
    if r.spec.parent_refs.len() > 32 {
        return Err(invalid("spec.parentRefs holds at most 32 entries"));
    }
    for (i, p) in r.spec.parent_refs.iter().enumerate() {
        if p.name.is_empty() {
            return Err(invalid(format!("spec.parentRefs[{i}].name is required")));
        }
    }
    if r.spec.rules.len() > 16 {
        return Err(invalid("spec.rules holds at most 16 entries"));
    }
    for (i, rule) in r.spec.rules.iter().enumerate() {
        for (m, mat) in rule.matches.iter().enumerate() {
            let at = format!("spec.rules[{i}].matches[{m}]");
            if let Some(p) = &mat.path {
                let ty = p.type_.as_deref().unwrap_or("PathPrefix");
                let value = p.value.as_deref().unwrap_or("/");
                match ty {
                    "Exact" | "PathPrefix" if !value.starts_with('/') => {
                        return Err(invalid(format!(
                            "{at}.path.value {value:?} must start with /"
                        )))
                    }
                    "Exact" | "PathPrefix" | "RegularExpression" => {}
                    other => {
                        return Err(invalid(format!(
                        "{at}.path.type {other:?} must be Exact, PathPrefix or RegularExpression"
                    )))
                    }
                }
            }
            for (kind, list) in [
                ("headers", &mat.headers),
                ("queryParams", &mat.query_params),
            ] {
                for (h, v) in list.iter().enumerate() {
                    match v.type_.as_deref().unwrap_or("Exact") {
                        "Exact" | "RegularExpression" => {}
                        other => {
                            return Err(invalid(format!(
                                "{at}.{kind}[{h}].type {other:?} must be Exact or RegularExpression"
                            )))
                        }
                    }
                    if v.name.is_empty() {
                        return Err(invalid(format!("{at}.{kind}[{h}].name is required")));
                    }
                }
            }
            if let Some(method) = &mat.method {
                const METHODS: [&str; 9] = [
                    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
                ];
                if !METHODS.contains(&method.as_str()) {
                    return Err(invalid(format!(
                        "{at}.method {method:?} must be one of {}",
                        METHODS.join(", ")
                    )));
                }
            }
        }
        for (f, filter) in rule.filters.iter().enumerate() {
            validate_filter(filter, &format!("spec.rules[{i}].filters[{f}]"))?;
        }
        for (b, backend) in rule.backend_refs.iter().enumerate() {
            let at = format!("spec.rules[{i}].backendRefs[{b}]");
            if backend.name.is_empty() {
                return Err(invalid(format!("{at}.name is required")));
            }
            if backend.weight.is_some_and(|w| w > 1_000_000) {
                return Err(invalid(format!("{at}.weight must be at most 1000000")));
            }
            for (f, filter) in backend.filters.iter().enumerate() {
                validate_filter(filter, &format!("{at}.filters[{f}]"))?;
            }
        }
        if let Some(t) = &rule.timeouts {
            for (field, v) in [
                ("request", &t.request),
                ("backendRequest", &t.backend_request),
            ] {
                if let Some(v) = v {
                    crate::time_text::parse_duration(v)
                        .map_err(|e| invalid(format!("spec.rules[{i}].timeouts.{field}: {e}")))?;
                }
            }
        }
    }
    Ok(())
}

/// Gateway API's `GRPCRoute` (v1). The waypoint serves it as the HTTP/2 routes it means: a
/// method match becomes a match on the request path `/<service>/<method>`, so it shares the
/// HTTPRoute machinery and precedence.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct GrpcRoute {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: GrpcRouteSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parent_refs: Vec<ParentReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hostnames: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<HttpRouteFilter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backend_refs: Vec<HttpBackendRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<serde_json::Value>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcRouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HttpValueMatch>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcMethodMatch {
    /// `Exact` (default) or `RegularExpression`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
}

fn grpc_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.trim_start_matches('.').split('.').all(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn grpc_method_name(m: &str) -> bool {
    let mut chars = m.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl GrpcMethodMatch {
    /// The request-path match this method match means.
    fn path(&self) -> Option<HttpPathMatch> {
        let regex = self.type_.as_deref() == Some("RegularExpression");
        let (service, method) = (self.service.as_deref(), self.method.as_deref());
        let (type_, value) = match (regex, service, method) {
            (_, None, None) => return None,
            (false, Some(s), Some(m)) => ("Exact", format!("/{s}/{m}")),
            (false, Some(s), None) => ("PathPrefix", format!("/{s}")),
            (false, None, Some(m)) => ("RegularExpression", format!("/[^/]+/{m}")),
            (true, s, m) => (
                "RegularExpression",
                format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
            ),
        };
        Some(HttpPathMatch {
            type_: Some(type_.to_string()),
            // Names validated to identifiers and dots: a dot is the only regex character.
            value: Some(if type_ == "RegularExpression" && !regex {
                value.replace('.', "\\.")
            } else {
                value
            }),
        })
    }
}

impl GrpcRoute {
    /// The HTTPRoute this route means, rule for rule.
    pub fn as_http(&self) -> HttpRouteSpec {
        HttpRouteSpec {
            parent_refs: self.spec.parent_refs.clone(),
            hostnames: self.spec.hostnames.clone(),
            rules: self
                .spec
                .rules
                .iter()
                .map(|r| HttpRouteRule {
                    name: r.name.clone(),
                    matches: r
                        .matches
                        .iter()
                        .map(|m| HttpRouteMatch {
                            path: m.method.as_ref().and_then(GrpcMethodMatch::path),
                            headers: m.headers.clone(),
                            query_params: Vec::new(),
                            method: None,
                        })
                        .collect(),
                    filters: r.filters.clone(),
                    backend_refs: r.backend_refs.clone(),
                    timeouts: None,
                    retry: None,
                    session_persistence: r.session_persistence.clone(),
                })
                .collect(),
        }
    }
}

pub(super) fn validate_grpc_route(r: &GrpcRoute) -> Result<(), ObjectError> {
    for (i, rule) in r.spec.rules.iter().enumerate() {
        for (m, mat) in rule.matches.iter().enumerate() {
            let Some(method) = &mat.method else { continue };
            let at = format!("spec.rules[{i}].matches[{m}].method");
            match method.type_.as_deref().unwrap_or("Exact") {
                "Exact" => {
                    if method.service.is_none() && method.method.is_none() {
                        return Err(invalid(format!(
                            "{at}: one of service or method is required"
                        )));
                    }
                    if method
                        .service
                        .as_deref()
                        .is_some_and(|s| !grpc_service_name(s))
                    {
                        return Err(invalid(format!(
                            "{at}.service {:?} is not a gRPC service name",
                            method.service.as_deref().unwrap_or("")
                        )));
                    }
                    if method
                        .method
                        .as_deref()
                        .is_some_and(|m| !grpc_method_name(m))
                    {
                        return Err(invalid(format!(
                            "{at}.method {:?} is not a gRPC method name",
                            method.method.as_deref().unwrap_or("")
                        )));
                    }
                }
                "RegularExpression" => {}
                other => {
                    return Err(invalid(format!(
                        "{at}.type {other:?} must be Exact or RegularExpression"
                    )))
                }
            }
        }
        for (f, filter) in rule.filters.iter().enumerate() {
            if !matches!(
                filter.type_.as_str(),
                "RequestHeaderModifier"
                    | "ResponseHeaderModifier"
                    | "RequestMirror"
                    | "ExtensionRef"
            ) {
                return Err(invalid(format!(
                    "spec.rules[{i}].filters[{f}].type {:?} is not a GRPCRoute filter (RequestHeaderModifier, ResponseHeaderModifier, RequestMirror, ExtensionRef)",
                    filter.type_
                )));
            }
        }
    }
    // The rest is what an HTTPRoute checks.
    validate_http_route(&HttpRoute {
        metadata: r.metadata.clone(),
        spec: r.as_http(),
    })
}
