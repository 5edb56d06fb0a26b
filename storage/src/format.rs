//! Byte layout of the index file, version 4 (reads versions 1, 2 and 3). `docs/FORMAT.md` is the
//! normative description; this module is its only implementation.
//!
//! All integers are little-endian. The file starts with two header slots of
//! [`HEADER_SIZE`] bytes at [`SLOT_OFFSETS`]; a commit writes the slot chosen
//! by the new generation's parity, so a torn header write always leaves the
//! previous generation intact in the other slot. Records follow at
//! [`RECORDS_OFFSET`], [`RECORD_SIZE`] bytes each, each inside one 512-byte
//! sector.

/// The first 8 bytes of each header slot.
pub const MAGIC: [u8; 8] = *b"MSTOREIX";
/// The version every header is written with. Version 1 headers (no
/// append range, bytes 104..124 zero), version 2 headers (no
/// [`HF_UNORDERED`]) and version 3 headers (no `removed_modseq`, bytes
/// 112..124 zero) are still read.
pub const VERSION: u32 = 4;
const VERSION_1: u32 = 1;
const VERSION_2: u32 = 2;
const VERSION_3: u32 = 3;
/// Bytes of one header slot.
pub const HEADER_SIZE: usize = 128;
/// Byte offsets of the two header slots in `.index`.
pub const SLOT_OFFSETS: [u64; 2] = [0, 4096];
/// Byte offset of the first record in `.index`.
pub const RECORDS_OFFSET: u64 = 8192;
/// Bytes of one record.
pub const RECORD_SIZE: usize = 128;
/// Keyword bits per record.
pub const MAX_KEYWORDS: usize = 256;

/// Header flag: this index file was replaced (repack, reconstruct); reopen
/// the path to find the current one.
pub const HF_SUPERSEDED: u32 = 1 << 0;
/// Header flag: the mailbox was deleted.
pub const HF_DELETED: u32 = 1 << 1;
/// Header flag: this mailbox is the source of a MOVE whose journal
/// (`.move`) is not settled yet; lockers settle it first (`transfer.rs`).
pub const HF_MOVE_OUT: u32 = 1 << 2;
/// Header flag: this mailbox is the destination of a committed MOVE whose
/// source expunge may still be pending (journal `.move`).
pub const HF_MOVE_IN: u32 = 1 << 3;
/// Header flag (version 3): this append's commit made its messages and
/// its index pages durable with one flush, so after a power loss the
/// records may be on disk without the message bytes. A reader trusts the
/// slot only once every appended message of at most
/// [`UNORDERED_MAX_SIZE`] bytes is found with its size and CRC32
/// (PROTOCOL.md §3); larger ones were flushed before the commit began.
pub const HF_UNORDERED: u32 = 1 << 4;
const HF_KNOWN: u32 = HF_SUPERSEDED | HF_DELETED | HF_MOVE_OUT | HF_MOVE_IN | HF_UNORDERED;

/// Hard limit on `num_records`: the most records one index file may
/// count (an index of 8 GiB). A header counting more is corrupt; a writer
/// refuses to append past it ([`crate::Error::MailboxFull`]). Readers also
/// check that the records a header counts lie inside the file
/// (`IndexFile::check_in_use`), so no count read from disk ever sizes an
/// allocation, a loop or a write beyond what the file holds.
pub const MAX_RECORDS: u32 = 1 << 26;

/// Hard limit on a record's `size`: a larger message is refused when it
/// is staged ([`crate::Error::TooLarge`]) and a record claiming more is
/// corrupt. With [`MAX_RECORDS`] it keeps every sum of sizes (the header's
/// `total_bytes`, quota) below [`MAX_COUNTER`].
pub const MAX_MESSAGE_SIZE: u64 = 1 << 37;

/// `generation`, `highestmodseq` and `total_bytes` stay below this (RFC
/// 7162 MODSEQs are 63-bit): a header at or above it cannot come from a
/// writer (2^63 commits), is corrupt, and is refused before any writer
/// adds to it.
pub const MAX_COUNTER: u64 = 1 << 63;

/// Messages up to this size may join an unordered append; a larger one is
/// flushed before its commit, so a reader never reads it to check it.
pub const UNORDERED_MAX_SIZE: u64 = 256 * 1024;

/// IMAP system flags and the internal expunged mark, as stored in a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flags(pub u32);

impl Flags {
    /// IMAP `\\Seen`.
    pub const SEEN: Flags = Flags(1 << 0);
    /// IMAP `\\Answered`.
    pub const ANSWERED: Flags = Flags(1 << 1);
    /// IMAP `\\Flagged`.
    pub const FLAGGED: Flags = Flags(1 << 2);
    /// IMAP `\\Deleted` (EXPUNGE removes these messages).
    pub const DELETED: Flags = Flags(1 << 3);
    /// IMAP `\\Draft`.
    pub const DRAFT: Flags = Flags(1 << 4);
    /// Internal: the record is expunged and waits for repack.
    pub const EXPUNGED: Flags = Flags(1 << 31);
    /// The bits a client may set with STORE.
    pub const SYSTEM: Flags = Flags(0x1f);
    const KNOWN: u32 = Self::SYSTEM.0 | Self::EXPUNGED.0;

    /// No flag set.
    pub const fn empty() -> Flags {
        Flags(0)
    }
    /// Whether every flag of `other` is set here.
    ///
    /// ```
    /// use mailstore::Flags;
    /// let f = Flags::SEEN.union(Flags::FLAGGED);
    /// assert!(f.contains(Flags::SEEN));
    /// assert!(!f.contains(Flags::SEEN.union(Flags::DELETED)));
    /// assert_eq!(f.minus(Flags::SEEN), Flags::FLAGGED);
    /// assert_eq!(f.names(), ["\\Seen", "\\Flagged"]);
    /// ```
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
    /// The flags set in either.
    pub fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
    /// These flags without those of `other`.
    pub fn minus(self, other: Flags) -> Flags {
        Flags(self.0 & !other.0)
    }
    /// The flags set in both.
    pub fn intersect(self, other: Flags) -> Flags {
        Flags(self.0 & other.0)
    }
    /// Whether the expunged mark is set.
    pub fn is_expunged(self) -> bool {
        self.contains(Flags::EXPUNGED)
    }
    /// IMAP names of the system flags set here, in a fixed order.
    pub fn names(self) -> Vec<&'static str> {
        [
            (Flags::SEEN, "\\Seen"),
            (Flags::ANSWERED, "\\Answered"),
            (Flags::FLAGGED, "\\Flagged"),
            (Flags::DELETED, "\\Deleted"),
            (Flags::DRAFT, "\\Draft"),
        ]
        .into_iter()
        .filter(|(f, _)| self.contains(*f))
        .map(|(_, n)| n)
        .collect()
    }
    /// Parses one IMAP system flag name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Flags> {
        Some(match name.to_ascii_lowercase().as_str() {
            "\\seen" => Flags::SEEN,
            "\\answered" => Flags::ANSWERED,
            "\\flagged" => Flags::FLAGGED,
            "\\deleted" => Flags::DELETED,
            "\\draft" => Flags::DRAFT,
            _ => return None,
        })
    }
}

/// A set of keyword indexes (into the mailbox's keyword name table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Keywords(pub [u8; MAX_KEYWORDS / 8]);

impl Keywords {
    /// Whether keyword number `i` is set.
    pub fn contains(&self, i: usize) -> bool {
        i < MAX_KEYWORDS && self.0[i / 8] & (1 << (i % 8)) != 0
    }
    /// Sets keyword number `i` (ignored at or above [`MAX_KEYWORDS`]).
    pub fn insert(&mut self, i: usize) {
        if i < MAX_KEYWORDS {
            self.0[i / 8] |= 1 << (i % 8);
        }
    }
    /// Clears keyword number `i`.
    pub fn remove(&mut self, i: usize) {
        if i < MAX_KEYWORDS {
            self.0[i / 8] &= !(1 << (i % 8));
        }
    }
    /// Whether no keyword is set.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }
    /// The numbers of the keywords set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        // Byte by byte, bit by bit within the set bits only: most records
        // have no keyword, and this runs per message in FETCH and SEARCH.
        self.0
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .flat_map(|(at, &b)| {
                let mut bits = b;
                std::iter::from_fn(move || {
                    (bits != 0).then(|| {
                        let i = bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        at * 8 + i
                    })
                })
            })
    }
    /// The keywords set in either.
    pub fn union(&self, other: &Keywords) -> Keywords {
        let mut k = *self;
        for (a, b) in k.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
        k
    }
    /// These keywords without those of `other`.
    pub fn minus(&self, other: &Keywords) -> Keywords {
        let mut k = *self;
        for (a, b) in k.0.iter_mut().zip(other.0.iter()) {
            *a &= !b;
        }
        k
    }
}

/// The index header, one generation of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Header flags (`HF_*`: superseded, deleted, pending move...).
    pub flags: u32,
    /// Bumped by every commit, last: what a reader compares.
    pub generation: u64,
    /// Records in the file, live and expunged.
    pub num_records: u32,
    /// Live (not expunged) records.
    pub exists: u32,
    /// The highest UID handed out (UIDNEXT is one above).
    pub last_uid: u32,
    /// IMAP UIDVALIDITY of the mailbox.
    pub uidvalidity: u32,
    /// RFC 7162 HIGHESTMODSEQ: the MODSEQ of the last commit.
    pub highestmodseq: u64,
    /// Sum of `size` over live records (for quota).
    pub total_bytes: u64,
    /// Live records with `\\Seen`.
    pub seen: u32,
    /// Live records with `\\Deleted`.
    pub deleted: u32,
    /// Live records with `\\Flagged`.
    pub flagged: u32,
    /// Bumped whenever the keyword name table (`.meta`) changes.
    pub meta_generation: u32,
    /// Unix seconds when the mailbox was created.
    pub created: i64,
    /// Unix seconds of the last append.
    pub last_append: i64,
    /// MODSEQ of the last commit that rewrote records in place (flag
    /// change, expunge). A reader whose last look was at or after it knows
    /// only appends happened since, and reads just the new records.
    pub inplace_modseq: u64,
    /// First record this commit appended: the commit appended records
    /// `append_from..num_records` (none when equal). With `append_crc`
    /// it lets a reader tell a commit whose records never reached the disk
    /// from a complete one (see `IndexFile::read_header_detail`).
    pub append_from: u32,
    /// CRC32 of the bytes of records `append_from..num_records` as this
    /// commit wrote them; 0 when the range is empty.
    pub append_crc: u32,
    /// Version 4: the highest MODSEQ of any record this mailbox's index
    /// no longer holds (dropped by a repack, or possibly lost to a
    /// reconstruct); 0 when none ever was. Expunged records carry the
    /// MODSEQ of their expunge, so a QRESYNC client whose MODSEQ is at or
    /// above this one learns exactly which UIDs vanished from the records
    /// still marked expunged; one below it gets every UID of its range
    /// that no longer exists (RFC 7162 3.2.5.2). Read from an older
    /// header as 0 when every UID ever assigned still has a record
    /// (`num_records == last_uid`: nothing was ever removed), otherwise
    /// as `highestmodseq` (unknown: assume anything may have been).
    pub removed_modseq: u64,
}

/// One message's entry in the index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    /// The message's UID.
    pub uid: u32,
    /// System flags and the expunged mark.
    pub flags: Flags,
    /// Unix seconds: when the store received the message (IMAP INTERNALDATE).
    pub internal_date: i64,
    /// Unix seconds from the Date: header, 0 if absent or unparsable.
    pub sent_date: i64,
    /// Stored bytes, CRLF line endings: IMAP RFC822.SIZE.
    pub size: u64,
    /// Bytes of the header block including the blank line.
    pub header_size: u32,
    /// CRC32 of the stored message file.
    pub message_crc: u32,
    /// RFC 7162 MODSEQ of the last change to this record.
    pub modseq: u64,
    /// Keyword numbers, named by the mailbox's `.meta` table.
    pub keywords: Keywords,
    /// Unix seconds of the last change to this record.
    pub last_updated: i64,
    /// INTERNALDATE's zone, in minutes east of UTC (`+0200` is 120):
    /// the zone an IMAP APPEND gave, shown again by FETCH and used for
    /// SEARCH BEFORE/ON/SINCE (RFC 3501 6.4.4). 0 (UTC) for everything
    /// else; at most `MAX_ZONE_MINUTES` either way.
    pub internal_zone: i16,
}

/// The header's counters as counted from every record of an index, one
/// record at a time ([`Header::recount`] without a vector of the records:
/// a writer that must recount a mailbox of a million messages streams
/// them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    num_records: u32,
    exists: u32,
    seen: u32,
    /// Live records flagged `\Deleted`.
    pub(crate) deleted: u32,
    flagged: u32,
    total_bytes: u64,
    /// The highest MODSEQ of any record.
    top_modseq: u64,
}

impl Counts {
    /// Counts the next record of the index.
    pub(crate) fn add(&mut self, r: &Record) {
        self.num_records += 1;
        self.top_modseq = self.top_modseq.max(r.modseq);
        if r.is_expunged() {
            return;
        }
        self.exists += 1;
        self.seen += u32::from(r.flags.contains(Flags::SEEN));
        self.deleted += u32::from(r.flags.contains(Flags::DELETED));
        self.flagged += u32::from(r.flags.contains(Flags::FLAGGED));
        self.total_bytes += r.size;
    }

    /// Whether `h` counts exactly these records.
    pub(crate) fn match_header(&self, h: &Header) -> bool {
        let mut same = h.clone();
        self.set_into(&mut same);
        same == *h
    }

    /// Sets `h`'s counters to these; `highestmodseq` is raised to the
    /// newest record's.
    pub(crate) fn set_into(&self, h: &mut Header) {
        h.num_records = self.num_records;
        h.exists = self.exists;
        h.seen = self.seen;
        h.deleted = self.deleted;
        h.flagged = self.flagged;
        h.total_bytes = self.total_bytes;
        h.highestmodseq = h.highestmodseq.max(self.top_modseq);
    }
}

/// A zone offset of at most 23:59 either way (RFC 3501's `zone` has two
/// digits of hours, and no real zone reaches a day).
pub const MAX_ZONE_MINUTES: i16 = 24 * 60 - 1;

fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn i64_at(b: &[u8], off: usize) -> i64 {
    i64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}
fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

/// Why a header slot was rejected; `offset` is relative to the slot start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotError {
    /// Byte offset of the problem from the slot's start.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

const EMPTY_SLOT: &str = "header slot is empty";

impl SlotError {
    /// All zero: never written (the other slot of a new index).
    pub fn is_empty_slot(&self) -> bool {
        self.what == EMPTY_SLOT
    }

    fn new(offset: usize, what: impl Into<String>) -> Self {
        SlotError {
            offset,
            what: what.into(),
        }
    }
}

impl Header {
    /// The slot's bytes, with the current [`VERSION`] and the CRC.
    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        put(&mut b, 0, &MAGIC);
        put(&mut b, 8, &VERSION.to_le_bytes());
        put(&mut b, 12, &(RECORD_SIZE as u32).to_le_bytes());
        put(&mut b, 16, &(RECORDS_OFFSET as u32).to_le_bytes());
        put(&mut b, 20, &self.flags.to_le_bytes());
        put(&mut b, 24, &self.generation.to_le_bytes());
        put(&mut b, 32, &self.num_records.to_le_bytes());
        put(&mut b, 36, &self.exists.to_le_bytes());
        put(&mut b, 40, &self.last_uid.to_le_bytes());
        put(&mut b, 44, &self.uidvalidity.to_le_bytes());
        put(&mut b, 48, &self.highestmodseq.to_le_bytes());
        put(&mut b, 56, &self.total_bytes.to_le_bytes());
        put(&mut b, 64, &self.seen.to_le_bytes());
        put(&mut b, 68, &self.deleted.to_le_bytes());
        put(&mut b, 72, &self.flagged.to_le_bytes());
        put(&mut b, 76, &self.meta_generation.to_le_bytes());
        put(&mut b, 80, &self.created.to_le_bytes());
        put(&mut b, 88, &self.last_append.to_le_bytes());
        put(&mut b, 96, &self.inplace_modseq.to_le_bytes());
        put(&mut b, 104, &self.append_from.to_le_bytes());
        put(&mut b, 108, &self.append_crc.to_le_bytes());
        put(&mut b, 112, &self.removed_modseq.to_le_bytes());
        let c = crc(&b[..HEADER_SIZE - 4]);
        put(&mut b, HEADER_SIZE - 4, &c.to_le_bytes());
        b
    }

    /// Decodes and validates one slot. Every rejection names the offset of
    /// the offending field within the slot.
    pub fn decode(b: &[u8]) -> Result<Header, SlotError> {
        if b.len() < HEADER_SIZE {
            return Err(SlotError::new(b.len(), "header slot truncated"));
        }
        let b = &b[..HEADER_SIZE];
        if b.iter().all(|x| *x == 0) {
            return Err(SlotError::new(0, EMPTY_SLOT));
        }
        let stored = u32_at(b, HEADER_SIZE - 4);
        let computed = crc(&b[..HEADER_SIZE - 4]);
        if stored != computed {
            return Err(SlotError::new(
                HEADER_SIZE - 4,
                format!("header CRC mismatch (stored {stored:08x}, computed {computed:08x})"),
            ));
        }
        if b[0..8] != MAGIC {
            return Err(SlotError::new(0, "bad magic"));
        }
        let version = u32_at(b, 8);
        if ![VERSION, VERSION_3, VERSION_2, VERSION_1].contains(&version) {
            return Err(SlotError::new(
                8,
                format!("unsupported format version {version}"),
            ));
        }
        if u32_at(b, 12) as usize != RECORD_SIZE {
            return Err(SlotError::new(12, "unexpected record size"));
        }
        if u32_at(b, 16) as u64 != RECORDS_OFFSET {
            return Err(SlotError::new(16, "unexpected records offset"));
        }
        let reserved_from = match version {
            VERSION_1 => 104,
            VERSION_2 | VERSION_3 => 112,
            _ => 120,
        };
        if b[reserved_from..HEADER_SIZE - 4].iter().any(|x| *x != 0) {
            return Err(SlotError::new(reserved_from, "reserved bytes are not zero"));
        }
        let num_records = u32_at(b, 32);
        let (append_from, append_crc) = if version == VERSION_1 {
            (num_records, 0)
        } else {
            (u32_at(b, 104), u32_at(b, 108))
        };
        let highestmodseq = u64_at(b, 48);
        let removed_modseq = if version == VERSION {
            u64_at(b, 112)
        } else if num_records == u32_at(b, 40) {
            // Every UID ever assigned still has its record.
            0
        } else {
            // Not recorded before version 4: assume anything was removed.
            highestmodseq
        };
        let h = Header {
            flags: u32_at(b, 20),
            generation: u64_at(b, 24),
            num_records,
            exists: u32_at(b, 36),
            last_uid: u32_at(b, 40),
            uidvalidity: u32_at(b, 44),
            highestmodseq,
            total_bytes: u64_at(b, 56),
            seen: u32_at(b, 64),
            deleted: u32_at(b, 68),
            flagged: u32_at(b, 72),
            meta_generation: u32_at(b, 76),
            created: i64_at(b, 80),
            last_append: i64_at(b, 88),
            inplace_modseq: u64_at(b, 96),
            append_from,
            append_crc,
            removed_modseq,
        };
        if (version == VERSION_1 || version == VERSION_2) && h.flags & HF_UNORDERED != 0 {
            return Err(SlotError::new(20, "unknown header flags"));
        }
        h.check_values()?;
        Ok(h)
    }

    /// Invariants a single header must satisfy on its own.
    fn check_values(&self) -> Result<(), SlotError> {
        if self.flags & !HF_KNOWN != 0 {
            return Err(SlotError::new(20, "unknown header flags"));
        }
        if self.generation == 0 {
            return Err(SlotError::new(24, "generation is zero"));
        }
        if self.exists > self.num_records {
            return Err(SlotError::new(36, "exists is larger than num_records"));
        }
        if self.num_records > self.last_uid {
            return Err(SlotError::new(32, "more records than UIDs ever assigned"));
        }
        if self.inplace_modseq > self.highestmodseq {
            return Err(SlotError::new(96, "inplace_modseq is above highestmodseq"));
        }
        if self.removed_modseq > self.highestmodseq {
            return Err(SlotError::new(112, "removed_modseq is above highestmodseq"));
        }
        if self.uidvalidity == 0 {
            return Err(SlotError::new(44, "uidvalidity is zero"));
        }
        if self.append_from > self.num_records {
            return Err(SlotError::new(104, "append_from is above num_records"));
        }
        if self.flags & HF_UNORDERED != 0 && self.append_from == self.num_records {
            return Err(SlotError::new(
                20,
                "unordered flag set for an empty append range",
            ));
        }
        if self.append_from == self.num_records && self.append_crc != 0 {
            return Err(SlotError::new(
                108,
                "append_crc set for an empty append range",
            ));
        }
        for (off, n) in [(64, self.seen), (68, self.deleted), (72, self.flagged)] {
            if n > self.exists {
                return Err(SlotError::new(off, "flag count is larger than exists"));
            }
        }
        Ok(())
    }

    /// A repack replaced this index file with a new one.
    pub fn is_superseded(&self) -> bool {
        self.flags & HF_SUPERSEDED != 0
    }
    /// The mailbox is being deleted.
    pub fn is_deleted(&self) -> bool {
        self.flags & HF_DELETED != 0
    }
    /// A MOVE journal involving this mailbox is not settled yet.
    pub fn has_pending_move(&self) -> bool {
        self.flags & (HF_MOVE_OUT | HF_MOVE_IN) != 0
    }
    /// The slot this generation is written to.
    pub fn slot(&self) -> usize {
        (self.generation % 2) as usize
    }
    /// Counts a newly appended live record: exists, flag counts, bytes.
    pub fn count_appended(&mut self, r: &Record) {
        self.exists += 1;
        for (f, n) in [
            (Flags::SEEN, &mut self.seen),
            (Flags::DELETED, &mut self.deleted),
            (Flags::FLAGGED, &mut self.flagged),
        ] {
            if r.flags.contains(f) {
                *n += 1;
            }
        }
        self.total_bytes += r.size;
    }

    /// Recomputes every counter from all records of the index. Writers
    /// that rewrite records in place use this rather than deltas: a writer
    /// killed between its records and its header leaves records the
    /// header does not count, and a delta on top would drift or underflow
    /// (an underflowed count makes the slot invalid). `highestmodseq` is
    /// raised to the newest record's.
    pub fn recount(&mut self, records: &[Record]) {
        let mut c = Counts::default();
        records.iter().for_each(|r| c.add(r));
        c.set_into(self);
    }

    /// Updates the counters for one record rewritten in place from
    /// `before` to `after` (same slot): what [`Self::recount`] would give
    /// when the header counted `before`. Counts never go below zero.
    pub fn account(&mut self, before: &Record, after: &Record) {
        for (r, add) in [(before, false), (after, true)] {
            if r.is_expunged() {
                continue;
            }
            let step = |v: &mut u32, on: bool| {
                if on {
                    *v = if add {
                        v.saturating_add(1)
                    } else {
                        v.saturating_sub(1)
                    };
                }
            };
            step(&mut self.exists, true);
            step(&mut self.seen, r.flags.contains(Flags::SEEN));
            step(&mut self.deleted, r.flags.contains(Flags::DELETED));
            step(&mut self.flagged, r.flags.contains(Flags::FLAGGED));
            self.total_bytes = if add {
                self.total_bytes.saturating_add(r.size)
            } else {
                self.total_bytes.saturating_sub(r.size)
            };
        }
        self.highestmodseq = self.highestmodseq.max(after.modseq);
    }

    /// The same header with no append range: what every commit that does
    /// not append writes (in-place changes, create, repack, recovery).
    pub fn without_append(&self) -> Header {
        Header {
            append_from: self.num_records,
            append_crc: 0,
            flags: self.flags & !HF_UNORDERED,
            ..self.clone()
        }
    }

    /// This slot's append was committed with one flush (see
    /// [`HF_UNORDERED`]).
    pub fn is_unordered(&self) -> bool {
        self.flags & HF_UNORDERED != 0
    }

    /// The `append_crc` of encoded records: CRC32 over each record's
    /// bytes without its own CRC (a CRC over data followed by that data's
    /// CRC is the same constant for every record, so it would tell
    /// nothing apart).
    pub fn append_crc_of(encoded: &[u8]) -> u32 {
        let mut h = crc32fast::Hasher::new();
        for r in encoded.chunks(RECORD_SIZE) {
            h.update(&r[..r.len().min(RECORD_SIZE - 4)]);
        }
        h.finalize()
    }

    /// Byte offset of record `recno`.
    pub fn record_offset(recno: u32) -> u64 {
        RECORDS_OFFSET + recno as u64 * RECORD_SIZE as u64
    }
}

impl Record {
    /// The record's bytes, with the CRC.
    pub fn encode(&self) -> [u8; RECORD_SIZE] {
        let mut b = [0u8; RECORD_SIZE];
        put(&mut b, 0, &self.uid.to_le_bytes());
        put(&mut b, 4, &self.flags.0.to_le_bytes());
        put(&mut b, 8, &self.internal_date.to_le_bytes());
        put(&mut b, 16, &self.sent_date.to_le_bytes());
        put(&mut b, 24, &self.size.to_le_bytes());
        put(&mut b, 32, &self.header_size.to_le_bytes());
        put(&mut b, 36, &self.message_crc.to_le_bytes());
        put(&mut b, 40, &self.modseq.to_le_bytes());
        put(&mut b, 48, &self.keywords.0);
        put(&mut b, 80, &self.last_updated.to_le_bytes());
        put(&mut b, 88, &self.internal_zone.to_le_bytes());
        let c = crc(&b[..RECORD_SIZE - 4]);
        put(&mut b, RECORD_SIZE - 4, &c.to_le_bytes());
        b
    }

    /// Decodes and validates one record; the error offset is relative to
    /// the record start.
    pub fn decode(b: &[u8]) -> Result<Record, SlotError> {
        if b.len() < RECORD_SIZE {
            return Err(SlotError::new(b.len(), "record truncated"));
        }
        let b = &b[..RECORD_SIZE];
        let stored = u32_at(b, RECORD_SIZE - 4);
        let computed = crc(&b[..RECORD_SIZE - 4]);
        if stored != computed {
            return Err(SlotError::new(
                RECORD_SIZE - 4,
                format!("record CRC mismatch (stored {stored:08x}, computed {computed:08x})"),
            ));
        }
        if b[90..RECORD_SIZE - 4].iter().any(|x| *x != 0) {
            return Err(SlotError::new(90, "reserved bytes are not zero"));
        }
        let r = Record {
            uid: u32_at(b, 0),
            flags: Flags(u32_at(b, 4)),
            internal_date: i64_at(b, 8),
            sent_date: i64_at(b, 16),
            size: u64_at(b, 24),
            header_size: u32_at(b, 32),
            message_crc: u32_at(b, 36),
            modseq: u64_at(b, 40),
            keywords: Keywords(b[48..80].try_into().expect("32 bytes")),
            last_updated: i64_at(b, 80),
            internal_zone: i16::from_le_bytes([b[88], b[89]]),
        };
        if r.internal_zone.unsigned_abs() > MAX_ZONE_MINUTES as u16 {
            return Err(SlotError::new(88, "INTERNALDATE zone beyond a day"));
        }
        if r.uid == 0 {
            return Err(SlotError::new(0, "UID is zero"));
        }
        if r.flags.0 & !Flags::KNOWN != 0 {
            return Err(SlotError::new(4, "unknown flag bits"));
        }
        if r.size > MAX_MESSAGE_SIZE {
            return Err(SlotError::new(24, "message size above the limit"));
        }
        if r.header_size as u64 > r.size {
            return Err(SlotError::new(32, "header size larger than message size"));
        }
        if r.modseq == 0 {
            return Err(SlotError::new(40, "modseq is zero"));
        }
        Ok(r)
    }

    /// Whether the message is expunged (waiting for a repack).
    pub fn is_expunged(&self) -> bool {
        self.flags.is_expunged()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_iterate_ascending_over_every_bit() {
        let all: Vec<usize> = (0..MAX_KEYWORDS).collect();
        for set in [
            vec![],
            vec![0],
            vec![7, 8],
            vec![1, 5, 63, 64, 200, 255],
            all.clone(),
        ] {
            let mut k = Keywords::default();
            for &i in &set {
                k.insert(i);
            }
            assert_eq!(k.iter().collect::<Vec<_>>(), set);
            assert!(set.iter().all(|&i| k.contains(i)));
        }
    }

    fn sample_header() -> Header {
        Header {
            flags: 0,
            generation: 7,
            num_records: 3,
            exists: 2,
            last_uid: 9,
            uidvalidity: 1234,
            highestmodseq: 11,
            total_bytes: 4096,
            seen: 1,
            deleted: 0,
            flagged: 2,
            meta_generation: 1,
            created: 1_700_000_000,
            last_append: 1_700_000_100,
            inplace_modseq: 9,
            append_from: 2,
            append_crc: 0x1234_5678,
            removed_modseq: 8,
        }
    }

    /// Re-encodes `h` as a version 3 slot would have been written: no
    /// `removed_modseq` (bytes 112..120 zero).
    fn as_version_3(h: &Header) -> [u8; HEADER_SIZE] {
        let mut b = h.encode();
        put(&mut b, 8, &VERSION_3.to_le_bytes());
        put(&mut b, 112, &0u64.to_le_bytes());
        let c = crc(&b[..HEADER_SIZE - 4]);
        put(&mut b, HEADER_SIZE - 4, &c.to_le_bytes());
        b
    }

    /// A version 3 index still opens. It never recorded what a repack
    /// removed: with UIDs missing from its records, every MODSEQ up to
    /// the highest must be assumed removed (RFC 7162 3.2.5.2 fallback);
    /// with a record for every UID ever assigned, nothing was.
    #[test]
    fn version_3_header_reads_with_a_safe_removed_modseq() {
        let h = sample_header();
        let read = Header::decode(&as_version_3(&h)).unwrap();
        assert_eq!(read.removed_modseq, h.highestmodseq);
        assert_eq!(read.num_records, h.num_records);
        let mut full = sample_header();
        full.last_uid = full.num_records;
        assert_eq!(
            Header::decode(&as_version_3(&full)).unwrap().removed_modseq,
            0
        );
    }

    #[test]
    fn removed_modseq_above_highestmodseq_is_rejected() {
        let mut h = sample_header();
        h.removed_modseq = h.highestmodseq + 1;
        assert_eq!(Header::decode(&h.encode()).unwrap_err().offset, 112);
    }

    #[test]
    fn header_round_trips() {
        let h = sample_header();
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.slot(), 1);
    }

    #[test]
    fn every_header_bit_flip_is_detected() {
        let b = sample_header().encode();
        for bit in 0..HEADER_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&c).is_err(), "bit {bit} flip not detected");
        }
    }

    #[test]
    fn impossible_header_values_are_rejected_with_offsets() {
        let mut h = sample_header();
        h.exists = 5;
        assert_eq!(Header::decode(&h.encode()).unwrap_err().offset, 36);
        let mut h = sample_header();
        h.num_records = 10;
        assert_eq!(Header::decode(&h.encode()).unwrap_err().offset, 32);
        let mut h = sample_header();
        h.flagged = 3;
        assert_eq!(Header::decode(&h.encode()).unwrap_err().offset, 72);
    }

    #[test]
    fn record_round_trips_and_detects_flips() {
        let mut kw = Keywords::default();
        kw.insert(0);
        kw.insert(200);
        let r = Record {
            uid: 42,
            flags: Flags::SEEN.union(Flags::FLAGGED),
            internal_date: 1,
            sent_date: 2,
            size: 300,
            header_size: 100,
            message_crc: 0xdead_beef,
            modseq: 5,
            keywords: kw,
            last_updated: 3,
            internal_zone: -330,
        };
        let b = r.encode();
        assert_eq!(Record::decode(&b).unwrap(), r);
        for bit in 0..RECORD_SIZE * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(Record::decode(&c).is_err(), "bit {bit} flip not detected");
        }
    }

    /// FORMAT.md §2, Record: a zone beyond a day is damage, reported at
    /// its offset, not shown as a date.
    #[test]
    fn record_zone_is_bounded() {
        let r = Record {
            uid: 1,
            modseq: 1,
            internal_zone: MAX_ZONE_MINUTES,
            ..Record::default()
        };
        assert_eq!(Record::decode(&r.encode()).unwrap(), r);
        let bad = Record {
            internal_zone: MAX_ZONE_MINUTES + 1,
            ..r
        };
        assert_eq!(Record::decode(&bad.encode()).unwrap_err().offset, 88);
    }

    #[test]
    fn zeroed_slot_is_rejected() {
        assert!(Header::decode(&[0u8; HEADER_SIZE]).is_err());
    }

    #[test]
    fn flag_names_round_trip() {
        for f in [
            Flags::SEEN,
            Flags::ANSWERED,
            Flags::FLAGGED,
            Flags::DELETED,
            Flags::DRAFT,
        ] {
            assert_eq!(Flags::from_name(f.names()[0]), Some(f));
        }
    }
}
