//! LIST and STATUS answered from the process-wide caches that the user's
//! names generation validates (docs/PROTOCOL.md §6b): never stale,
//! whichever process changed the names. Real processes only: the server
//! binary, the `deliver` binary, several sessions of one server.

mod imap_common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use imap_common::*;

fn names(lines: &[String]) -> BTreeSet<String> {
    lines
        .iter()
        .filter_map(|l| l.rsplit_once(" \"/\" "))
        .map(|(_, n)| n.trim_matches('"').to_string())
        .collect()
}

fn deliver(spool: &std::path::Path, user: &str, folder: &str) {
    let bin = target_dir().join("deliver");
    assert!(bin.exists(), "build deliver first (cargo build -p deliver)");
    let mut d = Command::new(bin)
        .arg("--spool")
        .arg(spool)
        .args(["-d", user, "--autocreate", "-m", folder])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    d.stdin
        .take()
        .unwrap()
        .write_all(format!("From: a@b\r\nSubject: {folder}\r\n\r\nbody\r\n").as_bytes())
        .unwrap();
    assert!(d.wait().unwrap().success(), "deliver into {folder}");
}

/// RFC 3501 6.3.8 (LIST returns the names that exist when it runs): while
/// one session LISTs in a loop (its server caching the listing), `deliver
/// --autocreate` creates new folders from other processes. Every LIST
/// sent after a delivery exited shows that delivery's folder.
#[test]
fn deliver_autocreate_while_a_session_lists() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "carol", 1);
    let mut c = Client::spawn(&spool, "carol");
    let first = names(&c.ok("LIST \"\" \"*\""));
    assert!(first.contains("INBOX"), "{first:?}");

    let done: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = {
        let (spool, done) = (spool.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..15 {
                let folder = format!("Auto{i}");
                deliver(&spool, "carol", &folder);
                done.lock().unwrap().push(folder);
            }
        })
    };
    let mut lists = 0;
    loop {
        let finished = writer.is_finished();
        let expected: Vec<String> = done.lock().unwrap().clone();
        let got = names(&c.ok("LIST \"\" \"*\""));
        lists += 1;
        for f in &expected {
            assert!(got.contains(f), "LIST {lists} misses {f}: {got:?}");
        }
        if finished {
            break;
        }
    }
    writer.join().unwrap();
    let got = names(&c.ok("LIST \"\" \"*\""));
    assert_eq!(got.iter().filter(|n| n.starts_with("Auto")).count(), 15);
    // The folders hold their message: STATUS through the cached handles.
    for i in 0..15 {
        assert_eq!(
            c.ok(&format!("STATUS Auto{i} (MESSAGES)")),
            vec![format!("* STATUS \"Auto{i}\" (MESSAGES 1)")]
        );
    }
}

/// RFC 3501 6.3.10 and 6.3.5: STATUS names a mailbox by its current name.
/// Two sessions of one server (one process, one handle cache): after the
/// other session renames `Work` away, creates a new `Work` and deletes
/// the old one, STATUS gives the new mailbox's counts, never those of the
/// handle opened before the rename; LIST and LSUB agree.
#[test]
fn status_and_list_follow_renames_by_another_session() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_messages(&spool, "dave", 1);
    let passwd = write_passwd(tmp.path(), "dave", "secret");
    let server = TcpServer::start(&spool, &passwd);
    let mut a = Client::tcp(server.port, "dave", "secret");
    let mut b = Client::tcp(server.port, "dave", "secret");
    a.ok("CREATE Work");
    for i in 0..3 {
        let msg = format!("Subject: {i}\r\n\r\nbody\r\n");
        a.ok(&format!("APPEND Work {{{}+}}\r\n{msg}", msg.len()));
    }
    a.ok("SUBSCRIBE Work");
    let status = "STATUS Work (MESSAGES UIDNEXT)";
    assert_eq!(
        a.ok(status),
        vec!["* STATUS \"Work\" (MESSAGES 3 UIDNEXT 4)"]
    );
    assert!(names(&a.ok("LIST \"\" \"*\"")).contains("Work"));

    b.ok("RENAME Work Old");
    assert_eq!(
        a.cmd(status).1.split(' ').nth(1),
        Some("NO"),
        "STATUS of a renamed-away mailbox"
    );
    assert_eq!(
        a.ok("STATUS Old (MESSAGES)"),
        vec!["* STATUS \"Old\" (MESSAGES 3)"]
    );
    b.ok("CREATE Work");
    assert_eq!(
        a.ok(status),
        vec!["* STATUS \"Work\" (MESSAGES 0 UIDNEXT 1)"]
    );
    let listed = names(&a.ok("LIST \"\" \"*\""));
    assert!(
        listed.contains("Work") && listed.contains("Old"),
        "{listed:?}"
    );
    b.ok("DELETE Old");
    assert_eq!(
        a.cmd("STATUS Old (MESSAGES)").1.split(' ').nth(1),
        Some("NO")
    );
    assert!(!names(&a.ok("LIST \"\" \"*\"")).contains("Old"));
    // Subscriptions are kept apart from the names: still subscribed.
    assert!(names(&a.ok("LSUB \"\" \"*\"")).contains("Work"));
    assert!(names(&a.ok("LIST (SUBSCRIBED) \"\" \"*\"")).contains("Work"));
    b.ok("UNSUBSCRIBE Work");
    assert!(!names(&a.ok("LSUB \"\" \"*\"")).contains("Work"));
    // Special use set by CREATE (RFC 6154 §3) shows on the next LIST.
    b.ok("CREATE Saved (USE (\\Archive))");
    assert!(
        a.ok("LIST \"\" \"Saved\"")
            .iter()
            .any(|l| l.contains("\\Archive")),
        "special use of a new mailbox"
    );
    drop(a);
    drop(b);
    server.stop();
}
