//! `deliver`: the local delivery agent Postfix runs for every message
//! (`mailbox_command` or a `pipe(8)` transport), and an LMTP server
//! (`--lmtp`, on stdin/stdout or `--listen unix:PATH` / `HOST:PORT`).
//!
//! ```text
//! deliver [--spool DIR] [-d USER] [-m MAILBOX] [-f SENDER] [-a RECIPIENT]
//!         [--flag FLAG]... [--autocreate] [--no-fallback] [--quota-hard]
//!         [--max-size N] [--lock-timeout-ms N] [--dedup-window SECONDS] < message
//! ```
//!
//! The spool is `--spool`, else `$MAILSTORE_SPOOL`, else `spool` in the
//! config file (`$MAILSTORE_CONFIG`, else `/etc/mailstore.conf`), else
//! `./spool`. The config file also gives `quota`, `quota.USER`,
//! `lock_timeout_ms`, `max_size` and `dedup_window` (see `storage::config`).
//!
//! # Duplicate suppression
//!
//! `--dedup-window SECONDS` (config `dedup_window`; 0 or absent = off, the
//! default): a message whose Message-ID was already delivered to the same
//! mailbox within the last SECONDS is accepted (exit 0, LMTP 250) and not
//! stored again; the log line says `duplicate suppressed`. A message
//! without a Message-ID is never suppressed. Each mailbox keeps its own
//! log, `.dedup` in its directory (`storage::dedup`), locked and updated
//! around the commit so that concurrent deliveries of one Message-ID,
//! one-shot or LMTP, store it exactly once. The key is recorded only after
//! the commit succeeded and without fsync, so a crash can at worst let a
//! later duplicate through, never lose a message. Over quota is checked
//! before the duplicate log, as in Cyrus: a duplicate is deferred like any
//! message while the user is over quota.
//!
//! # Sieve
//!
//! A recipient with an active Sieve script (`SPOOL/USER/.sieve/active`,
//! docs/FORMAT.md §9) has it run on each message (module `filter`):
//! keep/fileinto become appends with flags, reject is exit 77 `5.7.1` (LMTP
//! 550 per recipient), discard stores nothing; any script problem keeps
//! the message in the default mailbox and logs why (docs/OPERATIONS.md §2e).
//!
//! # Exit codes
//!
//! Every non-zero exit prints exactly one line on stderr, first, starting
//! with an RFC 3463 status code; Postfix uses a leading code as the
//! delivery status, so the code decides defer (4.x.x) or bounce (5.x.x).
//! On every non-zero exit the mailbox is unchanged: nothing committed, the
//! staged file removed.
//!
//! | exit | sysexits       | status | when |
//! |------|----------------|--------|------|
//! | 0    | EX_OK          |        | delivered (or a duplicate suppressed) |
//! | 64   | EX_USAGE       | 5.3.0  | bad command line, invalid `--flag`, no invoking user |
//! | 65   | EX_DATAERR     | 5.6.0  | empty message, message with a NUL byte |
//! | 65   | EX_DATAERR     | 5.2.3  | message over `--max-size` / `max_size` |
//! | 67   | EX_NOUSER      | 5.1.1  | unknown user (no INBOX) without `--autocreate` |
//! | 67   | EX_NOUSER      | 5.1.3  | invalid user name (`/`, control characters, ...) |
//! | 73   | EX_CANTCREAT   | 5.2.0  | `-m` mailbox missing (or invalid) with `--no-fallback` |
//! | 73   | EX_CANTCREAT   | 5.2.2  | over quota with `--quota-hard` |
//! | 73   | EX_CANTCREAT   | 5.2.0  | mailbox out of UIDs, records or keywords |
//! | 75   | EX_TEMPFAIL    | 4.2.0  | lock timeout, mailbox deleted during delivery |
//! | 75   | EX_TEMPFAIL    | 4.2.2  | over quota (default) |
//! | 75   | EX_TEMPFAIL    | 4.3.1  | disk full (ENOSPC, EDQUOT, EFBIG) |
//! | 75   | EX_TEMPFAIL    | 4.3.0  | any other I/O error, permission problem, corrupt index, bad config file, panic |
//! | 77   | EX_NOPERM      | 5.7.0  | a symlink inside the spool (refused, never followed) |
//! | 77   | EX_NOPERM      | 5.7.1  | rejected by the recipient's Sieve script (`reject`/`ereject`) |
//!
//! # Odd input
//!
//! - A leading `From ` envelope line is removed (Postfix `mailbox_command`).
//! - `-f SENDER` becomes `Return-Path: <SENDER>` (`-f ''` or `-f '<>'`:
//!   `Return-Path: <>`) unless the message already starts with
//!   `Return-Path:`. Without `-f` nothing is added.
//! - Bare LF becomes CRLF; a bare CR (not before LF) is stored unchanged.
//! - A NUL byte: refused, 65 `5.6.0` (IMAP cannot send NUL).
//! - 8-bit bytes in headers or body: stored unchanged.
//! - No blank line between header and body: stored unchanged.
//! - Empty message (nothing after the envelope line): refused, 65 `5.6.0`.
//! - Over `--max-size`: refused, 65 `5.2.3`; reading stops at the limit.
//! - A final line without a line end is stored without one.
//!
//! `--unsafe-no-fsync` skips every fsync: for tests and benchmarks only; a
//! power loss may then lose mail that was reported delivered.

mod delivery;
mod filter;
mod group;
mod input;
mod lmtp;
mod outbound;
mod status;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use storage::config::Config;
use storage::{Durability, Flags, Options, Store};

use delivery::Settings;
use status::{EX_USAGE, Failure};

#[derive(Parser, Debug)]
#[command(
    name = "deliver",
    version,
    about = "Deliver a message from stdin into the mail store (or serve LMTP)"
)]
pub struct Cli {
    /// The store's root (default: $MAILSTORE_SPOOL, config `spool`, ./spool).
    #[arg(long, value_name = "DIR")]
    spool: Option<PathBuf>,
    /// The recipient user (default: the invoking user).
    #[arg(short = 'd', long = "user", value_name = "USER")]
    user: Option<String>,
    /// Mailbox to deliver to (default INBOX; missing ones fall back to INBOX).
    #[arg(short = 'm', long = "mailbox", value_name = "MAILBOX")]
    mailbox: Option<String>,
    /// Envelope sender, recorded as Return-Path.
    #[arg(short = 'f', long = "from", value_name = "SENDER")]
    sender: Option<String>,
    /// Original recipient address; `user+detail@domain` selects mailbox `detail` if it exists.
    #[arg(short = 'a', long = "address", value_name = "RECIPIENT")]
    recipient: Option<String>,
    /// Flag or keyword to set on the message (\Seen, \Flagged, $Label1, ...).
    #[arg(long = "flag", value_name = "FLAG")]
    flags: Vec<String>,
    /// Create the user's INBOX and the -m mailbox if missing.
    #[arg(long)]
    autocreate: bool,
    /// Fail (exit 73) instead of falling back to INBOX when -m does not exist.
    #[arg(long)]
    no_fallback: bool,
    /// Over quota is permanent (exit 73, 5.2.2) instead of temporary (75).
    #[arg(long)]
    quota_hard: bool,
    /// Do not check the quota.
    #[arg(long)]
    ignore_quota: bool,
    /// Largest message accepted, in bytes (K/M/G suffixes; default config `max_size`).
    #[arg(long, value_name = "N", value_parser = parse_size)]
    max_size: Option<u64>,
    /// Longest wait for a mailbox lock (default config `lock_timeout_ms`, else 30000).
    #[arg(long, value_name = "MS")]
    lock_timeout_ms: Option<u64>,
    /// Accept a message whose Message-ID was delivered to the same mailbox
    /// within this many seconds without storing it again (default config
    /// `dedup_window`, else 0 = off).
    #[arg(long, value_name = "SECONDS")]
    dedup_window: Option<u64>,
    /// Command for Sieve redirect and vacation mail, e.g. /usr/sbin/sendmail
    /// (without it, redirects keep the message and no vacation is sent).
    #[arg(long, value_name = "CMD")]
    sendmail: Option<String>,
    /// Directory of global Sieve scripts for `include :global` (NAME.sieve).
    #[arg(long, value_name = "DIR")]
    sieve_global_dir: Option<PathBuf>,
    /// Skip every fsync. Tests and benchmarks only: a crash may lose mail.
    #[arg(long)]
    unsafe_no_fsync: bool,
    /// Accepted for dovecot-lda compatibility; errors always go to stderr.
    #[arg(short = 'e', hide = true)]
    stderr_errors: bool,
    /// Log debug output to stderr (repeat for more).
    #[arg(short = 'v', long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Append log lines to this file instead of stderr.
    #[arg(long, value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Speak LMTP (RFC 2033) on stdin/stdout, or on --listen.
    #[arg(long)]
    lmtp: bool,
    /// With --lmtp: listen on `unix:PATH`, `HOST:PORT` or `tcp:HOST:PORT`.
    #[arg(long, value_name = "ADDR", requires = "lmtp")]
    listen: Option<String>,
    /// With --lmtp: the whole recipient address is the user name (virtual domains).
    #[arg(long)]
    lmtp_full_address: bool,
    /// With --listen: most connections served at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_connections: usize,
    /// With --listen unix:: mode of the socket file (octal).
    #[arg(long, value_name = "MODE", default_value = "0666")]
    socket_mode: String,
}

fn parse_size(s: &str) -> Result<u64, String> {
    storage::config::parse_size(s)
}

/// Whether failures may also be logged (never on stderr before the
/// status line, and only when someone asked for logs there).
static LOG_FAILURES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
thread_local! {
    /// The last panic's message on this thread (set by the panic hook).
    static PANIC_MESSAGE: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Takes the message of the last panic on this thread, for the one line
/// that reports it (the hook itself prints nothing).
pub(crate) fn take_panic_message() -> String {
    PANIC_MESSAGE
        .with(|m| m.borrow_mut().take())
        .unwrap_or_else(|| "panic".into())
}

fn main() -> ExitCode {
    // Postfix's local(8) runs mailbox_command under RLIMIT_FSIZE
    // (mailbox_size_limit). At SIGXFSZ's default action a write past the
    // limit kills us with no status line and a staged file left behind;
    // ignored, the write fails with EFBIG and we exit 75 4.3.1 cleanly.
    // SAFETY: setting a signal disposition to SIG_IGN has no memory effects.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    // A panic must not print its default message (it would come before the
    // status line) nor exit 101 (Postfix bounces that): remember it, and
    // turn it into a temporary failure below.
    std::panic::set_hook(Box::new(|info| {
        let msg = match info.location() {
            Some(l) => format!("panic at {}:{}: {}", l.file(), l.line(), payload(info)),
            None => format!("panic: {}", payload(info)),
        };
        PANIC_MESSAGE.with(|m| *m.borrow_mut() = Some(msg));
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind::*;
            if matches!(e.kind(), DisplayHelp | DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("usage error")
                .trim_start_matches("error: ");
            return fail(&Failure::usage(format!("usage: {first}")));
        }
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)));
    match outcome {
        Ok(Ok(())) => {
            flush_held_log();
            ExitCode::SUCCESS
        }
        Ok(Err(f)) => fail(&f),
        Err(_) => fail(&Failure::temp(
            "4.3.0",
            format!("internal error: {}", take_panic_message()),
        )),
    }
}

/// LMTP keeps every recipient's staged file open until its commit, for
/// many sessions at once: up to 1000 recipients per transaction is more
/// than the usual soft limit of 1024 descriptors. Raise the soft limit to
/// the hard one (what any process may do); a failure only leaves the
/// limit as it was.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            let old = lim.rlim_cur;
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
                tracing::debug!(from = old, to = lim.rlim_max, "raised the open file limit");
            }
        }
    }
}

fn payload(info: &std::panic::PanicHookInfo<'_>) -> String {
    if let Some(s) = info.payload().downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = info.payload().downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string payload".into()
    }
}

/// Log output held back in one-shot mode (bounded: a runaway log is cut).
static HELD_LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const HELD_LOG_MAX: usize = 1 << 20;

struct HeldLog;

impl Write for HeldLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut held = HELD_LOG.lock().unwrap_or_else(|e| e.into_inner());
        let room = HELD_LOG_MAX.saturating_sub(held.len());
        held.extend_from_slice(&buf[..buf.len().min(room)]);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the held log lines to stderr (after the status line, if any).
fn flush_held_log() {
    let held = std::mem::take(&mut *HELD_LOG.lock().unwrap_or_else(|e| e.into_inner()));
    if !held.is_empty() {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(&held);
        let _ = err.flush();
    }
}

/// Prints the status line first, then (if logging is wanted) logs it.
fn fail(f: &Failure) -> ExitCode {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{}", f.line());
    let _ = err.flush();
    drop(err);
    if LOG_FAILURES.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(exit = f.exit, "delivery failed: {}", f.line());
        flush_held_log();
    } else {
        // Exactly one line on stderr for a failure unless logs were asked for.
        HELD_LOG.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
    ExitCode::from(f.exit)
}

fn init_logging(cli: &Cli) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let env = std::env::var("RUST_LOG").ok().filter(|s| !s.is_empty());
    let to_file = cli.log_file.is_some();
    let default = match (cli.verbose, to_file || cli.lmtp) {
        (0, false) => "deliver=info,mailstore=off",
        (0, true) => "info",
        (1, _) => "debug",
        _ => "trace",
    };
    LOG_FAILURES.store(
        to_file || cli.lmtp || cli.verbose > 0 || env.is_some(),
        std::sync::atomic::Ordering::Relaxed,
    );
    let filter = EnvFilter::try_new(env.as_deref().unwrap_or(default))
        .unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let result = match &cli.log_file {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    Failure::temp("4.3.0", format!("open log file {}: {e}", p.display()))
                })?;
            builder
                .with_ansi(false)
                .with_writer(Mutex::new(f))
                .try_init()
        }
        // One-shot: hold log lines until the exit, so that a failure's
        // status line is still the first line on stderr (Sieve may log
        // before a delivery fails, e.g. a redirect before a rejection).
        None if !cli.lmtp => builder.with_ansi(false).with_writer(|| HeldLog).try_init(),
        None => builder
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .try_init(),
    };
    let _ = result;
    Ok(())
}

/// The invoking user's name: the password entry of the effective UID,
/// else `$USER` (Postfix sets it for `mailbox_command`).
fn invoking_user() -> Result<String, Failure> {
    let uid = nix::unistd::geteuid();
    if let Ok(Some(u)) = nix::unistd::User::from_uid(uid) {
        return Ok(u.name);
    }
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Failure::usage(format!("no user name for uid {uid}; use -d USER")))
}

fn parse_flags(list: &[String]) -> Result<(Flags, Vec<String>), Failure> {
    let mut flags = Flags::empty();
    let mut keywords = Vec::new();
    for f in list {
        if f.starts_with('\\') {
            match Flags::from_name(f) {
                Some(x) => flags = flags.union(x),
                None => return Err(Failure::usage(format!("unknown system flag {f:?}"))),
            }
        } else {
            storage::validate_keyword(f).map_err(|e| Failure::usage(format!("--flag: {e}")))?;
            keywords.push(f.clone());
        }
    }
    Ok((flags, keywords))
}

fn settings(cli: &Cli) -> Result<Settings, Failure> {
    let config = Config::load().map_err(|e| Failure::temp("4.3.0", format!("config: {e}")))?;
    let spool = config.spool(cli.spool.as_deref());
    let (flags, keywords) = parse_flags(&cli.flags)?;
    let mut opts = Options::default();
    if cli.unsafe_no_fsync {
        opts.durability = Durability::Relaxed;
    }
    if let Some(t) = cli
        .lock_timeout_ms
        .map(Duration::from_millis)
        .or(config.lock_timeout())
    {
        opts.lock_timeout = t;
    }
    let store = Store::open(&spool, opts).map_err(|e| status::from_storage(&e))?;
    let dedup_window = cli.dedup_window.or(config.dedup_window).unwrap_or(0);
    Ok(Settings {
        store,
        max_size: cli.max_size.or(config.max_size),
        config,
        autocreate: cli.autocreate,
        no_fallback: cli.no_fallback,
        quota_hard: cli.quota_hard,
        ignore_quota: cli.ignore_quota,
        flags,
        keywords,
        dedup_window,
        sieve_global_dir: cli.sieve_global_dir.clone(),
        sendmail: cli
            .sendmail
            .as_deref()
            .map(|c| c.split_whitespace().map(String::from).collect::<Vec<_>>())
            .filter(|v| !v.is_empty()),
    })
}

fn run(cli: Cli) -> Result<(), Failure> {
    init_logging(&cli)?;
    // Test hook: proves that a panic becomes a temporary failure.
    if std::env::var_os("DELIVER_TEST_PANIC").is_some() {
        panic!("DELIVER_TEST_PANIC is set");
    }
    let settings = settings(&cli)?;
    if cli.lmtp {
        let opts = lmtp::LmtpOptions {
            full_address: cli.lmtp_full_address,
            max_connections: cli.max_connections.max(1),
            socket_mode: u32::from_str_radix(cli.socket_mode.trim_start_matches("0o"), 8)
                .map_err(|_| Failure::usage(format!("bad --socket-mode {:?}", cli.socket_mode)))?,
        };
        raise_open_file_limit();
        return match &cli.listen {
            None => lmtp::serve_stdio(settings, opts),
            Some(addr) => lmtp::serve_listen(settings, opts, addr),
        };
    }
    if cli.listen.is_some() || cli.lmtp_full_address {
        return Err(Failure::new(EX_USAGE, "5.3.0", "LMTP options need --lmtp"));
    }
    let user = match &cli.user {
        Some(u) => u.clone(),
        None => invoking_user()?,
    };
    let detail = cli.recipient.as_deref().and_then(delivery::address_detail);
    let target = settings.resolve(&user, cli.mailbox.as_deref(), detail)?;
    let stdin = std::io::stdin().lock();
    if let Some(script) = filter::active_script(&settings.store, &target.user) {
        let cache = filter::ScriptCache::default();
        return filter::deliver_one_shot(
            &settings,
            &cache,
            &script,
            &target,
            stdin,
            cli.sender.as_deref(),
            cli.recipient.as_deref(),
        );
    }
    let d = settings.deliver_stream(&target, stdin, cli.sender.as_deref())?;
    let Some(uid) = d.uid else {
        tracing::info!(
            user = %target.user,
            mailbox = %target.mailbox,
            message_id = d.message_id.as_deref().unwrap_or(""),
            elapsed_ms = format_args!("{:.3}", d.elapsed.as_secs_f64() * 1000.0),
            "duplicate suppressed"
        );
        return Ok(());
    };
    tracing::info!(
        user = %target.user,
        mailbox = %target.mailbox,
        uid,
        size = d.size,
        message_id = d.message_id.as_deref().unwrap_or(""),
        elapsed_ms = format_args!("{:.3}", d.elapsed.as_secs_f64() * 1000.0),
        "delivered"
    );
    Ok(())
}
