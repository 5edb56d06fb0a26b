//! A SELECT of a big mailbox reads its records in two halves at once
//! (`Mailbox::snapshot_halves`, from 65,536 records): the view must be
//! the one a single pass gives (every live record, the \Deleted set, the
//! counters), and damage must be reported where a single pass reports
//! it, in either half or across the boundary between them. A QRESYNC
//! SELECT reads in halves too: its VANISHED answer (exact and fallback)
//! and its changed messages must be those of one pass; and so must a
//! compact (IDLE) view's rebuild when the client leaves IDLE.

// The store helpers and the simulated client.
#[allow(dead_code)]
mod session_support;

use mailstore::format::{Flags, Header, Record};
use mailstore::mailbox::FlagOp;
use mailstore::session::{ResyncRequest, SessionView};
use mailstore::{AppendOptions, Error};
use session_support::{Client, open, store};

const N: u32 = 70_000;

/// Appends `N` small messages, one in three \Seen, in batches.
fn fill(m: &mut mailstore::mailbox::Mailbox) {
    let mut batch = Vec::new();
    for i in 0..N {
        let opts = AppendOptions {
            flags: if i % 3 == 0 {
                Flags::SEEN
            } else {
                Flags::empty()
            },
            ..AppendOptions::default()
        };
        let raw = format!("Subject: m{i}\r\n\r\nbody {i}\r\n");
        batch.push(m.stage(raw.as_bytes(), opts).unwrap());
        if batch.len() == 5000 {
            m.commit(std::mem::take(&mut batch)).unwrap();
        }
    }
    m.commit(batch).unwrap();
}

#[test]
fn a_big_view_read_in_halves_is_the_index() {
    let (_t, s) = store();
    let mut m = open(&s);
    fill(&mut m);
    // Expunged records around the middle and in each half stay in the
    // index (no repack); \Deleted ones in both halves.
    let mid = N / 2 + 1;
    let gone: Vec<u32> = [10, mid - 1, mid, mid + 1, N - 5].to_vec();
    m.expunge(Some(&gone), false).unwrap();
    m.store(&[7, mid + 7, N], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();

    let view = SessionView::open(&mut open(&s)).unwrap();
    let snap = open(&s).snapshot().unwrap();
    assert_eq!(snap.header.num_records, N);
    let live: Vec<&Record> = snap.records.iter().filter(|r| !r.is_expunged()).collect();
    assert_eq!(view.len() as usize, live.len());
    assert!(
        view.iter()
            .zip(&live)
            .all(|(m, r)| *m.record == **r && !m.expunged)
    );
    assert_eq!(view.seq(mid + 2), Some(mid + 2 - 4));
    assert_eq!(view.deleted_uids(), vec![7, mid + 7, N]);
    assert_eq!(view.uid_next(), N + 1);
    assert_eq!(view.highest_modseq(), snap.header.highestmodseq);
    assert_eq!(view.mark().num_records, N);
    drop(view);

    // Damage is reported at the offset a single pass would give.
    let path = m.index_path().to_path_buf();
    let good = std::fs::read(&path).unwrap();
    let corrupt_at = |recno: u32, bytes: &[u8], at: usize| {
        let mut b = good.clone();
        let off = Header::record_offset(recno) as usize + at;
        b[off..off + bytes.len()].copy_from_slice(bytes);
        std::fs::write(&path, &b).unwrap();
        match SessionView::open(&mut open(&s)) {
            Err(Error::Corrupt { offset, .. }) => offset,
            other => panic!("record {recno}: {other:?}"),
        }
    };
    // A flipped byte in the second half, then in the first: the CRC.
    let crc = Header::record_offset(N - 3) + 124;
    assert_eq!(corrupt_at(N - 3, &[0xff], 5), crc);
    assert_eq!(corrupt_at(3, &[0xff], 5), Header::record_offset(3) + 124);
    // A CRC-valid record whose UID does not ascend, first in the second
    // half: reported at its own record, the boundary.
    let half = N / 2;
    let mut r = snap.records[half as usize].clone();
    r.uid = snap.records[half as usize - 1].uid;
    assert_eq!(
        corrupt_at(half, &r.encode(), 0),
        Header::record_offset(half)
    );
    std::fs::write(&path, &good).unwrap();
    assert_eq!(
        SessionView::open(&mut open(&s)).unwrap().len() as usize,
        live.len()
    );
}

/// Inclusive ranges of ascending UIDs.
fn ranges(uids: impl IntoIterator<Item = u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for u in uids {
        match out.last_mut() {
            Some(l) if l.1 + 1 == u => l.1 = u,
            _ => out.push((u, u)),
        }
    }
    out
}

/// A QRESYNC open of `s`'s INBOX against what the index says, worked
/// out record by record: the exact answer (expunged records newer than
/// `modseq`), or, once a repack dropped such records, every UID up to
/// the last that no live record holds; and the sequence numbers of the
/// live records newer than `modseq`. `within`: the client's known UIDs.
fn assert_resync_is_one_pass(
    s: &mailstore::Store,
    modseq: u64,
    within: Option<(u32, u32)>,
    fallback: bool,
) {
    let req = ResyncRequest {
        modseq,
        known_uids: within.map(|r| vec![r]),
        seq_match: Vec::new(),
    };
    let (view, got) = SessionView::open_resync(&mut open(s), &req).unwrap();
    let snap = open(s).snapshot().unwrap();
    let (lo, hi) = within.unwrap_or((1, u32::MAX));
    let inside = |u: u32| lo <= u && u <= hi;
    let live: Vec<&Record> = snap.records.iter().filter(|r| !r.is_expunged()).collect();
    assert_eq!(view.len() as usize, live.len());
    assert_eq!(got.fallback, fallback, "modseq {modseq}");
    let vanished = if fallback {
        let live_uids: std::collections::HashSet<u32> = live.iter().map(|r| r.uid).collect();
        ranges((1..=snap.header.last_uid).filter(|u| inside(*u) && !live_uids.contains(u)))
    } else {
        ranges(
            snap.records
                .iter()
                .filter(|r| r.is_expunged() && r.modseq > modseq && inside(r.uid))
                .map(|r| r.uid),
        )
    };
    assert_eq!(got.vanished, vanished, "modseq {modseq}, within {within:?}");
    let changed: Vec<u32> = live
        .iter()
        .enumerate()
        .filter(|(_, r)| r.modseq > modseq && inside(r.uid))
        .map(|(i, _)| i as u32 + 1)
        .collect();
    assert_eq!(got.changed, changed, "modseq {modseq}, within {within:?}");
}

#[test]
fn a_qresync_select_read_in_halves_answers_as_one_pass() {
    let (_t, s) = store();
    let mut m = open(&s);
    fill(&mut m);
    let before = m.header().unwrap().highestmodseq;
    // Expunged at the boundary of the halves (record N/2 holds UID
    // mid), and in each half; flag changes in each half.
    let mid = N / 2 + 1;
    m.expunge(Some(&[10, mid - 2, mid - 1, mid, mid + 1, N - 5]), false)
        .unwrap();
    m.store(&[7, mid + 7, N], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    assert_resync_is_one_pass(&s, before, None, false);
    assert_resync_is_one_pass(&s, before, Some((5, mid - 1)), false);
    assert_resync_is_one_pass(&s, before, Some((mid, N)), false);
    // A repack drops those records: from a MODSEQ before it, every UID
    // that exists nowhere. Then expunges at the new boundary (the
    // records at n/2 - 1, n/2 and n/2 + 1) and in each half, kept in
    // the index: a gap that runs through the boundary.
    m.repack().unwrap();
    let snap = m.snapshot().unwrap();
    let n = snap.header.num_records as usize;
    let at = |i: usize| snap.records[i].uid;
    let after_repack = snap.header.highestmodseq;
    m.expunge(
        Some(&[
            at(100),
            at(n / 2 - 1),
            at(n / 2),
            at(n / 2 + 1),
            at(n - 100),
        ]),
        false,
    )
    .unwrap();
    m.store(&[at(n / 2 + 3)], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    assert_resync_is_one_pass(&s, before, None, true);
    assert_resync_is_one_pass(&s, before, Some((at(n / 2 - 5), at(n / 2 + 5))), true);
    assert_resync_is_one_pass(&s, after_repack, None, false);
    assert_resync_is_one_pass(&s, after_repack, Some((at(n / 2), N)), false);
}

#[test]
fn leaving_idle_rebuilds_a_big_view_in_halves_as_one_pass() {
    let (_t, s) = store();
    let mut m = open(&s);
    fill(&mut m);
    let mut mine = open(&s);
    let mut view = SessionView::open(&mut mine).unwrap();
    let mut client = Client::select(&view);
    assert!(view.compact(), "IDLE: the view made compact");
    // While the client idles: new messages; messages repacked away in
    // the first half and, of the index the repack leaves, right between
    // its halves (`run`); then more expunged (kept in the index) around
    // that boundary and in each half, and flag changes in both halves.
    for i in 0..3 {
        let raw = format!("Subject: new {i}\r\n\r\nbody\r\n");
        m.append(raw.as_bytes(), AppendOptions::default()).unwrap();
    }
    let n = (N + 3 - 1 - 3) as usize;
    let x = (n / 2 + 2) as u32;
    let run = [x, x + 1, x + 2];
    m.expunge(Some(&[10, run[0], run[1], run[2]]), false)
        .unwrap();
    m.repack().unwrap();
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.header.num_records as usize, n);
    let at = |i: usize| snap.records[i].uid;
    assert_eq!(
        (at(n / 2 - 1), at(n / 2)),
        (x - 1, x + 3),
        "the repacked UIDs lie between the halves"
    );
    m.expunge(
        Some(&[at(50), at(n / 2 - 2), at(n / 2 + 1), at(n - 50)]),
        false,
    )
    .unwrap();
    m.store(
        &[7, at(n / 2 + 2), N - 1],
        FlagOp::Add,
        Flags::FLAGGED,
        &[],
        None,
    )
    .unwrap();
    m.store(&[at(n / 2 - 3)], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    // DONE: every change reported as one check would, and the view is
    // the one a fresh SELECT reads.
    let updates = view.expand(&mut mine).unwrap();
    assert!(!view.is_compact());
    client.apply(&view, &updates);
    client.assert_matches_index(&view, &mut mine);
    let fresh = SessionView::open(&mut open(&s)).unwrap();
    assert_eq!(view.len(), fresh.len());
    assert!(
        view.iter()
            .zip(fresh.iter())
            .all(|(a, b)| a.record == b.record)
    );
    assert_eq!(view.deleted_uids(), fresh.deleted_uids());
    assert_eq!(view.deleted_uids(), vec![at(n / 2 - 3)]);
}
