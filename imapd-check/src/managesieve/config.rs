//! The ManageSieve keys of the server's configuration: `imapd.managesieve_*`
//! in the same file as the IMAP keys (one process serves both, so one
//! password file, TLS certificate, set of limits and timeouts), listed in
//! docs/OPERATIONS.md §6b.

use std::net::SocketAddr;

use sieve::layout::MAX_SCRIPT_FILE;

use crate::imap::config::{addrs, positive, size};

#[derive(Clone, Debug)]
pub struct ManageSieveConfig {
    /// Where ManageSieve listens (STARTTLS offered when TLS is
    /// configured); empty: no ManageSieve.
    pub listen: Vec<SocketAddr>,
    /// Most scripts one user may have (QUOTA/MAXSCRIPTS).
    pub max_scripts: usize,
    /// Largest script (QUOTA/MAXSIZE); never over the store's 1 MiB.
    pub max_script_size: u64,
    /// Most bytes of scripts one user may have in all (QUOTA).
    pub max_storage: u64,
}

impl Default for ManageSieveConfig {
    fn default() -> Self {
        ManageSieveConfig {
            listen: Vec::new(),
            max_scripts: 20,
            max_script_size: 256 * 1024,
            max_storage: MAX_SCRIPT_FILE,
        }
    }
}

impl ManageSieveConfig {
    /// One `imapd.managesieve_*` key (`k` without the `imapd.` prefix).
    pub fn set(&mut self, k: &str, v: &str) -> Result<(), String> {
        match k {
            "managesieve_listen" => self.listen = addrs(v)?,
            "managesieve_max_scripts" => self.max_scripts = positive(v)? as usize,
            "managesieve_max_script_size" => {
                self.max_script_size = size(v)?.min(MAX_SCRIPT_FILE);
            }
            "managesieve_max_storage" => self.max_storage = size(v)?,
            _ => return Err("unknown key (see docs/OPERATIONS.md)".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let mut c = ManageSieveConfig::default();
        c.set("managesieve_listen", "127.0.0.1:4190").unwrap();
        c.set("managesieve_max_scripts", "3").unwrap();
        c.set("managesieve_max_script_size", "64M").unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.max_scripts, 3);
        assert_eq!(c.max_script_size, MAX_SCRIPT_FILE);
        assert!(c.set("managesieve_max_scripts", "0").is_err());
        assert!(c.set("managesieve_listne", "x").is_err());
    }
}
