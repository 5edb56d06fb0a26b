//! FETCH in bounded memory, whatever the message size; whole-message
//! reads checked against the record (size always, CRC32 when the whole
//! file is read); a non-synchronizing literal the server refuses ends the
//! command and the connection instead of hanging.

mod imap_common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

const BOUNDARY: &str = "BIG";
/// Base64-looking lines of the attachment: 76 characters and CRLF.
const LINE: u64 = 78;

fn big_header() -> Vec<u8> {
    format!(
        "From: Bob <bob@example.org>\r\nTo: alice@example.org\r\nSubject: a big one\r\n\
         Message-ID: <big@test>\r\nMIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{BOUNDARY}\"\r\n\r\n\
         This is a MIME message.\r\n--{BOUNDARY}\r\n\
         Content-Type: application/octet-stream\r\n\
         Content-Transfer-Encoding: base64\r\n\
         Content-Disposition: attachment; filename=\"big.bin\"\r\n\r\n"
    )
    .into_bytes()
}

fn big_trailer() -> Vec<u8> {
    format!("--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nsmall text part\r\n--{BOUNDARY}--\r\n")
        .into_bytes()
}

/// Generates the big message on the fly: header, `lines` attachment
/// lines, trailer; never more than one line in memory.
struct BigMessage {
    head: Vec<u8>,
    tail: Vec<u8>,
    lines: u64,
    next_line: u64,
    pending: Vec<u8>,
    pos: usize,
    stage: u8,
}

impl BigMessage {
    fn new(lines: u64) -> BigMessage {
        BigMessage {
            head: big_header(),
            tail: big_trailer(),
            lines,
            next_line: 0,
            pending: Vec::new(),
            pos: 0,
            stage: 0,
        }
    }
}

impl Read for BigMessage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        while self.pos == self.pending.len() {
            self.pos = 0;
            self.pending.clear();
            match self.stage {
                0 => {
                    self.pending.extend_from_slice(&self.head);
                    self.stage = 1;
                }
                1 if self.next_line < self.lines => {
                    let mut x = self.next_line.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..76 {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        self.pending.push(ALPHABET[(x % 64) as usize]);
                    }
                    self.pending.extend_from_slice(b"\r\n");
                    self.next_line += 1;
                }
                1 => {
                    self.pending.extend_from_slice(&self.tail);
                    self.stage = 2;
                }
                _ => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// CRC32 of `len` bytes of a file from `offset`, read in chunks.
fn file_crc(path: &Path, offset: u64, len: u64) -> u32 {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).unwrap();
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let want = (buf.len() as u64).min(len - done) as usize;
        f.read_exact_at(&mut buf[..want], offset + done).unwrap();
        h.update(&buf[..want]);
        done += want as u64;
    }
    h.finalize()
}

/// Peak resident set of a process, in KiB (VmHWM).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn message_path(spool: &Path, user: &str, uid: u32) -> PathBuf {
    spool.join(user).join("INBOX").join(format!("{uid}."))
}

/// A 200 MB multipart message (a base64 attachment and a small text
/// part), fetched whole, by part and by structure from a real server
/// process: every literal has the exact bytes of the file, and the
/// server's peak RSS stays under 64 MiB.
#[test]
fn fetch_of_a_200_mb_message_stays_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    let lines = 200 * 1024 * 1024 / LINE;
    {
        let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
        inbox
            .append(BigMessage::new(lines), AppendOptions::default())
            .unwrap();
    }
    let path = message_path(&spool, "alice", 1);
    let size = std::fs::metadata(&path).unwrap().len();
    let head = big_header().len() as u64;
    assert_eq!(size, head + lines * LINE + big_trailer().len() as u64);
    assert!(size > 200 * 1024 * 1024);
    // Part 1 ends before the CRLF that precedes the boundary line.
    let part1_len = lines * LINE - 2;
    let whole_crc = file_crc(&path, 0, size);
    let part1_crc = file_crc(&path, head, part1_len);
    let header_len = big_header()
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap() as u64
        + 4;

    let mut c = Client::spawn(&spool, "alice");
    let pid = c.pid();
    c.ok("SELECT INBOX");
    let limit_kib = 64 * 1024;
    let mut peaks = Vec::new();
    let mut check_peak = |what: &str| {
        let kib = peak_rss_kib(pid);
        peaks.push(format!("{what}: {kib} KiB"));
        assert!(
            kib < limit_kib,
            "server peak RSS {kib} KiB after {what} (limit {limit_kib} KiB)"
        );
    };

    let r = fetch_literal(&mut c, "f1", "FETCH 1 (BODY.PEEK[])");
    assert_eq!((r.len, r.crc), (size, whole_crc), "BODY[] bytes");
    check_peak("BODY.PEEK[]");

    let r = fetch_literal(&mut c, "f2", "FETCH 1 (BODY.PEEK[1])");
    assert!(r.before.contains("BODY[1] {"), "{}", r.before);
    assert_eq!((r.len, r.crc), (part1_len, part1_crc), "BODY[1] bytes");
    check_peak("BODY.PEEK[1]");

    let (lines2, tagged) = c.cmd("FETCH 1 (BODY.PEEK[2] BODY.PEEK[1.MIME])");
    assert!(tagged.contains("OK"), "{tagged}");
    let text = lines2.join("\n");
    assert!(
        text.contains("BODY[2] {15}\nsmall text part BODY[1.MIME] {"),
        "{text}"
    );
    assert!(
        text.contains("Content-Type: application/octet-stream"),
        "{text}"
    );
    check_peak("BODY.PEEK[2]");

    let (lines3, tagged) = c.cmd("FETCH 1 (BODYSTRUCTURE)");
    assert!(tagged.contains("OK"), "{tagged}");
    let bs = lines3.join("\n");
    assert!(
        bs.contains(&format!(
            "(\"APPLICATION\" \"OCTET-STREAM\" NIL NIL NIL \"BASE64\" {part1_len} NIL (\"ATTACHMENT\" (\"FILENAME\" \"big.bin\"))"
        )),
        "{bs}"
    );
    assert!(
        bs.contains("(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 15 0"),
        "{bs}"
    );
    assert!(bs.contains("\"MIXED\" (\"BOUNDARY\" \"BIG\")"), "{bs}");
    check_peak("BODYSTRUCTURE");

    let (lines4, tagged) = c.cmd("FETCH 1 (RFC822.SIZE ENVELOPE BODY)");
    assert!(tagged.contains("OK"), "{tagged}");
    let l = lines4.join("\n");
    assert!(l.contains(&format!("RFC822.SIZE {size}")), "{l}");
    assert!(l.contains("\"a big one\""), "{l}");
    assert!(l.contains("\"<big@test>\""), "{l}");
    check_peak("RFC822.SIZE ENVELOPE BODY");

    let r = fetch_literal(&mut c, "f5", "FETCH 1 (BODY.PEEK[HEADER])");
    assert_eq!((r.len, r.crc), (header_len, file_crc(&path, 0, header_len)));
    check_peak("BODY.PEEK[HEADER]");

    let r = fetch_literal(&mut c, "f6", "FETCH 1 (BODY.PEEK[TEXT])");
    assert_eq!(
        (r.len, r.crc),
        (
            size - header_len,
            file_crc(&path, header_len, size - header_len)
        )
    );
    check_peak("BODY.PEEK[TEXT]");

    let r = fetch_literal(&mut c, "f7", "FETCH 1 (BODY.PEEK[]<0.100000>)");
    assert!(r.before.contains("BODY[]<0> {100000}"), "{}", r.before);
    assert_eq!(r.crc, file_crc(&path, 0, 100_000));
    let r = fetch_literal(&mut c, "f8", "FETCH 1 (BODY.PEEK[1]<1000.50>)");
    assert!(r.before.contains("BODY[1]<1000> {50}"), "{}", r.before);
    assert_eq!(r.crc, file_crc(&path, head + 1000, 50));
    check_peak("partial");

    // SEARCH reads bodies in chunks too.
    let l = c.ok("SEARCH BODY \"small text part\" SUBJECT \"big one\"");
    assert_eq!(l, ["* SEARCH 1"]);
    let l = c.ok("SEARCH TEXT \"not in there\"");
    assert_eq!(l, ["* SEARCH"]);
    check_peak("SEARCH BODY/TEXT");
    c.ok("LOGOUT");
    eprintln!("server peak RSS: {}", peaks.join(", "));
}

/// Overwrites one byte of a file in place (same size).
fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x20], offset).unwrap();
}

/// A message of about `size` bytes (CRLF lines), `Subject: tag`.
fn sized_message(tag: &str, size: usize) -> Vec<u8> {
    let mut m = format!("From: a@b.example\r\nSubject: {tag}\r\n\r\n").into_bytes();
    while m.len() < size {
        m.extend_from_slice(
            b"0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n",
        );
    }
    m
}

/// Asserts a FETCH is refused as corrupt with no message data sent.
fn assert_corrupt(c: &mut Client, command: &str) {
    let (lines, tagged) = c.cmd(command);
    assert!(
        tagged.contains(" NO [CORRUPTION]"),
        "{command} -> {tagged} {lines:?}"
    );
    assert!(
        lines.iter().all(|l| !l.contains('{')),
        "{command} sent data: {lines:?}"
    );
    assert!(
        !tagged.contains("/INBOX/"),
        "{command}: the reply names a path: {tagged}"
    );
}

/// One flipped byte in a message file (size unchanged): a full-body FETCH
/// answers NO [CORRUPTION] and sends none of it, for a small message
/// (read whole) and a large one (checked before streaming); the session
/// goes on, and the intact message is still served.
#[test]
fn crc_mismatch_is_refused_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    let small = sized_message("small", 2_000);
    let large = sized_message("large", 3 * 1024 * 1024);
    {
        let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
        for m in [&small, &large, &small] {
            inbox.append(&m[..], AppendOptions::default()).unwrap();
        }
    }
    flip_byte(&message_path(&spool, "alice", 1), 1_500);
    flip_byte(&message_path(&spool, "alice", 2), large.len() as u64 - 10);
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    // Reading the small one whole for SEARCH meets its CRC too.
    let (_, tagged) = c.cmd("SEARCH BODY \"no such words\"");
    assert!(tagged.contains(" NO [CORRUPTION]"), "{tagged}");
    for seq in [1, 2] {
        assert_corrupt(&mut c, &format!("FETCH {seq} (BODY.PEEK[])"));
        assert_corrupt(&mut c, &format!("FETCH {seq} (BODY[])"));
        assert_corrupt(&mut c, &format!("FETCH {seq} RFC822"));
        assert!(c.ok("NOOP").is_empty());
    }
    // The failed BODY[] and RFC822 left no \Seen behind.
    let flags = c.ok("FETCH 1:2 (FLAGS)").join("\n");
    assert!(!flags.contains("\\Seen"), "{flags}");
    // The intact message is served.
    let r = fetch_literal(&mut c, "ok3", "FETCH 3 (BODY.PEEK[])");
    assert_eq!(
        (r.len, r.crc),
        (small.len() as u64, crc32fast::hash(&small))
    );
    // A range of several messages serves the intact ones and reports.
    let (lines, tagged) = c.cmd("FETCH 1:3 (BODY.PEEK[])");
    assert!(tagged.contains(" NO [CORRUPTION]"), "{tagged}");
    let fetched: Vec<&String> = lines.iter().filter(|l| l.contains(" FETCH ")).collect();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert!(fetched[0].starts_with("* 3 FETCH"), "{fetched:?}");
    c.ok("LOGOUT");
}

/// A message file whose size differs from its record (grown or cut) is
/// refused by every FETCH that reads it; the session goes on.
#[test]
fn size_mismatch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_store(&spool, "alice");
    let user = UserName::new("alice").unwrap();
    {
        let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
        inbox
            .append(&sized_message("grown", 3_000)[..], AppendOptions::default())
            .unwrap();
        inbox
            .append(
                &sized_message("cut", 2 * 1024 * 1024)[..],
                AppendOptions::default(),
            )
            .unwrap();
    }
    let grown = message_path(&spool, "alice", 1);
    let f = std::fs::OpenOptions::new()
        .append(true)
        .open(&grown)
        .unwrap();
    use std::io::Write;
    (&f).write_all(b"extra line\r\n").unwrap();
    drop(f);
    let cut = message_path(&spool, "alice", 2);
    let len = std::fs::metadata(&cut).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    let mut c = Client::spawn(&spool, "alice");
    c.ok("SELECT INBOX");
    for seq in [1, 2] {
        for items in [
            "BODY.PEEK[]",
            "BODY.PEEK[HEADER]",
            "ENVELOPE",
            "BODYSTRUCTURE",
            "BODY.PEEK[]<0.10>",
        ] {
            assert_corrupt(&mut c, &format!("FETCH {seq} ({items})"));
        }
        assert!(c.ok("NOOP").is_empty());
    }
    let (_, tagged) = c.cmd("SEARCH TEXT \"abc\"");
    assert!(tagged.contains(" NO [CORRUPTION]"), "{tagged}");
    // What needs no message bytes is still answered from the record.
    let l = c.ok("FETCH 1:2 (UID RFC822.SIZE FLAGS)");
    assert_eq!(l.len(), 2, "{l:?}");
    c.ok("LOGOUT");
}

/// Every line the server sends until it closes the connection; the server
/// is killed after `limit` so that a server that never answers fails the
/// test instead of hanging it.
fn lines_until_close(c: &mut Client, limit: Duration) -> Vec<String> {
    let pid = c.pid();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + limit;
            while Instant::now() < end {
                if done.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            // SAFETY: plain kill(2) of the child this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        })
    };
    let mut got = Vec::new();
    while let Some(l) = c.raw_line() {
        got.push(String::from_utf8_lossy(&l).trim_end().to_string());
    }
    done.store(true, Ordering::SeqCst);
    watchdog.join().unwrap();
    got
}

/// A command whose lines add up past the limit through `{0}` literals
/// (each line short, no literal big) is refused and the connection ends,
/// instead of the command growing without bound.
#[test]
fn endless_command_of_empty_literals_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_store(&spool, "alice");
    let mut c = Client::spawn(&spool, "alice");
    let start = Instant::now();
    c.send("a SELECT {0+}\r\n");
    // 315 KB of lines (the limit is 256 KiB), each announcing an empty
    // literal. The server stops reading at the limit and closes, so the
    // tail may meet a closed pipe.
    c.send_until_closed(&" {0+}\r\n".repeat(45_000));
    let got = lines_until_close(&mut c, Duration::from_secs(20));
    assert_eq!(
        got.first().map(String::as_str),
        Some("a BAD Command too long"),
        "{got:?}"
    );
    assert!(
        got.get(1).is_some_and(|l| l.starts_with("* BYE")),
        "{got:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
}

/// `APPEND {4294967295+}`: a non-synchronizing literal over the limit
/// gets a tagged NO [TOOBIG] at once, and since the client sends its
/// octets anyway, the server says BYE and closes instead of waiting for
/// 4 GiB.
#[test]
fn oversized_non_synchronizing_literal_is_refused_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    seed_store(&spool, "alice");
    let mut c = Client::spawn(&spool, "alice");
    let start = Instant::now();
    c.send("a APPEND INBOX {4294967295+}\r\n");
    c.send_until_closed("From: x@y.example\r\nSubject: big\r\n\r\nthe start of 4 GiB\r\n");
    let got = lines_until_close(&mut c, Duration::from_secs(20));
    let elapsed = start.elapsed();
    assert!(
        got.first()
            .is_some_and(|l| l.starts_with("a NO [TOOBIG]") || l.starts_with("a BAD")),
        "{got:?}"
    );
    assert!(
        got.get(1).is_some_and(|l| l.starts_with("* BYE")),
        "{got:?}"
    );
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    c.wait_exit(Duration::from_secs(5));
    // A new session works, and nothing was stored.
    let mut c = Client::spawn(&spool, "alice");
    let l = c.ok("SELECT INBOX");
    assert!(l.iter().any(|l| l == "* 0 EXISTS"), "{l:?}");
    c.ok("LOGOUT");
}
