//! `imap-load changes`: the per-change figures of the big-mailbox
//! benchmark (big.rs) alone, against several servers at once with their
//! rounds interleaved (1k, 1M, 1k, 1M ...), so that a change of the
//! machine's load during the run falls on every server alike.
//!
//! Each server gets two sessions A and B, both SELECTed on the INBOX. A
//! round runs `--per-round` iterations on each server in turn (forward
//! order in even rounds, backward in odd ones). One iteration of the
//! `big` pattern is the sequence of big.rs: B SELECT; B NOOP; A UID
//! STORE of one flag on a random message, B NOOP; A UID STORE \Deleted +
//! UID EXPUNGE of another, B NOOP; A APPEND (keeps the size); the `store`
//! pattern is only A's UID STORE and B's NOOP after it, with no SELECT in
//! between (the steady state); `select-store` is `big` without the
//! EXPUNGE and the APPEND; `full` is `big` followed, untimed, by B's UID
//! SEARCH UNSEEN and FETCH 1:* (FLAGS), the rest of big.rs's round (at a
//! million messages, 160 ms in which A waits and the caches empty). The UID and flags of the message are
//! fetched by A before each STORE (untimed, as in big.rs).
//!
//! Prints, per operation and server, the median of all samples, the
//! median of the per-round medians and their spread, the ratio of each
//! server's median to the first server's, and one JSON line (`CHANGES
//! {...}`). `--on-start` / `--on-end` run a shell command after the
//! sessions are set up and after the last round (to start and stop a
//! profiler or counter on the servers around exactly the measured part).

use std::time::{Duration, Instant};

use super::{Conn, Res, Rng, ms};

/// What one iteration does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    /// big.rs's round: SELECT, NOOP, STORE, NOOP, EXPUNGE, NOOP, APPEND.
    Big,
    /// B SELECT, B NOOP, A UID STORE one flag, B NOOP: the STORE after
    /// the other session's SELECT, without big.rs's EXPUNGE and APPEND.
    SelectStore,
    /// Only UID STORE one flag, then the other session's NOOP.
    Store,
    /// `big`, then B's UID SEARCH UNSEEN and FETCH 1:* (FLAGS), untimed:
    /// the whole round of big.rs.
    Full,
}

pub struct ChangesArgs<'a> {
    pub host: &'a str,
    pub ports: &'a [u16],
    pub labels: &'a [String],
    pub user: &'a str,
    pub password: &'a str,
    pub rounds: usize,
    pub per_round: usize,
    pub pattern: Pattern,
    pub on_start: Option<&'a str>,
    pub on_end: Option<&'a str>,
    /// MiB of memory the client writes over before each iteration
    /// (untimed): evicts the CPU caches as a big SELECT does, without any
    /// work in the server.
    pub thrash_mib: usize,
}

/// Names of the timed operations, in report order.
const OPS: [&str; 7] = [
    "SELECT",
    "NOOP",
    "UID_STORE_FLAG",
    "NOOP_AFTER_STORE",
    "UID_EXPUNGE_ONE",
    "NOOP_AFTER_EXPUNGE",
    "APPEND",
];

struct Server {
    label: String,
    a: Conn,
    b: Conn,
    rng: Rng,
    /// samples[op][round]: that round's durations.
    samples: Vec<Vec<Vec<Duration>>>,
}

impl Server {
    fn time(&mut self, op: usize, round: usize, f: impl FnOnce(&mut Self) -> Res<()>) -> Res<()> {
        let t = Instant::now();
        f(self)?;
        let d = t.elapsed();
        let per_round = &mut self.samples[op];
        if per_round.len() <= round {
            per_round.resize(round + 1, Vec::new());
        }
        per_round[round].push(d);
        Ok(())
    }

    fn iteration(&mut self, pattern: Pattern, round: usize, n: usize) -> Res<()> {
        if pattern != Pattern::Store {
            self.time(0, round, |s| {
                super::big::must(s.b.cmd("SELECT INBOX")?, "SELECT")
            })?;
            self.time(1, round, |s| s.b.ok("NOOP"))?;
        }
        let seq = 1 + self.rng.below(self.a.exists);
        let (uid, flagged) = super::big::uid_of(&mut self.a, seq)?;
        let sign = if flagged { '-' } else { '+' };
        let store = format!("UID STORE {uid} {sign}FLAGS.SILENT (\\Flagged)");
        self.time(2, round, |s| s.a.ok(&store))?;
        self.time(3, round, |s| s.b.ok("NOOP"))?;
        if matches!(pattern, Pattern::Big | Pattern::Full) {
            let seq = 1 + self.rng.below(self.a.exists);
            let (uid, _) = super::big::uid_of(&mut self.a, seq)?;
            self.time(4, round, |s| {
                s.a.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))?;
                s.a.ok(&format!("UID EXPUNGE {uid}"))
            })?;
            self.time(5, round, |s| s.b.ok("NOOP"))?;
            let msg = super::big::small_message(round * 1_000_000 + n);
            self.time(6, round, |s| {
                super::big::must(s.a.append("INBOX", &msg)?, "APPEND")
            })?;
            self.b.ok("NOOP")?;
        }
        if pattern == Pattern::Full {
            super::big::must(
                super::big::counted(&mut self.b, "UID SEARCH UNSEEN")?.0,
                "SEARCH",
            )?;
            super::big::must(
                super::big::counted(&mut self.b, "FETCH 1:* (FLAGS)")?.0,
                "FETCH",
            )?;
        }
        Ok(())
    }
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn hook(cmd: Option<&str>) -> Res<()> {
    let Some(cmd) = cmd else { return Ok(()) };
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd}: {st}"))
    }
}

pub fn changes(a: &ChangesArgs) -> Res<()> {
    if a.ports.is_empty() || a.ports.len() != a.labels.len() {
        return Err("give one --label per --port".into());
    }
    let mut servers = Vec::new();
    for (&port, label) in a.ports.iter().zip(a.labels) {
        let mut ca = Conn::login(a.host, port, a.user, a.password)?;
        let mut cb = Conn::login(a.host, port, a.user, a.password)?;
        ca.ok("SELECT INBOX")?;
        cb.ok("SELECT INBOX")?;
        if ca.exists < 2 {
            return Err(format!("{label}: the INBOX needs messages"));
        }
        eprintln!("{label}: {} messages", ca.exists);
        servers.push(Server {
            label: label.clone(),
            rng: Rng(0x5eed ^ u64::from(ca.exists)),
            a: ca,
            b: cb,
            samples: vec![Vec::new(); OPS.len()],
        });
    }
    let mut thrash = vec![0u8; a.thrash_mib << 20];
    hook(a.on_start)?;
    for r in 0..a.rounds {
        let order: Vec<usize> = if r % 2 == 0 {
            (0..servers.len()).collect()
        } else {
            (0..servers.len()).rev().collect()
        };
        for i in order {
            let s = &mut servers[i];
            s.a.ok("NOOP")?;
            s.b.ok("NOOP")?;
            for n in 0..a.per_round {
                if !thrash.is_empty() {
                    let k = thrash.len();
                    for (j, b) in thrash.iter_mut().enumerate().step_by(64) {
                        *b = b.wrapping_add((j ^ n ^ k) as u8);
                    }
                    std::hint::black_box(&thrash);
                }
                s.iteration(a.pattern, r, n)?;
            }
        }
        eprintln!("round {} of {} done", r + 1, a.rounds);
    }
    hook(a.on_end)?;
    report(&mut servers);
    for s in &mut servers {
        s.a.cmd("LOGOUT").ok();
        s.b.cmd("LOGOUT").ok();
    }
    Ok(())
}

fn report(servers: &mut [Server]) {
    println!(
        "{:<20} {:<10} {:>7} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "operation", "server", "samples", "median ms", "rounds' med", "lowest", "highest", "ratio"
    );
    let mut json = Vec::new();
    for (op, name) in OPS.iter().enumerate() {
        let mut first = None;
        let mut cells = Vec::new();
        for s in servers.iter_mut() {
            let rounds = &mut s.samples[op];
            if rounds.iter().all(Vec::is_empty) {
                continue;
            }
            let mut all: Vec<Duration> = rounds.iter().flatten().copied().collect();
            let med = ms(median(&mut all));
            let mut meds: Vec<Duration> = rounds
                .iter_mut()
                .filter(|v| !v.is_empty())
                .map(|v| median(v))
                .collect();
            let rmed = ms(median(&mut meds));
            let (lo, hi) = (ms(meds[0]), ms(meds[meds.len() - 1]));
            let base = *first.get_or_insert(med);
            let ratio = med / base;
            println!(
                "{name:<20} {:<10} {:>7} {med:>10.4} {rmed:>12.4} {lo:>10.4} {hi:>10.4} {ratio:>7.2}x",
                s.label,
                all.len()
            );
            cells.push(format!(
                "\"{}\":{{\"samples\":{},\"median_ms\":{med:.4},\"round_median_ms\":{rmed:.4},\"round_lowest_ms\":{lo:.4},\"round_highest_ms\":{hi:.4}}}",
                s.label,
                all.len()
            ));
        }
        if !cells.is_empty() {
            json.push(format!("\"{name}\":{{{}}}", cells.join(",")));
        }
    }
    println!("CHANGES {{{}}}", json.join(","));
}
