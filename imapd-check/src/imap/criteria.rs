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

impl Crit<'_, '_> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
