//! The walk over a user's mailbox directories: which subdirectories are
//! mailbox components, which of them hold a live index, in name order of
//! the directories (callers sort). Below the store, COPY/MOVE's search
//! for a renamed mailbox and the special-use listing, which all walk.

use crate::error::Result;
use crate::fsutil::{self, Dir};
use crate::index::IndexFile;
use crate::layout::{STAGE_DIR, parse_message_file_name};
use crate::names::MailboxName;

/// Child directories that are mailbox components (not store entries).
pub(crate) fn child_dirs(dir: &Dir) -> Result<Vec<Vec<u8>>> {
    child_dirs_on(dir, &mut fsutil::SubdirCounts::default())
}

/// [`child_dirs`], remembering in `fs` whether the filesystem counts
/// subdirectories (asked once per device in a walk).
fn child_dirs_on(dir: &Dir, fs: &mut fsutil::SubdirCounts) -> Result<Vec<Vec<u8>>> {
    // Every mailbox directory has a staging directory and may have a
    // quarantine; when the link count says that is all, reading the
    // (large) directory would find no child.
    if !fs.may_have_other_subdirs(dir, &[STAGE_DIR, crate::quarantine::QUARANTINE_DIR]) {
        return Ok(Vec::new());
    }
    Ok(dir
        .entries()?
        .into_iter()
        .filter(|(n, _)| !n.starts_with(b".") && parse_message_file_name(n).is_none())
        // The type the directory reports (a symlink is not a directory);
        // a stat only where it reports none.
        .filter(|(n, t)| match t {
            Some(t) => *t == nix::dir::Type::Directory,
            None => dir.is_dir(fsutil::os(n)),
        })
        .map(|(n, _)| n)
        .collect())
}

pub(crate) fn walk(
    dir: &Dir,
    path: &mut Vec<String>,
    out: &mut Vec<MailboxName>,
    depth: usize,
) -> Result<()> {
    walk_with(dir, path, depth, &mut |mb, _| {
        out.push(mb);
        Ok(())
    })
}

/// Walks the mailboxes below `dir`, calling `f` with each live mailbox's
/// name and its open directory.
pub(crate) fn walk_with(
    dir: &Dir,
    path: &mut Vec<String>,
    depth: usize,
    f: &mut dyn FnMut(MailboxName, &Dir) -> Result<()>,
) -> Result<()> {
    walk_on(dir, path, depth, &mut fsutil::SubdirCounts::default(), f)
}

fn walk_on(
    dir: &Dir,
    path: &mut Vec<String>,
    depth: usize,
    fs: &mut fsutil::SubdirCounts,
    f: &mut dyn FnMut(MailboxName, &Dir) -> Result<()>,
) -> Result<()> {
    if depth > crate::names::MAX_DEPTH {
        return Ok(());
    }
    for name in child_dirs_on(dir, fs)? {
        let Ok(s) = String::from_utf8(name.clone()) else {
            continue;
        };
        path.push(s);
        let parts: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
        if let Some(mb) = MailboxName::from_encoded(&parts) {
            // A symlinked directory is refused by open_dir, so never walked.
            if let Ok(child) = dir.open_dir(fsutil::os(&name)) {
                if holds_live_index(&child)? {
                    f(mb, &child)?;
                }
                walk_on(&child, path, depth + 1, fs, f)?;
            }
        }
        path.pop();
    }
    Ok(())
}

/// Whether `dir` holds an index whose header is not marked DELETED: the
/// newest valid header slot, read with one `pread` (no record is read,
/// so no length check or second directory descriptor is needed).
pub(crate) fn holds_live_index(dir: &Dir) -> Result<bool> {
    match IndexFile::open_bare(dir) {
        Ok(idx) => Ok(!idx.newest_header()?.is_deleted()),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
