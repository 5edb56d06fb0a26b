//! Commands imap-codec 2.0.0-alpha.10 cannot parse, made parseable before
//! it parses them: `SEARCH`/`SORT RETURN (...)` (ESEARCH, ESORT: the
//! clause is taken out, `esearch::split_return`), `$` (SEARCHRES:
//! `searchres::substitute`) and BINARY items beyond RFC 3516's grammar
//! (`binary::rewrite_fetch`). What was taken out is kept on the session
//! for the command's handler.

use super::conn::Session;
use super::io::tag_of;
use super::{binary, esearch, searchres};

impl Session {
    /// The command as imap-codec should see it, or the line that refuses
    /// it (BAD).
    pub(super) fn rewrite(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        self.search_return = None;
        let bytes = match esearch::split_return(&bytes) {
            Ok(Some((rest, opts))) => {
                self.search_return = Some(opts);
                rest
            }
            Ok(None) => bytes,
            Err(esearch::BadReturn(why)) => {
                // A SEARCH that fails empties `$` (RFC 5182 2.1).
                self.saved.clear();
                let t = tag_of(&bytes).unwrap_or_else(|| "*".into());
                return Err(format!("{t} BAD RETURN: {why}\r\n"));
            }
        };
        let marked = searchres::substitute(&bytes);
        self.dollar = marked.is_some();
        let bytes = marked.unwrap_or(bytes);
        let (bytes, alias) = binary::rewrite_fetch(&bytes).unwrap_or((bytes, Vec::new()));
        self.binary_alias = alias;
        Ok(bytes)
    }

    /// The command did not parse: a SEARCH ... SAVE among them empties
    /// `$` (RFC 5182 2.1).
    pub(super) fn unparsed(&mut self) {
        if self.search_return.is_some_and(|o| o.save) {
            self.saved.clear();
        }
    }
}
