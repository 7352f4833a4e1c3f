//! ztunnel: the node proxy. Being built up: today it holds the L4 authorization engine
//! (`rbac`), the certificates of local identities (`identity`), the config state (`state`) and the xDS client that keeps it (`xds`). Capture and the HBONE
//! proxies follow.

#![forbid(unsafe_code)]

pub mod identity;
pub mod rbac;
pub mod state;
pub mod xds;
