//! A corrupt index answers `NO [CORRUPTION]` (RFC 5530) to every command
//! that meets it, names no path to the client, and takes down neither the
//! server process nor its other sessions.

mod imap_common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

/// Asserts `NO [CORRUPTION]` without a path in the reply.
fn corrupt(c: &mut Client, command: &str) {
    let (lines, tagged) = c.cmd(command);
    assert!(
        tagged.contains(" NO [CORRUPTION] "),
        "{command} -> {tagged} {lines:?}"
    );
    assert!(!tagged.contains('/'), "{command}: a path in {tagged}");
}

/// Garbage over both header slots of an index (its magic kept).
fn break_index(mailbox_dir: &Path) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(mailbox_dir.join(".index"))
        .unwrap();
    f.write_all_at(&[0x5a; 8192 - 8], 8).unwrap();
}

#[test]
fn corrupt_index_gets_no_corruption_and_other_sessions_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 2);
    let bob = UserName::new("bob").unwrap();
    store.ensure_mailbox(&bob, &MailboxName::inbox()).unwrap();
    store
        .open_mailbox(&bob, &MailboxName::inbox())
        .unwrap()
        .append(&message(7)[..], AppendOptions::default())
        .unwrap();
    let alice = UserName::new("alice").unwrap();
    store
        .create_mailbox(&alice, &MailboxName::new("Broken").unwrap())
        .unwrap();
    break_index(&spool.join("alice").join("Broken"));

    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let mut lines = std::fs::read(write_passwd(a.path(), "alice", "pw-a")).unwrap();
    lines.extend(std::fs::read(write_passwd(b.path(), "bob", "pw-b")).unwrap());
    let passwd = dir.path().join("passwd");
    std::fs::write(&passwd, lines).unwrap();
    let server = TcpServer::start(&spool, &passwd);
    let port = server.port;

    let mut other = Client::tcp(port, "bob", "pw-b");
    other.ok("SELECT INBOX");
    let mut s = Client::tcp(port, "alice", "pw-a");
    corrupt(&mut s, "SELECT Broken");
    corrupt(&mut s, "EXAMINE Broken");
    corrupt(&mut s, "STATUS Broken (MESSAGES UIDNEXT)");
    s.ok("STATUS INBOX (MESSAGES)");
    s.ok("SELECT INBOX");
    // The selected mailbox's index goes bad under the session.
    break_index(&spool.join("alice").join("INBOX"));
    corrupt(&mut s, "NOOP");
    corrupt(&mut s, "FETCH 1 (FLAGS)");
    corrupt(&mut s, "CHECK");
    // The session itself goes on.
    s.ok("CAPABILITY");
    corrupt(&mut s, "SELECT INBOX");
    // So do the server and its other sessions.
    other.ok("NOOP");
    let body = other.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(body.iter().any(|l| l == "Subject: message 7"), "{body:?}");
    let mut fresh = Client::tcp(port, "bob", "pw-b");
    fresh.ok("SELECT INBOX");
    s.ok("LOGOUT");
    other.ok("LOGOUT");
    fresh.ok("LOGOUT");
    let mut server = server;
    assert!(
        server.process.0.try_wait().unwrap().is_none(),
        "server exited"
    );
    let logs = server.stop();
    // The log names what the client was not told.
    assert!(logs.contains("Broken/.index"), "{logs}");
}
