//! Address header fields (From, To, Cc, ...) as IMAP sees them: the
//! ENVELOPE address lists (RFC 3501 7.4.2) and the text SEARCH FROM/TO/
//! CC/BCC match against (6.4.4), which the full-text index holds too.
//!
//! RFC 5322 section 3.4 with its obsolete forms (4.4): display names are
//! phrases (words joined by one space, quoted strings unquoted, comments
//! dropped), an addr-spec may carry comments and folding anywhere between
//! its tokens, a source route `<@a,@b:user@host>` gives the ENVELOPE's
//! at-domain-list, groups give start and end markers. Encoded words
//! (RFC 2047) are left as written, as RFC 3501 sends them. With no
//! display name, a comment after the address stands for it (`user@host
//! (Real Name)`), as Dovecot and UW do. Nothing here allocates more than
//! a small multiple of the input, and every step consumes input.

/// One element of an address list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// One address.
    Mailbox {
        /// The display name (a phrase, or the comment standing for it).
        name: Option<Vec<u8>>,
        /// Source route (`@a,@b`), RFC 3501's at-domain-list.
        route: Option<Vec<u8>>,
        /// The local part.
        mailbox: Vec<u8>,
        /// None when the address had no `@domain`.
        host: Option<Vec<u8>>,
    },
    /// The start of a group, with its display name.
    GroupStart(Vec<u8>),
    /// The end of a group.
    GroupEnd,
}

/// The specials of RFC 5322 3.2.3, and white space: what ends an atom.
fn is_special(b: u8) -> bool {
    matches!(
        b,
        b'(' | b')' | b'<' | b'>' | b'[' | b']' | b':' | b';' | b'@' | b'\\' | b',' | b'"'
    ) || b.is_ascii_whitespace()
        || b.is_ascii_control()
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips white space and comments; the text of the last comment.
    fn cfws(&mut self) -> Option<Vec<u8>> {
        let mut last = None;
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() => self.i += 1,
                Some(b'(') => last = Some(self.comment()),
                _ => return last,
            }
        }
    }

    /// A byte inside a comment or quoted string: a backslash quotes the
    /// next byte, CR and LF (folding) are dropped.
    fn plain_or_pair(&mut self, b: u8, out: &mut Vec<u8>) {
        match b {
            b'\\' => {
                if let Some(n) = self.peek() {
                    out.push(n);
                    self.i += 1;
                }
            }
            b'\r' | b'\n' => {}
            _ => out.push(b),
        }
    }

    /// A comment (nested, with quoted pairs), its text with folding
    /// removed and white space runs made one space.
    fn comment(&mut self) -> Vec<u8> {
        let mut depth = 0usize;
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'(' => {
                    if depth > 0 {
                        out.push(b);
                    }
                    depth += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                    out.push(b);
                }
                _ => self.plain_or_pair(b, &mut out),
            }
        }
        collapse_ws(&out)
    }

    /// An atom; `dots` also takes `.` (obs-phrase, dot-atom).
    fn atom(&mut self, dots: bool) -> Option<Vec<u8>> {
        let start = self.i;
        while let Some(b) = self.peek() {
            if is_special(b) || !dots && b == b'.' {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| self.s[start..self.i].to_vec())
    }

    /// A quoted string, unquoted.
    fn quoted(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        self.i += 1; // the opening quote
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => break,
                _ => self.plain_or_pair(b, &mut out),
            }
        }
        out
    }

    /// A word of a phrase (atom with dots, or quoted string), after CFWS.
    fn word(&mut self) -> Option<Vec<u8>> {
        self.cfws();
        match self.peek() {
            Some(b'"') => Some(self.quoted()),
            Some(b) if !is_special(b) => self.atom(true),
            _ => None,
        }
    }

    /// A display name: words joined by one space; None when there is none.
    fn phrase(&mut self) -> Option<Vec<u8>> {
        let mut out: Vec<u8> = Vec::new();
        let mut any = false;
        loop {
            let at = self.i;
            match self.word() {
                Some(w) => {
                    if any {
                        out.push(b' ');
                    }
                    out.extend_from_slice(&w);
                    any = true;
                }
                None => {
                    self.i = at;
                    break;
                }
            }
        }
        any.then_some(out)
    }

    /// local-part, `@`, domain: CFWS between the tokens is dropped.
    fn addr_spec(&mut self) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut local = Vec::new();
        loop {
            self.cfws();
            match self.peek() {
                Some(b'"') => local.extend(self.quoted()),
                Some(b'.') => {
                    local.push(b'.');
                    self.i += 1;
                }
                Some(b) if !is_special(b) => local.extend(self.atom(false).unwrap_or_default()),
                _ => break,
            }
        }
        self.cfws();
        if self.peek() != Some(b'@') {
            return (local, None);
        }
        self.i += 1;
        let mut domain = Vec::new();
        loop {
            // A comment after the domain is left for the caller (it may
            // stand for the display name).
            let save = self.i;
            self.cfws();
            let want = domain.is_empty() || domain.ends_with(b".");
            match self.peek() {
                Some(b'[') if want => {
                    // domain-literal, kept with its brackets
                    while let Some(b) = self.peek() {
                        self.i += 1;
                        if !b.is_ascii_whitespace() {
                            domain.push(b);
                        }
                        if b == b']' {
                            break;
                        }
                    }
                }
                Some(b'.') => {
                    domain.push(b'.');
                    self.i += 1;
                }
                Some(b) if want && !is_special(b) => {
                    domain.extend(self.atom(false).unwrap_or_default())
                }
                _ => {
                    self.i = save;
                    break;
                }
            }
        }
        (local, Some(domain))
    }

    /// `<[@route,@route:]addr-spec>` after the `<`.
    fn angle_addr(&mut self, name: Option<Vec<u8>>) -> Item {
        self.i += 1;
        self.cfws();
        let mut route = None;
        if self.peek() == Some(b'@') {
            let mut r = Vec::new();
            while let Some(b) = self.peek() {
                if matches!(b, b':' | b'>') {
                    break;
                }
                if b == b'(' {
                    self.comment();
                    continue;
                }
                self.i += 1;
                if !b.is_ascii_whitespace() {
                    r.push(b);
                }
            }
            if self.peek() == Some(b':') {
                self.i += 1;
            }
            route = Some(r);
        }
        let (mailbox, host) = self.addr_spec();
        self.cfws();
        // Skip whatever is left up to the closing bracket.
        while let Some(b) = self.peek() {
            self.i += 1;
            if b == b'>' {
                break;
            }
        }
        Item::Mailbox {
            name,
            route,
            mailbox,
            host,
        }
    }

    /// One mailbox (name-addr or addr-spec); None when nothing is there.
    fn mailbox(&mut self) -> Option<Item> {
        let start = self.i;
        let name = self.phrase();
        self.cfws();
        if self.peek() == Some(b'<') {
            return Some(self.angle_addr(name));
        }
        self.i = start;
        let (mailbox, host) = self.addr_spec();
        let comment = self.cfws();
        if mailbox.is_empty() {
            return None;
        }
        Some(Item::Mailbox {
            name: comment.filter(|c| !c.is_empty()),
            route: None,
            mailbox,
            host,
        })
    }

    /// Skips to the next `,` or `stop` at this level (past junk).
    fn skip_to_separator(&mut self, stop: Option<u8>) {
        while let Some(b) = self.peek() {
            match b {
                b',' => return,
                b if Some(b) == stop => return,
                b'(' => {
                    self.comment();
                }
                b'"' => {
                    self.quoted();
                }
                _ => self.i += 1,
            }
        }
    }

    fn list(&mut self, out: &mut Vec<Item>, in_group: bool) {
        loop {
            self.cfws();
            match self.peek() {
                None => return,
                Some(b',') => {
                    self.i += 1;
                    continue;
                }
                Some(b';') if in_group => {
                    self.i += 1;
                    return;
                }
                _ => {}
            }
            let at = self.i;
            if !in_group {
                let name = self.phrase();
                self.cfws();
                if self.peek() == Some(b':') {
                    self.i += 1;
                    out.push(Item::GroupStart(name.unwrap_or_default()));
                    self.list(out, true);
                    out.push(Item::GroupEnd);
                    continue;
                }
                self.i = at;
            }
            if let Some(m) = self.mailbox() {
                out.push(m);
            }
            self.cfws();
            match self.peek() {
                Some(b',') | None => {}
                Some(b';') if in_group => {}
                _ => self.skip_to_separator(in_group.then_some(b';')),
            }
            if self.i == at {
                // Nothing could be read here: step over one byte.
                self.i += 1;
            }
        }
    }
}

fn collapse_ws(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    for w in b
        .split(|c| c.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(w);
    }
    out
}

/// The header fields SEARCH FROM, TO, CC and BCC compare as addresses
/// ([`search_text`]).
pub const SEARCH_FIELDS: [&[u8]; 4] = [b"From", b"To", b"Cc", b"Bcc"];

/// The name of the unfolded header field `field` (`Name: value`), white
/// space trimmed (as SEARCH finds the fields).
pub fn field_name(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == b':').unwrap_or(field.len());
    field[..end].trim_ascii()
}

/// Whether a field called `name` is one of [`SEARCH_FIELDS`], in any case.
pub fn is_search_field(name: &[u8]) -> bool {
    SEARCH_FIELDS.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// The parts of the addresses of `items` that [`search_text`] writes
/// whole, so that a needle equal to one of them (in any ASCII case) is
/// in the text: each address as `local@host`, its host, `@host`, its
/// local part and `local@` (an address without a host: its local part).
/// Empty parts are left out.
pub fn address_parts(items: &[Item]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for it in items {
        let Item::Mailbox { mailbox, host, .. } = it else {
            continue;
        };
        if !mailbox.is_empty() {
            out.push(mailbox.clone());
        }
        let Some(host) = host else { continue };
        let mut at_host = vec![b'@'];
        at_host.extend_from_slice(host);
        let mut local_at = mailbox.clone();
        local_at.push(b'@');
        let mut whole = local_at.clone();
        whole.extend_from_slice(host);
        if !host.is_empty() {
            out.push(host.clone());
        }
        out.extend([at_host, local_at, whole]);
    }
    out
}

/// The address list of one header field's value (folding included).
pub fn parse(value: &[u8]) -> Vec<Item> {
    let mut p = Parser { s: value, i: 0 };
    let mut out = Vec::new();
    p.list(&mut out, false);
    out
}

/// The list as SEARCH FROM/TO/CC/BCC match it: `Name <local@host>, group:
/// a@b;` with comments and folding gone, so a substring of the address
/// as written normally (`user@domain.org`) is found however it was
/// spelled in the header.
pub fn search_text(items: &[Item]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut sep = false;
    for it in items {
        if sep && !matches!(it, Item::GroupEnd) {
            out.extend_from_slice(b", ");
        }
        sep = true;
        match it {
            Item::Mailbox {
                name,
                mailbox,
                host,
                ..
            } => {
                let mut addr = mailbox.clone();
                if let Some(h) = host {
                    addr.push(b'@');
                    addr.extend_from_slice(h);
                }
                match name {
                    Some(n) => {
                        out.extend_from_slice(n);
                        out.extend_from_slice(b" <");
                        out.extend_from_slice(&addr);
                        out.push(b'>');
                    }
                    None => out.extend_from_slice(&addr),
                }
            }
            Item::GroupStart(n) => {
                out.extend_from_slice(n);
                out.extend_from_slice(b": ");
                sep = false;
            }
            Item::GroupEnd => out.push(b';'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mb(name: Option<&str>, route: Option<&str>, m: &str, h: Option<&str>) -> Item {
        Item::Mailbox {
            name: name.map(|s| s.as_bytes().to_vec()),
            route: route.map(|s| s.as_bytes().to_vec()),
            mailbox: m.as_bytes().to_vec(),
            host: h.map(|s| s.as_bytes().to_vec()),
        }
    }

    #[test]
    fn forms() {
        assert_eq!(
            parse(b"From Real <fromuser@fromdomain.org>"),
            [mb(
                Some("From Real"),
                None,
                "fromuser",
                Some("fromdomain.org")
            )]
        );
        assert_eq!(
            parse(b"user@domain (Real Name)"),
            [mb(Some("Real Name"), None, "user", Some("domain"))]
        );
        assert_eq!(
            parse(b"<@route:user@domain>"),
            [mb(None, Some("@route"), "user", Some("domain"))]
        );
        assert_eq!(
            parse(b"<@a.org, @b.org:user@domain>"),
            [mb(None, Some("@a.org,@b.org"), "user", Some("domain"))]
        );
        assert_eq!(
            parse(b"<user-from (comment)@ (comment) domain.org>"),
            [mb(None, None, "user-from", Some("domain.org"))]
        );
        assert_eq!(
            parse(b"\"Doe, John\" <\"john q\"@x.org>, =?utf-8?q?J=C3=B6rg?= <j@y>"),
            [
                mb(Some("Doe, John"), None, "john q", Some("x.org")),
                mb(Some("=?utf-8?q?J=C3=B6rg?="), None, "j", Some("y"))
            ]
        );
        assert_eq!(parse(b"user"), [mb(None, None, "user", None)]);
        assert_eq!(parse(b"  "), []);
        assert_eq!(
            parse(b"group:;, group2: (foo) ;"),
            [
                Item::GroupStart(b"group".to_vec()),
                Item::GroupEnd,
                Item::GroupStart(b"group2".to_vec()),
                Item::GroupEnd
            ]
        );
        assert_eq!(
            parse(b"group: g1@d1.org, g2@d2.org;, group2: g3@d3.org;"),
            [
                Item::GroupStart(b"group".to_vec()),
                mb(None, None, "g1", Some("d1.org")),
                mb(None, None, "g2", Some("d2.org")),
                Item::GroupEnd,
                Item::GroupStart(b"group2".to_vec()),
                mb(None, None, "g3", Some("d3.org")),
                Item::GroupEnd
            ]
        );
        assert_eq!(
            parse(b"undisclosed-recipients:;"),
            [
                Item::GroupStart(b"undisclosed-recipients".to_vec()),
                Item::GroupEnd
            ]
        );
        assert_eq!(
            parse(b"John Q. Public <jqp@x.org>,\r\n\tb@y.org"),
            [
                mb(Some("John Q. Public"), None, "jqp", Some("x.org")),
                mb(None, None, "b", Some("y.org"))
            ]
        );
    }

    #[test]
    fn junk_terminates() {
        for junk in [
            &b"<<<>>>"[..],
            b"@@@",
            b"(((unclosed",
            b"\"unclosed",
            b"a:b:c;;;,,,<",
            b";",
            b"[",
            b"a@[1.2.3.4",
            b"<@route",
        ] {
            let _ = parse(junk);
        }
        assert_eq!(parse(b"a@b, @@@, c@d").len(), 2);
    }

    /// Random strings over the bytes that matter to the grammar: every
    /// one parses (no panic, no endless loop) into a bounded list.
    #[test]
    fn random_input_terminates() {
        let alphabet = b"<>()@,;:\"\\[]. \t\r\nab=?\xc3";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 48) as usize;
            let mut v = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                v.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            let items = parse(&v);
            assert!(items.len() <= 2 * v.len() + 2, "{v:?}");
            let _ = search_text(&items);
        }
    }

    #[test]
    fn search_form() {
        let t = search_text(&parse(b"<user-from (comment)@ (comment) domain.org>"));
        assert_eq!(t, b"user-from@domain.org");
        let t = search_text(&parse(b"RealTo <user-to@domain.org>, g: a@b;"));
        assert_eq!(t, b"RealTo <user-to@domain.org>, g: a@b;");
    }
}
