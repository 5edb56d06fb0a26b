//! Crash campaign (issue 7): concurrent `deliver` processes (the real
//! binary) and flag / expunge / copy / move / repack / recover writers (this
//! test binary re-executed, using the storage API) on one user's INBOX and
//! Archive, killed with SIGKILL at random moments and at every test-only
//! fault point (`MAILSTORE_TEST_FAULT=POINT=kill`).
//!
//! Writers only ever expunge, move or copy their own "filler" messages, so
//! after the campaign:
//! - every message whose `deliver` exited 0 is in INBOX exactly once, with
//!   the bytes `deliver` stores (the input with bare LF turned into CRLF);
//! - a `deliver` that exited non-zero (not killed) left nothing;
//! - a killed `deliver` left its message at most once, intact;
//! - after `idx-admin recover`, `idx-inspect verify` exits 0, UIDs ascend,
//!   and the staging directories are empty.
//!
//! The same checks run at checkpoints during the campaign. Short form in
//! `cargo test`; `RELIABILITY_LONG=1` for thousands of operations.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e_tests::reliability::{
    Rng, Running, crlf, deliver_cmd, make_user, read_contents, recover_and_verify, scale, seed,
    stage_leftovers, token_message, token_of,
};
use storage::internals::fault::POINTS;
use storage::mailbox::{BatchOp, FlagOp, Mailbox};
use storage::{AppendOptions, Error, Flags, MailboxName, Options, Store, UserName};

const USER: &str = "crash";
const WORKER_ENV: &str = "RELIABILITY_CRASH_WORKER";
const WORKER_TEST: &str = "crash_worker_entry";
/// Exit code of a worker that met an error it must never see.
const WORKER_BUG: i32 = 3;

fn mailbox_dir(spool: &Path, name: &str) -> PathBuf {
    Store::open(spool, Options::default())
        .unwrap()
        .mailbox_path(
            &UserName::new(USER).unwrap(),
            &MailboxName::new(name).unwrap(),
        )
}

// ---------------------------------------------------------------- worker

/// The writer child. Does nothing unless re-executed by the campaign.
#[test]
fn crash_worker_entry() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let mut parts = spec.split(':');
    let spool = PathBuf::from(parts.next().unwrap());
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let ops: u64 = parts.next().unwrap().parse().unwrap();
    let focus = parts.next().unwrap_or("").to_string();
    let ops_file = parts.next().unwrap().to_string();
    let code = match worker(&spool, seed, ops, &focus, &ops_file) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker: {e}");
            WORKER_BUG
        }
    };
    std::process::exit(code);
}

fn is_filler(mb: &Mailbox, uid: u32) -> bool {
    match mb.read_message(uid) {
        Ok(b) => token_of(&b).is_some_and(|t| t.starts_with("filler-")),
        Err(_) => false,
    }
}

/// Errors a writer may legitimately get under this load.
fn tolerated(e: &Error) -> bool {
    matches!(
        e,
        Error::LockTimeout { .. }
            | Error::Expunged(_)
            | Error::TooManyKeywords(_)
            // An import's UID taken by a delivery between its look and
            // its lock: refused, nothing written (storage/src/import.rs).
            | Error::UidTaken { .. }
    )
}

fn worker(spool: &Path, seed: u64, ops: u64, focus: &str, ops_file: &str) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let store = Store::open(spool, Options::default()).map_err(|e| e.to_string())?;
    let user = UserName::new(USER).unwrap();
    let mut inbox = store
        .open_mailbox(&user, &MailboxName::inbox())
        .map_err(|e| e.to_string())?;
    let mut archive = store
        .open_mailbox(&user, &MailboxName::new("Archive").unwrap())
        .map_err(|e| e.to_string())?;
    let mut counter = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(ops_file)
        .map_err(|e| e.to_string())?;
    for i in 0..ops {
        // Half the operations are the one the assigned fault point is in,
        // so the point is reached.
        let op = if i % 2 == 0 && !focus.is_empty() {
            focus.to_string()
        } else {
            [
                "append", "store", "meta", "expunge", "repack", "copy", "move", "recover",
                "import", "batch",
            ][rng.below(10) as usize]
                .to_string()
        };
        match one_op(&op, &mut rng, &mut inbox, &mut archive, i) {
            Ok(()) => {}
            Err(e) if tolerated(&e) => {}
            Err(e) => return Err(format!("{op}: {e}")),
        }
        let _ = counter.write_all(b".");
    }
    Ok(())
}

fn fillers(mb: &mut Mailbox, rng: &mut Rng, max: usize) -> Result<Vec<u32>, Error> {
    let snap = mb.snapshot()?;
    let mut out = Vec::new();
    for r in snap.records.iter().filter(|r| !r.is_expunged()) {
        if out.len() >= max {
            break;
        }
        if rng.chance(50) && is_filler(mb, r.uid) {
            out.push(r.uid);
        }
    }
    Ok(out)
}

fn one_op(
    op: &str,
    rng: &mut Rng,
    inbox: &mut Mailbox,
    archive: &mut Mailbox,
    i: u64,
) -> Result<(), Error> {
    match op {
        "append" => {
            let token = format!("filler-{}-{i}", std::process::id());
            let msg = crlf(&token_message(&token, rng.below(20) as usize));
            inbox.append(&msg[..], AppendOptions::default())?;
        }
        "store" | "meta" => {
            let snap = inbox.snapshot()?;
            let live: Vec<u32> = snap.live_uids();
            if live.is_empty() {
                return inbox
                    .append(
                        &b"Subject: x\r\n\r\n[[filler-seed]]\r\n"[..],
                        AppendOptions::default(),
                    )
                    .map(|_| ());
            }
            let uids: Vec<u32> = (0..1 + rng.below(4))
                .map(|_| live[rng.below(live.len() as u64) as usize])
                .collect();
            let flags = [Flags::SEEN, Flags::FLAGGED, Flags::ANSWERED][rng.below(3) as usize];
            let kw = if op == "meta" {
                // A new name makes the keyword table (`.meta`) change.
                vec![format!("$k{}", rng.below(200))]
            } else {
                Vec::new()
            };
            let fop = if rng.chance(60) {
                FlagOp::Add
            } else {
                FlagOp::Remove
            };
            inbox.store(&uids, fop, flags, &kw, None)?;
        }
        "expunge" => {
            let f = fillers(inbox, rng, 3)?;
            if f.is_empty() {
                return one_op("append", rng, inbox, archive, i);
            }
            inbox.store(&f, FlagOp::Add, Flags::DELETED, &[], None)?;
            inbox.expunge(Some(&f), true)?;
        }
        "repack" => {
            // Repack needs expunged records to do anything.
            let f = fillers(inbox, rng, 2)?;
            if !f.is_empty() {
                inbox.expunge(Some(&f), false)?;
            }
            inbox.repack()?;
            if rng.chance(30) {
                archive.repack()?;
            }
        }
        "copy" => {
            let f = fillers(inbox, rng, 2)?;
            if f.is_empty() {
                return one_op("append", rng, inbox, archive, i);
            }
            storage::transfer::copy(inbox, &f, archive, None)?;
        }
        "move" => {
            let f = fillers(inbox, rng, 2)?;
            if f.is_empty() {
                return one_op("append", rng, inbox, archive, i);
            }
            storage::transfer::move_messages(inbox, &f, archive, None)?;
            // And some back, so the archive's own side moves too.
            let back = fillers(archive, rng, 1)?;
            if !back.is_empty() {
                storage::transfer::move_messages(archive, &back, inbox, None)?;
            }
        }
        "recover" => {
            inbox.recover()?;
        }
        // A group commit (PROTOCOL.md §4a): a flag change and an expunge
        // of fillers, one flush.
        "batch" => {
            let f = fillers(inbox, rng, 2)?;
            if f.is_empty() {
                return one_op("append", rng, inbox, archive, i);
            }
            let live = inbox.snapshot()?.live_uids();
            let other = live[rng.below(live.len() as u64) as usize];
            inbox.write_batch(|| {
                vec![
                    BatchOp::Store {
                        uids: vec![other],
                        op: FlagOp::Add,
                        flags: Flags::FLAGGED,
                        unchanged_since: None,
                    },
                    BatchOp::Store {
                        uids: f.clone(),
                        op: FlagOp::Add,
                        flags: Flags::DELETED,
                        unchanged_since: None,
                    },
                    BatchOp::Expunge {
                        uids: Some(f.clone()),
                        require_deleted: true,
                        hint: Vec::new(),
                    },
                ]
            })?;
        }
        "import" => {
            // A batch (one syncfs for all, PROTOCOL.md §3a) under given
            // UIDs with a gap, UIDNEXT raised, then a header-only raise.
            let n = 1 + rng.below(3) as u32;
            let mut staged = Vec::new();
            for k in 0..n {
                let token = format!("filler-{}-{i}-{k}", std::process::id());
                let msg = crlf(&token_message(&token, rng.below(20) as usize));
                staged.push(inbox.stage_for_batch(&msg[..], AppendOptions::default())?);
            }
            let last = inbox.header()?.last_uid;
            let uids: Vec<u32> = (0..n).map(|k| last + 2 + k).collect();
            inbox.commit_with_uids(staged, &uids, Some(last + 4 + n))?;
            inbox.reserve_uids(last + 5 + n + rng.below(3) as u32)?;
        }
        other => panic!("unknown op {other}"),
    }
    Ok(())
}

// -------------------------------------------------------------- campaign

struct Delivery {
    input: Vec<u8>,
    outcome: Option<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Refused,
    Killed,
}

/// The operation a fault point is part of, for the worker's focus.
fn focus_of(point: &str) -> &'static str {
    match point.split('.').next().unwrap() {
        // The change log's block is written by every in-place commit.
        "store" | "changes" => "store",
        "expunge" => "expunge",
        "batch" => "batch",
        "repack" => "repack",
        "meta" => "meta",
        "copy" => "copy",
        "move" => "move",
        "import" => "import",
        _ => "append",
    }
}

/// A child of one round: the process, when to kill it, its fault point,
/// and the token of its message (deliveries only).
type Kid = (
    Running,
    Option<Duration>,
    Option<&'static str>,
    Option<String>,
);

struct Tally {
    operations: u64,
    deliveries: u64,
    kills_random: u64,
    kills_at_points: u64,
    points_hit: BTreeMap<&'static str, u64>,
    checkpoints: u64,
}

#[test]
fn crash_campaign() {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let target_ops = scale(1500, 20000);
    let parallel_deliveries = if e2e_tests::reliability::is_long() {
        8
    } else {
        4
    };
    println!(
        "crash campaign: seed {seed} (RELIABILITY_SEED to repeat), target {target_ops} operations"
    );
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    make_user(&spool, USER, &["Archive"]);
    let inbox_dir = mailbox_dir(&spool, "INBOX");
    let archive_dir = mailbox_dir(&spool, "Archive");
    let ops_file = tmp.path().join("worker-ops");
    let exe = std::env::current_exe().unwrap();

    let mut deliveries: BTreeMap<String, Delivery> = BTreeMap::new();
    let mut t = Tally {
        operations: 0,
        deliveries: 0,
        kills_random: 0,
        kills_at_points: 0,
        points_hit: BTreeMap::new(),
        checkpoints: 0,
    };
    // Points still to be hit go first; once all were hit, random ones.
    let mut pending: Vec<&'static str> = POINTS.to_vec();
    let started = Instant::now();
    let mut round = 0u64;
    let worker_ops_done = || std::fs::metadata(&ops_file).map(|m| m.len()).unwrap_or(0);
    while t.deliveries + worker_ops_done() < target_ops || !pending.is_empty() {
        round += 1;
        assert!(
            round < 20_000,
            "campaign does not converge; unhit points {pending:?}"
        );
        let point = if pending.is_empty() {
            POINTS[rng.below(POINTS.len() as u64) as usize]
        } else {
            pending[(round as usize) % pending.len()]
        };
        let point_for_deliver = point.starts_with("append.");
        // (child, kill time, fault point, token)
        let mut kids: Vec<Kid> = Vec::new();
        for d in 0..parallel_deliveries {
            let token = format!("d-{round}-{d}");
            let lines = match rng.below(10) {
                0 => 3000 + rng.below(3000) as usize, // over one 64 KiB chunk
                _ => rng.below(60) as usize,
            };
            let input = token_message(&token, lines);
            let mut cmd = deliver_cmd(&spool, USER);
            cmd.arg("--lock-timeout-ms").arg("20000");
            let mut fault = None;
            if d == 0 && point_for_deliver {
                cmd.env("MAILSTORE_TEST_FAULT", format!("{point}=kill"));
                fault = Some(point);
            }
            let kill_at = (fault.is_none() && rng.chance(30))
                .then(|| Duration::from_micros(rng.below(40_000)));
            deliveries.insert(
                token.clone(),
                Delivery {
                    input: input.clone(),
                    outcome: None,
                },
            );
            kids.push((Running::spawn(&mut cmd, input), kill_at, fault, Some(token)));
            t.deliveries += 1;
        }
        for w in 0..2 {
            let fault = (w == 0 && !point_for_deliver).then_some(point);
            let focus = fault.map(focus_of).unwrap_or("");
            let spec = format!(
                "{}:{}:{}:{focus}:{}",
                spool.display(),
                rng.next_u64(),
                4 + rng.below(16),
                ops_file.display()
            );
            let mut cmd = Command::new(&exe);
            cmd.args([
                WORKER_TEST,
                "--exact",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(WORKER_ENV, spec)
            .env_remove("MAILSTORE_TEST_FAULT")
            .stdout(Stdio::null());
            if let Some(p) = fault {
                cmd.env("MAILSTORE_TEST_FAULT", format!("{p}=kill"));
            }
            let kill_at = (fault.is_none() && rng.chance(50))
                .then(|| Duration::from_micros(rng.below(150_000)));
            kids.push((Running::spawn(&mut cmd, Vec::new()), kill_at, fault, None));
        }
        // Kill the chosen ones at their moment, then reap everyone.
        let t0 = Instant::now();
        loop {
            let mut all_done = true;
            for (k, kill_at, _, _) in kids.iter_mut() {
                if k.child.try_wait().unwrap().is_some() {
                    continue;
                }
                all_done = false;
                if let Some(at) = *kill_at
                    && t0.elapsed() >= at
                {
                    k.kill();
                    *kill_at = None;
                    t.kills_random += 1;
                }
            }
            if all_done {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "round {round} hung"
            );
            std::thread::sleep(Duration::from_micros(500));
        }
        for (k, _, fault, token) in kids {
            let f = k.finish(Duration::from_secs(10));
            let killed = f.signal == Some(libc::SIGKILL);
            if killed && let Some(p) = fault {
                t.kills_at_points += 1;
                *t.points_hit.entry(p).or_default() += 1;
                pending.retain(|x| *x != p);
            }
            match token {
                Some(tok) => {
                    let outcome = match (f.code, killed) {
                        (_, true) => Outcome::Killed,
                        (Some(0), _) => Outcome::Delivered,
                        (Some(75), _) => {
                            // Only a lock timeout is an acceptable refusal here.
                            assert!(
                                f.stderr.starts_with("4.2.0"),
                                "deliver {tok} exited 75: {}",
                                f.stderr
                            );
                            Outcome::Refused
                        }
                        other => panic!("deliver {tok}: unexpected end {other:?}: {}", f.stderr),
                    };
                    deliveries.get_mut(&tok).unwrap().outcome = Some(outcome);
                }
                None => {
                    assert!(
                        killed || f.code == Some(0),
                        "worker failed ({:?}): {}",
                        f.code,
                        f.stderr
                    );
                }
            }
        }
        if round.is_multiple_of(10) {
            println!(
                "  round {round}: {} operations, {:.1}s, points not hit yet: {pending:?}",
                t.deliveries + worker_ops_done(),
                started.elapsed().as_secs_f64()
            );
        }
        if round.is_multiple_of(25) {
            check(&spool, &inbox_dir, &archive_dir, &deliveries);
            t.checkpoints += 1;
        }
    }
    let checked = check(&spool, &inbox_dir, &archive_dir, &deliveries);
    t.checkpoints += 1;
    t.operations = t.deliveries + worker_ops_done();
    let delivered = deliveries
        .values()
        .filter(|d| d.outcome == Some(Outcome::Delivered))
        .count();
    let killed = deliveries
        .values()
        .filter(|d| d.outcome == Some(Outcome::Killed))
        .count();
    println!(
        "crash campaign: seed {seed}, {} rounds, {} operations ({} deliver runs: {delivered} exited 0, {killed} killed; {} writer operations completed), \
         {} kills ({} random, {} at fault points; {} of {} points hit), {} checkpoints, {checked} messages checked, 0 lost, {:.1}s",
        round,
        t.operations,
        t.deliveries,
        worker_ops_done(),
        t.kills_random + t.kills_at_points,
        t.kills_random,
        t.kills_at_points,
        t.points_hit.len(),
        POINTS.len(),
        t.checkpoints,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        t.points_hit.len(),
        POINTS.len(),
        "every fault point was hit"
    );
}

/// Recovery, verify and the message checks; returns how many delivered
/// messages were checked byte for byte.
fn check(
    spool: &Path,
    inbox_dir: &Path,
    archive_dir: &Path,
    deliveries: &BTreeMap<String, Delivery>,
) -> usize {
    for dir in [inbox_dir, archive_dir] {
        recover_and_verify(dir);
        let left = stage_leftovers(dir);
        assert!(left.is_empty(), "staging leftovers after recover: {left:?}");
    }
    let inbox = read_contents(spool, USER, "INBOX");
    let archive = read_contents(spool, USER, "Archive");
    let mut checked = 0;
    let mut seen = BTreeSet::new();
    for (token, d) in deliveries {
        let uids = inbox.by_token.get(token).cloned().unwrap_or_default();
        assert!(
            !archive.by_token.contains_key(token),
            "{token} appeared in Archive"
        );
        assert!(
            uids.len() <= 1,
            "{token} stored {} times: {uids:?}",
            uids.len()
        );
        if let Some(uid) = uids.first() {
            assert_eq!(
                inbox.bytes[uid],
                crlf(&d.input),
                "{token} (UID {uid}) bytes differ from what deliver was given"
            );
            seen.insert(token.clone());
        }
        match d.outcome {
            Some(Outcome::Delivered) => {
                assert_eq!(
                    uids.len(),
                    1,
                    "{token}: deliver exited 0, message is missing"
                );
                checked += 1;
            }
            Some(Outcome::Refused) => {
                assert!(
                    uids.is_empty(),
                    "{token}: deliver exited 75 but the message is stored"
                )
            }
            Some(Outcome::Killed) | None => {}
        }
    }
    for t in inbox.by_token.keys() {
        assert!(
            t.starts_with("filler-") || seen.contains(t),
            "unknown message {t} in INBOX"
        );
    }
    assert!(
        inbox.untokened.is_empty(),
        "messages without a token: {:?}",
        inbox.untokened
    );
    checked
}
