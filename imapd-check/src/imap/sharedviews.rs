//! Views shared by the sessions of this process that select the same
//! mailbox (`storage::session::SharedView`, docs/PROTOCOL.md §7): the
//! first session's SELECT reads every record, the next ones start from
//! the view last offered and catch up with what changed since, as a
//! re-SELECT does. Their views share the records until each changes
//! them (copy-on-write chunks of 256 messages), so five sessions of a
//! mailbox of a million messages hold about one copy of it, not five.
//!
//! One slot per mailbox directory (device and inode, as the group
//! commit's key: a rename or repack does not change it), kept while some
//! session of the process has the mailbox selected, then dropped with
//! the view it holds. The slot holds the view read last: each SELECT
//! (or DONE) offers its view, which replaces the one on offer only if it
//! was read from the index after it (`Member::offer`).
//! A view leaving the table (a mailbox of a million messages: 100 MB) is
//! dropped after the table's lock is released. While every session of the mailbox
//! idles with a compact view (IMAP IDLE), nothing is kept: idlers hold 12
//! bytes a message, and the offered view would hold 100 for them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use storage::session::{SessionView, SharedView};
use storage::{Error, Mailbox};

/// A mailbox directory: device and inode.
type Key = (u64, u64);

#[derive(Default)]
struct Slot {
    /// Sessions with the mailbox selected ([`Member`]s alive).
    members: usize,
    /// Those of them whose view is not compact.
    full: usize,
    /// The view last offered.
    view: Option<Arc<SharedView>>,
}

static SLOTS: LazyLock<Mutex<HashMap<Key, Slot>>> = LazyLock::new(Default::default);

fn slots() -> MutexGuard<'static, HashMap<Key, Slot>> {
    // A panic while holding it cannot leave a slot half-updated.
    SLOTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session's place in the slot of the mailbox it has selected: the slot
/// lives while some member does.
pub struct Member {
    key: Key,
    /// Its session's view is compact ([`Member::set_compact`]).
    compact: bool,
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut slots = slots();
        let mut gone = None;
        if let Some(slot) = slots.get_mut(&self.key) {
            slot.members = slot.members.saturating_sub(1);
            if !self.compact {
                gone = slot.less_full();
            }
            if slot.members == 0 {
                gone = gone.or(slots.remove(&self.key).and_then(|s| s.view));
            }
        }
        drop(slots);
        drop(gone);
    }
}

impl Slot {
    /// One member fewer with a full view: with none left, the offered
    /// view goes (returned, for the caller to drop outside the lock).
    fn less_full(&mut self) -> Option<Arc<SharedView>> {
        self.full = self.full.saturating_sub(1);
        if self.full == 0 {
            return self.view.take();
        }
        None
    }
}

/// Joins the slot of `mbox`'s mailbox (made when no session of the
/// process has it selected).
pub fn join(mbox: &Mailbox) -> Result<Member, Error> {
    let key = mbox.dir_id()?;
    let mut slots = slots();
    let slot = slots.entry(key).or_default();
    slot.members += 1;
    slot.full += 1;
    Ok(Member {
        key,
        compact: false,
    })
}

impl Member {
    /// The session's view was made compact (IDLE) or full again (DONE).
    pub fn set_compact(&mut self, compact: bool) {
        if self.compact == compact {
            return;
        }
        self.compact = compact;
        let gone = match slots().get_mut(&self.key) {
            Some(slot) if compact => slot.less_full(),
            Some(slot) => {
                slot.full += 1;
                None
            }
            None => None,
        };
        drop(gone);
    }

    /// With a view another session offered, the view a SELECT through
    /// `mbox` gives now, caught up from that one; `None` (nothing read)
    /// without one, or when it was read from another index file (the
    /// mailbox was repacked since): read every record then.
    pub fn start_view(&self, mbox: &mut Mailbox) -> Result<Option<SessionView>, Error> {
        let offered = slots().get(&self.key).and_then(|s| s.view.clone());
        // Outside the table's lock: the catch-up takes the mailbox's.
        let Some(shared) = offered else {
            return Ok(None);
        };
        let view = shared.open(mbox)?;
        if view.is_none() {
            // Read from a file repacked away: not offered any longer (it
            // holds that file, and its disk space, open).
            let gone = match slots().get_mut(&self.key) {
                Some(slot) if slot.view.as_ref().is_some_and(|v| Arc::ptr_eq(v, &shared)) => {
                    slot.view.take()
                }
                _ => None,
            };
            drop(gone);
        }
        Ok(view)
    }

    /// Offers `view`, just read or caught up through `mbox`, to the
    /// sessions that select the mailbox next, when nothing is on offer or
    /// `view`'s records come from a later read of every record than the
    /// offered view's (`SessionView::records_read`): a view caught up
    /// from the offered one (or from an older read) does not replace it,
    /// since sharing touches the reference count of every chunk of the
    /// view, and dropping the replaced one every chunk of that one (2,000
    /// cache lines at a million messages, which a re-SELECT of 0.1 ms
    /// would feel). A session whose catch-up read every record (too much
    /// had changed) replaces it. Only a saving: a view that cannot be
    /// shared is not offered.
    pub fn offer(&self, mbox: &Mailbox, view: &SessionView) {
        let wanted = |slot: &Slot| {
            slot.view
                .as_ref()
                .is_none_or(|v| v.records_read() < view.records_read())
        };
        if !slots().get(&self.key).is_some_and(wanted) {
            return;
        }
        match view.share(mbox) {
            Ok(Some(shared)) => {
                let shared = Arc::new(shared);
                let replaced = match slots().get_mut(&self.key) {
                    Some(slot) if wanted(slot) => slot.view.replace(shared),
                    _ => None,
                };
                drop(replaced);
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "view not offered to other sessions"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage::mailbox::FlagOp;
    use storage::{AppendOptions, Flags, MailboxName, Options, Store, UserName};

    fn slot(mbox: &Mailbox) -> Option<(usize, bool)> {
        let key = mbox.dir_id().unwrap();
        slots().get(&key).map(|s| (s.members, s.view.is_some()))
    }

    /// While every member's view is compact nothing is offered; a member
    /// with a full view offers again.
    #[test]
    fn nothing_is_kept_while_every_member_idles() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("spool"), Options::default()).unwrap();
        let user = UserName::new("u").unwrap();
        let inbox = MailboxName::inbox();
        store.create_mailbox(&user, &inbox).unwrap();
        let mut a = store.open_mailbox(&user, &inbox).unwrap();
        a.append(&b"Subject: x\r\n\r\nx\r\n"[..], AppendOptions::default())
            .unwrap();
        let mut ma = join(&a).unwrap();
        let mut mb = join(&a).unwrap();
        let mut va = SessionView::open(&mut a).unwrap();
        ma.offer(&a, &va);
        assert_eq!(slot(&a), Some((2, true)));
        assert!(va.compact());
        ma.set_compact(true);
        assert_eq!(slot(&a), Some((2, true)), "b's view is full");
        mb.set_compact(true);
        assert_eq!(slot(&a), Some((2, false)), "all idle: nothing kept");
        va.expand(&mut a).unwrap();
        ma.set_compact(false);
        ma.offer(&a, &va);
        assert_eq!(slot(&a), Some((2, true)));
        drop(ma);
        assert_eq!(slot(&a), Some((1, false)), "the one left idles");
        mb.set_compact(false);
        drop(mb);
        assert_eq!(slot(&a), None);
    }

    /// The second session starts from the view the first offered and
    /// sees what changed since; the slot goes with its last member.
    #[test]
    fn a_session_starts_from_the_view_another_offered() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("spool"), Options::default()).unwrap();
        let user = UserName::new("u").unwrap();
        let inbox = MailboxName::inbox();
        store.create_mailbox(&user, &inbox).unwrap();
        let open = || store.open_mailbox(&user, &inbox).unwrap();
        let mut writer = open();
        for i in 0..10 {
            let m = format!("Subject: {i}\r\n\r\nbody\r\n");
            writer
                .append(m.as_bytes(), AppendOptions::default())
                .unwrap();
        }

        let mut a = open();
        let ma = join(&a).unwrap();
        assert_eq!(slot(&a), Some((1, false)));
        assert!(ma.start_view(&mut a).unwrap().is_none(), "nothing offered");
        let va = SessionView::open(&mut a).unwrap();
        ma.offer(&a, &va);
        assert_eq!(slot(&a), Some((1, true)));

        writer
            .store(&[3], FlagOp::Add, Flags::SEEN, &[], None)
            .unwrap();
        writer.expunge(Some(&[5]), false).unwrap();
        writer
            .append(&b"Subject: new\r\n\r\nx\r\n"[..], AppendOptions::default())
            .unwrap();

        let mut b = open();
        let mb = join(&b).unwrap();
        let vb = mb
            .start_view(&mut b)
            .unwrap()
            .expect("started from a's view");
        let fresh = SessionView::open(&mut open()).unwrap();
        assert_eq!(vb.len(), fresh.len());
        assert_eq!(vb.mark().generation, fresh.mark().generation);
        assert!(
            vb.iter()
                .zip(fresh.iter())
                .all(|(x, y)| x.record == y.record)
        );
        assert_eq!(slot(&b), Some((2, true)));
        // Caught up from the offered view: the same read, not offered in
        // its place; a view read later replaces it.
        let key = b.dir_id().unwrap();
        let offered = || slots()[&key].view.as_ref().unwrap().records_read();
        assert_eq!(vb.records_read(), va.records_read());
        mb.offer(&b, &vb);
        assert_eq!(offered(), va.records_read());
        let later = SessionView::open(&mut b).unwrap();
        assert!(later.records_read() > va.records_read());
        mb.offer(&b, &later);
        assert_eq!(offered(), later.records_read());
        ma.offer(&a, &va);
        assert_eq!(
            offered(),
            later.records_read(),
            "an older read does not replace"
        );

        // Repacked since: the offered view is of another file, and is
        // no longer offered.
        writer.repack().unwrap();
        let mut c = open();
        let mc = join(&c).unwrap();
        assert!(mc.start_view(&mut c).unwrap().is_none());
        assert_eq!(slot(&c), Some((3, false)));
        let vc = SessionView::open(&mut c).unwrap();
        mc.offer(&c, &vc);

        drop((ma, mb));
        assert_eq!(slot(&c), Some((1, true)));
        drop(mc);
        assert_eq!(slot(&c), None, "gone with its last member");
    }
}
