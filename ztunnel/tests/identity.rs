//! Certificates from a real istiod-lite CA: issuance by impersonation, refusal for a pod on
//! another node, and renewal at half-life with the old certificate serving meanwhile.

mod support;

use std::time::{Duration, SystemTime};

use mesh_core::control_plane::ControlPlane;
use mesh_core::identity::manager::{renew_at, CaConfig, IdentityManager, Requester};
use mesh_core::identity::Identity;
use support::control_plane_dir;

const TOKEN: &str = "node1-token-0123456789abcdef";

const CONFIG: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo}
spec: {nodeName: node1, serviceAccountName: web}
status: {podIP: 10.1.0.5}
---
apiVersion: v1
kind: Pod
metadata: {name: db-1, namespace: demo}
spec: {nodeName: node2, serviceAccountName: db}
status: {podIP: 10.1.0.9}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_issued_refused_and_renewed() {
    let dir = control_plane_dir(TOKEN, &[("pods.yaml", CONFIG)]);
    let running = dir.start().await;
    let manager = IdentityManager::new(CaConfig {
        control_plane: ControlPlane {
            address: format!("https://localhost:{}", running.xds_addr.port()),
            server_name: "localhost".into(),
            root_pem: running.root_cert_pem.clone(),
            token: TOKEN.into(),
        },
        requester: Requester::Node,
        // Short, so renewal (at half-life) happens during the test.
        ttl: Duration::from_secs(4),
    });

    let web: Identity = "spiffe://cluster.local/ns/demo/sa/web".parse().unwrap();
    let first = manager.certificate(&web).await.unwrap();
    let received = SystemTime::now();
    assert_eq!(first.identity, web);
    assert_eq!(
        first.chain.len(),
        1,
        "the leaf; the root is the trust bundle"
    );
    assert_eq!(first.roots.len(), 1);
    // Asked again, the same certificate (no second CSR).
    let again = manager.certificate(&web).await.unwrap();
    assert_eq!(again.chain[0], first.chain[0]);

    // db runs on node2: node1's ztunnel may not have its certificate.
    let db: Identity = "spiffe://cluster.local/ns/demo/sa/db".parse().unwrap();
    let err = manager.certificate(&db).await.unwrap_err().to_string();
    assert!(err.contains("PermissionDenied"), "{err}");

    // Renewal: before half-life the old one serves; after it, a new one arrives.
    let due = renew_at(&first, received);
    assert!(
        due > received + Duration::from_secs(1),
        "half of the 4 s left"
    );
    let deadline = due + Duration::from_secs(5);
    loop {
        let now = manager.certificate(&web).await.unwrap();
        if now.chain[0] != first.chain[0] {
            assert!(now.not_after > first.not_after);
            assert!(
                SystemTime::now() + Duration::from_millis(200) >= due,
                "renewed before half-life"
            );
            break;
        }
        assert!(
            SystemTime::now() < deadline,
            "no renewal by half-life + 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(manager.held().len(), 1);
    manager.forget(&web);
    assert!(manager.held().is_empty());
}
