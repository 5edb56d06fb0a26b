//! `imapd-check serve`: an IMAP4rev1 and IMAP4rev2 server over the store,
//! with the capabilities docs/OPERATIONS.md §6 lists (IDLE, UIDPLUS, MOVE,
//! CONDSTORE/QRESYNC, the mailbox, search and BINARY extensions, STARTTLS,
//! COMPRESS=DEFLATE ...). Commands are parsed with imap-codec (and, for
//! what it does not take, `extparse`, `rewrite` and `esearch`); sessions
//! are `storage::session::SessionView`s.
//!
//! Two ways to run it: preauthenticated on stdin/stdout (`--stdio`, for
//! tunnels: mutt, mbsync `Tunnel`, imaplib `IMAP4_stream`) and on TCP
//! (plain with STARTTLS, and implicit TLS) with LOGIN / AUTHENTICATE PLAIN
//! against a password file, one thread per connection (`server.rs`),
//! settings from the `imapd.*` config keys (`config.rs`). The byte stream
//! under a session, whatever carries it, is `stream.rs`.

pub use fts::address;
pub mod append;
pub mod auth;
pub mod binappend;
pub mod binary;
pub mod compress;
pub mod config;
pub mod conn;
pub mod criteria;
pub mod emit;
pub mod esearch;
pub mod extparse;
pub mod fetch;
pub mod ftsfilter;
pub mod groupcommit;
pub mod headercache;
pub mod id;
pub mod idle;
pub mod io;
pub mod limits;
pub mod list;
pub mod login;
pub mod mailboxes;
pub mod messages;
pub mod mime;
pub mod msgfile;
pub mod qresync;
pub mod quota;
pub mod recent;
pub mod repack;
pub mod rev2;
pub mod rewrite;
pub mod search;
pub mod searchres;
pub mod seqranges;
pub mod server;
pub mod sharedviews;
pub mod slice;
pub mod sort;
pub mod sortkeys;
pub mod stream;
pub mod structure;
pub mod thread;
pub mod tls;
pub mod wire;

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;

use storage::{Options, Store, UserName};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Spool directory (else MAILSTORE_SPOOL, the config file, ./spool).
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Config file (else MAILSTORE_CONFIG, else /etc/mailstore.conf if
    /// present); the server reads its `imapd.*` keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Preauthenticated user (with --stdio).
    #[arg(short = 'd', long = "user")]
    user: Option<String>,
    /// Speak IMAP on stdin/stdout, preauthenticated as -d USER.
    #[arg(long, conflicts_with_all = ["listen", "listen_tls", "managesieve_listen"])]
    stdio: bool,
    /// Listen for plain IMAP (STARTTLS when TLS is configured) on this
    /// address; repeatable; overrides imapd.listen.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// Listen for implicit TLS (port 993 style) on this address;
    /// repeatable; overrides imapd.listen_tls.
    #[arg(long)]
    listen_tls: Vec<SocketAddr>,
    /// Listen for ManageSieve (RFC 5804; STARTTLS when TLS is
    /// configured) on this address; repeatable; overrides
    /// imapd.managesieve_listen.
    #[arg(long)]
    managesieve_listen: Vec<SocketAddr>,
    /// PEM certificate chain (imapd.tls_cert).
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// PEM private key (imapd.tls_key).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Password file (imapd.passwd): `user:argon2-hash` lines from
    /// `imapd-check passwd`, or Dovecot passwd-file lines.
    #[arg(long)]
    passwd: Option<PathBuf>,
    /// Allow plain --listen on a non-loopback address with no TLS
    /// configured (clients outside imapd.trusted_networks then cannot
    /// log in at all: LOGINDISABLED).
    #[arg(long)]
    allow_non_loopback: bool,
}

#[derive(clap::Args, Debug)]
pub struct PasswdArgs {
    /// User name for the line.
    user: String,
}

fn server_config(a: &ServeArgs) -> Res<(storage::config::Config, config::ServerConfig)> {
    let store_cfg = match &a.config {
        Some(p) => storage::config::Config::load_file(p)?,
        None => storage::config::Config::load()?,
    };
    let mut cfg = config::ServerConfig::from_store_config(&store_cfg)?;
    if !a.listen.is_empty() {
        cfg.listen.clone_from(&a.listen);
    }
    if !a.listen_tls.is_empty() {
        cfg.listen_tls.clone_from(&a.listen_tls);
    }
    if !a.managesieve_listen.is_empty() {
        cfg.managesieve.listen.clone_from(&a.managesieve_listen);
    }
    if a.tls_cert.is_some() {
        cfg.tls_cert.clone_from(&a.tls_cert);
    }
    if a.tls_key.is_some() {
        cfg.tls_key.clone_from(&a.tls_key);
    }
    if a.passwd.is_some() {
        cfg.passwd.clone_from(&a.passwd);
    }
    headercache::HEADERS.set_capacity(cfg.header_cache);
    slice::ENABLED.store(cfg.short_slices, std::sync::atomic::Ordering::Relaxed);
    Ok((store_cfg, cfg))
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
pub(super) fn trim_heap() {
    trim_heap_every(10_000);
}

/// Asks for free heap memory to be given back soon, off the caller's
/// thread: a thread started on first use trims once requests stop for
/// 100 ms (at most 1 s after the first), so a burst (a thousand idlers
/// starting IDLE or woken by one delivery at once) costs one trim. For
/// idle sessions: one that made its view compact (`idle.rs`) freed about
/// 100 KiB for a mailbox of 1,100 messages, and one woken by a change read
/// records and freed them; glibc would keep both in its arenas (measured
/// with 1,000 idlers: 22 MiB in use, 137 MiB held; docs/BENCHMARKS.md).
pub(super) fn trim_heap_soon() {
    use std::sync::OnceLock;
    use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
    static TRIMMER: OnceLock<Option<SyncSender<()>>> = OnceLock::new();
    let tx = TRIMMER.get_or_init(|| {
        let (tx, rx) = sync_channel::<()>(1);
        let spawned = std::thread::Builder::new()
            .name("heap-trim".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                while rx.recv().is_ok() {
                    // Once the burst is over (no request for 0.1 s, or
                    // after 1 s), not in the middle of it: trimming takes
                    // each arena's lock in turn.
                    let start = std::time::Instant::now();
                    loop {
                        std::thread::sleep(std::time::Duration::from_millis(100));
                        let more = rx.try_recv().is_ok();
                        if !more || start.elapsed().as_millis() >= 1000 {
                            break;
                        }
                    }
                    trim_heap_every(0);
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!("no heap trimming thread: {e}");
                None
            }
        }
    });
    if let Some(tx) = tx {
        // Full: a trim is already due.
        if let Err(TrySendError::Disconnected(())) = tx.try_send(()) {
            tracing::warn!("the heap trimming thread ended");
        }
    }
}

/// `malloc_trim` if no thread did so in the last `ms` milliseconds.
fn trim_heap_every(ms: u64) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let last = LAST.load(Ordering::Relaxed);
    if now < last + ms
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
    let (store_cfg, cfg) = server_config(&a)?;
    let root = a.spool.clone().unwrap_or_else(|| store_cfg.spool(None));
    if !a.stdio {
        return serve_tcp(&a, cfg, root);
    }
    let user = UserName::new(a.user.as_deref().ok_or("--stdio needs -d USER")?)?;
    let store = Store::open(&root, Options::default())?;
    let input: OwnedFd = std::io::stdin().as_fd().try_clone_to_owned()?;
    let output: OwnedFd = std::io::stdout().as_fd().try_clone_to_owned()?;
    let stream = stream::Shared::new(input, output);
    conn::Session::new(store, Some(user), None, Arc::new(cfg), stream).run()?;
    Ok(())
}

fn serve_tcp(a: &ServeArgs, cfg: config::ServerConfig, root: PathBuf) -> Res<()> {
    if cfg.listen.is_empty() && cfg.listen_tls.is_empty() && cfg.managesieve.listen.is_empty() {
        return Err("give --stdio (with -d USER), or --listen / --listen-tls ADDR (or imapd.listen) with a password file".into());
    }
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(c), Some(k)) => Some(tls::TlsSource::open(c, k)?),
        (None, None) => None,
        _ => {
            return Err(
                "TLS needs both a certificate and a key (imapd.tls_cert, imapd.tls_key)".into(),
            );
        }
    };
    if tls.is_none() && !cfg.listen_tls.is_empty() {
        return Err("--listen-tls needs --tls-cert and --tls-key".into());
    }
    for addr in cfg.listen.iter().chain(&cfg.managesieve.listen) {
        if tls.is_none() && !addr.ip().is_loopback() && !a.allow_non_loopback {
            return Err(format!(
                "refusing to listen on non-loopback {addr} without TLS (configure imapd.tls_cert/tls_key, or --allow-non-loopback)"
            )
            .into());
        }
    }
    let passwd_path = cfg
        .passwd
        .clone()
        .ok_or("a TCP listener needs a password file (--passwd or imapd.passwd)")?;
    config::handle_sighup()?;
    let gate = Arc::new(limits::HashGate::new(cfg.max_parallel_hashes));
    let passwd = auth::PasswdFile::open(&passwd_path, cfg.hash_bounds, gate)?;
    raise_nofile();
    if let Err(why) = slice::configure(cfg.heavy_nice) {
        tracing::warn!("imapd.heavy_nice is off: {why}");
    }
    let mut listeners = Vec::new();
    for (addrs, implicit) in [(&cfg.listen, false), (&cfg.listen_tls, true)] {
        for addr in addrs {
            let l = TcpListener::bind(addr)?;
            let local = l.local_addr()?;
            tracing::info!(addr = %local, tls = implicit, "listening");
            // Tests read the bound port (useful with port 0) from stderr.
            if implicit {
                eprintln!("listening (TLS) on {local}");
            } else {
                eprintln!("listening on {local}");
            }
            listeners.push((l, implicit));
        }
    }
    let mut sieve_listeners = Vec::new();
    for addr in &cfg.managesieve.listen {
        let l = TcpListener::bind(addr)?;
        let local = l.local_addr()?;
        tracing::info!(addr = %local, "listening (ManageSieve)");
        eprintln!("listening (ManageSieve) on {local}");
        sieve_listeners.push(l);
    }
    let server = Arc::new(server::Server {
        failures: limits::Failures::new(cfg.fail),
        cfg: Arc::new(cfg),
        root,
        passwd,
        tls,
        slots: Arc::new(limits::ConnSlots::default()),
    });
    let mut threads = Vec::new();
    for (l, implicit) in listeners {
        let s = server.clone();
        threads.push(std::thread::spawn(move || s.accept_loop(l, implicit)));
    }
    for l in sieve_listeners {
        let s = server.clone();
        threads.push(std::thread::spawn(move || {
            crate::managesieve::accept_loop(s, l)
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Output buffer of a connection (allocated only while a response is
/// being written, see `io::Output`).
pub(super) const OUT_BUF: usize = 16 * 1024;

/// Stack of a connection thread. Parsing and MIME walking are bounded in
/// depth (imap-codec's recursion limits, `structure::MAX_DEPTH` with an
/// explicit stack), so this is ample; only the touched part is resident.
pub(super) const CONN_STACK: usize = 1024 * 1024;

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
