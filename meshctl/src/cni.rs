//! Running a CNI chain exactly as a container runtime (libcni) does, for the local cluster and
//! the end-to-end tests: each plugin is executed with the `CNI_*` environment and its network
//! configuration on stdin, inside the node's network namespace; ADD runs the plugins in order,
//! each receiving the previous one's result as `prevResult`; DEL runs them in reverse with the
//! cached ADD result; CHECK runs them in order with it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

pub const CNI_VERSION: &str = "1.0.0";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("running the CNI plugin {0}: {1}")]
    Spawn(String, std::io::Error),
    #[error("no CNI plugin {0:?} in {1}")]
    NotFound(String, String),
    #[error("CNI {command} by {plugin} failed: {output}")]
    Failed {
        plugin: String,
        command: String,
        output: String,
    },
    #[error("CNI plugin {0} printed no result: {1}")]
    NoResult(String, serde_json::Error),
}

/// The pod sandbox a chain runs for.
pub struct Sandbox<'a> {
    pub container_id: &'a str,
    /// The sandbox's network namespace, e.g. `/run/netns/NAME`.
    pub netns: &'a Path,
    pub namespace: &'a str,
    pub name: &'a str,
}

/// A network's plugin list (as a `.conflist` has it) and where its plugins are.
pub struct Chain {
    pub network: String,
    pub plugins: Vec<Value>,
    /// `CNI_PATH`: directories searched for a plugin named by its `type`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The node's network namespace, where the plugins run (None: the caller's).
    pub node_netns: Option<PathBuf>,
}

/// Where one node of a local cluster keeps what its chain needs.
pub struct NodeNetwork<'a> {
    /// The network's name (`CNI_NETWORK`'s `name`).
    pub network: &'a str,
    /// The node's pod subnet, e.g. `10.250.1.0/24`.
    pub subnet: &'a str,
    /// host-local's lease directory.
    pub ipam_dir: &'a Path,
    /// mesh-cni's: where the node's ztunnel listens for enrolments, the node's bpffs pins, and
    /// the directory istiod-lite reads pods from.
    pub run_dir: &'a Path,
    pub pin_root: &'a Path,
    pub cluster_dir: &'a Path,
    /// `CNI_PATH`: the Debian plugins' directory and the one holding `mesh-cni`.
    pub plugin_dirs: Vec<PathBuf>,
    /// The node's network namespace, where the plugins run.
    pub node_netns: PathBuf,
}

impl Chain {
    /// The local cluster's chain as a runtime's `.conflist` lists it: the cluster network
    /// (`bridge` on `cni0` with `host-local` addresses), then `mesh-cni`.
    pub fn local_cluster(node: NodeNetwork) -> Chain {
        Chain {
            network: node.network.to_string(),
            plugins: vec![
                json!({
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": node.subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": node.ipam_dir,
                    },
                }),
                json!({
                    "type": "mesh-cni",
                    "run_dir": node.run_dir,
                    "pin_root": node.pin_root,
                    "cluster_dir": node.cluster_dir,
                }),
            ],
            plugin_dirs: node.plugin_dirs,
            node_netns: Some(node.node_netns),
        }
    }

    /// ADD: returns the last plugin's result (what a runtime caches for DEL and CHECK).
    pub fn add(&self, sandbox: &Sandbox) -> Result<Value, CniError> {
        let mut prev = Value::Null;
        for conf in &self.plugins {
            let out = self.exec(conf, &prev, sandbox, "ADD", "eth0")?;
            let plugin = conf["type"].as_str().unwrap_or_default().to_string();
            prev = serde_json::from_slice(&out).map_err(|e| CniError::NoResult(plugin, e))?;
        }
        Ok(prev)
    }

    /// DEL, in reverse order, with the cached ADD result.
    pub fn del(&self, sandbox: &Sandbox, cached: &Value) -> Result<(), CniError> {
        for conf in self.plugins.iter().rev() {
            self.exec(conf, cached, sandbox, "DEL", "eth0")?;
        }
        Ok(())
    }

    /// CHECK, in order, with the cached ADD result.
    pub fn check(&self, sandbox: &Sandbox, cached: &Value) -> Result<(), CniError> {
        for conf in &self.plugins {
            self.exec(conf, cached, sandbox, "CHECK", "eth0")?;
        }
        Ok(())
    }

    /// What runtimes do first: the sandbox's loopback, by the `loopback` plugin.
    pub fn loopback(&self, sandbox: &Sandbox) -> Result<(), CniError> {
        let conf = json!({"name": "cni-loopback", "type": "loopback"});
        self.exec(&conf, &Value::Null, sandbox, "ADD", "lo")
            .map(|_| ())
    }

    fn find(&self, plugin: &str) -> Result<PathBuf, CniError> {
        self.plugin_dirs
            .iter()
            .map(|d| d.join(plugin))
            .find(|p| p.is_file())
            .ok_or_else(|| CniError::NotFound(plugin.to_string(), self.cni_path()))
    }

    fn cni_path(&self) -> String {
        self.plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(":")
    }

    fn exec(
        &self,
        conf: &Value,
        prev: &Value,
        sandbox: &Sandbox,
        command: &str,
        ifname: &str,
    ) -> Result<Vec<u8>, CniError> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let program = self.find(&plugin)?;
        let mut conf = conf.clone();
        conf["cniVersion"] = json!(CNI_VERSION);
        if conf.get("name").is_none() {
            conf["name"] = json!(self.network);
        }
        if !prev.is_null() {
            conf["prevResult"] = prev.clone();
        }
        let mut cmd = match &self.node_netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display()))
                    .arg("--")
                    .arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let mut child = cmd
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", sandbox.container_id)
            .env("CNI_NETNS", sandbox.netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_PATH", self.cni_path())
            .env(
                "CNI_ARGS",
                format!(
                    "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                    sandbox.namespace, sandbox.name, sandbox.container_id
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| CniError::Spawn(program.display().to_string(), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(conf.to_string().as_bytes())
                .map_err(|e| CniError::Spawn(program.display().to_string(), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| CniError::Spawn(program.display().to_string(), e))?;
        if !out.status.success() {
            return Err(CniError::Failed {
                plugin: program.display().to_string(),
                command: command.to_string(),
                output: format!(
                    "{} {}",
                    String::from_utf8_lossy(&out.stdout).trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(out.stdout)
    }
}
