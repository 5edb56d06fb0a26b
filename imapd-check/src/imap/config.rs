//! The IMAP server's settings: the `imapd.*` keys of the store's config
//! file (`storage::config`, `MAILSTORE_CONFIG` or /etc/mailstore.conf),
//! then command-line options over them. Every key and its default is
//! listed in docs/OPERATIONS.md ("Server configuration"). An unknown
//! `imapd.` key is an error: a misspelt security setting must not pass
//! silently.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use storage::config::{Config, parse_size};

use super::auth::HashBounds;
use super::io::Limits;
use super::limits::FailPolicy;

/// What identifies one version of a file the server re-reads when it
/// changes (password file, TLS certificate and key): device, inode,
/// modification time and size.
pub type FileStamp = (u64, u64, i64, i64, u64);

pub fn file_stamp(path: &std::path::Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.size()))
}

/// SIGHUPs received so far (the handler only counts).
static HUPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

extern "C" fn on_hup(_: nix::libc::c_int) {
    HUPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Makes SIGHUP ask for a reload of the password file and certificate
/// (at their next use) instead of ending the process.
pub fn handle_sighup() -> nix::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let act = SigAction::new(
        SigHandler::Handler(on_hup),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    // SAFETY: the handler only does an atomic add (async-signal-safe).
    unsafe { sigaction(Signal::SIGHUP, &act) }.map(|_| ())
}

/// Whether a SIGHUP came since this was last asked (one per reloadable
/// file).
#[derive(Default)]
pub struct HupSeen(std::sync::atomic::AtomicU64);

impl HupSeen {
    pub fn take(&self) -> bool {
        let now = HUPS.load(std::sync::atomic::Ordering::Relaxed);
        self.0.swap(now, std::sync::atomic::Ordering::Relaxed) != now
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{origin}: imapd.{key}: {what}")]
pub struct ConfigError {
    origin: String,
    key: String,
    what: String,
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Plain IMAP (STARTTLS offered when TLS is configured).
    pub listen: Vec<SocketAddr>,
    /// Implicit TLS (port 993 style, RFC 8314).
    pub listen_tls: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub passwd: Option<PathBuf>,
    /// Clients from these networks may log in without TLS.
    pub trusted: Vec<IpNet>,
    /// Clients from these networks are not limited per address (no
    /// per-IP connection limit, no failure lock-out): a webmail or proxy
    /// on this host connects for many users from one address.
    pub exempt: Vec<IpNet>,
    pub hash_bounds: HashBounds,
    pub login_timeout: Duration,
    pub autologout: Duration,
    pub send_timeout: Duration,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub max_connections_per_user: usize,
    pub max_parallel_hashes: usize,
    pub fail: FailPolicy,
    /// Failed logins on one connection before it is closed.
    pub max_login_failures_per_connection: u32,
    pub compress: bool,
    /// Bound of the process-wide header cache in bytes (0: off;
    /// headercache.rs).
    pub header_cache: usize,
    /// Connection threads ask for short CPU slices between and during
    /// cheap commands (slice.rs).
    pub short_slices: bool,
    /// How much heavy commands raise their thread's nice value (0: not at
    /// all; slice.rs).
    pub heavy_nice: i32,
    /// The full-text index (`imapd.fts*`, ftsfilter.rs).
    pub fts: super::ftsfilter::FtsConfig,
    pub limits: Limits,
    /// The ManageSieve listener and its quotas (`imapd.managesieve_*`).
    pub managesieve: crate::managesieve::config::ManageSieveConfig,
    /// The store's own keys from the same file (`quota`, `quota.USER`),
    /// read once at start like the rest (the file given with `--config`,
    /// not only the default one).
    pub store: Config,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: Vec::new(),
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            passwd: None,
            trusted: loopback(),
            exempt: loopback(),
            hash_bounds: HashBounds::default(),
            login_timeout: Duration::from_secs(60),
            autologout: Duration::from_secs(30 * 60),
            send_timeout: Duration::from_secs(5 * 60),
            max_connections: 2000,
            max_connections_per_ip: 50,
            max_connections_per_user: 20,
            max_parallel_hashes: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2),
            fail: FailPolicy {
                delay: Duration::from_millis(500),
                max_delay: Duration::from_secs(15),
                limit: 10,
                window: Duration::from_secs(300),
            },
            max_login_failures_per_connection: 3,
            compress: true,
            header_cache: super::headercache::DEFAULT_BYTES,
            short_slices: true,
            heavy_nice: super::slice::HEAVY_NICE,
            fts: Default::default(),
            limits: Limits::default(),
            managesieve: Default::default(),
            store: Config::default(),
        }
    }
}

fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.0/8".parse().expect("valid"),
        "::1/128".parse().expect("valid"),
    ]
}

pub(crate) fn addrs(v: &str) -> Result<Vec<SocketAddr>, String> {
    v.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .map_err(|_| format!("bad address {s:?} (want IP:PORT)"))
        })
        .collect()
}

fn nets(v: &str) -> Result<Vec<IpNet>, String> {
    if v.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    v.split([',', ' '])
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("bad network {s:?} (want CIDR like 10.0.0.0/8)"))
        })
        .collect()
}

fn num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("bad number {v:?}"))
}

pub(crate) fn positive(v: &str) -> Result<u64, String> {
    match num::<u64>(v)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

fn yes_no(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Ok(true),
        "no" | "false" | "off" | "0" => Ok(false),
        _ => Err(format!("bad boolean {v:?} (want yes or no)")),
    }
}

pub(crate) fn size(v: &str) -> Result<u64, String> {
    match parse_size(v)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

impl ServerConfig {
    /// The `imapd.*` keys of `c` over the defaults.
    pub fn from_store_config(c: &Config) -> Result<ServerConfig, ConfigError> {
        let mut s = ServerConfig {
            store: c.clone(),
            ..ServerConfig::default()
        };
        let origin = c
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "config".into());
        // The store's own message size limit caps APPEND too.
        if let Some(m) = c.max_size {
            s.limits.append = s.limits.append.min(m.max(1));
        }
        for (key, v) in &c.raw {
            let Some(k) = key.strip_prefix("imapd.") else {
                continue;
            };
            s.set(k, v).map_err(|what| ConfigError {
                origin: origin.clone(),
                key: k.to_string(),
                what,
            })?;
        }
        Ok(s)
    }

    fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        let secs = |v: &str| positive(v).map(Duration::from_secs);
        let millis = |v: &str| num::<u64>(v).map(Duration::from_millis);
        match k {
            "listen" => self.listen = addrs(v)?,
            "listen_tls" => self.listen_tls = addrs(v)?,
            "tls_cert" => self.tls_cert = Some(PathBuf::from(v)),
            "tls_key" => self.tls_key = Some(PathBuf::from(v)),
            "passwd" => self.passwd = Some(PathBuf::from(v)),
            "trusted_networks" => self.trusted = nets(v)?,
            "exempt_networks" => self.exempt = nets(v)?,
            "allow_plain_passwords" => self.hash_bounds.allow_plain = yes_no(v)?,
            "max_hash_memory" => self.hash_bounds.argon2_memory = size(v)?,
            "max_parallel_hashes" => self.max_parallel_hashes = positive(v)? as usize,
            "login_timeout" => self.login_timeout = secs(v)?,
            "autologout" => self.autologout = secs(v)?,
            "send_timeout" => self.send_timeout = secs(v)?,
            "max_connections" => self.max_connections = positive(v)? as usize,
            "max_connections_per_ip" => self.max_connections_per_ip = positive(v)? as usize,
            "max_connections_per_user" => self.max_connections_per_user = positive(v)? as usize,
            "auth_fail_delay_ms" => self.fail.delay = millis(v)?,
            "auth_fail_delay_max_ms" => self.fail.max_delay = millis(v)?,
            "auth_fail_limit" => self.fail.limit = positive(v)?.min(u32::MAX as u64) as u32,
            "auth_fail_window" => self.fail.window = secs(v)?,
            "max_login_failures_per_connection" => {
                self.max_login_failures_per_connection = positive(v)?.min(u32::MAX as u64) as u32
            }
            "compress" => self.compress = yes_no(v)?,
            "header_cache" => self.header_cache = parse_size(v)?.min(1 << 40) as usize,
            "short_slices" => self.short_slices = yes_no(v)?,
            "heavy_nice" => match num::<i32>(v)? {
                n @ 0..=19 => self.heavy_nice = n,
                _ => return Err("must be 0 to 19".into()),
            },
            "fts" => self.fts.on = yes_no(v)?,
            "fts_memory" => self.fts.memory = size(v)?.clamp(15_000_000, 4 << 30) as usize,
            "fts_batch" => self.fts.batch = positive(v)?.min(u32::MAX as u64) as u32,
            "max_line" => self.limits.line = size(v)?.max(1024) as usize,
            "max_command" => self.limits.command_lines = size(v)?.max(1024) as usize,
            "max_literal" => self.limits.other_literal = size(v)?,
            "max_append" => self.limits.append = size(v)?,
            k if k.starts_with("managesieve_") => self.managesieve.set(k, v)?,
            _ => return Err("unknown key (see docs/OPERATIONS.md)".into()),
        }
        Ok(())
    }

    /// True when a client at `ip` may log in without TLS.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        in_nets(&self.trusted, ip)
    }

    /// True when a client at `ip` is not limited per address.
    pub fn is_exempt(&self, ip: IpAddr) -> bool {
        in_nets(&self.exempt, ip)
    }
}

/// `ip` (an IPv4-mapped IPv6 address as IPv4) in one of `nets`.
fn in_nets(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    nets.iter().any(|n| n.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn keys_override_defaults_and_typos_fail() {
        let c = Config::parse(
            "imapd.listen = 0.0.0.0:143, [::]:143\nimapd.trusted_networks = none\n\
             imapd.login_timeout = 5\nimapd.max_line = 8K\nimapd.compress = no\n\
             imapd.fts = off\nimapd.fts_batch = 10\nimapd.fts_memory = 1M\n\
             imapd.heavy_nice = 0\n",
            Path::new("t.conf"),
        )
        .unwrap();
        let s = ServerConfig::from_store_config(&c).unwrap();
        assert_eq!(s.listen.len(), 2);
        assert!(!s.is_trusted("127.0.0.1".parse().unwrap()));
        assert_eq!(s.login_timeout, Duration::from_secs(5));
        assert_eq!(s.limits.line, 8192);
        assert!(!s.compress);
        assert_eq!((s.heavy_nice, ServerConfig::default().heavy_nice), (0, 10));
        assert!(!s.fts.on && ServerConfig::default().fts.on);
        assert_eq!(
            (s.fts.batch, s.fts.memory),
            (10, 15_000_000),
            "memory at least 15 MB"
        );
        assert!(ServerConfig::default().is_trusted("::ffff:127.0.0.1".parse().unwrap()));
        let bad = Config::parse("imapd.max_conections = 5\n", Path::new("t.conf")).unwrap();
        let e = ServerConfig::from_store_config(&bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_conections"), "{e}");
        for wrong in [
            "imapd.autologout = 0\n",
            "imapd.heavy_nice = 20\n",
            "imapd.heavy_nice = -1\n",
        ] {
            let c = Config::parse(wrong, Path::new("t.conf")).unwrap();
            assert!(ServerConfig::from_store_config(&c).is_err(), "{wrong}");
        }
    }
}
