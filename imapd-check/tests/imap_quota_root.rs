//! QUOTA (RFC 9208) from the store's quota config: GETQUOTAROOT,
//! GETQUOTA, SETQUOTA refused, and MULTIAPPEND's quota check over the
//! whole batch.

mod imap_common;

use imap_common::*;
use storage::{MailboxName, UserName};

fn quota_line(used: u64, limit_kib: u64) -> String {
    format!("* QUOTA \"\" (STORAGE {} {limit_kib})", used.div_ceil(1024))
}

/// RFC 9208 §4.1.1-§4.1.3, §5.1 (STORAGE in units of 1024 octets, usage
/// rounded up), §4.1.2 (a mailbox's roots; none for a user without a
/// limit), RFC 3502 §6.3.11 (MULTIAPPEND over quota appends nothing).
#[test]
fn quota_roots_follow_the_store_config() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let conf = tmp.path().join("mailstore.conf");
    std::fs::write(&conf, "quota.alice = 10K\n").unwrap();
    // SAFETY: the only test in this binary; set before any thread reads it.
    unsafe { std::env::set_var("MAILSTORE_CONFIG", &conf) };
    let store = seed_messages(&spool, "alice", 2);
    let alice = UserName::new("alice").unwrap();
    store
        .create_mailbox(&alice, &MailboxName::new("Work").unwrap())
        .unwrap();
    seed_store(&spool, "bob");
    let used = store.usage(&alice).unwrap();
    assert!(used > 0 && used < 1024);

    let mut c = Client::spawn(&spool, "alice");
    assert_eq!(
        c.ok("GETQUOTAROOT INBOX"),
        vec![
            "* QUOTAROOT \"INBOX\" \"\"".to_string(),
            quota_line(used, 10)
        ]
    );
    assert_eq!(
        c.ok("GETQUOTAROOT Work"),
        vec![
            "* QUOTAROOT \"Work\" \"\"".to_string(),
            quota_line(used, 10)
        ]
    );
    assert_eq!(c.ok("GETQUOTA \"\""), vec![quota_line(used, 10)]);
    let (_, tagged) = c.cmd("GETQUOTA \"other\"");
    assert!(tagged.contains(" NO "), "{tagged}");
    let (_, tagged) = c.cmd("GETQUOTAROOT Nowhere");
    assert!(tagged.contains("NO [NONEXISTENT]"), "{tagged}");
    let (_, tagged) = c.cmd("SETQUOTA \"\" (STORAGE 100000)");
    assert!(tagged.contains(" NO "), "{tagged}");
    assert_eq!(c.ok("GETQUOTA \"\""), vec![quota_line(used, 10)]);

    // Each message alone fits; both do not: nothing is appended.
    let big = format!("Subject: big\r\n\r\n{}", "y".repeat(6000));
    let n = big.len();
    let (_, tagged) = c.cmd(&format!("APPEND Work {{{n}+}}\r\n{big} {{{n}+}}\r\n{big}"));
    assert!(tagged.contains("NO [OVERQUOTA]"), "{tagged}");
    assert_eq!(
        c.ok("STATUS Work (MESSAGES)"),
        vec!["* STATUS \"Work\" (MESSAGES 0)"]
    );
    c.ok(&format!("APPEND Work {{{n}+}}\r\n{big}"));
    let now = store.usage(&alice).unwrap();
    assert_eq!(now, used + n as u64);
    assert_eq!(c.ok("GETQUOTA \"\""), vec![quota_line(now, 10)]);
    c.ok("LOGOUT");

    // No limit, no quota root.
    let mut c = Client::spawn(&spool, "bob");
    assert_eq!(c.ok("GETQUOTAROOT INBOX"), vec!["* QUOTAROOT \"INBOX\""]);
    let (_, tagged) = c.cmd("GETQUOTA \"\"");
    assert!(tagged.contains(" NO "), "{tagged}");
    c.ok("LOGOUT");
}
