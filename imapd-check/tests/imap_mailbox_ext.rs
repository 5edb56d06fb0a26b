//! The mailbox-side extensions of `imapd-check serve` (issue 16): ID,
//! NAMESPACE, LIST-EXTENDED, LIST-STATUS, SPECIAL-USE, CREATE-SPECIAL-USE,
//! STATUS=SIZE, MULTIAPPEND and LITERAL+/LITERAL-, each against the real
//! server binary.

mod imap_common;

use imap_common::*;
use storage::{MailboxName, UserName};

fn caps(c: &mut Client) -> Vec<String> {
    let lines = c.ok("CAPABILITY");
    let line = lines
        .iter()
        .find(|l| l.starts_with("* CAPABILITY "))
        .expect("CAPABILITY line");
    line["* CAPABILITY ".len()..]
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// RFC 7888 §5: LITERAL+ is advertised and LITERAL- is not (a server
/// with LITERAL+ must not advertise both); every extension of this file
/// is advertised.
#[test]
fn capabilities_are_advertised() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Client::spawn(&tmp.path().join("spool"), "alice");
    let caps = caps(&mut c);
    for want in [
        "ID",
        "NAMESPACE",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "SPECIAL-USE",
        "CREATE-SPECIAL-USE",
        "STATUS=SIZE",
        "QUOTA",
        "QUOTA=RES-STORAGE",
        "MULTIAPPEND",
        "LITERAL+",
    ] {
        assert!(caps.iter().any(|c| c == want), "{want} missing: {caps:?}");
    }
    assert!(!caps.iter().any(|c| c == "LITERAL-"), "{caps:?}");
    // No resource is reported that the store does not enforce.
    assert!(!caps.iter().any(|c| c == "QUOTA=RES-MESSAGE"), "{caps:?}");
    assert!(!caps.iter().any(|c| c == "QUOTASET"), "{caps:?}");
    c.ok("LOGOUT");
}

/// RFC 7888 §4 (LITERAL-, implied by LITERAL+): a non-synchronizing
/// literal of 4096 octets is taken without a continuation request, in
/// APPEND and in other commands.
#[test]
fn non_synchronizing_literals_of_4096_octets() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Client::spawn(&tmp.path().join("spool"), "alice");
    let body = format!("Subject: big\r\n\r\n{}", "x".repeat(4096 - 16));
    assert_eq!(body.len(), 4096);
    let lines = c.ok(&format!("APPEND INBOX {{4096+}}\r\n{body}"));
    assert!(!lines.iter().any(|l| l.starts_with('+')), "{lines:?}");
    let lines = c.ok("LIST \"\" {5+}\r\nINBOX");
    assert_eq!(lines, vec!["* LIST (\\HasNoChildren) \"/\" \"INBOX\""]);
    let lines = c.ok("STATUS INBOX (SIZE)");
    assert_eq!(lines, vec!["* STATUS \"INBOX\" (SIZE 4096)"]);
}

/// RFC 2971 §3.1/§3.2: ID answers with the server's name and version,
/// takes the client's list or NIL; §3.3 bounds (30 pairs, 30-octet
/// fields, 1024-octet values) are enforced with BAD.
#[test]
fn id_exchanges_names() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Client::spawn(&tmp.path().join("spool"), "alice");
    let lines = c.ok("ID (\"name\" \"test-client\" \"version\" \"1.0\" \"os\" NIL)");
    assert_eq!(
        lines,
        vec![format!(
            "* ID (\"name\" \"imapd-check\" \"version\" \"{}\")",
            env!("CARGO_PKG_VERSION")
        )]
    );
    let lines = c.ok("ID NIL");
    assert!(
        lines[0].starts_with("* ID (\"name\" \"imapd-check\""),
        "{lines:?}"
    );
    let pairs: Vec<String> = (0..31).map(|i| format!("\"f{i}\" \"v\"")).collect();
    let (_, tagged) = c.cmd(&format!("ID ({})", pairs.join(" ")));
    assert!(tagged.contains(" BAD "), "{tagged}");
    let (_, tagged) = c.cmd(&format!("ID (\"{}\" \"v\")", "f".repeat(31)));
    assert!(tagged.contains(" BAD "), "{tagged}");
    let (_, tagged) = c.cmd(&format!("ID (\"f\" \"{}\")", "v".repeat(1025)));
    assert!(tagged.contains(" BAD "), "{tagged}");
    // 30 pairs at the limits are fine.
    let pairs: Vec<String> = (0..30)
        .map(|i| format!("\"{:0>30}\" \"{}\"", i, "v".repeat(1000)))
        .collect();
    c.ok(&format!("ID ({})", pairs.join(" ")));
    c.ok("LOGOUT");
}

/// RFC 2971 §3.1: ID is valid before authentication too; the client's
/// list is logged.
#[test]
fn id_before_login() {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let passwd = write_passwd(tmp.path(), "alice", "secret");
    let mut child = Command::new(IMAPD)
        .args(["serve", "--listen", "127.0.0.1:0", "--passwd"])
        .arg(&passwd)
        .arg("--spool")
        .arg(tmp.path().join("spool"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let server = Reaper(child);
    let port: u16 = loop {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "no port");
        if let Some(p) = l.trim().strip_prefix("listening on ") {
            break p.rsplit(':').next().unwrap().parse().unwrap();
        }
    };
    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("* OK"), "{line}");
    w.write_all(b"a ID (\"name\" \"probe-client\")\r\n")
        .unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("* ID (\"name\" \"imapd-check\""), "{line}");
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(line, "a OK ID completed\r\n");
    w.write_all(b"b LOGOUT\r\n").unwrap();
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    drop(server);
    let mut log = String::new();
    let _ = err.read_to_string(&mut log);
    assert!(
        log.contains("probe-client"),
        "the client's ID is logged: {log}"
    );
}

/// RFC 2342 §5: one personal namespace with the store's delimiter, no
/// other users' or shared namespaces.
#[test]
fn namespace_is_personal_only() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Client::spawn(&tmp.path().join("spool"), "alice");
    assert_eq!(
        c.ok("NAMESPACE"),
        vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL"]
    );
}

/// The store of the LIST-EXTENDED tests (after RFC 5258 §5's examples):
/// mailboxes INBOX, Fruit, Fruit/Apple, Fruit/Banana, Fruit/Peach, Tofu,
/// Vegetable/Broccoli (Vegetable a plain parent); subscribed: Fruit/Banana,
/// Fruit/Peach, Vegetable, Vegetable/Broccoli, and Gone, which does not
/// exist.
fn fruit_store(spool: &std::path::Path) {
    let store = seed_store(spool, "alice");
    let u = UserName::new("alice").unwrap();
    for m in [
        "Fruit",
        "Fruit/Apple",
        "Fruit/Banana",
        "Fruit/Peach",
        "Tofu",
        "Vegetable/Broccoli",
    ] {
        store
            .create_mailbox(&u, &MailboxName::new(m).unwrap())
            .unwrap();
    }
    for s in [
        "Fruit/Banana",
        "Fruit/Peach",
        "Vegetable",
        "Vegetable/Broccoli",
        "Gone",
    ] {
        store.set_subscribed(&u, s, true).unwrap();
    }
}

/// RFC 5258 §3.1 (SUBSCRIBED selection: subscribed names only, with
/// `\Subscribed`, `\NonExistent` for a name that is not a mailbox), §3.2
/// (return options), §3.4/§5 examples (RECURSIVEMATCH and CHILDINFO only
/// for parents whose subscribed descendants the pattern does not reach).
#[test]
fn list_extended_selection_and_return_options() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    fruit_store(&spool);
    let mut c = Client::spawn(&spool, "alice");

    assert_eq!(
        c.ok("LIST (SUBSCRIBED) \"\" \"*\""),
        vec![
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/Banana\"",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/Peach\"",
            "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
            "* LIST (\\Noselect \\HasChildren \\Subscribed) \"/\" \"Vegetable\"",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Vegetable/Broccoli\"",
        ]
    );
    assert_eq!(
        c.ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"%\""),
        vec![
            "* LIST (\\HasChildren) \"/\" \"Fruit\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
            "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
            "* LIST (\\Noselect \\HasChildren \\Subscribed) \"/\" \"Vegetable\" (\"CHILDINFO\" (\"SUBSCRIBED\"))",
        ]
    );
    // With "*" the subscribed children are listed themselves: no CHILDINFO,
    // and Fruit (not subscribed) is not listed.
    let lines = c.ok("LIST (SUBSCRIBED RECURSIVEMATCH) \"\" \"*\"");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(!lines.iter().any(|l| l.contains("CHILDINFO")), "{lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with("\"Fruit\"")), "{lines:?}");
    // Without SUBSCRIBED selection, RETURN (SUBSCRIBED) marks and lists
    // existing names only.
    assert_eq!(
        c.ok("LIST \"\" \"%\" RETURN (SUBSCRIBED CHILDREN)"),
        vec![
            "* LIST (\\HasChildren) \"/\" \"Fruit\"",
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\"",
            "* LIST (\\Noselect \\HasChildren \\Subscribed) \"/\" \"Vegetable\"",
        ]
    );
    // REMOTE changes nothing in a store without remote mailboxes.
    assert_eq!(c.ok("LIST (REMOTE) \"\" \"%\""), c.ok("LIST \"\" \"%\""));
    assert_eq!(
        c.ok("LIST () \"\" \"%\" RETURN ()"),
        c.ok("LIST \"\" \"%\"")
    );
    // RFC 5258 §3: RECURSIVEMATCH alone, unknown options: BAD.
    for bad in [
        "LIST (RECURSIVEMATCH) \"\" \"*\"",
        "LIST (REMOTE RECURSIVEMATCH) \"\" \"*\"",
        "LIST (FROBNICATE) \"\" \"*\"",
        "LIST \"\" \"*\" RETURN (FROBNICATE)",
    ] {
        let (_, tagged) = c.cmd(bad);
        assert!(tagged.contains(" BAD "), "{bad} -> {tagged}");
    }
    assert!(c.ok("LIST (SUBSCRIBED) \"\" \"Tofu\"").is_empty());
    c.ok("LOGOUT");
}

/// RFC 5258 §3 (mbox-or-pat): several patterns in one LIST, each match
/// once, in the usual order; the reference applies to each.
#[test]
fn list_with_several_patterns() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    fruit_store(&spool);
    let mut c = Client::spawn(&spool, "alice");
    assert_eq!(
        c.ok("LIST \"\" (\"Tofu\" \"Fruit/%\" \"Fru*\")"),
        vec![
            "* LIST (\\HasChildren) \"/\" \"Fruit\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Banana\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Peach\"",
            "* LIST (\\HasNoChildren) \"/\" \"Tofu\"",
        ]
    );
    assert_eq!(
        c.ok("LIST \"Fruit/\" (\"Apple\" \"Peach\")"),
        vec![
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"",
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Peach\"",
        ]
    );
    // RFC 3501 6.3.8: the empty pattern still gives the delimiter.
    assert_eq!(
        c.ok("LIST \"\" \"\""),
        vec!["* LIST (\\Noselect) \"/\" \"\""]
    );
}

/// RFC 5819 §2: RETURN (STATUS (...)) gives a STATUS after the LIST of
/// each selectable mailbox and none for a `\Noselect` or `\NonExistent`
/// name; the values are STATUS's (RFC 8438 SIZE included).
#[test]
fn list_status_follows_each_selectable_mailbox() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    fruit_store(&spool);
    let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
    let u = UserName::new("alice").unwrap();
    let mut apple = store
        .open_mailbox(&u, &MailboxName::new("Fruit/Apple").unwrap())
        .unwrap();
    for i in 0..3 {
        apple
            .append(&message(i)[..], storage::AppendOptions::default())
            .unwrap();
    }
    let size: usize = (0..3).map(|i| message(i).len()).sum();
    let mut c = Client::spawn(&spool, "alice");
    let lines = c.ok("LIST \"\" \"Fruit/A*\" RETURN (STATUS (MESSAGES UIDNEXT SIZE))");
    assert_eq!(
        lines,
        vec![
            "* LIST (\\HasNoChildren) \"/\" \"Fruit/Apple\"".to_string(),
            format!("* STATUS \"Fruit/Apple\" (MESSAGES 3 UIDNEXT 4 SIZE {size})"),
        ]
    );
    let lines = c.ok("LIST (SUBSCRIBED) \"\" \"*\" RETURN (STATUS (MESSAGES))");
    assert_eq!(
        lines,
        vec![
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/Banana\"",
            "* STATUS \"Fruit/Banana\" (MESSAGES 0)",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Fruit/Peach\"",
            "* STATUS \"Fruit/Peach\" (MESSAGES 0)",
            "* LIST (\\NonExistent \\Subscribed) \"/\" \"Gone\"",
            "* LIST (\\Noselect \\HasChildren \\Subscribed) \"/\" \"Vegetable\"",
            "* LIST (\\HasNoChildren \\Subscribed) \"/\" \"Vegetable/Broccoli\"",
            "* STATUS \"Vegetable/Broccoli\" (MESSAGES 0)",
        ]
    );
    let (_, tagged) = c.cmd("LIST \"\" \"*\" RETURN (STATUS ())");
    assert!(tagged.contains(" BAD "), "{tagged}");
}

/// RFC 8438 §3: STATUS SIZE is the total RFC822.SIZE of the messages not
/// expunged; RFC 9208 §4.3: DELETED and DELETED-STORAGE count the
/// messages marked `\Deleted`.
#[test]
fn status_size_and_deleted_storage() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "alice", 3);
    let sizes: Vec<usize> = (0..3).map(|i| message(i).len()).collect();
    let mut c = Client::spawn(&spool, "alice");
    let total: usize = sizes.iter().sum();
    assert_eq!(
        c.ok("STATUS INBOX (SIZE DELETED DELETED-STORAGE)"),
        vec![format!(
            "* STATUS \"INBOX\" (SIZE {total} DELETED 0 DELETED-STORAGE 0)"
        )]
    );
    c.ok("SELECT INBOX");
    let fetched = c.ok("FETCH 1:* RFC822.SIZE");
    for (i, s) in sizes.iter().enumerate() {
        assert!(
            fetched[i].contains(&format!("RFC822.SIZE {s}")),
            "{fetched:?}"
        );
    }
    c.ok("STORE 2 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(
        c.ok("STATUS INBOX (SIZE DELETED DELETED-STORAGE)"),
        vec![format!(
            "* STATUS \"INBOX\" (SIZE {total} DELETED 1 DELETED-STORAGE {})",
            sizes[1]
        )]
    );
    c.ok("EXPUNGE");
    assert_eq!(
        c.ok("STATUS INBOX (SIZE)"),
        vec![format!("* STATUS \"INBOX\" (SIZE {})", total - sizes[1])]
    );
}

/// RFC 6154 §2 and §5.1: a new account gets Drafts, Sent, Trash, Junk and
/// Archive, listed with their attributes; the SPECIAL-USE selection option
/// lists only them, the return option marks them.
#[test]
fn new_account_gets_special_use_mailboxes() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut c = Client::spawn(&spool, "newbie");
    assert_eq!(
        c.ok("LIST \"\" \"*\""),
        vec![
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"",
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"",
        ]
    );
    assert_eq!(
        c.ok("LIST (SPECIAL-USE) \"\" \"*\""),
        vec![
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"",
            "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"",
        ]
    );
    let lines = c.ok("LIST \"\" \"S%\" RETURN (SPECIAL-USE)");
    assert_eq!(
        lines,
        vec!["* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\""]
    );
    c.ok("LOGOUT");
    // A second login creates nothing more, even after the user deleted one.
    let mut c = Client::spawn(&spool, "newbie");
    c.ok("DELETE Junk");
    c.ok("LOGOUT");
    let mut c = Client::spawn(&spool, "newbie");
    assert_eq!(c.ok("LIST \"\" \"*\"").len(), 5);
}

/// RFC 6154 §5.1: an account that only received mail so far (deliver
/// --autocreate made its INBOX, maybe Junk) gets them at its first login;
/// an account with mailboxes of its own is left as it is.
#[test]
fn existing_accounts_and_special_use_provisioning() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "delivered", 2);
    let mut c = Client::spawn(&spool, "delivered");
    let lines = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert_eq!(
        c.ok("STATUS INBOX (MESSAGES)"),
        vec!["* STATUS \"INBOX\" (MESSAGES 2)"]
    );

    // A spam filter's `deliver --autocreate -m Junk` before the first
    // login: that Junk gets its attribute, the others are created.
    let store = seed_store(&spool, "filtered");
    let u = UserName::new("filtered").unwrap();
    let junk = MailboxName::new("Junk").unwrap();
    store.create_mailbox(&u, &junk).unwrap();
    let validity = store
        .open_mailbox(&u, &junk)
        .unwrap()
        .header()
        .unwrap()
        .uidvalidity;
    let mut c = Client::spawn(&spool, "filtered");
    let lines = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(
        lines.contains(&"* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"".to_string()),
        "{lines:?}"
    );
    assert_eq!(
        c.ok("STATUS Junk (UIDVALIDITY)"),
        vec![format!("* STATUS \"Junk\" (UIDVALIDITY {validity})")],
        "the same Junk, not a new one"
    );

    let store = seed_store(&spool, "migrated");
    let u = UserName::new("migrated").unwrap();
    store
        .create_mailbox(&u, &MailboxName::new("Sent Items").unwrap())
        .unwrap();
    let mut c = Client::spawn(&spool, "migrated");
    assert_eq!(
        c.ok("LIST \"\" \"*\""),
        vec![
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren) \"/\" \"Sent Items\"",
        ]
    );
}

/// RFC 6154 §3 (CREATE-SPECIAL-USE): CREATE with USE sets the attributes;
/// an attribute this server cannot give is refused with NO [USEATTR] and
/// nothing is created. The attribute stays with the mailbox through
/// RENAME and goes with DELETE.
#[test]
fn create_special_use_rename_and_delete() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut c = Client::spawn(&spool, "alice");
    c.ok("CREATE \"Old Mail\" (USE (\\Archive))");
    c.ok("CREATE Outbox (USE (\\Sent \\Drafts))");
    assert_eq!(
        c.ok("LIST \"\" (\"Old Mail\" Outbox)"),
        vec![
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Old Mail\"",
            "* LIST (\\HasNoChildren \\Drafts \\Sent) \"/\" \"Outbox\"",
        ]
    );
    for (cmd, name) in [
        ("CREATE Everything (USE (\\All))", "Everything"),
        ("CREATE Starred (USE (\\Flagged))", "Starred"),
        ("CREATE Odd (USE (\\Frobnicate))", "Odd"),
    ] {
        let (_, tagged) = c.cmd(cmd);
        assert!(tagged.contains("NO [USEATTR]"), "{cmd} -> {tagged}");
        assert!(
            c.ok(&format!("LIST \"\" {name}")).is_empty(),
            "{name} created"
        );
    }
    let (_, tagged) = c.cmd("CREATE Sent (USE (\\Sent))");
    assert!(tagged.contains("NO [ALREADYEXISTS]"), "{tagged}");

    c.ok("RENAME Sent \"Archive/Sent 2026\"");
    assert_eq!(
        c.ok("LIST \"\" \"Archive/*\""),
        vec!["* LIST (\\HasNoChildren \\Sent) \"/\" \"Archive/Sent 2026\""]
    );
    // Archive now has a child: deleting it keeps the directory, not the
    // attribute, and a new Trash is a plain mailbox.
    c.ok("DELETE Archive");
    c.ok("DELETE Trash");
    c.ok("CREATE Trash");
    c.ok("CREATE Archive");
    assert_eq!(
        c.ok("LIST \"\" (Trash Archive)"),
        vec![
            "* LIST (\\HasChildren) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren) \"/\" \"Trash\"",
        ]
    );
    let lines = c.ok("LIST (SPECIAL-USE) \"\" \"*\"");
    assert_eq!(
        lines,
        vec![
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Archive/Sent 2026\"",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"",
            "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"",
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Old Mail\"",
            "* LIST (\\HasNoChildren \\Drafts \\Sent) \"/\" \"Outbox\"",
        ]
    );
}

/// RFC 3502 §6.3.11: several messages in one APPEND, with their own flags
/// and dates, synchronizing literals each answered with a continuation
/// request; APPENDUID gives the UID set (RFC 4315 §3).
#[test]
fn multiappend_appends_all_with_appenduid() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "alice", 1);
    let mut c = Client::spawn(&spool, "alice");
    let (m1, m2, m3) = (message(10), message(11), message(12));
    c.send(&format!(
        "m1 APPEND Drafts (\\Seen) \"05-Mar-2024 10:00:00 +0100\" {{{}}}\r\n",
        m1.len()
    ));
    assert!(c.line().starts_with("+ "));
    c.send(&format!(
        "{} (\\Draft $Work) {{{}}}\r\n",
        String::from_utf8_lossy(&m1),
        m2.len()
    ));
    assert!(c.line().starts_with("+ "));
    c.send(&format!(
        "{} {{{}+}}\r\n{}\r\n",
        String::from_utf8_lossy(&m2),
        m3.len(),
        String::from_utf8_lossy(&m3)
    ));
    let tagged = c.line();
    let validity = {
        let l = c.ok("STATUS Drafts (UIDVALIDITY)");
        l[0].trim_end_matches(')')
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        tagged,
        format!("m1 OK [APPENDUID {validity} 1:3] APPEND completed")
    );
    // This SELECT is the first to learn of them: all three are \Recent
    // here (RFC 3501 2.3.2).
    c.ok("SELECT Drafts");
    let lines = c.ok("FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE)");
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].contains("FLAGS (\\Seen \\Recent)"), "{lines:?}");
    assert!(
        lines[0].contains("INTERNALDATE \"05-Mar-2024 10:00:00 +0100\""),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("FLAGS (\\Draft \\Recent $Work)"),
        "{lines:?}"
    );
    assert!(lines[2].contains("FLAGS (\\Recent)"), "{lines:?}");
    for (i, m) in [&m1, &m2, &m3].iter().enumerate() {
        assert!(
            lines[i].contains(&format!("RFC822.SIZE {}", m.len())),
            "{lines:?}"
        );
        let body = c.ok(&format!("FETCH {} BODY.PEEK[]", i + 1));
        assert!(
            body.concat().contains(&format!("message {}", 10 + i)),
            "{body:?}"
        );
    }
    // A single APPEND still gives a single UID.
    let (_, tagged) = c.cmd(&format!(
        "APPEND Drafts {{{}+}}\r\n{}",
        m1.len(),
        String::from_utf8_lossy(&m1)
    ));
    assert!(
        tagged.contains(&format!("[APPENDUID {validity} 4]")),
        "{tagged}"
    );
}

/// RFC 3502 §6.3.11: all or none. A bad second message (unknown system
/// flag, malformed date, zero length) fails the whole APPEND and the
/// first is not appended; a missing mailbox gives NO [TRYCREATE].
#[test]
fn multiappend_is_all_or_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut c = Client::spawn(&spool, "alice");
    let m = String::from_utf8(message(1)).unwrap();
    let n = m.len();
    for second in ["(\\Bogus)", "\"31-Feb-2024 10:00:00 +0000\"", "(\\Recent)"] {
        let (_, tagged) = c.cmd(&format!(
            "APPEND INBOX {{{n}+}}\r\n{m} {second} {{{n}+}}\r\n{m}"
        ));
        assert!(tagged.contains(" BAD "), "{second}: {tagged}");
    }
    // A zero-length message is refused, and with it the whole batch.
    let (_, tagged) = c.cmd(&format!("APPEND INBOX {{{n}+}}\r\n{m} {{0+}}\r\n"));
    assert!(tagged.contains(" NO "), "{tagged}");
    let (_, tagged) = c.cmd(&format!("APPEND Nowhere {{{n}+}}\r\n{m} {{{n}+}}\r\n{m}"));
    assert!(tagged.contains("NO [TRYCREATE]"), "{tagged}");
    assert_eq!(
        c.ok("STATUS INBOX (MESSAGES UIDNEXT)"),
        vec!["* STATUS \"INBOX\" (MESSAGES 0 UIDNEXT 1)"]
    );
    c.ok("LOGOUT");
    let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
    let u = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    assert_eq!(inbox.header().unwrap().exists, 0);
    // Nothing staged was left behind.
    let stage = store.mailbox_path(&u, &MailboxName::inbox()).join(".stage");
    assert_eq!(std::fs::read_dir(stage).unwrap().count(), 0);
}

/// RFC 3502 §6.3.11 with a session watching: the messages of one APPEND
/// become visible together (one EXISTS jump, never a part of them).
#[test]
fn multiappend_is_seen_at_once_by_another_session() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_store(&spool, "alice");
    let mut watcher = Client::spawn(&spool, "alice");
    watcher.ok("SELECT INBOX");
    let mut c = Client::spawn(&spool, "alice");
    let m = String::from_utf8(message(1)).unwrap();
    let n = m.len();
    let parts: String = (0..20).map(|_| format!(" {{{n}+}}\r\n{m}")).collect();
    c.ok(&format!("APPEND INBOX{parts}"));
    let lines = watcher.ok("NOOP");
    assert_eq!(lines, vec!["* 20 EXISTS", "* 20 RECENT"]);
}

/// FORMAT.md §1 (`.special-use`): a corrupt attribute file is not used
/// (the mailbox is listed without it) and does not fail the LIST of the
/// others.
#[test]
fn corrupt_special_use_file_is_not_used() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut c = Client::spawn(&spool, "alice");
    c.ok("LOGOUT");
    let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
    let u = UserName::new("alice").unwrap();
    let sent = store.mailbox_path(&u, &MailboxName::new("Sent").unwrap());
    std::fs::write(sent.join(".special-use"), "\\Sent\n\\Everything\n").unwrap();
    let err = store
        .special_use(&u, &MailboxName::new("Sent").unwrap())
        .unwrap_err();
    assert!(
        err.to_string().contains("at byte offset 6"),
        "the bad line's offset: {err}"
    );
    let mut c = Client::spawn(&spool, "alice");
    let lines = c.ok("LIST \"\" \"*\"");
    assert!(
        lines.contains(&"* LIST (\\HasNoChildren) \"/\" \"Sent\"".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"".to_string()),
        "{lines:?}"
    );
}
