//! Data-path benchmark (not a test; needs root): the same measurements between two pod network
//! namespaces, first direct (before capture is enrolled), then through eBPF capture + ztunnel +
//! HBONE (mTLS), in one process, with the ratio of each pair.
//!
//! Run: `ztunnel/scripts/bench.sh` (root). Everything it creates is removed by exact name.
//!
//! * throughput: one stream, then 4 streams, each sending for a fixed time;
//! * latency: 64-byte request/response round trips on one connection (p50, p99);
//! * connection rate: sequential connect + 1-byte exchange + close.
//!
//! ztunnel runs in this process (as a library), so its memory is not separable here; the
//! client and servers are plain threads in the pod namespaces and compete for the same 2 cores.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use support::*;

const SINK_PORT: u16 = 5201;
const ECHO_PORT: u16 = 5202;
const CONN_PORT: u16 = 5203;
const THROUGHPUT_TIME: Duration = Duration::from_secs(3);
const ROUND_TRIPS: usize = 5000;
const CONN_TIME: Duration = Duration::from_secs(2);
const MAX_CONNS: usize = 20_000;

fn serve(port: u16, handle: fn(TcpStream)) {
    let listener = mesh_bpf::netns::run_in(&netns(POD2), || {
        TcpListener::bind(SocketAddrV4::new(POD2_IP, port))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            std::thread::spawn(move || handle(conn));
        }
    });
}

fn sink(mut c: TcpStream) {
    let mut buf = vec![0u8; 256 << 10];
    while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
}

fn echo(mut c: TcpStream) {
    let _ = c.set_nodelay(true);
    let mut buf = [0u8; 64];
    while c.read_exact(&mut buf).is_ok() {
        if c.write_all(&buf).is_err() {
            return;
        }
    }
}

fn one_byte(mut c: TcpStream) {
    let mut b = [0u8; 1];
    if c.read_exact(&mut b).is_ok() {
        let _ = c.write_all(&b);
    }
}

/// Runs `f` on `n` threads inside pod1's netns at once; returns their results.
fn in_pod1<T: Send + 'static>(n: usize, f: fn() -> T) -> Vec<T> {
    let handles: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || mesh_bpf::netns::run_in(&netns(POD1), f).unwrap()))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn target(port: u16) -> SocketAddr {
    SocketAddr::from((POD2_IP, port))
}

/// Bytes sent in THROUGHPUT_TIME on one connection.
fn send_for() -> u64 {
    let mut c = TcpStream::connect_timeout(&target(SINK_PORT), Duration::from_secs(5)).unwrap();
    let buf = vec![0x5au8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < THROUGHPUT_TIME {
        c.write_all(&buf).unwrap();
        sent += buf.len() as u64;
    }
    sent
}

/// Round-trip times of 64-byte exchanges, in microseconds, sorted.
fn round_trips() -> Vec<f64> {
    let mut c = TcpStream::connect_timeout(&target(ECHO_PORT), Duration::from_secs(5)).unwrap();
    c.set_nodelay(true).unwrap();
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..200 {
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
    }
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let t = Instant::now();
        c.write_all(&msg).unwrap();
        c.read_exact(&mut back).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    times
}

/// Sequential new connections per second.
fn connection_rate() -> f64 {
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < CONN_TIME && n < MAX_CONNS {
        let mut c = TcpStream::connect_timeout(&target(CONN_PORT), Duration::from_secs(5)).unwrap();
        c.write_all(&[1]).unwrap();
        let mut b = [0u8; 1];
        c.read_exact(&mut b).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

struct Figures {
    single_gbps: f64,
    multi_gbps: f64,
    p50_us: f64,
    p99_us: f64,
    conns_per_s: f64,
}

fn measure(label: &str) -> Figures {
    let gbps = |bytes: u64| bytes as f64 * 8.0 / THROUGHPUT_TIME.as_secs_f64() / 1e9;
    let single = gbps(in_pod1(1, send_for)[0]);
    let multi = gbps(in_pod1(4, send_for).iter().sum());
    let rtt = in_pod1(1, round_trips).remove(0);
    let pct = |p: f64| rtt[((rtt.len() as f64 * p) as usize).min(rtt.len() - 1)];
    let conns = in_pod1(1, connection_rate)[0];
    let f = Figures {
        single_gbps: single,
        multi_gbps: multi,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        conns_per_s: conns,
    };
    println!(
        "{label:>8}: 1 stream {:6.2} Gbit/s | 4 streams {:6.2} Gbit/s | RTT p50 {:6.1} us p99 {:6.1} us | {:7.0} conn/s",
        f.single_gbps, f.multi_gbps, f.p50_us, f.p99_us, f.conns_per_s
    );
    f
}

fn main() {
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    if String::from_utf8_lossy(&uid).trim() != "0" {
        eprintln!("the data-path benchmark needs root (network namespaces, eBPF); run ztunnel/scripts/bench.sh");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let lab = lab();
    serve(SINK_PORT, sink);
    serve(ECHO_PORT, echo);
    serve(CONN_PORT, one_byte);
    println!("data path between two pod network namespaces (veth), 2 cores shared by everything");
    let direct = measure("direct");
    enrol_all(&lab);
    let mesh = rt.block_on(Mesh::start());
    let meshed = measure("ztunnel");
    let counters = &mesh.shared.counters;
    let tunnels = counters
        .outbound_hbone
        .load(std::sync::atomic::Ordering::Relaxed);
    let conns = counters
        .outbound_hbone_connections
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("  ({tunnels} HBONE tunnels over {conns} pooled TLS connections)");
    println!(
        "   ratio: 1 stream {:.2}x | 4 streams {:.2}x | added latency p50 {:+.1} us p99 {:+.1} us | conn rate {:.2}x",
        meshed.single_gbps / direct.single_gbps,
        meshed.multi_gbps / direct.multi_gbps,
        meshed.p50_us - direct.p50_us,
        meshed.p99_us - direct.p99_us,
        meshed.conns_per_s / direct.conns_per_s
    );
    println!(
        "targets (issue 3): 1 stream >= 0.40x, 4 streams >= 0.35x, p50 <= +35 us, p99 <= +100 us, conn rate >= 0.15x"
    );
    drop(mesh);
    drop(rt);
    drop(lab);
}
