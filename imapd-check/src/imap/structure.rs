//! The MIME structure of a message found in one forward pass over its
//! bytes, chunk by chunk, without holding the message: for every part the
//! byte offsets of its header, body and end, and the lines of its body.
//! FETCH serves sections and BODYSTRUCTURE from these offsets; header
//! blocks are read back (bounded by [`HEADER_CAP`]) when they are needed.
//!
//! The rules (RFC 2045/2046, the offsets mail-parser used to give):
//! - a part's header runs to the first empty line; its body from there to
//!   the end of the part;
//! - a multipart's children start after each `--boundary` line and end
//!   before the CRLF (or LF) that precedes the next delimiter line of that
//!   multipart or of any enclosing one (a missing close delimiter ends the
//!   part where its parent ends); `--boundary--` starts the epilogue;
//! - a message/rfc822 (or message/global) part that is not base64 or
//!   quoted-printable encoded holds a message, parsed the same way; in
//!   multipart/digest a child without Content-Type is message/rfc822;
//! - the body of a part has as many lines as LF bytes.
//!
//! Bounds: at most [`MAX_PARTS`] parts and [`MAX_DEPTH`] levels of nesting
//! (deeper content counts as an opaque body), boundaries up to
//! [`MAX_BOUNDARY`] bytes, header blocks parsed from their first
//! [`HEADER_CAP`] bytes. Memory is one chunk plus the part table.

use std::io;

use mail_parser::{HeaderValue, MessageParser, MimeHeaders};

/// Most parts recorded; later delimiters end the multipart (its epilogue
/// takes the rest).
pub const MAX_PARTS: usize = 5_000;
/// Most levels of multipart/message nesting.
pub const MAX_DEPTH: usize = 32;
/// Longest boundary taken (RFC 2046 allows 70).
pub const MAX_BOUNDARY: usize = 200;
/// Bytes of a header block read for parsing or HEADER.FIELDS.
pub const HEADER_CAP: u64 = fts::text::HEADER_CAP as u64;
/// Bytes read at a time.
pub const CHUNK: usize = 64 * 1024;
/// Bytes of a line kept to compare with boundaries.
const PREFIX: usize = MAX_BOUNDARY + 64;

/// Random access to a message's bytes.
pub trait Source {
    fn size(&self) -> u64;
    /// Fills `buf` from `offset`; fewer bytes only at the end.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

/// Bytes in memory as a [`Source`].
pub struct Mem<'a>(pub &'a [u8]);

impl Source for Mem<'_> {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = (offset.min(self.0.len() as u64)) as usize;
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// Reads `len` bytes from `offset`, fewer only at the end of the source.
pub fn read_range(src: &dyn Source, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = len.min(src.size().saturating_sub(offset));
    let mut v = vec![0u8; len as usize];
    let mut done = 0;
    while done < v.len() {
        let n = src.read_at(offset + done as u64, &mut v[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    v.truncate(done);
    Ok(v)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A body without structure of its own.
    Leaf,
    /// Children, in order.
    Multipart(Vec<usize>),
    /// The encapsulated message (a part whose header starts where this
    /// part's body does).
    Message(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub header_start: u64,
    pub body_start: u64,
    pub end: u64,
    /// LF bytes in the body.
    pub lines: u64,
    pub kind: Kind,
    /// No Content-Type here means message/rfc822 (child of a digest).
    pub default_message: bool,
}

impl Part {
    pub fn header(&self) -> (u64, u64) {
        (self.header_start, self.body_start - self.header_start)
    }
    pub fn body(&self) -> (u64, u64) {
        (self.body_start, self.end - self.body_start)
    }
}

/// Parts of one message; `parts[0]` is the message itself.
#[derive(Debug)]
pub struct Structure {
    pub parts: Vec<Part>,
    /// CRC32 of the whole source, when the scan read all of it.
    pub crc: Option<u32>,
}

/// What a part header says about structure.
struct TypeInfo {
    multipart_boundary: Option<Vec<u8>>,
    digest: bool,
    message: bool,
}

/// Reads the header block of `p` (its first [`HEADER_CAP`] bytes) for
/// parsing. A header cut short by a delimiter or the end gets a line end,
/// so that its last field is parsed too.
pub fn header_block(src: &dyn Source, p: &Part) -> io::Result<Vec<u8>> {
    let (off, len) = p.header();
    let mut block = read_range(src, off, len.min(HEADER_CAP))?;
    if !block.is_empty() && !block.ends_with(b"\n") {
        block.extend_from_slice(b"\r\n");
    }
    Ok(block)
}

fn type_info(block: &[u8], default_message: bool) -> TypeInfo {
    let none = TypeInfo {
        multipart_boundary: None,
        digest: false,
        message: default_message,
    };
    let Some(msg) = MessageParser::default().parse_headers(block) else {
        return none;
    };
    let Some(part) = msg.parts.first() else {
        return none;
    };
    let Some(ct) = part.content_type() else {
        return none;
    };
    let sub = ct.subtype().unwrap_or_default();
    if ct.ctype().eq_ignore_ascii_case("multipart") {
        let boundary = ct
            .attribute("boundary")
            .map(|b| b.as_bytes().to_vec())
            .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY);
        return TypeInfo {
            digest: sub.eq_ignore_ascii_case("digest"),
            multipart_boundary: boundary,
            message: false,
        };
    }
    let encoded = part.headers.iter().any(|h| {
        h.name
            .as_str()
            .eq_ignore_ascii_case("Content-Transfer-Encoding")
            && matches!(&h.value, HeaderValue::Text(t)
                if matches!(super::mime::cte_mechanism(t).to_ascii_lowercase().as_str(),
                    "base64" | "quoted-printable"))
    });
    TypeInfo {
        multipart_boundary: None,
        digest: false,
        message: ct.ctype().eq_ignore_ascii_case("message")
            && (sub.eq_ignore_ascii_case("rfc822") || sub.eq_ignore_ascii_case("global"))
            && !encoded,
    }
}

/// Sequential reader yielding lines: offset, length, whether it ended
/// with CRLF, and its first [`PREFIX`] bytes.
struct Lines<'s> {
    src: &'s dyn Source,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    next_read: u64,
    hasher: Option<crc32fast::Hasher>,
    prefix: Vec<u8>,
}

struct Line {
    offset: u64,
    len: u64,
    has_lf: bool,
    crlf: bool,
}

impl<'s> Lines<'s> {
    fn new(src: &'s dyn Source, crc: bool) -> Self {
        Lines {
            src,
            buf: vec![0u8; CHUNK],
            start: 0,
            end: 0,
            next_read: 0,
            hasher: crc.then(crc32fast::Hasher::new),
            prefix: Vec::with_capacity(PREFIX),
        }
    }

    fn refill(&mut self) -> io::Result<usize> {
        let n = self.src.read_at(self.next_read, &mut self.buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&self.buf[..n]);
        }
        self.next_read += n as u64;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    /// The next line; `None` at the end.
    fn next(&mut self) -> io::Result<Option<Line>> {
        self.prefix.clear();
        let offset = self.next_read - (self.end - self.start) as u64;
        let mut len = 0u64;
        let mut last = 0u8;
        loop {
            if self.start == self.end && self.refill()? == 0 {
                return Ok((len > 0).then_some(Line {
                    offset,
                    len,
                    has_lf: false,
                    crlf: false,
                }));
            }
            let chunk = &self.buf[self.start..self.end];
            let (take, found) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let room = PREFIX - self.prefix.len();
            self.prefix.extend_from_slice(&chunk[..take.min(room)]);
            let before_lf = if found && take >= 2 {
                chunk[take - 2]
            } else {
                last
            };
            last = chunk[take - 1];
            self.start += take;
            len += take as u64;
            if found {
                return Ok(Some(Line {
                    offset,
                    len,
                    has_lf: true,
                    crlf: before_lf == b'\r',
                }));
            }
        }
    }

    /// Reads the rest so the CRC covers the whole source.
    fn drain(&mut self) -> io::Result<()> {
        if self.hasher.is_some() {
            while self.refill()? > 0 {}
        }
        Ok(())
    }
}

/// An open part on the path from the root to where the scan is.
struct Frame {
    part: usize,
    in_header: bool,
    /// LFs before the body start.
    lf_at_body: u64,
    /// A multipart before its close delimiter.
    boundary: Option<Vec<u8>>,
    digest: bool,
}

/// Is the line in `prefix` (complete, `len` bytes) a delimiter of
/// `boundary`? `Some(true)` for the close delimiter.
fn delimiter(prefix: &[u8], len: u64, boundary: &[u8]) -> Option<bool> {
    if len as usize > prefix.len() {
        return None;
    }
    let rest = prefix.strip_prefix(b"--")?.strip_prefix(boundary)?;
    let (close, rest) = match rest.strip_prefix(b"--") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    rest.iter()
        .all(|&b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .then_some(close)
}

/// Scans `src`. With `deep == false` only the top header is looked at
/// (the root is then one part covering the message).
pub fn scan(src: &dyn Source, deep: bool, crc: bool) -> io::Result<Structure> {
    let size = src.size();
    let mut lines = Lines::new(src, crc && deep);
    let mut parts = vec![Part {
        header_start: 0,
        body_start: 0,
        end: size,
        lines: 0,
        kind: Kind::Leaf,
        default_message: false,
    }];
    let mut stack = vec![Frame {
        part: 0,
        in_header: true,
        lf_at_body: 0,
        boundary: None,
        digest: false,
    }];
    let mut lf = 0u64;
    // Did the line before the current one end with CRLF?
    let mut prev_crlf = false;
    while let Some(line) = lines.next()? {
        let lo = line.offset;
        let hit = stack.iter().enumerate().rev().find_map(|(k, f)| {
            let b = f.boundary.as_deref()?;
            delimiter(&lines.prefix, line.len, b).map(|close| (k, close))
        });
        if let Some((k, close)) = hit {
            let eol = if lo == 0 {
                0
            } else if prev_crlf {
                2
            } else {
                1
            };
            let end = lo.saturating_sub(eol);
            while stack.len() > k + 1 {
                let f = stack.pop().expect("frame");
                finish(&mut parts[f.part], &f, end, lo, lf);
            }
            let parent = stack.last_mut().expect("frame");
            let room = parts.len() < MAX_PARTS;
            if close || !room {
                parent.boundary = None;
            } else {
                let child = parts.len();
                let digest = parent.digest;
                if let Kind::Multipart(kids) = &mut parts[parent.part].kind {
                    kids.push(child);
                }
                parts.push(Part {
                    header_start: lo + line.len,
                    body_start: lo + line.len,
                    end: size,
                    lines: 0,
                    kind: Kind::Leaf,
                    default_message: digest,
                });
                stack.push(Frame {
                    part: child,
                    in_header: true,
                    lf_at_body: 0,
                    boundary: None,
                    digest: false,
                });
            }
        } else {
            let top = stack.last_mut().expect("frame");
            let blank = line.has_lf && is_blank(&lines.prefix, line.len);
            if top.in_header && blank {
                let p = top.part;
                parts[p].body_start = lo + line.len;
                top.in_header = false;
                top.lf_at_body = lf + 1;
                if !deep && p == 0 {
                    return Ok(Structure { parts, crc: None });
                }
                let block = header_block(src, &parts[p])?;
                let info = type_info(&block, parts[p].default_message);
                let depth = stack.len();
                if depth < MAX_DEPTH {
                    if let Some(b) = info.multipart_boundary {
                        parts[p].kind = Kind::Multipart(Vec::new());
                        let top = stack.last_mut().expect("frame");
                        top.boundary = Some(b);
                        top.digest = info.digest;
                    } else if info.message && parts.len() < MAX_PARTS {
                        let inner = parts.len();
                        parts[p].kind = Kind::Message(inner);
                        let at = parts[p].body_start;
                        parts.push(Part {
                            header_start: at,
                            body_start: at,
                            end: size,
                            lines: 0,
                            kind: Kind::Leaf,
                            default_message: false,
                        });
                        stack.push(Frame {
                            part: inner,
                            in_header: true,
                            lf_at_body: 0,
                            boundary: None,
                            digest: false,
                        });
                    }
                }
            }
        }
        if line.has_lf {
            lf += 1;
        }
        prev_crlf = line.crlf;
    }
    lines.drain()?;
    while let Some(f) = stack.pop() {
        let p = &mut parts[f.part];
        if f.in_header {
            p.body_start = size;
        }
        p.end = size;
        p.lines = if f.in_header {
            0
        } else {
            lf.saturating_sub(f.lf_at_body)
        };
    }
    let crc = lines.hasher.map(|h| h.finalize());
    Ok(Structure { parts, crc })
}

fn is_blank(prefix: &[u8], len: u64) -> bool {
    len as usize == prefix.len() && (prefix == b"\r\n" || prefix == b"\n")
}

/// Closes a part at `end` (a delimiter line starts at `lo`; `lf` LFs
/// precede it).
fn finish(p: &mut Part, f: &Frame, end: u64, lo: u64, lf: u64) {
    if f.in_header {
        let at = end.max(p.header_start);
        p.body_start = at;
        p.end = at;
        p.lines = 0;
        return;
    }
    p.end = end.max(p.body_start);
    // The LF that ends the line before the delimiter is not the part's.
    p.lines = if lo > p.body_start {
        lf.saturating_sub(f.lf_at_body).saturating_sub(1)
    } else {
        0
    };
}

impl Structure {
    /// The part a section path (`1.2.3`) names, `None` if none.
    pub fn find(&self, path: &[u32]) -> Option<usize> {
        let mut cur = 0;
        for (depth, &n) in path.iter().enumerate() {
            let inner = self.inner(cur);
            let base = if depth == 0 {
                cur
            } else {
                inner.unwrap_or(cur)
            };
            cur = match &self.parts[base].kind {
                Kind::Multipart(kids) => *kids.get((n as usize).checked_sub(1)?)?,
                _ if n == 1 => {
                    // A non-multipart's only part is itself; a nested
                    // message's part 1 is its body.
                    if depth > 0 && inner.is_some() {
                        base
                    } else {
                        cur
                    }
                }
                _ => return None,
            };
        }
        Some(cur)
    }

    /// The encapsulated message of a message/rfc822 part.
    pub fn inner(&self, part: usize) -> Option<usize> {
        match self.parts[part].kind {
            Kind::Message(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MULTI: &[u8] = b"From: A <a@x.org>\r\nTo: b@y.org\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    fn body<'a>(raw: &'a [u8], s: &Structure, i: usize) -> &'a [u8] {
        let (o, l) = s.parts[i].body();
        &raw[o as usize..(o + l) as usize]
    }
    fn header<'a>(raw: &'a [u8], s: &Structure, i: usize) -> &'a [u8] {
        let (o, l) = s.parts[i].header();
        &raw[o as usize..(o + l) as usize]
    }

    #[test]
    fn offsets_of_nested_parts() {
        let s = scan(&Mem(MULTI), true, true).unwrap();
        assert_eq!(s.crc, Some(crc32fast::hash(MULTI)));
        let one = s.find(&[1]).unwrap();
        assert_eq!(body(MULTI, &s, one), b"one");
        assert_eq!(s.parts[one].lines, 0);
        assert_eq!(header(MULTI, &s, one), b"Content-Type: text/plain\r\n\r\n");
        let msg = s.find(&[2]).unwrap();
        assert_eq!(body(MULTI, &s, msg), b"Subject: inner\r\n\r\ninner body");
        assert_eq!(s.parts[msg].lines, 2);
        let inner = s.inner(msg).unwrap();
        assert_eq!(header(MULTI, &s, inner), b"Subject: inner\r\n\r\n");
        assert_eq!(body(MULTI, &s, inner), b"inner body");
        assert_eq!(body(MULTI, &s, s.find(&[2, 1]).unwrap()), b"inner body");
        assert!(s.find(&[3]).is_none());
        assert_eq!(s.parts[0].end, MULTI.len() as u64);
    }

    #[test]
    fn single_part_and_shallow() {
        let raw = b"Subject: x\r\n\r\nbody\r\nline 2\r\n";
        let s = scan(&Mem(&raw[..]), true, false).unwrap();
        assert_eq!(s.parts.len(), 1);
        assert_eq!(body(raw, &s, s.find(&[1]).unwrap()), b"body\r\nline 2\r\n");
        assert_eq!(s.parts[0].lines, 2);
        let s = scan(&Mem(&raw[..]), false, false).unwrap();
        assert_eq!(header(raw, &s, 0), b"Subject: x\r\n\r\n");
        assert_eq!(s.parts[0].end, raw.len() as u64);
        // No blank line: all header.
        let s = scan(&Mem(b"Subject: x\r\n"), true, false).unwrap();
        assert_eq!(s.parts[0].header(), (0, 12));
        assert_eq!(s.parts[0].body(), (12, 0));
    }

    #[test]
    fn nested_multiparts_unclosed_and_lf_only() {
        let raw = b"Content-Type: multipart/mixed; boundary=out\n\n--out\nContent-Type: multipart/alternative; boundary=in\n\n--in\n\nplain\n--in\nContent-Type: text/html\n\n<p>x</p>\n--out\n\nlast\n\n--out--\nepilogue\n";
        let s = scan(&Mem(&raw[..]), true, false).unwrap();
        assert_eq!(body(raw, &s, s.find(&[1, 1]).unwrap()), b"plain");
        // The inner multipart has no close delimiter: its last part ends
        // at the outer delimiter.
        assert_eq!(body(raw, &s, s.find(&[1, 2]).unwrap()), b"<p>x</p>");
        let last = s.find(&[2]).unwrap();
        assert_eq!(body(raw, &s, last), b"last\n");
        assert_eq!(s.parts[last].lines, 1);
        // "--outer" is not a delimiter of "out".
        let raw2 = b"Content-Type: multipart/mixed; boundary=out\r\n\r\n--out\r\n\r\na\r\n--outer\r\nb\r\n--out--\r\n";
        let s = scan(&Mem(&raw2[..]), true, false).unwrap();
        assert_eq!(body(raw2, &s, s.find(&[1]).unwrap()), b"a\r\n--outer\r\nb");
    }

    #[test]
    fn bounds_hold() {
        let mut raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n".to_vec();
        for _ in 0..MAX_PARTS + 10 {
            raw.extend_from_slice(b"--b\r\n\r\nx\r\n");
        }
        let s = scan(&Mem(&raw[..]), true, false).unwrap();
        assert_eq!(s.parts.len(), MAX_PARTS);
        let mut deep = Vec::new();
        for i in 0..MAX_DEPTH + 10 {
            deep.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        deep.extend_from_slice(b"\r\nleaf\r\n");
        let s = scan(&Mem(&deep[..]), true, false).unwrap();
        assert!(s.parts.len() <= MAX_DEPTH + 1, "{}", s.parts.len());
    }

    #[test]
    fn chunk_boundaries_do_not_matter() {
        // Lines straddling chunk ends, a delimiter among them.
        let mut raw = b"Content-Type: multipart/mixed; boundary=zz\r\n\r\n--zz\r\n\r\n".to_vec();
        while raw.len() < 3 * CHUNK + 5 {
            raw.extend_from_slice(b"0123456789abcdef0123456789\r\n");
        }
        raw.extend_from_slice(&vec![b'x'; CHUNK + 7]);
        raw.extend_from_slice(b"\r\n--zz\r\n\r\nsecond\r\n--zz--\r\n");
        let s = scan(&Mem(&raw[..]), true, true).unwrap();
        assert_eq!(s.crc, Some(crc32fast::hash(&raw)));
        let one = s.find(&[1]).unwrap();
        let b = body(&raw, &s, one);
        assert!(b.ends_with(b"xxx"));
        assert_eq!(
            s.parts[one].lines,
            b.iter().filter(|&&c| c == b'\n').count() as u64
        );
        assert_eq!(body(&raw, &s, s.find(&[2]).unwrap()), b"second");
    }
}
