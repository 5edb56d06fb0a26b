//! Moving in from Dovecot without clients noticing (issue 20): Debian's
//! Dovecot (`/usr/lib/dovecot/imap`, preauthenticated on stdio, as
//! `nobody`) fills an account through IMAP: folders, a subfolder under a
//! `\Noselect` parent, a modified UTF-7 name, flags, keywords (different
//! per folder), INTERNALDATEs, COPY, expunges in the middle and at the
//! end (UID gaps, UIDNEXT above the last message, a stale uidlist
//! header), subscriptions (one to a folder deleted since), and a file
//! dropped into `new/` without a UID. `idx-admin import --dovecot-maildir`
//! brings it over; then both servers are asked the same through IMAP and
//! must answer the same: every mailbox's UIDVALIDITY, UIDNEXT, MESSAGES,
//! and per message UID, FLAGS (keywords included), INTERNALDATE,
//! RFC822.SIZE and the bytes (RFC 3501 2.3.1.1 UIDs, 2.3.2 flags, 2.3.3
//! INTERNALDATE, 2.3.4 size, 6.3.9 LSUB). A second import changes nothing.
//! Needs Debian's dovecot-imapd (scripts/test.sh installs it).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use e2e_tests::bin;

const DOVECOT_IMAP: &str = "/usr/lib/dovecot/imap";
const USER: &str = "mover";

/// An IMAP session over a child's stdin/stdout.
struct Session {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
    tag: u32,
    /// Dovecot's hierarchy separator (`.` Maildir++, `/` LAYOUT=fs).
    sep: char,
    /// Dovecot's INBOX namespace has the prefix `INBOX.`.
    prefix: bool,
}

/// How the Dovecot account is laid out.
#[derive(Clone, Copy)]
struct Layout {
    /// `LAYOUT=fs` instead of Maildir++.
    fs: bool,
    /// The INBOX namespace prefix `INBOX.` (Courier-style names).
    prefix: bool,
}

/// A parsed response item: an atom, a string (quoted or literal), a list.
#[derive(Clone, Debug, PartialEq)]
enum Item {
    Atom(String),
    Str(Vec<u8>),
    List(Vec<Item>),
}

impl Item {
    fn text(&self) -> String {
        match self {
            Item::Atom(a) => a.clone(),
            Item::Str(s) => String::from_utf8_lossy(s).into_owned(),
            Item::List(_) => panic!("a list where text was expected: {self:?}"),
        }
    }
    fn list(&self) -> &[Item] {
        match self {
            Item::List(l) => l,
            _ => panic!("not a list: {self:?}"),
        }
    }
}

/// Parses one response (literals already inlined as `{n}\r\n` + bytes).
fn parse(b: &[u8]) -> Vec<Item> {
    fn items(b: &[u8], i: &mut usize, close: Option<u8>) -> Vec<Item> {
        let mut out = Vec::new();
        while *i < b.len() {
            match b[*i] {
                b' ' | b'\r' | b'\n' => *i += 1,
                c if Some(c) == close => {
                    *i += 1;
                    return out;
                }
                b'(' => {
                    *i += 1;
                    out.push(Item::List(items(b, i, Some(b')'))));
                }
                b'"' => {
                    *i += 1;
                    let mut s = Vec::new();
                    while b[*i] != b'"' {
                        if b[*i] == b'\\' {
                            *i += 1;
                        }
                        s.push(b[*i]);
                        *i += 1;
                    }
                    *i += 1;
                    out.push(Item::Str(s));
                }
                b'{' => {
                    let end = *i + b[*i..].iter().position(|&c| c == b'}').unwrap();
                    let n: usize = std::str::from_utf8(&b[*i + 1..end])
                        .unwrap()
                        .trim_end_matches('+')
                        .parse()
                        .unwrap();
                    let start = end + 3; // "}\r\n"
                    out.push(Item::Str(b[start..start + n].to_vec()));
                    *i = start + n;
                }
                _ => {
                    let start = *i;
                    // An atom; `BODY[]` keeps its brackets.
                    let mut depth = 0;
                    while *i < b.len() {
                        let c = b[*i];
                        if c == b'[' {
                            depth += 1;
                        } else if c == b']' {
                            depth -= 1;
                        } else if depth == 0 && (c == b' ' || c == b')' || c == b'\r') {
                            break;
                        }
                        *i += 1;
                    }
                    out.push(Item::Atom(
                        String::from_utf8_lossy(&b[start..*i]).into_owned(),
                    ));
                }
            }
        }
        out
    }
    let mut i = 0;
    items(b, &mut i, None)
}

impl Session {
    fn start(mut cmd: Command) -> Session {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn IMAP server");
        let to = child.stdin.take().unwrap();
        let mut from = BufReader::new(child.stdout.take().unwrap());
        let mut greeting = String::new();
        from.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* PREAUTH"), "{greeting}");
        Session {
            child,
            to,
            from,
            tag: 0,
            sep: '/',
            prefix: false,
        }
    }

    /// Dovecot's imap on `home/Maildir`, as nobody, laid out as `how`.
    fn dovecot(home: &Path, how: Layout) -> Session {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "env",
            "-i",
        ])
        .arg(format!("HOME={}", home.display()))
        .args([
            "USER=nobody",
            "PATH=/usr/bin:/bin",
            "TZ=UTC",
            DOVECOT_IMAP,
            "-o",
        ])
        .arg(format!("mail_location={}", location(home, how.fs)));
        if how.prefix {
            cmd.args(["-o", "namespace/inbox/prefix=INBOX."]);
        }
        let mut s = Session::start(cmd);
        s.sep = if how.fs { '/' } else { '.' };
        s.prefix = how.prefix;
        s
    }

    /// A folder name written with `.` between levels, in this server's
    /// form (its separator, its namespace prefix).
    fn name(&self, dotted: &str) -> String {
        let n = dotted.replace('.', &self.sep.to_string());
        if self.prefix && dotted != "INBOX" {
            format!("INBOX{}{n}", self.sep)
        } else {
            n
        }
    }

    /// Ours on `spool`.
    fn ours(spool: &Path) -> Session {
        let mut cmd = Command::new(bin("imapd-check"));
        cmd.args(["serve", "--stdio", "-d", USER, "--spool"])
            .arg(spool);
        Session::start(cmd)
    }

    /// One whole response (a line, with its literals inlined).
    fn response(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let mut line = Vec::new();
            let n = self.from.read_until(b'\n', &mut line).unwrap();
            assert!(n > 0, "server closed the connection");
            out.extend_from_slice(&line);
            let t = line.strip_suffix(b"\r\n").unwrap_or(&line);
            if t.ends_with(b"}")
                && let Some(open) = t.iter().rposition(|&c| c == b'{')
            {
                let n: usize = std::str::from_utf8(&t[open + 1..t.len() - 1])
                    .unwrap()
                    .trim_end_matches('+')
                    .parse()
                    .unwrap();
                let mut lit = vec![0u8; n];
                self.from.read_exact(&mut lit).unwrap();
                out.extend_from_slice(&lit);
                continue;
            }
            return out;
        }
    }

    /// Sends `cmd` (with `lit` as a non-synchronizing literal at its end)
    /// and returns the untagged responses; the tagged one must be OK.
    fn run_with(&mut self, cmd: &str, lit: Option<&[u8]>) -> Vec<Vec<u8>> {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        let mut bytes = format!("{tag} {cmd}").into_bytes();
        if let Some(l) = lit {
            bytes.extend_from_slice(format!(" {{{}+}}\r\n", l.len()).as_bytes());
            bytes.extend_from_slice(l);
        }
        bytes.extend_from_slice(b"\r\n");
        self.to.write_all(&bytes).unwrap();
        self.to.flush().unwrap();
        let mut untagged = Vec::new();
        loop {
            let r = self.response();
            if r.starts_with(format!("{tag} ").as_bytes()) {
                let text = String::from_utf8_lossy(&r);
                assert!(text.starts_with(&format!("{tag} OK")), "{cmd}: {text}");
                return untagged;
            }
            untagged.push(r);
        }
    }

    fn run(&mut self, cmd: &str) -> Vec<Vec<u8>> {
        self.run_with(cmd, None)
    }

    fn logout(mut self) {
        let _ = self.run("LOGOUT");
        let _ = self.child.wait();
    }
}

/// Dovecot's `mail_location` for the Maildir in `home`.
fn location(home: &Path, fs: bool) -> String {
    let layout = if fs { ":LAYOUT=fs" } else { "" };
    format!("maildir:{}/Maildir{layout}", home.display())
}

/// A message with LF line ends (as a client writes it; sent with CRLF).
fn message(i: u32, extra: &str) -> Vec<u8> {
    format!(
        "From: sender{i}@example.org\r\nTo: mover@example.org\r\nSubject: message {i} {extra}\r\n\
         Date: Tue, 2 Jan 2024 10:{:02}:00 +0100\r\nMessage-ID: <m{i}@example.org>\r\n\r\n\
         body of message {i}\r\n{}",
        i % 60,
        "more text\r\n".repeat(i as usize % 7)
    )
    .into_bytes()
}

/// The Dovecot account. Returns nothing: the Maildir is the result.
fn fill(d: &mut Session) {
    for f in [
        "Archive",
        "Archive.2024",
        "Parent.Child",
        "Entw&APw-rfe",
        "Work",
        "Doomed",
    ] {
        let f = d.name(f);
        d.run(&format!("CREATE \"{f}\""));
    }
    // (folder, flags, internal date) per message.
    let mut n = 0;
    let mut append = |d: &mut Session, folder: &str, flags: &str, date: &str| {
        n += 1;
        let folder = d.name(folder);
        d.run_with(
            &format!("APPEND \"{folder}\" ({flags}) \"{date}\""),
            Some(&message(n, &folder)),
        );
    };
    for i in 0..14 {
        let flags = match i % 5 {
            0 => "\\Seen",
            1 => "\\Seen \\Answered $Forwarded",
            2 => "\\Flagged Project",
            3 => "",
            _ => "\\Draft $Label1 Project",
        };
        append(
            d,
            "INBOX",
            flags,
            &format!("{:02}-Mar-2023 08:15:{:02} +0200", i + 1, i),
        );
    }
    for i in 0..6 {
        append(
            d,
            "Archive.2024",
            if i % 2 == 0 { "Private" } else { "\\Seen" },
            "01-Feb-2024 23:59:59 -0500",
        );
    }
    for i in 0..4 {
        append(
            d,
            "Entw&APw-rfe",
            if i == 0 { "\\Draft" } else { "" },
            "15-Jul-2022 12:00:00 +0000",
        );
    }
    append(d, "Parent.Child", "\\Flagged", "29-Feb-2024 00:00:01 +0100");
    for _ in 0..3 {
        append(d, "Work", "Urgent", "10-Oct-2021 10:10:10 +1000");
    }
    // Gaps: expunge in the middle and at the end of INBOX.
    d.run("SELECT INBOX");
    d.run("UID STORE 3,7,14 +FLAGS (\\Deleted)");
    d.run("EXPUNGE");
    // COPY into Work (new UIDs there), then expunge Work's last message.
    let work = d.name("Work");
    d.run(&format!("UID COPY 1,2,5 {work}"));
    d.run(&format!("SELECT {work}"));
    d.run("UID STORE 6 +FLAGS (\\Deleted)");
    d.run("EXPUNGE");
    // A message deleted but not expunged keeps \Deleted.
    d.run("UID STORE 2 +FLAGS (\\Deleted)");
    d.run(&format!("SELECT {}", d.name("Archive.2024")));
    d.run("UID STORE 1 +FLAGS (\\Deleted)");
    d.run("EXPUNGE");
    d.run("UNSELECT");
    for s in [
        "INBOX",
        "Archive.2024",
        "Parent.Child",
        "Entw&APw-rfe",
        "Doomed",
    ] {
        let s = d.name(s);
        d.run(&format!("SUBSCRIBE \"{s}\""));
    }
    let doomed = d.name("Doomed");
    d.run(&format!("DELETE {doomed}"));
}

/// Drops a message into `new/` the way an LDA does, with no UID yet.
fn drop_into_new(home: &Path) {
    let p = home.join("Maildir/new/1700000000.M1P1.testhost");
    std::fs::write(
        &p,
        "From: lda@example.org\nSubject: dropped in\n\nno UID yet\n",
    )
    .unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000))
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
}

/// Seconds since the epoch of an IMAP date-time `dd-Mon-yyyy hh:mm:ss
/// +zzzz`: the RFC 5322 form once the date's dashes are spaces.
fn instant(s: &str) -> i64 {
    let t = s.trim().replacen('-', " ", 2);
    storage::sent_date::parse(&t).unwrap_or_else(|| panic!("bad date-time {s:?}"))
}

/// What a client sees of one mailbox.
#[derive(Debug, PartialEq)]
struct View {
    uidvalidity: u32,
    uidnext: u32,
    messages: u32,
    /// UID -> (sorted flags without \Recent, INTERNALDATE instant, size, bytes).
    uids: BTreeMap<u32, (Vec<String>, i64, u64, Vec<u8>)>,
}

fn status_items(resp: &[Vec<u8>]) -> BTreeMap<String, u32> {
    let r = resp
        .iter()
        .find(|r| r.starts_with(b"* STATUS"))
        .expect("STATUS answer");
    let items = parse(r);
    let list = items.last().unwrap().list();
    list.chunks(2)
        .map(|kv| (kv[0].text(), kv[1].text().parse().unwrap()))
        .collect()
}

fn view(s: &mut Session, name: &str) -> View {
    let st = status_items(&s.run(&format!("STATUS \"{name}\" (UIDVALIDITY UIDNEXT MESSAGES)")));
    s.run(&format!("EXAMINE \"{name}\""));
    let mut uids = BTreeMap::new();
    if st["MESSAGES"] > 0 {
        for r in s.run("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])") {
            let items = parse(&r);
            assert_eq!(items[2].text(), "FETCH", "{}", String::from_utf8_lossy(&r));
            let kv = items[3].list();
            let mut m: BTreeMap<String, Item> = BTreeMap::new();
            for pair in kv.chunks(2) {
                m.insert(pair[0].text().to_ascii_uppercase(), pair[1].clone());
            }
            let mut flags: Vec<String> = m["FLAGS"]
                .list()
                .iter()
                .map(Item::text)
                .filter(|f| !f.eq_ignore_ascii_case("\\Recent"))
                .collect();
            flags.sort();
            let body = match &m["BODY[]"] {
                Item::Str(b) => b.clone(),
                other => panic!("BODY[] {other:?}"),
            };
            uids.insert(
                m["UID"].text().parse().unwrap(),
                (
                    flags,
                    instant(&m["INTERNALDATE"].text()),
                    m["RFC822.SIZE"].text().parse().unwrap(),
                    body,
                ),
            );
        }
    }
    s.run("UNSELECT");
    View {
        uidvalidity: st["UIDVALIDITY"],
        uidnext: st["UIDNEXT"],
        messages: st["MESSAGES"],
        uids,
    }
}

/// Selectable mailboxes (`LIST`) or subscriptions (`LSUB`), with the
/// server's separator replaced by `/`.
fn names(s: &mut Session, cmd: &str) -> Vec<String> {
    let mut out: Vec<String> = s
        .run(&format!("{cmd} \"\" \"*\""))
        .iter()
        .map(|r| parse(r))
        .filter(|i| {
            !i[2]
                .list()
                .iter()
                .any(|a| a.text().eq_ignore_ascii_case("\\Noselect") && cmd == "LIST")
        })
        .map(|i| {
            let sep = i[3].text();
            i[4].text().replace(sep.as_str(), "/")
        })
        .collect();
    out.sort();
    out
}

fn import(spool: &Path, maildir: &Path, how: Layout) -> serde_json::Value {
    let mut cmd = Command::new(bin("idx-admin"));
    cmd.args(["import", "--json", "--layout"])
        .arg(if how.fs { "fs" } else { "maildir++" })
        .arg("--dovecot-prefix")
        .arg(if how.prefix { "INBOX." } else { "" })
        .arg("--dovecot-maildir")
        .arg(maildir);
    idx_admin(cmd, spool)
}

/// Runs an `idx-admin` command on USER of `spool`, which must succeed;
/// returns its JSON summary.
fn idx_admin(mut cmd: Command, spool: &Path) -> serde_json::Value {
    let o = cmd
        .arg("--spool")
        .arg(spool)
        .args(["-d", USER])
        .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A temporary directory with Dovecot's home (writable by nobody, who
/// runs Dovecot) and the path of our spool.
fn dovecot_home() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    e2e_tests::set_mode(tmp.path(), 0o711);
    let home = tmp.path().join("home");
    e2e_tests::mkdir_mode(&home, 0o777);
    let spool = tmp.path().join("spool");
    (tmp, home, spool)
}

/// Maildir++ (Dovecot's default layout).
#[test]
fn dovecot_account_imported_looks_the_same_through_imap() {
    imported_looks_the_same(Layout {
        fs: false,
        prefix: false,
    });
}

/// `LAYOUT=fs`: folders as nested directories, `/` as separator.
#[test]
fn dovecot_fs_layout_account_imported_looks_the_same_through_imap() {
    imported_looks_the_same(Layout {
        fs: true,
        prefix: false,
    });
}

/// Dovecot's INBOX namespace with the prefix `INBOX.`: every folder is
/// `INBOX.x` to clients, `INBOX/x` here.
#[test]
fn dovecot_prefixed_namespace_imported_looks_the_same_through_imap() {
    imported_looks_the_same(Layout {
        fs: false,
        prefix: true,
    });
}

fn imported_looks_the_same(how: Layout) {
    let (_tmp, home, spool) = dovecot_home();

    let mut d = Session::dovecot(&home, how);
    fill(&mut d);
    d.logout();
    drop_into_new(&home);

    let first = import(&spool, &home.join("Maildir"), how);
    let inbox = first["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "INBOX")
        .unwrap();
    assert_eq!(
        inbox["renumbered"].as_u64(),
        Some(1),
        "the dropped-in file: {inbox}"
    );

    // Ours first: Dovecot gives the dropped-in file its UID when it looks.
    let mut o = Session::ours(&spool);
    let mut d = Session::dovecot(&home, how);
    let (dl, ours_views) = assert_same(&mut o, &mut d);
    for n in ["Parent.Child", "Entw&APw-rfe"] {
        let ours = d.name(n).replace(d.sep, "/");
        assert!(dl.contains(&ours), "{ours} in {dl:?}");
    }
    // The gaps are real: INBOX lost 3, 7 and 14 (its last), Work its last.
    let inbox = &ours_views["INBOX"];
    assert!(!inbox.uids.contains_key(&3) && !inbox.uids.contains_key(&14));
    assert!(inbox.uidnext > *inbox.uids.keys().max().unwrap() + 1 || inbox.uids.contains_key(&15));
    let subs = names(&mut d, "LSUB");
    let doomed = d.name("Doomed").replace(d.sep, "/");
    assert!(subs.contains(&doomed), "{subs:?}");
    d.logout();
    o.logout();

    // A second run imports nothing more (Dovecot has meanwhile listed the
    // dropped-in file under the UID we gave it).
    let second = import(&spool, &home.join("Maildir"), how);
    for f in second["folders"].as_array().unwrap() {
        assert_eq!(f["imported"].as_u64(), Some(0), "{f}");
        assert_eq!(f["renumbered"].as_u64(), Some(0), "{f}");
    }
}

/// Both servers show the same account: the same selectable mailboxes
/// (names with `/` between levels), and for each the same UIDVALIDITY,
/// UIDNEXT, MESSAGES, and per UID the same FLAGS (keywords included),
/// INTERNALDATE, RFC822.SIZE and bytes; the same subscriptions (RFC 3501
/// 2.3.1.1, 2.3.2, 2.3.3, 2.3.4, 6.3.9). `a` is asked first. Returns the
/// mailboxes and `a`'s views.
fn assert_same(a: &mut Session, b: &mut Session) -> (Vec<String>, BTreeMap<String, View>) {
    let la = names(a, "LIST");
    assert_eq!(la, names(b, "LIST"), "mailboxes");
    let mut views = BTreeMap::new();
    for name in &la {
        views.insert(
            name.clone(),
            view(a, &name.replace('/', &a.sep.to_string())),
        );
    }
    for name in &la {
        let bv = view(b, &name.replace('/', &b.sep.to_string()));
        let av = &views[name];
        assert_eq!(
            (av.uidvalidity, av.uidnext, av.messages),
            (bv.uidvalidity, bv.uidnext, bv.messages),
            "{name}: UIDVALIDITY, UIDNEXT, MESSAGES"
        );
        assert_eq!(
            av.uids.keys().collect::<Vec<_>>(),
            bv.uids.keys().collect::<Vec<_>>(),
            "{name}: UIDs"
        );
        for (uid, bm) in &bv.uids {
            let am = &av.uids[uid];
            assert_eq!(am.0, bm.0, "{name} UID {uid}: FLAGS");
            assert_eq!(am.1, bm.1, "{name} UID {uid}: INTERNALDATE");
            assert_eq!(am.2, bm.2, "{name} UID {uid}: RFC822.SIZE");
            assert!(am.3 == bm.3, "{name} UID {uid}: bytes differ");
        }
    }
    assert_eq!(names(a, "LSUB"), names(b, "LSUB"), "subscriptions");
    (la, views)
}

/// An mbsync configuration: every far mailbox of `tunnel` to `local`, with
/// its sync state; returns mbsync's output, which must succeed.
fn mbsync(dir: &Path, tunnel: &str, local: &Path) -> String {
    let rc = dir.join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount t\nTunnel \"{tunnel}\"\n\nIMAPStore t-far\nAccount t\n\n\
             MaildirStore t-near\nPath {}/\nInbox {}/INBOX\nSubFolders Verbatim\n\n\
             Channel t\nFar :t-far:\nNear :t-near:\nPatterns *\nCreate Both\nExpunge Both\nSyncState *\n",
            local.display(),
            local.display()
        ),
    )
    .unwrap();
    let out = e2e_tests::run(
        Command::new("mbsync").arg("-c").arg(&rc).args(["-a", "-V"]),
        std::time::Duration::from_secs(120),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(out.status.success(), "mbsync failed: {text}");
    text
}

/// The local Maildir as mbsync left it, without its own state files.
fn tree(dir: &Path) -> BTreeMap<std::path::PathBuf, String> {
    let mut t = e2e_tests::reliability::tree_snapshot(dir);
    t.retain(|p, _| !p.ends_with(".mbsyncstate"));
    t
}

/// Generation and last UID of every mailbox of the user here.
fn generations(spool: &Path) -> Vec<(String, u64, u32)> {
    let s = storage::Store::open(spool, storage::Options::default()).unwrap();
    let u = storage::UserName::new(USER).unwrap();
    s.list_mailboxes(&u)
        .unwrap()
        .into_iter()
        .map(|n| {
            let h = s.open_mailbox(&u, &n).unwrap().header().unwrap();
            (n.to_string(), h.generation, h.last_uid)
        })
        .collect()
}

/// A real client does not notice (issue 20): mbsync syncs the account
/// from Dovecot into a local Maildir with its sync state (UIDVALIDITY and
/// UID pairs per folder), the account is imported, and mbsync then syncs
/// the same channel against this server: it accepts every UIDVALIDITY
/// (a changed one is an error for mbsync), and neither side changes: no
/// local file added, renamed or removed, no mailbox here written.
#[test]
fn mbsync_synced_from_dovecot_finds_nothing_to_do_here() {
    let (tmp, home, spool) = dovecot_home();
    let local = tmp.path().join("local");
    std::fs::create_dir(&local).unwrap();

    let mut d = Session::dovecot(
        &home,
        Layout {
            fs: false,
            prefix: false,
        },
    );
    fill(&mut d);
    d.logout();
    drop_into_new(&home);
    let dovecot_tunnel = format!(
        "setpriv --reuid=65534 --regid=65534 --clear-groups env -i HOME={h} USER=nobody \
         PATH=/usr/bin:/bin {DOVECOT_IMAP} -o mail_location={}",
        location(&home, false),
        h = home.display()
    );
    mbsync(tmp.path(), &dovecot_tunnel, &local);
    // A second sync against Dovecot settles anything the first left.
    mbsync(tmp.path(), &dovecot_tunnel, &local);
    let synced = tree(&local);
    assert!(
        synced
            .keys()
            .filter(
                |k| k.to_string_lossy().contains("/cur/") || k.to_string_lossy().contains("/new/")
            )
            .count()
            >= 25,
        "{:?}",
        synced.keys()
    );

    import(
        &spool,
        &home.join("Maildir"),
        Layout {
            fs: false,
            prefix: false,
        },
    );
    let before = generations(&spool);
    let ours_tunnel = format!(
        "{} serve --stdio -d {USER} --spool {}",
        bin("imapd-check").display(),
        spool.display()
    );
    let out = mbsync(tmp.path(), &ours_tunnel, &local);
    let after_files = tree(&local);
    assert_eq!(after_files, synced, "local files changed\n{out}");
    assert_eq!(generations(&spool), before, "mailboxes here written\n{out}");
}

/// `idx-admin export --dovecot-maildir DIR -d USER` into `dir` (which it
/// creates); returns its JSON summary. It must succeed.
fn export(spool: &Path, dir: &Path) -> serde_json::Value {
    let mut cmd = Command::new(bin("idx-admin"));
    cmd.args(["export", "--json", "--dovecot-maildir"]).arg(dir);
    idx_admin(cmd, spool)
}

/// Dovecot runs as nobody: the exported tree becomes its.
fn give_to_nobody(dir: &Path) {
    let st = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(dir)
        .status()
        .unwrap();
    assert!(st.success());
}

const MAILDIR_PLUS_PLUS: Layout = Layout {
    fs: false,
    prefix: false,
};

/// An account here that holds what Dovecot made (imported) and what was
/// made here through our IMAP: a new folder tree whose parent is no
/// mailbox (`\Noselect`), a non-ASCII name (modified UTF-7), messages
/// with flags and keywords Dovecot never saw, flag changes and an
/// expunge.
fn account_here(home: &Path, spool: &Path) {
    let mut d = Session::dovecot(home, MAILDIR_PLUS_PLUS);
    fill(&mut d);
    d.logout();
    drop_into_new(home);
    import(spool, &home.join("Maildir"), MAILDIR_PLUS_PLUS);
    let mut o = Session::ours(spool);
    o.run("CREATE \"Caf&AOk-/Neu\"");
    o.run("SUBSCRIBE \"Caf&AOk-/Neu\"");
    for (i, flags) in ["\\Seen Custom", "$Junk \\Answered", "", "\\Deleted Custom"]
        .iter()
        .enumerate()
    {
        o.run_with(
            &format!(
                "APPEND \"Caf&AOk-/Neu\" ({flags}) \"0{}-Aug-2025 13:14:15 +0200\"",
                i + 1
            ),
            Some(&message(100 + i as u32, "made here")),
        );
    }
    o.run_with(
        "APPEND INBOX (\\Flagged) \"24-Dec-2025 18:00:00 +0000\"",
        Some(b"Subject: here\r\n\r\nline one\r\nline two\r\n"),
    );
    o.run("SELECT INBOX");
    o.run("UID STORE 1 +FLAGS (\\Flagged Other)");
    o.run("UID STORE 2 -FLAGS (\\Seen)");
    o.run("UID STORE 4 +FLAGS (\\Deleted)");
    o.run("UID EXPUNGE 4");
    o.logout();
}

/// Moving out (issue 20): the account exported to Dovecot Maildir++ looks
/// the same through Dovecot's IMAP as through ours: every mailbox (a
/// `\Noselect` parent stays one), UIDVALIDITY, UIDNEXT, and per message
/// UID, FLAGS with keywords, INTERNALDATE, RFC822.SIZE and bytes, and the
/// subscriptions (RFC 3501 2.3.1.1, 2.3.2, 2.3.3, 2.3.4, 6.3.9).
#[test]
fn exported_account_looks_the_same_in_dovecot() {
    let (tmp, home, spool) = dovecot_home();
    account_here(&home, &spool);
    let out_home = tmp.path().join("out");
    e2e_tests::mkdir_mode(&out_home, 0o777);
    let summary = export(&spool, &out_home.join("Maildir"));
    assert!(
        summary["folders"].as_array().unwrap().len() >= 6,
        "{summary}"
    );
    let caf = out_home.join("Maildir/.Caf&AOk-.Neu");
    assert!(caf.join("dovecot-uidlist").is_file());
    assert!(caf.join("maildirfolder").is_file());
    assert!(
        !out_home.join("Maildir/.Caf&AOk-").exists(),
        "a parent that is no mailbox has no directory"
    );
    give_to_nobody(&out_home);
    let mut o = Session::ours(&spool);
    let mut d = Session::dovecot(&out_home, MAILDIR_PLUS_PLUS);
    let (list, _) = assert_same(&mut d, &mut o);
    assert!(list.contains(&"Caf&AOk-/Neu".to_string()), "{list:?}");
    // Dovecot shows the parent as \Noselect, as its own such parents.
    let parent = d
        .run("LIST \"\" \"Caf&AOk-\"")
        .iter()
        .map(|r| String::from_utf8_lossy(r).into_owned())
        .collect::<String>();
    assert!(
        parent.contains("\\Noselect") || parent.contains("\\NonExistent"),
        "{parent}"
    );
    d.logout();
    o.logout();
}

/// Every field of every record and header that an import keeps, per
/// mailbox: UIDVALIDITY, last UID; per message UID, system flags, keyword
/// names, INTERNALDATE, sent date, size, header size, CRC32.
type Fields = BTreeMap<
    String,
    (
        u32,
        u32,
        Vec<(u32, u32, Vec<String>, i64, i64, u64, u32, u32)>,
    ),
>;

fn fields(spool: &Path) -> Fields {
    let s = storage::Store::open(spool, storage::Options::default()).unwrap();
    let u = storage::UserName::new(USER).unwrap();
    let mut out = BTreeMap::new();
    for n in s.list_mailboxes(&u).unwrap() {
        let mut m = s.open_mailbox(&u, &n).unwrap();
        let snap = m.snapshot().unwrap();
        let recs = snap
            .records
            .iter()
            .filter(|r| !r.is_expunged())
            .map(|r| {
                let kw: Vec<String> = r
                    .keywords
                    .iter()
                    .map(|k| snap.meta.keywords[k].clone())
                    .collect();
                (
                    r.uid,
                    r.flags.intersect(storage::Flags::SYSTEM).0,
                    kw,
                    r.internal_date,
                    r.sent_date,
                    r.size,
                    r.header_size,
                    r.message_crc,
                )
            })
            .collect();
        out.insert(
            n.to_string(),
            (snap.header.uidvalidity, snap.header.last_uid, recs),
        );
    }
    out
}

/// The round trip (issue 20): import from Dovecot, work here, export,
/// import the export into a fresh spool: every mailbox is identical,
/// field by field in the store and through IMAP, and so are the
/// subscriptions.
#[test]
fn import_export_import_round_trip_is_identical() {
    let (tmp, home, spool) = dovecot_home();
    account_here(&home, &spool);
    let out = tmp.path().join("exported");
    export(&spool, &out);
    let again = tmp.path().join("spool2");
    let report = import(&again, &out, MAILDIR_PLUS_PLUS);
    for f in report["folders"].as_array().unwrap() {
        assert_eq!(f["renumbered"].as_u64(), Some(0), "{f}");
        assert_eq!(f["kept_uids"].as_bool(), Some(true), "{f}");
    }
    assert_eq!(fields(&again), fields(&spool), "stored fields");
    let mut a = Session::ours(&spool);
    let mut b = Session::ours(&again);
    assert_same(&mut a, &mut b);
    a.logout();
    b.logout();
}

/// A re-run picks up what changed in Dovecot since the first run
/// (OPERATIONS.md §4a): new messages under their UIDs, flag and keyword
/// changes on messages already imported (one commit per mailbox), and
/// messages expunged in Dovecot are expunged here; afterwards both
/// servers show the same account again.
#[test]
fn rerun_applies_new_mail_flag_changes_and_expunges_from_dovecot() {
    let (_tmp, home, spool) = dovecot_home();
    let mut d = Session::dovecot(&home, MAILDIR_PLUS_PLUS);
    fill(&mut d);
    d.logout();
    import(&spool, &home.join("Maildir"), MAILDIR_PLUS_PLUS);

    let mut d = Session::dovecot(&home, MAILDIR_PLUS_PLUS);
    d.run("SELECT INBOX");
    d.run("UID STORE 1 +FLAGS (\\Flagged Fresh)");
    d.run("UID STORE 2 -FLAGS (\\Seen $Forwarded)");
    d.run("UID STORE 5 FLAGS ()");
    d.run("UID STORE 6 +FLAGS (\\Deleted)");
    d.run("UID EXPUNGE 6");
    d.run_with(
        "APPEND INBOX (\\Seen Later) \"01-Jan-2026 00:00:00 +0000\"",
        Some(&message(500, "after the first run")),
    );
    d.run("SELECT Work");
    d.run("UID STORE 1:* +FLAGS (\\Answered)");
    d.logout();

    let second = import(&spool, &home.join("Maildir"), MAILDIR_PLUS_PLUS);
    let inbox = second["folders"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "INBOX")
        .unwrap()
        .clone();
    assert_eq!(inbox["imported"].as_u64(), Some(1), "{inbox}");
    assert_eq!(inbox["flags_updated"].as_u64(), Some(3), "{inbox}");
    assert_eq!(inbox["expunged"].as_u64(), Some(1), "{inbox}");
    let mut o = Session::ours(&spool);
    let mut d = Session::dovecot(&home, MAILDIR_PLUS_PLUS);
    assert_same(&mut o, &mut d);
    o.logout();
    d.logout();

    // And a third run changes nothing.
    let before = generations(&spool);
    let third = import(&spool, &home.join("Maildir"), MAILDIR_PLUS_PLUS);
    for f in third["folders"].as_array().unwrap() {
        assert_eq!(f["flags_updated"].as_u64(), Some(0), "{f}");
        assert_eq!(f["expunged"].as_u64(), Some(0), "{f}");
    }
    assert_eq!(generations(&spool), before);
}

/// Every mailbox of USER here verifies without a problem (PROTOCOL.md
/// §3a: a killed import leaves every mailbox consistent); with
/// `no_debris`, without a warning either (no crash debris left).
fn assert_all_verify_clean(spool: &Path, ctx: &str, no_debris: bool) {
    let s = storage::Store::open(spool, storage::Options::default()).unwrap();
    let u = storage::UserName::new(USER).unwrap();
    for n in s.list_mailboxes(&u).unwrap() {
        let report = storage::verify::verify_path(
            &s.mailbox_path(&u, &n),
            std::time::Duration::from_secs(5),
        )
        .unwrap();
        let bad: Vec<_> = report
            .findings
            .iter()
            .filter(|f| no_debris || f.severity == storage::verify::Severity::Problem)
            .collect();
        assert!(bad.is_empty(), "{ctx}: {n}: {bad:?}");
    }
}

/// An import killed part way (PROTOCOL.md §3a batch durability: after a
/// batch's syncfs, inside its commit, after its index flush) leaves every
/// mailbox verify-clean, and running it again finishes the job: Dovecot
/// and this server then show the same account.
#[test]
fn killed_import_resumes_to_the_same_account() {
    for point in [
        "import.after_batch_sync",
        "append.after_records",
        "append.after_header_fsync",
    ] {
        let (_tmp, home, spool) = dovecot_home();
        let mut d = Session::dovecot(&home, MAILDIR_PLUS_PLUS);
        fill(&mut d);
        d.logout();
        let o = Command::new(bin("idx-admin"))
            .args(["import", "--dovecot-maildir"])
            .arg(home.join("Maildir"))
            .arg("--spool")
            .arg(&spool)
            .args(["-d", USER])
            .env("MAILSTORE_CONFIG", "/nonexistent-mailstore-test.conf")
            .env(storage::internals::fault::ENV, format!("{point}=kill"))
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(o.status.signal(), Some(9), "{point}: not killed: {o:?}");
        assert_all_verify_clean(&spool, point, false);
        import(&spool, &home.join("Maildir"), MAILDIR_PLUS_PLUS);
        assert_all_verify_clean(&spool, &format!("{point}, run again"), true);
        let mut o = Session::ours(&spool);
        let mut d = Session::dovecot(&home, MAILDIR_PLUS_PLUS);
        assert_same(&mut o, &mut d);
        o.logout();
        d.logout();
    }
}
