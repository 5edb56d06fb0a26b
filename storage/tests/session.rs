//! The session view's update rules, one test per rule, each with a second
//! handle (another session or a delivery) changing the mailbox.

mod session_support;

use mailstore::Error;
use mailstore::format::Flags;
use mailstore::mailbox::FlagOp;
use mailstore::session::{Allow, SeqSet, SeqSetError, SessionView, Update};
use session_support::{Client, append, open, store};

#[test]
fn no_change_is_no_update_and_keeps_the_mark() {
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    let mark = v.mark();
    for allow in [Allow::NoExpunge, Allow::AllUpdates] {
        assert_eq!(v.check(&mut a, allow).unwrap(), vec![]);
    }
    assert_eq!(v.mark(), mark);
    assert_eq!(v.len(), 3);
}

#[test]
fn new_mail_is_exists_after_any_command() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 1);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    append(&mut b, 2);
    // EXISTS may go out even while answering a FETCH by sequence number.
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(u, vec![Update::Exists(3)]);
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![1, 2, 3]);
    assert_eq!(v.uid_next(), 4);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn expunge_during_fetch_by_seq_is_held_then_released_at_noop() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 5);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    // Client sends "FETCH 1:5 (FLAGS BODY[])"; meanwhile another session
    // expunges UIDs 2 and 4.
    let seqs = v.resolve_seqs(&"1:*".parse().unwrap()).unwrap();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(b.expunge(Some(&[2, 4]), false).unwrap(), vec![2, 4]);
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(u, vec![], "no EXPUNGE while answering FETCH");
    c.apply(&v, &u);
    // Sequence numbers are stable: 2 and 4 still name UIDs 2 and 4, with
    // their cached data, and the body is still there (no repack yet).
    assert_eq!(v.len(), 5);
    assert_eq!((v.uid(2), v.uid(4), v.uid(5)), (Some(2), Some(4), Some(5)));
    assert!(v.is_expunged(2) && v.is_expunged(4) && !v.is_expunged(3));
    assert_eq!(v.record(4).unwrap().uid, 4);
    assert_eq!(a.read_message(2).unwrap(), b"Subject: m1\r\n\r\nbody 1\r\n");
    assert_eq!(v.held_expunges(), 2);
    // New mail meanwhile gets numbers after the held ones.
    append(&mut b, 1);
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(u, vec![Update::Exists(6)]);
    c.apply(&v, &u);
    assert_eq!(v.uid(6), Some(6));
    // NOOP: the expunges go out, highest first, valid one by one.
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert_eq!(u, vec![Update::Expunge(4), Update::Expunge(2)]);
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![1, 3, 5, 6]);
    assert_eq!(v.held_expunges(), 0);
    c.assert_matches_index(&v, &mut a);
    assert_eq!(v.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
}

#[test]
fn held_expunge_body_is_gone_after_a_repack_but_numbers_stay() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    b.expunge(Some(&[2]), false).unwrap();
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    c.apply(&v, &u);
    b.repack().unwrap();
    // The repack is a full refresh for `a`; UID 2 is still held, once.
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(u, vec![]);
    assert_eq!(v.uid(2), Some(2));
    assert!(v.is_expunged(2));
    // Documented: the cached record is served, the body is a NO.
    assert!(matches!(a.read_message(2), Err(Error::Expunged(2))));
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert_eq!(u, vec![Update::Expunge(2)]);
    c.apply(&v, &u);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn flag_change_by_another_session_is_fetch_with_modseq() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let out = b
        .store(&[2], FlagOp::Add, Flags::SEEN, &["$Work".into()], None)
        .unwrap();
    let modseq = out.changed[0].modseq;
    // FETCH FLAGS may go out while answering a STORE by sequence number.
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(
        u,
        vec![
            Update::Flags(vec!["$Work".into()]),
            Update::Fetch {
                seq: 2,
                uid: 2,
                flags: Flags::SEEN,
                keywords: vec!["$Work".into()],
                modseq,
            }
        ]
    );
    c.apply(&v, &u);
    assert_eq!(v.highest_modseq(), modseq);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn own_store_is_not_echoed() {
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let out = a
        .store(&[1, 3], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let u = v.apply_own_store(&a, &out);
    // The STORE response itself.
    assert_eq!(u.len(), 2);
    assert!(matches!(u[0], Update::Fetch { seq: 1, uid: 1, .. }));
    assert!(matches!(u[1], Update::Fetch { seq: 3, uid: 3, .. }));
    c.apply(&v, &u);
    assert_eq!(v.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
    c.assert_matches_index(&v, &mut a);
}

/// `fold_own_store` (the IMAP server's, which answers from the view)
/// leaves the view exactly as `apply_own_store` does and returns only the
/// keyword table's update, when the STORE grew it.
#[test]
fn folding_an_own_store_is_applying_it_without_the_responses() {
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 4);
    let mut applied = SessionView::open(&mut a).unwrap();
    let mut folded = SessionView::open(&mut a).unwrap();
    let kw = vec!["$Work".to_string()];
    let out = a
        .store(&[4, 2, 2], FlagOp::Add, Flags::FLAGGED, &kw, None)
        .unwrap();
    let u = applied.apply_own_store(&a, &out);
    let f = folded.fold_own_store(&a, &out);
    assert!(matches!(f, Some(Update::Flags(_))), "{f:?}");
    assert_eq!(u.first(), f.as_ref());
    assert!(
        matches!(u[1], Update::Fetch { seq: 2, uid: 2, .. }),
        "{u:?}"
    );
    assert!(
        matches!(u[2], Update::Fetch { seq: 4, uid: 4, .. }),
        "{u:?}"
    );
    assert_eq!(u.len(), 3);
    let out = a.store(&[1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    applied.apply_own_store(&a, &out);
    assert_eq!(folded.fold_own_store(&a, &out), None, "no new keyword");
    for seq in 1..=4 {
        assert_eq!(applied.record(seq), folded.record(seq), "seq {seq}");
    }
    assert_eq!(applied.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
    assert_eq!(folded.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
}

#[test]
fn own_store_without_apply_would_be_echoed() {
    // The counterpart of the test above: proves the check does see the
    // change, so "not echoed" comes from apply_own_store.
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 2);
    let mut v = SessionView::open(&mut a).unwrap();
    a.store(&[2], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert!(matches!(
        u.as_slice(),
        [Update::Fetch { seq: 2, uid: 2, .. }]
    ));
}

#[test]
fn own_store_folds_in_anothers_earlier_change_and_reports_later_ones() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut a, 2);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    b.store(&[1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    let out = a
        .store(&[1], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let u = v.apply_own_store(&a, &out);
    c.apply(&v, &u);
    assert_eq!(c.state[&1].flags, Flags::SEEN.union(Flags::FLAGGED));
    b.store(&[2], FlagOp::Add, Flags::DRAFT, &[], None).unwrap();
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert!(
        matches!(u.as_slice(), [Update::Fetch { seq: 2, uid: 2, .. }]),
        "{u:?}"
    );
    c.apply(&v, &u);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn own_expunge_is_reported_once() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut a, 4);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    // Someone else's expunge is held during a FETCH...
    b.expunge(Some(&[1]), false).unwrap();
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    c.apply(&v, &u);
    // ...then our EXPUNGE reports both, highest first.
    let out = a
        .store(&[3], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    let u = v.apply_own_store(&a, &out);
    c.apply(&v, &u);
    let gone = a.expunge(None, true).unwrap();
    assert_eq!(gone, vec![3]);
    let u = v.apply_own_expunge(&gone, Allow::AllUpdates);
    assert_eq!(u, vec![Update::Expunge(3), Update::Expunge(1)]);
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![2, 4]);
    // The next check does not report them again.
    assert_eq!(v.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
}

#[test]
fn repack_by_another_handle_is_a_full_refresh_by_uid() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 6);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    b.expunge(Some(&[2, 3, 5]), false).unwrap();
    b.repack().unwrap();
    append(&mut b, 1);
    b.store(&[6], FlagOp::Add, Flags::ANSWERED, &[], None)
        .unwrap();
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    let modseq = b
        .snapshot()
        .unwrap()
        .records
        .iter()
        .find(|r| r.uid == 6)
        .unwrap()
        .modseq;
    assert_eq!(
        u,
        vec![
            Update::Expunge(5),
            Update::Expunge(3),
            Update::Expunge(2),
            Update::Exists(4),
            Update::Fetch {
                seq: 3,
                uid: 6,
                flags: Flags::ANSWERED,
                keywords: vec![],
                modseq,
            },
        ]
    );
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![1, 4, 6, 7]);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn own_repack_is_a_full_refresh_too() {
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let gone = a.expunge(Some(&[1]), false).unwrap();
    let u = v.apply_own_expunge(&gone, Allow::NoExpunge);
    assert_eq!(u, vec![]);
    a.repack().unwrap();
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert_eq!(u, vec![Update::Expunge(1)]);
    c.apply(&v, &u);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn message_added_and_expunged_between_checks_never_appears() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 1);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    append(&mut b, 2); // UIDs 2, 3
    b.expunge(Some(&[2]), false).unwrap();
    let u = v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(u, vec![Update::Exists(2)]);
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![1, 3]);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn flag_change_on_a_held_expunge_is_not_fetched() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 2);
    let mut v = SessionView::open(&mut a).unwrap();
    b.store(&[1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    b.expunge(Some(&[1]), false).unwrap();
    assert_eq!(v.check(&mut a, Allow::NoExpunge).unwrap(), vec![]);
    assert!(v.is_expunged(1));
}

#[test]
fn many_expunges_are_numbered_for_one_by_one_application() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 20);
    let mut v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let gone: Vec<u32> = (1..=20).filter(|u| u % 3 != 0).collect();
    b.expunge(Some(&gone), false).unwrap();
    append(&mut b, 2);
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    c.apply(&v, &u);
    assert_eq!(c.uids, vec![3, 6, 9, 12, 15, 18, 21, 22]);
    c.assert_matches_index(&v, &mut a);
}

#[test]
fn deleted_mailbox_is_an_error() {
    let (_t, s) = store();
    let name = mailstore::MailboxName::new("Trash").unwrap();
    s.create_mailbox(&session_support::user(), &name).unwrap();
    let mut a = s.open_mailbox(&session_support::user(), &name).unwrap();
    let mut v = SessionView::open(&mut a).unwrap();
    s.delete_mailbox(&session_support::user(), &name).unwrap();
    assert!(matches!(
        v.check(&mut a, Allow::AllUpdates),
        Err(Error::MailboxDeleted)
    ));
}

#[test]
fn sequence_sets_resolve_against_the_clients_numbers() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    let mut v = SessionView::open(&mut a).unwrap();
    let all: SeqSet = "1:*".parse().unwrap();
    assert_eq!(v.resolve_seqs(&all), Err(SeqSetError::Empty));
    assert_eq!(v.resolve_uids(&all), vec![]);
    append(&mut b, 6);
    b.expunge(Some(&[2, 3]), false).unwrap();
    v.check(&mut a, Allow::AllUpdates).unwrap(); // view: UIDs 1,4,5,6
    let set = |t: &str| t.parse::<SeqSet>().unwrap();
    assert_eq!(v.resolve_seqs(&set("*:2,1")).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(v.resolve_seqs(&set("3,3,1")).unwrap(), vec![1, 3]);
    assert_eq!(
        v.resolve_seqs(&set("5")),
        Err(SeqSetError::OutOfRange(5, 4))
    );
    assert_eq!(v.resolve_uids(&set("2:4")), vec![(2, 4)]);
    assert_eq!(v.resolve_uids(&set("100:*")), vec![(4, 6)]);
    assert_eq!(v.resolve_uids(&set("*")), vec![(4, 6)]);
    assert_eq!(
        v.resolve_uids(&set("1,5:6,99")),
        vec![(1, 1), (3, 5), (4, 6)]
    );
    for bad in ["", "0", "1:", "a", "1,,2", "01", "-1", "1:2:3"] {
        assert!(bad.parse::<SeqSet>().is_err(), "{bad:?} accepted");
    }
    // Held expunges keep their numbers for seq sets too.
    b.expunge(Some(&[5]), false).unwrap();
    v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(v.resolve_seqs(&set("1:*")).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(v.resolve_uids(&set("5")), vec![(3, 5)]);
    let names: Vec<(u32, u32, bool)> = v.iter().map(|m| (m.seq, m.uid, m.expunged)).collect();
    assert_eq!(
        names,
        vec![(1, 1, false), (2, 4, false), (3, 5, true), (4, 6, false)]
    );
}

#[test]
fn own_store_with_a_new_keyword_announces_it_first() {
    let (_t, s) = store();
    let mut a = open(&s);
    append(&mut a, 1);
    let mut v = SessionView::open(&mut a).unwrap();
    let out = a
        .store(&[1], FlagOp::Add, Flags::empty(), &["$Todo".into()], None)
        .unwrap();
    let u = v.apply_own_store(&a, &out);
    assert_eq!(u[0], Update::Flags(vec!["$Todo".into()]));
    assert!(matches!(&u[1], Update::Fetch { keywords, .. } if keywords == &["$Todo".to_string()]));
    assert_eq!(v.check(&mut a, Allow::AllUpdates).unwrap(), vec![]);
}

/// `check_if_free` does not wait behind a writer that holds the index
/// lock, changes nothing then, and the next check reports what was
/// committed (RFC 3501 section 7: updates may be deferred to a later
/// command, never lost).
#[test]
fn check_if_free_defers_past_a_busy_index_and_loses_nothing() {
    use mailstore::internals::lock::{LockKind, hold};
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 1);
    let mut v = SessionView::open(&mut a).unwrap();
    let mark = v.mark();
    append(&mut b, 1);
    // Another open file description of the index: its lock excludes `a`.
    let guard = hold(
        a.index_path(),
        LockKind::Exclusive,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    let t = std::time::Instant::now();
    assert_eq!(v.check_if_free(&mut a, Allow::AllUpdates).unwrap(), None);
    // Did not hang: a waiting check would give up only after the
    // handle's lock timeout.
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(v.mark(), mark);
    assert_eq!(v.len(), 1);
    drop(guard);
    assert_eq!(
        v.check_if_free(&mut a, Allow::AllUpdates).unwrap(),
        Some(vec![Update::Exists(2)])
    );
}

/// `count_in_uid_range` (what `* n RECENT` is counted with, RFC 3501
/// 7.3.2) counts the view's messages in a UID range, gaps and held
/// expunges included, the same while the view is compact.
#[test]
fn count_in_uid_range_counts_the_view_by_uid() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    let uids = append(&mut b, 10);
    // A gap: UIDs 4 and 5 expunged before the view opens.
    store_flags(&mut b, &[uids[3], uids[4]], Flags::DELETED);
    b.expunge(None, true).unwrap();
    let mut v = SessionView::open(&mut a).unwrap();
    let count = |v: &SessionView| {
        [
            (1, 3),
            (1, 4),
            (4, 5),
            (3, 6),
            (6, 10),
            (9, 12),
            (11, 20),
            (0, u32::MAX),
            (5, 4),
        ]
        .map(|(lo, hi)| v.count_in_uid_range(lo, hi))
    };
    let expect = [3, 3, 0, 2, 5, 2, 0, 8, 0];
    assert_eq!(count(&v), expect);
    // Another session expunges 7; held during a FETCH by sequence number,
    // it still counts.
    store_flags(&mut b, &[uids[6]], Flags::DELETED);
    b.expunge(None, true).unwrap();
    v.check(&mut a, Allow::NoExpunge).unwrap();
    assert_eq!(v.held_expunges(), 1);
    assert_eq!(count(&v), expect);
    v.check(&mut a, Allow::AllUpdates).unwrap();
    let expect = [3, 3, 0, 2, 4, 2, 0, 7, 0];
    assert_eq!(count(&v), expect);
    assert!(v.compact());
    assert_eq!(count(&v), expect);
}

fn store_flags(m: &mut mailstore::Mailbox, uids: &[u32], f: Flags) {
    m.store(uids, FlagOp::Add, f, &[], None).unwrap();
}

/// SELECT after SELECT: a view built in the memory of the one it replaces
/// (`open_replacing`) is the view a fresh `open` gives, whatever the old
/// one held (another mailbox, more or fewer messages, held expunges).
#[test]
fn a_view_opened_in_place_of_another_is_a_fresh_view() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 2500);
    let mut old = SessionView::open(&mut a).unwrap();
    // Hold two expunges in the old view, change flags, add mail.
    assert_eq!(b.expunge(Some(&[7, 1800]), false).unwrap(), vec![7, 1800]);
    old.check(&mut a, Allow::NoExpunge).unwrap();
    b.store(&[3, 2000], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    append(&mut b, 10);
    let summary = |v: &SessionView| -> Vec<(u32, u32, Flags)> {
        v.iter()
            .map(|m| (m.seq, m.record.uid, m.record.flags))
            .collect()
    };
    let fresh = SessionView::open(&mut a).unwrap();
    let again = SessionView::open_replacing(&mut a, Some(old)).unwrap();
    assert_eq!(summary(&again), summary(&fresh));
    assert_eq!(again.len(), 2508);
    assert_eq!(
        (again.uid_next(), again.mark()),
        (fresh.uid_next(), fresh.mark())
    );
    // Then a smaller mailbox in the memory of that one.
    b.expunge(None, false).unwrap();
    let fresh = SessionView::open(&mut a).unwrap();
    let smaller = SessionView::open_replacing(&mut a, Some(again)).unwrap();
    assert_eq!(summary(&smaller), summary(&fresh));
}

/// `seqs_of_uid_range` and `iter_seqs` (a SEARCH bounded by a UID or
/// sequence set) agree with a walk over the whole view, held expunges
/// and a view of several chunks included.
#[test]
fn uid_ranges_and_sequence_spans_agree_with_a_walk() {
    let (_t, s) = store();
    let mut writer = open(&s);
    append(&mut writer, 2500);
    writer.expunge(Some(&[2, 1000, 1001]), false).unwrap();
    let mut m = open(&s);
    let mut view = SessionView::open(&mut m).unwrap();
    // Held: expunged by another session after this view looked.
    writer.expunge(Some(&[1500, 2048]), false).unwrap();
    view.check(&mut m, Allow::NoExpunge).unwrap();
    let all: Vec<(u32, u32)> = view.iter().map(|m| (m.seq, m.uid)).collect();
    assert_eq!(all.len(), 2497);
    for (lo, hi) in [
        (1, 1),
        (1, 2),
        (2, 2),
        (999, 1002),
        (1000, 1001),
        (1024, 1026),
        (1500, 1500),
        (2040, 2600),
        (2501, 3000),
        (0, u32::MAX),
        (7, 3),
    ] {
        let inside: Vec<u32> = all
            .iter()
            .filter(|(_, u)| (lo..=hi).contains(u))
            .map(|(s, _)| *s)
            .collect();
        let want = inside.first().copied().zip(inside.last().copied());
        assert_eq!(view.seqs_of_uid_range(lo, hi), want, "UIDs {lo}..={hi}");
    }
    for (lo, hi) in [
        (1, 1),
        (0, 5),
        (1020, 1030),
        (2490, 9999),
        (5, 4),
        (3000, 3001),
    ] {
        let walk: Vec<(u32, u32)> = all
            .iter()
            .copied()
            .filter(|(s, _)| (lo..=hi).contains(s))
            .collect();
        let span: Vec<(u32, u32)> = view.iter_seqs(lo, hi).map(|m| (m.seq, m.uid)).collect();
        assert_eq!(span, walk, "seqs {lo}..={hi}");
    }
    assert!(view.iter_seqs(1500, 1500).all(|m| m.seq == 1500));
    assert!(view.iter().any(|m| m.expunged), "held expunges in the view");
}
