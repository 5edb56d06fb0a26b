//! The process-wide caches that the names generation (`namegen.rs`,
//! docs/PROTOCOL.md §6b) validates: each user's listing (the walk over
//! the user's mailboxes with their special uses, what LIST needs) and
//! open mailbox handles (what STATUS needs). Nothing here is trusted over
//! the directories: a cached answer is used only while the user's names
//! generation is even and unchanged since it was taken, and on a shared
//! filesystem nothing is cached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::fsutil::Dir;
use crate::mailbox::Mailbox;
use crate::namegen::{Stamp, current, insert_bounded, read};
use crate::names::{MailboxName, UserName};
use crate::store::Store;

/// Listings kept (one per user and spool); past it, one is dropped.
const MAX_LISTINGS: usize = 4096;
/// Idle mailbox handles kept (three descriptors each), over all
/// mailboxes; past it, one mailbox's are closed.
const MAX_HANDLES: usize = 256;
/// Idle handles kept of one mailbox (as many STATUS commands of it may
/// run at once without opening it).
const MAX_HANDLES_PER_MAILBOX: usize = 4;

impl Store {
    /// Every mailbox of `user`, sorted by name. Directories that are only
    /// parents (no index) are not listed.
    pub fn list_mailboxes(&self, user: &UserName) -> Result<Vec<MailboxName>> {
        Ok(self
            .listing(user)?
            .iter()
            .map(|(name, _)| name.clone())
            .collect())
    }

    /// The user's mailboxes with their special uses, sorted by name: from
    /// the process-wide cache when the user's names generation shows no
    /// change since it was walked (`namegen.rs`), else one walk.
    pub(crate) fn listing(&self, user: &UserName) -> Result<Listing> {
        listing(&self.root, user, || {
            Ok(std::sync::Arc::new(self.walk_with_uses(user)?))
        })
    }

    /// Runs `f` on a handle of mailbox `name` of `user`, kept open in a
    /// process-wide cache between calls as long as no mailbox of the user
    /// was created, deleted or renamed (the names generation,
    /// docs/PROTOCOL.md §6b): a STATUS then costs one header read under
    /// the shared lock instead of opening the mailbox's directories and
    /// index. The handle's own checks still apply (a repacked index is
    /// reopened, a deleted mailbox is an error and the handle is
    /// dropped), so `f` sees what [`Self::open_mailbox`] would give.
    /// `f` may run twice (a cached handle found deleted, then a fresh one).
    pub fn with_mailbox<T>(
        &self,
        user: &UserName,
        name: &MailboxName,
        f: impl Fn(&mut Mailbox) -> Result<T>,
    ) -> Result<T> {
        with_handle(&self.root, user, name, || self.open_mailbox(user, name), f)
    }
}

pub(crate) use crate::special_use::MailboxListing as Listing;

type Key = (PathBuf, String);

fn listings() -> &'static Mutex<HashMap<Key, (Stamp, Listing)>> {
    static L: OnceLock<Mutex<HashMap<Key, (Stamp, Listing)>>> = OnceLock::new();
    L.get_or_init(Default::default)
}

type HandleKey = (PathBuf, String, String);

/// Idle handles per mailbox: each is lent to one caller at a time and
/// given back after, so concurrent STATUS commands of one mailbox neither
/// share a handle nor wait for each other (a lock held across the
/// command made threads queue behind a holder the scheduler had
/// preempted).
#[derive(Default)]
struct HandlePool {
    idle: HashMap<HandleKey, (Stamp, Vec<Mailbox>)>,
    /// Handles in `idle`, over all keys.
    total: usize,
}

impl HandlePool {
    /// An idle handle of `key` opened under `stamp`; handles opened under
    /// another stamp are closed.
    fn take(&mut self, key: &HandleKey, stamp: Stamp) -> Option<Mailbox> {
        let (s, v) = self.idle.get_mut(key)?;
        if *s != stamp {
            let (_, v) = self.idle.remove(key)?;
            self.total -= v.len();
            return None;
        }
        let h = v.pop()?;
        self.total -= 1;
        Some(h)
    }

    /// Keeps `h` (opened under `stamp`) for the next caller, within the
    /// bounds; otherwise it is closed.
    fn give_back(&mut self, key: HandleKey, stamp: Stamp, h: Mailbox) {
        if let Some((s, v)) = self.idle.get_mut(&key) {
            if *s == stamp {
                if v.len() < MAX_HANDLES_PER_MAILBOX && self.total < MAX_HANDLES {
                    v.push(h);
                    self.total += 1;
                }
                return;
            }
            // Opened under another stamp: whichever is older fails the
            // next caller's check; the newest caller's handle is kept.
            if let Some((_, old)) = self.idle.remove(&key) {
                self.total -= old.len();
            }
        }
        if self.total >= MAX_HANDLES {
            // Room for one: a whole key's handles are dropped.
            if let Some(victim) = self.idle.keys().next().cloned()
                && let Some((_, v)) = self.idle.remove(&victim)
            {
                self.total -= v.len();
            }
        }
        if self.total < MAX_HANDLES {
            self.idle.insert(key, (stamp, vec![h]));
            self.total += 1;
        }
    }
}

fn handles() -> &'static Mutex<HandlePool> {
    static H: OnceLock<Mutex<HandlePool>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// A cache map's lock; a panic elsewhere while it was held left no
/// half-made entry (inserts and removals are single calls), so a
/// poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The listing of `user`, from the cache when the names generation says
/// nothing changed since it was walked, else from `walk` (stored when the
/// generation was the same, and even, before and after it).
pub(crate) fn listing(
    root: &Dir,
    user: &UserName,
    walk: impl FnOnce() -> Result<Listing>,
) -> Result<Listing> {
    let Some(before) = current(root, user) else {
        return walk();
    };
    let key = (root.path.clone(), user.as_str().to_string());
    if let Some((s, l)) = lock(listings()).get(&key)
        && *s == before
    {
        return Ok(l.clone());
    }
    let fresh = walk()?;
    if read(root, user) == Some(before) {
        let mut m = lock(listings());
        insert_bounded(&mut m, key, (before, fresh.clone()), MAX_LISTINGS);
    }
    Ok(fresh)
}

/// Runs `f` on a handle of mailbox `name`: an idle cached one when the
/// names generation is unchanged since it was opened, else one from
/// `open`; either is given back for the next call after `f`. A cached
/// handle whose mailbox turns out deleted is closed and `f` runs on a
/// fresh one. A handle whose `f` panicked is never given back.
pub(crate) fn with_handle<T>(
    root: &Dir,
    user: &UserName,
    name: &MailboxName,
    open: impl Fn() -> Result<Mailbox>,
    f: impl Fn(&mut Mailbox) -> Result<T>,
) -> Result<T> {
    let Some(stamp) = current(root, user) else {
        return f(&mut open()?);
    };
    let key = (
        root.path.clone(),
        user.as_str().to_string(),
        name.as_str().to_string(),
    );
    let cached = lock(handles()).take(&key, stamp);
    if let Some(mut h) = cached {
        match f(&mut h) {
            // Closed; a fresh open tells what the name holds now.
            Err(Error::MailboxDeleted) | Err(Error::NoSuchMailbox(_)) => {}
            r => {
                if r.is_ok() {
                    lock(handles()).give_back(key, stamp, h);
                }
                return r;
            }
        }
    }
    let mut mbox = open()?;
    let r = f(&mut mbox);
    if r.is_ok() {
        lock(handles()).give_back(key, stamp, mbox);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Options;

    fn store_with(names: &[&str]) -> (tempfile::TempDir, Store, UserName) {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path(), Options::default()).unwrap();
        let user = UserName::new("u").unwrap();
        for n in names {
            store
                .ensure_mailbox(&user, &MailboxName::new(n).unwrap())
                .unwrap();
        }
        (tmp, store, user)
    }

    /// A handle is lent, not shared: a call made while another call of
    /// the same mailbox is running (here from inside it) gets a handle
    /// of its own instead of waiting, and both come back to the pool.
    #[test]
    fn concurrent_calls_of_one_mailbox_get_their_own_handles() {
        let (_t, store, user) = store_with(&["a"]);
        let a = MailboxName::new("a").unwrap();
        let key = (store.root.path.clone(), "u".to_string(), "a".to_string());
        let idle = || lock(handles()).idle.get(&key).map_or(0, |(_, v)| v.len());
        let n = store
            .with_mailbox(&user, &a, |outer| {
                let inner = store.with_mailbox(&user, &a, |m| Ok(m.header()?.exists))?;
                Ok(outer.header()?.exists + inner)
            })
            .unwrap();
        assert_eq!(n, 0);
        assert_eq!(idle(), 2);
        // Taken again: one of the two idle handles, given back.
        store.with_mailbox(&user, &a, |m| m.header()).unwrap();
        assert_eq!(idle(), 2);
    }

    /// The pool keeps at most MAX_HANDLES_PER_MAILBOX idle handles of one
    /// mailbox and MAX_HANDLES in all; handles opened under another names
    /// generation are closed when found.
    #[test]
    fn pool_bounds_and_stale_stamps() {
        let (_t, store, user) = store_with(&["a", "b"]);
        let stamp = current(&store.root, &user).unwrap();
        let open = |n: &str| {
            store
                .open_mailbox(&user, &MailboxName::new(n).unwrap())
                .unwrap()
        };
        let key = |n: &str| (PathBuf::from("/pool-test"), "u".to_string(), n.to_string());
        let mut pool = HandlePool::default();
        for _ in 0..MAX_HANDLES_PER_MAILBOX + 3 {
            pool.give_back(key("a"), stamp, open("a"));
        }
        assert_eq!(pool.idle[&key("a")].1.len(), MAX_HANDLES_PER_MAILBOX);
        assert_eq!(pool.total, MAX_HANDLES_PER_MAILBOX);
        assert!(pool.take(&key("a"), stamp).is_some());
        assert_eq!(pool.total, MAX_HANDLES_PER_MAILBOX - 1);
        // A names change since: every idle handle of the key is closed.
        let later = Stamp::for_test(stamp, 2);
        assert!(pool.take(&key("a"), later).is_none());
        assert!(!pool.idle.contains_key(&key("a")));
        assert_eq!(pool.total, 0);
        // Many mailboxes: never above MAX_HANDLES.
        for i in 0..MAX_HANDLES + 10 {
            pool.give_back(key(&format!("m{i}")), stamp, open("b"));
            assert!(pool.total <= MAX_HANDLES);
        }
        assert_eq!(
            pool.total,
            pool.idle.values().map(|(_, v)| v.len()).sum::<usize>()
        );
    }
}
