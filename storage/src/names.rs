//! Validated user and mailbox names, and their encoding as file names.
//!
//! A mailbox name is a `/`-separated hierarchy of UTF-8 components; each
//! component is one directory below the user's directory. Encoding (see
//! `docs/FORMAT.md`): `%`-escapes (`%XX`, upper-case hex) for a leading
//! `.`, a trailing `.`, and `%` itself, so an encoded component never starts
//! or ends with `.` and can never collide with the store's own entries
//! (`.index`, `.meta`, `.stage`, and message files `UID.`).

use std::fmt;

use crate::error::{Error, Result};

/// Longest component of a mailbox name (and longest user name), in bytes.
pub const MAX_COMPONENT_BYTES: usize = 200;
/// Longest mailbox name, in bytes.
pub const MAX_NAME_BYTES: usize = 1000;
/// Most components in a mailbox name.
pub const MAX_DEPTH: usize = 32;

fn invalid(kind: &'static str, name: &str, reason: &'static str) -> Error {
    Error::InvalidName {
        kind,
        name: name.to_string(),
        reason,
    }
}

fn check_component(kind: &'static str, full: &str, c: &str) -> Result<()> {
    if c.is_empty() {
        return Err(invalid(kind, full, "empty component"));
    }
    if c == "." || c == ".." {
        return Err(invalid(kind, full, "`.` or `..` component"));
    }
    if c.len() > MAX_COMPONENT_BYTES {
        return Err(invalid(kind, full, "component longer than 200 bytes"));
    }
    if c.chars().any(|ch| ch.is_control()) {
        return Err(invalid(kind, full, "NUL or control character"));
    }
    if c.contains(['*', '%']) {
        return Err(invalid(kind, full, "IMAP wildcard `*` or `%`"));
    }
    Ok(())
}

fn encode_component(c: &str) -> String {
    let mut out = String::with_capacity(c.len() + 3);
    let last = c.len() - 1;
    for (i, ch) in c.char_indices() {
        match ch {
            '.' if i == 0 || i == last => out.push_str("%2E"),
            '%' => out.push_str("%25"),
            _ => out.push(ch),
        }
    }
    out
}

fn decode_component(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A user name: one component, validated like a mailbox component.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);

impl UserName {
    /// Validates a user name: one non-empty component of at most
    /// [`MAX_COMPONENT_BYTES`], no `/`, no control characters, not `.` or `..`,
    /// no IMAP wildcard.
    ///
    /// ```
    /// assert!(mailstore::UserName::new("alice").is_ok());
    /// assert!(mailstore::UserName::new("../etc").is_err());
    /// ```
    pub fn new(name: &str) -> Result<UserName> {
        if name.contains('/') {
            return Err(invalid("user", name, "contains `/`"));
        }
        check_component("user", name, name)?;
        Ok(UserName(name.to_string()))
    }
    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The user's directory name in the spool.
    pub fn encoded(&self) -> String {
        encode_component(&self.0)
    }
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A mailbox name. `INBOX` is case-insensitive (RFC 3501 5.1) and is
/// always stored as `INBOX`, also as the first component of a child.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxName(String);

impl MailboxName {
    /// Validates a mailbox name: `/`-separated components (each as in
    /// [`UserName::new`]), at most [`MAX_NAME_BYTES`] and [`MAX_DEPTH`] levels;
    /// a first component `INBOX` in any case becomes `INBOX`.
    ///
    /// ```
    /// use mailstore::MailboxName;
    /// let n = MailboxName::new("inbox/Lists").unwrap();
    /// assert_eq!(n.as_str(), "INBOX/Lists");
    /// assert_eq!(n.parent(), Some(MailboxName::inbox()));
    /// assert!(MailboxName::new("a//b").is_err());
    /// ```
    pub fn new(name: &str) -> Result<MailboxName> {
        if name.is_empty() {
            return Err(invalid("mailbox", name, "empty name"));
        }
        if name.starts_with('/') {
            return Err(invalid("mailbox", name, "absolute path"));
        }
        if name.len() > MAX_NAME_BYTES {
            return Err(invalid("mailbox", name, "longer than 1000 bytes"));
        }
        let parts: Vec<&str> = name.split('/').collect();
        if parts.len() > MAX_DEPTH {
            return Err(invalid("mailbox", name, "more than 32 levels"));
        }
        let mut out = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            check_component("mailbox", name, p)?;
            out.push(if i == 0 && p.eq_ignore_ascii_case("INBOX") {
                "INBOX"
            } else {
                p
            });
        }
        Ok(MailboxName(out.join("/")))
    }

    /// `INBOX`.
    pub fn inbox() -> MailboxName {
        MailboxName("INBOX".to_string())
    }
    /// The name, `/`-separated.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// Whether this is `INBOX` itself.
    pub fn is_inbox(&self) -> bool {
        self.0 == "INBOX"
    }
    /// The components, root first.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
    /// The encoded directory names, root first.
    pub fn encoded_components(&self) -> Vec<String> {
        self.components().map(encode_component).collect()
    }
    /// Decodes a path of encoded directory names back into a name; `None`
    /// if any component is not a valid encoding (not a mailbox directory).
    pub fn from_encoded(parts: &[&str]) -> Option<MailboxName> {
        let decoded: Option<Vec<String>> = parts.iter().map(|p| decode_component(p)).collect();
        let decoded = decoded?;
        let name = decoded.join("/");
        let n = MailboxName::new(&name).ok()?;
        // Only the canonical encoding names a mailbox.
        (n.encoded_components() == parts).then_some(n)
    }
    /// The parent mailbox's name; `None` at the top level.
    pub fn parent(&self) -> Option<MailboxName> {
        self.0
            .rsplit_once('/')
            .map(|(p, _)| MailboxName(p.to_string()))
    }
    /// The name of child `leaf` of this mailbox (validated).
    pub fn child(&self, leaf: &str) -> Result<MailboxName> {
        MailboxName::new(&format!("{}/{}", self.0, leaf))
    }
}

impl fmt::Display for MailboxName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [
            "",
            "/abs",
            "../x",
            "a/../b",
            "a/./b",
            "a//b",
            "a/",
            "nul\0byte",
            "tab\tname",
            "star*",
            "pct%",
            &"x".repeat(201),
            &"a/".repeat(40),
        ] {
            assert!(MailboxName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(UserName::new("a/b").is_err());
        assert!(UserName::new("..").is_err());
    }

    #[test]
    fn inbox_is_case_insensitive() {
        assert_eq!(MailboxName::new("inbox").unwrap().as_str(), "INBOX");
        assert_eq!(MailboxName::new("Inbox/Sub").unwrap().as_str(), "INBOX/Sub");
        assert_eq!(MailboxName::new("Sub/inbox").unwrap().as_str(), "Sub/inbox");
    }

    #[test]
    fn encoding_avoids_store_entries_and_round_trips() {
        let n = MailboxName::new(".index/x./Caf\u{e9}/1.").unwrap();
        let enc = n.encoded_components();
        assert_eq!(enc, vec!["%2Eindex", "x%2E", "Caf\u{e9}", "1%2E"]);
        for e in &enc {
            assert!(!e.starts_with('.') && !e.ends_with('.'));
        }
        let parts: Vec<&str> = enc.iter().map(|s| s.as_str()).collect();
        assert_eq!(MailboxName::from_encoded(&parts), Some(n));
        assert_eq!(MailboxName::from_encoded(&[".stage"]), None);
        assert_eq!(MailboxName::from_encoded(&["%2e"]), None);
    }
}
