//! Storage micro-benchmarks (`cargo bench -p mailstore`); results and the
//! machine they were taken on are in `docs/BENCHMARKS.md`.
//!
//! - append of a 4 KiB message, durable (`Durability::Full`) and relaxed;
//! - `changes_since` with no change on a 1,000- and a 1,000,000-record
//!   mailbox (must cost the same: one shared lock and one header read);
//! - open of the 1,000,000-record mailbox: open + header, open +
//!   snapshot (read and validate every record), and open + session view
//!   (what SELECT builds).
//!
//! - issue 21: UID STORE of one flag, and another session's check after
//!   one flag change and after one expunge, at 1,000 and 1,000,000
//!   records (the check follows the change log; nothing may depend on the
//!   size).
//!
//! The large index is written directly with `IndexFile::write_new`
//! (synthetic records, valid header); no message files are needed for
//! checks, opens or snapshots.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use mailstore::Dir;
use mailstore::format::{Flags, Keywords, Record};
use mailstore::internals::index::{INDEX_NAME, IndexFile};
use mailstore::mailbox::FlagOp;
use mailstore::session::{Allow, SessionView, Update};
use mailstore::{AppendOptions, Durability, MailboxName, Options, Store, UserName};

fn user() -> UserName {
    UserName::new("bench").unwrap()
}

fn store(root: &Path, durability: Durability) -> Store {
    let opts = Options {
        durability,
        ..Options::default()
    };
    Store::open(&root.join("spool"), opts).unwrap()
}

fn message_4k() -> Vec<u8> {
    let mut m = b"From: bench@example.org\r\nSubject: benchmark\r\n\r\n".to_vec();
    while m.len() < 4096 - 2 {
        m.push(b'x');
        if m.len().is_multiple_of(78) {
            m.extend_from_slice(b"\r\n");
        }
    }
    m.truncate(4096 - 2);
    m.extend_from_slice(b"\r\n");
    m
}

/// Creates mailbox `name` and replaces its index by one holding `n`
/// synthetic live records (UIDs 1..=n).
fn synthetic_mailbox(s: &Store, name: &str, n: u32) -> MailboxName {
    let mb = MailboxName::new(name).unwrap();
    s.create_mailbox(&user(), &mb).unwrap();
    let path = s.mailbox_path(&user(), &mb);
    let dir = Dir::open_root(&path).unwrap();
    let mut h = IndexFile::open(&dir).unwrap().read_header().unwrap();
    let records: Vec<Record> = (1..=n)
        .map(|uid| Record {
            uid,
            flags: if uid % 3 == 0 {
                Flags::SEEN
            } else {
                Flags::empty()
            },
            internal_date: 1_700_000_000 + uid as i64,
            sent_date: 1_700_000_000 + uid as i64,
            size: 4096,
            header_size: 300,
            message_crc: uid,
            modseq: 1 + (uid as u64 % 1000),
            keywords: Keywords::default(),
            last_updated: 1_700_000_000,
            internal_zone: 0,
        })
        .collect();
    h.generation += 1;
    h.num_records = n;
    h.exists = n;
    h.last_uid = n;
    h.highestmodseq = 1000;
    h.total_bytes = 4096 * n as u64;
    h.seen = n / 3;
    std::fs::remove_file(path.join(INDEX_NAME)).unwrap();
    IndexFile::write_new(&dir, INDEX_NAME, &h, &records, Durability::Relaxed).unwrap();
    mb
}

fn append(c: &mut Criterion) {
    let msg = message_4k();
    let mut g = c.benchmark_group("append_4k");
    g.measurement_time(Duration::from_secs(5));
    for (label, durability, samples) in [
        ("relaxed", Durability::Relaxed, 50),
        ("durable", Durability::Full, 20),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), durability);
        s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
        let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
        g.sample_size(samples);
        g.bench_function(label, |b| {
            b.iter(|| black_box(m.append(&msg[..], AppendOptions::default()).unwrap()))
        });
    }
    g.finish();
}

fn checks_and_opens(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let s = store(tmp.path(), Durability::Relaxed);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let small = synthetic_mailbox(&s, "small", 1_000);
    let large = synthetic_mailbox(&s, "large", 1_000_000);

    let mut g = c.benchmark_group("changes_since_no_change");
    g.measurement_time(Duration::from_secs(5));
    for (label, mb) in [("1M_records", &large), ("1k_records", &small)] {
        let mut m = s.open_mailbox(&user(), mb).unwrap();
        let snap = m.snapshot().unwrap();
        assert_eq!(
            snap.records.len(),
            if label == "1k_records" {
                1_000
            } else {
                1_000_000
            }
        );
        let mark = snap.mark;
        g.bench_function(label, |b| {
            b.iter(|| assert!(m.changes_since(black_box(&mark)).unwrap().is_none()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("open_1M_records");
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("open_and_header", |b| {
        b.iter(|| {
            let mut m = s.open_mailbox(&user(), &large).unwrap();
            black_box(m.header().unwrap())
        })
    });
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("open_and_snapshot", |b| {
        b.iter(|| {
            let mut m = s.open_mailbox(&user(), &large).unwrap();
            let snap = m.snapshot().unwrap();
            assert_eq!(snap.records.len(), 1_000_000);
            black_box(snap)
        })
    });
    // What SELECT builds: the session view, straight from the records.
    g.bench_function("open_and_view", |b| {
        b.iter(|| {
            let mut m = s.open_mailbox(&user(), &large).unwrap();
            let view = SessionView::open(&mut m).unwrap();
            assert_eq!(view.len(), 1_000_000);
            black_box(view)
        })
    });
    g.finish();
}

/// Issue 21: what one flag change or one expunge costs, by another
/// session's check afterwards (through the change log, PROTOCOL.md §4b)
/// and by the change itself (records found by binary search), at 1,000
/// and 1,000,000 records: the figures must not depend on the size.
fn changes_after_one(c: &mut Criterion) {
    let tmp = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
    let s = store(tmp.path(), Durability::Relaxed);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let sizes = [
        (
            "1k_records",
            synthetic_mailbox(&s, "small", 1_000),
            1_000u32,
        ),
        (
            "1M_records",
            synthetic_mailbox(&s, "large", 1_000_000),
            1_000_000,
        ),
    ];
    let mut g = c.benchmark_group("after_one_change");
    g.measurement_time(Duration::from_secs(5));
    for (label, mb, n) in &sizes {
        let mut writer = s.open_mailbox(&user(), mb).unwrap();
        let mut other = s.open_mailbox(&user(), mb).unwrap();
        // The first in-place commit of a boot recounts every record
        // (PROTOCOL.md §4): done before timing.
        writer
            .store(&[1], FlagOp::Add, Flags::FLAGGED, &[], None)
            .unwrap();
        let mut view = SessionView::open(&mut other).unwrap();
        let mut uid = 0u32;
        g.bench_function(format!("store_one_flag/{label}"), |b| {
            b.iter(|| {
                uid = uid % n + 1;
                let op = if uid.is_multiple_of(2) {
                    FlagOp::Add
                } else {
                    FlagOp::Remove
                };
                black_box(
                    writer
                        .store(&[uid], op, Flags::ANSWERED, &[], None)
                        .unwrap(),
                )
            })
        });
        view.check(&mut other, Allow::AllUpdates).unwrap();
        g.bench_function(format!("other_check_after_store/{label}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    uid = uid % n + 1;
                    let Some(seq) = view.seq(uid) else { continue };
                    let seen = view.record(seq).unwrap().flags.contains(Flags::SEEN);
                    let op = if seen { FlagOp::Remove } else { FlagOp::Add };
                    writer.store(&[uid], op, Flags::SEEN, &[], None).unwrap();
                    let t = std::time::Instant::now();
                    let ups = view.check(&mut other, Allow::AllUpdates).unwrap();
                    spent += t.elapsed();
                    assert_eq!(ups.len(), 1);
                }
                spent
            })
        });
        g.bench_function(format!("other_check_after_expunge/{label}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // A new message replaces the one expunged (untimed),
                    // so the mailbox keeps its size however long this runs.
                    let new = writer
                        .append(&b"Subject: x\r\n\r\nx\r\n"[..], AppendOptions::default())
                        .unwrap();
                    view.check(&mut other, Allow::AllUpdates).unwrap();
                    let first = view.uid(1).unwrap();
                    assert_eq!(writer.expunge(Some(&[first]), false).unwrap(), vec![first]);
                    let t = std::time::Instant::now();
                    let ups = view.check(&mut other, Allow::AllUpdates).unwrap();
                    spent += t.elapsed();
                    assert_eq!(ups, vec![Update::Expunge(1)]);
                    assert!(new > first);
                }
                spent
            })
        });
    }
    g.finish();
}

criterion_group!(benches, append, checks_and_opens, changes_after_one);
criterion_main!(benches);
