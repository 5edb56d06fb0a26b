//! Structure-aware index files (`e2e_tests::craft`): both header slots
//! with valid CRCs and fields from interesting values (0, 1, small,
//! relative to the file, the hard limits and one past them, `u32::MAX - k`,
//! `u64::MAX - k`), genuine, damaged and extreme records, files cut short
//! or sparse far past their records. Each is opened, snapshotted, appended
//! to, changed, repacked, recovered and verified: no panic, no abort, a
//! consistent snapshot, and the index never grows by more than an
//! append's own growth. Run under libFuzzer's memory limits
//! (`-rss_limit_mb=512 -malloc_limit_mb=512`, docs/RELIABILITY.md): an
//! allocation sized by a crafted count is then a crash.
#![no_main]

use std::sync::OnceLock;

use e2e_tests::craft::{Choices, exercise, index_file, install};
use libfuzzer_sys::fuzz_target;

struct Fixture {
    _tmp: tempfile::TempDir,
    spool: std::path::PathBuf,
    dir: std::path::PathBuf,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let spool = tmp.path().join("spool");
        let store = e2e_tests::reliability::make_user(&spool, "fz", &[]);
        let dir = store.mailbox_path(
            &storage::UserName::new("fz").unwrap(),
            &storage::MailboxName::inbox(),
        );
        Fixture {
            _tmp: tmp,
            spool,
            dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    install(&f.dir, &index_file(&mut Choices::new(data)));
    exercise(&f.spool, "fz", &f.dir);
});
