//! `sieve-check` through the real binary: errors with line:column and exit
//! codes, the dry run (text and `--json`), and a user's scripts in the
//! store (docs/FORMAT.md §9): put (validated, atomic), activate, list, show.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_sieve-check");

fn run(args: &[&str], env_spool: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .env("MAILSTORE_CONFIG", env_spool.join("none.conf"))
        .env_remove("MAILSTORE_SPOOL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A syntax error is exit 1 with FILE:LINE:COLUMN, as sievec reports it.
#[test]
fn check_reports_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("none.conf"), "").unwrap();
    let bad = t.path().join("bad.sieve");
    std::fs::write(
        &bad,
        "require \"fileinto\";\nif true {\n  fileinto \"a\"\n}\n",
    )
    .unwrap();
    let o = run(&["check", bad.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with(&format!("{}:4:1: error: ", bad.display())),
        "{}",
        text(&o.stderr)
    );
    let o = run(&["--json", "check", bad.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(4), Some(1))
    );
    let unknown = t.path().join("unknown.sieve");
    std::fs::write(&unknown, "require \"x-nope\";").unwrap();
    let o = run(&["check", unknown.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains(":1:9: error: unsupported extension"),
        "{}",
        text(&o.stderr)
    );
    let good = t.path().join("good.sieve");
    std::fs::write(&good, "keep;").unwrap();
    assert_eq!(
        run(&["check", good.to_str().unwrap()], t.path())
            .status
            .code(),
        Some(0)
    );
    let o = run(
        &["check", t.path().join("missing").to_str().unwrap()],
        t.path(),
    );
    assert_eq!(o.status.code(), Some(2));
}

/// RFC 5804 1.3's warnings (valid but suspicious, as Pigeonhole's sievec
/// warns): `check` prints `FILE:LINE:COL: warning: TEXT` on stderr and
/// exits 0; with --json they are in the object's "warnings"; `put` stores
/// such a script and reports them the same way.
#[test]
fn check_prints_warnings_and_exits_0() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("none.conf"), "").unwrap();
    let f = t.path().join("warn.sieve");
    std::fs::write(
        &f,
        "require [\"imap4flags\", \"vacation\"];\naddflag \"\\\\Bogus\";\nvacation :days 0 \"away\";\n",
    )
    .unwrap();
    let o = run(&["check", f.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].starts_with(&format!(
            "{}:2:1: warning: IMAP flag '\\Bogus'",
            f.display()
        )),
        "{err}"
    );
    assert!(
        lines[1].starts_with(&format!(
            "{}:3:10: warning: specified :days value '0'",
            f.display()
        )),
        "{err}"
    );
    assert!(text(&o.stdout).contains(": ok"));
    let o = run(&["--json", "check", f.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], true);
    let w = v["warnings"].as_array().unwrap();
    assert_eq!(w.len(), 2);
    assert_eq!(
        (w[0]["line"].as_u64(), w[0]["column"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        w[1]["message"]
            .as_str()
            .unwrap()
            .contains("under the minimum")
    );
    // A fileinto name the store refuses is a warning too.
    let odd = t.path().join("odd.sieve");
    std::fs::write(&odd, "require \"fileinto\";\nfileinto \"a//b\";\n").unwrap();
    let o = run(&["check", odd.to_str().unwrap()], t.path());
    assert_eq!(o.status.code(), Some(0));
    assert!(
        text(&o.stderr)
            .contains(":2:10: warning: fileinto: mailbox name 'a//b' cannot be used here"),
        "{}",
        text(&o.stderr)
    );
    // A clean script: no warning lines, an empty list.
    let good = t.path().join("good.sieve");
    std::fs::write(&good, "keep;").unwrap();
    let o = run(&["--json", "check", good.to_str().unwrap()], t.path());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([]));
    let o = run(&["check", good.to_str().unwrap()], t.path());
    assert!(o.stderr.is_empty());
    // put: stored, warnings reported.
    let spool = t.path().join("spool");
    std::fs::create_dir_all(spool.join("alice")).unwrap();
    let o = run(
        &[
            "--json",
            "put",
            "--spool",
            spool.to_str().unwrap(),
            "-d",
            "alice",
            "w",
            f.to_str().unwrap(),
        ],
        t.path(),
    );
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["stored"], true);
    assert_eq!(v["warnings"].as_array().unwrap().len(), 2);
}

/// The dry run prints the actions (and JSON with --json), like sieve-test.
#[test]
fn dry_run() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("none.conf"), "").unwrap();
    let s = t.path().join("s.sieve");
    std::fs::write(&s, "require [\"fileinto\", \"envelope\", \"copy\"];\nif envelope :is \"from\" \"a@example.org\" { fileinto \"Work\"; }\nredirect :copy \"x@example.net\";").unwrap();
    let m = t.path().join("m.eml");
    std::fs::write(&m, "Subject: hi\n\nbody\n").unwrap();
    let o = run(
        &[
            "test",
            s.to_str().unwrap(),
            m.to_str().unwrap(),
            "-f",
            "a@example.org",
            "-a",
            "b@example.com",
        ],
        t.path(),
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        "fileinto Work\nredirect x@example.net (copy)\n"
    );
    let o = run(
        &[
            "--json",
            "test",
            s.to_str().unwrap(),
            m.to_str().unwrap(),
            "-f",
            "other@example.org",
        ],
        t.path(),
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["actions"][0]["action"], "redirect");
    assert_eq!(v["actions"][1]["action"], "keep");
    assert_eq!(v["implicit_keep"], true);
    // include from the script's directory; --mailbox for mailboxexists.
    std::fs::write(
        t.path().join("inc.sieve"),
        "require \"fileinto\"; fileinto \"Included\";",
    )
    .unwrap();
    let main = t.path().join("main.sieve");
    std::fs::write(&main, "require [\"include\", \"mailbox\", \"fileinto\"]; include \"inc\"; if mailboxexists \"Archive\" { fileinto \"Archive\"; }").unwrap();
    let o = run(
        &[
            "test",
            main.to_str().unwrap(),
            m.to_str().unwrap(),
            "--mailbox",
            "Archive",
        ],
        t.path(),
    );
    assert_eq!(
        text(&o.stdout),
        "fileinto Included\nfileinto Archive\n",
        "{}",
        text(&o.stderr)
    );
}

/// put checks the script first and writes it and `active` atomically;
/// list marks the active script; activate --none turns Sieve off.
#[test]
fn store_scripts() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("none.conf"), "").unwrap();
    let spool = t.path().join("spool");
    std::fs::create_dir_all(spool.join("bob")).unwrap();
    let sp = spool.to_str().unwrap();
    // `sieve-check SUBCOMMAND --spool SPOOL -d bob ARGS...`
    let bob = |cmd: &str, args: &[&str]| {
        let mut all = vec![cmd, "--spool", sp, "-d", "bob"];
        all.extend_from_slice(args);
        run(&all, t.path())
    };
    let good = t.path().join("g.sieve");
    std::fs::write(&good, "require \"fileinto\"; fileinto \"Lists\";\n").unwrap();
    let bad = t.path().join("b.sieve");
    std::fs::write(&bad, "fileinto \"x\";").unwrap();
    let o = bob("put", &["main", bad.to_str().unwrap(), "--activate"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        !spool.join("bob/.sieve/main.sieve").exists(),
        "a bad script is not stored"
    );
    let o = bob("put", &["main", good.to_str().unwrap(), "--activate"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(spool.join("bob/.sieve/active")).unwrap(),
        "main\n"
    );
    let o = bob("put", &["other", good.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    let o = bob("list", &[]);
    assert_eq!(text(&o.stdout), "main ACTIVE\nother\n");
    let o = bob("show", &["other"]);
    assert_eq!(
        text(&o.stdout),
        "require \"fileinto\"; fileinto \"Lists\";\n"
    );
    let o = bob("activate", &["--none"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        std::fs::read_to_string(spool.join("bob/.sieve/active")).unwrap(),
        ""
    );
    let o = bob("activate", &["../x"]);
    assert_eq!(o.status.code(), Some(1));
    let o = run(&["list", "--spool", sp, "-d", "nobody"], t.path());
    assert_eq!(o.status.code(), Some(2));
    // No temporary files left behind.
    let names: Vec<String> = std::fs::read_dir(spool.join("bob/.sieve"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
