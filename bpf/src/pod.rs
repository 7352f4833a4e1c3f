//! Enrolling a pod: load the program, write its config, attach it to the pod's netns with a
//! BPF link, and pin link and maps under one directory per pod. The pins keep the capture alive
//! after the loader exits; removing them (see [`detach`]) ends it.

use std::{
    fs::{self, File},
    io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData},
    programs::{links::FdLink, SkLookup},
    Ebpf,
};

use crate::{
    bpffs::ensure_bpffs,
    object::{Counter, PodConfig, MAP_CFG, MAP_SOCKS, MAP_STATS, OBJECT, PROGRAM},
    Error,
};

/// What to capture and where to pin it.
#[derive(Clone, Debug)]
pub struct PodSpec {
    /// The pod's network namespace, e.g. `/run/netns/NAME` or `/proc/PID/ns/net`.
    pub netns: PathBuf,
    /// The pod's pin directory, e.g. `/sys/fs/bpf/<mesh>/<pod-uid>`.
    pub pin_dir: PinDir,
    pub pod_ip: Ipv4Addr,
    /// Drop new connections while the proxy's socket is missing (clients then retry their SYN).
    pub fail_closed: bool,
}

/// The files of one pod under bpffs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinDir(PathBuf);

const PIN_LINK: &str = "link";

impl PinDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The pinned BPF link: while it exists the program stays attached to the netns.
    pub fn link(&self) -> PathBuf {
        self.0.join(PIN_LINK)
    }

    pub fn cfg(&self) -> PathBuf {
        self.0.join(MAP_CFG)
    }

    pub fn socks(&self) -> PathBuf {
        self.0.join(MAP_SOCKS)
    }

    pub fn stats(&self) -> PathBuf {
        self.0.join(MAP_STATS)
    }

    /// Every file this crate pins, the link first so that removal detaches before anything else.
    fn files(&self) -> [PathBuf; 4] {
        [self.link(), self.cfg(), self.socks(), self.stats()]
    }
}

/// Loads, configures and attaches the capture program for one pod and pins it under
/// `spec.pin_dir`. On error nothing stays pinned or attached.
pub fn attach(spec: &PodSpec) -> Result<(), Error> {
    let pins = &spec.pin_dir;
    ensure_bpffs(pins.path())?;
    if pins.link().exists() {
        return Err(Error::AlreadyAttached { path: pins.link() });
    }
    let netns = File::open(&spec.netns)
        .map_err(|e| Error::io(format!("opening netns {}", spec.netns.display()), e))?;

    let mut bpf = Ebpf::load(OBJECT).map_err(Error::Load)?;
    write_config(
        &mut bpf,
        PodConfig::new(spec.pod_ip, true, spec.fail_closed),
    )?;

    let program: &mut SkLookup = bpf
        .program_mut(PROGRAM)
        .ok_or(Error::MissingInObject {
            kind: "program",
            name: PROGRAM,
        })?
        .try_into()
        .map_err(|source| Error::Program {
            context: "program is not sk_lookup",
            source,
        })?;
    program.load().map_err(|source| Error::Program {
        context: "verifier rejected the program",
        source,
    })?;
    let link_id = program.attach(&netns).map_err(|source| Error::Program {
        context: "attaching to the netns",
        source,
    })?;
    let link: FdLink = program
        .take_link(link_id)
        .map_err(|source| Error::Program {
            context: "taking the link",
            source,
        })?
        .into();

    fs::create_dir_all(pins.path())
        .map_err(|e| Error::io(format!("creating {}", pins.path().display()), e))?;
    pin_all(&bpf, link, pins).inspect_err(|_| {
        // Leave nothing half-pinned; the unpinned link detaches when dropped.
        let _ = detach(pins);
    })
}

fn write_config(bpf: &mut Ebpf, config: PodConfig) -> Result<(), Error> {
    let map = bpf.map_mut(MAP_CFG).ok_or(Error::MissingInObject {
        kind: "map",
        name: MAP_CFG,
    })?;
    let mut cfg: Array<_, PodConfig> =
        Array::try_from(map).map_err(|e| Error::map("opening cfg", e))?;
    cfg.set(0, config, 0)
        .map_err(|e| Error::map("writing cfg", e))
}

/// Pins maps first and the link last: a pinned link is the sign of a complete enrolment.
fn pin_all(bpf: &Ebpf, link: FdLink, pins: &PinDir) -> Result<(), Error> {
    for (name, path) in [
        (MAP_CFG, pins.cfg()),
        (MAP_SOCKS, pins.socks()),
        (MAP_STATS, pins.stats()),
    ] {
        let map = bpf
            .map(name)
            .ok_or(Error::MissingInObject { kind: "map", name })?;
        map.pin(&path)
            .map_err(|source| Error::Pin { path, source })?;
    }
    let path = pins.link();
    link.pin(&path)
        .map_err(|source| Error::Pin { path, source })?;
    Ok(())
}

/// Removes a pod's pins (detaching the program once no one else holds the link) and its
/// directory. Returns `false` if there was nothing to remove. Unknown files are left alone, and
/// then the directory stays and an error says why.
pub fn detach(pins: &PinDir) -> Result<bool, Error> {
    let mut removed = false;
    for path in pins.files() {
        match fs::remove_file(&path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("unpinning {}", path.display()), e)),
        }
    }
    match fs::remove_dir(pins.path()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(removed),
        Err(e) => Err(Error::io(format!("removing {}", pins.path().display()), e)),
    }
}

/// The pod's capture counters, read from its pinned `stats` map.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats([u64; Counter::ALL.len()]);

impl Stats {
    pub fn read(pins: &PinDir) -> Result<Self, Error> {
        let map = open_pinned(&pins.stats())?;
        let array: Array<_, u64> =
            Array::try_from(map).map_err(|e| Error::map("stats is not an array of u64", e))?;
        let mut stats = Stats::default();
        for counter in Counter::ALL {
            stats.0[counter as usize] = array
                .get(&(counter as u32), 0)
                .map_err(|e| Error::map(format!("reading stats[{}]", counter.name()), e))?;
        }
        Ok(stats)
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.0[counter as usize]
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut sep = "";
        for counter in Counter::ALL {
            write!(f, "{sep}{}={}", counter.name(), self.get(counter))?;
            sep = " ";
        }
        Ok(())
    }
}

/// Reads and replaces the pinned config, e.g. to switch a pod between fail-closed and fail-open.
pub fn set_config(pins: &PinDir, config: PodConfig) -> Result<(), Error> {
    let map = open_pinned(&pins.cfg())?;
    let mut cfg: Array<_, PodConfig> =
        Array::try_from(map).map_err(|e| Error::map("cfg has an unexpected layout", e))?;
    cfg.set(0, config, 0)
        .map_err(|e| Error::map("writing cfg", e))
}

pub(crate) fn open_pinned(path: &Path) -> Result<Map, Error> {
    let data = MapData::from_pin(path)
        .map_err(|e| Error::map(format!("opening pinned map {}", path.display()), e))?;
    Map::from_map_data(data).map_err(|e| Error::map(format!("map type of {}", path.display()), e))
}

/// Captures a pod: its routing first, then the program (fail-closed as `spec` says), so there
/// is no moment where the app's traffic is steered nowhere or leaves uncaptured because of us.
/// Idempotent: an already attached pod keeps its pins.
pub fn capture(spec: &PodSpec) -> Result<(), Error> {
    crate::routing::install(&spec.netns, spec.pod_ip)?;
    if spec.pin_dir.link().exists() {
        return Ok(());
    }
    attach(spec)
}

/// Ends a pod's capture: routing first (from then on its traffic flows normally), then the
/// pins. A netns that is already gone only leaves the pins to remove.
pub fn release(spec: &PodSpec) -> Result<(), Error> {
    if spec.netns.exists() {
        crate::routing::release(&spec.netns, spec.pod_ip)?;
    }
    detach(&spec.pin_dir).map(|_| ())
}
