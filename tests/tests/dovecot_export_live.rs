//! Moving out while mail arrives (issue 20, OPERATIONS.md §4b): `idx-admin
//! export --dovecot-maildir` reads each mailbox from one snapshot under
//! the store's lock protocol, so an export taken while `deliver` writes
//! to the same INBOX is a consistent state of it: the `dovecot-uidlist`
//! names exactly the messages of one generation (UIDs 1..N-1, no hole,
//! none missing), each file holds the bytes stored under its UID, and
//! importing the export gives a mailbox that verifies clean.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e_tests::{bin, run, run_with_input};
use storage::{MailboxName, Options, Store, UserName};

const USER: &str = "leaver";

fn message(i: u32) -> Vec<u8> {
    format!(
        "From: a{i}@example.org\r\nSubject: live {i}\r\nMessage-ID: <live{i}@example.org>\r\n\r\n{}",
        "body line\r\n".repeat(1 + i as usize % 9)
    )
    .into_bytes()
}

fn deliver(spool: &Path, i: u32) {
    let out = run_with_input(
        Command::new(bin("deliver"))
            .arg("--spool")
            .arg(spool)
            .args(["-d", USER, "--autocreate"])
            .env("MAILSTORE_CONFIG", "/dev/null"),
        &message(i),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "deliver {i}: {:?}", out.status);
}

fn idx_admin(args: &[&str], dir: &Path, spool: &Path) {
    let out = run(
        Command::new(bin("idx-admin"))
            .args(args)
            .arg(dir)
            .arg("--spool")
            .arg(spool)
            .args(["-d", USER])
            .env("MAILSTORE_CONFIG", "/dev/null"),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "idx-admin {args:?}: {}{}",
        out.stdout,
        out.stderr
    );
}

/// The export's INBOX: (UIDNEXT from the header, UID -> file bytes).
fn exported_inbox(dir: &Path) -> (u32, Vec<(u32, Vec<u8>)>) {
    let list = std::fs::read_to_string(dir.join("dovecot-uidlist")).unwrap();
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    let next: u32 = header
        .split(' ')
        .find_map(|f| f.strip_prefix('N'))
        .unwrap()
        .parse()
        .unwrap();
    let mut cur: Vec<String> = std::fs::read_dir(dir.join("cur"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    cur.sort();
    let mut out = Vec::new();
    for l in lines {
        let (uid, base) = l.split_once(" :").unwrap();
        let file = cur
            .iter()
            .find(|n| n.split(':').next() == Some(base))
            .unwrap_or_else(|| panic!("uidlist entry {l} has no file"));
        out.push((
            uid.parse().unwrap(),
            std::fs::read(dir.join("cur").join(file)).unwrap(),
        ));
    }
    assert_eq!(out.len(), cur.len(), "files without a uidlist entry");
    (next, out)
}

/// OPERATIONS.md §4b: each mailbox exported from one snapshot while
/// deliveries commit to it.
#[test]
fn export_while_deliver_writes_is_a_consistent_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    for i in 1..=40 {
        deliver(&spool, i);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (spool, stop) = (spool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut i = 41;
            while !stop.load(Ordering::Relaxed) && i < 400 {
                deliver(&spool, i);
                i += 1;
            }
        })
    };
    // Exports until two of them saw different states of the INBOX (the
    // deliveries went on in between), at most 20.
    let mut exports = Vec::new();
    let mut states = std::collections::BTreeSet::new();
    for k in 0..20 {
        let dir = tmp.path().join(format!("export{k}"));
        idx_admin(&["export", "--dovecot-maildir"], &dir, &spool);
        states.insert(exported_inbox(&dir).0);
        exports.push(dir);
        if states.len() >= 3 && k >= 3 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();

    let s = Store::open(&spool, Options::default()).unwrap();
    let m = s
        .open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())
        .unwrap();
    for (k, dir) in exports.iter().enumerate() {
        let (next, msgs) = exported_inbox(dir);
        let uids: Vec<u32> = msgs.iter().map(|(u, _)| *u).collect();
        assert!(next > 40, "export {k}: UIDNEXT {next}");
        assert_eq!(
            uids,
            (1..next).collect::<Vec<_>>(),
            "export {k}: the uidlist is one generation's messages"
        );
        for (uid, bytes) in &msgs {
            let ours = m.read_message(*uid).unwrap();
            assert!(
                tools::mbox::to_crlf(bytes) == ours,
                "export {k}: UID {uid} bytes"
            );
        }
        // The way back: the export imports cleanly.
        let again = tmp.path().join(format!("spool{k}"));
        idx_admin(&["import", "--dovecot-maildir"], dir, &again);
        let path = Store::open(&again, Options::default())
            .unwrap()
            .mailbox_path(&UserName::new(USER).unwrap(), &MailboxName::inbox());
        let report = storage::verify::verify_path(&path, Duration::from_secs(5)).unwrap();
        assert!(report.findings.is_empty(), "{:?}", report.findings);
    }
}

/// `idx-admin export --json --dovecot-maildir DIR` of USER, whatever its
/// exit status.
fn export_status(dir: &Path, spool: &Path) -> e2e_tests::Output {
    run(
        Command::new(bin("idx-admin"))
            .args(["export", "--json", "--dovecot-maildir"])
            .arg(dir)
            .arg("--spool")
            .arg(spool)
            .args(["-d", USER])
            .env("MAILSTORE_CONFIG", "/dev/null"),
        Duration::from_secs(60),
    )
}

/// What Maildir++ cannot hold is reported, never silently lost
/// (OPERATIONS.md §4b): a name with `.` inside a level is skipped, keywords
/// beyond the 26 Maildir letters are not written, and the export exits 1
/// saying so; an existing directory is never written into.
#[test]
fn export_reports_what_maildir_cannot_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let s = Store::open(&spool, Options::default()).unwrap();
    let u = UserName::new(USER).unwrap();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    s.create_mailbox(&u, &MailboxName::new("v1.2").unwrap())
        .unwrap();
    let mut m = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    let keywords: Vec<String> = (0..27).map(|i| format!("kw{i:02}")).collect();
    m.append(
        &message(1)[..],
        storage::AppendOptions {
            keywords,
            ..Default::default()
        },
    )
    .unwrap();
    let dir = tmp.path().join("out");
    let out = export_status(&dir, &spool);
    assert_eq!(out.status.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(v["skipped"][0].as_str().unwrap().contains("v1.2"), "{v}");
    assert_eq!(
        v["folders"][0]["lost_keywords"],
        serde_json::json!(["kw26"])
    );
    assert!(!dir.join(".v1.2").exists() && !dir.join(".v1").exists());
    // Again into the same directory: refused, nothing touched.
    let before = std::fs::read(dir.join("dovecot-uidlist")).unwrap();
    let again = export_status(&dir, &spool);
    assert_eq!(again.status.code(), Some(1));
    assert!(again.stderr.contains("exists"), "{}", again.stderr);
    assert_eq!(std::fs::read(dir.join("dovecot-uidlist")).unwrap(), before);
}
