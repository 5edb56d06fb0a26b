//! STATUS (RFC 3501 §6.3.10, RFC 9051 §6.3.11) from mailboxes a session
//! keeps open after an earlier STATUS (imap/openboxes.rs): the answer is
//! always the mailbox the name leads to now, after new mail, a RENAME, a
//! DELETE or a DELETE and CREATE by another session.

mod imap_common;

use imap_common::*;

fn status(c: &mut Client, name: &str) -> String {
    let lines = c.ok(&format!("STATUS {name} (MESSAGES UIDVALIDITY)"));
    assert_eq!(lines.len(), 1, "{lines:?}");
    lines[0].clone()
}

fn messages(line: &str) -> u32 {
    let rest = &line[line.find("MESSAGES ").unwrap() + 9..];
    rest.split([' ', ')']).next().unwrap().parse().unwrap()
}

fn uidvalidity(line: &str) -> u32 {
    let rest = &line[line.find("UIDVALIDITY ").unwrap() + 12..];
    rest.split([' ', ')']).next().unwrap().parse().unwrap()
}

fn append(c: &mut Client, name: &str, n: usize) {
    for i in 0..n {
        let m = String::from_utf8(message(i)).unwrap();
        c.ok(&format!("APPEND {name} {{{}+}}\r\n{m}", m.len()));
    }
}

/// RFC 3501 §6.3.10: STATUS reports the mailbox named now. Session A asks
/// STATUS of three names (so it keeps them open); session B (another
/// process) appends, renames one away and creates a new one under its
/// name, deletes one, deletes and creates the third again. A's STATUS
/// then answers for the mailboxes the names lead to, never for the ones
/// it had open.
#[test]
fn status_follows_new_mail_rename_delete_and_recreate() {
    let (_t, spool) = store_with("alice", &[message(0)]);
    let mut a = Client::spawn(&spool, "alice");
    let mut b = Client::spawn(&spool, "alice");
    for n in ["f", "g", "x"] {
        b.ok(&format!("CREATE {n}"));
    }
    append(&mut b, "x", 1);
    assert_eq!(messages(&status(&mut a, "f")), 0);
    assert_eq!(messages(&status(&mut a, "g")), 0);
    let x0 = status(&mut a, "x");
    assert_eq!(messages(&x0), 1);

    // New mail in a kept mailbox.
    append(&mut b, "f", 2);
    assert_eq!(messages(&status(&mut a, "f")), 2);

    // f renamed away, a new empty f created: the name leads elsewhere.
    b.ok("RENAME f h");
    b.ok("CREATE f");
    assert_eq!(messages(&status(&mut a, "f")), 0);
    assert_eq!(messages(&status(&mut a, "h")), 2);

    // g deleted.
    b.ok("DELETE g");
    let (_, tagged) = a.cmd("STATUS g (MESSAGES)");
    assert!(tagged.contains("NO [NONEXISTENT]"), "{tagged}");

    // x deleted and created again: empty, with a new UIDVALIDITY.
    b.ok("DELETE x");
    b.ok("CREATE x");
    let x1 = status(&mut a, "x");
    assert_eq!(messages(&x1), 0);
    assert_ne!(uidvalidity(&x1), uidvalidity(&x0));
    append(&mut b, "x", 3);
    assert_eq!(messages(&status(&mut a, "x")), 3);
}
