//! `mesh-echo relay`: the plainest TCP forwarders there are, the floor the data-path benchmark
//! compares ztunnel with. No encryption, no framing, no policy: bytes in, bytes out. Two of them
//! in the places ztunnel's sockets live (the client pod and the server pod) cost what two extra
//! hops cost on the machine, before anything a mesh does.
//!
//! Two designs ([`Mode`]):
//! * `event-loop`: one thread, one epoll loop (tokio's current-thread runtime), each connection
//!   copied both ways with 64 KiB buffers. The design of ztunnel and of every production proxy.
//! * `threads`: two blocking threads per connection, one per direction, each a `read` followed
//!   by `write_all`. The fewest system calls per message (no epoll), at the price of a thread
//!   wakeup per message.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

/// Size of each direction's buffer.
const BUFFER: usize = 64 * 1024;

/// How a relay carries its connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    EventLoop,
    Threads,
}

/// One listening address and where its connections go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub to: SocketAddr,
}

impl std::str::FromStr for Forward {
    type Err = String;

    /// `LISTEN=TO`, e.g. `127.0.0.1:18080=10.0.0.2:8080`.
    fn from_str(s: &str) -> Result<Forward, String> {
        let (listen, to) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected LISTEN=TO, e.g. 127.0.0.1:18080=10.0.0.2:8080")
        })?;
        let addr = |a: &str| {
            a.parse::<SocketAddr>()
                .map_err(|e| format!("{a:?} in {s:?}: {e} (want ip:port)"))
        };
        Ok(Forward {
            listen: addr(listen)?,
            to: addr(to)?,
        })
    }
}

/// Binds every listener (so a bad address fails before anything runs), then forwards until the
/// process ends. Only returns on an error that stops it (binding, starting the event loop).
pub fn run(forwards: &[Forward], mode: Mode) -> std::io::Result<()> {
    let mut listeners = Vec::with_capacity(forwards.len());
    for f in forwards {
        let listener = TcpListener::bind(f.listen).map_err(|e| {
            std::io::Error::new(e.kind(), format!("listening on {}: {e}", f.listen))
        })?;
        listeners.push((listener, f.to));
    }
    match mode {
        Mode::Threads => run_threads(listeners),
        Mode::EventLoop => run_event_loop(listeners),
    }
}

fn run_event_loop(listeners: Vec<(TcpListener, SocketAddr)>) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async move {
        let mut accepts = tokio::task::JoinSet::new();
        for (listener, to) in listeners {
            listener.set_nonblocking(true)?;
            let listener = tokio::net::TcpListener::from_std(listener)?;
            accepts.spawn(async move {
                loop {
                    match listener.accept().await {
                        Ok((inbound, peer)) => {
                            tokio::spawn(async move {
                                if let Err(e) = relay_async(inbound, to).await {
                                    tracing::debug!(%peer, %to, "relay ended: {e}");
                                }
                            });
                        }
                        Err(e) => {
                            tracing::warn!(listen = ?listener.local_addr().ok(), "accept: {e}")
                        }
                    }
                }
            });
        }
        while accepts.join_next().await.is_some() {}
        Ok(())
    })
}

async fn relay_async(mut inbound: tokio::net::TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let mut outbound = tokio::net::TcpStream::connect(to).await?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    tokio::io::copy_bidirectional_with_sizes(&mut inbound, &mut outbound, BUFFER, BUFFER).await?;
    Ok(())
}

fn run_threads(listeners: Vec<(TcpListener, SocketAddr)>) -> std::io::Result<()> {
    let accept_threads: Vec<_> = listeners
        .into_iter()
        .map(|(listener, to)| thread::spawn(move || accept_loop(listener, to)))
        .collect();
    for t in accept_threads {
        let _ = t.join();
    }
    Ok(())
}

fn accept_loop(listener: TcpListener, to: SocketAddr) {
    loop {
        match listener.accept() {
            Ok((inbound, peer)) => {
                thread::spawn(move || {
                    if let Err(e) = relay(inbound, to) {
                        tracing::debug!(%peer, %to, "relay ended: {e}");
                    }
                });
            }
            // Out of descriptors or a connection reset before accept: keep serving the rest.
            Err(e) => tracing::warn!(listen = ?listener.local_addr().ok(), "accept: {e}"),
        }
    }
}

/// Connects to `to` and copies both ways until both sides have finished sending.
fn relay(inbound: TcpStream, to: SocketAddr) -> std::io::Result<()> {
    let outbound = TcpStream::connect(to)?;
    inbound.set_nodelay(true)?;
    outbound.set_nodelay(true)?;
    let (in_read, out_write) = (inbound.try_clone()?, outbound.try_clone()?);
    let upstream = thread::spawn(move || pump(in_read, out_write));
    let downstream = pump(outbound, inbound);
    let upstream = upstream.join().unwrap_or(Ok(()));
    downstream.and(upstream)
}

/// Copies `from` to `to`; at end of stream passes the FIN on (half-close), on error resets both.
fn pump(mut from: TcpStream, mut to: TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return to.shutdown(Shutdown::Write),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = to.shutdown(Shutdown::Both);
                return Err(e);
            }
        };
        if let Err(e) = to.write_all(&buf[..n]) {
            let _ = from.shutdown(Shutdown::Both);
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_parses_and_names_bad_input() {
        let f: Forward = "127.0.0.1:18080=10.0.0.2:8080".parse().unwrap();
        assert_eq!(f.listen, "127.0.0.1:18080".parse().unwrap());
        assert_eq!(f.to, "10.0.0.2:8080".parse().unwrap());
        let e = "127.0.0.1:18080".parse::<Forward>().unwrap_err();
        assert!(e.contains("LISTEN=TO"), "{e}");
        let e = "127.0.0.1:18080=nowhere".parse::<Forward>().unwrap_err();
        assert!(e.contains("\"nowhere\""), "{e}");
    }

    #[test]
    fn relays_both_ways_and_passes_half_close() {
        for mode in [Mode::Threads, Mode::EventLoop] {
            relay_round_trip(mode);
        }
    }

    fn relay_round_trip(mode: Mode) {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        let front = TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = front.local_addr().unwrap();
        thread::spawn(move || match mode {
            Mode::Threads => run_threads(vec![(front, target)]),
            Mode::EventLoop => run_event_loop(vec![(front, target)]),
        });
        let echo = thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(&got).unwrap();
            got
        });
        let mut client = TcpStream::connect(listen).unwrap();
        let payload: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        client.write_all(&payload).unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).unwrap();
        assert_eq!(echo.join().unwrap(), payload);
        assert_eq!(back, payload);
    }
}
