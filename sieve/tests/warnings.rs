//! Compile warnings (RFC 5804 1.3 `OK (WARNINGS)`): constructs that are
//! valid but cannot do what they say. Each kind comes from a warning
//! Pigeonhole's validator gives, and `tests/data/sieve/warnings/*.sieve`
//! are compared with Debian's `sievec` (dovecot-sieve): the lines warned
//! about must be the same.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sieve::{MAX_WARNINGS, Script};

fn warnings(src: &str) -> Vec<(u32, String)> {
    Script::compile(src)
        .unwrap_or_else(|e| panic!("{src}: {e}"))
        .warnings()
        .iter()
        .map(|w| (w.pos.line, w.message.clone()))
        .collect()
}

fn lines(src: &str) -> Vec<u32> {
    warnings(src).into_iter().map(|(l, _)| l).collect()
}

/// RFC 5232 3 (flags are RFC 3501 flags; Pigeonhole's
/// `ext_imapflags_command_validate`): an invalid flag in a literal of
/// setflag/addflag/removeflag is warned about, the first per command.
#[test]
fn invalid_imap_flags_warn() {
    let w = warnings("require \"imap4flags\";\naddflag \"\\\\Bogus\";\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, 2);
    assert!(w[0].1.contains("'\\Bogus'"), "{w:?}");
    assert!(w[0].1.contains("addflag"), "{w:?}");
    // One per command, the first invalid one.
    let w = warnings("require \"imap4flags\";\nsetflag \"a(b \\\\Nope\";\n");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].1.contains("'a(b'"), "{w:?}");
    // In a list too, and in :flags of fileinto and keep (deliver drops them).
    assert_eq!(
        lines(
            "require [\"imap4flags\", \"fileinto\"];\nremoveflag [\"\\\\Seen\", \"x]\"];\n\
             fileinto :flags \"\\\\Recent\" \"INBOX\";\nkeep :flags \"{x\";\n"
        ),
        [2, 3, 4]
    );
    // Valid: the five system flags in any case, keywords.
    assert!(
        warnings(
            "require \"imap4flags\";\naddflag [\"\\\\seen\", \"\\\\ANSWERED \\\\Flagged\", \
             \"\\\\Deleted\", \"\\\\Draft\", \"$Label1\", \"Invoice\"];\n"
        )
        .is_empty()
    );
    // A keyword longer than the store takes (100 bytes).
    let long = "k".repeat(101);
    assert_eq!(
        lines(&format!("require \"imap4flags\";\naddflag \"{long}\";\n")),
        [2]
    );
}

/// RFC 5260 4.1: `:zone` is "+hhmm"/"-hhmm"; anything else never matches
/// (Pigeonhole's tst-date.c: "is not a valid timezone").
#[test]
fn invalid_zone_warns() {
    let w = warnings(
        "require \"date\";\nif currentdate :zone \"Europe/Berlin\" \"year\" \"2020\" { keep; }\n\
         if date :zone \"+0100\" \"date\" \"year\" \"2020\" { keep; }\n\
         if date :zone \"+2460\" \"date\" \"year\" \"2020\" { keep; }\n",
    );
    assert_eq!(w.iter().map(|x| x.0).collect::<Vec<_>>(), [2, 4], "{w:?}");
    assert!(w[0].1.contains("'Europe/Berlin' is not a valid timezone"));
}

/// RFC 5230 4.1: the minimum of `:days` is "greater than 0"; `:days 0` is
/// warned about (Pigeonhole: "under the minimum") and runs as 1 day.
/// RFC 6131 2 allows `:seconds 0`: no warning.
#[test]
fn days_zero_warns_and_is_one_day() {
    let w = warnings("require \"vacation\";\nvacation :days 0 \"away\";\n");
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].0, 2);
    assert!(w[0].1.contains(":days value '0' is under the minimum"));
    assert!(warnings("require \"vacation-seconds\";\nvacation :seconds 0 \"away\";\n").is_empty());
    let s = Script::compile("require \"vacation\";\nvacation :days 0 \"away\";\n").unwrap();
    let msg = b"From: a@example.org\r\nTo: me@example.com\r\nSubject: x\r\n\r\nbody\r\n";
    let env = sieve::Envelope {
        from: "a@example.org".into(),
        to: "me@example.com".into(),
    };
    let o = s.evaluate(msg, &env, &sieve::RunOptions::default(), &sieve::NoHost);
    let period = o.actions.iter().find_map(|a| match a {
        sieve::Action::Vacation { period, .. } => Some(*period),
        _ => None,
    });
    assert_eq!(period, Some(86400), "{:?}", o.actions);
}

/// RFC 5322 3.6.8 (field-name = 1*ftext): a header name with a space or a
/// colon can never match (Pigeonhole: "specified header field name ... is
/// invalid") in header, exists and date.
#[test]
fn invalid_header_names_warn() {
    let w = warnings(
        "require \"date\";\nif exists \"bad name\" { keep; }\n\
         if header [\"to\", \"x:y\"] \"x\" { keep; }\n\
         if date \"\" \"year\" \"2020\" { keep; }\n\
         if header \"X-Ok_1.2\" \"x\" { keep; }\n",
    );
    assert_eq!(
        w.iter().map(|x| x.0).collect::<Vec<_>>(),
        [2, 3, 4],
        "{w:?}"
    );
    assert!(w[1].1.contains("'x:y'"), "{w:?}");
}

/// RFC 5229 3: a string with a variable reference is only known at run
/// time, so it is not checked.
#[test]
fn strings_with_variables_are_not_checked() {
    assert!(
        warnings(
            "require [\"variables\", \"imap4flags\"];\nset \"f\" \"\\\\Seen\";\naddflag \"${f}\";\n\
             if exists \"${f}\" { keep; }\n"
        )
        .is_empty()
    );
}

/// Warnings inside an `ihave` block are found too (its own validator).
#[test]
fn warnings_inside_ihave_blocks() {
    assert_eq!(
        lines("require \"ihave\";\nif ihave \"imap4flags\" {\n  addflag \"\\\\Nope\";\n}\n"),
        [3]
    );
}

/// A hostile script cannot make an unbounded list: at most MAX_WARNINGS,
/// and one line counting the rest.
#[test]
fn warnings_are_bounded() {
    let mut src = String::from("require \"imap4flags\";\n");
    for _ in 0..10_000 {
        src.push_str("addflag \"\\\\Nope\";\n");
    }
    let s = Script::compile(&src).unwrap();
    assert_eq!(s.warnings().len(), MAX_WARNINGS + 1);
    assert!(
        s.warnings()
            .last()
            .unwrap()
            .message
            .contains(&format!("{} more warnings", 10_000 - MAX_WARNINGS))
    );
}

/// Includes are reported with where they are (ManageSieve checks the
/// personal ones exist at upload).
#[test]
fn includes_are_listed() {
    let s = Script::compile(
        "require \"include\";\ninclude :personal \"a\";\ninclude :global :optional \"b\";\n",
    )
    .unwrap();
    let i = s.includes();
    assert_eq!(i.len(), 2);
    assert_eq!(
        (i[0].pos.line, i[0].global, i[0].optional),
        (2, false, false)
    );
    assert_eq!(i[0].name, "a");
    assert_eq!((i[1].pos.line, i[1].global, i[1].optional), (3, true, true));
}

fn sievec_warning_lines(script: &Path) -> Vec<u32> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    let conf = dir.path().join("dovecot.conf");
    std::fs::write(
        &conf,
        format!(
            "mail_uid = {uid}\nmail_gid = {gid}\nfirst_valid_uid = 1\nfirst_valid_gid = 1\n\
             mail_location = maildir:{}/mail\nplugin {{\n  sieve_extensions = +vacation-seconds\n}}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let copy = dir.path().join("s.sieve");
    std::fs::copy(script, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = Command::new("sievec")
        .arg("-c")
        .arg(&conf)
        .arg(&copy)
        .arg(dir.path().join("s.svbin"))
        .env("USER", "nobody")
        .env("HOME", dir.path())
        .output()
        .expect("sievec (Debian package dovecot-sieve) must be installed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "sievec failed on {script:?}:\n{stderr}"
    );
    stderr
        .lines()
        .filter(|l| l.contains(": warning: "))
        .map(|l| {
            let rest = l.split_once(": line ").expect("line number").1;
            rest.split_once(':').unwrap().0.trim().parse().unwrap()
        })
        .collect()
}

/// The warnings corpus against Pigeonhole: the same lines warned about.
#[test]
fn warning_corpus_matches_sievec() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/sieve/warnings");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sieve"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "corpus missing");
    let mut warned = 0;
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        let ours = lines(&src);
        let theirs = sievec_warning_lines(f);
        assert_eq!(
            ours,
            theirs,
            "{}: ours {ours:?}, sievec {theirs:?}",
            f.display()
        );
        warned += ours.len();
    }
    assert!(warned >= 8, "the corpus must exercise the warnings");
}

/// RFC 5228 4.1 leaves a mailbox that cannot be used to the
/// implementation: the literal `fileinto` names are listed for the store
/// to check, and the ones its rule refuses become warnings; names with
/// variables are not known before the run.
#[test]
fn fileinto_mailbox_names_checked_by_the_caller() {
    let s = Script::compile(
        "require [\"fileinto\", \"variables\"];\nfileinto \"Lists/rust\";\nfileinto \"a//b\";\n\
         set \"x\" \"y\";\nfileinto \"${x}\";\n",
    )
    .unwrap();
    let names: Vec<(u32, &str)> = s
        .fileinto_mailboxes()
        .iter()
        .map(|(p, n)| (p.line, n.as_str()))
        .collect();
    assert_eq!(names, [(2, "Lists/rust"), (3, "a//b")]);
    let w = s.mailbox_warnings(|n| {
        if n.contains("//") {
            Err("empty component".into())
        } else {
            Ok(())
        }
    });
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].pos.line, w[0].pos.col), (3, 10));
    assert!(
        w[0].message
            .contains("'a//b' cannot be used here (empty component)"),
        "{w:?}"
    );
}
