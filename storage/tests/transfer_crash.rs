//! Kills COPY and MOVE at each of their fault points (real child
//! processes, SIGKILL) and checks, after reopening both mailboxes, that
//! every message is exactly where the completed-or-not operation puts it:
//! never lost, never in both mailboxes after a MOVE.
//!
//! The child is this test binary re-executed with `TRANSFER_CRASH_ROLE`
//! set, running only `transfer_crash_child`.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailstore::format::Flags;
use mailstore::internals::fault::{self, POINTS};
use mailstore::mailbox::{AppendOptions, Mailbox};
use mailstore::transfer;
use mailstore::{Error, MailboxName, Options, Store, UserName};

const ROLE: &str = "TRANSFER_CRASH_ROLE";
const SPOOL: &str = "TRANSFER_CRASH_SPOOL";
const MOVED: &[u32] = &[1, 3, 5];

fn user() -> UserName {
    UserName::new("crash").unwrap()
}

fn store_at(spool: &Path) -> Store {
    Store::open(spool, Options::default()).unwrap()
}

fn open(s: &Store, name: &str) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::new(name).unwrap())
        .unwrap()
}

fn msg(i: u32) -> Vec<u8> {
    format!("Message-ID: <c{i}@test>\r\n\r\nbody {i}\r\n").into_bytes()
}

/// Filler messages after A's five in the `_big` runs: enough that MOVE
/// and COPY read their few records one by one (`records_of`, single
/// reads below one UID per 32 records) rather than the whole index.
const PAD: u32 = 100;

/// The message number of A's `i`th filler (UID 5 + i).
fn filler(i: u32) -> u32 {
    1000 + i
}

/// Source "A" holds messages 1..=5 (UIDs 1..=5), then `pad` fillers
/// (UIDs 6..=5 + pad, no flags); "B" holds 101, 102.
fn prefill(spool: &Path, pad: u32) {
    let s = store_at(spool);
    for n in ["INBOX", "A", "B"] {
        s.create_mailbox(&user(), &MailboxName::new(n).unwrap())
            .unwrap();
    }
    let mut a = open(&s, "A");
    for i in 1..=5 {
        a.append(
            &msg(i)[..],
            AppendOptions {
                flags: if i % 2 == 1 {
                    Flags::SEEN
                } else {
                    Flags::empty()
                },
                keywords: vec![format!("kw{i}")],
                ..Default::default()
            },
        )
        .unwrap();
    }
    let staged = (1..=pad)
        .map(|i| {
            a.stage(&msg(filler(i))[..], AppendOptions::default())
                .unwrap()
        })
        .collect();
    a.commit(staged).unwrap();
    let mut b = open(&s, "B");
    for i in [101, 102] {
        b.append(&msg(i)[..], AppendOptions::default()).unwrap();
    }
}

/// Child side: a no-op unless the parent set the role.
#[test]
fn transfer_crash_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let s = store_at(&PathBuf::from(std::env::var(SPOOL).unwrap()));
    if let Some(from) = role.strip_prefix("move-from:") {
        // A source below a parent (`find_mailbox_after_a_parent_rename`).
        let mut src = open(&s, from);
        let mut b = open(&s, "B");
        let r = transfer::move_messages(&mut src, MOVED, &mut b, None);
        println!("CHILD-RESULT {:?}", r.map(|_| ()));
        return;
    }
    let mut a = open(&s, "A");
    let mut b = open(&s, "B");
    let r = match role.as_str() {
        "copy" => transfer::copy(&mut a, MOVED, &mut b, None),
        "move" => transfer::move_messages(&mut a, MOVED, &mut b, None),
        // RFC 6851 3.3: a move within A (two handles of one mailbox).
        "move-within" => {
            let mut a2 = open(&s, "A");
            transfer::move_messages(&mut a, MOVED, &mut a2, None)
        }
        "read-a" => a.snapshot().map(|_| Default::default()),
        // Only look: a reader that may have to settle a pending move.
        "read-b" => b.snapshot().map(|_| Default::default()),

        r => panic!("unknown role {r}"),
    };
    match r {
        Ok(_) => println!("CHILD-RESULT ok"),
        Err(Error::InjectedFault(p)) => println!("CHILD-RESULT injected {p}"),
        Err(e) => println!("CHILD-RESULT error {e}"),
    }
}

fn spawn_child(spool: &Path, role: &str, fault_spec: &str) -> (std::process::ExitStatus, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transfer_crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(SPOOL, spool)
        .env(fault::ENV, fault_spec)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// Live messages of one mailbox, by body, with flags and keyword names,
/// as a fresh session sees them (its first lock settles pending moves).
fn contents(m: &mut Mailbox) -> BTreeMap<Vec<u8>, (Flags, Vec<String>)> {
    let snap = m.snapshot().unwrap();
    let mut out = BTreeMap::new();
    for r in snap.records.iter().filter(|r| !r.is_expunged()) {
        let kws = r
            .keywords
            .iter()
            .map(|i| snap.meta.keywords[i].clone())
            .collect();
        let body = m.read_message(r.uid).unwrap();
        assert!(
            out.insert(body, (r.flags, kws)).is_none(),
            "duplicate inside one mailbox"
        );
    }
    out
}

fn expected(op: &str, done: bool, pad: u32) -> (Vec<u32>, Vec<u32>) {
    let all_a: Vec<u32> = (1..=5).chain((1..=pad).map(filler)).collect();
    let mut b = vec![101, 102];
    if done {
        b.extend_from_slice(MOVED);
    }
    let a = if op == "move" && done {
        all_a.into_iter().filter(|i| !MOVED.contains(i)).collect()
    } else {
        all_a
    };
    (a, b)
}

/// Checks both mailboxes, reading `first` before the other, each through
/// its own fresh handle (two independent sessions).
fn check(spool: &Path, op: &str, done: bool, first: &str, pad: u32, ctx: &str) {
    let s = store_at(spool);
    let second = if first == "A" { "B" } else { "A" };
    let mut got = BTreeMap::new();
    for name in [first, second] {
        let mut m = open(&s, name);
        got.insert(name, contents(&mut m));
    }
    let (want_a, want_b) = expected(op, done, pad);
    for (name, want) in [("A", &want_a), ("B", &want_b)] {
        let mut bodies: Vec<Vec<u8>> = got[name].keys().cloned().collect();
        bodies.sort();
        let mut w: Vec<Vec<u8>> = want.iter().map(|&i| msg(i)).collect();
        w.sort();
        assert_eq!(bodies, w, "{ctx}: contents of {name} (done={done})");
    }
    // Flags and keywords travel with the copies.
    for &i in MOVED {
        if let Some((f, k)) = got["B"].get(&msg(i)) {
            assert_eq!(
                (*f, k.clone()),
                (Flags::SEEN, vec![format!("kw{i}")]),
                "{ctx}"
            );
        }
    }
    // Settled: no flag (a journal without its flag is inert and is
    // replaced by the next move); recovery leaves no debris.
    for name in ["A", "B"] {
        let mut m = open(&s, name);
        assert!(
            !m.header().unwrap().has_pending_move(),
            "{ctx}: {name} flag"
        );
        let dir = s.mailbox_path(&user(), &MailboxName::new(name).unwrap());
        m.recover().unwrap();
        assert_eq!(
            std::fs::read_dir(dir.join(".stage")).unwrap().count(),
            0,
            "{ctx}: {name} stage after recover"
        );
        let snap = m.snapshot().unwrap();
        let live: Vec<_> = snap.records.iter().filter(|r| !r.is_expunged()).collect();
        let h = &snap.header;
        assert_eq!(
            (h.exists as usize, h.total_bytes, h.seen as usize),
            (
                live.len(),
                live.iter().map(|r| r.size).sum::<u64>(),
                live.iter()
                    .filter(|r| r.flags.contains(Flags::SEEN))
                    .count()
            ),
            "{ctx}: {name} header counters"
        );
        assert!(
            snap.records.iter().all(|r| r.modseq <= h.highestmodseq),
            "{ctx}"
        );
        files_match_records(&dir, &snap, &format!("{ctx}: {name}"));
    }
    // Still usable: move everything left in A to B, then all is in B.
    let mut a = open(&s, "A");
    let mut b = open(&s, "B");
    let uids: Vec<u32> = a
        .snapshot()
        .unwrap()
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| r.uid)
        .collect();
    transfer::move_messages(&mut a, &uids, &mut b, None).unwrap();
    assert_eq!(a.header().unwrap().exists, 0, "{ctx}");
    let n = b.header().unwrap().exists as usize;
    let extra = if op == "copy" && done { MOVED.len() } else { 0 };
    assert_eq!(
        n,
        7 + pad as usize + extra,
        "{ctx}: total after a final move"
    );
}

fn points_of(op: &str) -> Vec<&'static str> {
    POINTS
        .iter()
        .copied()
        .filter(|p| p.starts_with(&format!("{op}.")))
        .collect()
}

/// Index in `points_of(op)` of the first point at which the operation is
/// committed (its destination header is durable).
fn commit_point(op: &str) -> &'static str {
    match op {
        "copy" => "copy.after_header",
        _ => "move.after_dst_commit",
    }
}

fn is_done(op: &str, point: &str) -> bool {
    let ps = points_of(op);
    let at = |p: &str| ps.iter().position(|x| *x == p).unwrap();
    at(point) >= at(commit_point(op))
}

fn kill_copy_and_move_at_every_point(pad: u32) {
    kill_copy_and_move_at_every_point_with(pad, "");
}

/// `more`: further fault-table entries for the child (`,NAME=ACTION`).
fn kill_copy_and_move_at_every_point_with(pad: u32, more: &str) {
    for op in ["copy", "move"] {
        assert!(points_of(op).len() >= 5, "{op} points");
        for point in points_of(op) {
            for first in ["A", "B"] {
                let ctx = format!("{op} killed at {point}, reading {first} first, pad {pad}{more}");
                let tmp = tempfile::tempdir().unwrap();
                let spool = tmp.path().join("spool");
                prefill(&spool, pad);
                let (status, out) = spawn_child(&spool, op, &format!("{point}=kill{more}"));
                assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {out}");
                check(&spool, op, is_done(op, point), first, pad, &ctx);
            }
        }
    }
}

#[test]
fn kill_copy_and_move_at_every_fault_point() {
    kill_copy_and_move_at_every_point(0);
}

/// The same where the records are found one by one (a big source).
#[test]
fn kill_copy_and_move_of_a_few_at_every_fault_point_big() {
    kill_copy_and_move_at_every_point(PAD);
}

/// PROTOCOL.md §5: past what the process may hold open, messages are
/// placed late (linked from the source under both locks at step 6), not
/// staged; here all but the first, as the test's bound says.
#[test]
fn kill_copy_and_move_placed_late_at_every_fault_point() {
    kill_copy_and_move_at_every_point_with(0, LATE);
}

/// The fault-table entry that stages only the first message early.
const LATE: &str = ",transfer.early=limit:1";

#[test]
fn error_at_every_fault_point() {
    error_at_every_fault_point_with("");
}

#[test]
fn error_at_every_fault_point_placed_late() {
    error_at_every_fault_point_with(LATE);
}

fn error_at_every_fault_point_with(more: &str) {
    for op in ["copy", "move"] {
        for point in points_of(op) {
            let ctx = format!("{op} failing at {point}{more}");
            let tmp = tempfile::tempdir().unwrap();
            let spool = tmp.path().join("spool");
            prefill(&spool, 0);
            let (status, out) = spawn_child(&spool, op, &format!("{point}=error{more}"));
            assert!(status.success(), "{ctx}: {out}");
            assert!(
                out.contains(&format!("CHILD-RESULT injected {point}")),
                "{ctx}: {out}"
            );
            // The failing process settled the move itself before
            // returning: no flag is left for others. Except when the
            // fault sits inside settling and so fails that settle too:
            // then the next locker (the check below) settles.
            let s = store_at(&spool);
            let dir = s.mailbox_path(&user(), &MailboxName::new("A").unwrap());
            if point != "move.after_src_records" {
                assert!(!dir.join(".move").exists(), "{ctx}: journal left in A");
            }
            check(&spool, op, is_done(op, point), "A", 0, &ctx);
        }
    }
}

/// A mover dies after its destination commit; the first reader of the
/// destination settles the move and dies in the middle of that; the next
/// reader finishes it.
#[test]
fn kill_the_settling_reader_too() {
    for (resolver_point, pad) in [
        ("move.after_src_records", 0),
        ("move.after_src_expunge", 0),
        ("move.after_dst_clear", 0),
        ("move.after_src_records", PAD),
        ("move.after_src_expunge", PAD),
    ] {
        for first in ["A", "B"] {
            let ctx = format!("reader killed at {resolver_point}, then reading {first}, pad {pad}");
            let tmp = tempfile::tempdir().unwrap();
            let spool = tmp.path().join("spool");
            prefill(&spool, pad);
            let (status, out) = spawn_child(&spool, "move", "move.after_dst_commit=kill");
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {out}");
            let (status, out) = spawn_child(&spool, "read-b", &format!("{resolver_point}=kill"));
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: reader {out}");
            check(&spool, "move", true, first, pad, &ctx);
        }
    }
}

/// A MOVE killed after the destination committed, whose source is then
/// moved to another depth by a rename of its parent: a session that
/// opened the source under its old name settles the move from that stale
/// handle. It must find the destination (the user directory is not
/// `depth(old name)` levels up any more) and roll forward: the messages
/// end up only in the destination, never in both (and the search never
/// leaves the user's directory).
#[test]
fn find_mailbox_after_a_parent_rename() {
    let cases: [(&[&str], &str, &str, &str); 2] = [
        (&["P"], "P", "P/A", "Q/R/P"),
        (&["X", "X/Y"], "X/Y", "X/Y/A", "Z"),
    ];
    for (parents, parent, child, renamed) in cases {
        let t = tempfile::tempdir().unwrap();
        let spool = t.path().join("spool");
        let s = store_at(&spool);
        for n in ["INBOX", "B"].iter().chain(parents).chain([&child]) {
            s.create_mailbox(&user(), &MailboxName::new(n).unwrap())
                .unwrap();
        }
        {
            let mut a = open(&s, child);
            for i in 1..=5 {
                a.append(&msg(i)[..], AppendOptions::default()).unwrap();
            }
        }
        let mut stale = open(&s, child);
        stale.header().unwrap();
        let (status, out) = spawn_child(
            &spool,
            &format!("move-from:{child}"),
            "move.after_dst_commit=kill",
        );
        assert_eq!(status.signal(), Some(9), "{out}");
        s.rename_mailbox(
            &user(),
            &MailboxName::new(parent).unwrap(),
            &MailboxName::new(renamed).unwrap(),
        )
        .unwrap();
        // The stale handle settles first.
        let live = stale.snapshot().unwrap();
        let left: Vec<u32> = live
            .records
            .iter()
            .filter(|r| !r.is_expunged())
            .map(|r| r.uid)
            .collect();
        assert_eq!(
            left,
            vec![2, 4],
            "{child} -> {renamed}: source after settling"
        );
        let now = format!("{renamed}{}", &child[parent.len()..]);
        let mut src = open(&s, &now);
        let mut dst = open(&s, "B");
        let in_src = contents(&mut src);
        let in_dst = contents(&mut dst);
        assert_eq!(in_src.len(), 2, "{child} -> {renamed}");
        assert_eq!(in_dst.len(), 3, "{child} -> {renamed}");
        assert!(in_src.keys().all(|k| !in_dst.contains_key(k)));
    }
}

/// After a move within A (RFC 6851 3.3): A as a fresh session sees it
/// (its first lock settles): every message once, under its old UID or its
/// new one (PROTOCOL.md §6a, "MOVE within one mailbox").
fn check_within(spool: &Path, done: bool, pad: u32, ctx: &str) {
    let s = store_at(spool);
    let mut m = open(&s, "A");
    let snap = m.snapshot().unwrap();
    assert!(!snap.header.has_pending_move(), "{ctx}: flag left");
    let mut live: Vec<(u32, Vec<u8>, Flags)> = snap
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| (r.uid, m.read_message(r.uid).unwrap(), r.flags))
        .collect();
    let uids: Vec<u32> = live.iter().map(|l| l.0).collect();
    let fillers = 6..=5 + pad;
    let want: Vec<u32> = if done {
        [2, 4]
            .into_iter()
            .chain(fillers)
            .chain([6, 7, 8].map(|u| u + pad))
            .collect()
    } else {
        (1..=5).chain(fillers).collect()
    };
    assert_eq!(uids, want, "{ctx}");
    live.sort_by(|a, b| a.1.cmp(&b.1));
    let bodies: Vec<Vec<u8>> = live.iter().map(|l| l.1.clone()).collect();
    let mut want_bodies: Vec<Vec<u8>> = (1..=5).chain((1..=pad).map(filler)).map(msg).collect();
    want_bodies.sort();
    assert_eq!(bodies, want_bodies, "{ctx}");
    for l in &live {
        let seen = [1, 3, 5].iter().any(|&i| l.1 == msg(i));
        assert_eq!(l.2.contains(Flags::SEEN), seen, "{ctx}: flags travel");
    }
    let h = &snap.header;
    assert_eq!(
        (h.exists, h.seen),
        (5 + pad, 3),
        "{ctx}: header counters agree with the records"
    );
    // A fresh handle: `m` may still hold the message files it read.
    drop(m);
    let mut m = open(&s, "A");
    m.recover().unwrap();
    let dir = s.mailbox_path(&user(), &MailboxName::new("A").unwrap());
    assert_eq!(
        std::fs::read_dir(dir.join(".stage")).unwrap().count(),
        0,
        "{ctx}: stage after recover"
    );
    files_match_records(&dir, &m.snapshot().unwrap(), ctx);
}

/// Every `UID.` file in `dir` has a record and every record its file.
fn files_match_records(dir: &Path, snap: &mailstore::mailbox::Snapshot, ctx: &str) {
    let mut files: Vec<u32> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix('.')?.parse().ok()
        })
        .collect();
    files.sort();
    let uids: Vec<u32> = snap.records.iter().map(|r| r.uid).collect();
    assert_eq!(files, uids, "{ctx}: files vs records");
}

/// Committed once the header holding the copies (and both flags) is
/// written.
fn is_done_within(point: &str) -> bool {
    is_done("move", point)
}

/// RFC 6851 3.3: a MOVE is atomic. Killed at each point, the mailbox holds
/// every message once.
#[test]
fn kill_a_move_within_one_mailbox_at_every_point() {
    for pad in [0, PAD] {
        for point in points_of("move") {
            let ctx = format!("move within killed at {point}, pad {pad}");
            let tmp = tempfile::tempdir().unwrap();
            let spool = tmp.path().join("spool");
            prefill(&spool, pad);
            let (status, out) = spawn_child(&spool, "move-within", &format!("{point}=kill"));
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {out}");
            check_within(&spool, is_done_within(point), pad, &ctx);
        }
    }
}

/// An error at each point: the mover settles before it returns.
#[test]
fn error_in_a_move_within_one_mailbox_at_every_point() {
    for point in points_of("move") {
        let ctx = format!("move within failing at {point}");
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        prefill(&spool, 0);
        let (status, out) = spawn_child(&spool, "move-within", &format!("{point}=error"));
        assert!(status.success(), "{ctx}: {out}");
        assert!(
            out.contains(&format!("CHILD-RESULT injected {point}")),
            "{ctx}: {out}"
        );
        check_within(&spool, is_done_within(point), 0, &ctx);
    }
}

/// The mover dies after its commit, a reader settling it dies too, the
/// next reader finishes.
#[test]
fn kill_the_settling_reader_of_a_move_within() {
    for (resolver, pad) in [
        ("move.after_src_records", 0),
        ("move.after_src_expunge", 0),
        ("move.after_dst_clear", 0),
        ("move.after_src_records", PAD),
    ] {
        let ctx = format!("reader killed at {resolver}, pad {pad}");
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        prefill(&spool, pad);
        let (status, out) = spawn_child(&spool, "move-within", "move.after_dst_commit=kill");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: {out}");
        let (status, out) = spawn_child(&spool, "read-a", &format!("{resolver}=kill"));
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{ctx}: reader {out}");
        check_within(&spool, true, pad, &ctx);
    }
}
