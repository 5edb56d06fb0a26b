//! Password file: one `user:PHC-string` line per user (Argon2id hashes
//! from the `argon2` crate). Secrets never reach a log line.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read password file {0}: {1}")]
    Read(String, std::io::Error),
    #[error("password file {path} line {line}: {what}")]
    Syntax {
        path: String,
        line: usize,
        what: &'static str,
    },
    #[error("cannot hash password: {0}")]
    Hash(String),
}

pub struct PasswdDb {
    users: HashMap<String, String>,
    /// Verified against when the user is unknown, so timing does not tell
    /// which users exist.
    dummy: String,
}

impl PasswdDb {
    pub fn load(path: &Path) -> Result<PasswdDb, AuthError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AuthError::Read(path.display().to_string(), e))?;
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let syntax = |what| AuthError::Syntax {
                path: path.display().to_string(),
                line: i + 1,
                what,
            };
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| syntax("expected user:hash"))?;
            PasswordHash::new(hash).map_err(|_| syntax("not a PHC hash string"))?;
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(PasswdDb {
            users,
            dummy: hash_password(b"not a real password")?,
        })
    }

    /// True when `user` exists and `password` matches.
    pub fn verify(&self, user: &str, password: &[u8]) -> bool {
        let (hash, known) = match self.users.get(user) {
            Some(h) => (h.as_str(), true),
            None => (self.dummy.as_str(), false),
        };
        let ok = PasswordHash::new(hash)
            .map(|h| Argon2::default().verify_password(password, &h).is_ok())
            .unwrap_or(false);
        ok && known
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
}
