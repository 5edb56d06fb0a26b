//! The IMAP server driven by neomutt, a terminal client, under tmux: the
//! test types keys and reads the screen (`tmux capture-pane`), waiting for
//! what it expects with a deadline (no fixed sleeps), then checks the
//! store's state through a second IMAP session. neomutt reaches the
//! server through `set tunnel` (`serve --stdio`), as OPERATIONS.md
//! documents. Needs `neomutt` and `tmux` (scripts/test.sh installs them);
//! a missing one fails the test rather than skipping it.

mod imap_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use imap_common::{Client, IMAPD, flags, seed_store};
use storage::{AppendOptions, MailboxName, UserName};

/// How long a screen may take to show what a step expects. Generous:
/// it only bounds a hang, it does not time anything.
const DEADLINE: Duration = Duration::from_secs(30);

fn require(tool: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{tool} is not installed: apt-get install {tool}");
}

/// A neomutt running in a private tmux server (its own socket), killed
/// with that server when dropped.
struct Tui {
    socket: String,
}

static SESSIONS: AtomicUsize = AtomicUsize::new(0);

impl Tui {
    fn start(dir: &Path, rc: &Path) -> Tui {
        Self::start_with(dir, rc, "")
    }

    /// `args` go to neomutt's command line as they are.
    fn start_with(dir: &Path, rc: &Path, args: &str) -> Tui {
        require("tmux");
        require("neomutt");
        let socket = format!(
            "imapd-neomutt-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        );
        let t = Tui { socket };
        let cmd = format!(
            "cd '{}' && HOME='{}' exec neomutt -n -F '{}' {args} 2>'{}'",
            dir.display(),
            dir.display(),
            rc.display(),
            dir.join("neomutt.err").display()
        );
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            "m",
            "-x",
            "132",
            "-y",
            "30",
            &cmd,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", "m"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits until the screen satisfies `ok`; panics with the screen at
    /// the deadline.
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                Instant::now() < end,
                "neomutt never showed {what}; screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "m"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success());
    }

    /// Types literal text (no key names).
    fn text(&self, s: &str) {
        assert!(
            self.tmux(&["send-keys", "-t", "m", "-l", s])
                .status
                .success()
        );
    }

    /// Moves the index cursor to the message whose subject matches.
    fn goto(&self, subject: &str) {
        self.keys(&["/"]);
        self.wait("the search prompt", |s| s.contains("Search for:"));
        self.text(subject);
        self.keys(&["Enter"]);
        self.wait("the index after the search", |s| {
            !s.contains("Search for:") && s.contains("NeoMutt:")
        });
    }

    /// Quits and waits for neomutt (and with it the tmux session) to end.
    fn quit(self) {
        self.keys(&["q"]);
        let end = Instant::now() + DEADLINE;
        while self.tmux(&["has-session", "-t", "m"]).status.success() {
            assert!(
                Instant::now() < end,
                "neomutt did not quit; screen:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// The index line of the message with this subject, if shown.
fn line_of<'a>(screen: &'a str, subject: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.ends_with(subject) || l.contains(&format!("{subject} ")))
}

/// The index-line status characters (between the number and the date).
fn status_of(screen: &str, subject: &str) -> String {
    let l = line_of(screen, subject).unwrap_or_else(|| panic!("{subject} not shown:\n{screen}"));
    let dec = l.find("Dec ").expect("date column");
    l[..dec]
        .trim_start()
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .to_string()
}

fn dated_message(n: usize) -> Vec<u8> {
    format!(
        "From: bob@example.org\r\nTo: alice@example.org\r\nSubject: message {n}\r\n\
         Date: Mon, {n:02} Dec 2026 10:00:00 +0000\r\nMessage-ID: <{n}@test>\r\n\r\nbody {n}\r\n"
    )
    .into_bytes()
}

fn seed(spool: &Path, n: usize) -> storage::Store {
    let store = seed_store(spool, "alice");
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    for i in 1..=n {
        inbox
            .append(&dated_message(i)[..], AppendOptions::default())
            .unwrap();
    }
    store
}

fn muttrc(dir: &Path, spool: &Path, extra: &str) -> PathBuf {
    let rc = dir.join("muttrc");
    std::fs::write(
        &rc,
        format!(
            "set tunnel=\"{IMAPD} serve --spool {} -d alice --stdio\"\n\
             set folder=\"imap://localhost/\"\nset spoolfile=\"+INBOX\"\n\
             set imap_check_subscribed=no\nset message_cachedir=\"\"\n\
             set record=\"\"\nset postponed=\"\"\nset sort=date\nset delete=yes\n\
             set confirmappend=no\nset wait_key=no\nset mark_old=no\nset beep=no\n\
             set imap_idle=no\nset mail_check=1\nset timeout=1\n{extra}",
            spool.display()
        ),
    )
    .unwrap();
    rc
}

/// Subject -> sorted flags of a mailbox, from a fresh IMAP session.
fn server_view(spool: &Path, mailbox: &str) -> Vec<(String, Vec<String>)> {
    let mut c = Client::spawn(spool, "alice");
    c.ok(&format!("SELECT {mailbox}"));
    let lines = c.ok("FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    let mut out = Vec::new();
    let mut pending: Option<Vec<String>> = None;
    for l in lines {
        if l.contains(" FETCH (") {
            pending = flags(&l);
        } else if let Some(s) = l.strip_prefix("Subject: ") {
            out.push((
                s.to_string(),
                pending.take().expect("FLAGS before the header"),
            ));
        }
    }
    out
}

/// A user opens INBOX in neomutt, reads a message (which sets \Seen),
/// flags it, deletes another and syncs (EXPUNGE), and saves a third to
/// another folder; the store ends with exactly that (RFC 3501 6.4.6
/// STORE, 6.4.3 EXPUNGE, RFC 6851 / 6.4.7 for the save).
#[test]
fn neomutt_reads_flags_deletes_and_moves() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed(&spool, 4);
    store
        .create_mailbox(
            &UserName::new("alice").unwrap(),
            &MailboxName::new("Archive").unwrap(),
        )
        .unwrap();
    let rc = muttrc(dir.path(), &spool, "set header_cache=\"\"\n");
    let t = Tui::start(dir.path(), &rc);
    t.wait("the INBOX index", |s| {
        s.contains("message 4") && s.contains("Msgs:4")
    });
    // Read message 2.
    t.goto("message 2");
    t.keys(&["Enter"]);
    t.wait("message 2's body", |s| s.contains("body 2"));
    t.keys(&["q"]);
    t.wait("the index again", |s| s.contains("Msgs:4"));
    // Flag it.
    t.keys(&["F"]);
    t.wait("message 2 flagged", |s| {
        status_of(s, "message 2").contains('!')
    });
    // Delete message 3 and sync.
    t.goto("message 3");
    t.keys(&["d", "$"]);
    t.wait("message 3 expunged", |s| {
        line_of(s, "message 3").is_none() && s.contains("Msgs:3")
    });
    // Save message 4 to Archive (a move) and sync.
    t.goto("message 4");
    t.keys(&["s"]);
    t.wait("the save prompt", |s| s.contains("Save to mailbox"));
    t.keys(&["C-u"]);
    t.text("=Archive");
    t.keys(&["Enter"]);
    t.wait("the index after the save", |s| {
        !s.contains("Save to mailbox")
    });
    t.keys(&["$"]);
    t.wait("message 4 moved out", |s| {
        line_of(s, "message 4").is_none() && s.contains("Msgs:2")
    });
    t.quit();
    let seen_flagged = vec!["\\Flagged".to_string(), "\\Seen".to_string()];
    assert_eq!(
        server_view(&spool, "INBOX"),
        vec![
            ("message 1".to_string(), vec![]),
            ("message 2".to_string(), seen_flagged)
        ]
    );
    let archive = server_view(&spool, "Archive");
    assert_eq!(archive.len(), 1, "{archive:?}");
    assert_eq!(archive[0].0, "message 4");
}

/// neomutt with a header cache and `imap_qresync` is a QRESYNC client
/// (RFC 7162): it reconnects with ENABLE QRESYNC and `UID FETCH ...
/// (CHANGEDSINCE m VANISHED)`. Between two runs another session changes
/// flags and expunges, mail arrives and a repack drops the expunged
/// records (so the server answers with its fallback, RFC 7162 3.2.5.2);
/// the second run must show exactly the server's messages and flags.
#[test]
fn neomutt_resyncs_with_qresync_after_changes_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed(&spool, 4);
    let hc = dir.path().join("hcache");
    std::fs::create_dir_all(&hc).unwrap();
    let rc = muttrc(
        dir.path(),
        &spool,
        &format!(
            "set header_cache=\"{}\"\nset imap_condstore=yes\nset imap_qresync=yes\n",
            hc.display()
        ),
    );
    let t = Tui::start(dir.path(), &rc);
    t.wait("the INBOX index", |s| {
        s.contains("message 4") && s.contains("Msgs:4")
    });
    t.quit();
    assert!(
        std::fs::read_dir(&hc).unwrap().next().is_some(),
        "neomutt wrote no header cache"
    );
    // Meanwhile, elsewhere.
    let mut b = Client::spawn(&spool, "alice");
    b.ok("SELECT INBOX");
    b.ok("UID STORE 1 +FLAGS (\\Flagged \\Seen)");
    b.ok("UID STORE 2,3 +FLAGS (\\Deleted)");
    b.ok("EXPUNGE");
    b.ok("LOGOUT");
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    inbox
        .append(&dated_message(5)[..], AppendOptions::default())
        .unwrap();
    inbox.repack().unwrap();
    // Second run: the cache plus QRESYNC must give the server's state.
    // Its debug log shows the commands it sent.
    let log = dir.path().join("neomutt.log");
    let t = Tui::start_with(dir.path(), &rc, &format!("-d 2 -l '{}'", log.display()));
    let s = t.wait("the resynced index", |s| {
        s.contains("message 5") && s.contains("Msgs:3")
    });
    assert!(line_of(&s, "message 2").is_none(), "{s}");
    assert!(line_of(&s, "message 3").is_none(), "{s}");
    assert!(status_of(&s, "message 1").contains('!'), "{s}");
    assert!(!status_of(&s, "message 1").contains('N'), "{s}");
    assert!(status_of(&s, "message 4").contains('N'), "{s}");
    let sent = std::fs::read_to_string(format!("{}0", log.display())).unwrap_or_default();
    assert!(
        sent.contains("ENABLE QRESYNC") && sent.contains("VANISHED)"),
        "neomutt did not resynchronize with QRESYNC:\n{sent}"
    );
    // A change made in this run reaches the server.
    t.goto("message 5");
    t.keys(&["F"]);
    t.wait("message 5 flagged", |s| {
        status_of(s, "message 5").contains('!')
    });
    t.keys(&["$"]);
    t.quit();
    let v = server_view(&spool, "INBOX");
    let subjects: Vec<&str> = v.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subjects, vec!["message 1", "message 4", "message 5"]);
    assert!(v[2].1.contains(&"\\Flagged".to_string()), "{v:?}");
}

/// A new user's first login, before any delivery: INBOX exists and
/// neomutt opens it (empty) without an error.
#[test]
fn neomutt_first_login_of_a_new_user() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let rc = muttrc(dir.path(), &spool, "set header_cache=\"\"\n");
    let t = Tui::start(dir.path(), &rc);
    let s = t.wait("the empty INBOX", |s| {
        s.contains("+INBOX") && s.contains("NeoMutt:")
    });
    assert!(!s.to_lowercase().contains("error"), "{s}");
    t.quit();
    assert_eq!(server_view(&spool, "INBOX"), vec![]);
}
