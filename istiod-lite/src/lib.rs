//! istiod-lite: turns cluster objects into Istio-compatible workload xDS and is the mesh CA.

pub mod source;
pub mod store;
pub mod translate;
