//! The soak's local cluster, made and changed through `meshctl`'s command line as a user would
//! (`up`, `apply`, `run`, `delete`, `down`) with its own home, [`HOME`]; its records (the
//! supervisor's status, the pod records) are read through meshctl's library. `down` runs when
//! the [`Cluster`] drops, also after a panic; `e2e/run.sh soak` runs it again from its trap.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use meshctl::cluster::home::{Home, PodRecord, Status, PIN_BASE};
use meshctl::cluster::host::netns_path;

/// The soak's home (`e2e/run.sh`'s trap removes the cluster by this name).
pub const HOME: &str = "/tmp/meshctl-soak";

pub struct Cluster {
    meshctl: PathBuf,
    pub home: Home,
    /// One object change at a time: the churn and the DENY fault both apply and delete.
    objects: Mutex<()>,
}

impl Cluster {
    /// `meshctl up --nodes 2`, with ztunnel asking for certificates of `cert_ttl` (the
    /// supervisor hands its environment to the processes it runs).
    pub fn up(bins: &Path, cert_ttl: &str) -> Result<Cluster, String> {
        let cluster = Cluster {
            meshctl: bins.join("meshctl"),
            home: Home {
                dir: PathBuf::from(HOME),
            },
            objects: Mutex::new(()),
        };
        cluster.run_with(
            &["up", "--nodes", "2", "--quiet"],
            None,
            &[("WORKLOAD_CERT_TTL", cert_ttl)],
        )?;
        Ok(cluster)
    }

    fn run_with(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<String, String> {
        let mut child = Command::new(&self.meshctl)
            .arg("--home")
            .arg(&self.home.dir)
            .args(args)
            .envs(env.iter().copied())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running meshctl: {e}"))?;
        if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
            input
                .write_all(text.as_bytes())
                .map_err(|e| format!("writing to meshctl: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("running meshctl: {e}"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(text)
        } else {
            Err(format!("meshctl {}: {}", args.join(" "), text.trim()))
        }
    }

    pub fn meshctl(&self, args: &[&str]) -> Result<String, String> {
        self.run_with(args, None, &[])
    }

    /// `meshctl apply -f -` with `yaml` on its input.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        let _one = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        self.run_with(&["apply", "-f", "-"], Some(yaml), &[])
    }

    pub fn delete_policy(&self, namespace: &str, name: &str) -> Result<String, String> {
        let _one = self.objects.lock().unwrap_or_else(|e| e.into_inner());
        self.meshctl(&["delete", "authorizationpolicy", name, "-n", namespace])
    }

    /// The pid of a running supervised component (`istiod-lite`, `ztunnel-node1`, a pod).
    pub fn pid(&self, component: &str) -> Option<u32> {
        Status::load(&self.home)?
            .components
            .into_iter()
            .find(|c| c.name == component && c.state == "running")?
            .pid
    }

    /// Restarts the supervisor counted for `component` so far.
    pub fn restarts(&self, component: &str) -> u32 {
        Status::load(&self.home)
            .and_then(|s| s.components.into_iter().find(|c| c.name == component))
            .map_or(0, |c| c.restarts)
    }

    /// A pod's network namespace and IP.
    pub fn pod(&self, namespace: &str, name: &str) -> Result<(PathBuf, Ipv4Addr), String> {
        let rec = PodRecord::load(&self.home, namespace, name)
            .ok_or_else(|| format!("no pod record for {namespace}/{name}"))?;
        let ip = rec
            .ip
            .parse()
            .map_err(|e| format!("pod {name} IP {:?}: {e}", rec.ip))?;
        Ok((netns_path(&rec.netns), ip))
    }

    /// The istiod-lite log, where each issued certificate is a line.
    pub fn istiod_log(&self) -> PathBuf {
        self.home.log("istiod-lite")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(e) = self.meshctl(&["down", "--quiet"]) {
            eprintln!("soak: {e}");
        }
    }
}

/// What a meshctl cluster would leave if `down` missed something: `mc-` network namespaces,
/// `mc-` links in this namespace, the eBPF pin directory, the home.
pub fn leftovers() -> Vec<String> {
    let mut left: Vec<String> = std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mc-"))
        .map(|n| format!("network namespace {n}"))
        .collect();
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "7: mc-ul@if6: <...>": the name is the second field, before any '@'.
            let name = line.split(": ").nth(1).unwrap_or("");
            let name = name.split('@').next().unwrap_or("");
            if name.starts_with("mc-") {
                left.push(format!("link {name}"));
            }
        }
    }
    if Path::new(PIN_BASE).exists() {
        left.push(format!("eBPF pins under {PIN_BASE}"));
    }
    if Path::new(HOME).exists() {
        left.push(format!("the home {HOME}"));
    }
    left
}

/// Polls `f` every 200 ms until it succeeds or `timeout` passes.
pub fn eventually_ok<T>(
    what: &str,
    timeout: Duration,
    f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    meshctl::cluster::host::wait_for(what, timeout, f).map_err(|e| e.to_string())
}

/// Copies a directory tree of plain files.
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
