//! Search criteria made ready once per SEARCH, SORT or THREAD command.
//!
//! Sequence sets (and `$`, RFC 5182) are turned into sorted ranges with
//! `*` resolved, so each message is tested in O(log n) whatever the size
//! of the set; the other keys go to `search::matches`. Nesting is bounded
//! by imap-codec's parser (9 levels), so the recursion here is too.

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::search::{self, Candidate};
use super::searchres;

/// Sorted, merged, inclusive ranges.
#[derive(Debug, PartialEq, Eq)]
pub struct Ranges(Vec<(u32, u32)>);

impl Ranges {
    fn new(set: &SequenceSet, largest: u32) -> Ranges {
        let v = |s: &SeqOrUid| match s {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => largest,
        };
        let mut r: Vec<(u32, u32)> = set
            .0
            .as_ref()
            .iter()
            .map(|s| match s {
                Sequence::Single(a) => (v(a), v(a)),
                Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
            })
            .collect();
        r.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(r.len());
        for (a, b) in r {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ranges(merged)
    }

    fn contains(&self, n: u32) -> bool {
        let i = self.0.partition_point(|&(_, b)| b < n);
        self.0.get(i).is_some_and(|&(a, _)| a <= n)
    }
}

/// A criterion ready to test.
pub enum Crit<'k, 'a> {
    All(Vec<Crit<'k, 'a>>),
    Or(Box<Crit<'k, 'a>>, Box<Crit<'k, 'a>>),
    Not(Box<Crit<'k, 'a>>),
    Seq(Ranges),
    Uid(Ranges),
    /// `$`: the saved UIDs (ascending).
    Saved,
    Key(&'k SearchKey<'a>),
}

/// Prepares `keys` (all of which must match). `dollar`: the command's
/// `$` was written as `searchres::MARK`.
pub fn compile<'k, 'a>(
    keys: &'k [SearchKey<'a>],
    (max_seq, max_uid): (u32, u32),
    dollar: bool,
) -> Crit<'k, 'a> {
    fn one<'k, 'a>(k: &'k SearchKey<'a>, max: (u32, u32), dollar: bool) -> Crit<'k, 'a> {
        match k {
            SearchKey::SequenceSet(s) | SearchKey::Uid(s) if dollar && searchres::is_mark(s) => {
                Crit::Saved
            }
            SearchKey::SequenceSet(s) => Crit::Seq(Ranges::new(s, max.0)),
            SearchKey::Uid(s) => Crit::Uid(Ranges::new(s, max.1)),
            SearchKey::And(keys) => {
                Crit::All(keys.as_ref().iter().map(|k| one(k, max, dollar)).collect())
            }
            SearchKey::Or(a, b) => {
                Crit::Or(Box::new(one(a, max, dollar)), Box::new(one(b, max, dollar)))
            }
            SearchKey::Not(a) => Crit::Not(Box::new(one(a, max, dollar))),
            other => Crit::Key(other),
        }
    }
    Crit::All(
        keys.iter()
            .map(|k| one(k, (max_seq, max_uid), dollar))
            .collect(),
    )
}

/// Sequence bounds that hold no message.
const NONE: (u32, u32) = (1, 0);

impl Crit<'_, '_> {
    /// Sequence numbers `(lo, hi)` outside which no message can match
    /// (`lo > hi`: none can), from the sequence and UID sets a match must
    /// lie in: a SEARCH, SORT or THREAD with `UID 999900:*` walks the
    /// messages of that range, not the mailbox. `max_seq`: the view's
    /// last sequence number; `uid_seqs(lo, hi)`: the sequence numbers of
    /// the first and last message with a UID in `lo..=hi`, if any.
    pub fn seq_bounds(
        &self,
        max_seq: u32,
        uid_seqs: &impl Fn(u32, u32) -> Option<(u32, u32)>,
    ) -> (u32, u32) {
        let ends = |r: &Ranges| r.0.first().map(|f| f.0).zip(r.0.last().map(|l| l.1));
        match self {
            Crit::All(v) => v.iter().fold((1, max_seq), |(a, b), k| {
                let (c, d) = k.seq_bounds(max_seq, uid_seqs);
                (a.max(c), b.min(d))
            }),
            Crit::Or(x, y) => {
                let ((a, b), (c, d)) = (
                    x.seq_bounds(max_seq, uid_seqs),
                    y.seq_bounds(max_seq, uid_seqs),
                );
                match (a <= b, c <= d) {
                    (true, true) => (a.min(c), b.max(d)),
                    (true, false) => (a, b),
                    (false, true) => (c, d),
                    (false, false) => NONE,
                }
            }
            Crit::Seq(r) => ends(r).map_or(NONE, |(a, b)| (a.max(1), b.min(max_seq))),
            Crit::Uid(r) => ends(r).and_then(|(a, b)| uid_seqs(a, b)).unwrap_or(NONE),
            Crit::Not(_) | Crit::Saved | Crit::Key(_) => (1, max_seq),
        }
    }

    /// Does the message match? `saved`: the UIDs `$` stands for.
    pub fn matches(&self, c: &Candidate, saved: &[u32]) -> bool {
        match self {
            Crit::All(v) => v.iter().all(|k| k.matches(c, saved)),
            Crit::Or(a, b) => a.matches(c, saved) || b.matches(c, saved),
            Crit::Not(a) => !a.matches(c, saved),
            Crit::Seq(r) => r.contains(c.seq),
            Crit::Uid(r) => r.contains(c.rec.uid),
            Crit::Saved => saved.binary_search(&c.rec.uid).is_ok(),
            Crit::Key(k) => search::matches(k, c),
        }
    }
}

impl Crit<'_, '_> {
    /// Whether the message can match as far as its record tells (flags,
    /// keywords, size, dates, UID, sequence number, MODSEQ, `$`): a key
    /// that needs the message's header or body counts as "may match",
    /// and so does its negation. Never opens the message, so a pass over
    /// a million records bounds the hits of a SORT in milliseconds.
    pub fn may_match(&self, c: &Candidate, saved: &[u32]) -> bool {
        self.decided(c, saved) != Some(false)
    }

    /// The result when the record alone decides it.
    fn decided(&self, c: &Candidate, saved: &[u32]) -> Option<bool> {
        match self {
            Crit::All(v) => {
                let mut all = Some(true);
                for k in v {
                    match k.decided(c, saved) {
                        Some(false) => return Some(false),
                        Some(true) => {}
                        None => all = None,
                    }
                }
                all
            }
            Crit::Or(a, b) => match (a.decided(c, saved), b.decided(c, saved)) {
                (Some(true), _) | (_, Some(true)) => Some(true),
                (Some(false), Some(false)) => Some(false),
                _ => None,
            },
            Crit::Not(a) => a.decided(c, saved).map(|x| !x),
            Crit::Key(k) if search::record_decides(k) => Some(search::matches(k, c)),
            Crit::Key(_) => None,
            other => Some(other.matches(c, saved)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search keys of `SEARCH <q>`.
    fn keys(q: &str) -> Vec<SearchKey<'static>> {
        use imap_codec::CommandCodec;
        use imap_codec::decode::Decoder;
        use imap_codec::imap_types::IntoStatic;
        use imap_codec::imap_types::command::CommandBody;
        let line = format!("a SEARCH {q}\r\n");
        let (_, cmd) = CommandCodec::default()
            .decode(line.as_bytes())
            .unwrap_or_else(|e| panic!("{q}: {e:?}"));
        let CommandBody::Search { criteria, .. } = cmd.body else {
            panic!("{q}: not a SEARCH")
        };
        criteria
            .as_ref()
            .iter()
            .map(|k| k.clone().into_static())
            .collect()
    }

    /// `may_match` is false only when the record decides "no": a key on
    /// the header or body is "maybe", and so is its negation.
    #[test]
    fn may_match_is_an_upper_bound_from_the_record() {
        use storage::{Flags, Record};
        let rec = Record {
            uid: 6,
            flags: Flags::SEEN,
            ..Record::default()
        };
        let open = |_: &Record| -> Result<super::super::msgfile::MessageFile, storage::Error> {
            panic!("a message was opened")
        };
        let c = Candidate::new(3, &rec, Vec::new(), (10, 10), &open);
        let may = |q: &str| compile(&keys(q), (10, 10), false).may_match(&c, &[]);
        for (q, want) in [
            ("ALL", true),
            ("UID 6", true),
            ("UID 5", false),
            ("NOT UID 5", true),
            ("3", true),
            ("4:*", false),
            ("SEEN", true),
            ("UNSEEN", false),
            ("SUBJECT x", true),
            ("NOT SUBJECT x", true),
            ("(UNSEEN SUBJECT x)", false),
            ("(SEEN SUBJECT x)", true),
            ("OR FLAGGED UID 5", false),
            ("OR FLAGGED BODY x", true),
            ("NOT OR FLAGGED BODY x", true),
            ("NOT OR SEEN BODY x", false),
            ("KEYWORD $Junk", false),
            ("LARGER 0", false),
        ] {
            assert_eq!(may(q), want, "{q}");
        }
    }

    #[test]
    fn ranges_merge_and_find() {
        let set: SequenceSet = "7,1:3,2:5,*,10:9".parse().unwrap();
        let r = Ranges::new(&set, 20);
        assert_eq!(r, Ranges(vec![(1, 5), (7, 7), (9, 10), (20, 20)]));
        let hits: Vec<u32> = (0..=21).filter(|&n| r.contains(n)).collect();
        assert_eq!(hits, [1, 2, 3, 4, 5, 7, 9, 10, 20]);
        let set: SequenceSet = "5:*".parse().unwrap();
        // `5:*` with 3 the largest is 3:5 (RFC 3501 9, seq-range).
        let r = Ranges::new(&set, 3);
        assert!(r.contains(3) && r.contains(5) && !r.contains(2) && !r.contains(6));
    }

    /// `seq_bounds` never leaves out a message that matches, and with a
    /// UID or sequence set at the top it keeps only that set's span.
    #[test]
    fn seq_bounds_hold_every_match() {
        use storage::{Flags, Record};
        // 20 messages, UIDs with gaps: seq s has UID 3s, +100 above 10;
        // every third one \Seen.
        let n = 20u32;
        let recs: Vec<Record> = (1..=n)
            .map(|s| Record {
                uid: 3 * s + if s > 10 { 100 } else { 0 },
                flags: if s % 3 == 0 {
                    Flags::SEEN
                } else {
                    Flags::empty()
                },
                ..Record::default()
            })
            .collect();
        let max = (n, recs[n as usize - 1].uid);
        let uid_seqs = |a: u32, b: u32| {
            let inside: Vec<u32> = (1..=n)
                .filter(|s| (a..=b).contains(&recs[*s as usize - 1].uid))
                .collect();
            inside.first().copied().zip(inside.last().copied())
        };
        let open = |_: &Record| -> Result<super::super::msgfile::MessageFile, storage::Error> {
            panic!("a message was opened")
        };
        for (q, want) in [
            ("ALL", Some((1, 20))),
            ("UID 133:139", Some((11, 13))),
            ("UID 31:132", None),
            ("UID 40:100", None),
            ("UID 150:*", Some((17, 20))),
            ("UID 500:*", Some((20, 20))),
            ("UID 1:6,160", Some((1, 20))),
            ("5:7", Some((5, 7))),
            ("25:30", None),
            ("SEEN UID 9:45", Some((3, 10))),
            ("UID 9:45 4:6", Some((4, 6))),
            ("OR UID 3 UID 160", Some((1, 20))),
            ("OR UID 40:100 2:3", Some((2, 3))),
            ("OR UID 40:100 25:30", None),
            ("NOT UID 3", Some((1, 20))),
            ("(UID 12:15 SEEN)", Some((4, 5))),
            ("UNSEEN OR SEEN 18:*", Some((1, 20))),
            ("OR (UID 6 SEEN) (UID 9 UNSEEN)", Some((2, 3))),
        ] {
            let keys = keys(q);
            let crit = compile(&keys, max, false);
            let (lo, hi) = crit.seq_bounds(n, &uid_seqs);
            assert_eq!((lo <= hi).then_some((lo, hi)), want, "{q}");
            for s in 1..=n {
                let c = Candidate::new(s, &recs[s as usize - 1], Vec::new(), max, &open);
                if crit.matches(&c, &[recs[0].uid]) {
                    assert!(
                        lo <= s && s <= hi,
                        "{q}: message {s} matches outside {lo}..={hi}"
                    );
                }
            }
        }
    }
}
