//! `meshctl` end to end, driven only through its command line (as a user would): up (twice),
//! apply with a bad object among good ones, run pods on two nodes, exec a request that crosses
//! nodes over mTLS, a denying policy and its status, label/unlabel, zc, a crashed ztunnel
//! restarted by the supervisor, waypoints (their proxy pods, and traffic through them), a non-root user, a crashed supervisor (up cleans the
//! broken cluster first), and down leaving no namespace, pin, process or file.
//!
//! Root only; ignored by default. `e2e/run.sh` runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use mesh_e2e::{bin_dir, eventually, http_get, metric};

struct Meshctl {
    bin: PathBuf,
    home: PathBuf,
}

impl Meshctl {
    fn cmd(&self, args: &[&str]) -> Output {
        let out = Command::new(&self.bin)
            .arg("--home")
            .arg(&self.home)
            .args(args)
            .output()
            .expect("running meshctl");
        println!(
            "$ meshctl {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(out.status.success(), "meshctl {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Meshctl {
    fn drop(&mut self) {
        // Also after a failed check: down removes everything by the names it recorded.
        let _ = Command::new(&self.bin)
            .arg("--home")
            .arg(&self.home)
            .args(["down", "--quiet"])
            .status();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  clusterIP: 10.96.250.20
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: shop}
spec:
  action: SOMETIMES
"#;

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-shopper, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
  - from:
    - source: {principals: ["cluster.local/ns/shop/sa/shopper"]}
"#;

/// A network namespace the test makes as "someone else", removed by name when dropped.
struct ForeignNetns(&'static str);

impl ForeignNetns {
    fn add(name: &'static str) -> ForeignNetns {
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(ok.success(), "ip netns add {name}");
        ForeignNetns(name)
    }
}

impl Drop for ForeignNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

fn netns_list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mc-"))
        .collect()
}

fn processes_mentioning(home: &Path) -> Vec<String> {
    let needle = home.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(&needle).then_some(cmd)
        })
        .collect()
}

#[test]
#[ignore = "needs root: run e2e/run.sh"]
fn meshctl_end_to_end() {
    let bins = bin_dir();
    assert!(
        netns_list().is_empty(),
        "a meshctl cluster already exists on this machine: `sudo meshctl down` first"
    );
    let m = Meshctl {
        bin: bins.join("meshctl"),
        home: std::env::temp_dir().join(format!("meshctl-e2e-{}", std::process::id())),
    };
    let tmp = std::env::temp_dir().join(format!("meshctl-e2e-files-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    // A node name taken by someone else: `up` refuses before making anything, and leaves the
    // other namespace alone.
    let foreign = ForeignNetns::add("mc-node2");
    let out = m.cmd(&["up", "--nodes", "2"]);
    assert!(
        !out.status.success() && text(&out).contains("mc-node2 exists"),
        "{}",
        text(&out)
    );
    assert_eq!(
        netns_list(),
        vec!["mc-node2".to_string()],
        "nothing made, the other kept"
    );
    assert!(!m.home.join("cluster.json").exists(), "no record left");
    drop(foreign);

    // Object commands without a cluster say how to make one.
    let out = m.cmd(&["get", "pods"]);
    assert!(!out.status.success() && text(&out).contains("meshctl up"));

    let up = m.ok(&["up", "--nodes", "2"]);
    assert!(up.contains("meshctl demo"), "up prints what to try next");
    let again = m.cmd(&["up", "--nodes", "2"]);
    assert!(again.status.success() && text(&again).contains("already up"));

    // A bad object is refused by name while the others apply.
    std::fs::write(tmp.join("app.yaml"), APP).unwrap();
    let app = tmp.join("app.yaml").display().to_string();
    let out = m.cmd(&["apply", "-f", &app]);
    let t = text(&out);
    assert!(!out.status.success(), "a refused object fails the command");
    assert!(t.contains("namespace/shop created"), "{t}");
    assert!(t.contains("service/web created"), "{t}");
    assert!(t.contains("broken"), "the refused object is named: {t}");
    let out = m.cmd(&["apply", "-f", &app]);
    assert!(text(&out).contains("namespace/shop unchanged"));

    m.ok(&[
        "run",
        "web",
        "-n",
        "shop",
        "--node",
        "node2",
        "--port",
        "8080",
        "--serviceaccount",
        "web",
        "--",
        "mesh-echo",
        "serve",
        "--port",
        "8080",
        "--name",
        "web",
    ]);
    m.ok(&[
        "run",
        "shopper",
        "-n",
        "shop",
        "--node",
        "node1",
        "--serviceaccount",
        "shopper",
        "--",
        "sleep",
        "infinity",
    ]);
    let pods: serde_json::Value =
        serde_json::from_str(&m.ok(&["get", "pods", "-n", "shop", "-o", "json"])).unwrap();
    let ip_of = |name: &str| -> String {
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["metadata"]["name"] == name)
            .and_then(|p| p["status"]["podIP"].as_str())
            .unwrap_or_else(|| panic!("no IP for {name}: {pods}"))
            .to_string()
    };
    let shopper_ip = ip_of("shopper");

    // Across nodes, by VIP, over mTLS; the server sees the shopper's pod IP.
    let get = [
        "exec",
        "shop/shopper",
        "--",
        "mesh-echo",
        "get",
        "http://10.96.250.20/",
    ];
    let body = eventually(
        "a request through the mesh",
        Duration::from_secs(30),
        || {
            let out = m.cmd(&get);
            if out.status.success() {
                Ok(text(&out))
            } else {
                Err(text(&out))
            }
        },
    );
    assert!(
        body.contains(&shopper_ip),
        "the server saw the client pod's IP: {body}"
    );
    let metrics = http_get("mc-node2", "127.0.0.1:15020", "/metrics")
        .unwrap()
        .ok()
        .unwrap();
    assert!(
        metric(
            &metrics,
            "istio_tcp_connections_opened_total",
            &[
                ("connection_security_policy", "mutual_tls"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/shop/sa/shopper"
                ),
                (
                    "destination_principal",
                    "spiffe://cluster.local/ns/shop/sa/web"
                ),
            ]
        ) >= 1,
        "node2's ztunnel counted the mTLS connection"
    );

    // zc shows what node2's ztunnel holds.
    let zc = m.ok(&["zc", "workloads", "--node", "node2"]);
    assert!(
        zc.contains("shopper") && zc.contains("web") && zc.contains("HBONE"),
        "{zc}"
    );
    let certs = m.ok(&["zc", "certificates", "--node", "node2"]);
    assert!(
        certs.contains("spiffe://cluster.local/ns/shop/sa/web"),
        "{certs}"
    );

    // A denying policy, from the client's side, and its status.
    std::fs::write(tmp.join("deny.yaml"), DENY).unwrap();
    let deny = tmp.join("deny.yaml").display().to_string();
    m.ok(&["apply", "-f", &deny]);
    eventually("the policy to deny", Duration::from_secs(20), || {
        let out = m.cmd(&get);
        if out.status.success() {
            Err("still allowed".to_string())
        } else {
            Ok(())
        }
    });
    let status = eventually("the policy's status", Duration::from_secs(20), || {
        let y = m.ok(&[
            "get",
            "authorizationpolicy",
            "deny-shopper",
            "-n",
            "shop",
            "-o",
            "yaml",
        ]);
        if y.contains("conditions") {
            Ok(y)
        } else {
            Err(y)
        }
    });
    assert!(
        status.contains("ztunnel"),
        "status says where it is enforced: {status}"
    );
    m.ok(&["delete", "-f", &deny]);
    eventually("allowed again", Duration::from_secs(20), || {
        if m.cmd(&get).status.success() {
            Ok(())
        } else {
            Err("denied".to_string())
        }
    });

    // Unlabel: node1's ztunnel stops treating the shopper as ambient; label again: back.
    m.ok(&["label", "ns", "shop", "istio.io/dataplane-mode-"]);
    eventually("released", Duration::from_secs(20), || {
        let zc = m.ok(&["zc", "workloads", "--node", "node1"]);
        let line = zc
            .lines()
            .find(|l| l.contains("shopper"))
            .unwrap_or("")
            .to_string();
        if line.contains("TCP") && !line.contains("HBONE") {
            Ok(())
        } else {
            Err(zc)
        }
    });
    m.ok(&["label", "ns", "shop", "istio.io/dataplane-mode=ambient"]);
    eventually("enrolled again", Duration::from_secs(20), || {
        let out = m.cmd(&get);
        let zc = m.ok(&["zc", "workloads", "--node", "node1"]);
        let line = zc
            .lines()
            .find(|l| l.contains("shopper"))
            .unwrap_or("")
            .to_string();
        if out.status.success() && line.contains("HBONE") {
            Ok(())
        } else {
            Err(zc)
        }
    });

    // A crashed ztunnel is restarted by the supervisor, and `status` says so.
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(m.home.join("status.json")).unwrap()).unwrap();
    let pid = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ztunnel-node2")
        .and_then(|c| c["pid"].as_u64())
        .expect("ztunnel-node2's pid");
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    eventually("ztunnel-node2 restarted", Duration::from_secs(20), || {
        let s = m.ok(&["status"]);
        let line = s
            .lines()
            .find(|l| l.starts_with("ztunnel-node2"))
            .unwrap_or("")
            .to_string();
        if line.contains("running") && line.contains("signal 9") {
            Ok(())
        } else {
            Err(s)
        }
    });
    eventually("traffic after the restart", Duration::from_secs(30), || {
        if m.cmd(&get).status.success() {
            Ok(())
        } else {
            Err("no answer".to_string())
        }
    });

    // Waypoints: applying one makes the local cluster run its proxy (pod waypoint-0), and the
    // bound service's traffic goes through it: the server now sees the waypoint's forwarding
    // headers, with the shopper's address and its verified identity.
    let w = m.ok(&["waypoint", "apply", "-n", "shop", "--enroll-namespace"]);
    assert!(w.contains("waypoint shop/waypoint applied"), "{w}");
    eventually("the waypoint proxy to run", Duration::from_secs(60), || {
        let s = m.ok(&["waypoint", "status", "-n", "shop"]);
        if s.contains("waypoint proxy running") {
            Ok(())
        } else {
            Err(s)
        }
    });
    let list = m.ok(&["waypoint", "list", "-n", "shop"]);
    assert!(list.contains("waypoint"), "{list}");
    let body = eventually(
        "a request through the waypoint",
        Duration::from_secs(30),
        || {
            let out = m.cmd(&get);
            let t = text(&out);
            if out.status.success() && t.contains("x-forwarded-client-cert") {
                Ok(t)
            } else {
                Err(t)
            }
        },
    );
    assert!(
        body.contains("By=spiffe://cluster.local/ns/shop/sa/waypoint;URI=spiffe://cluster.local/ns/shop/sa/shopper"),
        "{body}"
    );
    assert!(
        body.contains(&shopper_ip),
        "x-forwarded-for names the shopper: {body}"
    );
    // Skipping the waypoint (straight to the pod's IP) is refused by web's ztunnel: the guard
    // istiod-lite adds for every waypoint-bound service.
    let web_ip = ip_of("web");
    let direct_url = format!("http://{web_ip}:8080/");
    let direct = [
        "exec",
        "shop/shopper",
        "--",
        "mesh-echo",
        "get",
        direct_url.as_str(),
    ];
    eventually(
        "a request that skips the waypoint to be refused",
        Duration::from_secs(20),
        || {
            let out = m.cmd(&direct);
            if out.status.success() {
                Err(text(&out))
            } else {
                Ok(())
            }
        },
    );
    let metrics = http_get("mc-shop_waypoint-0", "127.0.0.1:15020", "/metrics")
        .unwrap()
        .ok()
        .unwrap();
    assert!(
        metric(
            &metrics,
            "istio_requests_total",
            &[
                ("reporter", "waypoint"),
                ("response_code", "200"),
                (
                    "source_principal",
                    "spiffe://cluster.local/ns/shop/sa/shopper"
                ),
                ("destination_service", "web.shop.svc.cluster.local"),
            ]
        ) >= 1,
        "the waypoint counted the request: {metrics}"
    );
    // Deleting the waypoint removes its proxy; traffic goes straight to the service again.
    m.ok(&["waypoint", "delete", "-n", "shop"]);
    eventually("the waypoint proxy to go", Duration::from_secs(30), || {
        let pods = m.ok(&["get", "pods", "-n", "shop"]);
        if pods.contains("waypoint-0") {
            Err(pods)
        } else {
            Ok(())
        }
    });
    eventually("direct again", Duration::from_secs(30), || {
        let out = m.cmd(&get);
        let t = text(&out);
        if out.status.success() && !t.contains("x-forwarded-client-cert") {
            Ok(())
        } else {
            Err(t)
        }
    });
    m.ok(&["label", "ns", "shop", "istio.io/use-waypoint-"]);
    eventually(
        "the pod reachable directly again",
        Duration::from_secs(20),
        || {
            let out = m.cmd(&direct);
            if out.status.success() {
                Ok(())
            } else {
                Err(text(&out))
            }
        },
    );

    // Only root may make a cluster, and the message says how.
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&m.bin)
        .arg("--home")
        .arg(std::env::temp_dir().join("meshctl-e2e-nonroot"))
        .arg("up")
        .output()
        .expect("setpriv");
    assert!(
        !out.status.success() && text(&out).contains("sudo meshctl up"),
        "{}",
        text(&out)
    );

    // A crashed supervisor: `status` says so, and `up` removes the broken cluster and makes a
    // new one, leaving nothing of the old one behind.
    let sup: u32 = std::fs::read_to_string(m.home.join("supervisor.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Command::new("kill")
        .args(["-9", &sup.to_string()])
        .status()
        .unwrap();
    eventually("the supervisor gone", Duration::from_secs(10), || {
        let s = m.ok(&["status"]);
        if s.contains("NOT RUNNING") {
            Ok(())
        } else {
            Err(s)
        }
    });
    let out = m.cmd(&["up", "--nodes", "2"]);
    assert!(out.status.success(), "up after a crash");
    assert!(text(&out).contains("removing it first"), "{}", text(&out));
    let pods = m.ok(&["get", "pods", "-A"]);
    assert!(
        !pods.contains("shopper"),
        "the new cluster starts empty: {pods}"
    );

    // Down leaves nothing behind.
    m.ok(&["down"]);
    assert!(
        netns_list().is_empty(),
        "namespaces left: {:?}",
        netns_list()
    );
    assert!(!Path::new("/sys/fs/bpf/meshctl").exists(), "pins left");
    assert!(!m.home.exists(), "files left in {}", m.home.display());
    let procs = processes_mentioning(&m.home);
    assert!(procs.is_empty(), "processes left: {procs:?}");
    let again = m.cmd(&["down"]);
    assert!(again.status.success() && text(&again).contains("nothing to remove"));

    // A --home that holds no cluster (a typo, or $HOME) is refused and left as it was.
    let elsewhere = tmp.join("not-a-cluster");
    std::fs::create_dir_all(elsewhere.join("notes")).unwrap();
    std::fs::write(elsewhere.join("notes/todo.txt"), "keep me").unwrap();
    let wrong = Meshctl {
        bin: m.bin.clone(),
        home: elsewhere.clone(),
    };
    let refused = wrong.cmd(&["down"]);
    assert!(
        !refused.status.success(),
        "down on a directory without a cluster"
    );
    assert!(
        text(&refused).contains("holds no local cluster"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(elsewhere.join("notes/todo.txt")).unwrap(),
        "keep me"
    );
    let _ = std::fs::remove_dir_all(&tmp);
}
