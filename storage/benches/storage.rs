//! Storage micro-benchmarks (`cargo bench -p mailstore`); results and the
//! machine they were taken on are in `docs/BENCHMARKS.md`.
//!
//! - append of a 4 KiB message, durable (`Durability::Full`) and relaxed;
//! - `changes_since` with no change on a 1,000- and a 1,000,000-record
//!   mailbox (must cost the same: one shared lock and one header read);
//! - open of the 1,000,000-record mailbox: open + header, and open +
//!   snapshot (read and validate every record).
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
    g.finish();
}

criterion_group!(benches, append, checks_and_opens);
criterion_main!(benches);
