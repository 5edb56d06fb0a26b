//! Many IDLE sessions in one server process (RFC 2177): every one is told
//! of a change committed by another process. The server shares one
//! inotify instance between its sessions; one instance per session would
//! stop at the kernel's default `fs.inotify.max_user_instances` of 128.
//!
//! No timing assertions: the fallback re-check of an idling session is
//! 30 s or more, longer than the client's 20 s read timeout, so a
//! notification that arrives at all was delivered by the watcher.

mod imap_common;

use std::sync::{Arc, Mutex};

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

const IDLERS: usize = 200;

/// Raises this process's descriptor limit: the test holds one socket per
/// session (the server raises its own).
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = (4 * IDLERS as u64 + 256).min(hard);
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap();
    }
}

/// Logs `n` clients in (a few at a time: each LOGIN is an argon2 check)
/// and selects `mailbox`.
fn connect(port: u16, n: usize, mailbox: &str) -> Vec<Client> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let out = out.clone();
            let mailbox = mailbox.to_string();
            std::thread::spawn(move || {
                for _ in (t..n).step_by(4) {
                    let mut c = Client::tcp(port, "alice", "idle-test-secret");
                    c.ok(&format!("SELECT {mailbox}"));
                    out.lock().unwrap().push(c);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    std::mem::take(&mut *out.lock().unwrap())
}

fn start_idle(c: &mut Client) {
    c.send("i IDLE\r\n");
    let l = c.line();
    assert!(l.starts_with('+'), "{l}");
}

/// Reads until `want`; anything else in between must be another untagged
/// response.
fn expect(c: &mut Client, want: &str) {
    loop {
        let l = c.line();
        if l == want {
            return;
        }
        assert!(l.starts_with("* "), "waiting for {want:?}, got {l:?}");
    }
}

fn done(c: &mut Client) {
    c.send("DONE\r\n");
    loop {
        let l = c.line();
        if l.starts_with("i ") {
            assert!(l.starts_with("i OK"), "{l}");
            return;
        }
    }
}

/// RFC 2177 section 3: while idling, each of 200 sessions of one server
/// on one mailbox receives the EXISTS of a delivery, the EXPUNGE of a
/// removal, and after a repack (a new `.index` file renamed into place)
/// the EXISTS of the next delivery. Sessions idling on another mailbox
/// get nothing from these and are told of a delivery to theirs. After
/// every session left IDLE (the shared watches are dropped), idling again
/// still notifies.
#[test]
fn two_hundred_idlers_are_each_notified() {
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 3);
    let user = UserName::new("alice").unwrap();
    let other = MailboxName::new("Other").unwrap();
    store.ensure_mailbox(&user, &other).unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut other_box = store.open_mailbox(&user, &other).unwrap();
    let passwd = write_passwd(dir.path(), "alice", "idle-test-secret");
    // Every idler is the same user: the per-user limit (20 by default,
    // OPERATIONS.md §6a) is raised for them.
    let server = TcpServer::start_configured(
        &spool,
        &passwd,
        &format!("imapd.max_connections_per_user = {}\n", IDLERS + 10),
    );

    let mut idlers = connect(server.port, IDLERS, "INBOX");
    let mut others = connect(server.port, 5, "Other");
    for c in idlers.iter_mut().chain(others.iter_mut()) {
        start_idle(c);
    }

    inbox
        .append(&message(10)[..], AppendOptions::default())
        .unwrap();
    for c in &mut idlers {
        expect(c, "* 4 EXISTS");
    }
    inbox.expunge(Some(&[1]), false).unwrap();
    for c in &mut idlers {
        expect(c, "* 1 EXPUNGE");
    }
    inbox.repack().unwrap();
    inbox
        .append(&message(11)[..], AppendOptions::default())
        .unwrap();
    for c in &mut idlers {
        expect(c, "* 4 EXISTS");
    }

    // The other mailbox's sessions saw none of that: their first line is
    // about their own mailbox.
    other_box
        .append(&message(12)[..], AppendOptions::default())
        .unwrap();
    for c in &mut others {
        assert_eq!(c.line(), "* 1 EXISTS");
    }

    // Everyone leaves IDLE, then some idle again: new watches work.
    for c in idlers.iter_mut().chain(others.iter_mut()) {
        done(c);
    }
    for c in idlers.iter_mut().take(10) {
        start_idle(c);
    }
    inbox
        .append(&message(13)[..], AppendOptions::default())
        .unwrap();
    for c in idlers.iter_mut().take(10) {
        expect(c, "* 5 EXISTS");
        done(c);
    }
    drop(idlers);
    drop(others);
    let log = server.stop();
    assert!(!log.contains("inotify"), "{log}");
}
