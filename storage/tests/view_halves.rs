//! A SELECT of a big mailbox reads its records in two halves at once
//! (`Mailbox::snapshot_halves`, from 65,536 records): the view must be
//! the one a single pass gives (every live record, the \Deleted set, the
//! counters), and damage must be reported where a single pass reports
//! it, in either half or across the boundary between them.

// Only the store helpers are used here.
#[allow(dead_code)]
mod session_support;

use mailstore::format::{Flags, Header, Record};
use mailstore::mailbox::FlagOp;
use mailstore::session::SessionView;
use mailstore::{AppendOptions, Error};
use session_support::{open, store};

const N: u32 = 70_000;

#[test]
fn a_big_view_read_in_halves_is_the_index() {
    let (_t, s) = store();
    let mut m = open(&s);
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
