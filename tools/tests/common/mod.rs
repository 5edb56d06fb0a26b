//! Shared helpers of the tools tests: a real spool made through the
//! storage API, and the real binaries run as child processes.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use storage::format::Flags;
use storage::mailbox::{AppendOptions, FlagOp};
use storage::{MailboxName, Options, Store, UserName};

pub const INSPECT: &str = env!("CARGO_BIN_EXE_idx-inspect");
pub const ADMIN: &str = env!("CARGO_BIN_EXE_idx-admin");

pub fn run(bin: &str, args: &[&str]) -> Output {
    Command::new(bin)
        .args(args)
        .env_remove("MAILSTORE_SPOOL")
        .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
        .output()
        .expect("spawn")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally")
}

pub fn inspect_json(args: &[&str]) -> (i32, serde_json::Value) {
    let mut a = args.to_vec();
    a.push("--json");
    let o = run(INSPECT, &a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): stdout {} stderr {}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (code(&o), v)
}

pub fn user() -> UserName {
    UserName::new("alice").unwrap()
}

pub fn store(root: &Path) -> Store {
    Store::open(root, Options::default()).unwrap()
}

/// Message `i` of the sample mailbox.
pub fn sample_message(i: u32) -> Vec<u8> {
    format!(
        "From: sender{i}@example.org\r\nSubject: message {i}\r\nDate: Tue, 2 Jan 2024 15:0{i}:05 +0000\r\n\r\nbody of message {i}\r\n{}",
        "line\r\n".repeat(i as usize * 3)
    )
    .into_bytes()
}

/// A spool with alice's INBOX holding 5 messages with assorted flags and
/// keywords. Returns (spool, mailbox directory).
pub fn sample(tmp: &Path) -> (PathBuf, PathBuf) {
    let spool = tmp.join("spool");
    let s = store(&spool);
    let inbox = MailboxName::inbox();
    s.create_mailbox(&user(), &inbox).unwrap();
    let mut m = s.open_mailbox(&user(), &inbox).unwrap();
    for i in 1..=5u32 {
        let flags = match i {
            1 => Flags::SEEN,
            2 => Flags::SEEN.union(Flags::FLAGGED),
            4 => Flags::DELETED,
            _ => Flags::empty(),
        };
        let keywords = if i % 2 == 0 {
            vec!["$Work".to_string()]
        } else {
            vec![]
        };
        m.append(
            &sample_message(i)[..],
            AppendOptions {
                flags,
                keywords,
                internal_date: Some(1_700_000_000 + i as i64),
                ..Default::default()
            },
        )
        .unwrap();
    }
    m.store(
        &[3],
        FlagOp::Add,
        Flags::ANSWERED,
        &["Later".to_string()],
        None,
    )
    .unwrap();
    // Settle the appends' staged names (PROTOCOL.md §3), as a mailbox
    // looks after its next settle: the damage the tests do to message
    // files is then real loss, not something `.stage` can undo.
    m.recover().unwrap();
    let dir = s.mailbox_path(&user(), &inbox);
    (spool, dir)
}

/// (uid, bytes, flags, keyword names) of every live message.
pub fn contents(spool: &Path) -> Vec<(u32, Vec<u8>, Flags, Vec<String>)> {
    let s = store(spool);
    let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let snap = m.snapshot().unwrap();
    snap.records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| {
            (
                r.uid,
                m.read_message(r.uid).unwrap(),
                r.flags,
                r.keywords
                    .iter()
                    .map(|k| snap.meta.keywords[k].clone())
                    .collect(),
            )
        })
        .collect()
}

pub fn index_path(dir: &Path) -> PathBuf {
    dir.join(".index")
}

pub fn patch(path: &Path, offset: u64, f: impl FnOnce(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b[offset as usize..]);
    std::fs::write(path, b).unwrap();
}

/// verify's JSON problems as (path, offset, message).
pub fn problems(v: &serde_json::Value) -> Vec<(String, Option<u64>, String)> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["offset"].as_u64(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

pub fn verify(dir: &Path) -> (i32, serde_json::Value) {
    inspect_json(&["verify", dir.to_str().unwrap()])
}

pub fn reconstruct(dir: &Path) -> serde_json::Value {
    let o = run(ADMIN, &["reconstruct", "--json", dir.to_str().unwrap()]);
    assert_eq!(
        code(&o),
        0,
        "reconstruct failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Asserts verify is clean (exit 0) and returns its report.
pub fn assert_clean(dir: &Path) -> serde_json::Value {
    let (c, v) = verify(dir);
    assert_eq!(c, 0, "verify not clean: {v:#}");
    v
}

/// (uid, bytes, flags, sorted keyword names, internal date) per message.
pub type Msg = (u32, Vec<u8>, Flags, Vec<String>, i64);

/// UIDVALIDITY, UIDNEXT and every live message of `user`'s `name`.
pub fn mailbox_messages(spool: &Path, user: &str, name: &str) -> (u32, u32, Vec<Msg>) {
    let s = store(spool);
    let mut m = s
        .open_mailbox(
            &UserName::new(user).unwrap(),
            &MailboxName::new(name).unwrap(),
        )
        .unwrap();
    let snap = m.snapshot().unwrap();
    let msgs = snap
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| {
            let mut kw: Vec<String> = r
                .keywords
                .iter()
                .map(|k| snap.meta.keywords[k].clone())
                .collect();
            kw.sort();
            let bytes = m.read_message(r.uid).unwrap();
            (r.uid, bytes, r.flags, kw, r.internal_date)
        })
        .collect();
    (snap.header.uidvalidity, snap.header.last_uid + 1, msgs)
}
