//! Torn and corrupt indexes (issue 7): every single-bit flip and every
//! truncation point of a small index file, read back through the storage
//! API (`Mailbox::snapshot`, `Mailbox::header`) and `storage::verify`.
//!
//! Each mutation must be either
//! - detected: the API fails with `Error::Corrupt` (which names an offset),
//!   or verify reports a problem while the API still returns exactly the
//!   original header and records; or
//! - provably harmless: the API returns exactly the original header and
//!   records (compared field by field with a snapshot taken before).
//!
//! - a fallback to the previous generation: damage inside the CURRENT
//!   header slot looks exactly like a header write torn by a crash, and
//!   the store then serves the other slot (the documented torn-write rule).
//!   Allowed only when the header served is exactly the older slot's
//!   committed header, the records are the file's CRC-valid records, and
//!   verify reports a problem at an offset inside the damaged slot.
//!
//! A mutation after which the API returns anything else without an error
//! is a silent misread and fails the test. Two fixtures: the current
//! header in slot 0 and in slot 1, both slots valid, 5 records.
//!
//! Short form: every bit of both header slots, every third bit of the
//! records, every 97th bit of the padding; truncation at every byte of the
//! slots and every 16th elsewhere. `RELIABILITY_LONG=1`:
//! every bit of the file.

use std::path::Path;
use std::time::Duration;

use e2e_tests::reliability::is_long;
use storage::format::{HEADER_SIZE, RECORDS_OFFSET, SLOT_OFFSETS};
use storage::mailbox::FlagOp;
use storage::{
    AppendOptions, Durability, Error, Flags, Header, MailboxName, Options, Record, Store, UserName,
};

const USER: &str = "flip";

fn store(spool: &Path) -> Store {
    Store::open(
        spool,
        Options {
            durability: Durability::Relaxed,
            lock_timeout: Duration::from_secs(5),
        },
    )
    .unwrap()
}

/// A mailbox whose current header is in slot `slot`, with both slots
/// valid and at least one record under each.
fn fixture(spool: &Path, slot: usize) -> std::path::PathBuf {
    let s = store(spool);
    let u = UserName::new(USER).unwrap();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let mut mb = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    for i in 0..5 {
        let m = format!("Subject: m{i}\r\nMessage-ID: <{i}@flip>\r\n\r\nbody {i}\r\n");
        let opts = AppendOptions {
            flags: if i % 2 == 0 {
                Flags::SEEN
            } else {
                Flags::empty()
            },
            keywords: if i == 3 {
                vec!["$Label1".into()]
            } else {
                vec![]
            },
            ..Default::default()
        };
        mb.append(m.as_bytes(), opts).unwrap();
    }
    mb.store(&[2], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    mb.expunge(Some(&[2]), true).unwrap();
    // One in-place change per round flips the slot the next header goes to.
    let mut add = true;
    while mb.header().unwrap().slot() != slot {
        let op = if add { FlagOp::Add } else { FlagOp::Remove };
        mb.store(&[1], op, Flags::FLAGGED, &[], None).unwrap();
        add = !add;
    }
    s.mailbox_path(&u, &MailboxName::inbox())
}

/// What the API returns for the mailbox: header (from `header()` and from
/// `snapshot()`, which must agree) and records.
fn api_view(spool: &Path) -> Result<(Header, Vec<Record>), Error> {
    let s = store(spool);
    let mut mb = s.open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())?;
    let h = mb.header()?;
    let snap = mb.snapshot()?;
    assert_eq!(h, snap.header, "header() and snapshot() disagree");
    Ok((snap.header, snap.records))
}

#[derive(Default, Debug)]
struct Counts {
    mutations: u64,
    api_error: u64,
    verify_only: u64,
    fallback: u64,
    harmless: u64,
}

/// Applies one mutated index and classifies the outcome; panics on a
/// silent misread.
/// The previous generation a damaged current slot may fall back to, and
/// the byte range of that current slot.
struct Fallback {
    older: Header,
    slot: std::ops::Range<u64>,
}

fn classify(
    spool: &Path,
    dir: &Path,
    bytes: &[u8],
    orig: &(Header, Vec<Record>),
    fallback: Option<&Fallback>,
    what: &str,
    c: &mut Counts,
) {
    let index = dir.join(".index");
    std::fs::write(&index, bytes).unwrap();
    c.mutations += 1;
    match api_view(spool) {
        Err(Error::Corrupt { offset, .. }) => {
            assert!(
                offset <= bytes.len() as u64 + 8192,
                "{what}: corrupt offset {offset} is outside the file"
            );
            c.api_error += 1;
        }
        Err(e) => panic!("{what}: the API failed, but not as Corrupt: {e}"),
        Ok(view) => {
            let rep = storage::verify::verify_path(dir, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{what}: verify could not read: {e}"));
            if view != *orig {
                let fb = fallback.unwrap_or_else(|| {
                    panic!("{what}: SILENT MISREAD\noriginal {orig:#?}\nread {view:#?}")
                });
                assert_eq!(
                    view.0, fb.older,
                    "{what}: SILENT MISREAD: served a header that is neither the current nor the previous generation"
                );
                assert_eq!(view.1.len() as u32, fb.older.num_records);
                assert_eq!(view.1[..], orig.1[..view.1.len()], "{what}: records differ");
                let flagged = rep.problems().any(|f| {
                    f.path.ends_with(".index") && f.offset.is_some_and(|o| fb.slot.contains(&o))
                });
                assert!(
                    flagged,
                    "{what}: served the previous generation but verify did not report the damaged slot: {rep:?}"
                );
                c.fallback += 1;
                return;
            }
            if rep.is_clean() {
                c.harmless += 1;
            } else {
                c.verify_only += 1;
            }
        }
    }
}

fn campaign(slot: usize) -> Counts {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let dir = fixture(&spool, slot);
    let index = dir.join(".index");
    let original = std::fs::read(&index).unwrap();
    let orig = api_view(&spool).unwrap();
    assert_eq!(orig.0.slot(), slot);
    assert!(
        storage::verify::verify_path(&dir, Duration::from_secs(5))
            .unwrap()
            .is_clean()
    );
    // Both slots valid, the other one older.
    let other = Header::decode(&original[SLOT_OFFSETS[1 - slot] as usize..]).unwrap();
    assert!(other.generation < orig.0.generation && other.num_records > 0);

    let start = SLOT_OFFSETS[slot];
    let fb_range = start..start + HEADER_SIZE as u64;
    let fb = Fallback {
        older: other.clone(),
        slot: fb_range.clone(),
    };
    let in_slot = |byte: usize| {
        SLOT_OFFSETS
            .iter()
            .any(|&s| byte >= s as usize && byte < s as usize + HEADER_SIZE)
    };
    let mut c = Counts::default();
    for bit in 0..original.len() * 8 {
        let byte = bit / 8;
        let wanted = is_long()
            || in_slot(byte)
            || (byte >= RECORDS_OFFSET as usize && bit % 3 == 0)
            || bit % 97 == 0;
        if !wanted {
            continue;
        }
        let mut m = original.clone();
        m[byte] ^= 1 << (bit % 8);
        let fbo = fb_range.contains(&(byte as u64)).then_some(&fb);
        classify(
            &spool,
            &dir,
            &m,
            &orig,
            fbo,
            &format!("slot {slot}: flip of bit {bit} (byte {byte})"),
            &mut c,
        );
    }
    for len in 0..original.len() {
        if !(is_long() || in_slot(len) || len % 16 == 0) {
            continue;
        }
        classify(
            &spool,
            &dir,
            &original[..len],
            &orig,
            ((len as u64) < fb_range.end).then_some(&fb),
            &format!("slot {slot}: truncation to {len} bytes"),
            &mut c,
        );
    }
    std::fs::write(&index, &original).unwrap();
    assert_eq!(api_view(&spool).unwrap(), orig);
    c
}

#[test]
fn every_bit_flip_and_truncation_is_detected_or_harmless() {
    let started = std::time::Instant::now();
    let mut total = Counts::default();
    for slot in [0, 1] {
        let c = campaign(slot);
        println!("corrupt index, current header in slot {slot}: {c:?}");
        total.mutations += c.mutations;
        total.api_error += c.api_error;
        total.verify_only += c.verify_only;
        total.fallback += c.fallback;
        total.harmless += c.harmless;
    }
    println!(
        "corrupt index: {} mutations (bit flips and truncations): {} refused by the API with an offset, \
         {} served correctly and reported by verify, {} served correctly and harmless, \
         {} fell back to the previous generation (damaged current slot, reported by verify); 0 silent misreads ({:.1}s)",
        total.mutations,
        total.api_error,
        total.verify_only,
        total.harmless,
        total.fallback,
        started.elapsed().as_secs_f64()
    );
}
