//! Shared by the IMAP tests: spawning `imapd-check serve`, a minimal raw
//! IMAP client over its pipes, and killing whatever a test started.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const IMAPD: &str = env!("CARGO_BIN_EXE_imapd-check");

/// `target/debug`: where `deliver` is when it has been built.
pub fn target_dir() -> PathBuf {
    Path::new(IMAPD).parent().unwrap().to_path_buf()
}

/// Where the npm client imapflow is (IMAPFLOW_DIR, else what
/// scripts/test.sh installs under target/node-clients).
pub fn imapflow_dir() -> PathBuf {
    let flow_dir = std::env::var_os("IMAPFLOW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            target_dir()
                .parent()
                .unwrap()
                .join("node-clients/node_modules")
        });
    assert!(
        flow_dir.join("imapflow").exists(),
        "imapflow not found in {}: npm install --prefix target/node-clients imapflow@2",
        flow_dir.display()
    );
    flow_dir
}

/// Runs the imapflow script `tests/clients/SCRIPT` with `args` under
/// node and gives back the one JSON line it prints (its output is shown;
/// a failing script fails the test).
pub fn imapflow_json(script: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new("node")
        .env("IMAPFLOW_DIR", imapflow_dir())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/clients")
                .join(script),
        )
        .args(args)
        .output()
        .expect("run node (install nodejs: scripts/test.sh does)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "imapflow script {script} failed");
    serde_json::from_str(text.trim()).unwrap()
}

/// Kills the child on drop, so a failing test leaves no process behind.
pub struct Reaper(pub Child);
impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn seed_store(spool: &Path, user: &str) -> storage::Store {
    let store = storage::Store::open(spool, storage::Options::default()).unwrap();
    let u = storage::UserName::new(user).unwrap();
    store
        .ensure_mailbox(&u, &storage::MailboxName::inbox())
        .unwrap();
    store
}

/// A store whose INBOX holds these messages, appended with their options.
pub fn seed_raw(
    spool: &Path,
    user: &str,
    msgs: impl IntoIterator<Item = (Vec<u8>, storage::AppendOptions)>,
) -> storage::Store {
    let store = seed_store(spool, user);
    let u = storage::UserName::new(user).unwrap();
    let mut inbox = store
        .open_mailbox(&u, &storage::MailboxName::inbox())
        .unwrap();
    for (raw, opts) in msgs {
        inbox.append(&raw[..], opts).unwrap();
    }
    store
}

/// A new temporary directory (removed when dropped) with a spool in it
/// whose INBOX holds `msgs`.
pub fn store_with(user: &str, msgs: &[Vec<u8>]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    seed_raw(
        &spool,
        user,
        msgs.iter()
            .map(|m| (m.clone(), storage::AppendOptions::default())),
    );
    (tmp, spool)
}

/// A store whose INBOX holds `message(0..n)`.
pub fn seed_messages(spool: &Path, user: &str, n: usize) -> storage::Store {
    let store = seed_store(spool, user);
    let u = storage::UserName::new(user).unwrap();
    let mut inbox = store
        .open_mailbox(&u, &storage::MailboxName::inbox())
        .unwrap();
    for i in 0..n {
        inbox
            .append(&message(i)[..], storage::AppendOptions::default())
            .unwrap();
    }
    store
}

/// Writes `dir/passwd` with the line `imapd-check passwd USER` prints for
/// `password`, checking that the password itself never appears in it.
pub fn write_passwd(dir: &Path, user: &str, password: &str) -> PathBuf {
    let mut p = Command::new(IMAPD)
        .args(["passwd", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn imapd-check passwd");
    p.stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let line = p.wait_with_output().unwrap();
    assert!(line.status.success());
    // A hash, not the password (a short password may well occur inside
    // the hash's base64 by chance: compare the field, not substrings).
    let out = String::from_utf8_lossy(&line.stdout);
    let hash = out
        .trim_end()
        .strip_prefix(&format!("{user}:"))
        .expect("user:hash");
    assert!(
        hash.starts_with("$argon2") && !hash.contains(&format!("${password}$")),
        "{hash}"
    );
    let passwd = dir.join("passwd");
    std::fs::write(&passwd, &line.stdout).unwrap();
    passwd
}

/// A self-signed certificate for `cn` (and localhost, 127.0.0.1) made
/// with the openssl CLI.
pub fn make_cert(cert: &Path, key: &Path, cn: &str) {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .arg("ec_paramgen_curve:prime256v1")
        .args(["-nodes", "-days", "2", "-subj"])
        .arg(format!("/CN={cn}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .output()
        .expect("openssl is not installed (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn message(n: usize) -> Vec<u8> {
    format!("From: bob@example.org\r\nTo: alice@example.org\r\nSubject: message {n}\r\nMessage-ID: <{n}@test>\r\n\r\nbody {n}\r\n").into_bytes()
}

/// `imapd-check serve --listen 127.0.0.1:0` with a password file: the
/// process, its port, and its log (stderr) collected until it ends.
pub struct TcpServer {
    pub process: Reaper,
    pub port: u16,
    logs: JoinHandle<String>,
}

impl TcpServer {
    /// The server with the config the environment names (MAILSTORE_CONFIG).
    pub fn start(spool: &Path, passwd: &Path) -> TcpServer {
        Self::spawn(spool, passwd, None)
    }

    /// Like `start`, with `config` (lines of `imapd.*` keys, OPERATIONS.md
    /// §6a) in a config file beside the spool, given with `--config`.
    pub fn start_configured(spool: &Path, passwd: &Path, config: &str) -> TcpServer {
        let conf = spool.with_extension("imapd.conf");
        std::fs::write(&conf, config).unwrap();
        Self::spawn(spool, passwd, Some(&conf))
    }

    fn spawn(spool: &Path, passwd: &Path, conf: Option<&Path>) -> TcpServer {
        let mut cmd = Command::new(IMAPD);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--passwd"])
            .arg(passwd)
            .arg("--spool")
            .arg(spool);
        if let Some(c) = conf {
            cmd.arg("--config").arg(c);
        }
        let mut server = cmd
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn imapd-check serve --listen");
        let mut err = BufReader::new(server.stderr.take().unwrap());
        let process = Reaper(server);
        let mut first = String::new();
        err.read_line(&mut first).unwrap();
        let port: u16 = first
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        let logs = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        TcpServer {
            process,
            port,
            logs,
        }
    }

    /// Stops the server; returns what it logged.
    pub fn stop(self) -> String {
        drop(self.process);
        self.logs.join().unwrap()
    }
}

/// A raw IMAP client over a `serve --stdio` child or a TCP connection.
pub struct Client {
    child: Option<Reaper>,
    w: Box<dyn Write + Send>,
    r: BufReader<Box<dyn Read + Send>>,
    n: u32,
}

impl Client {
    /// Connects to a `TcpServer` and logs in.
    pub fn tcp(port: u16, user: &str, password: &str) -> Client {
        let mut c = Client::tcp_raw(port);
        let greeting = c.line();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        c.ok(&format!("LOGIN {user} \"{password}\""));
        c
    }

    /// Connects to a TCP port; the greeting is left to the caller.
    pub fn tcp_raw(port: u16) -> Client {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            child: None,
            r: BufReader::new(Box::new(s.try_clone().unwrap())),
            w: Box::new(s),
            n: 0,
        }
    }

    pub fn spawn(spool: &Path, user: &str) -> Client {
        let mut cmd = Command::new(IMAPD);
        cmd.args(["serve", "--spool"])
            .arg(spool)
            .args(["-d", user, "--stdio"]);
        Client::preauth(cmd)
    }

    /// Any IMAP server speaking preauthenticated on its stdin/stdout.
    pub fn preauth(mut cmd: Command) -> Client {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn an IMAP server");
        let w = Box::new(child.stdin.take().unwrap());
        let r = BufReader::new(Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>);
        let mut c = Client {
            child: Some(Reaper(child)),
            w,
            r,
            n: 0,
        };
        let greeting = c.line();
        assert!(greeting.starts_with("* PREAUTH"), "{greeting}");
        c
    }

    pub fn line(&mut self) -> String {
        let mut s = String::new();
        self.r.read_line(&mut s).expect("read from server");
        assert!(!s.is_empty(), "server closed the connection");
        s.trim_end_matches(['\r', '\n']).to_string()
    }

    /// The server process's id (for /proc/PID/status).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a server process").0.id()
    }

    /// Reads `n` raw bytes (a literal) without keeping them: their CRC32
    /// and the number actually read before end of input.
    pub fn literal_crc(&mut self, n: u64) -> (u32, u64) {
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let want = (buf.len() as u64).min(left) as usize;
            let got = self.r.read(&mut buf[..want]).expect("read literal");
            if got == 0 {
                break;
            }
            h.update(&buf[..got]);
            left -= got as u64;
        }
        (h.finalize(), n - left)
    }

    /// One line as raw bytes (None at end of input).
    pub fn raw_line(&mut self) -> Option<Vec<u8>> {
        let mut v = Vec::new();
        let n = self.r.read_until(b'\n', &mut v).expect("read from server");
        (n > 0).then_some(v)
    }

    pub fn send(&mut self, raw: &str) {
        self.send_bytes(raw.as_bytes());
    }

    /// [`Client::send`] of bytes that need not be text (a binary literal).
    pub fn send_bytes(&mut self, raw: &[u8]) {
        self.w.write_all(raw).unwrap();
        self.w.flush().unwrap();
    }

    /// Sends input the server may stop reading part-way (it refuses the
    /// command and closes): a broken pipe ends the sending quietly, and
    /// whether the whole input went is given back.
    pub fn send_until_closed(&mut self, raw: &str) -> bool {
        match self
            .w
            .write_all(raw.as_bytes())
            .and_then(|()| self.w.flush())
        {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => false,
            Err(e) => panic!("send: {e}"),
        }
    }

    /// Sends a command; returns its untagged lines and the tagged line.
    pub fn cmd(&mut self, command: &str) -> (Vec<String>, String) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        self.send(&format!("{tag} {command}\r\n"));
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l.starts_with(&format!("{tag} ")) {
                return (lines, l);
            }
            lines.push(l);
        }
    }

    /// Like `cmd`, asserting a tagged OK.
    pub fn ok(&mut self, command: &str) -> Vec<String> {
        let (lines, tagged) = self.cmd(command);
        assert!(
            tagged.split(' ').nth(1) == Some("OK"),
            "{command} -> {tagged}\n{lines:?}"
        );
        lines
    }

    pub fn wait_exit(self, within: Duration) {
        let mut child = self.child.expect("a server process");
        let end = Instant::now() + within;
        while Instant::now() < end {
            if let Ok(Some(_)) = child.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("server did not exit");
    }
}

/// The client's picture of the mailbox: sequence number -> (UID, flags).
#[derive(Default, Debug, Clone, PartialEq)]
pub struct Model {
    pub msgs: Vec<(Option<u32>, Option<Vec<String>>)>,
}

impl Model {
    /// Applies untagged responses, checking that every FETCH's UID agrees
    /// with what this client already knows about that sequence number.
    pub fn apply(&mut self, lines: &[String]) {
        for l in lines {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            if parts.len() < 3 || parts[0] != "*" {
                continue;
            }
            let Ok(n) = parts[1].parse::<usize>() else {
                continue;
            };
            match parts[2] {
                "EXISTS" => {
                    assert!(
                        n >= self.msgs.len(),
                        "EXISTS {n} shrinks a view of {}: {l}",
                        self.msgs.len()
                    );
                    self.msgs.resize(n, (None, None));
                }
                "EXPUNGE" => {
                    assert!(
                        n >= 1 && n <= self.msgs.len(),
                        "EXPUNGE {n} out of range {}",
                        self.msgs.len()
                    );
                    self.msgs.remove(n - 1);
                }
                "FETCH" => {
                    assert!(
                        n >= 1 && n <= self.msgs.len(),
                        "FETCH {n} out of range {}: {l}",
                        self.msgs.len()
                    );
                    let e = &mut self.msgs[n - 1];
                    if let Some(uid) = field(l, "UID ").and_then(|s| s.parse().ok()) {
                        if let Some(old) = e.0 {
                            assert_eq!(old, uid, "seq {n} changed UID: {l}");
                        }
                        e.0 = Some(uid);
                    }
                    if let Some(f) = flags(l) {
                        e.1 = Some(f);
                    }
                }
                _ => {}
            }
        }
    }
}

fn field<'a>(l: &'a str, key: &str) -> Option<&'a str> {
    let i = l.find(key)? + key.len();
    l[i..].split([' ', ')']).next()
}

pub fn flags(l: &str) -> Option<Vec<String>> {
    let i = l.find("FLAGS (")? + 7;
    let end = l[i..].find(')')? + i;
    let mut v: Vec<String> = l[i..end].split_whitespace().map(str::to_string).collect();
    v.sort();
    Some(v)
}

/// The names of a record's system flags, sorted like `flags`.
pub fn record_flags(r: &storage::Record) -> Vec<String> {
    let mut v: Vec<String> = r.flags.names().into_iter().map(str::to_string).collect();
    v.sort();
    v
}

/// The response to a FETCH of one literal item: the text before the
/// literal and the literal's CRC and length (what follows it must end in
/// a tagged OK).
pub struct LiteralFetch {
    pub before: String,
    pub crc: u32,
    pub len: u64,
    /// The lines after the literal, the tagged OK last.
    pub after: Vec<String>,
}

pub fn fetch_literal(c: &mut Client, tag: &str, command: &str) -> LiteralFetch {
    c.send(&format!("{tag} {command}\r\n"));
    let first = String::from_utf8(c.raw_line().expect("a response line")).unwrap();
    let first = first.trim_end().to_string();
    assert!(
        first.starts_with("* ") && first.contains(" FETCH ("),
        "{command} -> {first}"
    );
    let open = first.rfind('{').expect("a literal");
    let n: u64 = first[open + 1..first.len() - 1].parse().unwrap();
    let (crc, got) = c.literal_crc(n);
    assert_eq!(got, n, "{command}: literal cut short");
    let mut after = Vec::new();
    loop {
        let l = c.line();
        let done = l.starts_with(&format!("{tag} "));
        after.push(l);
        if done {
            break;
        }
    }
    assert!(
        after.last().unwrap().starts_with(&format!("{tag} OK")),
        "{command} -> {after:?}"
    );
    LiteralFetch {
        before: first,
        crc,
        len: n,
        after,
    }
}
