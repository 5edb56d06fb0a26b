//! Unit-level tests of the mailbox operations through the public API.

use mailstore::format::Flags;
use mailstore::mailbox::{AppendOptions, FlagOp};
use mailstore::{Error, MailboxName, Options, Store, UserName};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("spool"), Options::default()).unwrap();
    (dir, s)
}

fn user() -> UserName {
    UserName::new("alice").unwrap()
}

/// A store with alice's empty INBOX, to share between threads.
fn shared_store_with_inbox() -> (tempfile::TempDir, std::sync::Arc<Store>, UserName) {
    let (t, s) = store();
    let u = user();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    (t, std::sync::Arc::new(s), u)
}

/// A store with alice's empty INBOX, open.
fn inbox() -> (tempfile::TempDir, Store, UserName, mailstore::Mailbox) {
    let (t, s) = store();
    let u = user();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let m = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    (t, s, u, m)
}

/// Appends through two handles, keywords from both: an append naming no
/// keyword does not read the table (docs/PROTOCOL.md §3 step 4), so a
/// handle's table may be older than the mailbox's; the next append that
/// names a keyword, and every read, must still see every name, each record
/// with its own keyword bits.
#[test]
fn keyword_tables_stay_right_across_handles_when_appends_skip_them() {
    let (_t, s, u, mut a) = inbox();
    let mut b = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    let kw = |k: &[&str]| AppendOptions {
        keywords: k.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    };
    // a reads the (empty) table, b adds "one", a appends without keywords
    // (its table stays empty), then a adds "two": the table read then must
    // hold "one", or "two" would take number 0, the number of "one".
    a.append(&b"Subject: 1\r\n\r\n1\r\n"[..], kw(&[])).unwrap();
    b.append(&b"Subject: 2\r\n\r\n2\r\n"[..], kw(&["one"]))
        .unwrap();
    a.append(&b"Subject: 3\r\n\r\n3\r\n"[..], kw(&[])).unwrap();
    a.append(&b"Subject: 4\r\n\r\n4\r\n"[..], kw(&["two"]))
        .unwrap();
    b.append(&b"Subject: 5\r\n\r\n5\r\n"[..], kw(&["two", "one"]))
        .unwrap();
    a.append(&b"Subject: 6\r\n\r\n6\r\n"[..], kw(&["three"]))
        .unwrap();
    for m in [&mut a, &mut b] {
        let snap = m.snapshot().unwrap();
        assert_eq!(snap.meta.keywords, vec!["one", "two", "three"]);
        let names = |i: usize| -> Vec<&str> {
            (0..snap.meta.keywords.len())
                .filter(|&k| snap.records[i].keywords.contains(k))
                .map(|k| snap.meta.keywords[k].as_str())
                .collect()
        };
        let want: [&[&str]; 6] = [&[], &["one"], &[], &["two"], &["one", "two"], &["three"]];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(names(i), *w, "message {}", i + 1);
        }
    }
}

#[test]
fn append_read_flag_expunge_repack() {
    let (_t, s) = store();
    let inbox = MailboxName::inbox();
    s.create_mailbox(&user(), &inbox).unwrap();
    let mut m = s.open_mailbox(&user(), &inbox).unwrap();
    let uid1 = m
        .append(
            &b"Subject: a\r\n\r\nbody one\r\n"[..],
            AppendOptions::default(),
        )
        .unwrap();
    let uid2 = m
        .append(
            &b"Subject: b\r\n\r\nbody two\r\n"[..],
            AppendOptions {
                flags: Flags::SEEN,
                keywords: vec!["$Junk".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!((uid1, uid2), (1, 2));
    let h = m.header().unwrap();
    assert_eq!((h.exists, h.last_uid, h.seen, h.generation), (2, 2, 1, 3));
    assert_eq!(
        m.read_message(2).unwrap(),
        b"Subject: b\r\n\r\nbody two\r\n"
    );
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.records[0].header_size, 14);
    assert_eq!(snap.meta.keywords, vec!["$Junk".to_string()]);
    assert!(snap.records[1].keywords.contains(0));

    let out = m
        .store(&[1, 2, 9], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    assert_eq!(out.changed.len(), 2);
    assert_eq!(out.missing, vec![9]);
    let h = m.header().unwrap();
    assert_eq!(h.deleted, 2);
    assert_eq!(m.expunge(Some(&[1]), true).unwrap(), vec![1]);
    let h = m.header().unwrap();
    assert_eq!((h.exists, h.num_records, h.deleted), (1, 2, 1));

    // A second handle still on the old index follows the repack.
    let mut other = s.open_mailbox(&user(), &inbox).unwrap();
    let mark = {
        let h = other.header().unwrap();
        other.mark_of(&h)
    };
    let rp = m.repack().unwrap();
    assert_eq!(rp.removed, vec![1]);
    assert!(matches!(m.read_message(1), Err(Error::Expunged(1))));
    let ch = other.changes_since(&mark).unwrap().expect("changed");
    assert!(ch.full);
    assert_eq!(ch.records.len(), 1);
    assert_eq!(ch.records[0].uid, 2);
    assert_eq!(other.header().unwrap().num_records, 1);
    // UIDs keep rising after a repack.
    assert_eq!(
        m.append(&b"x\r\n\r\n"[..], AppendOptions::default())
            .unwrap(),
        3
    );
}

#[test]
fn unchanged_check_returns_none_and_changes_are_reported() {
    let (_t, s) = store();
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mut a = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mut b = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    a.append(&b"m\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    let snap = b.snapshot().unwrap();
    assert!(b.changes_since(&snap.mark).unwrap().is_none());
    a.append(&b"n\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    a.store(&[1], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let ch = b.changes_since(&snap.mark).unwrap().unwrap();
    assert!(!ch.full);
    let uids: Vec<u32> = ch.records.iter().map(|r| r.uid).collect();
    assert_eq!(uids, vec![1, 2]);
}

#[test]
fn mailbox_lifecycle_and_hierarchy() {
    let (_t, s) = store();
    let u = user();
    for n in [
        "INBOX",
        "Work",
        "Work/Projects",
        ".hidden",
        "a.",
        "Caf\u{e9}",
    ] {
        s.create_mailbox(&u, &MailboxName::new(n).unwrap()).unwrap();
    }
    assert!(matches!(
        s.create_mailbox(&u, &MailboxName::new("Work").unwrap()),
        Err(Error::MailboxExists(_))
    ));
    let names: Vec<String> = s
        .list_mailboxes(&u)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        vec![
            ".hidden",
            "Caf\u{e9}",
            "INBOX",
            "Work",
            "Work/Projects",
            "a."
        ]
    );
    s.rename_mailbox(
        &u,
        &MailboxName::new("Work").unwrap(),
        &MailboxName::new("Job").unwrap(),
    )
    .unwrap();
    assert!(
        s.mailbox_exists(&u, &MailboxName::new("Job/Projects").unwrap())
            .unwrap()
    );
    // Delete a parent: its children stay.
    s.delete_mailbox(&u, &MailboxName::new("Job").unwrap())
        .unwrap();
    let names: Vec<String> = s
        .list_mailboxes(&u)
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(
        names,
        vec![".hidden", "Caf\u{e9}", "INBOX", "Job/Projects", "a."]
    );
    s.delete_mailbox(&u, &MailboxName::new("Job/Projects").unwrap())
        .unwrap();
    s.create_mailbox(&u, &MailboxName::new("Job").unwrap())
        .unwrap();
    let mut m = s
        .open_mailbox(&u, &MailboxName::new("Job").unwrap())
        .unwrap();
    assert_eq!(m.header().unwrap().exists, 0);
}

#[test]
fn deleted_mailbox_is_noticed_by_open_handles() {
    let (_t, s) = store();
    let u = user();
    let n = MailboxName::new("Trash").unwrap();
    s.create_mailbox(&u, &n).unwrap();
    let mut m = s.open_mailbox(&u, &n).unwrap();
    s.delete_mailbox(&u, &n).unwrap();
    assert!(matches!(m.header(), Err(Error::MailboxDeleted)));
}

#[test]
fn unknown_user_and_mailbox() {
    let (_t, s) = store();
    let u = user();
    assert!(!s.user_exists(&u).unwrap());
    assert!(matches!(
        s.open_mailbox(&u, &MailboxName::inbox()),
        Err(Error::NoSuchUser(_))
    ));
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    assert!(matches!(
        s.open_mailbox(&u, &MailboxName::new("Nope").unwrap()),
        Err(Error::NoSuchMailbox(_))
    ));
}

#[test]
fn symlinked_mailbox_directory_is_refused() {
    let (t, s) = store();
    let u = user();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, s.root().join("alice").join("Evil")).unwrap();
    assert!(matches!(
        s.open_mailbox(&u, &MailboxName::new("Evil").unwrap()),
        Err(Error::Symlink(_))
    ));
    assert!(matches!(
        s.create_mailbox(&u, &MailboxName::new("Evil/x").unwrap()),
        Err(Error::Symlink(_))
    ));
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

/// `.stage` is opened when a mailbox is opened and made only when it is
/// missing (a mailbox from before staging, or one whose `.stage` an
/// operator removed): the open makes it, private, and appends work; one
/// that is a symlink or a file is refused, never followed or replaced.
#[test]
fn missing_stage_directory_is_made_and_a_foreign_one_refused() {
    use std::os::unix::fs::PermissionsExt;
    let (t, s, u, mut m) = inbox();
    m.append(&b"Subject: a\r\n\r\none\r\n"[..], AppendOptions::default())
        .unwrap();
    drop(m);
    let dir = s.mailbox_path(&u, &MailboxName::inbox());
    std::fs::remove_dir_all(dir.join(".stage")).unwrap();
    let mut m = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    let meta = std::fs::symlink_metadata(dir.join(".stage")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let uid = m
        .append(&b"Subject: b\r\n\r\ntwo\r\n"[..], AppendOptions::default())
        .unwrap();
    assert_eq!(uid, 2);
    assert_eq!(m.read_message(1).unwrap(), b"Subject: a\r\n\r\none\r\n");
    drop(m);

    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::remove_dir_all(dir.join(".stage")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join(".stage")).unwrap();
    assert!(matches!(
        s.open_mailbox(&u, &MailboxName::inbox()),
        Err(Error::Symlink(_))
    ));
    std::fs::remove_file(dir.join(".stage")).unwrap();
    std::fs::write(dir.join(".stage"), b"not a directory").unwrap();
    assert!(s.open_mailbox(&u, &MailboxName::inbox()).is_err());
    assert_eq!(
        std::fs::read(dir.join(".stage")).unwrap(),
        b"not a directory"
    );
    assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
}

#[test]
fn files_and_directories_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, s, u, mut m) = inbox();
    m.append(&b"a\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    let dir = s.mailbox_path(&u, &MailboxName::inbox());
    for (p, mode) in [
        (dir.clone(), 0o700),
        (dir.join(".index"), 0o600),
        (dir.join("1."), 0o600),
    ] {
        let got = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(got, mode, "{}", p.display());
    }
}

#[test]
fn max_size_is_enforced_and_leaves_nothing() {
    let (_t, s, u, mut m) = inbox();
    let big = vec![b'x'; 1000];
    let r = m.append(
        &big[..],
        AppendOptions {
            max_size: Some(100),
            ..Default::default()
        },
    );
    assert!(matches!(r, Err(Error::TooLarge { .. })));
    let stage = s.mailbox_path(&u, &MailboxName::inbox()).join(".stage");
    assert_eq!(std::fs::read_dir(stage).unwrap().count(), 0);
    assert_eq!(m.header().unwrap().generation, 1);
}

#[test]
fn corrupt_record_is_reported_with_offset() {
    let (_t, s, u, mut m) = inbox();
    m.append(&b"a\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    let idx = s.mailbox_path(&u, &MailboxName::inbox()).join(".index");
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[8192 + 10] ^= 0x40;
    std::fs::write(&idx, &bytes).unwrap();
    match m.snapshot() {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, 8192 + 124),
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[test]
fn writers_refuse_a_damaged_header_slot_readers_still_read() {
    let (_t, s, u, mut m) = inbox();
    m.append(&b"a\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    m.append(&b"b\r\n\r\n"[..], AppendOptions::default())
        .unwrap();
    // Generation 3 is in slot 1; damage slot 0 (generation 2). It could
    // as well have been the newest commit, so writing on must stop.
    let idx = s.mailbox_path(&u, &MailboxName::inbox()).join(".index");
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[40] ^= 0x01;
    std::fs::write(&idx, &bytes).unwrap();
    assert_eq!(m.header().unwrap().generation, 3);
    match m.append(&b"c\r\n\r\n"[..], AppendOptions::default()) {
        Err(Error::Corrupt { offset, .. }) => assert!(offset < 128, "offset {offset}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(std::fs::read(&idx).unwrap(), bytes, "nothing written");
}

/// An LMTP server's sessions are threads of one process: eight of them
/// creating the same INBOX (and a sibling) at once must all succeed, with
/// exactly one creating each, and leave no temporary file behind. With a
/// temporary name built from the process id alone, one thread unlinked
/// another's file before its link (`link .index: No such file`).
#[test]
fn threads_of_one_process_create_one_mailbox_concurrently() {
    let (t, s) = store();
    let s = std::sync::Arc::new(s);
    for round in 0..20 {
        let u = UserName::new(&format!("u{round}")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
        let created: Vec<bool> = (0..8)
            .map(|i| {
                let (s, u, b) = (s.clone(), u.clone(), barrier.clone());
                std::thread::spawn(move || {
                    let name = if i % 2 == 0 {
                        MailboxName::inbox()
                    } else {
                        MailboxName::new("Lists").unwrap()
                    };
                    b.wait();
                    s.ensure_mailbox(&u, &name).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let inbox_creators = created.iter().step_by(2).filter(|&&c| c).count();
        let lists_creators = created.iter().skip(1).step_by(2).filter(|&&c| c).count();
        assert_eq!((inbox_creators, lists_creators), (1, 1), "round {round}");
        for name in [MailboxName::inbox(), MailboxName::new("Lists").unwrap()] {
            let mut m = s.open_mailbox(&u, &name).unwrap();
            assert_eq!(m.snapshot().unwrap().records.len(), 0);
        }
        for dir in ["INBOX", "Lists"] {
            let leftovers: Vec<_> =
                std::fs::read_dir(t.path().join("spool").join(u.as_str()).join(dir))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| n.starts_with(".index."))
                    .collect();
            assert!(leftovers.is_empty(), "round {round}: {leftovers:?}");
        }
    }
}

/// The state a delete leaves when it dies after its DELETED commit and
/// before its commit point (the rename): `.index` in place, header marked
/// DELETED.
fn interrupt_delete(dir: &std::path::Path) {
    use mailstore::format::{HEADER_SIZE, HF_DELETED, Header, SLOT_OFFSETS};
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(".index"))
        .unwrap();
    let mut newest: Option<Header> = None;
    for off in SLOT_OFFSETS {
        let mut b = [0u8; HEADER_SIZE];
        f.read_exact_at(&mut b, off).unwrap();
        if let Ok(h) = Header::decode(&b)
            && newest.as_ref().is_none_or(|n| h.generation > n.generation)
        {
            newest = Some(h);
        }
    }
    let mut h = newest.unwrap();
    h.generation += 1;
    h.flags |= HF_DELETED;
    f.write_all_at(&h.encode(), SLOT_OFFSETS[h.slot()]).unwrap();
}

/// A delete that died between its DELETED commit and its rename leaves a
/// mailbox nobody can use: it does not exist for lookups and listings,
/// and the next create, delete or rename of the name finishes the delete
/// instead of failing on it for ever.
#[test]
fn interrupted_delete_is_finished_by_the_next_create_delete_or_rename() {
    let (_t, s) = store();
    let u = user();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let work = MailboxName::new("Work").unwrap();
    let child = MailboxName::new("Work/Sub").unwrap();
    let other = MailboxName::new("Other").unwrap();

    // Create: a fresh, empty mailbox with a new UIDVALIDITY.
    s.create_mailbox(&u, &work).unwrap();
    let mut m = s.open_mailbox(&u, &work).unwrap();
    m.append(&b"Subject: old\r\n\r\nx\r\n"[..], AppendOptions::default())
        .unwrap();
    let old_validity = m.header().unwrap().uidvalidity;
    drop(m);
    interrupt_delete(&s.mailbox_path(&u, &work));
    assert!(!s.mailbox_exists(&u, &work).unwrap());
    assert_eq!(s.list_mailboxes(&u).unwrap(), vec![MailboxName::inbox()]);
    assert!(s.ensure_mailbox(&u, &work).unwrap(), "create must succeed");
    let mut m = s.open_mailbox(&u, &work).unwrap();
    let h = m.header().unwrap();
    assert_eq!((h.num_records, h.last_uid), (0, 0));
    assert_ne!(h.uidvalidity, old_validity);
    assert!(!s.mailbox_path(&u, &work).join("1.").exists());
    drop(m);

    // Delete: finishes, also for a mailbox with a child (which stays).
    s.create_mailbox(&u, &child).unwrap();
    interrupt_delete(&s.mailbox_path(&u, &work));
    s.delete_mailbox(&u, &work).unwrap();
    assert_eq!(
        s.list_mailboxes(&u).unwrap(),
        vec![MailboxName::inbox(), child.clone()]
    );
    s.delete_mailbox(&u, &child).unwrap();

    // Rename onto the name of an interrupted delete.
    s.create_mailbox(&u, &work).unwrap();
    interrupt_delete(&s.mailbox_path(&u, &work));
    s.create_mailbox(&u, &other).unwrap();
    s.rename_mailbox(&u, &other, &work).unwrap();
    assert_eq!(
        s.list_mailboxes(&u).unwrap(),
        vec![MailboxName::inbox(), work.clone()]
    );
    let mut m = s.open_mailbox(&u, &work).unwrap();
    m.append(&b"Subject: new\r\n\r\ny\r\n"[..], AppendOptions::default())
        .unwrap();
}

/// Quota accounting and handles that race a mailbox's deletion: `usage`
/// never fails because a listed mailbox was deleted under it, and a
/// delete is not failed by a handle that opened the mailbox just before
/// (which recreates `.stage`), nor leaves its moved-aside directory behind.
#[test]
fn usage_and_opens_racing_deletes() {
    let (t, s, u) = shared_store_with_inbox();
    let tmp = MailboxName::new("Tmp").unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (s, u, tmp, done) = (s.clone(), u.clone(), tmp.clone(), done.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    s.usage(&u).unwrap_or_else(|e| panic!("usage: {e}"));
                    if let Ok(mut m) = s.open_mailbox(&u, &tmp) {
                        let _ = m.header();
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..150 {
        s.create_mailbox(&u, &tmp).unwrap();
        let mut m = s.open_mailbox(&u, &tmp).unwrap();
        m.append(&b"Subject: t\r\n\r\nx\r\n"[..], AppendOptions::default())
            .unwrap();
        drop(m);
        s.delete_mailbox(&u, &tmp)
            .unwrap_or_else(|e| panic!("delete {i}: {e}"));
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let leftovers: Vec<_> = std::fs::read_dir(t.path().join("spool").join(u.as_str()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".deleted."))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A recovery running in a mailbox directory removes temporary index
/// files it cannot tell from dead creators' ones, also those of creators
/// that are still writing: they must retry, not fail.
#[test]
fn creators_racing_a_recovery_all_succeed() {
    let (_t, s) = store();
    let u = user();
    let s = std::sync::Arc::new(s);
    for round in 0..40 {
        let name = MailboxName::new(&format!("M{round}")).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(7));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let recoverer = {
            let (s, u, name, barrier, stop) = (
                s.clone(),
                u.clone(),
                name.clone(),
                barrier.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                barrier.wait();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut m) = s.open_mailbox(&u, &name) {
                        m.recover().unwrap();
                    }
                }
            })
        };
        let creators: Vec<_> = (0..6)
            .map(|_| {
                let (s, u, name, barrier) = (s.clone(), u.clone(), name.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    s.ensure_mailbox(&u, &name)
                })
            })
            .collect();
        let created: Vec<bool> = creators
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
            })
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        recoverer.join().unwrap();
        assert_eq!(created.iter().filter(|&&c| c).count(), 1, "round {round}");
    }
}

/// CREATE of a child racing DELETE of its parent: the child either makes
/// the delete keep the parent's directory, or is created after the delete
/// finished; a CREATE that returned Ok is never removed by the delete.
#[test]
fn creating_a_child_while_its_parent_is_deleted_never_loses_it() {
    let (_t, s, u) = shared_store_with_inbox();
    let parent = MailboxName::new("a").unwrap();
    let child = MailboxName::new("a/b").unwrap();
    for round in 0..150 {
        s.create_mailbox(&u, &parent).unwrap();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let deleter = {
            let (s, u, parent, barrier) = (s.clone(), u.clone(), parent.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                s.delete_mailbox(&u, &parent)
            })
        };
        barrier.wait();
        let created = s.create_mailbox(&u, &child);
        let deleted = deleter.join().unwrap();
        assert!(deleted.is_ok(), "round {round}: delete: {deleted:?}");
        assert!(created.is_ok(), "round {round}: create: {created:?}");
        assert!(
            s.mailbox_exists(&u, &child).unwrap(),
            "round {round}: the created child is gone"
        );
        let mut m = s.open_mailbox(&u, &child).unwrap();
        m.append(&b"Subject: c\r\n\r\nx\r\n"[..], AppendOptions::default())
            .unwrap();
        drop(m);
        s.delete_mailbox(&u, &child).unwrap();
        if s.mailbox_exists(&u, &parent).unwrap() {
            s.delete_mailbox(&u, &parent).unwrap();
        }
    }
}

/// PROTOCOL.md §5 and §11: a reconstruct that records a changed file
/// anew under its UID removes the full-text index (`.fts/`), which may
/// hold the file's old bytes; the messages stay.
#[test]
fn reconstruct_removes_the_full_text_index() {
    let (_t, s, u, mut m) = inbox();
    m.append(
        &b"Subject: one\r\n\r\nold words\r\n"[..],
        AppendOptions::default(),
    )
    .unwrap();
    let dir = s.mailbox_path(&u, &MailboxName::inbox());
    std::fs::create_dir_all(dir.join(".fts/sub")).unwrap();
    std::fs::write(dir.join(".fts/meta.json"), b"{}").unwrap();
    std::fs::write(dir.join("1."), b"Subject: one\r\n\r\nnew words, longer\r\n").unwrap();
    let o = mailstore::recovery::reconstruct(
        &dir,
        mailstore::Durability::Full,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(o.header.num_records, 1);
    assert!(
        !dir.join(".fts").exists(),
        "the index of the old bytes is gone"
    );
    assert_eq!(
        std::fs::read(dir.join("1.")).unwrap(),
        b"Subject: one\r\n\r\nnew words, longer\r\n"
    );
    // Without an index, nothing to remove.
    mailstore::recovery::reconstruct(
        &dir,
        mailstore::Durability::Full,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
}

/// In-place rewrites go out as runs of consecutive records, one write of
/// at most 8,192 records each (`IndexFile::write_records_at`): STOREs
/// over more records than one run holds, with gaps, a UID set given out of
/// order with repeats, and expunges, leave every record as a model of one
/// change at a time says, seen through a new handle and by verify.
#[test]
fn big_stores_and_expunges_write_every_record_they_change() {
    let (_t, s, u, mut m) = inbox();
    const N: u32 = 9000;
    let all: Vec<u32> = (1..=N).collect();
    for chunk in all.chunks(1500) {
        let staged = chunk
            .iter()
            .map(|i| {
                let body = format!("Subject: {i}\r\n\r\n{i}\r\n");
                m.stage(body.as_bytes(), AppendOptions::default()).unwrap()
            })
            .collect();
        m.commit(staged).unwrap();
    }
    let mut model = vec![Flags::empty(); N as usize + 1];
    let mut gone = vec![false; N as usize + 1];
    /// One STORE, and the model after it.
    fn change(
        m: &mut mailstore::Mailbox,
        model: &mut [Flags],
        gone: &[bool],
        uids: &[u32],
        op: FlagOp,
        f: Flags,
    ) {
        let out = m.store(uids, op, f, &[], None).unwrap();
        let mut want = 0;
        let mut seen = std::collections::HashSet::new();
        for &u in uids {
            if !seen.insert(u) || gone[u as usize] {
                continue;
            }
            let new = match op {
                FlagOp::Add => model[u as usize].union(f),
                FlagOp::Remove => model[u as usize].minus(f),
                FlagOp::Replace => f,
            };
            if new != model[u as usize] {
                want += 1;
            }
            model[u as usize] = new;
        }
        assert_eq!(out.changed.len(), want, "{op:?} {f:?}");
    }
    change(&mut m, &mut model, &gone, &all, FlagOp::Add, Flags::SEEN);
    let scattered: Vec<u32> = (1..=N)
        .rev()
        .step_by(3)
        .chain([5, 5, 8191, 8192, 8193, 8194, 8195])
        .collect();
    change(
        &mut m,
        &mut model,
        &gone,
        &scattered,
        FlagOp::Add,
        Flags::FLAGGED,
    );
    let middle: Vec<u32> = (4000..=8500).collect();
    change(
        &mut m,
        &mut model,
        &gone,
        &middle,
        FlagOp::Remove,
        Flags::SEEN,
    );
    let deleted: Vec<u32> = (1..=N)
        .filter(|u| u % 7 == 0 || (100..9000).contains(u))
        .collect();
    change(
        &mut m,
        &mut model,
        &gone,
        &deleted,
        FlagOp::Add,
        Flags::DELETED,
    );
    let expunged = m.expunge(None, true).unwrap();
    assert_eq!(expunged.len(), deleted.len());
    for u in expunged {
        gone[u as usize] = true;
    }
    change(
        &mut m,
        &mut model,
        &gone,
        &all,
        FlagOp::Replace,
        Flags::ANSWERED,
    );

    let mut fresh = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    let snap = fresh.snapshot().unwrap();
    assert_eq!(snap.records.len(), N as usize);
    for r in &snap.records {
        assert_eq!(r.is_expunged(), gone[r.uid as usize], "uid {}", r.uid);
        if !r.is_expunged() {
            assert_eq!(
                r.flags.intersect(Flags::SYSTEM),
                model[r.uid as usize],
                "uid {}",
                r.uid
            );
        }
    }
    let h = &snap.header;
    let live = gone.iter().skip(1).filter(|g| !**g).count();
    assert_eq!(h.exists as usize, live);
    let report = mailstore::verify::verify_path(
        &s.mailbox_path(&u, &MailboxName::inbox()),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// `Store::still_names` (a re-SELECT, PROTOCOL.md §7): true while the
/// name's path holds the handle's index file; false once the mailbox was
/// renamed away with another renamed onto the name, deleted and created
/// again, repacked (a new file), or removed; never through a symlink.
#[test]
fn still_names_follows_the_file_at_the_name() {
    let (t, s) = store();
    let u = user();
    let work = MailboxName::new("Lists/Work").unwrap();
    let other = MailboxName::new("Other").unwrap();
    s.create_mailbox(&u, &work).unwrap();
    s.create_mailbox(&u, &other).unwrap();
    let mut m = s.open_mailbox(&u, &work).unwrap();
    m.append(&b"Subject: a\r\n\r\nx\r\n"[..], AppendOptions::default())
        .unwrap();
    assert!(s.still_names(&u, &work, &m).unwrap());
    assert!(!s.still_names(&u, &other, &m).unwrap());
    // A repack (through another handle, which takes the new file)
    // writes a new index file.
    let mut w = s.open_mailbox(&u, &work).unwrap();
    w.expunge(Some(&[1]), false).unwrap();
    w.repack().unwrap();
    assert!(!s.still_names(&u, &work, &m).unwrap());
    assert!(s.still_names(&u, &work, &w).unwrap());
    let m = w;
    // Renamed away, another renamed onto the name.
    let away = MailboxName::new("Away").unwrap();
    s.rename_mailbox(&u, &work, &away).unwrap();
    assert!(
        !s.still_names(&u, &work, &m).unwrap(),
        "nothing at the name"
    );
    assert!(
        s.still_names(&u, &away, &m).unwrap(),
        "the handle follows its file"
    );
    s.rename_mailbox(&u, &other, &work).unwrap();
    assert!(!s.still_names(&u, &work, &m).unwrap());
    // Deleted and created again.
    let o = s.open_mailbox(&u, &work).unwrap();
    s.delete_mailbox(&u, &work).unwrap();
    assert!(!s.still_names(&u, &work, &o).unwrap());
    s.create_mailbox(&u, &work).unwrap();
    assert!(!s.still_names(&u, &work, &o).unwrap());
    // A symlinked component is refused, never followed.
    let evil = MailboxName::new("Evil").unwrap();
    let target = s.root().join("alice").join("Away");
    std::os::unix::fs::symlink(&target, s.root().join("alice").join("Evil")).unwrap();
    assert!(
        s.still_names(&u, &evil, &m)
            .is_err_and(|e| matches!(e, Error::Symlink(_)))
    );
    drop(t);
}
