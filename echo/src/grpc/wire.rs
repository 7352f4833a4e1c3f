//! The gRPC over HTTP/2 wire format, as much of it as a unary server needs: status codes, the
//! 5-byte length-prefixed message frame, and the percent-encoding of `grpc-message`.
//!
//! Written against the protocol document (PROTOCOL-HTTP2.md in grpc/grpc) rather than taken from
//! a framework, so the server keeps one code path for HTTP/1.1, h2c and gRPC on a single port.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::HeaderValue;

/// A gRPC status code (0 OK through 16 UNAUTHENTICATED).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(u8);

impl Code {
    pub const OK: Code = Code(0);
    pub const INVALID_ARGUMENT: Code = Code(3);
    pub const RESOURCE_EXHAUSTED: Code = Code(8);
    pub const UNIMPLEMENTED: Code = Code(12);
    pub const INTERNAL: Code = Code(13);

    /// The code for a number, if gRPC defines one.
    pub fn new(value: u8) -> Option<Code> {
        (value <= 16).then_some(Code(value))
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// The header value for `grpc-status`.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from(u16::from(self.0))
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The bytes before each message: a compressed flag and a big-endian u32 length.
pub const PREFIX_LEN: usize = 5;

/// Why a request body is not exactly one framed message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("request has no message")]
    Missing,
    #[error("message prefix is {0} bytes, expected 5")]
    ShortPrefix(usize),
    #[error("message is compressed, and this server accepts no grpc-encoding")]
    Compressed,
    #[error("invalid compressed flag {0}")]
    BadFlag(u8),
    #[error("message prefix declares {declared} bytes but {present} follow")]
    Truncated { declared: usize, present: usize },
    #[error("{0} bytes follow the message; a unary request carries exactly one")]
    Trailing(usize),
}

impl FrameError {
    /// The status the protocol asks for: UNIMPLEMENTED for an encoding we never advertised,
    /// INTERNAL for a body that is not a valid frame.
    pub fn code(&self) -> Code {
        match self {
            FrameError::Compressed => Code::UNIMPLEMENTED,
            _ => Code::INTERNAL,
        }
    }
}

/// The one message of a unary request body.
pub fn decode_unary(body: &[u8]) -> Result<&[u8], FrameError> {
    if body.is_empty() {
        return Err(FrameError::Missing);
    }
    let Some((prefix, rest)) = body.split_first_chunk::<PREFIX_LEN>() else {
        return Err(FrameError::ShortPrefix(body.len()));
    };
    match prefix[0] {
        0 => {}
        1 => return Err(FrameError::Compressed),
        flag => return Err(FrameError::BadFlag(flag)),
    }
    let declared = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if rest.len() < declared {
        return Err(FrameError::Truncated {
            declared,
            present: rest.len(),
        });
    }
    let (message, trailing) = rest.split_at(declared);
    if !trailing.is_empty() {
        return Err(FrameError::Trailing(trailing.len()));
    }
    Ok(message)
}

/// Frames an encoded message, uncompressed.
pub fn encode(message: &[u8]) -> Result<Bytes, TooLarge> {
    let len = u32::try_from(message.len()).map_err(|_| TooLarge(message.len()))?;
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + message.len());
    framed.put_u8(0);
    framed.put_u32(len);
    framed.put_slice(message);
    Ok(framed.freeze())
}

/// A message longer than the 4 GiB a frame prefix can declare.
#[derive(Debug, thiserror::Error)]
#[error("message of {0} bytes does not fit a gRPC frame")]
pub struct TooLarge(pub usize);

/// `grpc-message` as the protocol wants it: percent-encoded UTF-8, leaving printable ASCII other
/// than `%` as is, so any text (including what a client sent us) makes a valid header.
pub fn message_header(message: &str) -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push(char::from(HEX[usize::from(byte >> 4)]));
            encoded.push(char::from(HEX[usize::from(byte & 0x0f)]));
        }
    }
    // Every byte is now printable ASCII, which HeaderValue always accepts.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("%3F"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let framed = encode(b"hello").expect("small message");
        assert_eq!(&framed[..], b"\0\0\0\0\x05hello");
        assert_eq!(decode_unary(&framed), Ok(&b"hello"[..]));
        let empty = encode(b"").expect("empty message");
        assert_eq!(decode_unary(&empty), Ok(&b""[..]));
    }

    #[test]
    fn malformed_bodies() {
        assert_eq!(decode_unary(b""), Err(FrameError::Missing));
        assert_eq!(decode_unary(b"\0\0"), Err(FrameError::ShortPrefix(2)));
        assert_eq!(
            decode_unary(b"\x01\0\0\0\x01a"),
            Err(FrameError::Compressed)
        );
        assert_eq!(decode_unary(b"\x07\0\0\0\0"), Err(FrameError::BadFlag(7)));
        assert_eq!(
            decode_unary(b"\0\0\0\0\x0aabc"),
            Err(FrameError::Truncated {
                declared: 10,
                present: 3
            })
        );
        assert_eq!(
            decode_unary(b"\0\0\0\0\x01ab"),
            Err(FrameError::Trailing(1))
        );
        assert_eq!(FrameError::Compressed.code(), Code::UNIMPLEMENTED);
        assert_eq!(FrameError::Missing.code(), Code::INTERNAL);
    }

    #[test]
    fn message_is_percent_encoded() {
        assert_eq!(message_header("plain text"), "plain text");
        assert_eq!(message_header("50% off\n"), "50%25 off%0A");
        assert_eq!(message_header("é"), "%C3%A9");
    }

    #[test]
    fn codes() {
        assert_eq!(Code::new(16).map(Code::value), Some(16));
        assert_eq!(Code::new(17), None);
        assert_eq!(Code::UNIMPLEMENTED.header_value(), "12");
    }
}
