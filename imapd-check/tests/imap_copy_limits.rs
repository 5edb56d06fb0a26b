//! COPY and MOVE of more messages than the server may hold open: each
//! staged message keeps its source file open and locked until the commit
//! (docs/PROTOCOL.md §5, COPY step 2), so a copy that names more than the
//! process's descriptor limit leaves room for is refused up front with
//! `NO [LIMIT]` (RFC 5530) and changes nothing, instead of failing midway
//! as an internal error; a smaller one in the same session succeeds.

mod imap_common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use imap_common::*;

/// Messages in INBOX; the server runs with [`NOFILE`] descriptors.
const N: usize = 1_200;
const NOFILE: u64 = 900;

/// A stdio session of alice's whose server may open at most [`NOFILE`]
/// files (soft and hard limit alike, so the server cannot raise it).
fn limited_session(spool: &std::path::Path) -> Client {
    let mut cmd = Command::new(IMAPD);
    cmd.args(["serve", "--spool"])
        .arg(spool)
        .args(["-d", "alice", "--stdio"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Client::preauth(cmd)
}

fn messages_in(c: &mut Client, mailbox: &str) -> usize {
    let lines = c.ok(&format!("STATUS {mailbox} (MESSAGES)"));
    let l = lines.iter().find(|l| l.starts_with("* STATUS")).unwrap();
    let at = l.find("MESSAGES ").unwrap() + "MESSAGES ".len();
    l[at..].trim_end_matches(')').parse().unwrap()
}

#[test]
fn a_copy_beyond_the_descriptor_limit_is_refused_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "alice", N);
    let mut c = limited_session(&spool);
    c.ok("CREATE Kept");
    c.ok("SELECT INBOX");
    for cmd in [
        format!("UID COPY 1:{N} Kept"),
        format!("UID MOVE 1:{N} Kept"),
    ] {
        let (lines, tagged) = c.cmd(&cmd);
        assert!(tagged.contains("NO [LIMIT]"), "{cmd}: {tagged} {lines:?}");
        assert!(tagged.contains("copy them in parts"), "{tagged}");
        assert_eq!(messages_in(&mut c, "Kept"), 0, "{cmd} changed Kept");
        assert_eq!(messages_in(&mut c, "INBOX"), N, "{cmd} changed INBOX");
    }
    // In parts, within the limit: done, and the session goes on.
    let lines = c.ok("UID COPY 1:500 Kept");
    assert!(lines.is_empty(), "{lines:?}");
    assert_eq!(messages_in(&mut c, "Kept"), 500);
    c.ok("UID MOVE 501:900 Kept");
    assert_eq!(messages_in(&mut c, "Kept"), 900);
    assert_eq!(messages_in(&mut c, "INBOX"), N - 400);
    c.ok("NOOP");
}
