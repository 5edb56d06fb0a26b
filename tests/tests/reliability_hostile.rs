//! Hostile input (issue 7): the corpus in `tests/data/hostile/` plus big
//! inputs generated here, and hostile names and planted symlinks, through
//! the real `deliver` (one-shot and LMTP). Each case gets the outcome
//! documented in docs/OPERATIONS.md (exit-code table, "Odd input"); nothing
//! is written outside the spool (the rest of the temporary directory,
//! including the symlinks' targets, is compared before and after); every
//! accepted message is stored once with the expected bytes; every mailbox
//! verifies clean; and the IMAP server fetches every stored message
//! (BODYSTRUCTURE, ENVELOPE, BODY[]) without failing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::reliability::{Running, crlf, read_contents, recover_and_verify, tree_snapshot};
use e2e_tests::{bin, run_with_input};
use storage::{MailboxName, Options, Store, UserName};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/hostile")
}

fn deliver(spool: &Path, args: &[&str], input: &[u8]) -> (Option<i32>, String) {
    let mut cmd = Command::new(bin("deliver"));
    cmd.arg("--spool")
        .arg(spool)
        .args(args)
        .env("MAILSTORE_CONFIG", "/dev/null")
        .env_remove("MAILSTORE_TEST_FAULT");
    let f = Running::spawn(&mut cmd, input.to_vec()).finish(Duration::from_secs(120));
    (f.code, f.stderr)
}

/// What deliver should store: the envelope line dropped, bare LF as CRLF.
fn stored_form(input: &[u8]) -> Vec<u8> {
    let body = if input.starts_with(b"From ") {
        match input.iter().position(|&b| b == b'\n') {
            Some(p) => &input[p + 1..],
            None => &[][..],
        }
    } else {
        input
    };
    crlf(body)
}

/// (name, input, expected exit, expected status prefix)
fn cases() -> Vec<(String, Vec<u8>, i32, &'static str)> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .collect();
    files.sort();
    for p in files {
        let name = p.file_stem().unwrap().to_string_lossy().into_owned();
        let input = std::fs::read(&p).unwrap();
        let (code, status) = match name.as_str() {
            "nul_byte" | "nul_in_header" | "empty" | "only_envelope_line" => (65, "5.6.0"),
            _ => (0, ""),
        };
        out.push((name, input, code, status));
    }
    let mut long_line = b"From: a@example.org\nSubject: ".to_vec();
    long_line.extend(std::iter::repeat_n(b'h', 1 << 20));
    long_line.extend_from_slice(b"\n\nbody after a 1 MB header line\n");
    out.push(("gen_1mb_header_line".into(), long_line, 0, ""));
    let mut many = String::from("From: a@example.org\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-Header-{i}: value {i}\n"));
    }
    many.push_str("\nbody after 10,000 header fields\n");
    out.push(("gen_10000_headers".into(), many.into_bytes(), 0, ""));
    let depth = 2000;
    let mut mime = String::from("From: a@example.org\nSubject: deep\nMIME-Version: 1.0\n");
    for i in 0..depth {
        mime.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"b{i}\"\n\n--b{i}\n"
        ));
    }
    mime.push_str("Content-Type: text/plain\n\ninnermost\n");
    for i in (0..depth).rev() {
        mime.push_str(&format!("--b{i}--\n"));
    }
    out.push(("gen_mime_nested_2000".into(), mime.into_bytes(), 0, ""));
    let mut blank = b"Subject: blank lines\n\n".to_vec();
    blank.extend(std::iter::repeat_n(b'\n', 100_000));
    out.push(("gen_100000_empty_lines".into(), blank, 0, ""));
    let mut binary: Vec<u8> = b"Subject: binary\n\n".to_vec();
    binary.extend((0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 1));
    out.push(("gen_binary_noise_no_nul".into(), binary, 0, ""));
    out
}

fn inbox(spool: &Path, user: &str) -> PathBuf {
    Store::open(spool, Options::default())
        .unwrap()
        .mailbox_path(&UserName::new(user).unwrap(), &MailboxName::inbox())
}

/// Fetches everything of every message over `imapd-check serve --stdio`;
/// the server must answer OK and exit 0.
fn imap_fetch_all(spool: &Path, user: &str, expect: usize) {
    let script = b"a SELECT INBOX\r\nb FETCH 1:* (BODYSTRUCTURE ENVELOPE RFC822.SIZE BODY.PEEK[])\r\nc LOGOUT\r\n";
    let out = run_with_input(
        Command::new(bin("imapd-check"))
            .args(["serve", "--stdio", "-d", user, "--spool"])
            .arg(spool),
        script,
        Duration::from_secs(120),
    );
    assert_eq!(
        out.code(),
        Some(0),
        "imapd-check for {user}: {}",
        out.stderr
    );
    let tail: String = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(['a', 'b', 'c']))
        .collect::<Vec<_>>()
        .join(" | ");
    assert!(
        out.stdout.contains("\r\nb OK"),
        "IMAP FETCH of {user}'s hostile message failed: {tail}\n{}",
        out.stderr
    );
    if expect > 0 {
        assert!(
            out.stdout.contains("* 1 FETCH"),
            "{user}: no FETCH response"
        );
    }
}

#[test]
fn hostile_messages_get_their_documented_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let sibling = tmp.path().join("outside");
    std::fs::create_dir(&sibling).unwrap();
    std::fs::write(sibling.join("victim"), b"must not change\n").unwrap();
    let before = tree_snapshot(&sibling);
    let mut n = 0;
    for (i, (name, input, code, status)) in cases().into_iter().enumerate() {
        let user = format!("h{i}");
        let (got, err) = deliver(&spool, &["-d", &user, "--autocreate"], &input);
        assert_eq!(got, Some(code), "{name}: exit {got:?}, stderr {err:?}");
        assert!(err.starts_with(status), "{name}: status line {err:?}");
        let dir = inbox(&spool, &user);
        recover_and_verify(&dir);
        let c = read_contents(&spool, &user, "INBOX");
        if code == 0 {
            assert_eq!(c.live, 1, "{name}: stored {} times", c.live);
            let stored = c.bytes.values().next().unwrap();
            assert!(
                *stored == stored_form(&input),
                "{name}: stored bytes differ from the documented form ({} vs {} bytes)",
                stored.len(),
                stored_form(&input).len()
            );
        } else {
            assert_eq!(c.live, 0, "{name}: refused but stored");
        }
        imap_fetch_all(&spool, &user, c.live);
        n += 1;
    }
    // Over --max-size: refused, reading stops at the limit.
    let big = vec![b'x'; 3 << 20];
    let (got, err) = deliver(
        &spool,
        &["-d", "sizecap", "--autocreate", "--max-size", "1M"],
        &big,
    );
    assert_eq!(got, Some(65), "{err}");
    assert!(err.starts_with("5.2.3"), "{err}");
    assert_eq!(read_contents(&spool, "sizecap", "INBOX").live, 0);
    assert_eq!(
        before,
        tree_snapshot(&sibling),
        "something was written outside the spool"
    );
    println!(
        "hostile messages: {} inputs, each with its documented outcome",
        n + 1
    );
}

#[test]
fn hostile_names_and_planted_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("victim"), b"must not change\n").unwrap();
    let msg = b"Subject: names\n\nbody\n";
    let (c, e) = deliver(&spool, &["-d", "alice", "--autocreate"], msg);
    assert_eq!(c, Some(0), "{e}");
    let outside_before = tree_snapshot(&outside);
    let mut checks = 0;
    let mut fallbacks = 0;

    // Bad mailbox names: the fallback to INBOX, or 73 with --no-fallback.
    let long = "m".repeat(4096);
    for m in [
        "../x",
        "../../outside/x",
        "/etc/x",
        "/",
        "a%b",
        "*",
        "a/*/b",
        "a\u{1}b",
        "a\nb",
        &long,
        "a//b",
        ".",
    ] {
        let (c, e) = deliver(
            &spool,
            &["-d", "alice", "-m", m, "--no-fallback", "--autocreate"],
            msg,
        );
        assert_eq!(c, Some(73), "-m {m:?} --no-fallback: {e}");
        assert!(e.starts_with("5.2.0"), "-m {m:?}: {e}");
        let (c, e) = deliver(&spool, &["-d", "alice", "-m", m], msg);
        assert_eq!(c, Some(0), "-m {m:?} falls back to INBOX: {e}");
        checks += 2;
        fallbacks += 1;
    }
    // Bad user names: 67 5.1.3.
    for u in ["../x", "a/b", "/", "..", "a%b", "*", "a\u{7f}b", &long] {
        let (c, e) = deliver(&spool, &["-d", u, "--autocreate"], msg);
        assert_eq!(c, Some(67), "-d {u:?}: {e}");
        assert!(e.starts_with("5.1.3"), "-d {u:?}: {e}");
        checks += 1;
    }
    // A NUL cannot reach deliver through argv at all.
    assert!(
        Command::new(bin("deliver"))
            .arg("-m")
            .arg("a\0b")
            .output()
            .is_err(),
        "argv with NUL must not spawn"
    );

    // Symlinks planted in the spool by another user (owned by nobody).
    let plant = |link: &Path, target: &Path| {
        if let Some(p) = link.parent() {
            std::fs::create_dir_all(p).unwrap();
        }
        std::os::unix::fs::symlink(target, link).unwrap();
        let _ = std::os::unix::fs::lchown(link, Some(65534), Some(65534));
    };
    let alice = spool.join("alice");
    plant(&alice.join("Evil"), &outside.join("dir"));
    let (c, e) = deliver(&spool, &["-d", "alice", "-m", "Evil", "--autocreate"], msg);
    assert_eq!(c, Some(77), "symlinked mailbox directory: {e}");
    assert!(e.starts_with("5.7.0"), "{e}");
    plant(&spool.join("linkuser"), &outside.join("dir"));
    let (c, e) = deliver(&spool, &["-d", "linkuser", "--autocreate"], msg);
    assert_eq!(c, Some(77), "symlinked user directory: {e}");
    plant(&spool.join("bob/INBOX"), &outside.join("dir"));
    let (c, e) = deliver(&spool, &["-d", "bob", "--autocreate"], msg);
    assert_eq!(c, Some(77), "symlinked INBOX: {e}");
    for (user, entry) in [("carol", ".index"), ("dave", ".stage"), ("erin", ".meta")] {
        let (c, e) = deliver(&spool, &["-d", user, "--autocreate"], msg);
        assert_eq!(c, Some(0), "{e}");
        let dir = inbox(&spool, user);
        let p = dir.join(entry);
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            let _ = std::fs::remove_file(&p);
        }
        let target = if entry == ".stage" {
            outside.join("dir")
        } else {
            outside.join("victim")
        };
        plant(&p, &target);
        let (c, e) = deliver(&spool, &["-d", user], msg);
        assert!(
            c == Some(77) || (entry == ".meta" && c == Some(0)),
            "symlinked {entry}: exit {c:?} {e}"
        );
        checks += 1;
    }
    // A symlink where the next message file will go: the rename replaces
    // the link itself, the target is untouched.
    let frank = inbox(&spool, "alice");
    let next = read_contents(&spool, "alice", "INBOX")
        .bytes
        .keys()
        .max()
        .copied()
        .unwrap_or(0)
        + 1;
    plant(&frank.join(format!("{next}.")), &outside.join("victim"));
    let (c, e) = deliver(
        &spool,
        &["-d", "alice"],
        b"Subject: over a planted link\n\n[[planted]]\n",
    );
    assert_eq!(c, Some(0), "{e}");
    let meta = std::fs::symlink_metadata(frank.join(format!("{next}."))).unwrap();
    assert!(meta.is_file(), "UID {next} is still a symlink");
    checks += 4;

    assert_eq!(
        outside_before,
        tree_snapshot(&outside),
        "something was written outside the spool"
    );
    let ok: BTreeMap<_, _> = [("alice", 1 + fallbacks + 1)].into_iter().collect();
    let c = read_contents(&spool, "alice", "INBOX");
    assert_eq!(
        c.live, ok["alice"],
        "alice's INBOX: every fallback delivery once"
    );
    // alice's mailbox has a planted symlink (Evil) but verifies clean.
    recover_and_verify(&inbox(&spool, "alice"));
    println!("hostile names: {checks} cases, nothing written outside the spool");
}

#[test]
fn lmtp_hostile_recipients() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"x").unwrap();
    let before = tree_snapshot(&outside);
    let long = "r".repeat(4096);
    let bad = [
        "../x@h".to_string(),
        "../../outside@h".to_string(),
        "a%b@h".into(),
        "*@h".into(),
        "a\0b@h".into(),
        "a\x01b@h".into(),
        format!("{long}@h"),
        "@h".into(),
        "/etc/passwd@h".into(),
    ];
    let mut session = String::from("LHLO test\r\nMAIL FROM:<s@h>\r\n");
    for r in &bad {
        session.push_str(&format!("RCPT TO:<{r}>\r\n"));
    }
    session.push_str("RCPT TO:<good+../../x@h>\r\nDATA\r\nSubject: lmtp\r\n\r\n[[lmtp-hostile]]\r\n.\r\nQUIT\r\n");
    let out = run_with_input(
        Command::new(bin("deliver"))
            .args(["--lmtp", "--autocreate", "--spool"])
            .arg(&spool)
            .env("MAILSTORE_CONFIG", "/dev/null"),
        session.as_bytes(),
        Duration::from_secs(60),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let replies: Vec<&str> = out.stdout.lines().collect();
    for l in &replies {
        assert!(
            l.len() >= 3 && l[..3].chars().all(|c| c.is_ascii_digit()),
            "bad reply line {l:?}"
        );
    }
    // greeting, 5 LHLO lines, MAIL, 9 bad RCPT, good RCPT, DATA 354, 1 result, QUIT.
    let rcpt = &replies[7..7 + bad.len()];
    for (r, l) in bad.iter().zip(rcpt) {
        assert!(l.starts_with('5'), "RCPT {r:?} answered {l:?}");
    }
    assert!(replies[7 + bad.len()].starts_with("250"), "{replies:?}");
    assert!(replies.iter().any(|l| l.starts_with("354")), "{replies:?}");
    let c = read_contents(&spool, "good", "INBOX");
    assert_eq!(c.by_token.get("lmtp-hostile").map(Vec::len), Some(1));
    assert_eq!(before, tree_snapshot(&outside));
}
