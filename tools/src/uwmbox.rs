//! Reading a UW-IMAP account (c-client's `unix`/`mbox` driver) for a
//! whole-account import that keeps UIDs (`idx-admin import --uw-mbox`,
//! `account.rs`, OPERATIONS.md §4a "UW-IMAP (c-client mbox) accounts").
//!
//! What is read, as c-client's `unix.c` (imap-2007; `unix_parse`,
//! `unix_header`, `unix_append_msg`) reads it, checked against Debian's
//! c-client 2007f (`mailutil`, tests/tests/uw_mbox_import.rs):
//! - a message starts at a `From ` line with a valid date (c-client's
//!   `VALID`), anywhere in the body, with or without an empty line before
//!   it; in the header no line starts a message. The file may start with
//!   white space; after it the first line must be such a `From ` line, or
//!   the file is not an mbox. `Content-Length:` is not used to find the
//!   end of a message (c-client ignores it, and serves it as part of the
//!   header). The `From ` line's date is the INTERNALDATE (without a
//!   numeric zone: this host's local time, as c-client read it);
//! - with c-client's `mbox` driver, INBOX is `~/mbox` and new mail waits
//!   in the system mailbox until c-client moves it there ([`Sources::spool`]);
//! - the first message may carry `X-IMAP: <uidvalidity> <last uid>
//!   [keywords]`: it is then the folder's pseudo-message (`DON'T DELETE
//!   THIS MESSAGE -- FOLDER INTERNAL DATA`) and is no message of the
//!   folder; or `X-IMAPbase:` with the same fields in a real first message.
//!   Only in the first message, and only with a UIDVALIDITY above 0 and a
//!   last UID;
//! - per message `X-UID: <uid>`, believed only under a UIDVALIDITY. An
//!   X-UID that is a message's second one, not above the UID before it,
//!   or above the last UID makes c-client drop the folder's UIDVALIDITY
//!   (it then gives every message a new UID under a new one): such a
//!   folder's UIDs cannot be kept. A message without X-UID gets the next
//!   UID after the last (so every later X-UID is out of order);
//! - `Status:` and `X-Status:` letters R (\Seen), D (\Deleted),
//!   F (\Flagged), A (\Answered), T (\Draft) in either; O (old) only says
//!   "not \Recent". `X-Keywords:` names keywords of the folder's list (the
//!   X-IMAP/X-IMAPbase line, at most 30); others are not shown by c-client
//!   and are reported;
//! - the headers `Status`, `X-Status`, `X-Keywords`, `X-UID`, `X-IMAP`,
//!   `X-IMAPbase` (any case) and their continuation lines are hidden from
//!   the message, and the empty line that ends a message's body before the
//!   next `From ` line belongs to the mbox: the stored message is what
//!   c-client served (its RFC822.SIZE and bytes, LF turned into CRLF).
//!   `>From ` lines are served as they are: c-client quotes `From ` lines
//!   when it writes and never unquotes (mboxo); other quoting can be asked
//!   for (`--quoting`).
//!
//! Every file and line is bounded before it sizes anything; a folder or
//! message that cannot be used is reported, never guessed at.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use storage::Flags;

use crate::dovecot::{Account, Folder, MAX_FOLDERS, MAX_SMALL_FILE_BYTES, SourceMessage};
use crate::mbox::Quoting;

/// c-client's NUSERFLAGS: keywords a folder's list can hold.
pub const MAX_KEYWORDS: usize = 30;
/// The longest line looked at as a whole; longer lines are read in pieces
/// (never a separator, never a header that carries state).
pub const MAX_LINE: usize = 64 << 10;
/// Header lines kept per message to read its state.
const MAX_HEADER_LINES: usize = 10_000;
/// The most messages read from one folder.
pub const MAX_MESSAGES: usize = 4_000_000;
/// How deep a mail directory tree is walked (the store's name limit).
const MAX_DEPTH: usize = 32;

/// The headers c-client keeps its state in and hides from the message.
const HIDDEN: [&str; 6] = [
    "status",
    "x-status",
    "x-keywords",
    "x-uid",
    "x-imap",
    "x-imapbase",
];

/// Where a message is inside its mbox file and how its stored bytes are
/// made from the file's bytes.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// The first byte after the `From ` line.
    pub offset: u64,
    /// Up to the next `From ` line (or the end of the file).
    pub len: u64,
    /// CRC32 of those bytes when the folder was read: a file rewritten
    /// since (UW-IMAP still running) is noticed, never imported wrong.
    pub crc: u32,
    pub quoting: Option<Quoting>,
}

impl Part {
    /// The message as UW-IMAP served it: hidden headers and the mbox's
    /// final empty line removed, CRLF line ends.
    pub fn read(&self, path: &Path) -> Result<Vec<u8>, String> {
        let err = |e: std::io::Error| format!("read {}: {e}", path.display());
        let mut f = fs::File::open(path).map_err(err)?;
        f.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut raw = Vec::new();
        f.take(self.len).read_to_end(&mut raw).map_err(err)?;
        if raw.len() as u64 != self.len || crc32fast::hash(&raw) != self.crc {
            return Err(format!(
                "{}: the message at offset {} is not what it was when the file was read \
                 (the file was rewritten meanwhile: stop UW-IMAP for the user and run again)",
                path.display(),
                self.offset
            ));
        }
        Ok(stored(&raw, self.quoting))
    }
}

/// The name of a header line (up to `:` or white space), if it has one.
fn header_name(line: &[u8]) -> &[u8] {
    let end = line
        .iter()
        .position(|b| matches!(b, b':' | b' ' | b'\t' | b'\r' | b'\n'))
        .unwrap_or(line.len());
    &line[..end]
}

fn is_hidden(line: &[u8]) -> bool {
    let n = header_name(line);
    HIDDEN.iter().any(|h| n.eq_ignore_ascii_case(h.as_bytes()))
}

fn strip_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The stored bytes of one message from its mbox bytes (after the `From `
/// line, up to the next one).
pub fn stored(raw: &[u8], quoting: Option<Quoting>) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 40);
    let mut in_header = true;
    let mut retain = true;
    let lines: Vec<&[u8]> = raw.split_inclusive(|b| *b == b'\n').collect();
    // The body's last line, when empty, is the mbox's separator.
    let mut n = lines.len();
    let header_end = lines.iter().position(|l| strip_eol(l).is_empty());
    if let Some(h) = header_end
        && n > h + 1
        && strip_eol(lines[n - 1]).is_empty()
    {
        n -= 1;
    }
    for (i, line) in lines[..n].iter().enumerate() {
        let content = strip_eol(line);
        if in_header {
            if Some(i) == header_end {
                in_header = false;
            } else if content.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                if !retain {
                    continue;
                }
            } else if is_hidden(content) {
                retain = false;
                continue;
            } else {
                retain = true;
            }
        }
        let content = match quoting {
            Some(q) if !in_header => crate::mbox::unquote(content, q),
            _ => content,
        };
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    // A last line without its newline stays without one (as c-client).
    if n == lines.len() && !raw.is_empty() && !raw.ends_with(b"\n") {
        out.truncate(out.len() - 2);
    }
    out
}

/// If `line` starts a message (c-client's `VALID`), its date (unix
/// seconds) and zone (minutes east of UTC): `From sender Www Mmm dd
/// hh:mm[:ss] [zone] yyyy [zone] [remote from host]`. A numeric zone
/// (`+0100`) is used; without one (or with a name such as `PST`) the time
/// is this host's local time (the `TZ` environment variable), as c-client
/// read it ("LCL").
pub fn separator_date(line: &[u8]) -> Option<(i64, i16)> {
    let line = strip_eol(line);
    let line = match line.windows(13).position(|w| w == b" remote from ") {
        Some(p) => &line[..p],
        None => line,
    };
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.strip_prefix("From ")?;
    let toks: Vec<&str> = rest.split_whitespace().collect();
    // The sender, then the date; a zone name is dropped.
    let date: Vec<&str> = toks
        .iter()
        .skip(1)
        .enumerate()
        .filter(|(i, t)| {
            *i < 4 || !(t.len() >= 3 && t.len() <= 5 && t.bytes().all(|b| b.is_ascii_alphabetic()))
        })
        .map(|(_, t)| *t)
        .collect();
    let t = crate::date::parse_asctime(&date.join(" "))?;
    let zone = date.iter().skip(4).find_map(|z| {
        let sign = match z.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let v: i16 = z.get(1..5)?.parse().ok()?;
        Some(sign * (v / 100 * 60 + v % 100))
    });
    Some(match zone {
        Some(z) => (t, z),
        None => {
            // `t` read the wall clock as UTC: the local instant, and its
            // offset.
            let at = local_to_utc(t);
            (at, ((t - at) / 60) as i16)
        }
    })
}

/// `naive` is a local wall-clock time written as if it were UTC; the
/// instant it names in this host's zone (`mktime`, DST included).
fn local_to_utc(naive: i64) -> i64 {
    let days = naive.div_euclid(86_400);
    let secs = naive.rem_euclid(86_400);
    let (y, m, d) = crate::date::civil_from_days(days);
    // SAFETY: `tm` is a plain C struct, zeroed then filled; mktime only
    // reads and normalises it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as i32;
    tm.tm_mon = m as i32 - 1;
    tm.tm_mday = d as i32;
    tm.tm_hour = (secs / 3600) as i32;
    tm.tm_min = (secs / 60 % 60) as i32;
    tm.tm_sec = (secs % 60) as i32;
    tm.tm_isdst = -1;
    // SAFETY: a valid, exclusively borrowed `tm`.
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 { naive } else { t }
}

/// Leading decimal digits (at most 10) of `s` after spaces, and the rest.
fn number(s: &[u8]) -> (Option<u64>, &[u8]) {
    let s = trim_start(s);
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 10 {
        return (None, &s[n..]);
    }
    let v = std::str::from_utf8(&s[..n])
        .ok()
        .and_then(|d| d.parse().ok());
    (v, &s[n..])
}

fn trim_start(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
    &s[n..]
}

fn words(s: &[u8]) -> impl Iterator<Item = String> + '_ {
    s.split(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
}

/// Warnings about one folder: the first [`MAX_NOTES`] kept, the rest
/// counted (a folder of millions of odd messages must not fill memory).
#[derive(Default)]
struct Notes {
    kept: Vec<String>,
    more: usize,
}

/// The most warnings kept per folder.
const MAX_NOTES: usize = 1000;

impl Notes {
    fn push(&mut self, s: String) {
        if self.kept.len() < MAX_NOTES {
            self.kept.push(s);
        } else {
            self.more += 1;
        }
    }

    fn finish(mut self) -> Vec<String> {
        if self.more > 0 {
            self.kept
                .push(format!("... and {} more warnings like these", self.more));
        }
        self.kept
    }
}

/// The folder-level state c-client keeps while it parses.
#[derive(Default)]
struct UidState {
    uidvalidity: Option<u32>,
    /// From X-IMAP/X-IMAPbase.
    header_last: u64,
    /// c-client's `uid_last`, raised for each message without an X-UID.
    uid_last: u64,
    prevuid: u64,
    keywords: Vec<String>,
    /// Why the UIDs cannot be kept.
    broken: Option<String>,
    /// The first message was the pseudo-message.
    pseudo_seen: bool,
}

/// One message's state headers.
#[derive(Default)]
struct MsgState {
    pseudo: bool,
    uid: Option<u32>,
    flags: Flags,
    keywords: Vec<String>,
}

impl UidState {
    /// Reads one header line of message `index` (0-based, the
    /// pseudo-message counted).
    fn header(&mut self, index: usize, line: &[u8], m: &mut MsgState, warnings: &mut Notes) {
        let line = strip_eol(line);
        if let Some(rest) = line
            .strip_prefix(b"X-IMAP:")
            .map(|r| (r, true))
            .or_else(|| line.strip_prefix(b"X-IMAPbase:").map(|r| (r, false)))
        {
            let (rest, pseudo) = rest;
            if index != 0 || self.uidvalidity.is_some() {
                return;
            }
            let (v, after) = number(rest);
            let (last, after) = number(after);
            if let (Some(v), Some(last)) = (v, last)
                && v > 0
                && v <= u32::MAX as u64
                && last < u32::MAX as u64
            {
                self.uidvalidity = Some(v as u32);
                self.header_last = last;
                self.uid_last = last;
                m.pseudo = pseudo;
                let all: Vec<String> = words(after).collect();
                if all.len() > MAX_KEYWORDS {
                    warnings.push(format!(
                        "{} keywords in the folder's list, c-client keeps the first {MAX_KEYWORDS}",
                        all.len()
                    ));
                }
                self.keywords = all.into_iter().take(MAX_KEYWORDS).collect();
            }
        } else if let Some(rest) = line.strip_prefix(b"X-UID:") {
            if self.uidvalidity.is_none() || self.broken.is_some() || (index == 0 && m.pseudo) {
                return;
            }
            let n = index + 1 - usize::from(self.pseudo_seen);
            let j = number(rest).0.unwrap_or(0);
            let why = if let Some(had) = m.uid {
                format!("message {n} has a second X-UID {j} (after {had})")
            } else if j <= self.prevuid {
                format!(
                    "message {n}: X-UID {j} is not above {}, the UID before it",
                    self.prevuid
                )
            } else if j > self.uid_last {
                format!(
                    "message {n}: X-UID {j} is above {}, the last UID the folder's X-IMAP/X-IMAPbase \
                     header gives",
                    self.uid_last
                )
            } else {
                self.prevuid = j;
                m.uid = Some(j as u32);
                return;
            };
            self.broken = Some(why);
        } else if let Some(rest) = line
            .strip_prefix(b"Status:")
            .or_else(|| line.strip_prefix(b"X-Status:"))
        {
            for &c in rest {
                let f = match c {
                    b'R' => Flags::SEEN,
                    b'D' => Flags::DELETED,
                    b'F' => Flags::FLAGGED,
                    b'A' => Flags::ANSWERED,
                    b'T' => Flags::DRAFT,
                    _ => continue,
                };
                m.flags = m.flags.union(f);
            }
        } else if let Some(rest) = line.strip_prefix(b"X-Keywords:") {
            for w in words(rest) {
                match self.keywords.iter().find(|k| k.eq_ignore_ascii_case(&w)) {
                    Some(k) => {
                        if !m.keywords.contains(k) {
                            m.keywords.push(k.clone());
                        }
                    }
                    None => warnings.push(format!(
                        "message {}: keyword {w:?} is not in the folder's list (X-IMAP/X-IMAPbase): \
                         UW-IMAP did not show it, not imported",
                        index + 1 - usize::from(self.pseudo_seen)
                    )),
                }
            }
        }
    }

    /// After a message's header: c-client gives a message without X-UID
    /// the next UID.
    fn end_of_header(&mut self, m: &MsgState) {
        self.pseudo_seen |= m.pseudo;
        if !m.pseudo && m.uid.is_none() {
            self.uid_last += 1;
            self.prevuid = self.uid_last;
        }
    }
}

/// Lines of a file with their offsets; a line longer than [`MAX_LINE`]
/// comes in pieces, the later ones with `cont` set.
struct Lines<R> {
    src: R,
    offset: u64,
    buf: Vec<u8>,
    cont: bool,
}

impl<R: BufRead> Lines<R> {
    /// The next line: (its offset, continues a longer line).
    fn next_line(&mut self) -> std::io::Result<Option<(u64, bool)>> {
        self.buf.clear();
        let n = (&mut self.src)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        let at = self.offset;
        let cont = self.cont;
        self.offset += n as u64;
        self.cont = !self.buf.ends_with(b"\n");
        Ok(Some((at, cont)))
    }
}

/// Reads one mbox file as a folder named `name`.
pub fn read_folder(path: &Path, name: &str, quoting: Option<Quoting>) -> Folder {
    let mut folder = empty_folder(path, name);
    if let Err(e) = scan(path, quoting, &mut folder) {
        folder.refused = Some(e);
        folder.messages.clear();
    }
    folder
}

fn empty_folder(path: &Path, name: &str) -> Folder {
    Folder {
        name: name.to_string(),
        dovecot_name: name.to_string(),
        dir: path.to_path_buf(),
        uidvalidity: None,
        next_uid: 1,
        messages: Vec::new(),
        problems: Vec::new(),
        skipped: Vec::new(),
        refused: None,
        uids_unusable: None,
    }
}

/// A message being read.
struct Current {
    from_line: usize,
    date: (i64, i16),
    start: u64,
    in_header: bool,
    state: MsgState,
    header_lines: usize,
    prev_blank: bool,
    crc: crc32fast::Hasher,
}

impl Current {
    fn new(from_line: usize, date: (i64, i16), start: u64) -> Current {
        Current {
            from_line,
            date,
            start,
            in_header: true,
            state: MsgState::default(),
            header_lines: 0,
            prev_blank: false,
            crc: crc32fast::Hasher::new(),
        }
    }
}

/// A message read to its end (`end`, the offset of the next `From ` line
/// or of the end of the file) becomes a source message.
fn finish(
    c: Current,
    end: u64,
    path: &Path,
    quoting: Option<Quoting>,
    folder: &mut Folder,
) -> Result<(), String> {
    if c.state.pseudo {
        return Ok(());
    }
    if folder.messages.len() >= MAX_MESSAGES {
        return Err(format!(
            "refused: more than {MAX_MESSAGES} messages in {}",
            path.display()
        ));
    }
    folder.messages.push(SourceMessage {
        uid: c.state.uid,
        path: path.to_path_buf(),
        flags: c.state.flags,
        keywords: c.state.keywords,
        mtime: c.date.0,
        zone: c.date.1,
        size: end - c.start,
        part: Some(Part {
            offset: c.start,
            len: end - c.start,
            crc: c.crc.finalize(),
            quoting,
        }),
    });
    Ok(())
}

fn scan(path: &Path, quoting: Option<Quoting>, folder: &mut Folder) -> Result<(), String> {
    let file =
        fs::File::open(path).map_err(|e| format!("refused: open {}: {e}", path.display()))?;
    let mut lines = Lines {
        src: BufReader::with_capacity(256 << 10, file),
        offset: 0,
        buf: Vec::new(),
        cont: false,
    };
    let mut uids = UidState::default();
    let mut cur: Option<Current> = None;
    // Messages begun, the pseudo-message counted.
    let mut index = 0usize;
    let mut lineno = 0usize;
    let mut warnings = Notes::default();
    let read_err = |e: std::io::Error| format!("refused: read {}: {e}", path.display());
    while let Some((at, cont)) = lines.next_line().map_err(read_err)? {
        if !cont {
            lineno += 1;
        }
        let whole = !cont && !lines.cont;
        let line = lines.buf.as_slice();
        let Some(c) = cur.as_mut() else {
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            let line = trim_start(line);
            let Some(date) = separator_date(line).filter(|_| whole) else {
                return Err(format!(
                    "refused: {} is not an mbox: line {lineno} at offset {at} is not a `From ` line \
                     with a date ({:?})",
                    path.display(),
                    String::from_utf8_lossy(&line[..line.len().min(60)])
                ));
            };
            cur = Some(Current::new(lineno, date, lines.offset));
            continue;
        };
        let starts_message =
            whole && !c.in_header && line.starts_with(b"From ") && separator_date(line).is_some();
        if !starts_message {
            c.crc.update(line);
        }
        if c.in_header {
            if !cont && strip_eol(line).is_empty() {
                c.in_header = false;
                c.prev_blank = true;
                uids.end_of_header(&c.state);
            } else if whole && c.header_lines < MAX_HEADER_LINES {
                c.header_lines += 1;
                uids.header(index, line, &mut c.state, &mut warnings);
            }
            continue;
        }
        if whole && line.starts_with(b"From ") {
            if let Some(date) = separator_date(line) {
                let done = cur.take().expect("a message is being read");
                finish(done, at, path, quoting, folder)?;
                index += 1;
                cur = Some(Current::new(lineno, date, lines.offset));
                continue;
            }
            if c.prev_blank {
                warnings.push(format!(
                    "line {lineno} (offset {at}): a `From ` line after an empty line without a valid \
                     date: read as text of the message that starts at line {}, as UW-IMAP read it",
                    c.from_line
                ));
            }
        }
        c.prev_blank = !cont && strip_eol(line).is_empty();
    }
    let end = lines.offset;
    if let Some(mut c) = cur.take() {
        if c.in_header {
            c.in_header = false;
            uids.end_of_header(&c.state);
        }
        // The last line has no newline: c-client always ends what it
        // writes with one, so the write was cut off.
        if lines.cont && !c.state.pseudo {
            folder.skipped.push(format!(
                "{}: the last message (line {}, offset {}) ends without a newline: the file looks \
                 cut off (an interrupted write); not imported, the file is left as it is",
                path.display(),
                c.from_line,
                c.start
            ));
        } else {
            finish(c, end, path, quoting, folder)?;
        }
    }
    folder.problems.extend(warnings.finish());
    folder.uidvalidity = uids.uidvalidity;
    let seen_max = folder
        .messages
        .iter()
        .filter_map(|m| m.uid)
        .max()
        .unwrap_or(0) as u64;
    folder.next_uid = (uids.header_last.max(seen_max) + 1).min(u32::MAX as u64) as u32;
    if let Some(why) = uids.broken {
        folder.uids_unusable = Some(format!(
            "the folder's X-UIDs disagree with its X-IMAP/X-IMAPbase header ({why}): UW-IMAP would \
             have given every message a new UID under a new UIDVALIDITY"
        ));
        for m in &mut folder.messages {
            m.uid = None;
        }
    }
    Ok(())
}

/// What a file in the mail tree is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileKind {
    /// Empty, or white space and then a `From ` line with a date.
    Mbox,
    /// UW-IMAP's own `mbx` format (`*mbx*` header): mail, not read here.
    Mbx,
    Other,
}

/// UW-IMAP's `mbx` files start with this line.
const MBX_MAGIC: &[u8] = b"*mbx*\r\n";
/// A directory with this file is a UW-IMAP `mix` mailbox.
const MIX_META: &str = ".mixmeta";
const OTHER_FORMAT: &str = "is in UW-IMAP's {} format, which this import does not read \
     (README Limitations; c-client's `mailutil copy` can turn it into an mbox first, under new \
     UIDs)";

fn file_kind(path: &Path) -> std::io::Result<FileKind> {
    let mut head = Vec::new();
    fs::File::open(path)?
        .take(MAX_LINE as u64)
        .read_to_end(&mut head)?;
    if head.starts_with(MBX_MAGIC) {
        return Ok(FileKind::Mbx);
    }
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    if start == head.len() {
        return Ok(FileKind::Mbox);
    }
    let line = head[start..].split(|b| *b == b'\n').next().unwrap_or(&[]);
    Ok(if separator_date(line).is_some() {
        FileKind::Mbox
    } else {
        FileKind::Other
    })
}

/// A folder that is not read, with why.
fn refused_folder(path: &Path, name: &str, why: String) -> Folder {
    let mut f = empty_folder(path, name);
    f.refused = Some(format!("refused: {} {why}", path.display()));
    f
}

/// Where an account's mail is.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// The INBOX mbox (`/var/mail/USER`).
    pub inbox: Option<PathBuf>,
    /// The mail directory tree (`~/mail`): every file a folder, every
    /// directory a level.
    pub tree: Option<PathBuf>,
    /// Put in front of every folder name from the tree (the name UW-IMAP
    /// showed, e.g. `mail/` when the tree was under the home directory).
    pub prefix: String,
    /// With `inbox` being `~/mbox` (c-client's `mbox` driver): the system
    /// mailbox (`/var/mail/USER`) whose messages c-client had not moved
    /// into `~/mbox` yet. They follow INBOX's messages, under new UIDs, as
    /// c-client's move would have given them.
    pub spool: Option<PathBuf>,
    /// `~/.mailboxlist`: subscriptions, one name per line.
    pub mailboxlist: Option<PathBuf>,
    pub quoting: Option<Quoting>,
}

/// Reads the account. Paths that are files are INBOX (at most one);
/// directories are trees.
pub fn read_account(src: &Sources) -> Result<Account, String> {
    let mut acct = Account::default();
    if let Some(p) = &src.inbox {
        let mut inbox = match file_kind(p) {
            Ok(FileKind::Mbx) => refused_folder(p, "INBOX", OTHER_FORMAT.replace("{}", "mbx")),
            _ => read_folder(p, "INBOX", src.quoting),
        };
        if let Some(sp) = &src.spool {
            add_spool(&mut inbox, sp, src.quoting);
        }
        acct.folders.push(inbox);
    } else if src.spool.is_some() {
        return Err("the system mailbox (--uw-spool) goes with the INBOX file (~/mbox)".into());
    }
    if let Some(root) = &src.tree {
        let mut levels = Vec::new();
        walk(root, &mut levels, src, &mut acct)?;
    }
    if let Some(p) = &src.mailboxlist {
        let bytes = crate::dovecot::read_bounded(p, MAX_SMALL_FILE_BYTES)?
            .ok_or_else(|| format!("{}: no such file", p.display()))?;
        for line in String::from_utf8_lossy(&bytes).lines() {
            let name = line.trim_end_matches('\r');
            if name.is_empty() {
                continue;
            }
            match storage::MailboxName::new(name) {
                Ok(_) => {
                    acct.subscriptions.insert(name.to_string());
                }
                Err(e) => acct.warnings.push(format!(
                    "{}: subscription {name:?} is not a mailbox name here ({e}), skipped",
                    p.display()
                )),
            }
        }
    }
    Ok(acct)
}

/// c-client's `mbox` driver: the system mailbox's messages are appended
/// to `~/mbox` and get UIDs there; their own X-UIDs (if any) mean nothing.
fn add_spool(inbox: &mut Folder, spool: &Path, quoting: Option<Quoting>) {
    let sp = read_folder(spool, "INBOX", quoting);
    if let Some(why) = sp.refused {
        inbox
            .skipped
            .push(format!("the system mailbox {}: {why}", spool.display()));
        return;
    }
    if inbox.refused.is_some() {
        return;
    }
    inbox.problems.extend(sp.problems);
    inbox.skipped.extend(sp.skipped);
    inbox.messages.extend(sp.messages.into_iter().map(|mut m| {
        m.uid = None;
        m
    }));
}

fn walk(
    root: &Path,
    levels: &mut Vec<String>,
    src: &Sources,
    acct: &mut Account,
) -> Result<(), String> {
    let dir = levels.iter().fold(root.to_path_buf(), |d, l| d.join(l));
    let rd = fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))?;
    let mut entries: Vec<(String, PathBuf, bool)> = Vec::new();
    for e in rd {
        let e = e.map_err(|e| format!("read {}: {e}", dir.display()))?;
        let path = e.path();
        let Some(n) = e.file_name().to_str().map(String::from) else {
            acct.warnings
                .push(format!("{}: name is not UTF-8, skipped", path.display()));
            continue;
        };
        // Dot files are no folders (c-client hides them).
        if n.starts_with('.') {
            continue;
        }
        // A directory is a level. A link to a directory is not followed
        // (a loop would repeat the tree); a link to a file is a folder.
        let link = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
        let is_dir = fs::metadata(&path).is_ok_and(|m| m.is_dir());
        if link && is_dir {
            acct.warnings.push(format!(
                "{}: a symbolic link to a directory, not followed; give its target separately",
                path.display()
            ));
            continue;
        }
        entries.push((n, path, is_dir));
        if entries.len() + acct.folders.len() > MAX_FOLDERS {
            return Err(format!(
                "more than {MAX_FOLDERS} folders under {}",
                root.display()
            ));
        }
    }
    entries.sort();
    for (n, path, is_dir) in entries {
        levels.push(n);
        if is_dir && path.join(MIX_META).exists() {
            let name = format!("{}{}", src.prefix, levels.join("/"));
            let why = OTHER_FORMAT.replace("{}", "mix");
            acct.folders.push(refused_folder(&path, &name, why));
        } else if is_dir {
            if levels.len() >= MAX_DEPTH {
                acct.warnings.push(format!(
                    "{}: more than {MAX_DEPTH} levels deep, skipped",
                    path.display()
                ));
            } else {
                walk(root, levels, src, acct)?;
            }
        } else {
            let name = format!("{}{}", src.prefix, levels.join("/"));
            let name = if name.eq_ignore_ascii_case("INBOX") {
                "INBOX".to_string()
            } else {
                name
            };
            let f = match file_kind(&path) {
                Ok(FileKind::Mbox) if acct.folders.iter().any(|f| f.name == name) => {
                    let why = format!(
                        "is a second folder named {name} (besides the INBOX file given); \
                         rename one of them and run again"
                    );
                    refused_folder(&path, &name, why)
                }
                Ok(FileKind::Mbox) => read_folder(&path, &name, src.quoting),
                Ok(FileKind::Mbx) => {
                    refused_folder(&path, &name, OTHER_FORMAT.replace("{}", "mbx"))
                }
                Ok(FileKind::Other) => {
                    acct.warnings.push(format!(
                        "{}: not an mbox file (no `From ` line with a date first), skipped",
                        path.display()
                    ));
                    levels.pop();
                    continue;
                }
                Err(e) => refused_folder(&path, &name, format!("cannot be read: {e}")),
            };
            acct.folders.push(f);
        }
        levels.pop();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_hides_state_headers_and_the_mbox_blank_line() {
        let raw = b"Subject: a\nStatus: RO\nX-Keywords: one\n two\nX-UID: 5\nx-status: F\nTo: b\n\nbody\n>From x\n\n";
        assert_eq!(
            stored(raw, None),
            b"Subject: a\r\nTo: b\r\n\r\nbody\r\n>From x\r\n".to_vec()
        );
        // A header-only message keeps the empty line that ends its header.
        assert_eq!(
            stored(b"Subject: a\n\n", None),
            b"Subject: a\r\n\r\n".to_vec()
        );
        assert_eq!(
            stored(b"S: a\n\nx\n>From y\n\n", Some(Quoting::O)),
            b"S: a\r\n\r\nx\r\nFrom y\r\n".to_vec()
        );
    }

    fn folder_of(text: &str) -> (tempfile::TempDir, Folder) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, text).unwrap();
        let f = read_folder(&p, "f", None);
        (dir, f)
    }

    const FROM: &str = "From a@b Mon Jan  1 00:00:00 2024\n";

    /// c-client `unix_parse`: a message without X-UID takes the next UID
    /// after the last, so a later X-UID is out of order and the folder's
    /// UIDs cannot be kept; a second X-UID in one message likewise.
    #[test]
    fn uid_rules_follow_c_client() {
        let base = format!("{FROM}X-IMAPbase: 100 9\nX-UID: 2\n\na\n\n");
        let (_d, f) = folder_of(&format!("{base}{FROM}S: new\n\nb\n\n"));
        assert_eq!(f.uidvalidity, Some(100));
        assert_eq!(f.next_uid, 10);
        assert!(f.uids_unusable.is_none());
        assert_eq!(f.messages[0].uid, Some(2));
        assert_eq!(f.messages[1].uid, None);
        let (_d, f) = folder_of(&format!("{base}{FROM}S: new\n\nb\n\n{FROM}X-UID: 5\n\nc\n"));
        assert!(
            f.uids_unusable
                .as_deref()
                .unwrap()
                .contains("X-UID 5 is not above 10")
        );
        assert!(f.messages.iter().all(|m| m.uid.is_none()));
        let (_d, f) = folder_of(&format!("{base}{FROM}X-UID: 4\nX-UID: 5\n\nb\n"));
        assert!(f.uids_unusable.as_deref().unwrap().contains("second X-UID"));
        // X-IMAP only counts in the first message.
        let (_d, f) = folder_of(&format!("{FROM}S: a\n\na\n\n{FROM}X-IMAP: 100 9\n\nb\n"));
        assert_eq!(f.uidvalidity, None);
        assert_eq!(f.messages.len(), 2);
    }

    #[test]
    fn a_file_rewritten_after_reading_is_noticed() {
        let (d, f) = folder_of(&format!("{FROM}Subject: x\n\nbody\n"));
        let part = f.messages[0].part.unwrap();
        let p = d.path().join("f");
        assert_eq!(
            part.read(&p).unwrap(),
            b"Subject: x\r\n\r\nbody\r\n".to_vec()
        );
        std::fs::write(&p, format!("{FROM}Subject: y\n\nbody\n")).unwrap();
        assert!(part.read(&p).unwrap_err().contains("rewritten"));
    }

    #[test]
    fn separators() {
        assert!(separator_date(b"From a@b Tue Jan  2 15:04:05 2024\n").is_some());
        assert!(separator_date(b"From a@b Tue Jan  2 15:04:05 2024 remote from x\n").is_some());
        assert_eq!(
            separator_date(b"From a@b Tue Jan  2 15:04:05 2024 +0100\n"),
            Some((1_704_204_245, 60))
        );
        assert!(separator_date(b"From a@b Tue Jan  2 15:04:05 PST 2024\n").is_some());
        assert!(separator_date(b"From here on\n").is_none());
    }
}
