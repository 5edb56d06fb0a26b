//! IMAP `\Recent` (RFC 3501 2.3.2): which session is the first to be told
//! of a message.
//!
//! A message is `\Recent` in exactly one session: the first read-write
//! session (SELECT) that learns of it claims it. The claim is one number
//! per mailbox, the highest UID already claimed (Cyrus keeps the same
//! number, `recentuid`, in its index header; Dovecot's is
//! `first_recent_uid`). It lives in its own small file `.recent`
//! (docs/FORMAT.md §8), changed under its own OFD lock, never under the
//! index lock and never as part of a commit: nothing the store
//! acknowledges depends on it. Repack and reconstruct keep UIDs and the
//! UIDVALIDITY, so they leave it valid; a mailbox recreated with a new
//! UIDVALIDITY makes the old value void.
//!
//! **Missing, torn or damaged means "nothing claimed".** The file is never
//! fsynced; after a crash or power loss it may be absent, older, or (a torn
//! 16-byte write) fail its CRC. Every such case reads as 0: the next SELECT
//! sees every message as `\Recent` again. That is a visible flag shown
//! twice, never a message lost or a UID reused, and it is the state of a
//! mailbox that never had the file (the mailbox of a new user, or one
//! written by a version before this file existed). A damaged file is
//! logged with its offset and rewritten by the next claim.

use std::os::fd::AsFd;
use std::sync::Arc;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::lock::{LockGuard, LockKind};
use crate::mailbox::Mailbox;

/// The file's name in the mailbox directory.
pub const RECENT_NAME: &str = ".recent";
/// `MSRECENT`, version 1.
const MAGIC: &[u8; 8] = b"MSRECNT1";
/// magic 8, uidvalidity 4, recent_uid 4, crc 4.
pub const RECENT_LEN: usize = 20;

/// The decoded file: the highest UID claimed under `uidvalidity`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecentState {
    /// The UIDVALIDITY the claim belongs to.
    pub uidvalidity: u32,
    /// The highest UID claimed as `\\Recent` by a session.
    pub recent_uid: u32,
}

impl RecentState {
    /// The file's bytes, with the CRC.
    pub fn encode(&self) -> [u8; RECENT_LEN] {
        let mut b = [0u8; RECENT_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&self.uidvalidity.to_le_bytes());
        b[12..16].copy_from_slice(&self.recent_uid.to_le_bytes());
        let crc = crc32fast::hash(&b[..16]);
        b[16..20].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes the file's bytes; `Err((offset, what))` names the first
    /// thing wrong. An empty file is "nothing claimed" (`Ok(None)`).
    pub fn decode(b: &[u8]) -> std::result::Result<Option<RecentState>, (u64, &'static str)> {
        if b.is_empty() {
            return Ok(None);
        }
        if b.len() != RECENT_LEN {
            return Err((b.len().min(RECENT_LEN) as u64, "wrong length"));
        }
        if &b[..8] != MAGIC {
            return Err((0, "bad magic"));
        }
        let crc = u32::from_le_bytes(b[16..20].try_into().expect("4 bytes"));
        if crc != crc32fast::hash(&b[..16]) {
            return Err((16, "CRC mismatch"));
        }
        Ok(Some(RecentState {
            uidvalidity: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            recent_uid: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
        }))
    }
}

/// The highest UID claimed under `uidvalidity` from the file's bytes: 0
/// when missing, empty, damaged (logged) or of another UIDVALIDITY.
fn claimed_in(bytes: &[u8], uidvalidity: u32, path: &std::path::Path) -> u32 {
    match RecentState::decode(bytes) {
        Ok(Some(s)) if s.uidvalidity == uidvalidity => s.recent_uid,
        Ok(_) => 0,
        Err((offset, what)) => {
            let e = Error::corrupt(path, offset, what);
            tracing::warn!("{e}; treating every message as not yet claimed as \\Recent");
            0
        }
    }
}

fn read_all(f: &std::fs::File, path: &std::path::Path) -> Result<Vec<u8>> {
    // One byte more than a valid file: a longer file is damage, and
    // nothing larger is ever read.
    let mut buf = vec![0u8; RECENT_LEN + 1];
    let n = fsutil::read_at_most(f, &mut buf, 0, path)?;
    buf.truncate(n);
    Ok(buf)
}

impl Mailbox {
    /// The highest UID already claimed as `\Recent` under `uidvalidity`,
    /// without claiming anything (EXAMINE, STATUS): messages above it are
    /// `\Recent` to whoever claims them next. Takes the file's lock shared.
    pub fn recent_claimed(&self, uidvalidity: u32) -> Result<u32> {
        let name = fsutil::os(RECENT_NAME.as_bytes());
        let path = self.dir().child_path(name);
        let f = match self.dir().open_file(name, OFlag::O_RDONLY) {
            Ok(f) => Arc::new(f),
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e),
        };
        let _lock = LockGuard::acquire(f.clone(), LockKind::Shared, self.lock_timeout, &path)?;
        let bytes = read_all(&f, &path)?;
        Ok(claimed_in(&bytes, uidvalidity, &path))
    }

    /// Claims every UID up to `up_to` for the calling session (SELECT, and
    /// a selected session learning of new messages). Returns the highest
    /// UID claimed before: the caller's `\Recent` messages are those in
    /// `(returned, up_to]` (none when the result is `>= up_to`). Changes
    /// the file only when `up_to` is above what it holds. Never fsynced
    /// (see the module documentation).
    pub fn recent_claim(&self, uidvalidity: u32, up_to: u32) -> Result<u32> {
        let name = fsutil::os(RECENT_NAME.as_bytes());
        let path = self.dir().child_path(name);
        let f = Arc::new(self.dir().open_file(name, OFlag::O_RDWR | OFlag::O_CREAT)?);
        // One delivery wakes every session idling on the mailbox, and all
        // but the first find it claimed already. They are answered from a
        // read without the lock instead of queueing one by one for the
        // exclusive lock: under one UIDVALIDITY the claim only grows, so a
        // value at or above `up_to` read now is what the locked read would
        // give (no `\Recent` for this session). A read that races the
        // writer's 20-byte write fails its CRC and takes the locked path.
        if let Ok(Some(s)) = RecentState::decode(&read_all(&f, &path)?)
            && s.uidvalidity == uidvalidity
            && s.recent_uid >= up_to
        {
            return Ok(s.recent_uid);
        }
        let _lock = LockGuard::acquire(f.clone(), LockKind::Exclusive, self.lock_timeout, &path)?;
        let bytes = read_all(&f, &path)?;
        let before = claimed_in(&bytes, uidvalidity, &path);
        if up_to > before {
            let state = RecentState {
                uidvalidity,
                recent_uid: up_to,
            };
            fsutil::write_all_at(&f, &state.encode(), 0, &path)?;
            if bytes.len() > RECENT_LEN {
                nix::unistd::ftruncate(f.as_fd(), RECENT_LEN as i64)
                    .map_err(|e| Error::nix("truncate", &path, e))?;
            }
        }
        Ok(before)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let s = RecentState {
            uidvalidity: 7,
            recent_uid: 42,
        };
        let b = s.encode();
        assert_eq!(RecentState::decode(&b), Ok(Some(s)));
        assert_eq!(RecentState::decode(&[]), Ok(None));
        let mut torn = b;
        torn[13] ^= 1;
        assert_eq!(RecentState::decode(&torn), Err((16, "CRC mismatch")));
        assert_eq!(RecentState::decode(&b[..10]), Err((10, "wrong length")));
        let mut magic = b;
        magic[0] = b'X';
        assert_eq!(RecentState::decode(&magic), Err((0, "bad magic")));
        let p = std::path::Path::new("x");
        assert_eq!(claimed_in(&b, 7, p), 42);
        assert_eq!(claimed_in(&b, 8, p), 0, "another UIDVALIDITY");
        assert_eq!(
            claimed_in(&torn, 7, p),
            0,
            "damage reads as nothing claimed"
        );
    }
}
