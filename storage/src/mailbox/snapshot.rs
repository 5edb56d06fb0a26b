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
