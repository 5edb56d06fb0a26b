//! ESEARCH (RFC 4731): `SEARCH RETURN (MIN MAX COUNT ALL)` and the
//! `* ESEARCH (TAG "x") [UID] ...` response.
//!
//! imap-codec 2.0.0-alpha.10 parses `SEARCH` and `UID SEARCH` only in
//! their RFC 3501 form: it has no `search-return-opts` (RFC 4466 2.6.1),
//! so a command with `RETURN (...)` does not parse at all. This module
//! recognises exactly that clause right after the command name, takes it
//! out of the command bytes (so imap-codec parses the rest as a plain
//! SEARCH) and hands the options to the SEARCH handler. The clause is
//! bounded: a few known atoms, nothing nested, no literals. The same
//! goes for `SORT RETURN (...)` (ESORT, RFC 5267 3).

use imap_codec::imap_types::search::SearchKey;

use super::conn::{Fail, Session};
use super::messages::Hit;
use super::search::Candidate;
use super::searchres;

/// What `RETURN (...)` asked for. `RETURN ()` means ALL (RFC 4731 3.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReturnOpts {
    pub min: bool,
    pub max: bool,
    pub count: bool,
    pub all: bool,
    /// SEARCHRES (RFC 5182): keep the result for `$`.
    pub save: bool,
}

impl ReturnOpts {
    /// Does the client want an ESEARCH response (SAVE alone: none)?
    pub fn answers(&self) -> bool {
        self.min || self.max || self.count || self.all
    }
}

/// At most this many options in one `RETURN (...)`; the four known ones
/// fit, repeats included.
const MAX_OPTS: usize = 8;
/// The parenthesised list is never longer than this.
const MAX_CLAUSE: usize = 128;

/// A `RETURN` clause that is not acceptable (the command gets BAD).
#[derive(Debug, PartialEq, Eq)]
pub struct BadReturn(pub &'static str);

/// When `cmd` (one assembled command, CRLF included) is
/// `tag SP ["UID" SP] "SEARCH" SP "RETURN" SP "(" opts ")" ...`, gives
/// back the command without ` RETURN (...)` and the options. `Ok(None)`
/// for any other command.
pub fn split_return(cmd: &[u8]) -> Result<Option<(Vec<u8>, ReturnOpts)>, BadReturn> {
    let mut words = 0;
    let mut at = 0;
    // tag, optional UID, SEARCH or SORT: where the word after it starts.
    let mut after_search = None;
    while words < 3 && at < cmd.len() {
        let end = cmd[at..]
            .iter()
            .position(|&b| b == b' ')
            .map_or(cmd.len(), |p| at + p);
        let word = &cmd[at..end];
        words += 1;
        if words == 2 && word.eq_ignore_ascii_case(b"UID") {
            // The next word is the command name.
        } else if words >= 2 {
            if !word.eq_ignore_ascii_case(b"SEARCH") && !word.eq_ignore_ascii_case(b"SORT") {
                return Ok(None);
            }
            after_search = Some(end);
            break;
        }
        at = end + 1;
    }
    let Some(end_of_name) = after_search else {
        return Ok(None);
    };
    let rest = &cmd[end_of_name..];
    let Some(rest) = strip_prefix_ci(rest, b" RETURN ") else {
        return Ok(None);
    };
    let Some(rest) = rest.strip_prefix(b"(") else {
        return Err(BadReturn("RETURN needs a parenthesised list"));
    };
    let close = rest
        .iter()
        .take(MAX_CLAUSE)
        .position(|&b| b == b')')
        .ok_or(BadReturn("RETURN list is not closed"))?;
    let opts = parse_opts(&rest[..close])?;
    let tail = &rest[close + 1..];
    let mut out = Vec::with_capacity(cmd.len());
    out.extend_from_slice(&cmd[..end_of_name]);
    out.extend_from_slice(tail);
    Ok(Some((out, opts)))
}

fn strip_prefix_ci<'a>(b: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (b.len() >= prefix.len() && b[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &b[prefix.len()..])
}

fn parse_opts(list: &[u8]) -> Result<ReturnOpts, BadReturn> {
    let mut o = ReturnOpts::default();
    if list.is_empty() {
        o.all = true;
        return Ok(o);
    }
    let words: Vec<&[u8]> = list.split(|&b| b == b' ').collect();
    if words.len() > MAX_OPTS {
        return Err(BadReturn("Too many RETURN options"));
    }
    for w in words {
        match w.to_ascii_uppercase().as_slice() {
            b"MIN" => o.min = true,
            b"MAX" => o.max = true,
            b"COUNT" => o.count = true,
            b"ALL" => o.all = true,
            b"SAVE" => o.save = true,
            _ => return Err(BadReturn("Unknown RETURN option")),
        }
    }
    Ok(o)
}

impl Session {
    /// `matching` for a command that may SAVE: a failure empties `$`
    /// (RFC 5182 2.1).
    pub(super) fn matching_for<K>(
        &mut self,
        ret: Option<ReturnOpts>,
        charset: Option<&str>,
        criteria: &[SearchKey],
        key: impl FnMut(&Candidate) -> K,
    ) -> Result<Vec<Hit<K>>, Fail> {
        let r = self.matching(charset, criteria, key);
        if r.is_err() && ret.is_some_and(|o| o.save) {
            self.saved.clear();
        }
        r
    }

    /// The untagged answer of SEARCH or SORT for `hits` (in the order
    /// they are reported): `* SEARCH ...`/`* SORT ...` (with `(MODSEQ n)`
    /// when the criteria use MODSEQ, RFC 7162 3.1.5), or with RETURN
    /// options one `* ESEARCH` (RFC 4731, RFC 5267 3) and the result
    /// saved for `$` when SAVE is among them (RFC 5182).
    pub(super) fn answer_search<K>(
        &mut self,
        tag: &str,
        name: &str,
        uid: bool,
        ret: Option<ReturnOpts>,
        hits: &[Hit<K>],
        with_modseq: bool,
    ) {
        let ids: Vec<u32> = hits
            .iter()
            .map(|h| if uid { h.uid } else { h.seq })
            .collect();
        let modseqs: Vec<u64> = hits.iter().map(|h| h.modseq).collect();
        if let Some(o) = ret {
            if o.save {
                self.saved = searchres::to_save(&o, hits);
            }
            // SAVE alone: no ESEARCH (RFC 5182 2.4).
            if o.answers() {
                let line = response(tag, uid, o, &ids, with_modseq.then_some(&modseqs[..]));
                self.buf.extend_from_slice(line.as_bytes());
            }
            return;
        }
        let mut line = format!("* {name}");
        for id in &ids {
            line.push_str(&format!(" {id}"));
        }
        if let Some(top) = modseqs.iter().max().filter(|_| with_modseq) {
            line.push_str(&format!(" (MODSEQ {top})"));
        }
        line.push_str("\r\n");
        self.buf.extend_from_slice(line.as_bytes());
    }
}

/// `* ESEARCH (TAG "tag") [UID] [MIN n] [MAX n] [COUNT n] [ALL set]
/// [MODSEQ n]` for `hits` in the order reported: ascending for SEARCH,
/// sort order for SORT (whose MIN and MAX are its first and last, and ALL
/// keeps its order, RFC 5267 3) (RFC 4731 3.1; MODSEQ per RFC 7162
/// 3.1.5: the highest mod-sequence of the messages reported, all matches
/// when ALL or COUNT is returned, else those of MIN and MAX).
/// With no hits, MIN, MAX and ALL are left out; COUNT is 0.
pub fn response(
    tag: &str,
    uid: bool,
    o: ReturnOpts,
    hits: &[u32],
    modseqs: Option<&[u64]>,
) -> String {
    let mut line = String::from("* ESEARCH (TAG ");
    line.push_str(&quoted(tag));
    line.push(')');
    if uid {
        line.push_str(" UID");
    }
    if let (Some(first), Some(last)) = (hits.first(), hits.last()) {
        if o.min {
            line.push_str(&format!(" MIN {first}"));
        }
        if o.max {
            line.push_str(&format!(" MAX {last}"));
        }
    }
    if o.count {
        line.push_str(&format!(" COUNT {}", hits.len()));
    }
    if o.all && !hits.is_empty() {
        line.push_str(" ALL ");
        line.push_str(&super::messages::compact(hits));
    }
    if let Some(ms) = modseqs.filter(|m| !m.is_empty()) {
        let highest = if o.all || o.count {
            ms.iter().copied().max()
        } else {
            let mut v = Vec::new();
            if o.min {
                v.push(ms[0]);
            }
            if o.max {
                v.push(ms[ms.len() - 1]);
            }
            v.into_iter().max()
        };
        if let Some(h) = highest {
            line.push_str(&format!(" MODSEQ {h}"));
        }
    }
    line.push_str("\r\n");
    line
}

/// A tag as an IMAP quoted string (tags never hold `"` or `\`, but be safe).
fn quoted(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Result<Option<(String, ReturnOpts)>, BadReturn> {
        split_return(s.as_bytes()).map(|o| o.map(|(c, r)| (String::from_utf8(c).unwrap(), r)))
    }

    #[test]
    fn return_clause_is_taken_out() {
        let (c, o) = split("a SEARCH RETURN (MIN COUNT) UNSEEN\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(c, "a SEARCH UNSEEN\r\n");
        assert!(o.min && o.count && !o.max && !o.all);
        let (c, o) = split("a uid search return () charset utf-8 all\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(c, "a uid search charset utf-8 all\r\n");
        assert!(o.all && !o.min);
        assert_eq!(split("a SEARCH ALL\r\n").unwrap(), None);
        assert_eq!(split("a FETCH 1 RETURN (x)\r\n").unwrap(), None);
        assert_eq!(split("a UID FETCH 1 (UID)\r\n").unwrap(), None);
    }

    #[test]
    fn bad_return_clauses() {
        assert!(split("a SEARCH RETURN (FOO) ALL\r\n").is_err());
        assert!(split("a SEARCH RETURN MIN ALL\r\n").is_err());
        assert!(split("a SEARCH RETURN (MIN ALL\r\n").is_err());
        assert!(
            split("a SEARCH RETURN (SAVE COUNT) ALL\r\n")
                .unwrap()
                .unwrap()
                .1
                .save
        );
        let many = format!("a SEARCH RETURN ({}) ALL\r\n", ["MIN"; 9].join(" "));
        assert!(split(&many).is_err());
    }

    #[test]
    fn responses() {
        let all = ReturnOpts {
            min: true,
            max: true,
            count: true,
            all: true,
            save: false,
        };
        assert_eq!(
            response("t1", true, all, &[2, 3, 4, 9], None),
            "* ESEARCH (TAG \"t1\") UID MIN 2 MAX 9 COUNT 4 ALL 2:4,9\r\n"
        );
        assert_eq!(
            response("t1", false, all, &[], None),
            "* ESEARCH (TAG \"t1\") COUNT 0\r\n"
        );
        let min = ReturnOpts {
            min: true,
            ..Default::default()
        };
        assert_eq!(
            response("t", false, min, &[5, 7], Some(&[40, 90])),
            "* ESEARCH (TAG \"t\") MIN 5 MODSEQ 40\r\n"
        );
    }
}
