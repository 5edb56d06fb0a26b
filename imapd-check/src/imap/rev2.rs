//! IMAP4rev2 (RFC 9051) beside IMAP4rev1: what a session does differently
//! once the client sent `ENABLE IMAP4rev2` (RFC 9051 6.3.1).
//!
//! Most of RFC 9051 Appendix E is behaviour this server has for every
//! client (the folded-in extensions, the response codes, BINARY, STATUS
//! SIZE and DELETED, `[CLOSED]`, CHECK answered OK). What changes with
//! IMAP4rev2 enabled is kept here and in the few places that test
//! `Session::rev2`:
//!
//! - no `\Recent` (RFC 9051 2.3.2 drops it): no `* n RECENT`, no
//!   `\Recent` in FLAGS or FETCH FLAGS, and the session claims nothing,
//!   so a rev1 session of the same user still sees those messages as
//!   `\Recent`; the RECENT, NEW and OLD search keys and the RECENT status
//!   item are not in the rev2 grammar and get BAD;
//! - SEARCH without RETURN answers `* ESEARCH (TAG ..) [UID] ALL ..`
//!   (RFC 9051 6.4.4, 7.3.4): `* SEARCH` is never sent;
//! - SELECT and EXAMINE send the mailbox's `* LIST` and no `[UNSEEN n]`
//!   (RFC 9051 6.3.2);
//! - quoted strings may hold UTF-8 (RFC 9051 9, `QUOTED-CHAR`); imap-codec
//!   parses the RFC 3501 grammar, so such a string is handed to it as a
//!   literal (`utf8_quoted_to_literals`).
//!
//! Mailbox names are the store's, which are UTF-8: rev1 and rev2 clients
//! see the same names (docs/OPERATIONS.md, "IMAP4rev2").

use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::status::StatusDataItemName;
use storage::{MailboxName, UserName};

use super::conn::{Fail, Session};
use super::recent::Recent;
use super::wire;

impl Session {
    /// `ENABLE IMAP4rev2`: from now on the session speaks IMAP4rev2. A
    /// mailbox selected already loses its `\Recent` messages at once.
    pub(super) fn enable_rev2(&mut self) {
        self.rev2 = true;
        if let Some(sel) = self.sel.as_mut() {
            sel.recent = Recent::off();
        }
    }

    /// RFC 9051 6.3.2: SELECT and EXAMINE send the mailbox's LIST
    /// response, with its attributes (children, special use) as LIST
    /// gives them.
    pub(super) fn write_selected_list(
        &mut self,
        user: &UserName,
        name: &MailboxName,
    ) -> Result<(), Fail> {
        let (_, dirs) = self.mailbox_tree(user)?;
        let prefix = format!("{name}/");
        let children = dirs
            .range(prefix.clone()..)
            .next()
            .is_some_and(|d| d.starts_with(&prefix));
        let mut attrs = vec![if children {
            "\\HasChildren"
        } else {
            "\\HasNoChildren"
        }];
        let uses = self.store.special_use(user, name)?;
        attrs.extend(uses.iter().map(|u| u.attribute()));
        self.buf
            .extend_from_slice(format!("* LIST ({}) \"/\" ", attrs.join(" ")).as_bytes());
        wire::mailbox(&mut self.buf, name.as_str());
        self.buf.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// RFC 9051 5.1: a server refuses to create a mailbox whose name is not
/// Net-Unicode, that is, not in Unicode Normalization Form C (names that
/// exist already stay reachable as they are; nothing is normalised).
pub(super) fn check_new_name(name: &MailboxName) -> Result<(), Fail> {
    if unicode_normalization::is_nfc(name.as_str()) {
        Ok(())
    } else {
        Err(Fail::No(
            Some("CANNOT"),
            "Mailbox name is not in Unicode NFC (RFC 9051 5.1)".into(),
        ))
    }
}

/// Is any of `keys` a key RFC 9051 removed (RECENT, NEW, OLD)?
pub fn uses_recent(keys: &[SearchKey]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::Recent | SearchKey::New | SearchKey::Old => true,
        SearchKey::And(v) => uses_recent(v.as_ref()),
        SearchKey::Or(a, b) => {
            uses_recent(std::slice::from_ref(a.as_ref()))
                || uses_recent(std::slice::from_ref(b.as_ref()))
        }
        SearchKey::Not(a) => uses_recent(std::slice::from_ref(a.as_ref())),
        _ => false,
    })
}

/// Is the RECENT status item (removed by RFC 9051) among `items`?
pub fn asks_recent(items: &[StatusDataItemName]) -> bool {
    items
        .iter()
        .any(|i| matches!(i, StatusDataItemName::Recent))
}

/// Rewrites each quoted string of `cmd` (one assembled command, its
/// literals inline) that holds valid UTF-8 beyond ASCII as a literal of
/// the same (unescaped) content, which imap-codec accepts wherever a
/// string is allowed. `None` when there is nothing to rewrite. Literals
/// are skipped whole; a quoted string that is not valid UTF-8 is left
/// for the parser to refuse. The result is at most a few bytes per quoted
/// string longer than `cmd`.
pub fn utf8_quoted_to_literals(cmd: &[u8]) -> Option<Vec<u8>> {
    if cmd.is_ascii() {
        return None;
    }
    // First the quoted strings to rewrite (start, end, content), so that
    // a command with none (an APPEND of an 8-bit message) is not copied.
    let mut spans: Vec<(usize, usize, Vec<u8>)> = Vec::new();
    let mut i = 0;
    while i < cmd.len() {
        match cmd[i] {
            // `{n}` / `{n+}` then CRLF (also after `~`): skip the literal.
            b'{' => match literal_header(cmd, i) {
                Some((len, data)) => i = data.saturating_add(len).min(cmd.len()),
                None => i += 1,
            },
            b'"' => {
                let (content, end) = quoted(cmd, i);
                // Unterminated: the rest is left for the parser.
                let Some(end) = end else { break };
                if !content.is_ascii()
                    && std::str::from_utf8(&content).is_ok()
                    && !content.contains(&b'\r')
                    && !content.contains(&b'\n')
                {
                    spans.push((i, end, content));
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    if spans.is_empty() {
        return None;
    }
    let mut out: Vec<u8> = Vec::with_capacity(cmd.len() + 16 * spans.len());
    let mut at = 0;
    for (start, end, content) in spans {
        out.extend_from_slice(&cmd[at..start]);
        out.extend_from_slice(format!("{{{}}}\r\n", content.len()).as_bytes());
        out.extend_from_slice(&content);
        at = end;
    }
    out.extend_from_slice(&cmd[at..]);
    Some(out)
}

/// At `cmd[at] == '{'`: the length of a literal and where its data
/// starts, when `{digits[+]}\r\n` follows.
fn literal_header(cmd: &[u8], at: usize) -> Option<(usize, usize)> {
    let rest = &cmd[at + 1..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 10 {
        return None;
    }
    let mut j = digits;
    if rest.get(j) == Some(&b'+') || rest.get(j) == Some(&b'-') {
        j += 1;
    }
    if rest.get(j..j + 3) != Some(b"}\r\n") {
        return None;
    }
    let len: usize = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some((len, at + 1 + j + 3))
}

/// At `cmd[at] == '"'`: the unescaped content and the index after the
/// closing quote (None when there is none).
fn quoted(cmd: &[u8], at: usize) -> (Vec<u8>, Option<usize>) {
    let mut content = Vec::new();
    let mut j = at + 1;
    while j < cmd.len() {
        match cmd[j] {
            b'\\' if j + 1 < cmd.len() => {
                content.push(cmd[j + 1]);
                j += 2;
            }
            b'"' => return (content, Some(j + 1)),
            b => {
                content.push(b);
                j += 1;
            }
        }
    }
    (content, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(s: &str) -> Option<String> {
        utf8_quoted_to_literals(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn utf8_quoted_become_literals() {
        assert_eq!(rewrite("a SELECT \"INBOX\"\r\n"), None);
        assert_eq!(
            rewrite("a SELECT \"Grüße\"\r\n").as_deref(),
            Some("a SELECT {7}\r\nGrüße\r\n")
        );
        // Escapes are undone; ASCII strings and literals stay as they are.
        assert_eq!(
            rewrite("a RENAME \"x\\\"é\" \"b\"\r\n").as_deref(),
            Some("a RENAME {4}\r\nx\"é \"b\"\r\n")
        );
        assert_eq!(
            rewrite("a LOGIN {4}\r\n\"é\" \"ü\"\r\n").as_deref(),
            Some("a LOGIN {4}\r\n\"é\" {2}\r\nü\r\n")
        );
        // Not UTF-8, or not closed: left to the parser.
        assert_eq!(utf8_quoted_to_literals(b"a SELECT \"\xff\"\r\n"), None);
        assert_eq!(rewrite("a SELECT \"é\r\n"), None);
        // An APPEND of an 8-bit message with an ASCII name: untouched.
        assert_eq!(rewrite("a APPEND x {4}\r\n\"é\"\r\n"), None);
        assert_eq!(
            rewrite("a APPEND \"ä\" ~{4}\r\n\"é\"\r\n").as_deref(),
            Some("a APPEND {2}\r\nä ~{4}\r\n\"é\"\r\n")
        );
    }

    /// RFC 9051 5.1: names are UTF-8 (other bytes are refused, not
    /// replaced) and new ones must be NFC.
    #[test]
    fn names_are_utf8_and_new_ones_nfc() {
        use super::super::mailboxes::mailbox_name_raw;
        assert!(mailbox_name_raw(b"caf\xe9").is_err());
        let nfc = mailbox_name_raw("café".as_bytes()).unwrap();
        assert!(check_new_name(&nfc).is_ok());
        let nfd = mailbox_name_raw("cafe\u{301}".as_bytes()).unwrap();
        assert!(check_new_name(&nfd).is_err());
    }

    /// Random commands made of the bytes that matter (quotes, escapes,
    /// literal headers, CR/LF, UTF-8 and invalid bytes): no panic, and
    /// the result grows by at most a literal header per quoted string.
    #[test]
    fn random_inputs_stay_bounded() {
        const ALPHABET: &[u8] = b"\"\\{}+~0123\r\n a\xc3\xa9\xff";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut cmd = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for _ in 0..(x % 40) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                cmd.push(ALPHABET[(x % ALPHABET.len() as u64) as usize]);
            }
            if let Some(out) = utf8_quoted_to_literals(&cmd) {
                let quotes = cmd.iter().filter(|&&b| b == b'"').count();
                assert!(out.len() <= cmd.len() + 16 * quotes, "{cmd:?}");
                assert_ne!(out, cmd);
            }
        }
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in [
            &b"{"[..],
            b"\"",
            b"\"\\",
            b"{99999999999}\r\n\xc3",
            b"{5}\r\n\xc3\xa9",
            b"a \"\xc3\xa9",
        ] {
            let _ = utf8_quoted_to_literals(s);
        }
    }
}
