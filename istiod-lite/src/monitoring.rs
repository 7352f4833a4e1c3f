//! The monitoring port (plaintext HTTP/1.1): `/ready`, `/metrics`, and debug views a user can
//! read with curl: `/debug/status` (policy conditions), `/debug/config` (object counts and
//! rejected documents), `/debug/xds` (served resources per type).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use mesh_core::admin_port::{self, json, respond, Body};
use mesh_core::k8s::Kind;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::status::StatusBook;
use crate::store::Store;
use crate::xds::XdsState;

/// What readiness waits for.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    pub config_loaded: bool,
    pub xds_serving: bool,
}

impl Readiness {
    pub fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.config_loaded {
            m.push("config directory not loaded");
        }
        if !self.xds_serving {
            m.push("xDS server not listening");
        }
        m
    }
}

pub struct Monitor {
    pub metrics: Arc<Metrics>,
    pub store: Arc<Store>,
    pub status: Arc<Mutex<StatusBook>>,
    pub xds: watch::Receiver<Arc<XdsState>>,
    pub readiness: watch::Receiver<Readiness>,
}

impl Monitor {
    fn handle(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Body> {
        if req.method() != Method::GET {
            return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
        }
        if req.uri().path().starts_with("/debug") && !debug_allowed(peer) {
            return respond(
                StatusCode::FORBIDDEN,
                "text/plain",
                "the /debug views are served to local clients only (run curl on the control plane's host, or kubectl port-forward)\n",
            );
        }
        match req.uri().path() {
            "/ready" | "/healthz/ready" => {
                admin_port::readiness(&self.readiness.borrow().missing())
            }
            "/metrics" | "/stats/prometheus" => {
                let snapshot = self.store.snapshot();
                for kind in Kind::ALL {
                    self.metrics
                        .config_objects
                        .with_label_values(&[kind.as_str()])
                        .set(snapshot.count(kind) as i64);
                }
                self.metrics
                    .config_rejected
                    .set(self.store.rejections().len() as i64);
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.metrics.render(),
                )
            }
            "/debug/status" => {
                let all = self.status.lock().unwrap_or_else(|e| e.into_inner()).all();
                json(&all)
            }
            "/debug/config" => {
                let snapshot = self.store.snapshot();
                let counts: std::collections::BTreeMap<&str, usize> = Kind::ALL
                    .iter()
                    .map(|k| (k.as_str(), snapshot.count(*k)))
                    .collect();
                json(&serde_json::json!({
                    "generation": snapshot.generation,
                    "objects": counts,
                    "rejected": self.store.rejections(),
                }))
            }
            "/debug/xds" => {
                let state = self.xds.borrow().clone();
                let types: std::collections::BTreeMap<&str, usize> = state
                    .sets
                    .iter()
                    .map(|(t, s)| (*t, s.entries.len()))
                    .collect();
                json(&serde_json::json!({
                    "generation": state.generation,
                    "resources": types,
                    "clients": self.metrics.xds_clients.get(),
                }))
            }
            _ => respond(
                StatusCode::NOT_FOUND,
                "text/plain",
                "not found; try /ready, /metrics, /debug/status, /debug/config, /debug/xds\n",
            ),
        }
    }
}

/// The debug views show every object, status and rejected document: the monitoring port
/// serves them only to clients on this host. `/ready` and `/metrics` stay open to probes and
/// scrapers from anywhere.
fn debug_allowed(peer: SocketAddr) -> bool {
    let ip = match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6)),
        ip => ip,
    };
    ip.is_loopback()
}

/// Serves the monitoring port until the task is dropped.
pub async fn serve(listener: TcpListener, monitor: Arc<Monitor>) {
    admin_port::serve(
        listener,
        "monitoring",
        move |req: &Request<Incoming>, peer| monitor.handle(req, peer),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_views_are_for_local_clients_only() {
        for local in ["127.0.0.1:5000", "[::1]:5000", "[::ffff:127.0.0.1]:5000"] {
            assert!(debug_allowed(local.parse().unwrap()), "{local}");
        }
        for remote in ["10.0.0.7:5000", "[fd00::7]:5000", "[::ffff:10.0.0.7]:5000"] {
            assert!(!debug_allowed(remote.parse().unwrap()), "{remote}");
        }
    }
}
