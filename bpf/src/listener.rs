//! The proxy's capture listeners. They must be created inside the pod netns (see
//! [`crate::netns::run_in`]) and need two options the capture depends on:
//! * `IP_TRANSPARENT`: an outbound connection is accepted with the *original* destination as
//!   its local address, which is not local to the pod; without it the SYN-ACK is never sent.
//! * `SO_MARK` [`PROXY_MARK`]: the pod's policy routing sends marked traffic through the main
//!   table instead of back to `lo`, so the proxy's own packets (and the SYN-ACKs and accepted
//!   sockets, which inherit the mark) are not captured again.

use std::{
    io,
    net::{SocketAddr, SocketAddrV4, TcpListener},
};

use socket2::{Domain, Protocol, Socket, Type};

/// Mark on every socket the proxy owns inside a pod; matches the pod's `fwmark` routing rule.
pub const PROXY_MARK: u32 = 0x539;
/// Port of the outbound capture listener (SOCKMAP slot 0).
pub const OUTBOUND_PORT: u16 = 15001;
/// Port of the plaintext inbound capture listener (SOCKMAP slot 1).
pub const INBOUND_PORT: u16 = 15006;

/// A TCP listener with `IP_TRANSPARENT`, `SO_MARK` [`PROXY_MARK`] and `SO_REUSEPORT` (so a new
/// proxy instance can bind next to the old one during a handover), in the calling thread's netns.
pub fn bind_capture_listener(addr: SocketAddrV4) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_ip_transparent_v4(true)?;
    socket.set_mark(PROXY_MARK)?;
    socket.bind(&SocketAddr::V4(addr).into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}
