//! What the soak watches while it runs, every [`PERIOD`]: the certificates each ztunnel holds
//! (`/config_dump` on its admin port; a new expiry for an identity it already held is a
//! rotation), and the resident memory of each ztunnel process (its peak, whatever the pid).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use meshctl::cluster::home::node_netns;
use meshctl::cluster::host::http_get;

use crate::cluster::Cluster;

const PERIOD: Duration = Duration::from_secs(2);

#[derive(Default, Debug)]
pub struct Observed {
    /// (node, identity) -> how many times its certificate changed.
    pub rotations: HashMap<(u8, String), u64>,
    /// Peak VmRSS of each node's ztunnel, KiB.
    pub peak_rss: [u64; 2],
    /// Scrapes of `/config_dump` that failed (a ztunnel being restarted).
    pub failed_scrapes: u64,
}

impl Observed {
    pub fn total_rotations(&self) -> u64 {
        self.rotations.values().sum()
    }
}

/// Field `VmRSS` (or another of `/proc/<pid>/status`) of a process, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The identities a ztunnel holds certificates for, with their expiry.
fn certificates(node: u8) -> Result<Vec<(String, String)>, String> {
    let dump = http_get(&node_netns(node), "127.0.0.1:15000", "/config_dump")
        .map_err(|e| e.to_string())?
        .ok()?;
    let json: serde_json::Value = serde_json::from_str(&dump).map_err(|e| e.to_string())?;
    Ok(json["certificates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            Some((
                c["identity"].as_str()?.to_string(),
                c["expiry"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// Watches until `stop`.
pub fn run(cluster: &Cluster, stop: &Arc<AtomicBool>) -> Observed {
    let mut seen: HashMap<(u8, String), String> = HashMap::new();
    let mut out = Observed::default();
    while !stop.load(Ordering::Relaxed) {
        for node in 1..=2u8 {
            if let Some(pid) = cluster.pid(&format!("ztunnel-node{node}")) {
                let rss = status_kib(pid, "VmRSS");
                let peak = &mut out.peak_rss[usize::from(node - 1)];
                *peak = (*peak).max(rss);
            }
            match certificates(node) {
                Ok(certs) => {
                    for (identity, expiry) in certs {
                        let key = (node, identity);
                        match seen.insert(key.clone(), expiry.clone()) {
                            Some(before) if before != expiry => {
                                *out.rotations.entry(key).or_default() += 1;
                            }
                            _ => {}
                        }
                    }
                }
                Err(_) => out.failed_scrapes += 1,
            }
        }
        std::thread::sleep(PERIOD);
    }
    out
}
