//! A lab for root-only tests: named network namespaces joined by veth pairs, with addresses, and
//! optionally the bpffs pins of the pods in them.
//!
//! The lab owns everything it creates and removes it by exact name when it drops, also when the
//! test panics (drop runs while unwinding); a leftover of an aborted run with the same name is
//! removed before it is created again. Each test picks its own names (its own prefix, e.g.
//! `spk-*`, `zte-*`), so suites running side by side never touch each other's namespaces.
//!
//! Setup failures panic (this is test code); cleanup failures are printed and cleanup goes on.

use std::io::ErrorKind;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::sh;

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";

/// The path `ip netns` gives the named namespace (what `setns` and the loaders take).
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// Network namespaces, veths and pins a test created; see the module doc.
#[derive(Debug)]
pub struct Lab {
    /// In creation order; each may hold a pin directory `<pin_root>/<name>`.
    netns: Vec<String>,
    pin_root: Option<PathBuf>,
    /// Whether the lab mounted bpffs (then it unmounts it), or found it mounted.
    mounted_bpffs: bool,
}

impl Lab {
    /// An empty lab. With `pin_root`, the pods' pins live under it, one directory per namespace
    /// ([`Lab::pin_dir`]); bpffs is mounted at [`BPFFS`] if it is not yet, and unmounted on drop
    /// then.
    pub fn new(pin_root: Option<&str>) -> Lab {
        // The guard exists before anything is created, so a failure below still cleans up.
        let mut lab = Lab {
            netns: Vec::new(),
            pin_root: pin_root.map(PathBuf::from),
            mounted_bpffs: false,
        };
        if lab.pin_root.is_some() && !is_bpffs(BPFFS) {
            sh(&["mount", "-t", "bpf", "bpf", BPFFS]);
            lab.mounted_bpffs = true;
        }
        lab
    }

    /// Two pods, each in its own namespace, joined by a veth pair named `eth0` at both ends, with
    /// their addresses on one /24; pins under `pin_root`. The host namespace never sees either
    /// end of the veth.
    pub fn pod_pair(pin_root: &str, a: (&str, Ipv4Addr), b: (&str, Ipv4Addr)) -> Lab {
        let mut lab = Lab::new(Some(pin_root));
        lab.add_netns(a.0);
        lab.add_netns(b.0);
        lab.add_veth((a.0, "eth0"), (b.0, "eth0"));
        for (ns, ip) in [a, b] {
            lab.add_address(ns, "eth0", &format!("{ip}/24"));
        }
        lab
    }

    /// Creates the namespace `name` (after removing a leftover of that name and its pins) with
    /// its loopback up, and returns its path.
    pub fn add_netns(&mut self, name: &str) -> PathBuf {
        self.remove_netns(name);
        // Owned from here on, so a failure while creating it still removes it.
        self.netns.push(name.to_owned());
        sh(&["ip", "netns", "add", name]);
        sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
        netns_path(name)
    }

    /// A veth pair: device `a.1` in namespace `a.0`, its peer `b.1` in namespace `b.0`. Created
    /// inside `a.0` with the peer moved straight into `b.0`; both go when their namespaces do.
    pub fn add_veth(&self, a: (&str, &str), b: (&str, &str)) {
        sh(&[
            "ip", "-n", a.0, "link", "add", a.1, "type", "veth", "peer", "name", b.1, "netns", b.0,
        ]);
    }

    /// Gives `dev` in namespace `netns` the address `cidr` (e.g. `10.250.0.1/24`) and sets it up.
    pub fn add_address(&self, netns: &str, dev: &str, cidr: &str) {
        sh(&["ip", "-n", netns, "addr", "add", cidr, "dev", dev]);
        sh(&["ip", "-n", netns, "link", "set", dev, "up"]);
    }

    /// The pin directory of the pod in namespace `netns`: `<pin_root>/<netns>`.
    ///
    /// Panics if the lab was made without a pin root.
    pub fn pin_dir(&self, netns: &str) -> PathBuf {
        self.pin_root
            .as_deref()
            .expect("this lab has no pin root")
            .join(netns)
    }

    /// Removes the namespace `name` and its pin directory if they exist.
    fn remove_netns(&self, name: &str) {
        if self.pin_root.is_some() {
            remove_pins(&self.pin_dir(name));
        }
        delete_netns(name);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Pins first, then the namespaces (as the loaders' own detach does), then the mount.
        if self.pin_root.is_some() {
            for name in &self.netns {
                remove_pins(&self.pin_dir(name));
            }
        }
        if let Some(root) = &self.pin_root {
            match std::fs::remove_dir(root) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => eprintln!("cleanup: removing {}: {e}", root.display()),
            }
        }
        for name in self.netns.iter().rev() {
            delete_netns(name);
        }
        // Only when nothing else is pinned there: another suite's or cluster's pins must stay.
        // (The kernel's own `maps.debug` and `progs.debug` do not count.)
        let unused = std::fs::read_dir(BPFFS).is_ok_and(|d| {
            d.flatten()
                .all(|e| matches!(e.file_name().to_str(), Some("maps.debug" | "progs.debug")))
        });
        if self.mounted_bpffs && unused {
            let _ = Command::new("umount").arg(BPFFS).status();
        }
    }
}

/// Deletes the namespace `name` if it exists (its veth ends go with it).
fn delete_netns(name: &str) {
    if netns_path(name).exists() {
        let status = Command::new("ip").args(["netns", "del", name]).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("cleanup: ip netns del {name}: {status:?}");
        }
    }
}

/// Unpins everything in the pin directory `dir` (pins are files on bpffs; the kernel objects go
/// with their last reference) and removes the directory. An absent directory is fine.
fn remove_pins(dir: &Path) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return,
        Err(e) => {
            eprintln!("cleanup: reading {}: {e}", dir.display());
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = std::fs::remove_file(&path) {
            eprintln!("cleanup: unpinning {}: {e}", path.display());
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        eprintln!("cleanup: removing {}: {e}", dir.display());
    }
}

/// Whether `path` is a mounted bpffs (`stat -f` names its type, as the suites' scripts check).
fn is_bpffs(path: &str) -> bool {
    sh(&["stat", "-f", "-c", "%T", path]).trim() == "bpf_fs"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs root; uses the `spk-` prefix of bpf's suite, so never run it beside that suite.
    #[test]
    #[ignore = "needs root and creates network namespaces; run with --ignored"]
    fn a_panicking_test_leaves_nothing_behind() {
        let (a, b) = ("spk-lab-probe-a", "spk-lab-probe-b");
        let outcome = std::thread::spawn(move || {
            let mut lab = Lab::new(None);
            lab.add_netns(a);
            lab.add_netns(b);
            lab.add_veth((a, "eth0"), (b, "eth0"));
            lab.add_address(a, "eth0", "10.249.0.1/24");
            assert!(netns_path(a).exists() && netns_path(b).exists());
            panic!("the test fails here");
        })
        .join();
        assert!(outcome.is_err(), "the lab's user panicked");
        assert!(!netns_path(a).exists(), "{a} left behind");
        assert!(!netns_path(b).exists(), "{b} left behind");
    }
}
