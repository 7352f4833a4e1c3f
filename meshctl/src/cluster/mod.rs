//! The local cluster on this machine, laid out bottom-up; each module uses only those above it
//! in this list:
//!
//! * [`host`]: commands, network namespaces by name, `http_get` into one, `wait_for`;
//! * [`underlay`]: the network between node namespaces (names and addresses as arguments);
//! * [`home`]: the home directory, its records and the cluster's names;
//! * [`supervisor`]: the background process that runs istiod-lite, ztunnels and pods;
//! * [`pods`]: pods made the way a kubelet and a container runtime make them;
//! * [`waypoints`]: a proxy pod and a Service for each waypoint Gateway, as istiod deploys them;
//! * [`lifecycle`]: `up` and `down`.
//!
//! A cluster of N nodes is:
//! * network namespaces `mc-node1..N`, joined by an underlay bridge `mc-ul` in node 1
//!   (`192.168.250.<n>/24` on each node's `ul0`), each routing the other nodes' pod subnets
//!   (`10.250.<n>.0/24`);
//! * istiod-lite in node 1 (xDS on `192.168.250.1:15012`) reading `<home>/config`, and one
//!   ztunnel per node, all started and restarted by the supervisor (`supervisor.rs`);
//! * pods (`pods.rs`): network namespaces `mc-<namespace>_<name>` made by the CNI chain;
//! * a waypoint pod `<gateway>-0` per waypoint Gateway (`waypoints.rs`), made by the supervisor.
//!
//! Every name is recorded in `<home>/cluster.json` before it is created, so `down` removes
//! exactly what `up` made, also after a crash or a half-finished `up`.

pub mod home;
pub mod host;
pub mod lifecycle;
pub mod pods;
pub mod supervisor;
pub mod underlay;
pub mod waypoints;

pub use lifecycle::{down, up};
