//! Translation from YAML fixtures to resources and status.

use super::*;
use crate::source::directory::parse_documents;
use crate::store::Store;
use mesh_core::k8s::Kind;
use mesh_core::proto::istio::security::{string_match, Action, Scope};
use mesh_core::proto::istio::workload::{gateway_address, TunnelProtocol, WorkloadStatus};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Namespace
metadata:
  name: plain
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: demo
  labels: {app: web, version: v1}
spec:
  nodeName: node1
  serviceAccountName: web
  containers:
  - name: app
    ports:
    - {name: http, containerPort: 8080}
status:
  podIP: 10.1.0.5
---
apiVersion: v1
kind: Pod
metadata:
  name: opted-out
  namespace: demo
  labels: {app: web, istio.io/dataplane-mode: none}
spec:
  nodeName: node2
status:
  podIP: 10.1.0.6
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  namespace: plain
  labels: {app: legacy}
spec:
  nodeName: node2
status:
  podIP: 10.2.0.7
---
apiVersion: v1
kind: Pod
metadata:
  name: pending
  namespace: demo
  labels: {app: web}
spec: {}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  clusterIP: 10.96.0.10
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: admin, port: 9000, targetPort: 9001}
  - {name: plain, port: 7000}
  - {name: dns, port: 53, protocol: UDP}
"#;

fn translate_yaml(docs: &[&str]) -> Translation {
    let store = Store::new();
    let parts = docs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let content = parse_documents(&format!("fixture-{i}.yaml"), text);
            assert!(
                content.rejections.is_empty(),
                "fixture rejected: {:?}",
                content.rejections
            );
            (format!("fixture-{i}.yaml"), Some(content))
        })
        .collect();
    store.replace_parts(parts);
    translate(&store.snapshot(), &MeshConfig::default())
}

fn status(t: &Translation, kind: Kind, ns: &str, name: &str) -> Vec<Condition> {
    t.statuses
        .get(&ObjectKey::new(kind, ns, name))
        .cloned()
        .unwrap_or_else(|| panic!("no status for {kind} {ns}/{name}"))
}

#[test]
fn enrolment_follows_namespace_and_pod_labels() {
    let t = translate_yaml(&[BASE]);
    let web = &t.workloads["Kubernetes//Pod/demo/web-1"];
    assert_eq!(web.tunnel_protocol, TunnelProtocol::Hbone as i32);
    assert_eq!(web.addresses, vec![vec![10, 1, 0, 5]]);
    assert_eq!(web.service_account, "web");
    assert_eq!(web.node, "node1");
    assert_eq!(web.trust_domain, "cluster.local");
    assert_eq!(web.canonical_name, "web");
    assert_eq!(web.canonical_revision, "v1");
    assert_eq!(web.status, WorkloadStatus::Healthy as i32);

    let out = &t.workloads["Kubernetes//Pod/demo/opted-out"];
    assert_eq!(out.tunnel_protocol, TunnelProtocol::None as i32);
    assert_eq!(out.service_account, "default");
    let legacy = &t.workloads["Kubernetes//Pod/plain/legacy"];
    assert_eq!(legacy.tunnel_protocol, TunnelProtocol::None as i32);
    // A pod without an IP is not a workload yet.
    assert!(!t.workloads.contains_key("Kubernetes//Pod/demo/pending"));
}

#[test]
fn a_pod_label_enrols_a_pod_in_a_plain_namespace() {
    let extra = r#"
apiVersion: v1
kind: Pod
metadata:
  name: solo
  namespace: plain
  labels: {istio.io/dataplane-mode: ambient}
status:
  podIP: 10.2.0.9
"#;
    let t = translate_yaml(&[BASE, extra]);
    let solo = &t.workloads["Kubernetes//Pod/plain/solo"];
    assert_eq!(solo.tunnel_protocol, TunnelProtocol::Hbone as i32);
}

#[test]
fn services_map_ports_per_endpoint() {
    let t = translate_yaml(&[BASE]);
    let svc = &t.services["demo/web.demo.svc.cluster.local"];
    assert_eq!(svc.addresses[0].address, vec![10, 96, 0, 10]);
    let ports: Vec<(u32, u32)> = svc
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    // The named target port is 0 on the service (resolved per endpoint); UDP is dropped.
    assert_eq!(ports, vec![(80, 0), (9000, 9001), (7000, 7000)]);

    let web = &t.workloads["Kubernetes//Pod/demo/web-1"];
    let list = &web.services["demo/web.demo.svc.cluster.local"];
    let mapped: Vec<(u32, u32)> = list
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(mapped, vec![(80, 8080), (9000, 9001), (7000, 7000)]);
    // A pod without the named port keeps the ports it can serve.
    let out = &t.workloads["Kubernetes//Pod/demo/opted-out"];
    let mapped: Vec<u32> = out.services["demo/web.demo.svc.cluster.local"]
        .ports
        .iter()
        .map(|p| p.service_port)
        .collect();
    assert_eq!(mapped, vec![9000, 7000]);
    assert!(t.workloads["Kubernetes//Pod/plain/legacy"]
        .services
        .is_empty());
}

const POLICIES: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: allow-mixed
  namespace: demo
spec:
  selector:
    matchLabels: {app: web}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/demo/sa/client", "spiffe://cluster.local/ns/ops/sa/*"]
    to:
    - operation:
        ports: ["8080"]
  - to:
    - operation:
        methods: ["GET"]
        ports: ["9090"]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata:
  name: deny-mixed
  namespace: demo
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["bad"]
    to:
    - operation:
        methods: ["POST"]
        ports: ["8080"]
  - to:
    - operation:
        paths: ["/admin"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: only-l7
  namespace: demo
spec:
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: mesh-wide
  namespace: istio-system
  annotations:
    istio.io/dry-run: "true"
spec:
  action: DENY
  rules:
  - from:
    - source:
        ipBlocks: ["192.168.0.0/16"]
        serviceAccounts: ["legacy", "plain/legacy"]
    when:
    - key: destination.port
      values: ["9000"]
      notValues: ["9001"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: audit
  namespace: demo
spec:
  action: AUDIT
  rules: [{}]
"#;

#[test]
fn allow_rules_with_http_attributes_are_dropped() {
    let t = translate_yaml(&[BASE, POLICIES]);
    let p = &t.authorizations["demo/allow-mixed"];
    assert_eq!(p.scope, Scope::WorkloadSelector as i32);
    assert_eq!(p.action, Action::Allow as i32);
    // Only the first rule survives: the second needs a method.
    assert_eq!(p.rules.len(), 1);
    let clauses = &p.rules[0].clauses;
    assert_eq!(clauses.len(), 2);
    let principals: Vec<_> = clauses[0].matches[0]
        .principals
        .iter()
        .map(|m| m.match_type.clone().unwrap())
        .collect();
    assert_eq!(
        principals,
        vec![
            string_match::MatchType::Exact("cluster.local/ns/demo/sa/client".into()),
            string_match::MatchType::Prefix("cluster.local/ns/ops/sa/".into()),
        ]
    );
    assert_eq!(clauses[1].matches[0].destination_ports, vec![8080]);
    let cond = &status(&t, Kind::AuthorizationPolicy, "demo", "allow-mixed")[0];
    assert_eq!(
        (cond.type_, cond.status, cond.reason),
        ("ZtunnelAccepted", false, "UnsupportedValue")
    );
    assert!(cond.message.contains("found: methods"), "{}", cond.message);
    assert!(cond.message.contains("ALLOW"), "{}", cond.message);
    // Selected workloads reference it.
    assert!(t.workloads["Kubernetes//Pod/demo/web-1"]
        .authorization_policies
        .contains(&"demo/allow-mixed".to_string()));
    assert!(t.workloads["Kubernetes//Pod/plain/legacy"]
        .authorization_policies
        .is_empty());
}

#[test]
fn allow_with_only_http_rules_matches_nothing() {
    let t = translate_yaml(&[BASE, POLICIES]);
    let p = &t.authorizations["demo/only-l7"];
    assert_eq!(p.scope, Scope::Namespace as i32);
    assert!(
        p.rules.is_empty(),
        "an ALLOW without rules denies everything"
    );
}

#[test]
fn deny_rules_lose_only_their_http_parts() {
    let t = translate_yaml(&[BASE, POLICIES]);
    let p = &t.authorizations["demo/deny-mixed"];
    assert_eq!(p.action, Action::Deny as i32);
    assert_eq!(p.rules.len(), 2);
    // Rule 1: namespace "bad" AND port 8080 (the method is dropped).
    let r1 = &p.rules[0].clauses;
    assert_eq!(r1.len(), 2);
    assert_eq!(r1[1].matches[0].destination_ports, vec![8080]);
    // Rule 2 had only a path: it now matches everything.
    assert!(p.rules[1].clauses.is_empty());
    let cond = &status(&t, Kind::AuthorizationPolicy, "demo", "deny-mixed")[0];
    assert!(!cond.status);
    assert!(cond.message.contains("methods") && cond.message.contains("paths"));
}

#[test]
fn root_namespace_policies_are_global_and_keep_l4_fields() {
    let t = translate_yaml(&[BASE, POLICIES]);
    let p = &t.authorizations["istio-system/mesh-wide"];
    assert_eq!(p.scope, Scope::Global as i32);
    assert!(p.dry_run);
    let clauses = &p.rules[0].clauses;
    let m = &clauses[0].matches[0];
    assert_eq!(m.source_ips[0].address, vec![192, 168, 0, 0]);
    assert_eq!(m.source_ips[0].length, 16);
    let sas: Vec<(&str, &str)> = m
        .service_accounts
        .iter()
        .map(|s| (s.namespace.as_str(), s.service_account.as_str()))
        .collect();
    assert_eq!(sas, vec![("istio-system", "legacy"), ("plain", "legacy")]);
    assert_eq!(clauses[1].matches[0].destination_ports, vec![9000]);
    assert_eq!(clauses[1].matches[0].not_destination_ports, vec![9001]);
    let cond = &status(&t, Kind::AuthorizationPolicy, "istio-system", "mesh-wide")[0];
    assert_eq!((cond.status, cond.reason), (true, "Accepted"));
}

#[test]
fn audit_and_custom_are_not_sent_to_ztunnel() {
    let t = translate_yaml(&[BASE, POLICIES]);
    assert!(!t.authorizations.contains_key("demo/audit"));
    let cond = &status(&t, Kind::AuthorizationPolicy, "demo", "audit")[0];
    assert_eq!((cond.status, cond.reason), (false, "UnsupportedValue"));
    assert!(cond.message.contains("AUDIT"));
}

#[test]
fn strict_peer_authentication_denies_callers_without_identity() {
    let pa = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: demo
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: web-metrics
  namespace: demo
spec:
  selector:
    matchLabels: {version: v1}
  portLevelMtls:
    "9090": {mode: PERMISSIVE}
"#;
    let t = translate_yaml(&[BASE, pa]);
    // web-1 (version v1) has the workload policy: STRICT inherited, 9090 excepted.
    let web = &t.workloads["Kubernetes//Pod/demo/web-1"];
    assert_eq!(
        web.authorization_policies,
        vec!["demo/converted_peer_authentication_web-metrics".to_string()]
    );
    let p = &t.authorizations["demo/converted_peer_authentication_web-metrics"];
    assert_eq!(p.action, Action::Deny as i32);
    assert_eq!(p.scope, Scope::WorkloadSelector as i32);
    let m = &p.rules[0].clauses[0].matches[0];
    assert_eq!(
        m.not_principals[0].match_type,
        Some(string_match::MatchType::Presence(()))
    );
    assert_eq!(m.not_destination_ports, vec![9090]);
    // The other demo pod gets the namespace policy.
    let out = &t.workloads["Kubernetes//Pod/demo/opted-out"];
    assert_eq!(
        out.authorization_policies,
        vec!["demo/converted_peer_authentication_default".to_string()]
    );
    assert!(
        t.authorizations["demo/converted_peer_authentication_default"].rules[0].clauses[0].matches
            [0]
        .not_destination_ports
        .is_empty()
    );
    // Other namespaces stay permissive.
    assert!(t.workloads["Kubernetes//Pod/plain/legacy"]
        .authorization_policies
        .is_empty());
    let cond = &status(&t, Kind::PeerAuthentication, "demo", "default")[0];
    assert_eq!((cond.type_, cond.status), ("ZtunnelAccepted", true));
}

#[test]
fn namespace_permissive_overrides_mesh_strict_and_disable_is_reported() {
    let pa = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: relaxed
  namespace: plain
spec:
  mtls: {mode: DISABLE}
"#;
    let t = translate_yaml(&[BASE, pa]);
    assert_eq!(
        t.workloads["Kubernetes//Pod/demo/web-1"].authorization_policies,
        vec!["istio-system/converted_peer_authentication_default".to_string()]
    );
    assert!(t.workloads["Kubernetes//Pod/plain/legacy"]
        .authorization_policies
        .is_empty());
    let cond = &status(&t, Kind::PeerAuthentication, "plain", "relaxed")[0];
    assert_eq!((cond.status, cond.reason), (false, "UnsupportedValue"));
    assert!(cond.message.contains("DISABLE"));
}

const WAYPOINT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: demo
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: wl-waypoint
  namespace: demo
  labels: {istio.io/waypoint-for: workload}
spec:
  gatewayClassName: istio-waypoint
  listeners:
  - {name: mesh, port: 15008, protocol: HBONE}
---
apiVersion: v1
kind: Service
metadata:
  name: waypoint
  namespace: demo
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec:
  selector: {gateway.networking.k8s.io/gateway-name: waypoint}
  clusterIP: 10.96.0.99
  ports:
  - {name: mesh, port: 15008}
---
apiVersion: v1
kind: Service
metadata:
  name: direct
  namespace: demo
  labels: {istio.io/use-waypoint: none}
spec:
  selector: {app: web}
  clusterIP: 10.96.0.11
  ports:
  - {port: 81, targetPort: 8080}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: at-waypoint
  namespace: demo
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}
  rules:
  - to:
    - operation:
        methods: ["GET"]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: at-missing
  namespace: demo
spec:
  targetRefs:
  - {kind: Gateway, group: gateway.networking.k8s.io, name: nope}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: at-unbound-service
  namespace: demo
spec:
  targetRefs:
  - {kind: Service, name: direct}
"#;

#[test]
fn waypoint_binding_from_labels() {
    let labelled_ns = BASE.replace(
        "    istio.io/dataplane-mode: ambient\n",
        "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n",
    );
    let pod_bound = r#"
apiVersion: v1
kind: Pod
metadata:
  name: bound
  namespace: demo
  labels: {istio.io/use-waypoint: wl-waypoint}
status:
  podIP: 10.1.0.8
"#;
    let t = translate_yaml(&[&labelled_ns, WAYPOINT, pod_bound]);
    let web_svc = &t.services["demo/web.demo.svc.cluster.local"];
    let wp = web_svc
        .waypoint
        .as_ref()
        .expect("namespace label binds the service");
    assert_eq!(wp.hbone_mtls_port, 15008);
    match wp.destination.as_ref().unwrap() {
        gateway_address::Destination::Hostname(h) => {
            assert_eq!(
                (h.namespace.as_str(), h.hostname.as_str()),
                ("demo", "waypoint.demo.svc.cluster.local")
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The service label `none` opts out; the waypoint's own service is never bound.
    assert!(t.services["demo/direct.demo.svc.cluster.local"]
        .waypoint
        .is_none());
    assert!(t.services["demo/waypoint.demo.svc.cluster.local"]
        .waypoint
        .is_none());
    // The namespace waypoint takes service traffic only, so pods are not bound by it...
    assert!(t.workloads["Kubernetes//Pod/demo/web-1"].waypoint.is_none());
    // ...but a pod label naming a workload waypoint binds that pod.
    let bound = t.workloads["Kubernetes//Pod/demo/bound"]
        .waypoint
        .as_ref()
        .unwrap();
    match bound.destination.as_ref().unwrap() {
        gateway_address::Destination::Hostname(h) => {
            assert_eq!(h.hostname, "wl-waypoint.demo.svc.cluster.local")
        }
        other => panic!("unexpected {other:?}"),
    }

    // Policy status: bound, missing target, service without a waypoint.
    let c = &status(&t, Kind::AuthorizationPolicy, "demo", "at-waypoint")[0];
    assert_eq!(
        (c.type_, c.status, c.reason),
        ("WaypointAccepted", true, "Accepted")
    );
    assert_eq!(c.message, "bound to demo/waypoint");
    assert!(
        !t.authorizations.contains_key("demo/at-waypoint"),
        "waypoint policies are not sent to ztunnel"
    );
    // What the waypoint serves: the bound service with its pods and the Gateway's policy; not
    // the waypoint's own service, nor the one that opted out.
    let served = &t.waypoint_services["demo/web.demo.svc.cluster.local"];
    assert_eq!(served.waypoints, vec!["demo/waypoint"]);
    let web1 = served
        .endpoints
        .iter()
        .find(|e| e.workload == "demo/web-1")
        .expect("web-1 is an endpoint");
    assert_eq!(web1.identity, "spiffe://cluster.local/ns/demo/sa/web");
    assert_eq!(
        served
            .policies
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>(),
        vec!["demo/at-waypoint"]
    );
    assert_eq!(served.policies[0].rules[0].to[0].methods, vec!["GET"]);
    assert!(!t
        .waypoint_services
        .contains_key("demo/waypoint.demo.svc.cluster.local"));
    assert!(!t
        .waypoint_services
        .contains_key("demo/direct.demo.svc.cluster.local"));
    // The guard: web's pods refuse every source but the waypoint, on every port (web has a
    // named target port, which could be any port of a pod).
    let guard = &t.authorizations["demo/_waypoint-guard.web"];
    assert_eq!(guard.action, Action::Deny as i32);
    let m = &guard.rules[0].clauses[0].matches[0];
    assert_eq!(m.not_service_accounts[0].namespace, "demo");
    assert_eq!(m.not_service_accounts[0].service_account, "waypoint");
    assert!(m.destination_ports.is_empty());
    assert!(t.workloads["Kubernetes//Pod/demo/web-1"]
        .authorization_policies
        .contains(&"demo/_waypoint-guard.web".to_string()));
    assert!(
        !t.authorizations.contains_key("demo/_waypoint-guard.direct")
            && !t
                .authorizations
                .contains_key("demo/_waypoint-guard.waypoint"),
        "no guard for an opted-out service or the waypoint's own"
    );
    let c = &status(&t, Kind::AuthorizationPolicy, "demo", "at-missing")[0];
    assert_eq!((c.status, c.reason), (false, "TargetNotFound"));
    let c = &status(&t, Kind::AuthorizationPolicy, "demo", "at-unbound-service")[0];
    assert_eq!((c.status, c.reason), (false, "AncestorNotBound"));
    // Gateways report that no waypoint proxy runs yet.
    let g = status(&t, Kind::Gateway, "demo", "waypoint");
    assert_eq!(
        (g[1].type_, g[1].status, g[1].reason),
        ("Programmed", false, "Pending")
    );
}

#[test]
fn a_missing_waypoint_binds_nothing() {
    let labelled_ns = BASE.replace(
        "    istio.io/dataplane-mode: ambient\n",
        "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: ghost\n",
    );
    let t = translate_yaml(&[&labelled_ns]);
    assert!(t.services["demo/web.demo.svc.cluster.local"]
        .waypoint
        .is_none());
}

#[test]
fn translation_is_deterministic() {
    let a = translate_yaml(&[BASE, POLICIES, WAYPOINT]);
    let b = translate_yaml(&[BASE, POLICIES, WAYPOINT]);
    assert_eq!(a, b);
}

#[test]
fn the_memo_gives_the_same_result_as_a_fresh_translation() {
    let store = Store::new();
    let mut translator = Translator::new(MeshConfig::default());
    let steps: Vec<(&str, String)> = vec![
        ("base.yaml", BASE.to_string()),
        ("policies.yaml", POLICIES.to_string()),
        // A pod's labels change: it leaves the service and a selector policy.
        ("base.yaml", BASE.replace("labels: {app: web, version: v1}", "labels: {app: other, version: v1}")),
        // The namespace gains a waypoint binding and a waypoint appears.
        ("base.yaml", BASE.replace(
            "    istio.io/dataplane-mode: ambient\n",
            "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: wl-waypoint\n",
        )),
        ("waypoint.yaml", WAYPOINT.to_string()),
        // A namespace-wide PeerAuthentication appears, then the mesh-wide one.
        ("pa.yaml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: demo}\nspec: {mtls: {mode: STRICT}}\n".to_string()),
        ("pa-mesh.yaml", "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n".to_string()),
        // A service selector changes.
        ("base.yaml", BASE.replace("  selector: {app: web}\n  clusterIP: 10.96.0.10", "  selector: {app: legacy}\n  clusterIP: 10.96.0.10")),
    ];
    for (file, text) in steps {
        store.replace_parts(vec![(file.to_string(), Some(parse_documents(file, &text)))]);
        let snap = store.snapshot();
        let incremental = translator.translate(&snap);
        let fresh = translate(&snap, &MeshConfig::default());
        assert_eq!(incremental, fresh, "after applying {file}");
    }
}

const ROUTES: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split, namespace: demo}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web, port: 80}
  - {group: "", kind: Service, name: direct}
  - {name: some-ingress}
  rules:
  - backendRefs:
    - {name: web, port: 80, weight: 9}
    - {name: ghost, port: 80, weight: 1}
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: web, port: 80}}
"#;

#[test]
fn http_routes_are_served_by_the_parent_services_waypoint_with_status_per_parent() {
    let labelled_ns = BASE.replace(
        "    istio.io/dataplane-mode: ambient\n",
        "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n",
    );
    let t = translate_yaml(&[&labelled_ns, WAYPOINT, ROUTES]);
    let served = &t.waypoint_services["demo/web.demo.svc.cluster.local"];
    assert_eq!(served.routes.len(), 1);
    let route = &served.routes[0];
    assert_eq!((route.name.as_str(), route.port), ("demo/split", 80));
    let backends: Vec<(&str, u32)> = route.rules[0]
        .backends
        .iter()
        .map(|b| (b.service.as_str(), b.weight))
        .collect();
    assert_eq!(
        backends,
        vec![("demo/web.demo.svc.cluster.local", 9), ("", 1)],
        "the unresolved backend keeps its weight (answered 500)"
    );
    assert!(
        route.rules[0].filters.is_empty(),
        "the mirror is not applied"
    );

    let conditions = status(&t, Kind::HttpRoute, "demo", "split");
    let of = |parent: &str, ty: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == ty && c.parent.as_ref().is_some_and(|p| p.name == parent))
            .unwrap_or_else(|| panic!("no {ty} for {parent}: {conditions:?}"))
            .clone()
    };
    let web = of("web", "Accepted");
    assert_eq!((web.status, web.reason), (true, "Accepted"));
    assert!(
        web.message.contains("served by waypoint demo/waypoint"),
        "{}",
        web.message
    );
    assert!(
        web.message.contains("RequestMirror filter is not applied"),
        "{}",
        web.message
    );
    let direct = of("direct", "Accepted");
    assert_eq!((direct.status, direct.reason), (false, "NoMatchingParent"));
    assert!(direct.message.contains("not bound to a waypoint"));
    let ingress = of("some-ingress", "Accepted");
    assert_eq!(
        (ingress.status, ingress.reason),
        (false, "NoMatchingParent")
    );
    let refs = of("web", "ResolvedRefs");
    assert_eq!((refs.status, refs.reason), (false, "BackendNotFound"));
    assert!(
        refs.message.contains("Service demo/ghost was not found"),
        "{}",
        refs.message
    );
}

#[test]
fn policies_and_routes_may_not_reach_into_another_namespace() {
    let labelled_ns = BASE.replace(
        "    istio.io/dataplane-mode: ambient\n",
        "    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: waypoint\n",
    );
    let foreign = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: let-me-in, namespace: plain}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint, namespace: demo}]
  rules: [{from: [{source: {namespaces: [plain]}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: hijack, namespace: plain}
spec:
  parentRefs: [{kind: Service, name: web, namespace: demo}]
  rules: [{backendRefs: [{name: elsewhere, port: 80}]}]
"#;
    let t = translate_yaml(&[&labelled_ns, WAYPOINT, foreign]);
    let c = &status(&t, Kind::AuthorizationPolicy, "plain", "let-me-in")[0];
    assert_eq!((c.status, c.reason), (false, "TargetNotFound"));
    assert!(c.message.contains("another namespace"), "{}", c.message);
    let served = &t.waypoint_services["demo/web.demo.svc.cluster.local"];
    assert!(
        served.policies.iter().all(|p| p.name != "plain/let-me-in"),
        "a foreign policy must not apply"
    );
    assert!(
        served.routes.is_empty(),
        "a foreign route must not capture the service"
    );
    let r = status(&t, Kind::HttpRoute, "plain", "hijack");
    let accepted = r.iter().find(|c| c.type_ == "Accepted").unwrap();
    assert_eq!(
        (accepted.status, accepted.reason),
        (false, "UnsupportedValue")
    );
}
