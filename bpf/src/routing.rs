//! The per-pod policy routing capture depends on (design (a), pitfalls P1 and P2 of
//! `docs/istio-compatibility.md` §11.4):
//!
//! | pref | rule | why |
//! |---|---|---|
//! | 10 | `iif lo to <podIP>/32 lookup 100` | locally generated traffic to the pod's own IP is seen as from `lo` (P1) |
//! | 100 | `fwmark 0x539/0xfff lookup main` | the proxy's own (marked) sockets route normally |
//! | 101 | `iif lo ipproto tcp lookup 100` | the app's TCP goes to local delivery, where sk_lookup steers it |
//! | 200 | `lookup local` | the local table, moved after the rules above |
//!
//! plus `local 0.0.0.0/0 dev lo src <podIP> table 100`. They are written with rtnetlink
//! messages from a socket opened inside the pod's netns (no `ip`, no iptables), and vanish with
//! the netns. Both [`install`] and [`release`] are idempotent, so a retried CNI ADD or a second
//! enrolment of the same pod is harmless.

use std::io::{Read, Write};
use std::net::Ipv4Addr;
use std::path::Path;

use socket2::{Domain, Protocol, Socket, Type};

use crate::Error;

/// Routing table that delivers everything locally.
pub const CAPTURE_TABLE: u32 = 100;
const MAIN_TABLE: u32 = 254;
const LOCAL_TABLE: u32 = 255;
/// The rule that steers the app's TCP to local delivery; without it nothing is captured.
pub const STEER_PREF: u32 = 101;

// rtnetlink constants (linux/netlink.h, linux/rtnetlink.h, linux/fib_rules.h).
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_NEWRULE: u16 = 32;
const RTM_DELRULE: u16 = 33;
const RTM_GETRULE: u16 = 34;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const FRA_DST: u16 = 1;
const FRA_IIFNAME: u16 = 3;
const FRA_PRIORITY: u16 = 6;
const FRA_FWMARK: u16 = 10;
const FRA_TABLE: u16 = 15;
const FRA_FWMASK: u16 = 16;
const FRA_IP_PROTO: u16 = 22;
const FR_ACT_TO_TBL: u8 = 1;
const RTA_OIF: u16 = 4;
const RTA_PREFSRC: u16 = 7;
const RTA_TABLE: u16 = 15;
const RTPROT_BOOT: u8 = 3;
const RT_SCOPE_HOST: u8 = 254;
const RTN_LOCAL: u8 = 2;
const AF_INET: u8 = 2;
const IPPROTO_TCP: u8 = 6;
/// `lo` is interface 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// One policy rule, as `ip rule` would describe it.
#[derive(Clone, Debug)]
struct Rule {
    pref: u32,
    table: u32,
    iif_lo: bool,
    to: Option<Ipv4Addr>,
    fwmark: Option<(u32, u32)>,
    tcp_only: bool,
}

impl Rule {
    fn lookup(pref: u32, table: u32) -> Rule {
        Rule {
            pref,
            table,
            iif_lo: false,
            to: None,
            fwmark: None,
            tcp_only: false,
        }
    }

    /// `RTM_NEWRULE`/`RTM_DELRULE` body: `struct fib_rule_hdr` and attributes.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64);
        let dst_len = if self.to.is_some() { 32 } else { 0 };
        let table = u8::try_from(self.table).unwrap_or(0);
        b.extend_from_slice(&[AF_INET, dst_len, 0, 0, table, 0, 0, FR_ACT_TO_TBL]);
        b.extend_from_slice(&0u32.to_ne_bytes());
        attr(&mut b, FRA_PRIORITY, &self.pref.to_ne_bytes());
        attr(&mut b, FRA_TABLE, &self.table.to_ne_bytes());
        if self.iif_lo {
            attr(&mut b, FRA_IIFNAME, b"lo\0");
        }
        if let Some(to) = self.to {
            attr(&mut b, FRA_DST, &to.octets());
        }
        if let Some((mark, mask)) = self.fwmark {
            attr(&mut b, FRA_FWMARK, &mark.to_ne_bytes());
            attr(&mut b, FRA_FWMASK, &mask.to_ne_bytes());
        }
        if self.tcp_only {
            attr(&mut b, FRA_IP_PROTO, &[IPPROTO_TCP]);
        }
        b
    }
}

fn capture_rules(pod_ip: Ipv4Addr) -> [Rule; 3] {
    [
        Rule {
            iif_lo: true,
            to: Some(pod_ip),
            ..Rule::lookup(10, CAPTURE_TABLE)
        },
        Rule {
            fwmark: Some((crate::listener::PROXY_MARK, 0xfff)),
            ..Rule::lookup(100, MAIN_TABLE)
        },
        Rule {
            iif_lo: true,
            tcp_only: true,
            ..Rule::lookup(STEER_PREF, CAPTURE_TABLE)
        },
    ]
}

/// `local 0.0.0.0/0 dev lo src <podIP> table 100`: `struct rtmsg` and attributes.
fn capture_route(pod_ip: Ipv4Addr) -> Vec<u8> {
    let mut b = Vec::with_capacity(48);
    b.extend_from_slice(&[
        AF_INET,
        0,
        0,
        0,
        CAPTURE_TABLE as u8,
        RTPROT_BOOT,
        RT_SCOPE_HOST,
        RTN_LOCAL,
    ]);
    b.extend_from_slice(&0u32.to_ne_bytes());
    attr(&mut b, RTA_TABLE, &CAPTURE_TABLE.to_ne_bytes());
    attr(&mut b, RTA_OIF, &LOOPBACK_IFINDEX.to_ne_bytes());
    attr(&mut b, RTA_PREFSRC, &pod_ip.octets());
    b
}

fn attr(b: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    b.extend_from_slice(&(len as u16).to_ne_bytes());
    b.extend_from_slice(&kind.to_ne_bytes());
    b.extend_from_slice(payload);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// A NETLINK_ROUTE socket opened in some netns (it stays bound to that netns).
struct Netlink {
    socket: Socket,
    seq: u32,
}

impl Netlink {
    fn open() -> std::io::Result<Netlink> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW,
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Sends one request and waits for its acknowledgement; `Err` carries the kernel's errno.
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> std::io::Result<()> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        (&self.socket).write_all(&msg)?;
        let mut buf = [0u8; 8192];
        loop {
            let n = (&self.socket).read(&mut buf)?;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default());
                let typ = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap_or_default());
                let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().unwrap_or_default());
                if typ == NLMSG_ERROR && seq == self.seq && at + 20 <= n {
                    let errno =
                        i32::from_ne_bytes(buf[at + 16..at + 20].try_into().unwrap_or_default());
                    return match errno {
                        0 => Ok(()),
                        e => Err(std::io::Error::from_raw_os_error(-e)),
                    };
                }
                if len < 16 {
                    break;
                }
                at += (len as usize).next_multiple_of(4);
            }
        }
    }

    /// The IPv4 rules as (priority, table), from an `RTM_GETRULE` dump.
    fn rules(&mut self) -> std::io::Result<Vec<(u32, u32)>> {
        self.seq += 1;
        let mut msg = Vec::with_capacity(28);
        msg.extend_from_slice(&28u32.to_ne_bytes());
        msg.extend_from_slice(&RTM_GETRULE.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&[AF_INET, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        (&self.socket).write_all(&msg)?;
        let mut rules = Vec::new();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = (&self.socket).read(&mut buf)?;
            let mut at = 0;
            while at + 16 <= n {
                let len =
                    u32::from_ne_bytes(buf[at..at + 4].try_into().unwrap_or_default()) as usize;
                let typ = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().unwrap_or_default());
                if len < 16 || at + len > n {
                    return Err(std::io::Error::other("malformed netlink dump"));
                }
                match typ {
                    NLMSG_DONE => return Ok(rules),
                    NLMSG_ERROR => {
                        let errno = i32::from_ne_bytes(
                            buf[at + 16..at + 20].try_into().unwrap_or_default(),
                        );
                        return Err(std::io::Error::from_raw_os_error(-errno));
                    }
                    RTM_NEWRULE if len >= 28 => {
                        let (mut pref, mut table) = (0, u32::from(buf[at + 20]));
                        let mut a = at + 28;
                        while a + 4 <= at + len {
                            let alen = u16::from_ne_bytes([buf[a], buf[a + 1]]) as usize;
                            let akind = u16::from_ne_bytes([buf[a + 2], buf[a + 3]]);
                            if alen < 4 || a + alen > at + len {
                                break;
                            }
                            let value = buf
                                .get(a + 4..a + 8)
                                .and_then(|v| v.try_into().ok())
                                .map(u32::from_ne_bytes);
                            match (akind, value) {
                                (FRA_PRIORITY, Some(v)) if alen == 8 => pref = v,
                                (FRA_TABLE, Some(v)) if alen == 8 => table = v,
                                _ => {}
                            }
                            a += alen.next_multiple_of(4);
                        }
                        rules.push((pref, table));
                    }
                    _ => {}
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// Adds; `Ok(false)` when an identical entry was already there.
    fn add(&mut self, kind: u16, body: &[u8]) -> std::io::Result<bool> {
        match self.request(kind, NLM_F_CREATE | NLM_F_EXCL, body) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes; a missing entry is fine (the kernel says ENOENT for a rule, ESRCH for a route).
    fn delete(&mut self, kind: u16, body: &[u8]) -> std::io::Result<()> {
        match self.request(kind, 0, body) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ESRCH)) => Ok(()),
            other => other,
        }
    }
}

fn in_netns(
    netns: &Path,
    what: &str,
    f: impl FnOnce(&mut Netlink) -> std::io::Result<()> + Send,
) -> Result<(), Error> {
    crate::netns::run_in(netns, || Netlink::open().and_then(|mut nl| f(&mut nl)))?
        .map_err(|e| Error::io(format!("{what} in {}", netns.display()), e))
}

/// Installs the capture rules and route in the netns at `netns` (e.g. `/run/netns/NAME` or
/// `/proc/PID/ns/net`) of a pod with `pod_ip`.
pub fn install(netns: &Path, pod_ip: Ipv4Addr) -> Result<(), Error> {
    in_netns(netns, "installing the capture routing", |nl| {
        nl.add(RTM_NEWROUTE, &capture_route(pod_ip))?;
        for rule in capture_rules(pod_ip) {
            nl.add(RTM_NEWRULE, &rule.encode())?;
        }
        // Move the local table after our rules: add it at 200, then drop the one at 0. A delete
        // by priority 0 matches any priority, so it only runs when 200 was just created (when it
        // already existed, the rule at 0 was removed by an earlier install).
        if nl.add(RTM_NEWRULE, &Rule::lookup(200, LOCAL_TABLE).encode())? {
            nl.delete(RTM_DELRULE, &Rule::lookup(0, LOCAL_TABLE).encode())?;
        }
        Ok(())
    })
}

/// Restores the pod's routing to what it was before [`install`]: first the steering rule goes
/// (from then on nothing is captured; the program alone cannot fail open, see NOTES.md), then
/// the local table returns to priority 0 and the rest is removed.
pub fn release(netns: &Path, pod_ip: Ipv4Addr) -> Result<(), Error> {
    in_netns(netns, "removing the capture routing", |nl| {
        let rules = capture_rules(pod_ip);
        nl.delete(RTM_DELRULE, &rules[2].encode())?;
        nl.add(RTM_NEWRULE, &Rule::lookup(0, LOCAL_TABLE).encode())?;
        nl.delete(RTM_DELRULE, &Rule::lookup(200, LOCAL_TABLE).encode())?;
        nl.delete(RTM_DELRULE, &rules[1].encode())?;
        nl.delete(RTM_DELRULE, &rules[0].encode())?;
        nl.delete(RTM_DELROUTE, &capture_route(pod_ip))
    })
}

/// Whether the steering rule is in place (what a CNI `CHECK` verifies).
pub fn is_installed(netns: &Path) -> Result<bool, Error> {
    let mut present = false;
    in_netns(netns, "listing the routing rules", |nl| {
        present = nl
            .rules()?
            .iter()
            .any(|&(pref, table)| pref == STEER_PREF && table == CAPTURE_TABLE);
        Ok(())
    })?;
    Ok(present)
}
