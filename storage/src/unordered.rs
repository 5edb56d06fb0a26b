//! Unordered appends (format version 3, PROTOCOL.md §3): an append whose
//! small messages and index pages become durable with one flush instead
//! of two. Until that flush returns, a power loss may keep the records
//! and lose the bytes they describe, so:
//! - a reader trusts a slot flagged [`HF_UNORDERED`] only once each
//!   appended message of at most [`UNORDERED_MAX_SIZE`] bytes is found,
//!   as `UID.` or under its staged name, with the record's size and
//!   CRC32 ([`first_missing`]); otherwise that commit never finished and
//!   the older slot is current, exactly like an append whose records did
//!   not reach the disk;
//! - the writer holds the writer mark through the flush, and a locker
//!   that finds a dead writer's mark on an unordered slot makes its
//!   messages durable before anything is built on it ([`make_durable`]).
//!
//! [`HF_UNORDERED`]: crate::format::HF_UNORDERED

use std::fs::File;
use std::path::Path;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::format::{Record, UNORDERED_MAX_SIZE};
use crate::fsutil::{self, Dir};
use crate::layout::{STAGE_DIR, message_file_name};

/// Records whose bytes a reader checks: the others were flushed before
/// their commit began.
fn checked(r: &Record) -> bool {
    r.size <= UNORDERED_MAX_SIZE
}

fn holds(f: &File, path: &Path, r: &Record) -> Result<bool> {
    let meta = f.metadata().map_err(|e| Error::io("stat", path, e))?;
    Ok(meta.is_file()
        && meta.len() == r.size
        && crate::fsutil::crc_of_file(f, path)? == r.message_crc)
}

/// Opens `name` in `dir`; `None` if it does not exist.
fn open_if_present(dir: &Dir, name: &[u8]) -> Result<Option<File>> {
    match dir.open_file(fsutil::os(name), OFlag::O_RDONLY) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether `UID.` holds the record's message (its size and CRC32).
pub(crate) fn on_disk_as_recorded(dir: &Dir, r: &Record) -> Result<bool> {
    let name = message_file_name(r.uid);
    let path = dir.child_path(fsutil::os(name.as_bytes()));
    match open_if_present(dir, name.as_bytes())? {
        Some(f) => holds(&f, &path, r),
        None => Ok(false),
    }
}

/// A message of an unordered append that is not on disk as its record
/// describes it.
pub struct Missing {
    /// Its position among the records passed in.
    pub index: usize,
    pub why: String,
    /// What is on disk is what a power cut during the commit's flush
    /// leaves (`torn_like`); otherwise it is damage after the fact.
    pub torn: bool,
}

/// The first of `records` (an unordered append's) whose message is not
/// on disk as the record describes it. A message whose `UID.` name is
/// missing counts as present when `.stage` holds a file with its size and
/// CRC32 (its staged name; recovery links it back).
pub fn first_missing(dir: &Dir, records: &[Record]) -> Result<Option<Missing>> {
    let mut stage: Option<Option<Dir>> = None;
    for (i, r) in records.iter().enumerate() {
        if !checked(r) {
            continue;
        }
        if on_disk_as_recorded(dir, r)? {
            continue;
        }
        let stage =
            stage.get_or_insert_with(|| dir.open_dir(fsutil::os(STAGE_DIR.as_bytes())).ok());
        if let Some(stage) = stage
            && staged_copy(stage, r)?
        {
            continue;
        }
        let (torn, seen) = torn_like(dir, r)?;
        return Ok(Some(Missing {
            index: i,
            why: format!(
                "message of UID {} ({} bytes, CRC32 {:08x}) is not on disk: {seen}",
                r.uid, r.size, r.message_crc
            ),
            torn,
        }));
    }
    Ok(None)
}

/// Whether `UID.`, which does not hold the record's message, looks like
/// what a power cut during the commit's flush leaves of it: no file, an
/// empty or shorter one, or one with a block of zeros (data blocks that
/// never reached the disk read as zeros). A file of the right size, or
/// longer, whose bytes simply differ is damage: a flush that never
/// returned does not write other bytes. (A filesystem that exposes stale
/// blocks after a crash, ext4 without a journal, can leave that too; it
/// is then reported as damage, and writes wait for `idx-admin
/// reconstruct` rather than guess.) Also says what was seen.
fn torn_like(dir: &Dir, r: &Record) -> Result<(bool, String)> {
    let name = message_file_name(r.uid);
    let path = dir.child_path(fsutil::os(name.as_bytes()));
    let Some(f) = open_if_present(dir, name.as_bytes())? else {
        return Ok((true, "no file".into()));
    };
    let len = f.metadata().map_err(|e| Error::io("stat", &path, e))?.len();
    if len > r.size {
        return Ok((false, format!("the file has {len} bytes")));
    }
    if len < r.size {
        return Ok((true, format!("the file has {len} bytes")));
    }
    const BLOCK: usize = 4096;
    let mut buf = vec![0u8; BLOCK];
    let mut off = 0u64;
    while off < len {
        let n = fsutil::read_at_most(&f, &mut buf, off, &path)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().all(|b| *b == 0) {
            return Ok((true, format!("zeros at byte {off}")));
        }
        off += n as u64;
    }
    Ok((false, "the file has other bytes (CRC32 differs)".into()))
}

fn staged_copy(stage: &Dir, r: &Record) -> Result<bool> {
    for (name, _) in stage.entries()? {
        let Some(f) = open_if_present(stage, &name)? else {
            continue;
        };
        if holds(&f, &stage.child_path(fsutil::os(&name)), r)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Makes the messages of `records` durable, with every name they have:
/// for a locker that found a dead writer's mark on an unordered slot (the
/// writer may have died before its flush). Each `UID.` file and every
/// staged file is fdatasynced, then both directories.
pub fn make_durable(dir: &Dir, records: &[Record]) -> Result<()> {
    for r in records.iter().filter(|r| checked(r)) {
        let name = message_file_name(r.uid);
        if let Some(f) = open_if_present(dir, name.as_bytes())? {
            fsutil::fdatasync(&f, &dir.child_path(fsutil::os(name.as_bytes())))?;
        }
    }
    if let Ok(stage) = dir.open_dir(fsutil::os(STAGE_DIR.as_bytes())) {
        for (name, _) in stage.entries()? {
            if let Some(f) = open_if_present(&stage, &name)? {
                fsutil::fdatasync(&f, &stage.child_path(fsutil::os(&name)))?;
            }
        }
        stage.fsync()?;
    }
    dir.fsync()
}
