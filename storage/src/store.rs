//! The spool: `SPOOL/USER/MAILBOX...`, one directory per mailbox
//! component, names encoded as in [`crate::names`]. A mailbox exists when
//! its directory holds `.index`; creating the index (link of a complete
//! temporary file) is the commit point of mailbox creation.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::OFlag;
use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::format::Header;
use crate::fsutil::{self, Dir};
pub use crate::index::Durability;
use crate::index::{INDEX_NAME, IndexFile};
use crate::lock::{LockGuard, LockKind};
use crate::mailbox::{Mailbox, STAGE_DIR, parse_message_file_name};
use crate::names::{MailboxName, UserName};
use crate::tree::{child_dirs, holds_live_index};

mod uidvalidity;
pub(crate) use uidvalidity::UidValidityChoice;

pub(crate) use crate::layout::{NAMES_LOCK, UIDVALIDITY_FILE};
const DELETED_MARK: &str = ".index.deleted";

/// How a [`Store`] writes and waits.
#[derive(Clone, Debug)]
pub struct Options {
    /// Whether writes are fsynced ([`Durability::Full`], the default) or not
    /// (tests and benchmarks only).
    pub durability: Durability,
    /// How long any lock wait may take before [`Error::LockTimeout`].
    pub lock_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Full,
            lock_timeout: Duration::from_secs(30),
        }
    }
}

/// A spool: the root directory of every user's mailboxes. Open it once per
/// process and share it (`Send + Sync`, every method takes `&self`).
///
/// ```
/// # fn main() -> mailstore::Result<()> {
/// use mailstore::{MailboxName, Options, Store, UserName};
/// # let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), Options::default())?;
/// let user = UserName::new("alice")?;
/// assert!(!store.user_exists(&user)?);
/// store.ensure_mailbox(&user, &MailboxName::inbox())?;
/// store.create_mailbox(&user, &MailboxName::new("Archive")?)?;
/// let names: Vec<String> = store.list_mailboxes(&user)?.iter().map(|n| n.to_string()).collect();
/// assert_eq!(names, ["Archive", "INBOX"]);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Store {
    pub(crate) root: Dir,
    opts: Options,
}

impl Store {
    /// Opens the spool at `root`, creating it (0700) if missing.
    pub fn open(root: &Path, opts: Options) -> Result<Store> {
        if !root.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(fsutil::DIR_MODE)
                .create(root)
                .map_err(|e| Error::io("create spool", root, e))?;
        }
        let root = Dir::open_root(root)?;
        crate::sharedfs::check_spool(&root)?;
        Ok(Store { root, opts })
    }

    /// The spool's root directory.
    pub fn root(&self) -> &Path {
        &self.root.path
    }
    /// The options it was opened with.
    pub fn options(&self) -> &Options {
        &self.opts
    }

    pub(crate) fn user_dir(&self, user: &UserName, create: bool) -> Result<Dir> {
        let enc = user.encoded();
        let os = fsutil::os(enc.as_bytes());
        if create && self.root.mkdir(os)? && self.opts.durability == Durability::Full {
            self.root.fsync()?;
        }
        match self.root.open_dir(os) {
            Err(e) if e.is_not_found() => Err(Error::NoSuchUser(user.to_string())),
            r => r,
        }
    }

    /// Walks to a mailbox's directory, creating missing components if asked.
    pub(crate) fn mailbox_dir(
        &self,
        user: &UserName,
        name: &MailboxName,
        create: bool,
    ) -> Result<Dir> {
        let mut dir = self.user_dir(user, create)?;
        for c in name.encoded_components() {
            let os = fsutil::os(c.as_bytes());
            if create && dir.mkdir(os)? && self.opts.durability == Durability::Full {
                dir.fsync()?;
            }
            dir = match dir.open_dir(os) {
                Err(e) if e.is_not_found() => {
                    return Err(Error::NoSuchMailbox(name.to_string()));
                }
                r => r?,
            };
        }
        Ok(dir)
    }

    /// A user is known when the store has their INBOX.
    pub fn user_exists(&self, user: &UserName) -> Result<bool> {
        match self.mailbox_dir(user, &MailboxName::inbox(), false) {
            Ok(d) => d.exists(fsutil::os(INDEX_NAME.as_bytes())),
            Err(Error::NoSuchUser(_)) | Err(Error::NoSuchMailbox(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A mailbox exists when its directory holds `.index` and the index
    /// is not marked DELETED (a delete that died before its commit point,
    /// which the next create, delete or rename of the name finishes).
    pub fn mailbox_exists(&self, user: &UserName, name: &MailboxName) -> Result<bool> {
        match self.mailbox_dir(user, name, false) {
            Ok(d) => holds_live_index(&d),
            Err(Error::NoSuchUser(_)) | Err(Error::NoSuchMailbox(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// A new UIDVALIDITY for `user`: the current time, but always above
    /// any value handed out before, so a mailbox deleted and created again
    /// in the same second still gets a new one.
    fn next_uidvalidity(&self, user_dir: &Dir, choice: UidValidityChoice) -> Result<u32> {
        let os = fsutil::os(UIDVALIDITY_FILE.as_bytes());
        let file = std::sync::Arc::new(user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT)?);
        let path = user_dir.child_path(os);
        let _g = LockGuard::acquire(
            file.clone(),
            LockKind::Exclusive,
            self.opts.lock_timeout,
            &path,
        )?;
        let mut buf = [0u8; 4];
        let n = fsutil::read_at_most(&file, &mut buf, 0, &path)?;
        let last = if n == 4 { u32::from_le_bytes(buf) } else { 0 };
        if last == u32::MAX {
            // No value above it is left: handing out u32::MAX again would
            // give a new mailbox the UIDVALIDITY of an old one.
            return Err(Error::corrupt(
                &path,
                0,
                "the last UIDVALIDITY handed out is 4294967295: none is left above it",
            ));
        }
        let now = fsutil::now().clamp(1, u32::MAX as i64) as u32;
        let next = choice.pick(last, now)?;
        fsutil::write_all_at(&file, &next.to_le_bytes(), 0, &path)?;
        if self.opts.durability == Durability::Full {
            fsutil::fdatasync(&file, &path)?;
        }
        Ok(next)
    }

    /// Creates a mailbox (and its user directory and parents as plain
    /// directories). Fails with [`Error::MailboxExists`] if it exists.
    pub fn create_mailbox(&self, user: &UserName, name: &MailboxName) -> Result<()> {
        let user_dir = self.user_dir(user, true)?;
        let _names = self.change_names(&user_dir)?;
        self.create_locked(user, &user_dir, name)
    }

    /// [`Self::create_mailbox`] with the UIDVALIDITY picked by `choice`.
    pub(crate) fn create_mailbox_choosing(
        &self,
        user: &UserName,
        name: &MailboxName,
        choice: UidValidityChoice,
    ) -> Result<()> {
        let user_dir = self.user_dir(user, true)?;
        let _names = self.change_names(&user_dir)?;
        self.create_locked_choosing(user, &user_dir, name, choice)
    }

    /// [`Self::create_mailbox`] with the user's name lock held.
    pub(crate) fn create_locked(
        &self,
        user: &UserName,
        user_dir: &Dir,
        name: &MailboxName,
    ) -> Result<()> {
        self.create_locked_choosing(user, user_dir, name, UidValidityChoice::New)
    }

    fn create_locked_choosing(
        &self,
        user: &UserName,
        user_dir: &Dir,
        name: &MailboxName,
        choice: UidValidityChoice,
    ) -> Result<()> {
        let dir = self.mailbox_dir(user, name, true)?;
        let index_os = fsutil::os(INDEX_NAME.as_bytes());
        if dir.exists(index_os)? {
            if holds_live_index(&dir)? {
                return Err(Error::MailboxExists(name.to_string()));
            }
            self.finish_interrupted_delete(&dir)?;
        }
        if dir.exists(fsutil::os(DELETED_MARK.as_bytes()))? {
            finish_delete_in_place(&dir)?;
        }
        // No index here yet: a change log left by anything before (a
        // mailbox deleted in place) describes no index of this one.
        crate::changelog::reset(&dir)?;
        dir.mkdir(fsutil::os(STAGE_DIR.as_bytes()))?;
        let now = fsutil::now();
        let header = Header {
            generation: 1,
            uidvalidity: self.next_uidvalidity(user_dir, choice)?,
            created: now,
            ..Header::default()
        };
        // Unique per thread: two sessions of one LMTP server may create
        // the same mailbox at once, and one must not unlink the other's.
        // A recovery in this directory may still remove the temporary
        // file of a creator it cannot tell from a dead one's (no lock
        // covers it): the link then fails with ENOENT, and we try again.
        let mut attempts = 0;
        loop {
            let tmp = format!("{INDEX_NAME}.create.{}", fsutil::unique_suffix());
            let tmp_os = fsutil::os(tmp.as_bytes());
            IndexFile::write_new(&dir, &tmp, &header, &[], self.opts.durability)?;
            // link() fails with EEXIST when a concurrent creator won:
            // exactly one index ever appears, and nobody sees a partial one.
            let linked = nix::unistd::linkat(
                dir.fd.as_fd(),
                tmp_os,
                dir.fd.as_fd(),
                index_os,
                nix::fcntl::AtFlags::empty(),
            );
            dir.unlink(tmp_os)?;
            match linked {
                Ok(()) => break,
                Err(nix::Error::EEXIST) => return Err(Error::MailboxExists(name.to_string())),
                Err(nix::Error::ENOENT) if attempts < 10 => attempts += 1,
                Err(e) => return Err(Error::nix("link", dir.child_path(index_os), e)),
            }
        }
        if self.opts.durability == Durability::Full {
            dir.fsync()?;
        }
        crate::fault::point("create.after_link")?;
        Ok(())
    }

    /// Creates the mailbox unless it exists; true if this call created it.
    /// Concurrent callers all succeed and exactly one creates.
    pub fn ensure_mailbox(&self, user: &UserName, name: &MailboxName) -> Result<bool> {
        match self.create_mailbox(user, name) {
            Ok(()) => Ok(true),
            Err(Error::MailboxExists(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `name` of `user` still names the mailbox `mbox` has open:
    /// the index file at that name's path is `mbox`'s (the same device
    /// and inode). A mailbox renamed away with another renamed onto the
    /// name, or deleted and created again, has another file; so has one
    /// repacked or reconstructed since. False when nothing is there.
    ///
    /// For a SELECT of the mailbox a session already has open
    /// (`SessionView::reopen`): one `openat2` of the path (no symlink
    /// anywhere below the spool's root, as every open of the store) and
    /// two `fstat`s, instead of opening a handle by the name to compare
    /// with. Kernels without `openat2` get that handle.
    pub fn still_names(&self, user: &UserName, name: &MailboxName, mbox: &Mailbox) -> Result<bool> {
        use nix::fcntl::{OpenHow, ResolveFlag};
        let mut path = user.encoded();
        for c in name.encoded_components() {
            path.push('/');
            path.push_str(&c);
        }
        path.push('/');
        path.push_str(INDEX_NAME);
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        match nix::fcntl::openat2(self.root.fd.as_fd(), path.as_str(), how) {
            Ok(fd) => mbox.same_index_as(&std::fs::File::from(fd)),
            Err(nix::Error::ENOENT | nix::Error::ENOTDIR) => Ok(false),
            // Kernels before 5.6 (ENOSYS), a seccomp filter that does not
            // know the call (EPERM), or a path longer than one call takes
            // (ENAMETOOLONG): a handle, component by component.
            Err(nix::Error::ENOSYS | nix::Error::EPERM | nix::Error::ENAMETOOLONG) => {
                match self.open_mailbox(user, name) {
                    Ok(other) => mbox.same_index(&other),
                    Err(Error::NoSuchMailbox(_) | Error::NoSuchUser(_)) => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(Error::io(
                "open",
                self.root.path.join(&path),
                std::io::Error::from(e),
            )),
        }
    }

    /// Opens a handle on a mailbox ([`Error::NoSuchMailbox`] when it does not
    /// exist). One handle per session; it holds a few file descriptors and no
    /// lock between calls.
    pub fn open_mailbox(&self, user: &UserName, name: &MailboxName) -> Result<Mailbox> {
        let dir = match self.mailbox_dir(user, name, false) {
            Err(Error::NoSuchUser(_)) if !name.is_inbox() => {
                return Err(Error::NoSuchMailbox(name.to_string()));
            }
            r => r?,
        };
        match Mailbox::open_dir(
            name.clone(),
            dir,
            self.opts.durability,
            self.opts.lock_timeout,
        ) {
            Err(Error::NoSuchMailbox(_)) if name.is_inbox() && !self.user_exists(user)? => {
                Err(Error::NoSuchUser(user.to_string()))
            }
            r => r,
        }
    }

    /// Deletes a mailbox. Sessions holding it see it as deleted at their
    /// next check. A mailbox with children keeps its directory (as a
    /// non-selectable parent); a leaf is moved aside in one rename and then
    /// removed.
    pub fn delete_mailbox(&self, user: &UserName, name: &MailboxName) -> Result<()> {
        if name.is_inbox() {
            return Err(Error::InvalidName {
                kind: "mailbox",
                name: name.to_string(),
                reason: "INBOX cannot be deleted",
            });
        }
        let user_dir = self.user_dir(user, false)?;
        let _names = self.change_names(&user_dir)?;
        let mut mbox = self.open_mailbox(user, name)?;
        let parent_name = name.parent();
        let parent = match &parent_name {
            Some(p) => self.mailbox_dir(user, p, false)?,
            None => self.user_dir(user, false)?,
        };
        let leaf = name.encoded_components().pop().expect("non-empty name");
        let has_children = !child_dirs(mbox.dir())?.is_empty();
        match mbox.mark_deleted() {
            // Marked by a delete that died before its commit point: finish it.
            Ok(()) | Err(Error::MailboxDeleted) => {}
            Err(e) => return Err(e),
        }
        crate::fault::point("delete.after_mark")?;
        if has_children {
            // Commit point: the index is renamed to the deletion mark.
            let d = mbox.dir();
            d.rename(
                fsutil::os(INDEX_NAME.as_bytes()),
                d,
                fsutil::os(DELETED_MARK.as_bytes()),
            )?;
            if self.opts.durability == Durability::Full {
                d.fsync()?;
            }
            crate::fault::point("delete.after_commit")?;
            finish_delete_in_place(d)?;
        } else {
            // Commit point: the directory leaves the namespace.
            let grave = format!(".deleted.{}", fsutil::unique_suffix());
            parent.rename(
                fsutil::os(leaf.as_bytes()),
                &user_dir,
                fsutil::os(grave.as_bytes()),
            )?;
            if self.opts.durability == Durability::Full {
                parent.fsync()?;
            }
            crate::fault::point("delete.after_commit")?;
            // A handle that resolved the mailbox before the rename may
            // still recreate `.stage` in it (Mailbox::open_dir): list and
            // remove again while that happens.
            let mut tries = 0;
            loop {
                match remove_tree(&user_dir, grave.as_bytes()) {
                    Err(Error::Io { source, .. })
                        if source.raw_os_error() == Some(libc::ENOTEMPTY) && tries < 20 =>
                    {
                        tries += 1;
                    }
                    r => return r,
                }
            }
        }
        Ok(())
    }

    /// Serializes the changes to one user's mailbox names (create, delete,
    /// rename) across processes and threads: without it a CREATE of
    /// `a/b` could land in `a` between a DELETE's check for children and
    /// its rename, and be removed with it. Taken before any index lock;
    /// deliveries and reads never take it.
    pub(crate) fn lock_names(&self, user_dir: &Dir) -> Result<LockGuard> {
        let os = fsutil::os(NAMES_LOCK.as_bytes());
        let file = std::sync::Arc::new(user_dir.open_file(os, OFlag::O_RDWR | OFlag::O_CREAT)?);
        LockGuard::acquire(
            file,
            LockKind::Exclusive,
            self.opts.lock_timeout,
            &user_dir.child_path(os),
        )
    }

    /// [`Self::lock_names`] for a change of the user's mailboxes or their
    /// special uses: the names generation is odd until the guard is
    /// dropped (after the change), so no process caches a listing taken
    /// meanwhile (`namegen.rs`, PROTOCOL.md §6b).
    pub(crate) fn change_names(&self, user_dir: &Dir) -> Result<crate::namegen::NamesChange> {
        crate::namegen::NamesChange::begin_at(user_dir, self.opts.lock_timeout)
    }

    /// Finishes a delete that died after its DELETED commit and before its
    /// commit point (PROTOCOL.md §6): under the index's exclusive lock, the
    /// index is renamed to the deletion mark and the mailbox's files are
    /// removed; the directory stays (children, or a create about to reuse
    /// it). Nothing to do if the index is live or gone.
    fn finish_interrupted_delete(&self, dir: &Dir) -> Result<()> {
        let idx = match IndexFile::open(dir) {
            Ok(i) => i,
            Err(e) if e.is_not_found() => {
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let _g = LockGuard::acquire(
            idx.file.clone(),
            LockKind::Exclusive,
            self.opts.lock_timeout,
            &idx.path,
        )?;
        if !idx.read_header()?.is_deleted() {
            return Ok(());
        }
        dir.rename(
            fsutil::os(INDEX_NAME.as_bytes()),
            dir,
            fsutil::os(DELETED_MARK.as_bytes()),
        )?;
        if self.opts.durability == Durability::Full {
            dir.fsync()?;
        }
        tracing::warn!(path = %idx.path.display(), "finished a mailbox delete that was interrupted");
        finish_delete_in_place(dir)
    }

    /// Renames a mailbox and its children in one directory rename, under
    /// the source's exclusive lock. A delivery racing the rename lands in
    /// the mailbox under its old or its new name, never nowhere.
    pub fn rename_mailbox(
        &self,
        user: &UserName,
        from: &MailboxName,
        to: &MailboxName,
    ) -> Result<()> {
        if to.is_inbox() {
            // INBOX always exists (RFC 3501 6.3.5).
            return Err(Error::MailboxExists(to.to_string()));
        }
        let user_dir = self.user_dir(user, false)?;
        let _names = self.change_names(&user_dir)?;
        if from.is_inbox() {
            return self.rename_inbox(user, &user_dir, to);
        }
        if to.as_str().starts_with(&format!("{}/", from.as_str())) {
            return Err(Error::InvalidName {
                kind: "mailbox",
                name: to.to_string(),
                reason: "cannot rename a mailbox into itself",
            });
        }
        if self.mailbox_exists(user, to)? {
            return Err(Error::MailboxExists(to.to_string()));
        }
        let mut mbox = self.open_mailbox(user, from)?;
        let from_parent = match from.parent() {
            Some(p) => self.mailbox_dir(user, &p, false)?,
            None => self.user_dir(user, false)?,
        };
        let to_parent = match to.parent() {
            Some(p) => self.mailbox_dir(user, &p, true)?,
            None => self.user_dir(user, false)?,
        };
        let from_leaf = from.encoded_components().pop().expect("non-empty");
        let to_leaf = to.encoded_components().pop().expect("non-empty");
        let durable = self.opts.durability == Durability::Full;
        if let Ok(d) = self.mailbox_dir(user, to, false)
            && d.exists(fsutil::os(INDEX_NAME.as_bytes()))?
        {
            // `to` is a delete that died before its commit point: finish
            // it, and drop its directory unless it has children.
            self.finish_interrupted_delete(&d)?;
            if child_dirs(&d)?.is_empty() {
                to_parent.rmdir(fsutil::os(to_leaf.as_bytes()))?;
            }
        }
        mbox.with_exclusive(|_| {
            if to_parent.exists(fsutil::os(to_leaf.as_bytes()))? {
                return Err(Error::MailboxExists(to.to_string()));
            }
            from_parent.rename(
                fsutil::os(from_leaf.as_bytes()),
                &to_parent,
                fsutil::os(to_leaf.as_bytes()),
            )?;
            if durable {
                to_parent.fsync()?;
                from_parent.fsync()?;
            }
            crate::fault::point("rename.after_rename")
        })
    }

    /// RFC 3501 6.3.5: renaming INBOX moves all its messages into a new
    /// mailbox `to` and leaves INBOX empty (same UIDVALIDITY); children of
    /// INBOX stay where they are. The messages move in one
    /// [`crate::transfer::move_messages`], atomic for every session; a
    /// message delivered to INBOX after that move's commit stays in INBOX.
    /// A crash after the creation of `to` leaves it empty and INBOX intact.
    fn rename_inbox(&self, user: &UserName, user_dir: &Dir, to: &MailboxName) -> Result<()> {
        self.create_locked(user, user_dir, to)?;
        let mut inbox = self.open_mailbox(user, &MailboxName::inbox())?;
        let mut dst = self.open_mailbox(user, to)?;
        for _ in 0..100 {
            let uids: Vec<u32> = inbox
                .snapshot()?
                .records
                .iter()
                .filter(|r| !r.is_expunged())
                .map(|r| r.uid)
                .collect();
            match crate::transfer::move_messages(&mut inbox, &uids, &mut dst, None) {
                Ok(_) => return Ok(()),
                // Expunged by another session since the snapshot: all or
                // nothing, so nothing moved; take a fresh list.
                Err(Error::Expunged(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::LockTimeout {
            path: self.mailbox_path(user, &MailboxName::inbox()),
            kind: "stable INBOX for rename",
            waited: self.opts.lock_timeout,
        })
    }

    /// Bytes stored for `user` over all mailboxes (for quota).
    pub fn usage(&self, user: &UserName) -> Result<u64> {
        let mut total = 0;
        for name in self.list_mailboxes(user)? {
            // A mailbox deleted since the listing holds nothing.
            match self.open_mailbox(user, &name).and_then(|mut m| m.header()) {
                Ok(h) => total = h.total_bytes.saturating_add(total),
                Err(Error::NoSuchMailbox(_)) | Err(Error::MailboxDeleted) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }

    /// The directory path of a mailbox (for tools and messages).
    pub fn mailbox_path(&self, user: &UserName, name: &MailboxName) -> PathBuf {
        let mut p = self.root.path.join(user.encoded());
        for c in name.encoded_components() {
            p.push(c);
        }
        p
    }
}

/// Removes what a deleted mailbox left in a directory that still has
/// children: message files, staging, metadata, the duplicate log, then
/// the deletion mark.
fn finish_delete_in_place(dir: &Dir) -> Result<()> {
    for (name, _) in dir.entries()? {
        if parse_message_file_name(&name).is_some()
            || name == b".meta"
            || name == crate::recent::RECENT_NAME.as_bytes()
            || name == crate::layout::SPECIAL_USE_FILE.as_bytes()
            || name == crate::dedup::DEDUP_NAME.as_bytes()
            || name == crate::dedup::DEDUP_TMP_NAME.as_bytes()
            || name == crate::changelog::CHANGES_NAME.as_bytes()
        {
            dir.unlink(fsutil::os(&name))?;
        }
    }
    remove_tree(dir, STAGE_DIR.as_bytes())?;
    dir.unlink(fsutil::os(DELETED_MARK.as_bytes()))
}

/// Removes `name` under `parent` recursively, never following symlinks.
fn remove_tree(parent: &Dir, name: &[u8]) -> Result<()> {
    let os = fsutil::os(name);
    if !parent.is_dir(os) {
        return parent.unlink(os);
    }
    let dir = parent.open_dir(os)?;
    for (child, _) in dir.entries()? {
        remove_tree(&dir, &child)?;
    }
    parent.rmdir(os)
}

use std::os::unix::fs::DirBuilderExt;
