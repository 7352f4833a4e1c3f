//! Directory source: every `*.yaml`, `*.yml` and `*.json` file below a directory, each a stream
//! of Kubernetes documents, watched for changes.
//!
//! Each file is one store part. On any change event (debounced) the tree is walked again and only
//! files whose bytes changed are parsed, so a burst of editor writes costs one re-read.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::k8s::{Object, ObjectError, ObjectKey};
use notify::{RecursiveMode, Watcher};
use serde::Deserialize;

use crate::store::{PartContent, Rejection, Store};

/// How long to wait after a change event for more events before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Parses one file's text into what the store should hold for it.
pub fn parse_documents(source: &str, text: &str) -> PartContent {
    let mut content = PartContent::default();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = match serde_json::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                content.incomplete = true;
                content.rejections.push(Rejection {
                    source: source.to_string(),
                    document,
                    kind: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                    reason: format!("not valid YAML: {e}"),
                });
                // A syntax error leaves the parser without a reliable position to resume from.
                break;
            }
        };
        if value.is_null() {
            continue; // an empty document, e.g. a trailing `---`
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        let (namespace, name) = read_names(&value);
        let reject = |reason: String| Rejection {
            source: source.to_string(),
            document,
            kind: kind.to_string(),
            namespace: namespace.clone(),
            name: name.clone(),
            reason,
        };
        match Object::from_value(value.clone()) {
            Ok(object) => match object.validate() {
                Ok(()) => content.objects.push(object),
                Err(e) => {
                    content.rejected_keys.push(object.key());
                    content.rejections.push(reject(e.to_string()));
                }
            },
            Err(ObjectError::UnknownKind(kind)) => {
                tracing::debug!(
                    file = source,
                    document,
                    kind,
                    "ignoring a kind istiod-lite does not read"
                );
            }
            Err(e) => {
                let known_kind = mesh_core::k8s::Kind::from_name(kind);
                match known_kind {
                    Some(k) if !name.is_empty() => {
                        let ns = if k.is_namespaced() && namespace.is_empty() {
                            "default"
                        } else {
                            namespace.as_str()
                        };
                        content.rejected_keys.push(ObjectKey::new(k, ns, &name));
                    }
                    _ => content.incomplete = true,
                }
                content.rejections.push(reject(e.to_string()));
            }
        }
    }
    for r in &content.rejections {
        tracing::warn!(file = %r.source, document = r.document, kind = %r.kind,
            namespace = %r.namespace, name = %r.name, reason = %r.reason, "rejected config document");
    }
    content
}

fn read_names(value: &serde_json::Value) -> (String, String) {
    let meta = value.get("metadata");
    let field = |f: &str| {
        meta.and_then(|m| m.get(f))
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string()
    };
    (field("namespace"), field("name"))
}

fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            if !path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'))
            {
                walk(&path, out)?;
            }
        } else if is_config_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// Watches a directory and keeps the store in line with it.
pub struct DirectorySource {
    dir: PathBuf,
    store: Arc<Store>,
    /// Bytes of each file as last read.
    seen: HashMap<PathBuf, Vec<u8>>,
}

impl DirectorySource {
    pub fn new(dir: PathBuf, store: Arc<Store>) -> Self {
        DirectorySource {
            dir,
            store,
            seen: HashMap::new(),
        }
    }

    /// Re-reads the tree; parses only files whose bytes changed. Returns how many files changed.
    pub fn sync(&mut self) -> std::io::Result<usize> {
        let mut files = Vec::new();
        walk(&self.dir, &mut files)?;
        let mut parts = Vec::new();
        let mut present = std::collections::HashSet::new();
        for path in files {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                // Removed between the walk and the read: the next event handles it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read config file");
                    present.insert(path);
                    continue;
                }
            };
            present.insert(path.clone());
            if self.seen.get(&path) == Some(&bytes) {
                continue;
            }
            let name = path.display().to_string();
            let content = match std::str::from_utf8(&bytes) {
                Ok(text) => parse_documents(&name, text),
                Err(_) => PartContent {
                    incomplete: true,
                    rejections: vec![Rejection {
                        source: name.clone(),
                        document: 1,
                        kind: String::new(),
                        namespace: String::new(),
                        name: String::new(),
                        reason: "file is not UTF-8 text".into(),
                    }],
                    ..Default::default()
                },
            };
            self.seen.insert(path, bytes);
            parts.push((name, Some(content)));
        }
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            self.seen.remove(&path);
            parts.push((path.display().to_string(), None));
        }
        let changed = parts.len();
        if changed > 0 {
            let summary = self.store.replace_parts(parts);
            tracing::info!(
                files = changed,
                upserted = summary.upserted,
                deleted = summary.deleted,
                rejected = summary.rejected,
                "config directory applied"
            );
        }
        Ok(changed)
    }

    /// [`Self::sync`] on the blocking pool: reading files must not stall the runtime.
    async fn sync_blocking(mut self) -> anyhow::Result<(Self, std::io::Result<usize>)> {
        Ok(tokio::task::spawn_blocking(move || {
            let r = self.sync();
            (self, r)
        })
        .await?)
    }

    /// Loads the directory once (then signals `on_loaded`), and follows its changes until the
    /// task is dropped.
    pub async fn run(
        self,
        on_loaded: Option<tokio::sync::oneshot::Sender<()>>,
    ) -> anyhow::Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // The receiver only goes away at shutdown.
                let _ = tx.send(event.map(|_| ()));
            })?;
        watcher.watch(&self.dir, RecursiveMode::Recursive)?;
        // Events that arrive during the first read are handled by the loop below.
        let (mut this, first) = self.sync_blocking().await?;
        first?;
        if let Some(tx) = on_loaded {
            let _ = tx.send(());
        }
        while let Some(event) = rx.recv().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, "config directory watch error; re-reading everything");
            }
            // Coalesce a burst of events into one re-read.
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            let (next, result) = this.sync_blocking().await?;
            this = next;
            if let Err(e) = result {
                tracing::warn!(dir = %this.dir.display(), error = %e, "cannot read config directory");
            }
        }
        Ok(())
    }
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
        let content = parse_documents("demo.yaml", text);
        assert_eq!(content.objects.len(), 2);
        assert!(!content.incomplete);
        assert_eq!(content.rejections.len(), 1);
        let r = &content.rejections[0];
        assert_eq!(
            (r.kind.as_str(), r.namespace.as_str(), r.name.as_str()),
            ("Pod", "demo", "broken")
        );
        assert_eq!(r.document, 2);
        assert!(r.reason.starts_with("spec.nodeName:"), "{}", r.reason);
        assert_eq!(content.rejected_keys.len(), 1);
    }

    #[test]
    fn a_syntax_error_marks_the_part_incomplete() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\nkind: [unclosed\n";
        let content = parse_documents("x.yaml", text);
        assert!(content.incomplete);
        assert_eq!(content.objects.len(), 1);
        assert!(content.rejections[0].reason.starts_with("not valid YAML"));
    }
}
