//! Another session's check after an in-place commit, from the change log
//! (`changelog.rs`, docs/PROTOCOL.md §7): the records the log names plus
//! the appended ones, instead of every record.

use super::{Mailbox, ViewMark};
use crate::changelog::{self, Miss};
use crate::error::{Error, Result};
use crate::format::{Header, Record};

impl Mailbox {
    /// The records that may have changed since `mark` under the header
    /// `h` (read under the lock the caller holds), found through the
    /// change log: every record the chain of in-place commits since the
    /// mark names, then the appended ones. `None` when the log cannot
    /// answer (the caller reads every record). Only records with a MODSEQ
    /// above the mark's are returned.
    pub(super) fn changes_from_log(
        &self,
        mark: &ViewMark,
        h: &Header,
    ) -> Result<Option<Vec<Record>>> {
        if crate::fsmode::active() {
            return Ok(None);
        }
        let slots = match changelog::slots_since(
            &self.dir,
            mark.highestmodseq,
            mark.generation,
            h.inplace_modseq,
            h.generation,
        ) {
            Ok(s) => s,
            Err(miss) => {
                if let Miss::Damaged(offset, why) = &miss {
                    tracing::warn!(path = %self.index.path.display(), offset, why, "change log damaged; reading every record");
                } else {
                    tracing::debug!(path = %self.index.path.display(), ?miss, "change log cannot answer; reading every record");
                }
                return Ok(None);
            }
        };
        let mut out = Vec::with_capacity(slots.len());
        let mut i = 0;
        while i < slots.len() && slots[i] < mark.num_records {
            // A run of consecutive slots is one read.
            let mut j = i + 1;
            while j < slots.len() && slots[j] == slots[j - 1] + 1 && slots[j] < mark.num_records {
                j += 1;
            }
            let first = slots[i];
            let run = self.index.read_records(first, slots[j - 1] + 1)?;
            for (k, r) in run.into_iter().enumerate() {
                let recno = first + k as u32;
                if r.uid > h.last_uid {
                    return Err(Error::corrupt(
                        &self.index.path,
                        Header::record_offset(recno),
                        format!(
                            "record {recno}: UID {} above last UID {}",
                            r.uid, h.last_uid
                        ),
                    ));
                }
                if r.modseq > mark.highestmodseq {
                    out.push(r);
                }
            }
            i = j;
        }
        // Appended records, plus the one before them to check UID order.
        // None appended: nothing to check, and the last record (far into
        // a big index, cold in every cache) is not read for nothing.
        if h.num_records > mark.num_records {
            let from = mark.num_records.saturating_sub(1);
            let fresh = self.index.read_records(from, h.num_records)?;
            self.check_uid_order(h, &fresh, from)?;
            let skip = usize::from(mark.num_records > 0);
            out.extend(fresh.into_iter().skip(skip));
        }
        Ok(Some(out))
    }
}
