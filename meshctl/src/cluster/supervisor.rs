//! The supervisor: one background `meshctl supervise` process per cluster that runs istiod-lite
//! (in node 1), a ztunnel per node and every pod's process, and restarts whichever exits, with
//! a growing delay (1 s doubling to 30 s, back to 1 s after a minute up). Each exit and restart
//! is said in `<home>/logs/supervisor.log` and counted in `<home>/status.json`, which
//! `meshctl status` and `meshctl get pods` read.
//!
//! It is told what to run by files: the cluster record and the pod records in `<home>/pods`;
//! it stops (and stops everything) when `<home>/stop` appears. Work that makes pods (the
//! waypoint proxies of `waypoints.rs`, a module above this one) is handed in as background
//! passes, each run every [`PASS_INTERVAL`] on a thread of its own while the loop goes on.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use mesh_core::cluster_dir::{write_atomic, ClusterDirError};

use super::home::{
    node_name, node_netns, pin_root, supervisor_alive, underlay_ip, xds_address, ComponentStatus,
    Home, HomeError, PodRecord, Record, Status,
};
use super::host::{netns_path, wait_for, Timeout};

/// Why the supervisor could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error("locating meshctl's binary")]
    Exe(#[source] std::io::Error),
    #[error("creating {}", path.display())]
    Log {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("starting the supervisor")]
    Spawn(#[source] std::io::Error),
    #[error(transparent)]
    NotReady(#[from] Timeout<String>),
    #[error("no cluster record: `meshctl up` makes one")]
    NoRecord,
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error(transparent)]
    Write(#[from] ClusterDirError),
}

const TICK: Duration = Duration::from_millis(200);
const FIRST_DELAY: Duration = Duration::from_secs(1);
const MAX_DELAY: Duration = Duration::from_secs(30);
const STABLE: Duration = Duration::from_secs(60);
/// Between two runs of a background pass.
pub const PASS_INTERVAL: Duration = Duration::from_secs(2);

/// Work the supervisor runs again and again beside its loop (see the module comment).
pub type Pass = Box<dyn FnMut() + Send>;

/// One process to keep running.
struct Spec {
    netns: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// Not started before this file exists (ztunnel needs istiod-lite's root certificate).
    after: Option<PathBuf>,
}

struct Process {
    spec: Spec,
    child: Option<Child>,
    status: ComponentStatus,
    started_at: Instant,
    /// When to start again after an exit.
    restart_at: Option<Instant>,
    delay: Duration,
}

/// Starts the supervisor in the background and waits until it has written its pid.
pub fn start_daemon(home: &Home) -> Result<(), SupervisorError> {
    let exe = std::env::current_exe().map_err(SupervisorError::Exe)?;
    let _ = std::fs::remove_file(home.stop_file());
    let path = home.log("supervisor");
    let log_failed = |source| SupervisorError::Log {
        path: path.clone(),
        source,
    };
    let log = std::fs::File::create(&path).map_err(log_failed)?;
    let child = Command::new(exe)
        .arg("--home")
        .arg(&home.dir)
        .arg("supervise")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(log_failed)?)
        .stderr(log)
        // Its own process group: a Ctrl-C in the terminal that ran `up` does not reach it.
        .process_group(0)
        .spawn()
        .map_err(SupervisorError::Spawn)?;
    let pid = child.id();
    // The supervisor outlives us; its exit status is collected by init.
    drop(child);
    wait_for("the supervisor to start", Duration::from_secs(10), || {
        if supervisor_alive(home) && Status::load(home).is_some() {
            Ok(())
        } else {
            Err(format!("no status yet from pid {pid}"))
        }
    })?;
    Ok(())
}

/// Asks the supervisor to stop everything, waits for it, and kills it if it does not.
pub fn stop_daemon(home: &Home) {
    if !home.dir.exists() {
        return;
    }
    let _ = std::fs::write(home.stop_file(), b"");
    let pid = std::fs::read_to_string(home.supervisor_pid())
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok());
    let end = Instant::now() + Duration::from_secs(10);
    while supervisor_alive(home) && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    if supervisor_alive(home) {
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
    // Whatever it left (killed with -9 it could not stop its children).
    if let Some(status) = Status::load(home) {
        for c in status.components {
            if let Some(pid) = c.pid {
                if is_ours(pid) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                }
            }
        }
    }
}

/// A pid is still one of our binaries (not a reused pid).
fn is_ours(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        ["istiod-lite", "ztunnel", "waypoint", "mesh-echo", "nsenter"]
            .iter()
            .any(|b| c.contains(b))
    })
}

fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "unknown exit".to_string(),
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A line of the supervisor's log, with the time.
pub fn say(msg: &str) {
    let t = now_unix();
    println!("{t} {msg}");
}

/// The processes the cluster should have now.
fn wanted(home: &Home, record: &Record) -> BTreeMap<String, Spec> {
    let mut out = BTreeMap::new();
    let bins = &record.bins;
    out.insert(
        "istiod-lite".to_string(),
        Spec {
            netns: node_netns(1),
            program: bins.join("istiod-lite"),
            args: vec![
                format!("--config-dir={}", home.config_dir().display()),
                format!("--state-dir={}", home.istiod_dir().display()),
                format!("--xds-addr={}:15012", underlay_ip(1)),
                "--monitoring-addr=127.0.0.1:15014".to_string(),
                format!("--server-san={}", underlay_ip(1)),
            ],
            env: vec![],
            log: home.log("istiod-lite"),
            after: None,
        },
    );
    for i in 1..=record.nodes {
        out.insert(
            format!("ztunnel-{}", node_name(i)),
            Spec {
                netns: node_netns(i),
                program: bins.join("ztunnel"),
                args: vec![
                    format!("--xds-address={}", xds_address()),
                    format!(
                        "--root-cert={}",
                        home.istiod_dir().join("ca/root-cert.pem").display()
                    ),
                    format!("--token-file={}", home.token_file(i).display()),
                    format!("--node-name={}", node_name(i)),
                    format!("--run-dir={}", home.run_dir(i).display()),
                    format!("--pin-root={}", pin_root(i).display()),
                ],
                env: vec![],
                log: home.log(&format!("ztunnel-{}", node_name(i))),
                after: Some(home.istiod_dir().join("ca/root-cert.pem")),
            },
        );
    }
    for pod in PodRecord::list(home) {
        let Some((program, args)) = pod.command.split_first() else {
            continue;
        };
        out.insert(
            pod.component(),
            Spec {
                netns: pod.netns.clone(),
                program: PathBuf::from(program),
                args: args.to_vec(),
                env: pod.env(bins),
                log: pod.log(home),
                after: None,
            },
        );
    }
    out
}

fn spawn(spec: &Spec) -> std::io::Result<Child> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    Command::new("nsenter")
        .arg(format!("--net={}", netns_path(&spec.netns).display()))
        .arg("--")
        .arg(&spec.program)
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
        )
        // Plain log files, no terminal colours.
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
}

/// The supervisor's loop (`meshctl supervise`); returns when told to stop.
pub fn run(home: &Home, passes: Vec<Pass>) -> Result<(), SupervisorError> {
    let record = Record::load(home)?.ok_or(SupervisorError::NoRecord)?;
    write_atomic(
        &home.supervisor_pid(),
        std::process::id().to_string().as_bytes(),
    )?;
    say(&format!("supervisor {} started", std::process::id()));
    for mut pass in passes {
        let stop = home.stop_file();
        // Not joined: a pass may be waiting on this loop when it ends; the process exit ends it.
        std::thread::spawn(move || {
            while !stop.exists() {
                pass();
                std::thread::sleep(PASS_INTERVAL);
            }
        });
    }
    let mut procs: BTreeMap<String, Process> = BTreeMap::new();
    loop {
        if home.stop_file().exists() {
            break;
        }
        let mut want = wanted(home, &record);
        // Gone from the wanted set (a deleted pod): stop it.
        let gone: Vec<String> = procs
            .keys()
            .filter(|k| !want.contains_key(*k))
            .cloned()
            .collect();
        for name in gone {
            if let Some(mut p) = procs.remove(&name) {
                if let Some(c) = p.child.as_mut() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                say(&format!("{name} stopped (removed)"));
            }
        }
        for (name, spec) in std::mem::take(&mut want) {
            let p = procs.entry(name.clone()).or_insert_with(|| Process {
                spec,
                child: None,
                status: ComponentStatus {
                    name: name.clone(),
                    state: "restarting".into(),
                    ..Default::default()
                },
                started_at: Instant::now(),
                restart_at: Some(Instant::now()),
                delay: FIRST_DELAY,
            });
            tend(&name, p);
        }
        let status = Status {
            supervisor_pid: std::process::id(),
            components: procs.values().map(|p| p.status.clone()).collect(),
        };
        if let Ok(bytes) = serde_json::to_vec_pretty(&status) {
            let _ = write_atomic(&home.status_file(), &bytes);
        }
        std::thread::sleep(TICK);
    }
    for (name, p) in procs.iter_mut() {
        if let Some(c) = p.child.as_mut() {
            // SIGTERM first: ztunnel and istiod-lite stop cleanly on it.
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
            say(&format!("{name} stopped"));
        }
    }
    let _ = std::fs::remove_file(home.status_file());
    let _ = std::fs::remove_file(home.supervisor_pid());
    say("supervisor stopped");
    Ok(())
}

/// Starts, watches and restarts one process.
fn tend(name: &str, p: &mut Process) {
    if let Some(c) = p.child.as_mut() {
        match c.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) => {
                let how = describe(status);
                let up_for = p.started_at.elapsed();
                p.delay = if up_for > STABLE {
                    FIRST_DELAY
                } else {
                    (p.delay * 2).min(MAX_DELAY)
                };
                say(&format!(
                    "{name} exited ({how}) after {} s; restarting in {} s",
                    up_for.as_secs(),
                    p.delay.as_secs()
                ));
                p.child = None;
                p.status.pid = None;
                p.status.state = "restarting".into();
                p.status.last_exit = Some(how);
                p.restart_at = Some(Instant::now() + p.delay);
            }
            Err(e) => {
                say(&format!("{name}: cannot watch pid: {e}"));
                return;
            }
        }
    }
    let Some(at) = p.restart_at else { return };
    if Instant::now() < at || p.spec.after.as_ref().is_some_and(|f| !f.exists()) {
        return;
    }
    match spawn(&p.spec) {
        Ok(child) => {
            if p.status.last_exit.is_some() {
                p.status.restarts += 1;
                say(&format!("{name} restarted (restart {})", p.status.restarts));
            } else {
                say(&format!("{name} started"));
            }
            p.status.pid = Some(child.id());
            p.status.state = "running".into();
            p.status.started = now_unix();
            p.started_at = Instant::now();
            p.restart_at = None;
            p.child = Some(child);
        }
        Err(e) => {
            p.delay = (p.delay * 2).min(MAX_DELAY);
            p.status.state = "restarting".into();
            p.status.last_exit = Some(format!("could not start: {e}"));
            p.restart_at = Some(Instant::now() + p.delay);
            say(&format!(
                "{name}: could not start {}: {e}; trying again in {} s",
                p.spec.program.display(),
                p.delay.as_secs()
            ));
        }
    }
}
