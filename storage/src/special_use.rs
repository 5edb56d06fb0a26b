//! Special-use attributes of mailboxes (RFC 6154: `\Drafts`, `\Sent`,
//! `\Trash`, `\Junk`, `\Archive`), kept in the mailbox's own directory as
//! `.special-use` (docs/FORMAT.md §1, §8). Being inside the mailbox's
//! directory, the attribute moves with a RENAME (one directory rename)
//! and goes with a DELETE (the directory is removed, or, when the mailbox
//! has children, the file is removed with the mailbox's other files).
//!
//! The file is written only under the user's name lock
//! (`Store::lock_names`), replaced whole (temp, fdatasync, rename,
//! directory fsync), and read only for a directory that holds a live
//! index.

use std::collections::BTreeMap;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::fsutil::{self, Dir};
use crate::index::Durability;
use crate::names::{MailboxName, UserName};
use crate::store::Store;

pub(crate) use crate::layout::SPECIAL_USE_FILE;
const SPECIAL_USE_TMP: &str = ".special-use.tmp";
/// The largest `.special-use` read: five attributes of at most 9 bytes
/// fit in 50. A larger file is corrupt, never read into memory.
pub const MAX_SPECIAL_USE_BYTES: u64 = 256;

/// A user's mailboxes with their special uses, sorted by name, shared
/// ([`Store::mailbox_listing`]).
pub type MailboxListing = std::sync::Arc<Vec<(MailboxName, Vec<SpecialUse>)>>;

/// A special use the store can record (RFC 6154 §2). `\All` and
/// `\Flagged` name virtual mailboxes, which this store does not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpecialUse {
    /// `\\Drafts`.
    Drafts,
    /// `\\Sent`.
    Sent,
    /// `\\Trash`.
    Trash,
    /// `\\Junk`.
    Junk,
    /// `\\Archive`.
    Archive,
}

impl SpecialUse {
    /// Every special use the store records.
    pub const ALL: [SpecialUse; 5] = [
        SpecialUse::Drafts,
        SpecialUse::Sent,
        SpecialUse::Trash,
        SpecialUse::Junk,
        SpecialUse::Archive,
    ];

    /// The attribute as IMAP writes it (`\Sent`).
    pub fn attribute(self) -> &'static str {
        match self {
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
        }
    }

    /// The mailbox a new account gets for this use.
    pub fn default_folder(self) -> &'static str {
        &self.attribute()[1..]
    }

    /// Parses an attribute (case-insensitive, with its backslash).
    pub fn parse(s: &str) -> Option<SpecialUse> {
        SpecialUse::ALL
            .into_iter()
            .find(|u| u.attribute().eq_ignore_ascii_case(s))
    }
}

impl Store {
    /// Creates a mailbox carrying `uses`, all under the user's name lock:
    /// the mailbox appears (its index link), then its `.special-use`. A
    /// crash between the two leaves the mailbox without the attribute,
    /// never an attribute without its mailbox.
    pub fn create_mailbox_with_use(
        &self,
        user: &UserName,
        name: &MailboxName,
        uses: &[SpecialUse],
    ) -> Result<()> {
        let user_dir = self.user_dir(user, true)?;
        let _names = self.change_names(&user_dir)?;
        self.create_locked(user, &user_dir, name)?;
        crate::fault::point("special_use.after_create")?;
        if !uses.is_empty() {
            let dir = self.mailbox_dir(user, name, false)?;
            self.write_special_use(&dir, uses)?;
        }
        Ok(())
    }

    /// The special uses of one mailbox (empty when it has none).
    pub fn special_use(&self, user: &UserName, name: &MailboxName) -> Result<Vec<SpecialUse>> {
        match self.mailbox_dir(user, name, false) {
            Ok(dir) => read_special_use(&dir),
            Err(Error::NoSuchUser(_)) | Err(Error::NoSuchMailbox(_)) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// Every mailbox of `user` that has a special use. A mailbox whose
    /// `.special-use` is corrupt (logged with the offset) or unreadable is
    /// left out.
    pub fn special_uses(&self, user: &UserName) -> Result<BTreeMap<MailboxName, Vec<SpecialUse>>> {
        Ok(self
            .mailboxes_with_uses(user)?
            .into_iter()
            .filter(|(_, u)| !u.is_empty())
            .collect())
    }

    /// Every mailbox of `user` with its special uses (empty when it has
    /// none, or when its `.special-use` is corrupt, which is logged with
    /// the offset, or unreadable), sorted by name: what
    /// [`Store::list_mailboxes`] and [`Store::special_uses`] give, from one
    /// walk over the user's directories (LIST needs both).
    pub fn mailboxes_with_uses(
        &self,
        user: &UserName,
    ) -> Result<Vec<(MailboxName, Vec<SpecialUse>)>> {
        Ok(self.listing(user)?.as_ref().clone())
    }

    /// [`Self::mailboxes_with_uses`] shared, not copied: the process-wide
    /// cached listing itself when the user's names did not change since
    /// it was walked (docs/PROTOCOL.md §6b).
    pub fn mailbox_listing(&self, user: &UserName) -> Result<MailboxListing> {
        self.listing(user)
    }

    /// [`Self::mailboxes_with_uses`] by a walk (no cache).
    pub(crate) fn walk_with_uses(
        &self,
        user: &UserName,
    ) -> Result<Vec<(MailboxName, Vec<SpecialUse>)>> {
        let mut out = Vec::new();
        let dir = self.user_dir(user, false)?;
        crate::tree::walk_with(&dir, &mut Vec::new(), 0, &mut |name, dir| {
            // One mailbox's unreadable attribute never fails the listing
            // of the others.
            let uses = read_special_use(dir).unwrap_or_else(|e| {
                tracing::error!(user = %user, mailbox = %name, "special-use attribute not used: {e}");
                Vec::new()
            });
            out.push((name, uses));
            Ok(())
        })?;
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Gives an account the special-use mailboxes Drafts, Sent, Trash,
    /// Junk and Archive when it has no mailbox but INBOX and those five and
    /// none carries a special use yet: a new account, or one that so far
    /// only received mail (deliver's `--autocreate` may have made INBOX,
    /// and Junk for a spam filter; such a Junk gets its attribute). An
    /// account with any other mailbox, or with a special use already, was
    /// set up by its user or a migration and is left alone
    /// (docs/OPERATIONS.md). Returns the mailboxes created or marked.
    pub fn provision_special_use(&self, user: &UserName) -> Result<Vec<MailboxName>> {
        let user_dir = self.user_dir(user, true)?;
        let defaults: Vec<String> = SpecialUse::ALL
            .iter()
            .map(|u| u.default_folder().to_string())
            .collect();
        let is_default = |m: &MailboxName| m.is_inbox() || defaults.iter().any(|d| d == m.as_str());
        // Most logins are decided by one directory listing: any other
        // top-level directory (a mailbox or a parent of some) means the
        // account has other mailboxes. Never waits behind another
        // session's RENAME.
        let mut allowed: Vec<String> = vec![MailboxName::inbox().encoded_components().concat()];
        for d in &defaults {
            allowed.push(MailboxName::new(d)?.encoded_components().concat());
        }
        for (name, _) in user_dir.entries()? {
            if !name.starts_with(b".")
                && !allowed.iter().any(|a| a.as_bytes() == name.as_slice())
                && user_dir.is_dir(fsutil::os(&name))
            {
                return Ok(Vec::new());
            }
        }
        // Provisioned already (a default folder carries its use): nothing
        // to do, and no names change, which would empty the user's LIST
        // and STATUS caches at every login.
        for d in &defaults {
            if let Ok(dir) = self.mailbox_dir(user, &MailboxName::new(d)?, false)
                && read_special_use(&dir).is_ok_and(|u| !u.is_empty())
            {
                return Ok(Vec::new());
            }
        }
        // An INBOX whose index header is refused (a damaged or crafted
        // count) is reported where it is used, and the account is left as
        // it is: nothing is written beside a damaged mailbox.
        match self.open_mailbox(user, &MailboxName::inbox()) {
            Ok(mut inbox) => {
                inbox.header()?;
            }
            Err(Error::NoSuchMailbox(_)) => {}
            Err(e) => return Err(e),
        }
        let _names = self.change_names(&user_dir)?;
        let existing = self.list_mailboxes(user)?;
        if !existing.iter().all(is_default) {
            return Ok(Vec::new());
        }
        for m in &existing {
            match self.special_use(user, m) {
                Ok(u) if u.is_empty() => {}
                // Marked already, or a corrupt file left for the
                // administrator to see rather than overwritten.
                _ => return Ok(Vec::new()),
            }
        }
        let mut done = Vec::new();
        for u in SpecialUse::ALL {
            let name = MailboxName::new(u.default_folder())?;
            match self.create_locked(user, &user_dir, &name) {
                Ok(()) | Err(Error::MailboxExists(_)) => {}
                Err(e) => return Err(e),
            }
            let dir = self.mailbox_dir(user, &name, false)?;
            self.write_special_use(&dir, &[u])?;
            done.push(name);
        }
        Ok(done)
    }

    fn write_special_use(&self, dir: &Dir, uses: &[SpecialUse]) -> Result<()> {
        let mut uses = uses.to_vec();
        uses.sort();
        uses.dedup();
        let text: String = uses
            .iter()
            .map(|u| format!("{}\n", u.attribute()))
            .collect();
        let durable = self.options().durability == Durability::Full;
        dir.replace_file(SPECIAL_USE_TMP, SPECIAL_USE_FILE, text.as_bytes(), durable)?;
        if durable {
            dir.fsync()?;
        }
        Ok(())
    }
}

/// Reads `.special-use` of a mailbox directory: missing is none; a file
/// over [`MAX_SPECIAL_USE_BYTES`], not UTF-8, or with a line that is not
/// a known attribute is corrupt (with the offset of the bad line).
fn read_special_use(dir: &Dir) -> Result<Vec<SpecialUse>> {
    let os = fsutil::os(SPECIAL_USE_FILE.as_bytes());
    let mut f = match dir.open_file(os, OFlag::O_RDONLY) {
        Ok(f) => f,
        Err(e) if e.is_not_found() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let path = dir.child_path(os);
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(&mut f, MAX_SPECIAL_USE_BYTES + 1),
        &mut bytes,
    )
    .map_err(|e| Error::io("read", &path, e))?;
    parse_special_use(&bytes).map_err(|(offset, what)| Error::corrupt(&path, offset, what))
}

/// The file's lines as attributes, or (offset, what is wrong).
fn parse_special_use(bytes: &[u8]) -> std::result::Result<Vec<SpecialUse>, (u64, String)> {
    if bytes.len() as u64 > MAX_SPECIAL_USE_BYTES {
        return Err((
            MAX_SPECIAL_USE_BYTES,
            format!("special-use file larger than {MAX_SPECIAL_USE_BYTES} bytes"),
        ));
    }
    let mut out = Vec::new();
    let mut offset = 0u64;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        let text = line.strip_suffix(b"\n").unwrap_or(line);
        if !text.is_empty() {
            let u = std::str::from_utf8(text)
                .ok()
                .and_then(SpecialUse::parse)
                .ok_or_else(|| {
                    (
                        offset,
                        format!(
                            "unknown special-use attribute {:?}",
                            String::from_utf8_lossy(text)
                        ),
                    )
                })?;
            if !out.contains(&u) {
                out.push(u);
            }
        }
        offset += line.len() as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_attributes_and_reports_bad_lines_with_offsets() {
        assert_eq!(
            parse_special_use(b"\\Sent\n\\junk\n").unwrap(),
            vec![SpecialUse::Sent, SpecialUse::Junk]
        );
        assert_eq!(parse_special_use(b"").unwrap(), vec![]);
        let (off, what) = parse_special_use(b"\\Sent\n\\All\n").unwrap_err();
        assert_eq!(off, 6);
        assert!(what.contains("\\All"), "{what}");
        assert!(parse_special_use(&[b'x'; 300]).is_err());
        assert_eq!(SpecialUse::Archive.default_folder(), "Archive");
        assert_eq!(SpecialUse::parse("\\DRAFTS"), Some(SpecialUse::Drafts));
    }

    /// A store with one account `name` that has its INBOX only.
    fn account(name: &str) -> (tempfile::TempDir, Store, UserName) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), crate::Options::default()).unwrap();
        let u = UserName::new(name).unwrap();
        store.ensure_mailbox(&u, &MailboxName::inbox()).unwrap();
        (tmp, store, u)
    }

    /// A login of a provisioned account changes nothing, not even the
    /// names generation (which would empty the user's LIST and STATUS
    /// caches at every login); an account whose INBOX header is refused
    /// gets nothing.
    #[test]
    fn provisioning_writes_only_when_it_creates() {
        let (tmp, store, u) = account("bob");
        assert_eq!(store.provision_special_use(&u).unwrap().len(), 5);
        let gen_file = tmp
            .path()
            .join(u.encoded())
            .join(crate::layout::NAMES_GEN_FILE);
        let before = std::fs::read(&gen_file).unwrap();
        assert!(store.provision_special_use(&u).unwrap().is_empty());
        assert_eq!(std::fs::read(&gen_file).unwrap(), before);

        // A new account whose INBOX index has, in its newest header slot,
        // a count beyond the file (the rest of the header consistent).
        let v = UserName::new("carol").unwrap();
        store.ensure_mailbox(&v, &MailboxName::inbox()).unwrap();
        let mut inbox = store.open_mailbox(&v, &MailboxName::inbox()).unwrap();
        for i in 0..3 {
            inbox
                .append(
                    format!("Subject: {i}\r\n\r\nx\r\n").as_bytes(),
                    Default::default(),
                )
                .unwrap();
        }
        drop(inbox);
        let index = store
            .mailbox_path(&v, &MailboxName::inbox())
            .join(crate::layout::INDEX_NAME);
        let mut b = std::fs::read(&index).unwrap();
        let slot = |b: &[u8], i: usize| {
            crate::format::Header::decode(&b[crate::format::SLOT_OFFSETS[i] as usize..]).ok()
        };
        let newest = match (slot(&b, 0), slot(&b, 1)) {
            (Some(a), Some(c)) if c.generation > a.generation => 1,
            (None, Some(_)) => 1,
            _ => 0,
        };
        let off = crate::format::SLOT_OFFSETS[newest] as usize;
        let mut h = slot(&b, newest).unwrap();
        h.num_records = 0xFFFF_FFF0;
        h.last_uid = h.last_uid.max(h.num_records);
        b[off..off + crate::format::HEADER_SIZE].copy_from_slice(&h.encode());
        std::fs::write(&index, b).unwrap();
        let user_dir = tmp.path().join(v.encoded());
        let names = |d: &std::path::Path| {
            let mut n: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            n.sort();
            n
        };
        let listed = names(&user_dir);
        assert!(store.provision_special_use(&v).is_err());
        assert_eq!(names(&user_dir), listed);
    }

    #[test]
    fn attribute_follows_rename_and_goes_with_delete() {
        let (_tmp, store, u) = account("alice");
        let created = store.provision_special_use(&u).unwrap();
        assert_eq!(created.len(), 5);
        // Only once: the account now has special uses.
        assert!(store.provision_special_use(&u).unwrap().is_empty());
        let sent = MailboxName::new("Sent").unwrap();
        let moved = MailboxName::new("Old/Sent Items").unwrap();
        store.rename_mailbox(&u, &sent, &moved).unwrap();
        assert_eq!(
            store.special_use(&u, &moved).unwrap(),
            vec![SpecialUse::Sent]
        );
        assert!(store.special_use(&u, &sent).unwrap().is_empty());
        // A mailbox with children keeps its directory when deleted: the
        // attribute must not survive into a new mailbox of that name.
        let trash = MailboxName::new("Trash").unwrap();
        store
            .create_mailbox(&u, &MailboxName::new("Trash/Sub").unwrap())
            .unwrap();
        store.delete_mailbox(&u, &trash).unwrap();
        store.create_mailbox(&u, &trash).unwrap();
        assert!(store.special_use(&u, &trash).unwrap().is_empty());
        store.delete_mailbox(&u, &moved).unwrap();
        store.create_mailbox(&u, &moved).unwrap();
        assert!(store.special_use(&u, &moved).unwrap().is_empty());
        let all = store.special_uses(&u).unwrap();
        assert_eq!(all.len(), 3, "{all:?}");
    }
}
