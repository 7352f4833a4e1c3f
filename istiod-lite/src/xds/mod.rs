//! Delta xDS: the encoded resource sets (`resources`) and the ADS stream that delivers them
//! (`server`).

pub mod resources;
pub mod server;

pub use resources::{build_state, XdsState};
pub use server::AdsServer;
