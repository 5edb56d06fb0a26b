//! Consistency checks of one mailbox directory, read-only.
//!
//! [`verify_dir`] reads the index under a SHARED lock (held for the whole
//! check, so no writer can move files underneath it), never opens anything
//! for writing and never creates a file. It returns a [`Report`] listing
//! every problem it found, each with the file, the byte offset where one
//! applies, and a message; it returns `Err` only when it could not read the
//! mailbox at all (no directory, no index file, I/O error, lock timeout).
//!
//! # Invariants checked (index format v1)
//!
//! Header slots (two, at byte offsets 0 and 4096):
//! 1. At least one slot is valid; the valid slot with the higher generation
//!    is current. A slot that is not all-zero must be valid: CRC32 at slot
//!    offset 124 matches bytes 0..124, magic `MSTOREIX`, version 1, record
//!    size 128, records offset 8192, reserved bytes 104..124 zero, only known
//!    header flags, generation non-zero, UIDVALIDITY non-zero.
//! 2. A slot holds only generations of its parity (slot = generation % 2).
//! 3. exists <= num_records <= last_uid; seen, deleted, flagged <= exists.
//!
//! Records (128 bytes each from offset 8192, `num_records` of them):
//! 4. The file is long enough to hold `num_records` records, at most
//!    2^26 of them, and `generation`, `highestmodseq`, `total_bytes` are
//!    below 2^63 (`IndexFile::check_in_use`, docs/FORMAT.md §7). Every
//!    reader and writer refuses an index failing this, so the report
//!    marks it [`Report::unusable`] (`idx-inspect verify` exits 2).
//!    Records are streamed in batches, never held all at once, and at
//!    most 1000 bad ones are listed.
//! 5. Every record's CRC32 at record offset 124 matches bytes 0..124;
//!    reserved bytes 88..124 are zero; UID non-zero; only known flag bits;
//!    header_size <= size; modseq non-zero.
//! 6. UIDs are strictly ascending in record order, and none is above the
//!    header's last_uid.
//! 7. The header's exists, seen, deleted, flagged and total_bytes equal the
//!    counts and byte sum over live (not expunged) records.
//! 8. highestmodseq is at least every record's modseq.
//! 9. Every keyword bit set in a live record names an entry of `.meta`,
//!    and `.meta` itself parses with a valid CRC.
//!
//! Message files (`UID.` in the mailbox directory):
//! 10. Every live record has its file, a regular file, whose length is the
//!     record's size and whose CRC32 (of the whole file) is message_crc.
//! 11. No orphans: every `UID.` file with UID <= last_uid has a record
//!     (live or expunged; an expunged record's file waits for repack).
//!
//! Change log `.changes` (FORMAT.md §2a), reported as a warning because it
//! is only an accelerator: 12. every block from the end has its magic, a
//! bounded length and a valid CRC; its slots are below num_records; its
//! MODSEQ and generation are at most one above the header's (a commit
//! killed after its block); MODSEQs do not decrease along the file.
//!
//! Crash debris, reported as warnings (not problems) because
//! `Mailbox::recover` clears it (into `.quarantine/` when it holds
//! bytes) and nothing ever serves it: `UID.` files
//! with UID > last_uid (an append that never committed), files in `.stage/`
//! that no live writer holds locked, and leftover temporary index files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::format::{
    HEADER_SIZE, Header, RECORD_SIZE, RECORDS_OFFSET, Record, SLOT_OFFSETS, SlotError,
};
use crate::fsutil::{self, Dir};
use crate::index::{HeaderRead, INDEX_NAME, IndexFile};
use crate::layout::{STAGE_DIR, message_file_name, parse_message_file_name};
use crate::lock::{LockGuard, LockKind};
use crate::meta::{META_NAME, Meta};

pub use crate::fsutil::crc_of_file;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// The mailbox violates an invariant.
    Problem,
    /// Crash debris that recovery clears; the mailbox is still consistent.
    Warning,
}

/// One thing `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Problem or warning.
    pub severity: Severity,
    /// The file it concerns.
    pub path: PathBuf,
    /// Byte offset in `path` where the problem is, when one applies.
    pub offset: Option<u64>,
    /// What is wrong.
    pub message: String,
}

/// Everything [`verify_dir`] found in one mailbox.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every finding, problems and warnings.
    pub findings: Vec<Finding>,
    /// The current header, if a valid slot was found.
    pub header: Option<Header>,
    /// Index records checked.
    pub records_checked: u32,
    /// Message files checked.
    pub files_checked: u32,
    /// Files in `.quarantine/` (`quarantine.rs`): not a fault of the
    /// mailbox (it is consistent without them), but bytes recovery would
    /// not delete, for a person to restore or purge.
    pub quarantine: Vec<crate::quarantine::Entry>,
    /// The current header cannot be taken into use (a count beyond the
    /// file or a hard limit, `IndexFile::check_in_use`): every reader and
    /// writer refuses this index with a corruption error, so `idx-inspect
    /// verify` exits 2. The reason is also listed as a problem.
    pub unusable: bool,
}

impl Report {
    /// The findings that are problems (the mailbox violates an invariant).
    pub fn problems(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Problem)
    }
    /// The findings that are warnings (crash debris that recovery clears).
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }
    /// True when there is no problem (warnings are allowed).
    pub fn is_clean(&self) -> bool {
        self.problems().next().is_none()
    }
    fn problem(&mut self, path: &Path, offset: Option<u64>, message: impl Into<String>) {
        self.push(Severity::Problem, path, offset, message);
    }
    fn warning(&mut self, path: &Path, offset: Option<u64>, message: impl Into<String>) {
        self.push(Severity::Warning, path, offset, message);
    }
    fn push(
        &mut self,
        severity: Severity,
        path: &Path,
        offset: Option<u64>,
        message: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            path: path.to_path_buf(),
            offset,
            message: message.into(),
        });
    }
}

/// One record slot of the index as stored, decoded or not.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
#[derive(Clone, Debug)]
pub struct RawRecord {
    /// Record number (from 0).
    pub recno: u32,
    /// Byte offset of the record in the index file.
    pub offset: u64,
    /// The decoded record, or why it did not decode.
    pub record: std::result::Result<Record, SlotError>,
    /// All 128 bytes are zero: never written (growth padding).
    pub zero: bool,
}

/// Header slots exactly as stored, and access to the records, read under
/// one shared lock.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
#[derive(Debug)]
pub struct RawView {
    /// The `.index` file's path.
    pub index_path: PathBuf,
    /// Its length in bytes.
    pub file_len: u64,
    /// Each slot decoded on its own (with the parity rule applied).
    pub slots: [std::result::Result<Header, SlotError>; 2],
    /// Current header, or the error when no slot is valid.
    pub current: std::result::Result<HeaderRead, String>,
    /// Why the current header cannot be taken into use
    /// (`IndexFile::check_in_use`): absolute offset and reason.
    pub refused: Option<(u64, String)>,
    /// How many records [`Self::for_each_record`] visits: `num_records`
    /// of the current header (or every complete record in the file when
    /// no header is valid), cut short where the file ends.
    pub record_count: u32,
    /// Keyword table, or the error loading it.
    pub meta: std::result::Result<Meta, Error>,
    idx: IndexFile,
}

impl RawView {
    /// How many records the file can hold completely.
    pub fn records_in_file(&self) -> u32 {
        (self.file_len.saturating_sub(RECORDS_OFFSET) / RECORD_SIZE as u64).min(u32::MAX as u64)
            as u32
    }

    /// Calls `f` with records `0..record_count` in order, read in batches:
    /// memory stays bounded whatever the count (the records of a 1 GB
    /// index are never all held at once here).
    pub fn for_each_record(&self, mut f: impl FnMut(RawRecord)) -> Result<()> {
        each_raw_record(&self.idx, 0, self.record_count, &mut f)
    }
}

/// Decodes slot `slot` from a buffer holding the start of the index file.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
pub fn decode_slot(buf: &[u8], slot: usize) -> std::result::Result<Header, SlotError> {
    let off = SLOT_OFFSETS[slot] as usize;
    let end = (off + HEADER_SIZE).min(buf.len());
    let bytes = if end > off { &buf[off..end] } else { &[][..] };
    let h = Header::decode(bytes)?;
    if h.slot() != slot {
        return Err(SlotError {
            offset: 24,
            what: format!("generation {} stored in the wrong slot", h.generation),
        });
    }
    Ok(h)
}

/// Opens a mailbox directory for reading only (no symlink is followed below it).
pub fn open_dir_read_only(path: &Path) -> Result<Dir> {
    Dir::open_root(path)
}

/// Reads the index of `dir` raw under a shared lock; `hold` is called with
/// the view while the lock is still held (so callers may look at message
/// files consistently), and its result returned.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
pub fn with_raw_view<T>(
    dir: &Dir,
    lock_timeout: Duration,
    hold: impl FnOnce(&RawView) -> Result<T>,
) -> Result<T> {
    // A repack or reconstruct may replace `.index` between our open and
    // our lock; the old file is then marked superseded and we reopen.
    for _ in 0..100 {
        let idx = IndexFile::open_read_only(dir)?;
        let guard =
            LockGuard::acquire(idx.file.clone(), LockKind::Shared, lock_timeout, &idx.path)?;
        let view = read_raw(dir, &idx)?;
        if let Ok(hr) = &view.current
            && hr.header.is_superseded()
            && idx.at_path(dir)? != Some(true)
        {
            drop(guard);
            continue;
        }
        let out = hold(&view);
        drop(guard);
        return out;
    }
    Err(Error::Corrupt {
        path: dir.child_path(fsutil::os(INDEX_NAME.as_bytes())),
        offset: 0,
        what: "index keeps being replaced".into(),
    })
}

fn read_raw(dir: &Dir, idx: &IndexFile) -> Result<RawView> {
    let file_len = idx.file_len()?;
    let mut buf = vec![0u8; SLOT_OFFSETS[1] as usize + HEADER_SIZE];
    let n = fsutil::read_at_most(&idx.file, &mut buf, 0, &idx.path)?;
    buf.truncate(n);
    let slots = [decode_slot(&buf, 0), decode_slot(&buf, 1)];
    let current = idx.read_header_detail().map_err(|e| e.to_string());
    // The newest valid slot, as every reader checks it before use (a
    // failure there is the error readers and writers get).
    let newest = (0..2)
        .filter_map(|s| slots[s].as_ref().ok().map(|h| (h.generation, s, h)))
        .max_by_key(|(g, _, _)| *g);
    let refused = match newest.map(|(_, s, h)| idx.check_in_use(h, s)) {
        Some(Err(Error::Corrupt { offset, what, .. })) => Some((offset, what)),
        Some(Err(e)) => return Err(e),
        Some(Ok(())) | None => None,
    };
    let in_file =
        (file_len.saturating_sub(RECORDS_OFFSET) / RECORD_SIZE as u64).min(u32::MAX as u64) as u32;
    let record_count = match &current {
        Ok(hr) => hr.header.num_records.min(in_file),
        Err(_) => in_file,
    };
    let meta = Meta::load(dir);
    Ok(RawView {
        index_path: idx.path.clone(),
        file_len,
        slots,
        current,
        refused,
        record_count,
        meta,
        idx: idx.clone(),
    })
}

/// Reads records `start..end` without failing on a bad one.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
pub fn read_raw_records(idx: &IndexFile, start: u32, end: u32) -> Result<Vec<RawRecord>> {
    let mut out = Vec::new();
    each_raw_record(idx, start, end, &mut |r| out.push(r))?;
    Ok(out)
}

/// Calls `f` with records `start..end`, 4096 at a time, without failing on
/// a bad one; stops where the file ends.
fn each_raw_record(
    idx: &IndexFile,
    start: u32,
    end: u32,
    f: &mut dyn FnMut(RawRecord),
) -> Result<()> {
    const BATCH: u32 = 4096;
    let mut buf = vec![0u8; BATCH.min(end.saturating_sub(start)) as usize * RECORD_SIZE];
    let mut recno = start;
    while recno < end {
        let count = BATCH.min(end - recno);
        let off = Header::record_offset(recno);
        let buf = &mut buf[..count as usize * RECORD_SIZE];
        let n = fsutil::read_at_most(&idx.file, buf, off, &idx.path)?;
        let whole = n / RECORD_SIZE;
        for (i, chunk) in buf[..whole * RECORD_SIZE]
            .chunks_exact(RECORD_SIZE)
            .enumerate()
        {
            let r = recno + i as u32;
            f(RawRecord {
                recno: r,
                offset: Header::record_offset(r),
                record: Record::decode(chunk),
                zero: chunk.iter().all(|b| *b == 0),
            });
        }
        if whole < count as usize {
            break;
        }
        recno += count;
    }
    Ok(())
}

/// Names of header fields by offset within a slot, for messages.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
pub fn header_field_name(offset: usize) -> &'static str {
    match offset {
        0..8 => "magic",
        8..12 => "version",
        12..16 => "record_size",
        16..20 => "records_offset",
        20..24 => "flags",
        24..32 => "generation",
        32..36 => "num_records",
        36..40 => "exists",
        40..44 => "last_uid",
        44..48 => "uidvalidity",
        48..56 => "highestmodseq",
        56..64 => "total_bytes",
        64..68 => "seen",
        68..72 => "deleted",
        72..76 => "flagged",
        76..80 => "meta_generation",
        80..88 => "created",
        88..96 => "last_append",
        96..104 => "inplace_modseq",
        104..108 => "append_from",
        108..112 => "append_crc",
        112..120 => "removed_modseq",
        120..124 => "reserved",
        _ => "crc",
    }
}

/// Names of record fields by offset within a record.
///
/// `idx-inspect`'s raw view: exposes internal index types, hidden from
/// the docs and not covered by semver.
#[doc(hidden)]
pub fn record_field_name(offset: usize) -> &'static str {
    match offset {
        0..4 => "uid",
        4..8 => "flags",
        8..16 => "internal_date",
        16..24 => "sent_date",
        24..32 => "size",
        32..36 => "header_size",
        36..40 => "message_crc",
        40..48 => "modseq",
        48..80 => "keywords",
        80..88 => "last_updated",
        88..90 => "internal_zone",
        90..124 => "reserved",
        _ => "crc",
    }
}

/// Checks the mailbox at `path`. See the module docs for what is checked.
pub fn verify_path(path: &Path, lock_timeout: Duration) -> Result<Report> {
    let dir = open_dir_read_only(path)?;
    verify_dir(&dir, lock_timeout)
}

/// Checks the mailbox in `dir` (opened read-only); see the module docs.
pub fn verify_dir(dir: &Dir, lock_timeout: Duration) -> Result<Report> {
    with_raw_view(dir, lock_timeout, |view| {
        let mut rep = Report::default();
        let indexed = check_index(view, &mut rep)?;
        check_files(dir, view, &indexed, &mut rep)?;
        check_change_log(dir, view, &mut rep)?;
        Ok(rep)
    })
}

/// What `check_files` needs of a decodable record.
struct Indexed {
    recno: u32,
    offset: u64,
    size: u64,
    message_crc: u32,
    expunged: bool,
}

/// Bad records listed one by one; past this many, one line counts the rest
/// (a crafted count over a huge file of zeros must not make a report of
/// millions of lines).
const MAX_LISTED_RECORDS: u32 = 1000;

/// Live-record totals, accumulated while the records stream past.
#[derive(Default)]
struct Totals {
    exists: u64,
    total_bytes: u64,
    seen: u64,
    deleted: u64,
    flagged: u64,
}

fn check_index(view: &RawView, rep: &mut Report) -> Result<HashMap<u32, Indexed>> {
    let p = &view.index_path;
    if let Some((offset, what)) = &view.refused {
        rep.unusable = true;
        rep.problem(
            p,
            Some(*offset),
            format!("the header cannot be used, every reader and writer refuses it: {what}"),
        );
    }
    for (slot, res) in view.slots.iter().enumerate() {
        let base = SLOT_OFFSETS[slot];
        if let Err(e) = res {
            let empty = e.what == "header slot is empty";
            let other_ok = view.slots[1 - slot].is_ok();
            if !(empty && other_ok) {
                rep.problem(
                    p,
                    Some(base + e.offset as u64),
                    format!(
                        "header slot {slot}, field {}: {}",
                        header_field_name(e.offset),
                        e.what
                    ),
                );
            }
        }
    }
    let header = view.current.as_ref().ok().map(|hr| hr.header.clone());
    let hbase = view
        .current
        .as_ref()
        .map(|hr| SLOT_OFFSETS[hr.slot])
        .unwrap_or(0);
    rep.header = header.clone();
    if let Ok(hr) = &view.current
        && let Some((offset, why)) = &hr.torn
    {
        rep.warning(
            p,
            Some(*offset),
            format!(
                "the newest header slot (offset {}) is ignored: what its commit appended is not on disk ({why}); a power loss interrupted that commit before it was acknowledged; the next writer retires its generation and UIDs (never handed out again)",
                SLOT_OFFSETS[1 - hr.slot]
            ),
        );
    }
    if let Ok(hr) = &view.current
        && let Some((offset, why)) = &hr.damaged
    {
        rep.problem(
            p,
            Some(*offset),
            format!(
                "the newest commit (header slot at offset {hbase}, generation {}) does not match the disk: {why}; \
                 no interrupted commit leaves this, so it is neither used for writing nor rolled back \
                 (writers refuse until `idx-admin reconstruct`)",
                hr.header.generation
            ),
        );
    }
    if let Some(h) = &header
        && h.is_superseded()
    {
        rep.warning(
            p,
            Some(hbase + 20),
            "index is marked superseded but still in place: an interrupted repack or \
             reconstruct; the next writer rolls it back",
        );
    }
    if let Some(h) = &header {
        let need = Header::record_offset(h.num_records);
        if view.file_len < need {
            rep.problem(
                p,
                Some(view.file_len),
                format!(
                    "index truncated: header (slot at offset {hbase}) counts {} records, \
                     the file ends at byte {} inside record {}",
                    h.num_records,
                    view.file_len,
                    view.records_in_file()
                ),
            );
        }
    }
    let mut indexed = HashMap::new();
    let mut totals = Totals::default();
    let mut all_ok = true;
    let mut listed = 0u32;
    let mut unlisted = 0u64;
    let mut prev: Option<u32> = None;
    let mut max_modseq = (0u64, 0u32, 0u64);
    let meta = view.meta.as_ref().ok();
    view.for_each_record(|raw| {
        rep.records_checked += 1;
        let mut problem = |rep: &mut Report, offset: u64, message: String| {
            if listed < MAX_LISTED_RECORDS {
                listed += 1;
                rep.problem(p, Some(offset), message);
            } else {
                unlisted += 1;
            }
        };
        let r = match &raw.record {
            Ok(r) => r,
            // Without a usable header, every complete record in the file
            // is looked at; zeros there are growth padding, not records.
            Err(_) if raw.zero && header.is_none() => return,
            Err(e) => {
                all_ok = false;
                problem(
                    rep,
                    raw.offset + e.offset as u64,
                    format!(
                        "record {}, field {}: {}",
                        raw.recno,
                        record_field_name(e.offset),
                        e.what
                    ),
                );
                return;
            }
        };
        if let Some(pu) = prev
            && r.uid <= pu
        {
            problem(
                rep,
                raw.offset,
                format!(
                    "record {}: UID {} not above the previous UID {pu}",
                    raw.recno, r.uid
                ),
            );
        }
        prev = Some(prev.map_or(r.uid, |pu| pu.max(r.uid)));
        if let Some(h) = &header
            && r.uid > h.last_uid
        {
            problem(
                rep,
                raw.offset,
                format!(
                    "record {}: UID {} is above the header's last_uid {} (offset {})",
                    raw.recno,
                    r.uid,
                    h.last_uid,
                    hbase + 40
                ),
            );
        }
        if r.modseq > max_modseq.0 {
            max_modseq = (r.modseq, r.uid, raw.offset);
        }
        if !r.is_expunged() {
            use crate::format::Flags;
            totals.exists += 1;
            totals.total_bytes = totals.total_bytes.saturating_add(r.size);
            totals.seen += r.flags.contains(Flags::SEEN) as u64;
            totals.deleted += r.flags.contains(Flags::DELETED) as u64;
            totals.flagged += r.flags.contains(Flags::FLAGGED) as u64;
            if let Some(meta) = meta {
                for k in r.keywords.iter() {
                    if k >= meta.keywords.len() {
                        problem(
                            rep,
                            raw.offset + 48 + (k / 8) as u64,
                            format!(
                                "record {} (UID {}): keyword bit {k} has no name in {META_NAME} ({} names)",
                                raw.recno,
                                r.uid,
                                meta.keywords.len()
                            ),
                        );
                    }
                }
            }
        }
        indexed.insert(
            r.uid,
            Indexed {
                recno: raw.recno,
                offset: raw.offset,
                size: r.size,
                message_crc: r.message_crc,
                expunged: r.is_expunged(),
            },
        );
    })?;
    if unlisted > 0 {
        rep.problem(
            p,
            None,
            format!("{unlisted} more problems in records not listed (only the first {MAX_LISTED_RECORDS} are)"),
        );
    }
    let Some(h) = header else {
        return Ok(indexed);
    };
    if max_modseq.0 > h.highestmodseq {
        rep.problem(
            p,
            Some(hbase + 48),
            format!(
                "highestmodseq {} is below the modseq {} of UID {} (record at offset {})",
                h.highestmodseq, max_modseq.0, max_modseq.1, max_modseq.2
            ),
        );
    }
    // Counts can only be compared when every record could be read.
    if !all_ok || view.file_len < Header::record_offset(h.num_records) {
        return Ok(indexed);
    }
    let checks: [(&str, usize, u64, u64); 5] = [
        ("exists", 36, h.exists as u64, totals.exists),
        ("total_bytes", 56, h.total_bytes, totals.total_bytes),
        ("seen", 64, h.seen as u64, totals.seen),
        ("deleted", 68, h.deleted as u64, totals.deleted),
        ("flagged", 72, h.flagged as u64, totals.flagged),
    ];
    for (name, off, stored, actual) in checks {
        if stored != actual {
            rep.problem(
                p,
                Some(hbase + off as u64),
                format!("header {name} is {stored}, the live records give {actual}"),
            );
        }
    }
    Ok(indexed)
}

fn check_files(
    dir: &Dir,
    view: &RawView,
    in_index: &HashMap<u32, Indexed>,
    rep: &mut Report,
) -> Result<()> {
    let header = view.current.as_ref().ok().map(|hr| &hr.header);
    let last_uid = header.map(|h| h.last_uid);
    if let Err(e) = &view.meta {
        let path = dir.child_path(fsutil::os(META_NAME.as_bytes()));
        let offset = match e {
            Error::Corrupt { offset, .. } => Some(*offset),
            _ => None,
        };
        rep.problem(&path, offset, format!("keyword table unreadable: {e}"));
    }
    rep.quarantine = crate::quarantine::list(dir)?;
    let mut files = std::collections::HashSet::new();
    for (name, _) in dir.entries()? {
        let os = fsutil::os(&name);
        let path = dir.child_path(os);
        if let Some(uid) = parse_message_file_name(&name) {
            files.insert(uid);
            if in_index.contains_key(&uid) {
                continue;
            }
            match last_uid {
                Some(l) if uid > l => rep.warning(
                    &path,
                    None,
                    format!("UID {uid} is above last_uid {l}: debris of an uncommitted append"),
                ),
                _ => rep.problem(
                    &path,
                    None,
                    format!("orphan message file: UID {uid} has no record in the index"),
                ),
            }
        } else if name.starts_with(b".index.") || name.starts_with(b".meta.tmp.") {
            rep.warning(
                &path,
                None,
                "leftover temporary file of an interrupted rewrite",
            );
        }
    }
    for (uid, r) in in_index {
        if r.expunged {
            continue;
        }
        let name = message_file_name(*uid);
        let os = fsutil::os(name.as_bytes());
        let path = dir.child_path(os);
        if !files.contains(uid) {
            rep.problem(
                &path,
                None,
                format!(
                    "message file missing for UID {uid} (record {} at index offset {}; `idx-admin recover` restores it if a crash left it in .stage)",
                    r.recno, r.offset
                ),
            );
            continue;
        }
        rep.files_checked += 1;
        let f = match dir.open_file(os, OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) => {
                rep.problem(&path, None, format!("cannot open message file: {e}"));
                continue;
            }
        };
        let md = f.metadata().map_err(|e| Error::Io {
            op: "stat",
            path: path.clone(),
            source: e,
        })?;
        if !md.is_file() {
            rep.problem(&path, None, "message file is not a regular file");
            continue;
        }
        if md.len() != r.size {
            rep.problem(
                &path,
                Some(md.len().min(r.size)),
                format!(
                    "UID {uid}: file is {} bytes, the record (index offset {}) says {}",
                    md.len(),
                    r.offset + 24,
                    r.size
                ),
            );
            continue;
        }
        let crc = crc_of_file(&f, &path)?;
        if crc != r.message_crc {
            rep.problem(
                &path,
                None,
                format!(
                    "UID {uid}: file CRC32 {crc:08x}, the record (index offset {}) says {:08x}",
                    r.offset + 36,
                    r.message_crc
                ),
            );
        }
    }
    check_stage(dir, rep)?;
    rep.findings.sort_by(|a, b| {
        (a.severity as u8, &a.path, a.offset).cmp(&(b.severity as u8, &b.path, b.offset))
    });
    Ok(())
}

/// The change log `.changes` (FORMAT.md §2a): damage is a warning, never
/// a problem, since it is only an accelerator (a reader that cannot follow
/// it reads every record); `idx-admin recover` or `reconstruct` resets it.
fn check_change_log(dir: &Dir, view: &RawView, rep: &mut Report) -> Result<()> {
    let Ok(read) = &view.current else {
        return Ok(());
    };
    let h = &read.header;
    let (_, damage) = crate::changelog::check(dir, h.num_records, h.highestmodseq, h.generation)?;
    if let Some(d) = damage {
        let path = dir.child_path(fsutil::os(crate::changelog::CHANGES_NAME.as_bytes()));
        rep.warning(
            &path,
            Some(d.offset),
            format!(
                "change log: {} (only an accelerator: sessions read every record instead; `idx-admin recover` resets it)",
                d.what
            ),
        );
    }
    Ok(())
}

/// Staged files nobody holds locked are debris of a crashed writer.
fn check_stage(dir: &Dir, rep: &mut Report) -> Result<()> {
    let stage = match dir.open_dir(fsutil::os(STAGE_DIR.as_bytes())) {
        Ok(s) => s,
        Err(e) if e.is_not_found() => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for (name, _) in stage.entries()? {
        let os = fsutil::os(&name);
        let path = stage.child_path(os);
        let Ok(f) = stage
            .open_file(os, OFlag::O_RDONLY)
            .map(crate::lock::LockedFile::new)
        else {
            continue;
        };
        // A live writer holds its staged file exclusively; a shared lock
        // that succeeds means nobody does (released when `f` goes).
        let free = crate::lock::lock(
            std::os::fd::AsFd::as_fd(&f),
            LockKind::Shared,
            Duration::ZERO,
            &path,
        )
        .is_ok();
        // Two names: a committed message whose staged name waits for the
        // next settle (PROTOCOL.md §3), normal.
        let linked = f
            .metadata()
            .map(|m| std::os::unix::fs::MetadataExt::nlink(&m) >= 2)
            .unwrap_or(false);
        if free && !linked {
            rep.warning(
                &path,
                None,
                "staged file left by a crashed writer (or the only name of a committed message whose UID file a crash took away; `idx-admin recover` tells them apart)",
            );
        }
    }
    Ok(())
}
