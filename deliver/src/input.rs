//! The streaming input adapter: turns what Postfix hands over into what
//! the store keeps, in constant memory (one 64 KiB read buffer plus at
//! most twice that of output, plus 4 KiB per remembered header field).
//!
//! - A leading `From ` envelope line (mbox style, from `mailbox_command`)
//!   is dropped, however long it is.
//! - `Return-Path: <sender>` is put first when a sender is known, unless
//!   the message already starts with a `Return-Path:` field (Postfix's
//!   `flags=R` added one).
//! - Bare LF becomes CRLF, so the stored size is the RFC822.SIZE an IMAP
//!   server reports. A CR that is not followed by LF is kept as it is
//!   (it is data, not a line end; rewriting it would change the text).
//! - A NUL byte makes the message undeliverable ([`BadInput::Nul`]): IMAP
//!   cannot transmit NUL outside BINARY, and a store that holds messages
//!   its server cannot send is worse than a bounce the sender sees.
//! - 8-bit bytes, in headers or body, are stored unchanged (RFC 6532
//!   UTF-8 headers are legal; other charsets are the reader's problem).
//! - A message without the blank line between header and body is stored
//!   unchanged; the whole message then counts as header.
//! - The header block is scanned for `Message-ID` and `Date`; each field
//!   is remembered only up to 4 KiB, so a 1 MB header line costs nothing.

use std::io::{self, Read};

/// Input the store refuses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadInput {
    Nul,
}

/// Read size. Small enough that the buffers come from the allocator's
/// heap rather than fresh mappings: the LMTP server builds a Normalizer
/// per message, and a per-message mmap/munmap pair costs page faults and
/// TLB shootdowns (measured: 13% of the server's CPU with musl's malloc).
const CHUNK: usize = 16 * 1024;
const FIELD_CAP: usize = 4096;

pub struct Normalizer<R> {
    inner: R,
    strip_from_line: bool,
    return_path: Option<Vec<u8>>,
    started: bool,
    inbuf: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
    prev_cr: bool,
    eof: bool,
    /// Message bytes read after the envelope line (before conversion).
    pub content_bytes: u64,
    /// Bytes produced (what the store writes).
    pub output_bytes: u64,
    pub bad: Option<BadInput>,
    pub headers: HeaderScan,
}

/// A [`Normalizer`]'s read and output buffers, to be used again for the
/// next message ([`Normalizer::with_buffers`]): an LMTP session then
/// allocates and zero-fills them once, not once per message.
pub struct Buffers {
    inbuf: Vec<u8>,
    out: Vec<u8>,
}

impl Default for Buffers {
    fn default() -> Buffers {
        Buffers {
            inbuf: vec![0; CHUNK],
            out: Vec::with_capacity(2 * CHUNK),
        }
    }
}

impl<R: Read> Normalizer<R> {
    /// `sender`: the envelope sender for `Return-Path` (`""` for the null
    /// sender `<>`), or `None` to add no `Return-Path`.
    pub fn new(inner: R, strip_from_line: bool, sender: Option<&str>) -> Self {
        Self::with_buffers(inner, strip_from_line, sender, Buffers::default())
    }

    /// [`Normalizer::new`] with buffers of an earlier message.
    pub fn with_buffers(
        inner: R,
        strip_from_line: bool,
        sender: Option<&str>,
        bufs: Buffers,
    ) -> Self {
        let Buffers { inbuf, mut out } = bufs;
        out.clear();
        Normalizer {
            inner,
            strip_from_line,
            return_path: sender.map(|s| format!("Return-Path: <{}>\r\n", clean_addr(s)).into()),
            started: false,
            inbuf,
            out,
            out_pos: 0,
            prev_cr: false,
            eof: false,
            content_bytes: 0,
            output_bytes: 0,
            bad: None,
            headers: HeaderScan::default(),
        }
    }

    pub fn inner_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// The buffers, for the next message's [`Normalizer::with_buffers`].
    pub fn into_buffers(self) -> Buffers {
        Buffers {
            inbuf: self.inbuf,
            out: self.out,
        }
    }

    /// The next piece of output as it lies in the output buffer (empty at
    /// the end): [`Read::read`] without copying it out.
    pub fn next_chunk(&mut self) -> io::Result<&[u8]> {
        if !self.fill()? {
            return Ok(&[]);
        }
        let start = self.out_pos;
        self.out_pos = self.out.len();
        Ok(&self.out[start..])
    }

    /// Makes output available; `false` at the end of the input.
    fn fill(&mut self) -> io::Result<bool> {
        if !self.started {
            self.start()?;
        }
        while self.out_pos == self.out.len() {
            if self.bad.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "message contains a NUL byte",
                ));
            }
            if self.eof {
                return Ok(false);
            }
            self.out.clear();
            self.out_pos = 0;
            let n = self.read_some()?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            let chunk = std::mem::take(&mut self.inbuf);
            self.convert(&chunk[..n]);
            self.inbuf = chunk;
        }
        Ok(true)
    }

    fn read_some(&mut self) -> io::Result<usize> {
        loop {
            match self.inner.read(&mut self.inbuf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn fill_to(&mut self, pre: &mut Vec<u8>, want: usize) -> io::Result<()> {
        while !self.eof && pre.len() < want {
            let n = self.read_some()?;
            if n == 0 {
                self.eof = true;
            }
            pre.extend_from_slice(&self.inbuf[..n]);
        }
        Ok(())
    }

    /// Reads the message start: drops the envelope line and decides on
    /// Return-Path. Needs at most 12 bytes of look-ahead beyond the
    /// envelope line, which is skipped without being kept.
    fn start(&mut self) -> io::Result<()> {
        self.started = true;
        let mut pre: Vec<u8> = Vec::new();
        if self.strip_from_line {
            self.fill_to(&mut pre, 5)?;
            if pre.starts_with(b"From ") {
                loop {
                    if let Some(p) = pre.iter().position(|&b| b == b'\n') {
                        pre.drain(..=p);
                        break;
                    }
                    pre.clear();
                    if self.eof {
                        break;
                    }
                    self.fill_to(&mut pre, 1)?;
                }
            }
        }
        self.fill_to(&mut pre, 12)?;
        let has_rp = pre.len() >= 12 && pre[..12].eq_ignore_ascii_case(b"return-path:");
        if let Some(rp) = self.return_path.take()
            && !has_rp
        {
            self.out.extend_from_slice(&rp);
            self.output_bytes += rp.len() as u64;
            self.headers.feed(&rp);
        }
        self.convert(&pre);
        Ok(())
    }

    /// Appends `input` to `out` with line ends made CRLF.
    fn convert(&mut self, input: &[u8]) {
        if input.is_empty() || self.bad.is_some() {
            return;
        }
        self.content_bytes += input.len() as u64;
        if memchr::memchr(0, input).is_some() {
            self.bad = Some(BadInput::Nul);
            return;
        }
        let before = self.out.len();
        // Copied in runs between the bare LFs (none in CRLF input, which
        // is then one copy); each bare LF gets its CR.
        let mut run = 0;
        for p in memchr::memchr_iter(b'\n', input) {
            let cr_before = if p > 0 {
                input[p - 1] == b'\r'
            } else {
                self.prev_cr
            };
            if !cr_before {
                self.out.extend_from_slice(&input[run..p]);
                self.out.push(b'\r');
                run = p;
            }
        }
        self.out.extend_from_slice(&input[run..]);
        self.prev_cr = input[input.len() - 1] == b'\r';
        if !self.headers.done {
            self.headers.feed(&self.out[before..]);
        }
        self.output_bytes += (self.out.len() - before) as u64;
    }
}

impl<R: Read> Read for Normalizer<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.fill()? {
            return Ok(0);
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Strips angle brackets and anything that could break the header line.
fn clean_addr(s: &str) -> String {
    let s = s.trim();
    let s = s.strip_prefix('<').unwrap_or(s);
    let s = s.strip_suffix('>').unwrap_or(s);
    s.chars()
        .filter(|c| !c.is_control() && *c != '<' && *c != '>')
        .collect()
}

/// Finds `Message-ID` and `Date` in a header block fed in pieces.
#[derive(Default)]
pub struct HeaderScan {
    pub done: bool,
    field: Vec<u8>,
    line_len: usize,
    at_line_start: bool,
    started: bool,
    pub message_id: Option<String>,
    pub date: Option<String>,
}

impl HeaderScan {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.done {
            if !self.started || self.at_line_start {
                self.byte(bytes[0]);
                bytes = &bytes[1..];
                continue;
            }
            // The rest of the line at once, then its LF.
            let end = memchr::memchr(b'\n', bytes).unwrap_or(bytes.len());
            self.line_bytes(&bytes[..end]);
            bytes = &bytes[end..];
            if let Some(&lf) = bytes.first() {
                self.byte(lf);
                bytes = &bytes[1..];
            }
        }
    }

    /// One byte: the rule that [`HeaderScan::feed`] applies to line
    /// starts and line ends.
    fn byte(&mut self, b: u8) {
        if !self.started || self.at_line_start {
            self.started = true;
            self.at_line_start = false;
            if b != b' ' && b != b'\t' && b != b'\r' && b != b'\n' {
                self.finish_field();
            }
        }
        match b {
            b'\n' => {
                if self.line_len == 0 {
                    self.finish_field();
                    self.done = true;
                }
                self.line_len = 0;
                self.at_line_start = true;
            }
            b'\r' => {}
            _ => self.line_bytes(&[b]),
        }
    }

    /// Bytes inside a line (no LF): each but CR counts, and is kept while
    /// the field is under [`FIELD_CAP`].
    fn line_bytes(&mut self, mut seg: &[u8]) {
        while !seg.is_empty() {
            let end = memchr::memchr(b'\r', seg).unwrap_or(seg.len());
            let piece = &seg[..end];
            self.line_len += piece.len();
            let room = FIELD_CAP.saturating_sub(self.field.len());
            self.field
                .extend_from_slice(&piece[..piece.len().min(room)]);
            seg = &seg[(end + 1).min(seg.len())..];
        }
    }

    fn finish_field(&mut self) {
        let f = &self.field;
        if let Some(colon) = memchr::memchr(b':', f) {
            let name = &f[..colon];
            let value = || Some(String::from_utf8_lossy(&f[colon + 1..]).trim().to_string());
            if name.eq_ignore_ascii_case(b"message-id") && self.message_id.is_none() {
                self.message_id = value();
            } else if name.eq_ignore_ascii_case(b"date") && self.date.is_none() {
                self.date = value();
            }
        }
        // Kept for the next field: its capacity is reused.
        self.field.clear();
    }

    /// Call at end of input: a header block without a body still counts.
    pub fn finish(&mut self) {
        if !self.done {
            self.finish_field();
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<'a>(
        input: &'a [u8],
        strip: bool,
        sender: Option<&str>,
    ) -> (Vec<u8>, Normalizer<&'a [u8]>) {
        // A reader that returns one byte at a time exercises every split.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let mut slow = Normalizer::new(Trickle(input), strip, sender);
        let mut a = Vec::new();
        let ra = slow.read_to_end(&mut a);
        let mut fast = Normalizer::new(input, strip, sender);
        let mut b = Vec::new();
        let rb = fast.read_to_end(&mut b);
        assert_eq!(ra.is_ok(), rb.is_ok());
        assert_eq!(a, b, "chunking must not change the output");
        fast.headers.finish();
        (b, fast)
    }

    #[test]
    fn from_line_stripped_and_return_path_added() {
        let (out, n) = run(
            b"From bob@x  Sun Nov 22 19:05:09 2026\nSubject: hi\n\nbody\n",
            true,
            Some("bob@x"),
        );
        assert_eq!(
            out,
            b"Return-Path: <bob@x>\r\nSubject: hi\r\n\r\nbody\r\n".to_vec()
        );
        assert_eq!(n.output_bytes, out.len() as u64);
    }

    #[test]
    fn existing_return_path_not_duplicated() {
        let (out, _) = run(
            b"From bob@x Sun\nReturn-Path: <bob@x>\nX: y\n\nb\n",
            true,
            Some("other@y"),
        );
        assert_eq!(out, b"Return-Path: <bob@x>\r\nX: y\r\n\r\nb\r\n".to_vec());
    }

    #[test]
    fn from_line_kept_when_not_stripping_and_null_sender() {
        let (out, _) = run(b"From x\nA: b\n\n", false, Some("<>"));
        assert_eq!(out, b"Return-Path: <>\r\nFrom x\r\nA: b\r\n\r\n".to_vec());
    }

    #[test]
    fn line_ends_and_bare_cr() {
        let (out, _) = run(b"A: b\r\n\nx\ry\r\n", false, None);
        assert_eq!(out, b"A: b\r\n\r\nx\ry\r\n".to_vec());
    }

    #[test]
    fn nul_is_refused() {
        let (_, n) = run(b"A: b\n\nx\0y\n", false, None);
        assert_eq!(n.bad, Some(BadInput::Nul));
    }

    #[test]
    fn empty_after_from_line() {
        let (out, n) = run(b"From bob Sun Nov 22\n", true, None);
        assert!(out.is_empty());
        assert_eq!(n.content_bytes, 0);
        let (_, n) = run(b"", true, Some("a@b"));
        assert_eq!(n.content_bytes, 0);
    }

    #[test]
    fn headers_found_folded_and_long_lines_bounded() {
        let mut msg = b"Subject: x\nMessage-ID:\n <abc@host>\nX-Long: ".to_vec();
        msg.extend(std::iter::repeat_n(b'a', 1 << 20));
        msg.extend_from_slice(b"\nDate: Thu, 01 Jan 1970 00:00:00 +0000\n\nMessage-ID: <body@x>\n");
        let (_, n) = run(&msg, false, None);
        assert_eq!(n.headers.message_id.as_deref(), Some("<abc@host>"));
        assert_eq!(
            n.headers.date.as_deref(),
            Some("Thu, 01 Jan 1970 00:00:00 +0000")
        );
    }

    /// What the normalizer must produce without a `From ` line or
    /// Return-Path: every LF not preceded by CR gets one; a NUL refuses.
    fn reference(input: &[u8]) -> Option<Vec<u8>> {
        if input.contains(&0) {
            return None;
        }
        let mut out = Vec::new();
        for (i, &b) in input.iter().enumerate() {
            if b == b'\n' && (i == 0 || input[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        Some(out)
    }

    /// Hands its input out in pieces of the given sizes, in turn.
    struct Pieces<'a> {
        data: &'a [u8],
        sizes: Vec<usize>,
        next: usize,
    }

    impl Read for Pieces<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let want = self.sizes[self.next % self.sizes.len()];
            self.next += 1;
            let n = want.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest::proptest! {
        #[test]
        fn line_ends_made_crlf_however_the_input_is_cut(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'b', b'\r', b'\n', b'.', 0u8, 0xc3]),
                0..200,
            ),
            sizes in proptest::collection::vec(1usize..40, 1..8),
        ) {
            let mut n = Normalizer::new(Pieces { data: &input, sizes, next: 0 }, false, None);
            let mut out = Vec::new();
            let r = n.read_to_end(&mut out);
            match reference(&input) {
                Some(want) => {
                    proptest::prop_assert!(r.is_ok());
                    proptest::prop_assert_eq!(&out, &want);
                    proptest::prop_assert_eq!(n.output_bytes, want.len() as u64);
                    proptest::prop_assert_eq!(n.content_bytes, input.len() as u64);
                }
                None => {
                    proptest::prop_assert!(r.is_err());
                    proptest::prop_assert_eq!(n.bad, Some(BadInput::Nul));
                }
            }
        }
    }

    /// The header scan fed one byte at a time by the rule of
    /// [`HeaderScan::byte`] alone (how it read everything before it
    /// took lines at once).
    fn scan_bytewise(input: &[u8]) -> HeaderScan {
        let mut h = HeaderScan::default();
        for &b in input {
            if h.done {
                break;
            }
            h.byte(b);
        }
        h.finish();
        h
    }

    proptest::proptest! {
        #[test]
        fn header_scan_reads_lines_as_it_read_bytes(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Message-ID: <a@b>", "Date: Thu, 1 Jan", "message-id:", " <c@d>",
                    "X: y", "\r", "\n", "\r\n", " ", "\t", "zz", ":",
                ]),
                0..40,
            ),
            cut in 1usize..30,
        ) {
            let input: Vec<u8> = parts.concat().into_bytes();
            let want = scan_bytewise(&input);
            let mut got = HeaderScan::default();
            for piece in input.chunks(cut) {
                got.feed(piece);
            }
            got.finish();
            proptest::prop_assert_eq!(got.message_id, want.message_id);
            proptest::prop_assert_eq!(got.date, want.date);
        }
    }
}
