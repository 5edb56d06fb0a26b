//! ENVELOPE, BODYSTRUCTURE and HEADER.FIELDS from header blocks.
//!
//! The structure of a message (part offsets, sizes, lines) comes from
//! [`structure::scan`], which never holds the message; each part's header
//! block is read back (bounded) and parsed with mail-parser on its own.
//! Everything served is sliced from the stored bytes.

use std::io;

use mail_parser::{ContentType, Message, MessageParser, MessagePart, MimeHeaders};

use super::address;
use super::emit::Emitter;
use super::structure::{self, Kind, Source, Structure};
use super::wire::{nstring, string};

/// A parsed header block.
pub struct Headers<'x> {
    msg: Option<Message<'x>>,
}

impl<'x> Headers<'x> {
    pub fn parse(block: &'x [u8]) -> Self {
        Headers {
            msg: MessageParser::default().parse_headers(block),
        }
    }
    fn part(&self) -> Option<&MessagePart<'x>> {
        self.msg.as_ref()?.parts.first()
    }
    fn content_type(&self) -> Option<&ContentType<'_>> {
        self.part()?.content_type()
    }
    fn raw_header(&self, name: &str) -> Option<&[u8]> {
        let msg = self.msg.as_ref()?;
        let h = msg
            .parts
            .first()?
            .headers
            .iter()
            .find(|h| h.name.as_str().eq_ignore_ascii_case(name))?;
        let raw: &[u8] = msg.raw_message.as_ref();
        let end = (h.offset_end as usize).min(raw.len());
        Some(trim(raw.get((h.offset_start as usize).min(end)..end)?))
    }
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e]
}

/// Removes folding (CRLF before whitespace).
fn unfold(b: &[u8]) -> Vec<u8> {
    b.iter()
        .copied()
        .filter(|&c| c != b'\r' && c != b'\n')
        .collect()
}

/// The mechanism a Content-Transfer-Encoding value names, without the
/// comments and whitespace RFC 2045 6.1 and RFC 822 3.4.3 allow around it
/// (`base64 (sent as such)` is `base64`); its case as written.
pub(super) fn cte_mechanism(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for c in value.chars() {
        if depth > 0 {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
        } else if c == '(' {
            depth = 1;
        } else if !c.is_whitespace() {
            out.push(c);
        }
    }
    out
}

fn nstring_unfolded(out: &mut Vec<u8>, v: Option<&[u8]>) {
    nstring(out, v.map(unfold).as_deref());
}

/// ENVELOPE (RFC 3501 7.4.2). Sender and Reply-To absent or empty take
/// the From value; address lists come from [`address::parse`].
pub fn envelope(out: &mut Vec<u8>, n: &Headers) {
    out.push(b'(');
    nstring_unfolded(out, n.raw_header("Date"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Subject"));
    let list = |name: &str| {
        n.raw_header(name)
            .map(|v| address::parse(&unfold(v)))
            .unwrap_or_default()
    };
    let from = list("From");
    for name in ["From", "Sender", "Reply-To", "To", "Cc", "Bcc"] {
        out.push(b' ');
        let items = list(name);
        let items = if items.is_empty() && matches!(name, "Sender" | "Reply-To") {
            &from
        } else {
            &items
        };
        addresses(out, items);
    }
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("In-Reply-To"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Message-ID"));
    out.push(b')');
}

/// An address list: `NIL` when empty; a group as its start marker
/// `(NIL NIL name NIL)`, its members, and the end marker.
fn addresses(out: &mut Vec<u8>, items: &[address::Item]) {
    if items.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for it in items {
        match it {
            address::Item::Mailbox {
                name,
                route,
                mailbox,
                host,
            } => {
                out.push(b'(');
                nstring(out, name.as_deref());
                out.push(b' ');
                nstring(out, route.as_deref());
                out.push(b' ');
                string(out, mailbox);
                out.push(b' ');
                nstring(out, host.as_deref());
                out.push(b')');
            }
            address::Item::GroupStart(name) => {
                out.extend_from_slice(b"(NIL NIL ");
                string(out, name);
                out.extend_from_slice(b" NIL)");
            }
            address::Item::GroupEnd => out.extend_from_slice(b"(NIL NIL NIL NIL)"),
        }
    }
    out.push(b')');
}

fn params(
    out: &mut Vec<u8>,
    attrs: Option<&Vec<mail_parser::Attribute>>,
    default: &[(&str, &str)],
) {
    let list: Vec<(String, String)> = match attrs {
        Some(a) if !a.is_empty() => a
            .iter()
            .map(|a| (a.name.to_string(), a.value.to_string()))
            .collect(),
        _ => default
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
    };
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for (i, (k, v)) in list.iter().enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        string(out, k.to_ascii_uppercase().as_bytes());
        out.push(b' ');
        string(out, v.as_bytes());
    }
    out.push(b')');
}

fn extension(out: &mut Vec<u8>, n: &Headers) {
    out.push(b' ');
    match n.part().and_then(|p| p.content_disposition()) {
        Some(d) => {
            out.push(b'(');
            string(out, d.c_type.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            params(out, d.attributes.as_ref(), &[]);
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    languages(out, n.raw_header("Content-Language"));
    out.push(b' ');
    nstring_unfolded(out, n.raw_header("Content-Location"));
}

/// body-fld-lang (RFC 3501 7.4.2): NIL, one tag as a string, or several
/// (`Content-Language: en, de`, RFC 3282) as a list of strings; comments
/// and white space are not part of a tag.
fn languages(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.extend_from_slice(b"NIL");
        return;
    };
    let v = strip_comments(&unfold(v));
    let tags: Vec<&[u8]> = v
        .split(|&b| b == b',')
        .map(trim)
        .filter(|t| !t.is_empty())
        .collect();
    match tags.as_slice() {
        [] => out.extend_from_slice(b"NIL"),
        [one] => string(out, one),
        many => {
            out.push(b'(');
            for (i, t) in many.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                string(out, t);
            }
            out.push(b')');
        }
    }
}

/// The value without RFC 5322 comments (nested, with quoted pairs).
fn strip_comments(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut depth = 0usize;
    let mut escaped = false;
    for &b in v {
        if depth > 0 {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ => {}
            }
            continue;
        }
        if b == b'(' {
            depth = 1;
        } else {
            out.push(b);
        }
    }
    out
}

/// BODYSTRUCTURE (`extended`) or BODY of part `idx`. Each header block is
/// read, rendered into what comes before and after the nested parts, and
/// dropped before recursing; the output is flushed as it grows.
pub fn body_structure(
    em: &mut Emitter,
    src: &dyn Source,
    s: &Structure,
    idx: usize,
    extended: bool,
) -> io::Result<()> {
    let p = &s.parts[idx];
    let block = structure::header_block(src, p)?;
    let h = Headers::parse(&block);
    let ct = h.content_type();
    let mut head = vec![b'('];
    let mut tail = Vec::new();
    let declared_multipart = ct.is_some_and(|c| c.c_type.eq_ignore_ascii_case("multipart"));
    let kids: Option<&[usize]> = match &p.kind {
        Kind::Multipart(kids) => Some(kids),
        // Declared multipart but no parts found (no boundary, cut short,
        // too deep): still a multipart for the syntax.
        _ if declared_multipart => Some(&[]),
        _ => None,
    };
    let mut inner = None;
    if kids.is_some() {
        tail.push(b' ');
        let sub = ct.and_then(|c| c.c_subtype.as_deref()).unwrap_or("MIXED");
        string(&mut tail, sub.to_ascii_uppercase().as_bytes());
        if extended {
            tail.push(b' ');
            params(&mut tail, ct.and_then(|c| c.attributes.as_ref()), &[]);
            extension(&mut tail, &h);
        }
    } else {
        let (ty, sub) = match ct {
            Some(c) => (
                c.c_type.to_ascii_uppercase(),
                c.c_subtype
                    .as_deref()
                    .unwrap_or("PLAIN")
                    .to_ascii_uppercase(),
            ),
            None if p.default_message => ("MESSAGE".to_string(), "RFC822".to_string()),
            None => ("TEXT".to_string(), "PLAIN".to_string()),
        };
        let out = &mut head;
        string(out, ty.as_bytes());
        out.push(b' ');
        string(out, sub.as_bytes());
        out.push(b' ');
        let default: &[(&str, &str)] = if ty == "TEXT" {
            &[("CHARSET", "US-ASCII")]
        } else {
            &[]
        };
        params(out, ct.and_then(|c| c.attributes.as_ref()), default);
        out.push(b' ');
        nstring_unfolded(out, h.raw_header("Content-ID"));
        out.push(b' ');
        nstring_unfolded(out, h.raw_header("Content-Description"));
        out.push(b' ');
        let enc = h
            .raw_header("Content-Transfer-Encoding")
            .map(|e| cte_mechanism(&String::from_utf8_lossy(e)).to_ascii_uppercase())
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "7BIT".to_string());
        string(out, enc.as_bytes());
        out.extend_from_slice(format!(" {}", p.end - p.body_start).as_bytes());
        inner = s.inner(idx).filter(|_| ty == "MESSAGE");
        if inner.is_none() && ty == "MESSAGE" && sub == "RFC822" {
            // Not parsed as a message (encoded, or too deep): the syntax
            // still wants an envelope, a body and lines.
            out.extend_from_slice(
                b" (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) (\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)",
            );
        }
        if ty == "TEXT" || ty == "MESSAGE" && sub == "RFC822" || inner.is_some() {
            tail.extend_from_slice(format!(" {}", p.lines).as_bytes());
        }
        if extended {
            tail.push(b' ');
            nstring_unfolded(&mut tail, h.raw_header("Content-MD5"));
            extension(&mut tail, &h);
        }
    }
    tail.push(b')');
    drop(h);
    drop(block);
    em.buf.extend_from_slice(&head);
    if let Some(kids) = kids {
        for &k in kids {
            body_structure(em, src, s, k, extended)?;
            em.maybe_flush()?;
        }
        if kids.is_empty() {
            // A multipart needs one body for the syntax.
            em.buf
                .extend_from_slice(b"(\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 0 0)");
        }
    }
    if let Some(inner) = inner {
        em.buf.push(b' ');
        let ib = structure::header_block(src, &s.parts[inner])?;
        envelope(&mut em.buf, &Headers::parse(&ib));
        drop(ib);
        em.buf.push(b' ');
        body_structure(em, src, s, inner, extended)?;
    }
    em.buf.extend_from_slice(&tail);
    Ok(())
}

/// The header lines of `header` whose field name is (`not == false`) or
/// is not (`not == true`) in `names`, followed by the blank line.
pub fn header_fields(header: &[u8], names: &[Vec<u8>], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        if !line.starts_with(b" ") && !line.starts_with(b"\t") {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            let name = trim(name);
            let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
            keep = listed != not;
        }
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2045 6.1: comments and whitespace around the mechanism.
    #[test]
    fn cte_mechanism_drops_comments() {
        assert_eq!(cte_mechanism("base64"), "base64");
        assert_eq!(
            cte_mechanism(" Base64 (sent (nested) as such)\r\n"),
            "Base64"
        );
        assert_eq!(
            cte_mechanism("(x\\) y) quoted-printable"),
            "quoted-printable"
        );
        assert_eq!(cte_mechanism("(only a comment)"), "");
    }
    use crate::imap::structure::Mem;

    const MULTI: &[u8] = b"From: A <a@x.org>\r\nTo: b@y.org\r\nSubject: hi\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npre\r\n--b1\r\nContent-Type: text/plain\r\n\r\none\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\n";

    fn render(raw: &[u8], extended: bool) -> String {
        let s = structure::scan(&Mem(raw), true, false).unwrap();
        let mut sink = Vec::new();
        let mut em = Emitter::new(&mut sink);
        body_structure(&mut em, &Mem(raw), &s, 0, extended).unwrap();
        em.finish().unwrap();
        String::from_utf8(sink).unwrap()
    }

    #[test]
    fn envelope_and_structure() {
        let s = structure::scan(&Mem(MULTI), false, false).unwrap();
        let block = structure::header_block(&Mem(MULTI), &s.parts[0]).unwrap();
        let mut o = Vec::new();
        envelope(&mut o, &Headers::parse(&block));
        assert_eq!(
            String::from_utf8(o).unwrap(),
            "(NIL \"hi\" ((\"A\" NIL \"a\" \"x.org\")) ((\"A\" NIL \"a\" \"x.org\")) ((\"A\" NIL \"a\" \"x.org\")) ((NIL NIL \"b\" \"y.org\")) NIL NIL NIL NIL)"
        );
        let s = render(MULTI, false);
        assert!(
            s.starts_with("((\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 3 0)"),
            "{s}"
        );
        assert!(
            s.contains("(\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 28 (NIL \"inner\" NIL NIL NIL NIL NIL NIL NIL NIL) (\"TEXT\" \"PLAIN\" (\"CHARSET\" \"US-ASCII\") NIL NIL \"7BIT\" 10 0) 2)"),
            "{s}"
        );
        assert!(s.ends_with(" \"MIXED\")"), "{s}");
        let s = render(MULTI, true);
        assert!(
            s.ends_with(" \"MIXED\" (\"BOUNDARY\" \"b1\") NIL NIL NIL)"),
            "{s}"
        );
    }

    /// Odd structures still render as BODYSTRUCTURE an IMAP parser takes.
    #[test]
    fn odd_structures_render_valid_syntax() {
        use imap_codec::ResponseCodec;
        use imap_codec::decode::Decoder;
        let mut deep = Vec::new();
        for i in 0..40 {
            deep.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        deep.extend_from_slice(b"\r\nleaf\r\n");
        let cases: Vec<&[u8]> = vec![
            MULTI,
            b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nhi\r\n--d--\r\n",
            b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5DQo=\r\n--m--\r\n",
            b"Content-Type: multipart/mixed; boundary=m\r\n\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: cut\r\nContent-Type: multipart/alternative; boundary=z\r\n--m--\r\n",
            b"Content-Type: multipart/mixed\r\n\r\nno boundary at all\r\n",
            b"Content-Type: multipart/mixed; boundary=q\r\n\r\nnever delimited\r\n",
            b"",
        ];
        // imap-codec parses at most 8 levels of body nesting; the deep
        // case is checked for its bound instead.
        let mut o = Vec::new();
        let s = structure::scan(&Mem(&deep), true, false).unwrap();
        let mut em = Emitter::new(&mut o);
        body_structure(&mut em, &Mem(&deep), &s, 0, true).unwrap();
        em.finish().unwrap();
        let mut depth = 0i64;
        let mut max = 0;
        for &b in &o {
            depth += i64::from(b == b'(') - i64::from(b == b')');
            max = max.max(depth);
        }
        assert_eq!(depth, 0);
        assert!(max <= structure::MAX_DEPTH as i64 + 2, "{max}");
        for raw in cases {
            for extended in [false, true] {
                let s = structure::scan(&Mem(raw), true, false).unwrap();
                let mut sink = b"* 1 FETCH (BODYSTRUCTURE ".to_vec();
                let mut em = Emitter::new(&mut sink);
                body_structure(&mut em, &Mem(raw), &s, 0, extended).unwrap();
                em.finish().unwrap();
                sink.extend_from_slice(b")\r\n");
                let text = String::from_utf8_lossy(&sink).into_owned();
                let parsed = ResponseCodec::default().decode(&sink);
                assert!(
                    matches!(parsed, Ok((rest, _)) if rest.is_empty()),
                    "{text}: {parsed:?}"
                );
            }
        }
    }

    #[test]
    fn digest_children_default_to_message() {
        let raw = b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nhi\r\n--d--\r\n";
        let s = render(raw, false);
        assert!(
            s.starts_with("((\"MESSAGE\" \"RFC822\" NIL NIL NIL \"7BIT\" 18 (NIL \"one\""),
            "{s}"
        );
    }

    #[test]
    fn content_language_lists() {
        let lang = |v: Option<&[u8]>| {
            let mut o = Vec::new();
            languages(&mut o, v);
            String::from_utf8(o).unwrap()
        };
        assert_eq!(lang(None), "NIL");
        assert_eq!(lang(Some(b"en")), "\"en\"");
        assert_eq!(lang(Some(b"en, de (German)")), "(\"en\" \"de\")");
        assert_eq!(lang(Some(b" ,, ")), "NIL");
    }

    #[test]
    fn header_field_selection() {
        let h = b"Subject: x\r\nFrom: a\r\n\r\n";
        assert_eq!(
            header_fields(h, &[b"subject".to_vec()], false),
            b"Subject: x\r\n\r\n"
        );
        assert_eq!(
            header_fields(h, &[b"subject".to_vec()], true),
            b"From: a\r\n\r\n"
        );
    }
}
