//! Stable fuzzing (issue 7) with proptest, inside `cargo test`:
//! - the index parser: `Header::decode` / `Record::decode` on arbitrary
//!   bytes (no panic; whatever decodes re-encodes to the same bytes), and
//!   whole index files mutated at random read through `Mailbox::snapshot`
//!   and `storage::verify` (no panic; a view that differs from the original
//!   is only allowed when verify reports a problem);
//! - the LMTP front end: random sessions to `deliver --lmtp` on stdio
//!   (exits 0 in bounded time, no panic, every reply line is a status code,
//!   every mailbox it touched verifies clean);
//! - IMAP command handling: random sessions to `imapd-check serve --stdio`
//!   (exits in bounded time, no panic, every well-formed command line gets
//!   a tagged OK/NO/BAD, every mailbox verifies clean afterwards).
//!
//! Case counts: `RELIABILITY_LONG=1` multiplies them (see docs/RELIABILITY.md);
//! `cargo fuzz` targets for long runs on nightly live in `fuzz/`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_tests::reliability::{make_user, scale};
use e2e_tests::{bin, run_limited, run_with_input};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use storage::format::{HEADER_SIZE, RECORD_SIZE};
use storage::{AppendOptions, Flags, Header, MailboxName, Options, Record, Store, UserName};

fn runner(cases: u64) -> TestRunner {
    TestRunner::new(Config {
        cases: cases as u32,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn fuzz_header_and_record_decode() {
    let cases = scale(20_000, 2_000_000);
    let mut r = runner(cases);
    r.run(&prop::collection::vec(any::<u8>(), 0..200), |b| {
        if let Ok(h) = Header::decode(&b) {
            prop_assert_eq!(&h.encode()[..], &b[..HEADER_SIZE]);
        }
        if let Ok(rec) = Record::decode(&b) {
            prop_assert_eq!(&rec.encode()[..], &b[..RECORD_SIZE]);
        }
        Ok(())
    })
    .unwrap();
    // Random bytes almost never carry a valid CRC: also fuzz from valid
    // encodings with a few bytes changed and the CRC fixed up, so the
    // value checks behind the CRC get exercised.
    let mut r = runner(cases);
    let strat = (
        any::<[u8; 96]>(),
        prop::collection::vec((0usize..124, any::<u8>()), 0..6),
    );
    r.run(&strat, |(seed, edits)| {
        let mut h = Header {
            generation: 1 + (seed[0] as u64),
            uidvalidity: 7,
            ..Header::default()
        };
        h.last_uid = seed[1] as u32;
        h.num_records = h.last_uid.min(seed[2] as u32);
        h.exists = h.num_records.min(seed[3] as u32);
        let mut b = h.encode();
        for (off, v) in edits {
            b[off] = v;
        }
        let crc = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        b[HEADER_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(d) = Header::decode(&b) {
            // Version 1 headers decode too; only the current version
            // encodes back to the same bytes.
            if b[8..12] == storage::format::VERSION.to_le_bytes() {
                prop_assert_eq!(d.encode(), b);
            }
            prop_assert!(d.exists <= d.num_records && d.num_records <= d.last_uid);
        }
        let mut rb = [0u8; RECORD_SIZE];
        rb[..96].copy_from_slice(&seed);
        let crc = crc32fast::hash(&rb[..RECORD_SIZE - 4]);
        rb[RECORD_SIZE - 4..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(rec) = Record::decode(&rb) {
            prop_assert_eq!(rec.encode(), rb);
        }
        Ok(())
    })
    .unwrap();
    println!(
        "fuzz header/record decode: {} inputs, no panic, every accepted input round-trips",
        2 * cases
    );
}

#[test]
fn fuzz_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let opts = Options {
        durability: storage::Durability::Relaxed,
        lock_timeout: Duration::from_secs(5),
    };
    let store = Store::open(&spool, opts.clone()).unwrap();
    let u = UserName::new("fz").unwrap();
    store.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let mut mb = store.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    for i in 0..4 {
        let m = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
        let o = AppendOptions {
            flags: if i == 1 { Flags::SEEN } else { Flags::empty() },
            ..Default::default()
        };
        mb.append(m.as_bytes(), o).unwrap();
    }
    mb.store(&[2], storage::FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let dir = store.mailbox_path(&u, &MailboxName::inbox());
    let index = dir.join(".index");
    let original = std::fs::read(&index).unwrap();
    let orig_snap = mb.snapshot().unwrap();
    drop(mb);
    let len = original.len();
    let strat = (
        prop::collection::vec((0..len, any::<u8>()), 1..8),
        prop::option::of(0..len + 300),
    );
    let cases = scale(1_500, 100_000);
    let mut r = runner(cases);
    r.run(&strat, |(edits, resize)| {
        let mut b = original.clone();
        for (off, v) in edits {
            b[off] = v;
        }
        if let Some(n) = resize {
            b.resize(n, 0);
        }
        std::fs::write(&index, &b).unwrap();
        let s = Store::open(&spool, opts.clone()).unwrap();
        let view = s
            .open_mailbox(&u, &MailboxName::inbox())
            .and_then(|mut m| m.snapshot());
        let rep = storage::verify::verify_path(&dir, Duration::from_secs(5));
        if let Ok(v) = view {
            let same = v.header == orig_snap.header && v.records == orig_snap.records;
            let reported = rep.as_ref().map(|r| !r.is_clean()).unwrap_or(true);
            prop_assert!(
                same || reported,
                "the API served a different view and verify saw nothing"
            );
        }
        Ok(())
    })
    .unwrap();
    std::fs::write(&index, &original).unwrap();
    println!("fuzz index files: {cases} mutated index files, no panic, no unreported misread");
}

/// Set in the child that runs the crafted-index cases (see below).
const CRAFTED_CHILD: &str = "MAILSTORE_FUZZ_CRAFTED_CHILD";

/// Structure-aware index files (`e2e_tests::craft`: valid CRCs, fields
/// from interesting values, files cut short or sparse), each opened,
/// snapshotted, appended to, changed, repacked, recovered and verified
/// (issue 15, item 3). The case loop runs in a child copy of this test
/// binary under a 1 GiB address-space limit, so an allocation sized by a
/// crafted count aborts it (a failure here) instead of swapping the
/// machine; a panic or abort in any case fails the test, and the child's
/// peak RSS must stay under 256 MiB.
#[test]
fn fuzz_crafted_index_files() {
    if std::env::var_os(CRAFTED_CHILD).is_some() {
        return crafted_cases();
    }
    let exe = std::env::current_exe().unwrap();
    let out = run_limited(
        Command::new(exe)
            .args(["--exact", "fuzz_crafted_index_files", "--nocapture"])
            .args(["--test-threads", "1"])
            .env(CRAFTED_CHILD, "1"),
        b"",
        1 << 30,
        Duration::from_secs(600),
    );
    assert!(
        out.status.success(),
        "crafted index cases failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    assert!(
        out.maxrss_kib < 256 << 10,
        "peak RSS {} KiB over the crafted cases",
        out.maxrss_kib
    );
    let summary = out
        .stdout
        .lines()
        .find_map(|l| l.find("fuzz crafted index files:").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no summary from the child: {}", out.stdout));
    println!("{summary}, peak RSS {} KiB", out.maxrss_kib);
}

fn crafted_cases() {
    use e2e_tests::craft::{Choices, exercise, index_file, install};
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    make_user(&spool, "fz", &[]);
    let dir = Store::open(&spool, Options::default())
        .unwrap()
        .mailbox_path(&UserName::new("fz").unwrap(), &MailboxName::inbox());
    let cases = scale(1_500, 100_000);
    let corrupt = std::cell::Cell::new(0usize);
    let mut r = runner(cases);
    r.run(&prop::collection::vec(any::<u8>(), 0..400), |bytes| {
        install(&dir, &index_file(&mut Choices::new(&bytes)));
        corrupt.set(corrupt.get() + exercise(&spool, "fz", &dir));
        Ok(())
    })
    .unwrap();
    println!(
        "fuzz crafted index files: {cases} files, no panic, no abort, bounded growth, {} operations refused as corrupt",
        corrupt.get()
    );
}

// ------------------------------------------------------------------ LMTP

fn lmtp_line() -> impl Strategy<Value = String> {
    let user = prop::sample::select(vec![
        "u1",
        "u2",
        "u1+box",
        "u2+../x",
        "../u",
        "a%b",
        "",
        "u1@example.org",
        "\"q u\"",
    ]);
    let junk = "[ -~\u{80}-\u{10ffff}]{0,40}";
    prop_oneof![
        Just("LHLO fuzz".to_string()),
        Just("RSET".to_string()),
        Just("NOOP".to_string()),
        Just("VRFY x".to_string()),
        Just("HELO x".to_string()),
        (user.clone(), junk).prop_map(|(u, j)| format!("MAIL FROM:<{u}> {j}")),
        user.clone().prop_map(|u| format!("RCPT TO:<{u}>")),
        user.prop_map(|u| format!("RCPT TO:{u}")),
        (1u64..1 << 40).prop_map(|n| format!("MAIL FROM:<s@h> SIZE={n}")),
        Just("DATA".to_string()),
        "[A-Z]{1,6}( [ -~]{0,30})?",
        junk.prop_map(|s| s),
        prop::collection::vec(any::<u8>(), 0..60)
            .prop_map(|v| String::from_utf8_lossy(&v).replace(['\r', '\n'], " ")),
        Just(".".to_string()),
        Just("..".to_string()),
        Just("Subject: fuzz".to_string()),
        Just(String::new()),
    ]
}

fn check_spool_clean(spool: &Path) {
    let Ok(users) = std::fs::read_dir(spool) else {
        return;
    };
    for u in users.flatten() {
        if !u.path().is_dir() {
            continue;
        }
        let inbox = u.path().join("INBOX");
        if inbox.join(".index").exists() {
            let rep = storage::verify::verify_path(&inbox, Duration::from_secs(5)).unwrap();
            assert!(
                rep.problems().next().is_none(),
                "{}: {:?}",
                inbox.display(),
                rep.problems().collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn fuzz_lmtp_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let cases = scale(400, 20_000);
    let mut r = runner(cases);
    let lines_sent = std::cell::Cell::new(0usize);
    r.run(
        &(prop::collection::vec(lmtp_line(), 0..40), any::<bool>()),
        |(lines, crlf)| {
            let end = if crlf { "\r\n" } else { "\n" };
            let mut input = String::new();
            for l in &lines {
                input.push_str(l);
                input.push_str(end);
            }
            lines_sent.set(lines_sent.get() + lines.len());
            let out = run_with_input(
                Command::new(bin("deliver"))
                    .args(["--lmtp", "--autocreate", "--spool"])
                    .arg(&spool)
                    .env("MAILSTORE_CONFIG", "/dev/null"),
                input.as_bytes(),
                Duration::from_secs(60),
            );
            // Input that ends inside DATA is a lost connection: 75.
            // A delivery earlier in the session logs first, so look at
            // every line, not only the first.
            let cut = out.code() == Some(75)
                && out
                    .stderr
                    .lines()
                    .any(|l| l.starts_with("4.3.0 LMTP session: connection closed in DATA"));
            prop_assert!(
                out.code() == Some(0) || cut,
                "exit {:?}, stderr: {}",
                out.code(),
                out.stderr
            );
            prop_assert!(!out.stderr.contains("panic"), "{}", out.stderr);
            for l in out.stdout.split("\r\n").filter(|l| !l.is_empty()) {
                let b = l.as_bytes();
                prop_assert!(
                    b.len() >= 4
                        && b[..3].iter().all(u8::is_ascii_digit)
                        && (b[3] == b' ' || b[3] == b'-'),
                    "reply line {:?}",
                    l
                );
            }
            Ok(())
        },
    )
    .unwrap();
    check_spool_clean(&spool);
    println!(
        "fuzz LMTP: {cases} sessions, {} lines, no panic, every reply a status line",
        lines_sent.get()
    );
}

// ------------------------------------------------------------------ IMAP

fn imap_command() -> impl Strategy<Value = String> {
    let set = prop_oneof![
        Just("1".to_string()),
        Just("*".to_string()),
        Just("1:*".to_string()),
        Just("4294967295".to_string()),
        Just("0".to_string()),
        Just("2,1:3,*:5".to_string()),
        (0u32..50, 0u32..50).prop_map(|(a, b)| format!("{a}:{b}")),
    ];
    let mailbox = prop::sample::select(vec![
        "INBOX", "inbox", "Archive", "\"a b\"", "../x", "\"\"", "a/b", "%", "*", "x.y", "\"\\\"\"",
    ]);
    let item = prop::sample::select(vec![
        "FLAGS",
        "UID",
        "RFC822.SIZE",
        "INTERNALDATE",
        "ENVELOPE",
        "BODYSTRUCTURE",
        "BODY",
        "BODY.PEEK[]",
        "BODY[HEADER]",
        "BODY[TEXT]",
        "BODY[1]",
        "BODY[1.2.3]",
        "BODY[]<0.10>",
        "BODY[HEADER.FIELDS (SUBJECT FROM)]",
        "MODSEQ",
        "FAST",
        "ALL",
        "FULL",
        "RFC822",
    ]);
    let flag = prop::sample::select(vec![
        "\\Seen",
        "\\Deleted",
        "\\Flagged",
        "\\Answered",
        "\\Draft",
        "$Label1",
        "kw",
        "\\Recent",
    ]);
    let key = prop::sample::select(vec![
        "ALL",
        "SEEN",
        "UNSEEN",
        "DELETED",
        "SUBJECT fuzz",
        "BODY x",
        "TEXT \"\"",
        "LARGER 10",
        "SMALLER 100000",
        "UID 1:*",
        "NOT SEEN",
        "OR SEEN FLAGGED",
        "BEFORE 1-Jan-2030",
        "SINCE 1-Jan-1970",
        "HEADER Subject a",
        "MODSEQ 1",
        "KEYWORD kw",
        "1:*",
    ]);
    prop_oneof![
        Just("NOOP".to_string()),
        Just("CHECK".to_string()),
        Just("CAPABILITY".to_string()),
        Just("CLOSE".to_string()),
        Just("UNSELECT".to_string()),
        Just("EXPUNGE".to_string()),
        Just("ENABLE CONDSTORE".to_string()),
        Just("ENABLE IMAP4rev2".to_string()),
        mailbox.clone().prop_map(|m| format!("SELECT {m}")),
        mailbox.clone().prop_map(|m| format!("EXAMINE {m}")),
        mailbox.clone().prop_map(|m| format!("CREATE {m}")),
        mailbox.clone().prop_map(|m| format!("DELETE {m}")),
        (mailbox.clone(), mailbox.clone()).prop_map(|(a, b)| format!("RENAME {a} {b}")),
        mailbox
            .clone()
            .prop_map(|m| format!("STATUS {m} (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ)")),
        mailbox.clone().prop_map(|m| format!("LIST \"\" {m}")),
        Just("LIST \"\" *".to_string()),
        Just("LSUB \"\" *".to_string()),
        (set.clone(), prop::collection::vec(item, 1..4))
            .prop_map(|(s, i)| format!("FETCH {s} ({})", i.join(" "))),
        (
            set.clone(),
            prop::collection::vec(flag.clone(), 0..3),
            0..3usize
        )
            .prop_map(|(s, f, op)| {
                let op = ["FLAGS", "+FLAGS.SILENT", "-FLAGS"][op];
                format!("STORE {s} {op} ({})", f.join(" "))
            }),
        (set.clone(), flag).prop_map(|(s, f)| format!("UID STORE {s} +FLAGS ({f})")),
        prop::collection::vec(key, 1..4).prop_map(|k| format!("SEARCH {}", k.join(" "))),
        (set.clone(), mailbox.clone()).prop_map(|(s, m)| format!("COPY {s} {m}")),
        (set.clone(), mailbox.clone()).prop_map(|(s, m)| format!("UID MOVE {s} {m}")),
        set.clone().prop_map(|s| format!("UID EXPUNGE {s}")),
        set.prop_map(|s| format!("UID FETCH {s} (FLAGS) (CHANGEDSINCE 1)")),
        "[A-Z]{1,10}( [ -z|~]{0,40})?",
    ]
}

/// A line that is not a command: no `{` (a literal would swallow the
/// following lines and make the per-tag accounting meaningless).
fn imap_garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -z|~]{0,60}",
        prop::collection::vec(any::<u8>(), 0..80)
            .prop_map(|v| { String::from_utf8_lossy(&v).replace(['\r', '\n', '{'], " ") }),
    ]
}

#[test]
fn fuzz_imap_sessions() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let store = make_user(&spool, "fz", &["Archive"]);
    let mut inbox = store
        .open_mailbox(&UserName::new("fz").unwrap(), &MailboxName::inbox())
        .unwrap();
    for i in 0..6 {
        let m = format!(
            "Subject: fuzz {i}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\npart {i}\r\n--b--\r\n"
        );
        inbox
            .append(m.as_bytes(), AppendOptions::default())
            .unwrap();
    }
    let cases = scale(300, 20_000);
    let mut r = runner(cases);
    let commands = std::cell::Cell::new(0usize);
    let line = prop_oneof![
        4 => imap_command().prop_map(Some),
        1 => imap_garbage().prop_map(|_| None),
    ];
    r.run(
        &(prop::collection::vec((line, imap_garbage()), 0..30)),
        |lines| {
            let mut input = String::new();
            let mut expected = Vec::new();
            for (i, (cmd, garbage)) in lines.iter().enumerate() {
                match cmd {
                    Some(c) => {
                        let tag = format!("t{i}");
                        input.push_str(&format!("{tag} {c}\r\n"));
                        expected.push(tag);
                    }
                    None => input.push_str(&format!("{garbage}\r\n")),
                }
            }
            commands.set(commands.get() + expected.len());
            let out = run_with_input(
                Command::new(bin("imapd-check"))
                    .args(["serve", "--stdio", "-d", "fz", "--spool"])
                    .arg(&spool),
                input.as_bytes(),
                Duration::from_secs(60),
            );
            prop_assert!(!out.stderr.contains("panic"), "{}", out.stderr);
            prop_assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
            let bye = out.stdout.contains("* BYE");
            for tag in &expected {
                let done = ["OK", "NO", "BAD"]
                    .iter()
                    .any(|s| out.stdout.contains(&format!("\r\n{tag} {s}")));
                prop_assert!(
                    done || bye,
                    "no tagged reply for {} in\n{}\nto\n{}",
                    tag,
                    out.stdout,
                    input
                );
            }
            Ok(())
        },
    )
    .unwrap();
    for m in store.list_mailboxes(&UserName::new("fz").unwrap()).unwrap() {
        let dir = store.mailbox_path(&UserName::new("fz").unwrap(), &m);
        let rep = storage::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
        assert!(
            rep.problems().next().is_none(),
            "{m}: {:?}",
            rep.problems().collect::<Vec<_>>()
        );
    }
    println!(
        "fuzz IMAP: {cases} sessions, {} commands, no panic, every command answered, every mailbox verifies",
        commands.get()
    );
}
