//! Helpers shared by the integration tests: a temporary spool with its
//! own config file, running the real `deliver` binary, and a fingerprint
//! of a mailbox to prove "unchanged".

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use storage::{MailboxName, Options, Store, UserName};

pub const BIN: &str = env!("CARGO_BIN_EXE_deliver");

pub struct Spool {
    pub tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
}

impl Spool {
    pub fn new() -> Spool {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("spool");
        let config = tmp.path().join("mailstore.conf");
        std::fs::write(&config, "").unwrap();
        Spool { tmp, root, config }
    }

    /// A spool where `users` already have an INBOX.
    pub fn with_users(users: &[&str]) -> Spool {
        let s = Spool::new();
        for u in users {
            s.create(u, "INBOX");
        }
        s
    }

    pub fn set_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn store(&self) -> Store {
        Store::open(&self.root, Options::default()).unwrap()
    }

    pub fn create(&self, user: &str, mailbox: &str) {
        self.store()
            .create_mailbox(
                &UserName::new(user).unwrap(),
                &MailboxName::new(mailbox).unwrap(),
            )
            .unwrap();
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--spool")
            .arg(&self.root)
            .env("MAILSTORE_CONFIG", &self.config)
            .env_remove("MAILSTORE_SPOOL")
            .env_remove("RUST_LOG")
            .env_remove("MAILSTORE_TEST_FAULT");
        c
    }

    /// Runs `deliver ARGS < input`.
    pub fn deliver(&self, args: &[&str], input: &[u8]) -> Output {
        self.deliver_env(args, input, &[])
    }

    /// Runs `deliver ARGS < input`, which must exit 0 (its stderr in the
    /// failure message).
    pub fn deliver_ok(&self, args: &[&str], input: &[u8]) -> Output {
        let o = self.deliver(args, input);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        o
    }

    pub fn deliver_env(&self, args: &[&str], input: &[u8], env: &[(&str, &str)]) -> Output {
        let mut c = self.command();
        c.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        // The child may stop reading early (size limit); ignore EPIPE.
        let w = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        w.join().unwrap();
        out
    }

    pub fn mailbox(&self, user: &str, mailbox: &str) -> storage::Mailbox {
        self.store()
            .open_mailbox(
                &UserName::new(user).unwrap(),
                &MailboxName::new(mailbox).unwrap(),
            )
            .unwrap()
    }

    pub fn messages(&self, user: &str, mailbox: &str) -> Vec<Vec<u8>> {
        let mut m = self.mailbox(user, mailbox);
        let snap = m.snapshot().unwrap();
        snap.records
            .iter()
            .filter(|r| !r.is_expunged())
            .map(|r| m.read_message(r.uid).unwrap())
            .collect()
    }

    pub fn mailbox_dir(&self, user: &str, mailbox: &str) -> PathBuf {
        self.store().mailbox_path(
            &UserName::new(user).unwrap(),
            &MailboxName::new(mailbox).unwrap(),
        )
    }

    /// Generation, message count and directory listing (with the staging
    /// area's contents): equal fingerprints mean an unchanged mailbox.
    pub fn fingerprint(&self, user: &str, mailbox: &str) -> Fingerprint {
        let mut m = self
            .store()
            .open_mailbox(
                &UserName::new(user).unwrap(),
                &MailboxName::new(mailbox).unwrap(),
            )
            .unwrap();
        let h = m.header().unwrap();
        let dir = self.mailbox_dir(user, mailbox);
        Fingerprint {
            generation: h.generation,
            exists: h.exists,
            files: list(&dir),
            stage: list(&dir.join(".stage")),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub struct Fingerprint {
    pub generation: u64,
    pub exists: u32,
    pub files: Vec<String>,
    pub stage: Vec<String>,
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Asserts that `.stage` of the mailbox holds no staged message of its
/// own: every name there (if any) is a second link of a placed message
/// file, never a dropped copy left behind.
pub fn assert_no_stray_staged(s: &Spool, user: &str, mailbox: &str) {
    use std::os::unix::fs::MetadataExt;
    let stage = s.mailbox_dir(user, mailbox).join(".stage");
    for name in list(&stage) {
        let md = std::fs::metadata(stage.join(&name)).unwrap();
        assert!(md.nlink() > 1, "stray staged file {name}");
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts a failed delivery: exit code, exactly one stderr line that
/// starts with `status`.
pub fn assert_failed(o: &Output, code: i32, status: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "exactly one stderr line, got {err:?}");
    assert!(
        lines[0].starts_with(&format!("{status} ")),
        "status line {:?} should start with {status}",
        lines[0]
    );
}
