//! What the root-only data-path test and benchmark share: two pod network namespaces (`zte-*`)
//! joined by a veth, made by mesh-test-support's [`Lab`], their capture enrolment, and a control
//! plane (istiod-lite's test harness) plus ztunnel serving both pods (`Mesh`). Everything is
//! removed by exact name when dropped.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use istiod_lite::app::Running;
use istiod_lite::testing::{ControlPlaneDir, Token};
use mesh_bpf::{pod, PinDir, PodSpec};
use mesh_core::control_plane::ControlPlane;
use mesh_core::hbone::ServerLimits;
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::xds::ClientStatus;
pub use mesh_test_support::{netns_path as netns, Lab};
use tokio::sync::watch;
use ztunnel::inpod::{self, PodProxy, Shared};
use ztunnel::state::State;
use ztunnel::xds::{run, XdsConfig};

pub const POD1: &str = "zte-pod1";
pub const POD2: &str = "zte-pod2";
pub const POD1_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 1);
pub const POD2_IP: Ipv4Addr = Ipv4Addr::new(10, 252, 0, 2);
pub const VIP: &str = "10.96.252.7";
pub const PIN_ROOT: &str = "/sys/fs/bpf/zte";
pub const TOKEN: &str = "zte-node1-token-0123456789";
/// How long a test waits for a change to reach ztunnel.
pub const WAIT: Duration = Duration::from_secs(10);

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

/// The two pods: `zte-pod1` and `zte-pod2` on 10.252.0.0/24, pins under [`PIN_ROOT`].
pub fn lab() -> Lab {
    Lab::pod_pair(PIN_ROOT, (POD1, POD1_IP), (POD2, POD2_IP))
}

pub fn pins(name: &str) -> PinDir {
    PinDir::new(format!("{PIN_ROOT}/{name}"))
}

/// Enrols both pods of [`lab`] (capture on, fail-closed).
pub fn enrol_all(lab: &Lab) {
    enrol(lab, POD1, POD1_IP);
    enrol(lab, POD2, POD2_IP);
}

/// Capture for one pod: the routing rules of design (a), then the program, fail-closed.
fn enrol(lab: &Lab, ns: &str, ip: Ipv4Addr) {
    mesh_bpf::routing::install(&netns(ns), ip).unwrap();
    pod::attach(&PodSpec {
        netns: netns(ns),
        pin_dir: PinDir::new(lab.pin_dir(ns)),
        pod_ip: ip,
        fail_closed: true,
    })
    .unwrap();
}

/// A control-plane directory with `files` in `config/` and `token` naming the ztunnel of node1.
pub fn control_plane_dir(token: &str, files: &[(&str, &str)]) -> ControlPlaneDir {
    ControlPlaneDir::new(
        &[Token::Node {
            token,
            node: "node1",
        }],
        files,
    )
}

/// istiod-lite (config in a temporary directory) and ztunnel serving both pods.
pub struct Mesh {
    pub dir: ControlPlaneDir,
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
    /// Needs the pods enrolled ([`enrol_all`]).
    /// With ztunnel's default bounds on inbound HBONE connections.
    pub async fn start() -> Mesh {
        Self::start_with(
            ServerLimits::default(),
            inpod::DEFAULT_HBONE_CONNECTIONS_PER_SOURCE as usize,
        )
        .await
    }

    /// With the given bounds on inbound HBONE connections (time, and count per source).
    pub async fn start_with(limits: ServerLimits, per_source: usize) -> Mesh {
        // Logs when RUST_LOG asks for them (e.g. RUST_LOG=info).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        // The control plane.
        let dir = control_plane_dir(TOKEN, &[("demo.yaml", CONFIG)]);
        let istiod = dir.start().await;
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
        let identities = IdentityManager::new(CaConfig {
            control_plane,
            requester: Requester::Node,
            ttl: Duration::from_secs(3600),
        });
        let shared =
            Arc::new(Shared::new(state.clone(), identities).with_hbone_limits(limits, per_source));
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
