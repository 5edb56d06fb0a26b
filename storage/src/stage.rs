//! The staging directory `.stage/` after a commit: settling names and
//! restoring messages whose mailbox name a crash took away.
//!
//! An append links each staged file to its `UID.` name and commits the
//! index with a single fsync; it does not fsync the mailbox directory.
//! Until some later directory fsync, the new `UID.` name may not survive
//! a power loss, so the staged name stays: every committed message always
//! has a durable name, `.stage/NAME` (made durable with the file's own
//! fdatasync) or `UID.`. *Settling* fsyncs the mailbox directory once and
//! then drops the staged names that are no longer needed; it runs every
//! [`SETTLE_EVERY`] UIDs and in recovery. *Restoring* is the crash side:
//! a committed record whose `UID.` file is missing gets its name back from
//! the staged file with the same size and CRC32. See PROTOCOL.md §3.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::error::Result;
use crate::fault;
use crate::format::Record;
use crate::fsutil::{self, Dir};
use crate::layout::message_file_name;
use crate::lock::{LockKind, LockedFile};

/// An append that crosses a multiple of this many UIDs settles `.stage`:
/// one directory fsync per this many deliveries instead of one each.
pub const SETTLE_EVERY: u32 = 64;

/// What [`tidy`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tidy {
    /// Staged names dropped after the directory fsync made their `UID.`
    /// names durable.
    pub settled: usize,
    /// Committed messages whose `UID.` name was missing and was linked
    /// back from `.stage`.
    pub restored: Vec<u32>,
    /// Staged files of dead writers that belong to no committed record
    /// (moved into quarantine when they hold bytes, `quarantine.rs`).
    pub removed: usize,
}

/// A staged file nobody holds: its writer finished or died.
struct Unowned {
    name: Vec<u8>,
    file: LockedFile,
    nlink: u64,
    len: u64,
}

impl Unowned {
    /// One link and some content: a dead writer's uncommitted message,
    /// or (after a power loss) a committed message that lost its `UID.`
    /// name. An empty one may be a writer's file between its create and
    /// its lock.
    fn is_orphan(&self) -> bool {
        self.nlink == 1 && self.len > 0
    }
}

/// Staged files no live process holds whose link count `want` accepts.
/// A live writer (append or copy) holds an OFD lock on its staged file
/// from before it has a name until it is dropped, so a file we can lock
/// exclusively is ours to judge. The lock is kept (on the returned
/// descriptor) while we judge it. Names whose link count `want` rejects
/// cost one `fstatat` and are never opened.
fn unowned(stage: &Dir, want: impl Fn(u64) -> bool) -> Result<Vec<Unowned>> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    // Inodes this call holds locked, with how many of their staged names
    // it took: a second staged name of the same inode (a message moved
    // within its own mailbox, staged while its append's staged name was
    // still there) fails the probe against our own lock, yet is just as
    // unowned. It is taken only while the inode also has a name outside
    // `.stage` (its `UID.`), so two staged names of one inode are never
    // both dropped: the last one is judged as before (quarantine).
    let mut held = std::collections::HashMap::new();
    for (name, _) in stage.entries()? {
        let os = fsutil::os(&name);
        if !stage.nlink(os)?.is_some_and(&want) {
            continue;
        }
        // Read-write: an exclusive OFD lock needs a writable descriptor.
        let Ok(file) = stage.open_file(os, OFlag::O_RDWR).map(LockedFile::new) else {
            continue;
        };
        let path = stage.child_path(os);
        if crate::lock::lock(file.as_fd(), LockKind::Exclusive, Duration::ZERO, &path).is_err() {
            let ours = file.metadata().is_ok_and(|m| {
                held.get(&(m.dev(), m.ino()))
                    .is_some_and(|&n: &u64| m.nlink() > n + 1)
            });
            if !ours {
                continue;
            }
        }
        let Ok(meta) = file.metadata() else { continue };
        *held.entry((meta.dev(), meta.ino())).or_insert(0) += 1;
        // Zero: unlinked by someone else meanwhile.
        if meta.nlink() == 0 || !want(meta.nlink()) {
            continue;
        }
        out.push(Unowned {
            name,
            file,
            nlink: meta.nlink(),
            len: meta.len(),
        });
    }
    Ok(out)
}

/// Whether `.stage` holds an orphan (`Unowned::is_orphan`). Cheap when
/// there is none: a directory read and one `fstatat` per name; files of
/// live writers are probed but never counted.
pub fn has_orphan(stage: &Dir) -> Result<bool> {
    Ok(unowned(stage, |n| n == 1)?.iter().any(Unowned::is_orphan))
}

/// Fsyncs the mailbox directory, then drops the staged names of files
/// that also have a name elsewhere (a committed `UID.`, or a dead COPY's
/// link to its source). No lock needed: a name is only dropped after the
/// fsync that made the other name durable, and the other name existed
/// before the fsync (we saw the link count first).
pub fn settle(dir: &Dir, stage: &Dir, durable: bool) -> Result<Settled> {
    let (linked, single): (Vec<Unowned>, Vec<Unowned>) = unowned(stage, |_| true)?
        .into_iter()
        .partition(|u| u.nlink >= 2);
    let orphans = single.iter().any(Unowned::is_orphan);
    drop(single);
    Ok(Settled {
        settled: drop_names(dir, stage, &linked, durable)?,
        orphans,
    })
}

/// What [`settle`] did and saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    pub settled: usize,
    /// Saw an orphan (`Unowned::is_orphan`). Telling a dead writer's
    /// message from a committed one needs the records and the mailbox
    /// lock: [`tidy`].
    pub orphans: bool,
}

fn drop_names(dir: &Dir, stage: &Dir, names: &[Unowned], durable: bool) -> Result<usize> {
    if names.is_empty() {
        return Ok(0);
    }
    if durable {
        dir.fsync()?;
    }
    fault::point("settle.after_dir_fsync")?;
    for u in names {
        stage.unlink(fsutil::os(&u.name))?;
    }
    Ok(names.len())
}

/// Recovery, under the mailbox's exclusive lock with `records` the
/// committed records: restores missing `UID.` names of live records from
/// unowned staged files with the same size and CRC32, removes unowned
/// staged files that match nothing (a dead writer's uncommitted message),
/// then settles.
pub fn tidy(dir: &Dir, stage: &Dir, records: &[Record], durable: bool) -> Result<Tidy> {
    let mut out = Tidy::default();
    let (linked, single): (Vec<Unowned>, Vec<Unowned>) = unowned(stage, |_| true)?
        .into_iter()
        .partition(|u| u.nlink >= 2);
    let mut settle_now = linked;
    if !single.is_empty() {
        // Records a staged file could belong to: same size, and no file
        // with the record's size and CRC32 under `UID.` (none, or an
        // older file whose removal a power cut undid).
        let sizes: HashSet<u64> = single.iter().map(|u| u.len).collect();
        let mut missing: Vec<&Record> = Vec::new();
        for r in records
            .iter()
            .filter(|r| !r.is_expunged() && sizes.contains(&r.size))
        {
            if !crate::unordered::on_disk_as_recorded(dir, r)? {
                missing.push(r);
            }
        }
        for u in single {
            let path = stage.child_path(fsutil::os(&u.name));
            let mut matched = None;
            // An empty file may be a live writer's just-created one that
            // our probe locked before it could; never take it for a
            // message (an empty message needs no stage file to restore).
            if u.is_orphan() && missing.iter().any(|r| r.size == u.len) {
                let crc = crate::fsutil::crc_of_file(&u.file, &path)?;
                matched = missing
                    .iter()
                    .position(|r| r.size == u.len && r.message_crc == crc);
            }
            match matched {
                Some(i) => {
                    let r = missing.swap_remove(i);
                    let name = message_file_name(r.uid);
                    // A file at the name has other bytes than the record
                    // says (the debris of an older commit that a power cut
                    // brought back, or damage): kept in quarantine.
                    crate::quarantine::link_taking(
                        stage,
                        fsutil::os(&u.name),
                        dir,
                        fsutil::os(name.as_bytes()),
                        crate::quarantine::Reason::Replaced,
                        durable,
                    )?;
                    tracing::warn!(
                        path = %dir.child_path(fsutil::os(name.as_bytes())).display(),
                        uid = r.uid,
                        "restored a committed message from .stage (its name was lost in a crash)"
                    );
                    out.restored.push(r.uid);
                    settle_now.push(u);
                }
                None if u.is_orphan() => {
                    // A writer killed before its commit, most likely; but
                    // it holds a whole message's worth of bytes, and files
                    // win over the index: moved aside, never unlinked.
                    crate::quarantine::keep(
                        dir,
                        stage,
                        fsutil::os(&u.name),
                        crate::quarantine::Reason::Stage,
                    )?;
                    out.removed += 1;
                }
                None => {
                    // Empty: nothing to keep.
                    stage.unlink(fsutil::os(&u.name))?;
                    out.removed += 1;
                }
            }
        }
    }
    out.settled = drop_names(dir, stage, &settle_now, durable)?;
    Ok(out)
}
