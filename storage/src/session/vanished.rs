//! What vanished since a MODSEQ (RFC 7162 QRESYNC), answered from the
//! index's records as they are read, in ascending UID order, with no copy
//! of them: the memory it takes is that of the answer, whatever the size
//! of the mailbox (module documentation of `session.rs` for the rules).
//!
//! Both answers are built in the one pass, since which one is given
//! depends on the header of that same read, known only at its end: the
//! exact one (the expunged records with a newer MODSEQ) and the fallback
//! (every UID of the ranges that does not exist now).

use crate::format::{Header, Record};

/// One pass over a mailbox's records towards its VANISHED answer.
pub(super) struct VanishedScan<'r, H: Iterator<Item = u32>> {
    /// UIDs the client holds as existing messages, ascending, not yet
    /// merged in: never reported, and they count as existing.
    held: std::iter::Peekable<H>,
    modseq: u64,
    /// Sorted, merged (`normalize`), never empty ranges.
    ranges: &'r [(u32, u32)],
    exact: Vec<(u32, u32)>,
    /// UIDs of the ranges with no existing message below `prev`.
    gaps: Vec<(u32, u32)>,
    /// The highest UID known to exist so far (0: none yet).
    prev: u32,
    /// The first range that may meet a later gap.
    next_range: usize,
    /// A scan of a later part of the index ([`Self::later_part`]) that
    /// has not seen its first record yet.
    starts_later: bool,
    /// The UID of the first record this scan saw.
    first: Option<u32>,
}

impl<'r, H: Iterator<Item = u32>> VanishedScan<'r, H> {
    pub fn new(modseq: u64, ranges: &'r [(u32, u32)], held: H) -> Self {
        VanishedScan {
            held: held.peekable(),
            modseq,
            ranges,
            exact: Vec::new(),
            gaps: Vec::new(),
            prev: 0,
            next_range: 0,
            starts_later: false,
            first: None,
        }
    }

    /// A scan of the records from some record number on (the second half
    /// of a read in two, `SessionView::open_resync_replacing`), with no
    /// UIDs held: the UIDs below its first record are the earlier part's,
    /// and [`Self::join`] puts the two together as one pass would have.
    pub fn later_part(modseq: u64, ranges: &'r [(u32, u32)]) -> Self
    where
        H: Default,
    {
        VanishedScan {
            starts_later: true,
            ..Self::new(modseq, ranges, H::default())
        }
    }

    /// Takes in `later`, the [`Self::later_part`] scan of the records
    /// right after the ones this scan saw: the state one pass over both
    /// would have. Gaps and expunges are never adjacent within one pass
    /// (an existing UID lies between two gaps; `push_uid` merges
    /// neighbours), so pieces that meet at the boundary are merged.
    pub fn join(&mut self, later: Self) {
        let Some(first) = later.first else {
            return;
        };
        // Everything between this part's last existing UID and the later
        // part's first record exists nowhere: this part's expunged tail
        // and the UIDs no record holds.
        if first.saturating_sub(1) > self.prev {
            self.gap(self.prev + 1, first - 1);
        }
        join_ranges(&mut self.exact, later.exact);
        join_ranges(&mut self.gaps, later.gaps);
        self.prev = self.prev.max(later.prev);
        self.next_range = self.next_range.max(later.next_range);
    }

    /// The next record of the index (ascending UIDs).
    pub fn record(&mut self, r: &Record) {
        if self.first.is_none() {
            self.first = Some(r.uid);
            if self.starts_later {
                self.prev = r.uid.saturating_sub(1);
            }
        }
        while let Some(h) = self.held.next_if(|&h| h < r.uid) {
            self.exists(h);
        }
        if !r.is_expunged() || self.held.peek() == Some(&r.uid) {
            self.exists(r.uid);
        } else if r.modseq > self.modseq && super::in_ranges(self.ranges, r.uid) {
            super::push_uid(&mut self.exact, r.uid);
        }
    }

    /// A UID that exists: a live record, or one the client holds. Called
    /// in ascending order; a repeat is ignored.
    fn exists(&mut self, uid: u32) {
        if uid <= self.prev {
            return;
        }
        if uid - 1 > self.prev {
            self.gap(self.prev + 1, uid - 1);
        }
        self.prev = uid;
    }

    /// UIDs `a..=b` exist nowhere: their part inside the ranges.
    fn gap(&mut self, a: u32, b: u32) {
        let ranges = self.ranges;
        while ranges.get(self.next_range).is_some_and(|r| r.1 < a) {
            self.next_range += 1;
        }
        for &(lo, hi) in ranges[self.next_range..].iter().take_while(|r| r.0 <= b) {
            self.gaps.push((a.max(lo), b.min(hi)));
        }
    }

    /// The answer, with the header of the read: the exact one while the
    /// index still holds every expunge since the MODSEQ, otherwise the
    /// fallback (true) above `floor` (the client's sequence-match floor).
    pub fn finish(mut self, header: &Header, floor: u32) -> (Vec<(u32, u32)>, bool) {
        while let Some(h) = self.held.next() {
            self.exists(h);
        }
        if header.removed_modseq <= self.modseq {
            return (self.exact, false);
        }
        if header.last_uid > self.prev {
            self.gap(self.prev + 1, header.last_uid);
        }
        let out = self
            .gaps
            .into_iter()
            .filter(|&(_, hi)| hi > floor)
            .map(|(lo, hi)| (lo.max(floor.saturating_add(1)), hi))
            .collect();
        (out, true)
    }
}

/// Appends `later` (ascending, above `out`) to `out`, merging the two
/// ranges that meet at the boundary.
fn join_ranges(out: &mut Vec<(u32, u32)>, later: Vec<(u32, u32)>) {
    let mut it = later.into_iter();
    if let Some(first) = it.next() {
        match out.last_mut() {
            Some(last) if last.1.checked_add(1) == Some(first.0) => last.1 = first.1,
            _ => out.push(first),
        }
    }
    out.extend(it);
}
