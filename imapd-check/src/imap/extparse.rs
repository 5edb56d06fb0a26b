//! A small parser for the command forms imap-codec 2.0.0-alpha.10 does
//! not parse, tried only when imap-codec refused the command:
//!
//! - LIST-EXTENDED (RFC 5258 §6): `LIST (select-opts) ref ("p1" "p2")
//!   RETURN (return-opts)`, with LIST-STATUS's `STATUS (...)` (RFC 5819)
//!   and SPECIAL-USE's options (RFC 6154); imap-codec only knows the
//!   RFC 3501 form (its `ext_list_extended` feature adds response types
//!   only, so it is not enabled: responses are written in `list.rs`).
//! - CREATE-SPECIAL-USE (RFC 6154 §3): `CREATE name (USE (\Sent))`.
//! - MULTIAPPEND (RFC 3502 §6.3.11): `APPEND box 1*(SP [flags] [SP date]
//!   SP literal)`; imap-codec takes one message only.
//!
//! It works on the assembled command (`io::Input::read_command`: lines
//! with their literals inline, already bounded by its limits), never reads
//! past the end, never allocates more than the input's size, and stops at
//! the first error (the caller answers BAD).

use std::ops::Range;

use imap_codec::imap_types::status::StatusDataItemName;

/// Most messages in one MULTIAPPEND: each is a staged file held open until
/// the commit.
pub const MAX_APPEND_MESSAGES: usize = 100;
/// Most patterns in one LIST.
const MAX_PATTERNS: usize = 100;

#[derive(Debug, PartialEq, Eq)]
pub enum ExtCommand {
    List(ListCommand),
    Create {
        mailbox: Vec<u8>,
        /// Attributes of `USE (...)`, as sent (with their backslash).
        uses: Vec<String>,
    },
    Append {
        mailbox: Vec<u8>,
        messages: Vec<AppendMessage>,
    },
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListCommand {
    pub sel_subscribed: bool,
    pub sel_remote: bool,
    pub sel_recursive: bool,
    pub sel_special_use: bool,
    pub reference: Vec<u8>,
    pub patterns: Vec<Vec<u8>>,
    pub ret_subscribed: bool,
    pub ret_children: bool,
    pub ret_special_use: bool,
    pub ret_status: Option<Vec<StatusDataItemName>>,
}

#[derive(Debug, PartialEq, Eq)]
pub struct AppendMessage {
    /// Flags as sent (`\Seen`, `$Label`).
    pub flags: Vec<String>,
    /// INTERNALDATE in Unix seconds, with its zone in minutes east of UTC.
    pub date: Option<(i64, i16)>,
    /// Where the message's octets are in the command.
    pub data: Range<usize>,
}

/// A parse failure: the text of the tagged BAD.
pub type Error = &'static str;

/// Parses `bytes` when it is a LIST, CREATE or APPEND command: `None` for
/// any other command (or no tag), else the tag, the command's name, and
/// the command or why it is malformed.
pub fn parse(bytes: &[u8]) -> Option<(String, &'static str, Result<ExtCommand, Error>)> {
    let mut p = P { b: bytes, i: 0 };
    let tag = p.take_while(|c| c != b' ' && c != b'\r' && c != b'\n');
    let tag = super::io::tag_of(bytes).filter(|t| t.as_bytes() == tag)?;
    p.sp().ok()?;
    let name = p.atom().ok()?.to_ascii_uppercase();
    let (name, cmd) = match name.as_slice() {
        b"LIST" => (
            "LIST",
            p.sp().and_then(|()| list(&mut p)).map(ExtCommand::List),
        ),
        b"CREATE" => ("CREATE", p.sp().and_then(|()| create(&mut p))),
        b"APPEND" => ("APPEND", p.sp().and_then(|()| append(&mut p))),
        _ => return None,
    };
    let cmd = cmd.and_then(|c| p.end().map(|()| c));
    Some((tag, name, cmd))
}

fn list(p: &mut P) -> Result<ListCommand, Error> {
    let mut cmd = ListCommand::default();
    if p.peek() == Some(b'(') {
        for opt in p.atom_list()? {
            match opt.to_ascii_uppercase().as_slice() {
                b"SUBSCRIBED" => cmd.sel_subscribed = true,
                b"REMOTE" => cmd.sel_remote = true,
                b"RECURSIVEMATCH" => cmd.sel_recursive = true,
                b"SPECIAL-USE" => cmd.sel_special_use = true,
                _ => return Err("Unknown LIST selection option"),
            }
        }
        p.sp()?;
    }
    // RFC 5258 §3: RECURSIVEMATCH alone (or with only REMOTE) is an error.
    if cmd.sel_recursive && !cmd.sel_subscribed && !cmd.sel_special_use {
        return Err("RECURSIVEMATCH needs another selection option");
    }
    cmd.reference = p.astring()?;
    p.sp()?;
    if p.peek() == Some(b'(') {
        p.i += 1;
        loop {
            if cmd.patterns.len() == MAX_PATTERNS {
                return Err("Too many patterns");
            }
            cmd.patterns.push(p.list_mailbox()?);
            match p.next() {
                Some(b' ') => continue,
                Some(b')') => break,
                _ => return Err("Malformed pattern list"),
            }
        }
    } else {
        cmd.patterns.push(p.list_mailbox()?);
    }
    if p.peek() == Some(b' ') {
        p.i += 1;
        if !p.atom()?.eq_ignore_ascii_case(b"RETURN") {
            return Err("Expected RETURN");
        }
        p.sp()?;
        p.in_parens(|p| {
            let opt = p.atom()?.to_ascii_uppercase();
            match opt.as_slice() {
                b"SUBSCRIBED" => cmd.ret_subscribed = true,
                b"CHILDREN" => cmd.ret_children = true,
                b"SPECIAL-USE" => cmd.ret_special_use = true,
                b"STATUS" => {
                    p.sp()?;
                    let mut items = Vec::new();
                    for a in p.atom_list()? {
                        items.push(status_item(&a).ok_or("Unknown STATUS item")?);
                    }
                    if items.is_empty() {
                        return Err("Empty STATUS list");
                    }
                    cmd.ret_status = Some(items);
                }
                _ => return Err("Unknown LIST return option"),
            }
            Ok(())
        })?;
    }
    // Selection options that imply a return option (RFC 5258 §3,
    // RFC 6154 §2).
    cmd.ret_subscribed |= cmd.sel_subscribed;
    cmd.ret_special_use |= cmd.sel_special_use;
    Ok(cmd)
}

/// A STATUS data item name (RFC 3501, 7162, 8438, 9208).
pub fn status_item(name: &[u8]) -> Option<StatusDataItemName> {
    Some(match name.to_ascii_uppercase().as_slice() {
        b"MESSAGES" => StatusDataItemName::Messages,
        b"RECENT" => StatusDataItemName::Recent,
        b"UIDNEXT" => StatusDataItemName::UidNext,
        b"UIDVALIDITY" => StatusDataItemName::UidValidity,
        b"UNSEEN" => StatusDataItemName::Unseen,
        b"DELETED" => StatusDataItemName::Deleted,
        b"DELETED-STORAGE" => StatusDataItemName::DeletedStorage,
        b"SIZE" => StatusDataItemName::Size,
        b"HIGHESTMODSEQ" => StatusDataItemName::HighestModSeq,
        _ => return None,
    })
}

fn create(p: &mut P) -> Result<ExtCommand, Error> {
    let mailbox = p.astring()?;
    let mut uses = Vec::new();
    if p.peek() == Some(b' ') {
        p.i += 1;
        p.in_parens(|p| {
            if !p.atom()?.eq_ignore_ascii_case(b"USE") {
                return Err("Unknown CREATE parameter");
            }
            p.sp()?;
            for a in p.atom_list()? {
                uses.push(String::from_utf8_lossy(&a).into_owned());
            }
            Ok(())
        })?;
    }
    Ok(ExtCommand::Create { mailbox, uses })
}

fn append(p: &mut P) -> Result<ExtCommand, Error> {
    let mailbox = p.astring()?;
    let mut messages = Vec::new();
    while p.peek() == Some(b' ') {
        p.i += 1;
        if messages.len() == MAX_APPEND_MESSAGES {
            return Err("Too many messages in one APPEND");
        }
        let mut flags = Vec::new();
        if p.peek() == Some(b'(') {
            for f in p.atom_list()? {
                flags.push(String::from_utf8_lossy(&f).into_owned());
            }
            p.sp()?;
        }
        let mut date = None;
        if p.peek() == Some(b'"') {
            let d = p.quoted()?;
            date = Some(date_time(&d).ok_or("Invalid date-time")?);
            p.sp()?;
        }
        if p.peek() != Some(b'{') {
            return Err("Expected a literal");
        }
        let data = p.literal()?;
        messages.push(AppendMessage { flags, date, data });
    }
    if messages.is_empty() {
        return Err("APPEND needs a message");
    }
    Ok(ExtCommand::Append { mailbox, messages })
}

/// RFC 3501 date-time `"dd-Mon-yyyy hh:mm:ss +zzzz"` (day may be space
/// padded) to Unix seconds and the zone in minutes east of UTC.
pub fn date_time(s: &[u8]) -> Option<(i64, i16)> {
    const MONTHS: [&[u8]; 12] = [
        b"jan", b"feb", b"mar", b"apr", b"may", b"jun", b"jul", b"aug", b"sep", b"oct", b"nov",
        b"dec",
    ];
    let s = s.strip_prefix(b" ").unwrap_or(s);
    let (day, rest) = s.split_at(s.iter().position(|&c| c == b'-')?);
    let rest = &rest[1..];
    if rest.len() != 23 || day.is_empty() || day.len() > 2 {
        return None;
    }
    let num = |b: &[u8]| -> Option<i64> {
        b.iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as i64)
        })
    };
    let d = num(day)?;
    let m = MONTHS
        .iter()
        .position(|m| rest[..3].eq_ignore_ascii_case(m))? as u32
        + 1;
    if rest[3] != b'-' || rest[8] != b' ' || rest[11] != b':' || rest[14] != b':' {
        return None;
    }
    let y = num(&rest[4..8])?;
    let (hh, mm, ss) = (num(&rest[9..11])?, num(&rest[12..14])?, num(&rest[15..17])?);
    if rest[17] != b' ' || !matches!(rest[18], b'+' | b'-') {
        return None;
    }
    let zone = num(&rest[19..21])? * 3600 + num(&rest[21..23])? * 60;
    let zone = if rest[18] == b'-' { -zone } else { zone };
    let days_in_month = match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if !(1..=days_in_month).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let days = super::wire::days_from_civil(y, m, d as u32);
    Some((
        days * 86_400 + hh * 3600 + mm * 60 + ss - zone,
        (zone / 60) as i16,
    ))
}

struct P<'a> {
    b: &'a [u8],
    i: usize,
}

fn is_atom_char(c: u8) -> bool {
    c > b' ' && c < 0x7f && !matches!(c, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
}

impl P<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.i += c.is_some() as usize;
        c
    }

    fn expect(&mut self, c: u8) -> Result<(), Error> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err("Syntax error")
        }
    }

    fn sp(&mut self) -> Result<(), Error> {
        self.expect(b' ')
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &[u8] {
        let start = self.i;
        while self.peek().is_some_and(&f) {
            self.i += 1;
        }
        &self.b[start..self.i]
    }

    /// CRLF (or a bare LF) and nothing after it.
    fn end(&mut self) -> Result<(), Error> {
        let rest = &self.b[self.i..];
        if rest == b"\r\n" || rest == b"\n" {
            Ok(())
        } else {
            Err("Unexpected characters at the end of the command")
        }
    }

    /// An atom, or a flag (`\` atom).
    fn atom(&mut self) -> Result<Vec<u8>, Error> {
        let start = self.i;
        if self.peek() == Some(b'\\') {
            self.i += 1;
        }
        if self.take_while(is_atom_char).is_empty() {
            return Err("Expected an atom");
        }
        Ok(self.b[start..self.i].to_vec())
    }

    /// `(` [item *(SP item)] `)`, each item read by `item`.
    fn in_parens(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), Error>,
    ) -> Result<(), Error> {
        self.expect(b'(')?;
        let mut first = true;
        while self.peek() != Some(b')') {
            if !first {
                self.sp()?;
            }
            first = false;
            item(self)?;
        }
        self.i += 1;
        Ok(())
    }

    /// `(` [atom *(SP atom)] `)`.
    fn atom_list(&mut self) -> Result<Vec<Vec<u8>>, Error> {
        self.expect(b'(')?;
        let mut out = Vec::new();
        if self.peek() == Some(b')') {
            self.i += 1;
            return Ok(out);
        }
        loop {
            out.push(self.atom()?);
            match self.next() {
                Some(b' ') => continue,
                Some(b')') => return Ok(out),
                _ => return Err("Malformed list"),
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, Error> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                Some(b'"') => return Ok(out),
                Some(b'\\') => match self.next() {
                    Some(c @ (b'"' | b'\\')) => out.push(c),
                    _ => return Err("Invalid escape in quoted string"),
                },
                Some(b'\r' | b'\n' | 0) | None => return Err("Unterminated quoted string"),
                Some(c) => out.push(c),
            }
        }
    }

    /// `{n}` or `{n+}`, CRLF, then n octets: their range in the input.
    fn literal(&mut self) -> Result<Range<usize>, Error> {
        self.expect(b'{')?;
        let digits = self.take_while(|c| c.is_ascii_digit());
        if digits.is_empty() || digits.len() > 19 {
            return Err("Invalid literal length");
        }
        let n: usize = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("Invalid literal length")?;
        if self.peek() == Some(b'+') {
            self.i += 1;
        }
        self.expect(b'}')?;
        if self.peek() == Some(b'\r') {
            self.i += 1;
        }
        self.expect(b'\n')?;
        if self.b.len() - self.i < n {
            return Err("Literal longer than the command");
        }
        let r = self.i..self.i + n;
        self.i += n;
        Ok(r)
    }

    fn string(&mut self) -> Result<Vec<u8>, Error> {
        match self.peek() {
            Some(b'"') => self.quoted(),
            Some(b'{') => {
                let r = self.literal()?;
                Ok(self.b[r].to_vec())
            }
            _ => Err("Expected a string"),
        }
    }

    fn astring(&mut self) -> Result<Vec<u8>, Error> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(|c| is_atom_char(c) || c == b']');
                if a.is_empty() {
                    return Err("Expected a mailbox name");
                }
                Ok(a.to_vec())
            }
        }
    }

    fn list_mailbox(&mut self) -> Result<Vec<u8>, Error> {
        match self.peek() {
            Some(b'"' | b'{') => self.string(),
            _ => {
                let a = self.take_while(|c| is_atom_char(c) || matches!(c, b'%' | b'*' | b']'));
                if a.is_empty() {
                    return Err("Expected a mailbox pattern");
                }
                Ok(a.to_vec())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list_of(cmd: &[u8]) -> ListCommand {
        match parse(cmd) {
            Some((_, _, Ok(ExtCommand::List(l)))) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn list_extended_forms() {
        let l = list_of(b"a LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"a\" b/% {3}\r\nc/*) RETURN (CHILDREN STATUS (MESSAGES SIZE))\r\n");
        assert!(l.sel_subscribed && l.sel_recursive && l.ret_subscribed && l.ret_children);
        assert_eq!(
            l.patterns,
            vec![b"a".to_vec(), b"b/%".to_vec(), b"c/*".to_vec()]
        );
        assert_eq!(
            l.ret_status,
            Some(vec![StatusDataItemName::Messages, StatusDataItemName::Size])
        );
        let l = list_of(b"a list () \"\" % return ()\r\n");
        assert_eq!(l.patterns, vec![b"%".to_vec()]);
        let l = list_of(b"a LIST (special-use) \"\" *\r\n");
        assert!(l.ret_special_use);
        for bad in [
            &b"a LIST (RECURSIVEMATCH) \"\" *\r\n"[..],
            b"a LIST (BOGUS) \"\" *\r\n",
            b"a LIST \"\" * RETURN (BOGUS)\r\n",
            b"a LIST \"\" * RETURN (STATUS ())\r\n",
            b"a LIST \"\" (\"a\"\r\n",
            b"a LIST \"\" * RETURN (CHILDREN) x\r\n",
            b"a LIST \"\" {10}\r\nab\r\n",
        ] {
            assert!(matches!(parse(bad), Some((_, _, Err(_)))), "{bad:?}");
        }
        assert!(parse(b"a FETCH 1 FLAGS\r\n").is_none());
        assert!(parse(b"").is_none());
    }

    #[test]
    fn create_with_use() {
        assert_eq!(
            parse(b"t CREATE \"My Sent\" (USE (\\Sent \\Archive))\r\n")
                .unwrap()
                .2,
            Ok(ExtCommand::Create {
                mailbox: b"My Sent".to_vec(),
                uses: vec!["\\Sent".into(), "\\Archive".into()],
            })
        );
        assert!(parse(b"t CREATE x (FOO (\\Sent))\r\n").unwrap().2.is_err());
        assert!(parse(b"t CREATE x (USE (\\Sent)\r\n").unwrap().2.is_err());
    }

    #[test]
    fn multiappend() {
        let cmd =
            b"t APPEND INBOX (\\Seen) \" 5-Mar-2024 10:00:00 +0100\" {2}\r\nab {3+}\r\ncde\r\n";
        let Some((tag, _, Ok(ExtCommand::Append { mailbox, messages }))) = parse(cmd) else {
            panic!()
        };
        assert_eq!(tag, "t");
        assert_eq!(mailbox, b"INBOX");
        assert_eq!(messages.len(), 2);
        assert_eq!(&cmd[messages[0].data.clone()], b"ab");
        assert_eq!(messages[0].flags, vec!["\\Seen".to_string()]);
        assert_eq!(messages[0].date.map(|d| d.0), Some(1_709_629_200));
        assert_eq!(&cmd[messages[1].data.clone()], b"cde");
        assert!(messages[1].flags.is_empty() && messages[1].date.is_none());
        let many = format!(
            "t APPEND x{}\r\n",
            " {0}\r\n".repeat(MAX_APPEND_MESSAGES + 1)
        );
        assert!(parse(many.as_bytes()).unwrap().2.is_err());
        assert!(
            parse(b"t APPEND x \"31-Feb-2024 10:00:00 +0000\" {0}\r\n\r\n")
                .unwrap()
                .2
                .is_err()
        );
        assert!(parse(b"t APPEND x\r\n").unwrap().2.is_err());
    }

    #[test]
    fn dates() {
        assert_eq!(
            date_time(b"17-Jul-1996 02:44:25 -0700"),
            Some((837_596_665, -420))
        );
        assert_eq!(date_time(b"01-jan-1970 00:00:00 +0000"), Some((0, 0)));
        assert_eq!(date_time(b"1-Jan-1970 00:00:00 +0000"), Some((0, 0)));
        assert!(date_time(b"01-Foo-1970 00:00:00 +0000").is_none());
        assert!(date_time(b"01-Jan-1970 24:00:00 +0000").is_none());
        assert!(date_time(b"").is_none());
    }

    /// Arbitrary bytes, and valid commands with bytes changed, dropped,
    /// or cut short, never panic (bounded, no out-of-range slicing).
    #[test]
    fn never_panics_on_garbage() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"aLISTCREATEPPND (){}+\\\"*%\r\n 0123456789-";
        let valid: [&[u8]; 4] = [
            b"t LIST (SUBSCRIBED RECURSIVEMATCH) \"\" (\"a\" b/% {3}\r\nc/*) RETURN (CHILDREN STATUS (MESSAGES SIZE))\r\n",
            b"t CREATE \"My Sent\" (USE (\\Sent \\Archive))\r\n",
            b"t APPEND INBOX (\\Seen) \" 5-Mar-2024 10:00:00 +0100\" {2}\r\nab {3+}\r\ncde\r\n",
            b"t LIST \"\" % RETURN (SPECIAL-USE)\r\n",
        ];
        for round in 0..40_000 {
            let mut v = if round % 2 == 0 {
                let len = (next() % 60) as usize;
                let mut v = b"t ".to_vec();
                for _ in 0..len {
                    v.push(alphabet[(next() >> 33) as usize % alphabet.len()]);
                }
                v
            } else {
                valid[(next() % 4) as usize].to_vec()
            };
            for _ in 0..(next() % 4) {
                if v.is_empty() {
                    break;
                }
                let at = (next() as usize) % v.len();
                match next() % 3 {
                    0 => v[at] = alphabet[(next() >> 33) as usize % alphabet.len()],
                    1 => {
                        v.remove(at);
                    }
                    _ => v.truncate(at),
                }
            }
            let _ = parse(&v);
        }
    }
}
