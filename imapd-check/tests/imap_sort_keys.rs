//! The sort-key file of a mailbox (`.sortkeys`, imap/sortkeys.rs,
//! docs/FORMAT.md §10): SORT (RFC 5256, RFC 5957) and THREAD (RFC 5256 3)
//! answer from it once their keys are in it, and their answers are always
//! those of reading every header: when the file is fresh, damaged,
//! partial (new messages), or stale (a reconstruct recorded a changed
//! file under the same UID). Each server is a new process, so the
//! process-wide header cache (headercache.rs) holds nothing at its start.

mod imap_common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use imap_common::*;
use storage::{Durability, MailboxName, UserName};

/// More than `sortkeys::MIN_MESSAGES` (256): the file is used.
const N: usize = 300;

const SUBJECTS: [&str; 6] = [
    "Re: budget",
    "budget",
    "Fwd: [list] Budget (fwd)",
    "=?UTF-8?Q?=C3=A9t=C3=A9?=",
    "ÉTÉ",
    "",
];

/// Message `i`: subjects with reply markers and encoded words, From, To
/// and Cc with and without display names, and threads (References or
/// only In-Reply-To, some ids invalid).
fn msg(i: usize) -> Vec<u8> {
    let subject = SUBJECTS[i % SUBJECTS.len()];
    let from = match i % 4 {
        0 => format!("\"Zed {i}\" <zed{i}@example.org>"),
        1 => format!("amy{}@example.org", i % 7),
        2 => format!("=?UTF-8?Q?=C3=89mile?= <emile{i}@example.org>"),
        _ => "Group: a@b.example, c@d.example;".to_string(),
    };
    let mut h = format!(
        "From: {from}\r\nTo: user{}@example.org\r\nSubject: {subject} {}\r\nMessage-ID: <m{i}@example.org>\r\n",
        (N + 1000 - i) % 9,
        i % 5
    );
    if i.is_multiple_of(3) {
        h.push_str(&format!("Cc: Cee <cc{}@example.org>\r\n", i % 11));
    }
    if i > 10 {
        match i % 4 {
            0 => h.push_str(&format!(
                "References: <m{}@example.org> <m{}@example.org>\r\n",
                i / 3,
                i / 2
            )),
            1 => h.push_str(&format!("In-Reply-To: <m{}@example.org>\r\n", i - 7)),
            2 => h.push_str("References: <not-an-id>\r\n"),
            _ => {}
        }
    }
    format!(
        "{h}Date: Mon, {} Dec 2026 10:00:00 +0000\r\n\r\nbody {i}\r\n",
        1 + i % 28
    )
    .into_bytes()
}

const QUERIES: [&str; 11] = [
    "UID SORT (SUBJECT) UTF-8 ALL",
    "UID SORT (FROM) UTF-8 ALL",
    "UID SORT (TO) UTF-8 ALL",
    "UID SORT (CC) UTF-8 ALL",
    "UID SORT (DISPLAYFROM) UTF-8 ALL",
    "UID SORT (DISPLAYTO) UTF-8 ALL",
    "UID SORT (REVERSE SUBJECT DATE) UTF-8 ALL",
    "UID SORT (SUBJECT ARRIVAL) UTF-8 UID 100:200",
    "SORT (FROM REVERSE SIZE) UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 ALL",
    "UID THREAD ORDEREDSUBJECT UTF-8 ALL",
];

/// alice's INBOX directory in `spool`.
fn inbox_dir(spool: &Path) -> PathBuf {
    storage::Store::open(spool, storage::Options::default())
        .unwrap()
        .mailbox_path(&UserName::new("alice").unwrap(), &MailboxName::inbox())
}

/// Every query's answer, from a new server process.
fn answers(spool: &Path) -> Vec<Vec<String>> {
    let mut c = Client::spawn(spool, "alice");
    c.ok("SELECT INBOX");
    QUERIES.iter().map(|q| c.ok(q)).collect()
}

/// The answers of reading every header: without the file.
fn truth(spool: &Path, dir: &Path) -> Vec<Vec<String>> {
    let keys = dir.join(".sortkeys");
    let saved = std::fs::read(&keys).ok();
    let _ = std::fs::remove_file(&keys);
    let a = answers(spool);
    match saved {
        Some(b) => std::fs::write(&keys, b).unwrap(),
        None => {
            let _ = std::fs::remove_file(&keys);
        }
    }
    a
}

/// Moves every message file away and back: answers given meanwhile come
/// from the key file alone (a SORT that read a header would fail).
fn without_message_files<T>(dir: &Path, f: impl FnOnce() -> T) -> T {
    let away = dir.join("away");
    std::fs::create_dir(&away).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e.is_empty()) || p.to_string_lossy().ends_with('.')
        })
        .collect();
    assert!(files.len() >= N, "{} message files", files.len());
    for p in &files {
        std::fs::rename(p, away.join(p.file_name().unwrap())).unwrap();
    }
    let r = f();
    for p in &files {
        std::fs::rename(away.join(p.file_name().unwrap()), p).unwrap();
    }
    std::fs::remove_dir(&away).unwrap();
    r
}

#[test]
fn sort_and_thread_answer_from_the_key_file_and_always_as_the_headers_say() {
    let msgs: Vec<Vec<u8>> = (0..N).map(msg).collect();
    let (_t, spool) = store_with("alice", &msgs);
    let dir = inbox_dir(&spool);
    let keys = dir.join(".sortkeys");

    // The first SORT reads the headers and writes the file.
    let want = answers(&spool);
    assert!(want[0][0].starts_with("* SORT "), "{:?}", want[0]);
    assert!(want[9][0].starts_with("* THREAD ("), "{:?}", want[9]);
    assert!(std::fs::metadata(&keys).unwrap().len() > (N * 40) as u64);

    // From the file alone: the message files are not there.
    assert_eq!(without_message_files(&dir, || answers(&spool)), want);

    // Damaged in the middle: what follows is read from the messages again
    // and the file written whole, so that it serves everything again.
    let mut b = std::fs::read(&keys).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x55;
    std::fs::write(&keys, &b).unwrap();
    assert_eq!(answers(&spool), want);
    assert_eq!(without_message_files(&dir, || answers(&spool)), want);
    // Cut short, and garbage: the same.
    let b = std::fs::read(&keys).unwrap();
    std::fs::write(&keys, &b[..b.len() - 30]).unwrap();
    assert_eq!(answers(&spool), want);
    std::fs::write(&keys, b"not a key file at all").unwrap();
    assert_eq!(answers(&spool), want);
    assert_eq!(without_message_files(&dir, || answers(&spool)), want);

    // New messages: in the answers at once (read from their headers).
    let mut c = Client::spawn(&spool, "alice");
    for i in N..N + 20 {
        let m = String::from_utf8(msg(i)).unwrap();
        c.ok(&format!("APPEND INBOX {{{}+}}\r\n{m}", m.len()));
    }
    drop(c);
    let want = truth(&spool, &dir);
    assert_eq!(answers(&spool), want);
    assert_eq!(without_message_files(&dir, || answers(&spool)), want);

    // UID 1 changed on disk and recorded by a reconstruct (same UID and
    // UIDVALIDITY, new size and CRC32): its old keys are not used.
    let other = b"From: !first@example.org\r\nSubject: !!! first of all\r\nMessage-ID: <m150@example.org>\r\n\r\nnew\r\n";
    std::fs::write(dir.join("1."), other).unwrap();
    storage::recovery::reconstruct(&dir, Durability::Full, Duration::from_secs(5)).unwrap();
    let want = truth(&spool, &dir);
    let got = answers(&spool);
    assert_eq!(got, want);
    assert!(got[0][0].starts_with("* SORT 1 "), "{:?}", got[0]);
    assert!(got[1][0].starts_with("* SORT 1 "), "{:?}", got[1]);
}

/// PROTOCOL.md §12: a server killed at each step of writing the file (its
/// replacement written but not renamed, renamed, before and after the
/// append of the keys read) leaves a file that the next server uses,
/// repairs or replaces, with the answers of reading every header, and no
/// temporary file behind.
#[test]
fn a_kill_while_writing_the_key_file_costs_nothing() {
    for point in [
        "sortkeys.after_tmp_write",
        "sortkeys.after_replace",
        "sortkeys.before_append",
        "sortkeys.after_append",
    ] {
        let msgs: Vec<Vec<u8>> = (0..N).map(msg).collect();
        let (_t, spool) = store_with("alice", &msgs);
        let dir = inbox_dir(&spool);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imapd-check"));
        cmd.env("MAILSTORE_TEST_FAULT", format!("{point}=kill"))
            .args(["serve", "--spool"])
            .arg(&spool)
            .args(["-d", "alice", "--stdio"]);
        let mut doomed = Client::preauth(cmd);
        doomed.ok("SELECT INBOX");
        doomed.send("t9 UID SORT (SUBJECT) UTF-8 ALL\r\n");
        doomed.wait_exit(Duration::from_secs(20));
        let got = answers(&spool);
        assert!(!dir.join(".sortkeys.tmp").exists(), "{point}");
        let want = truth(&spool, &dir);
        assert_eq!(got, want, "{point}");
        assert_eq!(
            without_message_files(&dir, || answers(&spool)),
            want,
            "{point}: the file serves every message again"
        );
    }
}

/// A full disk: the key file cannot be written, the answers are those of
/// reading every header all the same, and no temporary file is left (a
/// tmpfs of 8 MiB filled up; needs root, as the other disk-full tests).
#[test]
fn a_full_disk_costs_the_key_file_only() {
    struct Mount(PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8m,mode=0755", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap()
        .success();
    assert!(
        ok,
        "mount -t tmpfs failed: this test needs root; it does not skip"
    );
    let _mount = Mount(mnt.clone());
    let spool = mnt.join("spool");
    seed_raw(
        &spool,
        "alice",
        (0..N).map(|i| (msg(i), storage::AppendOptions::default())),
    );
    let dir = inbox_dir(&spool);
    // A first server claims \Recent (a write) while there is room.
    drop(answers(&spool));
    std::fs::remove_file(dir.join(".sortkeys")).unwrap();
    // Fill what is left.
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 << 10];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let got = answers(&spool);
    assert!(!dir.join(".sortkeys.tmp").exists());
    assert!(!dir.join(".sortkeys").exists(), "written on a full disk?");
    std::fs::remove_file(&filler).unwrap();
    let want = truth(&spool, &dir);
    assert_eq!(got, want);
}

/// Below `sortkeys::MIN_MESSAGES` the headers are read and no file is
/// written.
#[test]
fn a_small_mailbox_has_no_key_file() {
    let msgs: Vec<Vec<u8>> = (0..20).map(msg).collect();
    let (_t, spool) = store_with("alice", &msgs);
    let dir = inbox_dir(&spool);
    let a = answers(&spool);
    assert!(a[0][0].starts_with("* SORT "));
    assert!(!dir.join(".sortkeys").exists());
}

/// A SORT or THREAD whose criteria leave fewer than one message in 512
/// (as the records tell: flags, UIDs, sequence numbers) reads those
/// headers rather than the whole file (`sort::SUBSET_SHARE`): it neither
/// needs nor adds to the file, and answers as the headers say. One over
/// many messages uses the file and adds what it lacks.
#[test]
fn a_sort_of_a_few_messages_reads_their_headers_not_the_file() {
    const BIG: usize = 1100; // 1100 / 512: at most 2 hits count as few
    let msgs: Vec<Vec<u8>> = (0..BIG).map(msg).collect();
    let (_t, spool) = store_with("alice", &msgs);
    let dir = inbox_dir(&spool);
    let keys = dir.join(".sortkeys");
    let len = || std::fs::metadata(&keys).unwrap().len();

    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    c.ok("UID SORT (SUBJECT) UTF-8 ALL");
    let full = len();
    for i in BIG..BIG + 2 {
        let m = String::from_utf8(msg(i)).unwrap();
        c.ok(&format!("APPEND INBOX {{{}+}}\r\n{m}", m.len()));
    }
    c.ok("NOOP");
    c.ok(&format!("UID STORE {} +FLAGS (\\Flagged)", BIG + 1));
    // msg(BIG) has subject index BIG % 6 = 2 ("Fwd: [list] Budget (fwd)
    // 0"), msg(BIG + 1) index 3 ("été 1"): base subjects "BUDGET 0" <
    // "ÉTÉ 1".
    let want = format!("* SORT {} {}", BIG + 1, BIG + 2);
    for q in [
        format!("UID SORT (SUBJECT) UTF-8 UID {}:*", BIG + 1),
        format!("UID SORT (SUBJECT) UTF-8 {}:*", BIG + 1),
        format!(
            "UID SORT (SUBJECT) UTF-8 OR FLAGGED UID {} UNDRAFT",
            BIG + 2
        ),
        format!(
            "UID SORT (SUBJECT) UTF-8 UID {}:* NOT SUBJECT nothing",
            BIG + 1
        ),
    ] {
        let got = c.ok(&q);
        assert_eq!(got[0], want, "{q}");
        assert_eq!(len(), full, "{q}: the file was read and added to");
    }
    let got = c.ok("UID THREAD ORDEREDSUBJECT UTF-8 FLAGGED");
    assert_eq!(got[0], format!("* THREAD ({})", BIG + 1));
    assert_eq!(len(), full, "THREAD of one message added to the file");
    // Many hits: the file is used, and the two new messages' keys added.
    c.ok("UID SORT (SUBJECT) UTF-8 ALL");
    assert!(
        len() > full,
        "a SORT of every message did not add the new keys"
    );
}
