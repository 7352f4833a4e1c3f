//! The config store: the one place cluster objects live. Sources (a watched YAML directory today,
//! kube-rs reflectors later) write batches of changes; every committed batch publishes an
//! immutable [`Snapshot`] on a watch channel that translation, the CA and status read.
//!
//! Each object remembers the source that wrote it (a file path, or a Kubernetes watch), so a
//! source can say "this is now all I hold" and what it no longer holds is deleted, without
//! touching objects other sources wrote.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use mesh_core::k8s::{
    AuthorizationPolicy, Gateway, Kind, Namespace, Object, ObjectKey, PeerAuthentication, Pod,
    Service, ServiceAccount,
};
use tokio::sync::watch;

/// Objects of one kind, by (namespace, name). Cluster-scoped kinds use namespace "".
pub type KindMap<T> = BTreeMap<(String, String), Arc<T>>;

/// An immutable view of every object, published after each committed batch.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Increases with every committed batch that changed something.
    pub generation: u64,
    pub namespaces: KindMap<Namespace>,
    pub service_accounts: KindMap<ServiceAccount>,
    pub pods: KindMap<Pod>,
    pub services: KindMap<Service>,
    pub authorization_policies: KindMap<AuthorizationPolicy>,
    pub peer_authentications: KindMap<PeerAuthentication>,
    pub gateways: KindMap<Gateway>,
}

/// Iterates the objects of one namespace in a [`KindMap`].
pub fn in_namespace<'a, T>(
    map: &'a KindMap<T>,
    namespace: &'a str,
) -> impl Iterator<Item = &'a Arc<T>> + 'a {
    map.range((namespace.to_string(), String::new())..)
        .take_while(move |((ns, _), _)| ns == namespace)
        .map(|(_, v)| v)
}

impl Snapshot {
    pub fn namespace(&self, name: &str) -> Option<&Namespace> {
        self.namespaces
            .get(&(String::new(), name.to_string()))
            .map(|n| n.as_ref())
    }

    pub fn count(&self, kind: Kind) -> usize {
        match kind {
            Kind::Namespace => self.namespaces.len(),
            Kind::ServiceAccount => self.service_accounts.len(),
            Kind::Pod => self.pods.len(),
            Kind::Service => self.services.len(),
            Kind::AuthorizationPolicy => self.authorization_policies.len(),
            Kind::PeerAuthentication => self.peer_authentications.len(),
            Kind::Gateway => self.gateways.len(),
        }
    }

    fn insert(&mut self, object: Object) {
        let key = object.key();
        let k = (key.namespace, key.name);
        match object {
            Object::Namespace(o) => drop(self.namespaces.insert(k, Arc::new(o))),
            Object::ServiceAccount(o) => drop(self.service_accounts.insert(k, Arc::new(o))),
            Object::Pod(o) => drop(self.pods.insert(k, Arc::new(o))),
            Object::Service(o) => drop(self.services.insert(k, Arc::new(o))),
            Object::AuthorizationPolicy(o) => {
                drop(self.authorization_policies.insert(k, Arc::new(o)))
            }
            Object::PeerAuthentication(o) => drop(self.peer_authentications.insert(k, Arc::new(o))),
            Object::Gateway(o) => drop(self.gateways.insert(k, Arc::new(o))),
        }
    }

    fn remove(&mut self, key: &ObjectKey) -> bool {
        let k = (key.namespace.clone(), key.name.clone());
        match key.kind {
            Kind::Namespace => self.namespaces.remove(&k).is_some(),
            Kind::ServiceAccount => self.service_accounts.remove(&k).is_some(),
            Kind::Pod => self.pods.remove(&k).is_some(),
            Kind::Service => self.services.remove(&k).is_some(),
            Kind::AuthorizationPolicy => self.authorization_policies.remove(&k).is_some(),
            Kind::PeerAuthentication => self.peer_authentications.remove(&k).is_some(),
            Kind::Gateway => self.gateways.remove(&k).is_some(),
        }
    }

    fn same_as(&self, object: &Object) -> bool {
        let key = object.key();
        let k = (key.namespace, key.name);
        match object {
            Object::Namespace(o) => self.namespaces.get(&k).is_some_and(|c| **c == *o),
            Object::ServiceAccount(o) => self.service_accounts.get(&k).is_some_and(|c| **c == *o),
            Object::Pod(o) => self.pods.get(&k).is_some_and(|c| **c == *o),
            Object::Service(o) => self.services.get(&k).is_some_and(|c| **c == *o),
            Object::AuthorizationPolicy(o) => self
                .authorization_policies
                .get(&k)
                .is_some_and(|c| **c == *o),
            Object::PeerAuthentication(o) => {
                self.peer_authentications.get(&k).is_some_and(|c| **c == *o)
            }
            Object::Gateway(o) => self.gateways.get(&k).is_some_and(|c| **c == *o),
        }
    }
}

/// A document a source could not accept, kept so users can see it (metrics, `/debug/config`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Rejection {
    /// The source part, e.g. the file path.
    pub source: String,
    /// 1-based index of the document within the source part.
    pub document: usize,
    /// Kind, namespace and name as far as they could be read.
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}/{}", self.namespace, self.name)
        };
        write!(
            f,
            "{} (document {}): {} {}: {}",
            self.source, self.document, self.kind, name, self.reason
        )
    }
}

/// What one source part now holds, as read by its source.
#[derive(Debug, Default)]
pub struct PartContent {
    /// Objects that decoded and validated.
    pub objects: Vec<Object>,
    /// Documents that were refused.
    pub rejections: Vec<Rejection>,
    /// Keys of refused documents that could still be identified: their last good version is
    /// kept rather than deleted, as a failed `kubectl apply` leaves the live object alone.
    pub rejected_keys: Vec<ObjectKey>,
    /// Some document could not even be identified (e.g. a YAML syntax error), so nothing the
    /// part held before may be deleted on this read.
    pub incomplete: bool,
}

#[derive(Default)]
struct Inner {
    snapshot: Snapshot,
    /// Which source part wrote each object.
    owner: HashMap<ObjectKey, String>,
    /// Objects by source part.
    parts: HashMap<String, BTreeSet<ObjectKey>>,
    rejections: BTreeMap<String, Vec<Rejection>>,
}

/// The typed object store. Cheap to share: clone the `Arc`.
pub struct Store {
    inner: Mutex<Inner>,
    tx: watch::Sender<Arc<Snapshot>>,
}

/// The changes a batch made, for logs and tests.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchSummary {
    pub upserted: usize,
    pub deleted: usize,
    pub rejected: usize,
}

impl Store {
    pub fn new() -> Arc<Store> {
        let (tx, _) = watch::channel(Arc::new(Snapshot::default()));
        Arc::new(Store {
            inner: Mutex::new(Inner::default()),
            tx,
        })
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn rejections(&self) -> Vec<Rejection> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.rejections.values().flatten().cloned().collect()
    }

    /// Replaces what each named source part holds, in one batch (one snapshot).
    /// A part mapped to `None` is gone (e.g. its file was deleted): its objects are removed.
    pub fn replace_parts(&self, parts: Vec<(String, Option<PartContent>)>) -> BatchSummary {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let mut next = inner.snapshot.clone();
        let mut summary = BatchSummary::default();
        for (part, content) in parts {
            let content = content.unwrap_or_default();
            let previous = inner.parts.remove(&part).unwrap_or_default();
            let mut now = BTreeSet::new();
            for object in content.objects {
                let key = object.key();
                if let Some(other) = inner.owner.get(&key).filter(|o| **o != part) {
                    tracing::warn!(object = %key, first = %other, second = %part,
                        "object defined by two sources; the later one wins");
                    if let Some(set) = inner.parts.get_mut(other.as_str()) {
                        set.remove(&key);
                    }
                }
                if !next.same_as(&object) {
                    next.insert(object);
                    summary.upserted += 1;
                }
                inner.owner.insert(key.clone(), part.clone());
                now.insert(key);
            }
            for key in content.rejected_keys {
                if previous.contains(&key) {
                    now.insert(key);
                }
            }
            if content.incomplete {
                now.extend(previous.iter().cloned());
            }
            for key in previous.difference(&now) {
                if inner.owner.get(key) == Some(&part) {
                    inner.owner.remove(key);
                    if next.remove(key) {
                        summary.deleted += 1;
                    }
                }
            }
            summary.rejected += content.rejections.len();
            if content.rejections.is_empty() {
                inner.rejections.remove(&part);
            } else {
                inner.rejections.insert(part.clone(), content.rejections);
            }
            if !now.is_empty() {
                inner.parts.insert(part, now);
            }
        }
        if summary.upserted + summary.deleted > 0 {
            next.generation += 1;
            inner.snapshot = next.clone();
            self.tx.send_replace(Arc::new(next));
        }
        summary
    }

    /// Inserts or replaces one object (a watch event).
    pub fn upsert(&self, source: &str, object: Object) -> BatchSummary {
        let key = object.key();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = inner.snapshot.clone();
        if next.same_as(&object) {
            return BatchSummary::default();
        }
        next.insert(object);
        inner.owner.insert(key.clone(), source.to_string());
        inner
            .parts
            .entry(source.to_string())
            .or_default()
            .insert(key);
        next.generation += 1;
        inner.snapshot = next.clone();
        self.tx.send_replace(Arc::new(next));
        BatchSummary {
            upserted: 1,
            ..Default::default()
        }
    }

    /// Deletes one object (a watch event).
    pub fn delete(&self, key: &ObjectKey) -> BatchSummary {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = inner.snapshot.clone();
        if !next.remove(key) {
            return BatchSummary::default();
        }
        if let Some(part) = inner.owner.remove(key) {
            if let Some(set) = inner.parts.get_mut(&part) {
                set.remove(key);
            }
        }
        next.generation += 1;
        inner.snapshot = next.clone();
        self.tx.send_replace(Arc::new(next));
        BatchSummary {
            deleted: 1,
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ip: &str) -> Object {
        Object::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "demo"},
            "status": {"podIP": ip}
        }))
        .unwrap()
    }

    fn part(objects: Vec<Object>) -> Option<PartContent> {
        Some(PartContent {
            objects,
            ..Default::default()
        })
    }

    #[test]
    fn replacing_a_part_deletes_what_it_no_longer_holds() {
        let store = Store::new();
        let s = store.replace_parts(vec![(
            "a.yaml".into(),
            part(vec![pod("p1", "10.0.0.1"), pod("p2", "10.0.0.2")]),
        )]);
        assert_eq!(s.upserted, 2);
        let s = store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        assert_eq!(
            s,
            BatchSummary {
                upserted: 0,
                deleted: 1,
                rejected: 0
            }
        );
        let snap = store.snapshot();
        assert_eq!(snap.pods.len(), 1);
        assert_eq!(snap.generation, 2);
    }

    #[test]
    fn unchanged_content_publishes_nothing() {
        let store = Store::new();
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        let gen = store.snapshot().generation;
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        assert_eq!(store.snapshot().generation, gen);
    }

    #[test]
    fn rejected_documents_keep_the_last_good_object() {
        let store = Store::new();
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        let content = PartContent {
            rejected_keys: vec![ObjectKey::new(Kind::Pod, "demo", "p1")],
            rejections: vec![Rejection {
                source: "a.yaml".into(),
                document: 1,
                kind: "Pod".into(),
                namespace: "demo".into(),
                name: "p1".into(),
                reason: "bad".into(),
            }],
            ..Default::default()
        };
        let s = store.replace_parts(vec![("a.yaml".into(), Some(content))]);
        assert_eq!(s.deleted, 0);
        assert_eq!(store.snapshot().pods.len(), 1);
        assert_eq!(store.rejections().len(), 1);
        // An incomplete read (syntax error) deletes nothing either.
        let s = store.replace_parts(vec![(
            "a.yaml".into(),
            Some(PartContent {
                incomplete: true,
                ..Default::default()
            }),
        )]);
        assert_eq!(s.deleted, 0);
        // Removing the part removes its objects.
        let s = store.replace_parts(vec![("a.yaml".into(), None)]);
        assert_eq!(s.deleted, 1);
        assert!(store.rejections().is_empty());
    }

    #[test]
    fn a_part_does_not_delete_objects_another_part_took_over() {
        let store = Store::new();
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        store.replace_parts(vec![("b.yaml".into(), part(vec![pod("p1", "10.0.0.9")]))]);
        store.replace_parts(vec![("a.yaml".into(), None)]);
        let snap = store.snapshot();
        let p = snap.pods.values().next().unwrap();
        assert_eq!(p.status.pod_ip.as_deref(), Some("10.0.0.9"));
    }
}
