//! The data path end to end, as root, through real network namespaces: an unmodified client in
//! pod1 connects to pod2 (by pod IP and by service VIP); the eBPF capture hands the connection
//! to ztunnel's listener inside pod1; ztunnel carries it over HBONE (mTLS with certificates from
//! a real istiod-lite CA) to its listener inside pod2, which authorizes it and connects to the
//! app with the client's IP as source. A DENY policy then refuses it.
//!
//! Ignored by default (needs root); `ztunnel/scripts/e2e.sh` runs it. Everything created is
//! removed by exact name when the lab drops, also after a failed check.

mod support;

use std::io::Write;
use std::net::{SocketAddrV4, TcpListener};
use std::process::Command;
use std::sync::atomic::Ordering;

use mesh_test_support::eventually_async;
use support::*;

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

/// The app in pod2: answers each connection with the peer address it sees, then keeps it open.
fn start_app() {
    let listener = mesh_bpf::netns::run_in(&netns(POD2), || {
        TcpListener::bind(SocketAddrV4::new(POD2_IP, 8080))
    })
    .unwrap()
    .unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            // Each connection stays open until its client closes it (the held-connection check
            // needs a connection that only a policy change can end).
            std::thread::spawn(move || {
                let peer = conn.peer_addr().map(|p| p.to_string()).unwrap_or_default();
                let _ = writeln!(conn, "peer={peer}");
                let mut sink = [0u8; 64];
                while matches!(std::io::Read::read(&mut conn, &mut sink), Ok(n) if n > 0) {}
            });
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root; creates network namespaces and bpffs pins (run ztunnel/scripts/e2e.sh)"]
async fn hbone_between_captured_pods_keeps_the_source_and_enforces_policy() {
    let lab = lab();
    enrol_all(&lab);
    start_app();

    let mesh = Mesh::start().await;
    let (dir, state, shared) = (&mesh.dir, &mesh.state, &mesh.shared);
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
    eventually_async("STRICT to reach ztunnel", WAIT, || async {
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
    eventually_async("the held connection to be tracked", WAIT, || async {
        shared.connections.len() == 1
    })
    .await;
    std::fs::write(dir.path().join("config/deny.yaml"), DENY).unwrap();
    eventually_async("the policy to reach ztunnel", WAIT, || async {
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
    eventually_async("the close to be counted", WAIT, || async {
        shared.connections.closed_by_policy.load(Ordering::Relaxed) == 1
    })
    .await;
    let reply = client(&POD2_IP.to_string(), 8080).await;
    println!("denied: {reply}");
    assert!(!reply.contains("peer="), "{reply}");
    assert_eq!(shared.counters.inbound_denied.load(Ordering::Relaxed), 2);

    drop(mesh);
    drop(lab);
}

/// Opens `n` TCP connections from pod1 to pod2's HBONE port that never send a byte. They carry
/// the proxy's mark, so pod1's capture lets them out as a pod outside the mesh would send them.
fn silent_connections(n: usize) -> Vec<std::net::TcpStream> {
    use socket2::{Domain, Protocol, Socket, Type};
    let target = std::net::SocketAddr::from(SocketAddrV4::new(POD2_IP, 15008));
    (0..n)
        .map(|_| {
            mesh_bpf::netns::run_in(&netns(POD1), || -> std::io::Result<std::net::TcpStream> {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
                s.set_mark(0x539)?;
                s.connect_timeout(&target.into(), std::time::Duration::from_secs(5))?;
                Ok(s.into())
            })
            .unwrap()
            .unwrap()
        })
        .collect()
}

/// How long until the server closed `conn` (EOF or reset), or `None` if it is open after `max`.
fn closed_within(
    mut conn: std::net::TcpStream,
    max: std::time::Duration,
) -> Option<std::time::Duration> {
    let start = std::time::Instant::now();
    conn.set_read_timeout(Some(max)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(&mut conn, &mut buf) {
            Ok(0) => return Some(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(_) => return Some(start.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root; creates network namespaces and bpffs pins (run ztunnel/scripts/e2e.sh)"]
async fn a_pod_cannot_hold_the_hbone_port_with_connections_that_never_handshake() {
    use std::time::Duration;
    let lab = lab();
    enrol_all(&lab);
    start_app();
    let limits = mesh_core::hbone::ServerLimits {
        handshake: Duration::from_secs(1),
        idle: Duration::from_secs(1),
    };
    let mesh = Mesh::start_with(limits, 8).await;

    // Twelve silent connections from one source: eight are held until the handshake bound,
    // the four past the source's limit are closed as they arrive.
    let conns = silent_connections(12);
    let waits = tokio::task::spawn_blocking(move || {
        let handles: Vec<_> = conns
            .into_iter()
            .map(|c| std::thread::spawn(move || closed_within(c, Duration::from_secs(10))))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    println!("closed after: {waits:?}");
    assert!(
        waits.iter().all(Option::is_some),
        "every silent connection is closed: {waits:?}"
    );
    let quick = waits
        .iter()
        .flatten()
        .filter(|d| **d < Duration::from_millis(300))
        .count();
    let at_bound = waits
        .iter()
        .flatten()
        .filter(|d| **d >= Duration::from_millis(300))
        .count();
    assert_eq!((quick, at_bound), (4, 8), "{waits:?}");
    let metrics = mesh.shared.metrics.render(ztunnel::telemetry::Scrape {
        active_proxies: 2,
        xds_streams_ended: 0,
        closed_by_policy: 0,
    });
    for (reason, n) in [("source_limit", 4), ("handshake_timeout", 8)] {
        let line =
            format!("ztunnel_inbound_hbone_connections_closed_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }

    // Once they are gone the same pod's real traffic goes through as before.
    eventually_async("a tunnelled request after the flood", WAIT, || async {
        let reply = client(&POD2_IP.to_string(), 8080).await;
        reply
            .starts_with(&format!("REPLY peer={POD1_IP}:"))
            .then_some(())
            .ok_or(reply)
    })
    .await;
}
