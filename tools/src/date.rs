//! The two date formats the tools meet: the asctime-style date of an mbox
//! `From ` line (UTC, as written by most MTAs) and the RFC 5322 `Date:`
//! header. Unix seconds everywhere; no time-zone database is needed.

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month 1-12, day 1-31) of days since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

fn month(s: &str) -> Option<u32> {
    MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(s))
        .map(|i| i as u32 + 1)
}

fn hms(s: &str) -> Option<i64> {
    let mut it = s.split(':');
    let h: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let sec: i64 = it.next().map_or(Some(0), |x| x.parse().ok())?;
    (h < 24 && m < 60 && sec <= 60 && it.next().is_none()).then_some(h * 3600 + m * 60 + sec)
}

/// Formats unix seconds as an mbox `From ` line date (UTC):
/// `Tue Jan  2 15:04:05 2024`.
pub fn format_asctime(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{} {} {:>2} {:02}:{:02}:{:02} {}",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        y
    )
}

/// Parses the date part of a `From ` line: `Www Mmm dd hh:mm:ss yyyy`,
/// also with a numeric zone before or after the year. Taken as UTC when
/// no zone is given.
pub fn parse_asctime(s: &str) -> Option<i64> {
    let toks: Vec<&str> = s.split_whitespace().collect();
    let mi = toks
        .iter()
        .position(|t| t.len() == 3 && month(t).is_some())?;
    let m = month(toks[mi])?;
    let d: u32 = toks.get(mi + 1)?.parse().ok()?;
    let time = hms(toks.get(mi + 2)?)?;
    let mut year = None;
    let mut zone = 0;
    for t in toks.iter().skip(mi + 3) {
        if let Some(z) = parse_zone(t) {
            zone = z;
        } else if t.len() == 4 && t.bytes().all(|b| b.is_ascii_digit()) {
            year = t.parse().ok();
        } else {
            return None;
        }
    }
    if !(1..=31).contains(&d) {
        return None;
    }
    Some(days_from_civil(year?, m, d) * 86_400 + time - zone)
}

/// `+hhmm` / `-hhmm` as seconds east of UTC.
fn parse_zone(t: &str) -> Option<i64> {
    let (sign, digits) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    Some(sign * ((v / 100) * 3600 + (v % 100) * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asctime_round_trips() {
        for t in [0, 1_700_000_000, 1_704_207_845, 951_782_400, -86_400] {
            assert_eq!(parse_asctime(&format_asctime(t)), Some(t), "{t}");
        }
        assert_eq!(format_asctime(1_704_207_845), "Tue Jan  2 15:04:05 2024");
        assert_eq!(
            parse_asctime("Tue Jan 02 15:04:05 +0100 2024"),
            Some(1_704_207_845 - 3600)
        );
        assert_eq!(parse_asctime("the desk of the editor"), None);
    }
}
