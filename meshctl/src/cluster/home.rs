//! A local cluster's home directory (`--home`, default `/var/lib/meshctl`) and the records in
//! it, which are how meshctl's commands, the supervisor and `down` agree on what exists:
//! `cluster.json` (what `up` made, written before it makes it), the pod records
//! `pods/<namespace>.<name>.json`, the supervisor's `status.json` and pid; and the cluster's
//! names (`mc-node<N>`, its addresses, its bpffs pins).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mesh_core::cluster_dir::{self, write_atomic, ClusterDirError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::underlay::Addressing;

/// A record that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("{} is damaged; `meshctl down` removes the cluster", path.display())]
    Damaged {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] ClusterDirError),
    #[error("encoding a record")]
    Encode(#[from] serde_json::Error),
    #[error("locating meshctl's binary")]
    Exe(#[source] std::io::Error),
}

pub const MAX_NODES: u8 = 8;
pub const BPFFS: &str = "/sys/fs/bpf";
pub const PIN_BASE: &str = "/sys/fs/bpf/meshctl";
pub const CNI_BIN: &str = "/usr/lib/cni";
/// The underlay bridge in node 1.
pub const UNDERLAY_BRIDGE: &str = "mc-ul";
/// meshctl's addresses (the e2e harness uses its own, so both can run at once).
pub const ADDRESSING: Addressing = Addressing {
    underlay: [192, 168, 250],
    pods: [10, 250],
};

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
    /// Where istiod-lite (whose state directory is [`Home::istiod_dir`]) writes policy status.
    pub fn status_dir(&self) -> PathBuf {
        cluster_dir::status_dir(&self.istiod_dir())
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

    /// The entries of the home that a cluster made and that exist now: its record, status,
    /// logs, directories and node tokens, by name. Nothing else in the directory is ours.
    pub fn own_entries(&self) -> Vec<PathBuf> {
        let mut own: Vec<PathBuf> = [
            self.config_dir(),
            self.istiod_dir(),
            self.logs(),
            self.dir.join("run"),
            self.dir.join("ipam"),
            self.pods_dir(),
            self.record(),
            self.status_file(),
            self.stop_file(),
            self.supervisor_pid(),
        ]
        .into_iter()
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            let tokens = dir.flatten().map(|e| e.path()).filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix("node")?.strip_suffix(".token"))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            });
            own.extend(tokens);
        }
        own.sort();
        own
    }

    /// Removes [`Home::own_entries`], then the directory itself if that left it empty. Returns
    /// whether the directory is gone; one that holds anything else stays, with it.
    pub fn remove(&self) -> std::io::Result<bool> {
        for path in self.own_entries() {
            if path.is_dir() && !path.is_symlink() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
            Err(_) if self.dir.is_dir() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

pub fn node_name(i: u8) -> String {
    format!("node{i}")
}

pub fn node_netns(i: u8) -> String {
    format!("mc-node{i}")
}

pub fn underlay_ip(i: u8) -> Ipv4Addr {
    ADDRESSING.node_ip(i)
}

pub fn pod_subnet(i: u8) -> String {
    ADDRESSING.pod_subnet(i)
}

pub fn pin_root(i: u8) -> PathBuf {
    Path::new(PIN_BASE).join(node_name(i))
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
    /// The record, or `None` when there is no cluster.
    pub fn load(home: &Home) -> Result<Option<Record>, HomeError> {
        let path = home.record();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| HomeError::Damaged { path, source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(HomeError::Read { path, source }),
        }
    }

    pub fn save(&self, home: &Home) -> Result<(), HomeError> {
        Ok(write_atomic(
            &home.record(),
            &serde_json::to_vec_pretty(self)?,
        )?)
    }
}

/// A pod of the local cluster: `<home>/pods/<namespace>.<name>.json`, what the supervisor runs
/// and what `delete` and `down` undo.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodRecord {
    pub namespace: String,
    pub name: String,
    pub node: u8,
    pub netns: String,
    pub container_id: String,
    pub ip: String,
    pub command: Vec<String>,
    pub cni_result: Value,
}

impl PodRecord {
    pub fn path(home: &Home, namespace: &str, name: &str) -> PathBuf {
        home.pods_dir().join(format!("{namespace}.{name}.json"))
    }

    pub fn load(home: &Home, namespace: &str, name: &str) -> Option<PodRecord> {
        let bytes = std::fs::read(Self::path(home, namespace, name)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every pod record, sorted by namespace and name.
    pub fn list(home: &Home) -> Vec<PodRecord> {
        let mut out: Vec<PodRecord> = std::fs::read_dir(home.pods_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a: &PodRecord, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        out
    }

    pub fn save(&self, home: &Home) -> Result<(), HomeError> {
        Ok(write_atomic(
            &Self::path(home, &self.namespace, &self.name),
            &serde_json::to_vec_pretty(self)?,
        )?)
    }

    /// The supervisor's name for the pod's process.
    pub fn component(&self) -> String {
        format!("pod/{}/{}", self.namespace, self.name)
    }

    pub fn log(&self, home: &Home) -> PathBuf {
        home.logs()
            .join("pods")
            .join(format!("{}.{}.log", self.namespace, self.name))
    }

    /// The environment of the pod's processes: the project's binaries on PATH (so `mesh-echo`
    /// runs as it is), and what the downward API would give.
    pub fn env(&self, bins: &Path) -> Vec<(String, String)> {
        let path = format!(
            "{}:{}",
            bins.display(),
            std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
        );
        vec![
            ("PATH".into(), path),
            ("POD_NAME".into(), self.name.clone()),
            ("POD_NAMESPACE".into(), self.namespace.clone()),
            ("POD_IP".into(), self.ip.clone()),
            ("NODE_NAME".into(), node_name(self.node)),
            ("HOSTNAME".into(), self.name.clone()),
        ]
    }
}

/// What `status.json` says of one supervised process.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ComponentStatus {
    pub name: String,
    /// `running`, `restarting` or `exited`.
    pub state: String,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How it last ended, e.g. "signal 9" or "exit code 1".
    pub last_exit: Option<String>,
    /// Unix seconds of the last start.
    pub started: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub supervisor_pid: u32,
    pub components: Vec<ComponentStatus>,
}

impl Status {
    pub fn load(home: &Home) -> Option<Status> {
        let bytes = std::fs::read(home.status_file()).ok()?;
        serde_json::from_slice(&bytes).ok()
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

/// The directory of meshctl's own binary, where the other binaries are built or installed.
pub fn bin_dir() -> Result<PathBuf, HomeError> {
    let exe = std::env::current_exe().map_err(HomeError::Exe)?;
    Ok(exe.parent().unwrap_or(Path::new("/")).to_path_buf())
}

/// 32 hex digits from the kernel's random source: a bearer token for istiod-lite. Without
/// the random source there is no token (a guessable one would let anyone in).
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Home) {
        let dir = tempfile::tempdir().unwrap();
        let home = Home {
            dir: dir.path().to_path_buf(),
        };
        (dir, home)
    }

    #[test]
    fn removing_a_home_takes_only_what_a_cluster_made() {
        let (_dir, home) = home();
        assert!(home.own_entries().is_empty());
        std::fs::write(home.dir.join("notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(home.pods_dir()).unwrap();
        std::fs::create_dir_all(home.config_dir().join("pod/demo")).unwrap();
        std::fs::write(home.token_file(2), "t").unwrap();
        std::fs::write(home.dir.join("node.token"), "not a node token").unwrap();
        std::fs::write(home.record(), "{}").unwrap();
        let own = home.own_entries();
        assert_eq!(own.len(), 4, "{own:?}");
        assert!(
            !home.remove().unwrap(),
            "the directory stays: it holds other files"
        );
        assert!(home.dir.join("notes.txt").exists() && home.dir.join("node.token").exists());
        assert!(home.own_entries().is_empty());
        std::fs::remove_file(home.dir.join("notes.txt")).unwrap();
        std::fs::remove_file(home.dir.join("node.token")).unwrap();
        std::fs::write(home.status_file(), "{}").unwrap();
        assert!(home.remove().unwrap());
        assert!(!home.dir.exists());
    }

    #[test]
    fn the_cluster_record_round_trips_and_a_damaged_one_says_how_to_recover() {
        let (_dir, home) = home();
        assert!(Record::load(&home).unwrap().is_none());
        let record = Record {
            nodes: 2,
            bins: "/opt/mesh".into(),
            mounted_bpffs: true,
        };
        record.save(&home).unwrap();
        let loaded = Record::load(&home).unwrap().unwrap();
        assert_eq!((loaded.nodes, loaded.mounted_bpffs), (2, true));
        std::fs::write(home.record(), "{not json").unwrap();
        let e = Record::load(&home).unwrap_err();
        assert!(matches!(e, HomeError::Damaged { .. }));
        assert!(e
            .to_string()
            .ends_with("is damaged; `meshctl down` removes the cluster"));
    }

    #[test]
    fn pod_records_are_listed_by_namespace_and_name() {
        let (_dir, home) = home();
        for (ns, name) in [("b", "x"), ("a", "z"), ("a", "y")] {
            PodRecord {
                namespace: ns.into(),
                name: name.into(),
                node: 1,
                netns: format!("mc-{ns}_{name}"),
                container_id: format!("mc-{ns}_{name}"),
                ip: String::new(),
                command: vec!["true".into()],
                cni_result: Value::Null,
            }
            .save(&home)
            .unwrap();
        }
        let listed: Vec<String> = PodRecord::list(&home)
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        assert_eq!(listed, ["a/y", "a/z", "b/x"]);
        assert_eq!(
            PodRecord::load(&home, "a", "z").unwrap().component(),
            "pod/a/z"
        );
    }
}
