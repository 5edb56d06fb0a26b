//! Reading a Dovecot Maildir account (Maildir++ layout, Dovecot 2.x) for a
//! whole-account import that keeps UIDs (`idx-admin import
//! --dovecot-maildir`, `account.rs`).
//!
//! What is read, as Dovecot writes it:
//! - the layout: INBOX is the root directory; every other folder is a
//!   directory `.A.B` directly under it (Maildir++), its name's levels
//!   separated by `.`, or with `LAYOUT=fs` the nested directories `A/B`;
//!   each level written in modified UTF-7 (RFC 3501 5.1.3);
//! - `dovecot-uidlist` per folder: a header `3 V<uidvalidity> N<nextuid>
//!   G<guid> ...` (version 1: `1 <uidvalidity> <nextuid>`), then one line
//!   per message `<uid> [<ext fields>] :<file base name>` (version 1:
//!   `<uid> <file base name>`). The header's next UID can be stale: the
//!   next UID used is the highest of it and every UID listed + 1;
//! - `dovecot-keywords` per folder: `<index> <name>` (the same letter means
//!   different keywords in different folders);
//! - message files in `new/` and `cur/`, named `<base>:2,<flags>`: the
//!   letters D F R S T are \Draft \Flagged \Answered \Seen \Deleted, `a`..`z`
//!   keyword indexes; the file's mtime is the INTERNALDATE (Dovecot's
//!   maildir received date);
//! - `subscriptions` at the root: `V\t2` and an empty line, then one name
//!   per line with its levels separated by TAB (version 1: no header,
//!   names with the `.` separator). Subscriptions to folders that no
//!   longer exist are kept.
//!
//! Every file is bounded before it is read (`MAX_*` below); a folder or
//! file that cannot be used is reported (`Folder::problems`,
//! `Account::warnings`), never guessed at.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use storage::Flags;

/// The largest `dovecot-uidlist` read (about 2.5 million lines).
pub const MAX_UIDLIST_BYTES: u64 = 256 << 20;
/// The largest `dovecot-keywords` or `subscriptions` file read.
pub const MAX_SMALL_FILE_BYTES: u64 = 4 << 20;
/// The most message files in one folder.
pub const MAX_FILES_PER_FOLDER: usize = 4_000_000;
/// The most folders in one account.
pub const MAX_FOLDERS: usize = 100_000;

/// One message file of a folder.
#[derive(Clone, Debug)]
pub struct SourceMessage {
    /// Its UID from `dovecot-uidlist`; `None` when the list has no entry
    /// (it then gets a new UID above the rest, as Dovecot would give it).
    pub uid: Option<u32>,
    pub path: PathBuf,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// Unix seconds of the file's mtime (the INTERNALDATE).
    pub mtime: i64,
    /// The INTERNALDATE's zone, minutes east of UTC (0 for a file's mtime).
    pub zone: i16,
    pub size: u64,
    /// For a message inside an mbox file (`path`): where, and how its
    /// stored bytes are made; `None`: the whole file is the message.
    pub part: Option<crate::uwmbox::Part>,
}

/// One folder of the account.
#[derive(Clone, Debug)]
pub struct Folder {
    /// The name with `/` between levels, each level as Dovecot keeps it
    /// (modified UTF-7), e.g. `INBOX`, `Sub/Folder`, `Entw&APw-rfe`.
    pub name: String,
    /// The name as Dovecot's IMAP shows it (`.` separator).
    pub dovecot_name: String,
    pub dir: PathBuf,
    /// From the uidlist header; `None` without a uidlist (never opened by
    /// Dovecot: its files have no UIDs yet).
    pub uidvalidity: Option<u32>,
    /// The UID after every UID the folder handed out (header N, and every
    /// UID listed + 1); at least 1.
    pub next_uid: u32,
    /// By UID, then the unlisted ones by (mtime, name).
    pub messages: Vec<SourceMessage>,
    /// Things not imported from this folder, with the reason.
    pub problems: Vec<String>,
    /// Messages found and not imported, with the reason.
    pub skipped: Vec<String>,
    /// Why nothing of the folder can be imported (unreadable, not a
    /// mailbox).
    pub refused: Option<String>,
    /// Why the source's UIDs cannot be kept: the folder is refused, or
    /// with `--renumber` imported under new UIDs and a new UIDVALIDITY.
    pub uids_unusable: Option<String>,
}

/// A whole account.
#[derive(Clone, Debug, Default)]
pub struct Account {
    pub folders: Vec<Folder>,
    /// Names (with `/` between levels), existing or not.
    pub subscriptions: BTreeSet<String>,
    pub warnings: Vec<String>,
}

/// Reads the account whose INBOX is the Maildir `root`.
/// How folders are laid out under the account's root (Dovecot's
/// `mail_location = maildir:~/Maildir[:LAYOUT=fs]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Maildir++ (Dovecot's default): `.A.B` directories at the root.
    #[default]
    #[value(name = "maildir++")]
    MaildirPlusPlus,
    /// `LAYOUT=fs`: `A/B` directories nested under the root.
    Fs,
}

/// Directories that are a Maildir's own, never folders (`LAYOUT=fs`).
const MAILDIR_SUBDIRS: [&str; 3] = ["cur", "new", "tmp"];

/// The sub-directories of `dir` (names that are not UTF-8 reported).
fn subdirs(dir: &Path, warnings: &mut Vec<String>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| format!("read {}: {e}", dir.display()))? {
        let entry = entry.map_err(|e| format!("read {}: {e}", dir.display()))?;
        if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        match entry.file_name().to_str() {
            Some(n) => out.push(n.to_string()),
            None => warnings.push(format!(
                "{}: folder directory name is not UTF-8, skipped",
                entry.path().display()
            )),
        }
        if out.len() > MAX_FOLDERS {
            return Err(format!(
                "more than {MAX_FOLDERS} folders in {}",
                dir.display()
            ));
        }
    }
    out.sort();
    Ok(out)
}

/// `LAYOUT=fs`: every directory below `dir` but a Maildir's own, with
/// its levels; at most 32 levels deep (the store's limit).
fn fs_folders(
    root: &Path,
    levels: &mut Vec<String>,
    out: &mut Vec<Vec<String>>,
    warnings: &mut Vec<String>,
) -> Result<(), String> {
    let dir = levels.iter().fold(root.to_path_buf(), |d, l| d.join(l));
    for name in subdirs(&dir, warnings)? {
        if MAILDIR_SUBDIRS.contains(&name.as_str()) {
            // The Maildir's own (INBOX's or the folder's).
            continue;
        }
        levels.push(name);
        if levels.len() > 32 || out.len() > MAX_FOLDERS {
            return Err(format!(
                "{}: folders nested too deep or too many",
                dir.display()
            ));
        }
        out.push(levels.clone());
        fs_folders(root, levels, out, warnings)?;
        levels.pop();
    }
    Ok(())
}

/// Reads the account whose INBOX is the Maildir `root`.
///
/// `prefix` is the levels of Dovecot's INBOX namespace prefix (`INBOX.`
/// gives `["INBOX"]`): every folder but INBOX, and every subscription but
/// INBOX, gets them in front, as Dovecot's IMAP shows them (its files
/// hold the names without the prefix).
pub fn read_account(root: &Path, layout: Layout, prefix: &[String]) -> Result<Account, String> {
    if !root.join("cur").is_dir() && !root.join("new").is_dir() {
        return Err(format!(
            "{} is not a Dovecot Maildir (no cur/ or new/ for INBOX)",
            root.display()
        ));
    }
    let mut acct = Account::default();
    acct.folders.push(read_folder(root, "INBOX", "INBOX")?);
    // (levels, directory, name as Dovecot shows it)
    let mut candidates: Vec<(Vec<String>, std::path::PathBuf, String)> = Vec::new();
    match layout {
        Layout::MaildirPlusPlus => {
            for d in subdirs(root, &mut acct.warnings)? {
                if !d.starts_with('.') || d == "." || d == ".." {
                    continue;
                }
                let levels = d[1..].split('.').map(String::from).collect();
                candidates.push((levels, root.join(&d), d[1..].to_string()));
            }
        }
        Layout::Fs => {
            let mut all = Vec::new();
            fs_folders(root, &mut Vec::new(), &mut all, &mut acct.warnings)?;
            for levels in all {
                let dir = levels.iter().fold(root.to_path_buf(), |d, l| d.join(l));
                let shown = levels.join("/");
                if !dir.join("cur").is_dir() && !dir.join("new").is_dir() {
                    // A parent only (\Noselect in Dovecot).
                    continue;
                }
                candidates.push((levels, dir, shown));
            }
        }
    }
    for (levels, dir, dovecot_name) in candidates {
        if levels.iter().any(|l| l.is_empty()) {
            acct.warnings
                .push(format!("folder {dovecot_name:?}: an empty level, skipped"));
            continue;
        }
        if let Some(bad) = levels.iter().find(|l| decode_mutf7(l).is_none()) {
            acct.warnings.push(format!(
                "folder {dovecot_name:?}: level {bad:?} is not modified UTF-7, imported under that name"
            ));
        }
        if !dir.join("cur").is_dir() && !dir.join("new").is_dir() {
            acct.warnings.push(format!(
                "folder directory {} has no cur/ or new/: not a Maildir folder, skipped",
                dir.display()
            ));
            continue;
        }
        let name = with_prefix(prefix, &levels);
        acct.folders.push(read_folder(&dir, &name, &dovecot_name)?);
    }
    acct.subscriptions = read_subscriptions(root, &mut acct.warnings)?
        .into_iter()
        .map(|s| {
            let levels: Vec<String> = s.split('/').map(String::from).collect();
            with_prefix(prefix, &levels)
        })
        .collect();
    Ok(acct)
}

/// Our name for a folder's levels under Dovecot's namespace `prefix`
/// (INBOX itself never gets it); a first level `INBOX` in any case is
/// `INBOX`.
fn with_prefix(prefix: &[String], levels: &[String]) -> String {
    let all: Vec<&str> = if levels.len() == 1 && levels[0].eq_ignore_ascii_case("INBOX") {
        vec!["INBOX"]
    } else {
        prefix.iter().chain(levels).map(String::as_str).collect()
    };
    let name = all.join("/");
    if all[0].eq_ignore_ascii_case("INBOX") {
        format!("INBOX{}", &name[5..])
    } else {
        name
    }
}

/// Reads `path` whole if it exists and is at most `limit` bytes.
pub(crate) fn read_bounded(path: &Path, limit: u64) -> Result<Option<Vec<u8>>, String> {
    let md = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("stat {}: {e}", path.display())),
    };
    if md.len() > limit {
        return Err(format!(
            "{}: {} bytes, more than the {limit} read",
            path.display(),
            md.len()
        ));
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    use std::io::Read;
    fs::File::open(path)
        .and_then(|f| f.take(limit).read_to_end(&mut buf))
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    Ok(Some(buf))
}

/// The parsed `dovecot-uidlist`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UidList {
    pub uidvalidity: u32,
    /// The header's next UID (possibly stale).
    pub next_uid: u32,
    /// File base name -> UID.
    pub entries: BTreeMap<String, u32>,
    pub problems: Vec<String>,
}

/// Parses a `dovecot-uidlist` (versions 1 and 3).
pub fn parse_uidlist(text: &str, path: &Path) -> Result<UidList, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty uidlist", path.display()))?;
    let mut out = UidList::default();
    let mut fields = header.split(' ');
    let version = fields.next().unwrap_or("");
    let bad_header = || format!("{}: bad uidlist header {header:?}", path.display());
    match version {
        "1" => {
            out.uidvalidity = fields
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad_header)?;
            out.next_uid = fields
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(bad_header)?;
        }
        "2" | "3" => {
            for f in fields {
                if let Some(v) = f.strip_prefix('V') {
                    out.uidvalidity = v.parse().map_err(|_| bad_header())?;
                } else if let Some(n) = f.strip_prefix('N') {
                    out.next_uid = n.parse().map_err(|_| bad_header())?;
                }
            }
        }
        _ => {
            return Err(format!(
                "{}: uidlist version {version:?} is not known (1, 2 or 3)",
                path.display()
            ));
        }
    }
    if out.uidvalidity == 0 {
        return Err(format!(
            "{}: uidlist header without UIDVALIDITY",
            path.display()
        ));
    }
    let mut seen_uids: BTreeSet<u32> = BTreeSet::new();
    for (i, line) in lines.enumerate() {
        let lineno = i + 2;
        if line.is_empty() {
            continue;
        }
        let Some((uid, rest)) = line.split_once(' ') else {
            out.problems
                .push(format!("uidlist line {lineno}: no file name: {line:?}"));
            continue;
        };
        let uid: u32 = match uid.parse() {
            Ok(u) if u > 0 => u,
            _ => {
                out.problems
                    .push(format!("uidlist line {lineno}: bad UID {uid:?}"));
                continue;
            }
        };
        let file = if version == "1" {
            Some(rest)
        } else {
            // Extension fields (`W1234`, `G...`) until the ` :` that
            // starts the file name.
            match rest.find(':') {
                Some(0) => Some(&rest[1..]),
                Some(p) if rest.as_bytes()[p - 1] == b' ' => Some(&rest[p + 1..]),
                _ => None,
            }
        };
        let Some(file) = file.filter(|f| !f.is_empty()) else {
            out.problems
                .push(format!("uidlist line {lineno}: no file name: {line:?}"));
            continue;
        };
        if !seen_uids.insert(uid) {
            out.problems.push(format!(
                "uidlist line {lineno}: UID {uid} listed twice; {file} gets a new UID"
            ));
            continue;
        }
        let base = base_name(file).to_string();
        if let Some(prev) = out.entries.insert(base.clone(), uid) {
            out.problems.push(format!(
                "uidlist line {lineno}: file {base} listed twice (UIDs {prev} and {uid}); the later is used"
            ));
        }
    }
    Ok(out)
}

/// A Maildir file name without its `:2,...` info part.
fn base_name(name: &str) -> &str {
    name.split_once(':').map_or(name, |(b, _)| b)
}

fn read_folder(dir: &Path, name: &str, dovecot_name: &str) -> Result<Folder, String> {
    let mut problems = Vec::new();
    let uidlist_path = dir.join("dovecot-uidlist");
    let uidlist = match read_bounded(&uidlist_path, MAX_UIDLIST_BYTES)? {
        Some(b) => Some(parse_uidlist(&String::from_utf8_lossy(&b), &uidlist_path)?),
        None => None,
    };
    let kw = crate::maildir::read_keywords(dir)?;
    let mut listed: Vec<SourceMessage> = Vec::new();
    let mut unlisted: Vec<SourceMessage> = Vec::new();
    let mut found_bases: BTreeSet<String> = BTreeSet::new();
    let (entries, listing_problems) = crate::maildir::list(dir, MAX_FILES_PER_FOLDER)?;
    problems.extend(listing_problems);
    for e in entries {
        // Files in new/ carry no flags yet (Dovecot moves them to cur/
        // when it gives them flags).
        let (flags, keywords) = if e.in_new {
            (Flags::empty(), Vec::new())
        } else {
            let (flags, keywords, unknown) = crate::maildir::parse_info(&e.name, &kw);
            for c in unknown {
                problems.push(format!(
                    "{}: keyword letter {c} is not in dovecot-keywords, dropped",
                    e.name
                ));
            }
            (flags, keywords)
        };
        let base = base_name(&e.name).to_string();
        let first = found_bases.insert(base.clone());
        if !first {
            problems.push(format!(
                "{}: a second file with base name {base}; it gets a new UID",
                e.path.display()
            ));
        }
        let uid = uidlist
            .as_ref()
            .and_then(|l| l.entries.get(&base).copied())
            .filter(|_| first);
        let m = SourceMessage {
            uid,
            path: e.path,
            flags,
            keywords,
            mtime: e.mtime,
            zone: 0,
            size: e.size,
            part: None,
        };
        if uid.is_some() {
            listed.push(m);
        } else {
            unlisted.push(m);
        }
    }
    listed.sort_by_key(|m| m.uid);
    unlisted.sort_by(|a, b| (a.mtime, &a.path).cmp(&(b.mtime, &b.path)));
    let max_uid = listed.last().and_then(|m| m.uid).unwrap_or(0);
    let (uidvalidity, header_next) = match &uidlist {
        Some(l) => {
            problems.extend(l.problems.iter().cloned());
            let files: BTreeSet<&str> = found_bases.iter().map(String::as_str).collect();
            let missing = l
                .entries
                .keys()
                .filter(|b| !files.contains(b.as_str()))
                .count();
            if missing > 0 {
                problems.push(format!(
                    "{missing} uidlist entries have no file (expunged since): their UIDs stay unused"
                ));
            }
            let listed_max = l.entries.values().copied().max().unwrap_or(0);
            (
                Some(l.uidvalidity),
                l.next_uid.max(listed_max.saturating_add(1)),
            )
        }
        None => (None, 1),
    };
    let next_uid = header_next.max(max_uid.saturating_add(1)).max(1);
    listed.extend(unlisted);
    Ok(Folder {
        name: name.to_string(),
        dovecot_name: dovecot_name.to_string(),
        dir: dir.to_path_buf(),
        uidvalidity,
        next_uid,
        messages: listed,
        problems,
        skipped: Vec::new(),
        refused: None,
        uids_unusable: None,
    })
}

/// The `subscriptions` file: names with `/` between levels.
fn read_subscriptions(root: &Path, warnings: &mut Vec<String>) -> Result<BTreeSet<String>, String> {
    let p = root.join("subscriptions");
    let Some(bytes) = read_bounded(&p, MAX_SMALL_FILE_BYTES)? else {
        return Ok(BTreeSet::new());
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines().peekable();
    // Version 2: "V\t2", an empty line, then TAB-separated levels.
    let v2 = lines.peek().is_some_and(|l| l.starts_with("V\t"));
    if v2 {
        let header = lines.next().unwrap_or_default();
        if header != "V\t2" {
            warnings.push(format!(
                "{}: subscriptions version {header:?}, read as version 2",
                p.display()
            ));
        }
    }
    let mut out = BTreeSet::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let levels: Vec<&str> = if v2 {
            line.split('\t').collect()
        } else {
            line.split('.').collect()
        };
        if levels.iter().any(|l| l.is_empty() || l.contains('/')) {
            warnings.push(format!("subscription {line:?}: not a usable name, skipped"));
            continue;
        }
        let mut name = levels.join("/");
        if levels[0].eq_ignore_ascii_case("INBOX") {
            name = format!("INBOX{}", &name[5..]);
        }
        out.insert(name);
    }
    Ok(out)
}

/// Base64 with `,` for `/` and no padding (RFC 3501 5.1.3).
const MUTF7: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::IMAP_MUTF7,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
);

/// Decodes a modified UTF-7 name (RFC 3501 5.1.3); `None` if it is not
/// valid modified UTF-7.
pub fn decode_mutf7(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if !(0x20..=0x7e).contains(&c) {
            return None;
        }
        if c != b'&' {
            out.push(c as char);
            i += 1;
            continue;
        }
        let end = i + 1 + s[i + 1..].find('-')?;
        if end == i + 1 {
            out.push('&');
            i = end + 1;
            continue;
        }
        let raw = MUTF7.decode(&b[i + 1..end]).ok()?;
        if raw.is_empty() || raw.len() % 2 != 0 {
            return None;
        }
        let units: Vec<u16> = raw
            .chunks_exact(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect();
        let text = String::from_utf16(&units).ok()?;
        // Printable ASCII must not be encoded.
        if text.chars().any(|c| (' '..='~').contains(&c)) {
            return None;
        }
        out.push_str(&text);
        i = end + 1;
    }
    Some(out)
}

/// Encodes a name level in modified UTF-7 (RFC 3501 5.1.3): printable
/// ASCII as itself, `&` as `&-`, every run of other characters as UTF-16
/// in modified base64 between `&` and `-`.
pub fn encode_mutf7(s: &str) -> String {
    let mut out = String::new();
    let mut run: Vec<u16> = Vec::new();
    let flush = |run: &mut Vec<u16>, out: &mut String| {
        if !run.is_empty() {
            let bytes: Vec<u8> = run.iter().flat_map(|u| u.to_be_bytes()).collect();
            out.push('&');
            out.push_str(&MUTF7.encode(bytes));
            out.push('-');
            run.clear();
        }
    };
    for c in s.chars() {
        if (' '..='~').contains(&c) {
            flush(&mut run, &mut out);
            if c == '&' {
                out.push_str("&-");
            } else {
                out.push(c);
            }
        } else {
            let mut buf = [0u16; 2];
            run.extend_from_slice(c.encode_utf16(&mut buf));
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidlist_v3_with_extension_fields() {
        let text = "3 V1796531173 N111 Ge1e2\n1 :a.M1P1.vm,S=21,W=24\n5 W2186 Gabc :b.M2P1.vm\n113 :c.M3P1.vm:2,S\n";
        let l = parse_uidlist(text, Path::new("x")).unwrap();
        assert_eq!((l.uidvalidity, l.next_uid), (1796531173, 111));
        assert_eq!(l.entries["a.M1P1.vm,S=21,W=24"], 1);
        assert_eq!(l.entries["b.M2P1.vm"], 5);
        assert_eq!(l.entries["c.M3P1.vm"], 113);
        assert!(l.problems.is_empty());
        let dup = parse_uidlist("3 V7 N3\n1 :a\n1 :b\n", Path::new("x")).unwrap();
        assert_eq!(dup.entries.len(), 1);
        assert_eq!(dup.problems.len(), 1);
        let v1 = parse_uidlist("1 99 4\n2 x.y\n", Path::new("x")).unwrap();
        assert_eq!((v1.uidvalidity, v1.next_uid, v1.entries["x.y"]), (99, 4, 2));
        assert!(parse_uidlist("3 N4\n", Path::new("x")).is_err());
        assert!(parse_uidlist("9 V1 N4\n", Path::new("x")).is_err());
    }

    /// RFC 3501 5.1.3.
    #[test]
    fn modified_utf7() {
        assert_eq!(decode_mutf7("Entw&APw-rfe").unwrap(), "Entw\u{fc}rfe");
        assert_eq!(decode_mutf7("a&-b").unwrap(), "a&b");
        assert_eq!(
            decode_mutf7("&ZeVnLIqe-").unwrap(),
            "\u{65e5}\u{672c}\u{8a9e}"
        );
        assert!(decode_mutf7("Entw\u{fc}rfe").is_none());
        assert!(decode_mutf7("&AGE-").is_none(), "encoded ASCII");
        assert!(decode_mutf7("&APw").is_none(), "unterminated");
        for n in [
            "Entw\u{fc}rfe",
            "a&b",
            "\u{65e5}\u{672c}\u{8a9e} x",
            "\u{1f600}",
        ] {
            assert_eq!(decode_mutf7(&encode_mutf7(n)).unwrap(), n);
        }
        assert_eq!(encode_mutf7("Entw\u{fc}rfe"), "Entw&APw-rfe");
        assert_eq!(encode_mutf7("a&b"), "a&-b");
    }
}
