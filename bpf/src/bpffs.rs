//! Checks that pins land on a bpffs mount. Without this, pinning into a plain `/sys/fs/bpf`
//! directory fails with a bare EPERM that does not say the mount is missing.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use crate::Error;

/// Succeeds if `path`, or its nearest existing ancestor, is on a bpffs mount.
pub fn ensure_bpffs(path: &Path) -> Result<(), Error> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if is_bpffs(existing).map_err(|e| Error::io(format!("statfs {}", existing.display()), e))? {
        Ok(())
    } else {
        Err(Error::NotBpffs {
            path: path.to_path_buf(),
        })
    }
}

/// Whether `path` is on a bpffs mount.
pub fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statfs>::uninit();
    // SAFETY: `c_path` is a valid NUL-terminated string and `stat` points to writable memory of
    // the right size; the kernel fills it completely on success.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statfs returned 0, so `stat` is initialised.
    let stat = unsafe { stat.assume_init() };
    // f_type's integer type differs between libc targets; compare as u32 like the kernel does.
    Ok(stat.f_type as u32 == libc::BPF_FS_MAGIC as u32)
}

/// Unmounts the bpffs at `path` if nothing is pinned under it any more. A mount that still holds
/// pins stays: they may be another cluster's or another program's, and unmounting would drop
/// them, detaching whatever they hold. Returns whether it unmounted.
pub fn unmount_if_unused(path: &Path) -> io::Result<bool> {
    if !is_bpffs(path)? || !holds_only_kernel_entries(path)? {
        return Ok(false);
    }
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::umount2(c_path.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(true)
}

/// Files the kernel itself puts in every new bpffs (its preloaded iterators, with
/// `CONFIG_BPF_PRELOAD`); they do not make a mount "used".
pub const KERNEL_ENTRIES: [&str; 2] = ["maps.debug", "progs.debug"];

/// Whether the directory at `path` holds nothing but [`KERNEL_ENTRIES`].
pub fn holds_only_kernel_entries(path: &Path) -> io::Result<bool> {
    for entry in std::fs::read_dir(path)? {
        let name = entry?.file_name();
        if !KERNEL_ENTRIES
            .iter()
            .any(|k| name.as_bytes() == k.as_bytes())
        {
            return Ok(false);
        }
    }
    Ok(true)
}
