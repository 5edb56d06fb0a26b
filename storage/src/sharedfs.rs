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

use crate::error::{Error, Result};
use crate::fsmode::override_value;
pub use crate::fsmode::{activate, active, drop_cache, lock_lost, means_lock_lost, set_override};
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
                crate::fsmode::set_direct_io();
            }
            activate();
        }
    }
    Ok(kind)
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
