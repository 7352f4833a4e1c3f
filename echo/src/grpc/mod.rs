//! The gRPC echo: the unary method `mesh.echo.v1.Echo/Echo`, served by hand on the same hyper
//! connection as plain HTTP (a request is gRPC when its content-type is `application/grpc`,
//! alone or with a `+format` or parameters). Every failure is a deliberate gRPC status:
//! UNIMPLEMENTED for other methods, INVALID_ARGUMENT for a bad fault value, INTERNAL for a body
//! that is not one well-formed `EchoRequest`. A gRPC content-type over HTTP/1.1 (505) or with a
//! method other than POST (405) is refused in plain HTTP, since no gRPC client sends either.
//!
//! Faults come as metadata: `x-echo-delay` waits before answering, `x-echo-grpc-status` answers
//! that status, `x-echo-status` answers that HTTP status without gRPC trailers, which a client
//! maps to a gRPC code itself (503 becomes UNAVAILABLE), as it would for a failing proxy.

pub mod proto;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Version};
use prost::Message;
use tracing::debug;

use crate::config::{Config, SERVICE_HEADER};
use crate::fault::Fault;
use crate::response::{Answer, ResponseBody};

use self::proto::{EchoRequest, EchoResponse, ECHO_PATH};
use self::wire::Code;

/// The largest request body read: gRPC's customary default receive limit.
const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

const GRPC_CONTENT_TYPE: &str = "application/grpc";

/// Whether a request is a gRPC call (not gRPC-Web, whose framing of trailers differs).
pub fn is_grpc(request: &Request<Incoming>) -> bool {
    let Some(content_type) = request.headers().get(CONTENT_TYPE) else {
        return false;
    };
    let Some(rest) = content_type
        .as_bytes()
        .strip_prefix(GRPC_CONTENT_TYPE.as_bytes())
    else {
        return false;
    };
    matches!(rest.first(), None | Some(b'+') | Some(b';'))
}

/// Answers one gRPC call.
pub async fn answer(request: Request<Incoming>, peer: SocketAddr, config: &Config) -> Answer {
    if request.version() != Version::HTTP_2 {
        return Answer::refuse(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            format!(
                "gRPC needs HTTP/2; this call came over {}",
                crate::http::protocol(request.version())
            ),
        );
    }
    if request.method() != Method::POST {
        return Answer::refuse(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("gRPC calls are POST requests, not {}", request.method()),
        );
    }
    if request.uri().path() != ECHO_PATH {
        let message = format!(
            "unknown method {}; this server implements {ECHO_PATH}",
            request.uri().path()
        );
        return refuse(Code::UNIMPLEMENTED, message, config);
    }
    let fault = match Fault::from_grpc(request.headers()) {
        Ok(fault) => fault,
        Err(e) => return refuse(Code::INVALID_ARGUMENT, e.to_string(), config),
    };
    let (parts, body) = request.into_parts();
    let body = match Limited::new(body, MAX_REQUEST_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            let message = format!("request is larger than {MAX_REQUEST_BYTES} bytes");
            return refuse(Code::RESOURCE_EXHAUSTED, message, config);
        }
        Err(e) => {
            let message = format!("reading the request failed: {e}");
            return refuse(Code::INTERNAL, message, config);
        }
    };
    let echo_request = match wire::decode_unary(&body) {
        Ok(message) => match EchoRequest::decode(message) {
            Ok(echo_request) => echo_request,
            Err(e) => {
                let message = format!("request is not an EchoRequest: {e}");
                return refuse(Code::INTERNAL, message, config);
            }
        },
        Err(e) => return refuse(e.code(), e.to_string(), config),
    };

    if let Some(delay) = fault.delay {
        // The access log line comes only after the delay; this says a call is being held.
        debug!(%peer, ?delay, "delaying the response as asked");
        tokio::time::sleep(delay).await;
    }
    let mut answer = if let Some(status) = fault.status.filter(|s| *s != StatusCode::OK) {
        // No body: clients (tonic among them) read a body as gRPC frames whatever the status,
        // and only an empty one leaves them to map the HTTP status to a code.
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = status;
        grpc_headers(response.headers_mut(), config);
        Answer::new(response)
    } else if let Some(code) = fault.grpc_status.filter(|c| *c != Code::OK) {
        let message = format!("status {code} injected by {}", config.label());
        status_only(code, &message, config)
    } else {
        let echo_response = EchoResponse {
            message: echo_request.message,
            service: config.name().to_owned(),
            version: config.version().to_owned(),
            peer: peer.to_string(),
            metadata: metadata(&parts.headers),
        };
        match wire::encode(&echo_response.encode_to_vec()) {
            Ok(framed) => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", Code::OK.header_value());
                let mut response = Response::new(ResponseBody::with_trailers(framed, trailers));
                grpc_headers(response.headers_mut(), config);
                Answer {
                    grpc_status: Some(Code::OK),
                    ..Answer::new(response)
                }
            }
            Err(e) => status_only(Code::RESOURCE_EXHAUSTED, &e.to_string(), config),
        }
    };
    answer.fault = fault;
    answer
}

/// The request's custom metadata: every header but those the gRPC protocol itself uses.
fn metadata(headers: &HeaderMap) -> BTreeMap<String, String> {
    crate::http::header_map(headers)
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "te" | "content-type") && !name.starts_with("grpc-"))
        .map(|(name, value)| (name.to_owned(), value))
        .collect()
}

fn grpc_headers(headers: &mut HeaderMap, config: &Config) {
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(GRPC_CONTENT_TYPE));
    headers.insert(SERVICE_HEADER, config.service_header().clone());
}

/// A "Trailers-Only" response: HTTP 200 whose headers carry the status and end the stream.
fn status_only(code: Code, message: &str, config: &Config) -> Answer {
    let mut response = Response::new(ResponseBody::empty());
    let headers = response.headers_mut();
    grpc_headers(headers, config);
    headers.insert("grpc-status", code.header_value());
    headers.insert("grpc-message", wire::message_header(message));
    Answer {
        grpc_status: Some(code),
        ..Answer::new(response)
    }
}

/// A call refused for what the client sent, with the reason also kept for the access log.
fn refuse(code: Code, message: String, config: &Config) -> Answer {
    let mut answer = status_only(code, &message, config);
    answer.refusal = Some(message);
    answer
}
