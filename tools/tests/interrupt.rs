//! `idx-admin reconstruct` killed (SIGKILL) at each step of its write
//! ordering leaves a mailbox that opens, loses nothing, and a second
//! reconstruct finishes the job.

mod common;

use common::*;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use storage::MailboxName;

#[test]
fn reconstruct_killed_at_each_step_is_safe() {
    for point in [
        "reconstruct.after_new_index",
        "reconstruct.after_mark_superseded",
        "reconstruct.after_rename",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = sample(tmp.path());
        let before = contents(&spool);
        // Damage that keeps the index readable: a message file lost.
        std::fs::remove_file(dir.join("2.")).unwrap();
        let out = Command::new(ADMIN)
            .args(["reconstruct", dir.to_str().unwrap()])
            .env("MAILSTORE_TEST_FAULT", format!("{point}=kill"))
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(9), "{point}: not killed");
        // The mailbox opens (a half-done replacement is rolled back or
        // already complete) and every message still on disk is readable.
        {
            let s = store(&spool);
            let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
            let snap = m.snapshot().unwrap();
            for uid in [1, 3, 4, 5] {
                assert!(
                    snap.records.iter().any(|r| r.uid == uid),
                    "{point}: UID {uid} lost"
                );
                m.read_message(uid).unwrap();
            }
            m.recover().unwrap();
        }
        reconstruct(&dir);
        let v = assert_clean(&dir);
        assert!(
            v["warnings"].as_array().unwrap().is_empty(),
            "{point}: {v:#}"
        );
        let mut expect = before.clone();
        expect.remove(1);
        assert_eq!(contents(&spool), expect, "{point}");
    }
}

/// Reconstruct makes every message file the new index names durable
/// (fdatasync, then a directory fsync) before the new index replaces the
/// old one: the files may be a dead writer's that never got their flush,
/// or debris adopted as messages. Checked on the real binary's system
/// calls (strace, installed by scripts/test.sh).
#[test]
fn reconstruct_syncs_the_messages_before_the_new_index() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, dir) = sample(tmp.path());
    // A damaged record: its message file is adopted by reconstruct.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join(".index"))
            .unwrap();
        let off = storage::format::Header::record_offset(2) + 10;
        f.write_all_at(&[0x5a], off).unwrap();
    }
    let trace = tmp.path().join("strace.out");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", "trace=fdatasync,fsync,rename,renameat,renameat2"])
        .args([ADMIN, "reconstruct", dir.to_str().unwrap()])
        .output()
        .expect("strace must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let rename = lines
        .iter()
        .position(|l| l.contains("rename") && l.contains("\".index\""))
        .unwrap_or_else(|| panic!("no rename to .index: {lines:#?}"));
    for uid in [1, 2, 3, 4, 5] {
        let tag = format!("{}>", dir.join(format!("{uid}.")).display());
        let synced = lines[..rename]
            .iter()
            .any(|l| l.contains("fdatasync(") && l.contains(&tag));
        assert!(synced, "{uid}. not synced before the rename: {lines:#?}");
    }
    let dir_tag = format!("<{}>", dir.display());
    assert!(
        lines[..rename]
            .iter()
            .any(|l| l.starts_with(|c: char| c.is_ascii_digit())
                && l.contains("fsync(")
                && l.contains(&dir_tag)),
        "no directory fsync before the rename: {lines:#?}"
    );
}
