//! QRESYNC (RFC 7162 section 3.2) against the real server: ENABLE, the
//! SELECT resync a reconnecting client (Thunderbird-like) relies on,
//! UID FETCH VANISHED, VANISHED instead of EXPUNGE, and [CLOSED].

mod imap_common;

use std::collections::BTreeMap;
use std::path::Path;

use imap_common::{Client, flags, seed_messages};
use storage::{AppendOptions, Flags, MailboxName, UserName};

/// UID -> sorted flags, as a client caches them.
type Cache = BTreeMap<u32, Vec<String>>;

fn num(l: &str, key: &str) -> Option<u64> {
    let i = l.find(key)? + key.len();
    l[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Expands `1:3,7` into UIDs.
fn uid_set(s: &str) -> Vec<u32> {
    let mut v = Vec::new();
    for part in s.split(',') {
        match part.split_once(':') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
                v.extend(a.min(b)..=a.max(b));
            }
            None => v.push(part.parse().unwrap()),
        }
    }
    v
}

/// Applies FETCH (UID, FLAGS) and VANISHED lines to a cache.
fn apply(cache: &mut Cache, lines: &[String]) {
    for l in lines {
        if let Some(rest) = l.strip_prefix("* VANISHED ") {
            let set = rest.strip_prefix("(EARLIER) ").unwrap_or(rest);
            for u in uid_set(set) {
                cache.remove(&u);
            }
        } else if l.contains(" FETCH (") {
            let uid = num(l, "UID ").unwrap_or_else(|| panic!("FETCH without UID: {l}"));
            if let Some(mut f) = flags(l) {
                // \Recent belongs to one session (RFC 3501 2.3.2), not
                // to the message's stored state that sessions share.
                f.retain(|x| x != "\\Recent");
                cache.insert(uid as u32, f);
            }
        }
    }
}

/// The server's state as a fresh session sees it.
fn server_state(spool: &Path) -> Cache {
    let mut c = Client::spawn(spool, "alice");
    c.ok("SELECT INBOX");
    let mut cache = Cache::new();
    apply(&mut cache, &c.ok("FETCH 1:* (UID FLAGS)"));
    cache
}

fn resp<'a>(lines: &'a [String], key: &str) -> Option<&'a String> {
    lines.iter().find(|l| l.contains(key))
}

/// RFC 7162 3.2.3/3.2.5/3.2.6: the QRESYNC parameter and the VANISHED
/// modifier are BAD before ENABLE QRESYNC; ENABLE QRESYNC answers
/// ENABLED, turns CONDSTORE on (MODSEQ in STORE's FETCH) and puts the UID
/// in every FETCH response.
#[test]
fn qresync_needs_enable_and_implies_condstore() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 2);
    let mut c = Client::spawn(&spool, "alice");
    let (_, t) = c.cmd("SELECT INBOX (QRESYNC (1 1))");
    assert!(t.contains(" BAD "), "{t}");
    c.ok("SELECT INBOX");
    let (_, t) = c.cmd("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(t.contains(" BAD "), "{t}");
    let lines = c.ok("ENABLE QRESYNC");
    assert_eq!(lines, vec!["* ENABLED QRESYNC".to_string()]);
    let lines = c.ok("FETCH 1 (FLAGS)");
    assert!(lines[0].contains("UID 1"), "{lines:?}");
    let lines = c.ok("STORE 2 +FLAGS (\\Seen)");
    assert!(
        lines[0].contains("MODSEQ (") && lines[0].contains("UID 2"),
        "{lines:?}"
    );
    // VANISHED needs CHANGEDSINCE, and the UID form.
    let (_, t) = c.cmd("UID FETCH 1:* (FLAGS) (VANISHED)");
    assert!(t.contains(" BAD "), "{t}");
    let (_, t) = c.cmd("FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)");
    assert!(t.contains(" BAD "), "{t}");
}

/// RFC 7162 3.1: FETCH of MODSEQ, SEARCH MODSEQ, STATUS HIGHESTMODSEQ
/// (LIST-STATUS's too) and the others turn CONDSTORE on without ENABLE: the first such
/// command with a mailbox selected tells its HIGHESTMODSEQ, and from then
/// on every FETCH about flags carries UID and MODSEQ, a plain STORE's and
/// a FETCH's that set \Seen included.
#[test]
fn condstore_enabling_commands_turn_it_on() {
    // A fresh mailbox of three messages, and a session on it.
    let fresh = || {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        seed_messages(&spool, "alice", 3);
        let c = Client::spawn(&spool, "alice");
        (dir, c)
    };
    for enabling in [
        "FETCH 1 (MODSEQ)",
        "SEARCH MODSEQ 1",
        "UID SEARCH MODSEQ 1",
        "STATUS INBOX (HIGHESTMODSEQ)",
        // RFC 5819: STATUS returned by LIST is STATUS.
        "LIST \"\" \"*\" RETURN (STATUS (HIGHESTMODSEQ))",
        "FETCH 1 (FLAGS) (CHANGEDSINCE 1)",
        "ENABLE CONDSTORE",
    ] {
        let (_dir, mut c) = fresh();
        c.ok("SELECT INBOX");
        let before = c.ok("STORE 1 +FLAGS (\\Flagged)");
        assert!(
            !before[0].contains("MODSEQ") && !before[0].contains("UID"),
            "{enabling}: not on yet: {before:?}"
        );
        let lines = c.ok(enabling);
        let top = resp(&lines, "[HIGHESTMODSEQ ")
            .and_then(|l| num(l, "HIGHESTMODSEQ "))
            .unwrap_or_else(|| panic!("{enabling}: no HIGHESTMODSEQ: {lines:?}"));
        assert!(top >= 2, "{enabling}: {lines:?}");
        let after = c.ok("STORE 2 +FLAGS (\\Flagged)");
        assert!(
            after[0].contains("UID 2") && num(&after[0], "MODSEQ (").unwrap() > top,
            "{enabling}: {after:?}"
        );
        // A FETCH that sets \Seen changes flags: UID and MODSEQ too.
        let seen = c.ok("FETCH 3 (BODY[HEADER.FIELDS (SUBJECT)])");
        // (The literal splits the response over lines.)
        let f = seen.join(" ");
        assert!(
            f.contains("UID 3") && f.contains("MODSEQ (") && f.contains("\\Seen"),
            "{enabling}: {seen:?}"
        );
        // Told once: later enabling commands say nothing more.
        let again = c.ok("FETCH 1 (MODSEQ)");
        assert!(resp(&again, "[HIGHESTMODSEQ ").is_none(), "{again:?}");
        c.ok("LOGOUT");
    }
    // Without a selected mailbox there is nothing to tell.
    let (_dir, mut c) = fresh();
    let lines = c.ok("STATUS INBOX (HIGHESTMODSEQ)");
    assert_eq!(lines.len(), 1, "{lines:?}");
    c.ok("SELECT INBOX");
    let after = c.ok("STORE 1 -FLAGS (\\Flagged)");
    assert!(
        after[0].contains("UID 1") && after[0].contains("MODSEQ ("),
        "{after:?}"
    );
}

/// The Thunderbird-like resync (RFC 7162 3.2.5.1, 3.2.5.2): a client
/// syncs and disconnects; another session changes flags, expunges some
/// and appends some (and, in the second round, a repack drops the
/// expunged records); the first reconnects with SELECT (QRESYNC ...),
/// applies VANISHED (EARLIER) and the FETCHes, fetches the new UIDs, and
/// must hold exactly the server's state. HIGHESTMODSEQ grows with the
/// expunge.
#[test]
fn reconnecting_client_resyncs_to_the_servers_state() {
    for repack in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let store = seed_messages(&spool, "alice", 8);
        // First session: full sync.
        let mut a = Client::spawn(&spool, "alice");
        a.ok("ENABLE QRESYNC");
        let sel = a.ok("SELECT INBOX");
        let uidvalidity = num(resp(&sel, "UIDVALIDITY").unwrap(), "UIDVALIDITY ").unwrap();
        let modseq = num(resp(&sel, "HIGHESTMODSEQ").unwrap(), "HIGHESTMODSEQ ").unwrap();
        let mut cache = Cache::new();
        apply(&mut cache, &a.ok("UID FETCH 1:* (FLAGS)"));
        assert_eq!(cache.len(), 8);
        a.ok("LOGOUT");
        // Another session changes things meanwhile.
        let mut b = Client::spawn(&spool, "alice");
        b.ok("SELECT INBOX");
        b.ok("UID STORE 2 +FLAGS (\\Flagged $Work)");
        b.ok("UID STORE 3,5,8 +FLAGS (\\Deleted)");
        b.ok("UID STORE 6 +FLAGS (\\Seen)");
        let before = num(
            resp(&b.ok("STATUS INBOX (HIGHESTMODSEQ)"), "HIGHESTMODSEQ").unwrap(),
            "HIGHESTMODSEQ ",
        )
        .unwrap();
        b.ok("EXPUNGE");
        b.ok("CLOSE");
        let after = num(
            resp(&b.ok("STATUS INBOX (HIGHESTMODSEQ)"), "HIGHESTMODSEQ").unwrap(),
            "HIGHESTMODSEQ ",
        )
        .unwrap();
        assert!(after > before, "HIGHESTMODSEQ grows with an expunge");
        b.ok("LOGOUT");
        let user = UserName::new("alice").unwrap();
        let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
        for i in 0..2 {
            inbox
                .append(&imap_common::message(100 + i)[..], AppendOptions::default())
                .unwrap();
        }
        if repack {
            let out = inbox.repack().unwrap();
            assert_eq!(out.removed, vec![3, 5, 8]);
        }
        // The first client comes back.
        let mut a = Client::spawn(&spool, "alice");
        a.ok("ENABLE QRESYNC");
        let lines = a.ok(&format!("SELECT INBOX (QRESYNC ({uidvalidity} {modseq}))"));
        let vanished: Vec<&String> = lines
            .iter()
            .filter(|l| l.starts_with("* VANISHED"))
            .collect();
        assert_eq!(vanished.len(), 1, "{lines:?}");
        assert!(
            vanished[0].starts_with("* VANISHED (EARLIER) "),
            "{lines:?}"
        );
        let reported = uid_set(&vanished[0]["* VANISHED (EARLIER) ".len()..]);
        for u in [3, 5, 8] {
            assert!(
                reported.contains(&u),
                "UID {u} vanished but not reported: {lines:?}"
            );
        }
        let live = server_state(&spool);
        for u in &reported {
            assert!(
                !live.contains_key(u),
                "existing UID {u} reported vanished: {lines:?}"
            );
        }
        if !repack {
            assert_eq!(reported, vec![3, 5, 8], "exact before a repack: {lines:?}");
        }
        assert!(
            lines
                .iter()
                .any(|l| l.contains("FETCH (UID 2 ") && l.contains("$Work")),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.contains("FETCH (UID 6 ") && l.contains("\\Seen")),
            "{lines:?}"
        );
        assert!(
            !lines.iter().any(|l| l.contains("FETCH (UID 1 ")),
            "unchanged UID 1 re-sent: {lines:?}"
        );
        apply(&mut cache, &lines);
        // New messages, as Thunderbird fetches them: above the known UIDs.
        let top = cache.keys().max().copied().unwrap_or(0);
        apply(
            &mut cache,
            &a.ok(&format!("UID FETCH {}:* (FLAGS)", top + 1)),
        );
        assert_eq!(cache, live, "repack={repack}: client and server disagree");
        // A stale UIDVALIDITY gets a plain SELECT (no VANISHED, no FETCH).
        let lines = a.ok(&format!(
            "SELECT INBOX (QRESYNC ({} {modseq}))",
            uidvalidity + 1
        ));
        assert!(lines[0].contains("[CLOSED]"), "{lines:?}");
        assert!(
            !lines
                .iter()
                .any(|l| l.contains("VANISHED") || l.contains("FETCH")),
            "{lines:?}"
        );
    }
}

/// RFC 7162 3.2.5.2: sequence-match data whose two sets differ in size
/// cannot be paired: BAD, and (as for any failed SELECT) no mailbox stays
/// selected. Matching data is accepted.
#[test]
fn mismatched_sequence_match_data_is_bad() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 3);
    let mut a = Client::spawn(&spool, "alice");
    a.ok("ENABLE QRESYNC");
    let sel = a.ok("SELECT INBOX");
    let uv = num(resp(&sel, "UIDVALIDITY").unwrap(), "UIDVALIDITY ").unwrap();
    let (lines, t) = a.cmd(&format!("SELECT INBOX (QRESYNC ({uv} 1 1:3 (1:3 1:2)))"));
    assert!(t.contains(" BAD "), "{t}");
    assert!(lines.iter().any(|l| l.contains("[CLOSED]")), "{lines:?}");
    let (_, t) = a.cmd("FETCH 1 (FLAGS)");
    assert!(
        t.contains(" BAD "),
        "still selected after a BAD SELECT: {t}"
    );
    a.ok(&format!("SELECT INBOX (QRESYNC ({uv} 1 1:3 (1:3 1:3)))"));
}

/// RFC 7162 3.2.5: known UIDs limit what a QRESYNC SELECT reports.
#[test]
fn known_uids_limit_the_resync() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 6);
    let mut a = Client::spawn(&spool, "alice");
    a.ok("ENABLE QRESYNC");
    let sel = a.ok("SELECT INBOX");
    let uv = num(resp(&sel, "UIDVALIDITY").unwrap(), "UIDVALIDITY ").unwrap();
    let m = num(resp(&sel, "HIGHESTMODSEQ").unwrap(), "HIGHESTMODSEQ ").unwrap();
    a.ok("UID STORE 1,5 +FLAGS (\\Answered)");
    a.ok("UID STORE 2,6 +FLAGS (\\Deleted)");
    a.ok("UID EXPUNGE 2,6");
    let lines = a.ok(&format!("SELECT INBOX (QRESYNC ({uv} {m} 1:3))"));
    let v: Vec<&String> = lines.iter().filter(|l| l.contains("VANISHED")).collect();
    assert_eq!(v, vec!["* VANISHED (EARLIER) 2"], "{lines:?}");
    let f: Vec<&String> = lines.iter().filter(|l| l.contains("FETCH")).collect();
    assert_eq!(f.len(), 1, "{lines:?}");
    assert!(f[0].contains("UID 1 "), "{lines:?}");
}

/// RFC 7162 3.2.10: with QRESYNC enabled, expunges by another session
/// (at NOOP and in IDLE), by EXPUNGE and by MOVE come as `* VANISHED`,
/// never as `* n EXPUNGE`.
#[test]
fn vanished_replaces_expunge() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 8);
    let user = UserName::new("alice").unwrap();
    let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut a = Client::spawn(&spool, "alice");
    a.ok("ENABLE QRESYNC");
    a.ok("CREATE Kept");
    a.ok("SELECT INBOX");
    m.expunge(Some(&[2, 4]), false).unwrap();
    let lines = a.ok("NOOP");
    assert_eq!(lines, vec!["* VANISHED 2,4".to_string()]);
    a.ok("UID STORE 5 +FLAGS.SILENT (\\Deleted)");
    let (lines, tagged) = a.cmd("EXPUNGE");
    assert_eq!(lines, vec!["* VANISHED 5".to_string()]);
    // The OK carries the new HIGHESTMODSEQ (RFC 7162's EXPUNGE examples).
    assert!(tagged.contains("OK [HIGHESTMODSEQ "), "{tagged}");
    let lines = a.ok("UID MOVE 6:7 Kept");
    assert!(lines.iter().any(|l| l == "* VANISHED 6:7"), "{lines:?}");
    assert!(!lines.iter().any(|l| l.ends_with(" EXPUNGE")), "{lines:?}");
    a.send("i IDLE\r\n");
    assert!(a.line().starts_with('+'));
    m.expunge(Some(&[8]), false).unwrap();
    assert_eq!(a.line(), "* VANISHED 8");
    a.send("DONE\r\n");
    assert!(a.line().starts_with("i OK"));
    // A client that did not enable QRESYNC still gets EXPUNGE.
    let mut b = Client::spawn(&spool, "alice");
    b.ok("SELECT INBOX");
    m.expunge(Some(&[1]), false).unwrap();
    assert_eq!(b.ok("NOOP"), vec!["* 1 EXPUNGE".to_string()]);
}

/// RFC 7162 3.2.6: UID FETCH (CHANGEDSINCE m VANISHED) sends VANISHED
/// (EARLIER) for the UIDs of the set expunged since m, then the FETCHes;
/// an expunge not yet reported goes out first as VANISHED.
#[test]
fn uid_fetch_vanished_reports_expunges_since() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 6);
    let user = UserName::new("alice").unwrap();
    let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut a = Client::spawn(&spool, "alice");
    a.ok("ENABLE QRESYNC");
    let sel = a.ok("SELECT INBOX");
    let since = num(resp(&sel, "HIGHESTMODSEQ").unwrap(), "HIGHESTMODSEQ ").unwrap();
    a.ok("UID STORE 3 +FLAGS.SILENT (\\Deleted)");
    a.ok("EXPUNGE");
    m.store(
        &[4],
        storage::mailbox::FlagOp::Add,
        Flags::FLAGGED,
        &[],
        None,
    )
    .unwrap();
    m.expunge(Some(&[5]), false).unwrap();
    let lines = a.ok(&format!(
        "UID FETCH 1:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"
    ));
    // The held expunge of 5 first (UID FETCH may report it), as VANISHED.
    assert_eq!(lines[0], "* VANISHED 5", "{lines:?}");
    // Then what vanished earlier: 3 (this session's own expunge, already
    // reported), not 5 again.
    let earlier: Vec<&String> = lines.iter().filter(|l| l.contains("(EARLIER)")).collect();
    assert_eq!(earlier, vec!["* VANISHED (EARLIER) 3"], "{lines:?}");
    let last = lines.last().unwrap();
    assert!(
        last.contains("UID 4 ") && last.contains("\\Flagged"),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("UID 1 ") || l.contains("UID 6 ")),
        "{lines:?}"
    );
    // Limited to the UIDs asked for.
    let lines = a.ok(&format!(
        "UID FETCH 4:* (FLAGS) (CHANGEDSINCE {since} VANISHED)"
    ));
    let earlier: Vec<&String> = lines.iter().filter(|l| l.contains("(EARLIER)")).collect();
    assert_eq!(earlier, vec!["* VANISHED (EARLIER) 5"], "{lines:?}");
}

/// RFC 7162 3.2.11: SELECT/EXAMINE replacing a selected mailbox sends
/// `* OK [CLOSED]` before anything about the new one; a first SELECT
/// does not.
#[test]
fn reselect_announces_closed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 1);
    let mut a = Client::spawn(&spool, "alice");
    let first = a.ok("SELECT INBOX");
    assert!(!first.iter().any(|l| l.contains("[CLOSED]")), "{first:?}");
    let again = a.ok("EXAMINE INBOX");
    assert!(again[0].starts_with("* OK [CLOSED]"), "{again:?}");
    assert_eq!(again.iter().filter(|l| l.contains("[CLOSED]")).count(), 1);
}

/// RFC 7162 3.2.5 (erratum 1810 on RFC 5162): while an expunge is held
/// back (FETCH by sequence number), FETCHes may carry higher MODSEQs; the
/// server then announces a HIGHESTMODSEQ below the expunge, and a client
/// that disconnects and resynchronizes from it still learns the UID
/// vanished.
#[test]
fn held_expunge_lowers_the_announced_highestmodseq() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 4);
    let user = UserName::new("alice").unwrap();
    let mut m = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let mut a = Client::spawn(&spool, "alice");
    a.ok("ENABLE QRESYNC");
    let sel = a.ok("SELECT INBOX");
    let uv = num(resp(&sel, "UIDVALIDITY").unwrap(), "UIDVALIDITY ").unwrap();
    m.expunge(Some(&[2]), false).unwrap();
    m.store(
        &[3],
        storage::mailbox::FlagOp::Add,
        Flags::FLAGGED,
        &[],
        None,
    )
    .unwrap();
    let lines = a.ok("FETCH 1:* (FLAGS)");
    assert!(!lines.iter().any(|l| l.contains("VANISHED")), "{lines:?}");
    let seen_top = lines
        .iter()
        .filter_map(|l| num(l, "MODSEQ ("))
        .max()
        .expect("MODSEQ in FETCH");
    let announced = lines
        .iter()
        .rev()
        .find_map(|l| num(l, "[HIGHESTMODSEQ "))
        .unwrap_or_else(|| panic!("no HIGHESTMODSEQ while an expunge is held: {lines:?}"));
    assert!(announced < seen_top, "{lines:?}");
    // The client goes away here and comes back from what it was told last.
    drop(a);
    let mut b = Client::spawn(&spool, "alice");
    b.ok("ENABLE QRESYNC");
    let lines = b.ok(&format!("SELECT INBOX (QRESYNC ({uv} {announced}))"));
    let v = lines
        .iter()
        .find(|l| l.starts_with("* VANISHED (EARLIER) "))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        uid_set(&v["* VANISHED (EARLIER) ".len()..]).contains(&2),
        "{lines:?}"
    );
    // Once the expunge went out, no more such announcement.
    let mut c = Client::spawn(&spool, "alice");
    c.ok("ENABLE QRESYNC");
    c.ok("SELECT INBOX");
    let lines = c.ok("NOOP");
    assert!(
        !lines.iter().any(|l| l.contains("HIGHESTMODSEQ")),
        "{lines:?}"
    );
}
