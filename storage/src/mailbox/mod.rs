//! An open mailbox: every operation is bound to this handle (no global
//! "current mailbox"), and every write follows the ordering in
//! `docs/PROTOCOL.md`: exclusive lock, data, records, header with the
//! generation bumped last, fsync, unlock.
//!
//! This file holds the handle itself: opening it, taking its lock
//! (following a repack's replacement, completing a crashed MOVE, repairing
//! after a dead writer: PROTOCOL.md §1), the header, the keyword table,
//! and the entry points of a reader's look (snapshot, changes since a
//! mark: §7). Each operation has its own file:
//!
//! - `staging.rs`: streaming a message into `.stage` (§3, steps 1-2);
//! - `append.rs`: committing staged messages (§3, §3a);
//! - `read.rs`: reading a message's bytes;
//! - `flags.rs`: STORE (§4);
//! - `expunge.rs`: EXPUNGE and the in-place commit both share (§4);
//! - `batch.rs`: group commit of flag changes and expunges (§4a);
//! - `locate.rs`: finding the records an in-place commit works on (§4);
//! - `changes.rs`, `snapshot.rs`: reader checks (§4b, §7);
//! - `repack.rs`: dropping expunged records and files (§5);
//! - `recover.rs`: repairs after a crash (§1, §3, §5).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{Header, MAX_KEYWORDS, Record};
use crate::fsutil::{self, Dir};
use crate::index::{Durability, IndexFile, WRITER_MARK_OFFSET};
use crate::lock::{LockGuard, LockKind};
use crate::meta;
pub use crate::meta::Meta;
use crate::names::MailboxName;

mod append;
mod batch;
mod changes;
mod expunge;
mod flags;
mod locate;
mod read;
mod recover;
mod repack;
mod snapshot;
mod staging;
pub(crate) use append::{UidPlan, check_room};
pub use batch::{BatchOp, BatchOutcome};
pub(crate) use expunge::expunge_in;
pub(crate) use flags::{FlagChange, Recount};
pub use flags::{FlagOp, StoreOutcome};
pub(crate) use locate::{Rewrite, Wanted};
pub use recover::RecoverOutcome;
pub use repack::RepackOutcome;
pub use staging::{AppendOptions, StagedMessage};

pub use crate::layout::{STAGE_DIR, message_file_name, parse_message_file_name};

/// Checks records read in index order from record `recno` on: UIDs
/// ascend strictly and stay within the header's `last_uid` (corruption
/// is reported at the offending record's offset).
pub(crate) struct UidOrder {
    prev: u32,
    recno: u32,
    last_uid: u32,
}

impl UidOrder {
    pub(crate) fn new(h: &Header, recno: u32) -> UidOrder {
        UidOrder {
            prev: 0,
            recno,
            last_uid: h.last_uid,
        }
    }

    /// The next record, read from the index at `path`.
    pub(crate) fn next(&mut self, r: &Record, path: &std::path::Path) -> Result<()> {
        let (prev, recno) = (self.prev, self.recno);
        if r.uid <= prev || r.uid > self.last_uid {
            return Err(Error::corrupt(
                path,
                Header::record_offset(recno),
                format!(
                    "record {recno}: UID {} out of order (previous {prev}, last UID {})",
                    r.uid, self.last_uid
                ),
            ));
        }
        self.prev = r.uid;
        self.recno += 1;
        Ok(())
    }
}

/// What changed since a session's last look (see [`Mailbox::changes_since`]).
#[derive(Clone, Debug)]
pub struct Changes {
    /// The header now.
    pub header: Header,
    /// When `full`, every record of the index; otherwise the appended
    /// records plus earlier records whose MODSEQ is newer than the mark.
    pub records: Vec<Record>,
    /// The records are the whole index (first look, or another index file after a repack): recompute expunges by UID.
    pub full: bool,
    /// Present when the keyword table changed.
    pub meta: Option<Meta>,
    /// How the records were found: `true` when the change log named them
    /// (`changelog.rs`), `false` after a read of the appended records only
    /// or of every record.
    pub from_log: bool,
}

/// Where a session last looked; cheap to compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewMark {
    /// Which index file of this handle (bumped when a repack replaced it).
    pub epoch: u64,
    /// The generation looked at.
    pub generation: u64,
    /// Records in the index then.
    pub num_records: u32,
    /// HIGHESTMODSEQ then.
    pub highestmodseq: u64,
}

/// Where the index stood when a commit took the exclusive lock and where
/// it left it, for a commit that was one call's step alone (no other
/// session's step joined it, `Mailbox::write_batch`). A session view at
/// `before` that folds the call's outcome is then at `after` without
/// reading anything again ([`crate::SessionView::fold_own_store`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitSpan {
    /// The index as the commit found it.
    pub before: ViewMark,
    /// The index as the commit left it (equal to `before` when nothing
    /// changed).
    pub after: ViewMark,
}

/// A consistent read of header and records.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The header.
    pub header: Header,
    /// Every record, live and expunged, in index order (ascending UID).
    pub records: Vec<Record>,
    /// The keyword name table.
    pub meta: Meta,
    /// Where this read looked (for a later [`Mailbox::changes_since`]).
    pub mark: ViewMark,
}

impl Snapshot {
    /// UIDs of the records not expunged, ascending.
    pub fn live_uids(&self) -> Vec<u32> {
        self.records
            .iter()
            .filter(|r| !r.is_expunged())
            .map(|r| r.uid)
            .collect()
    }
}

/// An open handle on one mailbox: its directory, index and staging area.
///
/// Open one per session with [`crate::Store::open_mailbox`]. Every method
/// takes the mailbox lock it needs for the call only (never across calls),
/// so handles in any number of threads and processes work on one mailbox
/// at once; a handle itself is used by one thread at a time (`&mut self`).
///
/// ```
/// # fn main() -> mailstore::Result<()> {
/// use mailstore::{AppendOptions, FlagOp, Flags, MailboxName, Options, Store, UserName};
/// # let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), Options::default())?;
/// let user = UserName::new("alice")?;
/// store.ensure_mailbox(&user, &MailboxName::inbox())?;
/// let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
/// let uid = mbox.append(&b"Subject: hi\r\n\r\nhello\r\n"[..], AppendOptions::default())?;
/// assert_eq!(mbox.read_message(uid)?, b"Subject: hi\r\n\r\nhello\r\n");
/// mbox.store(&[uid], FlagOp::Add, Flags::DELETED, &[], None)?;
/// assert_eq!(mbox.expunge(None, true)?, vec![uid]);
/// assert_eq!(mbox.header()?.exists, 0);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Mailbox {
    name: MailboxName,
    /// Shared with the index handle, which checks unordered appends here.
    pub(crate) dir: std::sync::Arc<Dir>,
    pub(crate) stage: std::sync::Arc<Dir>,
    pub(crate) index: IndexFile,
    /// Bumped whenever the index file is reopened after a repack.
    epoch: u64,
    pub(crate) meta: Meta,
    /// Generation of the cached keyword table; `None` forces a reload
    /// (set while the cache holds names not yet committed).
    pub(crate) meta_generation: Option<u32>,
    durability: Durability,
    pub(crate) lock_timeout: Duration,
    /// Stage small messages for an unordered append (PROTOCOL.md §3).
    unordered_appends: bool,
    /// The directory's device and inode, once asked for ([`Self::dir_id`]).
    dir_id: std::sync::OnceLock<(u64, u64)>,
}

impl Mailbox {
    pub(crate) fn open_dir(
        name: MailboxName,
        dir: Dir,
        durability: Durability,
        lock_timeout: Duration,
    ) -> Result<Mailbox> {
        let dir = std::sync::Arc::new(dir);
        let index = match IndexFile::open_shared(&dir) {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                return Err(Error::NoSuchMailbox(name.to_string()));
            }
            Err(e) => return Err(e),
        };
        // Vanishing under us: a delete is removing this directory.
        let gone = |e: Error| match e {
            e if e.is_not_found() => Error::NoSuchMailbox(name.to_string()),
            e => e,
        };
        // `.stage` exists in every mailbox but the oldest: opened first,
        // made only when missing (one call per open, not two).
        let stage_name = fsutil::os(STAGE_DIR.as_bytes());
        let stage = match dir.open_dir(stage_name) {
            Ok(s) => s,
            Err(e) if e.is_not_found() => {
                dir.mkdir(stage_name).map_err(gone)?;
                dir.open_dir(stage_name).map_err(gone)?
            }
            Err(e) => return Err(gone(e)),
        };
        let stage = std::sync::Arc::new(stage);
        Ok(Mailbox {
            name,
            dir,
            stage,
            index,
            epoch: 0,
            meta: Meta::default(),
            meta_generation: None,
            durability,
            lock_timeout,
            unordered_appends: true,
            dir_id: std::sync::OnceLock::new(),
        })
    }

    /// The mailbox's name.
    pub fn name(&self) -> &MailboxName {
        &self.name
    }
    /// The mailbox directory.
    pub fn dir(&self) -> &Dir {
        &self.dir
    }
    /// The mailbox directory's device and inode: who else has this
    /// mailbox open, whatever name they opened it by (a rename or a
    /// repack does not change them). Asked of the system once per handle,
    /// whose directory never changes.
    pub fn dir_id(&self) -> Result<(u64, u64)> {
        if let Some(&id) = self.dir_id.get() {
            return Ok(id);
        }
        let st = nix::sys::stat::fstat(std::os::fd::AsFd::as_fd(&self.dir.fd)).map_err(|e| {
            Error::Io {
                op: "fstat",
                path: self.dir.path.clone(),
                source: e.into(),
            }
        })?;
        Ok(*self.dir_id.get_or_init(|| (st.st_dev, st.st_ino)))
    }
    /// Whether `other` has the same index file open as this handle: the
    /// same mailbox, not merely the same name. A mailbox renamed away with
    /// another renamed onto its name, or deleted and created again, has
    /// another file; so has one repacked since either handle last looked
    /// (false then, though it is the same mailbox: ask again after a look).
    pub fn same_index(&self, other: &Mailbox) -> Result<bool> {
        self.same_index_as(&other.index.file)
    }
    /// Whether `file` is this handle's index file (the same device and
    /// inode).
    pub(crate) fn same_index_as(&self, file: &std::fs::File) -> Result<bool> {
        crate::index::same_file(&self.index.file, file, &self.index.path)
    }
    /// Which index file of this handle its marks are about (bumped when a
    /// repack replaced the file under it).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }
    /// A second descriptor of the index file this handle reads now.
    pub(crate) fn index_file(&self) -> Result<std::fs::File> {
        self.index.file.try_clone().map_err(|e| Error::Io {
            op: "dup",
            path: self.index.path.clone(),
            source: e,
        })
    }
    /// The path of its `.index` file.
    pub fn index_path(&self) -> &std::path::Path {
        &self.index.path
    }
    /// The durability it writes with (from the store's options).
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Like [`Self::lock_index`], but first completes a MOVE that a
    /// crashed process left half-done (see `transfer.rs`), so no caller
    /// ever sees a moved message in both mailboxes.
    pub(crate) fn lock_current(&mut self, kind: LockKind) -> Result<(LockGuard, Header)> {
        for _ in 0..100 {
            let (guard, h) = self.lock_index(kind)?;
            if !h.has_pending_move() {
                return Ok((guard, h));
            }
            drop(guard);
            crate::transfer::resolve_pending(self)?;
        }
        Err(Error::corrupt(
            &self.index.path,
            0,
            "pending move keeps reappearing",
        ))
    }

    /// Takes `kind` on the current index file and reads its header,
    /// following a repack's replacement if needed.
    pub(crate) fn lock_index(&mut self, kind: LockKind) -> Result<(LockGuard, Header)> {
        for _ in 0..100 {
            let guard = LockGuard::acquire(
                self.index.file.clone(),
                kind,
                self.lock_timeout,
                &self.index.path,
            )?;
            let read = self.index.read_header_detail()?;
            // Before the header sizes anything, and before a writer marks
            // the file: a crafted or damaged count is refused here.
            self.index.check_in_use(&read.header, read.slot)?;
            if kind == LockKind::Exclusive
                && let Some((offset, what)) = read.other_damage()
            {
                // The damaged slot may have held the newest commit; writing
                // on top of the older one could reuse its UIDs and replace
                // acknowledged messages. Refuse until reconstruct.
                return Err(Error::corrupt(
                    &self.index.path,
                    offset,
                    format!(
                        "damaged header slot ({what}); refusing to write until `idx-admin reconstruct`"
                    ),
                ));
            }
            let h = read.usable(&self.index.path)?.clone();
            if h.is_deleted() {
                return Err(Error::MailboxDeleted);
            }
            if !h.is_superseded() {
                if let (Some(_), Ok(torn), LockKind::Exclusive) = (&read.torn, &read.other, kind) {
                    // The newest commit was cut by a power loss: never
                    // acknowledged, but its generation and UIDs may have
                    // been seen; retire them before anything is written.
                    self.retire_torn_commit(&h, torn)?;
                    drop(guard);
                    continue;
                }
                if read.writer_mark {
                    // Only a dead writer leaves the mark where a locker can
                    // see it: repair under the exclusive lock first.
                    if kind == LockKind::Shared {
                        drop(guard);
                        drop(self.lock_index(LockKind::Exclusive)?);
                        continue;
                    }
                    self.repair_locked(&h)?;
                    let h = self.index.read_header()?;
                    return self.mark_writer(guard, h);
                }
                if kind == LockKind::Exclusive {
                    return self.mark_writer(guard, h);
                }
                return Ok((guard, h));
            }
            drop(guard);
            let reopened = IndexFile::open_shared(&self.dir)?;
            if crate::index::same_file(&reopened.file, &self.index.file, &self.index.path)? {
                // Marked superseded but still the file at the path: a
                // replacement died between marking and renaming.
                self.roll_back_interrupted_replace()?;
            } else {
                self.index = reopened;
                self.epoch += 1;
            }
        }
        Err(Error::corrupt(
            &self.index.path,
            0,
            "index keeps being replaced",
        ))
    }

    /// Sets the writer mark for the exclusive section `guard` holds; the
    /// guard clears it on release.
    fn mark_writer(&self, guard: LockGuard, h: Header) -> Result<(LockGuard, Header)> {
        self.index.set_writer_mark(true)?;
        Ok((guard.clearing_on_release(WRITER_MARK_OFFSET), h))
    }

    pub(crate) fn refresh_meta(&mut self, h: &Header) -> Result<bool> {
        if self.meta_generation != Some(h.meta_generation) {
            self.meta = Meta::load(&self.dir)?;
            self.meta_generation = Some(h.meta_generation);
            return Ok(true);
        }
        Ok(false)
    }

    /// The keyword name table as last read: keyword number `i` is the `i`th name.
    pub fn keyword_names(&self) -> &[String] {
        &self.meta.keywords
    }

    /// Header only: one shared lock and one read.
    pub fn header(&mut self) -> Result<Header> {
        let (_g, h) = self.lock_current(LockKind::Shared)?;
        Ok(h)
    }

    /// The mark of a look at header `h` through this handle.
    pub fn mark_of(&self, h: &Header) -> ViewMark {
        ViewMark {
            epoch: self.epoch,
            generation: h.generation,
            num_records: h.num_records,
            highestmodseq: h.highestmodseq,
        }
    }

    /// Header, every record and the keyword table, read under one shared lock.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        let (g, h) = self.lock_current(LockKind::Shared)?;
        let records = self.index.read_records(0, h.num_records)?;
        self.check_uid_order(&h, &records, 0)?;
        self.refresh_meta(&h)?;
        drop(g);
        Ok(Snapshot {
            mark: self.mark_of(&h),
            header: h,
            records,
            meta: self.meta.clone(),
        })
    }

    /// What changed since `mark`. `None` when nothing did: that answer
    /// costs one shared lock and one header read, whatever the size of the
    /// mailbox. When only appends happened since the mark (the header's
    /// `inplace_modseq` is not newer than it), the cost is a read of the
    /// appended records; after a flag change or expunge, a read of the
    /// records the change log names (`changelog.rs`), or when it cannot
    /// answer, of every record to find those with a newer MODSEQ.
    pub fn changes_since(&mut self, mark: &ViewMark) -> Result<Option<Changes>> {
        let (g, h) = self.lock_current(LockKind::Shared)?;
        if self.epoch == mark.epoch && h.generation == mark.generation {
            return Ok(None);
        }
        let full = self.epoch != mark.epoch || h.num_records < mark.num_records;
        if !full && h.inplace_modseq <= mark.highestmodseq {
            // Only appends since the mark: read just the new records, plus
            // the one before them to check that UIDs keep ascending.
            let from = mark.num_records.saturating_sub(1);
            let mut fresh = self.index.read_records(from, h.num_records)?;
            self.check_uid_order(&h, &fresh, from)?;
            if mark.num_records > 0 && !fresh.is_empty() {
                fresh.remove(0);
            }
            let meta_changed = self.refresh_meta(&h)?;
            drop(g);
            return Ok(Some(Changes {
                header: h,
                records: fresh,
                full,
                meta: meta_changed.then(|| self.meta.clone()),
                from_log: false,
            }));
        }
        if !full && let Some(records) = self.changes_from_log(mark, &h)? {
            let meta_changed = self.refresh_meta(&h)?;
            drop(g);
            return Ok(Some(Changes {
                header: h,
                records,
                full,
                meta: meta_changed.then(|| self.meta.clone()),
                from_log: true,
            }));
        }
        let records = if full {
            let all = self.index.read_records(0, h.num_records)?;
            self.check_uid_order(&h, &all, 0)?;
            all
        } else {
            // Every record read, only the changed ones kept: what a flag
            // change costs a session is not a copy of the index.
            let mut changed = Vec::new();
            let mut recno = 0u32;
            self.each_in_order(&h, |r| {
                if recno >= mark.num_records || r.modseq > mark.highestmodseq {
                    changed.push(r);
                }
                recno += 1;
            })?;
            changed
        };
        let meta_changed = self.refresh_meta(&h)?;
        drop(g);
        Ok(Some(Changes {
            header: h,
            records,
            full,
            meta: meta_changed.then(|| self.meta.clone()),
            from_log: false,
        }))
    }

    pub(crate) fn check_uid_order(
        &self,
        h: &Header,
        records: &[Record],
        first_recno: u32,
    ) -> Result<()> {
        let mut order = UidOrder::new(h, first_recno);
        records
            .iter()
            .try_for_each(|r| order.next(r, &self.index.path))
    }

    /// Under the exclusive lock, before keywords are looked up or added:
    /// start from the table on disk, not from this handle's copy. A failed
    /// or killed commit can leave names in `.meta` (or in this handle's
    /// memory) that no header `meta_generation` covers. Using such a
    /// name's index without bumping `meta_generation` would leave other
    /// handles with a table that lacks it, and a later save from one of
    /// them could give that index to another name. Extending what is on
    /// disk keeps the file append-only, so an index never changes meaning.
    /// Returns true if the disk differed (the caller then bumps
    /// `meta_generation` so every handle reloads).
    pub(crate) fn reload_meta_for_write(&mut self) -> Result<bool> {
        let disk = Meta::load(&self.dir)?;
        let differs = disk != self.meta;
        self.meta = disk;
        Ok(differs)
    }

    /// Adds unknown keyword names to the table; true if it changed.
    pub(crate) fn add_keywords(&mut self, names: &[String]) -> Result<bool> {
        // Validate first: a half-extended table must not outlive an error.
        for k in names {
            meta::validate_keyword(k)?;
        }
        let mut changed = false;
        for k in names {
            if self.meta.find(k).is_none() {
                if self.meta.keywords.len() >= MAX_KEYWORDS {
                    return Err(Error::TooManyKeywords(MAX_KEYWORDS));
                }
                self.meta.keywords.push(k.clone());
                self.meta_generation = None;
                changed = true;
            }
        }
        Ok(changed)
    }

    /// Holds the exclusive lock for `f` (store-level operations such as
    /// rename, and tests that need a held lock).
    pub fn with_exclusive<T>(&mut self, f: impl FnOnce(&Header) -> Result<T>) -> Result<T> {
        let (guard, h) = self.lock_current(LockKind::Exclusive)?;
        let r = f(&h);
        drop(guard);
        r
    }
}
