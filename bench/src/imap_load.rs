//! `imap-load`: an IMAP load generator for bench/imap_bench.sh, run the
//! same way against Dovecot's imap and ours.
//!
//! `mix`: N persistent connections (LOGIN over TCP), each looping over a
//! fixed mix of SELECT, FETCH (headers of a range, one whole body), STORE,
//! APPEND, SEARCH, STATUS, LIST, EXPUNGE and IDLE (enter, leave) on its
//! user's INBOX. Each round appends one message and expunges one, so the
//! mailbox keeps its size. Logins happen before the timed part. Prints
//! ops/s and each command's mean, median and p99 in ms, then one JSON line.
//! Each command is timed twice: as this process sees it (from just before
//! the command is written to when its tagged reply has been read), and at
//! the socket (to the kernel's receive time of the reply's last segment,
//! SO_TIMESTAMPNS), which leaves out how long this process's own thread
//! waited for a CPU before it could read the reply. On a machine the load
//! generator shares with the server, the first grows with everything the
//! generator does; the second is the server's answer time.
//!
//! `idle`: N connections idle on one INBOX; another connection APPENDs a
//! message, and each idler's delay from the APPEND being sent to its
//! `* n EXISTS` line is recorded. Prints the p50/p99/max of those delays
//! and (with --server-pid) the server's RSS, then one JSON line.
//!
//! `prepare`: logs each user in once and creates the folders that LIST
//! and STATUS look at.
//!
//! `gen-maildir` and `big`: the big-mailbox benchmark (big.rs,
//! bench/bigmailbox_bench.sh); `changes`: its per-change figures against
//! several servers with interleaved rounds (changes.rs).

mod big;
mod changes;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 143)]
    port: u16,
    /// User name; with --users K > 1, connection i logs in as USER{i % K}.
    #[arg(long, default_value = "bench")]
    user: String,
    #[arg(long, default_value = "")]
    password: String,
    #[arg(long, default_value_t = 1)]
    users: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    Prepare,
    /// Writes N generated messages into a Maildir (no server needed).
    GenMaildir {
        dir: std::path::PathBuf,
        n: u64,
    },
    /// Two sessions on one big INBOX: the measured operations of big.rs.
    Big {
        #[arg(long, default_value_t = 9)]
        rounds: usize,
        /// Runs of each search and memory command (after a warm-up).
        #[arg(long, default_value_t = 9)]
        search_rounds: usize,
        /// Runs of each SEARCH BODY (after a warm-up; 0: none).
        #[arg(long, default_value_t = 9)]
        body_rounds: usize,
        /// Name in the output (ours, dovecot).
        #[arg(long)]
        label: String,
        /// Processes whose RSS is reported (our server).
        #[arg(long)]
        server_pid: Vec<u32>,
        /// Dovecot's master: its `imap` children's RSS is reported.
        #[arg(long)]
        dovecot_master: Option<u32>,
        #[arg(long, default_value = big::RARE)]
        rare: String,
        #[arg(long, default_value = big::COMMON)]
        common: String,
        /// Also FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE), UID SEARCH
        /// ALL, UID SORT (REVERSE DATE) and (SUBJECT) and UID THREAD
        /// REFERENCES, for their memory and time.
        #[arg(long)]
        memory: bool,
    },
    /// The per-change figures of `big` on several servers (--port each),
    /// rounds interleaved: changes.rs.
    Changes {
        /// One per server, in the order of the ports.
        #[arg(long = "label", required = true)]
        labels: Vec<String>,
        /// The servers (one per --label); the global --port is ignored.
        #[arg(long = "at", required = true)]
        ports: Vec<u16>,
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Iterations per server per round.
        #[arg(long, default_value_t = 20)]
        per_round: usize,
        #[arg(long, value_enum, default_value = "big")]
        pattern: changes::Pattern,
        /// Shell command run once the sessions are set up.
        #[arg(long)]
        on_start: Option<String>,
        /// Shell command run after the last round.
        #[arg(long)]
        on_end: Option<String>,
        /// MiB the client writes over before each iteration (untimed), to
        /// evict the CPU caches without work in the server.
        #[arg(long, default_value_t = 0)]
        thrash_mib: usize,
    },
    Mix {
        #[arg(short = 'c', long, default_value_t = 10)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Start each client's rounds this many milliseconds apart (a
        /// round that takes longer is followed at once): the same offered
        /// load for both servers, to compare latencies at equal
        /// throughput. 0 (the default): back to back, as fast as the
        /// server answers.
        #[arg(long, default_value_t = 0)]
        pace_ms: u64,
    },
    Idle {
        #[arg(short = 'c', long, default_value_t = 1000)]
        clients: usize,
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Logins in flight at once while connecting the idlers.
        #[arg(long, default_value_t = 4)]
        login_concurrency: usize,
        /// The server's pid, to report its RSS.
        #[arg(long)]
        server_pid: Option<u32>,
        /// Seconds to wait, idlers idling, before the first delivery and
        /// after the last (prints `HOLD idle` / `HOLD end` to stderr), to
        /// inspect the server (smaps, malloc statistics) at those points.
        #[arg(long, default_value_t = 0)]
        hold: u64,
    },
}

/// Folders `prepare` creates; LIST sees them, STATUS asks about them.
const FOLDERS: [&str; 6] = ["Sent", "Drafts", "Trash", "Archive", "Lists", "Work"];

type Res<T> = Result<T, String>;

/// A TCP stream that keeps the kernel's receive time (SO_TIMESTAMPNS,
/// CLOCK_REALTIME) of the data its last read returned.
struct Stamped {
    s: TcpStream,
    /// Nanoseconds since the epoch, 0 before the first stamped read.
    last_ns: i128,
    reads: u64,
}

/// `SO_TIMESTAMPNS` (= `SCM_TIMESTAMPNS`) on x86-64 and the other
/// "generic" Linux ABIs (asm-generic/socket.rs: SO_TIMESTAMPNS_OLD).
const SO_TIMESTAMPNS: libc::c_int = 35;

impl Stamped {
    fn new(s: TcpStream) -> Stamped {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a valid socket and an int option of the size passed. A
        // kernel without stamps leaves last_ns at 0 (the process's own
        // times are used then).
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                SO_TIMESTAMPNS,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        Stamped {
            s,
            last_ns: 0,
            reads: 0,
        }
    }
}

impl Read for Stamped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::fd::AsRawFd;
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one timespec control message, 8-byte aligned.
        let mut control = [0u64; 8];
        // SAFETY: msghdr is plain data; zero is a valid empty value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: msg points at a live buffer and control area of the
        // lengths it states.
        let n = unsafe { libc::recvmsg(self.s.as_raw_fd(), &mut msg, 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the control area as recvmsg filled it in (msg_controllen
        // updated), walked with the CMSG macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == SO_TIMESTAMPNS {
                    let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    self.last_ns = ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128;
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        self.reads += 1;
        Ok(n as usize)
    }
}

fn wall_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

struct Conn {
    r: BufReader<Stamped>,
    w: TcpStream,
    next: u64,
    /// Messages in the selected mailbox, from EXISTS and EXPUNGE.
    exists: u32,
    line: Vec<u8>,
}

impl Conn {
    fn connect(host: &str, port: u16) -> Res<Conn> {
        let s = TcpStream::connect((host, port)).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).ok();
        let w = s.try_clone().map_err(|e| e.to_string())?;
        let mut c = Conn {
            r: BufReader::with_capacity(16 * 1024, Stamped::new(s)),
            w,
            next: 0,
            exists: 0,
            line: Vec::new(),
        };
        let g = c.read_line()?;
        if !g.starts_with(b"* OK") {
            return Err(format!("greeting: {}", String::from_utf8_lossy(&g)));
        }
        Ok(c)
    }

    fn login(host: &str, port: u16, user: &str, pw: &str) -> Res<Conn> {
        let mut c = Conn::connect(host, port)?;
        c.ok(&format!("LOGIN \"{user}\" \"{pw}\""))?;
        Ok(c)
    }

    /// One response line, literals skipped; returns the line's text.
    fn read_line(&mut self) -> Res<Vec<u8>> {
        self.line.clear();
        loop {
            let at = self.line.len();
            let n = self
                .r
                .read_until(b'\n', &mut self.line)
                .map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("server closed the connection".into());
            }
            match literal_len(&self.line[at..]) {
                Some(len) => {
                    let mut left = len;
                    let mut sink = [0u8; 8192];
                    while left > 0 {
                        let k = left.min(sink.len() as u64) as usize;
                        self.r
                            .read_exact(&mut sink[..k])
                            .map_err(|e| format!("read literal: {e}"))?;
                        left -= k as u64;
                    }
                }
                None => return Ok(self.line.clone()),
            }
        }
    }

    fn note_untagged(&mut self, l: &[u8]) {
        let mut it = l.split(|&b| b == b' ');
        if it.next() != Some(b"*") {
            return;
        }
        let (Some(n), Some(what)) = (it.next(), it.next()) else {
            return;
        };
        let Some(n) = std::str::from_utf8(n)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return;
        };
        let what = what.strip_suffix(b"\r\n").unwrap_or(what);
        if what.eq_ignore_ascii_case(b"EXISTS") {
            self.exists = n;
        } else if what.eq_ignore_ascii_case(b"EXPUNGE") {
            self.exists = self.exists.saturating_sub(1);
        }
    }

    fn send(&mut self, raw: &[u8]) -> Res<()> {
        self.w.write_all(raw).map_err(|e| format!("write: {e}"))
    }

    fn tag(&mut self) -> String {
        self.next += 1;
        format!("t{}", self.next)
    }

    /// Waits for `tag`'s completion; Ok(true) for OK.
    fn complete(&mut self, tag: &str) -> Res<bool> {
        loop {
            let l = self.read_line()?;
            if l.starts_with(tag.as_bytes()) && l.get(tag.len()) == Some(&b' ') {
                let rest = &l[tag.len() + 1..];
                return Ok(rest.starts_with(b"OK"));
            }
            self.note_untagged(&l);
        }
    }

    fn cmd(&mut self, text: &str) -> Res<bool> {
        let tag = self.tag();
        self.send(format!("{tag} {text}\r\n").as_bytes())?;
        self.complete(&tag)
    }

    fn ok(&mut self, text: &str) -> Res<()> {
        if self.cmd(text)? {
            Ok(())
        } else {
            Err(format!("{text}: not OK"))
        }
    }

    fn append(&mut self, mailbox: &str, msg: &[u8]) -> Res<bool> {
        let tag = self.tag();
        let mut raw = format!("{tag} APPEND {mailbox} {{{}+}}\r\n", msg.len()).into_bytes();
        raw.extend_from_slice(msg);
        raw.extend_from_slice(b"\r\n");
        self.send(&raw)?;
        self.complete(&tag)
    }

    /// Sends IDLE and reads up to its `+`; false if it was refused.
    fn enter_idle(&mut self, tag: &str) -> Res<bool> {
        self.send(format!("{tag} IDLE\r\n").as_bytes())?;
        loop {
            let l = self.read_line()?;
            if l.starts_with(b"+") {
                return Ok(true);
            }
            if l.starts_with(tag.as_bytes()) {
                return Ok(false);
            }
            self.note_untagged(&l);
        }
    }

    fn idle_once(&mut self) -> Res<bool> {
        let tag = self.tag();
        if !self.enter_idle(&tag)? {
            return Ok(false);
        }
        self.send(b"DONE\r\n")?;
        self.complete(&tag)
    }
}

/// `{n}` or `{n+}` ending a response line.
fn literal_len(line: &[u8]) -> Option<u64> {
    let l = line.strip_suffix(b"\r\n").or(line.strip_suffix(b"\n"))?;
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let inner = &l[open + 1..];
    let inner = inner.strip_suffix(b"+").unwrap_or(inner);
    std::str::from_utf8(inner).ok()?.parse().ok()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u32) -> u32 {
        (self.next() % u64::from(n.max(1))) as u32
    }
}

fn bench_message(conn: usize, round: u64) -> Vec<u8> {
    let mut m = format!(
        "From: Load {conn} <load{conn}@example.org>\r\nTo: user@example.org\r\n\
         Subject: load test message {conn}.{round}\r\nMessage-ID: <load.{conn}.{round}@bench>\r\n\
         Date: Sun, 6 Dec 2026 03:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n"
    );
    for i in 0..40 {
        m.push_str(&format!(
            "Line {i} of a message written by the IMAP load generator, about 80 bytes.\r\n"
        ));
    }
    m.into_bytes()
}

/// Per command: (as the generator saw it, at the socket).
type Samples = BTreeMap<&'static str, (Vec<Duration>, Vec<Duration>)>;

/// One round of the mix. Every command is timed from sending to its
/// tagged reply.
fn round(
    c: &mut Conn,
    rng: &mut Rng,
    id: usize,
    n: u64,
    s: &mut Samples,
    errors: &mut u64,
) -> Res<()> {
    let mut timed =
        |name: &'static str, c: &mut Conn, f: &mut dyn FnMut(&mut Conn) -> Res<bool>| {
            let (t, wall, reads) = (Instant::now(), wall_ns(), c.r.get_ref().reads);
            let ok = f(c)?;
            let seen = t.elapsed();
            // At the socket: to the receive time of the last read, if the
            // reply came in a read made during the command.
            let last = c.r.get_ref();
            let sock = match last.reads > reads && last.last_ns >= wall {
                true => Duration::from_nanos((last.last_ns - wall) as u64).min(seen),
                false => seen,
            };
            let e = s.entry(name).or_default();
            e.0.push(seen);
            e.1.push(sock);
            if !ok {
                *errors += 1;
            }
            Ok::<(), String>(())
        };
    timed("SELECT", c, &mut |c| c.cmd("SELECT INBOX"))?;
    let e = c.exists.max(1);
    let a = 1 + rng.below(e.saturating_sub(9).max(1));
    let hdr = format!(
        "FETCH {a}:{} (UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE MESSAGE-ID)])",
        (a + 9).min(e)
    );
    timed("FETCH_HDR", c, &mut |c| c.cmd(&hdr))?;
    let b = 1 + rng.below(e);
    timed("FETCH_BODY", c, &mut |c| {
        c.cmd(&format!("FETCH {b} (BODY.PEEK[])"))
    })?;
    let st = 1 + rng.below(e);
    timed("STORE", c, &mut |c| {
        c.cmd(&format!("STORE {st} +FLAGS (\\Seen)"))
    })?;
    let msg = bench_message(id, n);
    timed("APPEND", c, &mut |c| c.append("INBOX", &msg))?;
    let q = if n.is_multiple_of(2) {
        "SEARCH UNSEEN".to_string()
    } else {
        format!("SEARCH FROM \"load{}\"", rng.below(10))
    };
    timed("SEARCH", c, &mut |c| c.cmd(&q))?;
    let f = FOLDERS[rng.below(FOLDERS.len() as u32) as usize];
    timed("STATUS", c, &mut |c| {
        c.cmd(&format!("STATUS {f} (MESSAGES UNSEEN UIDNEXT)"))
    })?;
    timed("LIST", c, &mut |c| c.cmd("LIST \"\" \"*\""))?;
    let e = c.exists.max(1);
    let d = 1 + rng.below(e);
    timed("STORE", c, &mut |c| {
        c.cmd(&format!("STORE {d} +FLAGS.SILENT (\\Deleted)"))
    })?;
    timed("EXPUNGE", c, &mut |c| c.cmd("EXPUNGE"))?;
    timed("IDLE", c, &mut |c| c.idle_once())?;
    Ok(())
}

fn user_of(cli: &Cli, i: usize) -> String {
    if cli.users > 1 {
        format!("{}{}", cli.user, i % cli.users)
    } else {
        cli.user.clone()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn mix(cli: &Cli, clients: usize, seconds: u64, seed: u64, pace: Duration) -> Res<()> {
    let mut conns = Vec::new();
    for i in 0..clients {
        let user = user_of(cli, i);
        conns.push(Conn::login(&cli.host, cli.port, &user, &cli.password)?);
    }
    let start = Arc::new(Barrier::new(clients + 1));
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let start = start.clone();
        let stop = stop.clone();
        handles.push(std::thread::spawn(move || -> Res<(Samples, u64)> {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (i as u64 + 1));
            let mut s = Samples::new();
            let mut errors = 0;
            start.wait();
            let mut n = 0;
            // Paced clients start spread over one interval, not at once.
            let mut next = Instant::now() + pace.mul_f64(i as f64 / clients as f64);
            while !stop.load(Ordering::Relaxed) {
                if !pace.is_zero() {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next = next.max(now) + pace;
                }
                round(&mut c, &mut rng, i, n, &mut s, &mut errors)?;
                n += 1;
            }
            c.cmd("LOGOUT").ok();
            Ok((s, errors))
        }));
    }
    start.wait();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let mut all = Samples::new();
    let mut errors = 0;
    for h in handles {
        let (s, e) = h.join().map_err(|_| "client thread panicked")??;
        errors += e;
        for (k, (v, w)) in s {
            let e = all.entry(k).or_default();
            e.0.extend(v);
            e.1.extend(w);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let total: usize = all.values().map(|v| v.0.len()).sum();
    let rate = total as f64 / elapsed;
    println!("clients {clients}  ops {total}  {elapsed:.1} s  {rate:.0} ops/s  not-OK {errors}");
    println!(
        "{:<11} {:>7} {:>9} {:>9} {:>9}   at the socket: {:>9} {:>9} {:>9}",
        "command", "count", "mean ms", "median", "p99", "mean ms", "median", "p99"
    );
    let mut json = Vec::new();
    let stats = |v: &mut Vec<Duration>| {
        v.sort();
        let mean = v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64;
        (mean, ms(pct(v, 0.5)), ms(pct(v, 0.99)))
    };
    for (k, (v, w)) in all.iter_mut() {
        let (mean, med, p99) = stats(v);
        let (smean, smed, sp99) = stats(w);
        println!(
            "{k:<11} {:>7} {mean:>9.2} {med:>9.2} {p99:>9.2}   {:>14} {smean:>9.2} {smed:>9.2} {sp99:>9.2}",
            v.len(),
            ""
        );
        json.push(format!(
            "\"{k}\":{{\"count\":{},\"mean_ms\":{mean:.3},\"median_ms\":{med:.3},\"p99_ms\":{p99:.3},\"sock_mean_ms\":{smean:.3},\"sock_median_ms\":{smed:.3},\"sock_p99_ms\":{sp99:.3}}}",
            v.len()
        ));
    }
    println!(
        "{{\"clients\":{clients},\"ops\":{total},\"seconds\":{elapsed:.3},\"ops_per_s\":{rate:.1},\"not_ok\":{errors},\"commands\":{{{}}}}}",
        json.join(",")
    );
    Ok(())
}

/// Waits `secs` (if any) with the idlers idling, saying so on stderr.
fn hold_for(secs: u64, what: &str) {
    if secs > 0 {
        eprintln!("HOLD {what}");
        std::thread::sleep(Duration::from_secs(secs));
    }
}

fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn idle(
    cli: &Cli,
    clients: usize,
    rounds: usize,
    login_conc: usize,
    pid: Option<u32>,
    hold: u64,
) -> Res<()> {
    // Connect and log in the idlers, a few logins at a time.
    let conns = Arc::new(Mutex::new(Vec::with_capacity(clients)));
    let next = Arc::new(AtomicUsize::new(0));
    let mut hs = Vec::new();
    let t_login = Instant::now();
    for _ in 0..login_conc.max(1) {
        let (conns, next) = (conns.clone(), next.clone());
        let (host, port, pw) = (cli.host.clone(), cli.port, cli.password.clone());
        let users: Vec<String> = (0..clients).map(|i| user_of(cli, i)).collect();
        hs.push(std::thread::spawn(move || -> Res<()> {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users.len() {
                    return Ok(());
                }
                let mut c = Conn::login(&host, port, &users[i], &pw)?;
                c.ok("SELECT INBOX")?;
                conns.lock().unwrap().push(c);
            }
        }));
    }
    for h in hs {
        h.join().map_err(|_| "login thread panicked")??;
    }
    let login_s = t_login.elapsed().as_secs_f64();
    let conns = std::mem::take(&mut *conns.lock().unwrap());
    // Each idler: IDLE, then wait for EXISTS lines, sending the time it saw
    // each to the driver.
    let (tx, rx) = std::sync::mpsc::channel::<(usize, u32, Instant)>();
    let ready = Arc::new(Barrier::new(clients + 1));
    let mut idlers = Vec::new();
    for (i, mut c) in conns.into_iter().enumerate() {
        let tx = tx.clone();
        let ready = ready.clone();
        let h = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || -> Res<()> {
                let tag = c.tag();
                let idling = c.enter_idle(&tag);
                ready.wait();
                if !idling? {
                    return Err("IDLE refused".into());
                }
                loop {
                    let l = match c.read_line() {
                        Ok(l) => l,
                        Err(_) => return Ok(()),
                    };
                    let t = Instant::now();
                    let s = String::from_utf8_lossy(&l);
                    let mut it = s.split_whitespace();
                    if let (Some("*"), Some(n), Some(w)) = (it.next(), it.next(), it.next())
                        && w.eq_ignore_ascii_case("EXISTS")
                        && let Ok(n) = n.parse()
                        && tx.send((i, n, t)).is_err()
                    {
                        return Ok(());
                    }
                }
            })
            .map_err(|e| format!("spawn: {e}"))?;
        idlers.push(h);
    }
    drop(tx);
    ready.wait();
    // Idle for 2 s: the server makes an idle session's view compact after
    // 1 s of IDLE (and trims its heap 0.1 s later).
    std::thread::sleep(Duration::from_secs(2));
    let rss_idle = pid.and_then(rss_kib);
    hold_for(hold, "idle");
    let mut appender = Conn::login(&cli.host, cli.port, &user_of(cli, 0), &cli.password)?;
    appender.ok("SELECT INBOX")?;
    // Delay from the APPEND's OK (the commit acknowledged), and from the
    // APPEND being sent (which adds the commit's own time: its fsyncs).
    let mut lat = Vec::new();
    let mut lat_sent = Vec::new();
    let mut missed = 0usize;
    for r in 0..rounds {
        let want = appender.exists + 1;
        let t0 = Instant::now();
        if !appender.append("INBOX", &bench_message(0, r as u64))? {
            return Err("APPEND refused".into());
        }
        let t_ok = t0.elapsed();
        let t_ack = Instant::now();
        let mut seen = vec![false; clients];
        let mut got = 0;
        let deadline = t0 + Duration::from_secs(10);
        while got < clients {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok((i, n, t)) if n >= want && !seen[i] => {
                    seen[i] = true;
                    got += 1;
                    lat_sent.push(t.duration_since(t0));
                    lat.push(t.saturating_duration_since(t_ack));
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        missed += clients - got;
        let worst = lat[lat.len() - got..]
            .iter()
            .max()
            .copied()
            .unwrap_or_default();
        eprintln!(
            "round {r}: APPEND took {:.1} ms, {got} notified, slowest {:.1} ms after its OK",
            ms(t_ok),
            ms(worst)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let rss_end = pid.and_then(rss_kib);
    hold_for(hold, "end");
    if lat.is_empty() {
        return Err("no idler was notified".into());
    }
    lat.sort();
    lat_sent.sort();
    let (p50, p99, max) = (
        ms(pct(&lat, 0.5)),
        ms(pct(&lat, 0.99)),
        ms(*lat.last().unwrap()),
    );
    let (s50, s99) = (ms(pct(&lat_sent, 0.5)), ms(pct(&lat_sent, 0.99)));
    let rss = |r: Option<(u64, u64)>| {
        r.map_or("?".into(), |(a, b)| {
            format!(
                "{:.1} MiB (peak {:.1})",
                a as f64 / 1024.0,
                b as f64 / 1024.0
            )
        })
    };
    println!(
        "idlers {clients}  logins took {login_s:.1} s  rounds {rounds}  notified {}  missed {missed}",
        lat.len()
    );
    println!("APPEND OK -> * n EXISTS: p50 {p50:.1} ms  p99 {p99:.1} ms  max {max:.1} ms");
    println!("APPEND sent -> * n EXISTS: p50 {s50:.1} ms  p99 {s99:.1} ms");
    println!(
        "server RSS idle {}  after rounds {}",
        rss(rss_idle),
        rss(rss_end)
    );
    let kib = |r: Option<(u64, u64)>, k: usize| r.map_or(0, |x| if k == 0 { x.0 } else { x.1 });
    println!(
        "{{\"idlers\":{clients},\"rounds\":{rounds},\"notified\":{},\"missed\":{missed},\"p50_ms\":{p50:.2},\"p99_ms\":{p99:.2},\"max_ms\":{max:.2},\"sent_p50_ms\":{s50:.2},\"sent_p99_ms\":{s99:.2},\"rss_idle_kib\":{},\"rss_end_kib\":{},\"rss_peak_kib\":{}}}",
        lat.len(),
        kib(rss_idle, 0),
        kib(rss_end, 0),
        kib(rss_end, 1)
    );
    appender.cmd("LOGOUT").ok();
    if missed > 0 {
        return Err(format!("{missed} notifications missed"));
    }
    Ok(())
}

fn prepare(cli: &Cli) -> Res<()> {
    for i in 0..cli.users.max(1) {
        let mut c = Conn::login(&cli.host, cli.port, &user_of(cli, i), &cli.password)?;
        for f in FOLDERS {
            // NO when it exists already: fine.
            c.cmd(&format!("CREATE {f}"))?;
        }
        c.ok("SELECT INBOX")?;
        if c.exists == 0 {
            return Err(format!("{}: INBOX is empty", user_of(cli, i)));
        }
        c.cmd("LOGOUT").ok();
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.mode {
        Mode::Prepare => prepare(&cli),
        Mode::GenMaildir { dir, n } => big::gen_maildir(dir, *n),
        Mode::Big {
            rounds,
            search_rounds,
            body_rounds,
            label,
            server_pid,
            dovecot_master,
            rare,
            common,
            memory,
        } => big::big(&big::BigArgs {
            host: &cli.host,
            port: cli.port,
            user: &cli.user,
            password: &cli.password,
            rounds: *rounds,
            search_rounds: *search_rounds,
            body_rounds: *body_rounds,
            procs: big::Procs {
                pids: server_pid.clone(),
                dovecot_master: *dovecot_master,
            },
            label,
            rare,
            common,
            memory: *memory,
        }),
        Mode::Changes {
            labels,
            ports,
            rounds,
            per_round,
            pattern,
            on_start,
            on_end,
            thrash_mib,
        } => changes::changes(&changes::ChangesArgs {
            host: &cli.host,
            ports,
            labels,
            user: &cli.user,
            password: &cli.password,
            rounds: *rounds,
            per_round: *per_round,
            pattern: *pattern,
            on_start: on_start.as_deref(),
            on_end: on_end.as_deref(),
            thrash_mib: *thrash_mib,
        }),
        Mode::Mix {
            clients,
            seconds,
            seed,
            pace_ms,
        } => mix(
            &cli,
            *clients,
            *seconds,
            *seed,
            Duration::from_millis(*pace_ms),
        ),
        Mode::Idle {
            clients,
            rounds,
            login_concurrency,
            server_pid,
            hold,
        } => idle(
            &cli,
            *clients,
            *rounds,
            *login_concurrency,
            *server_pid,
            *hold,
        ),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("imap-load: {e}");
            ExitCode::FAILURE
        }
    }
}
