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
