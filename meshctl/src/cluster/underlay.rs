//! The underlay: the network between a local cluster's node namespaces. Node 1 holds a bridge
//! (the switch); every node has a veth `ul0` into it with address `<underlay>.N/24`, forwards
//! IPv4, and routes every other node's pod subnet `<pods>.M.0/24` via that node's address.
//!
//! Names and addresses are arguments: meshctl's cluster and the e2e harness run side by side
//! with their own (`mc-`/`192.168.250.0/24`/`10.250.N.0/24` and `mse-`/`192.168.251.0/24`/
//! `10.251.N.0/24`).

use std::net::Ipv4Addr;

use super::host::{run, HostError};

/// How a cluster numbers its nodes' addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressing {
    /// The first three octets of the underlay's /24: node N is `<underlay>.N`.
    pub underlay: [u8; 3],
    /// The first two octets of the pod subnets: node N's pods are in `<pods>.N.0/24`.
    pub pods: [u8; 2],
}

impl Addressing {
    /// Node `n`'s address on the underlay.
    pub fn node_ip(&self, n: u8) -> Ipv4Addr {
        let [a, b, c] = self.underlay;
        Ipv4Addr::new(a, b, c, n)
    }

    /// The underlay itself, e.g. `192.168.250.0/24`.
    pub fn underlay_subnet(&self) -> String {
        format!("{}/24", self.node_ip(0))
    }

    /// Node `n`'s pod subnet, e.g. `10.250.2.0/24`.
    pub fn pod_subnet(&self, n: u8) -> String {
        let [a, b] = self.pods;
        format!("{a}.{b}.{n}.0/24")
    }
}

/// One cluster's underlay.
#[derive(Clone, Debug)]
pub struct Underlay<'a> {
    /// The bridge's name in node 1.
    pub bridge: &'a str,
    /// The node namespaces, node 1 first; they exist already.
    pub nodes: &'a [String],
    pub addressing: Addressing,
}

impl Underlay<'_> {
    /// Joins the nodes: bridge, veths, addresses, forwarding, routes to each other's pods.
    pub fn create(&self) -> Result<(), HostError> {
        let Some(hub) = self.nodes.first() else {
            return Ok(());
        };
        let bridge = self.bridge;
        run("ip", &["-n", hub, "link", "add", bridge, "type", "bridge"])?;
        run("ip", &["-n", hub, "link", "set", bridge, "up"])?;
        for (n, ns) in self.numbered() {
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            let forward = [
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ];
            run("ip", &forward)?;
            let port = format!("ul-p{n}");
            let veth = [
                "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "ul0", "netns", ns,
            ];
            run("ip", &veth)?;
            run(
                "ip",
                &["-n", hub, "link", "set", &port, "master", bridge, "up"],
            )?;
            let addr = format!("{}/24", self.addressing.node_ip(n));
            run("ip", &["-n", ns, "addr", "add", &addr, "dev", "ul0"])?;
            run("ip", &["-n", ns, "link", "set", "ul0", "up"])?;
        }
        for (n, ns) in self.numbered() {
            for (m, _) in self.numbered().filter(|(m, _)| *m != n) {
                let (subnet, via) = (
                    self.addressing.pod_subnet(m),
                    self.addressing.node_ip(m).to_string(),
                );
                run("ip", &["-n", ns, "route", "add", &subnet, "via", &via])?;
            }
        }
        Ok(())
    }

    /// The nodes with their numbers, from 1.
    fn numbered(&self) -> impl Iterator<Item = (u8, &str)> {
        (1..=u8::MAX).zip(self.nodes.iter().map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_the_node_number() {
        let a = Addressing {
            underlay: [192, 168, 251],
            pods: [10, 251],
        };
        assert_eq!(a.node_ip(2), Ipv4Addr::new(192, 168, 251, 2));
        assert_eq!(a.underlay_subnet(), "192.168.251.0/24");
        assert_eq!(a.pod_subnet(3), "10.251.3.0/24");
    }
}
