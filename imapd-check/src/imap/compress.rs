//! COMPRESS=DEFLATE (RFC 4978): raw DEFLATE (RFC 1951, no zlib header)
//! in both directions, one stream per direction for the rest of the
//! connection. Output is flushed with a sync flush at every `flush` of
//! the writer (RFC 4978 section 4: each response must be decodable when
//! it is sent).
//!
//! Memory is bounded: the decompressor's output goes through one fixed
//! buffer, so a "zip bomb" from a client costs CPU, never memory (the
//! line and literal limits of `io.rs` apply to the plaintext).

use std::io;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

const CHUNK: usize = 16 * 1024;

pub struct Deflate {
    c: Compress,
    d: Decompress,
    /// Compressed input not yet given to the decompressor.
    zin: Vec<u8>,
    zin_pos: usize,
    /// Decompressed input not yet read.
    plain: Vec<u8>,
    plain_pos: usize,
    /// The decompressor filled its output last time: it may hold more.
    more: bool,
    /// The client's stream ended (a final block): end of input.
    ended: bool,
    /// Compressed output waiting to go to the layer below.
    zout: Vec<u8>,
}

impl Deflate {
    /// `already`: bytes the client sent after its COMPRESS command that
    /// were read before compression was switched on (they are compressed).
    pub fn new(already: Vec<u8>) -> Deflate {
        Deflate {
            // Level 1: most of the gain on IMAP text at a fraction of the CPU.
            c: Compress::new(Compression::fast(), false),
            d: Decompress::new(false),
            zin: already,
            zin_pos: 0,
            plain: Vec::with_capacity(CHUNK),
            plain_pos: 0,
            more: false,
            ended: false,
            zout: Vec::with_capacity(CHUNK),
        }
    }

    /// True when decompressed bytes wait to be read.
    pub fn has_plain(&self) -> bool {
        self.plain_pos < self.plain.len()
    }

    /// True when compressed input is buffered (it may decompress to
    /// something, or be part of a block still arriving).
    pub fn has_input(&self) -> bool {
        self.zin_pos < self.zin.len() || self.more
    }

    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Decompresses what is buffered into `plain` (when it is empty).
    /// Returns true when plaintext is now available.
    pub fn pump(&mut self) -> io::Result<bool> {
        if self.has_plain() {
            return Ok(true);
        }
        if self.ended || !self.has_input() {
            return Ok(false);
        }
        self.plain.clear();
        self.plain.resize(CHUNK, 0);
        self.plain_pos = 0;
        let (in0, out0) = (self.d.total_in(), self.d.total_out());
        let status = self
            .d
            .decompress(
                &self.zin[self.zin_pos..],
                &mut self.plain,
                FlushDecompress::None,
            )
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("deflate: {e}")))?;
        let consumed = (self.d.total_in() - in0) as usize;
        let produced = (self.d.total_out() - out0) as usize;
        self.zin_pos += consumed;
        self.plain.truncate(produced);
        self.more = produced == CHUNK;
        if self.zin_pos == self.zin.len() {
            self.zin.clear();
            self.zin_pos = 0;
        }
        if status == Status::StreamEnd {
            self.ended = true;
        }
        Ok(produced > 0)
    }

    /// Adds compressed bytes read from the layer below.
    pub fn feed(&mut self, z: &[u8]) {
        if self.zin_pos > 0 {
            self.zin.drain(..self.zin_pos);
            self.zin_pos = 0;
        }
        self.zin.extend_from_slice(z);
    }

    /// Copies available plaintext into `buf`.
    pub fn take(&mut self, buf: &mut [u8]) -> usize {
        let n = (self.plain.len() - self.plain_pos).min(buf.len());
        buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
        self.plain_pos += n;
        n
    }

    /// Compresses `data` (sync-flushed when `flush`); the output is then
    /// in `output()`, to be written below and `clear_output`ed.
    pub fn compress(&mut self, mut data: &[u8], flush: bool) -> io::Result<()> {
        let mode = if flush {
            FlushCompress::Sync
        } else {
            FlushCompress::None
        };
        loop {
            if self.zout.capacity() - self.zout.len() < 64 {
                self.zout.reserve(CHUNK);
            }
            let (in0, out0) = (self.c.total_in(), self.c.total_out());
            self.c
                .compress_vec(data, &mut self.zout, mode)
                .map_err(|e| io::Error::other(format!("deflate: {e}")))?;
            let consumed = (self.c.total_in() - in0) as usize;
            let produced = (self.c.total_out() - out0) as usize;
            data = &data[consumed..];
            // Done when all input is taken and the flush left room to
            // spare (a full output buffer may mean more is pending).
            if data.is_empty() && self.zout.len() < self.zout.capacity() {
                return Ok(());
            }
            if consumed == 0 && produced == 0 && self.zout.len() < self.zout.capacity() {
                return Ok(());
            }
        }
    }

    pub fn output(&self) -> &[u8] {
        &self.zout
    }

    pub fn clear_output(&mut self) {
        self.zout.clear();
        if self.zout.capacity() > 4 * CHUNK {
            self.zout.shrink_to(CHUNK);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_both_directions() {
        let mut server = Deflate::new(Vec::new());
        let text = b"a1 FETCH 1:* (FLAGS)\r\n".repeat(5000);
        server.compress(&text, true).unwrap();
        let z = server.output().to_vec();
        assert!(z.len() < text.len() / 10);
        // The other side, fed a few bytes at a time.
        let mut client = Deflate::new(Vec::new());
        let mut got = Vec::new();
        for piece in z.chunks(7) {
            client.feed(piece);
            while client.pump().unwrap() {
                let mut b = [0u8; 1000];
                let n = client.take(&mut b);
                got.extend_from_slice(&b[..n]);
            }
        }
        assert_eq!(got, text);
    }
}
