//! The import write paths (PROTOCOL.md §3a): a mailbox created with a
//! source's UIDVALIDITY, messages committed under the source's UIDs (gaps
//! allowed), UIDNEXT continued after the source's next UID. RFC 3501
//! 2.3.1.1: a UID is never reused under one UIDVALIDITY, and UIDVALIDITY
//! changes whenever UIDs are not kept.

use std::time::Duration;

use mailstore::format::Flags;
use mailstore::mailbox::AppendOptions;
use mailstore::{Error, MailboxName, Options, Store, UserName};

/// An empty store in a temporary directory.
fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("spool");
    (tmp, Store::open(&root, Options::default()).unwrap())
}

fn user() -> UserName {
    UserName::new("importer").unwrap()
}

fn msg(i: u32) -> Vec<u8> {
    format!("Subject: m{i}\r\n\r\nbody {i}\r\n").into_bytes()
}

fn verify_clean(s: &Store, name: &MailboxName) {
    let dir = s.mailbox_path(&user(), name);
    let report = mailstore::verify::verify_path(&dir, Duration::from_secs(5)).unwrap();
    assert!(report.findings.is_empty(), "verify: {:?}", report.findings);
}

/// RFC 3501 2.3.1.1: the source's UIDVALIDITY is kept exactly; a value at
/// or below the last one handed out for the user is refused (it may have
/// named another mailbox), and creating "avoiding" never yields it.
#[test]
fn uidvalidity_given_must_be_above_every_handed_out() {
    let (_t, s) = store();
    let inbox = MailboxName::inbox();
    let sent = MailboxName::new("Sent").unwrap();
    let other = MailboxName::new("Other").unwrap();
    s.create_mailbox_with_uidvalidity(&user(), &inbox, 4_000_000_000)
        .unwrap();
    let mut m = s.open_mailbox(&user(), &inbox).unwrap();
    assert_eq!(m.header().unwrap().uidvalidity, 4_000_000_000);
    match s.create_mailbox_with_uidvalidity(&user(), &sent, 4_000_000_000) {
        Err(Error::UidValidityUsed { wanted, last }) => {
            assert_eq!((wanted, last), (4_000_000_000, 4_000_000_000))
        }
        r => panic!("reused UIDVALIDITY: {r:?}"),
    }
    assert!(!s.mailbox_exists(&user(), &sent).unwrap());
    // A mailbox created the ordinary way afterwards gets a higher value.
    s.create_mailbox(&user(), &sent).unwrap();
    let v = s
        .open_mailbox(&user(), &sent)
        .unwrap()
        .header()
        .unwrap()
        .uidvalidity;
    assert!(v > 4_000_000_000);
    let w = s.create_mailbox_avoiding(&user(), &other, v + 1).unwrap();
    assert_eq!(w, v + 2, "avoiding the source's value skips it");
    // Existing mailbox: MailboxExists, and the counter is not moved.
    assert!(matches!(
        s.create_mailbox_with_uidvalidity(&user(), &other, u32::MAX - 1),
        Err(Error::MailboxExists(_))
    ));
    s.create_mailbox_with_uidvalidity(&user(), &MailboxName::new("Later").unwrap(), u32::MAX - 1)
        .unwrap();
}

/// Given UIDs with gaps, UIDNEXT after the source's next UID; a UID at or
/// below last_uid (taken by a delivery meanwhile) is refused with nothing
/// written; ordinary appends continue after the reserved UIDs.
#[test]
fn commit_with_uids_keeps_them_and_never_reuses() {
    let (_t, s) = store();
    let inbox = MailboxName::inbox();
    s.create_mailbox_with_uidvalidity(&user(), &inbox, 1234)
        .unwrap();
    let mut m = s.open_mailbox(&user(), &inbox).unwrap();
    let staged = [3u32, 7, 8]
        .iter()
        .map(|&i| {
            let opts = AppendOptions {
                flags: Flags::SEEN,
                keywords: vec!["$Forwarded".into()],
                internal_date: Some(1_000_000 + i as i64),
                ..Default::default()
            };
            m.stage(&msg(i)[..], opts).unwrap()
        })
        .collect();
    assert_eq!(
        m.commit_with_uids(staged, &[3, 7, 8], Some(20)).unwrap(),
        vec![3, 7, 8]
    );
    let h = m.header().unwrap();
    assert_eq!((h.last_uid, h.exists, h.seen), (19, 3, 3));
    for i in [3u32, 7, 8] {
        assert_eq!(m.read_message(i).unwrap(), msg(i));
    }
    let snap = m.snapshot().unwrap();
    assert_eq!(snap.records[1].internal_date, 1_000_007);
    verify_clean(&s, &inbox);

    // A UID at or below last_uid: refused, nothing changes.
    let gen0 = m.header().unwrap().generation;
    let staged = vec![m.stage(&msg(19)[..], AppendOptions::default()).unwrap()];
    assert!(matches!(
        m.commit_with_uids(staged, &[19], None),
        Err(Error::UidTaken {
            uid: 19,
            last_uid: 19
        })
    ));
    let staged = vec![
        m.stage(&msg(30)[..], AppendOptions::default()).unwrap(),
        m.stage(&msg(31)[..], AppendOptions::default()).unwrap(),
    ];
    assert!(matches!(
        m.commit_with_uids(staged, &[31, 30], None),
        Err(Error::UidPlan(_))
    ));
    assert_eq!(m.header().unwrap().generation, gen0);

    // A delivery through another handle takes 20; the import's 20 fails.
    let mut other = s.open_mailbox(&user(), &inbox).unwrap();
    assert_eq!(
        other
            .append(&msg(99)[..], AppendOptions::default())
            .unwrap(),
        20
    );
    let staged = vec![m.stage(&msg(20)[..], AppendOptions::default()).unwrap()];
    assert!(matches!(
        m.commit_with_uids(staged, &[20], None),
        Err(Error::UidTaken { uid: 20, .. })
    ));
    assert_eq!(m.read_message(20).unwrap(), msg(99));

    // Reserving: UIDNEXT 40, header only; lower is a no-op.
    assert!(m.reserve_uids(40).unwrap());
    assert!(!m.reserve_uids(30).unwrap());
    assert_eq!(m.header().unwrap().last_uid, 39);
    // New UIDs after a commit_then_reserve come above both.
    let staged = vec![m.stage(&msg(50)[..], AppendOptions::default()).unwrap()];
    assert_eq!(m.commit_then_reserve(staged, 45).unwrap(), vec![40]);
    assert_eq!(m.header().unwrap().last_uid, 44);
    assert_eq!(
        m.append(&msg(51)[..], AppendOptions::default()).unwrap(),
        45
    );
    verify_clean(&s, &inbox);

    // recover and repack keep last_uid (UIDNEXT never goes down).
    m.recover().unwrap();
    m.repack().unwrap();
    assert_eq!(m.header().unwrap().last_uid, 45);
    verify_clean(&s, &inbox);
}
