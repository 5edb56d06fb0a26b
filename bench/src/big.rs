//! `imap-load gen-maildir` and `imap-load big`: the big-mailbox benchmark
//! (bench/bigmailbox_bench.sh, issue 21).
//!
//! `gen-maildir DIR N`: N small, varied messages straight into a Maildir
//! (`cur/`, flags and size in the file name, mtime = received date).
//! Bodies draw words from a Zipf-like vocabulary, so that a common word
//! ([`COMMON`]) is in about a third of the messages and a rare one
//! ([`RARE`]) in about one in a thousand (N/997 + 1); every fifth message
//! is multipart (text and HTML, or text and a small base64 attachment);
//! two in three are `\Seen`. CRLF line ends (the size in `S=` and `W=`
//! is exact for both servers). Deterministic for a given N.
//!
//! `big`: two sessions A and B logged in and SELECTed on the big INBOX;
//! each measured operation is run `--rounds` times (searches
//! `--search-rounds`, after one untimed warm-up run) and its median,
//! minimum and maximum are printed, with the serving processes' peak RSS
//! during it (VmHWM, reset before each run through
//! `/proc/PID/clear_refs`; needs root). One JSON line ends the output.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{Conn, Res, Rng, ms};

/// In about a third of the messages.
pub const COMMON: &str = "meeting";
/// In message i when i % 997 == 5.
pub const RARE: &str = "quixotry";

/// Vocabulary size; word k has weight 1/(k+1) (Zipf).
const VOCAB: usize = 4000;

fn vocabulary() -> Vec<String> {
    // Pronounceable made-up words from syllables: deterministic, distinct.
    const SYL: [&str; 24] = [
        "ka", "lo", "mi", "ne", "ru", "ta", "shi", "po", "ven", "dra", "mul", "to", "zen", "ar",
        "bel", "cor", "fin", "gu", "hol", "jas", "ke", "lim", "nor", "pe",
    ];
    let mut v = vec![
        "the".to_string(),
        "and".into(),
        "for".into(),
        "with".into(),
        "report".into(),
        "project".into(),
        "please".into(),
        "thanks".into(),
    ];
    let mut i = 0usize;
    while v.len() < VOCAB {
        let w = format!(
            "{}{}{}",
            SYL[i % 24],
            SYL[(i / 24) % 24],
            SYL[(i / 576) % 24]
        );
        if w != COMMON && w != RARE {
            v.push(w);
        }
        i += 1;
    }
    v
}

struct Words {
    vocab: Vec<String>,
    cum: Vec<f64>,
}

impl Words {
    fn new() -> Words {
        let vocab = vocabulary();
        let mut cum = Vec::with_capacity(vocab.len());
        let mut t = 0.0;
        for k in 0..vocab.len() {
            t += 1.0 / (k as f64 + 1.0);
            cum.push(t);
        }
        Words { vocab, cum }
    }
    fn pick(&self, rng: &mut Rng) -> &str {
        let total = *self.cum.last().unwrap();
        let x = (rng.next() >> 11) as f64 / (1u64 << 53) as f64 * total;
        let k = self
            .cum
            .partition_point(|&c| c < x)
            .min(self.vocab.len() - 1);
        &self.vocab[k]
    }
    /// `lines` lines of about 70 characters; `extra` words go in the middle.
    fn text(&self, rng: &mut Rng, lines: usize, extra: &[&str], out: &mut String) {
        for l in 0..lines {
            let mut len = 0;
            while len < 70 {
                let w = self.pick(rng);
                if len > 0 {
                    out.push(' ');
                }
                out.push_str(w);
                len += w.len() + 1;
            }
            if l == lines / 2 {
                for e in extra {
                    out.push(' ');
                    out.push_str(e);
                }
            }
            out.push_str("\r\n");
        }
    }
}

/// Message i of the generated mailbox, and whether it is \Seen.
fn message(words: &Words, i: u64, date: i64) -> (String, bool) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    rng.next();
    let mut extra = Vec::new();
    if rng.below(3) == 0 {
        extra.push(COMMON);
    }
    if i % 997 == 5 {
        extra.push(RARE);
    }
    let sender = rng.below(500);
    let mut subject = String::new();
    words.text(&mut rng, 1, &[], &mut subject);
    let subject: String = subject.trim_end().chars().take(40).collect();
    let re = if rng.below(4) == 0 { "Re: " } else { "" };
    let mut m = format!(
        "Return-Path: <user{sender}@example.org>\r\n\
         From: User {sender} <user{sender}@example.org>\r\n\
         To: bench@example.org\r\n\
         Subject: {re}{subject}\r\n\
         Date: {}\r\n\
         Message-ID: <{i}.{sender}@bench.example.org>\r\n\
         MIME-Version: 1.0\r\n",
        rfc2822(date)
    );
    // A few hundred bytes to a few KB: 2 to 40 lines.
    let lines = 2 + rng.below(39) as usize;
    let kind = i % 5;
    if kind == 0 {
        let b = format!("b{i}x");
        m.push_str(&format!(
            "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n\
             --{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ));
        let mut t = String::new();
        words.text(&mut rng, lines, &extra, &mut t);
        m.push_str(&t);
        m.push_str(&format!(
            "--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>\r\n"
        ));
        m.push_str(&t);
        m.push_str(&format!("</p></body></html>\r\n--{b}--\r\n"));
    } else if kind == 1 && i % 2 == 1 {
        let b = format!("m{i}y");
        m.push_str(&format!(
            "Content-Type: multipart/mixed; boundary=\"{b}\"\r\n\r\n\
             --{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        ));
        words.text(&mut rng, lines, &extra, &mut m);
        m.push_str(&format!(
            "--{b}\r\nContent-Type: application/octet-stream; name=\"data{i}.bin\"\r\n\
             Content-Transfer-Encoding: base64\r\n\
             Content-Disposition: attachment; filename=\"data{i}.bin\"\r\n\r\n"
        ));
        for _ in 0..(1 + rng.below(12)) {
            let mut l = String::with_capacity(76);
            for _ in 0..76 {
                let c = rng.below(64) as u8;
                l.push(match c {
                    0..=25 => (b'A' + c) as char,
                    26..=51 => (b'a' + c - 26) as char,
                    52..=61 => (b'0' + c - 52) as char,
                    62 => '+',
                    _ => '/',
                });
            }
            m.push_str(&l);
            m.push_str("\r\n");
        }
        m.push_str(&format!("--{b}--\r\n"));
    } else {
        m.push_str("Content-Type: text/plain; charset=utf-8\r\n\r\n");
        words.text(&mut rng, lines, &extra, &mut m);
    }
    (m, !i.is_multiple_of(3))
}

fn rfc2822(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc2822()
}

/// Writes the Maildir; prints its size.
pub fn gen_maildir(dir: &Path, n: u64) -> Res<()> {
    let e = |what: &str, err: std::io::Error| format!("{what}: {err}");
    for d in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|x| e("mkdir", x))?;
    }
    let words = Words::new();
    // Received dates: one every 5 minutes, ending a day ago.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|x| x.to_string())?
        .as_secs() as i64;
    let first = now - 86400 - n as i64 * 300;
    let mut bytes = 0u64;
    let t0 = Instant::now();
    for i in 0..n {
        let date = first + i as i64 * 300;
        let (m, seen) = message(&words, i, date);
        let flags = if seen { "S" } else { "" };
        let name = format!("{date}.M{i}P1.bench,S={},W={}:2,{flags}", m.len(), m.len());
        let p = dir.join("cur").join(name);
        let mut f = std::fs::File::create(&p).map_err(|x| e("create", x))?;
        f.write_all(m.as_bytes()).map_err(|x| e("write", x))?;
        let t = std::time::UNIX_EPOCH + Duration::from_secs(date as u64);
        f.set_times(std::fs::FileTimes::new().set_modified(t).set_accessed(t))
            .map_err(|x| e("set_times", x))?;
        bytes += m.len() as u64;
    }
    println!(
        "{n} messages, {:.1} MB, in {:.1} s; common word {COMMON:?}, rare word {RARE:?}",
        bytes as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The processes whose memory is reported: `pids`, or every `imap` child
/// of Dovecot's master `master`.
pub struct Procs {
    pub pids: Vec<u32>,
    pub dovecot_master: Option<u32>,
}

impl Procs {
    fn list(&self) -> Vec<u32> {
        let mut v = self.pids.clone();
        if let Some(m) = self.dovecot_master {
            let Ok(rd) = std::fs::read_dir("/proc") else {
                return v;
            };
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                // pid (comm) state ppid ...
                let Some(close) = stat.rfind(')') else {
                    continue;
                };
                let comm = &stat[stat.find('(').map_or(0, |o| o + 1)..close];
                let ppid = stat[close + 1..].split_whitespace().nth(1);
                if comm == "imap" && ppid == Some(&m.to_string()) {
                    v.push(pid);
                }
            }
        }
        v
    }
    /// Resets the peak RSS of each process (root only; else ignored).
    fn reset_peak(&self) {
        for p in self.list() {
            let _ = std::fs::write(format!("/proc/{p}/clear_refs"), "5");
        }
    }
    /// (current, peak) RSS summed over the processes, KiB.
    fn rss(&self) -> (u64, u64) {
        let (mut cur, mut peak) = (0, 0);
        for p in self.list() {
            if let Some((c, h)) = super::rss_kib(p) {
                cur += c;
                peak += h;
            }
        }
        (cur, peak)
    }
}

/// One measured operation's samples.
struct Op {
    name: &'static str,
    times: Vec<Duration>,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    /// Untagged response lines of the last run (SEARCH hits are counted
    /// from the numbers on the `* SEARCH` line).
    answer: u64,
}

impl Op {
    fn new(name: &'static str) -> Op {
        Op {
            name,
            times: Vec::new(),
            rss_before_kib: 0,
            rss_peak_kib: 0,
            answer: 0,
        }
    }
}

/// Runs `text` on `c` and waits for its tagged reply; counts the FETCH
/// lines or the SEARCH/SORT numbers of the answer.
pub(crate) fn counted(c: &mut Conn, text: &str) -> Res<(bool, u64)> {
    let tag = c.tag();
    c.send(format!("{tag} {text}\r\n").as_bytes())?;
    let mut n = 0u64;
    loop {
        let l = c.read_line()?;
        if l.starts_with(tag.as_bytes()) && l.get(tag.len()) == Some(&b' ') {
            return Ok((l[tag.len() + 1..].starts_with(b"OK"), n));
        }
        if l.starts_with(b"* SEARCH") || l.starts_with(b"* SORT") {
            n += l
                .split(|&b| b == b' ')
                .skip(2)
                .filter(|w| w.first().is_some_and(u8::is_ascii_digit))
                .count() as u64;
        } else if l.windows(7).take(16).any(|w| w == b" FETCH ") {
            n += 1;
        }
        c.note_untagged(&l);
    }
}

pub(crate) fn must(ok: bool, what: &str) -> Res<()> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what}: not OK"))
    }
}

/// `text` on `c`, which must answer OK.
fn ok0(c: &mut Conn, text: &str) -> Res<u64> {
    must(c.cmd(text)?, text).map(|_| 0)
}

/// The UID and flags of message `seq` (untimed).
pub(crate) fn uid_of(c: &mut Conn, seq: u32) -> Res<(u32, bool)> {
    let tag = c.tag();
    c.send(format!("{tag} FETCH {seq} (UID FLAGS)\r\n").as_bytes())?;
    let mut found = None;
    loop {
        let l = c.read_line()?;
        if l.starts_with(tag.as_bytes()) {
            break;
        }
        let s = String::from_utf8_lossy(&l);
        if let Some(at) = s.find("UID ") {
            let uid = s[at + 4..]
                .split(|ch: char| !ch.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok());
            if let Some(u) = uid {
                found = Some((u, s.contains("\\Flagged")));
            }
        }
        c.note_untagged(&l);
    }
    found.ok_or_else(|| format!("no UID for message {seq}"))
}

pub(crate) fn small_message(r: usize) -> Vec<u8> {
    format!(
        "From: Bench <bench@example.org>\r\nTo: bench@example.org\r\n\
         Subject: appended {r}\r\nMessage-ID: <append.{r}@bench>\r\n\
         Date: Sun, 6 Dec 2026 09:00:00 +0000\r\n\r\nA small appended message.\r\n"
    )
    .into_bytes()
}

pub struct BigArgs<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub password: &'a str,
    pub rounds: usize,
    pub search_rounds: usize,
    /// Timed runs of each SEARCH BODY (they read every message).
    pub body_rounds: usize,
    pub procs: Procs,
    pub label: &'a str,
    pub rare: &'a str,
    pub common: &'a str,
    /// Also the memory runs: FETCH 1:* with more items, UID SEARCH ALL,
    /// UID SORT (REVERSE DATE) and (SUBJECT), UID THREAD REFERENCES.
    pub memory: bool,
}

pub fn big(a: &BigArgs) -> Res<()> {
    let mut ca = Conn::login(a.host, a.port, a.user, a.password)?;
    let mut cb = Conn::login(a.host, a.port, a.user, a.password)?;
    let t = Instant::now();
    ca.ok("SELECT INBOX")?;
    eprintln!(
        "{}: first SELECT of {} messages took {:.1} s",
        a.label,
        ca.exists,
        t.elapsed().as_secs_f64()
    );
    cb.ok("SELECT INBOX")?;
    let n = cb.exists;
    if n < 2 {
        return Err("the INBOX needs messages".into());
    }
    let mut ops: Vec<Op> = Vec::new();
    let mut rng = Rng(0x5eed ^ u64::from(n));
    for r in 0..a.rounds {
        // Both sessions up to date, nothing pending.
        ca.ok("NOOP")?;
        cb.ok("NOOP")?;
        measure(&mut ops, &a.procs, "SELECT", &mut || {
            must(cb.cmd("SELECT INBOX")?, "SELECT")?;
            Ok(u64::from(cb.exists))
        })?;
        measure(&mut ops, &a.procs, "NOOP", &mut || ok0(&mut cb, "NOOP"))?;
        // A flag change in A, then B's check.
        let seq = 1 + rng.below(ca.exists);
        let (uid, flagged) = uid_of(&mut ca, seq)?;
        let sign = if flagged { '-' } else { '+' };
        let store = format!("UID STORE {uid} {sign}FLAGS.SILENT (\\Flagged)");
        measure(&mut ops, &a.procs, "UID_STORE_FLAG", &mut || {
            ok0(&mut ca, &store)
        })?;
        measure(&mut ops, &a.procs, "NOOP_AFTER_STORE", &mut || {
            ok0(&mut cb, "NOOP")
        })?;
        // An expunge of one in A, then B's check.
        let seq = 1 + rng.below(ca.exists);
        let (uid, _) = uid_of(&mut ca, seq)?;
        measure(&mut ops, &a.procs, "UID_EXPUNGE_ONE", &mut || {
            ok0(
                &mut ca,
                &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"),
            )?;
            ok0(&mut ca, &format!("UID EXPUNGE {uid}"))
        })?;
        measure(&mut ops, &a.procs, "NOOP_AFTER_EXPUNGE", &mut || {
            ok0(&mut cb, "NOOP")
        })?;
        let msg = small_message(r);
        measure(&mut ops, &a.procs, "APPEND", &mut || {
            must(ca.append("INBOX", &msg)?, "APPEND").map(|_| 0)
        })?;
        cb.ok("NOOP")?;
        measure(&mut ops, &a.procs, "UID_SEARCH_UNSEEN", &mut || {
            let (ok, n) = counted(&mut cb, "UID SEARCH UNSEEN")?;
            must(ok, "SEARCH").map(|_| n)
        })?;
        measure(&mut ops, &a.procs, "FETCH_ALL_FLAGS", &mut || {
            let (ok, n) = counted(&mut cb, "FETCH 1:* (FLAGS)")?;
            must(ok, "FETCH").map(|_| n)
        })?;
        eprintln!("{}: round {} done", a.label, r + 1);
    }
    // Searches and the memory runs: one untimed warm-up, then the rounds.
    let mut heavy: Vec<(&'static str, String)> = vec![
        (
            "UID_SEARCH_BODY_RARE",
            format!("UID SEARCH BODY {}", a.rare),
        ),
        (
            "UID_SEARCH_BODY_COMMON",
            format!("UID SEARCH BODY {}", a.common),
        ),
    ];
    if a.memory {
        heavy.push((
            "FETCH_ALL_UID_FLAGS_SIZE_DATE",
            "FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE)".into(),
        ));
        heavy.push(("UID_SEARCH_ALL", "UID SEARCH ALL".into()));
        heavy.push((
            "UID_SORT_REVERSE_DATE",
            "UID SORT (REVERSE DATE) UTF-8 ALL".into(),
        ));
        // By header keys: the warm-up reads every header (and gives our
        // server its `.sortkeys`, Dovecot its cache fields).
        heavy.push(("UID_SORT_SUBJECT", "UID SORT (SUBJECT) UTF-8 ALL".into()));
        heavy.push((
            "UID_THREAD_REFERENCES",
            "UID THREAD REFERENCES UTF-8 ALL".into(),
        ));
    }
    eprintln!("{}: rounds done:", a.label);
    interim(a.label, &ops);
    for (name, cmd) in &heavy {
        let runs = if name.starts_with("UID_SEARCH_BODY") {
            a.body_rounds
        } else {
            a.search_rounds
        };
        if runs == 0 {
            continue;
        }
        let t = Instant::now();
        must(counted(&mut cb, cmd)?.0, cmd)?;
        eprintln!(
            "{}: {cmd} (warm-up) took {:.1} s",
            a.label,
            t.elapsed().as_secs_f64()
        );
        for _ in 0..runs {
            measure(&mut ops, &a.procs, name, &mut || {
                let (ok, n) = counted(&mut cb, cmd)?;
                must(ok, cmd).map(|_| n)
            })?;
        }
        interim(a.label, &ops[ops.len() - 1..]);
    }
    ca.cmd("LOGOUT").ok();
    cb.cmd("LOGOUT").ok();
    report(a.label, n, &mut ops);
    Ok(())
}

/// Measures `f` once, into the op called `name`, with the peak RSS.
fn measure(
    ops: &mut Vec<Op>,
    procs: &Procs,
    name: &'static str,
    f: &mut dyn FnMut() -> Res<u64>,
) -> Res<()> {
    let i = match ops.iter().position(|o| o.name == name) {
        Some(i) => i,
        None => {
            ops.push(Op::new(name));
            ops.len() - 1
        }
    };
    procs.reset_peak();
    let before = procs.rss().0;
    let t = Instant::now();
    let answer = f()?;
    let d = t.elapsed();
    let peak = procs.rss().1;
    let o = &mut ops[i];
    o.times.push(d);
    o.rss_before_kib = before;
    o.rss_peak_kib = o.rss_peak_kib.max(peak);
    o.answer = answer;
    Ok(())
}

/// Progress on stderr: each op's median so far.
fn interim(label: &str, ops: &[Op]) {
    for o in ops {
        let mut t = o.times.clone();
        t.sort();
        eprintln!(
            "{label}:   {:<30} median {:.3} ms of {} (peak RSS {:.1} MiB)",
            o.name,
            ms(t[t.len() / 2]),
            t.len(),
            o.rss_peak_kib as f64 / 1024.0
        );
    }
}

fn report(label: &str, n: u32, ops: &mut [Op]) {
    println!("{label}: {n} messages");
    println!(
        "{:<30} {:>6} {:>10} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "operation", "runs", "median ms", "min", "max", "answer", "RSS MiB", "peak MiB"
    );
    let mut json = Vec::new();
    for o in ops.iter_mut() {
        o.times.sort();
        let med = ms(o.times[o.times.len() / 2]);
        let (lo, hi) = (ms(o.times[0]), ms(*o.times.last().unwrap()));
        println!(
            "{:<30} {:>6} {med:>10.3} {lo:>10.3} {hi:>10.3} {:>9} {:>10.1} {:>9.1}",
            o.name,
            o.times.len(),
            o.answer,
            o.rss_before_kib as f64 / 1024.0,
            o.rss_peak_kib as f64 / 1024.0
        );
        json.push(format!(
            "\"{}\":{{\"runs\":{},\"median_ms\":{med:.3},\"min_ms\":{lo:.3},\"max_ms\":{hi:.3},\"answer\":{},\"rss_before_kib\":{},\"rss_peak_kib\":{}}}",
            o.name,
            o.times.len(),
            o.answer,
            o.rss_before_kib,
            o.rss_peak_kib
        ));
    }
    println!(
        "{{\"server\":\"{label}\",\"messages\":{n},\"ops\":{{{}}}}}",
        json.join(",")
    );
}
