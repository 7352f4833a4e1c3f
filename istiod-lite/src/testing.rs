//! An in-process istiod-lite for tests, of this crate and of its clients (ztunnel): a temporary
//! directory with the `config/` the test writes and the `state/` holding the token file and the
//! CA, the server started on loopback with ephemeral ports, and the ways a test reaches it (a TLS
//! gRPC channel trusting its root, a GET on its monitoring port).
//!
//! Only built for tests (`cfg(test)` or the `testing` feature, which ztunnel's and this crate's
//! integration tests turn on). Failures panic: this is a test harness, and the panic says what
//! could not be set up.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use mesh_core::control_plane::ControlPlane;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use crate::app::{start, Running};
use crate::config::Config;

/// One entry of the token file (`state/tokens.yaml`): who presents `token`.
#[derive(Clone, Copy, Debug)]
pub enum Token<'a> {
    /// The ztunnel of `node`.
    Node { token: &'a str, node: &'a str },
    /// A workload (e.g. a waypoint) with its own identity.
    Workload {
        token: &'a str,
        namespace: &'a str,
        service_account: &'a str,
    },
}

/// The directories an istiod-lite of a test reads, removed when this drops.
#[derive(Debug)]
pub struct ControlPlaneDir {
    dir: TempDir,
}

impl ControlPlaneDir {
    /// `config/` holding `files` (name, YAML) and `state/tokens.yaml` naming `tokens`.
    pub fn new(tokens: &[Token], files: &[(&str, &str)]) -> ControlPlaneDir {
        let dir = ControlPlaneDir {
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        for sub in [dir.config_dir(), dir.state_dir()] {
            std::fs::create_dir_all(&sub).unwrap_or_else(|e| panic!("{}: {e}", sub.display()));
        }
        let tokens_file = dir.state_dir().join("tokens.yaml");
        std::fs::write(&tokens_file, tokens_yaml(tokens))
            .unwrap_or_else(|e| panic!("{}: {e}", tokens_file.display()));
        for (name, text) in files {
            let path = dir.config_dir().join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        dir
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.path().join("config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    /// Writes `config/<name>` through a rename, so the watcher never reads half a file.
    pub fn write(&self, name: &str, text: &str) {
        write_atomic(&self.config_dir().join(name), text);
    }

    /// [`Config::for_test`] on these directories.
    pub fn config(&self) -> Config {
        Config::for_test(self.config_dir(), self.state_dir())
    }

    /// Starts an istiod-lite on these directories (ephemeral ports). Another one started on the
    /// same directories later reuses the CA in `state/`.
    pub async fn start(&self) -> Running {
        start(self.config()).await.expect("istiod-lite starts")
    }

    /// [`ControlPlaneDir::start`] with xDS on `127.0.0.1:<xds_port>`: for a test that restarts
    /// the control plane where its clients expect it.
    pub async fn start_on(&self, xds_port: u16) -> Running {
        let mut config = self.config();
        config.xds_addr = SocketAddr::from(([127, 0, 0, 1], xds_port));
        start(config).await.expect("istiod-lite starts")
    }
}

/// A running istiod-lite and the directories it reads.
pub struct Harness {
    pub dir: ControlPlaneDir,
    pub running: Running,
}

impl Harness {
    /// [`ControlPlaneDir::new`], then [`ControlPlaneDir::start`].
    pub async fn start(tokens: &[Token<'_>], files: &[(&str, &str)]) -> Harness {
        let dir = ControlPlaneDir::new(tokens, files);
        let running = dir.start().await;
        Harness { dir, running }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.config_dir()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.state_dir()
    }

    /// See [`ControlPlaneDir::write`].
    pub fn write(&self, name: &str, text: &str) {
        self.dir.write(name, text);
    }

    /// How a proxy holding `token` reaches this control plane (server name `localhost`).
    pub fn control_plane(&self, token: &str) -> ControlPlane {
        ControlPlane {
            address: format!("https://localhost:{}", self.running.xds_addr.port()),
            server_name: "localhost".into(),
            root_pem: self.running.root_cert_pem.clone(),
            token: token.into(),
        }
    }

    /// A TLS gRPC channel to the xDS/CA port that trusts the mesh root, as a client in the mesh
    /// would connect.
    pub async fn channel(&self) -> Channel {
        self.control_plane("")
            .connect()
            .await
            .expect("connect to istiod-lite")
    }

    /// See [`http_get`]; on the monitoring port.
    pub async fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.running.monitoring_addr, path).await
    }
}

/// Writes `path` through a rename, so a watcher never reads half a file.
pub fn write_atomic(path: &Path, text: &str) {
    mesh_core::cluster_dir::write_atomic(path, text.as_bytes())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A minimal HTTP/1.1 GET: the status code (0 if there is none) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let text = String::from_utf8_lossy(&buf);
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

/// The token file's text for `tokens`.
fn tokens_yaml(tokens: &[Token]) -> String {
    let mut yaml = String::from("tokens:\n");
    for t in tokens {
        // Writing to a String cannot fail.
        let _ = match t {
            Token::Node { token, node } => writeln!(yaml, "- token: {token}\n  node: {node}"),
            Token::Workload {
                token,
                namespace,
                service_account,
            } => writeln!(
                yaml,
                "- token: {token}\n  namespace: {namespace}\n  serviceAccount: {service_account}"
            ),
        };
    }
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_names_nodes_and_workloads() {
        let yaml = tokens_yaml(&[
            Token::Node {
                token: "n1",
                node: "node1",
            },
            Token::Workload {
                token: "w",
                namespace: "demo",
                service_account: "waypoint",
            },
        ]);
        assert_eq!(
            yaml,
            "tokens:\n- token: n1\n  node: node1\n- token: w\n  namespace: demo\n  serviceAccount: waypoint\n"
        );
    }

    #[tokio::test]
    async fn a_harness_serves_its_config_and_restarts_on_the_same_ca() {
        let h = Harness::start(&[], &[]).await;
        let (code, _) = h.http_get("/ready").await;
        assert_eq!(code, 200);
        let again = h.dir.start().await;
        assert_eq!(again.root_cert_pem, h.running.root_cert_pem);
    }
}
