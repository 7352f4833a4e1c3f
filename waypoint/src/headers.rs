//! The forwarding headers layer: what the app learns about the client, and what must not
//! cross a proxy.
//!
//! * `x-forwarded-for` gets the client's address appended (the pod that opened the
//!   connection; HBONE keeps it as the connection's source).
//! * `x-forwarded-client-cert` is set to Istio's form of the peer identity,
//!   `By=<waypoint identity>;URI=<client identity>`, and a value the client sent is dropped:
//!   a client cannot claim an identity it did not prove.
//! * `x-request-id` is generated when absent, so a request can be followed through the logs.
//! * W3C `traceparent`: the waypoint is a hop of the trace, so a valid one keeps its trace id
//!   and flags with a new parent (span) id of ours; an absent or malformed one starts a trace.
//! * The path and `Host` are made canonical first (`target.rs`).
//! * Hop-by-hop headers (`connection` and those it names, `keep-alive`, `proxy-connection`,
//!   `transfer-encoding`, `upgrade`, `te` other than `trailers`) are removed.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, HeaderValue, CONNECTION, TE, TRANSFER_ENCODING, UPGRADE};
use http::HeaderMap;
use mesh_core::identity::Identity;
use rand::Rng;

use crate::stack::{Downstream, Request};

pub const X_FORWARDED_FOR: &str = "x-forwarded-for";
pub const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";
pub const X_REQUEST_ID: &str = "x-request-id";
pub const TRACEPARENT: &str = "traceparent";

/// Where this layer leaves the trace id it sent on, for the access log (the telemetry layer,
/// above, puts an empty one in the request's extensions).
#[derive(Clone, Debug, Default)]
pub struct TraceSlot(pub Arc<std::sync::OnceLock<String>>);

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, the version-00 form; the all-zero
/// ids are invalid.
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = v.trim().split('-').collect();
    let [version, trace, parent, flags] = parts.as_slice() else {
        return None;
    };
    let is_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    (*version == "00"
        && is_hex(trace, 32)
        && is_hex(parent, 16)
        && is_hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0'))
    .then_some((trace, flags))
}

/// The `traceparent` to send on: the same trace with our span as parent, or a new trace.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    let mut rng = rand::rng();
    let span: [u8; 8] = rng.random::<u64>().max(1).to_be_bytes();
    match incoming.and_then(parse_traceparent) {
        Some((trace, flags)) => format!("00-{trace}-{}-{flags}", hex(&span)),
        None => {
            let trace: [u8; 16] = rng.random::<u128>().max(1).to_be_bytes();
            format!("00-{}-{}-00", hex(&trace), hex(&span))
        }
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [CONNECTION, TRANSFER_ENCODING, UPGRADE] {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
    let trailers = headers
        .get(TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
    headers.remove(TE);
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
}

fn request_id() -> String {
    let v: u128 = rand::rng().random();
    let b = v.to_be_bytes();
    // UUID version 4 layout.
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]) & 0x0fff,
        (u16::from_be_bytes([b[8], b[9]]) & 0x3fff) | 0x8000,
        u64::from_be_bytes([0, 0, b[10], b[11], b[12], b[13], b[14], b[15]]),
    )
}

/// Applies the forwarding rules to a request's headers.
pub fn forwarding(headers: &mut HeaderMap, down: &Downstream, me: &Identity) {
    strip_hop_by_hop(headers);
    let client = down.client.ip().to_string();
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {client}"),
        _ => client,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.remove(X_FORWARDED_CLIENT_CERT);
    if let Some(peer) = &down.peer {
        if let Ok(v) = HeaderValue::from_str(&format!("By={me};URI={peer}")) {
            headers.insert(X_FORWARDED_CLIENT_CERT, v);
        }
    }
    if !headers.contains_key(X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(&request_id()) {
            headers.insert(X_REQUEST_ID, v);
        }
    }
    let incoming = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok());
    if let Ok(v) = HeaderValue::from_str(&next_traceparent(incoming)) {
        headers.insert(TRACEPARENT, v);
    }
}

/// The layer: [`forwarding`] on every request.
#[derive(Clone)]
pub struct Forwarding<S> {
    inner: S,
    me: Arc<Identity>,
}

impl<S> Forwarding<S> {
    pub fn layer(me: Arc<Identity>) -> impl tower::Layer<S, Service = Forwarding<S>> + Clone {
        tower::layer::layer_fn(move |inner| Forwarding {
            inner,
            me: me.clone(),
        })
    }
}

impl<S> tower::Service<Request> for Forwarding<S>
where
    S: tower::Service<Request>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The target policy and routing will see, and the app will get.
        crate::target::normalize(&mut req);
        if let Some(down) = req.extensions().get::<Arc<Downstream>>().cloned() {
            forwarding(req.headers_mut(), &down, &self.me);
        }
        if let Some(slot) = req.extensions().get::<TraceSlot>() {
            let trace = req
                .headers()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split('-').nth(1));
            if let Some(t) = trace {
                let _ = slot.0.set(t.to_string());
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Detected;

    fn down(peer: Option<&str>) -> Downstream {
        Downstream {
            client: "10.0.1.5:40000".parse().unwrap(),
            peer: peer.map(|p| p.parse().unwrap()),
            destination: "10.96.0.1:80".parse().unwrap(),
            protocol: Detected::Http1,
        }
    }

    #[test]
    fn clients_cannot_forge_an_identity_and_the_chain_is_kept() {
        let me: Identity = "spiffe://cluster.local/ns/demo/sa/waypoint"
            .parse()
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("URI=spiffe://cluster.local/ns/kube-system/sa/admin"),
        );
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("192.0.2.7"));
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("te", HeaderValue::from_static("trailers, deflate"));
        forwarding(
            &mut h,
            &down(Some("spiffe://cluster.local/ns/demo/sa/client")),
            &me,
        );
        assert_eq!(
            h[X_FORWARDED_CLIENT_CERT],
            "By=spiffe://cluster.local/ns/demo/sa/waypoint;URI=spiffe://cluster.local/ns/demo/sa/client"
        );
        assert_eq!(h[X_FORWARDED_FOR], "192.0.2.7, 10.0.1.5");
        assert!(!h.contains_key("connection") && !h.contains_key("x-secret"));
        assert_eq!(h["te"], "trailers");
        let id = h[X_REQUEST_ID].to_str().unwrap();
        assert_eq!((id.len(), &id[14..15]), (36, "4"), "{id}");

        // A trace is started: version 00, a fresh trace id, not sampled.
        let tp = h[TRACEPARENT].to_str().unwrap().to_string();
        assert!(
            parse_traceparent(&tp).is_some_and(|(_, flags)| flags == "00"),
            "{tp}"
        );

        // No identity (a plaintext client): no client cert header at all.
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_CLIENT_CERT,
            HeaderValue::from_static("URI=spiffe://forged"),
        );
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc"));
        forwarding(&mut h, &down(None), &me);
        assert!(!h.contains_key(X_FORWARDED_CLIENT_CERT));
        assert_eq!(h[X_REQUEST_ID], "abc", "a request id is kept");
    }

    #[test]
    fn a_trace_is_continued_with_our_span() {
        let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let next = next_traceparent(Some(incoming));
        assert!(
            next.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{next}"
        );
        assert!(next.ends_with("-01"), "the sampling flag is kept: {next}");
        assert_ne!(next, incoming, "a new parent id");
        for bad in [
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "garbage",
        ] {
            let next = next_traceparent(Some(bad));
            assert!(
                !next.contains("4bf92f3577b34da6"),
                "{bad} -> {next}: a new trace"
            );
            assert!(parse_traceparent(&next).is_some());
        }
    }
}
