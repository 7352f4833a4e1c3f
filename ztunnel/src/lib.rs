//! ztunnel: the node proxy. This crate is being built up; today it holds the L4 authorization
//! engine (`rbac`) with Istio's semantics. Capture, HBONE and the xDS client follow.

#![forbid(unsafe_code)]

pub mod rbac;
