//! A mesh-echo server on an ephemeral 127.0.0.1 port, shared by the tests in this directory.
//! The listener is bound before `start` returns, so the port accepts connections at once and no
//! test waits for readiness.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The hostname every test server reports, so tests can check the field without knowing the host.
pub const HOSTNAME: &str = "test-host";

/// Serves `echo-v1` until the test's runtime ends.
pub async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding an ephemeral port");
    let addr = listener.local_addr().expect("bound address");
    let config = mesh_echo::Config::new("echo", "v1")
        .expect("valid name")
        .with_hostname(HOSTNAME);
    tokio::spawn(mesh_echo::serve(listener, config, std::future::pending()));
    addr
}
