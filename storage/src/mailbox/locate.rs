//! The records an in-place commit works on (STORE, UID EXPUNGE, a group
//! commit of them): found by UID with single-record reads, so that a
//! change of k messages costs O(k log n) reads instead of a read of the
//! whole index (docs/PROTOCOL.md §4, "Which records are read").

use std::collections::HashMap;

use super::Mailbox;
use crate::error::{Error, Result};
use crate::format::{Counts, Flags, Header, Record};

/// A full read is chosen when a commit names more than one UID per this
/// many records: reading everything sequentially is then cheaper than
/// ~20 single-record reads per UID.
const SPARSE_RATIO: u64 = 32;

/// Records a commit works on.
pub(crate) struct Working {
    /// Record numbers of `records`, ascending; `None` when `records` is
    /// the whole index (record `i` at slot `i`).
    slots: Option<Vec<u32>>,
    /// The records, ascending by UID (and so by slot).
    pub records: Vec<Record>,
    /// With `slots`, the counters of every record of the index before
    /// the commit when the header needed a recount; see [`Self::counts`].
    base: Option<Counts>,
}

impl Working {
    /// The record of `uid` if it is among `records` and not expunged.
    pub fn live(&self, uid: u32) -> Option<&Record> {
        let i = self.records.partition_point(|r| r.uid < uid);
        self.records
            .get(i)
            .filter(|r| r.uid == uid && !r.is_expunged())
    }

    /// The counters of every record of the index before the commit,
    /// when they are known: counted for a recount, or from `records` when
    /// they are the whole index. `None` when only the header counts them.
    pub fn counts(&self) -> Option<Counts> {
        if self.slots.is_none() {
            let mut c = Counts::default();
            self.records.iter().for_each(|r| c.add(r));
            return Some(c);
        }
        self.base
    }

    /// The record number of `records[i]`.
    pub fn slot(&self, i: usize) -> u32 {
        self.slots.as_ref().map_or(i as u32, |s| s[i])
    }

    /// The rewrites of the records at indices `touched` (of `records`),
    /// as `after` holds them: references, not copies (a STORE of every
    /// message of a big mailbox already holds the records twice).
    pub fn rewrites<'a>(
        &'a self,
        after: &'a [Record],
        touched: impl IntoIterator<Item = usize>,
    ) -> Vec<Rewrite<'a>> {
        touched
            .into_iter()
            .map(|i| Rewrite {
                slot: self.slot(i),
                after: &after[i],
                before: &self.records[i],
            })
            .collect()
    }
}

/// One record an in-place commit rewrites.
pub(crate) struct Rewrite<'a> {
    /// Its record number.
    pub slot: u32,
    /// The record as the commit leaves it.
    pub after: &'a Record,
    /// The record as it was: put back if the commit fails before its
    /// header is written.
    pub before: &'a Record,
}

/// What a commit asks for.
pub(crate) struct Wanted {
    /// UIDs its steps name.
    pub uids: Vec<u32>,
    /// Some step expunges every \Deleted message (IMAP EXPUNGE).
    pub all_deleted: bool,
    /// UIDs the caller believes are \Deleted (its session's view), read
    /// too when `all_deleted`: if, with the named ones, they hold every
    /// \Deleted message the header counts, nothing else is read.
    pub hint: Vec<u32>,
}

impl Wanted {
    /// Exactly these UIDs.
    pub fn uids(uids: Vec<u32>) -> Wanted {
        Wanted {
            uids,
            all_deleted: false,
            hint: Vec::new(),
        }
    }
}

impl Mailbox {
    /// Under the exclusive lock with header `h`: the records a commit
    /// asking for `want` works on. The named UIDs' records (those that
    /// exist) found by binary search with single-record reads, each
    /// CRC-checked and its UID checked against the ones around it; or
    /// every record (UID order checked) when that is cheaper, or when an
    /// expunge of every \Deleted message needs records the named ones do
    /// not cover. When the header's counters may not match the records
    /// (not recounted in this boot: `IndexFile::counted_this_boot`), every
    /// record is counted as well, one at a time (`Working::counts`).
    pub(crate) fn working_set(&self, h: &Header, want: &Wanted) -> Result<Working> {
        let mut uids: Vec<u32> = want.uids.clone();
        if want.all_deleted {
            uids.extend_from_slice(&want.hint);
        }
        uids.sort_unstable();
        uids.dedup();
        let cheap = (uids.len() as u64).saturating_mul(SPARSE_RATIO) < h.num_records as u64;
        if cheap && !(want.all_deleted && h.deleted > 0 && want.hint.is_empty()) {
            let base = if self.index.counted_this_boot() {
                None
            } else {
                Some(self.count_every_record(h)?)
            };
            let found = self.find_uids(h, &uids)?;
            let deleted = found
                .iter()
                .filter(|(_, r)| !r.is_expunged() && r.flags.contains(Flags::DELETED))
                .count() as u32;
            if !want.all_deleted || deleted == base.map_or(h.deleted, |c| c.deleted) {
                let (slots, records) = found.into_iter().unzip();
                return Ok(Working {
                    slots: Some(slots),
                    records,
                    base,
                });
            }
        }
        self.read_every_record(h)
    }

    /// Under a lock with header `h`: the records of `uids` (ascending,
    /// distinct) that the index holds, by single-record reads when few
    /// are asked for, else every record (COPY and MOVE read their source
    /// this way; nothing is counted from them).
    pub(crate) fn records_of(&self, h: &Header, uids: &[u32]) -> Result<Working> {
        if (uids.len() as u64).saturating_mul(SPARSE_RATIO) < h.num_records as u64 {
            let (slots, records) = self.find_uids(h, uids)?.into_iter().unzip();
            return Ok(Working {
                slots: Some(slots),
                records,
                base: None,
            });
        }
        self.read_every_record(h)
    }

    fn read_every_record(&self, h: &Header) -> Result<Working> {
        let records = self.index.read_records(0, h.num_records)?;
        self.check_uid_order(h, &records, 0)?;
        Ok(Working {
            slots: None,
            records,
            base: None,
        })
    }

    /// The counters of every record `h` counts, read one chunk at a time
    /// (UID order checked): a recount of a mailbox of a million messages
    /// holds no copy of its index.
    fn count_every_record(&self, h: &Header) -> Result<Counts> {
        let mut c = Counts::default();
        self.each_in_order(h, |r| c.add(&r))?;
        Ok(c)
    }

    /// The records of `uids` (ascending, distinct) that the index holds,
    /// with their record numbers, by binary search over record numbers.
    /// Every record read is CRC-checked; one whose UID does not lie
    /// strictly between the UIDs of the records around it in the search
    /// (UIDs ascend in record order) is reported as corruption.
    fn find_uids(&self, h: &Header, uids: &[u32]) -> Result<Vec<(u32, Record)>> {
        let mut cache: HashMap<u32, Record> = HashMap::new();
        let mut read = |slot: u32| -> Result<Record> {
            if let Some(r) = cache.get(&slot) {
                return Ok(r.clone());
            }
            let r = self
                .index
                .read_records(slot, slot + 1)?
                .pop()
                .expect("one record");
            cache.insert(slot, r.clone());
            Ok(r)
        };
        let mut out = Vec::new();
        // Records below `lo` hold UIDs below the next wanted one.
        let (mut lo, mut lo_uid) = (0u32, 0u32);
        for &uid in uids {
            let (mut a, mut b) = (lo, h.num_records);
            let (mut a_uid, mut b_uid) = (lo_uid, h.last_uid.saturating_add(1));
            loop {
                // UIDs ascend strictly with the record number, so the
                // record of `uid`, if any, lies at most `uid - a_uid - 1`
                // records above the first one above `a_uid`, and at most
                // `b_uid - uid - 1` records below the last one below
                // `b_uid`: without gaps in the UIDs that is one record, and
                // a mailbox's gaps (repacked expunges) are few, so the
                // search costs one or two reads instead of log2(n).
                let near_a = u64::from(a) + u64::from(uid.saturating_sub(a_uid));
                let near_b = u64::from(b).saturating_sub(u64::from(b_uid.saturating_sub(uid)));
                a = a.max(near_b.min(u64::from(u32::MAX)) as u32);
                b = b.min(near_a.min(u64::from(u32::MAX)) as u32);
                if a >= b {
                    break;
                }
                let mid = a + (b - a) / 2;
                let r = read(mid)?;
                if r.uid <= a_uid || r.uid >= b_uid {
                    return Err(Error::corrupt(
                        &self.index.path,
                        Header::record_offset(mid),
                        format!(
                            "record {mid}: UID {} out of order (between UIDs {a_uid} and {b_uid})",
                            r.uid
                        ),
                    ));
                }
                if r.uid < uid {
                    (a, a_uid) = (mid + 1, r.uid);
                } else if r.uid > uid {
                    (b, b_uid) = (mid, r.uid);
                } else {
                    out.push((mid, r.clone()));
                    (a, a_uid) = (mid + 1, r.uid);
                    break;
                }
            }
            (lo, lo_uid) = (a, a_uid);
            if lo >= h.num_records {
                break;
            }
        }
        Ok(out)
    }
}
