//! The end of the chain: sends the request to the endpoint the balancer picked, on a pooled
//! upstream connection, in the protocol the client spoke (HTTP/2 and gRPC stay HTTP/2, as
//! Envoy's `USE_DOWNSTREAM_PROTOCOL`). The request keeps its authority (`Host` or
//! `:authority`): the app sees the name the client used, not the pod's address.
//!
//! An HTTP/1.1 connection that the app closed while it sat in the pool fails before the
//! request is sent; the request is then sent once more on a new connection. Any other failure
//! before the response headers is a `UC` reset.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{HeaderValue, Version};
use http_body_util::BodyExt;

use crate::balance::Picked;
use crate::body::Hold;
use crate::respond::{Body, BoxError, ProxyError};
use crate::stack::{Downstream, Request, Response};
use crate::upstream::{forwarded, HttpVersion, Sender, Upstream};

#[derive(Clone)]
pub struct Forward {
    upstream: Arc<Upstream>,
}

impl Forward {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Forward { upstream }
    }
}

type Outgoing = http::Request<Body>;

/// The request as it goes upstream in `version`.
fn rewrite(req: Request, version: HttpVersion) -> Result<Outgoing, ProxyError> {
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .uri
        .authority()
        .cloned()
        .or_else(|| {
            parts
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.parse::<Authority>().ok())
        })
        .ok_or_else(|| ProxyError::BadRequest("the request names no host".into()))?;
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    match version {
        HttpVersion::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            if !parts.headers.contains_key(http::header::HOST) {
                let host = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| ProxyError::BadRequest("bad authority".into()))?;
                parts.headers.insert(http::header::HOST, host);
            }
        }
        HttpVersion::Http2 => {
            parts.version = Version::HTTP_2;
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(authority)
                .path_and_query(path)
                .build()
                .map_err(|e| ProxyError::BadRequest(format!("bad request target: {e}")))?;
            parts.headers.remove(http::header::HOST);
        }
    }
    let body = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    Ok(http::Request::from_parts(parts, body))
}

fn reset(e: hyper::Error) -> ProxyError {
    ProxyError::Reset(e.to_string())
}

async fn forward(upstream: Arc<Upstream>, req: Request) -> Result<Response, ProxyError> {
    let Some(picked) = req.extensions().get::<Picked>().cloned() else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    let down = req.extensions().get::<Arc<Downstream>>().cloned();
    let version = if req.version() == Version::HTTP_2 {
        HttpVersion::Http2
    } else {
        HttpVersion::Http1
    };
    let connect_headers = down
        .as_ref()
        .map(|d| forwarded(d.client))
        .unwrap_or_default();
    let mut outgoing = rewrite(req, version)?;
    let (endpoint, port) = (&picked.endpoint, picked.port);
    let resp = match upstream
        .sender(endpoint, port, version, connect_headers.clone())
        .await?
    {
        Sender::Http2(mut send) => {
            send.ready().await.map_err(reset)?;
            let resp = send.send_request(outgoing).await.map_err(reset)?;
            resp.map(|b| b.map_err(|e| Box::new(e) as BoxError).boxed_unsync())
        }
        Sender::Http1(mut send) => {
            let mut fresh = false;
            let resp = loop {
                if send.ready().await.is_ok() {
                    match send.try_send_request(outgoing).await {
                        Ok(resp) => break resp,
                        Err(mut e) => match e.take_message() {
                            // Never sent: the pooled connection was dead. Once more, fresh.
                            Some(req) if !fresh => outgoing = req,
                            _ => return Err(reset(e.into_error())),
                        },
                    }
                }
                if fresh {
                    return Err(ProxyError::Reset(
                        "a new upstream connection was not ready".into(),
                    ));
                }
                fresh = true;
                send = upstream
                    .dial_http1(endpoint, port, connect_headers.clone())
                    .await?;
            };
            let (ip, up) = (endpoint.address, upstream.clone());
            resp.map(|b| {
                let body = b.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
                Hold::new(body)
                    .at_end(move || up.release(ip, port, send))
                    .boxed_unsync()
            })
        }
    };
    Ok(resp)
}

impl tower::Service<Request> for Forward {
    type Response = Response;
    type Error = ProxyError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, ProxyError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        Box::pin(forward(self.upstream.clone(), req))
    }
}
