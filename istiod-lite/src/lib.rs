//! istiod-lite: turns cluster objects into Istio-compatible workload xDS and is the mesh CA.
//!
//! The way through: `source` (a watched YAML directory) writes the `store`; every snapshot is
//! `translate`d (pure) into resources and status; `xds` serves the resources over delta ADS;
//! `ca` signs workload certificates; `status` and `monitoring` show what happened. `testing`
//! (only for tests, feature `testing`) runs it in-process for tests.

#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod ca;
pub mod config;
pub mod grpc_tls;
pub mod metrics;
pub mod monitoring;
pub mod source;
pub mod status;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod translate;
pub mod xds;
