//! The file store: each object at its place in the cluster directory
//! (`mesh_core::cluster_dir::object_path`), read back by kind, namespace and name, with
//! istiod-lite's status merged in; the built-in namespaces always exist.

use std::path::{Path, PathBuf};

use mesh_core::cluster_dir::{self, Depth};
use mesh_core::k8s::{Kind, ObjectKey};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::fields::str_field;
use super::names::{is_dns_label, is_object_name};

/// Namespaces every cluster has, whether or not a file was written for them.
pub const BUILTIN_NAMESPACES: [&str; 3] = ["default", "istio-system", "kube-system"];

/// The stored objects: one file each in the cluster directory, and istiod-lite's status files.
pub(super) struct Store {
    pub(super) config_dir: PathBuf,
    pub(super) status_dir: PathBuf,
}

impl Store {
    /// Where the object is stored; `None` for names no object can have (so they never reach
    /// the file system).
    pub(super) fn object_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        let valid = is_object_name(&key.name)
            && (!key.kind.is_namespaced() || is_dns_label(&key.namespace));
        valid.then(|| cluster_dir::object_path(&self.config_dir, key))
    }

    /// The stored object as written (no status merged), or a built-in namespace.
    pub(super) fn load_key(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        let Some(path) = self.object_path(key) else {
            return Ok(None);
        };
        let stored = load_file(&path)?;
        if stored.is_none()
            && key.kind == Kind::Namespace
            && BUILTIN_NAMESPACES.contains(&key.name.as_str())
        {
            return Ok(Some(builtin_namespace(&key.name)));
        }
        Ok(stored)
    }

    /// Every stored object of a kind (built-in namespaces included), unsorted, without status.
    pub(super) fn load_all(
        &self,
        kind: Kind,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let kind_root = self.config_dir.join(cluster_dir::kind_dir(kind));
        let scopes: Vec<PathBuf> = match (kind.is_namespaced(), namespace) {
            (false, _) => vec![kind_root.join(cluster_dir::CLUSTER_SCOPE)],
            (true, Some(ns)) if is_dns_label(ns) => vec![kind_root.join(ns)],
            (true, Some(_)) => vec![],
            (true, None) => subdirectories(&kind_root)?,
        };
        let mut found = Vec::new();
        for dir in scopes {
            for file in yaml_files(&dir)? {
                if let Some(value) = load_file(&file)? {
                    found.push(value);
                }
            }
        }
        if kind == Kind::Namespace {
            for name in BUILTIN_NAMESPACES {
                if !found.iter().any(|v| key_of(kind, v).name == name) {
                    found.push(builtin_namespace(name));
                }
            }
        }
        Ok(found)
    }

    /// Merges istiod-lite's status file for the object, if there is one, into `.status`.
    pub(super) fn with_status(&self, key: &ObjectKey, mut value: Value) -> Result<Value, ApiError> {
        if !key.kind.is_namespaced() || !is_object_name(&key.name) || !is_dns_label(&key.namespace)
        {
            return Ok(value);
        }
        let path = cluster_dir::status_path(&self.status_dir, key);
        let Some(file) = load_file(&path)? else {
            return Ok(value);
        };
        let Some(reported) = file.get("status").and_then(Value::as_object) else {
            return Ok(value);
        };
        if let Some(map) = value.as_object_mut() {
            let status = map
                .entry("status")
                .or_insert_with(|| Value::Object(Map::new()));
            if !status.is_object() {
                *status = Value::Object(Map::new());
            }
            if let Some(status) = status.as_object_mut() {
                for (k, v) in reported {
                    status.insert(k.clone(), v.clone());
                }
            }
        }
        Ok(value)
    }
}

/// A key with the namespace blanked for cluster-scoped kinds.
pub(super) fn scoped_key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if kind.is_namespaced() { namespace } else { "" };
    ObjectKey::new(kind, namespace, name)
}

/// The key of a stored object of a known kind.
pub(super) fn key_of(kind: Kind, value: &Value) -> ObjectKey {
    scoped_key(
        kind,
        str_field(value, &["metadata", "namespace"]).unwrap_or("default"),
        str_field(value, &["metadata", "name"]).unwrap_or(""),
    )
}

fn builtin_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Reads one stored object; `None` when the file does not exist.
pub(super) fn load_file(path: &Path) -> Result<Option<Value>, ApiError> {
    let unreadable = |reason: String| ApiError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let text = match cluster_dir::read(path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let value: Value = cluster_dir::from_yaml(&text).map_err(unreadable)?;
    if !value.is_object() {
        return Err(unreadable("it does not hold an object".into()));
    }
    Ok(Some(value))
}

/// The entries of `dir`; none when it does not exist.
fn entries(dir: &Path) -> Result<Vec<PathBuf>, ApiError> {
    match std::fs::read_dir(dir) {
        Ok(e) => Ok(e.flatten().map(|e| e.path()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ApiError::Unreadable {
            path: dir.display().to_string(),
            reason: e.to_string(),
        }),
    }
}

fn subdirectories(dir: &Path) -> Result<Vec<PathBuf>, ApiError> {
    Ok(entries(dir)?
        .into_iter()
        .filter(|p| p.is_dir())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(is_dns_label)
        })
        .collect())
}

/// The object files of one scope directory (the cluster directory's walk: temporary files are
/// hidden and skipped); none when it does not exist.
fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, ApiError> {
    let files = match cluster_dir::walk(dir, Depth::Flat) {
        Ok(files) => files,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => {
            return Err(ApiError::Unreadable {
                path: dir.display().to_string(),
                reason: e.to_string(),
            })
        }
    };
    Ok(files
        .into_iter()
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && p.file_stem()
                    .and_then(|n| n.to_str())
                    .is_some_and(is_object_name)
        })
        .collect())
}
