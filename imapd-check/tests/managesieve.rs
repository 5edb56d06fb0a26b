//! ManageSieve (RFC 5804) through the real `imapd-check serve` process
//! over TCP: every command, the response codes, literals both ways, the
//! bounds and quotas, and one real client (`sieve-connect`, over
//! STARTTLS) whose uploaded and activated script `deliver` then applies.
//! Needs openssl and sieve-connect (scripts/test.sh installs them).

mod imap_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use imap_common::{IMAPD, Reaper, make_cert, seed_store, target_dir, write_passwd};

const PASSWORD: &str = "sieve-pw";

/// `imapd-check serve` with only a ManageSieve listener on a free port.
struct Server {
    _process: Reaper,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    /// `config`: extra `imapd.*` lines; `tls`: a certificate for STARTTLS.
    fn start(config: &str, tls: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        seed_store(&spool, "alice");
        let passwd = write_passwd(dir.path(), "alice", PASSWORD);
        let conf = dir.path().join("mailstore.conf");
        std::fs::write(&conf, config).unwrap();
        let mut cmd = Command::new(IMAPD);
        cmd.args(["serve", "--managesieve-listen", "127.0.0.1:0", "--passwd"])
            .arg(&passwd)
            .arg("--spool")
            .arg(&spool)
            .arg("--config")
            .arg(&conf);
        if tls {
            let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
            make_cert(&cert, &key, "localhost");
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = cmd.stderr(Stdio::piped()).spawn().expect("spawn serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let process = Reaper(child);
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("ManageSieve"), "{line}");
        let port = line.trim().rsplit(':').next().unwrap().parse().unwrap();
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Server {
            _process: process,
            port,
            dir,
        }
    }

    fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    fn sieve_dir(&self) -> PathBuf {
        self.spool().join("alice/.sieve")
    }

    fn connect(&self) -> Client {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut c = Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        };
        let (caps, ok) = c.response();
        assert!(ok.starts_with("OK"), "greeting {ok}");
        assert!(caps.iter().any(|l| l.starts_with("\"IMPLEMENTATION\"")));
        c
    }

    fn login(&self) -> Client {
        let mut c = self.connect();
        let (_, r) = c.cmd(&format!(
            "AUTHENTICATE \"PLAIN\" \"{}\"",
            plain("alice", PASSWORD)
        ));
        assert_eq!(r, "OK \"Logged in\"");
        c
    }
}

/// base64 of the SASL PLAIN message for `user` and `pass` (RFC 4616).
fn plain(user: &str, pass: &str) -> String {
    let out = Command::new("base64")
        .arg("-w0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut p| {
            p.stdin
                .take()
                .unwrap()
                .write_all(format!("\0{user}\0{pass}").as_bytes())?;
            p.wait_with_output()
        })
        .unwrap();
    String::from_utf8(out.stdout).unwrap()
}

struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn send(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
    }

    /// One line (CRLF removed); a line ending in `{n}` has its n octets
    /// appended.
    fn line(&mut self) -> String {
        let mut l = Vec::new();
        self.r.read_until(b'\n', &mut l).unwrap();
        assert!(l.ends_with(b"\r\n"), "line without CRLF: {l:?}");
        l.truncate(l.len() - 2);
        let s = String::from_utf8(l).unwrap();
        if let Some(n) = s
            .strip_suffix('}')
            .and_then(|x| x.rsplit_once('{'))
            .and_then(|(_, n)| n.parse::<usize>().ok())
        {
            let mut data = vec![0; n];
            self.r.read_exact(&mut data).unwrap();
            return format!("{s}\r\n{}", String::from_utf8(data).unwrap()) + &self.line();
        }
        s
    }

    /// Lines up to the final OK / NO / BYE: (data lines, final line).
    fn response(&mut self) -> (Vec<String>, String) {
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if ["OK", "NO", "BYE"]
                .iter()
                .any(|k| l == *k || l.starts_with(&format!("{k} ")))
            {
                return (lines, l);
            }
            lines.push(l);
        }
    }

    fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.send(format!("{c}\r\n").as_bytes());
        self.response()
    }

    /// Sends a command whose last argument is `script` as a literal of
    /// the given form (`+` for `{n+}`).
    fn with_literal(&mut self, prefix: &str, script: &str, plus: &str) -> String {
        self.send(format!("{prefix} {{{}{plus}}}\r\n{script}\r\n", script.len()).as_bytes());
        self.response().1
    }

    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0) | Err(_))
    }
}

const GOOD: &str = "require [\"fileinto\", \"mailbox\"];\r\nif header :contains \"subject\" \"report\" {\r\n  fileinto :create \"Reports\";\r\n}\r\n";

/// RFC 5804 1.7 and 2.4: the greeting is the capability list; SIEVE
/// names the sieve crate's extensions, NOTIFY is absent (no enotify),
/// STARTTLS only when TLS is configured, OWNER once authenticated.
#[test]
fn rfc5804_1_7_capabilities() {
    let s = Server::start("", false);
    let mut c = s.connect();
    let (caps, ok) = c.cmd("CAPABILITY");
    assert!(ok.starts_with("OK"));
    let find = |name: &str| caps.iter().find(|l| l.starts_with(&format!("\"{name}\"")));
    assert_eq!(find("SASL").unwrap(), "\"SASL\" \"PLAIN\"");
    assert_eq!(find("VERSION").unwrap(), "\"VERSION\" \"1.0\"");
    assert_eq!(find("MAXREDIRECTS").unwrap(), "\"MAXREDIRECTS\" \"4\"");
    let sieve = find("SIEVE").unwrap();
    for ext in ["fileinto", "vacation", "imap4flags", "include", "regex"] {
        assert!(sieve.split([' ', '"']).any(|e| e == ext), "{sieve}");
    }
    assert!(find("NOTIFY").is_none());
    assert!(find("STARTTLS").is_none(), "no TLS configured");
    assert!(find("OWNER").is_none());
    assert!(find("UNAUTHENTICATE").is_some());
    let mut c = s.login();
    let (caps, _) = c.cmd("CAPABILITY");
    assert!(
        caps.contains(&"\"OWNER\" \"alice\"".to_string()),
        "{caps:?}"
    );

    let t = Server::start("", true);
    let mut c = t.connect();
    let (caps, _) = c.cmd("CAPABILITY");
    assert!(caps.contains(&"\"STARTTLS\"".to_string()), "{caps:?}");
}

/// RFC 5804 2.1: AUTHENTICATE "PLAIN" with an initial response, and
/// with the server's `""` challenge answered by a quoted string and by a
/// literal; `"*"` cancels; a wrong password is NO; commands of the
/// authenticated state are refused before.
#[test]
fn rfc5804_2_1_authenticate_plain() {
    let s = Server::start("", false);
    let mut c = s.connect();
    assert!(c.cmd("LISTSCRIPTS").1.starts_with("NO"));
    let (_, r) = c.cmd(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        plain("alice", "wrong")
    ));
    assert!(r.starts_with("NO"), "{r}");
    assert!(c.cmd("AUTHENTICATE \"DIGEST-MD5\"").1.starts_with("NO"));
    c.send(b"AUTHENTICATE \"PLAIN\"\r\n");
    assert_eq!(c.line(), "\"\"");
    c.send(b"\"*\"\r\n");
    assert!(c.response().1.starts_with("NO"));
    c.send(b"AUTHENTICATE \"PLAIN\"\r\n");
    assert_eq!(c.line(), "\"\"");
    let b64 = plain("alice", PASSWORD);
    c.send(format!("{{{}+}}\r\n{b64}\r\n", b64.len()).as_bytes());
    assert_eq!(c.response().1, "OK \"Logged in\"");
    assert!(c.cmd("LISTSCRIPTS").1.starts_with("OK"));
    assert!(c.cmd("AUTHENTICATE \"PLAIN\" \"\"").1.starts_with("NO"));

    let mut d = s.connect();
    d.send(b"AUTHENTICATE \"PLAIN\"\r\n");
    assert_eq!(d.line(), "\"\"");
    d.send(format!("\"{b64}\"\r\n").as_bytes());
    assert_eq!(d.response().1, "OK \"Logged in\"");
}

/// RFC 5804 2.1 and 2.2: outside a trusted network and without TLS the
/// SASL list is empty and AUTHENTICATE is NO (ENCRYPT-NEEDED).
#[test]
fn rfc5804_2_1_encrypt_needed_without_tls() {
    let s = Server::start("imapd.trusted_networks = none\n", true);
    let mut c = s.connect();
    let (caps, _) = c.cmd("CAPABILITY");
    assert!(caps.contains(&"\"SASL\" \"\"".to_string()), "{caps:?}");
    let (_, r) = c.cmd(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        plain("alice", PASSWORD)
    ));
    assert!(r.starts_with("NO (ENCRYPT-NEEDED)"), "{r}");
}

/// RFC 5804 2.6 and 2.9: PUTSCRIPT with `{n+}` and `{n}` literals and a
/// quoted string; GETSCRIPT gives the octets back as a literal; a script
/// that does not compile is NO with line and column, and is not stored.
#[test]
fn rfc5804_2_6_putscript_validates_and_getscript() {
    let s = Server::start("", false);
    let mut c = s.login();
    assert_eq!(
        c.with_literal("PUTSCRIPT \"main\"", GOOD, "+"),
        "OK \"Script stored\""
    );
    assert_eq!(
        c.with_literal("PUTSCRIPT \"sync\"", GOOD, ""),
        "OK \"Script stored\""
    );
    assert_eq!(c.cmd("PUTSCRIPT \"q\" \"keep;\"").1, "OK \"Script stored\"");
    let (data, r) = c.cmd("GETSCRIPT \"main\"");
    assert!(r.starts_with("OK"));
    assert_eq!(data, vec![format!("{{{}}}\r\n{GOOD}", GOOD.len())]);
    assert_eq!(
        std::fs::read_to_string(s.sieve_dir().join("main.sieve")).unwrap(),
        GOOD
    );
    let bad =
        "require \"fileinto\";\r\nif header :is \"subject\" \"x\" {\r\n  frobnicate;\r\n}\r\n";
    let r = c.with_literal("PUTSCRIPT \"bad\"", bad, "+");
    assert!(r.starts_with("NO") && r.contains(":3:3:"), "{r}");
    assert!(!s.sieve_dir().join("bad.sieve").exists());
    assert!(c.cmd("GETSCRIPT \"bad\"").1.starts_with("NO (NONEXISTENT)"));
    assert!(c.cmd("PUTSCRIPT \".hidden\" \"keep;\"").1.starts_with("NO"));
    assert!(
        c.cmd("PUTSCRIPT \"a\u{2028}b\" \"keep;\"")
            .1
            .starts_with("NO")
    );
    assert!(c.cmd("PUTSCRIPT \"a/b\" \"keep;\"").1.starts_with("NO"));
    // Replacing keeps one file, with the new content.
    assert!(c.cmd("PUTSCRIPT \"q\" \"discard;\"").1.starts_with("OK"));
    assert_eq!(c.cmd("GETSCRIPT \"q\"").0, vec!["{8}\r\ndiscard;"]);
}

/// RFC 5804 2.12: CHECKSCRIPT validates without storing.
#[test]
fn rfc5804_2_12_checkscript() {
    let s = Server::start("", false);
    let mut c = s.login();
    assert!(c.with_literal("CHECKSCRIPT", GOOD, "+").starts_with("OK"));
    let r = c.cmd("CHECKSCRIPT \"if true {\"").1;
    assert!(r.starts_with("NO \"script:1:"), "{r}");
    assert!(c.cmd("LISTSCRIPTS").0.is_empty());
}

/// RFC 5804 1.3, 2.6 and 2.12: a script that compiles with warnings is
/// stored (PUTSCRIPT) or valid (CHECKSCRIPT) with `OK (WARNINGS)` and the
/// warnings as `line:col: text`, one line each; a script without any gets
/// a plain OK. A personal `include` of a script the user does not have is
/// a warning at upload (as Pigeonhole's), not an error.
#[test]
fn rfc5804_1_3_warnings_on_putscript_and_checkscript() {
    let s = Server::start("", false);
    let mut c = s.login();
    let flagged = "require \"imap4flags\";\r\naddflag \"\\\\Bogus\";\r\n";
    let r = c.with_literal("PUTSCRIPT \"w\"", flagged, "+");
    assert!(
        r.starts_with("OK (WARNINGS) \"2:1: IMAP flag '\\\\Bogus' specified for the addflag command is invalid"),
        "{r}"
    );
    assert!(s.sieve_dir().join("w.sieve").exists());
    let two = "require [\"date\", \"imap4flags\"];\r\nif exists \"a b\" { keep; }\r\n\
               if currentdate :zone \"CET\" \"year\" \"2020\" { setflag \"x(\"; }\r\n";
    let r = c.with_literal("CHECKSCRIPT", two, "+");
    let text = r
        .strip_prefix("OK (WARNINGS) \"")
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("one quoted line: {r}"));
    let lines: Vec<&str> = text.split("; ").collect();
    assert_eq!(lines.len(), 3, "{r}");
    assert!(
        lines[0].starts_with("2:11: specified header field name 'a b'"),
        "{r}"
    );
    assert!(
        lines[1].starts_with("3:22: specified :zone argument 'CET'"),
        "{r}"
    );
    assert!(lines[2].starts_with("3:44: IMAP flag 'x('"), "{r}");
    // Many: still one quoted line, cut.
    let many = format!(
        "require \"imap4flags\";\r\n{}",
        "addflag \"\\\\Nope\";\r\n".repeat(50)
    );
    let r = c.with_literal("CHECKSCRIPT", &many, "+");
    assert!(
        r.starts_with("OK (WARNINGS) \"2:1: ") && r.ends_with(" ...\""),
        "{r}"
    );
    assert!(!r.contains('\n') && r.len() < 1100, "{r}");
    assert_eq!(c.cmd("CHECKSCRIPT \"keep;\"").1, "OK \"Script is valid\"");
    // include: a missing personal script warns, an optional or global one
    // does not, nor the script including itself; once there, no warning.
    let inc = "require \"include\";\r\ninclude \"later\";\r\ninclude :optional \"x\";\r\n\
               include :global \"g\";\r\ninclude \"main\";\r\n";
    let r = c.with_literal("PUTSCRIPT \"main\"", inc, "+");
    assert_eq!(
        r,
        "OK (WARNINGS) \"2:9: included personal script 'later' does not exist (ignored during upload)\""
    );
    assert!(
        c.cmd("PUTSCRIPT \"later\" \"keep;\"")
            .1
            .starts_with("OK \"")
    );
    assert_eq!(
        c.with_literal("PUTSCRIPT \"main\"", inc, "+"),
        "OK \"Script stored\""
    );
    // A fileinto mailbox name the store refuses (RFC 5228 4.1: kept in
    // INBOX at delivery).
    let r = c
        .cmd("CHECKSCRIPT \"require \\\"fileinto\\\"; fileinto \\\"a//b\\\";\"")
        .1;
    assert!(
        r.starts_with("OK (WARNINGS) \"1:30: fileinto: mailbox name 'a//b' cannot be used here"),
        "{r}"
    );
    // SETACTIVE compiles the script again and gives its warnings (as
    // Pigeonhole does); a clean one is a plain OK.
    let r = c.cmd("SETACTIVE \"w\"").1;
    assert!(r.starts_with("OK (WARNINGS) \"2:1: IMAP flag"), "{r}");
    assert_eq!(c.cmd("SETACTIVE \"later\"").1, "OK \"Script is active\"");
}

/// RFC 5804 2.7, 2.8: LISTSCRIPTS marks the active script; SETACTIVE
/// switches it (in the store's `active` file), `""` deactivates, a
/// missing one is NO (NONEXISTENT).
#[test]
fn rfc5804_2_8_setactive_and_listscripts() {
    let s = Server::start("", false);
    let mut c = s.login();
    c.cmd("PUTSCRIPT \"a\" \"keep;\"");
    c.cmd("PUTSCRIPT \"b\" \"discard;\"");
    assert_eq!(c.cmd("SETACTIVE \"a\"").1, "OK \"Script is active\"");
    assert_eq!(c.cmd("LISTSCRIPTS").0, vec!["\"a\" ACTIVE", "\"b\""]);
    assert_eq!(c.cmd("SETACTIVE \"b\"").1, "OK \"Script is active\"");
    assert_eq!(c.cmd("LISTSCRIPTS").0, vec!["\"a\"", "\"b\" ACTIVE"]);
    let active = s.sieve_dir().join("active");
    assert_eq!(std::fs::read_to_string(&active).unwrap().trim(), "b");
    assert!(c.cmd("SETACTIVE \"zz\"").1.starts_with("NO (NONEXISTENT)"));
    assert!(c.cmd("SETACTIVE \"\"").1.starts_with("OK"));
    assert_eq!(c.cmd("LISTSCRIPTS").0, vec!["\"a\"", "\"b\""]);
    assert_eq!(std::fs::read_to_string(&active).unwrap().trim(), "");
}

/// RFC 5804 2.10: DELETESCRIPT refuses the active script with
/// NO (ACTIVE) and a missing one with NO (NONEXISTENT).
#[test]
fn rfc5804_2_10_deletescript() {
    let s = Server::start("", false);
    let mut c = s.login();
    c.cmd("PUTSCRIPT \"a\" \"keep;\"");
    c.cmd("SETACTIVE \"a\"");
    assert!(c.cmd("DELETESCRIPT \"a\"").1.starts_with("NO (ACTIVE)"));
    assert!(
        c.cmd("DELETESCRIPT \"nope\"")
            .1
            .starts_with("NO (NONEXISTENT)")
    );
    c.cmd("SETACTIVE \"\"");
    assert!(c.cmd("DELETESCRIPT \"a\"").1.starts_with("OK"));
    assert!(!s.sieve_dir().join("a.sieve").exists());
    assert!(c.cmd("LISTSCRIPTS").0.is_empty());
}

/// RFC 5804 2.11.1: RENAMESCRIPT keeps the active script active under
/// its new name, never replaces (ALREADYEXISTS), NONEXISTENT for a
/// missing one.
#[test]
fn rfc5804_2_11_1_renamescript() {
    let s = Server::start("", false);
    let mut c = s.login();
    c.cmd("PUTSCRIPT \"a\" \"keep;\"");
    c.cmd("PUTSCRIPT \"b\" \"discard;\"");
    c.cmd("SETACTIVE \"a\"");
    assert!(
        c.cmd("RENAMESCRIPT \"a\" \"b\"")
            .1
            .starts_with("NO (ALREADYEXISTS)")
    );
    assert!(
        c.cmd("RENAMESCRIPT \"x\" \"y\"")
            .1
            .starts_with("NO (NONEXISTENT)")
    );
    assert!(c.cmd("RENAMESCRIPT \"a\" \"c\"").1.starts_with("OK"));
    assert_eq!(c.cmd("LISTSCRIPTS").0, vec!["\"b\"", "\"c\" ACTIVE"]);
    assert_eq!(
        std::fs::read_to_string(s.sieve_dir().join("active"))
            .unwrap()
            .trim(),
        "c"
    );
    assert_eq!(c.cmd("GETSCRIPT \"c\"").0, vec!["{5}\r\nkeep;"]);
}

/// RFC 5804 2.5 and 1.3 (QUOTA/MAXSCRIPTS, QUOTA/MAXSIZE): HAVESPACE
/// and PUTSCRIPT against the configured per-user quotas; a literal over
/// the limit is refused and the session goes on.
#[test]
fn rfc5804_2_5_havespace_and_quotas() {
    let s = Server::start(
        "imapd.managesieve_max_scripts = 2\nimapd.managesieve_max_script_size = 100\n",
        false,
    );
    let mut c = s.login();
    assert!(c.cmd("HAVESPACE \"a\" 50").1.starts_with("OK"));
    assert!(
        c.cmd("HAVESPACE \"a\" 101")
            .1
            .starts_with("NO (QUOTA/MAXSIZE)")
    );
    c.cmd("PUTSCRIPT \"a\" \"keep;\"");
    c.cmd("PUTSCRIPT \"b\" \"keep;\"");
    assert!(
        c.cmd("HAVESPACE \"c\" 10")
            .1
            .starts_with("NO (QUOTA/MAXSCRIPTS)")
    );
    assert!(
        c.cmd("HAVESPACE \"a\" 10").1.starts_with("OK"),
        "replacing needs no new slot"
    );
    assert!(
        c.cmd("PUTSCRIPT \"c\" \"keep;\"")
            .1
            .starts_with("NO (QUOTA/MAXSCRIPTS)")
    );
    let big = format!("# {}\r\nkeep;\r\n", "x".repeat(200));
    let r = c.with_literal("PUTSCRIPT \"a\"", &big, "+");
    assert!(r.starts_with("NO (QUOTA/MAXSIZE)"), "{r}");
    let huge = format!("# {}\r\nkeep;\r\n", "x".repeat(20_000));
    let r = c.with_literal("PUTSCRIPT \"a\"", &huge, "+");
    assert!(r.starts_with("NO (QUOTA/MAXSIZE)"), "{r}");
    assert!(c.cmd("NOOP").1.starts_with("OK"));
    assert_eq!(c.cmd("GETSCRIPT \"a\"").0, vec!["{5}\r\nkeep;"]);
}

/// RFC 5804 2.15, 2.14, 2.3: NOOP echoes its tag, UNAUTHENTICATE goes
/// back to the non-authenticated state, LOGOUT ends with OK.
#[test]
fn rfc5804_2_14_noop_unauthenticate_logout() {
    let s = Server::start("", false);
    let mut c = s.login();
    assert_eq!(
        c.cmd("NOOP \"STARTTLS-SYNC-42\"").1,
        "OK (TAG \"STARTTLS-SYNC-42\") \"Done\""
    );
    assert!(c.cmd("UNAUTHENTICATE").1.starts_with("OK"));
    assert!(c.cmd("LISTSCRIPTS").1.starts_with("NO"));
    let (_, r) = c.cmd(&format!(
        "AUTHENTICATE \"PLAIN\" \"{}\"",
        plain("alice", PASSWORD)
    ));
    assert!(r.starts_with("OK"));
    assert!(c.cmd("FROBNICATE").1.starts_with("NO"));
    assert_eq!(c.cmd("LOGOUT").1, "OK \"Logout completed\"");
    assert!(c.closed());
}

/// RFC 5804 4 (bounded input): a line over the limit ends the
/// connection with BYE; a quoted string over 1024 octets is NO.
#[test]
fn rfc5804_4_bounded_lines_and_strings() {
    let s = Server::start("imapd.max_line = 2K\n", false);
    let mut c = s.login();
    let r = c
        .cmd(&format!("PUTSCRIPT \"a\" \"{}\"", "k".repeat(1100)))
        .1;
    assert!(r.starts_with("NO"), "{r}");
    assert!(c.cmd("NOOP").1.starts_with("OK"));
    let r = c.cmd(&format!("NOOP \"{}\"", "x".repeat(5000))).1;
    assert!(r.starts_with("BYE"), "{r}");
    assert!(c.closed());
}

/// RFC 5804 2.2 with a real client: sieve-connect (STARTTLS, TLS
/// required since loopback is not trusted here) uploads and activates a
/// script; then `deliver` applies it.
#[test]
fn sieve_connect_uploads_and_activates_then_deliver_applies_it() {
    let ok = Command::new("sh")
        .args(["-c", "command -v sieve-connect"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "sieve-connect is not installed (apt-get install sieve-connect)"
    );
    let s = Server::start("imapd.trusted_networks = none\n", true);
    let script = s.dir.path().join("reports.sieve");
    std::fs::write(&script, GOOD).unwrap();
    let port = s.port.to_string();
    let run = |args: &[&str]| {
        let mut p = Command::new("sieve-connect")
            .args([
                "-s",
                "127.0.0.1",
                "-p",
                &port,
                "-u",
                "alice",
                "--passwordfd",
                "0",
            ])
            .args(["--notlsverify", "--noclearauth", "--authmech", "PLAIN"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        p.stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .unwrap();
        let out = p.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sieve-connect {args:?}: {text}");
        text
    };
    run(&[
        "--localsieve",
        script.to_str().unwrap(),
        "--remotesieve",
        "reports",
        "--upload",
    ]);
    run(&["--remotesieve", "reports", "--activate"]);
    let list = run(&["--list"]);
    assert!(
        list.contains("reports") && list.contains("ACTIVE"),
        "{list}"
    );
    assert_eq!(
        std::fs::read_to_string(s.sieve_dir().join("active"))
            .unwrap()
            .trim(),
        "reports"
    );
    // RFC 5804 1.3: scripts with one and with two warnings are stored,
    // and sieve-connect takes the OK (WARNINGS) replies as success (it
    // does not print them; a multi-line literal reply it would take for a
    // failure, hence one line).
    for (name, text) in [
        ("one", "require \"imap4flags\";\naddflag \"\\\\Nope\";\n"),
        (
            "two",
            "require \"imap4flags\";\naddflag \"\\\\Nope\";\nif exists \"a b\" { keep; }\n",
        ),
    ] {
        let f = s.dir.path().join(format!("{name}.sieve"));
        std::fs::write(&f, text).unwrap();
        run(&[
            "--localsieve",
            f.to_str().unwrap(),
            "--remotesieve",
            name,
            "--upload",
        ]);
        assert_eq!(
            std::fs::read_to_string(s.sieve_dir().join(format!("{name}.sieve"))).unwrap(),
            text
        );
    }
    let list = run(&["--list"]);
    assert!(list.contains("one") && list.contains("two"), "{list}");

    let deliver = target_dir().join("deliver");
    assert!(
        deliver.exists(),
        "build deliver first (cargo build -p deliver)"
    );
    let mut d = Command::new(deliver)
        .arg("--spool")
        .arg(s.spool())
        .args(["-d", "alice", "-f", "bob@example.org"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    d.stdin
        .take()
        .unwrap()
        .write_all(b"From: bob@example.org\r\nTo: alice@example.org\r\nSubject: weekly report\r\nMessage-ID: <r1@test>\r\n\r\nnumbers\r\n")
        .unwrap();
    assert!(d.wait().unwrap().success());
    let store = storage::Store::open(&s.spool(), storage::Options::default()).unwrap();
    let user = storage::UserName::new("alice").unwrap();
    let mut reports = store
        .open_mailbox(&user, &storage::MailboxName::new("Reports").unwrap())
        .expect("the script filed the message into Reports");
    assert_eq!(reports.snapshot().unwrap().live_uids().len(), 1);
    let mut inbox = store
        .open_mailbox(&user, &storage::MailboxName::inbox())
        .unwrap();
    assert!(inbox.snapshot().unwrap().live_uids().is_empty());
}

/// RFC 5804 2.1 with the IMAP server's login rules: after
/// `imapd.max_login_failures_per_connection` failures the connection is
/// closed; once an address is locked out (failures counted across
/// connections) even the right password gets `BYE (TRYLATER)`.
#[test]
fn rfc5804_2_1_failure_limits_are_the_imap_servers() {
    let s = Server::start(
        "imapd.exempt_networks = none\nimapd.auth_fail_delay_ms = 0\n\
         imapd.auth_fail_delay_max_ms = 0\nimapd.auth_fail_limit = 4\n\
         imapd.max_login_failures_per_connection = 2\n",
        false,
    );
    let bad = format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain("alice", "wrong"));
    let mut c = s.connect();
    assert!(c.cmd(&bad).1.starts_with("NO"));
    c.send(format!("{bad}\r\n").as_bytes());
    assert!(c.response().1.starts_with("NO"));
    assert!(c.line().starts_with("BYE"));
    assert!(c.closed());
    let mut d = s.connect();
    assert!(d.cmd(&bad).1.starts_with("NO"));
    assert!(d.cmd(&bad).1.starts_with("NO"));
    let mut e = s.connect();
    let good = format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain("alice", PASSWORD));
    let r = e.cmd(&good).1;
    assert!(r.starts_with("BYE (TRYLATER)"), "{r}");
}

/// RFC 5804 1.3 (BYE) with the IMAP server's limits: a client that does
/// not log in within `imapd.login_timeout` gets BYE; a connection over
/// `imapd.max_connections_per_ip` gets `BYE (TRYLATER)` as its greeting.
#[test]
fn rfc5804_1_3_timeouts_and_connection_limits() {
    let s = Server::start(
        "imapd.exempt_networks = none\nimapd.login_timeout = 1\nimapd.max_connections_per_ip = 1\n",
        false,
    );
    let mut c = s.connect();
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut line = String::new();
    BufReader::new(t).read_line(&mut line).unwrap();
    assert!(line.starts_with("BYE (TRYLATER)"), "{line}");
    let (_, bye) = c.response();
    assert!(bye.starts_with("BYE"), "{bye}");
    assert!(c.closed());
}

/// RFC 5804 2.5 and 2.6 (QUOTA): all of a user's scripts together are
/// held to `imapd.managesieve_max_storage`; replacing a script counts
/// its new size only.
#[test]
fn rfc5804_2_6_total_storage_quota() {
    let s = Server::start("imapd.managesieve_max_storage = 150\n", false);
    let mut c = s.login();
    let script = |n: usize| format!("#{}\r\nkeep;\r\n", "x".repeat(n - 10));
    assert!(
        c.with_literal("PUTSCRIPT \"a\"", &script(100), "+")
            .starts_with("OK")
    );
    let r = c.with_literal("PUTSCRIPT \"b\"", &script(100), "+");
    assert!(r.starts_with("NO (QUOTA)"), "{r}");
    let r = c.cmd("HAVESPACE \"b\" 51").1;
    assert!(r.starts_with("NO (QUOTA)"), "{r}");
    assert!(c.cmd("HAVESPACE \"b\" 50").1.starts_with("OK"));
    assert!(
        c.with_literal("PUTSCRIPT \"a\"", &script(140), "+")
            .starts_with("OK")
    );
    assert_eq!(c.cmd("LISTSCRIPTS").0, vec!["\"a\""]);
}

/// RFC 5804 2.2: after STARTTLS the server sends its capabilities again
/// (now without STARTTLS, and with SASL PLAIN for a client outside the
/// trusted networks, which could not authenticate before), then a login
/// inside TLS works. The TLS client is `openssl s_client -starttls sieve`.
#[test]
fn rfc5804_2_2_starttls_reissues_capabilities() {
    let s = Server::start("imapd.trusted_networks = none\n", true);
    let auth = format!("AUTHENTICATE \"PLAIN\" \"{}\"", plain("alice", PASSWORD));
    let mut p = Command::new("openssl")
        .args(["s_client", "-quiet", "-starttls", "sieve", "-connect"])
        .arg(format!("127.0.0.1:{}", s.port))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl is not installed");
    let mut out = BufReader::new(p.stdout.take().unwrap());
    let mut lines = Vec::new();
    // The capabilities sent inside TLS end with this OK.
    loop {
        let mut l = String::new();
        assert!(out.read_line(&mut l).unwrap() > 0, "closed: {lines:?}");
        let l = l.trim_end().to_string();
        let done = l.starts_with("OK");
        lines.push(l);
        if done {
            break;
        }
    }
    assert!(
        lines.contains(&"\"SASL\" \"PLAIN\"".to_string()),
        "{lines:?}"
    );
    assert!(!lines.contains(&"\"STARTTLS\"".to_string()), "{lines:?}");
    let mut stdin = p.stdin.take().unwrap();
    stdin
        .write_all(format!("{auth}\r\nLISTSCRIPTS\r\nLOGOUT\r\n").as_bytes())
        .unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    drop(stdin);
    let _ = p.wait();
    assert!(rest.starts_with("OK \"Logged in\""), "{rest}");
    assert!(rest.contains("OK \"Logout completed\""), "{rest}");
}

/// RFC 5804 2.2 (and CVE-2011-0411): a command pipelined in plaintext
/// after STARTTLS is dropped, never run inside TLS. Python's ssl module
/// is the TLS client.
#[test]
fn rfc5804_2_2_plaintext_pipelined_after_starttls_is_dropped() {
    let s = Server::start("", true);
    let script = r#"
import socket, ssl, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
f = s.makefile("rb")
def response():
    lines = []
    while True:
        l = f.readline().decode().rstrip("\r\n")
        lines.append(l)
        if l.startswith(("OK", "NO", "BYE")):
            return lines
response()
s.sendall(b"STARTTLS\r\nNOOP \"injected\"\r\n")
print(response()[-1])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
t = ctx.wrap_socket(s, server_hostname="localhost")
f = t.makefile("rb")
print(response()[-1])
t.sendall(b"NOOP \"inside\"\r\n")
print(response()[-1])
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(s.port.to_string())
        .output()
        .expect("python3 is not installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "OK \"Begin TLS negotiation now\"",
            "OK \"TLS negotiation successful\"",
            "OK (TAG \"inside\") \"Done\"",
        ]
    );
}
