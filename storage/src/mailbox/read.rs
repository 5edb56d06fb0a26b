//! Reading a message's bytes: no lock, except when a power loss took a
//! committed message's `UID.` name and its staged name has to be linked
//! back first (docs/PROTOCOL.md §3, *Staged names*).

use std::fs::File;
use std::io::Read;

use nix::fcntl::OFlag;

use super::{Mailbox, message_file_name};
use crate::error::{Error, Result};
use crate::format::Record;
use crate::fsutil;

impl Mailbox {
    /// Opens a message's bytes for reading.
    pub fn open_message(&self, uid: u32) -> Result<File> {
        match self.open_message_file(uid) {
            Err(Error::Expunged(_)) if self.restore_from_stage(uid)? => self.open_message_file(uid),
            r => r,
        }
    }

    fn open_message_file(&self, uid: u32) -> Result<File> {
        let name = message_file_name(uid);
        match self
            .dir
            .open_file(fsutil::os(name.as_bytes()), OFlag::O_RDONLY)
        {
            Err(e) if e.is_not_found() => Err(Error::Expunged(uid)),
            r => r,
        }
    }

    /// A missing message file after a power loss may be a committed
    /// message whose `UID.` name did not reach the disk (stage.rs); its
    /// staged name then has one link and no owner. Only when such a file
    /// exists is the exclusive lock taken to restore it, so a FETCH of a
    /// message another session expunged and repacked costs one directory
    /// read. Returns whether `uid` is back.
    fn restore_from_stage(&self, uid: u32) -> Result<bool> {
        if !crate::stage::has_orphan(&self.stage)? {
            return Ok(false);
        }
        let (guard, h) = self.lock_open_file()?;
        if h.is_superseded() || h.is_deleted() {
            return Ok(false);
        }
        let records = self.index.read_records(0, h.num_records)?;
        let tidy = self.tidy_stage(&records)?;
        drop(guard);
        Ok(tidy.restored.contains(&uid))
    }

    /// Reads a whole message into memory (small messages, tests, tools).
    pub fn read_message(&self, uid: u32) -> Result<Vec<u8>> {
        let mut f = self.open_message(uid)?;
        let mut v = Vec::new();
        f.read_to_end(&mut v).map_err(|e| {
            Error::io(
                "read",
                self.dir
                    .child_path(fsutil::os(message_file_name(uid).as_bytes())),
                e,
            )
        })?;
        Ok(v)
    }

    /// Reads the whole message `r` describes and checks it against the
    /// record: its size, and the CRC32 of every byte. A file that differs
    /// is a corruption error naming it, never bytes handed on as the
    /// message (tools that copy messages out: export).
    pub fn read_message_checked(&self, r: &Record) -> Result<Vec<u8>> {
        let bytes = self.read_message(r.uid)?;
        let path = self
            .dir
            .child_path(fsutil::os(message_file_name(r.uid).as_bytes()));
        if bytes.len() as u64 != r.size {
            return Err(Error::corrupt(
                path,
                (bytes.len() as u64).min(r.size),
                format!(
                    "UID {}: the file has {} bytes, its record says {}",
                    r.uid,
                    bytes.len(),
                    r.size
                ),
            ));
        }
        let crc = crc32fast::hash(&bytes);
        if crc != r.message_crc {
            return Err(Error::corrupt(
                path,
                0,
                format!(
                    "UID {}: CRC32 of the file is {crc:08x}, its record says {:08x}",
                    r.uid, r.message_crc
                ),
            ));
        }
        Ok(bytes)
    }
}
