//! Metrics with Istio's names and labels (istio-wire-facts.md 6.1), rendered as Prometheus text,
//! and the access log: one line per connection when it ends, with both identities.
//!
//! Each connection resolves its label set once, when it opens (one short lock), and holds its
//! counters; bytes are added when it ends. Missing values render as `unknown`, as in Istio.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mesh_core::identity::Identity;

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
/// A counter family: name, help, and which counter it reads.
type Family = (&'static str, &'static str, fn(&Counters) -> u64);

#[derive(Default)]
struct Counters {
    opened: AtomicU64,
    closed: AtomicU64,
    failed: AtomicU64,
    received: AtomicU64,
    sent: AtomicU64,
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
#[derive(Default)]
pub struct Metrics {
    traffic: Mutex<HashMap<LabelValues, Arc<Counters>>>,
    pub proxies_started: AtomicU64,
    pub proxies_stopped: AtomicU64,
    pub proxies_pending: AtomicU64,
    pub xds_connection_terminations: AtomicU64,
    pub connections_closed_by_policy: AtomicU64,
}

impl Metrics {
    fn counters(&self, labels: LabelValues) -> Arc<Counters> {
        self.traffic
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(labels)
            .or_default()
            .clone()
    }

    /// Counts a connection as opened; the returned handle counts and logs its end.
    pub fn open(&self, info: ConnectionInfo) -> Connection {
        let counters = self.counters(info.labels("-"));
        counters.opened.fetch_add(1, Ordering::Relaxed);
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
        let counters = self.counters(info.labels(response_flags));
        counters.failed.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything, plus `extra` lines (already rendered).
    pub fn render(&self, active_proxies: usize, extra: &str) -> String {
        let traffic: Vec<(LabelValues, Arc<Counters>)> = {
            let t = self.traffic.lock().unwrap_or_else(|e| e.into_inner());
            let mut v: Vec<_> = t.iter().map(|(k, c)| (k.clone(), c.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        let mut out = String::with_capacity(4096);
        let families: [Family; 5] = [
            ("istio_tcp_connections_opened_total", "TCP connections opened", |c| {
                c.opened.load(Ordering::Relaxed)
            }),
            ("istio_tcp_connections_closed_total", "TCP connections closed", |c| {
                c.closed.load(Ordering::Relaxed)
            }),
            (
                "istio_tcp_connections_failed_total",
                "TCP connections that failed (response_flags says why)",
                |c| c.failed.load(Ordering::Relaxed),
            ),
            (
                "istio_tcp_received_bytes_total",
                "Bytes in the request direction (client to server), counted when a connection ends",
                |c| c.received.load(Ordering::Relaxed),
            ),
            (
                "istio_tcp_sent_bytes_total",
                "Bytes in the response direction (server to client), counted when a connection ends",
                |c| c.sent.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, get) in families {
            let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
            for (labels, c) in &traffic {
                let value = get(c);
                if value == 0 && name.contains("failed") {
                    continue;
                }
                out.push_str(name);
                out.push('{');
                for (i, (k, v)) in LABELS.iter().zip(labels.iter()).enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                let _ = writeln!(out, "}} {value}");
            }
        }
        let gauge = |out: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}.\n# TYPE {name} {kind}\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "workload_manager_active_proxy_count",
            "gauge",
            "Pods served by this ztunnel",
            active_proxies as u64,
        );
        gauge(
            &mut out,
            "workload_manager_pending_proxy_count",
            "gauge",
            "Captured pods waiting for their workload or a proxy",
            self.proxies_pending.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "workload_manager_proxies_started_total",
            "counter",
            "Pod proxies started",
            self.proxies_started.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "workload_manager_proxies_stopped_total",
            "counter",
            "Pod proxies stopped",
            self.proxies_stopped.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "istio_xds_connection_terminations_total",
            "counter",
            "xDS streams that ended",
            self.xds_connection_terminations.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP istio_build Build information.\n# TYPE istio_build gauge\nistio_build{{component=\"ztunnel\",tag=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str(extra);
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An open connection; dropping it counts it closed and writes its access-log line.
pub struct Connection {
    counters: Arc<Counters>,
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
        c.closed.fetch_add(1, Ordering::Relaxed);
        c.received.fetch_add(self.received, Ordering::Relaxed);
        c.sent.fetch_add(self.sent, Ordering::Relaxed);
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

    #[test]
    fn connections_are_counted_with_istios_labels() {
        let m = Metrics::default();
        {
            let mut c = m.open(info(Direction::Inbound));
            c.add_bytes(10, 200);
        }
        m.failed(&info(Direction::Inbound), "DENY");
        let text = m.render(1, "");
        let opened = text
            .lines()
            .find(|l| l.starts_with("istio_tcp_connections_opened_total{"))
            .unwrap();
        assert!(opened.starts_with("istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"unknown\","), "{opened}");
        assert!(opened.contains("source_principal=\"spiffe://cluster.local/ns/demo/sa/client\""));
        assert!(opened.contains("connection_security_policy=\"mutual_tls\""));
        assert!(opened.ends_with("} 1"));
        assert!(text
            .lines()
            .any(|l| l.starts_with("istio_tcp_received_bytes_total{") && l.ends_with("} 10")));
        assert!(text
            .lines()
            .any(|l| l.starts_with("istio_tcp_sent_bytes_total{") && l.ends_with("} 200")));
        assert!(text
            .lines()
            .any(|l| l.starts_with("istio_tcp_connections_failed_total{")
                && l.contains("response_flags=\"DENY\"")
                && l.ends_with("} 1")));
        assert!(text.contains("workload_manager_active_proxy_count 1"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
