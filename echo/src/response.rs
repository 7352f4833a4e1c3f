//! What handlers give back: the response (whose body is at most one chunk of data, then, for
//! gRPC, trailers) and what the access log should say about how it was decided.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{HeaderMap, Response, StatusCode};

use crate::fault::Fault;
use crate::grpc::wire::Code;

/// A body whose parts are all known when the handler returns. A hand-rolled type rather than a
/// boxed combinator because it carries gRPC trailers and costs no allocation on the bench path.
#[derive(Debug, Default)]
pub struct ResponseBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl ResponseBody {
    pub fn empty() -> ResponseBody {
        ResponseBody::default()
    }

    pub fn full(data: impl Into<Bytes>) -> ResponseBody {
        let data = data.into();
        ResponseBody {
            // A zero-length DATA frame is legal but pointless; leave the body empty instead.
            data: (!data.is_empty()).then_some(data),
            trailers: None,
        }
    }

    pub fn with_trailers(data: Bytes, trailers: HeaderMap) -> ResponseBody {
        ResponseBody {
            trailers: Some(trailers),
            ..ResponseBody::full(data)
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(data) = this.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, |d| d.len() as u64);
        SizeHint::with_exact(len)
    }
}

/// A handler's response, plus what only the handler knows and the access log line reports.
#[derive(Debug)]
pub struct Answer {
    pub response: Response<ResponseBody>,
    /// The faults the request asked for and got.
    pub fault: Fault,
    /// The gRPC status sent, in headers or trailers.
    pub grpc_status: Option<Code>,
    /// Why the request was refused, when it was.
    pub refusal: Option<String>,
}

impl Answer {
    pub fn new(response: Response<ResponseBody>) -> Answer {
        Answer {
            response,
            fault: Fault::default(),
            grpc_status: None,
            refusal: None,
        }
    }

    /// A plain-text response, newline-terminated so it reads well in a terminal.
    pub fn text(status: StatusCode, text: &str) -> Answer {
        let mut body = String::with_capacity(text.len() + 1);
        body.push_str(text);
        if !body.ends_with('\n') {
            body.push('\n');
        }
        let mut response = Response::new(ResponseBody::full(body));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        Answer::new(response)
    }

    /// A deliberate refusal of a bad request, with the reason both in the body and in the log.
    pub fn refuse(status: StatusCode, reason: String) -> Answer {
        let mut answer = Answer::text(status, &reason);
        answer.refusal = Some(reason);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn data_then_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = ResponseBody::with_trailers(Bytes::from_static(b"abc"), trailers);
        assert_eq!(body.size_hint().exact(), Some(3));
        let collected = body.collect().await.expect("infallible");
        assert_eq!(
            collected.trailers().and_then(|t| t.get("grpc-status")),
            Some(&HeaderValue::from_static("0"))
        );
        assert_eq!(collected.to_bytes(), "abc");
    }

    #[test]
    fn empty_is_ended() {
        assert!(ResponseBody::empty().is_end_stream());
        assert!(ResponseBody::full("").is_end_stream());
        assert!(!ResponseBody::full("x").is_end_stream());
    }
}
