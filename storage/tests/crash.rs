//! Crash tests: a child process (this test binary, re-executed) runs one
//! write operation with `MAILSTORE_TEST_FAULT=<point>=kill` and SIGKILLs
//! itself at that step of the write ordering. The parent then reopens the
//! mailbox and proves the invariants. A second test injects `=error` at
//! each point and checks what the failed operation left behind.
//!
//! What the code guarantees after a kill (asserted below):
//! - append: the message is committed exactly when the header reached the
//!   file (points `append.after_header*`); before that there is no record,
//!   the header is byte-identical, and any placed `UID.` file is above
//!   `last_uid` (debris that `recover` removes and nothing ever serves).
//! - store / expunge: records are rewritten in place before the header. A
//!   kill between the two leaves each record either old or new (records
//!   are single 128-byte writes with their own CRC) under the old header:
//!   the generation did not move, so no session is told about them, and
//!   the header counts may disagree with the records. The next store,
//!   expunge, repack or `recover` recounts and commits them with a new
//!   generation; sessions then see the records whose MODSEQ is above
//!   their mark. A kill after the header write is a complete commit.
//! - repack: the mailbox shows either the old index or the new one, and a
//!   session still holding the old file finds the new one.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailstore::format::{Flags, Header};
use mailstore::internals::fault::{self, POINTS, RARE_POINTS};
use mailstore::mailbox::{BatchOp, FlagOp, Mailbox};
use mailstore::{AppendOptions, Durability, Error, MailboxName, Options, Store, UserName};

const ROLE: &str = "MAILSTORE_CRASH_ROLE";
const SPOOL: &str = "MAILSTORE_CRASH_SPOOL";
const CHILD: &str = "crash_child";
/// `import_append` commits its message at `last_uid + IMPORT_GAP` and
/// leaves UIDNEXT at `last_uid + IMPORT_NEXT`.
const IMPORT_GAP: u32 = 5;
const IMPORT_NEXT: u32 = 10;
const NEW_MESSAGE: &[u8] =
    b"From: crash@test\r\nSubject: interrupted\r\n\r\nthe interrupted message\r\n";

fn user() -> UserName {
    UserName::new("crash").unwrap()
}

fn store_at(spool: &Path, durability: Durability) -> Store {
    let opts = Options {
        durability,
        lock_timeout: Duration::from_secs(10),
    };
    Store::open(spool, opts).unwrap()
}

fn open(s: &Store) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::inbox()).unwrap()
}

fn prefill_message(i: u32) -> Vec<u8> {
    format!("From: prefill@test\r\nSubject: {i}\r\n\r\nbody {i}\r\n").into_bytes()
}

/// Six messages; 2 and 3 \Deleted, 2 already expunged (so repack has work
/// and expunge has work), 5 \Seen. For `append_growing*`, then as many
/// more as still fit in the index file, so that the next append grows it.
fn prefill(spool: &Path, op: &str) {
    let s = store_at(spool, Durability::Relaxed);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mut m = open(&s);
    for i in 1..=6 {
        let flags = match i {
            2 | 3 => Flags::DELETED,
            5 => Flags::SEEN,
            _ => Flags::empty(),
        };
        let opts = AppendOptions {
            flags,
            keywords: vec!["Old".into()],
            ..Default::default()
        };
        assert_eq!(m.append(&prefill_message(i)[..], opts).unwrap(), i);
    }
    assert_eq!(m.expunge(Some(&[2]), true).unwrap(), vec![2]);
    if op == "store_rotating" {
        fill_change_log(&mailbox_dir(spool));
    }
    if op.starts_with("append_growing") {
        let index = mailbox_dir(spool).join(".index");
        let len = std::fs::metadata(&index).unwrap().len();
        for i in 7.. {
            let h = m.header().unwrap();
            if Header::record_offset(h.num_records + 1) > len {
                break;
            }
            m.append(&prefill_message(i)[..], AppendOptions::default())
                .unwrap();
        }
        assert_eq!(std::fs::metadata(&index).unwrap().len(), len);
    }
}

/// A change log just below its rotation bound, of blocks older than any
/// commit to come (what a long-lived mailbox accumulates).
fn fill_change_log(dir: &Path) {
    use mailstore::internals::changelog::{Block, CHANGES_NAME, ROTATE_AT};
    let one = Block {
        modseq: 1,
        prev: 0,
        generation: 1,
        slots: vec![0],
    }
    .encode();
    let n = (ROTATE_AT as usize - 16) / one.len();
    std::fs::write(dir.join(CHANGES_NAME), one.repeat(n)).unwrap();
}

/// The operation a child runs for `op`.
fn run_op(m: &mut Mailbox, op: &str) -> mailstore::Result<()> {
    match op {
        "append" | "append_ordered" | "append_growing" | "append_growing_ordered" => {
            m.set_unordered_appends(!op.ends_with("_ordered"));
            let opts = AppendOptions {
                flags: Flags::FLAGGED,
                keywords: vec!["NewKw".into()],
                ..Default::default()
            };
            m.append(NEW_MESSAGE, opts).map(|_| ())
        }
        // An import keeping a source's UIDs (PROTOCOL.md §3a): UID
        // last_uid + 5 (a gap), UIDNEXT raised to last_uid + 10.
        "import_append" => {
            let last = m.header()?.last_uid;
            let opts = AppendOptions {
                flags: Flags::FLAGGED,
                keywords: vec!["NewKw".into()],
                ..Default::default()
            };
            let staged = m.stage(NEW_MESSAGE, opts)?;
            m.commit_with_uids(vec![staged], &[last + IMPORT_GAP], Some(last + IMPORT_NEXT))
                .map(|_| ())
        }
        // A batch import (PROTOCOL.md §3a, batch durability): three
        // messages staged unflushed, one syncfs, then the commit under
        // last_uid + 5, + 6, + 7, UIDNEXT last_uid + 10.
        "import_batch" => {
            let last = m.header()?.last_uid;
            let mut staged = Vec::new();
            for _ in 0..3 {
                let opts = AppendOptions {
                    flags: Flags::FLAGGED,
                    keywords: vec!["NewKw".into()],
                    ..Default::default()
                };
                staged.push(m.stage_for_batch(NEW_MESSAGE, opts)?);
            }
            let uids: Vec<u32> = (0..3).map(|i| last + IMPORT_GAP + i).collect();
            m.commit_with_uids(staged, &uids, Some(last + IMPORT_NEXT))
                .map(|_| ())
        }
        "import_reserve" => {
            let last = m.header()?.last_uid;
            m.reserve_uids(last + IMPORT_NEXT).map(|_| ())
        }
        "store" | "store_rotating" => m
            .store(
                &[1, 3, 4, 5, 6],
                FlagOp::Add,
                Flags::SEEN.union(Flags::FLAGGED),
                &["StoreKw".into()],
                None,
            )
            .map(|_| ()),
        // A re-run of an import setting the source's flags (§3a).
        "import_flags" => {
            let set = Flags::SEEN.union(Flags::FLAGGED);
            let changes: Vec<(u32, Flags, Vec<String>)> = [1, 3, 4, 5, 6]
                .iter()
                .map(|&u| (u, set, vec!["StoreKw".to_string()]))
                .collect();
            m.set_flags_exactly(&changes).map(|_| ())
        }
        "expunge" => m.expunge(None, true).map(|_| ()),
        // A group commit (PROTOCOL.md §4a): a flag change, then an
        // expunge of the \Deleted messages, one flush.
        "batch" => m
            .write_batch(|| {
                vec![
                    BatchOp::Store {
                        uids: vec![1, 3, 4, 5, 6],
                        op: FlagOp::Add,
                        flags: Flags::SEEN.union(Flags::FLAGGED),
                        unchanged_since: None,
                    },
                    BatchOp::Expunge {
                        uids: None,
                        require_deleted: true,
                        hint: Vec::new(),
                    },
                ]
            })
            .map(|_| ()),
        "repack" => m.repack().map(|_| ()),
        // The prefill's appends left their staged names (no settle below
        // 64 UIDs); recovery settles them.
        "settle" => m.recover().map(|_| ()),
        other => panic!("unknown op {other}"),
    }
}

/// The operations that pass through `point`. A new fault point must be
/// assigned here, so it cannot go untested.
fn ops_for(point: &str) -> &'static [&'static str] {
    if point == "append.after_grow" {
        // Only an append that grows the index file passes through it.
        return &["append_growing", "append_growing_ordered"];
    }
    match point.split('.').next().unwrap() {
        // Only an unordered append writes the index out without a sync.
        "append" if point == "append.after_header_write_out" => &["append"],
        "append" => &["append", "append_ordered", "import_append", "import_batch"],
        "import" if point.starts_with("import.after_batch") => &["import_batch"],
        "import" => &["import_reserve"],
        "store" => &["store", "import_flags"],
        "expunge" => &["expunge"],
        // Every in-place commit logs its slots (PROTOCOL.md §4b); only a
        // log at its size bound rotates.
        "changes" if point == "changes.after_rotate" => &["store_rotating"],
        "changes" => &["store", "expunge", "import_flags", "batch"],
        "batch" => &["batch"],
        "repack" => &["repack"],
        "meta" => &["append", "store", "import_flags"],
        "settle" => &["settle"],
        // COPY and MOVE span two mailboxes; tests/transfer_crash.rs kills
        // them at each of their points.
        "copy" | "move" => &[],
        _ => panic!("fault point {point} is not covered by the crash test"),
    }
}

/// Child side: a no-op unless the parent set the role.
#[test]
fn crash_child() {
    let Ok(op) = std::env::var(ROLE) else { return };
    let spool = PathBuf::from(std::env::var(SPOOL).unwrap());
    let s = store_at(&spool, Durability::Full);
    let mut m = open(&s);
    match run_op(&mut m, &op) {
        Ok(()) => println!("CHILD-RESULT ok"),
        Err(Error::InjectedFault(p)) => println!("CHILD-RESULT injected {p}"),
        Err(e) => println!("CHILD-RESULT error {e}"),
    }
}

fn spawn_child(spool: &Path, op: &str, fault_spec: &str) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", CHILD, "--nocapture", "--test-threads=1"])
        .env(ROLE, op)
        .env(SPOOL, spool)
        .env(fault::ENV, fault_spec)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {op} with {fault_spec} did not finish in 60 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    (status, out)
}

fn mailbox_dir(spool: &Path) -> PathBuf {
    store_at(spool, Durability::Relaxed).mailbox_path(&user(), &MailboxName::inbox())
}

/// Every regular file under the mailbox directory with its bytes.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// UIDs of the `UID.` files, in numeric order.
fn message_uids(files: &BTreeMap<String, Vec<u8>>) -> Vec<u32> {
    let mut uids: Vec<u32> = files
        .keys()
        .filter_map(|n| mailstore::mailbox::parse_message_file_name(n.as_bytes()))
        .collect();
    uids.sort_unstable();
    uids
}

/// Checks that hold after any crash, before and after recovery.
/// `UID.` files at or below last_uid without a record are allowed only
/// when `orphans_ok` (a repack killed between its rename and its unlinks:
/// unreferenced, never served, removed by `recover`).
fn check_consistent(
    m: &mut Mailbox,
    dir: &Path,
    ctx: &str,
    orphans_ok: bool,
) -> mailstore::mailbox::Snapshot {
    let snap = m
        .snapshot()
        .unwrap_or_else(|e| panic!("{ctx}: snapshot failed: {e}"));
    for r in &snap.records {
        let bytes = m
            .read_message(r.uid)
            .unwrap_or_else(|e| panic!("{ctx}: record {} without a readable file: {e}", r.uid));
        assert_eq!(bytes.len() as u64, r.size, "{ctx}: UID {} size", r.uid);
        assert_eq!(
            crc32fast::hash(&bytes),
            r.message_crc,
            "{ctx}: UID {} CRC",
            r.uid
        );
        for k in r.keywords.iter() {
            assert!(
                k < snap.meta.keywords.len(),
                "{ctx}: UID {} keyword bit {k} has no name",
                r.uid
            );
        }
    }
    let before_new = files(dir);
    for uid in message_uids(&before_new) {
        if uid <= snap.header.last_uid && !orphans_ok {
            assert!(
                snap.records.iter().any(|r| r.uid == uid),
                "{ctx}: {uid}. is at or below last_uid but has no record"
            );
        }
    }
    snap
}

fn counts_match(h: &Header, snap: &mailstore::mailbox::Snapshot) -> bool {
    let live: Vec<_> = snap.records.iter().filter(|r| !r.is_expunged()).collect();
    let n = |f: Flags| live.iter().filter(|r| r.flags.contains(f)).count() as u32;
    h.exists == live.len() as u32
        && h.num_records == snap.records.len() as u32
        && h.seen == n(Flags::SEEN)
        && h.deleted == n(Flags::DELETED)
        && h.flagged == n(Flags::FLAGGED)
        && h.total_bytes == live.iter().map(|r| r.size).sum::<u64>()
        && snap.records.iter().all(|r| r.modseq <= h.highestmodseq)
}

fn crash_one(point: &str, op: &str) {
    let ctx = format!("{op} killed at {point}");
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    prefill(&spool, op);
    let dir = mailbox_dir(&spool);
    let s = store_at(&spool, Durability::Full);
    // A session that stays open across the crash.
    let mut survivor = open(&s);
    let before = survivor.snapshot().unwrap();
    let before_files = files(&dir);

    let (status, out) = spawn_child(&spool, op, &format!("{point}=kill"));
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "{ctx}: child was not killed: {status:?} {out}"
    );
    if (op.starts_with("append") || op.starts_with("import"))
        && !point.starts_with("append.after_stage")
        && !point.starts_with("import.after_batch")
    {
        // Killed under the lock, ordered or not: the writer mark must be
        // left, so that the next locker syncs what the writer left (a
        // header readers count, a grown length) before building on it.
        let index = std::fs::read(dir.join(".index")).unwrap();
        assert_eq!(
            index[mailstore::internals::index::WRITER_MARK_OFFSET as usize],
            1,
            "{ctx}: no writer mark"
        );
    }

    let mut m = open(&s);
    let orphans_ok = matches!(point, "repack.after_rename" | "repack.after_unlink");
    let snap = check_consistent(&mut m, &dir, &ctx, orphans_ok);
    let h = snap.header.clone();
    let old = &before.header;
    let committed = h.generation > old.generation;
    match op {
        "append" | "append_ordered" | "append_growing" | "append_growing_ordered" => {
            let uid = old.last_uid + 1;
            let expect_committed = point.starts_with("append.after_header");
            assert_eq!(committed, expect_committed, "{ctx}: committed");
            if committed {
                assert_eq!(h.last_uid, uid, "{ctx}");
                assert_eq!(m.read_message(uid).unwrap(), NEW_MESSAGE, "{ctx}");
                let r = snap.records.last().unwrap();
                assert_eq!((r.uid, r.flags), (uid, Flags::FLAGGED), "{ctx}");
                assert!(counts_match(&h, &snap), "{ctx}: counts {h:?}");
            } else {
                assert_eq!(&h, old, "{ctx}: header changed without a commit");
                assert_eq!(
                    snap.records, before.records,
                    "{ctx}: records changed without a commit"
                );
            }
        }
        "import_append" | "import_reserve" | "import_batch" => {
            let expect_committed = if op != "import_reserve" {
                point.starts_with("append.after_header")
            } else {
                point.starts_with("import.after_reserve")
            };
            assert_eq!(committed, expect_committed, "{ctx}: committed");
            if committed {
                assert_eq!(h.last_uid, old.last_uid + IMPORT_NEXT - 1, "{ctx}");
                assert!(counts_match(&h, &snap), "{ctx}: counts {h:?}");
                if op == "import_append" {
                    let uid = old.last_uid + IMPORT_GAP;
                    assert_eq!(m.read_message(uid).unwrap(), NEW_MESSAGE, "{ctx}");
                    let r = snap.records.last().unwrap();
                    assert_eq!((r.uid, r.flags), (uid, Flags::FLAGGED), "{ctx}");
                } else if op == "import_batch" {
                    let news = &snap.records[before.records.len()..];
                    let uids: Vec<u32> = news.iter().map(|r| r.uid).collect();
                    let want: Vec<u32> = (0..3).map(|i| old.last_uid + IMPORT_GAP + i).collect();
                    assert_eq!(uids, want, "{ctx}");
                    for u in want {
                        assert_eq!(m.read_message(u).unwrap(), NEW_MESSAGE, "{ctx}");
                    }
                } else {
                    assert_eq!(snap.records, before.records, "{ctx}");
                }
            } else {
                assert_eq!(&h, old, "{ctx}: header changed without a commit");
                assert_eq!(
                    snap.records, before.records,
                    "{ctx}: records changed without a commit"
                );
            }
        }
        "store" | "store_rotating" | "expunge" | "import_flags" | "batch" => {
            let expect_committed = point.ends_with("after_header");
            // Killed between records and header: the dead writer's mark
            // makes the next locker (our open) recount and commit the
            // records it left, as one new generation.
            let repaired = !expect_committed
                && committed
                && h.generation == old.generation + 1
                && h.inplace_modseq == h.highestmodseq
                && snap.records != before.records;
            assert!(
                committed == expect_committed || repaired,
                "{ctx}: committed"
            );
            if committed {
                assert!(counts_match(&h, &snap), "{ctx}: counts {h:?}");
            } else {
                assert_eq!(&h, old, "{ctx}: header changed without a commit");
            }
            // Each record is either untouched or fully changed.
            for (a, b) in before.records.iter().zip(&snap.records) {
                assert_eq!(a.uid, b.uid, "{ctx}");
                if a != b && op == "batch" {
                    // The store's step at MODSEQ + 1, the expunge's
                    // (UID 3, \Deleted) at + 2; nothing half-changed.
                    let stored = b.modseq == old.highestmodseq + 1
                        && b.flags.contains(Flags::SEEN.union(Flags::FLAGGED))
                        && !b.is_expunged();
                    let expunged = b.modseq == old.highestmodseq + 2
                        && b.is_expunged()
                        && b.flags.contains(Flags::SEEN.union(Flags::FLAGGED));
                    assert!(
                        stored || expunged,
                        "{ctx}: UID {} half-changed: {b:?}",
                        a.uid
                    );
                } else if a != b {
                    assert!(
                        b.modseq == old.highestmodseq + 1,
                        "{ctx}: UID {} half-changed",
                        a.uid
                    );
                    if op != "expunge" {
                        // store, store_rotating, import_flags
                        assert!(b.flags.contains(Flags::SEEN.union(Flags::FLAGGED)), "{ctx}");
                    } else {
                        assert!(b.is_expunged(), "{ctx}");
                    }
                }
            }
        }
        "repack" => {
            let live: Vec<_> = before
                .records
                .iter()
                .filter(|r| !r.is_expunged())
                .cloned()
                .collect();
            assert!(
                snap.records == before.records || snap.records == live,
                "{ctx}: records are neither the old nor the new index"
            );
            assert!(counts_match(&h, &snap), "{ctx}: counts {h:?}");
        }
        "settle" => {
            assert_eq!(&h, old, "{ctx}: settling changed the header");
            assert_eq!(
                snap.records, before.records,
                "{ctx}: settling changed records"
            );
        }
        _ => unreachable!(),
    }

    // Recovery: debris gone, counts right, nothing above last_uid.
    m.recover().unwrap();
    let snap = check_consistent(&mut m, &dir, &format!("{ctx}, recovered"), false);
    let h = snap.header.clone();
    assert!(counts_match(&h, &snap), "{ctx}: counts after recover {h:?}");
    let now = files(&dir);
    assert!(
        !now.keys().any(|n| n.starts_with(".stage/")),
        "{ctx}: stage files left: {:?}",
        now.keys()
    );
    assert!(
        !now.keys().any(|n| n.starts_with(".index.")),
        "{ctx}: temporary index left: {:?}",
        now.keys()
    );
    let on_disk = message_uids(&now);
    let recorded: Vec<u32> = snap.records.iter().map(|r| r.uid).collect();
    assert_eq!(on_disk, recorded, "{ctx}: message files after recover");
    let report = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert!(
        report.findings.is_empty(),
        "{ctx}: verify: {:?}",
        report.findings
    );
    if op == "repack" {
        // A repack killed between its rename and its unlinks named the
        // files first: recovery finishes the unlinks, nothing is kept.
        assert!(
            report.quarantine.is_empty(),
            "{ctx}: quarantine {:?}",
            report.quarantine
        );
        assert!(!dir.join(".repack.unlink").exists(), "{ctx}");
    }

    // The surviving session converges to the index and keeps working.
    let mark = survivor.mark_of(&before.header);
    let mut view: BTreeMap<u32, mailstore::Record> =
        before.records.iter().map(|r| (r.uid, r.clone())).collect();
    if let Some(ch) = survivor.changes_since(&mark).unwrap() {
        if ch.full {
            view.clear();
        }
        view.extend(ch.records.into_iter().map(|r| (r.uid, r)));
    }
    assert_eq!(
        view.into_values().collect::<Vec<_>>(),
        snap.records,
        "{ctx}: survivor view"
    );

    // The next appends, from a fresh handle and from the survivor, get
    // the next UIDs and their own bytes.
    let u1 = m
        .append(
            &b"Subject: after 1\r\n\r\nx\r\n"[..],
            AppendOptions::default(),
        )
        .unwrap();
    let u2 = survivor
        .append(
            &b"Subject: after 2\r\n\r\ny\r\n"[..],
            AppendOptions::default(),
        )
        .unwrap();
    assert_eq!(
        (u1, u2),
        (h.last_uid + 1, h.last_uid + 2),
        "{ctx}: UIDs after the crash"
    );
    assert_eq!(
        m.read_message(u1).unwrap(),
        b"Subject: after 1\r\n\r\nx\r\n",
        "{ctx}"
    );
    assert_eq!(
        m.read_message(u2).unwrap(),
        b"Subject: after 2\r\n\r\ny\r\n",
        "{ctx}"
    );
    let report = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert!(
        report.findings.is_empty(),
        "{ctx}: verify at the end: {:?}",
        report.findings
    );
    log_answers_like_a_full_read(&mut m, &mut survivor, u1, u2, &ctx);
    let _ = before_files;
}

/// After the crash and its repair, the change log answers the survivor's
/// next check after a flag change and an expunge by another handle, and
/// the answer is what a full read gives (PROTOCOL.md §4b, §7).
fn log_answers_like_a_full_read(
    m: &mut Mailbox,
    survivor: &mut Mailbox,
    u1: u32,
    u2: u32,
    ctx: &str,
) {
    let start = survivor.snapshot().unwrap();
    m.store(&[u1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    assert_eq!(m.expunge(Some(&[u2]), false).unwrap(), vec![u2]);
    let ch = survivor.changes_since(&start.mark).unwrap().unwrap();
    assert!(ch.from_log && !ch.full, "{ctx}: the log did not answer");
    let mut view: BTreeMap<u32, mailstore::Record> =
        start.records.iter().map(|r| (r.uid, r.clone())).collect();
    let got: Vec<u32> = ch.records.iter().map(|r| r.uid).collect();
    assert_eq!(got, vec![u1, u2], "{ctx}: log-named records");
    view.extend(ch.records.into_iter().map(|r| (r.uid, r)));
    assert_eq!(
        view.into_values().collect::<Vec<_>>(),
        m.snapshot().unwrap().records,
        "{ctx}: view through the log"
    );
}

#[test]
fn kill_at_every_fault_point() {
    for point in POINTS.iter().chain(RARE_POINTS) {
        for op in ops_for(point) {
            crash_one(point, op);
        }
    }
}

/// `=error` at each point: the operation returns that error. Before the
/// header write the mailbox is exactly as before (same header slots and
/// records, same files); `.meta` may have gained the new keyword name,
/// unreferenced, which is allowed (the table is append-only), and the
/// index file may hold unreferenced bytes past its last record. A repack
/// failing after it marked the old index superseded is rolled back by the
/// next opener (logically as before, with a new generation). After the header write the
/// change is committed even though the call failed (the fsync that failed
/// cannot be taken back); the mailbox is then consistent.
#[test]
fn error_at_every_fault_point() {
    for point in POINTS.iter().chain(RARE_POINTS) {
        for op in ops_for(point) {
            let ctx = format!("{op} failing at {point}");
            let tmp = tempfile::tempdir().unwrap();
            let spool = tmp.path().join("spool");
            prefill(&spool, op);
            let dir = mailbox_dir(&spool);
            let before = files(&dir);
            let (status, out) = spawn_child(&spool, op, &format!("{point}=error"));
            assert!(status.success(), "{ctx}: {status:?}");
            assert!(
                out.contains(&format!("CHILD-RESULT injected {point}")),
                "{ctx}: {out}"
            );
            let after = files(&dir);
            let s = store_at(&spool, Durability::Full);
            let mut m = open(&s);
            let header_written = point.ends_with("after_header")
                || point.starts_with("import.after_reserve")
                || point.ends_with("after_header_write_out")
                || point.ends_with("after_header_fsync")
                || point.starts_with("repack.after_rename")
                || point.starts_with("repack.after_mark_superseded")
                || point.starts_with("repack.after_mark")
                || point.starts_with("repack.after_log_reset")
                || point.starts_with("repack.after_unlink");
            if header_written {
                let snap = check_consistent(&mut m, &dir, &ctx, true);
                assert!(counts_match(&snap.header, &snap), "{ctx}");
                continue;
            }
            let strip = |f: &BTreeMap<String, Vec<u8>>| {
                let mut f = f.clone();
                f.remove(".meta");
                // An accelerator a failed commit may empty (PROTOCOL.md §4b).
                f.remove(".changes");
                f
            };
            assert_eq!(
                strip(&after).keys().collect::<Vec<_>>(),
                strip(&before).keys().collect::<Vec<_>>(),
                "{ctx}: file names"
            );
            for (name, bytes) in strip(&before) {
                if name == ".index" {
                    // Records appended past num_records are not part of
                    // the mailbox: the next append overwrites them.
                    let h =
                        mailstore::format::Header::record_offset(m.header().unwrap().num_records);
                    assert!(
                        after[&name][..h as usize] == bytes[..h as usize],
                        "{ctx}: .index changed"
                    );
                    // Past them: zeros the file was grown by, or records
                    // of the failed append, which nothing counts.
                    assert!(after[&name].len() >= bytes.len(), "{ctx}: .index shrank");
                } else {
                    assert!(after[&name] == bytes, "{ctx}: {name} changed");
                }
            }
            let meta = String::from_utf8(after[".meta"].clone()).unwrap();
            let old_meta = String::from_utf8(before[".meta"].clone()).unwrap();
            let body = |s: &str| {
                s.lines()
                    .filter(|l| l.starts_with("keyword "))
                    .map(String::from)
                    .collect::<Vec<_>>()
            };
            assert!(
                body(&meta).starts_with(&body(&old_meta)),
                "{ctx}: .meta lost names"
            );
            check_consistent(&mut m, &dir, &ctx, false);
        }
    }
}
