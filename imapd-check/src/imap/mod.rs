//! `imapd-check serve`: a small IMAP4rev1 server over the store, with
//! IDLE, UIDPLUS, MOVE, UNSELECT, ENABLE and CONDSTORE. Commands are parsed
//! with imap-codec; sessions are `storage::session::SessionView`s.
//!
//! Two ways to run it: preauthenticated on stdin/stdout (`--stdio`, for
//! tunnels: mutt, mbsync `Tunnel`, imaplib `IMAP4_stream`) and on a
//! loopback TCP port with LOGIN / AUTHENTICATE PLAIN against a password
//! file (`--listen`, one thread per connection).

pub mod auth;
pub mod conn;
pub mod emit;
pub mod fetch;
pub mod idle;
pub mod io;
pub mod mailboxes;
pub mod messages;
pub mod mime;
pub mod msgfile;
pub mod repack;
pub mod search;
pub mod structure;
pub mod watch;
pub mod wire;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use storage::{Options, Store, UserName};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Spool directory (else MAILSTORE_SPOOL, the config file, ./spool).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Preauthenticated user (with --stdio).
    #[arg(short = 'd', long = "user")]
    user: Option<String>,
    /// Speak IMAP on stdin/stdout, preauthenticated as -d USER.
    #[arg(long, conflicts_with = "listen")]
    stdio: bool,
    /// Listen on this TCP address (loopback unless --allow-non-loopback).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Password file of `user:argon2-hash` lines (see `imapd-check passwd`).
    #[arg(long)]
    passwd: Option<PathBuf>,
    /// Allow --listen on an address other than loopback (no TLS here:
    /// passwords would cross the network in clear).
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    /// User name for the line.
    user: String,
}

fn open_store(spool: Option<&std::path::Path>) -> Res<Store> {
    let root = storage::config::resolve_spool(spool);
    Ok(Store::open(&root, Options::default())?)
}

/// The pinned mmap threshold (see `pin_mmap_threshold`).
/// Above glibc's default (128 KiB) so that reading the records of an
/// index of up to 4,096 messages reuses arena memory rather than costing
/// a map, page faults and an unmap on every check; far below argon2's
/// blocks.
const MMAP_THRESHOLD: i32 = 512 * 1024;

/// Gives free heap memory back to the kernel after a connection ends, at
/// most every 10 s: glibc otherwise keeps in its arenas what a busy period
/// (big FETCH responses, index reads of many sessions) freed.
fn trim_heap() {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if now < last + 10
        || LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns free memory; any thread may call it.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Pins glibc's mmap threshold. Left dynamic, glibc raises it past the
/// size of the first big block freed: after one login, each argon2
/// verification's memory (19 MiB at the default cost) comes from a malloc
/// arena and stays there after the login; measured: 300 logged-in idle
/// connections held 5.7 GiB instead of 46 MiB (docs/BENCHMARKS.md).
/// Pinned, blocks from [`MMAP_THRESHOLD`] up are mapped and unmapped.
fn pin_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator tunable; called before any
    // connection thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

pub fn serve(a: ServeArgs) -> Res<()> {
    pin_mmap_threshold();
    if let Some(addr) = a.listen {
        return serve_tcp(&a, addr);
    }
    if !a.stdio {
        return Err("give --stdio (with -d USER) or --listen ADDR --passwd FILE".into());
    }
    let user = UserName::new(a.user.as_deref().ok_or("--stdio needs -d USER")?)?;
    let store = open_store(a.spool.as_deref())?;
    let input: OwnedFd = std::io::stdin().as_fd_owned()?;
    let output: OwnedFd = std::io::stdout().as_fd_owned()?;
    let out = Box::new(io::Output::new(std::fs::File::from(output), OUT_BUF));
    conn::Session::new(store, Some(user), None, io::Input::new(input), out).run()?;
    Ok(())
}

trait DupFd {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd>;
}
impl<T: std::os::fd::AsFd> DupFd for T {
    fn as_fd_owned(&self) -> std::io::Result<OwnedFd> {
        self.as_fd().try_clone_to_owned()
    }
}

/// Output buffer of a connection (allocated only while a response is
/// being written, see `io::Output`).
const OUT_BUF: usize = 16 * 1024;

/// Stack of a connection thread. Parsing and MIME walking are bounded in
/// depth (imap-codec's recursion limits, `structure::MAX_DEPTH` with an
/// explicit stack), so this is ample; only the touched part is resident.
const CONN_STACK: usize = 1024 * 1024;

/// Each connection holds a socket and, while idling, an eventfd: raise the
/// soft descriptor limit to the hard one so a thousand idlers fit.
fn raise_nofile() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!("cannot raise RLIMIT_NOFILE to {hard}: {e}");
    }
}

fn serve_tcp(a: &ServeArgs, addr: SocketAddr) -> Res<()> {
    if !addr.ip().is_loopback() && !a.allow_non_loopback {
        return Err(format!(
            "refusing to listen on non-loopback {addr} without --allow-non-loopback (no TLS: passwords travel in clear)"
        )
        .into());
    }
    let passwd_path = a.passwd.as_deref().ok_or("--listen needs --passwd FILE")?;
    let db = Arc::new(auth::PasswdDb::load(passwd_path)?);
    let root = storage::config::resolve_spool(a.spool.as_deref());
    raise_nofile();
    let listener = TcpListener::bind(addr)?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    // Tests read the bound port (useful with port 0) from stderr.
    eprintln!("listening on {}", listener.local_addr()?);
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                continue;
            }
        };
        let db = db.clone();
        let root = root.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(CONN_STACK)
            .spawn(move || {
                let peer = stream.peer_addr().ok();
                let run = || -> Res<()> {
                    stream.set_nodelay(true)?;
                    let store = Store::open(&root, Options::default())?;
                    let input = io::Input::new(stream.as_fd_owned()?);
                    let out = Box::new(io::Output::new(stream.try_clone()?, OUT_BUF));
                    conn::Session::new(store, None, Some(db), input, out).run()?;
                    Ok(())
                };
                if let Err(e) = run() {
                    tracing::warn!(?peer, "connection ended with error: {e}");
                }
                trim_heap();
            });
        if let Err(e) = spawned {
            // Out of threads or memory: this connection is dropped, the
            // server goes on.
            tracing::error!("cannot start a connection thread: {e}");
        }
    }
    Ok(())
}

/// Prints `USER:HASH` for a password read from the first line of stdin.
pub fn passwd(a: PasswdArgs) -> Res<()> {
    UserName::new(&a.user)?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let pw = line.trim_end_matches(['\r', '\n']);
    if pw.is_empty() {
        return Err("empty password on stdin".into());
    }
    println!("{}:{}", a.user, auth::hash_password(pw.as_bytes())?);
    Ok(())
}
