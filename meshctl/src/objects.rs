//! The local cluster's object API: what kubectl and the API server do, over the config directory
//! istiod-lite watches.
//!
//! Every object is one file, `<config>/<kind>/<namespace>/<name>.yaml` (`_cluster` instead of
//! the namespace for cluster-scoped kinds), replaced atomically, and checked with istiod-lite's
//! own parser ([`parse_documents`]) before it is written, so what istiod-lite would refuse never
//! reaches it. Policy status is istiod-lite's, in `<status>/<kind>/<namespace>/<name>.yaml`;
//! reads merge it in as `.status`.
//!
//! Like the API server: `apply` merges three ways (what you apply, what you applied last, what is
//! stored), so labels set with `label` survive a re-apply; `status`, `creationTimestamp` and
//! `generation` belong to the cluster; `default`, `istio-system` and `kube-system` always exist.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use mesh_core::cluster_dir::{self, parse_documents, ClusterDirError, Depth};
use mesh_core::k8s::{Kind, Object, ObjectKey};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where kubectl keeps the document last applied, for the next apply's three-way merge.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Namespaces every cluster has, whether or not a file was written for them.
pub const BUILTIN_NAMESPACES: [&str; 3] = ["default", "istio-system", "kube-system"];
/// Metadata the cluster sets; never taken from what a user applies.
const SERVER_FIELDS: [&str; 6] = [
    "creationTimestamp",
    "generation",
    "uid",
    "resourceVersion",
    "managedFields",
    "selfLink",
];

/// kubectl's names for a kind: `pods`, `po`, `authorizationpolicies.security.istio.io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    /// The resource name, e.g. `authorizationpolicies`.
    pub plural: &'static str,
    pub short_name: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
}

impl Resource {
    pub fn of(kind: Kind) -> Resource {
        let (plural, short_name, group) = match kind {
            Kind::Namespace => ("namespaces", "ns", ""),
            Kind::ServiceAccount => ("serviceaccounts", "sa", ""),
            Kind::Pod => ("pods", "po", ""),
            Kind::Service => ("services", "svc", ""),
            Kind::AuthorizationPolicy => ("authorizationpolicies", "ap", "security.istio.io"),
            Kind::PeerAuthentication => ("peerauthentications", "pa", "security.istio.io"),
            Kind::Gateway => ("gateways", "gtw", "gateway.networking.k8s.io"),
        };
        Resource {
            kind,
            plural,
            short_name,
            group,
        }
    }

    /// Resolves what a user types: `po`, `pod`, `pods`, `Pod`, `gateways.gateway.networking.k8s.io`.
    pub fn find(name: &str) -> Option<Resource> {
        let name = name.to_ascii_lowercase();
        let matches =
            |r: &Resource, n: &str| n == r.plural || n == r.short_name || n == r.singular();
        let all = Kind::ALL.map(Resource::of);
        if let Some(r) = all.iter().find(|r| matches(r, &name)) {
            return Some(*r);
        }
        let (base, group) = name.split_once('.')?;
        all.into_iter()
            .find(|r| !r.group.is_empty() && r.group == group && matches(r, base))
    }

    /// `pod`, `authorizationpolicy`.
    pub fn singular(&self) -> String {
        self.kind.as_str().to_ascii_lowercase()
    }

    /// How kubectl names one object's type in `apply`/`delete` output: `pod`,
    /// `authorizationpolicy.security.istio.io`.
    pub fn type_name(&self) -> String {
        with_group(self.singular(), self.group)
    }

    /// How the API server names the resource in errors: `pods`,
    /// `authorizationpolicies.security.istio.io`.
    pub fn qualified_plural(&self) -> String {
        with_group(self.plural.to_string(), self.group)
    }
}

fn with_group(name: String, group: &str) -> String {
    if group.is_empty() {
        name
    } else {
        format!("{name}.{group}")
    }
}

/// The kinds this cluster stores, as a help line: `namespaces (ns), pods (po), ...`.
pub fn supported_resources() -> String {
    Kind::ALL
        .map(|k| {
            let r = Resource::of(k);
            format!("{} ({})", r.plural, r.short_name)
        })
        .join(", ")
}

/// What `apply`, `put` and friends did to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// Why the cluster refused a request. The messages are the API server's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("namespaces {0:?} not found; create it first: meshctl create ns {0}, or apply a Namespace document before this object")]
    NamespaceNotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// A kind this cluster does not store; the message says which it does.
    #[error("{0}")]
    UnknownKind(String),
    /// What istiod-lite (or the API server) would refuse, with its reason.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {reason}; fix or remove that file")]
    Unreadable { path: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] ClusterDirError),
}

impl ApiError {
    /// kubectl's prefix for errors the API server returns: `Error from server (NotFound): `.
    pub fn kubectl_prefix(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NamespaceNotFound(_) => {
                "Error from server (NotFound): "
            }
            ApiError::AlreadyExists { .. } => "Error from server (AlreadyExists): ",
            ApiError::Forbidden(_) => "Error from server (Forbidden): ",
            _ => "error: ",
        }
    }
}

/// A document of an input, with where it came from.
struct Document {
    value: Value,
    location: String,
}

/// One object that could not be applied or deleted: what it is and why.
struct Failure {
    object: String,
    error: ApiError,
    location: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} ({})", self.object, self.error, self.location)
    }
}

/// Whether an object is replaced as given, or merged like `kubectl apply`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Apply,
    Replace,
}

/// The cluster's objects: the config directory istiod-lite reads and the status it writes.
pub struct Api {
    config_dir: PathBuf,
    status_dir: PathBuf,
}

impl Api {
    pub fn new(config_dir: PathBuf, status_dir: PathBuf) -> Api {
        Api {
            config_dir,
            status_dir,
        }
    }

    /// `meshctl apply -f A -f B [-R] [-n NS]`. Each source is a file, a directory (its `*.yaml`,
    /// `*.yml` and `*.json` files in name order; subdirectories with `recursive`, like kubectl's
    /// `-R`) or `-` for standard input. Each document is applied on its own, in order: one
    /// istiod-lite would refuse is reported with its kind, name and reason and not written, and
    /// the others still apply. A missing path fails the command before anything is written.
    ///
    /// Kinds this cluster does not store (Deployment, ConfigMap, an Istio networking Gateway, ...)
    /// are refused with an error rather than stored: nothing here would act on them, and a
    /// `deployment created` that never makes pods would mislead. kubectl does the same for kinds
    /// whose CRDs are not installed. `kind: List` documents (what `get -o yaml` prints) are
    /// applied item by item. A document's `status` is ignored, as the API server ignores it:
    /// status is the cluster's to write. Returns whether everything applied.
    pub fn apply(
        &self,
        sources: &[String],
        namespace: Option<&str>,
        recursive: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let inputs = match read_sources(sources, recursive, &mut std::io::stdin().lock()) {
            Ok(inputs) => inputs,
            Err(message) => {
                writeln!(err, "error: {message}")?;
                return Ok(false);
            }
        };
        self.apply_inputs(&inputs, namespace, out, err)
    }

    /// [`Api::apply`] for YAML already in memory (a built-in manifest); `source` names it in
    /// error messages.
    pub fn apply_text(
        &self,
        source: &str,
        text: &str,
        namespace: Option<&str>,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let input = Input {
            name: source.to_string(),
            text: text.to_string(),
        };
        self.apply_inputs(&[input], namespace, out, err)
    }

    fn apply_inputs(
        &self,
        inputs: &[Input],
        namespace: Option<&str>,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let mut ok = true;
        let mut seen = 0;
        for input in inputs {
            let (documents, syntax_error) = split_documents(input);
            for doc in documents {
                seen += 1;
                match self.write_document(&doc, namespace, Mode::Apply) {
                    Ok((key, outcome)) => writeln!(
                        out,
                        "{}/{} {outcome}",
                        Resource::of(key.kind).type_name(),
                        key.name
                    )?,
                    Err(failure) => {
                        ok = false;
                        writeln!(err, "{}{failure}", failure.error.kubectl_prefix())?;
                    }
                }
            }
            if let Some(e) = syntax_error {
                ok = false;
                writeln!(err, "error: error parsing {}: {e}", input.name)?;
            }
        }
        if seen == 0 && ok {
            writeln!(err, "error: no objects passed to apply")?;
            ok = false;
        }
        Ok(ok)
    }

    /// `meshctl delete -f A [-R] [-n NS]`: deletes the objects the sources name, continuing past
    /// the ones that do not exist. Returns whether every object was deleted.
    pub fn delete_sources(
        &self,
        sources: &[String],
        namespace: Option<&str>,
        recursive: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let inputs = match read_sources(sources, recursive, &mut std::io::stdin().lock()) {
            Ok(inputs) => inputs,
            Err(message) => {
                writeln!(err, "error: {message}")?;
                return Ok(false);
            }
        };
        let mut ok = true;
        for input in &inputs {
            let (documents, syntax_error) = split_documents(input);
            for doc in documents {
                let key = identify(&doc, namespace);
                let result = key.and_then(|key| {
                    self.remove_key(&key)
                        .map(|removed| (key, removed))
                        .map_err(|error| Failure {
                            object: describe(&doc.value, namespace),
                            error,
                            location: doc.location.clone(),
                        })
                });
                match result {
                    Ok((key, true)) => writeln!(
                        out,
                        "{} {:?} deleted",
                        Resource::of(key.kind).type_name(),
                        key.name
                    )?,
                    Ok((key, false)) => {
                        ok = false;
                        writeln!(
                            err,
                            "Error from server (NotFound): error when deleting {:?}: {} {:?} not found",
                            input.name,
                            Resource::of(key.kind).qualified_plural(),
                            key.name
                        )?;
                    }
                    Err(failure) => {
                        ok = false;
                        writeln!(err, "{}{failure}", failure.error.kubectl_prefix())?;
                    }
                }
            }
            if let Some(e) = syntax_error {
                ok = false;
                writeln!(err, "error: error parsing {}: {e}", input.name)?;
            }
        }
        Ok(ok)
    }

    /// `meshctl delete KIND NAME... [-n NS]`. Deleting a namespace deletes what is in it, but not
    /// while pods run there (their sandboxes are `meshctl delete pod`'s to undo).
    pub fn delete(
        &self,
        kind: &str,
        names: &[String],
        namespace: &str,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let Some(resource) = resolve(kind, err)? else {
            return Ok(false);
        };
        if names.is_empty() {
            writeln!(
                err,
                "error: resource(s) were provided, but no name was specified"
            )?;
            return Ok(false);
        }
        let mut ok = true;
        for name in names {
            let key = scoped_key(resource.kind, namespace, name);
            match self.remove_key(&key) {
                Ok(true) => writeln!(out, "{} {name:?} deleted", resource.type_name())?,
                Ok(false) => {
                    ok = false;
                    writeln!(
                        err,
                        "Error from server (NotFound): {} {name:?} not found",
                        resource.qualified_plural()
                    )?;
                }
                Err(e) => {
                    ok = false;
                    writeln!(err, "{}{e}", e.kubectl_prefix())?;
                }
            }
        }
        Ok(ok)
    }

    /// Creates or replaces one object as given, status included: the path for the cluster's own
    /// writers (`meshctl run` writing a pod and its status). Validated like `apply`; a namespaced
    /// object without a namespace lands in `default`. Errors are [`ApiError`]s.
    pub fn put(&self, object: Value) -> anyhow::Result<Outcome> {
        self.write_value(object, Mode::Replace)
    }

    /// One object applied like `meshctl apply` (merged with what is stored; status ignored).
    pub fn apply_object(&self, object: Value) -> anyhow::Result<Outcome> {
        self.write_value(object, Mode::Apply)
    }

    fn write_value(&self, object: Value, mode: Mode) -> anyhow::Result<Outcome> {
        let doc = Document {
            location: "request".into(),
            value: object,
        };
        match self.write_document(&doc, None, mode) {
            Ok((_, outcome)) => Ok(outcome),
            Err(failure) => {
                let object = failure.object;
                Err(anyhow::Error::new(failure.error).context(object))
            }
        }
    }

    /// The stored object with its status merged in, or `None`. The namespace is ignored for
    /// cluster-scoped kinds.
    pub fn read(&self, kind: Kind, namespace: &str, name: &str) -> anyhow::Result<Option<Value>> {
        let key = scoped_key(kind, namespace, name);
        match self.load_key(&key)? {
            Some(value) => Ok(Some(self.with_status(&key, value)?)),
            None => Ok(None),
        }
    }

    /// Deletes one object; `false` when there was none. See [`Api::delete`] for namespaces.
    pub fn remove(&self, kind: Kind, namespace: &str, name: &str) -> anyhow::Result<bool> {
        Ok(self.remove_key(&scoped_key(kind, namespace, name))?)
    }

    /// Objects of a kind, in one namespace or (`None`) all, sorted by namespace and name, each
    /// with its status merged in.
    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> anyhow::Result<Vec<Value>> {
        let mut found = Vec::new();
        for value in self.load_all(kind, namespace)? {
            let key = key_of(kind, &value);
            found.push((
                (key.namespace.clone(), key.name.clone()),
                self.with_status(&key, value)?,
            ));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found.into_iter().map(|(_, v)| v).collect())
    }

    /// `meshctl label KIND NAME k=v k2- [--overwrite] [-n NS]`, like kubectl: changing the value
    /// of a label without `--overwrite` is refused (and nothing changes); `k-` removes `k`.
    #[allow(clippy::too_many_arguments)]
    pub fn label(
        &self,
        kind: &str,
        name: &str,
        namespace: &str,
        changes: &[String],
        overwrite: bool,
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        let Some(resource) = resolve(kind, err)? else {
            return Ok(false);
        };
        let changes = match parse_label_changes(changes) {
            Ok(c) => c,
            Err(message) => {
                writeln!(err, "error: {message}")?;
                return Ok(false);
            }
        };
        let key = scoped_key(resource.kind, namespace, name);
        let Some(mut object) = self.load_key(&key)? else {
            writeln!(
                err,
                "Error from server (NotFound): {} {name:?} not found",
                resource.qualified_plural()
            )?;
            writeln!(err, "{}", not_found_hint(resource.kind, namespace, name))?;
            return Ok(false);
        };
        let mut labels = labels_of(&object);
        let before = labels.clone();
        for (k, v) in &changes {
            match (v, labels.get(k)) {
                (Some(v), Some(current)) if current != v && !overwrite => {
                    writeln!(
                        err,
                        "error: '{k}' already has a value ({current}), and --overwrite is false"
                    )?;
                    writeln!(err, "hint: add --overwrite to replace it")?;
                    return Ok(false);
                }
                (Some(v), _) => {
                    labels.insert(k.clone(), v.clone());
                }
                (None, Some(_)) => {
                    labels.remove(k);
                }
                (None, None) => writeln!(out, "label {k:?} not found.")?,
            }
        }
        let shown = format!("{}/{name}", resource.type_name());
        if labels == before {
            writeln!(out, "{shown} not labeled")?;
            return Ok(true);
        }
        let only_removed = labels.len() < before.len() && changes.iter().all(|(_, v)| v.is_none());
        set_labels(&mut object, &labels);
        if let Err(failure) = self.write_document(
            &Document {
                value: object,
                location: "label".into(),
            },
            None,
            Mode::Replace,
        ) {
            writeln!(
                err,
                "{}{}: {}",
                failure.error.kubectl_prefix(),
                failure.object,
                failure.error
            )?;
            return Ok(false);
        }
        let verb = if only_removed { "unlabeled" } else { "labeled" };
        writeln!(out, "{shown} {verb}")?;
        Ok(true)
    }

    /// `meshctl create ns NAME`: AlreadyExists when it exists (the built-in ones always do).
    pub fn create_namespace(
        &self,
        name: &str,
        labels: &[(String, String)],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) -> anyhow::Result<bool> {
        if self.has_namespace(name)? {
            writeln!(
                err,
                "Error from server (AlreadyExists): namespaces {name:?} already exists"
            )?;
            return Ok(false);
        }
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let mut object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        if !labels.is_empty() {
            object["metadata"]["labels"] = Value::Object(labels);
        }
        let doc = Document {
            value: object,
            location: "create".into(),
        };
        match self.write_document(&doc, None, Mode::Replace) {
            Ok(_) => {
                writeln!(out, "namespace/{name} created")?;
                Ok(true)
            }
            Err(failure) => {
                writeln!(err, "error: {}: {}", failure.object, failure.error)?;
                Ok(false)
            }
        }
    }

    /// Whether the namespace exists: a stored Namespace, or a built-in one.
    pub fn namespace_exists(&self, name: &str) -> anyhow::Result<bool> {
        Ok(self.has_namespace(name)?)
    }

    fn has_namespace(&self, name: &str) -> Result<bool, ApiError> {
        Ok(self
            .load_key(&scoped_key(Kind::Namespace, "", name))?
            .is_some())
    }

    /// The one write path: place the namespace, check the kind, merge (apply) or take as given
    /// (replace), stamp what the cluster owns, validate with istiod-lite's parser, and write
    /// only what changed.
    fn write_document(
        &self,
        doc: &Document,
        namespace: Option<&str>,
        mode: Mode,
    ) -> Result<(ObjectKey, Outcome), Failure> {
        let fail = |error: ApiError| Failure {
            object: describe(&doc.value, namespace),
            error,
            location: doc.location.clone(),
        };
        let kind = kind_of(&doc.value).map_err(fail)?;
        let mut desired = doc.value.clone();
        place(&mut desired, kind, namespace).map_err(fail)?;
        let object = Object::from_value(desired.clone())
            .map_err(|e| fail(ApiError::Invalid(e.to_string())))?;
        let key = object.key();
        let Some(path) = self.object_path(&key) else {
            let reason = match object.validate() {
                Err(e) => e.to_string(),
                Ok(()) => format!("{:?} cannot be stored as a file name", key.name),
            };
            return Err(fail(ApiError::Invalid(reason)));
        };
        if kind.is_namespaced() && !self.has_namespace(&key.namespace).map_err(fail)? {
            return Err(fail(ApiError::NamespaceNotFound(key.namespace.clone())));
        }
        let live = load_file(&path).map_err(fail)?;
        strip_server_fields(&mut desired);
        let mut next = match mode {
            Mode::Apply => {
                if let Some(map) = desired.as_object_mut() {
                    map.remove("status");
                }
                remove_annotation(&mut desired, LAST_APPLIED_ANNOTATION);
                let last = live.as_ref().and_then(last_applied);
                let mut merged = match &live {
                    Some(live) => three_way(last.as_ref(), live, &desired),
                    None => desired.clone(),
                };
                set_annotation(&mut merged, LAST_APPLIED_ANNOTATION, desired.to_string());
                merged
            }
            Mode::Replace => desired,
        };
        // Only the cluster's own writers may say when an object was created.
        let given = (mode == Mode::Replace).then_some(&doc.value);
        stamp(&mut next, live.as_ref(), given);
        let text = serde_norway::to_string(&next)
            .map_err(|e| fail(ApiError::Invalid(format!("cannot be written as YAML: {e}"))))?;
        let parsed = parse_documents(&path.display().to_string(), &text);
        if let Some(rejection) = parsed.rejections.first() {
            return Err(fail(ApiError::Invalid(rejection.reason.clone())));
        }
        if parsed.objects.len() != 1 {
            return Err(fail(ApiError::Invalid(
                "istiod-lite would not read this object".into(),
            )));
        }
        if let Some(live) = &live {
            if comparable(live) == comparable(&next) {
                return Ok((key, Outcome::Unchanged));
            }
        }
        cluster_dir::write_atomic(&path, text.as_bytes()).map_err(|e| fail(e.into()))?;
        let outcome = if live.is_some() {
            Outcome::Configured
        } else {
            Outcome::Created
        };
        Ok((key, outcome))
    }

    fn remove_key(&self, key: &ObjectKey) -> Result<bool, ApiError> {
        let Some(path) = self.object_path(key) else {
            return Ok(false); // a name no object can have
        };
        if key.kind == Kind::Namespace {
            if BUILTIN_NAMESPACES.contains(&key.name.as_str()) {
                return Err(ApiError::Forbidden(format!(
                    "namespaces {:?} is forbidden: this namespace may not be deleted",
                    key.name
                )));
            }
            if !path.exists() {
                return Ok(false);
            }
            self.empty_namespace(&key.name)?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ApiError::Write {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Deletes every object in a namespace, refusing while pods are there.
    fn empty_namespace(&self, namespace: &str) -> Result<(), ApiError> {
        let pods: Vec<String> = self
            .load_all(Kind::Pod, Some(namespace))?
            .iter()
            .map(|p| key_of(Kind::Pod, p).name)
            .collect();
        if !pods.is_empty() {
            return Err(ApiError::Forbidden(format!(
                "namespace {namespace:?} still has pods ({}); delete them first: meshctl delete pod {} -n {namespace}",
                pods.join(", "),
                pods.join(" ")
            )));
        }
        for kind in Kind::ALL.into_iter().filter(|k| k.is_namespaced()) {
            for value in self.load_all(kind, Some(namespace))? {
                self.remove_key(&key_of(kind, &value))?;
            }
        }
        Ok(())
    }

    /// Where the object is stored; `None` for names no object can have (so they never reach
    /// the file system).
    fn object_path(&self, key: &ObjectKey) -> Option<PathBuf> {
        let valid = is_object_name(&key.name)
            && (!key.kind.is_namespaced() || is_dns_label(&key.namespace));
        valid.then(|| cluster_dir::object_path(&self.config_dir, key))
    }

    /// The stored object as written (no status merged), or a built-in namespace.
    fn load_key(&self, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
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
    fn load_all(&self, kind: Kind, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
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
    fn with_status(&self, key: &ObjectKey, mut value: Value) -> Result<Value, ApiError> {
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
fn scoped_key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    let namespace = if kind.is_namespaced() { namespace } else { "" };
    ObjectKey::new(kind, namespace, name)
}

/// The key of a stored object of a known kind.
fn key_of(kind: Kind, value: &Value) -> ObjectKey {
    scoped_key(
        kind,
        str_field(value, &["metadata", "namespace"]).unwrap_or("default"),
        str_field(value, &["metadata", "name"]).unwrap_or(""),
    )
}

fn builtin_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Writes an error line for a kind name no resource has; `None` then.
fn resolve(kind: &str, err: &mut dyn Write) -> std::io::Result<Option<Resource>> {
    let found = Resource::find(kind);
    if found.is_none() {
        writeln!(
            err,
            "error: the server doesn't have a resource type {kind:?}"
        )?;
        writeln!(err, "hint: this cluster has {}", supported_resources())?;
    }
    Ok(found)
}

fn not_found_hint(kind: Kind, namespace: &str, name: &str) -> String {
    match kind {
        Kind::Namespace => format!("hint: create it with: meshctl create ns {name}"),
        Kind::Pod => format!("hint: meshctl get pods -n {namespace} lists the pods there"),
        other => format!(
            "hint: meshctl get {} -n {namespace} lists them",
            Resource::of(other).plural
        ),
    }
}

/// A string field at a path, e.g. `["metadata", "name"]`.
pub(crate) fn str_field<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

/// `metadata.labels`, as strings.
pub(crate) fn labels_of(value: &Value) -> BTreeMap<String, String> {
    value
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn metadata_mut(value: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = value.as_object_mut()?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
}

fn set_labels(value: &mut Value, labels: &BTreeMap<String, String>) {
    if let Some(meta) = metadata_mut(value) {
        if labels.is_empty() {
            meta.remove("labels");
        } else {
            let labels = labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            meta.insert("labels".into(), Value::Object(labels));
        }
    }
}

fn set_annotation(value: &mut Value, key: &str, text: String) {
    if let Some(meta) = metadata_mut(value) {
        let annotations = meta
            .entry("annotations")
            .or_insert_with(|| Value::Object(Map::new()));
        if !annotations.is_object() {
            *annotations = Value::Object(Map::new());
        }
        if let Some(annotations) = annotations.as_object_mut() {
            annotations.insert(key.into(), Value::String(text));
        }
    }
}

fn remove_annotation(value: &mut Value, key: &str) {
    let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let now_empty = match meta.get_mut("annotations").and_then(Value::as_object_mut) {
        Some(annotations) => {
            annotations.remove(key);
            annotations.is_empty()
        }
        None => false,
    };
    if now_empty {
        meta.remove("annotations");
    }
}

fn last_applied(live: &Value) -> Option<Value> {
    let text = str_field(live, &["metadata", "annotations", LAST_APPLIED_ANNOTATION])?;
    serde_json::from_str(text).ok()
}

fn strip_server_fields(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_FIELDS {
            meta.remove(field);
        }
    }
}

/// kubectl's three-way merge: what the new document sets wins; what the last applied document
/// set and the new one no longer does is removed; what others set (labels from `label`, status,
/// the cluster's metadata) stays. Lists are replaced whole; `null` removes a field.
fn three_way(last: Option<&Value>, live: &Value, new: &Value) -> Value {
    let (Value::Object(live_map), Value::Object(new_map)) = (live, new) else {
        return new.clone();
    };
    let mut merged = live_map.clone();
    if let Some(Value::Object(last_map)) = last {
        for key in last_map.keys().filter(|k| !new_map.contains_key(*k)) {
            merged.remove(key);
        }
    }
    for (key, value) in new_map {
        if value.is_null() {
            merged.remove(key);
            continue;
        }
        let next = match merged.get(key) {
            Some(current) => three_way(last.and_then(|l| l.get(key)), current, value),
            None => value.clone(),
        };
        merged.insert(key.clone(), next);
    }
    Value::Object(merged)
}

/// Sets what the cluster owns: `creationTimestamp` (kept; on create the `given` one if valid,
/// else now) and `generation` (1, then one more whenever anything outside metadata
/// and status changes).
fn stamp(next: &mut Value, live: Option<&Value>, given: Option<&Value>) {
    let valid = |v: &Value| {
        str_field(v, &["metadata", "creationTimestamp"])
            .filter(|t| OffsetDateTime::parse(t, &Rfc3339).is_ok())
            .map(str::to_string)
    };
    let created = match live {
        Some(live) => valid(live),
        None => given.and_then(valid),
    }
    .unwrap_or_else(now_rfc3339);
    let generation = match live {
        None => 1,
        Some(live) => {
            let current = live
                .get("metadata")
                .and_then(|m| m.get("generation"))
                .and_then(Value::as_i64)
                .unwrap_or(1);
            if body(live) == body(next) {
                current
            } else {
                current + 1
            }
        }
    };
    if let Some(meta) = metadata_mut(next) {
        meta.insert("creationTimestamp".into(), Value::String(created));
        meta.insert("generation".into(), json!(generation));
    }
}

/// Everything but metadata and status: what `generation` counts changes of.
fn body(value: &Value) -> Value {
    let mut v = value.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
    }
    v
}

/// The object as compared for `unchanged`: without the cluster's bookkeeping, with the last
/// applied document parsed (so its key order does not count).
fn comparable(value: &Value) -> Value {
    let mut v = value.clone();
    strip_server_fields(&mut v);
    let slot = v
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .and_then(|a| a.get_mut(LAST_APPLIED_ANNOTATION));
    if let Some(slot) = slot {
        if let Some(parsed) = slot.as_str().and_then(|t| serde_json::from_str(t).ok()) {
            *slot = parsed;
        }
    }
    v
}

pub(crate) fn now_rfc3339() -> String {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The kind of a document, as istiod-lite's object model decides it.
fn kind_of(value: &Value) -> Result<Kind, ApiError> {
    let api_version = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        return Err(ApiError::Invalid("missing apiVersion or kind".into()));
    };
    let group = |v: &str| v.rsplit_once('/').map(|(g, _)| g).unwrap_or("").to_string();
    let preferred = |k: Kind| k.api_versions().first().copied().unwrap_or("");
    match Kind::from_name(kind) {
        Some(k) if group(preferred(k)) == group(api_version) => Ok(k),
        Some(k) => Err(ApiError::UnknownKind(format!(
            "meshctl does not know kind {kind} in {api_version}; it knows {kind} in {} ({})",
            preferred(k),
            match k {
                Kind::Gateway => "Gateway API: waypoints are Gateways of class istio-waypoint",
                _ => "the same kind in another API group",
            }
        ))),
        None => Err(ApiError::UnknownKind(format!(
            "meshctl does not know kind {kind} ({api_version}); this cluster stores {}; run workloads with meshctl run",
            Kind::ALL.map(Kind::as_str).join(", ")
        ))),
    }
}

/// Puts a namespaced object in its namespace (its own, else `-n`, else `default`) and takes the
/// namespace off cluster-scoped ones. An object naming another namespace than `-n` is refused,
/// as kubectl refuses it.
fn place(value: &mut Value, kind: Kind, flag: Option<&str>) -> Result<(), ApiError> {
    let Some(meta) = metadata_mut(value) else {
        return Err(ApiError::Invalid("the document is not a mapping".into()));
    };
    if !kind.is_namespaced() {
        meta.remove("namespace");
        return Ok(());
    }
    let own = meta
        .get("namespace")
        .and_then(Value::as_str)
        .filter(|ns| !ns.is_empty())
        .map(str::to_string);
    let namespace = match (own, flag) {
        (Some(own), Some(flag)) if own != flag => {
            return Err(ApiError::Invalid(format!(
                "the namespace from the provided object {own:?} does not match the namespace {flag:?}; pass -n {own} or leave -n out"
            )));
        }
        (Some(own), _) => own,
        (None, Some(flag)) => flag.to_string(),
        (None, None) => "default".to_string(),
    };
    meta.insert("namespace".into(), Value::String(namespace));
    Ok(())
}

/// `Pod demo/web`, as far as the document says.
fn describe(value: &Value, flag: Option<&str>) -> String {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let name = str_field(value, &["metadata", "name"]).unwrap_or("");
    let namespaced = Kind::from_name(kind).is_none_or(Kind::is_namespaced);
    let namespace = str_field(value, &["metadata", "namespace"])
        .filter(|ns| !ns.is_empty())
        .or(flag)
        .unwrap_or("default");
    match (kind, name) {
        ("", "") => "document".to_string(),
        ("", name) => format!("object {name}"),
        (kind, "") => format!("{kind} (no name)"),
        (kind, name) if namespaced => format!("{kind} {namespace}/{name}"),
        (kind, name) => format!("{kind} {name}"),
    }
}

/// The key a document names, for `delete -f` (its body need not be valid).
fn identify(doc: &Document, flag: Option<&str>) -> Result<ObjectKey, Failure> {
    let fail = |error| Failure {
        object: describe(&doc.value, flag),
        error,
        location: doc.location.clone(),
    };
    let kind = kind_of(&doc.value).map_err(fail)?;
    let mut value = doc.value.clone();
    place(&mut value, kind, flag).map_err(fail)?;
    let key = key_of(kind, &value);
    if key.name.is_empty() {
        return Err(fail(ApiError::Invalid("metadata.name is required".into())));
    }
    Ok(key)
}

/// One `-f` input: its name (the path, or `-`) and text.
struct Input {
    name: String,
    text: String,
}

/// Expands `-f` arguments into inputs; any path that does not exist fails them all, as kubectl
/// checks every path before it applies anything.
fn read_sources(
    sources: &[String],
    recursive: bool,
    stdin: &mut dyn Read,
) -> Result<Vec<Input>, String> {
    let mut files = Vec::new();
    let mut inputs = Vec::new();
    for source in sources {
        if source.starts_with("http://") || source.starts_with("https://") {
            return Err(format!(
                "meshctl reads files, directories and - (standard input), not URLs; try: curl -sL {source} | meshctl apply -f -"
            ));
        }
        if source == "-" {
            files.push(None);
            continue;
        }
        let path = Path::new(source);
        if path.is_dir() {
            let depth = if recursive {
                Depth::Recursive
            } else {
                Depth::Flat
            };
            let found = cluster_dir::walk(path, depth).map_err(|e| e.to_string())?;
            files.extend(found.into_iter().map(Some));
        } else if path.exists() {
            files.push(Some(path.to_path_buf()));
        } else {
            return Err(format!("the path {source:?} does not exist"));
        }
    }
    for file in files {
        match file {
            None => {
                let mut text = String::new();
                stdin
                    .read_to_string(&mut text)
                    .map_err(|e| format!("cannot read standard input: {e}"))?;
                inputs.push(Input {
                    name: "-".into(),
                    text,
                });
            }
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                inputs.push(Input {
                    name: path.display().to_string(),
                    text,
                });
            }
        }
    }
    Ok(inputs)
}

/// The documents of an input in order (`kind: List` expanded), and the YAML syntax error that
/// ended it early, if one did: documents before it still count, as they do for istiod-lite.
fn split_documents(input: &Input) -> (Vec<Document>, Option<String>) {
    let source = if input.name == "-" {
        "stdin"
    } else {
        input.name.as_str()
    };
    let mut documents = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&input.text).enumerate() {
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => return (documents, Some(e.to_string())),
        };
        let location = format!("{source}, document {}", i + 1);
        let is_list = value.get("kind").and_then(Value::as_str) == Some("List")
            && value.get("apiVersion").and_then(Value::as_str) == Some("v1");
        match value {
            Value::Null => {}
            Value::Object(mut map) if is_list => {
                let items = match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for (j, item) in items.into_iter().enumerate() {
                    documents.push(Document {
                        value: item,
                        location: format!("{location}, item {}", j + 1),
                    });
                }
            }
            value => documents.push(Document { value, location }),
        }
    }
    (documents, None)
}

/// Reads one stored object; `None` when the file does not exist.
fn load_file(path: &Path) -> Result<Option<Value>, ApiError> {
    let unreadable = |reason: String| ApiError::Unreadable {
        path: path.display().to_string(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let value: Value = serde_norway::from_str(&text).map_err(|e| unreadable(e.to_string()))?;
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

/// An RFC 1123 subdomain, the rule for object names (so it is also a safe file name).
fn is_object_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 253
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'.')
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// An RFC 1123 label, the rule for namespace names.
fn is_dns_label(name: &str) -> bool {
    is_object_name(name) && name.len() <= 63 && !name.contains('.')
}

/// Parses `k=v` (set) and `k-` (remove), checking keys and values as the API server does.
fn parse_label_changes(changes: &[String]) -> Result<Vec<(String, Option<String>)>, String> {
    if changes.is_empty() {
        return Err("at least one label update is required".into());
    }
    let mut parsed: Vec<(String, Option<String>)> = Vec::new();
    for change in changes {
        let (key, value) = match change.split_once('=') {
            Some((k, v)) => {
                check_label_value(v).map_err(|e| format!("invalid label value: {change:?}: {e}"))?;
                (k, Some(v.to_string()))
            }
            None => match change.strip_suffix('-') {
                Some(k) => (k, None),
                None => {
                    return Err(format!(
                        "invalid label spec: {change:?}: use key=value to set a label, key- to remove it"
                    ))
                }
            },
        };
        check_label_key(key).map_err(|e| format!("invalid label key {key:?}: {e}"))?;
        if let Some((_, other)) = parsed.iter().find(|(k, _)| k == key) {
            if other.is_some() != value.is_some() {
                return Err(format!(
                    "can not both modify and remove label {key:?} in the same command"
                ));
            }
        }
        parsed.push((key.to_string(), value));
    }
    Ok(parsed)
}

fn is_label_word(s: &str) -> bool {
    let bytes = s.as_bytes();
    !s.is_empty()
        && s.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        if !is_object_name(prefix) {
            return Err(
                "the prefix must be a DNS subdomain (lower case letters, digits, '-' and '.')"
                    .into(),
            );
        }
    }
    if !is_label_word(name) {
        return Err("the name must be 63 characters or less, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric character".into());
    }
    Ok(())
}

fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err("a valid label must be an empty string or 63 characters or less, alphanumeric, '-', '_' or '.', and start and end with an alphanumeric character".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) struct Cluster {
        pub dir: tempfile::TempDir,
        pub api: Api,
    }

    pub(crate) fn cluster() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let api = Api::new(dir.path().join("config"), dir.path().join("status"));
        Cluster { dir, api }
    }

    /// Runs `apply -f` on one file holding `text`; returns (ok, stdout, stderr).
    pub(crate) fn apply(c: &Cluster, text: &str) -> (bool, String, String) {
        let file = c.dir.path().join("input.yaml");
        std::fs::write(&file, text).expect("write input");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = c
            .api
            .apply(
                &[file.display().to_string()],
                None,
                false,
                &mut out,
                &mut err,
            )
            .expect("apply");
        (ok, utf8(out), utf8(err))
    }

    pub(crate) fn utf8(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8 output")
    }

    const DENY_ALL: &str = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-all
  namespace: demo
spec: {}
";

    const NAMESPACE: &str = "
apiVersion: v1
kind: Namespace
metadata:
  name: demo
";

    #[test]
    fn apply_creates_then_is_unchanged_then_configured() {
        let c = cluster();
        let (ok, out, err) = apply(&c, &format!("{NAMESPACE}---{DENY_ALL}"));
        assert!(ok, "{err}");
        assert_eq!(
            out,
            "namespace/demo created\nauthorizationpolicy.security.istio.io/deny-all created\n"
        );
        // The same objects written differently (key order, quoting, flow style) are unchanged.
        let reordered = r#"{"kind": "AuthorizationPolicy", "spec": {}, "metadata": {"namespace": "demo", "name": "deny-all"}, "apiVersion": "security.istio.io/v1"}"#;
        let (ok, out, _) = apply(&c, reordered);
        assert!(ok);
        assert_eq!(
            out,
            "authorizationpolicy.security.istio.io/deny-all unchanged\n"
        );
        let path = c
            .dir
            .path()
            .join("config/authorizationpolicy/demo/deny-all.yaml");
        let before = std::fs::read(&path).unwrap();
        let (ok, out, _) = apply(&c, &DENY_ALL.replace("spec: {}", "spec: {action: DENY}"));
        assert!(ok);
        assert_eq!(
            out,
            "authorizationpolicy.security.istio.io/deny-all configured\n"
        );
        let stored = c
            .api
            .read(Kind::AuthorizationPolicy, "demo", "deny-all")
            .unwrap()
            .unwrap();
        assert_eq!(stored["spec"]["action"], "DENY");
        assert_eq!(stored["metadata"]["generation"], 2);
        assert_ne!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn an_invalid_document_is_refused_by_name_and_the_others_are_written() {
        let c = cluster();
        let text = format!(
            "{NAMESPACE}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: bad, namespace: demo}}
spec:
  action: ALLOW
  provider: {{name: ext}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: demo}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: demo}}
spec:
  ports: [{{port: 80}}]
"
        );
        let (ok, out, err) = apply(&c, &text);
        assert!(!ok);
        assert_eq!(out, "namespace/demo created\nservice/web created\n");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 2, "{err}");
        assert!(
            lines[0].starts_with("error: AuthorizationPolicy demo/bad: spec.provider is only allowed with action CUSTOM ("),
            "{err}"
        );
        assert!(lines[0].ends_with("input.yaml, document 2)"), "{err}");
        assert!(
            lines[1].starts_with(
                "error: Deployment demo/web: meshctl does not know kind Deployment (apps/v1)"
            ),
            "{err}"
        );
        assert!(c
            .api
            .read(Kind::AuthorizationPolicy, "demo", "bad")
            .unwrap()
            .is_none());
        assert!(c.api.read(Kind::Service, "demo", "web").unwrap().is_some());
    }

    #[test]
    fn a_decode_error_and_a_wrong_api_version_are_refused_with_istiod_lite_reasons() {
        let c = cluster();
        let text = "
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: eighty}]
---
apiVersion: security.istio.io/v2
kind: PeerAuthentication
metadata: {name: strict}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress}
";
        let (ok, out, err) = apply(&c, text);
        assert!(!ok);
        assert_eq!(out, "");
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines[0].starts_with("error: Service default/web: spec.ports[0].port:"),
            "{err}"
        );
        assert!(
            lines[1].starts_with("error: PeerAuthentication default/strict: apiVersion \"security.istio.io/v2\" is not supported"),
            "{err}"
        );
        assert!(
            lines[2].contains("it knows Gateway in gateway.networking.k8s.io/v1"),
            "{err}"
        );
    }

    #[test]
    fn objects_are_stored_one_per_file_where_istiod_lite_reads_them() {
        let c = cluster();
        let (ok, _, err) = apply(
            &c,
            &format!(
                "{NAMESPACE}---{DENY_ALL}---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web}}
"
            ),
        );
        assert!(ok, "{err}");
        let config = c.dir.path().join("config");
        for file in [
            "namespace/_cluster/demo.yaml",
            "authorizationpolicy/demo/deny-all.yaml",
            "serviceaccount/default/web.yaml",
        ] {
            let text = std::fs::read_to_string(config.join(file)).expect(file);
            let parsed = parse_documents(file, &text);
            assert_eq!(parsed.objects.len(), 1, "{file}");
            assert!(parsed.rejections.is_empty(), "{file}");
        }
        let ns: Value = serde_norway::from_str(
            &std::fs::read_to_string(config.join("namespace/_cluster/demo.yaml")).unwrap(),
        )
        .unwrap();
        assert!(ns["metadata"].get("namespace").is_none());
        assert!(ns["metadata"]["creationTimestamp"].is_string());
        // No temporary files are left for istiod-lite to trip over.
        let leftovers: Vec<_> = std::fs::read_dir(config.join("authorizationpolicy/demo"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name() != "deny-all.yaml")
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_namespace_must_exist_and_the_flag_must_agree() {
        let c = cluster();
        let (ok, _, err) = apply(&c, DENY_ALL);
        assert!(!ok);
        assert!(
            err.starts_with("Error from server (NotFound): AuthorizationPolicy demo/deny-all: namespaces \"demo\" not found; create it first: meshctl create ns demo"),
            "{err}"
        );
        // `default` always exists; -n places objects that name no namespace.
        let file = c.dir.path().join("sa.yaml");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
        )
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let src = [file.display().to_string()];
        assert!(c.api.apply(&src, None, false, &mut out, &mut err).unwrap());
        assert!(c
            .api
            .read(Kind::ServiceAccount, "default", "a")
            .unwrap()
            .is_some());
        assert!(!c
            .api
            .apply(&src, Some("demo"), false, &mut out, &mut err)
            .unwrap());
        c.api
            .put(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}}))
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(c
            .api
            .apply(&src, Some("demo"), false, &mut out, &mut err)
            .unwrap());
        assert!(c
            .api
            .read(Kind::ServiceAccount, "demo", "a")
            .unwrap()
            .is_some());
        // An object naming another namespace than -n is refused.
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let file2 = c.dir.path().join("ap.yaml");
        std::fs::write(&file2, DENY_ALL).unwrap();
        let ok = c
            .api
            .apply(
                &[file2.display().to_string()],
                Some("other"),
                false,
                &mut out,
                &mut err,
            )
            .unwrap();
        assert!(!ok);
        assert!(utf8(err).contains("does not match the namespace \"other\""));
    }

    #[test]
    fn apply_keeps_labels_set_by_label_and_drops_fields_it_no_longer_applies() {
        let c = cluster();
        let ns_with_team =
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels: {team: a}\n";
        assert!(apply(&c, ns_with_team).0);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let changes = ["istio.io/dataplane-mode=ambient".to_string()];
        assert!(c
            .api
            .label("ns", "demo", "", &changes, false, &mut out, &mut err)
            .unwrap());
        // Re-applying without `team` removes it (it was applied before); the label set by
        // `label` was never applied, so it stays.
        let (ok, out, _) = apply(&c, &ns_with_team.replace("team: a", "owner: b"));
        assert!(ok);
        assert_eq!(out, "namespace/demo configured\n");
        let labels = labels_of(&c.api.read(Kind::Namespace, "", "demo").unwrap().unwrap());
        assert_eq!(
            labels.get("istio.io/dataplane-mode").map(String::as_str),
            Some("ambient")
        );
        assert!(!labels.contains_key("team"));
        assert_eq!(labels.get("owner").map(String::as_str), Some("b"));
    }

    #[test]
    fn apply_ignores_status_and_put_writes_it() {
        let c = cluster();
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"nodeName": "node1"},
            "status": {"phase": "Running", "podIP": "10.0.1.5"}});
        assert_eq!(c.api.put(pod.clone()).unwrap(), Outcome::Created);
        assert_eq!(c.api.put(pod.clone()).unwrap(), Outcome::Unchanged);
        let mut applied = pod.clone();
        applied["status"] = json!({"podIP": "10.9.9.9"});
        assert_eq!(c.api.apply_object(applied).unwrap(), Outcome::Configured);
        let stored = c.api.read(Kind::Pod, "default", "web").unwrap().unwrap();
        assert_eq!(stored["status"]["podIP"], "10.0.1.5");
        assert_eq!(stored["metadata"]["generation"], 1, "only metadata changed");
        // On create, apply takes no creationTimestamp from the document; put (the runtime) does.
        let old = "2020-01-01T00:00:00Z";
        let sa = |name: &str| {
            json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": name, "creationTimestamp": old}})
        };
        c.api.apply_object(sa("applied")).unwrap();
        c.api.put(sa("put")).unwrap();
        let created = |name: &str| {
            let v = c
                .api
                .read(Kind::ServiceAccount, "default", name)
                .unwrap()
                .unwrap();
            v["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert_ne!(created("applied"), old);
        assert_eq!(created("put"), old);
        // put refuses what istiod-lite would refuse, naming the object.
        let mut bad = pod;
        bad["status"]["podIP"] = json!("10.0.0.300");
        let e = c.api.put(bad).unwrap_err();
        assert_eq!(
            format!("{e:#}"),
            "Pod default/web: status.podIP \"10.0.0.300\" is not an IP address"
        );
        assert!(matches!(
            e.downcast_ref::<ApiError>(),
            Some(ApiError::Invalid(_))
        ));
    }

    #[test]
    fn list_sorts_and_merges_istiod_lite_status() {
        let c = cluster();
        assert!(
            apply(
                &c,
                &format!(
                    "{NAMESPACE}---{DENY_ALL}---{}",
                    DENY_ALL.replace("deny-all", "allow-a")
                )
            )
            .0
        );
        let status_file = c
            .dir
            .path()
            .join("status/authorizationpolicy/demo/deny-all.yaml");
        std::fs::create_dir_all(status_file.parent().unwrap()).unwrap();
        std::fs::write(
            &status_file,
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-all, namespace: demo}\nstatus:\n  conditions:\n  - type: ZtunnelAccepted\n    status: 'True'\n    reason: Accepted\n    message: attached to ztunnel\n    observedGeneration: 1\n    lastTransitionTime: '2025-01-01T00:00:00Z'\n",
        )
        .unwrap();
        let items = c.api.list(Kind::AuthorizationPolicy, Some("demo")).unwrap();
        let names: Vec<&str> = items
            .iter()
            .map(|i| str_field(i, &["metadata", "name"]).unwrap())
            .collect();
        assert_eq!(names, ["allow-a", "deny-all"]);
        assert!(items[0].get("status").is_none());
        assert_eq!(
            items[1]["status"]["conditions"][0]["message"],
            "attached to ztunnel"
        );
        assert!(c
            .api
            .list(Kind::AuthorizationPolicy, Some("other"))
            .unwrap()
            .is_empty());
        assert_eq!(
            c.api.list(Kind::AuthorizationPolicy, None).unwrap().len(),
            2
        );
        let namespaces: Vec<String> = c
            .api
            .list(Kind::Namespace, None)
            .unwrap()
            .iter()
            .map(|n| key_of(Kind::Namespace, n).name)
            .collect();
        assert_eq!(
            namespaces,
            ["default", "demo", "istio-system", "kube-system"]
        );
    }

    #[test]
    fn delete_from_files_reports_each_object() {
        let c = cluster();
        assert!(apply(&c, &format!("{NAMESPACE}---{DENY_ALL}")).0);
        let file = c.dir.path().join("delete.yaml");
        std::fs::write(
            &file,
            format!("{DENY_ALL}---\napiVersion: v1\nkind: Service\nmetadata: {{name: gone, namespace: demo}}\n"),
        )
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = c
            .api
            .delete_sources(
                &[file.display().to_string()],
                None,
                false,
                &mut out,
                &mut err,
            )
            .unwrap();
        assert!(!ok);
        assert_eq!(
            utf8(out),
            "authorizationpolicy.security.istio.io \"deny-all\" deleted\n"
        );
        assert_eq!(
            utf8(err),
            format!(
                "Error from server (NotFound): error when deleting {:?}: services \"gone\" not found\n",
                file.display().to_string()
            )
        );
        assert!(!c
            .dir
            .path()
            .join("config/authorizationpolicy/demo/deny-all.yaml")
            .exists());
    }

    #[test]
    fn delete_by_kind_and_name_accepts_kubectl_names() {
        let c = cluster();
        assert!(apply(&c, &format!("{NAMESPACE}---{DENY_ALL}")).0);
        for name in [
            "ap",
            "authorizationpolicies",
            "AuthorizationPolicy",
            "authorizationpolicy.security.istio.io",
            "svc",
            "gtw",
            "pa",
            "ns",
            "po",
            "sa",
        ] {
            assert!(Resource::find(name).is_some(), "{name}");
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let names = ["deny-all".to_string(), "nope".to_string()];
        assert!(!c
            .api
            .delete("ap", &names, "demo", &mut out, &mut err)
            .unwrap());
        assert_eq!(
            utf8(out),
            "authorizationpolicy.security.istio.io \"deny-all\" deleted\n"
        );
        assert_eq!(
            utf8(err),
            "Error from server (NotFound): authorizationpolicies.security.istio.io \"nope\" not found\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .delete("deployments", &names, "demo", &mut out, &mut err)
            .unwrap());
        let err = utf8(err);
        assert!(err.starts_with("error: the server doesn't have a resource type \"deployments\"\nhint: this cluster has namespaces (ns), "), "{err}");
    }

    #[test]
    fn deleting_a_namespace_empties_it_but_not_while_pods_run() {
        let c = cluster();
        assert!(apply(&c, &format!("{NAMESPACE}---{DENY_ALL}")).0);
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "namespace": "demo"}});
        c.api.put(pod).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ns = ["demo".to_string()];
        assert!(!c.api.delete("ns", &ns, "", &mut out, &mut err).unwrap());
        assert!(utf8(err)
            .contains("still has pods (web); delete them first: meshctl delete pod web -n demo"));
        assert!(c.api.remove(Kind::Pod, "demo", "web").unwrap());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(c.api.delete("ns", &ns, "", &mut out, &mut err).unwrap());
        assert_eq!(utf8(out), "namespace \"demo\" deleted\n");
        assert!(c
            .api
            .read(Kind::AuthorizationPolicy, "demo", "deny-all")
            .unwrap()
            .is_none());
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .delete("ns", &["default".to_string()], "", &mut out, &mut err)
            .unwrap());
        assert!(utf8(err)
            .starts_with("Error from server (Forbidden): namespaces \"default\" is forbidden"));
    }

    #[test]
    fn label_adds_refuses_to_overwrite_and_removes() {
        let c = cluster();
        let run = |kind: &str, name: &str, changes: &[&str], overwrite: bool| {
            let changes: Vec<String> = changes.iter().map(|s| s.to_string()).collect();
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let ok = c
                .api
                .label(kind, name, "", &changes, overwrite, &mut out, &mut err)
                .unwrap();
            (ok, utf8(out), utf8(err))
        };
        assert_eq!(
            run("ns", "demo", &["a=b"], false),
            (
                false,
                String::new(),
                "Error from server (NotFound): namespaces \"demo\" not found\nhint: create it with: meshctl create ns demo\n".into()
            )
        );
        let (ok, out, _) = run(
            "namespace",
            "default",
            &["istio.io/dataplane-mode=ambient"],
            false,
        );
        assert!(ok);
        assert_eq!(out, "namespace/default labeled\n");
        let (ok, out, _) = run("ns", "default", &["istio.io/dataplane-mode=ambient"], false);
        assert!(ok);
        assert_eq!(out, "namespace/default not labeled\n");
        let (ok, _, err) = run("ns", "default", &["istio.io/dataplane-mode=none"], false);
        assert!(!ok);
        assert_eq!(
            err,
            "error: 'istio.io/dataplane-mode' already has a value (ambient), and --overwrite is false\nhint: add --overwrite to replace it\n"
        );
        assert!(run("ns", "default", &["istio.io/dataplane-mode=none"], true).0);
        let (ok, out, _) = run(
            "ns",
            "default",
            &["istio.io/dataplane-mode-", "missing-"],
            false,
        );
        assert!(ok);
        assert_eq!(
            out,
            "label \"missing\" not found.\nnamespace/default unlabeled\n"
        );
        assert!(
            labels_of(&c.api.read(Kind::Namespace, "", "default").unwrap().unwrap()).is_empty()
        );
        let (ok, _, err) = run("ns", "default", &["bad key=x"], false);
        assert!(!ok);
        assert!(
            err.starts_with("error: invalid label key \"bad key\""),
            "{err}"
        );
        let (ok, _, err) = run("ns", "default", &["k=bad value"], false);
        assert!(!ok);
        assert!(err.starts_with("error: invalid label value"), "{err}");
    }

    #[test]
    fn label_works_on_pods_and_services() {
        let c = cluster();
        c.api
            .put(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}))
            .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let changes = ["istio.io/use-waypoint=waypoint".to_string()];
        assert!(c
            .api
            .label("svc", "web", "default", &changes, false, &mut out, &mut err)
            .unwrap());
        assert_eq!(utf8(out), "service/web labeled\n");
        let svc = c
            .api
            .read(Kind::Service, "default", "web")
            .unwrap()
            .unwrap();
        assert_eq!(labels_of(&svc)["istio.io/use-waypoint"], "waypoint");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .label("po", "web", "default", &changes, false, &mut out, &mut err)
            .unwrap());
        assert_eq!(
            utf8(err),
            "Error from server (NotFound): pods \"web\" not found\nhint: meshctl get pods -n default lists the pods there\n"
        );
    }

    #[test]
    fn create_namespace_refuses_an_existing_one() {
        let c = cluster();
        let labels = [("istio.io/dataplane-mode".to_string(), "ambient".to_string())];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(c
            .api
            .create_namespace("demo", &labels, &mut out, &mut err)
            .unwrap());
        assert_eq!(utf8(out), "namespace/demo created\n");
        let ns = c.api.read(Kind::Namespace, "", "demo").unwrap().unwrap();
        assert_eq!(labels_of(&ns)["istio.io/dataplane-mode"], "ambient");
        for name in ["demo", "default"] {
            let (mut out, mut err) = (Vec::new(), Vec::new());
            assert!(!c
                .api
                .create_namespace(name, &[], &mut out, &mut err)
                .unwrap());
            assert_eq!(
                utf8(err),
                format!("Error from server (AlreadyExists): namespaces {name:?} already exists\n")
            );
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .create_namespace("Bad_Name", &[], &mut out, &mut err)
            .unwrap());
        assert!(utf8(err).contains("metadata.name \"Bad_Name\" must consist of"));
    }

    #[test]
    fn sources_directories_lists_stdin_and_missing_paths() {
        let c = cluster();
        let dir = c.dir.path().join("manifests");
        std::fs::create_dir_all(dir.join("nested")).unwrap();
        std::fs::write(
            dir.join("b.yaml"),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: b}\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("a.json"),
            r#"{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "a"}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("notes.txt"), "not yaml").unwrap();
        std::fs::write(
            dir.join("nested/c.yml"),
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: c}\n",
        )
        .unwrap();
        let src = [dir.display().to_string()];
        let mut stdin = std::io::empty();
        let names = |inputs: Vec<Input>| -> Vec<String> {
            inputs
                .iter()
                .map(|i| {
                    Path::new(&i.name)
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        assert_eq!(
            names(read_sources(&src, false, &mut stdin).unwrap()),
            ["a.json", "b.yaml"]
        );
        assert_eq!(
            names(read_sources(&src, true, &mut stdin).unwrap()),
            ["a.json", "b.yaml", "c.yml"]
        );
        let missing = ["nope.yaml".to_string()];
        assert_eq!(
            read_sources(&missing, false, &mut stdin).err().unwrap(),
            "the path \"nope.yaml\" does not exist"
        );
        let mut stdin = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: x}}\n- {apiVersion: v1, kind: ServiceAccount, metadata: {name: y}}\n".as_bytes();
        let inputs = read_sources(&["-".to_string()], false, &mut stdin).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(c
            .api
            .apply_inputs(&inputs, None, &mut out, &mut err)
            .unwrap());
        assert_eq!(
            utf8(out),
            "serviceaccount/x created\nserviceaccount/y created\n"
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .apply_text("empty", "---\n", None, &mut out, &mut err)
            .unwrap());
        assert_eq!(utf8(err), "error: no objects passed to apply\n");
    }

    #[test]
    fn a_yaml_syntax_error_keeps_the_documents_before_it() {
        let c = cluster();
        let text =
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: first}\n---\nkind: [unclosed\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert!(!c
            .api
            .apply_text("broken.yaml", text, None, &mut out, &mut err)
            .unwrap());
        assert_eq!(utf8(out), "serviceaccount/first created\n");
        assert!(utf8(err).starts_with("error: error parsing broken.yaml: "));
    }

    #[test]
    fn names_that_are_not_object_names_never_reach_the_file_system() {
        let c = cluster();
        assert!(c
            .api
            .read(Kind::Pod, "default", "../../etc/passwd")
            .unwrap()
            .is_none());
        assert!(c.api.read(Kind::Pod, "..", "x").unwrap().is_none());
        assert!(!c.api.remove(Kind::Pod, "default", "../x").unwrap());
        let e = c
            .api
            .put(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "../x"}}))
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("must consist of lower case alphanumeric"),
            "{e:#}"
        );
    }
}
