//! The few mailboxes a session asked STATUS about lately, kept open, so
//! that a client polling STATUS of its folders (or LIST-STATUS) costs a
//! lock and a header read instead of opening the user's directory, the
//! mailbox's directory, its index and its staging directory again each
//! time (17 system calls to 8, measured with `strace -c`).
//!
//! A kept handle is used only while the name still leads to its
//! directory: one `lstat` of the mailbox's path must give the device and
//! inode of the directory the handle holds open. A renamed mailbox no
//! longer matches (the name leads elsewhere or nowhere) and is opened
//! again by name; a deleted one answers `MailboxDeleted` from its header
//! and is opened again too (then NONEXISTENT). A directory held open
//! keeps its inode number, so a mailbox created again under the name
//! cannot be taken for the old one. At most [`KEEP`] handles per session.

use std::os::fd::AsFd;

use storage::{Error, Mailbox, MailboxName, Store, UserName};

/// Handles kept per session.
pub const KEEP: usize = 4;

type Id = (u64, u64);

/// Whether a handle from [`OpenBoxes::take`] was a kept one (with its
/// directory's identity).
#[derive(Clone, Copy, Debug, Default)]
pub struct Kept(Option<Id>);

impl Kept {
    pub fn was_kept(self) -> bool {
        self.0.is_some()
    }
}

#[derive(Default)]
pub struct OpenBoxes {
    /// Most recently used first.
    boxes: Vec<(MailboxName, Id, Mailbox)>,
}

fn dir_id(mbox: &Mailbox) -> Option<Id> {
    let st = nix::sys::stat::fstat(mbox.dir().fd.as_fd()).ok()?;
    Some((st.st_dev, st.st_ino))
}

fn path_id(path: &std::path::Path) -> Option<Id> {
    let st = nix::sys::stat::lstat(path).ok()?;
    (st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR).then_some((st.st_dev, st.st_ino))
}

impl OpenBoxes {
    /// An open handle of `name`, and whether it is a kept one: kept if the
    /// name still leads to its directory, else newly opened. Give it back
    /// with [`OpenBoxes::put`] when done. A caller whose kept handle
    /// answers `MailboxDeleted` opens the name again.
    pub fn take(
        &mut self,
        store: &Store,
        user: &UserName,
        name: &MailboxName,
    ) -> Result<(Mailbox, Kept), Error> {
        let here = path_id(&store.mailbox_path(user, name));
        let kept = self
            .boxes
            .iter()
            .position(|(n, id, _)| n == name && Some(*id) == here)
            .map(|i| self.boxes.remove(i));
        // Whatever else was kept under the name is stale.
        self.boxes.retain(|(n, _, _)| n != name);
        match kept {
            Some((_, id, mbox)) => Ok((mbox, Kept(Some(id)))),
            None => Ok((store.open_mailbox(user, name)?, Kept(None))),
        }
    }

    /// Keeps `mbox`, the handle of `name` that [`OpenBoxes::take`] gave
    /// with `kept`, as the most recently used.
    pub fn put(&mut self, name: &MailboxName, mbox: Mailbox, kept: Kept) {
        let Some(id) = kept.0.or_else(|| dir_id(&mbox)) else {
            return;
        };
        self.boxes.retain(|(n, _, _)| n != name);
        self.boxes.insert(0, (name.clone(), id, mbox));
        self.boxes.truncate(KEEP);
    }
}
