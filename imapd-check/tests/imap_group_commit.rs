//! Group commit (docs/PROTOCOL.md §4a): STOREs and EXPUNGEs that sessions
//! of one server process send to one mailbox at the same time share one
//! lock hold and one flush, and each still gets its own MODSEQ (RFC 7162
//! §3.1.3, §3.2: "the server MUST assign a new MODSEQ to every changed
//! message", strictly increasing) and its own durable result.

mod imap_common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use imap_common::*;
use storage::internals::lock::{LockKind, hold};
use storage::{Flags, MailboxName, UserName};

const CLIENTS: u32 = 8;
const ROUNDS: u32 = 5;
const PASSWORD: &str = "group-commit-secret";

/// alice's INBOX seeded with `n` messages (the store, its handle and the
/// header before anything ran) and a server on it, password-checked.
fn setup(
    n: usize,
) -> (
    tempfile::TempDir,
    storage::Store,
    UserName,
    storage::Mailbox,
    storage::Header,
    TcpServer,
) {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", n);
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let h0 = inbox.header().unwrap();
    let passwd = write_passwd(dir.path(), "alice", PASSWORD);
    let server = TcpServer::start(&spool, &passwd);
    (dir, store, user, inbox, h0, server)
}

/// Kills the server (no logout: only what was acknowledged counts).
fn kill(mut server: TcpServer) {
    server.process.0.kill().unwrap();
    server.process.0.wait().unwrap();
    let _ = server.stop();
}

/// INBOX verifies without a finding.
fn verify_clean(store: &storage::Store, user: &UserName) {
    let report = storage::verify::verify_path(
        &store.mailbox_path(user, &MailboxName::inbox()),
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// The MODSEQ of a `* n FETCH (... MODSEQ (m) ...)` line.
fn modseq(line: &str) -> u64 {
    let rest = &line[line.find("MODSEQ (").unwrap_or_else(|| panic!("{line}")) + 8..];
    rest[..rest.find(')').unwrap()].parse().unwrap()
}

/// The one FETCH of a single-message UID STORE, with its MODSEQ.
fn stored(lines: &[String], uid: u32) -> u64 {
    let f: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("FETCH (UID {uid} ")))
        .collect();
    assert_eq!(f.len(), 1, "UID {uid}: {lines:?}");
    modseq(f[0])
}

/// RFC 7162 §3.1.3 and §3.2 with concurrent sessions: eight sessions'
/// STOREs queued behind a held lock are committed in fewer lock holds
/// than STOREs (the group commit), yet every session gets a MODSEQ of its
/// own, above the mailbox's before; then eight sessions STORE and EXPUNGE
/// freely at once, each session's MODSEQs strictly increasing and no
/// MODSEQ given twice. Every acknowledged change is on disk, with the
/// MODSEQ its session was told, after the server is killed.
#[test]
fn concurrent_stores_each_get_their_own_modseq_and_stay() {
    let (_dir, store, user, mut inbox, h0, server) = setup(60);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| {
            let mut c = Client::tcp(server.port, "alice", PASSWORD);
            c.ok("SELECT INBOX (CONDSTORE)");
            c
        })
        .collect();

    // Phase 1: all eight STOREs wait behind a writer of another process.
    let guard = hold(
        inbox.index_path(),
        LockKind::Exclusive,
        Duration::from_secs(5),
    )
    .unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("g{i} UID STORE {} +FLAGS (\\Flagged)\r\n", i + 1));
    }
    // Give the server time to queue them all (not a timing assertion: a
    // STORE that arrives late only makes one more batch).
    std::thread::sleep(Duration::from_millis(1500));
    drop(guard);
    let mut told: BTreeMap<u32, u64> = BTreeMap::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let mut lines = Vec::new();
        loop {
            let l = c.line();
            if l.starts_with(&format!("g{i} ")) {
                assert!(l.starts_with(&format!("g{i} OK")), "{l}");
                break;
            }
            lines.push(l);
        }
        let uid = i as u32 + 1;
        told.insert(uid, stored(&lines, uid));
    }
    let h1 = inbox.header().unwrap();
    assert!(
        h1.generation - h0.generation < u64::from(CLIENTS),
        "no STORE was committed together with another: {} generations for {CLIENTS} STOREs",
        h1.generation - h0.generation
    );
    let distinct: HashSet<u64> = told.values().copied().collect();
    assert_eq!(distinct.len(), told.len(), "a MODSEQ given twice: {told:?}");
    assert!(told.values().all(|&m| m > h0.highestmodseq), "{told:?}");
    assert_eq!(h1.highestmodseq, *told.values().max().unwrap());

    // Phase 2: everyone at once, STOREs and an EXPUNGE each.
    let results: Vec<(Vec<(u32, u64)>, u32)> = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(i, c)| {
                s.spawn(move || {
                    let i = i as u32;
                    let mut mine = Vec::new();
                    let mut last = 0;
                    for r in 0..ROUNDS {
                        let uid = 9 + i * ROUNDS + r;
                        let lines = c.ok(&format!("UID STORE {uid} +FLAGS (\\Seen)"));
                        let m = stored(&lines, uid);
                        assert!(m > last, "session {i}: MODSEQ {m} after {last}");
                        last = m;
                        mine.push((uid, m));
                    }
                    let gone = 49 + i;
                    c.ok(&format!("UID STORE {gone} +FLAGS.SILENT (\\Deleted)"));
                    let (lines, tagged) = c.cmd(&format!("UID EXPUNGE {gone}"));
                    assert!(tagged.contains("OK [HIGHESTMODSEQ"), "{tagged}");
                    assert!(lines.iter().any(|l| l.ends_with(" EXPUNGE")), "{lines:?}");
                    (mine, gone)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut all: HashSet<u64> = told.values().copied().collect();
    let mut gone = Vec::new();
    for (mine, g) in results {
        for (uid, m) in mine {
            assert!(all.insert(m), "MODSEQ {m} given twice");
            told.insert(uid, m);
        }
        gone.push(g);
    }

    kill(server);
    let snap = store
        .open_mailbox(&user, &MailboxName::inbox())
        .unwrap()
        .snapshot()
        .unwrap();
    let rec = |uid: u32| snap.records.iter().find(|r| r.uid == uid).unwrap();
    for (&uid, &m) in &told {
        let want = if uid <= CLIENTS {
            Flags::FLAGGED
        } else {
            Flags::SEEN
        };
        assert!(rec(uid).flags.contains(want), "UID {uid}: {:?}", rec(uid));
        assert_eq!(
            rec(uid).modseq,
            m,
            "UID {uid}: the MODSEQ its session was told"
        );
    }
    for uid in gone {
        assert!(rec(uid).is_expunged(), "UID {uid} not expunged");
    }
    assert!(snap.header.highestmodseq >= *all.iter().max().unwrap());
    verify_clean(&store, &user);
}

/// RFC 3501 §6.3.11 with UIDPLUS (RFC 4315 §3): eight sessions' APPENDs
/// queued behind a held lock are committed in fewer lock holds than
/// APPENDs, yet each gets its own UID in APPENDUID, under which its own
/// bytes are stored; a MULTIAPPEND (RFC 3502) among them keeps its
/// messages in order with consecutive UIDs. Everything acknowledged is on
/// disk after the server is killed.
#[test]
fn concurrent_appends_each_get_their_own_uids_and_stay() {
    let (_dir, store, user, mut inbox, h0, server) = setup(3);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|_| Client::tcp(server.port, "alice", PASSWORD))
        .collect();
    let body = |i: usize, k: usize| {
        format!("From: s{i}@example.org\r\nSubject: session {i} part {k}\r\n\r\nbody {i}.{k}\r\n")
    };

    let guard = hold(
        inbox.index_path(),
        LockKind::Exclusive,
        Duration::from_secs(5),
    )
    .unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        let (a, b) = (body(i, 0), body(i, 1));
        if i == 0 {
            // MULTIAPPEND: two messages, all or none, in order.
            c.send(&format!(
                "a{i} APPEND INBOX {{{}+}}\r\n{a} {{{}+}}\r\n{b}\r\n",
                a.len(),
                b.len()
            ));
        } else {
            c.send(&format!("a{i} APPEND INBOX {{{}+}}\r\n{a}\r\n", a.len()));
        }
    }
    // Not a timing assertion: a late APPEND only makes one more batch.
    std::thread::sleep(Duration::from_millis(1500));
    drop(guard);
    let mut uids: Vec<(u32, String)> = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let tagged = loop {
            let l = c.line();
            if l.starts_with(&format!("a{i} ")) {
                break l;
            }
        };
        let rest = &tagged[tagged
            .find("[APPENDUID ")
            .unwrap_or_else(|| panic!("{tagged}"))
            + 11..];
        let mut parts = rest.split([' ', ']']);
        assert_eq!(parts.next().unwrap(), h0.uidvalidity.to_string());
        let set = parts.next().unwrap();
        if i == 0 {
            let (lo, hi) = set.split_once(':').unwrap_or_else(|| panic!("{tagged}"));
            let (lo, hi): (u32, u32) = (lo.parse().unwrap(), hi.parse().unwrap());
            assert_eq!(hi, lo + 1, "{tagged}");
            uids.push((lo, body(i, 0)));
            uids.push((hi, body(i, 1)));
        } else {
            uids.push((set.parse().unwrap(), body(i, 0)));
        }
    }
    let h1 = inbox.header().unwrap();
    assert!(
        h1.generation - h0.generation < u64::from(CLIENTS),
        "no APPEND was committed together with another: {} generations for {CLIENTS} APPENDs",
        h1.generation - h0.generation
    );
    let distinct: HashSet<u32> = uids.iter().map(|(u, _)| *u).collect();
    assert_eq!(distinct.len(), uids.len(), "a UID given twice: {uids:?}");
    assert!(uids.iter().all(|(u, _)| *u > h0.last_uid));

    kill(server);
    let m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    for (uid, want) in &uids {
        assert_eq!(
            m.read_message(*uid).unwrap(),
            want.as_bytes(),
            "UID {uid}: not the bytes its session appended"
        );
    }
    verify_clean(&store, &user);
}
