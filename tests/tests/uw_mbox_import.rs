//! Moving in from UW-IMAP without clients noticing (issue 20, the mbox
//! part). No UW-IMAP server is packaged in Debian 12; its library is
//! (uw-mailutils: c-client 2007f's `mailutil`), and one test has it write
//! and serve a folder. The others use an account that is a
//! fixture written byte for byte in the format c-client's `unix` driver
//! reads and writes (imap-2004/2007 `src/osdep/unix/unix.c`: `unix_parse`,
//! `unix_header`, `unix_append_msg`, `unix_pseudo`; docs/FAQ.txt on the
//! pseudo-message): an INBOX (`/var/mail/USER`) that starts with the
//! pseudo-message `DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA` and
//! its `X-IMAP: <uidvalidity> <last uid> <keywords>` header, a `~/mail`
//! tree whose folder starts with an `X-IMAPbase:` header on a real message,
//! a folder UW-IMAP never opened (no UIDs yet), `X-UID:` per message with
//! gaps, `Status:`/`X-Status:` flags, `X-Keywords:`, `>From ` lines (c-client
//! quotes `From ` when it writes and never unquotes: they are served with
//! their `>`), a body line `From here on` after an empty line (no date: not
//! a separator), a wrong `Content-Length:` (c-client ignores it and serves
//! it), a `From ` line with a zone, messages appended by the MTA without
//! X-UID, and `~/.mailboxlist`.
//!
//! c-client itself (its `mx` driver's copy) checks the fixture: it serves
//! the same bytes, dates, flags and keywords we expect.
//!
//! `idx-admin import --uw-mbox` brings it over; then Python's imaplib asks
//! our server through IMAP and every mailbox must show the source's
//! UIDVALIDITY and UIDNEXT (RFC 3501 2.3.1.1), and every message the UID,
//! FLAGS with keywords (2.3.2), INTERNALDATE (2.3.3), RFC822.SIZE (2.3.4)
//! and the bytes c-client served (its state headers hidden, the mbox's
//! last empty line not part of the message), and LSUB (6.3.9) the
//! subscriptions.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use e2e_tests::bin;

const USER: &str = "uwuser";
/// The INBOX's UIDVALIDITY (X-IMAP) and last UID.
const INBOX_UV: u32 = 1_709_719_200;
/// `Archive/2023`'s UIDVALIDITY (X-IMAPbase), below INBOX's.
const ARCHIVE_UV: u32 = 1_609_459_200;

/// Our server's view of one mailbox, asked by Python's imaplib through
/// `imapd-check serve --stdio`.
const VIEW_PY: &str = r#"
import datetime, imaplib, json, re, sys
cmd, names = sys.argv[1], sys.argv[2:]
M = imaplib.IMAP4_stream(cmd)
out = {"lsub": [], "mailboxes": {}}
typ, data = M.lsub('""', '*')
for d in data:
    if d:
        out["lsub"].append(d.decode().rsplit(' ', 1)[1].strip('"'))
for name in names:
    typ, data = M.status('"%s"' % name, '(UIDVALIDITY UIDNEXT MESSAGES)')
    if typ != 'OK':
        out["mailboxes"][name] = None
        continue
    st = dict(re.findall(r'(UIDVALIDITY|UIDNEXT|MESSAGES) (\d+)', data[0].decode()))
    box = {k: int(v) for k, v in st.items()}
    box["messages"] = []
    M.select('"%s"' % name, readonly=True)
    if box["MESSAGES"]:
        typ, data = M.uid('FETCH', '1:*', '(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])')
        i = 0
        while i < len(data):
            d = data[i]
            if isinstance(d, tuple):
                meta = d[0].decode()
                body = d[1]
                if i + 1 < len(data) and isinstance(data[i + 1], bytes):
                    meta += data[i + 1].decode()
                    i += 1
                date = re.search(r'INTERNALDATE "([^"]+)"', meta).group(1)
                box["messages"].append({
                    "uid": int(re.search(r'UID (\d+)', meta).group(1)),
                    "flags": sorted(re.search(r'FLAGS \(([^)]*)\)', meta).group(1).split()),
                    "date": int(datetime.datetime.strptime(date.strip(), "%d-%b-%Y %H:%M:%S %z").timestamp()),
                    "zone": date.strip()[-5:],
                    "size": int(re.search(r'RFC822.SIZE (\d+)', meta).group(1)),
                    "body": list(body),
                })
            i += 1
    out["mailboxes"][name] = box
M.logout()
print(json.dumps(out))
"#;

/// What one message must look like through IMAP.
#[derive(Clone, PartialEq, Eq)]
struct Want {
    uid: u32,
    flags: Vec<String>,
    date: i64,
    /// INTERNALDATE's zone as shown (`+0100`).
    zone: String,
    /// The bytes as c-client served them (CRLF).
    body: Vec<u8>,
}

impl std::fmt::Debug for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UID {} {:?} {} {} {:?}",
            self.uid,
            self.flags,
            self.date,
            self.zone,
            String::from_utf8_lossy(&self.body)
        )
    }
}

fn want(uid: u32, flags: &[&str], date: i64, body: &str) -> Want {
    let mut flags: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
    flags.sort();
    Want {
        uid,
        flags,
        date,
        zone: "+0000".into(),
        body: body.replace('\n', "\r\n").into_bytes(),
    }
}

/// The mailboxes as our server shows them: name -> (UIDVALIDITY,
/// UIDNEXT, messages), and the LSUB names.
type Seen = (BTreeMap<String, Option<(u32, u32, Vec<Want>)>>, Vec<String>);

fn view(spool: &Path, names: &[&str]) -> Seen {
    let cmd = format!(
        "{} serve --stdio -d {USER} --spool {}",
        bin("imapd-check").display(),
        spool.display()
    );
    let o = Command::new("python3")
        .arg("-c")
        .arg(VIEW_PY)
        .arg(cmd)
        .args(names)
        .output()
        .expect("python3");
    assert!(
        o.status.success(),
        "imaplib: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut boxes = BTreeMap::new();
    for (name, b) in v["mailboxes"].as_object().unwrap() {
        if b.is_null() {
            boxes.insert(name.clone(), None);
            continue;
        }
        let mut msgs = Vec::new();
        for m in b["messages"].as_array().unwrap() {
            let body: Vec<u8> = serde_json::from_value(m["body"].clone()).unwrap();
            assert_eq!(
                m["size"].as_u64().unwrap(),
                body.len() as u64,
                "RFC822.SIZE is the size of the bytes served"
            );
            msgs.push(Want {
                uid: m["uid"].as_u64().unwrap() as u32,
                flags: m["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_string())
                    .filter(|f| f != "\\Recent")
                    .collect(),
                date: m["date"].as_i64().unwrap(),
                zone: m["zone"].as_str().unwrap().to_string(),
                body,
            });
        }
        assert_eq!(msgs.len() as u64, b["MESSAGES"].as_u64().unwrap());
        boxes.insert(
            name.clone(),
            Some((
                b["UIDVALIDITY"].as_u64().unwrap() as u32,
                b["UIDNEXT"].as_u64().unwrap() as u32,
                msgs,
            )),
        );
    }
    let lsub = v["lsub"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    (boxes, lsub)
}

fn import(spool: &Path, args: &[&Path], extra: &[&str]) -> (Output, serde_json::Value) {
    import_tz(spool, args, extra, "UTC")
}

/// With the time zone `tz` (`TZ`): `From ` lines without a zone are local
/// time, as c-client read them.
fn import_tz(
    spool: &Path,
    args: &[&Path],
    extra: &[&str],
    tz: &str,
) -> (Output, serde_json::Value) {
    let mut cmd = Command::new(bin("idx-admin"));
    cmd.env("TZ", tz);
    cmd.args(["import", "--json"]);
    for a in args {
        cmd.arg("--uw-mbox").arg(a);
    }
    cmd.args(["-d", USER]).arg("--spool").arg(spool).args(extra);
    let o = cmd
        .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
        .output()
        .unwrap();
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON summary: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    });
    (o, v)
}

fn import_ok(spool: &Path, args: &[&Path], extra: &[&str]) -> serde_json::Value {
    let (o, v) = import(spool, args, extra);
    assert!(
        o.status.success(),
        "import failed: {v:#}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    v
}

fn folder<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no folder {name} in {v:#}"))
}

/// 2024-01-02 15:04:05 UTC.
const T1: i64 = 1_704_207_845;

/// c-client's pseudo-message (`unix_pseudo`), keywords `$Forwarded Work`.
fn pseudo() -> String {
    format!(
        "From MAILER-DAEMON Wed Mar  6 10:00:00 2024\n\
         Date: 06 Mar 2024 10:00:00 +0000\n\
         From: Mail System Internal Data <MAILER-DAEMON@uw.example>\n\
         Subject: DON'T DELETE THIS MESSAGE -- FOLDER INTERNAL DATA\n\
         Message-ID: <1709719200@uw.example>\n\
         X-IMAP: {INBOX_UV} 0000000012 $Forwarded Work\n\
         Status: RO\n\
         \n\
         This text is part of the internal format of your mail folder, and is not\n\
         a real message.  It is created automatically by the mail system software.\n\
         If deleted, important folder data will be lost, and it will be re-created\n\
         with the data reset to initial values.\n\
         \n"
    )
}

/// The INBOX's messages after the pseudo-message, as written by c-client
/// (`unix_append_msg`: Status, X-Status, X-Keywords after the From line,
/// X-UID written by `unix_rewrite`) and by the MTA (no state headers).
const INBOX_MSGS: &str = "From alice@example.org Tue Jan  2 15:04:05 2024\n\
Return-Path: <alice@example.org>\n\
Subject: one\n\
Content-Length: 5\n\
Status: RO\n\
X-Status: AF\n\
X-Keywords: Work\n\
X-UID: 3\n\
\n\
first body, longer than Content-Length says\n\
>From the quoted line\n\
>>From twice quoted\n\
\n\
From here on, no date: not a separator\n\
\n\
From bob@example.org Tue Jan  2 15:04:05 2024 +0100\n\
Subject: two\n\
X-Original-Status: kept, it is not c-client's\n\
Status: O\n\
X-Status: \n\
X-Keywords: $Forwarded Work Unlisted\n\
X-UID: 7\n\
\n\
second\n\
\n\
From carol@example.org Tue Jan  2 15:04:05 2024\n\
Subject: three, no body\n\
Status: RO\n\
X-Status: DT\n\
X-UID: 10\n\
\n\
From MAILER-DAEMON Tue Jan  2 15:04:05 2024\n\
Subject: delivered after UW-IMAP's last look\n\
\n\
new\n\
\n";

fn inbox_wanted() -> Vec<Want> {
    let mut w = vec![
        want(
            3,
            &["\\Seen", "\\Answered", "\\Flagged", "Work"],
            T1,
            "Return-Path: <alice@example.org>\nSubject: one\nContent-Length: 5\n\n\
             first body, longer than Content-Length says\n>From the quoted line\n\
             >>From twice quoted\n\nFrom here on, no date: not a separator\n",
        ),
        want(
            7,
            &["$Forwarded", "Work"],
            T1 - 3600,
            "Subject: two\nX-Original-Status: kept, it is not c-client's\n\nsecond\n",
        ),
        want(
            10,
            &["\\Seen", "\\Deleted", "\\Draft"],
            T1,
            "Subject: three, no body\n\n",
        ),
        // No X-UID: the next after the last (12), as c-client gives it.
        want(
            13,
            &[],
            T1,
            "Subject: delivered after UW-IMAP's last look\n\nnew\n",
        ),
    ];
    // RFC 3501 2.3.3: the From line's zone is INTERNALDATE's.
    w[1].zone = "+0100".into();
    w
}

/// `~/mail/Archive/2023`: X-IMAPbase on the first (real) message, a
/// keyword list, UID gaps and a last UID above the last message.
fn archive() -> String {
    format!(
        "From dave@example.org Mon Jan  1 00:00:00 2024\n\
         X-IMAPbase: {ARCHIVE_UV} 0000000020 Project\n\
         Subject: a1\n\
         Status: RO\n\
         X-Status: \n\
         X-Keywords: Project\n\
         X-UID: 5\n\
         \n\
         archived\n\
         \n\
         From erin@example.org Mon Jan  1 00:00:01 2024\n\
         Subject: a2\n\
         Status: O\n\
         X-Status: F\n\
         X-Keywords:\n\
         X-UID: 17\n\
         \n\
         archived too\n\
         \n"
    )
}

fn archive_wanted() -> Vec<Want> {
    vec![
        want(
            5,
            &["\\Seen", "Project"],
            1_704_067_200,
            "Subject: a1\n\narchived\n",
        ),
        want(
            17,
            &["\\Flagged"],
            1_704_067_201,
            "Subject: a2\n\narchived too\n",
        ),
    ]
}

/// `~/mail/Sent`: never opened by UW-IMAP (no X-IMAPbase, no X-UID).
const SENT: &str = "From me@example.org Wed Jan  3 00:00:00 2024\n\
Subject: s1\n\
\n\
sent\n\
\n";

/// Writes the account; returns (INBOX file, mail tree, .mailboxlist).
fn account(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let inbox = dir.join("var-mail-uwuser");
    std::fs::write(&inbox, pseudo() + INBOX_MSGS).unwrap();
    let mail = dir.join("mail");
    std::fs::create_dir_all(mail.join("Archive")).unwrap();
    std::fs::write(mail.join("Archive/2023"), archive()).unwrap();
    std::fs::write(mail.join("Sent"), SENT).unwrap();
    // Not folders: a dot file (c-client hides them) and a file that is no
    // mbox (reported, skipped).
    std::fs::write(
        mail.join(".hidden"),
        "From x Mon Jan  1 00:00:00 2024\n\nx\n",
    )
    .unwrap();
    std::fs::write(mail.join("notes.txt"), "just notes\n").unwrap();
    let list = dir.join(".mailboxlist");
    std::fs::write(&list, "INBOX\nArchive/2023\nGone\n").unwrap();
    (inbox, mail, list)
}

/// RFC 3501 2.3.1.1 (UIDVALIDITY, UIDs and UIDNEXT kept), 2.3.2, 2.3.3,
/// 2.3.4, 6.3.9: the whole UW-IMAP account, then a second run that
/// changes nothing.
#[test]
fn uw_account_imported_looks_as_uw_imap_served_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, mail, list) = account(tmp.path());
    let spool = tmp.path().join("spool");
    let list_arg = list.to_str().unwrap();
    let v = import_ok(&spool, &[&inbox, &mail], &["--mailboxlist", list_arg]);
    assert_eq!(folder(&v, "INBOX")["imported"], 3, "{v:#}");
    assert_eq!(folder(&v, "INBOX")["renumbered"], 1, "{v:#}");
    assert_eq!(v["subscriptions_added"], 3, "{v:#}");
    // Not in the folder's keyword list: c-client does not show it either.
    let inbox_warnings = folder(&v, "INBOX")["warnings"].to_string();
    assert!(inbox_warnings.contains("Unlisted"), "{v:#}");
    let warnings = v["warnings"].to_string();
    assert!(warnings.contains("notes.txt"), "{v:#}");
    assert!(!warnings.contains(".hidden"), "{v:#}");
    assert!(
        !v["folders"].to_string().contains("hidden"),
        "dot files are no folders: {v:#}"
    );

    let (boxes, mut lsub) = view(&spool, &["INBOX", "Archive/2023", "Sent"]);
    let (uv, next, msgs) = boxes["INBOX"].as_ref().unwrap();
    assert_eq!((*uv, *next), (INBOX_UV, 14));
    assert_eq!(msgs, &inbox_wanted());
    e2e_tests::set_mode(tmp.path(), 0o711);
    same_as_c_client(msgs, &c_client_view(tmp.path(), &(pseudo() + INBOX_MSGS)));
    let (uv, next, msgs) = boxes["Archive/2023"].as_ref().unwrap();
    assert_eq!((*uv, *next), (ARCHIVE_UV, 21));
    assert_eq!(msgs, &archive_wanted());
    same_as_c_client(msgs, &c_client_view(tmp.path(), &archive()));
    let (uv, next, msgs) = boxes["Sent"].as_ref().unwrap();
    assert!(*uv != INBOX_UV && *uv != ARCHIVE_UV);
    assert_eq!(*next, 2);
    assert_eq!(
        msgs,
        &vec![want(1, &[], 1_704_240_000, "Subject: s1\n\nsent\n")]
    );
    lsub.sort();
    assert_eq!(lsub, ["Archive/2023", "Gone", "INBOX"]);

    // A second run: nothing new, nothing changed.
    let v = import_ok(&spool, &[&inbox, &mail], &["--mailboxlist", list_arg]);
    for f in v["folders"].as_array().unwrap() {
        assert_eq!(f["imported"], 0, "{f:#}");
        assert_eq!(f["renumbered"], 0, "{f:#}");
        assert_eq!(f["flags_updated"], 0, "{f:#}");
    }
    assert_eq!(folder(&v, "INBOX")["already_here"], 4);
    assert_eq!(v["subscriptions_added"], 0);
    let again = view(&spool, &["INBOX", "Archive/2023", "Sent"]);
    assert_eq!(again.0, boxes);
}

/// Issue 20 "safe re-run": mail that arrived in the mbox since, and flag
/// and keyword changes made through UW-IMAP since (c-client rewrote the
/// Status/X-Status/X-Keywords lines), come over on the next run; nothing is
/// duplicated and no UID is handed out twice (RFC 3501 2.3.1.1).
#[test]
fn uw_rerun_brings_new_mail_and_flag_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, _mail, _list) = account(tmp.path());
    let spool = tmp.path().join("spool");
    import_ok(&spool, &[&inbox], &[]);

    // Meanwhile under UW-IMAP: UID 3 lost \Flagged and Work, UID 7 got
    // \Seen; the MTA delivered one more message.
    let text = std::fs::read_to_string(&inbox).unwrap();
    let text =
        text.replacen(
            "X-Status: AF\nX-Keywords: Work\nX-UID: 3",
            "X-Status: A\nX-Keywords:\nX-UID: 3",
            1,
        )
        .replacen(
            "Status: O\nX-Status: \nX-Keywords: $Forwarded Work Unlisted\nX-UID: 7",
            "Status: RO\nX-Status: \nX-Keywords: $Forwarded Work Unlisted\nX-UID: 7",
            1,
        ) + "From frank@example.org Thu Jan  4 00:00:00 2024\nSubject: later\n\nlater\n\n";
    std::fs::write(&inbox, text).unwrap();

    let v = import_ok(&spool, &[&inbox], &[]);
    let f = folder(&v, "INBOX");
    assert_eq!(f["imported"], 0, "{f:#}");
    assert_eq!(f["renumbered"], 1, "{f:#}");
    assert_eq!(f["already_here"], 4, "{f:#}");
    assert_eq!(f["flags_updated"], 2, "{f:#}");

    let (boxes, _) = view(&spool, &["INBOX"]);
    let (uv, next, msgs) = boxes["INBOX"].as_ref().unwrap();
    assert_eq!((*uv, *next), (INBOX_UV, 15));
    let mut w = inbox_wanted();
    w[0].flags = vec!["\\Answered".into(), "\\Seen".into()];
    w[1].flags = vec!["$Forwarded".into(), "Work".into(), "\\Seen".into()];
    w[1].flags.sort();
    w.push(want(14, &[], 1_704_326_400, "Subject: later\n\nlater\n"));
    assert_eq!(msgs, &w);
}

/// Issue 20 "bad input": X-UIDs that disagree with X-IMAPbase (c-client
/// would drop the UIDVALIDITY and renumber: `unix_parse` "UID greater than
/// last"), a file that is no mbox, a cut-off last message, an unreadable
/// file (a dangling link), a `From ` line without a date. Each gets a
/// clear message, the rest is imported, nothing is guessed at, the exit
/// status says not everything came; `--renumber` imports the refused
/// folder under new UIDs and a UIDVALIDITY that is not the source's
/// (RFC 3501 2.3.1.1: never the source's UIDVALIDITY with other UIDs).
/// A re-run mirrors the source's expunges (OPERATIONS.md §4a), but only
/// when the reader took every message of the folder: with a message it
/// had to skip (here a cut-off last message, c-client's half-written
/// append), nothing is expunged on that run, and the expunge comes with
/// the next run that reads cleanly.
#[test]
fn uw_rerun_expunges_only_when_every_source_message_was_read() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, _mail, _list) = account(tmp.path());
    let spool = tmp.path().join("spool");
    import_ok(&spool, &[&inbox], &[]);

    // Under UW-IMAP: UID 7 expunged (its message gone from the file),
    // and an append cut off at the end.
    let text = std::fs::read_to_string(&inbox).unwrap();
    let start = text.find("From bob@example.org").unwrap();
    let end = start + text[start..].find("From carol@example.org").unwrap();
    let expunged = format!("{}{}", &text[..start], &text[end..]);
    let cut = format!("{expunged}From dave@example.org Thu Jan  4 00:00:00 2024\nSubject: cut");
    std::fs::write(&inbox, &cut).unwrap();

    let (_, v) = import(&spool, &[&inbox], &[]);
    let f = folder(&v, "INBOX");
    assert_eq!(f["expunged"], 0, "{f:#}");
    assert!(
        f["warnings"].to_string().contains("nothing expunged"),
        "{f:#}"
    );
    let (boxes, _) = view(&spool, &["INBOX"]);
    let uids: Vec<u32> = boxes["INBOX"]
        .as_ref()
        .unwrap()
        .2
        .iter()
        .map(|m| m.uid)
        .collect();
    assert!(uids.contains(&7), "{uids:?}");

    std::fs::write(&inbox, &expunged).unwrap();
    let v = import_ok(&spool, &[&inbox], &[]);
    let f = folder(&v, "INBOX");
    assert_eq!(f["expunged"], 1, "{f:#}");
    let (boxes, _) = view(&spool, &["INBOX"]);
    let uids: Vec<u32> = boxes["INBOX"]
        .as_ref()
        .unwrap()
        .2
        .iter()
        .map(|m| m.uid)
        .collect();
    assert!(!uids.contains(&7), "{uids:?}");
}

#[test]
fn uw_bad_input_is_reported_and_nothing_is_guessed() {
    let tmp = tempfile::tempdir().unwrap();
    let mail = tmp.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    let broken = "From a@b Mon Jan  1 00:00:00 2024\n\
                  X-IMAPbase: 1500000000 0000000005\n\
                  Subject: b1\n\
                  X-UID: 2\n\
                  \n\
                  one\n\
                  \n\
                  From a@b Mon Jan  1 00:00:00 2024\n\
                  Subject: b2\n\
                  X-UID: 9\n\
                  \n\
                  two\n";
    std::fs::write(mail.join("Broken"), broken).unwrap();
    std::fs::write(
        mail.join("Cut"),
        "From a@b Mon Jan  1 00:00:00 2024\nSubject: whole\n\nwhole\n\n\
         From a@b Mon Jan  1 00:00:00 2024\nSubject: cut\n\nthe write stopped he",
    )
    .unwrap();
    std::fs::write(
        mail.join("Odd"),
        "From a@b Mon Jan  1 00:00:00 2024\nSubject: odd\n\nbefore\n\nFrom nobody at all\nafter\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), mail.join("Gone")).unwrap();
    // UW-IMAP's other formats hold mail too: refused, not skipped.
    std::fs::write(mail.join("Old"), b"*mbx*\r\n00000000669a3f1f00000001\r\n").unwrap();
    std::fs::create_dir(mail.join("Mixed")).unwrap();
    std::fs::write(mail.join("Mixed/.mixmeta"), "S1\r\n").unwrap();
    let not_mbox = tmp.path().join("inbox");
    std::fs::write(&not_mbox, "Subject: no From line\n\nx\n").unwrap();
    let spool = tmp.path().join("spool");

    let (o, v) = import(&spool, &[&not_mbox, &mail], &[]);
    assert!(!o.status.success(), "{v:#}");
    let refused = |name: &str| {
        folder(&v, name)["refused"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    assert!(refused("INBOX").contains("is not an mbox"), "{v:#}");
    assert!(refused("Broken").contains("X-UID 9 is above 5"), "{v:#}");
    assert!(refused("Broken").contains("--renumber"), "{v:#}");
    assert!(refused("Old").contains("mbx format"), "{v:#}");
    assert!(refused("Mixed").contains("mix format"), "{v:#}");
    assert!(
        refused("Gone").contains("nowhere") || refused("Gone").contains("Gone"),
        "{v:#}"
    );
    // One message each comes over; the other is listed with the reason.
    for (name, list, why) in [
        ("Cut", "skipped", "ends without a newline"),
        ("Odd", "warnings", "without a valid date"),
    ] {
        let f = folder(&v, name);
        assert_eq!(f["renumbered"], 1, "{v:#}");
        assert!(f[list][0].as_str().unwrap().contains(why), "{v:#}");
    }

    let (boxes, _) = view(&spool, &["INBOX", "Broken", "Cut", "Odd"]);
    // INBOX always exists here; nothing came into it.
    assert!(boxes["INBOX"].as_ref().is_none_or(|b| b.2.is_empty()));
    assert!(boxes["Broken"].is_none(), "a refused folder is not created");
    assert_eq!(boxes["Cut"].as_ref().unwrap().2.len(), 1);
    let odd = &boxes["Odd"].as_ref().unwrap().2;
    assert_eq!(
        odd[0].body,
        b"Subject: odd\r\n\r\nbefore\r\n\r\nFrom nobody at all\r\nafter\r\n".to_vec()
    );

    // --renumber: Broken comes over, under a UIDVALIDITY not the source's.
    let (o, v) = import(&spool, &[&mail], &["--renumber"]);
    assert!(
        !o.status.success(),
        "Cut and Gone are still incomplete: {v:#}"
    );
    assert_eq!(folder(&v, "Broken")["renumbered"], 2, "{v:#}");
    let (boxes, _) = view(&spool, &["Broken"]);
    let (uv, next, msgs) = boxes["Broken"].as_ref().unwrap();
    assert_ne!(*uv, 1_500_000_000);
    assert_eq!(*next, 3);
    assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), [1, 2]);
}

/// RFC 3501 2.3.3: INTERNALDATE is the `From ` line's date. c-client reads
/// a line without a zone in the server's local time zone ("LCL" in
/// `unix_parse`) and one with a numeric zone in that zone: imported on a
/// host at UTC-5 (POSIX `TZ=EST5`), the zone-less lines name 5 hours
/// later instants shown in `-0500`, the `+0100` line the same instant in
/// `+0100`.
#[test]
fn uw_from_line_without_zone_is_local_time() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, _mail, _list) = account(tmp.path());
    let spool = tmp.path().join("spool");
    let (o, v) = import_tz(&spool, &[&inbox], &[], "EST5");
    assert!(o.status.success(), "{v:#}");
    let (boxes, _) = view(&spool, &["INBOX"]);
    let dates: Vec<(i64, &str)> = boxes["INBOX"]
        .as_ref()
        .unwrap()
        .2
        .iter()
        .map(|m| (m.date, m.zone.as_str()))
        .collect();
    let (five, local) = (5 * 3600, "-0500");
    assert_eq!(
        dates,
        [
            (T1 + five, local),
            (T1 - 3600, "+0100"),
            (T1 + five, local),
            (T1 + five, local)
        ]
    );
}

/// c-client's `mbox` driver (UW-IMAP's INBOX when `~/mbox` exists): new
/// mail waits in the system mailbox `/var/mail/USER` until c-client moves
/// it to the end of `~/mbox`, where it gets the next UIDs. `--uw-spool`
/// brings those messages into INBOX after `~/mbox`'s, under the UIDs the
/// move would have given (RFC 3501 2.3.1.1: above every UID before), with
/// no duplicate on a second run.
#[test]
fn uw_mbox_driver_spool_follows_inbox() {
    let tmp = tempfile::tempdir().unwrap();
    let (home_mbox, _mail, _list) = account(tmp.path());
    let spool_file = tmp.path().join("var-mail");
    std::fs::write(
        &spool_file,
        "From x@example.org Thu Jan  4 00:00:00 2024\nSubject: waiting\nStatus: O\n\nw1\n\n\
         From y@example.org Thu Jan  4 00:00:01 2024\nSubject: waiting too\n\nw2\n",
    )
    .unwrap();
    let spool = tmp.path().join("spool");
    let sp = spool_file.to_str().unwrap();
    let v = import_ok(&spool, &[&home_mbox], &["--uw-spool", sp]);
    assert_eq!(folder(&v, "INBOX")["renumbered"], 3, "{v:#}");
    let (boxes, _) = view(&spool, &["INBOX"]);
    let (uv, next, msgs) = boxes["INBOX"].as_ref().unwrap();
    assert_eq!((*uv, *next), (INBOX_UV, 16));
    let mut w = inbox_wanted();
    w.push(want(14, &[], 1_704_326_400, "Subject: waiting\n\nw1\n"));
    w.push(want(15, &[], 1_704_326_401, "Subject: waiting too\n\nw2\n"));
    assert_eq!(msgs, &w);
    let v = import_ok(&spool, &[&home_mbox], &["--uw-spool", sp]);
    assert_eq!(folder(&v, "INBOX")["renumbered"], 0, "{v:#}");
    assert_eq!(folder(&v, "INBOX")["already_here"], 6, "{v:#}");
}

/// Runs UW's c-client `mailutil` (Debian's uw-mailutils, c-client 2007f)
/// as `nobody` with `home` as its home directory (c-client takes `$HOME`
/// for a user that is not root; names are relative to it).
fn mailutil(home: &Path, args: &[&str]) -> String {
    let o = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "env"])
        .arg(format!("HOME={}", home.display()))
        .arg("TZ=UTC")
        .arg("mailutil")
        .args(args)
        .output()
        .expect("setpriv/mailutil (Debian's uw-mailutils)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // `prune` exits 1 even when it did its work: judged by its output.
    assert!(
        o.status.success() || args[0] == "prune",
        "mailutil {args:?}: {text}"
    );
    text
}

/// The UIDVALIDITY and last UID of c-client's X-IMAP line, and every
/// X-UID in order, as c-client wrote them.
fn c_client_uids(mbox: &Path) -> (u32, u32, Vec<u32>) {
    let text = std::fs::read_to_string(mbox).unwrap();
    let mut ximap = None;
    let mut uids = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("X-IMAP: ") {
            let mut it = v.split(' ').map(|n| n.parse::<u32>().unwrap());
            ximap = Some((it.next().unwrap(), it.next().unwrap()));
        } else if let Some(u) = line.strip_prefix("X-UID: ") {
            uids.push(u.parse().unwrap());
        }
    }
    let (uv, last) = ximap.expect("c-client's X-IMAP line");
    (uv, last, uids)
}

/// What c-client serves, in mailbox order: its `mx` driver stores each
/// message as served (CRLF) in a numbered file whose mtime is the
/// INTERNALDATE, and in `.mxindex` (`V<uidvalidity>L<last uid>`, a
/// `K<keyword>` line per keyword, then `M<uid>;<keywords>.<flags>` per
/// message, hex; flags 1 \Seen, 2 \Deleted, 4 \Flagged, 8 \Answered,
/// 0x20 \Draft) the flags and keywords.
fn c_client_served(dir: &Path) -> Vec<(Vec<u8>, i64, Vec<String>)> {
    use std::os::unix::fs::MetadataExt;
    let index = std::fs::read_to_string(dir.join(".mxindex")).unwrap();
    let mut rest = &index[18..];
    let mut keywords = Vec::new();
    while let Some(k) = rest.strip_prefix('K') {
        let (name, after) = k.split_once('\n').unwrap();
        keywords.push(name.to_string());
        rest = after;
    }
    let mut out = Vec::new();
    for rec in rest.split('M').skip(1) {
        let (uid, flags) = rec.split_once(';').unwrap();
        let uid = u32::from_str_radix(uid, 16).unwrap();
        let (kw, sys) = flags.split_once('.').unwrap();
        let kw = u32::from_str_radix(kw, 16).unwrap();
        let bits = u32::from_str_radix(sys, 16).unwrap();
        let mut names: Vec<String> = [
            (1, "\\Seen"),
            (2, "\\Deleted"),
            (4, "\\Flagged"),
            (8, "\\Answered"),
            (0x20, "\\Draft"),
        ]
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
        names.extend(
            (0..keywords.len())
                .filter(|i| kw & (1 << i) != 0)
                .map(|i| keywords[i].clone()),
        );
        names.sort();
        let file = dir.join(uid.to_string());
        let mtime = std::fs::metadata(&file).unwrap().mtime();
        out.push((std::fs::read(&file).unwrap(), mtime, names));
    }
    out
}

/// c-client's view of the folder `text` (written as `name` in a fresh
/// home under `tmp`): what it serves, message by message.
fn c_client_view(tmp: &Path, text: &str) -> Vec<(Vec<u8>, i64, Vec<String>)> {
    let home = tmp.join("c-client-home");
    e2e_tests::mkdir_mode(&home, 0o777);
    // Not "inbox": c-client takes that name for the system INBOX.
    std::fs::write(home.join("folder"), text).unwrap();
    mailutil(&home, &["create", "#driver.mx/served"]);
    mailutil(&home, &["append", "-kw", "folder", "#driver.mx/served"]);
    let out = c_client_served(&home.join("served"));
    std::fs::remove_dir_all(&home).unwrap();
    out
}

/// Our messages are what c-client serves: bytes, INTERNALDATE, flags
/// and keywords, in order.
fn same_as_c_client(ours: &[Want], served: &[(Vec<u8>, i64, Vec<String>)]) {
    assert_eq!(ours.len(), served.len());
    for (ours, (bytes, date, flags)) in ours.iter().zip(served) {
        assert_eq!(
            String::from_utf8_lossy(&ours.body),
            String::from_utf8_lossy(bytes),
            "UID {}",
            ours.uid
        );
        assert_eq!(ours.date, *date, "UID {}", ours.uid);
        assert_eq!(&ours.flags, flags, "UID {}", ours.uid);
    }
}

/// The mbox written by the real c-client (UW's `mailutil`, the library
/// UW-IMAP is built on): `create` writes the pseudo-message with `X-IMAP`,
/// `append` writes Status/X-Status/X-Keywords and quotes body `From `
/// lines, `prune` expunges (a UID gap) and rewrites X-UIDs; then the MTA
/// appends a message without X-UID. Imported, our server must show what
/// c-client serves: the bytes, INTERNALDATE and flags c-client's `mx`
/// driver stores when it copies the folder, the UIDVALIDITY, UIDNEXT and
/// X-UIDs c-client writes when it next opens the folder read-write (the
/// MTA's message gets the UID c-client gives it), RFC 3501 2.3.1.1-2.3.4.
/// A second import after c-client's rewrite finds everything here.
#[test]
fn uw_mbox_written_by_c_client_imports_as_c_client_serves_it() {
    let tmp = tempfile::tempdir().unwrap();
    e2e_tests::set_mode(tmp.path(), 0o711);
    let home = tmp.path().join("home");
    e2e_tests::mkdir_mode(&home, 0o777);
    std::fs::write(
        home.join("src"),
        "From alice@example.org Tue Jan  2 15:04:05 2024\nSubject: one\nStatus: RO\n\
         X-Status: AF\n\nbody one\n>From quoted\nFrom unquoted, no date\n\n\
         From bob@example.org Tue Jan  2 16:00:00 2024\nSubject: two\n\nbody two\n\n\
         From carol@example.org Tue Jan  2 17:00:00 2024\nSubject: three\nStatus: O\n\
         X-Status: T\n\nbody three\n\n\
         From dave@example.org Tue Jan  2 18:00:00 2024\nSubject: four\nStatus: R\n\nfour\n",
    )
    .unwrap();
    mailutil(&home, &["create", "#driver.unix/mail/box"]);
    mailutil(&home, &["append", "src", "mail/box"]);
    let out = mailutil(&home, &["prune", "mail/box", "SUBJECT two"]);
    assert!(out.contains("1 message(s) purged"), "{out}");
    let mbox = home.join("mail/box");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&mbox)
            .unwrap();
        f.write_all(
            b"From mta@example.org Wed Jan  3 10:00:00 2024\nSubject: by the MTA\n\nnew\n\n",
        )
        .unwrap();
    }
    let spool = tmp.path().join("spool");
    let mail = home.join("mail");
    let v = import_ok(&spool, &[&mail], &[]);
    assert_eq!(folder(&v, "box")["imported"], 3, "{v:#}");
    assert_eq!(folder(&v, "box")["renumbered"], 1, "{v:#}");
    let (boxes, _) = view(&spool, &["box"]);
    let (uv, next, msgs) = boxes["box"].clone().unwrap();

    // c-client opens the folder read-write: it gives the MTA's message
    // its UID and writes every X-UID.
    mailutil(&home, &["prune", "mail/box", "SUBJECT nomatchxyz"]);
    let (c_uv, c_last, c_uids) = c_client_uids(&mbox);
    assert_eq!((uv, next), (c_uv, c_last + 1));
    assert_eq!(msgs.iter().map(|m| m.uid).collect::<Vec<_>>(), c_uids);
    assert_eq!(c_uids, [1, 3, 4, 5]);

    mailutil(&home, &["create", "#driver.mx/served"]);
    mailutil(&home, &["append", "mail/box", "#driver.mx/served"]);
    same_as_c_client(&msgs, &c_client_served(&home.join("served")));

    // After c-client's rewrite: the same UIDs and bytes, nothing to do.
    let v = import_ok(&spool, &[&mail], &[]);
    let f = folder(&v, "box");
    assert_eq!(
        (f["imported"].as_u64(), f["renumbered"].as_u64()),
        (Some(0), Some(0)),
        "{v:#}"
    );
    assert_eq!(f["already_here"], 4, "{v:#}");
}

/// A folder written by another tool (mboxrd or mboxo quoting, issue 20):
/// `--quoting rd` takes one `>` from every `>…>From ` body line, `--quoting
/// o` only from `>From `; by default lines stay as c-client served them
/// (it never unquotes). Headers are never unquoted.
#[test]
fn uw_quoting_options_for_mboxes_of_other_writers() {
    let tmp = tempfile::tempdir().unwrap();
    let mail = tmp.path().join("mail");
    std::fs::create_dir_all(&mail).unwrap();
    std::fs::write(
        mail.join("box"),
        "From a@b Mon Jan  1 00:00:00 2024\nSubject: q\n>From: a header\n\n>From x\n>>From y\n",
    )
    .unwrap();
    for (quoting, body) in [
        (None, ">From x\n>>From y\n"),
        (Some("rd"), "From x\n>From y\n"),
        (Some("o"), "From x\n>>From y\n"),
    ] {
        let spool = tmp
            .path()
            .join(format!("spool-{}", quoting.unwrap_or("none")));
        let extra: Vec<&str> = quoting.iter().flat_map(|q| ["--quoting", q]).collect();
        import_ok(&spool, &[&mail], &extra);
        let (boxes, _) = view(&spool, &["box"]);
        let msgs = &boxes["box"].as_ref().unwrap().2;
        let want = want(
            1,
            &[],
            1_704_067_200,
            &format!("Subject: q\n>From: a header\n\n{body}"),
        );
        assert_eq!(msgs[0].body, want.body, "--quoting {quoting:?}");
    }
}

/// Issue 20, "safe to run on live mail": an import can run while
/// `deliver` writes to the same account, into INBOX and into the very
/// folder being imported. Nothing acknowledged is lost, nothing is stored
/// twice, and no message shows under a UID the source gave another
/// message (the source's UIDVALIDITY with other messages under its UIDs
/// is what makes a syncing client corrupt its cache): a source message
/// whose UID a delivery took first is reported and left out, never put
/// under another UID in that UIDVALIDITY. Both mailboxes verify clean.
#[test]
fn uw_import_beside_deliver_loses_nothing_and_never_reuses_a_uid() {
    // More than one import batch (4000 messages at most), so deliveries
    // land between the batches' commits.
    const N: u32 = 6000;
    // Above every UIDVALIDITY the clock gives the account here.
    const BIG_UV: u32 = 3_000_000_000;
    // On tmpfs when there is one: creating and removing thousands of
    // files a second is quadratic on an ext4 without a journal (the
    // allocator skips recently deleted inodes one by one; this VM's root
    // filesystem, docs/BENCHMARKS.md), which would time this test, not
    // the import.
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let spool = tmp.path().join("spool");
    let tree = tmp.path().join("mail");
    std::fs::create_dir_all(&tree).unwrap();
    // `Big`: X-UIDs 2, 4, ..., 2N (gaps), last UID 2N + 1.
    let mut text = String::new();
    for i in 1..=N {
        let base = if i == 1 {
            format!("X-IMAPbase: {BIG_UV} {}\n", 2 * N + 1)
        } else {
            String::new()
        };
        text.push_str(&format!(
            "From src@example.org Tue Jan  2 15:04:05 2024\n{base}Subject: big {i}\n\
             Message-ID: <big-{i}@example.org>\nStatus: RO\nX-UID: {}\n\nbody big-{i}\n\n",
            2 * i
        ));
    }
    std::fs::write(tree.join("Big"), text).unwrap();
    // The account exists here already (its INBOX from a delivery).
    let spool_w = spool.clone();
    let deliver = move |mailbox: Option<&str>, token: &str| -> bool {
        let mut c = e2e_tests::reliability::deliver_cmd(&spool_w, USER);
        match mailbox {
            // Without --autocreate: INBOX until the import created it.
            Some(m) => c.args(["-m", m]),
            None => c.arg("--autocreate"),
        };
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        let msg =
            format!("From: a@b\nMessage-ID: <{token}@test>\nSubject: {token}\n\nbody {token}\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(msg.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    };
    assert!(deliver(None, "live-first"));

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let deliver = deliver.clone();
        std::thread::spawn(move || {
            let mut acked = vec!["live-first".to_string()];
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 40 {
                let token = format!("live-{i}");
                if deliver(if i % 2 == 0 { Some("Big") } else { None }, &token) {
                    acked.push(token);
                }
                i += 1;
                // A busy account's pace, not a flood.
                std::thread::sleep(std::time::Duration::from_millis(25));
            }
            acked
        })
    };
    let (o, v) = import(&spool, &[tree.as_path()], &[]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    let f = folder(&v, "Big");
    // Either every source message came over, or the summary says which
    // did not (a UID a delivery took first: reported, or the rest of the
    // folder refused) and the exit status is 1.
    let imported = f["imported"].as_u64().unwrap();
    if imported < N as u64 {
        assert!(!o.status.success(), "{v:#}");
    }
    eprintln!(
        "imported {imported} of {N}, {} deliveries, refused: {}",
        acked.len(),
        f["refused"]
    );

    let (boxes, _) = view(&spool, &["INBOX", "Big"]);
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for name in ["INBOX", "Big"] {
        let (uv, _, msgs) = boxes[name].as_ref().unwrap();
        for m in msgs {
            let body = String::from_utf8_lossy(&m.body);
            let token = body.rsplit("body ").next().unwrap().trim().to_string();
            *seen.entry(token.clone()).or_default() += 1;
            if let Some(i) = token.strip_prefix("big-") {
                let i: u32 = i.parse().unwrap();
                assert_eq!(name, "Big");
                if *uv == BIG_UV {
                    assert_eq!(m.uid, 2 * i, "source message {i} under another UID");
                }
            }
        }
    }
    for t in &acked {
        assert_eq!(seen.get(t), Some(&1), "delivered {t}: {seen:?}");
    }
    let big = seen.keys().filter(|t| t.starts_with("big-")).count() as u64;
    assert!(seen.values().all(|&n| n == 1), "stored twice: {seen:?}");
    assert_eq!(big, imported + f["renumbered"].as_u64().unwrap(), "{f:#}");
    for name in ["INBOX", "Big"] {
        let o = Command::new(bin("idx-inspect"))
            .args(["verify", "-d", USER, "-m", name, "--spool"])
            .arg(&spool)
            .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "verify {name}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}
