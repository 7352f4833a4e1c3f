//! The waypoint's HBONE port (15008): mTLS with the waypoint's own certificate, one CONNECT
//! stream per client connection, its authority the destination the client dialled (a service
//! VIP and port, or a pod and port). Each accepted stream has its protocol detected and is
//! served: HTTP/1.1 and HTTP/2 (and gRPC) through the L7 chain (`stack`), anything else
//! forwarded as TCP to an endpoint picked by the balancer.
//!
//! A CONNECT whose authority is no served destination is refused with 503 (as ztunnel refuses
//! a destination it has no service for); a malformed one with 400. The limits of ztunnel's
//! HBONE port apply here too: a handshake bound, an idle timeout, and a cap per source address.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use mesh_core::hbone::{self, ConnectRequest, H2Stream, ServerLimits, SourceLimit, Tunnel};
use mesh_core::identity::manager::IdentityManager;
use mesh_core::identity::Identity;
use mesh_core::mtls::WorkloadCertificate;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::authz;
use crate::balance;
use crate::detect::{self, Detected, Rewind};
use crate::route::backend;
use crate::stack::{self, Downstream};
use crate::state::{Destination, Protocol, State};
use crate::telemetry::Metrics;
use crate::upstream::{forwarded, Upstream};

/// How long a declared-HTTP connection may take to send its first request bytes.
const DECLARED_HTTP_FIRST_BYTES: std::time::Duration = std::time::Duration::from_secs(60);

/// Everything the served connections share.
pub struct Inbound {
    pub state: Arc<RwLock<State>>,
    pub upstream: Arc<Upstream>,
    pub identities: Arc<IdentityManager>,
    pub me: Arc<Identity>,
    pub metrics: Arc<Metrics>,
    stack: stack::Parts,
    pub limits: ServerLimits,
    pub per_source: Arc<SourceLimit>,
    /// Changes whenever xDS applied a response: open TCP connections are re-authorized.
    changes: tokio::sync::watch::Receiver<mesh_core::xds::ClientStatus>,
    acceptor: Mutex<Option<(Arc<WorkloadCertificate>, TlsAcceptor)>>,
}

impl Inbound {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        state: Arc<RwLock<State>>,
        upstream: Arc<Upstream>,
        identities: Arc<IdentityManager>,
        me: Identity,
        metrics: Arc<Metrics>,
        limits: ServerLimits,
        max_per_source: usize,
        changes: tokio::sync::watch::Receiver<mesh_core::xds::ClientStatus>,
    ) -> Arc<Self> {
        let me = Arc::new(me);
        let parts = stack::Parts {
            state: state.clone(),
            upstream: upstream.clone(),
            metrics: metrics.clone(),
            me: me.clone(),
        };
        Arc::new(Inbound {
            state,
            upstream,
            identities,
            me,
            metrics,
            stack: parts,
            limits,
            per_source: SourceLimit::new(max_per_source),
            changes,
            acceptor: Mutex::new(None),
        })
    }

    /// The TLS acceptor of the current certificate, built once per certificate.
    async fn acceptor(&self) -> anyhow::Result<TlsAcceptor> {
        let cert = self.identities.certificate(&self.me).await?;
        let mut cached = self.acceptor.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((c, a)) = cached.as_ref() {
            if Arc::ptr_eq(c, &cert) {
                return Ok(a.clone());
            }
        }
        let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()?));
        *cached = Some((cert, acceptor.clone()));
        Ok(acceptor)
    }

    fn destination(&self, req: &ConnectRequest) -> Result<(SocketAddr, Destination), StatusCode> {
        let addr: SocketAddr = req.authority.parse().map_err(|_| {
            tracing::info!(authority = %req.authority, peer = %req.peer_addr, "CONNECT refused: the authority is not IP:port");
            StatusCode::BAD_REQUEST
        })?;
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        let destination = state.destination(addr).ok_or_else(|| {
            tracing::info!(authority = %addr, peer = %req.peer_addr, "CONNECT refused: no service this waypoint serves has that address");
            StatusCode::SERVICE_UNAVAILABLE
        })?;
        Ok((addr, destination))
    }
}

/// Accepts HBONE connections forever.
pub async fn serve(listener: TcpListener, inbound: Arc<Inbound>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "HBONE accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = inbound.per_source.acquire(peer.ip()) else {
            tracing::debug!(%peer, "HBONE connection closed: its source holds the most it may");
            continue;
        };
        let inbound = inbound.clone();
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(tcp, peer, inbound).await;
        });
    }
}

async fn serve_connection(tcp: TcpStream, peer: SocketAddr, inbound: Arc<Inbound>) {
    let acceptor = match inbound.acceptor().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(%peer, error = %e, "HBONE connection closed: no certificate to serve it with");
            return;
        }
    };
    let limits = inbound.limits;
    let handler_inbound = inbound.clone();
    let served = hbone::serve_tunnels(tcp, &acceptor, limits, move |req: ConnectRequest| {
        let inbound = handler_inbound.clone();
        async move {
            let (authority, destination) = inbound.destination(&req)?;
            let declared = match &destination {
                Destination::Service { service, port } => service
                    .port(*port)
                    .map(|p| p.protocol)
                    .unwrap_or(Protocol::Undeclared),
                Destination::Workload { .. } => Protocol::Undeclared,
            };
            Ok(Carry {
                inbound,
                authority,
                destination,
                declared,
                client: req.peer_addr,
                peer: req.peer,
            })
        }
    })
    .await;
    if let Err(e) = served {
        tracing::debug!(%peer, error = %e, "HBONE connection ended with an error");
    }
}

/// Serves one accepted CONNECT stream.
struct Carry {
    inbound: Arc<Inbound>,
    authority: SocketAddr,
    destination: Destination,
    declared: Protocol,
    client: SocketAddr,
    peer: Option<Identity>,
}

impl Tunnel for Carry {
    async fn carry(self, mut stream: H2Stream) -> std::io::Result<()> {
        let (detected, prefix) = match self.declared {
            Protocol::Tcp | Protocol::Tls => (Detected::Tcp, bytes::Bytes::new()),
            Protocol::Undeclared => detect::detect(&mut stream, detect::DETECT_TIMEOUT).await?,
            Protocol::Http1 | Protocol::Http2 | Protocol::Grpc => {
                detect::detect(&mut stream, DECLARED_HTTP_FIRST_BYTES).await?
            }
        };
        let io = Rewind::new(prefix, stream);
        let label = match detected {
            Detected::Http1 => "http1",
            Detected::Http2 => "http2",
            Detected::Tcp => "tcp",
        };
        let gauge = self.inbound.metrics.connections.with_label_values(&[label]);
        gauge.inc();
        let result = self.serve(detected, io).await;
        gauge.dec();
        result
    }
}

impl Carry {
    async fn serve(self, detected: Detected, io: Rewind<H2Stream>) -> std::io::Result<()> {
        let down = Arc::new(Downstream {
            client: self.client,
            peer: self.peer.clone(),
            destination: self.authority,
            protocol: detected,
        });
        if detected == Detected::Tcp {
            return self.forward_tcp(io, &down).await;
        }
        let stack = stack::build(&self.inbound.stack, self.authority, &self.destination);
        let stack = tower::ServiceExt::map_request(stack, move |mut req: stack::Request| {
            req.extensions_mut().insert(down.clone());
            req
        });
        let service = TowerToHyperService::new(stack);
        let io = TokioIo::new(io);
        let served = match detected {
            Detected::Http1 => {
                // A client that shuts its write side after the request still gets the answer.
                hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .half_close(true)
                    .serve_connection(io, service)
                    .await
            }
            _ => {
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(io, service)
                    .await
            }
        };
        if let Err(e) = served {
            tracing::debug!(client = %self.client, error = %e, "downstream HTTP connection ended with an error");
        }
        Ok(())
    }

    /// Not HTTP: a byte stream to one endpoint.
    async fn forward_tcp(self, mut io: Rewind<H2Stream>, down: &Downstream) -> std::io::Result<()> {
        // Policy first, on what a TCP connection offers (no HTTP attributes).
        let service = self.destination.service();
        if !service.policies.is_empty() {
            let attrs = authz::Attributes {
                peer: down.peer.as_ref(),
                source_ip: down.client.ip(),
                remote_ip: down.client.ip(),
                destination: down.destination,
                http: None,
            };
            if let authz::Decision::Deny(policy) = authz::evaluate(&service.policies, &attrs) {
                tracing::info!(client = %self.client, dst_service = %service.hostname,
                    policy = policy.as_deref().unwrap_or("allow policies exist, but none allowed"),
                    "TCP connection denied by authorization policy");
                return Ok(());
            }
        }
        let picked = match balance::choose(&backend(&self.destination)) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(client = %self.client, dst = %self.destination.service().hostname, "TCP connection not forwarded: {e}");
                return Ok(());
            }
        };
        let _in_flight = balance::InFlight::start(&picked.endpoint);
        let mut upstream = match self
            .inbound
            .upstream
            .open(&picked.endpoint, picked.port, forwarded(self.client))
            .await
        {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(client = %self.client, upstream = %picked.endpoint.workload, "TCP connection not forwarded: {e}");
                return Ok(());
            }
        };
        // Re-authorized on every config change, as ztunnel does its open connections: a policy
        // that now denies it (or its service leaving this waypoint) closes it.
        let mut changes = self.inbound.changes.clone();
        changes.mark_unchanged();
        let copy = mesh_core::splice::copy_bidirectional(&mut io, &mut upstream);
        tokio::pin!(copy);
        let mut watching = true;
        loop {
            tokio::select! {
                done = &mut copy => {
                    let (sent, received) = done?;
                    tracing::info!(target: "access", client = %self.client, upstream = %picked.endpoint.workload,
                        dst_service = %self.destination.service().hostname, sent, received, "tcp connection");
                    return Ok(());
                }
                changed = changes.changed(), if watching => {
                    if changed.is_err() {
                        watching = false;
                        continue;
                    }
                    if let Some(why) = self.denied_now(down) {
                        tracing::info!(target: "access", client = %self.client, upstream = %picked.endpoint.workload,
                            dst_service = %self.destination.service().hostname, reason = %why,
                            "tcp connection closed due to policy change");
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Why an open TCP connection may no longer go on under the current state, if it may not.
    fn denied_now(&self, down: &Downstream) -> Option<String> {
        let now = self
            .inbound
            .state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .destination(self.authority);
        let Some(d) = now else {
            return Some("its service is no longer served by this waypoint".to_string());
        };
        let attrs = authz::Attributes {
            peer: down.peer.as_ref(),
            source_ip: down.client.ip(),
            remote_ip: down.client.ip(),
            destination: down.destination,
            http: None,
        };
        match authz::evaluate(&d.service().policies, &attrs) {
            authz::Decision::Allow => None,
            authz::Decision::Deny(p) => Some(format!(
                "denied by {}",
                p.as_deref().unwrap_or("allow policies that none match")
            )),
        }
    }
}
