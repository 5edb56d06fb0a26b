//! Heavy commands run at a lower priority and come back from it
//! (`imapd.heavy_nice`, imap/slice.rs): while a FETCH of big bodies is
//! held up by a client that does not read, its connection thread runs at
//! nice 10; when the tagged reply arrives, and during cheap commands, no
//! thread of the server is left at a lower priority. Where the server may
//! not come back (no CAP_SYS_NICE, RLIMIT_NICE too low), it says so in its
//! log and no thread changes priority at all.

mod imap_common;

use std::time::{Duration, Instant};

use imap_common::*;

/// Nice values of the server's threads, from /proc/PID/task/*/stat.
fn nice_values(pid: u32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let Ok(stat) = std::fs::read_to_string(t.unwrap().path().join("stat")) else {
            continue; // the thread ended
        };
        // Fields after the command name: state is field 3, nice field 19.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
    }
    out
}

fn own_nice() -> i32 {
    nice_values(std::process::id())[0]
}

/// Waits up to `within` for `pred` over the server's nice values.
fn wait_for(pid: u32, within: Duration, pred: impl Fn(&[i32]) -> bool) -> Vec<i32> {
    let end = Instant::now() + within;
    loop {
        let v = nice_values(pid);
        if pred(&v) || Instant::now() > end {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn heavy_commands_run_at_a_lower_priority_and_come_back() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    // 24 messages of 1 MiB: an answer far beyond the socket buffers.
    let body = "x".repeat(1000) + "\r\n";
    let msgs = (0..24).map(|i| {
        let mut m = format!("Subject: big {i}\r\n\r\n").into_bytes();
        for _ in 0..1048 {
            m.extend_from_slice(body.as_bytes());
        }
        (m, storage::AppendOptions::default())
    });
    seed_raw(&spool, "alice", msgs);
    let passwd = write_passwd(tmp.path(), "alice", "secret");
    let server = TcpServer::start(&spool, &passwd);
    let pid = server.process.0.id();
    let base = own_nice();
    let mut c = Client::tcp(server.port, "alice", "secret");
    c.ok("SELECT INBOX");
    // Give the server's start-up check time to have logged.
    let at_start = wait_for(pid, Duration::from_millis(200), |_| false);
    assert!(at_start.iter().all(|&n| n == base), "{at_start:?}");

    c.send("f1 FETCH 1:* (BODY.PEEK[])\r\n");
    let during = wait_for(pid, Duration::from_secs(10), |v| v.contains(&(base + 10)));
    let lowered = during.contains(&(base + 10));
    let mut lines = 0;
    loop {
        let l = c.raw_line().expect("the FETCH answer");
        lines += 1;
        if l.starts_with(b"f1 ") {
            assert!(l.starts_with(b"f1 OK"), "{}", String::from_utf8_lossy(&l));
            break;
        }
    }
    assert!(lines > 24 * 1000, "{lines} lines");
    let after = nice_values(pid);
    c.ok("STATUS INBOX (MESSAGES)");
    c.ok("NOOP");
    let after_cheap = nice_values(pid);
    let log = server.stop();
    if log.contains("imapd.heavy_nice is off") {
        // Unprivileged without LimitNICE: the hint is off, and nothing
        // moved.
        assert!(
            !lowered,
            "priority lowered though it could not come back: {during:?}"
        );
    } else {
        assert!(
            lowered,
            "no thread at nice {} during the FETCH: {during:?}",
            base + 10
        );
    }
    assert!(
        after.iter().all(|&n| n == base),
        "after the reply: {after:?}"
    );
    assert!(
        after_cheap.iter().all(|&n| n == base),
        "after STATUS: {after_cheap:?}"
    );
}
