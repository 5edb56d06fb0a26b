//! The process-wide caches that the names generation (`namegen.rs`,
//! docs/PROTOCOL.md §6b) validates: each user's listing (the walk over
//! the user's mailboxes with their special uses, what LIST needs) and
//! open mailbox handles (what STATUS needs). Nothing here is trusted over
//! the directories: a cached answer is used only while the user's names
//! generation is even and unchanged since it was taken, and on a shared
//! filesystem nothing is cached.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::fsutil::Dir;
use crate::mailbox::Mailbox;
use crate::namegen::{Stamp, current, read};
use crate::names::{MailboxName, UserName};
use crate::store::Store;

/// Listings kept (one per user and spool); past it, one is dropped.
const MAX_LISTINGS: usize = 4096;
/// Mailbox handles kept (three descriptors each); past it, one is dropped.
const MAX_HANDLES: usize = 256;

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

type HandleMap = HashMap<HandleKey, (Stamp, Arc<Mutex<Mailbox>>)>;

fn handles() -> &'static Mutex<HandleMap> {
    static H: OnceLock<Mutex<HandleMap>> = OnceLock::new();
    H.get_or_init(Default::default)
}

/// A cache map's lock; a panic elsewhere while it was held left no
/// half-made entry (inserts and removals are single calls), so a
/// poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn insert_bounded<K: Eq + std::hash::Hash + Clone, V>(
    m: &mut HashMap<K, V>,
    k: K,
    v: V,
    max: usize,
) {
    if m.len() >= max
        && !m.contains_key(&k)
        && let Some(victim) = m.keys().next().cloned()
    {
        m.remove(&victim);
    }
    m.insert(k, v);
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

/// Runs `f` on a handle of mailbox `name`: a cached one when the names
/// generation is unchanged since it was opened, else one from `open`
/// (kept for the next call when the generation was stable). A cached
/// handle whose mailbox turns out deleted is dropped and `f` runs on a
/// fresh one.
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
    let cached = {
        let mut m = lock(handles());
        match m.get(&key) {
            Some((s, h)) if *s == stamp => Some(h.clone()),
            // Opened before a change of names: closed now.
            Some(_) => {
                m.remove(&key);
                None
            }
            None => None,
        }
    };
    if let Some(h) = cached {
        // A handle whose user panicked is dropped, never reused.
        let r = h.lock().ok().map(|mut m| f(&mut m));
        match r {
            None | Some(Err(Error::MailboxDeleted)) | Some(Err(Error::NoSuchMailbox(_))) => {
                lock(handles()).remove(&key);
            }
            Some(r) => return r,
        }
    }
    let mut mbox = open()?;
    let r = f(&mut mbox);
    if r.is_ok() {
        let mut m = lock(handles());
        insert_bounded(
            &mut m,
            key,
            (stamp, Arc::new(Mutex::new(mbox))),
            MAX_HANDLES,
        );
    }
    r
}
