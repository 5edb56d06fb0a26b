//! The IMAP server against offlineimap3: a two-way sync of a small
//! account to a local Maildir through `preauthtunnel` (`serve --stdio`),
//! then changes on both sides (flags, new messages, deletions) and a
//! second sync, after which both sides must agree. Needs `offlineimap`
//! (Debian package offlineimap3; scripts/test.sh installs it); a missing
//! one fails the test rather than skipping it.

mod imap_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use imap_common::{Client, IMAPD, flags, message, seed_messages};
use storage::{AppendOptions, MailboxName, UserName};

/// Message-ID -> sorted IMAP flags.
type State = BTreeMap<String, Vec<String>>;

fn rc(dir: &Path, spool: &Path) -> PathBuf {
    let rc = dir.join("offlineimaprc");
    std::fs::write(
        &rc,
        format!(
            "[general]\naccounts = t\nmetadata = {meta}\n\n\
             [Account t]\nlocalrepository = L\nremoterepository = R\n\n\
             [Repository L]\ntype = Maildir\nlocalfolders = {local}\n\n\
             [Repository R]\ntype = IMAP\n\
             preauthtunnel = {IMAPD} serve --spool {spool} -d alice --stdio\n",
            meta = dir.join("meta").display(),
            local = dir.join("mail").display(),
            spool = spool.display()
        ),
    )
    .unwrap();
    rc
}

fn sync(rc: &Path) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg("command -v offlineimap")
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "offlineimap is not installed: apt-get install offlineimap3"
    );
    let out = Command::new("offlineimap")
        .arg("-c")
        .arg(rc)
        .args(["-o", "-u", "basic"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "offlineimap failed:\n{text}");
    assert!(
        !text.contains("ERROR"),
        "offlineimap reported an error:\n{text}"
    );
}

fn message_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .map(|s| s.trim().to_string())
}

/// The local Maildir folder: Message-ID -> flags (from the `:2,` info).
fn local_state(folder: &Path) -> State {
    let mut out = State::new();
    for sub in ["cur", "new"] {
        let Ok(rd) = std::fs::read_dir(folder.join(sub)) else {
            continue;
        };
        for e in rd {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let info = name.rsplit_once(":2,").map_or("", |(_, i)| i);
            let mut f: Vec<String> = info
                .chars()
                .filter_map(|c| match c {
                    'S' => Some("\\Seen"),
                    'F' => Some("\\Flagged"),
                    'R' => Some("\\Answered"),
                    'T' => Some("\\Deleted"),
                    'D' => Some("\\Draft"),
                    _ => None,
                })
                .map(str::to_string)
                .collect();
            f.sort();
            let text = std::fs::read_to_string(&path).unwrap();
            out.insert(message_id(&text).expect("Message-ID"), f);
        }
    }
    out
}

/// The server's mailbox: Message-ID -> flags, from a fresh session.
fn server_state(spool: &Path, mailbox: &str) -> State {
    let mut c = Client::spawn(spool, "alice");
    c.ok(&format!("EXAMINE {mailbox}"));
    let lines = c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])");
    let mut out = State::new();
    let mut pending = None;
    for l in lines {
        if l.contains(" FETCH (") {
            pending = flags(&l);
        } else if let Some(id) = message_id(&l) {
            out.insert(id, pending.take().expect("FLAGS before the header"));
        }
    }
    out
}

fn maildir_file(folder: &Path, id: &str) -> PathBuf {
    for sub in ["cur", "new"] {
        for e in std::fs::read_dir(folder.join(sub)).unwrap() {
            let p = e.unwrap().path();
            if message_id(&std::fs::read_to_string(&p).unwrap()).as_deref() == Some(id) {
                return p;
            }
        }
    }
    panic!("{id} not in {}", folder.display());
}

/// Two-way sync (RFC 3501 FETCH/STORE/APPEND/EXPUNGE, RFC 4315 UIDPLUS
/// as offlineimap uses them): after the first sync the Maildir holds the
/// account; then the local side marks one message seen, deletes one and
/// adds one, while the server flags one, expunges one and receives one;
/// after a second sync both sides hold the same messages with the same
/// flags.
#[test]
fn offlineimap_syncs_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 4);
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    store
        .create_mailbox(&user, &MailboxName::new("Work").unwrap())
        .unwrap();
    let rc = rc(dir.path(), &spool);
    sync(&rc);
    let local = dir.path().join("mail");
    let l_inbox = local.join("INBOX");
    assert_eq!(local_state(&l_inbox), server_state(&spool, "INBOX"));
    assert_eq!(local_state(&l_inbox).len(), 4);
    assert!(
        local.join("Work").join("cur").is_dir(),
        "Work not created locally"
    );

    // Local changes: <0@test> read, <1@test> deleted, a new one in Work.
    let f0 = maildir_file(&l_inbox, "<0@test>");
    let name = f0.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::rename(&f0, l_inbox.join("cur").join(format!("{name}S"))).unwrap();
    std::fs::remove_file(maildir_file(&l_inbox, "<1@test>")).unwrap();
    std::fs::write(
        local.join("Work/new/1700000000.local1.host"),
        "From: me@example.org\r\nSubject: local\r\nMessage-ID: <local@test>\r\n\r\nlocal\r\n",
    )
    .unwrap();
    // Server changes: <2@test> flagged, <3@test> expunged, <9@test> new.
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    c.ok("UID STORE 3 +FLAGS (\\Flagged)");
    c.ok("UID STORE 4 +FLAGS (\\Deleted)");
    c.ok("EXPUNGE");
    c.ok("LOGOUT");
    inbox
        .append(&message(9)[..], AppendOptions::default())
        .unwrap();

    sync(&rc);
    let want: State = [
        ("<0@test>", vec!["\\Seen"]),
        ("<2@test>", vec!["\\Flagged"]),
        ("<9@test>", vec![]),
    ]
    .into_iter()
    .map(|(id, f)| (id.to_string(), f.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(server_state(&spool, "INBOX"), want, "server INBOX");
    assert_eq!(local_state(&l_inbox), want, "local INBOX");
    let work: State = [("<local@test>".to_string(), vec![])].into_iter().collect();
    assert_eq!(server_state(&spool, "Work"), work, "server Work");
    assert_eq!(local_state(&local.join("Work")), work, "local Work");
    // A third sync with no change on either side changes nothing.
    sync(&rc);
    assert_eq!(server_state(&spool, "INBOX"), want);
    assert_eq!(local_state(&l_inbox), want);
}

/// A new user's first sync, before any delivery: INBOX exists on the
/// server and comes over empty; a message put in the local INBOX is
/// uploaded.
#[test]
fn offlineimap_first_sync_of_a_new_user() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let rc = rc(dir.path(), &spool);
    sync(&rc);
    let l_inbox = dir.path().join("mail/INBOX");
    assert!(l_inbox.join("cur").is_dir(), "INBOX not created locally");
    assert!(local_state(&l_inbox).is_empty());
    std::fs::write(
        l_inbox.join("new/1700000000.first.host"),
        "From: me@example.org\r\nSubject: first\r\nMessage-ID: <first@test>\r\n\r\nhi\r\n",
    )
    .unwrap();
    sync(&rc);
    let want: State = [("<first@test>".to_string(), vec![])].into_iter().collect();
    assert_eq!(server_state(&spool, "INBOX"), want);
}
