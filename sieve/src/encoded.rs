//! `encoded-character` (RFC 5228 section 2.4.2.4): `${hex:..}` and
//! `${unicode:..}` in string literals. A malformed sequence is left as it is.

/// Decodes every well-formed encoded-character sequence in `s`.
pub fn decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$'
            && b.get(i + 1) == Some(&b'{')
            && let Some((bytes, used)) = sequence(&b[i + 2..])
        {
            out.extend_from_slice(&bytes);
            i += 2 + used;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// After `${`: `hex:` or `unicode:`, blank-separated hex numbers, `}`.
/// Returns the decoded bytes and how many input bytes were used.
fn sequence(b: &[u8]) -> Option<(Vec<u8>, usize)> {
    let colon = b.iter().take(8).position(|&c| c == b':')?;
    let kind = std::str::from_utf8(&b[..colon]).ok()?.to_ascii_lowercase();
    let (max_digits, unicode) = match kind.as_str() {
        "hex" => (2, false),
        "unicode" => (usize::MAX, true),
        _ => return None,
    };
    let close = colon + 1 + b[colon + 1..].iter().position(|&c| c == b'}')?;
    let inner = std::str::from_utf8(&b[colon + 1..close]).ok()?;
    let mut out = Vec::new();
    for item in inner
        .split([' ', '\t', '\r', '\n'])
        .filter(|x| !x.is_empty())
    {
        if item.len() > max_digits || !item.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let digits = item.trim_start_matches('0');
        if digits.len() > 6 {
            return None;
        }
        let v = u32::from_str_radix(if digits.is_empty() { "0" } else { digits }, 16).ok()?;
        if unicode {
            let c = char::from_u32(v)?;
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        } else {
            out.push(v as u8);
        }
    }
    Some((out, close + 1))
}

#[cfg(test)]
mod tests {
    use super::decode;

    /// RFC 5228 2.4.2.4: the examples of the section.
    #[test]
    fn rfc_examples() {
        assert_eq!(decode("${hex:40}"), "@");
        assert_eq!(decode("${hex: 40 }"), "@");
        assert_eq!(decode("${HEX: 40}"), "@");
        assert_eq!(decode("${hex:40"), "${hex:40");
        assert_eq!(decode("${hex:400}"), "${hex:400}");
        assert_eq!(decode("${hex:4${hex:30}}"), "${hex:40}");
        assert_eq!(decode("${unicode:40}"), "@");
        assert_eq!(decode("${ unicode:40}"), "${ unicode:40}");
        assert_eq!(decode("${UNICODE:40}"), "@");
        assert_eq!(decode("${UnICoDE:0000040}"), "@");
        assert_eq!(decode("$${hex:40}"), "$@");
        assert_eq!(decode("${Unicode:40}"), "@");
        assert_eq!(decode("${Unicode:Cool}"), "${Unicode:Cool}");
        assert_eq!(decode("${unicode:1F600 20}"), "\u{1F600} ");
        assert_eq!(decode("${hex:}"), "");
    }
}
