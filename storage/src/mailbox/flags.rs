//! Flag changes (STORE, UNCHANGEDSINCE): the change applied to records in
//! memory ([`FlagChange`]), the header's counters for it ([`Recount`]),
//! and its commit: the keyword table first when it grew, then the records
//! and the header in place. Ordering: docs/PROTOCOL.md §4.

use super::{CommitSpan, Mailbox, Rewrite, ViewMark, locate};
use crate::error::Result;
use crate::format::{Counts, Flags, Header, Keywords, Record};
use crate::fsutil;
use crate::lock::{LockGuard, LockKind};
use crate::meta;

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

/// Result of a flag change. Each list is in ascending UID order, each UID
/// once, whatever the order and repeats of the UIDs asked for.
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
    /// The commit's span when this call's step was all of it: `None`
    /// after a group commit with other sessions' steps.
    pub span: Option<CommitSpan>,
}

impl Mailbox {
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
        let writes = work.rewrites(&after, touched.into_iter().map(|i| i as usize));
        let before = self.mark_of(&old);
        if writes.is_empty() && !meta_changed {
            out.generation = old.generation;
            out.span = Some(CommitSpan {
                before,
                after: before,
            });
            self.stamp_if_exact(&old, &work);
            drop(guard);
            return Ok(out);
        }
        let changed_records = !writes.is_empty();
        out.generation = self.commit_flag_writes(
            guard,
            &old,
            &Recount::from_work(&work),
            &writes,
            meta_changed,
            modseq,
        )?;
        out.span = Some(CommitSpan {
            before,
            after: ViewMark {
                generation: out.generation,
                highestmodseq: if changed_records {
                    modseq
                } else {
                    old.highestmodseq
                },
                ..before
            },
        });
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
        writes: &[Rewrite],
        meta_changed: bool,
        modseq: u64,
    ) -> Result<u64> {
        let mut new = old.clone();
        if meta_changed {
            self.meta.save(&self.dir, self.durability)?;
            new.meta_generation = old.meta_generation.wrapping_add(1).max(1);
        }
        recount.apply(&mut new, writes);
        new.generation = old.generation + 1;
        if !writes.is_empty() {
            new.highestmodseq = modseq;
        }
        self.commit_in_place(
            old,
            &new,
            recount,
            writes,
            ["store.after_records", "store.after_header"],
        )?;
        drop(guard);
        if meta_changed {
            self.meta_generation = Some(new.meta_generation);
        }
        Ok(new.generation)
    }
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
    /// returns their record numbers, all in ascending UID order.
    pub(crate) fn apply(
        &self,
        records: &mut [Record],
        modseq: u64,
        now: i64,
        out: &mut StoreOutcome,
    ) -> Vec<u32> {
        let flags = self.flags.intersect(Flags::SYSTEM);
        let mut recnos = Vec::new();
        // A UID listed twice (IMAP sets may overlap) is changed once; in
        // order, so that the records are walked once, with no map of the
        // whole mailbox built under the exclusive lock.
        let mut uids = self.uids.to_vec();
        uids.sort_unstable();
        uids.dedup();
        // Records before `from` hold lower UIDs than the next one asked.
        let mut from = 0;
        for uid in uids {
            let i = if records.get(from).is_some_and(|r| r.uid >= uid) {
                from
            } else {
                from + records[from..].partition_point(|r| r.uid < uid)
            };
            from = i;
            if records.get(i).is_none_or(|r| r.uid != uid) {
                out.missing.push(uid);
                continue;
            }
            from = i + 1;
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
/// (`Counted`, counted before the change, plus the change), or by delta
/// from the records it rewrote (`Delta`, when the header counts every
/// record already; see [`crate::index::IndexFile::counted_this_boot`]
/// for why that is exact).
pub(crate) enum Recount {
    /// Every record of the index was counted before the commit (these
    /// counts); the commit's rewrites are added to them.
    Counted(Counts),
    /// Only the rewritten records are known: the header's counters are
    /// exact, the rewrites are added to them.
    Delta,
}

impl Recount {
    /// How a commit on `work` sets the header's counters.
    pub(crate) fn from_work(work: &locate::Working) -> Recount {
        match work.counts() {
            Some(c) => Recount::Counted(c),
            None => Recount::Delta,
        }
    }

    /// Sets the counters of `new` (a copy of the old header) for a commit
    /// that makes `writes`: what [`Header::recount`] over the records the
    /// commit leaves would give.
    pub(crate) fn apply(&self, new: &mut Header, writes: &[Rewrite]) {
        if let Recount::Counted(c) = self {
            c.set_into(new);
        }
        for w in writes {
            new.account(w.before, w.after);
        }
    }
}
