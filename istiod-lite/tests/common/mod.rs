//! What this crate's integration tests share beyond the harness (`istiod_lite::testing`): the
//! token set they start it with, and a delta ADS client stream.

#![allow(dead_code)]

use std::time::Duration;

pub use istiod_lite::testing::{Harness, Token};
use mesh_core::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

pub const NODE1_TOKEN: &str = "node1-token-0123456789abcdef";
pub const NODE2_TOKEN: &str = "node2-token-0123456789abcdef";
pub const WAYPOINT_TOKEN: &str = "waypoint-token-0123456789abcdef";

/// The token file of these tests: the ztunnels of node1 and node2, and demo's waypoint.
pub const TOKENS: &[Token] = &[
    Token::Node {
        token: NODE1_TOKEN,
        node: "node1",
    },
    Token::Node {
        token: NODE2_TOKEN,
        node: "node2",
    },
    Token::Workload {
        token: WAYPOINT_TOKEN,
        namespace: "demo",
        service_account: "waypoint",
    },
];

/// istiod-lite with [`TOKENS`] and `files` in its config directory.
pub async fn start_harness(files: &[(&str, &str)]) -> Harness {
    Harness::start(TOKENS, files).await
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

/// A TLS connection to the xDS port that trusts the mesh root and offers `h2`.
pub async fn tls_client(
    running: &istiod_lite::app::Running,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in mesh_core::tls::parse_certs(&running.root_cert_pem, "root").unwrap() {
        roots.add(cert).unwrap();
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(mesh_core::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(running.xds_addr)
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the TLS handshake itself succeeds")
}
