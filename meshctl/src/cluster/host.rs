//! The host side of a local cluster: running commands (`ip`, `mount`, ...), network namespaces
//! by name, an HTTP GET from inside one, and polling for a state with a deadline. Shared by
//! meshctl's cluster and the e2e harness, which differ only in names and addresses.

use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A host operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command}: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("GET http://{addr}{path} in {netns}: {reason}")]
    Http {
        netns: String,
        addr: String,
        path: String,
        reason: String,
    },
    #[error("{0} needs root (it makes network namespaces and loads eBPF): run `sudo {0}`")]
    NotRoot(String),
}

/// The file of a named network namespace (`ip netns add NAME`).
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Runs a command and returns its stdout; a failure carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| HostError::Spawn {
            program: program.to_string(),
            source,
        })?;
    if !out.status.success() {
        return Err(HostError::Failed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Refuses unless the effective uid is 0; `what` names the command in the message.
pub fn require_root(what: &str) -> Result<(), HostError> {
    // The effective uid is the second field of /proc/self/status's "Uid:" line.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    if euid != "0" {
        return Err(HostError::NotRoot(what.to_string()));
    }
    Ok(())
}

/// Kills what still runs inside a namespace that is about to be deleted.
pub fn kill_netns_processes(netns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", netns]) {
        for pid in pids.split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

/// An HTTP response as [`http_get`] reads it.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// The status line, e.g. `HTTP/1.1 503 Service Unavailable`.
    pub status_line: String,
    pub body: String,
}

impl Response {
    /// The body of a 200; otherwise the status line and body as the error.
    pub fn ok(self) -> Result<String, String> {
        if self.status == 200 {
            Ok(self.body)
        } else {
            Err(format!("{}: {}", self.status_line, self.body.trim()))
        }
    }
}

/// An HTTP/1.0 GET from inside network namespace `netns` (admin, metrics and readiness ports).
pub fn http_get(netns: &str, addr: &str, path: &str) -> Result<Response, HostError> {
    let failed = |reason: String| HostError::Http {
        netns: netns.to_string(),
        addr: addr.to_string(),
        path: path.to_string(),
        reason,
    };
    let (addr_s, path_s) = (addr.to_string(), path.to_string());
    let text = mesh_bpf::netns::run_in(&netns_path(netns), move || -> std::io::Result<String> {
        let sock: SocketAddr = addr_s.parse().map_err(std::io::Error::other)?;
        let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path_s} HTTP/1.0\r\nHost: {addr_s}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .map_err(|e| failed(e.to_string()))?
    .map_err(|e| failed(e.to_string()))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("").to_string();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| failed(format!("not an HTTP response: {status_line:?}")))?;
    Ok(Response {
        status,
        status_line,
        body: body.to_string(),
    })
}

/// A port in `netns` answers `path` with 200 (a readiness probe).
pub fn ready(netns: &str, addr: &str, path: &str) -> Result<(), String> {
    http_get(netns, addr, path)
        .map_err(|e| e.to_string())?
        .ok()
        .map(drop)
}

/// What never happened before the deadline, with the last reason it had not.
#[derive(Debug, thiserror::Error)]
#[error("{what} (waited {} s): {last}", waited.as_secs())]
pub struct Timeout<E: fmt::Debug + fmt::Display> {
    pub what: String,
    pub waited: Duration,
    pub last: E,
}

/// Polls `f` every 100 ms until it returns `Ok` or `timeout` passes.
pub fn wait_for<T, E: fmt::Debug + fmt::Display>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Result<T, E>,
) -> Result<T, Timeout<E>> {
    let end = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= end => {
                return Err(Timeout {
                    what: what.to_string(),
                    waited: timeout,
                    last,
                })
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_command_carries_its_stderr() {
        let e = run("sh", &["-c", "echo broken >&2; exit 3"]).unwrap_err();
        assert_eq!(e.to_string(), "sh -c echo broken >&2; exit 3: broken");
        assert!(matches!(
            run("/nonexistent/program", &[]),
            Err(HostError::Spawn { .. })
        ));
        assert_eq!(run("sh", &["-c", "echo out"]).unwrap(), "out\n");
    }

    #[test]
    fn wait_for_returns_the_first_success_and_times_out_with_the_last_error() {
        let mut tries = 0;
        let got = wait_for("the third try", Duration::from_secs(5), || {
            tries += 1;
            if tries == 3 {
                Ok(tries)
            } else {
                Err(format!("try {tries}"))
            }
        });
        assert_eq!(got.unwrap(), 3);
        let start = Instant::now();
        let e = wait_for("never", Duration::from_millis(250), || {
            Err::<(), _>("still no")
        })
        .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(250));
        assert_eq!(e.to_string(), "never (waited 0 s): still no");
    }
}
