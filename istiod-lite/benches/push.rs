//! Control-plane benchmark (not a test): a generated mesh of 10,000 pods, 1,000 services and
//! 500 policies; measures translation, a full push to 100 concurrent xDS clients, the push of
//! one changed pod to all of them, and the server's peak RSS.
//!
//! Run: `cargo bench -p istiod-lite --bench push` (add `-- --pods 2000` etc. to resize).
//! The server is the real `istiod-lite` binary in its own process (so its RSS is its own), the
//! clients are tonic over TLS in this process, all on loopback.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use istiod_lite::source::directory::parse_documents;
use istiod_lite::store::Store;
use istiod_lite::translate::{translate, MeshConfig, Translator};
use istiod_lite::xds::resources::EncodeCache;
use istiod_lite::xds::{build_state, XdsState};
use mesh_core::proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_core::proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse,
};
use mesh_core::{ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL};
use tokio::sync::{mpsc, Barrier};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

struct Shape {
    namespaces: usize,
    pods: usize,
    services: usize,
    policies: usize,
    clients: usize,
    nodes: usize,
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One YAML file per namespace.
fn namespace_yaml(shape: &Shape, ns: usize) -> String {
    let pods = shape.pods / shape.namespaces;
    let svcs = shape.services / shape.namespaces;
    let pols = shape.policies / shape.namespaces;
    let mut y = String::new();
    let _ = writeln!(
        y,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns}\n  labels: {{istio.io/dataplane-mode: ambient}}\n---"
    );
    for s in 0..svcs {
        let _ = writeln!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata: {{name: svc-{s}, namespace: ns-{ns}}}\nspec:\n  selector: {{app: app-{s}}}\n  clusterIP: 10.96.{ns}.{}\n  ports:\n  - {{name: http, port: 80, targetPort: 8080}}\n  - {{name: grpc, port: 9090}}\n---",
            s + 1
        );
    }
    for p in 0..pods {
        let node = (ns * pods + p) % shape.nodes;
        let _ = writeln!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{p}\n  namespace: ns-{ns}\n  labels: {{app: app-{}, version: v1}}\nspec:\n  nodeName: node-{node}\n  serviceAccountName: sa-{}\nstatus:\n  podIP: 10.{}.{}.{}\n---",
            p % svcs.max(1),
            p % svcs.max(1),
            ns + 1,
            p / 250,
            p % 250 + 1
        );
    }
    for k in 0..pols {
        let body = match k % 3 {
            0 => format!("  selector:\n    matchLabels: {{app: app-{k}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [\"cluster.local/ns/ns-{ns}/sa/sa-1\"]\n    to:\n    - operation:\n        ports: [\"8080\"]"),
            1 => "  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"untrusted\"]".to_string(),
            _ => "  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"9090\"]".to_string(),
        };
        let _ = writeln!(
            y,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: policy-{k}, namespace: ns-{ns}}}\nspec:\n{body}\n---"
        );
    }
    y
}

fn peak_rss_kb(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_ready(addr: &str, deadline: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let end = Instant::now() + deadline;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let _ = s
                .write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .await;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return;
            }
        }
        assert!(Instant::now() < end, "istiod-lite did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Client {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: tonic::Streaming<DeltaDiscoveryResponse>,
}

async fn connect(url: &str, root: &str, token: &str) -> Client {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(root))
        .domain_name("localhost");
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await
        .expect("connect");
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let (tx, rx) = mpsc::channel(8);
    let mut req = tonic::Request::new(ReceiverStream::new(rx));
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let rx = client
        .delta_aggregated_resources(req)
        .await
        .expect("ADS stream")
        .into_inner();
    Client { tx, rx }
}

impl Client {
    async fn subscribe(&self, type_url: &str) {
        let _ = self
            .tx
            .send(DeltaDiscoveryRequest {
                type_url: type_url.into(),
                ..Default::default()
            })
            .await;
    }

    async fn recv_ack(&mut self) -> DeltaDiscoveryResponse {
        let resp = self.rx.message().await.expect("stream").expect("open");
        let _ = self
            .tx
            .send(DeltaDiscoveryRequest {
                type_url: resp.type_url.clone(),
                response_nonce: resp.nonce.clone(),
                ..Default::default()
            })
            .await;
        resp
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let shape = Shape {
        namespaces: arg(&args, "--namespaces", 100),
        pods: arg(&args, "--pods", 10_000),
        services: arg(&args, "--services", 1_000),
        policies: arg(&args, "--policies", 500),
        clients: arg(&args, "--clients", 100),
        nodes: arg(&args, "--nodes", 10),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(shape));
}

async fn run(shape: Shape) {
    println!(
        "istiod-lite push benchmark: {} pods, {} services, {} policies in {} namespaces; {} clients",
        shape.pods, shape.services, shape.policies, shape.namespaces, shape.clients
    );
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    let state_dir = dir.path().join("state");
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&state_dir).unwrap();
    let mut texts = Vec::new();
    for ns in 0..shape.namespaces {
        let text = namespace_yaml(&shape, ns);
        std::fs::write(config_dir.join(format!("ns-{ns}.yaml")), &text).unwrap();
        texts.push(text);
    }
    let mut tokens = String::from("tokens:\n");
    for n in 0..shape.nodes {
        let _ = writeln!(
            tokens,
            "- token: bench-node-token-{n:04}-abcdef\n  node: node-{n}"
        );
    }
    std::fs::write(state_dir.join("tokens.yaml"), tokens).unwrap();

    // 1. In-process: parse, translate, encode.
    let t = Instant::now();
    let store = Store::new();
    let parts = texts
        .iter()
        .enumerate()
        .map(|(i, text)| {
            (
                format!("ns-{i}.yaml"),
                Some(parse_documents(&format!("ns-{i}.yaml"), text)),
            )
        })
        .collect();
    store.replace_parts(parts);
    let parse = t.elapsed();
    let snapshot = store.snapshot();
    let mesh = MeshConfig::default();
    let mut translate_times = Vec::new();
    let mut encode_times = Vec::new();
    let mut resources = 0;
    let mut bytes = 0;
    for _ in 0..5 {
        let t = Instant::now();
        let tr = translate(&snapshot, &mesh);
        translate_times.push(t.elapsed());
        let t = Instant::now();
        let state = build_state(
            &tr,
            &XdsState::empty(),
            &mut EncodeCache::default(),
            1,
            Instant::now(),
        );
        encode_times.push(t.elapsed());
        resources = state.sets.values().map(|s| s.entries.len()).sum::<usize>();
        bytes = state
            .sets
            .values()
            .flat_map(|s| s.entries.values())
            .map(|e| e.body.len())
            .sum::<usize>();
    }
    let translate_median = median(translate_times);
    let encode_median = median(encode_times);
    println!(
        "parse YAML into the store:     {:>8.1} ms",
        parse.as_secs_f64() * 1e3
    );
    println!(
        "translate (median of 5):       {:>8.1} ms",
        translate_median.as_secs_f64() * 1e3
    );
    println!(
        "encode resources (median of 5):{:>8.1} ms  ({resources} resources, {:.1} MB)",
        encode_median.as_secs_f64() * 1e3,
        bytes as f64 / 1e6
    );
    // Incremental: one pod changes; the memo redoes its namespace only.
    let mut translator = Translator::new(mesh.clone());
    let mut cache = EncodeCache::default();
    let tr = translator.translate(&snapshot);
    let mut state = build_state(&tr, &XdsState::empty(), &mut cache, 1, Instant::now());
    let mut steps = Vec::new();
    // `--profile-incremental N`: only N incremental rounds (for perf), then exit.
    let profile_rounds = arg(
        &std::env::args().collect::<Vec<_>>(),
        "--profile-incremental",
        0,
    );
    for round in 0..5.max(profile_rounds) {
        let pod = mesh_core::k8s::Object::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "pod-42", "namespace": "ns-7", "labels": {"app": "app-2", "version": format!("r{round}")}},
            "spec": {"nodeName": "node-2", "serviceAccountName": "sa-2"},
            "status": {"podIP": "10.8.0.43"}
        }))
        .unwrap();
        store.upsert("bench", pod);
        let snap = store.snapshot();
        let t = Instant::now();
        let tr = translator.translate(&snap);
        state = build_state(&tr, &state, &mut cache, snap.generation, Instant::now());
        steps.push(t.elapsed());
        let changed: usize = state.deltas.values().map(|d| d.delta.changed.len()).sum();
        assert_eq!(changed, 1, "one pod changed, one resource must change");
    }
    if profile_rounds > 0 {
        println!(
            "profiled {profile_rounds} incremental rounds; median {:?}",
            median(steps)
        );
        return;
    }
    let incremental = median(steps);
    println!(
        "one pod changed: translate + encode (median of 5): {:>6.2} ms  (ratio to a full translate + encode: {:.3})",
        incremental.as_secs_f64() * 1e3,
        incremental.as_secs_f64() / (translate_median + encode_median).as_secs_f64()
    );
    drop(snapshot);
    drop(store);

    // 2. The real server.
    let xds_port = free_port();
    let mon_port = free_port();
    let bin = env!("CARGO_BIN_EXE_istiod-lite");
    let child = Command::new(bin)
        .args(["--config-dir", config_dir.to_str().unwrap()])
        .args(["--state-dir", state_dir.to_str().unwrap()])
        .args(["--xds-addr", &format!("127.0.0.1:{xds_port}")])
        .args(["--monitoring-addr", &format!("127.0.0.1:{mon_port}")])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start istiod-lite");
    let server = Server(child);
    let pid = server.0.id();
    let t = Instant::now();
    wait_ready(&format!("127.0.0.1:{mon_port}"), Duration::from_secs(60)).await;
    let startup = t.elapsed();
    let (rss_idle, _) = peak_rss_kb(pid);
    println!(
        "server start to ready:         {:>8.1} ms  (RSS {:.1} MB)",
        startup.as_secs_f64() * 1e3,
        rss_idle as f64 / 1024.0
    );

    let root = wait_file(&state_dir.join("ca/root-cert.pem"));
    let url = format!("https://localhost:{xds_port}");

    // 3. Full push: connect every client, then all subscribe at once.
    let t = Instant::now();
    let mut clients = Vec::new();
    for i in 0..shape.clients {
        let token = format!("bench-node-token-{:04}-abcdef", i % shape.nodes);
        clients.push(connect(&url, &root, &token).await);
    }
    println!(
        "{} TLS connections + streams: {:>8.1} ms",
        shape.clients,
        t.elapsed().as_secs_f64() * 1e3
    );

    let barrier = Arc::new(Barrier::new(shape.clients + 1));
    let (done_tx, mut done_rx) = mpsc::channel::<(usize, Duration)>(shape.clients);
    let (change_tx, _) = tokio::sync::broadcast::channel::<Instant>(4);
    let (changed_tx, mut changed_rx) = mpsc::channel::<Duration>(shape.clients);
    let target_uid = "Kubernetes//Pod/ns-7/pod-42".to_string();
    for (i, mut c) in clients.into_iter().enumerate() {
        let barrier = barrier.clone();
        let done_tx = done_tx.clone();
        let mut change_rx = change_tx.subscribe();
        let changed_tx = changed_tx.clone();
        let target = target_uid.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let t = Instant::now();
            c.subscribe(ADDRESS_TYPE_URL).await;
            c.subscribe(AUTHORIZATION_TYPE_URL).await;
            let mut got = HashMap::new();
            while got.len() < 2 {
                let r = c.recv_ack().await;
                got.insert(r.type_url.clone(), r.resources.len());
            }
            let _ = done_tx.send((got.values().sum(), t.elapsed())).await;
            let _ = i;
            // Then wait for the one-pod change.
            let Ok(started) = change_rx.recv().await else {
                return;
            };
            loop {
                let r = c.recv_ack().await;
                if r.resources.iter().any(|res| res.name == target) {
                    let _ = changed_tx.send(started.elapsed()).await;
                    break;
                }
            }
        });
    }
    let t = Instant::now();
    barrier.wait().await;
    let mut per_client = Vec::new();
    for _ in 0..shape.clients {
        let (n, d) = done_rx.recv().await.unwrap();
        assert_eq!(n, resources, "a client got a partial state");
        per_client.push(d);
    }
    let full_push = t.elapsed();
    let (_, hwm_after_push) = peak_rss_kb(pid);
    println!(
        "full push to {} clients:       {:>8.1} ms  (slowest client; median client {:.1} ms)",
        shape.clients,
        full_push.as_secs_f64() * 1e3,
        median(per_client).as_secs_f64() * 1e3
    );

    // 4. One changed pod, from the file write to the last client receiving it.
    let ns7 = config_dir.join("ns-7.yaml");
    let text = std::fs::read_to_string(&ns7).unwrap();
    let edited = text.replacen(
        "name: pod-42\n  namespace: ns-7\n  labels: {app: app-2, version: v1}",
        "name: pod-42\n  namespace: ns-7\n  labels: {app: app-2, version: v2}",
        1,
    );
    assert_ne!(text, edited, "the edit must change the file");
    let tmp = ns7.with_extension("tmp");
    std::fs::write(&tmp, edited).unwrap();
    let started = Instant::now();
    std::fs::rename(&tmp, &ns7).unwrap();
    let _ = change_tx.send(started);
    let mut per_client = Vec::new();
    for _ in 0..shape.clients {
        per_client.push(changed_rx.recv().await.unwrap());
    }
    let one_pod = per_client.iter().max().copied().unwrap_or_default();
    let (rss_end, hwm) = peak_rss_kb(pid);
    println!(
        "one pod change to all clients: {:>8.1} ms  (file write -> last client; median {:.1} ms; includes the 10 ms watch debounce)",
        one_pod.as_secs_f64() * 1e3,
        median(per_client).as_secs_f64() * 1e3
    );
    println!(
        "server RSS: now {:.1} MB, peak {:.1} MB (peak after full push {:.1} MB)",
        rss_end as f64 / 1024.0,
        hwm as f64 / 1024.0,
        hwm_after_push as f64 / 1024.0
    );
    println!(
        "ratios: full push / translate = {:.1}x; peak RSS / encoded state = {:.1}x",
        full_push.as_secs_f64() / translate_median.as_secs_f64(),
        (hwm as f64 * 1024.0) / bytes as f64
    );
    let check = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "targets: RSS < 150 MB: {}; full push < 2 s: {}; one-pod change < 100 ms: {}",
        check(hwm < 150 * 1024),
        check(full_push < Duration::from_secs(2)),
        check(one_pod < Duration::from_millis(100))
    );
    drop(server);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_file(path: &Path) -> String {
    std::fs::read_to_string(path).expect("root certificate written at start")
}
