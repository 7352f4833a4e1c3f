//! A real istiod-lite on loopback, with a config directory and token file the test owns, and
//! TLS gRPC clients that trust its root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use istiod_lite::app::{start, Running};
use istiod_lite::config::Config;
use mesh_core::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::Streaming;

pub const NODE1_TOKEN: &str = "node1-token-0123456789abcdef";
pub const NODE2_TOKEN: &str = "node2-token-0123456789abcdef";
pub const WAYPOINT_TOKEN: &str = "waypoint-token-0123456789abcdef";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub running: Running,
}

impl Harness {
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn write(&self, name: &str, text: &str) {
        write_atomic(&self.config_dir().join(name), text);
    }

    pub async fn channel(&self) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.running.root_cert_pem))
            .domain_name("localhost");
        Channel::from_shared(format!(
            "https://localhost:{}",
            self.running.xds_addr.port()
        ))
        .expect("valid URL")
        .tls_config(tls)
        .expect("TLS config")
        .connect()
        .await
        .expect("connect to istiod-lite")
    }

    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.running.monitoring_addr, path).await
    }
}

/// Writes as meshctl does, so the watcher never reads half a file.
pub fn write_atomic(path: &Path, text: &str) {
    mesh_core::cluster_dir::write_atomic(path, text.as_bytes()).unwrap();
}

pub async fn start_harness(files: &[(&str, &str)]) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(
        state_dir.join("tokens.yaml"),
        format!(
            "tokens:\n- token: {NODE1_TOKEN}\n  node: node1\n- token: {NODE2_TOKEN}\n  node: node2\n- token: {WAYPOINT_TOKEN}\n  namespace: demo\n  serviceAccount: waypoint\n"
        ),
    )
    .unwrap();
    for (name, text) in files {
        std::fs::write(config_dir.join(name), text).unwrap();
    }
    let running = start(Config::for_test(config_dir, state_dir))
        .await
        .unwrap();
    Harness { dir, running }
}

/// One delta ADS stream.
pub struct AdsStream {
    pub tx: mpsc::Sender<DeltaDiscoveryRequest>,
    pub rx: Streaming<DeltaDiscoveryResponse>,
}

pub fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    req
}

impl AdsStream {
    pub async fn open(channel: Channel, token: &str) -> Result<AdsStream, tonic::Status> {
        let (tx, rx) = mpsc::channel(16);
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
        let resp = client
            .delta_aggregated_resources(with_token(ReceiverStream::new(rx), token))
            .await?;
        Ok(AdsStream {
            tx,
            rx: resp.into_inner(),
        })
    }

    pub async fn subscribe(&self, type_url: &str) {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: type_url.to_string(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    pub async fn ack(&self, resp: &DeltaDiscoveryResponse) {
        self.tx
            .send(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    /// The next response, or a panic after `within`.
    pub async fn next(&mut self, within: Duration) -> DeltaDiscoveryResponse {
        tokio::time::timeout(within, self.rx.message())
            .await
            .expect("no xDS response in time")
            .expect("stream error")
            .expect("stream ended")
    }

    /// Whether a response arrives within `within`.
    pub async fn quiet_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.rx.message())
            .await
            .is_err()
    }
}

/// Minimal HTTP/1.1 GET against the monitoring port.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// Polls `f` until it returns Some, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > end {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
