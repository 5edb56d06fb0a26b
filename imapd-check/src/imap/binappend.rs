//! A message APPENDed as a binary literal (RFC 3516 4.4, `~{n}`): its
//! parts in `Content-Transfer-Encoding: binary` are stored re-encoded in
//! base64, as Dovecot stores them, so that BODY[] and BODYSTRUCTURE
//! describe data every IMAP client can receive (a literal cannot carry
//! NUL, RFC 3501 9) and BINARY[] still gives the octets sent.
//!
//! Each such leaf part keeps its header, with the field's value made
//! `base64` where it stood; its body becomes base64 in lines of 76
//! characters, CRLF between them and none after the last (the line end
//! before the next boundary stays the boundary's). Nothing else changes.

use base64::Engine;

use super::binary::cte_field;
use super::mime::cte_mechanism;
use super::structure::{self, Kind, Mem};

/// Base64 characters per line (RFC 2045 6.8: at most 76).
const LINE: usize = 76;

/// The message with its `binary` leaf parts in base64, or `None` when it
/// has none (it is then stored as it came).
pub fn convert(msg: &[u8]) -> Option<Vec<u8>> {
    let src = Mem(msg);
    let st = structure::scan(&src, true, false).ok()?;
    let mut edits: Vec<(usize, usize, usize, usize)> = Vec::new();
    for p in &st.parts {
        if p.kind != Kind::Leaf {
            continue;
        }
        let (h, b, e) = (
            p.header_start as usize,
            p.body_start as usize,
            p.end as usize,
        );
        let block = structure::header_block(&src, p).ok()?;
        let (Some((fs, fe)), _) = cte_field(&block) else {
            continue;
        };
        // The field's extent inside the message (the block is its header
        // as stored, at most the header's bytes); a scan gives ordered,
        // in-bounds offsets, checked all the same before they index.
        if !(h <= b && b <= e && e <= msg.len() && fs <= fe && fe <= b - h) {
            continue;
        }
        let field = &msg[h + fs..h + fe];
        let value = field
            .splitn(2, |&c| c == b':')
            .nth(1)
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if cte_mechanism(&value).eq_ignore_ascii_case("binary") {
            edits.push((h + fs, h + fe, b, e));
        }
    }
    if edits.is_empty() {
        return None;
    }
    edits.sort_unstable();
    let engine = base64::engine::general_purpose::STANDARD;
    let mut out = Vec::with_capacity(msg.len() + msg.len() / 3 + 64);
    let mut pos = 0;
    for (fs, fe, body, end) in edits {
        if fs < pos {
            // Overlapping parts cannot happen in a scan; stay safe.
            return None;
        }
        out.extend_from_slice(&msg[pos..fs]);
        let eol: &[u8] = if msg[..fe].ends_with(b"\r\n") {
            b"\r\n"
        } else {
            b"\n"
        };
        out.extend_from_slice(b"Content-Transfer-Encoding: base64");
        out.extend_from_slice(eol);
        out.extend_from_slice(&msg[fe..body]);
        let encoded = engine.encode(&msg[body..end]);
        for (i, line) in encoded.as_bytes().chunks(LINE).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(line);
        }
        pos = end;
    }
    out.extend_from_slice(&msg[pos..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::convert;

    /// Dovecot 2.3.19's answers to the same APPENDs (probed in session
    /// 17): the field rewritten in place, 76-character lines, no line end
    /// after the last.
    #[test]
    fn binary_parts_become_base64_as_dovecot_stores_them() {
        let part: Vec<u8> = (0u8..100).collect();
        let mut msg = b"From: a@b\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npre\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: binary\r\nX-After: 1\r\n\r\n".to_vec();
        msg.extend_from_slice(&part);
        msg.extend_from_slice(b"\r\n--xx\r\nContent-Type: text/plain\r\n\r\nplain\r\n--xx--\r\n");
        let want = b"From: a@b\r\nSubject: t\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\npre\r\n--xx\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\nX-After: 1\r\n\r\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4\r\nOTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiYw==\r\n--xx\r\nContent-Type: text/plain\r\n\r\nplain\r\n--xx--\r\n";
        assert_eq!(convert(&msg).unwrap(), want);
        assert_eq!(
            convert(b"Subject: s\r\nContent-Transfer-Encoding: binary\r\n\r\nh\xe9llo\r\n")
                .unwrap(),
            b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\naOlsbG8NCg=="
        );
    }

    proptest::proptest! {
        /// Whatever a client sends: no panic, and a message converted has
        /// a part in base64.
        #[test]
        fn any_input_converts_or_stays(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "Content-Type: multipart/mixed; boundary=b\r\n",
                    "Content-Transfer-Encoding: binary\r\n",
                    "Content-Transfer-Encoding: base64\r\n",
                    "\r\n", "--b\r\n", "--b--\r\n", "x\0y", "\r", "\n", " ", "--b",
                ]),
                0..40,
            ),
        ) {
            let msg = pieces.concat().into_bytes();
            if let Some(out) = convert(&msg) {
                let text = String::from_utf8_lossy(&out);
                proptest::prop_assert!(text.contains("Content-Transfer-Encoding: base64"));
            }
        }
    }

    #[test]
    fn other_messages_are_left_alone() {
        assert_eq!(convert(b"Subject: s\r\n\r\nhello\r\n"), None);
        assert_eq!(
            convert(b"Subject: s\r\nContent-Transfer-Encoding: 8bit\r\n\r\nh\xe9llo\r\n"),
            None
        );
        assert_eq!(
            convert(b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n"),
            None
        );
    }
}
