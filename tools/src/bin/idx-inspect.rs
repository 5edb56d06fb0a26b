//! idx-inspect: read-only views of a mailbox's index. Never takes an
//! exclusive lock and never creates or modifies a file.
//! Exit status: 0 fine, 1 problems found (verify) or no valid header,
//! 2 could not read, or (verify) a header no program will use (it counts
//! records the file does not hold, or is beyond a hard limit).
//! Output to a reader that went away (`| head`) is dropped quietly.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use storage::verify;
use tools::{MailboxArgs, UidSet, inspect};

#[derive(Parser)]
#[command(
    name = "idx-inspect",
    version,
    about = "Read-only views of a mailbox index"
)]
struct Cli {
    /// JSON output instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every header field, which slot is current and what the other holds.
    Header(MailboxArgs),
    /// One row per record.
    Records {
        #[command(flatten)]
        mb: MailboxArgs,
        /// Only these UIDs, e.g. `1:10,15,20:*`.
        #[arg(long)]
        uid: Option<String>,
        /// Include expunged records still waiting for repack.
        #[arg(long)]
        expunged: bool,
    },
    /// Check every CRC and invariant; exit 0 clean, 1 problems, 2 unreadable.
    Verify(MailboxArgs),
    /// Counts, sizes, expunged-not-repacked, age of the oldest message.
    Stat(MailboxArgs),
    /// Print each generation change as it happens.
    Watch {
        #[command(flatten)]
        mb: MailboxArgs,
        /// Exit after this many changes.
        #[arg(long)]
        count: Option<u64>,
        /// Poll interval in milliseconds.
        #[arg(long, default_value_t = 50)]
        interval_ms: u64,
    },
}

fn main() -> ExitCode {
    tools::init_tracing();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tools::err_line(&format!("idx-inspect: {e}"));
            ExitCode::from(2)
        }
    }
}

fn print(
    json: bool,
    v: &serde_json::Value,
    human: impl FnOnce(&serde_json::Value) -> String,
) -> Result<(), String> {
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(v).expect("serializable")
        )
    } else {
        human(v)
    };
    out(&text)
}

/// [`tools::out`], its error as a message.
fn out(text: &str) -> Result<(), String> {
    tools::out(text).map_err(|e| format!("writing standard output: {e}"))
}

fn run(cli: &Cli) -> Result<u8, String> {
    let err = |e: storage::Error| e.to_string();
    match &cli.cmd {
        Cmd::Header(mb) => {
            let t = mb.resolve()?;
            let dir = verify::open_dir_read_only(&t.dir).map_err(err)?;
            let v = verify::with_raw_view(&dir, t.lock_timeout, |view| Ok(inspect::header(view)))
                .map_err(err)?;
            print(cli.json, &v, inspect::header_human)?;
            Ok(if v["current_slot"].is_null() { 1 } else { 0 })
        }
        Cmd::Records { mb, uid, expunged } => {
            let t = mb.resolve()?;
            let set = uid.as_deref().map(UidSet::parse).transpose()?;
            let dir = verify::open_dir_read_only(&t.dir).map_err(err)?;
            let v = verify::with_raw_view(&dir, t.lock_timeout, |view| {
                inspect::records(view, set.as_ref(), *expunged)
            })
            .map_err(err)?;
            print(cli.json, &v, inspect::records_human)?;
            Ok(0)
        }
        Cmd::Verify(mb) => {
            let t = mb.resolve()?;
            let rep = verify::verify_path(&t.dir, t.lock_timeout).map_err(err)?;
            if cli.json {
                let v = inspect::report_json(&t.dir, &rep);
                out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&v).expect("serializable")
                ))?;
            } else {
                out(&inspect::report_human(&t.dir, &rep))?;
            }
            Ok(if rep.unusable {
                2
            } else if rep.is_clean() {
                0
            } else {
                1
            })
        }
        Cmd::Stat(mb) => {
            let t = mb.resolve()?;
            let dir = verify::open_dir_read_only(&t.dir).map_err(err)?;
            let now = storage::internals::fsutil::now();
            let v =
                verify::with_raw_view(&dir, t.lock_timeout, |view| inspect::stat(&dir, view, now))
                    .map_err(err)?;
            print(cli.json, &v, inspect::stat_human)?;
            Ok(0)
        }
        Cmd::Watch {
            mb,
            count,
            interval_ms,
        } => {
            let t = mb.resolve()?;
            let dir = verify::open_dir_read_only(&t.dir).map_err(err)?;
            watch(
                cli.json,
                &dir,
                t.lock_timeout,
                *count,
                Duration::from_millis(*interval_ms),
            )
        }
    }
}

fn watch(
    json: bool,
    dir: &storage::Dir,
    timeout: Duration,
    count: Option<u64>,
    interval: Duration,
) -> Result<u8, String> {
    let line = |h: &storage::Header, initial: bool| {
        if json {
            serde_json::json!({
                "initial": initial, "generation": h.generation, "num_records": h.num_records,
                "exists": h.exists, "last_uid": h.last_uid, "uidvalidity": h.uidvalidity,
                "highestmodseq": h.highestmodseq, "time": tools::iso8601(storage::internals::fsutil::now()),
            })
            .to_string()
        } else {
            format!(
                "{} {}generation {} exists {} records {} last_uid {} highestmodseq {}",
                tools::iso8601(storage::internals::fsutil::now()),
                if initial { "(now) " } else { "" },
                h.generation,
                h.exists,
                h.num_records,
                h.last_uid,
                h.highestmodseq
            )
        }
    };
    let mut last = inspect::read_header(dir, timeout).map_err(|e| e.to_string())?;
    out(&format!("{}\n", line(&last, true)))?;
    let mut seen = 0u64;
    while count.is_none_or(|c| seen < c) && !tools::stdout_closed() {
        std::thread::sleep(interval);
        let h = match inspect::read_header(dir, timeout) {
            Ok(h) => h,
            // Between a repack's rename and our reopen; try again.
            Err(e) => {
                tracing::debug!("watch: {e}");
                continue;
            }
        };
        // A superseded file will be replaced at the next poll.
        if h.is_superseded() {
            continue;
        }
        if h.generation != last.generation || h.uidvalidity != last.uidvalidity {
            out(&format!("{}\n", line(&h, false)))?;
            seen += 1;
            last = h;
        }
    }
    Ok(0)
}
