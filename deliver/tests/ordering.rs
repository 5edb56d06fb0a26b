//! The write ordering of PROTOCOL.md §3 as the real binary performs it,
//! read from its system calls with strace(1). A kill test cannot see
//! these steps: what they protect against is a power cut, which keeps
//! only what was flushed.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{BIN, Spool};
use storage::format::Header;
use storage::{AppendOptions, Durability, MailboxName, Options, Store, UserName};

/// One traced system call on the index file: `(name, count, offset)`;
/// count and offset are 0 for calls without them.
#[derive(Debug, PartialEq)]
struct IndexCall {
    name: String,
    count: u64,
    offset: u64,
}

/// Runs one-shot `deliver` for `user` under strace, tracing `calls`, and
/// returns strace's lines (with descriptors shown as paths).
fn traced_delivery(s: &Spool, user: &str, calls: &str) -> Vec<String> {
    let trace = s.tmp.path().join("strace.out");
    let out = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args(["-e", &format!("trace={calls}")])
        .arg(BIN)
        .arg("--spool")
        .arg(&s.root)
        .args(["-d", user, "-f", "sender@example.org"])
        .env("MAILSTORE_CONFIG", &s.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin
                .take()
                .unwrap()
                .write_all(b"Subject: growing\n\nthe message that grows the index\n")?;
            c.wait_with_output()
        })
        .expect("strace must be installed (scripts/test.sh installs it)");
    assert!(
        out.status.success(),
        "deliver under strace: {:?} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Runs one-shot `deliver` for `user` under strace and returns its calls
/// on `index` (pwrite64, fdatasync, fsync, sync_file_range), in order.
fn traced_index_calls(s: &Spool, user: &str, index: &Path) -> Vec<IndexCall> {
    let lines = traced_delivery(s, user, "pwrite64,fdatasync,fsync,sync_file_range");
    let tag = format!("<{}>", index.display());
    lines
        .iter()
        .filter_map(|l| {
            // "PID name(FD</path>, ...) = RET"
            let call = l
                .split_once(' ')
                .map_or(l.as_str(), |(_, c)| c.trim_start());
            let (name, rest) = call.split_once('(')?;
            let (fd, args) = rest
                .split_once(',')
                .unwrap_or((rest.split(')').next()?, ""));
            if !fd.ends_with(&tag) {
                return None;
            }
            // pwrite64(fd, "...", COUNT, OFFSET) and sync_file_range(fd,
            // OFFSET, NBYTES, FLAGS): the two numbers before ") =".
            let nums: Vec<u64> = args
                .rsplit_once(')')
                .map_or("", |(a, _)| a)
                .rsplit(", ")
                .take(2)
                .filter_map(|n| n.trim().parse().ok())
                .collect();
            let (count, offset) = match (name, nums.as_slice()) {
                ("pwrite64", [offset, count]) => (*count, *offset),
                _ => (0, 0),
            };
            Some(IndexCall {
                name: name.to_string(),
                count,
                offset,
            })
        })
        .collect()
}

/// PROTOCOL.md §3, "Index growth": an append that grows the index file
/// writes the zeros, fdatasyncs the index, and only then writes its
/// records there. An unordered append (this one: nobody else holds the
/// lock, and the message is small) otherwise only writes the index pages
/// out (sync_file_range) and lets the message's fdatasync flush them, which
/// makes data pages durable but not a new file length.
#[test]
fn index_growth_is_synced_before_records_land_in_it() {
    let s = Spool::with_users(&["grow"]);
    let user = UserName::new("grow").unwrap();
    let inbox = MailboxName::inbox();
    // Fill the file without fsyncs until one more record would not fit.
    let fast = Store::open(
        &s.root,
        Options {
            durability: Durability::Relaxed,
            ..Options::default()
        },
    )
    .unwrap();
    let index = fast.mailbox_path(&user, &inbox).join(".index");
    let len = std::fs::metadata(&index).unwrap().len();
    let mut m = fast.open_mailbox(&user, &inbox).unwrap();
    let mut n = m.header().unwrap().num_records;
    while Header::record_offset(n + 1) <= len {
        m.append(
            &b"Subject: filler\r\n\r\nx\r\n"[..],
            AppendOptions::default(),
        )
        .unwrap();
        n += 1;
    }
    drop(m);

    let calls = traced_index_calls(&s, "grow", &index);
    let pos = |what: &str, f: &dyn Fn(&IndexCall) -> bool| {
        calls
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} on the index in {calls:#?}"))
    };
    let grow = pos("growth write", &|c| c.name == "pwrite64" && c.offset == len);
    let record = pos("record write", &|c| {
        c.name == "pwrite64" && c.offset == Header::record_offset(n) && c.count == 128
    });
    let sync_after_grow = calls[grow..]
        .iter()
        .position(|c| c.name == "fdatasync" || c.name == "fsync")
        .map(|i| grow + i);
    assert!(
        sync_after_grow.is_some_and(|i| i < record),
        "the grown length must be synced before the record is written: {calls:#?}"
    );
    // The path under test: an unordered commit, whose index pages are
    // written out, not fdatasynced, after the header.
    assert!(
        calls[record..].iter().any(|c| c.name == "sync_file_range"),
        "expected an unordered append: {calls:#?}"
    );
    assert!(
        !calls[record..]
            .iter()
            .any(|c| c.name == "fdatasync" || c.name == "fsync"),
        "expected an unordered append: {calls:#?}"
    );
    let mut m = s.store().open_mailbox(&user, &inbox).unwrap();
    assert_eq!(m.header().unwrap().num_records, n + 1);
    assert!(std::fs::metadata(&index).unwrap().len() > len);
}

/// PROTOCOL.md §3, debris: a file left at the next UID's name by a commit
/// that failed is moved into `.quarantine/` (never unlinked) durably
/// (directory fsync) before the new message is linked there, because the
/// new name may not be durable until a later settle, and a power cut must
/// not bring the old file back under a committed UID.
#[test]
fn debris_at_the_next_uid_is_removed_durably_before_the_link() {
    let s = Spool::with_users(&["deb"]);
    let user = UserName::new("deb").unwrap();
    let inbox = MailboxName::inbox();
    let store = s.store();
    let mut m = store.open_mailbox(&user, &inbox).unwrap();
    m.append(&b"Subject: one\r\n\r\nx\r\n"[..], AppendOptions::default())
        .unwrap();
    drop(m);
    let dir = store.mailbox_path(&user, &inbox);
    std::fs::write(
        dir.join("2."),
        b"Subject: debris\r\n\r\nof a failed commit\r\n",
    )
    .unwrap();

    let lines = traced_delivery(
        &s,
        "deb",
        "unlinkat,renameat,renameat2,linkat,fsync,fdatasync",
    );
    let dir_tag = format!("<{}>", dir.display());
    let pos = |what: &str, f: &dyn Fn(&str) -> bool| {
        lines
            .iter()
            .position(|l| f(l))
            .unwrap_or_else(|| panic!("no {what} in {lines:#?}"))
    };
    let unlink = pos("move of the debris into quarantine", &|l| {
        l.contains("renameat") && l.contains("\"2.\"") && l.contains(".quarantine")
    });
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("unlinkat(") && l.contains("\"2.\"")),
        "the debris must not be unlinked: {lines:#?}"
    );
    let link = pos("link of the new message", &|l| {
        l.contains("linkat(")
            && !l.contains("unlinkat(")
            && l.contains("\"2.\"")
            && l.contains(" = 0")
    });
    let fsync = lines[unlink..]
        .iter()
        .position(|l| l.contains("fsync(") && l.contains(&dir_tag))
        .map(|i| unlink + i);
    assert!(
        fsync.is_some_and(|f| f < link),
        "the debris's removal must be durable before the link: {lines:#?}"
    );
    let kept = storage::quarantine::list(&storage::Dir::open_root(&dir).unwrap()).unwrap();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].original, "2.");
    let m = store.open_mailbox(&user, &inbox).unwrap();
    assert_eq!(
        m.read_message(2).unwrap(),
        b"Return-Path: <sender@example.org>\r\nSubject: growing\r\n\r\nthe message that grows the index\r\n"
    );
}
