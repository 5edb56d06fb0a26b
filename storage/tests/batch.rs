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

fn expunge_op(uids: &[u32], require_deleted: bool) -> BatchOp {
    BatchOp::Expunge {
        uids: Some(uids.to_vec()),
        require_deleted,
        hint: Vec::new(),
    }
}

/// The outcome of a batch of the one STORE step `op`.
fn lone_store(m: &mut mailstore::Mailbox, op: BatchOp) -> mailstore::mailbox::StoreOutcome {
    match m.write_batch(|| vec![op]).unwrap().pop() {
        Some(BatchOutcome::Store(o)) => o,
        other => panic!("{other:?}"),
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
    let BatchOutcome::Expunge { gone: e, .. } = &out[4] else {
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
                expunge_op(&[2], true),
            ]
        })
        .unwrap();
    let BatchOutcome::Store(a) = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(a.generation, h0.generation);
    let BatchOutcome::Expunge { gone: e, .. } = &out[1] else {
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

/// A commit of one step alone carries its span (where the index was and
/// where the commit left it), so a session view that was current folds
/// its own STORE or EXPUNGE and is current after it without reading the
/// step back; a view that was behind stays where it was and its next
/// check reports the other change. A batch of several steps carries no
/// span: each step's outcome is only part of what changed.
#[test]
fn a_lone_step_carries_its_commits_span() {
    use mailstore::session::{Allow, SessionView, Update};
    let (_t, s, mut m) = inbox_with(5);
    let mut view = SessionView::open(&mut m).unwrap();

    // Current view: after the fold there is nothing to read.
    let o = &lone_store(&mut m, store_op(&[2], FlagOp::Add, Flags::FLAGGED, None));
    let span = o.span.expect("a lone step's span");
    let h = m.header().unwrap();
    assert_eq!(span.before, view.mark());
    assert_eq!(span.after, m.mark_of(&h));
    view.fold_own_store(&m, o);
    assert_eq!(view.mark(), span.after);
    assert_eq!(view.highest_modseq(), h.highestmodseq);
    assert!(m.changes_since(&view.mark()).unwrap().is_none());

    // A step that changes nothing: the span is empty, the view stays.
    let o = &lone_store(&mut m, store_op(&[2], FlagOp::Add, Flags::FLAGGED, None));
    let span = o.span.expect("a lone step's span");
    assert_eq!(span.before, span.after);
    view.fold_own_store(&m, o);
    assert!(m.changes_since(&view.mark()).unwrap().is_none());

    // Another handle changes message 4 first: the view is behind, does
    // not follow the span, and its next check reports message 4.
    let mut other = reopen(&s);
    other
        .store(&[4], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let o = &lone_store(&mut m, store_op(&[3], FlagOp::Add, Flags::SEEN, None));
    assert_ne!(o.span.expect("a lone step's span").before, view.mark());
    view.fold_own_store(&m, o);
    let ups = view.check(&mut m, Allow::AllUpdates).unwrap();
    assert!(
        matches!(ups.as_slice(), [Update::Fetch { seq: 4, .. }]),
        "{ups:?}"
    );

    // A lone expunge: the view follows and reports the expunge itself.
    let out = m.write_batch(|| vec![expunge_op(&[5], false)]).unwrap();
    let BatchOutcome::Expunge { gone, span } = &out[0] else {
        panic!("{out:?}")
    };
    assert_eq!(span.expect("a lone step's span").before, view.mark());
    let ups = view.apply_own_expunge_commit(gone, *span, Allow::AllUpdates);
    assert_eq!(ups, vec![Update::Expunge(5)]);
    assert!(m.changes_since(&view.mark()).unwrap().is_none());

    // Two steps in one commit: no span on either.
    let out = m
        .write_batch(|| {
            vec![
                store_op(&[1], FlagOp::Add, Flags::ANSWERED, None),
                expunge_op(&[4], false),
            ]
        })
        .unwrap();
    for o in &out {
        match o {
            BatchOutcome::Store(o) => assert_eq!(o.span, None),
            BatchOutcome::Expunge { span, .. } => assert_eq!(*span, None),
        }
    }
}

/// `Mailbox::store` (keywords) carries its span too, also when only the
/// keyword table grew; the view learns the new name from the handle.
#[test]
fn a_keyword_store_carries_its_span() {
    use mailstore::session::SessionView;
    let (_t, _s, mut m) = inbox_with(3);
    let mut view = SessionView::open(&mut m).unwrap();
    let o = m
        .store(&[1], FlagOp::Add, Flags::empty(), &["$Work".into()], None)
        .unwrap();
    let span = o.span.expect("the call's own commit");
    assert_eq!(span.before, view.mark());
    view.fold_own_store(&m, &o);
    let h = m.header().unwrap();
    assert_eq!(view.mark(), m.mark_of(&h));
    assert!(m.changes_since(&view.mark()).unwrap().is_none());
    assert_eq!(view.keywords(), ["$Work".to_string()]);
    // Removing a keyword no message has: the table is as it was, no
    // record changes, the span is empty.
    let o = m
        .store(
            &[2],
            FlagOp::Remove,
            Flags::empty(),
            &["$Work".into()],
            None,
        )
        .unwrap();
    let span = o.span.expect("the call's own commit");
    assert_eq!(span.before, span.after);
}

/// A keyword another handle put on a message (a new name in `.meta`)
/// after this handle last read its keyword table: a batch that stores a
/// flag on that message hands back the record with the keyword's bit, and
/// the view that folds it must know the bit's name.
#[test]
fn a_batch_knows_a_keyword_added_since_the_handle_last_looked() {
    use mailstore::session::{SessionView, Update};
    let (_t, s, mut m) = inbox_with(2);
    let mut view = SessionView::open(&mut m).unwrap();
    let mut other = reopen(&s);
    other
        .store(&[1], FlagOp::Add, Flags::empty(), &["$Work".into()], None)
        .unwrap();
    let o = lone_store(&mut m, store_op(&[1], FlagOp::Add, Flags::SEEN, None));
    let ups = view.apply_own_store(&m, &o);
    let Some(Update::Fetch { keywords, .. }) = ups.last() else {
        panic!("{ups:?}")
    };
    assert_eq!(keywords, &["$Work".to_string()]);
    assert_eq!(view.keywords(), ["$Work".to_string()]);
}
