//! The race harness, run as the real binary with real child processes:
//! the legacy mtime reader must miss mail after its final NOOP when the
//! writer pauses between record and header; the generation reader never.

use std::process::Command;

use serde_json::Value;

fn race(strategy: &str, pause_ms: u64, extra: &[&str]) -> Value {
    let spool = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_imapd-check"))
        .arg("race")
        .arg("--spool")
        .arg(spool.path().join("spool"))
        .args(["--writers", "2", "--readers", "2", "--messages", "40"])
        .args(["--strategy", strategy, "--json", "--timeout-secs", "120"])
        .arg(format!("--writer-pause-ms={pause_ms}"))
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "harness failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("a JSON line");
    let v: Value = serde_json::from_str(last).unwrap();
    assert_eq!(v["strategy"], strategy);
    assert_eq!(v["deliveries"], 40, "{v}");
    assert_eq!(v["readers"], 2);
    assert!(v["checks"].as_u64().unwrap() >= 4, "{v}");
    v
}

fn assert_no_miss(v: &Value) {
    assert_eq!(v["missed_after_final_noop"], 0, "{v}");
    assert_eq!(v["reader_final_counts"], serde_json::json!([40, 40]), "{v}");
    // Every reader noticed every delivery, so every one has a lag.
    assert_eq!(v["lag_samples"], 80, "{v}");
}

#[test]
fn generation_reader_misses_nothing_without_pause() {
    assert_no_miss(&race("generation", 0, &[]));
}

#[test]
fn generation_reader_misses_nothing_with_the_pause() {
    // Same pause and alignment that make the mtime reader miss.
    let v = race("generation", 100, &["--align-final"]);
    assert_no_miss(&v);
    assert_eq!(v["writer_pause_ms"], 100);
}

#[test]
fn mtime_reader_misses_mail_after_its_final_noop() {
    // The miss needs the last header write in the same wall-clock second
    // as the record write the reader already saw; --align-final makes
    // that the rule, a loaded machine can still break it, so up to three
    // attempts. Every attempt must still deliver everything.
    let mut runs = Vec::new();
    for _ in 0..3 {
        let v = race("mtime", 100, &["--align-final"]);
        let missed = v["missed_after_final_noop"].as_u64().unwrap();
        runs.push(v);
        if missed > 0 {
            return;
        }
    }
    panic!("the legacy mtime reader never missed mail in 3 runs: {runs:?}");
}
