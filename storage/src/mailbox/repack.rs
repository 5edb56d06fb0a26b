//! Repack: expunged records dropped and their files deleted, by writing a
//! new index beside the old one and renaming it into place while both
//! are locked. Ordering: docs/PROTOCOL.md §5.

use super::{Mailbox, message_file_name};
use crate::error::{Error, Result};
use crate::fault;
use crate::format::Record;
use crate::fsutil;
use crate::index::{Durability, INDEX_NAME, IndexFile};
use crate::lock::{LockGuard, LockKind};

impl Mailbox {
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
}

/// What [`Mailbox::repack`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepackOutcome {
    /// UIDs of the expunged messages dropped (records and files).
    pub removed: Vec<u32>,
    /// Records kept.
    pub kept: u32,
}
