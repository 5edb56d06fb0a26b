//! The IMAP server against real clients: Python's imaplib over `--stdio`,
//! isync's mbsync through `Tunnel`, and the npm package imapflow over TCP
//! with a password. The clients must be installed (scripts/test.sh does:
//! `apt-get install isync`, `npm install --prefix target/node-clients
//! imapflow@2`); a missing client fails the test rather than skipping it.

mod imap_common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use imap_common::*;
use storage::mailbox::FlagOp;
use storage::{AppendOptions, Flags, MailboxName, UserName};

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// `target/debug/deliver` when it has been built (the real delivery
/// agent); otherwise the client scripts deliver through a second session.
fn deliver_bin() -> Option<PathBuf> {
    let p = target_dir().join("deliver");
    p.exists().then_some(p)
}

fn require(tool: &str, hint: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "{tool} is not installed: {hint}");
}

#[test]
fn imaplib_over_stdio() {
    require("python3", "install python3");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_store(&spool, "alice");
    let mut cmd = Command::new("python3");
    cmd.arg(clients_dir().join("imaplib_sessions.py"))
        .arg(IMAPD)
        .arg(&spool);
    if let Some(d) = deliver_bin() {
        cmd.arg(d);
    }
    let out = cmd.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "imaplib script failed");
    assert!(text.contains("imaplib: ok"));
}

fn maildir_files(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
            for e in rd {
                v.push(format!(
                    "{sub}/{}",
                    e.unwrap().file_name().to_string_lossy()
                ));
            }
        }
    }
    v.sort();
    v
}

/// An mbsync configuration syncing every mailbox of alice to `local`
/// through the tunnel; returns the sync, which asserts success.
fn mbsync_setup(dir: &Path, spool: &Path, local: &Path) -> impl Fn() {
    std::fs::create_dir_all(local).unwrap();
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount t\nTunnel \"{IMAPD} serve --spool {} -d alice --stdio\"\n\nIMAPStore t-far\nAccount t\n\n\
             MaildirStore t-near\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel t\nFar :t-far:\nNear :t-near:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
            spool.display(),
            local.display(),
            local.display()
        ),
    )
    .unwrap();
    move || {
        let out = Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mbsync failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A new user's first login, before any delivery (issue 16): INBOX exists
/// and each client opens it empty: imaplib and mbsync through the tunnel,
/// imapflow over TCP with a password.
#[test]
fn new_user_first_login_in_each_client() {
    require("python3", "install python3");
    require("mbsync", "apt-get install isync");
    require("node", "install nodejs");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    // imaplib: SELECT INBOX answers OK with 0 messages.
    let script = "import imaplib,sys\n\
        M = imaplib.IMAP4_stream(sys.argv[1])\n\
        typ, data = M.select('INBOX')\n\
        assert typ == 'OK', (typ, data)\n\
        print('count', int(data[0]))\n\
        M.logout()\n";
    let tunnel = format!("{IMAPD} serve --spool {} -d bob --stdio", spool.display());
    let out = Command::new("python3")
        .args(["-c", script, &tunnel])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("count 0"),
        "imaplib: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // mbsync (user alice, nothing delivered yet): an empty INBOX locally.
    let local = dir.path().join("mb");
    mbsync_setup(dir.path(), &spool, &local)();
    assert!(local.join("INBOX/cur").is_dir(), "no local INBOX");
    assert!(maildir_files(&local.join("INBOX")).is_empty());
    // imapflow (user carol) over TCP.
    let passwd = write_passwd(dir.path(), "carol", "pw for carol");
    let server = TcpServer::start(&spool, &passwd);
    let js = "import { createRequire } from 'node:module';\n\
        const require = createRequire(process.env.IMAPFLOW_DIR + '/');\n\
        const { ImapFlow } = require('imapflow');\n\
        setTimeout(() => { console.error('timed out'); process.exit(1); }, 20000).unref();\n\
        const c = new ImapFlow({ host: '127.0.0.1', port: Number(process.argv[1]), secure: false, \
        auth: { user: 'carol', pass: 'pw for carol' }, logger: false });\n\
        await c.connect();\n\
        const box = await c.mailboxOpen('INBOX');\n\
        console.log('exists ' + box.exists);\n\
        await c.logout();\n";
    let out = Command::new("node")
        .env("IMAPFLOW_DIR", imapflow_dir())
        .args(["--input-type=module", "-e", js, &server.port.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("exists 0"),
        "imapflow: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.stop();
}

/// imapflow with `qresync: true` (RFC 7162 3.2): ENABLE QRESYNC, a
/// reconnect with SELECT (QRESYNC (uidvalidity modseq)) after another
/// session flagged one message and deleted another reports both (VANISHED
/// (EARLIER) and FETCH), and a later expunge arrives as VANISHED.
#[test]
fn imapflow_resyncs_with_qresync() {
    require("node", "install nodejs");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_messages(&spool, "alice", 4);
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let port = server.port.to_string();
    let v = imapflow_json("imapflow_qresync.mjs", &[&port, "alice", "pw"]);
    assert!(
        v["enabled"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "QRESYNC"),
        "{v}"
    );
    assert_eq!(v["qresync"], true, "{v}");
    assert_eq!(v["exists"], 3, "{v}");
    assert_eq!(
        v["resync_expunged"],
        serde_json::json!([{"uid": 3, "vanished": true, "earlier": true}]),
        "{v}"
    );
    let flags = v["resync_flags"].as_array().unwrap();
    assert!(
        flags.iter().any(|f| f["uid"] == 2
            && f["flags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == "\\Flagged")),
        "{v}"
    );
    assert_eq!(
        v["live_expunged"],
        serde_json::json!([{"uid": 1, "vanished": true, "earlier": false}]),
        "{v}"
    );
    server.stop();
}

#[test]
fn mbsync_syncs_both_ways_through_tunnel() {
    require("mbsync", "apt-get install isync");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 3);
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    store
        .create_mailbox(&user, &MailboxName::new("Work").unwrap())
        .unwrap();
    let local = dir.path().join("mb");
    let sync = mbsync_setup(dir.path(), &spool, &local);
    sync();
    let files = maildir_files(&local.join("INBOX"));
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        local.join("Work").exists(),
        "mailbox Work not created locally"
    );

    // Local changes: mark one message seen, add a new one. Far changes:
    // flag one, deliver one, expunge one.
    let seen_file = files
        .iter()
        .find(|f| f.starts_with("cur/"))
        .cloned()
        .unwrap_or(files[0].clone());
    let src = local.join("INBOX").join(&seen_file);
    let base = seen_file
        .rsplit('/')
        .next()
        .unwrap()
        .split(":2,")
        .next()
        .unwrap()
        .to_string();
    std::fs::rename(&src, local.join("INBOX/cur").join(format!("{base}:2,S"))).unwrap();
    std::fs::write(
        local.join("INBOX/new/1700000000.local.test"),
        "Subject: written locally\r\n\r\nhi\r\n",
    )
    .unwrap();
    inbox
        .store(&[2], FlagOp::Add, Flags::FLAGGED, &[], None)
        .unwrap();
    inbox
        .append(&message(10)[..], AppendOptions::default())
        .unwrap();
    inbox.expunge(Some(&[3]), false).unwrap();
    sync();

    let snap = inbox.snapshot().unwrap();
    let live: Vec<_> = snap.records.iter().filter(|r| !r.is_expunged()).collect();
    assert_eq!(
        live.len(),
        4,
        "far side: 3 - 1 expunged + 1 delivered + 1 uploaded"
    );
    let seen = live
        .iter()
        .filter(|r| r.flags.contains(Flags::SEEN))
        .count();
    assert!(seen == 1, "local \\Seen did not reach the store: {live:?}");
    let uploaded = live.iter().any(|r| {
        inbox
            .read_message(r.uid)
            .unwrap()
            .windows(16)
            .any(|w| w == b"written locally\r")
    });
    assert!(uploaded, "the locally written message was not uploaded");
    let files = maildir_files(&local.join("INBOX"));
    assert_eq!(files.len(), 4, "near side: {files:?}");
    assert!(
        files.iter().any(|f| f.contains(":2,F")),
        "server \\Flagged did not reach the maildir: {files:?}"
    );
}

#[test]
fn imapflow_idles_over_tcp_with_password() {
    require("node", "install nodejs");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 2);
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    // A password file made by `imapd-check passwd`.
    let passwd = write_passwd(dir.path(), "alice", "correct horse");

    // Refuses a public address without the explicit flag.
    let refused = Command::new(IMAPD)
        .args(["serve", "--listen", "0.0.0.0:0", "--passwd"])
        .arg(&passwd)
        .arg("--spool")
        .arg(&spool)
        .output()
        .unwrap();
    assert!(
        !refused.status.success(),
        "listened on 0.0.0.0 without --allow-non-loopback"
    );

    let server = TcpServer::start(&spool, &passwd);
    let port = server.port;

    // Wrong password: NO, and the connection stays usable.
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert!(
            l.starts_with("* OK [CAPABILITY") && l.contains("AUTH=PLAIN"),
            "{l}"
        );
        s.write_all(b"a LOGIN alice wrong\r\nb SELECT INBOX\r\nc LOGIN alice \"correct horse\"\r\nd LOGOUT\r\n").unwrap();
        let mut all = String::new();
        for _ in 0..4 {
            l.clear();
            r.read_line(&mut l).unwrap();
            all.push_str(&l);
        }
        assert!(all.contains("a NO [AUTHENTICATIONFAILED]"), "{all}");
        assert!(all.contains("b BAD"), "{all}");
        assert!(all.contains("c OK"), "{all}");
    }

    let port = port.to_string();
    let mut args = vec![port.as_str(), "alice", "correct horse"];
    let deliver = deliver_bin().map(|d| d.to_str().unwrap().to_string());
    let spool_arg = spool.to_str().unwrap().to_string();
    if let Some(d) = &deliver {
        args.extend([d.as_str(), "--spool", spool_arg.as_str(), "-d", "alice"]);
    }
    let v = imapflow_json("imapflow_idle.mjs", &args);
    assert_eq!(v["authenticated"], true);
    assert_eq!(v["fetched"].as_array().unwrap().len(), 2);
    assert_eq!(v["fetched"][0]["subject"], "message 0");
    assert_eq!(
        v["exists_after_idle"], 3,
        "IDLE did not report the delivery"
    );
    assert_eq!(v["status_messages"], 3);
    let snap = inbox.snapshot().unwrap();
    assert!(
        snap.records[0].flags.contains(Flags::FLAGGED),
        "imapflow's flag change is not in the index"
    );
    let logs = server.stop();
    assert!(
        !logs.contains("correct horse") && !logs.contains("wrong"),
        "a password reached the log: {logs}"
    );
}
