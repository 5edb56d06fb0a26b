//! SEARCH criteria, and what SELECT/EXAMINE announce, against RFC 3501's
//! wording, through the real server.

mod imap_common;

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

/// RFC 3501 6.4.4: SENTBEFORE, SENTON and SENTSINCE compare the date of
/// the Date: header as written, disregarding time and timezone. `Sun, 25
/// Mar 2007 01:00 +0200` is the 24th in UTC and the 25th as written.
#[test]
fn sent_dates_compare_the_date_as_written() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let store = seed_store(&spool, "sent");
    let mut m = store
        .open_mailbox(&UserName::new("sent").unwrap(), &MailboxName::inbox())
        .unwrap();
    // With the sent dates deliver stores (UTC): 2007-03-24T23:00Z and
    // 2007-03-25T04:30Z, the other way round from the dates as written.
    for (date, utc) in [
        ("Sun, 25 Mar 2007 01:00:00 +0200", 1_174_777_200),
        ("Sat, 24 Mar 2007 23:30:00 -0500", 1_174_797_000),
    ] {
        let msg = format!("Date: {date}\r\nSubject: s\r\n\r\nbody\r\n");
        let opts = AppendOptions {
            sent_date: utc,
            ..Default::default()
        };
        m.append(msg.as_bytes(), opts).unwrap();
    }
    let mut c = Client::spawn(&spool, "sent");
    c.ok("SELECT INBOX");
    let search = |c: &mut Client, q: &str| -> String {
        let lines = c.ok(&format!("UID SEARCH {q}"));
        lines
            .iter()
            .find(|l| l.starts_with("* SEARCH"))
            .cloned()
            .unwrap_or_default()
            .trim_end()
            .to_string()
    };
    assert_eq!(search(&mut c, "SENTON 25-Mar-2007"), "* SEARCH 1");
    assert_eq!(search(&mut c, "SENTON 24-Mar-2007"), "* SEARCH 2");
    assert_eq!(search(&mut c, "SENTBEFORE 25-Mar-2007"), "* SEARCH 2");
    assert_eq!(search(&mut c, "SENTSINCE 25-Mar-2007"), "* SEARCH 1");
    assert_eq!(search(&mut c, "SENTSINCE 24-Mar-2007"), "* SEARCH 1 2");
}

/// RFC 3501 6.3.2: EXAMINE is read-only, so no flag can be changed
/// permanently: `PERMANENTFLAGS ()`; SELECT lists the flags and `\*`.
#[test]
fn examine_has_no_permanent_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "ex", 1);
    let mut c = Client::spawn(&spool, "ex");
    let perm = |lines: &[String]| {
        lines
            .iter()
            .find(|l| l.contains("[PERMANENTFLAGS"))
            .cloned()
            .unwrap_or_default()
    };
    let examined = c.ok("EXAMINE INBOX");
    assert!(
        perm(&examined).contains("[PERMANENTFLAGS ()]"),
        "{examined:?}"
    );
    let selected = c.ok("SELECT INBOX");
    assert!(perm(&selected).contains("\\*)]"), "{selected:?}");
    assert!(perm(&selected).contains("\\Seen"), "{selected:?}");
}

/// A user in the password file who never got mail can log in and SELECT
/// INBOX (it is created at login, as Dovecot and Cyrus do); so can a
/// preauthenticated one.
#[test]
fn a_new_user_can_select_inbox_before_any_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let passwd = write_passwd(tmp.path(), "newbie", "s3cret-pass");
    let server = TcpServer::start(&spool, &passwd);
    let mut c = Client::tcp(server.port, "newbie", "s3cret-pass");
    let lines = c.ok("SELECT INBOX");
    assert!(lines.iter().any(|l| l == "* 0 EXISTS"), "{lines:?}");
    drop(c);
    server.stop();
    let mut p = Client::spawn(&spool, "other");
    let lines = p.ok("SELECT INBOX");
    assert!(lines.iter().any(|l| l == "* 0 EXISTS"), "{lines:?}");
}
