//! States a power loss can leave behind the append protocol of
//! PROTOCOL.md §3, built by hand on a real store (a SIGKILL cannot make
//! them: the page cache survives a killed process, not a power cut):
//!
//! - the header of the last append reached the disk, its records did not
//!   (zeroed, or older records of an aborted commit with valid CRCs);
//! - the last append's `UID.` name did not reach the disk, only its
//!   staged name did;
//! - the last append was *unordered* (format version 3): its records
//!   reached the disk, its message bytes did not.
//!
//! Each test checks that no acknowledged state is lost, nothing torn is
//! served, the damage is reported with its offset, and the mailbox keeps
//! working.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mailstore::format::{
    Flags, HEADER_SIZE, Header, RECORD_SIZE, SLOT_OFFSETS, UNORDERED_MAX_SIZE,
};
use mailstore::mailbox::{AppendOptions, FlagOp, Mailbox};
use mailstore::{MailboxName, Options, Store, UserName};

fn setup(n: u32) -> (tempfile::TempDir, Store, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let s = Store::open(&t.path().join("spool"), Options::default()).unwrap();
    let u = UserName::new("pl").unwrap();
    s.create_mailbox(&u, &MailboxName::inbox()).unwrap();
    let mut m = open(&s);
    for i in 1..=n {
        assert_eq!(m.append(&msg(i)[..], AppendOptions::default()).unwrap(), i);
    }
    let dir = s.mailbox_path(&u, &MailboxName::inbox());
    (t, s, dir)
}

/// Held by a test that checks the count stamp of the current boot: the
/// tests of this file run in parallel and share one simulated boot.
static BOOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A simulated power cut and reboot ([`BOOT`] held for the moment).
fn reboot() {
    let _same_boot = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    mailstore::internals::fault::simulate_reboot();
}

fn open(s: &Store) -> Mailbox {
    s.open_mailbox(&UserName::new("pl").unwrap(), &MailboxName::inbox())
        .unwrap()
}

fn msg(i: u32) -> Vec<u8> {
    format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn index(dir: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(".index"))
        .unwrap()
}

fn header_slots(dir: &Path) -> [Option<Header>; 2] {
    let f = index(dir);
    [0, 1].map(|i| {
        let mut b = [0u8; HEADER_SIZE];
        f.read_exact_at(&mut b, SLOT_OFFSETS[i]).unwrap();
        Header::decode(&b).ok()
    })
}

fn newest(dir: &Path) -> Header {
    let [a, b] = header_slots(dir);
    [a, b]
        .into_iter()
        .flatten()
        .max_by_key(|h| h.generation)
        .unwrap()
}

/// The format version of the newest slot.
fn newest_version(dir: &Path) -> u32 {
    let g = newest(dir).generation;
    let mut b = [0u8; HEADER_SIZE];
    index(dir)
        .read_exact_at(&mut b, SLOT_OFFSETS[(g % 2) as usize])
        .unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

fn verify_warnings(dir: &Path) -> Vec<String> {
    let rep = mailstore::verify::verify_path(dir, Duration::from_secs(5)).unwrap();
    assert_eq!(rep.problems().count(), 0, "{:?}", rep.findings);
    rep.warnings().map(|f| format!("{f:?}")).collect()
}

/// After a power loss cut the commit of UID 3 (`h3` its header): readers
/// are at the previous generation, `verify` names `bad_offset`, the next
/// append retires UID 3 and the torn generation (a client may have seen
/// them before the power went) and gets UID 4, whatever the torn commit
/// left at `3.` is in quarantine, the older messages are intact, and
/// recovery leaves nothing else to warn about.
fn assert_fell_back_and_retires_uid_3(
    s: &Store,
    dir: &Path,
    h3: &Header,
    bad_offset: u64,
    ctx: &str,
) {
    // What the test wrote is what a power cut left: judged after a boot.
    reboot();
    let mut m = open(s);
    let h = m.header().unwrap();
    assert_eq!(
        (h.last_uid, h.exists, h.generation),
        (2, 2, h3.generation - 1),
        "{ctx}"
    );
    assert_eq!(m.snapshot().unwrap().records.len(), 2, "{ctx}");
    let warnings = verify_warnings(dir);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("newest header slot") && w.contains(&format!("{bad_offset}"))),
        "{ctx}: {warnings:?}"
    );
    let again = b"Subject: again\r\n\r\nx\r\n";
    let uid = m.append(&again[..], AppendOptions::default()).unwrap();
    assert_eq!(uid, 4, "{ctx}: UID 3 is never handed out again");
    assert!(m.header().unwrap().generation > h3.generation, "{ctx}");
    assert!(!dir.join("3.").exists(), "{ctx}");
    assert_eq!(m.read_message(4).unwrap(), again, "{ctx}");
    assert_eq!(m.read_message(2).unwrap(), msg(2), "{ctx}");
    let mut fresh = open(s);
    let uids: Vec<u32> = fresh
        .snapshot()
        .unwrap()
        .records
        .iter()
        .map(|r| r.uid)
        .collect();
    assert_eq!(uids, vec![1, 2, 4], "{ctx}");
    fresh.recover().unwrap();
    assert!(verify_warnings(dir).is_empty(), "{ctx}");
}

/// The last commit's header is on disk, its record is not: readers use
/// the previous generation, verify names the offset, the next append
/// retires the UID (the message was never acknowledged) and all is clean.
#[test]
fn header_without_its_records_falls_back_to_the_previous_generation() {
    let (_t, s, dir) = setup(3);
    let h3 = newest(&dir);
    assert_eq!((h3.last_uid, h3.append_from, h3.num_records), (3, 2, 3));
    let off = Header::record_offset(2);
    index(&dir).write_all_at(&[0u8; RECORD_SIZE], off).unwrap();
    assert_fell_back_and_retires_uid_3(&s, &dir, &h3, off + 124, "records zeroed");
}

/// The record slot of the last commit holds a valid record of an older,
/// aborted commit (same UID and MODSEQ, other content): the append CRC
/// in the header tells them apart, so the stale record is never served.
#[test]
fn stale_valid_record_under_a_new_header_is_not_served() {
    let (_t, s, dir) = setup(3);
    let f = index(&dir);
    let off = Header::record_offset(2);
    let mut rec = [0u8; RECORD_SIZE];
    f.read_exact_at(&mut rec, off).unwrap();
    let mut r = mailstore::Record::decode(&rec).unwrap();
    r.size += 1;
    r.message_crc ^= 0xdead_beef;
    f.write_all_at(&r.encode(), off).unwrap();

    reboot();
    let mut m = open(&s);
    let h = m.header().unwrap();
    assert_eq!(h.last_uid, 2);
    assert!(m.snapshot().unwrap().records.iter().all(|r| r.uid < 3));
}

/// A flag change after the last append, whose own header was lost: the
/// append's header is the newest valid one and its record no longer
/// matches the append CRC, but its MODSEQ proves a later writer ran after
/// the append was durable, so the append stands.
#[test]
fn in_place_change_after_an_append_does_not_undo_the_append() {
    let (_t, s, dir) = setup(3);
    let mut m = open(&s);
    m.store(&[3], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    let h_store = newest(&dir);
    // The STORE's header slot is lost (torn): zero it.
    index(&dir)
        .write_all_at(&[0xffu8; HEADER_SIZE], SLOT_OFFSETS[h_store.slot()])
        .unwrap();
    let mut fresh = open(&s);
    let h = fresh.header().unwrap();
    assert_eq!((h.last_uid, h.generation), (3, h_store.generation - 1));
    let snap = fresh.snapshot().unwrap();
    assert_eq!(snap.records.len(), 3);
    assert!(snap.records[2].flags.contains(Flags::SEEN));
    assert_eq!(fresh.read_message(3).unwrap(), msg(3));
}

/// The last append's `UID.` name was lost, its staged name survived:
/// opening the message restores it; `recover` and `verify` agree.
#[test]
fn lost_uid_name_is_restored_from_stage() {
    let (_t, s, dir) = setup(3);
    let staged: Vec<PathBuf> = std::fs::read_dir(dir.join(".stage"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(staged.len(), 3, "staged names wait for the settle");
    assert!(staged.iter().all(|p| p.metadata().unwrap().nlink() == 2));
    std::fs::remove_file(dir.join("3.")).unwrap();
    std::fs::remove_file(dir.join("2.")).unwrap();

    let problems = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert_eq!(problems.problems().count(), 2, "{:?}", problems.findings);

    // A reader finds UID 3 through the restore path.
    let m = open(&s);
    assert_eq!(m.read_message(3).unwrap(), msg(3));
    // That restore also brought back UID 2 (same tidy pass).
    assert_eq!(m.read_message(2).unwrap(), msg(2));
    assert!(verify_warnings(&dir).is_empty());
    // Restored names were settled: the staged names of 2 and 3 are gone.
    let left = std::fs::read_dir(dir.join(".stage")).unwrap().count();
    assert!(left <= 1, "{left} staged names left");
}

/// `idx-admin recover`'s path restores too, and a staged file that matches
/// no record (a dead writer's uncommitted message) is removed.
#[test]
fn recover_restores_and_removes_debris() {
    let (_t, s, dir) = setup(2);
    std::fs::remove_file(dir.join("2.")).unwrap();
    std::fs::write(
        dir.join(".stage").join("999.1.0"),
        b"Subject: x\r\n\r\nnever committed\r\n",
    )
    .unwrap();
    let mut m = open(&s);
    let out = m.recover().unwrap();
    assert_eq!(out.restored, vec![2]);
    assert_eq!(out.stage_removed, 1);
    assert_eq!(m.read_message(2).unwrap(), msg(2));
    assert_eq!(std::fs::read_dir(dir.join(".stage")).unwrap().count(), 0);
    assert!(verify_warnings(&dir).is_empty());
}

/// A power cut undid the removal of an aborted commit's leftover `3.`
/// while the committed message that reused UID 3 only kept its staged
/// name: `3.` holds the old bytes. Recovery takes the staged copy (size
/// and CRC32 match the record) over the stale file, instead of deleting
/// the only good copy as a dead writer's.
#[test]
fn stale_file_under_a_committed_uid_is_replaced_from_stage() {
    let (_t, s, dir) = setup(3);
    std::fs::remove_file(dir.join("3.")).unwrap();
    std::fs::write(
        dir.join("3."),
        b"Subject: aborted\r\n\r\nleftover of a failed commit\r\n",
    )
    .unwrap();
    let mut m = open(&s);
    let out = m.recover().unwrap();
    assert_eq!(out.restored, vec![3]);
    assert_eq!(m.read_message(3).unwrap(), msg(3));
    assert!(verify_warnings(&dir).is_empty());
    let m2 = open(&s);
    assert_eq!(m2.read_message(3).unwrap(), msg(3));
}

/// Staged names are dropped in batches: never more than one settle
/// interval of them, and none after recover.
#[test]
fn staged_names_are_settled_in_batches() {
    let n = mailstore::internals::stage::SETTLE_EVERY * 2 + 5;
    let (_t, s, dir) = setup(n);
    let left = std::fs::read_dir(dir.join(".stage")).unwrap().count() as u32;
    assert!(
        left < mailstore::internals::stage::SETTLE_EVERY,
        "{left} staged names"
    );
    assert_eq!(left, n % mailstore::internals::stage::SETTLE_EVERY);
    let mut m = open(&s);
    assert_eq!(m.recover().unwrap().settled, left);
    assert_eq!(std::fs::read_dir(dir.join(".stage")).unwrap().count(), 0);
    for uid in 1..=n {
        assert_eq!(m.read_message(uid).unwrap(), msg(uid));
    }
}

/// A killed append (no writer mark) leaves its staged file; the next
/// settle sees it and runs the recovery, which removes it.
#[test]
fn dead_appenders_staged_file_is_cleared_at_the_next_settle() {
    let (_t, s, dir) = setup(3);
    let debris = dir.join(".stage").join("4242.1.0");
    std::fs::write(&debris, b"Subject: killed\r\n\r\nnever committed\r\n").unwrap();
    let mut m = open(&s);
    for i in 4..=mailstore::internals::stage::SETTLE_EVERY {
        m.append(&msg(i)[..], AppendOptions::default()).unwrap();
    }
    assert!(!debris.exists(), "debris left after the settle");
    assert!(verify_warnings(&dir).is_empty());
}

/// `idx-admin reconstruct` after a power loss took a `UID.` name: the
/// message is restored from `.stage`, not dropped as missing.
#[test]
fn reconstruct_restores_from_stage_before_pairing_files() {
    let (_t, s, dir) = setup(3);
    std::fs::remove_file(dir.join("3.")).unwrap();
    let out =
        mailstore::recovery::reconstruct(&dir, mailstore::Durability::Full, Duration::from_secs(5))
            .unwrap();
    assert!(out.dropped_missing.is_empty(), "{out:?}");
    let m = open(&s);
    assert_eq!(m.read_message(3).unwrap(), msg(3));
    assert!(verify_warnings(&dir).is_empty());
}

#[test]
fn small_appends_are_unordered_and_other_commits_clear_the_flag() {
    let (_t, s, dir) = setup(2);
    let h = newest(&dir);
    assert_eq!(newest_version(&dir), mailstore::format::VERSION);
    assert!(h.is_unordered(), "{h:?}");

    let mut m = open(&s);
    m.store(&[1], FlagOp::Add, mailstore::format::Flags::SEEN, &[], None)
        .unwrap();
    assert!(!newest(&dir).is_unordered());

    // A message above the limit is flushed before its commit: ordered.
    let big = vec![b'x'; UNORDERED_MAX_SIZE as usize + 1];
    m.append(&big[..], AppendOptions::default()).unwrap();
    assert!(!newest(&dir).is_unordered());
    m.append(&msg(4)[..], AppendOptions::default()).unwrap();
    assert!(newest(&dir).is_unordered());
    // A writer that turned unordered appends off flushes each message
    // before its commit, as format version 2 did.
    m.set_unordered_appends(false);
    m.append(&msg(5)[..], AppendOptions::default()).unwrap();
    assert!(!newest(&dir).is_unordered());
    assert!(verify_warnings(&dir).is_empty());
}

/// The bytes of the last message did not reach the disk (its file, under
/// both names, holds zeros or nothing): readers use the previous
/// generation, verify names the record's offset, the UID is retired
/// (that delivery was never acknowledged) and recovery cleans up.
#[test]
fn records_without_their_message_fall_back_to_the_previous_generation() {
    for damage in ["zeroed", "empty", "gone"] {
        let (_t, s, dir) = setup(3);
        let h3 = newest(&dir);
        assert!(h3.is_unordered());
        let path = dir.join("3.");
        // The staged name is the same inode until the next settle.
        let staged: Vec<_> = std::fs::read_dir(dir.join(".stage"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        let len = std::fs::metadata(&path).unwrap().len();
        match damage {
            "zeroed" => std::fs::write(&path, vec![0u8; len as usize]).unwrap(),
            "empty" => std::fs::write(&path, b"").unwrap(),
            _ => {
                for p in staged.iter().chain([&path]) {
                    if std::fs::read(p).unwrap() == msg(3) {
                        std::fs::remove_file(p).unwrap();
                    }
                }
            }
        }

        let off = Header::record_offset(2);
        assert_fell_back_and_retires_uid_3(&s, &dir, &h3, off, damage);
    }
}

/// The power loss kept the message's bytes and its staged name but not
/// its `UID.` name: the commit is complete and the message is served.
#[test]
fn message_found_under_its_staged_name_keeps_the_commit() {
    let (_t, s, dir) = setup(3);
    let h3 = newest(&dir);
    std::fs::remove_file(dir.join("3.")).unwrap();
    let mut m = open(&s);
    assert_eq!(m.header().unwrap().generation, h3.generation);
    assert_eq!(m.read_message(3).unwrap(), msg(3));
    assert!(verify_warnings(&dir).is_empty());
}

/// Messages above the limit are not read by the check: a commit of one
/// is ordered, and damage to it is what verify reports, not a fallback.
#[test]
fn large_messages_are_never_read_to_check_a_slot() {
    let (_t, s, dir) = setup(1);
    let mut m = open(&s);
    let big = vec![b'y'; UNORDERED_MAX_SIZE as usize + 10];
    let small = msg(9);
    let staged = vec![
        m.stage(&big[..], AppendOptions::default()).unwrap(),
        m.stage(&small[..], AppendOptions::default()).unwrap(),
    ];
    assert_eq!(m.commit(staged).unwrap(), vec![2, 3]);
    let h = newest(&dir);
    assert!(h.is_unordered());
    // Truncating the large one does not make the slot fall back (it was
    // flushed before the commit; its damage is not a crash state).
    std::fs::write(dir.join("2."), b"").unwrap();
    let mut fresh = open(&s);
    assert_eq!(fresh.header().unwrap().generation, h.generation);
    assert_eq!(fresh.read_message(3).unwrap(), small);
}

/// PROTOCOL.md §4, "Which records are read": a power loss can leave an
/// in-place commit's record on disk without its header and without the
/// writer mark that would make the next locker recount. Counting by
/// delta on top would keep the header wrong; the reboot voids the count
/// stamp, so the first in-place commit after it recounts every record.
#[test]
fn first_in_place_commit_after_a_reboot_recounts() {
    let (_t, s, dir) = setup(400);
    let mut m = open(&s);
    // Recounted in this boot: the count stamp is written.
    m.store(&[1], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    let h = newest(&dir);
    // The power cut: record 200 (UID 201) reached the disk with \Seen
    // and a MODSEQ above the header's; the header and the mark did not.
    let f = index(&dir);
    let off = Header::record_offset(200);
    let mut buf = vec![0u8; RECORD_SIZE];
    f.read_exact_at(&mut buf, off).unwrap();
    let mut r = mailstore::Record::decode(&buf).unwrap();
    assert_eq!(r.uid, 201);
    r.flags = r.flags.union(Flags::SEEN);
    r.modseq = h.highestmodseq + 1;
    f.write_all_at(&r.encode(), off).unwrap();
    reboot();
    let mut m = open(&s);
    // A commit that changes nothing recounts, finds the header wrong and
    // leaves the index unstamped (stamping it would let the next commit
    // count by delta on top of the drift).
    let out = m
        .store(&[7], FlagOp::Remove, Flags::FLAGGED, &[], None)
        .unwrap();
    assert!(out.changed.is_empty());
    m.store(&[7], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let snap = m.snapshot().unwrap();
    let mut counted = snap.header.clone();
    counted.recount(&snap.records);
    assert_eq!(counted, snap.header, "header counters after the reboot");
    assert_eq!(snap.header.seen, 2);
}

/// Whether the index in `dir` carries this boot's count stamp.
fn counted_now(dir: &Path) -> bool {
    let idx =
        mailstore::internals::index::IndexFile::open(&mailstore::Dir::open_root(dir).unwrap())
            .unwrap();
    idx.read_header_detail().unwrap();
    idx.counted_this_boot()
}

#[test]
fn a_new_mailbox_is_counted_in_the_boot_that_made_it() {
    // Created and filled by appends only (as `idx-admin import` fills
    // one): its header counts every record, so its first in-place writer
    // keeps the counters by delta instead of reading every record.
    let same_boot = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let (_t, s, dir) = setup(50);
    assert!(counted_now(&dir), "a new index carries the count stamp");
    let mut m = open(&s);
    m.store(&[3, 9], FlagOp::Add, Flags::SEEN, &[], None)
        .unwrap();
    let snap = m.snapshot().unwrap();
    let mut counted = snap.header.clone();
    counted.recount(&snap.records);
    assert_eq!(counted, snap.header, "counters kept by delta");
    // After a power loss the stamp means nothing any more: the first
    // in-place writer recounts (see the test above).
    mailstore::internals::fault::simulate_reboot();
    assert!(!counted_now(&dir), "a stamp of another boot");
    // A repack writes a new file counted in this boot.
    let mut m = open(&s);
    m.expunge(Some(&[5]), false).unwrap();
    m.repack().unwrap();
    assert!(
        counted_now(&dir),
        "a repacked index carries the count stamp"
    );
    drop(same_boot);
}
