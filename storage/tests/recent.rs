//! `mailstore::recent`, the per-mailbox `\Recent` claim (FORMAT.md §8,
//! PROTOCOL.md §10): claims are exclusive across handles (as across
//! processes: OFD locks), survive repack and reconstruct, and a new
//! UIDVALIDITY voids them.

use std::time::Duration;

use mailstore::{AppendOptions, Durability, MailboxName, Options, Store, UserName};

fn msg(i: u32) -> Vec<u8> {
    format!("Subject: r{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

/// Mailbox `Box` of user `r` holding four messages, opened with `opts`.
struct Fixture {
    _tmp: tempfile::TempDir,
    spool: std::path::PathBuf,
    store: Store,
    user: UserName,
    name: MailboxName,
    m: mailstore::Mailbox,
    uv: u32,
}

fn fixture(opts: Options) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let store = Store::open(&spool, opts).unwrap();
    let user = UserName::new("r").unwrap();
    let name = MailboxName::new("Box").unwrap();
    store.create_mailbox(&user, &name).unwrap();
    let mut m = store.open_mailbox(&user, &name).unwrap();
    for i in 1..=4 {
        m.append(&msg(i)[..], AppendOptions::default()).unwrap();
    }
    let uv = m.header().unwrap().uidvalidity;
    Fixture {
        _tmp: tmp,
        spool,
        store,
        user,
        name,
        m,
        uv,
    }
}

/// RFC 3501 2.3.2: each UID is claimed by exactly one claimer, however
/// many handles race for it; looking never claims.
#[test]
fn claims_are_exclusive_and_survive_repack_and_reconstruct() {
    let Fixture {
        _tmp,
        spool,
        store,
        user,
        name,
        mut m,
        uv,
    } = fixture(Options::default());
    assert_eq!(m.recent_claimed(uv).unwrap(), 0, "nothing claimed yet");
    // Eight threads with their own handles claim up to 1..=4 at once:
    // every UID goes to exactly one of them.
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let spool = spool.clone();
            let (user, name) = (user.clone(), name.clone());
            std::thread::spawn(move || {
                let s = Store::open(&spool, Options::default()).unwrap();
                let m = s.open_mailbox(&user, &name).unwrap();
                let up_to = 1 + t % 4;
                let before = m.recent_claim(uv, up_to).unwrap();
                (before + 1..=up_to).collect::<Vec<u32>>()
            })
        })
        .collect();
    let mut got: Vec<u32> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    got.sort();
    let highest = *got.last().unwrap();
    assert_eq!(got, (1..=highest).collect::<Vec<_>>(), "each UID once");
    assert_eq!(m.recent_claimed(uv).unwrap(), highest);
    assert_eq!(m.recent_claim(uv, 4).unwrap(), highest);
    assert_eq!(m.recent_claim(uv, 2).unwrap(), 4, "never goes back");
    assert_eq!(m.recent_claimed(uv).unwrap(), 4);

    // Repack (after an expunge) keeps UIDs and UIDVALIDITY, so the claim.
    m.store(
        &[2],
        mailstore::FlagOp::Add,
        mailstore::Flags::DELETED,
        &[],
        None,
    )
    .unwrap();
    m.expunge(None, true).unwrap();
    m.repack().unwrap();
    assert_eq!(m.recent_claimed(uv).unwrap(), 4);
    m.append(&msg(5)[..], AppendOptions::default()).unwrap();
    assert_eq!(m.recent_claim(uv, 5).unwrap(), 4);

    // Reconstruct with a readable header keeps UIDVALIDITY too.
    let dir = store.mailbox_path(&user, &name);
    let out =
        mailstore::recovery::reconstruct(&dir, Durability::Full, Duration::from_secs(5)).unwrap();
    assert!(!out.uidvalidity_changed);
    let m = store.open_mailbox(&user, &name).unwrap();
    assert_eq!(m.recent_claimed(uv).unwrap(), 5);
    // Another UIDVALIDITY: the old claim says nothing.
    assert_eq!(m.recent_claimed(uv + 1).unwrap(), 0);
    assert_eq!(m.recent_claim(uv + 1, 3).unwrap(), 0);
    assert_eq!(m.recent_claimed(uv).unwrap(), 0);
}

/// PROTOCOL.md §10: a session that learns of messages someone already
/// claimed is answered from a read without the lock (one delivery wakes
/// every idler, and all but the first find it claimed), so it does not
/// wait for the claim file's lock; a session with something left to claim
/// still takes it.
#[test]
fn an_already_claimed_range_needs_no_lock() {
    let Fixture { _tmp, m, uv, .. } = fixture(Options {
        lock_timeout: Duration::from_millis(300),
        ..Options::default()
    });
    assert_eq!(m.recent_claim(uv, 4).unwrap(), 0);
    let path = m
        .dir()
        .child_path(std::ffi::OsStr::new(mailstore::recent::RECENT_NAME));
    let _held = mailstore::internals::lock::hold(
        &path,
        mailstore::internals::lock::LockKind::Exclusive,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(m.recent_claim(uv, 3).unwrap(), 4, "claimed: no lock needed");
    assert_eq!(m.recent_claim(uv, 4).unwrap(), 4, "claimed: no lock needed");
    assert!(
        m.recent_claim(uv, 5).is_err(),
        "something to claim: waits for the lock (and times out here)"
    );
}
