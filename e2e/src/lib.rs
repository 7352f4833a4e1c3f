//! A local multi-node cluster for end-to-end tests, built from real parts (root only):
//!
//! * nodes are network namespaces `mse-node<N>` joined by a veth underlay (`192.168.251.N/24`),
//!   each routing the other nodes' pod subnets (`10.251.N.0/24`) over it;
//! * istiod-lite runs in node 1, reading a config directory the test writes;
//! * one `ztunnel` process per node, inside the node's netns, with its own run directory and
//!   bpffs pin root (`/sys/fs/bpf/mse/node<N>`);
//! * pods are network namespaces `mse-<pod>` made exactly as a container runtime does it: the
//!   CNI chain (Debian's `bridge` + `host-local`, then `mesh-cni`) is executed with the `CNI_*`
//!   environment and the chained `prevResult`, inside the node's netns.
//!
//! Everything is removed by exact name when [`Cluster`] drops, also after a failed check; the
//! logs of every process are printed then if the test panicked.

pub mod load;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub use meshctl::cluster::host::{http_get, netns_path, ready, Response};
use meshctl::cluster::underlay::{Addressing, Underlay};
use meshctl::cni::{Chain, NodeNetwork, Sandbox};
use serde_json::Value;

pub const PIN_BASE: &str = "/sys/fs/bpf/mse";
const BPFFS: &str = "/sys/fs/bpf";
const CNI_BIN: &str = "/usr/lib/cni";
const NETWORK: &str = "mse-net";
/// Not meshctl's addresses, so a meshctl cluster and this one can run at once.
pub const ADDRESSING: Addressing = Addressing {
    underlay: [192, 168, 251],
    pods: [10, 251],
};

pub use mesh_test_support::{eventually, sh};

/// A client for [`Cluster::exec`] (python3; args: host, port, line, timeout in seconds):
/// connects, sends a line, prints `REPLY <line>` (`REPLY <closed>` when the connection ended
/// without one), or `ERROR <python exception>`.
pub const LINE_CLIENT: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[4]))
    s.settimeout(float(sys.argv[4]))
    s.sendall((sys.argv[3] + "\n").encode())
    print("REPLY " + (s.makefile().readline().strip() or "<closed>"))
except Exception as e:
    print("ERROR " + type(e).__name__)
"#;

/// The directory holding the workspace's binaries (`target/<profile>`), from the test's path.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    for bin in ["istiod-lite", "ztunnel", "mesh-cni"] {
        assert!(
            dir.join(bin).exists(),
            "{} missing: build the binaries first (cargo build --bins)",
            dir.join(bin).display()
        );
    }
    dir.to_path_buf()
}

pub struct Node {
    pub name: String,
    pub index: u8,
    pub netns: String,
    pub underlay_ip: Ipv4Addr,
    ztunnel: Option<Child>,
}

impl Node {
    pub fn pin_root(&self) -> PathBuf {
        Path::new(PIN_BASE).join(&self.name)
    }
}

pub struct Pod {
    pub namespace: String,
    pub name: String,
    pub node: usize,
    pub netns: String,
    pub container_id: String,
    pub ip: Ipv4Addr,
    cni_result: Value,
    apps: Vec<Child>,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    bins: PathBuf,
    istiod: Option<Child>,
    mounted_bpffs: bool,
    extra_netns: Vec<String>,
}

impl Cluster {
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    fn run_dir(&self, node: usize) -> PathBuf {
        self.dir.join("run").join(&self.nodes[node].name)
    }

    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    /// Creates `n` nodes, starts istiod-lite and a ztunnel per node, and waits until all are
    /// ready.
    pub fn up(n: u8) -> Cluster {
        let dir = std::env::temp_dir().join(format!("mse-{}", std::process::id()));
        let mut c = Cluster {
            dir,
            nodes: Vec::new(),
            pods: Vec::new(),
            bins: bin_dir(),
            istiod: None,
            mounted_bpffs: false,
            extra_netns: Vec::new(),
        };
        c.remove_leftovers(n);
        for i in 1..=n {
            let ns = format!("mse-node{i}");
            if netns_path(&ns).exists() {
                sh(&["ip", "netns", "del", &ns]);
            }
        }
        for d in ["config", "state", "logs", "run", "ipam"] {
            std::fs::create_dir_all(c.dir.join(d)).unwrap();
        }
        if !mesh_bpf::bpffs::is_bpffs(Path::new(BPFFS)).unwrap_or(false) {
            sh(&["mount", "-t", "bpf", "bpf", BPFFS]);
            c.mounted_bpffs = true;
        }
        for i in 1..=n {
            c.nodes.push(Node {
                name: format!("node{i}"),
                index: i,
                netns: format!("mse-node{i}"),
                underlay_ip: ADDRESSING.node_ip(i),
                ztunnel: None,
            });
            sh(&["ip", "netns", "add", &format!("mse-node{i}")]);
        }
        c.underlay();
        let mut tokens = String::from("tokens:\n");
        for node in &c.nodes {
            tokens.push_str(&format!(
                "- token: mse-{0}-token-0123456789\n  node: {0}\n",
                node.name
            ));
        }
        std::fs::write(c.state_dir().join("tokens.yaml"), tokens).unwrap();
        c.start_istiod();
        for i in 0..c.nodes.len() {
            c.start_ztunnel(i);
        }
        c
    }

    fn underlay(&self) {
        // A veth per node into node 1 would need a switch; a bridge in node 1 is the switch.
        let netns: Vec<String> = self.nodes.iter().map(|n| n.netns.clone()).collect();
        Underlay {
            bridge: "ul-br",
            nodes: &netns,
            addressing: ADDRESSING,
        }
        .create()
        .unwrap_or_else(|e| panic!("underlay: {e}"));
    }

    fn spawn_in(&self, netns: &str, log: &str, program: &Path, args: &[String]) -> Child {
        let out = std::fs::File::create(self.log(log)).unwrap();
        Command::new("nsenter")
            .arg(format!("--net={}", netns_path(netns).display()))
            .arg(program)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()))
    }

    pub fn xds_address(&self) -> String {
        format!("https://{}:15012", self.nodes[0].underlay_ip)
    }

    pub fn start_istiod(&mut self) {
        let args = vec![
            format!("--config-dir={}", self.config_dir().display()),
            format!("--state-dir={}", self.state_dir().display()),
            format!("--xds-addr={}:15012", self.nodes[0].underlay_ip),
            "--monitoring-addr=127.0.0.1:15014".to_string(),
            format!("--server-san={}", self.nodes[0].underlay_ip),
        ];
        let child = self.spawn_in(
            &self.nodes[0].netns.clone(),
            "istiod-lite",
            &self.bins.join("istiod-lite"),
            &args,
        );
        self.istiod = Some(child);
        let ns = self.nodes[0].netns.clone();
        eventually("istiod-lite ready", Duration::from_secs(30), || {
            self.check_alive();
            ready(&ns, "127.0.0.1:15014", "/ready")
        });
    }

    pub fn stop_istiod(&mut self) {
        if let Some(mut c) = self.istiod.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_ztunnel(&mut self, i: usize) {
        let node = &self.nodes[i];
        let token_file = self.dir.join(format!("{}.token", node.name));
        std::fs::write(&token_file, format!("mse-{}-token-0123456789\n", node.name)).unwrap();
        let args = vec![
            format!("--xds-address={}", self.xds_address()),
            format!(
                "--root-cert={}",
                self.state_dir().join("ca/root-cert.pem").display()
            ),
            format!("--token-file={}", token_file.display()),
            format!("--node-name={}", node.name),
            format!("--run-dir={}", self.run_dir(i).display()),
            format!("--pin-root={}", node.pin_root().display()),
        ];
        let log = format!("ztunnel-{}", node.name);
        let ns = node.netns.clone();
        let child = self.spawn_in(&ns, &log, &self.ztunnel_bin(), &args);
        self.nodes[i].ztunnel = Some(child);
        self.wait_ztunnel_ready(i);
    }

    pub fn wait_ztunnel_ready(&mut self, i: usize) {
        let ns = self.nodes[i].netns.clone();
        eventually("ztunnel ready", Duration::from_secs(30), || {
            self.check_alive();
            ready(&ns, "127.0.0.1:15021", "/healthz/ready")
        });
    }

    /// Kills node `i`'s ztunnel (as a crash would) and waits until it is gone.
    pub fn kill_ztunnel(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].ztunnel.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Panics with the logs if a process of the cluster exited.
    fn check_alive(&mut self) {
        let mut dead = Vec::new();
        if let Some(c) = self.istiod.as_mut() {
            if let Ok(Some(status)) = c.try_wait() {
                dead.push(format!("istiod-lite exited: {status}"));
            }
        }
        for n in &mut self.nodes {
            if let Some(c) = n.ztunnel.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    dead.push(format!("ztunnel on {} exited: {status}", n.name));
                }
            }
        }
        assert!(dead.is_empty(), "{}", dead.join("; "));
    }

    /// Writes `config/<file>` (istiod-lite picks it up).
    pub fn apply(&self, file: &str, yaml: &str) {
        let path = self.config_dir().join(file);
        mesh_core::cluster_dir::write_atomic(&path, yaml.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn delete(&self, file: &str) {
        let _ = std::fs::remove_file(self.config_dir().join(file));
    }

    fn pod_yaml(
        namespace: &str,
        name: &str,
        node: &str,
        sa: &str,
        labels: &[(&str, &str)],
        ip: Option<Ipv4Addr>,
    ) -> String {
        let status = ip.map_or(String::new(), |ip| format!("status: {{podIP: {ip}}}\n"));
        let extra: String = labels.iter().map(|(k, v)| format!(", {k}: {v}")).collect();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, labels: {{app: {name}{extra}}}}}\n\
             spec: {{nodeName: {node}, serviceAccountName: {sa}}}\n{status}"
        )
    }

    /// Creates a pod on node `node` the way a kubelet would: the Pod object, its sandbox
    /// netns, the CNI chain, then `status.podIP`.
    pub fn add_pod(&mut self, namespace: &str, name: &str, node: usize, sa: &str) -> usize {
        self.add_pod_labelled(namespace, name, node, sa, &[])
    }

    /// [`Cluster::add_pod`] with labels beside `app: <name>` (the CNI chain sees them at ADD).
    pub fn add_pod_labelled(
        &mut self,
        namespace: &str,
        name: &str,
        node: usize,
        sa: &str,
        labels: &[(&str, &str)],
    ) -> usize {
        let node_name = self.nodes[node].name.clone();
        let file = format!("pod-{namespace}-{name}.yaml");
        self.apply(
            &file,
            &Self::pod_yaml(namespace, name, &node_name, sa, labels, None),
        );
        let netns = format!("mse-{name}");
        sh(&["ip", "netns", "add", &netns]);
        let container_id = format!("mse-{name}");
        let mut pod = Pod {
            namespace: namespace.into(),
            name: name.into(),
            node,
            netns,
            container_id,
            ip: Ipv4Addr::UNSPECIFIED,
            cni_result: Value::Null,
            apps: Vec::new(),
        };
        // Runtimes bring up the sandbox's loopback with the `loopback` plugin first.
        self.loopback(&pod);
        let result = self
            .cni(&pod, "ADD")
            .unwrap_or_else(|e| panic!("CNI ADD of {name}: {e}"));
        pod.ip = result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no IP in the CNI result {result}"));
        pod.cni_result = result;
        self.apply(
            &file,
            &Self::pod_yaml(namespace, name, &node_name, sa, labels, Some(pod.ip)),
        );
        self.pods.push(pod);
        self.pods.len() - 1
    }

    /// The chain as a runtime's `.conflist` lists it, run in the pod's node.
    fn chain(&self, node: usize) -> Chain {
        let n = &self.nodes[node];
        Chain::local_cluster(NodeNetwork {
            network: NETWORK,
            subnet: &ADDRESSING.pod_subnet(n.index),
            ipam_dir: &self.dir.join("ipam").join(&n.name),
            run_dir: &self.run_dir(node),
            pin_root: &n.pin_root(),
            cluster_dir: &self.config_dir(),
            plugin_dirs: vec![PathBuf::from(CNI_BIN), self.bins.clone()],
            node_netns: netns_path(&n.netns),
        })
    }

    fn loopback(&self, pod: &Pod) {
        self.chain(pod.node)
            .loopback(&Self::sandbox(pod, &netns_path(&pod.netns)))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    fn sandbox<'a>(pod: &'a Pod, netns: &'a Path) -> Sandbox<'a> {
        Sandbox {
            container_id: &pod.container_id,
            netns,
            namespace: &pod.namespace,
            name: &pod.name,
        }
    }

    /// Runs `command` (ADD, CHECK or DEL) through the chain like libcni (`meshctl::cni`).
    pub fn cni(&self, pod: &Pod, command: &str) -> Result<Value, String> {
        let chain = self.chain(pod.node);
        let netns = netns_path(&pod.netns);
        let sb = Self::sandbox(pod, &netns);
        let result = match command {
            "ADD" => chain.add(&sb),
            "CHECK" => chain.check(&sb, &pod.cni_result).map(|()| Value::Null),
            "DEL" => chain.del(&sb, &pod.cni_result).map(|()| Value::Null),
            other => return Err(format!("unknown CNI command {other}")),
        };
        result.map_err(|e| e.to_string())
    }

    /// Runs `python3 -c script args...` inside a pod, in the background.
    pub fn run_app(&mut self, pod: usize, script: &str, args: &[&str]) {
        let p = &self.pods[pod];
        let log = std::fs::File::create(self.log(&format!("app-{}", p.name))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &p.netns, "python3", "-c", script])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pods[pod].apps.push(child);
    }

    /// Runs `program args...` inside a pod in the background, its output in the cluster's logs
    /// as `<log>.log`.
    /// Returns its process id (`ip netns exec` execs the program).
    pub fn spawn_in_pod(&mut self, pod: usize, log: &str, program: &str, args: &[&str]) -> u32 {
        let p = &self.pods[pod];
        let out = std::fs::File::create(self.log(log)).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &p.netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {program} in {}: {e}", p.name));
        let pid = child.id();
        self.pods[pod].apps.push(child);
        pid
    }

    /// The process id of node `i`'s ztunnel (nsenter execs it, so it is the child's).
    pub fn ztunnel_pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].ztunnel.as_ref().map(Child::id)
    }

    /// The ztunnel binary: `MESH_E2E_ZTUNNEL` when set (the benchmark runs the statically
    /// linked build, as shipped), else the one beside the other binaries.
    pub fn ztunnel_bin(&self) -> PathBuf {
        std::env::var_os("MESH_E2E_ZTUNNEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.bins.join("ztunnel"))
    }

    /// The path of a binary built with the cluster's binaries.
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bins.join(name)
    }

    /// Runs `python3 -c script args...` in a pod and returns its output.
    pub fn exec(&self, pod: usize, script: &str, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.pods[pod].netns,
                "python3",
                "-c",
                script,
            ])
            .args(args)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_string()
    }

    /// The body of a 200 from a port inside node `i`'s netns (admin, metrics); otherwise the
    /// status or the failure.
    pub fn node_get(&self, i: usize, addr: &str, path: &str) -> Result<String, String> {
        http_get(&self.nodes[i].netns, addr, path)
            .map_err(|e| e.to_string())?
            .ok()
    }

    /// A netns the test creates besides nodes and pods, removed with the cluster.
    pub fn track_netns(&mut self, name: &str) {
        self.extra_netns.push(name.to_string());
    }

    fn remove_leftovers(&self, n: u8) {
        for i in 1..=n {
            let base = Path::new(PIN_BASE).join(format!("node{i}"));
            if let Ok(dir) = std::fs::read_dir(&base) {
                for e in dir.flatten() {
                    let name = e.file_name().to_string_lossy().to_string();
                    if name.starts_with("mse-") {
                        let _ = mesh_bpf::pod::detach(&mesh_bpf::PinDir::new(e.path()));
                    }
                }
            }
            let _ = std::fs::remove_dir(&base);
        }
        let _ = std::fs::remove_dir(PIN_BASE);
    }

    fn print_logs(&self) {
        for p in &self.pods {
            let pins = mesh_bpf::PinDir::new(self.nodes[p.node].pin_root().join(&p.container_id));
            if let Ok(stats) = mesh_bpf::Stats::read(&pins) {
                eprintln!("----- capture of {}/{}: {stats}", p.namespace, p.name);
            }
            let rules = Command::new("ip").args(["-n", &p.netns, "rule"]).output();
            if let Ok(out) = rules {
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            }
        }
        let Ok(dir) = std::fs::read_dir(self.dir.join("logs")) else {
            return;
        };
        for e in dir.flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            eprintln!(
                "----- {} (last {} lines)\n{}",
                e.path().display(),
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        for pod in &mut self.pods {
            for app in &mut pod.apps {
                let _ = app.kill();
                let _ = app.wait();
            }
        }
        for i in 0..self.nodes.len() {
            self.kill_ztunnel(i);
        }
        self.stop_istiod();
        let names: Vec<String> = self
            .pods
            .iter()
            .map(|p| p.netns.clone())
            .chain(self.extra_netns.iter().cloned())
            .chain(self.nodes.iter().map(|n| n.netns.clone()))
            .collect();
        for ns in names {
            if netns_path(&ns).exists() {
                let _ = Command::new("ip").args(["netns", "del", &ns]).status();
            }
        }
        self.remove_leftovers(self.nodes.len() as u8);
        if self.mounted_bpffs {
            let _ = mesh_bpf::bpffs::unmount_if_unused(Path::new(BPFFS));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the Prometheus sample `name{...}` whose labels include all of `labels`, summed
/// over the matching series.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
