//! Prometheus metrics of the control plane, served on the monitoring port. Names follow istiod's
//! where istiod has the same thing (`pilot_xds*`, `citadel_server_*`), so existing dashboards work.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub struct Metrics {
    pub registry: Registry,
    /// Connected xDS clients.
    pub xds_clients: IntGauge,
    /// Responses pushed, by type URL.
    pub xds_pushes: IntCounterVec,
    /// Time from a config change to a client's response being sent, by type URL.
    pub xds_push_time: HistogramVec,
    /// NACKs received, by type URL.
    pub xds_rejects: IntCounterVec,
    /// Time to translate a snapshot.
    pub translate_time: Histogram,
    /// CSRs received.
    pub csr_total: IntCounter,
    /// Certificates issued.
    pub certs_issued: IntCounter,
    /// CSRs refused, by reason (unauthenticated, permission_denied, invalid_csr).
    pub certs_refused: IntCounterVec,
    /// Objects in the store, by kind.
    pub config_objects: IntGaugeVec,
    /// Config documents currently rejected.
    pub config_rejected: IntGauge,
    /// Objects with a status condition that is not True, by kind and reason.
    pub policies_not_accepted: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Only fails on invalid metric names or duplicate registration: programming errors.
    r.expect("metric definition")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let buckets = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let m = Metrics {
            xds_clients: must(IntGauge::new(
                "pilot_xds",
                "Number of connected xDS clients.",
            )),
            xds_pushes: must(IntCounterVec::new(
                Opts::new("pilot_xds_pushes", "xDS responses sent, by type URL."),
                &["type"],
            )),
            xds_push_time: must(HistogramVec::new(
                HistogramOpts::new(
                    "pilot_xds_push_time",
                    "Seconds from a config change to the xDS response being sent to a client.",
                )
                .buckets(buckets.clone()),
                &["type"],
            )),
            xds_rejects: must(IntCounterVec::new(
                Opts::new(
                    "pilot_total_xds_rejects",
                    "xDS responses NACKed by clients, by type URL.",
                ),
                &["type"],
            )),
            translate_time: must(Histogram::with_opts(
                HistogramOpts::new(
                    "istiod_lite_translate_seconds",
                    "Seconds to translate a config snapshot into xDS resources.",
                )
                .buckets(buckets),
            )),
            csr_total: must(IntCounter::new(
                "citadel_server_csr_count",
                "CSRs received.",
            )),
            certs_issued: must(IntCounter::new(
                "citadel_server_success_cert_issuance_count",
                "Certificates issued.",
            )),
            certs_refused: must(IntCounterVec::new(
                Opts::new("istiod_lite_csr_refused_total", "CSRs refused, by reason."),
                &["reason"],
            )),
            config_objects: must(IntGaugeVec::new(
                Opts::new(
                    "istiod_lite_config_objects",
                    "Objects in the config store, by kind.",
                ),
                &["kind"],
            )),
            config_rejected: must(IntGauge::new(
                "istiod_lite_config_rejected_documents",
                "Config documents currently rejected (see /debug/config).",
            )),
            policies_not_accepted: must(IntGaugeVec::new(
                Opts::new(
                    "istiod_lite_policies_not_accepted",
                    "Objects whose status has a condition that is not True (see /debug/status), by kind and reason.",
                ),
                &["kind", "reason"],
            )),
            registry,
        };
        for c in [
            Box::new(m.xds_clients.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.xds_pushes.clone()),
            Box::new(m.xds_push_time.clone()),
            Box::new(m.xds_rejects.clone()),
            Box::new(m.translate_time.clone()),
            Box::new(m.csr_total.clone()),
            Box::new(m.certs_issued.clone()),
            Box::new(m.certs_refused.clone()),
            Box::new(m.config_objects.clone()),
            Box::new(m.config_rejected.clone()),
            Box::new(m.policies_not_accepted.clone()),
        ] {
            must(m.registry.register(c));
        }
        m
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let families = self.registry.gather();
        // Encoding into a String cannot fail for well-formed families.
        let _ = prometheus::TextEncoder::new().encode_utf8(&families, &mut out);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
