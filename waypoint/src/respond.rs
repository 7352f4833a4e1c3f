//! Every failure of the L7 chain as one typed error, and the one place that turns it into the
//! response a client gets. The answers are Envoy's, so that the greps and runbooks of Istio
//! waypoint users keep working: the status, the body text, and the `response_flags` of the
//! access log and of `istio_requests_total`. A gRPC request gets a trailers-only answer
//! (HTTP 200, `grpc-status`, `grpc-message`) with the status gRPC maps the HTTP code to.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the waypoint sends downstream.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Envoy's response flags, as the access log and metrics carry them (`-` when none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags(pub &'static str);

impl Flags {
    pub const NONE: Flags = Flags("-");
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The destination has no endpoint that is ready and serves the port.
    #[error("no healthy upstream")]
    NoHealthyUpstream,
    /// The connection to the chosen endpoint (TCP, HBONE, or the HTTP handshake on it) failed.
    #[error("upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: {0}")]
    Connect(String),
    /// The endpoint closed or reset the request before answering.
    #[error("upstream connect error or disconnect/reset before headers. reset reason: connection termination")]
    Reset(String),
    /// The request cannot be forwarded as it is.
    #[error("{0}")]
    BadRequest(String),
    /// An AuthorizationPolicy denied it: the one named, or (`None`) ALLOW policies exist and
    /// none allowed it.
    #[error("RBAC: access denied")]
    Denied(Option<String>),
    /// No route of the destination's HTTPRoutes matches.
    #[error("")]
    NoRoute,
    /// The rule's backendRef does not resolve (Gateway API: answer 500).
    #[error("")]
    InvalidBackend(String),
    /// `timeouts.request` passed before the response's headers came.
    #[error("upstream request timeout")]
    Timeout,
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoHealthyUpstream | ProxyError::Connect(_) | ProxyError::Reset(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::Denied(_) => StatusCode::FORBIDDEN,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::InvalidBackend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    pub fn flags(&self) -> Flags {
        match self {
            ProxyError::NoHealthyUpstream => Flags("UH"),
            ProxyError::Connect(_) => Flags("UF"),
            ProxyError::Reset(_) => Flags("UC"),
            ProxyError::BadRequest(_) => Flags("DPE"),
            // Envoy's RBAC filter sets no response flag (its detail says the policy).
            ProxyError::Denied(_) => Flags::NONE,
            ProxyError::NoRoute => Flags("NR"),
            ProxyError::InvalidBackend(_) => Flags("NC"),
            ProxyError::Timeout => Flags("UT"),
        }
    }

    /// What the log says beyond the client's text (the underlying error).
    pub fn detail(&self) -> &str {
        match self {
            ProxyError::Reset(d)
            | ProxyError::Connect(d)
            | ProxyError::BadRequest(d)
            | ProxyError::InvalidBackend(d) => d,
            ProxyError::NoRoute => "no route matched",
            ProxyError::Timeout => "",
            ProxyError::NoHealthyUpstream => "",
            ProxyError::Denied(Some(p)) => p,
            ProxyError::Denied(None) => "allow policies exist, but none allowed",
        }
    }
}

/// The gRPC status for an HTTP status of a proxy-made answer (gRPC's HTTP-to-status mapping).
pub fn grpc_status(code: StatusCode) -> u32 {
    match code.as_u16() {
        400 => 13,             // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        429 | 502..=504 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` stays as it is.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The answer to a request the waypoint could not (or would not) forward.
pub fn local_reply(status: StatusCode, text: &str, flags: Flags, grpc: bool) -> Response<Body> {
    let mut resp = if grpc {
        let mut r = Response::new(full(Bytes::new()));
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(grpc_status(status)));
        if let Ok(v) = HeaderValue::from_str(&grpc_message(text)) {
            h.insert("grpc-message", v);
        }
        r
    } else {
        let mut r = Response::new(full(text.to_string()));
        *r.status_mut() = status;
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static("text/plain"));
        r
    };
    resp.extensions_mut().insert(flags);
    resp
}

pub fn error_reply(e: &ProxyError, grpc: bool) -> Response<Body> {
    local_reply(e.status(), &e.to_string(), e.flags(), grpc)
}

/// The layer that answers every error of the layers below it, and logs it once.
#[derive(Clone)]
pub struct Respond<S> {
    inner: S,
}

impl<S> Respond<S> {
    pub fn layer() -> impl tower::Layer<S, Service = Respond<S>> + Clone {
        tower::layer::layer_fn(|inner| Respond { inner })
    }
}

type Request = crate::stack::Request;

impl<S> tower::Service<Request> for Respond<S>
where
    S: tower::Service<Request, Response = Response<Body>, Error = ProxyError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        // The layers below are always ready (their work happens per request).
        match self.inner.poll_ready(cx) {
            std::task::Poll::Ready(_) => std::task::Poll::Ready(Ok(())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let grpc = crate::stack::is_grpc(&req);
        let authority = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let path = req.uri().path().to_string();
        let fut = self.inner.call(req);
        Box::pin(async move {
            match fut.await {
                Ok(resp) => Ok(resp),
                Err(e) => {
                    tracing::warn!(%authority, %path, status = e.status().as_u16(), response_flags = e.flags().0,
                        detail = e.detail(), "request not forwarded: {e}");
                    Ok(error_reply(&e, grpc))
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn text(r: Response<Body>) -> String {
        let b = r.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&b).into_owned()
    }

    #[tokio::test]
    async fn errors_answer_as_envoy_does() {
        let r = error_reply(&ProxyError::NoHealthyUpstream, false);
        assert_eq!(r.status(), 503);
        assert_eq!(r.extensions().get::<Flags>(), Some(&Flags("UH")));
        assert_eq!(text(r).await, "no healthy upstream");

        let r = error_reply(&ProxyError::Connect("connection refused".into()), false);
        assert_eq!(r.extensions().get::<Flags>(), Some(&Flags("UF")));
        assert_eq!(
            text(r).await,
            "upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: connection refused"
        );
    }

    #[test]
    fn grpc_requests_get_a_grpc_status() {
        let r = error_reply(&ProxyError::NoHealthyUpstream, true);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy upstream");
        let r = local_reply(
            StatusCode::FORBIDDEN,
            "RBAC: access denied",
            Flags::NONE,
            true,
        );
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(grpc_message("50% é"), "50%25 %C3%A9");
    }
}
