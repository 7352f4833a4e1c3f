//! The routing layer: which backend a request goes to. Today that is the destination the
//! client's ztunnel tunnelled to: the service and port of its VIP, or the one pod it addressed,
//! looked up in the current state for every request, so a long-lived connection follows
//! endpoint changes.
//! HTTPRoute, GRPCRoute and VirtualService matching (paths, headers, weights) replace this
//! choice here, and answer `404` with flag `NR` when nothing matches.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use crate::respond::ProxyError;
use crate::stack::Request;
use crate::state::{Destination, Endpoint, Service, State};

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
    /// The CONNECT authority of the connection.
    authority: SocketAddr,
}

impl<S> Route<S> {
    pub fn layer(
        state: Arc<RwLock<State>>,
        authority: SocketAddr,
    ) -> impl tower::Layer<S, Service = Route<S>> + Clone {
        tower::layer::layer_fn(move |inner| Route {
            inner,
            state: state.clone(),
            authority,
        })
    }
}

impl<S> tower::Service<Request> for Route<S>
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
        // The service may have left this waypoint since the connection was opened.
        let Some(destination) = destination else {
            return Box::pin(async { Err(ProxyError::NoHealthyUpstream) });
        };
        req.extensions_mut().insert(backend(&destination));
        Box::pin(self.inner.call(req))
    }
}
