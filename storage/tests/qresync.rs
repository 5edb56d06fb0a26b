//! QRESYNC support in the store (RFC 7162 3.2.5): what a client that was
//! away learns when it comes back with its last MODSEQ, before and after
//! a repack dropped the expunged records, and the VANISHED form of
//! expunge updates.

mod session_support;

use mailstore::format::{Flags, HEADER_SIZE, SLOT_OFFSETS};
use mailstore::mailbox::FlagOp;
use mailstore::session::{Allow, Resync, ResyncRequest, SessionView, Update};
use session_support::{Client, append, open, store};

/// The client's side of a QRESYNC SELECT: drops what vanished, takes the
/// FETCHed flags, then (as Thunderbird does) fetches the messages it has
/// not seen yet.
fn resync(c: &mut Client, view: &SessionView, r: &Resync) {
    let gone = |uid: u32| r.vanished.iter().any(|&(a, b)| a <= uid && uid <= b);
    c.uids.retain(|u| !gone(*u));
    c.state.retain(|u, _| !gone(*u));
    let fresh = Client::select(view);
    for seq in &r.changed {
        let uid = view.uid(*seq).unwrap();
        c.state.insert(uid, fresh.state[&uid].clone());
    }
    for uid in &fresh.uids {
        if !c.uids.contains(uid) {
            c.uids.push(*uid);
            c.state.insert(*uid, fresh.state[uid].clone());
        }
    }
    assert_eq!(c.uids, fresh.uids, "client's UIDs after resync");
}

/// Another session flags one message, expunges two, and two arrive.
fn changes_while_away(b: &mut mailstore::Mailbox) {
    b.store(&[2], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    assert_eq!(b.expunge(Some(&[3, 5]), false).unwrap(), vec![3, 5]);
    append(b, 2);
}

/// RFC 7162 3.2.5.1: expunged records still in the index give the exact
/// VANISHED (EARLIER) set and the FETCH of every message changed since.
#[test]
fn resync_before_repack_is_exact() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 6);
    let v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let modseq = v.highest_modseq();
    drop(v);
    changes_while_away(&mut b);
    let req = ResyncRequest {
        modseq,
        ..Default::default()
    };
    let (v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert!(!r.fallback);
    assert_eq!(r.vanished, vec![(3, 3), (5, 5)]);
    let changed: Vec<u32> = r.changed.iter().map(|s| v.uid(*s).unwrap()).collect();
    assert_eq!(changed, vec![2, 7, 8]);
    assert!(v.highest_modseq() > modseq);
    resync(&mut c, &v, &r);
    c.assert_matches_index(&v, &mut a);
    // Known UIDs limit both answers (RFC 7162 3.2.5).
    let req = ResyncRequest {
        modseq,
        known_uids: Some(vec![(1, 4)]),
        ..Default::default()
    };
    let (v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert_eq!(r.vanished, vec![(3, 3)]);
    let changed: Vec<u32> = r.changed.iter().map(|s| v.uid(*s).unwrap()).collect();
    assert_eq!(changed, vec![2]);
}

/// RFC 7162 3.2.5.2: once a repack dropped expunged records newer than
/// the client's MODSEQ the exact set is gone; every UID of the range that
/// does not exist now is reported (never a live one), and the client
/// still ends with exactly the server's state. A client whose MODSEQ is
/// at or above what the repack dropped still gets the exact answer.
#[test]
fn resync_after_repack_falls_back_to_every_missing_uid() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 6);
    let v = SessionView::open(&mut a).unwrap();
    let mut c = Client::select(&v);
    let modseq = v.highest_modseq();
    drop(v);
    changes_while_away(&mut b);
    let before = b.header().unwrap().highestmodseq;
    b.repack().unwrap();
    let h = b.header().unwrap();
    assert!(h.highestmodseq >= before, "HIGHESTMODSEQ never goes back");
    assert!(h.removed_modseq > modseq);
    let req = ResyncRequest {
        modseq,
        ..Default::default()
    };
    let (v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert!(r.fallback);
    // 3 and 5 are gone; 1, 2, 4, 6, 7, 8 exist; last UID is 8.
    assert_eq!(r.vanished, vec![(3, 3), (5, 5)]);
    resync(&mut c, &v, &r);
    c.assert_matches_index(&v, &mut a);

    // Sequence-match data narrows the fallback: the client says its
    // message 3 was UID 4, which the server agrees with, so nothing at
    // or below UID 4 vanished.
    let req = ResyncRequest {
        modseq,
        seq_match: vec![(1, 1), (3, 4)],
        ..Default::default()
    };
    let (_v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert_eq!(r.vanished, vec![(5, 5)]);

    // A later expunge after the repack, seen by a client that synced
    // after the repack: exact again.
    let now = h.highestmodseq;
    b.expunge(Some(&[7]), false).unwrap();
    let req = ResyncRequest {
        modseq: now,
        ..Default::default()
    };
    let (_v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert!(!r.fallback);
    assert_eq!(r.vanished, vec![(7, 7)]);
}

/// RFC 7162 3.2.10: with QRESYNC on, another session's expunges come as
/// one VANISHED of UIDs, and only where EXPUNGE would be allowed.
#[test]
fn expunges_are_vanished_when_reported_as_such() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 5);
    let mut v = SessionView::open(&mut a).unwrap();
    v.report_vanished(true);
    let mut c = Client::select(&v);
    b.expunge(Some(&[2, 4]), false).unwrap();
    assert_eq!(v.check(&mut a, Allow::NoExpunge).unwrap(), vec![]);
    let u = v.check(&mut a, Allow::AllUpdates).unwrap();
    assert_eq!(u, vec![Update::Vanished(vec![2, 4])]);
    c.apply(&v, &u);
    c.assert_matches_index(&v, &mut a);
    // UID FETCH (CHANGEDSINCE 1 VANISHED): nothing the view still holds.
    b.expunge(Some(&[5]), false).unwrap();
    let (van, fallback) = v.vanished_since(&mut a, 1, &[(1, u32::MAX)]).unwrap();
    assert!(!fallback);
    assert_eq!(van, vec![(2, 2), (4, 4)], "5 is still in the view");
}

/// Rewrites both header slots of the INBOX index as version 3 wrote
/// them (no removed_modseq).
fn downgrade_to_version_3(dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let idx = dir.join("spool/alice/INBOX/.index");
    let idx = if idx.exists() {
        idx
    } else {
        find_index(&dir.join("spool")).expect("an index file")
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&idx)
        .unwrap();
    for off in SLOT_OFFSETS {
        let mut b = [0u8; HEADER_SIZE];
        f.read_exact_at(&mut b, off).unwrap();
        if b.iter().all(|x| *x == 0) {
            continue;
        }
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        b[112..120].fill(0);
        let c = crc32fast::hash(&b[..HEADER_SIZE - 4]);
        b[HEADER_SIZE - 4..].copy_from_slice(&c.to_le_bytes());
        f.write_all_at(&b, off).unwrap();
    }
}

fn find_index(p: &std::path::Path) -> Option<std::path::PathBuf> {
    for e in std::fs::read_dir(p).ok()? {
        let e = e.ok()?;
        let path = e.path();
        if path.file_name().is_some_and(|n| n == ".index") {
            return Some(path);
        }
        if path.is_dir()
            && let Some(f) = find_index(&path)
        {
            return Some(f);
        }
    }
    None
}

/// An index written by version 3 still opens; having lost UIDs to a
/// repack it never recorded, it answers QRESYNC with the safe fallback
/// (RFC 7162 3.2.5.2), and the next commit writes version 4.
#[test]
fn a_version_3_index_opens_and_resyncs_safely() {
    let (t, s) = store();
    let old = expunge_2_and_repack(&s);
    downgrade_to_version_3(t.path());
    let (mut a, h) = assert_resync_falls_back(&s, old);
    a.store(&[1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    drop(a);
    let mut a = open(&s);
    assert_eq!(a.header().unwrap().removed_modseq, h.highestmodseq);
}

/// Appends 1..=3, expunges 2 and repacks; the MODSEQ before the expunge.
fn expunge_2_and_repack(s: &mailstore::Store) -> u64 {
    let mut b = open(s);
    append(&mut b, 3);
    let old = b.header().unwrap().highestmodseq;
    b.expunge(Some(&[2]), false).unwrap();
    b.repack().unwrap();
    old
}

/// The index counts every MODSEQ as possibly removed, and a resync from
/// `old` gets the fallback, which names UID 2.
fn assert_resync_falls_back(
    s: &mailstore::Store,
    old: u64,
) -> (mailstore::Mailbox, mailstore::format::Header) {
    let mut a = open(s);
    let h = a.header().unwrap();
    assert_eq!(h.removed_modseq, h.highestmodseq);
    let req = ResyncRequest {
        modseq: old,
        ..Default::default()
    };
    let (_v, r) = SessionView::open_resync(&mut a, &req).unwrap();
    assert!(r.fallback);
    assert_eq!(r.vanished, vec![(2, 2)]);
    (a, h)
}

/// RFC 7162 3.2.5 (erratum 1810): while expunges are held, the view
/// names a MODSEQ below each of them; none once they are reported.
#[test]
fn held_expunges_give_a_modseq_below_them() {
    let (_t, s) = store();
    let (mut a, mut b) = (open(&s), open(&s));
    append(&mut b, 3);
    let mut v = SessionView::open(&mut a).unwrap();
    assert_eq!(v.held_expunge_modseq(), None);
    b.expunge(Some(&[2]), false).unwrap();
    let at = b.header().unwrap().highestmodseq;
    b.store(&[3], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    v.check(&mut a, Allow::NoExpunge).unwrap();
    let m = v.held_expunge_modseq().expect("an expunge is held");
    assert!(m < at, "{m} not below the expunge's MODSEQ {at}");
    v.check(&mut a, Allow::AllUpdates).unwrap();
    assert_eq!(v.held_expunge_modseq(), None);
}

/// A reconstruct rebuilds the index from the message files: expunged
/// records may not survive it, so it records every MODSEQ as possibly
/// removed and a QRESYNC client from before it gets the fallback answer
/// (RFC 7162 3.2.5.2), which still names the expunged UID.
#[test]
fn reconstruct_makes_older_resyncs_fall_back() {
    let (t, s) = store();
    let old = expunge_2_and_repack(&s);
    let idx = find_index(&t.path().join("spool")).expect("an index");
    mailstore::recovery::reconstruct(
        idx.parent().unwrap(),
        mailstore::Durability::Relaxed,
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert_resync_falls_back(&s, old);
}
