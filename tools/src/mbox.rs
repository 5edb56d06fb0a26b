//! mbox reading (mboxrd and mboxo) and writing (mboxrd).
//!
//! A message starts at a `From ` line that follows an empty line (or
//! starts the file) AND carries a parsable date: a body line such as
//! `From here on...` is never mistaken for a separator, quoted or not.
//! Flags travel in `Status:` (R = \Seen), `X-Status:` (A = \Answered,
//! F = \Flagged, T = \Draft, D = \Deleted) and keywords in `X-Keywords:`;
//! those headers are consumed on import and written on export, so a
//! round trip gives back the stored bytes. Stored messages use CRLF;
//! mbox files use LF (CRLF files are read as well).

use std::io::{BufRead, Write};

use storage::Flags;

use crate::date;

/// One message as it goes into or comes out of the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// CRLF line endings.
    pub bytes: Vec<u8>,
    pub flags: Flags,
    pub keywords: Vec<String>,
    pub internal_date: Option<i64>,
}

/// How `>From ` lines were quoted by the writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Quoting {
    /// Every `>*From ` line got one more `>`: remove one from each.
    Rd,
    /// Only `From ` lines were quoted: only `>From ` loses its `>`.
    O,
}

/// Headers that carry mbox-level state, not message content.
const STATE_HEADERS: [&str; 3] = ["status", "x-status", "x-keywords"];

/// If `line` is a `From ` separator line, its date (unix seconds).
pub fn from_line_date(line: &[u8]) -> Option<i64> {
    let rest = line.strip_prefix(b"From ")?;
    let s = std::str::from_utf8(rest).ok()?;
    let s = s.trim_start();
    let (_sender, date) = s.split_once(char::is_whitespace)?;
    date::parse_asctime(date)
}

/// Reads every message of an mbox stream, calling `each` per message
/// (one message in memory at a time).
pub fn read(
    src: impl BufRead,
    quoting: Quoting,
    mut each: impl FnMut(Message) -> Result<(), String>,
) -> Result<usize, String> {
    let mut src = src;
    let mut count = 0;
    let mut cur: Option<(Option<i64>, Vec<Vec<u8>>)> = None;
    let mut prev_blank = true;
    let mut lineno = 0usize;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = src
            .read_until(b'\n', &mut raw)
            .map_err(|e| format!("read mbox: {e}"))?;
        if n == 0 {
            break;
        }
        lineno += 1;
        let mut line = raw.as_slice();
        if let Some(l) = line.strip_suffix(b"\n") {
            line = l.strip_suffix(b"\r").unwrap_or(l);
        }
        if prev_blank && let Some(d) = from_line_date(line) {
            if let Some((date, lines)) = cur.take() {
                each(finish(date, lines, quoting))?;
                count += 1;
            }
            cur = Some((Some(d), Vec::new()));
            prev_blank = false;
            continue;
        }
        prev_blank = line.is_empty();
        match &mut cur {
            Some((_, lines)) => lines.push(line.to_vec()),
            None if line.is_empty() => {}
            None => {
                return Err(format!(
                    "line {lineno}: not an mbox (no `From ` line before text)"
                ));
            }
        }
    }
    if let Some((date, lines)) = cur.take() {
        each(finish(date, lines, quoting))?;
        count += 1;
    }
    Ok(count)
}

pub(crate) fn unquote(line: &[u8], quoting: Quoting) -> &[u8] {
    let gts = line.iter().take_while(|b| **b == b'>').count();
    let quoted = gts > 0 && line[gts..].starts_with(b"From ");
    match quoting {
        Quoting::Rd if quoted => &line[1..],
        Quoting::O if quoted && gts == 1 => &line[1..],
        _ => line,
    }
}

fn header_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|b| *b == b':')?;
    let name = std::str::from_utf8(&line[..colon]).ok()?;
    (!name.is_empty() && !name.contains(' ')).then(|| name.to_ascii_lowercase())
}

fn finish(date: Option<i64>, mut lines: Vec<Vec<u8>>, quoting: Quoting) -> Message {
    // The empty line before the next `From ` belongs to the mbox.
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut flags = Flags::empty();
    let mut keywords = Vec::new();
    let mut out = Vec::new();
    let mut in_header = true;
    let mut skipping = false;
    for line in &lines {
        let line = unquote(line, quoting);
        if in_header {
            if line.is_empty() {
                in_header = false;
            } else if line[0] == b' ' || line[0] == b'\t' {
                if skipping {
                    continue;
                }
            } else {
                skipping = false;
                if let Some(name) = header_name(line)
                    && STATE_HEADERS.contains(&name.as_str())
                {
                    skipping = true;
                    let value = String::from_utf8_lossy(&line[name.len() + 1..]).to_string();
                    apply_state(&name, &value, &mut flags, &mut keywords);
                    continue;
                }
            }
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    Message {
        bytes: out,
        flags,
        keywords,
        internal_date: date,
    }
}

fn apply_state(name: &str, value: &str, flags: &mut Flags, keywords: &mut Vec<String>) {
    let value = value.trim();
    match name {
        "status" => {
            if value.contains('R') {
                *flags = flags.union(Flags::SEEN);
            }
        }
        "x-status" => {
            for (c, f) in [
                ('A', Flags::ANSWERED),
                ('F', Flags::FLAGGED),
                ('T', Flags::DRAFT),
                ('D', Flags::DELETED),
            ] {
                if value.contains(c) {
                    *flags = flags.union(f);
                }
            }
        }
        _ => {
            for k in value.split([' ', ',', '\t']).filter(|k| !k.is_empty()) {
                if !keywords.iter().any(|x: &String| x.eq_ignore_ascii_case(k)) {
                    keywords.push(k.to_string());
                }
            }
        }
    }
}

/// Splits stored bytes into lines without their CRLF/LF terminator.
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = bytes
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    if bytes.ends_with(b"\n") {
        v.pop();
    }
    v
}

/// Appends one message to an mboxrd stream.
pub fn write(out: &mut impl Write, m: &Message) -> std::io::Result<()> {
    let date = m.internal_date.unwrap_or(0);
    writeln!(out, "From MAILER-DAEMON {}", date::format_asctime(date))?;
    let ls = lines(&m.bytes);
    let header_end = ls.iter().position(|l| l.is_empty()).unwrap_or(ls.len());
    let mut state = Vec::new();
    state.push(format!(
        "Status: {}O",
        if m.flags.contains(Flags::SEEN) {
            "R"
        } else {
            ""
        }
    ));
    let xs: String = [
        (Flags::ANSWERED, 'A'),
        (Flags::FLAGGED, 'F'),
        (Flags::DRAFT, 'T'),
        (Flags::DELETED, 'D'),
    ]
    .iter()
    .filter(|(f, _)| m.flags.contains(*f))
    .map(|(_, c)| *c)
    .collect();
    if !xs.is_empty() {
        state.push(format!("X-Status: {xs}"));
    }
    if !m.keywords.is_empty() {
        state.push(format!("X-Keywords: {}", m.keywords.join(" ")));
    }
    for (i, l) in ls.iter().enumerate() {
        if i == header_end {
            for s in &state {
                writeln!(out, "{s}")?;
            }
        }
        let gts = l.iter().take_while(|b| **b == b'>').count();
        if l[gts..].starts_with(b"From ") {
            out.write_all(b">")?;
        }
        out.write_all(l)?;
        out.write_all(b"\n")?;
    }
    if header_end == ls.len() {
        for s in &state {
            writeln!(out, "{s}")?;
        }
    }
    out.write_all(b"\n")
}

/// LF to CRLF; CRLF stays, so converting twice changes nothing.
pub fn to_crlf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len() + b.len() / 40);
    let mut prev = 0u8;
    for &c in b {
        if c == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// CRLF to LF (other bytes unchanged).
pub fn to_lf(b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\r' && b.get(i + 1) == Some(&b'\n') {
            i += 1;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &[u8], q: Quoting) -> Vec<Message> {
        let mut v = Vec::new();
        read(text, q, |m| {
            v.push(m);
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn separators_need_a_blank_line_and_a_date() {
        let text = b"From a@b Tue Jan  2 15:04:05 2024\nSubject: x\nStatus: RO\nX-Status: AF\n\nFrom here on, nothing.\n>From quoted\n>>From twice\n\nFrom c@d Wed Jan  3 00:00:00 2024\nSubject: y\n\nbody\n";
        let rd = parse(text, Quoting::Rd);
        assert_eq!(rd.len(), 2);
        assert_eq!(
            rd[0].bytes,
            b"Subject: x\r\n\r\nFrom here on, nothing.\r\nFrom quoted\r\n>From twice\r\n".to_vec()
        );
        assert_eq!(
            rd[0].flags,
            Flags::SEEN.union(Flags::ANSWERED).union(Flags::FLAGGED)
        );
        assert_eq!(rd[0].internal_date, Some(1_704_207_845));
        let o = parse(text, Quoting::O);
        assert!(o[0].bytes.ends_with(b"From quoted\r\n>>From twice\r\n"));
    }

    #[test]
    fn write_then_read_round_trips() {
        let m = Message {
            bytes: b"Subject: q\r\nX-Other: 1\r\n\r\nFrom me\r\n>From you\r\n\r\nend\r\n".to_vec(),
            flags: Flags::SEEN.union(Flags::DELETED).union(Flags::DRAFT),
            keywords: vec!["$Junk".into(), "work".into()],
            internal_date: Some(1_700_000_000),
        };
        let mut out = Vec::new();
        write(&mut out, &m).unwrap();
        write(&mut out, &m).unwrap();
        let back = parse(&out, Quoting::Rd);
        assert_eq!(back, vec![m.clone(), m]);
    }

    #[test]
    fn line_ending_conversions() {
        assert_eq!(to_crlf(b"a\nb\r\nc"), b"a\r\nb\r\nc".to_vec());
        assert_eq!(to_lf(b"a\r\nb\rc\n"), b"a\nb\rc\n".to_vec());
    }
}
