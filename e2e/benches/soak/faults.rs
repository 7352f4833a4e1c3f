//! The faults the soak injects, on a seeded timeline, and which traffic each may break:
//!
//! * `kill -9` of a node's ztunnel: the supervisor restarts it; the fault lasts until the new
//!   process answers `/healthz/ready` (xDS applied, the node's pods recovered). It may break any
//!   connection whose client or server is on that node.
//! * `kill -9` of istiod-lite: restarted by the supervisor; lasts until `/ready`. The data path
//!   should not notice (certificates are held, xDS state is kept), but a connection failing
//!   then is attributed to it, and the report shows how many were.
//! * a DENY AuthorizationPolicy for client-a's identity at server-2, held 20 s and deleted: it
//!   breaks client-a's connections to server-2 and to the service VIP (which may pick
//!   server-2), and nothing else.
//!
//! The same fault is never repeated within [`SAME_FAULT_GAP`]: the supervisor doubles its
//! restart delay for a process that lived less than a minute, and the soak wants the first
//! delay every time. Policy churn that must break nothing runs beside this (`churn.rs`).

use std::time::{Duration, Instant};

use crate::cluster::Cluster;
use crate::seeded::Seeded;
use crate::traffic::Route;

/// Gap between two faults, in seconds (drawn from the seed).
const GAP: (u64, u64) = (40, 70);
const SAME_FAULT_GAP: f64 = 75.0;
/// No fault starts in the last seconds of a run, so the end is measured on a recovered mesh.
pub const QUIET_TAIL: f64 = 30.0;
const FIRST_AT: f64 = 20.0;
const DENY_HOLD: Duration = Duration::from_secs(20);
const RECOVERY_DEADLINE: Duration = Duration::from_secs(90);

pub const DENIED_CLIENT: &str = "client-a";
pub const DENIED_AT: &str = "server-2";

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: soak-deny-client-a, namespace: soak}
spec:
  selector: {matchLabels: {soak-instance: server-2}}
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/soak/sa/client-a"]}
"#;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    KillZtunnel(u8),
    KillIstiod,
    Deny,
}

impl FaultKind {
    pub fn name(self) -> String {
        match self {
            FaultKind::KillZtunnel(n) => format!("kill -9 ztunnel-node{n}"),
            FaultKind::KillIstiod => "kill -9 istiod-lite".into(),
            FaultKind::Deny => format!("DENY {DENIED_CLIENT} at {DENIED_AT}"),
        }
    }

    const ALL: [FaultKind; 4] = [
        FaultKind::KillZtunnel(1),
        FaultKind::KillZtunnel(2),
        FaultKind::KillIstiod,
        FaultKind::Deny,
    ];
}

/// A fault as it happened: from injection until the mesh was back (or the policy removed).
#[derive(Clone, Debug)]
pub struct Fault {
    pub kind: FaultKind,
    /// Seconds since the soak started.
    pub start: f64,
    pub end: f64,
    /// The component came back within the deadline (always true for a DENY that was removed).
    pub recovered: bool,
    pub note: String,
}

impl Fault {
    /// Whether this fault can break the traffic of `route`.
    pub fn affects(&self, route: &Route) -> bool {
        match self.kind {
            FaultKind::KillZtunnel(n) => route.client_node == n || route.server_nodes.contains(&n),
            FaultKind::KillIstiod => true,
            FaultKind::Deny => {
                route.client == DENIED_CLIENT
                    && (route.target == DENIED_AT || route.target == "vip")
            }
        }
    }
}

/// The faults of a run of `duration` seconds, with their start times.
pub fn timeline(seed: u64, duration: f64) -> Vec<(f64, FaultKind)> {
    let mut rng = Seeded::new(seed ^ 0xfa17);
    let mut out: Vec<(f64, FaultKind)> = Vec::new();
    let mut at = FIRST_AT;
    while at < duration - QUIET_TAIL {
        let first = rng.between(0, FaultKind::ALL.len() as u64 - 1) as usize;
        // The drawn fault, or the next one that was not injected too recently.
        let pick = (0..FaultKind::ALL.len())
            .map(|i| FaultKind::ALL[(first + i) % FaultKind::ALL.len()])
            .find(|k| {
                out.iter()
                    .rev()
                    .find(|(_, p)| p == k)
                    .is_none_or(|(t, _)| at - t >= SAME_FAULT_GAP)
            });
        if let Some(kind) = pick {
            out.push((at, kind));
        }
        at += rng.between(GAP.0, GAP.1) as f64;
    }
    out
}

/// Injects one fault and waits until it is over.
pub fn inject(cluster: &Cluster, kind: FaultKind, start: Instant) -> Fault {
    let now = || start.elapsed().as_secs_f64();
    match kind {
        FaultKind::KillZtunnel(n) => kill(
            cluster,
            kind,
            &format!("ztunnel-node{n}"),
            n,
            "127.0.0.1:15021",
            "/healthz/ready",
            start,
        ),
        FaultKind::KillIstiod => kill(
            cluster,
            kind,
            "istiod-lite",
            1,
            "127.0.0.1:15014",
            "/ready",
            start,
        ),
        FaultKind::Deny => {
            let t0 = now();
            if let Err(e) = cluster.apply(DENY) {
                return Fault {
                    kind,
                    start: t0,
                    end: now(),
                    recovered: false,
                    note: format!("applying the DENY failed: {e}"),
                };
            }
            std::thread::sleep(DENY_HOLD);
            let removed = cluster.delete_policy("soak", "soak-deny-client-a");
            Fault {
                kind,
                start: t0,
                end: now(),
                recovered: removed.is_ok(),
                note: match removed {
                    Ok(_) => format!("held {} s", DENY_HOLD.as_secs()),
                    Err(e) => format!("deleting the DENY failed: {e}"),
                },
            }
        }
    }
}

/// `kill -9` of a supervised component, then waits for a new process that is ready.
fn kill(
    cluster: &Cluster,
    kind: FaultKind,
    component: &str,
    node: u8,
    addr: &str,
    path: &str,
    start: Instant,
) -> Fault {
    let now = || start.elapsed().as_secs_f64();
    let t0 = now();
    let Some(old) = cluster.pid(component) else {
        return Fault {
            kind,
            start: t0,
            end: t0,
            recovered: false,
            note: format!("{component} was not running when its kill was due"),
        };
    };
    let _ = std::process::Command::new("kill")
        .args(["-9", &old.to_string()])
        .status();
    let netns = meshctl::cluster::home::node_netns(node);
    let back = meshctl::cluster::host::wait_for(
        &format!("{component} back after kill -9"),
        RECOVERY_DEADLINE,
        || match cluster.pid(component) {
            Some(pid) if pid != old => meshctl::cluster::host::ready(&netns, addr, path),
            other => Err(format!("pid {other:?}")),
        },
    );
    let end = now();
    Fault {
        kind,
        start: t0,
        end,
        recovered: back.is_ok(),
        note: match back {
            Ok(()) => format!("pid {old} killed, ready again after {:.1} s", end - t0),
            Err(e) => format!("pid {old} killed; DID NOT RECOVER: {e}"),
        },
    }
}
