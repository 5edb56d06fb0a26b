//! The messages of a session view, ascending by UID, in chunks: removing
//! one (an expunge told to the client) moves at most one chunk's entries,
//! not the whole mailbox's, and sequence numbers are found through the
//! chunks' start positions. Lookups by UID or by sequence number are two
//! binary searches; iteration is in order.
//!
//! A lookup by UID touches little memory, so that it stays cheap when the
//! view is not in the CPU caches (after another session's SELECT of a big
//! mailbox streamed past them, issue 21): the chunk is found in
//! `bounds`, one contiguous array of each chunk's first and last UID,
//! not by reading an entry of every chunk probed; within the chunk the
//! search is narrowed by those two UIDs first (UIDs ascend strictly, so
//! UID `u` lies at most `u - first` entries after the first and at least
//! `last - u` before the last): in a chunk without gaps that is the one
//! entry looked for.
//!
//! Chunks are shared copy-on-write (`Arc`): a clone of the entries
//! ([`Entries::clone`], for a view another session starts from, see
//! `SessionView::share`) copies pointers, one per 256 messages, and a
//! chunk is copied only when one of its holders changes it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;

use super::Entry;

/// Entries per chunk when built (and most a chunk grows to by appends).
/// Small enough that the first change to a chunk shared with another
/// view copies 27 KB, not the 106 KB of the 1,024 it held before the
/// chunks were shared (a STORE, and each other session's check after it,
/// paid 30-50 µs more at a million messages with 1,024).
const CHUNK: usize = 256;

/// Sorted by UID; position + 1 is the sequence number.
#[derive(Default)]
pub(super) struct Entries {
    chunks: Vec<Arc<Vec<Entry>>>,
    /// Emptied chunks of a view this one replaces, filled again by
    /// [`Self::push_building`] before any new allocation.
    spare: Vec<Vec<Entry>>,
    /// `starts[c]`: entries in the chunks before chunk `c`.
    starts: Vec<usize>,
    /// `bounds[c]`: the UIDs of the first and the last entry of chunk
    /// `c` (no chunk is empty). An entry's UID never changes in place.
    bounds: Vec<(u32, u32)>,
    len: usize,
    /// The chunk of the last position located: a walk in sequence order
    /// (FETCH 1:*, SEARCH) finds each next position there or in the
    /// chunk after it, without a binary search over `starts`. Only a
    /// hint, checked before use. Atomic only so that a view can be shared
    /// between threads (`SharedView`); relaxed, a plain load and store.
    hint: AtomicUsize,
}

impl Clone for Entries {
    /// The same entries, sharing every chunk (no spare memory).
    fn clone(&self) -> Entries {
        Entries {
            chunks: self.chunks.clone(),
            spare: Vec::new(),
            starts: self.starts.clone(),
            bounds: self.bounds.clone(),
            len: self.len,
            hint: AtomicUsize::new(self.hint.load(Relaxed)),
        }
    }
}

impl Entries {
    /// From entries ascending by UID; every chunk is exactly sized.
    pub fn from_vec(v: Vec<Entry>) -> Entries {
        let mut e = Entries::default();
        let mut it = v.into_iter().peekable();
        while it.peek().is_some() {
            let chunk: Vec<Entry> = it.by_ref().take(CHUNK).collect();
            e.bounds.push(bounds_of(&chunk));
            e.starts.push(e.len);
            e.len += chunk.len();
            e.chunks.push(Arc::new(chunk));
        }
        e
    }

    /// Appends while building a view: chunks are filled to [`CHUNK`]
    /// with one allocation each; [`Self::finish_building`] trims the last.
    pub fn push_building(&mut self, e: Entry) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.starts.push(self.len);
            self.bounds.push((e.record.uid, e.record.uid));
            let chunk = match self.spare.pop() {
                Some(mut c) => {
                    c.reserve_exact(CHUNK);
                    c
                }
                None => Vec::with_capacity(CHUNK),
            };
            self.chunks.push(Arc::new(chunk));
        }
        self.bounds.last_mut().expect("a chunk").1 = e.record.uid;
        Arc::make_mut(self.chunks.last_mut().expect("a chunk")).push(e);
        self.len += 1;
    }

    /// Ends [`Self::push_building`]: no slack is kept for as long as the
    /// view lives.
    pub fn finish_building(&mut self) {
        self.spare = Vec::new();
        if let Some(last) = self.chunks.last_mut() {
            Arc::make_mut(last).shrink_to_fit();
        }
    }

    /// Appends `other`'s chunks, whose UIDs are all above this one's (the
    /// second half of a view built in two, `SessionView::open_halves`).
    pub fn append(&mut self, other: Entries) {
        for (chunk, b) in other.chunks.into_iter().zip(other.bounds) {
            self.starts.push(self.len);
            self.bounds.push(b);
            self.len += chunk.len();
            self.chunks.push(chunk);
        }
    }

    /// An empty view to build (with [`Self::push_building`]) in the
    /// memory of `old`: a session that SELECTs a big mailbox again fills
    /// the pages it already has instead of freeing them and faulting in
    /// new ones (docs/BENCHMARKS.md, session 12).
    /// Only chunks no other view shares are taken.
    pub fn recycling(old: Option<Entries>) -> Entries {
        let mut spare: Vec<Vec<Entry>> = old
            .map(|o| o.chunks)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Arc::try_unwrap(c).ok())
            .collect();
        spare.iter_mut().for_each(Vec::clear);
        // Taken from the end: the full chunks first, the trimmed last one
        // (which would need growing) last.
        spare.reverse();
        Entries {
            spare,
            ..Entries::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Chunk and offset of position `i` (< len).
    fn locate(&self, i: usize) -> (usize, usize) {
        let h = self.hint.load(Relaxed);
        for c in [h, h + 1] {
            if let (Some(&s), Some(chunk)) = (self.starts.get(c), self.chunks.get(c))
                && s <= i
                && i - s < chunk.len()
            {
                self.hint.store(c, Relaxed);
                return (c, i - s);
            }
        }
        let c = self.starts.partition_point(|&s| s <= i) - 1;
        self.hint.store(c, Relaxed);
        (c, i - self.starts[c])
    }

    pub fn get(&self, i: usize) -> Option<&Entry> {
        if i >= self.len {
            return None;
        }
        let (c, j) = self.locate(i);
        Some(&self.chunks[c][j])
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Entry> {
        if i >= self.len {
            return None;
        }
        let (c, j) = self.locate(i);
        Some(&mut Arc::make_mut(&mut self.chunks[c])[j])
    }

    pub fn last(&self) -> Option<&Entry> {
        self.chunks.last().and_then(|c| c.last())
    }

    /// `Ok(position)` of `uid`, or `Err(position)` where it would go.
    pub fn position(&self, uid: u32) -> Result<usize, usize> {
        let c = self.bounds.partition_point(|&(_, last)| last < uid);
        let Some(&(first, last)) = self.bounds.get(c) else {
            return Err(self.len);
        };
        if uid < first {
            return Err(self.starts[c]);
        }
        let chunk = &self.chunks[c];
        // first <= uid <= last: entries before `lo` hold smaller UIDs,
        // entries after `hi` bigger ones (module documentation).
        let n = chunk.len();
        let hi = ((uid - first) as usize).min(n - 1);
        let lo = (n - 1).saturating_sub((last - uid) as usize);
        chunk[lo..=hi]
            .binary_search_by_key(&uid, |e| e.record.uid)
            .map(|j| self.starts[c] + lo + j)
            .map_err(|j| self.starts[c] + lo + j)
    }

    /// Appends an entry whose UID is above every one held.
    pub fn push(&mut self, e: Entry) {
        let uid = e.record.uid;
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => {
                let last = Arc::make_mut(last);
                self.bounds.last_mut().expect("a chunk").1 = uid;
                if last.len() == last.capacity() {
                    // Grow by an eighth, not by doubling: a view lives as
                    // long as the selection, and one delivery must not
                    // double every idle session's memory.
                    last.reserve_exact((last.len() / 8).max(16).min(CHUNK - last.len()));
                }
                last.push(e);
            }
            _ => {
                let mut chunk = Vec::with_capacity(16);
                chunk.push(e);
                self.bounds.push((uid, uid));
                self.starts.push(self.len);
                self.chunks.push(Arc::new(chunk));
            }
        }
        self.len += 1;
    }

    /// Removes the entry at position `i` (< len): moves the rest of its
    /// chunk and updates the start of every later chunk.
    pub fn remove(&mut self, i: usize) -> Entry {
        let (c, j) = self.locate(i);
        let e = Arc::make_mut(&mut self.chunks[c]).remove(j);
        if self.chunks[c].is_empty() {
            self.chunks.remove(c);
            self.starts.remove(c);
            self.bounds.remove(c);
        } else {
            let chunk = Arc::make_mut(&mut self.chunks[c]);
            self.bounds[c] = bounds_of(chunk);
            chunk.shrink_to(chunk.len() + chunk.len() / 4);
            self.starts[c + 1..].iter_mut().for_each(|s| *s -= 1);
            self.len -= 1;
            return e;
        }
        self.starts[c..].iter_mut().for_each(|s| *s -= 1);
        self.len -= 1;
        e
    }

    /// Drops every `expunged` entry, rebuilding the chunks (one pass).
    pub fn retain_unexpunged(&mut self) {
        let mut all: Vec<Entry> = Vec::with_capacity(self.len);
        for chunk in std::mem::take(&mut self.chunks) {
            // Moved out of a chunk no other view shares, copied otherwise.
            match Arc::try_unwrap(chunk) {
                Ok(v) => all.extend(v.into_iter().filter(|e| !e.expunged)),
                Err(c) => all.extend(c.iter().filter(|e| !e.expunged).cloned()),
            }
        }
        *self = Entries::from_vec(all);
    }

    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.chunks.iter().flat_map(|c| c.iter())
    }

    /// Entries from position `i` on, with their positions.
    pub fn iter_from(&self, i: usize) -> impl Iterator<Item = (usize, &Entry)> {
        let (c, j) = if i >= self.len {
            (self.chunks.len(), 0)
        } else {
            self.locate(i)
        };
        self.chunks[c..]
            .iter()
            .flat_map(|c| c.iter())
            .skip(j)
            .enumerate()
            .map(move |(k, e)| (i + k, e))
    }
}

/// The UIDs of the first and the last entry of a chunk that is not empty.
fn bounds_of(chunk: &[Entry]) -> (u32, u32) {
    let uid = |e: Option<&Entry>| e.map_or(0, |e| e.record.uid);
    (uid(chunk.first()), uid(chunk.last()))
}

impl std::ops::Index<usize> for Entries {
    type Output = Entry;
    fn index(&self, i: usize) -> &Entry {
        self.get(i).expect("position in the view")
    }
}

impl std::ops::IndexMut<usize> for Entries {
    fn index_mut(&mut self, i: usize) -> &mut Entry {
        self.get_mut(i).expect("position in the view")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Record;

    fn entry(uid: u32) -> Entry {
        Entry {
            record: Record {
                uid,
                ..Record::default()
            },
            expunged: false,
        }
    }

    /// Random removals and appends against a plain vector: positions,
    /// lookups by UID and iteration agree.
    #[test]
    fn a_view_built_in_anothers_memory_reuses_its_chunks() {
        let build = |mut e: Entries, uids: std::ops::RangeInclusive<u32>| {
            uids.for_each(|u| e.push_building(entry(u)));
            e.finish_building();
            e
        };
        let old = build(Entries::default(), 1..=3 * CHUNK as u32);
        let before: Vec<*const Entry> = old.chunks.iter().map(|c| c.as_ptr()).collect();
        // A bigger mailbox now: the three chunks are filled again, one
        // more is new.
        let new = build(
            Entries::recycling(Some(old)),
            10..=(3 * CHUNK as u32 + CHUNK as u32 / 2),
        );
        let after: Vec<*const Entry> = new.chunks.iter().map(|c| c.as_ptr()).collect();
        assert_eq!(after.len(), 4);
        assert!(
            after.iter().filter(|p| before.contains(p)).count() == 3,
            "reused"
        );
        let uids: Vec<u32> = new.iter().map(|e| e.record.uid).collect();
        assert_eq!(
            uids,
            (10..=(3 * CHUNK as u32 + CHUNK as u32 / 2)).collect::<Vec<_>>()
        );
        assert_eq!(new.len(), uids.len());
        assert_eq!(new.position(10), Ok(0));
        assert!(new.spare.is_empty(), "no spare chunk kept");
        // A smaller one keeps only what it fills.
        let small = build(Entries::recycling(Some(new)), 1..=5);
        assert_eq!((small.chunks.len(), small.len()), (1, 5));
        assert!(small.spare.is_empty());
        assert!(Entries::recycling(None).is_empty());
    }

    /// A clone shares every chunk; a change through either side copies
    /// only the chunk it touches, and the other side does not see it.
    #[test]
    fn a_clone_shares_chunks_until_one_side_writes() {
        let a = Entries::from_vec((1..=3 * CHUNK as u32).map(entry).collect());
        let mut b = a.clone();
        let ptrs =
            |e: &Entries| -> Vec<*const Entry> { e.chunks.iter().map(|c| c.as_ptr()).collect() };
        assert_eq!(ptrs(&a), ptrs(&b));
        b[CHUNK + 5].expunged = true;
        b.push(entry(5 * CHUNK as u32));
        let (pa, pb) = (ptrs(&a), ptrs(&b));
        assert_eq!(pa[0], pb[0]);
        assert_ne!(pa[1], pb[1], "the written chunk is b's own now");
        assert_eq!(pa[2], pb[2], "full: the append made a chunk of b's own");
        assert_eq!((pa.len(), pb.len()), (3, 4));
        assert!(!a[CHUNK + 5].expunged && b[CHUNK + 5].expunged);
        assert_eq!((a.len(), b.len()), (3 * CHUNK, 3 * CHUNK + 1));
        // Recycling takes only the chunks no one else holds.
        let r = Entries::recycling(Some(b));
        assert_eq!(r.spare.len(), 2);
        assert_eq!(a.iter().count(), 3 * CHUNK);
    }

    #[test]
    fn behaves_like_a_sorted_vector() {
        let mut model: Vec<u32> = (1..=5000).map(|u| u * 2).collect();
        let mut e = Entries::from_vec(model.iter().map(|&u| entry(u)).collect());
        let mut seed = 12345u64;
        let mut rand = |n: usize| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut next = 20_002;
        for round in 0..4000 {
            if round % 3 == 0 {
                e.push(entry(next));
                model.push(next);
                next += 3;
            } else if !model.is_empty() {
                let i = rand(model.len());
                assert_eq!(e.remove(i).record.uid, model.remove(i));
            }
            if round % 97 == 0 {
                assert_bounds(&e);
                assert_eq!(e.len(), model.len());
                assert!(e.iter().map(|x| x.record.uid).eq(model.iter().copied()));
                // By position: a walk in order (the located chunk's hint),
                // backwards, and at random, after removals and appends
                // moved the chunks under the hint.
                for (i, &u) in model.iter().enumerate() {
                    assert_eq!(e.get(i).map(|x| x.record.uid), Some(u), "position {i}");
                }
                for (i, &u) in model.iter().enumerate().rev().step_by(7) {
                    assert_eq!(e[i].record.uid, u, "position {i}");
                }
                for _ in 0..50 {
                    let i = rand(model.len() + 1);
                    assert_eq!(e.get(i).map(|x| x.record.uid), model.get(i).copied());
                }
                for _ in 0..50 {
                    let u = rand(next as usize + 10) as u32;
                    assert_eq!(e.position(u), model.binary_search(&u), "uid {u}");
                }
                let i = rand(model.len() + 1);
                assert!(
                    e.iter_from(i).map(|(k, x)| (k, x.record.uid)).eq(model
                        .iter()
                        .copied()
                        .enumerate()
                        .skip(i))
                );
                assert_eq!(e.last().map(|x| x.record.uid), model.last().copied());
            }
        }
        while !model.is_empty() {
            assert_eq!(e.remove(0).record.uid, model.remove(0));
        }
        assert!(e.is_empty() && e.get(0).is_none());
    }

    /// Every chunk's recorded first and last UID are its entries'.
    fn assert_bounds(e: &Entries) {
        assert_eq!(e.bounds.len(), e.chunks.len());
        for (c, ch) in e.chunks.iter().enumerate() {
            assert_eq!(e.bounds[c], bounds_of(ch), "chunk {c}");
        }
    }

    /// The narrowed search by the chunk's first and last UID: without
    /// gaps, with a gap at each place in a chunk, at chunk boundaries and
    /// outside every chunk, built both ways.
    #[test]
    fn narrowed_lookup_agrees_with_a_binary_search() {
        let dense: Vec<u32> = (1..=3 * CHUNK as u32 + 5).collect();
        let mut gappy = dense.clone();
        for cut in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 7] {
            gappy.remove(cut);
        }
        gappy.push(50_000);
        for uids in [dense, gappy] {
            let a = Entries::from_vec(uids.iter().map(|&u| entry(u)).collect());
            let mut b = Entries::default();
            for &u in &uids {
                b.push_building(entry(u));
            }
            b.finish_building();
            for e in [&a, &b] {
                assert_bounds(e);
                for u in 0..=uids.last().unwrap() + 2 {
                    assert_eq!(e.position(u), uids.binary_search(&u), "uid {u}");
                }
            }
        }
    }
}
