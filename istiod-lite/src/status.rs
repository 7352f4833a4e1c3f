//! Policy status: the conditions translation computed, given `lastTransitionTime` (kept while a
//! condition's status is unchanged) and `observedGeneration`, published for readers.
//!
//! Without Kubernetes, status lives in a directory, one YAML file per object at
//! `<status-dir>/<kind>/<namespace>/<name>.yaml` (the cluster directory's layout,
//! `mesh_core::cluster_dir::status_path`) shaped like the object's `status` in
//! `kubectl get -o yaml`, and on the monitoring port at `/debug/status` (JSON). Files of objects
//! that no longer exist are removed. With Kubernetes, the same conditions would be written to
//! the objects' status subresource.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mesh_core::cluster_dir::{self, Depth};
use mesh_core::k8s::{Kind, ObjectKey};
use serde::Serialize;

use crate::store::Snapshot;
use crate::translate::Condition;

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatusCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    pub last_transition_time: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStatus {
    pub api_version: String,
    pub kind: String,
    pub metadata: StatusMeta,
    pub status: Conditions,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct StatusMeta {
    pub name: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Conditions {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<StatusCondition>,
    /// Gateway API routes: the conditions per parent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub parents: Vec<ParentStatus>,
}

/// Gateway API's `RouteParentStatus`.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentStatus {
    pub parent_ref: mesh_core::k8s::ParentReference,
    pub controller_name: String,
    pub conditions: Vec<StatusCondition>,
}

/// The controller name routes' parent statuses carry (Istio's).
pub const CONTROLLER_NAME: &str = "istio.io/gateway-controller";

fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::AuthorizationPolicy | Kind::PeerAuthentication => "security.istio.io/v1",
        Kind::Gateway | Kind::HttpRoute | Kind::GrpcRoute => "gateway.networking.k8s.io/v1",
        _ => "v1",
    }
}

fn now_rfc3339() -> String {
    mesh_core::time_text::rfc3339(std::time::SystemTime::now())
}

/// Keeps the current status of every object; [`StatusBook::update`] says which files to write.
pub struct StatusBook {
    dir: Option<PathBuf>,
    current: BTreeMap<ObjectKey, ObjectStatus>,
    /// Whether files left by an earlier run have been swept.
    swept: bool,
}

/// File work decided by an update, done outside the book's lock (and off the async runtime).
#[derive(Default)]
pub struct StatusFiles {
    writes: Vec<(PathBuf, ObjectStatus)>,
    removals: Vec<PathBuf>,
    /// On the first update: the directory to sweep, and every file that should stay.
    sweep: Option<(PathBuf, std::collections::HashSet<PathBuf>)>,
}

impl StatusFiles {
    pub fn apply(self) {
        for (path, status) in &self.writes {
            write_status(path, status);
        }
        for path in &self.removals {
            remove_status(path);
        }
        if let Some((dir, keep)) = self.sweep {
            // Nothing to sweep when no status was ever written.
            let found = cluster_dir::walk(&dir, Depth::Recursive).unwrap_or_default();
            let stale = found
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !keep.contains(p));
            for path in stale {
                remove_status(&path);
            }
        }
    }
}

fn remove_status(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove status file");
        }
    }
}

impl StatusBook {
    pub fn new(dir: Option<PathBuf>) -> Self {
        StatusBook {
            dir,
            current: BTreeMap::new(),
            swept: false,
        }
    }

    pub fn all(&self) -> Vec<ObjectStatus> {
        self.current.values().cloned().collect()
    }

    /// Objects with a condition that is not True, by (kind, reason).
    pub fn not_accepted(&self) -> BTreeMap<(String, String), i64> {
        let mut out = BTreeMap::new();
        for (key, st) in &self.current {
            let in_parents = st.status.parents.iter().flat_map(|p| &p.conditions);
            for c in st
                .status
                .conditions
                .iter()
                .chain(in_parents)
                .filter(|c| c.status != "True")
            {
                *out.entry((key.kind.to_string(), c.reason.clone()))
                    .or_insert(0) += 1;
            }
        }
        out
    }

    fn path(dir: &Path, key: &ObjectKey) -> PathBuf {
        cluster_dir::status_path(dir, key)
    }

    /// Applies the statuses of a new translation. Says in the log, once per change, when an
    /// object is not (or no longer) fully accepted. Returns the file work to do.
    pub fn update(
        &mut self,
        statuses: &BTreeMap<ObjectKey, Vec<Condition>>,
        snapshot: &Snapshot,
    ) -> StatusFiles {
        let mut next = BTreeMap::new();
        for (key, conditions) in statuses {
            let generation = object_generation(snapshot, key);
            let previous = self.current.get(key);
            let make = |c: &Condition| {
                let status = if c.status { "True" } else { "False" }.to_string();
                let earlier: Option<&Vec<StatusCondition>> = match &c.parent {
                    None => previous.map(|p| &p.status.conditions),
                    Some(parent) => previous.and_then(|p| {
                        p.status
                            .parents
                            .iter()
                            .find(|ps| ps.parent_ref == **parent)
                            .map(|ps| &ps.conditions)
                    }),
                };
                let before = earlier.and_then(|list| list.iter().find(|o| o.type_ == c.type_));
                let changed = before.is_none_or(|o| {
                    o.status != status || o.reason != c.reason || o.message != c.message
                });
                if changed && !c.status && c.type_ != "Programmed" {
                    tracing::warn!(object = %key, condition = c.type_, reason = c.reason,
                            message = %c.message, "policy not enforced as written");
                }
                let last = before
                    .filter(|o| o.status == status)
                    .map(|o| o.last_transition_time.clone())
                    .unwrap_or_else(now_rfc3339);
                StatusCondition {
                    type_: c.type_.to_string(),
                    status,
                    reason: c.reason.to_string(),
                    message: c.message.clone(),
                    observed_generation: generation,
                    last_transition_time: last,
                }
            };
            let mut flat = Vec::new();
            let mut parents: Vec<ParentStatus> = Vec::new();
            for c in conditions {
                let made = make(c);
                match &c.parent {
                    None => flat.push(made),
                    Some(parent) => match parents.iter_mut().find(|p| p.parent_ref == **parent) {
                        Some(p) => p.conditions.push(made),
                        None => parents.push(ParentStatus {
                            parent_ref: (**parent).clone(),
                            controller_name: CONTROLLER_NAME.to_string(),
                            conditions: vec![made],
                        }),
                    },
                }
            }
            next.insert(
                key.clone(),
                ObjectStatus {
                    api_version: api_version(key.kind).to_string(),
                    kind: key.kind.as_str().to_string(),
                    metadata: StatusMeta {
                        name: key.name.clone(),
                        namespace: key.namespace.clone(),
                    },
                    status: Conditions {
                        conditions: flat,
                        parents,
                    },
                },
            );
        }
        let mut files = StatusFiles::default();
        if let Some(dir) = &self.dir {
            for (key, status) in &next {
                if self.current.get(key) != Some(status) {
                    files.writes.push((Self::path(dir, key), status.clone()));
                }
            }
            for key in self.current.keys().filter(|k| !next.contains_key(*k)) {
                files.removals.push(Self::path(dir, key));
            }
            if !self.swept {
                self.swept = true;
                let keep = next.keys().map(|k| Self::path(dir, k)).collect();
                files.sweep = Some((dir.clone(), keep));
            }
        }
        self.current = next;
        files
    }
}

fn object_generation(snapshot: &Snapshot, key: &ObjectKey) -> Option<i64> {
    let k = (key.namespace.clone(), key.name.clone());
    match key.kind {
        Kind::AuthorizationPolicy => snapshot.authorization_policies.get(&k)?.metadata.generation,
        Kind::PeerAuthentication => snapshot.peer_authentications.get(&k)?.metadata.generation,
        Kind::Gateway => snapshot.gateways.get(&k)?.metadata.generation,
        Kind::HttpRoute => snapshot.http_routes.get(&k)?.metadata.generation,
        Kind::GrpcRoute => snapshot.grpc_routes.get(&k)?.metadata.generation,
        _ => None,
    }
}

/// Writes atomically ([`cluster_dir::write_atomic`]), so readers never see half a file.
fn write_status(path: &Path, status: &ObjectStatus) {
    let written = serde_norway::to_string(status)
        .map_err(|e| e.to_string())
        .and_then(|text| {
            cluster_dir::write_atomic(path, text.as_bytes()).map_err(|e| e.to_string())
        });
    if let Err(e) = written {
        tracing::warn!(file = %path.display(), error = %e, "cannot write status file");
    }
}
