//! `deliver` behind a real Postfix: mail submitted with sendmail(1) must
//! land in the store through local(8)'s `mailbox_command`, a pipe(8)
//! transport and an LMTP transport; a temporary failure must leave it
//! queued until the cause is gone; an unknown user must bounce.
//!
//! Needs root and Debian's postfix package (`bash scripts/test.sh` installs
//! it); without them these tests fail, they never pass silently. They share
//! the system Postfix, so `Postfix::start` runs them one at a time.

use std::time::Duration;

use e2e_tests::postfix::{Postfix, contains, count};
use e2e_tests::{TestMessage, run_ok};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The header block (a bounce carries the original's headers in its body).
fn header_block(stored: &[u8]) -> &[u8] {
    let end = stored.windows(4).position(|w| w == b"\r\n\r\n");
    &stored[..end.map_or(stored.len(), |e| e + 2)]
}

/// Checks what every stored copy must look like: CRLF lines, one
/// Return-Path with the envelope sender, no mbox `From ` line.
fn assert_stored_shape(stored: &[u8], sender: &str) {
    let t = text(stored);
    assert!(
        !stored.starts_with(b"From "),
        "envelope From_ line kept:\n{t}"
    );
    assert_return_path(stored, sender);
    let bare_lf = stored
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\n' && (i == 0 || stored[i - 1] != b'\r'))
        .count();
    assert_eq!(bare_lf, 0, "stored lines must end in CRLF:\n{t}");
    assert!(contains(stored, b"Hello from the end-to-end test."), "{t}");
}

fn owner(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().uid()
}

/// (a) local(8) `mailbox_command` runs deliver as the recipient; the first
/// delivery creates the INBOX (--autocreate).
#[test]
fn mailbox_command_delivers_as_the_recipient() {
    let pf = Postfix::start();
    let msg = TestMessage::new("bob@localhost", "alice@localhost", "local delivery");
    pf.sendmail("bob@localhost", &["alice@localhost"], &msg);

    let line = pf.wait_status(&msg, "alice@localhost", &["sent", "deferred", "bounced"]);
    assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
    assert!(line.contains("relay=local"), "{line}");

    let stored = pf.wait_stored(&pf.local_spool, "alice", "INBOX", &msg.token);
    assert_stored_shape(&stored, "bob@localhost");
    // local(8) adds Delivered-To; deliver must keep it.
    assert!(
        contains(&stored, b"Delivered-To: alice@localhost\r\n"),
        "{}",
        text(&stored)
    );
    let alice = nix::unistd::User::from_name("alice").unwrap().unwrap();
    let inbox = pf.store(&pf.local_spool).mailbox_path(
        &storage::UserName::new("alice").unwrap(),
        &storage::MailboxName::inbox(),
    );
    assert_eq!(
        owner(&inbox),
        alice.uid.as_raw(),
        "INBOX not created by alice"
    );
    assert!(
        pf.stored(&pf.local_spool, "bob", "INBOX", &msg.token)
            .is_empty()
    );
}

/// (b) pipe(8) with flags=DRhu: the right user, `+detail` to an existing
/// mailbox, INBOX when the detail names no mailbox, no doubled Return-Path.
#[test]
fn pipe_transport_delivers_to_the_right_user_and_mailbox() {
    let pf = Postfix::start();
    let spool = &pf.virtual_spool;
    let to_work = TestMessage::new("alice@localhost", "Bob+Work@pipe.test", "to bob/work");
    let to_inbox = TestMessage::new("alice@localhost", "carol+nosuch@pipe.test", "fallback");
    let plain = TestMessage::new("bob@localhost", "alice@pipe.test", "plain");
    pf.sendmail("alice@localhost", &["Bob+Work@pipe.test"], &to_work);
    pf.sendmail("alice@localhost", &["carol+nosuch@pipe.test"], &to_inbox);
    pf.sendmail("bob@localhost", &["alice@pipe.test"], &plain);

    for (msg, rcpt) in [
        (&to_work, "Bob+Work@pipe.test"),
        (&to_inbox, "carol+nosuch@pipe.test"),
        (&plain, "alice@pipe.test"),
    ] {
        let line = pf.wait_status(msg, rcpt, &["sent", "deferred", "bounced"]);
        assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
        assert!(line.contains("relay=e2edeliver"), "{line}");
    }

    // `u` lowercases the extension: Bob+Work selects bob's mailbox "work".
    let stored = pf.wait_stored(spool, "bob", "work", &to_work.token);
    assert_stored_shape(&stored, "alice@localhost");
    assert!(
        contains(&stored, b"Delivered-To: "),
        "flag D adds Delivered-To"
    );
    assert!(pf.stored(spool, "bob", "INBOX", &to_work.token).is_empty());

    let stored = pf.wait_stored(spool, "carol", "INBOX", &to_inbox.token);
    assert_stored_shape(&stored, "alice@localhost");

    let stored = pf.wait_stored(spool, "alice", "INBOX", &plain.token);
    assert_stored_shape(&stored, "bob@localhost");
    assert!(pf.stored(spool, "bob", "INBOX", &plain.token).is_empty());
}

/// (c) lmtp(8) to `deliver --lmtp --listen unix:...`: one message, three
/// recipients in one LMTP transaction, one copy in each user's INBOX.
#[test]
fn lmtp_transport_delivers_one_message_to_three_recipients() {
    let mut pf = Postfix::start();
    pf.start_lmtp();
    let rcpts = ["alice@lmtp.test", "bob@lmtp.test", "carol@lmtp.test"];
    let msg = TestMessage::new("bob@localhost", &rcpts.join(", "), "three recipients");
    pf.sendmail("bob@localhost", &rcpts, &msg);

    for rcpt in rcpts {
        let line = pf.wait_status(&msg, rcpt, &["sent", "deferred", "bounced"]);
        assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
        assert!(line.contains("lmtp/sock"), "{line}");
        // Per-recipient LMTP reply after DATA, with an enhanced status code.
        assert!(line.contains("250 2."), "{line}");
    }
    for user in ["alice", "bob", "carol"] {
        let stored = pf.wait_stored(&pf.virtual_spool, user, "INBOX", &msg.token);
        // Postfix adds no Return-Path over LMTP: the server must.
        assert_stored_shape(&stored, "bob@localhost");
    }
    // Postfix logged all three deliveries under the one queue ID.
    let qid = pf.queue_id(&msg);
    let log = pf.log();
    let sent: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{qid}: to=<")) && l.contains("status=sent"))
        .collect();
    assert_eq!(sent.len(), 3, "{sent:#?}");
}

/// (d) A held mailbox lock makes deliver exit 75: Postfix keeps the message
/// deferred; after the lock is released and the queue flushed, it arrives once.
#[test]
fn temporary_failure_is_deferred_then_delivered_after_flush() {
    let pf = Postfix::start();
    // First delivery creates alice's INBOX.
    let warm = TestMessage::new("bob@localhost", "alice@localhost", "warm-up");
    pf.sendmail("bob@localhost", &["alice@localhost"], &warm);
    let line = pf.wait_status(&warm, "alice@localhost", &["sent", "deferred", "bounced"]);
    assert!(line.contains("status=sent"), "{line}\n{}", pf.context());

    // Hold alice's INBOX lock from this process until told to let go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let spool = pf.local_spool.clone();
    let holder = std::thread::spawn(move || {
        let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
        let mut inbox = store
            .open_mailbox(
                &storage::UserName::new("alice").unwrap(),
                &storage::MailboxName::inbox(),
            )
            .unwrap();
        inbox
            .with_exclusive(|_| {
                locked_tx.send(()).unwrap();
                // Bounded: a failing test must not hang forever.
                let _ = release_rx.recv_timeout(Duration::from_secs(300));
                Ok(())
            })
            .unwrap();
    });
    locked_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("lock taken");

    let msg = TestMessage::new("bob@localhost", "alice@localhost", "deferred");
    pf.sendmail("bob@localhost", &["alice@localhost"], &msg);
    let line = pf.wait_status(&msg, "alice@localhost", &["sent", "deferred", "bounced"]);
    assert!(line.contains("status=deferred"), "{line}\n{}", pf.context());
    assert!(
        line.contains("dsn=4."),
        "a temporary failure has a 4.x.x code: {line}"
    );
    let qid = pf.queue_id(&msg);
    let queue = run_ok("postqueue", &["-p"]).stdout;
    assert!(queue.contains(&qid), "{qid} not in the queue:\n{queue}");

    release_tx.send(()).unwrap();
    holder.join().expect("lock holder");
    // Nothing of the failed attempt may be visible.
    assert!(
        pf.stored(&pf.local_spool, "alice", "INBOX", &msg.token)
            .is_empty()
    );

    run_ok("postqueue", &["-f"]);
    let line = pf.wait_status(&msg, "alice@localhost", &["sent", "bounced"]);
    assert!(line.contains("status=sent"), "{line}\n{}", pf.context());
    let stored = pf.wait_stored(&pf.local_spool, "alice", "INBOX", &msg.token);
    assert_stored_shape(&stored, "bob@localhost");
    let queue = run_ok("postqueue", &["-p"]).stdout;
    assert!(!queue.contains(&qid), "{qid} still queued:\n{queue}");
}

/// (e) An address whose user has no INBOX bounces with 5.1.1, through
/// pipe(8) (exit 67) and through LMTP (550 to RCPT); the sender gets the
/// bounce, delivered with the null sender by mailbox_command.
#[test]
fn unknown_user_bounces() {
    let mut pf = Postfix::start();
    pf.start_lmtp();
    let via_pipe = TestMessage::new("bob@localhost", "nosuchuser@pipe.test", "unknown (pipe)");
    let via_lmtp = TestMessage::new("bob@localhost", "nosuchuser@lmtp.test", "unknown (lmtp)");
    pf.sendmail("bob@localhost", &["nosuchuser@pipe.test"], &via_pipe);
    pf.sendmail("bob@localhost", &["nosuchuser@lmtp.test"], &via_lmtp);

    for (msg, rcpt) in [
        (&via_pipe, "nosuchuser@pipe.test"),
        (&via_lmtp, "nosuchuser@lmtp.test"),
    ] {
        let line = pf.wait_status(msg, rcpt, &["sent", "deferred", "bounced"]);
        assert!(line.contains("status=bounced"), "{line}\n{}", pf.context());
        assert!(line.contains("dsn=5.1.1"), "{line}");
        // The bounce (with the original message) reaches the sender.
        let bounce = pf.wait_stored(&pf.local_spool, "bob", "INBOX", &msg.token);
        assert_return_path(&bounce, "");
    }
    let store = pf.store(&pf.virtual_spool);
    let nobody = storage::UserName::new("nosuchuser").unwrap();
    assert!(
        !store.user_exists(&nobody).unwrap(),
        "an unknown user was created"
    );
    assert!(
        !pf.virtual_spool.join("nosuchuser").exists(),
        "deliver left a directory for an unknown user"
    );
}

/// Exactly one Return-Path header, the first line, with the envelope sender.
fn assert_return_path(stored: &[u8], sender: &str) {
    let t = text(stored);
    assert_eq!(
        count(header_block(stored), b"Return-Path:"),
        1,
        "want exactly one Return-Path:\n{t}"
    );
    assert!(
        stored.starts_with(format!("Return-Path: <{sender}>\r\n").as_bytes()),
        "Return-Path is not <{sender}> on the first line:\n{t}"
    );
}
