//! The printers' output for stored objects, as kubectl would print them.

use super::*;
use crate::objects::fixture::{apply, cluster, utf8, Cluster};

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
