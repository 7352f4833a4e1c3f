//! Fuzz targets of the waypoint's parsers of outside input, as plain tests
//! (`mesh_test_support::fuzz`; `MESH_FUZZ_ITERATIONS=10000000` for a long run):
//!
//! * its xDS resource (`WaypointService`: services, endpoints, policies, routes) as the xDS
//!   client hands it to the state: decoded, validated, policies and routes compiled;
//! * a tunnelled connection's first bytes and the HTTP requests on it, through protocol
//!   detection and the whole L7 chain (hyper's parser, forwarding headers, authorization with
//!   templates and header conditions, the route table with regexes, rewrites and redirects),
//!   answered without an upstream.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use mesh_core::control_plane::ControlPlane;
use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
use mesh_core::identity::Identity;
use mesh_core::proto::mesh::waypoint::v1 as pb;
use mesh_core::xds::{Changes, Handler};
use mesh_test_support::fuzz;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::detect::{self, Detected, Rewind};
use waypoint::stack::{self, Downstream};
use waypoint::state::{State, StateHandler};
use waypoint::telemetry::Metrics;
use waypoint::upstream::Upstream;

const NAME: &str = "demo/web.demo.svc.cluster.local";

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// A service as istiod-lite sends it, with a policy and a route that use every kind of matcher.
fn resource() -> pb::WaypointService {
    let op = pb::PolicyOperation {
        hosts: strs(&["*.demo.svc.cluster.local"]),
        methods: strs(&["GET", "POST"]),
        paths: strs(&["/api/{*}/items/{**}", "/health*", "/v1/*"]),
        not_paths: strs(&["/admin"]),
        ports: strs(&["80"]),
        ..Default::default()
    };
    let policy = pb::Policy {
        name: "demo/p".into(),
        action: pb::PolicyAction::Allow as i32,
        dry_run: false,
        rules: vec![pb::PolicyRule {
            from: vec![pb::PolicySource {
                principals: strs(&["cluster.local/ns/demo/sa/*"]),
                ip_blocks: strs(&["10.0.0.0/8"]),
                service_accounts: strs(&["demo/client"]),
                ..Default::default()
            }],
            to: vec![op],
            when: vec![pb::PolicyCondition {
                key: "request.headers[x-user]".into(),
                values: strs(&["a*"]),
                not_values: vec![],
            }],
        }],
    };
    let route = pb::Route {
        name: "demo/r".into(),
        port: 80,
        rules: vec![pb::RouteRule {
            matches: vec![pb::RouteMatch {
                path: Some(pb::PathMatch {
                    r#type: pb::PathMatchType::Regex as i32,
                    value: "/v[0-9]+/.*".into(),
                }),
                headers: vec![pb::ValueMatch {
                    name: "x-tester".into(),
                    value: "y.*".into(),
                    regex: true,
                }],
                query_params: vec![pb::ValueMatch {
                    name: "q".into(),
                    value: "1".into(),
                    regex: false,
                }],
                method: "GET".into(),
            }],
            filters: vec![
                pb::RouteFilter {
                    kind: Some(pb::route_filter::Kind::UrlRewrite(pb::UrlRewrite {
                        hostname: "other.demo".into(),
                        path: Some(pb::PathModifier {
                            kind: Some(pb::path_modifier::Kind::ReplacePrefixMatch("/x".into())),
                        }),
                    })),
                },
                pb::RouteFilter {
                    kind: Some(pb::route_filter::Kind::RequestHeaderModifier(
                        pb::HeaderModifier {
                            set: vec![pb::Header {
                                name: "x-a".into(),
                                value: "1".into(),
                            }],
                            add: vec![],
                            remove: strs(&["x-b"]),
                        },
                    )),
                },
            ],
            backends: vec![pb::WeightedBackend {
                service: NAME.into(),
                port: 80,
                weight: 1,
                filters: vec![],
            }],
            timeout_ms: 1000,
        }],
    };
    let redirect = pb::Route {
        name: "demo/redirect".into(),
        port: 0,
        rules: vec![pb::RouteRule {
            matches: vec![pb::RouteMatch {
                path: Some(pb::PathMatch {
                    r#type: pb::PathMatchType::Prefix as i32,
                    value: "/old".into(),
                }),
                ..Default::default()
            }],
            filters: vec![pb::RouteFilter {
                kind: Some(pb::route_filter::Kind::RequestRedirect(pb::Redirect {
                    scheme: "https".into(),
                    hostname: String::new(),
                    path: Some(pb::PathModifier {
                        kind: Some(pb::path_modifier::Kind::ReplacePrefixMatch("/new".into())),
                    }),
                    port: 8443,
                    status_code: 301,
                })),
            }],
            backends: vec![],
            timeout_ms: 0,
        }],
    };
    pb::WaypointService {
        waypoints: strs(&["demo/waypoint"]),
        namespace: "demo".into(),
        name: "web".into(),
        hostname: "web.demo.svc.cluster.local".into(),
        vips: vec![vec![10, 96, 0, 1]],
        ports: vec![pb::ServicePort {
            port: 80,
            target_port: 8080,
            name: "http".into(),
            protocol: 0,
        }],
        // No endpoint: every request that gets past routing is answered `no healthy upstream`.
        endpoints: vec![],
        policies: vec![policy],
        backend_of: vec![],
        routes: vec![route, redirect],
    }
}

#[test]
fn waypoint_resources_take_any_bytes() {
    let handler = StateHandler {
        state: Arc::default(),
        waypoint: "demo/waypoint".into(),
    };
    let mut with_endpoint = resource();
    with_endpoint.endpoints.push(pb::Endpoint {
        workload: "demo/web-1".into(),
        address: vec![10, 0, 0, 5],
        identity: "spiffe://cluster.local/ns/demo/sa/web".into(),
        ports: HashMap::from([(80, 8080)]),
        tunnel: 0,
        healthy: true,
        node: "node1".into(),
        workload_name: "web".into(),
    });
    let seeds = [resource().encode_to_vec(), with_endpoint.encode_to_vec()];
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    fuzz("waypoint WaypointService", &seeds, |input| {
        if let Ok(r) = pb::WaypointService::decode(input) {
            handler.apply(Changes {
                updated: vec![(NAME.to_string(), r)],
                removed: vec![],
            });
        }
    });
}

const GET: &[u8] = b"GET /v1/items?q=1 HTTP/1.1\r\nHost: web.demo.svc.cluster.local\r\nx-user: ann\r\nx-tester: yes\r\n\r\n";
const POST: &[u8] = b"POST /v2/orders?q=1 HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, x-b\r\nx-forwarded-for: 192.0.2.1\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /old/x HTTP/1.1\r\nHost: web:80\r\n\r\n";
const H2: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

#[test]
fn http_handling_takes_any_bytes() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let state = Arc::new(RwLock::new(State::default()));
    StateHandler {
        state: state.clone(),
        waypoint: "demo/waypoint".into(),
    }
    .apply(Changes {
        updated: vec![(NAME.to_string(), resource())],
        removed: vec![],
    });
    let me = Identity::new("cluster.local", "demo", "waypoint");
    let identities = IdentityManager::new(CaConfig {
        // Never reached: no endpoint, so no upstream connection and no certificate.
        control_plane: ControlPlane {
            address: "https://127.0.0.1:1".into(),
            server_name: "localhost".into(),
            root_pem: String::new(),
            token: String::new(),
        },
        requester: Requester::Workload,
        ttl: Duration::from_secs(3600),
    });
    let parts = stack::Parts {
        state: state.clone(),
        upstream: Arc::new(Upstream::new(identities, me.clone(), 15008)),
        metrics: Metrics::new(),
        me: Arc::new(me),
    };
    let authority = "10.96.0.1:80".parse().unwrap();
    let destination = state.read().unwrap().destination(authority).unwrap();
    let down = Arc::new(Downstream {
        client: "10.0.1.5:40000".parse().unwrap(),
        peer: Some("spiffe://cluster.local/ns/demo/sa/client".parse().unwrap()),
        destination: authority,
        protocol: Detected::Http1,
    });
    let exchange = |input: &[u8]| -> Vec<u8> {
        rt.block_on(async {
            let (mut client, server) = tokio::io::duplex(1 << 16);
            let chain = stack::build(&parts, authority, &destination);
            let down = down.clone();
            let chain = tower::ServiceExt::map_request(chain, move |mut req: stack::Request| {
                req.extensions_mut().insert(down.clone());
                req
            });
            let serve = async move {
                let mut server = server;
                let (detected, prefix) = detect::detect(&mut server, Duration::from_millis(50))
                    .await
                    .unwrap_or((Detected::Tcp, bytes::Bytes::new()));
                let io = TokioIo::new(Rewind::new(prefix, server));
                let service = TowerToHyperService::new(chain);
                match detected {
                    Detected::Http1 => {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .half_close(true)
                            .serve_connection(io, service)
                            .await;
                    }
                    Detected::Http2 => {
                        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                            .serve_connection(io, service)
                            .await;
                    }
                    Detected::Tcp => {}
                }
            };
            let talk = async move {
                let _ = client.write_all(input).await;
                let _ = client.shutdown().await;
                let mut out = Vec::new();
                let _ = client.read_to_end(&mut out).await;
                out
            };
            // Neither side may hang: a bound well above what an answer takes.
            let both = async { tokio::join!(serve, talk) };
            match tokio::time::timeout(Duration::from_secs(5), both).await {
                Ok(((), out)) => out,
                Err(_) => panic!("the connection did not end"),
            }
        })
    };
    // The seeds go all the way through the chain: policy, routes, the balancer's answer.
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let get = text(exchange(GET));
    assert!(
        get.starts_with("HTTP/1.1 503") && get.ends_with("no healthy upstream"),
        "{get}"
    );
    let post = text(exchange(POST));
    assert!(
        post.starts_with("HTTP/1.1 403"),
        "no x-user header: denied first: {post}"
    );
    fuzz("waypoint HTTP handling", &[GET, POST, H2], |input| {
        exchange(input);
    });
}
