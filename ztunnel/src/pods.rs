//! The pods of this node and what ztunnel does for each (the node-agent side of ztunnel).
//!
//! The CNI plugin reports every pod it sees (`mesh_core::node`); whether a pod is captured
//! follows its workload in xDS, matched by namespace, name and IP as Istio matches by
//! `WorkloadInfo`:
//!
//! * the workload is HBONE: capture (idempotent: routing then program, fail-closed) and serve it
//!   with a pod proxy;
//! * the workload is known and not HBONE (its namespace was unlabelled, or it opted out): stop
//!   serving and release the capture, so its traffic flows as before;
//! * the workload is not known (yet): leave things as they are. A pod the plugin captured stays
//!   fail-closed: its connections wait until it is served.
//!
//! At start, records of pods whose netns is gone are dropped with their pins, and pin
//! directories without a record are removed (ztunnel's garbage collection).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use mesh_bpf::{PinDir, PodSpec};
use mesh_core::node::{self, NodePaths, PodRecord};
use serde::Serialize;

use crate::inpod::{self, PodProxy, Shared};

/// Where one pod stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "detail")]
pub enum PodState {
    /// Captured and served by this ztunnel.
    Serving,
    /// Captured (connections wait) until its workload arrives over xDS.
    WaitingForWorkload,
    /// Not captured: its workload is not enrolled.
    NotEnrolled,
    /// Not captured, and xDS does not know the pod (yet).
    Unknown,
    /// The last attempt failed; retried on the next change or tick.
    Failed(String),
}

struct Entry {
    record: PodRecord,
    proxy: Option<PodProxy>,
    state: PodState,
}

/// A pod as the admin endpoint shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PodView {
    pub container_id: String,
    pub namespace: String,
    pub name: String,
    pub ip: std::net::Ipv4Addr,
    pub netns: String,
    #[serde(flatten)]
    pub state: PodState,
}

pub struct Pods {
    shared: Arc<Shared>,
    paths: NodePaths,
    node: String,
    entries: Mutex<BTreeMap<String, Entry>>,
}

/// What [`Pods::recover`] found at start.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub pods: usize,
    pub gone: usize,
    pub stale_pins: usize,
    pub bad_records: usize,
}

enum Want {
    Serve(String),
    Release,
    Unknown,
}

impl Pods {
    pub fn new(shared: Arc<Shared>, paths: NodePaths, node: &str) -> Arc<Pods> {
        Arc::new(Pods {
            shared,
            paths,
            node: node.to_string(),
            entries: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn paths(&self) -> &NodePaths {
        &self.paths
    }

    fn spec(&self, record: &PodRecord) -> PodSpec {
        PodSpec {
            netns: record.netns.clone(),
            pin_dir: PinDir::new(self.paths.pins(&record.container_id)),
            pod_ip: record.ip,
            fail_closed: true,
        }
    }

    /// Loads the records the plugin wrote, dropping pods that are gone and pins no record
    /// explains. Call once, before serving requests.
    pub fn recover(&self) -> Recovered {
        let mut report = Recovered::default();
        let mut entries = self.lock();
        for record in node::read_records(&self.paths) {
            let record = match record {
                Ok(r) if node::valid_container_id(&r.container_id) => r,
                Ok(r) => {
                    tracing::error!(container = %r.container_id, "pod record with an invalid container id; ignored");
                    report.bad_records += 1;
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "unreadable pod record; ignored");
                    report.bad_records += 1;
                    continue;
                }
            };
            if !record.netns.exists() {
                tracing::info!(container = %record.container_id, pod = %format!("{}/{}", record.namespace, record.name),
                    "pod is gone (its netns no longer exists): removing its pins and record");
                let _ = mesh_bpf::pod::detach(&self.spec(&record).pin_dir);
                let _ = node::remove_record(&self.paths, &record.container_id);
                report.gone += 1;
                continue;
            }
            let state = if self.spec(&record).pin_dir.link().exists() {
                PodState::WaitingForWorkload
            } else {
                PodState::Unknown
            };
            entries.insert(
                record.container_id.clone(),
                Entry {
                    record,
                    proxy: None,
                    state,
                },
            );
        }
        if let Ok(dir) = std::fs::read_dir(&self.paths.pin_root) {
            for e in dir.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                if e.path().is_dir() && !entries.contains_key(&id) {
                    match mesh_bpf::pod::detach(&PinDir::new(e.path())) {
                        Ok(_) => {
                            tracing::info!(pins = %e.path().display(), "removed the pins of a pod that no longer exists");
                            report.stale_pins += 1;
                        }
                        Err(err) => {
                            tracing::warn!(pins = %e.path().display(), error = %err, "could not remove stale pins")
                        }
                    }
                }
            }
        }
        report.pods = entries.len();
        tracing::info!(?report, "recovered the node's pods");
        report
    }

    /// Picks up records written while ztunnel could not be told (added), and forgets pods whose
    /// record the plugin removed (deleted).
    pub fn rescan(&self) {
        let mut on_disk = std::collections::BTreeSet::new();
        for record in node::read_records(&self.paths).into_iter().flatten() {
            on_disk.insert(record.container_id.clone());
            let known = self.lock().contains_key(&record.container_id);
            if !known && node::valid_container_id(&record.container_id) && record.netns.exists() {
                tracing::info!(container = %record.container_id, "found a pod record nobody told us about");
                self.add(record);
            }
        }
        let gone: Vec<String> = self
            .lock()
            .keys()
            .filter(|id| !on_disk.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.del(&id);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A pod the plugin just added (or re-added); returns where it stands now.
    pub fn add(&self, record: PodRecord) -> PodState {
        let id = record.container_id.clone();
        let mut entries = self.lock();
        let entry = entries.entry(id.clone()).or_insert_with(|| Entry {
            record: record.clone(),
            proxy: None,
            state: PodState::Unknown,
        });
        if entry.record != record {
            // A different netns or IP for the same sandbox: start over.
            entry.proxy = None;
            entry.record = record;
        }
        self.reconcile_entry(entry);
        entry.state.clone()
    }

    /// A pod the plugin deleted: stop serving it and release what is left of its capture.
    pub fn del(&self, container_id: &str) -> bool {
        let Some(entry) = self.lock().remove(container_id) else {
            return false;
        };
        if entry.proxy.is_some() {
            self.shared.metrics.proxies_stopped.inc();
        }
        drop(entry.proxy);
        if let Err(e) = mesh_bpf::release(&self.spec(&entry.record)) {
            tracing::warn!(container = %container_id, error = %e, "releasing the capture of a deleted pod");
        }
        tracing::info!(container = %container_id, pod = %format!("{}/{}", entry.record.namespace, entry.record.name), "pod removed");
        true
    }

    /// Brings every pod in line with the current xDS state.
    pub fn reconcile(&self) {
        let mut entries = self.lock();
        for entry in entries.values_mut() {
            self.reconcile_entry(entry);
        }
        let pending = entries
            .values()
            .filter(|e| e.state == PodState::WaitingForWorkload)
            .count();
        self.shared.metrics.proxies_pending.set(pending as i64);
    }

    fn want(&self, record: &PodRecord) -> Want {
        let st = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        match st.workload_by_ip("", IpAddr::V4(record.ip)) {
            Some(w)
                if w.namespace == record.namespace
                    && w.name == record.name
                    && (w.node.is_empty() || w.node == self.node) =>
            {
                if w.hbone {
                    Want::Serve(w.uid.clone())
                } else {
                    Want::Release
                }
            }
            _ => Want::Unknown,
        }
    }

    fn reconcile_entry(&self, entry: &mut Entry) {
        let spec = self.spec(&entry.record);
        let pod = format!("{}/{}", entry.record.namespace, entry.record.name);
        match self.want(&entry.record) {
            Want::Serve(uid) => {
                if entry.proxy.as_ref().is_some_and(|p| p.uid == uid)
                    && spec.pin_dir.link().exists()
                {
                    entry.state = PodState::Serving;
                    return;
                }
                entry.proxy = None;
                let started = mesh_bpf::capture(&spec)
                    .map_err(|e| format!("capture: {e}"))
                    .and_then(|()| {
                        inpod::start(
                            self.shared.clone(),
                            &uid,
                            &entry.record.netns,
                            &spec.pin_dir,
                        )
                        .map_err(|e| e.to_string())
                    });
                match started {
                    Ok(proxy) => {
                        self.shared.metrics.proxies_started.inc();
                        tracing::info!(%pod, container = %entry.record.container_id, "pod captured and served");
                        entry.proxy = Some(proxy);
                        entry.state = PodState::Serving;
                    }
                    Err(e) => {
                        tracing::error!(%pod, error = %e, "could not serve an enrolled pod (its connections wait; retrying)");
                        entry.state = PodState::Failed(e);
                    }
                }
            }
            Want::Release => {
                let was_captured = entry.proxy.is_some() || spec.pin_dir.link().exists();
                if entry.proxy.take().is_some() {
                    self.shared.metrics.proxies_stopped.inc();
                }
                if was_captured {
                    match mesh_bpf::release(&spec) {
                        Ok(()) => {
                            tracing::info!(%pod, "pod no longer enrolled: capture released")
                        }
                        Err(e) => {
                            tracing::error!(%pod, error = %e, "releasing the capture");
                            entry.state = PodState::Failed(format!("release: {e}"));
                            return;
                        }
                    }
                }
                entry.state = PodState::NotEnrolled;
            }
            Want::Unknown => {
                entry.state = if entry.proxy.is_some() {
                    PodState::Serving
                } else if spec.pin_dir.link().exists() {
                    PodState::WaitingForWorkload
                } else {
                    PodState::Unknown
                };
            }
        }
    }

    pub fn view(&self) -> Vec<PodView> {
        self.lock()
            .values()
            .map(|e| PodView {
                container_id: e.record.container_id.clone(),
                namespace: e.record.namespace.clone(),
                name: e.record.name.clone(),
                ip: e.record.ip,
                netns: e.record.netns.display().to_string(),
                state: e.state.clone(),
            })
            .collect()
    }

    pub fn active(&self) -> usize {
        self.lock().values().filter(|e| e.proxy.is_some()).count()
    }
}

/// Checks that a path names a network namespace we can open (for requests from the plugin).
pub fn netns_exists(path: &Path) -> bool {
    std::fs::File::open(path).is_ok()
}
