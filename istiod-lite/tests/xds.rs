//! The delta ADS server end to end: a real istiod-lite over TLS, a tonic client, a config
//! directory edited by the test.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mesh_core::proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
use mesh_core::proto::google::rpc::Status as RpcStatus;
use mesh_core::proto::istio::workload::{address, Address};
use mesh_core::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use mesh_test_support::eventually_async;
use prost::Message;

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports: [{port: 80, targetPort: 8080}]
"#;

fn pod(name: &str, ip: &str, version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: demo
  labels: {{app: web, version: {version}}}
spec:
  nodeName: node1
status:
  podIP: {ip}
"#
    )
}

fn names(
    resp: &mesh_core::proto::envoy::service::discovery::v3::DeltaDiscoveryResponse,
) -> Vec<String> {
    let mut n: Vec<String> = resp.resources.iter().map(|r| r.name.clone()).collect();
    n.sort();
    n
}

const WEB1: &str = "Kubernetes//Pod/demo/web-1";
const WEB2: &str = "Kubernetes//Pod/demo/web-2";
const WEB_SVC: &str = "demo/web.demo.svc.cluster.local";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_state_then_deltas_for_edits_and_deletes() {
    let h = start_harness(&[
        ("ns.yaml", NAMESPACE),
        ("web-1.yaml", &pod("web-1", "10.1.0.5", "v1")),
        ("web-2.yaml", &pod("web-2", "10.1.0.6", "v1")),
    ])
    .await;
    let mut ads = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();

    // Initial state, per type, even when empty.
    ads.subscribe(ADDRESS_TYPE_URL).await;
    let initial = ads.next(Duration::from_secs(5)).await;
    assert_eq!(initial.type_url, ADDRESS_TYPE_URL);
    assert_eq!(
        names(&initial),
        vec![WEB1.to_string(), WEB2.to_string(), WEB_SVC.to_string()]
    );
    let web1 = initial.resources.iter().find(|r| r.name == WEB1).unwrap();
    let any = web1.resource.as_ref().unwrap();
    assert_eq!(any.type_url, ADDRESS_TYPE_URL);
    let decoded = Address::decode(&any.value[..]).unwrap();
    match decoded.r#type.unwrap() {
        address::Type::Workload(w) => {
            assert_eq!(w.addresses, vec![vec![10, 1, 0, 5]]);
            assert!(w.services.contains_key(WEB_SVC));
        }
        other => panic!("expected a workload, got {other:?}"),
    }
    ads.ack(&initial).await;
    ads.subscribe(AUTHORIZATION_TYPE_URL).await;
    let auth = ads.next(Duration::from_secs(5)).await;
    assert_eq!(auth.type_url, AUTHORIZATION_TYPE_URL);
    assert!(auth.resources.is_empty(), "no policies yet");
    ads.ack(&auth).await;

    // Editing one pod delivers a delta with just that workload, within 1 s.
    let t0 = Instant::now();
    h.write("web-1.yaml", &pod("web-1", "10.1.0.5", "v2"));
    let delta = ads.next(Duration::from_secs(5)).await;
    let elapsed = t0.elapsed();
    assert_eq!(delta.type_url, ADDRESS_TYPE_URL);
    assert_eq!(names(&delta), vec![WEB1.to_string()]);
    assert!(delta.removed_resources.is_empty());
    assert!(elapsed < Duration::from_secs(1), "delta took {elapsed:?}");
    ads.ack(&delta).await;

    // Deleting a pod delivers its removal.
    std::fs::remove_file(h.config_dir().join("web-2.yaml")).unwrap();
    let removal = ads.next(Duration::from_secs(5)).await;
    assert_eq!(removal.removed_resources, vec![WEB2.to_string()]);
    assert!(removal.resources.is_empty());
    ads.ack(&removal).await;

    // A policy arrives on the authorization type only.
    h.write(
        "policy.yaml",
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-bad, namespace: demo}
spec:
  action: DENY
  rules: [{from: [{source: {namespaces: [bad]}}]}]
"#,
    );
    let p = ads.next(Duration::from_secs(5)).await;
    assert_eq!(p.type_url, AUTHORIZATION_TYPE_URL);
    assert_eq!(names(&p), vec!["demo/deny-bad".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nack_is_counted_and_the_stream_keeps_working() {
    let h = start_harness(&[
        ("ns.yaml", NAMESPACE),
        ("web-1.yaml", &pod("web-1", "10.1.0.5", "v1")),
    ])
    .await;
    let mut ads = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    ads.subscribe(ADDRESS_TYPE_URL).await;
    let initial = ads.next(Duration::from_secs(5)).await;
    ads.tx
        .send(DeltaDiscoveryRequest {
            type_url: initial.type_url.clone(),
            response_nonce: initial.nonce.clone(),
            error_detail: Some(RpcStatus {
                code: 3,
                message: format!("{WEB1}: unknown enum: unsupported tunnel protocol"),
                details: vec![],
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let rejects = eventually_async("the NACK to be counted", Duration::from_secs(5), || async {
        let (_, metrics) = h.http_get("/metrics").await;
        metrics
            .lines()
            .find(|l| l.starts_with("pilot_total_xds_rejects{") && l.contains(ADDRESS_TYPE_URL))
            .map(|l| l.to_string())
    })
    .await;
    assert!(rejects.ends_with(" 1"), "{rejects}");
    // The stream still delivers the next change.
    h.write("web-1.yaml", &pod("web-1", "10.1.0.5", "v3"));
    let delta = ads.next(Duration::from_secs(5)).await;
    assert_eq!(names(&delta), vec![WEB1.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_document_is_reported_and_the_rest_applies() {
    let h = start_harness(&[("ns.yaml", NAMESPACE)]).await;
    let mut ads = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    ads.subscribe(ADDRESS_TYPE_URL).await;
    let initial = ads.next(Duration::from_secs(5)).await;
    assert_eq!(names(&initial), vec![WEB_SVC.to_string()]);
    ads.ack(&initial).await;

    let mixed = format!(
        "{}---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\n  namespace: demo\nstatus:\n  podIP: 10.1.0.300\n",
        pod("web-1", "10.1.0.5", "v1")
    );
    h.write("mixed.yaml", &mixed);
    let delta = ads.next(Duration::from_secs(5)).await;
    assert_eq!(
        names(&delta),
        vec![WEB1.to_string()],
        "the good pod applies"
    );

    let (code, body) = h.http_get("/debug/config").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 1, "{body}");
    let r = &rejected[0];
    assert!(r["source"].as_str().unwrap().ends_with("mixed.yaml"));
    assert_eq!(r["kind"], "Pod");
    assert_eq!(r["namespace"], "demo");
    assert_eq!(r["name"], "broken");
    assert!(
        r["reason"].as_str().unwrap().contains("10.1.0.300"),
        "{body}"
    );
    let (_, metrics) = h.http_get("/metrics").await;
    assert!(
        metrics.contains("istiod_lite_config_rejected_documents 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_known_versions_sends_only_differences() {
    let h = start_harness(&[
        ("ns.yaml", NAMESPACE),
        ("web-1.yaml", &pod("web-1", "10.1.0.5", "v1")),
        ("web-2.yaml", &pod("web-2", "10.1.0.6", "v1")),
    ])
    .await;
    let mut first = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    first.subscribe(ADDRESS_TYPE_URL).await;
    let initial = first.next(Duration::from_secs(5)).await;
    let versions: std::collections::HashMap<String, String> = initial
        .resources
        .iter()
        .map(|r| (r.name.clone(), r.version.clone()))
        .collect();
    drop(first);

    h.write("web-1.yaml", &pod("web-1", "10.1.0.5", "v9"));
    std::fs::remove_file(h.config_dir().join("web-2.yaml")).unwrap();
    // Wait until the server has both changes before reconnecting.
    eventually_async(
        "the edits to be applied",
        Duration::from_secs(5),
        || async {
            let snap = h.running.store.snapshot();
            let edited = snap
                .pods
                .get(&("demo".to_string(), "web-1".to_string()))
                .is_some_and(|p| {
                    p.metadata.labels.get("version").map(String::as_str) == Some("v9")
                });
            (edited && snap.pods.len() == 1 && h.running.xds.borrow().generation == snap.generation)
                .then_some(())
        },
    )
    .await;

    let mut second = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    second
        .tx
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            initial_resource_versions: versions,
            ..Default::default()
        })
        .await
        .unwrap();
    let resp = second.next(Duration::from_secs(5)).await;
    assert_eq!(names(&resp), vec![WEB1.to_string()]);
    assert_eq!(resp.removed_resources, vec![WEB2.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_token_are_refused() {
    let h = start_harness(&[("ns.yaml", NAMESPACE)]).await;
    let err = AdsStream::open(h.channel().await, "not-a-known-token-at-all")
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_written_and_served_and_readiness_reports() {
    let h = start_harness(&[
        ("ns.yaml", NAMESPACE),
        (
            "policy.yaml",
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: get-only, namespace: demo, generation: 3}
spec:
  rules: [{to: [{operation: {methods: [GET]}}]}]
"#,
        ),
    ])
    .await;
    let (code, body) = h.http_get("/ready").await;
    assert_eq!((code, body.as_str()), (200, "ready\n"));

    let path = h
        .state_dir()
        .join("status/authorizationpolicy/demo/get-only.yaml");
    let text = eventually_async("the status file", Duration::from_secs(5), || async {
        std::fs::read_to_string(&path).ok()
    })
    .await;
    let v: serde_json::Value = serde_norway::from_str(&text).unwrap();
    let c = &v["status"]["conditions"][0];
    assert_eq!(c["type"], "ZtunnelAccepted");
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "UnsupportedValue");
    assert_eq!(c["observedGeneration"], 3);
    assert!(c["lastTransitionTime"].as_str().unwrap().ends_with('Z'));

    let (_, body) = h.http_get("/debug/status").await;
    assert!(body.contains("\"ZtunnelAccepted\""), "{body}");

    // Deleting the policy removes its status file.
    std::fs::remove_file(h.config_dir().join("policy.yaml")).unwrap();
    eventually_async("the status file to go", Duration::from_secs(5), || async {
        (!path.exists()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_subscriptions_get_named_resources_and_their_changes_only() {
    let h = start_harness(&[
        ("ns.yaml", NAMESPACE),
        ("web-1.yaml", &pod("web-1", "10.1.0.5", "v1")),
        ("web-2.yaml", &pod("web-2", "10.1.0.6", "v1")),
    ])
    .await;
    let mut ads = AdsStream::open(h.channel().await, NODE1_TOKEN)
        .await
        .unwrap();
    // ztunnel's on-demand mode: subscribe to "*" and unsubscribe it: nothing yet.
    ads.tx
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            resource_names_subscribe: vec!["*".into()],
            resource_names_unsubscribe: vec!["*".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let initial = ads.next(Duration::from_secs(5)).await;
    assert!(initial.resources.is_empty() && initial.removed_resources.is_empty());

    // Look up an IP (an alias) and an unknown UID, on the same request as the ACK.
    ads.tx
        .send(DeltaDiscoveryRequest {
            type_url: ADDRESS_TYPE_URL.into(),
            response_nonce: initial.nonce.clone(),
            resource_names_subscribe: vec!["/10.1.0.5".into(), "Kubernetes//Pod/demo/nope".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let found = ads.next(Duration::from_secs(5)).await;
    assert_eq!(names(&found), vec![WEB1.to_string()]);
    let mut removed = found.removed_resources.clone();
    removed.sort();
    // The alias and the unknown name are both released.
    assert_eq!(
        removed,
        vec![
            "/10.1.0.5".to_string(),
            "Kubernetes//Pod/demo/nope".to_string()
        ]
    );
    ads.ack(&found).await;

    // A change to an unsubscribed pod is not sent; a change to the subscribed one is.
    h.write("web-2.yaml", &pod("web-2", "10.1.0.6", "v2"));
    eventually_async(
        "web-2's edit to be served",
        Duration::from_secs(5),
        || async {
            let snap = h.running.store.snapshot();
            let edited = snap
                .pods
                .get(&("demo".to_string(), "web-2".to_string()))
                .is_some_and(|p| {
                    p.metadata.labels.get("version").map(String::as_str) == Some("v2")
                });
            (edited && h.running.xds.borrow().generation == snap.generation).then_some(())
        },
    )
    .await;
    h.write("web-1.yaml", &pod("web-1", "10.1.0.5", "v2"));
    let next = ads.next(Duration::from_secs(5)).await;
    assert_eq!(names(&next), vec![WEB1.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_ends_its_stream() {
    let h = start_harness(&[("ns.yaml", NAMESPACE)]).await;
    let mut ads = AdsStream::open(h.channel().await, NODE2_TOKEN)
        .await
        .unwrap();
    ads.subscribe(ADDRESS_TYPE_URL).await;
    let initial = ads.next(Duration::from_secs(5)).await;
    // The operator removes node2's token.
    std::fs::write(
        h.state_dir().join("tokens.yaml"),
        format!("tokens:\n- token: {NODE1_TOKEN}\n  node: node1\n"),
    )
    .unwrap();
    ads.ack(&initial).await;
    let end = tokio::time::timeout(Duration::from_secs(5), ads.rx.message())
        .await
        .expect("the stream must end");
    let status = end.expect_err("the stream must end with an error");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_files_of_objects_deleted_while_down_are_swept_at_start() {
    let h = start_harness(&[("ns.yaml", NAMESPACE)]).await;
    let stale = h
        .state_dir()
        .join("status/authorizationpolicy/demo/gone.yaml");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, "status: {}\n").unwrap();
    let _again = h.dir.start().await;
    eventually_async(
        "the stale status file to be swept",
        Duration::from_secs(5),
        || async { (!stale.exists()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_version_is_reported_in_the_objects_status() {
    const GOOD: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-web, namespace: demo}
spec:
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/web"]}}]}]
"#;
    let h = start_harness(&[("ns.yaml", NAMESPACE), ("policy.yaml", GOOD)]).await;
    let path = h
        .state_dir()
        .join("status/authorizationpolicy/demo/from-web.yaml");
    let read_conditions = |wanted: &'static str| {
        let path = path.clone();
        async move {
            let text = std::fs::read_to_string(&path).ok()?;
            let v: serde_json::Value = serde_norway::from_str(&text).ok()?;
            let conditions = v["status"]["conditions"].as_array()?.clone();
            let has = conditions.iter().any(|c| c["type"] == "Validated");
            (has == (wanted == "refused")).then_some(conditions)
        }
    };
    eventually_async("the first status", Duration::from_secs(5), || {
        read_conditions("valid")
    })
    .await;

    // A typo (`principal`) must not turn the rule into an empty one that allows everyone.
    h.write("policy.yaml", &GOOD.replace("principals:", "principal:"));
    let conditions = eventually_async("Validated=False", Duration::from_secs(5), || {
        read_conditions("refused")
    })
    .await;
    let c = conditions
        .iter()
        .find(|c| c["type"] == "Validated")
        .unwrap();
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Invalid"))
    );
    let message = c["message"].as_str().unwrap();
    for part in [
        "policy.yaml, document 1",
        "principal",
        "the last good version stays in force",
    ] {
        assert!(message.contains(part), "{part:?} not in {message:?}");
    }
    // The last good version is still the one enforced.
    let snap = h.running.store.snapshot();
    let kept = &snap.authorization_policies[&("demo".to_string(), "from-web".to_string())];
    let rules = serde_json::to_string(&kept.spec).unwrap();
    assert!(rules.contains("cluster.local/ns/demo/sa/web"), "{rules}");

    // Fixed again: the condition goes.
    h.write("policy.yaml", GOOD);
    eventually_async("Validated to go", Duration::from_secs(5), || {
        read_conditions("valid")
    })
    .await;

    // A new object refused outright still gets a status that says so.
    h.write(
        "other.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {name: typo, namespace: demo}\nspec: {selectr: {}}\n",
    );
    let other = h
        .state_dir()
        .join("status/authorizationpolicy/demo/typo.yaml");
    let text = eventually_async(
        "the refused object's status",
        Duration::from_secs(5),
        || async { std::fs::read_to_string(&other).ok() },
    )
    .await;
    assert!(
        text.contains("Validated") && text.contains("no version of this object is applied"),
        "{text}"
    );
}
