//! What the benchmarks share: running a tool inside a network namespace, wrk's figures, and a
//! process's CPU time and memory from `/proc`.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct WrkResult {
    pub requests: u64,
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

pub fn netns_cmd(netns: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", args[0]))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{args:?} failed: {text}"))
    }
}

/// `52.00us`, `1.20ms`, `2.00s` in microseconds.
pub fn wrk_duration_us(s: &str) -> Option<f64> {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * scale)
}

pub fn parse_wrk(out: &str) -> Result<WrkResult, String> {
    let mut percentiles = HashMap::new();
    let (mut requests, mut rps) = (None, None);
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [p, v] if p.ends_with('%') => {
                percentiles.insert(p.to_string(), wrk_duration_us(v));
            }
            ["Requests/sec:", v] => rps = v.parse::<f64>().ok(),
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            ["Socket", "errors:", ..] | ["Non-2xx", ..] => {
                return Err(format!("wrk reported errors: {}", line.trim()))
            }
            _ => {}
        }
    }
    let pct = |p: &str| percentiles.get(p).copied().flatten();
    match (requests, rps, pct("50%"), pct("99%")) {
        (Some(requests), Some(rps), Some(p50_us), Some(p99_us)) => Ok(WrkResult {
            requests,
            rps,
            p50_us,
            p99_us,
        }),
        _ => Err(format!("unexpected wrk output:\n{out}")),
    }
}

/// Field `VmRSS`/`VmHWM` of a process, in KiB.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU of a process, in seconds.
pub fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = text.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    (ticks(11) + ticks(12)) as f64 / ticks_per_second
}

/// Samples the RSS of `pids` every 20 ms until finished, and keeps the peak: of any one of them
/// ([`RssPeak::start`], e.g. the larger of two ztunnels), or of their sum
/// ([`RssPeak::start_total`], e.g. a proxy's processes together).
pub struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssPeak {
    pub fn start(pids: Vec<u32>) -> RssPeak {
        Self::sample(pids, false)
    }

    pub fn start_total(pids: Vec<u32>) -> RssPeak {
        Self::sample(pids, true)
    }

    fn sample(pids: Vec<u32>, total: bool) -> RssPeak {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let each = pids.iter().map(|pid| status_kib(*pid, "VmRSS"));
                let v = if total {
                    each.sum()
                } else {
                    each.max().unwrap_or(0)
                };
                p.fetch_max(v, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        RssPeak {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// wrk with keep-alive for `secs` seconds at `conns` connections (up to two threads) against
/// `url`, from inside `netns`, with `extra` arguments; its figures, or what went wrong.
pub fn wrk_in(
    netns: &str,
    url: &str,
    conns: u32,
    secs: u32,
    extra: &[&str],
) -> Result<WrkResult, String> {
    let threads = conns.clamp(1, 2).to_string();
    let (conns, secs) = (conns.to_string(), format!("{secs}s"));
    let mut args = vec![
        "wrk",
        "--latency",
        "-t",
        &threads,
        "-c",
        &conns,
        "-d",
        &secs,
    ];
    args.extend_from_slice(extra);
    args.push(url);
    parse_wrk(&netns_cmd(netns, &args)?)
}

/// The number after `name` on the benchmark's command line, else `default`.
pub fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number, got {v}"))
        })
        .unwrap_or(default)
}
