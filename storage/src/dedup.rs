//! The per-mailbox duplicate log `.dedup`: which Message-IDs were
//! delivered into this mailbox recently, so that a delivery agent can
//! accept the same message again without storing it twice (duplicate
//! suppression as in Cyrus; off unless the agent asks for it).
//!
//! The file is a sequence of 32-byte entries, each with its own CRC (see
//! `docs/FORMAT.md`). It has its own OFD lock, separate from the index
//! lock, so that "look up, commit, record" is one critical section
//! without holding the index lock over the lookup. Lock order is always
//! this lock first, then the index lock (taken inside the commit); nothing
//! takes them the other way round. See `docs/PROTOCOL.md`, "Duplicate log".
//!
//! Nothing here is fsynced: a lost entry only means that a later duplicate
//! is stored, never that a message is lost. A damaged entry is ignored
//! (never trusted) with a warning naming its byte offset, and dropped at
//! the next rewrite.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};
use crate::lock::{LockGuard, LockKind};
use crate::mailbox::Mailbox;

/// The log's file name inside the mailbox directory.
pub const DEDUP_NAME: &str = ".dedup";
/// The temporary name of a rewrite (only ever written under the lock, so
/// one fixed name suffices; a crashed rewrite's leftover is overwritten).
pub const DEDUP_TMP_NAME: &str = ".dedup.new";
/// Bytes per entry.
pub const ENTRY_SIZE: usize = 32;
/// Above this many entries the log is rewritten without expired ones
/// (when at least half of them are expired or damaged).
pub const PRUNE_AT: usize = 4096;
/// Hard bound: a log with more entries than this is cut to the newest
/// `MAX_ENTRIES / 2` live ones, however large the window.
pub const MAX_ENTRIES: usize = 65536;
/// How many damaged entries one read warns about individually.
const MAX_WARNINGS: usize = 8;

/// 128-bit key of a normalized Message-ID: the first 16 bytes of
/// BLAKE2b. A cryptographic hash, because a collision would suppress a
/// message that is not a duplicate (a silent loss): a sender must not be
/// able to craft a Message-ID that collides with someone else's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(pub [u8; 16]);

impl Key {
    /// The key of a Message-ID header value: folding line breaks removed,
    /// surrounding white space trimmed, angle brackets kept as sent.
    /// `None` for an empty value (such a message is never suppressed).
    pub fn from_message_id(id: &str) -> Option<Key> {
        let unfolded: String = id.chars().filter(|&c| c != '\r' && c != '\n').collect();
        let id = unfolded.trim();
        if id.is_empty() {
            return None;
        }
        let digest = Blake2b::<U16>::digest(id.as_bytes());
        Some(Key(digest.into()))
    }
}

/// One entry: when a message with `key` was committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Unix seconds of the commit.
    pub time: i64,
    /// The message's key (from its Message-ID).
    pub key: Key,
}

impl Entry {
    /// `time` (8, LE) | key (16) | reserved zero (4) | CRC32 of 0..28 (4, LE).
    pub fn encode(&self) -> [u8; ENTRY_SIZE] {
        let mut b = [0u8; ENTRY_SIZE];
        b[0..8].copy_from_slice(&self.time.to_le_bytes());
        b[8..24].copy_from_slice(&self.key.0);
        let crc = crc32fast::hash(&b[0..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// `None` when the CRC does not match or the reserved bytes are not
    /// zero: such an entry is never trusted.
    pub fn decode(b: &[u8]) -> Option<Entry> {
        let b: &[u8; ENTRY_SIZE] = b.try_into().ok()?;
        let crc = u32::from_le_bytes(b[28..32].try_into().ok()?);
        if crc32fast::hash(&b[0..28]) != crc || b[24..28] != [0; 4] {
            return None;
        }
        Some(Entry {
            time: i64::from_le_bytes(b[0..8].try_into().ok()?),
            key: Key(b[8..24].try_into().ok()?),
        })
    }

    /// Whether the entry still counts at `now` with a window of `window`
    /// seconds. An entry dated more than a window into the future (a clock
    /// that was set back) does not: suppressing on it could hide new
    /// mail for an unbounded time.
    pub fn is_live(&self, now: i64, window: u64) -> bool {
        let w = i64::try_from(window).unwrap_or(i64::MAX);
        self.time > now.saturating_sub(w) && self.time <= now.saturating_add(w)
    }
}

/// An open duplicate log of one mailbox.
#[derive(Debug)]
pub struct DedupLog {
    /// A duplicate of the mailbox directory's descriptor: the log follows
    /// the mailbox through a rename like the mailbox handle does.
    dir: Dir,
    file: Arc<File>,
    path: PathBuf,
    lock_timeout: Duration,
}

impl DedupLog {
    /// Opens (creating if needed, 0600, never through a symlink) the log
    /// of `mbox`, with the mailbox's lock timeout.
    pub fn open(mbox: &Mailbox) -> Result<DedupLog> {
        Self::open_in(mbox.dir(), mbox.lock_timeout)
    }

    /// Opens the log in the mailbox directory `dir`.
    pub fn open_in(dir: &Dir, lock_timeout: Duration) -> Result<DedupLog> {
        let fd = dir
            .fd
            .try_clone()
            .map_err(|e| Error::io("dup", &dir.path, e))?;
        let dir = Dir {
            fd,
            path: dir.path.clone(),
        };
        let path = dir.child_path(fsutil::os(DEDUP_NAME.as_bytes()));
        let file = Arc::new(open_log(&dir)?);
        Ok(DedupLog {
            dir,
            file,
            path,
            lock_timeout,
        })
    }

    /// The log file's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Takes the log's exclusive lock (waiting at most the lock timeout:
    /// `Error::LockTimeout`) and reads every entry. A rewrite replaces the
    /// file by rename while holding the old file's lock, so after locking
    /// the file must still be the one at the path; if not, reopen.
    pub fn lock(&mut self) -> Result<LockedLog<'_>> {
        for _ in 0..100 {
            let guard = LockGuard::acquire(
                self.file.clone(),
                LockKind::Exclusive,
                self.lock_timeout,
                &self.path,
            )?;
            if self.is_current()? {
                let (entries, damaged, len) = self.read_all()?;
                return Ok(LockedLog {
                    log: self,
                    _guard: guard,
                    entries,
                    damaged,
                    len,
                });
            }
            drop(guard);
            self.file = Arc::new(open_log(&self.dir)?);
        }
        Err(Error::corrupt(
            &self.path,
            0,
            "duplicate log keeps being replaced",
        ))
    }

    fn is_current(&self) -> Result<bool> {
        let name = fsutil::os(DEDUP_NAME.as_bytes());
        let at_path = match nix::sys::stat::fstatat(
            self.dir.fd.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        ) {
            Ok(st) => st,
            Err(nix::Error::ENOENT) => return Ok(false),
            Err(e) => return Err(Error::nix("stat", &self.path, e)),
        };
        let ours = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?;
        Ok(ours.dev() == at_path.st_dev as u64 && ours.ino() == at_path.st_ino as u64)
    }

    /// Reads the newest `MAX_ENTRIES` entries' worth of bytes (older
    /// ones, only present in a log nobody pruned, are not looked at).
    /// Returns the valid entries, the number of damaged ones, and the
    /// file length.
    fn read_all(&self) -> Result<(Vec<Entry>, usize, u64)> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        let limit = (MAX_ENTRIES * ENTRY_SIZE) as u64;
        let start = if len > limit {
            (len - limit) / ENTRY_SIZE as u64 * ENTRY_SIZE as u64
        } else {
            0
        };
        let mut buf = vec![0u8; (len - start) as usize];
        let n = fsutil::read_at_most(&self.file, &mut buf, start, &self.path)?;
        buf.truncate(n);
        let mut entries = Vec::with_capacity(n / ENTRY_SIZE);
        let mut damaged = 0;
        for (i, chunk) in buf.chunks(ENTRY_SIZE).enumerate() {
            match Entry::decode(chunk) {
                Some(e) => entries.push(e),
                None => {
                    damaged += 1;
                    if damaged <= MAX_WARNINGS {
                        let offset = start + (i * ENTRY_SIZE) as u64;
                        let what = if chunk.len() < ENTRY_SIZE {
                            "truncated"
                        } else {
                            "CRC mismatch"
                        };
                        tracing::warn!(
                            path = %self.path.display(),
                            offset,
                            "damaged duplicate log entry ignored ({what}) at byte offset {offset}"
                        );
                    }
                }
            }
        }
        if damaged > MAX_WARNINGS {
            tracing::warn!(
                path = %self.path.display(),
                damaged,
                "{} more damaged duplicate log entries ignored",
                damaged - MAX_WARNINGS
            );
        }
        Ok((entries, damaged, len))
    }
}

fn open_log(dir: &Dir) -> Result<File> {
    // Read-write: an exclusive OFD lock needs a writable descriptor.
    dir.open_file(
        fsutil::os(DEDUP_NAME.as_bytes()),
        OFlag::O_RDWR | OFlag::O_CREAT,
    )
}

/// The log under its exclusive lock, with the entries read when it was
/// taken. Dropping it releases the lock.
pub struct LockedLog<'a> {
    log: &'a mut DedupLog,
    _guard: LockGuard,
    entries: Vec<Entry>,
    damaged: usize,
    len: u64,
}

impl LockedLog<'_> {
    /// Whether `key` was recorded within the last `window` seconds.
    pub fn contains(&self, key: &Key, now: i64, window: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.key == *key && e.is_live(now, window))
    }

    /// The valid entries, oldest first.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries failed their check when the lock was taken.
    pub fn damaged(&self) -> usize {
        self.damaged
    }

    /// Records `keys` as committed at `now`. Call only after the commit
    /// returned Ok (never before: a recorded key whose message was not
    /// stored would make a retry of it be suppressed, a loss). Appends,
    /// or rewrites the log without expired and damaged entries when it
    /// has grown (see [`PRUNE_AT`], [`MAX_ENTRIES`]) or holds damage.
    /// No fsync (see the module comment).
    pub fn record(&mut self, keys: &[Key], now: i64, window: u64) -> Result<()> {
        let new: Vec<Entry> = keys.iter().map(|&key| Entry { time: now, key }).collect();
        let total = self.entries.len() + self.damaged + new.len();
        let live = self
            .entries
            .iter()
            .filter(|e| e.is_live(now, window))
            .count()
            + new.len();
        if self.damaged > 0 || total > MAX_ENTRIES || (total > PRUNE_AT && total > 2 * live) {
            let mut keep: Vec<Entry> = self
                .entries
                .iter()
                .filter(|e| e.is_live(now, window))
                .copied()
                .chain(new)
                .collect();
            if keep.len() > MAX_ENTRIES / 2 {
                keep.drain(..keep.len() - MAX_ENTRIES / 2);
            }
            self.rewrite(&keep)?;
            self.entries = keep;
            self.damaged = 0;
            self.len = (self.entries.len() * ENTRY_SIZE) as u64;
            return Ok(());
        }
        if new.is_empty() {
            return Ok(());
        }
        // A torn tail (not a whole entry) stays where it is, counted as
        // one damaged entry; new entries start at the next entry boundary.
        let at = self.len.div_ceil(ENTRY_SIZE as u64) * ENTRY_SIZE as u64;
        let bytes: Vec<u8> = new.iter().flat_map(|e| e.encode()).collect();
        fsutil::write_all_at(&self.log.file, &bytes, at, &self.log.path)?;
        self.len = at + bytes.len() as u64;
        self.entries.extend(new);
        Ok(())
    }

    /// Replaces the file by `entries` (temp file, then rename, under the
    /// lock we hold on the old file; lockers of the old file notice the
    /// replacement in [`DedupLog::lock`]). This must be the last write of
    /// this critical section: a process opening the new file may lock it
    /// as soon as the rename is done.
    fn rewrite(&mut self, entries: &[Entry]) -> Result<()> {
        let dir = &self.log.dir;
        let tmp = fsutil::os(DEDUP_TMP_NAME.as_bytes());
        let tmp_path = dir.child_path(tmp);
        let f = dir.open_file(tmp, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC)?;
        let bytes: Vec<u8> = entries.iter().flat_map(|e| e.encode()).collect();
        let written = fsutil::write_all_at(&f, &bytes, 0, &tmp_path)
            .and_then(|()| dir.rename(tmp, dir, fsutil::os(DEDUP_NAME.as_bytes())));
        if let Err(e) = written {
            let _ = dir.unlink(tmp);
            return Err(e);
        }
        tracing::debug!(path = %self.log.path.display(), entries = entries.len(), "duplicate log rewritten");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn setup() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        (t, d)
    }

    const SEC: Duration = Duration::from_secs(1);

    #[test]
    fn dedup_keys_normalize_and_differ() {
        let a = Key::from_message_id("  <a@x>\r\n").unwrap();
        assert_eq!(Key::from_message_id("<a@x>"), Some(a));
        assert_eq!(Key::from_message_id("\r\n <a@x>"), Some(a));
        // Angle brackets are kept as sent: a different value, a different key.
        assert_ne!(Key::from_message_id("a@x"), Some(a));
        assert_ne!(Key::from_message_id("<A@x>"), Some(a));
        assert_eq!(Key::from_message_id(" \t "), None);
        assert_eq!(Key::from_message_id(""), None);
    }

    #[test]
    fn dedup_entry_roundtrip_and_crc() {
        let e = Entry {
            time: 1_700_000_000,
            key: Key::from_message_id("<k@x>").unwrap(),
        };
        let b = e.encode();
        assert_eq!(Entry::decode(&b), Some(e));
        for i in 0..ENTRY_SIZE {
            let mut bad = b;
            bad[i] ^= 0x40;
            assert_eq!(Entry::decode(&bad), None, "byte {i} flipped");
        }
        assert_eq!(Entry::decode(&b[..31]), None);
    }

    #[test]
    fn dedup_lookup_record_and_window() {
        let (_t, dir) = setup();
        let k1 = Key::from_message_id("<1@x>").unwrap();
        let k2 = Key::from_message_id("<2@x>").unwrap();
        let mut log = DedupLog::open_in(&dir, SEC).unwrap();
        {
            let mut l = log.lock().unwrap();
            assert!(!l.contains(&k1, 1000, 60));
            l.record(&[k1], 1000, 60).unwrap();
            assert!(l.contains(&k1, 1000, 60));
        }
        // A second handle sees it through the file.
        let mut other = DedupLog::open_in(&dir, SEC).unwrap();
        let l = other.lock().unwrap();
        assert!(l.contains(&k1, 1000, 60));
        assert!(l.contains(&k1, 1059, 60));
        assert!(!l.contains(&k1, 1060, 60), "outside the window");
        assert!(!l.contains(&k1, 1000 - 61, 60), "far in the future");
        assert!(!l.contains(&k2, 1000, 60));
        assert_eq!(l.entries().len(), 1);
        let len = std::fs::metadata(dir.path.join(DEDUP_NAME)).unwrap().len();
        assert_eq!(len, ENTRY_SIZE as u64);
    }

    #[test]
    fn dedup_lock_excludes_and_times_out() {
        let (_t, dir) = setup();
        let mut a = DedupLog::open_in(&dir, SEC).unwrap();
        let mut b = DedupLog::open_in(&dir, Duration::from_millis(30)).unwrap();
        let held = a.lock().unwrap();
        assert!(matches!(b.lock(), Err(Error::LockTimeout { .. })));
        drop(held);
        b.lock().unwrap();
    }

    #[test]
    fn dedup_prune_keeps_live_entries_and_bounds_the_file() {
        let (_t, dir) = setup();
        let mut log = DedupLog::open_in(&dir, SEC).unwrap();
        let key = |i: usize| Key::from_message_id(&format!("<{i}@x>")).unwrap();
        // PRUNE_AT expired entries (time 100), then live ones at 10_000.
        {
            let mut l = log.lock().unwrap();
            let old: Vec<Key> = (0..PRUNE_AT).map(key).collect();
            l.record(&old, 100, 60).unwrap();
        }
        let path = dir.path.join(DEDUP_NAME);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, (PRUNE_AT * ENTRY_SIZE) as u64, "no prune yet");
        {
            let mut l = log.lock().unwrap();
            // Crossing PRUNE_AT with most entries expired: rewritten.
            l.record(&[key(100_000)], 10_000, 60).unwrap();
            assert_eq!(l.entries().len(), 1);
        }
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, ENTRY_SIZE as u64);
        assert!(!dir.path.join(DEDUP_TMP_NAME).exists());
        // The handle follows the replaced file; another handle that had the
        // old file open notices the replacement too.
        let mut l = log.lock().unwrap();
        assert!(l.contains(&key(100_000), 10_000, 60));
        assert!(!l.contains(&key(5), 10_000, 60));
        // Many live entries: appended, the file grows past PRUNE_AT (no
        // rewrite on every delivery while most entries are live) ...
        let live: Vec<Key> = (0..PRUNE_AT * 2).map(key).collect();
        l.record(&live, 10_000, 60).unwrap();
        assert_eq!(l.entries().len(), PRUNE_AT * 2 + 1);
        drop(l);
        // ... but never past MAX_ENTRIES.
        let mut l = log.lock().unwrap();
        let many: Vec<Key> = (0..MAX_ENTRIES).map(|i| key(i + 1_000_000)).collect();
        l.record(&many, 10_001, 60).unwrap();
        assert_eq!(l.entries().len(), MAX_ENTRIES / 2);
        assert!(l.contains(&key(MAX_ENTRIES - 1 + 1_000_000), 10_001, 60));
        drop(l);
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, (MAX_ENTRIES / 2 * ENTRY_SIZE) as u64);
    }

    #[test]
    fn dedup_replaced_file_is_followed_by_a_waiting_handle() {
        let (_t, dir) = setup();
        let key = |i: usize| Key::from_message_id(&format!("<{i}@x>")).unwrap();
        let mut a = DedupLog::open_in(&dir, SEC).unwrap();
        // b opened the original file before a rewrites it.
        let mut b = DedupLog::open_in(&dir, Duration::from_secs(5)).unwrap();
        let mut l = a.lock().unwrap();
        let old: Vec<Key> = (0..PRUNE_AT).map(key).collect();
        l.record(&old, 100, 60).unwrap();
        l.record(&[key(999_999)], 10_000, 60).unwrap(); // rewrite
        let waiter = std::thread::spawn(move || {
            let l = b.lock().unwrap();
            (l.contains(&key(999_999), 10_000, 60), l.entries().len())
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(l);
        assert_eq!(waiter.join().unwrap(), (true, 1));
    }

    #[test]
    fn dedup_damaged_entries_are_ignored_then_dropped() {
        let (_t, dir) = setup();
        let k = |s: &str| Key::from_message_id(s).unwrap();
        let mut log = DedupLog::open_in(&dir, SEC).unwrap();
        log.lock()
            .unwrap()
            .record(&[k("<a@x>"), k("<b@x>"), k("<c@x>")], 1000, 60)
            .unwrap();
        // Damage the second entry and add a torn tail.
        let path = dir.path.join(DEDUP_NAME);
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(b"garbage", (ENTRY_SIZE + 10) as u64)
            .unwrap();
        f.write_all_at(b"tail", (3 * ENTRY_SIZE) as u64).unwrap();
        let mut l = log.lock().unwrap();
        assert_eq!(l.damaged(), 2);
        assert!(l.contains(&k("<a@x>"), 1000, 60));
        assert!(!l.contains(&k("<b@x>"), 1000, 60), "never trusted");
        assert!(l.contains(&k("<c@x>"), 1000, 60));
        // The next record rewrites the log without the damage.
        l.record(&[k("<d@x>")], 1000, 60).unwrap();
        drop(l);
        let l = log.lock().unwrap();
        assert_eq!(l.damaged(), 0);
        assert_eq!(l.entries().len(), 3);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            3 * ENTRY_SIZE as u64
        );
        // A file of pure garbage: no panic, nothing trusted.
        drop(l);
        std::fs::write(&path, vec![0xA5; 1000]).unwrap();
        let mut l = log.lock().unwrap();
        assert!(l.entries().is_empty());
        assert_eq!(l.damaged(), 1000usize.div_ceil(ENTRY_SIZE));
        l.record(&[k("<e@x>")], 1000, 60).unwrap();
        assert_eq!(l.entries().len(), 1);
    }

    #[test]
    fn dedup_symlink_is_refused() {
        let (t, dir) = setup();
        std::fs::write(t.path().join("elsewhere"), b"").unwrap();
        std::os::unix::fs::symlink("elsewhere", t.path().join(DEDUP_NAME)).unwrap();
        assert!(matches!(
            DedupLog::open_in(&dir, SEC),
            Err(Error::Symlink(_))
        ));
    }
}
