//! sieve-check: check a Sieve script (errors as FILE:LINE:COLUMN, as
//! `sievec` reports them), dry-run it on a message (what would it do, in
//! the spirit of Pigeonhole's `sieve-test`), and manage a user's scripts in
//! the store (docs/FORMAT.md §9): list, show, put (validated, atomic),
//! activate.
//!
//! Exit status: 0 ok, 1 the script does not compile (or a name is
//! invalid), 2 a file or the store could not be read or written.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use sieve::layout::{
    self, ACTIVE_FILE, EXTENSION, MAX_ACTIVE_FILE, MAX_SCRIPT_FILE, SIEVE_DIR, script_file,
    valid_script_name,
};
use sieve::{Action, Envelope, Host, RunOptions, Script};
use storage::UserName;

#[derive(Parser)]
#[command(
    name = "sieve-check",
    version,
    about = "Check and dry-run Sieve scripts; list, show, put and activate a user's scripts"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Print JSON (for scripts and monitoring) instead of text.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Args)]
struct UserArgs {
    /// Spool root (default: $MAILSTORE_SPOOL, the config file's `spool`, ./spool).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// The user whose scripts these are.
    #[arg(short = 'd', long = "user")]
    user: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a script; errors with line and column.
    Check { file: PathBuf },
    /// Run a script on a message and print the actions it would take.
    Test {
        file: PathBuf,
        message: PathBuf,
        /// Envelope sender (empty for the null sender).
        #[arg(short = 'f', long = "from", default_value = "")]
        from: String,
        /// Envelope recipient.
        #[arg(short = 'a', long = "to", default_value = "")]
        to: String,
        /// Where `include :personal` finds NAME.sieve (default: the script's directory).
        #[arg(long, value_name = "DIR")]
        include_dir: Option<PathBuf>,
        /// Where `include :global` finds NAME.sieve (default: none).
        #[arg(long, value_name = "DIR")]
        global_dir: Option<PathBuf>,
        /// A mailbox `mailboxexists` reports as existing (repeatable).
        #[arg(long = "mailbox", value_name = "NAME")]
        mailboxes: Vec<String>,
    },
    /// List a user's scripts; the active one is marked.
    List {
        #[command(flatten)]
        user: UserArgs,
    },
    /// Print one of a user's scripts.
    Show {
        #[command(flatten)]
        user: UserArgs,
        name: String,
    },
    /// Store a script for a user (checked first; replaced atomically).
    Put {
        #[command(flatten)]
        user: UserArgs,
        name: String,
        file: PathBuf,
        /// Make it the active script too.
        #[arg(long)]
        activate: bool,
    },
    /// Make a script the active one (`--none`: no script runs).
    Activate {
        #[command(flatten)]
        user: UserArgs,
        #[arg(required_unless_present = "none")]
        name: Option<String>,
        #[arg(long)]
        none: bool,
    },
}

/// What a dry run knows about the world: script directories for include
/// and the mailboxes given with --mailbox; nothing is ever a duplicate.
struct DryRunHost {
    personal: PathBuf,
    global: Option<PathBuf>,
    mailboxes: Vec<String>,
}

impl Host for DryRunHost {
    fn mailbox_exists(&self, name: &str) -> bool {
        self.mailboxes.iter().any(|m| m == name)
    }

    fn include(&self, global: bool, name: &str) -> Result<Option<String>, String> {
        let dir = match (global, &self.global) {
            (false, _) => &self.personal,
            (true, Some(g)) => g,
            (true, None) => return Ok(None),
        };
        let path = dir.join(script_file(name));
        if !path.exists() {
            return Ok(None);
        }
        read_script(&path).map(Some).map_err(|Fail(_, m)| m)
    }
}

/// A failure: the exit code and the message for stderr.
struct Fail(u8, String);

fn io(what: &Path, e: std::io::Error) -> Fail {
    Fail(2, format!("{}: {e}", what.display()))
}

fn read_script(path: &Path) -> Result<String, Fail> {
    let f = std::fs::File::open(path).map_err(|e| io(path, e))?;
    let mut buf = Vec::new();
    f.take(MAX_SCRIPT_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| io(path, e))?;
    if buf.len() as u64 > MAX_SCRIPT_FILE {
        return Err(Fail(
            1,
            format!("{}: larger than {MAX_SCRIPT_FILE} bytes", path.display()),
        ));
    }
    String::from_utf8(buf).map_err(|_| Fail(1, format!("{}: not UTF-8", path.display())))
}

/// The script's warnings (RFC 5804 1.3: valid, probably not meant) for
/// JSON output.
fn warnings_json(script: &Script) -> serde_json::Value {
    all_warnings(script)
        .iter()
        .map(|w| json!({"line": w.pos.line, "column": w.pos.col, "message": w.message}))
        .collect()
}

/// The script's warnings and those of its `fileinto` mailbox names that
/// the store refuses (delivery would keep the message in INBOX).
fn all_warnings(script: &Script) -> Vec<sieve::Warning> {
    let mut out = script.warnings().to_vec();
    out.extend(script.mailbox_warnings(|n| {
        storage::MailboxName::new(n)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }));
    out
}

/// Compiles, or reports `FILE:LINE:COL: error: MESSAGE` (JSON on stdout
/// with --json). Warnings do not fail: as text they go to stderr,
/// `FILE:LINE:COL: warning: MESSAGE` (with --json the caller puts them
/// in its object).
fn compile(path: &Path, src: &str, json: bool) -> Result<Script, Fail> {
    let script = compile_quiet(path, src, json)?;
    if !json {
        for w in all_warnings(&script) {
            eprintln!(
                "{}:{}:{}: warning: {}",
                path.display(),
                w.pos.line,
                w.pos.col,
                w.message
            );
        }
    }
    Ok(script)
}

fn compile_quiet(path: &Path, src: &str, json: bool) -> Result<Script, Fail> {
    Script::compile(src).map_err(|e| {
        if json {
            println!(
                "{}",
                json!({"file": path.display().to_string(), "ok": false,
                       "line": e.pos.line, "column": e.pos.col, "message": e.message})
            );
            Fail(1, String::new())
        } else {
            Fail(
                1,
                format!(
                    "{}:{}:{}: error: {}",
                    path.display(),
                    e.pos.line,
                    e.pos.col,
                    e.message
                ),
            )
        }
    })
}

fn sieve_dir(u: &UserArgs) -> Result<PathBuf, Fail> {
    let config = storage::config::Config::load().map_err(|e| Fail(2, format!("config: {e}")))?;
    let spool = config.spool(u.spool.as_deref());
    let user = UserName::new(&u.user).map_err(|e| Fail(1, format!("user: {e}")))?;
    let home = spool.join(user.encoded());
    if !home.is_dir() {
        return Err(Fail(
            2,
            format!("no such user in {}: {}", spool.display(), u.user),
        ));
    }
    Ok(home.join(SIEVE_DIR))
}

/// The active script's name: `active` read bounded and without following
/// a symlink, as every other reader does (`sieve::layout::active_name`).
fn active_name(dir: &Path) -> Result<Option<String>, Fail> {
    let fail = |e: storage::Error| Fail(2, format!("{}: {e}", dir.join(ACTIVE_FILE).display()));
    let Some(scripts) = script_dir(dir, false).map_err(fail)? else {
        return Ok(None);
    };
    Ok(scripts
        .read(ACTIVE_FILE, MAX_ACTIVE_FILE)
        .map_err(fail)?
        .and_then(|b| layout::active_name(&b)))
}

/// `dir` (SPOOL/USER/.sieve, from `sieve_dir`) as the store's script
/// directory: nothing below the spool followed if it is a symlink.
fn script_dir(dir: &Path, create: bool) -> storage::Result<Option<storage::scriptdir::ScriptDir>> {
    let home = dir.parent().unwrap_or(Path::new("."));
    let spool = home.parent().unwrap_or(Path::new("."));
    let user = home.file_name().and_then(|n| n.to_str()).unwrap_or("");
    storage::scriptdir::ScriptDir::open(spool, user, SIEVE_DIR, create)
}

fn check_name(name: &str) -> Result<(), Fail> {
    if valid_script_name(name) {
        Ok(())
    } else {
        Err(Fail(1, format!("invalid script name {name:?}")))
    }
}

/// Writes `data` as `dir/name` in one step (storage::scriptdir: temporary
/// file, fsync, rename, directory fsync; symlinks never followed).
fn replace_file(dir: &Path, name: &str, data: &[u8]) -> Result<(), Fail> {
    let fail = |e: storage::Error| Fail(2, format!("{}: {e}", dir.join(name).display()));
    let scripts = script_dir(dir, true)
        .map_err(fail)?
        .ok_or_else(|| Fail(2, format!("{}: cannot create", dir.display())))?;
    scripts.replace(name, data).map_err(fail)
}

fn print_actions(outcome: &sieve::Outcome) {
    if let Some(e) = &outcome.error {
        println!("runtime error: {e} (the implicit keep applies)");
    }
    for a in &outcome.actions {
        let flags = |f: &[String]| {
            if f.is_empty() {
                String::new()
            } else {
                format!(" flags: {}", f.join(" "))
            }
        };
        match a {
            Action::Keep { flags: f } => println!("keep (INBOX){}", flags(f)),
            Action::FileInto {
                mailbox,
                flags: f,
                create,
            } => println!(
                "fileinto {mailbox}{}{}",
                if *create { " (create)" } else { "" },
                flags(f)
            ),
            Action::Redirect { address, copy } => {
                println!("redirect {address}{}", if *copy { " (copy)" } else { "" })
            }
            Action::Reject { reason, extended } => println!(
                "{} {}",
                if *extended { "ereject" } else { "reject" },
                reason.replace(['\r', '\n'], " ")
            ),
            Action::Vacation {
                to,
                period,
                subject,
                suppressed,
                ..
            } => println!(
                "vacation to {to:?} every {period}s subject {:?}{}",
                subject.as_deref().unwrap_or(""),
                suppressed
                    .as_deref()
                    .map(|s| format!(" (not sent: {s})"))
                    .unwrap_or_default()
            ),
        }
    }
    if outcome.actions.is_empty() {
        println!("discard");
    }
}

fn run(cli: Cli) -> Result<(), Fail> {
    let json = cli.json;
    match cli.cmd {
        Cmd::Check { file } => {
            let src = read_script(&file)?;
            let script = compile(&file, &src, json)?;
            if json {
                println!(
                    "{}",
                    json!({"file": file.display().to_string(), "ok": true,
                           "warnings": warnings_json(&script)})
                );
            } else {
                println!("{}: ok", file.display());
            }
        }
        Cmd::Test {
            file,
            message,
            from,
            to,
            include_dir,
            global_dir,
            mailboxes,
        } => {
            let src = read_script(&file)?;
            let script = compile(&file, &src, json)?;
            let raw = std::fs::read(&message).map_err(|e| io(&message, e))?;
            // Bare LF to CRLF, as deliver stores messages.
            let raw = tools::mbox::to_crlf(&raw);
            let env = Envelope {
                from: from.trim_matches(['<', '>']).to_string(),
                to: to.trim_matches(['<', '>']).to_string(),
            };
            let mut opts = RunOptions {
                now: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64),
                ..RunOptions::default()
            };
            opts.environment.insert("location".into(), "MDA".into());
            opts.environment.insert("phase".into(), "during".into());
            let host = DryRunHost {
                personal: include_dir
                    .or_else(|| file.parent().map(Path::to_path_buf))
                    .unwrap_or_default(),
                global: global_dir,
                mailboxes,
            };
            let outcome = script.evaluate(&raw, &env, &opts, &host);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).expect("serializable")
                );
            } else {
                print_actions(&outcome);
            }
        }
        Cmd::List { user } => {
            let dir = sieve_dir(&user)?;
            let active = active_name(&dir)?;
            let mut names: Vec<String> = match std::fs::read_dir(&dir) {
                Ok(rd) => rd
                    .filter_map(|e| e.ok())
                    .filter_map(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.strip_suffix(&format!(".{EXTENSION}"))
                            .filter(|n| valid_script_name(n))
                            .map(String::from)
                    })
                    .collect(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(e) => return Err(io(&dir, e)),
            };
            names.sort();
            if json {
                let list: Vec<_> = names
                    .iter()
                    .map(|n| json!({"name": n, "active": Some(n) == active.as_ref()}))
                    .collect();
                println!("{}", json!({"scripts": list, "active": active}));
            } else {
                for n in &names {
                    let mark = if Some(n) == active.as_ref() {
                        " ACTIVE"
                    } else {
                        ""
                    };
                    println!("{n}{mark}");
                }
            }
        }
        Cmd::Show { user, name } => {
            check_name(&name)?;
            let dir = sieve_dir(&user)?;
            let src = read_script(&dir.join(script_file(&name)))?;
            if json {
                println!("{}", json!({"name": name, "script": src}));
            } else {
                print!("{src}");
            }
        }
        Cmd::Put {
            user,
            name,
            file,
            activate,
        } => {
            check_name(&name)?;
            let src = read_script(&file)?;
            let script = compile(&file, &src, json)?;
            let dir = sieve_dir(&user)?;
            replace_file(&dir, &script_file(&name), src.as_bytes())?;
            if activate {
                replace_file(&dir, ACTIVE_FILE, format!("{name}\n").as_bytes())?;
            }
            if json {
                println!(
                    "{}",
                    json!({"name": name, "stored": true, "active": activate,
                           "warnings": warnings_json(&script)})
                );
            } else {
                println!("stored {name}{}", if activate { " (active)" } else { "" });
            }
        }
        Cmd::Activate { user, name, none } => {
            let dir = sieve_dir(&user)?;
            let line = match (none, name) {
                (true, _) | (false, None) => String::new(),
                (false, Some(n)) => {
                    check_name(&n)?;
                    let path = dir.join(script_file(&n));
                    let src = read_script(&path)?;
                    compile(&path, &src, json)?;
                    format!("{n}\n")
                }
            };
            replace_file(&dir, ACTIVE_FILE, line.as_bytes())?;
            if json {
                println!("{}", json!({"active": line.trim()}));
            } else if line.is_empty() {
                println!("no active script");
            } else {
                println!("active: {}", line.trim());
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail(code, msg)) => {
            if !msg.is_empty() {
                eprintln!("{msg}");
            }
            ExitCode::from(code)
        }
    }
}
