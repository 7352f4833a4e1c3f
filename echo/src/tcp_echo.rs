//! A raw TCP echo server: every byte a client sends comes back on the same connection, in order,
//! and the client's FIN is answered with ours once everything before it was sent back. The soak
//! (`e2e/benches/soak.rs`) checks what it gets back against what it sent, so the mesh's data
//! path is verified byte for byte, half-close included.

use std::future::Future;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// Serves until `shutdown` completes; each connection runs in its own task and ends on its own.
pub async fn serve(listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(async move {
                        match echo(stream).await {
                            Ok(bytes) => tracing::debug!(%peer, bytes, "connection ended"),
                            Err(e) => tracing::info!(%peer, error = %e, "connection failed"),
                        }
                    });
                }
                // Out of descriptors or a connection reset before accept: the next one may work.
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
        }
    }
}

/// Copies the connection's input to its output until EOF, then closes the write side. Returns
/// the bytes echoed.
async fn echo(mut stream: TcpStream) -> std::io::Result<u64> {
    let (mut reader, mut writer) = stream.split();
    let bytes = tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn echoes_every_byte_in_order_and_answers_a_half_close() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, async {
            let _ = stopped.await;
        }));
        let sent: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = client.split();
        let write = async {
            w.write_all(&sent).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut got = Vec::new();
        let read = r.read_to_end(&mut got);
        let ((), n) = tokio::join!(write, read);
        assert_eq!(n.unwrap(), sent.len(), "EOF came after every byte");
        assert!(got == sent, "the bytes came back unchanged");
        let _ = stop.send(());
        server.await.unwrap();
    }
}
