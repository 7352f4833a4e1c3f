//! A service's HTTPRoutes, compiled into one table in Gateway API precedence: an exact path
//! first, then a regular expression (where Gateway API leaves it to the implementation: before
//! prefixes, so a catch-all `/` never hides one), then a longer prefix before a shorter one; then
//! a match with a method before one without, more header matches before fewer, more query
//! matches before fewer; then the older route, then the rule and match order as written.
//! The first entry that matches a request decides its rule.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use mesh_core::proto::mesh::waypoint::v1 as pb;
use regex::Regex;

#[derive(Clone, Debug)]
enum PathMatch {
    /// Path elements: `/foo` takes `/foo` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    Exact(String),
    Regex(Regex),
}

#[derive(Clone, Debug)]
enum Value {
    Exact(String),
    Regex(Regex),
}

impl Value {
    fn matches(&self, v: &str) -> bool {
        match self {
            Value::Exact(e) => e == v,
            Value::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Clone, Debug)]
struct Match {
    path: PathMatch,
    headers: Vec<(HeaderName, Value)>,
    query: Vec<(String, Value)>,
    method: Option<Method>,
}

/// A path rewrite or redirect path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifier {
    Full(String),
    /// Replaces the prefix that matched (only meaningful after a prefix match).
    Prefix(String),
}

#[derive(Clone, Debug, Default)]
pub struct HeaderModifier {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub add: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    pub fn apply(&self, headers: &mut http::HeaderMap) {
        for (n, v) in &self.set {
            headers.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            headers.append(n.clone(), v.clone());
        }
        for n in &self.remove {
            headers.remove(n);
        }
    }
}

#[derive(Clone, Debug)]
pub enum Filter {
    RequestHeaders(HeaderModifier),
    ResponseHeaders(HeaderModifier),
    Rewrite {
        hostname: Option<HeaderValue>,
        path: Option<PathModifier>,
    },
    Redirect {
        scheme: Option<String>,
        hostname: Option<String>,
        path: Option<PathModifier>,
        port: Option<u16>,
        status: http::StatusCode,
    },
}

#[derive(Clone, Debug)]
pub struct Backend {
    /// `<namespace>/<hostname>`; `None`: the backendRef did not resolve (answered 500).
    pub service: Option<String>,
    pub port: u16,
    pub weight: u32,
    pub filters: Vec<Filter>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub filters: Vec<Filter>,
    pub backends: Vec<Backend>,
    pub timeout: Option<Duration>,
}

impl Rule {
    /// A backend drawn by weight (`draw` in `0..total weight`); `None` when every weight is 0.
    pub fn backend(&self, draw: impl FnOnce(u64) -> u64) -> Option<&Backend> {
        let total: u64 = self.backends.iter().map(|b| u64::from(b.weight)).sum();
        if total == 0 {
            return None;
        }
        let mut at = draw(total);
        for b in &self.backends {
            let w = u64::from(b.weight);
            if at < w {
                return Some(b);
            }
            at -= w;
        }
        None
    }
}

#[derive(Clone, Debug)]
struct Entry {
    /// The route's parentRef port; 0: every port.
    port: u16,
    route: Arc<str>,
    matcher: Match,
    rule: Arc<Rule>,
}

/// The outcome of a lookup: the rule, which route it is from, and the prefix that matched (for
/// `ReplacePrefixMatch`).
pub struct Found<'a> {
    pub route: &'a str,
    pub rule: &'a Arc<Rule>,
    pub matched_prefix: Option<&'a str>,
}

#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    entries: Vec<Entry>,
}

fn regex(v: &str, what: &str) -> Result<Regex, String> {
    // Gateway API regexes match the whole value.
    Regex::new(&format!("^(?:{v})$")).map_err(|e| format!("{what} {v:?}: {e}"))
}

fn path_modifier(p: &Option<pb::PathModifier>) -> Option<PathModifier> {
    match p.as_ref()?.kind.as_ref()? {
        pb::path_modifier::Kind::ReplaceFullPath(v) => Some(PathModifier::Full(v.clone())),
        pb::path_modifier::Kind::ReplacePrefixMatch(v) => Some(PathModifier::Prefix(v.clone())),
    }
}

fn header_pairs(list: &[pb::Header]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    list.iter()
        .map(|h| {
            let n = HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| format!("header name {:?}", h.name))?;
            let v = HeaderValue::from_str(&h.value)
                .map_err(|_| format!("header value of {:?}", h.name))?;
            Ok((n, v))
        })
        .collect()
}

fn modifier(m: &pb::HeaderModifier) -> Result<HeaderModifier, String> {
    Ok(HeaderModifier {
        set: header_pairs(&m.set)?,
        add: header_pairs(&m.add)?,
        remove: m
            .remove
            .iter()
            .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("header name {n:?}")))
            .collect::<Result<_, _>>()?,
    })
}

fn filter(f: &pb::RouteFilter) -> Result<Option<Filter>, String> {
    use pb::route_filter::Kind as F;
    Ok(Some(match f.kind.as_ref() {
        None => return Ok(None),
        Some(F::RequestHeaderModifier(m)) => Filter::RequestHeaders(modifier(m)?),
        Some(F::ResponseHeaderModifier(m)) => Filter::ResponseHeaders(modifier(m)?),
        Some(F::UrlRewrite(r)) => Filter::Rewrite {
            hostname: if r.hostname.is_empty() {
                None
            } else {
                Some(
                    HeaderValue::from_str(&r.hostname)
                        .map_err(|_| format!("rewrite hostname {:?}", r.hostname))?,
                )
            },
            path: path_modifier(&r.path),
        },
        Some(F::RequestRedirect(r)) => Filter::Redirect {
            scheme: (!r.scheme.is_empty()).then(|| r.scheme.clone()),
            hostname: (!r.hostname.is_empty()).then(|| r.hostname.clone()),
            path: path_modifier(&r.path),
            port: u16::try_from(r.port).ok().filter(|p| *p != 0),
            status: http::StatusCode::from_u16(r.status_code as u16)
                .ok()
                .filter(|s| s.is_redirection())
                .unwrap_or(http::StatusCode::FOUND),
        },
    }))
}

fn filters(list: &[pb::RouteFilter]) -> Result<Vec<Filter>, String> {
    Ok(list
        .iter()
        .map(filter)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect())
}

fn compile_match(m: &pb::RouteMatch) -> Result<Match, String> {
    let path = match &m.path {
        None => PathMatch::Prefix(String::new()),
        Some(p) => match pb::PathMatchType::try_from(p.r#type).unwrap_or(pb::PathMatchType::Prefix)
        {
            pb::PathMatchType::Prefix => {
                PathMatch::Prefix(p.value.trim_end_matches('/').to_string())
            }
            pb::PathMatchType::Exact => PathMatch::Exact(p.value.clone()),
            pb::PathMatchType::Regex => PathMatch::Regex(regex(&p.value, "path")?),
        },
    };
    let value = |v: &pb::ValueMatch| -> Result<Value, String> {
        Ok(if v.regex {
            Value::Regex(regex(&v.value, &v.name)?)
        } else {
            Value::Exact(v.value.clone())
        })
    };
    Ok(Match {
        path,
        headers: m
            .headers
            .iter()
            .map(|h| {
                let n = HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes())
                    .map_err(|_| format!("header name {:?}", h.name))?;
                Ok((n, value(h)?))
            })
            .collect::<Result<_, String>>()?,
        query: m
            .query_params
            .iter()
            .map(|q| Ok((q.name.clone(), value(q)?)))
            .collect::<Result<_, String>>()?,
        method: if m.method.is_empty() {
            None
        } else {
            Some(
                Method::from_bytes(m.method.as_bytes())
                    .map_err(|_| format!("method {:?}", m.method))?,
            )
        },
    })
}

/// Sort key: smaller is more specific.
fn precedence(
    m: &Match,
) -> (
    u8,
    std::cmp::Reverse<usize>,
    bool,
    std::cmp::Reverse<usize>,
    std::cmp::Reverse<usize>,
) {
    let (kind, len) = match &m.path {
        PathMatch::Exact(p) => (0, p.len()),
        PathMatch::Regex(_) => (1, 0),
        PathMatch::Prefix(p) => (2, p.len()),
    };
    (
        kind,
        std::cmp::Reverse(len),
        m.method.is_none(),
        std::cmp::Reverse(m.headers.len()),
        std::cmp::Reverse(m.query.len()),
    )
}

impl RouteTable {
    /// Compiles the routes (given oldest first); an error names the route.
    pub fn compile(routes: &[pb::Route]) -> Result<RouteTable, String> {
        let mut entries = Vec::new();
        for r in routes {
            let name: Arc<str> = Arc::from(r.name.as_str());
            let port =
                u16::try_from(r.port).map_err(|_| format!("route {}: port {}", r.name, r.port))?;
            for (i, rule) in r.rules.iter().enumerate() {
                let at = |e: String| format!("route {} rules[{i}]: {e}", r.name);
                let compiled = Arc::new(Rule {
                    filters: filters(&rule.filters).map_err(at)?,
                    backends: rule
                        .backends
                        .iter()
                        .map(|b| {
                            Ok(Backend {
                                service: (!b.service.is_empty()).then(|| b.service.clone()),
                                port: u16::try_from(b.port)
                                    .map_err(|_| format!("backend port {}", b.port))?,
                                weight: b.weight,
                                filters: filters(&b.filters)?,
                            })
                        })
                        .collect::<Result<_, String>>()
                        .map_err(at)?,
                    timeout: (rule.timeout_ms > 0).then(|| Duration::from_millis(rule.timeout_ms)),
                });
                let matches: Vec<Match> = if rule.matches.is_empty() {
                    vec![compile_match(&pb::RouteMatch::default()).map_err(at)?]
                } else {
                    rule.matches
                        .iter()
                        .map(compile_match)
                        .collect::<Result<_, _>>()
                        .map_err(at)?
                };
                for matcher in matches {
                    entries.push(Entry {
                        port,
                        route: name.clone(),
                        matcher,
                        rule: compiled.clone(),
                    });
                }
            }
        }
        // Stable: equal precedence keeps route age and written order.
        entries.sort_by_key(|a| precedence(&a.matcher));
        Ok(RouteTable { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether any route applies to service port `port` (a route's parentRef may name one).
    pub fn serves_port(&self, port: u16) -> bool {
        self.entries.iter().any(|e| e.port == 0 || e.port == port)
    }

    /// The rule for a request to service port `port`.
    pub fn find<B>(&self, req: &http::Request<B>, port: u16) -> Option<Found<'_>> {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        for e in &self.entries {
            if e.port != 0 && e.port != port {
                continue;
            }
            let m = &e.matcher;
            let prefix = match &m.path {
                PathMatch::Exact(p) if p == path => None,
                PathMatch::Prefix(p)
                    if p.is_empty()
                        || path == p
                        || path
                            .strip_prefix(p.as_str())
                            .is_some_and(|r| r.starts_with('/')) =>
                {
                    Some(p.as_str())
                }
                PathMatch::Regex(r) if r.is_match(path) => None,
                _ => continue,
            };
            if m.method
                .as_ref()
                .is_some_and(|method| method != req.method())
            {
                continue;
            }
            let headers_ok = m.headers.iter().all(|(n, v)| {
                req.headers()
                    .get_all(n)
                    .iter()
                    .any(|h| h.to_str().is_ok_and(|h| v.matches(h)))
            });
            if !headers_ok {
                continue;
            }
            let query_ok = m.query.iter().all(|(n, v)| {
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                    .any(|(k, val)| k == n && v.matches(val))
            });
            if !query_ok {
                continue;
            }
            return Some(Found {
                route: &e.route,
                rule: &e.rule,
                matched_prefix: prefix,
            });
        }
        None
    }
}

/// The path after a rewrite: the full path replaced, or the matched prefix.
pub fn rewrite_path(path: &str, modifier: &PathModifier, matched_prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::Full(p) => p.clone(),
        PathModifier::Prefix(replacement) => {
            let prefix = matched_prefix.unwrap_or("");
            let rest = path.strip_prefix(prefix).unwrap_or(path);
            let replacement = replacement.trim_end_matches('/');
            let joined = format!("{replacement}{rest}");
            if joined.is_empty() {
                "/".into()
            } else if joined.starts_with('/') {
                joined
            } else {
                format!("/{joined}")
            }
        }
    }
}

#[cfg(test)]
mod tests;
