//! The sent date of a message: its `Date:` header field as Unix seconds,
//! what a record keeps in `sent_date` (FORMAT.md §2) for IMAP's SENTBEFORE
//! and friends and SORT (DATE).
//!
//! Every way in (delivery, IMAP APPEND, imports) reads it here, so a
//! message gets the same sent date however it arrived. The parsing is
//! lenient in the ways mail in the wild needs (RFC 5322 section 4.3's
//! obsolete forms, no seconds, a missing or unknown zone taken as UTC, as
//! Dovecot does); a field it cannot read gives `None`, which the record
//! stores as 0 ("use INTERNALDATE", RFC 5256 section 2.2). A date is never
//! a reason to refuse a message.

/// How much of a message is looked through for its header block's `Date:`
/// field: a longer header block is read this far only.
pub const MAX_HEADER_SCAN: usize = 256 * 1024;

/// The sent date of a message: its first `Date:` field (folded lines
/// joined), parsed by [`parse`]. Only the header block is read, at most
/// [`MAX_HEADER_SCAN`] bytes of it.
pub fn of_message(bytes: &[u8]) -> Option<i64> {
    let bytes = &bytes[..bytes.len().min(MAX_HEADER_SCAN)];
    let mut value: Option<Vec<u8>> = None;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let body = line.strip_suffix(b"\n").unwrap_or(line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body.is_empty() {
            break;
        }
        if let Some(v) = &mut value {
            if body[0] == b' ' || body[0] == b'\t' {
                v.extend_from_slice(body);
                continue;
            }
            break;
        }
        if body.len() >= 5 && body[..5].eq_ignore_ascii_case(b"date:") {
            value = Some(body[5..].to_vec());
        }
    }
    parse(&String::from_utf8_lossy(&value?))
}

/// Parses a `Date:` field's value, `[Day,] DD Mon YYYY HH:MM[:SS] [zone]`
/// with comments anywhere, into Unix seconds.
///
/// - Two-digit years are 20xx below 50 and 19xx from 50, three-digit
///   ones 1900 + n (RFC 5322 section 4.3).
/// - The zone is `+hhmm`/`-hhmm` or one of RFC 5322's names (UT, GMT,
///   EST, EDT, CST, CDT, MST, MDT, PST, PDT); anything else, military
///   letters included (RFC 5322 section 4.3 says to take those as
///   `-0000`), and a missing zone are taken as UTC.
/// - A month is known by its first three letters.
pub fn parse(s: &str) -> Option<i64> {
    let s = strip_comments(s);
    let mut t: Vec<&str> = s
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
        .collect();
    if t.first()?.chars().next()?.is_ascii_alphabetic() {
        t.remove(0);
    }
    if t.len() < 4 {
        return None;
    }
    let day: i64 = t[0].parse().ok()?;
    let month = month(t[1])?;
    let mut year: i64 = t[2].parse().ok()?;
    if t[2].len() <= 2 {
        year += if year < 50 { 2000 } else { 1900 };
    } else if t[2].len() == 3 {
        year += 1900;
    }
    let mut hms = t[3].split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = match hms.next() {
        Some(x) => x.parse().ok()?,
        None => 0,
    };
    if hms.next().is_some() || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let offset = t.get(4).and_then(|z| zone(z)).unwrap_or(0);
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

/// The text without RFC 5322 comments (nested parentheses).
fn strip_comments(s: &str) -> String {
    let mut depth = 0u32;
    s.chars()
        .filter(|&c| match c {
            '(' => {
                depth += 1;
                false
            }
            ')' => {
                depth = depth.saturating_sub(1);
                false
            }
            _ => depth == 0,
        })
        .collect()
}

fn month(m: &str) -> Option<i64> {
    const NAMES: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let m = m.get(..3)?.to_ascii_lowercase();
    NAMES.iter().position(|n| *n == m).map(|i| i as i64 + 1)
}

/// Zone offset east of UTC in seconds.
fn zone(z: &str) -> Option<i64> {
    let b = z.as_bytes();
    if b.len() == 5 && (b[0] == b'+' || b[0] == b'-') {
        let v: i64 = z[1..].parse().ok()?;
        let secs = (v / 100) * 3600 + (v % 100) * 60;
        return Some(if b[0] == b'-' { -secs } else { secs });
    }
    let hours = match z.to_ascii_uppercase().as_str() {
        "UT" | "UTC" | "GMT" | "Z" => 0,
        "EDT" => -4,
        "EST" | "CDT" => -5,
        "CST" | "MDT" => -6,
        "MST" | "PDT" => -7,
        "PST" => -8,
        _ => return None,
    };
    Some(hours * 3600)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::{of_message, parse};

    #[test]
    fn common_forms() {
        assert_eq!(parse("Thu, 01 Jan 1970 00:00:00 +0000"), Some(0));
        assert_eq!(parse("Sun, 22 Nov 2026 19:05:09 +0100"), Some(1795370709));
        assert_eq!(parse("22 Nov 2026 18:05 GMT"), Some(1795370700));
        assert_eq!(
            parse("Sun, 22 Nov 2026 13:05:09 -0500 (EST)"),
            Some(1795370709)
        );
        assert_eq!(parse("Mon, 1 Mar 99 00:00:00 +0000"), Some(920246400));
        assert_eq!(parse("Tue, 2 Jan 2024 15:04:05 +0000"), Some(1_704_207_845));
        assert_eq!(
            parse("2 Jan 2024 16:04:05 +0100 (CET)"),
            Some(1_704_207_845)
        );
        assert_eq!(parse("Tue, 2 Jan 24 10:04:05 EST"), Some(1_704_207_845));
    }

    /// What mail in the wild has: no zone or an unknown one (UTC, as
    /// Dovecot), no seconds with a named zone, a full month name.
    #[test]
    fn lenient_forms() {
        assert_eq!(parse("Mon, 1 Jan 2007 10:00:00"), Some(1_167_645_600));
        assert_eq!(parse("Mon, 1 Jan 2007 10:00:00 XYZ"), Some(1_167_645_600));
        assert_eq!(parse("Mon, 1 Jan 2007 02:00 PST"), Some(1_167_645_600));
        assert_eq!(parse("1 January 2007 10:00:00 +0000"), Some(1_167_645_600));
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("garbage"), None);
        assert_eq!(parse("Sun, 99 Nov 2026 19:05:09 +0000"), None);
        assert_eq!(parse("Sun, 22 Foo 2026 19:05:09 +0000"), None);
        assert_eq!(parse("Sun, 22 Nov 2026 19:05:09:01 +0000"), None);
    }

    #[test]
    fn the_header_blocks_first_date_field() {
        let m = b"Subject: x\r\nDATE: Thu, 01 Jan 1970\r\n 00:00:10 +0000\r\nDate: Fri, 02 Jan 1970 00:00:00 +0000\r\n\r\nDate: 1 Jan 2000 00:00 +0000\r\n";
        assert_eq!(of_message(m), Some(10));
        assert_eq!(
            of_message(b"Subject: x\n\nDate: 1 Jan 2000 00:00 +0000\n"),
            None
        );
        assert_eq!(of_message(b""), None);
    }
}
