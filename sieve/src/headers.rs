//! The header fields of a message, found without mail-parser's message
//! parse: what the header, address, exists, date and duplicate tests of a
//! script without a body test read (RFC 5228 5.1, 5.5, 5.7).
//!
//! [`HeaderIndex::build`] splits the top-level header block into fields
//! exactly as mail-parser's header-only parse (`parse_headers`, every
//! value ignored) splits it, which is what these tests read before: the
//! same fields, in the same order, with the same names and the same
//! value bytes (from after the colon to the end of the field's last
//! line, line end included). Values are decoded only when a test reads
//! them (`message::decode_text`, `message::decode_addresses`).
//!
//! mail-parser's rules, which this follows:
//! - before a field, blanks (SP, HT, CR, FF) are skipped; a LF there ends
//!   the header block;
//! - the name runs to the first `:` that follows a non-blank character
//!   (colons before it are skipped); a LF before that drops the line, the
//!   end of the message ends the block (a name already begun is a field
//!   with an empty value);
//! - the name is its bytes from the first to the last non-blank one,
//!   unless it holds a blank or a non-ASCII byte: such odd names are
//!   given mail-parser's own name parse (which maps known names written
//!   with blanks inside, `Sub ject`, to the known name);
//! - the value runs to a LF that is not followed by SP or HT (that one
//!   blank is taken into the value with the LF).

use mail_parser::parsers::MessageStream;

/// The fields of one header block, by where they are in the message.
#[derive(Debug, Default)]
pub struct HeaderIndex {
    /// Each field's [`tag`] ([`ODD`] for an odd name), apart so that a
    /// lookup passes over most fields by one compare in a short loop.
    tags: Vec<u32>,
    fields: Vec<Field>,
}

#[derive(Debug)]
struct Field {
    name: Name,
    /// The value's bytes: `raw[value.0..value.1]`.
    value: (usize, usize),
}

#[derive(Debug)]
enum Name {
    /// `raw[.0...1]`: ASCII without blanks, compared as it is.
    Span(usize, usize),
    /// What mail-parser names a field whose name holds blanks or
    /// non-ASCII bytes.
    Odd(Box<str>),
}

/// The tag of an odd name (compared by its text on every lookup).
const ODD: u32 = u32::MAX;

/// A name's length and lowercased first byte, in one word.
fn tag(name: &[u8]) -> u32 {
    match name.first() {
        Some(c) => ((name.len().min(1 << 20) as u32) << 8) | c.to_ascii_lowercase() as u32,
        None => 0,
    }
}

/// Where the scan of a header block is.
enum Step {
    /// A field (added to the index, if one is given).
    Field,
    /// A line without a name (dropped), scan on.
    Skip,
    End,
}

impl HeaderIndex {
    /// Whether the header block has at least one field (mail-parser's
    /// parse of a message without one fails). Looks at the first field only.
    pub fn has_field(raw: &[u8]) -> bool {
        let mut pos = 0;
        loop {
            match step(raw, &mut pos, None) {
                Step::Field => return true,
                Step::Skip => {}
                Step::End => return false,
            }
        }
    }

    /// Indexes the header block at the start of `raw`. One pass; each
    /// step moves forward, and there is at most one field per line.
    pub fn build(raw: &[u8]) -> HeaderIndex {
        let mut idx = HeaderIndex {
            tags: Vec::with_capacity(16),
            fields: Vec::with_capacity(16),
        };
        let mut pos = 0;
        while !matches!(step(raw, &mut pos, Some(&mut idx)), Step::End) {}
        idx
    }

    /// The raw values (bytes after the colon, line end included) of every
    /// field named `name` (compared ASCII case-insensitively), in order,
    /// at most `max`, appended to `out`.
    pub fn values_into<'r>(&self, raw: &'r [u8], name: &str, max: usize, out: &mut Vec<&'r [u8]>) {
        let want = tag(name.as_bytes());
        let mut n = 0;
        for (i, &t) in self.tags.iter().enumerate() {
            if (t == want || t == ODD) && n < max && self.is(i, raw, name) {
                let f = &self.fields[i];
                out.push(&raw[f.value.0..f.value.1]);
                n += 1;
            }
        }
    }

    /// Whether any field is named `name`.
    pub fn contains(&self, raw: &[u8], name: &str) -> bool {
        let want = tag(name.as_bytes());
        (self.tags.iter().enumerate())
            .any(|(i, &t)| (t == want || t == ODD) && self.is(i, raw, name))
    }

    /// Whether field `i`, whose tag is `name`'s or [`ODD`], is named
    /// `name` (ASCII case-insensitively).
    fn is(&self, i: usize, raw: &[u8], name: &str) -> bool {
        match &self.fields[i].name {
            Name::Span(s, e) => raw[*s..*e].eq_ignore_ascii_case(name.as_bytes()),
            Name::Odd(n) => n.eq_ignore_ascii_case(name),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.fields.len()
    }
}

/// One step of mail-parser's `MessageStream::parse_headers` with every
/// value ignored, from `*pos` (the block's start or just after a field
/// or a dropped line).
fn step(raw: &[u8], pos: &mut usize, idx: Option<&mut HeaderIndex>) -> Step {
    let blank = |c: u8| c != b'\n' && c.is_ascii_whitespace();
    // Blanks before the field; a LF here is the empty line.
    let mut p = *pos;
    while raw.get(p).is_some_and(|&c| blank(c)) {
        p += 1;
    }
    if raw.get(p).is_none_or(|&c| c == b'\n') {
        *pos = p;
        return Step::End;
    }
    let field_start = p;
    // Colons (and blanks) before the name's first byte are skipped.
    while raw.get(p).is_some_and(|&c| c == b':' || blank(c)) {
        p += 1;
    }
    let first = p;
    match raw.get(p) {
        None => {
            *pos = p;
            return Step::End;
        }
        Some(b'\n') => {
            *pos = p + 1;
            return Step::Skip;
        }
        Some(_) => {}
    }
    // The name ends at the first colon; a LF before one drops the line.
    // Its last non-blank byte ends it; a blank before that or a
    // non-ASCII byte makes it odd.
    let mut last = first;
    let mut odd = false;
    let mut blank_seen = false;
    let mut colon = false;
    let mut end = plain_run(raw, first);
    if end > first {
        last = end;
    }
    while let Some(&c) = raw.get(end) {
        match c {
            b':' => {
                colon = true;
                break;
            }
            b'\n' => {
                *pos = end + 1;
                return Step::Skip;
            }
            c if blank(c) => blank_seen = true,
            c => {
                odd |= blank_seen || !c.is_ascii();
                last = end + 1;
            }
        }
        end += 1;
    }
    let span = &raw[first..last];
    let (name_tag, name) = if !odd {
        (tag(span), Name::Span(first, last))
    } else {
        let name = match MessageStream::new(&raw[field_start..]).parse_header_name() {
            Some(n) => n.as_str().into(),
            // Not reached: the same bytes gave a name above.
            None => String::from_utf8_lossy(span).into(),
        };
        (ODD, Name::Odd(name))
    };
    if !colon {
        // The message ends in the name: a field with an empty value.
        *pos = raw.len();
        if let Some(idx) = idx {
            idx.tags.push(name_tag);
            idx.fields.push(Field {
                name,
                value: (raw.len(), raw.len()),
            });
        }
        return Step::Field;
    }
    let value_start = end + 1;
    // To a LF not followed by a blank (a blank after a LF is taken too).
    let mut p = value_start;
    loop {
        match find_lf(&raw[p..]) {
            None => {
                p = raw.len();
                break;
            }
            Some(i) => {
                p += i + 1;
                if matches!(raw.get(p), Some(b' ' | b'\t')) {
                    p += 1;
                } else {
                    break;
                }
            }
        }
    }
    *pos = p;
    if let Some(idx) = idx {
        idx.tags.push(name_tag);
        idx.fields.push(Field {
            name,
            value: (value_start, p),
        });
    }
    Step::Field
}

/// Where the run of plain name bytes (printable ASCII but `:`) that
/// starts at `from` ends, eight bytes at a time: the byte loop of
/// [`step`] then looks at what ends it.
fn plain_run(raw: &[u8], from: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = from;
    while let Some(c) = raw.get(at..at + 8) {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        let colon = w ^ (ONES * u64::from(b':'));
        // High bits of bytes that are ':', below '!' (blanks, controls,
        // LF) or not ASCII (DEL, 0x7f, is rare enough to stop at too).
        let stop = (colon.wrapping_sub(ONES) & !colon)
            | w.wrapping_sub(ONES * 0x21)
            | w
            | (w & (ONES * 0x7f)).wrapping_add(ONES);
        if stop & HIGHS != 0 {
            break;
        }
        at += 8;
    }
    at
}

/// Where the first LF in `b` is: eight bytes at a time (most values are
/// a few dozen bytes, too short for `memchr`'s set-up to pay).
pub fn find_lf(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut chunks = b.chunks_exact(8);
    let mut at = 0;
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().expect("8 bytes")) ^ (ONES * u64::from(b'\n'));
        // The lowest high bit set marks the first zero byte of `w`.
        let zero = w.wrapping_sub(ONES) & !w & HIGHS;
        if zero != 0 {
            return Some(at + (zero.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| at + i)
}

#[cfg(test)]
mod tests {
    use super::HeaderIndex;
    use proptest::prelude::*;

    /// mail-parser's header-only parse with every value ignored (what the
    /// tests read before the index): each field's name and raw value.
    fn parsed(raw: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        let p = mail_parser::MessageParser::new()
            .ignore_header(mail_parser::HeaderName::ContentType)
            .default_header_ignore();
        let m = p.parse_headers(raw)?;
        Some(
            m.root_part()
                .headers
                .iter()
                .map(|h| {
                    let v = raw[h.offset_start as usize..h.offset_end as usize].to_vec();
                    (h.name.as_str().to_string(), v)
                })
                .collect(),
        )
    }

    /// The values of the fields named `name`, at most `max`.
    fn values<'r>(idx: &HeaderIndex, raw: &'r [u8], name: &str, max: usize) -> Vec<&'r [u8]> {
        let mut out = Vec::new();
        idx.values_into(raw, name, max, &mut out);
        out
    }

    /// The index's fields, as `parsed` gives them (names looked up by
    /// every name the parse gave, so each field is found by its own).
    fn indexed(raw: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
        if !HeaderIndex::has_field(raw) {
            return None;
        }
        let idx = HeaderIndex::build(raw);
        let mut out = Vec::new();
        for f in &idx.fields {
            let name = match &f.name {
                super::Name::Span(s, e) => String::from_utf8_lossy(&raw[*s..*e]).into_owned(),
                super::Name::Odd(n) => n.to_string(),
            };
            out.push((name, raw[f.value.0..f.value.1].to_vec()));
        }
        Some(out)
    }

    /// Same fields, names (ASCII case-insensitively) and values, and the
    /// lookups by name give the same values as filtering the parse.
    fn agree(raw: &[u8]) {
        let a = parsed(raw);
        let b = indexed(raw);
        assert_eq!(
            a.is_some(),
            b.is_some(),
            "{:?}",
            String::from_utf8_lossy(raw)
        );
        let (Some(a), Some(b)) = (a, b) else { return };
        assert_eq!(a.len(), b.len(), "{:?}", String::from_utf8_lossy(raw));
        for ((na, va), (nb, vb)) in a.iter().zip(&b) {
            assert!(
                na.eq_ignore_ascii_case(nb),
                "{na:?} {nb:?} in {:?}",
                String::from_utf8_lossy(raw)
            );
            assert_eq!(va, vb, "{:?}", String::from_utf8_lossy(raw));
        }
        let idx = HeaderIndex::build(raw);
        let asked = [
            "subject",
            "SUBJECT",
            "Sub ject",
            "from",
            "From ",
            "x-y",
            "X-Y",
            "list-id",
            "a",
            "A",
            "",
            " ",
            ":",
            "x-\u{e9}t\u{e9}",
            "X-\u{fffd}",
        ];
        for name in a.iter().map(|(n, _)| n.as_str()).chain(asked) {
            let want: Vec<&[u8]> = a
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice())
                .collect();
            assert_eq!(values(&idx, raw, name, usize::MAX), want, "{name:?}");
            assert_eq!(idx.contains(raw, name), !want.is_empty(), "{name:?}");
            if want.len() > 1 {
                assert_eq!(values(&idx, raw, name, 1), want[..1], "{name:?}");
            }
        }
    }

    /// RFC 5322 2.2 header fields, and what mail-parser makes of malformed
    /// ones: the index finds what the parse found.
    #[test]
    fn fields_as_mail_parser_splits_them() {
        let cases: &[&[u8]] = &[
            b"From: a@b\r\nTo: c@d\r\nSubject: hi\r\n\r\nbody\r\n",
            b"From: a@b\nTo: c@d\n\nbody\nX-Not: a header\n",
            b"Subject: folded\r\n  on two\r\n\tand three lines\r\nX: y\r\n\r\n",
            b"Subject: no body",
            b"Subject: no body\n",
            b"",
            b"\r\n",
            b"\n\nFrom: a\n",
            b"no colon line\nFrom: a\n\n",
            b"no colon at the end",
            b"   leading blanks: x\n\n",
            b"\r\r\x0c\tX-A: 1\n\n",
            b":::X-B: 2\nY::: 3\n\n",
            b": value only\nZ: z\n\n",
            b"Sub ject: spaced known name\n\n",
            b"X Spam Flag: spaced unknown name\n\n",
            b"Subject : before the colon\n\n",
            b"List-ID: <a.b>\nlist-id: <c.d>\nLIST-ID: x\n\n",
            b"X-\xc3\xa9t\xc3\xa9: utf-8 name\n\n",
            b"X-\xff: bad byte name\n\n",
            b"A-Very-Long-Header-Name-Longer-Than-Thirty-Four-Bytes: v\n\n",
            b"Subjectsubjectsubjectsubjectsubjectsubject : v\n\n",
            b"From: a\n \n \nTo: b\n\n",
            b"From: a\n\n \nTo: b\n\n",
            b"From: a\n\t\n\n",
            b"From: a\r\n \r\n\r\nbody",
            b"From: a\n  x: y\n\n",
            b"X: \x00nul\x01ctl\n\n",
            b"X\x01Y: ctl in name\n\n",
            b"X: a\rb\r\n\r\n",
            b"From:\n\n",
            b"From:",
            b"F",
            b" \t ",
            b"X: 1\nY",
            b"X: 1\nY \t",
            b"X: 1\n:",
            b"\xef\xbb\xbfFrom: bom\n\n",
            b"Received: from a\r\n\tby b; Tue, 14 Nov 2023 22:13:20 +0100\r\nDate: x\r\n\r\n",
            b"Content-Type: multipart/mixed; boundary=x\n\n--x\nSubject: inner\n\n--x--\n",
        ];
        for raw in cases {
            agree(raw);
        }
        assert_eq!(HeaderIndex::build(b"From: a\nTo: b\n\nC: d\n").len(), 2);
    }

    /// The word-at-a-time run of plain name bytes never passes a byte
    /// that is not one (any byte value at any place of a word), and
    /// passes whole words of plain bytes.
    #[test]
    fn plain_run_stops_where_it_must() {
        let plain = |c: u8| (0x21..=0x7e).contains(&c) && c != b':';
        for bad in 0..=255u8 {
            for at in 0..16 {
                let mut b = vec![b'X'; 24];
                b[at] = bad;
                let end = super::plain_run(&b, 0);
                assert!(b[..end].iter().all(|&c| plain(c)), "{bad:#x} at {at}");
                if plain(bad) {
                    assert_eq!(end, 24, "{bad:#x} at {at}");
                } else {
                    assert_eq!(end, at / 8 * 8, "{bad:#x} at {at}");
                }
            }
        }
    }

    /// The word-at-a-time search finds the first LF, as a plain one does.
    #[test]
    fn find_lf_as_position() {
        let mut b = vec![b'a'; 40];
        assert_eq!(super::find_lf(&b), None);
        for i in 0..40 {
            b[i] = b'\n';
            for start in 0..=i {
                assert_eq!(super::find_lf(&b[start..]), Some(i - start));
            }
            b[i] = if i % 2 == 0 { 0x8a } else { 0x0b };
        }
        let odd: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
        for start in 0..300 {
            let want = odd[start..].iter().position(|&c| c == b'\n');
            assert_eq!(super::find_lf(&odd[start..]), want);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        /// Any header block built from the bytes that matter to the split.
        #[test]
        fn any_block_as_mail_parser_splits_it(
            parts in proptest::collection::vec(
                prop_oneof![
                    Just(&b"\n"[..]), Just(&b"\r\n"[..]), Just(&b" "[..]), Just(&b"\t"[..]),
                    Just(&b":"[..]), Just(&b"\r"[..]), Just(&b"\x0c"[..]), Just(&b"a"[..]),
                    Just(&b"From"[..]), Just(&b"subject"[..]), Just(&b"X-Y"[..]),
                    Just(&b"\xc3\xa9"[..]), Just(&b"\xff"[..]), Just(&b"=?"[..]),
                    Just(&b"Sub ject"[..]), Just(&b"List-Id"[..]),
                ],
                0..40,
            )
        ) {
            let raw: Vec<u8> = parts.concat();
            agree(&raw);
        }
    }
}
