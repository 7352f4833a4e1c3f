//! What the root-only data-path test and benchmark share: two pod network namespaces joined by a
//! veth (`Lab`), capture enrolment, and a control plane plus ztunnel serving both pods (`Mesh`).
//! Everything is removed by exact name when dropped.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use istiod_lite::app::{start, Running};
use istiod_lite::config::Config;
use mesh_bpf::{bpffs, pod, PinDir, PodSpec};
use mesh_core::control_plane::ControlPlane;
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::xds::ClientStatus;
use tokio::sync::watch;
use ztunnel::inpod::{self, Counters, PodProxy, Shared};
use ztunnel::state::State;
use ztunnel::xds::{run, XdsConfig};

pub const POD1: &str = "zte-pod1";
pub const POD2: &str = "zte-pod2";
pub const POD1_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
pub const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 2);
pub const VIP: &str = "10.96.252.7";
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_ROOT: &str = "/sys/fs/bpf/zte";
pub const TOKEN: &str = "zte-node1-token-0123456789";

pub const CONFIG: &str = r#"
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

pub fn sh(args: &[&str]) -> String {
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

pub fn netns(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

pub fn pins(name: &str) -> PinDir {
    PinDir::new(format!("{PIN_ROOT}/{name}"))
}

pub struct Lab {
    mounted_bpffs: bool,
}

impl Lab {
    pub fn start() -> Lab {
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
        }
        lab
    }

    /// Enrols both pods (capture on, fail-closed).
    pub fn enrol_all(&self) {
        self.enrol(POD1, POD1_IP);
        self.enrol(POD2, POD2_IP);
    }

    /// Capture for one pod: the routing rules of design (a), then the program, fail-closed.
    fn enrol(&self, ns: &str, ip: Ipv4Addr) {
        mesh_bpf::routing::install(&netns(ns), ip).unwrap();
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

pub async fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(
            tokio::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A control-plane directory: `config/` with `files`, and `state/tokens.yaml` naming `token` as
/// the ztunnel of node1.
pub fn control_plane_dir(token: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("config")).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(
        dir.path().join("state/tokens.yaml"),
        format!("tokens:\n- token: {token}\n  node: node1\n"),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join("config").join(name), text).unwrap();
    }
    dir
}

/// istiod-lite on loopback for a [`control_plane_dir`], on `port` (ephemeral if `None`).
pub async fn istiod(dir: &Path, port: Option<u16>) -> Running {
    let mut config = Config::for_test(dir.join("config"), dir.join("state"));
    if let Some(port) = port {
        config.xds_addr = format!("127.0.0.1:{port}").parse().unwrap();
    }
    start(config).await.unwrap()
}

/// istiod-lite (config in a temporary directory) and ztunnel serving both pods.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub istiod: Running,
    pub state: Arc<RwLock<State>>,
    pub status: watch::Receiver<ClientStatus>,
    pub shared: Arc<Shared>,
    pub pods: Vec<PodProxy>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Mesh {
    /// Needs the pods enrolled ([`Lab::enrol_all`]).
    pub async fn start() -> Mesh {
        // Logs when RUST_LOG asks for them (e.g. RUST_LOG=info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        // The control plane.
        let dir = control_plane_dir(TOKEN, &[("demo.yaml", CONFIG)]);
        let istiod = istiod(dir.path(), None).await;
        let control_plane = ControlPlane {
            address: format!("https://localhost:{}", istiod.xds_addr.port()),
            server_name: "localhost".into(),
            root_pem: istiod.root_cert_pem.clone(),
            token: TOKEN.into(),
        };

        // ztunnel: state from xDS, certificates from the CA, one proxy per pod.
        let state = Arc::new(RwLock::new(State::default()));
        let (status_tx, mut status) = watch::channel(ClientStatus::default());
        let xds = tokio::spawn(run(
            XdsConfig {
                control_plane: control_plane.clone(),
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
                control_plane,
                requester: Requester::Node,
                ttl: Duration::from_secs(3600),
            }),
            counters: Counters::default(),
            pool: Default::default(),
            connections: Default::default(),
            metrics: Default::default(),
        });
        let p1 = inpod::start(
            shared.clone(),
            "Kubernetes//Pod/demo/client",
            &netns(POD1),
            &pins(POD1),
        )
        .unwrap();
        let p2 = inpod::start(
            shared.clone(),
            "Kubernetes//Pod/demo/server",
            &netns(POD2),
            &pins(POD2),
        )
        .unwrap();
        let recheck = tokio::spawn(inpod::recheck_on_change(shared.clone(), status.clone()));
        Mesh {
            dir,
            istiod,
            state,
            status,
            shared,
            pods: vec![p1, p2],
            tasks: vec![xds, recheck],
        }
    }
}
