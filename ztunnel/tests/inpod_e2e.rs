//! The data path end to end, as root, through real network namespaces: an unmodified client in
//! pod1 connects to pod2 (by pod IP and by service VIP); the eBPF capture hands the connection
//! to ztunnel's listener inside pod1; ztunnel carries it over HBONE (mTLS with certificates from
//! a real istiod-lite CA) to its listener inside pod2, which authorizes it and connects to the
//! app with the client's IP as source. A DENY policy then refuses it.
//!
//! Ignored by default (needs root); `ztunnel/scripts/e2e.sh` runs it. Everything created is
//! removed by exact name when [`Lab`] drops, also after a failed check.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use istiod_lite::app::start;
use istiod_lite::config::Config;
use mesh_bpf::{bpffs, pod, PinDir, PodSpec};
use tokio::sync::watch;
use ztunnel::identity::{CaConfig, IdentityManager};
use ztunnel::inpod::{self, Counters, Shared};
use ztunnel::state::State;
use ztunnel::xds::{run, XdsConfig, XdsStatus};

const POD1: &str = "zte-pod1";
const POD2: &str = "zte-pod2";
const POD1_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 2);
const VIP: &str = "10.96.252.7";
const BPFFS: &str = "/sys/fs/bpf";
const PIN_ROOT: &str = "/sys/fs/bpf/zte";
const TOKEN: &str = "zte-node1-token-0123456789";

const CONFIG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: demo, labels: {app: client}}
spec: {nodeName: node1, serviceAccountName: client}
status: {podIP: 10.252.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: demo, labels: {app: server}}
spec: {nodeName: node1, serviceAccountName: server}
status: {podIP: 10.252.0.2}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: demo}
spec:
  selector: {app: server}
  clusterIP: 10.96.252.7
  ports: [{port: 80, targetPort: 8080}]
"#;

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: demo}
spec:
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]}]
"#;

/// An unmodified client: connect, print what the server says (or that it said nothing). With a
/// third argument its socket carries that mark, which the pod's routing lets out uncaptured:
/// that is how this test plays a client outside the mesh.
const CLIENT: &str = r#"
import socket, sys
s = socket.socket()
if len(sys.argv) > 3:
    s.setsockopt(socket.SOL_SOCKET, 36, int(sys.argv[3], 0))  # SO_MARK
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[2])))
data = s.makefile().readline().strip()
print("REPLY " + (data or "<closed>"))
"#;

/// A client that keeps its connection open after the first line and says when it was closed.
const HOLDER: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=15)
f = s.makefile()
first = f.readline().strip()
print("FIRST " + first, flush=True)
start = time.time()
rest = f.readline()
print("CLOSED after %.1fs" % (time.time() - start) if rest == "" else "DATA " + rest.strip(), flush=True)
"#;

const STRICT: &str = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}}
"#;

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn netns(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

fn pins(name: &str) -> PinDir {
    PinDir::new(format!("{PIN_ROOT}/{name}"))
}

/// Runs the client in pod1 (off the async runtime: it blocks).
async fn client(host: &str, port: u16) -> String {
    client_with(host, port, &[]).await
}

/// The client in pod1 as if it were outside the mesh (its packets are not captured).
async fn plaintext_client(host: &str, port: u16) -> String {
    client_with(host, port, &["0x539"]).await
}

async fn client_with(host: &str, port: u16, extra: &[&str]) -> String {
    let (host, port) = (host.to_string(), port.to_string());
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new("ip")
            .args(["netns", "exec", POD1, "python3", "-c", CLIENT, &host, &port])
            .args(&extra)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
    .await
    .unwrap()
}

struct Lab {
    mounted_bpffs: bool,
}

impl Lab {
    fn start() -> Lab {
        Lab::remove_leftovers();
        let mounted_bpffs = !bpffs::is_bpffs(Path::new(BPFFS)).unwrap();
        let lab = Lab { mounted_bpffs };
        if mounted_bpffs {
            sh(&["mount", "-t", "bpf", "bpf", BPFFS]);
        }
        sh(&["ip", "netns", "add", POD1]);
        sh(&["ip", "netns", "add", POD2]);
        sh(&[
            "ip", "-n", POD1, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
            "netns", POD2,
        ]);
        for (ns, ip) in [(POD1, POD1_IP), (POD2, POD2_IP)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
            lab.enrol(ns, ip);
        }
        lab
    }

    /// Capture for one pod: the routing rules of design (a), then the program, fail-closed.
    fn enrol(&self, ns: &str, ip: Ipv4Addr) {
        mesh_bpf::routing::install(ns, ip).unwrap();
        pod::attach(&PodSpec {
            netns: netns(ns),
            pin_dir: pins(ns),
            pod_ip: ip,
            fail_closed: true,
        })
        .unwrap();
    }

    fn remove_leftovers() {
        for ns in [POD1, POD2] {
            if pins(ns).path().exists() {
                let _ = pod::detach(&pins(ns));
            }
        }
        if Path::new(PIN_ROOT).exists() {
            let _ = std::fs::remove_dir(PIN_ROOT);
        }
        for ns in [POD1, POD2] {
            if netns(ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", ns]).status();
            }
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        Lab::remove_leftovers();
        if self.mounted_bpffs {
            let _ = Command::new("umount").arg(BPFFS).status();
        }
    }
}

/// The app in pod2: answers each connection with the peer address it sees.
fn start_app() {
    let listener = mesh_bpf::netns::run_in(&netns(POD2), || {
        TcpListener::bind(SocketAddrV4::new(POD2_IP, 8080))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
            let _ = writeln!(conn, "peer={peer}");
        }
    });
}

async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root; creates network namespaces and bpffs pins (run ztunnel/scripts/e2e.sh)"]
async fn hbone_between_captured_pods_keeps_the_source_and_enforces_policy() {
    let lab = Lab::start();
    start_app();

    // The control plane.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/tokens.yaml"),
        format!("tokens:\n- token: {TOKEN}\n  node: node1\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join("config/demo.yaml"), CONFIG).unwrap();
    let istiod = start(Config::for_test(
        dir.path().join("config"),
        dir.path().join("state"),
    ))
    .await
    .unwrap();
    let address = format!("https://localhost:{}", istiod.xds_addr.port());

    // ztunnel: state from xDS, certificates from the CA, one proxy per pod.
    let state = Arc::new(RwLock::new(State::default()));
    let (status_tx, mut status) = watch::channel(XdsStatus::default());
    let xds = tokio::spawn(run(
        XdsConfig {
            address: address.clone(),
            server_name: "localhost".into(),
            root_pem: istiod.root_cert_pem.clone(),
            token: TOKEN.into(),
            node_name: "node1".into(),
        },
        state.clone(),
        status_tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.ready))
        .await
        .unwrap()
        .unwrap();
    let shared = Arc::new(Shared {
        state: state.clone(),
        identities: IdentityManager::new(CaConfig {
            address,
            server_name: "localhost".into(),
            root_pem: istiod.root_cert_pem.clone(),
            token: TOKEN.into(),
            ttl: Duration::from_secs(3600),
        }),
        counters: Counters::default(),
        pool: Default::default(),
        connections: Default::default(),
    });
    let _recheck = tokio::spawn(inpod::recheck_on_change(shared.clone(), status.clone()));
    let _p1 = inpod::start(
        shared.clone(),
        "Kubernetes//Pod/demo/client",
        &netns(POD1),
        &pins(POD1),
    )
    .unwrap();
    let _p2 = inpod::start(
        shared.clone(),
        "Kubernetes//Pod/demo/server",
        &netns(POD2),
        &pins(POD2),
    )
    .unwrap();

    // By pod IP: tunnelled, and the app sees the client's own IP.
    let reply = client(&POD2_IP.to_string(), 8080).await;
    println!("by pod IP: {reply}");
    assert!(
        reply.starts_with(&format!("REPLY peer={POD1_IP}:")),
        "{reply}"
    );
    assert_eq!(shared.counters.outbound_hbone.load(Ordering::Relaxed), 1);
    assert_eq!(shared.counters.inbound_hbone.load(Ordering::Relaxed), 1);

    // By service VIP: resolved by ztunnel to the endpoint.
    let reply = client(VIP, 80).await;
    println!("by VIP: {reply}");
    assert!(
        reply.starts_with(&format!("REPLY peer={POD1_IP}:")),
        "{reply}"
    );
    assert_eq!(shared.counters.outbound_hbone.load(Ordering::Relaxed), 2);
    // Both tunnels went to the same peer as the same identity: one pooled connection.
    assert_eq!(
        shared
            .counters
            .outbound_hbone_connections
            .load(Ordering::Relaxed),
        1
    );

    // A client outside the mesh reaches pod2 in plaintext (captured inbound on 15006) while
    // the namespace is PERMISSIVE, and is refused once it is STRICT; mesh clients still work.
    let reply = plaintext_client(&POD2_IP.to_string(), 8080).await;
    println!("plaintext, permissive: {reply}");
    assert!(
        reply.starts_with(&format!("REPLY peer={POD1_IP}:")),
        "{reply}"
    );
    assert_eq!(shared.counters.inbound_plaintext.load(Ordering::Relaxed), 1);
    assert_eq!(
        shared.counters.outbound_hbone.load(Ordering::Relaxed),
        2,
        "not through the tunnel"
    );
    std::fs::write(dir.path().join("config/strict.yaml"), STRICT).unwrap();
    wait_for("STRICT to reach ztunnel", || {
        let st = state.read().unwrap();
        st.policies()
            .any(|p| p.key == "demo/converted_peer_authentication_default")
            && st.workload("Kubernetes//Pod/demo/server").is_some_and(|w| {
                w.authorization_policies
                    .iter()
                    .any(|k| k.ends_with("converted_peer_authentication_default"))
            })
    })
    .await;
    let reply = plaintext_client(&POD2_IP.to_string(), 8080).await;
    println!("plaintext, strict: {reply}");
    assert!(!reply.contains("peer="), "{reply}");
    assert_eq!(shared.counters.inbound_denied.load(Ordering::Relaxed), 1);
    let reply = client(&POD2_IP.to_string(), 8080).await;
    assert!(
        reply.starts_with(&format!("REPLY peer={POD1_IP}:")),
        "mesh client under STRICT: {reply}"
    );

    // A connection that is open when a DENY for the client's identity arrives is closed; a new
    // one is refused (401) and the client gets nothing.
    let holder = tokio::task::spawn_blocking(|| {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                POD1,
                "python3",
                "-c",
                HOLDER,
                &POD2_IP.to_string(),
                "8080",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines =
            std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
        let first = lines.next().unwrap().unwrap();
        (child, first, lines)
    })
    .await
    .unwrap();
    let (mut child, first, mut lines) = holder;
    assert!(
        first.starts_with(&format!("FIRST peer={POD1_IP}:")),
        "{first}"
    );
    wait_for("the held connection to be tracked", || {
        shared.connections.len() == 1
    })
    .await;
    std::fs::write(dir.path().join("config/deny.yaml"), DENY).unwrap();
    wait_for("the policy to reach ztunnel", || {
        state
            .read()
            .unwrap()
            .policies()
            .any(|p| p.key == "demo/no-client")
    })
    .await;
    let last = tokio::task::spawn_blocking(move || {
        let last = lines.next().unwrap().unwrap();
        let _ = child.wait();
        last
    })
    .await
    .unwrap();
    println!("held connection: {last}");
    assert!(last.starts_with("CLOSED"), "{last}");
    assert_eq!(
        shared.connections.closed_by_policy.load(Ordering::Relaxed),
        1
    );
    let reply = client(&POD2_IP.to_string(), 8080).await;
    println!("denied: {reply}");
    assert!(!reply.contains("peer="), "{reply}");
    assert_eq!(shared.counters.inbound_denied.load(Ordering::Relaxed), 2);

    xds.abort();
    drop(lab);
}
