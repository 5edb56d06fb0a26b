//! The index file: header slot selection, record reads and writes.
//! Callers hold the appropriate lock; this module only moves bytes.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::format::{
    HEADER_SIZE, Header, MAX_COUNTER, MAX_RECORDS, RECORD_SIZE, RECORDS_OFFSET, Record,
    SLOT_OFFSETS,
};
use crate::fsutil::{self, Dir};
pub use crate::layout::INDEX_NAME;

/// A byte in the zero padding between the header slots: non-zero while a
/// writer holds the exclusive lock. Seen under any lock, it means that
/// writer died mid-change, and the locker repairs the mailbox first. It
/// lies inside the header read, so checking it costs nothing.
pub const WRITER_MARK_OFFSET: u64 = 2048;

/// Where the count stamp lies, in the zero padding after the writer mark
/// (`boot::count_stamp`, FORMAT.md §2): the boot in which a writer last
/// recounted the header from every record. Not CRC'd with the header,
/// never fsynced on its own, ignored by readers that do not know it.
pub const COUNT_STAMP_OFFSET: u64 = 2056;

/// How much is made durable at each commit. `Relaxed` skips every fsync
/// and is meant for tests and benchmarks only: a power loss may lose
/// messages that were reported delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every fsync of `docs/PROTOCOL.md`: a commit is durable when the
    /// call returns.
    #[default]
    Full,
    /// No fsync (tests and benchmarks).
    Relaxed,
}

#[derive(Clone, Debug)]
pub struct IndexFile {
    pub file: Arc<File>,
    pub path: PathBuf,
    /// Slots of in-place record writes since the last header write, which
    /// then stamps `inplace_modseq` and logs them in `.changes` (so no
    /// writer can forget to).
    inplace_dirty: Arc<Mutex<Vec<u32>>>,
    /// Newest generation whose append range this handle has checked (or
    /// written itself): the check runs once per commit, not per lock.
    checked_generation: Arc<AtomicU64>,
    /// File length known to be allocated and zero-filled (see
    /// [`Self::write_appended`]); 0 until first needed.
    allocated: Arc<AtomicU64>,
    /// See [`Self::growth_unsure`].
    growth_unsure: Arc<AtomicBool>,
    /// See [`Self::counted_this_boot`].
    counted: Arc<AtomicBool>,
    /// The longest length this handle has seen the file have (see
    /// [`Self::len_covers`]); 0 until first needed.
    len_seen: Arc<AtomicU64>,
    /// The mailbox directory, where the messages of an unordered append
    /// are checked (`unordered.rs`). `None` for a file being built by a
    /// repack or reconstruct, which never carries such a slot.
    messages: Option<Arc<Dir>>,
}

/// Appends grow the file in steps of this many bytes, written as zeros:
/// later appends then overwrite allocated blocks, so their fdatasync
/// writes the data pages only, not the inode (whose size would change).
pub const GROW_STEP: u64 = 64 * 1024;

/// Records read per `pread` by [`IndexFile::read_records`] (1 MiB).
pub const READ_CHUNK: usize = 8192;

/// Which slot a header was read from, and what the other slot held.
#[derive(Clone, Debug)]
pub struct HeaderRead {
    pub header: Header,
    pub slot: usize,
    /// The other slot's header, or why it was rejected.
    pub other: std::result::Result<Header, crate::format::SlotError>,
    /// The writer mark was set (see [`WRITER_MARK_OFFSET`]).
    pub writer_mark: bool,
    /// A newer slot was passed over because the records its commit
    /// appended are not on disk (a crash during that commit's fsync):
    /// absolute offset of the first bad record byte, and why.
    pub torn: Option<(u64, String)>,
    /// The header's commit does not match the disk in a way no power cut
    /// leaves (PROTOCOL.md §3, *torn or damaged*): absolute offset and
    /// why. The header is still the newest one; nobody may write on it
    /// or roll it back ([`Self::usable`] fails) until `idx-admin
    /// reconstruct`.
    pub damaged: Option<(u64, String)>,
    /// The newest slot was written during the current boot (`boot.rs`).
    pub this_boot: bool,
}

/// Whether the newest commit is on disk as written.
enum Completeness {
    Complete,
    /// Missing in a way a power cut during its flush leaves: that flush
    /// never returned, so the commit was never acknowledged.
    Torn(u64, String),
    /// Anything else: damage after the fact.
    Damaged(u64, String),
}

impl HeaderRead {
    /// The header, unless its commit is damaged: then a corruption error
    /// with the offset, for every locker (readers must not serve it as
    /// complete, writers must not build on it or roll it back).
    pub fn usable(&self, path: &std::path::Path) -> Result<&Header> {
        match &self.damaged {
            None => Ok(&self.header),
            Some((offset, why)) => Err(Error::corrupt(
                path,
                *offset,
                format!(
                    "the newest commit (generation {}) does not match the disk ({why}), \
                     which no interrupted commit leaves; refusing to use or undo it until \
                     `idx-admin reconstruct`",
                    self.header.generation
                ),
            )),
        }
    }

    /// The other slot holds bytes that are not a valid header: damage, not
    /// a crash state (a 128-byte slot inside one sector is never torn; see
    /// PROTOCOL.md). Absolute offset and reason.
    pub fn other_damage(&self) -> Option<(u64, String)> {
        match &self.other {
            Err(e) if !e.is_empty_slot() => Some((
                SLOT_OFFSETS[1 - self.slot] + e.offset as u64,
                e.what.clone(),
            )),
            _ => None,
        }
    }
}

impl IndexFile {
    pub fn new(file: File, path: PathBuf) -> IndexFile {
        IndexFile {
            file: Arc::new(file),
            path,
            inplace_dirty: Arc::new(Mutex::new(Vec::new())),
            checked_generation: Arc::new(AtomicU64::new(0)),
            allocated: Arc::new(AtomicU64::new(0)),
            growth_unsure: Arc::new(AtomicBool::new(false)),
            counted: Arc::new(AtomicBool::new(false)),
            len_seen: Arc::new(AtomicU64::new(0)),
            messages: None,
        }
    }

    /// Wraps an already shared descriptor (a file renamed into place).
    pub fn new_shared(file: Arc<File>, path: PathBuf) -> IndexFile {
        IndexFile {
            file,
            path,
            inplace_dirty: Arc::new(Mutex::new(Vec::new())),
            checked_generation: Arc::new(AtomicU64::new(0)),
            allocated: Arc::new(AtomicU64::new(0)),
            growth_unsure: Arc::new(AtomicBool::new(false)),
            counted: Arc::new(AtomicBool::new(false)),
            len_seen: Arc::new(AtomicU64::new(0)),
            messages: None,
        }
    }

    pub fn open(dir: &Dir) -> Result<IndexFile> {
        Self::open_named(dir, INDEX_NAME)
    }

    pub fn open_named(dir: &Dir, name: &str) -> Result<IndexFile> {
        let file = dir.open_file(fsutil::os(name.as_bytes()), OFlag::O_RDWR)?;
        Ok(
            IndexFile::new(file, dir.child_path(fsutil::os(name.as_bytes())))
                .with_messages(Arc::new(dir.try_clone()?)),
        )
    }

    /// [`Self::open`] for a caller that keeps `dir` shared anyway (a
    /// mailbox handle): no second descriptor for it.
    pub fn open_shared(dir: &Arc<Dir>) -> Result<IndexFile> {
        let file = dir.open_file(fsutil::os(INDEX_NAME.as_bytes()), OFlag::O_RDWR)?;
        Ok(
            IndexFile::new(file, dir.child_path(fsutil::os(INDEX_NAME.as_bytes())))
                .with_messages(dir.clone()),
        )
    }

    /// Opens read-only, for a look at the header only ([`Self::newest_header`]):
    /// no directory descriptor for the message files.
    pub fn open_bare(dir: &Dir) -> Result<IndexFile> {
        let file = dir.open_file(fsutil::os(INDEX_NAME.as_bytes()), OFlag::O_RDONLY)?;
        Ok(IndexFile::new(
            file,
            dir.child_path(fsutil::os(INDEX_NAME.as_bytes())),
        ))
    }

    /// The valid header slot with the higher generation, as read (one
    /// `pread`), without the checks that precede reading records: enough
    /// to see its flags (DELETED), never to size a read.
    pub fn newest_header(&self) -> Result<Header> {
        Ok(self.read_slots()?.header)
    }

    /// Opens read-only (for tools that must never write).
    pub fn open_read_only(dir: &Dir) -> Result<IndexFile> {
        let file = dir.open_file(fsutil::os(INDEX_NAME.as_bytes()), OFlag::O_RDONLY)?;
        Ok(
            IndexFile::new(file, dir.child_path(fsutil::os(INDEX_NAME.as_bytes())))
                .with_messages(Arc::new(dir.try_clone()?)),
        )
    }

    /// Checks unordered appends against the message files in `dir`.
    pub fn with_messages(mut self, dir: Arc<Dir>) -> IndexFile {
        self.messages = Some(dir);
        self
    }

    /// Writes a new index file holding `header` and `records` under `name`
    /// (exclusive create), durable when asked. Used for creation, repack
    /// and reconstruct; the caller renames or links it into place.
    ///
    /// When `header`'s counters are exactly those of `records` (as they
    /// are for an empty new mailbox, a repack and a reconstruct), the file
    /// carries this boot's count stamp ([`Self::counted_this_boot`]): its
    /// first in-place writer keeps the counters by delta instead of
    /// recounting every record, which after `idx-admin import` of a
    /// million messages cost that writer's STORE 60 ms.
    pub fn write_new(
        dir: &Dir,
        name: &str,
        header: &Header,
        records: &[Record],
        durability: Durability,
    ) -> Result<IndexFile> {
        let file = dir.open_file(
            fsutil::os(name.as_bytes()),
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL,
        )?;
        let idx = IndexFile::new(file, dir.child_path(fsutil::os(name.as_bytes())));
        let mut prefix = vec![0u8; RECORDS_OFFSET as usize];
        let slot = SLOT_OFFSETS[header.slot()] as usize;
        prefix[slot..slot + HEADER_SIZE].copy_from_slice(&header.without_append().encode());
        let mut counts = crate::format::Counts::default();
        records.iter().for_each(|r| counts.add(r));
        if counts.match_header(header) {
            let at = COUNT_STAMP_OFFSET as usize;
            prefix[at..at + crate::boot::COUNT_STAMP_SIZE]
                .copy_from_slice(&crate::boot::count_stamp());
        }
        fsutil::write_all_at(&idx.file, &prefix, 0, &idx.path)?;
        idx.write_records(0, records)?;
        if durability == Durability::Full {
            idx.sync()?;
        }
        Ok(idx)
    }

    /// Reads both header slots and returns the valid one with the higher
    /// generation. A slot whose generation has the wrong parity for its
    /// position is treated as invalid. A newest slot whose appended
    /// records did not reach the disk (see `append_range_intact`)
    /// is passed over for the older one: an append makes records and
    /// header durable with one fsync, so after a crash during it the disk
    /// may hold the header without the records. That commit was never
    /// acknowledged; the older generation is the committed state.
    pub fn read_header_detail(&self) -> Result<HeaderRead> {
        let mut read = self.read_slots()?;
        self.check_in_use(&read.header, read.slot)?;
        let h = &read.header;
        if h.append_from >= h.num_records
            || self.checked_generation.load(Ordering::Relaxed) == h.generation
        {
            return Ok(read);
        }
        if read.this_boot {
            // No power cut since this commit was written: every byte it
            // wrote before its header is in the page cache, so it is
            // complete, and whatever on disk differs from it is damage of
            // a message or record, reported where it is read.
            self.checked_generation
                .store(h.generation, Ordering::Relaxed);
            return Ok(read);
        }
        match self.append_complete(h)? {
            Completeness::Complete => {
                self.checked_generation
                    .store(h.generation, Ordering::Relaxed);
                Ok(read)
            }
            Completeness::Damaged(offset, why) => {
                read.damaged = Some((offset, why));
                Ok(read)
            }
            Completeness::Torn(offset, why) => match read.other {
                Ok(older) if older.generation < h.generation => {
                    tracing::warn!(
                        path = %self.path.display(),
                        generation = h.generation,
                        offset,
                        "newest commit is incomplete on disk ({why}); using generation {}",
                        older.generation
                    );
                    Ok(HeaderRead {
                        header: older,
                        slot: 1 - read.slot,
                        other: Ok(read.header),
                        writer_mark: read.writer_mark,
                        torn: Some((offset, why)),
                        damaged: None,
                        this_boot: false,
                    })
                }
                _ => Err(Error::corrupt(
                    &self.path,
                    offset,
                    format!(
                        "the records of the newest commit (generation {}) are damaged ({why}) and the other header slot is not usable",
                        h.generation
                    ),
                )),
            },
        }
    }

    /// [`Self::append_range_intact`], and for an unordered append also
    /// whether its messages are on disk (`unordered.rs`). `None` when the
    /// commit is complete; otherwise an absolute index offset (of the
    /// record whose message is missing) and why.
    fn append_complete(&self, h: &Header) -> Result<Completeness> {
        let buf = match self.append_range_intact(h)? {
            Ok(buf) => buf,
            Err(c) => return Ok(c),
        };
        let Some(dir) = self.messages.as_ref().filter(|_| h.is_unordered()) else {
            return Ok(Completeness::Complete);
        };
        let start = Header::record_offset(h.append_from);
        let records = buf
            .chunks_exact(RECORD_SIZE)
            .enumerate()
            .map(|(i, chunk)| {
                Record::decode(chunk).map_err(|e| {
                    Error::corrupt(
                        &self.path,
                        start + (i * RECORD_SIZE + e.offset) as u64,
                        e.what,
                    )
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(match crate::unordered::first_missing(dir, &records)? {
            None => Completeness::Complete,
            Some(m) => {
                let offset = Header::record_offset(h.append_from + m.index as u32);
                if m.torn {
                    Completeness::Torn(offset, m.why)
                } else {
                    Completeness::Damaged(offset, m.why)
                }
            }
        })
    }

    /// Whether the records `h` says its commit appended are on disk as
    /// written. Their bytes when they are; otherwise where and how they
    /// differ. Records a later in-place writer changed (MODSEQ above
    /// `h.highestmodseq`) no longer match the commit's CRC, but prove the
    /// commit complete: that writer only ran after the commit's fsync had
    /// returned. Under the sector-atomicity assumption (PROTOCOL.md §2) a
    /// record cut by a power loss is all old or all new: zeros (a growth)
    /// or a CRC-valid record of an older aborted commit. A non-zero record
    /// with a bad CRC is damage, not a torn commit.
    fn append_range_intact(
        &self,
        h: &Header,
    ) -> Result<std::result::Result<Vec<u8>, Completeness>> {
        let count = (h.num_records - h.append_from) as usize;
        let start = Header::record_offset(h.append_from);
        let mut buf = vec![0u8; self.readable(start, count * RECORD_SIZE)?];
        let n = fsutil::read_at_most(&self.file, &mut buf, start, &self.path)?;
        if n < count * RECORD_SIZE {
            return Ok(Err(Completeness::Torn(
                start + n as u64,
                format!(
                    "file ends inside record {}",
                    h.append_from as usize + n / RECORD_SIZE
                ),
            )));
        }
        if Header::append_crc_of(&buf) == h.append_crc {
            return Ok(Ok(buf));
        }
        let mut first_stale = None;
        let mut first_damaged = None;
        let mut rewritten = false;
        for (i, chunk) in buf.chunks_exact(RECORD_SIZE).enumerate() {
            match Record::decode(chunk) {
                Ok(r) if r.modseq > h.highestmodseq => rewritten = true,
                Ok(_) => {}
                Err(e) if chunk.iter().all(|b| *b == 0) => {
                    first_stale.get_or_insert((
                        i * RECORD_SIZE + e.offset,
                        format!("{} (the record is all zeros)", e.what),
                    ));
                }
                Err(e) => {
                    first_damaged.get_or_insert((i * RECORD_SIZE + e.offset, e.what));
                }
            }
        }
        if rewritten {
            return Ok(Ok(buf));
        }
        if let Some((rel, why)) = first_damaged {
            return Ok(Err(Completeness::Damaged(start + rel as u64, why)));
        }
        let (rel, why) = first_stale.unwrap_or((
            0,
            "appended records differ from what the commit wrote".to_string(),
        ));
        Ok(Err(Completeness::Torn(start + rel as u64, why)))
    }

    fn read_slots(&self) -> Result<HeaderRead> {
        // On the stack: every lock reads it (no allocation per header).
        let mut buf = [0u8; SLOT_OFFSETS[1] as usize + HEADER_SIZE + crate::boot::STAMP_SIZE];
        let n = fsutil::read_at_most(&self.file, &mut buf, 0, &self.path)?;
        let this_boot = |slot: usize| {
            let off = SLOT_OFFSETS[slot] as usize;
            let end = off + HEADER_SIZE + crate::boot::STAMP_SIZE;
            n >= end
                && crate::boot::written_this_boot(
                    &buf[off..off + HEADER_SIZE],
                    &buf[off + HEADER_SIZE..end],
                )
        };
        let decode = |slot: usize| {
            let off = SLOT_OFFSETS[slot] as usize;
            let end = (off + HEADER_SIZE).min(n);
            let bytes = if end > off { &buf[off..end] } else { &[][..] };
            Header::decode(bytes).and_then(|h| {
                if h.slot() == slot {
                    Ok(h)
                } else {
                    Err(crate::format::SlotError {
                        offset: 24,
                        what: format!("generation {} stored in the wrong slot", h.generation),
                    })
                }
            })
        };
        let (a, b) = (decode(0), decode(1));
        let cs = COUNT_STAMP_OFFSET as usize;
        let counted = n >= cs + crate::boot::COUNT_STAMP_SIZE
            && crate::boot::counted_this_boot(&buf[cs..cs + crate::boot::COUNT_STAMP_SIZE]);
        self.counted.store(counted, Ordering::Relaxed);
        let mark = WRITER_MARK_OFFSET as usize;
        let writer_mark = n > mark && buf[mark] != 0;
        match (a, b) {
            (Ok(a), Ok(b)) => {
                if a.generation > b.generation {
                    Ok(HeaderRead {
                        header: a,
                        slot: 0,
                        other: Ok(b),
                        writer_mark,
                        torn: None,
                        damaged: None,
                        this_boot: this_boot(0),
                    })
                } else {
                    Ok(HeaderRead {
                        header: b,
                        slot: 1,
                        other: Ok(a),
                        writer_mark,
                        torn: None,
                        damaged: None,
                        this_boot: this_boot(1),
                    })
                }
            }
            (Ok(a), Err(e)) => Ok(HeaderRead {
                header: a,
                slot: 0,
                other: Err(e),
                writer_mark,
                torn: None,
                damaged: None,
                this_boot: this_boot(0),
            }),
            (Err(e), Ok(b)) => Ok(HeaderRead {
                header: b,
                slot: 1,
                other: Err(e),
                writer_mark,
                torn: None,
                damaged: None,
                this_boot: this_boot(1),
            }),
            (Err(ea), Err(eb)) => Err(Error::corrupt(
                &self.path,
                SLOT_OFFSETS[1] + eb.offset as u64,
                format!(
                    "no valid header slot (slot 0 at offset {}: {}; slot 1: {})",
                    ea.offset, ea.what, eb.what
                ),
            )),
        }
    }

    /// The file's length in bytes.
    pub fn file_len(&self) -> Result<u64> {
        let len = self
            .file
            .metadata()
            .map_err(|e| Error::io("stat", &self.path, e))?
            .len();
        self.len_seen.fetch_max(len, Ordering::Relaxed);
        if len.is_multiple_of(GROW_STEP) {
            // What `growth_from` concludes from such a length, whenever it
            // is seen under a lock: the append that follows a lock's
            // header check then needs no second `fstat`. (A growth whose
            // sync may be missing leaves the writer mark, and every writer
            // repairs that, syncing the index, before it appends.)
            self.allocated.fetch_max(len, Ordering::Relaxed);
        }
        Ok(len)
    }

    /// Whether the file is at least `end` bytes long: `Ok(None)` when it
    /// is, else `Ok(Some(length))`. Answered from the longest length this
    /// handle has seen when that suffices (an index file never shrinks:
    /// it is only ever grown, and replaced whole by rename), so a caller
    /// that checks every lock pays one `fstat` only when the file has
    /// grown past what it saw.
    fn len_covers(&self, end: u64) -> Result<Option<u64>> {
        if self.len_seen.load(Ordering::Relaxed) >= end {
            return Ok(None);
        }
        let len = self.file_len()?;
        Ok((len < end).then_some(len))
    }

    /// How many of `want` bytes from `start` the file holds: a buffer for
    /// a read sized by a count from the header never outgrows the file.
    fn readable(&self, start: u64, want: usize) -> Result<usize> {
        Ok(match self.len_covers(start + want as u64)? {
            None => want,
            Some(len) => len.saturating_sub(start).min(want as u64) as usize,
        })
    }

    /// Checks a header slot before it is taken into use (the newest slot
    /// at every header read, before its append range is read; the slot a
    /// locker uses; `verify`):
    /// its counters are within the hard limits of docs/FORMAT.md and the
    /// records it counts lie inside the file. Nothing read from disk then
    /// sizes an allocation, a loop or a write beyond what the file holds,
    /// and a writer refuses before it sets its writer mark or grows the
    /// file. The error is a corruption error naming the absolute offset of
    /// the offending header field. Costs no system call while the file is
    /// as long as this handle last saw it.
    pub fn check_in_use(&self, h: &Header, slot: usize) -> Result<()> {
        let base = SLOT_OFFSETS[slot];
        let corrupt = |off: u64, what: String| Err(Error::corrupt(&self.path, base + off, what));
        if h.num_records > MAX_RECORDS {
            return corrupt(
                32,
                format!(
                    "header slot {slot} counts {} records, above the limit of {MAX_RECORDS}",
                    h.num_records
                ),
            );
        }
        for (off, name, v) in [
            (24, "generation", h.generation),
            (48, "highestmodseq", h.highestmodseq),
            (56, "total_bytes", h.total_bytes),
        ] {
            if v >= MAX_COUNTER {
                return corrupt(
                    off,
                    format!("header slot {slot} has {name} {v}, beyond the 63-bit range"),
                );
            }
        }
        let end = Header::record_offset(h.num_records);
        if let Some(len) = self.len_covers(end)? {
            return corrupt(
                32,
                format!(
                    "header slot {slot} counts {} records, which end at byte {end}, but the file is {len} bytes long (it holds {} records)",
                    h.num_records,
                    len.saturating_sub(RECORDS_OFFSET) / RECORD_SIZE as u64
                ),
            );
        }
        Ok(())
    }

    /// The current header ([`HeaderRead::usable`]).
    pub fn read_header(&self) -> Result<Header> {
        let read = self.read_header_detail()?;
        Ok(read.usable(&self.path)?.clone())
    }

    /// Reads records `start..end` and validates each one's CRC and fields.
    /// Reads at most [`READ_CHUNK`] records at a time, and the records
    /// decoded so far are all that is held: a count that runs past the end
    /// of the file (or into zeros) fails at the first bad record, never
    /// sizes a buffer by itself.
    pub fn read_records(&self, start: u32, end: u32) -> Result<Vec<Record>> {
        if end <= start {
            return Ok(Vec::new());
        }
        // Sized by what the file holds, never by the count alone: one
        // allocation instead of a doubling series for a big index.
        let count = (end - start) as usize;
        let held = self.readable(Header::record_offset(start), count * RECORD_SIZE)? / RECORD_SIZE;
        let mut out = Vec::with_capacity(held.max(count.min(READ_CHUNK)));
        self.each_record(start, end, |r| {
            out.push(r);
            Ok(())
        })?;
        Ok(out)
    }

    /// [`Self::read_records`] handing each record to `f` in order instead
    /// of collecting them: at most [`READ_CHUNK`] records' bytes are held.
    pub fn each_record(
        &self,
        start: u32,
        end: u32,
        mut f: impl FnMut(Record) -> Result<()>,
    ) -> Result<()> {
        if end <= start {
            return Ok(());
        }
        let count = (end - start) as usize;
        let mut buf = vec![0u8; count.min(READ_CHUNK) * RECORD_SIZE];
        let mut recno = start;
        while recno < end {
            let batch = ((end - recno) as usize).min(READ_CHUNK);
            let buf = &mut buf[..batch * RECORD_SIZE];
            let off = Header::record_offset(recno);
            let n = fsutil::read_at_most(&self.file, buf, off, &self.path)?;
            if n < buf.len() {
                return Err(Error::corrupt(
                    &self.path,
                    off + n as u64,
                    format!(
                        "index truncated: the header counts {end} records, the file ends inside record {}",
                        recno as usize + n / RECORD_SIZE
                    ),
                ));
            }
            for chunk in buf.chunks_exact(RECORD_SIZE) {
                let r = Record::decode(chunk).map_err(|e| {
                    Error::corrupt(
                        &self.path,
                        Header::record_offset(recno) + e.offset as u64,
                        format!("record {recno}: {}", e.what),
                    )
                })?;
                f(r)?;
                recno += 1;
            }
        }
        Ok(())
    }

    pub fn write_records(&self, start: u32, records: &[Record]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        fsutil::write_all_at(
            &self.file,
            &encode_records(records),
            Header::record_offset(start),
            &self.path,
        )
    }

    /// Rewrites records in place (record number, new contents), each run
    /// of consecutive record numbers with one `pwrite` of at most
    /// [`MAX_RUN_BYTES`] instead of one per record (a STORE of every
    /// message of 100,000 made 100,000 system calls). Every record still
    /// lies whole inside one sector and one page, so a crash or a power
    /// loss leaves each one old or new, as with single writes
    /// (PROTOCOL.md §4); which of them reach the file before a crash is
    /// not ordered, as it was not before. A record number given twice is
    /// written once, with its first contents.
    pub fn write_records_at<'a>(
        &self,
        writes: impl IntoIterator<Item = (u32, &'a Record)>,
    ) -> Result<()> {
        let mut writes: Vec<(u32, &Record)> = writes.into_iter().collect();
        if writes.is_empty() {
            return Ok(());
        }
        writes.sort_by_key(|w| w.0);
        writes.dedup_by_key(|w| w.0);
        self.inplace_dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(writes.iter().map(|w| w.0));
        let per_run = MAX_RUN_BYTES / RECORD_SIZE;
        let mut buf = Vec::with_capacity(writes.len().min(per_run) * RECORD_SIZE);
        let mut i = 0;
        while i < writes.len() {
            let start = writes[i].0;
            buf.clear();
            while i < writes.len()
                && writes[i].0 as u64 == start as u64 + (buf.len() / RECORD_SIZE) as u64
                && buf.len() < MAX_RUN_BYTES
            {
                buf.extend_from_slice(&writes[i].1.encode());
                i += 1;
            }
            fsutil::write_all_at(&self.file, &buf, Header::record_offset(start), &self.path)?;
        }
        Ok(())
    }

    pub fn write_record(&self, recno: u32, record: &Record) -> Result<()> {
        self.inplace_dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(recno);
        fsutil::write_all_at(
            &self.file,
            &record.encode(),
            Header::record_offset(recno),
            &self.path,
        )
    }

    /// Writes records `start..` appended by a commit; returns the CRC32
    /// of the bytes written, for the header's `append_crc`. Grows the file
    /// first if they do not fit (`ensure_allocated`).
    pub fn write_appended(&self, start: u32, records: &[Record], durable: bool) -> Result<u32> {
        if start as u64 + records.len() as u64 > MAX_RECORDS as u64 {
            return Err(Error::MailboxFull { limit: MAX_RECORDS });
        }
        let buf = encode_records(records);
        let off = Header::record_offset(start);
        self.ensure_allocated(off, off + buf.len() as u64, durable)?;
        fsutil::write_all_at(&self.file, &buf, off, &self.path)?;
        Ok(Header::append_crc_of(&buf))
    }

    /// The file's length when writing bytes up to `end` needs a growth
    /// first: they lie past the end of the file, or the file's length is
    /// not a whole number of [`GROW_STEP`]s. Only a growth that completed
    /// and was synced leaves such a length, so any other one (a growth
    /// cut short by a full disk, a file written whole by create or
    /// repack) is grown again, and synced, before records land in it.
    fn growth_from(&self, end: u64) -> Result<Option<u64>> {
        if self.allocated.load(Ordering::Relaxed) >= end {
            return Ok(None);
        }
        let len = self.file_len()?;
        if len >= end && len.is_multiple_of(GROW_STEP) {
            self.allocated.store(len, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(len))
    }

    /// A growth failed and could not be cut off again: the file may be
    /// longer than what is durable. The commit then leaves its writer mark,
    /// so the next locker syncs the index (`repair_locked`).
    pub fn growth_unsure(&self) -> bool {
        self.growth_unsure.load(Ordering::Relaxed)
    }

    /// Makes the file at least `end` bytes long, growing it by whole
    /// [`GROW_STEP`]s of written zeros. Zero bytes past `num_records` are
    /// not records (a zero record fails its CRC and nothing counts it);
    /// readers and `reconstruct` already ignore what lies past the header's
    /// count.
    ///
    /// With `durable`, the new length is fdatasynced before any record is
    /// written into it (PROTOCOL.md §3, "Index growth"): an unordered
    /// append only writes the index's pages out, never its inode, so a
    /// length that lived only in memory could vanish in a power cut and
    /// take acknowledged records with it. A growth that cannot be made
    /// durable is undone, so that the next append grows (and syncs) again.
    ///
    /// An append starts at `start`, right after the records the header
    /// counts; a file shorter than that means the header counts records
    /// that are not there, and the growth is refused as corruption (it
    /// would write the whole gap: gigabytes for a crafted count).
    fn ensure_allocated(&self, start: u64, end: u64, durable: bool) -> Result<()> {
        let Some(len) = self.growth_from(end)? else {
            return Ok(());
        };
        if len < start {
            return Err(Error::corrupt(
                &self.path,
                len,
                format!(
                    "an append at byte {start} would start past the end of the file ({len} bytes): the header counts records the file does not hold"
                ),
            ));
        }
        let new_len = end.max(len + 1).div_ceil(GROW_STEP) * GROW_STEP;
        let grown = (|| {
            let zeros = vec![0u8; ((new_len - len) as usize).min(1 << 20)];
            let mut at = len;
            while at < new_len {
                let n = ((new_len - at) as usize).min(zeros.len());
                fsutil::write_all_at(&self.file, &zeros[..n], at, &self.path)?;
                at += n as u64;
            }
            crate::fault::point("append.after_grow")?;
            if durable {
                self.sync()?;
            }
            Ok(())
        })();
        if grown.is_err() && self.file.set_len(len).is_err() {
            self.growth_unsure.store(true, Ordering::Relaxed);
        }
        grown?;
        self.allocated.store(new_len, Ordering::Relaxed);
        Ok(())
    }

    /// Writes the header of an append commit, whose `append_from` and
    /// `append_crc` describe the records [`Self::write_appended`] wrote.
    /// The slot is written with its boot stamp (`boot.rs`) in one write
    /// inside one sector.
    pub fn write_append_header(&self, h: &Header) -> Result<()> {
        let encoded = h.encode();
        let mut slot = [0u8; HEADER_SIZE + crate::boot::STAMP_SIZE];
        slot[..HEADER_SIZE].copy_from_slice(&encoded);
        slot[HEADER_SIZE..].copy_from_slice(&crate::boot::stamp(&encoded));
        fsutil::write_all_at(&self.file, &slot, SLOT_OFFSETS[h.slot()], &self.path)?;
        self.checked_generation
            .store(h.generation, Ordering::Relaxed);
        Ok(())
    }

    /// Writes `h` into the slot its generation selects, with an empty
    /// append range: every commit but an append's.
    ///
    /// A commit that rewrote records in place ([`Self::write_record`])
    /// gets `inplace_modseq` stamped, and first a block in the change log
    /// naming the slots it rewrote (`changelog.rs`, PROTOCOL.md §4b); a
    /// commit that changes `inplace_modseq` without such writes (a
    /// recount, a settled MOVE) resets the log instead, so no block the
    /// header did not publish can ever stand for this commit.
    pub fn write_header(&self, h: &Header) -> Result<()> {
        let mut h = h.without_append();
        let slots =
            std::mem::take(&mut *self.inplace_dirty.lock().unwrap_or_else(|e| e.into_inner()));
        if !slots.is_empty() {
            h.inplace_modseq = h.highestmodseq.max(h.inplace_modseq);
        }
        if let Some(dir) = &self.messages {
            // Under the exclusive lock, the header this commit replaces.
            match self.read_slots().map(|r| r.header.inplace_modseq) {
                Ok(prev) if !slots.is_empty() => self.log_block(dir, &h, prev, slots)?,
                Ok(prev) if prev == h.inplace_modseq => {}
                _ => crate::changelog::reset(dir)?,
            }
        }
        let written =
            fsutil::write_all_at(&self.file, &h.encode(), SLOT_OFFSETS[h.slot()], &self.path);
        if let (Err(_), Some(dir)) = (&written, &self.messages) {
            // The block may stand for a commit that never happened.
            let _ = crate::changelog::reset(dir);
        }
        written
    }

    /// Appends the block of an in-place commit publishing `h` (whose
    /// `inplace_modseq` was `prev`) to the change log, after its records
    /// and before its header. On a shared filesystem the log is only
    /// reset: its readers do not use it (PROTOCOL.md §8).
    fn log_block(&self, dir: &Dir, h: &Header, prev: u64, mut slots: Vec<u32>) -> Result<()> {
        slots.sort_unstable();
        slots.dedup();
        if crate::fsmode::active() || prev >= h.inplace_modseq {
            return crate::changelog::reset(dir);
        }
        let block = crate::changelog::Block {
            modseq: h.inplace_modseq,
            prev,
            generation: h.generation,
            slots,
        };
        let logged = crate::changelog::append(dir, &block)
            .and_then(|()| crate::fault::point("changes.after_block"));
        match logged {
            Ok(()) => Ok(()),
            Err(e @ Error::InjectedFault(_)) => {
                let _ = crate::changelog::reset(dir);
                Err(e)
            }
            Err(e) => {
                // The log is only an accelerator: a commit never fails
                // for it, as long as no stale block can stand for it.
                tracing::warn!(path = %self.path.display(), error = %e, "change log not written; readers fall back to full reads");
                crate::changelog::reset(dir)
            }
        }
    }

    /// Whether, at the last header read, the count stamp said a writer
    /// recounted the header from every record during this boot. Within
    /// one boot only a killed writer leaves records its header does not
    /// count, and it leaves its writer mark too, which makes the next
    /// locker recount; so a writer that sees this may keep the counters by
    /// delta from the records it rewrites. After a power loss (a new boot)
    /// the mark may be lost while the records survived: the first
    /// in-place writer then recounts everything.
    pub fn counted_this_boot(&self) -> bool {
        self.counted.load(Ordering::Relaxed)
    }

    /// Writes the count stamp of this boot, after a header recounted from
    /// every record was written (no flush of its own: it only has to be
    /// as durable as that header, and a reboot voids it anyway).
    pub fn write_count_stamp(&self) -> Result<()> {
        if self.counted_this_boot() {
            return Ok(());
        }
        fsutil::write_all_at(
            &self.file,
            &crate::boot::count_stamp(),
            COUNT_STAMP_OFFSET,
            &self.path,
        )?;
        self.counted.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Sets or clears the writer mark. Never fsynced: it only has to
    /// outlive a dead process, and after a reboot the recount it triggers
    /// is harmless either way.
    pub fn set_writer_mark(&self, on: bool) -> Result<()> {
        fsutil::write_all_at(&self.file, &[on as u8], WRITER_MARK_OFFSET, &self.path)
    }

    pub fn sync(&self) -> Result<()> {
        fsutil::fdatasync(&self.file, &self.path)
    }

    /// Writes the file's dirty pages to the device and waits for them,
    /// without a cache flush (`sync_file_range`): an unordered append's
    /// message fdatasync then flushes them too.
    pub fn write_out(&self) -> Result<()> {
        if crate::fsmode::active() {
            // sync_file_range sends nothing to a shared filesystem's
            // server (PROTOCOL.md §8); appends are ordered there anyway.
            return self.sync();
        }
        fsutil::write_out(&self.file, &self.path, true)
    }
}

/// Whether two open files are the same inode.
pub(crate) fn same_file(a: &File, b: &File, path: &std::path::Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let ma = a.metadata().map_err(|e| Error::io("stat", path, e))?;
    let mb = b.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok(ma.dev() == mb.dev() && ma.ino() == mb.ino())
}

impl IndexFile {
    /// Whether this is still the file at `.index` in `dir` (a repack or
    /// reconstruct renames a new one over it); `None` when nothing is at
    /// the path any more (a delete moved it away).
    pub(crate) fn at_path(&self, dir: &Dir) -> Result<Option<bool>> {
        let now = match dir.open_file(fsutil::os(INDEX_NAME.as_bytes()), OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        same_file(&now, &self.file, &self.path).map(Some)
    }
}

/// The most bytes [`IndexFile::write_records_at`] writes with one call.
const MAX_RUN_BYTES: usize = 1 << 20;

/// Records as they lie in the file, back to back.
fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(records.len() * RECORD_SIZE);
    for r in records {
        buf.extend_from_slice(&r.encode());
    }
    buf
}
