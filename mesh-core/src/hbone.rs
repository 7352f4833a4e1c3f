//! HBONE: a TCP connection carried as one HTTP/2 CONNECT stream inside mutual TLS, port 15008
//! (`docs/istio-compatibility.md` §3). Many streams share one TLS connection.
//!
//! * [`serve`] runs the server side of one connection: the TLS and HTTP/2 handshakes within a
//!   bound, then every CONNECT stream goes to a handler that either opens the upstream (the
//!   stream is answered 200 and bytes are spliced) or names the status to refuse with (400 bad
//!   request, 401 denied, 503 no upstream); a connection left without streams is closed after
//!   [`ServerLimits::idle`]. [`SourceLimit`] caps the connections one source address holds.
//!   [`serve_tunnels`] lets the handler choose what carries an accepted stream (a [`Tunnel`]):
//!   the waypoint serves HTTP on it instead of splicing it.
//! * [`Connection`] is the client side: one TLS+h2 connection on which [`Connection::connect`]
//!   opens tunnels; anything but 200 fails the tunnel.
//! * [`H2Stream`] turns a CONNECT stream into `AsyncRead + AsyncWrite`. A TCP half-close is
//!   END_STREAM; a stream reset with NO_ERROR or CANCEL reads as end of stream.
//!
//! HTTP/2 settings are Istio's: 4 MiB stream window, 16 MiB connection window, 1 MiB frames;
//! the server allows 200 concurrent streams.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h2::{RecvStream, SendStream};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::identity::Identity;
use crate::mtls::identity_of;

pub const HBONE_PORT: u16 = 15008;
const STREAM_WINDOW: u32 = 4 << 20;
const CONNECTION_WINDOW: u32 = 16 << 20;
const FRAME_SIZE: u32 = 1 << 20;
/// Largest DATA chunk one write sends.
const WRITE_CHUNK: usize = 256 << 10;
/// Every data-plane dial gives up after this (Istio's value).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("TCP connect to {0} failed: {1}")]
    Tcp(SocketAddr, io::Error),
    #[error("TCP connect to {0} timed out (is something blocking HBONE port 15008?)")]
    Timeout(SocketAddr),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, io::Error),
    #[error("HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("the tunnel was refused with HTTP {0}")]
    Status(StatusCode),
    #[error("bad CONNECT authority {0:?}")]
    Authority(String),
    #[error("{0} did not finish the TLS and HTTP/2 handshakes in time")]
    HandshakeTimeout(SocketAddr),
    #[error("socket: {0}")]
    Io(io::Error),
}

fn server_builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .max_concurrent_streams(200)
        .max_header_list_size(64 << 10)
        .max_send_buffer_size(400 << 10);
    b
}

fn client_builder() -> h2::client::Builder {
    let mut b = h2::client::Builder::new();
    b.initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(FRAME_SIZE)
        .initial_max_send_streams(100)
        .max_header_list_size(16 << 10)
        .max_send_buffer_size(STREAM_WINDOW as usize)
        .enable_push(false);
    b
}

/// A CONNECT stream as a byte stream.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received data not yet read.
    pending: Bytes,
    read_eof: bool,
    write_closed: bool,
}

impl H2Stream {
    fn new(send: SendStream<Bytes>, recv: RecvStream) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            read_eof: false,
            write_closed: false,
        }
    }
}

/// First read size of a tunnel's upload direction; doubled while reads fill it.
const FIRST_READ: usize = 16 << 10;
/// Largest read of a tunnel's upload direction.
const MAX_READ: usize = 256 << 10;

impl H2Stream {
    /// Carries bytes between this tunnel and `io` until both directions have ended (a
    /// half-close is passed on each way); returns the bytes `io` -> tunnel and tunnel -> `io`.
    ///
    /// Unlike copying through the `AsyncRead`/`AsyncWrite` impls, no byte is copied in user
    /// space: reads from `io` land in a buffer that is handed to HTTP/2 as it is (and reused
    /// once HTTP/2 has sent it), and received DATA is written to `io` straight from HTTP/2's
    /// own buffer.
    pub async fn splice<T>(self, io: &mut T) -> io::Result<(u64, u64)>
    where
        T: AsyncRead + AsyncWrite + Unpin + ?Sized,
    {
        let H2Stream {
            mut send,
            mut recv,
            pending,
            read_eof,
            write_closed,
        } = self;
        let mut up = Upload {
            buf: bytes::BytesMut::new(),
            chunk: Bytes::new(),
            want: FIRST_READ,
            read_done: write_closed,
            done: write_closed,
            copied: 0,
        };
        let mut down = Download {
            chunk: pending,
            eof: read_eof,
            done: false,
            need_flush: false,
            copied: 0,
        };
        std::future::poll_fn(|cx| {
            if !up.done {
                if let Poll::Ready(Err(e)) = up.poll(cx, &mut *io, &mut send) {
                    return Poll::Ready(Err(e));
                }
            }
            if !down.done {
                if let Poll::Ready(Err(e)) = down.poll(cx, &mut recv, &mut *io) {
                    return Poll::Ready(Err(e));
                }
            }
            if up.done && down.done {
                Poll::Ready(Ok((up.copied, down.copied)))
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

/// `io` -> tunnel.
struct Upload {
    buf: bytes::BytesMut,
    /// Read and not yet given to HTTP/2.
    chunk: Bytes,
    want: usize,
    read_done: bool,
    done: bool,
    copied: u64,
}

impl Upload {
    fn poll<T: AsyncRead + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut T,
        send: &mut SendStream<Bytes>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.chunk.is_empty() {
                if self.read_done {
                    end_stream(send)?;
                    self.done = true;
                    return Poll::Ready(Ok(()));
                }
                // Reuses the allocation once HTTP/2 has dropped the chunks it sent.
                self.buf.reserve(self.want);
                let n = std::task::ready!(tokio_util::io::poll_read_buf(
                    Pin::new(&mut *io),
                    cx,
                    &mut self.buf
                ))?;
                if n == 0 {
                    self.read_done = true;
                    continue;
                }
                if n >= self.want && self.want < MAX_READ {
                    self.want = (self.want * 2).min(MAX_READ);
                }
                self.chunk = self.buf.split().freeze();
            }
            send.reserve_capacity(self.chunk.len());
            match std::task::ready!(send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(e)) => return Poll::Ready(Err(h2_io(e))),
                Some(Ok(0)) => continue,
                Some(Ok(n)) => {
                    let part = self.chunk.split_to(n.min(self.chunk.len()));
                    self.copied += part.len() as u64;
                    send.send_data(part, false).map_err(h2_io)?;
                }
            }
        }
    }
}

/// Tunnel -> `io`.
struct Download {
    /// Received and not yet written.
    chunk: Bytes,
    eof: bool,
    done: bool,
    need_flush: bool,
    copied: u64,
}

impl Download {
    fn poll<T: AsyncWrite + Unpin + ?Sized>(
        &mut self,
        cx: &mut Context<'_>,
        recv: &mut RecvStream,
        io: &mut T,
    ) -> Poll<io::Result<()>> {
        loop {
            while !self.chunk.is_empty() {
                let n = std::task::ready!(Pin::new(&mut *io).poll_write(cx, &self.chunk))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.chunk.advance(n);
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.eof {
                std::task::ready!(Pin::new(&mut *io).poll_flush(cx))?;
                std::task::ready!(Pin::new(&mut *io).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            match recv.poll_data(cx) {
                Poll::Pending => {
                    if self.need_flush {
                        std::task::ready!(Pin::new(&mut *io).poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                Poll::Ready(None) => self.eof = true,
                Poll::Ready(Some(Ok(data))) => {
                    // Give the window back as soon as the bytes are ours.
                    let _ = recv.flow_control().release_capacity(data.len());
                    self.chunk = data;
                }
                Poll::Ready(Some(Err(e))) if is_graceful_reset(&e) => self.eof = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io(e))),
            }
        }
    }
}

/// END_STREAM: the peer sees our half-close. A stream the peer already reset gracefully
/// needs none.
fn end_stream(send: &mut SendStream<Bytes>) -> io::Result<()> {
    match send.send_data(Bytes::new(), true) {
        Err(e) if !is_graceful_reset(&e) => Err(h2_io(e)),
        _ => Ok(()),
    }
}

fn h2_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        e.into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 I/O error"))
    } else {
        io::Error::other(e)
    }
}

/// A reset that only says "stop", not "failed".
fn is_graceful_reset(e: &h2::Error) -> bool {
    matches!(
        e.reason(),
        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL)
    )
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if self.read_eof {
                return Poll::Ready(Ok(()));
            }
            match self.recv.poll_data(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => self.read_eof = true,
                Poll::Ready(Some(Ok(data))) => {
                    // Give the window back as soon as the bytes are ours.
                    let _ = self.recv.flow_control().release_capacity(data.len());
                    self.pending = data;
                }
                Poll::Ready(Some(Err(e))) if is_graceful_reset(&e) => self.read_eof = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(h2_io(e))),
            }
        }
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        self.send.reserve_capacity(buf.len().min(WRITE_CHUNK));
        match self.send.poll_capacity(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Err(h2_io(e))),
            Poll::Ready(Some(Ok(n))) => {
                let n = n.min(buf.len());
                match self
                    .send
                    .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(e) => Poll::Ready(Err(h2_io(e))),
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 sends buffered data as the connection task runs; there is nothing to push here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.write_closed {
            self.write_closed = true;
            end_stream(&mut self.send)?;
        }
        Poll::Ready(Ok(()))
    }
}

/// What a server learns from one CONNECT request.
#[derive(Debug)]
pub struct ConnectRequest {
    /// `:authority`: the address (or `host:port`) the client wants.
    pub authority: String,
    pub headers: HeaderMap,
    /// The client's identity, from its verified certificate (`None`: it showed none that
    /// names a SPIFFE identity).
    pub peer: Option<Identity>,
    /// The TCP peer of the HBONE connection.
    pub peer_addr: SocketAddr,
}

/// What carries a CONNECT stream once it is accepted (answered 200): [`Splice`] copies it to
/// an upstream socket; an L7 proxy serves HTTP on it.
pub trait Tunnel: Send + 'static {
    fn carry(self, stream: H2Stream) -> impl Future<Output = io::Result<()>> + Send;
}

/// The plain tunnel: bytes copied both ways between the stream and `0`.
pub struct Splice<U>(pub U);

impl<U: AsyncRead + AsyncWrite + Unpin + Send + 'static> Tunnel for Splice<U> {
    async fn carry(mut self, stream: H2Stream) -> io::Result<()> {
        stream.splice(&mut self.0).await.map(|_| ())
    }
}

/// How long a peer may take to set up an HBONE server connection, and hold it unused. Without
/// these bounds one pod could hold the node proxy's sockets and memory with connections that
/// never finish a handshake or never carry a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerLimits {
    /// The TLS handshake and the HTTP/2 preface together.
    pub handshake: Duration,
    /// A connection with no open stream for this long is closed (GOAWAY, then close).
    pub idle: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            handshake: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// How a served HBONE connection ended when nothing failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The client closed it.
    ByPeer,
    /// It carried no stream for [`ServerLimits::idle`]; we closed it.
    Idle,
}

/// Serves one HBONE connection: the TLS handshake with `acceptor` (which verifies the client's
/// certificate) and the HTTP/2 preface within `limits.handshake`, then every CONNECT stream on
/// its own task until the client closes the connection or it stays idle for `limits.idle`.
/// `handler` opens the upstream of a stream, or returns the status to refuse it with.
pub async fn serve<F, Fut, U>(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    limits: ServerLimits,
    handler: F,
) -> Result<Ended, HboneError>
where
    F: Fn(ConnectRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<U, StatusCode>> + Send + 'static,
    U: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_tunnels(tcp, acceptor, limits, move |req| {
        let opened = handler(req);
        async move { opened.await.map(Splice) }
    })
    .await
}

/// [`serve`], with each accepted stream carried by the [`Tunnel`] the handler returns.
pub async fn serve_tunnels<F, Fut, T>(
    tcp: TcpStream,
    acceptor: &TlsAcceptor,
    limits: ServerLimits,
    handler: F,
) -> Result<Ended, HboneError>
where
    F: Fn(ConnectRequest) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, StatusCode>> + Send + 'static,
    T: Tunnel,
{
    let peer_addr = tcp.peer_addr().map_err(HboneError::Io)?;
    let deadline = tokio::time::Instant::now() + limits.handshake;
    let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| HboneError::HandshakeTimeout(peer_addr))?
        .map_err(|e| HboneError::Tls(peer_addr, e))?;
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(identity_of);
    let mut conn = tokio::time::timeout_at(deadline, server_builder().handshake(tls))
        .await
        .map_err(|_| HboneError::HandshakeTimeout(peer_addr))??;
    let handler = Arc::new(handler);
    // Open streams; when the count drops to zero the idle clock starts.
    let (open, mut open_rx) = tokio::sync::watch::channel(0usize);
    let open = Arc::new(open);
    let mut idle_since = Some(tokio::time::Instant::now());
    let mut ended = Ended::ByPeer;
    // After our GOAWAY, how long the peer has to let the connection end before it is dropped
    // (a peer that never answers the GOAWAY's PING would otherwise hold it).
    let mut drop_at: Option<tokio::time::Instant> = None;
    loop {
        let idle_at = idle_since
            .filter(|_| drop_at.is_none())
            .map(|t| t + limits.idle);
        let timer = drop_at.or(idle_at);
        tokio::select! {
            next = conn.accept() => {
                let (req, respond) = match next {
                    None => break,
                    Some(Ok(stream)) => stream,
                    // A peer told to go away may close without ceremony: still an idle end.
                    Some(Err(_)) if ended == Ended::Idle => break,
                    Some(Err(e)) => return Err(e.into()),
                };
                open.send_modify(|n| *n += 1);
                idle_since = None;
                let (handler, open, peer) = (handler.clone(), open.clone(), peer.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve_stream(req, respond, peer, peer_addr, handler).await {
                        tracing::debug!(error = %e, "HBONE stream ended with an error");
                    }
                    open.send_modify(|n| *n -= 1);
                });
            }
            Ok(()) = open_rx.changed() => {
                if *open_rx.borrow_and_update() == 0 && idle_since.is_none() {
                    idle_since = Some(tokio::time::Instant::now());
                }
            }
            _ = tokio::time::sleep_until(timer.unwrap_or(deadline)), if timer.is_some() => {
                if drop_at.is_some() {
                    tracing::debug!(peer = %peer_addr, "HBONE peer did not close after GOAWAY; dropping the connection");
                    break;
                }
                tracing::debug!(peer = %peer_addr, idle_s = limits.idle.as_secs(), "HBONE connection idle; closing it");
                ended = Ended::Idle;
                conn.graceful_shutdown();
                drop_at = Some(tokio::time::Instant::now() + limits.handshake);
            }
        }
    }
    Ok(ended)
}

fn status_only(status: StatusCode) -> Response<()> {
    let mut r = Response::new(());
    *r.status_mut() = status;
    r
}

async fn serve_stream<F, Fut, T>(
    req: Request<RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    peer: Option<Identity>,
    peer_addr: SocketAddr,
    handler: Arc<F>,
) -> io::Result<()>
where
    F: Fn(ConnectRequest) -> Fut,
    Fut: Future<Output = Result<T, StatusCode>>,
    T: Tunnel,
{
    let authority = req.uri().authority().map(|a| a.to_string());
    let (authority, status) = match (req.method(), authority) {
        (&Method::CONNECT, Some(a)) => (a, None),
        _ => (String::new(), Some(StatusCode::BAD_REQUEST)),
    };
    if let Some(status) = status {
        let _ = respond.send_response(status_only(status), true);
        return Ok(());
    }
    let (parts, body) = req.into_parts();
    let connect = ConnectRequest {
        authority,
        headers: parts.headers,
        peer,
        peer_addr,
    };
    let tunnel = match handler(connect).await {
        Ok(u) => u,
        Err(status) => {
            let _ = respond.send_response(status_only(status), true);
            return Ok(());
        }
    };
    let send = respond
        .send_response(status_only(StatusCode::OK), false)
        .map_err(h2_io)?;
    tunnel.carry(H2Stream::new(send, body)).await
}

/// TCP connect (with [`CONNECT_TIMEOUT`]) and TLS handshake to an HBONE peer.
pub async fn connect_tls(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, HboneError> {
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| HboneError::Timeout(addr))?
        .map_err(|e| HboneError::Tcp(addr, e))?;
    tls_over(tcp, addr, config).await
}

/// TLS handshake over an already connected socket (e.g. one made inside a pod's netns).
pub async fn tls_over(
    tcp: TcpStream,
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<TlsStream<TcpStream>, HboneError> {
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(config)
        .connect(crate::mtls::no_server_name(), tcp)
        .await
        .map_err(|e| HboneError::Tls(addr, e))
}

/// The client side of one HBONE connection.
#[derive(Clone)]
pub struct Connection {
    send: h2::client::SendRequest<Bytes>,
}

impl Connection {
    /// Runs the HTTP/2 handshake over a TLS stream; the connection is driven by a task that
    /// ends when the connection does.
    pub async fn open<S>(io: S) -> Result<Connection, HboneError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send, conn) = client_builder().handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HBONE connection ended with an error");
            }
        });
        Ok(Connection { send })
    }

    /// Opens a tunnel to `authority` (`ip:port`, IPv6 in brackets). Anything but 200 fails.
    pub async fn connect(
        &self,
        authority: &str,
        headers: HeaderMap,
    ) -> Result<H2Stream, HboneError> {
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|_| HboneError::Authority(authority.to_string()))?;
        *req.headers_mut() = headers;
        let mut send = self.send.clone().ready().await?;
        let (response, stream) = send.send_request(req, false)?;
        let response = response.await?;
        if response.status() != StatusCode::OK {
            return Err(HboneError::Status(response.status()));
        }
        Ok(H2Stream::new(stream, response.into_body()))
    }
}

/// Reuse of HBONE connections: one per key (Istio's key is source identity, expected
/// destination identities, next-hop address and source IP), carrying many tunnels. A dial for
/// a key happens once even when many tunnels ask at the same time; a connection found closed
/// is dropped and dialled again.
pub struct Pool<K> {
    conns:
        std::sync::Mutex<std::collections::HashMap<K, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl<K> Default for Pool<K> {
    fn default() -> Self {
        Pool {
            conns: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Pool<K> {
    /// Opens a tunnel to `authority` on the pooled connection of `key`, dialling it with `dial`
    /// when there is none (or it has closed). Returns the tunnel and whether a new connection
    /// was dialled.
    pub async fn connect<F, Fut>(
        &self,
        key: &K,
        authority: &str,
        headers: HeaderMap,
        dial: F,
    ) -> Result<(H2Stream, bool), HboneError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Connection, HboneError>>,
    {
        let slot = {
            let mut conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
            conns.entry(key.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            let conn = conn.clone();
            drop(guard);
            match conn.connect(authority, headers.clone()).await {
                Ok(stream) => return Ok((stream, false)),
                // Refusals are answers, not a broken connection.
                Err(e @ HboneError::Status(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "pooled HBONE connection unusable; dialling again");
                    guard = slot.lock().await;
                    *guard = None;
                }
            }
        }
        let conn = match guard.as_ref() {
            // Someone else dialled while we waited.
            Some(c) => c.clone(),
            None => {
                let c = dial().await?;
                *guard = Some(c.clone());
                c
            }
        };
        drop(guard);
        let stream = conn.connect(authority, headers).await?;
        Ok((stream, true))
    }

    /// Drops every pooled connection of `key` (e.g. when its identity's certificate changed).
    pub fn forget(&self, key: &K) {
        self.conns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

/// Caps the HBONE connections held at once from one source address, so that one pod cannot
/// take every socket of the proxy that serves its whole node. A connection takes a
/// [`SourceSlot`] before its handshake and gives it back when it ends.
pub struct SourceLimit {
    max: usize,
    held: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's share of its source's limit; released on drop.
pub struct SourceSlot {
    limit: Arc<SourceLimit>,
    source: std::net::IpAddr,
}

impl SourceLimit {
    pub fn new(max: usize) -> Arc<SourceLimit> {
        Arc::new(SourceLimit {
            max,
            held: Default::default(),
        })
    }

    /// A slot for one more connection from `source`, or `None` when it holds `max` already.
    pub fn acquire(self: &Arc<Self>, source: std::net::IpAddr) -> Option<SourceSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(source).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            limit: self.clone(),
            source,
        })
    }

    /// Connections held now from `source`.
    pub fn held(&self, source: std::net::IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.limit.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_holds_at_most_its_limit_and_slots_come_back() {
        let limit = SourceLimit::new(2);
        let a: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let b: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let first = limit.acquire(a).unwrap();
        let _second = limit.acquire(a).unwrap();
        assert!(limit.acquire(a).is_none(), "a third from the same source");
        assert!(limit.acquire(b).is_some(), "another source is not affected");
        drop(first);
        assert_eq!(limit.held(a), 1);
        assert!(limit.acquire(a).is_some());
    }
}
