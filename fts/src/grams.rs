//! Byte trigrams: the index's terms.
//!
//! IMAP SEARCH BODY/TEXT matches substrings, case-insensitively (RFC 3501
//! 6.4.4), in any language. A needle found in a text has every one of its
//! three-byte windows in that text, so a message holding all the needle's
//! trigrams is a candidate and one lacking any is not: the index yields a
//! superset of the matches, which the server then confirms on the
//! message. Trigrams of bytes (not of characters or words) need no word
//! segmentation (CJK, German compounds, substrings inside words) and give
//! a two-character CJK needle (six UTF-8 bytes) four trigrams.
//!
//! The text is folded the way the matcher folds it: ASCII lower case for
//! the message as stored, Unicode lower case (`str::to_lowercase`) for
//! decoded text; a needle with non-ASCII letters is looked up both ways.

/// Terms are 24-bit trigrams; this one marks a message that is not
/// indexed (too large, unreadable): always a candidate.
pub const UNINDEXED: u32 = 1 << 24;

/// Marks a message whose header fields were indexed as [`HEADER`] terms.
/// A message without it (indexed by an older version) is a candidate for
/// every header needle.
pub const HEADER_TERMS: u32 = UNINDEXED + 2;

/// Set in the terms of the trigrams of a message's header fields, each
/// unfolded (line ends removed) and, with encoded words, decoded, and of
/// the addresses of its From, To, Cc and Bcc fields as SEARCH compares
/// them ([`crate::address::search_text`]): what SEARCH SUBJECT, HEADER,
/// FROM, TO, CC and BCC compare. Apart from the message's other
/// trigrams, so a header needle does not meet the bodies.
pub const HEADER: u32 = 1 << 25;

/// Messages with more distinct trigrams than this are marked
/// [`UNINDEXED`] instead (binary attachments), bounding a document.
pub const MAX_GRAMS: usize = 300_000;

/// A set of trigrams, reused from message to message (a 2 MiB bitmap
/// and the list of its set bits).
pub struct Grams {
    bits: Vec<u64>,
    set: Vec<u32>,
}

impl Default for Grams {
    fn default() -> Self {
        Grams {
            bits: vec![0; (1 << 24) / 64],
            set: Vec::new(),
        }
    }
}

fn gram(w: &[u8]) -> u32 {
    (u32::from(w[0]) << 16) | (u32::from(w[1]) << 8) | u32::from(w[2])
}

impl Grams {
    /// Adds the trigrams of `bytes`, ASCII letters folded to lower case.
    pub fn add_ascii_folded(&mut self, bytes: &[u8]) {
        let mut w = [0u8; 3];
        for (i, &b) in bytes.iter().enumerate() {
            w = [w[1], w[2], b.to_ascii_lowercase()];
            if i >= 2 {
                self.insert(gram(&w));
            }
        }
    }

    /// Adds the trigrams of `text` in Unicode lower case.
    pub fn add_lowercased(&mut self, text: &str) {
        if text.is_ascii() {
            self.add_ascii_folded(text.as_bytes());
        } else {
            self.add_ascii_folded(text.to_lowercase().as_bytes());
        }
    }

    fn insert(&mut self, g: u32) {
        let (word, bit) = ((g / 64) as usize, 1u64 << (g % 64));
        if self.bits[word] & bit == 0 {
            self.bits[word] |= bit;
            self.set.push(g);
        }
    }

    /// How many distinct trigrams were added.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when none was added.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The trigrams added since the last call, emptying the set.
    pub fn take(&mut self) -> Vec<u32> {
        for &g in &self.set {
            self.bits[(g / 64) as usize] = 0;
        }
        let mut out = std::mem::take(&mut self.set);
        out.sort_unstable();
        out
    }
}

/// What a message must hold to be a candidate for a needle: all the
/// trigrams of one of the alternatives (each sorted, distinct).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe(pub Vec<Vec<u32>>);

impl Probe {
    /// The same needle looked up among header field trigrams ([`HEADER`]).
    pub fn in_headers(&self) -> Probe {
        Probe(
            self.0
                .iter()
                .map(|alt| alt.iter().map(|g| g | HEADER).collect())
                .collect(),
        )
    }
}

/// The probe for SEARCH BODY/TEXT `needle`; `None` when the needle is
/// too short to have trigrams (every message is then a candidate).
///
/// A needle that is not UTF-8 (possible with CHARSET US-ASCII and 8-bit
/// bytes) is compared byte-wise with decoded text that the index holds
/// only in lower case: it gets no probe either.
pub fn probe(needle: &[u8]) -> Option<Probe> {
    let s = std::str::from_utf8(needle).ok()?;
    let mut g = Grams::default();
    let mut alts = Vec::new();
    g.add_ascii_folded(needle);
    if g.is_empty() {
        return None;
    }
    alts.push(g.take());
    if !s.is_ascii() {
        g.add_lowercased(s);
        if g.is_empty() {
            return None;
        }
        let b = g.take();
        if b != alts[0] {
            alts.push(b);
        }
    }
    Some(Probe(alts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn needle_grams_are_in_the_text() {
        let mut g = Grams::default();
        g.add_ascii_folded(b"Hello WORLD");
        let text = g.take();
        let p = probe(b"o wOr").unwrap();
        assert_eq!(p.0.len(), 1);
        assert!(p.0[0].iter().all(|x| text.binary_search(x).is_ok()));
        assert!(probe(b"ab").is_none());
        assert!(probe(b"x\xd0\xa0\xd0").is_none(), "not UTF-8");
        assert!(g.is_empty(), "take empties the set");
    }

    #[test]
    fn non_ascii_needles_have_a_unicode_alternative() {
        let p = probe("MÜLLER".as_bytes()).unwrap();
        assert_eq!(p.0.len(), 2);
        let mut g = Grams::default();
        g.add_lowercased("Herr Müller");
        let text = g.take();
        assert!(p.0[1].iter().all(|x| text.binary_search(x).is_ok()));
        assert!(!p.0[0].iter().all(|x| text.binary_search(x).is_ok()));
        // One CJK character is three bytes: one trigram.
        assert_eq!(probe("東".as_bytes()).unwrap().0, vec![vec![0xe6_9d_b1]]);
    }
}
