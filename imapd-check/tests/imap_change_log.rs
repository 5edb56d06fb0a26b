//! Two real sessions on a large mailbox (issue 21): one changes a flag
//! and expunges, the other is told at its NOOP (RFC 3501 7.4.1 EXPUNGE,
//! 7.4.2 FETCH) after reading only the records the store's change log
//! names, not the whole index (storage docs/PROTOCOL.md §4b, §7). Read
//! volume is measured from `/proc/PID/io` of each server process.

mod imap_common;

use imap_common::*;
use storage::{AppendOptions, Durability, MailboxName, Options, Store, UserName};

const N: usize = 3000;

/// Bytes the process has read (`rchar` of its `/proc/PID/io`).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    let mut words = io.split_whitespace();
    while let Some(w) = words.next() {
        if w == "rchar:" {
            return words.next().unwrap().parse().unwrap();
        }
    }
    panic!("no rchar in /proc/{pid}/io");
}

/// RFC 3501 7.4.1/7.4.2 across two sessions: after another session's
/// UID STORE and UID EXPUNGE, a NOOP reports the FETCH and the EXPUNGE
/// with the right sequence numbers, and neither the writer's commands
/// nor the reader's NOOP read the index (3,000 × 128 bytes) whole.
#[test]
fn other_sessions_noop_reads_only_what_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    {
        let opts = Options {
            durability: Durability::Relaxed,
            ..Options::default()
        };
        let store = Store::open(&spool, opts).unwrap();
        let u = UserName::new("alice").unwrap();
        store.ensure_mailbox(&u, &MailboxName::inbox()).unwrap();
        let mut inbox = store.open_mailbox(&u, &MailboxName::inbox()).unwrap();
        for i in 0..N {
            inbox
                .append(&message(i)[..], AppendOptions::default())
                .unwrap();
        }
    }
    let index_bytes = (N * 128) as u64;
    let mut a = Client::spawn(&spool, "alice");
    let mut b = Client::spawn(&spool, "alice");
    a.ok("SELECT INBOX");
    b.ok("SELECT INBOX");
    // The first in-place commit after the mailbox was built recounts
    // every record (PROTOCOL.md §4); B catches up with a full read once.
    a.ok("UID STORE 1 +FLAGS.SILENT (\\Answered)");
    b.ok("NOOP");

    let (a0, b0) = (bytes_read(a.pid()), bytes_read(b.pid()));
    a.ok("UID STORE 2500 +FLAGS.SILENT (\\Seen)");
    let a1 = bytes_read(a.pid());
    let lines = b.ok("NOOP");
    let b1 = bytes_read(b.pid());
    assert!(
        lines.iter().any(|l| l.starts_with("* 2500 FETCH")
            && l.contains("\\Seen")
            && l.contains("UID 2500")),
        "{lines:?}"
    );
    assert!(
        a1 - a0 < index_bytes / 4,
        "UID STORE read {} bytes",
        a1 - a0
    );
    assert!(b1 - b0 < index_bytes / 4, "NOOP read {} bytes", b1 - b0);

    a.ok("UID STORE 5 +FLAGS.SILENT (\\Deleted)");
    let a2 = bytes_read(a.pid());
    a.ok("UID EXPUNGE 5");
    let a3 = bytes_read(a.pid());
    let b2 = bytes_read(b.pid());
    let lines = b.ok("NOOP");
    let b3 = bytes_read(b.pid());
    assert_eq!(lines, vec!["* 5 EXPUNGE".to_string()]);
    assert!(
        a3 - a2 < index_bytes / 4,
        "UID EXPUNGE read {} bytes",
        a3 - a2
    );
    assert!(b3 - b2 < index_bytes / 4, "NOOP read {} bytes", b3 - b2);

    // EXPUNGE (every \Deleted message): the session's view names the
    // \Deleted ones, and the store reads only those when they are all
    // the header counts.
    a.ok("UID STORE 100,200 +FLAGS.SILENT (\\Deleted)");
    let a4 = bytes_read(a.pid());
    let lines = a.ok("EXPUNGE");
    let a5 = bytes_read(a.pid());
    assert_eq!(lines, vec!["* 199 EXPUNGE", "* 99 EXPUNGE"], "{lines:?}");
    assert!(a5 - a4 < index_bytes / 4, "EXPUNGE read {} bytes", a5 - a4);
    let lines = b.ok("NOOP");
    assert_eq!(lines, vec!["* 199 EXPUNGE", "* 99 EXPUNGE"], "{lines:?}");
    // A \Deleted message A's view does not know of yet (B set it): A's
    // EXPUNGE still removes it (the hint falls short, every record is
    // read), as RFC 3501 6.4.3 requires.
    b.ok("UID STORE 300 +FLAGS.SILENT (\\Deleted)");
    let lines = a.ok("EXPUNGE");
    assert!(lines.iter().any(|l| l == "* 297 EXPUNGE"), "{lines:?}");
    let lines = b.ok("NOOP");
    assert_eq!(lines, vec!["* 297 EXPUNGE"], "{lines:?}");

    // CLOSE expunges the same way (RFC 3501 6.4.2), silently.
    a.ok("UID STORE 400 +FLAGS.SILENT (\\Deleted)");
    let a6 = bytes_read(a.pid());
    assert!(a.ok("CLOSE").is_empty());
    let a7 = bytes_read(a.pid());
    assert!(a7 - a6 < index_bytes / 4, "CLOSE read {} bytes", a7 - a6);
    let lines = b.ok("NOOP");
    assert_eq!(lines, vec!["* 396 EXPUNGE"], "{lines:?}");

    // What B now knows is what a fresh session sees.
    let seen = b.ok("UID SEARCH SEEN");
    assert_eq!(seen, vec!["* SEARCH 2500".to_string()]);
    let lines = b.ok("FETCH 2495 (UID FLAGS)");
    assert!(
        lines[0].contains("UID 2500") && lines[0].contains("\\Seen"),
        "{lines:?}"
    );
    let mut c = Client::spawn(&spool, "alice");
    let sel = c.ok("SELECT INBOX");
    assert!(
        sel.iter().any(|l| l == &format!("* {} EXISTS", N - 5)),
        "{sel:?}"
    );
}
