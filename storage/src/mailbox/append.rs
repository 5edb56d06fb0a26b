//! Append: staged messages made visible in one commit (one lock, one
//! index flush for the whole batch), under UIDs the commit hands out or
//! an import planned. Ordering: docs/PROTOCOL.md §3 (ordered and
//! unordered appends, errors) and §3a (a batch import's one sync).

use std::io::Read;

use super::{AppendOptions, Mailbox, StagedMessage, message_file_name};
use crate::error::{Error, Result};
use crate::fault;
use crate::format::{Flags, Header, Keywords, MAX_ZONE_MINUTES, Record};
use crate::fsutil;
use crate::index::Durability;
use crate::lock::LockKind;

/// The UIDs a commit hands out, when the caller chooses them.
#[derive(Clone, Debug, Default)]
pub(crate) struct UidPlan {
    /// One UID per staged message, strictly increasing, the first above
    /// the mailbox's `last_uid` (gaps allowed). `None`: `last_uid + 1`, ...
    pub uids: Option<Vec<u32>>,
    /// After the commit `last_uid` is at least `next_uid - 1`.
    pub next_uid: Option<u32>,
}

impl UidPlan {
    /// Under the exclusive lock, against the header's `last_uid`.
    pub(crate) fn check(&self, last_uid: u32) -> Result<()> {
        if self.next_uid == Some(0) {
            return Err(Error::UidPlan("the next UID is 0".into()));
        }
        let Some(uids) = &self.uids else {
            return Ok(());
        };
        let mut prev = last_uid;
        for &uid in uids {
            if uid <= prev {
                return Err(if prev == last_uid {
                    Error::UidTaken { uid, last_uid }
                } else {
                    Error::UidPlan(format!("UID {uid} follows {prev}: not increasing"))
                });
            }
            prev = uid;
        }
        Ok(())
    }
}

impl Mailbox {
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
        // The keyword table is read only when the batch names keywords
        // (most deliveries name none), and then once: what the disk holds,
        // whether or not the header's meta generation says it changed.
        // Without keywords the handle keeps the table it had, with the
        // generation it was read at, so a later locked read loads the
        // newer one.
        let stale = if all_keywords.is_empty() || self.refresh_meta(&old)? {
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

#[cfg(test)]
mod tests {
    use super::UidPlan;
    use crate::error::Error;

    #[test]
    fn plan_checks_order_against_last_uid() {
        let p = |uids: &[u32]| UidPlan {
            uids: Some(uids.to_vec()),
            next_uid: None,
        };
        assert!(p(&[5, 7, 9]).check(4).is_ok());
        assert!(matches!(
            p(&[4, 7]).check(4),
            Err(Error::UidTaken {
                uid: 4,
                last_uid: 4
            })
        ));
        assert!(matches!(p(&[5, 5]).check(4), Err(Error::UidPlan(_))));
        let zero = UidPlan {
            uids: None,
            next_uid: Some(0),
        };
        assert!(zero.check(0).is_err());
    }
}
