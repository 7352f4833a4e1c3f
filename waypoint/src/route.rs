//! The routing layer: which backend a request goes to. A request to a service with HTTPRoutes
//! takes the rule of the most specific match (`route_table`), its filters (header changes,
//! rewrites, redirects) and a backend drawn by weight; a request no route matches is answered
//! 404 with flag `NR`; a backendRef that did not resolve, 500. A service without routes, and a
//! request addressed to one pod, go where the client sent them. `timeouts.request` bounds the
//! wait for the response's headers: 504 `upstream request timeout`, flag `UT`.
//!
//! The destination was resolved (and authorized) by the layer above, from the current state,
//! so a long-lived connection follows every route and endpoint change.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderValue, StatusCode};
use rand::Rng;

use crate::respond::{full, Flags, ProxyError};
use crate::route_table::{rewrite_path, Filter, HeaderModifier, PathModifier};
use crate::stack::{Request, Response};
use crate::state::{Destination, Endpoint, Service, State};

/// The destination the client addressed, resolved from the current state for this request
/// (in its extensions).
#[derive(Clone, Debug)]
pub struct Resolved(pub Destination);

/// Where the request goes, in its extensions, for the balancer.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A port of a service: the balancer picks an endpoint.
    Service { service: Arc<Service>, port: u16 },
    /// One pod (of `service`), on a port of its own.
    Pod {
        service: Arc<Service>,
        endpoint: Arc<Endpoint>,
        port: u16,
    },
}

/// Where a request to `destination` goes when no route applies.
pub fn backend(destination: &Destination) -> Backend {
    match destination {
        Destination::Service { service, port } => Backend::Service {
            service: service.clone(),
            port: *port,
        },
        Destination::Workload {
            service,
            endpoint,
            port,
        } => Backend::Pod {
            service: service.clone(),
            endpoint: endpoint.clone(),
            port: *port,
        },
    }
}

#[derive(Clone)]
pub struct Route<S> {
    inner: S,
    state: Arc<RwLock<State>>,
}

impl<S> Route<S> {
    pub fn layer(state: Arc<RwLock<State>>) -> impl tower::Layer<S, Service = Route<S>> + Clone {
        tower::layer::layer_fn(move |inner| Route {
            inner,
            state: state.clone(),
        })
    }
}

fn host_of(req: &Request) -> String {
    req.uri()
        .authority()
        .map(|a| a.host().to_string())
        .or_else(|| {
            req.headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string())
        })
        .unwrap_or_default()
}

/// The redirect answer: `Location` built from the request and the filter.
#[allow(clippy::too_many_arguments)]
fn redirect(
    req: &Request,
    scheme: &Option<String>,
    hostname: &Option<String>,
    path: &Option<PathModifier>,
    port: Option<u16>,
    status: StatusCode,
    matched_prefix: Option<&str>,
    service_port: u16,
) -> Response {
    // Gateway API: without a scheme or a port, the port is the one the request came to.
    let port = match (scheme, port) {
        (None, None) => Some(service_port),
        _ => port,
    };
    let scheme = scheme.clone().unwrap_or_else(|| "http".into());
    let host = hostname.clone().unwrap_or_else(|| host_of(req));
    let default_port = if scheme == "https" { 443 } else { 80 };
    let port = port
        .filter(|p| *p != default_port)
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    let p = match path {
        Some(m) => rewrite_path(req.uri().path(), m, matched_prefix),
        None => req.uri().path().to_string(),
    };
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let location = format!("{scheme}://{host}{port}{p}{query}");
    let mut resp = Response::new(full(""));
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp.extensions_mut().insert(Flags::NONE);
    resp
}

/// Rewrites the request's host and path.
fn rewrite(
    req: &mut Request,
    hostname: &Option<HeaderValue>,
    path: &Option<PathModifier>,
    prefix: Option<&str>,
) {
    let mut parts = req.uri().clone().into_parts();
    if let Some(h) = hostname {
        req.headers_mut().insert(http::header::HOST, h.clone());
        if parts.authority.is_some() {
            parts.authority = h.to_str().ok().and_then(|h| h.parse::<Authority>().ok());
        }
    }
    if let Some(m) = path {
        let p = rewrite_path(req.uri().path(), m, prefix);
        let pq = match req.uri().query() {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        parts.path_and_query = pq.parse::<PathAndQuery>().ok();
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
}

/// The backend and what to do to the response, for a request to a service with routes.
type Routed = (Backend, Vec<HeaderModifier>, Option<std::time::Duration>);

fn route(
    state: &RwLock<State>,
    service: &Arc<Service>,
    port: u16,
    req: &mut Request,
) -> Result<Result<Routed, Response>, ProxyError> {
    let Some(found) = service.routes.find(req, port) else {
        return Err(ProxyError::NoRoute);
    };
    let rule = found.rule.clone();
    let prefix = found.matched_prefix.map(str::to_string);
    let mut response_filters = Vec::new();
    for f in &rule.filters {
        match f {
            Filter::Redirect {
                scheme,
                hostname,
                path,
                port: to_port,
                status,
            } => {
                return Ok(Err(redirect(
                    req,
                    scheme,
                    hostname,
                    path,
                    *to_port,
                    *status,
                    prefix.as_deref(),
                    port,
                )));
            }
            Filter::RequestHeaders(m) => m.apply(req.headers_mut()),
            Filter::ResponseHeaders(m) => response_filters.push(m.clone()),
            Filter::Rewrite { hostname, path } => rewrite(req, hostname, path, prefix.as_deref()),
        }
    }
    let chosen = rule
        .backend(|total| rand::rng().random_range(0..total))
        .ok_or(ProxyError::InvalidBackend(
            "every backend of the rule has weight 0".into(),
        ))?;
    let Some(key) = &chosen.service else {
        return Err(ProxyError::InvalidBackend(format!(
            "route {}: a backendRef does not resolve",
            found.route
        )));
    };
    let Some(backend_service) = state.read().unwrap_or_else(|e| e.into_inner()).service(key) else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    for f in &chosen.filters {
        match f {
            Filter::RequestHeaders(m) => m.apply(req.headers_mut()),
            Filter::ResponseHeaders(m) => response_filters.push(m.clone()),
            _ => {}
        }
    }
    Ok(Ok((
        Backend::Service {
            service: backend_service,
            port: chosen.port,
        },
        response_filters,
        rule.timeout,
    )))
}

impl<S> tower::Service<Request> for Route<S>
where
    S: tower::Service<Request, Response = Response, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let Some(Resolved(destination)) = req.extensions().get::<Resolved>().cloned() else {
            return Box::pin(async { Err(ProxyError::NoHealthyUpstream) });
        };
        let routed = match &destination {
            Destination::Service { service, port } if service.routes.serves_port(*port) => {
                match route(&self.state, service, *port, &mut req) {
                    Ok(Ok(r)) => r,
                    Ok(Err(answer)) => return Box::pin(async move { Ok(answer) }),
                    Err(e) => return Box::pin(async move { Err(e) }),
                }
            }
            d => (backend(d), Vec::new(), None),
        };
        let (target, response_filters, timeout) = routed;
        req.extensions_mut().insert(target);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = match timeout {
                Some(t) => tokio::time::timeout(t, fut)
                    .await
                    .map_err(|_| ProxyError::Timeout)??,
                None => fut.await?,
            };
            for m in &response_filters {
                m.apply(resp.headers_mut());
            }
            Ok(resp)
        })
    }
}
