//! An open mailbox: every operation is bound to this handle (no global
//! "current mailbox"), and every write follows the ordering in
//! `docs/PROTOCOL.md`: exclusive lock, data, records, header with the
//! generation bumped last, fsync, unlock.

use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fault;
use crate::format::{Flags, Header, Keywords, MAX_KEYWORDS, MAX_ZONE_MINUTES, Record};
use crate::fsutil::{self, Dir};
use crate::import::UidPlan;
use crate::index::{Durability, INDEX_NAME, IndexFile, WRITER_MARK_OFFSET};
use crate::lock::{LockGuard, LockKind};
use crate::meta;
pub use crate::meta::Meta;
use crate::names::MailboxName;

mod batch;
mod changes;
mod locate;
mod snapshot;
pub use batch::{BatchOp, BatchOutcome};
pub(crate) use locate::Wanted;

/// The mailbox subdirectory where messages are written before their commit.
pub const STAGE_DIR: &str = ".stage";

/// The file name of the message with `uid`.
pub fn message_file_name(uid: u32) -> String {
    format!("{uid}.")
}

/// Parses a message file name back into its UID.
pub fn parse_message_file_name(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(b".")?;
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// How [`Mailbox::append`] and [`Mailbox::stage`] store a message.
#[derive(Clone, Debug, Default)]
pub struct AppendOptions {
    /// Initial system flags (IMAP APPEND's flag list).
    pub flags: Flags,
    /// Initial keywords (IMAP atoms, see [`crate::validate_keyword`]).
    pub keywords: Vec<String>,
    /// INTERNALDATE; now when `None`.
    pub internal_date: Option<i64>,
    /// INTERNALDATE's zone in minutes east of UTC (0: UTC); clamped to
    /// `format::MAX_ZONE_MINUTES` either way.
    pub internal_zone: i16,
    /// Sent date from the Date: header, if the caller parsed one.
    pub sent_date: i64,
    /// Refuse messages larger than this many bytes.
    pub max_size: Option<u64>,
}

/// A message written to the staging area, not yet visible. Dropping it
/// without committing removes the staged file.
#[derive(Debug)]
pub struct StagedMessage {
    name: String,
    file: Option<File>,
    stage: std::sync::Arc<Dir>,
    /// Bytes written.
    pub size: u64,
    /// Bytes of the header block, blank line included.
    pub header_size: u32,
    /// CRC32 of the bytes written.
    pub message_crc: u32,
    /// The options it was staged with.
    pub opts: AppendOptions,
    /// The bytes are written but not flushed: the commit's flush makes
    /// them durable (an unordered append, PROTOCOL.md §3).
    pending_sync: bool,
    /// Staged for a batch import (`Mailbox::stage_for_batch`): not flushed
    /// yet; the commit syncs the filesystem once for the whole batch first
    /// (PROTOCOL.md §3a), then commits ordered.
    pub(crate) batch_sync: bool,
    committed: bool,
}

impl Drop for StagedMessage {
    fn drop(&mut self) {
        if !self.committed {
            let _ = self.stage.unlink(fsutil::os(self.name.as_bytes()));
        }
        // Closing the file releases the liveness lock on it.
        self.file.take();
    }
}

/// How a flag change applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagOp {
    /// Set these flags (IMAP `+FLAGS`).
    Add,
    /// Clear these flags (IMAP `-FLAGS`).
    Remove,
    /// Set exactly these flags (IMAP `FLAGS`).
    Replace,
}

/// Result of a flag change.
#[derive(Clone, Debug, Default)]
pub struct StoreOutcome {
    /// Records whose flags changed, as they are now.
    pub changed: Vec<Record>,
    /// UIDs skipped because their MODSEQ was above UNCHANGEDSINCE.
    pub modified: Vec<u32>,
    /// UIDs not found or already expunged.
    pub missing: Vec<u32>,
    /// The generation of the commit (unchanged when nothing changed).
    pub generation: u64,
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
}

static STAGE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Seconds after which a mailbox creator's temporary index file is
/// debris (`Store::create_mailbox` writes, syncs and links it at once).
const CREATE_DEBRIS_AGE: i64 = 600;

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
        dir.mkdir(fsutil::os(STAGE_DIR.as_bytes())).map_err(gone)?;
        let stage = std::sync::Arc::new(
            dir.open_dir(fsutil::os(STAGE_DIR.as_bytes()))
                .map_err(gone)?,
        );
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
        let all = self.index.read_records(0, h.num_records)?;
        self.check_uid_order(&h, &all, 0)?;
        let meta_changed = self.refresh_meta(&h)?;
        drop(g);
        let records = if full {
            all
        } else {
            all.into_iter()
                .enumerate()
                .filter(|(i, r)| *i as u32 >= mark.num_records || r.modseq > mark.highestmodseq)
                .map(|(_, r)| r)
                .collect()
        };
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
        let mut prev = 0u32;
        for (i, r) in records.iter().enumerate() {
            let recno = first_recno + i as u32;
            if r.uid <= prev || r.uid > h.last_uid {
                return Err(Error::corrupt(
                    &self.index.path,
                    Header::record_offset(recno),
                    format!(
                        "record {recno}: UID {} out of order (previous {prev}, last UID {})",
                        r.uid, h.last_uid
                    ),
                ));
            }
            prev = r.uid;
        }
        Ok(())
    }

    /// Creates and locks a new staged file. Between the create and the
    /// lock, a concurrent `recover` can lock the file, find it unowned and
    /// unlink it; a writer that went on would fail at its rename (ENOENT).
    /// So the file counts as ours only once it is locked and still linked:
    /// recover unlinks only files it holds the lock of.
    fn create_staged_file(&self) -> Result<(String, File, std::path::PathBuf)> {
        use std::os::unix::fs::MetadataExt;
        let mut attempt = 0;
        loop {
            let name = format!(
                "{}.{}.{}",
                std::process::id(),
                fsutil::now(),
                STAGE_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            let os = fsutil::os(name.as_bytes());
            let file = match self
                .stage
                .open_file(os, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL)
            {
                // The staging directory vanishes only with the mailbox.
                Err(e) if e.is_not_found() => {
                    return Err(Error::MailboxDeleted);
                }
                r => r?,
            };
            let path = self.stage.child_path(os);
            // The staged file's own lock says "a live writer owns me".
            // Settling and recovery probe unowned files by locking them
            // for a moment; wait for such a prober rather than give up the
            // name (a settle would leave the file behind, it only drops
            // names of linked files).
            let locked = crate::lock::lock(
                std::os::fd::AsFd::as_fd(&file),
                LockKind::Exclusive,
                self.lock_timeout,
                &path,
            );
            let linked = file
                .metadata()
                .map_err(|e| Error::io("stat", &path, e))?
                .nlink()
                > 0;
            match locked {
                Ok(()) if linked => return Ok((name, file, path)),
                // Taken by a recover (which unlinks it): use another name.
                Ok(()) | Err(Error::LockTimeout { .. }) if attempt < 100 => attempt += 1,
                Ok(()) => {
                    return Err(Error::io(
                        "create staged file",
                        &path,
                        std::io::Error::from(std::io::ErrorKind::NotFound),
                    ));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether [`Mailbox::stage`] prepares messages of at most 256 KiB for
    /// an unordered append (the default): their commit then costs one
    /// flush, taken inside the mailbox lock, instead of two, of which the
    /// message's runs outside it (PROTOCOL.md §3). Both are equally safe.
    /// A writer that knows other writers are committing to this mailbox
    /// at the same moment may turn it off: their staged flushes then
    /// overlap instead of queueing behind the lock.
    pub fn set_unordered_appends(&mut self, on: bool) {
        self.unordered_appends = on;
    }

    /// Whether another handle (in any process) holds or waits for this
    /// mailbox's lock right now: a hint for [`Mailbox::set_unordered_appends`].
    pub fn lock_in_use(&self) -> bool {
        crate::lock::is_in_use(std::os::fd::AsFd::as_fd(&*self.index.file))
    }

    /// Streams `src` into the staging area (outside any lock) and makes
    /// it durable, or (unordered) starts writing it; nothing is visible
    /// until [`Mailbox::commit`].
    pub fn stage(&self, src: impl Read, opts: AppendOptions) -> Result<StagedMessage> {
        self.stage_as(src, opts, false)
    }

    /// [`Mailbox::stage`]; with `batch`, the file is neither flushed nor
    /// written out, and the commit makes the whole batch durable with one
    /// filesystem sync (`import.rs`, PROTOCOL.md §3a).
    pub(crate) fn stage_as(
        &self,
        mut src: impl Read,
        opts: AppendOptions,
        batch: bool,
    ) -> Result<StagedMessage> {
        let (name, mut file, path) = self.create_staged_file()?;
        let mut staged = StagedMessage {
            name,
            file: None,
            stage: self.stage.clone(),
            size: 0,
            header_size: 0,
            message_crc: 0,
            opts,
            pending_sync: false,
            batch_sync: false,
            committed: false,
        };
        let mut hasher = crc32fast::Hasher::new();
        let mut header_end = HeaderEnd::default();
        let mut read_buf = ReadBuf::take();
        let buf = &mut read_buf.0[..];
        loop {
            let n = match src.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::io("read message", "input", e)),
            };
            let chunk = &buf[..n];
            header_end.feed(chunk, staged.size);
            hasher.update(chunk);
            staged.size += n as u64;
            let limit = staged
                .opts
                .max_size
                .unwrap_or(u64::MAX)
                .min(crate::format::MAX_MESSAGE_SIZE);
            if staged.size > limit {
                return Err(Error::TooLarge {
                    size: staged.size,
                    limit,
                });
            }
            file.write_all(chunk)
                .map_err(|e| Error::io("write", &path, e))?;
        }
        fault::point("append.after_stage_write")?;
        if self.durability == Durability::Full {
            // On a shared filesystem neither syncfs nor sync_file_range
            // is known to reach the server: every append is ordered there,
            // each message flushed on its own (PROTOCOL.md §8).
            let shared = crate::sharedfs::active();
            if batch && !shared {
                // The batch's syncfs makes the bytes durable before the
                // commit (§3a); the kernel writes them back in bulk.
                staged.batch_sync = true;
            } else if self.unordered_appends
                && staged.size <= crate::format::UNORDERED_MAX_SIZE
                && !shared
            {
                // Start the bytes on their way; the commit's flush makes
                // them durable together with the index (§3).
                fsutil::write_out(&file, &path, false)?;
                staged.pending_sync = true;
            } else {
                fsutil::fdatasync(&file, &path)?;
            }
        }
        fault::point("append.after_stage_fsync")?;
        staged.header_size = header_end.end.unwrap_or(staged.size).min(u32::MAX as u64) as u32;
        staged.message_crc = hasher.finalize();
        staged.file = Some(file);
        Ok(staged)
    }

    /// Streams and commits one message. Returns its UID.
    pub fn append(&mut self, src: impl Read, opts: AppendOptions) -> Result<u32> {
        let staged = self.stage(src, opts)?;
        Ok(self.commit(vec![staged])?[0])
    }

    /// Makes staged messages visible, all in one commit: one lock and one
    /// index fsync for the whole batch (PROTOCOL.md §3).
    pub fn commit(&mut self, staged: Vec<StagedMessage>) -> Result<Vec<u32>> {
        self.commit_planned(staged, &UidPlan::default())
    }

    /// [`Mailbox::commit`] with the UIDs chosen by the caller (an import,
    /// `import.rs`): checked under the lock against `last_uid`, so a UID
    /// is never handed out twice whatever wrote meanwhile.
    pub(crate) fn commit_planned(
        &mut self,
        mut staged: Vec<StagedMessage>,
        plan: &UidPlan,
    ) -> Result<Vec<u32>> {
        if staged.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(uids) = &plan.uids
            && uids.len() != staged.len()
        {
            return Err(Error::UidPlan(format!(
                "{} UIDs for {} messages",
                uids.len(),
                staged.len()
            )));
        }
        // The writer mark stays set until the commit's last flush returns,
        // so the next locker after a writer that died before it repairs
        // first (repair_locked): unordered, it makes the messages durable
        // (unordered.rs); ordered or not, it syncs the index, whose header
        // readers may already count, or whose growth may not be durable.
        let unordered = staged.iter().any(|s| s.pending_sync);
        // A batch import's messages: one filesystem sync for all, before
        // the lock (§3a); the commit is then an ordered one.
        self.sync_batch(&mut staged)?;
        let (mut guard, old) = self.lock_current(LockKind::Exclusive)?;
        fault::point("append.after_lock")?;
        let durable = self.durability == Durability::Full;
        self.refresh_meta(&old)?;
        let mut new = old.clone();
        if unordered {
            new.flags |= crate::format::HF_UNORDERED;
        } else {
            new.flags &= !crate::format::HF_UNORDERED;
        }
        let all_keywords: Vec<String> = staged
            .iter()
            .flat_map(|s| s.opts.keywords.clone())
            .collect();
        let stale = if all_keywords.is_empty() {
            false
        } else {
            self.reload_meta_for_write()?
        };
        let meta_changed = self.add_keywords(&all_keywords)? || stale;
        if (new.last_uid as u64) + staged.len() as u64 > u32::MAX as u64 {
            return Err(Error::UidsExhausted);
        }
        plan.check(old.last_uid)?;
        check_room(&old, staged.len())?;
        let modseq = old.highestmodseq + 1;
        let now = fsutil::now();
        let mut records = Vec::with_capacity(staged.len());
        let mut placed: Vec<String> = Vec::with_capacity(staged.len());
        let result = (|| -> Result<()> {
            if meta_changed {
                self.meta.save(&self.dir, self.durability)?;
                new.meta_generation = old.meta_generation.wrapping_add(1).max(1);
            }
            for (i, s) in staged.iter().enumerate() {
                let uid = match &plan.uids {
                    Some(uids) => uids[i],
                    None => new.last_uid + 1,
                };
                let target = message_file_name(uid);
                // A file already at `target` is debris of a crashed commit
                // (never referenced by a header): it goes to quarantine,
                // never unlinked (quarantine.rs). The staged name stays
                // until a later directory fsync (stage.rs): it is this
                // message's durable name till then.
                crate::quarantine::link_taking(
                    &self.stage,
                    fsutil::os(s.name.as_bytes()),
                    &self.dir,
                    fsutil::os(target.as_bytes()),
                    crate::quarantine::Reason::Uncommitted,
                    durable,
                )?;
                placed.push(target);
                new.last_uid = uid;
                let flags = s.opts.flags.intersect(Flags::SYSTEM);
                let mut kw = Keywords::default();
                for k in &s.opts.keywords {
                    if let Some(i) = self.meta.find(k) {
                        kw.insert(i);
                    }
                }
                records.push(Record {
                    uid,
                    flags,
                    internal_date: s.opts.internal_date.unwrap_or(now),
                    sent_date: s.opts.sent_date,
                    size: s.size,
                    header_size: s.header_size,
                    message_crc: s.message_crc,
                    modseq,
                    keywords: kw,
                    last_updated: now,
                    internal_zone: s
                        .opts
                        .internal_zone
                        .clamp(-MAX_ZONE_MINUTES, MAX_ZONE_MINUTES),
                });
                new.count_appended(records.last().expect("just pushed"));
            }
            if let Some(next) = plan.next_uid {
                new.last_uid = new.last_uid.max(next - 1);
            }
            fault::point("append.after_link")?;
            new.append_crc = self
                .index
                .write_appended(old.num_records, &records, durable)?;
            fault::point("append.after_records")?;
            new.generation = old.generation + 1;
            new.append_from = old.num_records;
            new.num_records = old.num_records + records.len() as u32;
            new.highestmodseq = modseq;
            new.last_append = now;
            self.index.write_append_header(&new)?;
            fault::point("append.after_header")?;
            // One fsync for records and header: if only the header reaches
            // the disk, readers see its append range fail and use the
            // previous generation (index.rs), so no separate records fsync.
            if unordered {
                // The index pages reach the device first; each message's
                // fdatasync then writes its bytes and inode and flushes
                // the device cache, index pages included (§3).
                self.index.write_out()?;
                fault::point("append.after_header_write_out")?;
                self.sync_staged(&staged)?;
            } else if self.durability == Durability::Full {
                self.index.sync()?;
            }
            fault::point("append.after_header_fsync")?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                drop(guard);
                if meta_changed {
                    self.meta_generation = Some(new.meta_generation);
                }
                for s in staged.iter_mut() {
                    s.committed = true;
                }
                // Closing the staged files releases their locks, so the
                // settle below can judge them.
                drop(staged);
                if old.last_uid / crate::stage::SETTLE_EVERY
                    != new.last_uid / crate::stage::SETTLE_EVERY
                {
                    // Committed already: a failure here is only logged; the
                    // next settle or recovery finishes the job.
                    match crate::stage::settle(
                        &self.dir,
                        &self.stage,
                        self.durability == Durability::Full,
                    ) {
                        // A writer killed while staging (before its lock)
                        // left no mark: its staged file is found here and
                        // cleared by the recovery (which needs the lock
                        // and the records).
                        Ok(s) if s.orphans => {
                            if let Err(e) = self.recover() {
                                tracing::warn!(path = %self.index.path.display(), error = %e, "recovery of .stage failed");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(path = %self.index.path.display(), error = %e, "settling .stage failed");
                        }
                    }
                }
                Ok(records.iter().map(|r| r.uid).collect())
            }
            Err(e @ Error::LockLost { .. }) => {
                // Another host may hold the lock and be writing: touch no
                // path and no byte of the index (not even the writer mark);
                // the links made stay for the next locker's repair, and
                // the staged files keep their names (PROTOCOL.md §8).
                guard.keep_mark();
                for s in staged.iter_mut() {
                    s.committed = true;
                }
                drop(guard);
                Err(e)
            }
            Err(e) => {
                if self.index.growth_unsure() {
                    // The index may be longer than what is durable.
                    guard.keep_mark();
                }
                if self.discard_placed_unless_committed(old.generation, &placed) {
                    // The header is in the file although the fsync failed:
                    // keep the staged names, they may be the durable ones,
                    // and (unordered) the writer mark, so the next locker
                    // makes the messages durable before building on them.
                    for s in staged.iter_mut() {
                        s.committed = true;
                    }
                    if unordered {
                        guard.keep_mark();
                    }
                }
                drop(guard);
                Err(e)
            }
        }
    }

    /// Step 9 of an unordered append (PROTOCOL.md §3): fdatasync every
    /// staged file whose bytes are still pending; the first one's cache
    /// flush also covers the index pages of step 8.
    fn sync_staged(&self, staged: &[StagedMessage]) -> Result<()> {
        for s in staged.iter().filter(|s| s.pending_sync) {
            let path = self.stage.child_path(fsutil::os(s.name.as_bytes()));
            fsutil::fdatasync(s.file.as_ref().expect("staged file is open"), &path)?;
        }
        Ok(())
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

    /// After a failed commit that renamed `placed` message files into the
    /// mailbox: nothing references them unless the new header reached the
    /// file, and only then may they stay.
    /// Returns whether the commit's header reached the file.
    pub(crate) fn discard_placed_unless_committed(
        &self,
        old_generation: u64,
        placed: &[String],
    ) -> bool {
        let committed = self
            .index
            .read_header()
            .map(|h| h.generation > old_generation)
            .unwrap_or(false);
        if !committed && !placed.is_empty() {
            for p in placed {
                let _ = self.dir.unlink(fsutil::os(p.as_bytes()));
            }
            // A flush of this commit may have made a placed name durable;
            // its UID is handed out again next, whose new name may not be
            // durable for a while: the old name must not come back.
            if self.durability == Durability::Full {
                let _ = self.dir.fsync();
            }
        }
        committed
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

    /// Opens a message's bytes for reading.
    pub fn open_message(&self, uid: u32) -> Result<File> {
        match self.open_message_file(uid) {
            Err(Error::Expunged(_)) if self.restore_from_stage(uid)? => self.open_message_file(uid),
            r => r,
        }
    }

    fn open_message_file(&self, uid: u32) -> Result<File> {
        let name = message_file_name(uid);
        match self
            .dir
            .open_file(fsutil::os(name.as_bytes()), OFlag::O_RDONLY)
        {
            Err(e) if e.is_not_found() => Err(Error::Expunged(uid)),
            r => r,
        }
    }

    /// A missing message file after a power loss may be a committed
    /// message whose `UID.` name did not reach the disk (stage.rs); its
    /// staged name then has one link and no owner. Only when such a file
    /// exists is the exclusive lock taken to restore it, so a FETCH of a
    /// message another session expunged and repacked costs one directory
    /// read. Returns whether `uid` is back.
    fn restore_from_stage(&self, uid: u32) -> Result<bool> {
        if !crate::stage::has_orphan(&self.stage)? {
            return Ok(false);
        }
        let (guard, h) = self.lock_open_file()?;
        if h.is_superseded() || h.is_deleted() {
            return Ok(false);
        }
        let records = self.index.read_records(0, h.num_records)?;
        let tidy = self.tidy_stage(&records)?;
        drop(guard);
        Ok(tidy.restored.contains(&uid))
    }

    /// Reads a whole message into memory (small messages, tests, tools).
    pub fn read_message(&self, uid: u32) -> Result<Vec<u8>> {
        let mut f = self.open_message(uid)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(|e| {
            Error::io(
                "read",
                self.dir
                    .child_path(fsutil::os(message_file_name(uid).as_bytes())),
                e,
            )
        })?;
        Ok(v)
    }

    /// Reads the whole message `r` describes and checks it against the
    /// record: its size, and the CRC32 of every byte. A file that differs
    /// is a corruption error naming it, never bytes handed on as the
    /// message (tools that copy messages out: export).
    pub fn read_message_checked(&self, r: &Record) -> Result<Vec<u8>> {
        let bytes = self.read_message(r.uid)?;
        let path = self
            .dir
            .child_path(fsutil::os(message_file_name(r.uid).as_bytes()));
        if bytes.len() as u64 != r.size {
            return Err(Error::corrupt(
                path,
                (bytes.len() as u64).min(r.size),
                format!(
                    "UID {}: the file has {} bytes, its record says {}",
                    r.uid,
                    bytes.len(),
                    r.size
                ),
            ));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != r.message_crc {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "UID {}: CRC32 of the file is {crc:08x}, its record says {:08x}",
                    r.uid, r.message_crc
                ),
            ));
        }
        Ok(bytes)
    }

    /// Changes flags and keywords of `uids`; each changed record gets the
    /// new MODSEQ. With `unchanged_since`, records with a higher MODSEQ are
    /// left alone and reported (RFC 7162 UNCHANGEDSINCE).
    pub fn store(
        &mut self,
        uids: &[u32],
        op: FlagOp,
        flags: Flags,
        keywords: &[String],
        unchanged_since: Option<u64>,
    ) -> Result<StoreOutcome> {
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        self.refresh_meta(&old)?;
        let stale = if keywords.is_empty() {
            false
        } else {
            self.reload_meta_for_write()?
        };
        let meta_changed = if op == FlagOp::Remove {
            stale
        } else {
            self.add_keywords(keywords)? || stale
        };
        let mut kw = Keywords::default();
        for k in keywords {
            meta::validate_keyword(k)?;
            if let Some(i) = self.meta.find(k) {
                kw.insert(i);
            }
        }
        let work = self.working_set(
            &old,
            &locate::Wanted {
                uids: uids.to_vec(),
                all_deleted: false,
                hint: Vec::new(),
            },
        )?;
        let modseq = old.highestmodseq + 1;
        let mut out = StoreOutcome::default();
        let mut after = work.records.clone();
        let step = FlagChange {
            uids,
            op,
            flags,
            keywords: kw,
            unchanged_since,
        };
        let touched = step.apply(&mut after, modseq, fsutil::now(), &mut out);
        let (writes, undo) = work.writes(&after, touched.into_iter().map(|i| i as usize));
        if writes.is_empty() && !meta_changed {
            out.generation = old.generation;
            drop(guard);
            return Ok(out);
        }
        out.generation = self.commit_flag_writes(
            guard,
            &old,
            &Recount::from_work(&work, &after),
            &writes,
            &undo,
            meta_changed,
            modseq,
        )?;
        Ok(out)
    }

    /// The commit of a flag change (STORE, an import's exact flags;
    /// PROTOCOL.md §4): the keyword table first when it changed, then the
    /// changed records and the header (fault points `store.*`), then the
    /// lock is released. `after` is `records` with `writes` applied.
    /// Returns the new generation.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn commit_flag_writes(
        &mut self,
        guard: LockGuard,
        old: &Header,
        recount: &Recount,
        writes: &[(u32, Record)],
        undo: &[(u32, Record)],
        meta_changed: bool,
        modseq: u64,
    ) -> Result<u64> {
        let mut new = old.clone();
        if meta_changed {
            self.meta.save(&self.dir, self.durability)?;
            new.meta_generation = old.meta_generation.wrapping_add(1).max(1);
        }
        recount.apply(&mut new, writes, undo);
        new.generation = old.generation + 1;
        if !writes.is_empty() {
            new.highestmodseq = modseq;
        }
        self.commit_in_place(
            old,
            &new,
            recount,
            writes,
            undo,
            ["store.after_records", "store.after_header"],
        )?;
        drop(guard);
        if meta_changed {
            self.meta_generation = Some(new.meta_generation);
        }
        Ok(new.generation)
    }

    /// Marks messages expunged. `uids = None` expunges every message with
    /// \Deleted (IMAP EXPUNGE); `Some` limits that to the given UIDs (UID
    /// EXPUNGE). With `require_deleted = false` the listed UIDs are
    /// expunged whatever their flags (MOVE). Files stay until repack.
    /// Returns the expunged UIDs, ascending.
    pub fn expunge(&mut self, uids: Option<&[u32]>, require_deleted: bool) -> Result<Vec<u32>> {
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        let work = self.working_set(
            &old,
            &locate::Wanted {
                uids: uids.map(<[u32]>::to_vec).unwrap_or_default(),
                all_deleted: uids.is_none(),
                hint: Vec::new(),
            },
        )?;
        let modseq = old.highestmodseq + 1;
        let mut after = work.records.clone();
        let recnos = expunge_in(&mut after, uids, require_deleted, modseq, fsutil::now());
        let expunged: Vec<u32> = recnos.iter().map(|&i| after[i as usize].uid).collect();
        let (writes, undo) = work.writes(&after, recnos.into_iter().map(|i| i as usize));
        if expunged.is_empty() {
            drop(guard);
            return Ok(expunged);
        }
        self.commit_work(
            &old,
            (&work, &after),
            (&writes, &undo),
            modseq,
            ["expunge.after_records", "expunge.after_header"],
        )?;
        drop(guard);
        Ok(expunged)
    }

    /// Rewrites records in place, then the header `new` (store, expunge).
    /// On an error before the header reached the file the original
    /// records are put back, so a failed call changes nothing. A kill
    /// cannot be undone: then the records stay, uncounted and unannounced,
    /// until the next recounting writer or `recover` commits them.
    /// Commits the `writes` (with their `undo`) of a working set and the
    /// records `after` it (§4): the header one generation up, counted
    /// from them, with `highestmodseq` = `modseq`. Returns that header.
    pub(crate) fn commit_work(
        &self,
        old: &Header,
        (work, after): (&locate::Working, &[Record]),
        (writes, undo): (&locate::Writes, &locate::Writes),
        modseq: u64,
        points: [&'static str; 2],
    ) -> Result<Header> {
        let recount = Recount::from_work(work, after);
        let mut new = old.clone();
        recount.apply(&mut new, writes, undo);
        new.generation = old.generation + 1;
        new.highestmodseq = modseq;
        self.commit_in_place(old, &new, &recount, writes, undo, points)?;
        Ok(new)
    }

    pub(crate) fn commit_in_place(
        &self,
        old: &Header,
        new: &Header,
        recount: &Recount,
        writes: &[(u32, Record)],
        undo: &[(u32, Record)],
        points: [&'static str; 2],
    ) -> Result<()> {
        let result = (|| -> Result<()> {
            for (recno, r) in writes {
                self.index.write_record(*recno, r)?;
            }
            fault::point(points[0])?;
            self.index.write_header(new)?;
            if matches!(recount, Recount::Full(_)) {
                // Counted from every record: later writers of this boot
                // may count by delta (IndexFile::counted_this_boot).
                self.index.write_count_stamp()?;
            }
            fault::point(points[1])?;
            if self.durability == Durability::Full {
                self.index.sync()?;
            }
            Ok(())
        })();
        if result.is_err() {
            let committed = self
                .index
                .read_header()
                .map(|h| h.generation > old.generation)
                .unwrap_or(false);
            if !committed {
                for (recno, r) in undo {
                    let _ = self.index.write_record(*recno, r);
                }
            }
        }
        result
    }

    /// Drops expunged records and deletes their files. The new index is
    /// written beside the old one, made durable, renamed into place while
    /// both are locked, and the old file is marked superseded so every
    /// session holding it reopens the path at its next check.
    pub fn repack(&mut self) -> Result<RepackOutcome> {
        let (old_guard, old) = self.lock_current(LockKind::Exclusive)?;
        let records = self.index.read_records(0, old.num_records)?;
        self.check_uid_order(&old, &records, 0)?;
        let (live, gone): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| !r.is_expunged());
        if gone.is_empty() {
            drop(old_guard);
            return Ok(RepackOutcome {
                removed: Vec::new(),
                kept: live.len() as u32,
            });
        }
        let mut new = old.clone();
        // g + 1 is the old file's SUPERSEDED mark below: no generation
        // number is written twice (PROTOCOL.md §5).
        new.generation = old.generation + 2;
        new.recount(&live);
        // What the dropped records knew about expunges is gone with them:
        // QRESYNC answers below this MODSEQ fall back (FORMAT.md).
        let gone_top = gone.iter().map(|r| r.modseq).max().unwrap_or(0);
        new.removed_modseq = old.removed_modseq.max(gone_top);
        let tmp = format!("{INDEX_NAME}.new.{}", std::process::id());
        self.dir.unlink(fsutil::os(tmp.as_bytes()))?;
        // Until the old file is marked, a failure leaves only the
        // temporary file behind: remove it so a failed call changes nothing.
        let discard = |e: Error| {
            let _ = self.dir.unlink(fsutil::os(tmp.as_bytes()));
            e
        };
        let fresh =
            IndexFile::write_new(&self.dir, &tmp, &new, &live, self.durability).map_err(discard)?;
        let new_guard = LockGuard::acquire(
            fresh.file.clone(),
            LockKind::Exclusive,
            self.lock_timeout,
            &fresh.path,
        )
        .map_err(discard)?;
        fault::point("repack.after_new_index").map_err(discard)?;
        // Mark the old file before the rename: a holder that sees the mark
        // while the old file is still at the path knows the replacement
        // died and rolls it back (see `roll_back_interrupted_replace`).
        // No fsync: after a reboot nobody holds the old file, and a mark
        // that survives without the rename is rolled back the same way.
        // The files to unlink after the rename, named first, so that
        // recovery after a kill between the rename and the unlinks deletes
        // them instead of keeping them in quarantine (repack_list.rs).
        let gone_uids: Vec<u32> = gone.iter().map(|r| r.uid).collect();
        crate::repack_list::write(&self.dir, &gone_uids, self.durability == Durability::Full)
            .map_err(discard)?;
        let mut mark = old.clone();
        mark.generation = old.generation + 1;
        mark.flags |= crate::format::HF_SUPERSEDED;
        self.index.write_header(&mark)?;
        fault::point("repack.after_mark_superseded")?;
        // The log describes the old file's slots: emptied before the new
        // file is published (PROTOCOL.md §5).
        crate::changelog::reset(&self.dir)?;
        fault::point("repack.after_log_reset")?;
        self.dir.rename(
            fsutil::os(tmp.as_bytes()),
            &self.dir,
            fsutil::os(INDEX_NAME.as_bytes()),
        )?;
        if self.durability == Durability::Full {
            self.dir.fsync()?;
        }
        fault::point("repack.after_rename")?;
        // Drop staged second names first (stage.rs), so that unlinking an
        // expunged message's `UID.` leaves no one-link staged file behind
        // that would look like a dead writer's.
        crate::stage::settle(&self.dir, &self.stage, self.durability == Durability::Full)?;
        for r in &gone {
            self.dir
                .unlink(fsutil::os(message_file_name(r.uid).as_bytes()))?;
        }
        fault::point("repack.after_unlink")?;
        if self.durability == Durability::Full {
            self.dir.fsync()?;
        }
        crate::repack_list::remove(&self.dir)?;
        drop(old_guard);
        drop(new_guard);
        self.index = IndexFile::new_shared(
            fresh.file,
            self.dir.child_path(fsutil::os(INDEX_NAME.as_bytes())),
        )
        .with_messages(self.dir.clone());
        self.epoch += 1;
        Ok(RepackOutcome {
            removed: gone.iter().map(|r| r.uid).collect(),
            kept: live.len() as u32,
        })
    }

    /// Removes debris of crashed writers: staged files no live process
    /// holds, and message files above the last committed UID. Safe at any
    /// time; takes the exclusive lock.
    pub fn recover(&mut self) -> Result<RecoverOutcome> {
        let (guard, h) = self.lock_current(LockKind::Exclusive)?;
        let out = self.repair_locked(&h)?;
        drop(guard);
        Ok(out)
    }

    /// The body of [`Mailbox::recover`], for a caller holding the
    /// exclusive lock. Runs automatically when a locker finds the writer
    /// mark of a dead writer.
    fn repair_locked(&mut self, h: &Header) -> Result<RecoverOutcome> {
        let h = h.clone();
        let mut out = RecoverOutcome::default();
        // A dead writer may have logged a block its header never
        // published; whatever this repair commits, no block stands for it.
        crate::changelog::reset(&self.dir)?;
        let records = self.index.read_records(0, h.num_records)?;
        self.check_uid_order(&h, &records, 0)?;
        if self.durability == Durability::Full {
            // The dead writer may have grown the file and died before it
            // made the new length durable (index.rs, ensure_allocated).
            self.index.sync()?;
        }
        // A writer of an unordered append may have died before its
        // flush: make its messages durable before anything builds on it.
        if h.is_unordered() && self.durability == Durability::Full {
            crate::unordered::make_durable(&self.dir, &records[h.append_from as usize..])?;
        }
        // Staged files first: a committed message whose `UID.` name a
        // crash took away is only there (stage.rs).
        let tidy = self.tidy_stage(&records)?;
        out.stage_removed += tidy.removed as u32;
        out.settled = tidy.settled as u32;
        out.restored = tidy.restored;
        let referenced: std::collections::HashSet<u32> = records.iter().map(|r| r.uid).collect();
        // Files a killed repack still had to unlink (expunged on purpose).
        let repacked = crate::repack_list::read(&self.dir)?;
        for (name, _) in self.dir.entries()? {
            if let Some(uid) = parse_message_file_name(&name)
                && (uid > h.last_uid || !referenced.contains(&uid))
            {
                // Above last_uid: an append that never committed. At or
                // below it without a record: a repack that died after
                // renaming the new index but before unlinking. Either way
                // not a message the index serves, but files win over the
                // index: moved into quarantine, never unlinked.
                let reason = if uid > h.last_uid {
                    crate::quarantine::Reason::Uncommitted
                } else {
                    crate::quarantine::Reason::Orphan
                };
                if uid <= h.last_uid && repacked.contains(&uid) {
                    // Expunged, and its record dropped by a repack that
                    // died before this unlink: the repack's own step.
                    self.dir.unlink(fsutil::os(&name))?;
                } else {
                    crate::quarantine::keep(&self.dir, &self.dir, fsutil::os(&name), reason)?;
                }
                out.uncommitted_removed += 1;
            } else if name.starts_with(b".index.new.") {
                // Temporary index file of a dead replacement; a live one
                // would hold the exclusive lock we hold now.
                self.dir.unlink(fsutil::os(&name))?;
                out.stage_removed += 1;
            } else if name.starts_with(b".index.create.")
                && self
                    .dir
                    .age(fsutil::os(&name))?
                    .is_some_and(|a| a > CREATE_DEBRIS_AGE)
            {
                // A creator holds no lock, so only an old temporary file
                // is surely a dead creator's (a live one links and removes
                // it within moments, and retries if it was removed).
                self.dir.unlink(fsutil::os(&name))?;
                out.stage_removed += 1;
            }
        }
        if out.uncommitted_removed > 0 && self.durability == Durability::Full {
            // The UIDs above last_uid are handed out again next; the old
            // files' names must not come back in a power cut (make_durable
            // above may just have made them durable).
            self.dir.fsync()?;
        }
        if !repacked.is_empty() {
            crate::repack_list::remove(&self.dir)?;
        }
        // A store or expunge killed between its records and its header
        // left records the header does not count: commit them now.
        let mut fixed = h.clone();
        fixed.recount(&records);
        if fixed != h {
            fixed.generation = h.generation + 1;
            // The absorbed records changed in place: readers must rescan.
            fixed.inplace_modseq = fixed.highestmodseq;
            self.index.write_header(&fixed)?;
            if self.durability == Durability::Full {
                self.index.sync()?;
            }
            tracing::warn!(path = %self.index.path.display(), "recounted the header after an interrupted change");
        }
        // The header now counts every record (it did, or was just
        // recounted): writers of this boot may count by delta.
        self.index.write_count_stamp()?;
        Ok(out)
    }

    /// [`crate::stage::tidy`] for this mailbox; the caller holds the
    /// exclusive lock and passes all committed records.
    fn tidy_stage(&self, records: &[Record]) -> Result<crate::stage::Tidy> {
        crate::stage::tidy(
            &self.dir,
            &self.stage,
            records,
            self.durability == Durability::Full,
        )
    }

    /// Under the exclusive lock, after a power loss cut the newest commit
    /// (`torn`, passed over for `current`): writes a header that is
    /// `current` with the torn commit's generation and UIDs used up
    /// (generation `torn + 2`, which lands in the torn slot; `last_uid`
    /// at least the torn one's), makes it durable, and moves any file the
    /// torn commit left at its UIDs into quarantine. So no generation
    /// number or UID is ever handed out twice, whatever a client may have
    /// seen of the torn commit before the power went (PROTOCOL.md §3).
    fn retire_torn_commit(&mut self, current: &Header, torn: &Header) -> Result<()> {
        let mut h = current.without_append();
        h.generation = torn.generation.max(current.generation) + 2;
        if h.slot() == current.slot() {
            h.generation += 1;
        }
        h.last_uid = current.last_uid.max(torn.last_uid);
        let durable = self.durability == Durability::Full;
        let mut moved = false;
        for (name, _) in self.dir.entries()? {
            if parse_message_file_name(&name).is_some_and(|uid| uid > current.last_uid) {
                crate::quarantine::keep(
                    &self.dir,
                    &self.dir,
                    fsutil::os(&name),
                    crate::quarantine::Reason::Uncommitted,
                )?;
                moved = true;
            }
        }
        if moved && durable {
            self.dir.fsync()?;
        }
        self.index.write_header(&h)?;
        if durable {
            self.index.sync()?;
        }
        tracing::warn!(
            path = %self.index.path.display(),
            torn_generation = torn.generation,
            generation = h.generation,
            last_uid = h.last_uid,
            "retired a commit a power loss cut short (never acknowledged)"
        );
        Ok(())
    }

    /// Exclusive lock on the index file this handle has open, as it is
    /// (no reopen, no writer mark, no repair), and its header: for the
    /// two callers that must look at exactly this file.
    fn lock_open_file(&self) -> Result<(LockGuard, Header)> {
        let guard = LockGuard::acquire(
            self.index.file.clone(),
            LockKind::Exclusive,
            self.lock_timeout,
            &self.index.path,
        )?;
        Ok((guard, self.index.read_header()?))
    }

    /// Undoes a replacement (repack, reconstruct) that died after marking
    /// the old file superseded but before renaming the new one into place:
    /// the old file's records were never touched, so clearing the mark in
    /// a new generation restores it exactly.
    fn roll_back_interrupted_replace(&mut self) -> Result<()> {
        let (guard, h) = self.lock_open_file()?;
        let current = IndexFile::open_shared(&self.dir)?;
        if h.is_superseded()
            && crate::index::same_file(&current.file, &self.index.file, &self.index.path)?
        {
            let mut fixed = h.clone();
            fixed.flags &= !crate::format::HF_SUPERSEDED;
            fixed.generation = h.generation + 1;
            self.index.write_header(&fixed)?;
            if self.durability == Durability::Full {
                self.index.sync()?;
            }
            tracing::warn!(path = %self.index.path.display(), "rolled back an interrupted index replacement");
        }
        drop(guard);
        Ok(())
    }

    /// Marks the index deleted so every holder notices; used by the store
    /// before it removes the directory.
    pub(crate) fn mark_deleted(&mut self) -> Result<()> {
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        let mut h = old.clone();
        h.generation = old.generation + 1;
        h.flags |= crate::format::HF_DELETED;
        self.index.write_header(&h)?;
        if self.durability == Durability::Full {
            self.index.sync()?;
        }
        drop(guard);
        Ok(())
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

/// What [`Mailbox::repack`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepackOutcome {
    /// UIDs of the expunged messages dropped (records and files).
    pub removed: Vec<u32>,
    /// Records kept.
    pub kept: u32,
}

/// What [`Mailbox::recover`] cleared or repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverOutcome {
    /// Staged files of dead writers that belonged to no committed message.
    pub stage_removed: u32,
    /// `UID.` files above `last_uid` (appends that never committed) removed.
    pub uncommitted_removed: u32,
    /// Committed messages whose `UID.` name was lost in a crash, linked
    /// back from `.stage`.
    pub restored: Vec<u32>,
    /// Staged names dropped after a directory fsync (normal settling).
    pub settled: u32,
}

/// One flag change (STORE) applied to records in memory; see
/// [`Mailbox::store`].
pub(crate) struct FlagChange<'a> {
    pub uids: &'a [u32],
    pub op: FlagOp,
    pub flags: Flags,
    pub keywords: Keywords,
    pub unchanged_since: Option<u64>,
}

impl FlagChange<'_> {
    /// Changes `records` (ascending by UID, as checked by the caller):
    /// each changed record gets `modseq`. Fills `out.modified` and
    /// `out.missing`, pushes the changed records to `out.changed` and
    /// returns their record numbers.
    pub(crate) fn apply(
        &self,
        records: &mut [Record],
        modseq: u64,
        now: i64,
        out: &mut StoreOutcome,
    ) -> Vec<u32> {
        let flags = self.flags.intersect(Flags::SYSTEM);
        let mut recnos = Vec::new();
        // A UID listed twice (IMAP sets may overlap) is changed once.
        let mut seen_uids = std::collections::HashSet::new();
        for &uid in self.uids {
            if !seen_uids.insert(uid) {
                continue;
            }
            // Found by binary search, with no map of the whole mailbox
            // built under the exclusive lock.
            let Ok(i) = records.binary_search_by_key(&uid, |r| r.uid) else {
                out.missing.push(uid);
                continue;
            };
            let r = &mut records[i];
            if r.is_expunged() {
                out.missing.push(uid);
                continue;
            }
            if let Some(since) = self.unchanged_since
                && r.modseq > since
            {
                out.modified.push(uid);
                continue;
            }
            let kw = &self.keywords;
            let (nf, nk) = match self.op {
                FlagOp::Add => (r.flags.union(flags), r.keywords.union(kw)),
                FlagOp::Remove => (r.flags.minus(flags), r.keywords.minus(kw)),
                FlagOp::Replace => (r.flags.minus(Flags::SYSTEM).union(flags), *kw),
            };
            if nf == r.flags && nk == r.keywords {
                continue;
            }
            r.flags = nf;
            r.keywords = nk;
            r.modseq = modseq;
            r.last_updated = now;
            out.changed.push(r.clone());
            recnos.push(i as u32);
        }
        recnos
    }
}

/// How a commit's header counters are computed: from every record
/// (`Full`, the records after the change), or by delta from the records
/// it rewrote (`Delta`, when the working set was not the whole index;
/// see [`IndexFile::counted_this_boot`] for why that is exact).
pub(crate) enum Recount {
    /// Every record of the index, as the commit leaves them.
    Full(Vec<Record>),
    /// Only the rewritten records are known.
    Delta,
}

impl Recount {
    /// `after` is `work.records` with the commit applied.
    pub(crate) fn from_work(work: &locate::Working, after: &[Record]) -> Recount {
        if work.is_full() {
            Recount::Full(after.to_vec())
        } else {
            Recount::Delta
        }
    }

    /// Sets the counters of `new` (a copy of the old header) for a commit
    /// that writes `writes` over `undo` (same slots, same order).
    pub(crate) fn apply(&self, new: &mut Header, writes: &[(u32, Record)], undo: &[(u32, Record)]) {
        match self {
            Recount::Full(after) => new.recount(after),
            Recount::Delta => {
                for ((_, a), (_, b)) in writes.iter().zip(undo) {
                    new.account(b, a);
                }
            }
        }
    }
}

/// Marks expunged, in memory, the live records among `uids` (all when
/// `None`), only those with \Deleted when `require_deleted`; each gets
/// `modseq`. Returns their record numbers, ascending.
pub(crate) fn expunge_in(
    records: &mut [Record],
    uids: Option<&[u32]>,
    require_deleted: bool,
    modseq: u64,
    now: i64,
) -> Vec<u32> {
    let wanted: Option<std::collections::HashSet<u32>> = uids.map(|u| u.iter().copied().collect());
    let mut recnos = Vec::new();
    for (i, r) in records.iter_mut().enumerate() {
        if r.is_expunged()
            || wanted.as_ref().is_some_and(|w| !w.contains(&r.uid))
            || (require_deleted && !r.flags.contains(Flags::DELETED))
        {
            continue;
        }
        r.flags = r.flags.union(Flags::EXPUNGED);
        r.modseq = modseq;
        r.last_updated = now;
        recnos.push(i as u32);
    }
    recnos
}

/// Refuses an append of `n` records that would take the index past
/// [`crate::format::MAX_RECORDS`].
pub(crate) fn check_room(h: &Header, n: usize) -> Result<()> {
    let limit = crate::format::MAX_RECORDS;
    if h.num_records as u64 + n as u64 > limit as u64 {
        return Err(Error::MailboxFull { limit });
    }
    Ok(())
}

/// Size of [`Mailbox::stage`]'s read buffer: from the heap arena, not a
/// fresh mapping per message.
const READ_BUF: usize = 16 * 1024;

thread_local! {
    /// This thread's [`ReadBuf`], kept between messages.
    static READ_BUFS: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// [`Mailbox::stage`]'s read buffer, taken from the thread and given back
/// when dropped: zero-filled once per thread (an LMTP session), not once
/// per message.
struct ReadBuf(Vec<u8>);

impl ReadBuf {
    fn take() -> ReadBuf {
        let v = READ_BUFS.take();
        ReadBuf(if v.len() == READ_BUF {
            v
        } else {
            vec![0; READ_BUF]
        })
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        let _ = READ_BUFS.try_with(|c| c.set(v));
    }
}

/// Finds the end of the header block (the blank line: the first LF LF
/// or CR LF CR LF) in a stream, looking at each byte once and at none
/// after the end.
#[derive(Default)]
struct HeaderEnd {
    end: Option<u64>,
    /// Last bytes seen (at most 3), to match a separator split across chunks.
    tail: Vec<u8>,
}

impl HeaderEnd {
    fn feed(&mut self, chunk: &[u8], offset: u64) {
        if self.end.is_some() {
            return;
        }
        let t = self.tail.len();
        let at = |i: usize| if i < t { self.tail[i] } else { chunk[i - t] };
        for (j, _) in chunk.iter().enumerate().filter(|(_, b)| **b == b'\n') {
            let i = t + j;
            let lf = i >= 1 && at(i - 1) == b'\n';
            let crlf = i >= 3 && at(i - 1) == b'\r' && at(i - 2) == b'\n' && at(i - 3) == b'\r';
            if lf || crlf {
                self.end = Some(offset - t as u64 + i as u64 + 1);
                return;
            }
        }
        self.tail
            .extend_from_slice(&chunk[chunk.len().saturating_sub(3)..]);
        let cut = self.tail.len().saturating_sub(3);
        self.tail.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::HeaderEnd;

    /// The first blank line, by a plain search of the whole text.
    fn reference(text: &[u8]) -> Option<u64> {
        let find = |n: &[u8]| {
            text.windows(n.len())
                .position(|w| w == n)
                .map(|p| p + n.len())
        };
        match (find(b"\r\n\r\n"), find(b"\n\n")) {
            (Some(a), Some(b)) => Some(a.min(b) as u64),
            (a, b) => a.or(b).map(|e| e as u64),
        }
    }

    /// RFC 5322 2.1: the header ends at the first empty line, CRLF or
    /// bare LF, wherever the stream's chunks split it.
    #[test]
    fn header_end_across_chunks() {
        let texts: [&[u8]; 8] = [
            b"A: b\r\nC: d\r\n\r\nbody\r\n\r\n",
            b"A: b\n\nbody",
            b"A: b\r\n\nbody",
            b"A: b\n\r\n\r\nx",
            b"\r\n\r\n",
            b"\n\n",
            b"no blank line\r\nat all\r\n",
            b"A: b\r\n\r\r\n\r\n",
        ];
        for text in texts {
            for size in 1..=text.len() {
                let mut h = HeaderEnd::default();
                let mut offset = 0;
                for chunk in text.chunks(size) {
                    h.feed(chunk, offset);
                    offset += chunk.len() as u64;
                }
                assert_eq!(h.end, reference(text), "{text:?} in chunks of {size}");
            }
        }
    }
}
