//! idx-inspect: the header keys issue 2 asks for, read-only behaviour,
//! records with a bad row, stat, and watch seeing each generation change.

mod common;

use common::*;
use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use storage::MailboxName;
use storage::mailbox::AppendOptions;

#[test]
fn header_json_has_the_required_keys_with_right_values() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let s = store(&spool);
    let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let h = m.header().unwrap();
    let sp = spool.to_str().unwrap();
    let (c, v) = inspect_json(&["header", "--spool", sp, "-d", "alice", "-m", "INBOX"]);
    assert_eq!(c, 0);
    assert_eq!(v["generation"], h.generation);
    assert_eq!(v["num_records"], h.num_records);
    assert_eq!(v["exists"], 5);
    assert_eq!(v["last_uid"], 5);
    assert_eq!(v["uidvalidity"], h.uidvalidity);
    assert_eq!(v["highestmodseq"], h.highestmodseq);
    // 1 create, 5 appends, 1 flag change.
    assert_eq!(v["generation"], 7);
    assert_eq!(v["current_slot"], 1);
    assert_eq!(v["slots"][0]["generation"], 6);
    // The directory form gives the same answer.
    let (_, v2) = inspect_json(&["header", dir.to_str().unwrap()]);
    assert_eq!(v2["generation"], v["generation"]);
    // Another append moves generation, num_records, exists, last_uid, modseq.
    m.append(&b"Subject: six\r\n\r\n6\r\n"[..], AppendOptions::default())
        .unwrap();
    let (_, v) = inspect_json(&["header", "--spool", sp, "-d", "alice"]);
    assert_eq!(
        (
            &v["generation"],
            &v["num_records"],
            &v["exists"],
            &v["last_uid"],
            &v["highestmodseq"]
        ),
        (
            &serde_json::json!(8),
            &serde_json::json!(6),
            &serde_json::json!(6),
            &serde_json::json!(6),
            &serde_json::json!(h.highestmodseq + 1)
        )
    );
    // A small append commits with one flush: the header says so.
    assert_eq!(v["flags"], serde_json::json!(["unordered"]));
}

/// Every file of the mailbox with its bytes and mtime.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, i64, i64)> {
    let mut v = Vec::new();
    for e in walk(dir) {
        let md = std::fs::symlink_metadata(&e).unwrap();
        let bytes = if md.is_file() {
            std::fs::read(&e).unwrap()
        } else {
            Vec::new()
        };
        v.push((e.display().to_string(), bytes, md.mtime(), md.mtime_nsec()));
    }
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn inspect_never_changes_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, dir) = sample(tmp.path());
    // Leave debris too: inspect must report it, not clean it.
    std::fs::write(dir.join("9."), b"x").unwrap();
    std::fs::write(dir.join(".stage").join("1.2.3"), b"x").unwrap();
    let before = snapshot(&dir);
    let d = dir.to_str().unwrap();
    for args in [
        vec!["header", d],
        vec!["records", d, "--expunged"],
        vec!["verify", d],
        vec!["stat", d],
        vec!["watch", d, "--count", "0"],
        vec!["header", d, "--json"],
        vec!["verify", d, "--json"],
    ] {
        let o = run(INSPECT, &args);
        assert_eq!(
            code(&o),
            0,
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    assert_eq!(snapshot(&dir), before);
    // On a corrupt index too.
    // Flip a bit of slot 1's generation field.
    patch(&index_path(&dir), 4096 + 24, |b| b[0] ^= 1);
    let before = snapshot(&dir);
    assert_eq!(code(&run(INSPECT, &["verify", d])), 1);
    assert_eq!(code(&run(INSPECT, &["records", d])), 0);
    assert_eq!(snapshot(&dir), before);
}

#[test]
fn records_shows_bad_rows_instead_of_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, dir) = sample(tmp.path());
    let rec = storage::format::Header::record_offset(1);
    patch(&index_path(&dir), rec + 8, |b| b[0] ^= 1);
    let (c, v) = inspect_json(&["records", dir.to_str().unwrap()]);
    assert_eq!(c, 0);
    let rows = v["records"].as_array().unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[1]["crc_ok"], false);
    assert_eq!(rows[1]["error_offset"], rec + 124);
    assert_eq!(rows[2]["uid"], 3);
    assert_eq!(rows[2]["flags"], serde_json::json!(["\\Answered"]));
    assert_eq!(rows[2]["keywords"], serde_json::json!(["Later"]));
    let (_, v) = inspect_json(&["records", dir.to_str().unwrap(), "--uid", "4:*"]);
    let uids: Vec<_> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["uid"].clone())
        .collect();
    assert_eq!(
        uids,
        vec![
            serde_json::Value::Null,
            serde_json::json!(4),
            serde_json::json!(5)
        ]
    );
}

#[test]
fn stat_counts_expunged_not_repacked() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    let s = store(&spool);
    let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    m.expunge(None, true).unwrap(); // UID 4 has \Deleted
    let (c, v) = inspect_json(&["stat", dir.to_str().unwrap()]);
    assert_eq!(c, 0);
    assert_eq!(v["live"], 4);
    assert_eq!(v["expunged_not_repacked"], 1);
    assert_eq!(v["message_files"], 5);
    assert_eq!(v["oldest_internal_date"], "2023-11-14T22:13:21Z");
    assert!(v["oldest_age_seconds"].as_i64().unwrap() > 0);
}

#[test]
fn watch_prints_each_generation_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, dir) = sample(tmp.path());
    // `timeout` bounds the child: if watch never prints, its stdout closes
    // and the reads below fail instead of hanging.
    let mut child = Command::new("timeout")
        .args([
            "30",
            INSPECT,
            "watch",
            dir.to_str().unwrap(),
            "--count",
            "3",
            "--json",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["initial"], true);
    assert_eq!(first["generation"], 7);
    let s = store(&spool);
    let mut m = s.open_mailbox(&user(), &MailboxName::inbox()).unwrap();
    let mut seen = Vec::new();
    for i in 0..3 {
        m.append(
            &format!("Subject: w{i}\r\n\r\n.\r\n").into_bytes()[..],
            AppendOptions::default(),
        )
        .unwrap();
        // Wait for watch to print this change before making the next, so
        // each change is its own generation step even with slow polling.
        let v: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        seen.push(v["generation"].as_u64().unwrap());
    }
    assert_eq!(seen, vec![8, 9, 10]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            assert!(st.success());
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("watch did not exit after --count changes");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
