//! A snapshot handed over record by record (for a session view, which
//! keeps only the live records in its own layout): the index is read
//! under one shared lock without a vector of every record in between.

use super::{Mailbox, Meta, UidOrder, ViewMark};
use crate::error::Result;
use crate::format::{Header, Record};
use crate::lock::LockKind;

impl Mailbox {
    /// [`Mailbox::snapshot`] giving each record to `f` in index order
    /// (ascending UID, checked) instead of collecting them. Returns the
    /// header, the mark of this look and the keyword table.
    pub fn snapshot_each(&mut self, f: impl FnMut(Record)) -> Result<(Header, ViewMark, Meta)> {
        let (g, h) = self.lock_current(LockKind::Shared)?;
        self.each_in_order(&h, f)?;
        self.refresh_meta(&h)?;
        drop(g);
        Ok((h.clone(), self.mark_of(&h), self.meta.clone()))
    }

    /// Every record `h` counts, in index order, to `f`: UIDs must ascend
    /// and stay within `last_uid` (corruption is reported at the record's
    /// offset). The caller holds the lock `h` was read under.
    pub(super) fn each_in_order(&self, h: &Header, mut f: impl FnMut(Record)) -> Result<()> {
        let mut order = UidOrder::new(h, 0);
        self.index.each_record(0, h.num_records, |r| {
            order.next(&r, &self.index.path)?;
            f(r);
            Ok(())
        })
    }
}

/// Below this many records a snapshot in parts reads them on the calling
/// thread alone: a thread costs more than it saves.
pub(crate) const PARTS_MIN_RECORDS: u32 = 1 << 16;

impl Mailbox {
    /// [`Mailbox::snapshot_each`] with the records read in two halves at
    /// once, the second on a scoped thread, under the one shared lock the
    /// calling thread holds: `each` gets each record of a half, in index
    /// order, with that half's accumulator (`first` for the first half,
    /// `second` for the second). The halves' UID order is checked within
    /// each and across the boundary, as one pass would; damage in both is
    /// reported at the lower offset. A mailbox under
    /// [`PARTS_MIN_RECORDS`] records, or a failure to start the thread,
    /// reads on this thread alone (the second accumulator then gets
    /// nothing). SELECT of a big mailbox then takes about half the time
    /// on two cores (issue 21).
    pub(crate) fn snapshot_halves<T: Send>(
        &mut self,
        first: &mut T,
        second: &mut T,
        each: impl Fn(&mut T, Record) + Sync,
    ) -> Result<(Header, ViewMark, Meta)> {
        let (g, h) = self.lock_current(LockKind::Shared)?;
        let n = h.num_records;
        if n < PARTS_MIN_RECORDS {
            self.each_in_order(&h, |r| each(first, r))?;
        } else {
            let mid = n / 2;
            let this = &*self;
            // The first and last UID a half read, whatever its outcome.
            let half = |acc: &mut T, from: u32, to: u32| {
                let mut order = UidOrder::new(&h, from);
                let mut ends: Option<(u32, u32)> = None;
                let read = this.index.each_record(from, to, |r| {
                    ends = Some(ends.map_or((r.uid, r.uid), |(a, _)| (a, r.uid)));
                    order.next(&r, &this.index.path)?;
                    each(acc, r);
                    Ok(())
                });
                (read, ends)
            };
            let (a, b) = std::thread::scope(|s| {
                let other = std::thread::Builder::new().spawn_scoped(s, || half(second, mid, n));
                match other {
                    Ok(t) => {
                        let a = half(first, 0, mid);
                        let b = t.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
                        (a, Some(b))
                    }
                    Err(_) => (half(first, 0, n), None),
                }
            });
            // The lowest offset first: the first half, the boundary, the
            // second half.
            a.0?;
            if let Some((read, ends)) = b {
                if let (Some((_, last)), Some((next, _))) = (a.1, ends)
                    && next <= last
                {
                    return Err(crate::error::Error::corrupt(
                        &self.index.path,
                        Header::record_offset(mid),
                        format!("record {mid}: UID {next} out of order (previous {last})"),
                    ));
                }
                read?;
            }
        }
        self.refresh_meta(&h)?;
        drop(g);
        Ok((h.clone(), self.mark_of(&h), self.meta.clone()))
    }
}
