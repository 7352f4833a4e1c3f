//! `up` and `down`: a local cluster made from the parts below (the home's records, the
//! underlay, the supervisor), and removed by the names recorded before they were made.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_core::cluster_dir::{write_atomic, ClusterDirError};

use super::home::HomeError;
use super::home::{
    bin_dir, node_name, node_netns, pin_root, supervisor_alive, Home, PodRecord, Record,
    ADDRESSING, BPFFS, CNI_BIN, MAX_NODES, PIN_BASE, UNDERLAY_BRIDGE,
};
use super::host::{
    kill_netns_processes, netns_path, ready, require_root, run, wait_for, HostError, Timeout,
};
use super::supervisor::SupervisorError;
use super::underlay::Underlay;
use super::{pods, supervisor};

/// Why `up` or `down` did not finish; each says what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("--nodes must be between 1 and {MAX_NODES}")]
    Nodes,
    #[error("a local cluster with {existing} node(s) is already up; `meshctl down` first to make one with {wanted}")]
    AlreadyUp { existing: u8, wanted: u8 },
    #[error("missing: {}", .0.join("; "))]
    Missing(Vec<String>),
    #[error(
        "network namespace {0} exists but is not this cluster's; remove it (ip netns del {0}) \
             or use the home of the cluster that made it (--home)"
    )]
    ForeignNetns(String),
    #[error("creating {}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reading /dev/urandom for a node token")]
    Random(#[source] std::io::Error),
    #[error("mounting bpffs at /sys/fs/bpf")]
    Mount(#[source] HostError),
    #[error("see {}", log.display())]
    NotReady {
        log: PathBuf,
        source: Timeout<String>,
    },
    #[error("{} holds no local cluster (no cluster.json, nothing a cluster makes): nothing was removed; is --home right?", .0.display())]
    NotACluster(PathBuf),
    #[error("removing {}", path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Write(#[from] ClusterDirError),
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
}

/// Checks what `up` needs and says how to get what is missing.
fn prerequisites(bins: &Path) -> Result<(), LifecycleError> {
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
        return Err(LifecycleError::Missing(missing));
    }
    Ok(())
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

/// Creates the cluster, or says it exists. A failure part way removes what was made.
pub fn up(home: &Home, nodes: u8, quiet: bool) -> Result<(), LifecycleError> {
    require_root("meshctl up")?;
    if !(1..=MAX_NODES).contains(&nodes) {
        return Err(LifecycleError::Nodes);
    }
    if let Some(existing) = Record::load(home)? {
        if supervisor_alive(home) {
            if existing.nodes != nodes {
                return Err(LifecycleError::AlreadyUp {
                    existing: existing.nodes,
                    wanted: nodes,
                });
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
            return Err(LifecycleError::ForeignNetns(node_netns(i)));
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

fn create(
    home: &Home,
    nodes: u8,
    bins: &Path,
    progress: &mut Progress,
) -> Result<(), LifecycleError> {
    for dir in [
        home.config_dir(),
        home.istiod_dir(),
        home.logs(),
        home.pods_dir(),
    ] {
        std::fs::create_dir_all(&dir)
            .map_err(|source| LifecycleError::CreateDir { path: dir, source })?;
    }
    let mounted_bpffs = !mesh_bpf::bpffs::is_bpffs(Path::new(BPFFS)).unwrap_or(false);
    let record = Record {
        nodes,
        bins: bins.to_path_buf(),
        mounted_bpffs,
    };
    record.save(home)?;
    if mounted_bpffs {
        run("mount", &["-t", "bpf", "bpf", BPFFS]).map_err(LifecycleError::Mount)?;
    }

    progress.step(&format!(
        "creating {nodes} node(s) joined by an underlay ({})",
        ADDRESSING.underlay_subnet()
    ));
    let netns: Vec<String> = (1..=nodes).map(node_netns).collect();
    for ns in &netns {
        run("ip", &["netns", "add", ns])?;
    }
    Underlay {
        bridge: UNDERLAY_BRIDGE,
        nodes: &netns,
        addressing: ADDRESSING,
    }
    .create()?;

    progress.step(&format!(
        "writing each node's token for istiod-lite (xDS and the CA on {}:15012)",
        ADDRESSING.node_ip(1)
    ));
    let mut tokens = String::from("tokens:\n");
    for i in 1..=nodes {
        let token = format!(
            "meshctl-{}-{}",
            node_name(i),
            super::home::random_token().map_err(LifecycleError::Random)?
        );
        tokens.push_str(&format!("- token: {token}\n  node: {}\n", node_name(i)));
        write_atomic(&home.token_file(i), format!("{token}\n").as_bytes())?;
    }
    write_atomic(&home.istiod_dir().join("tokens.yaml"), tokens.as_bytes())?;

    progress.step("starting the supervisor (it runs istiod-lite and a ztunnel per node)");
    supervisor::start_daemon(home)?;

    progress.step("waiting for istiod-lite to be ready");
    wait_for("istiod-lite ready", Duration::from_secs(30), || {
        ready(&node_netns(1), "127.0.0.1:15014", "/ready")
    })
    .map_err(|source| LifecycleError::NotReady {
        log: home.log("istiod-lite"),
        source,
    })?;

    progress.step("waiting for every ztunnel to be ready");
    for i in 1..=nodes {
        wait_for(
            &format!("ztunnel on {} ready", node_name(i)),
            Duration::from_secs(30),
            || ready(&node_netns(i), "127.0.0.1:15021", "/healthz/ready"),
        )
        .map_err(|source| LifecycleError::NotReady {
            log: home.log(&format!("ztunnel-{}", node_name(i))),
            source,
        })?;
    }
    Ok(())
}

/// Removes the cluster: supervisor and every process, pods (CNI DEL), namespaces, pins, files.
/// Nothing there is not an error.
pub fn down(home: &Home, quiet: bool) -> Result<(), LifecycleError> {
    require_root("meshctl down")?;
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
    // A directory without a cluster record that holds nothing a cluster makes is someone
    // else's (a mistyped --home, MESHCTL_HOME=$HOME): it is not touched.
    if record.is_none() && home.own_entries().is_empty() {
        return Err(LifecycleError::NotACluster(home.dir.clone()));
    }
    supervisor::stop_daemon(home);
    say("stopped the supervisor and its processes");
    // Without a record no node name is known to be ours.
    let nodes = record.as_ref().map_or(0, |r| r.nodes);
    let mut removed = 0;
    for pod in PodRecord::list(home) {
        pods::teardown(home, &pod);
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
    // Only if this cluster mounted it and nothing else is pinned there (another cluster's pins).
    if record.as_ref().is_some_and(|r| r.mounted_bpffs) {
        let _ = mesh_bpf::bpffs::unmount_if_unused(Path::new(BPFFS));
    }
    let gone = home.remove().map_err(|source| LifecycleError::Remove {
        path: home.dir.clone(),
        source,
    })?;
    if gone {
        say(&format!("removed {}", home.dir.display()));
    } else {
        say(&format!(
            "removed the cluster's files from {}; the directory stays, it holds other files",
            home.dir.display()
        ));
    }
    Ok(())
}
