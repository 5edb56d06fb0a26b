//! QRESYNC (RFC 7162 section 3.2): `ENABLE QRESYNC`, the QRESYNC
//! parameter of SELECT/EXAMINE (`* VANISHED (EARLIER)` and the FETCH of
//! what changed since the client's MODSEQ), the VANISHED modifier of
//! `UID FETCH`, `* VANISHED` instead of `* n EXPUNGE`, and `[CLOSED]`.
//!
//! What vanished since a MODSEQ comes from the store's expunged records
//! (`storage::session`): exact while they are in the index, the RFC's
//! fallback (every UID of the client's range that does not exist now)
//! once a repack dropped records newer than the client's MODSEQ.

use imap_codec::imap_types::command::SelectParameter;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage::session::{Resync, ResyncRequest, SessionView, Update};
use storage::{Flags, Mailbox, MailboxName, UserName};

use super::conn::{Fail, Selected, Session, bad};
use super::sharedviews::Member;

/// Inclusive ranges of a sequence set; `*` is `star`.
pub(super) fn ranges(set: &SequenceSet, star: u32) -> Vec<(u32, u32)> {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(n) => n.get(),
        SeqOrUid::Asterisk => star,
    };
    set.0
        .as_ref()
        .iter()
        .map(|q| match q {
            Sequence::Single(a) => (v(a), v(a)),
            Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
        })
        .collect()
}

/// Ranges per VANISHED line: keeps every line under about 12 KB, so a
/// long answer (the fallback over a large, gappy mailbox) never makes a
/// line a client refuses (RFC 7162 section 4 raises the recommended
/// limit to 8192 octets for commands; responses are split likewise).
const RANGES_PER_LINE: usize = 500;

/// `* VANISHED [(EARLIER) ]1:3,7\r\n` lines for inclusive ranges,
/// ascending; several lines when they are many, none when empty.
pub(super) fn vanished_lines(out: &mut Vec<u8>, earlier: bool, r: &[(u32, u32)]) {
    for chunk in r.chunks(RANGES_PER_LINE) {
        let set = chunk
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}:{b}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let tag = if earlier { "(EARLIER) " } else { "" };
        out.extend_from_slice(format!("* VANISHED {tag}{set}\r\n").as_bytes());
    }
}

/// Inclusive ranges of ascending UIDs.
pub(super) fn uid_ranges(uids: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &u in uids {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(u) => last.1 = u,
            _ => out.push((u, u)),
        }
    }
    out
}

/// The numbers of a sequence set, in the client's order, at most `cap` of
/// them (`*` is not allowed in sequence-match data; taken as 0, which
/// matches nothing).
fn numbers(set: &SequenceSet, cap: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for (a, b) in ranges(set, 0) {
        for n in a..=b {
            if out.len() >= cap {
                return out;
            }
            out.push(n);
        }
    }
    out
}

/// How many numbers a set names (without expanding it).
fn count(set: &SequenceSet) -> u64 {
    ranges(set, 0)
        .iter()
        .map(|&(a, b)| u64::from(b - a) + 1)
        .sum()
}

/// A QRESYNC parameter as the client sent it.
pub(super) struct Param {
    uidvalidity: u32,
    req: ResyncRequest,
}

impl Session {
    /// `ENABLE QRESYNC`: implies CONDSTORE (RFC 7162 3.2.3); from now on
    /// expunges are reported as VANISHED.
    pub(super) fn enable_qresync(&mut self) {
        self.qresync = true;
        self.condstore = true;
        if let Some(sel) = self.sel.as_mut() {
            sel.view.report_vanished(true);
        }
    }

    /// A CONDSTORE-enabling command (RFC 7162 3.1: ENABLE CONDSTORE,
    /// FETCH of MODSEQ or CHANGEDSINCE, SEARCH MODSEQ, STATUS
    /// HIGHESTMODSEQ, STORE UNCHANGEDSINCE): from now on every untagged
    /// FETCH about flags carries UID and MODSEQ. The first one while a
    /// mailbox is selected tells its HIGHESTMODSEQ, as SELECT would have
    /// (no higher than a held expunge's, as `announce_held_expunges`).
    pub(super) fn enable_condstore(&mut self) {
        if self.condstore {
            return;
        }
        self.condstore = true;
        if let Some(sel) = self.sel.as_ref() {
            let view = &sel.view;
            let m = view.held_expunge_modseq().unwrap_or(view.highest_modseq());
            self.buf.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {}] Highest\r\n", m.max(1)).as_bytes(),
            );
        }
    }

    /// After a command that left expunges held (FETCH, STORE, SEARCH by
    /// sequence number), `* OK [HIGHESTMODSEQ n]` with n below them, so a
    /// QRESYNC client that saw higher MODSEQs in this command's FETCHes
    /// and disconnects before the VANISHED still learns of those
    /// expunges when it resynchronizes (RFC 7162 3.2.5; erratum 1810).
    pub(super) fn announce_held_expunges(&mut self) {
        if !self.qresync {
            return;
        }
        if let Some(m) = self.sel.as_ref().and_then(|s| s.view.held_expunge_modseq()) {
            self.buf.extend_from_slice(
                format!("* OK [HIGHESTMODSEQ {m}] Expunges pending\r\n").as_bytes(),
            );
        }
    }

    /// SELECT/EXAMINE is about to replace the selected mailbox: `* OK
    /// [CLOSED]` (RFC 7162 3.2.11), before any response about the new one.
    /// Returns the closed selection: the new view is caught up from its
    /// view when it is the same mailbox, or built in its memory.
    pub(super) fn close_for_select(&mut self) -> Option<Selected> {
        let old = self.sel.take()?;
        self.buf
            .extend_from_slice(b"* OK [CLOSED] Previous mailbox closed\r\n");
        Some(old)
    }

    /// The QRESYNC parameter of SELECT/EXAMINE, if any. BAD without a
    /// prior `ENABLE QRESYNC` (RFC 7162 3.2.5).
    pub(super) fn resync_param(&self, params: &[SelectParameter]) -> Result<Option<Param>, Fail> {
        let Some((uidvalidity, modseq, known, seq_match)) = params.iter().find_map(|p| match p {
            SelectParameter::QResync {
                uid_validity,
                mod_sequence_value,
                known_uids,
                seq_match_data,
            } => Some((uid_validity, mod_sequence_value, known_uids, seq_match_data)),
            SelectParameter::CondStore => None,
        }) else {
            return Ok(None);
        };
        if !self.qresync {
            return bad("QRESYNC parameter without ENABLE QRESYNC");
        }
        let seq_match = match seq_match {
            Some((seqs, uids)) => {
                // The i-th sequence number goes with the i-th UID: sets
                // of different sizes cannot be paired (Dovecot answers
                // BAD too).
                if count(seqs) != count(uids) {
                    return bad(
                        "Invalid QRESYNC sets: known-sequence-set and known-uid-set differ in size",
                    );
                }
                // Only the first pairs are used: fewer pairs only make the
                // answer longer, never wrong, and the cap bounds the work.
                let cap = 1 << 17;
                numbers(seqs, cap)
                    .into_iter()
                    .zip(numbers(uids, cap))
                    .collect()
            }
            None => Vec::new(),
        };
        Ok(Some(Param {
            uidvalidity: uidvalidity.get(),
            req: ResyncRequest {
                modseq: modseq.get(),
                known_uids: known.as_ref().map(|k| ranges(k, u32::MAX)),
                seq_match,
            },
        }))
    }

    /// Opens mailbox `name` of `user` and its view for SELECT/EXAMINE,
    /// with the resynchronization when the client sent QRESYNC for this
    /// UIDVALIDITY (on another one the client must resync from scratch:
    /// no VANISHED, no FETCH). `old`: the selection before, if any. When
    /// the name still names its mailbox (`Store::still_names`: the index
    /// file at the name's path is the one its handle has open) and no
    /// QRESYNC is asked, its view is caught up with what changed since
    /// ([`SessionView::reopen`], through its own handle, which is
    /// returned): a re-SELECT of a big mailbox costs what changed, not a
    /// read of every record. Otherwise a handle is opened by the name and
    /// the new view is built in the old one's memory.
    pub(super) fn open_view(
        &self,
        user: &UserName,
        name: &MailboxName,
        param: Option<Param>,
        old: Option<Selected>,
    ) -> Result<(Mailbox, SessionView, Option<Resync>, Member), Fail> {
        let (mbox, mut view, resync, member) = match (param, old) {
            (None, Some(mut o))
                if o.name == *name && self.store.still_names(user, name, &o.mbox)? =>
            {
                let view = o.view.reopen(&mut o.mbox)?;
                o.shared.offer(&o.mbox, &view);
                (o.mbox, view, None, o.shared)
            }
            (param, old) => {
                let mut mbox = self.store.open_mailbox(user, name)?;
                // Before `old` goes: a session selecting the mailbox it
                // leaves keeps the slot (sharedviews.rs).
                let member = super::sharedviews::join(&mbox)?;
                let old = old.map(|o| o.view);
                match param {
                    Some(p) => {
                        // Every record is read: a heavy command (slice.rs).
                        super::slice::heavy();
                        let (view, resync) =
                            SessionView::open_resync_replacing(&mut mbox, &p.req, old)?;
                        member.offer(&mbox, &view);
                        let matches = view.uidvalidity() == p.uidvalidity;
                        (mbox, view, matches.then_some(resync), member)
                    }
                    None => {
                        let view = match member.start_view(&mut mbox)? {
                            Some(view) => view,
                            None => {
                                super::slice::heavy();
                                SessionView::open_replacing(&mut mbox, old)?
                            }
                        };
                        member.offer(&mbox, &view);
                        (mbox, view, None, member)
                    }
                }
            }
        };
        view.report_vanished(self.qresync);
        Ok((mbox, view, resync, member))
    }

    /// `* VANISHED (EARLIER)` and the FETCH (UID FLAGS MODSEQ) of each
    /// message changed since the client's MODSEQ (RFC 7162 3.2.5.1).
    pub(super) fn write_resync(&mut self, view: &SessionView, r: &Resync) {
        if r.fallback {
            tracing::debug!("QRESYNC: expunged records were repacked away; full VANISHED answer");
        }
        vanished_lines(&mut self.buf, true, &r.vanished);
        let ups: Vec<Update> = r
            .changed
            .iter()
            .filter_map(|&seq| {
                let rec = view.record(seq)?;
                Some(Update::Fetch {
                    seq,
                    uid: rec.uid,
                    flags: rec.flags.intersect(Flags::SYSTEM),
                    keywords: view.keyword_names(&rec.keywords),
                    modseq: rec.modseq,
                })
            })
            .collect();
        self.write_updates(&ups);
    }

    /// The VANISHED modifier of `UID FETCH ... (CHANGEDSINCE m VANISHED)`
    /// (RFC 7162 3.2.6): checks its preconditions and gives the UIDs of
    /// `set` expunged since `since` that are not in the session's view,
    /// for `* VANISHED (EARLIER)`.
    pub(super) fn fetch_vanished(
        &mut self,
        set: &SequenceSet,
        uid: bool,
        since: Option<u64>,
    ) -> Result<Vec<(u32, u32)>, Fail> {
        if !uid {
            return bad("VANISHED is only allowed with UID FETCH");
        }
        if !self.qresync {
            return bad("VANISHED needs ENABLE QRESYNC");
        }
        let Some(since) = since else {
            return bad("VANISHED needs CHANGEDSINCE");
        };
        let sel = self.selected()?;
        let (vanished, _) =
            sel.view
                .vanished_since(&mut sel.mbox, since, &ranges(set, u32::MAX))?;
        Ok(vanished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7162 3.2.10: the UID set is compact; a long one is split over
    /// several VANISHED lines, each a complete response.
    #[test]
    fn vanished_lines_are_compact_and_split() {
        let mut out = Vec::new();
        vanished_lines(&mut out, false, &uid_ranges(&[2, 3, 4, 7]));
        assert_eq!(out, b"* VANISHED 2:4,7\r\n");
        let many: Vec<u32> = (1..=2 * RANGES_PER_LINE as u32 + 1)
            .map(|i| i * 2)
            .collect();
        let mut out = Vec::new();
        vanished_lines(&mut out, true, &uid_ranges(&many));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.lines()
                .all(|l| l.starts_with("* VANISHED (EARLIER) ") && l.len() < 12_000)
        );
        let mut out = Vec::new();
        vanished_lines(&mut out, true, &[]);
        assert!(out.is_empty());
    }
}
