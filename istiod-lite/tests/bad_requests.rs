//! What the ADS stream answers to requests that are not requests: a gRPC message that does not
//! decode as a DeltaDiscoveryRequest ends the stream with INVALID_ARGUMENT (not OK), written by
//! a raw HTTP/2 client, since a real gRPC client cannot send such a thing.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use istiod_lite::testing::ControlPlaneDir;

const DELTA: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_ends_the_stream_with_invalid_argument() {
    let dir = ControlPlaneDir::new(TOKENS, &[]);
    let running = dir.start().await;
    let tls = tls_client(&running).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("https://localhost{DELTA}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", format!("Bearer {NODE1_TOKEN}"))
        .body(())
        .unwrap();
    let (response, mut body) = client.send_request(request, false).unwrap();
    // One gRPC frame (uncompressed, 2 bytes): field 1, length-delimited, with a length that
    // runs past the end.
    body.send_data(Bytes::from_static(&[0, 0, 0, 0, 2, 0x0a, 0x7f]), false)
        .unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer in time")
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut recv = response.into_body();
    while let Some(chunk) = recv.data().await {
        chunk.unwrap();
    }
    let trailers = recv.trailers().await.unwrap().expect("trailers");
    assert_eq!(trailers["grpc-status"], "3", "{trailers:?}");
    let message = trailers["grpc-message"].to_str().unwrap();
    assert!(message.contains("did not decode"), "{message}");
}
