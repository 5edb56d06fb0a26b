//! Structure-aware index files for fuzzing (issue 15, item 3): both header
//! slots carry valid CRCs, their fields come from sets of interesting
//! values (0, 1, small, relative to what the file holds, the hard limits
//! and one past them, `u32::MAX - k`, `u64::MAX - k`, random), the
//! records are genuine, damaged or extreme, and the file ends exactly, in
//! zeros, inside a record or far beyond the records (sparse). Random bytes
//! almost never get past a CRC; these inputs reach every check behind it.
//!
//! Shared by the stable test `reliability_fuzz.rs` (proptest bytes, each
//! batch in a child under a memory limit) and the cargo-fuzz target
//! `fuzz/fuzz_targets/index_crafted.rs` (libFuzzer bytes).

use std::path::Path;
use std::time::Duration;

use storage::format::{
    HEADER_SIZE, HF_DELETED, HF_MOVE_IN, HF_MOVE_OUT, HF_SUPERSEDED, HF_UNORDERED, MAX_COUNTER,
    MAX_MESSAGE_SIZE, MAX_RECORDS, RECORD_SIZE, RECORDS_OFFSET, SLOT_OFFSETS,
};
use storage::internals::index::{GROW_STEP, WRITER_MARK_OFFSET};
use storage::mailbox::ViewMark;
use storage::{
    AppendOptions, Durability, FlagOp, Flags, Header, Keywords, MailboxName, Options, Record,
    Store, UserName,
};

/// Reads choices from fuzzer bytes; zeros once they run out, so every
/// input, however short, makes a file.
pub struct Choices<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Choices<'a> {
    pub fn new(data: &'a [u8]) -> Choices<'a> {
        Choices { data, pos: 0 }
    }
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.u64() % n }
    }
    pub fn chance(&mut self, percent: u8) -> bool {
        self.byte() % 100 < percent
    }
    pub fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

/// An index file to write: `bytes`, then the file set to `len` bytes
/// (longer means a sparse tail of zeros).
pub struct Crafted {
    pub bytes: Vec<u8>,
    pub len: u64,
    /// Message files of the genuine records: (name, content).
    pub messages: Vec<(String, Vec<u8>)>,
}

/// A count: interesting in general and relative to this file.
fn count(c: &mut Choices, real: u32, in_file: u32) -> u32 {
    match c.below(20) {
        0 => 0,
        1 => 1,
        2 => real,
        3 => real + 1,
        4 => real.saturating_sub(1),
        5 => in_file,
        6 => in_file.saturating_add(1),
        7 => MAX_RECORDS,
        8 => MAX_RECORDS + 1,
        9 => 2_000_000,
        10 => 100_000_000,
        11 => 0x7fff_ffff,
        12 => 0xffff_fff0,
        13 => u32::MAX - c.below(3) as u32,
        14 => 448,
        15 => 449,
        _ => c.below(in_file as u64 + 8) as u32,
    }
}

fn wide(c: &mut Choices) -> u64 {
    match c.below(12) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => MAX_COUNTER - 1,
        4 => MAX_COUNTER,
        5 => u64::MAX - c.below(3),
        6 => u32::MAX as u64,
        7 => c.u64(),
        _ => c.below(1000),
    }
}

fn date(c: &mut Choices) -> i64 {
    c.pick(&[0, 1_700_000_000, -1, i64::MAX, i64::MIN, 253_402_300_800])
}

/// Builds an index file from fuzzer bytes.
pub fn index_file(c: &mut Choices) -> Crafted {
    let real = c.below(7) as u32;
    let mut body = vec![0u8; RECORDS_OFFSET as usize];
    let mut messages = Vec::new();
    let mut uid = 0u32;
    for i in 0..real {
        uid = uid.saturating_add(1 + c.below(3) as u32);
        let content = format!("Subject: {uid}\r\n\r\nbody {i}\r\n").into_bytes();
        let mut r = Record {
            uid,
            flags: Flags(c.pick(&[0, 1, 4, 8, 0x1f, 1 << 31, 1 << 31 | 8])),
            internal_date: date(c),
            sent_date: date(c),
            size: content.len() as u64,
            header_size: 17,
            message_crc: crc32fast::hash(&content),
            modseq: 1 + c.below(4),
            keywords: Keywords::default(),
            last_updated: date(c),
            internal_zone: c.pick(&[0, 120, -300, 1439, -1439]),
        };
        if c.chance(20) {
            r.keywords.insert(c.below(256) as usize);
        }
        match c.below(12) {
            0 => r.size = c.pick(&[0, MAX_MESSAGE_SIZE, MAX_MESSAGE_SIZE + 1, u64::MAX]),
            1 => r.modseq = wide(c),
            2 => r.uid = c.pick(&[0, 1, u32::MAX]),
            _ => {}
        }
        let mut enc = r.encode();
        if c.chance(10) {
            // Damage behind the CRC's back.
            let at = c.below(RECORD_SIZE as u64) as usize;
            enc[at] ^= 1 << c.below(8);
        }
        body.extend_from_slice(&enc);
        if c.chance(90) {
            messages.push((format!("{}.", r.uid), content));
        }
    }
    let exact = body.len() as u64;
    let len = match c.below(8) {
        0 => exact.next_multiple_of(GROW_STEP),
        1 => c.below(exact + 1),
        2 => Header::record_offset(c.pick(&[449, 20_000, 100_000])),
        3 => exact + c.below(RECORD_SIZE as u64 * 3),
        _ => exact,
    };
    let in_file = (len.saturating_sub(RECORDS_OFFSET) / RECORD_SIZE as u64) as u32;
    let mut heads: [Option<Header>; 2] = [None, None];
    for (slot, head) in heads.iter_mut().enumerate() {
        if c.chance(25) {
            continue; // never written
        }
        let num_records = count(c, real, in_file);
        let exists = if c.chance(85) {
            count(c, real, in_file).min(num_records)
        } else {
            count(c, real, in_file)
        };
        let highestmodseq = wide(c);
        let mut h = Header {
            flags: c.pick(&[
                0,
                0,
                0,
                HF_UNORDERED,
                HF_SUPERSEDED,
                HF_DELETED,
                HF_MOVE_OUT,
                HF_MOVE_IN,
                1 << 7,
            ]),
            generation: wide(c).max(1),
            num_records,
            exists,
            last_uid: if c.chance(85) {
                count(c, real, in_file).max(num_records)
            } else {
                count(c, real, in_file)
            },
            uidvalidity: c.pick(&[0, 1, 7, u32::MAX]),
            highestmodseq,
            total_bytes: wide(c),
            seen: count(c, real, in_file).min(exists),
            deleted: 0,
            flagged: if c.chance(20) { exists } else { 0 },
            meta_generation: c.u32(),
            created: date(c),
            last_append: date(c),
            inplace_modseq: if c.chance(90) {
                highestmodseq.min(wide(c))
            } else {
                wide(c)
            },
            append_from: count(c, real, in_file).min(num_records),
            append_crc: 0,
            removed_modseq: if c.chance(90) {
                highestmodseq.min(wide(c))
            } else {
                wide(c)
            },
        };
        if c.chance(90) && h.generation % 2 != slot as u64 {
            h.generation = h.generation.checked_add(1).unwrap_or(h.generation - 1);
        }
        if h.append_from < h.num_records {
            let from = Header::record_offset(h.append_from) as usize;
            let to = Header::record_offset(h.num_records) as usize;
            h.append_crc = match c.below(3) {
                0 if to <= body.len() => Header::append_crc_of(&body[from..to]),
                1 => 0,
                _ => c.u32(),
            };
        }
        *head = Some(h);
    }
    if c.chance(20)
        && let Some(h) = heads[0].clone()
    {
        // The other slot one generation older, as after a normal commit.
        let mut older = h.clone();
        older.generation = h.generation.saturating_sub(1).max(1);
        heads[1] = Some(older);
    }
    for (slot, h) in heads.iter().enumerate() {
        let Some(h) = h else { continue };
        let off = SLOT_OFFSETS[slot] as usize;
        let mut enc = h.encode();
        let version = c.pick(&[4u32, 4, 4, 3, 2, 1]);
        if version != 4 {
            enc[8..12].copy_from_slice(&version.to_le_bytes());
            enc[112..120].fill(0);
            if version == 1 {
                enc[104..112].fill(0);
            }
            let crc = crc32fast::hash(&enc[..HEADER_SIZE - 4]);
            enc[HEADER_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        body[off..off + HEADER_SIZE].copy_from_slice(&enc);
    }
    if c.chance(15) {
        body[WRITER_MARK_OFFSET as usize] = 1;
    }
    body.truncate(len as usize);
    Crafted {
        bytes: body,
        len,
        messages,
    }
}

/// Replaces the mailbox directory `dir` by one holding `crafted`.
pub fn install(dir: &Path, crafted: &Crafted) {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join(".stage")).expect("mkdir");
    let index = dir.join(".index");
    std::fs::write(&index, &crafted.bytes).expect("write index");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .and_then(|f| f.set_len(crafted.len))
        .expect("set_len");
    for (name, content) in &crafted.messages {
        std::fs::write(dir.join(name), content).expect("write message");
    }
}

/// Every operation on the INBOX of `user` in `spool`, as readers and
/// writers use it: errors are fine, a panic or an abort is not, a snapshot
/// that succeeds is consistent, and the index never grows by more than an
/// append's own growth (no filling the disk from a count). Returns how many
/// operations failed with a corruption error.
pub fn exercise(spool: &Path, user: &str, dir: &Path) -> usize {
    let opts = Options {
        durability: Durability::Relaxed,
        lock_timeout: Duration::from_secs(2),
    };
    let index = dir.join(".index");
    let len_before = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
    let store = Store::open(spool, opts).expect("open store");
    let u = UserName::new(user).expect("user");
    let Ok(mut mb) = store.open_mailbox(&u, &MailboxName::inbox()) else {
        return 0;
    };
    let mut corrupt = 0;
    let mut note = |r: Result<(), storage::Error>| {
        if let Err(storage::Error::Corrupt { .. }) = r {
            corrupt += 1;
        }
    };
    let snap = mb.snapshot();
    if let Ok(s) = &snap {
        let mut prev = 0;
        for r in &s.records {
            assert!(
                r.uid > prev && r.uid <= s.header.last_uid,
                "snapshot with UIDs out of order"
            );
            prev = r.uid;
        }
        assert_eq!(s.records.len() as u32, s.header.num_records);
    }
    note(snap.map(|_| ()));
    note(mb.header().map(|_| ()));
    note(mb.changes_since(&ViewMark::default()).map(|_| ()));
    let msg = b"Subject: fuzz\r\n\r\nappended\r\n";
    note(mb.append(&msg[..], AppendOptions::default()).map(|_| ()));
    note(
        mb.store(
            &[1, 2, 3],
            FlagOp::Add,
            Flags::SEEN,
            &["$Fuzz".into()],
            None,
        )
        .map(|_| ()),
    );
    note(mb.expunge(Some(&[1]), true).map(|_| ()));
    note(mb.changes_since(&ViewMark::default()).map(|_| ()));
    note(mb.repack().map(|_| ()));
    note(mb.recover().map(|_| ()));
    drop(mb);
    let _ = storage::verify::verify_path(dir, Duration::from_secs(2));
    let len_after = std::fs::metadata(&index).map(|m| m.len()).unwrap_or(0);
    assert!(
        len_after <= len_before.max(RECORDS_OFFSET) + 2 * GROW_STEP,
        "the index grew from {len_before} to {len_after} bytes"
    );
    corrupt
}
