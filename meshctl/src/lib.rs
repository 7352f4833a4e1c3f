//! meshctl: the local cluster (`up`, `down`, pods, the supervisor) and the object commands
//! (`apply`, `get`, `label`, `waypoint`) over the cluster's YAML directory, which is the local
//! cluster's API: istiod-lite and mesh-cni read it, istiod-lite writes policy status beside it.

pub mod cluster;
pub mod cni;
pub mod objects;
pub mod output;
pub mod waypoint;
