//! The waypoint process: configuration, and [`start`] wiring the parts together.
//!
//! One waypoint serves the services bound to its Gateway (`istio.io/use-waypoint`). It asks
//! istiod-lite's CA for its own identity only (the Gateway's service account; the CA gives a
//! workload no other), subscribes to `WaypointService` resources on the delta ADS stream, and
//! serves HBONE on 15008 once both are in. Ports: 15008 HBONE, 15000 admin (loopback), 15020
//! metrics, 15021 readiness.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_core::admin_port;
use mesh_core::control_plane::ControlPlane;
use mesh_core::hbone::{ServerLimits, HBONE_PORT};
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::identity::Identity;
use mesh_core::xds::{Client, ClientStatus};
use mesh_core::WAYPOINT_SERVICE_TYPE_URL;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::inbound::{self, Inbound};
use crate::state::{State, StateHandler};
use crate::telemetry::Metrics;
use crate::upstream::Upstream;

/// Every flag has an environment variable, as Istio's proxies are configured by environment.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "waypoint",
    version,
    about = "The L7 proxy of a namespace: HBONE in and out, HTTP/1.1, HTTP/2 and gRPC",
    long_about = "A waypoint proxy. Run one (or more replicas) per waypoint Gateway (class \
istio-waypoint). It reads the services bound to its Gateway from istiod-lite over xDS, gets \
its own certificate from istiod-lite's CA, takes HBONE from ztunnels on 15008 and sends each \
request or connection to an endpoint over HBONE."
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
    /// PEM file with the mesh's root certificate.
    #[arg(long, env = "ROOT_CERT")]
    pub root_cert: PathBuf,
    /// File holding this waypoint's bearer token for the control plane.
    #[arg(long, env = "TOKEN_FILE")]
    pub token_file: PathBuf,
    /// The waypoint Gateway this proxy serves, `<namespace>/<name>`.
    #[arg(long, env = "WAYPOINT_GATEWAY")]
    pub gateway: String,
    /// The service account the waypoint runs as (default: the Gateway's name, as Istio
    /// deploys waypoints).
    #[arg(long, env = "SERVICE_ACCOUNT")]
    pub service_account: Option<String>,
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,
    /// This pod's name (for the xDS node id and logs).
    #[arg(long, env = "POD_NAME", default_value = "waypoint")]
    pub pod_name: String,
    /// HBONE listener.
    #[arg(long, env = "WAYPOINT_HBONE_ADDR", default_value = "0.0.0.0:15008")]
    pub hbone_addr: SocketAddr,
    /// Port the endpoints' ztunnels take HBONE on.
    #[arg(long, env = "WAYPOINT_UPSTREAM_HBONE_PORT", default_value_t = HBONE_PORT)]
    pub upstream_hbone_port: u16,
    /// Admin endpoint (config dump); keep it on loopback.
    #[arg(long, env = "WAYPOINT_ADMIN_ADDR", default_value = "127.0.0.1:15000")]
    pub admin_addr: SocketAddr,
    /// Prometheus metrics.
    #[arg(long, env = "WAYPOINT_METRICS_ADDR", default_value = "0.0.0.0:15020")]
    pub metrics_addr: SocketAddr,
    /// Readiness (`/healthz/ready`).
    #[arg(long, env = "WAYPOINT_READINESS_ADDR", default_value = "0.0.0.0:15021")]
    pub readiness_addr: SocketAddr,
    /// Lifetime asked for the waypoint's certificate (renewed at half life).
    #[arg(long, env = "WORKLOAD_CERT_TTL", default_value = "24h", value_parser = mesh_core::time_text::parse_ttl)]
    pub cert_ttl: Duration,
    /// Longest an inbound HBONE connection may take for its TLS handshake and HTTP/2 preface.
    #[arg(long, env = "WAYPOINT_HBONE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = mesh_core::time_text::parse_timeout)]
    pub hbone_handshake_timeout: Duration,
    /// An inbound HBONE connection that carries no tunnel for this long is closed.
    #[arg(long, env = "WAYPOINT_HBONE_IDLE_TIMEOUT", default_value = "60s", value_parser = mesh_core::time_text::parse_timeout)]
    pub hbone_idle_timeout: Duration,
    /// Inbound HBONE connections one source address may hold at once.
    #[arg(long, env = "WAYPOINT_HBONE_MAX_CONNECTIONS_PER_SOURCE", default_value_t = 512,
        value_parser = clap::value_parser!(u32).range(1..))]
    pub hbone_max_connections_per_source: u32,
    /// Worker threads (default: one per core).
    #[arg(long, env = "WAYPOINT_WORKER_THREADS")]
    pub worker_threads: Option<u16>,
    /// Log format: text or json.
    #[arg(long, env = "WAYPOINT_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    fn server_name(&self) -> String {
        self.xds_server_name
            .clone()
            .unwrap_or_else(|| ControlPlane::host_of(&self.xds_address))
    }

    /// The Gateway's namespace and name.
    pub fn gateway(&self) -> anyhow::Result<(String, String)> {
        match self.gateway.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
                Ok((ns.to_string(), name.to_string()))
            }
            _ => anyhow::bail!("--gateway {:?} is not <namespace>/<name>", self.gateway),
        }
    }
}

/// A running waypoint.
pub struct Running {
    pub hbone_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub readiness_addr: SocketAddr,
    pub state: Arc<RwLock<State>>,
    pub xds: watch::Receiver<ClientStatus>,
    pub metrics: Arc<Metrics>,
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
    let (namespace, name) = config.gateway()?;
    let root_pem = read(&config.root_cert, "root certificate (--root-cert)")?;
    let token = read(&config.token_file, "token file (--token-file)")?
        .trim()
        .to_string();
    anyhow::ensure!(
        !token.is_empty(),
        "the token file {} is empty",
        config.token_file.display()
    );
    let service_account = config
        .service_account
        .clone()
        .unwrap_or_else(|| name.clone());
    let me = Identity::new(&config.trust_domain, &namespace, &service_account);
    let control_plane = ControlPlane {
        address: config.xds_address.clone(),
        server_name: config.server_name(),
        root_pem,
        token,
    };
    let identities = IdentityManager::new(CaConfig {
        control_plane: ControlPlane {
            address: config
                .ca_address
                .clone()
                .unwrap_or_else(|| config.xds_address.clone()),
            ..control_plane.clone()
        },
        requester: Requester::Workload,
        ttl: config.cert_ttl,
    });
    let state = Arc::new(RwLock::new(State::default()));
    let metrics = Metrics::new();
    let upstream = Arc::new(Upstream::new(
        identities.clone(),
        me.clone(),
        config.upstream_hbone_port,
    ));

    let bind = |addr: SocketAddr, what: &'static str| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("binding the {what} port {addr}: {e}"))
    };
    let hbone_l = bind(config.hbone_addr, "HBONE").await?;
    let admin_l = bind(config.admin_addr, "admin").await?;
    let metrics_l = bind(config.metrics_addr, "metrics").await?;
    let ready_l = bind(config.readiness_addr, "readiness").await?;

    let gateway = format!("{namespace}/{name}");
    let node_id = format!(
        "waypoint~0.0.0.0~{}.{namespace}~{namespace}.svc.cluster.local",
        config.pod_name
    );
    let client = Client::new(
        control_plane,
        node_id,
        &[
            ("WAYPOINT", gateway.as_str()),
            ("NAMESPACE", namespace.as_str()),
        ],
    )
    .subscribe(
        WAYPOINT_SERVICE_TYPE_URL,
        StateHandler {
            state: state.clone(),
            waypoint: gateway.clone(),
        },
    );
    let (xds_tx, xds) = watch::channel(ClientStatus::default());
    let inbound = Inbound::new(
        state.clone(),
        upstream,
        identities.clone(),
        me.clone(),
        metrics.clone(),
        ServerLimits {
            handshake: config.hbone_handshake_timeout,
            idle: config.hbone_idle_timeout,
        },
        config.hbone_max_connections_per_source as usize,
        xds.clone(),
    );

    // The certificate is fetched at start, so readiness can say whether it is there.
    let (cert_tx, cert_rx) = watch::channel(false);
    let (ids, me_id) = (identities.clone(), me.clone());
    let fetch_cert = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        loop {
            match ids.certificate(&me_id).await {
                Ok(_) => {
                    let _ = cert_tx.send(true);
                    return;
                }
                Err(e) => {
                    tracing::warn!(identity = %me_id, error = %e, "no certificate yet; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                }
            }
        }
    });

    let (xds_r, cert_r) = (xds.clone(), cert_rx.clone());
    let readiness = move |req: &http::Request<hyper::body::Incoming>, _| {
        if req.uri().path() != "/healthz/ready" {
            return admin_port::respond(http::StatusCode::NOT_FOUND, "text/plain", "not found\n");
        }
        let mut missing = Vec::new();
        if !xds_r.borrow().ready {
            missing.push("xDS not synced");
        }
        if !*cert_r.borrow() {
            missing.push("no certificate");
        }
        admin_port::readiness(&missing)
    };
    let m = metrics.clone();
    let metrics_port = move |req: &http::Request<hyper::body::Incoming>, _| match req.uri().path() {
        "/metrics" | "/stats/prometheus" => admin_port::respond(
            http::StatusCode::OK,
            "text/plain; version=0.0.4",
            m.encode(),
        ),
        _ => admin_port::respond(http::StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    let dump_state = state.clone();
    let (admin_ids, admin_xds) = (identities.clone(), xds.clone());
    let admin = move |req: &http::Request<hyper::body::Incoming>, _| match req.uri().path() {
        "/config_dump" => admin_port::json(&crate::admin::config_dump(
            &dump_state,
            &admin_ids,
            &admin_xds.borrow(),
        )),
        _ => admin_port::respond(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /config_dump\n",
        ),
    };

    let hbone_addr = hbone_l.local_addr()?;
    let (admin_addr, metrics_addr, readiness_addr) = (
        admin_l.local_addr()?,
        metrics_l.local_addr()?,
        ready_l.local_addr()?,
    );
    mesh_core::memory::spawn_default_trimmer();
    let tasks = vec![
        fetch_cert,
        tokio::spawn(client.run(xds_tx)),
        tokio::spawn(inbound::serve(hbone_l, inbound)),
        tokio::spawn(admin_port::serve(admin_l, "admin", admin)),
        tokio::spawn(admin_port::serve(metrics_l, "metrics", metrics_port)),
        tokio::spawn(admin_port::serve(ready_l, "readiness", readiness)),
    ];
    tracing::info!(%gateway, identity = %me, xds = %config.xds_address, %hbone_addr, %admin_addr,
        %metrics_addr, %readiness_addr, "waypoint started");
    Ok(Running {
        hbone_addr,
        admin_addr,
        metrics_addr,
        readiness_addr,
        state,
        xds,
        metrics,
        tasks,
    })
}
