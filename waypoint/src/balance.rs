//! Endpoint choice: least request with the power of two choices (two endpoints drawn at random,
//! the one with fewer requests in flight wins), Envoy's and Linkerd's default. Only endpoints
//! that are ready and serve the port are candidates. An [`InFlight`] mark counts a request
//! against its endpoint until the response body is done.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use rand::Rng;

use crate::body::Hold;
use crate::respond::ProxyError;
use crate::route::Backend;
use crate::stack::{Chosen, Request, Response};
use crate::state::{Endpoint, ServicePort};

/// One request counted against an endpoint; uncounted on drop.
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    pub fn start(endpoint: &Endpoint) -> InFlight {
        endpoint.active.fetch_add(1, Ordering::Relaxed);
        InFlight(endpoint.active.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn usable(e: &Endpoint, port: &ServicePort) -> bool {
    e.healthy && e.target_port(port).is_some()
}

/// Picks an endpoint for one request or connection to `port`.
pub fn pick<R: Rng>(
    endpoints: &[Arc<Endpoint>],
    port: &ServicePort,
    rng: &mut R,
) -> Option<Arc<Endpoint>> {
    let candidates: Vec<&Arc<Endpoint>> = endpoints.iter().filter(|e| usable(e, port)).collect();
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0].clone()),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            Some(if b.in_flight() < a.in_flight() { b } else { a }.clone())
        }
    }
}

/// The endpoint and port the balancer chose, in the request's extensions, for the forwarder.
#[derive(Clone, Debug)]
pub struct Picked {
    pub endpoint: Arc<Endpoint>,
    pub port: u16,
}

/// Resolves a [`Backend`] to one endpoint.
pub fn choose(backend: &Backend) -> Result<Picked, ProxyError> {
    match backend {
        Backend::Pod { endpoint, port, .. } => Ok(Picked {
            endpoint: endpoint.clone(),
            port: *port,
        }),
        Backend::Service { service, port } => {
            let sp = service.port(*port).ok_or(ProxyError::NoHealthyUpstream)?;
            let endpoint = pick(&service.endpoints, sp, &mut rand::rng())
                .ok_or(ProxyError::NoHealthyUpstream)?;
            let port = endpoint
                .target_port(sp)
                .ok_or(ProxyError::NoHealthyUpstream)?;
            Ok(Picked { endpoint, port })
        }
    }
}

/// The layer: picks the endpoint, counts the request against it until its response body is
/// done, and names it in the response.
#[derive(Clone)]
pub struct Balance<S> {
    inner: S,
}

impl<S> Balance<S> {
    pub fn layer() -> impl tower::Layer<S, Service = Balance<S>> + Clone {
        tower::layer::layer_fn(|inner| Balance { inner })
    }
}

impl<S> tower::Service<Request> for Balance<S>
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
        let picked = match req.extensions().get::<Backend>() {
            Some(b) => choose(b),
            None => Err(ProxyError::NoHealthyUpstream),
        };
        let picked = match picked {
            Ok(p) => p,
            Err(e) => return Box::pin(async move { Err(e) }),
        };
        let in_flight = InFlight::start(&picked.endpoint);
        let chosen = Chosen::new(
            &picked.endpoint.workload,
            &picked.endpoint.workload_name,
            picked.endpoint.address,
            picked.port,
        );
        req.extensions_mut().insert(picked);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let mut resp =
                resp.map(|b| http_body_util::BodyExt::boxed_unsync(Hold::new(b).keep(in_flight)));
            resp.extensions_mut().insert(chosen);
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Protocol, Tunnel};
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn endpoint(n: u8, healthy: bool) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            workload: format!("demo/web-{n}"),
            address: std::net::IpAddr::from([10, 0, 0, n]),
            identity: None,
            ports: HashMap::new(),
            tunnel: Tunnel::Plaintext,
            healthy,
            node: String::new(),
            workload_name: String::new(),
            active: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn port() -> ServicePort {
        ServicePort {
            port: 80,
            target_port: 8080,
            name: "http".into(),
            protocol: Protocol::Http1,
        }
    }

    #[test]
    fn never_picks_an_unhealthy_endpoint_and_none_means_none() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let eps = vec![endpoint(1, false), endpoint(2, true)];
        for _ in 0..100 {
            assert_eq!(
                pick(&eps, &port(), &mut rng).unwrap().workload,
                "demo/web-2"
            );
        }
        assert!(pick(&[endpoint(1, false)], &port(), &mut rng).is_none());
        let mut no_port = port();
        no_port.target_port = 0;
        assert!(
            pick(&[endpoint(3, true)], &no_port, &mut rng).is_none(),
            "a named port this pod lacks"
        );
    }

    #[test]
    fn a_busy_endpoint_gets_less() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let eps = vec![endpoint(1, true), endpoint(2, true), endpoint(3, true)];
        // Endpoint 1 holds 5 requests; 2 and 3 are idle.
        let busy: Vec<InFlight> = (0..5).map(|_| InFlight::start(&eps[0])).collect();
        let mut counts = [0usize; 3];
        for _ in 0..3000 {
            let e = pick(&eps, &port(), &mut rng).unwrap();
            counts[eps.iter().position(|x| Arc::ptr_eq(x, &e)).unwrap()] += 1;
        }
        // With two choices the busy one is only picked when both draws are it: never, as the
        // draws are distinct.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1200 && counts[2] > 1200, "{counts:?}");
        drop(busy);
        assert_eq!(eps[0].in_flight(), 0);
    }
}
