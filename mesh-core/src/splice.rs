//! Copying a connection both ways with buffers that grow with the traffic.
//!
//! Each direction starts with a 16 KiB buffer, small enough that thousands of idle or chatty
//! connections cost little, and doubles it (up to 256 KiB) whenever a read fills it, so a bulk
//! transfer moves large chunks per system call and per HTTP/2 frame. A direction ends when its
//! reader ends: the writer is flushed and shut down (a TCP half-close, or END_STREAM on an HBONE
//! stream); the copy ends when both have.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const FIRST_BUFFER: usize = 16 << 10;
const MAX_BUFFER: usize = 256 << 10;

struct Direction {
    buf: Vec<u8>,
    /// Bytes `buf[pos..end]` are read and not yet written.
    pos: usize,
    end: usize,
    read_done: bool,
    done: bool,
    need_flush: bool,
    copied: u64,
}

impl Direction {
    fn new() -> Direction {
        Direction {
            buf: Vec::new(),
            pos: 0,
            end: 0,
            read_done: false,
            done: false,
            need_flush: false,
            copied: 0,
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.end && !self.read_done {
                if self.buf.is_empty() {
                    // Allocated on first use: a direction that never carries data costs nothing.
                    self.buf = vec![0; FIRST_BUFFER];
                }
                let mut rb = ReadBuf::new(&mut self.buf);
                match reader.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        // Nothing more to read now: push out what was written.
                        if self.need_flush {
                            ready!(writer.as_mut().poll_flush(cx))?;
                            self.need_flush = false;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.read_done = true;
                        } else {
                            self.pos = 0;
                            self.end = n;
                        }
                    }
                }
            }
            while self.pos < self.end {
                let n = ready!(writer
                    .as_mut()
                    .poll_write(cx, &self.buf[self.pos..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.copied += n as u64;
                self.need_flush = true;
            }
            if self.end == self.buf.len() && self.buf.len() < MAX_BUFFER {
                // The last read filled the buffer: this is a bulk transfer.
                let len = (self.buf.len() * 2).min(MAX_BUFFER);
                self.buf.resize(len, 0);
            }
            if self.read_done {
                ready!(writer.as_mut().poll_flush(cx))?;
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both directions have ended; returns the bytes
/// copied each way (a to b, b to a). An error in either direction ends the copy.
pub async fn copy_bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (mut ab, mut ba) = (Direction::new(), Direction::new());
    poll_fn(|cx| {
        if !ab.done {
            if let Poll::Ready(Err(e)) = ab.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                return Poll::Ready(Err(e));
            }
        }
        if !ba.done {
            if let Poll::Ready(Err(e)) = ba.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                return Poll::Ready(Err(e));
            }
        }
        if ab.done && ba.done {
            Poll::Ready(Ok((ab.copied, ba.copied)))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_half_closes() {
        let (mut client, mut a) = tokio::io::duplex(1 << 20);
        let (mut b, mut server) = tokio::io::duplex(1 << 20);
        let copy = tokio::spawn(async move { copy_bidirectional(&mut a, &mut b).await });
        // A bulk upload larger than the largest buffer, then a half-close.
        let upload: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        client.write_all(&upload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, upload, "every byte arrives, in order, then EOF");
        // The other direction still works after the half-close.
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"reply");
        let (up, down) = copy.await.unwrap().unwrap();
        assert_eq!((up, down), (upload.len() as u64, 5));
    }

    #[tokio::test]
    async fn buffers_grow_only_for_bulk_traffic() {
        let mut d = Direction::new();
        let (mut w, mut r) = tokio::io::duplex(1 << 20);
        let (mut sink, _keep) = tokio::io::duplex(1 << 20);
        w.write_all(&[1; 10]).await.unwrap();
        poll_fn(|cx| {
            let _ = d.poll_copy(cx, Pin::new(&mut r), Pin::new(&mut sink));
            Poll::Ready(())
        })
        .await;
        assert_eq!(
            d.buf.len(),
            FIRST_BUFFER,
            "a small message keeps the small buffer"
        );
        w.write_all(&vec![2; 600_000]).await.unwrap();
        poll_fn(|cx| {
            let _ = d.poll_copy(cx, Pin::new(&mut r), Pin::new(&mut sink));
            Poll::Ready(())
        })
        .await;
        assert_eq!(d.buf.len(), MAX_BUFFER, "bulk traffic grows it to the cap");
        assert_eq!(d.copied, 600_010);
    }

    #[tokio::test]
    async fn a_write_error_ends_the_copy() {
        let (mut client, mut a) = tokio::io::duplex(64);
        let (mut b, server) = tokio::io::duplex(64);
        drop(server);
        client.write_all(b"hello").await.unwrap();
        let r = copy_bidirectional(&mut a, &mut b).await;
        assert!(r.is_err(), "writing to a closed peer fails the copy");
    }
}
