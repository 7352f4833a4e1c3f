//! The proxy of one enrolled pod, living in the pod's network namespace (the capture design is
//! `docs/istio-compatibility.md` §11): ztunnel creates its listeners inside the pod netns (on a
//! thread that entered it), puts 15001/15006/15008 into the pod's pinned SOCKMAP, and serves
//!
//! * 15001 (outbound): the original destination is the accepted socket's local address; the
//!   route comes from [`crate::outbound::route`]; HBONE to the peer with the pod's certificate
//!   and the expected identities, or plain TCP for destinations outside the mesh;
//! * 15008 (HBONE in): mTLS with the pod's certificate, each CONNECT admitted by
//!   [`crate::inbound::admit`], then a connection to the app that keeps the client's IP as
//!   source (`IP_TRANSPARENT`);
//! * 15006 (plaintext in): authorized without an identity (so STRICT refuses it), then the same.
//!
//! Every socket ztunnel makes for the pod is created inside the pod netns and marked
//! [`PROXY_MARK`], so the pod's routing lets it out instead of capturing it again.
//! HBONE connections are pooled with Istio's key; open inbound connections are authorized
//! again on every config change (see `connections`). Each connection is counted and logged
//! through `telemetry`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use http::HeaderMap;
use mesh_bpf::listener::{bind_capture_listener, PROXY_MARK};
use mesh_bpf::{PinDir, ProxySockets, SockSlot};
use mesh_core::hbone;
use mesh_core::identity::manager::IdentityManager;
use mesh_core::identity::Identity;
use mesh_core::mtls::WorkloadCertificate;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::connections::{Admission, Registry};
use crate::inbound::admit;
use crate::outbound::{route, Route};
use crate::state::State;
use crate::telemetry::{ConnectionInfo, Direction, Metrics};

/// What every pod proxy shares.
pub struct Shared {
    pub state: Arc<RwLock<State>>,
    pub identities: Arc<IdentityManager>,
    pub counters: Counters,
    pub pool: hbone::Pool<PoolKey>,
    /// Open inbound connections, re-authorized on every config change.
    pub connections: Arc<Registry>,
    /// Istio's traffic metrics and the access log.
    pub metrics: Arc<Metrics>,
    /// Bounds on inbound HBONE connections: handshake time and idle time.
    pub hbone_limits: hbone::ServerLimits,
    /// Inbound HBONE connections held per source address, over every pod of the node.
    pub hbone_sources: Arc<hbone::SourceLimit>,
    /// The TLS server settings of each identity's current certificate, built once per
    /// certificate rather than once per connection.
    acceptors: std::sync::Mutex<HashMap<Identity, (Arc<WorkloadCertificate>, TlsAcceptor)>>,
}

/// Inbound HBONE connections one source address may hold at once, by default: far more than
/// the pooled connections a pod opens (one per destination and identity), far fewer than it
/// takes to exhaust the node proxy.
pub const DEFAULT_HBONE_CONNECTIONS_PER_SOURCE: u32 = 512;

impl Shared {
    pub fn new(state: Arc<RwLock<State>>, identities: Arc<IdentityManager>) -> Self {
        Shared {
            state,
            identities,
            counters: Counters::default(),
            pool: Default::default(),
            connections: Default::default(),
            metrics: Default::default(),
            hbone_limits: hbone::ServerLimits::default(),
            hbone_sources: hbone::SourceLimit::new(DEFAULT_HBONE_CONNECTIONS_PER_SOURCE as usize),
            acceptors: Default::default(),
        }
    }

    /// The TLS acceptor for `id`'s current certificate: built when the certificate is new
    /// (first use, or renewed), shared by every connection until then.
    fn acceptor(
        &self,
        id: &Identity,
        cert: &Arc<WorkloadCertificate>,
    ) -> Result<TlsAcceptor, mesh_core::tls::TlsError> {
        let mut acceptors = self.acceptors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((held, acceptor)) = acceptors.get(id) {
            if Arc::ptr_eq(held, cert) {
                return Ok(acceptor.clone());
            }
        }
        let acceptor = TlsAcceptor::from(Arc::new(cert.server_config()?));
        acceptors.insert(id.clone(), (cert.clone(), acceptor.clone()));
        Ok(acceptor)
    }

    /// With other inbound HBONE bounds than the defaults.
    pub fn with_hbone_limits(mut self, limits: hbone::ServerLimits, per_source: usize) -> Self {
        self.hbone_limits = limits;
        self.hbone_sources = hbone::SourceLimit::new(per_source);
        self
    }
}

/// Re-authorizes open inbound connections whenever the xDS client applied new config.
pub async fn recheck_on_change(
    shared: Arc<Shared>,
    mut status: watch::Receiver<mesh_core::xds::ClientStatus>,
) {
    while status.changed().await.is_ok() {
        let st = shared.state.read().unwrap_or_else(|e| e.into_inner());
        shared.connections.recheck(&st);
    }
}

/// HBONE connections are shared only between tunnels with the same source identity, expected
/// destination identities, next hop and source IP (Istio's pool key).
pub type PoolKey = (Identity, Vec<Identity>, SocketAddr, Ipv4Addr);

/// Connection counts, by what happened (until the Prometheus metrics exist).
#[derive(Default, Debug)]
pub struct Counters {
    /// HBONE tunnels opened.
    pub outbound_hbone: AtomicU64,
    /// HBONE connections dialled (tunnels share them).
    pub outbound_hbone_connections: AtomicU64,
    pub outbound_passthrough: AtomicU64,
    pub outbound_failed: AtomicU64,
    pub inbound_hbone: AtomicU64,
    pub inbound_plaintext: AtomicU64,
    pub inbound_denied: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("workload {0} is not known (yet) to this ztunnel")]
    UnknownWorkload(String),
    #[error("workload {0} has no IPv4 address")]
    NoAddress(String),
    #[error("capture: {0}")]
    Capture(#[from] mesh_bpf::Error),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// A pod being served; dropping it stops its listeners (the capture then fails closed).
pub struct PodProxy {
    pub uid: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for PodProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

#[derive(Clone)]
struct Pod {
    uid: String,
    ip: Ipv4Addr,
    identity: Identity,
    netns: Arc<PathBuf>,
}

/// Starts serving the pod `uid` whose netns is `netns` and whose capture is pinned at `pins`.
pub fn start(
    shared: Arc<Shared>,
    uid: &str,
    netns: &Path,
    pins: &PinDir,
) -> Result<PodProxy, PodError> {
    let workload = shared
        .state
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .workload(uid)
        .ok_or_else(|| PodError::UnknownWorkload(uid.to_string()))?;
    let ip = workload
        .ips
        .iter()
        .find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
        .ok_or_else(|| PodError::NoAddress(uid.to_string()))?;
    let (outbound, inbound, hbone) = mesh_bpf::netns::run_in(netns, || -> std::io::Result<_> {
        let any = |port| SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
        Ok((
            bind_capture_listener(any(15001))?,
            bind_capture_listener(any(15006))?,
            bind_capture_listener(SocketAddrV4::new(ip, hbone::HBONE_PORT))?,
        ))
    })??;
    let mut socks = ProxySockets::open(pins)?;
    socks.set(SockSlot::Outbound, &outbound)?;
    socks.set(SockSlot::Inbound, &inbound)?;
    socks.set(SockSlot::Hbone, &hbone)?;
    let pod = Pod {
        uid: uid.to_string(),
        ip,
        identity: workload.identity.clone(),
        netns: Arc::new(netns.to_path_buf()),
    };
    let mut tasks = Vec::new();
    for (listener, kind) in [
        (outbound, Kind::Outbound),
        (inbound, Kind::Plaintext),
        (hbone, Kind::Hbone),
    ] {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        tasks.push(tokio::spawn(accept_loop(
            listener,
            kind,
            pod.clone(),
            shared.clone(),
        )));
    }
    tracing::info!(pod = %uid, ip = %ip, identity = %pod.identity, "pod proxy started");
    Ok(PodProxy {
        uid: uid.to_string(),
        tasks,
    })
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Outbound,
    Plaintext,
    Hbone,
}

async fn accept_loop(listener: TcpListener, kind: Kind, pod: Pod, shared: Arc<Shared>) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(pod = %pod.uid, ?kind, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = conn.set_nodelay(true);
        // A slot of the source's share of the node's HBONE connections, held until it ends.
        let slot = match kind {
            Kind::Hbone => match shared.hbone_sources.acquire(peer.ip()) {
                Some(slot) => Some(slot),
                None => {
                    let refused = shared.metrics.hbone_closed("source_limit");
                    // One line per 100 refusals: a flood must not flood the log too.
                    if refused % 100 == 1 {
                        tracing::warn!(pod = %pod.uid, src.addr = %peer, held = shared.hbone_sources.held(peer.ip()), refused,
                            "inbound HBONE refused: the source holds its limit of connections to this node");
                    }
                    continue;
                }
            },
            _ => None,
        };
        let (pod, shared) = (pod.clone(), shared.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let result = match kind {
                Kind::Outbound => outbound(&shared, &pod, conn, peer).await,
                Kind::Plaintext => plaintext(&shared, &pod, conn, peer).await,
                Kind::Hbone => hbone_in(&shared, &pod, conn, peer).await,
            };
            if let Err(e) = result {
                tracing::info!(pod = %pod.uid, ?kind, %peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// A TCP connection made from inside the pod netns, marked as ztunnel's own, optionally from a
/// source address that is not local (the original client's, with `IP_TRANSPARENT`).
async fn dial(
    netns: &Path,
    target: SocketAddr,
    source: Option<IpAddr>,
) -> std::io::Result<TcpStream> {
    let socket = mesh_bpf::netns::run_in(netns, || -> std::io::Result<Socket> {
        let s = Socket::new(
            Domain::for_address(target),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        s.set_mark(PROXY_MARK)?;
        s.set_nonblocking(true)?;
        if let Some(src) = source {
            s.set_ip_transparent_v4(true)?;
            s.bind(&SocketAddr::new(src, 0).into())?;
        }
        Ok(s)
    })
    .map_err(std::io::Error::other)??;
    let socket = TcpSocket::from_std_stream(socket.into());
    let stream = tokio::time::timeout(hbone::CONNECT_TIMEOUT, socket.connect(target))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {target} timed out"),
            )
        })??;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn outbound(
    shared: &Arc<Shared>,
    pod: &Pod,
    mut downstream: TcpStream,
    peer: SocketAddr,
) -> anyhow::Result<()> {
    // The capture hands over the connection with its original destination as local address.
    let original = downstream.local_addr()?;
    let (decision, source) = {
        let st = shared.state.read().unwrap_or_else(|e| e.into_inner());
        let source = st
            .workload(&pod.uid)
            .ok_or_else(|| anyhow::anyhow!("source workload {} is gone", pod.uid))?;
        (
            route(&st, &source, original, &mut |n| rand_index(n)),
            source,
        )
    };
    let mut info = ConnectionInfo {
        direction: Direction::Outbound,
        src_addr: peer,
        src_workload: Some(source),
        src_identity: Some(pod.identity.clone()),
        dst_addr: original,
        hbone_addr: None,
        dst_workload: None,
        dst_service: None,
        dst_identity: None,
        mtls: false,
    };
    match decision {
        Route::Hbone {
            next_hop,
            authority,
            identities,
            workload,
            service,
            ..
        } => {
            info.dst_addr = next_hop;
            info.hbone_addr = Some(authority);
            info.dst_identity = Some(workload.identity.clone());
            info.dst_workload = Some(workload);
            info.dst_service = service;
            info.mtls = true;
            let cert = shared.identities.certificate(&pod.identity).await?;
            let mut headers = HeaderMap::new();
            if let Ok(v) = format!("for=\"{peer}\"").parse() {
                headers.insert("forwarded", v);
            }
            let mut expected = identities.clone();
            expected.sort();
            let key: PoolKey = (pod.identity.clone(), expected, next_hop, pod.ip);
            let dial_conn = || async {
                let config = Arc::new(
                    cert.client_config(identities)
                        .map_err(|e| hbone::HboneError::Tls(next_hop, std::io::Error::other(e)))?,
                );
                let tcp = dial(&pod.netns, next_hop, None)
                    .await
                    .map_err(|e| hbone::HboneError::Tcp(next_hop, e))?;
                let tls = hbone::tls_over(tcp, next_hop, config).await?;
                hbone::Connection::open(tls).await
            };
            let (tunnel, dialled) = shared
                .pool
                .connect(&key, &authority.to_string(), headers, dial_conn)
                .await
                .inspect_err(|_| {
                    shared
                        .counters
                        .outbound_failed
                        .fetch_add(1, Ordering::Relaxed);
                    shared.metrics.failed(&info, "CONNECT");
                })?;
            if dialled {
                shared
                    .counters
                    .outbound_hbone_connections
                    .fetch_add(1, Ordering::Relaxed);
            }
            shared
                .counters
                .outbound_hbone
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = shared.metrics.open(info);
            match tunnel.splice(&mut downstream).await {
                Ok((up, down)) => conn.add_bytes(up, down),
                Err(e) => conn.set_error(e),
            }
        }
        Route::Passthrough { target } => {
            let mut upstream = dial(&pod.netns, target, None)
                .await
                .inspect_err(|_| shared.metrics.failed(&info, "CONNECT"))?;
            shared
                .counters
                .outbound_passthrough
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = shared.metrics.open(info);
            splice(&mut conn, &mut downstream, &mut upstream).await;
        }
        Route::Refused(reason) => {
            shared
                .counters
                .outbound_failed
                .fetch_add(1, Ordering::Relaxed);
            shared.metrics.failed(&info, "CONNECT");
            tracing::warn!(pod = %pod.uid, %original, %reason, "outbound connection refused");
        }
    }
    Ok(())
}

async fn hbone_in(
    shared: &Arc<Shared>,
    pod: &Pod,
    tcp: TcpStream,
    peer: SocketAddr,
) -> anyhow::Result<()> {
    let cert = shared.identities.certificate(&pod.identity).await?;
    let acceptor = shared.acceptor(&pod.identity, &cert)?;
    let limits = shared.hbone_limits;
    let (me, this_pod) = (shared.clone(), pod.clone());
    let served = hbone::serve(tcp, &acceptor, limits, move |req| {
        let peer_id = req.peer.clone();
        let decision = admit(&me.state, &req.authority, IpAddr::V4(this_pod.ip), peer_id.as_ref(), peer.ip());
        let (shared, pod) = (me.clone(), this_pod.clone());
        let hbone_addr = req.authority.parse().ok();
        async move {
            let mut info = inbound_info(&shared, &pod, peer, peer_id.clone(), hbone_addr);
            match decision {
                Ok(admitted) => {
                    info.dst_addr = admitted.upstream;
                    info.dst_workload = Some(admitted.workload.clone());
                    let up = dial(&pod.netns, admitted.upstream, Some(peer.ip())).await.map_err(|e| {
                        tracing::warn!(pod = %pod.uid, upstream = %admitted.upstream, error = %e, "upstream connect failed");
                        shared.metrics.failed(&info, "CONNECT");
                        http::StatusCode::SERVICE_UNAVAILABLE
                    })?;
                    let admission = Admission {
                        pod_uid: pod.uid.clone(),
                        pod_ip: IpAddr::V4(pod.ip),
                        peer: peer_id.clone(),
                        peer_ip: peer.ip(),
                    };
                    let up = shared
                        .connections
                        .track(up, admission, Some(shared.metrics.open(info)))
                        .map_err(|_| http::StatusCode::SERVICE_UNAVAILABLE)?;
                    shared.counters.inbound_hbone.fetch_add(1, Ordering::Relaxed);
                    Ok(up)
                }
                Err(refusal) => {
                    shared.counters.inbound_denied.fetch_add(1, Ordering::Relaxed);
                    shared.metrics.failed(&info, refusal.response_flags());
                    tracing::warn!(pod = %pod.uid, src.addr = %peer, src.identity = ?info.src_identity.as_ref().map(|i| i.to_string()),
                        status = %refusal.status(), policy = ?refusal.policy(), reason = %refusal, "inbound HBONE refused");
                    Err(refusal.status())
                }
            }
        }
    })
    .await;
    match served {
        Ok(hbone::Ended::ByPeer) => Ok(()),
        Ok(hbone::Ended::Idle) => {
            shared.metrics.hbone_closed("idle");
            Ok(())
        }
        Err(e @ hbone::HboneError::HandshakeTimeout(_)) => {
            shared.metrics.hbone_closed("handshake_timeout");
            tracing::info!(pod = %pod.uid, src.addr = %peer, timeout_s = limits.handshake.as_secs(), "inbound HBONE closed: {e}");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn plaintext(
    shared: &Arc<Shared>,
    pod: &Pod,
    mut downstream: TcpStream,
    peer: SocketAddr,
) -> anyhow::Result<()> {
    let original = downstream.local_addr()?;
    let mut info = inbound_info(shared, pod, peer, None, None);
    info.dst_addr = original;
    match admit(
        &shared.state,
        &original.to_string(),
        IpAddr::V4(pod.ip),
        None,
        peer.ip(),
    ) {
        Ok(admitted) => {
            info.dst_workload = Some(admitted.workload.clone());
            let upstream = dial(&pod.netns, admitted.upstream, Some(peer.ip()))
                .await
                .inspect_err(|_| shared.metrics.failed(&info, "CONNECT"))?;
            let admission = Admission {
                pod_uid: pod.uid.clone(),
                pod_ip: IpAddr::V4(pod.ip),
                peer: None,
                peer_ip: peer.ip(),
            };
            let mut upstream = shared.connections.track(upstream, admission, None)?;
            shared
                .counters
                .inbound_plaintext
                .fetch_add(1, Ordering::Relaxed);
            let mut conn = shared.metrics.open(info);
            splice(&mut conn, &mut downstream, &mut upstream).await;
        }
        Err(refusal) => {
            shared
                .counters
                .inbound_denied
                .fetch_add(1, Ordering::Relaxed);
            shared.metrics.failed(&info, "DENY");
            tracing::warn!(pod = %pod.uid, src.addr = %peer, status = %refusal.status(), policy = ?refusal.policy(),
                reason = %refusal, "inbound plaintext refused");
        }
    }
    Ok(())
}

/// What an inbound connection to `pod` from `peer` is, before it is admitted. The source
/// workload is the one at the peer's IP when it is known.
fn inbound_info(
    shared: &Shared,
    pod: &Pod,
    peer: SocketAddr,
    peer_id: Option<Identity>,
    hbone_addr: Option<SocketAddr>,
) -> ConnectionInfo {
    let st = shared.state.read().unwrap_or_else(|e| e.into_inner());
    ConnectionInfo {
        direction: Direction::Inbound,
        src_addr: peer,
        src_workload: st.workload_by_ip("", peer.ip()),
        mtls: peer_id.is_some(),
        src_identity: peer_id,
        dst_addr: SocketAddr::new(IpAddr::V4(pod.ip), hbone::HBONE_PORT),
        hbone_addr,
        dst_workload: st.workload(&pod.uid),
        dst_service: None,
        dst_identity: Some(pod.identity.clone()),
    }
}

/// Copies both ways until both sides are done, counting the bytes on `conn` (client->server is
/// Istio's "received", server->client its "sent").
async fn splice<A, B>(conn: &mut crate::telemetry::Connection, client: &mut A, server: &mut B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    match mesh_core::splice::copy_bidirectional(client, server).await {
        Ok((up, down)) => conn.add_bytes(up, down),
        Err(e) => conn.set_error(e),
    }
}

/// A uniformly spread choice among `n` endpoints.
fn rand_index(n: usize) -> usize {
    if n <= 1 {
        0
    } else {
        rand::random_range(0..n)
    }
}
