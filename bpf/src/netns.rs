//! Runs code inside another network namespace. The netns is a per-thread attribute and a
//! socket keeps the netns it was created in, so each call gets a fresh thread that enters the
//! target netns and ends with the closure: no thread ever returns to a pool in the wrong netns.

use std::{fs::File, os::fd::AsRawFd, path::Path, thread};

use crate::Error;

/// Runs `f` on a new thread that has entered the network namespace at `netns`
/// (for example `/run/netns/NAME`), and returns its result.
pub fn run_in<T, F>(netns: &Path, f: F) -> Result<T, Error>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    let ns = File::open(netns).map_err(|e| Error::io(format!("opening {}", netns.display()), e))?;
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `ns` is an open netns file for the whole call; setns only changes
                // this thread's namespace, and the thread ends after `f`.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if rc != 0 {
                    return Err(Error::io(
                        format!("setns into {}", netns.display()),
                        std::io::Error::last_os_error(),
                    ));
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
