//! APPEND and COPY respect the store's per-user quota (config `quota`),
//! answering NO [OVERQUOTA] and leaving the mailboxes unchanged.

mod imap_common;

use imap_common::*;
use storage::{MailboxName, UserName};

#[test]
fn append_and_copy_over_quota_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let conf = tmp.path().join("mailstore.conf");
    std::fs::write(&conf, "quota.alice = 2K\n").unwrap();
    // SAFETY: the only test in this binary; set before any thread reads it.
    unsafe { std::env::set_var("MAILSTORE_CONFIG", &conf) };
    let store = seed_store(&spool, "alice");
    let alice = UserName::new("alice").unwrap();
    store
        .create_mailbox(&alice, &MailboxName::new("Copies").unwrap())
        .unwrap();
    let mut inbox = store.open_mailbox(&alice, &MailboxName::inbox()).unwrap();
    let msg = vec![b'y'; 500];
    inbox
        .append(&msg[..], storage::AppendOptions::default())
        .unwrap();
    let used = store.usage(&alice).unwrap();
    assert!(used < 2048, "seeded {used} bytes");

    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    let big = "x".repeat(2100);
    let (_, tagged) = c.cmd(&format!("APPEND INBOX {{{}+}}\r\n{big}", big.len()));
    assert!(tagged.contains("NO [OVERQUOTA]"), "{tagged}");

    // Copy everything until the copies would pass the limit.
    let mut refused = false;
    for _ in 0..20 {
        let (_, tagged) = c.cmd("COPY 1:* Copies");
        if tagged.contains("NO [OVERQUOTA]") {
            refused = true;
            break;
        }
        assert!(tagged.contains("OK"), "{tagged}");
    }
    assert!(refused, "COPY never hit the quota");
    let after = store.usage(&alice).unwrap();
    assert!(after <= 2048, "usage {after} over the 2 KiB limit");
    c.ok("LOGOUT");
}
