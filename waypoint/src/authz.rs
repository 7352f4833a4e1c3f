//! L7 authorization: Istio's AuthorizationPolicy as a waypoint enforces it, and the layer that
//! applies it to every request.
//!
//! Order (Istio's): CUSTOM and DENY policies first, any match denies; AUDIT policies are logged;
//! then, if ALLOW policies apply, a request none of them matches is denied. Dry-run policies
//! (`istio.io/dry-run`) are evaluated and logged, never enforced. A policy matches when any of
//! its rules does; a rule when one of its `from`, one of its `to` and all of its `when` match;
//! a source or operation when every field it sets matches (`notX`: none of the values does).
//!
//! A connection the waypoint carries as TCP has no HTTP attributes. A rule that needs one
//! cannot match it in an ALLOW policy (it allows less than written), and matches it in a DENY
//! or CUSTOM policy (it denies more): never less safe than the policy says.
//!
//! A deny answers 403 `RBAC: access denied` (gRPC: PERMISSION_DENIED), logged with the policy
//! that denied.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::HeaderMap;
use mesh_core::identity::Identity;
use mesh_core::k8s::{parse_cidr, parse_port};
use mesh_core::proto::mesh::waypoint::v1 as pb;

use crate::respond::ProxyError;
use crate::route::Resolved;
use crate::stack::{Downstream, Request};
use crate::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// `*` alone: any non-empty value; a leading or trailing `*`: suffix or prefix; else exact.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
}

impl StrMatch {
    fn new(pattern: &str, lowercase: bool) -> StrMatch {
        let p = if lowercase {
            pattern.to_ascii_lowercase()
        } else {
            pattern.to_string()
        };
        if p == "*" {
            StrMatch::Presence
        } else if let Some(rest) = p.strip_prefix('*') {
            StrMatch::Suffix(rest.to_string())
        } else if let Some(rest) = p.strip_suffix('*') {
            StrMatch::Prefix(rest.to_string())
        } else {
            StrMatch::Exact(p)
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Suffix(s) => v.ends_with(s.as_str()),
            StrMatch::Presence => !v.is_empty(),
        }
    }
}

/// A path pattern: a string match, or a template of segments with `{*}` (one segment) and a
/// last `{**}` (any number of them).
#[derive(Clone, Debug, PartialEq, Eq)]
enum PathMatch {
    Str(StrMatch),
    Template(Vec<Segment>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

impl PathMatch {
    fn new(pattern: &str) -> Result<PathMatch, String> {
        if !pattern.contains('{') {
            return Ok(PathMatch::Str(StrMatch::new(pattern, false)));
        }
        let Some(rest) = pattern.strip_prefix('/') else {
            return Err(format!("path template {pattern:?} must start with /"));
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            segs.push(match *part {
                "{*}" => Segment::One,
                "{**}" if i == parts.len() - 1 => Segment::Rest,
                "{**}" => {
                    return Err(format!(
                        "path template {pattern:?}: {{**}} may only be the last segment"
                    ))
                }
                p if p.contains('{') || p.contains('}') || p.contains('*') => {
                    return Err(format!(
                        "path template {pattern:?}: {{*}} and {{**}} must be whole segments"
                    ))
                }
                p => Segment::Literal(p.to_string()),
            });
        }
        Ok(PathMatch::Template(segs))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(m) => m.matches(path),
            PathMatch::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                let mut i = 0;
                for seg in segs {
                    match seg {
                        // Zero or more segments after the slash before it: `/a/{**}` takes
                        // `/a/` and `/a/b/c`, not `/a`.
                        Segment::Rest => return i < parts.len(),
                        Segment::One => {
                            if parts.get(i).is_none_or(|p| p.is_empty()) {
                                return false;
                            }
                        }
                        Segment::Literal(l) => {
                            if parts.get(i) != Some(&l.as_str()) {
                                return false;
                            }
                        }
                    }
                    i += 1;
                }
                i == parts.len()
            }
        }
    }
}

/// Positive values (any must match, when there are some) and negative ones (none may).
#[derive(Clone, Debug)]
struct Field<T> {
    pos: Vec<T>,
    neg: Vec<T>,
}

impl<T> Field<T> {
    fn new<E>(
        pos: &[String],
        neg: &[String],
        f: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Field<T>, E> {
        Ok(Field {
            pos: pos.iter().map(|s| f(s)).collect::<Result<_, _>>()?,
            neg: neg.iter().map(|s| f(s)).collect::<Result<_, _>>()?,
        })
    }

    fn is_set(&self) -> bool {
        !self.pos.is_empty() || !self.neg.is_empty()
    }

    /// `test` says whether one value matches; `None` when the attribute is not available.
    fn check(&self, test: impl Fn(&T) -> Option<bool>, lenient: bool) -> bool {
        if !self.is_set() {
            return true;
        }
        let mut unknown = false;
        let mut any = |list: &[T]| {
            list.iter().any(|v| match test(v) {
                Some(b) => b,
                None => {
                    unknown = true;
                    false
                }
            })
        };
        let pos = self.pos.is_empty() || any(&self.pos);
        let neg = any(&self.neg);
        if unknown {
            return lenient;
        }
        pos && !neg
    }
}

type Cidr = (IpAddr, u8);

fn in_cidr(ip: IpAddr, (net, len): &Cidr) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(*n) & mask
        }
        _ => false,
    }
}

#[derive(Clone, Debug)]
struct Source {
    principals: Field<StrMatch>,
    request_principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    /// `<namespace>/<name>`.
    service_accounts: Field<(String, String)>,
    ip_blocks: Field<Cidr>,
    remote_ip_blocks: Field<Cidr>,
}

#[derive(Clone, Debug)]
struct Operation {
    hosts: Field<StrMatch>,
    ports: Field<u16>,
    methods: Field<StrMatch>,
    paths: Field<PathMatch>,
}

#[derive(Clone, Debug)]
enum Key {
    Header(http::HeaderName),
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    SourceNamespace,
    SourcePrincipal,
    /// `request.auth.*`: there is no JWT authentication at this waypoint, so never present.
    RequestAuth,
    /// `connection.sni`: HBONE carries no SNI of the client's.
    ConnectionSni,
}

#[derive(Clone, Debug)]
enum Values {
    Str(Field<StrMatch>),
    Ips(Field<Cidr>),
    Ports(Field<u16>),
}

#[derive(Clone, Debug)]
struct Cond {
    key: Key,
    values: Values,
}

#[derive(Clone, Debug)]
struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Cond>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub action: Action,
    pub dry_run: bool,
    rules: Vec<Rule>,
}

/// What a request offers to policy.
pub struct Attributes<'a> {
    pub peer: Option<&'a Identity>,
    /// The connection's source (the client pod).
    pub source_ip: IpAddr,
    /// The original client: the connection's source (no proxy in front is trusted).
    pub remote_ip: IpAddr,
    /// The destination the client dialled (service VIP or pod) and its port.
    pub destination: SocketAddr,
    /// `None` for a connection carried as TCP.
    pub http: Option<HttpAttributes<'a>>,
}

pub struct HttpAttributes<'a> {
    pub host: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

fn compile_source(s: &pb::PolicySource) -> Result<Source, String> {
    let str_field = |pos: &[String], neg: &[String]| {
        Field::new(pos, neg, |v| Ok::<_, String>(StrMatch::new(v, false)))
    };
    // Istio compares principals without `spiffe://`, and accepts them written with it.
    let principal = |v: &str| {
        Ok::<_, String>(StrMatch::new(
            v.strip_prefix("spiffe://").unwrap_or(v),
            false,
        ))
    };
    Ok(Source {
        principals: Field::new(&s.principals, &s.not_principals, principal)?,
        request_principals: str_field(&s.request_principals, &s.not_request_principals)?,
        namespaces: str_field(&s.namespaces, &s.not_namespaces)?,
        service_accounts: Field::new(&s.service_accounts, &s.not_service_accounts, |v| {
            v.split_once('/')
                .map(|(n, a)| (n.to_string(), a.to_string()))
                .ok_or_else(|| format!("service account {v:?} is not <namespace>/<name>"))
        })?,
        ip_blocks: Field::new(&s.ip_blocks, &s.not_ip_blocks, parse_cidr)?,
        remote_ip_blocks: Field::new(&s.remote_ip_blocks, &s.not_remote_ip_blocks, parse_cidr)?,
    })
}

fn compile_operation(o: &pb::PolicyOperation) -> Result<Operation, String> {
    Ok(Operation {
        hosts: Field::new(&o.hosts, &o.not_hosts, |v| {
            Ok::<_, String>(StrMatch::new(v, true))
        })?,
        ports: Field::new(&o.ports, &o.not_ports, parse_port)?,
        methods: Field::new(&o.methods, &o.not_methods, |v| {
            Ok::<_, String>(StrMatch::new(v, false))
        })?,
        paths: Field::new(&o.paths, &o.not_paths, PathMatch::new)?,
    })
}

fn compile_condition(c: &pb::PolicyCondition) -> Result<Cond, String> {
    let strs = || {
        Field::new(&c.values, &c.not_values, |v| {
            Ok::<_, String>(StrMatch::new(v, false))
        })
        .map(Values::Str)
    };
    let ips = || Field::new(&c.values, &c.not_values, parse_cidr).map(Values::Ips);
    let (key, values) = match c.key.as_str() {
        "source.ip" => (Key::SourceIp, ips()?),
        "remote.ip" => (Key::RemoteIp, ips()?),
        "destination.ip" => (Key::DestinationIp, ips()?),
        "destination.port" => (
            Key::DestinationPort,
            Values::Ports(Field::new(&c.values, &c.not_values, parse_port)?),
        ),
        "source.namespace" => (Key::SourceNamespace, strs()?),
        "source.principal" => (
            Key::SourcePrincipal,
            Values::Str(Field::new(&c.values, &c.not_values, |v| {
                Ok::<_, String>(StrMatch::new(
                    v.strip_prefix("spiffe://").unwrap_or(v),
                    false,
                ))
            })?),
        ),
        "connection.sni" => (Key::ConnectionSni, strs()?),
        k if k.starts_with("request.auth.") => (Key::RequestAuth, strs()?),
        k => {
            let name = k
                .strip_prefix("request.headers[")
                .and_then(|n| n.strip_suffix(']'))
                .ok_or_else(|| format!("condition key {k:?} is not supported"))?;
            let name = http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|_| format!("condition key {k:?} names no valid header"))?;
            (Key::Header(name), strs()?)
        }
    };
    Ok(Cond { key, values })
}

/// Compiles one policy; an error names the rule.
pub fn compile(p: &pb::Policy) -> Result<Policy, String> {
    let action = match pb::PolicyAction::try_from(p.action) {
        Ok(pb::PolicyAction::Allow) => Action::Allow,
        Ok(pb::PolicyAction::Deny) => Action::Deny,
        Ok(pb::PolicyAction::Audit) => Action::Audit,
        Ok(pb::PolicyAction::Custom) => Action::Custom,
        Err(_) => return Err(format!("policy {}: unknown action {}", p.name, p.action)),
    };
    let mut rules = Vec::with_capacity(p.rules.len());
    for (i, r) in p.rules.iter().enumerate() {
        let at = |e: String| format!("policy {} rules[{i}]: {e}", p.name);
        rules.push(Rule {
            from: r
                .from
                .iter()
                .map(compile_source)
                .collect::<Result<_, _>>()
                .map_err(at)?,
            to: r
                .to
                .iter()
                .map(compile_operation)
                .collect::<Result<_, _>>()
                .map_err(at)?,
            when: r
                .when
                .iter()
                .map(compile_condition)
                .collect::<Result<_, _>>()
                .map_err(at)?,
        });
    }
    Ok(Policy {
        name: p.name.clone(),
        action,
        dry_run: p.dry_run,
        rules,
    })
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // `[v6]` or `[v6]:port`; without the closing bracket, the whole text.
        return rest.find(']').map_or(host, |i| &host[..i + 2]);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

impl Source {
    fn matches(&self, a: &Attributes, lenient: bool) -> bool {
        let principal = a.peer.map(|p| p.principal()).unwrap_or_default();
        let namespace = a.peer.map(|p| p.namespace.as_str()).unwrap_or("");
        self.principals.check(|m| Some(m.matches(&principal)), lenient)
            // No JWT authentication here: the request principal is always empty.
            && self.request_principals.check(|m| Some(m.matches("")), lenient)
            && self.namespaces.check(|m| Some(m.matches(namespace)), lenient)
            && self.service_accounts.check(
                |(ns, sa)| {
                    Some(a.peer.is_some_and(|p| &p.namespace == ns && &p.service_account == sa))
                },
                lenient,
            )
            && self.ip_blocks.check(|c| Some(in_cidr(a.source_ip, c)), lenient)
            && self.remote_ip_blocks.check(|c| Some(in_cidr(a.remote_ip, c)), lenient)
    }
}

impl Operation {
    fn matches(&self, a: &Attributes, lenient: bool) -> bool {
        let http = a.http.as_ref();
        let host = http.map(|h| h.host.to_ascii_lowercase());
        self.hosts.check(
            |m| {
                let host = host.as_deref()?;
                Some(m.matches(host) || m.matches(host_without_port(host)))
            },
            lenient,
        ) && self
            .ports
            .check(|p| Some(*p == a.destination.port()), lenient)
            && self
                .methods
                .check(|m| Some(m.matches(http?.method)), lenient)
            && self.paths.check(|m| Some(m.matches(http?.path)), lenient)
    }
}

impl Cond {
    fn matches(&self, a: &Attributes, lenient: bool) -> bool {
        let principal = a.peer.map(|p| p.principal());
        match (&self.key, &self.values) {
            (Key::Header(name), Values::Str(f)) => f.check(
                |m| {
                    let h = a.http.as_ref()?;
                    Some(
                        h.headers
                            .get_all(name)
                            .iter()
                            .any(|v| v.to_str().is_ok_and(|v| m.matches(v))),
                    )
                },
                lenient,
            ),
            (Key::SourceNamespace, Values::Str(f)) => f.check(
                |m| Some(m.matches(a.peer.map(|p| p.namespace.as_str()).unwrap_or(""))),
                lenient,
            ),
            (Key::SourcePrincipal, Values::Str(f)) => f.check(
                |m| Some(m.matches(principal.as_deref().unwrap_or(""))),
                lenient,
            ),
            (Key::RequestAuth | Key::ConnectionSni, Values::Str(f)) => {
                f.check(|m| Some(m.matches("")), lenient)
            }
            (Key::SourceIp, Values::Ips(f)) => f.check(|c| Some(in_cidr(a.source_ip, c)), lenient),
            (Key::RemoteIp, Values::Ips(f)) => f.check(|c| Some(in_cidr(a.remote_ip, c)), lenient),
            (Key::DestinationIp, Values::Ips(f)) => {
                f.check(|c| Some(in_cidr(a.destination.ip(), c)), lenient)
            }
            (Key::DestinationPort, Values::Ports(f)) => {
                f.check(|p| Some(*p == a.destination.port()), lenient)
            }
            _ => lenient,
        }
    }
}

impl Rule {
    fn matches(&self, a: &Attributes, lenient: bool) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(a, lenient)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(a, lenient)))
            && self.when.iter().all(|c| c.matches(a, lenient))
    }
}

impl Policy {
    /// Whether any rule matches (a policy without rules matches nothing).
    pub fn matches(&self, a: &Attributes) -> bool {
        let lenient = self.action != Action::Allow;
        self.rules.iter().any(|r| r.matches(a, lenient))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Denied by this policy, or (`None`) because ALLOW policies exist and none allowed.
    Deny(Option<String>),
}

/// Istio's evaluation order over the policies of one destination.
pub fn evaluate(policies: &[Policy], a: &Attributes) -> Decision {
    for p in policies
        .iter()
        .filter(|p| matches!(p.action, Action::Deny | Action::Custom))
    {
        if p.matches(a) {
            if p.dry_run {
                tracing::info!(policy = %p.name, "dry-run policy would deny this request");
            } else {
                return Decision::Deny(Some(p.name.clone()));
            }
        }
    }
    for p in policies.iter().filter(|p| p.action == Action::Audit) {
        if p.matches(a) {
            tracing::info!(policy = %p.name, "audit policy matched");
        }
    }
    let mut enforced = policies
        .iter()
        .filter(|p| p.action == Action::Allow && !p.dry_run)
        .peekable();
    for p in policies
        .iter()
        .filter(|p| p.action == Action::Allow && p.dry_run)
    {
        tracing::info!(policy = %p.name, allowed = p.matches(a), "dry-run ALLOW policy evaluated");
    }
    if enforced.peek().is_none() {
        return Decision::Allow;
    }
    if enforced.any(|p| p.matches(a)) {
        Decision::Allow
    } else {
        Decision::Deny(None)
    }
}

/// The original client. No proxy in front of the waypoint is trusted (Istio's default,
/// `numTrustedProxies: 0`): a client's own `x-forwarded-for` says nothing, so it is the
/// connection's source.
fn remote_ip(_headers: &HeaderMap, source: IpAddr) -> IpAddr {
    source
}

/// The request's attributes, from the request and its connection.
pub fn request_attributes<'a>(req: &'a Request, down: &'a Downstream) -> Attributes<'a> {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    Attributes {
        peer: down.peer.as_ref(),
        source_ip: down.client.ip(),
        remote_ip: remote_ip(req.headers(), down.client.ip()),
        destination: down.destination,
        http: Some(HttpAttributes {
            host,
            method: req.method().as_str(),
            path: req.uri().path(),
            headers: req.headers(),
        }),
    }
}

/// The layer: resolves the destination the client addressed from the current state (a
/// service that left this waypoint gets `UH`), evaluates its policies (a deny never reaches
/// routing, so no route, redirect or backend can bypass them), and hands the destination on.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    state: Arc<std::sync::RwLock<State>>,
    /// The connection's CONNECT authority.
    authority: SocketAddr,
}

impl<S> Authorize<S> {
    pub fn layer(
        state: Arc<std::sync::RwLock<State>>,
        authority: SocketAddr,
    ) -> impl tower::Layer<S, Service = Authorize<S>> + Clone {
        tower::layer::layer_fn(move |inner| Authorize {
            inner,
            state: state.clone(),
            authority,
        })
    }
}

impl<S> tower::Service<Request> for Authorize<S>
where
    S: tower::Service<Request, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let destination = self
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .destination(self.authority);
        let Some(destination) = destination else {
            return Box::pin(async { Err(ProxyError::NoHealthyUpstream) });
        };
        let service = destination.service();
        if !service.policies.is_empty() {
            let Some(down) = req.extensions().get::<Arc<Downstream>>().cloned() else {
                // Fail closed: no connection facts, no decision.
                return Box::pin(async { Err(ProxyError::Denied(None)) });
            };
            if let Decision::Deny(policy) =
                evaluate(&service.policies, &request_attributes(&req, &down))
            {
                return Box::pin(async move { Err(ProxyError::Denied(policy)) });
            }
        }
        req.extensions_mut().insert(Resolved(destination));
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests;
