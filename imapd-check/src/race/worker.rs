//! The child processes of the race harness: writers deliver, readers poll
//! as an IMAP client's NOOP would. Both report on stdout, one fact a line.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use storage::session::{Allow, SessionView, Update};
use storage::{AppendOptions, MailboxName, Options, Store, UserName};

use super::{Strategy, durability};
use crate::legacy::MtimeReader;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// CLOCK_REALTIME in nanoseconds: comparable across processes.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(clap::Args, Debug)]
pub struct WriterArgs {
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub id: usize,
    #[arg(long)]
    pub count: usize,
    #[arg(long)]
    pub unsafe_no_fsync: bool,
    /// Start the last delivery just after a wall-clock second boundary.
    #[arg(long)]
    pub align_final: bool,
    /// Deliver through this `deliver` binary instead of `Mailbox::append`.
    #[arg(long)]
    pub deliver: Option<PathBuf>,
}

/// The message body carries a token so that deliveries made through an
/// external `deliver` (which does not tell us the UID) can be matched.
pub fn message(writer: usize, j: usize) -> String {
    format!(
        "From: race@example.org\r\nTo: reader@example.org\r\nSubject: race {writer}.{j}\r\n\
         X-Race-Token: {writer}.{j}\r\nMessage-ID: <race.{writer}.{j}@imapd-check>\r\n\r\n\
         delivery {j} of writer {writer}\r\n"
    )
}

fn sleep_to_next_second() {
    let ns = now_ns();
    let into = ns % 1_000_000_000;
    // 5 ms past the boundary, so the clock has surely turned.
    std::thread::sleep(Duration::from_nanos(1_000_000_000 - into + 5_000_000));
}

/// Prints `uid UID NS` (or `tok TOKEN NS` through `deliver`) per commit.
pub fn writer(a: WriterArgs) -> Res<()> {
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut mbox = match &a.deliver {
        Some(_) => None,
        None => {
            let store = Store::open(
                &a.spool,
                Options {
                    durability: durability(a.unsafe_no_fsync),
                    ..Options::default()
                },
            )?;
            Some(store.open_mailbox(&UserName::new(&a.user)?, &MailboxName::inbox())?)
        }
    };
    for j in 0..a.count {
        if a.align_final && j + 1 == a.count {
            out.flush()?;
            sleep_to_next_second();
        }
        let msg = message(a.id, j);
        match (&mut mbox, &a.deliver) {
            (Some(m), _) => {
                let uid = m.append(msg.as_bytes(), AppendOptions::default())?;
                writeln!(out, "uid {uid} {}", now_ns())?;
            }
            (None, Some(bin)) => {
                deliver_external(bin, &a, &msg)?;
                writeln!(out, "tok {}.{j} {}", a.id, now_ns())?;
            }
            (None, None) => unreachable!("either a mailbox or a deliver binary"),
        }
    }
    out.flush()?;
    Ok(())
}

fn deliver_external(bin: &PathBuf, a: &WriterArgs, msg: &str) -> Res<()> {
    let mut child = Command::new(bin)
        .arg("--spool")
        .arg(&a.spool)
        .args(["-d", &a.user, "--autocreate"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(msg.as_bytes())?;
    let st = child.wait()?;
    if !st.success() {
        return Err(format!("{} exited with {st}", bin.display()).into());
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReaderArgs {
    #[arg(long)]
    pub spool: PathBuf,
    #[arg(long)]
    pub user: String,
    #[arg(long, value_enum)]
    pub strategy: Strategy,
    #[arg(long, default_value_t = 1000)]
    pub check_interval_us: u64,
}

/// What a reader learned, printed at the end: `seen UID NS` lines, then
/// `final COUNT CHECKS`.
struct Log {
    noticed: Vec<(u32, u64)>,
    checks: u64,
}

/// Prints `ready`, then polls until stdin reaches EOF (all writers have
/// exited), then does one final check and prints what it noticed.
pub fn reader(a: ReaderArgs) -> Res<()> {
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_until(0, &mut sink);
        s2.store(true, Ordering::SeqCst);
    });
    let user = UserName::new(&a.user)?;
    let store = Store::open(&a.spool, Options::default())?;
    let interval = Duration::from_micros(a.check_interval_us);
    let mut log = Log {
        noticed: Vec::new(),
        checks: 0,
    };
    let count = match a.strategy {
        Strategy::Generation => {
            let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
            let mut view = SessionView::open(&mut mbox)?;
            ready()?;
            let mut noop = |log: &mut Log| -> Res<()> {
                let before = view.len();
                let updates = view.check(&mut mbox, Allow::AllUpdates)?;
                log.checks += 1;
                let t = now_ns();
                if updates.iter().any(|u| matches!(u, Update::Exists(_))) {
                    for seq in before + 1..=view.len() {
                        log.noticed.push((view.uid(seq).expect("seq in view"), t));
                    }
                }
                Ok(())
            };
            poll(&stop, interval, &mut log, &mut noop)?;
            view.len()
        }
        Strategy::Mtime => {
            let dir = store.mailbox_path(&user, &MailboxName::inbox());
            let mut r = MtimeReader::open(&dir)?;
            ready()?;
            let mut noop = |log: &mut Log| -> Res<()> {
                let before = r.header.last_uid;
                r.check()?;
                log.checks += 1;
                let t = now_ns();
                // No expunges in the harness: UIDs up to last_uid exist.
                log.noticed
                    .extend((before + 1..=r.header.last_uid).map(|u| (u, t)));
                Ok(())
            };
            poll(&stop, interval, &mut log, &mut noop)?;
            r.header.exists
        }
    };
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for (uid, t) in &log.noticed {
        writeln!(out, "seen {uid} {t}")?;
    }
    writeln!(out, "final {count} {}", log.checks)?;
    out.flush()?;
    Ok(())
}

fn ready() -> Res<()> {
    let mut o = std::io::stdout().lock();
    writeln!(o, "ready")?;
    o.flush()?;
    Ok(())
}

/// The NOOP loop, then the final NOOP after the writers are done.
fn poll(
    stop: &AtomicBool,
    interval: Duration,
    log: &mut Log,
    noop: &mut dyn FnMut(&mut Log) -> Res<()>,
) -> Res<()> {
    while !stop.load(Ordering::SeqCst) {
        noop(log)?;
        std::thread::sleep(interval);
    }
    noop(log)
}
