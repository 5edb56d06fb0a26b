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

use std::io::Write as _;

use super::conn::{Fail, Session};
use super::emit::Emitter;
use super::messages::{Hit, Sink};
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
    /// they are reported), written through the connection's output as it
    /// is produced ([`Answer`]), and the result saved for `$` when SAVE
    /// is among the RETURN options (RFC 5182).
    pub(super) fn answer_search<K>(
        &mut self,
        tag: &str,
        name: &str,
        uid: bool,
        ret: Option<ReturnOpts>,
        hits: &[Hit<K>],
        with_modseq: bool,
    ) -> std::io::Result<()> {
        if let Some(o) = ret
            && o.save
        {
            self.saved = searchres::to_save(&o, hits);
        }
        let mut a = Answer::new(tag, name, uid, ret, with_modseq);
        let mut em = Emitter::with_buf(&mut self.out, std::mem::take(&mut self.buf));
        let r = (|| {
            a.start(&mut em)?;
            for h in hits {
                a.put(&mut em, h.seq, h.uid, h.modseq)?;
            }
            a.finish(&mut em)
        })();
        self.buf = em.into_buf();
        r
    }
}

/// Pending ALL text above this goes out as it grows (the ESEARCH line's
/// items then come in the order MIN, ALL, MAX, COUNT, MODSEQ).
const SET_INLINE: usize = 64 * 1024;

/// The untagged answer of SEARCH or SORT, written as the matches come:
/// `* SEARCH n n ...`/`* SORT ...` (with `(MODSEQ n)` when the criteria
/// use MODSEQ, RFC 7162 3.1.5), or with RETURN options one `* ESEARCH
/// (TAG "x") [UID] [MIN n] [MAX n] [COUNT n] [ALL set] [MODSEQ n]`
/// (RFC 4731 3.1, RFC 5267 3). Only MIN, MAX, COUNT, the highest
/// mod-sequence and the current range of ALL are held, never a list of
/// matches: MIN and MAX are the first and last reported (ascending for
/// SEARCH; sort order for SORT, whose ALL keeps its order); MODSEQ is
/// the highest of all matches when ALL or COUNT is returned, else of
/// those of MIN and MAX (RFC 7162 3.1.5). With no hits, MIN, MAX and ALL
/// are left out; COUNT is 0. An ALL set longer than [`SET_INLINE`] is
/// written as it grows, after MIN and before MAX and COUNT (RFC 4731's
/// grammar allows any order of the return data).
pub(super) struct Answer {
    head: String,
    /// RETURN options; `None`: a plain SEARCH/SORT line.
    opts: Option<ReturnOpts>,
    with_modseq: bool,
    uid: bool,
    count: u64,
    first: Option<(u32, u64)>,
    last: Option<(u32, u64)>,
    top_modseq: u64,
    /// The ALL range being extended (first, last).
    run: Option<(u32, u32)>,
    /// ALL text not yet written (until it passes SET_INLINE).
    set: Vec<u8>,
    /// The line's head and ALL are out; the rest follows the set.
    streaming: bool,
    /// Ranges of ALL written so far.
    ranges: u64,
}

impl Answer {
    /// The answer of `name` (SEARCH, SORT) to command `tag`.
    pub fn new(
        tag: &str,
        name: &str,
        uid: bool,
        opts: Option<ReturnOpts>,
        with_modseq: bool,
    ) -> Answer {
        let head = match opts {
            Some(_) => {
                let mut h = format!("* ESEARCH (TAG {})", quoted(tag));
                if uid {
                    h.push_str(" UID");
                }
                h
            }
            None => format!("* {name}"),
        };
        Answer {
            head,
            opts,
            with_modseq,
            uid,
            count: 0,
            first: None,
            last: None,
            top_modseq: 0,
            run: None,
            set: Vec::new(),
            streaming: false,
            ranges: 0,
        }
    }

    /// Writes what comes before the matches (a plain line's head).
    pub fn start(&mut self, em: &mut Emitter) -> std::io::Result<()> {
        if self.opts.is_none() {
            em.buf.extend_from_slice(self.head.as_bytes());
        }
        Ok(())
    }

    /// One match, reported in this order.
    pub fn put(
        &mut self,
        em: &mut Emitter,
        seq: u32,
        uid: u32,
        modseq: u64,
    ) -> std::io::Result<()> {
        let id = if self.uid { uid } else { seq };
        self.count += 1;
        self.first.get_or_insert((id, modseq));
        self.last = Some((id, modseq));
        self.top_modseq = self.top_modseq.max(modseq);
        let Some(o) = self.opts else {
            write!(em.buf, " {id}")?;
            return em.maybe_flush();
        };
        if !o.all || !o.answers() {
            return Ok(());
        }
        match self.run {
            Some((a, b)) if b.checked_add(1) == Some(id) => self.run = Some((a, id)),
            Some(r) => {
                self.close_run(em, r)?;
                self.run = Some((id, id));
            }
            None => self.run = Some((id, id)),
        }
        Ok(())
    }

    /// Writes a finished ALL range, spilling to the client when long.
    fn close_run(&mut self, em: &mut Emitter, (a, b): (u32, u32)) -> std::io::Result<()> {
        let out = if self.streaming {
            &mut em.buf
        } else {
            &mut self.set
        };
        if self.ranges > 0 {
            out.push(b',');
        }
        self.ranges += 1;
        if a == b {
            write!(out, "{a}")?;
        } else {
            write!(out, "{a}:{b}")?;
        }
        if self.streaming {
            return em.maybe_flush();
        }
        if self.set.len() > SET_INLINE {
            em.buf.extend_from_slice(self.head.as_bytes());
            if let (true, Some((min, _))) = (self.opts.is_some_and(|o| o.min), self.first) {
                write!(em.buf, " MIN {min}")?;
            }
            em.buf.extend_from_slice(b" ALL ");
            em.buf.append(&mut self.set);
            self.set = Vec::new();
            self.streaming = true;
            em.maybe_flush()?;
        }
        Ok(())
    }

    /// Ends the answer's line.
    pub fn finish(&mut self, em: &mut Emitter) -> std::io::Result<()> {
        let Some(o) = self.opts else {
            if self.with_modseq && self.count > 0 {
                write!(em.buf, " (MODSEQ {})", self.top_modseq)?;
            }
            em.buf.extend_from_slice(b"\r\n");
            return em.maybe_flush();
        };
        // SAVE alone: no ESEARCH (RFC 5182 2.4).
        if !o.answers() {
            return Ok(());
        }
        if let Some(r) = self.run.take() {
            self.close_run(em, r)?;
        }
        let b = &mut em.buf;
        if !self.streaming {
            b.extend_from_slice(self.head.as_bytes());
            if let (true, Some((min, _))) = (o.min, self.first) {
                write!(b, " MIN {min}")?;
            }
        }
        if let (true, Some((max, _))) = (o.max, self.last) {
            write!(b, " MAX {max}")?;
        }
        if o.count {
            write!(b, " COUNT {}", self.count)?;
        }
        if !self.streaming && !self.set.is_empty() {
            b.extend_from_slice(b" ALL ");
            b.append(&mut self.set);
        }
        if self.with_modseq && self.count > 0 {
            let highest = if o.all || o.count {
                Some(self.top_modseq)
            } else {
                let min = self.first.filter(|_| o.min).map(|f| f.1);
                let max = self.last.filter(|_| o.max).map(|l| l.1);
                min.max(max)
            };
            if let Some(h) = highest {
                write!(b, " MODSEQ {h}")?;
            }
        }
        b.extend_from_slice(b"\r\n");
        em.maybe_flush()
    }
}

impl<K> Sink<K> for Answer {
    fn start(&mut self, em: &mut Emitter) -> std::io::Result<()> {
        Answer::start(self, em)
    }
    fn hit(&mut self, em: &mut Emitter, h: Hit<K>) -> std::io::Result<()> {
        self.put(em, h.seq, h.uid, h.modseq)
    }
    fn finish(&mut self, em: &mut Emitter) -> std::io::Result<()> {
        Answer::finish(self, em)
    }
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

    /// The answer for `hits` (ids with their mod-sequences), as written.
    fn response(
        tag: &str,
        uid: bool,
        o: ReturnOpts,
        hits: &[u32],
        modseqs: Option<&[u64]>,
    ) -> String {
        let mut out = Vec::new();
        let mut em = Emitter::new(&mut out);
        let mut a = Answer::new(tag, "SEARCH", uid, Some(o), modseqs.is_some());
        a.start(&mut em).unwrap();
        for (i, id) in hits.iter().enumerate() {
            let m = modseqs.map_or(0, |m| m[i]);
            a.put(&mut em, *id, *id, m).unwrap();
        }
        a.finish(&mut em).unwrap();
        em.finish().unwrap();
        String::from_utf8(out).unwrap()
    }

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
