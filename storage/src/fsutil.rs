//! File-system helpers that never follow symlinks below the spool root and
//! always create private files (0600) and directories (0700).

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;

use crate::error::{Error, Result};

pub const FILE_MODE: u32 = 0o600;
pub const DIR_MODE: u32 = 0o700;

/// An open directory plus its path (kept for error messages only; every
/// operation goes through the descriptor).
///
/// A server meets it as [`crate::Mailbox::dir`] and passes it to
/// [`crate::verify::verify_dir`], [`crate::quarantine`] and
/// [`crate::dedup::DedupLog::open_in`]. Its methods are plain file
/// operations that take **no mailbox lock**: writing a mailbox through them
/// bypasses the store's protocol (`docs/PROTOCOL.md`); use [`crate::Mailbox`].
#[derive(Debug)]
pub struct Dir {
    /// The open directory (`O_DIRECTORY | O_NOFOLLOW`).
    pub fd: OwnedFd,
    /// Its path, for messages.
    pub path: PathBuf,
}

fn mode(m: u32) -> Mode {
    Mode::from_bits_truncate(m as nix::libc::mode_t)
}

impl Dir {
    /// Opens the spool root. The root itself may be a symlink (an
    /// administrator's choice); nothing below it is followed.
    pub fn open_root(path: &Path) -> Result<Dir> {
        let fd = nix::fcntl::open(
            path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::nix("open directory", path, e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path of `name` in this directory, for messages.
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Opens a child directory without following a symlink.
    pub fn open_dir(&self, name: &OsStr) -> Result<Dir> {
        let fd = nix::fcntl::openat(
            self.fd.as_fd(),
            name,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
            Mode::empty(),
        )
        .map_err(|e| match e {
            // O_DIRECTORY|O_NOFOLLOW on a symlink gives ENOTDIR or ELOOP.
            nix::Error::ELOOP => Error::Symlink(self.child_path(name)),
            nix::Error::ENOTDIR if self.is_symlink(name) => Error::Symlink(self.child_path(name)),
            e => Error::nix("open directory", self.child_path(name), e),
        })?;
        Ok(Dir {
            fd,
            path: self.child_path(name),
        })
    }

    /// Another descriptor for the same directory.
    pub fn try_clone(&self) -> Result<Dir> {
        Ok(Dir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("dup", &self.path, e))?,
            path: self.path.clone(),
        })
    }

    fn is_symlink(&self, name: &OsStr) -> bool {
        nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFLNK)
            .unwrap_or(false)
    }

    /// Creates a child directory (0700). Returns false if it existed.
    pub fn mkdir(&self, name: &OsStr) -> Result<bool> {
        match nix::sys::stat::mkdirat(self.fd.as_fd(), name, mode(DIR_MODE)) {
            Ok(()) => Ok(true),
            Err(nix::Error::EEXIST) => {
                if self.is_symlink(name) {
                    return Err(Error::Symlink(self.child_path(name)));
                }
                Ok(false)
            }
            Err(e) => Err(Error::nix("create directory", self.child_path(name), e)),
        }
    }

    /// Opens `name` in this directory with `flags` (never following a symlink).
    pub fn open_file(&self, name: &OsStr, flags: OFlag) -> Result<File> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let open = |flags| nix::fcntl::openat(self.fd.as_fd(), name, flags, mode(FILE_MODE));
        let fd = if crate::fsmode::direct_io() {
            // On a shared filesystem every read and write bypasses this
            // host's page cache, which another host's writes do not
            // update (PROTOCOL.md §8). A filesystem that refuses O_DIRECT
            // at open gets a plain open, and the cache dropped after each
            // lock, as do filesystems not known to take unaligned direct
            // I/O (sharedfs::direct_io).
            match open(flags | OFlag::O_DIRECT) {
                Err(nix::Error::EINVAL) => open(flags),
                r => r,
            }
        } else {
            open(flags)
        }
        .map_err(|e| Error::nix("open", self.child_path(name), e))?;
        crate::fsmode::drop_cache(fd.as_fd());
        Ok(File::from(fd))
    }

    /// Opens `name` as [`Self::open_file`] does, but always through the
    /// page cache (no `O_DIRECT` on a shared filesystem): for derived
    /// files whose every entry is checked on reading, so that a stale or
    /// torn copy costs a re-read, never a wrong answer (the IMAP server's
    /// `.sortkeys`).
    pub fn open_derived(&self, name: &OsStr, flags: OFlag) -> Result<File> {
        let flags = flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        nix::fcntl::openat(self.fd.as_fd(), name, flags, mode(FILE_MODE))
            .map(File::from)
            .map_err(|e| Error::nix("open", self.child_path(name), e))
    }

    /// Whether a child exists (without following a symlink).
    pub fn exists(&self, name: &OsStr) -> Result<bool> {
        match nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(nix::Error::ENOENT) => Ok(false),
            Err(e) => Err(Error::nix("stat", self.child_path(name), e)),
        }
    }

    /// Renames `from` here to `to` in `to_dir`.
    pub fn rename(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> Result<()> {
        nix::fcntl::renameat(self.fd.as_fd(), from, to_dir.fd.as_fd(), to)
            .map_err(|e| Error::nix("rename", self.child_path(from), e))
    }

    /// A child's status (not following a symlink); `None` if it does not
    /// exist.
    fn stat(&self, name: &OsStr) -> Result<Option<nix::sys::stat::FileStat>> {
        match nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st)),
            Err(nix::Error::ENOENT) => Ok(None),
            Err(e) => Err(Error::nix("stat", self.child_path(name), e)),
        }
    }

    /// The size of a child; `None` if it does not exist.
    pub fn size(&self, name: &OsStr) -> Result<Option<u64>> {
        Ok(self.stat(name)?.map(|st| st.st_size as u64))
    }

    /// Gives the file `from` the second name `to` in `to_dir`; `false`
    /// (nothing done) when `to` exists already.
    pub fn link_no_replace(&self, from: &OsStr, to_dir: &Dir, to: &OsStr) -> Result<bool> {
        match nix::unistd::linkat(
            self.fd.as_fd(),
            from,
            to_dir.fd.as_fd(),
            to,
            AtFlags::empty(),
        ) {
            Ok(()) => Ok(true),
            Err(nix::Error::EEXIST) => Ok(false),
            Err(e) => Err(Error::nix("link", self.child_path(from), e)),
        }
    }

    /// The link count of a child; `None` if it does not exist.
    pub fn nlink(&self, name: &OsStr) -> Result<Option<u64>> {
        Ok(self.stat(name)?.map(|st| st.st_nlink))
    }

    /// Seconds since a child was last modified; `None` if it does not
    /// exist.
    pub fn age(&self, name: &OsStr) -> Result<Option<i64>> {
        Ok(self.stat(name)?.map(|st| now() - st.st_mtime))
    }

    /// Replaces the child `name` whole with `bytes`: written to `tmp`
    /// (any stale one removed first), fdatasynced when `durable`, renamed
    /// over `name`; on failure (a full disk) `tmp` is removed again. The
    /// caller makes the rename durable (directory fsync) when it needs to.
    pub fn replace_file(&self, tmp: &str, name: &str, bytes: &[u8], durable: bool) -> Result<()> {
        self.replace_with(tmp, name, bytes, durable, None)
    }

    /// [`Self::replace_file`] for a derived file whose every entry is
    /// checked on reading (the IMAP server's `.sortkeys`): written through
    /// the page cache ([`Self::open_derived`]), never fsynced, with the
    /// fault point `before_rename` between the write and the rename.
    pub fn replace_derived(
        &self,
        tmp: &str,
        name: &str,
        bytes: &[u8],
        before_rename: &'static str,
    ) -> Result<()> {
        self.replace_with(tmp, name, bytes, false, Some(before_rename))
    }

    fn replace_with(
        &self,
        tmp: &str,
        name: &str,
        bytes: &[u8],
        durable: bool,
        derived: Option<&'static str>,
    ) -> Result<()> {
        use std::io::Write;
        let tmp_os = os(tmp.as_bytes());
        self.unlink(tmp_os)?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let mut f = match derived {
            Some(_) => self.open_derived(tmp_os, flags)?,
            None => self.open_file(tmp_os, flags)?,
        };
        let path = self.child_path(tmp_os);
        let r = f
            .write_all(bytes)
            .map_err(|e| Error::io("write", &path, e))
            .and_then(|()| {
                if durable {
                    fdatasync(&f, &path)
                } else {
                    Ok(())
                }
            })
            .and_then(|()| derived.map_or(Ok(()), crate::fault::point))
            .and_then(|()| self.rename(tmp_os, self, os(name.as_bytes())));
        if r.is_err() {
            // A full disk must not keep a half-written copy.
            let _ = self.unlink(tmp_os);
        }
        r
    }

    /// Removes file `name`; absent is not an error.
    pub fn unlink(&self, name: &OsStr) -> Result<()> {
        match nix::unistd::unlinkat(
            self.fd.as_fd(),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(Error::nix("unlink", self.child_path(name), e)),
        }
    }

    /// Removes empty directory `name`.
    pub fn rmdir(&self, name: &OsStr) -> Result<()> {
        match nix::unistd::unlinkat(self.fd.as_fd(), name, nix::unistd::UnlinkatFlags::RemoveDir) {
            Ok(()) | Err(nix::Error::ENOENT) => Ok(()),
            Err(e) => Err(Error::nix("remove directory", self.child_path(name), e)),
        }
    }

    /// Makes renames and creations in this directory durable.
    pub fn fsync(&self) -> Result<()> {
        nix::unistd::fsync(self.fd.as_fd()).map_err(|e| Error::nix("fsync", &self.path, e))
    }

    /// False when this directory certainly has no subdirectory other than
    /// those of `known` that exist: the filesystem counts subdirectories
    /// in a directory's link count (ext2/3/4, XFS, tmpfs: 2 + one per
    /// subdirectory) and the count is exactly that. True otherwise,
    /// including on any other filesystem (btrfs reports 1; NFS passes on
    /// the server's) and on any error: the caller then reads the entries.
    /// Spares a walk over mailboxes reading a directory of thousands of
    /// message files to find it has no child.
    pub fn may_have_other_subdirs(&self, known: &[&str]) -> bool {
        SubdirCounts::default().may_have_other_subdirs(self, known)
    }

    /// Names in this directory, without `.` and `..`, with their file type
    /// as reported by the directory (may be unknown).
    pub fn entries(&self) -> Result<Vec<(Vec<u8>, Option<nix::dir::Type>)>> {
        let dup = self
            .fd
            .try_clone()
            .map_err(|e| Error::io("read directory", &self.path, e))?;
        let mut d =
            nix::dir::Dir::from_fd(dup).map_err(|e| Error::nix("read directory", &self.path, e))?;
        let mut out = Vec::new();
        for entry in d.iter() {
            let entry = entry.map_err(|e| Error::nix("read directory", &self.path, e))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            out.push((name.to_vec(), entry.file_type()));
        }
        Ok(out)
    }

    /// True if the named child is a real directory (not a symlink).
    pub fn is_dir(&self, name: &OsStr) -> bool {
        nix::sys::stat::fstatat(self.fd.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map(|st| st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR)
            .unwrap_or(false)
    }
}

/// [`Dir::may_have_other_subdirs`] over many directories (a walk): whether
/// the filesystem counts subdirectories in link counts is asked
/// (`fstatfs`) once per device, not once per directory.
#[derive(Default)]
pub struct SubdirCounts {
    /// Device and answer of the last `fstatfs`.
    last: Option<(u64, bool)>,
}

impl SubdirCounts {
    /// See [`Dir::may_have_other_subdirs`].
    pub fn may_have_other_subdirs(&mut self, dir: &Dir, known: &[&str]) -> bool {
        use nix::sys::statfs::{EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC, fstatfs};
        let Ok(st) = nix::sys::stat::fstat(dir.fd.as_fd()) else {
            return true;
        };
        let dev = st.st_dev;
        let counts_subdirs = match self.last {
            Some((d, counts)) if d == dev => counts,
            _ => {
                let counts = fstatfs(dir.fd.as_fd()).is_ok_and(|fs| {
                    let t = fs.filesystem_type();
                    // EXT2/3 share EXT4's magic.
                    t == EXT4_SUPER_MAGIC || t == XFS_SUPER_MAGIC || t == TMPFS_MAGIC
                });
                self.last = Some((dev, counts));
                counts
            }
        };
        if !counts_subdirs {
            return true;
        }
        // Subdirectories beyond `.` and the parent's entry; each known
        // one found accounts for one, and the stats stop when all are
        // accounted for (a mailbox with only `.stage`: one stat).
        let mut others = st.st_nlink.saturating_sub(2);
        for k in known {
            if others == 0 {
                return false;
            }
            if dir.is_dir(os(k.as_bytes())) {
                others -= 1;
            }
        }
        others != 0
    }
}

pub fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub fn read_exact_at(f: &File, buf: &mut [u8], off: u64, path: &Path) -> Result<()> {
    f.read_exact_at(buf, off)
        .map_err(|e| Error::io("read", path, e))
}

/// Reads up to `buf.len()` bytes at `off`; returns how many were read
/// before end of file.
pub fn read_at_most(f: &File, buf: &mut [u8], off: u64, path: &Path) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    Ok(done)
}

pub fn write_all_at(f: &File, buf: &[u8], off: u64, path: &Path) -> Result<()> {
    f.write_all_at(buf, off)
        .map_err(|e| Error::io("write", path, e))
}

/// Starts writing `f`'s dirty pages (`sync_file_range` over the whole
/// file); with `wait`, also waits until the device has them. Never a
/// cache flush, never metadata.
pub fn write_out(f: &File, path: &Path, wait: bool) -> Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let flags = if wait {
        libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER
    } else {
        libc::SYNC_FILE_RANGE_WRITE
    };
    // SAFETY: a plain syscall on a descriptor `f` keeps open.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, flags) };
    if r != 0 {
        return Err(Error::io(
            "sync_file_range",
            path,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `syncfs`: every dirty page and metadata of the filesystem holding
/// `fd` (file bytes, inodes, directory entries) is written and the device
/// cache flushed (ext4, XFS, btrfs); errors of that writeback are
/// reported (Linux 5.8 and later).
pub fn syncfs(fd: std::os::fd::BorrowedFd<'_>, path: &Path) -> Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor the caller keeps open.
    let r = unsafe { libc::syncfs(fd.as_raw_fd()) };
    if r != 0 {
        return Err(Error::io("syncfs", path, std::io::Error::last_os_error()));
    }
    Ok(())
}

pub fn fdatasync(f: &File, path: &Path) -> Result<()> {
    nix::unistd::fdatasync(f.as_fd()).map_err(|e| Error::nix("fsync", path, e))
}

/// `PID.N`, N counting up per process: a temporary name that no other
/// thread or process picks while this one lives. The process id alone is
/// not enough: an LMTP server's sessions are threads of one process.
pub fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}.{n}", std::process::id())
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// CRC32 of a whole file, streamed.
pub fn crc_of_file(f: &std::fs::File, path: &Path) -> Result<u32> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        let n = read_at_most(f, &mut buf, off, path)?;
        h.update(&buf[..n]);
        off += n as u64;
        if n < buf.len() {
            return Ok(h.finalize());
        }
    }
}
