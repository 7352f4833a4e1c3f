//! Wires the control plane together: source -> store -> translation -> xDS state -> ADS server,
//! plus the CA and the monitoring port. Data only moves forward along that line.
//!
//! Tasks (all on one Tokio runtime): the directory watcher, the translation loop (translation
//! itself runs on the blocking pool), one task per xDS stream, the gRPC server, the monitoring
//! server. [`Running`] owns them; dropping it stops them.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use mesh_core::proto::istio::ca::istio_certificate_service_server::IstioCertificateServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::auth::TokenFileAuthenticator;
use crate::ca::{Authority, CaService};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::monitoring::{Monitor, Readiness};
use crate::source::directory::DirectorySource;
use crate::status::StatusBook;
use crate::store::Store;
use crate::translate::{MeshConfig, Translator};
use crate::xds::resources::EncodeCache;
use crate::xds::{build_state, AdsServer, XdsState};

/// Largest CA request accepted.
const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Lifetime of the xDS port's own serving certificate; a new one is issued at every start.
const SERVER_CERT_TTL: std::time::Duration = std::time::Duration::from_secs(365 * 86400);

/// A started control plane. Dropping it stops every task.
pub struct Running {
    pub xds_addr: SocketAddr,
    pub monitoring_addr: SocketAddr,
    /// PEM of the mesh root: what clients must trust for the xDS port and for peers.
    pub root_cert_pem: String,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub xds: watch::Receiver<Arc<XdsState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Running {
    /// Stops every task and waits until they are gone, so the ports are free on return.
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    /// Resolves when any task ends (none should while serving).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        let (result, index, _) = futures::future::select_all(self.tasks.iter_mut()).await;
        match result {
            Ok(()) => bail!("task {index} stopped unexpectedly"),
            Err(e) => bail!("task {index} failed: {e}"),
        }
    }
}

fn load_authority(config: &Config) -> anyhow::Result<Authority> {
    let authority = match (&config.ca_cert, &config.ca_key) {
        (Some(cert), Some(key)) => {
            Authority::from_files(cert, key, config.ca_root.as_deref(), &config.trust_domain)?
        }
        _ => Authority::load_or_create(&config.state_dir.join("ca"), &config.trust_domain)?,
    };
    Ok(authority)
}

pub async fn start(config: Config) -> anyhow::Result<Running> {
    if !config.config_dir.is_dir() {
        bail!(
            "config directory {} does not exist: create it, or point --config-dir at one",
            config.config_dir.display()
        );
    }
    let metrics = Arc::new(Metrics::new());
    let authority = Arc::new(load_authority(&config).context("loading the mesh CA")?);
    let (dns, ips) = config.server_names();
    let (chain_pem, key_pem) = authority
        .issue_server_cert(&dns, &ips, SERVER_CERT_TTL)
        .context("issuing the xDS serving certificate")?;
    let tls = mesh_core::tls::server_config(
        mesh_core::tls::parse_certs(&chain_pem, "xDS serving certificate")?,
        mesh_core::tls::parse_key(&key_pem, "xDS serving key")?,
    )?;

    let store = Store::new();
    let (readiness_tx, readiness_rx) = watch::channel(Readiness::default());
    // Freed memory goes back to the kernel after a burst (many proxies reconnecting at once).
    mesh_core::memory::spawn_default_trimmer();
    let mut tasks = Vec::new();

    // Source: load once, then follow changes.
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let source = DirectorySource::new(config.config_dir.clone(), store.clone());
    tasks.push(tokio::spawn(async move {
        if let Err(e) = source.run(Some(loaded_tx)).await {
            tracing::error!(error = %e, "config directory source stopped");
        }
    }));
    loaded_rx
        .await
        .context("the config directory source failed before its first load; see the log")?;

    // Translation: every new snapshot becomes a new xDS state and new status.
    let (xds_tx, xds_rx) = watch::channel(Arc::new(XdsState::empty()));
    let status = Arc::new(Mutex::new(StatusBook::new(Some(config.status_dir()))));
    tasks.push(tokio::spawn(translate_loop(
        store.clone(),
        config.mesh(),
        xds_tx,
        status.clone(),
        metrics.clone(),
        readiness_tx.clone(),
    )));

    // Clients are only served once the loaded config is translated: a proxy must never get
    // an empty "initial state" that is only empty because istiod-lite is still starting.
    readiness_rx
        .clone()
        .wait_for(|r| r.config_loaded)
        .await
        .context("the translation task stopped before the first translation")?;

    // xDS + CA on one TLS port.
    let authenticator = Arc::new(TokenFileAuthenticator::new(config.tokens_file()));
    if !config.tokens_file().exists() {
        tracing::warn!(file = %config.tokens_file().display(),
            "token file does not exist: every xDS and CA call will be refused until it does");
    }
    let ads = AdsServer::new(xds_rx.clone(), authenticator.clone(), metrics.clone());
    let ca = CaService {
        authority: authority.clone(),
        authenticator,
        store: store.clone(),
        metrics: metrics.clone(),
        default_ttl: config.cert_ttl,
        max_ttl: config.max_cert_ttl,
    };
    let listener = TcpListener::bind(config.xds_addr)
        .await
        .with_context(|| format!("binding the xDS port {}", config.xds_addr))?;
    let xds_addr = listener.local_addr()?;
    let (incoming, accept_task) =
        crate::grpc_tls::incoming(listener, Arc::new(tls), config.handshake_timeout);
    tasks.push(accept_task);
    let router = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .add_service(ads)
        .add_service(
            IstioCertificateServiceServer::new(ca).max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    tasks.push(tokio::spawn(async move {
        if let Err(e) = router.serve_with_incoming(incoming).await {
            tracing::error!(error = %e, "xDS server stopped");
        }
    }));
    readiness_tx.send_modify(|r| r.xds_serving = true);

    let monitoring = TcpListener::bind(config.monitoring_addr)
        .await
        .with_context(|| format!("binding the monitoring port {}", config.monitoring_addr))?;
    let monitoring_addr = monitoring.local_addr()?;
    let monitor = Arc::new(Monitor {
        metrics: metrics.clone(),
        store: store.clone(),
        status,
        xds: xds_rx.clone(),
        readiness: readiness_rx,
    });
    tasks.push(tokio::spawn(crate::monitoring::serve(monitoring, monitor)));

    tracing::info!(%xds_addr, %monitoring_addr, config_dir = %config.config_dir.display(),
        trust_domain = %config.trust_domain, "istiod-lite serving");
    Ok(Running {
        xds_addr,
        monitoring_addr,
        root_cert_pem: authority.root_pem().to_string(),
        store,
        metrics,
        xds: xds_rx,
        tasks,
    })
}

async fn translate_loop(
    store: Arc<Store>,
    mesh: MeshConfig,
    xds_tx: watch::Sender<Arc<XdsState>>,
    status: Arc<Mutex<StatusBook>>,
    metrics: Arc<Metrics>,
    readiness: watch::Sender<Readiness>,
) {
    let mut snapshots = store.subscribe();
    // Both keep results of the last run so a change redoes only what it affects.
    let mut work = Some((Translator::new(mesh.clone()), EncodeCache::default()));
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let started = Instant::now();
        let previous = xds_tx.borrow().clone();
        let snap = snapshot.clone();
        let Some((mut translator, mut cache)) = work.take() else {
            return;
        };
        let result = tokio::task::spawn_blocking(move || {
            let translation = translator.translate(&snap);
            let state = build_state(
                &translation,
                &previous,
                &mut cache,
                snap.generation,
                started,
            );
            let unchanged = state
                .sets
                .iter()
                .all(|(t, s)| previous.sets.get(t).is_some_and(|p| p.id == s.id));
            (translation, state, unchanged, translator, cache)
        })
        .await;
        let (translation, state, unchanged) = match result {
            Ok((translation, state, unchanged, translator, cache)) => {
                work = Some((translator, cache));
                (translation, state, unchanged)
            }
            Err(e) => {
                // A panic in translation is a bug; keep serving the last good state, and start
                // the next translation from scratch.
                tracing::error!(error = %e, generation = snapshot.generation, "translation failed; keeping the previous xDS state");
                work = Some((Translator::new(mesh.clone()), EncodeCache::default()));
                if snapshots.changed().await.is_err() {
                    return;
                }
                continue;
            }
        };
        metrics
            .translate_time
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(
            generation = snapshot.generation,
            workloads = translation.workloads.len(),
            services = translation.services.len(),
            policies = translation.authorizations.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            unchanged,
            "translated"
        );
        // Proxies first; status after.
        if !unchanged || xds_tx.borrow().generation == 0 {
            xds_tx.send_replace(Arc::new(state));
        }
        let book = status.clone();
        let snap = snapshot.clone();
        let statuses = translation.statuses;
        let not_accepted = tokio::task::spawn_blocking(move || {
            let (files, not_accepted) = {
                let mut book = book.lock().unwrap_or_else(|e| e.into_inner());
                let files = book.update(&statuses, &snap);
                (files, book.not_accepted())
            };
            files.apply();
            not_accepted
        })
        .await
        .unwrap_or_default();
        metrics.policies_not_accepted.reset();
        for ((kind, reason), n) in not_accepted {
            metrics
                .policies_not_accepted
                .with_label_values(&[&kind, &reason])
                .set(n);
        }
        readiness.send_if_modified(|r| !std::mem::replace(&mut r.config_loaded, true));
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}
