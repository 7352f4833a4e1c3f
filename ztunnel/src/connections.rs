//! Open inbound connections, so a policy change applies to them too (`docs/istio-compatibility.md`
//! §7.5):
//! after every config update each tracked connection is authorized again, and one that would
//! now be denied is closed, logged ("connection closed due to policy change") and counted.
//!
//! Each tracked upstream keeps a duplicate of its socket; shutting that down ends the splice on
//! both sides. The entry (and the duplicate) goes away when the connection ends.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use mesh_core::identity::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::rbac::{evaluate, Connection, Decision};
use crate::state::State;
use crate::telemetry;

struct Entry {
    pod_uid: String,
    pod_ip: IpAddr,
    peer: Option<Identity>,
    peer_ip: IpAddr,
    upstream: SocketAddr,
    /// A duplicate of the upstream socket, to shut it down from here.
    socket: std::net::TcpStream,
}

/// The tracked inbound connections of a ztunnel.
#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Entry>>,
    /// Connections closed because a policy change denied them.
    pub closed_by_policy: AtomicU64,
}

/// What an inbound connection was admitted as.
pub struct Admission {
    pub pod_uid: String,
    pub pod_ip: IpAddr,
    pub peer: Option<Identity>,
    pub peer_ip: IpAddr,
}

impl Registry {
    /// Tracks `upstream` until the returned stream is dropped.
    pub fn track(
        self: &Arc<Self>,
        upstream: TcpStream,
        admission: Admission,
        telemetry: Option<telemetry::Connection>,
    ) -> io::Result<TrackedStream> {
        let std = upstream.into_std()?;
        let socket = std.try_clone()?;
        let addr = std.peer_addr()?;
        let inner = TcpStream::from_std(std)?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let entry = Entry {
            pod_uid: admission.pod_uid,
            pod_ip: admission.pod_ip,
            peer: admission.peer,
            peer_ip: admission.peer_ip,
            upstream: addr,
            socket,
        };
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, entry);
        Ok(TrackedStream {
            inner,
            id,
            registry: self.clone(),
            telemetry,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Authorizes every tracked connection again; closes those now denied. Returns how many.
    pub fn recheck(&self, state: &State) -> usize {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut denied = Vec::new();
        for (id, e) in entries.iter() {
            let Some(workload) = state.workload_by_ip("", e.pod_ip) else {
                continue; // the pod is going away; its connections end with it
            };
            let policies = state.policies_for(&workload);
            let conn = Connection {
                src_identity: e.peer.clone(),
                src_ip: e.peer_ip,
                dst_ip: e.upstream.ip(),
                dst_port: e.upstream.port(),
            };
            if let Decision::Deny { policy, reason } =
                evaluate(policies.iter().map(|p| p.as_ref()), &conn)
            {
                tracing::warn!(pod = %e.pod_uid, src.addr = %e.peer_ip, src.identity = ?e.peer.as_ref().map(|i| i.to_string()),
                    dst.addr = %e.upstream, policy = ?policy, %reason, "connection closed due to policy change");
                // Counted before the close is visible to anyone.
                self.closed_by_policy.fetch_add(1, Ordering::Relaxed);
                let _ = e.socket.shutdown(Shutdown::Both);
                denied.push(*id);
            }
        }
        for id in &denied {
            entries.remove(id);
        }
        denied.len()
    }
}

/// An upstream connection that stays tracked while it lives. With telemetry it also counts its
/// bytes (written: client->server; read: server->client) and reports the connection when
/// dropped.
pub struct TrackedStream {
    inner: TcpStream,
    id: u64,
    registry: Arc<Registry>,
    telemetry: Option<telemetry::Connection>,
}

impl Drop for TrackedStream {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl AsyncRead for TrackedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(t)) = (&poll, this.telemetry.as_mut()) {
            t.add_bytes(0, (buf.filled().len() - before) as u64);
        }
        poll
    }
}

impl AsyncWrite for TrackedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(t)) = (&poll, this.telemetry.as_mut()) {
            t.add_bytes(*n as u64, 0);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
