//! ztunnel: the node proxy. Being built up, in the shape of Istio's: `state` (the one source
//! of truth, written by `xds`, read by the proxies), `identity` (certificates of local
//! workloads), `rbac` (L4 authorization), and the decisions of the data path, `inbound`
//! (admitting HBONE streams) and `outbound` (routing captured connections). The listeners
//! inside pod network namespaces, eBPF capture and metrics come next.

#![forbid(unsafe_code)]

pub mod connections;
pub mod identity;
pub mod inbound;
pub mod inpod;
pub mod outbound;
pub mod rbac;
pub mod state;
pub mod xds;
