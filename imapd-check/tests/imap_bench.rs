//! Measurements, not pass/fail: NOOP round trip over loopback TCP and the
//! delay between another process's commit and the EXISTS an idling
//! session receives. Run in release:
//! `cargo test --release -p imapd-check --test imap_bench -- --ignored --nocapture`

mod imap_common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use imap_common::*;
use storage::{AppendOptions, MailboxName, UserName};

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
#[ignore = "benchmark: run with --ignored --nocapture in release"]
fn noop_round_trip_and_idle_latency() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let store = seed_messages(&spool, "alice", 100);
    let user = UserName::new("alice").unwrap();
    let mut inbox = store.open_mailbox(&user, &MailboxName::inbox()).unwrap();
    let passwd = write_passwd(dir.path(), "alice", "pw");
    let server = TcpServer::start(&spool, &passwd);
    let port = server.port;

    let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_nodelay(true).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut until = |r: &mut BufReader<std::net::TcpStream>, tag: &str| loop {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with(tag) {
            return line.clone();
        }
    };
    until(&mut r, "* OK");
    w.write_all(b"l LOGIN alice pw\r\ns SELECT INBOX\r\n")
        .unwrap();
    until(&mut r, "l OK");
    until(&mut r, "s OK");
    let mut rtts = Vec::new();
    for i in 0..5000 {
        let t = Instant::now();
        w.write_all(format!("n{i} NOOP\r\n").as_bytes()).unwrap();
        until(&mut r, &format!("n{i} "));
        rtts.push(t.elapsed());
    }
    let med = pct(&mut rtts, 0.5);
    let p99 = pct(&mut rtts, 0.99);

    w.write_all(b"i IDLE\r\n").unwrap();
    until(&mut r, "+");
    let mut lat = Vec::new();
    for round in 0..300u32 {
        std::thread::sleep(Duration::from_millis(5));
        inbox
            .append(
                &message(1000 + round as usize)[..],
                AppendOptions::default(),
            )
            .unwrap();
        let committed = Instant::now();
        let l = until(&mut r, "* ");
        assert!(l.contains("EXISTS"), "{l}");
        lat.push(committed.elapsed());
    }
    w.write_all(b"DONE\r\n").unwrap();
    until(&mut r, "i OK");
    println!(
        "NOOP round trip over loopback TCP: median {:?}, p99 {:?} (5000 NOOPs)\nIDLE notice after commit: p50 {:?}, p99 {:?}, max {:?} (300 deliveries, durability full)",
        med,
        p99,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0)
    );
}
