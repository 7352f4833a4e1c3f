//! mesh-echo: the sample server of the demo and the benchmarks, and the clients that talk to it.
//!
//! One TCP port answers HTTP/1.1, prior-knowledge h2c and gRPC (`server`). Plain requests get a
//! JSON description of themselves (`http`), gRPC calls the `mesh.echo.v1.Echo` service (`grpc`);
//! both can be asked to misbehave (`fault`). `config` says who the server is, `response` is what
//! handlers hand back (durations like `150ms` are read by `mesh_core::time_text`), and `client` holds the `get` and
//! `grpc` subcommands a demo pod runs instead of curl; `relay` is a plain TCP forwarder, the
//! floor the data-path benchmark measures ztunnel against; `tcp_echo` sends raw TCP back, byte for
//! byte, for the soak.
//!
//! Other crates embed the server with [`serve`]:
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let port = listener.local_addr()?.port();
//! let config = mesh_echo::Config::new("echo", "v1").expect("a valid name");
//! tokio::spawn(mesh_echo::serve(listener, config, std::future::pending()));
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod fault;
pub mod grpc;
pub mod http;
pub mod relay;
pub mod response;
pub mod server;
pub mod tcp_echo;

pub use config::Config;
pub use server::serve;
