//! The HTTP side of the echo server through real sockets and hyper's clients: the echoed fields
//! over HTTP/1.1 and h2c, keep-alive, fault injection, the probe and bench paths, and draining
//! on shutdown.

mod harness;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

/// Request headers as (name, value) pairs.
type Headers = &'static [(&'static str, &'static str)];

/// A response read whole.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    fn text(&self) -> &str {
        std::str::from_utf8(&self.body).expect("a UTF-8 body")
    }
}

/// An HTTP/1.1 connection and the client's own address on it.
async fn connect_http1(addr: SocketAddr) -> (http1::SendRequest<Empty<Bytes>>, SocketAddr) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let local = stream.local_addr().expect("local address");
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(connection);
    (sender, local)
}

async fn get1(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::get(path).header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    sender.ready().await.expect("connection ready");
    let response = sender
        .send_request(request.body(Empty::new()).expect("request"))
        .await
        .expect("response");
    let (parts, body) = response.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.expect("body").to_bytes(),
    }
}

/// One GET on a fresh HTTP/1.1 connection.
async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let (mut sender, _) = connect_http1(addr).await;
    get1(&mut sender, addr, path, headers).await
}

#[tokio::test]
async fn http1_echo_describes_the_request() {
    let addr = harness::start().await;
    let (mut sender, local) = connect_http1(addr).await;
    let reply = get1(
        &mut sender,
        addr,
        "/some/path?x=1",
        &[("x-demo", "a"), ("x-demo", "b"), ("x-other", "c")],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["x-echo-service"], "echo-v1");
    assert_eq!(reply.headers["content-type"], "application/json");
    let echo = reply.json();
    assert_eq!(echo["service"], "echo");
    assert_eq!(echo["version"], "v1");
    assert_eq!(echo["hostname"], harness::HOSTNAME);
    // The address on the server's socket is the client's own: what the demo relies on.
    assert_eq!(echo["peer"], local.to_string());
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/some/path");
    assert_eq!(echo["protocol"], "HTTP/1.1");
    assert_eq!(echo["headers"]["x-demo"], "a, b");
    assert_eq!(echo["headers"]["x-other"], "c");
    assert_eq!(echo["headers"]["host"], addr.to_string());
    assert_eq!(echo["body_bytes"], 0);
}

#[tokio::test]
async fn http1_keeps_the_connection_alive() {
    let addr = harness::start().await;
    let (mut sender, local) = connect_http1(addr).await;
    let first = get1(&mut sender, addr, "/one", &[]).await;
    assert!(!sender.is_closed());
    let second = get1(&mut sender, addr, "/two", &[]).await;
    // Same peer port on both: the second request came over the first connection.
    assert_eq!(first.json()["peer"], local.to_string());
    assert_eq!(second.json()["peer"], local.to_string());
    assert_eq!(second.json()["path"], "/two");
}

#[tokio::test]
async fn posted_bodies_are_counted_and_the_connection_reused() {
    let addr = harness::start().await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    for _ in 0..2 {
        let request = Request::post("/upload")
            .header("host", addr.to_string())
            .body(http_body_util::Full::new(Bytes::from(vec![7u8; 10_000])))
            .expect("request");
        sender.ready().await.expect("connection reused");
        let response = sender.send_request(request).await.expect("response");
        let body = response.into_body().collect().await.expect("body");
        let echo: Value = serde_json::from_slice(&body.to_bytes()).expect("JSON");
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["body_bytes"], 10_000);
    }
}

#[tokio::test]
async fn h2c_prior_knowledge_on_the_same_port() {
    let addr = harness::start().await;
    let stream = TcpStream::connect(addr).await.expect("connect");
    let local = stream.local_addr().expect("local address");
    let (mut sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .expect("h2c handshake");
    tokio::spawn(connection);
    for path in ["/first", "/second"] {
        let request = Request::get(format!("http://{addr}{path}"))
            .header("x-demo", "h2")
            .body(Empty::<Bytes>::new())
            .expect("request");
        sender.ready().await.expect("ready");
        let response = sender.send_request(request).await.expect("response");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["x-echo-service"], "echo-v1");
        let body = response.into_body().collect().await.expect("body");
        let echo: Value = serde_json::from_slice(&body.to_bytes()).expect("JSON");
        assert_eq!(echo["protocol"], "HTTP/2.0");
        assert_eq!(echo["path"], path);
        assert_eq!(echo["peer"], local.to_string());
        assert_eq!(echo["headers"]["x-demo"], "h2");
    }
}

#[tokio::test]
async fn delay_from_query_and_header() {
    let addr = harness::start().await;
    let delay = Duration::from_millis(200);

    let started = Instant::now();
    let reply = get(addr, "/?delay=200ms", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= delay, "took {:?}", started.elapsed());

    let started = Instant::now();
    let reply = get(addr, "/", &[("x-echo-delay", "200ms")]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(started.elapsed() >= delay, "took {:?}", started.elapsed());
}

#[tokio::test]
async fn status_from_query_and_header_keeps_the_body() {
    let addr = harness::start().await;
    let reply = get(addr, "/fail?status=503", &[]).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.json()["path"], "/fail");
    assert_eq!(reply.headers["x-echo-service"], "echo-v1");

    let reply = get(addr, "/", &[("x-echo-status", "418")]).await;
    assert_eq!(reply.status, StatusCode::IM_A_TEAPOT);
    assert_eq!(reply.json()["service"], "echo");
}

#[tokio::test]
async fn invalid_faults_are_refused_with_a_reason() {
    let addr = harness::start().await;
    // (path, headers, what the reason must say)
    type Case = (&'static str, Headers, &'static str);
    let cases: [Case; 5] = [
        (
            "/?delay=abc",
            &[],
            "query parameter delay \"abc\" is invalid",
        ),
        ("/?delay=150", &[], "missing unit"),
        ("/?delay=61s", &[], "capped at 60s"),
        (
            "/?status=99",
            &[],
            "query parameter status \"99\" is invalid",
        ),
        ("/", &[("x-echo-status", "nope")], "header x-echo-status"),
    ];
    for (path, headers, reason) in cases {
        let reply = get(addr, path, headers).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}");
        assert!(
            reply.text().contains(reason),
            "{path}: {:?} lacks {reason:?}",
            reply.text()
        );
    }
}

#[tokio::test]
async fn health_and_bench() {
    let addr = harness::start().await;
    let reply = get(addr, "/healthz", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok\n");

    // The bench path ignores fault parameters: it is the fixed, cheap answer.
    let reply = get(addr, "/bench?delay=5s", &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "ok\n");
    assert_eq!(reply.headers["x-echo-service"], "echo-v1");
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let config = mesh_echo::Config::new("echo", "v1").expect("valid name");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(mesh_echo::serve(listener, config, async {
        let _ = stopped.await;
    }));
    let (mut sender, _) = connect_http1(addr).await;
    assert_eq!(
        get1(&mut sender, addr, "/", &[]).await.status,
        StatusCode::OK
    );

    stop.send(()).expect("server waiting");
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("serve returns once idle connections close")
        .expect("serve task");
    let refused = TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener still open after shutdown");
}
