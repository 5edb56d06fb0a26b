//! A view that other sessions of the process start from when they
//! SELECT the same mailbox (docs/PROTOCOL.md §7, "A SELECT of a mailbox
//! another session shows"): instead of reading every record again, a
//! session takes a copy of a view that shares its records (the entries'
//! chunks are copy-on-write) and catches it up with what changed since,
//! as a re-SELECT does. A million messages then cost one read and one
//! copy of the records for all the sessions that select them, not one
//! each, and a second session's SELECT costs what a re-SELECT costs.

use super::{SessionView, Update};
use crate::error::{Error, Result};
use crate::mailbox::Mailbox;

/// A view as a fresh SELECT gave it, to start other sessions' views
/// from ([`SessionView::share`], [`SharedView::open`]). Holds the index
/// file it was read from open, so that no other file can take its
/// identity (device and inode) while it lives.
pub struct SharedView {
    view: SessionView,
    file: std::fs::File,
}

impl std::fmt::Debug for SharedView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedView")
            .field("len", &self.view.len())
            .field("mark", &self.view.mark)
            .finish()
    }
}

impl SessionView {
    /// This view, to start other sessions' views from: `None` unless it
    /// is what a fresh SELECT through `mbox` would give at its mark (not
    /// compact, no expunge held) and its mark is about the index file
    /// `mbox` reads now. Costs a pointer per 256 messages and one
    /// `dup`; the records stay shared until either side changes them.
    pub fn share(&self, mbox: &Mailbox) -> Result<Option<SharedView>> {
        debug_assert_eq!(mbox.index_path(), self.index_path, "wrong mailbox handle");
        if self.slim.is_some() || !self.held.is_empty() || self.mark.epoch != mbox.epoch() {
            return Ok(None);
        }
        Ok(Some(SharedView {
            view: self.duplicate(),
            file: mbox.index_file()?,
        }))
    }

    /// A copy sharing the records; no expunge is held in `self`.
    fn duplicate(&self) -> SessionView {
        SessionView {
            msgs: self.msgs.clone(),
            held: Vec::new(),
            deleted: self.deleted.clone(),
            mark: self.mark,
            floor: self.floor,
            keywords: self.keywords.clone(),
            uidvalidity: self.uidvalidity,
            highestmodseq: self.highestmodseq,
            uid_next: self.uid_next,
            index_path: self.index_path.clone(),
            vanished: false,
            held_floor: None,
            slim: None,
            seen_below: self.seen_below,
            read: self.read,
        }
    }

    /// Orders views by the read of every record their records come from:
    /// a later read (a SELECT, a re-SELECT that read everything, leaving a
    /// compact IDLE by reading) gives a higher number; a view caught up
    /// from another ([`SharedView::open`], [`Self::reopen`] without a full
    /// read, [`Self::expand_from`]) keeps the other's. A process shares
    /// the view read last: an older one has more to catch up with.
    pub fn records_read(&self) -> u64 {
        self.read
    }
}

impl SessionView {
    /// [`expand`](Self::expand) (leaving IDLE) from `fresh`, the view a
    /// SELECT through this view's handle gives now ([`SharedView::open`]):
    /// the same updates and the same view as a read of every record gives,
    /// from memory, the records shared with `fresh`. `None`, and this
    /// view left compact, when `fresh` holds something a compact view
    /// cannot account for (a live message below the view's last UID that
    /// it does not know, a MODSEQ below the one reported): the caller
    /// then expands by reading.
    pub fn expand_from(&mut self, fresh: SessionView) -> Result<Option<Vec<Update>>> {
        debug_assert_eq!(fresh.index_path, self.index_path, "another mailbox's view");
        let Some(slim) = &self.slim else {
            return Ok(Some(Vec::new()));
        };
        if fresh.uidvalidity != self.uidvalidity {
            return Err(Error::MailboxDeleted);
        }
        // One walk over both, in UID order: the compact view's messages
        // gone from the fresh one (expunged, or repacked away), those
        // changed since last reported, and the new ones above its floor.
        let mut gone: Vec<(usize, u32)> = Vec::new();
        let mut changed: Vec<usize> = Vec::new();
        let mut now = fresh.msgs.iter().enumerate().peekable();
        for (i, s) in slim.iter().enumerate() {
            let (uid, modseq) = (s.uid, s.modseq);
            match now.peek() {
                Some((_, e)) if e.record.uid < uid => return Ok(None),
                Some((p, e)) if e.record.uid == uid => {
                    if e.record.modseq < modseq {
                        return Ok(None);
                    }
                    if e.record.modseq > modseq {
                        changed.push(*p);
                    }
                    now.next();
                }
                _ => gone.push((i, uid)),
            }
        }
        let mut grew = false;
        for (_, e) in now {
            if e.record.uid <= self.floor {
                return Ok(None);
            }
            grew = true;
        }
        // In the order a check sends them (`apply`): expunges (highest
        // sequence number first, or one VANISHED), the keyword table,
        // EXISTS, then the FETCHes in sequence order.
        let mut out = Vec::new();
        if !gone.is_empty() {
            if self.vanished {
                out.push(Update::Vanished(gone.iter().map(|&(_, u)| u).collect()));
            } else {
                out.extend(
                    gone.iter()
                        .rev()
                        .map(|&(i, _)| Update::Expunge(i as u32 + 1)),
                );
            }
        }
        if fresh.keywords.len() > self.keywords.len() {
            out.push(Update::Flags(fresh.keywords.clone()));
        }
        if grew {
            out.push(Update::Exists(fresh.len()));
        }
        let vanished = self.vanished;
        *self = fresh;
        self.vanished = vanished;
        out.extend(changed.into_iter().map(|p| {
            let r = &self.msgs[p].record;
            self.fetch(p as u32 + 1, r)
        }));
        Ok(Some(out))
    }
}

impl SharedView {
    /// Messages in the view as shared.
    pub fn len(&self) -> u32 {
        self.view.len()
    }

    /// [`SessionView::records_read`] of the shared view.
    pub fn records_read(&self) -> u64 {
        self.view.read
    }

    /// Whether the shared view holds no message.
    pub fn is_empty(&self) -> bool {
        self.view.is_empty()
    }

    /// The view [`SessionView::open`] would give through `mbox` now,
    /// started from this one and caught up with what changed since it
    /// was shared ([`SessionView::reopen`]: the records the change log
    /// names and the appended ones; every record when the file was
    /// replaced or much changed). `None`, with nothing read, when `mbox`
    /// does not read the index file this view was read from (another
    /// mailbox, or this one repacked since): the caller opens afresh.
    /// The caller makes sure `mbox` is the mailbox the client names, as
    /// for [`SessionView::open`].
    pub fn open(&self, mbox: &mut Mailbox) -> Result<Option<SessionView>> {
        if !mbox.same_index_as(&self.file)? {
            return Ok(None);
        }
        let mut view = self.view.duplicate();
        // The same file: the marks of both handles count the same
        // generations, records and MODSEQs; only the epoch is the
        // handle's own.
        view.mark.epoch = mbox.epoch();
        view.index_path = mbox.index_path().to_path_buf();
        view.reopen(mbox).map(Some)
    }
}
