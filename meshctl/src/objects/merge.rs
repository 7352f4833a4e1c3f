//! What `apply` does with what is stored: kubectl's three-way merge (what you apply, what you
//! applied last, what is stored), the fields the cluster owns (`creationTimestamp`,
//! `generation`), and the comparison that says `unchanged`.

use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::fields::{metadata_mut, str_field};

/// Where kubectl keeps the document last applied, for the next apply's three-way merge.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Metadata the cluster sets; never taken from what a user applies.
const SERVER_FIELDS: [&str; 6] = [
    "creationTimestamp",
    "generation",
    "uid",
    "resourceVersion",
    "managedFields",
    "selfLink",
];

pub(super) fn last_applied(live: &Value) -> Option<Value> {
    let text = str_field(live, &["metadata", "annotations", LAST_APPLIED_ANNOTATION])?;
    serde_json::from_str(text).ok()
}

pub(super) fn strip_server_fields(value: &mut Value) {
    if let Some(meta) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in SERVER_FIELDS {
            meta.remove(field);
        }
    }
}

/// kubectl's three-way merge: what the new document sets wins; what the last applied document
/// set and the new one no longer does is removed; what others set (labels from `label`, status,
/// the cluster's metadata) stays. Lists are replaced whole; `null` removes a field.
pub(super) fn three_way(last: Option<&Value>, live: &Value, new: &Value) -> Value {
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
pub(super) fn stamp(next: &mut Value, live: Option<&Value>, given: Option<&Value>) {
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
pub(super) fn comparable(value: &Value) -> Value {
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
    mesh_core::time_text::rfc3339(std::time::SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_way_keeps_what_others_set_and_drops_what_apply_no_longer_sets() {
        let last = json!({"metadata": {"labels": {"app": "web", "old": "x"}}, "spec": {"a": 1}});
        let live = json!({
            "metadata": {"labels": {"app": "web", "old": "x", "team": "blue"}},
            "spec": {"a": 1, "b": [1, 2]},
            "status": {"phase": "Running"},
        });
        let new = json!({"metadata": {"labels": {"app": "web2"}}, "spec": {"a": null, "b": [3]}});
        assert_eq!(
            three_way(Some(&last), &live, &new),
            json!({
                "metadata": {"labels": {"app": "web2", "team": "blue"}},
                "spec": {"b": [3]},
                "status": {"phase": "Running"},
            })
        );
    }

    #[test]
    fn generation_counts_changes_outside_metadata_and_status() {
        let mut first = json!({"metadata": {"name": "a"}, "spec": {"x": 1}});
        stamp(&mut first, None, None);
        assert_eq!(first["metadata"]["generation"], 1);
        let created = first["metadata"]["creationTimestamp"].clone();
        let mut relabelled =
            json!({"metadata": {"name": "a", "labels": {"k": "v"}}, "spec": {"x": 1}});
        stamp(&mut relabelled, Some(&first), None);
        assert_eq!(relabelled["metadata"]["generation"], 1);
        assert_eq!(relabelled["metadata"]["creationTimestamp"], created);
        let mut changed = json!({"metadata": {"name": "a"}, "spec": {"x": 2}});
        stamp(&mut changed, Some(&relabelled), None);
        assert_eq!(changed["metadata"]["generation"], 2);
        let given = json!({"metadata": {"creationTimestamp": "2025-03-01T10:00:00Z"}});
        let mut created_by_cluster = json!({"metadata": {"name": "b"}});
        stamp(&mut created_by_cluster, None, Some(&given));
        assert_eq!(
            created_by_cluster["metadata"]["creationTimestamp"],
            "2025-03-01T10:00:00Z"
        );
    }
}
