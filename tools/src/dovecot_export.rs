//! Moving out: a whole account written as a Dovecot Maildir++ account
//! (`idx-admin export --dovecot-maildir DIR -d USER`), so that Dovecot
//! (`mail_location = maildir:DIR`) shows every mailbox with the same
//! UIDVALIDITY, UIDNEXT, UIDs, flags, keywords, INTERNALDATE, size and
//! bytes, and `import --dovecot-maildir` reads it back unchanged.
//!
//! What is written, as Dovecot 2.3 writes it (`dovecot.rs` reads the same):
//! - INBOX is `DIR` itself, mailbox `A/B` is the directory `DIR/.A.B`
//!   (with an empty `maildirfolder` file), each level in modified UTF-7
//!   (RFC 3501 5.1.3; names already in it are kept as they are). A parent
//!   that is no mailbox here gets no directory: Dovecot shows it
//!   `\Noselect`, as it does for its own such parents.
//! - each message in `cur/` as `<date>.M<uid>P<pid>.<host>,S=<size>,W=<vsize>:2,<flags>`:
//!   Dovecot's own name form, `S=` the file's size and `W=` the size with
//!   CRLF line ends (RFC822.SIZE); flag letters D F R S T then the folder's
//!   keyword letters; the file's mtime is the INTERNALDATE. The file holds
//!   LF line ends, as Dovecot stores mail, unless the message has a bare
//!   CR or LF (then its bytes as they are; Dovecot serves them with CRLF
//!   line ends, so such a message's size differs there: reported).
//! - `dovecot-uidlist` version 3: `3 V<uidvalidity> N<uidnext> G<guid>`,
//!   then `<uid> :<file base name>` per message; `dovecot-keywords` with
//!   the folder's keywords (`<index> <name>`, at most 26: Maildir has no
//!   letters for more, the rest is reported);
//! - `subscriptions` version 2 (`V\t2`, an empty line, then one name per
//!   line with its levels separated by TAB).
//!
//! Each mailbox is read from one snapshot (its lock taken for the read of
//! the header and records, as every reader does), so UIDVALIDITY, UIDNEXT
//! and the messages belong together even while `deliver` writes; a
//! message delivered meanwhile is simply not in the export. The export
//! goes into a directory that must not exist yet; each folder's uidlist
//! is written last (a folder without one is not finished), and one
//! `syncfs` at the end makes the whole tree durable before success is
//! reported.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use storage::{MailboxName, Store, UserName};

use crate::dovecot::{decode_mutf7, encode_mutf7};
use crate::maildir::FLAG_LETTERS;
use crate::mbox::{Message, to_crlf, to_lf};

/// What was written for one mailbox.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FolderExport {
    pub name: String,
    /// The directory, relative to the export root (`.` for INBOX).
    pub dir: String,
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub messages: usize,
    pub bytes: u64,
    /// Keywords not written (beyond the 26 Maildir letters).
    pub lost_keywords: Vec<String>,
    /// UIDs of messages with a bare CR or LF (not RFC 5322): written as
    /// they are, but Dovecot serves every line with CRLF, so their size
    /// and bytes there differ from ours.
    pub bare_line_ends: Vec<u32>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ExportReport {
    pub folders: Vec<FolderExport>,
    pub subscriptions: usize,
    /// Mailboxes not exported, with why.
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

impl ExportReport {
    /// Something was left out: the export is not the whole account.
    pub fn incomplete(&self) -> bool {
        !self.skipped.is_empty() || self.folders.iter().any(|f| !f.lost_keywords.is_empty())
    }
}

/// A name level as a Maildir++ directory level: kept when it is modified
/// UTF-7 already (as IMAP4rev1 clients send names), else encoded.
/// `None` when it holds the Maildir++ separator `.`.
fn dovecot_level(level: &str) -> Option<String> {
    let l = if decode_mutf7(level).is_some() {
        level.to_string()
    } else {
        encode_mutf7(level)
    };
    (!l.contains('.') && !l.is_empty()).then_some(l)
}

/// The levels of our name as Dovecot's, or why it cannot be one.
fn dovecot_levels(name: &str) -> Result<Vec<String>, String> {
    name.split('/')
        .map(|l| {
            dovecot_level(l).ok_or_else(|| {
                format!("{name:?}: the level {l:?} holds `.`, the Maildir++ separator")
            })
        })
        .collect()
}

/// This machine's name for file names (`/` and `:` would break them).
fn hostname() -> String {
    let h = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let h: String = h
        .trim()
        .chars()
        .map(|c| match c {
            '/' => '\\',
            ':' => '-',
            c => c,
        })
        .collect();
    if h.is_empty() { "localhost".into() } else { h }
}

fn mkdir(p: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(|e| format!("create {}: {e}", p.display()))
}

fn write_new(p: &Path, bytes: &[u8]) -> Result<fs::File, String> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(p)
        .map_err(|e| format!("create {}: {e}", p.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("write {}: {e}", p.display()))?;
    Ok(f)
}

/// Exports every mailbox and the subscriptions of `user` into `root`,
/// which must not exist.
pub fn export_account(store: &Store, user: &UserName, root: &Path) -> Result<ExportReport, String> {
    if root.exists() {
        return Err(format!(
            "{} exists: the export writes a new directory (remove it, or name another)",
            root.display()
        ));
    }
    let mut names = store.list_mailboxes(user).map_err(|e| e.to_string())?;
    names.sort_by_key(|n| (!n.is_inbox(), n.to_string()));
    mkdir(root)?;
    let mut report = ExportReport::default();
    let host = hostname();
    let inbox = MailboxName::inbox();
    if names.first().is_none_or(|n| !n.is_inbox()) {
        // Dovecot's INBOX is the root Maildir: it always exists.
        names.insert(0, inbox.clone());
    }
    for name in &names {
        let shown = name.to_string();
        let (dir, rel) = if name.is_inbox() {
            (root.to_path_buf(), ".".to_string())
        } else {
            match dovecot_levels(&shown) {
                Ok(l) => {
                    let d = format!(".{}", l.join("."));
                    (root.join(&d), d)
                }
                Err(e) => {
                    report.skipped.push(format!("mailbox {e}: not exported"));
                    continue;
                }
            }
        };
        let mut m = match store.open_mailbox(user, name) {
            Ok(m) => m,
            Err(storage::Error::NoSuchMailbox(_)) if name.is_inbox() => {
                // No INBOX here yet: an empty one.
                write_empty_inbox(root)?;
                continue;
            }
            Err(e) => {
                report.skipped.push(format!("mailbox {shown:?}: {e}"));
                continue;
            }
        };
        let f = export_folder(&mut m, &dir, &host, !name.is_inbox())
            .map_err(|e| format!("mailbox {shown:?}: {e}"))?;
        report.folders.push(FolderExport {
            name: shown,
            dir: rel,
            ..f
        });
    }
    let subs = store.subscriptions(user).map_err(|e| e.to_string())?;
    let mut text = String::from("V\t2\n\n");
    for s in &subs {
        match dovecot_levels(s) {
            Ok(l) => {
                text.push_str(&l.join("\t"));
                text.push('\n');
                report.subscriptions += 1;
            }
            Err(e) => report
                .warnings
                .push(format!("subscription {e}: not exported")),
        }
    }
    write_new(&root.join("subscriptions"), text.as_bytes())?;
    // One flush for the whole tree before success is reported.
    let d = fs::File::open(root).map_err(|e| format!("open {}: {e}", root.display()))?;
    let fd = std::os::fd::AsFd::as_fd(&d);
    storage::internals::fsutil::syncfs(fd, root).map_err(|e| e.to_string())?;
    Ok(report)
}

fn write_empty_inbox(root: &Path) -> Result<(), String> {
    for sub in ["cur", "new", "tmp"] {
        mkdir(&root.join(sub))?;
    }
    Ok(())
}

/// One mailbox into the Maildir `dir` (created; `folder`: with the
/// `maildirfolder` mark of a Maildir++ folder).
fn export_folder(
    m: &mut storage::Mailbox,
    dir: &Path,
    host: &str,
    folder: bool,
) -> Result<FolderExport, String> {
    if folder {
        mkdir(dir)?;
        write_new(&dir.join("maildirfolder"), b"")?;
    }
    write_empty_inbox(dir)?;
    let pid = std::process::id();
    // Keyword letters are given in the order keywords are met.
    let mut letters: Vec<String> = Vec::new();
    let mut lost: Vec<String> = Vec::new();
    let mut uidlist: Vec<(u32, String)> = Vec::new();
    let mut bytes_total = 0u64;
    // UIDs of messages with a bare CR or LF.
    let mut odd: Vec<u32> = Vec::new();
    let (n, header) = crate::transfer::export_snapshot(m, |uid, msg: Message| {
        let mut info = String::new();
        for (l, f) in FLAG_LETTERS {
            if msg.flags.contains(f) {
                info.push(l);
            }
        }
        let mut kw: Vec<char> = Vec::new();
        for k in &msg.keywords {
            let i = match letters.iter().position(|x| x == k) {
                Some(i) => i,
                None if letters.len() < 26 => {
                    letters.push(k.clone());
                    letters.len() - 1
                }
                None => {
                    if !lost.contains(k) {
                        lost.push(k.clone());
                    }
                    continue;
                }
            };
            kw.push((b'a' + i as u8) as char);
        }
        kw.sort_unstable();
        kw.dedup();
        info.extend(kw);
        // LF line ends as Dovecot stores mail, when that loses nothing.
        let lf = to_lf(&msg.bytes);
        let body = if to_crlf(&lf) == msg.bytes {
            lf
        } else {
            odd.push(uid);
            msg.bytes.clone()
        };
        let vsize = to_crlf(&body).len();
        let date = msg.internal_date.unwrap_or(0);
        let base = format!("{date}.M{uid}P{pid}.{host},S={},W={vsize}", body.len());
        let tmp = dir.join("tmp").join(&base);
        let f = write_new(&tmp, &body)?;
        let t = if date >= 0 {
            UNIX_EPOCH + Duration::from_secs(date as u64)
        } else {
            UNIX_EPOCH - Duration::from_secs(date.unsigned_abs())
        };
        f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
            .map_err(|e| format!("set mtime {}: {e}", tmp.display()))?;
        drop(f);
        let dest = dir.join("cur").join(format!("{base}:2,{info}"));
        fs::rename(&tmp, &dest).map_err(|e| format!("rename {}: {e}", dest.display()))?;
        bytes_total += msg.bytes.len() as u64;
        uidlist.push((uid, base));
        Ok(())
    })?;
    if !letters.is_empty() {
        let mut text = String::new();
        for (i, k) in letters.iter().enumerate() {
            text.push_str(&format!("{i} {k}\n"));
        }
        write_new(&dir.join("dovecot-keywords"), text.as_bytes())?;
    }
    let uidnext = header.last_uid.saturating_add(1);
    let mut text = format!(
        "3 V{} N{uidnext} G{}\n",
        header.uidvalidity,
        guid(dir, header.uidvalidity)
    );
    for (uid, base) in &uidlist {
        text.push_str(&format!("{uid} :{base}\n"));
    }
    // Last: a folder with a uidlist is a finished one.
    let tmp = dir.join("dovecot-uidlist.tmp");
    write_new(&tmp, text.as_bytes())?;
    let list = dir.join("dovecot-uidlist");
    fs::rename(&tmp, &list).map_err(|e| format!("rename {}: {e}", list.display()))?;
    Ok(FolderExport {
        uidvalidity: header.uidvalidity,
        uidnext,
        messages: n,
        bytes: bytes_total,
        lost_keywords: lost,
        bare_line_ends: odd,
        ..Default::default()
    })
}

/// A mailbox GUID for the uidlist header (128 bits as 32 hex digits, as
/// Dovecot writes): from the directory, the UIDVALIDITY and the clock,
/// so that two exported mailboxes do not share one.
fn guid(dir: &Path, uidvalidity: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let seed = format!("{}\0{uidvalidity}\0{now}", dir.display());
    let a = crc32fast::hash(seed.as_bytes());
    let b = crc32fast::hash(format!("{seed}b").as_bytes());
    format!("{:08x}{:08x}{:016x}", a, b, now as u64)
}

/// The text summary.
pub fn render_text(r: &ExportReport, to: &Path) -> String {
    let mut out = format!("export to {} (Dovecot Maildir++)\n", to.display());
    let mut per: BTreeMap<&str, &FolderExport> = BTreeMap::new();
    for f in &r.folders {
        per.insert(&f.name, f);
    }
    let (mut msgs, mut bytes) = (0usize, 0u64);
    for f in per.values() {
        msgs += f.messages;
        bytes += f.bytes;
        out.push_str(&format!(
            "  {} -> {}: {} messages, UIDVALIDITY {}, UIDNEXT {}\n",
            f.name, f.dir, f.messages, f.uidvalidity, f.uidnext
        ));
        if !f.bare_line_ends.is_empty() {
            out.push_str(&format!(
                "    warning: UIDs {:?} have bare CR or LF line ends: Dovecot serves them with CRLF \
                 (another RFC822.SIZE)\n",
                f.bare_line_ends
            ));
        }
        if !f.lost_keywords.is_empty() {
            out.push_str(&format!(
                "    not exported: keywords beyond the 26 Maildir letters: {}\n",
                f.lost_keywords.join(" ")
            ));
        }
    }
    for s in &r.skipped {
        out.push_str(&format!("  skipped: {s}\n"));
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out.push_str(&format!(
        "{} mailboxes, {msgs} messages, {bytes} bytes exported; {} subscriptions\n",
        r.folders.len(),
        r.subscriptions
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Maildir++ names: levels joined by `.`, each in modified UTF-7
    /// (RFC 3501 5.1.3); a `.` inside a level cannot be written.
    #[test]
    fn folder_levels() {
        assert_eq!(
            dovecot_levels("Entw&APw-rfe/Sub").unwrap(),
            ["Entw&APw-rfe", "Sub"]
        );
        assert_eq!(dovecot_levels("Caf\u{e9}").unwrap(), ["Caf&AOk-"]);
        assert_eq!(dovecot_levels("R&D").unwrap(), ["R&-D"]);
        assert!(dovecot_levels("a.b/c").is_err());
    }
}
