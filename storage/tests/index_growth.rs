//! The index file's growth (PROTOCOL.md §3, "Index growth") when it
//! fails: a growth cut short must never be trusted by a later append,
//! since only a completed growth is synced before records land in it.
//! Alone in its test binary: it lowers the process's file size limit.

use mailstore::format::Header;
use mailstore::internals::index::GROW_STEP;
use mailstore::mailbox::AppendOptions;
use mailstore::{Durability, MailboxName, Options, Store, UserName};

fn msg(i: u32) -> Vec<u8> {
    format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn set_file_size_limit(limit: libc::rlim_t) {
    let lim = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain system calls on this process's own settings.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
}

#[test]
fn a_growth_cut_short_is_undone_and_an_odd_length_is_grown_again() {
    let t = tempfile::tempdir().unwrap();
    let spool = t.path().join("spool");
    let u = UserName::new("g").unwrap();
    let inbox = MailboxName::inbox();
    let relaxed = Options {
        durability: Durability::Relaxed,
        ..Options::default()
    };
    let fast = Store::open(&spool, relaxed).unwrap();
    fast.create_mailbox(&u, &inbox).unwrap();
    let index = fast.mailbox_path(&u, &inbox).join(".index");
    let len = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();

    // Fill the first growth step exactly.
    let mut m = fast.open_mailbox(&u, &inbox).unwrap();
    let mut n = 0u32;
    while Header::record_offset(n + 1) <= GROW_STEP {
        n += 1;
        assert_eq!(m.append(&msg(n)[..], AppendOptions::default()).unwrap(), n);
    }
    drop(m);
    assert_eq!(len(&index), GROW_STEP);

    // The next append needs a growth, which the disk cuts short.
    let s = Store::open(&spool, Options::default()).unwrap();
    let mut m = s.open_mailbox(&u, &inbox).unwrap();
    set_file_size_limit(GROW_STEP + 8192);
    let r = m.append(&msg(n + 1)[..], AppendOptions::default());
    set_file_size_limit(libc::RLIM_INFINITY);
    assert!(r.is_err(), "the growth must fail: {r:?}");
    assert_eq!(len(&index), GROW_STEP, "the partial growth was not undone");
    assert_eq!(m.header().unwrap().num_records, n);

    // A length that is no whole number of steps (a growth whose undo
    // failed, or a file written whole) is grown again before use.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&index)
        .unwrap()
        .set_len(GROW_STEP + 1000)
        .unwrap();
    let mut m = s.open_mailbox(&u, &inbox).unwrap();
    assert_eq!(
        m.append(&msg(n + 1)[..], AppendOptions::default()).unwrap(),
        n + 1
    );
    assert_eq!(len(&index), 2 * GROW_STEP);
    assert_eq!(m.read_message(n + 1).unwrap(), msg(n + 1));
    let report = mailstore::verify::verify_path(
        &s.mailbox_path(&u, &inbox),
        std::time::Duration::from_secs(5),
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}
