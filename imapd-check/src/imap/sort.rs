//! SORT (RFC 5256) and SORT=DISPLAY (RFC 5957), and what THREAD shares
//! with them: the base subject (RFC 5256 2.1), the sent date (2.2) and
//! the i;unicode-casemap comparator (RFC 5051).
//!
//! imap-codec parses the command (`CommandBody::Sort`, with the
//! DISPLAYFROM/DISPLAYTO keys); the messages are those a SEARCH with the
//! same criteria finds, each given one small key from the mailbox's
//! `.sortkeys` (sortkeys.rs, through [`KeySource`]) or, when that lacks
//! it, from its header. A text key is cut at [`KEY_MAX`] bytes, so
//! sorting a million messages holds a bounded key per message, never
//! their headers.

use std::borrow::Cow;
use std::cmp::Ordering;

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::search::SearchKey;
use mail_parser::{Address, HeaderName, HeaderValue, Message, MessageParser};
use unicode_normalization::UnicodeNormalization;

use super::conn::{Done, Fail, Session, ok};
use super::search::Candidate;
use super::sortkeys::{self, HeaderKeys, KeysRef, SortKeys};

/// Text sort keys keep this many bytes (of their casemapped form);
/// messages equal that far are ordered by the next criterion, then by
/// sequence number.
pub const KEY_MAX: usize = 128;

/// The i;unicode-casemap form of `s` (RFC 5051 2: each character's
/// simple titlecase mapping from UnicodeData, then its decomposition),
/// cut at [`KEY_MAX`] bytes. Rust has no titlecase mapping; the simple
/// uppercase one differs from it only for a few digraphs (`ǆ` gives
/// `Ǆ`, not `ǅ`). A character whose uppercase is several
/// (`ß`, `ﬁ`: full mappings from SpecialCasing, which RFC 5051
/// does not use) stays as it is, as in Dovecot; what a decomposition
/// gives is not mapped again (`ﬁ` becomes `fi`), also as in Dovecot.
pub fn casemap(s: &str) -> String {
    casemap_cut(s, KEY_MAX)
}

/// [`casemap`] cut at `max` bytes instead.
fn casemap_cut(s: &str, max: usize) -> String {
    let mut out = String::new();
    for c in s.chars().map(simple_upper).nfkd() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// The simple (one character) uppercase mapping of `c`, else `c`.
pub fn simple_upper(c: char) -> char {
    let mut up = c.to_uppercase();
    match (up.next(), up.next()) {
        (Some(u), None) => u,
        _ => c,
    }
}

/// A subject reduced to its base subject (RFC 5256 2.1).
#[derive(Debug, PartialEq, Eq)]
pub struct BaseSubject {
    pub text: String,
    /// A subj-refwd, a `(fwd)` trailer or a `[fwd: ...]` wrapper was
    /// taken off: the message is a reply or forward (REFERENCES step 5).
    pub reply_or_forward: bool,
}

/// Does `s` start with `p`, ASCII case-insensitively?
fn starts_ci(s: &str, p: &str) -> bool {
    s.len() >= p.len() && s.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
}

fn ends_ci(s: &str, p: &str) -> bool {
    s.len() >= p.len() && s.as_bytes()[s.len() - p.len()..].eq_ignore_ascii_case(p.as_bytes())
}

/// Length of a subj-blob (`"[" *BLOBCHAR "]" *WSP`) at the start of `s`.
fn blob_len(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    if b.first() != Some(&b'[') {
        return None;
    }
    let close = b[1..].iter().position(|&c| c == b'[' || c == b']')? + 1;
    if b[close] != b']' {
        return None;
    }
    let mut end = close + 1;
    while b.get(end) == Some(&b' ') {
        end += 1;
    }
    Some(end)
}

/// Length of a subj-leader's `*subj-blob subj-refwd` at the start of `s`
/// (subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":").
fn refwd_len(s: &str) -> Option<usize> {
    let mut at = 0;
    while let Some(n) = blob_len(&s[at..]) {
        at += n;
    }
    let rest = &s[at..];
    let word = if starts_ci(rest, "re") || (starts_ci(rest, "fw") && !starts_ci(rest, "fwd")) {
        2
    } else if starts_ci(rest, "fwd") {
        3
    } else {
        return None;
    };
    at += word;
    while s.as_bytes().get(at) == Some(&b' ') {
        at += 1;
    }
    if let Some(n) = blob_len(&s[at..]) {
        at += n;
    }
    (s.as_bytes().get(at) == Some(&b':')).then_some(at + 1)
}

/// RFC 5256 2.1, steps 1 to 7, on a subject already decoded from RFC 2047
/// (step 1's decoding is mail-parser's).
pub fn base_subject(decoded: &str) -> BaseSubject {
    // Step 1: tabs and line breaks are spaces; runs of spaces are one.
    let mut s = String::with_capacity(decoded.len());
    for c in decoded.chars() {
        let c = if matches!(c, '\t' | '\r' | '\n') {
            ' '
        } else {
            c
        };
        if c == ' ' && s.ends_with(' ') {
            continue;
        }
        s.push(c);
    }
    let mut reply = false;
    loop {
        // Step 2: subj-trailer ("(fwd)" / WSP) at the end, repeatedly.
        loop {
            if s.ends_with(' ') {
                s.pop();
            } else if ends_ci(&s, "(fwd)") {
                s.truncate(s.len() - 5);
                reply = true;
            } else {
                break;
            }
        }
        // Steps 3 to 5.
        loop {
            let mut changed = false;
            // Step 3: subj-leader, repeatedly.
            loop {
                if s.starts_with(' ') {
                    s.remove(0);
                } else if let Some(n) = refwd_len(&s) {
                    s.drain(..n);
                    reply = true;
                } else {
                    break;
                }
                changed = true;
            }
            // Step 4: a leading subj-blob, if a subj-base is left.
            if let Some(n) = blob_len(&s)
                && !s[n..].trim_matches(' ').is_empty()
            {
                s.drain(..n);
                changed = true;
            }
            if !changed {
                break;
            }
        }
        // Step 6: "[fwd:" ... "]" around it all: off, and again from 2.
        if starts_ci(&s, "[fwd:") && s.ends_with(']') {
            s = s[5..s.len() - 1].to_string();
            reply = true;
            continue;
        }
        break;
    }
    BaseSubject {
        text: s,
        reply_or_forward: reply,
    }
}

/// A parsed header block (its first `structure::HEADER_CAP` bytes).
pub fn parse_header<'c>(c: &'c Candidate) -> Option<Message<'c>> {
    MessageParser::default().parse_headers(c.header())
}

/// The sent date (RFC 5256 2.2): the Date: header's time (stored in the
/// record at delivery, UTC), else INTERNALDATE.
pub fn sent_date(rec: &storage::Record) -> i64 {
    if rec.sent_date != 0 {
        rec.sent_date
    } else {
        rec.internal_date
    }
}

/// The first element of an address-list field as ENVELOPE lists it
/// (RFC 3501 7.4.2), read from the field's raw text: mail-parser gives
/// no address for a source route, a quoted local part or a lone word.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// A group's start marker: its name.
    Group(String),
    Addr {
        local: String,
        domain: Option<String>,
    },
    /// Words and no address (Dovecot's MISSING_MAILBOX).
    Missing,
}

/// Skips a comment (nested, with quoted pairs) that starts at `i`.
fn skip_comment(b: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 1,
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The content of a quoted string that starts at `i`, and where it ends.
pub(super) fn quoted(b: &[u8], mut i: usize) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    i += 1;
    while i < b.len() && b[i] != b'"' {
        if b[i] == b'\\' && i + 1 < b.len() {
            i += 1;
        }
        if b[i] != b'\r' && b[i] != b'\n' {
            out.push(b[i]);
        }
        i += 1;
    }
    (out, i + 1)
}

/// A local part or domain from `i` to the first of `stop` (quoted
/// strings and comments taken care of); where it ends.
fn word_until(b: &[u8], mut i: usize, stop: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    while i < b.len() && !stop.contains(&b[i]) {
        match b[i] {
            b'"' => {
                let (q, ni) = quoted(b, i);
                out.extend_from_slice(&q);
                i = ni;
            }
            b'(' => i = skip_comment(b, i),
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    (out, i)
}

fn text(v: Vec<u8>) -> String {
    String::from_utf8_lossy(&v).into_owned()
}

fn first_raw(v: &str) -> Option<First> {
    let b = v.as_bytes();
    let mut words: Vec<Vec<u8>> = Vec::new();
    let mut cur: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b'(' => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
                i = if b[i] == b'(' {
                    skip_comment(b, i)
                } else {
                    i + 1
                };
            }
            b'"' => {
                let (q, ni) = quoted(b, i);
                cur.extend_from_slice(&q);
                i = ni;
            }
            b':' => {
                words.extend((!cur.is_empty()).then(|| std::mem::take(&mut cur)));
                let name: Vec<String> = words.into_iter().map(text).collect();
                return Some(First::Group(name.join(" ")));
            }
            b'<' => {
                let mut j = i + 1;
                while b.get(j).is_some_and(|c| c.is_ascii_whitespace()) {
                    j += 1;
                }
                if b.get(j) == Some(&b'@') {
                    // A source route, `@a,@b:`, is not part of the address.
                    j = b[j..]
                        .iter()
                        .position(|&c| c == b':')
                        .map_or(b.len(), |p| j + p + 1);
                }
                let (local, j) = word_until(b, j, b"@>");
                let domain = (b.get(j) == Some(&b'@')).then(|| text(word_until(b, j + 1, b">").0));
                return Some(First::Addr {
                    local: text(local),
                    domain,
                });
            }
            b'@' => {
                let local = if cur.is_empty() {
                    words.pop().unwrap_or_default()
                } else {
                    cur
                };
                let (domain, _) = word_until(b, i + 1, b",;<>");
                return Some(First::Addr {
                    local: text(local),
                    domain: Some(text(domain)),
                });
            }
            b',' | b';' if words.is_empty() && cur.is_empty() => i += 1,
            b',' | b';' => break,
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
    words.extend((!cur.is_empty()).then_some(cur));
    match words.len() {
        0 => None,
        1 => Some(First::Addr {
            local: text(words.pop().unwrap_or_default()),
            domain: None,
        }),
        _ => Some(First::Missing),
    }
}

/// The raw text of a header field of the parsed header.
fn raw<'m>(m: Option<&'m Message>, name: HeaderName<'static>) -> Option<&'m str> {
    m?.header_raw(name)
}

/// [IMAP] addr-mailbox of the first address (RFC 5256 3: FROM, TO, CC).
fn first_mailbox(field: Option<&str>) -> String {
    match field.and_then(first_raw) {
        None => String::new(),
        Some(First::Group(name)) => casemap(&name),
        Some(First::Addr { local, .. }) => casemap(&local),
        Some(First::Missing) => casemap("MISSING_MAILBOX"),
    }
}

/// RFC 5957 3: the display name of the first address (decoded from RFC
/// 2047, as mail-parser gives it), or its addr-spec when it has none
/// (DISPLAYFROM, DISPLAYTO); a group's name.
fn first_display(field: Option<&str>, parsed: Option<&Address>) -> String {
    let name = parsed
        .and_then(|a| match a {
            Address::List(l) => l.first(),
            Address::Group(g) => g.first().filter(|g| g.name.is_none())?.addresses.first(),
        })
        .and_then(|a| a.name.as_deref())
        .map(str::trim)
        .filter(|n| !n.is_empty());
    match field.and_then(first_raw) {
        None => String::new(),
        Some(First::Group(name)) => casemap(name.trim()),
        Some(First::Addr { local, domain }) => match name {
            Some(n) => casemap(n),
            None => casemap(&match domain {
                Some(d) => format!("{local}@{d}"),
                None => local,
            }),
        },
        Some(First::Missing) => casemap(name.unwrap_or("")),
    }
}

/// Is this a msg-id (RFC 5322 3.6.4: `id-left "@" id-right`, the `<>`
/// taken off by mail-parser)? Others, like `<bad>`, are not used.
fn valid_id(s: &&str) -> bool {
    s.split_once('@')
        .is_some_and(|(l, r)| !l.is_empty() && !r.is_empty())
}

/// The valid msg-ids of a header value.
fn ids<'a>(v: &'a HeaderValue) -> Vec<&'a str> {
    match v {
        HeaderValue::Text(t) => vec![t.as_ref()],
        HeaderValue::TextList(l) => l.iter().map(|t| t.as_ref()).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .map(str::trim)
    .filter(valid_id)
    .collect()
}

/// Everything SORT and THREAD take from a header (`None`: no header),
/// as `.sortkeys` keeps it (sortkeys.rs).
pub fn header_keys(m: Option<&Message>) -> HeaderKeys {
    let b = base_subject(m.and_then(|m| m.subject()).unwrap_or(""));
    let subject_digest =
        (!b.text.is_empty()).then(|| sortkeys::digest(b's', &casemap_cut(&b.text, usize::MAX)));
    let id = m
        .and_then(|m| m.message_id())
        .map(str::trim)
        .filter(valid_id)
        .map(|i| sortkeys::digest(b'i', i));
    let mut refs = m.map(|m| ids(m.references())).unwrap_or_default();
    if refs.is_empty() {
        // No References: the first In-Reply-To id is the parent.
        refs = m
            .map(|m| ids(m.in_reply_to()))
            .unwrap_or_default()
            .into_iter()
            .take(1)
            .collect();
    }
    let skip = refs.len().saturating_sub(sortkeys::MAX_REFS);
    HeaderKeys {
        subject: casemap(&b.text),
        reply: b.reply_or_forward,
        from: first_mailbox(raw(m, HeaderName::From)),
        to: first_mailbox(raw(m, HeaderName::To)),
        cc: first_mailbox(raw(m, HeaderName::Cc)),
        display_from: first_display(raw(m, HeaderName::From), m.and_then(|m| m.from())),
        display_to: first_display(raw(m, HeaderName::To), m.and_then(|m| m.to())),
        subject_digest,
        id,
        refs: refs[skip..]
            .iter()
            .map(|r| sortkeys::digest(b'i', r))
            .collect(),
    }
}

/// Where one SORT or THREAD gets each message's header keys: the
/// mailbox's `.sortkeys` file when it has them for the message, else its
/// header (and the keys read are added to the file). Mailboxes of fewer
/// than `sortkeys::MIN_MESSAGES` messages read their headers only, and so
/// does a command whose criteria leave fewer than one message in
/// [`SUBSET_SHARE`] (as the records tell, `Crit::may_match`).
pub struct KeySource {
    /// The mailbox directory (its own descriptor) and the file's keys.
    file: Option<(storage::Dir, SortKeys)>,
}

impl KeySource {
    /// For the selected mailbox, if any, and a command over the messages
    /// that match `search` (`saved` and `dollar` as the session has them).
    pub(super) fn open(
        sel: Option<&super::conn::Selected>,
        search: &[SearchKey],
        saved: &[u32],
        dollar: bool,
    ) -> KeySource {
        let file = sel.and_then(|s| {
            if s.view.len() < sortkeys::MIN_MESSAGES || few_hits(s, search, saved, dollar) {
                return None;
            }
            let dir = s.mbox.dir().try_clone().ok()?;
            let uv = s.view.uidvalidity();
            let mut keys = SortKeys::load(&dir, uv);
            keys.prepare(&dir, uv, s.view.len() as usize, |u| s.view.seq(u).is_some());
            Some((dir, keys))
        });
        KeySource { file }
    }

    /// The file's keys of `c`'s message, borrowed from the file's bytes.
    pub fn cached(&self, c: &Candidate) -> Option<KeysRef<'_>> {
        self.file.as_ref().and_then(|(_, k)| k.get(c.rec))
    }

    /// The keys of `c`'s message from its header, added to the file when
    /// the header was verified.
    pub fn read(&self, c: &Candidate) -> HeaderKeys {
        let m = parse_header(c);
        let keys = header_keys(m.as_ref());
        if let Some((dir, file)) = &self.file
            && c.header_verified()
        {
            file.add(dir, c.rec, &keys);
        }
        keys
    }

    /// `f` of the keys of `c`'s message.
    pub fn with<R>(&self, c: &Candidate, f: impl FnOnce(KeysRef<'_>) -> R) -> R {
        match self.cached(c) {
            Some(k) => f(k),
            None => f(self.read(c).as_ref()),
        }
    }

    /// Writes out the keys added.
    pub fn finish(&self) {
        if let Some((dir, file)) = &self.file {
            file.flush(dir);
        }
    }
}

/// A command whose hits are at most one message in this many reads their
/// headers rather than the whole `.sortkeys` file: reading the file costs
/// about 0.2 µs a message of the mailbox (0.19 s at a million), a header
/// about 10-100 µs, so below one in 512 the headers cost less (a SORT of
/// 101 of 1,000,000 messages took 0.19 s with the file, 0.04 s without).
pub const SUBSET_SHARE: usize = 512;

/// Whether fewer than one message of `sel`'s in [`SUBSET_SHARE`] can
/// match `search`, as the records tell (header and body keys count as
/// matching): one pass over the records in memory, stopped as soon as
/// the answer is no.
fn few_hits(
    sel: &super::conn::Selected,
    search: &[SearchKey],
    saved: &[u32],
    dollar: bool,
) -> bool {
    let enough = sel.view.len() as usize / SUBSET_SHARE;
    let star = sel.star();
    let crit = super::criteria::compile(search, star, dollar);
    let open = |r: &storage::Record| super::msgfile::MessageFile::open(&sel.mbox, r);
    let mut n = 0;
    for m in sel.view.iter().filter(|m| !m.expunged) {
        if crit.may_match(&sel.candidate(&m, star, &open), saved) {
            n += 1;
            if n > enough {
                return false;
            }
        }
    }
    true
}

/// A sort key: text borrowed from the key file when it came from there.
/// A text's first 8 bytes, big-endian and zero-padded, come first: they
/// order two texts as the texts do unless they are equal, and comparing
/// them does not reach into the file's bytes (a SORT of a million
/// messages spent 40% of its time there, missing the caches).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyVal<'k> {
    Num(i64),
    Text(u64, Cow<'k, str>),
}

impl<'k> KeyVal<'k> {
    fn text(t: Cow<'k, str>) -> KeyVal<'k> {
        let mut p = [0u8; 8];
        let n = t.len().min(8);
        p[..n].copy_from_slice(&t.as_bytes()[..n]);
        KeyVal::Text(u64::from_be_bytes(p), t)
    }
}

/// The text key `k` of keys `h` (DISPLAYTO for any key not a text one,
/// which [`make_key`] never asks for).
fn text_key<'a>(k: &SortKey, h: &KeysRef<'a>) -> &'a str {
    match k {
        SortKey::Subject => h.subject,
        SortKey::From => h.from,
        SortKey::To => h.to,
        SortKey::Cc => h.cc,
        SortKey::DisplayFrom => h.display_from,
        _ => h.display_to,
    }
}

/// A message's keys, one per criterion: the first held inline, so that
/// a sort by one criterion allocates nothing per message and most
/// comparisons touch no other memory.
#[derive(Debug)]
struct Keys<'k> {
    first: KeyVal<'k>,
    rest: Vec<KeyVal<'k>>,
}

impl<'k> FromIterator<KeyVal<'k>> for Keys<'k> {
    fn from_iter<I: IntoIterator<Item = KeyVal<'k>>>(it: I) -> Self {
        let mut it = it.into_iter();
        Keys {
            first: it.next().unwrap_or(KeyVal::Num(0)),
            rest: it.collect(),
        }
    }
}

impl Keys<'_> {
    fn iter(&self) -> impl Iterator<Item = &KeyVal<'_>> {
        std::iter::once(&self.first).chain(&self.rest)
    }
}

fn make_key<'k>(c: &Candidate, criteria: &[SortCriterion], source: &'k KeySource) -> Keys<'k> {
    let num = |k: &SortKey| match k {
        SortKey::Arrival => Some(c.rec.internal_date),
        SortKey::Date => Some(sent_date(c.rec)),
        SortKey::Size => Some(c.rec.size.min(i64::MAX as u64) as i64),
        _ => None,
    };
    if criteria.iter().all(|k| num(&k.key).is_some()) {
        return criteria
            .iter()
            .map(|k| KeyVal::Num(num(&k.key).unwrap_or(0)))
            .collect();
    }
    let keys = |text: &dyn Fn(&SortKey) -> Cow<'k, str>| {
        criteria
            .iter()
            .map(|k| num(&k.key).map_or_else(|| KeyVal::text(text(&k.key)), KeyVal::Num))
            .collect()
    };
    // From the file, the texts borrowed from its bytes; else read.
    match source.cached(c) {
        Some(h) => keys(&|k| Cow::Borrowed(text_key(k, &h))),
        None => {
            let owned = source.read(c);
            let h = owned.as_ref();
            keys(&|k| Cow::Owned(text_key(k, &h).to_string()))
        }
    }
}

/// Orders two messages' keys by the criteria (REVERSE turning one
/// around); equal ones stay in sequence order (RFC 5256 3), which the
/// caller's stable sort over sequence-ordered messages keeps.
fn compare(a: &Keys, b: &Keys, criteria: &[SortCriterion]) -> Ordering {
    for ((x, y), k) in a.iter().zip(b.iter()).zip(criteria) {
        let o = x.cmp(y);
        let o = if k.reverse { o.reverse() } else { o };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// At most this many sort criteria in one command.
const MAX_CRITERIA: usize = 16;

impl Session {
    pub(super) fn sort(
        &mut self,
        tag: &str,
        criteria: &[SortCriterion],
        charset: &str,
        search: &[SearchKey],
        uid: bool,
    ) -> Result<Done, Fail> {
        if criteria.len() > MAX_CRITERIA {
            return Err(Fail::Bad("Too many sort criteria".into()));
        }
        // A key after the same key never decides anything: one key each.
        let mut seen = Vec::new();
        let criteria: Vec<SortCriterion> = criteria
            .iter()
            .filter(|c| {
                let new = !seen.contains(&c.key);
                seen.push(c.key.clone());
                new
            })
            .cloned()
            .collect();
        let criteria = &criteria[..];
        let ret = self.search_return.take();
        let source = KeySource::open(self.sel.as_ref(), search, &self.saved, self.dollar);
        let hits = self.matching_for(ret, Some(charset), search, |c| {
            make_key(c, criteria, &source)
        });
        source.finish();
        let mut hits = hits?;
        // Equal keys stay in sequence order (RFC 5256 3), the order the
        // hits come in. By a date or the size first: a stable sort, which
        // finds the runs a mailbox's dates mostly form already (unstable,
        // REVERSE DATE of 100,000 took 25 ms instead of 15). By a text
        // first: an unstable one with the sequence number last (a
        // million by SUBJECT: 0.68 s instead of 0.90).
        let by_number = criteria
            .first()
            .is_some_and(|c| matches!(c.key, SortKey::Arrival | SortKey::Date | SortKey::Size));
        if by_number {
            hits.sort_by(|a, b| compare(&a.key, &b.key, criteria));
        } else {
            hits.sort_unstable_by(|a, b| compare(&a.key, &b.key, criteria).then(a.seq.cmp(&b.seq)));
        }
        let with_modseq = search.iter().any(super::search::uses_modseq);
        if with_modseq {
            self.enable_condstore();
        }
        self.answer_search(tag, "SORT", uid, ret, &hits, with_modseq)
            .map_err(|e| Fail::Stop(super::conn::Stop::Io(e)))?;
        ok("SORT completed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefix orders texts as the texts do, shorter ones, NUL bytes
    /// and multi-byte characters across the 8th byte included.
    #[test]
    fn text_keys_order_as_their_texts() {
        let texts = [
            "",
            "\0",
            "A",
            "A\0",
            "AB",
            "ABCDEFGH",
            "ABCDEFGH\0",
            "ABCDEFGHI",
            "ABCDEFGI",
            "ABCDEFG\u{e9}",
            "ABCDEFG\u{e9}A",
            "ABCDEFGZ",
            "\u{e9}T\u{e9}",
            "Z",
        ];
        for a in texts {
            for b in texts {
                let (ka, kb) = (
                    KeyVal::text(Cow::Borrowed(a)),
                    KeyVal::text(Cow::Borrowed(b)),
                );
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    fn base(s: &str) -> (String, bool) {
        let b = base_subject(s);
        (b.text, b.reply_or_forward)
    }

    /// RFC 5256 2.1 steps 2 to 6.
    #[test]
    fn base_subjects() {
        assert_eq!(base("Hello"), ("Hello".into(), false));
        assert_eq!(base("Re: Hello"), ("Hello".into(), true));
        assert_eq!(base("RE: re: Fwd: Hello"), ("Hello".into(), true));
        assert_eq!(base("Re[2]: Hello"), ("Hello".into(), true));
        assert_eq!(base("Fw:Hello (fwd) (FWD)  "), ("Hello".into(), true));
        assert_eq!(base("[list] Re: Hello"), ("Hello".into(), true));
        assert_eq!(base("[list] [x] re : Hello"), ("Hello".into(), true));
        assert_eq!(base("[list] Hello"), ("Hello".into(), false));
        // A blob that is all there is stays.
        assert_eq!(base("[list]"), ("[list]".into(), false));
        assert_eq!(base("Re: [list]"), ("[list]".into(), true));
        assert_eq!(base("[fwd: Re: Hello]"), ("Hello".into(), true));
        assert_eq!(base("[Fwd: [fwd: x (fwd)]]"), ("x".into(), true));
        assert_eq!(base("\tHello \r\n  world "), ("Hello world".into(), false));
        assert_eq!(base("Reply: x"), ("Reply: x".into(), false));
        assert_eq!(base("Fwd x"), ("Fwd x".into(), false));
        assert_eq!(base(""), ("".into(), false));
        assert_eq!(base("re:"), ("".into(), true));
    }

    /// RFC 5256 3 / RFC 5957 3: the first address as ENVELOPE lists it;
    /// a group comes as its name.
    #[test]
    fn address_keys() {
        let keys = |h: &str| {
            let m = MessageParser::default()
                .parse_headers(h.as_bytes())
                .unwrap();
            let r = raw(Some(&m), HeaderName::From);
            (first_mailbox(r), first_display(r, m.from()))
        };
        assert_eq!(
            keys("From: Bob <bob@x.org>\r\n\r\n"),
            ("BOB".into(), "BOB".into())
        );
        assert_eq!(
            keys("From: <a@x.org>\r\n\r\n"),
            ("A".into(), "A@X.ORG".into())
        );
        assert_eq!(
            keys("From: team: c@x.org, d@x.org;\r\n\r\n"),
            ("TEAM".into(), "TEAM".into())
        );
        assert_eq!(
            keys("Subject: none\r\n\r\n"),
            (String::new(), String::new())
        );
    }

    /// RFC 5051: case and compatibility forms compare equal; accented
    /// letters sort next to their base letter.
    #[test]
    fn casemap_compares_unicode() {
        assert_eq!(casemap("hello"), casemap("HeLLo"));
        assert_eq!(casemap("\u{e9}t\u{e9}"), casemap("E\u{301}TE\u{301}"));
        assert!(casemap("\u{e9}a") < casemap("f"));
        // No SpecialCasing: sharp s stays; the fi ligature decomposes to
        // a lowercase fi.
        assert_eq!(casemap("\u{df}"), "\u{df}");
        assert_eq!(casemap("\u{fb01}le"), "fiLE");
        assert_eq!(casemap(&"x".repeat(1000)).len(), KEY_MAX);
    }
}
