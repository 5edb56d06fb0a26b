//! The process-wide shared-filesystem mode (`sharedfs.rs` decides it when
//! a spool is opened; docs/PROTOCOL.md §8): whether the rules apply,
//! whether files are opened `O_DIRECT`, whether a lock may have been lost.
//! A leaf module, so that the error type and the file helpers can ask it
//! without depending on the detection code that uses them.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

/// The configuration override (`shared_fs`): 0 = auto, 1 = on, 2 = off.
static OVERRIDE: AtomicU8 = AtomicU8::new(0);
/// Whether this process applies the shared-filesystem rules. Sticky: once
/// one spool is on a shared filesystem, every file is treated so (a
/// process with two spools, one shared, pays the cost on both).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set once an error said a lock of this process may be lost
/// ([`crate::Error::LockLost`]): from then on no lock release writes its writer
/// mark, whichever mailbox (an evicted client has lost all of them).
static LOCK_LOST: AtomicBool = AtomicBool::new(false);

/// Whether this process was told that a lock may be lost.
#[inline]
pub fn lock_lost() -> bool {
    LOCK_LOST.load(Ordering::Relaxed)
}

/// Records that a lock of this process may be lost (see [`LOCK_LOST`]).
pub(crate) fn note_lock_lost() {
    LOCK_LOST.store(true, Ordering::Relaxed);
}

/// Whether files are opened `O_DIRECT`: only where unaligned direct I/O is
/// known to work (FUSE, NFS, the kernel CephFS client). ext4 or XFS under
/// `shared_fs = on` refuse an unaligned `O_DIRECT` write with EINVAL.
static DIRECT: AtomicBool = AtomicBool::new(false);

/// Sets the `shared_fs` override for spools opened after this call:
/// `Some(true)` treats every spool as shared (and allows GlusterFS),
/// `Some(false)` every spool as local, `None` detects.
pub fn set_override(v: Option<bool>) {
    OVERRIDE.store(
        match v {
            None => 0,
            Some(true) => 1,
            Some(false) => 2,
        },
        Ordering::Relaxed,
    );
}

pub(crate) fn override_value() -> Option<bool> {
    match OVERRIDE.load(Ordering::Relaxed) {
        1 => Some(true),
        2 => Some(false),
        _ => None,
    }
}

/// Whether the shared-filesystem rules apply in this process.
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Turns the shared-filesystem rules on for this process (tests, and
/// [`crate::sharedfs::check_spool`]).
pub fn activate() {
    ACTIVE.store(true, Ordering::Relaxed);
}

/// Whether the spool's files are opened `O_DIRECT` (see [`DIRECT`]).
#[inline]
pub(crate) fn direct_io() -> bool {
    DIRECT.load(Ordering::Relaxed)
}

/// Files are opened `O_DIRECT` from now on (see [`DIRECT`]).
pub(crate) fn set_direct_io() {
    DIRECT.store(true, Ordering::Relaxed);
}

/// On a shared filesystem, drops this host's cached pages of the file so
/// that the next read gets what other hosts wrote (called after every lock
/// acquisition and every open). Nothing on local disks. Best effort: an
/// error here only means the pages stay, and is logged.
#[inline]
pub fn drop_cache(fd: BorrowedFd<'_>) {
    if active() {
        drop_cache_now(fd);
    }
}

#[cold]
fn drop_cache_now(fd: BorrowedFd<'_>) {
    // SAFETY: a plain syscall on a descriptor the caller keeps open.
    let r = unsafe { libc::posix_fadvise(fd.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if r != 0 {
        tracing::warn!(errno = r, "posix_fadvise(DONTNEED) failed");
    }
}

/// Whether an errno on the locked index means the lock may be gone: on a
/// shared filesystem the client may have lost its session with the server
/// (Gluster with `client.strict-locks`: EBADFD; NFS: ENOLCK, EIO; a Ceph
/// client evicted from the cluster: ESHUTDOWN, EIO). Never on local disks,
/// where the kernel holds the lock as long as the descriptor.
pub fn means_lock_lost(errno: Option<i32>) -> bool {
    active()
        && matches!(
            errno,
            Some(libc::EBADFD) | Some(libc::ENOLCK) | Some(libc::ESHUTDOWN) | Some(libc::EIO)
        )
}
