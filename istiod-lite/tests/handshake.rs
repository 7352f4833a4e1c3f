//! The xDS/CA port bounds how long a connection may take to start: a client that finishes the
//! TLS handshake and then never sends the HTTP/2 preface is closed at the same deadline as one
//! that never says hello; a real gRPC client is not affected.

mod common;

use std::time::{Duration, Instant};

use common::*;
use istiod_lite::testing::ControlPlaneDir;
use mesh_core::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_core::ADDRESS_TYPE_URL;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes; how long that took, or `None` if still open after `max`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(
    io: &mut S,
    max: Duration,
) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 256];
    tokio::time::timeout(max, async {
        loop {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
    .map(|()| start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_that_never_sends_the_http2_preface_is_closed() {
    let dir = ControlPlaneDir::new(TOKENS, &[]);
    let mut config = dir.config();
    config.handshake_timeout = Duration::from_millis(500);
    let running = istiod_lite::app::start(config).await.expect("starts");

    // TLS done, then silence.
    let mut conn = tls_client(&running).await;
    let took = closed_within(&mut conn, Duration::from_secs(10)).await;
    assert!(took.is_some(), "still open after 10 s");

    // Plain TCP that never says hello: the same bound.
    let mut silent = TcpStream::connect(running.xds_addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t >= Duration::from_millis(400)),
        "{took:?}"
    );

    // Garbage after TLS is not HTTP/2: closed at once.
    let mut conn = tls_client(&running).await;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut conn, Duration::from_secs(10)).await;
    assert!(
        took.is_some_and(|t| t < Duration::from_millis(400)),
        "{took:?}"
    );

    // A real client still streams.
    let h = istiod_lite::testing::Harness { dir, running };
    let mut ads = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    ads.tx
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ads.rx.message())
        .await
        .expect("a response in time")
        .unwrap()
        .expect("a response");
    assert_eq!(first.type_url, ADDRESS_TYPE_URL);
}
