//! While another process holds the selected mailbox's index lock (a
//! commit in progress), commands that need not report its changes do not
//! wait for it (RFC 3501 section 7: the server may send updates after any
//! command, so they may wait for a later one), and nothing is lost.
//!
//! No timing assertions beyond "did not hang": the server's lock timeout
//! is 30 s, longer than the client's read timeout, so a reply read at all
//! came without waiting for the lock.

mod imap_common;

use std::time::Duration;

use imap_common::*;
use storage::internals::lock::{LockKind, hold};
use storage::{AppendOptions, MailboxName, UserName};

/// IDLE starts, and DONE is answered, while a writer holds the index lock
/// (RFC 2177 section 3); LIST, STATUS, FETCH and SEARCH are answered too.
/// NOOP then waits and reports what the writer committed (RFC 3501
/// 6.1.2).
#[test]
fn idle_list_status_answer_while_a_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 2);
    store
        .ensure_mailbox(
            &UserName::new("alice").unwrap(),
            &MailboxName::new("Other").unwrap(),
        )
        .unwrap();
    let mut inbox = store
        .open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
        .unwrap();
    // Over TCP: the client's reads time out after 20 s.
    let passwd = write_passwd(dir.path(), "alice", "idle-test-secret");
    let server = TcpServer::start(&spool, &passwd);
    let mut c = Client::tcp(server.port, "alice", "idle-test-secret");
    c.ok("SELECT INBOX");

    let guard = hold(
        inbox.index_path(),
        LockKind::Exclusive,
        Duration::from_secs(5),
    )
    .unwrap();

    c.send("i IDLE\r\n");
    assert!(c.line().starts_with('+'));
    c.send("DONE\r\n");
    assert!(c.line().starts_with("i OK"));
    c.ok("LIST \"\" \"*\"");
    let st = c.ok("STATUS Other (MESSAGES)");
    assert_eq!(st, vec!["* STATUS \"Other\" (MESSAGES 0)"]);
    let f = c.ok("FETCH 1:* (UID)");
    assert_eq!(f, vec!["* 1 FETCH (UID 1)", "* 2 FETCH (UID 2)"]);
    assert_eq!(c.ok("UID SEARCH ALL"), vec!["* SEARCH 1 2"]);

    // The "commit": released, then another append (which needs the lock).
    drop(guard);
    inbox
        .append(&message(3)[..], AppendOptions::default())
        .unwrap();
    let lines = c.ok("NOOP");
    // This session is the first told of the new message: it is \Recent
    // here (RFC 3501 7.3.2).
    assert_eq!(lines, vec!["* 3 EXISTS", "* 3 RECENT"]);
    drop(c);
    server.stop();
}
