//! The server's process-wide header cache (imap/headercache.rs): SEARCH
//! on header fields (RFC 3501 §6.4.4: FROM, SUBJECT, HEADER ...) answers
//! from headers read before, and never from a header of another message:
//! not after a reconstruct recorded a changed file under the same UID,
//! not after the mailbox was deleted and created again (a new
//! UIDVALIDITY, RFC 3501 §2.3.1.1).

mod imap_common;

use std::time::Duration;

use imap_common::*;
use storage::Durability;
use storage::{MailboxName, UserName};

fn msg(from: &str, n: usize) -> Vec<u8> {
    format!("From: {from}@example.org\r\nSubject: note {n}\r\n\r\nbody {n}\r\n").into_bytes()
}

/// RFC 3501 §6.4.4: a header already read is served from the cache, so
/// the file is not opened again (shown by moving it away: the answer
/// stays right); a reconstruct that records a changed file under the same
/// UID and UIDVALIDITY (new size and CRC32) makes the next SEARCH read
/// the new header, never the cached old one.
#[test]
fn search_uses_cached_headers_but_not_after_reconstruct_changed_a_file() {
    let (_t, spool) = store_with("alice", &[msg("bob", 1), msg("bob", 2), msg("bob", 3)]);
    let dir = storage::Store::open(&spool, storage::Options::default())
        .unwrap()
        .mailbox_path(&UserName::new("alice").unwrap(), &MailboxName::inbox());
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    assert_eq!(c.ok("UID SEARCH FROM bob"), vec!["* SEARCH 1 2 3"]);

    // Cached: UID 2's file away, its header still answers.
    std::fs::rename(dir.join("2."), dir.join("2.away")).unwrap();
    assert_eq!(c.ok("UID SEARCH FROM bob"), vec!["* SEARCH 1 2 3"]);
    std::fs::rename(dir.join("2.away"), dir.join("2.")).unwrap();

    // UID 1's file replaced by another message (longer, other CRC32) and
    // the index rebuilt from the files: same UIDVALIDITY, new record.
    std::fs::write(dir.join("1."), msg("mallory-the-other", 1)).unwrap();
    storage::recovery::reconstruct(&dir, Durability::Full, Duration::from_secs(5)).unwrap();
    c.ok("NOOP");
    assert_eq!(
        c.ok("UID SEARCH FROM mallory-the-other"),
        vec!["* SEARCH 1"]
    );
    assert_eq!(c.ok("UID SEARCH FROM bob"), vec!["* SEARCH 2 3"]);
}

/// RFC 3501 §2.3.1.1: a mailbox deleted and created again has a new
/// UIDVALIDITY, and its UID 1 (a message of the same size as the old
/// UID 1) is searched by its own header.
#[test]
fn a_recreated_mailbox_never_gets_the_old_headers() {
    let (_t, spool) = store_with("alice", &[msg("bob", 1)]);
    let mut c = Client::spawn(&spool, "alice");
    c.ok("CREATE Box");
    let m = msg("bob", 7);
    c.ok(&format!(
        "APPEND Box {{{}+}}\r\n{}",
        m.len(),
        String::from_utf8(m).unwrap()
    ));
    c.ok("SELECT Box");
    assert_eq!(c.ok("UID SEARCH FROM bob"), vec!["* SEARCH 1"]);
    c.ok("SELECT INBOX");
    c.ok("DELETE Box");
    c.ok("CREATE Box");
    // Same length as the old UID 1, other bytes.
    let m = msg("eve", 7);
    c.ok(&format!(
        "APPEND Box {{{}+}}\r\n{}",
        m.len(),
        String::from_utf8(m).unwrap()
    ));
    c.ok("SELECT Box");
    assert_eq!(c.ok("UID SEARCH FROM bob"), vec!["* SEARCH"]);
    assert_eq!(c.ok("UID SEARCH FROM eve"), vec!["* SEARCH 1"]);
}

/// The cache's bound is configurable (`imapd.header_cache`, OPERATIONS.md
/// §6a): with it off (0) or tiny, SEARCH answers the same; a bad value is
/// refused at start.
#[test]
fn header_cache_setting_off_or_tiny_answers_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 20);
    let passwd = write_passwd(dir.path(), "alice", "cache-secret");
    for conf in ["imapd.header_cache = 0\n", "imapd.header_cache = 2K\n"] {
        let server = TcpServer::start_configured(&spool, &passwd, conf);
        let mut c = Client::tcp(server.port, "alice", "cache-secret");
        c.ok("SELECT INBOX");
        for _ in 0..2 {
            assert_eq!(
                c.ok("UID SEARCH SUBJECT \"message 1\""),
                vec!["* SEARCH 2 11 12 13 14 15 16 17 18 19 20"]
            );
        }
        drop(c);
        server.stop();
    }
}
