//! Counts read from disk never size an allocation, a loop or a write
//! beyond what the file holds (issue 15, item 3; docs/FORMAT.md "What
//! readers check before use"). Headers with valid CRCs and extreme fields,
//! through every mailbox operation: each fails with `Error::Corrupt`
//! naming the offending header field, and the index file is left byte for
//! byte as it was (no growth, no writer mark).

use std::path::{Path, PathBuf};
use std::time::Duration;

use mailstore::format::{MAX_RECORDS, SLOT_OFFSETS};
use mailstore::internals::index::IndexFile;
use mailstore::mailbox::FlagOp;
use mailstore::{
    AppendOptions, Durability, Error, Flags, Header, Mailbox, MailboxName, Options, Record, Store,
    UserName,
};

fn opts() -> Options {
    Options {
        durability: Durability::Relaxed,
        lock_timeout: Duration::from_secs(5),
    }
}

fn user() -> UserName {
    UserName::new("bounds").unwrap()
}

/// A mailbox holding `n` messages; returns (store, mailbox directory).
fn fixture(root: &Path, n: u32) -> (Store, PathBuf) {
    let store = Store::open(root, opts()).unwrap();
    store
        .create_mailbox(&user(), &MailboxName::inbox())
        .unwrap();
    let mut mb = store.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    for i in 0..n {
        let msg = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
        mb.append(msg.as_bytes(), AppendOptions::default()).unwrap();
    }
    let dir = store.mailbox_path(&user(), &MailboxName::inbox());
    (store, dir)
}

/// Rewrites the current header slot with `f` applied (a valid CRC, the
/// append range as `f` leaves it), through the index file's own header
/// writer; returns the slot's offset.
fn craft(dir: &Path, f: impl FnOnce(&mut Header)) -> u64 {
    let idx = IndexFile::open(&mailstore::Dir::open_root(dir).unwrap()).unwrap();
    let read = idx.read_header_detail().unwrap();
    let mut h = read.header;
    f(&mut h);
    assert_eq!(h.slot(), read.slot, "a crafted generation keeps its slot");
    idx.write_append_header(&h).unwrap();
    SLOT_OFFSETS[read.slot]
}

fn open(store: &Store) -> Mailbox {
    store.open_mailbox(&user(), &MailboxName::inbox()).unwrap()
}

fn corrupt_at(r: mailstore::Result<impl std::fmt::Debug>, offset: u64, what: &str) {
    match r {
        Err(Error::Corrupt { offset: o, .. }) if o == offset => {}
        other => panic!("{what}: expected Error::Corrupt at offset {offset}, got {other:?}"),
    }
}

/// The append range of a crafted header.
#[derive(Clone, Copy)]
enum Range {
    /// As the last commit left it.
    Kept,
    /// None (`append_from = num_records`).
    Empty,
    /// From this record, with a wrong CRC.
    From(u32),
}

/// What a crafted header changes: `records` sets num_records (and raises
/// last_uid and exists with it), `range` the append range, `counter` sets
/// the 64-bit field at that slot offset to its maximum.
struct Case {
    name: &'static str,
    messages: u32,
    records: Option<u32>,
    range: Range,
    counter: Option<u64>,
}

impl Case {
    /// Offset of the field the header must be refused at.
    fn field(&self) -> u64 {
        self.counter.unwrap_or(32)
    }

    fn apply(&self, h: &mut Header) {
        if let Some(n) = self.records {
            h.num_records = n;
            h.last_uid = h.last_uid.max(n);
            h.exists = h.exists.max(n / 2);
        }
        match self.range {
            Range::Kept => {}
            Range::Empty => {
                h.append_from = h.num_records;
                h.append_crc = 0;
                h.flags &= !mailstore::format::HF_UNORDERED;
            }
            Range::From(r) => {
                h.append_from = r;
                h.append_crc = 1;
            }
        }
        match self.counter {
            Some(24) => h.generation = u64::MAX - 1 + (h.generation & 1),
            Some(48) => h.highestmodseq = u64::MAX,
            Some(56) => h.total_bytes = u64::MAX,
            _ => {}
        }
    }
}

/// Every count beyond the file or the limit, with each kind of append
/// range, and each 64-bit counter at its maximum.
fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (name, messages, n) in [
        ("0xFFFFFFF0 records", 3, 0xFFFF_FFF0),
        ("u32::MAX records", 3, u32::MAX),
        ("one record above the limit", 3, MAX_RECORDS + 1),
        ("2,000,000 records in 8 KiB", 0, 2_000_000),
        ("100,000,000 records in 8 KiB", 0, 100_000_000),
        // The file is one 64 KiB growth step: room for 448 records.
        ("449 records in 64 KiB", 3, 449),
    ] {
        for range in [Range::Kept, Range::Empty, Range::From(0)] {
            out.push(Case {
                name,
                messages,
                records: Some(n),
                range,
                counter: None,
            });
        }
    }
    for (name, off) in [
        ("generation near u64::MAX", 24),
        ("highestmodseq u64::MAX", 48),
        ("total_bytes u64::MAX", 56),
    ] {
        out.push(Case {
            name,
            messages: 3,
            records: None,
            range: Range::Kept,
            counter: Some(off),
        });
    }
    out
}

#[test]
fn crafted_headers_are_refused_by_every_operation_and_nothing_is_written() {
    for c in cases() {
        let name = c.name;
        let tmp = tempfile::tempdir().unwrap();
        let (store, dir) = fixture(&tmp.path().join("spool"), c.messages);
        let slot = craft(&dir, |h| c.apply(h));
        let at = slot + c.field();
        let index = std::fs::read(dir.join(".index")).unwrap();
        let mut mb = open(&store);
        corrupt_at(mb.header(), at, name);
        corrupt_at(mb.snapshot(), at, name);
        corrupt_at(
            mb.append(&b"Subject: x\r\n\r\ny\r\n"[..], AppendOptions::default()),
            at,
            name,
        );
        corrupt_at(
            mb.store(&[1], FlagOp::Add, Flags::SEEN, &[], None),
            at,
            name,
        );
        corrupt_at(mb.expunge(None, false), at, name);
        corrupt_at(mb.repack(), at, name);
        corrupt_at(mb.recover(), at, name);
        corrupt_at(mb.changes_since(&Default::default()), at, name);
        let mut other = store.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
        corrupt_at(other.snapshot(), at, name);
        assert!(
            std::fs::read(dir.join(".index")).unwrap() == index,
            "{name}: the index file changed"
        );
        // verify names the field and marks the index unusable.
        let rep = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
        assert!(rep.unusable, "{name}: {rep:?}");
        assert!(
            rep.problems().any(|p| p.offset == Some(at)),
            "{name}: {rep:?}"
        );
    }
}

/// A header at the record limit over a (sparse) file that holds all its
/// records: an append is refused with `MailboxFull` before anything is
/// written, and the file does not grow.
#[test]
fn append_at_the_record_limit_is_refused_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, dir) = fixture(&tmp.path().join("spool"), 0);
    craft(&dir, |h| {
        h.num_records = MAX_RECORDS;
        h.last_uid = MAX_RECORDS;
        h.append_from = MAX_RECORDS;
    });
    let path = dir.join(".index");
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let len = Header::record_offset(MAX_RECORDS).next_multiple_of(64 * 1024);
    f.set_len(len).unwrap();
    drop(f);
    let mut mb = open(&store);
    match mb.append(&b"Subject: x\r\n\r\ny\r\n"[..], AppendOptions::default()) {
        Err(Error::MailboxFull { limit }) => assert_eq!(limit, MAX_RECORDS),
        other => panic!("expected MailboxFull, got {other:?}"),
    }
    assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
    // The writer mark was cleared again.
    let mut b = [0u8; 1];
    std::os::unix::fs::FileExt::read_exact_at(
        &std::fs::File::open(&path).unwrap(),
        &mut b,
        mailstore::internals::index::WRITER_MARK_OFFSET,
    )
    .unwrap();
    assert_eq!(b, [0]);
}

/// A record claiming a message above the size limit is corrupt, so sums
/// of sizes cannot overflow.
#[test]
fn record_size_above_the_limit_is_rejected() {
    let r = Record {
        uid: 1,
        size: mailstore::format::MAX_MESSAGE_SIZE + 1,
        modseq: 1,
        ..Record::default()
    };
    assert_eq!(Record::decode(&r.encode()).unwrap_err().offset, 24);
    let ok = Record {
        size: mailstore::format::MAX_MESSAGE_SIZE,
        ..r
    };
    assert!(Record::decode(&ok.encode()).is_ok());
}

/// verify streams the records: a genuine index of 1,000,000 (expunged)
/// records verifies clean and every record is checked.
#[test]
fn a_genuine_index_of_a_million_records_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let (_store, dir) = fixture(&tmp.path().join("spool"), 0);
    let n = 1_000_000u32;
    let records: Vec<Record> = (1..=n)
        .map(|uid| Record {
            uid,
            flags: Flags::EXPUNGED,
            modseq: 1,
            ..Record::default()
        })
        .collect();
    let h = Header {
        generation: 2,
        num_records: n,
        exists: 0,
        last_uid: n,
        uidvalidity: 7,
        highestmodseq: 1,
        append_from: n,
        ..Header::default()
    };
    let d = mailstore::Dir::open_root(&dir).unwrap();
    std::fs::remove_file(dir.join(".index")).unwrap();
    IndexFile::write_new(&d, ".index", &h, &records, Durability::Relaxed).unwrap();
    drop(records);
    let rep = mailstore::verify::verify_path(&dir, Duration::from_secs(30)).unwrap();
    assert!(rep.is_clean() && !rep.unusable, "{:?}", &rep.findings[..]);
    assert_eq!(rep.records_checked, n);
    assert_eq!(
        std::fs::metadata(dir.join(".index")).unwrap().len(),
        Header::record_offset(n)
    );
    // And the readers take it: a snapshot holds every record.
    let store = Store::open(&tmp.path().join("spool"), opts()).unwrap();
    assert_eq!(open(&store).snapshot().unwrap().records.len(), n as usize);
}

/// The other on-disk inputs without a count: each has a hard size limit,
/// and a larger file is refused (or, for a MOVE journal, not read) rather
/// than read whole into memory.
#[test]
fn oversized_side_files_are_refused_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let (store, dir) = fixture(&spool, 2);
    let user_dir = dir.parent().unwrap().to_path_buf();
    let sparse = |path: &Path, len: u64| {
        std::fs::File::create(path).unwrap().set_len(len).unwrap();
    };

    // Subscriptions: 4 MiB at most.
    let subs = user_dir.join(".subscriptions");
    sparse(&subs, mailstore::subscriptions::MAX_SUBSCRIPTIONS_BYTES + 1);
    match store.subscriptions(&user()) {
        Err(Error::Corrupt { offset, .. }) => {
            assert_eq!(offset, mailstore::subscriptions::MAX_SUBSCRIPTIONS_BYTES)
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        store.set_subscribed(&user(), "INBOX", true),
        Err(Error::Corrupt { .. })
    ));
    // A list just under the limit is read; a SUBSCRIBE past it is refused
    // and leaves the file as it was.
    let limit = mailstore::subscriptions::MAX_SUBSCRIPTIONS_BYTES as usize;
    let mut text = String::new();
    let mut i = 0;
    while text.len() + 1100 < limit {
        text.push_str(&format!("{}{i}\n", "x".repeat(1000)));
        i += 1;
    }
    std::fs::write(&subs, &text).unwrap();
    assert_eq!(store.subscriptions(&user()).unwrap().len(), i);
    match store.set_subscribed(&user(), &"y".repeat(2000), true) {
        Err(Error::TooLarge { limit: l, .. }) => assert_eq!(l as usize, limit),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(std::fs::read_to_string(&subs).unwrap(), text);
    assert!(
        std::fs::metadata(&subs).unwrap().len()
            <= mailstore::subscriptions::MAX_SUBSCRIPTIONS_BYTES
    );
    assert!(store.subscriptions(&user()).is_ok());

    // A MOVE journal above its limit is not read: the pending flag it
    // would explain is cleared, the messages stay where they are.
    craft(&dir, |h| h.flags |= mailstore::format::HF_MOVE_OUT);
    let journal = dir.join(mailstore::transfer::JOURNAL_NAME);
    sparse(&journal, mailstore::transfer::MAX_JOURNAL_BYTES + 1);
    let mut mb = open(&store);
    let h = mb.header().unwrap();
    assert!(!h.has_pending_move());
    assert_eq!(mb.snapshot().unwrap().records.len(), 2);

    // .uidvalidity at u32::MAX: no new mailbox may reuse it.
    let uv = user_dir.join(".uidvalidity");
    std::fs::write(&uv, u32::MAX.to_le_bytes()).unwrap();
    let other = MailboxName::new("Other").unwrap();
    assert!(matches!(
        store.create_mailbox(&user(), &other),
        Err(Error::Corrupt { .. })
    ));
    assert!(store.open_mailbox(&user(), &other).is_err());
    assert_eq!(std::fs::read(&uv).unwrap(), u32::MAX.to_le_bytes());
}

/// `idx-admin reconstruct` salvages what it can of a header, then adds
/// one to its generation: a counter no writer can reach is not salvaged
/// (it overflowed: a panic, or in release a generation 0 written).
#[test]
fn reconstruct_skips_counters_beyond_the_limit() {
    for c in cases().into_iter().filter(|c| c.counter.is_some()) {
        let tmp = tempfile::tempdir().unwrap();
        let (store, dir) = fixture(&tmp.path().join("spool"), c.messages);
        let before = open(&store).snapshot().unwrap();
        craft(&dir, |h| c.apply(h));
        let out =
            mailstore::recovery::reconstruct(&dir, Durability::Relaxed, Duration::from_secs(5))
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert!(
            out.header.generation < mailstore::format::MAX_COUNTER,
            "{}",
            c.name
        );
        let rep = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
        assert!(rep.is_clean(), "{}: {:?}", c.name, rep.findings);
        let after = open(&store).snapshot().unwrap();
        assert_eq!(after.records.len(), before.records.len(), "{}", c.name);
    }
}
