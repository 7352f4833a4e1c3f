//! The gRPC side of the echo server, called by tonic's client (a standard gRPC stack, not this
//! crate's framing) and, for bodies no real client would send, by hyper's HTTP/2 client.

mod harness;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use mesh_echo::grpc::proto::{EchoRequest, EchoResponse, ECHO_PATH};
use tokio::net::TcpStream;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;

async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// A unary call to `path` with `metadata`, sending `message`.
async fn call(
    channel: Channel,
    path: &'static str,
    message: &str,
    metadata: &[(&'static str, &str)],
) -> Result<EchoResponse, Status> {
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.expect("channel ready");
    let mut request = tonic::Request::new(EchoRequest {
        message: message.to_owned(),
    });
    for (name, value) in metadata {
        request
            .metadata_mut()
            .insert(*name, value.parse().expect("metadata value"));
    }
    let codec = ProstCodec::<EchoRequest, EchoResponse>::default();
    client
        .unary(request, PathAndQuery::from_static(path), codec)
        .await
        .map(tonic::Response::into_inner)
}

/// Dials the server itself, so the test knows the client's address on the connection.
#[derive(Clone)]
struct RecordingConnector {
    server: SocketAddr,
    local: Arc<Mutex<Option<SocketAddr>>>,
}

impl Service<Uri> for RecordingConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let server = self.server;
        let local = Arc::clone(&self.local);
        Box::pin(async move {
            let stream = TcpStream::connect(server).await?;
            *local.lock().expect("lock") = Some(stream.local_addr()?);
            Ok(TokioIo::new(stream))
        })
    }
}

#[tokio::test]
async fn tonic_client_gets_its_echo() {
    let addr = harness::start().await;
    let connector = RecordingConnector {
        server: addr,
        local: Arc::default(),
    };
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect_with_connector(connector.clone())
        .await
        .expect("connect");
    let response = call(channel, ECHO_PATH, "hello mesh", &[("x-demo", "yes")])
        .await
        .expect("OK");
    let local = connector.local.lock().expect("lock").expect("dialed");
    assert_eq!(response.message, "hello mesh");
    assert_eq!(response.service, "echo");
    assert_eq!(response.version, "v1");
    assert_eq!(response.peer, local.to_string());
    assert_eq!(
        response.metadata.get("x-demo").map(String::as_str),
        Some("yes")
    );
    // Protocol headers are not metadata.
    assert!(!response.metadata.contains_key("content-type"));
    assert!(!response.metadata.contains_key("te"));
}

#[tokio::test]
async fn injected_grpc_status() {
    let addr = harness::start().await;
    let status = call(
        channel(addr).await,
        ECHO_PATH,
        "hi",
        &[("x-echo-grpc-status", "7")],
    )
    .await
    .expect_err("injected failure");
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(status.message(), "status 7 injected by echo-v1");

    // Zero asks for OK, which is the normal echo.
    let response = call(
        channel(addr).await,
        ECHO_PATH,
        "hi",
        &[("x-echo-grpc-status", "0")],
    )
    .await
    .expect("OK");
    assert_eq!(response.message, "hi");
}

#[tokio::test]
async fn injected_http_status_maps_to_a_grpc_code() {
    let addr = harness::start().await;
    let status = call(
        channel(addr).await,
        ECHO_PATH,
        "hi",
        &[("x-echo-status", "503")],
    )
    .await
    .expect_err("injected failure");
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn injected_delay() {
    let addr = harness::start().await;
    let started = Instant::now();
    let response = call(
        channel(addr).await,
        ECHO_PATH,
        "slow",
        &[("x-echo-delay", "200ms")],
    )
    .await
    .expect("OK");
    assert_eq!(response.message, "slow");
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn invalid_fault_is_invalid_argument() {
    let addr = harness::start().await;
    let status = call(
        channel(addr).await,
        ECHO_PATH,
        "hi",
        &[("x-echo-delay", "soon")],
    )
    .await
    .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status
            .message()
            .contains("header x-echo-delay \"soon\" is invalid"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn unknown_methods_are_unimplemented() {
    let addr = harness::start().await;
    for path in ["/mesh.echo.v1.Echo/Shout", "/other.Service/Echo"] {
        let status = call(channel(addr).await, path, "hi", &[])
            .await
            .expect_err("unknown method");
        assert_eq!(status.code(), Code::Unimplemented, "{path}");
        assert!(status.message().contains(path), "{}", status.message());
    }
}

/// Posts raw bytes as a gRPC request body and returns the HTTP status and grpc-status.
async fn raw_call(addr: SocketAddr, body: &'static [u8]) -> (StatusCode, String, String) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    let request = Request::post(format!("http://{addr}{ECHO_PATH}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(body)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    let (parts, body) = response.into_parts();
    let collected = body.collect().await.expect("body");
    // Errors come as Trailers-Only: in the headers; a success in the trailers.
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        parts
            .headers
            .get(name)
            .or_else(|| trailers.get(name))
            .map(|v| v.to_str().expect("ASCII").to_owned())
            .unwrap_or_default()
    };
    (parts.status, field("grpc-status"), field("grpc-message"))
}

#[tokio::test]
async fn malformed_frames_get_a_status_and_a_reason() {
    let addr = harness::start().await;
    let cases: [(&[u8], &str, &str); 5] = [
        (b"", "13", "request has no message"),
        (b"\0\0\0", "13", "prefix is 3 bytes"),
        (b"\0\0\0\0\x0aabc", "13", "declares 10 bytes but 3 follow"),
        (b"\x01\0\0\0\x01a", "12", "compressed"),
        // A valid frame around bytes that are not an EchoRequest (field 1 with a bad length).
        (b"\0\0\0\0\x02\x0a\x05", "13", "not an EchoRequest"),
    ];
    for (body, code, reason) in cases {
        let (status, grpc_status, message) = raw_call(addr, body).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        assert_eq!(grpc_status, code, "{body:?}");
        assert!(message.contains(reason), "{body:?}: {message:?}");
    }
    // And a well-formed one, to show the raw path itself works: empty message, status 0.
    let (status, grpc_status, _) = raw_call(addr, b"\0\0\0\0\0").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(grpc_status, "0");
}
