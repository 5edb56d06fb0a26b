//! Whole-file open-file-description (OFD) locks with a timeout.
//!
//! OFD locks (`F_OFD_SETLK`) belong to the open file description, not to
//! the process: closing some other descriptor of the same file in this
//! process does not drop them (the classic POSIX `fcntl` trap), and two
//! handles opened separately in one process exclude each other just as two
//! processes do. Linux NFS clients forward them to the server as ordinary
//! POSIX byte-range locks. See `docs/PROTOCOL.md`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        }
    }
}

fn flock(kind: libc::c_short) -> libc::flock {
    // SAFETY: libc::flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = 0; // to end of file, however large it grows
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

fn set_lock(fd: BorrowedFd<'_>, kind: libc::c_short, wait: bool) -> std::io::Result<bool> {
    let fl = flock(kind);
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: fd is a valid open descriptor and fl a valid flock struct.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &fl) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Takes a lock of `kind` on the whole file, waiting at most `timeout`.
/// The lock is held until [`unlock`] or until the descriptor's last copy
/// is closed.
pub fn lock(fd: BorrowedFd<'_>, kind: LockKind, timeout: Duration, path: &Path) -> Result<()> {
    let t = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    } as libc::c_short;
    let start = Instant::now();
    // Poll with a growing sleep: F_OFD_SETLKW has no timeout, and a signal
    // based timer would be a process-wide side effect in a library.
    let mut sleep = Duration::from_micros(20);
    loop {
        if set_lock(fd, t, false).map_err(|e| Error::io("lock", path, e))? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout {
                path: path.to_path_buf(),
                kind: kind.name(),
                waited,
            });
        }
        std::thread::sleep(sleep.min(timeout - waited));
        sleep = (sleep * 2).min(Duration::from_millis(2));
    }
}

pub fn unlock(fd: BorrowedFd<'_>) {
    // Unlocking a held OFD lock cannot fail on a valid descriptor; if it
    // somehow does, closing the descriptor releases it anyway.
    let _ = set_lock(fd, libc::F_UNLCK as libc::c_short, true);
}

/// A held lock, released on drop.
pub struct LockGuard {
    file: Arc<File>,
    pub kind: LockKind,
}

impl LockGuard {
    pub fn acquire(
        file: Arc<File>,
        kind: LockKind,
        timeout: Duration,
        path: &Path,
    ) -> Result<Self> {
        lock(file.as_fd(), kind, timeout, path)?;
        Ok(LockGuard { file, kind })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        unlock(self.file.as_fd());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_across_handles_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let a = Arc::new(File::create(&p).unwrap());
        let b = Arc::new(File::open(&p).unwrap());
        let t = Duration::from_millis(30);
        let g = LockGuard::acquire(a.clone(), LockKind::Exclusive, t, &p).unwrap();
        assert!(matches!(
            LockGuard::acquire(b.clone(), LockKind::Shared, t, &p),
            Err(Error::LockTimeout { .. })
        ));
        drop(g);
        LockGuard::acquire(b.clone(), LockKind::Shared, t, &p).unwrap();
    }

    #[test]
    fn shared_locks_coexist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let a = Arc::new(File::open(&p).unwrap());
        let b = Arc::new(File::open(&p).unwrap());
        let t = Duration::from_millis(30);
        let _g1 = LockGuard::acquire(a.clone(), LockKind::Shared, t, &p).unwrap();
        let _g2 = LockGuard::acquire(b.clone(), LockKind::Shared, t, &p).unwrap();
    }

    #[test]
    fn closing_another_descriptor_keeps_the_lock() {
        // The POSIX fcntl trap: with classic locks, closing any descriptor
        // of the file drops every lock the process holds on it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let a = Arc::new(File::create(&p).unwrap());
        let t = Duration::from_millis(30);
        let _g = LockGuard::acquire(a.clone(), LockKind::Exclusive, t, &p).unwrap();
        drop(File::open(&p).unwrap());
        let c = Arc::new(File::open(&p).unwrap());
        assert!(LockGuard::acquire(c, LockKind::Exclusive, t, &p).is_err());
    }
}
