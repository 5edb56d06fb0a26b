//! What tests read from the message: decoded header values, the addresses
//! of address headers, body parts (RFC 5173), the envelope.

use std::borrow::Cow;

use mail_parser::parsers::MessageStream;
use mail_parser::{Address, HeaderValue, Message, MessagePart, MimeHeaders, PartType};

/// The SMTP envelope of the delivery (RFC 5228 5.4).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Envelope {
    /// The reverse-path; empty for the null sender `<>`.
    pub from: String,
    /// The recipient (forward-path) this run is for.
    pub to: String,
}

/// Most header fields or body parts looked at in one test.
pub const MAX_VALUES: usize = 10_000;

/// The raw bytes of every `name` header field of a part, in order.
pub fn raw_headers<'a>(raw: &'a [u8], part: &MessagePart<'_>, name: &str) -> Vec<&'a [u8]> {
    part.headers
        .iter()
        .filter(|h| h.name.as_str().eq_ignore_ascii_case(name))
        .take(MAX_VALUES)
        .filter_map(|h| raw.get(h.offset_start as usize..h.offset_end as usize))
        .collect()
}

/// A header value, unfolded and RFC 2047-decoded, trimmed (RFC 5228 5.7).
pub fn decode_text(raw: &[u8]) -> String {
    decode_text_cow(raw).into_owned()
}

/// [`decode_text`], borrowing from `raw` when the value is one line of
/// UTF-8 without an encoded word (as most values are): the parse below
/// would give its text trimmed, so that is taken directly.
pub fn decode_text_cow(raw: &[u8]) -> Cow<'_, str> {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    if crate::headers::find_lf(line).is_none() && !has_encoded_word_start(raw) {
        return match std::str::from_utf8(raw) {
            Ok(s) => Cow::Borrowed(s.trim()),
            Err(_) => Cow::Owned(String::from_utf8_lossy(raw).trim().to_string()),
        };
    }
    Cow::Owned(match MessageStream::new(raw).parse_unstructured() {
        HeaderValue::Text(t) => t.trim().to_string(),
        HeaderValue::TextList(l) => l.join(" ").trim().to_string(),
        _ => unfold(raw),
    })
}

/// Whether `raw` holds `=?` (where an RFC 2047 encoded word starts).
fn has_encoded_word_start(raw: &[u8]) -> bool {
    raw.windows(2).any(|w| w == b"=?")
}

fn unfold(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    s.replace("\r\n", "").replace('\n', "").trim().to_string()
}

/// The addresses of one header field, as the address test reads them.
#[derive(Debug)]
pub enum Addresses<'a> {
    /// Not an address list: `:all` compares the decoded value.
    Invalid,
    /// One address, in the message's bytes (the usual forms, parsed by
    /// [`simple_address`]).
    One(&'a str),
    /// What mail-parser's parse gives (groups flattened).
    List(Vec<String>),
}

/// The addresses of one header field.
pub fn parse_addresses(raw: &[u8]) -> Addresses<'_> {
    match simple_address(raw) {
        Some(a) => Addresses::One(a),
        None => full_addresses(raw).map_or(Addresses::Invalid, Addresses::List),
    }
}

/// The addresses of one header field (groups flattened): `None` when it
/// does not parse as an address list.
pub fn decode_addresses(raw: &[u8]) -> Option<Vec<String>> {
    match parse_addresses(raw) {
        Addresses::Invalid => None,
        Addresses::One(a) => Some(vec![a.to_string()]),
        Addresses::List(l) => Some(l),
    }
}

/// mail-parser's address parse of a field value.
fn full_addresses(raw: &[u8]) -> Option<Vec<String>> {
    let mut out = Vec::new();
    match MessageStream::new(raw).parse_address() {
        HeaderValue::Address(Address::List(l)) => out.extend(
            l.into_iter()
                .filter_map(|a| a.address.map(|s| plain_address(s.into_owned()))),
        ),
        HeaderValue::Address(Address::Group(g)) => {
            for grp in g {
                out.extend(
                    grp.addresses
                        .into_iter()
                        .filter_map(|a| a.address.map(|s| plain_address(s.into_owned()))),
                );
            }
        }
        _ => return None,
    }
    Some(out)
}

/// [`SIMPLE`]: a byte of a display name (atext, `.`, blanks).
const IN_NAME: u8 = 1;
/// [`SIMPLE`]: a byte of an address (atext, `.`, `@`).
const IN_ADDRESS: u8 = 2;

/// Where each byte may be in [`simple_address`]'s forms: atext (RFC 5322
/// 3.2.3 without `=`) and `.` anywhere, blanks in the name, `@` in the
/// address.
static SIMPLE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_alphanumeric() {
            t[c] = IN_NAME | IN_ADDRESS;
        }
        c += 1;
    }
    let punct = b"!#$%&'*+-/?^_`{|}~.";
    let mut i = 0;
    while i < punct.len() {
        t[punct[i] as usize] = IN_NAME | IN_ADDRESS;
        i += 1;
    }
    t[b' ' as usize] = IN_NAME;
    t[b'\t' as usize] = IN_NAME;
    t[b'@' as usize] = IN_ADDRESS;
    t
};

/// The address of a field value of one of the two usual forms, a bare
/// `local@domain` or `Display Name <local@domain>` on one line, as
/// mail-parser's address parse gives it; `None` for anything else, which
/// takes that parse. Only printable ASCII without any character the
/// parse treats specially (quotes, comments, groups, lists, escapes,
/// encoded words, `=`), and the line end must be there (the parse drops
/// a bare address at the end of the message).
fn simple_address(raw: &[u8]) -> Option<&str> {
    let v = raw.strip_suffix(b"\n")?;
    let v = v.strip_suffix(b"\r").unwrap_or(v);
    let blank = |c: &u8| *c == b' ' || *c == b'\t';
    let start = v.iter().position(|c| !blank(c))?;
    let end = v.iter().rposition(|c| !blank(c))? + 1;
    let v = &v[start..end];
    let class = |c: &u8| SIMPLE[*c as usize];
    let addr = match v.strip_suffix(b">") {
        None => v,
        Some(rest) => {
            let open = rest.iter().position(|&c| c == b'<')?;
            if !rest[..open].iter().all(|c| class(c) & IN_NAME != 0) {
                return None;
            }
            &rest[open + 1..]
        }
    };
    if addr.iter().all(|c| class(c) & IN_ADDRESS != 0) && addr.contains(&b'@') {
        std::str::from_utf8(addr).ok()
    } else {
        None
    }
}

/// An address with a quoted local part that needs no quoting written
/// plainly (`"john.doe"@x` is `john.doe@x`, RFC 5322 3.4.1), as
/// Pigeonhole compares it; other quoted local parts keep their quotes.
fn plain_address(a: String) -> String {
    let Some(rest) = a.strip_prefix('"') else {
        return a;
    };
    let Some((quoted, domain)) = rest.rsplit_once("\"@") else {
        return a;
    };
    let mut local = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        local.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c);
    let dot_atom = !local.is_empty()
        && local
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(atext));
    if dot_atom {
        format!("{local}@{domain}")
    } else {
        a
    }
}

/// Splits an address into local part and domain (at the last `@`).
pub fn split_address(a: &str) -> (&str, Option<&str>) {
    match a.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (a, None),
    }
}

/// The body parts the body test looks at (RFC 5173 5.2): with `types`
/// (`:content`), every part whose Content-Type matches one of them; else
/// (`:text`) the text/* leaf parts, decoded.
pub fn body_texts(msg: &Message<'_>, types: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    for part in msg.parts.iter().take(MAX_VALUES) {
        let (t, sub) = match part.content_type() {
            Some(ct) => (
                ct.ctype().to_ascii_lowercase(),
                ct.subtype().unwrap_or("").to_ascii_lowercase(),
            ),
            None => ("text".to_string(), "plain".to_string()),
        };
        let wanted = match types {
            None => t == "text",
            Some(list) => list.iter().any(|want| {
                let w = want.to_ascii_lowercase();
                match w.split_once('/') {
                    _ if w.is_empty() => true,
                    Some((a, b)) => a == t && b == sub,
                    None => w == t,
                }
            }),
        };
        if !wanted {
            continue;
        }
        match &part.body {
            PartType::Text(s) | PartType::Html(s) => out.push(s.to_string()),
            PartType::Binary(b) | PartType::InlineBinary(b) => {
                out.push(String::from_utf8_lossy(b).into_owned())
            }
            // RFC 5173 5.2: a multipart entity's prologue and epilogue only.
            PartType::Multipart(_) => {
                let raw = msg.raw_message();
                let boundary = part
                    .content_type()
                    .and_then(|ct| ct.attribute("boundary"))
                    .unwrap_or("");
                if let Some(b) = raw.get(part.offset_body as usize..part.offset_end as usize) {
                    out.push(prologue_epilogue(b, boundary));
                }
            }
            PartType::Message(_) => {
                let raw = msg.raw_message();
                if let Some(b) = raw.get(part.offset_body as usize..part.offset_end as usize) {
                    out.push(String::from_utf8_lossy(b).into_owned());
                }
            }
        }
    }
    out
}

/// The text of a multipart body before its first boundary line and after
/// its closing one.
fn prologue_epilogue(body: &[u8], boundary: &str) -> String {
    let text = String::from_utf8_lossy(body);
    if boundary.is_empty() {
        return text.into_owned();
    }
    let open = format!("--{boundary}");
    let close = format!("--{boundary}--");
    let mut out = String::new();
    let mut state = 0; // 0 prologue, 1 parts, 2 epilogue
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end_matches(['\r', '\n']);
        match state {
            0 if bare.starts_with(&open) => state = if bare.starts_with(&close) { 2 } else { 1 },
            1 if bare.starts_with(&close) => state = 2,
            0 | 2 => out.push_str(line),
            _ => {}
        }
    }
    out
}

/// The undecoded body of the message (`:raw`).
pub fn raw_body(msg: &Message<'_>) -> String {
    let raw = msg.raw_message();
    let root = msg.root_part();
    String::from_utf8_lossy(raw.get(root.offset_body as usize..).unwrap_or(b"")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::{decode_addresses, decode_text, plain_address, simple_address};

    /// RFC 5228 5.7 (header values unfolded and decoded, RFC 2047): the
    /// one-line shortcut of `decode_text` gives what the full parse gives.
    #[test]
    fn one_line_values_as_parsed() {
        use mail_parser::HeaderValue;
        use mail_parser::parsers::MessageStream;
        let full = |raw: &[u8]| match MessageStream::new(raw).parse_unstructured() {
            HeaderValue::Text(t) => t.trim().to_string(),
            HeaderValue::TextList(l) => l.join(" ").trim().to_string(),
            _ => String::from_utf8_lossy(raw).trim().to_string(),
        };
        let values: [&[u8]; 12] = [
            b" benchmark message 7\r\n",
            b"  two  spaces\t inside \t\r\n",
            b" no line end",
            b"\r\n",
            b"",
            b" \t \r\n",
            b" caf\xc3\xa9 and \xff bad bytes\r\n",
            b" bare\rcr\r\n",
            b" lf only\n",
            b"x\x0b\x0c\r\n",
            b" [SPAM] invoice\r\n",
            b" \xc2\xa0nbsp\xc2\xa0\r\n",
        ];
        for v in values {
            assert_eq!(decode_text(v), full(v), "{v:?}");
        }
        // Encoded words and folded lines take the full parse.
        assert_eq!(decode_text(b" =?utf-8?q?caf=C3=A9?=\r\n"), "caf\u{e9}");
        assert_eq!(decode_text(b" a\r\n b\r\n"), "a b");
    }

    /// mail-parser's address parse alone (what `decode_addresses` did
    /// before its shortcut).
    fn full_addresses(raw: &[u8]) -> Option<Vec<String>> {
        use mail_parser::parsers::MessageStream;
        use mail_parser::{Address, HeaderValue};
        let list: Vec<_> = match MessageStream::new(raw).parse_address() {
            HeaderValue::Address(Address::List(l)) => l,
            HeaderValue::Address(Address::Group(g)) => {
                g.into_iter().flat_map(|g| g.addresses).collect()
            }
            _ => return None,
        };
        Some(
            list.into_iter()
                .filter_map(|a| a.address.map(|s| plain_address(s.into_owned())))
                .collect(),
        )
    }

    /// RFC 5322 3.4 (address fields): the shortcut for the usual forms
    /// gives what the full parse gives, and leaves the others to it.
    #[test]
    fn simple_addresses_as_parsed() {
        let simple: &[&[u8]] = &[
            b" boss@example.org\r\n",
            b" boss@example.org\n",
            b"boss@example.org\n",
            b" \t boss@example.org \t\r\n",
            b" Bench Sender <bench@example.org>\r\n",
            b" Bench  Sender\t<bench@example.org>\n",
            b" <bench@example.org>\n",
            b"<a@b>\n",
            b" J. R. Doe <j.r.doe+tag@sub.example.org>\r\n",
            b" O'Brien <o'brien@example.ie>\n",
            b" a@b@c\n",
            b" .a.@b\n",
            b" x <@b>\n",
            b" x<y@z>\n",
            b" ~{|}^_`!#$%&'*+-/?@x\n",
        ];
        let other: &[&[u8]] = &[
            b" boss@example.org",
            b" Bench Sender <bench@example.org>",
            b" \"john.doe\"@example.org\n",
            b" \"Doe, John\" <john@example.org>\n",
            b" John (the boss) <john@example.org>\n",
            b" john@example.org (John)\n",
            b" a@b, c@d\n",
            b" a@b,\n",
            b" undisclosed-recipients:;\n",
            b" friends: a@b, c@d;\n",
            b" =?utf-8?q?J=C3=B6rg?= <joerg@example.org>\n",
            b" J=C3 <a@b>\n",
            b" a=b@c\n",
            b" a\\b@c\n",
            b" <a\\@b@c>\n",
            b" Name\r\n <folded@example.org>\r\n",
            b" a@b\r\r\n",
            b" a\rb@c\n",
            b" J\xc3\xb6rg <joerg@example.org>\n",
            b" j\xc3\xb6rg@example.org\n",
            b" <a @b>\n",
            b" < a@b >\n",
            b" <a@b> x\n",
            b" <a@b>>\n",
            b" a <b <c@d>\n",
            b" a@b <c@d>\n",
            b" plain\n",
            b" <>\n",
            b" <plain>\n",
            b"\n",
            b"",
            b" [a]@b\n",
            b" a@[127.0.0.1]\n",
            b" Name: <a@b>\n",
            b" Name; <a@b>\n",
        ];
        for v in simple {
            assert!(
                simple_address(v).is_some(),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
        for v in simple.iter().chain(other) {
            if let Some(a) = simple_address(v) {
                assert_eq!(
                    full_addresses(v),
                    Some(vec![a.to_string()]),
                    "{:?}",
                    String::from_utf8_lossy(v)
                );
            }
            assert_eq!(
                decode_addresses(v),
                full_addresses(v),
                "{:?}",
                String::from_utf8_lossy(v)
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(5000))]
        /// Any value made of the pieces that matter to the address parse.
        #[test]
        fn any_address_value_as_parsed(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(&b"a"[..]), proptest::strategy::Just(&b"x.y"[..]),
                    proptest::strategy::Just(&b"@"[..]), proptest::strategy::Just(&b" "[..]),
                    proptest::strategy::Just(&b"\t"[..]), proptest::strategy::Just(&b"<"[..]),
                    proptest::strategy::Just(&b">"[..]), proptest::strategy::Just(&b"\""[..]),
                    proptest::strategy::Just(&b"("[..]), proptest::strategy::Just(&b")"[..]),
                    proptest::strategy::Just(&b","[..]), proptest::strategy::Just(&b":"[..]),
                    proptest::strategy::Just(&b";"[..]), proptest::strategy::Just(&b"\\"[..]),
                    proptest::strategy::Just(&b"=?"[..]), proptest::strategy::Just(&b"="[..]),
                    proptest::strategy::Just(&b"\r"[..]), proptest::strategy::Just(&b"\n"[..]),
                    proptest::strategy::Just(&b"\xc3\xa9"[..]), proptest::strategy::Just(&b"b@c.d"[..]),
                    proptest::strategy::Just(&b"?"[..]), proptest::strategy::Just(&b"["[..]),
                ],
                0..14,
            ),
            end in proptest::prop_oneof![
                proptest::strategy::Just(&b""[..]),
                proptest::strategy::Just(&b"\n"[..]),
                proptest::strategy::Just(&b"\r\n"[..]),
            ],
        ) {
            let mut v: Vec<u8> = parts.concat();
            v.extend_from_slice(end);
            if let Some(a) = simple_address(&v) {
                proptest::prop_assert_eq!(full_addresses(&v), Some(vec![a.to_string()]));
            }
        }
    }

    /// RFC 5322 3.4.1: a quoted local part that is a dot-atom is the same address.
    #[test]
    fn quoted_local_parts() {
        assert_eq!(plain_address("\"john.doe\"@x".into()), "john.doe@x");
        assert_eq!(plain_address("\"john doe\"@x".into()), "\"john doe\"@x");
        assert_eq!(plain_address("\"a\\\"b\"@x".into()), "\"a\\\"b\"@x");
        assert_eq!(plain_address("plain@x".into()), "plain@x");
    }
}
