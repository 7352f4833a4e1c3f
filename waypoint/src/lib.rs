//! The waypoint: the L7 proxy of a namespace. It takes HBONE from ztunnels, detects HTTP/1.1,
//! HTTP/2 and gRPC (anything else is TCP), passes each request through the L7 chain assembled
//! in [`stack`], and sends it over HBONE to an endpoint's ztunnel as its own identity.
//! [`app`] wires it together; `ARCHITECTURE.md` at the repository root names its tasks and ports.

#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod authz;
pub mod balance;
pub mod body;
pub mod detect;
pub mod forward;
pub mod headers;
pub mod inbound;
pub mod respond;
pub mod route;
pub mod route_table;
pub mod stack;
pub mod state;
pub mod target;
pub mod telemetry;
pub mod upstream;
