//! Group commit: several flag changes and expunges, possibly asked for by
//! different sessions of one process, applied under one exclusive lock
//! and made durable by one flush (docs/PROTOCOL.md §4a).
//!
//! Each step is applied to the records as the steps before it left them
//! and gets its own MODSEQ, strictly above the previous step's, exactly
//! as if the steps had been committed one after the other; the batch
//! writes one header (one new generation) and flushes once, before the
//! lock is released and before any caller learns its result.

use super::locate::Wanted;
use super::{CommitSpan, FlagChange, Mailbox, StoreOutcome, expunge_in};
use crate::error::Result;
use crate::format::{Flags, Keywords, Record};
use crate::fsutil;
use crate::lock::LockKind;
use crate::mailbox::FlagOp;

/// One step of a batch. Only flags: a keyword change may have to grow the
/// keyword table (`.meta`), which [`Mailbox::store`] does on its own.
#[derive(Clone, Debug)]
pub enum BatchOp {
    /// As [`Mailbox::store`] without keywords.
    Store {
        /// The messages, by UID.
        uids: Vec<u32>,
        /// Add, remove or replace.
        op: FlagOp,
        /// The system flags to add, remove or set.
        flags: Flags,
        /// CONDSTORE's UNCHANGEDSINCE (RFC 7162 3.1.3), if given.
        unchanged_since: Option<u64>,
    },
    /// As [`Mailbox::expunge`].
    Expunge {
        /// These UIDs (UID EXPUNGE), or every message (EXPUNGE).
        uids: Option<Vec<u32>>,
        /// Only messages flagged `\Deleted`.
        require_deleted: bool,
        /// With `uids: None`: the UIDs the caller believes are `\Deleted`
        /// (its session's view), a speed-up only. When they and the
        /// batch's other UIDs hold every `\Deleted` message the header
        /// counts, no other record is read; otherwise every record is.
        hint: Vec<u32>,
    },
}

/// The result of one [`BatchOp`], as its own call would have returned it.
#[derive(Clone, Debug)]
pub enum BatchOutcome {
    /// What the store step changed.
    Store(StoreOutcome),
    /// What the expunge step removed.
    Expunge {
        /// The expunged UIDs, ascending.
        gone: Vec<u32>,
        /// The commit's span when this step was all of it.
        span: Option<CommitSpan>,
    },
}

impl Mailbox {
    /// Takes the exclusive lock, then calls `collect` for the steps (so
    /// that a caller can gather every request that arrived while it
    /// waited for the lock), applies them in order and commits them with
    /// one header write and one flush. Returns one outcome per step, in
    /// order. On an error nothing of the batch is acknowledged: before the
    /// header write the records are put back; after it (a failed flush)
    /// the change may be visible but is reported as failed, as for
    /// [`Mailbox::store`].
    pub fn write_batch(
        &mut self,
        collect: impl FnOnce() -> Vec<BatchOp>,
    ) -> Result<Vec<BatchOutcome>> {
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        // The keyword table as of this header: a session folding its
        // outcome must know the name of every keyword on the records it
        // gets back, also one another session added since it last looked.
        self.refresh_meta(&old)?;
        let ops = collect();
        if ops.is_empty() {
            return Ok(Vec::new());
        }
        let mut want = Wanted {
            uids: Vec::new(),
            all_deleted: false,
            hint: Vec::new(),
        };
        for op in &ops {
            match op {
                BatchOp::Store { uids, .. }
                | BatchOp::Expunge {
                    uids: Some(uids), ..
                } => want.uids.extend_from_slice(uids),
                BatchOp::Expunge {
                    uids: None, hint, ..
                } => {
                    want.all_deleted = true;
                    want.hint.extend_from_slice(hint);
                }
            }
        }
        let work = self.working_set(&old, &want)?;
        let mut after: Vec<Record> = work.records.clone();
        let now = fsutil::now();
        let mut top = old.highestmodseq;
        // Record numbers the steps changed, each step's ascending; sorted
        // and deduplicated once at the end (a STORE of every message of a
        // big mailbox spent 4% of its time in a BTreeSet's inserts).
        let mut touched: Vec<u32> = Vec::new();
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in &ops {
            let modseq = top + 1;
            let (recnos, outcome) = match op {
                BatchOp::Store {
                    uids,
                    op,
                    flags,
                    unchanged_since,
                } => {
                    let mut out = StoreOutcome::default();
                    let step = FlagChange {
                        uids,
                        op: *op,
                        flags: *flags,
                        keywords: Keywords::default(),
                        unchanged_since: *unchanged_since,
                    };
                    let recnos = step.apply(&mut after, modseq, now, &mut out);
                    (recnos, BatchOutcome::Store(out))
                }
                BatchOp::Expunge {
                    uids,
                    require_deleted,
                    ..
                } => {
                    let recnos =
                        expunge_in(&mut after, uids.as_deref(), *require_deleted, modseq, now);
                    let gone = recnos.iter().map(|&i| after[i as usize].uid).collect();
                    (recnos, BatchOutcome::Expunge { gone, span: None })
                }
            };
            if !recnos.is_empty() {
                top = modseq;
                touched.extend(recnos);
            }
            outcomes.push(outcome);
        }
        touched.sort_unstable();
        touched.dedup();
        let new = if touched.is_empty() {
            self.stamp_if_exact(&old, &work);
            drop(guard);
            old.clone()
        } else {
            let writes = work.rewrites(&after, touched.into_iter().map(|i| i as usize));
            let new = self.commit_work(
                &old,
                &work,
                &writes,
                top,
                ["batch.after_records", "batch.after_header"],
            )?;
            drop(guard);
            new
        };
        // One step: the commit was that step alone (CommitSpan).
        let span = (outcomes.len() == 1).then(|| CommitSpan {
            before: self.mark_of(&old),
            after: self.mark_of(&new),
        });
        for o in &mut outcomes {
            match o {
                BatchOutcome::Store(s) => {
                    s.generation = new.generation;
                    s.span = span;
                }
                BatchOutcome::Expunge { span: s, .. } => *s = span,
            }
        }
        Ok(outcomes)
    }
}
