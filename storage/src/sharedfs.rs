//! Shared filesystems: a spool that several hosts mount (CephFS, NFS, any
//! FUSE filesystem). What the store does differently there, and why, is
//! PROTOCOL.md §8; in short, measured with two ceph-fuse mounts of one
//! CephFS (`tests/tests/cephfs.rs`):
//!
//! - each host's kernel page cache keeps serving the bytes it read before,
//!   after another host wrote the file (a held descriptor never sees the
//!   new bytes, a fresh open sees them late, `mmap` never), although the
//!   locks themselves exclude each other across hosts. So every file of
//!   the spool is opened with `O_DIRECT` there (`fsutil::Dir::open_file`;
//!   on FUSE, NFS and kernel CephFS, whose clients take unaligned direct
//!   I/O; elsewhere, e.g. ext4 under `shared_fs = on`, the cache drop
//!   below is all):
//!   reads and writes go to the filesystem client, which is coherent with
//!   the lock, and no page of the kernel cache is ever involved. Measured:
//!   a 4.2 KiB header read costs 170 µs that way against 1,290 µs for
//!   `posix_fadvise(DONTNEED)` plus a cached read, and ceph-fuse with its
//!   default page cache deadlocked (a buffered `write` holding a locked
//!   page while ceph-fuse's invalidation of that inode waited for it) in
//!   about one race-harness run in ten. Where `O_DIRECT` is refused, and
//!   after every lock acquisition anyway, this host's cached pages of the
//!   file are dropped (`posix_fadvise(POSIX_FADV_DONTNEED)`);
//! - `sync_file_range` sends nothing to the server, so every append is
//!   *ordered* there (each flush an `fdatasync`, which does reach it);
//! - an error on the locked index that says the lock may be gone (EBADFD,
//!   ENOLCK, ESHUTDOWN: a Ceph client evicted by the cluster, EIO) is
//!   [`Error::LockLost`]: the writer stops and touches no path.
//!
//! Which mode applies is decided once per process, when a [`crate::Store`]
//! opens its spool: `statfs` of the spool root names the filesystem type
//! (see [`classify`]); the configuration key `shared_fs` (`auto`, `on`,
//! `off`) overrides it either way. Local disks keep the code path they had:
//! the mode is one relaxed atomic load where a shared filesystem needs work.
//! GlusterFS is refused unless `shared_fs = on`: its client caches serve
//! stale data whatever the store does, and a brick restart drops locks
//! silently unless `client.strict-locks` is on (OPERATIONS.md).

use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::error::{Error, Result};
use crate::fsutil::Dir;

/// `statfs` `f_type` of FUSE (`ceph-fuse`, GlusterFS, sshfs, ...).
pub const FUSE_MAGIC: i64 = 0x6573_5546;
/// `statfs` `f_type` of NFS (any version).
pub const NFS_MAGIC: i64 = 0x6969;
/// The kernel CephFS client.
pub const CEPH_MAGIC: i64 = 0x00c3_6400;
/// `statfs` `f_type` of SMB (the old smbfs).
pub const SMB_MAGIC: i64 = 0x517b;
/// `statfs` `f_type` of CIFS.
pub const CIFS_MAGIC: i64 = 0xff53_4d42;
/// `statfs` `f_type` of SMB2/3.
pub const SMB2_MAGIC: i64 = 0xfe53_4d42;
/// `statfs` `f_type` of AFS.
pub const AFS_MAGIC: i64 = 0x5346_414f;
/// `statfs` `f_type` of OCFS2 (a cluster filesystem on shared block storage).
pub const OCFS2_MAGIC: i64 = 0x7461_636f;
/// `statfs` `f_type` of GFS2 (a cluster filesystem on shared block storage).
pub const GFS2_MAGIC: i64 = 0x0116_1970;
/// `statfs` `f_type` of 9P (v9fs).
pub const V9FS_MAGIC: i64 = 0x0102_1997;
/// `statfs` `f_type` of Lustre.
pub const LUSTRE_MAGIC: i64 = 0x0bd0_0bd0;

/// What `statfs` says the spool is on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Not a filesystem other hosts mount (ext4, XFS, btrfs, tmpfs, ...).
    Local,
    /// A filesystem several hosts may mount; the name is for messages.
    Shared(String),
    /// GlusterFS (a FUSE mount of type `fuse.glusterfs`).
    Gluster,
}

/// The configuration override (`shared_fs`): 0 = auto, 1 = on, 2 = off.
static OVERRIDE: AtomicU8 = AtomicU8::new(0);
/// Whether this process applies the shared-filesystem rules. Sticky: once
/// one spool is on a shared filesystem, every file is treated so (a
/// process with two spools, one shared, pays the cost on both).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// Set once an error said a lock of this process may be lost
/// ([`Error::LockLost`]): from then on no lock release writes its writer
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

fn override_value() -> Option<bool> {
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
/// [`check_spool`]).
pub fn activate() {
    ACTIVE.store(true, Ordering::Relaxed);
}

/// Whether the spool's files are opened `O_DIRECT` (see [`DIRECT`]).
#[inline]
pub(crate) fn direct_io() -> bool {
    DIRECT.load(Ordering::Relaxed)
}

/// Filesystems whose clients take `O_DIRECT` reads and writes at any
/// offset and length.
fn takes_unaligned_direct_io(kind: &Kind) -> bool {
    match kind {
        Kind::Gluster => true,
        Kind::Shared(name) => name.starts_with("fuse") || name == "nfs" || name == "ceph",
        Kind::Local => false,
    }
}

/// Classifies a `statfs` type; `fuse_type` is the mount's type from
/// `/proc/self/mountinfo` (`fuse.ceph-fuse`, `fuse.glusterfs`), when known.
pub fn classify(f_type: i64, fuse_type: Option<&str>) -> Kind {
    let name = match f_type {
        FUSE_MAGIC => {
            return match fuse_type {
                Some(t) if t.contains("glusterfs") => Kind::Gluster,
                Some(t) => Kind::Shared(t.to_string()),
                None => Kind::Shared("fuse".into()),
            };
        }
        NFS_MAGIC => "nfs",
        CEPH_MAGIC => "ceph",
        SMB_MAGIC | CIFS_MAGIC | SMB2_MAGIC => "smb",
        AFS_MAGIC => "afs",
        OCFS2_MAGIC => "ocfs2",
        GFS2_MAGIC => "gfs2",
        V9FS_MAGIC => "9p",
        LUSTRE_MAGIC => "lustre",
        _ => return Kind::Local,
    };
    Kind::Shared(name.into())
}

/// The filesystem type `/proc/self/mountinfo` gives for device `dev`
/// (the last mount of it listed, the one on top).
fn mount_type(dev: u64) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = format!(
        "{}:{}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    text.lines()
        .rev()
        .filter(|l| l.split(' ').nth(2) == Some(want.as_str()))
        .find_map(|l| l.split_once(" - ")?.1.split(' ').next().map(str::to_string))
}

/// What the directory `dir` is on.
pub fn detect(dir: &Dir) -> Result<Kind> {
    use std::os::fd::AsFd;
    let fs = nix::sys::statfs::fstatfs(dir.fd.as_fd())
        .map_err(|e| Error::nix("statfs", &dir.path, e))?;
    let t = fs.filesystem_type().0 as i64;
    let fuse_type = if t == FUSE_MAGIC {
        nix::sys::stat::fstat(dir.fd.as_fd())
            .ok()
            .and_then(|st| mount_type(st.st_dev))
    } else {
        None
    };
    Ok(classify(t, fuse_type.as_deref()))
}

/// Decides the mode for a spool root (called by [`crate::Store::open`]):
/// turns the shared rules on when the root is on a shared filesystem
/// (or `shared_fs = on`), refuses GlusterFS unless `shared_fs = on`.
pub fn check_spool(root: &Dir) -> Result<Kind> {
    let ov = override_value();
    if ov == Some(false) {
        return Ok(Kind::Local);
    }
    let kind = detect(root)?;
    match (&kind, ov) {
        (Kind::Gluster, None) => {
            return Err(Error::UnsafeFilesystem {
                path: root.path.clone(),
                what: "GlusterFS: its client caches serve other hosts' writes late and a \
                       brick restart can drop locks silently (docs/OPERATIONS.md, \"Several \
                       hosts\"); set `shared_fs = on` only with the settings listed there",
            });
        }
        (Kind::Local, None) => {}
        _ => {
            if takes_unaligned_direct_io(&kind) {
                DIRECT.store(true, Ordering::Relaxed);
            }
            activate();
        }
    }
    Ok(kind)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md §8: the types that are shared, GlusterFS apart.
    #[test]
    fn classify_types() {
        assert_eq!(classify(0xEF53, None), Kind::Local);
        assert_eq!(classify(0x0102_1994, None), Kind::Local); // tmpfs
        assert_eq!(classify(NFS_MAGIC, None), Kind::Shared("nfs".into()));
        assert_eq!(classify(CEPH_MAGIC, None), Kind::Shared("ceph".into()));
        assert_eq!(
            classify(FUSE_MAGIC, Some("fuse.ceph-fuse")),
            Kind::Shared("fuse.ceph-fuse".into())
        );
        assert_eq!(classify(FUSE_MAGIC, Some("fuse.glusterfs")), Kind::Gluster);
        assert_eq!(classify(FUSE_MAGIC, None), Kind::Shared("fuse".into()));
        assert_eq!(classify(SMB2_MAGIC, None), Kind::Shared("smb".into()));
    }
}
