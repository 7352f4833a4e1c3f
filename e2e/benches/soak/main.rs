//! The soak with faults of issue 15 on meshctl's local cluster (root only; `e2e/run.sh soak
//! --minutes N` runs it with cleanup): checksummed transfers through the mesh for N minutes
//! while ztunnels and istiod-lite are killed and restarted, certificates rotate on a 1-minute
//! TTL and policies churn. It reports bytes sent, bytes verified, connections failed and why,
//! and fails on one corrupted byte or one failed connection that no injected fault explains.
//!
//! The cluster (`cluster.rs`): two nodes, namespace `soak` (ambient) with `server-1` (node1)
//! and `server-2` (node2) running `mesh-echo tcp-echo` behind the Service `echo`
//! (10.96.250.30:7000), and `client-a` (node1), `client-b` (node2). Each client runs a long-
//! and a short-connection loop to each server and to the VIP (`traffic.rs`): twelve loops,
//! same node and across nodes. Beside them: the fault timeline (`faults.rs`), the policy churn
//! (`churn.rs`) and the watcher of certificates and memory (`observe.rs`); `report.rs`
//! attributes each failure and prints the verdict.
//!
//! Options: `--minutes N` (default 2), `--seed N` (default 15; the fault timeline, the sizes
//! and the bytes follow from it), `--cert-ttl D` (default 60s).

mod churn;
mod cluster;
mod faults;
mod observe;
mod report;
mod seeded;
mod traffic;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{eventually_ok, Cluster};
use faults::FaultKind;
use traffic::{Route, Shape, Tally};

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: soak, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: soak-other, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: soak}
spec:
  selector: {app: soak-server}
  clusterIP: 10.96.250.30
  ports: [{name: tcp, port: 7000, targetPort: 7000}]
"#;

/// Where the cluster's logs are copied before `down`.
const LOGS: &str = "/tmp/meshctl-soak-logs";
const VIP: &str = "10.96.250.30";
const PORT: u16 = 7000;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let i = args.iter().position(|a| a == name)?;
    args.get(i + 1).cloned()
}

fn main() -> ExitCode {
    match soak() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn soak() -> Result<bool, String> {
    meshctl::cluster::host::require_root("the soak").map_err(|e| e.to_string())?;
    let minutes: f64 = arg("--minutes")
        .map_or(Ok(2.0), |m| m.parse())
        .map_err(|e| format!("--minutes: {e}"))?;
    let seed: u64 = arg("--seed")
        .map_or(Ok(15), |s| s.parse())
        .map_err(|e| format!("--seed: {e}"))?;
    let cert_ttl = arg("--cert-ttl").unwrap_or_else(|| "60s".into());
    let seconds = minutes * 60.0;
    let left = cluster::leftovers();
    if !left.is_empty() {
        return Err(format!(
            "a meshctl cluster exists on this machine ({}): `sudo meshctl down` it first",
            left.join(", ")
        ));
    }
    let bins = mesh_e2e::bin_dir();
    println!(
        "== cluster: meshctl up --nodes 2 (binaries in {}), workload certificates of {cert_ttl}",
        bins.display()
    );
    let cluster = Cluster::up(&bins, &cert_ttl)?;
    let routes = deploy(&cluster, seed)?;
    let result = run(&cluster, routes, seed, minutes, seconds, cert_ttl);
    // The logs outlive the cluster, for a failure's story.
    let _ = std::fs::remove_dir_all(LOGS);
    let _ = cluster::copy_dir(&cluster.home.logs(), std::path::Path::new(LOGS));
    drop(cluster);
    let mut run = result?;
    run.leftovers = cluster::leftovers();
    Ok(report::print(&run))
}

/// The app and its pods; returns the client loops once every one of them gets an echo.
fn deploy(cluster: &Cluster, seed: u64) -> Result<Vec<Route>, String> {
    cluster.apply(APP)?;
    for (name, node) in [("server-1", "node1"), ("server-2", "node2")] {
        let labels = format!("app=soak-server,soak-instance={name}");
        cluster.meshctl(&[
            "run",
            name,
            "-n",
            "soak",
            "--node",
            node,
            "--serviceaccount",
            "server",
            "-l",
            &labels,
            "--port",
            "7000",
            "--",
            "mesh-echo",
            "tcp-echo",
            "--port",
            "7000",
        ])?;
    }
    for (name, node) in [("client-a", "node1"), ("client-b", "node2")] {
        cluster.meshctl(&[
            "run",
            name,
            "-n",
            "soak",
            "--node",
            node,
            "--serviceaccount",
            name,
            "--",
            "sleep",
            "infinity",
        ])?;
    }
    let (_, ip1) = cluster.pod("soak", "server-1")?;
    let (_, ip2) = cluster.pod("soak", "server-2")?;
    let targets = [
        ("server-1", SocketAddr::from((ip1, PORT)), vec![1u8]),
        ("server-2", SocketAddr::from((ip2, PORT)), vec![2]),
        (
            "vip",
            SocketAddr::new(VIP.parse().map_err(|e| format!("{e}"))?, PORT),
            vec![1, 2],
        ),
    ];
    let mut routes = Vec::new();
    for (client, node) in [("client-a", 1u8), ("client-b", 2)] {
        let (netns, _) = cluster.pod("soak", client)?;
        for (target, addr, server_nodes) in &targets {
            for shape in [Shape::Long, Shape::Short] {
                routes.push(Route {
                    client: client.into(),
                    client_node: node,
                    netns: netns.clone(),
                    target: target.to_string(),
                    addr: *addr,
                    server_nodes: server_nodes.clone(),
                    shape,
                    seed: seed.wrapping_mul(1000).wrapping_add(routes.len() as u64),
                });
            }
        }
    }
    // Ready when one short exchange succeeds on every client/destination pair.
    for r in routes.iter().filter(|r| r.shape == Shape::Short) {
        eventually_ok(
            &format!("an echo on {}", r.label()),
            Duration::from_secs(60),
            || traffic::probe(r),
        )?;
    }
    println!("== {} client loops ready", routes.len());
    Ok(routes)
}

fn ztunnel_rss(cluster: &Cluster, node: u8) -> (u64, u64) {
    let name = format!("ztunnel-node{node}");
    let Some(pid) = cluster.pid(&name) else {
        return (0, 0);
    };
    let started = meshctl::cluster::home::Status::load(&cluster.home)
        .and_then(|s| s.components.into_iter().find(|c| c.name == name))
        .map_or(0, |c| c.started);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (
        observe::status_kib(pid, "VmRSS"),
        now.saturating_sub(started),
    )
}

/// Lines of istiod-lite's log (from `from` bytes on) for issued certificates, and their TTLs.
fn issued_since(cluster: &Cluster, from: usize) -> (u64, Vec<String>) {
    let log = std::fs::read(cluster.istiod_log()).unwrap_or_default();
    let text = String::from_utf8_lossy(log.get(from..).unwrap_or_default());
    let mut ttls = std::collections::BTreeSet::new();
    let mut n = 0;
    for line in text.lines().filter(|l| l.contains("certificate issued")) {
        n += 1;
        if let Some(ttl) = line
            .split("ttl_seconds=")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
        {
            ttls.insert(format!("{ttl} s"));
        }
    }
    (n, ttls.into_iter().collect())
}

fn run(
    cluster: &Cluster,
    routes: Vec<Route>,
    seed: u64,
    minutes: f64,
    seconds: f64,
    cert_ttl: String,
) -> Result<report::Run, String> {
    let components = ["istiod-lite", "ztunnel-node1", "ztunnel-node2"];
    let restarts_before: Vec<u32> = components.iter().map(|c| cluster.restarts(c)).collect();
    let rss_start: Vec<u64> = (1..=2).map(|n| ztunnel_rss(cluster, n).0).collect();
    let log_from = std::fs::metadata(cluster.istiod_log()).map_or(0, |m| m.len() as usize);
    let plan = faults::timeline(seed, seconds);
    println!(
        "== soak: {minutes} minute(s), {} faults planned, policy churn every 10 s",
        plan.len()
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let n_routes = routes.len();
    let mut tally = Tally::default();
    let mut faults_done = Vec::new();
    let (changes, observed) = std::thread::scope(|scope| {
        let loops: Vec<_> = routes
            .into_iter()
            .map(|r| {
                let stop = stop.clone();
                let route = r.clone();
                (route, scope.spawn(move || traffic::run(r, start, stop)))
            })
            .collect();
        let churn = scope.spawn(|| churn::run(cluster, start, &stop));
        let watch = scope.spawn(|| observe::run(cluster, &stop));
        for (at, kind) in plan {
            let wait = at - start.elapsed().as_secs_f64();
            if wait > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(wait));
            }
            let f = faults::inject(cluster, kind, start);
            println!("  {:7.1} s  {:28} {}", f.start, kind.name(), f.note);
            faults_done.push(f);
        }
        let wait = seconds - start.elapsed().as_secs_f64();
        if wait > 0.0 {
            std::thread::sleep(Duration::from_secs_f64(wait));
        }
        stop.store(true, Ordering::Relaxed);
        for (route, l) in loops {
            match l.join() {
                Ok(t) => tally.merge(&route, t),
                Err(_) => tally.failed += 1,
            }
        }
        (
            churn.join().unwrap_or_default(),
            watch.join().unwrap_or_default(),
        )
    });
    let elapsed = start.elapsed().as_secs_f64();
    let end: Vec<(u64, u64)> = (1..=2).map(|n| ztunnel_rss(cluster, n)).collect();
    let kills = |c: &str| {
        faults_done
            .iter()
            .filter(|f| match (f.kind, c) {
                (FaultKind::KillIstiod, "istiod-lite") => true,
                (FaultKind::KillZtunnel(n), c) => c == format!("ztunnel-node{n}"),
                _ => false,
            })
            .count() as u32
    };
    let restarts = components
        .iter()
        .zip(restarts_before)
        .map(|(c, before)| (c.to_string(), cluster.restarts(c) - before, kills(c)))
        .collect();
    let (issued, issued_ttls) = issued_since(cluster, log_from);
    Ok(report::Run {
        seed,
        minutes,
        seconds: elapsed,
        cert_ttl,
        routes: n_routes,
        tally,
        faults: faults_done,
        changes,
        observed,
        restarts,
        rss: rss_start
            .iter()
            .zip(end)
            .map(|(s, (e, age))| (*s, e, age))
            .collect(),
        issued,
        issued_ttls,
        leftovers: Vec::new(),
    })
}
