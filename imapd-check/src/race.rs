//! `imapd-check race`: reproduces the seed-002 race and shows that the
//! generation check does not have it.
//!
//! W writer processes deliver N messages in all (re-executing this binary
//! as `race-writer`, which appends through `Mailbox::append`, or through an
//! external `deliver` with `--deliver`). R reader processes (`race-reader`)
//! poll like an IMAP client's NOOP; when every writer has exited, each does
//! one final NOOP and reports how many messages it believes exist, and when
//! it first noticed each UID. The writer pause is the library's test-only
//! fault point `append.after_records=pause:MS`: the writer sleeps between
//! the record write and the header write, with the lock held.
//!
//! The last stdout line is JSON. The harness reports; tests assert.

mod worker;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use storage::{Durability, MailboxName, Options, Store, UserName};

pub use worker::{ReaderArgs, Res, WriterArgs, reader, writer};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Ours: SessionView::check, generation compared under a shared lock.
    Generation,
    /// Legacy Cyrus: unlocked stat, st_mtime in whole seconds.
    Mtime,
}

impl Strategy {
    fn name(self) -> &'static str {
        match self {
            Strategy::Generation => "generation",
            Strategy::Mtime => "mtime",
        }
    }
}

pub fn durability(unsafe_no_fsync: bool) -> Durability {
    if unsafe_no_fsync {
        Durability::Relaxed
    } else {
        Durability::Full
    }
}

#[derive(clap::Args, Debug)]
pub struct RaceArgs {
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long, default_value = "race")]
    pub user: String,
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    #[arg(long, default_value_t = 2)]
    pub readers: usize,
    #[arg(long, default_value_t = 40)]
    pub messages: usize,
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    /// Writers sleep this long between the record and the header write.
    #[arg(long, default_value_t = 0)]
    pub writer_pause_ms: u64,
    /// Each writer starts its last delivery just after a wall-clock second
    /// boundary, so that its record and header writes share one second.
    #[arg(long)]
    pub align_final: bool,
    /// Writers skip every fsync (Durability::Relaxed): for big runs only.
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Deliver through this `deliver` binary (`--spool DIR -d USER
    /// --autocreate`) instead of `Mailbox::append` in-process.
    #[arg(long)]
    pub deliver: Option<PathBuf>,
    #[arg(long, default_value_t = 1000)]
    pub check_interval_us: u64,
    /// Give up (and kill the children) after this long.
    #[arg(long, default_value_t = 900)]
    pub timeout_secs: u64,
    /// Print only the JSON line.
    #[arg(long)]
    pub json: bool,
}

/// Kills and reaps children left over when the harness fails.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn collect_lines(mut r: impl Read + Send + 'static) -> JoinHandle<std::io::Result<String>> {
    std::thread::spawn(move || {
        let mut s = String::new();
        r.read_to_string(&mut s)?;
        Ok(s)
    })
}

fn wait_all(children: &mut [Child], deadline: Instant, what: &str) -> Res<()> {
    for c in children.iter_mut() {
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    return Err(format!("a {what} exited with {st}").into());
                }
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("timed out waiting for a {what}").into());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

struct ReaderReport {
    count: u64,
    checks: u64,
    noticed: Vec<(u32, u64)>,
}

fn parse_reader(out: &str) -> Res<ReaderReport> {
    let mut r = ReaderReport {
        count: 0,
        checks: 0,
        noticed: Vec::new(),
    };
    let mut finished = false;
    for line in out.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["ready"] => {}
            ["seen", uid, t] => r.noticed.push((uid.parse()?, t.parse()?)),
            ["final", n, checks] => {
                r.count = n.parse()?;
                r.checks = checks.parse()?;
                finished = true;
            }
            _ => return Err(format!("unexpected reader line {line:?}").into()),
        }
    }
    if !finished {
        return Err("a reader ended without its final line".into());
    }
    Ok(r)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Maps `X-Race-Token` values to UIDs by reading the delivered messages
/// (only needed with an external `deliver`).
fn tokens_to_uids(store: &Store, user: &UserName) -> Res<HashMap<String, u32>> {
    let mut mbox = store.open_mailbox(user, &MailboxName::inbox())?;
    let mut map = HashMap::new();
    for r in mbox.snapshot()?.records {
        let body = mbox.read_message(r.uid)?;
        let text = String::from_utf8_lossy(&body);
        if let Some(tok) = text.lines().find_map(|l| l.strip_prefix("X-Race-Token: ")) {
            map.insert(tok.trim().to_string(), r.uid);
        }
    }
    Ok(map)
}

pub fn run(a: RaceArgs) -> Res<()> {
    let exe = std::env::current_exe()?;
    let user = UserName::new(&a.user)?;
    let store = Store::open(
        &a.spool,
        Options {
            durability: durability(a.unsafe_no_fsync),
            ..Options::default()
        },
    )?;
    store.ensure_mailbox(&user, &MailboxName::inbox())?;
    let baseline = store
        .open_mailbox(&user, &MailboxName::inbox())?
        .header()?
        .exists as u64;
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);

    // Readers first, each SELECTed before any delivery starts.
    let mut readers = Children(Vec::new());
    let mut reader_stdin: Vec<ChildStdin> = Vec::new();
    let mut reader_out = Vec::new();
    for _ in 0..a.readers {
        let mut c = Command::new(&exe)
            .arg("race-reader")
            .arg("--spool")
            .arg(&a.spool)
            .args(["--user", &a.user, "--strategy", a.strategy.name()])
            .arg(format!("--check-interval-us={}", a.check_interval_us))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        reader_stdin.push(c.stdin.take().expect("piped"));
        let mut out = BufReader::new(c.stdout.take().expect("piped"));
        readers.0.push(c);
        let mut first = String::new();
        out.read_line(&mut first)?;
        if first.trim() != "ready" {
            return Err(format!("reader did not start: {first:?}").into());
        }
        reader_out.push(collect_lines(out));
    }

    let started = Instant::now();
    let mut writers = Children(Vec::new());
    let mut writer_out = Vec::new();
    for i in 0..a.writers {
        let count = a.messages / a.writers + usize::from(i < a.messages % a.writers);
        let mut cmd = Command::new(&exe);
        cmd.arg("race-writer")
            .arg("--spool")
            .arg(&a.spool)
            .args(["--user", &a.user])
            .arg(format!("--id={i}"))
            .arg(format!("--count={count}"))
            .stdout(Stdio::piped());
        if a.unsafe_no_fsync {
            cmd.arg("--unsafe-no-fsync");
        }
        if a.align_final {
            cmd.arg("--align-final");
        }
        if let Some(d) = &a.deliver {
            cmd.arg("--deliver").arg(d);
        }
        if a.writer_pause_ms > 0 {
            cmd.env(
                storage::internals::fault::ENV,
                format!("append.after_records=pause:{}", a.writer_pause_ms),
            );
        } else {
            cmd.env_remove(storage::internals::fault::ENV);
        }
        let mut c = cmd.spawn()?;
        writer_out.push(collect_lines(c.stdout.take().expect("piped")));
        writers.0.push(c);
    }
    wait_all(&mut writers.0, deadline, "writer")?;
    let write_elapsed = started.elapsed();
    // EOF on their stdin tells the readers to do their final NOOP.
    drop(reader_stdin);
    wait_all(&mut readers.0, deadline, "reader")?;

    let mut committed: HashMap<u32, u64> = HashMap::new();
    let mut by_token: Vec<(String, u64)> = Vec::new();
    for h in writer_out {
        let text = h.join().map_err(|_| "writer output thread panicked")??;
        for line in text.lines() {
            match line.split(' ').collect::<Vec<_>>().as_slice() {
                ["uid", uid, t] => {
                    committed.insert(uid.parse()?, t.parse()?);
                }
                ["tok", tok, t] => by_token.push((tok.to_string(), t.parse()?)),
                _ => return Err(format!("unexpected writer line {line:?}").into()),
            }
        }
    }
    if !by_token.is_empty() {
        let map = tokens_to_uids(&store, &user)?;
        for (tok, t) in by_token {
            let uid = map
                .get(&tok)
                .ok_or_else(|| format!("delivery {tok} not found in the mailbox"))?;
            committed.insert(*uid, t);
        }
    }
    let deliveries = committed.len() as u64;
    let expected = baseline + a.messages as u64;

    let mut lags = Vec::new();
    let mut noticed_before_commit = 0u64;
    let mut missed = 0u64;
    let mut readers_missing = 0u64;
    let mut checks = 0u64;
    let mut finals = Vec::new();
    for h in reader_out {
        let text = h.join().map_err(|_| "reader output thread panicked")??;
        let r = parse_reader(&text)?;
        checks += r.checks;
        finals.push(r.count);
        let m = expected.saturating_sub(r.count);
        missed += m;
        readers_missing += u64::from(m > 0);
        for (uid, t) in r.noticed {
            if let Some(&c) = committed.get(&uid) {
                // The writer stamps its commit after append returns (after
                // the header fsync); a reader may see the header first.
                if t < c {
                    noticed_before_commit += 1;
                }
                lags.push(t.saturating_sub(c));
            }
        }
    }
    lags.sort_unstable();
    let us = |ns: u64| ns / 1000;
    let report = serde_json::json!({
        "strategy": a.strategy.name(),
        "deliveries": deliveries,
        "writers": a.writers,
        "readers": a.readers,
        "messages": a.messages,
        "checks": checks,
        "missed_after_final_noop": missed,
        "readers_missing": readers_missing,
        "reader_final_counts": finals,
        "expected_count": expected,
        "lag_p50_us": us(percentile(&lags, 0.50)),
        "lag_p99_us": us(percentile(&lags, 0.99)),
        "lag_max_us": us(lags.last().copied().unwrap_or(0)),
        "lag_samples": lags.len(),
        "noticed_before_commit_stamp": noticed_before_commit,
        "writer_pause_ms": a.writer_pause_ms,
        "align_final": a.align_final,
        "durability": if a.unsafe_no_fsync { "relaxed" } else { "full" },
        "via": if a.deliver.is_some() { "deliver" } else { "append" },
        "write_elapsed_ms": write_elapsed.as_millis() as u64,
        "deliveries_per_sec": (deliveries as f64 / write_elapsed.as_secs_f64().max(1e-9)).round(),
    });
    let mut out = std::io::stdout().lock();
    if !a.json {
        writeln!(
            out,
            "{} strategy: {deliveries} deliveries by {} writers in {:.2?}; {} readers, {checks} checks",
            a.strategy.name(),
            a.writers,
            write_elapsed,
            a.readers
        )?;
        writeln!(
            out,
            "missed after the final NOOP: {missed} (readers missing mail: {readers_missing}); \
             lag p50 {} us, p99 {} us",
            us(percentile(&lags, 0.50)),
            us(percentile(&lags, 0.99))
        )?;
    }
    writeln!(out, "{report}")?;
    Ok(())
}
