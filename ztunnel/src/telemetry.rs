//! Metrics with Istio's names and labels (Istio's ztunnel: `istio_tcp_*` with the common
//! traffic labels, `workload_manager_*`, `istio_xds_connection_terminations_total`,
//! `istio_build`), kept in a `prometheus` registry and rendered by its text encoder; and the
//! access log: one line per connection when it ends, with both identities.
//!
//! Each connection resolves its label set once, when it opens, and holds its counters; bytes are
//! added when it ends. Missing values render as `unknown`, as in Istio.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mesh_core::identity::Identity;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::state::{ServiceInfo, WorkloadInfo};

/// CommonTrafficLabels, in Istio's order.
const LABELS: [&str; 23] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_service",
    "destination_service_namespace",
    "destination_service_name",
    "destination_workload",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_cluster",
    "request_protocol",
    "response_flags",
    "connection_security_policy",
];

type LabelValues = [String; 23];

/// The counters of one label set, resolved when a connection opens.
struct Counters {
    closed: IntCounter,
    received: IntCounter,
    sent: IntCounter,
}

/// Which side of the connection this ztunnel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client's ztunnel (`reporter="source"`).
    Outbound,
    /// The server's ztunnel (`reporter="destination"`).
    Inbound,
}

/// Everything known about one connection when it opens.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    pub direction: Direction,
    pub src_addr: SocketAddr,
    pub src_workload: Option<Arc<WorkloadInfo>>,
    pub src_identity: Option<Identity>,
    /// The TCP next hop (`IP:15008` for HBONE).
    pub dst_addr: SocketAddr,
    /// The CONNECT authority, for HBONE.
    pub hbone_addr: Option<SocketAddr>,
    pub dst_workload: Option<Arc<WorkloadInfo>>,
    pub dst_service: Option<Arc<ServiceInfo>>,
    pub dst_identity: Option<Identity>,
    pub mtls: bool,
}

impl ConnectionInfo {
    fn labels(&self, response_flags: &str) -> LabelValues {
        let unknown = || "unknown".to_string();
        let or = |s: &str| {
            if s.is_empty() {
                unknown()
            } else {
                s.to_string()
            }
        };
        let w = |w: &Option<Arc<WorkloadInfo>>, f: fn(&WorkloadInfo) -> &str| {
            w.as_deref().map(f).map(or).unwrap_or_else(unknown)
        };
        let id = |i: &Option<Identity>| i.as_ref().map(|i| i.to_string()).unwrap_or_else(unknown);
        let svc = |f: fn(&ServiceInfo) -> &str| {
            self.dst_service
                .as_deref()
                .map(f)
                .map(or)
                .unwrap_or_else(unknown)
        };
        let (src, dst) = (&self.src_workload, &self.dst_workload);
        [
            match self.direction {
                Direction::Outbound => "source",
                Direction::Inbound => "destination",
            }
            .to_string(),
            w(src, |w| &w.workload_name),
            w(src, |w| &w.canonical_name),
            w(src, |w| &w.canonical_revision),
            w(src, |w| &w.namespace),
            id(&self.src_identity),
            w(src, |w| &w.canonical_name),
            w(src, |w| &w.canonical_revision),
            w(src, |w| &w.cluster_id),
            svc(|s| &s.hostname),
            svc(|s| &s.namespace),
            svc(|s| &s.name),
            w(dst, |w| &w.workload_name),
            w(dst, |w| &w.canonical_name),
            w(dst, |w| &w.canonical_revision),
            w(dst, |w| &w.namespace),
            id(&self.dst_identity),
            w(dst, |w| &w.canonical_name),
            w(dst, |w| &w.canonical_revision),
            w(dst, |w| &w.cluster_id),
            "tcp".to_string(),
            response_flags.to_string(),
            if self.mtls { "mutual_tls" } else { "unknown" }.to_string(),
        ]
    }
}

/// The node's traffic metrics and pod-proxy gauges.
pub struct Metrics {
    registry: Registry,
    opened: IntCounterVec,
    closed: IntCounterVec,
    failed: IntCounterVec,
    received: IntCounterVec,
    sent: IntCounterVec,
    pub proxies_started: IntCounter,
    pub proxies_stopped: IntCounter,
    pub proxies_pending: IntGauge,
    active_proxies: IntGauge,
    xds_terminations: IntCounter,
    closed_by_policy: IntCounter,
    hbone_closed: IntCounterVec,
}

/// What the metrics port reads from elsewhere at each scrape.
pub struct Scrape {
    /// Pods served now.
    pub active_proxies: usize,
    /// xDS streams that have ended so far.
    pub xds_streams_ended: u64,
    /// Open connections closed so far because a policy change denied them.
    pub closed_by_policy: u64,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Fails only on an invalid name or a duplicate registration: a programming error that
    // every test run would show.
    r.expect("metric definition")
}

impl Default for Metrics {
    fn default() -> Self {
        let registry = Registry::new();
        let traffic = |name: &str, help: &str| {
            let vec = must(IntCounterVec::new(Opts::new(name, help), &LABELS));
            must(registry.register(Box::new(vec.clone())));
            vec
        };
        let counter = |name: &str, help: &str| {
            let c = must(IntCounter::new(name, help));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = must(IntGauge::new(name, help));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let build = must(IntGaugeVec::new(
            Opts::new("istio_build", "Build information."),
            &["component", "tag"],
        ));
        must(registry.register(Box::new(build.clone())));
        let hbone_closed = must(IntCounterVec::new(
            Opts::new(
                "ztunnel_inbound_hbone_connections_closed_total",
                "Inbound HBONE connections ztunnel closed or refused itself, by reason: \
                 handshake_timeout, idle, source_limit.",
            ),
            &["reason"],
        ));
        must(registry.register(Box::new(hbone_closed.clone())));
        build
            .with_label_values(&["ztunnel", env!("CARGO_PKG_VERSION")])
            .set(1);
        Metrics {
            opened: traffic("istio_tcp_connections_opened_total", "TCP connections opened."),
            closed: traffic("istio_tcp_connections_closed_total", "TCP connections closed."),
            failed: traffic(
                "istio_tcp_connections_failed_total",
                "TCP connections that failed (response_flags says why).",
            ),
            received: traffic(
                "istio_tcp_received_bytes_total",
                "Bytes in the request direction (client to server), counted when a connection ends.",
            ),
            sent: traffic(
                "istio_tcp_sent_bytes_total",
                "Bytes in the response direction (server to client), counted when a connection ends.",
            ),
            active_proxies: gauge(
                "workload_manager_active_proxy_count",
                "Pods served by this ztunnel.",
            ),
            proxies_pending: gauge(
                "workload_manager_pending_proxy_count",
                "Captured pods waiting for their workload or a proxy.",
            ),
            proxies_started: counter(
                "workload_manager_proxies_started_total",
                "Pod proxies started.",
            ),
            proxies_stopped: counter(
                "workload_manager_proxies_stopped_total",
                "Pod proxies stopped.",
            ),
            xds_terminations: counter(
                "istio_xds_connection_terminations_total",
                "xDS streams that ended.",
            ),
            closed_by_policy: counter(
                "ztunnel_connections_closed_by_policy_total",
                "Open connections closed because a policy change denied them.",
            ),
            hbone_closed,
            registry,
        }
    }
}

/// Raises a counter to `total` (a count kept elsewhere, read at scrape time).
fn catch_up(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl Metrics {
    fn label_refs(labels: &LabelValues) -> [&str; 23] {
        std::array::from_fn(|i| labels[i].as_str())
    }

    /// Counts a connection as opened; the returned handle counts and logs its end.
    pub fn open(&self, info: ConnectionInfo) -> Connection {
        let labels = info.labels("-");
        let values = Self::label_refs(&labels);
        self.opened.with_label_values(&values).inc();
        let counters = Counters {
            closed: self.closed.with_label_values(&values),
            received: self.received.with_label_values(&values),
            sent: self.sent.with_label_values(&values),
        };
        Connection {
            counters,
            info,
            start: Instant::now(),
            received: 0,
            sent: 0,
            error: None,
        }
    }

    /// Counts a connection that failed before it could open (denied, no upstream, ...).
    pub fn failed(&self, info: &ConnectionInfo, response_flags: &str) {
        let labels = info.labels(response_flags);
        self.failed
            .with_label_values(&Self::label_refs(&labels))
            .inc();
    }

    /// Counts an inbound HBONE connection ztunnel ended for `reason`; returns the count so far.
    pub fn hbone_closed(&self, reason: &str) -> u64 {
        let c = self.hbone_closed.with_label_values(&[reason]);
        c.inc();
        c.get()
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self, scrape: Scrape) -> String {
        self.active_proxies.set(scrape.active_proxies as i64);
        catch_up(&self.xds_terminations, scrape.xds_streams_ended);
        catch_up(&self.closed_by_policy, scrape.closed_by_policy);
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding the metrics failed: {e}\n"))
    }
}

/// An open connection; dropping it counts it closed and writes its access-log line.
pub struct Connection {
    counters: Counters,
    info: ConnectionInfo,
    start: Instant,
    received: u64,
    sent: u64,
    error: Option<String>,
}

impl Connection {
    /// Bytes client->server (`received`) and server->client (`sent`), as Istio counts them.
    pub fn add_bytes(&mut self, received: u64, sent: u64) {
        self.received += received;
        self.sent += sent;
    }

    pub fn set_error(&mut self, error: impl std::fmt::Display) {
        self.error = Some(error.to_string());
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let c = &self.counters;
        c.closed.inc();
        c.received.inc_by(self.received);
        c.sent.inc_by(self.sent);
        let i = &self.info;
        let name = |w: &Option<Arc<WorkloadInfo>>| w.as_ref().map(|w| w.name.clone());
        let ns = |w: &Option<Arc<WorkloadInfo>>| w.as_ref().map(|w| w.namespace.clone());
        let id = |i: &Option<Identity>| i.as_ref().map(|i| i.to_string());
        let direction = match i.direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        let duration = format!("{}ms", self.start.elapsed().as_millis());
        let service = i.dst_service.as_ref().map(|s| s.hostname.clone());
        let hbone = i.hbone_addr.map(|a| a.to_string());
        let (src_workload, src_ns) = (name(&i.src_workload), ns(&i.src_workload));
        let (dst_workload, dst_ns) = (name(&i.dst_workload), ns(&i.dst_workload));
        let (src_id, dst_id) = (id(&i.src_identity), id(&i.dst_identity));
        let error = self.error.as_deref().unwrap_or("");
        tracing::info!(
            target: "access",
            direction = direction,
            src.addr = %i.src_addr,
            src.workload = ?src_workload,
            src.namespace = ?src_ns,
            src.identity = ?src_id,
            dst.addr = %i.dst_addr,
            dst.hbone_addr = ?hbone,
            dst.service = ?service,
            dst.workload = ?dst_workload,
            dst.namespace = ?dst_ns,
            dst.identity = ?dst_id,
            bytes_sent = self.sent,
            bytes_recv = self.received,
            duration = %duration,
            error = error,
            "connection complete"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(direction: Direction) -> ConnectionInfo {
        ConnectionInfo {
            direction,
            src_addr: "10.0.0.1:40000".parse().unwrap(),
            src_workload: None,
            src_identity: Some(Identity::new("cluster.local", "demo", "client")),
            dst_addr: "10.0.0.2:15008".parse().unwrap(),
            hbone_addr: Some("10.0.0.2:8080".parse().unwrap()),
            dst_workload: None,
            dst_service: None,
            dst_identity: None,
            mtls: true,
        }
    }

    /// The lines of `family` in `text`, each as its label map and value.
    fn samples(text: &str, family: &str) -> Vec<(std::collections::HashMap<String, String>, u64)> {
        text.lines()
            .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
            .map(|rest| {
                let (labels, value) = rest.rsplit_once("} ").unwrap();
                let map = labels
                    .split("\",")
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (map, value.parse().unwrap())
            })
            .collect()
    }

    #[test]
    fn connections_are_counted_with_istios_labels() {
        let m = Metrics::default();
        {
            let mut c = m.open(info(Direction::Inbound));
            c.add_bytes(10, 200);
        }
        m.failed(&info(Direction::Inbound), "DENY");
        let text = m.render(Scrape {
            active_proxies: 1,
            xds_streams_ended: 2,
            closed_by_policy: 3,
        });
        let opened = samples(&text, "istio_tcp_connections_opened_total");
        assert_eq!(opened.len(), 1, "{text}");
        let (labels, value) = &opened[0];
        assert_eq!(value, &1);
        let mut names: Vec<&str> = labels.keys().map(String::as_str).collect();
        names.sort();
        let mut expected = LABELS.to_vec();
        expected.sort();
        assert_eq!(names, expected, "exactly Istio's label names");
        assert_eq!(labels["reporter"], "destination");
        assert_eq!(labels["source_workload"], "unknown");
        assert_eq!(
            labels["source_principal"],
            "spiffe://cluster.local/ns/demo/sa/client"
        );
        assert_eq!(labels["connection_security_policy"], "mutual_tls");
        assert_eq!(labels["response_flags"], "-");
        assert_eq!(samples(&text, "istio_tcp_connections_closed_total")[0].1, 1);
        assert_eq!(samples(&text, "istio_tcp_received_bytes_total")[0].1, 10);
        assert_eq!(samples(&text, "istio_tcp_sent_bytes_total")[0].1, 200);
        let failed = samples(&text, "istio_tcp_connections_failed_total");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].0["response_flags"], "DENY");
        assert_eq!(failed[0].1, 1);
        assert!(text.contains("\nworkload_manager_active_proxy_count 1\n"));
        assert!(text.contains("\nistio_xds_connection_terminations_total 2\n"));
        assert!(text.contains("\nztunnel_connections_closed_by_policy_total 3\n"));
        assert!(text.contains("istio_build{component=\"ztunnel\",tag=\""));
        assert!(text.contains("# TYPE istio_tcp_connections_opened_total counter"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::default();
        m.failed(&info(Direction::Outbound), "a\"b\\c\nd");
        let text = m.render(Scrape {
            active_proxies: 0,
            xds_streams_ended: 0,
            closed_by_policy: 0,
        });
        assert!(text.contains(r#"response_flags="a\"b\\c\nd""#), "{text}");
    }
}
