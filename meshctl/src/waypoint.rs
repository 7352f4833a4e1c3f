//! `meshctl waypoint apply|list|status|delete`, shaped like `istioctl waypoint`. A waypoint is a
//! Gateway of class `istio-waypoint`; namespaces, services and pods are bound to one with the
//! `istio.io/use-waypoint` label.
//!
//! The local cluster runs a proxy for each waypoint (pod `<name>-0`, see
//! `cluster::waypoints`), and istiod-lite tells ztunnel to send bound traffic to a waypoint as
//! soon as its Gateway exists. Until that proxy is ready, these commands say plainly which
//! traffic waits and how to undo the binding.

use std::io::Write;

use mesh_core::k8s::{
    Kind, DATAPLANE_MODE_LABEL, USE_WAYPOINT_LABEL, USE_WAYPOINT_NAMESPACE_LABEL,
    WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS,
};
use serde_json::{json, Value};

use crate::objects::{labels_of, str_field, Api, Resource};
use crate::output::{conditions, programmed, staleness, Table};

/// istioctl's default waypoint name.
pub const DEFAULT_NAME: &str = "waypoint";
/// Values of `istio.io/waypoint-for` (`--for`).
pub const TRAFFIC_TYPES: [&str; 4] = ["service", "workload", "all", "none"];

/// The Gateway `istioctl waypoint generate` prints: class `istio-waypoint`, one listener `mesh`
/// on 15008 speaking HBONE, and the traffic type as `istio.io/waypoint-for`.
pub fn generate(namespace: &str, name: &str, for_traffic: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {WAYPOINT_FOR_LABEL: for_traffic},
        },
        "spec": {
            "gatewayClassName": WAYPOINT_GATEWAY_CLASS,
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
        },
    })
}

/// `meshctl waypoint apply [-n NS] [--name N] [--enroll-namespace] [--for TYPE]`: writes the
/// Gateway (merged like `apply`, as istioctl's server-side apply merges), and with
/// `enroll_namespace` labels the namespace `istio.io/use-waypoint=<name>`.
pub fn apply(
    api: &Api,
    namespace: &str,
    name: &str,
    enroll_namespace: bool,
    for_traffic: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    if !TRAFFIC_TYPES.contains(&for_traffic) {
        writeln!(
            err,
            "error: invalid traffic type {for_traffic:?}: use service, workload, all or none"
        )?;
        return Ok(false);
    }
    if !api.namespace_exists(namespace)? {
        writeln!(
            err,
            "Error from server (NotFound): namespaces {namespace:?} not found"
        )?;
        writeln!(err, "hint: create it with: meshctl create ns {namespace}")?;
        return Ok(false);
    }
    if let Some(existing) = api.read(Kind::Gateway, namespace, name)? {
        if !is_waypoint(&existing) {
            writeln!(
                err,
                "error: Gateway {namespace}/{name} exists and is not a waypoint (gatewayClassName {:?}); choose another --name",
                str_field(&existing, &["spec", "gatewayClassName"]).unwrap_or("")
            )?;
            return Ok(false);
        }
    }
    if let Err(e) = api.apply_object(generate(namespace, name, for_traffic)) {
        writeln!(err, "error: {e:#}")?;
        return Ok(false);
    }
    writeln!(out, "waypoint {namespace}/{name} applied")?;
    if enroll_namespace {
        let changes = [format!("{USE_WAYPOINT_LABEL}={name}")];
        // `label` says "namespace/x labeled"; istioctl's own line is printed instead.
        let mut label_out = Vec::new();
        if !api.label(
            "namespace",
            namespace,
            "",
            &changes,
            true,
            &mut label_out,
            err,
        )? {
            return Ok(false);
        }
        writeln!(
            out,
            "namespace {namespace} labeled with \"{USE_WAYPOINT_LABEL}: {name}\""
        )?;
        let labels = api
            .read(Kind::Namespace, "", namespace)?
            .map(|ns| labels_of(&ns))
            .unwrap_or_default();
        if labels.get(DATAPLANE_MODE_LABEL).map(String::as_str) != Some("ambient") {
            writeln!(
                err,
                "warning: namespace {namespace} is not enrolled in ambient; consider: meshctl label ns {namespace} {DATAPLANE_MODE_LABEL}=ambient"
            )?;
        }
        if let Some(other) = labels
            .get(USE_WAYPOINT_NAMESPACE_LABEL)
            .filter(|ns| *ns != namespace)
        {
            writeln!(
                err,
                "warning: namespace {namespace} also has {USE_WAYPOINT_NAMESPACE_LABEL}={other}, so it is bound to {other}/{name}, not to this waypoint; remove it: meshctl label ns {namespace} {USE_WAYPOINT_NAMESPACE_LABEL}-"
            )?;
        }
    }
    explain_missing_proxy(api, namespace, name, for_traffic, false, err)?;
    Ok(true)
}

/// `meshctl waypoint list [-n NS | -A]`: istioctl's columns.
pub fn list(
    api: &Api,
    namespace: &str,
    all_namespaces: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    let scope = (!all_namespaces).then_some(namespace);
    let waypoints: Vec<Value> = api
        .list(Kind::Gateway, scope)?
        .into_iter()
        .filter(is_waypoint)
        .collect();
    if waypoints.is_empty() {
        writeln!(err, "No waypoints found.")?;
        return Ok(true);
    }
    let mut header = vec!["NAME", "REVISION", "TRAFFIC TYPE", "PROGRAMMED"];
    if all_namespaces {
        header.insert(0, "NAMESPACE");
    }
    let mut table = Table::new(&header);
    for gw in &waypoints {
        let mut row = vec![
            str_field(gw, &["metadata", "name"])
                .unwrap_or("")
                .to_string(),
            "default".to_string(),
            traffic_type(gw),
            programmed(gw),
        ];
        if all_namespaces {
            let ns = str_field(gw, &["metadata", "namespace"]).unwrap_or("");
            row.insert(0, ns.to_string());
        }
        table.push(row);
    }
    table.write(out)?;
    Ok(true)
}

/// `meshctl waypoint status [-n NS] [--name N]`: the Gateway's conditions, what is bound to it,
/// and, while no waypoint proxy runs, what that means for bound traffic and how to undo it.
pub fn status(
    api: &Api,
    namespace: &str,
    name: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    let Some(gw) = find_waypoint(api, namespace, name, err)? else {
        return Ok(false);
    };
    let list = conditions(&gw);
    if list.is_empty() {
        writeln!(
            out,
            "Waypoint {namespace}/{name} has no status from istiod-lite yet (is the cluster up? meshctl status)"
        )?;
    } else {
        let mut table = Table::new(&["NAMESPACE", "NAME", "STATUS", "TYPE", "REASON", "MESSAGE"]);
        for c in list {
            table.push(vec![
                namespace.to_string(),
                name.to_string(),
                c.status,
                c.type_,
                c.reason,
                c.message,
            ]);
        }
        table.write(out)?;
    }
    if let Some(stale) = staleness(&gw) {
        writeln!(out, "note: {stale}")?;
    }
    writeln!(out)?;
    let running = programmed(&gw) == "True";
    explain_missing_proxy(api, namespace, name, &traffic_type(&gw), running, out)?;
    Ok(true)
}

/// `meshctl waypoint delete [NAME...] [--all] [-n NS]` (no name: `waypoint`). Like istioctl, it
/// leaves `istio.io/use-waypoint` labels alone, and warns about each one still pointing at a
/// deleted waypoint.
pub fn delete(
    api: &Api,
    namespace: &str,
    names: &[String],
    all: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<bool> {
    if all && !names.is_empty() {
        writeln!(err, "error: cannot use --all with waypoint names")?;
        return Ok(false);
    }
    let targets: Vec<String> = if all {
        api.list(Kind::Gateway, Some(namespace))?
            .iter()
            .filter(|gw| is_waypoint(gw))
            .filter_map(|gw| str_field(gw, &["metadata", "name"]).map(str::to_string))
            .collect()
    } else if names.is_empty() {
        vec![DEFAULT_NAME.to_string()]
    } else {
        names.to_vec()
    };
    if targets.is_empty() {
        writeln!(err, "No waypoints found in namespace {namespace}.")?;
        return Ok(true);
    }
    let mut ok = true;
    for name in &targets {
        if find_waypoint(api, namespace, name, err)?.is_none() {
            ok = false;
            continue;
        }
        api.remove(Kind::Gateway, namespace, name)?;
        writeln!(out, "waypoint {namespace}/{name} deleted")?;
        for bound in bound_to(api, namespace, name)? {
            writeln!(
                err,
                "warning: {} still has {USE_WAYPOINT_LABEL}={name}; with no waypoint {namespace}/{name} its traffic goes straight to its destination, and the label binds it again if a waypoint of that name is applied. Remove it: {}",
                bound.describe(),
                bound.undo()
            )?;
        }
    }
    Ok(ok)
}

fn is_waypoint(gw: &Value) -> bool {
    str_field(gw, &["spec", "gatewayClassName"]) == Some(WAYPOINT_GATEWAY_CLASS)
}

fn traffic_type(gw: &Value) -> String {
    labels_of(gw)
        .get(WAYPOINT_FOR_LABEL)
        .cloned()
        .unwrap_or_else(|| "service".into())
}

/// The waypoint Gateway, or an error line saying what is there instead and what to do.
fn find_waypoint(
    api: &Api,
    namespace: &str,
    name: &str,
    err: &mut dyn Write,
) -> anyhow::Result<Option<Value>> {
    match api.read(Kind::Gateway, namespace, name)? {
        None => {
            writeln!(err, "error: waypoint {namespace}/{name} not found")?;
            writeln!(
                err,
                "hint: meshctl waypoint list -n {namespace} lists the waypoints there; meshctl waypoint apply -n {namespace} --name {name} makes one"
            )?;
            Ok(None)
        }
        Some(gw) if !is_waypoint(&gw) => {
            writeln!(
                err,
                "error: Gateway {namespace}/{name} is not a waypoint (gatewayClassName {:?}); it is managed with: meshctl get|delete gateway {name} -n {namespace}",
                str_field(&gw, &["spec", "gatewayClassName"]).unwrap_or("")
            )?;
            Ok(None)
        }
        Some(gw) => Ok(Some(gw)),
    }
}

/// An object whose own `istio.io/use-waypoint` label names a waypoint.
struct Bound {
    kind: Kind,
    namespace: String,
    name: String,
}

impl Bound {
    fn describe(&self) -> String {
        match self.kind {
            Kind::Namespace => format!("namespace {}", self.name),
            kind => format!(
                "{} {}/{}",
                Resource::of(kind).singular(),
                self.namespace,
                self.name
            ),
        }
    }

    fn undo(&self) -> String {
        match self.kind {
            Kind::Namespace => format!("meshctl label ns {} {USE_WAYPOINT_LABEL}-", self.name),
            kind => format!(
                "meshctl label {} {} -n {} {USE_WAYPOINT_LABEL}-",
                Resource::of(kind).short_name,
                self.name,
                self.namespace
            ),
        }
    }
}

/// Namespaces, services and pods labelled to use waypoint `namespace/name` (a label names a
/// waypoint in the object's own namespace unless `istio.io/use-waypoint-namespace` says another).
fn bound_to(api: &Api, namespace: &str, name: &str) -> anyhow::Result<Vec<Bound>> {
    let mut bound = Vec::new();
    for kind in [Kind::Namespace, Kind::Service, Kind::Pod] {
        for object in api.list(kind, None)? {
            let labels = labels_of(&object);
            let object_name = str_field(&object, &["metadata", "name"]).unwrap_or("");
            let own_namespace = match kind {
                Kind::Namespace => object_name,
                _ => str_field(&object, &["metadata", "namespace"]).unwrap_or("default"),
            };
            let waypoint_namespace = labels
                .get(USE_WAYPOINT_NAMESPACE_LABEL)
                .map(String::as_str)
                .unwrap_or(own_namespace);
            if labels.get(USE_WAYPOINT_LABEL).map(String::as_str) == Some(name)
                && waypoint_namespace == namespace
            {
                bound.push(Bound {
                    kind,
                    namespace: own_namespace.to_string(),
                    name: object_name.to_string(),
                });
            }
        }
    }
    Ok(bound)
}

/// Says what the missing waypoint proxy means for this waypoint: which bound traffic will not
/// arrive, and the commands that undo the bindings.
fn explain_missing_proxy(
    api: &Api,
    namespace: &str,
    name: &str,
    for_traffic: &str,
    running: bool,
    w: &mut dyn Write,
) -> anyhow::Result<()> {
    if running {
        writeln!(
            w,
            "istiod-lite reports a waypoint proxy running for {namespace}/{name}."
        )?;
        return Ok(());
    }
    let bound = bound_to(api, namespace, name)?;
    let affected = match for_traffic {
        "service" => Some("traffic sent to their services"),
        "workload" => Some("traffic sent straight to their pods' IPs"),
        "all" => Some("traffic sent to their services or straight to their pods' IPs"),
        _ => None,
    };
    let proxy = format!(
        "the waypoint proxy of {namespace}/{name} is not ready yet (the local cluster runs it as pod {namespace}/{})",
        crate::cluster::waypoints::pod_name(name)
    );
    match affected {
        _ if bound.is_empty() => writeln!(
            w,
            "note: {proxy}. Nothing is bound to {namespace}/{name}, so no traffic goes to it; binding a namespace, service or pod to it ({USE_WAYPOINT_LABEL}={name}) would stop that traffic from reaching its destination until then."
        )?,
        None => writeln!(
            w,
            "note: {proxy}. {namespace}/{name} takes no traffic ({WAYPOINT_FOR_LABEL}={for_traffic}), so the objects bound to it are not affected."
        )?,
        Some(affected) => {
            writeln!(
                w,
                "warning: {proxy}, so {affected} will not reach its destination until then. Bound to {namespace}/{name} ({WAYPOINT_FOR_LABEL}={for_traffic}):"
            )?;
            for b in &bound {
                writeln!(w, "  {}", b.describe())?;
            }
            writeln!(w, "To send that traffic directly again, remove the bindings:")?;
            for b in &bound {
                writeln!(w, "  {}", b.undo())?;
            }
            writeln!(
                w,
                "or delete the waypoint (bindings to a missing waypoint are ignored): meshctl waypoint delete {name} -n {namespace}"
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::fixture::{cluster, utf8, Cluster};

    fn demo() -> Cluster {
        let c = cluster();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ambient = [(DATAPLANE_MODE_LABEL.to_string(), "ambient".to_string())];
        assert!(c
            .api
            .create_namespace("demo", &ambient, &mut out, &mut err)
            .unwrap());
        c
    }

    fn run(
        f: impl FnOnce(&mut dyn Write, &mut dyn Write) -> anyhow::Result<bool>,
    ) -> (bool, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let ok = f(&mut out, &mut err).unwrap();
        (ok, utf8(out), utf8(err))
    }

    fn write_status(c: &Cluster, ns: &str, name: &str, conditions: Value) {
        let path = c
            .dir
            .path()
            .join(format!("status/gateway/{ns}/{name}.yaml"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let doc = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
            "metadata": {"name": name, "namespace": ns}, "status": {"conditions": conditions}});
        std::fs::write(path, serde_norway::to_string(&doc).unwrap()).unwrap();
    }

    #[test]
    fn apply_writes_istioctls_gateway() {
        let c = demo();
        let (ok, out, err) = run(|o, e| apply(&c.api, "demo", "waypoint", false, "service", o, e));
        assert!(ok, "{err}");
        assert_eq!(out, "waypoint demo/waypoint applied\n");
        assert!(
            err.starts_with("note: the waypoint proxy of demo/waypoint is not ready yet (the local cluster runs it as pod demo/waypoint-0)"),
            "{err}"
        );
        assert!(err.contains("Nothing is bound to demo/waypoint"), "{err}");
        let gw = c
            .api
            .read(Kind::Gateway, "demo", "waypoint")
            .unwrap()
            .unwrap();
        assert_eq!(gw["apiVersion"], "gateway.networking.k8s.io/v1");
        assert_eq!(
            gw["metadata"]["labels"],
            json!({"istio.io/waypoint-for": "service"})
        );
        assert_eq!(
            gw["spec"],
            json!({"gatewayClassName": "istio-waypoint",
                   "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]})
        );
        // The namespace was not touched.
        let ns = c.api.read(Kind::Namespace, "", "demo").unwrap().unwrap();
        assert!(!labels_of(&ns).contains_key(USE_WAYPOINT_LABEL));
        // Applying again with another traffic type updates the label.
        assert!(run(|o, e| apply(&c.api, "demo", "waypoint", false, "all", o, e)).0);
        let gw = c
            .api
            .read(Kind::Gateway, "demo", "waypoint")
            .unwrap()
            .unwrap();
        assert_eq!(gw["metadata"]["labels"]["istio.io/waypoint-for"], "all");
    }

    #[test]
    fn apply_with_enroll_labels_the_namespace_and_warns_about_the_missing_proxy() {
        let c = demo();
        let (ok, out, err) = run(|o, e| apply(&c.api, "demo", "waypoint", true, "service", o, e));
        assert!(ok, "{err}");
        assert_eq!(
            out,
            "waypoint demo/waypoint applied\nnamespace demo labeled with \"istio.io/use-waypoint: waypoint\"\n"
        );
        let ns = c.api.read(Kind::Namespace, "", "demo").unwrap().unwrap();
        assert_eq!(labels_of(&ns)[USE_WAYPOINT_LABEL], "waypoint");
        assert!(
            err.starts_with("warning: the waypoint proxy of demo/waypoint is not ready yet (the local cluster runs it as pod demo/waypoint-0), so traffic sent to their services will not reach its destination until then."),
            "{err}"
        );
        assert!(err.contains("\n  namespace demo\n"), "{err}");
        assert!(
            err.contains("\n  meshctl label ns demo istio.io/use-waypoint-\n"),
            "{err}"
        );
        // A namespace that is not ambient gets istioctl's hint.
        let (mut o, mut e) = (Vec::new(), Vec::new());
        assert!(c
            .api
            .create_namespace("plain", &[], &mut o, &mut e)
            .unwrap());
        let (ok, _, err) = run(|o, e| apply(&c.api, "plain", "wp", true, "workload", o, e));
        assert!(ok);
        assert!(err.starts_with("warning: namespace plain is not enrolled in ambient; consider: meshctl label ns plain istio.io/dataplane-mode=ambient\n"), "{err}");
        assert!(
            err.contains("traffic sent straight to their pods' IPs"),
            "{err}"
        );
    }

    #[test]
    fn apply_refuses_bad_input_without_writing() {
        let c = demo();
        let (ok, _, err) = run(|o, e| apply(&c.api, "demo", "waypoint", false, "everything", o, e));
        assert!(!ok);
        assert_eq!(
            err,
            "error: invalid traffic type \"everything\": use service, workload, all or none\n"
        );
        let (ok, _, err) = run(|o, e| apply(&c.api, "nope", "waypoint", true, "service", o, e));
        assert!(!ok);
        assert_eq!(err, "Error from server (NotFound): namespaces \"nope\" not found\nhint: create it with: meshctl create ns nope\n");
        let (ok, _, err) = run(|o, e| apply(&c.api, "demo", "none", false, "service", o, e));
        assert!(!ok);
        assert!(
            err.contains("the waypoint name \\\"none\\\" is reserved")
                || err.contains("the waypoint name \"none\" is reserved"),
            "{err}"
        );
        c.api
            .put(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "ingress", "namespace": "demo"}, "spec": {"gatewayClassName": "istio"}}))
            .unwrap();
        let (ok, _, err) = run(|o, e| apply(&c.api, "demo", "ingress", false, "service", o, e));
        assert!(!ok);
        assert!(
            err.starts_with("error: Gateway demo/ingress exists and is not a waypoint"),
            "{err}"
        );
        assert!(c
            .api
            .read(Kind::Gateway, "demo", "waypoint")
            .unwrap()
            .is_none());
    }

    #[test]
    fn list_shows_istioctls_columns() {
        let c = demo();
        let (ok, _, err) = run(|o, e| list(&c.api, "demo", false, o, e));
        assert!(ok);
        assert_eq!(err, "No waypoints found.\n");
        assert!(run(|o, e| apply(&c.api, "demo", "waypoint", false, "service", o, e)).0);
        assert!(run(|o, e| apply(&c.api, "default", "wl", false, "workload", o, e)).0);
        c.api
            .put(json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "ingress", "namespace": "demo"}, "spec": {"gatewayClassName": "istio"}}))
            .unwrap();
        write_status(
            &c,
            "demo",
            "waypoint",
            json!([{"type": "Programmed", "status": "False", "reason": "Pending", "message": "m"}]),
        );
        let (_, out, _) = run(|o, e| list(&c.api, "demo", false, o, e));
        assert_eq!(
            out,
            "NAME       REVISION   TRAFFIC TYPE   PROGRAMMED\nwaypoint   default    service        False\n"
        );
        let (_, out, _) = run(|o, e| list(&c.api, "demo", true, o, e));
        assert_eq!(
            out,
            "\
NAMESPACE   NAME       REVISION   TRAFFIC TYPE   PROGRAMMED
default     wl         default    workload       Unknown
demo        waypoint   default    service        False
"
        );
    }

    #[test]
    fn status_shows_conditions_bindings_and_the_way_back() {
        let c = demo();
        assert!(run(|o, e| apply(&c.api, "demo", "waypoint", false, "service", o, e)).0);
        c.api
            .put(json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "demo", "labels": {"istio.io/use-waypoint": "waypoint"}},
                "spec": {"ports": [{"port": 80}]}}))
            .unwrap();
        let (ok, out, _) = run(|o, e| status(&c.api, "demo", "waypoint", o, e));
        assert!(ok);
        assert!(
            out.starts_with("Waypoint demo/waypoint has no status from istiod-lite yet"),
            "{out}"
        );
        write_status(
            &c,
            "demo",
            "waypoint",
            json!([
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "waypoint of class istio-waypoint", "observedGeneration": 1},
            {"type": "Programmed", "status": "False", "reason": "Pending", "message": "no waypoint proxy is running for this Gateway yet", "observedGeneration": 1}]),
        );
        let (ok, out, _) = run(|o, e| status(&c.api, "demo", "waypoint", o, e));
        assert!(ok);
        assert_eq!(
            out,
            "\
NAMESPACE   NAME       STATUS   TYPE         REASON     MESSAGE
demo        waypoint   True     Accepted     Accepted   waypoint of class istio-waypoint
demo        waypoint   False    Programmed   Pending    no waypoint proxy is running for this Gateway yet

warning: the waypoint proxy of demo/waypoint is not ready yet (the local cluster runs it as pod demo/waypoint-0), so traffic sent to their services will not reach its destination until then. Bound to demo/waypoint (istio.io/waypoint-for=service):
  service demo/web
To send that traffic directly again, remove the bindings:
  meshctl label svc web -n demo istio.io/use-waypoint-
or delete the waypoint (bindings to a missing waypoint are ignored): meshctl waypoint delete waypoint -n demo
"
        );
        let (ok, _, err) = run(|o, e| status(&c.api, "demo", "other", o, e));
        assert!(!ok);
        assert!(
            err.starts_with(
                "error: waypoint demo/other not found\nhint: meshctl waypoint list -n demo"
            ),
            "{err}"
        );
    }

    #[test]
    fn delete_removes_the_gateway_and_warns_about_labels_left_behind() {
        let c = demo();
        assert!(run(|o, e| apply(&c.api, "demo", "waypoint", true, "service", o, e)).0);
        assert!(run(|o, e| apply(&c.api, "demo", "second", false, "service", o, e)).0);
        let (ok, _, err) = run(|o, e| delete(&c.api, "demo", &["waypoint".into()], true, o, e));
        assert!(!ok);
        assert_eq!(err, "error: cannot use --all with waypoint names\n");
        let (ok, out, err) = run(|o, e| delete(&c.api, "demo", &[], false, o, e));
        assert!(ok);
        assert_eq!(out, "waypoint demo/waypoint deleted\n");
        assert!(
            err.starts_with("warning: namespace demo still has istio.io/use-waypoint=waypoint;"),
            "{err}"
        );
        assert!(
            err.ends_with("Remove it: meshctl label ns demo istio.io/use-waypoint-\n"),
            "{err}"
        );
        assert!(c
            .api
            .read(Kind::Gateway, "demo", "waypoint")
            .unwrap()
            .is_none());
        let ns = c.api.read(Kind::Namespace, "", "demo").unwrap().unwrap();
        assert_eq!(
            labels_of(&ns)[USE_WAYPOINT_LABEL],
            "waypoint",
            "istioctl leaves labels alone"
        );
        let (ok, _, err) = run(|o, e| delete(&c.api, "demo", &["gone".into()], false, o, e));
        assert!(!ok);
        assert!(
            err.starts_with("error: waypoint demo/gone not found"),
            "{err}"
        );
        let (ok, out, _) = run(|o, e| delete(&c.api, "demo", &[], true, o, e));
        assert!(ok);
        assert_eq!(out, "waypoint demo/second deleted\n");
        let (ok, _, err) = run(|o, e| delete(&c.api, "demo", &[], true, o, e));
        assert!(ok);
        assert_eq!(err, "No waypoints found in namespace demo.\n");
    }
}
