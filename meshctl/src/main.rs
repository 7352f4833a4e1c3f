//! `meshctl`: run the mesh on one Linux machine and talk to it like kubectl and istioctl.

mod demo;
mod zc;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use meshctl::cluster::home::{self, Home};
use meshctl::cluster::{self, pods, supervisor};
use meshctl::objects::Api;
use meshctl::output::{self, Format};
use meshctl::waypoint;

#[derive(Parser)]
#[command(
    name = "meshctl",
    version,
    about = "Run the mesh on this machine and talk to it like kubectl and istioctl",
    long_about = "meshctl runs a local multi-node cluster on one Linux machine: each node is a network \
namespace, pods are network namespaces made by the real CNI plugins, istiod-lite is the control \
plane and the CA, and every node has a ztunnel that carries ambient pods' traffic over mTLS (HBONE).\n\n\
Objects are the YAML you would `kubectl apply` (Namespaces, Pods, Services, AuthorizationPolicy, \
PeerAuthentication, Gateway, ...); the cluster keeps them under its home directory.",
    after_help = "Start here:\n  sudo meshctl up            a 2-node cluster\n  sudo meshctl demo          a sample app in an ambient namespace, with a guided tour\n  meshctl get pods -A        what runs\n  sudo meshctl down          remove everything"
)]
struct Cli {
    /// Where the cluster keeps its files.
    #[arg(
        long,
        global = true,
        env = "MESHCTL_HOME",
        default_value = "/var/lib/meshctl"
    )]
    home: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct FileArgs {
    /// A YAML/JSON file, a directory of them, or - for standard input (repeatable).
    #[arg(short = 'f', long = "filename", required = true)]
    files: Vec<String>,
    /// Process directories recursively.
    #[arg(short = 'R', long)]
    recursive: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the local cluster (node namespaces, underlay, istiod-lite, a ztunnel per node).
    #[command(
        long_about = "Create the local cluster: N node network namespaces joined by an underlay, \
istiod-lite (control plane and CA) in node1 and a ztunnel in every node, all run and restarted by a \
background supervisor. Running it again on a running cluster does nothing. Needs root."
    )]
    Up {
        /// How many nodes (1-8).
        #[arg(long, default_value_t = 2)]
        nodes: u8,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Remove the local cluster and everything it made (processes, namespaces, pins, files).
    Down {
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show the cluster's processes: running, restarts, and how each last exited.
    Status,
    /// Create or update objects from YAML (like kubectl apply).
    Apply {
        #[command(flatten)]
        files: FileArgs,
        /// Namespace for objects that name none.
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Delete objects named in files (-f), or by kind and name.
    #[command(
        after_help = "Examples:\n  meshctl delete -f policy.yaml\n  meshctl delete authorizationpolicy deny-all -n demo\n  sudo meshctl delete pod client -n demo"
    )]
    Delete {
        /// Kind and names, e.g. `pod client` or `ap deny-all`.
        args: Vec<String>,
        /// A YAML/JSON file, a directory of them, or - for standard input (repeatable).
        #[arg(short = 'f', long = "filename")]
        files: Vec<String>,
        /// Process directories recursively.
        #[arg(short = 'R', long)]
        recursive: bool,
        /// The namespace of KIND NAME (and of file objects that name none).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Create a namespace.
    Create {
        /// Only `namespace` (or `ns`).
        kind: String,
        /// The namespace's name.
        name: String,
        /// Label it istio.io/dataplane-mode=ambient: its pods join the mesh.
        #[arg(long)]
        ambient: bool,
    },
    /// Add (key=value) or remove (key-) labels on a namespace or pod.
    #[command(
        after_help = "Examples:\n  meshctl label ns demo istio.io/dataplane-mode=ambient\n  meshctl label ns demo istio.io/dataplane-mode-"
    )]
    Label {
        /// ns (namespace) or pod.
        kind: String,
        /// The object's name.
        name: String,
        /// key=value to set, key- to remove.
        #[arg(required = true)]
        changes: Vec<String>,
        /// The pod's namespace.
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Allow changing the value of an existing label.
        #[arg(long)]
        overwrite: bool,
    },
    /// List objects (ns, pods, svc, authorizationpolicy, peerauthentication, gateway, ...).
    #[command(
        after_help = "Examples:\n  meshctl get pods -A -o wide\n  meshctl get authorizationpolicy -n demo\n  meshctl get ap deny-all -n demo -o yaml"
    )]
    Get {
        /// ns, pods (po), svc, authorizationpolicy (ap), peerauthentication (pa), gateway, ...
        kind: String,
        /// Only these objects.
        names: Vec<String>,
        /// The namespace to list.
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// table (default), wide, yaml, json or name.
        #[arg(short, long, value_parser = ["wide", "yaml", "json", "name"])]
        output: Option<String>,
    },
    /// Create a pod running CMD (its network namespace is made by the CNI chain).
    #[command(
        after_help = "Example:\n  sudo meshctl run web -n demo --port 8080 -- mesh-echo serve --port 8080\n\nThe project's binaries (mesh-echo) are on the pod's PATH."
    )]
    Run {
        /// The pod's name.
        name: String,
        /// The pod's namespace (it must exist: `meshctl create ns NAME`).
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// node1, node2, ... (default: the node with the fewest pods).
        #[arg(long)]
        node: Option<String>,
        /// Its service account: the SPIFFE identity is spiffe://cluster.local/ns/NS/sa/THIS.
        #[arg(long, default_value = "default")]
        serviceaccount: String,
        /// Labels, key=value,key2=value2 (app=NAME is always set).
        #[arg(long, short = 'l', value_delimiter = ',')]
        labels: Vec<String>,
        /// A container port (repeatable).
        #[arg(long)]
        port: Vec<u16>,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run a command in a pod's network namespace (NAMESPACE/POD, or POD with -n).
    #[command(
        after_help = "Example:\n  sudo meshctl exec demo/client -- mesh-echo get http://echo.demo/"
    )]
    Exec {
        /// NAMESPACE/POD, or POD with -n.
        pod: String,
        /// The pod's namespace when POD has none.
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The program and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Print a pod's output (NAMESPACE/POD or POD with -n), or a component's: istiod-lite,
    /// ztunnel-node1, supervisor.
    Logs {
        /// NAMESPACE/POD, POD with -n, or istiod-lite, ztunnel-node<N>, supervisor.
        target: String,
        /// The pod's namespace when POD has none.
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// Keep printing what is written.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Manage waypoints (the Gateway of class istio-waypoint), like `istioctl waypoint`.
    #[command(subcommand)]
    Waypoint(WaypointCmd),
    /// What a node's ztunnel holds (like `istioctl ztunnel-config`).
    Zc {
        #[arg(value_enum, default_value = "all")]
        what: zc::What,
        /// node1, node2, ... (default node1).
        #[arg(long)]
        node: Option<String>,
        #[arg(short, long, value_parser = ["wide", "yaml", "json"])]
        output: Option<String>,
    },
    /// Deploy a sample app into an ambient namespace and walk through mTLS and a policy.
    Demo {
        /// Deploy only, no tour.
        #[arg(long)]
        no_tour: bool,
    },
    /// (internal) run the cluster's processes; started by `up`.
    #[command(hide = true)]
    Supervise,
}

#[derive(Subcommand)]
enum WaypointCmd {
    /// Create or update a waypoint for a namespace.
    Apply {
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The waypoint (Gateway) name.
        #[arg(long, default_value = "waypoint")]
        name: String,
        /// Also label the namespace istio.io/use-waypoint=NAME.
        #[arg(long)]
        enroll_namespace: bool,
        /// What traffic it is for: service, workload, all or none.
        #[arg(long = "for", default_value = "service", value_parser = ["service", "workload", "all", "none"])]
        for_traffic: String,
    },
    /// List waypoints.
    List {
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// A waypoint's conditions, and whether a proxy serves it.
    Status {
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The waypoint (Gateway) name.
        #[arg(long, default_value = "waypoint")]
        name: String,
    },
    /// Delete waypoints.
    Delete {
        names: Vec<String>,
        /// The namespace.
        #[arg(short, long, default_value = "default")]
        namespace: String,
        #[arg(long)]
        all: bool,
    },
}

fn format(o: Option<&str>) -> Format {
    match o {
        Some("wide") => Format::Wide,
        Some("yaml") => Format::Yaml,
        Some("json") => Format::Json,
        Some("name") => Format::Name,
        _ => Format::Table,
    }
}

/// `NS/POD`, or `POD` in `-n`.
fn split_pod(pod: &str, namespace: &str) -> (String, String) {
    match pod.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => (namespace.to_string(), pod.to_string()),
    }
}

fn ok(b: bool) -> ExitCode {
    if b {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let home = Home { dir: cli.home };
    let api = Api::new(home.config_dir(), home.status_dir());
    let (mut out, mut err) = (std::io::stdout(), std::io::stderr());
    Ok(match cli.command {
        Cmd::Up { nodes, quiet } => {
            cluster::up(&home, nodes, quiet)?;
            if !quiet {
                println!("\nThe local cluster is up: {nodes} node(s), istiod-lite on node1, a ztunnel on every node.\n");
                println!("Next:");
                println!(
                    "  sudo meshctl demo                 deploy a sample app and take the tour"
                );
                println!("  meshctl status                    the cluster's processes");
                println!("  meshctl zc workloads              what node1's ztunnel knows");
                println!("  sudo meshctl down                 remove it all");
            }
            ExitCode::SUCCESS
        }
        Cmd::Down { quiet } => {
            cluster::down(&home, quiet)?;
            ExitCode::SUCCESS
        }
        Cmd::Status => {
            output::cluster_status(&home, &mut std::io::stdout())?;
            ExitCode::SUCCESS
        }
        Cmd::Apply { files, namespace } => {
            require_cluster_files(&home)?;
            ok(api.apply(
                &files.files,
                namespace.as_deref(),
                files.recursive,
                &mut out,
                &mut err,
            )?)
        }
        Cmd::Delete {
            args,
            files,
            recursive,
            namespace,
        } => {
            require_cluster_files(&home)?;
            if !files.is_empty() {
                if !args.is_empty() {
                    bail!("give either -f FILE or KIND NAME, not both");
                }
                return Ok(ok(api.delete_sources(
                    &files,
                    namespace.as_deref(),
                    recursive,
                    &mut out,
                    &mut err,
                )?));
            }
            let Some((kind, names)) = args.split_first() else {
                bail!("what to delete? `meshctl delete -f FILE` or `meshctl delete KIND NAME`");
            };
            if names.is_empty() {
                bail!("no name given: `meshctl delete {kind} NAME`");
            }
            let ns = namespace.unwrap_or_else(|| "default".into());
            if matches!(kind.as_str(), "pod" | "pods" | "po") {
                for n in names {
                    let (pns, pname) = split_pod(n, &ns);
                    pods::delete_pod(&home, &api, &pns, &pname)?;
                }
                ExitCode::SUCCESS
            } else {
                ok(api.delete(kind, names, &ns, &mut out, &mut err)?)
            }
        }
        Cmd::Create {
            kind,
            name,
            ambient,
        } => {
            require_cluster_files(&home)?;
            if !matches!(kind.as_str(), "namespace" | "ns") {
                bail!(
                    "meshctl create makes namespaces only; other objects: `meshctl apply -f FILE`"
                );
            }
            let labels = if ambient {
                vec![("istio.io/dataplane-mode".to_string(), "ambient".to_string())]
            } else {
                vec![]
            };
            ok(api.create_namespace(&name, &labels, &mut out, &mut err)?)
        }
        Cmd::Label {
            kind,
            name,
            changes,
            namespace,
            overwrite,
        } => {
            require_cluster_files(&home)?;
            ok(api.label(
                &kind, &name, &namespace, &changes, overwrite, &mut out, &mut err,
            )?)
        }
        Cmd::Get {
            kind,
            names,
            namespace,
            all_namespaces,
            output: o,
        } => {
            require_cluster_files(&home)?;
            ok(output::get(
                &api,
                &kind,
                &names,
                &namespace,
                all_namespaces,
                format(o.as_deref()),
                &mut out,
                &mut err,
            )?)
        }
        Cmd::Run {
            name,
            namespace,
            node,
            serviceaccount,
            labels,
            port,
            command,
        } => {
            let labels = labels
                .iter()
                .map(|l| {
                    l.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .with_context(|| format!("label {l:?} is not key=value"))
                })
                .collect::<Result<Vec<_>>>()?;
            pods::run_pod(
                &home,
                &api,
                pods::RunOptions {
                    namespace,
                    name,
                    node,
                    service_account: serviceaccount,
                    labels,
                    ports: port,
                    command,
                },
            )?;
            ExitCode::SUCCESS
        }
        Cmd::Exec {
            pod,
            namespace,
            command,
        } => {
            let (ns, name) = split_pod(&pod, &namespace);
            let code = pods::exec(&home, &ns, &name, &command)?;
            ExitCode::from(code.clamp(0, 255) as u8)
        }
        Cmd::Logs {
            target,
            namespace,
            follow,
            tail,
        } => {
            let (ns, name) = split_pod(&target, &namespace);
            let path = pods::log_path(&home, &ns, &name)?;
            pods::logs(&path, follow, tail)?;
            ExitCode::SUCCESS
        }
        Cmd::Waypoint(w) => {
            require_cluster_files(&home)?;
            ok(match w {
                WaypointCmd::Apply {
                    namespace,
                    name,
                    enroll_namespace,
                    for_traffic,
                } => waypoint::apply(
                    &api,
                    &namespace,
                    &name,
                    enroll_namespace,
                    &for_traffic,
                    &mut out,
                    &mut err,
                )?,
                WaypointCmd::List {
                    namespace,
                    all_namespaces,
                } => waypoint::list(&api, &namespace, all_namespaces, &mut out, &mut err)?,
                WaypointCmd::Status { namespace, name } => {
                    waypoint::status(&api, &namespace, &name, &mut out, &mut err)?
                }
                WaypointCmd::Delete {
                    names,
                    namespace,
                    all,
                } => waypoint::delete(&api, &namespace, &names, all, &mut out, &mut err)?,
            })
        }
        Cmd::Zc {
            what,
            node,
            output: o,
        } => {
            zc::show(&home, what, node.as_deref(), format(o.as_deref()))?;
            ExitCode::SUCCESS
        }
        Cmd::Demo { no_tour } => {
            demo::run(&home, &api, !no_tour)?;
            ExitCode::SUCCESS
        }
        Cmd::Supervise => {
            let h = home.clone();
            let mut last_error = String::new();
            let waypoints = move || {
                let api = Api::new(h.config_dir(), h.status_dir());
                match cluster::waypoints::reconcile(&h, &api) {
                    Ok(changes) => {
                        for pod in changes.started {
                            supervisor::say(&format!("waypoint proxy {pod} created"));
                        }
                        for pod in changes.removed {
                            supervisor::say(&format!(
                                "waypoint proxy {pod} removed (its Gateway is gone)"
                            ));
                        }
                        last_error.clear();
                    }
                    Err(e) => {
                        let msg = format!("{e:#}");
                        if msg != last_error {
                            supervisor::say(&format!("waypoint proxies: {msg}"));
                            last_error = msg;
                        }
                    }
                }
            };
            supervisor::run(&home, vec![Box::new(waypoints)])?;
            ExitCode::SUCCESS
        }
    })
}

/// Object commands need a cluster's directory to write into.
fn require_cluster_files(home: &Home) -> Result<()> {
    if home::Record::load(home)?.is_none() {
        bail!(
            "no local cluster at {}: start one with `sudo meshctl up` (or set --home)",
            home.dir.display()
        );
    }
    Ok(())
}
