//! The object API: `apply`, `delete`, `label`, `create ns`, `get`'s reads and the cluster's own
//! writes, each document on its own, over the file store.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;

use mesh_core::cluster_dir::{self, parse_documents};
use mesh_core::k8s::{Kind, Object, ObjectKey};
use serde_json::{json, Map, Value};

use super::error::ApiError;
use super::fields::{
    labels_of, metadata_mut, remove_annotation, set_annotation, set_labels, str_field,
};
use super::input::{read_sources, split_documents, Document, Input};
use super::merge::{
    comparable, last_applied, stamp, strip_server_fields, three_way, LAST_APPLIED_ANNOTATION,
};
use super::names::parse_label_changes;
use super::resource::{supported_resources, Resource};
use super::store::{key_of, load_file, scoped_key, Store, BUILTIN_NAMESPACES};

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
    store: Store,
}

impl Api {
    pub fn new(config_dir: PathBuf, status_dir: PathBuf) -> Api {
        Api {
            store: Store {
                config_dir,
                status_dir,
            },
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
                    writeln!(err, "{}", resource.not_found(name))?;
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
        match self.store.load_key(&key)? {
            Some(value) => Ok(Some(self.store.with_status(&key, value)?)),
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
        for value in self.store.load_all(kind, namespace)? {
            let key = key_of(kind, &value);
            found.push((
                (key.namespace.clone(), key.name.clone()),
                self.store.with_status(&key, value)?,
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
        let Some(mut object) = self.store.load_key(&key)? else {
            writeln!(err, "{}", resource.not_found(name))?;
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
            .store
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
        let Some(path) = self.store.object_path(&key) else {
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
        let Some(path) = self.store.object_path(key) else {
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
            .store
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
            for value in self.store.load_all(kind, Some(namespace))? {
                self.remove_key(&key_of(kind, &value))?;
            }
        }
        Ok(())
    }
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
                Kind::HttpRoute | Kind::GrpcRoute => "Gateway API",
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

#[cfg(test)]
mod tests;
