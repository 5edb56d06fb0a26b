//! Sieve at delivery (issue 18) through the real binary: the recipient's
//! active script (`USER/.sieve/active` naming `USER/.sieve/NAME.sieve`)
//! decides where a message goes, in one-shot and LMTP mode. A script that
//! fails never loses mail (implicit keep, RFC 5228 2.10.6), and a
//! delivery into several mailboxes is not doubled by a crash and retry.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::{Spool, assert_failed, stderr};
use storage::Flags;

fn install(s: &Spool, user: &str, script: &str) {
    let dir = s.root.join(user).join(".sieve");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.sieve"), script).unwrap();
    std::fs::write(dir.join("active"), "main\n").unwrap();
}

/// (flags, keyword names) of every live message of a mailbox.
fn flags(s: &Spool, user: &str, mailbox: &str) -> Vec<(Flags, Vec<String>)> {
    let mut m = s.mailbox(user, mailbox);
    let snap = m.snapshot().unwrap();
    let names = m.keyword_names().to_vec();
    snap.records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| {
            (
                r.flags,
                r.keywords.iter().map(|i| names[i].clone()).collect(),
            )
        })
        .collect()
}

fn count(s: &Spool, user: &str, mailbox: &str) -> usize {
    s.messages(user, mailbox).len()
}

const SCRIPT: &str = r#"require ["fileinto", "mailbox", "imap4flags", "reject", "copy"];
if header :contains "subject" "present" { fileinto :create :flags ["\\Seen", "$Gift"] "Gifts"; keep; }
elsif header :contains "subject" "spam" { reject "We do not want it."; }
elsif header :contains "subject" "junk" { discard; }
elsif header :contains "subject" "missing" { fileinto "Nowhere"; }
elsif header :contains "subject" "forward" { redirect "other@example.net"; }
elsif header :contains "subject" "three" { fileinto :create "A"; fileinto :create "B"; fileinto :create "C"; }
"#;

fn msg(subject: &str) -> Vec<u8> {
    format!(
        "From: a@example.org\nSubject: {subject}\nMessage-ID: <{subject}@example.org>\n\nbody\n"
    )
    .into_bytes()
}

/// RFC 5228 4.1 + RFC 5490 3.2 + RFC 5232 5: fileinto :create with
/// :flags and keep store one copy each, with the flags.
#[test]
fn fileinto_create_flags_and_keep() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", SCRIPT);
    let o = s.deliver(&["-d", "bob", "-f", "a@example.org"], &msg("a present"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    let g = flags(&s, "bob", "Gifts");
    assert_eq!(g.len(), 1);
    assert!(g[0].0.contains(Flags::SEEN));
    assert_eq!(g[0].1, ["$Gift"]);
    assert_eq!(flags(&s, "bob", "INBOX")[0].0, Flags::empty());
    // The message itself is stored byte for byte as without a script.
    let m = &s.messages("bob", "Gifts")[0];
    assert!(m.starts_with(b"Return-Path: <a@example.org>\r\nFrom: a@example.org\r\n"));
}

/// RFC 5429 2.1: reject in one-shot mode is exit 77 (EX_NOPERM, as
/// dovecot-lda -e) with `5.7.1 REASON` as the first stderr line; nothing stored.
#[test]
fn reject_one_shot() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", SCRIPT);
    let before = s.fingerprint("bob", "INBOX");
    let o = s.deliver(&["-d", "bob"], &msg("spam offer"));
    assert_failed(&o, 77, "5.7.1");
    assert!(
        stderr(&o).starts_with("5.7.1 We do not want it.\n"),
        "{}",
        stderr(&o)
    );
    assert_eq!(s.fingerprint("bob", "INBOX"), before);
}

/// RFC 5228 4.4: discard stores nothing and succeeds.
#[test]
fn discard_one_shot() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", SCRIPT);
    let o = s.deliver(&["-d", "bob", "-v"], &msg("junk"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("discarded by sieve"));
    assert_eq!(count(&s, "bob", "INBOX"), 0);
}

/// RFC 5228 2.10.6 / 2.10.2: a script that does not compile, a runtime
/// error (action limit), a missing mailbox and a redirect that cannot be
/// sent all keep the message in INBOX, with a log line.
#[test]
fn failures_keep_the_message() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require \"fileinto\";\nif true {\n  fileinto \"x\"\n}\n",
    );
    let o = s.deliver(&["-d", "bob", "-v"], &msg("anything"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("main.sieve:4:1"),
        "line:column in the log: {}",
        stderr(&o)
    );
    assert_eq!(count(&s, "bob", "INBOX"), 1);

    let many: String = (0..40)
        .map(|i| format!("fileinto :create \"m{i}\";"))
        .collect();
    install(
        &s,
        "bob",
        &format!("require [\"fileinto\", \"mailbox\"]; {many}"),
    );
    let o = s.deliver(&["-d", "bob", "-v"], &msg("more"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("too many actions"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 2);

    install(&s, "bob", SCRIPT);
    let o = s.deliver(&["-d", "bob", "-v"], &msg("missing folder"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 3);

    let o = s.deliver(&["-d", "bob", "-v"], &msg("forward this"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("redirect not carried out"),
        "{}",
        stderr(&o)
    );
    assert_eq!(count(&s, "bob", "INBOX"), 4);
}

/// A delivery into three mailboxes killed after the first commit: the
/// retry stores the message in the other two, never twice in the first
/// (PROTOCOL.md, the Sieve section).
#[test]
fn crash_between_mailboxes_and_retry_does_not_double_deliver() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", SCRIPT);
    let m = msg("three");
    let o = s.deliver_env(
        &["-d", "bob"],
        &m,
        &[("MAILSTORE_TEST_FAULT", "sieve.between_mailboxes=kill")],
    );
    assert_eq!(o.status.code(), None, "killed: {}", stderr(&o));
    assert_eq!(count(&s, "bob", "A"), 1);
    assert_eq!(count(&s, "bob", "B"), 0);
    // Postfix's retry of the same queue file.
    let o = s.deliver(&["-d", "bob"], &m);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for mb in ["A", "B", "C"] {
        assert_eq!(count(&s, "bob", mb), 1, "{mb}");
    }
    // A later message with other bytes is a new message.
    let o = s.deliver(&["-d", "bob"], &msg("three again"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "A"), 2);
}

/// Users without an active script are delivered as before; an empty
/// `active` file means no script.
#[test]
fn no_active_script() {
    let s = Spool::with_users(&["bob"]);
    std::fs::create_dir_all(s.root.join("bob/.sieve")).unwrap();
    std::fs::write(s.root.join("bob/.sieve/active"), "").unwrap();
    let o = s.deliver(&["-d", "bob"], &msg("spam"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 1);
}

/// LMTP: each recipient runs its own script and gets its own reply
/// (RFC 2033 4.2): 550 5.7.1 for a rejection, 250 for the others.
#[test]
fn lmtp_per_recipient_scripts() {
    let s = Spool::with_users(&["bob", "carol", "dave"]);
    install(&s, "bob", SCRIPT);
    install(&s, "carol", "require \"reject\"; reject \"carol refuses\";");
    let mut child = s
        .command()
        .arg("--lmtp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let body = "Subject: a present\r\nMessage-ID: <lm@example.org>\r\n\r\nhi\r\n";
    write!(
        w,
        "LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<dave@example.com>\r\nDATA\r\n{body}.\r\nQUIT\r\n"
    )
    .unwrap();
    w.flush().unwrap();
    drop(w);
    let mut lines = Vec::new();
    let mut l = String::new();
    while r.read_line(&mut l).unwrap() > 0 {
        lines.push(l.trim_end().to_string());
        l.clear();
    }
    child.wait().unwrap();
    // Greeting, LHLO (multi-line), MAIL, 3 RCPT, DATA, 3 replies, QUIT.
    let tail: Vec<&String> = lines.iter().rev().skip(1).take(3).collect();
    assert!(
        tail[2].starts_with("250 2.0.0 delivered to bob (2 mailboxes)"),
        "{lines:?}"
    );
    assert!(tail[1].starts_with("550 5.7.1 carol refuses"), "{lines:?}");
    assert!(tail[0].starts_with("250 "), "{lines:?}");
    assert_eq!(count(&s, "bob", "Gifts"), 1);
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    assert_eq!(count(&s, "carol", "INBOX"), 0);
    assert_eq!(count(&s, "dave", "INBOX"), 1);
}

/// RFC 6609: `include :personal` reads the user's `.sieve/NAME.sieve`,
/// `include :global` the `--sieve-global-dir`; a missing one is a runtime
/// error (implicit keep, logged).
#[test]
fn include_personal_and_global() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require [\"include\"]; include :personal \"lists\"; include :global \"spam\";",
    );
    std::fs::write(
        s.root.join("bob/.sieve/lists.sieve"),
        "require [\"fileinto\", \"mailbox\"]; if header :contains \"subject\" \"list\" { fileinto :create \"Lists\"; }",
    )
    .unwrap();
    let global = s.tmp.path().join("global");
    std::fs::create_dir_all(&global).unwrap();
    std::fs::write(
        global.join("spam.sieve"),
        "require [\"fileinto\", \"mailbox\"]; if header :contains \"subject\" \"spam\" { fileinto :create \"Junk\"; }",
    )
    .unwrap();
    let g = global.to_str().unwrap();
    for subject in ["list news", "spam offer"] {
        let o = s.deliver(&["-d", "bob", "--sieve-global-dir", g], &msg(subject));
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(count(&s, "bob", "Lists"), 1);
    assert_eq!(count(&s, "bob", "Junk"), 1);
    // Without the global directory the global script is missing: kept, logged.
    let o = s.deliver(&["-d", "bob", "-v"], &msg("spam again"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    assert_eq!(count(&s, "bob", "Junk"), 1);
}

/// RFC 7352: `duplicate` remembers delivered Message-IDs per user (in
/// `.sieve/.dedup`), only once the delivery succeeded.
#[test]
fn duplicate_across_deliveries() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require [\"duplicate\", \"fileinto\", \"mailbox\"]; if duplicate { fileinto :create \"Dups\"; }",
    );
    let m = msg("twice");
    // A delivery that fails (an injected write error: exit 75) records nothing.
    let o = s.deliver_env(
        &["-d", "bob"],
        &m,
        &[("MAILSTORE_TEST_FAULT", "append.after_stage_write=error")],
    );
    assert_eq!(o.status.code(), Some(75), "{}", stderr(&o));
    for _ in 0..2 {
        let o = s.deliver(&["-d", "bob"], &m);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    assert_eq!(count(&s, "bob", "Dups"), 1);
    assert!(s.root.join("bob/.sieve/.dedup").exists());
    // Another message is not a duplicate.
    let o = s.deliver(&["-d", "bob"], &msg("once"));
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 2);
}
