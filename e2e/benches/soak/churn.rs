//! Policy churn that must break nothing: every [`PERIOD`] one of these AuthorizationPolicies
//! is applied or deleted (in turn), each a change istiod-lite translates and pushes to both
//! ztunnels, which then re-check every open connection:
//!
//! * `churn-allow-clients`: ALLOW at the servers for exactly the soak's two clients (while it
//!   exists, it is the servers' only ALLOW, and it must let every soak connection through);
//! * `churn-deny-nobody`: DENY at the servers for an identity no pod has;
//! * `churn-deny-port`: DENY at the servers for a port the soak does not use;
//! * `churn-other`: ALLOW-nothing in another namespace (`soak-other`), which has no pods.
//!
//! A failure while only these changed is not explained by any fault: the report names the
//! nearest churn event beside it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::Cluster;

const PERIOD: Duration = Duration::from_secs(10);

const POLICIES: [(&str, &str, &str); 4] = [
    (
        "soak",
        "churn-allow-clients",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: churn-allow-clients, namespace: soak}
spec:
  selector: {matchLabels: {app: soak-server}}
  action: ALLOW
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/soak/sa/client-a", "cluster.local/ns/soak/sa/client-b"]}
"#,
    ),
    (
        "soak",
        "churn-deny-nobody",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: churn-deny-nobody, namespace: soak}
spec:
  selector: {matchLabels: {app: soak-server}}
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/soak/sa/nobody"]}
"#,
    ),
    (
        "soak",
        "churn-deny-port",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: churn-deny-port, namespace: soak}
spec:
  selector: {matchLabels: {app: soak-server}}
  action: DENY
  rules:
  - to:
    - operation: {ports: ["9999"]}
"#,
    ),
    (
        "soak-other",
        "churn-other",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: churn-other, namespace: soak-other}
spec: {}
"#,
    ),
];

/// One change: when, what, and whether meshctl accepted it.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: f64,
    pub what: String,
    pub error: Option<String>,
}

/// Applies and deletes the policies in turn until `stop`; returns what it did.
pub fn run(cluster: &Cluster, start: Instant, stop: &Arc<AtomicBool>) -> Vec<Change> {
    let mut present = [false; POLICIES.len()];
    let mut changes = Vec::new();
    let mut turn = 0usize;
    let mut next = Instant::now() + PERIOD;
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() < next {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        next += PERIOD;
        let i = turn % POLICIES.len();
        turn += 1;
        let (namespace, name, yaml) = POLICIES[i];
        let (what, result) = if present[i] {
            (
                format!("delete {namespace}/{name}"),
                cluster.delete_policy(namespace, name),
            )
        } else {
            (format!("apply {namespace}/{name}"), cluster.apply(yaml))
        };
        if result.is_ok() {
            present[i] = !present[i];
        }
        changes.push(Change {
            at: start.elapsed().as_secs_f64(),
            what,
            error: result.err(),
        });
    }
    changes
}
