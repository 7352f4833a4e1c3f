//! Gateway API matching and precedence, case by case.

use super::*;

fn path(ty: pb::PathMatchType, v: &str) -> Option<pb::PathMatch> {
    Some(pb::PathMatch {
        r#type: ty as i32,
        value: v.into(),
    })
}

fn backend(service: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        service: service.into(),
        port: 80,
        weight,
        filters: vec![],
    }
}

fn rule(matches: Vec<pb::RouteMatch>, to: &str) -> pb::RouteRule {
    pb::RouteRule {
        matches,
        filters: vec![],
        backends: vec![backend(to, 1)],
        timeout_ms: 0,
    }
}

fn route(name: &str, rules: Vec<pb::RouteRule>) -> pb::Route {
    pb::Route {
        name: format!("demo/{name}"),
        port: 0,
        rules,
    }
}

fn req(method: &str, uri: &str, headers: &[(&str, &str)]) -> http::Request<()> {
    let mut b = http::Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

fn target(t: &RouteTable, r: &http::Request<()>) -> Option<String> {
    t.find(r, 80)
        .map(|f| f.rule.backends[0].service.clone().unwrap_or_default())
}

#[test]
fn the_most_specific_match_wins_whatever_the_order_written() {
    use pb::PathMatchType::*;
    let m = |p, h: &[(&str, &str)], method: &str| pb::RouteMatch {
        path: p,
        headers: h
            .iter()
            .map(|(n, v)| pb::ValueMatch {
                name: n.to_string(),
                value: v.to_string(),
                regex: false,
            })
            .collect(),
        query_params: vec![],
        method: method.into(),
    };
    let table = RouteTable::compile(&[
        route("catch-all", vec![rule(vec![], "all")]),
        route(
            "specific",
            vec![
                rule(vec![m(path(Prefix, "/api"), &[], "")], "api"),
                rule(vec![m(path(Prefix, "/api/v2/"), &[], "")], "api-v2"),
                rule(vec![m(path(Exact, "/api/v2/health"), &[], "")], "health"),
                rule(
                    vec![m(path(Prefix, "/api"), &[("x-tester", "yes")], "")],
                    "tester",
                ),
                rule(vec![m(path(Prefix, "/api"), &[], "POST")], "writes"),
                rule(vec![m(path(Regex, "/img/[0-9]+\\.png"), &[], "")], "images"),
            ],
        ),
    ])
    .unwrap();
    let cases = [
        ("GET", "/", vec![], "all"),
        ("GET", "/api", vec![], "api"),
        ("GET", "/apiary", vec![], "all"),
        ("GET", "/api/v1/x", vec![], "api"),
        ("GET", "/api/v2/x", vec![], "api-v2"),
        ("GET", "/api/v2/health", vec![], "health"),
        ("GET", "/api/x", vec![("x-tester", "yes")], "tester"),
        ("POST", "/api/x", vec![("x-tester", "yes")], "writes"),
        ("GET", "/img/42.png", vec![], "images"),
        ("GET", "/img/42.png.exe", vec![], "all"),
    ];
    for (method, uri, headers, want) in cases {
        assert_eq!(
            target(&table, &req(method, uri, &headers)).as_deref(),
            Some(want),
            "{method} {uri} {headers:?}"
        );
    }
}

#[test]
fn query_params_ports_and_no_match() {
    let table = RouteTable::compile(&[pb::Route {
        name: "demo/q".into(),
        port: 8080,
        rules: vec![rule(
            vec![pb::RouteMatch {
                path: None,
                headers: vec![],
                query_params: vec![pb::ValueMatch {
                    name: "canary".into(),
                    value: "true|1".into(),
                    regex: true,
                }],
                method: String::new(),
            }],
            "canary",
        )],
    }])
    .unwrap();
    assert_eq!(
        table
            .find(&req("GET", "/x?canary=1", &[]), 8080)
            .map(|f| f.route.to_string()),
        Some("demo/q".into())
    );
    assert!(table.find(&req("GET", "/x?canary=0", &[]), 8080).is_none());
    assert!(
        table.find(&req("GET", "/x?canary=1", &[]), 80).is_none(),
        "another port"
    );
    assert!(RouteTable::compile(&[route(
        "bad",
        vec![rule(
            vec![pb::RouteMatch {
                path: path(pb::PathMatchType::Regex, "(unclosed"),
                ..Default::default()
            }],
            "x"
        )]
    )])
    .unwrap_err()
    .contains("demo/bad"));
}

#[test]
fn weights_split_traffic_and_zero_weights_send_nothing() {
    let r = Rule {
        filters: vec![],
        backends: vec![
            Backend {
                service: Some("v1".into()),
                port: 80,
                weight: 90,
                filters: vec![],
            },
            Backend {
                service: Some("v2".into()),
                port: 80,
                weight: 10,
                filters: vec![],
            },
            Backend {
                service: Some("off".into()),
                port: 80,
                weight: 0,
                filters: vec![],
            },
        ],
        timeout: None,
    };
    let mut counts = std::collections::HashMap::new();
    for draw in 0..100 {
        let b = r.backend(|total| {
            assert_eq!(total, 100);
            draw
        });
        *counts
            .entry(b.unwrap().service.clone().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(counts["v1"], 90);
    assert_eq!(counts["v2"], 10);
    assert!(!counts.contains_key("off"));
    let none = Rule {
        filters: vec![],
        backends: vec![],
        timeout: None,
    };
    assert!(none.backend(|_| 0).is_none());
}

#[test]
fn prefix_rewrites_keep_the_rest_of_the_path() {
    let p = PathModifier::Prefix("/v2".into());
    assert_eq!(rewrite_path("/api/users", &p, Some("/api")), "/v2/users");
    assert_eq!(rewrite_path("/api", &p, Some("/api")), "/v2");
    assert_eq!(
        rewrite_path("/api/x", &PathModifier::Prefix("/".into()), Some("/api")),
        "/x"
    );
    assert_eq!(
        rewrite_path("/api", &PathModifier::Prefix("/".into()), Some("/api")),
        "/"
    );
    assert_eq!(
        rewrite_path("/any", &PathModifier::Full("/fixed".into()), None),
        "/fixed"
    );
}
