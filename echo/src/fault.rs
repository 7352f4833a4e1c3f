//! Faults a request asks the server to inject into its own answer: a delay, an HTTP status, a
//! gRPC status. HTTP requests ask with query parameters (`?delay=150ms&status=503`) or headers
//! (`x-echo-delay`, `x-echo-status`); gRPC requests with metadata (`x-echo-delay`,
//! `x-echo-status`, `x-echo-grpc-status`). A query parameter wins over a header of the same
//! meaning, since it is the more deliberate of the two.
//!
//! A value that does not parse is an error for the caller to answer with 400 (or
//! INVALID_ARGUMENT): a demo that mistypes `delay=150` must see why nothing was delayed.

use std::fmt;
use std::time::Duration;

use hyper::{HeaderMap, StatusCode, Uri};

use crate::grpc::wire::Code;
use mesh_core::time_text::{parse_duration, DurationError};

/// Longest delay a request may ask for; more is almost certainly a typo, and would pin a
/// connection long past any client's timeout.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

pub const DELAY_HEADER: &str = "x-echo-delay";
pub const STATUS_HEADER: &str = "x-echo-status";
pub const GRPC_STATUS_HEADER: &str = "x-echo-grpc-status";

const DELAY_PARAM: &str = "delay";
const STATUS_PARAM: &str = "status";

/// The faults one request asked for; `Fault::default()` is none.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub delay: Option<Duration>,
    pub status: Option<StatusCode>,
    pub grpc_status: Option<Code>,
}

/// Where a fault value came from, so the error can point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Query(&'static str),
    Header(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Query(name) => write!(f, "query parameter {name}"),
            Origin::Header(name) => write!(f, "header {name}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error("delays are capped at {}s", MAX_DELAY.as_secs())]
    DelayTooLong,
    #[error("expected an HTTP status code from 200 to 599")]
    HttpStatus,
    #[error("expected a gRPC status code from 0 to 16")]
    GrpcStatus,
    #[error("the value is not visible ASCII")]
    NotText,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin} {value:?} is invalid: {problem}")]
pub struct FaultError {
    pub origin: Origin,
    pub value: String,
    pub problem: Problem,
}

impl Fault {
    /// The faults of a plain HTTP request: query parameters, then headers.
    pub fn from_http(uri: &Uri, headers: &HeaderMap) -> Result<Fault, FaultError> {
        let query = uri.query().unwrap_or("");
        Ok(Fault {
            delay: lookup(query, DELAY_PARAM, headers, DELAY_HEADER)?
                .map(|(origin, value)| parse_delay(origin, value))
                .transpose()?,
            status: lookup(query, STATUS_PARAM, headers, STATUS_HEADER)?
                .map(|(origin, value)| parse_status(origin, value))
                .transpose()?,
            grpc_status: None,
        })
    }

    /// The faults of a gRPC call, which has only metadata to ask with.
    pub fn from_grpc(headers: &HeaderMap) -> Result<Fault, FaultError> {
        let header = |name: &'static str| {
            header_value(headers, name)
                .map(|value| value.map(|value| (Origin::Header(name), value)))
        };
        Ok(Fault {
            delay: header(DELAY_HEADER)?
                .map(|(origin, value)| parse_delay(origin, value))
                .transpose()?,
            status: header(STATUS_HEADER)?
                .map(|(origin, value)| parse_status(origin, value))
                .transpose()?,
            grpc_status: header(GRPC_STATUS_HEADER)?
                .map(|(origin, value)| parse_grpc_status(origin, value))
                .transpose()?,
        })
    }
}

/// The first value of a query parameter or, failing that, of a header.
fn lookup<'a>(
    query: &'a str,
    param: &'static str,
    headers: &'a HeaderMap,
    header: &'static str,
) -> Result<Option<(Origin, &'a str)>, FaultError> {
    if let Some(value) = query_param(query, param) {
        return Ok(Some((Origin::Query(param), value)));
    }
    Ok(header_value(headers, header)?.map(|value| (Origin::Header(header), value)))
}

/// Raw (not percent-decoded) value of the first `name=` pair; fault values are plain ASCII, and
/// an encoded one fails to parse with an error that shows it.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then_some(value)
    })
}

fn header_value<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<Option<&'a str>, FaultError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    value.to_str().map(Some).map_err(|_| FaultError {
        origin: Origin::Header(name),
        value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        problem: Problem::NotText,
    })
}

fn invalid(origin: Origin, value: &str, problem: Problem) -> FaultError {
    FaultError {
        origin,
        value: value.to_owned(),
        problem,
    }
}

fn parse_delay(origin: Origin, value: &str) -> Result<Duration, FaultError> {
    let delay = parse_duration(value).map_err(|e| invalid(origin, value, e.into()))?;
    if delay > MAX_DELAY {
        return Err(invalid(origin, value, Problem::DelayTooLong));
    }
    Ok(delay)
}

fn parse_status(origin: Origin, value: &str) -> Result<StatusCode, FaultError> {
    // 1xx are not final responses, so a handler cannot answer with one.
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|code| (200..=599).contains(code))
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or_else(|| invalid(origin, value, Problem::HttpStatus))
}

fn parse_grpc_status(origin: Origin, value: &str) -> Result<Code, FaultError> {
    value
        .trim()
        .parse::<u8>()
        .ok()
        .and_then(Code::new)
        .ok_or_else(|| invalid(origin, value, Problem::GrpcStatus))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(uri: &str, headers: &[(&'static str, &str)]) -> Result<Fault, FaultError> {
        let uri: Uri = uri.parse().expect("test URI");
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, value.parse().expect("test header"));
        }
        Fault::from_http(&uri, &map)
    }

    #[test]
    fn none_asked() {
        assert_eq!(http("/", &[]), Ok(Fault::default()));
        assert_eq!(http("/?other=1&delayed=5s", &[]), Ok(Fault::default()));
    }

    #[test]
    fn query_and_headers() {
        let fault = http("/x?a=b&delay=150ms&status=503", &[]).expect("valid");
        assert_eq!(fault.delay, Some(Duration::from_millis(150)));
        assert_eq!(fault.status, Some(StatusCode::SERVICE_UNAVAILABLE));

        let fault = http("/", &[(DELAY_HEADER, "2s"), (STATUS_HEADER, "418")]).expect("valid");
        assert_eq!(fault.delay, Some(Duration::from_secs(2)));
        assert_eq!(fault.status, Some(StatusCode::IM_A_TEAPOT));
    }

    #[test]
    fn query_wins_over_header() {
        let fault = http("/?status=500", &[(STATUS_HEADER, "404")]).expect("valid");
        assert_eq!(fault.status, Some(StatusCode::INTERNAL_SERVER_ERROR));
    }

    #[test]
    fn invalid_values_say_where_and_why() {
        let err = http("/?delay=150", &[]).expect_err("no unit");
        assert_eq!(err.origin, Origin::Query("delay"));
        assert_eq!(
            err.to_string(),
            "query parameter delay \"150\" is invalid: missing unit after 150; use ms, s, m, h or d"
        );

        let err = http("/", &[(DELAY_HEADER, "61s")]).expect_err("too long");
        assert_eq!(err.problem, Problem::DelayTooLong);

        for status in ["99", "101", "600", "abc", ""] {
            let err = http(&format!("/?status={status}"), &[]).expect_err(status);
            assert_eq!(err.problem, Problem::HttpStatus, "{status}");
        }
    }

    #[test]
    fn grpc_metadata() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS_HEADER, "14".parse().expect("header"));
        headers.insert(DELAY_HEADER, "5ms".parse().expect("header"));
        let fault = Fault::from_grpc(&headers).expect("valid");
        assert_eq!(fault.grpc_status.map(Code::value), Some(14));
        assert_eq!(fault.delay, Some(Duration::from_millis(5)));

        headers.insert(GRPC_STATUS_HEADER, "17".parse().expect("header"));
        let err = Fault::from_grpc(&headers).expect_err("out of range");
        assert_eq!(err.problem, Problem::GrpcStatus);
    }
}
