//! The local cluster on this machine: its home directory, its names, and `up`/`down`.
//!
//! A cluster of N nodes is:
//! * network namespaces `mc-node1..N`, joined by an underlay bridge `mc-ul` in node 1
//!   (`192.168.250.<n>/24` on each node's `ul0`), each routing the other nodes' pod subnets
//!   (`10.250.<n>.0/24`);
//! * istiod-lite in node 1 (xDS on `192.168.250.1:15012`) reading `<home>/config`, and one
//!   ztunnel per node, all started and restarted by the supervisor (`supervisor.rs`);
//! * pods (`pods.rs`): network namespaces `mc-<namespace>_<name>` made by the CNI chain.
//!
//! Every name is recorded in `<home>/cluster.json` before it is created, so `down` removes
//! exactly what `up` made, also after a crash or a half-finished `up`.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use mesh_core::cluster_dir::write_atomic;
use serde::{Deserialize, Serialize};

pub const MAX_NODES: u8 = 8;
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_BASE: &str = "/sys/fs/bpf/meshctl";
pub const CNI_BIN: &str = "/usr/lib/cni";
const UNDERLAY_BRIDGE: &str = "mc-ul";

/// Where a cluster keeps its files (`--home`, default `/var/lib/meshctl`).
#[derive(Clone, Debug)]
pub struct Home {
    pub dir: PathBuf,
}

impl Home {
    pub fn config_dir(&self) -> PathBuf {
        self.dir.join("config")
    }
    pub fn istiod_dir(&self) -> PathBuf {
        self.dir.join("istiod")
    }
    pub fn status_dir(&self) -> PathBuf {
        self.istiod_dir().join("status")
    }
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }
    pub fn log(&self, component: &str) -> PathBuf {
        self.logs().join(format!("{component}.log"))
    }
    pub fn run_dir(&self, node: u8) -> PathBuf {
        self.dir.join("run").join(node_name(node))
    }
    pub fn ipam_dir(&self, node: u8) -> PathBuf {
        self.dir.join("ipam").join(node_name(node))
    }
    pub fn pods_dir(&self) -> PathBuf {
        self.dir.join("pods")
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join("cluster.json")
    }
    pub fn status_file(&self) -> PathBuf {
        self.dir.join("status.json")
    }
    pub fn stop_file(&self) -> PathBuf {
        self.dir.join("stop")
    }
    pub fn supervisor_pid(&self) -> PathBuf {
        self.dir.join("supervisor.pid")
    }
    pub fn token_file(&self, node: u8) -> PathBuf {
        self.dir.join(format!("{}.token", node_name(node)))
    }
}

pub fn node_name(i: u8) -> String {
    format!("node{i}")
}

pub fn node_netns(i: u8) -> String {
    format!("mc-node{i}")
}

pub fn underlay_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 250, i)
}

pub fn pod_subnet(i: u8) -> String {
    format!("10.250.{i}.0/24")
}

pub fn pin_root(i: u8) -> PathBuf {
    Path::new(PIN_BASE).join(node_name(i))
}

pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

pub fn xds_address() -> String {
    format!("https://{}:15012", underlay_ip(1))
}

/// What `up` made, written before it makes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub nodes: u8,
    /// Where istiod-lite, ztunnel, mesh-cni and mesh-echo are.
    pub bins: PathBuf,
    /// bpffs was not mounted and `up` mounted it (so `down` unmounts it).
    pub mounted_bpffs: bool,
}

impl Record {
    pub fn load(home: &Home) -> Result<Option<Record>> {
        match std::fs::read(home.record()) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is damaged; `meshctl down` removes the cluster",
                    home.record().display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", home.record().display())),
        }
    }

    fn save(&self, home: &Home) -> Result<()> {
        Ok(write_atomic(
            &home.record(),
            &serde_json::to_vec_pretty(self)?,
        )?)
    }
}

/// Runs a command; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn require_root(what: &str) -> Result<()> {
    // Effective uid 0 owns /proc/self's files' uid in /proc/self/status "Uid:" (2nd field).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        bail!("meshctl {what} needs root (it makes network namespaces and loads eBPF): run `sudo meshctl {what}`");
    }
    Ok(())
}

/// The directory of meshctl's own binary, where the other binaries are built or installed.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating meshctl's binary")?;
    Ok(exe.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// Checks what `up` needs and says how to get what is missing.
fn prerequisites(bins: &Path) -> Result<()> {
    let mut missing = Vec::new();
    if Command::new("ip").arg("-V").output().is_err() {
        missing.push("`ip` (apt-get install iproute2)".to_string());
    }
    if Command::new("nsenter").arg("-V").output().is_err() {
        missing.push("`nsenter` (apt-get install util-linux)".to_string());
    }
    for plugin in ["loopback", "bridge", "host-local"] {
        if !Path::new(CNI_BIN).join(plugin).exists() {
            missing.push(format!(
                "the CNI plugin {CNI_BIN}/{plugin} (apt-get install containernetworking-plugins)"
            ));
        }
    }
    for bin in ["istiod-lite", "ztunnel", "mesh-cni", "mesh-echo"] {
        if !bins.join(bin).exists() {
            missing.push(format!(
                "{} (build it: cargo build --release --bins)",
                bins.join(bin).display()
            ));
        }
    }
    if !missing.is_empty() {
        bail!("missing: {}", missing.join("; "));
    }
    Ok(())
}

/// Polls `f` until it returns `Ok` or `timeout` passes; the error names what never happened.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= end => {
                return Err(e.context(format!("{what} (waited {} s)", timeout.as_secs())))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// An HTTP/1.0 GET from inside network namespace `netns`; returns status code and body.
pub fn http_get(netns: &str, addr: &str, path: &str) -> Result<(u16, String)> {
    let (addr_s, path_s) = (addr.to_string(), path.to_string());
    let text = mesh_bpf::netns::run_in(&netns_path(netns), move || -> std::io::Result<String> {
        let sock: std::net::SocketAddr = addr_s.parse().map_err(std::io::Error::other)?;
        let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path_s} HTTP/1.0\r\nHost: {addr_s}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?
    .with_context(|| format!("GET http://{addr}{path} in {netns}"))?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("not an HTTP response")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((code, body.to_string()))
}

/// Progress lines for a person watching.
pub struct Progress {
    step: usize,
    steps: usize,
    quiet: bool,
}

impl Progress {
    pub fn new(steps: usize, quiet: bool) -> Progress {
        Progress {
            step: 0,
            steps,
            quiet,
        }
    }
    pub fn step(&mut self, what: &str) {
        self.step += 1;
        if !self.quiet {
            eprintln!("[{}/{}] {what}", self.step, self.steps);
        }
    }
}

/// Is the cluster's supervisor alive?
pub fn supervisor_alive(home: &Home) -> bool {
    std::fs::read_to_string(home.supervisor_pid())
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.contains("meshctl") && c.contains("supervise"))
        })
}

/// Creates the cluster, or says it exists. A failure part way removes what was made.
pub fn up(home: &Home, nodes: u8, quiet: bool) -> Result<()> {
    require_root("up")?;
    if !(1..=MAX_NODES).contains(&nodes) {
        bail!("--nodes must be between 1 and {MAX_NODES}");
    }
    if let Some(existing) = Record::load(home)? {
        if supervisor_alive(home) {
            if existing.nodes != nodes {
                bail!(
                    "a local cluster with {} node(s) is already up; `meshctl down` first to make one with {nodes}",
                    existing.nodes
                );
            }
            eprintln!(
                "the local cluster is already up ({} node(s)); nothing to do",
                existing.nodes
            );
            return Ok(());
        }
        eprintln!("found a cluster that is not running (a crash or an unfinished `up`); removing it first");
        down(home, true)?;
    }
    let bins = bin_dir()?;
    prerequisites(&bins)?;
    // Checked before anything is made: undoing a failed `up` removes these names, and a
    // namespace someone else made must survive that.
    for i in 1..=nodes {
        if netns_path(&node_netns(i)).exists() {
            bail!(
                "network namespace {} exists but is not this cluster's; remove it (ip netns del {0}) \
                 or use the home of the cluster that made it (--home)",
                node_netns(i)
            );
        }
    }
    let mut progress = Progress::new(5, quiet);
    let result = create(home, nodes, &bins, &mut progress);
    if let Err(e) = result {
        eprintln!("meshctl up failed; removing what it made");
        let _ = down(home, true);
        return Err(e);
    }
    Ok(())
}

fn create(home: &Home, nodes: u8, bins: &Path, progress: &mut Progress) -> Result<()> {
    for dir in [
        home.config_dir(),
        home.istiod_dir(),
        home.logs(),
        home.pods_dir(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mounted_bpffs = !mesh_bpf::bpffs::is_bpffs(Path::new(BPFFS)).unwrap_or(false);
    let record = Record {
        nodes,
        bins: bins.to_path_buf(),
        mounted_bpffs,
    };
    record.save(home)?;
    if mounted_bpffs {
        run("mount", &["-t", "bpf", "bpf", BPFFS]).context("mounting bpffs at /sys/fs/bpf")?;
    }

    progress.step(&format!(
        "creating {nodes} node(s) joined by an underlay (192.168.250.0/24)"
    ));
    for i in 1..=nodes {
        run("ip", &["netns", "add", &node_netns(i)])?;
    }
    underlay(nodes)?;

    progress
        .step("writing each node's token for istiod-lite (xDS and the CA on 192.168.250.1:15012)");
    let mut tokens = String::from("tokens:\n");
    for i in 1..=nodes {
        let token = format!("meshctl-{}-{}", node_name(i), random_hex());
        tokens.push_str(&format!("- token: {token}\n  node: {}\n", node_name(i)));
        write_atomic(&home.token_file(i), format!("{token}\n").as_bytes())?;
    }
    write_atomic(&home.istiod_dir().join("tokens.yaml"), tokens.as_bytes())?;

    progress.step("starting the supervisor (it runs istiod-lite and a ztunnel per node)");
    crate::supervisor::start_daemon(home)?;

    progress.step("waiting for istiod-lite to be ready");
    wait_for("istiod-lite ready", Duration::from_secs(30), || {
        let (code, body) = http_get(&node_netns(1), "127.0.0.1:15014", "/ready")?;
        if code == 200 {
            Ok(())
        } else {
            bail!("istiod-lite answered {code}: {body}")
        }
    })
    .with_context(|| format!("see {}", home.log("istiod-lite").display()))?;

    progress.step("waiting for every ztunnel to be ready");
    for i in 1..=nodes {
        wait_for(
            &format!("ztunnel on {} ready", node_name(i)),
            Duration::from_secs(30),
            || {
                let (code, body) = http_get(&node_netns(i), "127.0.0.1:15021", "/healthz/ready")?;
                if code == 200 {
                    Ok(())
                } else {
                    bail!("answered {code}: {}", body.trim())
                }
            },
        )
        .with_context(|| {
            format!(
                "see {}",
                home.log(&format!("ztunnel-{}", node_name(i))).display()
            )
        })?;
    }
    Ok(())
}

fn random_hex() -> String {
    let mut bytes = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut bytes);
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn underlay(nodes: u8) -> Result<()> {
    // Node 1 holds the bridge that is the underlay's switch.
    let hub = node_netns(1);
    run(
        "ip",
        &["-n", &hub, "link", "add", UNDERLAY_BRIDGE, "type", "bridge"],
    )?;
    run("ip", &["-n", &hub, "link", "set", UNDERLAY_BRIDGE, "up"])?;
    for i in 1..=nodes {
        let ns = node_netns(i);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "netns",
                "exec",
                &ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        let port = format!("ul-p{i}");
        run(
            "ip",
            &[
                "-n", &hub, "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns",
                &ns,
            ],
        )?;
        run(
            "ip",
            &[
                "-n",
                &hub,
                "link",
                "set",
                &port,
                "master",
                UNDERLAY_BRIDGE,
                "up",
            ],
        )?;
        let addr = format!("{}/24", underlay_ip(i));
        run("ip", &["-n", &ns, "addr", "add", &addr, "dev", "ul0"])?;
        run("ip", &["-n", &ns, "link", "set", "ul0", "up"])?;
    }
    for i in 1..=nodes {
        for j in 1..=nodes {
            if i != j {
                run(
                    "ip",
                    &[
                        "-n",
                        &node_netns(i),
                        "route",
                        "add",
                        &pod_subnet(j),
                        "via",
                        &underlay_ip(j).to_string(),
                    ],
                )?;
            }
        }
    }
    Ok(())
}

/// Removes the cluster: supervisor and every process, pods (CNI DEL), namespaces, pins, files.
/// Nothing there is not an error.
pub fn down(home: &Home, quiet: bool) -> Result<()> {
    require_root("down")?;
    let record = Record::load(home).unwrap_or(None);
    let say = |s: &str| {
        if !quiet {
            eprintln!("{s}");
        }
    };
    if record.is_none() && !home.dir.exists() {
        say("no local cluster found; nothing to remove");
        return Ok(());
    }
    crate::supervisor::stop_daemon(home);
    say("stopped the supervisor and its processes");
    // Without a record no node name is known to be ours.
    let nodes = record.as_ref().map_or(0, |r| r.nodes);
    let mut removed = 0;
    for pod in crate::pods::PodRecord::list(home) {
        crate::pods::teardown(home, &pod);
        removed += 1;
    }
    if removed > 0 {
        say(&format!("removed {removed} pod(s)"));
    }
    for i in 1..=nodes {
        let ns = node_netns(i);
        if netns_path(&ns).exists() {
            kill_netns_processes(&ns);
            let _ = run("ip", &["netns", "del", &ns]);
        }
        let root = pin_root(i);
        if let Ok(dir) = std::fs::read_dir(&root) {
            for e in dir.flatten() {
                let _ = mesh_bpf::pod::detach(&mesh_bpf::PinDir::new(e.path()));
            }
        }
        let _ = std::fs::remove_dir(&root);
    }
    let _ = std::fs::remove_dir(PIN_BASE);
    say(&format!(
        "removed {nodes} node(s), their underlay and eBPF pins"
    ));
    if record.as_ref().is_some_and(|r| r.mounted_bpffs) {
        let _ = run("umount", &[BPFFS]);
    }
    if home.dir.exists() {
        std::fs::remove_dir_all(&home.dir)
            .with_context(|| format!("removing {}", home.dir.display()))?;
    }
    say(&format!("removed {}", home.dir.display()));
    Ok(())
}

/// Kills what still runs inside a namespace we are about to delete.
pub fn kill_netns_processes(netns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", netns]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}
