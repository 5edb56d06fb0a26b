//! SORT and THREAD against Dovecot, the reference the compliance suites
//! were written with: made-up mailboxes (fixed seeds) go to both servers
//! by APPEND, and each SORT and THREAD answer must be the same.
//!
//! RFC 5256 (base subject 2.1, sent date 2.2, SORT 3, THREAD
//! ORDEREDSUBJECT and REFERENCES 3), RFC 5957 (DISPLAYFROM/DISPLAYTO) and
//! RFC 5051 (i;unicode-casemap) leave a few choices open (which child
//! names a dummy, address forms mail-parser does not read, which case
//! mapping); this pins them to Dovecot's. Needs Debian's dovecot-imapd
//! (its `imap` binary run preauthenticated, as `nobody` through setpriv,
//! since Dovecot refuses root).

mod imap_common;

use std::process::{Command, Stdio};

use imap_common::*;

const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";

/// Dovecot's imap on a Maildir in `dir`, preauthenticated.
fn dovecot(dir: &std::path::Path) -> Client {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "env",
        "-i",
    ])
    .arg(format!("HOME={}", dir.display()))
    .args(["USER=nobody", "PATH=/usr/bin:/bin", DOVECOT_IMAP, "-o"])
    .arg(format!("mail_location=maildir:{}/Maildir", dir.display()))
    .stderr(Stdio::null());
    Client::preauth(cmd)
}

/// APPEND with a synchronizing literal; the tagged reply must be OK.
fn append(c: &mut Client, raw: &[u8], date: &str) {
    c.send(&format!("ap APPEND INBOX \"{date}\" {{{}}}\r\n", raw.len()));
    let cont = c.line();
    assert!(cont.starts_with('+'), "{cont}");
    c.send(std::str::from_utf8(raw).unwrap());
    c.send("\r\n");
    loop {
        let l = c.line();
        if l.starts_with("ap ") {
            assert!(l.starts_with("ap OK"), "{l}");
            return;
        }
    }
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % n.max(1)
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.next(v.len())]
    }
}

const SUBJECTS: &[&str] = &[
    "plans",
    "Re: plans",
    "RE: re: Plans",
    "Fwd: plans",
    "[list] Re: plans",
    "plans (fwd)",
    "[fwd: plans]",
    "Re: [fwd: [x] news]",
    "news",
    "NEWS",
    "",
    "   ",
    "re:",
    "[only]",
    "[a][b] c",
    "Fw: fwd: FW: c",
    "=?UTF-8?B?w4RyZ2Vy?=",
    "\u{e4}rger",
    "aerger",
    "\u{fb01}le",
    "file",
    "\u{df}",
    "SS",
    "\u{3a9}",
    "\u{3c9}",
    "x(fwd)(fwd)",
];

const ADDRESSES: &[&str] = &[
    "a@x.org",
    "\"Zed Q\" <z@x.org>",
    "=?UTF-8?Q?=C3=89mile?= <e@x.org>",
    "Bob <BOB@x.org>",
    "<bare@x.org>",
    "group: m1@x.org, m2@y.org;",
    "undisclosed-recipients:;",
    "\"\" <empty@x.org>",
    "carl (comment) <c@x.org>",
    "dave@x.org (Dave D)",
    "\"last, first\" <lf@x.org>",
    "x@y, a@b",
    "just text",
    "<@route:user@domain.org>",
    "\"quoted local\"@x.org",
    "noat",
];

/// A mailbox of `n` messages: Message-IDs (some repeated, some missing),
/// References and In-Reply-To (loops, self-references, junk), subjects,
/// addresses and dates (some missing, some equal).
fn mailbox(seed: u64, n: usize) -> Vec<(String, String)> {
    let mut g = Lcg(seed);
    let ids = (n / 2).max(3);
    (0..n)
        .map(|_| {
            let mut h: Vec<String> = Vec::new();
            if g.next(10) < 9 {
                h.push(format!("Message-ID: <m{}@x>", g.next(ids)));
            }
            let refs: Vec<String> = (0..g.next(5))
                .map(|_| format!("<m{}@x>", g.next(ids)))
                .collect();
            match (refs.is_empty(), g.next(10)) {
                (false, 0..=4) => h.push(format!("References: {}", refs.join(" "))),
                (false, 5..=6) => h.push(format!("In-Reply-To: {} (junk)", refs.join(" "))),
                (false, 7) => h.push(format!("References: junk <bad> {}", refs[0])),
                _ => {}
            }
            h.push(format!("Subject: {}", g.pick(SUBJECTS)));
            for field in ["From", "To", "Cc"] {
                if g.next(10) < 9 {
                    h.push(format!("{field}: {}", g.pick(ADDRESSES)));
                }
            }
            if g.next(10) < 7 {
                h.push(format!(
                    "Date: {:02} Jan 2024 {:02}:00:00 {}",
                    g.next(5) + 1,
                    g.next(3) * 6,
                    g.pick(&["+0000", "-0500", "+1400"])
                ));
            }
            let body = "b".repeat(g.next(40));
            let internal = format!("{:02}-Feb-2024 10:00:00 +0000", g.next(4) + 1);
            (format!("{}\r\n\r\n{body}\r\n", h.join("\r\n")), internal)
        })
        .collect()
}

const COMMANDS: &[&str] = &[
    "THREAD REFERENCES UTF-8 ALL",
    "THREAD ORDEREDSUBJECT UTF-8 ALL",
    "SORT (SUBJECT) UTF-8 ALL",
    "SORT (REVERSE SUBJECT DATE) UTF-8 ALL",
    "SORT (DATE) UTF-8 ALL",
    "SORT (ARRIVAL) UTF-8 ALL",
    "SORT (SIZE) UTF-8 ALL",
    "SORT (FROM) UTF-8 ALL",
    "SORT (TO) UTF-8 ALL",
    "SORT (CC) UTF-8 ALL",
    "SORT (DISPLAYFROM) UTF-8 ALL",
    "SORT (REVERSE DISPLAYTO) UTF-8 ALL",
    "UID THREAD REFERENCES UTF-8 NOT 2",
];

/// The SORT or THREAD line of each command.
fn answers(c: &mut Client, msgs: &[(String, String)]) -> Vec<String> {
    for (raw, date) in msgs {
        append(c, raw.as_bytes(), date);
    }
    c.ok("SELECT INBOX");
    COMMANDS
        .iter()
        .map(|q| {
            let lines = c.ok(q);
            lines
                .into_iter()
                .find(|l| l.starts_with("* SORT") || l.starts_with("* THREAD"))
                .unwrap_or_default()
                .to_ascii_uppercase()
        })
        .collect()
}

/// RFC 5256 3 and RFC 5957 3 with the choices Dovecot makes: twelve
/// mailboxes, small and large, answered alike by both servers.
#[test]
fn sort_and_thread_answer_as_dovecot_does() {
    for (seed, n) in (1..=12u64).map(|s| (s, [6, 20, 60][s as usize % 3])) {
        let msgs = mailbox(seed, n);
        let tmp = tempfile::tempdir().unwrap();
        let ours = answers(
            &mut Client::spawn(&tmp.path().join("spool"), "parity"),
            &msgs,
        );
        let reference = answers(&mut dovecot(tmp.path()), &msgs);
        assert!(ours.iter().all(|l| l.starts_with("* ")), "{ours:?}");
        for ((q, a), b) in COMMANDS.iter().zip(&ours).zip(&reference) {
            assert_eq!(a, b, "seed {seed}, {n} messages, {q}\n{msgs:#?}");
        }
    }
}

/// The same on a mailbox big enough for the server's key file
/// (`.sortkeys`, FORMAT.md §10): the run that reads the headers and writes
/// the file, and a new server that answers from it, both as Dovecot.
#[test]
fn sort_and_thread_from_the_key_file_answer_as_dovecot_does() {
    let msgs = mailbox(13, 300);
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let first = answers(&mut Client::spawn(&spool, "parity"), &msgs);
    assert!(spool.join("parity/INBOX/.sortkeys").exists());
    let second = answers(&mut Client::spawn(&spool, "parity"), &[]);
    let reference = answers(&mut dovecot(tmp.path()), &msgs);
    for (((q, a), b), r) in COMMANDS.iter().zip(&first).zip(&second).zip(&reference) {
        assert!(r.starts_with("* "), "{q}: {r}");
        assert_eq!(a, r, "300 messages, first run, {q}");
        assert_eq!(b, r, "300 messages, from the key file, {q}");
    }
}

/// imaptest's fetch-binary-mime message, and parts in quoted-printable
/// and base64 (text, so the answers can be compared as lines).
fn binary_messages() -> Vec<(String, String)> {
    let mime = "From: user@domain.org\nDate: Sat, 24 Mar 2007 23:00:00 +0200\n\
        Mime-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"foo\n bar\"\n\n\
        Root MIME prologue\n\n--foo bar\nContent-Type: text/x-myown; charset=us-ascii\n\n\
        hello\n\n--foo bar\nContent-Type: message/rfc822\n\n\
        From: sub@domain.org\nDate: Sun, 12 Aug 2012 12:34:56 +0300\nSubject: submsg\n\
        Content-Type: multipart/alternative; boundary=\"sub1\"\n\nSub MIME prologue\n\
        --sub1\nContent-Type: text/html\n\n<p>Hello world</p>\n\n--sub1\n\
        Content-Type: text/plain\n\nHello another world\n\n--sub1--\nSub MIME epilogue\n\n\
        --foo bar--\nRoot MIME epilogue\n\n";
    let encoded = "Subject: enc\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n\
        --b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n\
        caf=C3=A9 au lait=\n, soft   \nbreak =3D x\n--b\nContent-Transfer-Encoding: base64\n\
        X-After: 1\n\naGVsbG8g\nd29ybGQ=\n--b\nContent-Type: message/rfc822\n\n\
        Subject: in\nContent-Transfer-Encoding: BASE64\n\naGk=\n--b--\n";
    [mime, encoded]
        .iter()
        .map(|m| {
            (
                m.replace('\n', "\r\n"),
                "01-Jan-2024 10:00:00 +0000".to_string(),
            )
        })
        .collect()
}

/// Every untagged line of each FETCH, literal8 written as a literal.
fn fetch_answers(c: &mut Client, msgs: &[(String, String)], fetches: &[String]) -> Vec<String> {
    for (raw, date) in msgs {
        append(c, raw.as_bytes(), date);
    }
    c.ok("SELECT INBOX");
    fetches
        .iter()
        .flat_map(|q| c.ok(q))
        .map(|l| l.replace("~{", "{"))
        .collect()
}

/// RFC 3516 4.2 BINARY and BINARY.SIZE of every kind of section, with and
/// without partials, as Dovecot answers them (whose choices imaptest's
/// fetch-binary-mime tests assume): leaves decoded, composite parts with
/// their leaves decoded, HEADER/TEXT/MIME sections.
#[test]
fn binary_answers_as_dovecot_does() {
    let sections = [
        "",
        "TEXT",
        "1",
        "1.MIME",
        "2",
        "2.MIME",
        "2.HEADER",
        "2.TEXT",
        "2.1",
        "2.2",
        "2.2.MIME",
        "2.HEADER.FIELDS (FROM SUBJECT X-FOO)",
        "3",
        "9",
    ];
    let mut fetches = Vec::new();
    for msg in 1..=2 {
        for s in sections {
            fetches.push(format!("FETCH {msg} (BINARY.PEEK[{s}] BINARY.SIZE[{s}])"));
        }
        fetches.push(format!(
            "FETCH {msg} (BINARY.PEEK[1]<3.9> BINARY.PEEK[2]<4>)"
        ));
    }
    let msgs = binary_messages();
    let tmp = tempfile::tempdir().unwrap();
    let ours = fetch_answers(
        &mut Client::spawn(&tmp.path().join("spool"), "bin"),
        &msgs,
        &fetches,
    );
    let reference = fetch_answers(&mut dovecot(tmp.path()), &msgs, &fetches);
    // Decoded base64 and quoted-printable are among them.
    assert!(ours.iter().any(|l| l == "hello world"), "{ours:#?}");
    assert!(
        ours.iter().any(|l| l.starts_with("caf\u{e9} au lait")),
        "{ours:#?}"
    );
    assert_eq!(ours.len(), reference.len(), "{ours:#?}\n{reference:#?}");
    for (a, b) in ours.iter().zip(&reference) {
        assert_eq!(a, b, "\nours: {ours:#?}\ndovecot: {reference:#?}");
    }
}
