//! The ambient data plane end to end on a two-node local cluster (see `mesh_e2e`): pods made by
//! the real CNI chain, captured by eBPF, carried over HBONE between ztunnel processes, with
//! policies written as YAML into istiod-lite's directory. Every check is made from the client's
//! side (what an unmodified app sees), or from ztunnel's metrics and a packet capture.
//!
//! Root only; ignored by default. `e2e/run.sh` runs it.

use std::time::Duration;

use mesh_bpf::{Counter, PinDir, Stats};
use mesh_e2e::*;

/// Reads a line, answers with who it is, the peer address it sees and what it got.
const SERVER: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(128)
def serve(c, peer):
    try:
        c.settimeout(10)
        line = c.makefile().readline().strip()
        c.sendall(("%s peer=%s got=%s\n" % (name, peer[0], line)).encode())
    except Exception:
        pass
    finally:
        c.close()
while True:
    c, peer = srv.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
"#;

const SECRET: &str = "cleartext-canary-7f3a9c";

fn request(c: &Cluster, from: usize, host: &str, port: u16) -> String {
    c.exec(from, LINE_CLIENT, &[host, &port.to_string(), SECRET, "5"])
}

fn step(s: &str) {
    println!("\n== {s}");
}

/// Polls until the client's result satisfies `ok` (config takes a moment to reach ztunnel).
fn expect(c: &Cluster, what: &str, from: usize, host: &str, port: u16, ok: impl Fn(&str) -> bool) {
    let out = eventually(what, Duration::from_secs(20), || {
        let out = request(c, from, host, port);
        if ok(&out) {
            Ok(out)
        } else {
            Err(out)
        }
    });
    println!("  {what}: {out}");
}

fn allowed(out: &str) -> bool {
    out.starts_with("REPLY ") && out.contains("got=") && out.contains(SECRET)
}

fn refused(out: &str) -> bool {
    out == "REPLY <closed>" || out.starts_with("ERROR ConnectionResetError")
}

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Service
metadata: {name: server, namespace: demo}
spec:
  selector: {app: server}
  clusterIP: 10.96.251.10
  ports: [{port: 80, targetPort: 8080}]
"#;

fn no_iptables(c: &Cluster) {
    let all: Vec<String> = c
        .nodes
        .iter()
        .map(|n| n.netns.clone())
        .chain(c.pods.iter().map(|p| p.netns.clone()))
        .collect();
    for ns in all {
        let nft = sh(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"]);
        assert!(nft.trim().is_empty(), "nftables rules in {ns}: {nft}");
        let legacy = sh(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "cat",
            "/proc/net/ip_tables_names",
        ]);
        assert!(
            legacy.trim().is_empty(),
            "iptables tables in {ns}: {legacy}"
        );
    }
}

#[test]
#[ignore = "needs root: run e2e/run.sh"]
fn ambient_two_nodes() {
    let mut c = Cluster::up(2);
    c.apply("namespaces.yaml", NAMESPACES);

    step("pods through the CNI chain: client and local-server on node1, server on node2, legacy (not ambient) on node1");
    let client = c.add_pod("demo", "client", 0, "client");
    let server = c.add_pod("demo", "server", 1, "server");
    let local = c.add_pod("demo", "local-server", 0, "server");
    let legacy = c.add_pod("legacy", "legacy", 0, "legacy");
    for p in [server, local] {
        let name = c.pods[p].name.clone();
        c.run_app(p, SERVER, &[&name, "8080"]);
    }
    let (client_ip, server_ip, local_ip, legacy_ip) = (
        c.pods[client].ip.to_string(),
        c.pods[server].ip.to_string(),
        c.pods[local].ip.to_string(),
        c.pods[legacy].ip.to_string(),
    );
    println!(
        "  client {client_ip}, server {server_ip}, local-server {local_ip}, legacy {legacy_ip}"
    );
    for p in [client, server, local] {
        let pins = PinDir::new(
            c.nodes[c.pods[p].node]
                .pin_root()
                .join(&c.pods[p].container_id),
        );
        assert!(
            pins.link().exists(),
            "ambient pod {} captured at ADD",
            c.pods[p].name
        );
        c.cni(&c.pods[p], "CHECK")
            .expect("CNI CHECK of a captured pod");
    }
    let legacy_pins = c.nodes[0].pin_root().join(&c.pods[legacy].container_id);
    assert!(
        !legacy_pins.exists(),
        "a pod outside ambient is not captured"
    );

    step("capture the underlay while the client talks to the other node");
    let pcap = c.dir.join("underlay.pcap");
    let mut tcpdump = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.nodes[1].netns,
            "tcpdump",
            "-Z",
            "root",
            "--immediate-mode",
            "-i",
            "ul0",
            "-U",
            "-s",
            "0",
            "-w",
        ])
        .arg(&pcap)
        .arg("tcp")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    // tcpdump says "listening on ..." once its capture is open.
    let mut stderr = std::io::BufReader::new(tcpdump.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening on") {
        line.clear();
        let n = std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(n > 0, "tcpdump ended before listening");
    }

    step("cross-node by pod IP and by service VIP: the server sees the client's pod IP");
    expect(&c, "pod IP", client, &server_ip, 8080, |o| {
        allowed(o) && o.contains(&format!("peer={client_ip} "))
    });
    expect(&c, "service VIP", client, "10.96.251.10", 80, |o| {
        allowed(o) && o.contains(&format!("peer={client_ip} "))
    });
    // Packets reach the file as the kernel hands them over: wait for them before stopping.
    eventually(
        "packets in the capture file",
        Duration::from_secs(10),
        || match std::fs::metadata(&pcap).map(|m| m.len()) {
            Ok(n) if n > 24 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    // SIGTERM lets tcpdump flush and close the file.
    sh(&["kill", "-TERM", &tcpdump.id().to_string()]);
    let _ = tcpdump.wait();
    let bytes = std::fs::read(&pcap).unwrap();
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the payload crossed the underlay in the clear"
    );
    let packets = sh(&["tcpdump", "-nn", "-r", &pcap.display().to_string()]);
    let pod_packets: Vec<&str> = packets
        .lines()
        .filter(|l| l.contains(&client_ip) && l.contains(&server_ip))
        .collect();
    assert!(
        !pod_packets.is_empty(),
        "no pod traffic captured ({} bytes of pcap):\n{packets}",
        bytes.len()
    );
    for line in &pod_packets {
        assert!(
            line.contains(&format!("{server_ip}.15008")),
            "pod traffic not to/from the HBONE port: {line}"
        );
    }
    println!(
        "  underlay: {} packets between the pods, all on :15008, no payload in the clear",
        pod_packets.len()
    );
    let metrics = c.node_get(1, "127.0.0.1:15020", "/metrics").unwrap();
    let mtls = metric(
        &metrics,
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
            (
                "source_principal",
                "spiffe://cluster.local/ns/demo/sa/client",
            ),
            (
                "destination_principal",
                "spiffe://cluster.local/ns/demo/sa/server",
            ),
        ],
    );
    assert!(
        mtls >= 2,
        "node2's ztunnel counts the mTLS connections: {metrics}"
    );
    let dump = c.node_get(1, "127.0.0.1:15000", "/config_dump").unwrap();
    assert!(
        dump.contains("\"serving\""),
        "node2's config dump shows its pod served"
    );
    assert!(
        dump.contains("spiffe://cluster.local/ns/demo/sa/server"),
        "and its certificate"
    );

    step("same node is captured too");
    let before = metric(
        &c.node_get(0, "127.0.0.1:15020", "/metrics").unwrap(),
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    expect(&c, "same-node pod IP", client, &local_ip, 8080, |o| {
        allowed(o) && o.contains(&format!("peer={client_ip} "))
    });
    let after = metric(
        &c.node_get(0, "127.0.0.1:15020", "/metrics").unwrap(),
        "istio_tcp_connections_opened_total",
        &[
            ("reporter", "destination"),
            ("connection_security_policy", "mutual_tls"),
        ],
    );
    assert!(
        after > before,
        "the same-node connection went through HBONE"
    );

    step("no iptables or nftables rule anywhere");
    no_iptables(&c);

    step("a pod outside the mesh: PERMISSIVE allows, STRICT refuses");
    expect(
        &c,
        "legacy -> server (PERMISSIVE)",
        legacy,
        &server_ip,
        8080,
        |o| allowed(o) && o.contains(&format!("peer={legacy_ip} ")),
    );
    c.apply(
        "strict.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: demo}\nspec: {mtls: {mode: STRICT}}\n",
    );
    expect(
        &c,
        "legacy -> server (STRICT)",
        legacy,
        &server_ip,
        8080,
        refused,
    );
    expect(
        &c,
        "client -> server (STRICT, mTLS)",
        client,
        &server_ip,
        8080,
        allowed,
    );

    step("labelling the running legacy namespace enrols its pod without a restart");
    c.apply(
        "namespaces.yaml",
        &NAMESPACES.replace(
            "metadata: {name: legacy}",
            "metadata: {name: legacy, labels: {istio.io/dataplane-mode: ambient}}",
        ),
    );
    expect(
        &c,
        "legacy -> server once enrolled (STRICT, mTLS)",
        legacy,
        &server_ip,
        8080,
        allowed,
    );
    assert!(
        legacy_pins.join("link").exists(),
        "ztunnel captured the running pod"
    );
    step("removing the label releases it");
    c.apply("namespaces.yaml", NAMESPACES);
    expect(
        &c,
        "legacy -> server released (STRICT)",
        legacy,
        &server_ip,
        8080,
        refused,
    );
    eventually("legacy pins removed", Duration::from_secs(10), || {
        if legacy_pins.exists() {
            Err("still pinned".to_string())
        } else {
            Ok(())
        }
    });
    c.delete("strict.yaml");

    step("AuthorizationPolicy cases, checked from the client");
    let policy = |name: &str, spec: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n{spec}")
    };
    let sel = "  selector: {matchLabels: {app: server}}\n";
    c.apply("authz.yaml", &policy("allow-client", &format!("{sel}  action: ALLOW\n  rules: [{{from: [{{source: {{principals: [cluster.local/ns/demo/sa/client]}}}}]}}]\n")));
    expect(
        &c,
        "ALLOW by principal: client allowed",
        client,
        &server_ip,
        8080,
        allowed,
    );
    expect(
        &c,
        "ALLOW by principal: legacy (no identity) denied",
        legacy,
        &server_ip,
        8080,
        refused,
    );
    c.apply("authz.yaml", &policy("allow-other-ns", &format!("{sel}  action: ALLOW\n  rules: [{{from: [{{source: {{namespaces: [other]}}}}]}}]\n")));
    expect(
        &c,
        "ALLOW by namespace (other): client denied",
        client,
        &server_ip,
        8080,
        refused,
    );
    c.apply(
        "authz.yaml",
        &policy(
            "allow-demo-ns",
            &format!(
                "{sel}  action: ALLOW\n  rules: [{{from: [{{source: {{namespaces: [demo]}}}}]}}]\n"
            ),
        ),
    );
    expect(
        &c,
        "ALLOW by namespace (demo): client allowed",
        client,
        &server_ip,
        8080,
        allowed,
    );
    c.apply(
        "authz.yaml",
        &policy(
            "allow-port",
            &format!(
                "{sel}  action: ALLOW\n  rules: [{{to: [{{operation: {{ports: [\"9999\"]}}}}]}}]\n"
            ),
        ),
    );
    expect(
        &c,
        "ALLOW by port 9999: 8080 denied",
        client,
        &server_ip,
        8080,
        refused,
    );
    c.apply("authz.yaml", &format!("{}---\n{}",
        policy("allow-all", &format!("{sel}  action: ALLOW\n  rules: [{{}}]\n")),
        policy("deny-client", &format!("{sel}  action: DENY\n  rules: [{{from: [{{source: {{principals: [cluster.local/ns/demo/sa/client]}}}}]}}]\n"))));
    expect(
        &c,
        "DENY wins over ALLOW",
        client,
        &server_ip,
        8080,
        refused,
    );
    c.apply(
        "authz.yaml",
        &policy(
            "l7-only",
            &format!(
                "{sel}  action: ALLOW\n  rules: [{{to: [{{operation: {{methods: [GET]}}}}]}}]\n"
            ),
        ),
    );
    expect(
        &c,
        "ALLOW with only an L7 rule denies",
        client,
        &server_ip,
        8080,
        refused,
    );
    c.apply(
        "authz.yaml",
        &policy(
            "dry-deny",
            &format!("{sel}  action: DENY\n  rules: [{{}}]\n"),
        )
        .replace(
            "namespace: demo}",
            "namespace: demo, annotations: {istio.io/dry-run: \"true\"}}",
        ),
    );
    expect(
        &c,
        "a dry-run DENY does not deny",
        client,
        &server_ip,
        8080,
        allowed,
    );
    c.delete("authz.yaml");
    expect(
        &c,
        "no ALLOW policy: allowed",
        client,
        &server_ip,
        8080,
        allowed,
    );
    let denied = metric(
        &c.node_get(1, "127.0.0.1:15020", "/metrics").unwrap(),
        "istio_tcp_connections_failed_total",
        &[("reporter", "destination"), ("response_flags", "DENY")],
    );
    assert!(
        denied >= 4,
        "denials are counted on the server's ztunnel ({denied})"
    );

    step("restarting the server's ztunnel: a connection made meanwhile waits, then succeeds");
    let pins = PinDir::new(c.nodes[1].pin_root().join(&c.pods[server].container_id));
    let dropped = Stats::read(&pins).unwrap().get(Counter::NoSocketDropped);
    c.kill_ztunnel(1);
    let netns = c.pods[client].netns.clone();
    let server_addr = server_ip.clone();
    let waiting = std::thread::spawn(move || {
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &netns,
                "python3",
                "-c",
                LINE_CLIENT,
                &server_addr,
                "8080",
                SECRET,
                "30",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    });
    eventually(
        "the new connection waiting on the captured pod",
        Duration::from_secs(20),
        || {
            let now = Stats::read(&pins)
                .map_err(|e| e.to_string())?
                .get(Counter::NoSocketDropped);
            if now > dropped {
                Ok(())
            } else {
                Err(format!("{now} drops"))
            }
        },
    );
    assert!(pins.link().exists(), "the capture outlives ztunnel");
    c.start_ztunnel(1);
    let out = waiting.join().unwrap();
    println!("  during the restart: {out}");
    assert!(allowed(&out), "{out}");

    step("istiod-lite stopped: traffic goes on");
    c.stop_istiod();
    expect(
        &c,
        "cross-node with the control plane down",
        client,
        &server_ip,
        8080,
        allowed,
    );
    expect(
        &c,
        "VIP with the control plane down",
        client,
        "10.96.251.10",
        80,
        allowed,
    );

    step("CNI DEL releases the pod's capture and record");
    let p = &c.pods[local];
    c.cni(p, "DEL").expect("CNI DEL");
    let local_pins = c.nodes[0].pin_root().join(&c.pods[local].container_id);
    assert!(!local_pins.exists(), "pins removed by DEL");
    c.cni(&c.pods[local], "DEL").expect("a second DEL succeeds");
    // A pod that was not captured at ADD (its namespace was enrolled and released while it
    // ran): DEL has nothing of ours to remove and must still succeed, twice.
    c.cni(&c.pods[legacy], "DEL")
        .expect("CNI DEL of a pod not captured at ADD");
    c.cni(&c.pods[legacy], "DEL")
        .expect("a second DEL of it succeeds");
    no_iptables(&c);
}
