//! The delta ADS stream (`DeltaAggregatedResources`), one task per connected client.
//!
//! Per type URL a client subscribes to (wildcard, as ztunnel does), the server remembers the
//! resource set it last sent. The first request of a type is answered at once, even when there
//! is nothing to send, so the client can become ready; later config changes send only changed
//! and removed resources. ACKs and NACKs are matched by nonce; a NACK is logged with the
//! client's message and counted, and the stream goes on (the client keeps its last good
//! resources; the next change of a rejected resource is sent as usual).
//!
//! The gRPC method is served by hand rather than through tonic's generated server, for memory:
//! a full state of a large mesh is megabytes, and every client in sync needs the same bytes. So
//! each response body is encoded once per config generation and shared (`Bytes`) by all
//! streams; a client's own part, its nonce, is appended as a second encoded field (protobuf
//! merges concatenated messages). tonic's encoder would copy each response into a per-stream
//! buffer that keeps the capacity of the largest message for the life of the stream.

use std::collections::{BTreeSet, HashMap};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use prost::Message;
use tokio::sync::{mpsc, watch};
use tonic::codec::{Codec, Streaming};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::resources::{encode_response, Delta, ResourceSet, XdsState, TYPE_URLS};
use crate::auth::{Authenticator, Caller};
use crate::metrics::Metrics;

const SERVICE: &str = "envoy.service.discovery.v3.AggregatedDiscoveryService";
const DELTA_METHOD: &str =
    "/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources";
/// Largest request accepted (requests are small; responses are not limited).
const MAX_REQUEST_BYTES: usize = 16 << 20;

/// The ADS service, mounted on the gRPC server next to the CA.
#[derive(Clone)]
pub struct AdsServer {
    inner: Arc<Shared>,
}

struct Shared {
    state: watch::Receiver<Arc<XdsState>>,
    authenticator: Arc<dyn Authenticator>,
    metrics: Arc<Metrics>,
    identifier: String,
}

impl AdsServer {
    pub fn new(
        state: watch::Receiver<Arc<XdsState>>,
        authenticator: Arc<dyn Authenticator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        AdsServer {
            inner: Arc::new(Shared {
                state,
                authenticator,
                metrics,
                identifier: format!("istiod-lite-{}", std::process::id()),
            }),
        }
    }

    fn handle(&self, req: http::Request<tonic::body::Body>) -> http::Response<tonic::body::Body> {
        if req.uri().path() != DELTA_METHOD {
            return Status::unimplemented(format!(
                "{} is not served; this server offers {DELTA_METHOD} only (delta xDS)",
                req.uri().path()
            ))
            .into_http();
        }
        if req
            .headers()
            .get("grpc-encoding")
            .is_some_and(|e| e.as_bytes() != b"identity")
        {
            return Status::unimplemented("compressed requests are not supported").into_http();
        }
        let (parts, body) = req.into_parts();
        let peer = parts
            .extensions
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|i| i.remote_addr())
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let metadata = MetadataMap::from_headers(parts.headers);
        let caller = match self.inner.authenticator.authenticate(&metadata) {
            Ok(c) => c,
            Err(status) => {
                tracing::warn!(%peer, message = status.message(), "xDS client refused");
                return status.into_http();
            }
        };
        let decoder =
            tonic_prost::ProstCodec::<DeltaDiscoveryResponse, DeltaDiscoveryRequest>::default()
                .decoder();
        let inbound = Streaming::new_request(decoder, body, None, Some(MAX_REQUEST_BYTES));
        let (tx, rx) = mpsc::channel(4);
        let conn = Connection {
            caller,
            credentials: metadata,
            authenticator: self.inner.authenticator.clone(),
            peer,
            tx,
            state: self.inner.state.clone(),
            metrics: self.inner.metrics.clone(),
            identifier: self.inner.identifier.clone(),
            subscriptions: HashMap::new(),
            pending: HashMap::new(),
            next_nonce: 0,
        };
        tokio::spawn(conn.run(inbound));
        let body = ResponseBody {
            rx,
            queue: std::collections::VecDeque::new(),
            finished: false,
        };
        let mut resp = http::Response::new(tonic::body::Body::new(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        resp
    }
}

impl tonic::server::NamedService for AdsServer {
    const NAME: &'static str = SERVICE;
}

impl tower_service::Service<http::Request<tonic::body::Body>> for AdsServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(self.handle(req)))
    }
}

/// What the connection task hands the response body.
enum Out {
    /// One gRPC message, as the chunks that make it up.
    Message(Vec<Bytes>),
    /// End the stream with this status.
    End(Status),
}

/// The response body: gRPC messages as DATA frames, then the trailers.
struct ResponseBody {
    rx: mpsc::Receiver<Out>,
    queue: std::collections::VecDeque<Bytes>,
    finished: bool,
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut map = http::HeaderMap::new();
    map.insert("grpc-status", http::HeaderValue::from(status.code() as i32));
    if !status.message().is_empty() {
        if let Ok(v) = http::HeaderValue::from_str(status.message()) {
            map.insert("grpc-message", v);
        }
    }
    map
}

impl http_body::Body for ResponseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if let Some(chunk) = self.queue.pop_front() {
            return Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if self.finished {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Out::Message(chunks))) => {
                self.queue.extend(chunks);
                match self.queue.pop_front() {
                    Some(chunk) => Poll::Ready(Some(Ok(http_body::Frame::data(chunk)))),
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Poll::Ready(Some(Out::End(status))) => {
                self.finished = true;
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&status)))))
            }
            Poll::Ready(None) => {
                self.finished = true;
                Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers(&Status::ok(
                    "",
                ))))))
            }
        }
    }
}

/// Frames one response: the gRPC header, the shared body, then this stream's nonce field.
fn frame(body: Bytes, nonce: &str) -> Vec<Bytes> {
    let tail = DeltaDiscoveryResponse {
        nonce: nonce.to_string(),
        ..Default::default()
    }
    .encode_to_vec();
    let len = body.len() + tail.len();
    let mut header = BytesMut::with_capacity(5);
    header.put_u8(0); // not compressed
    header.put_u32(len as u32);
    vec![header.freeze(), body, Bytes::from(tail)]
}

struct Subscription {
    /// The set the client's view was last brought up to date with.
    sent: Arc<ResourceSet>,
    /// Explicitly subscribed resource names; `None` for a wildcard subscription.
    names: Option<BTreeSet<String>>,
}

/// Type URL label for metrics about types this server does not serve (labels must not be
/// whatever a client sends).
const UNKNOWN_TYPE: &str = "unknown";

/// The response to an explicit subscription of `requested` names: the resources that exist
/// (an alias such as `<network>/<ip>` is answered with the resource it names), and every
/// requested name that is not a resource's own name in `removed`, which is what releases a
/// client waiting on that exact name. Adds what is now subscribed to `names`.
fn named_delta(
    state: &XdsState,
    current: &ResourceSet,
    requested: &[String],
    names: &mut BTreeSet<String>,
) -> Delta {
    let mut delta = Delta::default();
    for name in requested.iter().filter(|n| n.as_str() != "*") {
        let primary = if current.entries.contains_key(name) {
            Some(name.clone())
        } else {
            state.alias(name).map(str::to_string)
        };
        match primary.and_then(|p| current.entries.get(&p).map(|e| (p, e.clone()))) {
            Some((p, entry)) => {
                if p != *name {
                    delta.removed.push(name.clone());
                }
                names.insert(p.clone());
                delta.changed.push((p, entry));
            }
            None => {
                names.insert(name.clone());
                delta.removed.push(name.clone());
            }
        }
    }
    delta
}

/// A response awaiting its ACK or NACK.
struct Pending {
    type_url: String,
    sent_at: Instant,
}

struct Connection {
    caller: Caller,
    /// The stream's metadata, to re-check its token: a token removed from the token file ends
    /// the streams that used it at their next request.
    credentials: MetadataMap,
    authenticator: Arc<dyn Authenticator>,
    peer: String,
    tx: mpsc::Sender<Out>,
    state: watch::Receiver<Arc<XdsState>>,
    metrics: Arc<Metrics>,
    identifier: String,
    subscriptions: HashMap<String, Subscription>,
    pending: HashMap<String, Pending>,
    next_nonce: u64,
}

/// The longest client-sent text written to the log as it is (a NACK's message can be large).
const MAX_LOGGED_MESSAGE: usize = 1024;

/// `text` cut at `max` bytes (on a character boundary), saying how long it was.
fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &text[..end], text.len()).into()
}

/// Why a stream ended.
enum End {
    ClientClosed,
    ClientError(Status),
    ResponseDropped,
}

impl Connection {
    async fn run(mut self, mut inbound: Streaming<DeltaDiscoveryRequest>) {
        self.metrics.xds_clients.inc();
        tracing::info!(caller = %self.caller, peer = %self.peer, "xDS client connected");
        // The current state is what a new subscription gets; later changes arrive as deltas.
        self.state.mark_unchanged();
        let end = loop {
            tokio::select! {
                msg = inbound.next() => match msg {
                    None => break End::ClientClosed,
                    // A request that does not decode is the client's error, and it is told so.
                    Some(Err(status)) if status.code() == tonic::Code::Internal => {
                        let refusal = Status::invalid_argument(format!(
                            "a DeltaDiscoveryRequest did not decode: {}",
                            truncated(status.message(), MAX_LOGGED_MESSAGE)
                        ));
                        let _ = self.tx.send(Out::End(refusal.clone())).await;
                        break End::ClientError(refusal);
                    }
                    Some(Err(status)) => break End::ClientError(status),
                    Some(Ok(req)) => {
                        if let Err(status) = self.authenticator.authenticate(&self.credentials) {
                            tracing::warn!(caller = %self.caller, peer = %self.peer, message = status.message(), "xDS client no longer authorized; ending its stream");
                            let _ = self.tx.send(Out::End(status)).await;
                            break End::ResponseDropped;
                        }
                        if self.on_request(req).await.is_err() {
                            break End::ResponseDropped;
                        }
                    }
                },
                changed = self.state.changed() => {
                    if changed.is_err() {
                        // The server is shutting down.
                        let _ = self.tx.send(Out::End(Status::unavailable("istiod-lite is shutting down"))).await;
                        break End::ResponseDropped;
                    }
                    if self.push_changes().await.is_err() {
                        break End::ResponseDropped;
                    }
                }
            }
        };
        self.metrics.xds_clients.dec();
        match end {
            End::ClientClosed => {
                tracing::info!(caller = %self.caller, peer = %self.peer, "xDS client disconnected")
            }
            End::ClientError(s) => {
                tracing::info!(caller = %self.caller, peer = %self.peer, code = ?s.code(), message = s.message(), "xDS stream ended by the client")
            }
            End::ResponseDropped => {
                tracing::info!(caller = %self.caller, peer = %self.peer, "xDS stream closed")
            }
        }
    }

    async fn on_request(&mut self, req: DeltaDiscoveryRequest) -> Result<(), ()> {
        if !req.response_nonce.is_empty() {
            self.on_ack(&req);
        }
        let type_url = req.type_url.as_str();
        if !TYPE_URLS.contains(&type_url) {
            if req.response_nonce.is_empty() {
                tracing::warn!(caller = %self.caller, type_url, "request for a type this server does not serve; answering with no resources");
                let body = encode_response(type_url, &Delta::default(), 0, &self.identifier);
                return self.send(UNKNOWN_TYPE, body, None).await;
            }
            return Ok(());
        }
        let state = self.state.borrow().clone();
        let Some(current) = state.set(type_url).cloned() else {
            return Ok(());
        };
        let subscribe = &req.resource_names_subscribe;
        let unsubscribe = &req.resource_names_unsubscribe;
        let Some(sub) = self.subscriptions.get_mut(type_url) else {
            // The first request of a type: wildcard unless it names resources, or subscribes
            // to "*" and unsubscribes it again (ztunnel's on-demand mode: "nothing yet").
            let wildcard = (subscribe.is_empty() || subscribe.iter().any(|n| n == "*"))
                && !unsubscribe.iter().any(|n| n == "*");
            let (body, changed, removed, names) = if !wildcard {
                let mut names = BTreeSet::new();
                let delta = named_delta(&state, &current, subscribe, &mut names);
                let body = encode_response(type_url, &delta, state.generation, &self.identifier);
                (body, delta.changed.len(), delta.removed.len(), Some(names))
            } else if req.initial_resource_versions.is_empty() {
                // The common case: everything, encoded once for every client.
                let body = state.full_response(type_url, &self.identifier);
                (body, current.entries.len(), 0, None)
            } else {
                let delta = Delta::from_versions(&req.initial_resource_versions, &current);
                let body = encode_response(type_url, &delta, state.generation, &self.identifier);
                (body, delta.changed.len(), delta.removed.len(), None)
            };
            tracing::info!(caller = %self.caller, type_url, resources = changed, removed,
                known = req.initial_resource_versions.len(), wildcard = names.is_none(), "xDS subscription");
            self.subscriptions.insert(
                type_url.to_string(),
                Subscription {
                    sent: current,
                    names,
                },
            );
            return self.send(type_url, body, None).await;
        };
        // Changes to a live subscription.
        let Some(names) = sub.names.as_mut() else {
            return Ok(()); // wildcard already has everything
        };
        for n in unsubscribe {
            names.remove(n);
        }
        if subscribe.iter().any(|n| n == "*") {
            // Now wildcard: send what it does not have yet.
            let delta = Delta {
                changed: current
                    .entries
                    .iter()
                    .filter(|(n, _)| !names.contains(*n))
                    .map(|(n, e)| (n.clone(), e.clone()))
                    .collect(),
                removed: Vec::new(),
            };
            sub.names = None;
            sub.sent = current;
            let body = encode_response(type_url, &delta, state.generation, &self.identifier);
            return self.send(type_url, body, None).await;
        }
        let fresh: Vec<String> = subscribe
            .iter()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let delta = named_delta(&state, &current, &fresh, names);
        let body = encode_response(type_url, &delta, state.generation, &self.identifier);
        self.send(type_url, body, None).await
    }

    fn on_ack(&mut self, req: &DeltaDiscoveryRequest) {
        let Some(pending) = self.pending.remove(&req.response_nonce) else {
            tracing::debug!(caller = %self.caller, nonce = %req.response_nonce, "ACK for an unknown or superseded nonce");
            return;
        };
        match &req.error_detail {
            Some(err) => {
                self.metrics
                    .xds_rejects
                    .with_label_values(&[&pending.type_url])
                    .inc();
                tracing::warn!(caller = %self.caller, peer = %self.peer, type_url = %pending.type_url,
                    nonce = %req.response_nonce, code = err.code, message = %truncated(&err.message, MAX_LOGGED_MESSAGE),
                    "xDS response NACKed by the client; it keeps its last good resources");
            }
            None => tracing::debug!(caller = %self.caller, type_url = %pending.type_url,
                nonce = %req.response_nonce, latency_ms = pending.sent_at.elapsed().as_millis() as u64, "ACK"),
        }
    }

    async fn push_changes(&mut self) -> Result<(), ()> {
        let state = self.state.borrow_and_update().clone();
        let types: Vec<String> = self.subscriptions.keys().cloned().collect();
        for type_url in types {
            let held = self.subscriptions[&type_url].sent.clone();
            let Some(current) = state.set(&type_url).cloned() else {
                continue;
            };
            if held.id == current.id {
                continue;
            }
            let names = self.subscriptions[&type_url].names.clone();
            let shared = match names {
                None => state.shared_delta(&type_url, held.id, &self.identifier),
                Some(_) => None,
            };
            let body = match shared {
                Some(body) => body,
                None if names.is_some() => {
                    let names = names.unwrap_or_default();
                    let mut delta = Delta::between(&held, &current);
                    delta.changed.retain(|(n, _)| names.contains(n));
                    delta.removed.retain(|n| names.contains(n));
                    if delta.is_empty() {
                        Bytes::new()
                    } else {
                        encode_response(&type_url, &delta, state.generation, &self.identifier)
                    }
                }
                None => {
                    // This client skipped a generation: its own delta.
                    let delta = Delta::between(&held, &current);
                    if delta.is_empty() {
                        Bytes::new()
                    } else {
                        encode_response(&type_url, &delta, state.generation, &self.identifier)
                    }
                }
            };
            if let Some(sub) = self.subscriptions.get_mut(&type_url) {
                sub.sent = current;
            }
            if body.is_empty() {
                continue;
            }
            self.send(&type_url, body, Some(state.changed_at)).await?;
        }
        Ok(())
    }

    async fn send(
        &mut self,
        type_url: &str,
        body: Bytes,
        changed_at: Option<Instant>,
    ) -> Result<(), ()> {
        self.next_nonce += 1;
        let nonce = self.next_nonce.to_string();
        let bytes = body.len();
        self.tx
            .send(Out::Message(frame(body, &nonce)))
            .await
            .map_err(|_| ())?;
        self.metrics.xds_pushes.with_label_values(&[type_url]).inc();
        if let Some(t) = changed_at {
            self.metrics
                .xds_push_time
                .with_label_values(&[type_url])
                .observe(t.elapsed().as_secs_f64());
        }
        tracing::debug!(caller = %self.caller, type_url, nonce = %nonce, bytes, "xDS push");
        // Only recent responses can still be acknowledged usefully; bound the map.
        if self.pending.len() >= 64 {
            self.pending.clear();
        }
        self.pending.insert(
            nonce,
            Pending {
                type_url: type_url.to_string(),
                sent_at: Instant::now(),
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_client_text_is_cut_on_a_character_boundary() {
        assert_eq!(truncated("short", 10), "short");
        let long = "é".repeat(600);
        let cut = truncated(&long, 1023);
        assert!(cut.starts_with(&"é".repeat(511)), "{cut}");
        assert!(cut.ends_with("... (1200 bytes in all)"), "{cut}");
        assert!(cut.len() < 1100);
    }
}
