//! Measurements, not pass/fail: SORT and THREAD over a large mailbox,
//! their time and the server's peak memory (VmHWM). The number of
//! messages is `SORT_BENCH_N` (default 20000). Run in release:
//! `cargo test --release -p imapd-check --test imap_sort_bench -- --ignored --nocapture`

mod imap_common;

use std::time::Instant;

use imap_common::*;
use storage::AppendOptions;

/// Peak resident memory of a process, in KiB.
fn vm_hwm(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture in release"]
fn sort_and_thread_of_a_large_mailbox() {
    let n: usize = std::env::var("SORT_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    // A fixed pseudo-random mailbox: threads of replies, repeated
    // subjects, a few long ones.
    let mut x: u64 = 12345;
    let mut next = move || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    let started = Instant::now();
    let msgs = (0..n).map(|i| {
        let parent = if i > 0 && next() % 3 > 0 {
            format!("References: <m{}@bench>\r\n", next() % i)
        } else {
            String::new()
        };
        let subject = match next() % 4 {
            0 => format!("Re: topic {}", next() % (n / 10 + 1)),
            1 => format!("topic {} {}", next() % (n / 10 + 1), "long words ".repeat(30)),
            _ => format!("topic {}", next() % (n / 10 + 1)),
        };
        let raw = format!(
            "Message-ID: <m{i}@bench>\r\n{parent}From: user{}@x.org\r\nSubject: {subject}\r\n\r\nbody\r\n",
            next() % 500
        );
        let opts = AppendOptions {
            internal_date: Some(1_700_000_000 + (next() % 1_000_000) as i64),
            sent_date: 1_700_000_000 + (next() % 1_000_000) as i64,
            ..Default::default()
        };
        (raw.into_bytes(), opts)
    });
    seed_raw(&spool, "bench", msgs);
    eprintln!("seeded {n} messages in {:?}", started.elapsed());
    let mut c = Client::spawn(&spool, "bench");
    c.ok("SELECT INBOX");
    let base = vm_hwm(c.pid());
    eprintln!("after SELECT: VmHWM {base} KiB");
    for q in [
        "SORT (SUBJECT) UTF-8 ALL",
        "SORT (REVERSE DATE FROM) UTF-8 ALL",
        "THREAD ORDEREDSUBJECT UTF-8 ALL",
        "THREAD REFERENCES UTF-8 ALL",
        "SEARCH RETURN (COUNT) ALL",
    ] {
        let t = Instant::now();
        let lines = c.ok(q);
        let bytes: usize = lines.iter().map(String::len).sum();
        eprintln!(
            "{q}: {:?}, {bytes} bytes of answer, VmHWM {} KiB",
            t.elapsed(),
            vm_hwm(c.pid())
        );
    }
}
