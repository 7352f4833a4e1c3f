//! Istio's L7 semantics, case by case: each policy is written as users write it (the proto
//! istiod-lite sends mirrors the YAML) and checked against requests that must and must not
//! match.

use super::*;
use http::HeaderValue;

fn source(f: impl FnOnce(&mut pb::PolicySource)) -> pb::PolicySource {
    let mut s = pb::PolicySource::default();
    f(&mut s);
    s
}

fn op(f: impl FnOnce(&mut pb::PolicyOperation)) -> pb::PolicyOperation {
    let mut o = pb::PolicyOperation::default();
    f(&mut o);
    o
}

fn policy(name: &str, action: pb::PolicyAction, rules: Vec<pb::PolicyRule>) -> Policy {
    compile(&pb::Policy {
        name: format!("demo/{name}"),
        action: action as i32,
        dry_run: false,
        rules,
    })
    .unwrap()
}

fn rule(
    from: Vec<pb::PolicySource>,
    to: Vec<pb::PolicyOperation>,
    when: Vec<pb::PolicyCondition>,
) -> pb::PolicyRule {
    pb::PolicyRule { from, to, when }
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

struct Req {
    peer: Option<Identity>,
    source: IpAddr,
    method: &'static str,
    path: &'static str,
    host: &'static str,
    headers: HeaderMap,
    http: bool,
}

impl Req {
    fn get(path: &'static str) -> Req {
        Req {
            peer: Some("spiffe://cluster.local/ns/demo/sa/client".parse().unwrap()),
            source: "10.0.1.5".parse().unwrap(),
            method: "GET",
            path,
            host: "web.demo.svc.cluster.local",
            headers: HeaderMap::new(),
            http: true,
        }
    }

    fn attrs(&self) -> Attributes<'_> {
        Attributes {
            peer: self.peer.as_ref(),
            source_ip: self.source,
            remote_ip: remote_ip(&self.headers, self.source),
            destination: "10.96.0.1:80".parse().unwrap(),
            http: self.http.then_some(HttpAttributes {
                host: self.host,
                method: self.method,
                path: self.path,
                headers: &self.headers,
            }),
        }
    }
}

use pb::PolicyAction::{Allow, Custom, Deny};

fn allowed(policies: &[Policy], r: &Req) -> bool {
    evaluate(policies, &r.attrs()) == Decision::Allow
}

#[test]
fn no_policy_allows_and_an_allow_nothing_policy_denies() {
    assert!(allowed(&[], &Req::get("/")));
    // `spec: {}` is ALLOW with no rules: it matches nothing, so everything is denied.
    let nothing = policy("allow-nothing", Allow, vec![]);
    assert_eq!(
        evaluate(&[nothing], &Req::get("/").attrs()),
        Decision::Deny(None)
    );
    // One empty rule matches everything.
    let all = policy("allow-all", Allow, vec![rule(vec![], vec![], vec![])]);
    assert!(allowed(&[all], &Req::get("/")));
}

#[test]
fn methods_paths_and_templates() {
    let p = policy(
        "read-only",
        Allow,
        vec![rule(
            vec![],
            vec![op(|o| {
                o.methods = strs(&["GET", "HEAD"]);
                o.paths = strs(&["/api/*", "/health", "/users/{*}/profile", "/files/{**}"]);
            })],
            vec![],
        )],
    );
    let ps = [p];
    for (method, path, ok) in [
        ("GET", "/api/v1/items", true),
        ("GET", "/api", false),
        ("HEAD", "/health", true),
        ("GET", "/health/x", false),
        ("POST", "/api/v1/items", false),
        ("GET", "/users/ann/profile", true),
        ("GET", "/users/ann/bob/profile", false),
        ("GET", "/users//profile", false),
        ("GET", "/files/a/b/c.txt", true),
        ("GET", "/files", false),
        ("get", "/health", false),
    ] {
        let mut r = Req::get(path);
        r.method = method;
        assert_eq!(allowed(&ps, &r), ok, "{method} {path}");
    }
    assert!(PathMatch::new("/a/{**}/b").is_err());
    assert!(PathMatch::new("/a/x{*}").is_err());
}

#[test]
fn not_forms_exclude() {
    let p = policy(
        "deny-admin-writes",
        Deny,
        vec![rule(
            vec![source(|s| s.not_namespaces = strs(&["admin"]))],
            vec![op(|o| {
                o.paths = strs(&["/admin*"]);
                o.not_methods = strs(&["GET"]);
            })],
            vec![],
        )],
    );
    let ps = [p];
    let mut post = Req::get("/admin/users");
    post.method = "POST";
    assert_eq!(
        evaluate(&ps, &post.attrs()),
        Decision::Deny(Some("demo/deny-admin-writes".into()))
    );
    assert!(allowed(&ps, &Req::get("/admin/users")), "GET is excluded");
    let mut from_admin = Req::get("/admin/users");
    from_admin.method = "POST";
    from_admin.peer = Some("spiffe://cluster.local/ns/admin/sa/ops".parse().unwrap());
    assert!(allowed(&ps, &from_admin), "the admin namespace is excluded");
}

#[test]
fn deny_beats_allow_and_sources_match_identities_and_addresses() {
    let allow = policy(
        "allow-clients",
        Allow,
        vec![rule(
            vec![source(|s| {
                s.principals = strs(&["spiffe://cluster.local/ns/demo/sa/*"]);
                s.ip_blocks = strs(&["10.0.0.0/16"]);
            })],
            vec![],
            vec![],
        )],
    );
    let deny = policy(
        "deny-bad",
        Deny,
        vec![rule(
            vec![source(|s| s.service_accounts = strs(&["demo/bad"]))],
            vec![],
            vec![],
        )],
    );
    let ps = [allow, deny];
    assert!(allowed(&ps, &Req::get("/")));
    let mut bad = Req::get("/");
    bad.peer = Some("spiffe://cluster.local/ns/demo/sa/bad".parse().unwrap());
    assert_eq!(
        evaluate(&ps, &bad.attrs()),
        Decision::Deny(Some("demo/deny-bad".into()))
    );
    let mut outside = Req::get("/");
    outside.source = "10.1.0.5".parse().unwrap();
    assert_eq!(
        evaluate(&ps, &outside.attrs()),
        Decision::Deny(None),
        "not in the ipBlock"
    );
    let mut plaintext = Req::get("/");
    plaintext.peer = None;
    assert!(
        !allowed(&ps, &plaintext),
        "no identity matches no principal"
    );
}

#[test]
fn hosts_are_case_insensitive_and_ignore_the_port() {
    let p = policy(
        "hosts",
        Allow,
        vec![rule(
            vec![],
            vec![op(|o| {
                o.hosts = strs(&["web.demo.svc.cluster.local", "*.example.com"])
            })],
            vec![],
        )],
    );
    let ps = [p];
    let mut r = Req::get("/");
    r.host = "WEB.demo.svc.cluster.local:80";
    assert!(allowed(&ps, &r));
    r.host = "api.example.com";
    assert!(allowed(&ps, &r));
    r.host = "other.demo.svc.cluster.local";
    assert!(!allowed(&ps, &r));
}

#[test]
fn when_conditions() {
    let p = policy(
        "needs-header",
        Allow,
        vec![rule(
            vec![],
            vec![],
            vec![
                pb::PolicyCondition {
                    key: "request.headers[X-Version]".into(),
                    values: strs(&["v2*"]),
                    not_values: vec![],
                },
                pb::PolicyCondition {
                    key: "remote.ip".into(),
                    values: vec![],
                    not_values: strs(&["192.0.2.0/24"]),
                },
                pb::PolicyCondition {
                    key: "request.auth.principal".into(),
                    values: vec![],
                    not_values: strs(&["*"]),
                },
            ],
        )],
    );
    let ps = [p];
    let mut r = Req::get("/");
    assert!(!allowed(&ps, &r), "no header");
    r.headers
        .insert("x-version", HeaderValue::from_static("v2.1"));
    assert!(allowed(&ps, &r));
    // A client's own x-forwarded-for is not trusted: it cannot move itself into or out of a
    // block.
    r.headers.insert(
        "x-forwarded-for",
        HeaderValue::from_static("192.0.2.9, 10.0.1.5"),
    );
    assert!(allowed(&ps, &r), "the forged header changes nothing");
    r.source = "192.0.2.9".parse().unwrap();
    assert!(!allowed(&ps, &r), "the real source is excluded");
    let bad = compile(&pb::Policy {
        name: "demo/bad".into(),
        action: Allow as i32,
        dry_run: false,
        rules: vec![rule(
            vec![],
            vec![],
            vec![pb::PolicyCondition {
                key: "request.colour".into(),
                values: strs(&["red"]),
                not_values: vec![],
            }],
        )],
    });
    assert!(bad.unwrap_err().contains("request.colour"));
}

#[test]
fn tcp_connections_never_get_more_than_the_policy_says() {
    let http_allow = policy(
        "allow-get",
        Allow,
        vec![rule(
            vec![],
            vec![op(|o| o.methods = strs(&["GET"]))],
            vec![],
        )],
    );
    let mut tcp = Req::get("/");
    tcp.http = false;
    assert!(
        !allowed(&[http_allow], &tcp),
        "an HTTP-only ALLOW cannot allow TCP"
    );
    let http_deny = policy(
        "deny-post",
        Deny,
        vec![rule(
            vec![],
            vec![op(|o| o.methods = strs(&["POST"]))],
            vec![],
        )],
    );
    assert!(!allowed(&[http_deny], &tcp), "an HTTP-only DENY denies TCP");
}

#[test]
fn custom_without_an_authorizer_denies_what_it_matches_and_dry_run_never_enforces() {
    let custom = policy(
        "ext-authz",
        Custom,
        vec![rule(
            vec![],
            vec![op(|o| o.paths = strs(&["/private*"]))],
            vec![],
        )],
    );
    let ps = [custom];
    assert!(!allowed(&ps, &Req::get("/private/x")));
    assert!(allowed(&ps, &Req::get("/public")));
    let mut dry = compile(&pb::Policy {
        name: "demo/dry".into(),
        action: Deny as i32,
        dry_run: true,
        rules: vec![rule(vec![], vec![], vec![])],
    })
    .unwrap();
    assert!(allowed(std::slice::from_ref(&dry), &Req::get("/")));
    dry.action = Action::Allow;
    dry.rules.clear();
    assert!(
        allowed(&[dry], &Req::get("/")),
        "a dry-run ALLOW denies nothing"
    );
}

#[test]
fn hosts_lose_only_a_port() {
    assert_eq!(host_without_port("web:80"), "web");
    assert_eq!(host_without_port("web"), "web");
    assert_eq!(host_without_port("[::1]:80"), "[::1]");
    assert_eq!(host_without_port("[::1]"), "[::1]");
    // Found by the HTTP fuzz target: an unclosed bracket once sliced past the end.
    assert_eq!(host_without_port("[web"), "[web");
    assert_eq!(host_without_port("web:8x"), "web:8x");
}
