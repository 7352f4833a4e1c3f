//! The HTTP echo, for HTTP/1.1 and h2c alike: any path answers a small JSON document describing
//! the request as the server saw it (most importantly `peer`, the address on the server's
//! socket, which shows whether the mesh kept the client pod's IP), after the faults the request
//! asked for. `/healthz` is the probe endpoint and `/bench` the benchmark's fast path.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Method, Request, Response, StatusCode, Version};
use serde::Serialize;
use tracing::debug;

use crate::config::{Config, SERVICE_HEADER};
use crate::fault::Fault;
use crate::response::{Answer, ResponseBody};

pub const HEALTH_PATH: &str = "/healthz";
pub const BENCH_PATH: &str = "/bench";

/// The whole body of `/bench`: fixed, so the benchmark measures the mesh, not this server.
const BENCH_BODY: &[u8] = b"ok\n";

/// The JSON body of an echo.
#[derive(Serialize)]
struct Echo<'a> {
    service: &'a str,
    version: &'a str,
    hostname: &'a str,
    peer: SocketAddr,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    headers: BTreeMap<&'a str, String>,
    /// How many body bytes arrived, so a test through the mesh can see a body was carried whole.
    body_bytes: u64,
}

/// Whether a request is for the benchmark fast path, which skips fault parsing and formatting.
pub fn is_bench(request: &Request<Incoming>) -> bool {
    request.method() == Method::GET && request.uri().path() == BENCH_PATH
}

/// The fast path's answer: a static body and the identifying header, nothing computed.
pub fn bench(config: &Config) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(BENCH_BODY)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(SERVICE_HEADER, config.service_header().clone());
    response
}

/// Answers one plain HTTP request.
pub async fn answer(request: Request<Incoming>, peer: SocketAddr, config: &Config) -> Answer {
    if request.method() == Method::GET && request.uri().path() == HEALTH_PATH {
        return Answer::text(StatusCode::OK, "ok");
    }
    let fault = match Fault::from_http(request.uri(), request.headers()) {
        Ok(fault) => fault,
        Err(e) => return Answer::refuse(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let (parts, body) = request.into_parts();
    // Read the body before answering: an HTTP/1.1 connection with an unread body cannot be
    // reused, and keep-alive is part of what this server demonstrates.
    let body_bytes = match drain(body).await {
        Ok(len) => len,
        Err(e) => {
            return Answer::refuse(
                StatusCode::BAD_REQUEST,
                format!("reading the request body failed: {e}"),
            )
        }
    };
    if let Some(delay) = fault.delay {
        // The access log line comes only after the delay; this says a request is being held.
        debug!(%peer, ?delay, "delaying the response as asked");
        tokio::time::sleep(delay).await;
    }
    let echo = Echo {
        service: config.name(),
        version: config.version(),
        hostname: config.hostname(),
        peer,
        method: parts.method.as_str(),
        path: parts.uri.path(),
        protocol: protocol(parts.version),
        headers: header_map(&parts.headers),
        body_bytes,
    };
    let mut json = match serde_json::to_vec(&echo) {
        Ok(json) => json,
        Err(e) => {
            return Answer::refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("formatting the echo failed: {e}"),
            )
        }
    };
    json.push(b'\n');
    let mut response = Response::new(ResponseBody::full(json));
    *response.status_mut() = fault.status.unwrap_or(StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(SERVICE_HEADER, config.service_header().clone());
    Answer {
        fault,
        ..Answer::new(response)
    }
}

/// The protocol as an HTTP/1.1 request line or curl would name it.
pub fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    }
}

/// Headers by name, repeated ones joined with ", " as RFC 9110 allows for list-valued fields.
/// Values that are not valid UTF-8 are shown lossily rather than refused: this is an echo.
pub fn header_map(headers: &HeaderMap) -> BTreeMap<&str, String> {
    let mut map: BTreeMap<&str, String> = BTreeMap::new();
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        match map.get_mut(name.as_str()) {
            Some(joined) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            None => {
                map.insert(name.as_str(), value.into_owned());
            }
        }
    }
    map
}

/// Reads and discards a body, counting its bytes.
async fn drain(mut body: Incoming) -> Result<u64, hyper::Error> {
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(data) = frame?.data_ref() {
            len += data.len() as u64;
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_headers_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append("x-b", HeaderValue::from_static("3"));
        let map = header_map(&headers);
        assert_eq!(map.get("x-a").map(String::as_str), Some("1, 2"));
        assert_eq!(map.get("x-b").map(String::as_str), Some("3"));
    }

    #[test]
    fn protocol_names() {
        assert_eq!(protocol(Version::HTTP_11), "HTTP/1.1");
        assert_eq!(protocol(Version::HTTP_2), "HTTP/2.0");
    }
}
