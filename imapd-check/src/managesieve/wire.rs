//! The ManageSieve wire format (RFC 5804 section 4): a command is an atom
//! followed by strings (quoted, at most 1024 octets, or literals) and
//! numbers, ending in CRLF; responses are OK / NO / BYE with an optional
//! response code and a human-readable string.
//!
//! Literals from the client may be `{n+}` (RFC 5804's literal-c2s) or
//! `{n}`: ManageSieve has no continuation for literals, so both are
//! followed by their octets at once (Pigeonhole accepts both the same
//! way). The server sends `{n}` (literal-s2c) for a string a quoted
//! string cannot carry. Lines, the command's lines together and its
//! literals are all bounded before anything is buffered.

use std::io;

use crate::imap::io::{Input, crlf, literal_announcement};
use crate::imap::wire as imap_wire;

/// Longest quoted string (RFC 5804 section 4, erratum 2655: octets).
pub const MAX_QUOTED: usize = 1024;
/// Most arguments of one command (PUTSCRIPT has two, RENAMESCRIPT two,
/// AUTHENTICATE two).
const MAX_ARGS: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Str(Vec<u8>),
    Num(u64),
}

/// Bounds for reading one command.
#[derive(Clone, Copy, Debug)]
pub struct ReadLimits {
    pub line: usize,
    pub command_lines: usize,
    /// All literal octets of one command.
    pub literal: u64,
    /// A literal over `literal` up to this size is read and dropped so
    /// the session can go on; a bigger one ends it.
    pub swallow: u64,
}

pub enum Read {
    Command {
        name: String,
        args: Vec<Arg>,
    },
    /// Bad syntax: the whole command has been consumed.
    Bad(String),
    /// A literal over the limit; `close` when it could not be skipped.
    TooBig {
        name: String,
        close: bool,
    },
    /// A line or the command's lines over the limit: where the command
    /// ends is unknown, so the connection ends.
    TooLong,
    Eof,
}

fn is_atom_char(b: u8) -> bool {
    b > b' ' && b != 0x7f && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\')
}

/// Parses the arguments of `line` (CRLF included) from `at`. Returns the
/// position of a literal announcement at the line's end, if there is one.
fn parse_args(line: &[u8], mut at: usize, args: &mut Vec<Arg>) -> Result<Option<()>, String> {
    let end = line.len() - 2;
    loop {
        if at == end {
            return Ok(None);
        }
        if line[at] != b' ' {
            return Err("expected a space between arguments".into());
        }
        at += 1;
        if args.len() >= MAX_ARGS {
            return Err("too many arguments".into());
        }
        match line.get(at) {
            Some(b'"') => {
                let mut s = Vec::new();
                at += 1;
                loop {
                    match line.get(at) {
                        None | Some(b'\r' | b'\n') => return Err("unterminated string".into()),
                        Some(b'"') => break,
                        Some(b'\\') => match line.get(at + 1) {
                            Some(c @ (b'"' | b'\\')) => {
                                s.push(*c);
                                at += 2;
                            }
                            _ => return Err("bad escape in a quoted string".into()),
                        },
                        Some(0) => return Err("NUL in a quoted string".into()),
                        Some(c) => {
                            s.push(*c);
                            at += 1;
                        }
                    }
                    if s.len() > MAX_QUOTED {
                        return Err(format!("quoted string longer than {MAX_QUOTED} octets"));
                    }
                }
                at += 1;
                if std::str::from_utf8(&s).is_err() {
                    return Err("quoted string is not UTF-8".into());
                }
                args.push(Arg::Str(s));
            }
            Some(b'{') => {
                // Only valid as the last thing on the line: `{n}` or `{n+}`.
                let inner = line[at + 1..end]
                    .strip_suffix(b"}")
                    .map(|i| i.strip_suffix(b"+").unwrap_or(i));
                match inner {
                    Some(d)
                        if !d.is_empty() && d.len() <= 19 && d.iter().all(u8::is_ascii_digit) =>
                    {
                        return Ok(Some(()));
                    }
                    _ => return Err("bad literal".into()),
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = at;
                while line.get(at).is_some_and(u8::is_ascii_digit) {
                    at += 1;
                }
                let n = std::str::from_utf8(&line[start..at])
                    .ok()
                    .and_then(|d| d.parse().ok())
                    .ok_or("number too large")?;
                args.push(Arg::Num(n));
            }
            _ => return Err("expected a string or a number".into()),
        }
    }
}

/// Reads one command from `input`.
pub fn read_command(input: &mut Input, lim: &ReadLimits) -> io::Result<Read> {
    let line = match input.read_line(lim.line) {
        Ok(Some(l)) => crlf(l),
        Ok(None) => return Ok(Read::Eof),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Read::TooLong),
        Err(e) => return Err(e),
    };
    let name_end = line
        .iter()
        .position(|&b| !is_atom_char(b))
        .unwrap_or(line.len());
    let name = String::from_utf8_lossy(&line[..name_end]).to_ascii_uppercase();
    match read_rest(input, line, name_end, name, lim)? {
        Read::Command { name, .. } if name.is_empty() => Ok(Read::Bad("expected a command".into())),
        r => Ok(r),
    }
}

/// Reads a client's SASL response (RFC 5804 2.1): one string alone on a
/// line, quoted or a literal. Given as a `Command` with an empty name.
pub fn read_sasl_response(input: &mut Input, lim: &ReadLimits) -> io::Result<Read> {
    let line = match input.read_line(lim.line) {
        Ok(Some(l)) => crlf(l),
        Ok(None) => return Ok(Read::Eof),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Read::TooLong),
        Err(e) => return Err(e),
    };
    let mut spaced = b" ".to_vec();
    spaced.extend_from_slice(&line);
    read_rest(input, spaced, 0, String::new(), lim)
}

/// The arguments of a command from `at` in its first `line` on, with
/// the literals and further lines they bring.
fn read_rest(
    input: &mut Input,
    mut line: Vec<u8>,
    mut at: usize,
    name: String,
    lim: &ReadLimits,
) -> io::Result<Read> {
    let mut args = Vec::new();
    let mut total_lines = line.len();
    let mut total_literal = 0u64;
    let mut error = None;
    loop {
        let lit = if error.is_none() {
            match parse_args(&line, at, &mut args) {
                Ok(l) => l,
                Err(e) => {
                    error = Some(e);
                    None
                }
            }
        } else {
            None
        };
        // After a syntax error, literals announced on the line are still
        // on their way: skip them to find the command's end.
        let ann = literal_announcement(&line);
        let Some((n, _sync)) = ann.filter(|_| lit.is_some() || error.is_some()) else {
            break;
        };
        total_literal = total_literal.saturating_add(n);
        if total_literal > lim.literal || error.is_some() {
            if n > lim.swallow {
                return Ok(Read::TooBig { name, close: true });
            }
            if !input.skip(n)? {
                return Ok(Read::Eof);
            }
            if error.is_none() {
                // The rest of the command is dropped with the literal.
                if input.read_line(lim.line).is_err() {
                    return Ok(Read::TooLong);
                }
                return Ok(Read::TooBig { name, close: false });
            }
        } else {
            let mut data = Vec::new();
            if !input.read_into(&mut data, n as usize)? {
                return Ok(Read::Eof);
            }
            args.push(Arg::Str(data));
        }
        line = match input.read_line(lim.line) {
            Ok(Some(l)) => crlf(l),
            Ok(None) => return Ok(Read::Eof),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(Read::TooLong),
            Err(e) => return Err(e),
        };
        total_lines += line.len();
        if total_lines > lim.command_lines {
            return Ok(Read::TooLong);
        }
        at = 0;
    }
    if let Some(e) = error {
        return Ok(Read::Bad(e));
    }
    Ok(Read::Command { name, args })
}

/// A string as the server sends it: quoted when it can be, else a
/// literal `{n}`.
pub fn string(s: &[u8]) -> Vec<u8> {
    let quotable = s.len() <= MAX_QUOTED
        && std::str::from_utf8(s).is_ok()
        && !s.iter().any(|&b| matches!(b, 0 | b'\r' | b'\n'));
    let mut out = Vec::with_capacity(s.len() + 16);
    if quotable {
        imap_wire::quoted(&mut out, s);
    } else {
        imap_wire::literal(&mut out, s);
    }
    out
}

/// `KIND [(CODE)] "text"` CRLF; `code` is sent as is (it may carry its
/// own arguments, as `TAG "x"` does).
pub fn response(kind: &str, code: Option<&str>, text: &str) -> Vec<u8> {
    let mut out = kind.as_bytes().to_vec();
    if let Some(c) = code {
        out.extend_from_slice(format!(" ({c})").as_bytes());
    }
    if !text.is_empty() {
        out.push(b' ');
        out.extend_from_slice(&string(text.as_bytes()));
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Result<Vec<Arg>, String> {
        let mut a = Vec::new();
        parse_args(line.as_bytes(), 0, &mut a).map(|_| a)
    }

    #[test]
    fn arguments_and_strings() {
        assert_eq!(
            args(" \"a\\\"b\" 12\r\n").unwrap(),
            vec![Arg::Str(b"a\"b".to_vec()), Arg::Num(12)]
        );
        assert!(args(" \"a\\nb\"\r\n").is_err());
        assert!(args(" atom\r\n").is_err());
        assert!(args("\"x\"\r\n").is_err());
        let mut a = Vec::new();
        assert_eq!(parse_args(b" \"n\" {3+}\r\n", 0, &mut a), Ok(Some(())));
        assert!(args(" {3+} \"x\"\r\n").is_err());
        assert_eq!(string(b"a\"b"), b"\"a\\\"b\"");
        assert_eq!(string(b"a\r\nb"), b"{4}\r\na\r\nb");
        assert_eq!(
            response("NO", Some("NONEXISTENT"), "No such script"),
            b"NO (NONEXISTENT) \"No such script\"\r\n"
        );
    }
}
