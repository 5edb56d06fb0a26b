//! Comparators (RFC 4790 as used by RFC 5228 2.7.3: i;octet,
//! i;ascii-casemap, i;ascii-numeric) and match types (:is, :contains,
//! :matches, RFC 5231 :value, the regex draft's :regex).
//!
//! `:matches` runs in O(pattern × text) time and bits, without
//! backtracking, and charges that to the run's budget before it starts.

use std::cmp::Ordering;

use crate::compile::{Comparator, MatchType, Relation};

/// Budget exhausted: the caller turns it into a runtime error.
#[derive(Debug)]
pub struct OverBudget;

/// Largest compiled regex (bytes of the regex crate's program).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub fn compile_regex(pat: &str, cmp: Comparator) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(pat)
        .case_insensitive(cmp == Comparator::AsciiCasemap)
        .unicode(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            e.to_string()
                .lines()
                .last()
                .unwrap_or("invalid")
                .trim()
                .to_string()
        })
}

fn fold(c: char, cmp: Comparator) -> char {
    if cmp == Comparator::AsciiCasemap {
        c.to_ascii_lowercase()
    } else {
        c
    }
}

/// i;ascii-numeric: the leading digits as a number; `None` is positive infinity.
fn numeric(s: &str) -> Option<&str> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    if end == 0 {
        return None;
    }
    let d = s[..end].trim_start_matches('0');
    Some(if d.is_empty() { "0" } else { d })
}

/// Orders two values under a comparator.
pub fn compare(a: &str, b: &str, cmp: Comparator) -> Ordering {
    match cmp {
        Comparator::Octet => a.as_bytes().cmp(b.as_bytes()),
        Comparator::AsciiCasemap => a
            .bytes()
            .map(|c| c.to_ascii_lowercase())
            .cmp(b.bytes().map(|c| c.to_ascii_lowercase())),
        Comparator::AsciiNumeric => match (numeric(a), numeric(b)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        },
    }
}

pub fn relation_holds(r: Relation, o: Ordering) -> bool {
    match r {
        Relation::Gt => o == Ordering::Greater,
        Relation::Ge => o != Ordering::Less,
        Relation::Lt => o == Ordering::Less,
        Relation::Le => o != Ordering::Greater,
        Relation::Eq => o == Ordering::Equal,
        Relation::Ne => o != Ordering::Equal,
    }
}

/// Matches one value against one key. `captures` receives the match
/// variables (${0}..) of a successful :matches or :regex.
pub fn matches(
    mt: MatchType,
    cmp: Comparator,
    value: &str,
    key: &str,
    captures: Option<&mut Vec<String>>,
    budget: &mut u64,
    regex: Option<&regex::Regex>,
) -> Result<bool, OverBudget> {
    charge(budget, (value.len() + key.len()) as u64 / 16 + 1)?;
    Ok(match mt {
        MatchType::Is => compare(value, key, cmp) == Ordering::Equal,
        MatchType::Value(r) => relation_holds(r, compare(value, key, cmp)),
        MatchType::Count(_) => unreachable!("count is matched by the caller"),
        MatchType::Contains => {
            charge(budget, value.len() as u64)?;
            match cmp {
                Comparator::Octet => value.contains(key),
                _ => contains_ascii_ci(value, key),
            }
        }
        MatchType::Matches => return wildcard(value, key, cmp, captures, budget),
        MatchType::Regex => {
            let Some(re) = regex else { return Ok(false) };
            charge(budget, value.len() as u64)?;
            match captures {
                Some(c) => match re.captures(value) {
                    Some(caps) => {
                        c.clear();
                        for i in 0..caps.len().min(10) {
                            c.push(caps.get(i).map_or("", |m| m.as_str()).to_string());
                        }
                        true
                    }
                    None => false,
                },
                None => re.is_match(value),
            }
        }
    })
}

/// `value` contains `key` under i;ascii-casemap. Short keys (what scripts
/// have) are compared in place, without lowercased copies; a long key
/// takes the linear-time substring search on copies.
fn contains_ascii_ci(value: &str, key: &str) -> bool {
    let (v, k) = (value.as_bytes(), key.as_bytes());
    if k.is_empty() {
        return true;
    }
    if k.len() > 64 {
        return value
            .to_ascii_lowercase()
            .contains(&key.to_ascii_lowercase());
    }
    let first = k[0].to_ascii_lowercase();
    v.windows(k.len())
        .any(|w| w[0].to_ascii_lowercase() == first && w.eq_ignore_ascii_case(k))
}

pub fn charge(budget: &mut u64, n: u64) -> Result<(), OverBudget> {
    if *budget < n {
        *budget = 0;
        return Err(OverBudget);
    }
    *budget -= n;
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Pat {
    Lit(char),
    One,
    Star,
}

/// `*` any sequence, `?` one character, `\` quotes the next one. Each
/// wildcard captures the shortest text that lets the rest match, left to
/// right (RFC 5229 3.2's example: "[*] *" on "[a] [b] c" gives "a").
fn wildcard(
    value: &str,
    key: &str,
    cmp: Comparator,
    captures: Option<&mut Vec<String>>,
    budget: &mut u64,
) -> Result<bool, OverBudget> {
    let mut pat = Vec::new();
    let mut it = key.chars();
    while let Some(c) = it.next() {
        pat.push(match c {
            '*' => {
                if pat.last() == Some(&Pat::Star) && captures.is_none() {
                    continue;
                }
                Pat::Star
            }
            '?' => Pat::One,
            '\\' => Pat::Lit(fold(it.next().unwrap_or('\\'), cmp)),
            c => Pat::Lit(fold(c, cmp)),
        });
    }
    let text: Vec<char> = value.chars().collect();
    let n = text.len();
    let p = pat.len();
    let words = (n + 1).div_ceil(64);
    // One unit per cell of the table below.
    charge(budget, (p as u64 + 1) * (n as u64 + 1))?;
    // reach[i][j]: pattern from element i matches text from char j to the end.
    let mut reach = vec![0u64; (p + 1) * words];
    let set = |r: &mut Vec<u64>, i: usize, j: usize| r[i * words + j / 64] |= 1 << (j % 64);
    let get = |r: &Vec<u64>, i: usize, j: usize| r[i * words + j / 64] & (1 << (j % 64)) != 0;
    set(&mut reach, p, n);
    for i in (0..p).rev() {
        for j in (0..=n).rev() {
            let ok = match pat[i] {
                Pat::Lit(c) => j < n && fold(text[j], cmp) == c && get(&reach, i + 1, j + 1),
                Pat::One => j < n && get(&reach, i + 1, j + 1),
                Pat::Star => get(&reach, i + 1, j) || (j < n && get(&reach, i, j + 1)),
            };
            if ok {
                set(&mut reach, i, j);
            }
        }
    }
    if !get(&reach, 0, 0) {
        return Ok(false);
    }
    if let Some(caps) = captures {
        caps.clear();
        caps.push(value.to_string());
        let mut j = 0;
        for (i, el) in pat.iter().enumerate() {
            match el {
                Pat::Lit(_) => j += 1,
                Pat::One => {
                    caps.push(text[j].to_string());
                    j += 1;
                }
                Pat::Star => {
                    let mut k = j;
                    while !get(&reach, i + 1, k) {
                        k += 1;
                    }
                    caps.push(text[j..k].iter().collect());
                    j = k;
                }
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4790 9.2 (i;ascii-casemap) :contains (RFC 5228 2.7.1): the
    /// in-place comparison agrees with comparing lowercased copies.
    #[test]
    fn contains_ascii_casemap() {
        let long = "Ab".repeat(40);
        let cases = [
            ("Re: [SPAM] offer", "[spam]"),
            ("Re: [SPAM] offer", "OFFER"),
            ("Re: [SPAM] offer", "offers"),
            ("x", ""),
            ("", "x"),
            ("ÄÖü invoice", "INVOICE"),
            ("ÄÖü", "äöü"),
            (long.as_str(), &long[2..]),
            (long.as_str(), "bA"),
        ];
        for (v, k) in cases {
            let want = v.to_ascii_lowercase().contains(&k.to_ascii_lowercase());
            assert_eq!(contains_ascii_ci(v, k), want, "{v:?} {k:?}");
            let mut b = u64::MAX;
            let got = matches(
                MatchType::Contains,
                Comparator::AsciiCasemap,
                v,
                k,
                None,
                &mut b,
                None,
            );
            assert_eq!(got.ok(), Some(want));
        }
    }

    fn m(v: &str, k: &str, cmp: Comparator) -> bool {
        let mut b = u64::MAX;
        matches(MatchType::Matches, cmp, v, k, None, &mut b, None).unwrap()
    }

    /// RFC 5228 2.7.1: wildcards, escapes, case folding.
    #[test]
    fn wildcards() {
        let c = Comparator::AsciiCasemap;
        assert!(m("Frobnitzm", "frob*", c));
        assert!(m("a?b", "a\\?b", c));
        assert!(!m("axb", "a\\?b", c));
        assert!(m("axb", "a?b", c));
        assert!(m("", "*", c));
        assert!(!m("", "?", c));
        assert!(m("héllo", "h?llo", c));
        assert!(!m("ABC", "abc", Comparator::Octet));
        assert!(m("a*b", "a\\*b", c));
        assert!(!m("axxb", "a\\*b", c));
    }

    /// RFC 5229 3.2: the match variables of :matches.
    #[test]
    fn captures() {
        let mut b = u64::MAX;
        let mut caps = Vec::new();
        let c = Comparator::AsciiCasemap;
        assert!(
            matches(
                MatchType::Matches,
                c,
                "[acme-users] [fwd] version 1.0 is out",
                "[*] *",
                Some(&mut caps),
                &mut b,
                None
            )
            .unwrap()
        );
        assert_eq!(caps[1], "acme-users");
        assert_eq!(caps[2], "[fwd] version 1.0 is out");
        assert!(
            matches(
                MatchType::Matches,
                c,
                "coyote@example.com",
                "*@*.com",
                Some(&mut caps),
                &mut b,
                None
            )
            .unwrap()
        );
        assert_eq!(&caps[..], ["coyote@example.com", "coyote", "example"]);
    }

    /// Pathological patterns cost pattern × text, never exponential time.
    #[test]
    fn pathological_bounded() {
        let text = "a".repeat(20000);
        let pat = "*a".repeat(200) + "b";
        let mut b = 10_000_000;
        // 201 × 20001 cells: within the budget.
        let t = std::time::Instant::now();
        assert!(
            !matches(
                MatchType::Matches,
                Comparator::Octet,
                &text,
                &pat,
                None,
                &mut b,
                None
            )
            .unwrap()
        );
        assert!(t.elapsed().as_secs() < 30, "did not hang");
        let mut small = 1000;
        assert!(
            matches(
                MatchType::Matches,
                Comparator::Octet,
                &text,
                &pat,
                None,
                &mut small,
                None
            )
            .is_err()
        );
    }

    /// RFC 4790 9.1 / RFC 5231: i;ascii-numeric, with non-numbers as infinity.
    #[test]
    fn numeric_order() {
        use Comparator::AsciiNumeric as N;
        assert_eq!(compare("10", "9", N), Ordering::Greater);
        assert_eq!(compare("007", "7", N), Ordering::Equal);
        assert_eq!(
            compare("x", "99999999999999999999999", N),
            Ordering::Greater
        );
        assert_eq!(compare("x", "y", N), Ordering::Equal);
        assert_eq!(compare("12abc", "12", N), Ordering::Equal);
    }
}
