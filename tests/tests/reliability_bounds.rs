//! Crafted index headers with valid CRCs (issue 15, item 3), through the
//! real binaries under a 512 MiB address-space limit: `deliver` exits 75,
//! `idx-inspect verify` exits 2 naming the offending header field's
//! offset, an IMAP SELECT over `imapd-check serve --stdio` gets a NO while
//! the server process lives on, each peaks under 64 MiB of RSS, and the
//! spool is byte for byte as it was (no growth, no writer mark, no file).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use e2e_tests::reliability::{deliver_cmd, make_user, tree_snapshot};
use e2e_tests::{Limited, bin, run_limited};
use storage::format::{HEADER_SIZE, HF_UNORDERED, SLOT_OFFSETS};
use storage::{AppendOptions, Header, MailboxName, UserName};

const USER: &str = "crafted";
const AS_LIMIT: u64 = 512 << 20;
const RSS_LIMIT_KIB: u64 = 64 << 10;
const TIME_LIMIT: Duration = Duration::from_secs(60);

/// A spool whose INBOX holds `n` messages; returns (spool, INBOX dir).
fn fixture(tmp: &Path, n: u32) -> (PathBuf, PathBuf) {
    let spool = tmp.join("spool");
    let store = make_user(&spool, USER, &[]);
    let u = UserName::new(USER).unwrap();
    let mut mb = store.open_mailbox(&u, &MailboxName::inbox()).unwrap();
    for i in 0..n {
        let msg = format!("Subject: m{i}\r\nMessage-ID: <{i}@crafted>\r\n\r\nbody {i}\r\n");
        mb.append(msg.as_bytes(), AppendOptions::default()).unwrap();
    }
    let dir = store.mailbox_path(&u, &MailboxName::inbox());
    (spool, dir)
}

/// Rewrites the current header slot with `f` applied and a valid CRC;
/// returns the slot's offset.
fn craft(dir: &Path, f: impl FnOnce(&mut Header)) -> u64 {
    let path = dir.join(".index");
    let mut b = std::fs::read(&path).unwrap();
    let gen_of = |b: &[u8], s: usize| {
        Header::decode(&b[SLOT_OFFSETS[s] as usize..])
            .ok()
            .map(|h| h.generation)
    };
    let slot = if gen_of(&b, 1) > gen_of(&b, 0) { 1 } else { 0 };
    let off = SLOT_OFFSETS[slot] as usize;
    let mut h = Header::decode(&b[off..off + HEADER_SIZE]).unwrap();
    f(&mut h);
    b[off..off + HEADER_SIZE].copy_from_slice(&h.encode());
    std::fs::write(&path, b).unwrap();
    off as u64
}

fn check_rss(what: &str, out: &Limited) {
    eprintln!(
        "{what}: exit {:?}, peak RSS {} KiB",
        out.status, out.maxrss_kib
    );
    assert!(
        out.maxrss_kib < RSS_LIMIT_KIB,
        "{what}: peak RSS {} KiB, limit {RSS_LIMIT_KIB} KiB",
        out.maxrss_kib
    );
}

/// Counts `n` records (and at least as many UIDs).
fn records(h: &mut Header, n: u32) {
    h.num_records = n;
    h.last_uid = h.last_uid.max(n);
}

fn no_append_range(h: &mut Header) {
    h.append_from = h.num_records;
    h.append_crc = 0;
    h.flags &= !HF_UNORDERED;
}

type Craft = fn(&mut Header);

/// (name, messages in the fixture, offset of the offending field in the
/// slot, the change).
fn cases() -> Vec<(&'static str, u32, u64, Craft)> {
    vec![
        ("num_records 0xFFFFFFF0 (append range kept)", 3, 32, |h| {
            records(h, 0xFFFF_FFF0)
        }),
        ("num_records 0xFFFFFFF0 (no append range)", 3, 32, |h| {
            records(h, 0xFFFF_FFF0);
            no_append_range(h);
        }),
        ("2,000,000 records in an 8 KiB file", 0, 32, |h| {
            records(h, 2_000_000);
            no_append_range(h);
        }),
        ("100,000,000 records, all live", 0, 32, |h| {
            records(h, 100_000_000);
            h.exists = 100_000_000;
            no_append_range(h);
        }),
        ("100,000,000 records appended from record 0", 0, 32, |h| {
            records(h, 100_000_000);
            h.append_crc = 0x1234_5678;
        }),
        ("u32::MAX records, exists and last_uid", 3, 32, |h| {
            records(h, u32::MAX);
            h.exists = u32::MAX;
            no_append_range(h);
        }),
        ("one record more than the file holds", 3, 32, |h| {
            records(h, 449);
            no_append_range(h);
        }),
        ("highestmodseq u64::MAX", 3, 48, |h| {
            h.highestmodseq = u64::MAX
        }),
        ("generation near u64::MAX", 3, 24, |h| {
            h.generation = u64::MAX - 1 + (h.generation & 1)
        }),
        ("total_bytes u64::MAX", 3, 56, |h| h.total_bytes = u64::MAX),
    ]
}

fn limited(cmd: &mut Command, input: &[u8]) -> Limited {
    run_limited(
        cmd.env("MAILSTORE_CONFIG", "/dev/null"),
        input,
        AS_LIMIT,
        TIME_LIMIT,
    )
}

fn deliver(spool: &Path) -> Limited {
    let mut cmd = deliver_cmd(spool, USER);
    cmd.arg("--unsafe-no-fsync");
    limited(&mut cmd, b"From: a@b\nSubject: crafted\n\nbody\n")
}

fn verify(dir: &Path) -> Limited {
    let mut cmd = Command::new(bin("idx-inspect"));
    cmd.args(["verify", "--json"]).arg(dir);
    limited(&mut cmd, b"")
}

fn imap_select(spool: &Path) -> Limited {
    let mut cmd = Command::new(bin("imapd-check"));
    cmd.args(["serve", "--stdio", "-d", USER, "--spool"])
        .arg(spool);
    limited(&mut cmd, b"a SELECT INBOX\r\nb NOOP\r\nc LOGOUT\r\n")
}

#[test]
fn crafted_headers_are_refused_by_every_binary_in_bounded_memory_without_writing() {
    for (name, messages, field, f) in cases() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = fixture(tmp.path(), messages);
        let slot = craft(&dir, f);
        let before = tree_snapshot(&spool);

        let out = deliver(&spool);
        assert_eq!(out.code(), Some(75), "{name}: deliver {out:?}");
        assert!(out.stderr.contains("corrupt"), "{name}: {out:?}");
        check_rss(&format!("{name}: deliver"), &out);
        assert!(tree_snapshot(&spool) == before, "{name}: deliver wrote");

        let out = verify(&dir);
        assert_eq!(out.code(), Some(2), "{name}: verify {out:?}");
        check_rss(&format!("{name}: verify"), &out);
        let v: serde_json::Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("{name}: verify output not JSON ({e}): {out:?}"));
        assert_eq!(v["unusable"], true, "{name}: {v:#}");
        let named = v["problems"].as_array().unwrap().iter().any(|p| {
            p["offset"].as_u64() == Some(slot + field)
                && p["path"].as_str().unwrap().ends_with(".index")
        });
        assert!(
            named,
            "{name}: no problem at offset {}: {v:#}",
            slot + field
        );
        assert!(tree_snapshot(&spool) == before, "{name}: verify wrote");

        let out = imap_select(&spool);
        check_rss(&format!("{name}: imapd-check"), &out);
        assert_eq!(out.code(), Some(0), "{name}: IMAP server died: {out:?}");
        let reply = |tag: &str| {
            out.stdout
                .lines()
                .find(|l| l.starts_with(&format!("{tag} ")))
                .unwrap_or_else(|| panic!("{name}: no reply to {tag}: {out:?}"))
                .to_string()
        };
        assert!(reply("a").starts_with("a NO "), "{name}: {out:?}");
        // The server process serves on after the refusal.
        assert!(reply("b").starts_with("b OK"), "{name}: {out:?}");
        assert!(tree_snapshot(&spool) == before, "{name}: imapd-check wrote");
    }
}

/// A header whose count is inside the file (a sparse 384 MB of zeros):
/// nothing refuses it up front, so the readers must stay bounded while
/// they read: verify streams the records and lists at most 1000 bad ones,
/// SELECT fails at the first bad record.
#[test]
fn a_count_inside_a_huge_sparse_file_is_read_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = fixture(tmp.path(), 0);
    let n = 3_000_000u32;
    craft(&dir, |h| {
        h.num_records = n;
        h.last_uid = n;
        no_append_range(h);
    });
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(".index"))
        .unwrap();
    f.set_len(Header::record_offset(n)).unwrap();
    drop(f);
    // Not `tree_snapshot`: reading the 384 MB into this process would
    // raise the peak RSS its children report.
    let before = digest(&dir.join(".index"));

    let out = verify(&dir);
    assert_eq!(out.code(), Some(1), "verify {}", out.stderr);
    check_rss("verify", &out);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["records_checked"], n);
    let problems = v["problems"].as_array().unwrap();
    assert!(
        problems.len() <= 1002 && problems.len() > 1000,
        "{} problems",
        problems.len()
    );
    assert!(
        problems
            .iter()
            .any(|p| p["message"].as_str().unwrap().contains("more problems")),
        "no summary line"
    );

    let out = imap_select(&spool);
    check_rss("imapd-check", &out);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("a NO ")),
        "{out:?}"
    );
    assert!(digest(&dir.join(".index")) == before, "the index changed");
}

/// Length and CRC32 of a file, read in 64 KiB pieces.
fn digest(path: &Path) -> (u64, u32) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return (len, h.finalize());
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}
