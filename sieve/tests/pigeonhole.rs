//! Differential tests against Pigeonhole (Dovecot's Sieve, `sieve-test`
//! from Debian's dovecot-sieve): every script of `tests/data/sieve/scripts`
//! runs on every message of `tests/data/sieve/messages`, with each envelope
//! of [`ENVELOPES`], through both, and
//! the normalised action lists must be identical, except the pairs listed
//! with a reason in `tests/data/sieve/DIFFERENCES`.
//!
//! Normalised: one line per stored copy (`store MAILBOX [flags]`, flags
//! lowercased and sorted), `redirect ADDRESS`, `reject`, `vacation HANDLE`;
//! `error` when the run failed (then the implicit keep alone), and
//! `compile-error line N` when the script does not compile. `discard` is
//! not an outcome of its own: it only cancels the implicit keep.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sieve::{Action, Envelope, NoHost, RunOptions, Script};

/// The envelopes every pair runs with: (sender, recipient).
const ENVELOPES: &[(&str, &str)] = &[
    ("sender@example.org", "bob+box@example.com"),
    ("owner-list@lists.example.net", "carol@example.net"),
];

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sieve")
}

fn sorted_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    v.sort();
    v
}

fn store_line(mailbox: &str, flags: &[String]) -> String {
    let mut f: Vec<String> = flags.iter().map(|x| x.to_ascii_lowercase()).collect();
    f.sort();
    f.dedup();
    format!("store {mailbox} [{}]", f.join(" "))
}

fn ours(script: &str, msg: &[u8], from: &str, to: &str) -> Vec<String> {
    let s = match Script::compile(script) {
        Ok(s) => s,
        Err(e) => return vec![format!("compile-error line {}", e.pos.line)],
    };
    let env = Envelope {
        from: from.into(),
        to: to.into(),
    };
    let opts = RunOptions {
        now: 1_700_000_000,
        ..RunOptions::default()
    };
    let o = s.evaluate(msg, &env, &opts, &NoHost);
    let mut out: Vec<String> = o
        .actions
        .iter()
        .map(|a| match a {
            Action::Keep { flags } => store_line("INBOX", flags),
            Action::FileInto { mailbox, flags, .. } => store_line(mailbox, flags),
            Action::Redirect { address, .. } => format!("redirect {address}"),
            Action::Reject { .. } => "reject".into(),
            Action::Vacation { handle, .. } => format!("vacation {handle}"),
        })
        .collect();
    if o.error.is_some() {
        out.push("error".into());
    }
    out.sort();
    out
}

struct Pigeonhole {
    dir: tempfile::TempDir,
}

impl Pigeonhole {
    fn new() -> Pigeonhole {
        let dir = tempfile::tempdir().unwrap();
        // sieve-test drops to mail_uid and writes its compiled binary next
        // to the script: the directory must be open to that user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        // SAFETY: geteuid/getegid have no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
        let conf = format!(
            "mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n\
             mail_location = maildir:{}/mail\nrecipient_delimiter = +\n\
             plugin {{\n  sieve_extensions = +vacation-seconds\n}}\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("dovecot.conf"), conf).unwrap();
        Pigeonhole { dir }
    }

    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        p
    }

    fn run(&self, script: &Path, msg: &Path, from: &str, to: &str) -> Vec<String> {
        let out = Command::new("sieve-test")
            .arg("-c")
            .arg(self.dir.path().join("dovecot.conf"))
            .args(["-f", from, "-a", to, "-r", to])
            .arg(script)
            .arg(msg)
            .env("USER", "nobody")
            .env("HOME", self.dir.path())
            .output()
            .expect("sieve-test (Debian package dovecot-sieve) must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("final result: failed") {
            // A runtime error: Pigeonhole falls back to the implicit keep.
            return vec!["error".into(), store_line("INBOX", &[])];
        }
        if !out.status.success() {
            // "NAME: line N: error: ..."
            let line = stderr
                .lines()
                .find_map(|l| {
                    let rest = l.split_once(": line ")?.1;
                    let (n, tail) = rest.split_once(':')?;
                    tail.contains("error")
                        .then(|| n.trim().parse::<u32>().ok())?
                })
                .unwrap_or_else(|| panic!("sieve-test failed without a script error:\n{stderr}"));
            return vec![format!("compile-error line {line}")];
        }
        let mut out: Vec<String> = Vec::new();
        let mut store: Option<(String, Vec<String>)> = None;
        let flush = |store: &mut Option<(String, Vec<String>)>, out: &mut Vec<String>| {
            if let Some((m, f)) = store.take() {
                out.push(store_line(&m, &f));
            }
        };
        for l in stdout.lines() {
            let t = l.trim();
            if let Some(m) = t.strip_prefix("* store message in folder: ") {
                flush(&mut store, &mut out);
                store = Some((m.to_string(), Vec::new()));
            } else if let Some(f) = t
                .strip_prefix("+ add IMAP flags: ")
                .or_else(|| t.strip_prefix("+ set IMAP flags: "))
            {
                if let Some((_, flags)) = store.as_mut() {
                    flags.extend(f.split_whitespace().map(String::from));
                }
            } else if t.starts_with("* ") {
                flush(&mut store, &mut out);
                if let Some(a) = t.strip_prefix("* redirect message to: ") {
                    out.push(format!("redirect {}", a.trim_matches(['<', '>'])));
                } else if t.starts_with("* reject message") {
                    out.push("reject".into());
                } else if t.starts_with("* send vacation message") {
                    out.push("vacation".into());
                }
            } else if let Some(h) = t.strip_prefix("=> handle  : ")
                && let Some(v) = out.iter_mut().rev().find(|x| *x == "vacation")
            {
                *v = format!("vacation {h}");
            }
        }
        flush(&mut store, &mut out);
        out.sort();
        out
    }
}

/// RFC 5228 and the extensions, against Pigeonhole's actions on the corpus.
#[test]
fn corpus_matches_pigeonhole() {
    let dir = corpus();
    let documented: Vec<(String, String)> = std::fs::read_to_string(dir.join("DIFFERENCES"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap().to_string(), w.next().unwrap().to_string())
        })
        .collect();
    let ph = Pigeonhole::new();
    let scripts = sorted_files(&dir.join("scripts"), "sieve");
    let messages = sorted_files(&dir.join("messages"), "eml");
    assert!(
        scripts.len() >= 20 && messages.len() >= 5,
        "corpus is missing"
    );
    let mut failures = Vec::new();
    let mut compared = 0;
    for s in &scripts {
        let src = std::fs::read_to_string(s).unwrap();
        let sname = s.file_name().unwrap().to_string_lossy().into_owned();
        let spath = ph.file(&sname, src.as_bytes());
        for m in &messages {
            let mname = m.file_name().unwrap().to_string_lossy().into_owned();
            // Both read the same CRLF bytes, as stored by deliver.
            let raw = std::fs::read_to_string(m).unwrap().replace('\n', "\r\n");
            let mpath = ph.file(&mname, raw.as_bytes());
            let skip = documented
                .iter()
                .any(|(a, b)| *a == sname && (*b == mname || b == "*"));
            if skip {
                continue;
            }
            for &(from, to) in ENVELOPES {
                let theirs = ph.run(&spath, &mpath, from, to);
                let mine = ours(&src, raw.as_bytes(), from, to);
                compared += 1;
                if theirs != mine {
                    failures.push(format!(
                        "{sname} × {mname} × {from} → {to}:\n  pigeonhole: {theirs:?}\n  ours:       {mine:?}"
                    ));
                }
            }
        }
    }
    assert!(compared > 200, "only {compared} runs compared");
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
