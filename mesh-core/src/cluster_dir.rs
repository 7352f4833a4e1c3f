//! The cluster directory: a tree of YAML/JSON files that stands in for the Kubernetes API in the
//! local cluster. istiod-lite watches it, mesh-cni reads pods' and namespaces' labels from it,
//! meshctl writes objects into it, and istiod-lite writes policy status beside it.
//!
//! This module owns everything the readers and writers must agree on:
//! * the layout: objects at `<config>/<kind>/<namespace>/<name>.yaml` ([`object_path`], with
//!   [`CLUSTER_SCOPE`] for cluster-scoped kinds) and status at
//!   `<state>/status/<kind>/<namespace>/<name>.yaml` ([`status_dir`], [`status_path`]);
//! * which files count ([`walk`]): `*.yaml`, `*.yml` and `*.json`, hidden files and directories
//!   skipped (so [`write_atomic`]'s temporary files are never read half-written);
//! * how a file becomes objects ([`parse_documents`]): a bad document is rejected with its reason
//!   and the others still count;
//! * how a file is replaced ([`write_atomic`]): readers see the old bytes or the new, never part.
//!
//! Any layout works for readers (they walk everything); the layout is what meshctl writes and
//! what it reads back by name.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::Value;

use crate::k8s::{Kind, Object, ObjectError, ObjectKey};

/// The directory that stands in for the namespace of cluster-scoped objects.
pub const CLUSTER_SCOPE: &str = "_cluster";

/// What can go wrong reading or writing the directory.
#[derive(Debug, thiserror::Error)]
pub enum ClusterDirError {
    #[error("cannot read directory {}: {source}", dir.display())]
    Walk {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is {size} bytes, more than the {MAX_FILE_BYTES} a config file may hold; it is not read", path.display())]
    TooLarge { path: PathBuf, size: u64 },
}

/// The largest file read as config. A Kubernetes object is at most 1.5 MiB (etcd's request
/// limit), so this holds several of the largest; past it a file is refused unread, so one
/// runaway file cannot make every reader hold it in memory.
pub const MAX_FILE_BYTES: u64 = 8 << 20;

impl ClusterDirError {
    /// The directory or file does not exist (a reader may treat that as empty).
    pub fn is_not_found(&self) -> bool {
        match self {
            ClusterDirError::Walk { source, .. }
            | ClusterDirError::Write { source, .. }
            | ClusterDirError::Read { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            ClusterDirError::TooLarge { .. } => false,
        }
    }
}

/// Reads a config file whole, refusing one over [`MAX_FILE_BYTES`] without reading it.
pub fn read(path: &Path) -> Result<Vec<u8>, ClusterDirError> {
    use std::io::Read as _;
    let read_err = |source| ClusterDirError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size > MAX_FILE_BYTES {
        return Err(ClusterDirError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    // Bounded also when the file grows while it is read.
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ClusterDirError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
        });
    }
    Ok(bytes)
}

/// The directory of a kind: its name in lower case (`pod`, `authorizationpolicy`).
pub fn kind_dir(kind: Kind) -> String {
    kind.as_str().to_ascii_lowercase()
}

/// Where an object is stored: `<config>/<kind>/<namespace or _cluster>/<name>.yaml`. The names
/// are taken as given; callers check that they are valid object names first.
pub fn object_path(config_dir: &Path, key: &ObjectKey) -> PathBuf {
    let scope = if key.kind.is_namespaced() {
        key.namespace.as_str()
    } else {
        CLUSTER_SCOPE
    };
    config_dir
        .join(kind_dir(key.kind))
        .join(scope)
        .join(format!("{}.yaml", key.name))
}

/// Where istiod-lite publishes policy status under its state directory.
pub fn status_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("status")
}

/// The status file of an object: `<status-dir>/<kind>/<namespace>/<name>.yaml`.
pub fn status_path(status_dir: &Path, key: &ObjectKey) -> PathBuf {
    status_dir
        .join(kind_dir(key.kind))
        .join(&key.namespace)
        .join(format!("{}.yaml", key.name))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

/// A file readers parse: `*.yaml`, `*.yml` or `*.json`, not hidden.
pub fn is_object_file(path: &Path) -> bool {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !is_hidden(path) && matches!(ext, "yaml" | "yml" | "json")
}

/// How far [`walk`] goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Depth {
    /// Only the directory's own files.
    Flat,
    /// Every subdirectory too (hidden ones skipped).
    Recursive,
}

/// The object files below `dir`, sorted by path. Symbolic links to files count; links to
/// directories are not followed (no loops). A missing `dir` is an error
/// ([`ClusterDirError::is_not_found`]).
pub fn walk(dir: &Path, depth: Depth) -> Result<Vec<PathBuf>, ClusterDirError> {
    let mut out = Vec::new();
    walk_into(dir, depth, &mut out)?;
    out.sort();
    Ok(out)
}

fn walk_into(dir: &Path, depth: Depth, out: &mut Vec<PathBuf>) -> Result<(), ClusterDirError> {
    let failed = |source| ClusterDirError::Walk {
        dir: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        let path = entry.path();
        if entry.file_type().map_err(failed)?.is_dir() {
            if depth == Depth::Recursive && !is_hidden(&path) {
                walk_into(&path, depth, out)?;
            }
        } else if is_object_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// One document that was refused, with what could be read of its identity.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The file (or other source) the document came from.
    pub source: String,
    /// 1-based index of the document within the source.
    pub document: usize,
    /// Kind, namespace and name as far as they could be read.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.source, self.document)?;
        if !self.kind.is_empty() || !self.name.is_empty() {
            write!(f, " ({} ", self.kind)?;
            if !self.namespace.is_empty() {
                write!(f, "{}/", self.namespace)?;
            }
            write!(f, "{})", self.name)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// What one file holds.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    /// Objects that decoded and validated, in document order.
    pub objects: Vec<Object>,
    /// The document number (1-based) of each of `objects`.
    pub documents: Vec<usize>,
    /// Documents that were refused.
    pub rejections: Vec<Rejection>,
    /// Keys of refused documents that could still be identified, each with its refusal (also
    /// in `rejections`), so the object's status can say why its newest version is not applied.
    pub rejected_keys: Vec<(ObjectKey, Rejection)>,
    /// Some document could not even be identified (e.g. a YAML syntax error), so the file may
    /// hold objects that are not listed.
    pub incomplete: bool,
    /// Kinds of documents that were skipped because the mesh does not read them (Deployment,
    /// ConfigMap, ...): not errors.
    pub ignored_kinds: Vec<String>,
}

/// Decodes one YAML (or JSON) document of any shape. The YAML library panics on some malformed
/// input (found by the fuzz test); that is an error here like any other, never a crash of the
/// reader. Every YAML read of outside input goes through this or [`parse_documents`].
pub fn from_yaml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    std::panic::catch_unwind(|| serde_norway::from_str::<T>(text))
        .map_err(|_| "the YAML parser gave up on this text".to_string())?
        .map_err(|e| e.to_string())
}

/// The documents of a YAML stream, each decoded as [`from_yaml`] does; the stream ends at the
/// first document the parser cannot read past.
pub fn yaml_documents(text: &str) -> impl Iterator<Item = Result<Value, String>> + '_ {
    let mut docs = serde_norway::Deserializer::from_str(text);
    let mut done = false;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            docs.next().map(Value::deserialize)
        }));
        match next {
            Ok(Some(Ok(v))) => Some(Ok(v)),
            Ok(Some(Err(e))) => Some(Err(e.to_string())),
            Ok(None) => None,
            Err(_) => {
                done = true;
                Some(Err("the YAML parser gave up on this document".into()))
            }
        }
    })
}

/// Parses a file's bytes; text that is not UTF-8 is one rejection.
pub fn parse_bytes(source: &str, bytes: &[u8]) -> Parsed {
    match std::str::from_utf8(bytes) {
        Ok(text) => parse_documents(source, text),
        Err(_) => Parsed {
            incomplete: true,
            rejections: vec![Rejection {
                source: source.to_string(),
                document: 1,
                reason: "file is not UTF-8 text".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
    }
}

/// Parses a stream of YAML (or JSON) documents into objects. A document that does not decode
/// or validate is rejected with its reason and the others still count. A YAML syntax error ends
/// the stream (the parser has no reliable place to resume); a document that cannot be identified
/// marks the result incomplete.
pub fn parse_documents(source: &str, text: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let mut last_error = None;
    for (i, decoded) in yaml_documents(text).enumerate() {
        let document = i + 1;
        let value = match decoded {
            Ok(v) => v,
            Err(e) => {
                // After a syntax error the parser has no place to resume: it yields the same
                // error again for ever. After a document that is YAML but not JSON-shaped (a
                // map with a list as key) the next documents still read. Every document takes
                // at least a byte, which bounds the loop whatever the parser does.
                let reason = format!("not valid YAML: {e}");
                if last_error.as_ref() == Some(&reason) || document > text.len() + 1 {
                    break;
                }
                // Unidentified, so the file may hold an object that is not listed.
                parsed.incomplete = true;
                parsed.rejections.push(Rejection {
                    source: source.to_string(),
                    document,
                    reason: reason.clone(),
                    ..Default::default()
                });
                last_error = Some(reason);
                continue;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
        let field = |f: &str| {
            value
                .get("metadata")
                .and_then(|m| m.get(f))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let (namespace, name) = (field("namespace"), field("name"));
        let reject = |reason: String| Rejection {
            source: source.to_string(),
            document,
            kind: kind.to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            reason,
        };
        let rejection = match Object::from_value(value.clone()) {
            Ok(object) => match object.validate() {
                Ok(()) => {
                    let key = object.key();
                    match parsed.objects.iter().position(|o| o.key() == key) {
                        // Two definitions in one file: the first is the object, the later one
                        // is refused rather than silently replacing it.
                        Some(first) => reject(format!(
                            "a second definition of {key} in this file; the one of document {} is used",
                            parsed.documents[first]
                        )),
                        None => {
                            parsed.objects.push(object);
                            parsed.documents.push(document);
                            continue;
                        }
                    }
                }
                Err(e) => {
                    let rejection = reject(e.to_string());
                    parsed.rejected_keys.push((object.key(), rejection.clone()));
                    rejection
                }
            },
            Err(ObjectError::UnknownKind(kind)) => {
                parsed.ignored_kinds.push(kind);
                continue;
            }
            Err(e) => match Kind::from_name(kind) {
                Some(k) if !name.is_empty() => {
                    let ns = if k.is_namespaced() && namespace.is_empty() {
                        "default"
                    } else {
                        namespace.as_str()
                    };
                    let rejection = reject(e.to_string());
                    parsed
                        .rejected_keys
                        .push((ObjectKey::new(k, ns, &name), rejection.clone()));
                    rejection
                }
                _ => {
                    parsed.incomplete = true;
                    reject(e.to_string())
                }
            },
        };
        parsed.rejections.push(rejection);
    }
    parsed
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that a reader sees the old file or the new one, also across
/// a crash: a hidden temporary file beside it (which [`walk`] skips), fsynced, renamed over
/// `path`, then the directory fsynced so the rename itself is durable. Creates missing parent
/// directories; removes the temporary file on failure.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ClusterDirError> {
    let failed = |source| ClusterDirError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(file_name) = path.file_name() else {
        return Err(failed(std::io::Error::other("the path names no file")));
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_document_is_reported_and_the_rest_applies() {
        let text = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: Pod
metadata:
  name: broken
  namespace: demo
spec:
  nodeName: [not, a, string]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ignored
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  ports:
  - port: 80
---
"#;
        let parsed = parse_documents("demo.yaml", text);
        assert_eq!(parsed.objects.len(), 2);
        assert!(!parsed.incomplete);
        assert_eq!(parsed.ignored_kinds, ["Deployment (apps/v1)"]);
        assert_eq!(parsed.rejections.len(), 1);
        let r = &parsed.rejections[0];
        assert_eq!(
            (r.kind.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("Pod", "demo", "broken")
        );
        assert_eq!(r.document, 2);
        assert!(r.reason.starts_with("spec.nodeName:"), "{}", r.reason);
        let keys: Vec<_> = parsed.rejected_keys.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, [&ObjectKey::new(Kind::Pod, "demo", "broken")]);
        assert_eq!(parsed.rejected_keys[0].1.reason, r.reason);
        assert!(r
            .to_string()
            .starts_with("demo.yaml, document 2 (Pod demo/broken): "));
    }

    #[test]
    fn a_syntax_error_ends_the_stream_and_marks_it_incomplete() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: [unclosed\n\
                    ---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: b\n";
        let parsed = parse_documents("x.yaml", text);
        assert!(parsed.incomplete);
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.rejections.len(), 1);
        assert!(parsed.rejections[0].reason.starts_with("not valid YAML"));
    }

    #[test]
    fn a_document_that_is_not_json_shaped_is_rejected_and_the_next_still_reads() {
        let text = "{[1, 2]: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n";
        let parsed = parse_documents("x.yaml", text);
        assert!(parsed.incomplete);
        assert_eq!(parsed.rejections.len(), 1);
        assert_eq!(parsed.rejections[0].document, 1);
        assert_eq!(parsed.objects.len(), 1);
        assert_eq!(parsed.objects[0].key().name, "b");
    }

    #[test]
    fn yaml_the_parser_panics_on_is_a_rejection() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
                    apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
                    metadata: {name: default, namespace: demo}\nspec: {mtls: {mode: *aSTRICT}}\n";
        let parsed = parse_documents("pa.yaml", text);
        assert_eq!(
            parsed.objects.len(),
            1,
            "the document before it still counts"
        );
        // The library reports the unknown anchor, then panics reading on: both are rejections.
        assert!(parsed.incomplete);
        assert_eq!(parsed.rejections[0].document, 2, "{:?}", parsed.rejections);
        assert!(parsed
            .rejections
            .iter()
            .all(|r| r.reason.starts_with("not valid YAML")));
    }

    #[test]
    fn a_second_definition_in_one_file_is_refused_and_the_first_kept() {
        let text =
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {a: one}}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: other}\n---\n\
                    apiVersion: v1\nkind: Namespace\nmetadata: {name: demo, labels: {a: two}}\n";
        let parsed = parse_documents("ns.yaml", text);
        assert_eq!(parsed.objects.len(), 2);
        assert_eq!(parsed.documents, [1, 2]);
        let Object::Namespace(first) = &parsed.objects[0] else {
            panic!()
        };
        assert_eq!(first.metadata.labels["a"], "one");
        assert_eq!(parsed.rejections.len(), 1);
        let r = &parsed.rejections[0];
        assert_eq!((r.document, r.name.as_str()), (3, "demo"));
        assert!(
            r.reason.contains("second definition of Namespace demo")
                && r.reason.contains("document 1 is used"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_file_over_the_size_limit_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.yaml");
        let file = std::fs::File::create(&big).unwrap();
        file.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = read(&big).unwrap_err();
        assert!(
            matches!(err, ClusterDirError::TooLarge { size, .. } if size == MAX_FILE_BYTES + 1),
            "{err}"
        );
        assert!(err.to_string().contains("more than the 8388608"), "{err}");
        file.set_len(10).unwrap();
        assert_eq!(read(&big).unwrap().len(), 10);
        assert!(read(&dir.path().join("missing.yaml"))
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn bytes_that_are_not_utf8_are_one_rejection() {
        let parsed = parse_bytes("bin.yaml", &[0xff, 0xfe, b'\n']);
        assert!(parsed.incomplete);
        assert!(parsed.objects.is_empty());
        assert_eq!(parsed.rejections[0].reason, "file is not UTF-8 text");
    }

    #[test]
    fn the_walk_takes_object_files_and_skips_hidden_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for file in [
            "a.yaml",
            "b.yml",
            "c.json",
            "notes.txt",
            ".a.yaml.1.0.tmp",
            ".hidden.yaml",
            "sub/d.yaml",
            "sub/deeper/e.yaml",
            ".git/f.yaml",
        ] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
        }
        let names = |depth| -> Vec<String> {
            walk(root, depth)
                .unwrap()
                .iter()
                .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                .collect()
        };
        assert_eq!(names(Depth::Flat), ["a.yaml", "b.yml", "c.json"]);
        assert_eq!(
            names(Depth::Recursive),
            [
                "a.yaml",
                "b.yml",
                "c.json",
                "sub/d.yaml",
                "sub/deeper/e.yaml"
            ]
        );
        let missing = walk(&root.join("nope"), Depth::Flat).unwrap_err();
        assert!(missing.is_not_found(), "{missing}");
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod/demo/web.yaml");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["web.yaml"]);
    }

    #[test]
    fn a_failed_write_is_a_typed_error_and_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails.
        let path = dir.path().join("taken.yaml");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "x").unwrap();
        let err = write_atomic(&path, b"new").unwrap_err();
        assert!(matches!(err, ClusterDirError::Write { .. }), "{err}");
        assert!(path.is_dir());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["taken.yaml"], "the temporary file is removed");
    }

    #[test]
    fn objects_and_status_have_one_layout() {
        let pod = ObjectKey::new(Kind::Pod, "demo", "web");
        let ns = ObjectKey::new(Kind::Namespace, "", "demo");
        let ap = ObjectKey::new(Kind::AuthorizationPolicy, "demo", "deny");
        let config = Path::new("/c");
        assert_eq!(object_path(config, &pod), Path::new("/c/pod/demo/web.yaml"));
        assert_eq!(
            object_path(config, &ns),
            Path::new("/c/namespace/_cluster/demo.yaml")
        );
        assert_eq!(
            status_path(&status_dir(Path::new("/s")), &ap),
            Path::new("/s/status/authorizationpolicy/demo/deny.yaml")
        );
    }
}
