//! `.repack.unlink`: the UIDs whose files a repack is about to delete.
//!
//! A repack renames its new index (without the expunged records) into
//! place and only then unlinks the expunged messages' files. Killed in
//! between, it leaves files no record names, which recovery cannot tell
//! from a message whose record was lost, so it keeps them in quarantine.
//! To spare that, the repack first writes the list of UIDs it will
//! unlink (a whole file, fdatasynced, renamed into place) and removes it
//! after the unlinks. Recovery, under the exclusive lock, unlinks a file
//! only when the list names its UID *and* no record does: the UIDs were
//! expunged on purpose, and UIDs are never handed out twice, so a list
//! left over by a repack killed before its rename (the old index still
//! holds those records) or long ago can never name another message.
//!
//! Format: the line `mailstore-repack-unlink 1`, one decimal UID per
//! line, and a last line `crc XXXXXXXX` (CRC32 of everything before it).
//! A list that does not parse is ignored (its files go to quarantine).

use std::collections::HashSet;

use crate::error::Result;
use crate::fsutil::{self, Dir};

pub const NAME: &str = ".repack.unlink";
const MAGIC: &str = "mailstore-repack-unlink 1\n";
/// A list longer than this is not read (a repack of more messages than
/// the index can hold cannot have written it).
const MAX_BYTES: u64 = 11 * crate::format::MAX_RECORDS as u64 + 64;

/// Writes the list (temp, fdatasync when `durable`, rename).
pub fn write(dir: &Dir, uids: &[u32], durable: bool) -> Result<()> {
    let mut text = String::from(MAGIC);
    for u in uids {
        text.push_str(&format!("{u}\n"));
    }
    let crc = crc32fast::hash(text.as_bytes());
    text.push_str(&format!("crc {crc:08x}\n"));
    let tmp = format!("{NAME}.{}", fsutil::unique_suffix());
    dir.replace_file(&tmp, NAME, text.as_bytes(), durable)
}

/// The UIDs of a list left in `dir`; empty when there is none or it does
/// not parse.
pub fn read(dir: &Dir) -> Result<HashSet<u32>> {
    use std::io::Read;
    let file = match dir.open_file(fsutil::os(NAME.as_bytes()), nix::fcntl::OFlag::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(HashSet::new()),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    if file.take(MAX_BYTES).read_to_string(&mut text).is_err() {
        return Ok(HashSet::new());
    }
    Ok(parse(&text).unwrap_or_default())
}

fn parse(text: &str) -> Option<HashSet<u32>> {
    let body = text.strip_prefix(MAGIC)?;
    let at = text.trim_end_matches('\n').rfind('\n')? + 1;
    let crc_line = text[at..].trim_end();
    let crc = u32::from_str_radix(crc_line.strip_prefix("crc ")?, 16).ok()?;
    if crc32fast::hash(&text.as_bytes()[..at]) != crc {
        return None;
    }
    body[..at - MAGIC.len()]
        .lines()
        .map(|l| l.parse().ok())
        .collect()
}

/// Removes the list (no fsync: a list left behind names only files that
/// are gone or expunged).
pub fn remove(dir: &Dir) -> Result<()> {
    dir.unlink(fsutil::os(NAME.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let t = tempfile::tempdir().unwrap();
        let dir = Dir::open_root(t.path()).unwrap();
        assert!(read(&dir).unwrap().is_empty());
        write(&dir, &[3, 7, 4_000_000_000], false).unwrap();
        assert_eq!(read(&dir).unwrap(), HashSet::from([3, 7, 4_000_000_000]));
        let path = t.path().join(NAME);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replace("7\n", "8\n")).unwrap();
        assert!(read(&dir).unwrap().is_empty(), "a changed list is ignored");
        remove(&dir).unwrap();
        assert!(read(&dir).unwrap().is_empty());
    }
}
