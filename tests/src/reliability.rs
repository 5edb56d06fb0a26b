//! Helpers for the reliability campaigns (`tests/tests/reliability_*.rs`):
//! a seeded random source, `deliver` children that can be killed, the
//! CRLF conversion `deliver` applies, finding messages by token, the
//! after-crash checks every campaign shares, and a tmpfs mount guard.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use storage::{MailboxName, Options, Store, UserName};

use crate::bin;

/// `RELIABILITY_LONG=1` selects the long form of a campaign.
pub fn is_long() -> bool {
    std::env::var_os("RELIABILITY_LONG").is_some_and(|v| v != "0" && !v.is_empty())
}

/// `short` in CI, `long` with `RELIABILITY_LONG=1`; `RELIABILITY_SCALE=N`
/// overrides both.
pub fn scale(short: u64, long: u64) -> u64 {
    if let Some(n) = std::env::var("RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return n;
    }
    if is_long() { long } else { short }
}

/// A seed from `RELIABILITY_SEED`, else the clock; printed by the caller
/// so a failing run can be repeated.
pub fn seed() -> u64 {
    std::env::var("RELIABILITY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_nanos() as u64
        })
}

/// xorshift64*: small, seedable, good enough to pick kill moments.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What `deliver` stores for `input` without `-f` and without a leading
/// `From ` line: every bare LF becomes CRLF, everything else unchanged.
pub fn crlf(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() + input.len() / 16);
    let mut prev = 0u8;
    for &b in input {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

/// A message that carries `token` in its Message-ID and body. The token
/// is bracketed so that `T-1` never matches inside `T-10`.
pub fn token_message(token: &str, body_lines: usize) -> Vec<u8> {
    let mut m = format!(
        "From: sender@example.org\nTo: rcpt@example.org\nSubject: reliability {token}\n\
         Message-ID: <{token}@reliability.test>\nDate: Sun, 22 Nov 2026 12:00:00 +0000\n\n"
    );
    for i in 0..body_lines {
        m.push_str(&format!("line {i} of [{token}]\n"));
    }
    m.push_str(&format!("[[{token}]]\n"));
    m.into_bytes()
}

/// The token of a message written by [`token_message`], from its bytes.
pub fn token_of(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.rfind("[[")? + 2;
    let end = start + text[start..].find("]]")?;
    Some(text[start..end].to_string())
}

/// A `deliver` command for `user` in `spool` (one-shot, no fsync skipping).
pub fn deliver_cmd(spool: &Path, user: &str) -> Command {
    let mut c = Command::new(bin("deliver"));
    c.arg("--spool").arg(spool).arg("-d").arg(user);
    c.env_remove("MAILSTORE_TEST_FAULT")
        .env_remove("MAILSTORE_SPOOL")
        .env("MAILSTORE_CONFIG", "/dev/null");
    c
}

/// A running child with its input already written (a thread feeds it so
/// a child that does not read cannot block the test).
pub struct Running {
    pub child: Child,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn spawn(cmd: &mut Command, input: Vec<u8>) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut stdin = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        Running {
            child,
            writer: Some(writer),
        }
    }

    pub fn kill(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// Waits at most `limit`; a child still running then is killed and
    /// the test fails (a hang is a bug).
    pub fn finish(mut self, limit: Duration) -> Finished {
        let deadline = std::time::Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if std::time::Instant::now() > deadline {
                self.kill();
                let _ = self.child.wait();
                panic!("child {} hung for {limit:?}", self.child.id());
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        use std::os::unix::process::ExitStatusExt;
        Finished {
            code: status.code(),
            signal: status.signal(),
            stderr,
        }
    }
}

#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stderr: String,
}

/// What one mailbox holds, from the index and the message files.
#[derive(Debug, Default)]
pub struct Contents {
    /// token -> UIDs holding it (live records only).
    pub by_token: BTreeMap<String, Vec<u32>>,
    /// Live records whose file holds no token.
    pub untokened: Vec<u32>,
    pub live: usize,
    /// uid -> stored bytes.
    pub bytes: BTreeMap<u32, Vec<u8>>,
}

/// Reads every live message of `user`/`mailbox` through the storage API
/// and checks the index's own invariants on the way: UIDs strictly
/// ascending, each at most `last_uid`, each live record's file present
/// with the recorded size and CRC.
pub fn read_contents(spool: &Path, user: &str, mailbox: &str) -> Contents {
    let store = Store::open(spool, Options::default()).expect("open store");
    let mut mb = store
        .open_mailbox(
            &UserName::new(user).expect("user"),
            &MailboxName::new(mailbox).expect("mailbox"),
        )
        .expect("open mailbox");
    let snap = mb.snapshot().expect("snapshot");
    let mut out = Contents::default();
    let mut prev = 0;
    for r in &snap.records {
        assert!(r.uid > prev, "UIDs not ascending: {} after {prev}", r.uid);
        assert!(r.uid <= snap.header.last_uid, "UID above last_uid");
        prev = r.uid;
        if r.is_expunged() {
            continue;
        }
        out.live += 1;
        let bytes = mb
            .read_message(r.uid)
            .unwrap_or_else(|e| panic!("UID {} has a record but no readable file: {e}", r.uid));
        assert_eq!(bytes.len() as u64, r.size, "UID {} size", r.uid);
        assert_eq!(crc32fast::hash(&bytes), r.message_crc, "UID {} CRC", r.uid);
        match token_of(&bytes) {
            Some(t) => out.by_token.entry(t).or_default().push(r.uid),
            None => out.untokened.push(r.uid),
        }
        out.bytes.insert(r.uid, bytes);
    }
    assert_eq!(out.live as u32, snap.header.exists, "header exists count");
    out
}

/// `idx-admin recover` then `idx-inspect verify` on a mailbox directory;
/// panics with the output unless both exit 0.
pub fn recover_and_verify(dir: &Path) -> String {
    let rec = crate::run(
        Command::new(bin("idx-admin")).arg("recover").arg(dir),
        Duration::from_secs(120),
    );
    assert_eq!(
        rec.code(),
        Some(0),
        "idx-admin recover {}: {}{}",
        dir.display(),
        rec.stdout,
        rec.stderr
    );
    let ver = crate::run(
        Command::new(bin("idx-inspect")).arg("verify").arg(dir),
        Duration::from_secs(120),
    );
    assert_eq!(
        ver.code(),
        Some(0),
        "idx-inspect verify {} after recovery:\n{}{}",
        dir.display(),
        ver.stdout,
        ver.stderr
    );
    format!("{}{}", rec.stdout.trim(), ver.stdout.trim())
}

/// Staged files that are not a committed message's second name (those
/// have two links and wait for the next settle, PROTOCOL.md §3).
pub fn stage_leftovers(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let stage = dir.join(storage::mailbox::STAGE_DIR);
    match std::fs::read_dir(&stage) {
        Ok(rd) => rd
            .map(|e| e.expect("dir entry").path())
            .filter(|p| std::fs::metadata(p).map(|m| m.nlink() < 2).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Every path below `root` with its type, size and content hash: two equal
/// snapshots mean nothing was written there.
pub fn tree_snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        let desc = if meta.file_type().is_symlink() {
            format!("link->{:?}", std::fs::read_link(p).ok())
        } else if meta.is_dir() {
            "dir".to_string()
        } else {
            let bytes = std::fs::read(p).unwrap_or_default();
            format!("file {} {:08x}", bytes.len(), crc32fast::hash(&bytes))
        };
        out.insert(p.to_path_buf(), desc);
        if meta.is_dir() {
            for e in std::fs::read_dir(p).expect("read_dir").flatten() {
                walk(&e.path(), out);
            }
        }
    }
    walk(root, &mut out);
    out
}

/// A tmpfs mounted on a directory, unmounted on drop. Needs root; the
/// caller must fail (not skip) when [`Tmpfs::mount`] panics.
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir mount point");
        let out = crate::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("tmpfs")
                .arg(dir),
            Duration::from_secs(30),
        );
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed ({}): {}{}\nthis campaign needs root and mount(2); it does not skip",
            dir.display(),
            out.status,
            out.stdout,
            out.stderr
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = crate::run(
            Command::new("umount").arg("-l").arg(&self.dir),
            Duration::from_secs(30),
        );
    }
}

/// Creates `user`'s INBOX (and `extra` mailboxes) through the storage API.
pub fn make_user(spool: &Path, user: &str, extra: &[&str]) -> Store {
    let store = Store::open(spool, Options::default()).expect("open store");
    let u = UserName::new(user).expect("user");
    store
        .ensure_mailbox(&u, &MailboxName::inbox())
        .expect("create INBOX");
    for m in extra {
        store
            .ensure_mailbox(&u, &MailboxName::new(m).expect("name"))
            .expect("create mailbox");
    }
    store
}
