//! Whole-word terms: proof, not just candidacy.
//!
//! Trigrams only rule messages out; a message holding them all must still
//! be read. A message whose searched text contains the needle as one of
//! its words certainly matches (a word is a substring of the text it was
//! cut from, folded the way the matcher folds), so for a needle that is a
//! single word the index also names the messages that match for certain,
//! and only the other candidates are read. Words are maximal runs of
//! alphanumeric characters: ASCII ones in the message as stored (ASCII
//! lower case), Unicode ones in decoded text (Unicode lower case), at
//! most [`MAX_WORD`] bytes. Terms are prefixed by where they prove a
//! match: `b` in the body (BODY and TEXT), `h` in the header (TEXT), `s`
//! in a Subject field (SUBJECT). The
//! addresses of From, To, Cc and Bcc and their parts are terms too (`a`,
//! [`address_term`]): a FROM/TO/CC/BCC needle that is a whole address, a
//! domain or a local part is proven by them.

use std::collections::HashSet;

/// Longer runs are not words here (base64, hashes): no term.
pub const MAX_WORD: usize = 40;

/// Where a word was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// The body: proves BODY and TEXT.
    Body,
    /// The header: proves TEXT.
    Header,
    /// A Subject field (unfolded, and decoded): proves SUBJECT.
    Subject,
}

impl Place {
    fn prefix(self) -> char {
        match self {
            Place::Body => 'b',
            Place::Header => 'h',
            Place::Subject => 's',
        }
    }
}

/// The distinct word terms of one message.
#[derive(Default)]
pub struct Words(HashSet<String>);

fn keep(w: &str) -> bool {
    keep_bytes(w.as_bytes())
}

fn keep_bytes(w: &[u8]) -> bool {
    (3..=MAX_WORD).contains(&w.len())
}

impl Words {
    /// Words of bytes as stored: runs of ASCII letters and digits.
    pub fn add_raw(&mut self, place: Place, bytes: &[u8]) {
        for run in bytes.split(|b| !b.is_ascii_alphanumeric()) {
            if keep_bytes(run) {
                let w: String = run.iter().map(|b| b.to_ascii_lowercase() as char).collect();
                self.0.insert(term(place, &w));
            }
        }
    }

    /// Words of decoded text, in Unicode lower case.
    pub fn add_text(&mut self, place: Place, text: &str) {
        let lower = text.to_lowercase();
        for w in lower.split(|c: char| !c.is_alphanumeric()) {
            if keep(w) {
                self.0.insert(term(place, w));
            }
        }
    }

    /// How many distinct terms.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The terms, emptying the set.
    pub fn take(&mut self) -> impl Iterator<Item = String> + '_ {
        self.0.drain()
    }
}

/// The folded forms of `needle` whose presence as a word proves a match
/// (see [`term`]): the needle in lower case, when it is a single word of
/// 3 to [`MAX_WORD`] bytes; none otherwise. (An ASCII needle folds the
/// same both ways; a non-ASCII one can only be a word of decoded text.)
pub fn proof_words(needle: &str) -> Vec<String> {
    if !needle.chars().all(char::is_alphanumeric) || !keep(needle) {
        return Vec::new();
    }
    let w = needle.to_lowercase();
    if keep(&w) { vec![w] } else { Vec::new() }
}

/// Longest address (`local@host`) given a term of its own.
pub const MAX_ADDRESS: usize = 320;

/// The index term of an address or address part (`local@host`, `host`,
/// `@host`, `local`, `local@`: `crate::address::address_parts`) in
/// address field `field` (`from`, `to`, `cc`, `bcc`), ASCII lower case:
/// a SEARCH FROM/TO/CC/BCC needle equal to it (in any ASCII case) is in
/// the field's search text (`crate::address::search_text` writes every
/// address whole), so the term proves the match. `None` for one that is
/// not UTF-8 or longer than [`MAX_ADDRESS`].
pub fn address_term(field: &str, address: &[u8]) -> Option<String> {
    if address.len() > MAX_ADDRESS {
        return None;
    }
    let a = std::str::from_utf8(address).ok()?;
    let mut t = String::with_capacity(field.len() + a.len() + 2);
    t.push('a');
    t.push_str(&field.to_ascii_lowercase());
    t.push(':');
    t.push_str(&a.to_ascii_lowercase());
    Some(t)
}

impl Words {
    /// Adds a term made by [`address_term`].
    pub fn add_term(&mut self, term: String) {
        self.0.insert(term);
    }
}

/// The index term of word `w` found in `place`.
pub fn term(place: Place, w: &str) -> String {
    let mut t = String::with_capacity(w.len() + 1);
    t.push(place.prefix());
    t.push_str(w);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_cut_and_folded_like_the_matcher() {
        let mut w = Words::default();
        w.add_raw(Place::Body, b"Hello, W\xc3\xb6rld! abc123 x y");
        w.add_text(Place::Header, "Grüße aus MÜNCHEN");
        let mut t: Vec<String> = w.take().collect();
        t.sort();
        assert_eq!(
            t,
            ["babc123", "bhello", "brld", "haus", "hgrüße", "hmünchen"]
        );
        assert_eq!(proof_words("MÜNCHEN"), ["münchen"]);
        assert_eq!(proof_words("Hello"), ["hello"]);
        assert_eq!(term(Place::Header, "hello"), "hhello");
        assert!(proof_words("e invoice").is_empty());
        assert!(proof_words("ab").is_empty());
    }
}
