//! ztunnel: the node proxy, in the shape of Istio's: `state` (the one source of truth, written
//! by `xds`'s handlers on the shared xDS client, read by the proxies; certificates of local
//! workloads come from the shared identity manager in `mesh_core::identity`), `rbac` (L4
//! authorization), the decisions of the data path (`inbound`, `outbound`), the per-pod proxies
//! inside pod network namespaces (`inpod`), the node's pods and their capture (`pods`, fed by the
//! CNI plugin through `agent`), `telemetry` (Istio's metrics, access log) and the HTTP ports
//! (`admin`). `app` wires them into the `ztunnel` binary.

#![forbid(unsafe_code)]

pub mod admin;
pub mod agent;
pub mod app;
pub mod connections;
pub mod inbound;
pub mod inpod;
pub mod outbound;
pub mod pods;
pub mod rbac;
pub mod state;
pub mod telemetry;
pub mod xds;
