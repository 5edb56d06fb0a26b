//! Maildir reading and writing.
//!
//! Messages are the files of `new/` and `cur/` (`tmp/` holds deliveries in
//! progress and is skipped). Flags come from the info suffix `:2,` + letters:
//! D = \Draft, F = \Flagged, R = \Answered, S = \Seen, T = \Deleted
//! (trashed); lower-case letters `a`..`z` are keywords numbered by the
//! Dovecot-style `dovecot-keywords` file (`N name` per line). The internal
//! date is the file's mtime. Files use LF line endings; the store keeps CRLF.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use storage::Flags;

use crate::mbox::{Message, to_crlf, to_lf};

const KEYWORDS_FILE: &str = "dovecot-keywords";
/// System flag letters of a Maildir file name, in the order written.
pub(crate) const FLAG_LETTERS: [(char, Flags); 5] = [
    ('D', Flags::DRAFT),
    ('F', Flags::FLAGGED),
    ('R', Flags::ANSWERED),
    ('S', Flags::SEEN),
    ('T', Flags::DELETED),
];

/// Keyword index -> name, from `dovecot-keywords` (bounded; letters
/// `a`..`z` only, so indexes 0..25).
pub(crate) fn read_keywords(dir: &Path) -> Result<BTreeMap<usize, String>, String> {
    let p = dir.join(KEYWORDS_FILE);
    let Some(bytes) = crate::dovecot::read_bounded(&p, crate::dovecot::MAX_SMALL_FILE_BYTES)?
    else {
        return Ok(BTreeMap::new());
    };
    let mut m = BTreeMap::new();
    for line in String::from_utf8_lossy(&bytes).lines() {
        if let Some((n, name)) = line.split_once(' ')
            && let Ok(i) = n.parse::<usize>()
            && i < 26
            && !name.trim().is_empty()
        {
            m.insert(i, name.trim().to_string());
        }
    }
    Ok(m)
}

/// One Maildir file name's flags and keywords, and the keyword letters
/// `kw` has no name for.
pub(crate) fn parse_info(
    name: &str,
    kw: &BTreeMap<usize, String>,
) -> (Flags, Vec<String>, Vec<char>) {
    let mut flags = Flags::empty();
    let mut keywords = Vec::new();
    let mut unknown = Vec::new();
    if let Some((_, info)) = name.rsplit_once(":2,") {
        for c in info.chars() {
            if let Some((_, f)) = FLAG_LETTERS.iter().find(|(l, _)| *l == c) {
                flags = flags.union(*f);
            } else if c.is_ascii_lowercase() {
                match kw.get(&((c as u8 - b'a') as usize)) {
                    Some(k) => keywords.push(k.clone()),
                    None => unknown.push(c),
                }
            }
        }
    }
    (flags, keywords, unknown)
}

/// A message file of a Maildir's `new/` or `cur/`.
pub(crate) struct Entry {
    pub in_new: bool,
    pub name: String,
    pub path: PathBuf,
    /// Unix seconds.
    pub mtime: i64,
    pub size: u64,
}

/// The message files of `new/` and `cur/` (dot files, directories and
/// `tmp/` skipped), at most `limit`; files that cannot be stat'ed are
/// reported in the second list.
pub(crate) fn list(dir: &Path, limit: usize) -> Result<(Vec<Entry>, Vec<String>), String> {
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for sub in ["new", "cur"] {
        let d = dir.join(sub);
        let rd = match fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(format!("read {}: {e}", d.display())),
        };
        for entry in rd {
            let entry = entry.map_err(|e| format!("read {}: {e}", d.display()))?;
            // A name that is not UTF-8 matches no uidlist entry (lossy).
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') {
                continue;
            }
            let md = match entry.metadata() {
                Ok(m) if m.is_file() => m,
                Ok(_) => continue,
                Err(e) => {
                    problems.push(format!("stat {}: {e}, skipped", entry.path().display()));
                    continue;
                }
            };
            if found.len() >= limit {
                return Err(format!(
                    "{}: more than {limit} message files",
                    dir.display()
                ));
            }
            let mtime = md
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            found.push(Entry {
                in_new: sub == "new",
                name,
                path: entry.path(),
                mtime,
                size: md.len(),
            });
        }
    }
    Ok((found, problems))
}

/// Reads every message of the Maildir `dir`, oldest first (mtime, then
/// name), and calls `each` per message.
pub fn read(
    dir: &Path,
    mut each: impl FnMut(Message) -> Result<(), String>,
) -> Result<usize, String> {
    let kw = read_keywords(dir)?;
    if !dir.join("cur").is_dir() && !dir.join("new").is_dir() {
        return Err(format!(
            "{} is not a Maildir (no cur/ or new/)",
            dir.display()
        ));
    }
    let (mut found, problems) = list(dir, usize::MAX)?;
    if let Some(p) = problems.first() {
        return Err(p.clone());
    }
    found.sort_by(|a, b| (a.mtime, &a.name).cmp(&(b.mtime, &b.name)));
    for e in &found {
        let bytes = fs::read(&e.path).map_err(|err| format!("read {}: {err}", e.path.display()))?;
        let (flags, keywords, _) = parse_info(&e.name, &kw);
        each(Message {
            bytes: to_crlf(&bytes),
            flags,
            keywords,
            internal_date: Some(e.mtime),
        })?;
    }
    Ok(found.len())
}

/// A Maildir being written.
pub struct Writer {
    dir: PathBuf,
    keywords: Vec<String>,
    pid: u32,
}

impl Writer {
    /// Creates `dir` with `cur/`, `new/`, `tmp/` (0700). `keywords` is the
    /// mailbox's keyword table; the first 26 get letters `a`..`z`.
    pub fn create(dir: &Path, keywords: &[String]) -> Result<Writer, String> {
        for sub in ["", "cur", "new", "tmp"] {
            let p = dir.join(sub);
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let keywords: Vec<String> = keywords.iter().take(26).cloned().collect();
        if !keywords.is_empty() {
            let mut text = String::new();
            for (i, k) in keywords.iter().enumerate() {
                text.push_str(&format!("{i} {k}\n"));
            }
            let p = dir.join(KEYWORDS_FILE);
            fs::write(&p, text).map_err(|e| format!("write {}: {e}", p.display()))?;
        }
        Ok(Writer {
            dir: dir.to_path_buf(),
            keywords,
            pid: std::process::id(),
        })
    }

    /// Writes one message into `cur/` via `tmp/`. Returns the keywords
    /// that had no letter (beyond the 26th) and were not written.
    pub fn write(&self, uid: u32, m: &Message) -> Result<Vec<String>, String> {
        let date = m.internal_date.unwrap_or(0);
        let base = format!("{date}.U{uid:010}P{}.mailstore", self.pid);
        let mut info = String::new();
        for (l, f) in FLAG_LETTERS {
            if m.flags.contains(f) {
                info.push(l);
            }
        }
        let mut lost = Vec::new();
        let mut letters: Vec<char> = Vec::new();
        for k in &m.keywords {
            match self.keywords.iter().position(|x| x.eq_ignore_ascii_case(k)) {
                Some(i) => letters.push((b'a' + i as u8) as char),
                None => lost.push(k.clone()),
            }
        }
        letters.sort_unstable();
        info.extend(letters);
        let tmp = self.dir.join("tmp").join(&base);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("create {}: {e}", tmp.display()))?;
        f.write_all(&to_lf(&m.bytes))
            .and_then(|_| f.sync_data())
            .map_err(|e| format!("write {}: {e}", tmp.display()))?;
        let t = if date >= 0 {
            UNIX_EPOCH + Duration::from_secs(date as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(date.unsigned_abs())
        };
        f.set_modified(t)
            .map_err(|e| format!("set mtime {}: {e}", tmp.display()))?;
        let dest = self.dir.join("cur").join(format!("{base}:2,{info}"));
        fs::rename(&tmp, &dest).map_err(|e| format!("rename {}: {e}", dest.display()))?;
        Ok(lost)
    }
}
