//! The change log `.changes` (docs/FORMAT.md §2a, PROTOCOL.md §4b): a
//! view kept up to date through `Mailbox::changes_since` (which follows
//! the log where it can) equals a fresh full read after any sequence of
//! stores, expunges, group commits, appends, repacks and log damage from
//! several handles; and the log answers the common case.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use mailstore::format::Flags;
use mailstore::internals::changelog::CHANGES_NAME;
use mailstore::mailbox::{BatchOp, BatchOutcome, FlagOp, ViewMark};
use mailstore::{
    AppendOptions, Durability, Mailbox, MailboxName, Options, Record, Store, UserName,
};
use proptest::prelude::*;

fn store_at(spool: &std::path::Path) -> Store {
    Store::open(
        spool,
        Options {
            durability: Durability::Relaxed,
            lock_timeout: Duration::from_secs(10),
        },
    )
    .unwrap()
}

fn user() -> UserName {
    UserName::new("log").unwrap()
}

fn open(s: &Store) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::inbox()).unwrap()
}

fn append(m: &mut Mailbox, n: usize) {
    for i in 0..n {
        m.append(
            format!("Subject: {i}\r\n\r\nbody\r\n").as_bytes(),
            AppendOptions::default(),
        )
        .unwrap();
    }
}

/// A reader: its handle, its mark and what it knows, by UID.
struct Reader {
    m: Mailbox,
    mark: ViewMark,
    view: BTreeMap<u32, Record>,
}

impl Reader {
    fn new(s: &Store) -> Reader {
        let mut m = open(s);
        let snap = m.snapshot().unwrap();
        Reader {
            m,
            mark: snap.mark,
            view: snap.records.into_iter().map(|r| (r.uid, r)).collect(),
        }
    }

    /// One check; returns whether the log answered it.
    fn check(&mut self) -> bool {
        let Some(ch) = self.m.changes_since(&self.mark).unwrap() else {
            return false;
        };
        if ch.full {
            self.view.clear();
        }
        self.mark = self.m.mark_of(&ch.header);
        let from_log = ch.from_log;
        self.view.extend(ch.records.into_iter().map(|r| (r.uid, r)));
        from_log
    }

    /// What a fresh full read gives; its header's counters must be those
    /// of its records, whether the commits counted by delta or not.
    fn truth(&mut self) -> Vec<Record> {
        let snap = self.m.snapshot().unwrap();
        let mut counted = snap.header.clone();
        counted.recount(&snap.records);
        assert_eq!(counted, snap.header, "header counters");
        snap.records
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    Store {
        by: usize,
        uids: Vec<u32>,
        op: FlagOp,
        flag: u8,
    },
    Expunge {
        by: usize,
        uids: Vec<u32>,
    },
    Batch {
        by: usize,
        uids: Vec<u32>,
    },
    Repack(usize),
    Check(usize),
    /// Cut the log's last `n` bytes (a torn tail) or flip a byte.
    Damage {
        cut: bool,
        n: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let uids = prop::collection::vec(1u32..230, 1..5);
    prop_oneof![
        2 => (1usize..4).prop_map(Op::Append),
        5 => (0usize..3, uids.clone(), prop_oneof![Just(FlagOp::Add), Just(FlagOp::Remove), Just(FlagOp::Replace)], 0u8..5)
            .prop_map(|(by, uids, op, flag)| Op::Store { by, uids, op, flag }),
        2 => (0usize..3, uids.clone()).prop_map(|(by, uids)| Op::Expunge { by, uids }),
        2 => (0usize..3, uids).prop_map(|(by, uids)| Op::Batch { by, uids }),
        1 => (0usize..3).prop_map(Op::Repack),
        6 => (0usize..3).prop_map(Op::Check),
        1 => (any::<bool>(), 1usize..80).prop_map(|(cut, n)| Op::Damage { cut, n }),
    ]
}

fn flag(i: u8) -> Flags {
    [
        Flags::SEEN,
        Flags::FLAGGED,
        Flags::DELETED,
        Flags::ANSWERED,
        Flags::DRAFT,
    ][i as usize % 5]
}

fn setup() -> (tempfile::TempDir, Store, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let s = store_at(&spool);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let dir = s.mailbox_path(&user(), &MailboxName::inbox());
    (tmp, s, dir)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// PROTOCOL.md §4b, §7: whatever happens, a reader's view kept up to
    /// date through the log equals a fresh full read after every check.
    #[test]
    fn view_through_the_log_equals_a_full_read(ops in prop::collection::vec(op(), 1..60)) {
        let (_tmp, s, dir) = setup();
        let mut writer = open(&s);
        // Enough records that a commit of a few UIDs finds them by
        // binary search (mailbox/locate.rs) rather than a full read.
        append(&mut writer, 200);
        let mut readers: Vec<Reader> = (0..3).map(|_| Reader::new(&s)).collect();
        for op in ops {
            match op {
                Op::Append(n) => append(&mut writer, n),
                Op::Store { by, uids, op, flag: f } => {
                    readers[by].m.store(&uids, op, flag(f), &[], None).unwrap();
                }
                Op::Expunge { by, uids } => {
                    readers[by].m.expunge(Some(&uids), false).unwrap();
                }
                Op::Batch { by, uids } => {
                    readers[by].m.write_batch(|| vec![
                        BatchOp::Store { uids: uids.clone(), op: FlagOp::Add, flags: Flags::DELETED, unchanged_since: None },
                        BatchOp::Store { uids: uids.clone(), op: FlagOp::Add, flags: Flags::SEEN, unchanged_since: None },
                        BatchOp::Expunge { uids: Some(uids[..1].to_vec()), require_deleted: true, hint: Vec::new() },
                    ]).unwrap();
                    // EXPUNGE with a hint that may fall short of every
                    // \Deleted message (other stores set some): the store
                    // must then read every record.
                    let hint = uids[1..].to_vec();
                    let expected: Vec<u32> = {
                        let snap = readers[by].m.snapshot().unwrap();
                        snap.records.iter().filter(|r| !r.is_expunged() && r.flags.contains(Flags::DELETED)).map(|r| r.uid).collect()
                    };
                    let out = readers[by].m.write_batch(|| vec![
                        BatchOp::Expunge { uids: None, require_deleted: true, hint },
                    ]).unwrap();
                    let gone = match &out[0] { BatchOutcome::Expunge { gone, .. } => gone.clone(), _ => unreachable!() };
                    prop_assert_eq!(gone, expected);
                }
                Op::Repack(by) => {
                    readers[by].m.repack().unwrap();
                }
                Op::Check(i) => {
                    let r = &mut readers[i];
                    r.check();
                    let truth = r.truth();
                    prop_assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), truth);
                }
                Op::Damage { cut, n } => {
                    let p = dir.join(CHANGES_NAME);
                    if let Ok(mut b) = std::fs::read(&p) && !b.is_empty() {
                        if cut {
                            b.truncate(b.len().saturating_sub(n));
                        } else {
                            let i = b.len() - 1 - n % b.len();
                            b[i] ^= 0x5a;
                        }
                        std::fs::write(&p, b).unwrap();
                    }
                }
            }
        }
        for r in &mut readers {
            r.check();
            let truth = r.truth();
            prop_assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), truth);
        }
    }
}

/// A mailbox of `n` messages, a writer handle, a reader that looked, and
/// then the writer's STORE +\Seen of `seen`.
fn writer_and_reader(n: usize, seen: &[u32]) -> (tempfile::TempDir, PathBuf, Mailbox, Reader) {
    let (tmp, s, dir) = setup();
    let mut writer = open(&s);
    append(&mut writer, n);
    let r = Reader::new(&s);
    writer
        .store(seen, FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    (tmp, dir, writer, r)
}

/// PROTOCOL.md §4b: after a one-flag STORE and after a one-message
/// EXPUNGE by another handle, a reader's check is answered from the log
/// and names only the changed record; after appends and in-place changes
/// mixed, it names those plus the appended ones.
#[test]
fn the_log_answers_checks_after_stores_and_expunges() {
    let (_tmp, _dir, mut writer, mut r) = writer_and_reader(50, &[17]);
    let ch = r.m.changes_since(&r.mark).unwrap().unwrap();
    assert!(ch.from_log);
    assert_eq!(
        ch.records.iter().map(|r| r.uid).collect::<Vec<_>>(),
        vec![17]
    );
    assert!(r.check());
    writer.expunge(Some(&[3]), false).unwrap();
    append(&mut writer, 2);
    writer
        .store(&[40, 51], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let ch = r.m.changes_since(&r.mark).unwrap().unwrap();
    assert!(ch.from_log);
    assert_eq!(
        ch.records.iter().map(|r| r.uid).collect::<Vec<_>>(),
        vec![3, 40, 51, 52]
    );
    assert!(r.check());
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
}

/// FORMAT.md §2a: damage to the log is a warning of `verify` with its
/// offset, and the next check falls back to a full read; `recover`
/// removes the log.
#[test]
fn damaged_log_is_a_warning_and_recover_resets_it() {
    let (_tmp, dir, mut writer, mut r) = writer_and_reader(10, &[2]);
    writer
        .store(&[4], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let p = dir.join(CHANGES_NAME);
    let mut b = std::fs::read(&p).unwrap();
    b[2] ^= 1; // the first block's MODSEQ: its CRC fails
    std::fs::write(&p, &b).unwrap();
    let report = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert!(report.is_clean(), "{:?}", report.findings);
    let w: Vec<_> = report.warnings().collect();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].offset, Some(0));
    // The reader needs the damaged block: full read, right answer.
    assert!(!r.check());
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
    writer.recover().unwrap();
    assert!(!p.exists());
    let report = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// Bytes this thread has read so far (`rchar` of /proc/thread-self/io).
fn bytes_read() -> u64 {
    let io = std::fs::read_to_string("/proc/thread-self/io").unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// PROTOCOL.md §4 ("Which records are read"): once the header was
/// recounted in this boot, a STORE, a UID EXPUNGE and a group commit of a
/// few UIDs in a big mailbox read only a few records (binary search), not
/// the index, and keep the header's counters exact by delta; the other
/// session's check reads only the log's records.
#[test]
fn commits_of_few_uids_read_few_records() {
    let (_tmp, s, _dir) = setup();
    let mut writer = open(&s);
    append(&mut writer, 4000);
    let index_bytes = 4000 * 128;
    // The first in-place commit of this boot recounts (reads all).
    writer
        .store(&[1], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let mut r = Reader::new(&s);
    let before = bytes_read();
    let out = writer
        .store(&[1234, 3999, 5000], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    assert_eq!(out.changed.len(), 2);
    assert_eq!(out.missing, vec![5000]);
    assert_eq!(writer.expunge(Some(&[77]), false).unwrap(), vec![77]);
    writer
        .write_batch(|| {
            vec![
                BatchOp::Store {
                    uids: vec![500],
                    op: FlagOp::Add,
                    flags: Flags::DELETED,
                    unchanged_since: None,
                },
                BatchOp::Expunge {
                    uids: None,
                    require_deleted: true,
                    hint: vec![500],
                },
            ]
        })
        .unwrap();
    assert!(r.check());
    let read = bytes_read() - before;
    assert!(
        read < index_bytes / 8,
        "read {read} bytes for three commits and a check of a {index_bytes}-byte index"
    );
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
    assert!(!r.view.contains_key(&77) || r.view[&77].is_expunged());
    assert!(r.view[&500].is_expunged());
}

/// PROTOCOL.md §4 ("Which records are read"): the recount of a commit
/// that changes nothing (a flag already set) still stamps the index when
/// the header counted right, so the next commit of the boot reads a few
/// records, not the index again.
#[test]
fn a_recount_that_changes_nothing_stamps_the_index() {
    let (_tmp, s, dir) = setup();
    let mut writer = open(&s);
    append(&mut writer, 4000);
    // A new index carries its boot's count stamp; without it (as after a
    // reboot) the first in-place commit recounts.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(".index"))
            .unwrap();
        f.write_all_at(&[0u8; 20], mailstore::internals::index::COUNT_STAMP_OFFSET)
            .unwrap();
    }
    let mut writer = open(&s);
    let index_bytes = 4000 * 128;
    // No message is \Flagged: nothing to change, but every record counted.
    let before = bytes_read();
    let out = writer
        .store(&[10], FlagOp::Remove, Flags::FLAGGED, &[], None)
        .unwrap();
    assert!(out.changed.is_empty());
    assert!(
        bytes_read() - before >= index_bytes,
        "the first commit recounts"
    );
    let before = bytes_read();
    writer
        .store(&[20], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let read = bytes_read() - before;
    assert!(read < index_bytes / 8, "read {read} bytes after the stamp");
    let mut r = Reader::new(&s);
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
}

/// RFC 3501 7.4.1 through a view of several chunks (session/entries.rs):
/// expunges in different chunks go out highest sequence number first,
/// each number as the client knows it at that point, and the view then
/// equals a freshly opened one; flag changes come out at the right
/// sequence numbers.
#[test]
fn view_over_many_chunks_matches_a_fresh_view() {
    use mailstore::session::{Allow, SessionView, Update};
    let (_tmp, s, _dir) = setup();
    let mut writer = open(&s);
    append(&mut writer, 3000);
    let mut m = open(&s);
    let mut view = SessionView::open(&mut m).unwrap();
    writer.expunge(Some(&[5, 1500, 2999]), false).unwrap();
    writer
        .store(&[2500], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let ups = view.check(&mut m, Allow::AllUpdates).unwrap();
    let expunges: Vec<u32> = ups
        .iter()
        .filter_map(|u| match u {
            Update::Expunge(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(expunges, vec![2999, 1500, 5]);
    let fetched: Vec<(u32, u32)> = ups
        .iter()
        .filter_map(|u| match u {
            Update::Fetch { seq, uid, .. } => Some((*seq, *uid)),
            _ => None,
        })
        .collect();
    assert_eq!(fetched, vec![(2498, 2500)]);
    let fresh = SessionView::open(&mut open(&s)).unwrap();
    assert_eq!(view.len(), 2997);
    assert!(
        view.iter()
            .map(|m| (m.seq, m.uid, m.record.clone()))
            .eq(fresh.iter().map(|m| (m.seq, m.uid, m.record.clone())))
    );
    assert_eq!(view.seq(2998), Some(2996));
    assert_eq!(view.uid(1024), Some(1025));
}

/// FORMAT.md §1, §2a: a mailbox deleted while it has children keeps its
/// directory; its change log goes with its index, so a mailbox created
/// there later never finds blocks about the old one.
#[test]
fn delete_in_place_and_create_leave_no_old_log() {
    let (_tmp, s, _dir) = setup();
    let a = MailboxName::new("A").unwrap();
    s.create_mailbox(&user(), &a).unwrap();
    s.create_mailbox(&user(), &MailboxName::new("A/B").unwrap())
        .unwrap();
    let path = s.mailbox_path(&user(), &a);
    {
        let mut m = s.open_mailbox(&user(), &a).unwrap();
        append(&mut m, 3);
        m.store(&[2], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    }
    assert!(path.join(CHANGES_NAME).exists());
    s.delete_mailbox(&user(), &a).unwrap();
    assert!(path.is_dir(), "kept for its child");
    assert!(!path.join(CHANGES_NAME).exists());
    // A log planted in the directory (as an older binary's delete would
    // have left it) is dropped by the create.
    std::fs::write(path.join(CHANGES_NAME), b"stale").unwrap();
    s.create_mailbox(&user(), &a).unwrap();
    assert!(!path.join(CHANGES_NAME).exists());
}

/// PROTOCOL.md §4b (2): a writer that does not know the log (an older
/// binary, here an index handle without its mailbox directory) commits
/// an in-place change without a block. The reader's walk finds a gap and
/// reads every record: it still sees the change.
#[test]
fn a_writer_that_does_not_log_leaves_a_gap_and_readers_fall_back() {
    use mailstore::internals::index::IndexFile;
    let (_tmp, dir, mut writer, mut r) = writer_and_reader(50, &[3]);
    assert!(r.check());
    // The older writer, under the exclusive lock like any writer.
    writer
        .with_exclusive(|h| {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(".index"))
                .unwrap();
            let old = IndexFile::new(file, dir.join(".index"));
            let mut rec = old.read_records(9, 10).unwrap().pop().unwrap();
            rec.flags = rec.flags.union(Flags::FLAGGED);
            rec.modseq = h.highestmodseq + 1;
            old.write_record(9, &rec).unwrap();
            let mut new = h.clone();
            new.generation += 1;
            new.highestmodseq = rec.modseq;
            new.flagged += 1;
            old.write_header(&new).unwrap();
            Ok(())
        })
        .unwrap();
    let ch = r.m.changes_since(&r.mark).unwrap().unwrap();
    assert!(!ch.from_log, "no block for that commit: full read");
    assert!(!r.check());
    assert!(r.view[&10].flags.contains(Flags::FLAGGED));
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
    // The next logging commit chains from the unlogged one: a reader
    // that saw that one is answered from the log again.
    writer
        .store(&[20], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    assert!(r.check());
    assert_eq!(r.view.values().cloned().collect::<Vec<_>>(), r.truth());
}

/// PROTOCOL.md §4 ("Which records are read"): the search by UID narrows
/// its range by the UIDs around it (UIDs ascend strictly with the record
/// number), and still finds every record a full read would, whatever the
/// gaps a repack left: each UID up to past the last, in a mailbox with
/// runs, single holes and a long hole, is found exactly when it exists.
#[test]
fn the_search_by_uid_finds_exactly_the_records_among_gaps() {
    let (_tmp, s, _dir) = setup();
    let mut m = open(&s);
    append(&mut m, 600);
    let gone: Vec<u32> = (1..=600u32)
        .filter(|u| u % 7 == 0 || (200..=390).contains(u) || *u == 1 || *u == 600)
        .collect();
    m.expunge(Some(&gone), false).unwrap();
    m.repack().unwrap();
    append(&mut m, 5);
    // The first in-place commit after the repack recounts (a full read);
    // every later one searches.
    m.store(&[2], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    let live: std::collections::BTreeSet<u32> =
        m.snapshot().unwrap().live_uids().into_iter().collect();
    let last = m.header().unwrap().last_uid;
    for uid in 1..=last + 3 {
        let out = m
            .store(&[uid], FlagOp::Add, Flags::FLAGGED, &[], None)
            .unwrap();
        let found = out.changed.iter().any(|r| r.uid == uid) || !out.missing.contains(&uid);
        assert_eq!(found, live.contains(&uid), "UID {uid}: {out:?}");
    }
    // Several at once, across the holes.
    let some: Vec<u32> = (1..=last).step_by(13).collect();
    let out = m
        .store(&some, FlagOp::Remove, Flags::FLAGGED, &[], None)
        .unwrap();
    let changed: Vec<u32> = out.changed.iter().map(|r| r.uid).collect();
    let want: Vec<u32> = some.iter().copied().filter(|u| live.contains(u)).collect();
    assert_eq!(changed, want);
}
