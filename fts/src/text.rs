//! The text of a message that SEARCH BODY/TEXT compares against, shared
//! by the IMAP server's direct matcher and the indexer so that the index
//! sees at least everything the matcher does (RFC 3501 6.4.4).
//!
//! A message is searched (1) as stored, ASCII case-insensitively, (2)
//! its text parts decoded from their transfer encoding and charset, with
//! Unicode lower case, when it declares an encoding or charset and is at
//! most [`DECODE_MAX`] bytes, (3) for TEXT, its header fields with their
//! RFC 2047 encoded words decoded.

use mail_parser::{Message, MessageParser, MimeHeaders, PartType};

/// Messages up to this size are also searched decoded (BODY, TEXT);
/// larger ones only as stored, so one search never holds more.
pub const DECODE_MAX: u64 = 8 << 20;

/// The IMAP server reads at most this much of a header block.
pub const HEADER_CAP: usize = 1 << 20;

/// Levels of encapsulated messages visited.
pub const MAX_DEPTH: usize = 32;

/// ASCII case-insensitive substring test (an empty needle is found).
pub fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    let Some(last) = hay.len().checked_sub(needle.len()) else {
        return false;
    };
    // Candidates start with the first byte in either case: memchr finds
    // them without looking at every window.
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let mut from = 0;
    while let Some(p) = memchr::memchr2(lo, up, &hay[from..=last]) {
        let at = from + p;
        if hay[at + 1..at + needle.len()].eq_ignore_ascii_case(rest) {
            return true;
        }
        from = at + 1;
        if from > last {
            break;
        }
    }
    false
}

/// Whether the message declares a transfer encoding or a charset, so its
/// decoded text may differ from its bytes.
pub fn wants_decoding(raw: &[u8]) -> bool {
    contains_ci(raw, b"content-transfer-encoding") || contains_ci(raw, b"charset")
}

/// Parses `raw` when it may be searched decoded ([`DECODE_MAX`],
/// [`wants_decoding`]).
pub fn parse_for_search(raw: &[u8]) -> Option<Message<'_>> {
    if raw.len() as u64 > DECODE_MAX || !wants_decoding(raw) {
        return None;
    }
    MessageParser::default().parse(raw)
}

/// Calls `f` with each decoded text or HTML part of `msg` and of the
/// messages it encapsulates, and with each attachment's file name, until
/// `f` returns true; returns whether it did.
pub fn any_text(msg: &Message, f: &mut dyn FnMut(&str) -> bool) -> bool {
    any_text_at(msg, f, 0)
}

fn any_text_at(msg: &Message, f: &mut dyn FnMut(&str) -> bool, depth: usize) -> bool {
    depth < MAX_DEPTH
        && msg.parts.iter().any(|p| {
            if p.attachment_name().is_some_and(&mut *f) {
                return true;
            }
            match &p.body {
                PartType::Text(t) | PartType::Html(t) => f(t),
                PartType::Message(m) => any_text_at(m, f, depth + 1),
                _ => false,
            }
        })
}

/// The unfolded header fields of `header` (line ends removed).
pub fn header_fields(header: &[u8]) -> Vec<Vec<u8>> {
    let mut fields: Vec<Vec<u8>> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        let text = line.iter().copied().filter(|&b| b != b'\r' && b != b'\n');
        match fields.last_mut() {
            Some(f) if line.starts_with(b" ") || line.starts_with(b"\t") => f.extend(text),
            _ => fields.push(text.collect()),
        }
    }
    fields
}

/// The value of an unfolded field (after its colon).
pub fn field_value(field: &[u8]) -> &[u8] {
    field.splitn(2, |&b| b == b':').nth(1).unwrap_or_default()
}

/// Whether `value` holds something that looks like an encoded word.
pub fn has_encoded_word(value: &[u8]) -> bool {
    value.windows(2).any(|w| w == b"=?")
}

/// The value with its encoded words decoded, read as an unstructured
/// field (RFC 2047 section 5 (1)).
pub fn decode_unstructured(value: &[u8]) -> Option<String> {
    let mut field = b"Subject: ".to_vec();
    field.extend_from_slice(value);
    field.extend_from_slice(b"\r\n\r\n");
    let msg = MessageParser::default().parse_headers(&field[..])?;
    msg.subject().map(str::to_string)
}

/// Case-insensitive substring for UTF-8 text (Unicode lower case).
pub fn text_contains(hay: &str, needle: &[u8]) -> bool {
    match std::str::from_utf8(needle) {
        Ok(n) if !n.is_ascii() || !hay.is_ascii() => hay.to_lowercase().contains(&n.to_lowercase()),
        _ => contains_ci(hay.as_bytes(), needle),
    }
}

/// The header block of a stored message as the store records its size:
/// up to the first `CRLF CRLF` or `LF LF`, whichever comes first (the
/// whole message when there is neither).
pub fn header_block(raw: &[u8]) -> &[u8] {
    let find = |n: &[u8]| {
        raw.windows(n.len())
            .position(|w| w == n)
            .map(|p| p + n.len())
    };
    let end = match (find(b"\r\n\r\n"), find(b"\n\n")) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b).unwrap_or(raw.len()),
    };
    &raw[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_block_ends_at_the_empty_line() {
        assert_eq!(header_block(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_block(b"A: b\nC: d\n\nbody"), b"A: b\nC: d\n\n");
        assert_eq!(header_block(b"A: b"), b"A: b");
        assert_eq!(header_block(b"\r\nx\r\n\r\ny"), b"\r\nx\r\n\r\n");
    }

    #[test]
    fn attachment_names_are_text() {
        let raw = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\
            Content-Type: text/plain; charset=utf-8\r\n\r\nhi\r\n--x\r\n\
            Content-Type: application/pdf; name=\"=?utf-8?q?Rechnung_M=C3=A4rz.pdf?=\"\r\n\
            Content-Disposition: attachment; filename*=utf-8''Rechnung%20M%C3%A4rz.pdf\r\n\
            Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n--x--\r\n";
        let m = parse_for_search(raw).unwrap();
        assert!(any_text(&m, &mut |t| text_contains(t, "märz".as_bytes())));
        assert!(!any_text(&m, &mut |t| text_contains(t, b"april")));
    }
}
