//! All-processes campaign (issue 15): one-shot `deliver` loops, a
//! `deliver --lmtp` server with LMTP client processes, IMAP sessions
//! (`imapd-check serve --stdio`) doing STORE, STORE \Deleted + UID
//! EXPUNGE, UID MOVE and APPEND, and admin workers running `idx-admin
//! repack`, `reconstruct` and `recover` in overlapping loops (some paused
//! at a fault point), all at once on one user's INBOX and Archive, with a
//! killer SIGKILLing a random running process of any of these kinds every
//! 20–130 ms.
//!
//! IMAP watchers (not killed) check while it runs that a (mailbox,
//! UIDVALIDITY, UID) never changes content, that no message leaves a view
//! unless an actor logged an EXPUNGE or MOVE intent for it before sending
//! the command, that UIDs ascend, and that every byte served is what was
//! sent. At the end (after `idx-admin recover` per mailbox): verify clean,
//! every acknowledged message present exactly once across the mailboxes
//! with its exact bytes (unless expunged on purpose), nothing a watcher saw
//! lost, nothing stored twice. Machinery: `tests/src/campaign.rs`.
//!
//! Short form (CI): 60 s. `RELIABILITY_LONG=1`: until 10,500 kills.
//! `RELIABILITY_SCALE=N`: N seconds. `RELIABILITY_SEED` repeats the
//! random choices (the process timing is not repeatable).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use e2e_tests::campaign::{
    Env, FAILURES, Kind, Ledger, MAILBOXES, Procs, USER, Watcher, admin_loop, deliver_loop,
    final_check, imap_actor_loop, killer_loop, lmtp_client_loop, lmtp_client_main,
    lmtp_server_loop,
};
use e2e_tests::reliability::{Rng, is_long, make_user, seed};

const CLIENT_ENV: &str = "RELIABILITY_CAMPAIGN_LMTP_CLIENT";
const CLIENT_TEST: &str = "campaign_lmtp_client_entry";

/// The LMTP client process. Does nothing unless re-executed by the
/// campaign.
#[test]
fn campaign_lmtp_client_entry() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let mut p = spec.split('|');
    let sock = PathBuf::from(p.next().unwrap());
    let stop = PathBuf::from(p.next().unwrap());
    let id = p.next().unwrap().to_string();
    let seed: u64 = p.next().unwrap().parse().unwrap();
    let run: u64 = std::env::var("CAMPAIGN_LMTP_RUN")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    lmtp_client_main(&sock, &stop, &id, run, seed ^ run.wrapping_mul(0x9E37_79B9));
    std::process::exit(0);
}

#[test]
fn campaign_all_processes() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    // Duration in seconds, or (long form) a kill target.
    let scale_secs = std::env::var("RELIABILITY_SCALE")
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    let (secs, kill_target) = match scale_secs {
        Some(s) => (s, None),
        None if is_long() => (4 * 3600, Some(10_500)),
        None => (60, None),
    };
    let long = is_long();
    println!(
        "campaign: seed {seed} (RELIABILITY_SEED to repeat), {}",
        match kill_target {
            Some(k) => format!("until {k} kills (at most {secs} s)"),
            None => format!("{secs} s"),
        }
    );
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    make_user(&spool, USER, &MAILBOXES[1..]);
    let dir = tmp.path().to_path_buf();
    if std::env::var_os("CAMPAIGN_KEEP").is_some() {
        // Debugging: keep the spool and the session logs.
        println!("campaign: keeping {}", dir.display());
        std::mem::forget(tmp);
    }
    let env = Env {
        spool: spool.clone(),
        dir: dir.clone(),
        ledger: Arc::new(Ledger::default()),
        procs: Arc::new(Procs::default()),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let sock = dir.join("lmtp.sock");
    let stop_file = dir.join("stop");
    let exe = std::env::current_exe().unwrap();

    let mut actors = Vec::new();
    let spawn = |f: Box<dyn FnOnce() + Send>| std::thread::spawn(f);
    for i in 0..3 {
        let (e, s) = (env.clone(), rng.next_u64());
        actors.push(spawn(Box::new(move || deliver_loop(e, i, s))));
    }
    for i in 0..if long { 3 } else { 2 } {
        let mut worker = Command::new(&exe);
        worker
            .args([
                CLIENT_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(
                CLIENT_ENV,
                format!(
                    "{}|{}|{i}|{}",
                    sock.display(),
                    stop_file.display(),
                    rng.next_u64()
                ),
            )
            .env_remove("MAILSTORE_TEST_FAULT")
            .env_remove("RELIABILITY_SEED");
        let e = env.clone();
        actors.push(spawn(Box::new(move || lmtp_client_loop(e, worker))));
    }
    for i in 0..3 {
        let (e, s) = (env.clone(), rng.next_u64());
        actors.push(spawn(Box::new(move || imap_actor_loop(e, i, s))));
    }
    for _ in 0..if long { 3 } else { 2 } {
        let (e, s) = (env.clone(), rng.next_u64());
        actors.push(spawn(Box::new(move || admin_loop(e, s))));
    }
    let server = {
        let (e, sock, log) = (env.clone(), sock.clone(), dir.join("lmtp.log"));
        std::thread::spawn(move || lmtp_server_loop(e, sock, log))
    };
    let killer = {
        let (e, s) = (env.clone(), rng.next_u64());
        std::thread::spawn(move || killer_loop(e, s))
    };
    let watch_stop = Arc::new(AtomicBool::new(false));
    let mut watchers = Vec::new();
    for (i, m) in ["INBOX", "INBOX", "Archive"].into_iter().enumerate() {
        let w = Watcher::new(
            format!("watcher-{i}"),
            m,
            &spool,
            dir.join(format!("watcher-{i}.log")),
            env.ledger.clone(),
            env.procs.clone(),
            rng.next_u64(),
        );
        let stop = watch_stop.clone();
        watchers.push(std::thread::spawn(move || w.run(stop)));
    }

    let started = Instant::now();
    let mut last_report = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = started.elapsed();
        let done = match kill_target {
            Some(k) => env.procs.total_kills() >= k || elapsed.as_secs() >= secs,
            None => elapsed.as_secs() >= secs,
        };
        if done {
            break;
        }
        if last_report.elapsed() >= Duration::from_secs(if long { 60 } else { 15 }) {
            last_report = Instant::now();
            let failures: u64 = FAILURES.iter().map(|f| env.ledger.count(f)).sum();
            println!(
                "  {:>5.0}s: {} kills, {} problems so far",
                elapsed.as_secs_f64(),
                env.procs.total_kills(),
                failures
            );
        }
    }
    let campaign_secs = started.elapsed().as_secs_f64();
    // Stop: the killer first, then every actor finishes what it does; the
    // LMTP server goes last; the watchers take a last look.
    env.stop.store(true, Ordering::Relaxed);
    std::fs::write(&stop_file, b"").unwrap();
    killer.join().unwrap();
    for a in actors {
        a.join().unwrap();
    }
    std::fs::write(dir.join("lmtp-clients-done"), b"").unwrap();
    server.join().unwrap();
    watch_stop.store(true, Ordering::Relaxed);
    for w in watchers {
        w.join().unwrap();
    }

    let fin = final_check(&spool, &env.ledger);
    // One more fresh look per mailbox after the final recover.
    for m in MAILBOXES {
        let mut w = Watcher::new(
            format!("final-{m}"),
            m,
            &spool,
            dir.join("final.log"),
            env.ledger.clone(),
            env.procs.clone(),
            0,
        );
        w.finish_watch();
    }

    if std::env::var_os("CAMPAIGN_KEEP").is_some() {
        env.ledger.write_events(&dir.join("events.log"));
    }
    let kills = env.procs.kills();
    let runs = env.procs.runs();
    let stats = env.ledger.stats();
    let problems = env.ledger.problems();
    let count = |k: &str| problems.get(k).copied().unwrap_or(0);
    let stat = |k: &str| stats.get(k).copied().unwrap_or(0);
    let kill_list: Vec<String> = Kind::ALL
        .iter()
        .map(|k| {
            format!(
                "{} {}/{}",
                k.name(),
                kills.get(k).copied().unwrap_or(0),
                runs.get(k).copied().unwrap_or(0)
            )
        })
        .collect();
    println!("campaign statistics:");
    for (k, v) in &stats {
        println!("  {k}: {v}");
    }
    let samples = env.ledger.samples();
    if !samples.is_empty() {
        println!("campaign problems (first {}):", samples.len());
        for s in &samples {
            println!("  {s}");
        }
    }
    let total_kills: u64 = kills.values().sum();
    println!(
        "campaign: seed {seed}, {campaign_secs:.0} s, {} acknowledged ({} deliver, {} LMTP, {} APPEND), \
         {} unacknowledged but present, {} expunged on purpose, {} present at the end, {} quarantined files; \
         {} MOVEs, {} EXPUNGEs ok, {} keywords checked; kills (killed/runs) {}: {total_kills} in all; \
         lost {}, keywords lost {}, changed {}, duplicated {}, vanished {}, seen-then-lost {}, wrong bytes {}, \
         UIDs not ascending {}, unknown {}, UIDVALIDITY changed {}, view inconsistent {}, \
         verify {}, recover {}, hangs {}, crashes {}, harness {}",
        fin.acknowledged,
        stat("deliver.acknowledged"),
        stat("lmtp.acknowledged"),
        stat("imap.append-acknowledged"),
        fin.unacknowledged_present,
        fin.expunged_by_intent,
        fin.present,
        fin.quarantined,
        stat("imap.MOVE ok"),
        stat("imap.EXPUNGE ok"),
        fin.keywords_checked,
        kill_list.join(", "),
        count("lost"),
        count("keyword-lost"),
        count("changed"),
        count("duplicated"),
        count("vanished"),
        count("seen-then-lost"),
        count("wrong-bytes"),
        count("uid-not-ascending"),
        count("unknown-message"),
        count("uidvalidity-changed"),
        count("view-inconsistent"),
        count("verify"),
        count("recover"),
        count("hang"),
        count("crash"),
        count("harness"),
    );
    let failures: Vec<String> = FAILURES
        .iter()
        .filter(|f| count(f) > 0)
        .map(|f| format!("{f} {}", count(f)))
        .collect();
    assert!(
        failures.is_empty(),
        "campaign (seed {seed}) broke the store's promise: {}",
        failures.join(", ")
    );
    // A campaign that did not exercise every kind proves nothing.
    let ops = e2e_tests::campaign::admin_ops();
    for k in Kind::ALL {
        if matches!(k, Kind::Repack | Kind::Reconstruct | Kind::Recover)
            && !ops.iter().any(|o| o == k.name())
        {
            continue;
        }
        assert!(
            kills.get(&k).copied().unwrap_or(0) > 0,
            "no {} process was killed",
            k.name()
        );
    }
    assert!(fin.acknowledged > 100, "too few acknowledged messages");
    if let Some(k) = kill_target {
        assert!(total_kills >= k, "only {total_kills} kills of {k}");
    }
}
