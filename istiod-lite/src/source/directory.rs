//! Directory source: every object file below a directory (`*.yaml`, `*.yml`, `*.json`; the walk
//! and the parser are the cluster directory's, `mesh_core::cluster_dir`), each a stream of
//! Kubernetes documents, watched for changes.
//!
//! Each file is one store part. On any change event (debounced) the tree is walked again and only
//! files whose bytes changed are parsed, so a burst of editor writes costs one re-read.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::cluster_dir::{self, Depth};
use notify::event::{AccessKind, AccessMode, EventKind, MetadataKind, ModifyKind};
use notify::{RecursiveMode, Watcher};

use crate::store::{PartContent, Rejection, Store};

/// How long to wait after a change event for more events before re-reading.
const DEBOUNCE: Duration = Duration::from_millis(10);

/// Parses one file's text into what the store should hold for it (the cluster directory's
/// parser, [`cluster_dir::parse_documents`]), and says in the log what was refused.
pub fn parse_documents(source: &str, text: &str) -> PartContent {
    part_content(source, cluster_dir::parse_documents(source, text))
}

fn part_content(source: &str, parsed: cluster_dir::Parsed) -> PartContent {
    for kind in &parsed.ignored_kinds {
        tracing::debug!(
            file = source,
            kind,
            "ignoring a kind istiod-lite does not read"
        );
    }
    let rejections = parsed
        .rejections
        .into_iter()
        .inspect(|r| {
            tracing::warn!(file = %r.source, document = r.document, kind = %r.kind,
                namespace = %r.namespace, name = %r.name, reason = %r.reason, "rejected config document");
        })
        .collect();
    PartContent {
        objects: parsed.objects,
        rejections,
        rejected_keys: parsed.rejected_keys,
        incomplete: parsed.incomplete,
    }
}

/// Watches a directory and keeps the store in line with it.
pub struct DirectorySource {
    dir: PathBuf,
    store: Arc<Store>,
    /// What each file held when last read.
    seen: HashMap<PathBuf, Seen>,
    /// Reads of the whole tree so far.
    reads: Arc<AtomicU64>,
}

/// What a file held when last read: a fingerprint of its bytes (not the bytes: a reader that
/// kept copies of every file would hold the whole tree in memory twice) and its object count.
struct Seen {
    digest: u64,
    objects: usize,
}

/// A fingerprint of a file's bytes, to tell whether it changed since the last read.
fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// A file that could not be read (too large, no permission): one rejection, and the part is
/// incomplete so the objects it held before are kept.
fn unreadable(name: &str, e: &cluster_dir::ClusterDirError) -> PartContent {
    tracing::warn!(file = %name, error = %e, "config file refused; the objects it held before stay");
    PartContent {
        rejections: vec![Rejection {
            source: name.to_string(),
            document: 0,
            reason: e.to_string(),
            ..Default::default()
        }],
        incomplete: true,
        ..Default::default()
    }
}

/// Whether a watch event can mean the directory's content changed. Opening, reading and
/// closing a file unwritten are not changes: reacting to them made every read of the tree
/// (which opens every file) set off the next one, hundreds of times a second while idle.
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)) => false,
        _ => true,
    }
}

impl DirectorySource {
    pub fn new(dir: PathBuf, store: Arc<Store>) -> Self {
        DirectorySource {
            dir,
            store,
            seen: HashMap::new(),
            reads: Arc::default(),
        }
    }

    /// How many times the tree has been read (the first load included), for tests and metrics.
    pub fn reads(&self) -> Arc<AtomicU64> {
        self.reads.clone()
    }

    /// Re-reads the tree; parses only files whose bytes changed. Returns how many files changed.
    pub fn sync(&mut self) -> std::io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        let files =
            cluster_dir::walk(&self.dir, Depth::Recursive).map_err(std::io::Error::other)?;
        let mut parts = Vec::new();
        let mut present = std::collections::HashSet::new();
        for path in files {
            let name = path.display().to_string();
            let read = cluster_dir::read(&path);
            let digest = match &read {
                Ok(bytes) => fingerprint(bytes),
                // Removed between the walk and the read: the next event handles it.
                Err(e) if e.is_not_found() => continue,
                Err(e) => fingerprint(e.to_string().as_bytes()),
            };
            present.insert(path.clone());
            let before = self.seen.get(&path);
            if before.is_some_and(|s| s.digest == digest) {
                continue;
            }
            let content = match read {
                Ok(bytes) => part_content(&name, cluster_dir::parse_bytes(&name, &bytes)),
                // Too large or unreadable: refused whole, and what it held before stays.
                Err(e) => unreadable(&name, &e),
            };
            let (held, holds) = (before.map_or(0, |s| s.objects), content.objects.len());
            if holds < held && !content.incomplete {
                // A writer that truncates a file before writing it makes its objects vanish
                // for a moment; say so, since that deletes them everywhere.
                tracing::info!(file = %name, before = held, now = holds,
                    "a config file holds fewer objects than before: the others are deleted (write config files whole, by renaming a finished file over the old one)");
            }
            let objects = if content.incomplete {
                held.max(holds)
            } else {
                holds
            };
            self.seen.insert(path, Seen { digest, objects });
            parts.push((name, Some(content)));
        }
        let gone: Vec<PathBuf> = self
            .seen
            .keys()
            .filter(|p| !present.contains(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(seen) = self.seen.remove(&path) {
                tracing::info!(file = %path.display(), objects = seen.objects,
                    "a config file is gone: its objects are deleted");
            }
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
                let event = match event {
                    Ok(e) if !is_change(&e.kind) => return,
                    other => other.map(|_| ()),
                };
                // The receiver only goes away at shutdown.
                let _ = tx.send(event);
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

    #[tokio::test]
    async fn an_idle_directory_is_not_read_again_and_a_change_is() {
        let dir = tempfile::tempdir().unwrap();
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n";
        std::fs::write(dir.path().join("ns.yaml"), ns).unwrap();
        let store = Store::new();
        let source = DirectorySource::new(dir.path().to_path_buf(), store.clone());
        let reads = source.reads();
        let (loaded_tx, loaded) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(source.run(Some(loaded_tx)));
        loaded.await.unwrap();
        // Idle for a while: reading the tree opens its files, which must not count as a change.
        let after_load = reads.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = reads.load(Ordering::Relaxed) - after_load;
        assert!(idle <= 1, "{idle} reads of an idle directory in 500 ms");
        // A write is a change.
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: demo}\n";
        std::fs::write(dir.path().join("pod.yaml"), pod).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while store.snapshot().pods.is_empty() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the new pod was not read"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        task.abort();
    }

    #[test]
    fn a_file_grown_past_the_limit_is_refused_and_its_objects_stay() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ns.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n",
        )
        .unwrap();
        let store = Store::new();
        let mut source = DirectorySource::new(dir.path().to_path_buf(), store.clone());
        assert_eq!(source.sync().unwrap(), 1);
        assert_eq!(store.snapshot().namespaces.len(), 1);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(cluster_dir::MAX_FILE_BYTES + 1)
            .unwrap();
        assert_eq!(source.sync().unwrap(), 1);
        assert_eq!(
            store.snapshot().namespaces.len(),
            1,
            "the last good objects stay"
        );
        let rejections = store.rejections();
        assert_eq!(rejections.len(), 1);
        assert!(
            rejections[0].reason.contains("more than the"),
            "{}",
            rejections[0].reason
        );
        // Unchanged since: not read into the store again.
        assert_eq!(source.sync().unwrap(), 0);
        // Emptied: the file holds nothing now, so its object goes (and a line says so).
        std::fs::write(&file, "").unwrap();
        assert_eq!(source.sync().unwrap(), 1);
        assert!(store.snapshot().namespaces.is_empty());
        assert!(store.rejections().is_empty());
    }

    #[test]
    fn a_file_becomes_a_store_part_with_its_rejections() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
                    apiVersion: v1\nkind: Pod\nmetadata: {name: broken, namespace: demo}\n\
                    spec: {nodeName: [not, a, string]}\n";
        let content = parse_documents("demo.yaml", text);
        assert_eq!(content.objects.len(), 1);
        assert!(!content.incomplete);
        let r = &content.rejections[0];
        assert_eq!(
            (
                r.source.as_str(),
                r.document,
                r.kind.as_str(),
                r.name.as_str()
            ),
            ("demo.yaml", 2, "Pod", "broken")
        );
        assert!(r.reason.starts_with("spec.nodeName:"), "{}", r.reason);
        assert_eq!(content.rejected_keys.len(), 1);
    }
}
