//! Corrupt every header field, every record field and the message files
//! of a real mailbox; `idx-inspect verify` must name each problem with its
//! file and offset and exit 1, and `idx-admin reconstruct` must then give a
//! mailbox that verifies clean with every surviving message.

mod common;

use common::*;
use std::path::Path;
use storage::format::{HEADER_SIZE, Header, RECORD_SIZE, Record};

/// Field offsets of a header slot and of a record (docs/FORMAT.md).
const HEADER_FIELDS: [usize; 20] = [
    0, 8, 12, 16, 20, 24, 32, 36, 40, 44, 48, 56, 64, 68, 72, 76, 80, 88, 96, 124,
];
const RECORD_FIELDS: [usize; 12] = [0, 4, 8, 16, 24, 32, 36, 40, 48, 80, 88, 124];

fn current_slot_offset(dir: &Path) -> u64 {
    let (c, v) = inspect_json(&["header", dir.to_str().unwrap()]);
    assert_eq!(c, 0);
    v["current_slot_offset"].as_u64().unwrap()
}

fn has_problem_in(v: &serde_json::Value, file: &str, range: std::ops::Range<u64>) -> bool {
    problems(v)
        .iter()
        .any(|(p, off, _)| p.ends_with(file) && off.is_some_and(|o| range.contains(&o)))
}

fn has_problem_at(v: &serde_json::Value, file: &str, offset: u64) -> bool {
    has_problem_in(v, file, offset..offset + 1)
}

#[test]
fn every_header_field_bit_flip_is_found_and_reconstructed() {
    for field in HEADER_FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = sample(tmp.path());
        let before = contents(&spool);
        let slot = current_slot_offset(&dir);
        patch(&index_path(&dir), slot + field as u64, |b| b[0] ^= 0x10);
        let (c, v) = verify(&dir);
        assert_eq!(c, 1, "field {field}: {v:#}");
        assert!(
            has_problem_in(&v, ".index", slot..slot + HEADER_SIZE as u64),
            "field {field}: no problem inside the slot: {v:#}"
        );
        let r = reconstruct(&dir);
        assert_eq!(r["uidvalidity_changed"], false, "field {field}");
        assert_clean(&dir);
        assert_eq!(contents(&spool), before, "field {field}");
    }
}

#[test]
fn both_header_slots_lost_bumps_uidvalidity_and_keeps_messages() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let (_, h) = inspect_json(&["header", dir.to_str().unwrap()]);
    for slot in [0u64, 4096] {
        patch(&index_path(&dir), slot + 40, |b| b[0] ^= 1);
    }
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_in(&v, ".index", 0..128), "{v:#}");
    assert!(has_problem_in(&v, ".index", 4096..4224), "{v:#}");
    // header reports that no slot is valid, and exits 1
    let (c, hv) = inspect_json(&["header", dir.to_str().unwrap()]);
    assert_eq!((c, hv["current_slot"].is_null()), (1, true));
    let r = reconstruct(&dir);
    assert_eq!(r["uidvalidity_changed"], true);
    assert_ne!(r["uidvalidity"], h["uidvalidity"]);
    assert_clean(&dir);
    assert_eq!(contents(&spool), before);
}

/// Rewrites the current header with `f` applied and a valid CRC.
fn rewrite_header(dir: &Path, f: impl FnOnce(&mut Header)) -> u64 {
    let slot = current_slot_offset(dir);
    patch(&index_path(dir), slot, |b| {
        let mut h = Header::decode(&b[..HEADER_SIZE]).unwrap();
        f(&mut h);
        b[..HEADER_SIZE].copy_from_slice(&h.encode());
    });
    slot
}

#[test]
fn wrong_header_values_with_valid_crc_are_named_by_field() {
    type Case = (&'static str, u64, fn(&mut Header));
    let cases: [Case; 8] = [
        ("exists", 36, |h| h.exists += 1),
        ("total_bytes", 56, |h| h.total_bytes += 7),
        ("seen", 64, |h| h.seen += 1),
        ("deleted", 68, |h| h.deleted += 1),
        ("flagged", 72, |h| h.flagged += 1),
        // Lowered together with inplace_modseq, which may not exceed it,
        // so the slot stays valid and the record comparison must catch it.
        ("highestmodseq", 48, |h| {
            h.highestmodseq -= 1;
            h.inplace_modseq = h.inplace_modseq.min(h.highestmodseq);
        }),
        ("uidvalidity", 44, |h| h.uidvalidity = 0),
        ("num_records", 32, |h| h.num_records += 1),
    ];
    for (name, off, f) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = sample(tmp.path());
        let before = contents(&spool);
        let slot = rewrite_header(&dir, f);
        let (c, v) = verify(&dir);
        assert_eq!(c, 1, "{name}: {v:#}");
        assert!(has_problem_at(&v, ".index", slot + off), "{name}: {v:#}");
        reconstruct(&dir);
        assert_clean(&dir);
        assert_eq!(contents(&spool), before, "{name}");
    }
}

#[test]
fn every_record_field_bit_flip_is_found_and_reconstructed() {
    for field in RECORD_FIELDS {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = sample(tmp.path());
        let before = contents(&spool);
        let rec = Header::record_offset(2); // UID 3
        patch(&index_path(&dir), rec + field as u64, |b| b[0] ^= 0x04);
        let (c, v) = verify(&dir);
        assert_eq!(c, 1, "field {field}: {v:#}");
        assert!(
            has_problem_in(&v, ".index", rec..rec + RECORD_SIZE as u64),
            "field {field}: {v:#}"
        );
        let r = reconstruct(&dir);
        assert_eq!(r["rebuilt"], serde_json::json!([3]), "field {field}");
        assert_clean(&dir);
        // UID 3 is rebuilt from its file with default flags; the rest keep theirs.
        let after = contents(&spool);
        assert_eq!(after.len(), before.len());
        for (a, b) in after.iter().zip(&before) {
            assert_eq!((a.0, &a.1), (b.0, &b.1), "field {field}");
            if a.0 == 3 {
                assert_eq!(a.2, storage::Flags::empty());
                assert!(a.3.is_empty());
            } else {
                assert_eq!(a, b, "field {field}");
            }
        }
    }
}

fn rewrite_record(dir: &Path, recno: u32, f: impl FnOnce(&mut Record)) -> u64 {
    let off = Header::record_offset(recno);
    patch(&index_path(dir), off, |b| {
        let mut r = Record::decode(&b[..RECORD_SIZE]).unwrap();
        f(&mut r);
        b[..RECORD_SIZE].copy_from_slice(&r.encode());
    });
    off
}

#[test]
fn wrong_record_values_with_valid_crc_are_found() {
    // size: the file disagrees (named at the file) and total_bytes too.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let len2 = std::fs::metadata(dir.join("2.")).unwrap().len();
    rewrite_record(&dir, 1, |r| r.size += 1);
    let slot = current_slot_offset(&dir);
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_at(&v, "/2.", len2), "{v:#}");
    assert!(has_problem_at(&v, ".index", slot + 56), "{v:#}");
    let r = reconstruct(&dir);
    assert_eq!(r["updated"], serde_json::json!([2]));
    assert_clean(&dir);
    assert_eq!(contents(&spool), before);

    // message_crc: named at the file, with the record's offset in the text.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let rec = rewrite_record(&dir, 1, |r| r.message_crc ^= 1);
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    let ps = problems(&v);
    assert!(
        ps.iter()
            .any(|(p, _, m)| p.ends_with("/2.") && m.contains(&(rec + 36).to_string())),
        "{v:#}"
    );
    reconstruct(&dir);
    assert_clean(&dir);
    assert_eq!(contents(&spool), before);

    // uid out of order: named at the record; file 2. becomes an orphan.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let rec = rewrite_record(&dir, 1, |r| r.uid = 1);
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_at(&v, ".index", rec), "{v:#}");
    assert!(
        problems(&v)
            .iter()
            .any(|(p, _, m)| p.ends_with("/2.") && m.contains("orphan")),
        "{v:#}"
    );
    reconstruct(&dir);
    assert_clean(&dir);
    let after = contents(&spool);
    assert_eq!(
        after.iter().map(|m| (m.0, &m.1)).collect::<Vec<_>>(),
        before.iter().map(|m| (m.0, &m.1)).collect::<Vec<_>>()
    );

    // modseq above highestmodseq: named at the header field.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    rewrite_record(&dir, 0, |r| r.modseq += 100);
    let slot = current_slot_offset(&dir);
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_at(&v, ".index", slot + 48), "{v:#}");
    reconstruct(&dir);
    assert_clean(&dir);
    assert_eq!(contents(&spool), before);

    // keyword bit without a name: named at the keyword byte.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let rec = rewrite_record(&dir, 0, |r| r.keywords.insert(200));
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_at(&v, ".index", rec + 48 + 25), "{v:#}");
    let r = reconstruct(&dir);
    assert_eq!(r["keywords_cleared"], 1);
    assert_clean(&dir);
    assert_eq!(contents(&spool), before);
}

#[test]
fn message_file_damage_is_found_and_reconstructed() {
    // truncated
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let f = dir.join("3.");
    let full = std::fs::read(&f).unwrap();
    std::fs::write(&f, &full[..20]).unwrap();
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(has_problem_at(&v, "/3.", 20), "{v:#}");
    let r = reconstruct(&dir);
    assert_eq!(r["updated"], serde_json::json!([3]));
    assert_clean(&dir);
    let after = contents(&spool);
    assert_eq!(after[2].1, full[..20].to_vec());
    assert_eq!(
        (after[2].2, &after[2].3),
        (before[2].2, &before[2].3),
        "flags kept"
    );

    // one bit flipped
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let f = dir.join("3.");
    patch(&f, 30, |b| b[0] ^= 0x20);
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(
        problems(&v)
            .iter()
            .any(|(p, _, m)| p.ends_with("/3.") && m.contains("CRC")),
        "{v:#}"
    );
    reconstruct(&dir);
    assert_clean(&dir);
    assert_eq!(contents(&spool)[2].1, std::fs::read(&f).unwrap());

    // deleted
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    std::fs::remove_file(dir.join("3.")).unwrap();
    let (c, v) = verify(&dir);
    assert_eq!(c, 1);
    assert!(
        problems(&v)
            .iter()
            .any(|(p, _, m)| p.ends_with("/3.") && m.contains("missing")),
        "{v:#}"
    );
    let r = reconstruct(&dir);
    assert_eq!(r["dropped_missing"], serde_json::json!([3]));
    assert_clean(&dir);
    let mut expect = before.clone();
    expect.remove(2);
    assert_eq!(contents(&spool), expect);
}

/// Runs `f` on the INBOX of the spool at `spool`.
fn with_inbox(spool: &Path, f: impl FnOnce(&mut storage::Mailbox)) {
    let s = store(spool);
    let mut m = s
        .open_mailbox(&user(), &storage::MailboxName::inbox())
        .unwrap();
    f(&mut m);
}

#[test]
fn orphans_are_problems_and_uncommitted_files_are_warnings() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    // Expunge and repack UID 4, then put a file back under its name.
    with_inbox(&spool, |m| {
        m.expunge(Some(&[4]), false).unwrap();
        m.repack().unwrap();
    });
    assert_clean(&dir);
    std::fs::write(dir.join("4."), b"Subject: back\r\n\r\nagain\r\n").unwrap();
    // Crash debris: a file above last_uid and an unlocked staged file.
    std::fs::write(dir.join("9."), b"Subject: never committed\r\n\r\n").unwrap();
    std::fs::write(dir.join(".stage").join("123.456.0"), b"partial").unwrap();
    let (c, v) = verify(&dir);
    assert_eq!(c, 1, "{v:#}");
    let ps = problems(&v);
    assert_eq!(ps.len(), 1, "{v:#}");
    assert!(ps[0].0.ends_with("/4.") && ps[0].2.contains("orphan"));
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2, "{v:#}");
    // Without the orphan the debris alone leaves verify clean (exit 0).
    std::fs::remove_file(dir.join("4.")).unwrap();
    let v = assert_clean(&dir);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
    // Reconstruct does not resurrect them (4 was expunged, 9 never
    // committed, and the index is intact): it keeps their files in
    // quarantine, where a postmaster can restore them as new messages.
    std::fs::write(dir.join("4."), b"Subject: back\r\n\r\nagain\r\n").unwrap();
    let r = reconstruct(&dir);
    assert_eq!(r["rebuilt"], serde_json::json!([]));
    assert_eq!(r["quarantined"], serde_json::json!([4, 9]));
    let v = assert_clean(&dir);
    assert_eq!(v["quarantine"].as_array().unwrap().len(), 3, "{v:#}");
    let uids: Vec<u32> = contents(&spool).iter().map(|m| m.0).collect();
    assert_eq!(uids, vec![1, 2, 3, 5]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_idx-admin"))
        .args(["--json", "quarantine", "restore", "--all"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let uids: Vec<u32> = contents(&spool).iter().map(|m| m.0).collect();
    assert_eq!(
        uids,
        vec![1, 2, 3, 5, 6, 7, 8],
        "new UIDs, never an old one"
    );
    let v = assert_clean(&dir);
    assert_eq!(v["quarantine"].as_array().unwrap().len(), 0, "{v:#}");
}

#[test]
fn truncated_or_missing_index_is_reconstructed() {
    // Cut inside the third record.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    let cut = Header::record_offset(2) + 60;
    let slot = current_slot_offset(&dir);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(index_path(&dir))
        .unwrap();
    f.set_len(cut).unwrap();
    drop(f);
    // A header counting records the file does not hold is refused by
    // every reader and writer: verify exits 2 and names its num_records.
    let (c, v) = verify(&dir);
    assert_eq!(c, 2, "{v:#}");
    assert_eq!(v["unusable"], true, "{v:#}");
    assert!(
        problems(&v).iter().any(|(p, off, m)| p.ends_with(".index")
            && *off == Some(slot + 32)
            && m.contains(&format!("the file is {cut} bytes long"))),
        "{v:#}"
    );
    let r = reconstruct(&dir);
    assert_eq!(r["uidvalidity_changed"], false);
    assert_eq!(r["kept"], serde_json::json!([1, 2]));
    assert_eq!(r["rebuilt"], serde_json::json!([3, 4, 5]));
    assert_clean(&dir);
    let after = contents(&spool);
    assert_eq!(after[..2], before[..2]);
    assert_eq!(
        after.iter().map(|m| &m.1).collect::<Vec<_>>(),
        before.iter().map(|m| &m.1).collect::<Vec<_>>()
    );

    // Cut to nothing: no header survives.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let before = contents(&spool);
    std::fs::write(index_path(&dir), b"").unwrap();
    let (c, v) = verify(&dir);
    assert_eq!(c, 1, "{v:#}");
    let r = reconstruct(&dir);
    assert_eq!(r["uidvalidity_changed"], true);
    assert_clean(&dir);
    let bytes = |v: &[(u32, Vec<u8>, storage::Flags, Vec<String>)]| {
        v.iter().map(|m| (m.0, m.1.clone())).collect::<Vec<_>>()
    };
    assert_eq!(bytes(&contents(&spool)), bytes(&before));

    // Gone entirely: verify cannot read (2), reconstruct creates it.
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let (_, h) = inspect_json(&["header", dir.to_str().unwrap()]);
    std::fs::remove_file(index_path(&dir)).unwrap();
    let (c, _) = {
        let o = run(INSPECT, &["verify", dir.to_str().unwrap()]);
        (code(&o), ())
    };
    assert_eq!(c, 2);
    let r = reconstruct(&dir);
    assert_eq!(r["had_index"], false);
    assert_eq!(r["uidvalidity_changed"], true);
    // Above every value the store handed out, even within the same second.
    assert!(r["uidvalidity"].as_u64() > h["uidvalidity"].as_u64());
    assert_clean(&dir);
    assert_eq!(bytes(&contents(&spool)), bytes(&before));
}

/// FORMAT.md §2a: damage to the change log `.changes` is a warning of
/// `idx-inspect verify` (exit 0) naming the file and the offset of the
/// bad block, since it is only an accelerator; `idx-admin reconstruct`
/// resets it.
#[test]
fn damaged_change_log_is_a_warning_and_reconstruct_resets_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    with_inbox(&spool, |m| {
        for uid in [2, 3] {
            m.store(
                &[uid],
                storage::FlagOp::Add,
                storage::Flags::SEEN,
                &[],
                None,
            )
            .unwrap();
        }
    });
    let log = dir.join(".changes");
    let mut bytes = std::fs::read(&log).unwrap();
    assert_clean(&dir);
    let second = bytes.len() - (28 + 4 + 16);
    bytes[second + 1] ^= 0x10;
    std::fs::write(&log, &bytes).unwrap();
    let v = assert_clean(&dir);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 1, "{v:#}");
    assert!(
        w[0]["path"].as_str().unwrap().ends_with(".changes"),
        "{v:#}"
    );
    assert_eq!(w[0]["offset"].as_u64(), Some(second as u64), "{v:#}");
    reconstruct(&dir);
    assert!(!log.exists());
    let v = assert_clean(&dir);
    assert!(v["warnings"].as_array().unwrap().is_empty(), "{v:#}");
}
