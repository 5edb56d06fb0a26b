//! COPY and MOVE through the public API: UID mapping, all-or-nothing on
//! expunged UIDs, keyword mapping, quota refusal, opposite moves.

use std::time::Duration;

use mailstore::format::Flags;
use mailstore::mailbox::{AppendOptions, FlagOp, Mailbox};
use mailstore::transfer::{self, Quota};
use mailstore::{Error, MailboxName, Options, Store, UserName};

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        lock_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let s = Store::open(&dir.path().join("spool"), opts).unwrap();
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    (dir, s)
}

fn user() -> UserName {
    UserName::new("alice").unwrap()
}

fn mbox(s: &Store, name: &str) -> Mailbox {
    let n = MailboxName::new(name).unwrap();
    s.ensure_mailbox(&user(), &n).unwrap();
    s.open_mailbox(&user(), &n).unwrap()
}

fn msg(i: u32) -> Vec<u8> {
    format!("Message-ID: <m{i}@test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn add(m: &mut Mailbox, i: u32, flags: Flags, kws: &[&str]) -> u32 {
    m.append(
        &msg(i)[..],
        AppendOptions {
            flags,
            keywords: kws.iter().map(|k| k.to_string()).collect(),
            internal_date: Some(1_600_000_000 + i as i64),
            ..Default::default()
        },
    )
    .unwrap()
}

/// (uid, flags, keyword names, bytes, internal date) of a live message.
type Live = (u32, Flags, Vec<String>, Vec<u8>, i64);

fn live(m: &mut Mailbox) -> Vec<Live> {
    let snap = m.snapshot().unwrap();
    snap.records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| {
            let kw = r
                .keywords
                .iter()
                .map(|i| snap.meta.keywords[i].clone())
                .collect();
            (
                r.uid,
                r.flags,
                kw,
                m.read_message(r.uid).unwrap(),
                r.internal_date,
            )
        })
        .collect()
}

/// No staged file is left over: the only ones allowed are committed
/// appends' second names waiting for the next settle (two links).
fn stage_is_empty(s: &Store, name: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let p = s
        .mailbox_path(&user(), &MailboxName::new(name).unwrap())
        .join(".stage");
    std::fs::read_dir(p)
        .unwrap()
        .all(|e| e.unwrap().metadata().unwrap().nlink() >= 2)
}

#[test]
fn copy_maps_uids_and_keeps_flags_keywords_dates() {
    let (_t, s) = store();
    let mut a = mbox(&s, "INBOX");
    let mut b = mbox(&s, "Archive");
    add(&mut a, 1, Flags::SEEN, &["$Junk", "Work"]);
    add(&mut a, 2, Flags::empty(), &[]);
    add(&mut a, 3, Flags::FLAGGED.union(Flags::DELETED), &["Work"]);
    // The destination already knows "Work" at another index, and has
    // its own messages so the new UIDs do not start at 1.
    add(&mut b, 10, Flags::empty(), &["Other", "work"]);
    add(&mut b, 11, Flags::empty(), &[]);
    let a_before = live(&mut a);
    let out = transfer::copy(&mut a, &[3, 1], &mut b, None).unwrap();
    assert_eq!(out.map, vec![(1, 3), (3, 4)]);
    assert_eq!(out.uidvalidity, b.header().unwrap().uidvalidity);
    assert_eq!(live(&mut a), a_before, "COPY leaves the source alone");
    let bl = live(&mut b);
    assert_eq!(bl.len(), 4);
    let c1 = &bl[2];
    assert_eq!((c1.0, c1.1), (3, Flags::SEEN));
    let mut k = c1.2.clone();
    k.sort();
    // "Work" maps onto the destination's existing (case-insensitive) "work".
    assert_eq!(k, vec!["$Junk".to_string(), "work".to_string()]);
    assert_eq!(c1.3, msg(1));
    assert_eq!(c1.4, 1_600_000_001);
    let c3 = &bl[3];
    assert_eq!(
        (c3.0, c3.1, c3.2.clone()),
        (
            4,
            Flags::FLAGGED.union(Flags::DELETED),
            vec!["work".to_string()]
        )
    );
    assert_eq!(c3.3, msg(3));
    let h = b.header().unwrap();
    assert_eq!(
        (h.exists, h.last_uid, h.flagged, h.deleted, h.seen),
        (4, 4, 1, 1, 1)
    );
    // New MODSEQ for the copies, above everything before.
    let snap = b.snapshot().unwrap();
    assert!(snap.records[2].modseq > snap.records[1].modseq);
    assert_eq!(snap.records[2].modseq, h.highestmodseq);
    assert!(stage_is_empty(&s, "Archive"));
    // The copy is independent of the source afterwards.
    a.store(&[1], FlagOp::Add, Flags::ANSWERED, &[], None)
        .unwrap();
    a.expunge(Some(&[1]), false).unwrap();
    a.repack().unwrap();
    assert_eq!(b.read_message(3).unwrap(), msg(1));
}

#[test]
fn move_expunges_source_and_returns_mapping() {
    let (_t, s) = store();
    let mut a = mbox(&s, "INBOX");
    let mut b = mbox(&s, "Trash");
    for i in 1..=4 {
        add(&mut a, i, Flags::empty(), &["K"]);
    }
    let mut watcher = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mark = {
        let h = watcher.header().unwrap();
        watcher.mark_of(&h)
    };
    let out = transfer::move_messages(&mut a, &[2, 4], &mut b, None).unwrap();
    assert_eq!(out.map, vec![(2, 1), (4, 2)]);
    assert_eq!(out.source_uids(), vec![2, 4]);
    assert_eq!(out.dest_uids(), vec![1, 2]);
    let al: Vec<u32> = live(&mut a).iter().map(|x| x.0).collect();
    assert_eq!(al, vec![1, 3]);
    let bl = live(&mut b);
    assert_eq!(
        bl.iter().map(|x| x.3.clone()).collect::<Vec<_>>(),
        vec![msg(2), msg(4)]
    );
    assert_eq!(bl[0].2, vec!["K".to_string()]);
    let h = a.header().unwrap();
    assert_eq!((h.exists, h.num_records), (2, 4));
    assert_eq!(h.flags, 0, "no pending-move flag after a completed move");
    assert_eq!(b.header().unwrap().flags, 0);
    // Another session sees the sources as expunged records.
    let ch = watcher.changes_since(&mark).unwrap().unwrap();
    let gone: Vec<u32> = ch
        .records
        .iter()
        .filter(|r| r.is_expunged())
        .map(|r| r.uid)
        .collect();
    assert_eq!(gone, vec![2, 4]);
    // Journals are gone.
    for name in ["INBOX", "Trash"] {
        let p = s
            .mailbox_path(&user(), &MailboxName::new(name).unwrap())
            .join(".move");
        assert!(!p.exists(), "{name} journal left behind");
    }
    assert!(stage_is_empty(&s, "Trash"));
}

#[test]
fn expunged_uid_fails_the_whole_operation() {
    let (_t, s) = store();
    let mut a = mbox(&s, "INBOX");
    let mut b = mbox(&s, "Dst");
    for i in 1..=3 {
        add(&mut a, i, Flags::empty(), &[]);
    }
    a.expunge(Some(&[2]), false).unwrap();
    let ha = a.header().unwrap();
    let hb = b.header().unwrap();
    for op in ["copy", "move"] {
        let r = if op == "copy" {
            transfer::copy(&mut a, &[1, 2, 3], &mut b, None)
        } else {
            transfer::move_messages(&mut a, &[1, 2, 3], &mut b, None)
        };
        assert!(matches!(r, Err(Error::Expunged(2))), "{op}: {r:?}");
        // A UID that never existed is reported the same way.
        let r = transfer::copy(&mut a, &[1, 99], &mut b, None);
        assert!(matches!(r, Err(Error::Expunged(99))), "{op}: {r:?}");
        assert_eq!(a.header().unwrap(), ha, "{op}: source unchanged");
        assert_eq!(b.header().unwrap(), hb, "{op}: destination unchanged");
        assert!(stage_is_empty(&s, "Dst"));
    }
    // Expunged after the source was read but before the locks: the
    // repack removed the file, so even staging fails cleanly.
    a.repack().unwrap();
    let r = transfer::move_messages(&mut a, &[2], &mut b, None);
    assert!(matches!(r, Err(Error::Expunged(2))), "{r:?}");
    assert_eq!(b.header().unwrap(), hb);
}

#[test]
fn quota_refusal_leaves_both_unchanged() {
    let (_t, s) = store();
    let mut a = mbox(&s, "INBOX");
    let mut b = mbox(&s, "Dst");
    add(&mut a, 1, Flags::empty(), &["NewKw"]);
    add(&mut a, 2, Flags::empty(), &[]);
    let size: u64 = a.snapshot().unwrap().records.iter().map(|r| r.size).sum();
    let ha = a.header().unwrap();
    let hb = b.header().unwrap();
    let q = Quota {
        used: 1000,
        limit: 1000 + size - 1,
    };
    for mv in [false, true] {
        let r = if mv {
            transfer::move_messages(&mut a, &[1, 2], &mut b, Some(q))
        } else {
            transfer::copy(&mut a, &[1, 2], &mut b, Some(q))
        };
        assert!(
            matches!(r, Err(Error::OverQuota { used: 1000, .. })),
            "{r:?}"
        );
        assert_eq!(a.header().unwrap(), ha);
        assert_eq!(b.header().unwrap(), hb);
        assert!(b.keyword_names().is_empty(), "no keyword added on refusal");
        assert!(stage_is_empty(&s, "Dst"));
    }
    let dir = s.mailbox_path(&user(), &MailboxName::new("Dst").unwrap());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
    // Exactly at the limit is allowed.
    let q = Quota {
        used: 1000,
        limit: 1000 + size,
    };
    transfer::copy(&mut a, &[1, 2], &mut b, Some(q)).unwrap();
}

/// RFC 3501 6.4.7 and RFC 6851 3.3 allow COPY and MOVE into the selected
/// mailbox: a copy appends; a move appends and expunges the originals.
#[test]
fn same_mailbox_copy_appends_and_move_moves() {
    let (_t, s) = store();
    let mut a = mbox(&s, "INBOX");
    let mut a2 = mbox(&s, "INBOX");
    add(&mut a, 1, Flags::SEEN, &["X"]);
    let out = transfer::copy(&mut a, &[1], &mut a2, None).unwrap();
    assert_eq!(out.map, vec![(1, 2)]);
    let l = live(&mut a);
    assert_eq!(l.len(), 2);
    assert_eq!(
        (l[1].1, l[1].2.clone(), l[1].3.clone()),
        (Flags::SEEN, vec!["X".to_string()], msg(1))
    );
    let out = transfer::move_messages(&mut a, &[1], &mut a2, None).unwrap();
    assert_eq!(out.map, vec![(1, 3)]);
    let l = live(&mut a);
    assert_eq!(l.iter().map(|m| m.0).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        (l[1].1, l[1].2.clone(), l[1].3.clone()),
        (Flags::SEEN, vec!["X".to_string()], msg(1))
    );
    let h = a.header().unwrap();
    assert!(!h.has_pending_move());
    assert_eq!((h.exists, h.last_uid, h.seen), (2, 3, 2));
    assert!(
        !s.mailbox_path(&user(), &MailboxName::inbox())
            .join(".move")
            .exists()
    );
    // All or nothing here too.
    let r = transfer::move_messages(&mut a, &[2, 1], &mut a2, None);
    assert!(matches!(r, Err(Error::Expunged(1))), "{r:?}");
    assert_eq!(live(&mut a).len(), 2);
    // Empty UID list: nothing to do, still reports UIDVALIDITY.
    let mut b = mbox(&s, "B");
    let out = transfer::move_messages(&mut a, &[], &mut b, None).unwrap();
    assert!(out.map.is_empty());
    assert_eq!(out.uidvalidity, b.header().unwrap().uidvalidity);
}

/// Two threads, each with its own handles (OFD locks exclude each other
/// like processes), moving in opposite directions as fast as they can.
/// Lock-order inversion would end in LockTimeout; none may happen.
#[test]
fn opposite_moves_do_not_deadlock() {
    let (t, s) = store();
    let root = t.path().join("spool");
    {
        let mut a = mbox(&s, "A");
        let mut b = mbox(&s, "B");
        for i in 1..=20 {
            add(&mut a, i, Flags::empty(), &[]);
            add(&mut b, 100 + i, Flags::empty(), &[]);
        }
    }
    let opts = Options {
        lock_timeout: Duration::from_secs(5),
        durability: mailstore::Durability::Relaxed,
    };
    let mut threads = Vec::new();
    for dir in 0..2 {
        let root = root.clone();
        let opts = opts.clone();
        threads.push(std::thread::spawn(move || {
            let s = Store::open(&root, opts).unwrap();
            let (from, to) = if dir == 0 { ("A", "B") } else { ("B", "A") };
            let mut src = s
                .open_mailbox(&user(), &MailboxName::new(from).unwrap())
                .unwrap();
            let mut dst = s
                .open_mailbox(&user(), &MailboxName::new(to).unwrap())
                .unwrap();
            let mut moved = 0;
            for _ in 0..150 {
                let snap = src.snapshot().unwrap();
                let uids: Vec<u32> = snap
                    .records
                    .iter()
                    .filter(|r| !r.is_expunged())
                    .map(|r| r.uid)
                    .take(2)
                    .collect();
                if uids.is_empty() {
                    continue;
                }
                match transfer::move_messages(&mut src, &uids, &mut dst, None) {
                    Ok(o) => moved += o.map.len(),
                    Err(e) => panic!("move {from}->{to}: {e}"),
                }
            }
            moved
        }));
    }
    let moved: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(moved > 0);
    let mut a = mbox(&s, "A");
    let mut b = mbox(&s, "B");
    let mut all: Vec<Vec<u8>> = live(&mut a)
        .into_iter()
        .chain(live(&mut b))
        .map(|x| x.3)
        .collect();
    all.sort();
    let mut want: Vec<Vec<u8>> = (1..=20).flat_map(|i| [msg(i), msg(100 + i)]).collect();
    want.sort();
    assert_eq!(all, want, "every message exactly once");
}

/// A file left at the destination's next UID by a crashed commit is not
/// replaced by COPY's rename: it goes to `.quarantine/` (files win over
/// the index), and the copy lands under that UID.
#[test]
fn copy_keeps_debris_at_the_next_uid_in_quarantine() {
    let (_t, s) = store();
    let mut a = mbox(&s, "A");
    let mut b = mbox(&s, "B");
    add(&mut a, 1, Flags::empty(), &[]);
    let dir = s.mailbox_path(&user(), &MailboxName::new("B").unwrap());
    std::fs::write(dir.join("1."), b"Subject: debris\r\n\r\nx\r\n").unwrap();
    let out = transfer::copy(&mut a, &[1], &mut b, None).unwrap();
    assert_eq!(out.map, vec![(1, 1)]);
    assert_eq!(b.read_message(1).unwrap(), msg(1));
    let kept = mailstore::quarantine::list(&mailstore::Dir::open_root(&dir).unwrap()).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].original, "1.");
}
