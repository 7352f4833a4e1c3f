//! The soak's verdict: each failed connection is attributed to an injected fault that could
//! break its route and was active around it (from [`BEFORE`] before its start until [`AFTER`]
//! after its end: a broken connection is noticed up to a read timeout later), and the report
//! prints the figures. The soak fails on one corrupted byte, one unexplained failure, a
//! component that did not come back, a restart the soak did not cause, or a leftover name.

use std::collections::BTreeMap;

use crate::churn::Change;
use crate::faults::Fault;
use crate::observe::Observed;
use crate::traffic::{Failure, Tally};

const BEFORE: f64 = 1.0;
const AFTER: f64 = 12.0;

/// Everything the report is made of.
pub struct Run {
    pub seed: u64,
    pub minutes: f64,
    pub seconds: f64,
    pub cert_ttl: String,
    pub routes: usize,
    pub tally: Tally,
    pub faults: Vec<Fault>,
    pub changes: Vec<Change>,
    pub observed: Observed,
    /// (component, restarts counted by the supervisor during the run, kills by the soak).
    pub restarts: Vec<(String, u32, u32)>,
    /// ztunnel RSS (KiB) per node: at the start, at the end, and the end process's age (s).
    pub rss: Vec<(u64, u64, u64)>,
    /// Lines of istiod-lite's log for certificates it issued during the run, and their TTLs.
    pub issued: u64,
    pub issued_ttls: Vec<String>,
    pub leftovers: Vec<String>,
}

/// The first fault that explains `f`, if any.
pub fn explain<'a>(f: &Failure, faults: &'a [Fault]) -> Option<&'a Fault> {
    faults
        .iter()
        .find(|x| f.at >= x.start - BEFORE && f.at <= x.end + AFTER && x.affects(&f.route))
}

fn nearest<'a>(f: &Failure, changes: &'a [Change]) -> Option<&'a Change> {
    changes
        .iter()
        .min_by(|a, b| (a.at - f.at).abs().total_cmp(&(b.at - f.at).abs()))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Prints the report; returns whether the soak passed.
pub fn print(run: &Run) -> bool {
    let t = &run.tally;
    let mut by_reason: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_fault: BTreeMap<String, u64> = BTreeMap::new();
    let mut unexplained: Vec<&Failure> = Vec::new();
    for f in &t.failures {
        *by_reason.entry(f.reason.clone()).or_default() += 1;
        match explain(f, &run.faults) {
            Some(fault) => *by_fault.entry(fault.kind.name()).or_default() += 1,
            None => unexplained.push(f),
        }
    }
    let not_recovered: Vec<&Fault> = run.faults.iter().filter(|f| !f.recovered).collect();
    let unexpected: Vec<&(String, u32, u32)> =
        run.restarts.iter().filter(|(_, r, k)| r != k).collect();

    println!(
        "\n== soak report (seed {}, {} minute(s) asked)",
        run.seed, run.minutes
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!("| duration | {:.0} s |", run.seconds);
    println!("| workload certificate TTL | {} |", run.cert_ttl);
    println!("| client loops | {} |", run.routes);
    println!(
        "| connections opened / ok / failed | {} / {} / {} |",
        t.opened, t.ok, t.failed
    );
    println!(
        "| bytes sent / verified (echoed back intact) | {} / {} ({:.2} GB / {:.2} GB) |",
        t.sent,
        t.verified,
        t.sent as f64 / 1e9,
        t.verified as f64 / 1e9
    );
    println!(
        "| bytes sent but not echoed (in flight when a connection broke) | {} |",
        t.sent.saturating_sub(t.verified + t.corrupted)
    );
    println!("| corrupted bytes | {} |", t.corrupted);
    println!(
        "| failures explained by an injected fault / unexplained | {} / {} |",
        t.failed as usize - unexplained.len(),
        unexplained.len()
    );
    println!("| faults injected | {} |", run.faults.len());
    for (name, restarts, kills) in &run.restarts {
        println!(
            "| {name} restarts (by the supervisor) / kills (by the soak) | {restarts} / {kills} |"
        );
    }
    println!(
        "| certificate changes seen in the ztunnels (renewals and re-issues after a restart) | {} |",
        run.observed.total_rotations()
    );
    println!(
        "| certificates issued by istiod-lite (TTLs asked: {}) | {} |",
        if run.issued_ttls.is_empty() {
            "none".to_string()
        } else {
            run.issued_ttls.join(", ")
        },
        run.issued
    );
    for (i, (start, end, age)) in run.rss.iter().enumerate() {
        println!(
            "| ztunnel-node{} RSS at start / peak / at end (end process up {age} s) | {} / {} / {} |",
            i + 1,
            mib(*start),
            mib(run.observed.peak_rss[i]),
            mib(*end)
        );
    }
    println!(
        "| policy changes (churn) applied / refused | {} / {} |",
        run.changes.iter().filter(|c| c.error.is_none()).count(),
        run.changes.iter().filter(|c| c.error.is_some()).count()
    );
    println!(
        "| leftover names after down | {} |",
        if run.leftovers.is_empty() {
            "none".to_string()
        } else {
            run.leftovers.join(", ")
        }
    );

    println!("\nper loop:");
    for line in &t.per_route {
        println!("  {line}");
    }
    println!("\nfailures by reason:");
    for (reason, n) in &by_reason {
        println!("  {n:6}  {reason}");
    }
    println!("failures by attributed fault:");
    for (fault, n) in &by_fault {
        println!("  {n:6}  {fault}");
    }
    println!("\nfault timeline (s since start):");
    for f in &run.faults {
        let n = t
            .failures
            .iter()
            .filter(|x| explain(x, &run.faults).is_some_and(|y| std::ptr::eq(y, f)))
            .count();
        println!(
            "  {:7.1} - {:7.1}  {:28}  {:4} failures  {}",
            f.start,
            f.end,
            f.kind.name(),
            n,
            f.note
        );
    }
    for c in run.changes.iter().filter(|c| c.error.is_some()) {
        println!(
            "  churn refused at {:.1}: {}: {}",
            c.at,
            c.what,
            c.error.as_deref().unwrap_or("")
        );
    }
    if !unexplained.is_empty() {
        println!("\nUNEXPLAINED failures (the nearest policy change beside each):");
        for f in unexplained.iter().take(50) {
            let near = nearest(f, &run.changes)
                .map(|c| format!("{} at {:.1}", c.what, c.at))
                .unwrap_or_default();
            println!(
                "  {:7.1}  {:32}  {:20}  {} (verified {} bytes first)  [{near}]",
                f.at,
                f.route.label(),
                f.reason,
                f.detail,
                f.verified
            );
        }
    }

    let mut verdict = Vec::new();
    if t.corrupted > 0 {
        verdict.push(format!("{} corrupted bytes", t.corrupted));
    }
    if !unexplained.is_empty() {
        verdict.push(format!("{} unexplained failures", unexplained.len()));
    }
    for f in &not_recovered {
        verdict.push(format!("{} at {:.1} s: {}", f.kind.name(), f.start, f.note));
    }
    for (name, r, k) in &unexpected {
        verdict.push(format!(
            "{name} restarted {r} times but was killed {k} times"
        ));
    }
    if !run.leftovers.is_empty() {
        verdict.push(format!("left after down: {}", run.leftovers.join(", ")));
    }
    if t.ok == 0 {
        verdict.push("no connection succeeded".into());
    }
    if verdict.is_empty() {
        println!("\nsoak PASSED: 0 corrupted bytes, every failure explained by an injected fault");
        true
    } else {
        println!("\nsoak FAILED: {}", verdict.join("; "));
        false
    }
}
