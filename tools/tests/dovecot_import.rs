//! `idx-admin import --dovecot-maildir` on hand-made Dovecot Maildir
//! accounts shaped exactly as Dovecot 2.3 writes them (the files a real
//! Dovecot writes are tested in e2e-tests `dovecot_import.rs`): the cases
//! a real Dovecot only produces by accident. RFC 3501 2.3.1.1: UIDs are
//! kept under the kept UIDVALIDITY, never reused, and UIDNEXT never goes
//! down; RFC 3501 2.3.2 keywords; 2.3.3 INTERNALDATE.

mod common;

use std::path::Path;

use common::*;
use storage::format::Flags;
use storage::mailbox::AppendOptions;
use storage::{MailboxName, UserName};

fn write(path: &Path, bytes: &[u8], mtime: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64))
        .unwrap();
}

fn folder(dir: &Path, uidlist: &str, keywords: &str) {
    for s in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(s)).unwrap();
    }
    std::fs::write(dir.join("dovecot-uidlist"), uidlist).unwrap();
    if !keywords.is_empty() {
        std::fs::write(dir.join("dovecot-keywords"), keywords).unwrap();
    }
}

/// An account: INBOX (UIDVALIDITY 1000, stale N5, UIDs 1 3 7, a file in
/// new/ with a UID, one without), `.Work.Old` (UIDVALIDITY 900, keyword
/// letter a = a different keyword than INBOX's a), subscriptions with a
/// deleted folder.
fn account(root: &Path) {
    folder(
        root,
        "3 V1000 N5 Gabc\n1 :1.M1P1.h,S=20,W=22\n3 W40 :3.M3P1.h,S=21,W=23\n7 :7.M7P1.h\n",
        "0 $Forwarded\n1 Project\n",
    );
    let files: [(&str, &[u8], i64); 4] = [
        ("cur/1.M1P1.h,S=20,W=22:2,Sa", b"Subject: one\n\nbody1\n", 1),
        (
            "cur/3.M3P1.h,S=21,W=23:2,FRb",
            b"Subject: three\n\nbody3\n",
            3,
        ),
        ("new/7.M7P1.h", b"Subject: seven\n\nbody7\n", 7),
        ("new/9.M9P1.h", b"Subject: nine\n\nbody9\n", 9),
    ];
    for (name, bytes, t) in files {
        write(&root.join(name), bytes, 1_600_000_000 + t);
    }
    let work = root.join(".Work.Old");
    folder(&work, "3 V900 N3\n2 :2.M2P2.h\n", "0 Private\n");
    write(
        &work.join("cur/2.M2P2.h:2,Ta"),
        b"Subject: old\n\nold\n",
        1_500_000_000,
    );
    std::fs::write(
        root.join("subscriptions"),
        "V\t2\n\nWork\tOld\nDeleted\tLong\tAgo\nINBOX\n",
    )
    .unwrap();
}

/// The account of [`account`] and a spool where `pre` ran for alice.
fn prepared(
    pre: impl FnOnce(&storage::Store, &UserName) -> storage::Result<()>,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Maildir");
    let spool = tmp.path().join("spool");
    account(&root);
    pre(&store(&spool), &UserName::new("alice").unwrap()).unwrap();
    (tmp, root, spool)
}

fn import(spool: &Path, root: &Path, extra: &[&str]) -> (i32, serde_json::Value, String) {
    let mut args = vec![
        "import",
        "--dovecot-maildir",
        root.to_str().unwrap(),
        "--spool",
        spool.to_str().unwrap(),
        "-d",
        "alice",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = run(ADMIN, &args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (code(&o), v, String::from_utf8_lossy(&o.stderr).into_owned())
}

fn folder_report(v: &serde_json::Value, name: &str) -> serde_json::Value {
    let folders = v["folders"].as_array().expect("folders");
    let f = folders.iter().find(|f| f["name"] == name);
    f.unwrap_or_else(|| panic!("no folder {name} in {v}"))
        .clone()
}

fn mailbox(spool: &Path, name: &str) -> (u32, u32, Vec<Msg>) {
    mailbox_messages(spool, "alice", name)
}

/// The whole account: UIDVALIDITY kept, UIDs with their gaps, UIDNEXT the
/// highest of the stale header N and the UIDs seen + 1, the unlisted file
/// above it, flags from `:2,` (none in new/), per-folder keyword letters,
/// mtime as INTERNALDATE, CRLF bytes, subscriptions (a deleted folder's
/// kept), `.` levels mapped to `/`. Then a re-run imports nothing.
#[test]
fn dovecot_account_keeps_uids_and_reruns_import_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Maildir");
    let spool = tmp.path().join("spool");
    account(&root);
    let (c, v, err) = import(&spool, &root, &[]);
    assert_eq!(c, 0, "{err} {v}");
    let (uv, next, msgs) = mailbox(&spool, "INBOX");
    assert_eq!(uv, 1000);
    // Listed: 1, 3, 7 (N5 is stale: 8); the unlisted file gets 8, UIDNEXT 9.
    let uids: Vec<u32> = msgs.iter().map(|m| m.0).collect();
    assert_eq!(uids, vec![1, 3, 7, 8]);
    assert_eq!(next, 9);
    assert_eq!(msgs[0].1, b"Subject: one\r\n\r\nbody1\r\n");
    assert_eq!(msgs[0].2, Flags::SEEN);
    assert_eq!(msgs[0].3, vec!["$Forwarded".to_string()]);
    assert_eq!(msgs[0].4, 1_600_000_001);
    assert_eq!(msgs[1].2, Flags::FLAGGED.union(Flags::ANSWERED));
    assert_eq!(msgs[1].3, vec!["Project".to_string()]);
    assert_eq!((msgs[2].2, msgs[2].4), (Flags::empty(), 1_600_000_007));
    assert_eq!(msgs[3].1, b"Subject: nine\r\n\r\nbody9\r\n");
    let (uv, next, msgs) = mailbox(&spool, "Work/Old");
    assert_eq!((uv, next), (900, 3));
    assert_eq!(msgs[0].0, 2);
    assert_eq!(msgs[0].2, Flags::DELETED);
    assert_eq!(
        msgs[0].3,
        vec!["Private".to_string()],
        "letter a of this folder"
    );
    let subs = store(&spool)
        .subscriptions(&UserName::new("alice").unwrap())
        .unwrap();
    assert_eq!(
        subs.into_iter().collect::<Vec<_>>(),
        vec!["Deleted/Long/Ago", "INBOX", "Work/Old"]
    );
    let inbox = folder_report(&v, "INBOX");
    assert_eq!(
        (inbox["imported"].as_u64(), inbox["renumbered"].as_u64()),
        (Some(3), Some(1))
    );

    // Second run: nothing new, nothing duplicated, UIDNEXT unchanged.
    let (c, v, err) = import(&spool, &root, &[]);
    assert_eq!(c, 0, "{err} {v}");
    for f in v["folders"].as_array().unwrap() {
        assert_eq!(f["imported"].as_u64(), Some(0), "{f}");
        assert_eq!(f["renumbered"].as_u64(), Some(0), "{f}");
    }
    assert_eq!(mailbox(&spool, "INBOX").2.len(), 4);
    assert_eq!(mailbox(&spool, "INBOX").1, 9);
}

/// A re-run after new mail in Dovecot only: Dovecot listed the dropped-in
/// file under the UID the first run gave it (8) and a new message under
/// 9; a message expunged here since is not brought back. Then a delivery
/// here takes UID 10 while Dovecot gives 10 to another message: under the
/// source's UIDVALIDITY that UID would name two messages, so the folder is
/// refused (exit 1) and nothing more is written to it (RFC 3501 2.3.1.1).
#[test]
fn rerun_imports_what_is_new_and_refuses_a_uid_clash() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("Maildir");
    let spool = tmp.path().join("spool");
    account(&root);
    assert_eq!(import(&spool, &root, &[]).0, 0);
    let s = store(&spool);
    let alice = UserName::new("alice").unwrap();
    let mut m = s.open_mailbox(&alice, &MailboxName::inbox()).unwrap();
    m.store(
        &[3],
        storage::mailbox::FlagOp::Add,
        Flags::DELETED,
        &[],
        None,
    )
    .unwrap();
    m.expunge(Some(&[3]), true).unwrap();
    m.repack().unwrap();
    let uidlist = |extra: &str| {
        std::fs::write(
            root.join("dovecot-uidlist"),
            format!(
                "3 V1000 N9\n1 :1.M1P1.h,S=20,W=22\n3 :3.M3P1.h,S=21,W=23\n7 :7.M7P1.h\n8 :9.M9P1.h\n{extra}"
            ),
        )
        .unwrap()
    };
    uidlist("9 :10.M10P1.h\n");
    write(
        &root.join("new/10.M10P1.h"),
        b"Subject: ten\n\nbody10\n",
        1_600_000_010,
    );
    let (c, v, err) = import(&spool, &root, &[]);
    assert_eq!(c, 0, "{err} {v}");
    assert_eq!(
        folder_report(&v, "INBOX")["imported"].as_u64(),
        Some(1),
        "{v}"
    );
    let subjects = |spool: &Path| -> Vec<(u32, String)> {
        mailbox(spool, "INBOX")
            .2
            .iter()
            .map(|m| {
                (
                    m.0,
                    String::from_utf8_lossy(&m.1)
                        .lines()
                        .next()
                        .unwrap()
                        .to_string(),
                )
            })
            .collect()
    };
    let want: Vec<(u32, String)> = vec![
        (1, "Subject: one".into()),
        (7, "Subject: seven".into()),
        (8, "Subject: nine".into()),
        (9, "Subject: ten".into()),
    ];
    assert_eq!(subjects(&spool), want);
    assert_eq!(mailbox(&spool, "INBOX").1, 10);

    // Both sides give UID 10 to a different message.
    let mut m = s.open_mailbox(&alice, &MailboxName::inbox()).unwrap();
    assert_eq!(
        m.append(
            &b"Subject: delivered\r\n\r\nhere\r\n"[..],
            AppendOptions::default()
        )
        .unwrap(),
        10
    );
    uidlist("9 :10.M10P1.h\n10 :11.M11P1.h\n11 :12.M12P1.h\n");
    write(
        &root.join("new/11.M11P1.h"),
        b"Subject: eleven\n\nbody11\n",
        1_600_000_011,
    );
    write(
        &root.join("new/12.M12P1.h"),
        b"Subject: twelve\n\nbody12\n",
        1_600_000_012,
    );
    let (c, v, _) = import(&spool, &root, &[]);
    assert_eq!(c, 1, "{v}");
    let inbox = folder_report(&v, "INBOX");
    assert!(
        inbox["refused"].as_str().unwrap().contains("UID 10"),
        "{inbox}"
    );
    let mut want = want;
    want.push((10, "Subject: delivered".into()));
    assert_eq!(
        subjects(&spool),
        want,
        "nothing written to the refused folder"
    );
}

/// A mailbox here whose UIDVALIDITY equals the source's by chance (both
/// stores take it from the clock) holds other messages under the same
/// UIDs: refused, never merged (the mbsync case of issue 20).
#[test]
fn uidvalidity_equal_by_chance_is_refused() {
    let (_tmp, root, spool) = prepared(|s, alice| {
        s.create_mailbox_with_uidvalidity(alice, &MailboxName::inbox(), 1000)?;
        let mut m = s.open_mailbox(alice, &MailboxName::inbox())?;
        m.append(&b"Subject: mine\r\n\r\nx\r\n"[..], AppendOptions::default())?;
        Ok(())
    });
    let (c, v, _) = import(&spool, &root, &[]);
    assert_eq!(c, 1, "{v}");
    assert!(
        folder_report(&v, "INBOX")["refused"]
            .as_str()
            .unwrap()
            .contains("UID 1")
    );
    assert_eq!(mailbox(&spool, "INBOX").2.len(), 1);
}

/// An existing mailbox with another UIDVALIDITY never receives the
/// source's UIDs: the folder is refused (exit 1, the others imported);
/// with --renumber its messages get new UIDs under the mailbox's own
/// UIDVALIDITY, which is not the source's.
#[test]
fn existing_mailbox_with_other_uidvalidity_is_refused_or_renumbered() {
    let (_tmp, root, spool) = prepared(|s, alice| s.create_mailbox(alice, &MailboxName::inbox()));
    let (c, v, _) = import(&spool, &root, &[]);
    assert_eq!(c, 1, "{v}");
    let inbox = folder_report(&v, "INBOX");
    assert!(
        inbox["refused"].as_str().unwrap().contains("UIDVALIDITY"),
        "{inbox}"
    );
    assert!(mailbox(&spool, "INBOX").2.is_empty());
    // Creating INBOX here handed out a UIDVALIDITY from the clock, above
    // Work/Old's 900: that one cannot be given any more either.
    let work = folder_report(&v, "Work/Old");
    assert!(
        work["refused"].as_str().unwrap().contains("not above"),
        "{work}"
    );

    let (c, v, err) = import(&spool, &root, &["--renumber"]);
    assert_eq!(c, 0, "{err} {v}");
    let (uv, _, msgs) = mailbox(&spool, "INBOX");
    assert_ne!(uv, 1000);
    assert_eq!(
        msgs.iter().map(|m| m.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_ne!(mailbox(&spool, "Work/Old").0, 900);
    // Again: here by content, nothing doubled.
    assert_eq!(import(&spool, &root, &["--renumber"]).0, 0);
    assert_eq!(mailbox(&spool, "INBOX").2.len(), 4);
}

/// A source UIDVALIDITY at or below one handed out here already cannot
/// be given (it may have named another mailbox): refused, or with
/// --renumber a new UIDVALIDITY that is never the source's.
#[test]
fn uidvalidity_already_handed_out_is_never_reused() {
    // Handed out 2000 here (> both source values).
    let (_tmp, root, spool) = prepared(|s, alice| {
        s.create_mailbox_with_uidvalidity(alice, &MailboxName::new("Other").unwrap(), 2000)
    });
    let (c, v, _) = import(&spool, &root, &[]);
    assert_eq!(c, 1);
    assert_eq!(
        v["folders"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| !f["refused"].is_null())
            .count(),
        2
    );
    assert_eq!(import(&spool, &root, &["--renumber"]).0, 0);
    let (uv, _, msgs) = mailbox(&spool, "INBOX");
    assert!(uv > 2000 && uv != 1000);
    assert_eq!(msgs.len(), 4);
}
