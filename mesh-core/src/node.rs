//! How the CNI plugin tells the node's ztunnel about pods (the "node agent" protocol).
//!
//! Two channels, so that a ztunnel that is down never blocks pod creation and never misses a
//! pod:
//!
//! * **Records** (durable): for every pod it sees, the plugin writes
//!   `<run_dir>/pods/<container id>.json` (a [`PodRecord`], written to a temporary file and
//!   renamed) on ADD and removes it on DEL. ztunnel reads all of them when it starts.
//! * **Notifications** (prompt): then it sends one JSON line ([`Request`]) to ztunnel's unix
//!   socket `<run_dir>/ztunnel.sock` and reads one JSON line back ([`Reply`]), each bounded by
//!   [`NOTIFY_TIMEOUT`]. An unreachable ztunnel is not an error: the record is there.
//!
//! Whether a pod is captured follows its workload in xDS (`tunnel_protocol` HBONE), so the same
//! records also serve pods whose namespace is labelled or unlabelled while they run.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default directory shared by the plugin and ztunnel on a node.
pub const DEFAULT_RUN_DIR: &str = "/var/run/ztunnel";
/// Default bpffs directory holding one pin directory per captured pod.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/ztunnel";
/// Upper bound of each step of a notification (connect, write, read).
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// A pod on this node, as the plugin saw it at ADD.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The runtime's id of the pod sandbox (`CNI_CONTAINERID`); names the record and the pins.
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    /// `metadata.uid`, when the runtime passed `K8S_POD_UID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The pod's network namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// The pod's IPv4 address (from the previous plugin's result).
    pub ip: Ipv4Addr,
    /// The plugin set up capture at ADD (the pod was enrolled then).
    pub captured: bool,
}

/// The paths of one node's records, socket and pins.
#[derive(Clone, Debug)]
pub struct NodePaths {
    pub run_dir: PathBuf,
    pub pin_root: PathBuf,
}

impl NodePaths {
    pub fn new(run_dir: impl Into<PathBuf>, pin_root: impl Into<PathBuf>) -> Self {
        NodePaths {
            run_dir: run_dir.into(),
            pin_root: pin_root.into(),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("ztunnel.sock")
    }

    pub fn records(&self) -> PathBuf {
        self.run_dir.join("pods")
    }

    pub fn record(&self, container_id: &str) -> PathBuf {
        self.records().join(format!("{container_id}.json"))
    }

    /// The bpffs directory of a pod's capture.
    pub fn pins(&self, container_id: &str) -> PathBuf {
        self.pin_root.join(container_id)
    }
}

/// Container ids name files, so only a conservative alphabet is accepted.
pub fn valid_container_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !id.starts_with('.')
}

/// Writes a record atomically ([`crate::cluster_dir::write_atomic`]: ztunnel never reads half
/// a record, and its hidden temporary file is not a `*.json` record).
pub fn write_record(paths: &NodePaths, record: &PodRecord) -> std::io::Result<()> {
    let path = paths.record(&record.container_id);
    let text = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    crate::cluster_dir::write_atomic(&path, &text).map_err(std::io::Error::other)
}

pub fn read_record(path: &Path) -> Result<PodRecord, String> {
    let text = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a pod record: {e}", path.display()))
}

/// Every record of the node; unreadable ones are returned as errors, by path.
pub fn read_records(paths: &NodePaths) -> Vec<Result<PodRecord, String>> {
    let Ok(dir) = std::fs::read_dir(paths.records()) else {
        return Vec::new();
    };
    let mut out: Vec<_> = dir
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    out.sort();
    out.iter().map(|p| read_record(p)).collect()
}

/// Removes a record; a missing one is fine.
pub fn remove_record(paths: &NodePaths, container_id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(paths.record(container_id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// A pod appeared (its record is written).
    Add(PodRecord),
    /// A pod went away (its record is removed; its capture is released by the plugin).
    Del { container_id: String },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Sends one request to the ztunnel listening at `socket` and returns its reply.
pub fn notify(socket: &Path, request: &Request) -> std::io::Result<Reply> {
    let stream = UnixStream::connect(socket)?;
    stream.set_write_timeout(Some(NOTIFY_TIMEOUT))?;
    stream.set_read_timeout(Some(NOTIFY_TIMEOUT))?;
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    (&stream).write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    serde_json::from_str(&reply).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad reply {reply:?}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_json_object_with_an_op() {
        let add = Request::Add(PodRecord {
            container_id: "abc".into(),
            namespace: "demo".into(),
            name: "client".into(),
            uid: None,
            netns: "/run/netns/cni-1".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            captured: true,
        });
        let text = serde_json::to_string(&add).unwrap();
        assert!(
            text.starts_with(r#"{"op":"add","container_id":"abc""#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), add);
        let del: Request = serde_json::from_str(r#"{"op":"del","container_id":"abc"}"#).unwrap();
        assert_eq!(
            del,
            Request::Del {
                container_id: "abc".into()
            }
        );
        assert!(serde_json::from_str::<Request>(r#"{"op":"move"}"#).is_err());
    }

    #[test]
    fn container_ids_cannot_escape_the_directory() {
        assert!(valid_container_id("0f3a-cni_1.x"));
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(!valid_container_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn records_round_trip_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("mesh-node-test-{}", std::process::id()));
        let paths = NodePaths::new(&dir, "/nonexistent");
        let record = PodRecord {
            container_id: "c1".into(),
            namespace: "demo".into(),
            name: "server".into(),
            uid: Some("u-1".into()),
            netns: "/proc/1/ns/net".into(),
            ip: Ipv4Addr::new(10, 0, 0, 6),
            captured: false,
        };
        write_record(&paths, &record).unwrap();
        std::fs::write(paths.record("c2"), "{not json").unwrap();
        let all = read_records(&paths);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].as_ref().unwrap(), &record);
        assert!(all[1].as_ref().unwrap_err().contains("c2.json"));
        remove_record(&paths, "c1").unwrap();
        remove_record(&paths, "c1").unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
