//! One user's scripts as ManageSieve sees them (RFC 5804 sections 2.6 to
//! 2.11), over the store's script directory (`storage::scriptdir`, the
//! layout of docs/FORMAT.md §9 shared with `deliver` and `sieve-check`):
//! every script replaced whole, the active one switched by one rename of
//! `active`, a rename that never replaces and never leaves `active`
//! naming a missing script, and the per-user quotas.
//!
//! Writes of this process are serialized (one lock), so two sessions of
//! one user cannot both pass a quota check and together exceed it.

use std::path::PathBuf;
use std::sync::Mutex;

use sieve::layout::{
    ACTIVE_FILE, EXTENSION, MAX_ACTIVE_FILE, MAX_SCRIPT_FILE, SIEVE_DIR, active_name, script_file,
};
use storage::scriptdir::ScriptDir;

use super::config::ManageSieveConfig;

/// Why a script operation was refused (each maps to a response code).
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("There is no script by that name")]
    NonExistent,
    #[error("A script by that name already exists")]
    AlreadyExists,
    #[error("The active script cannot be deleted")]
    Active,
    #[error("Too many scripts (at most {0})")]
    MaxScripts(usize),
    #[error("Script too large (at most {0} bytes)")]
    MaxSize(u64),
    #[error("Not enough space for scripts (at most {0} bytes in all)")]
    Storage(u64),
    #[error("store: {0}")]
    Io(#[from] storage::Error),
}

static WRITES: Mutex<()> = Mutex::new(());

fn write_lock() -> std::sync::MutexGuard<'static, ()> {
    WRITES.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Scripts {
    spool: PathBuf,
    /// The user's directory name in the spool.
    user: String,
    max_scripts: usize,
    max_script_size: u64,
    max_storage: u64,
}

impl Scripts {
    pub fn new(spool: PathBuf, user: String, cfg: &ManageSieveConfig) -> Scripts {
        Scripts {
            spool,
            user,
            max_scripts: cfg.max_scripts,
            max_script_size: cfg.max_script_size.min(MAX_SCRIPT_FILE),
            max_storage: cfg.max_storage,
        }
    }

    pub fn max_script_size(&self) -> u64 {
        self.max_script_size
    }

    fn dir(&self, create: bool) -> Result<Option<ScriptDir>, ScriptError> {
        Ok(ScriptDir::open(&self.spool, &self.user, SIEVE_DIR, create)?)
    }

    fn active_in(dir: &ScriptDir) -> Result<Option<String>, ScriptError> {
        Ok(dir
            .read(ACTIVE_FILE, MAX_ACTIVE_FILE)?
            .and_then(|b| active_name(&b)))
    }

    /// Script names (sorted) and their sizes.
    fn list_in(dir: &ScriptDir) -> Result<Vec<(String, u64)>, ScriptError> {
        let mut out = Vec::new();
        for f in dir.files()? {
            let Some(n) = f.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            if !sieve::layout::valid_script_name(n) {
                continue;
            }
            if let Some(size) = dir.size(&f)? {
                out.push((n.to_string(), size));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every script, with whether it is the active one.
    pub fn list(&self) -> Result<Vec<(String, bool)>, ScriptError> {
        let Some(dir) = self.dir(false)? else {
            return Ok(Vec::new());
        };
        let active = Self::active_in(&dir)?;
        Ok(Self::list_in(&dir)?
            .into_iter()
            .map(|(n, _)| {
                let a = Some(&n) == active.as_ref();
                (n, a)
            })
            .collect())
    }

    pub fn get(&self, name: &str) -> Result<Vec<u8>, ScriptError> {
        let dir = self.dir(false)?.ok_or(ScriptError::NonExistent)?;
        dir.read(&script_file(name), MAX_SCRIPT_FILE)?
            .ok_or(ScriptError::NonExistent)
    }

    /// Whether `name` of `size` bytes would fit (RFC 5804 2.5).
    fn check_space(
        &self,
        dir: Option<&ScriptDir>,
        name: &str,
        size: u64,
    ) -> Result<(), ScriptError> {
        if size > self.max_script_size {
            return Err(ScriptError::MaxSize(self.max_script_size));
        }
        let list = match dir {
            Some(d) => Self::list_in(d)?,
            None => Vec::new(),
        };
        let existing = list.iter().find(|(n, _)| n == name).map(|(_, s)| *s);
        if existing.is_none() && list.len() >= self.max_scripts {
            return Err(ScriptError::MaxScripts(self.max_scripts));
        }
        let total: u64 = list.iter().map(|(_, s)| s).sum::<u64>() - existing.unwrap_or(0) + size;
        if total > self.max_storage {
            return Err(ScriptError::Storage(self.max_storage));
        }
        Ok(())
    }

    pub fn have_space(&self, name: &str, size: u64) -> Result<(), ScriptError> {
        let dir = self.dir(false)?;
        self.check_space(dir.as_ref(), name, size)
    }

    /// Stores `name` (new or replacing the old content in one step).
    pub fn put(&self, name: &str, content: &[u8]) -> Result<(), ScriptError> {
        let _w = write_lock();
        let dir = self.dir(true)?.ok_or(ScriptError::NonExistent)?;
        self.check_space(Some(&dir), name, content.len() as u64)?;
        dir.replace(&script_file(name), content)?;
        Ok(())
    }

    /// Makes `name` the active script, or none (`None`).
    pub fn set_active(&self, name: Option<&str>) -> Result<(), ScriptError> {
        let _w = write_lock();
        let dir = self.dir(true)?.ok_or(ScriptError::NonExistent)?;
        let line = match name {
            Some(n) => {
                if dir.size(&script_file(n))?.is_none() {
                    return Err(ScriptError::NonExistent);
                }
                format!("{n}\n")
            }
            None => String::new(),
        };
        dir.replace(ACTIVE_FILE, line.as_bytes())?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<(), ScriptError> {
        let _w = write_lock();
        let dir = self.dir(false)?.ok_or(ScriptError::NonExistent)?;
        if dir.size(&script_file(name))?.is_none() {
            return Err(ScriptError::NonExistent);
        }
        if Self::active_in(&dir)?.as_deref() == Some(name) {
            return Err(ScriptError::Active);
        }
        dir.remove(&script_file(name))?;
        Ok(())
    }

    /// Renames `old` to `new` (never over an existing script); the active
    /// script stays active under its new name. The new name is made
    /// (hard link) before `active` names it and the old one goes only
    /// after, so a delivery always finds the script `active` names.
    pub fn rename(&self, old: &str, new: &str) -> Result<(), ScriptError> {
        let _w = write_lock();
        let dir = self.dir(false)?.ok_or(ScriptError::NonExistent)?;
        if dir.size(&script_file(old))?.is_none() {
            return Err(ScriptError::NonExistent);
        }
        if old == new {
            return Err(ScriptError::AlreadyExists);
        }
        if !dir.link(&script_file(old), &script_file(new))? {
            return Err(ScriptError::AlreadyExists);
        }
        if Self::active_in(&dir)?.as_deref() == Some(old) {
            dir.replace(ACTIVE_FILE, format!("{new}\n").as_bytes())?;
        }
        dir.remove(&script_file(old))?;
        Ok(())
    }
}
