//! What the project's tests share, and nothing else: this crate is only ever a dev-dependency
//! (and a dependency of the `e2e` test crate).
//!
//! * [`lab`]: named network namespaces joined by veth pairs, with their bpffs pins, all removed by
//!   exact name when the [`Lab`] drops (also when the test panics);
//! * [`command`]: [`sh`], run a command and panic with its stderr if it fails;
//! * [`poll`]: [`eventually`] and [`eventually_async`], poll a check until it holds or a deadline
//!   passes, then panic with the check's last error;
//! * [`fuzz`](mod@fuzz): [`fuzz()`], drive a parser of outside input with inputs mutated from
//!   seeds, as a plain test.
//!
//! The control-plane harness (an in-process istiod-lite with its own config directory, token file
//! and state directory) is not here but in istiod-lite itself, as `istiod_lite::testing` behind
//! its `testing` feature (istiod-lite/src/testing.rs). It needs istiod-lite's internals
//! (`Config::for_test`, `app::start`), and istiod-lite's own tests use it: kept in this crate, it
//! would make this crate depend on istiod-lite while istiod-lite's tests depend on this crate, and
//! every user of the lab (bpf's tests) would build the whole control plane for nothing.

#![forbid(unsafe_code)]

pub mod command;
pub mod fuzz;
pub mod lab;
pub mod poll;

pub use command::sh;
pub use fuzz::fuzz;
pub use lab::{netns_path, Lab};
pub use poll::{eventually, eventually_async, Check};
