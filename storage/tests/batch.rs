//! `Mailbox::write_batch`: several flag changes and expunges under one
//! lock hold and one flush (docs/PROTOCOL.md §4a), each step with its own
//! MODSEQ (RFC 7162 §3.1: every change gets a MODSEQ above every earlier
//! one), one new generation for the batch.

use mailstore::format::Flags;
use mailstore::mailbox::{AppendOptions, BatchOp, BatchOutcome, FlagOp};
use mailstore::{MailboxName, Options, Store, UserName};

fn inbox_with(n: u32) -> (tempfile::TempDir, Store, mailstore::Mailbox) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("spool"), Options::default()).unwrap();
    let u = UserName::new("alice").unwrap();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let mut m = s.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    for i in 1..=n {
        let body = format!("Subject: {i}\r\n\r\nbody {i}\r\n");
        assert_eq!(
            m.append(body.as_bytes(), AppendOptions::default()).unwrap(),
            i
        );
    }
    (dir, s, m)
}

fn reopen(s: &Store) -> mailstore::Mailbox {
    s.open_mailbox(&UserName::new("alice").unwrap(), &MailboxName::inbox())
        .unwrap()
}

fn store_op(uids: &[u32], op: FlagOp, flags: Flags, since: Option<u64>) -> BatchOp {
    BatchOp::Store {
        uids: uids.to_vec(),
        op,
        flags,
        unchanged_since: since,
    }
}

/// Steps apply in order, each to what the steps before it left: each
/// changing step gets the next MODSEQ (RFC 7162 §3.1.3: UNCHANGEDSINCE
/// compares against the earlier step's MODSEQ), a step that changes
/// nothing takes none, and the batch is one generation, durable and seen
/// by another handle's `changes_since`.
#[test]
fn steps_apply_in_order_with_their_own_modseq() {
    let (_t, s, mut m) = inbox_with(5);
    let mut other = reopen(&s);
    let before = other.snapshot().unwrap();
    let h0 = m.header().unwrap();
    let base = h0.highestmodseq;
    let out = m
        .write_batch(|| {
            vec![
                store_op(&[1, 2], FlagOp::Add, Flags::SEEN, None),
                // Changes nothing: 1 is \Seen already; takes no MODSEQ.
                store_op(&[1], FlagOp::Add, Flags::SEEN, None),
                // UID 2 changed at base + 1, above base: refused.
                store_op(&[2, 3], FlagOp::Add, Flags::DELETED, Some(base)),
                store_op(&[1, 9], FlagOp::Add, Flags::DELETED, None),
                BatchOp::Expunge {
                    uids: None,
                    require_deleted: true,
                    hint: Vec::new(),
                },
            ]
        })
        .unwrap();
    assert_eq!(out.len(), 5);
    let h = m.header().unwrap();
    assert_eq!(h.generation, h0.generation + 1, "one generation per batch");
    assert_eq!(h.highestmodseq, base + 4);
    let BatchOutcome::Store(a) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(
        a.changed
            .iter()
            .map(|r| (r.uid, r.modseq))
            .collect::<Vec<_>>(),
        vec![(1, base + 1), (2, base + 1)]
    );
    assert_eq!(a.generation, h.generation);
    let BatchOutcome::Store(b) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(b.changed.is_empty() && b.missing.is_empty());
    let BatchOutcome::Store(c) = &out[2] else {
        panic!("{out:?}")
    };
    assert_eq!(c.modified, vec![2]);
    assert_eq!(
        c.changed
            .iter()
            .map(|r| (r.uid, r.modseq))
            .collect::<Vec<_>>(),
        vec![(3, base + 2)]
    );
    let BatchOutcome::Store(d) = &out[3] else {
        panic!("{out:?}")
    };
    assert_eq!(d.missing, vec![9]);
    assert_eq!(d.changed[0].modseq, base + 3);
    assert!(
        d.changed[0]
            .flags
            .contains(Flags::SEEN.union(Flags::DELETED))
    );
    let BatchOutcome::Expunge(e) = &out[4] else {
        panic!("{out:?}")
    };
    assert_eq!(e, &vec![1, 3]);

    // Durable and counted: a fresh handle reads the same records.
    let snap = reopen(&s).snapshot().unwrap();
    assert_eq!((snap.header.exists, snap.header.seen), (3, 1));
    let by_uid = |u: u32| snap.records.iter().find(|r| r.uid == u).unwrap().clone();
    assert!(by_uid(1).is_expunged() && by_uid(3).is_expunged());
    assert_eq!(by_uid(1).modseq, base + 4);
    assert_eq!((by_uid(2).flags, by_uid(2).modseq), (Flags::SEEN, base + 1));
    assert_eq!(by_uid(4).modseq, before.records[3].modseq);
    // Another session sees every change of the batch.
    let ch = other
        .changes_since(&other.mark_of(&before.header))
        .unwrap()
        .unwrap();
    let mut seen: Vec<u32> = ch.records.iter().map(|r| r.uid).collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 2, 3]);
}

/// A batch whose steps change nothing (or that collects no step) writes
/// nothing: no generation, no MODSEQ handed out.
#[test]
fn empty_or_unchanging_batch_writes_nothing() {
    let (_t, _s, mut m) = inbox_with(2);
    let h0 = m.header().unwrap();
    assert!(m.write_batch(Vec::new).unwrap().is_empty());
    let out = m
        .write_batch(|| {
            vec![
                store_op(&[1], FlagOp::Remove, Flags::SEEN, None),
                BatchOp::Expunge {
                    uids: Some(vec![2]),
                    require_deleted: true,
                    hint: Vec::new(),
                },
            ]
        })
        .unwrap();
    let BatchOutcome::Store(a) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(a.generation, h0.generation);
    let BatchOutcome::Expunge(e) = &out[1] else {
        panic!("{out:?}")
    };
    assert!(e.is_empty());
    assert_eq!(m.header().unwrap(), h0);
}

/// `collect` runs under the exclusive lock: a writer of another handle
/// cannot commit between the lock and the steps, so the MODSEQs of the
/// batch follow the header it locked.
#[test]
fn collect_runs_under_the_lock() {
    let (_t, s, mut m) = inbox_with(1);
    let mut other = reopen(&s);
    let out = m
        .write_batch(|| {
            assert!(other.lock_in_use(), "collect ran without the lock");
            vec![store_op(&[1], FlagOp::Add, Flags::FLAGGED, None)]
        })
        .unwrap();
    let BatchOutcome::Store(a) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(a.changed[0].modseq, other.header().unwrap().highestmodseq);
}
