//! Sieve behind a real Postfix (issue 18): a user's active script decides
//! where `deliver` puts a message over the pipe(8) transport and over
//! LMTP; a `reject` becomes a 5.7.1 bounce carrying the script's reason;
//! `redirect` and `vacation` send through Postfix's sendmail.
//!
//! Needs root and Debian's postfix package, like `postfix.rs`.

use e2e_tests::postfix::{PIPE_USER, Postfix, contains};
use e2e_tests::{TestMessage, chown_tree, ensure_user};

const SCRIPT: &str = r#"require ["fileinto", "reject", "imap4flags", "vacation"];
if header :contains "subject" "file me" { fileinto :flags "\\Flagged" "work"; }
elsif header :contains "subject" "refuse me" { reject "bob does not take this: sieve said no"; }
elsif header :contains "subject" "forward me" { redirect "alice@localhost"; }
elsif header :contains "subject" "holiday" { vacation :days 1 :subject "Bob is away" "Back on Monday."; }
"#;

/// Installs SCRIPT as bob's active script in the virtual spool, owned by
/// the pipe user (deliver runs as that user there and for LMTP).
fn install(pf: &Postfix) {
    let dir = pf.virtual_spool.join("bob").join(".sieve");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.sieve"), SCRIPT).unwrap();
    std::fs::write(dir.join("active"), "main\n").unwrap();
    let (uid, gid) = ensure_user(PIPE_USER, false);
    chown_tree(&dir, uid, gid);
}

/// RFC 5228 4.1 and RFC 5429 2.2 through Postfix: fileinto lands in the
/// named mailbox (pipe and LMTP); reject is bounced with 5.7.1 and the
/// reason, and nothing is stored.
#[test]
fn sieve_files_and_rejects_through_postfix() {
    let mut pf = Postfix::start();
    pf.start_lmtp();
    install(&pf);
    let cases = [
        ("bob@pipe.test", "file me (pipe)", true),
        ("bob@lmtp.test", "file me (lmtp)", true),
        ("bob@pipe.test", "refuse me (pipe)", false),
        ("bob@lmtp.test", "refuse me (lmtp)", false),
    ];
    let msgs: Vec<TestMessage> = cases
        .iter()
        .map(|(rcpt, subject, _)| {
            let m = TestMessage::new("alice@localhost", rcpt, subject);
            pf.sendmail("alice@localhost", &[rcpt], &m);
            m
        })
        .collect();
    for ((rcpt, _, filed), msg) in cases.iter().zip(&msgs) {
        let line = pf.wait_status(msg, rcpt, &["sent", "deferred", "bounced"]);
        if *filed {
            assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
            let stored = pf.wait_stored(&pf.virtual_spool, "bob", "work", &msg.token);
            assert!(contains(&stored, msg.token.as_bytes()));
            assert!(
                pf.stored(&pf.virtual_spool, "bob", "INBOX", &msg.token)
                    .is_empty()
            );
        } else {
            assert!(line.contains("status=bounced"), "{line}\n{}", pf.context());
            assert!(line.contains("dsn=5.7.1"), "{line}");
            assert!(line.contains("sieve said no"), "{line}");
            // The bounce reaches the sender with the reason.
            let bounce = pf.wait_stored(&pf.local_spool, "alice", "INBOX", &msg.token);
            assert!(
                contains(&bounce, b"sieve said no"),
                "{}",
                String::from_utf8_lossy(&bounce)
            );
            assert!(
                pf.stored(&pf.virtual_spool, "bob", "INBOX", &msg.token)
                    .is_empty()
            );
        }
    }
}

/// The same through local(8)'s `mailbox_command`, where `deliver` runs
/// one-shot as the recipient (a login user): fileinto lands in the named
/// mailbox; reject exits 77 with "5.7.1 REASON" on stderr, which Postfix
/// bounces with that status and text.
#[test]
fn sieve_files_and_rejects_through_mailbox_command() {
    let pf = Postfix::start();
    let dir = pf.local_spool.join("bob").join(".sieve");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("main.sieve"), SCRIPT).unwrap();
    std::fs::write(dir.join("active"), "main\n").unwrap();
    let (uid, gid) = ensure_user("bob", true);
    chown_tree(&dir, uid, gid);
    let file = TestMessage::new("alice@localhost", "bob@localhost", "file me (local)");
    pf.sendmail("alice@localhost", &["bob@localhost"], &file);
    let refuse = TestMessage::new("alice@localhost", "bob@localhost", "refuse me (local)");
    pf.sendmail("alice@localhost", &["bob@localhost"], &refuse);
    let line = pf.wait_status(&file, "bob@localhost", &["sent", "deferred", "bounced"]);
    assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
    let stored = pf.wait_stored(&pf.local_spool, "bob", "work", &file.token);
    assert!(contains(&stored, file.token.as_bytes()));
    assert!(
        pf.stored(&pf.local_spool, "bob", "INBOX", &file.token)
            .is_empty()
    );
    let line = pf.wait_status(&refuse, "bob@localhost", &["sent", "deferred", "bounced"]);
    assert!(line.contains("status=bounced"), "{line}\n{}", pf.context());
    assert!(line.contains("dsn=5.7.1"), "{line}");
    assert!(line.contains("sieve said no"), "{line}");
    assert!(
        pf.stored(&pf.local_spool, "bob", "INBOX", &refuse.token)
            .is_empty()
    );
}

/// RFC 5228 4.2 and RFC 5230 through Postfix: a redirect arrives at the
/// new address (not stored for bob); a vacation reply reaches the sender
/// with an empty Return-Path, once per period (not again over LMTP),
/// while bob still gets the message.
#[test]
fn sieve_redirects_and_answers_vacation_through_postfix() {
    let mut pf = Postfix::start();
    pf.start_lmtp();
    install(&pf);
    for rcpt in ["bob@pipe.test", "bob@lmtp.test"] {
        let fwd = TestMessage::new("alice@localhost", rcpt, "please forward me");
        pf.sendmail("alice@localhost", &[rcpt], &fwd);
        let line = pf.wait_status(&fwd, rcpt, &["sent", "deferred", "bounced"]);
        assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
        let arrived = pf.wait_stored(&pf.local_spool, "alice", "INBOX", &fwd.token);
        assert!(
            contains(&arrived, b"X-Sieve-Redirected-From: <bob@"),
            "{}",
            String::from_utf8_lossy(&arrived)
        );
        assert!(
            pf.stored(&pf.virtual_spool, "bob", "INBOX", &fwd.token)
                .is_empty()
        );

        let away = TestMessage::new("alice@localhost", rcpt, "holiday question");
        pf.sendmail("alice@localhost", &[rcpt], &away);
        let line = pf.wait_status(&away, rcpt, &["sent", "deferred", "bounced"]);
        assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
        pf.wait_stored(&pf.virtual_spool, "bob", "INBOX", &away.token);
        if rcpt.ends_with("lmtp.test") {
            // Alice was answered through the pipe a moment ago: not again
            // within the period (:days 1), whichever way the mail came.
            assert!(
                pf.lmtp_log().contains("already answered within the period"),
                "{}",
                pf.lmtp_log()
            );
            assert!(
                pf.stored(&pf.local_spool, "alice", "INBOX", &away.token)
                    .is_empty()
            );
            continue;
        }
        // The reply quotes the Message-ID (In-Reply-To), which holds the token.
        let reply = pf.wait_stored(&pf.local_spool, "alice", "INBOX", &away.token);
        let text = String::from_utf8_lossy(&reply);
        assert!(text.starts_with("Return-Path: <>\r\n"), "{text}");
        assert!(text.contains("Subject: Bob is away\r\n"), "{text}");
        assert!(text.contains("Auto-Submitted: auto-replied"), "{text}");
        assert!(text.contains("Back on Monday."), "{text}");
    }
}
