//! A real Postfix (Debian's package) on loopback, configured to hand mail to
//! our `deliver` in all three ways Postfix offers, and torn down again.
//!
//! Layout (everything under a fresh `/tmp/e2e-postfix-*`, mode 0755, because
//! Postfix runs `deliver` as other users who may not traverse `/work`):
//!
//! - `bin/deliver`: a copy of the freshly built binary, 0755.
//! - `spool-local/`: local(8) `mailbox_command` runs `deliver` **as the
//!   recipient** (alice, bob), so the root is root-owned 0755 and each
//!   user's directory `spool-local/USER` is pre-created, owned by USER,
//!   0700; `deliver --autocreate` makes the INBOX inside it.
//! - `spool-virtual/`: pipe(8) runs `deliver` as `user=mailtest` (pipe refuses
//!   root), and the LMTP server runs as `mailtest` too, so this whole spool
//!   is owned by `mailtest`. Its users are mail-only: their INBOXes are
//!   created up front, so an address without one is unknown (exit 67/550).
//! - the LMTP socket `lmtp/sock`: the server runs unprivileged (as
//!   `mailtest`), so it cannot create a socket in Postfix's
//!   `/var/spool/postfix/private/` (postfix-owned, 0700), which is the only
//!   place Debian's chrooted `lmtp` service can reach. So the test adds its
//!   own lmtp(8) service `e2elmtp` with the chroot column `n` and points the
//!   transport at the absolute socket path; the socket is made writable for
//!   `postfix` once it appears.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use storage::{MailboxName, Options, Store, UserName};

use crate::{chown_tree, ensure_user, mkdir_mode, run, run_ok, run_with_input, set_mode, wait_for};

pub const LOG: &str = "/var/log/postfix-e2e.log";
/// Our non-chrooted lmtp(8) service.
pub const LMTP_SERVICE: &str = "e2elmtp";
pub const PIPE_SERVICE: &str = "e2edeliver";
pub const PIPE_USER: &str = "mailtest";
/// Users with a login (local(8) delivers only to passwd users).
pub const LOCAL_USERS: [&str; 2] = ["alice", "bob"];
/// Store-only users of the virtual spool (pipe and LMTP).
pub const VIRTUAL_USERS: [&str; 3] = ["alice", "bob", "carol"];
/// Short lock waits so a held lock turns into a deferral quickly.
pub const LOCK_TIMEOUT_MS: u64 = 1000;

const POSTFIX: &str = "/usr/sbin/postfix";
const CONFIG_FILES: [&str; 2] = ["/etc/postfix/main.cf", "/etc/postfix/master.cf"];
const WAIT: Duration = Duration::from_secs(60);

/// The tests share the one system Postfix: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A running, configured Postfix. Dropping it stops Postfix and the LMTP
/// server and restores the original configuration, also when a test fails.
pub struct Postfix {
    pub work: PathBuf,
    pub deliver: PathBuf,
    pub local_spool: PathBuf,
    pub virtual_spool: PathBuf,
    lmtp: Option<Child>,
    saved: Vec<(PathBuf, Vec<u8>)>,
    _tmp: tempfile::TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Postfix {
    pub fn start() -> Postfix {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            crate::is_root(),
            "the Postfix end-to-end tests must run as root (they configure the system Postfix); \
             run `bash scripts/test.sh` as root"
        );
        assert!(
            Path::new(POSTFIX).exists() && Path::new("/usr/sbin/sendmail").exists(),
            "Postfix is not installed: `bash scripts/test.sh` installs it \
             (apt-get install postfix, with the debconf answers in that script)"
        );
        // Someone else's (or an aborted run's) Postfix would use the wrong config.
        if run(Command::new(POSTFIX).arg("status"), WAIT)
            .status
            .success()
        {
            run_ok(POSTFIX, &["stop"]);
        }
        let saved = CONFIG_FILES
            .iter()
            .map(|p| {
                (
                    PathBuf::from(p),
                    std::fs::read(p).expect("read Postfix config"),
                )
            })
            .collect();

        let tmp = tempfile::Builder::new()
            .prefix("e2e-postfix-")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let work = tmp.path().to_path_buf();
        set_mode(&work, 0o755);
        let pf = Postfix {
            deliver: work.join("bin/deliver"),
            local_spool: work.join("spool-local"),
            virtual_spool: work.join("spool-virtual"),
            work,
            lmtp: None,
            saved,
            _tmp: tmp,
            _serial: serial,
        };
        pf.prepare_files();
        pf.configure();
        let _ = std::fs::remove_file(LOG);
        run_ok(POSTFIX, &["check"]);
        run_ok(POSTFIX, &["start"]);
        pf
    }

    fn prepare_files(&self) {
        mkdir_mode(&self.work.join("bin"), 0o755);
        std::fs::copy(crate::bin("deliver"), &self.deliver).expect("copy deliver");
        set_mode(&self.deliver, 0o755);

        mkdir_mode(&self.local_spool, 0o755);
        for user in LOCAL_USERS {
            let (uid, gid) = ensure_user(user, true);
            let dir = self.local_spool.join(user);
            mkdir_mode(&dir, 0o700);
            chown_tree(&dir, uid, gid);
        }

        let (uid, gid) = ensure_user(PIPE_USER, false);
        let store = self.store(&self.virtual_spool);
        for user in VIRTUAL_USERS {
            store
                .create_mailbox(&UserName::new(user).unwrap(), &MailboxName::inbox())
                .expect("create INBOX");
        }
        store
            .create_mailbox(
                &UserName::new("bob").unwrap(),
                &MailboxName::new("work").unwrap(),
            )
            .expect("create bob/work");
        chown_tree(&self.virtual_spool, uid, gid);

        // Read by deliver as alice, bob and mailtest.
        let conf = self.work.join("deliver.conf");
        std::fs::write(&conf, format!("lock_timeout_ms = {LOCK_TIMEOUT_MS}\n")).unwrap();
        set_mode(&conf, 0o644);
    }

    fn configure(&self) {
        let conf = self.work.join("deliver.conf");
        let bin = self.deliver.display();
        let transport = self.work.join("transport");
        std::fs::write(
            &transport,
            format!(
                "pipe.test {PIPE_SERVICE}:\nlmtp.test {LMTP_SERVICE}:unix:{}\n",
                self.lmtp_socket().display()
            ),
        )
        .unwrap();
        run_ok("postmap", &[&transport]);
        let settings = [
            // local(8) runs this with /bin/sh, as the recipient, with SENDER
            // and RECIPIENT in the environment and a `From ` line on stdin.
            format!(
                "mailbox_command = MAILSTORE_CONFIG={} {bin} --spool {} --autocreate \
                 -f \"$SENDER\" -a \"$RECIPIENT\"",
                conf.display(),
                self.local_spool.display()
            ),
            format!("transport_maps = hash:{}", transport.display()),
            format!("{PIPE_SERVICE}_destination_recipient_limit = 1"),
            format!("maillog_file = {LOG}"),
            "queue_run_delay = 10s".into(),
            "minimal_backoff_time = 10s".into(),
            "maximal_backoff_time = 20s".into(),
        ];
        let mut args = vec!["-e".to_string()];
        args.extend(settings);
        run_ok("postconf", &args);

        // pipe(8) passes no useful environment, so the config goes in argv.
        let service = format!(
            "{PIPE_SERVICE} unix  -       n       n       -       -       pipe\n  \
             flags=DRhu user={PIPE_USER} argv=/usr/bin/env MAILSTORE_CONFIG={} {bin} \
             --spool {} --sendmail /usr/sbin/sendmail -f ${{sender}} -a ${{recipient}} -d ${{user}}\n",
            conf.display(),
            self.virtual_spool.display()
        );
        let lmtp = format!("{LMTP_SERVICE} unix  -       -       n       -       -       lmtp\n");
        let mut master = std::fs::read_to_string(CONFIG_FILES[1]).unwrap();
        master.push_str(&service);
        master.push_str(&lmtp);
        std::fs::write(CONFIG_FILES[1], master).unwrap();
    }

    pub fn lmtp_socket(&self) -> PathBuf {
        self.work.join("lmtp/sock")
    }

    /// Starts `deliver --lmtp --listen unix:...` as the pipe user on the
    /// virtual spool.
    pub fn start_lmtp(&mut self) {
        let (uid, gid) = ensure_user(PIPE_USER, false);
        let socket = self.lmtp_socket();
        let dir = socket.parent().unwrap();
        mkdir_mode(dir, 0o755);
        chown_tree(dir, uid, gid);
        let log = std::fs::File::create(self.work.join("lmtp.log")).unwrap();
        use std::os::unix::process::CommandExt;
        let child = Command::new(&self.deliver)
            .args(["--lmtp", "--listen"])
            .arg(format!("unix:{}", socket.display()))
            .arg("--spool")
            .arg(&self.virtual_spool)
            // Sieve redirects and vacation replies (tests/postfix_sieve.rs).
            .args(["--sendmail", "/usr/sbin/sendmail"])
            .env("MAILSTORE_CONFIG", self.work.join("deliver.conf"))
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn deliver --lmtp");
        self.lmtp = Some(child);
        wait_for(
            "the LMTP socket",
            Duration::from_secs(20),
            || socket.exists().then_some(()),
            || self.lmtp_log(),
        );
        // lmtp(8) runs as postfix and needs write permission to connect.
        set_mode(&socket, 0o666);
    }

    pub fn lmtp_log(&self) -> String {
        std::fs::read_to_string(self.work.join("lmtp.log")).unwrap_or_default()
    }

    pub fn store(&self, spool: &Path) -> Store {
        Store::open(spool, Options::default()).expect("open store")
    }

    /// Submits `msg` with Postfix's sendmail(1).
    pub fn sendmail(&self, from: &str, to: &[&str], msg: &crate::TestMessage) {
        let out = run_with_input(
            Command::new("/usr/sbin/sendmail")
                .args(["-i", "-f", from, "--"])
                .args(to),
            &msg.bytes,
            WAIT,
        );
        assert!(out.status.success(), "sendmail failed: {out:?}");
    }

    pub fn log(&self) -> String {
        std::fs::read(LOG)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Log tail and queue for failure messages.
    pub fn context(&self) -> String {
        let log = self.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let queue = run(Command::new("postqueue").arg("-p"), WAIT).stdout;
        format!(
            "--- {LOG} (last 40 lines, newest first):\n{}\n--- postqueue -p:\n{queue}\n--- lmtp server:\n{}",
            tail.join("\n"),
            self.lmtp_log()
        )
    }

    /// The queue ID cleanup(8) gave the message, once it was picked up.
    pub fn queue_id(&self, msg: &crate::TestMessage) -> String {
        let needle = format!("message-id=<{}>", msg.message_id);
        wait_for(
            &format!("queue ID of {}", msg.message_id),
            WAIT,
            || {
                self.log().lines().find(|l| l.contains(&needle)).map(|l| {
                    // "... postfix/cleanup[12]: 4Abc123: message-id=<...>"
                    let after = &l[l.find("]: ").expect("log format") + 3..];
                    after[..after.find(':').expect("queue id")].to_string()
                })
            },
            || self.context(),
        )
    }

    /// Waits for a delivery attempt of `msg` to `rcpt` that ended with one
    /// of `statuses` (`sent`, `deferred`, `bounced`) and returns its log line.
    pub fn wait_status(&self, msg: &crate::TestMessage, rcpt: &str, statuses: &[&str]) -> String {
        let qid = self.queue_id(msg);
        let to = format!("{qid}: to=<{}>", rcpt.to_ascii_lowercase());
        wait_for(
            &format!("status {statuses:?} for {rcpt} (queue ID {qid})"),
            WAIT,
            || {
                self.log()
                    .lines()
                    .filter(|l| l.to_ascii_lowercase().contains(&to.to_ascii_lowercase()))
                    .find(|l| statuses.iter().any(|s| l.contains(&format!("status={s}"))))
                    .map(str::to_string)
            },
            || self.context(),
        )
    }

    /// Every stored copy of the message carrying `token` in `user`'s `mailbox`.
    pub fn stored(&self, spool: &Path, user: &str, mailbox: &str, token: &str) -> Vec<Vec<u8>> {
        let store = self.store(spool);
        let user = UserName::new(user).unwrap();
        let name = MailboxName::new(mailbox).unwrap();
        let mut mbox = match store.open_mailbox(&user, &name) {
            Ok(m) => m,
            Err(storage::Error::NoSuchMailbox(_)) | Err(storage::Error::NoSuchUser(_)) => {
                return Vec::new();
            }
            Err(e) => panic!("open {user}/{name}: {e}"),
        };
        let snap = mbox.snapshot().expect("snapshot");
        snap.records
            .iter()
            .filter(|r| !r.is_expunged())
            .map(|r| mbox.read_message(r.uid).expect("read message"))
            .filter(|m| contains(m, token.as_bytes()))
            .collect()
    }

    /// Waits until exactly one copy is stored and returns it.
    pub fn wait_stored(&self, spool: &Path, user: &str, mailbox: &str, token: &str) -> Vec<u8> {
        let mut copies = wait_for(
            &format!("{token} in {user}/{mailbox}"),
            WAIT,
            || {
                let c = self.stored(spool, user, mailbox, token);
                (!c.is_empty()).then_some(c)
            },
            || self.context(),
        );
        assert_eq!(
            copies.len(),
            1,
            "{token} stored more than once in {user}/{mailbox}"
        );
        copies.pop().unwrap()
    }
}

impl Drop for Postfix {
    fn drop(&mut self) {
        if let Some(mut child) = self.lmtp.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = run(Command::new(POSTFIX).arg("stop"), WAIT);
        for (path, bytes) in &self.saved {
            let _ = std::fs::write(path, bytes);
        }
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// How often `needle` occurs in `hay`.
pub fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}
