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
