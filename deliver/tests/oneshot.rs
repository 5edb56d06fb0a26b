//! One-shot mode through the real binary: every bad input (exit code,
//! the one stderr line, mailbox unchanged), envelope handling, mailbox
//! selection, concurrency, lock timeout, injected faults and panics.

mod common;

use std::time::Duration;

use common::{Spool, assert_failed, stderr};
use storage::{Flags, MailboxName, UserName};

const MSG: &[u8] = b"Subject: hello\nMessage-ID: <m1@example.org>\n\
Date: Thu, 01 Jan 2026 00:00:00 +0000\n\nbody line\n";

/// Runs a delivery that must fail, asserting code, status and an
/// unchanged alice/INBOX.
fn refused(s: &Spool, args: &[&str], input: &[u8], code: i32, status: &str) -> String {
    let before = s.fingerprint("alice", "INBOX");
    let o = s.deliver(args, input);
    assert_failed(&o, code, status);
    assert_eq!(s.fingerprint("alice", "INBOX"), before, "mailbox changed");
    // Only committed messages' second names (waiting for the next settle)
    // may be in `.stage`, never a refused message.
    common::assert_no_stray_staged(s, "alice", "INBOX");
    stderr(&o)
}

#[test]
fn delivers_strips_from_line_adds_return_path_crlf() {
    let s = Spool::with_users(&["alice"]);
    let mut input = b"From bob@example.org  Sun Nov 22 19:05:09 2026\n".to_vec();
    input.extend_from_slice(MSG);
    let o = s.deliver_ok(&["-d", "alice", "-f", "bob@example.org"], &input);
    let msgs = s.messages("alice", "INBOX");
    assert_eq!(
        msgs,
        vec![
            b"Return-Path: <bob@example.org>\r\nSubject: hello\r\nMessage-ID: <m1@example.org>\r\n\
Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n\r\nbody line\r\n"
                .to_vec()
        ]
    );
    // The size in the index is the stored size, and the Date: went in.
    let mut m = s
        .store()
        .open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
        .unwrap();
    let r = &m.snapshot().unwrap().records[0];
    assert_eq!(r.size, msgs[0].len() as u64);
    assert_eq!(r.sent_date, 1767225600);
    // The success log line names the delivery.
    let err = stderr(&o);
    assert!(
        err.contains("uid=1") && err.contains("m1@example.org"),
        "{err}"
    );
}

#[test]
fn existing_return_path_is_not_duplicated() {
    let s = Spool::with_users(&["alice"]);
    s.deliver_ok(
        &["-d", "alice", "-f", "other@example.org"],
        b"From bob@x Sun Nov 22\nReturn-Path: <bob@x>\nSubject: a\n\nb\n",
    );
    assert_eq!(
        s.messages("alice", "INBOX"),
        vec![b"Return-Path: <bob@x>\r\nSubject: a\r\n\r\nb\r\n".to_vec()]
    );
}

#[test]
fn no_sender_no_return_path_and_odd_bytes_kept() {
    let s = Spool::with_users(&["alice"]);
    // Bare CR, 8-bit header, no header/body separator, no final newline.
    let input = b"Subject: caf\xc3\xa9\nX: a\rb\nno separator here";
    s.deliver_ok(&["-d", "alice"], input);
    assert_eq!(
        s.messages("alice", "INBOX"),
        vec![b"Subject: caf\xc3\xa9\r\nX: a\rb\r\nno separator here".to_vec()]
    );
}

#[test]
fn empty_message_is_refused() {
    let s = Spool::with_users(&["alice"]);
    let e = refused(&s, &["-d", "alice", "-f", "b@x"], b"", 65, "5.6.0");
    assert!(e.contains("empty"), "{e}");
    // Only an envelope line is empty too.
    refused(&s, &["-d", "alice"], b"From bob Sun Nov 22\n", 65, "5.6.0");
}

#[test]
fn nul_byte_is_refused() {
    let s = Spool::with_users(&["alice"]);
    let mut big = b"Subject: x\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 300_000));
    big.push(0);
    big.extend_from_slice(b"tail\n");
    let e = refused(&s, &["-d", "alice"], &big, 65, "5.6.0");
    assert!(e.contains("NUL"), "{e}");
}

#[test]
fn over_max_size_is_refused_from_flag_and_config() {
    let s = Spool::with_users(&["alice"]);
    let mut big = b"Subject: x\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200_000));
    refused(
        &s,
        &["-d", "alice", "--max-size", "100K"],
        &big,
        65,
        "5.2.3",
    );
    s.set_config("max_size = 1K\n");
    refused(&s, &["-d", "alice"], &big, 65, "5.2.3");
    // The command line beats the config.
    s.deliver_ok(&["-d", "alice", "--max-size", "1M"], &big);
}

#[test]
fn unknown_user_is_67_and_creates_nothing() {
    let s = Spool::with_users(&["alice"]);
    let o = s.deliver(&["-d", "nobody-here"], MSG);
    assert_failed(&o, 67, "5.1.1");
    assert!(!s.root.join("nobody-here").exists());
    let o = s.deliver(&["-d", "../etc"], MSG);
    assert_failed(&o, 67, "5.1.3");
}

#[test]
fn usage_errors_are_64() {
    let s = Spool::with_users(&["alice"]);
    refused(&s, &["-d", "alice", "--bogus"], MSG, 64, "5.3.0");
    refused(&s, &["-d", "alice", "--flag", "\\Bogus"], MSG, 64, "5.3.0");
    refused(&s, &["-d", "alice", "--flag", "bad(kw"], MSG, 64, "5.3.0");
    refused(&s, &["-d", "alice", "--max-size", "lots"], MSG, 64, "5.3.0");
}

#[test]
fn quota_soft_is_75_hard_is_73() {
    let s = Spool::with_users(&["alice"]);
    assert_eq!(s.deliver(&["-d", "alice"], MSG).status.code(), Some(0));
    s.set_config("quota = 100\n");
    refused(&s, &["-d", "alice"], MSG, 75, "4.2.2");
    refused(&s, &["-d", "alice", "--quota-hard"], MSG, 73, "5.2.2");
    // A per-user entry overrides the default; 0 means unlimited.
    s.set_config("quota = 100\nquota.alice = 0\n");
    assert_eq!(s.deliver(&["-d", "alice"], MSG).status.code(), Some(0));
}

#[test]
fn bad_config_file_is_temporary() {
    let s = Spool::with_users(&["alice"]);
    s.set_config("this is not a config\n");
    refused(&s, &["-d", "alice"], MSG, 75, "4.3.0");
}

#[test]
fn missing_mailbox_falls_back_unless_no_fallback_or_autocreate() {
    let s = Spool::with_users(&["alice"]);
    s.deliver_ok(&["-d", "alice", "-m", "Lists"], MSG);
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    let e = refused(
        &s,
        &["-d", "alice", "-m", "Lists", "--no-fallback"],
        MSG,
        73,
        "5.2.0",
    );
    assert!(e.contains("Lists"), "{e}");
    // An invalid name counts as missing.
    refused(
        &s,
        &["-d", "alice", "-m", "a/../b", "--no-fallback"],
        MSG,
        73,
        "5.2.0",
    );
    // Postfix passes an empty ${extension}: that means INBOX.
    s.deliver_ok(&["-d", "alice", "-m", "", "--no-fallback"], MSG);
    s.deliver_ok(&["-d", "alice", "-m", "Lists/Rust", "--autocreate"], MSG);
    assert_eq!(s.messages("alice", "Lists/Rust").len(), 1);
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
}

#[test]
fn plus_address_selects_existing_mailbox_only() {
    let s = Spool::with_users(&["alice"]);
    s.create("alice", "lists");
    let ok = |args: &[&str]| {
        s.deliver_ok(args, MSG);
    };
    ok(&["-d", "alice", "-a", "alice+lists@example.org"]);
    ok(&[
        "-d",
        "alice",
        "-a",
        "alice+nosuch@example.org",
        "--no-fallback",
    ]);
    // -m beats the address detail.
    ok(&[
        "-d",
        "alice",
        "-a",
        "alice+lists@example.org",
        "-m",
        "INBOX",
    ]);
    assert_eq!(s.messages("alice", "lists").len(), 1);
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
    // A detail never creates a mailbox, even with --autocreate.
    ok(&["-d", "alice", "-a", "alice+spam@x", "--autocreate"]);
    assert!(
        !s.store()
            .mailbox_exists(
                &UserName::new("alice").unwrap(),
                &MailboxName::new("spam").unwrap()
            )
            .unwrap()
    );
}

#[test]
fn flags_and_keywords_are_set() {
    let s = Spool::with_users(&["alice"]);
    s.deliver_ok(
        &["-d", "alice", "--flag", "\\Seen", "--flag", "$Label1"],
        MSG,
    );
    let mut m = s
        .store()
        .open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
        .unwrap();
    let snap = m.snapshot().unwrap();
    assert!(snap.records[0].flags.contains(Flags::SEEN));
    let i = snap
        .meta
        .keywords
        .iter()
        .position(|k| k == "$Label1")
        .unwrap();
    assert!(snap.records[0].keywords.contains(i));
}

#[test]
fn concurrent_first_deliveries_with_autocreate_all_succeed() {
    let s = Spool::new();
    std::thread::scope(|sc| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    let body = format!("Subject: {i}\n\nmessage {i}\n");
                    s.deliver(&["-d", "newbie", "--autocreate"], body.as_bytes())
                })
            })
            .collect();
        for h in handles {
            let o = h.join().unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        }
    });
    let mut got: Vec<String> = s
        .messages("newbie", "INBOX")
        .into_iter()
        .map(|m| String::from_utf8(m).unwrap())
        .collect();
    got.sort();
    let want: Vec<String> = {
        let mut w: Vec<String> = (0..8)
            .map(|i| format!("Subject: {i}\r\n\r\nmessage {i}\r\n"))
            .collect();
        w.sort();
        w
    };
    assert_eq!(got, want);
}

#[test]
fn held_lock_times_out_with_75_and_mailbox_unchanged() {
    let s = Spool::with_users(&["alice"]);
    let before = s.fingerprint("alice", "INBOX");
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let store = s.store();
    let holder = std::thread::spawn(move || {
        let mut m = store
            .open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
            .unwrap();
        m.with_exclusive(|_| {
            locked_tx.send(()).unwrap();
            release_rx.recv_timeout(Duration::from_secs(60)).ok();
            Ok(())
        })
        .unwrap();
    });
    locked_rx.recv().unwrap();
    let o = s.deliver(&["-d", "alice", "--lock-timeout-ms", "300"], MSG);
    assert_failed(&o, 75, "4.2.0");
    // The config knob works the same way.
    s.set_config("lock_timeout_ms = 200\n");
    let o = s.deliver(&["-d", "alice"], MSG);
    assert_failed(&o, 75, "4.2.0");
    release_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(s.fingerprint("alice", "INBOX"), before);
    // Once the lock is free, the retry succeeds.
    assert_eq!(s.deliver(&["-d", "alice"], MSG).status.code(), Some(0));
}

#[test]
fn io_errors_during_commit_are_75_and_leave_mailbox_unchanged() {
    let s = Spool::with_users(&["alice"]);
    assert_eq!(s.deliver(&["-d", "alice"], MSG).status.code(), Some(0));
    for point in [
        "append.after_stage_write",
        "append.after_stage_fsync",
        "append.after_lock",
        "append.after_link",
        "append.after_records",
    ] {
        let before = s.fingerprint("alice", "INBOX");
        let spec = format!("{point}=error");
        let o = s.deliver_env(&["-d", "alice"], MSG, &[("MAILSTORE_TEST_FAULT", &spec)]);
        assert_failed(&o, 75, "4.3.0");
        assert_eq!(s.fingerprint("alice", "INBOX"), before, "after {point}");
    }
}

#[test]
fn panic_is_a_temporary_failure_with_one_line() {
    let s = Spool::with_users(&["alice"]);
    let before = s.fingerprint("alice", "INBOX");
    let o = s.deliver_env(&["-d", "alice"], MSG, &[("DELIVER_TEST_PANIC", "1")]);
    assert_failed(&o, 75, "4.3.0");
    assert!(stderr(&o).contains("internal error"));
    assert_eq!(s.fingerprint("alice", "INBOX"), before);
}

#[test]
fn spool_from_environment_and_config() {
    let s = Spool::with_users(&["alice"]);
    // No --spool: MAILSTORE_SPOOL names it.
    let run = |env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(common::BIN);
        c.args(["-d", "alice"])
            .env("MAILSTORE_CONFIG", &s.config)
            .env_remove("MAILSTORE_SPOOL")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = c.spawn().unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(MSG).unwrap();
        child.wait_with_output().unwrap()
    };
    let root = s.root.to_str().unwrap().to_string();
    assert_eq!(run(&[("MAILSTORE_SPOOL", &root)]).status.code(), Some(0));
    s.set_config(&format!("spool = {root}\n"));
    assert_eq!(run(&[]).status.code(), Some(0));
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
}
