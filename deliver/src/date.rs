//! Lenient RFC 5322 `Date:` parsing, only for the index's sent date (IMAP
//! SEARCH SENTBEFORE and friends). An unparsable date is stored as 0,
//! never a reason to refuse mail.

/// Parses `[Day,] DD Mon YYYY HH:MM[:SS] [zone]` into Unix seconds.
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
    // RFC 5322 4.3: two-digit years 00-49 are 20xx, 50-99 are 19xx.
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
    if !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let offset = t.get(4).and_then(|z| zone(z)).unwrap_or(0);
    Some(days_from_civil(year, month, day) * 86400 + h * 3600 + m * 60 + sec - offset)
}

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
    use super::parse;

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
    }

    #[test]
    fn garbage_is_none() {
        assert_eq!(parse(""), None);
        assert_eq!(parse("yesterday"), None);
        assert_eq!(parse("Sun, 99 Nov 2026 19:05:09 +0000"), None);
        assert_eq!(parse("Sun, 22 Foo 2026 19:05:09 +0000"), None);
    }
}
