//! Reading and setting fields of an object's JSON: strings at a path, labels, annotations.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

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

pub(super) fn metadata_mut(value: &mut Value) -> Option<&mut Map<String, Value>> {
    let map = value.as_object_mut()?;
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    meta.as_object_mut()
}

pub(super) fn set_labels(value: &mut Value, labels: &BTreeMap<String, String>) {
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

pub(super) fn set_annotation(value: &mut Value, key: &str, text: String) {
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

pub(super) fn remove_annotation(value: &mut Value, key: &str) {
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
