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
//! - Once the client enabled QRESYNC ([`SessionView::report_vanished`]),
//!   expunges go out as one [`Update::Vanished`] of UIDs instead of
//!   `EXPUNGE`s, under the same rule (RFC 7162 3.2.10).
//! - A session's own STORE and EXPUNGE are folded in with
//!   [`SessionView::apply_own_store`] (or [`SessionView::fold_own_store`],
//!   without the FETCH responses) / [`SessionView::apply_own_expunge`],
//!   so a later check does not echo them back as someone else's. When
//!   the commit was that step alone and started where the view last
//!   looked (its [`crate::mailbox::CommitSpan`]), the view moves to where
//!   it ended, and the next check has nothing to read back
//!   ([`SessionView::apply_own_expunge_commit`] for a batch's expunge).
//!
//! # Cost
//! A check with no change is one shared lock plus one header read
//! ([`Mailbox::changes_since`]), whatever the mailbox size. With changes it
//! is one shared lock for reading the header and the changed records (the
//! appended ones, and those the change log names; every record when the
//! log cannot answer, docs/PROTOCOL.md §4b), then O(changed · log n) here
//! to merge by UID. The messages are held in chunks of at most 256
//! (`session/entries.rs`): removing k flushed expunges costs
//! O(k · (256 + n/256)), one pass over the view when k is above n/64;
//! sequence number and UID lookups are two binary searches. After a
//! repack (another index file) the refresh is a full merge by UID:
//! O(n log n).
//!
//! Every call must be given the same [`Mailbox`] handle the view was opened
//! with: the mark's epoch belongs to that handle.
//!
//! # What vanished since a MODSEQ (RFC 7162 QRESYNC)
//! An expunge rewrites the record with the EXPUNGED mark and the MODSEQ of
//! the expunge; the record stays until a repack drops it. While it stays,
//! "which UIDs vanished since MODSEQ m" is exact: the expunged records
//! whose MODSEQ is above m. A repack raises the header's
//! `removed_modseq` to the highest MODSEQ it dropped; when that is above
//! m the exact answer is gone, and [`vanished_since`](SessionView::vanished_since)
//! answers every UID of the client's range that does not exist now
//! (allowed by RFC 7162 3.2.5.2: UIDs that never existed may be
//! reported, a vanished one may never be missed), narrowed with the
//! client's sequence-match data when it sent some. Either answer comes
//! from one pass over the records as they are read
//! (`session/vanished.rs`), holding no copy of them: what it takes is the
//! answer's size.

use std::collections::BTreeSet;
mod entries;
mod shared;
mod vanished;
use entries::Entries;
pub use shared::SharedView;
use std::path::PathBuf;
use vanished::VanishedScan;

use crate::error::{Error, Result};
use crate::format::{Flags, Keywords, Record};
use crate::mailbox::{Changes, CommitSpan, Mailbox, StoreOutcome, ViewMark};

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
    /// `* VANISHED uids` (RFC 7162 3.2.10), ascending: what `Expunge`
    /// becomes once [`SessionView::report_vanished`] is on.
    Vanished(Vec<u32>),
    /// `* n EXISTS`: the client's new message count.
    Exists(u32),
    /// The keyword table grew: send `* FLAGS (...)` and
    /// `* OK [PERMANENTFLAGS (...)]` with these keywords.
    Flags(Vec<String>),
    /// `* seq FETCH (UID uid FLAGS (...) MODSEQ (modseq))`.
    Fetch {
        /// The message's sequence number now.
        seq: u32,
        /// Its UID.
        uid: u32,
        /// Its system flags.
        flags: Flags,
        /// Its keywords, by name.
        keywords: Vec<String>,
        /// Its MODSEQ (for CONDSTORE clients).
        modseq: u64,
    },
}

/// One message as the client knows it.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// The record as last reported (or as first seen).
    record: Record,
    /// Expunged in the index, not yet reported to the client.
    expunged: bool,
}

/// One message while the view is compact ([`SessionView::compact`]): its
/// UID and the MODSEQ last reported, 12 bytes instead of an [`Entry`]'s
/// 104. Packed to 4-byte alignment; fields are only ever copied out.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct Slim {
    uid: u32,
    modseq: u64,
}

/// A message of the view, for iteration.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// Sequence number in the view.
    pub seq: u32,
    /// UID.
    pub uid: u32,
    /// Cached: what the client was last told.
    pub record: &'a Record,
    /// Expunged by someone, held until an EXPUNGE may be sent.
    pub expunged: bool,
}

/// Errors in a client's sequence set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SeqSetError {
    /// Not a sequence set (RFC 3501 `sequence-set`).
    #[error("invalid sequence set {0:?}")]
    Syntax(String),
    /// A number above the message count (the number, the count).
    #[error("sequence number {0} is above the message count {1}")]
    OutOfRange(u32, u32),
    /// A sequence number in an empty mailbox.
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

/// What one client has been told about one selected mailbox, and what
/// it still has to be told (see the module documentation for the rules).
///
/// ```
/// # fn main() -> mailstore::Result<()> {
/// use mailstore::{Allow, AppendOptions, FlagOp, Flags, MailboxName, Options, SessionView, Store, Update, UserName};
/// # let tmp = tempfile::tempdir().unwrap();
/// # let store = Store::open(tmp.path(), Options::default())?;
/// # let user = UserName::new("alice")?;
/// # store.ensure_mailbox(&user, &MailboxName::inbox())?;
/// let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
/// let uid = mbox.append(&b"Subject: a\r\n\r\na\r\n"[..], AppendOptions::default())?;
/// let mut view = SessionView::open(&mut mbox)?;
///
/// // Another session deletes and expunges the message.
/// let mut other = store.open_mailbox(&user, &MailboxName::inbox())?;
/// other.store(&[uid], FlagOp::Add, Flags::DELETED, &[], None)?;
/// other.expunge(None, true)?;
///
/// // During a FETCH by sequence number the expunge is held:
/// // message 1 keeps its number.
/// let ups = view.check(&mut mbox, Allow::NoExpunge)?;
/// assert!(ups.iter().all(|u| !matches!(u, Update::Expunge(_))));
/// assert_eq!(view.len(), 1);
/// // At NOOP it goes out.
/// assert_eq!(view.check(&mut mbox, Allow::AllUpdates)?, vec![Update::Expunge(1)]);
/// assert_eq!(view.len(), 0);
/// # Ok(()) }
/// ```
pub struct SessionView {
    /// Sorted by UID; index + 1 is the sequence number.
    msgs: Entries,
    /// UIDs of the entries that are `expunged` (held), in no order.
    held: Vec<u32>,
    /// UIDs of the live entries whose record has \Deleted: EXPUNGE's
    /// hint to the store ([`Self::deleted_uids`]).
    deleted: BTreeSet<u32>,
    mark: ViewMark,
    /// Highest UID of any record this view has read, expunged or not.
    /// Records above it are new.
    floor: u32,
    keywords: Vec<String>,
    uidvalidity: u32,
    highestmodseq: u64,
    uid_next: u32,
    index_path: PathBuf,
    /// Report expunges as `Vanished` (QRESYNC enabled).
    vanished: bool,
    /// The lowest MODSEQ of a held expunge (a lower bound when unknown).
    held_floor: Option<u64>,
    /// While compact (IDLE): the messages, `msgs` then being empty.
    slim: Option<Vec<Slim>>,
    /// Every message of `msgs` with a lower UID has \Seen in its record:
    /// where [`first_unseen`](Self::first_unseen) starts looking. Lowered
    /// whenever a record below it is replaced by one without \Seen (a
    /// message leaving the view keeps it true).
    seen_below: u32,
    /// Which read of every record the records come from ([`next_read`]):
    /// a view caught up from another keeps the other's.
    read: u64,
}

/// Numbers the reads of every record, in the order they happen.
fn next_read() -> u64 {
    static READS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    READS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// A client's QRESYNC parameters to SELECT/EXAMINE (RFC 7162 3.2.5),
/// UIDVALIDITY already checked.
#[derive(Clone, Debug, Default)]
pub struct ResyncRequest {
    /// The last MODSEQ the client knows.
    pub modseq: u64,
    /// The UIDs the client knows, as inclusive ranges; `None`: all.
    pub known_uids: Option<Vec<(u32, u32)>>,
    /// Sequence-match data: the client's (sequence number, UID) pairs.
    pub seq_match: Vec<(u32, u32)>,
}

/// What a QRESYNC SELECT reports besides the usual responses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resync {
    /// For `* VANISHED (EARLIER)`: inclusive UID ranges, ascending.
    pub vanished: Vec<(u32, u32)>,
    /// Sequence numbers (ascending) whose MODSEQ is above the client's:
    /// each gets `FETCH (UID FLAGS MODSEQ)`.
    pub changed: Vec<u32>,
    /// True when the exact answer was no longer known (a repack dropped
    /// expunged records newer than the client's MODSEQ) and `vanished` is
    /// every UID of the range that does not exist now.
    pub fallback: bool,
}

impl std::fmt::Debug for SessionView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionView")
            .field("len", &self.len())
            .field("compact", &self.slim.is_some())
            .field("held", &self.held.len())
            .field("mark", &self.mark)
            .finish()
    }
}

impl SessionView {
    /// Opens the view (IMAP SELECT): one consistent snapshot. The client
    /// is then told `EXISTS len()`.
    pub fn open(mbox: &mut Mailbox) -> Result<SessionView> {
        Self::open_replacing(mbox, None)
    }

    /// [`open`](Self::open), building the view in the memory of `old`, a
    /// view this one replaces (SELECT after SELECT): a big mailbox's view
    /// then costs no new pages.
    pub fn open_replacing(mbox: &mut Mailbox, old: Option<SessionView>) -> Result<SessionView> {
        Self::open_halves(mbox, Entries::recycling(old.map(|v| v.msgs)))
    }

    /// [`open`](Self::open) into `msgs`, a big mailbox's records read in
    /// two halves at once (`Mailbox::snapshot_halves`), each into chunks
    /// of its own, joined after: the same view as one pass gives.
    fn open_halves(mbox: &mut Mailbox, msgs: Entries) -> Result<SessionView> {
        let (mut a, mut b) = (Building::new(msgs), Building::new(Entries::default()));
        let (header, mark, meta) = mbox.snapshot_halves(&mut a, &mut b, Building::take)?;
        a.join(b);
        Ok(Self::new(
            mbox, a.msgs, a.floor, a.deleted, &header, mark, meta,
        ))
    }

    /// SELECT again of the mailbox this view shows, through the handle it
    /// was opened and checked with: the view [`open`](Self::open) would
    /// give now, caught up from this one at the cost of what changed since
    /// its last look (the records the change log names, the appended ones)
    /// instead of a read of every record. A client re-selecting a mailbox
    /// of a million messages then costs what a NOOP costs, and the read
    /// of the whole index no longer sweeps the CPU caches (issue 21).
    ///
    /// The result is the fresh view: expunges held for the old selection
    /// are dropped (a new selection starts without them; the caller sends
    /// the new EXISTS), every record is as the index holds it (each
    /// in-place change raises a record's MODSEQ, PROTOCOL.md §4b, so the
    /// changed ones are exactly those found), and expunges are reported as
    /// `EXPUNGE` until [`report_vanished`](Self::report_vanished).
    ///
    /// Reads every record, in this view's memory as
    /// [`open_replacing`](Self::open_replacing) does, when the view is
    /// compact, when the index file was replaced (a repack or reconstruct:
    /// records may have been dropped or rewritten), or when more than one
    /// record in 16 (and over 1,024) changed, which a fresh read serves
    /// faster than a merge by UID. The caller must make
    /// sure `mbox` still is the mailbox the client names, e.g. with
    /// [`Mailbox::same_index`] against a handle opened by that name (a
    /// handle follows its directory through a rename).
    pub fn reopen(mut self, mbox: &mut Mailbox) -> Result<SessionView> {
        debug_assert_eq!(mbox.index_path(), self.index_path, "wrong mailbox handle");
        if self.slim.is_some() {
            return Self::open_replacing(mbox, Some(self));
        }
        let mut dropped = Vec::new();
        match mbox.changes_since(&self.mark)? {
            None => {}
            // A whole new file, or so much changed that merging record by
            // record (a binary search each) costs more than a fresh read.
            Some(ch) if ch.full || ch.records.len() > reopen_merge_limit(self.msgs.len()) => {
                return Self::open_replacing(mbox, Some(self));
            }
            Some(ch) => {
                let mark = mbox.mark_of(&ch.header);
                self.merge(ch)?;
                self.keywords = mbox.keyword_names().to_vec();
                self.mark = mark;
            }
        }
        self.flush_expunges(&mut dropped);
        self.vanished = false;
        self.held_floor = None;
        Ok(self)
    }

    /// Opens the view for `SELECT ... (QRESYNC ...)`: the view and what
    /// changed since the client's MODSEQ, from one read of the index, so
    /// nothing reported as vanished is in the view and nothing in the
    /// view is missed. The view reports expunges as
    /// [`Update::Vanished`].
    pub fn open_resync(mbox: &mut Mailbox, req: &ResyncRequest) -> Result<(SessionView, Resync)> {
        Self::open_resync_replacing(mbox, req, None)
    }

    /// [`open_resync`](Self::open_resync) in the memory of `old` (see
    /// [`open_replacing`](Self::open_replacing)).
    pub fn open_resync_replacing(
        mbox: &mut Mailbox,
        req: &ResyncRequest,
        old: Option<SessionView>,
    ) -> Result<(SessionView, Resync)> {
        let msgs = Entries::recycling(old.map(|v| v.msgs));
        let all = [(1, u32::MAX)];
        let ranges = match &req.known_uids {
            Some(r) => normalize(r),
            None => all.to_vec(),
        };
        // Read in two halves at once, as a plain SELECT is: each builds
        // its part of the view, scans its records for what vanished and
        // notes its changed messages; joined after as one pass would
        // have left them. The view holds the live records, which the
        // scans see as they are read: no UIDs held apart from them.
        let modseq = req.modseq;
        let (mut a, mut b) = (
            ResyncPart {
                view: Building::new(msgs),
                scan: VanishedScan::new(modseq, &ranges, std::iter::empty()),
                changed: Vec::new(),
            },
            ResyncPart {
                view: Building::new(Entries::default()),
                scan: VanishedScan::later_part(modseq, &ranges),
                changed: Vec::new(),
            },
        );
        let (header, mark, meta) = mbox.snapshot_halves(&mut a, &mut b, |part, r| {
            part.scan.record(&r);
            if !r.is_expunged() && r.modseq > modseq && in_ranges(&ranges, r.uid) {
                // Its sequence number within this part.
                part.changed.push(part.view.msgs.len() as u32 + 1);
            }
            part.view.take(r);
        })?;
        let before_b = a.view.msgs.len() as u32;
        a.changed.extend(b.changed.iter().map(|seq| seq + before_b));
        a.view.join(b.view);
        a.scan.join(b.scan);
        let mut view = Self::new(
            mbox,
            a.view.msgs,
            a.view.floor,
            a.view.deleted,
            &header,
            mark,
            meta,
        );
        view.vanished = true;
        let floor = view.seq_match_floor(&req.seq_match);
        let (vanished, fallback) = a.scan.finish(&header, floor);
        Ok((
            view,
            Resync {
                vanished,
                changed: a.changed,
                fallback,
            },
        ))
    }

    /// UIDs of `ranges` expunged since `modseq`, for `UID FETCH ...
    /// (CHANGEDSINCE modseq VANISHED)` (RFC 7162 3.2.6): inclusive ranges,
    /// ascending, never a UID this view still holds (those go out as
    /// `VANISHED` without EARLIER when they may). The second value is true
    /// when the exact answer was gone and the fallback was given (see the
    /// module documentation).
    pub fn vanished_since(
        &self,
        mbox: &mut Mailbox,
        modseq: u64,
        ranges: &[(u32, u32)],
    ) -> Result<(Vec<(u32, u32)>, bool)> {
        debug_assert_eq!(mbox.index_path(), self.index_path, "wrong mailbox handle");
        let ranges = normalize(ranges);
        let held = self.msgs.iter().map(|e| e.record.uid);
        let mut scan = VanishedScan::new(modseq, &ranges, held);
        let (header, _, _) = mbox.snapshot_each(|r| scan.record(&r))?;
        if header.uidvalidity != self.uidvalidity {
            return Err(Error::MailboxDeleted);
        }
        Ok(scan.finish(&header, 0))
    }

    /// The highest UID of the client's sequence-match data whose sequence
    /// number names the same UID here: the client and this view then agree
    /// on every message below it (UIDs only grow, so none was added below
    /// it, and as many remain), so nothing at or below it vanished. 0 when
    /// no pair matches.
    fn seq_match_floor(&self, pairs: &[(u32, u32)]) -> u32 {
        pairs
            .iter()
            .filter(|(seq, uid)| self.uid(*seq) == Some(*uid))
            .map(|(_, uid)| *uid)
            .max()
            .unwrap_or(0)
    }

    fn new(
        mbox: &Mailbox,
        msgs: Entries,
        floor: u32,
        deleted: BTreeSet<u32>,
        header: &crate::format::Header,
        mark: ViewMark,
        meta: crate::mailbox::Meta,
    ) -> SessionView {
        SessionView {
            msgs,
            held: Vec::new(),
            deleted,
            mark,
            floor,
            keywords: meta.keywords,
            uidvalidity: header.uidvalidity,
            highestmodseq: header.highestmodseq,
            uid_next: header.last_uid.saturating_add(1),
            index_path: mbox.index_path().to_path_buf(),
            vanished: false,
            held_floor: None,
            slim: None,
            seen_below: 0,
            read: next_read(),
        }
    }

    /// From now on report expunges as [`Update::Vanished`] (the client
    /// enabled QRESYNC, RFC 7162 3.2.10) or as `EXPUNGE`s.
    pub fn report_vanished(&mut self, on: bool) {
        self.vanished = on;
    }

    /// Looks at the index and returns what the client must be told now.
    /// See the module documentation for the rules and the cost.
    ///
    /// While the view is [compact](SessionView::compact) every update is
    /// allowed, as under IDLE: pass [`Allow::AllUpdates`].
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
        if self.slim.is_some() {
            debug_assert_eq!(allow, Allow::AllUpdates, "a compact view holds no expunge");
            return self.apply_compact(mbox, ch, mark);
        }
        self.apply(mbox, ch, mark, allow)
    }

    /// Folds `ch` (read at `mark`) into the full view; the updates `allow`
    /// lets out.
    fn apply(
        &mut self,
        mbox: &Mailbox,
        ch: Changes,
        mark: ViewMark,
        allow: Allow,
    ) -> Result<Vec<Update>> {
        let mut out = Vec::new();
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

    /// Trades the cached records for a compact list of UIDs and the MODSEQs
    /// last reported: 12 bytes a message instead of about 100, for a
    /// session that will only be checked with [`Allow::AllUpdates`] until
    /// [`expand`](SessionView::expand) (IMAP IDLE: a thousand idle
    /// sessions of one mailbox of 1,100 messages held 110 MiB of copies of
    /// the same records). False, and nothing changed, while expunges are
    /// held (a check with [`Allow::AllUpdates`] sends them first).
    ///
    /// While compact, [`len`](SessionView::len), [`uid`](SessionView::uid),
    /// [`seq`](SessionView::seq), [`uids`](SessionView::uids) and the
    /// mailbox-wide accessors answer as before; the per-message records
    /// ([`record`](SessionView::record), [`iter`](SessionView::iter),
    /// [`resolve_uids`](SessionView::resolve_uids), the `apply_own_*`
    /// folds) are not there: expand first.
    pub fn compact(&mut self) -> bool {
        if self.slim.is_some() {
            return true;
        }
        if !self.held.is_empty() {
            return false;
        }
        let slim = self
            .msgs
            .iter()
            .map(|e| Slim {
                uid: e.record.uid,
                modseq: e.record.modseq,
            })
            .collect();
        self.msgs = Entries::default();
        // Rebuilt from the records at `expand`; a compact view runs no
        // EXPUNGE (the client must end IDLE first).
        self.deleted.clear();
        self.slim = Some(slim);
        true
    }

    /// Whether the view is [compact](SessionView::compact).
    pub fn is_compact(&self) -> bool {
        self.slim.is_some()
    }

    /// Ends [`compact`](SessionView::compact): reads every record again
    /// (one pass under the shared lock) and returns what the client
    /// must be told as a check with [`Allow::AllUpdates`] would: messages
    /// expunged meanwhile (even repacked away), new ones, MODSEQs above
    /// those last reported. Nothing to do for a full view. When the index
    /// cannot be read the view stays compact; after
    /// [`Error::MailboxDeleted`] (another mailbox under the name) it is of
    /// no further use, as after [`check`](SessionView::check).
    pub fn expand(&mut self, mbox: &mut Mailbox) -> Result<Vec<Update>> {
        debug_assert_eq!(mbox.index_path(), self.index_path, "wrong mailbox handle");
        let Some(slim) = &self.slim else {
            return Ok(Vec::new());
        };
        // Every record read under one shared lock, straight into the
        // view's chunks (no copy of the index in between: a phone leaving
        // IDLE on a mailbox of a million messages, issue 21), in two
        // halves at once as a first SELECT reads them, each half from its
        // own place in `slim`, joined after (`Rebuilding`).
        let floor = self.floor;
        let (mut a, mut b) = (Rebuilding::new(false), Rebuilding::new(true));
        let (header, mark, _) =
            mbox.snapshot_halves(&mut a, &mut b, |part, r| part.record(slim, floor, r))?;
        a.join(b, slim);
        let Rebuilding {
            mut msgs,
            deleted,
            mut news,
            gone,
            ..
        } = a;
        msgs.finish_building();
        // Repacked away: expunged at or below removed_modseq, as a full
        // read concludes for a known UID missing from the index.
        news.extend(gone.into_iter().map(|uid| Record {
            uid,
            flags: Flags::EXPUNGED,
            modseq: header.removed_modseq,
            ..Record::default()
        }));
        self.slim = None;
        self.deleted = deleted;
        self.msgs = msgs;
        self.seen_below = 0;
        self.read = next_read();
        let ch = Changes {
            header,
            records: news,
            full: false,
            meta: None,
            from_log: false,
        };
        self.apply(mbox, ch, mark, Allow::AllUpdates)
    }

    /// [`SessionView::apply`] for a compact view: expunges go out at once.
    fn apply_compact(
        &mut self,
        mbox: &Mailbox,
        ch: Changes,
        mark: ViewMark,
    ) -> Result<Vec<Update>> {
        if ch.header.uidvalidity != self.uidvalidity {
            return Err(Error::MailboxDeleted);
        }
        self.highestmodseq = ch.header.highestmodseq;
        self.uid_next = ch.header.last_uid.saturating_add(1);
        let slim = self.slim.as_mut().expect("compact");
        let old_len = slim.len();
        let mut present = if ch.full {
            vec![false; old_len]
        } else {
            Vec::new()
        };
        // Indexes of expunged messages, and records newer than reported.
        let mut gone = Vec::new();
        let mut changed = Vec::new();
        for r in ch.records {
            if r.uid > self.floor {
                self.floor = r.uid;
                if !r.is_expunged() {
                    if slim.len() == slim.capacity() {
                        slim.reserve_exact((slim.len() / 8).max(16));
                    }
                    slim.push(Slim {
                        uid: r.uid,
                        modseq: r.modseq,
                    });
                }
                continue;
            }
            let Ok(i) = slim[..old_len].binary_search_by_key(&r.uid, |s| s.uid) else {
                continue;
            };
            if ch.full {
                present[i] = true;
            }
            if r.is_expunged() {
                gone.push(i);
            } else if r.modseq > slim[i].modseq {
                slim[i].modseq = r.modseq;
                changed.push(r);
            }
        }
        gone.extend(present.iter().enumerate().filter(|p| !*p.1).map(|p| p.0));
        gone.sort_unstable();
        let grew = slim.len() > old_len;
        let mut out = Vec::new();
        if self.vanished && !gone.is_empty() {
            out.push(Update::Vanished(
                gone.iter().map(|&i| slim[i].uid).collect(),
            ));
        } else {
            out.extend(gone.iter().rev().map(|&i| Update::Expunge(i as u32 + 1)));
        }
        let (mut at, mut next) = (0, gone.iter().peekable());
        slim.retain(|_| {
            let drop = next.next_if_eq(&&at).is_some();
            at += 1;
            !drop
        });
        self.mark = mark;
        if self.sync_keywords(mbox) {
            out.push(Update::Flags(self.keywords.clone()));
        }
        if grew {
            out.push(Update::Exists(self.len()));
        }
        let mut fetches: Vec<(u32, Update)> = changed
            .iter()
            .filter_map(|r| Some((self.seq(r.uid)?, r)))
            .map(|(seq, r)| (seq, self.fetch(seq, r)))
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
                    note_deleted(&mut self.deleted, &r);
                    note_unseen(&mut self.seen_below, &r);
                    self.msgs.push(Entry {
                        record: r,
                        expunged: false,
                    });
                }
                continue;
            }
            let Some(i) = self.msgs.position(r.uid).ok().filter(|&i| i < old_len) else {
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
                self.held.push(r.uid);
                self.deleted.remove(&r.uid);
                hold_at(&mut self.held_floor, r.modseq);
            } else if r.modseq > e.record.modseq {
                changed.push(r.uid);
                note_deleted(&mut self.deleted, &r);
                note_unseen(&mut self.seen_below, &r);
                e.record = r;
            }
        }
        if ch.full {
            // By position: only the chunks holding such a message are
            // written (and so copied when shared with another view).
            let gone: Vec<usize> = (self.msgs.iter().zip(present).enumerate())
                .filter(|(_, (e, seen))| !seen && !e.expunged)
                .map(|(i, _)| i)
                .collect();
            for i in gone {
                let e = &mut self.msgs[i];
                e.expunged = true;
                let uid = e.record.uid;
                self.held.push(uid);
                self.deleted.remove(&uid);
                // Repacked away: expunged at or below removed_modseq.
                hold_at(&mut self.held_floor, ch.header.removed_modseq);
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
        if self.held.is_empty() {
            return;
        }
        let mut uids = std::mem::take(&mut self.held);
        uids.sort_unstable();
        uids.dedup();
        self.held_floor = None;
        if uids.len() > self.msgs.len() / 64 {
            // Many at once (a repack seen in full, a big EXPUNGE): one
            // pass over the view rather than one removal each.
            if self.vanished {
                out.push(Update::Vanished(uids));
            } else {
                let gone: Vec<usize> = (self.msgs.iter().enumerate())
                    .filter(|(_, e)| e.expunged)
                    .map(|(i, _)| i)
                    .collect();
                out.extend(
                    gone.into_iter()
                        .rev()
                        .map(|i| Update::Expunge(i as u32 + 1)),
                );
            }
            self.msgs.retain_unexpunged();
            return;
        }
        // Highest sequence number first: each removal leaves the lower
        // numbers as the client knows them.
        for &uid in uids.iter().rev() {
            if let Ok(i) = self.msgs.position(uid) {
                self.msgs.remove(i);
                if !self.vanished {
                    out.push(Update::Expunge(i as u32 + 1));
                }
            }
        }
        if self.vanished {
            out.push(Update::Vanished(uids));
        }
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
        let mut seqs = Vec::new();
        let flags = self.fold_own_changes(mbox, outcome, |seq| seqs.push(seq));
        seqs.sort_unstable();
        let mut out: Vec<Update> = flags.into_iter().collect();
        out.extend(seqs.into_iter().map(|seq| {
            let r = self.msgs[seq as usize - 1].record.clone();
            self.fetch(seq, &r)
        }));
        out
    }

    /// [`Self::apply_own_store`] without the FETCH responses: folds the
    /// STORE into the view and returns the keyword table's update when
    /// the STORE grew it. For a caller that answers from the view (the
    /// IMAP server): a STORE of every message of a big mailbox then
    /// builds no response per message only to drop it.
    pub fn fold_own_store(&mut self, mbox: &Mailbox, outcome: &StoreOutcome) -> Option<Update> {
        self.fold_own_changes(mbox, outcome, |_| {})
    }

    /// Folds `outcome`'s changed records into the view, handing `folded`
    /// the sequence number of each one taken; then the keyword table's
    /// update, if it grew.
    fn fold_own_changes(
        &mut self,
        mbox: &Mailbox,
        outcome: &StoreOutcome,
        mut folded: impl FnMut(u32),
    ) -> Option<Update> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        for r in &outcome.changed {
            // UIDs above the floor are new to this view: the next check
            // reports them (with this state) as EXISTS.
            let Some(seq) = self.seq(r.uid) else { continue };
            let e = &mut self.msgs[seq as usize - 1];
            if e.expunged || r.modseq <= e.record.modseq {
                continue;
            }
            e.record = r.clone();
            note_deleted(&mut self.deleted, r);
            note_unseen(&mut self.seen_below, r);
            folded(seq);
        }
        self.follow_own_commit(outcome.span);
        self.sync_keywords(mbox)
            .then(|| Update::Flags(self.keywords.clone()))
    }

    /// After the session's own commit has been folded in: when the commit
    /// was that step alone and found the index where this view last
    /// looked, what it changed is everything that changed, so the view is
    /// now where the commit left the index, and the next check does not
    /// read the step's records back from the change log.
    fn follow_own_commit(&mut self, span: Option<CommitSpan>) {
        if let Some(span) = span
            && span.before == self.mark
        {
            self.mark = span.after;
            self.highestmodseq = span.after.highestmodseq;
        }
    }

    /// Folds the session's own EXPUNGE (the UIDs [`Mailbox::expunge`]
    /// returned) into the view. With [`Allow::AllUpdates`] (EXPUNGE, UID
    /// EXPUNGE, MOVE, CLOSE) returns the EXPUNGE responses for them and for
    /// any expunges held before, highest sequence number first; otherwise
    /// they are held like anyone else's.
    pub fn apply_own_expunge(&mut self, uids: &[u32], allow: Allow) -> Vec<Update> {
        self.apply_own_expunge_commit(uids, None, allow)
    }

    /// [`Self::apply_own_expunge`] of an expunge committed with `span`
    /// ([`crate::mailbox::BatchOutcome::Expunge`]): when that commit was
    /// the expunge alone and found the index where this view last looked,
    /// the view moves to where it left the index, as after a check.
    pub fn apply_own_expunge_commit(
        &mut self,
        uids: &[u32],
        span: Option<CommitSpan>,
        allow: Allow,
    ) -> Vec<Update> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        for &uid in uids {
            if let Some(seq) = self.seq(uid) {
                let e = &mut self.msgs[seq as usize - 1];
                if !e.expunged {
                    e.expunged = true;
                    self.held.push(uid);
                    self.deleted.remove(&uid);
                    // Expunged just now, above what the view last saw.
                    hold_at(&mut self.held_floor, self.highestmodseq);
                }
            }
        }
        self.follow_own_commit(span);
        let mut out = Vec::new();
        if allow == Allow::AllUpdates {
            self.flush_expunges(&mut out);
        }
        out
    }

    /// UIDs of the messages this view last saw with \Deleted (and not
    /// expunged), ascending: the hint for an EXPUNGE
    /// ([`crate::mailbox::BatchOp::Expunge`]), which lets the store read
    /// only their records when they are all the \Deleted messages there
    /// are. O(their number).
    pub fn deleted_uids(&self) -> Vec<u32> {
        self.deleted.iter().copied().collect()
    }

    /// Number of messages the client knows, held expunges included.
    pub fn len(&self) -> u32 {
        (self.msgs.len() + self.slim.as_ref().map_or(0, Vec::len)) as u32
    }
    /// Whether the client's view holds no message.
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty() && self.slim.as_ref().is_none_or(Vec::is_empty)
    }
    /// Expunges seen but not yet reported.
    pub fn held_expunges(&self) -> usize {
        self.held.len()
    }

    /// While expunges are held, a MODSEQ below every held one: what the
    /// server announces as `* OK [HIGHESTMODSEQ n]` after a command that
    /// may have sent higher MODSEQs, so a client that disconnects before
    /// the expunges go out resynchronizes from before them (RFC 7162
    /// 3.2.5 and its erratum 1810 on RFC 5162). `None` when none is held.
    pub fn held_expunge_modseq(&self) -> Option<u64> {
        (!self.held.is_empty()).then(|| self.held_floor.unwrap_or(1).saturating_sub(1).max(1))
    }
    /// The sequence number of the first message without \Seen (SELECT's
    /// `[UNSEEN n]`, RFC 3501 6.3.1), `None` when every message has it.
    /// Looks from where the last call stopped, as far as no record before
    /// it lost \Seen since: a mailbox whose new mail is at the end, read
    /// down to it, is not walked from its first message at every SELECT
    /// (a million records, issue 21). None while compact.
    pub fn first_unseen(&mut self) -> Option<u32> {
        if self.slim.is_some() {
            return None;
        }
        let start = self.msgs.position(self.seen_below).unwrap_or_else(|i| i);
        let found = self
            .msgs
            .iter_from(start)
            .find(|(_, e)| !e.record.flags.contains(Flags::SEEN));
        self.seen_below = match found {
            Some((_, e)) => e.record.uid,
            None => self
                .msgs
                .last()
                .map_or(0, |e| e.record.uid.saturating_add(1)),
        };
        found.map(|(i, _)| i as u32 + 1)
    }
    /// The UID of sequence number `seq`, as the client knows it.
    pub fn uid(&self, seq: u32) -> Option<u32> {
        if let Some(slim) = &self.slim {
            return slim.get((seq as usize).checked_sub(1)?).map(|s| s.uid);
        }
        self.entry(seq).map(|e| e.record.uid)
    }
    /// The sequence number of `uid` in the client's view.
    pub fn seq(&self, uid: u32) -> Option<u32> {
        let i = match &self.slim {
            Some(slim) => slim.binary_search_by_key(&uid, |s| s.uid),
            None => self.msgs.position(uid),
        };
        i.ok().map(|i| i as u32 + 1)
    }
    /// How many messages of the view (held expunges included) have a
    /// UID in `lo..=hi`, also while compact: two binary searches, however
    /// many messages the range holds.
    pub fn count_in_uid_range(&self, lo: u32, hi: u32) -> u32 {
        if lo > hi {
            return 0;
        }
        // Position of the first message with a UID at or above `uid`.
        let at = |uid: u32| match &self.slim {
            Some(slim) => slim.partition_point(|s| s.uid < uid),
            None => self.msgs.position(uid).unwrap_or_else(|i| i),
        };
        let end = hi.checked_add(1).map_or(self.len() as usize, at);
        (end - at(lo)) as u32
    }
    /// The sequence numbers of the first and the last message of the
    /// view (held expunges included) with a UID in `lo..=hi`; `None` when
    /// there is none. Two binary searches (a SEARCH by UID range walks
    /// only what lies between them).
    pub fn seqs_of_uid_range(&self, lo: u32, hi: u32) -> Option<(u32, u32)> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        if lo > hi {
            return None;
        }
        let at = |uid: u32| self.msgs.position(uid).unwrap_or_else(|i| i);
        let first = at(lo);
        let end = hi.checked_add(1).map_or(self.msgs.len(), at);
        (end > first).then(|| (first as u32 + 1, end as u32))
    }
    /// The UIDs of the view in sequence order (also while compact).
    pub fn uids(&self) -> impl Iterator<Item = u32> + '_ {
        let slim = self.slim.iter().flatten().map(|s| s.uid);
        self.msgs.iter().map(|e| e.record.uid).chain(slim)
    }
    /// The highest UID of the view (also while compact).
    pub fn last_uid(&self) -> Option<u32> {
        self.uid(self.len())
    }
    /// The cached record of `seq`: what the client was last told.
    pub fn record(&self, seq: u32) -> Option<&Record> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        self.entry(seq).map(|e| &e.record)
    }
    /// True when `seq` is held as expunged.
    pub fn is_expunged(&self, seq: u32) -> bool {
        self.entry(seq).is_some_and(|e| e.expunged)
    }
    fn entry(&self, seq: u32) -> Option<&Entry> {
        self.msgs.get((seq as usize).checked_sub(1)?)
    }
    /// Every message of the view, in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = Message<'_>> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        self.msgs.iter().enumerate().map(|(i, e)| Message {
            seq: i as u32 + 1,
            uid: e.record.uid,
            record: &e.record,
            expunged: e.expunged,
        })
    }
    /// The messages with sequence numbers `lo..=hi` (the part within the
    /// view), in sequence order, found without walking those below.
    pub fn iter_seqs(&self, lo: u32, hi: u32) -> impl Iterator<Item = Message<'_>> {
        debug_assert!(self.slim.is_none(), "records of a compact view");
        let lo = lo.max(1);
        let n = hi.min(self.len()).saturating_add(1).saturating_sub(lo);
        self.msgs
            .iter_from(lo as usize - 1)
            .take(n as usize)
            .map(|(i, e)| Message {
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
    /// The names of the keywords set in `k`.
    pub fn keyword_names(&self, k: &Keywords) -> Vec<String> {
        k.iter()
            .filter_map(|i| self.keywords.get(i).cloned())
            .collect()
    }
    /// UIDVALIDITY of the mailbox.
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
    /// Where the view last looked: the mark to wait from
    /// ([`crate::watch::Watch::wait`]).
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
        debug_assert!(self.slim.is_none(), "records of a compact view");
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
            let start = self.msgs.position(lo).unwrap_or_else(|i| i);
            idx.extend(
                self.msgs
                    .iter_from(start)
                    .take_while(|(_, e)| e.record.uid <= hi)
                    .map(|(i, e)| (i as u32 + 1, e.record.uid)),
            );
        }
        idx.sort_unstable();
        idx.dedup();
        idx
    }
}

/// Keeps `set` (UIDs of live records with \Deleted) right for `r`.
fn note_deleted(set: &mut BTreeSet<u32>, r: &Record) {
    if r.flags.contains(Flags::DELETED) && !r.is_expunged() {
        set.insert(r.uid);
    } else {
        set.remove(&r.uid);
    }
}

/// The most changed records [`SessionView::reopen`] merges into a view of
/// `len` messages rather than reading every record afresh: one in 16,
/// and at least 1,024 (a small view merges whatever changed).
fn reopen_merge_limit(len: usize) -> usize {
    (len / 16).max(1024)
}

/// A view being built from a read of the records in index order (or
/// from a part of them, `SessionView::open_halves`).
struct Building {
    msgs: Entries,
    /// Live records with \Deleted.
    deleted: BTreeSet<u32>,
    /// The highest UID read, expunged or not.
    floor: u32,
}

impl Building {
    fn new(msgs: Entries) -> Building {
        Building {
            msgs,
            deleted: BTreeSet::new(),
            floor: 0,
        }
    }

    /// Takes in `later`, built from the records right after this one's:
    /// the view one pass over both would have built.
    fn join(&mut self, mut later: Building) {
        self.msgs.finish_building();
        later.msgs.finish_building();
        self.msgs.append(later.msgs);
        self.deleted.append(&mut later.deleted);
        self.floor = self.floor.max(later.floor);
    }

    /// The next record read.
    fn take(&mut self, record: Record) {
        self.floor = record.uid;
        if !record.is_expunged() {
            note_deleted(&mut self.deleted, &record);
            self.msgs.push_building(Entry {
                record,
                expunged: false,
            });
        }
    }
}

/// A compact view being rebuilt from a read of the records in index
/// order, or from a part of them (`SessionView::expand`): each message
/// as last reported (its record now, with the MODSEQ the client knows),
/// and aside what the client must be told, as a check that read only
/// those records would have found them: records changed or expunged
/// since, new ones, and the UIDs of messages repacked away meanwhile
/// (rebuilt as stand-ins, never served).
struct Rebuilding {
    msgs: Entries,
    deleted: BTreeSet<u32>,
    news: Vec<Record>,
    gone: Vec<u32>,
    /// The next message of the compact view to meet.
    next: usize,
    /// Where in the compact view this part started: placed at its first
    /// record when it reads a later part of the index.
    start: Option<usize>,
}

impl Rebuilding {
    fn new(later: bool) -> Rebuilding {
        Rebuilding {
            msgs: Entries::default(),
            deleted: BTreeSet::new(),
            news: Vec::new(),
            gone: Vec::new(),
            next: 0,
            start: (!later).then_some(0),
        }
    }

    /// A message as last reported, or (`None`: repacked away) a stand-in.
    fn rebuild(&mut self, s: &Slim, now: Option<Record>) {
        let record = match now {
            Some(r) => Record {
                modseq: s.modseq,
                ..r
            },
            None => {
                self.gone.push(s.uid);
                Record {
                    uid: s.uid,
                    modseq: s.modseq,
                    ..Record::default()
                }
            }
        };
        note_deleted(&mut self.deleted, &record);
        self.msgs.push_building(Entry {
            record,
            expunged: false,
        });
    }

    /// The next record read; `slim`: the compact view, `floor` its floor.
    fn record(&mut self, slim: &[Slim], floor: u32, r: Record) {
        if self.start.is_none() {
            // The messages below this part's first record are the
            // earlier part's (or repacked away, `join`).
            self.next = slim.partition_point(|s| s.uid < r.uid);
            self.start = Some(self.next);
        }
        while let Some(s) = slim.get(self.next).filter(|s| s.uid < r.uid) {
            self.rebuild(s, None);
            self.next += 1;
        }
        match slim.get(self.next).filter(|s| s.uid == r.uid) {
            Some(s) => {
                if r.is_expunged() || r.modseq > s.modseq {
                    self.news.push(r.clone());
                }
                self.rebuild(s, Some(r));
                self.next += 1;
            }
            None if r.uid > floor => self.news.push(r),
            None => {}
        }
    }

    /// Takes in `later`, rebuilt from the records right after this one's,
    /// and then the messages of `slim` that no record met: the result
    /// one pass over every record gives.
    fn join(&mut self, later: Rebuilding, slim: &[Slim]) {
        if let Some(start) = later.start {
            // Between this part's last record and the later part's first.
            for s in &slim[self.next..start] {
                self.rebuild(s, None);
            }
            self.msgs.finish_building();
            self.msgs.append(later.msgs);
            self.deleted.extend(later.deleted);
            self.news.extend(later.news);
            self.gone.extend(later.gone);
            self.next = later.next;
        }
        for s in &slim[self.next..] {
            self.rebuild(s, None);
        }
    }
}

/// One half of the read of `SessionView::open_resync_replacing`.
struct ResyncPart<'r> {
    view: Building,
    scan: VanishedScan<'r, std::iter::Empty<u32>>,
    /// Sequence numbers, within this part, of the live messages changed
    /// since the client's MODSEQ.
    changed: Vec<u32>,
}

/// Keeps [`SessionView::first_unseen`]'s start below `r` when `r`, now
/// in the view, lacks \Seen.
fn note_unseen(seen_below: &mut u32, r: &Record) {
    if !r.flags.contains(Flags::SEEN) {
        *seen_below = (*seen_below).min(r.uid);
    }
}

/// Lowers the held-expunge floor to `modseq`.
fn hold_at(floor: &mut Option<u64>, modseq: u64) {
    *floor = Some(floor.map_or(modseq, |f| f.min(modseq)));
}

/// Sorted, merged copies of inclusive ranges (either bound first).
fn normalize(ranges: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut v: Vec<(u32, u32)> = ranges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
    v.sort_unstable();
    let mut out: Vec<(u32, u32)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

/// `uid` lies in one of the sorted, merged `ranges`.
fn in_ranges(ranges: &[(u32, u32)], uid: u32) -> bool {
    let i = ranges.partition_point(|r| r.1 < uid);
    ranges.get(i).is_some_and(|r| r.0 <= uid)
}

/// Appends `uid` to inclusive ranges built in ascending order.
fn push_uid(out: &mut Vec<(u32, u32)>, uid: u32) {
    match out.last_mut() {
        Some(last) if last.1.checked_add(1) == Some(uid) => last.1 = uid,
        _ => out.push((uid, uid)),
    }
}

/// [`VanishedScan`] over `records` and `held` (both ascending): the
/// tests' way in.
#[cfg(test)]
fn vanished_in(
    header: &crate::format::Header,
    records: &[Record],
    modseq: u64,
    ranges: &[(u32, u32)],
    floor: u32,
    held: &[u32],
) -> (Vec<(u32, u32)>, bool) {
    let ranges = normalize(ranges);
    let mut scan = VanishedScan::new(modseq, &ranges, held.iter().copied());
    records.iter().for_each(|r| scan.record(r));
    scan.finish(header, floor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Header;

    fn rec(uid: u32, modseq: u64, expunged: bool) -> Record {
        Record {
            uid,
            modseq,
            flags: if expunged {
                Flags::EXPUNGED
            } else {
                Flags::empty()
            },
            ..Record::default()
        }
    }

    /// The answer UID by UID, the way the rules say it (module
    /// documentation), for small mailboxes: what the one-pass scan must
    /// give.
    fn vanished_by_rule(
        header: &Header,
        records: &[Record],
        modseq: u64,
        ranges: &[(u32, u32)],
        floor: u32,
        held: &[u32],
    ) -> (Vec<(u32, u32)>, bool) {
        let in_r = |u: u32| ranges.iter().any(|&(a, b)| a.min(b) <= u && u <= a.max(b));
        let mut out = Vec::new();
        if header.removed_modseq <= modseq {
            for r in records {
                if r.is_expunged() && r.modseq > modseq && in_r(r.uid) && !held.contains(&r.uid) {
                    push_uid(&mut out, r.uid);
                }
            }
            return (out, false);
        }
        for u in floor + 1..=header.last_uid {
            let exists =
                held.contains(&u) || records.iter().any(|r| r.uid == u && !r.is_expunged());
            if in_r(u) && !exists {
                push_uid(&mut out, u);
            }
        }
        (out, true)
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_scan_answers_as_the_rules_say(
            recs in proptest::collection::btree_map(1u32..60, (0u64..8, proptest::bool::ANY), 0..40),
            held_from in proptest::collection::btree_set(1u32..60, 0..10),
            ranges in proptest::collection::vec((1u32..70, 1u32..70), 1..4),
            modseq in 0u64..8,
            removed in 0u64..8,
            floor in 0u32..30,
            extra in 0u32..10,
        ) {
            let records: Vec<Record> = recs.iter().map(|(&u, &(m, x))| rec(u, m, x)).collect();
            let last = recs.keys().last().copied().unwrap_or(0) + extra;
            // The client holds UIDs that were assigned (at most the last).
            let held: Vec<u32> = held_from.into_iter().filter(|&u| u <= last).collect();
            let h = Header { last_uid: last, removed_modseq: removed, ..Header::default() };
            proptest::prop_assert_eq!(
                vanished_in(&h, &records, modseq, &ranges, floor, &held),
                vanished_by_rule(&h, &records, modseq, &ranges, floor, &held)
            );
        }
    }

    /// RFC 7162 3.2.5.2: with the expunged records still in the index the
    /// answer is exact; after a repack dropped newer ones, every missing
    /// UID of the range is reported and no existing one.
    #[test]
    fn vanished_is_exact_until_a_repack_then_every_missing_uid() {
        let recs = vec![
            rec(1, 1, false),
            rec(3, 5, true),
            rec(4, 2, true),
            rec(6, 1, false),
        ];
        let mut h = Header {
            last_uid: 8,
            highestmodseq: 6,
            ..Header::default()
        };
        let all = [(1, u32::MAX)];
        assert_eq!(
            vanished_in(&h, &recs, 2, &all, 0, &[]),
            (vec![(3, 3)], false)
        );
        assert_eq!(
            vanished_in(&h, &recs, 0, &all, 0, &[]),
            (vec![(3, 4)], false)
        );
        h.removed_modseq = 4;
        assert_eq!(
            vanished_in(&h, &recs, 4, &all, 0, &[]),
            (vec![(3, 3)], false)
        );
        assert_eq!(
            vanished_in(&h, &recs, 3, &all, 0, &[]),
            (vec![(2, 5), (7, 8)], true)
        );
        // Known UIDs narrow it; a sequence-match floor too; held UIDs stay.
        assert_eq!(
            vanished_in(&h, &recs, 3, &[(2, 3), (7, 100)], 0, &[]),
            (vec![(2, 3), (7, 8)], true)
        );
        assert_eq!(
            vanished_in(&h, &recs, 3, &all, 6, &[]),
            (vec![(7, 8)], true)
        );
        assert_eq!(
            vanished_in(&h, &recs, 3, &all, 0, &[4]),
            (vec![(2, 3), (5, 5), (7, 8)], true)
        );
    }

    #[test]
    fn ranges_normalize_and_match() {
        let r = normalize(&[(5, 3), (1, 1), (2, 2), (9, 10)]);
        assert_eq!(r, vec![(1, 5), (9, 10)]);
        assert!(in_ranges(&r, 4) && in_ranges(&r, 10) && !in_ranges(&r, 6) && !in_ranges(&r, 11));
    }
}
