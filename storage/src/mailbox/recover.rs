//! Recovery: the repairs a crash may call for, run by `recover` and by the
//! next locker after a dead writer (the writer mark): staged files and
//! message files no commit owns, a torn commit's generation and UIDs
//! retired, an interrupted index replacement rolled back, the header
//! recounted; and the deleted mark a mailbox delete sets. Ordering:
//! docs/PROTOCOL.md §1 (*Automatic recovery*), §3 (*Retiring a torn
//! commit*, *Debris goes to quarantine*, staged names), §5 and §6.

use super::{Mailbox, parse_message_file_name};
use crate::error::Result;
use crate::format::{Header, Record};
use crate::fsutil;
use crate::index::{Durability, IndexFile};
use crate::lock::{LockGuard, LockKind};

/// Seconds after which a mailbox creator's temporary index file is
/// debris (`Store::create_mailbox` writes, syncs and links it at once).
const CREATE_DEBRIS_AGE: i64 = 600;

impl Mailbox {
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
    pub(super) fn repair_locked(&mut self, h: &Header) -> Result<RecoverOutcome> {
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
    pub(super) fn tidy_stage(&self, records: &[Record]) -> Result<crate::stage::Tidy> {
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
    pub(super) fn retire_torn_commit(&mut self, current: &Header, torn: &Header) -> Result<()> {
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
    pub(super) fn lock_open_file(&self) -> Result<(LockGuard, Header)> {
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
    pub(super) fn roll_back_interrupted_replace(&mut self) -> Result<()> {
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
