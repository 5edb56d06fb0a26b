//! Shared helpers for end-to-end tests: finding the workspace's binaries,
//! running commands with a time limit, polling with a bounded wait, and
//! system users and file ownership for tests that run as root.

pub mod campaign;
pub mod craft;
pub mod postfix;
pub mod reliability;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/`: the test executable lives in `target/<profile>/deps/`
/// and `cargo test --workspace` builds every workspace binary next to it.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test executable has a parent");
    deps.parent().expect("deps has a parent").to_path_buf()
}

/// A workspace binary (`deliver`, `idx-inspect`, ...), which must exist.
pub fn bin(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.is_file(),
        "{} not built: run `cargo build --workspace` (or `cargo test --workspace`) first",
        p.display()
    );
    p
}

/// What a finished command did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Spawns `cmd` with every standard stream a pipe, and a thread feeding
/// it `stdin` (so a command that does not read cannot block the caller).
fn spawn_fed(
    cmd: &mut Command,
    stdin: &[u8],
    desc: &str,
) -> (std::process::Child, std::thread::JoinHandle<()>) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    (child, writer)
}

/// Runs `cmd` with `stdin` as input and kills it after `limit`.
pub fn run_with_input(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let (child, writer) = spawn_fed(cmd, stdin, &desc);
    let pid = child.id();
    let deadline = Instant::now() + limit;
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(r) => r.unwrap_or_else(|e| panic!("wait {desc}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{desc} did not finish within {limit:?}");
        }
    };
    let _ = waiter.join();
    let _ = writer.join();
    Output {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// What a finished command did, run by [`run_limited`].
#[derive(Debug)]
pub struct Limited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident set size in KiB, from `wait4`'s `ru_maxrss`. An
    /// upper bound of the command's own peak: Linux folds into it the
    /// resident size of the test process the child was forked from.
    pub maxrss_kib: u64,
}

impl Limited {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` with `stdin` as input under an address-space limit
/// (`RLIMIT_AS` of `as_bytes`, set between fork and exec, so a runaway
/// allocation fails at once instead of swapping the machine), kills it
/// after `limit`, and reports its peak RSS.
pub fn run_limited(cmd: &mut Command, stdin: &[u8], as_bytes: u64, limit: Duration) -> Limited {
    use std::io::Read;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let desc = format!("{cmd:?}");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: as_bytes,
                rlim_max: as_bytes,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped below by `wait4`, which also reports the peak RSS.
    let (mut child, writer) = spawn_fed(cmd, stdin, &desc);
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + limit;
    let mut status = 0;
    // SAFETY: plain-data out parameter.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; `status` and `usage` are valid.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert!(r == 0, "wait4 {desc}: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{desc} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = writer.join();
    Limited {
        status: ExitStatus::from_raw(status),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        maxrss_kib: usage.ru_maxrss as u64,
    }
}

/// Runs `cmd` with empty input and a time limit.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    run_with_input(cmd, b"", limit)
}

/// Runs `program args...` and panics unless it exits 0.
pub fn run_ok<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    let out = run(Command::new(program).args(args), Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{program} {:?} failed ({}):\nstdout: {}\nstderr: {}",
        args.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
        out.status,
        out.stdout,
        out.stderr
    );
    out
}

/// Polls `probe` until it returns `Some`, or panics after `limit` with
/// `what` and the last `context()` (for example a log file's tail).
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = probe() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                context()
            );
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A system user's uid and gid, creating the user if missing: `login`
/// users get a home and a shell (Postfix's local(8) delivers to them),
/// others are system users without either.
pub fn ensure_user(name: &str, login: bool) -> (u32, u32) {
    if let Some(u) = nix::unistd::User::from_name(name).expect("getpwnam") {
        return (u.uid.as_raw(), u.gid.as_raw());
    }
    if login {
        run_ok("useradd", &["-m", "-s", "/bin/sh", name]);
    } else {
        run_ok(
            "useradd",
            &["-r", "-s", "/usr/sbin/nologin", "-d", "/nonexistent", name],
        );
    }
    let u = nix::unistd::User::from_name(name)
        .expect("getpwnam")
        .unwrap_or_else(|| panic!("useradd {name} did not create the user"));
    (u.uid.as_raw(), u.gid.as_raw())
}

/// Changes the owner of `path` and everything below it (no symlinks followed).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    let meta = std::fs::symlink_metadata(path).expect("stat");
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).expect("read_dir") {
            chown_tree(&entry.expect("dir entry").path(), uid, gid);
        }
    }
}

/// Creates `path` (and parents) with `mode`, as the current user.
pub fn mkdir_mode(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    set_mode(path, mode);
}

pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A message with a unique Message-ID and a unique body token, so a test
/// can find exactly this message in a log and in a mailbox.
pub struct TestMessage {
    pub message_id: String,
    pub token: String,
    pub bytes: Vec<u8>,
}

impl TestMessage {
    pub fn new(from: &str, to: &str, subject: &str) -> TestMessage {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let token = format!("e2e-token-{}-{n}-{nanos}", std::process::id());
        let message_id = format!("{token}@e2e.test");
        let bytes = format!(
            "From: {from}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{message_id}>\n\
             Date: Sun, 22 Nov 2026 12:00:00 +0000\n\nHello from the end-to-end test.\n{token}\n"
        )
        .into_bytes();
        TestMessage {
            message_id,
            token,
            bytes,
        }
    }
}
