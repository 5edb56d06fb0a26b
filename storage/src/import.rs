//! Write paths for imports that keep a source store's UIDs (PROTOCOL.md
//! §3a): a mailbox created with a given UIDVALIDITY, messages committed
//! under given UIDs, and `last_uid` raised so that UIDNEXT continues after
//! the source's next UID.
//!
//! Every path takes the mailbox lock like any other writer and checks the
//! wanted UIDs against `last_uid` under that lock, so a UID is never
//! handed out twice under one UIDVALIDITY whatever committed meanwhile
//! (a delivery, another import).

use crate::error::{Error, Result};
use crate::fault;
use crate::format::{Flags, Keywords};
use crate::index::Durability;
use crate::lock::LockKind;
use crate::mailbox::{AppendOptions, Mailbox, StagedMessage, UidPlan};
use crate::names::{MailboxName, UserName};
use crate::store::{Store, UidValidityChoice};

impl Mailbox {
    /// Stages a message of a batch import (PROTOCOL.md §3a, *Batch
    /// durability*): written into `.stage`, neither flushed nor written
    /// out on its own (the kernel writes the batch back in bulk). The commit of the batch
    /// ([`Mailbox::commit_with_uids`], [`Mailbox::commit`], ...) first
    /// makes every such message durable with one `syncfs`, then commits
    /// ordered (the index gets its own flush). So a batch of N messages
    /// costs two flushes instead of N + 1, and nothing is visible, let
    /// alone acknowledged, before its bytes are durable.
    pub fn stage_for_batch(
        &self,
        src: impl std::io::Read,
        opts: AppendOptions,
    ) -> Result<StagedMessage> {
        self.stage_as(src, opts, true)
    }

    /// Before a commit's lock: when `staged` holds messages of
    /// [`Mailbox::stage_for_batch`], one `syncfs` of the mailbox's
    /// filesystem makes their bytes, inodes and staged names durable.
    pub(crate) fn sync_batch(&self, staged: &mut [StagedMessage]) -> Result<()> {
        if !staged.iter().any(|s| s.batch_sync) {
            return Ok(());
        }
        fault::point("import.after_batch_staged")?;
        if self.durability() == Durability::Full {
            crate::fsutil::syncfs(std::os::fd::AsFd::as_fd(&self.stage.fd), &self.stage.path)?;
        }
        fault::point("import.after_batch_sync")?;
        for s in staged.iter_mut() {
            s.batch_sync = false;
        }
        Ok(())
    }

    /// Commits `staged` under `uids` (strictly increasing, the first above
    /// the mailbox's `last_uid`, gaps allowed) in one transaction, the
    /// append of PROTOCOL.md §3 with the UIDs of step 5 given. With
    /// `next_uid`, `last_uid` becomes at least `next_uid - 1` in the same
    /// header, so UIDNEXT continues after the source's. Fails with
    /// [`Error::UidTaken`] (nothing written) if a UID is no longer above
    /// `last_uid` when the lock is taken.
    pub fn commit_with_uids(
        &mut self,
        staged: Vec<StagedMessage>,
        uids: &[u32],
        next_uid: Option<u32>,
    ) -> Result<Vec<u32>> {
        let plan = UidPlan {
            uids: Some(uids.to_vec()),
            next_uid,
        };
        self.commit_planned(staged, &plan)
    }

    /// Commits `staged` with the next UIDs (as [`Mailbox::commit`]) and
    /// raises `last_uid` to at least `next_uid - 1` in the same header.
    pub fn commit_then_reserve(
        &mut self,
        staged: Vec<StagedMessage>,
        next_uid: u32,
    ) -> Result<Vec<u32>> {
        let plan = UidPlan {
            uids: None,
            next_uid: Some(next_uid),
        };
        self.commit_planned(staged, &plan)
    }

    /// Sets each listed message's system flags and keywords to exactly
    /// the given ones (a re-run of an import bringing over flag changes
    /// made in the source since): one STORE-like commit for all, under
    /// the exclusive lock (PROTOCOL.md §4 ordering and fault points
    /// `store.*`), one MODSEQ for every changed record. `\Recent` and
    /// the internal bits are kept. UIDs not here (or expunged) and
    /// messages already so are left alone. Returns the changed UIDs.
    pub fn set_flags_exactly(&mut self, changes: &[(u32, Flags, Vec<String>)]) -> Result<Vec<u32>> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        self.refresh_meta(&old)?;
        let all: Vec<String> = changes.iter().flat_map(|c| c.2.iter().cloned()).collect();
        for k in &all {
            crate::meta::validate_keyword(k)?;
        }
        let stale = if all.is_empty() {
            false
        } else {
            self.reload_meta_for_write()?
        };
        let meta_changed = self.add_keywords(&all)? || stale;
        let records = self.index.read_records(0, old.num_records)?;
        self.check_uid_order(&old, &records, 0)?;
        let modseq = old.highestmodseq + 1;
        let now = crate::fsutil::now();
        let mut writes = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (uid, flags, keywords) in changes {
            if !seen.insert(*uid) {
                continue;
            }
            let Ok(i) = records.binary_search_by_key(uid, |r| r.uid) else {
                continue;
            };
            let r = &records[i];
            if r.is_expunged() {
                continue;
            }
            let mut kw = Keywords::default();
            for k in keywords {
                if let Some(b) = self.meta.find(k) {
                    kw.insert(b);
                }
            }
            let nf = r
                .flags
                .minus(Flags::SYSTEM)
                .union(flags.intersect(Flags::SYSTEM));
            if nf == r.flags && kw == r.keywords {
                continue;
            }
            let mut nr = r.clone();
            nr.flags = nf;
            nr.keywords = kw;
            nr.modseq = modseq;
            nr.last_updated = now;
            writes.push((i as u32, nr));
        }
        if writes.is_empty() && !meta_changed {
            drop(guard);
            return Ok(Vec::new());
        }
        let mut base = crate::format::Counts::default();
        records.iter().for_each(|r| base.add(r));
        let rewrites: Vec<crate::mailbox::Rewrite> = writes
            .iter()
            .map(|(recno, r)| crate::mailbox::Rewrite {
                slot: *recno,
                after: r,
                before: &records[*recno as usize],
            })
            .collect();
        self.commit_flag_writes(
            guard,
            &old,
            &crate::mailbox::Recount::Counted(base),
            &rewrites,
            meta_changed,
            modseq,
        )?;
        Ok(writes.iter().map(|(_, r)| r.uid).collect())
    }

    /// Raises `last_uid` to `next_uid - 1` without a message (UIDNEXT
    /// becomes `next_uid`): a header-only commit, generation + 1, fsynced.
    /// Returns false (nothing written) when `last_uid` is already at or
    /// above it. The UIDs skipped are never handed out.
    pub fn reserve_uids(&mut self, next_uid: u32) -> Result<bool> {
        if next_uid == 0 {
            return Err(Error::UidPlan("the next UID is 0".into()));
        }
        let (guard, old) = self.lock_current(LockKind::Exclusive)?;
        if old.last_uid >= next_uid - 1 {
            drop(guard);
            return Ok(false);
        }
        let mut new = old.clone();
        new.last_uid = next_uid - 1;
        new.generation = old.generation + 1;
        self.index.write_header(&new)?;
        fault::point("import.after_reserve_header")?;
        if self.durability() == Durability::Full {
            self.index.sync()?;
        }
        fault::point("import.after_reserve_fsync")?;
        drop(guard);
        Ok(true)
    }
}

impl Store {
    /// Creates a mailbox whose UIDVALIDITY is `uidvalidity` (a source
    /// store's). UIDVALIDITYs are unique per user (FORMAT.md §1,
    /// `.uidvalidity`): the value must be above every one handed out for
    /// `user` before, which then becomes the last handed out; otherwise
    /// [`Error::UidValidityUsed`] and nothing is created. An importer
    /// creates a user's mailboxes in increasing UIDVALIDITY order.
    pub fn create_mailbox_with_uidvalidity(
        &self,
        user: &UserName,
        name: &MailboxName,
        uidvalidity: u32,
    ) -> Result<()> {
        if uidvalidity == 0 {
            return Err(Error::UidPlan("UIDVALIDITY 0".into()));
        }
        self.create_mailbox_choosing(user, name, UidValidityChoice::Exactly(uidvalidity))
    }

    /// Creates a mailbox with a new UIDVALIDITY (as
    /// [`Store::create_mailbox`]) that is not `avoid`: for a source's
    /// messages imported under new UIDs, whose mailbox must never carry
    /// the source's UIDVALIDITY. Returns the UIDVALIDITY.
    pub fn create_mailbox_avoiding(
        &self,
        user: &UserName,
        name: &MailboxName,
        avoid: u32,
    ) -> Result<u32> {
        self.create_mailbox_choosing(user, name, UidValidityChoice::Avoiding(avoid))?;
        let mut m = self.open_mailbox(user, name)?;
        Ok(m.header()?.uidvalidity)
    }
}
