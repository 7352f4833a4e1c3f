//! A response body that keeps something alive until it is done: the load balancer's in-flight
//! mark on the endpoint, or an HTTP/1.1 upstream connection that goes back to its pool once the
//! body has been read to its end (a body dropped half-read leaves its connection unusable, so
//! it is not returned).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

use crate::respond::{Body, BoxError};

type AtEnd = Box<dyn FnOnce() + Send>;

pub struct Hold {
    inner: Body,
    at_end: Vec<AtEnd>,
    _held: Vec<Box<dyn Send>>,
}

impl Hold {
    pub fn new(inner: Body) -> Self {
        Hold {
            inner,
            at_end: Vec::new(),
            _held: Vec::new(),
        }
    }

    /// Keeps `value` until the body is dropped.
    pub fn keep(mut self, value: impl Send + 'static) -> Self {
        self._held.push(Box::new(value));
        self
    }

    /// Runs `f` once the body has reached its end (not when dropped before).
    pub fn at_end(mut self, f: impl FnOnce() + Send + 'static) -> Self {
        self.at_end.push(Box::new(f));
        self
    }

    fn ended(&mut self) {
        for f in self.at_end.drain(..) {
            f();
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // A body known to be complete may be dropped without a last poll.
        if self.inner.is_end_stream() {
            self.ended();
        }
    }
}

impl HttpBody for Hold {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.ended();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
