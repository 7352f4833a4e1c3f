//! Per-pod traffic capture without iptables (design (a)): an `sk_lookup` program in each pod's
//! network namespace steers new TCP connections into the node proxy's listeners, which live in
//! that namespace and are held in a pinned SOCKMAP. The design and the facts it rests on:
//! `docs/istio-compatibility.md` §11.
//!
//! * [`pod`] attaches the program to a pod netns and pins link and maps under one directory, and
//!   removes those pins again.
//! * [`proxy_sockets`] reopens a pod's pinned SOCKMAP so the proxy can install its listeners.
//! * [`netns`] and [`listener`] create those listeners inside the pod netns.
//! * [`routing`] sets the pod's policy routing the capture depends on.
//! * [`object`] is the embedded BPF object and the layout it shares with the C source.

pub mod bpffs;
pub mod error;
pub mod listener;
pub mod netns;
pub mod object;
pub mod pod;
pub mod proxy_sockets;
pub mod routing;

pub use error::Error;
pub use object::{Counter, PodConfig, SockSlot};
pub use pod::{capture, release, PinDir, PodSpec, Stats};
pub use proxy_sockets::ProxySockets;
