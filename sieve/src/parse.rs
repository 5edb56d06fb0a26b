//! Lexer and generic parser (RFC 5228 section 8): tokens with line:column
//! positions, then the command/argument/test tree before validation.

use crate::{Error, Pos};

/// Longest script accepted, in bytes.
pub const MAX_SCRIPT: usize = 1 << 20;
/// Deepest nesting of blocks and tests.
pub const MAX_NESTING: usize = 32;
/// Most strings in one string list.
pub const MAX_LIST: usize = 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Tag(String),
    Num(u64),
    /// A string; `true` when it came from a `text:` multi-line literal.
    Str(String),
    LBracket,
    RBracket,
    LParen,
    RParen,
    Comma,
    Semi,
    LBrace,
    RBrace,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier '{s}'"),
            Tok::Tag(s) => format!("tag ':{s}'"),
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(_) => "string".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::Comma => "','".into(),
            Tok::Semi => "';'".into(),
            Tok::LBrace => "'{'".into(),
            Tok::RBrace => "'}'".into(),
        }
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
    line: u32,
    col: u32,
}

impl<'a> Lexer<'a> {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }
    fn bump(&mut self) -> Option<u8> {
        let c = *self.s.get(self.i)?;
        self.i += 1;
        if c == b'\n' {
            self.line += 1;
            self.col = 1;
        } else if c & 0xC0 != 0x80 {
            self.col += 1;
        }
        Some(c)
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn peek2(&self) -> Option<u8> {
        self.s.get(self.i + 1).copied()
    }

    fn skip_ws(&mut self) -> Result<(), Error> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => {
                    self.bump();
                }
                Some(b'#') => {
                    while let Some(c) = self.bump() {
                        if c == b'\n' {
                            break;
                        }
                    }
                }
                Some(b'/') if self.peek2() == Some(b'*') => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(Error::new(start, "unterminated comment")),
                            Some(b'*') if self.peek() == Some(b'/') => {
                                self.bump();
                                break;
                            }
                            _ => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn next(&mut self) -> Result<Option<(Tok, Pos)>, Error> {
        self.skip_ws()?;
        let pos = self.pos();
        let Some(c) = self.peek() else {
            return Ok(None);
        };
        let single = match c {
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b'(' => Some(Tok::LParen),
            b')' => Some(Tok::RParen),
            b',' => Some(Tok::Comma),
            b';' => Some(Tok::Semi),
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            _ => None,
        };
        if let Some(t) = single {
            self.bump();
            return Ok(Some((t, pos)));
        }
        if c == b'"' {
            self.bump();
            let mut out = Vec::new();
            loop {
                match self.bump() {
                    None => return Err(Error::new(pos, "unterminated string")),
                    Some(b'"') => break,
                    Some(b'\\') => match self.bump() {
                        None => return Err(Error::new(pos, "unterminated string")),
                        // Undefined escapes: the backslash is dropped (2.4.2).
                        Some(c) => out.push(c),
                    },
                    Some(c) => out.push(c),
                }
            }
            return Ok(Some((Tok::Str(utf8(out, pos)?), pos)));
        }
        if c == b':' {
            self.bump();
            let id = self.ident();
            if id.is_empty() {
                return Err(Error::new(pos, "expected a tag name after ':'"));
            }
            return Ok(Some((Tok::Tag(id.to_ascii_lowercase()), pos)));
        }
        if c.is_ascii_digit() {
            let mut n: u64 = 0;
            while let Some(d) = self.peek().filter(u8::is_ascii_digit) {
                self.bump();
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(u64::from(d - b'0')))
                    .ok_or_else(|| Error::new(pos, "number too large"))?;
            }
            let mult: u64 = match self.peek() {
                Some(b'K' | b'k') => 1 << 10,
                Some(b'M' | b'm') => 1 << 20,
                Some(b'G' | b'g') => 1 << 30,
                _ => 1,
            };
            if mult > 1 {
                self.bump();
            }
            let n = n
                .checked_mul(mult)
                .ok_or_else(|| Error::new(pos, "number too large"))?;
            return Ok(Some((Tok::Num(n), pos)));
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let id = self.ident();
            if id.eq_ignore_ascii_case("text") && self.peek() == Some(b':') {
                self.bump();
                return self.multiline(pos).map(|s| Some((Tok::Str(s), pos)));
            }
            return Ok(Some((Tok::Ident(id.to_ascii_lowercase()), pos)));
        }
        Err(Error::new(
            pos,
            format!("unexpected character '{}'", char::from(c).escape_default()),
        ))
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == b'_' {
                self.bump();
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// `text:` (whitespace) (hash-comment / CRLF) lines "." CRLF.
    fn multiline(&mut self, pos: Pos) -> Result<String, Error> {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.bump();
        }
        match self.peek() {
            Some(b'#') => {
                while let Some(c) = self.bump() {
                    if c == b'\n' {
                        break;
                    }
                }
            }
            Some(b'\r') if self.peek2() == Some(b'\n') => {
                self.bump();
                self.bump();
            }
            Some(b'\n') => {
                self.bump();
            }
            _ => {
                return Err(Error::new(self.pos(), "expected end of line after 'text:'"));
            }
        }
        let mut out = Vec::new();
        loop {
            let start = self.i;
            if start >= self.s.len() {
                return Err(Error::new(pos, "unterminated multi-line string"));
            }
            while let Some(c) = self.bump() {
                if c == b'\n' {
                    break;
                }
            }
            let mut line = &self.s[start..self.i];
            let body = line
                .strip_suffix(b"\n")
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .unwrap_or(line);
            if body == b"." {
                break;
            }
            if line.starts_with(b"..") {
                line = &line[1..];
            }
            // Lines end in CRLF inside the string (RFC 5228 2.4.2).
            match line.strip_suffix(b"\n") {
                Some(l) => {
                    out.extend_from_slice(l.strip_suffix(b"\r").unwrap_or(l));
                    out.extend_from_slice(b"\r\n");
                }
                None => return Err(Error::new(pos, "unterminated multi-line string")),
            }
        }
        utf8(out, pos)
    }
}

fn utf8(b: Vec<u8>, pos: Pos) -> Result<String, Error> {
    String::from_utf8(b).map_err(|_| Error::new(pos, "string is not valid UTF-8"))
}

/// An argument before validation.
#[derive(Debug, Clone)]
pub enum RawArg {
    /// A string or a string list.
    Strings {
        list: Vec<String>,
        pos: Pos,
    },
    Num(u64, Pos),
    Tag(String, Pos),
}

impl RawArg {
    pub fn pos(&self) -> Pos {
        match self {
            RawArg::Strings { pos, .. } | RawArg::Num(_, pos) | RawArg::Tag(_, pos) => *pos,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawTest {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<RawArg>,
    pub tests: Vec<RawTest>,
}

#[derive(Debug, Clone)]
pub struct RawCommand {
    pub name: String,
    pub pos: Pos,
    pub args: Vec<RawArg>,
    pub tests: Vec<RawTest>,
    /// `None`: ended with `;`.
    pub block: Option<Vec<RawCommand>>,
}

struct Parser<'a> {
    lex: Lexer<'a>,
    peeked: Option<Option<(Tok, Pos)>>,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Option<&(Tok, Pos)>, Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lex.next()?);
        }
        Ok(self.peeked.as_ref().and_then(|p| p.as_ref()))
    }
    fn next(&mut self) -> Result<Option<(Tok, Pos)>, Error> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lex.next(),
        }
    }
    fn eof_pos(&self) -> Pos {
        self.lex.pos()
    }

    fn commands(&mut self, depth: usize, in_block: bool) -> Result<Vec<RawCommand>, Error> {
        let mut out = Vec::new();
        loop {
            match self.peek()? {
                None if !in_block => return Ok(out),
                None => return Err(Error::new(self.eof_pos(), "missing '}' at end of script")),
                Some((Tok::RBrace, _)) if in_block => return Ok(out),
                Some((Tok::Ident(_), _)) => out.push(self.command(depth)?),
                Some((t, p)) => {
                    return Err(Error::new(
                        *p,
                        format!("expected a command, found {}", t.describe()),
                    ));
                }
            }
        }
    }

    fn command(&mut self, depth: usize) -> Result<RawCommand, Error> {
        let Some((Tok::Ident(name), pos)) = self.next()? else {
            unreachable!("command() is called on an identifier")
        };
        let (args, tests) = self.arguments(depth)?;
        let block = match self.next()? {
            Some((Tok::Semi, _)) => None,
            Some((Tok::LBrace, p)) => {
                if depth + 1 > MAX_NESTING {
                    return Err(Error::new(p, "blocks nested too deeply"));
                }
                let b = self.commands(depth + 1, true)?;
                self.next()?; // the '}'
                Some(b)
            }
            Some((t, p)) => {
                return Err(Error::new(
                    p,
                    format!(
                        "expected ';' or '{{' after command '{name}', found {}",
                        t.describe()
                    ),
                ));
            }
            None => {
                return Err(Error::new(
                    self.eof_pos(),
                    format!("expected ';' or '{{' after command '{name}', found end of script"),
                ));
            }
        };
        Ok(RawCommand {
            name,
            pos,
            args,
            tests,
            block,
        })
    }

    fn arguments(&mut self, depth: usize) -> Result<(Vec<RawArg>, Vec<RawTest>), Error> {
        let mut args = Vec::new();
        loop {
            match self.peek()? {
                Some((Tok::Str(_), _)) => {
                    let Some((Tok::Str(s), pos)) = self.next()? else {
                        unreachable!()
                    };
                    args.push(RawArg::Strings { list: vec![s], pos });
                }
                Some((Tok::LBracket, _)) => {
                    let (list, pos) = self.string_list()?;
                    args.push(RawArg::Strings { list, pos });
                }
                Some((Tok::Num(n), p)) => {
                    let a = RawArg::Num(*n, *p);
                    self.next()?;
                    args.push(a);
                }
                Some((Tok::Tag(t), p)) => {
                    let a = RawArg::Tag(t.clone(), *p);
                    self.next()?;
                    args.push(a);
                }
                _ => break,
            }
        }
        let mut tests = Vec::new();
        match self.peek()? {
            Some((Tok::Ident(_), _)) => tests.push(self.test(depth + 1)?),
            Some((Tok::LParen, p)) => {
                let p = *p;
                if depth + 1 > MAX_NESTING {
                    return Err(Error::new(p, "tests nested too deeply"));
                }
                self.next()?;
                loop {
                    match self.peek()? {
                        Some((Tok::Ident(_), _)) => tests.push(self.test(depth + 1)?),
                        _ => return Err(self.unexpected("a test")),
                    }
                    if tests.len() > MAX_LIST {
                        return Err(Error::new(p, "too many tests in a test list"));
                    }
                    match self.next()? {
                        Some((Tok::Comma, _)) => continue,
                        Some((Tok::RParen, _)) => break,
                        Some((t, p)) => {
                            return Err(Error::new(
                                p,
                                format!("expected ',' or ')' in test list, found {}", t.describe()),
                            ));
                        }
                        None => return Err(Error::new(self.eof_pos(), "unterminated test list")),
                    }
                }
            }
            _ => {}
        }
        Ok((args, tests))
    }

    fn unexpected(&mut self, what: &str) -> Error {
        match self.peek() {
            Ok(Some((t, p))) => Error::new(*p, format!("expected {what}, found {}", t.describe())),
            Ok(None) => Error::new(
                self.eof_pos(),
                format!("expected {what}, found end of script"),
            ),
            Err(e) => e,
        }
    }

    fn test(&mut self, depth: usize) -> Result<RawTest, Error> {
        let Some((Tok::Ident(name), pos)) = self.next()? else {
            unreachable!("test() is called on an identifier")
        };
        if depth > MAX_NESTING {
            return Err(Error::new(pos, "tests nested too deeply"));
        }
        let (args, tests) = self.arguments(depth)?;
        Ok(RawTest {
            name,
            pos,
            args,
            tests,
        })
    }

    fn string_list(&mut self) -> Result<(Vec<String>, Pos), Error> {
        let Some((Tok::LBracket, pos)) = self.next()? else {
            unreachable!()
        };
        let mut list = Vec::new();
        loop {
            match self.next()? {
                Some((Tok::Str(s), _)) => list.push(s),
                Some((t, p)) => {
                    return Err(Error::new(
                        p,
                        format!("expected a string in string list, found {}", t.describe()),
                    ));
                }
                None => return Err(Error::new(self.eof_pos(), "unterminated string list")),
            }
            if list.len() > MAX_LIST {
                return Err(Error::new(pos, "string list too long"));
            }
            match self.next()? {
                Some((Tok::Comma, _)) => {}
                Some((Tok::RBracket, _)) => return Ok((list, pos)),
                Some((t, p)) => {
                    return Err(Error::new(
                        p,
                        format!("expected ',' or ']' in string list, found {}", t.describe()),
                    ));
                }
                None => return Err(Error::new(self.eof_pos(), "unterminated string list")),
            }
        }
    }
}

/// Parses a script into its generic command tree.
pub fn parse(src: &str) -> Result<Vec<RawCommand>, Error> {
    if src.len() > MAX_SCRIPT {
        return Err(Error::new(Pos { line: 1, col: 1 }, "script too large"));
    }
    let mut p = Parser {
        lex: Lexer {
            s: src.as_bytes(),
            i: 0,
            line: 1,
            col: 1,
        },
        peeked: None,
    };
    p.commands(0, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5228 2.4.2: escapes and multi-line strings with dot-stuffing.
    #[test]
    fn strings() {
        let c = parse("x \"a\\\"b\\\\c\\d\" text:\r\n..x\r\ny\r\n.\r\n;").unwrap();
        let RawArg::Strings { list, .. } = &c[0].args[0] else {
            panic!()
        };
        assert_eq!(list, &["a\"b\\cd"]);
        let RawArg::Strings { list, .. } = &c[0].args[1] else {
            panic!()
        };
        assert_eq!(list, &[".x\r\ny\r\n"]);
    }

    /// RFC 5228 2.4.1: quantifiers K, M, G.
    #[test]
    fn numbers() {
        let c = parse("x 1K 2M 3G 7;").unwrap();
        let n: Vec<u64> = c[0]
            .args
            .iter()
            .map(|a| match a {
                RawArg::Num(n, _) => *n,
                _ => panic!(),
            })
            .collect();
        assert_eq!(n, [1024, 2 << 20, 3 << 30, 7]);
        assert!(parse("x 99999999999999999999;").is_err());
    }

    /// Errors carry line:column.
    #[test]
    fn positions() {
        let e = parse("keep;\n  x \"a\"\n").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (3, 1));
        let e = parse("if true {\n  keep;\n").unwrap_err();
        assert_eq!(e.pos.line, 3);
        let e = parse("keep;\n/* open").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (2, 1));
        let e = parse("keep;\n   @").unwrap_err();
        assert_eq!((e.pos.line, e.pos.col), (2, 4));
    }

    /// Nesting is bounded.
    #[test]
    fn nesting_bounded() {
        let deep = "if true {".repeat(100) + &"}".repeat(100);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let deep = "if ".to_string() + &"not ".repeat(100) + "true {}";
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
        let deep = "if ".to_string() + &"anyof(".repeat(100) + "true" + &")".repeat(100) + "{}";
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }
}
