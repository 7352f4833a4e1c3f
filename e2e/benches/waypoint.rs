//! The waypoint benchmark of issue 10 on the two-node local cluster (root only; `e2e/run.sh
//! bench-waypoint` runs it with cleanup). In one run, four paths from a pod on node1 to
//! `mesh-echo serve` in a pod on node2 (`GET /bench`, keep-alive, wrk in the client pod):
//!
//! * **direct**: two pods outside the mesh;
//! * **nginx**: the same pods through nginx (Debian's nginx-light) as a plain reverse proxy in a
//!   pod on node1, upstream keep-alive: the floor of any L7 hop here (no TLS at all);
//! * **mesh L4**: two ambient pods by service VIP, ztunnel to ztunnel (HBONE, mTLS);
//! * **waypoint**: the same client and VIP with the service bound to a waypoint on node1: the
//!   client's ztunnel, the waypoint (mTLS in and out, HTTP parsed, routed, policy checked), the
//!   server's ztunnel.
//!
//! nginx and the waypoint each run one worker (`worker_processes 1`, `--worker-threads 1`), so
//! their CPU per request compares one event loop with another. Figures: requests per second at
//! 16 and 64 connections, latency p50/p99 at one connection (closed loop: wrk has no fixed
//! rate), the proxy's CPU-seconds per 1,000 requests (which is also the vCPU it needs at 1,000
//! req/s) and req/s per CPU-second, and its RSS idle and at peak. It fails if the waypoint path
//! did not go through the waypoint, or a tool reported errors; it does not fail on a slow run.
//!
//! Options: `--seconds N` per measurement (default 5).

use std::time::Duration;

use mesh_e2e::load::*;
use mesh_e2e::*;

const HTTP_PORT: &str = "8080";
const NGINX_PORT: &str = "8081";
const VIP: &str = "10.96.251.10";
const L4_VIP: &str = "10.96.251.11";
const WAYPOINT_TOKEN: &str = "mse-waypoint-token-0123456789";

fn config() -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: bench, labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: plain}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: bench}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: waypoint, namespace: bench, labels: {{gateway.networking.k8s.io/gateway-name: waypoint}}}}
spec:
  clusterIP: None
  selector: {{gateway.networking.k8s.io/gateway-name: waypoint}}
  ports: [{{name: mesh, port: 15008}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: bench, annotations: {{mesh.waypoint/guard: "off"}}}}
spec:
  clusterIP: {VIP}
  selector: {{app: wserver}}
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo-l4, namespace: bench, labels: {{istio.io/use-waypoint: none}}}}
spec:
  clusterIP: {L4_VIP}
  selector: {{app: wserver}}
  ports: [{{name: http, port: 80, targetPort: {HTTP_PORT}}}]
"#
    )
}

fn nginx_conf(dir: &std::path::Path, upstream: &str) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream backend {{ server {upstream}; keepalive 256; }}
  server {{
    listen {NGINX_PORT};
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"#
    )
}

struct Path {
    label: &'static str,
    client: usize,
    url: String,
    /// The processes whose CPU and memory are the proxy's (none for direct).
    proxies: Vec<u32>,
}

fn wrk(c: &Cluster, path: &Path, conns: u32, secs: u32) -> WrkResult {
    wrk_in(&c.pods[path.client].netns, &path.url, conns, secs, &[])
        .unwrap_or_else(|e| panic!("{} path: {e}", path.label))
}

fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

struct Figures {
    rps16: f64,
    rps64: f64,
    p50: f64,
    p99: f64,
    cpu_per_1000: f64,
    rss_idle_kib: u64,
    rss_peak_kib: u64,
}

fn measure(c: &Cluster, path: &Path, secs: u32, ticks: f64) -> Figures {
    let rss_idle_kib = path.proxies.iter().map(|p| status_kib(*p, "VmRSS")).sum();
    let cpu = |pids: &[u32]| pids.iter().map(|p| cpu_seconds(*p, ticks)).sum::<f64>();
    let before = cpu(&path.proxies);
    let load16 = wrk(c, path, 16, secs);
    let cpu16 = cpu(&path.proxies) - before;
    let peak = RssPeak::start_total(path.proxies.clone());
    let load64 = wrk(c, path, 64, secs);
    let rss_peak_kib = peak.finish();
    let lat = wrk(c, path, 1, secs);
    let f = Figures {
        rps16: load16.rps,
        rps64: load64.rps,
        p50: lat.p50_us,
        p99: lat.p99_us,
        cpu_per_1000: if path.proxies.is_empty() {
            0.0
        } else {
            cpu16 / load16.requests as f64 * 1000.0
        },
        rss_idle_kib,
        rss_peak_kib,
    };
    println!(
        "  {:9} 16 conns {:.0} req/s, 64 conns {:.0} req/s, 1 conn p50 {:.0} us p99 {:.0} us, proxy {:.3} CPU-s per 1000 req, RSS idle {} KiB peak {} KiB",
        path.label, f.rps16, f.rps64, f.p50, f.p99, f.cpu_per_1000, f.rss_idle_kib, f.rss_peak_kib
    );
    f
}

fn main() {
    if sh(&["id", "-u"]).trim() != "0" {
        eprintln!("waypoint bench: must run as root (e2e/run.sh bench-waypoint)");
        std::process::exit(1);
    }
    let secs = arg("--seconds", 5);
    let ticks: f64 = sh(&["getconf", "CLK_TCK"]).trim().parse().unwrap_or(100.0);

    println!("== cluster: 2 nodes, istiod-lite, a ztunnel per node, a waypoint on node1");
    let mut c = Cluster::up(2);
    // The waypoint's own identity: a workload token, as the local cluster gives it.
    let tokens = c.state_dir().join("tokens.yaml");
    let mut text = std::fs::read_to_string(&tokens).unwrap();
    text.push_str(&format!(
        "- token: {WAYPOINT_TOKEN}\n  namespace: bench\n  serviceAccount: waypoint\n"
    ));
    std::fs::write(&tokens, text).unwrap();
    let token_file = c.state_dir().join("waypoint.token");
    std::fs::write(&token_file, WAYPOINT_TOKEN).unwrap();
    c.apply("bench.yaml", &config());

    let client = c.add_pod("bench", "wclient", 0, "client");
    let server = c.add_pod("bench", "wserver", 1, "server");
    let waypoint = c.add_pod_labelled(
        "bench",
        "waypoint",
        0,
        "waypoint",
        &[
            ("gateway.networking.k8s.io/gateway-name", "waypoint"),
            ("istio.io/dataplane-mode", "none"),
        ],
    );
    let pclient = c.add_pod("plain", "pclient", 0, "default");
    let pserver = c.add_pod("plain", "pserver", 1, "default");
    let nginx = c.add_pod("plain", "nginx", 0, "default");

    let echo = c.bin("mesh-echo");
    let echo = echo.to_str().expect("utf-8 path");
    for (p, name) in [(server, "wserver"), (pserver, "pserver")] {
        c.spawn_in_pod(
            p,
            &format!("echo-{name}"),
            echo,
            &["serve", "--port", HTTP_PORT, "--name", name],
        );
    }
    let nginx_dir = c.dir.join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let conf = nginx_dir.join("nginx.conf");
    let upstream = format!("{}:{HTTP_PORT}", c.pods[pserver].ip);
    std::fs::write(&conf, nginx_conf(&nginx_dir, &upstream)).unwrap();
    let conf = conf.display().to_string();
    let nginx_master = c.spawn_in_pod(nginx, "nginx", "nginx", &["-c", &conf, "-g", "daemon off;"]);

    let bin = c.bin("waypoint");
    let root = c.state_dir().join("ca/root-cert.pem");
    let args = [
        "--gateway=bench/waypoint".to_string(),
        format!("--xds-address={}", c.xds_address()),
        format!("--root-cert={}", root.display()),
        format!("--token-file={}", token_file.display()),
        "--pod-name=waypoint".into(),
        "--worker-threads=1".into(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let waypoint_pid = c.spawn_in_pod(waypoint, "waypoint", bin.to_str().unwrap(), &args);

    let nginx_ip = c.pods[nginx].ip.to_string();
    let nginx_pids = eventually("nginx's worker", Duration::from_secs(10), || {
        let workers = children(nginx_master);
        if workers.is_empty() {
            Err("no worker yet".to_string())
        } else {
            Ok([vec![nginx_master], workers].concat())
        }
    });
    let paths = [
        Path {
            label: "direct",
            client: pclient,
            url: format!("http://{}:{HTTP_PORT}/bench", c.pods[pserver].ip),
            proxies: vec![],
        },
        Path {
            label: "nginx",
            client: pclient,
            url: format!("http://{nginx_ip}:{NGINX_PORT}/bench"),
            proxies: nginx_pids,
        },
        Path {
            label: "mesh L4",
            client,
            url: format!("http://{L4_VIP}:80/bench"),
            proxies: (0..2).filter_map(|i| c.ztunnel_pid(i)).collect(),
        },
        Path {
            label: "waypoint",
            client,
            url: format!("http://{VIP}:80/bench"),
            proxies: vec![waypoint_pid],
        },
    ];
    for path in &paths {
        let netns = c.pods[path.client].netns.clone();
        let addr = path
            .url
            .trim_start_matches("http://")
            .trim_end_matches("/bench")
            .to_string();
        eventually(
            &format!("the {} path serving", path.label),
            Duration::from_secs(60),
            || ready(&netns, &addr, "/bench"),
        );
    }
    println!("== warm-up");
    for path in &paths {
        wrk(&c, path, 16, 1);
    }
    println!("== measuring ({secs} s each)");
    let figures: Vec<Figures> = paths.iter().map(|p| measure(&c, p, secs, ticks)).collect();

    // The waypoint path went through the waypoint: it counted the requests.
    let metrics = http_get(&c.pods[waypoint].netns, "127.0.0.1:15020", "/metrics")
        .unwrap()
        .ok()
        .unwrap();
    let counted = metric(
        &metrics,
        "istio_requests_total",
        &[("response_code", "200")],
    );
    assert!(
        counted > 1000,
        "the waypoint counted {counted} requests:\n{metrics}"
    );
    println!("  the waypoint counted {counted} requests with status 200");

    let [direct, nginx, l4, wp] = [&figures[0], &figures[1], &figures[2], &figures[3]];
    let per_cpu = |f: &Figures| 1000.0 / f.cpu_per_1000;
    println!("\n== results (one run; ratios in the same run)");
    println!("| figure | direct | nginx | mesh L4 | waypoint | waypoint vs nginx | target |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| req/s, 16 connections | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | |",
        direct.rps16,
        nginx.rps16,
        l4.rps16,
        wp.rps16,
        wp.rps16 / nginx.rps16
    );
    println!(
        "| req/s, 64 connections | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | |",
        direct.rps64,
        nginx.rps64,
        l4.rps64,
        wp.rps64,
        wp.rps64 / nginx.rps64
    );
    println!(
        "| p50 / p99 at 1 connection (us) | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | | |",
        direct.p50, direct.p99, nginx.p50, nginx.p99, l4.p50, l4.p99, wp.p50, wp.p99
    );
    let added = |f: &Figures| f.p99 - direct.p99;
    println!(
        "| added p99 at 1 connection (us) | | {:.0} | {:.0} | {:.0} | {:.2}x | <= 1.5x nginx's |",
        added(nginx),
        added(l4),
        added(wp),
        added(wp) / added(nginx)
    );
    println!(
        "| proxy CPU-s per 1,000 requests (= vCPU at 1,000 req/s) | | {:.4} | {:.4} (both ztunnels) | {:.4} | {:.2}x | waypoint <= 0.1 |",
        nginx.cpu_per_1000, l4.cpu_per_1000, wp.cpu_per_1000, wp.cpu_per_1000 / nginx.cpu_per_1000
    );
    println!(
        "| req/s per proxy CPU-second | | {:.0} | {:.0} | {:.0} | {:.2}x | >= 0.67x |",
        per_cpu(nginx),
        per_cpu(l4),
        per_cpu(wp),
        per_cpu(wp) / per_cpu(nginx)
    );
    println!(
        "| proxy RSS idle / peak at 64 connections (MiB) | | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | | waypoint <= 25 per 1,000 req/s |",
        nginx.rss_idle_kib as f64 / 1024.0,
        nginx.rss_peak_kib as f64 / 1024.0,
        l4.rss_idle_kib as f64 / 1024.0,
        l4.rss_peak_kib as f64 / 1024.0,
        wp.rss_idle_kib as f64 / 1024.0,
        wp.rss_peak_kib as f64 / 1024.0
    );
}
