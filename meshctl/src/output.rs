//! `meshctl get`: objects printed the way kubectl prints them (table, wide, YAML, JSON, names),
//! with the mesh's columns: who is enrolled in ambient, which waypoint a service uses, and what
//! istiod-lite says about each policy (its status conditions); and `meshctl status`, the
//! cluster's supervised processes.

use std::collections::BTreeMap;
use std::io::Write;

use mesh_core::k8s::{
    is_enrolled, Kind, Namespace, Pod, DATAPLANE_MODE_LABEL, USE_WAYPOINT_LABEL,
    USE_WAYPOINT_NAMESPACE_LABEL, WAYPOINT_FOR_LABEL,
};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use anyhow::Context;

use crate::cluster::home::{supervisor_alive, Home, Record, Status};
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
                    writeln!(err, "{}", resource.not_found(name))?;
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
                Kind::HttpRoute | Kind::GrpcRoute => http_routes(&items, wide, request.now),
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

/// HTTPRoutes as kubectl lists them (hostnames), plus the parents and whether each accepted
/// the route.
fn http_routes(items: &[Value], wide: bool, now: OffsetDateTime) -> Table {
    let mut header = vec!["NAME", "HOSTNAMES", "PARENTS", "ACCEPTED", "AGE"];
    if wide {
        header.push("MESSAGE");
    }
    let mut table = Table::new(&header);
    for item in items {
        let list = |path: &[&str]| -> Vec<Value> {
            let mut v = item;
            for p in path {
                match v.get(*p) {
                    Some(next) => v = next,
                    None => return Vec::new(),
                }
            }
            v.as_array().cloned().unwrap_or_default()
        };
        let hostnames: Vec<String> = list(&["spec", "hostnames"])
            .iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect();
        let parents: Vec<String> = list(&["spec", "parentRefs"])
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    p.get("kind").and_then(Value::as_str).unwrap_or("Gateway"),
                    p.get("name").and_then(Value::as_str).unwrap_or("")
                )
            })
            .collect();
        let accepted: Vec<String> = list(&["status", "parents"])
            .iter()
            .flat_map(|p| {
                p.get("conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("Accepted"))
            .filter_map(|c| c.get("status").and_then(Value::as_str).map(str::to_string))
            .collect();
        let or_none = |v: Vec<String>| {
            if v.is_empty() {
                "<none>".to_string()
            } else {
                v.join(",")
            }
        };
        let mut row = vec![
            name_of(item),
            or_none(hostnames),
            or_none(parents),
            if accepted.is_empty() {
                "Unknown".to_string()
            } else {
                accepted.join(",")
            },
            age(item, now),
        ];
        if wide {
            row.push(status_messages(item));
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

/// `meshctl status`: the cluster's record, whether its supervisor runs, and each supervised
/// process (state, pid, restarts, last exit) from the supervisor's `status.json`.
pub fn cluster_status(home: &Home, out: &mut dyn Write) -> anyhow::Result<()> {
    let record =
        Record::load(home)?.context("no local cluster: start one with `sudo meshctl up`")?;
    let alive = supervisor_alive(home);
    writeln!(
        out,
        "cluster: {} node(s), home {}, supervisor {}",
        record.nodes,
        home.dir.display(),
        if alive {
            "running"
        } else {
            "NOT RUNNING (`meshctl down`, then `meshctl up`)"
        }
    )?;
    let Some(st) = Status::load(home) else {
        return Ok(());
    };
    let rows: Vec<Vec<String>> = st
        .components
        .iter()
        .map(|c| {
            vec![
                c.name.clone(),
                c.state.clone(),
                c.pid.map_or("-".into(), |p| p.to_string()),
                c.restarts.to_string(),
                c.last_exit.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut table = Table::new(&["COMPONENT", "STATE", "PID", "RESTARTS", "LAST EXIT"]);
    for row in rows {
        table.push(row);
    }
    table.write(out)?;
    if st.components.iter().any(|c| c.restarts > 0) {
        writeln!(
            out,
            "\nrestarts are logged in {} (`meshctl logs supervisor`)",
            home.log("supervisor").display()
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
