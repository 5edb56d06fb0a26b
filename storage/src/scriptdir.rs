//! A user's Sieve script directory (`USER/.sieve/`, docs/FORMAT.md §9) as
//! every writer uses it: `sieve-check put`/`activate` and the ManageSieve
//! server. Small files replaced whole (temporary file, fdatasync, rename,
//! directory fsync), so a reader sees the old or the new content and which
//! script is active changes in one rename; nothing below the spool root is
//! followed if it is a symlink. File names are the caller's (the Sieve
//! layout and name rules are `sieve::layout`); this module only does the
//! I/O.

use std::io::Read;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{Dir, os, unique_suffix};

/// A per-user directory of scripts (e.g. Sieve), opened without following
/// symbolic links; files in it are replaced whole (temp, fsync, rename).
pub struct ScriptDir {
    dir: Dir,
}

impl ScriptDir {
    /// Opens `spool/user/sub` (`user` a user's directory name in the
    /// spool, which must exist), creating `sub` (0700) when `create`;
    /// `None` when it does not exist and `create` is false. Neither `user`
    /// nor `sub` is followed if it is a symlink.
    pub fn open(spool: &Path, user: &str, sub: &str, create: bool) -> Result<Option<ScriptDir>> {
        let home = Dir::open_root(spool)?.open_dir(os(user.as_bytes()))?;
        let name = os(sub.as_bytes());
        if create {
            if home.mkdir(name)? {
                home.fsync()?;
            }
        } else if !home.exists(name)? {
            return Ok(None);
        }
        Ok(Some(ScriptDir {
            dir: home.open_dir(name)?,
        }))
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.dir.path
    }

    /// Replaces (or creates) `name` with `bytes` in one step, durably.
    pub fn replace(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let tmp = format!(".{name}.tmp.{}", unique_suffix());
        self.dir.replace_file(&tmp, name, bytes, true)?;
        self.dir.fsync()
    }

    /// The content of `name`, at most `max` bytes (`Err` when larger);
    /// `None` when it does not exist.
    pub fn read(&self, name: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let f = match self.dir.open_file(os(name.as_bytes()), OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let path = self.dir.child_path(os(name.as_bytes()));
        let mut out = Vec::new();
        f.take(max + 1)
            .read_to_end(&mut out)
            .map_err(|e| Error::io("read", &path, e))?;
        if out.len() as u64 > max {
            return Err(Error::io(
                "read",
                &path,
                std::io::Error::other(format!("larger than {max} bytes")),
            ));
        }
        Ok(Some(out))
    }

    /// The size of `name`; `None` when it does not exist.
    pub fn size(&self, name: &str) -> Result<Option<u64>> {
        self.dir.size(os(name.as_bytes()))
    }

    /// The names of the regular files here (UTF-8 names only).
    pub fn files(&self) -> Result<Vec<String>> {
        Ok(self
            .dir
            .entries()?
            .into_iter()
            .filter(|(_, t)| matches!(t, None | Some(nix::dir::Type::File)))
            .filter_map(|(n, _)| String::from_utf8(n).ok())
            .collect())
    }

    /// Gives `from` the second name `to`; false (nothing done) when `to`
    /// exists.
    pub fn link(&self, from: &str, to: &str) -> Result<bool> {
        let made = self
            .dir
            .link_no_replace(os(from.as_bytes()), &self.dir, os(to.as_bytes()))?;
        if made {
            self.dir.fsync()?;
        }
        Ok(made)
    }

    /// Removes `name` (absent: nothing to do), durably.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.dir.unlink(os(name.as_bytes()))?;
        self.dir.fsync()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_read_link_remove() {
        let spool = tempfile::tempdir().unwrap();
        let home = spool.path().join("alice");
        std::fs::create_dir(&home).unwrap();
        let open = |user: &str, create: bool| ScriptDir::open(spool.path(), user, ".sieve", create);
        assert!(open("alice", false).unwrap().is_none());
        let d = open("alice", true).unwrap().unwrap();
        d.replace("a.sieve", b"keep;").unwrap();
        d.replace("a.sieve", b"discard;").unwrap();
        assert_eq!(d.read("a.sieve", 100).unwrap().unwrap(), b"discard;");
        assert!(d.read("a.sieve", 3).is_err());
        assert_eq!(d.read("b.sieve", 100).unwrap(), None);
        assert!(d.link("a.sieve", "b.sieve").unwrap());
        assert!(!d.link("a.sieve", "b.sieve").unwrap());
        d.remove("a.sieve").unwrap();
        assert_eq!(d.files().unwrap(), vec!["b.sieve".to_string()]);
        assert_eq!(d.size("b.sieve").unwrap(), Some(8));
        // A symlink is never followed.
        std::os::unix::fs::symlink(home.join(".sieve/b.sieve"), d.path().join("l")).unwrap();
        assert!(d.read("l", 100).is_err());
        std::os::unix::fs::symlink(&home, spool.path().join("bob")).unwrap();
        assert!(open("bob", true).is_err());
    }
}
