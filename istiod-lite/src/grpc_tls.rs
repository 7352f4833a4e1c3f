//! The TLS 1.3 listener under the gRPC server: accepts TCP, completes the TLS handshake and
//! reads the client's HTTP/2 preface off the accept loop, both within one deadline (so a peer
//! that goes silent at either step costs nothing for long), and hands finished connections to
//! tonic, the preface put back in front of what follows.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A server-side TLS connection tonic can serve, and what of the preface (read here, to bound
/// it) the HTTP/2 server has not been given yet.
pub struct TlsConn(TlsStream<TcpStream>, &'static [u8]);

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().0.connect_info()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if !me.1.is_empty() {
            let n = me.1.len().min(buf.remaining());
            buf.put_slice(&me.1[..n]);
            me.1 = &me.1[n..];
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.0).poll_read(cx, buf)
    }
}

#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("the TLS handshake and HTTP/2 preface took longer than {0:?}")]
    Timeout(Duration),
    #[error("reading the HTTP/2 preface: {0}")]
    Read(std::io::Error),
    #[error("the client did not start with the HTTP/2 preface (not a gRPC client?)")]
    NotHttp2,
}

/// TLS, then the 24 bytes of the HTTP/2 preface, within `timeout` together.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<TlsConn, HandshakeError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))?
        .map_err(HandshakeError::Tls)?;
    let mut preface = [0u8; PREFACE.len()];
    tokio::time::timeout_at(
        deadline,
        tokio::io::AsyncReadExt::read_exact(&mut tls, &mut preface),
    )
    .await
    .map_err(|_| HandshakeError::Timeout(timeout))?
    .map_err(HandshakeError::Read)?;
    if &preface != PREFACE {
        return Err(HandshakeError::NotHttp2);
    }
    Ok(TlsConn(tls, PREFACE))
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// Accepts TLS connections on `listener` and yields them as a stream for
/// `serve_with_incoming`. The accept task (returned, so its owner can stop it) also ends,
/// closing the listener, when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> (
    ReceiverStream<std::io::Result<TlsConn>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = tx.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "xDS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let conn_tx = tx.clone();
            tokio::spawn(async move {
                match handshake(&acceptor, tcp, handshake_timeout).await {
                    Ok(conn) => {
                        let _ = conn_tx.send(Ok(conn)).await;
                    }
                    Err(e) => {
                        tracing::info!(%peer, error = %e, "xDS connection closed before it started")
                    }
                }
            });
        }
    });
    (ReceiverStream::new(rx), task)
}
