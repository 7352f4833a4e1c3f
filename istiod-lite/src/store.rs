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
    AuthorizationPolicy, Gateway, GrpcRoute, HttpRoute, Kind, Namespace, Object, ObjectKey,
    PeerAuthentication, Pod, Service, ServiceAccount,
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
    pub http_routes: KindMap<HttpRoute>,
    pub grpc_routes: KindMap<GrpcRoute>,
    /// Objects whose newest version a source refused, with why. Each keeps its last good
    /// version above (if it ever had one); status says the newest one is not applied.
    pub refused: BTreeMap<ObjectKey, Rejection>,
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
            Kind::HttpRoute => self.http_routes.len(),
            Kind::GrpcRoute => self.grpc_routes.len(),
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
            Object::HttpRoute(o) => drop(self.http_routes.insert(k, Arc::new(o))),
            Object::GrpcRoute(o) => drop(self.grpc_routes.insert(k, Arc::new(o))),
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
            Kind::HttpRoute => self.http_routes.remove(&k).is_some(),
            Kind::GrpcRoute => self.grpc_routes.remove(&k).is_some(),
        }
    }

    /// A copy of the object stored under `key`.
    fn get(&self, key: &ObjectKey) -> Option<Object> {
        let k = (key.namespace.clone(), key.name.clone());
        Some(match key.kind {
            Kind::Namespace => Object::Namespace((**self.namespaces.get(&k)?).clone()),
            Kind::ServiceAccount => {
                Object::ServiceAccount((**self.service_accounts.get(&k)?).clone())
            }
            Kind::Pod => Object::Pod((**self.pods.get(&k)?).clone()),
            Kind::Service => Object::Service((**self.services.get(&k)?).clone()),
            Kind::AuthorizationPolicy => {
                Object::AuthorizationPolicy((**self.authorization_policies.get(&k)?).clone())
            }
            Kind::PeerAuthentication => {
                Object::PeerAuthentication((**self.peer_authentications.get(&k)?).clone())
            }
            Kind::Gateway => Object::Gateway((**self.gateways.get(&k)?).clone()),
            Kind::HttpRoute => Object::HttpRoute((**self.http_routes.get(&k)?).clone()),
            Kind::GrpcRoute => Object::GrpcRoute((**self.grpc_routes.get(&k)?).clone()),
        })
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
            Object::HttpRoute(o) => self.http_routes.get(&k).is_some_and(|c| **c == *o),
            Object::GrpcRoute(o) => self.grpc_routes.get(&k).is_some_and(|c| **c == *o),
        }
    }
}

/// A document a source could not accept, kept so users can see it (metrics, `/debug/config`).
pub use mesh_core::cluster_dir::Rejection;

/// What one source part now holds, as read by its source.
#[derive(Debug, Default)]
pub struct PartContent {
    /// Objects that decoded and validated.
    pub objects: Vec<Object>,
    /// Documents that were refused.
    pub rejections: Vec<Rejection>,
    /// Keys of refused documents that could still be identified, with their refusal: their
    /// last good version is kept rather than deleted, as a failed `kubectl apply` leaves the
    /// live object alone.
    pub rejected_keys: Vec<(ObjectKey, Rejection)>,
    /// Some document could not even be identified (e.g. a YAML syntax error), so nothing the
    /// part held before may be deleted on this read.
    pub incomplete: bool,
}

/// The parts that define one key, sorted by part name; almost always exactly one. Objects are
/// boxed: most claims hold none, and an inline `Object` is as large as its largest kind.
#[derive(Default)]
struct Claims(Vec<(Arc<str>, Option<Box<Object>>)>);

impl Claims {
    fn set(&mut self, part: &Arc<str>, object: Object) {
        match self
            .0
            .binary_search_by(|(p, _)| p.as_ref().cmp(part.as_ref()))
        {
            Ok(i) => self.0[i].1 = Some(Box::new(object)),
            Err(i) => self.0.insert(i, (part.clone(), Some(Box::new(object)))),
        }
    }

    fn remove(&mut self, part: &str) {
        self.0.retain(|(p, _)| p.as_ref() != part);
    }
}

#[derive(Default)]
struct Inner {
    snapshot: Snapshot,
    /// Every part's claim on each key, by part name: the first part wins, so the outcome does
    /// not depend on the order parts were read. The winner's object lives in the snapshot
    /// (`None` here); the others wait here (`Some`) in case the winner lets go of the key.
    claims: HashMap<ObjectKey, Claims>,
    /// Keys by source part.
    parts: HashMap<String, BTreeSet<ObjectKey>>,
    rejections: BTreeMap<String, Vec<Rejection>>,
    /// Identified refusals by source part (see [`Snapshot::refused`]).
    refused: BTreeMap<String, Vec<(ObjectKey, Rejection)>>,
}

impl Inner {
    /// Puts the winning claim of `key` into `next`.
    fn resolve(&mut self, key: &ObjectKey, next: &mut Snapshot, summary: &mut BatchSummary) {
        let Some(claim) = self.claims.get_mut(key) else {
            return;
        };
        if claim.0.is_empty() {
            self.claims.remove(key);
            if next.remove(key) {
                summary.deleted += 1;
            }
            return;
        }
        let mut entries = claim.0.iter_mut();
        let Some((_, winner)) = entries.next() else {
            return;
        };
        let Some(object) = winner.take() else {
            return; // the winner's object is already the one in the snapshot
        };
        // A previous winner that is now second keeps its object here.
        for (_, other) in entries {
            if other.is_none() {
                *other = next.get(key).map(Box::new);
            }
        }
        if !next.same_as(&object) {
            next.insert(*object);
            summary.upserted += 1;
        }
    }

    fn publish(&mut self, mut next: Snapshot, tx: &watch::Sender<Arc<Snapshot>>) {
        next.generation += 1;
        self.snapshot = next.clone();
        tx.send_replace(Arc::new(next));
    }
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

    /// Documents currently refused, and definitions shadowed by another part's.
    pub fn rejections(&self) -> Vec<Rejection> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Rejection> = inner.rejections.values().flatten().cloned().collect();
        for (key, claim) in &inner.claims {
            let mut parts = claim.0.iter().map(|(p, _)| p);
            let Some(winner) = parts.next() else { continue };
            for loser in parts {
                out.push(Rejection {
                    source: loser.to_string(),
                    document: 0,
                    kind: key.kind.to_string(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    reason: format!(
                        "also defined in {winner}, which takes precedence (of two definitions, the first source by name wins)"
                    ),
                });
            }
        }
        out.sort_by(|a, b| (&a.source, a.document).cmp(&(&b.source, b.document)));
        out
    }

    /// Replaces what each named source part holds, in one batch (one snapshot).
    /// A part mapped to `None` is gone (e.g. its file was deleted): its objects are removed.
    pub fn replace_parts(&self, parts: Vec<(String, Option<PartContent>)>) -> BatchSummary {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        let mut next = inner.snapshot.clone();
        let mut summary = BatchSummary::default();
        let mut touched = BTreeSet::new();
        for (part, content) in parts {
            let content = content.unwrap_or_default();
            let previous = inner.parts.remove(&part).unwrap_or_default();
            let part_name: Arc<str> = Arc::from(part.as_str());
            let mut now = BTreeSet::new();
            for object in content.objects {
                let key = object.key();
                inner
                    .claims
                    .entry(key.clone())
                    .or_default()
                    .set(&part_name, object);
                touched.insert(key.clone());
                now.insert(key);
            }
            // Refused documents keep their last good version; an unreadable part keeps all.
            for (key, _) in &content.rejected_keys {
                if previous.contains(key) {
                    now.insert(key.clone());
                }
            }
            if content.rejected_keys.is_empty() {
                inner.refused.remove(&part);
            } else {
                inner.refused.insert(part.clone(), content.rejected_keys);
            }
            if content.incomplete {
                now.extend(previous.iter().cloned());
            }
            for key in previous.difference(&now) {
                if let Some(claim) = inner.claims.get_mut(key) {
                    claim.remove(&part);
                }
                touched.insert(key.clone());
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
        for key in &touched {
            inner.resolve(key, &mut next, &mut summary);
        }
        // A refusal changes what status says even when no object changed.
        let refused: BTreeMap<ObjectKey, Rejection> =
            inner.refused.values().flatten().cloned().collect();
        let refusals_changed = refused != next.refused;
        next.refused = refused;
        if summary.upserted + summary.deleted > 0 || refusals_changed {
            inner.publish(next, &self.tx);
        }
        summary
    }

    /// Inserts or replaces one object from `source` (a watch event).
    pub fn upsert(&self, source: &str, object: Object) -> BatchSummary {
        let key = object.key();
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        inner
            .claims
            .entry(key.clone())
            .or_default()
            .set(&Arc::from(source), object);
        inner
            .parts
            .entry(source.to_string())
            .or_default()
            .insert(key.clone());
        let mut next = inner.snapshot.clone();
        let mut summary = BatchSummary::default();
        inner.resolve(&key, &mut next, &mut summary);
        if summary.upserted > 0 {
            inner.publish(next, &self.tx);
        }
        summary
    }

    /// Deletes `source`'s object `key` (a watch event).
    pub fn delete(&self, source: &str, key: &ObjectKey) -> BatchSummary {
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *guard;
        if let Some(claim) = inner.claims.get_mut(key) {
            claim.remove(source);
        }
        if let Some(set) = inner.parts.get_mut(source) {
            set.remove(key);
        }
        let mut next = inner.snapshot.clone();
        let mut summary = BatchSummary::default();
        inner.resolve(key, &mut next, &mut summary);
        if summary.upserted + summary.deleted > 0 {
            inner.publish(next, &self.tx);
        }
        summary
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
        let before = store.snapshot().generation;
        let key = ObjectKey::new(Kind::Pod, "demo", "p1");
        let rejection = Rejection {
            source: "a.yaml".into(),
            document: 1,
            kind: "Pod".into(),
            namespace: "demo".into(),
            name: "p1".into(),
            reason: "bad".into(),
        };
        let content = PartContent {
            rejected_keys: vec![(key.clone(), rejection.clone())],
            rejections: vec![rejection.clone()],
            ..Default::default()
        };
        let s = store.replace_parts(vec![("a.yaml".into(), Some(content))]);
        assert_eq!(s.deleted, 0);
        let snap = store.snapshot();
        assert_eq!(snap.pods.len(), 1);
        assert_eq!(store.rejections().len(), 1);
        // No object changed, yet a snapshot is published: status must say why.
        assert!(snap.generation > before);
        assert_eq!(snap.refused.get(&key), Some(&rejection));
        // The fixed version applies and the refusal goes.
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.2")]))]);
        assert!(store.snapshot().refused.is_empty());
        let content = PartContent {
            rejected_keys: vec![(key.clone(), rejection.clone())],
            rejections: vec![rejection],
            ..Default::default()
        };
        store.replace_parts(vec![("a.yaml".into(), Some(content))]);
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
        assert!(store.snapshot().refused.is_empty());
    }

    #[test]
    fn of_two_definitions_the_first_part_wins_and_the_other_takes_over_when_it_goes() {
        let store = Store::new();
        store.replace_parts(vec![("b.yaml".into(), part(vec![pod("p1", "10.0.0.9")]))]);
        store.replace_parts(vec![("a.yaml".into(), part(vec![pod("p1", "10.0.0.1")]))]);
        let ip = |store: &Store| {
            store
                .snapshot()
                .pods
                .values()
                .next()
                .and_then(|p| p.status.pod_ip.clone())
        };
        // a.yaml sorts first, whichever was read first.
        assert_eq!(ip(&store).as_deref(), Some("10.0.0.1"));
        let shadowed = store.rejections();
        assert_eq!(shadowed.len(), 1);
        assert_eq!(shadowed[0].source, "b.yaml");
        assert!(
            shadowed[0].reason.contains("a.yaml"),
            "{}",
            shadowed[0].reason
        );
        // When a.yaml lets go, b.yaml's definition is served, not nothing.
        store.replace_parts(vec![("a.yaml".into(), None)]);
        assert_eq!(ip(&store).as_deref(), Some("10.0.0.9"));
        assert!(store.rejections().is_empty());
        // And when b.yaml goes too, the object is gone.
        let s = store.replace_parts(vec![("b.yaml".into(), None)]);
        assert_eq!(s.deleted, 1);
        assert!(store.snapshot().pods.is_empty());
    }
}
