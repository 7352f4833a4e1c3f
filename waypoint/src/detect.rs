//! Protocol detection on a tunnelled connection: HTTP/2 with prior knowledge (its 24-byte
//! preface, which gRPC also starts with), HTTP/1.x (a method token and a space), or anything
//! else, carried as TCP. The bytes read to decide are replayed to whoever serves the connection
//! ([`Rewind`]).
//!
//! A client that sends nothing within [`DETECT_TIMEOUT`] (a server-first protocol such as
//! SMTP or MySQL) is TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How long the first bytes may take before the connection is treated as TCP.
pub const DETECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Longest method token looked for (`OPTIONS`, `CONNECT`, WebDAV's longer ones).
const MAX_METHOD: usize = 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tcp,
}

/// What the bytes so far say, if they say enough.
fn classify(buf: &[u8]) -> Option<Detected> {
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (n == H2_PREFACE.len()).then_some(Detected::Http2);
    }
    for (i, b) in buf.iter().enumerate() {
        match b {
            b'A'..=b'Z' | b'-' | b'_' if i < MAX_METHOD => continue,
            b' ' if i > 0 => return Some(Detected::Http1),
            _ => return Some(Detected::Tcp),
        }
    }
    (buf.len() >= MAX_METHOD).then_some(Detected::Tcp)
}

/// Reads from `io` until the protocol is known; returns it and the bytes read.
pub async fn detect<I: AsyncRead + Unpin>(
    io: &mut I,
    timeout: Duration,
) -> io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(64);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await;
        match read {
            Err(_) => return Ok((Detected::Tcp, buf.freeze())),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(0)) => return Ok((Detected::Tcp, buf.freeze())),
            Ok(Ok(_)) => {
                if let Some(d) = classify(&buf) {
                    return Ok((d, buf.freeze()));
                }
            }
        }
    }
}

/// `inner` with `prefix` read first.
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Rewind { prefix, inner }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_the_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI * HTTP/2"), None, "a preface still arriving");
        assert_eq!(classify(b"PRI * HTTP/1.1"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"\x16\x03\x01"),
            Some(Detected::Tcp),
            "a TLS ClientHello"
        );
        assert_eq!(
            classify(b"get / HTTP/1.1"),
            Some(Detected::Tcp),
            "methods are upper case"
        );
        assert_eq!(classify(b" GET"), Some(Detected::Tcp));
        assert_eq!(classify(&[b'A'; 25]), Some(Detected::Tcp));
    }

    #[tokio::test]
    async fn replays_what_it_read_and_treats_silence_as_tcp() {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
        let task = tokio::spawn(async move {
            let mut server = server;
            let (d, prefix) = detect(&mut server, Duration::from_secs(5)).await.unwrap();
            let mut all = Vec::new();
            let mut r = Rewind::new(prefix, server);
            r.read_to_end(&mut all).await.unwrap();
            (d, all)
        });
        client.write_all(b"\r\nSM\r\n\r\nrest").await.unwrap();
        drop(client);
        let (d, all) = task.await.unwrap();
        assert_eq!(d, Detected::Http2);
        assert_eq!(&all[..], &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nrest"[..]);

        let (_client, mut server) = tokio::io::duplex(64);
        let (d, prefix) = detect(&mut server, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!((d, prefix.len()), (Detected::Tcp, 0));
    }
}
