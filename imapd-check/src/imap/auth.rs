//! Password file. Two line forms, mixed freely:
//!
//! - `user:HASH` as written by `imapd-check passwd` (an Argon2id PHC
//!   string);
//! - Dovecot passwd-file lines, `user:{SCHEME}hash:uid:gid:gecos:home:...`
//!   (fields after the password are ignored), with the schemes
//!   `{ARGON2ID}`/`{ARGON2I}`, `{SHA512-CRYPT}`, `{SHA256-CRYPT}`,
//!   `{BLF-CRYPT}`, `{CRYPT}` (of those three), and `{PLAIN}`/`{CLEAR}`
//!   only when the configuration allows cleartext passwords.
//!
//! Every cost parameter read from the file is bounded before a hash runs
//! (Argon2 memory, SHA-crypt rounds, bcrypt cost): a line cannot make a
//! login take gigabytes or minutes. The file is re-read when it changes
//! (checked by `stat` at each login) or after a SIGHUP; a file that no longer parses keeps
//! the previous one in use, with an error in the log. Secrets never reach
//! a log line.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};

use super::config::{FileStamp, HupSeen, file_stamp};
use super::limits::HashGate;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read password file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("password file {path} line {line}: {what}")]
    Syntax {
        path: String,
        line: usize,
        what: String,
    },
    #[error("cannot hash password: {0}")]
    Hash(String),
}

/// Upper bounds on the cost a password file may ask of one login.
#[derive(Clone, Copy, Debug)]
pub struct HashBounds {
    /// Argon2 memory, bytes.
    pub argon2_memory: u64,
    /// Argon2 iterations and lanes.
    pub argon2_time: u32,
    pub argon2_lanes: u32,
    /// SHA-crypt rounds.
    pub sha_rounds: u64,
    /// bcrypt log2 cost.
    pub bcrypt_cost: u32,
    /// `{PLAIN}` / `{CLEAR}` lines accepted.
    pub allow_plain: bool,
}

impl Default for HashBounds {
    fn default() -> Self {
        HashBounds {
            argon2_memory: 256 << 20,
            argon2_time: 16,
            argon2_lanes: 16,
            sha_rounds: 1_000_000,
            bcrypt_cost: 16,
            allow_plain: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Hash {
    Argon2(String),
    Sha512Crypt(String),
    Sha256Crypt(String),
    Bcrypt(String),
    Plain(Vec<u8>),
    /// An empty password field: the user cannot log in here.
    Disabled,
}

pub struct PasswdDb {
    users: HashMap<String, Hash>,
    /// Verified against when the user is unknown, so timing does not tell
    /// which users exist.
    dummy: Hash,
}

/// `$6$rounds=N$...`: N (5000 when absent, as crypt(3) says).
fn sha_rounds(h: &str) -> Option<u64> {
    let rest = h.split('$').nth(2)?;
    match rest.strip_prefix("rounds=") {
        Some(n) => n.parse().ok(),
        None => Some(5000),
    }
}

fn parse_hash(field: &str, bounds: &HashBounds) -> Result<Hash, String> {
    if field.is_empty() {
        return Ok(Hash::Disabled);
    }
    let (scheme, value) = match field.strip_prefix('{') {
        Some(rest) => {
            let (s, v) = rest
                .split_once('}')
                .ok_or_else(|| "unterminated {SCHEME}".to_string())?;
            (Some(s.to_ascii_uppercase()), v)
        }
        None => (None, field),
    };
    let by_prefix = |v: &str| -> Result<Hash, String> {
        if v.starts_with("$argon2") {
            Ok(Hash::Argon2(v.to_string()))
        } else if v.starts_with("$6$") {
            Ok(Hash::Sha512Crypt(v.to_string()))
        } else if v.starts_with("$5$") {
            Ok(Hash::Sha256Crypt(v.to_string()))
        } else if ["$2a$", "$2b$", "$2y$", "$2x$"]
            .iter()
            .any(|p| v.starts_with(p))
        {
            Ok(Hash::Bcrypt(v.to_string()))
        } else {
            Err("hash is not Argon2 (PHC), SHA-crypt ($5$, $6$) or bcrypt ($2?$)".to_string())
        }
    };
    let hash = match scheme.as_deref() {
        None | Some("CRYPT") => by_prefix(value)?,
        Some("ARGON2ID" | "ARGON2I") if value.starts_with("$argon2") => {
            Hash::Argon2(value.to_string())
        }
        Some("SHA512-CRYPT") if value.starts_with("$6$") => Hash::Sha512Crypt(value.to_string()),
        Some("SHA256-CRYPT") if value.starts_with("$5$") => Hash::Sha256Crypt(value.to_string()),
        Some("BLF-CRYPT") if value.starts_with("$2") => Hash::Bcrypt(value.to_string()),
        Some("PLAIN" | "CLEAR" | "CLEARTEXT") => {
            if !bounds.allow_plain {
                return Err(
                    "{PLAIN} passwords are refused (set imapd.allow_plain_passwords = yes)"
                        .to_string(),
                );
            }
            Hash::Plain(value.as_bytes().to_vec())
        }
        Some(s @ ("ARGON2ID" | "ARGON2I" | "SHA512-CRYPT" | "SHA256-CRYPT" | "BLF-CRYPT")) => {
            return Err(format!("{{{s}}} value is not a {s} hash"));
        }
        Some(s) => return Err(format!("unsupported password scheme {{{s}}}")),
    };
    check_bounds(&hash, bounds)?;
    Ok(hash)
}

fn check_bounds(h: &Hash, b: &HashBounds) -> Result<(), String> {
    match h {
        Hash::Argon2(s) => {
            let phc = PasswordHash::new(s).map_err(|e| format!("not a PHC hash string: {e}"))?;
            let p = Params::try_from(&phc).map_err(|e| format!("argon2 parameters: {e}"))?;
            if u64::from(p.m_cost()) * 1024 > b.argon2_memory {
                return Err(format!(
                    "argon2 memory {} KiB is over the limit imapd.max_hash_memory ({} bytes)",
                    p.m_cost(),
                    b.argon2_memory
                ));
            }
            if p.t_cost() > b.argon2_time || p.p_cost() > b.argon2_lanes {
                return Err(format!(
                    "argon2 t={} p={} over the limits (t <= {}, p <= {})",
                    p.t_cost(),
                    p.p_cost(),
                    b.argon2_time,
                    b.argon2_lanes
                ));
            }
        }
        Hash::Sha512Crypt(s) | Hash::Sha256Crypt(s) => {
            let r = sha_rounds(s).ok_or_else(|| "bad SHA-crypt rounds".to_string())?;
            if r > b.sha_rounds {
                return Err(format!(
                    "SHA-crypt rounds {r} over the limit {}",
                    b.sha_rounds
                ));
            }
        }
        Hash::Bcrypt(s) => {
            let cost: u32 = s
                .get(4..6)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| "bad bcrypt cost".to_string())?;
            if cost > b.bcrypt_cost {
                return Err(format!(
                    "bcrypt cost {cost} over the limit {}",
                    b.bcrypt_cost
                ));
            }
        }
        Hash::Plain(_) | Hash::Disabled => {}
    }
    Ok(())
}

fn verify_hash(h: &Hash, password: &[u8]) -> bool {
    match h {
        Hash::Argon2(s) => PasswordHash::new(s)
            .map(|p| Argon2::default().verify_password(password, &p).is_ok())
            .unwrap_or(false),
        // SHA-crypt and bcrypt here take text; a password that is not
        // UTF-8 cannot match a hash made by doveadm or crypt(3) from
        // the same bytes through these crates, so it fails.
        Hash::Sha512Crypt(s) => {
            std::str::from_utf8(password).is_ok_and(|p| sha_crypt::sha512_check(p, s).is_ok())
        }
        Hash::Sha256Crypt(s) => {
            std::str::from_utf8(password).is_ok_and(|p| sha_crypt::sha256_check(p, s).is_ok())
        }
        Hash::Bcrypt(s) => bcrypt::verify(password, s).unwrap_or(false),
        Hash::Plain(p) => constant_time_eq(p, password),
        Hash::Disabled => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PasswdDb {
    #[cfg(test)]
    pub fn load(path: &Path) -> Result<PasswdDb, AuthError> {
        Self::load_with(path, &HashBounds::default())
    }

    pub fn load_with(path: &Path, bounds: &HashBounds) -> Result<PasswdDb, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(path.display().to_string(), e))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |what: String| AuthError::Syntax {
                path: path.display().to_string(),
                line: i + 1,
                what,
            };
            let mut fields = line.split(':');
            let user = fields.next().unwrap_or_default();
            let Some(pw) = fields.next() else {
                return Err(syntax("expected user:hash".into()));
            };
            if user.is_empty() {
                return Err(syntax("empty user name".into()));
            }
            let hash = parse_hash(pw, bounds).map_err(syntax)?;
            users.insert(user.to_string(), hash);
        }
        Ok(PasswdDb {
            users,
            dummy: Hash::Argon2(hash_password(b"not a real password")?),
        })
    }

    /// True when `user` exists and `password` matches.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h, true),
            None => (&self.dummy, false),
        };
        verify_hash(hash, password) && known
    }
}

/// The password file as the server uses it: re-read when it changes,
/// hashes run through the `HashGate` (at most N at once).
pub struct PasswdFile {
    path: PathBuf,
    bounds: HashBounds,
    gate: Arc<HashGate>,
    current: Mutex<(Option<FileStamp>, Arc<PasswdDb>)>,
    hup: HupSeen,
}

impl PasswdFile {
    pub fn open(
        path: &Path,
        bounds: HashBounds,
        gate: Arc<HashGate>,
    ) -> Result<PasswdFile, AuthError> {
        let db = PasswdDb::load_with(path, &bounds)?;
        let st = file_stamp(path);
        Ok(PasswdFile {
            path: path.to_path_buf(),
            bounds,
            gate,
            current: Mutex::new((st, Arc::new(db))),
            hup: HupSeen::default(),
        })
    }

    /// The database, re-read first if the file changed since.
    fn db(&self) -> Arc<PasswdDb> {
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let st = file_stamp(&self.path);
        if self.hup.take() | (st != cur.0) {
            match PasswdDb::load_with(&self.path, &self.bounds) {
                Ok(db) => {
                    tracing::info!(path = %self.path.display(), users = db.users.len(), "password file reloaded");
                    cur.1 = Arc::new(db);
                }
                Err(e) => tracing::error!("{e}; keeping the previous password file"),
            }
            cur.0 = st;
        }
        cur.1.clone()
    }

    /// Runs `f` on the current database once a hashing slot is free
    /// (at most `imapd.max_parallel_hashes` at once). Whatever `f` decides
    /// around its check (lock-outs, failure counts) is decided in turn
    /// with the other logins, not before the wait.
    pub fn gated<T>(&self, f: impl FnOnce(&PasswdDb) -> T) -> T {
        let db = self.db();
        self.gate.run(|| f(&db))
    }
}

pub fn hash_password(password: &[u8]) -> Result<String, AuthError> {
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| AuthError::Hash(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Hash(e.to_string()))
}

/// Splits a SASL PLAIN message (`authzid NUL authcid NUL password`).
/// Returns (user, password); an authzid other than empty or the user is
/// refused (no proxy logins).
pub fn parse_plain(msg: &[u8]) -> Option<(String, Vec<u8>)> {
    let mut it = msg.splitn(3, |&b| b == 0);
    let authz = it.next()?;
    let authc = std::str::from_utf8(it.next()?).ok()?;
    let pass = it.next()?;
    if !authz.is_empty() && authz != authc.as_bytes() {
        return None;
    }
    Some((authc.to_string(), pass.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let h = hash_password(b"s3cret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, format!("# users\nalice:{h}\n")).unwrap();
        let db = PasswdDb::load(&p).unwrap();
        assert!(db.verify("alice", b"s3cret"));
        assert!(!db.verify("alice", b"wrong"));
        assert!(!db.verify("bob", b"s3cret"));
        assert_eq!(
            parse_plain(b"\0alice\0pw"),
            Some(("alice".into(), b"pw".to_vec()))
        );
        assert_eq!(parse_plain(b"bob\0alice\0pw"), None);
    }

    #[test]
    fn costs_over_the_bounds_are_refused() {
        let b = HashBounds::default();
        let big = "{ARGON2ID}$argon2id$v=19$m=4194304,t=3,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(parse_hash(big, &b).unwrap_err().contains("memory"));
        let slow = "{SHA512-CRYPT}$6$rounds=999999999$salt$abc";
        assert!(parse_hash(slow, &b).unwrap_err().contains("rounds"));
        let bf = "{BLF-CRYPT}$2y$31$6MGfXfL52D7OL0C7NsnU/OZ7aPE9SsNQ7daMG//9zvGrHbzoNnLoO";
        assert!(parse_hash(bf, &b).unwrap_err().contains("cost"));
        assert!(parse_hash("{PLAIN}pw", &b).is_err());
        assert!(parse_hash("{MD5}xyz", &b).is_err());
        assert_eq!(parse_hash("", &b), Ok(Hash::Disabled));
    }
}
