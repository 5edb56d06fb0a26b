//! SEARCH BODY/TEXT and the header keys (SUBJECT, HEADER, FROM, TO, CC,
//! BCC) through the full-text index (`.fts/`, the `fts` crate): the
//! answers are the direct scan's (RFC 3501 6.4.4: a case-insensitive
//! substring of the body, of the whole message, of a header field or of
//! its addresses), for MIME-encoded, non-English and attached text,
//! folded and encoded header fields, whatever state the index is in. Each check runs the real server twice on one spool: with the
//! index (the default) and with `imapd.fts = off`.

mod imap_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

const USER: &str = "fts";

fn b64(s: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A UTF-8 text/plain message whose body is base64-encoded.
fn base64_text(from: &str, text: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nSubject: b64\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64(text.as_bytes())
    )
    .into_bytes()
}

/// Messages with text in every form SEARCH must find it in.
fn corpus() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = vec![
        b"From: a@x.org\r\nSubject: Quarterly report\r\n\r\nThe invoice for March is attached.\r\n"
            .to_vec(),
        b"From: b@x.org\r\nSubject: gruss\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\n\
          Gr=C3=BC=C3=9Fe aus M=C3=BCnchen, Hauptstra=C3=9Fe 5, sch=C3=B6ne Gr=\r\n=C3=BC=C3=9Fe\r\n"
            .to_vec(),
        base64_text("c@x.org", "Привет, мир! Счёт-фактура № 42 ΣΊΣΥΦΟΣ"),
        b"From: d@x.org\r\nSubject: latin\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\
          Content-Transfer-Encoding: 8bit\r\n\r\nViele Gr\xfc\xdfe, \xc4rger mit der Bank\r\n"
            .to_vec(),
        base64_text("e@x.org", "東京で会議があります。請求書を送ります。"),
        format!(
            "From: f@x.org\r\nSubject: attached\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\n\
             Content-Type: text/plain; charset=us-ascii\r\n\r\nSee the attachment.\r\n--b1\r\n\
             Content-Type: application/pdf; name=\"=?utf-8?q?Rechnung_M=C3=A4rz=2Epdf?=\"\r\n\
             Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{}\r\n--b1--\r\n",
            b64(b"%PDF-1.4 binary-ish payload zebra")
        )
        .into_bytes(),
        b"From: g@x.org\r\nSubject: alt\r\nContent-Type: multipart/alternative; boundary=zz\r\n\r\n\
          --zz\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello World\r\n--zz\r\n\
          Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
          <p>Hello <b>W=C3=B6rld</b></p>\r\n--zz--\r\n"
            .to_vec(),
        b"From: h@x.org\r\nSubject: =?utf-8?q?=C3=9Cberweisung_best=C3=A4tigt?=\r\n\
          Content-Type: text/plain; charset=utf-8\r\n\r\nplain body\r\n"
            .to_vec(),
        b"From: i@x.org\r\nSubject: fwd\r\nContent-Type: message/rfc822\r\n\r\n\
          Subject: inner\r\nContent-Type: text/plain; charset=utf-8\r\n\
          Content-Transfer-Encoding: quoted-printable\r\n\r\nnested secret caf=C3=A9\r\n"
            .to_vec(),
        b"From: j@x.org\r\nSubject: no blank line after the header".to_vec(),
        b"\r\nA message without header: invoice Grusse\r\n".to_vec(),
    ];
    v.extend((0..20).map(message));
    // Header fields SUBJECT and HEADER compare unfolded: a fold, a tab
    // fold and a bare CR inside a field; an encoded subject.
    v.extend([
        b"From: k@x.org\r\nSubject: weekly\r\n status meeting\r\nX-Project: Apollo\r\n\televen\r\n\r\nagenda\r\n"
            .to_vec(),
        b"From: l@x.org\r\nSubject: split\rword\r\n\r\nnothing here\r\n".to_vec(),
        b"From: m@x.org\r\nSubject: =?utf-8?q?Caf=C3=A9_=C3=BCber_alles?=\r\n\r\nplain\r\n".to_vec(),
        // Addresses as FROM/TO/CC/BCC compare them: comments and folding
        // dropped, display names unquoted and decoded, groups.
        b"From: \"Doe, Jane\" <jane (work) @ example (corp) .com>\r\n\
          To: undisclosed-recipients:;\r\n\
          Cc: =?utf-8?q?M=C3=BCller?= <mueller@x.org>,\r\n bob@y.org\r\n\
          Bcc: Team: a@b.org, c@d.org;\r\nSubject: addr\r\n\r\nbody\r\n"
            .to_vec(),
    ]);
    v
}

/// Needles for BODY and TEXT: words, substrings inside words, across
/// words and line breaks, case variants, decoded and as stored.
const NEEDLES: &[&str] = &[
    "invoice",
    "INVOICE",
    "nvoi",
    "e invoice f",
    "grüße",
    "GRÜSSE",
    "GRÜẞE",
    "münchen",
    "MÜNCHEN",
    "straße",
    "schöne grüße",
    "Gr=C3=BC",
    "привет",
    "ПРИВЕТ",
    "фактура",
    "σίσυφος",
    "ΣΊΣΥΦΟΣ",
    "東京",
    "会議",
    "請求書を",
    "京",
    "ärger",
    "märz",
    "rechnung",
    "Rechnung%20M",
    "application/pdf",
    "zebra",
    "hello",
    "wörld",
    "<b>",
    "nested secret",
    "café",
    "überweisung",
    "bestätigt",
    "Quarterly",
    "body 1",
    "message 1",
    "bob@example",
    "alice",
    "no blank",
    "Grusse",
    "the",
    "e",
    "zz",
    "ab",
    "nonexistent",
    "Hauptstra",
    "report",
    "attachment",
    "preamble",
    "rechnung_m",
    "",
];

fn quoted_or_literal(s: &str) -> String {
    if s.is_ascii() && !s.contains(['\r', '\n', '"', '\\']) {
        format!("\"{s}\"")
    } else {
        format!("{{{}+}}\r\n{s}", s.len())
    }
}

fn config_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// A server on `spool` with the config file `conf`.
fn server(spool: &Path, conf: &Path) -> Client {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imapd-check"));
    cmd.env("MAILSTORE_CONFIG", conf)
        .args(["serve", "--spool"])
        .arg(spool)
        .args(["-d", USER, "--stdio"]);
    Client::preauth(cmd)
}

/// Needles for SUBJECT, HEADER, FROM, TO, CC and BCC (and BODY, TEXT):
/// across a fold, a tab fold and a bare CR in a field, in an encoded
/// subject, and in addresses as those keys rebuild them.
const HEADER_NEEDLES: &[&str] = &[
    "weekly status",
    "weekly\r\n status",
    "status meeting",
    "apollo\televen",
    "Apollo",
    "lo\tel",
    "splitword",
    "split\rword",
    "café über",
    "ÜBER ALLES",
    "Caf=C3",
    "jane@example.com",
    "Doe, Jane <jane@",
    "(work)",
    "müller <mueller@x",
    "mueller@x.org, bob",
    "team: a@b.org, c",
    "d.org;",
    "undisclosed",
    "x.org",
];

fn uid_search(c: &mut Client, criteria: &str) -> String {
    let (lines, tagged) = c.cmd(&format!("UID SEARCH CHARSET UTF-8 {criteria}"));
    assert!(tagged.contains(" OK "), "{criteria}: {tagged} {lines:?}");
    lines
        .iter()
        .find(|l| l.starts_with("* SEARCH"))
        .cloned()
        .unwrap_or_else(|| panic!("{criteria}: no SEARCH response: {lines:?}"))
}

/// Every query, through `with` (index) and `without` (direct scan):
/// the same answers. Returns how many were not empty.
fn compare(with: &mut Client, without: &mut Client) -> usize {
    let mut found = 0;
    let mut queries: Vec<String> = Vec::new();
    for n in NEEDLES.iter().chain(HEADER_NEEDLES) {
        let q = quoted_or_literal(n);
        queries.push(format!("BODY {q}"));
        queries.push(format!("TEXT {q}"));
        queries.push(format!("SUBJECT {q}"));
        queries.push(format!("HEADER X-Project {q}"));
        for key in ["FROM", "TO", "CC", "BCC"] {
            queries.push(format!("{key} {q}"));
        }
    }
    queries.extend(
        [
            "OR BODY invoice BODY hello",
            "NOT BODY invoice",
            "BODY invoice SUBJECT report",
            "UID 1:5 TEXT the",
            "OR BODY invoice SEEN",
            "BODY hello BODY world",
            "OR TEXT zebra NOT BODY nonexistent",
            "OR SUBJECT report BODY hello",
            "NOT SUBJECT report",
            "SUBJECT weekly SUBJECT meeting",
            "OR SUBJECT weekly SEEN",
            "HEADER Subject weekly",
            "HEADER From x.org",
            "HEADER X-Project \"\"",
        ]
        .map(String::from),
    );
    for q in &queries {
        let a = uid_search(with, q);
        let b = uid_search(without, q);
        assert_eq!(a, b, "UID SEARCH {q}: index vs direct scan");
        if a != "* SEARCH" {
            found += 1;
        }
    }
    found
}

struct Setup {
    _tmp: tempfile::TempDir,
    spool: PathBuf,
    on: PathBuf,
    off: PathBuf,
}

fn setup(msgs: &[Vec<u8>], on_conf: &str) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_raw(
        &spool,
        USER,
        msgs.iter().map(|m| (m.clone(), AppendOptions::default())),
    );
    let on = config_file(tmp.path(), "on.conf", on_conf);
    let off = config_file(tmp.path(), "off.conf", "imapd.fts = off\n");
    Setup {
        _tmp: tmp,
        spool,
        on,
        off,
    }
}

impl Setup {
    /// A server with the index and one without, INBOX selected.
    fn servers(&self) -> (Client, Client) {
        let mut with = server(&self.spool, &self.on);
        let mut without = server(&self.spool, &self.off);
        with.ok("SELECT INBOX");
        without.ok("SELECT INBOX");
        (with, without)
    }
}

fn inbox_dir(spool: &Path) -> PathBuf {
    spool.join(USER).join("INBOX")
}

fn append(spool: &Path, raw: &[u8]) -> u32 {
    let store = storage::Store::open(spool, storage::Options::default()).unwrap();
    let mut m = store
        .open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())
        .unwrap();
    m.append(raw, AppendOptions::default()).unwrap()
}

/// RFC 3501 6.4.4 (BODY, TEXT: substring, case-insensitive), through
/// the index: the same UIDs as reading every message, for decoded
/// quoted-printable and base64 parts, ISO-8859-1, German, Cyrillic,
/// Greek and Japanese text, HTML, nested messages, encoded header words
/// and attachment file names; needles too short for the index too.
#[test]
fn answers_equal_the_direct_scan() {
    let s = setup(&corpus(), "");
    let (mut with, mut without) = s.servers();
    let found = compare(&mut with, &mut without);
    assert!(
        inbox_dir(&s.spool).join(".fts").join("meta.json").exists(),
        "the first SEARCH built the index"
    );
    assert!(found > 40, "most queries find something ({found})");
    // Spot checks that the direct scan itself is what RFC 3501 asks.
    assert_eq!(
        uid_search(&mut with, &format!("BODY {}", quoted_or_literal("märz"))),
        "* SEARCH 6"
    );
    assert_eq!(
        uid_search(&mut with, &format!("BODY {}", quoted_or_literal("東京"))),
        "* SEARCH 5"
    );
    assert_eq!(
        uid_search(
            &mut with,
            &format!("TEXT {}", quoted_or_literal("bestätigt"))
        ),
        "* SEARCH 8"
    );
    assert_eq!(
        uid_search(
            &mut with,
            &format!("BODY {}", quoted_or_literal("bestätigt"))
        ),
        "* SEARCH"
    );
    assert_eq!(
        uid_search(&mut with, &format!("BODY {}", quoted_or_literal("привет"))),
        "* SEARCH 3"
    );
    // Header keys: across a fold, a bare CR, encoded words, and the
    // addresses rebuilt without comments.
    for (q, want) in [
        ("SUBJECT \"weekly status\"", "* SEARCH 32"),
        ("HEADER X-Project \"apollo\televen\"", "* SEARCH 32"),
        ("SUBJECT splitword", "* SEARCH 33"),
        ("FROM jane@example.com", "* SEARCH 35"),
        ("BCC \"team: a@b.org\"", "* SEARCH 35"),
    ] {
        assert_eq!(uid_search(&mut with, q), want, "{q}");
    }
    for (key, needle, want) in [
        ("SUBJECT", "café über", "* SEARCH 34"),
        ("CC", "müller <mueller@x", "* SEARCH 35"),
    ] {
        let q = format!("{key} {}", quoted_or_literal(needle));
        assert_eq!(uid_search(&mut with, &q), want, "{q}");
    }
}

/// The index is a filter: a message it rules out is not read at all
/// (here one whose file was damaged after it was indexed: the direct
/// scan must report it, RFC 5530 CORRUPTION, the indexed search does not
/// need to open it), nor one that holds the needle as a word; one it can
/// neither rule out nor prove still is.
#[test]
fn messages_the_index_rules_out_are_not_read() {
    let s = setup(&corpus(), "");
    let mut with = server(&s.spool, &s.on);
    with.ok("SELECT INBOX");
    assert_eq!(uid_search(&mut with, "BODY attachment"), "* SEARCH 6");
    // Same size, other bytes: UID 7 does not hold "invoice".
    let f = inbox_dir(&s.spool).join("7.");
    let len = std::fs::metadata(&f).unwrap().len() as usize;
    std::fs::write(&f, vec![b'x'; len]).unwrap();
    assert_eq!(uid_search(&mut with, "BODY invoice"), "* SEARCH 1");
    let mut without = server(&s.spool, &s.off);
    without.ok("SELECT INBOX");
    let (_, tagged) = without.cmd("UID SEARCH BODY invoice");
    assert!(tagged.contains("NO [CORRUPTION]"), "{tagged}");
    // "ello" is in UID 7's indexed text, not as a word: it is read, and
    // the damage shows.
    let (_, tagged) = with.cmd("UID SEARCH BODY ello");
    assert!(tagged.contains("NO [CORRUPTION]"), "{tagged}");
    // "hello" is one of its words: the index proves the match (of the
    // message as it was delivered) without reading it.
    assert_eq!(uid_search(&mut with, "BODY hello"), "* SEARCH 7");
    // SUBJECT, HEADER and FROM go through the index too: UID 7
    // ("Subject: alt", from g@x.org) is ruled out without being read.
    let mut fresh = server(&s.spool, &s.on);
    fresh.ok("SELECT INBOX");
    assert_eq!(uid_search(&mut fresh, "SUBJECT report"), "* SEARCH 1");
    assert_eq!(
        uid_search(&mut fresh, "HEADER Subject report"),
        "* SEARCH 1"
    );
    assert_eq!(uid_search(&mut fresh, "FROM a@x.org"), "* SEARCH 1");
    // A whole address proves a FROM match, and a word of the Subject a
    // SUBJECT match: UID 7 is answered from the index (as delivered),
    // not read.
    assert_eq!(uid_search(&mut fresh, "FROM G@x.org"), "* SEARCH 7");
    // So does a domain of the field, and a word of the Subject.
    let domain = uid_search(&mut fresh, "FROM @X.ORG");
    assert!(domain.split(' ').any(|u| u == "7"), "{domain}");
    assert_eq!(uid_search(&mut fresh, "SUBJECT ALT"), "* SEARCH 7");
    let (_, tagged) = without.cmd("UID SEARCH FROM g@x.org");
    assert!(tagged.contains("NO [CORRUPTION]"), "{tagged}");
    let (_, tagged) = without.cmd("UID SEARCH SUBJECT report");
    assert!(tagged.contains("NO [CORRUPTION]"), "{tagged}");
}

/// Messages delivered after the index was built are found (searched
/// directly, then indexed by the next SEARCH); expunged ones are not
/// answered, and once most of the index is expunged messages they are
/// purged from it.
#[test]
fn new_messages_are_found_and_expunged_ones_are_not() {
    let s = setup(&corpus(), "");
    let mut with = server(&s.spool, &s.on);
    with.ok("SELECT INBOX");
    assert_eq!(uid_search(&mut with, "BODY invoice"), "* SEARCH 1");
    let u = append(
        &s.spool,
        b"Subject: late\r\n\r\nanother invoice arrives\r\n",
    );
    with.ok("NOOP");
    assert_eq!(
        uid_search(&mut with, "BODY invoice"),
        format!("* SEARCH 1 {u}")
    );
    with.ok("UID STORE 1 +FLAGS (\\Deleted)");
    with.ok("EXPUNGE");
    assert_eq!(
        uid_search(&mut with, "BODY invoice"),
        format!("* SEARCH {u}")
    );
    // Expunge nearly everything: the index drops their documents.
    with.ok("STORE 1:* +FLAGS (\\Deleted)");
    with.ok("EXPUNGE");
    let keep = append(&s.spool, b"Subject: k\r\n\r\nkeeper invoice\r\n");
    with.ok("NOOP");
    assert_eq!(
        uid_search(&mut with, "BODY invoice"),
        format!("* SEARCH {keep}")
    );
    let mut without = server(&s.spool, &s.off);
    without.ok("SELECT INBOX");
    compare(&mut with, &mut without);
    let snap = fts::snapshot(&inbox_dir(&s.spool), uidvalidity(&s.spool))
        .unwrap()
        .unwrap();
    assert_eq!(snap.indexed().unwrap(), [keep], "expunged documents purged");
}

fn uidvalidity(spool: &Path) -> u32 {
    let store = storage::Store::open(spool, storage::Options::default()).unwrap();
    let mut m = store
        .open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())
        .unwrap();
    m.header().unwrap().uidvalidity
}

/// The index is never trusted over the messages: a corrupt index is
/// bypassed and replaced, a deleted one rebuilt, one held by another
/// writer bypassed for the messages it lacks, and one of another
/// UIDVALIDITY ignored; the answers stay the direct scan's.
#[test]
fn a_damaged_deleted_locked_or_foreign_index_changes_nothing() {
    let s = setup(&corpus(), "");
    let fts_dir = inbox_dir(&s.spool).join(".fts");
    let mut without = server(&s.spool, &s.off);
    without.ok("SELECT INBOX");
    {
        let mut with = server(&s.spool, &s.on);
        with.ok("SELECT INBOX");
        compare(&mut with, &mut without);
    }
    // Corrupt: every file of the index overwritten.
    for e in std::fs::read_dir(&fts_dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "lock" {
            std::fs::write(&p, b"garbage").unwrap();
        }
    }
    let mut with = server(&s.spool, &s.on);
    with.ok("SELECT INBOX");
    compare(&mut with, &mut without);
    assert!(
        fts::snapshot(&inbox_dir(&s.spool), uidvalidity(&s.spool))
            .unwrap()
            .is_some_and(|s| s.high_water() > 0),
        "replaced by a good one"
    );
    // Deleted.
    std::fs::remove_dir_all(&fts_dir).unwrap();
    compare(&mut with, &mut without);
    assert!(fts_dir.join("meta.json").exists(), "rebuilt");
    // Held by another writer: new messages are searched directly.
    let held = fts::writer(&inbox_dir(&s.spool), uidvalidity(&s.spool), fts::MIN_MEMORY)
        .unwrap()
        .unwrap();
    let u = append(&s.spool, b"Subject: x\r\n\r\nlocked out invoice\r\n");
    with.ok("NOOP");
    without.ok("NOOP");
    assert_eq!(
        uid_search(&mut with, "BODY invoice"),
        format!("* SEARCH 1 {u}")
    );
    compare(&mut with, &mut without);
    drop(held);
    // Another UIDVALIDITY: documents keyed by an older one are ignored,
    // then replaced.
    let uv = uidvalidity(&s.spool);
    std::fs::remove_dir_all(&fts_dir).unwrap();
    let mut w = fts::writer(&inbox_dir(&s.spool), uv - 1, fts::MIN_MEMORY)
        .unwrap()
        .unwrap();
    for uid in 1..=40 {
        w.add(uid, b"\r\nnothing to see", 2).unwrap();
    }
    w.commit().unwrap();
    compare(&mut with, &mut without);
    let snap = fts::snapshot(&inbox_dir(&s.spool), uv).unwrap().unwrap();
    assert!(
        snap.high_water() >= u,
        "rebuilt for the current UIDVALIDITY"
    );
}

/// `imapd.fts_batch`: a SEARCH indexes at most that many messages and
/// reads the rest directly; each SEARCH moves the mark on.
#[test]
fn catching_up_is_bounded_per_search() {
    let s = setup(&corpus(), "imapd.fts_batch = 4\n");
    let (mut with, mut without) = s.servers();
    let uv = uidvalidity(&s.spool);
    let high = |s: &Setup| {
        fts::snapshot(&inbox_dir(&s.spool), uv)
            .unwrap()
            .map_or(0, |x| x.high_water())
    };
    assert_eq!(uid_search(&mut with, "BODY invoice"), "* SEARCH 1");
    assert_eq!(high(&s), 4);
    assert_eq!(uid_search(&mut with, "BODY invoice"), "* SEARCH 1");
    assert_eq!(high(&s), 8);
    compare(&mut with, &mut without);
}

/// PROTOCOL.md §11: a server killed while catching the index up (its
/// documents added, before and after tantivy's commit) leaves an index
/// that the next server uses or completes, with the direct scan's
/// answers.
#[test]
fn a_kill_while_indexing_leaves_a_usable_index() {
    let all = corpus().len() as u32;
    for (point, committed) in [("fts.before_commit", false), ("fts.after_commit", true)] {
        let s = setup(&corpus(), "");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imapd-check"));
        cmd.env("MAILSTORE_CONFIG", &s.on)
            .env("MAILSTORE_TEST_FAULT", format!("{point}=kill"))
            .args(["serve", "--spool"])
            .arg(&s.spool)
            .args(["-d", USER, "--stdio"]);
        let mut doomed = Client::preauth(cmd);
        doomed.ok("SELECT INBOX");
        doomed.send("t9 UID SEARCH BODY invoice\r\n");
        // Killed at the point (otherwise it would wait for more input).
        doomed.wait_exit(std::time::Duration::from_secs(20));
        let snap = fts::snapshot(&inbox_dir(&s.spool), uidvalidity(&s.spool)).unwrap();
        assert_eq!(
            snap.is_some_and(|x| x.high_water() == all),
            committed,
            "{point}"
        );
        let (mut with, mut without) = s.servers();
        compare(&mut with, &mut without);
        let snap = fts::snapshot(&inbox_dir(&s.spool), uidvalidity(&s.spool))
            .unwrap()
            .unwrap();
        assert_eq!(snap.high_water(), all, "{point}: caught up");
    }
}
