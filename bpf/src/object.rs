//! The embedded BPF object (`bpf/sk_lookup.c`, built by `build.rs`) and the types whose layout
//! it shares with the C source. Keep both sides in step.

use std::net::Ipv4Addr;

/// The compiled `sk_lookup` object, 8-byte aligned as the ELF parser expects.
pub static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sk_lookup.bpf.o"));

/// Name of the program function (`SEC("sk_lookup") int pod_capture(...)`).
pub const PROGRAM: &str = "pod_capture";
/// Map names as declared in the C source.
pub const MAP_CFG: &str = "cfg";
pub const MAP_SOCKS: &str = "socks";
pub const MAP_STATS: &str = "stats";

/// `struct pod_config` in the C source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodConfig {
    /// Pod IPv4 address in network byte order, as `bpf_sk_lookup.local_ip4` carries it.
    pod_ip4: u32,
    enabled: u32,
    fail_closed: u32,
}

// SAFETY: `PodConfig` is `repr(C)`, made only of `u32`s, has no padding and every bit pattern
// is a valid value, so it may be copied to and from the map's bytes.
unsafe impl aya::Pod for PodConfig {}

impl PodConfig {
    pub fn new(pod_ip: Ipv4Addr, enabled: bool, fail_closed: bool) -> Self {
        Self {
            pod_ip4: u32::from_ne_bytes(pod_ip.octets()),
            enabled: enabled.into(),
            fail_closed: fail_closed.into(),
        }
    }

    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.pod_ip4.to_ne_bytes())
    }

    pub fn enabled(&self) -> bool {
        self.enabled != 0
    }

    pub fn fail_closed(&self) -> bool {
        self.fail_closed != 0
    }
}

/// Keys of the `socks` SOCKMAP (`SOCK_*` in the C source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockSlot {
    /// The proxy's outbound listener (15001): connections the pod's apps make.
    Outbound = 0,
    /// The proxy's plaintext inbound listener (15006): connections to the pod from outside.
    Inbound = 1,
    /// The proxy's HBONE listener (15008): tunnels from peers to this pod.
    Hbone = 2,
}

/// Keys of the `stats` array (`enum counter` in the C source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    OutboundAssigned = 0,
    InboundAssigned = 1,
    /// Not for the proxy: left to the kernel's normal socket lookup.
    Passed = 2,
    /// The proxy's socket was missing and the pod is fail-closed: the SYN was dropped.
    NoSocketDropped = 3,
    /// The proxy's socket was missing and the pod is fail-open: the SYN went on uncaptured.
    NoSocketPassed = 4,
}

impl Counter {
    pub const ALL: [Counter; 5] = [
        Counter::OutboundAssigned,
        Counter::InboundAssigned,
        Counter::Passed,
        Counter::NoSocketDropped,
        Counter::NoSocketPassed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::OutboundAssigned => "outbound_assigned",
            Counter::InboundAssigned => "inbound_assigned",
            Counter::Passed => "passed",
            Counter::NoSocketDropped => "no_socket_dropped",
            Counter::NoSocketPassed => "no_socket_passed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_ip_is_stored_in_network_byte_order() {
        let cfg = PodConfig::new(Ipv4Addr::new(10, 250, 0, 1), true, true);
        // The first byte in memory is the first octet, whatever the host's endianness.
        assert_eq!(cfg.pod_ip4.to_ne_bytes(), [10, 250, 0, 1]);
        assert_eq!(cfg.pod_ip(), Ipv4Addr::new(10, 250, 0, 1));
        assert_eq!(std::mem::size_of::<PodConfig>(), 12);
    }
}
