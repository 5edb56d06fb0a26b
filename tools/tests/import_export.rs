//! idx-admin import and export on real-world-shaped files (tests/data/),
//! through the real binary, and the import -> export -> import round trip.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use storage::format::Flags;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// (bytes, flags, keyword names, internal date) per live message, UID order.
type Msg = (Vec<u8>, Flags, Vec<String>, i64);

fn messages(spool: &Path, user: &str) -> Vec<Msg> {
    mailbox_messages(spool, user, "INBOX")
        .2
        .into_iter()
        .map(|(_, b, f, k, d)| (b, f, k, d))
        .collect()
}

fn admin(args: &[&str]) {
    let o = run(ADMIN, args);
    assert_eq!(
        code(&o),
        0,
        "idx-admin {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn import(spool: &Path, user: &str, kind: &str, src: &Path, extra: &[&str]) {
    let mut a = vec![
        "import",
        "--create",
        "--spool",
        spool.to_str().unwrap(),
        "-d",
        user,
        kind,
        src.to_str().unwrap(),
    ];
    a.extend_from_slice(extra);
    admin(&a);
    let (c, v) = inspect_json(&["verify", "--spool", spool.to_str().unwrap(), "-d", user]);
    assert_eq!(c, 0, "{v:#}");
}

fn export(spool: &Path, user: &str, kind: &str, dst: &Path) {
    admin(&[
        "export",
        "--spool",
        spool.to_str().unwrap(),
        "-d",
        user,
        kind,
        dst.to_str().unwrap(),
    ]);
}

#[test]
fn mbox_with_from_lines_in_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    import(&spool, "alice", "--mbox", &data("lf.mbox"), &[]);
    let ms = messages(&spool, "alice");
    assert_eq!(ms.len(), 3);
    let body = String::from_utf8(ms[0].0.clone()).unwrap();
    assert!(body.starts_with("Return-Path: <alice@example.org>\r\n"));
    assert!(
        !body.contains("Status:"),
        "mbox state headers are consumed: {body}"
    );
    assert!(body.contains("\r\n\r\nFrom the desk of the editor: this line"));
    assert!(body.contains("\r\nFrom a line the writer quoted.\r\n"));
    assert!(body.contains("\r\n>From a line that was already quoted once.\r\n"));
    assert!(body.contains("\r\n\r\nFrom here on the body goes on"));
    assert!(body.ends_with("\r\n\r\nAlice\r\n"), "{body:?}");
    assert!(
        !body.replace("\r\n", "").contains('\n'),
        "every line ends in CRLF"
    );
    assert_eq!(
        ms[0].1,
        Flags::SEEN.union(Flags::ANSWERED).union(Flags::FLAGGED)
    );
    assert_eq!(ms[0].3, 1_704_207_845);
    assert_eq!(ms[1].1, Flags::empty());
    assert_eq!(ms[1].2, vec!["$Work".to_string(), "urgent".to_string()]);
    assert_eq!(ms[1].3, 1_704_276_000 - 3600);
    assert!(
        String::from_utf8_lossy(&ms[1].0)
            .contains("Content-Type: text/plain;\r\n charset=us-ascii\r\n")
    );
    assert_eq!(ms[2].1, Flags::DELETED.union(Flags::DRAFT));
    assert!(ms[2].0.ends_with(b"\r\n\r\nunfinished\r\n"));

    // mboxo: only `>From ` is unquoted, `>>From ` stays as it is.
    let spool_o = tmp.path().join("spool-o");
    import(
        &spool_o,
        "alice",
        "--mbox",
        &data("lf.mbox"),
        &["--quoting", "o"],
    );
    let o = messages(&spool_o, "alice");
    assert!(String::from_utf8_lossy(&o[0].0).contains("\r\n>>From a line that was already"));
}

#[test]
fn crlf_mbox_imports_like_lf_mbox() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    import(&a, "alice", "--mbox", &data("lf.mbox"), &[]);
    import(&b, "alice", "--mbox", &data("crlf.mbox"), &[]);
    assert_eq!(messages(&a, "alice"), messages(&b, "alice"));
}

/// Copies the Maildir fixture and gives each file the mtime its name
/// carries (git does not keep mtimes).
fn maildir_fixture(to: &Path) {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(to.join(sub)).unwrap();
        for e in std::fs::read_dir(data("maildir").join(sub)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().to_string();
            let dst = to.join(sub).join(&name);
            std::fs::copy(e.path(), &dst).unwrap();
            let secs: u64 = name.split('.').next().unwrap().parse().unwrap();
            let f = std::fs::File::options().write(true).open(&dst).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                .unwrap();
        }
    }
    std::fs::copy(
        data("maildir/dovecot-keywords"),
        to.join("dovecot-keywords"),
    )
    .unwrap();
}

#[test]
fn maildir_with_keywords_and_tmp_leftover() {
    let tmp = tempfile::tempdir().unwrap();
    let md = tmp.path().join("Maildir");
    maildir_fixture(&md);
    let spool = tmp.path().join("spool");
    import(&spool, "alice", "--maildir", &md, &[]);
    let ms = messages(&spool, "alice");
    assert_eq!(ms.len(), 3, "tmp/ is skipped");
    assert_eq!(ms[0].0, b"From: Alice <alice@example.org>\r\nSubject: seen and answered\r\n\r\nbody one\r\nFrom inside a body\r\n".to_vec());
    assert_eq!(ms[0].1, Flags::SEEN.union(Flags::ANSWERED));
    assert_eq!(ms[0].3, 1_704_207_845);
    assert_eq!(ms[1].1, Flags::FLAGGED);
    assert_eq!(ms[1].2, vec!["$Work".to_string(), "urgent".to_string()]);
    assert_eq!(ms[2].1, Flags::empty());
    assert_eq!(ms[2].3, 1_704_326_400);
}

#[test]
fn round_trips_give_identical_messages_and_flags() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let md = t.join("Maildir");
    maildir_fixture(&md);
    // Sources: the mbox fixture and the Maildir fixture, each into its own spool.
    for (name, kind, src) in [
        ("m", "--mbox", data("lf.mbox")),
        ("d", "--maildir", md.clone()),
    ] {
        let first = t.join(format!("{name}-1"));
        import(&first, "alice", kind, &src, &[]);
        let original = messages(&first, "alice");
        // mbox -> store -> mbox -> store, and the same through a Maildir.
        let out_mbox = t.join(format!("{name}.out.mbox"));
        export(&first, "alice", "--mbox", &out_mbox);
        let second = t.join(format!("{name}-2"));
        import(&second, "alice", "--mbox", &out_mbox, &[]);
        assert_eq!(messages(&second, "alice"), original, "{name} via mbox");
        let out_md = t.join(format!("{name}.out.maildir"));
        export(&second, "alice", "--maildir", &out_md);
        let third = t.join(format!("{name}-3"));
        import(&third, "alice", "--maildir", &out_md, &[]);
        assert_eq!(messages(&third, "alice"), original, "{name} via Maildir");
    }
}

/// Export reads each message whole and checks it against its record: a
/// file whose bytes changed (same size) or whose size changed is an
/// error naming the file, never copied out as the message.
#[test]
fn export_refuses_a_message_that_differs_from_its_record() {
    for damage in ["byte", "size"] {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, dir) = sample(tmp.path());
        let file = dir.join("3.");
        let mut bytes = std::fs::read(&file).unwrap();
        match damage {
            "byte" => bytes[5] ^= 0x20,
            _ => bytes.push(b'x'),
        }
        std::fs::write(&file, &bytes).unwrap();
        let out = tmp.path().join("out.mbox");
        let o = run(
            ADMIN,
            &[
                "export",
                "--spool",
                spool.to_str().unwrap(),
                "-d",
                "alice",
                "--mbox",
                out.to_str().unwrap(),
            ],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(code(&o), 1, "{damage}: {err}");
        assert!(
            err.contains("3.") && err.contains("corrupt"),
            "{damage}: {err}"
        );
    }
}
