//! IMAP4rev2 (RFC 9051) beside IMAP4rev1 through the real server: each
//! test names the RFC 9051 section (and Appendix E item) it checks, in a
//! session that sent `ENABLE IMAP4rev2`, and where rev1 must stay as it
//! was, the same command in a session that did not.

mod imap_common;

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

fn three() -> Vec<Vec<u8>> {
    (0..3).map(message).collect()
}

/// A stdio session that enabled IMAP4rev2.
fn rev2(spool: &std::path::Path, user: &str) -> Client {
    let mut c = Client::spawn(spool, user);
    let en = c.ok("ENABLE IMAP4rev2");
    assert_eq!(en, vec!["* ENABLED IMAP4rev2".to_string()]);
    c
}

fn tagged_code(tagged: &str) -> &str {
    tagged
        .split_once('[')
        .and_then(|(_, r)| r.split_once(']'))
        .map_or("", |(c, _)| c)
}

fn append_now(spool: &std::path::Path, user: &str, raw: &[u8]) {
    let store = storage::Store::open(spool, storage::Options::default()).unwrap();
    let u = UserName::new(user).unwrap();
    store
        .open_mailbox(&u, &MailboxName::inbox())
        .unwrap()
        .append(raw, AppendOptions::default())
        .unwrap();
}

/// RFC 9051 7.2.2 and 6.3.1: `IMAP4rev2` is advertised beside
/// `IMAP4rev1` (a server that speaks both), with the extensions RFC 9051
/// folded in (Appendix E item 1) still listed for rev1 clients, and
/// `ENABLE IMAP4rev2` answers `* ENABLED IMAP4rev2`; an unknown
/// capability is ignored.
#[test]
fn capability_and_enable() {
    let (_tmp, spool) = store_with("cap", &[]);
    let mut c = Client::spawn(&spool, "cap");
    let caps = c.ok("CAPABILITY");
    let words: Vec<&str> = caps[0].split(' ').collect();
    for want in [
        "IMAP4rev1",
        "IMAP4rev2",
        "NAMESPACE",
        "UNSELECT",
        "UIDPLUS",
        "ESEARCH",
        "SEARCHRES",
        "ENABLE",
        "IDLE",
        "SASL-IR",
        "LIST-EXTENDED",
        "LIST-STATUS",
        "MOVE",
        "LITERAL+",
        "BINARY",
        "SPECIAL-USE",
        "STATUS=SIZE",
    ] {
        assert!(words.contains(&want), "{want} missing: {caps:?}");
    }
    let en = c.ok("ENABLE X-UNKNOWN IMAP4rev2");
    assert_eq!(en, vec!["* ENABLED IMAP4rev2".to_string()]);
}

/// RFC 9051 2.3.2, 6.3.2, 7.3.5 and Appendix E (`\Recent` and RECENT
/// removed; SELECT sends the mailbox's LIST and no UNSEEN): after ENABLE
/// IMAP4rev2, SELECT has FLAGS without `\Recent`, EXISTS, the LIST
/// response, UIDVALIDITY, UIDNEXT and PERMANENTFLAGS, and no RECENT or
/// `[UNSEEN]`; FETCH FLAGS never has `\Recent`; a new message is told by
/// EXISTS alone. The rev2 session claims nothing, so a rev1 session
/// still sees the messages as `\Recent`.
#[test]
fn select_without_recent() {
    let (_tmp, spool) = store_with("rec", &three());
    let mut c = rev2(&spool, "rec");
    let lines = c.ok("SELECT INBOX");
    let all = lines.join("\n");
    assert!(
        !all.contains("RECENT") && !all.contains("\\Recent"),
        "{all}"
    );
    assert!(!all.contains("[UNSEEN"), "{all}");
    assert!(lines.contains(&"* 3 EXISTS".to_string()), "{all}");
    assert!(
        lines.contains(&"* LIST (\\HasNoChildren) \"/\" \"INBOX\"".to_string()),
        "{all}"
    );
    for code in ["[UIDVALIDITY ", "[UIDNEXT 4]", "[PERMANENTFLAGS ("] {
        assert!(all.contains(code), "{code}: {all}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("* FLAGS (") && l.contains("\\Seen")),
        "{all}"
    );
    let f = c.ok("FETCH 1:* FLAGS");
    assert_eq!(f.len(), 3, "{f:?}");
    assert!(f.iter().all(|l| !l.contains("\\Recent")), "{f:?}");

    append_now(&spool, "rec", &message(3));
    let n = c.ok("NOOP");
    assert_eq!(n, vec!["* 4 EXISTS".to_string()], "{n:?}");

    // A rev1 session: everything is still \Recent for it.
    let mut old = Client::spawn(&spool, "rec");
    let lines = old.ok("SELECT INBOX");
    assert!(lines.contains(&"* 4 RECENT".to_string()), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.starts_with("* OK [UNSEEN 1]")),
        "{lines:?}"
    );
    let f = old.ok("FETCH 4 FLAGS");
    assert!(f[0].contains("\\Recent"), "{f:?}");
}

/// RFC 9051 6.3.1 with 2.3.2: a rev1 session that selected a mailbox and
/// then enables IMAP4rev2 no longer reports `\Recent` for it.
#[test]
fn enable_after_select_drops_recent() {
    let (_tmp, spool) = store_with("late", &three());
    let mut c = Client::spawn(&spool, "late");
    let lines = c.ok("SELECT INBOX");
    assert!(lines.contains(&"* 3 RECENT".to_string()), "{lines:?}");
    c.ok("ENABLE IMAP4rev2");
    let f = c.ok("FETCH 1 FLAGS");
    assert!(!f[0].contains("\\Recent"), "{f:?}");
}

/// RFC 9051 6.4.4 / Appendix E (RECENT, NEW, OLD are not search keys) and
/// 6.3.11 (RECENT is not a status item): in a rev2 session they are BAD,
/// in SEARCH, STATUS and LIST-STATUS alike; a rev1 session still has them.
#[test]
fn recent_keys_and_item_are_gone() {
    let (_tmp, spool) = store_with("gone", &three());
    let mut c = rev2(&spool, "gone");
    c.ok("SELECT INBOX");
    for q in [
        "SEARCH RECENT",
        "SEARCH NEW",
        "UID SEARCH NOT OLD",
        "SEARCH OR SEEN (RECENT)",
        "SORT (DATE) UTF-8 NEW",
        "THREAD REFERENCES UTF-8 RECENT",
        "STATUS INBOX (MESSAGES RECENT)",
        "LIST \"\" \"*\" RETURN (STATUS (RECENT))",
    ] {
        let (_, tagged) = c.cmd(q);
        assert!(tagged.contains(" BAD "), "{q}: {tagged}");
    }
    let s = c.ok("STATUS INBOX (MESSAGES UNSEEN)");
    assert_eq!(
        s,
        vec!["* STATUS \"INBOX\" (MESSAGES 3 UNSEEN 3)".to_string()]
    );

    let mut old = Client::spawn(&spool, "gone");
    old.ok("SELECT INBOX");
    assert_eq!(old.ok("SEARCH RECENT"), vec!["* SEARCH 1 2 3".to_string()]);
    let s = old.ok("STATUS INBOX (RECENT)");
    assert_eq!(s, vec!["* STATUS \"INBOX\" (RECENT 3)".to_string()]);
}

/// RFC 9051 6.4.4 and 7.3.4: SEARCH (and UID SEARCH) without RETURN
/// answers `* ESEARCH (TAG "t") [UID] ALL set`, never `* SEARCH`; with no
/// match the ESEARCH has no ALL; RETURN options work as before, and `$`
/// (result saving, RFC 9051 6.4.4) keeps the result for FETCH. A rev1
/// session still gets `* SEARCH`.
#[test]
fn search_answers_esearch() {
    let (_tmp, spool) = store_with("es", &three());
    let mut c = rev2(&spool, "es");
    c.ok("SELECT INBOX");
    c.ok("STORE 2 +FLAGS (\\Flagged)");
    let (l, t) = c.cmd("SEARCH ALL");
    let tag = t.split(' ').next().unwrap().to_string();
    assert_eq!(l, vec![format!("* ESEARCH (TAG \"{tag}\") ALL 1:3")]);
    let (l, t) = c.cmd("UID SEARCH FLAGGED");
    let tag = t.split(' ').next().unwrap().to_string();
    assert_eq!(l, vec![format!("* ESEARCH (TAG \"{tag}\") UID ALL 2")]);
    let (l, t) = c.cmd("SEARCH DELETED");
    let tag = t.split(' ').next().unwrap().to_string();
    assert_eq!(l, vec![format!("* ESEARCH (TAG \"{tag}\")")]);
    let (l, t) = c.cmd("SEARCH RETURN (COUNT MIN) UNFLAGGED");
    let tag = t.split(' ').next().unwrap().to_string();
    assert_eq!(l, vec![format!("* ESEARCH (TAG \"{tag}\") MIN 1 COUNT 2")]);
    // SAVE alone answers nothing; `$` is then the saved messages.
    assert!(c.ok("SEARCH RETURN (SAVE) UNFLAGGED").is_empty());
    let f = c.ok("FETCH $ (UID)");
    assert_eq!(
        f,
        vec![
            "* 1 FETCH (UID 1)".to_string(),
            "* 3 FETCH (UID 3)".to_string()
        ]
    );

    let mut old = Client::spawn(&spool, "es");
    old.ok("SELECT INBOX");
    assert_eq!(old.ok("SEARCH FLAGGED"), vec!["* SEARCH 2".to_string()]);
}

/// RFC 9051 6.4.4 (CHARSET: UTF-8 must be supported, an unknown charset is
/// `NO [BADCHARSET (...)]`) and 9 (`QUOTED-CHAR` allows UTF-8): a rev2
/// client may send UTF-8 in a quoted string, in a search key as in a
/// mailbox name (5.1: mailbox names are UTF-8); the name comes back as
/// written in LIST and in SELECT's LIST response.
#[test]
fn utf8_strings_and_charset() {
    let msgs = vec![
        "From: a@x.org\r\nSubject: Grüße aus Köln\r\n\r\nbody\r\n"
            .as_bytes()
            .to_vec(),
        message(1),
        // RFC 2047 encoded words are compared decoded.
        "From: =?UTF-8?Q?J=C3=BCrgen?= <j@x.org>\r\n\
         Subject: =?UTF-8?B?R3LDvMOfZSBhdXM=?=\r\nX-Tag: =?ISO-8859-1?Q?Stra=DFe?=\r\n\r\nb\r\n"
            .as_bytes()
            .to_vec(),
    ];
    let (_tmp, spool) = store_with("utf", &msgs);
    let mut c = rev2(&spool, "utf");
    c.ok("SELECT INBOX");
    let (l, _) = c.cmd("SEARCH CHARSET UTF-8 SUBJECT \"Grüße\"");
    assert!(l[0].ends_with(" ALL 1,3"), "{l:?}");
    let (l, _) = c.cmd("SEARCH CHARSET UTF-8 FROM \"Jürgen\"");
    assert!(l[0].ends_with(" ALL 3"), "{l:?}");
    let (l, _) = c.cmd("SEARCH CHARSET UTF-8 HEADER X-Tag \"Straße\"");
    assert!(l[0].ends_with(" ALL 3"), "{l:?}");
    let (l, _) = c.cmd("SEARCH CHARSET UTF-8 HEADER Subject \"Straße\"");
    assert!(!l[0].contains("ALL"), "not in Subject: {l:?}");
    let (l, _) = c.cmd("SEARCH SUBJECT \"köln\"");
    assert!(l[0].ends_with(" ALL 1"), "{l:?}");
    let (_, t) = c.cmd("SEARCH CHARSET X-UNKNOWN SUBJECT x");
    assert!(t.contains("NO [BADCHARSET"), "{t}");

    c.ok("CREATE \"Grüße/Köln\"");
    // RFC 9051 5.1: a new name must be NFC ("u" + combining diaeresis
    // is not); CREATE and RENAME refuse it.
    let (_, t) = c.cmd("CREATE \"Gru\u{308}ße\"");
    assert_eq!(tagged_code(&t), "CANNOT", "{t}");
    let (_, t) = c.cmd("RENAME \"Grüße/Köln\" \"Ko\u{308}ln\"");
    assert_eq!(tagged_code(&t), "CANNOT", "{t}");
    let l = c.ok("LIST \"\" \"Grü*\"");
    let all = l.join("\n");
    assert!(all.contains("Grüße/Köln"), "{all}");
    let s = c.ok("SELECT \"Grüße/Köln\"");
    let all = s.join("\n");
    assert!(all.contains("* LIST (\\HasNoChildren) \"/\""), "{all}");
    assert!(all.contains("Grüße/Köln"), "{all}");
    // The parent is \Noselect and has children: DELETE says HASCHILDREN.
    let (_, t) = c.cmd("DELETE \"Grüße\"");
    assert_eq!(tagged_code(&t), "HASCHILDREN", "{t}");
    c.ok("DELETE \"Grüße/Köln\"");
}

/// RFC 9051 7.1 response codes: `[ALREADYEXISTS]` for CREATE of an
/// existing name, `[NONEXISTENT]` for SELECT of a missing one,
/// `[HASCHILDREN]` for DELETE of a name that is only a parent (6.3.5),
/// `[CLOSED]` when SELECT replaces the selected mailbox (6.3.2), and
/// `[TRYCREATE]` for COPY to a missing mailbox (6.4.7).
#[test]
fn response_codes() {
    let (_tmp, spool) = store_with("codes", &three());
    let mut c = rev2(&spool, "codes");
    c.ok("CREATE a/b");
    let (_, t) = c.cmd("CREATE a/b");
    assert_eq!(tagged_code(&t), "ALREADYEXISTS", "{t}");
    let (_, t) = c.cmd("SELECT nosuch");
    assert_eq!(tagged_code(&t), "NONEXISTENT", "{t}");
    let (_, t) = c.cmd("DELETE a");
    assert_eq!(tagged_code(&t), "HASCHILDREN", "{t}");
    c.ok("SELECT INBOX");
    let l = c.ok("EXAMINE a/b");
    assert!(l[0].starts_with("* OK [CLOSED]"), "{l:?}");
    c.ok("SELECT INBOX");
    let (_, t) = c.cmd("COPY 1 nosuch");
    assert_eq!(tagged_code(&t), "TRYCREATE", "{t}");
}

/// RFC 9051 6.3.10 (NAMESPACE is part of rev2), 6.4.1 (CLOSE expunges
/// silently), 6.4.2 (UNSELECT does not), 6.4.3 with 6.4.9 (UID EXPUNGE)
/// and Appendix E (CHECK removed: still answered OK for old clients).
#[test]
fn namespace_close_unselect_expunge_check() {
    let (_tmp, spool) = store_with("cl", &(0..5).map(message).collect::<Vec<_>>());
    let mut c = rev2(&spool, "cl");
    assert_eq!(
        c.ok("NAMESPACE"),
        vec!["* NAMESPACE ((\"\" \"/\")) NIL NIL".to_string()]
    );
    c.ok("SELECT INBOX");
    c.ok("CHECK");
    c.ok("STORE 1:2 +FLAGS.SILENT (\\Deleted)");
    let l = c.ok("UID EXPUNGE 2");
    assert_eq!(l, vec!["* 2 EXPUNGE".to_string()]);
    c.ok("UNSELECT");
    let l = c.ok("SELECT INBOX");
    assert!(l.contains(&"* 4 EXISTS".to_string()), "{l:?}");
    let l = c.ok("CLOSE");
    assert!(l.is_empty(), "{l:?}");
    let s = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(s, vec!["* STATUS \"INBOX\" (MESSAGES 3)".to_string()]);
    let (_, t) = c.cmd("CHECK");
    assert!(t.contains(" BAD "), "CHECK needs a selected mailbox: {t}");
}

/// RFC 9051 6.3.11 and 7.3.3: STATUS with SIZE and DELETED, and STATUS of
/// the selected mailbox: what the session was not told yet (a new
/// message) comes first as EXISTS, so the counts agree with it.
#[test]
fn status_items_and_selected() {
    let (_tmp, spool) = store_with("st", &three());
    let mut c = rev2(&spool, "st");
    c.ok("SELECT INBOX");
    c.ok("STORE 1 +FLAGS.SILENT (\\Deleted \\Seen)");
    let size: usize = (0..3).map(|i| message(i).len()).sum();
    let s = c.ok("STATUS INBOX (MESSAGES UNSEEN DELETED SIZE UIDNEXT)");
    assert_eq!(
        s,
        vec![format!(
            "* STATUS \"INBOX\" (MESSAGES 3 UNSEEN 2 DELETED 1 SIZE {size} UIDNEXT 4)"
        )]
    );
    append_now(&spool, "st", &message(3));
    let s = c.ok("STATUS INBOX (MESSAGES)");
    assert_eq!(
        s,
        vec![
            "* 4 EXISTS".to_string(),
            "* STATUS \"INBOX\" (MESSAGES 4)".to_string()
        ]
    );
}

/// RFC 9051 6.4.5 and 7.5.2 (FETCH: BINARY, BINARY.SIZE from RFC 3516
/// folded in; BODY[] sets `\Seen`, BODY.PEEK[] does not; no `\Recent`
/// in the FLAGS that go with it) and 6.3.12 (APPEND takes a literal8).
#[test]
fn fetch_binary_seen_and_literal8() {
    let msg = "From: a@x.org\r\nSubject: b\r\nMIME-Version: 1.0\r\n\
               Content-Type: text/plain; charset=utf-8\r\n\
               Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n";
    let (_tmp, spool) = store_with("bin", &[msg.as_bytes().to_vec()]);
    let mut c = rev2(&spool, "bin");
    c.ok("SELECT INBOX");
    let f = c.ok("FETCH 1 (BINARY.SIZE[1])");
    assert_eq!(f, vec!["* 1 FETCH (BINARY.SIZE[1] 7)".to_string()]);
    let f = c.ok("FETCH 1 (BINARY.PEEK[1])");
    assert_eq!(f[0], "* 1 FETCH (BINARY[1] {7}");
    assert_eq!(f[1], "café");
    let f = c.ok("FETCH 1 (BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(!f.join("\n").contains("\\Seen"), "{f:?}");
    let f = c.ok("FETCH 1 (FLAGS)");
    assert_eq!(f, vec!["* 1 FETCH (FLAGS ())".to_string()]);
    let f = c.ok("FETCH 1 (BODY[TEXT])");
    let all = f.join("\n");
    assert!(all.contains("FLAGS (\\Seen)"), "{all}");
    assert!(!all.contains("\\Recent"), "{all}");

    // APPEND with a literal8 holding a NUL.
    let raw = b"Subject: nul\r\nContent-Type: application/octet-stream\r\n\r\na\0b\r\n";
    c.send(&format!("p1 APPEND INBOX ~{{{}}}\r\n", raw.len()));
    let cont = c.line();
    assert!(cont.starts_with('+'), "{cont}");
    c.send(std::str::from_utf8(raw).unwrap());
    c.send("\r\n");
    let mut done = c.line();
    while done.starts_with('*') {
        done = c.line();
    }
    assert!(done.starts_with("p1 OK [APPENDUID "), "{done}");
    let f = c.ok("FETCH 2 (BINARY.SIZE[1] RFC822.SIZE)");
    assert!(
        f[0].contains(&format!("RFC822.SIZE {}", raw.len())),
        "{f:?}"
    );
}

/// RFC 9051 6.3.9 (LIST-EXTENDED folded in: `\Subscribed` with RETURN
/// (SUBSCRIBED), `\NonExistent` for a subscribed name that is no
/// mailbox, `\HasChildren`/`\HasNoChildren`) and Appendix E (LSUB is
/// deprecated, still answered).
#[test]
fn list_extended_and_lsub() {
    let (_tmp, spool) = store_with("li", &[]);
    let mut c = rev2(&spool, "li");
    c.ok("CREATE box/sub");
    c.ok("SUBSCRIBE box/sub");
    c.ok("SUBSCRIBE gone");
    let l = c.ok("LIST \"\" \"box*\" RETURN (SUBSCRIBED)");
    assert!(
        l.contains(&"* LIST (\\Noselect \\HasChildren) \"/\" \"box\"".to_string()),
        "{l:?}"
    );
    assert!(
        l.contains(&"* LIST (\\HasNoChildren \\Subscribed) \"/\" \"box/sub\"".to_string()),
        "{l:?}"
    );
    let l = c.ok("LIST (SUBSCRIBED) \"\" \"*\"");
    assert!(
        l.contains(&"* LIST (\\NonExistent \\Subscribed) \"/\" \"gone\"".to_string()),
        "{l:?}"
    );
    let l = c.ok("LSUB \"\" \"*\"");
    assert!(l.iter().any(|x| x.ends_with("\"box/sub\"")), "{l:?}");
}

/// RFC 9051 6.4.5 (BODYSTRUCTURE) and Appendix E: parameter value
/// continuations (RFC 2231 `name*0`, `name*1`) are joined into one
/// parameter; keywords RFC 9051 2.3.2 names ($Forwarded, $Junk, ...) can
/// be stored (PERMANENTFLAGS has `\*`).
#[test]
fn rfc2231_continuations_and_keywords() {
    let msg = "From: a@x.org\r\nSubject: att\r\nMIME-Version: 1.0\r\n\
               Content-Type: text/plain; charset=us-ascii;\r\n \
               name*0=\"long file \"; name*1=\"name.txt\"\r\n\
               Content-Disposition: attachment;\r\n \
               filename*0=\"long\"; filename*1=\"name.txt\"\r\n\r\nx\r\n";
    let (_tmp, spool) = store_with("bs", &[msg.as_bytes().to_vec()]);
    let mut c = rev2(&spool, "bs");
    c.ok("SELECT INBOX");
    let f = c.ok("FETCH 1 (BODYSTRUCTURE)");
    let all = f.join("\n");
    assert!(all.contains("\"NAME\" \"long file name.txt\""), "{all}");
    assert!(all.contains("\"FILENAME\" \"longname.txt\""), "{all}");
    assert!(!all.contains("*0"), "{all}");
    let f = c.ok("STORE 1 +FLAGS ($Forwarded $Junk $MDNSent)");
    assert!(
        f[0].contains("$Forwarded") && f[0].contains("$Junk"),
        "{f:?}"
    );
}

/// A real IMAP4rev2 client: imapflow sends `ENABLE IMAP4rev2` when the
/// server advertises it (RFC 9051 6.3.1) and then depends on rev2
/// behaviour: SEARCH answered by ESEARCH (6.4.4), a UTF-8 mailbox name
/// created, listed and opened (5.1), STATUS (6.3.11), FLAGS with no
/// `\Recent` (2.3.2). Over TCP with a password.
#[test]
fn imapflow_speaks_rev2() {
    let msgs = vec![
        message(0),
        "From: a@x.org\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\n\r\nb\r\n"
            .as_bytes()
            .to_vec(),
        message(2),
    ];
    let (tmp, spool) = store_with("flow", &msgs);
    let passwd = write_passwd(tmp.path(), "flow", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let port = server.port.to_string();
    let v = imapflow_json("imapflow_rev2.mjs", &[&port, "flow", "pw"]);
    assert!(
        v["enabled"].as_array().unwrap().iter().any(|e| e
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case("IMAP4rev2"))),
        "{v}"
    );
    assert_eq!(v["unseen"], serde_json::json!([1, 2, 3]), "{v}");
    assert_eq!(v["subject"], serde_json::json!([2]), "{v}");
    assert_eq!(v["none"], serde_json::json!([]), "{v}");
    assert_eq!(v["unseen_after"], serde_json::json!([2, 3]), "{v}");
    assert!(!v["flags"].to_string().contains("Recent"), "{v}");
    assert!(
        v["folders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "Entwürfe"),
        "{v}"
    );
    assert_eq!(v["opened"], "Entwürfe", "{v}");
    assert_eq!(v["status"]["messages"], 3, "{v}");
    assert_eq!(v["status"]["unseen"], 2, "{v}");
    let log = server.stop();
    // The name is stored as written, in UTF-8.
    let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
    let names: Vec<String> = store
        .list_mailboxes(&UserName::new("flow").unwrap())
        .unwrap()
        .iter()
        .map(|m| m.to_string())
        .collect();
    assert!(names.contains(&"Entwürfe".to_string()), "{names:?}\n{log}");
}
