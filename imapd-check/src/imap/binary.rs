//! BINARY (RFC 3516): `BINARY[section]<partial>`, `BINARY.PEEK` and
//! `BINARY.SIZE[section]` in FETCH, a part's content with its
//! Content-Transfer-Encoding undone.
//!
//! A part is decoded as a stream, in [`CHUNK`]-sized steps: once to find
//! its decoded size and whether the bytes to send hold a NUL (then they
//! go as a `~{n}` literal8, RFC 3516 4.3), and again while it is sent.
//! Memory stays at a chunk or two whatever the size of the part.
//!
//! Base64 and quoted-printable are decoded leniently, as RFC 2045 6.7 and
//! 6.8 advise: characters outside the base64 alphabet are skipped, a
//! malformed `=` sequence of quoted-printable is kept as it is. An
//! encoding other than 7bit, 8bit, binary, base64 or quoted-printable
//! answers `NO [UNKNOWN-CTE]` (RFC 3516 4.2), checked before anything of
//! the message is sent.

use std::cell::RefCell;
use std::io;
use std::num::NonZeroU32;

use imap_codec::imap_types::fetch::{MessageDataItemName, Part, Section};
use mail_parser::{MessageParser, MimeHeaders};

use super::emit::{Broken, Emitter};
use super::sort::quoted;
use super::structure::{self, CHUNK, Kind, Source, Structure};

/// A Content-Transfer-Encoding this server can undo.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

/// The part's Content-Transfer-Encoding is none of those.
#[derive(Debug, PartialEq, Eq)]
pub struct UnknownCte;

/// The encoding a Content-Transfer-Encoding value names.
fn cte_of(value: Option<&str>) -> Result<Cte, UnknownCte> {
    let v = super::mime::cte_mechanism(value.unwrap_or("7bit")).to_ascii_lowercase();
    match v.as_str() {
        "" | "7bit" | "8bit" | "binary" => Ok(Cte::Identity),
        "base64" => Ok(Cte::Base64),
        "quoted-printable" => Ok(Cte::QuotedPrintable),
        _ => Err(UnknownCte),
    }
}

/// One stretch of what a BINARY section sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Seg {
    /// Bytes made for the response (HEADER.FIELDS).
    Bytes(Vec<u8>),
    /// Bytes of the message (offset, length) with this encoding undone.
    Stored(u64, u64, Cte),
    /// `Content-Transfer-Encoding: binary`, in place of the field of a
    /// part sent decoded.
    BinaryField,
}

const BINARY_FIELD: &[u8] = b"Content-Transfer-Encoding: binary\r\n";

/// The Content-Transfer-Encoding field of a header block: its encoding
/// and its extent in the block (folded lines included).
pub(super) fn cte_field(block: &[u8]) -> (Option<(usize, usize)>, Result<Cte, UnknownCte>) {
    let parsed = MessageParser::default().parse_headers(block);
    let value = parsed
        .as_ref()
        .and_then(|m| m.parts.first())
        .and_then(|p| p.content_transfer_encoding());
    let cte = cte_of(value);
    let mut at = 0;
    let mut found: Option<(usize, usize)> = None;
    for line in block.split_inclusive(|&b| b == b'\n') {
        let start = at;
        at += line.len();
        let folded = line.starts_with(b" ") || line.starts_with(b"\t");
        match (&mut found, folded) {
            (Some((_, end)), true) if *end == start => *end = at,
            (Some(_), _) => break,
            (None, false) => {
                let name = line.split(|&b| b == b':').next().unwrap_or_default();
                if line.contains(&b':')
                    && name
                        .trim_ascii()
                        .eq_ignore_ascii_case(b"Content-Transfer-Encoding")
                {
                    found = Some((start, at));
                }
            }
            (None, true) => {}
        }
    }
    (found, cte)
}

/// Length of the blank line that ends a header (0 when there is none).
fn blank_line_len(src: &dyn Source, off: u64, len: u64) -> io::Result<u64> {
    let n = len.min(3);
    let tail = structure::read_range(src, off + len - n, n)?;
    let at_start = len == n;
    Ok(match tail.as_slice() {
        [.., b'\n', b'\r', b'\n'] | [b'\r', b'\n'] if at_start || tail.len() == 3 => 2,
        [.., b'\n', b'\n'] | [b'\n'] if at_start || tail.len() >= 2 => 1,
        _ => 0,
    })
}

/// The stretches of part `i` (its header too when `with_header`), every
/// leaf below it decoded and its Content-Transfer-Encoding field saying
/// `binary` (as Dovecot sends a composite part).
fn segments(
    src: &dyn Source,
    st: &Structure,
    i: usize,
    with_header: bool,
    out: &mut Vec<Seg>,
) -> io::Result<Result<(), UnknownCte>> {
    let part = &st.parts[i];
    let (h_off, h_len) = part.header();
    let (b_off, b_len) = part.body();
    match &part.kind {
        Kind::Leaf => {
            let block = structure::header_block(src, part)?;
            let (field, cte) = cte_field(&block);
            let cte = match cte {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            if with_header {
                match field.filter(|_| cte != Cte::Identity) {
                    Some((fs, fe)) => {
                        // The field goes; `binary` comes last, before the
                        // blank line (where Dovecot puts it).
                        let blank = blank_line_len(src, h_off, h_len)?;
                        let fs = (fs as u64).min(h_len - blank);
                        let fe = (fe as u64).clamp(fs, h_len - blank);
                        out.push(Seg::Stored(h_off, fs, Cte::Identity));
                        out.push(Seg::Stored(h_off + fe, h_len - blank - fe, Cte::Identity));
                        out.push(Seg::BinaryField);
                        out.push(Seg::Stored(h_off + h_len - blank, blank, Cte::Identity));
                    }
                    None => out.push(Seg::Stored(h_off, h_len, Cte::Identity)),
                }
            }
            out.push(Seg::Stored(b_off, b_len, cte));
        }
        Kind::Message(inner) => {
            if with_header {
                out.push(Seg::Stored(h_off, h_len, Cte::Identity));
            }
            if let Err(e) = segments(src, st, *inner, true, out)? {
                return Ok(Err(e));
            }
            let end = st.parts[*inner].end;
            out.push(Seg::Stored(end, part.end - end, Cte::Identity));
        }
        Kind::Multipart(kids) => {
            let mut at = if with_header { h_off } else { b_off };
            for &k in kids {
                let kid = &st.parts[k];
                out.push(Seg::Stored(at, kid.header_start - at, Cte::Identity));
                if let Err(e) = segments(src, st, k, true, out)? {
                    return Ok(Err(e));
                }
                at = kid.end;
            }
            out.push(Seg::Stored(at, part.end - at, Cte::Identity));
        }
    }
    Ok(Ok(()))
}

/// What a BINARY section names, as stretches to send. A part that does
/// not exist is empty (as Dovecot answers).
fn locate(
    src: &dyn Source,
    st: &Structure,
    section: &[NonZeroU32],
) -> io::Result<Result<Vec<Seg>, UnknownCte>> {
    let mut out = Vec::new();
    let found = if section.is_empty() {
        Some((0, true))
    } else {
        let path: Vec<u32> = section.iter().map(|n| n.get()).collect();
        st.find(&path).map(|i| (i, false))
    };
    if let Some((i, with_header)) = found
        && let Err(e) = segments(src, st, i, with_header, &mut out)?
    {
        return Ok(Err(e));
    }
    out.retain(|s| !matches!(s, Seg::Stored(_, 0, _)));
    Ok(Ok(out))
}

/// Checks that every BINARY item of a FETCH can be served for this
/// message (known encodings), before any of its response is sent.
pub fn check(
    src: &dyn Source,
    st: &Structure,
    items: &[MessageDataItemName],
    alias: &[Option<Flavor>],
) -> io::Result<Result<(), UnknownCte>> {
    let mut body_ext = 0;
    for it in items {
        let found = match it {
            MessageDataItemName::Binary { section, .. }
            | MessageDataItemName::BinarySize { section } => locate(src, st, section)?,
            MessageDataItemName::BodyExt {
                section: Some(Section::Text(p)),
                ..
            } if alias.get(body_ext).is_some_and(Option::is_some) => {
                body_ext += 1;
                text_segments(src, st, p.as_ref())?
            }
            MessageDataItemName::BodyExt { .. } => {
                body_ext += 1;
                continue;
            }
            _ => continue,
        };
        if let Err(e) = found {
            return Ok(Err(e));
        }
    }
    Ok(Ok(()))
}

/// The TEXT of the message `p` names (the top one for none), decoded:
/// the stretches `BINARY[p.TEXT]` sends. Nothing for a part that is no
/// message.
pub(super) fn text_segments(
    src: &dyn Source,
    st: &Structure,
    p: Option<&Part>,
) -> io::Result<Result<Vec<Seg>, UnknownCte>> {
    let msg = match p {
        None => Some(0),
        Some(p) => {
            let path: Vec<u32> = p.0.as_ref().iter().map(|n| n.get()).collect();
            st.find(&path).and_then(|i| st.inner(i))
        }
    };
    let mut out = Vec::new();
    if let Some(i) = msg
        && let Err(e) = segments(src, st, i, false, &mut out)?
    {
        return Ok(Err(e));
    }
    out.retain(|s| !matches!(s, Seg::Stored(_, 0, _)));
    Ok(Ok(out))
}

/// A FETCH item imap-codec cannot parse as BINARY (a section with
/// HEADER, TEXT or MIME, as Dovecot takes them) and that came through it
/// as BODY: what to answer it as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Binary,
    Size,
}

/// Rewrites the BINARY items of a FETCH that imap-codec cannot parse:
/// `BINARY[2.HEADER]`, `BINARY.PEEK[TEXT]`, `BINARY.SIZE[1.MIME]` become
/// BODY (or BODY.PEEK) items, and a partial without a length,
/// `BINARY[1]<15>`, gets the largest one. RFC 3516's grammar has only
/// part numbers and `<origin.length>`; Dovecot takes these too, and
/// clients and test suites written against it send them. Gives back the
/// command and, for each BODY item of it in order, whether it stands for
/// a BINARY one; `None` when nothing needs rewriting.
pub fn rewrite_fetch(cmd: &[u8]) -> Option<(Vec<u8>, Vec<Option<Flavor>>)> {
    const NAMES: [(&[u8], Option<Flavor>, &[u8]); 5] = [
        (b"BINARY.PEEK[", Some(Flavor::Binary), b"BODY.PEEK["),
        (b"BINARY.SIZE[", Some(Flavor::Size), b"BODY.PEEK["),
        (b"BINARY[", Some(Flavor::Binary), b"BODY["),
        (b"BODY.PEEK[", None, b""),
        (b"BODY[", None, b""),
    ];
    let upper = cmd.to_ascii_uppercase();
    let first_line = &upper[..upper
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(upper.len())];
    let mut words = first_line.split(|&b| b == b' ').skip(1);
    let name = match words.next() {
        Some(b"UID") => words.next(),
        w => w,
    };
    if name != Some(b"FETCH".as_slice()) || !first_line.windows(6).any(|w| w == b"BINARY") {
        return None;
    }
    let mut out = Vec::with_capacity(cmd.len() + 16);
    let mut alias = Vec::new();
    let mut changed = false;
    let mut i = 0;
    while i < cmd.len() {
        match cmd[i] {
            b'"' => {
                let (_, end) = quoted(cmd, i);
                let end = end.min(cmd.len());
                out.extend_from_slice(&cmd[i..end]);
                i = end;
                continue;
            }
            b'{' => {
                // A literal: copy it whole.
                let close = cmd[i..].iter().position(|&c| c == b'}').map(|p| i + p);
                let n = close.and_then(|c| {
                    let digits = cmd[i + 1..c].strip_suffix(b"+").unwrap_or(&cmd[i + 1..c]);
                    std::str::from_utf8(digits).ok()?.parse::<usize>().ok()
                });
                if let (Some(c), Some(n)) = (close, n) {
                    let end = (c + 3 + n).min(cmd.len());
                    out.extend_from_slice(&cmd[i..end]);
                    i = end;
                    continue;
                }
            }
            _ => {}
        }
        let at_item = i > 0 && matches!(cmd[i - 1], b' ' | b'(');
        let named = NAMES
            .iter()
            .find(|(n, _, _)| at_item && upper[i..].starts_with(n));
        let Some(&(name, flavor, body_name)) = named else {
            out.push(cmd[i]);
            i += 1;
            continue;
        };
        // The section: to its `]`, past parenthesised field names.
        let open = i + name.len();
        let mut j = open;
        let mut depth = 0usize;
        while j < cmd.len() && !(cmd[j] == b']' && depth == 0) {
            match cmd[j] {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                b'"' => j = quoted(cmd, j).1 - 1,
                _ => {}
            }
            j += 1;
        }
        let section = &cmd[open..j.min(cmd.len())];
        let numeric = section.iter().all(|b| b.is_ascii_digit() || *b == b'.');
        let binary = flavor.is_some();
        if binary && !numeric {
            out.extend_from_slice(body_name);
            alias.push(flavor);
            changed = true;
        } else {
            out.extend_from_slice(&cmd[i..open]);
            if !binary {
                alias.push(None);
            }
        }
        out.extend_from_slice(section);
        i = j;
        if i < cmd.len() {
            out.push(b']');
            i += 1;
        }
        // `<origin>` without a length.
        if binary && cmd.get(i) == Some(&b'<') {
            let close = cmd[i..].iter().position(|&c| c == b'>').map(|p| i + p);
            if let Some(c) = close
                && cmd[i + 1..c].iter().all(u8::is_ascii_digit)
                && c > i + 1
            {
                out.extend_from_slice(&cmd[i..c]);
                out.extend_from_slice(b".4294967295>");
                i = c + 1;
                changed = true;
            }
        }
    }
    changed.then_some((out, alias))
}

/// A streaming decoder.
enum Decoder {
    Identity,
    Base64 { acc: u32, bits: u8 },
    Qp(Qp),
}

/// Quoted-printable state between chunks.
#[derive(Default)]
struct Qp {
    /// Spaces and tabs not yet known to be trailing (RFC 2045 6.7 (3)).
    ws: Vec<u8>,
    /// After `=`: what followed it so far (hex digit, spaces, CR).
    eq: Option<Vec<u8>>,
    /// A CR not yet known to start a CRLF.
    cr: bool,
}

/// Whitespace runs are held back up to this long, then let through.
const MAX_HELD: usize = 998;

fn b64_value(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

impl Decoder {
    fn new(cte: Cte) -> Decoder {
        match cte {
            Cte::Identity => Decoder::Identity,
            Cte::Base64 => Decoder::Base64 { acc: 0, bits: 0 },
            Cte::QuotedPrintable => Decoder::Qp(Qp::default()),
        }
    }

    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        match self {
            Decoder::Identity => out.extend_from_slice(input),
            Decoder::Base64 { acc, bits } => {
                for &c in input {
                    if c == b'=' {
                        // Padding ends a group: what follows starts afresh
                        // (bodies made of several encoded pieces).
                        (*acc, *bits) = (0, 0);
                        continue;
                    }
                    let Some(v) = b64_value(c) else { continue };
                    *acc = (*acc << 6) | v;
                    *bits += 6;
                    if *bits >= 8 {
                        *bits -= 8;
                        out.push((*acc >> *bits) as u8);
                        *acc &= (1 << *bits) - 1;
                    }
                }
            }
            Decoder::Qp(q) => {
                for &c in input {
                    q.byte(c, out);
                }
            }
        }
    }

    /// What is held back at the end of the input.
    fn finish(&mut self, out: &mut Vec<u8>) {
        if let Decoder::Qp(q) = self {
            if q.cr {
                out.extend_from_slice(&q.ws);
                q.ws.clear();
                out.push(b'\r');
                q.cr = false;
            }
            if let Some(e) = q.eq.take() {
                out.extend_from_slice(&q.ws);
                q.ws.clear();
                out.push(b'=');
                out.extend_from_slice(&e);
            }
            // The part's last line ends here (its line break belongs to
            // the boundary that follows): its trailing whitespace goes,
            // as on every other line (RFC 2045 6.7 (3)).
            q.ws.clear();
        }
    }
}

impl Qp {
    fn byte(&mut self, c: u8, out: &mut Vec<u8>) {
        if let Some(mut e) = self.eq.take() {
            match (e.as_slice(), c) {
                // `=XY`: one octet.
                ([h], _) if h.is_ascii_hexdigit() && c.is_ascii_hexdigit() => {
                    out.push(hex(*h) << 4 | hex(c));
                    return;
                }
                // `=` [spaces] [CR] LF: a soft line break.
                (rest, b'\n') if rest.iter().all(|&b| b == b' ' || b == b'\t' || b == b'\r') => {
                    return;
                }
                ([], _) if c.is_ascii_hexdigit() => {
                    e.push(c);
                    self.eq = Some(e);
                    return;
                }
                (rest, b' ' | b'\t')
                    if rest.len() < MAX_HELD && rest.iter().all(|&b| b == b' ' || b == b'\t') =>
                {
                    e.push(c);
                    self.eq = Some(e);
                    return;
                }
                (rest, b'\r') if rest.iter().all(|&b| b == b' ' || b == b'\t') => {
                    e.push(c);
                    self.eq = Some(e);
                    return;
                }
                _ => {
                    // Not an escape: the `=` and what followed stay.
                    out.push(b'=');
                    for &b in &e {
                        self.plain(b, out);
                    }
                }
            }
        }
        self.plain(c, out);
    }

    fn plain(&mut self, c: u8, out: &mut Vec<u8>) {
        if self.cr {
            self.cr = false;
            if c == b'\n' {
                // Trailing whitespace before a line end is dropped.
                self.ws.clear();
                out.extend_from_slice(b"\r\n");
                return;
            }
            out.append(&mut self.ws);
            out.push(b'\r');
        }
        match c {
            b'=' => {
                out.append(&mut self.ws);
                self.eq = Some(Vec::new());
            }
            b' ' | b'\t' => {
                if self.ws.len() >= MAX_HELD {
                    out.append(&mut self.ws);
                }
                self.ws.push(c);
            }
            b'\r' => self.cr = true,
            b'\n' => {
                self.ws.clear();
                out.push(b'\n');
            }
            _ => {
                out.append(&mut self.ws);
                out.push(c);
            }
        }
    }
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Stretches of a message read as the bytes BINARY sends. Reads are
/// expected in ascending order (as a literal is sent); going back starts
/// the decoding over.
struct Decoded<'a> {
    src: &'a dyn Source,
    segs: &'a [Seg],
    size: u64,
    state: RefCell<DecodeState>,
}

struct DecodeState {
    /// The stretch being read, its decoder and the bytes of it read.
    seg: usize,
    decoder: Option<Decoder>,
    read: u64,
    /// Decoded bytes not yet passed on, and the decoded offset of the first.
    out: Vec<u8>,
    out_start: u64,
}

impl DecodeState {
    fn new() -> DecodeState {
        DecodeState {
            seg: 0,
            decoder: None,
            read: 0,
            out: Vec::new(),
            out_start: 0,
        }
    }
}

impl<'a> Decoded<'a> {
    fn new(src: &'a dyn Source, segs: &'a [Seg], size: u64) -> Self {
        Decoded {
            src,
            segs,
            size,
            state: RefCell::new(DecodeState::new()),
        }
    }

    /// Decodes the next chunk into `st.out`; false at the end.
    fn step(&self, st: &mut DecodeState, buf: &mut [u8]) -> io::Result<bool> {
        let Some(seg) = self.segs.get(st.seg) else {
            return Ok(false);
        };
        let (offset, len, cte) = match seg {
            Seg::BinaryField => {
                st.out.extend_from_slice(BINARY_FIELD);
                st.seg += 1;
                return Ok(true);
            }
            Seg::Bytes(b) => {
                st.out.extend_from_slice(b);
                st.seg += 1;
                return Ok(true);
            }
            Seg::Stored(o, l, c) => (*o, *l, *c),
        };
        let decoder = st.decoder.get_or_insert_with(|| Decoder::new(cte));
        let want = (len - st.read).min(buf.len() as u64) as usize;
        if want == 0 {
            decoder.finish(&mut st.out);
            st.decoder = None;
            st.read = 0;
            st.seg += 1;
            return Ok(true);
        }
        let n = self.src.read_at(offset + st.read, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "message file ended early",
            ));
        }
        st.read += n as u64;
        decoder.feed(&buf[..n], &mut st.out);
        Ok(true)
    }
}

impl Source for Decoded<'_> {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let mut st = self.state.borrow_mut();
        if offset < st.out_start {
            *st = DecodeState::new();
        }
        let mut enc = vec![0u8; CHUNK];
        loop {
            let end = st.out_start + st.out.len() as u64;
            if offset < end {
                let at = (offset - st.out_start) as usize;
                let n = buf.len().min(st.out.len() - at);
                buf[..n].copy_from_slice(&st.out[at..at + n]);
                return Ok(n);
            }
            st.out_start = end;
            st.out.clear();
            if !self.step(&mut st, &mut enc)? {
                return Ok(0);
            }
        }
    }
}

/// The size of what `segs` send, and whether `window` of it holds a NUL.
fn measure(src: &dyn Source, segs: &[Seg], window: (u64, u64)) -> io::Result<(u64, bool)> {
    let d = Decoded::new(src, segs, u64::MAX);
    let mut st = d.state.borrow_mut();
    let mut enc = vec![0u8; CHUNK];
    let mut size = 0u64;
    let mut nul = false;
    while d.step(&mut st, &mut enc)? {
        let start = size;
        size += st.out.len() as u64;
        let lo = window.0.max(start);
        let hi = (window.0.saturating_add(window.1)).min(size);
        if lo < hi && !nul {
            nul =
                memchr::memchr(0, &st.out[(lo - start) as usize..(hi - start) as usize]).is_some();
        }
        st.out.clear();
    }
    Ok((size, nul))
}

fn section_text(out: &mut Vec<u8>, section: &[NonZeroU32]) {
    let s: Vec<String> = section.iter().map(|n| n.to_string()).collect();
    out.push(b'[');
    out.extend_from_slice(s.join(".").as_bytes());
    out.push(b']');
}

/// What `check` let through cannot fail here; if it does, the
/// response is already begun.
fn checked(r: io::Result<Result<Vec<Seg>, UnknownCte>>) -> Result<Vec<Seg>, Broken> {
    match r.map_err(Broken::Source)? {
        Ok(segs) => Ok(segs),
        Err(UnknownCte) => Err(Broken::Source(io::Error::other("unknown CTE"))),
    }
}

/// `BINARY[section]<origin> ~{n}` and the decoded bytes.
pub fn render(
    em: &mut Emitter,
    src: &dyn Source,
    st: &Structure,
    section: &[NonZeroU32],
    partial: Option<(u32, NonZeroU32)>,
) -> Result<(), Broken> {
    em.buf.extend_from_slice(b"BINARY");
    section_text(&mut em.buf, section);
    let segs = checked(locate(src, st, section))?;
    emit(em, src, &segs, partial)
}

/// `<origin> ~{n}` and the bytes of `segs` (the name is written).
pub(super) fn emit(
    em: &mut Emitter,
    src: &dyn Source,
    segs: &[Seg],
    partial: Option<(u32, NonZeroU32)>,
) -> Result<(), Broken> {
    if let Some((origin, _)) = partial {
        em.buf.extend_from_slice(format!("<{origin}>").as_bytes());
    }
    let window = partial.map_or((0, u64::MAX), |(o, l)| (o as u64, l.get() as u64));
    let (size, nul) = measure(src, segs, window).map_err(Broken::Source)?;
    let start = window.0.min(size);
    let n = window.1.min(size - start);
    em.buf.push(b' ');
    if nul {
        em.buf.push(b'~');
    }
    em.literal_as(&Decoded::new(src, segs, size), start, n, None, nul)
}

/// The size of what `segs` send.
pub(super) fn size(src: &dyn Source, segs: &[Seg]) -> Result<u64, Broken> {
    Ok(measure(src, segs, (0, 0)).map_err(Broken::Source)?.0)
}

/// What `check` let through cannot fail here; see [`checked`].
pub(super) fn checked_text(
    src: &dyn Source,
    st: &Structure,
    p: Option<&Part>,
) -> Result<Vec<Seg>, Broken> {
    checked(text_segments(src, st, p))
}

/// `BINARY.SIZE[section] n`.
pub fn render_size(
    out: &mut Vec<u8>,
    src: &dyn Source,
    st: &Structure,
    section: &[NonZeroU32],
) -> Result<(), Broken> {
    out.extend_from_slice(b"BINARY.SIZE");
    section_text(out, section);
    let segs = checked(locate(src, st, section))?;
    out.extend_from_slice(format!(" {}", size(src, &segs)?).as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::structure::Mem;

    fn decode(cte: Cte, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut d = Decoder::new(cte);
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            d.feed(c, &mut out);
        }
        d.finish(&mut out);
        out
    }

    /// RFC 2045 6.8, whatever the chunking; junk outside the alphabet
    /// is skipped.
    #[test]
    fn base64_decodes_in_any_chunks() {
        for chunk in [1, 2, 3, 5, 64] {
            assert_eq!(
                decode(Cte::Base64, b"SGVs\r\nbG8A\r\nd29y bGQ=\r\n", chunk),
                b"Hello\0world"
            );
            assert_eq!(decode(Cte::Base64, b"YQ==", chunk), b"a");
            assert_eq!(decode(Cte::Base64, b"YWI=", chunk), b"ab");
            assert_eq!(decode(Cte::Base64, b"Y*W!Jj", chunk), b"abc");
            assert_eq!(
                decode(Cte::Base64, b"SGVsbG8=V29ybGQ=", chunk),
                b"HelloWorld"
            );
        }
    }

    /// RFC 2045 6.7: `=XY` octets, soft line breaks (with transport
    /// padding), trailing whitespace dropped, malformed `=` kept.
    #[test]
    fn quoted_printable_decodes_in_any_chunks() {
        for chunk in [1, 2, 3, 7, 64] {
            let q = |s: &[u8]| decode(Cte::QuotedPrintable, s, chunk);
            assert_eq!(q(b"caf=C3=A9 =00x\r\n"), b"caf\xc3\xa9 \0x\r\n");
            assert_eq!(q(b"long=\r\nline=  \r\nend"), b"longlineend");
            assert_eq!(q(b"trail   \r\nnext\t\nz"), b"trail\r\nnext\nz");
            assert_eq!(q(b"a=zz b=4 c=\r"), b"a=zz b=4 c=\r");
            assert_eq!(q(b"x = y"), b"x = y");
            assert_eq!(q(b"end="), b"end=");
            // The last line's trailing whitespace goes too; an encoded
            // space stays.
            assert_eq!(q(b"foo\r\nbar  "), b"foo\r\nbar");
            assert_eq!(q(b"foo\t \tb \t"), b"foo\t \tb");
            assert_eq!(q(b"foo=20  "), b"foo ");
        }
    }

    fn rw(s: &str) -> Option<(String, Vec<Option<Flavor>>)> {
        rewrite_fetch(s.as_bytes()).map(|(c, a)| (String::from_utf8(c).unwrap(), a))
    }

    /// Dovecot's BINARY forms that RFC 3516's grammar lacks.
    #[test]
    fn binary_items_beyond_part_numbers_are_rewritten() {
        use Flavor::*;
        assert_eq!(rw("a FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[2])\r\n"), None);
        assert_eq!(
            rw("a FETCH 1 (BODY[1] binary.peek[TEXT] BINARY.SIZE[2.MIME] BINARY[1]<0.5>)\r\n"),
            Some((
                "a FETCH 1 (BODY[1] BODY.PEEK[TEXT] BODY.PEEK[2.MIME] BINARY[1]<0.5>)\r\n".into(),
                vec![None, Some(Binary), Some(Size)]
            ))
        );
        assert_eq!(
            rw("a UID FETCH 1 (BINARY[2.HEADER.FIELDS (from \"x]\")] BINARY.PEEK[5]<15>)\r\n"),
            Some((
                "a UID FETCH 1 (BODY[2.HEADER.FIELDS (from \"x]\")] BINARY.PEEK[5]<15.4294967295>)\r\n"
                    .into(),
                vec![Some(Binary)]
            ))
        );
        assert_eq!(rw("a SEARCH BINARY[TEXT]\r\n"), None);
        assert_eq!(rw("a STORE 1 FLAGS (FETCH BINARY[TEXT])\r\n"), None);
    }

    #[test]
    fn decoded_source_reads_windows() {
        let enc: Vec<u8> = {
            let mut v = Vec::new();
            for i in 0..100_000u32 {
                v.extend_from_slice(format!("={:02X}", i % 256).as_bytes());
                if i % 20 == 19 {
                    v.extend_from_slice(b"=\r\n");
                }
            }
            v
        };
        let src = Mem(&enc);
        let r = [Seg::Stored(0, enc.len() as u64, Cte::QuotedPrintable)];
        let (size, nul) = measure(&src, &r, (1, 10)).unwrap();
        assert_eq!(size, 100_000);
        assert!(!nul);
        assert!(measure(&src, &r, (250, 10)).unwrap().1);
        let d = Decoded::new(&src, &r, size);
        let mut buf = [0u8; 3];
        assert_eq!(d.read_at(70_000, &mut buf).unwrap(), 3);
        assert_eq!(buf, [(70_000 % 256) as u8, 113, 114]);
        assert_eq!(d.read_at(5, &mut buf).unwrap(), 3);
        assert_eq!(buf, [5, 6, 7]);
        assert_eq!(d.read_at(size, &mut buf).unwrap(), 0);
    }
}
