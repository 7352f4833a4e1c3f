//! Connections from the waypoint to endpoints. A mesh endpoint is reached over HBONE: TLS to
//! its ztunnel (`<pod IP>:15008`) as the waypoint's own identity, verifying the endpoint's
//! identity, and a CONNECT to `<pod IP>:<target port>`; the HBONE connection is pooled per
//! endpoint and carries every tunnel to it. An endpoint outside the mesh gets plain TCP.
//!
//! On a tunnel the waypoint speaks HTTP to the app, pooled per (endpoint, port, protocol):
//! HTTP/2 connections are shared by all requests; an HTTP/1.1 connection carries one request
//! at a time and goes back to the pool when its response has been read to the end.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_core::hbone::{self, H2Stream, HboneError};
use mesh_core::identity::manager::IdentityManager;
use mesh_core::identity::Identity;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::respond::{Body, ProxyError};
use crate::state::{Endpoint, Tunnel};

/// Idle HTTP/1.1 connections kept per endpoint port.
const MAX_IDLE_H1: usize = 64;

/// A byte stream to an endpoint's app: a CONNECT tunnel or plain TCP.
pub enum Io {
    Hbone(H2Stream),
    Tcp(TcpStream),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tcp(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_flush(cx),
            Io::Tcp(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Hbone(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tcp(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The HBONE pool key: the endpoint's identity and its ztunnel's address.
type HboneKey = (Identity, SocketAddr);
type HttpKey = (IpAddr, u16);

/// What an upstream HTTP connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    Http1,
    Http2,
}

pub struct Upstream {
    identities: Arc<IdentityManager>,
    me: Identity,
    /// Port the endpoints' ztunnels take HBONE on (15008; tests move it).
    hbone_port: u16,
    hbone: hbone::Pool<HboneKey>,
    h1: Mutex<HashMap<HttpKey, Vec<http1::SendRequest<Body>>>>,
    h2: Mutex<HashMap<HttpKey, http2::SendRequest<Body>>>,
}

/// An HTTP connection checked out of the pool.
pub enum Sender {
    Http1(http1::SendRequest<Body>),
    Http2(http2::SendRequest<Body>),
}

fn connect_error(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Connect(e.to_string())
}

impl Upstream {
    pub fn new(identities: Arc<IdentityManager>, me: Identity, hbone_port: u16) -> Self {
        Upstream {
            identities,
            me,
            hbone_port,
            hbone: hbone::Pool::default(),
            h1: Mutex::default(),
            h2: Mutex::default(),
        }
    }

    /// Opens a byte stream to `endpoint`'s `port`. `headers` go on the CONNECT request.
    pub async fn open(
        &self,
        endpoint: &Endpoint,
        port: u16,
        headers: HeaderMap,
    ) -> Result<Io, ProxyError> {
        let target = SocketAddr::new(endpoint.address, port);
        match endpoint.tunnel {
            Tunnel::Plaintext => {
                let tcp = tokio::time::timeout(hbone::CONNECT_TIMEOUT, TcpStream::connect(target))
                    .await
                    .map_err(|_| connect_error("connect timeout"))?
                    .map_err(connect_error)?;
                let _ = tcp.set_nodelay(true);
                Ok(Io::Tcp(tcp))
            }
            Tunnel::Hbone => {
                let Some(peer) = endpoint.identity.clone() else {
                    return Err(connect_error("the endpoint has no identity"));
                };
                let ztunnel = SocketAddr::new(endpoint.address, self.hbone_port);
                let authority = target.to_string();
                let key = (peer.clone(), ztunnel);
                let dial = || async {
                    let cert = self
                        .identities
                        .certificate(&self.me)
                        .await
                        .map_err(|e| HboneError::Authority(format!("no certificate: {e}")))?;
                    let config = cert
                        .client_config(vec![peer])
                        .map_err(|e| HboneError::Authority(format!("TLS configuration: {e}")))?;
                    let tls = hbone::connect_tls(ztunnel, Arc::new(config)).await?;
                    hbone::Connection::open(tls).await
                };
                let (stream, _) = self
                    .hbone
                    .connect(&key, &authority, headers, dial)
                    .await
                    .map_err(|e| match e {
                        HboneError::Status(s) => {
                            connect_error(format!("the endpoint's ztunnel answered HTTP {s}"))
                        }
                        e => connect_error(e),
                    })?;
                Ok(Io::Hbone(stream))
            }
        }
    }

    /// An HTTP connection to `endpoint`'s `port`: a pooled one if one is free, else a new one.
    pub async fn sender(
        &self,
        endpoint: &Endpoint,
        port: u16,
        version: HttpVersion,
        headers: HeaderMap,
    ) -> Result<Sender, ProxyError> {
        let key = (endpoint.address, port);
        match version {
            HttpVersion::Http1 => {
                let pooled = {
                    let mut h1 = self.h1.lock().unwrap_or_else(|e| e.into_inner());
                    let idle = h1.entry(key).or_default();
                    let mut found = None;
                    while let Some(s) = idle.pop() {
                        if !s.is_closed() {
                            found = Some(s);
                            break;
                        }
                    }
                    found
                };
                match pooled {
                    Some(s) => Ok(Sender::Http1(s)),
                    None => Ok(Sender::Http1(
                        self.dial_http1(endpoint, port, headers).await?,
                    )),
                }
            }
            HttpVersion::Http2 => {
                let pooled = {
                    let h2 = self.h2.lock().unwrap_or_else(|e| e.into_inner());
                    h2.get(&key).filter(|s| !s.is_closed()).cloned()
                };
                if let Some(s) = pooled {
                    return Ok(Sender::Http2(s));
                }
                let send = self.dial_http2(endpoint, port, headers).await?;
                self.h2
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(key, send.clone());
                Ok(Sender::Http2(send))
            }
        }
    }

    /// A new HTTP/1.1 connection (not pooled until [`Upstream::release`]).
    pub async fn dial_http1(
        &self,
        endpoint: &Endpoint,
        port: u16,
        headers: HeaderMap,
    ) -> Result<http1::SendRequest<Body>, ProxyError> {
        let io = self.open(endpoint, port, headers).await?;
        let (send, conn) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/1.1 connection ended with an error");
            }
        });
        Ok(send)
    }

    async fn dial_http2(
        &self,
        endpoint: &Endpoint,
        port: u16,
        headers: HeaderMap,
    ) -> Result<http2::SendRequest<Body>, ProxyError> {
        let io = self.open(endpoint, port, headers).await?;
        let (send, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .map_err(connect_error)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        Ok(send)
    }

    /// Puts an HTTP/1.1 connection whose response is complete back in the pool.
    pub fn release(&self, endpoint: IpAddr, port: u16, send: http1::SendRequest<Body>) {
        if send.is_closed() {
            return;
        }
        let mut h1 = self.h1.lock().unwrap_or_else(|e| e.into_inner());
        let idle = h1.entry((endpoint, port)).or_default();
        if idle.len() < MAX_IDLE_H1 {
            idle.push(send);
        }
    }
}

/// The `forwarded` header ztunnel sends on CONNECT: the original client.
pub fn forwarded(client: SocketAddr) -> HeaderMap {
    let mut h = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("for=\"{client}\"")) {
        h.insert("forwarded", v);
    }
    h
}
