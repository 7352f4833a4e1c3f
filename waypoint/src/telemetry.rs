//! Per-request telemetry, the outermost layer: Istio's request metrics with the waypoint as
//! reporter, and one access-log line per request (target `access`) with the response flags
//! that say which layer answered.
//!
//! Metric names and labels are Istio's (`istio_requests_total`,
//! `istio_request_duration_milliseconds`), so existing dashboards read them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::respond::Flags;
use crate::stack::{Chosen, Downstream, Request, Response};

const REQUEST_LABELS: [&str; 10] = [
    "reporter",
    "source_principal",
    "source_workload_namespace",
    "destination_service",
    "destination_service_namespace",
    "destination_workload",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
];

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    pub connections: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("istio_requests_total", "Requests the waypoint handled"),
            &REQUEST_LABELS,
        )
        .expect("metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "istio_request_duration_milliseconds",
                "Time from the request's headers to the response's headers, in milliseconds",
            )
            .buckets(vec![
                0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0,
                10000.0,
            ]),
            &["reporter", "destination_service", "response_code"],
        )
        .expect("metric definition");
        let connections = IntGaugeVec::new(
            Opts::new(
                "waypoint_downstream_connections",
                "Tunnelled connections being served, by detected protocol",
            ),
            &["protocol"],
        )
        .expect("metric definition");
        for m in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(connections.clone()),
        ] {
            registry.register(m).expect("metric registration");
        }
        Arc::new(Metrics {
            registry,
            requests,
            duration,
            connections,
        })
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus::TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out);
        out
    }
}

/// The layer.
#[derive(Clone)]
pub struct Telemetry<S> {
    inner: S,
    metrics: Arc<Metrics>,
    /// The destination service's hostname and namespace.
    service: Arc<(String, String)>,
}

impl<S> Telemetry<S> {
    pub fn layer(
        metrics: Arc<Metrics>,
        service: Arc<(String, String)>,
    ) -> impl tower::Layer<S, Service = Telemetry<S>> + Clone {
        tower::layer::layer_fn(move |inner| Telemetry {
            inner,
            metrics: metrics.clone(),
            service: service.clone(),
        })
    }
}

impl<S> tower::Service<Request> for Telemetry<S>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let version = req.version();
        let down = req.extensions().get::<Arc<Downstream>>().cloned();
        let request_id = req
            .headers()
            .get(crate::headers::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let trace = crate::headers::TraceSlot::default();
        let mut req = req;
        req.extensions_mut().insert(trace.clone());
        let grpc = crate::stack::is_grpc(&req);
        let (metrics, service) = (self.metrics.clone(), self.service.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let ms = start.elapsed().as_secs_f64() * 1000.0;
            let flags = resp
                .extensions()
                .get::<Flags>()
                .copied()
                .unwrap_or(Flags::NONE);
            let chosen = resp.extensions().get::<Chosen>().cloned();
            let code = resp.status().as_u16().to_string();
            let grpc_status = if grpc {
                resp.headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_string()
            } else {
                "-".to_string()
            };
            let principal = down
                .as_ref()
                .and_then(|d| d.peer.as_ref())
                .map(|p| p.to_string())
                .unwrap_or_else(|| "unknown".into());
            let source_ns = down
                .as_ref()
                .and_then(|d| d.peer.as_ref())
                .map(|p| p.namespace.clone())
                .unwrap_or_else(|| "unknown".into());
            let workload = chosen
                .as_ref()
                .map(|c| c.workload.as_str())
                .unwrap_or("unknown");
            let protocol = if grpc {
                "grpc"
            } else if version == http::Version::HTTP_2 {
                "http2"
            } else {
                "http"
            };
            metrics
                .requests
                .with_label_values(&[
                    "waypoint",
                    &principal,
                    &source_ns,
                    &service.0,
                    &service.1,
                    workload,
                    protocol,
                    &code,
                    &grpc_status,
                    flags.0,
                ])
                .inc();
            metrics
                .duration
                .with_label_values(&["waypoint", &service.0, &code])
                .observe(ms);
            tracing::info!(
                target: "access",
                method = %method,
                path = %path,
                protocol,
                response_code = %code,
                grpc_status = %grpc_status,
                response_flags = flags.0,
                duration_ms = format_args!("{ms:.2}"),
                src = %down.as_ref().map(|d| d.client.to_string()).unwrap_or_default(),
                src_identity = %principal,
                dst_service = %service.0,
                upstream = %chosen.as_ref().map(|c| c.address.to_string()).unwrap_or_else(|| "-".into()),
                upstream_pod = chosen.as_ref().map(|c| c.pod.as_str()).unwrap_or("-"),
                request_id = request_id.as_deref().unwrap_or("-"),
                trace_id = trace.0.get().map(String::as_str).unwrap_or("-"),
                "request"
            );
            Ok(resp)
        })
    }
}
