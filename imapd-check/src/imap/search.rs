//! SEARCH: evaluating imap-codec's search keys against one message.

use std::cell::{OnceCell, RefCell};

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use storage::{Error, Flags, Record};

use super::address;
use super::msgfile::MessageFile;
use super::structure::{self, CHUNK, Source};
use super::wire::days_from_civil;

/// One message as SEARCH sees it.
pub struct Candidate<'a> {
    pub seq: u32,
    pub rec: &'a Record,
    pub keywords: Vec<String>,
    /// Largest sequence number and UID, for `*`.
    pub max_seq: u32,
    pub max_uid: u32,
    /// Opens the message (checked against its record) on first use.
    pub open: &'a dyn Fn(&Record) -> Result<MessageFile, Error>,
    pub file: OnceCell<Option<MessageFile>>,
    header: OnceCell<std::sync::Arc<[u8]>>,
    /// The header came from the cache or from a file that matched its
    /// record's CRC32.
    header_verified: std::cell::Cell<bool>,
    /// Where the header may be cached (headercache.rs); `None`: read it.
    pub headers: Option<super::headercache::Source>,
    /// What went wrong reading the message; the SEARCH then fails.
    pub failed: RefCell<Option<Error>>,
    /// `\Recent` in this session (RFC 3501 2.3.2).
    pub recent: bool,
    /// What the full-text index proves (ftsfilter.rs).
    pub fts: Option<&'a super::ftsfilter::Filter>,
}

impl<'a> Candidate<'a> {
    pub fn new(
        seq: u32,
        rec: &'a Record,
        keywords: Vec<String>,
        (max_seq, max_uid): (u32, u32),
        open: &'a dyn Fn(&Record) -> Result<MessageFile, Error>,
    ) -> Self {
        Candidate {
            seq,
            rec,
            keywords,
            max_seq,
            max_uid,
            open,
            file: OnceCell::new(),
            header: OnceCell::new(),
            header_verified: std::cell::Cell::new(false),
            headers: None,
            failed: RefCell::new(None),
            recent: false,
            fts: None,
        }
    }

    fn fail(&self, e: Error) {
        self.failed.borrow_mut().get_or_insert(e);
    }

    /// The message file; `None` when expunged meanwhile or unreadable
    /// (then recorded in `failed`).
    fn file(&self) -> Option<&MessageFile> {
        self.file
            .get_or_init(|| match (self.open)(self.rec) {
                Ok(f) => Some(f),
                Err(Error::Expunged(_)) => None,
                Err(e) => {
                    self.fail(e);
                    None
                }
            })
            .as_ref()
    }

    /// The header block (its first [`structure::HEADER_CAP`] bytes), from
    /// the process-wide cache when it holds it for this record.
    pub fn header(&self) -> &[u8] {
        self.header.get_or_init(|| {
            let cache = &super::headercache::HEADERS;
            let key = self.headers.map(|s| s.key(self.rec.uid));
            if let Some(k) = key
                && let Some(h) = cache.get(k, self.rec.size, self.rec.message_crc)
            {
                self.header_verified.set(true);
                return h;
            }
            let Some(f) = self.file() else {
                return Vec::new().into();
            };
            let len = u64::from(self.rec.header_size)
                .min(f.size())
                .min(structure::HEADER_CAP);
            match structure::read_range(f, 0, len) {
                Ok(h) => {
                    let h: std::sync::Arc<[u8]> = h.into();
                    self.header_verified.set(f.crc_checked);
                    // Only bytes of a file that matched its record.
                    if let Some(k) = key
                        && f.crc_checked
                    {
                        cache.put(k, self.rec.size, self.rec.message_crc, h.clone());
                    }
                    h
                }
                Err(e) => {
                    self.fail(read_error(f, e));
                    Vec::new().into()
                }
            }
        })
    }

    /// Whether [`Self::header`] gave bytes known to be the message's: from
    /// the header cache, or from a file whose CRC32 matched its record
    /// (false before the header is read, and for a file too big to be
    /// checked on opening).
    pub fn header_verified(&self) -> bool {
        self.header_verified.get()
    }

    /// Whether the bytes from `from` to the end contain `needle`, read in
    /// chunks (case-insensitive for ASCII).
    fn contains_from(&self, from: u64, needle: &[u8]) -> bool {
        let Some(f) = self.file() else {
            return false;
        };
        source_contains_ci(f, from.min(f.size()), needle).unwrap_or_else(|e| {
            self.fail(read_error(f, e));
            false
        })
    }
}

impl Candidate<'_> {
    /// Whether the text parts, decoded from their transfer encoding and
    /// charset (mail-parser), or an attachment's file name contain
    /// `needle` (RFC 3501 6.4.4: Dovecot and Cyrus search the decoded
    /// text, so a word in a base64 or quoted-printable body is found).
    /// Only messages that declare an encoding or charset are parsed;
    /// above [`fts::text::DECODE_MAX`] none is. The full-text index
    /// indexes the same text (`fts::text`).
    fn decoded_body_has(&self, needle: &[u8]) -> bool {
        let Some(f) = self.file() else {
            return false;
        };
        if f.size() > fts::text::DECODE_MAX {
            return false;
        }
        let raw = match structure::read_range(f, 0, f.size()) {
            Ok(r) => r,
            Err(e) => {
                self.fail(read_error(f, e));
                return false;
            }
        };
        fts::text::parse_for_search(&raw)
            .is_some_and(|m| fts::text::any_text(&m, &mut |t| text_contains(t, needle)))
    }

    /// Whether some header field, its encoded words decoded, contains
    /// `needle` (TEXT covers the header too).
    fn decoded_header_has(&self, needle: &[u8]) -> bool {
        let h = self.header();
        if !fts::text::has_encoded_word(h) {
            return false;
        }
        fts::text::header_fields(h)
            .iter()
            .any(|f| header_text_has(fts::text::field_value(f), needle))
    }
}

fn read_error(f: &MessageFile, e: std::io::Error) -> Error {
    Error::Io {
        op: "read",
        path: f.path.clone(),
        source: e,
    }
}

/// Searches `src` from `offset` to its end in chunks, keeping the last
/// `needle.len() - 1` bytes of each so no match is cut in two.
fn source_contains_ci(src: &dyn Source, offset: u64, needle: &[u8]) -> std::io::Result<bool> {
    if needle.is_empty() {
        return Ok(true);
    }
    let keep = needle.len() - 1;
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + keep);
    let mut pos = offset;
    let end = src.size();
    while pos < end {
        let at = buf.len();
        buf.resize(at + CHUNK, 0);
        let n = src.read_at(pos, &mut buf[at..])?;
        buf.truncate(at + n);
        if n == 0 {
            break;
        }
        if contains_ci(&buf, needle) {
            return Ok(true);
        }
        pos += n as u64;
        let cut = buf.len().saturating_sub(keep);
        buf.drain(..cut);
    }
    Ok(false)
}

/// True when `n` is in `set`, `*` standing for `largest`.
pub fn set_contains(set: &SequenceSet, n: u32, largest: u32) -> bool {
    let v = |s: &SeqOrUid| match s {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => largest,
    };
    set.0.as_ref().iter().any(|s| match s {
        Sequence::Single(a) => v(a) == n,
        Sequence::Range(a, b) => {
            let (a, b) = (v(a), v(b));
            a.min(b) <= n && n <= a.max(b)
        }
    })
}

use fts::text::{contains_ci, text_contains};

/// Unfolded values of the header fields called `name`.
fn header_values(header: &[u8], name: &[u8]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut current = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let folded = line.starts_with(b" ") || line.starts_with(b"\t");
        if folded {
            if current && let Some(last) = out.last_mut() {
                last.extend(line.iter().filter(|&&b| b != b'\r' && b != b'\n'));
            }
            continue;
        }
        current = false;
        if let Some(colon) = line.iter().position(|&b| b == b':')
            && line[..colon].trim_ascii().eq_ignore_ascii_case(name)
        {
            current = true;
            out.push(
                line[colon + 1..]
                    .iter()
                    .copied()
                    .filter(|&b| b != b'\r' && b != b'\n')
                    .collect(),
            );
        }
    }
    out
}

fn header_has(c: &Candidate, name: &[u8], needle: &[u8]) -> bool {
    header_values(c.header(), name)
        .iter()
        .any(|v| header_text_has(v, needle))
}

/// A header value contains `needle` as written or with its RFC 2047
/// encoded words decoded (Dovecot and Cyrus search the decoded text, so a
/// UTF-8 `SEARCH CHARSET UTF-8 SUBJECT` finds `=?utf-8?q?...?=`);
/// case-insensitive, for non-ASCII text too.
fn header_text_has(value: &[u8], needle: &[u8]) -> bool {
    if contains_ci(value, needle) {
        return true;
    }
    if !fts::text::has_encoded_word(value) {
        return false;
    }
    fts::text::decode_unstructured(value).is_some_and(|d| text_contains(&d, needle))
}

/// SEARCH FROM/TO/CC/BCC (RFC 3501 6.4.4): a substring of the addresses
/// as `Name <local@host>` with comments and folding removed (as Dovecot
/// matches), so `user@domain.org` finds `<user (c)@ (c) domain.org>`. A
/// value that holds no address at all is matched as written.
fn address_has(c: &Candidate, name: &[u8], needle: &[u8]) -> bool {
    header_values(c.header(), name)
        .iter()
        .any(|v| address_may_have(v, needle) && address_value_has(v, needle))
}

/// The address field value `v` (unfolded) contains `needle` in its search
/// text (the addresses as `name <mailbox@host>`, RFC 3501 6.4.4 FROM, TO,
/// CC, BCC), or, when it holds no address, as written.
fn address_value_has(v: &[u8], needle: &[u8]) -> bool {
    let items = address::parse(v);
    if items.is_empty() {
        header_text_has(v, needle)
    } else {
        header_text_has(&address::search_text(&items), needle)
    }
}

/// Bytes the address parser may drop between two bytes it keeps together
/// (white space between local-part tokens, quotes, quoting backslashes).
fn dropped_by_parser(b: u8) -> bool {
    b.is_ascii_whitespace() || matches!(b, b'"' | b'\\')
}

/// False only when `needle` cannot be in [`address_value_has`]'s text, which
/// costs a parse and several allocations per message: a SEARCH FROM over
/// a mailbox mostly answers "no". Without encoded words, every byte of the
/// search text that is not one the text adds around addresses (`, `, ` <`,
/// `>`, `@`, `: `, `;`), white space, a quote or a parenthesis is a byte
/// of the value, in order, with at most dropped bytes
/// ([`dropped_by_parser`]) between neighbours. So the longest run of
/// `needle` free of all those must be in the value with the dropped bytes
/// removed (case-insensitively, as the search compares). Encoded words
/// and comments (which the parser may drop between two tokens it joins)
/// get no shortcut. Tested against
/// the full path in `address_prefilter_agrees_with_the_parse`.
fn address_may_have(v: &[u8], needle: &[u8]) -> bool {
    // Encoded words are decoded; a comment may sit between two tokens of
    // a local part, which the parser joins: no shortcut for either.
    if v.contains(&b'(') || v.windows(2).any(|w| w == b"=?") {
        return true;
    }
    let boundary = |b: &u8| {
        dropped_by_parser(*b) || matches!(b, b'(' | b')' | b',' | b'<' | b'>' | b'@' | b':' | b';')
    };
    let Some(run) = needle.split(boundary).max_by_key(|r| r.len()) else {
        return true;
    };
    if run.is_empty() {
        return true;
    }
    if !v.iter().any(|&b| dropped_by_parser(b)) {
        return contains_ci(v, run);
    }
    let kept: Vec<u8> = v
        .iter()
        .copied()
        .filter(|&b| !dropped_by_parser(b))
        .collect();
    contains_ci(&kept, run)
}

fn day(unix: i64) -> i64 {
    unix.div_euclid(86_400)
}

fn date_days(d: &chrono::NaiveDate) -> i64 {
    use chrono::Datelike;
    days_from_civil(d.year() as i64, d.month(), d.day())
}

/// The day of the message's Date: header as written, time and zone
/// disregarded (RFC 3501 6.4.4, SENTBEFORE/SENTON/SENTSINCE: `Sun, 25 Mar
/// 2007 01:00 +0200` is SENTON 25-Mar-2007, though it is the 24th in
/// UTC). Without a parsable Date: header, the day of the stored sent date
/// or, failing that, of INTERNALDATE.
fn sent_day(c: &Candidate) -> i64 {
    let written = mail_parser::MessageParser::default()
        .parse_headers(c.header())
        .and_then(|m| {
            m.date()
                .map(|d| days_from_civil(d.year as i64, d.month as u32, d.day as u32))
        });
    written.unwrap_or_else(|| {
        day(if c.rec.sent_date != 0 {
            c.rec.sent_date
        } else {
            c.rec.internal_date
        })
    })
}

/// The day of INTERNALDATE as it is shown: in the zone it was given in.
fn internal_day(c: &Candidate) -> i64 {
    day(c.rec.internal_date + c.rec.internal_zone as i64 * 60)
}

pub fn matches(key: &SearchKey, c: &Candidate) -> bool {
    let f = c.rec.flags;
    match key {
        SearchKey::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        SearchKey::Or(a, b) => matches(a, c) || matches(b, c),
        SearchKey::Not(k) => !matches(k, c),
        SearchKey::All => true,
        // RFC 3501 6.4.4: NEW is RECENT UNSEEN, OLD is NOT RECENT.
        SearchKey::Recent => c.recent,
        SearchKey::New => c.recent && !f.contains(Flags::SEEN),
        SearchKey::Old => !c.recent,
        SearchKey::SequenceSet(s) => set_contains(s, c.seq, c.max_seq),
        SearchKey::Uid(s) => set_contains(s, c.rec.uid, c.max_uid),
        SearchKey::Answered => f.contains(Flags::ANSWERED),
        SearchKey::Unanswered => !f.contains(Flags::ANSWERED),
        SearchKey::Deleted => f.contains(Flags::DELETED),
        SearchKey::Undeleted => !f.contains(Flags::DELETED),
        SearchKey::Draft => f.contains(Flags::DRAFT),
        SearchKey::Undraft => !f.contains(Flags::DRAFT),
        SearchKey::Flagged => f.contains(Flags::FLAGGED),
        SearchKey::Unflagged => !f.contains(Flags::FLAGGED),
        SearchKey::Seen => f.contains(Flags::SEEN),
        SearchKey::Unseen => !f.contains(Flags::SEEN),
        SearchKey::Keyword(k) => c
            .keywords
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k.as_ref())),
        SearchKey::Unkeyword(k) => !c
            .keywords
            .iter()
            .any(|x| x.eq_ignore_ascii_case(k.as_ref())),
        SearchKey::Larger(n) => c.rec.size > *n as u64,
        SearchKey::Smaller(n) => c.rec.size < *n as u64,
        // RFC 3501 6.4.4: the date of INTERNALDATE in its own zone, time
        // and zone disregarded.
        SearchKey::Before(d) => internal_day(c) < date_days(d.as_ref()),
        SearchKey::On(d) => internal_day(c) == date_days(d.as_ref()),
        SearchKey::Since(d) => internal_day(c) >= date_days(d.as_ref()),
        SearchKey::SentBefore(d) => sent_day(c) < date_days(d.as_ref()),
        SearchKey::SentOn(d) => sent_day(c) == date_days(d.as_ref()),
        SearchKey::SentSince(d) => sent_day(c) >= date_days(d.as_ref()),
        // The index proves some matches without the message being read.
        SearchKey::Body(_)
        | SearchKey::Text(_)
        | SearchKey::Subject(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
            if c.fts.is_some_and(|f| f.proves(key, c.rec.uid)) =>
        {
            true
        }
        SearchKey::From(s) => address_has(c, b"From", s.as_ref()),
        SearchKey::To(s) => address_has(c, b"To", s.as_ref()),
        SearchKey::Cc(s) => address_has(c, b"Cc", s.as_ref()),
        SearchKey::Bcc(s) => address_has(c, b"Bcc", s.as_ref()),
        SearchKey::Subject(s) => header_has(c, b"Subject", s.as_ref()),
        SearchKey::Header(name, s) => {
            let vals = header_values(c.header(), name.as_ref());
            !vals.is_empty() && vals.iter().any(|v| header_text_has(v, s.as_ref()))
        }
        SearchKey::Body(s) => {
            c.contains_from(u64::from(c.rec.header_size), s.as_ref())
                || c.decoded_body_has(s.as_ref())
        }
        SearchKey::Text(s) => {
            c.contains_from(0, s.as_ref())
                || c.decoded_header_has(s.as_ref())
                || c.decoded_body_has(s.as_ref())
        }
        SearchKey::ModSequence { modseq, .. } => c.rec.modseq >= *modseq,
    }
}

/// Keys whose result the message's record (and the session's \Recent)
/// gives without reading the message: the keys [`matches`] answers from
/// `c.rec`, `c.keywords`, `c.seq` and `c.recent` alone (keep the two in step).
pub fn record_decides(k: &SearchKey) -> bool {
    match k {
        SearchKey::And(keys) => keys.as_ref().iter().all(record_decides),
        SearchKey::Or(a, b) => record_decides(a) && record_decides(b),
        SearchKey::Not(a) => record_decides(a),
        SearchKey::All
        | SearchKey::Recent
        | SearchKey::New
        | SearchKey::Old
        | SearchKey::SequenceSet(_)
        | SearchKey::Uid(_)
        | SearchKey::Answered
        | SearchKey::Unanswered
        | SearchKey::Deleted
        | SearchKey::Undeleted
        | SearchKey::Draft
        | SearchKey::Undraft
        | SearchKey::Flagged
        | SearchKey::Unflagged
        | SearchKey::Seen
        | SearchKey::Unseen
        | SearchKey::Keyword(_)
        | SearchKey::Unkeyword(_)
        | SearchKey::Larger(_)
        | SearchKey::Smaller(_)
        | SearchKey::Before(_)
        | SearchKey::On(_)
        | SearchKey::Since(_)
        | SearchKey::ModSequence { .. } => true,
        _ => false,
    }
}

/// True when the criteria use MODSEQ (the response then carries it).
pub fn uses_modseq(key: &SearchKey) -> bool {
    match key {
        SearchKey::ModSequence { .. } => true,
        SearchKey::And(keys) => keys.as_ref().iter().any(uses_modseq),
        SearchKey::Or(a, b) => uses_modseq(a) || uses_modseq(b),
        SearchKey::Not(k) => uses_modseq(k),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic generator of numbers below its argument (xorshift).
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    /// The prefilter of SEARCH FROM/TO/CC/BCC never drops a match: over
    /// random address fields built from the syntax's hard parts (quotes,
    /// quoted pairs, comments, groups, routes, domain literals, white space
    /// inside local parts, encoded words) and needles cut from their search
    /// text or made up, whatever the full path finds, the prefilter lets
    /// through.
    #[test]
    fn address_prefilter_agrees_with_the_parse() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let parts: [&[u8]; 28] = [
            b"John",
            b"Doe",
            b" ",
            b"  ",
            b"\t",
            b"\"",
            b"\\",
            b"(",
            b")",
            b"<",
            b">",
            b"@",
            b",",
            b":",
            b";",
            b".",
            b"[",
            b"]",
            b"=?utf-8?q?J=C3=B6rg?=",
            b"load3",
            b"LOAD",
            b"x",
            b"example.org",
            b"a.b",
            b"@r1,@r2:",
            b"\\\"",
            b"\xc3\xa9",
            b"(c (n))",
        ];
        let mut matched = 0;
        for _ in 0..200_000 {
            let mut v = Vec::new();
            for _ in 0..1 + next(12) {
                v.extend_from_slice(parts[next(parts.len())]);
            }
            let text = {
                let items = address::parse(&v);
                if items.is_empty() {
                    v.clone()
                } else {
                    address::search_text(&items)
                }
            };
            let needle: Vec<u8> = if next(3) > 0 && !text.is_empty() {
                let a = next(text.len());
                let b = a + 1 + next(text.len() - a);
                text[a..b].to_vec()
            } else {
                let mut n = Vec::new();
                for _ in 0..1 + next(3) {
                    n.extend_from_slice(parts[next(parts.len())]);
                }
                n
            };
            if address_value_has(&v, &needle) {
                matched += 1;
                assert!(
                    address_may_have(&v, &needle),
                    "prefilter dropped {:?} in {:?}",
                    String::from_utf8_lossy(&needle),
                    String::from_utf8_lossy(&v)
                );
            }
        }
        assert!(matched > 50_000, "the cases must mostly match: {matched}");
    }

    /// The full-text index never rules out a header match (SEARCH SUBJECT,
    /// HEADER, FROM, TO, CC, BCC through `ftsfilter`): over random
    /// headers built from the hard parts (folds, tab folds, bare CRs,
    /// encoded words, comments, quoted names, groups, non-ASCII text),
    /// every message the matcher here finds a needle in is among the
    /// index's header candidates for it, and every message the index
    /// proves a SUBJECT or FROM/TO/CC/BCC match for matches. Needles are
    /// cut from what the matcher compares (the unfolded value, its
    /// decoded form, the rebuilt addresses), are whole words or
    /// addresses, or are made up.
    #[test]
    fn the_index_keeps_every_header_match() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d);
        let names: [&[u8]; 7] = [
            b"From",
            b"to",
            b"CC",
            b"Bcc",
            b"Subject",
            b"X-Tag",
            b"Reply-To",
        ];
        let parts: [&[u8]; 22] = [
            b"Jane",
            b"Doe",
            b" ",
            b"\r\n ",
            b"\r\n\t",
            b"\r",
            b"\"Doe, J\"",
            b"(work)",
            b"<",
            b">",
            b"@",
            b",",
            b":",
            b";",
            b".",
            b"a@b.org",
            b"x.org",
            b"=?utf-8?q?M=C3=BCller_K?=",
            b"=?utf-8?b?w7xiZXI=?=",
            b"\xc3\xbc",
            b"Grp:",
            b"zz",
        ];
        let dir = tempfile::tempdir().unwrap();
        let mut w = fts::writer(dir.path(), 1, fts::MIN_MEMORY)
            .unwrap()
            .unwrap();
        let mut headers = Vec::new();
        for uid in 1..=300u32 {
            let mut h = Vec::new();
            for _ in 0..1 + next(5) {
                h.extend_from_slice(names[next(names.len())]);
                h.extend_from_slice(b":");
                for _ in 0..1 + next(8) {
                    h.extend_from_slice(parts[next(parts.len())]);
                }
                h.extend_from_slice(b"\r\n");
            }
            h.extend_from_slice(b"\r\n");
            let mut raw = h.clone();
            raw.extend_from_slice(b"a body\r\n");
            w.add(uid, &raw, h.len() as u64).unwrap();
            headers.push(h);
        }
        w.commit().unwrap();
        let snap = fts::snapshot(dir.path(), 1).unwrap().unwrap();
        let (mut checked, mut proofs) = (0, 0);
        for _ in 0..20_000 {
            let header = &headers[next(headers.len())];
            let name = names[next(names.len())];
            let values = header_values(header, name);
            let address = address::is_search_field(name);
            // What the matcher compares, to cut needles from.
            let mut texts: Vec<Vec<u8>> = Vec::new();
            for v in &values {
                texts.push(v.clone());
                if let Some(d) = fts::text::decode_unstructured(v) {
                    texts.push(d.into_bytes());
                }
                let items = address::parse(v);
                if !items.is_empty() {
                    let st = address::search_text(&items);
                    if let Some(d) = fts::text::decode_unstructured(&st) {
                        texts.push(d.into_bytes());
                    }
                    texts.push(st);
                }
            }
            // Whole addresses and their parts too (in another case): what
            // proves a match.
            let mut whole: Vec<Vec<u8>> = Vec::new();
            for v in &values {
                let items = address::parse(v);
                whole.extend(
                    address::address_parts(&items)
                        .into_iter()
                        .map(|a| a.to_ascii_uppercase()),
                );
            }
            // And whole words (what proves a SUBJECT match).
            let words: Vec<Vec<u8>> = texts
                .iter()
                .filter_map(|t| std::str::from_utf8(t).ok())
                .flat_map(|t| t.split(|c: char| !c.is_alphanumeric()))
                .filter(|w| w.len() >= 3)
                .map(|w| w.to_uppercase().into_bytes())
                .collect();
            let needle: Vec<u8> = match texts.get(next(texts.len() + 1)) {
                Some(_) if !whole.is_empty() && next(3) == 0 => whole[next(whole.len())].clone(),
                Some(_) if !words.is_empty() && next(3) == 0 => words[next(words.len())].clone(),
                Some(t) if !t.is_empty() => {
                    let a = next(t.len());
                    t[a..(a + 3 + next(6)).min(t.len())].to_vec()
                }
                _ => parts[next(parts.len())].to_vec(),
            };
            // A proof is never wrong: every message it names matches.
            let matches = |h: &[u8]| {
                header_values(h, name)
                    .iter()
                    .any(|v| address_value_has(v, &needle))
            };
            let subject = name.eq_ignore_ascii_case(b"subject");
            if let (true, Ok(n)) = (subject, std::str::from_utf8(&needle)) {
                for uid in snap.proven_subject(n).unwrap() {
                    proofs += 1;
                    let h = &headers[uid as usize - 1];
                    assert!(
                        header_values(h, name)
                            .iter()
                            .any(|v| header_text_has(v, &needle)),
                        "subject {n:?} proven in {:?}",
                        String::from_utf8_lossy(h)
                    );
                }
            }
            if address {
                let field = String::from_utf8_lossy(name).to_ascii_lowercase();
                for uid in snap.proven_address(&field, &needle).unwrap() {
                    proofs += 1;
                    assert!(
                        matches(&headers[uid as usize - 1]),
                        "{field} {:?} proven in {:?}",
                        String::from_utf8_lossy(&needle),
                        String::from_utf8_lossy(&headers[uid as usize - 1])
                    );
                }
            }
            let Some(probe) = fts::probe(&needle) else {
                continue;
            };
            let found = if address {
                values.iter().any(|v| address_value_has(v, &needle))
            } else {
                values.iter().any(|v| header_text_has(v, &needle))
            };
            if !found {
                continue;
            }
            checked += 1;
            let uid = headers.iter().position(|h| h == header).unwrap() as u32 + 1;
            let candidates = snap.header_candidates(&probe).unwrap();
            assert!(
                candidates.binary_search(&uid).is_ok(),
                "{} {:?} in {:?}: not a candidate",
                String::from_utf8_lossy(name),
                String::from_utf8_lossy(&needle),
                String::from_utf8_lossy(header)
            );
        }
        assert!(checked > 2_000, "enough cases must match: {checked}");
        assert!(proofs > 200, "enough proofs: {proofs}");
    }

    #[test]
    fn contains_ci_finds_every_position() {
        for (hay, needle, want) in [
            (&b"abc"[..], &b""[..], true),
            (b"", b"a", false),
            (b"ab", b"abc", false),
            (b"xxLoAd3", b"load3", true),
            (b"load", b"load3", false),
            (b"lload3", b"LOAD3", true),
            (b"a", b"A", true),
            (b"ba", b"a", true),
        ] {
            assert_eq!(contains_ci(hay, needle), want, "{hay:?} {needle:?}");
        }
    }

    #[test]
    fn header_values_unfold() {
        let h = b"Subject: one\r\n two\r\nFrom: a@b\r\n\r\n";
        assert_eq!(header_values(h, b"subject"), vec![b" one two".to_vec()]);
        assert!(contains_ci(b"Hello World", b"WORLD"));
    }

    #[test]
    fn encoded_words_are_searched_decoded() {
        let v = b" =?utf-8?q?J=C3=B6rg_M=C3=BCller?= <j@x.org>";
        assert!(header_text_has(v, "jörg".as_bytes()));
        assert!(header_text_has(v, "MÜLLER".as_bytes()));
        assert!(header_text_has(v, b"J=C3=B6rg"), "as written too");
        assert!(!header_text_has(v, b"anna"));
        assert!(header_text_has(
            b"=?iso-8859-1?b?aGFsbPY=?=",
            "hallö".as_bytes()
        ));
        assert!(!header_text_has(b"plain", "ö".as_bytes()));
    }

    #[test]
    fn decoded_text_parts_convert_the_charset() {
        let raw = b"Content-Type: text/plain; charset=iso-8859-1\r\n\r\nGr\xfc\xdfe\r\n";
        let m = fts::text::parse_for_search(&raw[..]).unwrap();
        let has = |n: &[u8]| fts::text::any_text(&m, &mut |t| text_contains(t, n));
        assert!(has("grüße".as_bytes()));
        assert!(!has(b"gruesse"));
    }

    #[test]
    fn chunked_search_finds_matches_across_chunks() {
        use super::super::structure::Mem;
        let mut raw = vec![b'x'; 3 * CHUNK];
        raw[CHUNK - 2..CHUNK + 3].copy_from_slice(b"NeEdL");
        assert!(source_contains_ci(&Mem(&raw), 0, b"needl").unwrap());
        assert!(!source_contains_ci(&Mem(&raw), CHUNK as u64, b"needl").unwrap());
        assert!(!source_contains_ci(&Mem(&raw), 0, b"needle").unwrap());
        assert!(source_contains_ci(&Mem(&raw), 0, b"").unwrap());
    }
}
