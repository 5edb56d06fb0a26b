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
use storage::{AppendOptions, FlagOp, Flags, MailboxName, UserName};

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

/// The server's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's RSS once the heap trim a burst of IDLEs asks for is done
/// (0.1-1 s after it; a late trim only makes the bound drawn from it
/// looser).
fn settled(pid: u32) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(1500));
    rss_kib(pid)
}

/// Waits (a generous bound, not a timing: the server trims its heap 0.1 s
/// after a burst) until the server's RSS is at most `kib`; the last
/// reading.
fn rss_settles_below(pid: u32, kib: u64) -> u64 {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let now = rss_kib(pid);
        if now <= kib || std::time::Instant::now() > until {
            return now;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Issue 17 ("many idle clients", RFC 2177 sessions held for hours): an
/// idling session does not keep its own copy of the mailbox's records. A
/// hundred sessions idling on a mailbox of 4,000 messages must cost about
/// what a hundred idling on an empty one do (before: each held its view of
/// every record, about 100 bytes a message, 40 MiB for these hundred;
/// now 12 bytes a message once idle for a second), also after a delivery
/// and after a flag change that makes each of them read every record; the
/// compact sessions are told of each change (EXISTS, FETCH, EXPUNGE); and
/// a session leaving IDLE answers FETCH from full records again.
#[test]
fn idle_sessions_do_not_keep_the_mailboxs_records() {
    const BIG: usize = 4000;
    const BATCH: usize = 100;
    raise_nofile();
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    let relaxed = storage::Options {
        durability: storage::Durability::Relaxed,
        ..storage::Options::default()
    };
    let store = storage::Store::open(&spool, relaxed).unwrap();
    let empty = MailboxName::new("Empty").unwrap();
    store.ensure_mailbox(&user, &empty).unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    for i in 0..BIG {
        inbox
            .append(&message(i)[..], AppendOptions::default())
            .unwrap();
    }
    let passwd = write_passwd(dir.path(), "alice", "idle-test-secret");
    let server = TcpServer::start_configured(
        &spool,
        &passwd,
        &format!("imapd.max_connections_per_user = {}\n", 2 * BATCH + 30),
    );
    let pid = server.process.0.id();
    let idle_all = |cs: &mut Vec<Client>| cs.iter_mut().for_each(start_idle);
    // Warm-up: the first sessions' one-off costs (malloc arenas, code).
    let mut warm = connect(server.port, 20, "Empty");
    idle_all(&mut warm);
    let r0 = settled(pid);
    let mut small = connect(server.port, BATCH, "Empty");
    idle_all(&mut small);
    let r1 = settled(pid);
    // What a hundred idlers of an empty mailbox cost, plus a margin far
    // below the 40 MiB of the copies.
    let bound = r1 + (r1 - r0) + 16 * 1024;
    let mut big = connect(server.port, BATCH, "INBOX");
    idle_all(&mut big);
    let r2 = rss_settles_below(pid, bound);
    assert!(r2 <= bound, "RSS {r0} -> {r1} -> {r2} KiB (bound {bound})");
    inbox
        .append(&message(BIG)[..], AppendOptions::default())
        .unwrap();
    for c in &mut big {
        expect(c, &format!("* {} EXISTS", BIG + 1));
    }
    let r3 = rss_settles_below(pid, bound);
    assert!(r3 <= bound, "after a delivery: {r3} KiB (bound {bound})");
    inbox
        .store(&[2], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    for c in &mut big {
        // `\Recent` too in the session that claimed it.
        loop {
            let l = c.line();
            assert!(l.starts_with("* "), "{l}");
            if l.starts_with("* 2 FETCH") {
                assert!(l.starts_with("* 2 FETCH (UID 2 FLAGS (\\Flagged"), "{l}");
                break;
            }
        }
    }
    let r4 = rss_settles_below(pid, bound);
    assert!(r4 <= bound, "after a flag change: {r4} KiB (bound {bound})");
    inbox.expunge(Some(&[1]), false).unwrap();
    for c in &mut big {
        expect(c, "* 1 EXPUNGE");
    }
    // Out of IDLE, FETCH is answered from the records read again.
    let c = &mut big[0];
    done(c);
    let size = message(BIG).len();
    let lines = c.ok(&format!("FETCH {BIG} (UID RFC822.SIZE)"));
    let want = format!("* {BIG} FETCH (UID {} RFC822.SIZE {size})", BIG + 1);
    assert_eq!(lines, vec![want]);
    let lines = c.ok("FETCH 1 (UID FLAGS)");
    assert!(
        lines[0].starts_with("* 1 FETCH (UID 2 FLAGS (\\Flagged"),
        "{lines:?}"
    );
    drop((warm, small, big));
    server.stop();
}
