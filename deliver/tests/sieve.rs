//! Sieve at delivery (issue 18) through the real binary: the recipient's
//! active script (`USER/.sieve/active` naming `USER/.sieve/NAME.sieve`)
//! decides where a message goes, in one-shot and LMTP mode. A script that
//! fails never loses mail (implicit keep, RFC 5228 2.10.6), and a
//! delivery into several mailboxes is not doubled by a crash and retry.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Stdio;

use common::{Spool, assert_failed, stderr};
use storage::Flags;

fn install(s: &Spool, user: &str, script: &str) {
    let dir = s.root.join(user).join(".sieve");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.sieve"), script).unwrap();
    std::fs::write(dir.join("active"), "main\n").unwrap();
}

/// Another script of `user` (for `include :personal`), not the active one.
fn add_script(s: &Spool, user: &str, name: &str, script: &str) {
    let path = s
        .root
        .join(user)
        .join(".sieve")
        .join(format!("{name}.sieve"));
    std::fs::write(path, script).unwrap();
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
    s.deliver_ok(&["-d", "bob", "-f", "a@example.org"], &msg("a present"));
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
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("junk"));
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
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("anything"));
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
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("more"));
    assert!(stderr(&o).contains("too many actions"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 2);

    install(&s, "bob", SCRIPT);
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("missing folder"));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 3);

    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("forward this"));
    assert!(
        stderr(&o).contains("redirect not carried out"),
        "{}",
        stderr(&o)
    );
    assert_eq!(count(&s, "bob", "INBOX"), 4);
}

/// Issue 18, hostile scripts, through the real binary: deep nesting and a
/// huge string list do not compile, pathological `:matches` patterns run
/// into the CPU budget, a regex that backtracking engines blow up on runs
/// in linear time, an include loop is a runtime error. Each delivery ends
/// quickly with exit 0, the message kept in INBOX (RFC 5228 2.10.6) and a
/// log line naming the reason.
#[test]
fn hostile_scripts_keep_the_message() {
    let s = Spool::with_users(&["bob"]);
    let subject = "ab".repeat(10_000);
    let list: Vec<String> = (0..2000).map(|i| format!("\"k{i}\"")).collect();
    let matches: String = (0..500)
        .map(|i| format!("if header :matches \"subject\" \"*a*b*a*b*{i}*\" {{ discard; }}\n"))
        .collect();
    let regex: String = (0..200)
        .map(|i| format!("if header :regex \"subject\" \"^(a|ab|b)*(a|b)*{i}$\" {{ discard; }}\n"))
        .collect();
    let cases = [
        (
            "if ".to_string() + &"allof(".repeat(40) + "true" + &")".repeat(40) + " { discard; }",
            "script not used",
        ),
        (
            format!(
                "if header :is \"subject\" [{}] {{ discard; }}",
                list.join(",")
            ),
            "too long",
        ),
        (matches, "CPU"),
        (format!("require \"regex\";\n{regex}"), ""),
        (
            "require \"include\"; include \"other\";".to_string(),
            "loop",
        ),
    ];
    std::fs::create_dir_all(s.root.join("bob/.sieve")).unwrap();
    std::fs::write(
        s.root.join("bob/.sieve/other.sieve"),
        "require \"include\"; include \"main\";",
    )
    .unwrap();
    for (i, (script, reason)) in cases.iter().enumerate() {
        install(&s, "bob", script);
        let start = std::time::Instant::now();
        let m = format!("From: a@example.org\nSubject: {subject}\nMessage-ID: <h{i}@x>\n\nbody\n");
        let o = s.deliver(&["-d", "bob", "-v"], m.as_bytes());
        assert!(start.elapsed().as_secs() < 60, "case {i} did not hang");
        assert_eq!(o.status.code(), Some(0), "case {i}: {}", stderr(&o));
        assert!(stderr(&o).contains(reason), "case {i}: {}", stderr(&o));
        if !reason.is_empty() {
            assert!(
                stderr(&o).contains("implicit keep"),
                "case {i}: {}",
                stderr(&o)
            );
        }
        assert_eq!(count(&s, "bob", "INBOX"), i + 1, "case {i}");
    }
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
    // `:create` makes B when the message goes in; nothing has yet.
    assert!(!s.root.join("bob/B/.index").exists() || count(&s, "bob", "B") == 0);
    // Postfix's retry of the same queue file.
    s.deliver_ok(&["-d", "bob"], &m);
    for mb in ["A", "B", "C"] {
        assert_eq!(count(&s, "bob", mb), 1, "{mb}");
    }
    // A later message with other bytes is a new message.
    s.deliver_ok(&["-d", "bob"], &msg("three again"));
    assert_eq!(count(&s, "bob", "A"), 2);
}

/// Users without an active script are delivered as before; an empty
/// `active` file means no script.
#[test]
fn no_active_script() {
    let s = Spool::with_users(&["bob"]);
    std::fs::create_dir_all(s.root.join("bob/.sieve")).unwrap();
    std::fs::write(s.root.join("bob/.sieve/active"), "").unwrap();
    s.deliver_ok(&["-d", "bob"], &msg("spam"));
    assert_eq!(count(&s, "bob", "INBOX"), 1);
}

/// An LMTP server on stdio: the process, its input and its output.
/// One message to bob over an LMTP session from [`lmtp_server`] (its
/// Subject and Message-ID local part `id`); waits for the 250 of its
/// delivery and fails on any 4xx or 5xx reply.
fn lmtp_deliver_to_bob(
    w: &mut std::process::ChildStdin,
    r: &mut BufReader<std::process::ChildStdout>,
    id: &str,
) {
    write!(
        w,
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nDATA\r\nSubject: {id}\r\nMessage-ID: <{id}@example.org>\r\n\r\nhi\r\n.\r\n"
    )
    .unwrap();
    w.flush().unwrap();
    let mut l = String::new();
    loop {
        l.clear();
        assert!(r.read_line(&mut l).unwrap() > 0, "server closed");
        if l.starts_with("250 2.0.0 delivered") {
            return;
        }
        assert!(!l.starts_with('4') && !l.starts_with('5'), "{l}");
    }
}

fn lmtp_server(
    s: &Spool,
) -> (
    std::process::Child,
    std::process::ChildStdin,
    BufReader<std::process::ChildStdout>,
) {
    let mut child = s
        .command()
        .arg("--lmtp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let w = child.stdin.take().unwrap();
    let r = BufReader::new(child.stdout.take().unwrap());
    (child, w, r)
}

/// LMTP: each recipient runs its own script and gets its own reply
/// (RFC 2033 4.2): 550 5.7.1 for a rejection, 250 for the others.
#[test]
fn lmtp_per_recipient_scripts() {
    let s = Spool::with_users(&["bob", "carol", "dave", "erin"]);
    install(&s, "bob", SCRIPT);
    install(&s, "carol", "require \"reject\"; reject \"carol refuses\";");
    // One mailbox: through the LMTP group commit.
    install(
        &s,
        "erin",
        "require [\"fileinto\", \"mailbox\"]; fileinto :create \"Work\";",
    );
    let (mut child, mut w, mut r) = lmtp_server(&s);
    let body = "Subject: a present\r\nMessage-ID: <lm@example.org>\r\n\r\nhi\r\n";
    write!(
        w,
        "LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nRCPT TO:<dave@example.com>\r\nRCPT TO:<erin@example.com>\r\nDATA\r\n{body}.\r\nQUIT\r\n"
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
    // Greeting, LHLO (multi-line), MAIL, 4 RCPT, DATA, 4 replies, QUIT.
    let tail: Vec<&String> = lines.iter().rev().skip(1).take(4).collect();
    assert!(
        tail[3].starts_with("250 2.0.0 delivered to bob (2 mailboxes)"),
        "{lines:?}"
    );
    assert!(tail[2].starts_with("550 5.7.1 carol refuses"), "{lines:?}");
    assert!(tail[1].starts_with("250 "), "{lines:?}");
    assert!(
        tail[0].starts_with("250 2.0.0 delivered to erin (1 mailbox)"),
        "{lines:?}"
    );
    assert_eq!(count(&s, "erin", "Work"), 1);
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
    add_script(
        &s,
        "bob",
        "lists",
        "require [\"fileinto\", \"mailbox\"]; if header :contains \"subject\" \"list\" { fileinto :create \"Lists\"; }",
    );
    let global = s.tmp.path().join("global");
    std::fs::create_dir_all(&global).unwrap();
    std::fs::write(
        global.join("spam.sieve"),
        "require [\"fileinto\", \"mailbox\"]; if header :contains \"subject\" \"spam\" { fileinto :create \"Junk\"; }",
    )
    .unwrap();
    let g = global.to_str().unwrap();
    for subject in ["list news", "spam offer"] {
        s.deliver_ok(&["-d", "bob", "--sieve-global-dir", g], &msg(subject));
    }
    assert_eq!(count(&s, "bob", "Lists"), 1);
    assert_eq!(count(&s, "bob", "Junk"), 1);
    // Without the global directory the global script is missing: kept, logged.
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("spam again"));
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
        s.deliver_ok(&["-d", "bob"], &m);
    }
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    assert_eq!(count(&s, "bob", "Dups"), 1);
    assert!(s.root.join("bob/.sieve/.dedup").exists());
    // Another message is not a duplicate.
    s.deliver_ok(&["-d", "bob"], &msg("once"));
    assert_eq!(count(&s, "bob", "INBOX"), 2);
}

/// A sendmail stand-in for the outgoing side (the Postfix end-to-end test
/// uses the real one): each call leaves its arguments and its stdin in
/// `dir` as N.args and N.msg; exit status from the file `dir/status`.
fn capture_sendmail(s: &Spool) -> (std::path::PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let dir = s.tmp.path().join("sent");
    std::fs::create_dir_all(&dir).unwrap();
    let bin = s.tmp.path().join("sendmail.sh");
    std::fs::write(
        &bin,
        format!(
            "#!/bin/sh\nd={}\nn=$(ls $d | grep -c args)\nprintf '%s\\n' \"$@\" > $d/$n.args\ncat > $d/$n.msg\nexit $(cat $d/status 2>/dev/null || echo 0)\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin.to_str().unwrap().to_string())
}

/// deliver's arguments for a message from `from` to bob@example.com.
fn to_bob<'a>(from: &'a str, sendmail: &'a str) -> [&'a str; 8] {
    [
        "-d",
        "bob",
        "-f",
        from,
        "-a",
        "bob@example.com",
        "--sendmail",
        sendmail,
    ]
}

fn sent(dir: &std::path::Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in 0.. {
        let Ok(args) = std::fs::read_to_string(dir.join(format!("{n}.args"))) else {
            break;
        };
        out.push((
            args,
            std::fs::read_to_string(dir.join(format!("{n}.msg"))).unwrap(),
        ));
    }
    out
}

/// RFC 5228 4.2: redirect through --sendmail keeps the original sender,
/// adds the loop-detection header, cancels the implicit keep; a retry of
/// the same message does not send it again; a message that comes back is
/// kept instead; a sendmail failure defers the delivery with nothing stored.
#[test]
fn redirect_through_sendmail() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", "redirect \"other@example.net\";");
    let (dir, bin) = capture_sendmail(&s);
    let args = to_bob("a@example.org", &bin);
    let m = msg("redirect me");
    s.deliver_ok(&args, &m);
    let out = sent(&dir);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "-i\n-f\na@example.org\n--\nother@example.net\n");
    assert!(
        out[0]
            .1
            .starts_with("X-Sieve-Redirected-From: <bob@example.com>\r\nFrom: a@example.org\r\n"),
        "{}",
        out[0].1
    );
    assert_eq!(count(&s, "bob", "INBOX"), 0);
    // Postfix's retry of the same message: not sent twice.
    s.deliver_ok(&args, &m);
    assert_eq!(sent(&dir).len(), 1);
    // It came back: kept, not sent again.
    let back = [
        b"X-Sieve-Redirected-From: <bob@example.com>\n".as_slice(),
        &msg("came back"),
    ]
    .concat();
    s.deliver_ok(&args, &back);
    assert_eq!(sent(&dir).len(), 1);
    assert_eq!(count(&s, "bob", "INBOX"), 1);
    // sendmail fails: 75, nothing stored, nothing remembered.
    std::fs::write(dir.join("status"), "75").unwrap();
    let o = s.deliver(&args, &msg("fails"));
    assert_failed(&o, 75, "4.3.0");
    std::fs::remove_file(dir.join("status")).unwrap();
    s.deliver_ok(&args, &msg("fails"));
    assert_eq!(sent(&dir).len(), 3);
}

/// RFC 5230: a vacation reply goes to the sender with an empty envelope
/// sender, Auto-Submitted, In-Reply-To and References; once per period per
/// sender; never to a list message.
#[test]
fn vacation_through_sendmail() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require \"vacation\"; vacation :days 7 :subject \"Away\" \"I am away.\";",
    );
    let (dir, bin) = capture_sendmail(&s);
    let args = to_bob("a@example.org", &bin);
    let m = b"From: a@example.org\nTo: bob@example.com\nSubject: hello\nMessage-ID: <m1@example.org>\nReferences: <m0@example.org>\n\nhi\n";
    s.deliver_ok(&args, m);
    assert_eq!(count(&s, "bob", "INBOX"), 1, "the message itself is kept");
    let out = sent(&dir);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, "-i\n-f\n\n--\na@example.org\n");
    let reply = &out[0].1;
    for h in [
        "From: bob@example.com\r\n",
        "To: <a@example.org>\r\n",
        "Subject: Away\r\n",
        "In-Reply-To: <m1@example.org>\r\n",
        "References: <m0@example.org> <m1@example.org>\r\n",
        "Auto-Submitted: auto-replied",
    ] {
        assert!(reply.contains(h), "{h:?} in {reply}");
    }
    assert!(reply.ends_with("\r\n\r\nI am away.\r\n"), "{reply}");
    // Within the period: no second reply to that sender.
    let m2 = String::from_utf8_lossy(m).replace("m1@", "m2@");
    s.deliver_ok(&args, m2.as_bytes());
    assert_eq!(sent(&dir).len(), 1);
    // A list message is never answered.
    let list =
        b"From: c@example.org\nTo: bob@example.com\nList-Id: <l.example.org>\nSubject: x\n\nhi\n";
    let args_c = to_bob("c@example.org", &bin);
    s.deliver_ok(&args_c, list);
    assert_eq!(sent(&dir).len(), 1);
}

/// A failure's status line stays the one stderr line (the first, with -v;
/// OPERATIONS.md §3) when the script logged before the delivery failed:
/// here a redirect, then a rejection.
#[test]
fn status_line_first_after_sieve_logs() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require \"reject\"; redirect \"x@example.net\"; reject \"not here\";",
    );
    let (dir, bin) = capture_sendmail(&s);
    let o = s.deliver(&to_bob("a@example.org", &bin), &msg("both"));
    assert_failed(&o, 77, "5.7.1");
    assert_eq!(stderr(&o), "5.7.1 not here\n");
    // With -v the log lines follow the status line.
    let mut args = to_bob("a@example.org", &bin).to_vec();
    args.push("-v");
    let o = s.deliver(&args, &msg("both again"));
    let err = stderr(&o);
    assert!(err.starts_with("5.7.1 not here\n"), "{err}");
    assert!(err.contains("sieve: redirected"), "the log follows: {err}");
    assert_eq!(sent(&dir).len(), 2);
}

/// The spool never follows a symlink: an `active` file or a script that is
/// one is not used, the message is kept and the reason logged.
#[test]
fn symlinked_script_is_not_followed() {
    let s = Spool::with_users(&["bob"]);
    install(&s, "bob", "discard;");
    let outside = s.tmp.path().join("evil.sieve");
    std::fs::write(&outside, "discard;").unwrap();
    let script = s.root.join("bob/.sieve/main.sieve");
    std::fs::remove_file(&script).unwrap();
    std::os::unix::fs::symlink(&outside, &script).unwrap();
    let o = s.deliver_ok(&["-d", "bob", "-v"], &msg("kept"));
    assert!(stderr(&o).contains("script not used"), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "INBOX"), 1);
}

/// RFC 5183: the environment deliver gives a script (location, phase,
/// domain of the recipient, host).
#[test]
fn environment_items() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require [\"environment\", \"fileinto\", \"mailbox\", \"variables\"];\n\
         if allof (environment :is \"location\" \"MDA\", environment :is \"phase\" \"during\",\n\
                   environment :matches \"host\" \"?*\", environment :matches \"domain\" \"*\") {\n\
           fileinto :create \"env-${1}\";\n\
         }",
    );
    s.deliver_ok(&["-d", "bob", "-a", "bob@example.com"], &msg("env"));
    assert_eq!(count(&s, "bob", "env-example.com"), 1);
}

/// RFC 5463 4 and RFC 6609 3.2: a script that does not require
/// `environment` can still read it behind `ihave "environment"` or in an
/// included script, in LMTP as in one-shot mode (deliver builds the
/// environment only for scripts that can read it).
#[test]
fn environment_behind_ihave_and_in_an_included_script() {
    let s = Spool::with_users(&["bob", "carol"]);
    install(
        &s,
        "bob",
        "require [\"ihave\", \"fileinto\", \"mailbox\"];\n\
         if ihave \"environment\" {\n\
           if environment :is \"location\" \"MDA\" { fileinto :create \"ihave-mda\"; }\n\
         }",
    );
    install(
        &s,
        "carol",
        "require \"include\"; include :personal \"env\";",
    );
    add_script(
        &s,
        "carol",
        "env",
        "require [\"environment\", \"fileinto\", \"mailbox\"];\n\
         if environment :is \"phase\" \"during\" { fileinto :create \"inc-during\"; }",
    );
    s.deliver_ok(&["-d", "bob"], &msg("one-shot"));
    assert_eq!(count(&s, "bob", "ihave-mda"), 1);
    let (mut child, mut w, mut r) = lmtp_server(&s);
    write!(
        w,
        "LHLO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<bob@example.com>\r\nRCPT TO:<carol@example.com>\r\nDATA\r\nSubject: e\r\n\r\nx\r\n.\r\nQUIT\r\n"
    )
    .unwrap();
    drop(w);
    let mut out = String::new();
    r.read_to_string(&mut out).unwrap();
    child.wait().unwrap();
    assert_eq!(out.matches("250 2.0.0 delivered").count(), 2, "{out}");
    assert_eq!(count(&s, "bob", "ihave-mda"), 2);
    assert_eq!(count(&s, "carol", "inc-during"), 1);
}

/// RFC 5260 4.2: `currentdate` and `date` without `:zone` use the local
/// zone (here the process's TZ, +05:30).
#[test]
fn dates_in_the_local_zone() {
    let s = Spool::with_users(&["bob"]);
    install(
        &s,
        "bob",
        "require [\"date\", \"fileinto\", \"mailbox\", \"variables\"];\n\
         if currentdate :matches \"zone\" \"*\" { set \"now\" \"${1}\"; }\n\
         if date :matches \"date\" \"zone\" \"*\" { fileinto :create \"z${now}${1}\"; }",
    );
    let m = b"Date: Tue, 14 Nov 2023 22:13:20 +0100\nSubject: z\n\nx\n";
    let o = s.deliver_env(&["-d", "bob"], m, &[("TZ", "XST-05:30")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(count(&s, "bob", "z+0530+0530"), 1);
}

/// FORMAT.md 9: an LMTP server compiles a script once, but a script
/// changed while it runs is used from the next delivery on, even when
/// the new text has the same size and modification time as the old one
/// (rewritten in the same second, or its mtime set back) and even once the
/// server trusts the cached copy without reading the file.
#[test]
fn lmtp_uses_a_changed_script_from_the_next_delivery() {
    let s = Spool::with_users(&["bob"]);
    let script = |mailbox: &str| {
        format!("require [\"fileinto\", \"mailbox\"]; fileinto :create \"{mailbox}\";")
    };
    install(&s, "bob", &script("One"));
    let path = s.root.join("bob/.sieve/main.sieve");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    // Rewrites the script in place: same inode, same size, same mtime.
    let rewrite = |mailbox: &str| {
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(0).unwrap();
        (&f).write_all(script(mailbox).as_bytes()).unwrap();
        f.set_modified(mtime).unwrap();
    };
    let (mut child, mut w, mut r) = lmtp_server(&s);
    write!(w, "LHLO x\r\n").unwrap();
    let mut deliver = |n: usize| lmtp_deliver_to_bob(&mut w, &mut r, &n.to_string());
    deliver(1);
    assert_eq!(count(&s, "bob", "One"), 1);
    // At once (within the timestamp granularity of the first version).
    rewrite("Two");
    deliver(2);
    assert_eq!(
        count(&s, "bob", "Two"),
        1,
        "the changed script was not used"
    );
    // Once the file is old enough that a delivery trusts its stamp...
    std::thread::sleep(std::time::Duration::from_millis(2100));
    deliver(3);
    assert_eq!(count(&s, "bob", "Two"), 2);
    deliver(4);
    assert_eq!(count(&s, "bob", "Two"), 3);
    // ... a change is still seen.
    rewrite("Six");
    deliver(5);
    assert_eq!(count(&s, "bob", "Six"), 1, "a stale cached script was used");
    assert_eq!(count(&s, "bob", "INBOX"), 0);
    drop(w);
    child.wait().unwrap();
}

/// FORMAT.md §9: which script is active is `.sieve/active`; an LMTP
/// server (which caches what `active` said by its stamp) follows every
/// change from the next delivery: a switch by rename (as `sieve-check
/// activate` and ManageSieve's SETACTIVE do), a rewrite in place with
/// the same size and mtime, and removal (no script), both right after a
/// read and once the file is old enough for its stamp to be trusted.
#[test]
fn lmtp_follows_changes_of_the_active_script() {
    let s = Spool::with_users(&["bob"]);
    let dir = s.root.join("bob/.sieve");
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["aaaa", "bbbb", "cccc"] {
        std::fs::write(
            dir.join(format!("{name}.sieve")),
            format!("require [\"fileinto\", \"mailbox\"]; fileinto :create \"{name}\";"),
        )
        .unwrap();
    }
    let active = dir.join("active");
    std::fs::write(&active, "aaaa\n").unwrap();
    let mtime = std::fs::metadata(&active).unwrap().modified().unwrap();
    let rename_to = |name: &str| {
        let tmp = dir.join(".active.tmp");
        std::fs::write(&tmp, format!("{name}\n")).unwrap();
        std::fs::rename(&tmp, &active).unwrap();
    };
    let in_place = |name: &str| {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap();
        f.set_len(0).unwrap();
        (&f).write_all(format!("{name}\n").as_bytes()).unwrap();
        f.set_modified(mtime).unwrap();
    };
    let (mut child, mut w, mut r) = lmtp_server(&s);
    write!(w, "LHLO x\r\n").unwrap();
    let mut n = 0;
    let mut deliver = || {
        n += 1;
        lmtp_deliver_to_bob(&mut w, &mut r, &format!("a{n}"));
    };
    let settle = || std::thread::sleep(std::time::Duration::from_millis(2100));
    deliver();
    assert_eq!(count(&s, "bob", "aaaa"), 1);
    in_place("bbbb");
    deliver();
    assert_eq!(
        count(&s, "bob", "bbbb"),
        1,
        "in-place change right after a read"
    );
    rename_to("cccc");
    deliver();
    assert_eq!(count(&s, "bob", "cccc"), 1, "switch by rename");
    settle();
    deliver();
    deliver();
    assert_eq!(count(&s, "bob", "cccc"), 3);
    rename_to("aaaa");
    deliver();
    assert_eq!(
        count(&s, "bob", "aaaa"),
        2,
        "switch by rename, stamp trusted"
    );
    settle();
    deliver();
    in_place("bbbb");
    deliver();
    assert_eq!(
        count(&s, "bob", "bbbb"),
        2,
        "in-place change, stamp trusted"
    );
    std::fs::remove_file(&active).unwrap();
    deliver();
    assert_eq!(count(&s, "bob", "INBOX"), 1, "no active script");
    drop(w);
    child.wait().unwrap();
}
