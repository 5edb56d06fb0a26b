//! The change log `.changes` beside `.index`: which record slots each
//! in-place commit (flag change, expunge, MOVE's source expunge) rewrote,
//! so that another session's check after such a commit reads those
//! records only instead of the whole index (docs/FORMAT.md §2a,
//! docs/PROTOCOL.md §4b).
//!
//! An accelerator only, never a source of truth: a reader that cannot
//! follow the log from the commit it sees back to the one it last saw
//! (log missing, torn, CRC-bad, rotated, a gap left by a writer that did
//! not log) falls back to reading every record, which is always correct.
//!
//! Blocks are appended and parsed backwards from the end of the file, a
//! trailer giving each block's length and CRC, so a check reads only the
//! tail it needs; every length read is bounded before it sizes anything.

use std::fs::File;
use std::io::Write;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};

/// File name of the change log in a mailbox directory.
pub const CHANGES_NAME: &str = ".changes";

/// Magic at the end of every block's trailer.
pub const BLOCK_MAGIC: &[u8; 8] = b"MSCHANGE";

/// Bytes of a block's fixed part: modseq, prev, generation, count.
pub const BODY_FIXED: usize = 28;

/// Bytes of a block's trailer: body length, CRC32, magic.
pub const TRAILER_SIZE: usize = 16;

/// Most slots one block lists. A commit that rewrote more resets the log
/// instead: reading every record then costs about what reading that many
/// single records would.
pub const MAX_SLOTS: usize = 16384;

/// Largest body a block may have.
pub const MAX_BODY: usize = BODY_FIXED + 4 * MAX_SLOTS;

/// A log that would grow past this many bytes is replaced by one holding
/// only the new block (rotation); sessions further behind fall back.
pub const ROTATE_AT: u64 = 1 << 20;

/// Most bytes a reader reads from the tail in one walk: the log never
/// legitimately holds more than [`ROTATE_AT`] plus one block.
pub const MAX_WALK_BYTES: u64 = ROTATE_AT + (MAX_BODY + TRAILER_SIZE) as u64;

/// Most distinct slots a walk collects before a full read is cheaper.
pub const MAX_WALK_SLOTS: usize = 4 * MAX_SLOTS;

/// One in-place commit as the log records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The commit's MODSEQ: the `inplace_modseq` its header publishes.
    pub modseq: u64,
    /// The header's `inplace_modseq` before the commit.
    pub prev: u64,
    /// The generation the commit's header publishes.
    pub generation: u64,
    /// Record slots (0-based record numbers) the commit rewrote, ascending.
    pub slots: Vec<u32>,
}

impl Block {
    /// The block's bytes as they lie in the file: body, then trailer.
    pub fn encode(&self) -> Vec<u8> {
        let body_len = BODY_FIXED + 4 * self.slots.len();
        let mut b = Vec::with_capacity(body_len + TRAILER_SIZE);
        b.extend_from_slice(&self.modseq.to_le_bytes());
        b.extend_from_slice(&self.prev.to_le_bytes());
        b.extend_from_slice(&self.generation.to_le_bytes());
        b.extend_from_slice(&(self.slots.len() as u32).to_le_bytes());
        for s in &self.slots {
            b.extend_from_slice(&s.to_le_bytes());
        }
        b.extend_from_slice(&(body_len as u32).to_le_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(BLOCK_MAGIC);
        b
    }

    /// Decodes a body whose trailer was checked (`crc_input` is the body
    /// followed by the trailer's length field). Errors name the offset
    /// inside the body.
    fn decode_body(body: &[u8]) -> std::result::Result<Block, (usize, String)> {
        let u64_at = |o: usize| u64::from_le_bytes(body[o..o + 8].try_into().unwrap());
        let count = u32::from_le_bytes(body[24..28].try_into().unwrap()) as usize;
        if BODY_FIXED + 4 * count != body.len() {
            return Err((
                24,
                format!("slot count {count} does not match the body length"),
            ));
        }
        let slots: Vec<u32> = body[BODY_FIXED..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        if let Some(i) = slots.windows(2).position(|w| w[0] >= w[1]) {
            return Err((BODY_FIXED + 4 * (i + 1), "slots not ascending".into()));
        }
        let b = Block {
            modseq: u64_at(0),
            prev: u64_at(8),
            generation: u64_at(16),
            slots,
        };
        if b.prev >= b.modseq {
            return Err((8, format!("prev {} not below modseq {}", b.prev, b.modseq)));
        }
        Ok(b)
    }
}

/// Appends `block` to the log of `dir`, rotating it first when it would
/// pass [`ROTATE_AT`]. The caller holds the exclusive lock. No flush: see
/// PROTOCOL.md §4b for why the log needs none.
pub fn append(dir: &Dir, block: &Block) -> Result<()> {
    if block.slots.len() > MAX_SLOTS {
        return reset(dir);
    }
    let bytes = block.encode();
    let name = fsutil::os(CHANGES_NAME.as_bytes());
    let mut f = open_append(dir)?;
    let len = f
        .metadata()
        .map_err(|e| Error::io("stat", dir.child_path(name), e))?
        .len();
    if len + bytes.len() as u64 > ROTATE_AT {
        // Rotation: an unlink is atomic under the lock; a reader further
        // behind than the new file finds no chain and falls back.
        dir.unlink(name)?;
        crate::fault::point("changes.after_rotate")?;
        f = open_append(dir)?;
    }
    f.write_all(&bytes)
        .map_err(|e| Error::io("write", dir.child_path(name), e))
}

fn open_append(dir: &Dir) -> Result<File> {
    dir.open_file(
        fsutil::os(CHANGES_NAME.as_bytes()),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND,
    )
}

/// Empties the log (removes it). The caller holds the exclusive lock.
/// Done by every commit that changes records in place without a block of
/// its own (recovery, a recount, more than [`MAX_SLOTS`] slots) and by a
/// repack or reconstruct before it renames a new index into place.
pub fn reset(dir: &Dir) -> Result<()> {
    dir.unlink(fsutil::os(CHANGES_NAME.as_bytes()))
}

/// Why a walk could not answer (the caller then reads every record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No log file.
    Absent,
    /// The chain has a gap: the block for this MODSEQ is not in the log
    /// (rotated away, reset, or a commit that did not log).
    Gap(u64),
    /// Damage at this byte offset of the log.
    Damaged(u64, String),
    /// More to read than a full read would cost.
    TooMuch,
}

/// Reads blocks backwards from the end of a log file.
pub struct Reader<'a> {
    file: &'a File,
    path: std::path::PathBuf,
    /// File bytes `[buf_start, buf_start + buf.len())`.
    buf: Vec<u8>,
    buf_start: u64,
    /// End of the next block to parse.
    end: u64,
    read_total: u64,
    /// Reads made so far (each reads ahead twice as far as the last).
    fills: u32,
}

/// The least a [`Reader`] reads at its first read: a few blocks of a
/// few changed messages each.
const READ_AHEAD_FIRST: u64 = 512;
/// The most a [`Reader`] reads ahead at once.
const READ_AHEAD_MAX: u64 = 16 * 1024;

impl<'a> Reader<'a> {
    /// A reader of `file` (of length `len`) from its end.
    pub fn new(file: &'a File, path: std::path::PathBuf, len: u64) -> Reader<'a> {
        Reader {
            file,
            path,
            buf: Vec::new(),
            buf_start: len,
            end: len,
            read_total: 0,
            fills: 0,
        }
    }

    /// Makes file bytes `[from, self.end)` available in the buffer.
    fn fill(&mut self, from: u64) -> std::result::Result<(), Miss> {
        if from >= self.buf_start {
            return Ok(());
        }
        // Read backwards, at least `READ_AHEAD_FIRST` bytes the first
        // time and twice the last read-ahead after that, up to
        // `READ_AHEAD_MAX`, never past what the walk may read in all. A
        // session's check after one STORE wants one block of tens of
        // bytes: a small first read keeps it from copying (and, after
        // another session's big SELECT, missing the caches on) a 16 KiB
        // tail it never looks at.
        let ahead = (READ_AHEAD_FIRST << self.fills.min(8)).min(READ_AHEAD_MAX);
        self.fills += 1;
        let want_from = from.min(self.buf_start.saturating_sub(ahead));
        let n = (self.buf_start - want_from) as usize;
        self.read_total += n as u64;
        if self.read_total > MAX_WALK_BYTES {
            return Err(Miss::TooMuch);
        }
        let mut more = vec![0u8; n];
        let got = fsutil::read_at_most(self.file, &mut more, want_from, &self.path)
            .map_err(|e| Miss::Damaged(want_from, e.to_string()))?;
        if got < n {
            return Err(Miss::Damaged(
                want_from + got as u64,
                "log shorter than its length".into(),
            ));
        }
        more.extend_from_slice(&self.buf);
        self.buf = more;
        self.buf_start = want_from;
        Ok(())
    }

    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        &self.buf[(from - self.buf_start) as usize..(to - self.buf_start) as usize]
    }

    /// The block before the last one returned (the newest first), with
    /// its offset; `Ok(None)` at the start of the file.
    pub fn prev_block(&mut self) -> std::result::Result<Option<(u64, Block)>, Miss> {
        if self.end == 0 {
            return Ok(None);
        }
        let end = self.end;
        if end < TRAILER_SIZE as u64 {
            return Err(Miss::Damaged(0, "log too short for a block".into()));
        }
        let t = end - TRAILER_SIZE as u64;
        self.fill(t)?;
        let trailer = self.bytes(t, end);
        if &trailer[8..16] != BLOCK_MAGIC {
            return Err(Miss::Damaged(t + 8, "no block magic".into()));
        }
        let body_len = u32::from_le_bytes(trailer[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(trailer[4..8].try_into().unwrap());
        // Bounded before it sizes a read.
        if !(BODY_FIXED..=MAX_BODY).contains(&body_len)
            || !(body_len - BODY_FIXED).is_multiple_of(4)
            || body_len as u64 > t
        {
            return Err(Miss::Damaged(
                t,
                format!("block length {body_len} out of range"),
            ));
        }
        let start = t - body_len as u64;
        self.fill(start)?;
        let data = self.bytes(start, t + 4);
        if crc32fast::hash(data) != crc {
            return Err(Miss::Damaged(start, "block CRC mismatch".into()));
        }
        let block = Block::decode_body(&data[..body_len])
            .map_err(|(o, why)| Miss::Damaged(start + o as u64, why))?;
        self.end = start;
        // Drop what lies past the new end: the buffer stays one block
        // plus the read-ahead.
        let keep = (start - self.buf_start) as usize;
        self.buf.truncate(keep);
        Ok(Some((start, block)))
    }
}

/// The slots rewritten by in-place commits with a MODSEQ in
/// `(since, upto]`, `upto` being the header's `inplace_modseq` now, and
/// `since` the HIGHESTMODSEQ the reader last saw (at generation
/// `since_generation`, now `generation`). Walks the log backwards from
/// the newest block whose MODSEQ is `upto` along the `prev` chain until a
/// `prev <= since`. Every block of the chain must have been published
/// after the reader's look: generation in `(since_generation,
/// generation]`. Sorted and deduplicated.
pub fn slots_since(
    dir: &Dir,
    since: u64,
    since_generation: u64,
    upto: u64,
    generation: u64,
) -> std::result::Result<Vec<u32>, Miss> {
    let name = fsutil::os(CHANGES_NAME.as_bytes());
    let file = match dir.open_file(name, OFlag::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Err(Miss::Absent),
        Err(e) => return Err(Miss::Damaged(0, e.to_string())),
    };
    let len = file
        .metadata()
        .map_err(|e| Miss::Damaged(0, e.to_string()))?
        .len();
    let mut reader = Reader::new(&file, dir.child_path(name), len);
    walk(&mut reader, since, since_generation, upto, generation)
}

/// [`slots_since`] over an open reader.
pub fn walk(
    reader: &mut Reader<'_>,
    since: u64,
    since_generation: u64,
    upto: u64,
    generation: u64,
) -> std::result::Result<Vec<u32>, Miss> {
    let mut want = upto;
    let mut slots: Vec<u32> = Vec::new();
    while want > since {
        let Some((offset, b)) = reader.prev_block()? else {
            return Err(Miss::Gap(want));
        };
        if b.modseq > want {
            // A block a commit never published (killed or failed after
            // writing it), or one after the commit we look for.
            continue;
        }
        if b.modseq < want {
            // Blocks lie in MODSEQ order: the one we want is not here.
            return Err(Miss::Gap(want));
        }
        if b.generation <= since_generation || b.generation > generation {
            return Err(Miss::Damaged(
                offset + 16,
                format!(
                    "block of MODSEQ {} names generation {}, outside ({since_generation}, {generation}]",
                    b.modseq, b.generation
                ),
            ));
        }
        slots.extend_from_slice(&b.slots);
        if slots.len() > MAX_WALK_SLOTS {
            // Counted distinct: one message changed again and again
            // costs one read.
            slots.sort_unstable();
            slots.dedup();
            if slots.len() > MAX_WALK_SLOTS {
                return Err(Miss::TooMuch);
            }
        }
        want = b.prev;
    }
    slots.sort_unstable();
    slots.dedup();
    Ok(slots)
}

/// One finding of [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// Byte offset in `.changes`.
    pub offset: u64,
    /// What is wrong.
    pub what: String,
}

/// Checks every block of the log from its end (`idx-inspect verify`):
/// CRC and lengths, slots inside `num_records`, MODSEQs and generations
/// not above the header's, and the chain ascending. Returns the blocks
/// read and the first damage found; `Ok((0, None))` when there is no log.
pub fn check(
    dir: &Dir,
    num_records: u32,
    highestmodseq: u64,
    generation: u64,
) -> Result<(usize, Option<Damage>)> {
    let name = fsutil::os(CHANGES_NAME.as_bytes());
    let file = match dir.open_file(name, OFlag::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok((0, None)),
        Err(e) => return Err(e),
    };
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", dir.child_path(name), e))?
        .len();
    let mut reader = Reader::new(&file, dir.child_path(name), len);
    let mut blocks = 0;
    let mut later: Option<u64> = None;
    loop {
        let (offset, b) = match reader.prev_block() {
            Ok(Some(x)) => x,
            Ok(None) => return Ok((blocks, None)),
            Err(Miss::Damaged(offset, what)) => {
                return Ok((blocks, Some(Damage { offset, what })));
            }
            Err(m) => {
                return Ok((
                    blocks,
                    Some(Damage {
                        offset: reader.end,
                        what: format!("{m:?}"),
                    }),
                ));
            }
        };
        blocks += 1;
        let bad = |what: String| Ok((blocks, Some(Damage { offset, what })));
        if let Some(s) = b.slots.iter().find(|&&s| s >= num_records) {
            return bad(format!(
                "slot {s} is not below the index's {num_records} records"
            ));
        }
        if b.modseq > highestmodseq + 1 || b.generation > generation + 1 {
            // A commit killed after its block writes at most one above.
            return bad(format!(
                "MODSEQ {} / generation {} above the index's {highestmodseq} / {generation}",
                b.modseq, b.generation
            ));
        }
        if later.is_some_and(|m| b.modseq > m) {
            return bad(format!("MODSEQ {} above a later block's", b.modseq));
        }
        later = Some(b.modseq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> (tempfile::TempDir, Dir) {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open_root(t.path()).unwrap();
        (t, d)
    }

    fn block(modseq: u64, prev: u64, generation: u64, slots: &[u32]) -> Block {
        Block {
            modseq,
            prev,
            generation,
            slots: slots.to_vec(),
        }
    }

    fn write_raw(d: &Dir, bytes: &[u8]) {
        std::fs::write(d.child_path(fsutil::os(CHANGES_NAME.as_bytes())), bytes).unwrap();
    }

    fn raw(d: &Dir) -> Vec<u8> {
        std::fs::read(d.child_path(fsutil::os(CHANGES_NAME.as_bytes()))).unwrap()
    }

    /// The chain is followed from the newest block with the published
    /// MODSEQ back to the reader's, skipping blocks of commits that were
    /// never published (FORMAT.md §2a, PROTOCOL.md §4b).
    #[test]
    fn chain_walk_collects_slots_and_skips_unpublished_blocks() {
        let (_t, d) = dir();
        append(&d, &block(5, 2, 10, &[1, 7])).unwrap();
        // A commit killed after its block: MODSEQ 8 never published, the
        // next commit reused it.
        append(&d, &block(8, 5, 12, &[3])).unwrap();
        append(&d, &block(8, 5, 12, &[4, 9])).unwrap();
        append(&d, &block(9, 8, 13, &[2])).unwrap();
        // Killed again after its block: MODSEQ 10 not published.
        append(&d, &block(10, 9, 14, &[6])).unwrap();
        assert_eq!(slots_since(&d, 7, 11, 9, 13), Ok(vec![2, 4, 9]));
        assert_eq!(slots_since(&d, 4, 9, 9, 13), Ok(vec![1, 2, 4, 7, 9]));
        assert_eq!(slots_since(&d, 8, 12, 9, 13), Ok(vec![2]));
        // A reader older than the log's first block.
        assert_eq!(slots_since(&d, 1, 1, 9, 13), Err(Miss::Gap(2)));
        // Published MODSEQ without a block (a writer that did not log).
        assert_eq!(slots_since(&d, 8, 12, 11, 15), Err(Miss::Gap(11)));
        // A block whose generation the reader had seen already.
        assert!(matches!(
            slots_since(&d, 7, 13, 9, 13),
            Err(Miss::Damaged(..))
        ));
        reset(&d).unwrap();
        assert_eq!(slots_since(&d, 7, 11, 9, 13), Err(Miss::Absent));
    }

    /// Every kind of damage to the tail makes the walk fall back, never
    /// answer wrongly or read past what it must.
    #[test]
    fn damage_falls_back() {
        let (_t, d) = dir();
        append(&d, &block(5, 2, 10, &[1, 7])).unwrap();
        append(&d, &block(6, 5, 11, &[3])).unwrap();
        let good = raw(&d);
        assert_eq!(slots_since(&d, 4, 9, 6, 11), Ok(vec![1, 3, 7]));
        // Torn tail: a block cut short.
        write_raw(&d, &good[..good.len() - 3]);
        assert!(matches!(
            slots_since(&d, 4, 9, 6, 11),
            Err(Miss::Damaged(..))
        ));
        // A flipped bit in the newest body: CRC.
        let mut bad = good.clone();
        let second = good.len() - (BODY_FIXED + 4 + TRAILER_SIZE);
        bad[second] ^= 1;
        write_raw(&d, &bad);
        assert_eq!(
            slots_since(&d, 4, 9, 6, 11),
            Err(Miss::Damaged(second as u64, "block CRC mismatch".into()))
        );
        // Damage in the older block is only found when the walk needs it.
        let mut bad = good.clone();
        bad[0] ^= 1;
        write_raw(&d, &bad);
        assert_eq!(slots_since(&d, 5, 10, 6, 11), Ok(vec![3]));
        assert!(matches!(
            slots_since(&d, 4, 9, 6, 11),
            Err(Miss::Damaged(0, _))
        ));
        // Garbage and zeros.
        write_raw(&d, &[0u8; 100]);
        assert!(matches!(
            slots_since(&d, 4, 9, 6, 11),
            Err(Miss::Damaged(..))
        ));
        write_raw(&d, b"x");
        assert!(matches!(
            slots_since(&d, 4, 9, 6, 11),
            Err(Miss::Damaged(..))
        ));
    }

    /// A crafted trailer with an absurd length is refused before it sizes
    /// a read, as is a count that disagrees with the length, and a huge
    /// file is never read beyond the walk's bound (FORMAT.md §7).
    #[test]
    fn absurd_lengths_are_bounded() {
        let (_t, d) = dir();
        for body_len in [u32::MAX, (MAX_BODY + 4) as u32, 3, 29] {
            let mut b = vec![0u8; 64];
            b.extend_from_slice(&body_len.to_le_bytes());
            b.extend_from_slice(&0u32.to_le_bytes());
            b.extend_from_slice(BLOCK_MAGIC);
            write_raw(&d, &b);
            assert!(matches!(
                slots_since(&d, 1, 1, 2, 2),
                Err(Miss::Damaged(..))
            ));
        }
        // A count field that disagrees with the body length, CRC valid.
        let mut b = block(5, 2, 10, &[1, 2]).encode();
        b[24] = 200;
        let body_len = BODY_FIXED + 8;
        let crc = crc32fast::hash(&b[..body_len + 4]);
        b[body_len + 4..body_len + 8].copy_from_slice(&crc.to_le_bytes());
        write_raw(&d, &b);
        assert!(matches!(
            slots_since(&d, 4, 9, 5, 10),
            Err(Miss::Damaged(24, _))
        ));
        // A log far past the rotation bound of blocks the walk must skip
        // (MODSEQ above the one wanted): it stops at the byte bound.
        let one = block(100, 99, 100, &(0..MAX_SLOTS as u32).collect::<Vec<_>>()).encode();
        let mut big = block(5, 2, 10, &[1]).encode();
        while (big.len() as u64) < 2 * MAX_WALK_BYTES {
            big.extend_from_slice(&one);
        }
        write_raw(&d, &big);
        assert_eq!(slots_since(&d, 4, 9, 5, 10), Err(Miss::TooMuch));
    }

    /// The log is replaced by one holding just the new block when it
    /// would pass [`ROTATE_AT`]; a reader behind the rotation falls back.
    #[test]
    fn rotation_keeps_the_log_bounded() {
        let (_t, d) = dir();
        let slots: Vec<u32> = (0..1000).collect();
        let mut modseq = 1;
        let mut max_len = 0;
        for g in 1..400u64 {
            append(&d, &block(modseq + 1, modseq, g, &slots)).unwrap();
            modseq += 1;
            max_len = max_len.max(raw(&d).len() as u64);
        }
        assert!(max_len <= ROTATE_AT, "{max_len}");
        assert_eq!(slots_since(&d, modseq - 1, 398, modseq, 399), Ok(slots));
        assert!(matches!(
            slots_since(&d, 1, 0, modseq, 399),
            Err(Miss::Gap(_))
        ));
        // More slots than a block may list: the log is reset.
        let many: Vec<u32> = (0..MAX_SLOTS as u32 + 1).collect();
        append(&d, &block(modseq + 1, modseq, 400, &many)).unwrap();
        assert_eq!(
            slots_since(&d, modseq, 399, modseq + 1, 400),
            Err(Miss::Absent)
        );
    }

    /// `check` reports the offset of the first damage it meets, and slots
    /// outside the index.
    #[test]
    fn check_reports_offsets() {
        let (_t, d) = dir();
        assert_eq!(check(&d, 10, 10, 10).unwrap(), (0, None));
        append(&d, &block(5, 2, 10, &[1, 7])).unwrap();
        append(&d, &block(6, 5, 11, &[3])).unwrap();
        assert_eq!(check(&d, 10, 6, 11).unwrap(), (2, None));
        let (n, dmg) = check(&d, 5, 6, 11).unwrap();
        assert_eq!(n, 2);
        assert_eq!(dmg.unwrap().offset, 0);
        let mut bad = raw(&d);
        bad[3] ^= 0x40;
        write_raw(&d, &bad);
        let (n, dmg) = check(&d, 10, 6, 11).unwrap();
        assert_eq!((n, dmg.unwrap().offset), (1, 0));
    }
}
