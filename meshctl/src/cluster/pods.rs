//! Pods of the local cluster, made the way a kubelet and a container runtime make them:
//! the Pod object first, then a sandbox network namespace `mc-<namespace>_<name>` set up by the
//! CNI chain (`loopback`, then Debian's `bridge` + `host-local`, then `mesh-cni`, run with the
//! `CNI_*` environment and the chained `prevResult` inside the node's namespace), then
//! `status.podIP`, then the process, which the supervisor runs and restarts.
//!
//! Each pod has a record (`home::PodRecord`): what the supervisor runs and what `delete` and
//! `down` undo (CNI DEL in reverse order with the cached result).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mesh_core::k8s::Kind;
use serde_json::{json, Value};

use super::home::HomeError;
use super::home::{
    node_name, node_netns, pin_root, pod_subnet, supervisor_alive, Home, PodRecord, Record, Status,
    CNI_BIN,
};
use super::host::{
    kill_netns_processes, netns_path, require_root, run, wait_for, HostError, Timeout,
};
use crate::cni::{Chain, CniError, NodeNetwork, Sandbox};
use crate::objects::Api;

/// An error of the object API (which reports `anyhow` errors), with its whole chain.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct ApiFailure(anyhow::Error);

/// Why a pod command did not do what was asked; each says what to do where there is something.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    #[error("the local cluster is not running (its supervisor is gone): `meshctl down` then `meshctl up`")]
    NotRunning,
    #[error("no local cluster: start one with `sudo meshctl up`")]
    NoCluster,
    #[error("no node {node:?}: this cluster has node1..node{nodes}")]
    NoNode { node: String, nodes: u8 },
    #[error("no command: `meshctl {usage} -- CMD ARGS...`")]
    NoCommand { usage: String },
    #[error("namespace {0:?} not found: create it with `meshctl create ns {0}` (add `--ambient` to enrol it)")]
    NoNamespace(String),
    #[error(
        "pod {namespace}/{name} already exists: `meshctl delete pod {name} -n {namespace}` first"
    )]
    Exists { namespace: String, name: String },
    #[error("pod name {namespace}/{name} cannot name a sandbox: use letters, digits, '-' and '.'")]
    BadName { namespace: String, name: String },
    #[error("pod {namespace}/{name} not found (`meshctl get pods {scope}` lists them)")]
    NotFound {
        namespace: String,
        name: String,
        scope: String,
    },
    #[error(
        "no pod {namespace}/{target} and no component {target:?}: logs exist for pods, \
             istiod-lite, ztunnel-node<N> and supervisor"
    )]
    NoLog { namespace: String, target: String },
    #[error("pod {namespace}/{name} is not valid")]
    Invalid {
        namespace: String,
        name: String,
        source: ApiFailure,
    },
    #[error("creating pod {namespace}/{name}")]
    Create {
        namespace: String,
        name: String,
        source: Box<PodError>,
    },
    #[error("the CNI chain gave no IP")]
    NoIp,
    #[error("running {program}")]
    Run {
        program: String,
        source: std::io::Error,
    },
    #[error("reading {}", path.display())]
    ReadLog {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing to standard output")]
    Output(#[source] std::io::Error),
    #[error(transparent)]
    Api(#[from] ApiFailure),
    #[error(transparent)]
    Cni(#[from] CniError),
    #[error(transparent)]
    NotStarted(#[from] Timeout<String>),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error(transparent)]
    Home(#[from] HomeError),
}

impl From<anyhow::Error> for PodError {
    fn from(e: anyhow::Error) -> Self {
        PodError::Api(ApiFailure(e))
    }
}

const NETWORK: &str = "meshctl";

/// What `meshctl run` asks for.
pub struct RunOptions {
    pub namespace: String,
    pub name: String,
    pub node: Option<String>,
    pub service_account: String,
    pub labels: Vec<(String, String)>,
    pub ports: Vec<u16>,
    pub command: Vec<String>,
}

fn loaded_cluster(home: &Home) -> Result<Record, PodError> {
    match Record::load(home)? {
        Some(r) if supervisor_alive(home) => Ok(r),
        Some(_) => Err(PodError::NotRunning),
        None => Err(PodError::NoCluster),
    }
}

fn parse_node(record: &Record, node: &str) -> Result<u8, PodError> {
    let n = node
        .strip_prefix("node")
        .and_then(|n| n.parse::<u8>().ok())
        .filter(|n| (1..=record.nodes).contains(n));
    n.ok_or_else(|| PodError::NoNode {
        node: node.to_string(),
        nodes: record.nodes,
    })
}

/// `meshctl run`: creates the pod and waits until its process runs.
pub fn run_pod(home: &Home, api: &Api, opts: RunOptions) -> Result<(), PodError> {
    require_root("meshctl run")?;
    let record = loaded_cluster(home)?;
    let (ns, name) = (opts.namespace.as_str(), opts.name.as_str());
    if opts.command.is_empty() {
        return Err(PodError::NoCommand {
            usage: format!("run {name} -n {ns}"),
        });
    }
    if api.read(Kind::Namespace, "", ns)?.is_none() {
        return Err(PodError::NoNamespace(ns.to_string()));
    }
    if api.read(Kind::Pod, ns, name)?.is_some() || PodRecord::load(home, ns, name).is_some() {
        return Err(PodError::Exists {
            namespace: ns.to_string(),
            name: name.to_string(),
        });
    }
    // bpffs refuses names with a dot, and the container id names the pod's pin directory;
    // '_' appears in no Kubernetes name, so this stays unique.
    let netns = format!("mc-{ns}_{}", name.replace('.', "_"));
    if !mesh_core::node::valid_container_id(&netns) {
        return Err(PodError::BadName {
            namespace: ns.to_string(),
            name: name.to_string(),
        });
    }
    let node = match &opts.node {
        Some(n) => parse_node(&record, n)?,
        None => least_loaded(home, record.nodes),
    };
    let mut labels = serde_json::Map::new();
    labels.insert("app".into(), json!(name));
    for (k, v) in &opts.labels {
        labels.insert(k.clone(), json!(v));
    }
    let ports: Vec<Value> = opts
        .ports
        .iter()
        .map(|p| json!({"containerPort": p, "protocol": "TCP"}))
        .collect();
    let mut pod = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {
            "nodeName": node_name(node),
            "serviceAccountName": opts.service_account,
            "containers": [{"name": name, "command": opts.command, "ports": ports}],
        },
        "status": {"phase": "Pending"},
    });
    api.put(pod.clone()).map_err(|e| PodError::Invalid {
        namespace: ns.to_string(),
        name: name.to_string(),
        source: ApiFailure(e),
    })?;

    let mut rec = PodRecord {
        namespace: ns.into(),
        name: name.into(),
        node,
        netns: netns.clone(),
        container_id: netns.clone(),
        ip: String::new(),
        command: resolve_command(&record.bins, &opts.command),
        cni_result: Value::Null,
    };
    // Recorded before the sandbox exists, so a failure below is undone by name.
    rec.save(home)?;
    let made = (|| -> Result<(), PodError> {
        run("ip", &["netns", "add", &netns])?;
        let chain = chain(home, node)?;
        with_sandbox(&rec, |sb| chain.loopback(sb))?;
        rec.cni_result = with_sandbox(&rec, |sb| chain.add(sb))?;
        rec.ip = rec.cni_result["ips"][0]["address"]
            .as_str()
            .and_then(|a| a.split('/').next())
            .ok_or(PodError::NoIp)?
            .to_string();
        pod["status"] = json!({"phase": "Running", "podIP": rec.ip, "podIPs": [{"ip": rec.ip}],
            "containerStatuses": [{"name": name, "ready": true, "restartCount": 0}]});
        api.put(pod.clone())?;
        Ok(rec.save(home)?)
    })();
    if let Err(e) = made {
        teardown(home, &rec);
        let _ = api.remove(Kind::Pod, ns, name);
        return Err(PodError::Create {
            namespace: ns.to_string(),
            name: name.to_string(),
            source: Box::new(e),
        });
    }
    let component = rec.component();
    wait_for(
        &format!("pod {ns}/{name} to start"),
        Duration::from_secs(10),
        || match Status::load(home)
            .and_then(|s| s.components.into_iter().find(|c| c.name == component))
        {
            Some(c) if c.state == "running" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    let captured = pin_root(node).join(&rec.container_id).exists();
    println!(
        "pod/{name} created in namespace {ns} on {} with IP {}{}",
        node_name(node),
        rec.ip,
        if captured {
            " (ambient: its traffic is captured by the node's ztunnel)"
        } else {
            ""
        }
    );
    Ok(())
}

/// A bare program name that is one of ours runs from our binary directory.
fn resolve_command(bins: &Path, command: &[String]) -> Vec<String> {
    let mut out = command.to_vec();
    if let Some(first) = out.first_mut() {
        if !first.contains('/') {
            let ours = bins.join(&*first);
            if ours.exists() {
                *first = ours.display().to_string();
            } else if let Some(found) = which(first) {
                *first = found;
            }
        }
    }
    out
}

fn which(program: &str) -> Option<String> {
    std::env::var("PATH").ok()?.split(':').find_map(|d| {
        let p = Path::new(d).join(program);
        p.is_file().then(|| p.display().to_string())
    })
}

fn least_loaded(home: &Home, nodes: u8) -> u8 {
    let pods = PodRecord::list(home);
    (1..=nodes)
        .min_by_key(|n| pods.iter().filter(|p| p.node == *n).count())
        .unwrap_or(1)
}

/// The chain as a runtime's `.conflist` lists it: the cluster network, then mesh-cni.
fn chain(home: &Home, node: u8) -> Result<Chain, PodError> {
    let bins = Record::load(home)?.map(|r| r.bins).unwrap_or_default();
    Ok(Chain::local_cluster(NodeNetwork {
        network: NETWORK,
        subnet: &pod_subnet(node),
        ipam_dir: &home.ipam_dir(node),
        run_dir: &home.run_dir(node),
        pin_root: &pin_root(node),
        cluster_dir: &home.config_dir(),
        plugin_dirs: vec![PathBuf::from(CNI_BIN), bins],
        node_netns: netns_path(&node_netns(node)),
    }))
}

/// Runs `f` with the pod's sandbox as CNI sees it.
fn with_sandbox<T>(rec: &PodRecord, f: impl FnOnce(&Sandbox) -> T) -> T {
    let netns = netns_path(&rec.netns);
    f(&Sandbox {
        container_id: &rec.container_id,
        netns: &netns,
        namespace: &rec.namespace,
        name: &rec.name,
    })
}

/// Undoes a pod's sandbox, whatever state it is in: the supervisor stops its process when the
/// record goes; CNI DEL releases the IP, capture rules and pins; then the namespace goes.
pub fn teardown(home: &Home, rec: &PodRecord) {
    let _ = std::fs::remove_file(PodRecord::path(home, &rec.namespace, &rec.name));
    if netns_path(&rec.netns).exists() {
        kill_netns_processes(&rec.netns);
        if !rec.cni_result.is_null() {
            let deleted = chain(home, rec.node)
                .and_then(|c| Ok(with_sandbox(rec, |sb| c.del(sb, &rec.cni_result))?));
            if let Err(e) = deleted {
                eprintln!("warning: {e:#}");
            }
        }
        let _ = run("ip", &["netns", "del", &rec.netns]);
    }
    let pins = pin_root(rec.node).join(&rec.container_id);
    if pins.exists() {
        let _ = mesh_bpf::pod::detach(&mesh_bpf::PinDir::new(pins));
    }
}

/// `meshctl delete pod NAME -n NS`.
pub fn delete_pod(home: &Home, api: &Api, namespace: &str, name: &str) -> Result<(), PodError> {
    require_root("meshctl delete pod")?;
    let rec = PodRecord::load(home, namespace, name);
    let object = api.remove(Kind::Pod, namespace, name)?;
    match rec {
        Some(rec) => teardown(home, &rec),
        None if !object => {
            return Err(PodError::NotFound {
                namespace: namespace.to_string(),
                name: name.to_string(),
                scope: format!("-n {namespace}"),
            })
        }
        None => {}
    }
    println!("pod/{name} deleted");
    Ok(())
}

/// A command that runs `command` in pod `namespace/name`'s network namespace, with the pod's
/// environment and our binaries on its PATH.
fn pod_command(
    home: &Home,
    namespace: &str,
    name: &str,
    command: &[String],
) -> Result<Command, PodError> {
    let rec = PodRecord::load(home, namespace, name).ok_or_else(|| PodError::NotFound {
        namespace: namespace.to_string(),
        name: name.to_string(),
        scope: "-A".to_string(),
    })?;
    if command.is_empty() {
        return Err(PodError::NoCommand {
            usage: format!("exec {namespace}/{name}"),
        });
    }
    let bins = Record::load(home)?.map(|r| r.bins).unwrap_or_default();
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(&rec.netns).display()))
        .arg("--")
        .args(resolve_command(&bins, command))
        .envs(rec.env(&bins));
    Ok(cmd)
}

/// `meshctl exec NS/POD -- CMD`: runs in the pod's network namespace, in the foreground;
/// returns its exit code.
pub fn exec(home: &Home, namespace: &str, name: &str, command: &[String]) -> Result<i32, PodError> {
    require_root("meshctl exec")?;
    let status = pod_command(home, namespace, name, command)?
        .status()
        .map_err(|source| PodError::Run {
            program: command[0].clone(),
            source,
        })?;
    Ok(status.code().unwrap_or(128))
}

/// Runs a command in a pod's network namespace and returns its exit code and output (stdout
/// then stderr).
pub fn exec_capture(
    home: &Home,
    namespace: &str,
    name: &str,
    command: &[&str],
) -> Result<(i32, String), PodError> {
    let command: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    let out = pod_command(home, namespace, name, &command)?
        .output()
        .map_err(|source| PodError::Run {
            program: command[0].clone(),
            source,
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.code().unwrap_or(128), text))
}

/// The log file of a pod or a component (`istiod-lite`, `ztunnel-node1`, `supervisor`).
pub fn log_path(home: &Home, namespace: &str, target: &str) -> Result<PathBuf, PodError> {
    if let Some(rec) = PodRecord::load(home, namespace, target) {
        return Ok(rec.log(home));
    }
    let component = home.log(target);
    if component.exists() {
        return Ok(component);
    }
    Err(PodError::NoLog {
        namespace: namespace.to_string(),
        target: target.to_string(),
    })
}

/// `meshctl logs`: prints the log, and with `follow` keeps printing what is appended.
pub fn logs(path: &Path, follow: bool, tail: Option<usize>) -> Result<(), PodError> {
    let text = std::fs::read(path).map_err(|source| PodError::ReadLog {
        path: path.to_path_buf(),
        source,
    })?;
    let mut offset = text.len() as u64;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let from = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut stdout = std::io::stdout();
    for l in &lines[from..] {
        writeln!(stdout, "{l}").map_err(PodError::Output)?;
    }
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Ok(bytes) = std::fs::read(path) else {
            break; // the pod was deleted
        };
        if (bytes.len() as u64) > offset {
            stdout
                .write_all(&bytes[offset as usize..])
                .and_then(|()| stdout.flush())
                .map_err(PodError::Output)?;
        }
        offset = bytes.len() as u64;
    }
    Ok(())
}
