//! The L7 chain, assembled in one place. Each behaviour is one tower layer in its own module,
//! with its tests beside it; a request passes them top to bottom:
//!
//! | layer | module | does |
//! |---|---|---|
//! | `Telemetry` | `telemetry` | metrics and the access log of every answer |
//! | `Respond` | `respond` | turns every error below into its deliberate status |
//! | `Forwarding` | `headers` | `x-forwarded-for`, `x-forwarded-client-cert`, `x-request-id`, hop-by-hop |
//! | `Authorize` | `authz` | the destination's AuthorizationPolicies: 403 `RBAC: access denied` |
//! | `Route` | `route` | its HTTPRoutes: filters, redirects, the backend by weight, the timeout |
//! | `Balance` | `balance` | which endpoint, least request of two random choices |
//! | `Forward` | `forward` | sends it on a pooled upstream connection |
//!
//! The resilience layers (fault injection, rate limits, circuit breaking, retries, timeouts)
//! go between `Route` and `Balance`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};

use hyper::body::Incoming;
use mesh_core::identity::Identity;
use tower::util::BoxCloneService;
use tower::ServiceBuilder;

use crate::authz::Authorize;
use crate::balance::Balance;
use crate::detect::Detected;
use crate::forward::Forward;
use crate::headers::Forwarding;
use crate::respond::{Body, Respond};
use crate::route::Route;
use crate::state::{Destination, State};
use crate::telemetry::{Metrics, Telemetry};
use crate::upstream::Upstream;

pub type Request = http::Request<Incoming>;
pub type Response = http::Response<Body>;

/// What every request of one tunnelled connection shares: who sent it, from where, and what
/// protocol was detected. In each request's extensions.
#[derive(Clone, Debug)]
pub struct Downstream {
    /// The client pod's address (the HBONE connection's source).
    pub client: SocketAddr,
    /// Its verified identity.
    pub peer: Option<Identity>,
    /// The destination it dialled (the CONNECT authority): a service VIP or a pod, and port.
    pub destination: SocketAddr,
    pub protocol: Detected,
}

/// The endpoint a request went to; in the response's extensions (for telemetry).
#[derive(Clone, Debug)]
pub struct Chosen {
    /// The pod, `<namespace>/<name>` (access log).
    pub pod: String,
    /// Its workload's name (metrics).
    pub workload: String,
    pub address: SocketAddr,
}

impl Chosen {
    pub fn new(pod: &str, workload: &str, ip: IpAddr, port: u16) -> Self {
        Chosen {
            pod: pod.to_string(),
            workload: workload.to_string(),
            address: SocketAddr::new(ip, port),
        }
    }
}

pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// What the chain of one connection is built from.
pub struct Parts {
    pub state: Arc<RwLock<State>>,
    pub upstream: Arc<Upstream>,
    pub metrics: Arc<Metrics>,
    pub me: Arc<Identity>,
}

/// The chain for the requests of one connection tunnelled to `authority`, which resolved to
/// `destination` when the tunnel was accepted.
pub fn build(
    parts: &Parts,
    authority: SocketAddr,
    destination: &Destination,
) -> BoxCloneService<Request, Response, Infallible> {
    let svc = destination.service();
    let service = Arc::new((svc.hostname.clone(), svc.namespace.clone()));
    let stack = ServiceBuilder::new()
        .layer(Telemetry::layer(parts.metrics.clone(), service))
        .layer(Respond::layer())
        .layer(Forwarding::layer(parts.me.clone()))
        .layer(Authorize::layer(parts.state.clone(), authority))
        .layer(Route::layer(parts.state.clone()))
        .layer(Balance::layer())
        .service(Forward::new(parts.upstream.clone()));
    BoxCloneService::new(stack)
}
