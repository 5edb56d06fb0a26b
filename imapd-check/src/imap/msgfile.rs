//! A message file opened for FETCH and checked against its index record.
//!
//! - Every open compares the file's size (fstat) with the record's.
//! - A message up to [`SMALL`] bytes is read whole into memory and its
//!   CRC32 compared with the record's `message_crc` before anything of it
//!   is sent.
//! - A larger one stays on disk and is read in chunks. Its CRC32 is
//!   compared whenever the whole file is read before sending: by the
//!   structure scan (BODYSTRUCTURE, BODY, BODY[part]) or by a verifying
//!   pass before a full body (BODY[], RFC822) is streamed; that stream is
//!   checked again as it goes (the caller ends the connection if it then
//!   differs, since a literal cannot be taken back).
//!
//! A mismatch is `storage::Error::Corrupt` naming the file, the expected
//! and the actual value.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use storage::{Error, Mailbox, Record};

use super::structure::{self, CHUNK, Mem, Source, Structure};

/// Messages up to this size are read into memory whole.
pub const SMALL: u64 = 1024 * 1024;

enum Bytes {
    Memory(Vec<u8>),
    File(File),
}

pub struct MessageFile {
    bytes: Bytes,
    size: u64,
    crc: u32,
    pub path: PathBuf,
    /// The whole file has been read and had the record's CRC32.
    pub crc_checked: bool,
}

impl Source for MessageFile {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        match &self.bytes {
            Bytes::Memory(v) => Mem(v).read_at(offset, buf),
            Bytes::File(f) => {
                // Never past the recorded size, even if the file grew.
                let left = self.size.saturating_sub(offset);
                let n = (buf.len() as u64).min(left) as usize;
                loop {
                    match f.read_at(&mut buf[..n], offset) {
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        r => return r,
                    }
                }
            }
        }
    }
}

fn corrupt(path: &std::path::Path, what: String) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset: 0,
        what,
    }
}

impl MessageFile {
    /// Opens the file of `rec` in `mbox` and checks its size.
    pub fn open(mbox: &Mailbox, rec: &Record) -> Result<MessageFile, Error> {
        let file = mbox.open_message(rec.uid)?;
        let name = storage::mailbox::message_file_name(rec.uid);
        let path = mbox.dir().child_path(std::ffi::OsStr::new(&name));
        let io_err = |op, e, path: &std::path::Path| Error::Io {
            op,
            path: path.to_path_buf(),
            source: e,
        };
        let size = file
            .metadata()
            .map_err(|e| io_err("fstat", e, &path))?
            .len();
        if size != rec.size {
            return Err(size_mismatch(&path, rec.size, size));
        }
        let mut m = MessageFile {
            bytes: Bytes::File(file),
            size,
            crc: rec.message_crc,
            path,
            crc_checked: false,
        };
        if size <= SMALL {
            let Bytes::File(f) = &m.bytes else {
                unreachable!()
            };
            let mut v = Vec::with_capacity(size as usize);
            f.take(size + 1)
                .read_to_end(&mut v)
                .map_err(|e| io_err("read", e, &m.path))?;
            if v.len() as u64 != size {
                return Err(size_mismatch(&m.path, size, v.len() as u64));
            }
            m.check_crc(crc32fast::hash(&v))?;
            m.bytes = Bytes::Memory(v);
        }
        Ok(m)
    }

    /// Compares a CRC32 of the whole file with the record's.
    pub fn check_crc(&mut self, actual: u32) -> Result<(), Error> {
        if actual != self.crc {
            return Err(corrupt(
                &self.path,
                format!(
                    "message file CRC32 {actual:08x} differs from its record's {:08x}",
                    self.crc
                ),
            ));
        }
        self.crc_checked = true;
        Ok(())
    }

    /// True when the bytes are read from the file as they are sent (so
    /// they can still change after the check).
    pub fn streams(&self) -> bool {
        matches!(self.bytes, Bytes::File(_))
    }

    /// The record's CRC32 (for checking a full body as it is streamed).
    pub fn expected_crc(&self) -> u32 {
        self.crc
    }

    /// Reads the whole file once to compare its CRC32, unless done.
    pub fn verify(&mut self) -> Result<(), Error> {
        if self.crc_checked {
            return Ok(());
        }
        let mut h = crc32fast::Hasher::new();
        let mut buf = vec![0u8; CHUNK];
        let mut off = 0u64;
        while off < self.size {
            let n = self.read_at(off, &mut buf).map_err(|e| Error::Io {
                op: "read",
                path: self.path.clone(),
                source: e,
            })?;
            if n == 0 {
                return Err(size_mismatch(&self.path, self.size, off));
            }
            h.update(&buf[..n]);
            off += n as u64;
        }
        self.check_crc(h.finalize())
    }

    /// The MIME structure (`deep`) or only the top header's extent; a deep
    /// scan of a file on disk also checks its CRC32.
    pub fn structure(&mut self, deep: bool) -> Result<Structure, Error> {
        let want_crc = deep && !self.crc_checked;
        let s = structure::scan(self, deep, want_crc).map_err(|e| Error::Io {
            op: "read",
            path: self.path.clone(),
            source: e,
        })?;
        if let Some(crc) = s.crc.filter(|_| want_crc) {
            self.check_crc(crc)?;
        }
        Ok(s)
    }
}

fn size_mismatch(path: &std::path::Path, expected: u64, actual: u64) -> Error {
    corrupt(
        path,
        format!("message file is {actual} bytes, its record says {expected}"),
    )
}
