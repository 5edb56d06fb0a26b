//! Processes moving messages back and forth between two mailboxes while
//! others deliver into both and check, and while movers are killed with
//! SIGKILL at random moments and restarted. The checker reads both
//! mailboxes under locks held at once (`transfer::snapshot_pair`) and
//! fails on any Message-ID present twice; at the end every initial and
//! every delivered Message-ID is present exactly once.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailstore::mailbox::{AppendOptions, Mailbox};
use mailstore::transfer;
use mailstore::{Durability, Error, MailboxName, Options, Store, UserName};

const ROLE: &str = "TRANSFER_CONC_ROLE";
const SPOOL: &str = "TRANSFER_CONC_SPOOL";
const RUN_FOR: Duration = Duration::from_secs(3);
const INITIAL: u32 = 40;

fn user() -> UserName {
    UserName::new("conc").unwrap()
}

fn store_at(spool: &Path) -> Store {
    Store::open(
        spool,
        Options {
            // A process crash keeps the page cache: no fsync needed to
            // test atomicity against other processes and kill -9.
            durability: Durability::Relaxed,
            lock_timeout: Duration::from_secs(20),
        },
    )
    .unwrap()
}

fn open(s: &Store, name: &str) -> Mailbox {
    s.open_mailbox(&user(), &MailboxName::new(name).unwrap())
        .unwrap()
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}>\r\nSubject: x\r\n\r\nbody of {id}\r\n").into_bytes()
}

fn message_id(m: &Mailbox, uid: u32) -> String {
    let b = m.read_message(uid).unwrap();
    let s = String::from_utf8(b).unwrap();
    let line = s.lines().next().unwrap();
    line.trim_start_matches("Message-ID: <")
        .trim_end_matches('>')
        .to_string()
}

fn live_ids(m: &Mailbox, snap: &mailstore::mailbox::Snapshot) -> Vec<String> {
    snap.records
        .iter()
        .filter(|r| !r.is_expunged())
        .map(|r| message_id(m, r.uid))
        .collect()
}

struct Rng(u64);
impl Rng {
    fn new() -> Rng {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
        Rng(t ^ ((std::process::id() as u64) << 32) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn transfer_conc_child() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let s = store_at(&PathBuf::from(std::env::var(SPOOL).unwrap()));
    let mut a = open(&s, "A");
    let mut b = open(&s, "B");
    let mut rng = Rng::new();
    let start = Instant::now();
    match role.as_str() {
        "move-ab" | "move-ba" => {
            let (src, dst) = if role == "move-ab" {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let (mut moved, mut raced) = (0, 0);
            while start.elapsed() < RUN_FOR {
                let snap = src.snapshot().unwrap();
                let live: Vec<u32> = snap.live_uids();
                if live.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let n = 1 + rng.next() as usize % 3;
                let uids: Vec<u32> = (0..n)
                    .map(|_| live[rng.next() as usize % live.len()])
                    .collect();
                match transfer::move_messages(src, &uids, dst, None) {
                    Ok(o) => moved += o.map.len(),
                    // Another mover of the same direction took one first:
                    // all or nothing, nothing happened.
                    Err(Error::Expunged(_)) => raced += 1,
                    Err(e) => panic!("{role}: {e}"),
                }
            }
            println!("MOVED {moved} RACED {raced}");
        }
        "deliver" => {
            let mut n = 0;
            while start.elapsed() < RUN_FOR {
                let id = format!("d{}-{n}@test", std::process::id());
                let m = if n % 2 == 0 { &mut a } else { &mut b };
                m.append(&message(&id)[..], AppendOptions::default())
                    .unwrap();
                println!("DELIVERED {id}");
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "check" => {
            let mut checks = 0;
            while start.elapsed() < RUN_FOR {
                let (sa, sb) = transfer::snapshot_pair(&mut a, &mut b).unwrap();
                let mut seen: HashMap<String, &str> = HashMap::new();
                for (name, m, snap) in [("A", &a, &sa), ("B", &b, &sb)] {
                    for id in live_ids(m, snap) {
                        if let Some(other) = seen.insert(id.clone(), name) {
                            panic!("{id} visible in {other} and {name} at once");
                        }
                    }
                }
                assert!(seen.len() >= 2 * INITIAL as usize, "lost: {}", seen.len());
                checks += 1;
            }
            println!("CHECKS {checks}");
        }
        r => panic!("unknown role {r}"),
    }
}

fn spawn(spool: &Path, role: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transfer_conc_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE, role)
        .env(SPOOL, spool)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for a child at most until `deadline`, killing it after that.
fn finish(mut c: Child, deadline: Instant, role: &str) -> String {
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            let mut out = String::new();
            for l in BufReader::new(c.stdout.take().unwrap()).lines() {
                out.push_str(&l.unwrap());
                out.push('\n');
            }
            let mut err = String::new();
            std::io::Read::read_to_string(&mut c.stderr.take().unwrap(), &mut err).unwrap();
            assert!(st.success(), "{role} failed: {st:?}\n{out}\n{err}");
            return out;
        }
        if Instant::now() > deadline {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{role} did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn moves_back_and_forth_with_deliveries_checks_and_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let s = store_at(&spool);
    let mut initial = BTreeSet::new();
    for name in ["INBOX", "A", "B"] {
        s.create_mailbox(&user(), &MailboxName::new(name).unwrap())
            .unwrap();
    }
    for name in ["A", "B"] {
        let mut m = open(&s, name);
        for i in 0..INITIAL {
            let id = format!("init-{name}-{i}@test");
            m.append(&message(&id)[..], AppendOptions::default())
                .unwrap();
            initial.insert(id);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let steady: Vec<(&str, Child)> = [
        "move-ab", "move-ab", "move-ba", "move-ba", "deliver", "check",
    ]
    .into_iter()
    .map(|r| (r, spawn(&spool, r)))
    .collect();
    // A victim mover killed at random moments (mid-move, sometimes),
    // restarted each time; its half-done moves are settled by others.
    let mut rng = Rng::new();
    let mut kills = 0;
    let start = Instant::now();
    while start.elapsed() < RUN_FOR {
        let role = if kills % 2 == 0 { "move-ab" } else { "move-ba" };
        let mut victim = spawn(&spool, role);
        std::thread::sleep(Duration::from_millis(30 + rng.next() % 150));
        victim.kill().unwrap();
        victim.wait().unwrap();
        kills += 1;
    }
    let mut delivered = BTreeSet::new();
    let mut summary = Vec::new();
    for (role, c) in steady {
        let out = finish(c, deadline, role);
        for l in out.lines() {
            // libtest prints "test NAME ... " without a newline before the
            // child's first line.
            let l = ["DELIVERED ", "MOVED ", "CHECKS "]
                .iter()
                .find_map(|m| l.find(m).map(|i| &l[i..]))
                .unwrap_or(l);
            if let Some(id) = l.strip_prefix("DELIVERED ") {
                delivered.insert(id.to_string());
            } else if l.starts_with("MOVED") || l.starts_with("CHECKS") {
                summary.push(format!("{role}: {l}"));
            }
        }
    }
    eprintln!("{summary:?}, kills {kills}, delivered {}", delivered.len());
    assert!(kills > 0 && !delivered.is_empty());
    let moved: usize = summary
        .iter()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<usize>().ok())
        .sum();
    assert!(moved > 0, "no move happened: {summary:?}");

    let s = store_at(&spool);
    let mut a = open(&s, "A");
    let mut b = open(&s, "B");
    let (sa, sb) = transfer::snapshot_pair(&mut a, &mut b).unwrap();
    let mut all: Vec<String> = live_ids(&a, &sa);
    all.extend(live_ids(&b, &sb));
    let n = all.len();
    let got: BTreeSet<String> = all.into_iter().collect();
    assert_eq!(n, got.len(), "a Message-ID is present twice");
    let want: BTreeSet<String> = initial.union(&delivered).cloned().collect();
    assert_eq!(got, want, "set of Message-IDs changed");
    assert_eq!(
        (sa.header.exists + sb.header.exists) as usize,
        want.len(),
        "header counts"
    );
}
