//! Duplicate suppression in one-shot mode (`--dedup-window`, config
//! `dedup_window`) through the real binary: the same Message-ID into the
//! same mailbox within the window is accepted (exit 0) and stored once.
//! LMTP's duplicate tests are in `lmtp.rs`.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::{Spool, assert_failed, assert_no_stray_staged, stderr};
use storage::Dir;
use storage::dedup::{DEDUP_NAME, DedupLog, ENTRY_SIZE, Entry, Key};

const MSG: &[u8] = b"Subject: dup\nMessage-ID: <dup1@example.org>\n\nbody\n";
const ID: &str = "<dup1@example.org>";

fn ok(o: &std::process::Output) -> String {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(0), "stderr: {err}");
    err
}

fn assert_delivered(o: &std::process::Output) {
    let err = ok(o);
    assert!(err.contains("delivered") && err.contains("uid="), "{err}");
    assert!(!err.contains("duplicate suppressed"), "{err}");
}

fn assert_suppressed(o: &std::process::Output, mailbox: &str) {
    let err = ok(o);
    assert!(err.contains("duplicate suppressed"), "{err}");
    assert!(err.contains("user=alice"), "{err}");
    assert!(err.contains(&format!("mailbox={mailbox}")), "{err}");
    assert!(err.contains("dup1@example.org"), "{err}");
    assert!(!err.contains("uid="), "{err}");
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn same_message_id_twice_is_stored_once() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "3600"];
    assert_delivered(&s.deliver(&args, MSG));
    let before = s.fingerprint("alice", "INBOX");
    // Different bytes, same Message-ID (a resent copy): still a duplicate.
    let resent = b"Received: from relay2\nSubject: dup\nMessage-ID:  <dup1@example.org> \n\nbody\n";
    assert_suppressed(&s.deliver(&args, resent), "INBOX");
    assert_suppressed(&s.deliver(&args, MSG), "INBOX");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    let after = s.fingerprint("alice", "INBOX");
    assert_eq!(after, before, "mailbox unchanged, staging too");
    assert_no_stray_staged(&s, "alice", "INBOX");
    // One entry: the suppressed deliveries recorded nothing.
    let log = s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME);
    assert_eq!(std::fs::metadata(log).unwrap().len(), ENTRY_SIZE as u64);
}

#[test]
fn without_the_window_it_is_stored_twice_and_no_log_is_made() {
    let s = Spool::with_users(&["alice"]);
    assert_delivered(&s.deliver(&["-d", "alice"], MSG));
    assert_delivered(&s.deliver(&["-d", "alice", "--dedup-window", "0"], MSG));
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
    assert!(!s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME).exists());
}

#[test]
fn config_key_turns_it_on_and_the_flag_overrides_it() {
    let s = Spool::with_users(&["alice"]);
    s.set_config("dedup_window = 600\n");
    assert_delivered(&s.deliver(&["-d", "alice"], MSG));
    assert_suppressed(&s.deliver(&["-d", "alice"], MSG), "INBOX");
    assert_delivered(&s.deliver(&["-d", "alice", "--dedup-window", "0"], MSG));
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
    s.set_config("dedup_window = soon\n");
    assert_failed(&s.deliver(&["-d", "alice"], MSG), 75, "4.3.0");
}

#[test]
fn different_mailboxes_each_get_a_copy() {
    let s = Spool::with_users(&["alice", "bob"]);
    s.create("alice", "Work");
    let w = ["--dedup-window", "3600"];
    let run = |user: &str, mb: Option<&str>| {
        let mut a = vec!["-d", user];
        if let Some(m) = mb {
            a.extend(["-m", m]);
        }
        a.extend(w);
        s.deliver(&a, MSG)
    };
    assert_delivered(&run("alice", None));
    assert_delivered(&run("alice", Some("Work")));
    assert_delivered(&run("bob", None));
    assert_suppressed(&run("alice", Some("Work")), "Work");
    assert_suppressed(&run("alice", None), "INBOX");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    assert_eq!(s.messages("alice", "Work").len(), 1);
    assert_eq!(s.messages("bob", "INBOX").len(), 1);
}

#[test]
fn outside_the_window_it_is_stored_again() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "1"];
    assert_delivered(&s.deliver(&args, MSG));
    std::thread::sleep(Duration::from_secs(2));
    assert_delivered(&s.deliver(&args, MSG));
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
}

#[test]
fn entries_written_by_hand_old_and_recent() {
    let s = Spool::with_users(&["alice"]);
    let log = s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME);
    let key = Key::from_message_id(ID).unwrap();
    let entry = |age: i64| {
        Entry {
            time: unix_now() - age,
            key,
        }
        .encode()
    };
    // An entry two hours old, window one hour: stored.
    std::fs::write(&log, entry(7200)).unwrap();
    let args = ["-d", "alice", "--dedup-window", "3600"];
    assert_delivered(&s.deliver(&args, MSG));
    // An entry ten minutes old (written by someone else): suppressed.
    std::fs::write(&log, entry(600)).unwrap();
    assert_suppressed(&s.deliver(&args, MSG), "INBOX");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
}

#[test]
fn without_message_id_never_suppressed() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "3600"];
    for msg in [
        &b"Subject: no id\n\nbody\n"[..],
        b"Subject: no id\n\nbody\n",
        b"Subject: empty id\nMessage-ID: \n\nbody\n",
        b"Subject: empty id\nMessage-ID:\n\nbody\n",
    ] {
        assert_delivered(&s.deliver(&args, msg));
    }
    assert_eq!(s.messages("alice", "INBOX").len(), 4);
    // Nothing to look up, so the log was never created.
    assert!(!s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME).exists());
}

#[test]
fn corrupt_log_warns_and_delivery_still_works() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "3600"];
    let log = s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME);
    // A valid entry for our Message-ID whose CRC no longer matches: it
    // must not be trusted (the message is stored), and it is reported.
    let mut bad = Entry {
        time: unix_now(),
        key: Key::from_message_id(ID).unwrap(),
    }
    .encode();
    bad[30] ^= 0xff;
    let mut bytes = bad.to_vec();
    bytes.extend_from_slice(b"\xde\xad\xbe\xef torn");
    std::fs::write(&log, &bytes).unwrap();
    let env = [("RUST_LOG", "warn,deliver=info")];
    let o = s.deliver_env(&args, MSG, &env);
    let err = ok(&o);
    assert!(err.contains("delivered"), "{err}");
    assert!(!err.contains("panic"), "{err}");
    assert!(
        err.contains("damaged duplicate log entry") && err.contains("byte offset 0"),
        "{err}"
    );
    assert!(err.contains("byte offset 32"), "{err}");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    // The record after the commit rewrote the log without the damage.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), ENTRY_SIZE as u64);
    let o = s.deliver_env(&args, MSG, &env);
    assert!(!stderr(&o).contains("damaged"), "{}", stderr(&o));
    assert_suppressed(&o, "INBOX");
    // Garbage of any length: no panic, delivered.
    std::fs::write(&log, vec![0xffu8; 1000]).unwrap();
    let other = b"Subject: other\nMessage-ID: <other@example.org>\n\nbody\n";
    assert_delivered(&s.deliver(&args, other));
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
}

#[test]
fn busy_log_is_a_temporary_failure_and_changes_nothing() {
    let s = Spool::with_users(&["alice"]);
    let dir = Dir::open_root(&s.mailbox_dir("alice", "INBOX")).unwrap();
    let mut held = DedupLog::open_in(&dir, Duration::from_secs(1)).unwrap();
    let guard = held.lock().unwrap();
    let before = s.fingerprint("alice", "INBOX");
    let args = [
        "-d",
        "alice",
        "--dedup-window",
        "3600",
        "--lock-timeout-ms",
        "200",
    ];
    let o = s.deliver(&args, MSG);
    assert_failed(&o, 75, "4.2.0");
    assert!(stderr(&o).contains(".dedup"), "{}", stderr(&o));
    assert_eq!(s.fingerprint("alice", "INBOX"), before);
    drop(guard);
    assert_delivered(&s.deliver(&args, MSG));
}

#[test]
fn symlinked_log_is_refused() {
    let s = Spool::with_users(&["alice"]);
    let dir = s.mailbox_dir("alice", "INBOX");
    let target = s.tmp.path().join("elsewhere");
    std::fs::write(&target, b"").unwrap();
    std::os::unix::fs::symlink(&target, dir.join(DEDUP_NAME)).unwrap();
    let before = s.fingerprint("alice", "INBOX");
    let o = s.deliver(&["-d", "alice", "--dedup-window", "60"], MSG);
    assert_failed(&o, 77, "5.7.0");
    assert_eq!(s.fingerprint("alice", "INBOX"), before);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 0, "not written");
}

#[test]
fn failed_commit_records_nothing_so_the_retry_is_stored() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "3600"];
    for point in ["append.after_lock", "append.after_records"] {
        let spec = format!("{point}=error");
        let o = s.deliver_env(&args, MSG, &[("MAILSTORE_TEST_FAULT", &spec)]);
        assert_failed(&o, 75, "4.3.0");
        assert!(s.messages("alice", "INBOX").is_empty(), "after {point}");
    }
    // Postfix's retry: stored, not suppressed.
    assert_delivered(&s.deliver(&args, MSG));
    assert_suppressed(&s.deliver(&args, MSG), "INBOX");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
}

#[test]
fn concurrent_deliveries_of_one_message_store_it_once() {
    let s = Spool::with_users(&["alice"]);
    let args = ["-d", "alice", "--dedup-window", "3600"];
    const N: usize = 8;
    let outs: Vec<std::process::Output> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..N).map(|_| sc.spawn(|| s.deliver(&args, MSG))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let delivered = outs
        .iter()
        .filter(|o| !ok(o).contains("duplicate suppressed"))
        .count();
    assert_eq!(delivered, 1, "exactly one process stored it");
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    assert_no_stray_staged(&s, "alice", "INBOX");
    // The log also survives being appended to by many processes.
    let log = s.mailbox_dir("alice", "INBOX").join(DEDUP_NAME);
    let f = std::fs::File::open(log).unwrap();
    let mut b = [0u8; ENTRY_SIZE];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(
        Entry::decode(&b).unwrap().key,
        Key::from_message_id(ID).unwrap()
    );
}
