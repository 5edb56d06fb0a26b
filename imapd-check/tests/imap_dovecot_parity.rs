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
