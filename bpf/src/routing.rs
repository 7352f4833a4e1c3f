//! The per-pod policy routing capture depends on (design (a), pitfalls P1 and P2):
//!
//! | pref | rule | why |
//! |---|---|---|
//! | 10 | `iif lo to <podIP>/32 lookup 100` | locally generated traffic to the pod's own IP is seen as from `lo` (P1) |
//! | 100 | `fwmark 0x539/0xfff lookup main` | the proxy's own (marked) sockets route normally |
//! | 101 | `iif lo ipproto tcp lookup 100` | the app's TCP goes to local delivery, where sk_lookup steers it |
//! | 200 | `lookup local` | the local table, moved after the rules above |
//!
//! plus `local 0.0.0.0/0 dev lo src <podIP> table 100`. Rules and route vanish with the netns.
//!
//! Today these are set with iproute2 (`ip -n <name>`), so the netns must be a named one under
//! `/run/netns`; setting them through netlink is the next step.

use std::net::Ipv4Addr;
use std::process::Command;

use crate::Error;

/// Routing table that delivers everything locally.
pub const CAPTURE_TABLE: &str = "100";

fn ip(netns: &str, args: &[&str]) -> Result<(), Error> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(netns)
        .args(args)
        .output()
        .map_err(|e| Error::io("running `ip` (install iproute2)", e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::io(
        format!("ip -n {netns} {}", args.join(" ")),
        std::io::Error::other(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    ))
}

/// Installs the capture rules and route in the named netns `netns` of a pod with `pod_ip`.
pub fn install(netns: &str, pod_ip: Ipv4Addr) -> Result<(), Error> {
    let ip32 = format!("{pod_ip}/32");
    let src = pod_ip.to_string();
    ip(
        netns,
        &[
            "rule",
            "add",
            "pref",
            "10",
            "iif",
            "lo",
            "to",
            &ip32,
            "lookup",
            CAPTURE_TABLE,
        ],
    )?;
    ip(
        netns,
        &[
            "rule",
            "add",
            "pref",
            "100",
            "fwmark",
            "0x539/0xfff",
            "lookup",
            "main",
        ],
    )?;
    ip(
        netns,
        &[
            "rule",
            "add",
            "pref",
            "101",
            "iif",
            "lo",
            "ipproto",
            "tcp",
            "lookup",
            CAPTURE_TABLE,
        ],
    )?;
    ip(netns, &["rule", "add", "pref", "200", "lookup", "local"])?;
    ip(netns, &["rule", "del", "pref", "0"])?;
    ip(
        netns,
        &[
            "route",
            "add",
            "local",
            "0.0.0.0/0",
            "dev",
            "lo",
            "src",
            &src,
            "table",
            CAPTURE_TABLE,
        ],
    )
}

/// Lets the pod's traffic go uncaptured again: removes rule 101 (without it nothing is steered
/// to local delivery; the program alone cannot fail open, see NOTES.md).
pub fn release(netns: &str) -> Result<(), Error> {
    ip(netns, &["rule", "del", "pref", "101"])
}
