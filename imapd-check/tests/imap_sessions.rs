//! The IMAP server against the store under concurrency: many sessions on
//! one mailbox while other processes deliver, change flags and expunge.

mod imap_common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imap_common::*;
use storage::mailbox::FlagOp;
use storage::{AppendOptions, Flags, MailboxName, UserName};

/// 20 sessions, each a separate server process, keep running commands
/// (NOOP, FETCH by sequence number, UID STORE, SEARCH, short IDLEs) while
/// this process delivers, flips flags and expunges. Every response is
/// applied to a client-side model that checks sequence numbers never
/// disagree with UIDs already known; at the end each model must equal the
/// index exactly.
#[test]
fn twenty_sessions_converge_to_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    converge(&spool, false, |_| Client::spawn(&spool, "alice"));
}

/// The same with the 20 sessions in one server process, which share their
/// views of the mailbox (sharedviews.rs): they also SELECT it again (the
/// model starts over from the SELECT and a FETCH, as a client does) and
/// some IDLEs last long enough for the view to go compact, so views are
/// offered, started from and left IDLE from while everything else runs.
#[test]
fn twenty_sessions_of_one_server_converge_to_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let mut server = None;
    converge(&spool, true, |first| {
        if first {
            server = Some(TcpServer::start(&spool, &passwd));
        }
        Client::tcp(server.as_ref().expect("started").port, "alice", "pw")
    });
}

/// `twenty_sessions_...`: `connect(first)` gives a session (`first` for
/// the first one), `reselect` adds SELECTs again and longer IDLEs.
fn converge(spool: &std::path::Path, reselect: bool, mut connect: impl FnMut(bool) -> Client) {
    let spool = spool.to_path_buf();
    let store = seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    let inbox = MailboxName::inbox();
    {
        let mut m = store.open_mailbox(&user, &inbox).unwrap();
        for i in 0..20 {
            m.append(&message(i)[..], AppendOptions::default()).unwrap();
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let run_for = Duration::from_secs(4);

    let mut writers = Vec::new();
    for w in 0..3u64 {
        let stop = stop.clone();
        let spool = spool.clone();
        writers.push(std::thread::spawn(move || {
            let store = storage::Store::open(&spool, storage::Options::default()).unwrap();
            let user = UserName::new("alice").unwrap();
            let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
            let mut x = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w + 1);
            let mut n = 1000 * (w as usize + 1);
            while !stop.load(Ordering::Relaxed) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let snap = m.snapshot().unwrap();
                let live: Vec<u32> = snap.live_uids();
                match (w, x % 4) {
                    (0, _) => {
                        n += 1;
                        m.append(&message(n)[..], AppendOptions::default()).unwrap();
                    }
                    (1, _) if !live.is_empty() => {
                        let uid = live[(x as usize / 4) % live.len()];
                        let f =
                            [Flags::SEEN, Flags::FLAGGED, Flags::ANSWERED][(x as usize / 7) % 3];
                        let op = if x.is_multiple_of(2) {
                            FlagOp::Add
                        } else {
                            FlagOp::Remove
                        };
                        m.store(&[uid], op, f, &[], None).unwrap();
                    }
                    (2, 0) if live.len() > 10 => {
                        let uid = live[(x as usize / 4) % live.len()];
                        m.expunge(Some(&[uid]), false).unwrap();
                    }
                    _ => {}
                }
                std::thread::sleep(Duration::from_millis(3 + x % 5));
            }
        }));
    }

    let mut sessions = Vec::new();
    for s in 0..20u32 {
        let stop = stop.clone();
        let mut c = connect(s == 0);
        sessions.push(std::thread::spawn(move || {
            let mut model = Model::default();
            let lines = c.ok("SELECT INBOX");
            model.apply(&lines);
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let arm = (i + s) % if reselect { 7 } else { 5 };
                let lines = match arm {
                    0 => c.ok("NOOP"),
                    5 => {
                        // A new selection: the client starts over. After
                        // UNSELECT the SELECT starts from another
                        // session's view; without, it catches its own up.
                        model = Model::default();
                        if i.is_multiple_of(2) {
                            c.ok("UNSELECT");
                        }
                        let mut lines = c.ok("SELECT INBOX");
                        lines.retain(|l| !l.contains("[CLOSED]"));
                        lines.extend(c.ok("FETCH 1:* (UID FLAGS)"));
                        lines
                    }
                    1 => c.ok("FETCH 1:* (UID FLAGS)"),
                    2 => {
                        let (lines, tagged) = c.cmd("UID STORE 1:* -FLAGS.SILENT (\\Draft)");
                        assert!(tagged.contains(" OK "), "{tagged}");
                        lines
                    }
                    3 => c.ok("SEARCH UNSEEN"),
                    _ => {
                        c.send("i IDLE\r\n");
                        let mut lines = vec![];
                        assert!(c.line().starts_with('+'));
                        // Long enough now and then for the view to go
                        // compact (1 s for a small mailbox).
                        let long = reselect && arm == 6 && i.is_multiple_of(3);
                        std::thread::sleep(Duration::from_millis(if long { 1200 } else { 20 }));
                        c.send("DONE\r\n");
                        loop {
                            let l = c.line();
                            if l.starts_with("i OK") {
                                break;
                            }
                            lines.push(l);
                        }
                        lines
                    }
                };
                // Responses to commands by sequence number never carry EXPUNGE.
                if arm == 1 || arm == 3 {
                    assert!(!lines.iter().any(|l| l.ends_with(" EXPUNGE")), "{lines:?}");
                }
                model.apply(&lines);
            }
            (c, model)
        }));
    }

    std::thread::sleep(run_for);
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let mut m = store.open_mailbox(&user, &inbox).unwrap();
    let snap = m.snapshot().unwrap();
    let index: Vec<(u32, Vec<String>)> = snap
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| (r.uid, record_flags(r)))
        .collect();
    assert!(snap.header.last_uid > 30, "the deliverer did not run");
    assert!(
        (index.len() as u32) < snap.header.last_uid,
        "the expunger did not run"
    );
    for h in sessions {
        let (mut c, mut model) = h.join().unwrap();
        model.apply(&c.ok("NOOP"));
        model.apply(&c.ok("FETCH 1:* (UID FLAGS)"));
        let got: Vec<(u32, Vec<String>)> = model
            .msgs
            .iter()
            .map(|(u, f)| {
                let mut f = f.clone().expect("flags known");
                // \Recent is the session's, not the index's (RFC 3501 2.3.2).
                f.retain(|x| x != "\\Recent");
                (u.expect("UID known"), f)
            })
            .collect();
        assert_eq!(got, index, "a session's view differs from the index");
        c.ok("LOGOUT");
        if !reselect {
            c.wait_exit(Duration::from_secs(5));
        }
    }
}

/// A change committed before IDLE starts is reported as IDLE begins
/// (cyrus-imapd#3668), and one committed during IDLE arrives unprompted.
#[test]
fn idle_reports_changes_before_and_during() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    m.append(&message(1)[..], AppendOptions::default()).unwrap();
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    m.append(&message(2)[..], AppendOptions::default()).unwrap();
    c.send("a IDLE\r\n");
    assert!(c.line().starts_with('+'));
    assert_eq!(c.line(), "* 2 EXISTS");
    // RFC 3501 7.3.2: this session is the first told of both.
    assert_eq!(c.line(), "* 2 RECENT");
    m.store(&[1], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.line(), "* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))");
    // Not a timing assertion on the server: the fallback timer is 30 s or
    // more (2 s without a watch), so within 1.5 s only inotify can have
    // woken the session.
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "woken by the fallback timer, not by inotify"
    );
    m.expunge(Some(&[2]), false).unwrap();
    assert_eq!(c.line(), "* 2 EXPUNGE");
    // A repack replaces the index file; the session must follow it.
    m.repack().unwrap();
    m.append(&message(3)[..], AppendOptions::default()).unwrap();
    assert_eq!(c.line(), "* 2 EXISTS");
    // The claim file outlives the repack: UIDs 1 and 3 are this session's.
    assert_eq!(c.line(), "* 2 RECENT");
    c.send("DONE\r\n");
    assert!(c.line().starts_with("a OK"));
}

/// Malformed commands get BAD and the connection goes on; literals are
/// bounded.
#[test]
fn malformed_input_gets_bad_and_limits_hold() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_store(&spool, "alice");
    let mut c = Client::spawn(&spool, "alice");
    for bad in [
        "FETCH",
        "SELECT",
        "UID FROB 1",
        "LOGIN",
        "STORE 1 +FLAGS (\\Seen",
    ] {
        let (_, tagged) = c.cmd(bad);
        assert!(tagged.split(' ').nth(1) == Some("BAD"), "{bad} -> {tagged}");
    }
    c.send("\r\n");
    assert!(c.line().starts_with("* BAD"));
    c.ok("SELECT INBOX");
    // A huge synchronizing literal is refused without a continuation.
    c.send("big APPEND INBOX {999999999999}\r\n");
    assert_eq!(c.line(), "big NO [TOOBIG] Literal too big");
    // A literal in another command is held to a small limit.
    c.send("lit SELECT {100000}\r\n");
    assert_eq!(c.line(), "lit NO [TOOBIG] Literal too big");
    // A line over the limit is skipped as a whole.
    c.send(&format!("long NOOP {}\r\n", "x".repeat(200_000)));
    assert_eq!(c.line(), "* BAD Line too long");
    // A proper literal works.
    c.send("ap APPEND INBOX {20}\r\n");
    assert!(c.line().starts_with('+'));
    c.send("Subject: x\r\n\r\nbody\r\n\r\n");
    // The session's own append is reported before the tagged reply.
    assert_eq!(c.line(), "* 1 EXISTS");
    assert_eq!(c.line(), "* 1 RECENT");
    let l = c.line();
    assert!(l.starts_with("ap OK [APPENDUID "), "{l}");
    assert!(c.ok("NOOP").is_empty());
    let (_, tagged) = c.cmd("FETCH 5 (FLAGS)");
    assert!(tagged.contains(" BAD "), "{tagged}");
    c.ok("FETCH 1 (FLAGS)");
    c.ok("LOGOUT");
}

/// A SELECT of the mailbox already selected catches the session's view up
/// with what changed (`SessionView::reopen`) instead of reading every
/// record. What it answers, and FETCH 1:* after it, must be what a fresh
/// session's SELECT answers, whatever others changed meanwhile (flags,
/// keywords, expunges the session never heard of, appends). A mailbox
/// renamed away with another renamed onto its name, or deleted and
/// created again, is the new mailbox, not the directory the session had
/// open.
/// What a session's SELECT INBOX and FETCH of every message say;
/// \Recent is the session's own (the first SELECT claims the new
/// messages), so it is left out, and so is the `[CLOSED]` of a SELECT
/// while selected.
fn select_answers(c: &mut Client) -> Vec<String> {
    let mut l = c.ok("SELECT INBOX");
    l.extend(c.ok("FETCH 1:* (UID FLAGS MODSEQ RFC822.SIZE INTERNALDATE)"));
    l.into_iter()
        .filter(|l| !l.contains("[CLOSED]") && !l.ends_with(" RECENT"))
        .map(|l| {
            l.replace(" \\Recent", "")
                .replace("(\\Recent ", "(")
                .replace("(\\Recent)", "()")
        })
        .collect()
}

/// Another writer's changes to a mailbox of `n` messages: \Deleted on
/// 2, 4 and 6, a new keyword on 7 and 8, 4 and 9 expunged, two appended.
fn change_behind_the_sessions(m: &mut storage::Mailbox, n: usize) {
    m.store(&[2, 4, 6], FlagOp::Add, Flags::DELETED, &[], None)
        .unwrap();
    let label = ["$Label1".to_string()];
    m.store(&[7, 8], FlagOp::Add, Flags::default(), &label, None)
        .unwrap();
    m.expunge(Some(&[4, 9]), false).unwrap();
    for i in n..n + 2 {
        m.append(&message(i)[..], AppendOptions::default()).unwrap();
    }
}

/// Sessions of one server selecting the same mailbox start from each
/// other's views (sharedviews.rs): whatever happened in between (other
/// writers' flags, keywords, expunges, appends, a session's own STORE and
/// EXPUNGE, a repack), each SELECT answers as a session of another
/// process, which reads every record, does.
#[test]
fn a_select_started_from_another_sessions_view_answers_as_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 40);
    let user = UserName::new("alice").unwrap();
    let inbox = MailboxName::inbox();
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let tcp = || {
        let mut c = Client::tcp(server.port, "alice", "pw");
        c.ok("ENABLE CONDSTORE");
        c
    };
    let fresh = || {
        let mut c = Client::spawn(&spool, "alice");
        c.ok("ENABLE CONDSTORE");
        c
    };
    let mut first = tcp();
    first.ok("SELECT INBOX");
    let mut m = store.open_mailbox(&user, &inbox).unwrap();
    change_behind_the_sessions(&mut m, 40);
    let mut second = tcp();
    let got = select_answers(&mut second);
    assert!(got.contains(&"* 40 EXISTS".to_string()), "{got:?}");
    assert_eq!(got, select_answers(&mut fresh()));
    // The sessions' own changes, then a third session.
    second.ok("UID STORE 10 +FLAGS (\\Flagged)");
    first.ok("UID STORE 6 +FLAGS (\\Deleted)");
    first.ok("UID EXPUNGE 6");
    let mut third = tcp();
    assert_eq!(select_answers(&mut third), select_answers(&mut fresh()));
    // Repacked: the view offered was read from the old file.
    m.repack().unwrap();
    let mut fourth = tcp();
    assert_eq!(select_answers(&mut fourth), select_answers(&mut fresh()));
    // And every session's answers stay right afterwards.
    m.store(&[11], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    for c in [&mut first, &mut second, &mut third, &mut fourth] {
        let noop = c.ok("NOOP");
        assert!(
            noop.iter()
                .any(|l| l.contains("FETCH") && l.contains("\\Seen")),
            "{noop:?}"
        );
    }
    assert_eq!(select_answers(&mut second), select_answers(&mut fresh()));
    server.stop();
}

/// A session leaving an IDLE long enough for its view to go compact,
/// while another session of the server has the mailbox selected, takes
/// its records from that session's view (`SessionView::expand_from`):
/// what it was told and what it answers afterwards are what a session of
/// another process, which reads every record, answers.
#[test]
fn leaving_idle_beside_another_session_answers_as_a_fresh_select() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 30);
    let user = UserName::new("alice").unwrap();
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let mut full = Client::tcp(server.port, "alice", "pw");
    full.ok("SELECT INBOX");
    let mut idler = Client::tcp(server.port, "alice", "pw");
    idler.ok("ENABLE CONDSTORE");
    idler.ok("SELECT INBOX");
    idler.send("i IDLE\r\n");
    assert!(idler.line().starts_with('+'));
    // A mailbox of 30 messages goes compact after 1 s of IDLE.
    std::thread::sleep(Duration::from_millis(1500));
    let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    m.store(&[5], FlagOp::Add, Flags::SEEN, &[], None).unwrap();
    assert_eq!(idler.line(), "* 5 FETCH (UID 5 FLAGS (\\Seen) MODSEQ (31))");
    m.expunge(Some(&[7]), false).unwrap();
    assert_eq!(idler.line(), "* 7 EXPUNGE");
    idler.send("DONE\r\n");
    assert!(idler.line().starts_with("i OK"));
    let fetch = "FETCH 1:* (UID FLAGS MODSEQ RFC822.SIZE)";
    let mut fresh = Client::spawn(&spool, "alice");
    fresh.ok("ENABLE CONDSTORE");
    fresh.ok("SELECT INBOX");
    let strip = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .map(|l| l.replace(" \\Recent", "").replace("\\Recent", ""))
            .map(|l| l.replace("FLAGS ( ", "FLAGS ("))
            .collect()
    };
    assert_eq!(strip(idler.ok(fetch)), strip(fresh.ok(fetch)));
    // And after the other session's change, both see it.
    m.store(&[1], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    for c in [&mut idler, &mut full] {
        let noop = c.ok("NOOP");
        assert!(noop.iter().any(|l| l.contains("\\Flagged")), "{noop:?}");
    }
    server.stop();
}

#[test]
fn reselect_answers_as_a_fresh_select() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 30);
    let user = UserName::new("alice").unwrap();
    let inbox = MailboxName::inbox();
    // CONDSTORE on from the start in every session: the first FETCH of
    // MODSEQ would otherwise add a HIGHESTMODSEQ line in some of them.
    let session = || {
        let mut c = Client::spawn(&spool, "alice");
        c.ok("ENABLE CONDSTORE");
        c
    };
    let mut a = session();
    a.ok("SELECT INBOX");
    a.ok("STORE 1:3 +FLAGS (\\Seen)");
    let mut m = store.open_mailbox(&user, &inbox).unwrap();
    change_behind_the_sessions(&mut m, 30);
    let again = select_answers(&mut a);
    let fresh = select_answers(&mut session());
    assert!(again.contains(&"* 30 EXISTS".to_string()), "{again:?}");
    assert_eq!(again, fresh);
    // Once more with nothing changed, and after the session's own STORE.
    a.ok("UID STORE 31 +FLAGS (\\Flagged)");
    assert_eq!(select_answers(&mut a), select_answers(&mut session()));

    // Renamed away, another renamed onto the name: the other one.
    let mut b = Client::spawn(&spool, "alice");
    for (name, n) in [("x", 1), ("y", 2)] {
        let name = MailboxName::new(name).unwrap();
        store.create_mailbox(&user, &name).unwrap();
        let mut mb = store.open_mailbox(&user, &name).unwrap();
        for i in 0..n {
            mb.append(&message(i)[..], AppendOptions::default())
                .unwrap();
        }
    }
    assert!(a.ok("SELECT x").contains(&"* 1 EXISTS".to_string()));
    b.ok("RENAME x z");
    b.ok("RENAME y x");
    assert!(a.ok("SELECT x").contains(&"* 2 EXISTS".to_string()));
    // Deleted and created again: the new, empty one.
    b.ok("DELETE x");
    b.ok("CREATE x");
    assert!(a.ok("SELECT x").contains(&"* 0 EXISTS".to_string()));
}
