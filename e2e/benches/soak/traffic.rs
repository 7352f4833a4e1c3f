//! The soak's traffic: client loops that run inside a client pod's network namespace (so the
//! node's ztunnel captures them like any app of the pod) and talk to `mesh-echo tcp-echo`
//! servers through the mesh. Every byte sent is a seeded pseudo-random byte; every byte that
//! comes back is compared with it, so the loops count bytes sent, bytes verified and bytes
//! corrupted exactly. Each connection that does not end cleanly (its bytes all back, then the
//! server's FIN after ours) is a failure, recorded with the time, the phase and the reason.
//!
//! Two shapes: `Long` keeps one connection for 1-3 minutes, exchanging up to 16 KiB every
//! 40 ms; `Short` opens a connection, sends up to 128 KiB in chunks, half-closes and expects
//! everything back and then EOF, every 100 ms.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::seeded::Seeded;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a read or write may wait before the connection counts as stalled.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const LONG_ROUND_PAUSE: Duration = Duration::from_millis(40);
const SHORT_PAUSE: Duration = Duration::from_millis(100);
/// After a failure, before the next connection.
const BACKOFF: Duration = Duration::from_millis(250);
const MAX_CHUNK: u64 = 16 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Long,
    Short,
}

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Long => "long",
            Shape::Short => "short",
        }
    }
}

/// One client loop: from which pod to which destination, in which shape.
#[derive(Clone, Debug)]
pub struct Route {
    pub client: String,
    pub client_node: u8,
    pub netns: PathBuf,
    /// `server-1`, `server-2` or `vip`.
    pub target: String,
    pub addr: SocketAddr,
    /// The nodes whose server may answer (both for the service VIP).
    pub server_nodes: Vec<u8>,
    pub shape: Shape,
    pub seed: u64,
}

impl Route {
    pub fn label(&self) -> String {
        format!("{} -> {} ({})", self.client, self.target, self.shape.name())
    }
}

/// A connection that did not end cleanly.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Seconds since the soak started.
    pub at: f64,
    pub route: Route,
    /// `connect: refused`, `read: reset`, `read: closed early`, `verify: corrupt`, ...
    pub reason: String,
    pub detail: String,
    /// Bytes of this connection verified before it failed.
    pub verified: u64,
}

/// What one loop did.
#[derive(Default)]
pub struct Tally {
    /// One line per loop: its label and its own figures (filled by `merge`).
    pub per_route: Vec<String>,
    /// Seconds since the start of this loop's last clean connection.
    pub last_ok: f64,
    pub opened: u64,
    pub ok: u64,
    pub failed: u64,
    pub sent: u64,
    pub verified: u64,
    pub corrupted: u64,
    pub failures: Vec<Failure>,
}

/// Why a connection ended badly (turned into a [`Failure`] by the loop).
struct Fail {
    phase: &'static str,
    kind: &'static str,
    detail: String,
}

impl Fail {
    fn io(phase: &'static str, e: &std::io::Error) -> Fail {
        let kind = match e.kind() {
            ErrorKind::ConnectionRefused => "refused",
            ErrorKind::ConnectionReset => "reset",
            ErrorKind::ConnectionAborted => "aborted",
            ErrorKind::BrokenPipe => "broken pipe",
            ErrorKind::TimedOut | ErrorKind::WouldBlock => "timeout",
            ErrorKind::UnexpectedEof => "closed early",
            ErrorKind::NotConnected => "not connected",
            ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => "unreachable",
            _ => "other",
        };
        Fail {
            phase,
            kind,
            detail: e.to_string(),
        }
    }
}

/// Runs one loop until `stop`, inside the route's network namespace.
pub fn run(route: Route, start: Instant, stop: Arc<AtomicBool>) -> Tally {
    let netns = route.netns.clone();
    let inner = route.clone();
    match mesh_bpf::netns::run_in(&netns, move || drive(&inner, start, &stop)) {
        Ok(tally) => tally,
        Err(e) => Tally {
            failed: 1,
            failures: vec![Failure {
                at: start.elapsed().as_secs_f64(),
                route,
                reason: "setns: failed".into(),
                detail: e.to_string(),
                verified: 0,
            }],
            ..Tally::default()
        },
    }
}

/// One short connection on the route's path: whether it echoes (readiness before the soak).
pub fn probe(route: &Route) -> Result<(), String> {
    mesh_bpf::netns::run_in(&route.netns, || {
        let mut rng = Seeded::new(route.seed);
        let mut conn = Connection {
            stream_rng: Seeded::new(rng.next()),
            verified: 0,
        };
        conn.short(route.addr, &mut rng, &mut Tally::default())
            .map_err(|f| format!("{}: {}: {}", f.phase, f.kind, f.detail))
    })
    .map_err(|e| e.to_string())?
}

impl Tally {
    pub fn merge(&mut self, route: &Route, other: Tally) {
        self.per_route.push(format!(
            "{:34} opened {:6}  ok {:6}  failed {:5}  verified {:11} B  last ok at {:.1} s",
            route.label(),
            other.opened,
            other.ok,
            other.failed,
            other.verified,
            other.last_ok
        ));
        self.opened += other.opened;
        self.ok += other.ok;
        self.failed += other.failed;
        self.sent += other.sent;
        self.verified += other.verified;
        self.corrupted += other.corrupted;
        self.failures.extend(other.failures);
    }
}

fn drive(route: &Route, start: Instant, stop: &AtomicBool) -> Tally {
    let mut rng = Seeded::new(route.seed);
    let mut tally = Tally::default();
    while !stop.load(Ordering::Relaxed) {
        tally.opened += 1;
        let mut conn = Connection {
            stream_rng: Seeded::new(rng.next()),
            verified: 0,
        };
        let outcome = match route.shape {
            Shape::Long => conn.long(route.addr, &mut rng, &mut tally, stop),
            Shape::Short => conn.short(route.addr, &mut rng, &mut tally),
        };
        match outcome {
            Ok(()) => {
                tally.ok += 1;
                tally.last_ok = start.elapsed().as_secs_f64();
                if route.shape == Shape::Short {
                    std::thread::sleep(SHORT_PAUSE);
                }
            }
            Err(f) => {
                tally.failed += 1;
                tally.failures.push(Failure {
                    at: start.elapsed().as_secs_f64(),
                    route: route.clone(),
                    reason: format!("{}: {}", f.phase, f.kind),
                    detail: f.detail,
                    verified: conn.verified,
                });
                std::thread::sleep(BACKOFF);
            }
        }
    }
    tally
}

/// One connection's state: the generator of the bytes it sends, and how many came back intact.
struct Connection {
    stream_rng: Seeded,
    verified: u64,
}

impl Connection {
    fn open(addr: SocketAddr) -> Result<TcpStream, Fail> {
        let s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| Fail::io("connect", &e))?;
        let setup = || -> std::io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(IO_TIMEOUT))?;
            s.set_write_timeout(Some(IO_TIMEOUT))
        };
        setup().map_err(|e| Fail::io("connect", &e))?;
        Ok(s)
    }

    fn long(
        &mut self,
        addr: SocketAddr,
        rng: &mut Seeded,
        tally: &mut Tally,
        stop: &AtomicBool,
    ) -> Result<(), Fail> {
        let life = Duration::from_secs(rng.between(60, 180));
        let opened = Instant::now();
        let mut stream = Self::open(addr)?;
        while opened.elapsed() < life && !stop.load(Ordering::Relaxed) {
            let len = rng.between(1, MAX_CHUNK) as usize;
            self.exchange(&mut stream, len, tally)?;
            std::thread::sleep(LONG_ROUND_PAUSE);
        }
        self.close(&mut stream, tally)
    }

    fn short(&mut self, addr: SocketAddr, rng: &mut Seeded, tally: &mut Tally) -> Result<(), Fail> {
        let total = rng.between(1, 8 * MAX_CHUNK);
        let mut stream = Self::open(addr)?;
        let mut left = total;
        while left > 0 {
            let len = rng.between(1, MAX_CHUNK).min(left);
            self.exchange(&mut stream, len as usize, tally)?;
            left -= len;
        }
        self.close(&mut stream, tally)
    }

    /// Sends `len` bytes of the stream and reads them back, comparing each byte.
    fn exchange(
        &mut self,
        stream: &mut TcpStream,
        len: usize,
        tally: &mut Tally,
    ) -> Result<(), Fail> {
        let mut sent = vec![0u8; len];
        self.stream_rng.fill(&mut sent);
        stream.write_all(&sent).map_err(|e| Fail::io("write", &e))?;
        tally.sent += len as u64;
        let mut got = vec![0u8; len];
        let mut have = 0;
        while have < len {
            let n = match stream.read(&mut got[have..]) {
                Ok(0) => {
                    return Err(Fail {
                        phase: "read",
                        kind: "closed early",
                        detail: format!("EOF after {have} of {len} bytes of an exchange"),
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::io("read", &e)),
            };
            let bad = sent[have..have + n]
                .iter()
                .zip(&got[have..have + n])
                .filter(|(a, b)| a != b)
                .count() as u64;
            tally.verified += n as u64 - bad;
            self.verified += n as u64 - bad;
            if bad > 0 {
                tally.corrupted += bad;
                return Err(Fail {
                    phase: "verify",
                    kind: "corrupt",
                    detail: format!(
                        "{bad} of {n} bytes differ at offset {} of the connection",
                        self.verified + have as u64
                    ),
                });
            }
            have += n;
        }
        Ok(())
    }

    /// Half-closes and expects the server's FIN with no byte before it.
    fn close(&mut self, stream: &mut TcpStream, tally: &mut Tally) -> Result<(), Fail> {
        stream
            .shutdown(Shutdown::Write)
            .map_err(|e| Fail::io("close", &e))?;
        let mut extra = [0u8; 4096];
        match stream.read(&mut extra) {
            Ok(0) => Ok(()),
            Ok(n) => {
                tally.corrupted += n as u64;
                Err(Fail {
                    phase: "verify",
                    kind: "corrupt",
                    detail: format!("{n} bytes after every byte sent had come back"),
                })
            }
            Err(e) => Err(Fail::io("close", &e)),
        }
    }
}
