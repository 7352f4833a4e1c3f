//! The monitoring port (plaintext HTTP/1.1): `/ready`, `/metrics`, and debug views a user can
//! read with curl: `/debug/status` (policy conditions), `/debug/config` (object counts and
//! rejected documents), `/debug/xds` (served resources per type).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
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

fn respond(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn json(value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

impl Monitor {
    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET {
            return respond(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
        }
        match req.uri().path() {
            "/ready" | "/healthz/ready" => {
                let missing = self.readiness.borrow().missing();
                if missing.is_empty() {
                    respond(StatusCode::OK, "text/plain", "ready\n")
                } else {
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {}\n", missing.join(", ")),
                    )
                }
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

/// Serves the monitoring port until the task is dropped.
pub async fn serve(listener: TcpListener, monitor: Arc<Monitor>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "monitoring accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let monitor = monitor.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let resp = monitor.handle(&req);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(error = %e, "monitoring connection ended with an error");
            }
        });
    }
}
