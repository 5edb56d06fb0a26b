//! `.quarantine/`: where recovery puts files it will not serve and will
//! not delete.
//!
//! The store's rule is that files win over the index: a file that may
//! hold a complete message is never unlinked on a guess. Recovery still
//! has to clear the names such files sit on (a `UID.` name above
//! `last_uid` is handed out again; an unowned staged file would be judged
//! again at every settle), so it *moves* them here with one `renameat`
//! inside the mailbox directory, and `idx-inspect verify` lists what is
//! here until a postmaster restores (`idx-admin quarantine restore`,
//! which appends the bytes as a new message) or purges it.
//!
//! A quarantined file's name is `TIME.UNIQUE.REASON.ORIGINAL`: the Unix
//! time it was moved, a per-process unique suffix, one of the
//! [`Reason`] words, and the name it had (`UID.` or `stage-NAME`). Nothing
//! reads the name back except listings; the bytes are the file's own.

use std::ffi::OsStr;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};

/// The directory inside a mailbox.
pub const QUARANTINE_DIR: &str = ".quarantine";

/// Why a file was moved aside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A `UID.` file above the header's `last_uid`: an append that never
    /// committed (or whose commit a power cut tore).
    Uncommitted,
    /// A `UID.` file at or below `last_uid` that no record names: a repack
    /// killed between its rename and its unlinks, or a record lost to
    /// corruption that reconstruct could not tie to this file.
    Orphan,
    /// A file at a `UID.` name that a restore or an append had to take:
    /// its bytes differ from what the index says the UID holds.
    Replaced,
    /// A staged file no live writer holds that matches no committed
    /// record: a writer killed before its commit.
    Stage,
}

impl Reason {
    /// The reason's word in quarantined file names.
    pub fn word(self) -> &'static str {
        match self {
            Reason::Uncommitted => "uncommitted",
            Reason::Orphan => "orphan",
            Reason::Replaced => "replaced",
            Reason::Stage => "stage",
        }
    }
}

/// Moves `from_dir/name` into `mailbox/.quarantine/`. The caller makes
/// the move durable (a directory fsync) when a power cut must not bring
/// the old name back, as for every removal of debris (PROTOCOL.md §3).
/// A name that vanished meanwhile is not an error.
pub fn keep(mailbox: &Dir, from_dir: &Dir, name: &OsStr, reason: Reason) -> Result<()> {
    let created = mailbox.mkdir(fsutil::os(QUARANTINE_DIR.as_bytes()))?;
    let q = mailbox.open_dir(fsutil::os(QUARANTINE_DIR.as_bytes()))?;
    if created {
        mailbox.fsync()?;
    }
    let original = if from_dir.path == mailbox.path {
        name.to_string_lossy().into_owned()
    } else {
        format!("stage-{}", name.to_string_lossy())
    };
    let target = format!(
        "{}.{}.{}.{}",
        fsutil::now(),
        fsutil::unique_suffix(),
        reason.word(),
        original
    );
    match from_dir.rename(name, &q, fsutil::os(target.as_bytes())) {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
    }
    tracing::warn!(
        from = %from_dir.child_path(name).display(),
        to = %q.child_path(fsutil::os(target.as_bytes())).display(),
        reason = reason.word(),
        "moved a file the index does not account for into quarantine"
    );
    Ok(())
}

/// Links `from_dir/from` to `mailbox/to` (a `UID.` name). A file already
/// at `to` is moved into quarantine first (never unlinked: it may hold a
/// message), and with `durable` its removal from `to` is made durable
/// before the new link is made, so that a power cut cannot bring it back
/// under a name the index now gives another message (PROTOCOL.md §3,
/// debris).
pub fn link_taking(
    from_dir: &Dir,
    from: &OsStr,
    mailbox: &Dir,
    to: &OsStr,
    reason: Reason,
    durable: bool,
) -> Result<()> {
    for _ in 0..3 {
        if from_dir.link_no_replace(from, mailbox, to)? {
            return Ok(());
        }
        keep(mailbox, mailbox, to, reason)?;
        if durable {
            mailbox.fsync()?;
        }
    }
    Err(Error::nix(
        "link",
        mailbox.child_path(to),
        nix::Error::EEXIST,
    ))
}

/// One quarantined file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its name inside `.quarantine/`.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Unix seconds when it was moved here (from its name; 0 if unknown).
    pub since: i64,
    /// The reason word, as written by [`keep`].
    pub reason: String,
    /// The name it had before.
    pub original: String,
}

/// What is in a mailbox's quarantine, oldest first. Empty when there is
/// no `.quarantine/`.
pub fn list(mailbox: &Dir) -> Result<Vec<Entry>> {
    let q = match mailbox.open_dir(fsutil::os(QUARANTINE_DIR.as_bytes())) {
        Ok(q) => q,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (name, _) in q.entries()? {
        let os = fsutil::os(&name);
        let Some(size) = q.size(os)? else { continue };
        let text = String::from_utf8_lossy(&name).into_owned();
        let mut parts = text.splitn(5, '.');
        let since = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        // PID and counter of the unique suffix.
        let _ = (parts.next(), parts.next());
        let reason = parts.next().unwrap_or("").to_string();
        let original = parts.next().unwrap_or("").to_string();
        out.push(Entry {
            name: text,
            size,
            since,
            reason,
            original,
        });
    }
    out.sort_by(|a, b| (a.since, &a.name).cmp(&(b.since, &b.name)));
    Ok(out)
}

/// Opens a quarantined file for reading; `name` must be one [`list`]
/// returned (no path separators).
pub fn open(mailbox: &Dir, name: &str) -> Result<std::fs::File> {
    check_name(name)?;
    let q = mailbox.open_dir(fsutil::os(QUARANTINE_DIR.as_bytes()))?;
    q.open_file(fsutil::os(name.as_bytes()), nix::fcntl::OFlag::O_RDONLY)
}

/// Removes one quarantined file (after a restore, or a postmaster's purge).
pub fn remove(mailbox: &Dir, name: &str) -> Result<()> {
    check_name(name)?;
    let q = mailbox.open_dir(fsutil::os(QUARANTINE_DIR.as_bytes()))?;
    q.unlink(fsutil::os(name.as_bytes()))
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::InvalidName {
            kind: "quarantined file",
            name: name.to_string(),
            reason: "not a name inside .quarantine",
        });
    }
    Ok(())
}
