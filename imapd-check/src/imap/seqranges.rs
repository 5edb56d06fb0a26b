//! The messages a FETCH names, as ranges of sequence numbers of the
//! session's view: as many ranges as the client's set has, never one
//! entry per message, so that `FETCH 1:*` over a million messages walks
//! the view without a list of its targets.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage::session::{SeqSetError, SessionView};

/// Inclusive ranges of sequence numbers, sorted by their first number
/// (they may overlap: [`SeqRanges::iter`] gives each number once).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeqRanges(Vec<(u32, u32)>);

impl SeqRanges {
    /// From (first, last) pairs, first <= last, in any order.
    pub fn from_pairs(mut v: Vec<(u32, u32)>) -> SeqRanges {
        v.sort_unstable();
        SeqRanges(v)
    }

    /// The sequence numbers, ascending, each once.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        // Below `next`: already given.
        let mut next = 0u64;
        self.0.iter().flat_map(move |&(a, b)| {
            let from = u64::from(a).max(next);
            next = next.max(u64::from(b) + 1);
            // Empty when all of it was given.
            (from..=u64::from(b)).map(|s| s as u32)
        })
    }

    /// The sequence numbers `set` names. By sequence number (`uid`
    /// false): `*` is the last message, a number above it is an error,
    /// as is any number in an empty mailbox (RFC 3501 6.4.8: the server
    /// answers BAD). By UID: UIDs not in the view are ignored and `*` is
    /// the highest UID in the view, so `n:*` names the last message even
    /// when n is above every UID (RFC 3501 6.4.8). Held expunges are
    /// included.
    pub fn resolve(
        view: &SessionView,
        set: &SequenceSet,
        uid: bool,
    ) -> Result<SeqRanges, SeqSetError> {
        let n = view.len();
        let mut pairs = Vec::with_capacity(set.0.as_ref().len());
        for s in set.0.as_ref() {
            let (a, b) = match s {
                Sequence::Single(a) => (a, a),
                Sequence::Range(a, b) => (a, b),
            };
            if uid {
                let Some(last) = view.uid(n) else {
                    return Ok(SeqRanges::default());
                };
                let val = |x: &SeqOrUid| match x {
                    SeqOrUid::Value(v) => v.get(),
                    SeqOrUid::Asterisk => last,
                };
                let (lo, hi) = (val(a).min(val(b)), val(a).max(val(b)));
                // First sequence number whose UID is >= lo, and the first
                // whose UID is > hi: UIDs ascend with sequence numbers.
                let from = first_seq(view, |u| u >= lo);
                let to = first_seq(view, |u| u > hi);
                if from < to {
                    pairs.push((from, to - 1));
                }
            } else {
                let val = |x: &SeqOrUid| match x {
                    _ if n == 0 => Err(SeqSetError::Empty),
                    SeqOrUid::Asterisk => Ok(n),
                    SeqOrUid::Value(v) if v.get() > n => Err(SeqSetError::OutOfRange(v.get(), n)),
                    SeqOrUid::Value(v) => Ok(v.get()),
                };
                let (a, b) = (val(a)?, val(b)?);
                pairs.push((a.min(b), a.max(b)));
            }
        }
        Ok(SeqRanges::from_pairs(pairs))
    }
}

/// The first sequence number whose UID satisfies `pred` (monotone over
/// the view), or len + 1 when none does.
fn first_seq(view: &SessionView, pred: impl Fn(u32) -> bool) -> u32 {
    let (mut lo, mut hi) = (1u32, view.len() + 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if view.uid(mid).is_some_and(&pred) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Overlapping and repeated ranges give each number once, ascending.
    #[test]
    fn overlapping_ranges_give_each_number_once() {
        let r = SeqRanges::from_pairs(vec![(5, 7), (1, 2), (3, 3), (6, 9), (12, 12), (2, 2)]);
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![1, 2, 3, 5, 6, 7, 8, 9, 12]
        );
        let top = SeqRanges::from_pairs(vec![(u32::MAX, u32::MAX), (u32::MAX - 2, u32::MAX)]);
        assert_eq!(top.iter().count(), 3);
        assert_eq!(SeqRanges::default().iter().count(), 0);
    }
}
