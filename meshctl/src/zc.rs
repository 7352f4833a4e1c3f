//! `meshctl zc` (like `istioctl ztunnel-config`): what a node's ztunnel holds right now, read
//! from its admin endpoint (`127.0.0.1:15000/config_dump` inside the node's namespace).

use std::io::Write;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use meshctl::cluster::home::{node_name, node_netns, Home, Record};
use meshctl::cluster::host::http_get;
use meshctl::output::{Format, Table};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum What {
    Workloads,
    Services,
    Policies,
    Certificates,
    Pods,
    All,
}

pub fn config_dump(node: u8) -> Result<Value> {
    let response = http_get(&node_netns(node), "127.0.0.1:15000", "/config_dump")
        .with_context(|| format!("asking the ztunnel on {}", node_name(node)))?;
    if response.status != 200 {
        bail!(
            "the ztunnel on {} answered {}",
            node_name(node),
            response.status
        );
    }
    serde_json::from_str(&response.body).context("ztunnel's config dump is not JSON")
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(a) => a.iter().map(s).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(out: &mut dyn Write, header: &[&str], rows: &[Vec<String>]) -> std::io::Result<()> {
    let mut t = Table::new(header);
    for r in rows {
        t.push(r.clone());
    }
    t.write(out)
}

pub fn show(home: &Home, what: What, node: Option<&str>, format: Format) -> Result<()> {
    let record =
        Record::load(home)?.context("no local cluster: start one with `sudo meshctl up`")?;
    let node = match node {
        None => 1,
        Some(n) => n
            .strip_prefix("node")
            .and_then(|n| n.parse::<u8>().ok())
            .filter(|n| (1..=record.nodes).contains(n))
            .with_context(|| {
                format!(
                    "no node {n:?}: this cluster has node1..node{}",
                    record.nodes
                )
            })?,
    };
    let dump = config_dump(node)?;
    let section = |k: &str| dump[k].as_array().cloned().unwrap_or_default();
    let mut out = std::io::stdout();
    match format {
        Format::Json | Format::Yaml => {
            let v = match what {
                What::All => dump.clone(),
                What::Workloads => Value::Array(section("workloads")),
                What::Services => Value::Array(section("services")),
                What::Policies => Value::Array(section("policies")),
                What::Certificates => Value::Array(section("certificates")),
                What::Pods => Value::Array(section("pods")),
            };
            if format == Format::Json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
            } else {
                write!(out, "{}", serde_norway::to_string(&v)?)?;
            }
            return Ok(());
        }
        _ => {}
    }
    let wide = format == Format::Wide;
    if matches!(what, What::Workloads | What::All) {
        let rows: Vec<Vec<String>> = section("workloads")
            .iter()
            .map(|w| {
                let mut r = vec![
                    s(&w["namespace"]),
                    s(&w["name"]),
                    s(&w["workloadIps"]),
                    s(&w["node"]),
                    s(&w["protocol"]),
                    s(&w["status"]),
                ];
                if wide {
                    r.push(s(&w["identity"]));
                    r.push(s(&w["waypoint"]));
                }
                r
            })
            .collect();
        let mut h = vec![
            "NAMESPACE",
            "POD NAME",
            "ADDRESS",
            "NODE",
            "PROTOCOL",
            "STATUS",
        ];
        if wide {
            h.extend(["IDENTITY", "WAYPOINT"]);
        }
        table(&mut out, &h, &rows)?;
    }
    if matches!(what, What::Services | What::All) {
        if what == What::All {
            writeln!(out)?;
        }
        let rows: Vec<Vec<String>> = section("services")
            .iter()
            .map(|sv| {
                let ports = sv["ports"].as_array().cloned().unwrap_or_default();
                let endpoints: usize = ports
                    .iter()
                    .map(|p| p["healthyEndpoints"].as_array().map_or(0, |a| a.len()))
                    .max()
                    .unwrap_or(0);
                vec![
                    s(&sv["namespace"]),
                    s(&sv["name"]),
                    s(&sv["vips"]),
                    ports
                        .iter()
                        .map(|p| format!("{}->{}", s(&p["port"]), s(&p["targetPort"])))
                        .collect::<Vec<_>>()
                        .join(","),
                    endpoints.to_string(),
                    s(&sv["waypoint"]),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "NAMESPACE",
                "SERVICE NAME",
                "SERVICE VIP",
                "PORTS",
                "ENDPOINTS",
                "WAYPOINT",
            ],
            &rows,
        )?;
    }
    if matches!(what, What::Policies | What::All) {
        if what == What::All {
            writeln!(out)?;
        }
        let rows: Vec<Vec<String>> = section("policies")
            .iter()
            .map(|p| {
                let mut r = vec![
                    s(&p["namespace"]),
                    s(&p["name"]),
                    s(&p["action"]),
                    s(&p["scope"]),
                    s(&p["dryRun"]),
                ];
                if wide {
                    r.push(s(&p["rules"]));
                }
                r
            })
            .collect();
        let mut h = vec!["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE", "DRY-RUN"];
        if wide {
            h.push("RULES");
        }
        table(&mut out, &h, &rows)?;
    }
    if matches!(what, What::Certificates | What::All) {
        if what == What::All {
            writeln!(out)?;
        }
        let rows: Vec<Vec<String>> = section("certificates")
            .iter()
            .map(|c| vec![s(&c["identity"]), s(&c["state"]), s(&c["expiry"])])
            .collect();
        table(&mut out, &["CERTIFICATE NAME", "STATE", "EXPIRY"], &rows)?;
    }
    if matches!(what, What::Pods | What::All) {
        if what == What::All {
            writeln!(out)?;
        }
        let rows: Vec<Vec<String>> = section("pods")
            .iter()
            .map(|p| {
                vec![
                    s(&p["namespace"]),
                    s(&p["name"]),
                    s(&p["ip"]),
                    s(&p["state"]),
                ]
            })
            .collect();
        table(&mut out, &["NAMESPACE", "POD", "IP", "CAPTURE"], &rows)?;
    }
    Ok(())
}
