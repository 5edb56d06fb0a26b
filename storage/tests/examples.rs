//! Runs the crate's examples (`storage/examples/`) as a server author
//! would: deliver with `deliver_one`, watch it arrive in `session_loop`'s
//! IDLE (RFC 2177), and report with `admin_report`. `cargo test` builds the
//! examples before running any test.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};

/// The example binary `name`, beside this test's binary in `target/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/{name}.rs"));
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    // `cargo test --test examples` alone does not build them.
    assert!(
        modified(&p) >= modified(&src),
        "{} missing or older than its source: run `cargo test -p mailstore` (which builds the examples)",
        p.display()
    );
    p
}

fn deliver(spool: &Path, args: &[&str], message: &[u8]) -> Output {
    let mut child = Command::new(example("deliver_one"))
        .args(args.iter().copied().take_while(|a| a.starts_with("--")))
        .arg(spool)
        .args(args.iter().copied().skip_while(|a| a.starts_with("--")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(message).unwrap();
    child.wait_with_output().unwrap()
}

/// Delivers `message` with `args`, which must succeed.
fn delivered(spool: &Path, args: &[&str], message: &[u8]) {
    let out = deliver(spool, args, message);
    assert!(out.status.success(), "{out:?}");
}

/// `deliver_one` acknowledges with 250 and exit 0; an unknown user gets
/// 550 5.1.1 and exit 67 (EX_NOUSER), as RFC 2033 and sysexits expect.
#[test]
fn deliver_one_delivers_and_refuses_unknown_user() {
    let tmp = tempfile::tempdir().unwrap();
    let out = deliver(
        tmp.path(),
        &["--create", "alice"],
        b"Subject: a\r\n\r\nA\r\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("250 2.0.0"));
    let out = deliver(tmp.path(), &["nobody"], b"Subject: b\r\n\r\nB\r\n");
    assert_eq!(out.status.code(), Some(67), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("550 5.1.1"));
}

/// A session over pipes: sends a line, reads lines until one starts with
/// `until`.
struct Session {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Session {
    fn start(spool: &Path, user: &str) -> Session {
        let mut child = Command::new(example("session_loop"))
            .arg(spool)
            .arg(user)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Session {
            input: child.stdin.take().unwrap(),
            output: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    fn send(&mut self, line: &str, until: &str) -> Vec<String> {
        writeln!(self.input, "{line}").unwrap();
        self.input.flush().unwrap();
        let mut got = Vec::new();
        loop {
            let mut l = String::new();
            assert!(
                self.output.read_line(&mut l).unwrap() > 0,
                "EOF after {got:?}"
            );
            let done = l.starts_with(until);
            got.push(l.trim_end().to_string());
            if done {
                return got;
            }
        }
    }
}

/// SELECT reports EXISTS/UIDVALIDITY/UIDNEXT (RFC 3501 6.3.1); a delivery
/// by another process during IDLE is pushed as EXISTS (RFC 2177); FETCH
/// then serves the new message; NOOP with nothing new sends nothing.
#[test]
fn session_loop_idles_until_a_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    delivered(
        tmp.path(),
        &["--create", "bob"],
        b"Subject: 1\r\n\r\none\r\n",
    );
    let mut s = Session::start(tmp.path(), "bob");
    let sel = s.send("a SELECT INBOX", "a ");
    assert!(sel.contains(&"* 1 EXISTS".to_string()), "{sel:?}");
    assert!(sel.contains(&"* OK [UIDNEXT 2]".to_string()), "{sel:?}");
    assert!(sel.last().unwrap().starts_with("a OK"), "{sel:?}");
    // The wait in IDLE ends on the commit, well before its 60 s.
    let idle = s.send("b IDLE 60", "+ idling");
    assert_eq!(idle, ["+ idling"]);
    let msg = b"Subject: 2\r\n\r\nsecond message\r\n";
    delivered(tmp.path(), &["bob"], msg);
    let pushed = s.send("", "b ");
    assert_eq!(pushed, ["* 2 EXISTS", "b OK IDLE terminated"]);
    let fetch = s.send("c FETCH 2", "c ");
    let want = format!("* 2 FETCH (UID 2 RFC822.SIZE {} FLAGS ())", msg.len());
    assert_eq!(fetch[0], want, "{fetch:?}");
    let noop = s.send("d NOOP", "d ");
    assert_eq!(noop, ["d OK NOOP completed"]);
    s.send("e LOGOUT", "e ");
    assert!(s.child.wait().unwrap().success());
}

/// `admin_report` lists each mailbox with its counts and a clean verify;
/// a corrupted message file is reported as a problem (exit 1).
#[test]
fn admin_report_counts_and_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    for body in [&b"Subject: x\r\n\r\nx\r\n"[..], b"Subject: y\r\n\r\nyy\r\n"] {
        delivered(tmp.path(), &["--create", "carol"], body);
    }
    let archive = ["--create", "carol", "Archive"];
    delivered(tmp.path(), &archive, b"S: z\r\n\r\nz\r\n");
    let run = || {
        Command::new(example("admin_report"))
            .arg(tmp.path())
            .arg("carol")
            .output()
            .unwrap()
    };
    let before = tree(tmp.path());
    let out = run();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(tree(tmp.path()), before, "the report wrote to the spool");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].starts_with("carol\tArchive\t1\t"), "{text}");
    assert!(lines[2].starts_with("carol\tINBOX\t2\t"), "{text}");
    assert!(lines[2].ends_with("\t3\t0\t0"), "{text}");
    // Damage a message file: verify finds its CRC wrong.
    let file = tmp.path().join("carol/INBOX/1.");
    std::fs::write(&file, b"Subject: X\r\n\r\nx\r\n").unwrap();
    let out = run();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1."),
        "{out:?}"
    );
}

/// Every path below `dir` with its length and modification time.
fn tree(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                todo.push(p.clone());
            }
            out.push((p, m.len(), m.modified().unwrap()));
        }
    }
    out.sort();
    out
}
