//! `mesh-cni`, a CNI 1.0 plugin chained after the cluster's network plugin (e.g. `bridge` with
//! `host-local`). It decides, before the pod's app starts, whether the pod is ambient (the pod's
//! and its namespace's `istio.io/dataplane-mode` labels, Istio's rule), and if so sets up its
//! capture fail-closed: the rtnetlink rules and the pinned sk_lookup program. Either way it
//! records the pod for the node's ztunnel and notifies it (`mesh_core::node`); a ztunnel that is
//! down costs at most the notification timeout, and it finds the record when it starts.
//!
//! Configuration (besides `cniVersion`, `name`, `type` and the `prevResult` the runtime adds):
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `run_dir` | `/var/run/ztunnel` | records and ztunnel's socket |
//! | `pin_root` | `/sys/fs/bpf/ztunnel` | bpffs directory for the pods' pins |
//! | `cluster_dir` | (none) | directory of the cluster's YAML objects (the local cluster's API) |
//!
//! Without `cluster_dir` no pod can be looked up, so none is captured (a warning says so);
//! reading labels from the Kubernetes API is not built yet.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use mesh_bpf::{PinDir, PodSpec};
use mesh_core::cluster_dir::{self, Depth};
use mesh_core::k8s::{is_enrolled, Namespace, Object, Pod};
use mesh_core::node::{self, NodePaths, PodRecord, Request};
use serde::Deserialize;
use serde_json::{json, Value};

pub const SUPPORTED_VERSIONS: [&str; 4] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// A CNI error: printed as the spec's error object, with a non-zero exit.
#[derive(Debug, PartialEq, Eq)]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

// Error codes of the CNI spec, and ours (100 and up).
const INCOMPATIBLE_VERSION: u32 = 1;
const INVALID_ENV: u32 = 4;
const IO_FAILURE: u32 = 5;
const DECODE_FAILURE: u32 = 6;
const INVALID_CONFIG: u32 = 7;
const CAPTURE_FAILED: u32 = 100;
const CAPTURE_MISSING: u32 = 101;

#[derive(Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<Value>,
    #[serde(default)]
    pub run_dir: Option<PathBuf>,
    #[serde(default)]
    pub pin_root: Option<PathBuf>,
    #[serde(default)]
    pub cluster_dir: Option<PathBuf>,
}

impl NetConf {
    fn paths(&self) -> NodePaths {
        NodePaths::new(
            self.run_dir
                .clone()
                .unwrap_or_else(|| node::DEFAULT_RUN_DIR.into()),
            self.pin_root
                .clone()
                .unwrap_or_else(|| node::DEFAULT_PIN_ROOT.into()),
        )
    }
}

/// The runtime's side of an invocation.
#[derive(Debug, Default, Clone)]
pub struct Invocation {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
    /// `CNI_ARGS`, split: `K8S_POD_NAMESPACE`, `K8S_POD_NAME`, `K8S_POD_UID`, ...
    pub args: HashMap<String, String>,
}

impl Invocation {
    pub fn from_env() -> Invocation {
        let var = |k: &str| std::env::var(k).unwrap_or_default();
        Invocation {
            command: var("CNI_COMMAND"),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: parse_args(&var("CNI_ARGS")),
        }
    }
}

/// `K=V;K=V` (CNI_ARGS); malformed pairs are skipped.
pub fn parse_args(s: &str) -> HashMap<String, String> {
    s.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Runs one command; `Ok` is what goes to stdout (maybe nothing).
pub fn run(inv: &Invocation, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    if inv.command == "VERSION" {
        return Ok(Some(json!({
            "cniVersion": "1.0.0",
            "supportedVersions": SUPPORTED_VERSIONS,
        })));
    }
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
        CniError::new(
            DECODE_FAILURE,
            "the network configuration on stdin is not valid JSON",
            e.to_string(),
        )
    })?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("cniVersion {:?} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED_VERSIONS.join(", ")),
        ));
    }
    if !node::valid_container_id(&inv.container_id) {
        return Err(CniError::new(
            INVALID_ENV,
            "CNI_CONTAINERID is missing or has characters other than [A-Za-z0-9._-]",
            format!("{:?}", inv.container_id),
        ));
    }
    match inv.command.as_str() {
        "ADD" => add(inv, &conf).map(Some),
        "DEL" => del(inv, &conf).map(|()| None),
        "CHECK" => check(inv, &conf).map(|()| None),
        other => Err(CniError::new(
            INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, VERSION"),
            "",
        )),
    }
}

/// The first IPv4 address of a previous result (`ips[].address`, CIDR form).
pub fn first_ipv4(prev: &Value) -> Option<Ipv4Addr> {
    prev.get("ips")?
        .as_array()?
        .iter()
        .filter_map(|ip| ip.get("address")?.as_str())
        .filter_map(|a| a.split('/').next()?.parse().ok())
        .next()
}

fn prev_result(conf: &NetConf) -> Result<Value, CniError> {
    let mut prev = conf.prev_result.clone().ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            "mesh-cni must be chained after the network plugin (no prevResult)",
            "list it after e.g. bridge in a .conflist",
        )
    })?;
    if let Some(obj) = prev.as_object_mut() {
        obj.insert("cniVersion".into(), json!(conf.cni_version));
    }
    Ok(prev)
}

/// The pod and its namespace, from the cluster directory (its walk and parser,
/// `mesh_core::cluster_dir`). A file or document that cannot be read is said on stderr with its
/// file and reason and skipped; the rest still counts, so one bad file elsewhere in the
/// directory cannot decide whether this pod is captured.
fn lookup(dir: &Path, namespace: &str, name: &str) -> (Option<Pod>, Option<Namespace>) {
    let files = match cluster_dir::walk(dir, Depth::Recursive) {
        Ok(files) => files,
        Err(e) => {
            warn(&format!(
                "{e}; pod {namespace}/{name} is looked up in nothing"
            ));
            Vec::new()
        }
    };
    let (mut pod, mut ns) = (None, None);
    for file in files {
        let bytes = match cluster_dir::read(&file) {
            Ok(b) => b,
            Err(e) => {
                warn(&format!("skipping a file: {e}"));
                continue;
            }
        };
        let parsed = cluster_dir::parse_bytes(&file.display().to_string(), &bytes);
        for rejection in &parsed.rejections {
            warn(&format!("skipping a document: {rejection}"));
        }
        for object in parsed.objects {
            match object {
                Object::Pod(p)
                    if p.metadata.name == name
                        && p.metadata.namespace.as_deref() == Some(namespace) =>
                {
                    pod = Some(p)
                }
                Object::Namespace(n) if n.metadata.name == namespace => ns = Some(n),
                _ => {}
            }
        }
    }
    (pod, ns)
}

fn warn(msg: &str) {
    eprintln!("mesh-cni: {msg}");
}

fn add(inv: &Invocation, conf: &NetConf) -> Result<Value, CniError> {
    let prev = prev_result(conf)?;
    let (Some(namespace), Some(name)) = (
        inv.args.get("K8S_POD_NAMESPACE"),
        inv.args.get("K8S_POD_NAME"),
    ) else {
        // Not a Kubernetes pod: nothing for the mesh to do.
        return Ok(prev);
    };
    let ip = first_ipv4(&prev).ok_or_else(|| {
        CniError::new(
            INVALID_CONFIG,
            format!("pod {namespace}/{name} has no IPv4 address in the previous result"),
            prev.to_string(),
        )
    })?;
    let ambient = match &conf.cluster_dir {
        Some(dir) => {
            let (pod, ns) = lookup(dir, namespace, name);
            is_enrolled(&pod.unwrap_or_default(), ns.as_ref())
        }
        None => {
            warn("no cluster_dir configured: pods cannot be looked up, so none is captured");
            false
        }
    };
    let paths = conf.paths();
    let netns = PathBuf::from(&inv.netns);
    if ambient {
        let spec = PodSpec {
            netns: netns.clone(),
            pin_dir: PinDir::new(paths.pins(&inv.container_id)),
            pod_ip: ip,
            fail_closed: true,
        };
        mesh_bpf::capture(&spec).map_err(|e| {
            CniError::new(
                CAPTURE_FAILED,
                format!("capturing ambient pod {namespace}/{name}"),
                format!("{e}: {}", source_chain(&e)),
            )
        })?;
    }
    let record = PodRecord {
        container_id: inv.container_id.clone(),
        namespace: namespace.clone(),
        name: name.clone(),
        uid: inv.args.get("K8S_POD_UID").cloned(),
        netns,
        ip,
        captured: ambient,
    };
    node::write_record(&paths, &record).map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("writing the pod record under {}", paths.records().display()),
            e.to_string(),
        )
    })?;
    tell_ztunnel(&paths, &Request::Add(record));
    Ok(prev)
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out.join(": ")
}

/// A notification is best effort: the record is what counts.
fn tell_ztunnel(paths: &NodePaths, request: &Request) {
    match node::notify(&paths.socket(), request) {
        Ok(reply) if reply.ok => {}
        Ok(reply) => warn(&format!(
            "ztunnel refused the notification: {}",
            reply.error.unwrap_or_default()
        )),
        Err(e) => warn(&format!(
            "ztunnel not reachable at {} ({e}); it will read the pod record when it starts",
            paths.socket().display()
        )),
    }
}

fn del(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    let paths = conf.paths();
    let record = node::read_record(&paths.record(&inv.container_id)).ok();
    let pins = PinDir::new(paths.pins(&inv.container_id));
    let netns = PathBuf::from(&inv.netns);
    let result = match record.as_ref() {
        // The routing goes with the netns; it is released only while the netns still exists.
        Some(r) if !inv.netns.is_empty() && netns.exists() => mesh_bpf::release(&PodSpec {
            netns,
            pin_dir: pins.clone(),
            pod_ip: r.ip,
            fail_closed: true,
        }),
        _ => mesh_bpf::pod::detach(&pins).map(|_| ()),
    };
    result.map_err(|e| {
        CniError::new(
            IO_FAILURE,
            format!("releasing the capture of {}", inv.container_id),
            e.to_string(),
        )
    })?;
    node::remove_record(&paths, &inv.container_id)
        .map_err(|e| CniError::new(IO_FAILURE, "removing the pod record", e.to_string()))?;
    tell_ztunnel(
        &paths,
        &Request::Del {
            container_id: inv.container_id.clone(),
        },
    );
    Ok(())
}

fn check(inv: &Invocation, conf: &NetConf) -> Result<(), CniError> {
    prev_result(conf)?;
    let paths = conf.paths();
    let Ok(record) = node::read_record(&paths.record(&inv.container_id)) else {
        if inv.args.contains_key("K8S_POD_NAME") {
            return Err(CniError::new(
                CAPTURE_MISSING,
                format!(
                    "no record of {} under {}",
                    inv.container_id,
                    paths.records().display()
                ),
                "",
            ));
        }
        return Ok(());
    };
    let pins = PinDir::new(paths.pins(&inv.container_id));
    // A pod captured now (at ADD, or enrolled later by ztunnel) must have both halves.
    let pinned = pins.link().exists();
    if record.captured || pinned {
        let routed = mesh_bpf::routing::is_installed(Path::new(&inv.netns)).map_err(|e| {
            CniError::new(IO_FAILURE, "reading the pod's routing rules", e.to_string())
        })?;
        if !(pinned && routed) {
            return Err(CniError::new(
                CAPTURE_MISSING,
                format!(
                    "capture of {}/{} is incomplete",
                    record.namespace, record.name
                ),
                format!("program pinned: {pinned}, routing rules: {routed}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(command: &str) -> Invocation {
        Invocation {
            command: command.into(),
            container_id: "c1".into(),
            netns: "/nonexistent".into(),
            ifname: "eth0".into(),
            args: parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=web-0"),
        }
    }

    #[test]
    fn version_lists_what_we_speak() {
        let out = run(&inv("VERSION"), b"").unwrap().unwrap();
        assert_eq!(out["supportedVersions"][3], "1.0.0");
    }

    #[test]
    fn bad_input_gets_the_spec_error_codes() {
        let e = run(&inv("ADD"), b"{not json").unwrap_err();
        assert_eq!(e.code, DECODE_FAILURE);
        let e = run(&inv("ADD"), br#"{"cniVersion":"9.9.9"}"#).unwrap_err();
        assert_eq!(e.code, INCOMPATIBLE_VERSION);
        let mut bad_id = inv("ADD");
        bad_id.container_id = "../x".into();
        let e = run(&bad_id, br#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
        let e = run(&inv("ADD"), br#"{"cniVersion":"1.0.0","name":"k8s"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_CONFIG, "{e:?}");
        let e = run(&inv("SPIN"), br#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, INVALID_ENV);
    }

    #[test]
    fn addresses_come_from_the_previous_result() {
        let prev = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.244.1.7/24", "gateway": "10.244.1.1"}]});
        assert_eq!(first_ipv4(&prev), Some(Ipv4Addr::new(10, 244, 1, 7)));
        assert_eq!(first_ipv4(&json!({"ips": []})), None);
    }

    #[test]
    fn pods_and_namespaces_are_read_from_the_cluster_directory() {
        let dir = std::env::temp_dir().join(format!("mesh-cni-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/pods.yaml"),
            "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: other}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: demo, labels: {istio.io/dataplane-mode: none}}\n",
        )
        .unwrap();
        let (pod, ns) = lookup(&dir, "demo", "web-0");
        assert!(ns.is_some());
        let pod = pod.unwrap();
        assert!(!is_enrolled(&pod, ns.as_ref()), "the pod opted out");
        assert!(is_enrolled(&Pod::default(), ns.as_ref()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_bad_document_is_skipped_and_the_rest_of_the_file_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        // A document that is YAML but not an object (a list as a key), then the pod: the pod
        // must still be found (reading used to stop at the bad document). A file that is not
        // YAML at all must not hide the namespace in the next file either.
        std::fs::write(
            dir.path().join("a-pods.yaml"),
            "{[1, 2]: x}\n---\napiVersion: v1\nkind: Pod\n\
             metadata: {name: web-0, namespace: demo, labels: {istio.io/dataplane-mode: none}}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b-broken.yaml"), "kind: [unclosed\n").unwrap();
        std::fs::write(
            dir.path().join("c-ns.yaml"),
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}\n",
        )
        .unwrap();
        let (pod, ns) = lookup(dir.path(), "demo", "web-0");
        assert!(ns.is_some(), "the namespace after the broken file is read");
        let pod = pod.expect("the pod after the bad document is read");
        assert!(!is_enrolled(&pod, ns.as_ref()), "its opt-out label counts");
    }
}
