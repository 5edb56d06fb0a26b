//! RFC 3501 base behaviour that an imaptest-like compliance suite checks,
//! through the real server binary (issue 16, "failure causes").

mod imap_common;

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

fn untagged<'a>(lines: &'a [String], prefix: &str) -> Vec<&'a str> {
    lines
        .iter()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.as_str())
        .collect()
}

fn search(c: &mut Client, q: &str) -> String {
    let lines = c.ok(q);
    untagged(&lines, "* SEARCH")
        .first()
        .map(|l| l.trim_end().to_string())
        .unwrap_or_default()
}

/// `SEARCH CHARSET UTF-8 KEY` with `s` sent as a non-synchronizing
/// literal (RFC 7888), as clients send 8-bit strings.
fn search_utf8(c: &mut Client, key: &str, s: &str) -> String {
    search(
        c,
        &format!("SEARCH CHARSET UTF-8 {key} {{{}+}}\r\n{s}", s.len()),
    )
}

fn append(spool: &std::path::Path, user: &str, mailbox: &str, raw: &[u8]) -> u32 {
    let store = storage::Store::open(spool, storage::Options::default()).unwrap();
    let mut m = store
        .open_mailbox(
            &UserName::new(user).unwrap(),
            &MailboxName::new(mailbox).unwrap(),
        )
        .unwrap();
    m.append(raw, AppendOptions::default()).unwrap()
}

/// A fresh spool whose INBOX of `user` holds `n` messages.
fn spool_with(user: &str, n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, user, n);
    (tmp, spool)
}

/// RFC 3501 2.3.2, 6.3.1, 6.3.2, 6.3.10, 6.4.4, 7.3.2: `\Recent` is set in
/// exactly one session, the first to be told of the message. EXAMINE and
/// STATUS report it without claiming; SELECT claims; a session that learns
/// of new mail (NOOP) claims what nobody has; SEARCH RECENT/NEW/OLD follow
/// it; FLAGS lists it, PERMANENTFLAGS does not, STORE cannot set it.
#[test]
fn recent_is_claimed_by_exactly_one_session() {
    let (_tmp, spool) = spool_with("rc", 2);

    let mut watcher = Client::spawn(&spool, "rc");
    let st = watcher.ok("STATUS INBOX (MESSAGES RECENT)");
    assert_eq!(
        untagged(&st, "* STATUS"),
        ["* STATUS \"INBOX\" (MESSAGES 2 RECENT 2)"]
    );

    // EXAMINE shows them \Recent and claims nothing.
    let mut ex = Client::spawn(&spool, "rc");
    let lines = ex.ok("EXAMINE INBOX");
    assert!(lines.contains(&"* 2 RECENT".to_string()), "{lines:?}");
    let f = ex.ok("FETCH 1:* FLAGS");
    assert_eq!(
        f,
        [
            "* 1 FETCH (FLAGS (\\Recent))",
            "* 2 FETCH (FLAGS (\\Recent))"
        ]
    );
    ex.ok("LOGOUT");

    // The first SELECT claims both.
    let mut a = Client::spawn(&spool, "rc");
    let lines = a.ok("SELECT INBOX");
    assert!(lines.contains(&"* 2 RECENT".to_string()), "{lines:?}");
    let flags_line = untagged(&lines, "* FLAGS")[0].to_string();
    assert!(flags_line.contains("\\Recent"), "{flags_line}");
    let perm = untagged(&lines, "* OK [PERMANENTFLAGS")[0].to_string();
    assert!(!perm.contains("\\Recent"), "{perm}");
    assert_eq!(search(&mut a, "SEARCH RECENT"), "* SEARCH 1 2");
    assert_eq!(search(&mut a, "SEARCH OLD"), "* SEARCH");
    a.ok("STORE 1 +FLAGS.SILENT (\\Seen)");
    assert_eq!(search(&mut a, "SEARCH NEW"), "* SEARCH 2");
    let f = a.ok("FETCH 1 FLAGS");
    assert_eq!(f, ["* 1 FETCH (FLAGS (\\Seen \\Recent))"]);
    // RFC 3501 6.4.6: \Recent is not the client's to change.
    let (_, tagged) = a.cmd("STORE 1 -FLAGS (\\Recent)");
    assert!(tagged.contains(" BAD "), "{tagged}");
    let (_, tagged) = a.cmd("STORE 2 +FLAGS (\\Recent)");
    assert!(tagged.contains(" BAD "), "{tagged}");

    // A second SELECT gets none of them.
    let mut b = Client::spawn(&spool, "rc");
    let lines = b.ok("SELECT INBOX");
    assert!(lines.contains(&"* 0 RECENT".to_string()), "{lines:?}");
    assert_eq!(search(&mut b, "SEARCH RECENT"), "* SEARCH");
    assert_eq!(search(&mut b, "SEARCH OLD"), "* SEARCH 1 2");
    assert_eq!(b.ok("FETCH 2 FLAGS"), ["* 2 FETCH (FLAGS ())"]);

    // New mail: STATUS counts it without claiming it; the first selected
    // session told of it (here b, at NOOP) claims it.
    append(&spool, "rc", "INBOX", &message(7));
    let st = watcher.ok("STATUS INBOX (RECENT)");
    assert_eq!(untagged(&st, "* STATUS"), ["* STATUS \"INBOX\" (RECENT 1)"]);
    let n = b.ok("NOOP");
    assert_eq!(n, ["* 3 EXISTS", "* 1 RECENT"]);
    assert_eq!(search(&mut b, "UID SEARCH RECENT"), "* SEARCH 3");
    let n = a.ok("NOOP");
    assert_eq!(n, ["* 3 EXISTS", "* 2 RECENT"], "a keeps its own two");
    assert_eq!(search(&mut a, "SEARCH RECENT"), "* SEARCH 1 2");
    let st = watcher.ok("STATUS INBOX (RECENT)");
    assert_eq!(untagged(&st, "* STATUS"), ["* STATUS \"INBOX\" (RECENT 0)"]);
    // STATUS of the selected mailbox counts this session's own.
    let st = a.ok("STATUS INBOX (RECENT)");
    assert_eq!(untagged(&st, "* STATUS"), ["* STATUS \"INBOX\" (RECENT 2)"]);
}

/// RFC 3501 2.3.2 with the store's `.recent` file (docs/FORMAT.md §8)
/// damaged: it reads as "nothing claimed" (every message is \Recent to the
/// next SELECT) and the claim rewrites it; a file of another UIDVALIDITY
/// likewise claims nothing.
#[test]
fn a_damaged_recent_file_means_nothing_claimed() {
    let (_tmp, spool) = spool_with("rd", 3);
    let mut a = Client::spawn(&spool, "rd");
    assert!(a.ok("SELECT INBOX").contains(&"* 3 RECENT".to_string()));
    a.ok("LOGOUT");
    let file = spool.join("rd/INBOX/.recent");
    let mut bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len(), 20);
    bytes[12] ^= 0xff; // the claimed UID, now failing the CRC
    std::fs::write(&file, &bytes).unwrap();
    let mut b = Client::spawn(&spool, "rd");
    assert!(b.ok("SELECT INBOX").contains(&"* 3 RECENT".to_string()));
    b.ok("LOGOUT");
    let mut c = Client::spawn(&spool, "rd");
    assert!(c.ok("SELECT INBOX").contains(&"* 0 RECENT".to_string()));
    c.ok("LOGOUT");
    // Another UIDVALIDITY's claim does not count.
    let mut other = std::fs::read(&file).unwrap();
    other[8] ^= 1;
    let crc = crc32fast::hash(&other[..16]);
    other[16..20].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&file, &other).unwrap();
    let mut d = Client::spawn(&spool, "rd");
    assert!(d.ok("SELECT INBOX").contains(&"* 3 RECENT".to_string()));
}

/// RFC 3501 2.2 asks for CRLF, but servers (Dovecot, Cyrus) accept a
/// command line ending in a bare LF, literals announced as `{n}\n`
/// included; a malformed command stays BAD.
#[test]
fn bare_lf_command_lines_are_accepted() {
    let (_tmp, spool) = spool_with("lf", 1);
    let mut c = Client::spawn(&spool, "lf");
    c.send("a1 NOOP\n");
    assert_eq!(c.line(), "a1 OK NOOP completed");
    c.send("a2 SELECT {5}\n");
    assert!(c.line().starts_with("+ "));
    c.send("INBOX\n");
    let mut lines = Vec::new();
    loop {
        let l = c.line();
        if l.starts_with("a2 ") {
            assert!(l.starts_with("a2 OK"), "{l}");
            break;
        }
        lines.push(l);
    }
    assert!(lines.contains(&"* 1 EXISTS".to_string()), "{lines:?}");
    c.send("a3 UID FETCH 1 (UID)\n");
    assert_eq!(c.line(), "* 1 FETCH (UID 1)");
    assert!(c.line().starts_with("a3 OK"));
    c.send("a4 FETCH 1 (UID\n");
    assert!(c.line().starts_with("a4 BAD"));
    c.send("a5 NOOP \n");
    assert!(
        c.line().starts_with("a5 BAD"),
        "trailing space stays an error"
    );
    c.ok("LOGOUT");
}

/// RFC 3501 6.3.9: `LSUB "" a/%` with `a/b/c` subscribed and `a/b` not
/// lists `a/b` as \Noselect; `*` lists only what is subscribed (and no
/// parent when only a `*` stops above a name). RFC 3501
/// 6.3.8: `LIST "" ""` gives the delimiter and the reference's root;
/// `%` stops at the delimiter, `*` does not, the reference is prefixed.
#[test]
fn lsub_lists_unsubscribed_parents_as_noselect() {
    let (_tmp, spool) = spool_with("ls", 1);
    let mut c = Client::spawn(&spool, "ls");
    c.ok("CREATE a/b/c");
    c.ok("CREATE a/x");
    c.ok("SUBSCRIBE a/b/c");
    c.ok("SUBSCRIBE a/x");
    let l = c.ok("LSUB \"\" a/%");
    assert_eq!(
        l,
        [
            "* LSUB (\\Noselect \\HasChildren) \"/\" \"a/b\"",
            "* LSUB (\\HasNoChildren) \"/\" \"a/x\""
        ]
    );
    let l = c.ok("LSUB \"\" %");
    assert_eq!(l, ["* LSUB (\\Noselect \\HasChildren) \"/\" \"a\""]);
    let l = c.ok("LSUB \"\" *");
    assert_eq!(
        l,
        [
            "* LSUB (\\HasNoChildren) \"/\" \"a/b/c\"",
            "* LSUB (\\HasNoChildren) \"/\" \"a/x\""
        ]
    );
    // Only a `%` stops above a name: `*b` matches the unsubscribed `a/b`
    // but not the subscribed `a/b/c`, and lists nothing.
    assert!(c.ok("LSUB \"\" *b").is_empty());
    assert_eq!(
        c.ok("LSUB \"\" *b/%"),
        ["* LSUB (\\HasNoChildren) \"/\" \"a/b/c\""]
    );
    // A subscribed parent is listed as what it is.
    c.ok("SUBSCRIBE a/b");
    let l = c.ok("LSUB \"a/\" %");
    assert_eq!(
        l,
        [
            "* LSUB (\\Noselect \\HasChildren) \"/\" \"a/b\"",
            "* LSUB (\\HasNoChildren) \"/\" \"a/x\""
        ],
        "a/b exists only as a parent directory, so it stays \\Noselect"
    );
    c.ok("CREATE a/b");
    c.ok("UNSUBSCRIBE a/x");
    let l = c.ok("LSUB \"\" a/%");
    assert_eq!(l, ["* LSUB (\\HasChildren) \"/\" \"a/b\""]);

    assert_eq!(c.ok("LIST \"\" \"\""), ["* LIST (\\Noselect) \"/\" \"\""]);
    assert_eq!(
        c.ok("LIST \"a/b\" \"\""),
        ["* LIST (\\Noselect) \"/\" \"a/\""]
    );
    // The five special-use mailboxes a new account gets at login
    // (OPERATIONS.md) are listed beside the test's own.
    assert_eq!(
        c.ok("LIST \"\" %"),
        [
            "* LIST (\\HasNoChildren \\Archive) \"/\" \"Archive\"",
            "* LIST (\\HasNoChildren \\Drafts) \"/\" \"Drafts\"",
            "* LIST (\\HasNoChildren) \"/\" \"INBOX\"",
            "* LIST (\\HasNoChildren \\Junk) \"/\" \"Junk\"",
            "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent\"",
            "* LIST (\\HasNoChildren \\Trash) \"/\" \"Trash\"",
            "* LIST (\\Noselect \\HasChildren) \"/\" \"a\""
        ]
    );
    assert_eq!(
        c.ok("LIST a/ %"),
        [
            "* LIST (\\HasChildren) \"/\" \"a/b\"",
            "* LIST (\\HasNoChildren) \"/\" \"a/x\""
        ]
    );
    assert_eq!(
        c.ok("LIST \"\" a/*"),
        [
            "* LIST (\\HasChildren) \"/\" \"a/b\"",
            "* LIST (\\HasNoChildren) \"/\" \"a/b/c\"",
            "* LIST (\\HasNoChildren) \"/\" \"a/x\""
        ]
    );
    // INBOX is case-insensitive in patterns too (RFC 3501 5.1).
    for p in ["inbox", "inb*", "Inbo%"] {
        assert_eq!(
            c.ok(&format!("LIST \"\" {p}")),
            ["* LIST (\\HasNoChildren) \"/\" \"INBOX\""],
            "{p}"
        );
    }
}

/// Appends each message (LF line ends made CRLF) to a fresh INBOX of
/// `user` and opens a session with it selected.
fn session_with(user: &str, msgs: &[&str]) -> (tempfile::TempDir, Client) {
    let (tmp, spool) = spool_with(user, 0);
    for m in msgs {
        append(&spool, user, "INBOX", m.replace('\n', "\r\n").as_bytes());
    }
    let mut c = Client::spawn(&spool, user);
    c.ok("SELECT INBOX");
    (tmp, c)
}

/// RFC 3501 7.4.2, ENVELOPE: Sender and Reply-To absent or empty take the
/// From value; groups give start and end markers (a group of only a
/// comment invents no address); a source route gives the at-domain-list;
/// a comment after a bare address is its name; quoted local parts are
/// unquoted, encoded words kept as written, a missing domain is NIL.
#[test]
fn envelope_address_corner_cases() {
    let d = "Date: Thu, 15 Feb 2007 01:02:03 +0200\n";
    let msgs = [
        format!(
            "Message-ID: <msg@id>\nIn-Reply-To: <reply@to.id>\n{d}Subject: subject header\nFrom: From Real <fromuser@fromdomain.org>\nTo: To Real <touser@todomain.org>\nCc: Cc Real <ccuser@ccdomain.org>\nBcc: Bcc Real <bccuser@bccdomain.org>\nSender: Sender Real <senderuser@senderdomain.org>\nReply-To: ReplyTo Real <replytouser@replytodomain.org>\n\nbody\n"
        ),
        format!("{d}From: user@domain\n\nbody\n"),
        format!(
            "{d}From: user@domain (Real Name)\nTo: group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;\nCc: group:;, group2: (foo) ;\n\nbody\n"
        ),
        format!("{d}From: user@domain (Real Name)\nSender: \nReply-To: \n\nbody\n"),
        format!("{d}From: <@route:user@domain>\n\nbody\n"),
        format!(
            "{d}From: \"Doe, John\" <\"john doe\"@x.org>\nTo: undisclosed-recipients:;\nCc: =?utf-8?q?J=C3=B6rg?= <j@y.org>, nohost\nBcc: <plain@z.org>,\n other@z.org\n\nbody\n"
        ),
    ];
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    let (_tmp, mut c) = session_with("env", &refs);
    let lines = c.ok("FETCH 1:* ENVELOPE");
    let date = "\"Thu, 15 Feb 2007 01:02:03 +0200\"";
    let rn = "((\"Real Name\" NIL \"user\" \"domain\"))";
    let expected = [
        format!(
            "* 1 FETCH (ENVELOPE ({date} \"subject header\" ((\"From Real\" NIL \"fromuser\" \"fromdomain.org\")) ((\"Sender Real\" NIL \"senderuser\" \"senderdomain.org\")) ((\"ReplyTo Real\" NIL \"replytouser\" \"replytodomain.org\")) ((\"To Real\" NIL \"touser\" \"todomain.org\")) ((\"Cc Real\" NIL \"ccuser\" \"ccdomain.org\")) ((\"Bcc Real\" NIL \"bccuser\" \"bccdomain.org\")) \"<reply@to.id>\" \"<msg@id>\"))"
        ),
        format!(
            "* 2 FETCH (ENVELOPE ({date} NIL ((NIL NIL \"user\" \"domain\")) ((NIL NIL \"user\" \"domain\")) ((NIL NIL \"user\" \"domain\")) NIL NIL NIL NIL NIL))"
        ),
        format!(
            "* 3 FETCH (ENVELOPE ({date} NIL {rn} {rn} {rn} ((NIL NIL \"group\" NIL)(NIL NIL \"g1\" \"d1.org\")(NIL NIL \"g2\" \"d2.org\")(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL \"g3\" \"d3.org\")(NIL NIL NIL NIL)) ((NIL NIL \"group\" NIL)(NIL NIL NIL NIL)(NIL NIL \"group2\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL))"
        ),
        format!("* 4 FETCH (ENVELOPE ({date} NIL {rn} {rn} {rn} NIL NIL NIL NIL NIL))"),
        format!(
            "* 5 FETCH (ENVELOPE ({date} NIL ((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@route\" \"user\" \"domain\")) ((NIL \"@route\" \"user\" \"domain\")) NIL NIL NIL NIL NIL))"
        ),
        format!(
            "* 6 FETCH (ENVELOPE ({date} NIL ((\"Doe, John\" NIL \"john doe\" \"x.org\")) ((\"Doe, John\" NIL \"john doe\" \"x.org\")) ((\"Doe, John\" NIL \"john doe\" \"x.org\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) ((\"=?utf-8?q?J=C3=B6rg?=\" NIL \"j\" \"y.org\")(NIL NIL \"nohost\" NIL)) ((NIL NIL \"plain\" \"z.org\")(NIL NIL \"other\" \"z.org\")) NIL NIL))"
        ),
    ];
    assert_eq!(lines, expected);
}

/// RFC 3501 6.4.4, SEARCH FROM/TO/CC/BCC: a substring of the address with
/// comments and folding removed, or of the display name (a comment after
/// a bare address standing for it), or of a group's name.
#[test]
fn search_addresses_ignore_comments_and_folding() {
    let (_tmp, mut c) = session_with(
        "sa",
        &[
            "From: user-from@domain.org\nTo: user-to@domain.org\nCc: user-cc@domain.org\n\nbody\n",
            "From: RealFrom <user-from@domain.org>\nTo: RealTo <user-to@domain.org>\n\nbody2\n",
            "From: <user-from (comment)@ (comment) domain.org>\nTo: <user-to@\n domain.org>\n\nbody3\n",
            "From: user-from@domain.org (RealFrom)\nTo: user-to@domain.org (RealTo)\n\nbody4\n",
            "From: user-from1@domain.org, user-from2@domain.org\nCc: user-cc@domain.org\n\nbody5\n",
            "To: groupname: groupuser1@domain.org, groupuser2@domain.org;,\n  groupname2: groupuser3@domain.org;\n\nbody6\n",
        ],
    );
    for (q, want) in [
        ("FROM user-from@domain.org", "* SEARCH 1 2 3 4"),
        ("TO user-to@domain.org", "* SEARCH 1 2 3 4"),
        ("CC user-cc@domain.org", "* SEARCH 1 5"),
        ("FROM realfrom", "* SEARCH 2 4"),
        ("FROM ealfro", "* SEARCH 2 4"),
        ("FROM ser-fro", "* SEARCH 1 2 3 4 5"),
        ("FROM comment", "* SEARCH"),
        ("FROM user-from2", "* SEARCH 5"),
        ("TO groupname2", "* SEARCH 6"),
        ("TO groupuser3", "* SEARCH 6"),
        ("TO groupuser4", "* SEARCH"),
        ("HEADER TO \"\"", "* SEARCH 1 2 3 4 6"),
        ("HEADER CC \"\"", "* SEARCH 1 5"),
        ("HEADER BCC \"\"", "* SEARCH"),
    ] {
        assert_eq!(search(&mut c, &format!("SEARCH {q}")), want, "{q}");
    }
}

/// RFC 6851 3.3 and RFC 3501 6.4.7: MOVE and COPY into the selected
/// mailbox. COPY answers COPYUID and the copies arrive as EXISTS; MOVE
/// sends COPYUID in an untagged OK before the EXPUNGEs of the originals,
/// then EXISTS for the copies, which keep their flags. A second session
/// sees the same end state.
#[test]
fn copy_and_move_into_the_selected_mailbox() {
    let (_tmp, spool) = spool_with("mv", 3);
    let mut c = Client::spawn(&spool, "mv");
    c.ok("SELECT INBOX");
    c.ok("STORE 1 +FLAGS.SILENT (\\Flagged)");
    let lines = c.ok("COPY 3 INBOX");
    assert_eq!(lines, ["* 4 EXISTS", "* 4 RECENT"]);
    let (_, tagged) = c.cmd("NOOP");
    assert!(tagged.contains("OK"));
    let (lines, tagged) = c.cmd("MOVE 1:2 INBOX");
    assert!(tagged.ends_with("OK MOVE completed"), "{tagged}");
    let copyuid = lines.iter().position(|l| l.starts_with("* OK [COPYUID "));
    let first_expunge = lines.iter().position(|l| l.ends_with(" EXPUNGE"));
    assert!(
        copyuid.is_some() && copyuid < first_expunge,
        "COPYUID before the expunges: {lines:?}"
    );
    let uv = lines[copyuid.unwrap()]
        .split(' ')
        .nth(3)
        .unwrap()
        .to_string();
    assert_eq!(
        lines[copyuid.unwrap()],
        format!("* OK [COPYUID {uv} 1:2 5:6] Moved")
    );
    let mut model = Model {
        msgs: (1..=4).map(|u| (Some(u), None)).collect(),
    };
    model.apply(&lines);
    assert!(lines.contains(&"* 4 EXISTS".to_string()), "{lines:?}");
    model.apply(&c.ok("FETCH 1:* (UID FLAGS)"));
    let got: Vec<(u32, Vec<String>)> = model
        .msgs
        .iter()
        .map(|(u, f)| (u.unwrap(), f.clone().unwrap()))
        .collect();
    let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        got,
        [
            (3, f(&["\\Recent"])),
            (4, f(&["\\Recent"])),
            (5, f(&["\\Flagged", "\\Recent"])),
            (6, f(&["\\Recent"])),
        ]
    );
    // UID MOVE of a single message within the mailbox.
    let lines = c.ok("UID MOVE 5 INBOX");
    assert_eq!(
        lines,
        [
            format!("* OK [COPYUID {uv} 5 7] Moved"),
            "* 3 EXPUNGE".to_string(),
            "* 4 EXISTS".to_string(),
            "* 4 RECENT".to_string(),
        ]
    );
    let mut other = Client::spawn(&spool, "mv");
    let lines = other.ok("EXAMINE INBOX");
    assert!(lines.contains(&"* 4 EXISTS".to_string()), "{lines:?}");
    assert_eq!(
        other.ok("UID FETCH 1:* (FLAGS)"),
        [
            "* 1 FETCH (UID 3 FLAGS ())",
            "* 2 FETCH (UID 4 FLAGS ())",
            "* 3 FETCH (UID 6 FLAGS ())",
            "* 4 FETCH (UID 7 FLAGS (\\Flagged))",
        ]
    );
}

/// The items of the one FETCH response a command gives: (name, value),
/// literals and quoted strings unwrapped, read from the raw response.
fn fetch_items(c: &mut Client, cmd: &str) -> Vec<(String, Vec<u8>)> {
    c.send(&format!("x {cmd}\r\n"));
    let mut raw = Vec::new();
    // Bytes of a literal still to come: lines inside it are data.
    let mut in_literal = 0usize;
    loop {
        let l = c.raw_line().expect("server closed");
        raw.extend_from_slice(&l);
        let rest = if in_literal >= l.len() {
            in_literal -= l.len();
            continue;
        } else {
            let r = &l[in_literal..];
            in_literal = 0;
            r
        };
        if let Some(open) = rest.iter().rposition(|&b| b == b'{')
            && rest.ends_with(b"}\r\n")
        {
            in_literal = std::str::from_utf8(&rest[open + 1..rest.len() - 3])
                .unwrap()
                .parse()
                .unwrap();
            continue;
        }
        if rest.starts_with(b"x ") {
            assert!(
                rest.starts_with(b"x OK"),
                "{}",
                String::from_utf8_lossy(rest)
            );
            break;
        }
    }
    // `NAME {n}\r\nBYTES` or `NAME "str"` or `NAME NIL` items after "FETCH (".
    let mut out = Vec::new();
    let start = raw.windows(7).position(|w| w == b"FETCH (").unwrap() + 7;
    let mut i = start;
    while i < raw.len() && raw[i] != b')' {
        let sp = i + raw[i..].iter().position(|&b| b == b' ').unwrap();
        // Section names may hold spaces inside [..].
        let mut name_end = sp;
        if let Some(br) = raw[i..sp].iter().position(|&b| b == b'[') {
            let close = i + br + raw[i + br..].iter().position(|&b| b == b']').unwrap();
            name_end = close + 1 + raw[close..].iter().position(|&b| b == b' ').unwrap() - 1;
        }
        let name = String::from_utf8_lossy(&raw[i..name_end]).into_owned();
        i = name_end + 1;
        let value;
        if raw[i] == b'{' {
            let close = i + raw[i..].iter().position(|&b| b == b'}').unwrap();
            let n: usize = std::str::from_utf8(&raw[i + 1..close])
                .unwrap()
                .parse()
                .unwrap();
            value = raw[close + 3..close + 3 + n].to_vec();
            i = close + 3 + n;
        } else if raw[i] == b'"' {
            let close = i + 1 + raw[i + 1..].iter().position(|&b| b == b'"').unwrap();
            value = raw[i + 1..close].to_vec();
            i = close + 1;
        } else {
            let end = i + raw[i..]
                .iter()
                .position(|&b| b == b' ' || b == b')')
                .unwrap();
            value = raw[i..end].to_vec();
            i = end;
        }
        out.push((name, value));
        if raw[i] == b' ' {
            i += 1;
        }
    }
    out
}

fn crlf(s: &str) -> Vec<u8> {
    s.replace('\n', "\r\n").into_bytes()
}

/// imaptest's fetch-body-mime message: a multipart/mixed (folded
/// boundary parameter) holding a text part and a message/rfc822 whose body
/// is a multipart/alternative with prologue and epilogue.
const NESTED: &str = "From: user@domain.org\nDate: Sat, 24 Mar 2007 23:00:00 +0200\nMime-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"foo\n bar\"\n\nRoot MIME prologue\n\n--foo bar\nContent-Type: text/x-myown; charset=us-ascii\n\nhello\n\n--foo bar\nContent-Type: message/rfc822\n\nFrom: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\nContent-Type: multipart/alternative; boundary=\"sub1\"\n\nSub MIME prologue\n--sub1\nContent-Type: text/html\n\n<p>Hello world</p>\n\n--sub1\nContent-Type: text/plain\n\nHello another world\n\n--sub1--\nSub MIME epilogue\n\n--foo bar--\nRoot MIME epilogue\n";

/// RFC 3501 6.4.5, body sections of nested messages: `n.TEXT` of a
/// message/rfc822 part is everything after its header, the epilogue of
/// its multipart included; `n.MIME` is the part's MIME header, `n.HEADER`
/// the encapsulated message's; `2.1` counts inside the encapsulated
/// multipart; partial fetches clip at the end (`<origin>` beyond it is
/// empty). The message is imaptest's fetch-body-mime case.
#[test]
fn nested_message_sections_keep_the_epilogue() {
    let raw = NESTED;
    let (_tmp, mut c) = session_with("sec", &[raw]);
    let inner_header = "From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\nContent-Type: multipart/alternative; boundary=\"sub1\"\n\n";
    let inner_text = "Sub MIME prologue\n--sub1\nContent-Type: text/html\n\n<p>Hello world</p>\n\n--sub1\nContent-Type: text/plain\n\nHello another world\n\n--sub1--\nSub MIME epilogue\n";
    let items = fetch_items(
        &mut c,
        "FETCH 1 (BODY.PEEK[1] BODY.PEEK[1.MIME] BODY.PEEK[2] BODY.PEEK[2.MIME] BODY.PEEK[2.HEADER] BODY.PEEK[2.HEADER.FIELDS (from subject X-foo)] BODY.PEEK[2.HEADER.FIELDS.NOT (from subject X-foo)] BODY.PEEK[2.TEXT] BODY.PEEK[2.1.MIME] BODY.PEEK[2.1] BODY.PEEK[2.2.MIME] BODY.PEEK[2.2] BODY.PEEK[2.2.TEXT] BODY.PEEK[3])",
    );
    let want: Vec<(&str, Vec<u8>)> = vec![
        ("BODY[1]", crlf("hello\n")),
        (
            "BODY[1.MIME]",
            crlf("Content-Type: text/x-myown; charset=us-ascii\n\n"),
        ),
        ("BODY[2]", crlf(&format!("{inner_header}{inner_text}"))),
        ("BODY[2.MIME]", crlf("Content-Type: message/rfc822\n\n")),
        ("BODY[2.HEADER]", crlf(inner_header)),
        (
            "BODY[2.HEADER.FIELDS (from subject X-foo)]",
            crlf("From: sub@domain.org\nSubject: submsg\n\n"),
        ),
        (
            "BODY[2.HEADER.FIELDS.NOT (from subject X-foo)]",
            crlf(
                "Date: Sun, 12 Aug 2012 12:34:56 +0300\nContent-Type: multipart/alternative; boundary=\"sub1\"\n\n",
            ),
        ),
        ("BODY[2.TEXT]", crlf(inner_text)),
        ("BODY[2.1.MIME]", crlf("Content-Type: text/html\n\n")),
        ("BODY[2.1]", crlf("<p>Hello world</p>\n")),
        ("BODY[2.2.MIME]", crlf("Content-Type: text/plain\n\n")),
        ("BODY[2.2]", crlf("Hello another world\n")),
        // A part that is not a message has no TEXT (RFC 3501 6.4.5).
        ("BODY[2.2.TEXT]", b"NIL".to_vec()),
        ("BODY[3]", b"NIL".to_vec()),
    ];
    let got: Vec<(String, Vec<u8>)> = items;
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((gn, gv), (wn, wv)) in got.iter().zip(&want) {
        assert_eq!(gn, wn);
        assert_eq!(
            String::from_utf8_lossy(gv),
            String::from_utf8_lossy(wv),
            "{wn}"
        );
    }
    // Partial fetches: inside, across the end, and past it.
    let items = fetch_items(
        &mut c,
        "FETCH 1 (BODY.PEEK[2.TEXT]<0.3> BODY.PEEK[2.TEXT]<150.100> BODY.PEEK[2.TEXT]<500.10> BODY.PEEK[]<0.4> BODY.PEEK[2.1]<18.5>)",
    );
    let text = crlf(inner_text);
    assert_eq!(
        items,
        [
            ("BODY[2.TEXT]<0>".to_string(), b"Sub".to_vec()),
            ("BODY[2.TEXT]<150>".to_string(), text[150..].to_vec()),
            ("BODY[2.TEXT]<500>".to_string(), Vec::new()),
            ("BODY[]<0>".to_string(), b"From".to_vec()),
            ("BODY[2.1]<18>".to_string(), b"\r\n".to_vec()),
        ]
    );
}

/// RFC 3501 7.4.2, BODY and BODYSTRUCTURE: a message/rfc822 part carries
/// the envelope, body and line count of the encapsulated message; a
/// multipart/alternative its parts and subtype, with the boundary,
/// disposition, language and location as extension data; a single part
/// its MD5, disposition with parameters and Content-Language as one
/// string or a list.
#[test]
fn bodystructure_of_nested_and_single_parts() {
    let single = "From: a@b\nContent-Type: text/plain; charset=\"UTF-8\"; format=flowed\nContent-Transfer-Encoding: quoted-printable\nContent-Disposition: inline; filename=\"x.txt\"\nContent-Language: en, de\nContent-ID: <cid@x>\nContent-Description: desc\n\nhi=\n there\n";
    let (_tmp, mut c) = session_with("bs", &[NESTED, single]);
    let env = "(\"Sun, 12 Aug 2012 12:34:56 +0300\" \"submsg\" ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) ((NIL NIL \"sub\" \"domain.org\")) NIL NIL NIL NIL NIL)";
    assert_eq!(
        c.ok("FETCH 1:2 (BODYSTRUCTURE)"),
        [
            format!("* 1 FETCH (BODYSTRUCTURE ((\"TEXT\" \"X-MYOWN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 7 1 NIL NIL NIL NIL)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 298 {env} ((\"TEXT\" \"HTML\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 20 1 NIL NIL NIL NIL)(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 21 1 NIL NIL NIL NIL) \"ALTERNATIVE\" (\"BOUNDARY\" \"sub1\") NIL NIL NIL) 18 NIL NIL NIL NIL) \"MIXED\" (\"BOUNDARY\" \"foo bar\") NIL NIL NIL))"),
            "* 2 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"UTF-8\" \"FORMAT\" \"flowed\") \"<cid@x>\" \"desc\" \"QUOTED-PRINTABLE\" 13 2 NIL (\"INLINE\" (\"FILENAME\" \"x.txt\")) (\"en\" \"de\") NIL))".to_string(),
        ]
    );
    assert_eq!(
        c.ok("FETCH 1 (BODY)"),
        [format!(
            "* 1 FETCH (BODY ((\"TEXT\" \"X-MYOWN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 7 1)(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 298 {env} ((\"TEXT\" \"HTML\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 20 1)(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 21 1) \"ALTERNATIVE\") 18) \"MIXED\"))"
        )]
    );
    // RFC 3501 7.4.2: INTERNALDATE is "dd-Mon-yyyy hh:mm:ss +zzzz" and
    // RFC822.SIZE the stored size.
    let l = c.ok("FETCH 2 (INTERNALDATE RFC822.SIZE)");
    let size = single.replace('\n', "\r\n").len();
    assert!(l[0].ends_with(&format!(" RFC822.SIZE {size})")), "{l:?}");
    let date = l[0].split('"').nth(1).unwrap();
    assert_eq!(date.len(), 26, "{date}");
    assert!(
        date.as_bytes()[2] == b'-' && date.as_bytes()[6] == b'-' && &date[20..22] == " +",
        "{date}"
    );
}

/// RFC 3501 6.4.4 and 6.4.8: SEARCH by flags (RECENT/NEW/OLD included),
/// keywords, sequence sets and UID sets after an EXPUNGE broke seq = UID,
/// `*` ranges either way round, OR/NOT, LARGER/SMALLER on RFC822.SIZE; 6.4.5
/// FETCH by reversed and `*` ranges, UID FETCH `n:*` beyond the last UID;
/// 6.4.6 STORE .SILENT sends nothing; 6.4.3 EXPUNGE responses decrement as
/// they go; 6.4.2 CLOSE sends no EXPUNGE; 6.3.10 STATUS of the selected
/// mailbox. (The imaptest search-flags/-sets/-size and fetch cases.)
#[test]
fn search_fetch_store_expunge_basics() {
    let msgs: Vec<String> = (1..=6)
        .map(|i| format!("Subject: s{i}\n\n{}\n", "x".repeat(i * 10)))
        .collect();
    let refs: Vec<&str> = msgs.iter().map(String::as_str).collect();
    let (_tmp, mut c) = session_with("sb", &refs);
    // A new keyword is announced (FLAGS), but .SILENT sends no FETCH.
    let l = c.ok("STORE 1 FLAGS.SILENT ($hello)");
    assert!(!l.iter().any(|l| l.contains(" FETCH ")), "{l:?}");
    assert!(
        l[0].starts_with("* FLAGS (") && l[0].contains("$hello"),
        "{l:?}"
    );
    c.ok("STORE 2 FLAGS (\\Seen \\Flagged)");
    c.ok("STORE 3 FLAGS (\\Answered $hello)");
    c.ok("STORE 4 FLAGS (\\Flagged \\Draft)");
    c.ok("STORE 5 FLAGS (\\Deleted \\Answered)");
    for (q, want) in [
        ("ANSWERED", "3 5"),
        ("UNANSWERED", "1 2 4 6"),
        ("DELETED", "5"),
        ("UNDELETED", "1 2 3 4 6"),
        ("DRAFT", "4"),
        ("UNDRAFT", "1 2 3 5 6"),
        ("FLAGGED", "2 4"),
        ("UNFLAGGED", "1 3 5 6"),
        ("SEEN", "2"),
        ("UNSEEN", "1 3 4 5 6"),
        ("KEYWORD $hello", "1 3"),
        ("UNKEYWORD $hello", "2 4 5 6"),
        ("NEW", "1 3 4 5 6"),
        ("OLD", ""),
        ("RECENT", "1 2 3 4 5 6"),
    ] {
        let want = format!("* SEARCH {want}").trim_end().to_string();
        assert_eq!(search(&mut c, &format!("SEARCH {q}")), want, "{q}");
    }
    let uids: Vec<String> = c.ok("UID SEARCH ALL")[0]
        .split(' ')
        .skip(2)
        .map(str::to_string)
        .collect();
    assert_eq!(uids, ["1", "2", "3", "4", "5", "6"]);
    // Break seq = UID: expunge message 2 (UID 2).
    c.ok("STORE 5 -FLAGS.SILENT (\\Deleted)");
    c.ok("STORE 2 +FLAGS.SILENT (\\Deleted)");
    assert_eq!(c.ok("EXPUNGE"), ["* 2 EXPUNGE"]);
    for (q, want) in [
        ("SEARCH ALL", "1 2 3 4 5"),
        ("UID SEARCH ALL", "1 3 4 5 6"),
        ("SEARCH 1:3,5", "1 2 3 5"),
        ("SEARCH 4:2", "2 3 4"),
        ("SEARCH UID 1:3,5", "1 2 4"),
        ("SEARCH UID 4:2", "2 3"),
        ("SEARCH 1:3 NOT UID 3", "1 3"),
        ("SEARCH NOT 2,4", "1 3 5"),
        ("SEARCH OR 1 UID 3", "1 2"),
        ("SEARCH *", "5"),
        ("SEARCH UID *", "5"),
        ("SEARCH 6:*", "5"),
        ("SEARCH *:6", "5"),
        ("SEARCH UID 7:*", "5"),
        ("SEARCH *:3", "3 4 5"),
        ("SEARCH 1,4,*", "1 4 5"),
        ("SEARCH CHARSET UTF-8 SUBJECT s4", "3"),
        ("SEARCH CHARSET US-ASCII HEADER Subject \"\"", "1 2 3 4 5"),
        ("SEARCH HEADER X-None \"\"", ""),
    ] {
        let want = format!("* SEARCH {want}").trim_end().to_string();
        assert_eq!(search(&mut c, q), want, "{q}");
    }
    // Sizes: message 3 (UID 4) is 40 x's plus header.
    let size: u64 = c.ok("FETCH 3 RFC822.SIZE")[0]
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for (q, want) in [
        (format!("SMALLER {size}"), "1 2"),
        (format!("LARGER {size}"), "4 5"),
        (format!("NOT SMALLER {size}"), "3 4 5"),
        (format!("NOT SMALLER {size} NOT LARGER {size}"), "3"),
        (format!("OR SMALLER {size} LARGER {size}"), "1 2 4 5"),
    ] {
        assert_eq!(
            search(&mut c, &format!("SEARCH {q}")),
            format!("* SEARCH {want}"),
            "{q}"
        );
    }
    let (_, tagged) = c.cmd("SEARCH CHARSET KOI8-R SUBJECT s");
    assert!(tagged.contains("NO [BADCHARSET"), "{tagged}");
    // FETCH ranges.
    assert_eq!(
        c.ok("FETCH 3:1 UID"),
        [
            "* 1 FETCH (UID 1)",
            "* 2 FETCH (UID 3)",
            "* 3 FETCH (UID 4)"
        ]
    );
    assert_eq!(
        c.ok("FETCH 1,* UID"),
        ["* 1 FETCH (UID 1)", "* 5 FETCH (UID 6)"]
    );
    assert_eq!(c.ok("UID FETCH 7:* UID"), ["* 5 FETCH (UID 6)"]);
    assert!(c.ok("UID FETCH 2 UID").is_empty());
    // STATUS of the selected mailbox.
    let st = c.ok("STATUS INBOX (MESSAGES UIDNEXT UNSEEN RECENT)");
    assert_eq!(
        untagged(&st, "* STATUS"),
        ["* STATUS \"INBOX\" (MESSAGES 5 UIDNEXT 7 UNSEEN 5 RECENT 5)"]
    );
    // Several expunges: each EXPUNGE names a current sequence number.
    c.ok("STORE 1:* +FLAGS.SILENT (\\Deleted)");
    c.ok("STORE 2 -FLAGS.SILENT (\\Deleted)");
    let lines = c.ok("EXPUNGE");
    let mut model = Model {
        msgs: (1..=5).map(|s| (Some(s), None)).collect(),
    };
    model.apply(&lines);
    assert_eq!(model.msgs.len(), 1, "{lines:?}");
    assert_eq!(
        model.msgs[0].0,
        Some(2),
        "the survivor was seq 2: {lines:?}"
    );
    // CLOSE expunges silently.
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted)");
    assert!(c.ok("CLOSE").is_empty());
    let st = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        untagged(&st, "* STATUS"),
        ["* STATUS \"INBOX\" (MESSAGES 0)"]
    );
}

/// RFC 3501 6.4.4 with CHARSET UTF-8: SUBJECT, FROM and HEADER match the
/// header text with its RFC 2047 encoded words decoded, ignoring case
/// beyond ASCII too (as Dovecot and Cyrus do).
#[test]
fn search_decodes_encoded_words() {
    let (_tmp, mut c) = session_with(
        "ew",
        &[
            "From: =?utf-8?q?J=C3=B6rg?= <j@x.org>\nSubject: =?iso-8859-1?q?Gr=FC=DFe?= aus Bonn\n\nb\n",
            "From: plain@x.org\nSubject: Grusse\n\nb\n",
        ],
    );
    assert_eq!(search_utf8(&mut c, "SUBJECT", "grüße"), "* SEARCH 1");
    assert_eq!(
        search_utf8(&mut c, "SUBJECT", "GRÜSSE"),
        "* SEARCH",
        "no folding of ß"
    );
    assert_eq!(search_utf8(&mut c, "FROM", "jörg"), "* SEARCH 1");
    assert_eq!(
        search_utf8(&mut c, "HEADER Subject", "Grüße aus"),
        "* SEARCH 1"
    );
    assert_eq!(search(&mut c, "SEARCH SUBJECT aus"), "* SEARCH 1");
    assert_eq!(search(&mut c, "SEARCH SUBJECT grusse"), "* SEARCH 2");
}

/// RFC 3501 6.4.4, BODY and TEXT: the text of a part is searched decoded
/// from its transfer encoding (base64, quoted-printable) and charset, in
/// nested messages too, as well as as stored; TEXT also covers header
/// fields with encoded words decoded.
#[test]
fn body_search_decodes_transfer_encodings() {
    // "the zebra sleeps" in base64; "Grüße" in quoted-printable (a soft
    // line break inside) and as 8-bit UTF-8 in a nested message.
    let (_tmp, mut c) = session_with(
        "bd",
        &[
            "Subject: b64\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\ndGhlIHplYnJhIHNsZWVwcw==\n",
            "Subject: qp\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nViele Gr=C3=BC=\n=C3=9Fe\n",
            "Subject: =?utf-8?q?Stra=C3=9Fe?=\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: message/rfc822\n\nSubject: inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\nGr\u{00fc}\u{00df}e zebra\n--b--\n",
            "Subject: plain\n\nnothing encoded, dGhlIHplYnJh as text\n",
        ],
    );
    assert_eq!(search(&mut c, "SEARCH BODY zebra"), "* SEARCH 1 3");
    assert_eq!(search(&mut c, "SEARCH TEXT ZEBRA"), "* SEARCH 1 3");
    assert_eq!(search_utf8(&mut c, "BODY", "grüße"), "* SEARCH 2 3");
    assert_eq!(search_utf8(&mut c, "BODY", "GRÜSSE"), "* SEARCH");
    assert_eq!(search_utf8(&mut c, "TEXT", "straße"), "* SEARCH 3");
    assert_eq!(
        search(&mut c, "SEARCH BODY dGhlIHplYnJh"),
        "* SEARCH 1 4",
        "as stored too"
    );
    assert_eq!(search(&mut c, "SEARCH BODY nowhere"), "* SEARCH");
}

/// RFC 3501 6.3.11, 7.4.2 and 6.4.4: INTERNALDATE keeps the zone the
/// APPEND gave it; FETCH shows it as given, and SEARCH BEFORE/ON/SINCE use
/// its date in that zone, time and zone disregarded (imaptest's
/// search-intdate). The same instant in UTC falls on another day.
#[test]
fn internaldate_keeps_its_zone_for_fetch_and_search() {
    let (_tmp, spool) = spool_with("iz", 0);
    let mut c = Client::spawn(&spool, "iz");
    let msg = "From: a@b.example\r\nSubject: z\r\n\r\nbody\r\n";
    for date in [
        "01-Jan-2020 23:30:00 -0500", // 02-Jan 04:30 UTC
        "02-Jan-2020 00:30:00 +0200", // 01-Jan 22:30 UTC
        "02-Jan-2020 12:00:00 +0000",
    ] {
        c.ok(&format!(
            "APPEND INBOX \"{date}\" {{{}+}}\r\n{msg}",
            msg.len()
        ));
    }
    c.ok("SELECT INBOX");
    let lines = c.ok("FETCH 1:3 INTERNALDATE");
    assert_eq!(
        lines,
        [
            "* 1 FETCH (INTERNALDATE \"01-Jan-2020 23:30:00 -0500\")",
            "* 2 FETCH (INTERNALDATE \"02-Jan-2020 00:30:00 +0200\")",
            "* 3 FETCH (INTERNALDATE \"02-Jan-2020 12:00:00 +0000\")",
        ]
    );
    assert_eq!(search(&mut c, "SEARCH ON 1-Jan-2020"), "* SEARCH 1");
    assert_eq!(search(&mut c, "SEARCH ON 2-Jan-2020"), "* SEARCH 2 3");
    assert_eq!(search(&mut c, "SEARCH BEFORE 2-Jan-2020"), "* SEARCH 1");
    assert_eq!(search(&mut c, "SEARCH SINCE 2-Jan-2020"), "* SEARCH 2 3");
    // A copy keeps the zone with the date.
    c.ok("CREATE Kept");
    c.ok("COPY 1 Kept");
    c.ok("SELECT Kept");
    let lines = c.ok("FETCH 1 INTERNALDATE");
    assert_eq!(
        lines,
        ["* 1 FETCH (INTERNALDATE \"01-Jan-2020 23:30:00 -0500\")"]
    );
}
