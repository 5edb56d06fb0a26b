//! The server as users meet it over the network: TLS on both ports
//! (openssl s_client, Python ssl + imaplib, mbsync), STARTTLS rules,
//! COMPRESS=DEFLATE, the password file (including Dovecot's, with hashes
//! made by `doveadm pw`), and every limit, each exceeded. A self-signed
//! certificate is made per test with the openssl CLI. Needs python3,
//! openssl, isync and dovecot-core (scripts/test.sh installs them); a
//! missing tool fails the test.

mod imap_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use imap_common::*;

const USER: &str = "alice";
const PASS: &str = "pw-alice";

/// A spool with alice's INBOX (three messages), her password file, and a
/// fresh self-signed certificate for 127.0.0.1 / localhost.
struct Fixture {
    dir: tempfile::TempDir,
    spool: PathBuf,
    passwd: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        seed_messages(&spool, USER, 3);
        let passwd = write_passwd(dir.path(), USER, PASS);
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        make_cert(&cert, &key, "imapd-test");
        Fixture {
            dir,
            spool,
            passwd,
            cert,
            key,
        }
    }

    /// Starts the server with a config file: both ports on 127.0.0.1,
    /// TLS configured, and `extra` config lines.
    fn start(&self, extra: &str) -> Server {
        let conf = self.write_conf(extra);
        Server::start(&["serve", "--config", conf.to_str().unwrap()])
    }

    /// Runs the server with `extra` config lines expecting it to refuse
    /// to start; returns what it said.
    fn start_fails(&self, extra: &str) -> String {
        let conf = self.write_conf(extra);
        let out = Command::new(IMAPD)
            .args(["serve", "--config", conf.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(!out.status.success(), "server started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write_conf(&self, extra: &str) -> PathBuf {
        let conf = self.dir.path().join("mailstore.conf");
        std::fs::write(
            &conf,
            format!(
                "spool = {}\nimapd.passwd = {}\nimapd.listen = 127.0.0.1:0\n\
                 imapd.listen_tls = 127.0.0.1:0\nimapd.tls_cert = {}\nimapd.tls_key = {}\n{extra}",
                self.spool.display(),
                self.passwd.display(),
                self.cert.display(),
                self.key.display()
            ),
        )
        .unwrap();
        conf
    }

    /// A config file with no keys (so /etc/mailstore.conf is not read).
    fn empty_conf(&self) -> PathBuf {
        let p = self.path("empty.conf");
        std::fs::write(&p, "").unwrap();
        p
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

struct Server {
    process: Reaper,
    plain: u16,
    tls: u16,
    logs: JoinHandle<String>,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = Command::new(IMAPD)
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn imapd-check serve");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let process = Reaper(child);
        let (mut plain, mut tls) = (0, 0);
        let mut seen = String::new();
        while plain == 0 || tls == 0 {
            let mut l = String::new();
            if err.read_line(&mut l).unwrap() == 0 {
                panic!("server exited: {seen}");
            }
            seen.push_str(&l);
            let port = || l.trim().rsplit(':').next().unwrap().parse::<u16>().unwrap();
            if l.starts_with("listening (TLS) on ") {
                tls = port();
            } else if l.starts_with("listening on ") {
                plain = port();
            }
        }
        let logs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        Server {
            process,
            plain,
            tls,
            logs,
        }
    }

    fn stop(self) -> String {
        drop(self.process);
        self.logs.join().unwrap()
    }
}

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// Runs tests/clients/tls_clients.py MODE against `port`.
fn python(mode: &str, port: u16, f: &Fixture) -> String {
    python_with(mode, port, f, &[])
}

fn python_with(mode: &str, port: u16, f: &Fixture, extra: &[&str]) -> String {
    let out = Command::new("python3")
        .arg(clients_dir().join("tls_clients.py"))
        .arg(mode)
        .arg(port.to_string())
        .arg(&f.cert)
        .args([USER, PASS])
        .args(extra)
        .output()
        .expect("python3 is not installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && text.contains(&format!("{mode}: ok")),
        "tls_clients.py {mode}: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `openssl s_client` with `args`, sending `input` once the session is
/// up; returns everything it printed.
fn s_client(args: &[&str], cafile: &Path, input: &str) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .args(args)
        .arg("-CAfile")
        .arg(cafile)
        .args(["-verify_return_error", "-ign_eof", "-crlf"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is not installed");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    // Line by line, a little apart, so each command meets an idle server.
    let feeder = std::thread::spawn(move || {
        for l in input.lines() {
            std::thread::sleep(Duration::from_millis(300));
            if stdin.write_all(format!("{l}\n").as_bytes()).is_err() {
                break;
            }
        }
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// RFC 8314 section 3 (implicit TLS) and RFC 3501 6.2.1 (STARTTLS), with
/// openssl s_client verifying the certificate on both ports.
#[test]
fn openssl_s_client_on_tls_port_and_starttls() {
    let f = Fixture::new();
    let server = f.start("");
    let script = format!("a LOGIN {USER} {PASS}\na SELECT INBOX\nb LOGOUT");
    let tls = s_client(
        &["-connect", &format!("127.0.0.1:{}", server.tls)],
        &f.cert,
        &script,
    );
    assert!(tls.contains("Verify return code: 0 (ok)"), "{tls}");
    assert!(tls.contains("* OK [CAPABILITY"), "{tls}");
    assert!(tls.contains("a OK [READ-WRITE]"), "{tls}");
    assert!(tls.contains("b OK LOGOUT"), "{tls}");
    let st = s_client(
        &[
            "-connect",
            &format!("127.0.0.1:{}", server.plain),
            "-starttls",
            "imap",
        ],
        &f.cert,
        &script,
    );
    assert!(st.contains("Verify return code: 0 (ok)"), "{st}");
    assert!(st.contains("a OK [READ-WRITE]"), "{st}");
    assert!(st.contains("b OK LOGOUT"), "{st}");
    server.stop();
}

/// Python ssl + imaplib: IMAP4_SSL (RFC 8314) with a verified certificate,
/// and IDLE over TLS with DONE and the next command in one record
/// (plaintext already decrypted must count as readable, RFC 2177).
#[test]
fn python_imap4_ssl() {
    let f = Fixture::new();
    let server = f.start("");
    python("implicit", server.tls, &f);
    server.stop();
}

/// RFC 2177 over TLS: while IDLE waits, half of the record carrying DONE
/// arriving is not input to block on; a delivery in the meantime is still
/// reported, and the rest of the record ends the IDLE.
#[test]
fn idle_over_tls_reports_while_a_record_is_incomplete() {
    let f = Fixture::new();
    let server = f.start("");
    python_with("idle-partial", server.tls, &f, &[&server.plain.to_string()]);
    server.stop();
}

/// RFC 3501 6.2.1/6.2.3 and 7.2.1, RFC 5530 PRIVACYREQUIRED: a client
/// outside imapd.trusted_networks sees STARTTLS and LOGINDISABLED and no
/// AUTH=PLAIN; LOGIN and AUTHENTICATE are refused; after STARTTLS the
/// capabilities change and LOGIN works (Python imaplib starttls()).
#[test]
fn python_starttls_and_logindisabled_outside_trusted_networks() {
    let f = Fixture::new();
    let server = f.start("imapd.trusted_networks = none\n");
    python("starttls", server.plain, &f);
    server.stop();
}

/// RFC 3501 6.2.1 / CVE-2011-0411: a command pipelined in plaintext after
/// STARTTLS is discarded, not run inside the TLS session.
#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let f = Fixture::new();
    let server = f.start("");
    python("inject", server.plain, &f);
    let logs = server.stop();
    assert!(
        logs.contains("dropped plaintext pipelined after STARTTLS"),
        "{logs}"
    );
}

/// RFC 4978: COMPRESS=DEFLATE after login, on a plain and a TLS
/// connection: pipelined commands, a large FETCH, IDLE/DONE, and
/// COMPRESSIONACTIVE for a second COMPRESS.
#[test]
fn compress_deflate_plain_and_over_tls() {
    let f = Fixture::new();
    let server = f.start("");
    python("compress-plain", server.plain, &f);
    python("compress-tls", server.tls, &f);
    server.stop();
}

/// RFC 4978 section 3: COMPRESS is not offered or accepted before login,
/// and not offered when the configuration turns it off.
#[test]
fn compress_needs_login_and_can_be_disabled() {
    let f = Fixture::new();
    let server = f.start("");
    let mut c = Client::tcp_raw(server.plain);
    let greeting = c.line();
    assert!(!greeting.contains("COMPRESS"), "{greeting}");
    let (_, t) = c.cmd("COMPRESS DEFLATE");
    assert!(t.contains("BAD"), "{t}");
    server.stop();
    let server = f.start("imapd.compress = no\n");
    let mut c = Client::tcp(server.plain, USER, PASS);
    let caps = c.ok("CAPABILITY");
    assert!(!caps[0].contains("COMPRESS"), "{caps:?}");
    let (_, t) = c.cmd("COMPRESS DEFLATE");
    assert!(t.contains("BAD"), "{t}");
    server.stop();
}

/// mbsync over both ports (SSLType IMAPS and STARTTLS), trusting only the
/// test's certificate.
#[test]
fn mbsync_over_imaps_and_starttls() {
    let f = Fixture::new();
    let server = f.start("imapd.trusted_networks = none\n");
    for (ssl_type, port) in [("IMAPS", server.tls), ("STARTTLS", server.plain)] {
        let local = f.path(&format!("mb-{ssl_type}"));
        std::fs::create_dir_all(&local).unwrap();
        let rc = f.path(&format!("mbsyncrc-{ssl_type}"));
        std::fs::write(
            &rc,
            format!(
                "IMAPAccount t\nHost localhost\nPort {port}\nUser {USER}\nPass {PASS}\n\
                 SSLType {ssl_type}\nCertificateFile {}\n\nIMAPStore t-far\nAccount t\n\n\
                 MaildirStore t-near\nPath {}/\nInbox {}/INBOX\n\n\
                 Channel t\nFar :t-far:\nNear :t-near:\nPatterns INBOX\nCreate Near\nSyncState *\n",
                f.cert.display(),
                local.display(),
                local.display()
            ),
        )
        .unwrap();
        let out = Command::new("mbsync")
            .arg("-c")
            .arg(&rc)
            .arg("-a")
            .output()
            .expect("mbsync is not installed (apt-get install isync)");
        assert!(
            out.status.success(),
            "mbsync {ssl_type}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let n = std::fs::read_dir(local.join("INBOX/cur"))
            .unwrap()
            .chain(std::fs::read_dir(local.join("INBOX/new")).unwrap())
            .count();
        assert_eq!(n, 3, "mbsync {ssl_type} fetched {n} messages");
    }
    server.stop();
}

/// A new certificate put in place of the old one is served to the next
/// connection without a restart.
#[test]
fn certificate_is_reloaded_when_the_files_change() {
    let f = Fixture::new();
    let server = f.start("");
    let before = python("cert-der", server.tls, &f);
    let (c2, k2) = (f.path("cert2.pem"), f.path("key2.pem"));
    make_cert(&c2, &k2, "imapd-test-renewed");
    // Key first, then certificate, each by rename (as certbot's deploy
    // hooks and `install` do).
    std::fs::rename(&k2, &f.key).unwrap();
    std::fs::rename(&c2, &f.cert).unwrap();
    let after = python("cert-der", server.tls, &f);
    assert_ne!(before, after, "the old certificate is still served");
    python("implicit", server.tls, &f);
    server.stop();
}

/// `doveadm pw` hashes of every supported scheme, in Dovecot passwd-file
/// lines with uid/gid/home and extra fields, log in; `{PLAIN}` is refused
/// unless imapd.allow_plain_passwords is set.
#[test]
fn dovecot_passwd_file_schemes_from_doveadm() {
    let f = Fixture::new();
    let mut lines = String::from("# Dovecot passwd-file\n");
    let schemes = ["ARGON2ID", "SHA512-CRYPT", "SHA256-CRYPT", "BLF-CRYPT"];
    for (i, scheme) in schemes.iter().enumerate() {
        let out = Command::new("doveadm")
            .args(["pw", "-s", scheme, "-p", &format!("secret-{i}")])
            .output()
            .expect("doveadm is not installed (apt-get install dovecot-core)");
        assert!(out.status.success(), "doveadm pw -s {scheme}");
        let hash = String::from_utf8(out.stdout).unwrap();
        assert!(hash.starts_with(&format!("{{{scheme}}}")), "{hash}");
        lines.push_str(&format!(
            "user{i}:{}:1000:1000::/home/user{i}::userdb_quota_rule=*:storage=1G\n",
            hash.trim()
        ));
    }
    std::fs::write(&f.passwd, &lines).unwrap();
    let server = f.start("");
    for i in 0..schemes.len() {
        let mut c = Client::tcp(server.plain, &format!("user{i}"), &format!("secret-{i}"));
        c.ok("SELECT INBOX");
        let mut bad = Client::tcp_raw(server.plain);
        bad.line();
        let (_, t) = bad.cmd(&format!("LOGIN user{i} wrong-{i}"));
        assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
    }
    server.stop();

    std::fs::write(&f.passwd, "carol:{PLAIN}open-sesame:::\n").unwrap();
    let refused = f.start_fails("");
    assert!(refused.contains("allow_plain_passwords"), "{refused}");
    let server = f.start("imapd.allow_plain_passwords = yes\n");
    Client::tcp(server.plain, "carol", "open-sesame").ok("SELECT INBOX");
    server.stop();
}

/// Argon2 costs in the password file are bounded before any hash runs:
/// doveadm's default (64 MiB) over imapd.max_hash_memory = 16M is
/// refused when the file is loaded, naming the line.
#[test]
fn password_file_with_excessive_hash_cost_is_refused() {
    let f = Fixture::new();
    let out = Command::new("doveadm")
        .args(["pw", "-s", "ARGON2ID", "-p", "x"])
        .output()
        .expect("doveadm is not installed (apt-get install dovecot-core)");
    let hash = String::from_utf8(out.stdout).unwrap();
    std::fs::write(&f.passwd, format!("# one user\nu:{}\n", hash.trim())).unwrap();
    let err = f.start_fails("imapd.max_hash_memory = 16M\n");
    assert!(
        err.contains("line 2") && err.contains("max_hash_memory"),
        "{err}"
    );
    // Within the default bound it loads and the user logs in.
    let server = f.start("");
    Client::tcp(server.plain, "u", "x").ok("NOOP");
    server.stop();
}

/// The password file is re-read when it changes: a user added later logs
/// in; a broken file keeps the previous one in use.
#[test]
fn password_file_is_reloaded_when_it_changes() {
    let f = Fixture::new();
    let server = f.start("");
    let mut bad = Client::tcp_raw(server.plain);
    bad.line();
    let (_, t) = bad.cmd("LOGIN bob pw-bob");
    assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
    let bob_dir = f.path("bob");
    std::fs::create_dir_all(&bob_dir).unwrap();
    let bob = std::fs::read_to_string(write_passwd(&bob_dir, "bob", "pw-bob")).unwrap();
    let mut text = std::fs::read_to_string(&f.passwd).unwrap();
    text.push_str(&bob);
    std::fs::write(&f.passwd, &text).unwrap();
    Client::tcp(server.plain, "bob", "pw-bob").ok("SELECT INBOX");
    std::fs::write(&f.passwd, "this line is not a password entry\n").unwrap();
    Client::tcp(server.plain, USER, PASS).ok("NOOP");
    Client::tcp(server.plain, "bob", "pw-bob").ok("NOOP");
    let logs = server.stop();
    assert!(
        logs.contains("keeping the previous password file"),
        "{logs}"
    );
}

/// Reads lines until the server closes; returns them.
fn lines_until_closed(c: &mut Client) -> Vec<String> {
    let mut v = Vec::new();
    while let Some(l) = c.raw_line() {
        v.push(String::from_utf8_lossy(&l).trim_end().to_string());
    }
    v
}

/// A generous "did not hang" bound for timeouts of a second or two.
const HANG: Duration = Duration::from_secs(20);

/// RFC 3501 5.4 (autologout) before login: a client that does not log in
/// within imapd.login_timeout is told BYE and disconnected, on the plain
/// port and on the TLS port (where it never starts the handshake).
#[test]
fn pre_login_timeout_disconnects_on_both_ports() {
    let f = Fixture::new();
    let server = f.start("imapd.login_timeout = 1\n");
    let t0 = Instant::now();
    let mut c = Client::tcp_raw(server.plain);
    assert!(c.line().starts_with("* OK"));
    c.ok("CAPABILITY");
    let rest = lines_until_closed(&mut c);
    assert_eq!(rest, ["* BYE Login timeout"], "{rest:?}");
    assert!(t0.elapsed() >= Duration::from_secs(1) && t0.elapsed() < HANG);
    let t0 = Instant::now();
    let mut tls = std::net::TcpStream::connect(("127.0.0.1", server.tls)).unwrap();
    tls.set_read_timeout(Some(HANG)).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(
        tls.read(&mut buf).unwrap(),
        0,
        "TLS port kept a silent client"
    );
    assert!(t0.elapsed() >= Duration::from_secs(1) && t0.elapsed() < HANG);
    server.stop();
}

/// RFC 3501 5.4 / RFC 2177: after login, imapd.autologout without a
/// command ends the session; each command restarts the timer; an IDLE
/// left running past it ends too.
#[test]
fn autologout_between_commands_and_in_idle() {
    let f = Fixture::new();
    let server = f.start("imapd.autologout = 2\n");
    // Commands every second keep the session for longer than 2 s.
    let mut busy = Client::tcp(server.plain, USER, PASS);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        busy.ok("NOOP");
    }
    let t0 = Instant::now();
    let mut quiet = Client::tcp(server.plain, USER, PASS);
    let rest = lines_until_closed(&mut quiet);
    assert_eq!(rest, ["* BYE Autologout; idle for too long"], "{rest:?}");
    assert!(t0.elapsed() >= Duration::from_secs(2) && t0.elapsed() < HANG);
    let mut idler = Client::tcp(server.plain, USER, PASS);
    idler.ok("SELECT INBOX");
    idler.send("i1 IDLE\r\n");
    assert!(idler.line().starts_with('+'));
    let rest = lines_until_closed(&mut idler);
    assert_eq!(
        rest.last().map(String::as_str),
        Some("* BYE Autologout; idle for too long"),
        "{rest:?}"
    );
    drop(busy);
    server.stop();
}

/// imapd.max_connections_per_ip and imapd.max_connections: the connection
/// over the limit gets BYE; a slot freed by a client leaving is reused.
/// (Loopback is in the default imapd.exempt_networks; the test takes it
/// out.)
#[test]
fn connection_limits_per_ip_and_total() {
    let f = Fixture::new();
    let server = f.start("imapd.max_connections_per_ip = 2\nimapd.exempt_networks = none\n");
    let mut a = Client::tcp_raw(server.plain);
    let mut b = Client::tcp_raw(server.plain);
    assert!(a.line().starts_with("* OK") && b.line().starts_with("* OK"));
    let mut c = Client::tcp_raw(server.plain);
    assert_eq!(
        lines_until_closed(&mut c),
        ["* BYE Too many connections from your address"]
    );
    a.ok("LOGOUT");
    drop(a);
    let t0 = Instant::now();
    loop {
        let mut d = Client::tcp_raw(server.plain);
        let l = d.line();
        if l.starts_with("* OK") {
            break;
        }
        assert!(t0.elapsed() < HANG, "slot never freed: {l}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
    let server = f.start("imapd.max_connections = 1\n");
    let mut a = Client::tcp_raw(server.plain);
    assert!(a.line().starts_with("* OK"));
    let mut b = Client::tcp_raw(server.plain);
    assert_eq!(
        lines_until_closed(&mut b),
        ["* BYE Server busy, try again later"]
    );
    server.stop();
}

/// imapd.max_connections_per_user: a login over it is refused with
/// [LIMIT] (RFC 5530); after a session logs out the next login works.
#[test]
fn sessions_per_user_limit() {
    let f = Fixture::new();
    let server = f.start("imapd.max_connections_per_user = 1\n");
    let mut first = Client::tcp(server.plain, USER, PASS);
    let mut second = Client::tcp_raw(server.plain);
    second.line();
    let (_, t) = second.cmd(&format!("LOGIN {USER} {PASS}"));
    assert!(t.contains("NO [LIMIT]"), "{t}");
    first.ok("LOGOUT");
    let t0 = Instant::now();
    loop {
        let (_, t) = second.cmd(&format!("LOGIN {USER} {PASS}"));
        if t.contains("OK") {
            break;
        }
        assert!(t0.elapsed() < HANG, "user slot never freed: {t}");
        std::thread::sleep(Duration::from_millis(50));
    }
    server.stop();
}

/// Failed logins from one address are answered after a growing delay
/// (imapd.auth_fail_delay_ms, doubling); after imapd.auth_fail_limit of
/// them, logins from that address are refused unchecked ([UNAVAILABLE],
/// then BYE), even with the right password, until imapd.auth_fail_window
/// has passed since the last failure.
#[test]
fn login_failures_are_delayed_then_locked_out() {
    let f = Fixture::new();
    let server = f.start(
        "imapd.auth_fail_delay_ms = 200\nimapd.auth_fail_limit = 3\n\
         imapd.auth_fail_window = 3\nimapd.max_login_failures_per_connection = 10\n\
         imapd.exempt_networks = none\n",
    );
    let mut c = Client::tcp_raw(server.plain);
    c.line();
    for (i, at_least) in [200u64, 400, 800].into_iter().enumerate() {
        let t0 = Instant::now();
        let (_, t) = c.cmd(&format!("LOGIN {USER} wrong-{i}"));
        assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
        assert!(
            t0.elapsed() >= Duration::from_millis(at_least),
            "failure {i} answered after {:?}",
            t0.elapsed()
        );
    }
    let (_, t) = c.cmd(&format!("LOGIN {USER} {PASS}"));
    assert!(t.contains("NO [UNAVAILABLE]"), "{t}");
    assert_eq!(lines_until_closed(&mut c), ["* BYE Too many failed logins"]);
    // Another connection from the same address: still locked out.
    let mut d = Client::tcp_raw(server.plain);
    d.line();
    let (_, t) = d.cmd(&format!("AUTHENTICATE PLAIN {}", "AGFsaWNlAHB3LWFsaWNl"));
    assert!(t.contains("NO [UNAVAILABLE]"), "{t}");
    // After the window, the right password works again.
    std::thread::sleep(Duration::from_millis(3200));
    Client::tcp(server.plain, USER, PASS).ok("NOOP");
    server.stop();
}

/// imapd.max_login_failures_per_connection: the connection is closed
/// after that many failures.
#[test]
fn connection_closed_after_repeated_failures() {
    let f = Fixture::new();
    let server =
        f.start("imapd.auth_fail_delay_ms = 0\nimapd.max_login_failures_per_connection = 2\n");
    let mut c = Client::tcp_raw(server.plain);
    c.line();
    let (_, t) = c.cmd("LOGIN alice nope");
    assert!(t.contains("NO [AUTHENTICATIONFAILED]"), "{t}");
    c.send("x LOGIN alice nope-again\r\n");
    let rest = lines_until_closed(&mut c);
    assert_eq!(
        rest,
        [
            "x NO [AUTHENTICATIONFAILED] Authentication failed",
            "* BYE Too many failed logins"
        ]
    );
    server.stop();
}

fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A login storm does not multiply Argon2's memory: with
/// imapd.max_parallel_hashes = 1, eight simultaneous logins against a
/// 64 MiB Argon2id hash (doveadm's default) all succeed while the
/// server's peak RSS stays far below eight hashes' worth.
#[test]
fn argon2_memory_is_bounded_under_a_login_storm() {
    let f = Fixture::new();
    let out = Command::new("doveadm")
        .args(["pw", "-s", "ARGON2ID", "-p", "storm"])
        .output()
        .expect("doveadm is not installed (apt-get install dovecot-core)");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.contains("m=65536"), "{hash}");
    std::fs::write(&f.passwd, format!("{USER}:{}\n", hash.trim())).unwrap();
    let server = f.start("imapd.max_parallel_hashes = 1\n");
    let pid = server.process.0.id();
    let port = server.plain;
    let storm: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = Client::tcp_raw(port);
                c.line();
                c.cmd(&format!("LOGIN {USER} storm")).1
            })
        })
        .collect();
    for t in storm {
        let tagged = t.join().unwrap();
        assert!(tagged.contains("OK"), "{tagged}");
    }
    let peak_mib = vm_hwm_kib(pid) / 1024;
    // One hash at a time: ~64 MiB plus the process. Eight at once take
    // over 500 MiB (measured: 780 MiB with twelve slots and twelve logins).
    assert!(peak_mib < 250, "server peak RSS {peak_mib} MiB");
    server.stop();
}

/// imapd.max_line, imapd.max_literal, imapd.max_append and
/// imapd.max_command are enforced as configured (RFC 7888 section 4 for the refusals of literals).
#[test]
fn configured_line_and_literal_limits_are_enforced() {
    let f = Fixture::new();
    let server = f.start("imapd.max_line = 2K\nimapd.max_literal = 1K\nimapd.max_append = 4K\n");
    let mut c = Client::tcp(server.plain, USER, PASS);
    c.ok("SELECT INBOX");
    c.send(&format!("l1 NOOP {}\r\n", "x".repeat(3000)));
    assert_eq!(c.line(), "* BAD Line too long");
    c.ok("NOOP");
    c.send("l2 SEARCH TEXT {2000}\r\n");
    let l = c.line();
    assert!(l.starts_with("l2 NO [TOOBIG]"), "{l}");
    c.send("l3 APPEND INBOX {5000}\r\n");
    let l = c.line();
    assert!(l.starts_with("l3 NO [TOOBIG]"), "{l}");
    let msg = message(9);
    c.send(&format!("l4 APPEND INBOX {{{}}}\r\n", msg.len()));
    assert!(c.line().starts_with('+'));
    c.send(&format!("{}\r\n", String::from_utf8_lossy(&msg)));
    let mut l = c.line();
    while l.starts_with('*') {
        l = c.line();
    }
    assert!(l.starts_with("l4 OK"), "{l}");
    server.stop();
    // imapd.max_command: the lines of one command (between its literals)
    // together; where an over-long command ends is unknown, so the
    // connection ends.
    let server = f.start("imapd.max_command = 4K\n");
    let mut c = Client::tcp(server.plain, USER, PASS);
    c.ok("SELECT INBOX");
    let mut cmd = String::from("m1 SEARCH TEXT {1+}\r\nx");
    for _ in 0..400 {
        cmd.push_str(" TEXT {1+}\r\nx");
    }
    cmd.push_str("\r\n");
    c.send_until_closed(&cmd);
    let rest = lines_until_closed(&mut c);
    assert_eq!(
        rest,
        [
            "m1 BAD Command too long",
            "* BYE Command too long to find its end"
        ]
    );
    server.stop();
}

/// A misspelt imapd.* key stops the server instead of being ignored, and
/// a plain listener on a non-loopback address needs TLS configured.
#[test]
fn bad_configuration_is_refused() {
    let f = Fixture::new();
    let err = f.start_fails("imapd.max_conections_per_ip = 3\n");
    assert!(err.contains("max_conections_per_ip"), "{err}");
    let out = Command::new(IMAPD)
        .args(["serve", "--listen", "0.0.0.0:0", "--passwd"])
        .arg(&f.passwd)
        .arg("--spool")
        .arg(&f.spool)
        .env("MAILSTORE_CONFIG", f.empty_conf())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing to listen on non-loopback"), "{err}");
}

/// imapd.send_timeout: a client that stops reading while the server has
/// much to send is dropped, and its connection slot is freed (seen here
/// through imapd.max_connections_per_ip = 1).
#[test]
fn client_that_stops_reading_is_dropped() {
    let f = Fixture::new();
    {
        let store = storage::Store::open(&f.spool, storage::Options::default()).unwrap();
        let u = storage::UserName::new(USER).unwrap();
        let mut inbox = store
            .open_mailbox(&u, &storage::MailboxName::inbox())
            .unwrap();
        let mut big = b"Subject: big\r\n\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'x', 8 << 20));
        inbox
            .append(&big[..], storage::AppendOptions::default())
            .unwrap();
    }
    let server = f.start(
        "imapd.send_timeout = 1\nimapd.max_connections_per_ip = 1\nimapd.exempt_networks = none\n",
    );
    let mut stuck = Client::tcp(server.plain, USER, PASS);
    stuck.ok("SELECT INBOX");
    // Ask for 40 MiB and read none of it.
    stuck.send(&"f FETCH 4 BODY.PEEK[]\r\n".repeat(5));
    let t0 = Instant::now();
    loop {
        let mut c = Client::tcp_raw(server.plain);
        let l = c.line();
        if l.starts_with("* OK") {
            break;
        }
        assert_eq!(l, "* BYE Too many connections from your address");
        assert!(t0.elapsed() < HANG, "the stuck client was never dropped");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stuck);
    server.stop();
}

/// RFC 4978 on the stdio (PREAUTH) mode: COMPRESS DEFLATE, then commands
/// and responses in raw DEFLATE over the pipes.
#[test]
fn compress_over_stdio() {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
    let f = Fixture::new();
    let mut child = Command::new(IMAPD)
        .args(["serve", "--spool"])
        .arg(&f.spool)
        .args(["-d", USER, "--stdio"])
        .env("MAILSTORE_CONFIG", f.empty_conf())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = child.stdout.take().unwrap();
    let _reaper = Reaper(child);
    let mut plain = Vec::new();
    let mut byte = [0u8; 1];
    // Plaintext up to and including the OK of COMPRESS, byte by byte so
    // no compressed byte is read as plaintext.
    w.write_all(b"c COMPRESS DEFLATE\r\n").unwrap();
    while !plain.ends_with(b"c OK DEFLATE active\r\n") {
        assert_eq!(
            r.read(&mut byte).unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&plain)
        );
        plain.push(byte[0]);
    }
    assert!(String::from_utf8_lossy(&plain).contains("COMPRESS=DEFLATE"));
    let mut z = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(4096);
    z.compress_vec(
        b"s SELECT INBOX\r\nn NOOP\r\n",
        &mut out,
        FlushCompress::Sync,
    )
    .unwrap();
    w.write_all(&out).unwrap();
    w.flush().unwrap();
    let mut d = Decompress::new(false);
    let mut text = Vec::with_capacity(1 << 16);
    let mut buf = [0u8; 4096];
    let t0 = Instant::now();
    while !String::from_utf8_lossy(&text).contains("n OK") {
        assert!(t0.elapsed() < HANG);
        let n = r.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&text));
        let mut input = &buf[..n];
        while !input.is_empty() {
            let before = d.total_in();
            d.decompress_vec(input, &mut text, FlushDecompress::None)
                .unwrap();
            input = &input[(d.total_in() - before) as usize..];
            if text.capacity() - text.len() < 1024 {
                text.reserve(1 << 16);
            }
        }
    }
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("* 3 EXISTS") && text.contains("s OK [READ-WRITE]"),
        "{text}"
    );
}

/// Before login, an APPEND's literal is held to the small literal limit
/// (the literal is read before the command is parsed, so without this an
/// unauthenticated client could make the server buffer 64 MiB per
/// connection): no `+`, `NO [TOOBIG]`; a non-synchronizing one closes.
#[test]
fn unauthenticated_client_cannot_send_a_big_literal() {
    let f = Fixture::new();
    let server = f.start("");
    let mut c = Client::tcp_raw(server.plain);
    c.line();
    c.send("a APPEND INBOX {100000}\r\n");
    let l = c.line();
    assert!(l.starts_with("a NO [TOOBIG]"), "{l}");
    c.send("b APPEND INBOX {100000000+}\r\n");
    let rest = lines_until_closed(&mut c);
    assert!(
        rest.first().is_some_and(|l| l.starts_with("b NO [TOOBIG]")),
        "{rest:?}"
    );
    assert!(
        rest.last().is_some_and(|l| l.starts_with("* BYE")),
        "{rest:?}"
    );
    // Logged in, the same APPEND size is accepted.
    let mut c = Client::tcp(server.plain, USER, PASS);
    c.send("c APPEND INBOX {100000}\r\n");
    assert!(c.line().starts_with('+'));
    server.stop();
}

/// imapflow (npm) over implicit TLS: it logs in, turns on COMPRESS=DEFLATE
/// by itself (RFC 4978, under TLS), FETCHes, STOREs and sees a delivery
/// while in IDLE.
#[test]
fn imapflow_over_tls_with_compress_and_idle() {
    let flow_dir = imapflow_dir();
    let f = Fixture::new();
    let server = f.start("");
    let out = Command::new("node")
        .env("IMAPFLOW_DIR", &flow_dir)
        .env("IMAPFLOW_TLS", "1")
        .env("NODE_EXTRA_CA_CERTS", &f.cert)
        .arg(clients_dir().join("imapflow_idle.mjs"))
        .arg(server.tls.to_string())
        .args([USER, PASS])
        .output()
        .expect("node is not installed");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "imapflow: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["secure"], true, "{text}");
    assert_eq!(v["compressed"], true, "{text}");
    assert_eq!(v["exists_after_idle"], 4, "{text}");
    server.stop();
}

/// Guesses sent in parallel from one address stop at imapd.auth_fail_limit
/// too: the lock-out is decided in turn with the password checks (it can
/// overshoot by at most imapd.max_parallel_hashes - 1), so with one slot,
/// of eight simultaneous wrong logins exactly the limit are checked and
/// the rest get [UNAVAILABLE].
#[test]
fn parallel_guesses_stop_at_the_failure_limit() {
    let f = Fixture::new();
    let server = f.start(
        "imapd.auth_fail_delay_ms = 0\nimapd.auth_fail_limit = 3\nimapd.max_parallel_hashes = 1\n\
         imapd.exempt_networks = none\n",
    );
    let port = server.plain;
    let guesses: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::tcp_raw(port);
                c.line();
                c.cmd(&format!("LOGIN {USER} guess-{i}")).1
            })
        })
        .collect();
    let replies: Vec<String> = guesses.into_iter().map(|t| t.join().unwrap()).collect();
    let checked = replies
        .iter()
        .filter(|r| r.contains("[AUTHENTICATIONFAILED]"))
        .count();
    let refused = replies
        .iter()
        .filter(|r| r.contains("[UNAVAILABLE]"))
        .count();
    assert_eq!((checked, refused), (3, 5), "{replies:?}");
    server.stop();
}

/// SIGHUP (systemd's `reload`) re-reads the password file and the
/// certificate at their next use, and does not end the server.
#[test]
fn sighup_reloads_without_ending_the_server() {
    let f = Fixture::new();
    let server = f.start("");
    Client::tcp(server.plain, USER, PASS).ok("NOOP");
    python("cert-der", server.tls, &f);
    let pid = server.process.0.id() as libc::pid_t;
    // SAFETY: signals a child process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    std::thread::sleep(Duration::from_millis(200));
    Client::tcp(server.plain, USER, PASS).ok("NOOP");
    python("implicit", server.tls, &f);
    let logs = server.stop();
    assert!(logs.contains("password file reloaded"), "{logs}");
    assert!(logs.contains("TLS certificate reloaded"), "{logs}");
}

/// imapd.exempt_networks (default: loopback, where a webmail connects for
/// all its users): no per-address connection limit and no failure
/// lock-out for those clients; the total limit still holds.
#[test]
fn exempt_networks_are_not_limited_per_address() {
    let f = Fixture::new();
    let server = f.start(
        "imapd.max_connections_per_ip = 1\nimapd.auth_fail_limit = 1\n\
         imapd.auth_fail_delay_ms = 0\nimapd.max_login_failures_per_connection = 10\n",
    );
    let mut clients: Vec<Client> = (0..3).map(|_| Client::tcp_raw(server.plain)).collect();
    for c in &mut clients {
        assert!(c.line().starts_with("* OK"));
    }
    let c = &mut clients[0];
    for i in 0..3 {
        let (_, t) = c.cmd(&format!("LOGIN {USER} wrong-{i}"));
        assert!(t.contains("[AUTHENTICATIONFAILED]"), "{t}");
    }
    c.ok(&format!("LOGIN {USER} {PASS}"));
    server.stop();
}
