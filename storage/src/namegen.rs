//! The names generation of a user (`USER/.names.gen`, docs/FORMAT.md §1,
//! docs/PROTOCOL.md §6b), which validates the process-wide caches of
//! `listcache.rs`: the walk over the user's mailboxes (names and special
//! uses, what LIST needs) and open mailbox handles (what STATUS needs).
//!
//! Every change of a user's set of mailboxes or of a mailbox's special
//! use happens under the user's name lock, inside a [`NamesChange`]: it
//! first makes the generation odd, then changes the directories, then
//! makes it even again (a seqlock). A reader that finds an even
//! generation equal to the one a cached answer was taken at uses the
//! answer; an odd, missing or unreadable generation means "walk, do not
//! cache". A writer killed mid-change leaves it odd, and the next change
//! goes on from there, so no value is ever handed out twice under one
//! epoch; a file created anew gets a new random epoch, so a cache taken
//! before it was removed or damaged never matches again.
//!
//! Nothing here is trusted over the directories: the caches only spare a
//! walk whose answer could not have changed. On a shared filesystem
//! (several hosts, `sharedfs`) nothing is cached at all.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};
use crate::lock::{LockGuard, LockKind};
use crate::names::UserName;

pub(crate) use crate::layout::NAMES_GEN_FILE;
const MAGIC: &[u8; 4] = b"MSNG";
/// magic, epoch (u64 LE), generation (u64 LE), CRC32 of the 20 bytes before.
const LEN: usize = 24;

/// What `.names.gen` held when read: equal stamps with an even generation
/// mean that no name changed in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    epoch: u64,
    generation: u64,
}

impl Stamp {
    /// `s` with its generation moved on by `by` (tests of the caches).
    #[cfg(test)]
    pub(crate) fn for_test(s: Stamp, by: u64) -> Stamp {
        Stamp {
            generation: s.generation + by,
            ..s
        }
    }

    /// No change is in progress (and none died midway).
    fn stable(&self) -> bool {
        self.generation.is_multiple_of(2)
    }

    fn encode(&self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0..4].copy_from_slice(MAGIC);
        b[4..12].copy_from_slice(&self.epoch.to_le_bytes());
        b[12..20].copy_from_slice(&self.generation.to_le_bytes());
        let crc = crc32fast::hash(&b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` for anything but a whole, intact stamp (a torn or foreign
    /// file reads as unreadable: walk, do not cache).
    fn decode(b: &[u8]) -> Option<Stamp> {
        if b.len() != LEN || &b[0..4] != MAGIC {
            return None;
        }
        let crc = u32::from_le_bytes(b[20..24].try_into().ok()?);
        if crc != crc32fast::hash(&b[..20]) {
            return None;
        }
        Some(Stamp {
            epoch: u64::from_le_bytes(b[4..12].try_into().ok()?),
            generation: u64::from_le_bytes(b[12..20].try_into().ok()?),
        })
    }
}

/// A random epoch for a file created anew (std's hasher keys are seeded
/// from the OS's random source), never 0.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

fn read_file(f: &File) -> Option<Stamp> {
    let mut buf = [0u8; LEN + 1];
    let n = f.read_at(&mut buf, 0).ok()?;
    Stamp::decode(&buf[..n])
}

/// Descriptors of `.names.gen` kept open between reads, per spool root
/// and user; past the bound one is closed.
const MAX_KEPT: usize = 256;

type KeptMap = HashMap<(PathBuf, String), Arc<File>>;

fn kept() -> std::sync::MutexGuard<'static, KeptMap> {
    static K: OnceLock<Mutex<KeptMap>> = OnceLock::new();
    // Inserts and removals are single calls: a poisoned map is whole.
    K.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The stamp of `user` under the spool `root`. `None` when missing,
/// unreadable or damaged.
///
/// The file's descriptor is kept after the first read, and a read is then
/// an `fstat` and a `pread`: writers change the file in place, and a file
/// replaced (unlinked by a writer that may not write it, or deleted by
/// hand) has no link left, which the `fstat` sees, and the path is opened
/// again. Otherwise one `openat2` (no symlink anywhere below the root, as
/// every open of the store) and one `pread`.
pub(crate) fn read(root: &Dir, user: &UserName) -> Option<Stamp> {
    let key = (root.path.clone(), user.as_str().to_owned());
    let held = kept().get(&key).cloned();
    if let Some(f) = held {
        match nix::sys::stat::fstat(f.as_fd()) {
            Ok(st) if st.st_nlink > 0 => return read_file(&f),
            _ => {
                kept().remove(&key);
            }
        }
    }
    let f = open(root, user)?;
    let stamp = read_file(&f);
    if stamp.is_some() {
        insert_bounded(&mut kept(), key, Arc::new(f), MAX_KEPT);
    }
    stamp
}

/// Inserts into a cache map of at most `max` entries: when it is full
/// (and `k` not in it), one entry is dropped first.
pub(crate) fn insert_bounded<K: Eq + std::hash::Hash + Clone, V>(
    m: &mut HashMap<K, V>,
    k: K,
    v: V,
    max: usize,
) {
    if m.len() >= max
        && !m.contains_key(&k)
        && let Some(victim) = m.keys().next().cloned()
    {
        m.remove(&victim);
    }
    m.insert(k, v);
}

/// Opens `USER/.names.gen` below `root` read-only, refusing symlinks.
fn open(root: &Dir, user: &UserName) -> Option<File> {
    use nix::fcntl::{OpenHow, ResolveFlag};
    let path = format!("{}/{NAMES_GEN_FILE}", user.encoded());
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    match nix::fcntl::openat2(root.fd.as_fd(), path.as_str(), how) {
        Ok(fd) => Some(File::from(fd)),
        // Kernels before 5.6 (ENOSYS), or a seccomp filter that does not
        // know the call (EPERM): component by component.
        Err(nix::Error::ENOSYS | nix::Error::EPERM) => {
            let dir = root.open_dir(fsutil::os(user.encoded().as_bytes())).ok()?;
            dir.open_file(fsutil::os(NAMES_GEN_FILE.as_bytes()), OFlag::O_RDONLY)
                .ok()
        }
        Err(_) => None,
    }
}

/// Creates `.names.gen` for a user that has none (a spool written before
/// it existed), or rewrites a damaged one, under the name lock (never
/// waiting for it: a change in progress will write it anyway). Errors are
/// ignored: without the file, readers walk.
pub(crate) fn init(user_dir: &Dir) {
    let lock_file = user_dir.child_path(fsutil::os(crate::layout::NAMES_LOCK.as_bytes()));
    let Ok(lock) = user_dir.open_file(
        fsutil::os(crate::layout::NAMES_LOCK.as_bytes()),
        OFlag::O_RDWR | OFlag::O_CREAT,
    ) else {
        return;
    };
    let Ok(_g) = LockGuard::acquire(
        Arc::new(lock),
        LockKind::Exclusive,
        Duration::ZERO,
        &lock_file,
    ) else {
        return;
    };
    let os = fsutil::os(NAMES_GEN_FILE.as_bytes());
    let Ok(f) = user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT) else {
        return;
    };
    if read_file(&f).is_none() {
        let stamp = Stamp {
            epoch: new_epoch(),
            generation: 0,
        };
        let _ = f.write_all_at(&stamp.encode(), 0);
    }
}

/// A change of a user's names in progress: the name lock is held and the
/// generation is odd. Dropping it (after the change, or when it failed
/// midway) makes the generation even, then releases the lock.
pub(crate) struct NamesChange {
    file: File,
    path: PathBuf,
    odd: Stamp,
    // Released after `drop` wrote the even generation.
    _lock: LockGuard,
}

impl NamesChange {
    /// Takes the user's name lock in `user_dir` (waiting up to `timeout`)
    /// and begins a change (for tools that work on a mailbox directory
    /// without a [`crate::Store`]).
    pub(crate) fn begin_at(user_dir: &Dir, timeout: Duration) -> Result<NamesChange> {
        let os = fsutil::os(crate::layout::NAMES_LOCK.as_bytes());
        let file = Arc::new(user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT)?);
        let lock =
            LockGuard::acquire(file, LockKind::Exclusive, timeout, &user_dir.child_path(os))?;
        Self::begin(user_dir, lock)
    }

    /// Makes the generation odd; `lock` is the user's name lock, held.
    pub(crate) fn begin(user_dir: &Dir, lock: LockGuard) -> Result<NamesChange> {
        let os = fsutil::os(NAMES_GEN_FILE.as_bytes());
        let path = user_dir.child_path(os);
        let file = match user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT) {
            Ok(f) => f,
            // Not ours to write (a tool run as another user made it):
            // replaced by a file of a new epoch, which no cache matches.
            Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::PermissionDenied =>
            {
                user_dir.unlink(os)?;
                user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT)?
            }
            Err(e) => return Err(e),
        };
        let odd = match read_file(&file) {
            Some(s) => Stamp {
                epoch: s.epoch,
                // Odd already: a change died midway; go on above it.
                generation: s.generation + if s.stable() { 1 } else { 2 },
            },
            None => Stamp {
                epoch: new_epoch(),
                generation: 1,
            },
        };
        fsutil::write_all_at(&file, &odd.encode(), 0, &path)?;
        crate::fault::point("names.after_begin")?;
        Ok(NamesChange {
            file,
            path,
            odd,
            _lock: lock,
        })
    }
}

impl Drop for NamesChange {
    fn drop(&mut self) {
        // A kill here leaves the generation odd: readers walk until the
        // next change.
        let _ = crate::fault::point("names.before_end");
        let even = Stamp {
            epoch: self.odd.epoch,
            generation: self.odd.generation + 1,
        };
        if let Err(e) = self.file.write_all_at(&even.encode(), 0) {
            // Odd stays: readers walk, never cache, until the next change.
            tracing::warn!(path = %self.path.display(), "names generation left odd: {e}");
        }
    }
}

/// The stamp a cached answer may be used or stored under: `None` on a
/// shared filesystem, or when the generation is odd, missing or damaged
/// (after one attempt to create a missing or damaged file).
pub(crate) fn current(root: &Dir, user: &UserName) -> Option<Stamp> {
    if crate::fsmode::active() {
        return None;
    }
    let stamp = match read(root, user) {
        Some(s) => s,
        None => {
            let dir = root.open_dir(fsutil::os(user.encoded().as_bytes())).ok()?;
            init(&dir);
            read(root, user)?
        }
    };
    stamp.stable().then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trip_and_damage() {
        let s = Stamp {
            epoch: 7,
            generation: 42,
        };
        assert_eq!(Stamp::decode(&s.encode()), Some(s));
        let mut b = s.encode();
        b[13] ^= 1;
        assert_eq!(Stamp::decode(&b), None);
        assert_eq!(Stamp::decode(&s.encode()[..20]), None);
        assert!(s.stable());
        assert_ne!(new_epoch(), new_epoch());
    }

    /// A kept descriptor sees in-place changes, and a replaced file is
    /// read through the path again, never the unlinked one (FORMAT.md §1:
    /// a writer that may not write the file replaces it; an operator may
    /// delete it).
    #[test]
    fn kept_descriptor_follows_changes_and_replacements() {
        let tmp = tempfile::tempdir().unwrap();
        let root = Dir::open_root(tmp.path()).unwrap();
        let user = UserName::new("k").unwrap();
        let udir = tmp.path().join(user.encoded());
        std::fs::create_dir(&udir).unwrap();
        let file = udir.join(NAMES_GEN_FILE);
        let at = |g| Stamp {
            epoch: 5,
            generation: g,
        };
        std::fs::write(&file, at(2).encode()).unwrap();
        assert_eq!(read(&root, &user), Some(at(2)));
        // In place, as NamesChange writes.
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all_at(&at(3).encode(), 0).unwrap();
        assert_eq!(read(&root, &user), Some(at(3)));
        // Replaced by a new file (unlink, create).
        std::fs::remove_file(&file).unwrap();
        let fresh = Stamp {
            epoch: 9,
            generation: 0,
        };
        std::fs::write(&file, fresh.encode()).unwrap();
        assert_eq!(read(&root, &user), Some(fresh));
        // Deleted: nothing to read, however long a descriptor was kept.
        std::fs::remove_file(&file).unwrap();
        assert_eq!(read(&root, &user), None);
    }
}
