//! Library shared by the mesh binaries: the wire protos, SPIFFE identities, the Kubernetes object
//! model that every config source produces, and the TLS settings both ends of a connection agree on.

#![forbid(unsafe_code)]

pub mod hbone;
pub mod identity;
pub mod k8s;
pub mod mtls;
pub mod proto;
pub mod tls;

/// Type URL of `istio.workload.Address` resources (workloads and services).
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of `istio.security.Authorization` resources (L4 policies).
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";
