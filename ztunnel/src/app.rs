//! The ztunnel process: configuration, and [`start`] wiring the parts together.
//!
//! Start order: recover the node's pods from the plugin's records (garbage-collecting pins of
//! pods that are gone), open the node-agent socket (requests are held until xDS is ready), start
//! the xDS client, and once every type arrived reconcile every pod (capture, serve, release) and
//! again after each config change and every 5 s (retries). Captured pods stay fail-closed while
//! ztunnel is down or not ready: their new connections wait.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_core::control_plane::ControlPlane;
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::node::{NodePaths, DEFAULT_PIN_ROOT, DEFAULT_RUN_DIR};
use mesh_core::xds::ClientStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin::{self, Admin, Port};
use crate::inpod::{self, Shared};
use crate::pods::Pods;
use crate::state::State;
use crate::xds::{self, XdsConfig};

/// Every flag has an environment variable, as Istio's ztunnel is configured by environment.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "ztunnel",
    version,
    about = "The node proxy: captures enrolled pods' TCP with eBPF and carries it over HBONE (mTLS) with L4 authorization",
    long_about = "The node proxy of the mesh. Run one per node, as root (it enters pod network \
namespaces and pins eBPF programs). It reads workloads and policies from istiod-lite over xDS, \
gets a certificate per local workload identity from istiod-lite's CA, and learns about the \
node's pods from the CNI plugin (mesh-cni) through --run-dir."
)]
pub struct Config {
    /// xDS server of the control plane.
    #[arg(
        long,
        env = "XDS_ADDRESS",
        default_value = "https://istiod.istio-system.svc:15012"
    )]
    pub xds_address: String,
    /// CA server (the control plane's, by default).
    #[arg(long, env = "CA_ADDRESS")]
    pub ca_address: Option<String>,
    /// Name the control plane's certificate must carry (default: the host of --xds-address).
    #[arg(long, env = "XDS_SERVER_NAME")]
    pub xds_server_name: Option<String>,
    /// PEM file with the root certificate of the control plane (istiod-lite's
    /// `<state-dir>/ca/root-cert.pem`).
    #[arg(long, env = "ROOT_CERT")]
    pub root_cert: PathBuf,
    /// File holding this node's bearer token for the control plane.
    #[arg(long, env = "TOKEN_FILE")]
    pub token_file: PathBuf,
    /// This node's name, as in pods' `spec.nodeName`.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// Directory shared with the CNI plugin: pod records and the node-agent socket.
    #[arg(long, env = "ZTUNNEL_RUN_DIR", default_value = DEFAULT_RUN_DIR)]
    pub run_dir: PathBuf,
    /// bpffs directory holding one pin directory per captured pod.
    #[arg(long, env = "ZTUNNEL_PIN_ROOT", default_value = DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// Admin endpoint (config dump); keep it on loopback.
    #[arg(long, env = "ZTUNNEL_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Prometheus metrics.
    #[arg(long, env = "ZTUNNEL_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,
    /// Readiness (`/healthz/ready`).
    #[arg(long, env = "ZTUNNEL_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Lifetime asked for workload certificates (renewed at half life).
    #[arg(long, env = "WORKLOAD_CERT_TTL", default_value = "24h", value_parser = mesh_core::time_text::parse_ttl)]
    pub cert_ttl: Duration,
    /// Longest an inbound HBONE connection may take for its TLS handshake and HTTP/2 preface;
    /// past it the connection is closed.
    #[arg(long, env = "ZTUNNEL_HBONE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = mesh_core::time_text::parse_timeout)]
    pub hbone_handshake_timeout: Duration,
    /// An inbound HBONE connection that carries no tunnel for this long is closed (GOAWAY).
    #[arg(long, env = "ZTUNNEL_HBONE_IDLE_TIMEOUT", default_value = "60s", value_parser = mesh_core::time_text::parse_timeout)]
    pub hbone_idle_timeout: Duration,
    /// Inbound HBONE connections one source address may hold at once, over every pod of the
    /// node; more are closed as they arrive.
    #[arg(long, env = "ZTUNNEL_HBONE_MAX_CONNECTIONS_PER_SOURCE", default_value_t = crate::inpod::DEFAULT_HBONE_CONNECTIONS_PER_SOURCE,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub hbone_max_connections_per_source: u32,
    /// Threads that run the proxy. 1 (the default) is one event loop: on a small node it
    /// spends far less CPU per request than waking threads across cores; raise it on nodes
    /// with many cores and heavy traffic.
    #[arg(long, env = "ZTUNNEL_WORKER_THREADS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub worker_threads: u16,
    /// Log format: text or json.
    #[arg(long, env = "ZTUNNEL_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    fn server_name(&self) -> String {
        self.xds_server_name
            .clone()
            .unwrap_or_else(|| ControlPlane::host_of(&self.xds_address))
    }
}

/// A running ztunnel.
pub struct Running {
    pub shared: Arc<Shared>,
    pub pods: Arc<Pods>,
    pub admin: Arc<Admin>,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn read(path: &std::path::Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading the {what} {}: {e}", path.display()))
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    let root_pem = read(&config.root_cert, "root certificate (--root-cert)")?;
    let token = read(&config.token_file, "token file (--token-file)")?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        config.token_file.display()
    );
    let server_name = config.server_name();
    let ca_address = config
        .ca_address
        .clone()
        .unwrap_or_else(|| config.xds_address.clone());

    let state = Arc::new(RwLock::new(State::default()));
    let control_plane = ControlPlane {
        address: config.xds_address.clone(),
        server_name,
        root_pem,
        token,
    };
    let identities = IdentityManager::new(CaConfig {
        control_plane: ControlPlane {
            address: ca_address,
            ..control_plane.clone()
        },
        requester: Requester::Node,
        ttl: config.cert_ttl,
    });
    let limits = mesh_core::hbone::ServerLimits {
        handshake: config.hbone_handshake_timeout,
        idle: config.hbone_idle_timeout,
    };
    let shared = Arc::new(
        Shared::new(state.clone(), identities)
            .with_hbone_limits(limits, config.hbone_max_connections_per_source as usize),
    );
    let paths = NodePaths::new(&config.run_dir, &config.pin_root);
    let pods = Pods::new(shared.clone(), paths, &config.node_name);

    let (recovered_tx, recovered) = watch::channel(false);
    let (xds_tx, xds_status) = watch::channel(ClientStatus::default());
    let admin = Arc::new(Admin {
        shared: shared.clone(),
        pods: pods.clone(),
        xds: xds_status.clone(),
        recovered,
    });

    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the {what} port {addr}: {e}"))
    };
    let admin_l = bind(config.admin_addr, "admin").await?;
    let metrics_l = bind(config.metrics_addr, "metrics").await?;
    let ready_l = bind(config.readiness_addr, "readiness").await?;
    let (admin_addr, metrics_addr, readiness_addr) = (
        admin_l.local_addr()?,
        metrics_l.local_addr()?,
        ready_l.local_addr()?,
    );

    let p = pods.clone();
    let report = tokio::task::spawn_blocking(move || p.recover()).await?;
    let socket = crate::agent::bind(&pods).map_err(|e| {
        anyhow::anyhow!(
            "opening the node-agent socket {}: {e}",
            pods.paths().socket().display()
        )
    })?;

    // Freed connection buffers go back to the kernel after a burst (a flood on 15008).
    mesh_core::memory::spawn_default_trimmer();
    let mut tasks = vec![
        tokio::spawn(admin::serve(admin_l, Port::Admin, admin.clone())),
        tokio::spawn(admin::serve(metrics_l, Port::Metrics, admin.clone())),
        tokio::spawn(admin::serve(ready_l, Port::Readiness, admin.clone())),
        tokio::spawn(xds::run(
            XdsConfig {
                control_plane,
                node_name: config.node_name.clone(),
            },
            state,
            xds_tx,
        )),
        tokio::spawn(inpod::recheck_on_change(shared.clone(), xds_status.clone())),
    ];
    tasks.push(tokio::spawn(crate::agent::serve(socket, pods.clone())));
    // Pods: once xDS is ready, reconcile on every change, and every 5 s (retries, and records
    // whose notification was lost).
    let (p, mut status) = (pods.clone(), xds_status.clone());
    tasks.push(tokio::spawn(async move {
        if status.wait_for(|s| s.ready).await.is_err() {
            return;
        }
        reconcile(&p, false).await;
        let _ = recovered_tx.send(true);
        tracing::info!(
            ?report,
            "ztunnel ready: xDS synced and the node's pods reconciled"
        );
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            let rescan = tokio::select! {
                changed = status.changed() => if changed.is_err() { return } else { false },
                _ = tick.tick() => true,
            };
            reconcile(&p, rescan).await;
        }
    }));
    tracing::info!(node = %config.node_name, xds = %config.xds_address, %admin_addr, %metrics_addr, %readiness_addr,
        run_dir = %config.run_dir.display(), pin_root = %config.pin_root.display(), "ztunnel started");
    Ok(Running {
        shared,
        pods,
        admin,
        admin_addr,
        metrics_addr,
        readiness_addr,
        tasks,
    })
}

async fn reconcile(pods: &Arc<Pods>, rescan: bool) {
    let p = pods.clone();
    let work = move || {
        if rescan {
            p.rescan();
        }
        p.reconcile()
    };
    if let Err(e) = tokio::task::spawn_blocking(work).await {
        tracing::error!(error = %e, "reconciling pods panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn server_name_defaults_to_the_host_of_the_xds_address() {
        let mut c = Config::parse_from([
            "ztunnel",
            "--root-cert=r",
            "--token-file=t",
            "--node-name=n",
        ]);
        assert_eq!(c.server_name(), "istiod.istio-system.svc");
        c.xds_address = "https://[fd00::1]:15012".into();
        assert_eq!(c.server_name(), "fd00::1");
        c.xds_address = "https://10.0.0.1:15012".into();
        assert_eq!(c.server_name(), "10.0.0.1");
        c.xds_server_name = Some("istiod-lite".into());
        assert_eq!(c.server_name(), "istiod-lite");
    }
}
