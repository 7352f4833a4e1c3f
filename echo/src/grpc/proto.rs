//! The messages of `mesh.echo.v1.Echo`, declared with prost's derive instead of generated from a
//! `.proto` file, so building needs no `protoc`. The schema they implement, for clients written
//! in other languages:
//!
//! ```proto
//! syntax = "proto3";
//! package mesh.echo.v1;
//!
//! service Echo {
//!   rpc Echo(EchoRequest) returns (EchoResponse);
//! }
//!
//! message EchoRequest {
//!   string message = 1;
//! }
//!
//! message EchoResponse {
//!   string message = 1;            // the request's message, unchanged
//!   string service = 2;            // the server's --name
//!   string version = 3;            // the server's --version
//!   string peer = 4;               // the remote IP:port the server's socket sees
//!   map<string, string> metadata = 5; // the request's custom metadata
//! }
//! ```

use std::collections::BTreeMap;

/// The fully qualified service name.
pub const SERVICE: &str = "mesh.echo.v1.Echo";

/// The HTTP/2 `:path` of the one method.
pub const ECHO_PATH: &str = "/mesh.echo.v1.Echo/Echo";

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
}

// A BTreeMap rather than prost's default HashMap so printed responses list metadata in a stable
// order that scripts and people can diff.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct EchoResponse {
    #[prost(string, tag = "1")]
    pub message: String,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    pub version: String,
    #[prost(string, tag = "4")]
    pub peer: String,
    #[prost(btree_map = "string, string", tag = "5")]
    pub metadata: BTreeMap<String, String>,
}
