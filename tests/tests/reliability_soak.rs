//! Soak (issue 7): 16 delivery writers (`deliver` processes) and 16 IMAP
//! sessions over loopback TCP against one `imapd-check serve --listen`,
//! with flag changes, expunges, moves between INBOX and Archive and
//! repacks (`idx-admin repack`) while it runs. Short form ~30 s,
//! `RELIABILITY_LONG=1` 5 minutes.
//!
//! Checks: the server's VmRSS and open file descriptors stay flat (the
//! last sample against the one taken after warm-up, with a stated
//! allowance); every delivery that exited 0 is present exactly once in
//! INBOX or Archive unless a session expunged it; at the end every
//! session's view (UID FETCH 1:* FLAGS after a NOOP) equals the index; and
//! both mailboxes verify clean.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::bin;
use e2e_tests::reliability::{
    Rng, Running, deliver_cmd, is_long, make_user, recover_and_verify, seed, token_message,
};
use storage::{MailboxName, UserName};

const USER: &str = "soak";

struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u64,
}

impl Imap {
    fn connect(addr: &str) -> Imap {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut i = Imap {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            n: 0,
        };
        let mut greeting = String::new();
        i.r.read_line(&mut greeting).unwrap();
        assert!(greeting.starts_with("* OK"), "{greeting}");
        i
    }

    /// Sends one command; returns the untagged lines and the tagged status.
    fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.n += 1;
        let tag = format!("s{}", self.n);
        write!(self.w, "{tag} {c}\r\n").unwrap();
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = self.r.read_line(&mut l).unwrap();
            assert!(n > 0, "server closed the connection during {c}");
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                return (lines, rest.trim_end().to_string());
            }
            lines.push(l.trim_end().to_string());
        }
    }

    fn ok(&mut self, c: &str) -> Vec<String> {
        let (lines, st) = self.cmd(c);
        assert!(st.starts_with("OK"), "{c}: {st}");
        lines
    }
}

/// (UID, flags) pairs from `UID FETCH ... (FLAGS)` responses.
fn parse_flags(lines: &[String]) -> BTreeMap<u32, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for l in lines {
        let Some(i) = l.find("UID ") else { continue };
        if !l.contains(" FETCH (") {
            continue;
        }
        let uid: u32 = l[i + 4..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let f = l.find("FLAGS (").map(|p| {
            let rest = &l[p + 7..];
            rest[..rest.find(')').unwrap()]
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_string)
                .collect()
        });
        out.insert(uid, f.unwrap_or_default());
    }
    out
}

fn proc_sample(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

#[test]
fn soak_writers_and_imap_sessions() {
    let secs = if is_long() { 300 } else { 30 };
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let store = make_user(&spool, USER, &["Archive"]);
    let hash = e2e_tests::run_with_input(
        Command::new(bin("imapd-check")).args(["passwd", USER]),
        b"pw\n",
        Duration::from_secs(60),
    );
    assert_eq!(hash.code(), Some(0), "{}", hash.stderr);
    let passwd = tmp.path().join("passwd");
    std::fs::write(&passwd, &hash.stdout).unwrap();
    let mut server = Command::new(bin("imapd-check"))
        .args(["serve", "--listen", "127.0.0.1:0", "--passwd"])
        .arg(&passwd)
        .arg("--spool")
        .arg(&spool)
        .env("MAILSTORE_CONFIG", "/dev/null")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = server.id();
    let mut err = BufReader::new(server.stderr.take().unwrap());
    let addr = loop {
        let mut l = String::new();
        assert!(err.read_line(&mut l).unwrap() > 0, "server exited");
        if let Some(a) = l.trim().strip_prefix("listening on ") {
            break a.to_string();
        }
    };
    // Keep draining the server's log so it never blocks on stderr.
    std::thread::spawn(move || for _ in err.lines() {});
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Kill(server);

    let stop = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(Mutex::new(Vec::<String>::new()));
    let expunges = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let base_seed = seed();
    let mut threads = Vec::new();
    for w in 0..16 {
        let (stop, delivered, spool, ops) =
            (stop.clone(), delivered.clone(), spool.clone(), ops.clone());
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let token = format!("soak-{w}-{i}");
                i += 1;
                let f = Running::spawn(&mut deliver_cmd(&spool, USER), token_message(&token, 5))
                    .finish(Duration::from_secs(120));
                assert!(
                    f.code == Some(0) || f.stderr.starts_with("4.2.0"),
                    "deliver: {f:?}"
                );
                if f.code == Some(0) {
                    delivered.lock().unwrap().push(token);
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let mut sessions = Vec::new();
    for s in 0..16 {
        let (stop, addr, expunges, ops) =
            (stop.clone(), addr.clone(), expunges.clone(), ops.clone());
        sessions.push(std::thread::spawn(move || {
            let mut rng = Rng::new(base_seed ^ ((s as u64 + 1) * 0x1234_5678));
            let mut c = Imap::connect(&addr);
            c.ok(&format!("LOGIN {USER} pw"));
            c.ok("SELECT INBOX");
            while !stop.load(Ordering::Relaxed) {
                let uids: Vec<u32> = parse_flags(&c.ok("UID FETCH 1:* (FLAGS)"))
                    .into_keys()
                    .collect();
                if uids.is_empty() {
                    c.ok("NOOP");
                    continue;
                }
                let u = uids[rng.below(uids.len() as u64) as usize];
                match rng.below(10) {
                    0..=4 => {
                        let f = ["\\Seen", "\\Flagged", "$Soak"][rng.below(3) as usize];
                        let op = if rng.chance(50) { "+" } else { "-" };
                        c.cmd(&format!("UID STORE {u} {op}FLAGS ({f})"));
                    }
                    5 | 6 => {
                        c.cmd(&format!("UID MOVE {u} Archive"));
                    }
                    7 => {
                        c.cmd(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
                        let (lines, _) = c.cmd(&format!("UID EXPUNGE {u}"));
                        let n = lines.iter().filter(|l| l.ends_with(" EXPUNGE")).count();
                        expunges.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    _ => {
                        c.ok("NOOP");
                    }
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            c
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut repacks = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(2));
        for m in ["INBOX", "Archive"] {
            let dir =
                store.mailbox_path(&UserName::new(USER).unwrap(), &MailboxName::new(m).unwrap());
            let out = e2e_tests::run(
                Command::new(bin("idx-admin")).arg("repack").arg(&dir),
                Duration::from_secs(120),
            );
            assert_eq!(out.code(), Some(0), "repack: {}{}", out.stdout, out.stderr);
            repacks += 1;
        }
        samples.push(proc_sample(pid));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let mut conns: Vec<Imap> = sessions.into_iter().map(|t| t.join().unwrap()).collect();
    let end = proc_sample(pid);
    // Warm-up: the first quarter of the run.
    let warm = samples[samples.len() / 4];
    println!("soak: server (VmRSS kB, fds) samples {samples:?}");
    assert!(
        end.0 <= warm.0 * 3 / 2 + 16 * 1024,
        "server memory grew from {} kB to {} kB",
        warm.0,
        end.0
    );
    assert!(
        end.1 <= warm.1 + 8,
        "server fds grew from {} to {}",
        warm.1,
        end.1
    );

    // Every session's view equals the index.
    let mut inbox = store
        .open_mailbox(&UserName::new(USER).unwrap(), &MailboxName::inbox())
        .unwrap();
    let snap = inbox.snapshot().unwrap();
    let want: BTreeMap<u32, BTreeSet<String>> = snap
        .records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| {
            let mut f: BTreeSet<String> = r.flags.names().into_iter().map(str::to_string).collect();
            for k in r.keywords.iter() {
                f.insert(snap.meta.keywords[k].clone());
            }
            (r.uid, f)
        })
        .collect();
    for c in conns.iter_mut() {
        c.ok("NOOP");
        let got = parse_flags(&c.ok("UID FETCH 1:* (FLAGS)"));
        assert_eq!(got, want, "a session's view differs from the index");
        c.ok("LOGOUT");
    }
    for m in ["INBOX", "Archive"] {
        recover_and_verify(
            &store.mailbox_path(&UserName::new(USER).unwrap(), &MailboxName::new(m).unwrap()),
        );
    }
    // Nothing lost: each delivered token is in INBOX or Archive once, or
    // was expunged by a session.
    let a = e2e_tests::reliability::read_contents(&spool, USER, "INBOX");
    let b = e2e_tests::reliability::read_contents(&spool, USER, "Archive");
    let delivered = delivered.lock().unwrap();
    let mut missing = 0u64;
    for t in delivered.iter() {
        let n = a.by_token.get(t).map_or(0, Vec::len) + b.by_token.get(t).map_or(0, Vec::len);
        assert!(n <= 1, "{t} stored {n} times");
        if n == 0 {
            missing += 1;
        }
    }
    let expunged = expunges.load(Ordering::Relaxed);
    assert!(
        missing <= expunged,
        "{missing} delivered messages missing, only {expunged} expunged"
    );
    println!(
        "soak: {secs}s, {} operations, {} deliveries, {repacks} repacks, {expunged} expunges, 16 sessions agree with the index; \
         server VmRSS {} -> {} kB, fds {} -> {}",
        ops.load(Ordering::Relaxed),
        delivered.len(),
        warm.0,
        end.0,
        warm.1,
        end.1
    );
}
