//! The clients a demo pod runs instead of curl and grpcurl: [`http`] behind `mesh-echo get`
//! and [`grpc`] behind `mesh-echo grpc`. Failing to reach the server is a [`ClientError`] that
//! names the address and, where the socket said, why (refused, reset, unreachable), because in a
//! mesh demo *which* failure it was is the point.

pub mod grpc;
pub mod http;

use std::error::Error;
use std::io;
use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URL {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("resolving {addr} failed: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("connection to {addr} refused")]
    Refused { addr: String },
    #[error("connection to {addr} reset")]
    Reset { addr: String },
    #[error("connection to {addr} timed out")]
    ConnectTimeout { addr: String },
    #[error("no response from {addr} within {after:?}")]
    ResponseTimeout { addr: String, after: Duration },
    #[error("{addr} is unreachable")]
    Unreachable { addr: String },
    #[error("connection to {addr} closed before a response arrived")]
    Closed { addr: String },
    #[error("connection to {addr} failed: {detail}")]
    Other { addr: String, detail: String },
}

impl ClientError {
    /// Names what went wrong talking to `addr`, looking through the wrapping errors of hyper
    /// and tonic for the socket error underneath.
    pub fn connection(addr: &str, error: &(dyn Error + 'static)) -> ClientError {
        let addr = addr.to_owned();
        let mut cause = Some(error);
        while let Some(current) = cause {
            if let Some(io_error) = current.downcast_ref::<io::Error>() {
                match io_error.kind() {
                    io::ErrorKind::ConnectionRefused => return ClientError::Refused { addr },
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe => return ClientError::Reset { addr },
                    io::ErrorKind::TimedOut => return ClientError::ConnectTimeout { addr },
                    io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                        return ClientError::Unreachable { addr }
                    }
                    _ => {}
                }
            }
            if let Some(hyper_error) = current.downcast_ref::<hyper::Error>() {
                // `is_closed`: the connection ended (e.g. reset) before the request went out.
                if hyper_error.is_incomplete_message()
                    || hyper_error.is_canceled()
                    || hyper_error.is_closed()
                {
                    return ClientError::Closed { addr };
                }
            }
            cause = current.source();
        }
        ClientError::Other {
            addr,
            detail: chain(error),
        }
    }
}

/// An error and its causes on one line, since wrappers' messages alone are often just
/// "transport error".
fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(current) = cause {
        let message = current.to_string();
        // Some wrappers repeat their cause's message; say it once.
        if !text.ends_with(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        cause = current.source();
    }
    text
}

/// A `-H` argument that is not `name: value`.
#[derive(Debug, thiserror::Error)]
pub enum HeaderArgError {
    #[error("expected \"name: value\", got {0:?}")]
    NoColon(String),
    #[error("invalid header name {0:?}")]
    Name(String),
    #[error("invalid value for header {0:?}")]
    Value(String),
}

/// Parses `name: value` (the space is optional), as curl's `-H` takes it.
pub fn parse_header(arg: &str) -> Result<(HeaderName, HeaderValue), HeaderArgError> {
    let (name, value) = arg
        .split_once(':')
        .ok_or_else(|| HeaderArgError::NoColon(arg.to_owned()))?;
    let name = name.trim();
    let header_name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| HeaderArgError::Name(name.to_owned()))?;
    let header_value =
        HeaderValue::from_str(value.trim()).map_err(|_| HeaderArgError::Value(name.to_owned()))?;
    Ok((header_name, header_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_args() {
        let (name, value) = parse_header("X-Demo: a b").expect("valid");
        assert_eq!(name, "x-demo");
        assert_eq!(value, "a b");
        let (name, value) = parse_header("x-echo-delay:150ms").expect("valid");
        assert_eq!(name, "x-echo-delay");
        assert_eq!(value, "150ms");
        assert!(matches!(
            parse_header("novalue"),
            Err(HeaderArgError::NoColon(_))
        ));
        assert!(matches!(
            parse_header("bad name: 1"),
            Err(HeaderArgError::Name(_))
        ));
    }

    #[test]
    fn socket_errors_are_named() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            ClientError::connection("10.0.0.5:8080", &refused).to_string(),
            "connection to 10.0.0.5:8080 refused"
        );
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(
            ClientError::connection("10.0.0.5:8080", &reset).to_string(),
            "connection to 10.0.0.5:8080 reset"
        );
        let other = io::Error::other("odd");
        assert_eq!(
            ClientError::connection("h:1", &other).to_string(),
            "connection to h:1 failed: odd"
        );
    }
}
