//! The proxy's side of a pod's capture: its pinned SOCKMAP. The proxy puts its listeners here
//! and the program hands each new connection to one of them. Replacing an entry is atomic, so a
//! new proxy instance can take over without a failed connection.

use std::os::fd::AsRawFd;

use aya::maps::{MapData, SockMap};

use crate::{object::SockSlot, pod::open_pinned, Error, PinDir};

pub struct ProxySockets {
    map: SockMap<MapData>,
}

impl ProxySockets {
    /// Opens the SOCKMAP pinned for a pod by [`crate::pod::attach`].
    pub fn open(pins: &PinDir) -> Result<Self, Error> {
        let map = open_pinned(&pins.socks())?;
        let map = SockMap::try_from(map).map_err(|e| Error::map("socks is not a SOCKMAP", e))?;
        Ok(Self { map })
    }

    /// Installs (or atomically replaces) the listener for `slot`. The socket must be a TCP
    /// listener created in the pod's netns. Closing the listener removes it from the map again
    /// (the kernel unlinks closed sockets), so the proxy must keep it open while it serves.
    pub fn set(&mut self, slot: SockSlot, socket: &impl AsRawFd) -> Result<(), Error> {
        self.map
            .set(slot as u32, socket, 0)
            .map_err(|e| Error::map(format!("setting socks[{slot:?}]"), e))
    }

    /// Removes the listener for `slot`; new connections for it then follow `fail_closed`.
    pub fn clear(&mut self, slot: SockSlot) -> Result<(), Error> {
        self.map
            .clear_index(&(slot as u32))
            .map_err(|e| Error::map(format!("clearing socks[{slot:?}]"), e))
    }
}
