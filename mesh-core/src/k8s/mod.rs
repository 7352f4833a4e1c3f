//! The Kubernetes object model the mesh reads: only the kinds and fields it acts on, in the exact
//! JSON/YAML shape of the Kubernetes API so that a YAML file, a `kubectl get -o yaml` dump and a
//! kube-rs watch event all decode into the same types.
//!
//! Decoding is two steps: [`Object::from_value`] checks `apiVersion`/`kind` and decodes the typed
//! struct (reporting the field path of any type error), then [`Object::validate`] checks what the
//! API server's validation (and Istio's webhook) would refuse. The Istio and Gateway API kinds are
//! decoded strictly: a field their schema does not have is refused with its path, as Istio's
//! validation refuses it (a typo such as `principal:` would otherwise leave a rule that matches
//! everyone). The core kinds ignore fields the mesh does not read, as any API client does.
//!
//! `meta` holds what every object shares; `core`, `security` and `gateway` the kinds, each with
//! its validation; this module the [`Object`] that is any of them.

mod core;
mod gateway;
mod meta;
mod route;
mod security;

pub use self::core::*;
pub use self::gateway::*;
pub use self::meta::*;
pub use self::route::*;
pub use self::security::*;

use self::core::{validate_pod, validate_service};
use self::gateway::validate_gateway;
use self::meta::{check_label, check_name, decode};
use self::route::{validate_grpc_route, validate_http_route};
use self::security::{validate_authorization_policy, validate_peer_authentication};

/// One decoded object of a kind the mesh reads.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    ServiceAccount(ServiceAccount),
    Pod(Pod),
    Service(Service),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
}

impl Object {
    /// Decodes one document. Cluster-scoped kinds get namespace `""`, namespaced kinds without a
    /// namespace get `default`, as `kubectl apply` does.
    pub fn from_value(value: serde_json::Value) -> Result<Object, ObjectError> {
        let api_version = value.get("apiVersion").and_then(|v| v.as_str());
        let kind_name = value.get("kind").and_then(|v| v.as_str());
        let (Some(api_version), Some(kind_name)) = (api_version, kind_name) else {
            return Err(ObjectError::MissingTypeMeta);
        };
        let group = |v: &str| {
            v.rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default()
        };
        // Another API's kind of the same name (an Istio networking Gateway, a Knative Service)
        // is not ours and not broken: it is simply not read.
        let kind = Kind::from_name(kind_name)
            .filter(|k| group(k.api_versions()[0]) == group(api_version))
            .ok_or_else(|| ObjectError::UnknownKind(format!("{kind_name} ({api_version})")))?;
        if !kind.api_versions().contains(&api_version) {
            return Err(ObjectError::ApiVersion {
                kind,
                api_version: api_version.to_string(),
                expected: kind.api_versions().join(" or "),
            });
        }
        let mut object = match kind {
            Kind::Namespace => Object::Namespace(decode(value)?),
            Kind::ServiceAccount => Object::ServiceAccount(decode(value)?),
            Kind::Pod => Object::Pod(decode(value)?),
            Kind::Service => Object::Service(decode(value)?),
            Kind::AuthorizationPolicy => Object::AuthorizationPolicy(decode(value)?),
            Kind::PeerAuthentication => Object::PeerAuthentication(decode(value)?),
            Kind::Gateway => Object::Gateway(decode(value)?),
            Kind::HttpRoute => Object::HttpRoute(decode(value)?),
            Kind::GrpcRoute => Object::GrpcRoute(decode(value)?),
        };
        let meta = object.metadata_mut();
        if kind.is_namespaced() {
            if meta.namespace.as_deref().is_none_or(str::is_empty) {
                meta.namespace = Some("default".to_string());
            }
        } else {
            meta.namespace = None;
        }
        Ok(object)
    }

    pub fn kind(&self) -> Kind {
        match self {
            Object::Namespace(_) => Kind::Namespace,
            Object::ServiceAccount(_) => Kind::ServiceAccount,
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
            Object::PeerAuthentication(_) => Kind::PeerAuthentication,
            Object::Gateway(_) => Kind::Gateway,
            Object::HttpRoute(_) => Kind::HttpRoute,
            Object::GrpcRoute(_) => Kind::GrpcRoute,
        }
    }

    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::Gateway(o) => &o.metadata,
            Object::HttpRoute(o) => &o.metadata,
            Object::GrpcRoute(o) => &o.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Namespace(o) => &mut o.metadata,
            Object::ServiceAccount(o) => &mut o.metadata,
            Object::Pod(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::AuthorizationPolicy(o) => &mut o.metadata,
            Object::PeerAuthentication(o) => &mut o.metadata,
            Object::Gateway(o) => &mut o.metadata,
            Object::HttpRoute(o) => &mut o.metadata,
            Object::GrpcRoute(o) => &mut o.metadata,
        }
    }

    pub fn key(&self) -> ObjectKey {
        let meta = self.metadata();
        ObjectKey::new(
            self.kind(),
            meta.namespace.as_deref().unwrap_or(""),
            &meta.name,
        )
    }

    /// Checks what the API server (and Istio's validating webhook) would refuse.
    pub fn validate(&self) -> Result<(), ObjectError> {
        let meta = self.metadata();
        check_name("metadata.name", &meta.name)?;
        if let Some(ns) = &meta.namespace {
            check_label("metadata.namespace", ns)?;
        }
        if self.kind() == Kind::Namespace {
            check_label("metadata.name", &meta.name)?;
        }
        match self {
            Object::Pod(pod) => validate_pod(pod),
            Object::Service(svc) => validate_service(svc),
            Object::AuthorizationPolicy(ap) => validate_authorization_policy(ap),
            Object::PeerAuthentication(pa) => validate_peer_authentication(pa),
            Object::Gateway(gw) => validate_gateway(gw),
            Object::HttpRoute(r) => validate_http_route(r),
            Object::GrpcRoute(r) => validate_grpc_route(r),
            Object::Namespace(_) | Object::ServiceAccount(_) => Ok(()),
        }
    }
}

/// Whether ztunnel captures this pod's traffic: the pod's own `istio.io/dataplane-mode` says
/// `ambient`, or its namespace's does and the pod says nothing; a sidecar-injected or
/// host-network pod never is. (The CNI plugin and istiod-lite decide with this one rule.)
pub fn is_enrolled(pod: &Pod, ns: Option<&Namespace>) -> bool {
    if pod.spec.host_network
        || pod
            .metadata
            .annotations
            .contains_key(SIDECAR_STATUS_ANNOTATION)
    {
        return false;
    }
    match pod
        .metadata
        .labels
        .get(DATAPLANE_MODE_LABEL)
        .map(String::as_str)
    {
        Some("ambient") => true,
        Some(_) => false,
        None => ns
            .and_then(|n| n.metadata.labels.get(DATAPLANE_MODE_LABEL))
            .is_some_and(|m| m == "ambient"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::net::IpAddr;

    #[test]
    fn decodes_pod_with_defaults() {
        let obj = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "labels": {"app": "web"}},
            "spec": {"nodeName": "node1"},
            "status": {"podIP": "10.0.1.5"}
        }))
        .unwrap();
        assert_eq!(obj.key(), ObjectKey::new(Kind::Pod, "default", "web-1"));
        let Object::Pod(pod) = obj else { panic!() };
        assert_eq!(pod.service_account(), "default");
        assert_eq!(pod.ips(), vec!["10.0.1.5".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn reports_field_path_of_type_errors() {
        let err = Object::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"ports": [{"port": "eighty"}]}
        }))
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("spec.ports[0].port:"), "{msg}");
    }

    #[test]
    fn rejects_wrong_api_version_and_unknown_action() {
        let err = Object::from_value(json!({
            "apiVersion": "security.istio.io/v2", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"}
        }))
        .unwrap_err();
        assert!(matches!(err, ObjectError::ApiVersion { .. }), "{err}");
        // The same kind name in another API group is not ours: ignored, not rejected.
        let err = Object::from_value(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {"name": "ingress"}
        }))
        .unwrap_err();
        assert!(matches!(err, ObjectError::UnknownKind(_)), "{err}");
        let err = Object::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p"}, "spec": {"action": "PERMIT"}
        }))
        .unwrap_err();
        assert!(err.to_string().starts_with("spec.action:"), "{err}");
    }

    /// Decodes and validates, as every reader does.
    fn read(value: serde_json::Value) -> Result<Object, ObjectError> {
        let object = Object::from_value(value)?;
        object.validate()?;
        Ok(object)
    }

    #[test]
    fn istio_and_gateway_kinds_refuse_fields_their_schema_does_not_have() {
        // `principal` for `principals`: ignored, it would leave a rule that allows everyone.
        let err = read(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "demo"},
            "spec": {"rules": [{"from": [{"source": {"principal": ["cluster.local/ns/demo/sa/a"]}}]}]}
        }))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("spec.rules[0].from[0].source"), "{text}");
        assert!(text.contains("unknown field `principal`"), "{text}");
        // `selectr`: ignored, a selector-scoped DENY would apply to the whole namespace.
        let err = read(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "demo"},
            "spec": {"action": "DENY", "selectr": {"matchLabels": {"app": "db"}}, "rules": [{}]}
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `selectr`"), "{err}");
        for (spec, field) in [
            (json!({"mtls": {"mod": "STRICT"}}), "mod"),
            (
                json!({"selector": {"matchLabel": {"a": "b"}}}),
                "matchLabel",
            ),
        ] {
            let err = read(json!({
                "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                "metadata": {"name": "p", "namespace": "demo"}, "spec": spec
            }))
            .unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("unknown field `{field}`")),
                "{err}"
            );
        }
        let gateway = |spec: serde_json::Value| {
            read(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                "metadata": {"name": "waypoint", "namespace": "demo"}, "spec": spec
            }))
        };
        let err =
            gateway(json!({"gatewayClassName": "istio-waypoint", "listener": []})).unwrap_err();
        assert!(
            err.to_string().contains("unknown field `listener`"),
            "{err}"
        );
        // Fields of the schema a waypoint does not act on are accepted, and kept.
        let ok = gateway(json!({
            "gatewayClassName": "istio-waypoint",
            "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE",
                "allowedRoutes": {"namespaces": {"from": "Same"}}}],
            "infrastructure": {"labels": {"team": "a"}}
        }))
        .unwrap();
        let Object::Gateway(gw) = ok else { panic!() };
        assert!(gw.spec.infrastructure.is_some());
        assert!(gw.spec.listeners[0].allowed_routes.is_some());
    }

    #[test]
    fn empty_principals_namespaces_and_operations_are_refused() {
        let policy = |source: serde_json::Value| {
            read(json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "demo"},
                "spec": {"rules": [{"from": [{"source": source}]}]}
            }))
        };
        let err = policy(json!({"principals": [""]})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.rules[0].from[0].source.principals[0] must not be empty"
        );
        // Istio strips `spiffe://` from principals (so does our translation): it is accepted.
        assert!(policy(json!({"notPrincipals": ["spiffe://cluster.local/ns/demo/sa/a"]})).is_ok());
        let err = policy(json!({"namespaces": ["demo", ""]})).unwrap_err();
        assert!(
            err.to_string().contains("namespaces[1] must not be empty"),
            "{err}"
        );
        assert!(policy(json!({"principals": ["cluster.local/ns/demo/sa/a", "*"]})).is_ok());
        let err = read(json!({
            "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "p", "namespace": "demo"},
            "spec": {"rules": [{"to": [{"operation": {"methods": ["GET", ""]}}]}]}
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("operation.methods[1] must not be empty"),
            "{err}"
        );
        // A `when` key outside Istio's list would match nothing (or everything): refused.
        let when = |key: &str| {
            read(json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "demo"},
                "spec": {"rules": [{"when": [{"key": key, "values": ["x"]}]}]}
            }))
        };
        let err = when("request.header[x-user]").unwrap_err();
        assert!(
            err.to_string()
                .contains("spec.rules[0].when[0].key \"request.header[x-user]\" is not supported"),
            "{err}"
        );
        assert!(when("request.headers[x-user]").is_ok());
        assert!(when("request.auth.claims[groups]").is_ok());
        assert!(when("request.headers[]").is_err());
        // A path template the waypoint could not compile is refused here, with its path.
        let paths = |p: &str| {
            read(json!({
                "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": "p", "namespace": "demo"},
                "spec": {"rules": [{"to": [{"operation": {"paths": [p]}}]}]}
            }))
        };
        assert!(paths("/api/{*}/items/{**}").is_ok());
        let err = paths("/api/{id}").unwrap_err();
        assert!(err.to_string().contains("whole segments"), "{err}");
        assert!(paths("/a/{**}/b").is_err());
    }

    #[test]
    fn grpc_routes_mean_http_routes_on_the_request_path() {
        let route = |method: serde_json::Value| {
            read(json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "GRPCRoute",
                "metadata": {"name": "r", "namespace": "demo"},
                "spec": {
                    "parentRefs": [{"kind": "Service", "name": "echo"}],
                    "rules": [{"matches": [{"method": method}], "backendRefs": [{"name": "v2", "port": 80}]}]
                }
            }))
        };
        let path = |method: serde_json::Value| {
            let Object::GrpcRoute(r) = route(method).unwrap() else {
                panic!()
            };
            let m = r.as_http().rules[0].matches[0].path.clone().unwrap();
            (m.type_.unwrap(), m.value.unwrap())
        };
        assert_eq!(
            path(json!({"service": "mesh.echo.v1.Echo", "method": "Echo"})),
            ("Exact".into(), "/mesh.echo.v1.Echo/Echo".into())
        );
        assert_eq!(
            path(json!({"service": "mesh.echo.v1.Echo"})),
            ("PathPrefix".into(), "/mesh.echo.v1.Echo".into())
        );
        assert_eq!(
            path(json!({"method": "Echo"})),
            ("RegularExpression".into(), "/[^/]+/Echo".into())
        );
        assert_eq!(
            path(json!({"type": "RegularExpression", "service": "mesh\\..*"})),
            (
                "RegularExpression".into(),
                "/(?:mesh\\..*)/(?:[^/]+)".into()
            )
        );
        let err = route(json!({"service": "bad service"})).unwrap_err();
        assert!(
            err.to_string().contains("is not a gRPC service name"),
            "{err}"
        );
        assert!(route(json!({}))
            .unwrap_err()
            .to_string()
            .contains("one of service or method"));
    }

    #[test]
    fn validation_catches_semantic_errors() {
        let bad = [
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad_Name"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "a.b"}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a.b"}}),
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "status": {"podIP": "10.0.0.300"}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"rules": [{"from": [{"source": {"ipBlocks": ["10.0.0.0/33"]}}]}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"rules": [{"to": [{"operation": {"ports": ["http"]}}]}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                   "metadata": {"name": "p"},
                   "spec": {"selector": {"matchLabels": {"a": "b"}},
                            "targetRefs": [{"kind": "Gateway", "name": "w"}]}}),
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "p"}, "spec": {"portLevelMtls": {"x": {"mode": "STRICT"}}}}),
        ];
        for doc in bad {
            let obj = Object::from_value(doc.clone()).unwrap();
            assert!(obj.validate().is_err(), "{doc} was accepted");
        }
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(
            parse_cidr("10.1.0.0/16").unwrap(),
            ("10.1.0.0".parse().unwrap(), 16)
        );
        assert_eq!(parse_cidr("fd00::1").unwrap().1, 128);
        assert!(parse_cidr("fd00::/129").is_err());
        assert!(parse_cidr("host").is_err());
    }
}
