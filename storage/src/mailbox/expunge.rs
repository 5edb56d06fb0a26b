//! Expunge, and the in-place commit it shares with STORE and the group
//! commit: records rewritten in their slots, then the header one
//! generation up, put back on an error before the header reached the
//! file. Ordering: docs/PROTOCOL.md §4.

use super::{Mailbox, Recount, Rewrite, locate};
use crate::error::Result;
use crate::fault;
use crate::format::{Flags, Header, Record};
use crate::fsutil;
use crate::index::Durability;
use crate::lock::LockKind;

impl Mailbox {
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
        if expunged.is_empty() {
            self.stamp_if_exact(&old, &work);
            drop(guard);
            return Ok(expunged);
        }
        let writes = work.rewrites(&after, recnos.into_iter().map(|i| i as usize));
        self.commit_work(
            &old,
            &work,
            &writes,
            modseq,
            ["expunge.after_records", "expunge.after_header"],
        )?;
        drop(guard);
        Ok(expunged)
    }

    /// Commits the rewrites of a working set (§4):
    /// the header one generation up, its counters from the working set's
    /// count of every record plus the writes, or by delta from the writes
    /// ([`Recount`]), with `highestmodseq` = `modseq`. Returns that header.
    pub(crate) fn commit_work(
        &self,
        old: &Header,
        work: &locate::Working,
        writes: &[Rewrite],
        modseq: u64,
        points: [&'static str; 2],
    ) -> Result<Header> {
        let recount = Recount::from_work(work);
        let mut new = old.clone();
        recount.apply(&mut new, writes);
        new.generation = old.generation + 1;
        new.highestmodseq = modseq;
        self.commit_in_place(old, &new, &recount, writes, points)?;
        Ok(new)
    }

    /// Under the exclusive lock, for a commit that found nothing to
    /// change: when `work` counted every record and `h` counts exactly
    /// those, the count stamp is written, so that the next in-place
    /// commits of this boot count by delta instead of counting every
    /// record again (a STORE that sets a flag already set, an EXPUNGE
    /// with nothing to expunge). Only a saving: a failure is logged.
    pub(crate) fn stamp_if_exact(&self, h: &Header, work: &locate::Working) {
        if let Some(c) = work.counts()
            && c.match_header(h)
            && let Err(e) = self.index.write_count_stamp()
        {
            tracing::warn!(error = %e, "count stamp not written");
        }
    }

    /// Rewrites records in place, then the header `new` (store, expunge).
    /// On an error before the header reached the file the original
    /// records are put back, so a failed call changes nothing. A kill
    /// cannot be undone: then the records stay, uncounted and unannounced,
    /// until the next recounting writer or `recover` commits them.
    pub(crate) fn commit_in_place(
        &self,
        old: &Header,
        new: &Header,
        recount: &Recount,
        writes: &[Rewrite],
        points: [&'static str; 2],
    ) -> Result<()> {
        let result = (|| -> Result<()> {
            self.index
                .write_records_at(writes.iter().map(|w| (w.slot, w.after)))?;
            fault::point(points[0])?;
            self.index.write_header(new)?;
            if matches!(recount, Recount::Counted(_)) {
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
                // One at a time: as many as can be put back are.
                for w in writes {
                    let _ = self.index.write_record(w.slot, w.before);
                }
            }
        }
        result
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
