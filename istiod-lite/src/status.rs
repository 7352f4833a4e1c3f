//! Policy status: the conditions translation computed, given `lastTransitionTime` (kept while a
//! condition's status is unchanged) and `observedGeneration`, published for readers.
//!
//! Without Kubernetes, status lives in a directory, one YAML file per object at
//! `<status-dir>/<kind>/<namespace>/<name>.yaml` shaped like the object's `status` in
//! `kubectl get -o yaml`, and on the monitoring port at `/debug/status` (JSON). Files of objects
//! that no longer exist are removed. With Kubernetes, the same conditions would be written to
//! the objects' status subresource.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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
    pub conditions: Vec<StatusCondition>,
}

fn api_version(kind: Kind) -> &'static str {
    match kind {
        Kind::AuthorizationPolicy | Kind::PeerAuthentication => "security.istio.io/v1",
        Kind::Gateway => "gateway.networking.k8s.io/v1",
        _ => "v1",
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// Keeps the current status of every object and mirrors it to a directory.
pub struct StatusBook {
    dir: Option<PathBuf>,
    current: BTreeMap<ObjectKey, ObjectStatus>,
}

impl StatusBook {
    pub fn new(dir: Option<PathBuf>) -> Self {
        StatusBook {
            dir,
            current: BTreeMap::new(),
        }
    }

    pub fn all(&self) -> Vec<ObjectStatus> {
        self.current.values().cloned().collect()
    }

    fn path(dir: &Path, key: &ObjectKey) -> PathBuf {
        dir.join(key.kind.as_str().to_ascii_lowercase())
            .join(&key.namespace)
            .join(format!("{}.yaml", key.name))
    }

    /// Applies the statuses of a new translation; writes what changed.
    pub fn update(&mut self, statuses: &BTreeMap<ObjectKey, Vec<Condition>>, snapshot: &Snapshot) {
        let mut next = BTreeMap::new();
        for (key, conditions) in statuses {
            let generation = object_generation(snapshot, key);
            let previous = self.current.get(key);
            let conditions = conditions
                .iter()
                .map(|c| {
                    let status = if c.status { "True" } else { "False" }.to_string();
                    let last = previous
                        .and_then(|p| p.status.conditions.iter().find(|o| o.type_ == c.type_))
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
                })
                .collect();
            next.insert(
                key.clone(),
                ObjectStatus {
                    api_version: api_version(key.kind).to_string(),
                    kind: key.kind.as_str().to_string(),
                    metadata: StatusMeta {
                        name: key.name.clone(),
                        namespace: key.namespace.clone(),
                    },
                    status: Conditions { conditions },
                },
            );
        }
        if let Some(dir) = &self.dir {
            for (key, status) in &next {
                if self.current.get(key) != Some(status) {
                    write_status(&Self::path(dir, key), status);
                }
            }
            for key in self.current.keys().filter(|k| !next.contains_key(*k)) {
                let path = Self::path(dir, key);
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(file = %path.display(), error = %e, "cannot remove status file");
                    }
                }
            }
        }
        self.current = next;
    }
}

fn object_generation(snapshot: &Snapshot, key: &ObjectKey) -> Option<i64> {
    let k = (key.namespace.clone(), key.name.clone());
    match key.kind {
        Kind::AuthorizationPolicy => snapshot.authorization_policies.get(&k)?.metadata.generation,
        Kind::PeerAuthentication => snapshot.peer_authentications.get(&k)?.metadata.generation,
        Kind::Gateway => snapshot.gateways.get(&k)?.metadata.generation,
        _ => None,
    }
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_status(path: &Path, status: &ObjectStatus) {
    let result = (|| -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let text = serde_norway::to_string(status).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!(file = %path.display(), error = %e, "cannot write status file");
    }
}
