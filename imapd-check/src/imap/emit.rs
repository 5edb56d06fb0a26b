//! Writing FETCH responses whose literals may be far bigger than memory
//! should hold: text goes to a buffer that is flushed as it grows, and a
//! literal is copied from the message in chunks straight to the client.

use std::io::{self, Write};

use super::structure::{CHUNK, Source};

/// Buffered text is written out once it passes this.
const FLUSH_AT: usize = 256 * 1024;

pub struct Emitter<'w> {
    pub buf: Vec<u8>,
    w: &'w mut dyn Write,
    scratch: Vec<u8>,
    /// Something has been written to `w` (the client may have seen it).
    sent: bool,
}

/// Why a literal could not be sent whole and right: the client has seen
/// part of it, so the connection cannot go on.
#[derive(Debug)]
pub enum Broken {
    /// Writing to the client failed.
    Client(io::Error),
    /// Reading the message failed, or it ended early.
    Source(io::Error),
    /// The bytes sent do not have the CRC32 they had when checked.
    Changed { expected: u32, actual: u32 },
}

impl<'w> Emitter<'w> {
    #[cfg(test)]
    pub fn new(w: &'w mut dyn Write) -> Self {
        Emitter::with_buf(w, Vec::new())
    }

    pub fn with_buf(w: &'w mut dyn Write, buf: Vec<u8>) -> Self {
        Emitter {
            buf,
            w,
            scratch: Vec::new(),
            sent: false,
        }
    }

    /// True once anything has gone out of the buffer to the writer.
    pub fn sent(&self) -> bool {
        self.sent
    }

    pub fn maybe_flush(&mut self) -> io::Result<()> {
        if self.buf.len() > FLUSH_AT {
            self.flush_buf()?;
        }
        Ok(())
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        self.sent |= !self.buf.is_empty();
        self.w.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Writes out what is buffered; returns the (empty) buffer.
    #[cfg(test)]
    pub fn finish(mut self) -> io::Result<Vec<u8>> {
        self.flush_buf()?;
        Ok(self.buf)
    }

    /// Gives back the buffer without writing it.
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// `{len}\r\n` and `len` bytes of `src` from `offset`. With `crc`,
    /// the bytes read must have that CRC32. A NUL byte, which a literal
    /// cannot carry (RFC 3501 9, `CHAR8`) and only an APPEND of a binary
    /// literal can have stored, is sent as 0x80 (as Dovecot does; the
    /// size stays, BINARY sends the bytes as stored).
    pub fn literal(
        &mut self,
        src: &dyn Source,
        offset: u64,
        len: u64,
        crc: Option<u32>,
    ) -> Result<(), Broken> {
        self.literal_as(src, offset, len, crc, false)
    }

    /// [`Emitter::literal`], or with `literal8` the bytes as they are,
    /// NULs included (RFC 3516 `literal8`; the caller wrote its `~`).
    pub fn literal_as(
        &mut self,
        src: &dyn Source,
        offset: u64,
        len: u64,
        crc: Option<u32>,
        literal8: bool,
    ) -> Result<(), Broken> {
        // What the bytes go through before they are sent.
        let clean: fn(&mut [u8]) = if literal8 { |_| {} } else { no_nul };
        self.buf
            .extend_from_slice(format!("{{{len}}}\r\n").as_bytes());
        let mut hasher = crc.map(|_| crc32fast::Hasher::new());
        if len <= CHUNK as u64 {
            // Small: into the buffer, nothing sent until it is all read.
            let at = self.buf.len();
            self.buf.resize(at + len as usize, 0);
            read_full(src, offset, &mut self.buf[at..]).map_err(Broken::Source)?;
            if let Some(h) = hasher.as_mut() {
                h.update(&self.buf[at..]);
            }
            clean(&mut self.buf[at..]);
        } else {
            self.flush_buf().map_err(Broken::Client)?;
            if self.scratch.len() < CHUNK {
                self.scratch.resize(CHUNK, 0);
            }
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(CHUNK as u64) as usize;
                let chunk = &mut self.scratch[..n];
                read_full(src, offset + done, chunk).map_err(Broken::Source)?;
                if let Some(h) = hasher.as_mut() {
                    h.update(chunk);
                }
                clean(chunk);
                self.sent = true;
                self.w.write_all(chunk).map_err(Broken::Client)?;
                done += n as u64;
            }
        }
        if let (Some(expected), Some(h)) = (crc, hasher) {
            let actual = h.finalize();
            if actual != expected {
                return Err(Broken::Changed { expected, actual });
            }
        }
        self.maybe_flush().map_err(Broken::Client)
    }
}

/// NUL bytes made 0x80 (see [`Emitter::literal`]).
fn no_nul(bytes: &mut [u8]) {
    let mut at = 0;
    while let Some(i) = memchr::memchr(0, &bytes[at..]) {
        bytes[at + i] = 0x80;
        at += i + 1;
    }
}

fn read_full(src: &dyn Source, offset: u64, buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let n = src.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message file ended early",
            ));
        }
        done += n;
    }
    Ok(())
}
