//! The server repacks a mailbox after EXPUNGE once its expunged records
//! outnumber both 1,000 and the live ones, so that checks and STOREs,
//! which read every record, do not slow down with every message ever
//! expunged. RFC 3501 6.4.3 (EXPUNGE) and 6.4.2 (CLOSE) are unchanged on
//! the wire.

mod imap_common;

use imap_common::*;
use storage::{MailboxName, UserName};

fn records(store: &storage::Store) -> (u32, u32) {
    let h = store
        .open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
        .unwrap()
        .header()
        .unwrap();
    (h.num_records, h.exists)
}

/// Expunging 1,050 of 1,100 messages leaves 50 records and 50 message
/// files; a second session still gets its EXPUNGE responses and keeps
/// the survivors' UIDs and bodies. Expunging 10 more does not repack.
#[test]
fn expunge_repacks_when_most_records_are_dead() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 1100);
    let mut a = Client::spawn(&spool, "alice");
    let mut b = Client::spawn(&spool, "alice");
    a.ok("SELECT INBOX");
    b.ok("SELECT INBOX");
    a.ok("STORE 1:1050 +FLAGS.SILENT (\\Deleted)");
    let lines = a.ok("EXPUNGE");
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" EXPUNGE")).count(),
        1050
    );
    assert_eq!(records(&store), (50, 50));
    let files = std::fs::read_dir(spool.join("alice/INBOX"))
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            !n.to_string_lossy().starts_with('.')
        })
        .count();
    assert_eq!(files, 50);

    // The other session learns of the expunges (after a repack: a full
    // refresh by UID) and reads a survivor.
    let lines = b.ok("NOOP");
    assert_eq!(
        lines.iter().filter(|l| l.ends_with(" EXPUNGE")).count(),
        1050
    );
    let lines = b.ok("UID FETCH 1:* (UID)");
    assert_eq!(lines.len(), 50);
    assert!(lines[0].contains("UID 1051"), "{}", lines[0]);
    let body = b.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(body.concat().contains("message 1050"), "{body:?}");

    // Few dead records: no repack.
    a.ok("STORE 1:10 +FLAGS.SILENT (\\Deleted)");
    a.ok("CLOSE");
    assert_eq!(records(&store), (50, 40));
}
