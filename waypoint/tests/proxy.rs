//! The waypoint end to end on loopback, every part real: istiod-lite (config directory, xDS,
//! CA) in process, the waypoint started as its binary starts, a stand-in ztunnel per pod (the
//! real HBONE server of `mesh-core` with the pod's certificate from the CA, splicing to the
//! pod's app), mesh-echo as the apps, and a client that does what a client's ztunnel does:
//! mTLS to the waypoint's 15008 as the client pod's identity, CONNECT to the service VIP, then
//! HTTP/1.1 or HTTP/2 inside the tunnel.
//!
//! Pods are 127.0.0.x addresses (all loopback), so the waypoint dials `<pod IP>:<port>` as it
//! would in a cluster.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use istiod_lite::testing::{Harness, Token};
use mesh_core::hbone::{self, HboneError};
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::identity::Identity;
use mesh_test_support::poll::eventually_async;
use tokio::net::{TcpListener, TcpStream};
use waypoint::state::State;

const WAYPOINT_TOKEN: &str = "waypoint-token-0123456789";
const NODE_TOKEN: &str = "node1-token-0123456789";
const HOST: &str = "web.demo.svc.cluster.local";

fn pod(name: &str, ip: &str, sa: &str, app: &str, version: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: demo, labels: {{app: {app}, version: {version}}}}}\n\
spec: {{nodeName: node1, serviceAccountName: {sa}}}\nstatus: {{podIP: {ip}, conditions: [{{type: Ready, status: 'True'}}]}}\n"
    )
}

fn service(name: &str, vip: &str, app: &str, port: u16, target: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: demo}}\n\
spec: {{clusterIP: {vip}, selector: {{app: {app}}}, ports: [{{name: http, port: {port}, targetPort: {target}}}]}}\n"
    )
}

const NAMESPACE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels: {istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: demo}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
"#;

fn identity(sa: &str) -> Identity {
    Identity::new("cluster.local", "demo", sa)
}

/// What a stand-in ztunnel saw: (peer identity, CONNECT authority) per tunnel, and how many
/// HBONE connections it accepted.
#[derive(Default)]
struct Seen {
    tunnels: Vec<(Option<Identity>, String)>,
    connections: usize,
}

/// A pod's ztunnel: HBONE on `<ip>:<port>` with the pod's certificate; each tunnel is spliced
/// to the authority, which must be this pod.
async fn stand_in_ztunnel(
    ids: Arc<IdentityManager>,
    pod: Identity,
    listener: TcpListener,
    seen: Arc<Mutex<Seen>>,
) {
    let ip = listener.local_addr().unwrap().ip();
    let cert = ids.certificate(&pod).await.expect("pod certificate");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config().unwrap()));
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        seen.lock().unwrap().connections += 1;
        let (acceptor, seen) = (acceptor.clone(), seen.clone());
        tokio::spawn(async move {
            let _ = hbone::serve(tcp, &acceptor, Default::default(), move |req| {
                let seen = seen.clone();
                async move {
                    seen.lock()
                        .unwrap()
                        .tunnels
                        .push((req.peer.clone(), req.authority.clone()));
                    let addr: SocketAddr =
                        req.authority.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
                    if addr.ip() != ip {
                        return Err(StatusCode::BAD_REQUEST);
                    }
                    TcpStream::connect(addr)
                        .await
                        .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
                }
            })
            .await;
        });
    }
}

struct Mesh {
    istiod: Harness,
    waypoint: waypoint::app::Running,
    client_ids: Arc<IdentityManager>,
    seen: Vec<Arc<Mutex<Seen>>>,
    net: u8,
    _dir: tempfile::TempDir,
}

impl Mesh {
    /// The mesh of one test: its pods are `127.<net>.0.x` and its VIPs `127.<net>.10.x`, so
    /// tests running at once do not share addresses.
    async fn start(net: u8) -> Mesh {
        let ip = |x: u8| format!("127.{net}.0.{x}");
        let vip = |x: u8| format!("127.{net}.10.{x}");
        let files = [
            ("namespace.yaml".to_string(), NAMESPACE.to_string()),
            (
                "web.yaml".to_string(),
                service("web", &vip(1), "web", 80, 8080),
            ),
            (
                "empty.yaml".to_string(),
                service("empty", &vip(2), "nothing", 80, 8080),
            ),
            (
                "tcp.yaml".to_string(),
                format!(
                    "apiVersion: v1\nkind: Service\nmetadata: {{name: tcp-echo, namespace: demo}}\n\
spec: {{clusterIP: {}, selector: {{app: web}}, ports: [{{name: tcp, port: 9000, targetPort: 9000}}]}}\n",
                    vip(4)
                ),
            ),
            (
                "broken.yaml".to_string(),
                service("broken", &vip(3), "broken", 80, 8080),
            ),
            (
                "web-1.yaml".to_string(),
                pod("web-1", &ip(2), "web", "web", "v1"),
            ),
            (
                "web-2.yaml".to_string(),
                pod("web-2", &ip(3), "web", "web", "v2"),
            ),
            // No ztunnel listens for this one.
            (
                "broken-1.yaml".to_string(),
                pod("broken-1", &ip(5), "web", "broken", "v1"),
            ),
            (
                "client.yaml".to_string(),
                pod("client-1", &ip(4), "client", "client", "v1"),
            ),
        ];
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let istiod = Harness::start(
            &[
                Token::Node {
                    token: NODE_TOKEN,
                    node: "node1",
                },
                Token::Workload {
                    token: WAYPOINT_TOKEN,
                    namespace: "demo",
                    service_account: "waypoint",
                },
            ],
            &files,
        )
        .await;
        let node_ids = IdentityManager::new(CaConfig {
            control_plane: istiod.control_plane(NODE_TOKEN),
            requester: Requester::Node,
            ttl: Duration::from_secs(3600),
        });

        // The pods' ztunnels and apps. One HBONE port for all, as every ztunnel uses 15008.
        let first = TcpListener::bind((ip(2), 0)).await.unwrap();
        let hbone_port = first.local_addr().unwrap().port();
        let second = TcpListener::bind((ip(3), hbone_port)).await.unwrap();
        let mut seen = Vec::new();
        for (listener, ip, version) in [(first, ip(2), "v1"), (second, ip(3), "v2")] {
            let s = Arc::new(Mutex::new(Seen::default()));
            seen.push(s.clone());
            tokio::spawn(stand_in_ztunnel(
                node_ids.clone(),
                identity("web"),
                listener,
                s,
            ));
            let tcp = TcpListener::bind((ip.as_str(), 9000)).await.unwrap();
            tokio::spawn(mesh_echo::tcp_echo::serve(tcp, std::future::pending()));
            let app = TcpListener::bind((ip.as_str(), 8080)).await.unwrap();
            let config = mesh_echo::Config::new("web", version).unwrap();
            tokio::spawn(mesh_echo::serve(app, config, std::future::pending()));
        }

        let dir = tempfile::tempdir().unwrap();
        let (root, token) = (dir.path().join("root.pem"), dir.path().join("token"));
        std::fs::write(&root, &istiod.running.root_cert_pem).unwrap();
        std::fs::write(&token, WAYPOINT_TOKEN).unwrap();
        let args = [
            "waypoint".to_string(),
            format!(
                "--xds-address=https://localhost:{}",
                istiod.running.xds_addr.port()
            ),
            "--xds-server-name=localhost".into(),
            format!("--root-cert={}", root.display()),
            format!("--token-file={}", token.display()),
            "--gateway=demo/waypoint".into(),
            "--hbone-addr=127.0.0.1:0".into(),
            "--admin-addr=127.0.0.1:0".into(),
            "--metrics-addr=127.0.0.1:0".into(),
            "--readiness-addr=127.0.0.1:0".into(),
            format!("--upstream-hbone-port={hbone_port}"),
        ];
        let config = <waypoint::app::Config as clap::Parser>::parse_from(args);
        let waypoint = waypoint::app::start(config).await.expect("waypoint starts");
        let ready = waypoint.readiness_addr;
        eventually_async(
            "the waypoint to be ready",
            Duration::from_secs(20),
            || async move {
                istiod_lite::testing::http_get(ready, "/healthz/ready")
                    .await
                    .0
                    == 200
            },
        )
        .await;
        Mesh {
            istiod,
            waypoint,
            client_ids: node_ids,
            seen,
            net,
            _dir: dir,
        }
    }

    fn vip(&self, x: u8) -> String {
        format!("127.{}.10.{x}:80", self.net)
    }

    fn pod_ip(&self, x: u8) -> String {
        format!("127.{}.0.{x}", self.net)
    }

    /// An HBONE tunnel to `authority` through the waypoint, as client-1's ztunnel opens it.
    async fn tunnel(&self, authority: &str) -> Result<hbone::H2Stream, HboneError> {
        let cert = self
            .client_ids
            .certificate(&identity("client"))
            .await
            .unwrap();
        let config = cert.client_config(vec![identity("waypoint")]).unwrap();
        let tls = hbone::connect_tls(self.waypoint.hbone_addr, Arc::new(config)).await?;
        let conn = hbone::Connection::open(tls).await?;
        conn.connect(authority, HeaderMap::new()).await
    }

    async fn http1(
        &self,
        authority: &str,
    ) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
        let stream = self.tunnel(authority).await.expect("tunnel");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    /// Polls the waypoint's state until `check` holds (10 s at most).
    async fn wait_for_state(&self, what: &str, check: impl Fn(&State) -> bool) {
        let state = self.waypoint.state.clone();
        eventually_async(what, Duration::from_secs(10), || {
            let ok = check(&state.read().unwrap());
            async move { ok }
        })
        .await;
    }

    async fn metrics(&self) -> String {
        istiod_lite::testing::http_get(self.waypoint.metrics_addr, "/metrics")
            .await
            .1
    }
}

/// One request on an HTTP/1.1 connection, once it is ready for it.
async fn send1(
    send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> http::Response<hyper::body::Incoming> {
    send.ready().await.expect("the connection stays open");
    send.send_request(get(path)).await.expect("a response")
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .uri(path)
        .header("host", HOST)
        .body(Empty::new())
        .unwrap()
}

async fn body_json(resp: http::Response<hyper::body::Incoming>) -> serde_json::Value {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

async fn body_text(resp: http::Response<hyper::body::Incoming>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_are_balanced_over_hbone_with_the_clients_identity_forwarded() {
    let mesh = Mesh::start(1).await;
    let mut send = mesh.http1(&mesh.vip(1)).await;
    let mut versions = BTreeSet::new();
    for i in 0..40 {
        let resp = send1(&mut send, &format!("/hello?i={i}")).await;
        assert_eq!(resp.status(), 200);
        let echo = body_json(resp).await;
        versions.insert(echo["version"].as_str().unwrap().to_string());
        let h = &echo["headers"];
        assert_eq!(h["host"], HOST, "the app sees the name the client used");
        assert_eq!(h["x-forwarded-for"], "127.0.0.1");
        assert_eq!(
            h["x-forwarded-client-cert"],
            "By=spiffe://cluster.local/ns/demo/sa/waypoint;URI=spiffe://cluster.local/ns/demo/sa/client"
        );
        assert_eq!(h["x-request-id"].as_str().unwrap().len(), 36);
        let tp = h["traceparent"].as_str().unwrap();
        assert!(
            tp.starts_with("00-") && tp.len() == 55,
            "a trace started: {tp}"
        );
        assert_eq!(echo["path"], "/hello");
    }
    assert_eq!(
        versions,
        BTreeSet::from(["v1".into(), "v2".into()]),
        "both pods served"
    );

    // Each pod's ztunnel saw the waypoint's identity, its own pod as authority, and one pooled
    // HBONE connection however many requests went by.
    for (seen, ip) in mesh.seen.iter().zip([mesh.pod_ip(2), mesh.pod_ip(3)]) {
        let seen = seen.lock().unwrap();
        assert!(!seen.tunnels.is_empty());
        for (peer, authority) in &seen.tunnels {
            assert_eq!(peer.as_ref(), Some(&identity("waypoint")));
            assert_eq!(authority, &format!("{ip}:8080"));
        }
        assert_eq!(seen.connections, 1, "HBONE connections to {ip}");
    }
    // Counted per destination pod, with the client's identity and the waypoint as reporter.
    let metrics = mesh.metrics().await;
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .collect();
    assert_eq!(lines.len(), 2, "one series per pod:\n{metrics}");
    let mut total = 0;
    for line in lines {
        assert!(
            line.contains("source_principal=\"spiffe://cluster.local/ns/demo/sa/client\""),
            "{line}"
        );
        assert!(line.contains("reporter=\"waypoint\""), "{line}");
        assert!(
            line.contains("destination_service=\"web.demo.svc.cluster.local\""),
            "{line}"
        );
        total += line.rsplit(' ').next().unwrap().parse::<u64>().unwrap();
    }
    assert_eq!(total, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_with_prior_knowledge_stays_http2_upstream() {
    let mesh = Mesh::start(2).await;
    let stream = mesh.tunnel(&mesh.vip(1)).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut tasks = Vec::new();
    for i in 0..10 {
        let req = Request::builder()
            .uri(format!("http://{HOST}/h2/{i}"))
            .body(Empty::<Bytes>::new())
            .unwrap();
        tasks.push(send.send_request(req));
    }
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), 200);
        let echo = body_json(resp).await;
        assert_eq!(echo["protocol"], "HTTP/2.0", "{echo}");
        assert!(echo["path"].as_str().unwrap().starts_with("/h2/"));
        assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_answer_as_envoy_waypoints_do() {
    let mesh = Mesh::start(3).await;
    // A service with no endpoint.
    let mut send = mesh.http1(&mesh.vip(2)).await;
    let resp = send1(&mut send, "/").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(body_text(resp).await, "no healthy upstream");

    // An endpoint whose ztunnel does not answer.
    let mut send = mesh.http1(&mesh.vip(3)).await;
    let resp = send1(&mut send, "/").await;
    assert_eq!(resp.status(), 503);
    let text = body_text(resp).await;
    assert!(
        text.starts_with("upstream connect error or disconnect/reset before headers. reset reason: connection failure"),
        "{text}"
    );

    // A gRPC call gets a gRPC status, not an HTML page.
    let stream = mesh.tunnel(&mesh.vip(2)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}/mesh.echo.v1.Echo/Echo"))
        .header("content-type", "application/grpc")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["grpc-status"], "14", "UNAVAILABLE");

    // A CONNECT to an address the waypoint does not serve is refused at the tunnel.
    match mesh.tunnel(&mesh.vip(99)).await {
        Err(HboneError::Status(s)) => assert_eq!(s, 503),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("an unserved destination was accepted"),
    }
    let metrics = mesh.metrics().await;
    for flag in ["UH", "UF"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("istio_requests_total{")
                    && l.contains(&format!("response_flags=\"{flag}\""))
                    && l.contains("response_code=\"503\"")),
            "no 503 {flag} counted:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_updates_apply_without_dropping_open_connections() {
    let mesh = Mesh::start(4).await;
    let mut send = mesh.http1(&mesh.vip(1)).await;
    let resp = send1(&mut send, "/before").await;
    assert_eq!(resp.status(), 200);
    body_json(resp).await;

    // web-2 leaves the service: new requests go to web-1 only; the open connection goes on.
    mesh.istiod.write(
        "web-2.yaml",
        &pod("web-2", &mesh.pod_ip(3), "web", "other", "v2"),
    );
    mesh.wait_for_state("web-2 to leave the service", |s| {
        s.service(&format!("demo/{HOST}"))
            .is_some_and(|s| s.endpoints.len() == 1)
    })
    .await;
    for _ in 0..20 {
        let resp = send1(&mut send, "/after").await;
        assert_eq!(resp.status(), 200);
        assert_eq!(body_json(resp).await["version"], "v1");
    }
}

const L7_POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin-writes, namespace: demo}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/{**}"], notMethods: ["GET"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: clients-read-and-write, namespace: demo}
spec:
  targetRefs: [{kind: Service, name: web}]
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]
    to: [{operation: {methods: ["GET", "POST"]}}]
"#;

fn request(method: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", HOST)
        .body(Empty::new())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_authorization_policies_are_enforced_at_the_waypoint() {
    let mesh = Mesh::start(5).await;
    mesh.istiod.write("policies.yaml", L7_POLICIES);
    mesh.wait_for_state("the policies to reach the waypoint", |s| {
        s.service(&format!("demo/{HOST}"))
            .is_some_and(|s| s.policies.len() == 2)
    })
    .await;
    let mut send = mesh.http1(&mesh.vip(1)).await;
    for (method, path, code) in [
        ("GET", "/admin/users", 200),
        ("POST", "/admin/users", 403),
        // Normalized before the policy looks: dot segments and escaped letters do not help.
        ("POST", "/public/../admin/users", 403),
        ("POST", "/%61dmin/users", 403),
        ("POST", "/orders", 200),
        ("DELETE", "/orders/1", 403),
    ] {
        send.ready().await.unwrap();
        let resp = send.send_request(request(method, path)).await.unwrap();
        assert_eq!(resp.status(), code, "{method} {path}");
        let body = body_text(resp).await;
        if code == 403 {
            assert_eq!(body, "RBAC: access denied");
        }
    }
    // gRPC callers get PERMISSION_DENIED (DELETE is not allowed; gRPC is POST, so use a path
    // the DENY policy covers).
    let stream = mesh.tunnel(&mesh.vip(1)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}/admin/mesh.echo.v1.Echo/Echo"))
        .header("content-type", "application/grpc")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "7", "PERMISSION_DENIED");
    let metrics = mesh.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"403\"")),
        "{metrics}"
    );
}

fn routes_yaml(net: u8) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web-v1, namespace: demo}}
spec: {{clusterIP: 127.{net}.10.11, selector: {{app: web, version: v1}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-v2, namespace: demo}}
spec: {{clusterIP: 127.{net}.10.12, selector: {{app: web, version: v2}}, ports: [{{name: http, port: 8080}}]}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: demo}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-tester, value: "yes"}}]}}]
    backendRefs: [{{name: web-v2, port: 8080}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters:
    - {{type: URLRewrite, urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /v2}}}}}}
    - {{type: RequestHeaderModifier, requestHeaderModifier: {{set: [{{name: x-routed, value: api}}]}}}}
    - {{type: ResponseHeaderModifier, responseHeaderModifier: {{add: [{{name: x-served-by, value: waypoint}}]}}}}
    backendRefs: [{{name: web-v1, port: 8080}}]
  - backendRefs: [{{name: web-v1, port: 8080, weight: 90}}, {{name: web-v2, port: 8080, weight: 10}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: broken-only, namespace: demo}}
spec:
  parentRefs: [{{kind: Service, name: broken}}]
  rules:
  - matches: [{{path: {{type: Exact, value: /only}}}}]
    backendRefs: [{{name: missing, port: 80}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_routes_split_match_rewrite_and_redirect() {
    let mesh = Mesh::start(6).await;
    mesh.istiod.write("routes.yaml", &routes_yaml(6));
    mesh.wait_for_state("the routes to reach the waypoint", |s| {
        s.service(&format!("demo/{HOST}"))
            .is_some_and(|s| !s.routes.is_empty())
            && s.service("demo/web-v2.demo.svc.cluster.local").is_some()
    })
    .await;
    let mut send = mesh.http1(&mesh.vip(1)).await;

    // 90/10 over 2,000 requests.
    let total = 2000;
    let mut v2 = 0;
    for i in 0..total {
        let resp = send1(&mut send, &format!("/split/{i}")).await;
        assert_eq!(resp.status(), 200);
        if body_json(resp).await["version"] == "v2" {
            v2 += 1;
        }
    }
    let share = f64::from(v2) / f64::from(total);
    assert!((0.07..=0.13).contains(&share), "v2 got {v2} of {total}");

    // A tester's header routes to v2, always.
    for _ in 0..20 {
        send.ready().await.unwrap();
        let req = Request::builder()
            .uri("/anything")
            .header("host", HOST)
            .header("x-tester", "yes")
            .body(Empty::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        assert_eq!(body_json(resp).await["version"], "v2");
    }

    // Redirect, with the rest of the path kept.
    let resp = send1(&mut send, "/old/page?x=1").await;
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        format!("http://{HOST}/new/page?x=1").as_str()
    );
    body_text(resp).await;

    // Rewrite and header filters.
    let resp = send1(&mut send, "/api/users").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-served-by"], "waypoint");
    let echo = body_json(resp).await;
    assert_eq!(echo["path"], "/v2/users");
    assert_eq!(echo["headers"]["x-routed"], "api");
    assert_eq!(echo["version"], "v1");

    // No route matches: 404 NR; a backendRef that does not resolve: 500.
    let mut broken = mesh.http1(&mesh.vip(3)).await;
    let resp = send1(&mut broken, "/elsewhere").await;
    assert_eq!(resp.status(), 404);
    body_text(resp).await;
    let resp = send1(&mut broken, "/only").await;
    assert_eq!(resp.status(), 500);
    body_text(resp).await;
    let metrics = mesh.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("response_code=\"404\"")
                && l.contains("response_flags=\"NR\"")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_routes_send_a_method_to_its_backend() {
    let mesh = Mesh::start(7).await;
    let services = routes_yaml(7);
    let services = services.split("---\napiVersion: gateway").next().unwrap();
    let grpc = r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-method, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: web, port: 80}]
  rules:
  - matches: [{method: {service: mesh.echo.v1.Echo, method: Echo}}]
    backendRefs: [{name: web-v2, port: 8080}]
  - backendRefs: [{name: web-v1, port: 8080}]
"#;
    mesh.istiod.write("grpc.yaml", &format!("{services}{grpc}"));
    mesh.wait_for_state("the GRPCRoute to reach the waypoint", |s| {
        s.service(&format!("demo/{HOST}"))
            .is_some_and(|s| !s.routes.is_empty())
            && s.service("demo/web-v2.demo.svc.cluster.local").is_some()
    })
    .await;
    let stream = mesh.tunnel(&mesh.vip(1)).await.unwrap();
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..10 {
        // An empty EchoRequest, framed: no compression, length 0.
        let req = Request::builder()
            .method("POST")
            .uri(format!("http://{HOST}/mesh.echo.v1.Echo/Echo"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(Bytes::from_static(&[
                0, 0, 0, 0, 0,
            ])))
            .unwrap();
        let resp = h2.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["x-echo-service"],
            "web-v2",
            "{:?}",
            resp.headers()
        );
        resp.into_body().collect().await.unwrap();
    }
    let req = Request::builder()
        .uri(format!("http://{HOST}/plain"))
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(
        body_json(resp).await["version"],
        "v1",
        "not the gRPC method: the other rule"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_goes_through_as_tcp_and_is_closed_when_a_policy_denies_it() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::start(8).await;
    let vip = "127.8.10.4:9000".to_string();
    let mut stream = mesh.tunnel(&vip).await.unwrap();
    stream
        .write_all(b"hello through the waypoint")
        .await
        .unwrap();
    let mut buf = [0u8; 26];
    stream.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello through the waypoint");

    // A DENY for the client on this service: the open connection is closed, a new one too.
    mesh.istiod.write(
        "deny-tcp.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-client, namespace: demo}
spec:
  targetRefs: [{kind: Service, group: "", name: tcp-echo}]
  action: DENY
  rules: [{from: [{source: {principals: ["cluster.local/ns/demo/sa/client"]}}]}]
"#,
    );
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await
    })
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the open connection was closed: {closed:?}"
    );
    let mut again = mesh.tunnel(&vip).await.unwrap();
    let _ = again.write_all(b"x").await;
    let mut one = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), again.read(&mut one)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a new connection gets nothing back: {read:?}"
    );
}
