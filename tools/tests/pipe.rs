//! Output into a pipe whose reader has gone (`idx-inspect records | head`):
//! the tools say nothing, do not panic, and end with their own exit status
//! (issue 15). The reader is closed before the tool writes, so every write
//! gets EPIPE.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `bin args` with stdout a pipe nobody reads; returns (exit code,
/// stderr). Fails if the tool takes more than 60 s.
fn run_into_closed_pipe(bin: &str, args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(bin)
        .args(args)
        .env_remove("MAILSTORE_SPOOL")
        .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{bin} {args:?} did not end with its output pipe closed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_output_pipe_is_quiet_for_every_command() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, dir) = sample(tmp.path());
    let d = dir.to_str().unwrap();
    let cases: [(&str, Vec<&str>, i32); 9] = [
        (INSPECT, vec!["records", d], 0),
        (INSPECT, vec!["records", "--json", d], 0),
        (INSPECT, vec!["header", d], 0),
        (INSPECT, vec!["stat", d], 0),
        (INSPECT, vec!["verify", d], 0),
        (INSPECT, vec!["verify", "--json", d], 0),
        // Without --count it would run until killed: it must notice.
        (INSPECT, vec!["watch", d], 0),
        (ADMIN, vec!["recover", d], 0),
        (ADMIN, vec!["repack", "--json", d], 0),
    ];
    for (bin, args, want) in cases {
        let (code, stderr) = run_into_closed_pipe(bin, &args);
        assert_eq!(code, Some(want), "{args:?}: stderr {stderr}");
        assert!(stderr.is_empty(), "{args:?}: said {stderr:?}");
    }
    // Nothing was left half-done by a lost report.
    assert_clean(&dir);
}

/// A verify that finds problems keeps its exit status 1 when its report
/// cannot be written.
#[test]
fn a_closed_pipe_keeps_the_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let (_spool, dir) = sample(tmp.path());
    patch(
        &index_path(&dir),
        storage::Header::record_offset(1) + 8,
        |b| b[0] ^= 1,
    );
    let (code, stderr) = run_into_closed_pipe(INSPECT, &["verify", dir.to_str().unwrap()]);
    assert_eq!(code, Some(1), "stderr {stderr}");
    assert!(stderr.is_empty(), "said {stderr:?}");
}
