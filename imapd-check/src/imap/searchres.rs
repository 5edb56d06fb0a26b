//! SEARCHRES (RFC 5182): `SEARCH RETURN (SAVE)` keeps the result, and
//! `$` stands for it where a sequence set goes (FETCH, STORE, COPY,
//! MOVE, UID EXPUNGE, and in SEARCH, SORT and THREAD criteria).
//!
//! imap-codec does not know `$`. Before a command is parsed, a `$` in a
//! sequence-set position is written as [`MARK`], a sequence set no client
//! sends in practice (the largest UID there can be), and the session
//! notes that it did so; the handlers then take that set for the saved
//! messages ([`Session::dollar_targets`], `criteria::compile`). A `$` inside a
//! quoted string, a literal, or as the argument of a key that takes a
//! string (`SUBJECT $`) or a flag is left alone.

use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

use super::conn::Session;
use super::esearch::ReturnOpts;
use super::messages::Hit;

/// What `$` becomes before imap-codec parses the command.
pub const MARK: &str = "4294967295";

/// Commands whose first argument is a sequence set.
const SET_FIRST: &[&[u8]] = &[b"FETCH", b"STORE", b"COPY", b"MOVE", b"EXPUNGE"];
/// Commands whose arguments hold search criteria.
const CRITERIA: &[&[u8]] = &[b"SEARCH", b"SORT", b"THREAD"];
/// Search keys whose next argument is a string or flag, never a set.
const TAKES_STRING: &[&[u8]] = &[
    b"BCC",
    b"BODY",
    b"CC",
    b"FROM",
    b"SUBJECT",
    b"TEXT",
    b"TO",
    b"KEYWORD",
    b"UNKEYWORD",
    b"HEADER",
    b"CHARSET",
];

/// Where the tokens of a command line are: (start, end) of each atom
/// outside quoted strings and literals, with `(` and `)` as separators.
fn tokens(cmd: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    let mut start = None;
    while i < cmd.len() {
        let b = cmd[i];
        match b {
            b' ' | b'(' | b')' | b'\r' | b'\n' => {
                if let Some(s) = start.take() {
                    out.push((s, i));
                }
                i += 1;
            }
            b'"' => {
                // A quoted string: skip to its closing quote.
                if let Some(s) = start.take() {
                    out.push((s, i));
                }
                let open = i;
                i += 1;
                while i < cmd.len() && cmd[i] != b'"' {
                    i += if cmd[i] == b'\\' { 2 } else { 1 };
                }
                out.push((open, (i + 1).min(cmd.len())));
                i += 1;
            }
            b'{' => {
                // `{n}\r\n` or `{n+}\r\n` and n octets.
                if let Some(s) = start.take() {
                    out.push((s, i));
                }
                let close = cmd[i..].iter().position(|&c| c == b'}').map(|p| i + p);
                let n = close.and_then(|c| {
                    let digits = cmd[i + 1..c].strip_suffix(b"+").unwrap_or(&cmd[i + 1..c]);
                    std::str::from_utf8(digits).ok()?.parse::<usize>().ok()
                });
                match (close, n) {
                    (Some(c), Some(n)) => {
                        let data = (c + 3).min(cmd.len());
                        out.push((i, (data + n).min(cmd.len())));
                        i = data + n;
                    }
                    _ => {
                        start = Some(i);
                        i += 1;
                    }
                }
            }
            _ => {
                start.get_or_insert(i);
                i += 1;
            }
        }
    }
    if let Some(s) = start {
        out.push((s, cmd.len()));
    }
    out
}

/// `cmd` with each `$` in a sequence-set position written as [`MARK`];
/// `None` when there is none.
pub fn substitute(cmd: &[u8]) -> Option<Vec<u8>> {
    if !cmd.contains(&b'$') {
        return None;
    }
    let toks = tokens(cmd);
    let word = |k: usize| -> &[u8] { toks.get(k).map_or(&[][..], |&(s, e)| &cmd[s..e]) };
    let name_at = if word(1).eq_ignore_ascii_case(b"UID") {
        2
    } else {
        1
    };
    let name = word(name_at);
    let is = |list: &[&[u8]]| list.iter().any(|n| name.eq_ignore_ascii_case(n));
    let mut at = Vec::new();
    if is(SET_FIRST) {
        if word(name_at + 1) == b"$" {
            at.push(toks[name_at + 1]);
        }
    } else if is(CRITERIA) {
        for (k, &tok) in toks.iter().enumerate().skip(name_at + 1) {
            if word(k) != b"$" {
                continue;
            }
            let prev = word(k - 1);
            let header_value = k >= 2 && word(k - 2).eq_ignore_ascii_case(b"HEADER");
            if !header_value && !TAKES_STRING.iter().any(|t| prev.eq_ignore_ascii_case(t)) {
                at.push(tok);
            }
        }
    }
    if at.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(cmd.len() + at.len() * MARK.len());
    let mut from = 0;
    for (s, e) in at {
        out.extend_from_slice(&cmd[from..s]);
        out.extend_from_slice(MARK.as_bytes());
        from = e;
    }
    out.extend_from_slice(&cmd[from..]);
    Some(out)
}

/// Is this the set `$` became?
pub fn is_mark(set: &SequenceSet) -> bool {
    matches!(
        set.0.as_ref(),
        [Sequence::Single(SeqOrUid::Value(v))] if v.get() == u32::MAX
    )
}

/// The UIDs a `RETURN (... SAVE)` keeps (RFC 5182 2.4): with MIN and/or
/// MAX but neither ALL nor COUNT, only those messages; else all matches.
pub(super) fn to_save<K>(o: &ReturnOpts, hits: &[Hit<K>]) -> Vec<u32> {
    let mut uids: Vec<u32> = if (o.min || o.max) && !(o.all || o.count) {
        let mut v = Vec::new();
        if let (true, Some(h)) = (o.min, hits.first()) {
            v.push(h.uid);
        }
        if let (true, Some(h)) = (o.max, hits.last()) {
            v.push(h.uid);
        }
        v
    } else {
        hits.iter().map(|h| h.uid).collect()
    };
    uids.sort_unstable();
    uids.dedup();
    uids
}

impl Session {
    /// The (seq, uid) pairs of the saved messages still in the view.
    pub(super) fn dollar_targets(&self) -> Vec<(u32, u32)> {
        let Some(sel) = self.sel.as_ref() else {
            return Vec::new();
        };
        sel.view
            .iter()
            .filter(|m| self.saved.binary_search(&m.uid).is_ok())
            .map(|m| (m.seq, m.uid))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(s: &str) -> Option<String> {
        substitute(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    /// RFC 5182 2.1: `$` where a sequence set goes, nowhere else.
    #[test]
    fn dollar_is_marked_only_as_a_set() {
        assert_eq!(
            sub("a FETCH $ (FLAGS)\r\n").unwrap(),
            "a FETCH 4294967295 (FLAGS)\r\n"
        );
        assert_eq!(
            sub("a UID COPY $ x\r\n").unwrap(),
            "a UID COPY 4294967295 x\r\n"
        );
        assert_eq!(sub("a COPY 1 $\r\n"), None);
        assert_eq!(
            sub("a SEARCH UNSEEN $ OR UID $ (SUBJECT $ NOT $)\r\n").unwrap(),
            "a SEARCH UNSEEN 4294967295 OR UID 4294967295 (SUBJECT $ NOT 4294967295)\r\n"
        );
        assert_eq!(sub("a SEARCH HEADER $ $ KEYWORD $\r\n"), None);
        assert_eq!(sub("a SEARCH SUBJECT \"$\" BODY {1}\r\n$\r\n"), None);
        assert_eq!(sub("a STORE 1 +FLAGS ($Forwarded)\r\n"), None);
        assert_eq!(
            sub("a UID SORT (DATE) UTF-8 $\r\n").unwrap(),
            "a UID SORT (DATE) UTF-8 4294967295\r\n"
        );
        assert_eq!(sub("a SELECT $\r\n"), None);
        assert!(is_mark(&MARK.parse().unwrap()));
        assert!(!is_mark(&"1:4294967295".parse().unwrap()));
    }
}
