//! `meshctl get`: objects printed the way kubectl prints them (table, wide, YAML, JSON, names),
//! with the mesh's columns: who is enrolled in ambient, which waypoint a service uses, and what
//! istiod-lite says about each policy (its status conditions).

use std::collections::BTreeMap;
use std::io::Write;

use mesh_core::k8s::{
    is_enrolled, Kind, Namespace, Pod, DATAPLANE_MODE_LABEL, USE_WAYPOINT_LABEL,
    USE_WAYPOINT_NAMESPACE_LABEL, WAYPOINT_FOR_LABEL,
};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::objects::{labels_of, str_field, supported_resources, Api, Resource};

/// `-o`: the kubectl output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Wide,
    Yaml,
    Json,
    Name,
}

/// `meshctl get KIND [NAME...] [-n NS | -A] [-o FORMAT]`. Returns false when the kind is unknown
/// or a named object was not found (what was found is still printed, as kubectl does).
#[allow(clippy::too_many_arguments)]
pub fn get(
    api: &Api,
    kind: &str,
    names: &[String],
    namespace: &str,
    all_namespaces: bool,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    let request = Request {
        names,
        namespace,
        all_namespaces,
        format,
        now: OffsetDateTime::now_utc(),
    };
    get_at(api, kind, &request, out, err)
}

struct Request<'a> {
    names: &'a [String],
    namespace: &'a str,
    all_namespaces: bool,
    format: Format,
    /// What AGE counts from.
    now: OffsetDateTime,
}

fn get_at(
    api: &Api,
    kind: &str,
    request: &Request,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    let Some(resource) = Resource::find(kind) else {
        writeln!(
            err,
            "error: the server doesn't have a resource type {kind:?}"
        )?;
        writeln!(err, "hint: this cluster has {}", supported_resources())?;
        return Ok(false);
    };
    let namespaced = resource.kind.is_namespaced();
    let mut ok = true;
    let items = if request.names.is_empty() {
        let scope = (!request.all_namespaces).then_some(request.namespace);
        api.list(resource.kind, scope)?
    } else {
        if request.all_namespaces && namespaced {
            writeln!(
                err,
                "error: a resource cannot be retrieved by name across all namespaces"
            )?;
            return Ok(false);
        }
        let mut found = Vec::new();
        for name in request.names {
            match api.read(resource.kind, request.namespace, name)? {
                Some(item) => found.push(item),
                None => {
                    ok = false;
                    writeln!(
                        err,
                        "Error from server (NotFound): {} {name:?} not found",
                        resource.qualified_plural()
                    )?;
                }
            }
        }
        found
    };
    if items.is_empty() {
        if request.names.is_empty() {
            if namespaced && !request.all_namespaces {
                writeln!(
                    err,
                    "No resources found in {} namespace.",
                    request.namespace
                )?;
            } else {
                writeln!(err, "No resources found")?;
            }
        }
        return Ok(ok);
    }
    match request.format {
        Format::Yaml | Format::Json => {
            let document = match items.as_slice() {
                [one] if request.names.len() == 1 => one.clone(),
                _ => json!({
                    "apiVersion": "v1",
                    "items": items,
                    "kind": "List",
                    "metadata": {"resourceVersion": ""},
                }),
            };
            if request.format == Format::Yaml {
                out.write_all(serde_norway::to_string(&document)?.as_bytes())?;
            } else {
                writeln!(out, "{}", to_kubectl_json(&document)?)?;
            }
        }
        Format::Name => {
            for item in &items {
                writeln!(out, "{}/{}", resource.type_name(), name_of(item))?;
            }
        }
        Format::Table | Format::Wide => {
            let wide = request.format == Format::Wide;
            let mut table = match resource.kind {
                Kind::Namespace => namespaces(&items, wide, request.now),
                Kind::ServiceAccount => service_accounts(&items, request.now),
                Kind::Pod => pods(api, &items, wide, request.now)?,
                Kind::Service => services(api, &items, wide, request.now)?,
                Kind::AuthorizationPolicy => policies(&items, "ACTION", action, wide, request.now),
                Kind::PeerAuthentication => policies(&items, "MODE", mtls_mode, wide, request.now),
                Kind::Gateway => gateways(&items, wide, request.now),
            };
            if request.all_namespaces && namespaced {
                table.prepend("NAMESPACE", items.iter().map(namespace_of));
            }
            table.write(out)?;
        }
    }
    Ok(ok)
}

/// JSON indented by four spaces, as kubectl prints it.
fn to_kubectl_json(value: &Value) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut serializer = serde_json::Serializer::with_formatter(&mut buf, formatter);
    serde::Serialize::serialize(value, &mut serializer)?;
    Ok(String::from_utf8(buf)?)
}

/// Columns padded to the widest cell, three spaces apart, like kubectl's tables.
/// Rows printed as aligned columns, like kubectl's tables.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    /// Adds a first column.
    fn prepend(&mut self, title: &str, cells: impl Iterator<Item = String>) {
        self.header.insert(0, title.to_string());
        for (row, cell) in self.rows.iter_mut().zip(cells) {
            row.insert(0, cell);
        }
    }

    pub fn write(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let lines = std::iter::once(&self.header).chain(&self.rows);
        let mut widths = vec![0; self.header.len()];
        for line in lines.clone() {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for line in lines {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i + 1 < line.len() {
                    let width = widths.get(i).copied().unwrap_or(0);
                    text.push_str(&format!("{cell:<width$}   "));
                } else {
                    text.push_str(cell);
                }
            }
            writeln!(out, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

fn name_of(item: &Value) -> String {
    str_field(item, &["metadata", "name"])
        .unwrap_or("")
        .to_string()
}

fn namespace_of(item: &Value) -> String {
    str_field(item, &["metadata", "namespace"])
        .unwrap_or("")
        .to_string()
}

/// kubectl's `<none>` for a missing value.
fn or_none(value: Option<&str>) -> String {
    match value {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => "<none>".to_string(),
    }
}

/// `k=v,k2=v2`, or `<none>`.
fn join_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return "<none>".into();
    }
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// AGE: time since `metadata.creationTimestamp`, `<unknown>` without one.
pub(crate) fn age(item: &Value, now: OffsetDateTime) -> String {
    str_field(item, &["metadata", "creationTimestamp"])
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .map(|created| human_duration((now - created).whole_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

/// kubectl's short durations: `45s`, `5m3s`, `42m`, `3h20m`, `30h`, `4d6h`, `120d`, `2y30d`.
fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if minutes < 10 {
        return with(minutes, "m", seconds % 60, "s");
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = minutes / 60;
    if hours < 8 {
        return with(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        return with(days, "d", hours % 24, "h");
    }
    if days < 365 * 2 {
        return format!("{days}d");
    }
    if days < 365 * 8 {
        return with(days / 365, "y", days % 365, "d");
    }
    format!("{}y", days / 365)
}

fn namespaces(items: &[Value], wide: bool, now: OffsetDateTime) -> Table {
    let mut header = vec!["NAME", "STATUS", "AGE", "DATAPLANE-MODE", "USE-WAYPOINT"];
    if wide {
        header.push("LABELS");
    }
    let mut table = Table::new(&header);
    for item in items {
        let labels = labels_of(item);
        let terminating = item
            .get("metadata")
            .and_then(|m| m.get("deletionTimestamp"))
            .is_some();
        let mut row = vec![
            name_of(item),
            if terminating { "Terminating" } else { "Active" }.to_string(),
            age(item, now),
            labels
                .get(DATAPLANE_MODE_LABEL)
                .cloned()
                .unwrap_or_default(),
            labels.get(USE_WAYPOINT_LABEL).cloned().unwrap_or_default(),
        ];
        if wide {
            row.push(join_labels(&labels));
        }
        table.push(row);
    }
    table
}

fn service_accounts(items: &[Value], now: OffsetDateTime) -> Table {
    let mut table = Table::new(&["NAME", "AGE"]);
    for item in items {
        table.push(vec![name_of(item), age(item, now)]);
    }
    table
}

/// Namespaces by name, read once each, for enrolment and waypoint columns.
struct NamespaceCache<'a> {
    api: &'a Api,
    seen: BTreeMap<String, Option<Namespace>>,
}

impl<'a> NamespaceCache<'a> {
    fn new(api: &'a Api) -> Self {
        NamespaceCache {
            api,
            seen: BTreeMap::new(),
        }
    }

    fn get(&mut self, name: &str) -> anyhow::Result<Option<&Namespace>> {
        if !self.seen.contains_key(name) {
            let ns = self
                .api
                .read(Kind::Namespace, "", name)?
                .and_then(|v| serde_json::from_value::<Namespace>(v).ok());
            self.seen.insert(name.to_string(), ns);
        }
        Ok(self.seen.get(name).and_then(Option::as_ref))
    }
}

fn pods(api: &Api, items: &[Value], wide: bool, now: OffsetDateTime) -> anyhow::Result<Table> {
    let mut header = vec![
        "NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE", "MESH",
    ];
    if wide {
        header.extend(["SERVICE-ACCOUNT", "LABELS"]);
    }
    let mut table = Table::new(&header);
    let mut namespaces = NamespaceCache::new(api);
    for item in items {
        let statuses: &[Value] = item
            .get("status")
            .and_then(|s| s.get("containerStatuses"))
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let containers = item
            .get("spec")
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let ready = statuses
            .iter()
            .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
            .count();
        let restarts: u64 = statuses
            .iter()
            .filter_map(|s| s.get("restartCount").and_then(Value::as_u64))
            .sum();
        let mesh = match serde_json::from_value::<Pod>(item.clone()) {
            Ok(pod) => {
                let ns = namespaces.get(&namespace_of(item))?;
                if is_enrolled(&pod, ns) {
                    "ambient".to_string()
                } else {
                    "<none>".to_string()
                }
            }
            Err(_) => "<invalid>".to_string(),
        };
        let mut row = vec![
            name_of(item),
            format!("{ready}/{}", containers.max(statuses.len())),
            pod_status(item, statuses),
            restarts.to_string(),
            age(item, now),
            or_none(str_field(item, &["status", "podIP"])),
            or_none(str_field(item, &["spec", "nodeName"])),
            mesh,
        ];
        if wide {
            let sa = str_field(item, &["spec", "serviceAccountName"]).unwrap_or("default");
            row.extend([sa.to_string(), join_labels(&labels_of(item))]);
        }
        table.push(row);
    }
    Ok(table)
}

/// kubectl's STATUS: Terminating, else the reason a container waits or ended, else the phase.
fn pod_status(item: &Value, statuses: &[Value]) -> String {
    if item
        .get("metadata")
        .and_then(|m| m.get("deletionTimestamp"))
        .is_some()
    {
        return "Terminating".into();
    }
    for status in statuses.iter().rev() {
        let state = status.get("state");
        if let Some(reason) = state.and_then(|s| str_field(s, &["waiting", "reason"])) {
            return reason.to_string();
        }
        if let Some(terminated) = state.and_then(|s| s.get("terminated")) {
            if let Some(reason) = terminated.get("reason").and_then(Value::as_str) {
                return reason.to_string();
            }
            let code = terminated
                .get("exitCode")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            return format!("ExitCode:{code}");
        }
    }
    str_field(item, &["status", "reason"])
        .or_else(|| str_field(item, &["status", "phase"]))
        .unwrap_or("Pending")
        .to_string()
}

fn services(api: &Api, items: &[Value], wide: bool, now: OffsetDateTime) -> anyhow::Result<Table> {
    let mut header = vec!["NAME", "TYPE", "CLUSTER-IP", "PORT(S)", "AGE", "WAYPOINT"];
    if wide {
        header.push("SELECTOR");
    }
    let mut table = Table::new(&header);
    let mut namespaces = NamespaceCache::new(api);
    for item in items {
        let ports: Vec<String> = item
            .get("spec")
            .and_then(|s| s.get("ports"))
            .and_then(Value::as_array)
            .map(|ports| {
                ports
                    .iter()
                    .map(|p| {
                        let port = p.get("port").and_then(Value::as_u64).unwrap_or(0);
                        let protocol = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                        format!("{port}/{protocol}")
                    })
                    .collect()
            })
            .unwrap_or_default();
        let own = namespace_of(item);
        let ns_labels = namespaces
            .get(&own)?
            .map(|n| n.metadata.labels.clone())
            .unwrap_or_default();
        let mut row = vec![
            name_of(item),
            str_field(item, &["spec", "type"])
                .unwrap_or("ClusterIP")
                .to_string(),
            or_none(str_field(item, &["spec", "clusterIP"])),
            or_none(Some(&ports.join(","))),
            age(item, now),
            waypoint_binding(&labels_of(item), &ns_labels, &own),
        ];
        if wide {
            let selector: BTreeMap<String, String> = item
                .get("spec")
                .and_then(|s| s.get("selector"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default();
            row.push(join_labels(&selector));
        }
        table.push(row);
    }
    Ok(table)
}

/// The waypoint an object's traffic goes through, from its own `istio.io/use-waypoint` label,
/// else its namespace's: `name`, `namespace/name` for another namespace's, `none`, `<none>`.
fn waypoint_binding(
    own: &BTreeMap<String, String>,
    namespace: &BTreeMap<String, String>,
    own_namespace: &str,
) -> String {
    let labels = if own.contains_key(USE_WAYPOINT_LABEL) {
        own
    } else {
        namespace
    };
    match labels.get(USE_WAYPOINT_LABEL) {
        None => "<none>".into(),
        Some(name) => match labels.get(USE_WAYPOINT_NAMESPACE_LABEL) {
            Some(ns) if ns != own_namespace && name != "none" => format!("{ns}/{name}"),
            _ => name.clone(),
        },
    }
}

fn action(item: &Value) -> String {
    str_field(item, &["spec", "action"])
        .unwrap_or("ALLOW")
        .to_string()
}

fn mtls_mode(item: &Value) -> String {
    str_field(item, &["spec", "mtls", "mode"])
        .unwrap_or("UNSET")
        .to_string()
}

/// AuthorizationPolicy and PeerAuthentication: one spec column, then istiod-lite's verdict.
fn policies(
    items: &[Value],
    column: &str,
    value: fn(&Value) -> String,
    wide: bool,
    now: OffsetDateTime,
) -> Table {
    let mut header = vec!["NAME", column, "STATUS", "AGE"];
    if wide {
        header.push("MESSAGE");
    }
    let mut table = Table::new(&header);
    for item in items {
        let mut row = vec![
            name_of(item),
            value(item),
            status_summary(item),
            age(item, now),
        ];
        if wide {
            row.push(status_messages(item));
        }
        table.push(row);
    }
    table
}

fn gateways(items: &[Value], wide: bool, now: OffsetDateTime) -> Table {
    let mut header = vec!["NAME", "CLASS", "ADDRESS", "PROGRAMMED", "AGE"];
    if wide {
        header.extend(["TRAFFIC-TYPE", "MESSAGE"]);
    }
    let mut table = Table::new(&header);
    for item in items {
        let address = item
            .get("status")
            .and_then(|s| s.get("addresses"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(|a| a.get("value"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut row = vec![
            name_of(item),
            str_field(item, &["spec", "gatewayClassName"])
                .unwrap_or("")
                .to_string(),
            address.to_string(),
            programmed(item),
            age(item, now),
        ];
        if wide {
            let traffic = labels_of(item)
                .get(WAYPOINT_FOR_LABEL)
                .cloned()
                .unwrap_or_else(|| "service".into());
            row.extend([traffic, status_messages(item)]);
        }
        table.push(row);
    }
    table
}

/// The Gateway's `Programmed` condition status, `Unknown` before istiod-lite reports one.
pub(crate) fn programmed(item: &Value) -> String {
    conditions(item)
        .into_iter()
        .find(|c| c.type_ == "Programmed")
        .map(|c| c.status)
        .unwrap_or_else(|| "Unknown".into())
}

/// One entry of `status.conditions`.
pub(crate) struct ConditionView {
    pub type_: String,
    pub status: String,
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

pub(crate) fn conditions(item: &Value) -> Vec<ConditionView> {
    let field = |c: &Value, name: &str| {
        c.get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    item.get("status")
        .and_then(|s| s.get("conditions"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|c| ConditionView {
                    type_: field(c, "type"),
                    status: field(c, "status"),
                    reason: field(c, "reason"),
                    message: field(c, "message"),
                    observed_generation: c.get("observedGeneration").and_then(Value::as_i64),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// When istiod-lite's status is about an older generation of the object: what to say about it.
pub(crate) fn staleness(item: &Value) -> Option<String> {
    let generation = item
        .get("metadata")
        .and_then(|m| m.get("generation"))
        .and_then(Value::as_i64)?;
    let observed = conditions(item)
        .iter()
        .filter_map(|c| c.observed_generation)
        .min()?;
    (observed < generation).then(|| {
        format!(
            "this status is for generation {observed}, the object is at generation {generation}: istiod-lite has not caught up (is the cluster up? meshctl status)"
        )
    })
}

/// `ZtunnelAccepted=True`, `WaypointAccepted=False(TargetNotFound)`, `<none>` before any status.
fn status_summary(item: &Value) -> String {
    let list = conditions(item);
    if list.is_empty() {
        return "<none>".into();
    }
    let summary = list
        .iter()
        .map(|c| {
            if c.status == "True" {
                format!("{}=True", c.type_)
            } else {
                format!("{}={}({})", c.type_, c.status, c.reason)
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    if staleness(item).is_some() {
        format!("{summary} (stale)")
    } else {
        summary
    }
}

/// The condition messages (they say where a policy is enforced), for wide output.
fn status_messages(item: &Value) -> String {
    let list = conditions(item);
    if list.is_empty() {
        return "no status from istiod-lite yet (is the cluster up? meshctl status)".into();
    }
    let mut messages: Vec<String> = list
        .iter()
        .map(|c| format!("{}: {}", c.type_, c.message))
        .collect();
    messages.extend(staleness(item));
    messages.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::tests::{apply, cluster, utf8, Cluster};

    const CREATED: &str = "2025-03-01T10:00:00Z";

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse("2025-03-01T10:05:30Z", &Rfc3339).unwrap()
    }

    fn put(c: &Cluster, mut object: Value) {
        object["metadata"]["creationTimestamp"] = json!(CREATED);
        c.api.put(object).unwrap();
    }

    fn run(
        c: &Cluster,
        kind: &str,
        names: &[&str],
        ns: &str,
        all: bool,
        format: Format,
    ) -> (bool, String, String) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let request = Request {
            names: &names,
            namespace: ns,
            all_namespaces: all,
            format,
            now: now(),
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = get_at(&c.api, kind, &request, &mut out, &mut err).unwrap();
        (ok, utf8(out), utf8(err))
    }

    fn write_status(c: &Cluster, kind: &str, ns: &str, name: &str, conditions: Value) {
        let path = c.dir.path().join(format!("status/{kind}/{ns}/{name}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let doc = json!({"apiVersion": "v1", "kind": kind, "metadata": {"name": name, "namespace": ns},
            "status": {"conditions": conditions}});
        std::fs::write(path, serde_norway::to_string(&doc).unwrap()).unwrap();
    }

    /// A namespace `demo` enrolled in ambient and bound to a waypoint, a pod, a service.
    fn demo() -> Cluster {
        let c = cluster();
        put(
            &c,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo",
            "labels": {"istio.io/dataplane-mode": "ambient", "istio.io/use-waypoint": "waypoint"}}}),
        );
        put(
            &c,
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "demo", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1", "serviceAccountName": "web", "containers": [{"name": "web"}]},
            "status": {"phase": "Running", "podIP": "10.1.1.5",
                       "containerStatuses": [{"name": "web", "ready": true, "restartCount": 2}]}}),
        );
        put(
            &c,
            json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "out", "namespace": "demo", "labels": {"istio.io/dataplane-mode": "none"}},
            "spec": {"containers": [{"name": "out"}]},
            "status": {"phase": "Pending"}}),
        );
        put(
            &c,
            json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"clusterIP": "10.96.0.10", "selector": {"app": "web"},
                     "ports": [{"port": 80}, {"port": 9090, "protocol": "UDP"}]}}),
        );
        c
    }

    #[test]
    fn namespaces_table_shows_mode_and_waypoint() {
        let c = demo();
        let (ok, out, _) = run(&c, "ns", &[], "", false, Format::Table);
        assert!(ok);
        assert_eq!(
            out,
            "\
NAME           STATUS   AGE         DATAPLANE-MODE   USE-WAYPOINT
default        Active   <unknown>
demo           Active   5m30s       ambient          waypoint
istio-system   Active   <unknown>
kube-system    Active   <unknown>
"
        );
        let (_, out, _) = run(&c, "namespaces", &["demo"], "", false, Format::Wide);
        assert!(
            out.ends_with("istio.io/dataplane-mode=ambient,istio.io/use-waypoint=waypoint\n"),
            "{out}"
        );
    }

    #[test]
    fn pods_table_shows_readiness_and_mesh() {
        let c = demo();
        let (ok, out, _) = run(&c, "po", &[], "demo", false, Format::Table);
        assert!(ok);
        assert_eq!(
            out,
            "\
NAME    READY   STATUS    RESTARTS   AGE     IP         NODE     MESH
out     0/1     Pending   0          5m30s   <none>     <none>   <none>
web-1   1/1     Running   2          5m30s   10.1.1.5   node1    ambient
"
        );
        let (_, out, _) = run(&c, "pods", &[], "", true, Format::Wide);
        let last = out.lines().last().unwrap();
        assert!(last.starts_with("demo        web-1   1/1"), "{out}");
        assert!(
            last.ends_with("ambient   web               app=web"),
            "{out}"
        );
    }

    #[test]
    fn services_table_shows_ports_and_waypoint() {
        let c = demo();
        let (ok, out, _) = run(&c, "svc", &[], "demo", false, Format::Wide);
        assert!(ok);
        assert_eq!(
            out,
            "\
NAME   TYPE        CLUSTER-IP   PORT(S)           AGE     WAYPOINT   SELECTOR
web    ClusterIP   10.96.0.10   80/TCP,9090/UDP   5m30s   waypoint   app=web
"
        );
    }

    #[test]
    fn policy_tables_summarise_istiod_lite_status() {
        let c = demo();
        put(
            &c,
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-all", "namespace": "demo"}, "spec": {"action": "DENY"}}),
        );
        put(
            &c,
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "l7", "namespace": "demo"},
            "spec": {"targetRefs": [{"kind": "Gateway", "group": "gateway.networking.k8s.io", "name": "nope"}]}}),
        );
        put(
            &c,
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": "strict", "namespace": "demo"}, "spec": {"mtls": {"mode": "STRICT"}}}),
        );
        write_status(
            &c,
            "authorizationpolicy",
            "demo",
            "deny-all",
            json!([{"type": "ZtunnelAccepted",
            "status": "True", "reason": "Accepted", "message": "attached to ztunnel", "observedGeneration": 1}]),
        );
        write_status(
            &c,
            "authorizationpolicy",
            "demo",
            "l7",
            json!([{"type": "WaypointAccepted",
            "status": "False", "reason": "TargetNotFound", "message": "Gateway demo/nope was not found", "observedGeneration": 1}]),
        );
        let (_, out, _) = run(
            &c,
            "authorizationpolicies",
            &[],
            "demo",
            false,
            Format::Wide,
        );
        assert_eq!(
            out,
            "\
NAME       ACTION   STATUS                                   AGE     MESSAGE
deny-all   DENY     ZtunnelAccepted=True                     5m30s   ZtunnelAccepted: attached to ztunnel
l7         ALLOW    WaypointAccepted=False(TargetNotFound)   5m30s   WaypointAccepted: Gateway demo/nope was not found
"
        );
        let (_, out, _) = run(&c, "pa", &[], "demo", false, Format::Table);
        assert_eq!(
            out,
            "NAME     MODE     STATUS   AGE\nstrict   STRICT   <none>   5m30s\n"
        );
        // A status about an older generation is marked, and wide output says why.
        put(
            &c,
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-all", "namespace": "demo"}, "spec": {"action": "DENY", "rules": [{}]}}),
        );
        let (_, out, _) = run(&c, "ap", &["deny-all"], "demo", false, Format::Wide);
        assert!(out.contains("ZtunnelAccepted=True (stale)"), "{out}");
        assert!(
            out.contains("status is for generation 1, the object is at generation 2"),
            "{out}"
        );
    }

    #[test]
    fn gateways_table_shows_class_and_programmed() {
        let c = demo();
        put(
            &c,
            json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "demo", "labels": {"istio.io/waypoint-for": "all"}},
            "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}),
        );
        let (_, out, _) = run(&c, "gtw", &[], "demo", false, Format::Table);
        assert_eq!(
            out,
            "NAME       CLASS            ADDRESS   PROGRAMMED   AGE\nwaypoint   istio-waypoint             Unknown      5m30s\n"
        );
        write_status(
            &c,
            "gateway",
            "demo",
            "waypoint",
            json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "waypoint of class istio-waypoint"},
            {"type": "Programmed", "status": "False", "reason": "Pending", "message": "no waypoint proxy is running for this Gateway yet"}]),
        );
        let (_, out, _) = run(&c, "gateways", &[], "demo", false, Format::Wide);
        assert_eq!(
            out,
            "\
NAME       CLASS            ADDRESS   PROGRAMMED   AGE     TRAFFIC-TYPE   MESSAGE
waypoint   istio-waypoint             False        5m30s   all            Accepted: waypoint of class istio-waypoint; Programmed: no waypoint proxy is running for this Gateway yet
"
        );
    }

    #[test]
    fn yaml_and_json_round_trip_through_apply() {
        let c = demo();
        let (ok, yaml, _) = run(&c, "svc", &["web"], "demo", false, Format::Yaml);
        assert!(ok);
        let one: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(one["kind"], "Service");
        assert_eq!(one["spec"]["clusterIP"], "10.96.0.10");
        let (_, json_text, _) = run(&c, "pods", &[], "demo", false, Format::Json);
        assert!(
            json_text.starts_with("{\n    \"apiVersion\": \"v1\",\n    \"items\": ["),
            "{json_text}"
        );
        let list: Value = serde_json::from_str(&json_text).unwrap();
        assert_eq!(list["kind"], "List");
        assert_eq!(list["items"].as_array().unwrap().len(), 2);
        assert_eq!(list["items"][1]["status"]["podIP"], "10.1.1.5");
        // What get prints applies back. Objects `put` made carry no last-applied annotation, so
        // the first apply only adds it (kubectl says `configured` then too: generation stays);
        // from then on, get | apply is unchanged, status and cluster metadata included.
        let (ok, out, err) = apply(&c, &json_text);
        assert!(ok, "{err}");
        assert_eq!(out, "pod/out configured\npod/web-1 configured\n");
        let pod = c.api.read(Kind::Pod, "demo", "web-1").unwrap().unwrap();
        assert_eq!(pod["metadata"]["generation"], 1);
        assert_eq!(pod["status"]["podIP"], "10.1.1.5");
        for (kind, names) in [("pods", vec![]), ("svc", vec!["web"])] {
            for format in [Format::Json, Format::Yaml] {
                let (_, printed, _) = run(&c, kind, &names, "demo", false, format);
                let (ok, _, err) = apply(&c, &printed);
                assert!(ok, "{err}");
            }
        }
        let (_, json_text, _) = run(&c, "pods", &[], "demo", false, Format::Json);
        let (ok, out, err) = apply(&c, &json_text);
        assert!(ok, "{err}");
        assert_eq!(out, "pod/out unchanged\npod/web-1 unchanged\n");
        let (_, yaml, _) = run(&c, "svc", &["web"], "demo", false, Format::Yaml);
        let (ok, out, err) = apply(&c, &yaml);
        assert!(ok, "{err}");
        assert_eq!(out, "service/web unchanged\n");
    }

    #[test]
    fn yaml_includes_istiod_lite_status() {
        let c = demo();
        put(
            &c,
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "deny-all", "namespace": "demo"}, "spec": {"action": "DENY"}}),
        );
        write_status(
            &c,
            "authorizationpolicy",
            "demo",
            "deny-all",
            json!([{"type": "ZtunnelAccepted",
            "status": "True", "reason": "Accepted", "message": "attached to ztunnel"}]),
        );
        let (_, yaml, _) = run(&c, "ap", &["deny-all"], "demo", false, Format::Yaml);
        let v: Value = serde_norway::from_str(&yaml).unwrap();
        assert_eq!(v["status"]["conditions"][0]["type"], "ZtunnelAccepted");
    }

    #[test]
    fn names_empty_results_unknown_kinds_and_missing_names() {
        let c = demo();
        let (_, out, _) = run(&c, "svc", &[], "demo", false, Format::Name);
        assert_eq!(out, "service/web\n");
        let (ok, out, err) = run(&c, "ap", &[], "demo", false, Format::Table);
        assert!(ok);
        assert_eq!(
            (out.as_str(), err.as_str()),
            ("", "No resources found in demo namespace.\n")
        );
        let (ok, _, err) = run(&c, "ap", &[], "", true, Format::Table);
        assert!(ok);
        assert_eq!(err, "No resources found\n");
        let (ok, _, err) = run(&c, "deployments", &[], "demo", false, Format::Table);
        assert!(!ok);
        assert!(err.starts_with("error: the server doesn't have a resource type \"deployments\"\nhint: this cluster has namespaces (ns), serviceaccounts (sa), pods (po)"), "{err}");
        let (ok, out, err) = run(&c, "svc", &["web", "nope"], "demo", false, Format::Name);
        assert!(!ok);
        assert_eq!(out, "service/web\n");
        assert_eq!(
            err,
            "Error from server (NotFound): services \"nope\" not found\n"
        );
    }

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (119, "119s"),
            (125, "2m5s"),
            (600, "10m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 1200, "3h20m"),
            (30 * 3600, "30h"),
            (4 * 86400 + 6 * 3600, "4d6h"),
            (120 * 86400, "120d"),
            (800 * 86400, "2y70d"),
            (-5, "<invalid>"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }
}
