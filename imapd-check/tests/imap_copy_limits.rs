//! COPY and MOVE of more messages than the server may hold open. Each
//! message staged before the locks keeps its source file open and locked
//! until the commit (docs/PROTOCOL.md §5, COPY step 2), so past what the
//! process's descriptor limit leaves room for, the rest are placed late,
//! under the locks: the copy is whole either way, not an internal error
//! halfway (before: `NO [SERVERBUG]`, EMFILE at 19,980 of 20,000).

mod imap_common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use imap_common::*;

/// Messages in INBOX; the server runs with [`NOFILE`] descriptors.
const N: usize = 1_200;
const NOFILE: u64 = 900;

/// A stdio session of alice's whose server may open at most `nofile`
/// files (soft and hard limit alike, so the server cannot raise it).
fn limited_session(spool: &std::path::Path, nofile: u64) -> Client {
    let mut cmd = Command::new(IMAPD);
    cmd.args(["serve", "--spool"])
        .arg(spool)
        .args(["-d", "alice", "--stdio"]);
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: nofile,
                rlim_max: nofile,
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

/// CRC32 and length of each message's body, in sequence order.
fn bodies(c: &mut Client, mailbox: &str) -> Vec<(u32, u64)> {
    c.ok(&format!("EXAMINE {mailbox}"));
    let n = messages_in(c, mailbox);
    (1..=n)
        .map(|seq| {
            c.send(&format!("b{seq} FETCH {seq} BODY.PEEK[]\r\n"));
            let head = c.line();
            assert!(head.contains("BODY[] {"), "{head}");
            let got = c.literal_crc(
                head.rsplit('{')
                    .next()
                    .unwrap()
                    .trim_end_matches('}')
                    .parse()
                    .unwrap(),
            );
            let close = c.line();
            assert_eq!(close, ")", "{close}");
            let ok = c.line();
            assert!(ok.starts_with(&format!("b{seq} OK")), "{ok}");
            got
        })
        .collect()
}

#[test]
fn copies_and_moves_beyond_the_descriptor_limit_are_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "alice", N);
    let mut c = limited_session(&spool, NOFILE);
    let inbox = bodies(&mut c, "INBOX");
    c.ok("CREATE Kept");
    c.ok("CREATE Moved");
    c.ok("SELECT INBOX");
    let (lines, tagged) = c.cmd(&format!("UID COPY 1:{N} Kept"));
    assert!(
        tagged.contains("OK [COPYUID ") && tagged.contains(&format!("1:{N} 1:{N}]")),
        "{tagged} {lines:?}"
    );
    assert_eq!(bodies(&mut c, "Kept"), inbox, "the copies");
    c.ok("SELECT Kept");
    c.ok(&format!("UID MOVE 1:{N} Moved"));
    assert_eq!(messages_in(&mut c, "Kept"), 0);
    assert_eq!(bodies(&mut c, "Moved"), inbox, "the moved copies");
    assert_eq!(bodies(&mut c, "INBOX"), inbox, "the originals");
    c.ok("NOOP");
}

/// Up to 256 messages the server does not count its descriptors first:
/// staging meets EMFILE, and that message, the rest and the last 16
/// staged are placed late (`transfer.rs` `GIVE_BACK`), leaving the commit
/// descriptors of its own.
#[test]
fn a_copy_that_runs_out_of_descriptors_while_staging_is_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "alice", 200);
    let mut c = limited_session(&spool, 120);
    let inbox = bodies(&mut c, "INBOX");
    c.ok("CREATE Kept");
    c.ok("CREATE Moved");
    c.ok("SELECT INBOX");
    c.ok("UID COPY 1:200 Kept");
    assert_eq!(bodies(&mut c, "Kept"), inbox, "the copies");
    c.ok("SELECT Kept");
    c.ok("UID MOVE 1:200 Moved");
    assert_eq!(messages_in(&mut c, "Kept"), 0);
    assert_eq!(bodies(&mut c, "Moved"), inbox, "the moved copies");
}
