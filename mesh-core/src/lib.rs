//! Library shared by the mesh binaries: the wire protos, SPIFFE identities, the Kubernetes object
//! model that every config source produces, the cluster directory (the local cluster's API), the
//! TLS settings both ends of a connection agree on, and the plumbing every proxy shares: the
//! control-plane channel, the delta-xDS client, the identity manager (certificates from the CA)
//! and the plain HTTP ports.

// `deny`, not `forbid`: the allocator calls in `memory` are the one allowed exception.
#![deny(unsafe_code)]

pub mod admin_port;
pub mod cluster_dir;
pub mod control_plane;
pub mod hbone;
pub mod identity;
pub mod k8s;
pub mod memory;
pub mod mtls;
pub mod node;
pub mod proto;
pub mod splice;
pub mod time_text;
pub mod tls;
pub mod xds;

/// Type URL of `istio.workload.Address` resources (workloads and services).
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of `istio.security.Authorization` resources (L4 policies).
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";
/// Type URL of our `mesh.waypoint.v1.WaypointService` resources (what a waypoint serves).
pub const WAYPOINT_SERVICE_TYPE_URL: &str = "type.googleapis.com/mesh.waypoint.v1.WaypointService";
