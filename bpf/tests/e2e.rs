//! End-to-end capture through real network namespaces, routing rules, the `mesh-bpf` binary and an
//! unmodified client (python3 run with `ip netns exec`).
//!
//! Needs root, `ip` (iproute2) and python3; ignored by default. Run with
//! `cargo test --test e2e -- --ignored --nocapture --test-threads=1`.
//!
//! Topology: `spk-pod1` (10.250.0.1/24) ==veth== `spk-pod2` (10.250.0.2/24). Capture is enrolled
//! in spk-pod1 only. Everything created here is removed by exact name when the lab
//! (mesh-test-support's `Lab`) drops, also after a failed check; leftovers of an aborted run are
//! removed before starting.

use std::{
    io::{ErrorKind, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener},
    path::Path,
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use mesh_bpf::{listener, netns, pod, Counter, PinDir, PodConfig, ProxySockets, SockSlot, Stats};
use mesh_test_support::{netns_path, sh, Lab};

const POD1: &str = "spk-pod1";
const POD2: &str = "spk-pod2";
const POD1_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
const PIN_ROOT: &str = "/sys/fs/bpf/spk";
const PIN_DIR: &str = "/sys/fs/bpf/spk/spk-pod1";
const APP_PORT: u16 = 8080;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// The client under test: a plain python TCP client that knows nothing about the capture.
const CLIENT: &str = r#"
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket()
s.settimeout(timeout)
try:
    s.connect((host, port))
except socket.timeout:
    print("TIMEOUT")
except OSError as e:
    print("ERROR", e.strerror)
else:
    print("CONNECTED", "%s:%d" % s.getsockname(), s.recv(64).decode().strip())
"#;

#[derive(Debug, PartialEq)]
enum Outcome {
    Connected { local: SocketAddr, reply: String },
    Timeout,
    Error(String),
}

#[test]
#[ignore = "needs root and creates network namespaces; run with --ignored"]
fn sk_lookup_captures_outbound_and_inbound() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test must run as root");
    let lab = Lab::pod_pair(PIN_ROOT, (POD1, POD1_IP), (POD2, POD2_IP));
    // The lab removes the pins of its pods: the loader's must be among them.
    assert_eq!(lab.pin_dir(POD1), Path::new(PIN_DIR));
    let pins = PinDir::new(PIN_DIR);
    let pod1_ns = netns_path(POD1);

    // The real app in pod2; counts what reaches it directly.
    let app_hits = Arc::new(AtomicUsize::new(0));
    let app = netns::run_in(&netns_path(POD2), || {
        TcpListener::bind(SocketAddrV4::new(POD2_IP, APP_PORT))
    })
    .unwrap()
    .expect("app listener in pod2");
    spawn_app(app, "pod2-app", Arc::clone(&app_hits));

    step("baseline: no capture, pod1 reaches the app in pod2");
    let out = client(POD1, POD2_IP, APP_PORT);
    assert!(
        matches!(&out, Outcome::Connected { reply, .. } if reply == "pod2-app"),
        "{out:?}"
    );
    assert_eq!(app_hits.load(Ordering::SeqCst), 1);

    step("enrol pod1: policy routing + `mesh-bpf attach` (fail-closed)");
    install_routing(POD1, POD1_IP);
    run_loader(&[
        "attach",
        "--netns",
        pod1_ns.to_str().unwrap(),
        "--pin-dir",
        PIN_DIR,
        "--pod-ip",
        &POD1_IP.to_string(),
    ]);
    // The loader process has exited: everything below works from the pins alone.

    step("fail-closed: no proxy socket in the map, the SYN is dropped");
    let started = Instant::now();
    let out = client(POD1, POD2_IP, APP_PORT);
    assert_eq!(out, Outcome::Timeout, "after {:?}", started.elapsed());
    assert_eq!(
        app_hits.load(Ordering::SeqCst),
        1,
        "app must not be reached"
    );
    let stats = Stats::read(&pins).unwrap();
    println!("  stats: {stats}");
    assert!(stats.get(Counter::NoSocketDropped) >= 1);

    step("outbound: 15001 listener (IP_TRANSPARENT, SO_MARK) in pod1, fd into the pinned SOCKMAP");
    let outbound = netns::run_in(&pod1_ns, || {
        listener::bind_capture_listener(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            listener::OUTBOUND_PORT,
        ))
    })
    .unwrap()
    .expect("outbound listener");
    let mut socks = ProxySockets::open(&pins).unwrap();
    socks.set(SockSlot::Outbound, &outbound).unwrap();
    let (out, accepted) = with_proxy(&outbound, "captured-outbound", || {
        client(POD1, POD2_IP, APP_PORT)
    });
    let (local, peer) = accepted.expect("the outbound listener accepted nothing");
    println!("  client: {out:?}");
    println!("  proxy accepted: getsockname={local} getpeername={peer}");
    let Outcome::Connected {
        local: client_addr,
        reply,
    } = out
    else {
        panic!("client: {out:?}")
    };
    assert_eq!(reply, "captured-outbound");
    assert_eq!(
        local,
        SocketAddr::from((POD2_IP, APP_PORT)),
        "original destination"
    );
    assert_eq!(peer, client_addr, "original source");
    assert_eq!(
        app_hits.load(Ordering::SeqCst),
        1,
        "app must not be reached"
    );

    step("inbound: 15006 listener in pod1; pod2 connects to pod1:9090");
    let inbound = netns::run_in(&pod1_ns, || {
        listener::bind_capture_listener(SocketAddrV4::new(
            Ipv4Addr::LOCALHOST,
            listener::INBOUND_PORT,
        ))
    })
    .unwrap()
    .expect("inbound listener");
    socks.set(SockSlot::Inbound, &inbound).unwrap();
    let (out, accepted) = with_proxy(&inbound, "captured-inbound", || client(POD2, POD1_IP, 9090));
    let (local, peer) = accepted.expect("the inbound listener accepted nothing");
    println!("  client: {out:?}");
    println!("  proxy accepted: getsockname={local} getpeername={peer}");
    let Outcome::Connected {
        local: client_addr,
        reply,
    } = out
    else {
        panic!("client: {out:?}")
    };
    assert_eq!(reply, "captured-inbound");
    assert_eq!(
        local,
        SocketAddr::from((POD1_IP, 9090)),
        "original destination"
    );
    assert_eq!(peer, client_addr, "original source");

    step("HBONE port 15008: fail-closed while the proxy has no socket there, then steered to it");
    let dropped_before = Stats::read(&pins).unwrap().get(Counter::NoSocketDropped);
    assert_eq!(client(POD2, POD1_IP, 15008), Outcome::Timeout);
    assert!(Stats::read(&pins).unwrap().get(Counter::NoSocketDropped) > dropped_before);
    let hbone = netns::run_in(&pod1_ns, || {
        listener::bind_capture_listener(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 15008))
    })
    .unwrap()
    .expect("hbone listener");
    socks.set(SockSlot::Hbone, &hbone).unwrap();
    let (out, accepted) = with_proxy(&hbone, "hbone", || client(POD2, POD1_IP, 15008));
    println!("  client: {out:?}");
    assert!(
        matches!(&out, Outcome::Connected { reply, .. } if reply == "hbone"),
        "{out:?}"
    );
    assert_eq!(accepted.unwrap().0, SocketAddr::from((POD1_IP, 15008)));

    let stats = Stats::read(&pins).unwrap();
    println!("  stats: {stats}");
    assert!(stats.get(Counter::OutboundAssigned) >= 1);
    // 15006 and 15008 both count as inbound.
    assert!(stats.get(Counter::InboundAssigned) >= 2);

    step("closing the proxy's listener removes it from the map: fail-closed again");
    drop(outbound);
    let dropped_before = Stats::read(&pins).unwrap().get(Counter::NoSocketDropped);
    assert_eq!(client(POD1, POD2_IP, APP_PORT), Outcome::Timeout);
    assert!(Stats::read(&pins).unwrap().get(Counter::NoSocketDropped) > dropped_before);

    step("fail-open via the pinned cfg: the program passes, but rule 101 still delivers locally");
    pod::set_config(&pins, PodConfig::new(POD1_IP, true, false)).unwrap();
    let passed_before = Stats::read(&pins).unwrap().get(Counter::NoSocketPassed);
    // No listener for 10.250.0.2:8080 in pod1, and the RST cannot be routed from that
    // non-local source (P4): fail-open alone is still a black hole for outbound.
    assert_eq!(client(POD1, POD2_IP, APP_PORT), Outcome::Timeout);
    assert!(Stats::read(&pins).unwrap().get(Counter::NoSocketPassed) > passed_before);

    step("really failing open needs the pref-101 rule removed: pod1 reaches the app again");
    mesh_bpf::routing::release(&pod1_ns, POD1_IP).unwrap();
    assert!(!mesh_bpf::routing::is_installed(&pod1_ns).unwrap());
    // Releasing what is already released is not an error (a CNI DEL may come twice, or for a
    // pod whose capture ztunnel already removed); pod2 was never captured at all.
    mesh_bpf::routing::release(&pod1_ns, POD1_IP).expect("a second release");
    mesh_bpf::routing::release(&netns_path(POD2), POD2_IP)
        .expect("release of a pod never captured");
    let out = client(POD1, POD2_IP, APP_PORT);
    println!("  client: {out:?}");
    assert!(
        matches!(&out, Outcome::Connected { reply, .. } if reply == "pod2-app"),
        "{out:?}"
    );
    assert_eq!(app_hits.load(Ordering::SeqCst), 2);

    step("`mesh-bpf detach`: pins gone; the still-open 15006 listener gets nothing, pod1 refuses");
    run_loader(&["detach", "--pin-dir", PIN_DIR]);
    assert!(!Path::new(PIN_DIR).exists());
    let (out, accepted) = with_proxy(&inbound, "captured-inbound", || client(POD2, POD1_IP, 9090));
    println!("  client: {out:?}");
    assert_eq!(accepted, None, "captured after detach");
    // Rule 101 is gone, so the kernel's RST for the now-unclaimed port gets back to pod2.
    assert_eq!(out, Outcome::Error("Connection refused".into()));

    drop(lab);
    println!("e2e: all checks passed");
}

/// Runs `client` while a thread accepts one connection on `listener` and answers `reply`.
/// Returns the client's result and the accepted socket's (getsockname, getpeername).
fn with_proxy<T>(
    listener: &TcpListener,
    reply: &str,
    client: impl FnOnce() -> T,
) -> (T, Option<(SocketAddr, SocketAddr)>) {
    thread::scope(|scope| {
        let proxy = scope.spawn(|| accept_one(listener, reply));
        let out = client();
        (out, proxy.join().unwrap())
    })
}

fn accept_one(listener: &TcpListener, reply: &str) -> Option<(SocketAddr, SocketAddr)> {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + CLIENT_TIMEOUT + Duration::from_secs(3);
    loop {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                stream.set_nonblocking(false).unwrap();
                let local = stream.local_addr().unwrap();
                assert_eq!(peer, stream.peer_addr().unwrap());
                writeln!(stream, "{reply}").unwrap();
                return Some((local, peer));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

fn spawn_app(app: TcpListener, reply: &'static str, hits: Arc<AtomicUsize>) {
    thread::spawn(move || {
        for mut stream in app.incoming().flatten() {
            hits.fetch_add(1, Ordering::SeqCst);
            let _ = writeln!(stream, "{reply}");
        }
    });
}

fn client(netns: &str, ip: Ipv4Addr, port: u16) -> Outcome {
    let stdout = sh(&[
        "ip",
        "netns",
        "exec",
        netns,
        "python3",
        "-c",
        CLIENT,
        &ip.to_string(),
        &port.to_string(),
        &CLIENT_TIMEOUT.as_secs_f32().to_string(),
    ]);
    let line = stdout.trim();
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("CONNECTED"), Some(local), Some(reply)) => Outcome::Connected {
            local: local.parse().unwrap(),
            reply: reply.to_owned(),
        },
        (Some("TIMEOUT"), None, None) => Outcome::Timeout,
        (Some("ERROR"), Some(_), _) => Outcome::Error(line["ERROR ".len()..].to_owned()),
        _ => panic!("unexpected client output: {line:?}"),
    }
}

fn run_loader(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_mesh-bpf"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mesh-bpf {args:?}: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("  mesh-bpf: {}", stdout.trim());
}

fn step(what: &str) {
    println!("== {what}");
}

/// The routing rules of design (a) for the pod in `ns`; they vanish with the netns.
fn install_routing(ns: &str, ip: Ipv4Addr) {
    mesh_bpf::routing::install(&netns_path(ns), ip).unwrap();
    // Idempotent: a retried enrolment changes nothing.
    let rules = sh(&["ip", "-n", ns, "rule", "show"]);
    mesh_bpf::routing::install(&netns_path(ns), ip).unwrap();
    assert_eq!(sh(&["ip", "-n", ns, "rule", "show"]), rules);
    assert!(mesh_bpf::routing::is_installed(&netns_path(ns)).unwrap());
    println!(
        "  rules:\n{}",
        sh(&["ip", "-n", ns, "rule", "show"]).trim_end()
    );
}

/// A bpffs that still holds something (another cluster's pins) is never unmounted by a cleanup;
/// an empty one is. Uses a private mount of its own, not /sys/fs/bpf.
#[test]
#[ignore = "needs root (mounts a bpffs); run with --ignored"]
fn cleanup_unmounts_only_an_unused_bpffs() {
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(self.0.join("other-cluster"));
            if mesh_bpf::bpffs::is_bpffs(&self.0).unwrap_or(false) {
                let _ = Command::new("umount").arg(&self.0).status();
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let dir = std::env::temp_dir().join(format!("spk-bpffs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = Mount(dir.clone());
    sh(&["mount", "-t", "bpf", "bpf", dir.to_str().unwrap()]);
    assert!(mesh_bpf::bpffs::is_bpffs(&dir).unwrap());

    std::fs::create_dir(dir.join("other-cluster")).unwrap();
    assert!(!mesh_bpf::bpffs::unmount_if_unused(&dir).unwrap());
    assert!(mesh_bpf::bpffs::is_bpffs(&dir).unwrap(), "still mounted");

    std::fs::remove_dir(dir.join("other-cluster")).unwrap();
    assert!(mesh_bpf::bpffs::unmount_if_unused(&dir).unwrap());
    assert!(!mesh_bpf::bpffs::is_bpffs(&dir).unwrap(), "unmounted");
    drop(mount);
    assert!(!dir.exists());
}
