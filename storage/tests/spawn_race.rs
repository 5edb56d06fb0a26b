//! A process whose threads start programs while it writes mail (the LMTP
//! server sends vacation replies and redirects through sendmail): a child
//! made by fork or posix_spawn shares every open file description of the
//! parent until its exec closes them. A liveness lock released only by
//! closing the file would stay held for that moment, and settling or
//! recovery, which probe staged files for a live writer with a lock that
//! does not wait, would take the finished writer's file for a live one and
//! leave it in `.stage`. The store releases those locks explicitly, so a
//! settle right after an append always finds the append's staged name free.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mailstore::mailbox::AppendOptions;
use mailstore::{MailboxName, Options, Store, UserName};

/// Appends (each followed by a recovery) in the test.
const ROUNDS: u32 = 600;

#[test]
fn settling_beside_a_thread_that_starts_programs_finds_every_finished_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path(), Options::default()).unwrap();
    let user = UserName::new("spawner").unwrap();
    let name = MailboxName::new("INBOX").unwrap();
    store.create_mailbox(&user, &name).unwrap();
    let dir = store.mailbox_path(&user, &name);
    let mut m = store.open_mailbox(&user, &name).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    // Two threads, so that some child is between its fork and its exec
    // most of the time.
    let spawners: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    std::process::Command::new("true").status().unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut left = Vec::new();
    for i in 0..ROUNDS {
        let body = format!("Message-ID: <s{i}@test>\r\n\r\nbody {i}\r\n");
        m.append(body.as_bytes(), AppendOptions::default()).unwrap();
        // Recovery settles: the append's staged name has a `UID.` twin
        // and no live writer, so it goes.
        m.recover().unwrap();
        let n = std::fs::read_dir(dir.join(".stage")).unwrap().count();
        if n != 0 {
            left.push((i, n));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let spawned: u64 = spawners.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        spawned > 50,
        "the other thread started only {spawned} programs"
    );
    assert!(
        left.is_empty(),
        "staged names left after recovery (append, names left): {left:?} of {ROUNDS}, {spawned} programs started"
    );
}
