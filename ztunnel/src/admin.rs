//! The three HTTP ports of ztunnel (`docs/istio-compatibility.md` §1):
//!
//! * admin, localhost 15000: `/config_dump` (workloads, services, policies, certificates with
//!   expiry, and this node's pods), `/` lists the endpoints;
//! * metrics, 15020: `/metrics` and `/stats/prometheus`;
//! * readiness, 15021: `/healthz/ready`, 200 once xDS has delivered every type and the node's pods
//!   were recovered, else 503 saying what is missing.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use mesh_core::admin_port::{self, respond, Body};
use mesh_core::time_text::rfc3339;
use mesh_core::xds::ClientStatus;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::inpod::Shared;
use crate::pods::Pods;
use crate::rbac::{Action, Scope};
use crate::state::State;
use crate::telemetry::Scrape;

/// Everything the HTTP ports read.
pub struct Admin {
    pub shared: Arc<Shared>,
    pub pods: Arc<Pods>,
    pub xds: watch::Receiver<ClientStatus>,
    pub recovered: watch::Receiver<bool>,
}

/// Which of the three ports a listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Port {
    Admin,
    Metrics,
    Readiness,
}

pub async fn serve(listener: TcpListener, port: Port, admin: Arc<Admin>) {
    let name = match port {
        Port::Admin => "admin",
        Port::Metrics => "metrics",
        Port::Readiness => "readiness",
    };
    admin_port::serve(listener, name, move |req: &Request<Incoming>, _| {
        admin.handle(port, req.uri().path())
    })
    .await
}

impl Admin {
    fn handle(&self, port: Port, path: &str) -> Response<Body> {
        match (port, path) {
            (Port::Readiness, "/healthz/ready") => admin_port::readiness(&self.missing()),
            (Port::Metrics, "/metrics" | "/stats/prometheus") => {
                let xds = self.xds.borrow().clone();
                let scrape = Scrape {
                    active_proxies: self.pods.active(),
                    xds_streams_ended: xds.sessions - u64::from(xds.connected),
                    closed_by_policy: self.shared.connections.closed_by_policy.load(Ordering::Relaxed),
                };
                respond(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    self.shared.metrics.render(scrape),
                )
            }
            (Port::Admin, "/config_dump") => admin_port::json(&self.config_dump()),
            (Port::Admin, "/") => respond(
                StatusCode::OK,
                "text/plain",
                "ztunnel admin\n  /config_dump  workloads, services, policies, certificates, pods\n",
            ),
            _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
        }
    }

    fn missing(&self) -> Vec<&'static str> {
        let mut m = Vec::new();
        if !self.xds.borrow().ready {
            m.push("xDS has not delivered every type yet");
        }
        if !*self.recovered.borrow() {
            m.push("the node's pods are not recovered yet");
        }
        m
    }

    pub fn config_dump(&self) -> Value {
        let st = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        let xds = self.xds.borrow().clone();
        json!({
            "workloads": workloads(&st),
            "services": services(&st),
            "policies": policies(&st),
            "certificates": self.shared.identities.held().iter().map(|(id, expiry)| json!({
                "identity": id.to_string(),
                "state": if expiry.is_some() { "available" } else { "pending" },
                "expiry": expiry.map(rfc3339),
            })).collect::<Vec<_>>(),
            "pods": self.pods.view(),
            "xds": {"ready": xds.ready, "connected": xds.connected, "sessions": xds.sessions, "applied": xds.applied},
        })
    }
}

fn workloads(st: &State) -> Vec<Value> {
    let mut out: Vec<Value> = st
        .workloads()
        .map(|w| {
            json!({
                "uid": w.uid,
                "name": w.name,
                "namespace": w.namespace,
                "workloadIps": w.ips.iter().map(|i| i.to_string()).collect::<Vec<_>>(),
                "protocol": if w.hbone { "HBONE" } else { "TCP" },
                "serviceAccount": w.identity.service_account,
                "identity": w.identity.to_string(),
                "node": w.node,
                "status": if w.healthy { "Healthy" } else { "Unhealthy" },
                "waypoint": w.waypoint.as_ref().map(|g| g.to_string()),
                "canonicalName": w.canonical_name,
                "canonicalRevision": w.canonical_revision,
                "authorizationPolicies": w.authorization_policies,
            })
        })
        .collect();
    out.sort_by_key(|v| v["uid"].as_str().unwrap_or("").to_string());
    out
}

fn services(st: &State) -> Vec<Value> {
    let mut out: Vec<Value> = st
        .services()
        .map(|s| {
            let mut ports: Vec<_> = s.ports.iter().collect();
            ports.sort();
            json!({
                "name": s.name,
                "namespace": s.namespace,
                "hostname": s.hostname,
                "vips": s.vips.iter().map(|(n, ip)| format!("{n}/{ip}")).collect::<Vec<_>>(),
                "ports": ports.iter().map(|(p, t)| json!({
                    "port": p,
                    "targetPort": t,
                    "healthyEndpoints": st.endpoints(s, **p).iter().map(|(w, port)| format!("{}/{}:{port}", w.namespace, w.name)).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "waypoint": s.waypoint.as_ref().map(|g| g.to_string()),
            })
        })
        .collect();
    out.sort_by_key(|v| v["hostname"].as_str().unwrap_or("").to_string());
    out
}

fn policies(st: &State) -> Vec<Value> {
    let mut out: Vec<Value> = st
        .policies()
        .map(|p| {
            json!({
                "name": p.key,
                "namespace": p.namespace,
                "scope": match p.scope { Scope::Global => "Global", Scope::Namespace => "Namespace", Scope::WorkloadSelector => "WorkloadSelector" },
                "action": match p.action { Action::Allow => "Allow", Action::Deny => "Deny" },
                "dryRun": p.dry_run,
                "rules": format!("{:?}", p.rules),
            })
        })
        .collect();
    out.sort_by_key(|v| v["name"].as_str().unwrap_or("").to_string());
    out
}
