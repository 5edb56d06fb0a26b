//! Writing IMAP response syntax: strings, flag lists, dates.
//!
//! Commands are parsed with imap-codec; responses are written here because
//! FETCH data is rendered straight from message bytes (sections, partial
//! ranges, literals) and a thin writer keeps that a copy rather than a
//! conversion into imap-types values that would be encoded again.

use storage::Flags;

/// Appends `s` as an IMAP string: quoted when that is allowed (7-bit, no
/// CR/LF/NUL, short), otherwise as a literal.
pub fn string(out: &mut Vec<u8>, s: &[u8]) {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b != 0 && b != b'\r' && b != b'\n' && b < 0x80);
    if quotable {
        quoted(out, s);
    } else {
        literal(out, s);
    }
}

/// Appends `s` between double quotes, `"` and `\` escaped (the caller
/// knows it may be quoted).
pub fn quoted(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
}

pub fn literal(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s);
}

/// `NIL` or a string.
pub fn nstring(out: &mut Vec<u8>, s: Option<&[u8]>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// A mailbox name as an astring-compatible string (always quoted or
/// literal, which every client accepts).
pub fn mailbox(out: &mut Vec<u8>, name: &str) {
    string(out, name.as_bytes());
}

/// `(\Seen $Label ...)`.
pub fn flag_list(out: &mut Vec<u8>, flags: Flags, keywords: &[String]) {
    message_flags(out, flags, false, keywords)
}

/// A message's `(\Seen \Recent $Label ...)`: `\Recent` is a session
/// property (RFC 3501 2.3.2), not stored with the record.
pub fn message_flags(out: &mut Vec<u8>, flags: Flags, recent: bool, keywords: &[String]) {
    out.push(b'(');
    let mut first = true;
    let recent = recent.then_some("\\Recent");
    for n in flags
        .intersect(Flags::SYSTEM)
        .names()
        .into_iter()
        .chain(recent)
    {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(n.as_bytes());
    }
    for k in keywords {
        if !first {
            out.push(b' ');
        }
        first = false;
        out.extend_from_slice(k.as_bytes());
    }
    out.push(b')');
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (Howard Hinnant's civil-from-days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `"17-Jul-1996 02:44:25 -0700"`: INTERNALDATE shown in its own zone
/// (`zone` minutes east of UTC), as the APPEND that set it gave it.
pub fn internal_date(out: &mut Vec<u8>, unix: i64, zone: i16) {
    let local = unix + zone as i64 * 60;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    let z = zone.unsigned_abs();
    out.extend_from_slice(
        format!(
            "\"{:02}-{}-{:04} {:02}:{:02}:{:02} {}{:02}{:02}\"",
            d,
            MONTHS[m as usize - 1],
            y,
            secs / 3600,
            secs % 3600 / 60,
            secs % 60,
            if zone < 0 { '-' } else { '+' },
            z / 60,
            z % 60
        )
        .as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_quote_or_literal() {
        let mut o = Vec::new();
        string(&mut o, b"a \"b\" \\c");
        assert_eq!(o, b"\"a \\\"b\\\" \\\\c\"");
        o.clear();
        string(&mut o, "caf\u{e9}".as_bytes());
        assert_eq!(o, "{5}\r\ncaf\u{e9}".as_bytes());
    }

    #[test]
    fn dates_round_trip() {
        for days in [-1000, 0, 59, 60, 10_957, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        let mut o = Vec::new();
        internal_date(&mut o, 837_571_465, 0);
        assert_eq!(o, b"\"17-Jul-1996 02:44:25 +0000\"");
        // The same instant in the zone an APPEND gave (RFC 3501 6.3.11).
        o.clear();
        internal_date(&mut o, 837_571_465, -420);
        assert_eq!(o, b"\"16-Jul-1996 19:44:25 -0700\"");
        o.clear();
        internal_date(&mut o, 837_571_465, 330);
        assert_eq!(o, b"\"17-Jul-1996 08:14:25 +0530\"");
    }
}
