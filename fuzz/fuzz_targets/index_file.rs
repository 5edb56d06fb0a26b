//! A whole index file of arbitrary bytes, read the way every reader does
//! (`Mailbox::snapshot`) and checked by `storage::verify`: no panic, no
//! hang, and a snapshot that decodes has ascending UIDs within last_uid.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use storage::{Durability, MailboxName, Options, Store, UserName};

struct Fixture {
    _tmp: tempfile::TempDir,
    spool: std::path::PathBuf,
    dir: std::path::PathBuf,
}

fn opts() -> Options {
    Options {
        durability: Durability::Relaxed,
        lock_timeout: Duration::from_secs(1),
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let store = Store::open(&spool, opts()).unwrap();
        let u = UserName::new("fz").unwrap();
        store.create_mailbox(&u, &MailboxName::inbox()).unwrap();
        let dir = store.mailbox_path(&u, &MailboxName::inbox());
        Fixture { _tmp: tmp, spool, dir }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    std::fs::write(f.dir.join(".index"), data).unwrap();
    let store = Store::open(&f.spool, opts()).unwrap();
    let u = UserName::new("fz").unwrap();
    if let Ok(snap) = store
        .open_mailbox(&u, &MailboxName::inbox())
        .and_then(|mut m| m.snapshot())
    {
        let mut prev = 0;
        for r in &snap.records {
            assert!(r.uid > prev && r.uid <= snap.header.last_uid);
            prev = r.uid;
        }
        assert_eq!(snap.records.len() as u32, snap.header.num_records);
    }
    let _ = storage::verify::verify_path(&f.dir, Duration::from_secs(1));
});
