//! The object API's behaviour, through real files in a temporary directory.

use std::path::Path;

use mesh_core::k8s::Kind;
use serde_json::json;

use super::*;
use crate::objects::fixture::{apply, cluster, utf8};

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
    assert!(
        utf8(err).starts_with("Error from server (Forbidden): namespaces \"default\" is forbidden")
    );
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
    assert!(labels_of(&c.api.read(Kind::Namespace, "", "default").unwrap().unwrap()).is_empty());
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

#[test]
fn a_misspelt_policy_field_is_an_error_naming_it_and_the_live_policy_stays() {
    let c = cluster();
    let allow = "
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-web, namespace: demo}
spec:
  rules: [{from: [{source: {principals: [cluster.local/ns/demo/sa/web]}}]}]
";
    let (ok, _, err) = apply(&c, &format!("{NAMESPACE}---{allow}"));
    assert!(ok, "{err}");
    // `principal` for `principals`: refused with its path, not stored as a rule that allows
    // everyone; the other object of the file still applies.
    let typo = allow.replace("principals:", "principal:");
    let (ok, out, err) = apply(
        &c,
        &format!("{typo}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: other}}\n"),
    );
    assert!(!ok);
    assert_eq!(out, "namespace/other created\n");
    assert!(
        err.starts_with("error: AuthorizationPolicy demo/only-web: spec.rules[0].from[0].source.principal: unknown field `principal`"),
        "{err}"
    );
    let live = c
        .api
        .read(Kind::AuthorizationPolicy, "demo", "only-web")
        .unwrap()
        .unwrap();
    assert_eq!(
        live["spec"]["rules"][0]["from"][0]["source"]["principals"][0],
        "cluster.local/ns/demo/sa/web"
    );
}
