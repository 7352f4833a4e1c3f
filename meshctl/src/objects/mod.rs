//! The local cluster's object API: what kubectl and the API server do, over the config directory
//! istiod-lite watches.
//!
//! Every object is one file, `<config>/<kind>/<namespace>/<name>.yaml` (`_cluster` instead of
//! the namespace for cluster-scoped kinds; the layout is `mesh_core::cluster_dir`'s), replaced
//! atomically, and checked with istiod-lite's own parser (`cluster_dir::parse_documents`) before
//! it is written, so what istiod-lite would refuse never reaches it. Policy status is
//! istiod-lite's, in `<status>/<kind>/<namespace>/<name>.yaml`; reads merge it in as `.status`.
//!
//! Like the API server: `apply` merges three ways (what you apply, what you applied last, what is
//! stored), so labels set with `label` survive a re-apply; `status`, `creationTimestamp` and
//! `generation` belong to the cluster; `default`, `istio-system` and `kube-system` always exist.
//!
//! Bottom-up: `resource` (kinds' names), `error`, `names` (checks), `fields`, `merge`,
//! `input` (`-f`), `store` (the files), then `api` on top.

mod api;
mod error;
mod fields;
#[cfg(test)]
pub(crate) mod fixture;
mod input;
mod merge;
mod names;
mod resource;
mod store;

pub use api::{Api, Outcome};
pub use error::ApiError;
pub(crate) use fields::{labels_of, str_field};
pub use merge::LAST_APPLIED_ANNOTATION;
pub use resource::{supported_resources, Resource};
pub use store::BUILTIN_NAMESPACES;
