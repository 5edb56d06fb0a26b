//! A real client (imapflow, over TCP with a password) against the
//! mailbox extensions: it finds the special-use folders of a new account
//! (RFC 6154), gets their STATUS inline (RFC 5819), reads the server's ID
//! (RFC 2971), the namespace (RFC 2342) and the quota (RFC 9208).

mod imap_common;

use std::process::Command;

use imap_common::*;

#[test]
fn imapflow_finds_special_use_status_and_quota() {
    if Command::new("node").arg("--version").output().is_err() {
        panic!("node not found: install nodejs (scripts/test.sh does)");
    }
    let flow_dir = imapflow_dir();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let conf = dir.path().join("mailstore.conf");
    std::fs::write(&conf, "quota.alice = 100K\n").unwrap();
    // SAFETY: the only test in this binary; set before any thread reads it.
    unsafe { std::env::set_var("MAILSTORE_CONFIG", &conf) };
    // Mail delivered before the first login: INBOX only, so the login
    // still provisions the special-use folders.
    seed_messages(&spool, "alice", 3);
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let out = Command::new("node")
        .env("IMAPFLOW_DIR", &flow_dir)
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/clients/imapflow_mailboxes.mjs"),
        )
        .arg(server.port.to_string())
        .args(["alice", "pw"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "imapflow failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect(&text);
    assert_eq!(v["server_name"], "imapd-check", "{v}");
    assert_eq!(v["namespace"]["delimiter"], "/", "{v}");
    assert_eq!(v["namespace"]["prefix"], "", "{v}");
    let boxes = v["mailboxes"].as_array().unwrap();
    let find = |path: &str| {
        boxes
            .iter()
            .find(|b| b["path"] == path)
            .unwrap_or_else(|| panic!("{path} not listed: {v}"))
    };
    for (path, usage) in [
        ("Drafts", "\\Drafts"),
        ("Sent", "\\Sent"),
        ("Trash", "\\Trash"),
        ("Junk", "\\Junk"),
        ("Archive", "\\Archive"),
    ] {
        assert_eq!(find(path)["specialUse"], usage, "{v}");
        assert_eq!(find(path)["messages"], 0, "{v}");
    }
    assert_eq!(find("INBOX")["messages"], 3, "{v}");
    assert_eq!(v["sent_after_append"], 1, "{v}");
    assert_eq!(v["quota"]["storage"]["limit"], 100 * 1024, "{v}");
    let usage = v["quota"]["storage"]["usage"].as_u64().unwrap();
    assert!(usage >= 1024, "{v}");
    server.stop();
}
