//! Per-session view of one open mailbox: what an IMAP session has told its
//! client, and what it still has to tell it.
//!
//! A [`SessionView`] keeps the sequence-number to UID map exactly as the
//! client knows it, the flags, keywords and MODSEQ last reported for each
//! message, the expunges seen but not yet reported, and the [`ViewMark`] of
//! its last look at the index. [`SessionView::check`] compares the index
//! generation under a shared lock (never an mtime) and turns what other
//! sessions and delivery did into [`Update`]s.
//!
//! # The rules (RFC 3501 7.4.1, RFC 9051 7.5.1)
//! - EXPUNGE goes out only when the caller passes [`Allow::AllUpdates`]
//!   (NOOP, IDLE, CHECK, EXPUNGE, UID commands). While answering FETCH,
//!   STORE or SEARCH by sequence number the caller passes
//!   [`Allow::NoExpunge`]; expunges are then *held*: the message keeps its
//!   sequence number, its cached record (flags, size, dates) is still
//!   served from the view, and messages delivered after it get sequence
//!   numbers after it. Its body stays readable through
//!   [`Mailbox::open_message`] until a repack removes the file; after that
//!   `open_message` returns [`Error::Expunged`] and the server answers that
//!   FETCH of body data with a NO (RFC 2180 4.1.1), never with other data.
//! - When allowed, held expunges are emitted in *descending* sequence
//!   order, so every number is right at the moment the client applies it
//!   (removing a higher number never shifts a lower one). Then EXISTS,
//!   then FETCH, numbered as the client's list is after those expunges.
//! - EXISTS and FETCH FLAGS go out after any command. EXISTS is emitted
//!   only when messages were added, with the client's new count.
//!   A FETCH is emitted for each message whose MODSEQ rose above the one
//!   last reported; messages held as expunged get none.
//! - A session's own STORE and EXPUNGE are folded in with
//!   [`SessionView::apply_own_store`] / [`SessionView::apply_own_expunge`],
//!   so a later check does not echo them back as someone else's.
//!
//! # Cost
//! A check with no change is one shared lock plus one header read
//! ([`Mailbox::changes_since`]), whatever the mailbox size. With changes it
//! is one shared lock for reading the header and every record of the
//! index (`changes_since` scans them for newer MODSEQs), then
//! O(changed · log n) here to merge by UID, plus O(n) for removing flushed
//! expunges. After a repack (another index file) the refresh is a full
//! merge by UID: O(n log n).
//!
//! Every call must be given the same [`Mailbox`] handle the view was opened
//! with: the mark's epoch belongs to that handle.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{Flags, Keywords, Record};
use crate::mailbox::{Changes, Mailbox, StoreOutcome, ViewMark};

/// What the command being answered allows the session to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// NOOP, IDLE, CHECK, EXPUNGE, UID FETCH/STORE/SEARCH/COPY/MOVE...
    AllUpdates,
    /// FETCH, STORE, SEARCH by sequence number: EXPUNGE is held back.
    NoExpunge,
}

/// One untagged response the session must send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Update {
    /// `* seq EXPUNGE`, valid when the client applies them in order.
    Expunge(u32),
    /// `* n EXISTS`: the client's new message count.
    Exists(u32),
    /// The keyword table grew: send `* FLAGS (...)` and
    /// `* OK [PERMANENTFLAGS (...)]` with these keywords.
    Flags(Vec<String>),
    /// `* seq FETCH (UID uid FLAGS (...) MODSEQ (modseq))`.
    Fetch {
        seq: u32,
        uid: u32,
        flags: Flags,
        keywords: Vec<String>,
        modseq: u64,
    },
}

/// One message as the client knows it.
#[derive(Clone, Debug)]
struct Entry {
    /// The record as last reported (or as first seen).
    record: Record,
    /// Expunged in the index, not yet reported to the client.
    expunged: bool,
}

/// A message of the view, for iteration.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub seq: u32,
    pub uid: u32,
    /// Cached: what the client was last told.
    pub record: &'a Record,
    /// Expunged by someone, held until an EXPUNGE may be sent.
    pub expunged: bool,
}

/// Errors in a client's sequence set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeqSetError {
    #[error("invalid sequence set {0:?}")]
    Syntax(String),
    #[error("sequence number {0} is above the message count {1}")]
    OutOfRange(u32, u32),
    #[error("the mailbox is empty")]
    Empty,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    Num(u32),
    Star,
}

/// A parsed IMAP sequence set (`1:3,5,7:*`), for sequence numbers or UIDs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeqSet(Vec<(Bound, Bound)>);

impl std::str::FromStr for SeqSet {
    type Err = SeqSetError;
    fn from_str(s: &str) -> std::result::Result<SeqSet, SeqSetError> {
        let bad = || SeqSetError::Syntax(s.to_string());
        let bound = |t: &str| -> std::result::Result<Bound, SeqSetError> {
            if t == "*" {
                return Ok(Bound::Star);
            }
            // nz-number: no sign, no leading zero.
            if t.is_empty() || t.starts_with('0') || !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            t.parse().map(Bound::Num).map_err(|_| bad())
        };
        let mut out = Vec::new();
        for part in s.split(',') {
            let range = match part.split_once(':') {
                Some((a, b)) => (bound(a)?, bound(b)?),
                None => {
                    let b = bound(part)?;
                    (b, b)
                }
            };
            out.push(range);
        }
        Ok(SeqSet(out))
    }
}

pub struct SessionView {
    /// Sorted by UID; index + 1 is the sequence number.
    msgs: Vec<Entry>,
    /// How many entries are `expunged`.
    held: usize,
    mark: ViewMark,
    /// Highest UID of any record this view has read, expunged or not.
    /// Records above it are new.
    floor: u32,
    keywords: Vec<String>,
    uidvalidity: u32,
    highestmodseq: u64,
    uid_next: u32,
    index_path: PathBuf,
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("len", &self.msgs.len())
            .field("held", &self.held)
            .field("mark", &self.mark)
            .finish()
    }
}

impl SessionView {
    /// Opens the view (IMAP SELECT): one consistent snapshot. The client
    /// is then told `EXISTS len()`.
    pub fn open(mbox: &mut Mailbox) -> Result<SessionView> {
        let snap = mbox.snapshot()?;
        let floor = snap.records.last().map_or(0, |r| r.uid);
        let mut msgs: Vec<Entry> = snap
            .records
            .into_iter()
            .filter(|r| !r.is_expunged())
            .map(|record| Entry {
                record,
                expunged: false,
            })
            .collect();
        // Collected through a filter, the vector grew by doubling: up to
        // twice the memory, for as long as the mailbox is selected (a
        // thousand idle sessions of one mailbox hold a thousand copies).
        msgs.shrink_to_fit();
        Ok(SessionView {
            msgs,
            held: 0,
            mark: snap.mark,
            floor,
            keywords: snap.meta.keywords,
            uidvalidity: snap.header.uidvalidity,
            highestmodseq: snap.header.highestmodseq,
            uid_next: snap.header.last_uid.saturating_add(1),
            index_path: mbox.index_path().to_path_buf(),
        })
    }

    /// Looks at the index and returns what the client must be told now.
    /// See the module documentation for the rules and the cost.
    pub fn check(&mut self, mbox: &mut Mailbox, allow: Allow) -> Result<Vec<Update>> {
        debug_assert_eq!(mbox.index_path(), self.index_path, "wrong mailbox handle");
        let mut out = Vec::new();
        let Some(ch) = mbox.changes_since(&self.mark)? else {
            if allow == Allow::AllUpdates {
                self.flush_expunges(&mut out);
            }
            return Ok(out);
        };
        let mark = mbox.mark_of(&ch.header);
        let old_len = self.msgs.len();
        let changed = self.merge(ch)?;
        let keywords_grew = self.sync_keywords(mbox);
        self.mark = mark;
        let grew = self.msgs.len() > old_len;
        if allow == Allow::AllUpdates {
            self.flush_expunges(&mut out);
        }
        if keywords_grew {
            out.push(Update::Flags(self.keywords.clone()));
        }
        if grew {
            out.push(Update::Exists(self.len()));
        }
        let mut fetches: Vec<(u32, Update)> = changed
            .into_iter()
            .filter_map(|uid| {
                let seq = self.seq(uid)?;
                let e = &self.msgs[seq as usize - 1];
                (!e.expunged).then(|| (seq, self.fetch(seq, &e.record)))
            })
            .collect();
        fetches.sort_by_key(|(seq, _)| *seq);
        out.extend(fetches.into_iter().map(|(_, u)| u));
        Ok(out)
    }

    /// Like [`SessionView::check`], but only if the index is free now:
    /// when a writer holds or waits for its lock, returns `None` and
    /// leaves the view as it was, so a later check reports what it
    /// commits. For a caller that may send updates but need not (an IMAP
    /// server after LIST or STATUS, RFC 3501 section 7), or that can look
    /// again shortly (IDLE), rather than waiting behind another session's
    /// commit.
    pub fn check_if_free(
        &mut self,
        mbox: &mut Mailbox,
        allow: Allow,
    ) -> Result<Option<Vec<Update>>> {
        let saved = std::mem::replace(&mut mbox.lock_timeout, std::time::Duration::ZERO);
        let r = self.check(mbox, allow);
        mbox.lock_timeout = saved;
        match r {
            Err(Error::LockTimeout { .. }) => Ok(None),
            r => r.map(Some),
        }
    }

    /// Merges changes by UID. Returns the UIDs whose reported state is now
    /// stale (FETCH needed).
    fn merge(&mut self, ch: Changes) -> Result<Vec<u32>> {
        if ch.header.uidvalidity != self.uidvalidity {
            // Not the mailbox this session selected any more.
            return Err(Error::MailboxDeleted);
        }
        self.highestmodseq = ch.header.highestmodseq;
        self.uid_next = ch.header.last_uid.saturating_add(1);
        let old_len = self.msgs.len();
        // In a full refresh, a known UID absent from the index was expunged
        // and then repacked away.
        let mut present = if ch.full {
            vec![false; old_len]
        } else {
            Vec::new()
        };
        let mut changed = Vec::new();
        for r in ch.records {
            if r.uid > self.floor {
                self.floor = r.uid;
                if !r.is_expunged() {
                    if self.msgs.len() == self.msgs.capacity() {
                        // Grow by an eighth, not by doubling: a view lives
                        // as long as the selection, and one delivery must
                        // not double every idle session's memory.
                        self.msgs.reserve_exact((self.msgs.len() / 8).max(16));
                    }
                    self.msgs.push(Entry {
                        record: r,
                        expunged: false,
                    });
                }
                continue;
            }
            let Ok(i) = self.msgs[..old_len].binary_search_by_key(&r.uid, |e| e.record.uid) else {
                continue; // expunged before this view knew it
            };
            if ch.full {
                present[i] = true;
            }
            let e = &mut self.msgs[i];
            if e.expunged {
                continue;
            }
            if r.is_expunged() {
                e.expunged = true;
                self.held += 1;
            } else if r.modseq > e.record.modseq {
                changed.push(r.uid);
                e.record = r;
            }
        }
        if ch.full {
            for (e, seen) in self.msgs.iter_mut().zip(present) {
                if !seen && !e.expunged {
                    e.expunged = true;
                    self.held += 1;
                }
            }
        }
        Ok(changed)
    }

    /// Takes the handle's keyword table, which is current as of its last
    /// locked read. Taken from the handle rather than from `Changes::meta`
    /// because the handle may have loaded a newer table during one of this
    /// session's own writes. True if it grew.
    fn sync_keywords(&mut self, mbox: &Mailbox) -> bool {
        let names = mbox.keyword_names();
        if names.len() > self.keywords.len() {
            self.keywords = names.to_vec();
            return true;
        }
        false
    }

    /// Emits every held expunge, highest sequence number first, and drops
    /// those messages from the view.
    fn flush_expunges(&mut self, out: &mut Vec<Update>) {
        if self.held == 0 {
            return;
        }
        for (i, e) in self.msgs.iter().enumerate().rev() {
            if e.expunged {
                out.push(Update::Expunge(i as u32 + 1));
            }
        }
        self.msgs.retain(|e| !e.expunged);
        self.held = 0;
    }

    fn fetch(&self, seq: u32, r: &Record) -> Update {
        Update::Fetch {
            seq,
            uid: r.uid,
            flags: r.flags.intersect(Flags::SYSTEM),
            keywords: self.keyword_names(&r.keywords),
            modseq: r.modseq,
        }
    }

    /// Folds the session's own STORE into the view so no later check
    /// reports it as someone else's. Returns the FETCH responses for the
    /// STORE itself (in sequence order), which the server sends unless
    /// `.SILENT` was given. A record can also carry a concurrent change by
    /// another session folded in by the same STORE; with `.SILENT` that
    /// change is then not reported separately.
    ///
    /// If the STORE grew the keyword table, an [`Update::Flags`] comes first.
    pub fn apply_own_store(&mut self, mbox: &Mailbox, outcome: &StoreOutcome) -> Vec<Update> {
        let mut fetches = Vec::new();
        for r in &outcome.changed {
            // UIDs above the floor are new to this view: the next check
            // reports them (with this state) as EXISTS.
            let Some(seq) = self.seq(r.uid) else { continue };
            let e = &mut self.msgs[seq as usize - 1];
            if e.expunged || r.modseq <= e.record.modseq {
                continue;
            }
            e.record = r.clone();
            fetches.push((seq, r.clone()));
        }
        fetches.sort_by_key(|(seq, _)| *seq);
        let mut out = Vec::new();
        if self.sync_keywords(mbox) {
            out.push(Update::Flags(self.keywords.clone()));
        }
        out.extend(fetches.into_iter().map(|(seq, r)| self.fetch(seq, &r)));
        out
    }

    /// Folds the session's own EXPUNGE (the UIDs [`Mailbox::expunge`]
    /// returned) into the view. With [`Allow::AllUpdates`] (EXPUNGE, UID
    /// EXPUNGE, MOVE, CLOSE) returns the EXPUNGE responses for them and for
    /// any expunges held before, highest sequence number first; otherwise
    /// they are held like anyone else's.
    pub fn apply_own_expunge(&mut self, uids: &[u32], allow: Allow) -> Vec<Update> {
        for &uid in uids {
            if let Some(seq) = self.seq(uid) {
                let e = &mut self.msgs[seq as usize - 1];
                if !e.expunged {
                    e.expunged = true;
                    self.held += 1;
                }
            }
        }
        let mut out = Vec::new();
        if allow == Allow::AllUpdates {
            self.flush_expunges(&mut out);
        }
        out
    }

    /// Number of messages the client knows, held expunges included.
    pub fn len(&self) -> u32 {
        self.msgs.len() as u32
    }
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }
    /// Expunges seen but not yet reported.
    pub fn held_expunges(&self) -> usize {
        self.held
    }
    pub fn uid(&self, seq: u32) -> Option<u32> {
        self.entry(seq).map(|e| e.record.uid)
    }
    pub fn seq(&self, uid: u32) -> Option<u32> {
        self.msgs
            .binary_search_by_key(&uid, |e| e.record.uid)
            .ok()
            .map(|i| i as u32 + 1)
    }
    /// The cached record of `seq`: what the client was last told.
    pub fn record(&self, seq: u32) -> Option<&Record> {
        self.entry(seq).map(|e| &e.record)
    }
    /// True when `seq` is held as expunged.
    pub fn is_expunged(&self, seq: u32) -> bool {
        self.entry(seq).is_some_and(|e| e.expunged)
    }
    fn entry(&self, seq: u32) -> Option<&Entry> {
        self.msgs.get((seq as usize).checked_sub(1)?)
    }
    pub fn iter(&self) -> impl Iterator<Item = Message<'_>> {
        self.msgs.iter().enumerate().map(|(i, e)| Message {
            seq: i as u32 + 1,
            uid: e.record.uid,
            record: &e.record,
            expunged: e.expunged,
        })
    }
    /// The keyword table as of the last check.
    pub fn keywords(&self) -> &[String] {
        &self.keywords
    }
    pub fn keyword_names(&self, k: &Keywords) -> Vec<String> {
        k.iter()
            .filter_map(|i| self.keywords.get(i).cloned())
            .collect()
    }
    pub fn uidvalidity(&self) -> u32 {
        self.uidvalidity
    }
    /// UIDNEXT as of the last check.
    pub fn uid_next(&self) -> u32 {
        self.uid_next
    }
    /// HIGHESTMODSEQ as of the last check.
    pub fn highest_modseq(&self) -> u64 {
        self.highestmodseq
    }
    pub fn mark(&self) -> ViewMark {
        self.mark
    }

    /// Resolves a sequence set to sequence numbers, ascending and without
    /// duplicates. `*` is the highest sequence number; a number above it
    /// is an error (the server answers BAD), as is any number in an empty
    /// mailbox.
    pub fn resolve_seqs(&self, set: &SeqSet) -> std::result::Result<Vec<u32>, SeqSetError> {
        let n = self.len();
        let val = |b: Bound| match b {
            _ if n == 0 => Err(SeqSetError::Empty),
            Bound::Star => Ok(n),
            Bound::Num(v) if v > n => Err(SeqSetError::OutOfRange(v, n)),
            Bound::Num(v) => Ok(v),
        };
        let mut out = Vec::new();
        for &(a, b) in &set.0 {
            let (a, b) = (val(a)?, val(b)?);
            out.extend(a.min(b)..=a.max(b));
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Resolves a UID set to the (seq, uid) pairs of the view it names,
    /// ascending. UIDs not in the view are ignored; `*` is the highest UID
    /// in the view, so `n:*` names the last message even when n is above
    /// every UID (RFC 3501 6.4.8). Held expunges are included.
    pub fn resolve_uids(&self, set: &SeqSet) -> Vec<(u32, u32)> {
        let Some(last) = self.msgs.last().map(|e| e.record.uid) else {
            return Vec::new();
        };
        let val = |b: Bound| match b {
            Bound::Star => last,
            Bound::Num(v) => v,
        };
        let mut idx = Vec::new();
        for &(a, b) in &set.0 {
            let (lo, hi) = (val(a).min(val(b)), val(a).max(val(b)));
            let start = self.msgs.partition_point(|e| e.record.uid < lo);
            idx.extend((start..self.msgs.len()).take_while(|&i| self.msgs[i].record.uid <= hi));
        }
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter()
            .map(|i| (i as u32 + 1, self.msgs[i].record.uid))
            .collect()
    }
}
