//! The mailbox metadata file `.meta`: the keyword name table.
//!
//! Keyword indexes are stable: names are only ever appended, so a record's
//! keyword bit keeps its meaning forever, and a reader that loads a newer
//! table than its header announces sees a harmless superset. The file is
//! replaced atomically (temp, fsync, rename, fsync dir) under the
//! mailbox's exclusive lock. Text format, see `docs/FORMAT.md`.

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::format::MAX_KEYWORDS;
use crate::fsutil::{self, Dir};
use crate::index::Durability;

pub const META_NAME: &str = ".meta";
const FIRST_LINE: &str = "mailstore-meta 1";
pub const MAX_KEYWORD_BYTES: usize = 100;

/// A mailbox's keyword name table (`.meta`): keyword number `i` of a
/// record ([`crate::Keywords`]) is named `keywords[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Meta {
    /// The names, in the order their numbers were given out.
    pub keywords: Vec<String>,
}

/// IMAP `flag-keyword` is an atom: no controls, space, `(){%*"\]`.
pub fn validate_keyword(k: &str) -> Result<()> {
    let ok = !k.is_empty()
        && k.len() <= MAX_KEYWORD_BYTES
        && k.bytes().all(|b| {
            b > b' '
                && b < 0x7f
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidKeyword(k.to_string()))
    }
}

impl Meta {
    /// Reads `.meta` in the mailbox directory `dir` (empty when absent).
    /// Internal: [`crate::Mailbox::keyword_names`] is the public view.
    #[doc(hidden)]
    pub fn load(dir: &Dir) -> Result<Meta> {
        let path = dir.child_path(fsutil::os(META_NAME.as_bytes()));
        let file = match dir.open_file(fsutil::os(META_NAME.as_bytes()), OFlag::O_RDONLY) {
            Ok(f) => f,
            Err(e) if e.is_not_found() => {
                return Ok(Meta::default());
            }
            Err(e) => return Err(e),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", &path, e))?
            .len();
        if len > 1 << 20 {
            return Err(Error::corrupt(&path, 0, "metadata file larger than 1 MiB"));
        }
        let mut buf = vec![0u8; len as usize];
        fsutil::read_exact_at(&file, &mut buf, 0, &path)?;
        Self::parse(&buf).map_err(|(off, what)| Error::corrupt(&path, off as u64, what))
    }

    fn parse(buf: &[u8]) -> std::result::Result<Meta, (usize, String)> {
        let text =
            std::str::from_utf8(buf).map_err(|e| (e.valid_up_to(), "not UTF-8".to_string()))?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or((0, "missing CRC line".to_string()))?;
        let crc_line = text[body_end..].trim_end();
        let stored = crc_line
            .strip_prefix("crc ")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or((body_end, "bad CRC line".to_string()))?;
        let computed = crc32fast::hash(&buf[..body_end]);
        if stored != computed {
            return Err((
                body_end,
                format!("CRC mismatch (stored {stored:08x}, computed {computed:08x})"),
            ));
        }
        let mut meta = Meta::default();
        let mut off = 0;
        for (i, line) in text[..body_end].lines().enumerate() {
            if i == 0 {
                if line != FIRST_LINE {
                    return Err((0, format!("unknown metadata version line {line:?}")));
                }
            } else if let Some(k) = line.strip_prefix("keyword ") {
                validate_keyword(k).map_err(|_| (off, format!("invalid keyword {k:?}")))?;
                meta.keywords.push(k.to_string());
            } else {
                return Err((off, format!("unknown line {line:?}")));
            }
            off += line.len() + 1;
        }
        if meta.keywords.len() > MAX_KEYWORDS {
            return Err((off, "more keywords than records can hold".to_string()));
        }
        Ok(meta)
    }

    fn serialize(&self) -> Vec<u8> {
        let mut body = format!("{FIRST_LINE}\n");
        for k in &self.keywords {
            body.push_str("keyword ");
            body.push_str(k);
            body.push('\n');
        }
        let crc = crc32fast::hash(body.as_bytes());
        body.push_str(&format!("crc {crc:08x}\n"));
        body.into_bytes()
    }

    /// Index of `name` (case-insensitive, as IMAP keywords are), if known.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.keywords
            .iter()
            .position(|k| k.eq_ignore_ascii_case(name))
    }

    /// Atomically replaces `.meta` in `dir`. Caller holds the exclusive lock.
    #[doc(hidden)]
    pub fn save(&self, dir: &Dir, durability: Durability) -> Result<()> {
        let tmp = format!(".meta.tmp.{}", std::process::id());
        dir.replace_file(
            &tmp,
            META_NAME,
            &self.serialize(),
            durability == Durability::Full,
        )?;
        crate::fault::point("meta.after_write")?;
        if durability == Durability::Full {
            dir.fsync()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let m = Meta {
            keywords: vec!["$Forwarded".into(), "Junk".into()],
        };
        let b = m.serialize();
        assert_eq!(Meta::parse(&b).unwrap(), m);
        let mut c = b.clone();
        c[20] ^= 1;
        assert!(Meta::parse(&c).is_err());
        assert!(Meta::parse(&b[..b.len() - 3]).is_err());
    }

    #[test]
    fn keyword_syntax() {
        assert!(validate_keyword("$Junk").is_ok());
        for bad in ["", "a b", "\\Seen", "a*", "x\u{e9}"] {
            assert!(validate_keyword(bad).is_err(), "{bad:?}");
        }
    }
}
