//! The store on CephFS, mounted twice with ceph-fuse (docs/PROTOCOL.md §8,
//! docs/OPERATIONS.md "Several hosts"): two client mounts of one file
//! system on one machine stand in for two hosts. Each mount has its own
//! kernel page cache, and with Ceph's default client settings that cache
//! serves one mount stale bytes of what the other wrote; the store must
//! hold anyway (0 lost, 0 missed, exact bytes, verify clean through both).
//!
//! `scripts/ceph-up.sh` brings the one-node Ceph up once for this whole
//! binary (a custom harness, `harness = false`, so that it is also torn
//! down once at the end, `scripts/ceph-down.sh`). Every scenario is a real
//! process: `deliver`, `imapd-check serve --stdio`, `imapd-check race`,
//! `idx-inspect verify`. Without the Ceph packages the binary fails, except
//! on a local run without `CI` set, where it prints why and skips.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::{bin, run};

const STATE: &str = "/tmp/mailstore-cephfs-test";

struct Ceph {
    state: PathBuf,
    a: PathBuf,
    b: PathBuf,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

impl Ceph {
    fn up() -> Result<Ceph, String> {
        let root = PathBuf::from(STATE);
        let c = Ceph {
            state: root.join("state"),
            a: root.join("A"),
            b: root.join("B"),
        };
        let out = run(
            Command::new("bash")
                .arg(script("ceph-up.sh"))
                .arg(&c.state)
                .arg(&c.a)
                .arg(&c.b),
            Duration::from_secs(300),
        );
        if !out.status.success() {
            // Stop whatever half started before reporting.
            drop(c);
            return Err(format!("{}{}", out.stdout, out.stderr));
        }
        Ok(c)
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let out = run(
            Command::new("bash")
                .arg(script("ceph-down.sh"))
                .arg(&self.state),
            Duration::from_secs(120),
        );
        if !out.status.success() {
            eprintln!("ceph-down.sh failed: {}{}", out.stdout, out.stderr);
        }
    }
}

/// One spool seen through both mounts.
struct Spool {
    a: PathBuf,
    b: PathBuf,
}

impl Spool {
    fn new(ceph: &Ceph, name: &str) -> Spool {
        let rel = format!("{name}-{}", std::process::id());
        let s = Spool {
            a: ceph.a.join(&rel),
            b: ceph.b.join(&rel),
        };
        let _ = std::fs::remove_dir_all(&s.a);
        std::fs::create_dir_all(&s.a).unwrap();
        s
    }
    fn via(&self, b: bool) -> &Path {
        if b { &self.b } else { &self.a }
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.a);
    }
}

/// A message that names itself, `size` bytes or a little more.
fn message(token: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.org\r\nTo: u@example.org\r\nSubject: {token}\r\n\
         Message-ID: <{token}@example.org>\r\n\r\n"
    )
    .into_bytes();
    let mut i = 0u64;
    while m.len() < size {
        m.extend_from_slice(
            format!("{token} line {i} ..............................\r\n").as_bytes(),
        );
        i += 1;
    }
    m
}

/// A config file that turns the shared-filesystem rules off: the code
/// path every spool had before them (local disks keep it).
fn local_mode_config() -> PathBuf {
    let p = PathBuf::from(STATE).join("local-mode.conf");
    std::fs::write(&p, "shared_fs = off\n").unwrap();
    p
}

/// The `deliver` command line for `spool`, with `config` as its
/// MAILSTORE_CONFIG (none: no config file).
fn deliver_cmd(spool: &Path, user: &str, config: Option<&Path>) -> Command {
    let mut cmd = Command::new(bin("deliver"));
    cmd.arg("--spool")
        .arg(spool)
        .args(["-d", user, "--autocreate"])
        .env_remove("MAILSTORE_CONFIG")
        .env_remove("MAILSTORE_SPOOL")
        .env_remove(storage::internals::fault::ENV);
    if let Some(c) = config {
        cmd.env("MAILSTORE_CONFIG", c);
    }
    cmd
}

/// One-shot `deliver` through `spool`; its exit code.
fn deliver(spool: &Path, user: &str, msg: &[u8], fault: Option<&str>) -> Option<i32> {
    let mut cmd = deliver_cmd(spool, user, None);
    if let Some(f) = fault {
        cmd.env(storage::internals::fault::ENV, f);
    }
    e2e_tests::run_with_input(&mut cmd, msg, Duration::from_secs(120)).code()
}

/// `idx-inspect verify` of a user's INBOX through one mount.
fn verify(spool: &Path, user: &str) {
    let out = run(
        Command::new(bin("idx-inspect"))
            .args(["verify", "--spool"])
            .arg(spool)
            .args(["-d", user])
            .env_remove("MAILSTORE_CONFIG"),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "verify through {} failed: {}{}",
        spool.display(),
        out.stdout,
        out.stderr
    );
}

/// A preauthenticated IMAP session (`imapd-check serve --stdio`).
struct Imap {
    child: Child,
    w: ChildStdin,
    r: BufReader<ChildStdout>,
    tag: u32,
}

/// A server response line, with the literals it carried.
struct Line {
    text: String,
    literals: Vec<Vec<u8>>,
}

impl Imap {
    fn open(spool: &Path, user: &str) -> Imap {
        Self::open_with(spool, user, None)
    }

    fn open_with(spool: &Path, user: &str, config: Option<&Path>) -> Imap {
        let mut cmd = Command::new(bin("imapd-check"));
        cmd.args(["serve", "--stdio", "--spool"])
            .arg(spool)
            .args(["-d", user])
            .env_remove("MAILSTORE_CONFIG");
        if let Some(c) = config {
            cmd.env("MAILSTORE_CONFIG", c);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let w = child.stdin.take().unwrap();
        let r = BufReader::new(child.stdout.take().unwrap());
        let mut s = Imap {
            child,
            w,
            r,
            tag: 0,
        };
        let greeting = s.line();
        assert!(greeting.text.starts_with("* PREAUTH"), "{}", greeting.text);
        s
    }

    fn line(&mut self) -> Line {
        let mut text = String::new();
        let mut literals = Vec::new();
        loop {
            let mut l = Vec::new();
            self.r.read_until(b'\n', &mut l).unwrap();
            assert!(!l.is_empty(), "server closed the connection");
            let s = String::from_utf8_lossy(&l).into_owned();
            let t = s.trim_end_matches(['\r', '\n']);
            text.push_str(t);
            // A literal `{N}` at the end of the line: its N bytes follow.
            if let Some(n) = t
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.parse::<usize>().ok())
            {
                let mut buf = vec![0; n];
                self.r.read_exact(&mut buf).unwrap();
                literals.push(buf);
                continue;
            }
            return Line { text, literals };
        }
    }

    /// Sends a command; the untagged lines and the tagged completion.
    fn cmd(&mut self, c: &str) -> (Vec<Line>, String) {
        self.tag += 1;
        let tag = format!("c{}", self.tag);
        write!(self.w, "{tag} {c}\r\n").unwrap();
        self.w.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let l = self.line();
            if l.text.starts_with(&format!("{tag} ")) {
                assert!(l.text.starts_with(&format!("{tag} OK")), "{c}: {}", l.text);
                return (lines, l.text);
            }
            lines.push(l);
        }
    }

    fn exists(lines: &[Line]) -> Option<u32> {
        lines.iter().rev().find_map(|l| {
            l.text
                .strip_prefix("* ")?
                .strip_suffix(" EXISTS")?
                .parse()
                .ok()
        })
    }

    /// Every message's bytes, by FETCH BODY.PEEK[].
    fn bodies(&mut self) -> Vec<Vec<u8>> {
        let (lines, _) = self.cmd("FETCH 1:* (BODY.PEEK[])");
        lines
            .into_iter()
            .filter(|l| l.text.contains(" FETCH "))
            .flat_map(|l| l.literals)
            .collect()
    }

    fn logout(mut self) {
        let _ = self.cmd("LOGOUT");
        drop(self.w);
        let _ = self.child.wait();
    }
}

/// Every acknowledged message is there once, byte for byte, read through
/// an IMAP session on `spool`.
fn assert_exact(spool: &Path, user: &str, acked: &[Vec<u8>], may_have_more: bool) {
    let mut s = Imap::open(spool, user);
    let (lines, _) = s.cmd("SELECT INBOX");
    let exists = Imap::exists(&lines).unwrap_or(0) as usize;
    let got = s.bodies();
    s.logout();
    assert_eq!(got.len(), exists, "FETCH 1:* returned a body per message");
    let mut want: BTreeMap<&[u8], usize> = BTreeMap::new();
    for m in acked {
        *want.entry(m).or_default() += 1;
    }
    let mut have: BTreeMap<&[u8], usize> = BTreeMap::new();
    for m in &got {
        *have.entry(m).or_default() += 1;
    }
    let lost: Vec<String> = want
        .iter()
        .filter(|(m, n)| have.get(*m).copied().unwrap_or(0) < **n)
        .map(|(m, _)| String::from_utf8_lossy(&m[..m.len().min(90)]).into_owned())
        .collect();
    assert!(
        lost.is_empty(),
        "through {}: {} of {} acknowledged messages lost or changed (have {}): {:?}",
        spool.display(),
        lost.len(),
        acked.len(),
        got.len(),
        &lost[..lost.len().min(3)]
    );
    if !may_have_more {
        assert_eq!(got.len(), acked.len(), "through {}", spool.display());
    }
}

/// RFC 3501 §2.3.1.1 (a UID names one message for good) and PROTOCOL.md §3,
/// §8: one-shot deliveries through mount A and mount B at once, four at a
/// time into one mailbox; every one that exited 0 is there, byte for byte,
/// read through both mounts, and verify is clean through both.
fn deliveries_through_both_mounts(ceph: &Ceph) {
    let spool = Arc::new(Spool::new(ceph, "both"));
    let user = "both";
    let acked = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (spool, acked) = (spool.clone(), acked.clone());
            std::thread::spawn(move || {
                for j in 0..25 {
                    let token = format!("both-{t}-{j}");
                    // Mostly small (unordered-sized) messages, some large.
                    let size = if j % 10 == 9 { 300 << 10 } else { 600 + 97 * j };
                    let m = message(&token, size);
                    let code = deliver(spool.via((t + j) % 2 == 1), user, &m, None);
                    assert_eq!(code, Some(0), "deliver {token}");
                    acked.lock().unwrap().push(m);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    for via_b in [false, true] {
        verify(spool.via(via_b), user);
        assert_exact(spool.via(via_b), user, &acked, false);
    }
}

/// RFC 3501 §6.1.2 (NOOP reports new messages as untagged EXISTS) and
/// §6.3.1 / RFC 2177 (IDLE): a session selected through mount B sees each
/// message delivered through mount A on its next NOOP, with its exact
/// bytes, and an IDLE session on B is told of a delivery on A.
fn imap_session_on_b_sees_deliveries_on_a(ceph: &Ceph) {
    let spool = Spool::new(ceph, "imap");
    let user = "imap";
    let first = message("imap-0", 700);
    assert_eq!(deliver(&spool.a, user, &first, None), Some(0));
    let mut s = Imap::open(&spool.b, user);
    let (lines, _) = s.cmd("SELECT INBOX");
    assert_eq!(Imap::exists(&lines), Some(1));
    for i in 1..=20u32 {
        let m = message(&format!("imap-{i}"), 500 + 211 * i as usize);
        assert_eq!(deliver(&spool.a, user, &m, None), Some(0));
        let (lines, _) = s.cmd("NOOP");
        assert_eq!(
            Imap::exists(&lines),
            Some(i + 1),
            "NOOP on B after delivery {i} on A"
        );
        let (lines, _) = s.cmd(&format!("FETCH {} (BODY.PEEK[])", i + 1));
        let got: Vec<_> = lines.into_iter().flat_map(|l| l.literals).collect();
        assert_eq!(got, vec![m], "bytes of message {} read through B", i + 1);
    }
    // IDLE on B, a delivery on A: inotify on B never fires for A's
    // write, so this needs the generation poll (OPERATIONS.md).
    s.tag += 1;
    let tag = format!("c{}", s.tag);
    write!(s.w, "{tag} IDLE\r\n").unwrap();
    s.w.flush().unwrap();
    assert!(s.line().text.starts_with('+'));
    let m = message("imap-idle", 900);
    assert_eq!(deliver(&spool.a, user, &m, None), Some(0));
    // A watchdog ends the IDLE after 20 s if nothing came: the read
    // below then gets the tagged OK instead of EXISTS and the test fails.
    let mut done =
        std::fs::File::from(std::os::fd::AsFd::as_fd(&s.w).try_clone_to_owned().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(20)).is_err() {
            let _ = done.write_all(b"DONE\r\n");
        }
    });
    let got = s.line().text;
    if tx.send(()).is_ok() {
        write!(s.w, "DONE\r\n").unwrap();
        s.w.flush().unwrap();
    }
    watchdog.join().unwrap();
    assert_eq!(
        got, "* 22 EXISTS",
        "IDLE on B, within 20 s of a delivery on A"
    );
    loop {
        let l = s.line();
        if l.text.starts_with(&format!("{tag} ")) {
            assert!(l.text.starts_with(&format!("{tag} OK")), "{}", l.text);
            break;
        }
    }
    s.logout();
    verify(&spool.a, user);
    verify(&spool.b, user);
}

/// PROTOCOL.md §7 (the reader's generation check): the race harness with
/// its writers (one-shot `deliver`) on mount A or B at random and its
/// readers on mount B; no reader misses a message after its final NOOP.
fn race_writers_on_both_readers_on_b(ceph: &Ceph) {
    let spool = Spool::new(ceph, "race");
    let wrapper = PathBuf::from(STATE).join(format!("deliver-ab-{}", std::process::id()));
    let (a, b) = (spool.a.display().to_string(), spool.b.display().to_string());
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/bash\n# deliver through mount A or B at random\n\
             if (( RANDOM % 2 )); then from='{b}'; to='{a}'; else from='{a}'; to='{b}'; fi\n\
             args=(); for x in \"$@\"; do args+=(\"${{x/#$from/$to}}\"); done\n\
             exec '{}' \"${{args[@]}}\"\n",
            bin("deliver").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        Command::new(bin("imapd-check"))
            .args(["race", "--spool"])
            .arg(&spool.b)
            .args(["--user", "race", "--writers", "4", "--readers", "2"])
            .args(["--messages", "120", "--strategy", "generation", "--json"])
            .args(["--timeout-secs", "300", "--deliver"])
            .arg(&wrapper)
            .env_remove("MAILSTORE_CONFIG"),
        Duration::from_secs(330),
    );
    let _ = std::fs::remove_file(&wrapper);
    assert!(out.status.success(), "race: {}{}", out.stdout, out.stderr);
    let v: serde_json::Value =
        serde_json::from_str(out.stdout.lines().last().expect("a JSON line")).unwrap();
    println!("    race: {v}");
    assert_eq!(v["deliveries"], 120, "{v}");
    assert_eq!(v["missed_after_final_noop"], 0, "{v}");
    assert_eq!(
        v["reader_final_counts"],
        serde_json::json!([120, 120]),
        "{v}"
    );
    verify(&spool.a, "race");
    verify(&spool.b, "race");
}

/// PROTOCOL.md §3 (crash states) across hosts: a delivery through mount A
/// killed at each step of the append; the next delivery, through mount B,
/// repairs what it left (the writer mark, debris, staged files); every
/// acknowledged message is there byte for byte and verify is clean through
/// both mounts.
fn kill_points_on_a_repaired_from_b(ceph: &Ceph) {
    let spool = Spool::new(ceph, "kill");
    let user = "kill";
    let mut acked = Vec::new();
    let first = message("kill-first", 800);
    assert_eq!(deliver(&spool.b, user, &first, None), Some(0));
    acked.push(first);
    let points = [
        "append.after_stage_write",
        "append.after_stage_fsync",
        "append.after_lock",
        "append.after_link",
        "append.after_records",
        "append.after_header",
        "append.after_header_write_out",
        "append.after_header_fsync",
    ];
    let mut kills = 0;
    for (i, p) in points.iter().enumerate() {
        for size in [900usize, 300 << 10] {
            let killed = message(&format!("kill-{p}-{size}"), size);
            match deliver(&spool.a, user, &killed, Some(&format!("{p}=kill"))) {
                // Killed at the point (no exit code): never acknowledged.
                None => kills += 1,
                // The point is not on this path (unordered steps on a
                // shared filesystem, where every append is ordered):
                // acknowledged, so it must stay.
                Some(0) => acked.push(killed),
                Some(c) => panic!("deliver with a kill at {p} exited {c}"),
            }
            let m = message(&format!("kill-after-{i}-{size}"), 1200 + i);
            assert_eq!(deliver(&spool.b, user, &m, None), Some(0), "after {p}");
            acked.push(m);
        }
    }
    assert!(kills >= 10, "only {kills} deliveries were killed");
    for via_b in [true, false] {
        verify(spool.via(via_b), user);
        // A killed delivery may have committed (it was never acknowledged).
        assert_exact(spool.via(via_b), user, &acked, true);
    }
}

/// Why the rules of PROTOCOL.md §8 exist: the same scenario as
/// `imap_session_on_b_sees_deliveries_on_a` with them turned off
/// (`shared_fs = off`, the code path of a local disk) on the same mounts.
/// B's session, holding the index open, is served its stale page cache and
/// misses mail acknowledged on A, or reads stale bytes. If this ever stops
/// failing, the mounts no longer reproduce the problem and the scenarios
/// above prove nothing.
fn local_code_path_misses_mail_on_ceph(ceph: &Ceph) {
    let spool = Spool::new(ceph, "local");
    let user = "local";
    let conf = local_mode_config();
    let run_deliver = |m: &[u8]| {
        let mut cmd = deliver_cmd(&spool.a, user, Some(&conf));
        e2e_tests::run_with_input(&mut cmd, m, Duration::from_secs(120)).code()
    };
    assert_eq!(run_deliver(&message("local-0", 700)), Some(0));
    let mut s = Imap::open_with(&spool.b, user, Some(&conf));
    s.cmd("SELECT INBOX");
    let mut misses = 0;
    for i in 1..=10u32 {
        let m = message(&format!("local-{i}"), 500 + 211 * i as usize);
        assert_eq!(run_deliver(&m), Some(0));
        let (lines, _) = s.cmd("NOOP");
        if Imap::exists(&lines) != Some(i + 1) {
            misses += 1;
        }
    }
    s.logout();
    println!("    local code path: {misses} of 10 NOOPs on B missed a delivery on A");
    assert!(
        misses > 0,
        "with shared_fs = off, B never missed a delivery on A: the mounts do not reproduce the stale cache"
    );
}

/// PROTOCOL.md §8 (lock lost): a delivery through mount A holds the
/// mailbox lock when the cluster evicts mount A's client (what happens to
/// a host that stops answering); B may then take the lock. A's delivery
/// must fail with a temporary error (exit 75, EX_TEMPFAIL: the MTA keeps
/// the message) rather than write on, the next delivery through B repairs,
/// and nothing acknowledged is lost. Runs last: mount A is dead after it.
fn evicted_writer_on_a_fails_temporarily(ceph: &Ceph) {
    let spool = Spool::new(ceph, "evict");
    let user = "evict";
    let first = message("evict-first", 800);
    assert_eq!(deliver(&spool.b, user, &first, None), Some(0));
    let mut acked = vec![first];
    let mut cmd = deliver_cmd(&spool.a, user, None);
    cmd.env(
        storage::internals::fault::ENV,
        "append.after_lock=pause:4000",
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&message("evict-held", 900))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Mount A's client id, by its mount point.
    let ceph_cmd = |args: &[&str]| {
        run(
            Command::new("ceph")
                .args(args)
                .env("CEPH_CONF", ceph.state.join("ceph.conf")),
            Duration::from_secs(60),
        )
    };
    let ls = ceph_cmd(&["tell", "mds.a", "client", "ls"]);
    let clients: serde_json::Value = serde_json::from_str(&ls.stdout).expect("client ls JSON");
    let a = ceph.a.display().to_string();
    let id = clients
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_metadata"]["mount_point"] == a.as_str())
        .map(|c| c["id"].to_string())
        .expect("mount A's client");
    let ev = ceph_cmd(&["tell", "mds.a", "client", "evict", &format!("id={id}")]);
    assert!(ev.status.success(), "evict: {}{}", ev.stdout, ev.stderr);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("    evicted deliver: {} {}", out.status, stderr.trim());
    assert_eq!(out.status.code(), Some(75), "evicted deliver: {stderr}");
    assert!(stderr.contains("lock"), "evicted deliver: {stderr}");
    let m = message("evict-after", 1000);
    assert_eq!(deliver(&spool.b, user, &m, None), Some(0));
    acked.push(m);
    verify(&spool.b, user);
    assert_exact(&spool.b, user, &acked, false);
}

/// PROTOCOL.md §8, the override the other way (`shared_fs = on`) on a
/// local disk: the shared rules, seen in the system calls of one `deliver`
/// (strace): the staged message and the index both flushed with
/// `fdatasync` (an ordered append), no `sync_file_range`, and no `O_DIRECT`
/// (ext4 refuses unaligned direct writes; only FUSE, NFS and kernel CephFS
/// get it). Without the override the same delivery uses `sync_file_range`
/// (an unordered append, §3).
fn shared_fs_on_forces_the_rules_on_a_local_disk(ceph: &Ceph) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("on.conf");
    std::fs::write(&conf, "shared_fs = on\n").unwrap();
    let local = dir.path().join("spool");
    let trace = |spool: &Path, config: Option<&Path>| -> String {
        let log = dir.path().join("strace.log");
        // The mailbox exists first: the traced delivery is a plain append.
        assert_eq!(deliver(spool, "u", &message("first", 600), None), Some(0));
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-e", "trace=openat,fdatasync,sync_file_range", "-o"])
            .arg(&log)
            .arg(bin("deliver"))
            .arg("--spool")
            .arg(spool)
            .args(["-d", "u", "--autocreate"])
            .env_remove("MAILSTORE_CONFIG");
        if let Some(c) = config {
            cmd.env("MAILSTORE_CONFIG", c);
        }
        let out =
            e2e_tests::run_with_input(&mut cmd, &message("traced", 900), Duration::from_secs(60));
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
        std::fs::read_to_string(&log).unwrap()
    };
    let on = trace(&local, Some(&conf));
    // O_DIRECT, not O_DIRECTORY.
    let direct = |s: &str| s.replace("O_DIRECTORY", "").contains("O_DIRECT");
    assert!(!direct(&on), "{on}");
    assert!(!on.contains("sync_file_range("), "{on}");
    assert!(on.matches("fdatasync(").count() >= 2, "{on}");
    let off = trace(&local, None);
    assert!(off.contains("sync_file_range("), "{off}");
    assert!(!direct(&off), "{off}");
    // Detected on CephFS without any config: O_DIRECT and fdatasync.
    let spool = Spool::new(ceph, "strace");
    let cephfs = trace(&spool.a, None);
    let index_open = cephfs
        .lines()
        .find(|l| l.contains("openat(") && l.contains("\".index\""))
        .expect("the index is opened");
    assert!(direct(index_open), "{index_open}");
    assert!(!cephfs.contains("sync_file_range("), "{cephfs}");
    assert!(cephfs.matches("fdatasync(").count() >= 2, "{cephfs}");
}

type Scenario = (&'static str, fn(&Ceph));

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let tests: [Scenario; 7] = [
        (
            "deliveries_through_both_mounts",
            deliveries_through_both_mounts,
        ),
        (
            "imap_session_on_b_sees_deliveries_on_a",
            imap_session_on_b_sees_deliveries_on_a,
        ),
        (
            "race_writers_on_both_readers_on_b",
            race_writers_on_both_readers_on_b,
        ),
        (
            "kill_points_on_a_repaired_from_b",
            kill_points_on_a_repaired_from_b,
        ),
        (
            "shared_fs_on_forces_the_rules_on_a_local_disk",
            shared_fs_on_forces_the_rules_on_a_local_disk,
        ),
        (
            "local_code_path_misses_mail_on_ceph",
            local_code_path_misses_mail_on_ceph,
        ),
        // Last: it leaves mount A dead.
        (
            "evicted_writer_on_a_fails_temporarily",
            evicted_writer_on_a_fails_temporarily,
        ),
    ];
    let chosen: Vec<_> = tests
        .iter()
        .filter(|(n, _)| filter.as_ref().is_none_or(|f| n.contains(f.as_str())))
        .collect();
    if chosen.is_empty() {
        return;
    }
    let in_ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let have_ceph = Command::new("sh")
        .args(["-c", "command -v ceph-fuse && command -v ceph-mon"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_ceph && !in_ci {
        println!(
            "cephfs: SKIPPED (not CI): the Debian packages ceph-mon ceph-osd ceph-mds \
             ceph-fuse ceph-common are not installed (scripts/test.sh installs them)"
        );
        return;
    }
    let ceph = match Ceph::up() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cephfs: Ceph did not start:\n{e}");
            std::process::exit(1);
        }
    };
    let mut failed = Vec::new();
    for (name, f) in chosen {
        println!("test {name} ...");
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ceph)));
        match r {
            Ok(()) => println!("test {name} ... ok ({:.1} s)", t0.elapsed().as_secs_f64()),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    drop(ceph);
    if !failed.is_empty() {
        eprintln!("cephfs: failed: {failed:?}");
        std::process::exit(1);
    }
    println!("cephfs: all passed");
}
