//! SORT (RFC 5256) and SORT=DISPLAY (RFC 5957), and what THREAD shares
//! with them: the base subject (RFC 5256 2.1), the sent date (2.2) and
//! the i;unicode-casemap comparator (RFC 5051).
//!
//! imap-codec parses the command (`CommandBody::Sort`, with the
//! DISPLAYFROM/DISPLAYTO keys); the messages are those a SEARCH with the
//! same criteria finds, each given one small key while its header is at
//! hand. A text key is cut at [`KEY_MAX`] bytes, so sorting a million
//! messages holds a bounded key per message, never their headers.

use std::cmp::Ordering;

use imap_codec::imap_types::extensions::sort::{SortCriterion, SortKey};
use imap_codec::imap_types::search::SearchKey;
use mail_parser::{Addr, Address, Message, MessageParser};
use unicode_normalization::UnicodeNormalization;

use super::conn::{Done, Fail, Session, ok};
use super::search::Candidate;

/// Text sort keys keep this many bytes (of their casemapped form);
/// messages equal that far are ordered by the next criterion, then by
/// sequence number.
pub const KEY_MAX: usize = 256;

/// The i;unicode-casemap form of `s` (RFC 5051 2: each character's
/// simple titlecase mapping from UnicodeData, then its decomposition),
/// cut at [`KEY_MAX`] bytes. Rust has no titlecase mapping; the simple
/// uppercase one differs from it only for a few digraphs (`ǆ` gives
/// `Ǆ`, not `ǅ`). A character whose uppercase is several
/// (`ß`, `ﬁ`: full mappings from SpecialCasing, which RFC 5051
/// does not use) stays as it is, as in Dovecot; what a decomposition
/// gives is not mapped again (`ﬁ` becomes `fi`), also as in Dovecot.
pub fn casemap(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().map(simple_upper).nfkd() {
        if out.len() + c.len_utf8() > KEY_MAX {
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

/// The message's base subject, casemapped (for comparing and grouping).
pub fn subject_key(m: Option<&Message>) -> BaseSubject {
    let raw = m.and_then(|m| m.subject()).unwrap_or("");
    let b = base_subject(raw);
    BaseSubject {
        text: casemap(&b.text),
        reply_or_forward: b.reply_or_forward,
    }
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

/// The first element of an address list as ENVELOPE gives it: a named
/// group comes as its name (the group start marker, RFC 3501 7.4.2).
enum First<'a> {
    Group(&'a str),
    Addr(&'a Addr<'a>),
}

fn first<'a>(a: Option<&'a Address<'a>>) -> Option<First<'a>> {
    match a? {
        Address::List(list) => list.first().map(First::Addr),
        Address::Group(groups) => {
            let g = groups.first()?;
            match g.name.as_deref() {
                Some(name) => Some(First::Group(name)),
                None => g.addresses.first().map(First::Addr),
            }
        }
    }
}

/// [IMAP] addr-mailbox of the first address (RFC 5256 3: FROM, TO, CC).
fn first_mailbox(a: Option<&Address>) -> String {
    match first(a) {
        None => String::new(),
        Some(First::Group(name)) => casemap(name),
        Some(First::Addr(addr)) => {
            let spec = addr.address.as_deref().unwrap_or("");
            casemap(spec.rfind('@').map_or(spec, |at| &spec[..at]))
        }
    }
}

/// RFC 5957 3: the display name of the first address, or its addr-spec
/// when it has none (DISPLAYFROM, DISPLAYTO); a group's name.
fn first_display(a: Option<&Address>) -> String {
    match first(a) {
        None => String::new(),
        Some(First::Group(name)) => casemap(name.trim()),
        Some(First::Addr(addr)) => match addr.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => casemap(n),
            _ => casemap(addr.address.as_deref().unwrap_or("")),
        },
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyVal {
    Num(i64),
    Text(String),
}

fn make_key(c: &Candidate, criteria: &[SortCriterion]) -> Vec<KeyVal> {
    let needs_header = criteria
        .iter()
        .any(|k| !matches!(k.key, SortKey::Arrival | SortKey::Date | SortKey::Size));
    let msg = if needs_header { parse_header(c) } else { None };
    let m = msg.as_ref();
    criteria
        .iter()
        .map(|k| match k.key {
            SortKey::Arrival => KeyVal::Num(c.rec.internal_date),
            SortKey::Date => KeyVal::Num(sent_date(c.rec)),
            SortKey::Size => KeyVal::Num(c.rec.size.min(i64::MAX as u64) as i64),
            SortKey::Subject => KeyVal::Text(subject_key(m).text),
            SortKey::From => KeyVal::Text(first_mailbox(m.and_then(|m| m.from()))),
            SortKey::To => KeyVal::Text(first_mailbox(m.and_then(|m| m.to()))),
            SortKey::Cc => KeyVal::Text(first_mailbox(m.and_then(|m| m.cc()))),
            SortKey::DisplayFrom => KeyVal::Text(first_display(m.and_then(|m| m.from()))),
            SortKey::DisplayTo => KeyVal::Text(first_display(m.and_then(|m| m.to()))),
        })
        .collect()
}

/// Orders two keys by the criteria (REVERSE turning one around); equal
/// ones stay in sequence order (RFC 5256 3), which the caller's stable
/// sort over sequence-ordered messages keeps.
fn compare(a: &[KeyVal], b: &[KeyVal], criteria: &[SortCriterion]) -> Ordering {
    for ((x, y), k) in a.iter().zip(b).zip(criteria) {
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
        let ret = self.search_return.take();
        let mut hits = self.matching_for(ret, Some(charset), search, |c| make_key(c, criteria))?;
        hits.sort_by(|a, b| compare(&a.key, &b.key, criteria));
        let with_modseq = search.iter().any(super::search::uses_modseq);
        self.answer_search(tag, "SORT", uid, ret, &hits, with_modseq);
        ok("SORT completed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            (first_mailbox(m.from()), first_display(m.from()))
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
