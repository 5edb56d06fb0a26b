//! RENAME (including INBOX's rule) and delivery racing it, with real
//! processes: every delivered message ends up in exactly one mailbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mailstore::format::Flags;
use mailstore::mailbox::{AppendOptions, Mailbox};
use mailstore::{Durability, Error, MailboxName, Options, Store, UserName};

const ROLE: &str = "TRANSFER_RENAME_ROLE";
const SPOOL: &str = "TRANSFER_RENAME_SPOOL";
const RUN_FOR: Duration = Duration::from_secs(3);

fn user() -> UserName {
    UserName::new("ren").unwrap()
}

fn name(n: &str) -> MailboxName {
    MailboxName::new(n).unwrap()
}

fn store_at(spool: &Path) -> Store {
    Store::open(
        spool,
        Options {
            durability: Durability::Relaxed,
            lock_timeout: Duration::from_secs(20),
        },
    )
    .unwrap()
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}>\r\n\r\nbody of {id}\r\n").into_bytes()
}

/// Message-ID -> mailboxes holding it, over every mailbox of the user.
fn census(s: &Store) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in s.list_mailboxes(&user()).unwrap() {
        let mut m = s.open_mailbox(&user(), &n).unwrap();
        let snap = m.snapshot().unwrap();
        for r in snap.records.iter().filter(|r| !r.is_expunged()) {
            let b = String::from_utf8(m.read_message(r.uid).unwrap()).unwrap();
            let id = b.lines().next().unwrap()["Message-ID: <".len()..]
                .trim_end_matches('>')
                .to_string();
            out.entry(id).or_default().push(n.to_string());
        }
    }
    out
}

fn live_uids(m: &mut Mailbox) -> Vec<u32> {
    m.snapshot()
        .unwrap()
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| r.uid)
        .collect()
}

#[test]
fn rename_inbox_moves_messages_and_leaves_children() {
    let tmp = tempfile::tempdir().unwrap();
    let s = store_at(&tmp.path().join("spool"));
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    s.create_mailbox(&user(), &name("INBOX/Sub")).unwrap();
    s.create_mailbox(&user(), &name("Taken")).unwrap();
    let mut inbox = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    for i in 0..3 {
        inbox
            .append(
                &message(&format!("i{i}"))[..],
                AppendOptions {
                    flags: Flags::SEEN,
                    keywords: vec!["K".into()],
                    ..Default::default()
                },
            )
            .unwrap();
    }
    let mut sub = s.open_mailbox(&user(), &name("INBOX/Sub")).unwrap();
    sub.append(&message("sub")[..], AppendOptions::default())
        .unwrap();
    let uv = inbox.header().unwrap().uidvalidity;

    // Refusals change nothing.
    assert!(matches!(
        s.rename_mailbox(&user(), &MailboxName::inbox(), &name("Taken")),
        Err(Error::MailboxExists(_))
    ));
    assert!(matches!(
        s.rename_mailbox(&user(), &name("Taken"), &MailboxName::inbox()),
        Err(Error::MailboxExists(_))
    ));
    assert_eq!(live_uids(&mut inbox), vec![1, 2, 3]);

    s.rename_mailbox(&user(), &MailboxName::inbox(), &name("Old"))
        .unwrap();
    let h = inbox.header().unwrap();
    assert_eq!(
        (h.exists, h.uidvalidity),
        (0, uv),
        "INBOX empty, same UIDVALIDITY"
    );
    let mut old = s.open_mailbox(&user(), &name("Old")).unwrap();
    let snap = old.snapshot().unwrap();
    assert_eq!(snap.header.exists, 3);
    assert_ne!(snap.header.uidvalidity, uv);
    assert!(snap.records.iter().all(|r| r.flags == Flags::SEEN));
    assert_eq!(snap.meta.keywords, vec!["K".to_string()]);
    assert_eq!(old.read_message(1).unwrap(), message("i0"));
    // The child stayed under INBOX.
    assert_eq!(live_uids(&mut sub), vec![1]);
    let names: Vec<String> = s
        .list_mailboxes(&user())
        .unwrap()
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, vec!["INBOX", "INBOX/Sub", "Old", "Taken"]);
    // INBOX still takes deliveries.
    inbox
        .append(&message("after")[..], AppendOptions::default())
        .unwrap();
    let c = census(&s);
    assert_eq!(c["after"], vec!["INBOX".to_string()]);
    assert_eq!(c["i1"], vec!["Old".to_string()]);
}

/// Child roles: "deliver" appends to Work (by name, falling back to INBOX
/// like deliver does when Work is missing) or to INBOX; "rename" renames
/// Work <-> Tmp back and forth and now and then renames INBOX away.
#[test]
fn transfer_rename_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let s = store_at(&PathBuf::from(std::env::var(SPOOL).unwrap()));
    let start = Instant::now();
    match role.as_str() {
        "deliver" => {
            let mut n = 0u32;
            while start.elapsed() < RUN_FOR {
                let id = format!("d{}-{n}@test", std::process::id());
                let want = if n.is_multiple_of(3) { "INBOX" } else { "Work" };
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    assert!(attempts < 1000, "delivery of {id} keeps failing");
                    let target = match s.open_mailbox(&user(), &name(want)) {
                        Ok(m) => Ok(m),
                        Err(Error::NoSuchMailbox(_)) => {
                            s.open_mailbox(&user(), &MailboxName::inbox())
                        }
                        Err(e) => Err(e),
                    };
                    let mut m = target.unwrap();
                    match m.append(&message(&id)[..], AppendOptions::default()) {
                        Ok(_) => break,
                        // Deleted under us (never here) or a transient
                        // error: retry, as Postfix would.
                        Err(Error::MailboxDeleted) => continue,
                        Err(e) => panic!("deliver {id}: {e}"),
                    }
                }
                println!("DELIVERED {id}");
                n += 1;
            }
        }
        "deliver-doomed" => {
            let mut n = 0u32;
            while start.elapsed() < Duration::from_secs(2) {
                let id = format!("x{}-{n}@test", std::process::id());
                loop {
                    let (mut m, place) = match s.open_mailbox(&user(), &name("Doomed")) {
                        Ok(m) => (m, "Doomed"),
                        Err(Error::NoSuchMailbox(_)) => (
                            s.open_mailbox(&user(), &MailboxName::inbox()).unwrap(),
                            "INBOX",
                        ),
                        Err(e) => panic!("open: {e}"),
                    };
                    match m.append(&message(&id)[..], AppendOptions::default()) {
                        Ok(uid) => {
                            println!("DELIVERED {id} {place} {uid}");
                            break;
                        }
                        // Deleted between our open and our commit: nothing
                        // was written; retry (deliver exits 75 here).
                        Err(Error::MailboxDeleted) => continue,
                        Err(e) => panic!("deliver {id}: {e}"),
                    }
                }
                n += 1;
            }
        }
        "rename" => {
            let (mut renames, mut inbox_renames) = (0, 0);
            while start.elapsed() < RUN_FOR {
                let (from, to) = if s.mailbox_exists(&user(), &name("Work")).unwrap() {
                    ("Work", "Tmp")
                } else {
                    ("Tmp", "Work")
                };
                s.rename_mailbox(&user(), &name(from), &name(to)).unwrap();
                renames += 1;
                if renames % 10 == 0 {
                    let to = name(&format!("Saved{inbox_renames}"));
                    s.rename_mailbox(&user(), &MailboxName::inbox(), &to)
                        .unwrap();
                    inbox_renames += 1;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            println!("RENAMES {renames} INBOX {inbox_renames}");
        }
        r => panic!("unknown role {r}"),
    }
}

#[test]
fn delivery_racing_renames_lands_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let s = store_at(&spool);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    s.create_mailbox(&user(), &name("Work")).unwrap();
    let mut children = Vec::new();
    for role in ["deliver", "deliver", "rename"] {
        let c = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "transfer_rename_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROLE, role)
            .env(SPOOL, &spool)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        children.push((role, c));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut delivered = Vec::new();
    let mut renames = String::new();
    // Collect each child's output while it runs: a child that writes more
    // than a pipe buffer would otherwise block on stdout forever.
    let pids: Vec<u32> = children.iter().map(|(_, c)| c.id()).collect();
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, (role, c)) in children.into_iter().enumerate() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let _ = tx.send((i, role, c.wait_with_output().unwrap()));
        });
    }
    drop(tx);
    let mut outputs = Vec::new();
    while outputs.len() < pids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(o) => outputs.push(o),
            Err(_) => {
                for pid in &pids {
                    // SAFETY: sending a signal has no memory effects.
                    unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
                }
                panic!("children did not finish in time");
            }
        }
    }
    outputs.sort_by_key(|(i, _, _)| *i);
    for (_, role, out) in outputs {
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{role}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in text.lines() {
            if let Some(i) = l.find("DELIVERED ") {
                delivered.push(l[i + "DELIVERED ".len()..].to_string());
            }
            if let Some(i) = l.find("RENAMES ") {
                renames = l[i..].to_string();
            }
        }
    }
    eprintln!("{} delivered, {renames}", delivered.len());
    assert!(!delivered.is_empty() && !renames.is_empty());
    let c = census(&s);
    for id in &delivered {
        let places = c.get(id).cloned().unwrap_or_default();
        assert_eq!(places.len(), 1, "{id} is in {places:?}");
    }
    assert_eq!(c.len(), delivered.len(), "unexpected messages");
}

/// DELETE racing deliveries: the parent deletes `Doomed` while two
/// processes deliver to it (falling back to INBOX once it is gone). It
/// keeps the old index open, so after the delete it can read exactly which
/// records the mailbox held when DELETED was committed. Every delivery
/// reported into Doomed must be one of those records, each record must be
/// a reported delivery, and everything else is in INBOX exactly once.
#[test]
fn delivery_racing_delete_is_never_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let s = store_at(&spool);
    s.create_mailbox(&user(), &MailboxName::inbox()).unwrap();
    s.create_mailbox(&user(), &name("Doomed")).unwrap();
    let children: Vec<_> = (0..2)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "transfer_rename_child",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(ROLE, "deliver-doomed")
                .env(SPOOL, &spool)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(700));
    let dir = mailstore::Dir::open_root(&s.mailbox_path(&user(), &name("Doomed"))).unwrap();
    let old_index = mailstore::internals::index::IndexFile::open(&dir).unwrap();
    s.delete_mailbox(&user(), &name("Doomed")).unwrap();
    let h = old_index.read_header().unwrap();
    assert!(h.is_deleted());
    let at_delete: std::collections::BTreeSet<u32> = old_index
        .read_records(0, h.num_records)
        .unwrap()
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| r.uid)
        .collect();
    let mut into_doomed = std::collections::BTreeSet::new();
    let mut into_inbox = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for l in text.lines() {
            let Some(i) = l.find("DELIVERED ") else {
                continue;
            };
            let f: Vec<&str> = l[i..].split_whitespace().collect();
            match f[2] {
                "Doomed" => assert!(into_doomed.insert(f[3].parse::<u32>().unwrap())),
                _ => into_inbox.push(f[1].to_string()),
            }
        }
    }
    eprintln!(
        "{} into Doomed before the delete, {} into INBOX",
        into_doomed.len(),
        into_inbox.len()
    );
    assert!(
        !into_doomed.is_empty() && !into_inbox.is_empty(),
        "no race happened"
    );
    assert_eq!(
        into_doomed, at_delete,
        "Doomed deliveries vs records at DELETE"
    );
    let c = census(&s);
    for id in &into_inbox {
        assert_eq!(
            c.get(id).cloned().unwrap_or_default(),
            vec!["INBOX".to_string()],
            "{id}"
        );
    }
    assert_eq!(c.len(), into_inbox.len());
    assert!(!s.mailbox_exists(&user(), &name("Doomed")).unwrap());
}
