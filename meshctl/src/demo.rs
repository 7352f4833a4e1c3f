//! `meshctl demo`: a sample app in the ambient namespace `demo` and a short guided tour.
//!
//! The app: `echo-v1` (node1) and `echo-v2` (node2) run `mesh-echo serve` behind the Service
//! `echo` (VIP 10.96.250.10, port 80 -> 8080); `client` (node1) is where requests start. The
//! tour makes real requests and shows what proves each point: the server sees the client pod's
//! IP, ztunnel counts the connection as `mutual_tls` between two SPIFFE identities, a DENY
//! policy refuses the client and its status says where it is enforced, and removing it lets the
//! client back in. Then L7: a waypoint for the namespace, an HTTPRoute that sends testers (a
//! header) to v2, and an L7 policy that answers 403 on one path; then all of it removed.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use mesh_core::k8s::Kind;

use mesh_core::cluster_dir;
use mesh_core::k8s::ObjectKey;
use meshctl::cluster::home::{node_netns, supervisor_alive, Home, PodRecord, Record};
use meshctl::cluster::host::{http_get, require_root, wait_for};
use meshctl::cluster::{self, pods};
use meshctl::objects::Api;

const NAMESPACE: &str = "demo";
pub const ECHO_VIP: &str = "10.96.250.10";

const APP: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata:
  name: echo
  namespace: demo
spec:
  selector:
    app: echo
  clusterIP: 10.96.250.10
  ports:
  - name: http
    port: 80
    targetPort: 8080
"#;

const DENY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-client
  namespace: demo
spec:
  selector:
    matchLabels:
      app: echo
  action: DENY
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/demo/sa/client"]
"#;

fn say(s: &str) {
    println!("{s}");
}

fn shell(s: &str) {
    println!("\n  $ {s}");
}

fn indent(text: &str) {
    for l in text.lines() {
        println!("    {l}");
    }
}

/// A request from the client pod to the echo service; exit code and output.
const L7: &str = r#"apiVersion: v1
kind: Service
metadata: {name: echo-v1, namespace: demo}
spec:
  selector: {app: echo, version: v1}
  clusterIP: 10.96.250.11
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: echo-v2, namespace: demo}
spec:
  selector: {app: echo, version: v2}
  clusterIP: 10.96.250.12
  ports: [{name: http, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: demo}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{headers: [{name: x-tester, value: "yes"}]}]
    backendRefs: [{name: echo-v2, port: 8080}]
  - backendRefs: [{name: echo-v1, port: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: demo}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin/{**}"]}}]
"#;

/// A GET from the client through the mesh: the exit code and what `mesh-echo get` printed.
fn get(home: &Home, path: &str, headers: &[&str]) -> Result<(i32, String)> {
    let url = format!("http://{ECHO_VIP}{path}");
    let mut args = vec!["mesh-echo", "get", url.as_str(), "--timeout", "3s"];
    for h in headers {
        args.push("-H");
        args.push(h);
    }
    Ok(pods::exec_capture(home, NAMESPACE, "client", &args)?)
}

/// The `"version"` an echo answer names.
fn version_of(out: &str) -> &str {
    out.split("\"version\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("?")
}

fn request(home: &Home) -> Result<(i32, String)> {
    Ok(pods::exec_capture(
        home,
        NAMESPACE,
        "client",
        &[
            "mesh-echo",
            "get",
            &format!("http://{ECHO_VIP}/"),
            "--timeout",
            "3s",
        ],
    )?)
}

pub fn run(home: &Home, api: &Api, tour: bool) -> Result<()> {
    require_root("meshctl demo")?;
    if !supervisor_alive(home) {
        say("No local cluster is running; starting one (meshctl up --nodes 2).");
        cluster::up(home, 2, false)?;
    }
    let record = Record::load(home)?.context("no cluster record")?;
    deploy(home, api, record.nodes)?;
    if tour {
        walk(home, api)?;
    }
    say("\nWhat to try next:");
    say("  sudo meshctl exec demo/client -- mesh-echo get http://10.96.250.10/   (again: v1 and v2 share the load)");
    say("  sudo meshctl exec demo/client -- mesh-echo get 'http://10.96.250.10/?status=503'  (inject an error)");
    say("  meshctl zc workloads --node node2              what node2's ztunnel knows");
    say("  meshctl logs ztunnel-node2 --tail 5            one access-log line per connection");
    say("  meshctl get ap -n demo -o yaml                 policies and their status");
    say("  meshctl waypoint apply -n demo --enroll-namespace   L7 again (chapters 5 to 8)");
    say("  sudo meshctl down                              remove everything");
    Ok(())
}

fn deploy(home: &Home, api: &Api, nodes: u8) -> Result<()> {
    say("Deploying the demo app into namespace `demo` (ambient):");
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    if !api.apply_text("demo-app.yaml", APP, None, &mut out, &mut err)? {
        bail!("the demo's objects were refused (see above)");
    }
    let second = if nodes >= 2 { "node2" } else { "node1" };
    let pods: [(&str, &str, &str, Vec<String>); 3] = [
        ("echo-v1", "node1", "echo", echo_cmd("v1")),
        ("echo-v2", second, "echo", echo_cmd("v2")),
        (
            "client",
            "node1",
            "client",
            vec!["sleep".into(), "infinity".into()],
        ),
    ];
    for (name, node, sa, command) in pods {
        if PodRecord::load(home, NAMESPACE, name).is_some() {
            say(&format!("pod/{name} exists"));
            continue;
        }
        let mut labels = vec![];
        if name.starts_with("echo") {
            labels.push(("app".to_string(), "echo".to_string()));
            labels.push((
                "version".to_string(),
                name.trim_start_matches("echo-").to_string(),
            ));
        }
        pods::run_pod(
            home,
            api,
            pods::RunOptions {
                namespace: NAMESPACE.into(),
                name: name.into(),
                node: Some(node.into()),
                service_account: sa.into(),
                labels,
                ports: if name.starts_with("echo") {
                    vec![8080]
                } else {
                    vec![]
                },
                command,
            },
        )?;
    }
    // The app is ready when the client gets an answer through the mesh.
    wait_for(
        "the echo service to answer the client",
        Duration::from_secs(30),
        || match request(home)? {
            (0, _) => Ok(()),
            (code, out) => bail!("exit {code}: {}", out.trim()),
        },
    )?;
    Ok(())
}

fn echo_cmd(version: &str) -> Vec<String> {
    [
        "mesh-echo",
        "serve",
        "--port",
        "8080",
        "--name",
        "echo",
        "--version",
        version,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn walk(home: &Home, api: &Api) -> Result<()> {
    let client = PodRecord::load(home, NAMESPACE, "client").context("no client pod")?;
    say("\n== 1. The client calls the echo service by its VIP. It does not know about the mesh.");
    shell(&format!(
        "sudo meshctl exec demo/client -- mesh-echo get http://{ECHO_VIP}/"
    ));
    let (_, out) = request(home)?;
    indent(out.trim());
    say(&format!(
        "\n  The server saw peer {}: the client pod's own IP, kept through the mesh.",
        client.ip
    ));

    say("\n== 2. It went over mutual TLS between SPIFFE identities.");
    say("  The client's ztunnel (node1) captured the connection with eBPF and tunnelled it over");
    say("  HBONE (HTTP/2 CONNECT in mTLS, port 15008) to the server's ztunnel. Its metrics:");
    shell("meshctl zc workloads   # and the metrics at 127.0.0.1:15020/metrics in each node");
    for node in 1..=2u8 {
        let Ok(metrics) = http_get(&node_netns(node), "127.0.0.1:15020", "/metrics")
            .map_err(|e| e.to_string())
            .and_then(|r| r.ok())
        else {
            continue;
        };
        for line in metrics.lines().filter(|l| {
            l.starts_with("istio_tcp_connections_opened_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("destination_workload_namespace=\"demo\"")
        }) {
            let pick = |k: &str| {
                line.split(&format!("{k}=\""))
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap_or("")
                    .to_string()
            };
            say(&format!(
                "    node{node}: {} -> {}  security={}  connections={}",
                pick("source_principal"),
                pick("destination_principal"),
                pick("connection_security_policy"),
                line.rsplit(' ').next().unwrap_or("")
            ));
        }
    }

    say("\n== 3. A DENY policy for the client's identity, enforced by the server's ztunnel.");
    shell("meshctl apply -f deny-client.yaml");
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    api.apply_text("deny-client.yaml", DENY, None, &mut out, &mut err)?;
    let denied = wait_for(
        "the policy to deny",
        Duration::from_secs(20),
        || match request(home)? {
            (0, out) => bail!("still allowed: {}", out.lines().next().unwrap_or("")),
            (_, out) => Ok(out),
        },
    )?;
    shell(&format!(
        "sudo meshctl exec demo/client -- mesh-echo get http://{ECHO_VIP}/"
    ));
    indent(denied.trim());
    say("\n  Its status says where it is enforced:");
    shell("meshctl get authorizationpolicy -n demo -o wide");
    let _ = wait_for(
        "the policy's status",
        Duration::from_secs(10),
        || match api.read(Kind::AuthorizationPolicy, NAMESPACE, "deny-client")? {
            Some(_)
                if cluster_dir::status_path(
                    &home.status_dir(),
                    &ObjectKey::new(Kind::AuthorizationPolicy, NAMESPACE, "deny-client"),
                )
                .exists() =>
            {
                Ok(())
            }
            _ => bail!("no status yet"),
        },
    );
    meshctl_get_ap(api)?;
    say("\n  The denial is counted (istio_tcp_connections_failed_total{response_flags=\"DENY\"})");
    say("  and logged by the ztunnel of the echo pod that refused it (both nodes run one):");
    say("  `meshctl logs ztunnel-node2 | grep refused`.");

    say("\n== 4. Remove the policy and the client is let in again.");
    shell("meshctl delete authorizationpolicy deny-client -n demo");
    api.delete(
        "authorizationpolicy",
        &["deny-client".to_string()],
        NAMESPACE,
        &mut out,
        &mut err,
    )?;
    wait_for(
        "the client to be allowed again",
        Duration::from_secs(20),
        || match request(home)? {
            (0, _) => Ok(()),
            (code, out) => bail!("exit {code}: {}", out.trim()),
        },
    )?;
    say("  allowed again.");
    l7(home, api)
}

fn l7(home: &Home, api: &Api) -> Result<()> {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    say("\n== 5. L7: a waypoint for the namespace. The local cluster runs its proxy (pod waypoint-0);");
    say("  ztunnel now sends the echo service's traffic through it, still over mTLS.");
    shell("meshctl waypoint apply -n demo --enroll-namespace");
    let mut ignored = Vec::new();
    if !meshctl::waypoint::apply(
        api,
        NAMESPACE,
        "waypoint",
        true,
        "service",
        &mut out,
        &mut ignored,
    )? {
        bail!(
            "the waypoint was refused: {}",
            String::from_utf8_lossy(&ignored)
        );
    }
    let through = wait_for(
        "requests to go through the waypoint",
        Duration::from_secs(60),
        || match get(home, "/", &[])? {
            (0, out) if out.contains("x-forwarded-client-cert") => Ok(out),
            (code, out) => bail!("exit {code}: {}", out.lines().last().unwrap_or("")),
        },
    )?;
    say("  The server now sees the waypoint's forwarding headers: the client's address and its");
    say("  verified identity (x-forwarded-client-cert), checked by the waypoint's mTLS:");
    let xfcc = through
        .split("\"x-forwarded-client-cert\":\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("");
    indent(&format!("x-forwarded-client-cert: {xfcc}"));

    say("\n== 6. An HTTPRoute: testers (header x-tester: yes) go to v2, everyone else to v1.");
    shell("meshctl apply -f echo-l7.yaml      # Services echo-v1/echo-v2, the HTTPRoute, an L7 policy");
    if !api.apply_text("echo-l7.yaml", L7, None, &mut out, &mut err)? {
        bail!("the L7 objects were refused (see above)");
    }
    wait_for(
        "the route to send testers to v2",
        Duration::from_secs(30),
        || match get(home, "/", &["x-tester: yes"])? {
            (0, out) if version_of(&out) == "v2" => Ok(()),
            (code, out) => bail!("exit {code}: {}", out.lines().last().unwrap_or("")),
        },
    )?;
    let mut plain = Vec::new();
    let mut testers = Vec::new();
    for _ in 0..5 {
        plain.push(version_of(&get(home, "/", &[])?.1).to_string());
        testers.push(version_of(&get(home, "/", &["x-tester: yes"])?.1).to_string());
    }
    indent(&format!("without the header: {}", plain.join(" ")));
    indent(&format!("with x-tester: yes: {}", testers.join(" ")));

    say("\n== 7. An L7 AuthorizationPolicy at the waypoint: DENY on /admin/{**}.");
    let denied = wait_for(
        "the L7 policy to deny",
        Duration::from_secs(30),
        || match get(home, "/admin/users", &[])? {
            (_, out) if out.contains("403") => Ok(out),
            (code, out) => bail!("exit {code}: {}", out.lines().next().unwrap_or("")),
        },
    )?;
    shell(&format!(
        "sudo meshctl exec demo/client -- mesh-echo get http://{ECHO_VIP}/admin/users"
    ));
    indent(denied.trim());
    say("  Other paths still pass. Each request is counted by the waypoint");
    say("  (istio_requests_total{reporter=\"waypoint\",response_code=\"403\"}) and logged, one");
    say("  access line per request (while it runs: `meshctl logs waypoint-0 -n demo | grep access`).");

    say("\n== 8. Remove the L7 objects and the waypoint: traffic goes straight to the pods again.");
    shell("meshctl delete httproute echo -n demo; meshctl delete ap no-admin -n demo; meshctl delete svc echo-v1 echo-v2 -n demo");
    shell("meshctl waypoint delete -n demo && meshctl label ns demo istio.io/use-waypoint-");
    let names = |list: &[&str]| list.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    api.delete(
        "httproute",
        &names(&["echo"]),
        NAMESPACE,
        &mut out,
        &mut err,
    )?;
    api.delete(
        "authorizationpolicy",
        &names(&["no-admin"]),
        NAMESPACE,
        &mut out,
        &mut err,
    )?;
    api.delete(
        "service",
        &names(&["echo-v1", "echo-v2"]),
        NAMESPACE,
        &mut out,
        &mut err,
    )?;
    meshctl::waypoint::delete(api, NAMESPACE, &[], false, &mut out, &mut ignored)?;
    let mut label_out = Vec::new();
    api.label(
        "namespace",
        NAMESPACE,
        "",
        &["istio.io/use-waypoint-".to_string()],
        true,
        &mut label_out,
        &mut err,
    )?;
    wait_for(
        "traffic to go direct again",
        Duration::from_secs(60),
        || match get(home, "/", &[])? {
            (0, out) if !out.contains("x-forwarded-client-cert") => Ok(()),
            (code, out) => bail!("exit {code}: {}", out.lines().last().unwrap_or("")),
        },
    )?;
    say("  direct again.");
    Ok(())
}

fn meshctl_get_ap(api: &Api) -> Result<()> {
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    meshctl::output::get(
        api,
        "authorizationpolicy",
        &[],
        NAMESPACE,
        false,
        meshctl::output::Format::Wide,
        &mut out,
        &mut err,
    )?;
    Ok(())
}
