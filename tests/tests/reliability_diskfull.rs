//! Disk full and I/O errors (issue 7), with the real `deliver` binary:
//! - a 2 MiB tmpfs that fills up (this needs root; the test fails, never
//!   skips, without it): every refused delivery exits 75 with `4.3.1`, the
//!   index is byte-identical, no file is left behind, and once the file
//!   system grows (remount) every refused message is delivered, once;
//! - a file-size limit (RLIMIT_FSIZE, SIGXFSZ at its default action as a
//!   Postfix-run command gets it): a message over the limit and an index
//!   that cannot grow both give 75 `4.3.1` with the index untouched;
//! - every append fault point with `=error`: exit 75 and the old generation
//!   stays current (points before the header write), or the message is
//!   committed exactly once (points after it: the failure is reported,
//!   Postfix retries, the retry is a duplicate, never a loss).

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e_tests::reliability::{
    Running, Tmpfs, crlf, deliver_cmd, read_contents, recover_and_verify, stage_leftovers,
    token_message, tree_snapshot,
};
use storage::internals::fault::POINTS;
use storage::{MailboxName, Options, Store, UserName};

const USER: &str = "full";

fn deliver(
    spool: &Path,
    input: &[u8],
    extra: impl FnOnce(&mut std::process::Command),
) -> (Option<i32>, String) {
    let mut cmd = deliver_cmd(spool, USER);
    cmd.arg("--autocreate");
    extra(&mut cmd);
    let f = Running::spawn(&mut cmd, input.to_vec()).finish(Duration::from_secs(60));
    (f.code, f.stderr)
}

fn inbox_dir(spool: &Path) -> PathBuf {
    Store::open(spool, Options::default())
        .unwrap()
        .mailbox_path(&UserName::new(USER).unwrap(), &MailboxName::inbox())
}

/// The index bytes and the directory tree, to prove a refusal changed nothing.
fn state(spool: &Path) -> (Vec<u8>, BTreeMap<PathBuf, String>) {
    let dir = inbox_dir(spool);
    (
        std::fs::read(dir.join(".index")).unwrap(),
        tree_snapshot(&dir),
    )
}

fn assert_refused_cleanly(
    spool: &Path,
    before: &(Vec<u8>, BTreeMap<PathBuf, String>),
    code: Option<i32>,
    stderr: &str,
    what: &str,
) {
    assert_eq!(code, Some(75), "{what}: exit {code:?}: {stderr}");
    assert!(
        stderr.starts_with("4.3.1"),
        "{what}: status line {stderr:?}"
    );
    let after = state(spool);
    assert!(after.0 == before.0, "{what}: the index changed");
    assert_eq!(after.1, before.1, "{what}: the mailbox directory changed");
    assert!(stage_leftovers(&inbox_dir(spool)).is_empty());
}

fn message_of_size(token: &str, bytes: usize) -> Vec<u8> {
    token_message(token, bytes / 30)
}

#[test]
fn tmpfs_fills_up_then_grows() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let fs = Tmpfs::mount(&mnt, "2m");
    let spool = fs.dir.join("spool");
    let (code, err) = deliver(&spool, &token_message("first", 1), |_| {});
    assert_eq!(code, Some(0), "{err}");
    let mut delivered = vec![("first".to_string(), token_message("first", 1))];
    let mut refused = Vec::new();
    for i in 0..40 {
        let token = format!("big-{i}");
        let msg = message_of_size(&token, 300 * 1024);
        let before = state(&spool);
        let (code, err) = deliver(&spool, &msg, |_| {});
        if code == Some(0) {
            delivered.push((token, msg));
        } else {
            assert_refused_cleanly(&spool, &before, code, &err, &token);
            refused.push((token, msg));
            if refused.len() >= 3 {
                break;
            }
        }
    }
    assert!(
        delivered.len() > 2 && refused.len() == 3,
        "delivered {} refused {}",
        delivered.len(),
        refused.len()
    );
    // Fill the last free pages, so even the smallest message (and any
    // index growth) meets ENOSPC.
    let ballast = fs.dir.join("ballast");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![0x55u8; 4096];
        while f.write_all(&chunk).is_ok() {}
    }
    for i in 0..3 {
        let token = format!("tiny-{i}");
        let msg = token_message(&token, 0);
        let before = state(&spool);
        let (code, err) = deliver(&spool, &msg, |_| {});
        assert_refused_cleanly(&spool, &before, code, &err, &token);
        refused.push((token, msg));
    }
    // Space comes back: the administrator grows the file system.
    std::fs::remove_file(&ballast).unwrap();
    e2e_tests::run_ok(
        "mount",
        &["-o", "remount,size=16m", fs.dir.to_str().unwrap()],
    );
    for (token, msg) in refused.drain(..) {
        let (code, err) = deliver(&spool, &msg, |_| {});
        assert_eq!(code, Some(0), "retry of {token}: {err}");
        delivered.push((token, msg));
    }
    recover_and_verify(&inbox_dir(&spool));
    let c = read_contents(&spool, USER, "INBOX");
    assert_eq!(c.live, delivered.len());
    for (token, msg) in &delivered {
        let uids = &c.by_token[token];
        assert_eq!(uids.len(), 1, "{token}");
        assert!(c.bytes[&uids[0]] == crlf(msg), "{token}: bytes differ");
    }
    println!(
        "disk full: {} messages delivered in the end, 6 refusals with 75 4.3.1 and an untouched index, 0 lost",
        delivered.len()
    );
}

/// Runs deliver with RLIMIT_FSIZE = `limit` bytes and SIGXFSZ at its
/// default action (as under Postfix's local(8), which sets the limit from
/// mailbox_size_limit).
fn with_fsize_limit(limit: u64) -> impl FnOnce(&mut std::process::Command) {
    move |cmd| {
        // SAFETY: setrlimit and signal are async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_DFL);
                nix::sys::resource::setrlimit(
                    nix::sys::resource::Resource::RLIMIT_FSIZE,
                    limit,
                    limit,
                )
                .map_err(std::io::Error::from)
            });
        }
    }
}

#[test]
fn file_size_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut delivered = Vec::new();
    for i in 0..3 {
        let t = format!("small-{i}");
        let m = token_message(&t, 2);
        let (code, err) = deliver(&spool, &m, with_fsize_limit(1 << 20));
        assert_eq!(code, Some(0), "{err}");
        delivered.push((t, m));
    }
    // 1. The message is over the limit: staging fails with EFBIG.
    let big = message_of_size("over-limit", 200 * 1024);
    let before = state(&spool);
    let (code, err) = deliver(&spool, &big, with_fsize_limit(64 * 1024));
    assert_refused_cleanly(&spool, &before, code, &err, "message over RLIMIT_FSIZE");
    // 2. The message fits but the index cannot grow by one record. The
    // index grows in 64 KiB steps of zeros (FORMAT.md §2), so first cut
    // the zeros past the last record (a valid file: nothing counts them),
    // making the next append need to grow the file.
    let index = inbox_dir(&spool).join(".index");
    let records = (before.0.len() as u64 - 8192) / 128;
    let used = (0..records)
        .rev()
        .find(|r| {
            let off = (8192 + r * 128) as usize;
            before.0[off..off + 128].iter().any(|b| *b != 0)
        })
        .map_or(8192, |r| 8192 + (r + 1) * 128);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(used)
        .unwrap();
    let before = state(&spool);
    let small = token_message("index-cannot-grow", 1);
    let (code, err) = deliver(&spool, &small, with_fsize_limit(used));
    assert_refused_cleanly(
        &spool,
        &before,
        code,
        &err,
        "index growth over RLIMIT_FSIZE",
    );
    // Without the limit both go through, once.
    for (t, m) in [("over-limit", big), ("index-cannot-grow", small)] {
        let (code, err) = deliver(&spool, &m, |_| {});
        assert_eq!(code, Some(0), "{t}: {err}");
        delivered.push((t.to_string(), m));
    }
    recover_and_verify(&inbox_dir(&spool));
    let c = read_contents(&spool, USER, "INBOX");
    assert_eq!(c.live, delivered.len());
    for (t, m) in &delivered {
        assert!(c.bytes[&c.by_token[t][0]] == crlf(m), "{t}");
    }
}

/// Appends token messages (without fsyncs) until one more record would
/// not fit in the INBOX's index file; returns their tokens.
fn fill_index_to_its_end(spool: &Path) -> Vec<String> {
    let relaxed = Options {
        durability: storage::Durability::Relaxed,
        ..Options::default()
    };
    let s = Store::open(spool, relaxed).unwrap();
    let u = UserName::new(USER).unwrap();
    let index = s.mailbox_path(&u, &MailboxName::inbox()).join(".index");
    let len = std::fs::metadata(&index).unwrap().len();
    assert!(
        len.is_multiple_of(storage::internals::index::GROW_STEP),
        "{len}"
    );
    let mut mb = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    let mut tokens = Vec::new();
    while storage::format::Header::record_offset(mb.header().unwrap().num_records + 1) <= len {
        let t = format!("fill-{}", tokens.len());
        mb.append(&token_message(&t, 0)[..], storage::AppendOptions::default())
            .unwrap();
        tokens.push(t);
    }
    tokens
}

#[test]
fn append_fault_errors_leave_the_old_generation() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let (code, err) = deliver(&spool, &token_message("seed", 1), |_| {});
    assert_eq!(code, Some(0), "{err}");
    let mut expected = vec!["seed".to_string()];
    let header = |spool: &Path| {
        let s = Store::open(spool, Options::default()).unwrap();
        let mut mb = s
            .open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())
            .unwrap();
        mb.snapshot().unwrap()
    };
    let mut points = 0;
    for point in POINTS.iter().filter(|p| p.starts_with("append.")) {
        points += 1;
        if *point == "append.after_grow" {
            // Only an append that grows the index file passes through
            // this point: fill the file up to its end first.
            expected.extend(fill_index_to_its_end(&spool));
        }
        let before = header(&spool);
        let token = format!("fault-{point}");
        let msg = token_message(&token, 3);
        let (code, err) = deliver(&spool, &msg, |c| {
            c.env("MAILSTORE_TEST_FAULT", format!("{point}=error"));
        });
        assert_eq!(code, Some(75), "{point}: {err}");
        let after = header(&spool);
        let committed = point.starts_with("append.after_header");
        if committed {
            // The header reached the file before the error: the message is
            // in, and the report says 75. A retry would duplicate it.
            assert_eq!(
                after.header.generation,
                before.header.generation + 1,
                "{point}"
            );
            expected.push(token);
        } else {
            assert_eq!(
                after.header, before.header,
                "{point}: the old generation is not current"
            );
            assert_eq!(after.records, before.records, "{point}");
        }
        recover_and_verify(&inbox_dir(&spool));
    }
    let c = read_contents(&spool, USER, "INBOX");
    let got: Vec<String> = c.by_token.keys().cloned().collect();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want);
    println!(
        "append fault errors: {points} points, old generation current before the header write, committed once after it"
    );
}
