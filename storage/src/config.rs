//! Store configuration shared by every binary: where the spool is, quotas,
//! lock timeout and message size limit.
//!
//! The file is named by the environment variable `MAILSTORE_CONFIG`, else
//! `/etc/mailstore.conf` is read if it exists; no file means all defaults.
//! Format: one `key = value` per line, `#` starts a comment line, blank
//! lines are ignored. Sizes take an optional `K`, `M` or `G` suffix
//! (powers of 1024).
//!
//! | key               | meaning                                          |
//! |-------------------|--------------------------------------------------|
//! | `spool`           | the store's root directory                       |
//! | `quota`           | default per-user storage limit in bytes          |
//! | `quota.USER`      | limit for USER (overrides `quota`; `0` = none)   |
//! | `lock_timeout_ms` | longest wait for a mailbox lock                  |
//! | `max_size`        | largest message accepted, in bytes               |
//! | `dedup_window`    | duplicate suppression window, seconds (0 = off)  |
//! | `shared_fs`       | `auto` (default), `on` or `off`: the spool is on a filesystem several hosts mount (PROTOCOL.md §8) |
//!
//! Unknown keys are kept (see [`Config::get`]) so one binary's settings do
//! not break another's, and so a newer file works with an older binary.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "MAILSTORE_CONFIG";
/// Environment variable naming the spool (beats the config file).
pub const SPOOL_ENV: &str = "MAILSTORE_SPOOL";
/// Read when `MAILSTORE_CONFIG` is unset and this file exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/mailstore.conf";
/// Used when nothing else names a spool: relative to the current
/// directory, so a first try needs no setup.
pub const DEFAULT_SPOOL: &str = "./spool";

/// Why a config file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("read config {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `key = value`, or a value does not parse.
    #[error("{path}:{line}: {what}")]
    Syntax {
        /// The config file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        what: String,
    },
}

/// The store configuration shared by the project's binaries (see the
/// module documentation for the file format and keys).
///
/// ```
/// let c = mailstore::Config::parse("spool = /var/spool/mail\nquota = 1G\n", "x.conf".as_ref()).unwrap();
/// assert_eq!(c.quota_for("alice"), Some(1 << 30));
/// assert_eq!(c.spool.as_deref(), Some("/var/spool/mail".as_ref()));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The file this came from; `None` for built-in defaults.
    pub path: Option<PathBuf>,
    /// `spool`: the store's root directory.
    pub spool: Option<PathBuf>,
    /// Default per-user limit in bytes.
    pub quota: Option<u64>,
    /// Per-user limits; `0` means unlimited for that user.
    pub user_quota: BTreeMap<String, u64>,
    /// `lock_timeout_ms`: the longest wait for a mailbox lock.
    pub lock_timeout_ms: Option<u64>,
    /// `max_size`: the largest message accepted, in bytes.
    pub max_size: Option<u64>,
    /// Duplicate suppression window of `deliver` in seconds; `0` = off.
    pub dedup_window: Option<u64>,
    /// `shared_fs`: `None` = auto (detect), `Some(on)` = override
    /// (`crate::sharedfs`). Loading a file applies it to the process.
    pub shared_fs: Option<bool>,
    /// Every key as written, including the ones parsed above.
    pub raw: BTreeMap<String, String>,
}

impl Config {
    /// Loads the file named by `MAILSTORE_CONFIG`, else
    /// `/etc/mailstore.conf` if present, else returns defaults. A file
    /// named by the environment variable must exist.
    pub fn load() -> Result<Config, ConfigError> {
        Self::load_with(std::env::var_os(CONFIG_ENV))
    }

    /// [`Config::load`] with the environment value passed in (testable).
    pub fn load_with(env: Option<OsString>) -> Result<Config, ConfigError> {
        match env.filter(|v| !v.is_empty()) {
            Some(p) => Self::load_file(Path::new(&p)),
            None => {
                let p = Path::new(DEFAULT_CONFIG_PATH);
                if p.exists() {
                    Self::load_file(p)
                } else {
                    Ok(Config::default())
                }
            }
        }
    }

    /// Reads and parses the file at `path`.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = Self::parse(&text, path)?;
        c.path = Some(path.to_path_buf());
        // Before any Store is opened with this config: every binary loads
        // its config first.
        crate::sharedfs::set_override(c.shared_fs);
        Ok(c)
    }

    /// Parses file contents; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut c = Config::default();
        for (i, line) in text.lines().enumerate() {
            let err = |what: String| ConfigError::Syntax {
                path: path.to_path_buf(),
                line: i + 1,
                what,
            };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                return Err(err(format!("expected `key = value`, got {line:?}")));
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(err("empty key".into()));
            }
            match key {
                "spool" if value.is_empty() => return Err(err("empty spool".into())),
                "spool" => c.spool = Some(PathBuf::from(value)),
                "quota" => c.quota = Some(parse_size(value).map_err(err)?),
                "lock_timeout_ms" => {
                    c.lock_timeout_ms = Some(
                        value
                            .parse()
                            .map_err(|_| err(format!("bad lock_timeout_ms {value:?}")))?,
                    )
                }
                "max_size" => c.max_size = Some(parse_size(value).map_err(err)?),
                "shared_fs" => {
                    c.shared_fs = match value {
                        "auto" => None,
                        "on" | "yes" | "true" => Some(true),
                        "off" | "no" | "false" => Some(false),
                        _ => return Err(err(format!("bad shared_fs {value:?} (auto, on or off)"))),
                    }
                }
                "dedup_window" => {
                    c.dedup_window = Some(
                        value
                            .parse()
                            .map_err(|_| err(format!("bad dedup_window {value:?} (seconds)")))?,
                    )
                }
                _ => {
                    if let Some(user) = key.strip_prefix("quota.") {
                        if user.is_empty() {
                            return Err(err("empty user in `quota.USER`".into()));
                        }
                        c.user_quota
                            .insert(user.to_string(), parse_size(value).map_err(err)?);
                    }
                }
            }
            c.raw.insert(key.to_string(), value.to_string());
        }
        Ok(c)
    }

    /// Any key's raw value, for settings only one binary knows.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw.get(key).map(String::as_str)
    }

    /// The storage limit for `user` in bytes; `None` when unlimited.
    pub fn quota_for(&self, user: &str) -> Option<u64> {
        match self.user_quota.get(user) {
            Some(0) => None,
            Some(&q) => Some(q),
            None => self.quota.filter(|&q| q > 0),
        }
    }

    /// `lock_timeout_ms` as a duration, if set.
    pub fn lock_timeout(&self) -> Option<Duration> {
        self.lock_timeout_ms.map(Duration::from_millis)
    }

    /// The spool with this config: CLI, then `MAILSTORE_SPOOL`, then the
    /// file's `spool`, then [`DEFAULT_SPOOL`].
    pub fn spool(&self, cli: Option<&Path>) -> PathBuf {
        spool_precedence(cli, std::env::var_os(SPOOL_ENV), self)
    }
}

/// The spool a binary should use: `--spool` if given, else the environment
/// variable `MAILSTORE_SPOOL`, else `spool` from the config file, else
/// `./spool`. An unreadable or invalid config file is skipped here (with a
/// warning); binaries that need its other settings call [`Config::load`]
/// and report the error themselves.
pub fn resolve_spool(cli: Option<&Path>) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os(SPOOL_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let config = Config::load().unwrap_or_else(|e| {
        tracing::warn!("ignoring config: {e}");
        Config::default()
    });
    spool_precedence(None, None, &config)
}

fn spool_precedence(cli: Option<&Path>, env: Option<OsString>, config: &Config) -> PathBuf {
    if let Some(p) = cli {
        return p.to_path_buf();
    }
    if let Some(p) = env.filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    config
        .spool
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SPOOL))
}

/// Parses `123`, `10K`, `5M`, `2G` (binary multiples, case-insensitive).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, mult) = match s.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M') => (&s[..s.len() - 1], 1 << 20),
        Some('G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("bad size {s:?} (want a number with optional K, M or G)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(t, Path::new("test.conf"))
    }

    #[test]
    fn parses_keys_comments_and_sizes() {
        let c = parse(
            "# comment\n\nspool = /var/spool/mailstore\nquota=10M\nquota.alice = 1g\n\
             quota.bob = 0\nlock_timeout_ms = 250\nmax_size = 512K\nimapd.port = 143\n\
             dedup_window = 86400\n",
        )
        .unwrap();
        assert_eq!(c.spool, Some(PathBuf::from("/var/spool/mailstore")));
        assert_eq!(c.quota, Some(10 << 20));
        assert_eq!(c.quota_for("alice"), Some(1 << 30));
        assert_eq!(c.quota_for("bob"), None);
        assert_eq!(c.quota_for("carol"), Some(10 << 20));
        assert_eq!(c.lock_timeout(), Some(Duration::from_millis(250)));
        assert_eq!(c.max_size, Some(512 << 10));
        assert_eq!(c.get("imapd.port"), Some("143"));
        assert_eq!(c.dedup_window, Some(86400));
    }

    #[test]
    fn rejects_bad_lines_with_line_numbers() {
        let e = parse("spool = /x\nquota = lots\n").unwrap_err().to_string();
        assert!(e.contains("test.conf:2"), "{e}");
        let e = parse("just words\n").unwrap_err().to_string();
        assert!(e.contains("test.conf:1"), "{e}");
        assert!(parse("lock_timeout_ms = -1\n").is_err());
        // PROTOCOL.md §8: the shared-filesystem override, both ways.
        assert_eq!(parse("shared_fs = on\n").unwrap().shared_fs, Some(true));
        assert_eq!(parse("shared_fs = off\n").unwrap().shared_fs, Some(false));
        assert_eq!(parse("shared_fs = auto\n").unwrap().shared_fs, None);
        assert!(parse("shared_fs = maybe\n").is_err());
        assert!(parse("quota. = 1\n").is_err());
        assert!(parse("spool =\n").is_err());
        assert!(parse("dedup_window = 1d\n").is_err());
    }

    #[test]
    fn size_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("7k"), Ok(7 << 10));
        assert_eq!(parse_size(" 3 M"), Ok(3 << 20));
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999G").is_err());
        assert!(parse_size("1T").is_err());
    }

    #[test]
    fn spool_precedence_cli_env_config_default() {
        let mut c = Config::default();
        assert_eq!(spool_precedence(None, None, &c), PathBuf::from("./spool"));
        c.spool = Some("/from/config".into());
        assert_eq!(
            spool_precedence(None, None, &c),
            PathBuf::from("/from/config")
        );
        // An empty environment value counts as unset.
        assert_eq!(
            spool_precedence(None, Some("".into()), &c),
            PathBuf::from("/from/config")
        );
        assert_eq!(
            spool_precedence(None, Some("/from/env".into()), &c),
            PathBuf::from("/from/env")
        );
        assert_eq!(
            spool_precedence(Some(Path::new("/from/cli")), Some("/from/env".into()), &c),
            PathBuf::from("/from/cli")
        );
    }

    #[test]
    fn load_with_env_file_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.conf");
        std::fs::write(&p, "spool = /s\n").unwrap();
        let c = Config::load_with(Some(p.clone().into())).unwrap();
        assert_eq!(c.spool, Some(PathBuf::from("/s")));
        assert_eq!(c.path, Some(p));
        let missing = dir.path().join("nope.conf");
        assert!(matches!(
            Config::load_with(Some(missing.into())),
            Err(ConfigError::Read { .. })
        ));
    }
}
