//! The plain HTTP/1.1 ports every component serves for people and probes (ztunnel's admin,
//! metrics and readiness ports, istiod-lite's monitoring port): one accept loop, one way to
//! answer, and one readiness answer (200 `ready`, or 503 naming what is missing) so probes and
//! people read the same thing from every binary.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub type Body = Full<Bytes>;

/// A response with a body and its content type.
pub fn respond(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// `value` as pretty JSON (500 in the unlikely case it does not serialize).
pub fn json(value: &impl serde::Serialize) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", body),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            e.to_string(),
        ),
    }
}

/// The readiness answer: 200 `ready` when nothing is `missing`, else 503 listing it.
pub fn readiness(missing: &[&str]) -> Response<Body> {
    if missing.is_empty() {
        respond(StatusCode::OK, "text/plain", "ready\n")
    } else {
        respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("not ready: {}\n", missing.join(", ")),
        )
    }
}

/// Serves `handle` on `listener` until the task is dropped; `port` names it in logs. The
/// handler is told who asks (some views are for local eyes only).
pub async fn serve<F>(listener: TcpListener, port: &'static str, handle: F)
where
    F: Fn(&Request<Incoming>, SocketAddr) -> Response<Body> + Send + Sync + 'static,
{
    let handle = Arc::new(handle);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, most likely: wait instead of spinning.
                tracing::warn!(port, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let resp = handle(&req, peer);
                async move { Ok::<_, Infallible>(resp) }
            });
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(port, error = %e, "connection ended with an error");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn text(resp: Response<Body>) -> (StatusCode, String) {
        let code = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn readiness_says_what_is_missing() {
        assert_eq!(
            text(readiness(&[])).await,
            (StatusCode::OK, "ready\n".into())
        );
        assert_eq!(
            text(readiness(&["xDS not synced", "pods not recovered"])).await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: xDS not synced, pods not recovered\n".into()
            )
        );
    }

    #[tokio::test]
    async fn serves_over_a_real_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, "test", |req, peer| {
            assert!(peer.ip().is_loopback());
            respond(StatusCode::OK, "text/plain", req.uri().path().to_string())
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /some/path HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK"), "{out}");
        assert!(out.ends_with("/some/path"), "{out}");
        server.abort();
    }
}
