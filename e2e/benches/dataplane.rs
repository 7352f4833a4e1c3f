//! The data-path benchmark of issue 3 on the two-node local cluster (root only; `e2e/run.sh
//! bench` runs it with cleanup). Every figure is measured three times in one run, on the same
//! nodes, bridges and underlay: **direct** between two pods outside the mesh; through a **plain
//! relay pair**, the floor (`mesh-echo relay` in the client pod and in the server pod, where
//! ztunnel's sockets live: two more hops, but no capture, no TLS, no HTTP/2 and no event loop);
//! and **through the mesh** between two ambient pods (eBPF capture, the client node's ztunnel,
//! HBONE mTLS across the underlay, the server node's ztunnel). The load comes from the real
//! tools, inside the client pod's netns:
//!
//! * iperf3: one stream, then four;
//! * wrk against `mesh-echo serve` (`GET /bench`, keep-alive): latency p50/p99 at one
//!   connection, requests per second at 16 connections;
//! * wrk with `Connection: close` at 16 connections: new connections per second;
//! * ztunnel's RSS (`/proc/<pid>/status`) idle and its peak under load, and the CPU seconds of
//!   both proxies (`/proc/<pid>/stat`: the two ztunnels, or the two relays) per 1,000
//!   keep-alive requests.
//!
//! It prints a table with the ratio to direct and the issue's target beside each figure. It does
//! not fail on a slow run; it fails if the mesh run did not go through the mesh (the server
//! ztunnel must count the mutual-TLS connections) or a tool reported errors.
//!
//! Options: `--seconds N` per measurement (default 5), `--runs N` (default 1; figures are the
//! median over runs), `--perf DIR` (record both ztunnels with `perf` during the 1-stream and
//! the keep-alive loads, `<DIR>/stream.perf.data` and `<DIR>/keepalive.perf.data`),
//! `--relay-mode event-loop|threads` (the floor's relay design, default `event-loop`),
//! `--flood N` (instead of the above: [`flood`], N silent and slow connections from one pod to
//! another's HBONE port, with ztunnel's memory and the mesh path's latency before, during and
//! after).

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use mesh_e2e::load::*;
use mesh_e2e::*;

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: bench, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: plain}
"#;

const HTTP_PORT: &str = "8080";
const IPERF_PORT: &str = "5201";
/// The ports the floor's relays listen on.
const RELAY_HTTP_PORT: &str = "18080";
const RELAY_IPERF_PORT: &str = "15201";

/// One path under test: a client pod, the addresses it dials for HTTP and iperf3, and the
/// processes in between whose CPU is counted.
struct Path {
    label: &'static str,
    client: usize,
    http: String,
    iperf_host: String,
    iperf_port: String,
    proxies: Vec<u32>,
}

fn wrk(c: &Cluster, path: &Path, conns: u32, secs: u32, extra: &[&str]) -> WrkResult {
    let url = format!("http://{}/bench", path.http);
    wrk_in(&c.pods[path.client].netns, &url, conns, secs, extra)
        .unwrap_or_else(|e| panic!("{} path: {e}", path.label))
}

/// Gbit/s received by the server.
fn iperf(c: &Cluster, path: &Path, streams: u32, secs: u32) -> f64 {
    let (streams, secs) = (streams.to_string(), secs.to_string());
    let args = [
        "iperf3",
        "-J",
        "-c",
        &path.iperf_host,
        "-p",
        &path.iperf_port,
        "-P",
        &streams,
        "-t",
        &secs,
        "-O",
        "1",
    ];
    let out = netns_cmd(&c.pods[path.client].netns, &args).unwrap_or_else(|e| panic!("{e}"));
    let json: serde_json::Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("iperf3 printed no JSON ({e}):\n{out}"));
    json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or_else(|| panic!("no sum_received in iperf3's result:\n{out}"))
        / 1e9
}

/// Prints and returns the ztunnels' RSS (KiB), with its anonymous and file-backed parts.
fn rss_report(pids: &[u32], when: &str) -> Vec<u64> {
    pids.iter()
        .enumerate()
        .map(|(i, p)| {
            let rss = status_kib(*p, "VmRSS");
            println!(
                "  ztunnel node{} {when}: RSS {rss} KiB = anonymous {} + file-backed (code) {} KiB",
                i + 1,
                status_kib(*p, "RssAnon"),
                status_kib(*p, "RssFile")
            );
            rss
        })
        .collect()
}

/// `perf record` of the ztunnels while it lives (`<dir>/<name>.perf.data`). Stacks are
/// unwound from DWARF (the release build keeps line tables but no frame pointers), sampled at
/// 499 Hz to keep the files to tens of MB.
struct Perf(std::process::Child);

impl Perf {
    fn start(dir: &str, name: &str, pids: &[u32]) -> Perf {
        let pids: Vec<String> = pids.iter().map(|p| p.to_string()).collect();
        let child = Command::new("perf")
            .args(["record", "-F", "499", "--call-graph", "dwarf,16384", "-o"])
            .arg(format!("{dir}/{name}.perf.data"))
            .args(["-p", &pids.join(",")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("perf (apt-get install linux-perf)");
        Perf(child)
    }
}

impl Drop for Perf {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[derive(Default)]
struct Figures {
    values: HashMap<String, Vec<f64>>,
}

impl Figures {
    fn add(&mut self, path: &str, figure: &str, v: f64) {
        self.values
            .entry(format!("{path}/{figure}"))
            .or_default()
            .push(v);
    }

    /// Every run's value of `figure` on `path`.
    fn runs(&self, path: &str, figure: &str) -> Vec<f64> {
        self.values
            .get(&format!("{path}/{figure}"))
            .cloned()
            .unwrap_or_default()
    }

    /// The median over runs of `figure` on `path`.
    fn get(&self, path: &str, figure: &str) -> f64 {
        median(self.runs(path, figure))
    }
}

fn main() {
    if sh(&["id", "-u"]).trim() != "0" {
        eprintln!("dataplane bench: must run as root (e2e/run.sh bench)");
        std::process::exit(1);
    }
    let secs = arg("--seconds", 5);
    let runs = arg("--runs", 1);
    // `--perf DIR`: record both ztunnels with perf during the 1-stream and keep-alive loads.
    let args: Vec<String> = std::env::args().collect();
    let profile = args
        .iter()
        .position(|a| a == "--perf")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    // `--relay-mode threads`: the floor's relays use two blocking threads per connection
    // instead of one event loop.
    let relay_mode = args
        .iter()
        .position(|a| a == "--relay-mode")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
        .unwrap_or("event-loop");
    let ticks: f64 = sh(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0);
    let flood_connections = arg("--flood", 0);

    println!("== cluster: 2 nodes, istiod-lite, a ztunnel per node");
    let mut c = Cluster::up(2);
    println!("  ztunnel binary: {}", c.ztunnel_bin().display());
    c.apply("namespaces.yaml", NAMESPACES);
    let client = c.add_pod("bench", "client", 0, "client");
    let server = c.add_pod("bench", "server", 1, "server");
    let dclient = c.add_pod("plain", "dclient", 0, "default");
    let dserver = c.add_pod("plain", "dserver", 1, "default");
    let echo = c.bin("mesh-echo");
    let echo = echo.to_str().expect("utf-8 path");
    let mut server_pids = Vec::new();
    for (p, name) in [(server, "server"), (dserver, "dserver")] {
        server_pids.push(c.spawn_in_pod(
            p,
            &format!("echo-{name}"),
            echo,
            &["serve", "--port", HTTP_PORT, "--name", name],
        ));
        c.spawn_in_pod(
            p,
            &format!("iperf3-{name}"),
            "iperf3",
            &["-s", "-p", IPERF_PORT],
        );
    }
    let zt: Vec<u32> = (0..2)
        .map(|i| c.ztunnel_pid(i).expect("ztunnel running"))
        .collect();
    // The floor: two plain relays where ztunnel's sockets are (the client pod and the server
    // pod), joined over the same underlay, with nothing but read and write in between.
    let (dserver_ip, server_ip) = (
        c.pods[dserver].ip.to_string(),
        c.pods[server].ip.to_string(),
    );
    // Each relay forwards the HTTP and the iperf3 port, from `listen` to `to`.
    let mut start_relay = |pod: usize, listen: &str, to: &str, to_ports: [&str; 2]| {
        let forwards: Vec<String> = [RELAY_HTTP_PORT, RELAY_IPERF_PORT]
            .iter()
            .zip(to_ports)
            .map(|(port, to_port)| format!("{listen}:{port}={to}:{to_port}"))
            .collect();
        let mut args = vec!["relay", "--mode", relay_mode];
        for f in &forwards {
            args.extend(["--forward", f.as_str()]);
        }
        let log = format!("relay-{}", c.pods[pod].name);
        c.spawn_in_pod(pod, &log, echo, &args)
    };
    let relays = vec![
        start_relay(
            dclient,
            "127.0.0.1",
            &dserver_ip,
            [RELAY_HTTP_PORT, RELAY_IPERF_PORT],
        ),
        start_relay(dserver, "0.0.0.0", "127.0.0.1", [HTTP_PORT, IPERF_PORT]),
    ];
    let direct = Path {
        label: "direct",
        client: dclient,
        http: format!("{dserver_ip}:{HTTP_PORT}"),
        iperf_host: dserver_ip.clone(),
        iperf_port: IPERF_PORT.into(),
        proxies: Vec::new(),
    };
    let relay = Path {
        label: "relay",
        client: dclient,
        http: format!("127.0.0.1:{RELAY_HTTP_PORT}"),
        iperf_host: "127.0.0.1".into(),
        iperf_port: RELAY_IPERF_PORT.into(),
        proxies: relays,
    };
    let mesh = Path {
        label: "mesh",
        client,
        http: format!("{server_ip}:{HTTP_PORT}"),
        iperf_host: server_ip.clone(),
        iperf_port: IPERF_PORT.into(),
        proxies: zt.clone(),
    };
    let paths = [&direct, &relay, &mesh];
    for path in paths {
        let netns = c.pods[path.client].netns.clone();
        eventually(
            &format!("{} path serving", path.label),
            Duration::from_secs(30),
            || ready(&netns, &path.http, "/bench"),
        );
    }

    // Idle: the mesh path has carried a connection (certificates issued, tunnel pooled), no
    // traffic flows.
    let idle_rss = rss_report(&zt, "idle, before any load");
    println!("== warm-up");
    for path in paths {
        wrk(&c, path, 16, 1, &[]);
    }
    // Idle again: what the heap keeps after a load (freed memory glibc does not return).
    std::thread::sleep(Duration::from_millis(500));
    let after_load_rss = rss_report(&zt, "idle after the warm-up load");

    if flood_connections > 0 {
        flood(
            &c,
            &mesh,
            dclient,
            &server_ip,
            zt[1],
            flood_connections,
            secs,
        );
        return;
    }

    let mut f = Figures::default();
    let peak = RssPeak::start(zt.clone());
    for run in 1..=runs {
        println!("== run {run}/{runs} ({secs} s per measurement)");
        for path in paths {
            let l = path.label;
            let perf = profile
                .filter(|_| path.label == "mesh")
                .map(|dir| Perf::start(dir, "stream", &zt));
            let proxies_cpu =
                || -> f64 { path.proxies.iter().map(|p| cpu_seconds(*p, ticks)).sum() };
            let cpu_before = proxies_cpu();
            let g1 = iperf(&c, path, 1, secs);
            // CPU per GB carried, a steadier figure than the rate on a busy machine. iperf3
            // runs one more second than it reports (`-O 1`), assumed at the same rate.
            let gb = g1 / 8.0 * f64::from(secs + 1);
            let cpu_gb = (proxies_cpu() - cpu_before) / gb;
            drop(perf);
            let g4 = iperf(&c, path, 4, secs);
            println!(
                "  {l:6} iperf3: 1 stream {g1:.2} Gbit/s ({cpu_gb:.2} CPU-s/GB in the proxies), 4 streams {g4:.2} Gbit/s"
            );
            let lat = wrk(&c, path, 1, secs, &[]);
            println!(
                "  {l:6} wrk 1 conn: p50 {:.0} us, p99 {:.0} us, {:.0} req/s",
                lat.p50_us, lat.p99_us, lat.rps
            );
            let cpu_before = proxies_cpu();
            let srv = if path.label == "mesh" {
                server_pids[0]
            } else {
                server_pids[1]
            };
            let srv_before = cpu_seconds(srv, ticks);
            let perf = profile
                .filter(|_| path.label == "mesh")
                .map(|dir| Perf::start(dir, "keepalive", &zt));
            let load = wrk(&c, path, 16, secs, &[]);
            drop(perf);
            let cpu = proxies_cpu() - cpu_before;
            let srv_cpu = cpu_seconds(srv, ticks) - srv_before;
            println!(
                "  {l:6} wrk 16 conns: {:.0} req/s, proxies {:.3} CPU-s per 1000 req, server {:.3}",
                load.rps,
                cpu * 1000.0 / load.requests as f64,
                srv_cpu * 1000.0 / load.requests as f64
            );
            let close = wrk(&c, path, 16, secs, &["-H", "Connection: close"]);
            println!(
                "  {l:6} wrk 16 conns, Connection: close: {:.0} conn/s",
                close.rps
            );
            f.add(l, "g1", g1);
            f.add(l, "cpu_gb", cpu_gb);
            f.add(l, "g4", g4);
            f.add(l, "p50", lat.p50_us);
            f.add(l, "p99", lat.p99_us);
            f.add(l, "rps", load.rps);
            f.add(l, "cps", close.rps);
            f.add(l, "cpu", cpu * 1000.0 / load.requests as f64);
            f.add(l, "srv", srv_cpu * 1000.0 / load.requests as f64);
        }
    }
    let peak_rss = peak.finish();
    let hwm: Vec<u64> = zt.iter().map(|p| status_kib(*p, "VmHWM")).collect();

    // The mesh path must really have been the mesh: the server's ztunnel counted mTLS.
    let metrics = c
        .node_get(1, "127.0.0.1:15020", "/metrics")
        .expect("server ztunnel metrics");
    let mtls = metric(
        &metrics,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            ("destination_workload", "server"),
        ],
    );
    assert!(
        mtls > 1000,
        "the server's ztunnel counted only {mtls} mTLS connections: the mesh path was not meshed"
    );

    let echo_rss = status_kib(server_pids[1], "VmRSS");
    println!("\n== results (median of {runs} run(s), {secs} s each; {mtls} mTLS connections counted by the server ztunnel)");
    println!("| figure | direct | plain relay pair (floor) | through the mesh | relay: ratio / added | mesh: ratio / added | target (mesh) | |");
    println!("|---|---|---|---|---|---|---|---|");
    let ok = |b: bool| if b { "met" } else { "missed" };
    // The verdict uses the ratio of the medians; each run's own ratio (direct and mesh
    // measured a few seconds apart) is printed beside it to show the spread.
    let per_run = |path: &str, figure: &str, op: fn(f64, f64) -> f64, digits: usize| {
        let runs: Vec<String> = f
            .runs("direct", figure)
            .iter()
            .zip(f.runs(path, figure))
            .map(|(d, m)| format!("{:.digits$}", op(*d, m)))
            .collect();
        runs.join(", ")
    };
    let medians = |figure: &str| {
        let m = |path| f.get(path, figure);
        (m("direct"), m("relay"), m("mesh"))
    };
    let ratio_row = |name: &str, unit: &str, figure: &str, target: f64| {
        let (d, r, m) = medians(figure);
        println!(
            "| {name} | {d:.2} {unit} | {r:.2} {unit} | {m:.2} {unit} | {:.2}x (runs: {}) | {:.2}x (runs: {}) | >= {target:.2}x | {} |",
            r / d,
            per_run("relay", figure, |d, m| m / d, 2),
            m / d,
            per_run("mesh", figure, |d, m| m / d, 2),
            ok(m / d >= target)
        );
    };
    let added_row = |name: &str, figure: &str, target: f64| {
        let (d, r, m) = medians(figure);
        println!(
            "| {name} | {d:.0} us | {r:.0} us | {m:.0} us | {:+.0} us (runs: {}) | {:+.0} us (runs: {}) | <= +{target:.0} us | {} |",
            r - d,
            per_run("relay", figure, |d, m| m - d, 0),
            m - d,
            per_run("mesh", figure, |d, m| m - d, 0),
            ok(m - d <= target)
        );
    };
    ratio_row("iperf3 1 stream", "Gbit/s", "g1", 0.40);
    println!(
        "| CPU-s per GB, 1 stream, both proxies | | {:.2} | {:.2} | | {:.2}x the relays | | |",
        f.get("relay", "cpu_gb"),
        f.get("mesh", "cpu_gb"),
        f.get("mesh", "cpu_gb") / f.get("relay", "cpu_gb"),
    );
    ratio_row("iperf3 4 streams", "Gbit/s", "g4", 0.35);
    added_row("HTTP p50, 1 conn", "p50", 35.0);
    added_row("HTTP p99, 1 conn", "p99", 100.0);
    ratio_row("HTTP keep-alive, 16 conns", "req/s", "rps", 0.40);
    ratio_row("new connections, 16 conns", "conn/s", "cps", 0.15);
    println!(
        "| ztunnel RSS idle (node1, node2) | | | {} / {} KiB | | | <= 8192 KiB | {} |",
        idle_rss[0],
        idle_rss[1],
        ok(idle_rss.iter().all(|r| *r <= 8192))
    );
    println!(
        "| ztunnel RSS idle after a load (node1, node2) | | | {} / {} KiB | | | <= 8192 KiB | {} |",
        after_load_rss[0],
        after_load_rss[1],
        ok(after_load_rss.iter().all(|r| *r <= 8192))
    );
    println!(
        "| ztunnel RSS peak under load (sampled; VmHWM {} / {} KiB) | echo server {echo_rss} KiB | | {peak_rss} KiB | | | | |",
        hwm[0], hwm[1]
    );
    println!(
        "| CPU-s per 1000 keep-alive req, both proxies | server app {:.4} | {:.4} | {:.4} | {:.2}x the server app | {:.2}x the server app | <= 0.025 | {} |",
        f.get("direct", "srv"),
        f.get("relay", "cpu"),
        f.get("mesh", "cpu"),
        f.get("relay", "cpu") / f.get("direct", "srv"),
        f.get("mesh", "cpu") / f.get("mesh", "srv"),
        ok(f.get("mesh", "cpu") <= 0.025)
    );
}

/// A pod outside the mesh holding connections to another pod's HBONE port: half never send a
/// byte, half send a ClientHello one byte every 2 s. Prints what it managed to open, how the
/// server's ztunnel closed them, and its summary line.
const FLOODER: &str = r#"
import resource, selectors, socket, sys, time
host, port, n, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
resource.setrlimit(resource.RLIMIT_NOFILE, (n + 256, n + 256))
socks, failed, sel = [], 0, selectors.DefaultSelector()
for i in range(0, n, 500):
    batch = []
    for _ in range(min(500, n - i)):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        batch.append(s)
    deadline, left = time.time() + 5, len(batch)
    while left and time.time() < deadline:
        for key, _ in sel.select(0.5):
            s = key.fileobj
            sel.unregister(s)
            left -= 1
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                socks.append(s)
            else:
                failed += 1
                s.close()
    for key in list(sel.get_map().values()):
        sel.unregister(key.fileobj)
        key.fileobj.close()
        failed += 1
opened = time.time()
print("OPENED %d FAILED %d" % (len(socks), failed), flush=True)
hello = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03])
for k, s in enumerate(socks):
    sel.register(s, selectors.EVENT_READ, k)
closed_at, step, next_send = {}, 0, opened
while time.time() < opened + hold:
    if time.time() >= next_send:
        for k, s in enumerate(socks):
            if k % 2 == 1 and k not in closed_at:
                try:
                    s.send(hello[step % len(hello):][:1])
                except OSError:
                    pass
        step, next_send = step + 1, next_send + 2
    for key, _ in sel.select(0.2):
        try:
            data = key.fileobj.recv(64)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if data == b"":
            closed_at[key.data] = time.time() - opened
            sel.unregister(key.fileobj)
quick = sum(1 for t in closed_at.values() if t < 1.0)
print("CLOSED_BY_SERVER %d OF %d WITHIN_1S %d LAST_AT %.1f" % (len(closed_at), len(socks), quick,
      max(closed_at.values(), default=0.0)), flush=True)
"#;

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The flood benchmark: `n` connections from `flooder` (a pod outside the mesh) to the server
/// pod's port 15008, held `secs` * 3 seconds, while the mesh path's latency and keep-alive rate
/// are measured; the server node's ztunnel (`zt`) is watched for memory and descriptors.
fn flood(c: &Cluster, mesh: &Path, flooder: usize, server_ip: &str, zt: u32, n: u32, secs: u32) {
    let hold = (secs * 3).max(15);
    println!(
        "== flood: {n} connections from a pod outside the mesh to {server_ip}:15008, held {hold} s"
    );
    let rss_before = status_kib(zt, "VmRSS");
    let fds_before = fds(zt);
    let quiet_lat = wrk(c, mesh, 1, secs, &[]);
    let quiet_load = wrk(c, mesh, 16, secs, &[]);
    println!(
        "  before: ztunnel node2 RSS {rss_before} KiB, {fds_before} fds; mesh p50 {:.0} us, p99 {:.0} us, {:.0} req/s at 16 conns",
        quiet_lat.p50_us, quiet_lat.p99_us, quiet_load.rps
    );
    let peak = RssPeak::start(vec![zt]);
    let netns = c.pods[flooder].netns.clone();
    let (host, count, hold_s) = (server_ip.to_string(), n.to_string(), hold.to_string());
    let attacker = std::thread::spawn(move || {
        netns_cmd(
            &netns,
            &["python3", "-c", FLOODER, &host, "15008", &count, &hold_s],
        )
    });
    // Measured while the connections are held (the flooder opens them in about a second).
    std::thread::sleep(Duration::from_secs(1));
    let fds_during = fds(zt);
    let busy_lat = wrk(c, mesh, 1, secs, &[]);
    let busy_load = wrk(c, mesh, 16, secs, &[]);
    let fds_held = fds(zt);
    let report = attacker
        .join()
        .expect("flooder thread")
        .unwrap_or_else(|e| panic!("flooder: {e}"));
    let rss_peak = peak.finish();
    // Once the flooder is gone, what stays.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = status_kib(zt, "VmRSS");
    let fds_after = fds(zt);
    // ztunnel samples its heap every 5 s and trims once the bytes in use fell (mesh-core's
    // `memory`): by 12 s two samples have passed.
    std::thread::sleep(Duration::from_secs(10));
    let rss_trimmed = status_kib(zt, "VmRSS");
    let metrics = c
        .node_get(1, "127.0.0.1:15020", "/metrics")
        .expect("server ztunnel metrics");
    let closed = |reason: &str| {
        metric(
            &metrics,
            "ztunnel_inbound_hbone_connections_closed_total",
            &[("reason", reason)],
        )
    };
    println!("  flooder: {}", report.replace('\n', "; "));
    println!("\n== flood results ({n} connections from one pod, ztunnel defaults: 512 per source, 10 s handshake bound)");
    println!("| figure | before | during the flood | after | ratio during / before |");
    println!("|---|---|---|---|---|");
    println!(
        "| ztunnel node2 RSS (KiB) | {rss_before} | peak {rss_peak} | {rss_after} after 2 s, {rss_trimmed} after 12 s | {:.2}x |",
        rss_peak as f64 / rss_before as f64
    );
    println!(
        "| ztunnel node2 open fds | {fds_before} | {fds_during} (1 s in), {fds_held} (after {}) | {fds_after} | |",
        2 * secs
    );
    println!(
        "| mesh HTTP p50, 1 connection (us) | {:.0} | {:.0} | | {:.2}x |",
        quiet_lat.p50_us,
        busy_lat.p50_us,
        busy_lat.p50_us / quiet_lat.p50_us
    );
    println!(
        "| mesh HTTP p99, 1 connection (us) | {:.0} | {:.0} | | {:.2}x |",
        quiet_lat.p99_us,
        busy_lat.p99_us,
        busy_lat.p99_us / quiet_lat.p99_us
    );
    println!(
        "| mesh keep-alive req/s, 16 connections | {:.0} | {:.0} | | {:.2}x |",
        quiet_load.rps,
        busy_load.rps,
        busy_load.rps / quiet_load.rps
    );
    println!(
        "| closed by ztunnel: source limit / handshake timeout / idle | | {} / {} / {} | | |",
        closed("source_limit"),
        closed("handshake_timeout"),
        closed("idle")
    );
}
