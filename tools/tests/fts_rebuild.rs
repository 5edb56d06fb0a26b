//! `idx-admin fts-rebuild` and the full-text index under `reconstruct`.

use std::path::Path;
use std::process::Command;

use storage::{AppendOptions, MailboxName, Options, Store, UserName};

fn admin(args: &[&str], spool: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_idx-admin"))
        .args(args)
        .arg("--spool")
        .arg(spool)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `fts-rebuild -d USER --all` indexes every live message of every
/// mailbox (an expunged one is left out); `reconstruct` removes `.fts/`
/// (derived data, rebuilt on demand).
#[test]
fn fts_rebuild_indexes_every_mailbox_and_reconstruct_removes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let store = Store::open(&spool, Options::default()).unwrap();
    let u = UserName::new("ann").unwrap();
    let mut uv = Vec::new();
    for (name, n) in [("INBOX", 5u32), ("Work/Old", 3)] {
        let name = MailboxName::new(name).unwrap();
        store.ensure_mailbox(&u, &name).unwrap();
        let mut m = store.open_mailbox(&u, &name).unwrap();
        for i in 1..=n {
            let body = format!("Subject: {i}\r\n\r\nword{i} in {name}\r\n");
            m.append(body.as_bytes(), AppendOptions::default()).unwrap();
        }
        uv.push(m.header().unwrap().uidvalidity);
    }
    let mut inbox = store.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    inbox.expunge(Some(&[2]), false).unwrap();
    // The budget is written as in the config files; below the writer's
    // minimum it is refused before anything is touched.
    let small = Command::new(env!("CARGO_BIN_EXE_idx-admin"))
        .args([
            "fts-rebuild",
            "-d",
            "ann",
            "--all",
            "--memory",
            "10M",
            "--spool",
        ])
        .arg(&spool)
        .output()
        .unwrap();
    assert_eq!(small.status.code(), Some(2), "usage error");
    assert!(String::from_utf8_lossy(&small.stderr).contains("at least 15M"));
    assert!(!spool.join("ann").join("INBOX").join(".fts").exists());
    let text = admin(
        &["fts-rebuild", "-d", "ann", "--all", "--memory", "32M"],
        &spool,
    );
    assert!(text.contains("rebuilt: 4 messages"), "{text}");
    assert!(text.contains("rebuilt: 3 messages"), "{text}");
    let inbox_dir = spool.join("ann").join("INBOX");
    let snap = fts::snapshot(&inbox_dir, uv[0]).unwrap().unwrap();
    assert_eq!(snap.indexed().unwrap(), [1, 3, 4, 5]);
    let p = fts::probe(b"WORD3").unwrap();
    assert_eq!(snap.candidates(&p).unwrap(), [3]);
    let old = spool.join("ann").join("Work").join("Old");
    let snap = fts::snapshot(&old, uv[1]).unwrap().unwrap();
    assert_eq!(snap.high_water(), 3);
    // The store's own checker does not mind the index (a dot entry).
    let v = Command::new(env!("CARGO_BIN_EXE_idx-inspect"))
        .args(["verify", "-d", "ann", "--spool"])
        .arg(&spool)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // Rebuilding again gives the same index, not twice the documents.
    admin(&["fts-rebuild", "-d", "ann"], &spool);
    let snap = fts::snapshot(&inbox_dir, uv[0]).unwrap().unwrap();
    assert_eq!(snap.documents(), 4);
    admin(&["reconstruct", "-d", "ann"], &spool);
    assert!(!inbox_dir.join(".fts").exists());
    assert!(old.join(".fts").exists(), "only the mailbox named");
}
