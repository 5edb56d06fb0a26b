//! Shared code of `idx-inspect` (read-only) and `idx-admin` (maintenance):
//! naming a mailbox on the command line, rendering, and the mbox/Maildir
//! conversions. The checks and the index rebuild themselves live in the
//! storage library (`storage::verify`, `storage::recovery`).

pub mod account;
pub mod date;
pub mod dovecot;
pub mod dovecot_export;
pub mod inspect;
pub mod maildir;
pub mod mbox;
pub mod transfer;
pub mod uwmbox;

use std::path::PathBuf;
use std::time::Duration;

use storage::{MailboxName, UserName};

/// A mailbox named either by its directory or by spool, user and name.
#[derive(clap::Args, Clone, Debug)]
pub struct MailboxArgs {
    /// The mailbox directory (instead of --spool/-d/-m).
    pub path: Option<PathBuf>,
    /// Spool root (default: $MAILSTORE_SPOOL, the config file's `spool`, ./spool).
    #[arg(long)]
    pub spool: Option<PathBuf>,
    /// User owning the mailbox.
    #[arg(short = 'd', long = "user")]
    pub user: Option<String>,
    /// Mailbox name, `/`-separated.
    #[arg(short = 'm', long = "mailbox", default_value = "INBOX")]
    pub mailbox: String,
    /// Longest wait for the mailbox lock, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub lock_timeout_ms: u64,
}

/// Where the mailbox is, resolved.
#[derive(Clone, Debug)]
pub struct Target {
    pub dir: PathBuf,
    /// Set when named by spool, user and mailbox.
    pub named: Option<(PathBuf, UserName, MailboxName)>,
    pub lock_timeout: Duration,
}

impl MailboxArgs {
    /// Resolves to a directory without touching the file system.
    pub fn resolve(&self) -> Result<Target, String> {
        let lock_timeout = Duration::from_millis(self.lock_timeout_ms);
        match (&self.path, &self.user) {
            (Some(_), Some(_)) => {
                Err("give either a mailbox directory or -d USER, not both".into())
            }
            (None, None) => {
                Err("name a mailbox: a directory, or --spool DIR -d USER [-m MAILBOX]".into())
            }
            (Some(p), None) => Ok(Target {
                dir: p.clone(),
                named: None,
                lock_timeout,
            }),
            (None, Some(u)) => {
                let spool = storage::config::resolve_spool(self.spool.as_deref());
                let user = UserName::new(u).map_err(|e| e.to_string())?;
                let name = MailboxName::new(&self.mailbox).map_err(|e| e.to_string())?;
                let mut dir = spool.join(user.encoded());
                for c in name.encoded_components() {
                    dir.push(c);
                }
                Ok(Target {
                    dir,
                    named: Some((spool, user, name)),
                    lock_timeout,
                })
            }
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (warnings by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .try_init();
}

static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `text` to standard output and flushes it. A reader that went
/// away (`idx-inspect records | head`: EPIPE) is not an error: like `ls`,
/// the tool says nothing, the rest of its output is dropped, and the
/// command ends with its own exit status ([`stdout_closed`] tells a
/// command that loops to stop). Any other write error is returned.
pub fn out(text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(());
    }
    let mut o = std::io::stdout().lock();
    match o.write_all(text.as_bytes()).and_then(|()| o.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            STDOUT_CLOSED.store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        r => r,
    }
}

/// Writes one line to standard error, ignoring a failure (a closed
/// stderr must not turn a message into a panic).
pub fn err_line(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// Standard output's reader has gone away (see [`out`]).
pub fn stdout_closed() -> bool {
    STDOUT_CLOSED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `2024-01-02T15:04:05Z` for unix seconds.
pub fn iso8601(t: i64) -> String {
    let (y, m, d) = date::civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A UID set like `1:10,15,20:*`.
#[derive(Clone, Debug)]
pub struct UidSet(Vec<(u32, u32)>);

impl UidSet {
    pub fn parse(s: &str) -> Result<UidSet, String> {
        let mut v = Vec::new();
        for part in s.split(',') {
            let num = |x: &str| -> Result<u32, String> {
                if x == "*" {
                    Ok(u32::MAX)
                } else {
                    x.trim()
                        .parse()
                        .map_err(|_| format!("bad UID {x:?} in {s:?}"))
                }
            };
            let (a, b) = match part.split_once(':') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => (num(part)?, num(part)?),
            };
            v.push((a.min(b), a.max(b)));
        }
        Ok(UidSet(v))
    }
    pub fn contains(&self, uid: u32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&uid))
    }
}
