//! The listener: accepts TCP connections, lets hyper-util's auto builder speak HTTP/1.1 or
//! prior-knowledge h2c on each (it reads the HTTP/2 preface to tell), sends each request to the
//! gRPC or the HTTP echo, writes the access log line, and drains connections on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::response::{Answer, ResponseBody};
use crate::{grpc, http};

/// Pause after a failed accept: the usual cause is running out of file descriptors, and retrying
/// at once would spin a core until one frees up.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `listener` until `shutdown` completes, then stops accepting, lets in-flight requests
/// finish for up to the configured drain timeout, and returns.
///
/// The caller binds the listener, so it knows the port (an ephemeral one in tests) before any
/// request can arrive, and readiness needs no polling.
pub async fn serve(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) {
    let config = Arc::new(config);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer lets hyper enforce its default HTTP/1 header read timeout against slow clients.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small request/response exchanges are what this server does; Nagle would only add
        // latency to every benchmark number.
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "setting TCP_NODELAY failed");
        }
        let config = Arc::clone(&config);
        let service = service_fn(move |request| {
            let config = Arc::clone(&config);
            async move { Ok::<_, Infallible>(route(request, peer, &config).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Clients resetting connections is routine (benchmarks end that way), hence debug.
            if let Err(e) = connection.await {
                debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    info!(
        connections = graceful.count(),
        "shutting down: no longer accepting, draining connections"
    );
    if tokio::time::timeout(config.drain_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            drain_timeout = ?config.drain_timeout(),
            "connections still open after the drain timeout; dropping them"
        );
    }
}

/// Picks the handler for a request and logs the outcome, one line per request.
async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    config: &Config,
) -> Response<ResponseBody> {
    if http::is_bench(&request) {
        // Logged at debug: a line per request at benchmark rates would make the benchmark
        // measure this server's log writing rather than the mesh.
        debug!(method = "GET", path = http::BENCH_PATH, status = 200, %peer, "request");
        return http::bench(config);
    }
    let pending = Pending {
        started: Instant::now(),
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        protocol: http::protocol(request.version()),
        peer,
        answered: false,
    };
    let answer = if grpc::is_grpc(&request) {
        grpc::answer(request, peer, config).await
    } else {
        http::answer(request, peer, config).await
    };
    pending.log(&answer);
    answer.response
}

/// A request being answered. Its log line is written by `route` once there is an answer; if the
/// client gives up first (a timeout, a reset: common with delay faults), hyper drops the future
/// and this writes the line instead, so no request goes unlogged.
struct Pending {
    started: Instant,
    method: Method,
    path: String,
    protocol: &'static str,
    peer: SocketAddr,
    answered: bool,
}

impl Pending {
    /// The access log line of an answered request.
    fn log(mut self, answer: &Answer) {
        self.answered = true;
        info!(
            method = %self.method,
            path = %self.path,
            status = answer.response.status().as_u16(),
            grpc_status = answer.grpc_status.map(|code| code.value()),
            peer = %self.peer,
            protocol = self.protocol,
            delay_ms = answer.fault.delay.map(millis),
            injected_status = answer.fault.status.map(|status| status.as_u16()),
            injected_grpc_status = answer.fault.grpc_status.map(|code| code.value()),
            refused = answer.refusal.as_deref(),
            elapsed_ms = millis(self.started.elapsed()),
            "request"
        );
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.answered {
            info!(
                method = %self.method,
                path = %self.path,
                peer = %self.peer,
                protocol = self.protocol,
                elapsed_ms = millis(self.started.elapsed()),
                "request abandoned by the client before its answer"
            );
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
