//! The ztunnel xDS client against a real istiod-lite over TLS: initial state, changes, and a
//! control plane that goes away and comes back.

mod support;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use mesh_core::control_plane::ControlPlane;
use mesh_core::xds::ClientStatus;
use mesh_test_support::eventually_async;
use support::{control_plane_dir, WAIT};
use tokio::sync::watch;
use ztunnel::state::State;
use ztunnel::xds::{run, XdsConfig};

const TOKEN: &str = "node1-token-0123456789abcdef";

const CONFIG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-client, namespace: demo}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]}]
"#;

fn pod(name: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{app: web}}}}\nspec: {{nodeName: node1, serviceAccountName: web}}\nstatus: {{podIP: {ip}}}\n"
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_istiod_and_survives_its_restart() {
    let web1 = pod("web-1", "10.1.0.5");
    let dir = control_plane_dir(TOKEN, &[("base.yaml", CONFIG), ("web-1.yaml", &web1)]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let running = dir.start_on(port).await;

    let state = Arc::new(RwLock::new(State::default()));
    let (status_tx, mut status) = watch::channel(ClientStatus::default());
    let config = XdsConfig {
        control_plane: ControlPlane {
            address: format!("https://localhost:{port}"),
            server_name: "localhost".into(),
            root_pem: running.root_cert_pem.clone(),
            token: TOKEN.into(),
        },
        node_name: "node1".into(),
    };
    let client = tokio::spawn(run(config, state.clone(), status_tx));
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.ready))
        .await
        .expect("ready in time")
        .unwrap();
    {
        let st = state.read().unwrap();
        let w = st.workload_by_ip("", ip("10.1.0.5")).expect("the pod");
        assert!(w.hbone);
        assert_eq!(
            w.identity.to_string(),
            "spiffe://cluster.local/ns/demo/sa/web"
        );
        let svc = st
            .service_by_vip("", ip("10.96.0.10"))
            .expect("the service");
        assert_eq!(st.endpoints(&svc, 80).len(), 1);
        let policies = st.policies_for(&w);
        assert_eq!(policies.len(), 1);
        assert_eq!(policies[0].key, "demo/only-client");
    }

    // A new pod arrives.
    std::fs::write(
        dir.path().join("config/web-2.yaml"),
        pod("web-2", "10.1.0.6"),
    )
    .unwrap();
    eventually_async("web-2", WAIT, || async {
        state.read().unwrap().workload_by_ip("", ip("10.1.0.6"))
    })
    .await;

    // The control plane goes away: the state stays.
    running.shutdown().await;
    std::fs::remove_file(dir.path().join("config/web-2.yaml")).unwrap();
    tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| !s.connected))
        .await
        .expect("the client notices the loss")
        .unwrap();
    assert!(state
        .read()
        .unwrap()
        .workload_by_ip("", ip("10.1.0.5"))
        .is_some());
    assert!(state
        .read()
        .unwrap()
        .workload_by_ip("", ip("10.1.0.6"))
        .is_some());

    // It comes back (same CA, same port) with web-2 gone: the client reconnects and removes it.
    let _again = dir.start_on(port).await;
    eventually_async("web-2's removal after the reconnect", WAIT, || async {
        state
            .read()
            .unwrap()
            .workload_by_ip("", ip("10.1.0.6"))
            .is_none()
            .then_some(())
    })
    .await;
    assert!(state
        .read()
        .unwrap()
        .workload_by_ip("", ip("10.1.0.5"))
        .is_some());
    assert_eq!(status.borrow().sessions, 2);
    client.abort();
}
