//! Reading client input: bounded lines, literals announced with `{n}` or
//! `{n+}`, and waiting on the input together with another fd (IDLE).
//!
//! A command is assembled here (lines plus literal bytes, sending `+` for
//! synchronizing literals) before imap-codec parses it, so every size
//! limit is enforced before anything big is buffered.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::time::Duration;

use super::stream::Shared;

/// Limits on what one command may carry.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// One line, CRLF included.
    pub line: usize,
    /// Total literal bytes in an APPEND.
    pub append: u64,
    /// Total literal bytes in any other command.
    pub other_literal: u64,
    /// Total line bytes of one command (its lines between literals).
    pub command_lines: usize,
    /// A refused non-synchronizing literal up to this size is read and
    /// dropped so the session can go on; a bigger one ends the connection
    /// (RFC 7888 section 4), since the client sends its octets anyway.
    pub swallow: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            line: 64 * 1024,
            append: 64 * 1024 * 1024,
            other_literal: 64 * 1024,
            command_lines: 256 * 1024,
            swallow: 64 * 1024 * 1024,
        }
    }
}

pub struct Input {
    src: Shared,
    buf: Vec<u8>,
    start: usize,
    /// Bytes the next read asks for (each read zeroes them first): small
    /// while commands arrive one line at a time, large once a read filled
    /// what it asked for (a literal, pipelined commands).
    chunk: usize,
}

/// The first read of a command: most command lines fit.
const SMALL_READ: usize = 1024;
/// Reads while data keeps coming.
const LARGE_READ: usize = 16 * 1024;

/// What reading a command produced.
pub enum Assembled {
    /// The raw bytes of one complete command.
    Command(Vec<u8>),
    /// A line over the limit; it was discarded up to its end.
    LineTooLong,
    /// A literal over the limit. Synchronizing: the client was not sent
    /// `+`, so it sends nothing more for this command. Non-synchronizing:
    /// its octets were read and dropped, or (`close`) they are too many to
    /// wait for and the connection must end.
    LiteralTooBig {
        tag: Option<String>,
        close: bool,
    },
    /// The lines of one command add up to more than the limit; where the
    /// command ends is unknown, so the connection must end.
    CommandTooLong {
        tag: Option<String>,
    },
    Eof,
}

impl Input {
    /// Reads from the connection's stream (socket or stdin, with
    /// whatever TLS or compression layer it carries).
    pub fn new(src: Shared) -> Input {
        Input {
            src,
            buf: Vec::new(),
            start: 0,
            chunk: SMALL_READ,
        }
    }

    /// Frees the read buffer when nothing is left in it, so that a
    /// connection waiting for its next command holds no buffer.
    pub fn release(&mut self) {
        if !self.has_buffered() {
            self.buf = Vec::new();
            self.start = 0;
        }
    }

    /// True when bytes are already buffered (poll would not see them).
    pub fn has_buffered(&self) -> bool {
        self.start < self.buf.len()
    }

    fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + self.chunk, 0);
        loop {
            match self.src.read(&mut self.buf[old..]) {
                Ok(n) => {
                    self.buf.truncate(old + n);
                    self.chunk = if n == self.chunk {
                        LARGE_READ
                    } else {
                        SMALL_READ
                    };
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            }
        }
    }

    /// One line including its LF. `Ok(None)` at end of input; `Err` with
    /// `InvalidData` when it is longer than `max` (the rest of the line is
    /// then skipped).
    pub fn read_line(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        let mut scanned = 0;
        let mut too_long = false;
        loop {
            let avail = &self.buf[self.start..];
            if let Some(p) = avail[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + p + 1;
                let line = avail[..end].to_vec();
                self.start += end;
                if too_long || line.len() > max {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
                return Ok(Some(line));
            }
            scanned = avail.len();
            if scanned > max {
                // Keep memory bounded: drop what we have of this line.
                too_long = true;
                self.start = self.buf.len();
                scanned = 0;
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Appends exactly `n` bytes to `dst`; false at end of input. Bytes
    /// not yet buffered are read straight into `dst`, so a literal is held
    /// once, not twice.
    pub fn read_into(&mut self, dst: &mut Vec<u8>, n: usize) -> io::Result<bool> {
        dst.reserve(n);
        let mut left = n;
        while left > 0 {
            if self.has_buffered() {
                let take = (self.buf.len() - self.start).min(left);
                dst.extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                left -= take;
                continue;
            }
            let at = dst.len();
            dst.resize(at + left, 0);
            let got = loop {
                match self.src.read(&mut dst[at..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    r => break r,
                }
            };
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    dst.truncate(at);
                    return Err(e);
                }
            };
            dst.truncate(at + got);
            if got == 0 {
                return Ok(false);
            }
            left -= got;
        }
        Ok(true)
    }

    /// Reads and drops `n` bytes.
    pub fn skip(&mut self, mut n: u64) -> io::Result<bool> {
        while n > 0 {
            if !self.has_buffered() && self.fill()? == 0 {
                return Ok(false);
            }
            let take = ((self.buf.len() - self.start) as u64).min(n);
            self.start += take as usize;
            n -= take;
        }
        Ok(true)
    }

    /// Reads one command: its lines and literals. Sends `+ ` to `out`
    /// before each synchronizing literal it accepts.
    pub fn read_command(&mut self, out: &mut impl Write, limits: &Limits) -> io::Result<Assembled> {
        let mut cmd = Vec::new();
        let mut literal_total = 0u64;
        let mut lines_total = 0usize;
        let mut is_append = None;
        loop {
            let line = match self.read_line(limits.line) {
                Ok(Some(l)) => l,
                Ok(None) => return Ok(Assembled::Eof),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    return Ok(Assembled::LineTooLong);
                }
                Err(e) => return Err(e),
            };
            let line = crlf(line);
            lines_total += line.len();
            cmd.extend_from_slice(&line);
            if lines_total > limits.command_lines {
                return Ok(Assembled::CommandTooLong { tag: tag_of(&cmd) });
            }
            let append =
                *is_append.get_or_insert_with(|| command_name(&cmd).eq_ignore_ascii_case("APPEND"));
            let Some((n, sync)) = literal_announcement(&line) else {
                return Ok(Assembled::Command(cmd));
            };
            literal_total = literal_total.saturating_add(n);
            let limit = if append {
                limits.append
            } else {
                limits.other_literal
            };
            if literal_total > limit {
                let tag = tag_of(&cmd);
                if sync {
                    return Ok(Assembled::LiteralTooBig { tag, close: false });
                }
                // A non-synchronizing literal is on its way regardless:
                // drop a bounded amount, else give up on the connection.
                if n > limits.swallow {
                    return Ok(Assembled::LiteralTooBig { tag, close: true });
                }
                if !self.skip(n)? {
                    return Ok(Assembled::Eof);
                }
                self.read_line(limits.line).ok();
                return Ok(Assembled::LiteralTooBig { tag, close: false });
            }
            if sync {
                out.write_all(b"+ Ready for literal data\r\n")?;
                out.flush()?;
            }
            if !self.read_into(&mut cmd, n as usize)? {
                return Ok(Assembled::Eof);
            }
        }
    }

    /// Waits until the input or `other` is readable, or `timeout` passes.
    /// Returns (input readable, other readable); `TimedOut` once the
    /// stream's deadline (pre-login or autologout timer) has passed.
    /// Plaintext already decrypted or decompressed counts as readable.
    pub fn wait(
        &mut self,
        other: Option<BorrowedFd<'_>>,
        timeout: Duration,
    ) -> io::Result<(bool, bool)> {
        if self.has_buffered() {
            return Ok((true, false));
        }
        self.src.wait(other, timeout)
    }

    /// Takes the bytes read past the current command (for COMPRESS: they
    /// are the first compressed bytes).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.start);
        self.buf.clear();
        self.start = 0;
        rest
    }
}

/// A buffered writer whose buffer exists only between a write and the next
/// flush: a connection waiting for its client (or idling) holds none.
/// Writes of at least the buffer's size go straight through.
pub struct Output<W: Write> {
    inner: W,
    buf: Vec<u8>,
    cap: usize,
}

impl<W: Write> Output<W> {
    pub fn new(inner: W, cap: usize) -> Output<W> {
        Output {
            inner,
            buf: Vec::new(),
            cap,
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf)?;
        }
        self.buf = Vec::new();
        Ok(())
    }
}

impl<W: Write> Write for Output<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.flush_buf()?;
        }
        if data.len() >= self.cap {
            return self.inner.write(data);
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.cap);
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        self.inner.flush()
    }
}

/// A line ending in a bare LF made to end in CRLF. RFC 3501 requires
/// CRLF; Dovecot and Cyrus accept a bare LF (some scripted clients and
/// test suites send one), and so does this server. Only the line's end is
/// touched: a CR or LF inside a literal is data and never passes here.
pub fn crlf(mut line: Vec<u8>) -> Vec<u8> {
    if line.ends_with(b"\n") && !line.ends_with(b"\r\n") {
        line.pop();
        line.extend_from_slice(b"\r\n");
    }
    line
}

/// `{123}` or `{123+}` at the end of a line: (length, synchronizing).
pub fn literal_announcement(line: &[u8]) -> Option<(u64, bool)> {
    let l = line.strip_suffix(b"\n")?;
    let l = l.strip_suffix(b"\r").unwrap_or(l);
    let l = l.strip_suffix(b"}")?;
    let open = l.iter().rposition(|&b| b == b'{')?;
    let mut inner = &l[open + 1..];
    let sync = match inner.strip_suffix(b"+") {
        Some(i) => {
            inner = i;
            false
        }
        None => true,
    };
    if inner.is_empty() || inner.len() > 19 || !inner.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(inner)
        .ok()?
        .parse()
        .ok()
        .map(|n| (n, sync))
}

/// The tag of a command line, if it looks like one.
pub fn tag_of(cmd: &[u8]) -> Option<String> {
    let end = cmd
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')?;
    let t = &cmd[..end];
    let ok = !t.is_empty()
        && t.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    ok.then(|| String::from_utf8_lossy(t).into_owned())
}

fn command_name(cmd: &[u8]) -> String {
    let mut it = cmd.split(|&b| b == b' ' || b == b'\r' || b == b'\n');
    it.next();
    let name = it.next().unwrap_or_default();
    let name = if name.eq_ignore_ascii_case(b"UID") {
        it.next().unwrap_or_default()
    } else {
        name
    };
    String::from_utf8_lossy(name).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_announcements() {
        assert_eq!(
            literal_announcement(b"a APPEND x {12}\r\n"),
            Some((12, true))
        );
        assert_eq!(
            literal_announcement(b"a APPEND x {12+}\r\n"),
            Some((12, false))
        );
        assert_eq!(literal_announcement(b"a NOOP\r\n"), None);
        assert_eq!(literal_announcement(b"a X {}\r\n"), None);
        assert_eq!(tag_of(b"a1 NOOP\r\n").as_deref(), Some("a1"));
        assert_eq!(crlf(b"a NOOP\n".to_vec()), b"a NOOP\r\n");
        assert_eq!(crlf(b"a NOOP\r\n".to_vec()), b"a NOOP\r\n");
        assert_eq!(crlf(b"a {3}\n".to_vec()), b"a {3}\r\n");
        assert_eq!(tag_of(b"* NOOP\r\n"), None);
        assert_eq!(command_name(b"a UID fetch 1 x"), "fetch");
    }
}
