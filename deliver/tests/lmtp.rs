//! LMTP mode through the real binary, over stdio and a unix socket, with a
//! small client written here: pipelining, dot-stuffing, per-recipient
//! replies, unknown users, bad input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use common::Spool;

/// Reads one (possibly multi-line) reply; returns its lines.
fn reply(r: &mut impl BufRead) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let mut l = String::new();
        assert!(r.read_line(&mut l).unwrap() > 0, "server closed early");
        assert!(l.ends_with("\r\n"), "reply not CRLF-terminated: {l:?}");
        let l = l.trim_end().to_string();
        let more = l.as_bytes().get(3) == Some(&b'-');
        lines.push(l);
        if !more {
            return lines;
        }
    }
}

fn code(lines: &[String]) -> &str {
    &lines.last().unwrap()[..3]
}

/// The whole conversation, pipelined: everything up to DATA in one write,
/// then the body and QUIT in one write. Returns every reply in order.
fn conversation(
    r: &mut impl BufRead,
    w: &mut impl Write,
    rcpts: &[&str],
    body: &[u8],
) -> Vec<Vec<String>> {
    let greeting = reply(r);
    conversation_greeted(greeting, r, w, rcpts, body)
}

/// [`conversation`] after the server's `greeting` was read.
fn conversation_greeted(
    greeting: Vec<String>,
    r: &mut impl BufRead,
    w: &mut impl Write,
    rcpts: &[&str],
    body: &[u8],
) -> Vec<Vec<String>> {
    let mut out = vec![greeting];
    let mut cmds = String::from(
        "LHLO client.example\r\nMAIL FROM:<sender@example.org> SIZE=100 BODY=8BITMIME\r\n",
    );
    for rc in rcpts {
        cmds.push_str(&format!("RCPT TO:<{rc}>\r\n"));
    }
    cmds.push_str("DATA\r\n");
    w.write_all(cmds.as_bytes()).unwrap();
    w.flush().unwrap();
    out.push(reply(r)); // LHLO
    out.push(reply(r)); // MAIL
    let mut accepted = 0;
    for _ in rcpts {
        let rp = reply(r);
        if code(&rp) == "250" {
            accepted += 1;
        }
        out.push(rp);
    }
    let data = reply(r);
    let go = code(&data) == "354";
    out.push(data);
    if go {
        let mut msg = body.to_vec();
        msg.extend_from_slice(b".\r\nQUIT\r\n");
        w.write_all(&msg).unwrap();
        w.flush().unwrap();
        for _ in 0..accepted {
            out.push(reply(r));
        }
    } else {
        w.write_all(b"QUIT\r\n").unwrap();
        w.flush().unwrap();
    }
    out.push(reply(r)); // QUIT
    out
}

const BODY: &[u8] = b"Subject: lmtp\r\nMessage-ID: <l1@example.org>\r\n\r\n\
..leading dot\r\nplain line\r\n...two dots\r\n";
const STORED: &[u8] = b"Return-Path: <sender@example.org>\r\nSubject: lmtp\r\n\
Message-ID: <l1@example.org>\r\n\r\n.leading dot\r\nplain line\r\n..two dots\r\n";

fn lmtp_stdio(s: &Spool, extra: &[&str]) -> Child {
    s.command()
        .arg("--lmtp")
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A stdio server with its input and output.
fn stdio_session(s: &Spool) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = lmtp_stdio(s, &[]);
    let w = child.stdin.take().unwrap();
    let r = BufReader::new(child.stdout.take().unwrap());
    (child, w, r)
}

#[test]
fn stdio_three_recipients_one_unknown_pipelined() {
    let s = Spool::with_users(&["alice", "bob"]);
    s.create("bob", "lists");
    let mut child = lmtp_stdio(&s, &[]);
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let replies = conversation(
        &mut r,
        &mut w,
        &[
            "alice@example.org",
            "ghost@example.org",
            "bob+lists@example.org",
        ],
        BODY,
    );
    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
    // greeting, LHLO, MAIL, 3×RCPT, DATA, 2 per-recipient replies, QUIT
    assert_eq!(
        codes,
        [
            "220", "250", "250", "250", "550", "250", "354", "250", "250", "221"
        ]
    );
    let lhlo = replies[1].join("\n");
    for ext in ["PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE"] {
        assert!(lhlo.contains(ext), "{lhlo}");
    }
    assert!(replies[4][0].starts_with("550 5.1.1 "), "{:?}", replies[4]);
    drop(w);
    assert!(child.wait().unwrap().success());
    assert_eq!(s.messages("alice", "INBOX"), vec![STORED.to_vec()]);
    assert_eq!(s.messages("bob", "lists"), vec![STORED.to_vec()]);
    assert!(s.messages("bob", "INBOX").is_empty());
    assert!(!s.root.join("ghost").exists());
}

#[test]
fn same_mailbox_recipients_share_one_commit() {
    let s = Spool::with_users(&["alice"]);
    let before = s.fingerprint("alice", "INBOX").generation;
    let mut child = lmtp_stdio(&s, &[]);
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let replies = conversation(
        &mut r,
        &mut w,
        &[
            "alice@a.example",
            "alice+nosuch@a.example",
            "alice@b.example",
        ],
        BODY,
    );
    assert_eq!(replies.len(), 11);
    assert!(
        replies
            .iter()
            .all(|x| code(x) != "550" && !code(x).starts_with('4')),
        "{replies:?}"
    );
    drop(w);
    child.wait().unwrap();
    let after = s.fingerprint("alice", "INBOX");
    assert_eq!(after.exists, 3);
    assert_eq!(after.generation, before + 1, "three copies, one commit");
}

/// RFC 2033 4.2 / RFC 5321 4.5.2: one session, several transactions, each
/// message stored byte for byte as sent (dot-unstuffed, CRLF, Return-Path
/// first), whatever the message before it in the session was: a long one
/// read in many chunks, a refused one (NUL), a short one. (The session
/// reuses its read buffers from one message to the next.)
#[test]
fn one_session_many_messages_each_stored_exactly() {
    let s = Spool::with_users(&["alice"]);
    let (mut child, mut w, mut r) = stdio_session(&s);
    let mut long = b"Subject: long\nMessage-ID: <long@example.org>\n\n".to_vec();
    for i in 0..3000 {
        long.extend_from_slice(format!("line {i:05} with a bare LF ending\n").as_bytes());
    }
    let short = b"Subject: short\r\n\r\nx\r\n".to_vec();
    let nul = b"Subject: nul\r\n\r\na\0b\r\n".to_vec();
    let tiny = b"S: t\r\n\r\n".to_vec();
    let sent = [
        long.clone(),
        short.clone(),
        nul,
        short.clone(),
        tiny.clone(),
    ];
    assert_eq!(code(&reply(&mut r)), "220");
    w.write_all(b"LHLO client.example\r\n").unwrap();
    w.flush().unwrap();
    assert_eq!(code(&reply(&mut r)), "250");
    let mut codes = Vec::new();
    for m in &sent {
        w.write_all(b"MAIL FROM:<sender@example.org>\r\nRCPT TO:<alice@x>\r\nDATA\r\n")
            .unwrap();
        w.flush().unwrap();
        for _ in 0..3 {
            codes.push(code(&reply(&mut r)).to_string());
        }
        let mut data = Vec::new();
        for line in m.split_inclusive(|&b| b == b'\n') {
            if line.first() == Some(&b'.') {
                data.push(b'.');
            }
            data.extend_from_slice(line);
        }
        data.extend_from_slice(b".\r\n");
        w.write_all(&data).unwrap();
        w.flush().unwrap();
        codes.push(code(&reply(&mut r)).to_string());
    }
    w.write_all(b"QUIT\r\n").unwrap();
    drop(w);
    child.wait().unwrap();
    let per_message = ["250", "250", "354"];
    for (i, want) in ["250", "250", "554", "250", "250"].iter().enumerate() {
        assert_eq!(codes[i * 4..i * 4 + 3], per_message, "{codes:?}");
        assert_eq!(codes[i * 4 + 3], *want, "{codes:?}");
    }
    let stored = |m: &[u8]| {
        let mut out = b"Return-Path: <sender@example.org>\r\n".to_vec();
        for line in m.split_inclusive(|&b| b == b'\n') {
            let text = line.strip_suffix(b"\n").unwrap_or(line);
            out.extend_from_slice(text.strip_suffix(b"\r").unwrap_or(text));
            out.extend_from_slice(b"\r\n");
        }
        out
    };
    assert_eq!(
        s.messages("alice", "INBOX"),
        vec![stored(&long), stored(&short), stored(&short), stored(&tiny)]
    );
}

#[test]
fn per_recipient_failures_and_bad_data() {
    let s = Spool::with_users(&["alice", "bob"]);
    s.set_config("quota.bob = 10\n");
    let mut child = lmtp_stdio(&s, &[]);
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    // bob is over quota: 452 at RCPT (size hint 100 > 10).
    let replies = conversation(&mut r, &mut w, &["alice@x", "bob@x"], BODY);
    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "452", "354", "250", "221"]
    );
    assert!(replies[4][0].starts_with("452 4.2.2"), "{:?}", replies[4]);
    drop(w);
    child.wait().unwrap();

    // A NUL byte: every recipient gets 554 5.6.0 and nothing is stored.
    let before = s.fingerprint("alice", "INBOX");
    let mut child = lmtp_stdio(&s, &[]);
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let replies = conversation(
        &mut r,
        &mut w,
        &["alice@x", "alice@y"],
        b"Subject: x\r\n\r\na\0b\r\n",
    );
    assert_eq!(code(&replies[5]), "354");
    assert!(replies[6][0].starts_with("554 5.6.0"), "{replies:?}");
    assert!(replies[7][0].starts_with("554 5.6.0"), "{replies:?}");
    assert_eq!(code(&replies[8]), "221");
    drop(w);
    child.wait().unwrap();
    assert_eq!(s.fingerprint("alice", "INBOX"), before);
}

#[test]
fn protocol_errors_and_rset() {
    let s = Spool::with_users(&["alice"]);
    let (mut child, mut w, mut r) = stdio_session(&s);
    assert_eq!(code(&reply(&mut r)), "220");
    let mut say = |cmd: &str| {
        w.write_all(cmd.as_bytes()).unwrap();
        w.write_all(b"\r\n").unwrap();
        w.flush().unwrap();
        reply(&mut r)
    };
    assert_eq!(code(&say("MAIL FROM:<a@b>")), "503");
    assert_eq!(code(&say("EHLO x")), "500");
    assert_eq!(code(&say("LHLO x")), "250");
    assert_eq!(code(&say("RCPT TO:<alice@x>")), "503");
    assert_eq!(code(&say("DATA")), "503");
    assert_eq!(code(&say("MAIL FROM:<a@b> FOO=1")), "555");
    assert_eq!(code(&say("MAIL FROM:<a@b>")), "250");
    assert_eq!(code(&say("MAIL FROM:<a@b>")), "503");
    assert_eq!(code(&say("RCPT TO:<nobody@x>")), "550");
    assert_eq!(code(&say("DATA")), "503");
    assert_eq!(code(&say("RSET")), "250");
    assert_eq!(code(&say("NOOP")), "250");
    assert_eq!(code(&say(&"X".repeat(10_000))), "500");
    assert_eq!(code(&say("QUIT")), "221");
    let _ = say;
    assert!(child.wait().unwrap().success());
}

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `deliver ARGS` in the background, quiet.
fn listening_server(s: &Spool, args: &[&str]) -> Server {
    Server(
        s.command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// An LMTP server whose every commit holds the index lock for `pause_ms`
/// (fault point `append.after_lock`), so concurrent sessions pile up.
fn slow_commit_server(s: &Spool, args: &[&str], pause_ms: u64) -> Server {
    Server(
        s.command()
            .args(args)
            .env(
                "MAILSTORE_TEST_FAULT",
                format!("append.after_lock=pause:{pause_ms}"),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn connect(path: &std::path::Path) -> UnixStream {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match UnixStream::connect(path) {
            Ok(c) => {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                return c;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect {}: {e}", path.display()),
        }
    }
}

#[test]
fn unix_socket_concurrent_sessions() {
    let s = Spool::with_users(&["alice", "bob", "carol"]);
    let sock = s.tmp.path().join("lmtp.sock");
    let listen = format!("unix:{}", sock.display());
    let _server = listening_server(&s, &["--lmtp", "--listen", &listen, "--unsafe-no-fsync"]);
    connect(&sock); // wait until it listens
    std::thread::scope(|sc| {
        for i in 0..4 {
            let sock = &sock;
            sc.spawn(move || {
                for j in 0..5 {
                    let c = connect(sock);
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    let body = format!("Subject: {i}-{j}\r\n\r\nhello\r\n");
                    let replies = conversation(
                        &mut r,
                        &mut w,
                        &["alice@x", "bob@x", "nobody@x", "carol@x"],
                        body.as_bytes(),
                    );
                    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
                    assert_eq!(
                        codes,
                        [
                            "220", "250", "250", "250", "250", "550", "250", "354", "250", "250",
                            "250", "221"
                        ]
                    );
                    let mut rest = Vec::new();
                    r.read_to_end(&mut rest).unwrap();
                    assert!(rest.is_empty());
                }
            });
        }
    });
    for u in ["alice", "bob", "carol"] {
        let mut subjects: Vec<String> = s
            .messages(u, "INBOX")
            .iter()
            .map(|m| {
                String::from_utf8_lossy(m)
                    .lines()
                    .nth(1)
                    .unwrap()
                    .to_string()
            })
            .collect();
        subjects.sort();
        let mut want: Vec<String> = (0..4)
            .flat_map(|i| (0..5).map(move |j| format!("Subject: {i}-{j}")))
            .collect();
        want.sort();
        assert_eq!(subjects, want, "{u}");
    }
}

/// Sessions are threads of one server: several of them delivering the
/// first message of a new user at once all create (or find) the same
/// INBOX; none gets a temporary failure.
#[test]
fn concurrent_first_deliveries_autocreate_one_inbox() {
    let s = Spool::new();
    let sock = s.tmp.path().join("auto.sock");
    let listen = format!("unix:{}", sock.display());
    let _server = listening_server(&s, &["--lmtp", "--listen", &listen, "--autocreate"]);
    connect(&sock);
    for round in 0..5 {
        let user = format!("new{round}");
        const N: usize = 6;
        let barrier = std::sync::Barrier::new(N);
        std::thread::scope(|sc| {
            for i in 0..N {
                let (sock, user, barrier) = (&sock, &user, &barrier);
                sc.spawn(move || {
                    let c = connect(sock);
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    let body = format!("Subject: a{i}\r\n\r\nx\r\n");
                    barrier.wait();
                    let rcpt = format!("{user}@x");
                    let replies = conversation(&mut r, &mut w, &[&rcpt], body.as_bytes());
                    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
                    assert_eq!(
                        codes,
                        ["220", "250", "250", "250", "354", "250", "221"],
                        "{replies:?}"
                    );
                });
            }
        });
        assert_eq!(s.messages(&user, "INBOX").len(), N, "{user}");
    }
}

/// A session that panics ends alone: its connection closes, the panic is
/// logged, and its `--max-connections` slot is given back, so the server
/// keeps accepting and delivering.
#[test]
fn a_panicking_session_gives_its_slot_back_and_is_logged() {
    let s = Spool::with_users(&["alice"]);
    let sock = s.tmp.path().join("panic.sock");
    let log = s.tmp.path().join("lmtp.log");
    let listen = format!("unix:{}", sock.display());
    let _server = Server(
        s.command()
            .args(["--lmtp", "--listen", &listen, "--max-connections", "2"])
            .arg("--log-file")
            .arg(&log)
            .env("DELIVER_TEST_PANIC_ON_NOOP", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    connect(&sock);
    // A slot is given back when its session's thread has ended, a moment
    // after the client sees the connection close: until then a new
    // connection may still get 421.
    let greeted = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = connect(&sock);
            let mut r = BufReader::new(c.try_clone().unwrap());
            let greeting = reply(&mut r);
            if code(&greeting) == "220" {
                return (r, c, greeting);
            }
            assert!(
                code(&greeting) == "421" && Instant::now() < deadline,
                "{greeting:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    for _ in 0..5 {
        let (mut r, mut w, _) = greeted();
        w.write_all(b"NOOP\r\n").unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    }
    // Greeted first (a 421 closes the connection: writing the commands
    // to it would fail), then the whole conversation.
    let (mut r, mut w, greeting) = greeted();
    let replies = conversation_greeted(
        greeting,
        &mut r,
        &mut w,
        &["alice@x"],
        b"Subject: after\r\n\r\nx\r\n",
    );
    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "354", "250", "221"],
        "{replies:?}"
    );
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("LMTP session ended by an internal error")
            .count(),
        5,
        "{text}"
    );
    assert!(text.contains("DELIVER_TEST_PANIC_ON_NOOP is set"), "{text}");
}

/// Every recipient's staged copy stays open until the commit: a
/// transaction with more recipients than the soft open-file limit still
/// delivers to all of them (the server raises its soft limit to the hard
/// one).
#[test]
fn many_recipients_beyond_the_soft_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let s = Spool::with_users(&["alice"]);
    let mut cmd = s.command();
    cmd.arg("--lmtp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: only setrlimit between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
            lim.rlim_cur = 64;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    let rcpts = vec!["alice@x"; 150];
    let replies = conversation(&mut r, &mut w, &rcpts, b"Subject: many\r\n\r\nx\r\n");
    drop(w);
    child.wait().unwrap();
    let after_data = &replies[replies.len() - 1 - rcpts.len()..replies.len() - 1];
    for rp in after_data {
        assert!(rp[0].starts_with("250 2.0.0 delivered"), "{rp:?}");
    }
    assert_eq!(s.messages("alice", "INBOX").len(), rcpts.len());
}

#[test]
fn concurrent_sessions_into_one_mailbox_share_commits() {
    let s = Spool::with_users(&["alice"]);
    let before = s.fingerprint("alice", "INBOX").generation;
    let sock = s.tmp.path().join("group.sock");
    let listen = format!("unix:{}", sock.display());
    // Every commit holds the lock for 400 ms: sessions that finish DATA
    // meanwhile must be committed together by the next leader.
    let _server = slow_commit_server(&s, &["--lmtp", "--listen", &listen], 400);
    connect(&sock);
    const N: usize = 8;
    let mut uids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..N)
            .map(|i| {
                let sock = &sock;
                sc.spawn(move || {
                    let c = connect(sock);
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    let body = format!("Subject: g{i}\r\n\r\nx\r\n");
                    let replies = conversation(&mut r, &mut w, &["alice@x"], body.as_bytes());
                    let last = &replies[replies.len() - 2][0];
                    assert!(last.starts_with("250 2.0.0"), "{replies:?}");
                    last.rsplit(' ').next().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    uids.sort_by_key(|u| u.parse::<u32>().unwrap());
    let want: Vec<String> = (1..=N).map(|u| u.to_string()).collect();
    assert_eq!(uids, want, "every session got its own UID");
    let fp = s.fingerprint("alice", "INBOX");
    assert_eq!(fp.exists, N as u32);
    assert!(
        fp.generation - before < N as u64,
        "{N} sessions took {} commits: no commit was shared",
        fp.generation - before
    );
}

#[test]
fn dedup_one_transaction_same_user_twice_stores_one_copy() {
    let s = Spool::with_users(&["alice", "bob"]);
    // One LMTP server process on stdio per transaction; returns the
    // replies and the server's stderr.
    let session = |rcpts: &[&str]| {
        let mut child = s
            .command()
            .args(["--lmtp", "--dedup-window", "3600"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut w = child.stdin.take().unwrap();
        let mut r = BufReader::new(child.stdout.take().unwrap());
        let replies = conversation(&mut r, &mut w, rcpts, BODY);
        drop(w);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        (replies, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (replies, err) = session(&["alice@a.example", "bob@x", "alice@b.example"]);
    let codes: Vec<&str> = replies.iter().map(|x| code(x)).collect();
    assert_eq!(
        codes,
        [
            "220", "250", "250", "250", "250", "250", "354", "250", "250", "250", "221"
        ]
    );
    assert!(
        replies[7][0].contains("delivered to alice uid 1"),
        "{replies:?}"
    );
    assert!(
        replies[8][0].contains("delivered to bob uid 1"),
        "{replies:?}"
    );
    assert!(replies[9][0].contains("duplicate"), "{replies:?}");
    assert_eq!(err.matches("duplicate suppressed").count(), 1, "{err}");
    assert!(err.contains("message_id=\"<l1@example.org>\""), "{err}");
    // A later transaction with the same Message-ID: 250, nothing stored.
    let (replies, err) = session(&["alice@a.example"]);
    let last = &replies[replies.len() - 2][0];
    assert!(last.starts_with("250 2.0.0 duplicate"), "{replies:?}");
    assert!(err.contains("duplicate suppressed"), "{err}");
    assert_eq!(s.messages("alice", "INBOX"), vec![STORED.to_vec()]);
    assert_eq!(s.messages("bob", "INBOX"), vec![STORED.to_vec()]);
    // Without the window the same transaction stores both copies.
    let s = Spool::with_users(&["alice"]);
    let mut child = lmtp_stdio(&s, &[]);
    let mut w = child.stdin.take().unwrap();
    let mut r = BufReader::new(child.stdout.take().unwrap());
    conversation(
        &mut r,
        &mut w,
        &["alice@a.example", "alice@b.example"],
        BODY,
    );
    drop(w);
    child.wait().unwrap();
    assert_eq!(s.messages("alice", "INBOX").len(), 2);
}

#[test]
fn dedup_concurrent_sessions_same_message_id_store_one_copy() {
    let s = Spool::with_users(&["alice"]);
    let sock = s.tmp.path().join("dedup.sock");
    let listen = format!("unix:{}", sock.display());
    // Every commit holds the index lock for 300 ms, so the sessions
    // pile up: in one group batch, or behind it on the duplicate log.
    let _server = slow_commit_server(
        &s,
        &["--lmtp", "--listen", &listen, "--dedup-window", "3600"],
        300,
    );
    connect(&sock);
    const N: usize = 6;
    let replies: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..N)
            .map(|_| {
                let sock = &sock;
                sc.spawn(move || {
                    let c = connect(sock);
                    let mut r = BufReader::new(c.try_clone().unwrap());
                    let mut w = c;
                    let replies = conversation(&mut r, &mut w, &["alice@x"], BODY);
                    replies[replies.len() - 2][0].clone()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        replies.iter().all(|r| r.starts_with("250 2.0.0 ")),
        "{replies:?}"
    );
    let stored = replies.iter().filter(|r| r.contains(" uid ")).count();
    assert_eq!(stored, 1, "{replies:?}");
    assert_eq!(s.messages("alice", "INBOX"), vec![STORED.to_vec()]);
    // A one-shot delivery of the same Message-ID (another process, the
    // same log) is suppressed too.
    let o = s.deliver(&["-d", "alice", "--dedup-window", "3600"], BODY);
    assert_eq!(o.status.code(), Some(0));
    assert!(common::stderr(&o).contains("duplicate suppressed"));
    assert_eq!(s.messages("alice", "INBOX").len(), 1);
    common::assert_no_stray_staged(&s, "alice", "INBOX");
}
