//! Waiting for a committed change of a mailbox (IMAP IDLE, a push
//! notifier, a replication trigger).
//!
//! A [`Watch`] is one waiter's interest in one mailbox. Wait on it with
//! [`Watch::wait`] (blocking), `Watch::wait_async` (with the `tokio`
//! cargo feature), or put [`Watch::fd`] in your own `poll(2)`/`epoll(7)`
//! loop together with a client socket and call [`Watch::drain`] when it is
//! readable.
//!
//! # How a change is noticed
//! A commit bumps the generation in the index header last (see
//! `docs/PROTOCOL.md`), so "the mailbox changed" means "the index's
//! generation, or the index file itself after a repack, is not the one of
//! the caller's [`ViewMark`]". A wait always decides by reading the
//! generation under the shared lock, never from an event alone.
//!
//! * **inotify** (the default, where it works): one inotify instance for
//!   the whole process, read by one background thread, with one pair of
//!   watches per watched mailbox (its `.index` file, and its directory for
//!   a repack that renames a new `.index` into place), shared by every
//!   [`Watch`] on that mailbox. Each `Watch` owns an `eventfd` that the
//!   thread makes readable. A thousand waiters cost one inotify fd (the
//!   kernel's default `fs.inotify.max_user_instances` is 128, so an fd per
//!   waiter would not scale) plus one eventfd each. An overflowed event
//!   queue wakes every waiter. A slow fallback re-check (every
//!   [`FALLBACK`]) covers an event lost some other way.
//! * **polling**: inotify sees only writes made through the local kernel.
//!   On a shared filesystem (NFS, CephFS, ...) another host's commit raises
//!   no event, so the generation is re-read every [`poll_interval`]. A
//!   `Watch` polls when inotify is unavailable, when the kernel refused the
//!   watch (`fs.inotify.max_user_watches`), when it was made with
//!   [`Watch::polling`], after [`force_polling`] was called, or when the
//!   store is on a shared filesystem (`shared_fs`, docs/PROTOCOL.md §8).
//!
//! # Ordering
//! A `Watch` is in place from the moment it is made, and each wait drains
//! its eventfd *before* reading the generation. So a commit is either seen
//! by that read or raises an event after it: no change between the read
//! and the sleep is lost. Make the `Watch` before taking the mark you wait
//! from, or wait at least once (the first read happens before any sleep).
//!
//! ```
//! # fn main() -> mailstore::Result<()> {
//! use std::time::Duration;
//! use mailstore::{MailboxName, Options, SessionView, Store, UserName};
//! use mailstore::watch::{Waited, Watch};
//!
//! # let tmp = tempfile::tempdir().unwrap();
//! let store = Store::open(tmp.path(), Options::default())?;
//! let user = UserName::new("alice")?;
//! store.ensure_mailbox(&user, &MailboxName::inbox())?;
//! let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
//! let view = SessionView::open(&mut mbox)?;
//! let watch = Watch::new(&mbox)?;
//! // Nothing was committed since the view's mark: the wait times out.
//! let waited = watch.wait(&mut mbox, &view.mark(), Duration::from_millis(10))?;
//! assert_eq!(waited, Waited::TimedOut);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

use crate::error::{Error, Result};
use crate::mailbox::{Mailbox, ViewMark};

/// How often a wait re-reads the generation although inotify watches the
/// mailbox: only a lost event needs it, so it is slow.
pub const FALLBACK: Duration = Duration::from_secs(30);
/// The default of [`poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(2);
/// How soon a wait that found a writer holding the index lock looks again
/// (the async wait does not block its task on the lock).
#[cfg(feature = "tokio")]
const BUSY_RETRY: Duration = Duration::from_millis(2);

static FORCE_POLLING: AtomicBool = AtomicBool::new(false);
static POLL_INTERVAL_MS: AtomicU64 = AtomicU64::new(DEFAULT_POLL_INTERVAL.as_millis() as u64);

/// Makes every [`Watch`] made from now on poll the generation instead of
/// using inotify (`true`), or use inotify again (`false`). For a process
/// whose store is on a shared filesystem, where other hosts' commits raise
/// no inotify event. Watches already made keep their mode.
pub fn force_polling(on: bool) {
    FORCE_POLLING.store(on, Ordering::Relaxed);
}

/// Whether [`force_polling`] is on.
pub fn polling_forced() -> bool {
    FORCE_POLLING.load(Ordering::Relaxed)
}

/// Sets how often a polling [`Watch`] re-reads the generation (at least
/// 1 ms). Applies to waits that start afterwards.
pub fn set_poll_interval(every: Duration) {
    let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
    POLL_INTERVAL_MS.store(ms, Ordering::Relaxed);
}

/// How often a polling [`Watch`] re-reads the generation
/// ([`DEFAULT_POLL_INTERVAL`] unless [`set_poll_interval`] changed it).
pub fn poll_interval() -> Duration {
    Duration::from_millis(POLL_INTERVAL_MS.load(Ordering::Relaxed))
}

/// How a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// A commit happened since the mark: check the session view now
    /// ([`crate::SessionView::check`]).
    Changed,
    /// The timeout passed without a commit.
    TimedOut,
}

fn index_flags() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DELETE_SELF
}

fn dir_flags() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE | AddWatchFlags::IN_DELETE_SELF
}

/// A watched mailbox and its waiters.
struct Entry {
    index: PathBuf,
    index_wd: Option<WatchDescriptor>,
    dir_wd: Option<WatchDescriptor>,
    subs: Vec<(u64, Arc<EventFd>)>,
}

#[derive(Default)]
struct State {
    /// Keyed by the mailbox directory.
    mailboxes: HashMap<PathBuf, Entry>,
    /// Which mailbox a watch belongs to.
    wds: HashMap<WatchDescriptor, PathBuf>,
}

/// The process's one inotify instance and the thread that reads it.
struct Watcher {
    ino: Inotify,
    state: Mutex<State>,
}

static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// The process's watcher, started on first use; `None` when inotify is
/// unavailable (waiters poll instead).
fn watcher() -> Option<&'static Watcher> {
    WATCHER
        .get_or_init(|| match Watcher::start() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("inotify unavailable, waits for changes poll instead: {e}");
                None
            }
        })
        .as_ref()
        .copied()
}

/// One waiter's interest in one mailbox; dropping it ends the interest
/// (and the mailbox's inotify watches, when it was the last).
///
/// A `Watch` is `Send` and `Sync`, and independent of the [`Mailbox`]
/// handle it was made from: the waits take the handle as an argument.
pub struct Watch {
    key: PathBuf,
    id: u64,
    efd: Arc<EventFd>,
    /// True when inotify watches the mailbox for this waiter.
    notified: bool,
    /// True when the process watcher lists this waiter (to be removed on
    /// drop), even if the kernel refused the mailbox's watches.
    registered: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("mailbox", &self.key)
            .field("notified", &self.notified)
            .finish()
    }
}

impl Watch {
    /// Watches `mbox` with inotify where possible, else by polling (see
    /// the module documentation). Fails only when no eventfd can be made
    /// (out of file descriptors).
    pub fn new(mbox: &Mailbox) -> Result<Watch> {
        Self::for_index(
            mbox.index_path(),
            polling_forced() || crate::fsmode::active(),
        )
    }

    /// Watches `mbox` by polling its generation every [`poll_interval`],
    /// whatever inotify could do: for a mailbox on a shared filesystem.
    pub fn polling(mbox: &Mailbox) -> Result<Watch> {
        Self::for_index(mbox.index_path(), true)
    }

    fn for_index(index: &Path, poll_only: bool) -> Result<Watch> {
        let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .map_err(|e| Error::nix("eventfd", index, e))?;
        let efd = Arc::new(efd);
        let key = index.parent().unwrap_or(Path::new("/")).to_path_buf();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let unwatched = |key| Watch {
            key,
            id,
            efd: efd.clone(),
            notified: false,
            registered: false,
        };
        if poll_only {
            return Ok(unwatched(key));
        }
        let Some(w) = watcher() else {
            return Ok(unwatched(key));
        };
        let mut st = w.lock();
        let mut entry = match st.mailboxes.remove(&key) {
            Some(e) => e,
            None => Entry {
                index: index.to_path_buf(),
                index_wd: w.ino.add_watch(index, index_flags()).ok(),
                dir_wd: w.ino.add_watch(key.as_path(), dir_flags()).ok(),
                subs: Vec::new(),
            },
        };
        let notified = entry.index_wd.is_some() && entry.dir_wd.is_some();
        for wd in entry.index_wd.iter().chain(entry.dir_wd.iter()) {
            st.wds.insert(*wd, key.clone());
        }
        entry.subs.push((id, efd.clone()));
        st.mailboxes.insert(key.clone(), entry);
        Ok(Watch {
            key,
            id,
            efd,
            notified,
            registered: true,
        })
    }

    /// True when inotify watches the mailbox for this waiter; false when
    /// it polls (then [`fd`](Self::fd) never becomes readable, and a
    /// server polling it must re-check every [`poll_interval`]).
    pub fn is_notified(&self) -> bool {
        self.notified
    }

    /// Readable when the mailbox may have changed: for a server's own
    /// `poll(2)` loop. After it is readable, call [`drain`](Self::drain)
    /// and then check the session view.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }

    /// Consumes pending wakes; call it before re-checking, so a commit
    /// after the check makes [`fd`](Self::fd) readable again.
    pub fn drain(&self) {
        // EAGAIN when nothing is pending.
        let _ = self.efd.read();
    }

    /// A number that differs between watches (to spread timers of many
    /// waiters over time).
    pub fn id_hint(&self) -> u64 {
        self.id
    }

    /// How long one sleep of a wait lasts at most before the generation is
    /// read again.
    fn slice(&self) -> Duration {
        if self.notified {
            FALLBACK
        } else {
            poll_interval()
        }
    }

    /// Blocks until a commit happened in `mbox` since `since` (the mark of
    /// the caller's last look, [`crate::SessionView::mark`]) or `timeout`
    /// passes. Returns at once with [`Waited::Changed`] when the mailbox
    /// already differs from the mark. The generation is read under the
    /// shared lock, which waits behind a writer's commit (bounded by the
    /// store's lock timeout).
    ///
    /// `mbox` must be the handle the mark was taken with.
    pub fn wait(&self, mbox: &mut Mailbox, since: &ViewMark, timeout: Duration) -> Result<Waited> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.drain();
            if changed(mbox, since)? {
                return Ok(Waited::Changed);
            }
            let Some(left) = remaining(deadline) else {
                return Ok(Waited::TimedOut);
            };
            let sleep = left.min(self.slice());
            let ms = u16::try_from(sleep.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.efd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => return Err(Error::nix("poll", &self.key, e)),
            }
        }
    }

    /// Like [`wait`](Self::wait), for a tokio task (cargo feature `tokio`;
    /// needs a runtime with I/O and time enabled). The task never blocks
    /// on the index lock: when a writer holds it, the wait looks again
    /// 2 ms later. Reading the header itself is one short `pread`.
    /// One `wait_async` at a time per `Watch` (the eventfd is registered
    /// with the runtime for the duration of the call).
    #[cfg(feature = "tokio")]
    pub async fn wait_async(
        &self,
        mbox: &mut Mailbox,
        since: &ViewMark,
        timeout: Duration,
    ) -> Result<Waited> {
        use tokio::io::unix::AsyncFd;
        // SAFETY: the Arc keeps the eventfd open, and the same fd, for as
        // long as the AsyncFd holds its clone.
        let afd = unsafe {
            AsyncFd::register_with_interest(self.efd.clone(), tokio::io::Interest::READABLE)
        }
        .map_err(|e| Error::io("register eventfd", &self.key, e.into()))?;
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.drain();
            let busy = match changed_if_free(mbox, since)? {
                Some(true) => return Ok(Waited::Changed),
                Some(false) => false,
                None => true,
            };
            let Some(left) = remaining(deadline) else {
                return Ok(Waited::TimedOut);
            };
            let sleep = left.min(if busy { BUSY_RETRY } else { self.slice() });
            if let Ok(ready) = tokio::time::timeout(sleep, afd.readable()).await {
                let mut guard = ready.map_err(|e| Error::io("wait for eventfd", &self.key, e))?;
                // The next drain reads the counter; a wake after it makes
                // the fd ready again.
                guard.clear_ready();
            }
        }
    }
}

/// Time left before `deadline` (none: the wait never ends by itself),
/// `None` once it has passed.
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    match deadline {
        None => Some(Duration::MAX),
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            (!left.is_zero()).then_some(left)
        }
    }
}

/// Whether the mailbox's current index or generation differs from `since`.
fn changed(mbox: &mut Mailbox, since: &ViewMark) -> Result<bool> {
    let h = mbox.header()?;
    let now = mbox.mark_of(&h);
    Ok(now.epoch != since.epoch || now.generation != since.generation)
}

/// Like [`changed`] without waiting for the lock: `None` when a writer
/// holds or waits for it.
#[cfg(feature = "tokio")]
fn changed_if_free(mbox: &mut Mailbox, since: &ViewMark) -> Result<Option<bool>> {
    let saved = std::mem::replace(&mut mbox.lock_timeout, Duration::ZERO);
    let r = changed(mbox, since);
    mbox.lock_timeout = saved;
    match r {
        Err(Error::LockTimeout { .. }) => Ok(None),
        r => r.map(Some),
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.registered {
            return;
        }
        let Some(w) = WATCHER.get().copied().flatten() else {
            return;
        };
        let mut st = w.lock();
        let Some(entry) = st.mailboxes.get_mut(&self.key) else {
            return;
        };
        entry.subs.retain(|(id, _)| *id != self.id);
        if !entry.subs.is_empty() {
            return;
        }
        if let Some(entry) = st.mailboxes.remove(&self.key) {
            for wd in entry.index_wd.into_iter().chain(entry.dir_wd) {
                st.wds.remove(&wd);
                // Fails harmlessly if the kernel already dropped it.
                let _ = w.ino.rm_watch(wd);
            }
        }
    }
}

impl Watcher {
    fn start() -> std::io::Result<&'static Watcher> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC)?;
        // The watcher lives as long as the process.
        let w: &'static Watcher = Box::leak(Box::new(Watcher {
            ino,
            state: Mutex::new(State::default()),
        }));
        std::thread::Builder::new()
            .name("mailbox-watcher".into())
            .stack_size(256 * 1024)
            .spawn(move || w.run())?;
        Ok(w)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind: use them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        loop {
            let events = match self.ino.read_events() {
                Ok(ev) => ev,
                Err(nix::Error::EINTR | nix::Error::EAGAIN) => continue,
                Err(e) => {
                    // Waiters still have their fallback re-check.
                    tracing::error!("inotify read failed, the mailbox watcher stops: {e}");
                    return;
                }
            };
            self.dispatch(&events);
        }
    }

    /// Wakes the waiters of every mailbox an event may concern.
    fn dispatch(&self, events: &[InotifyEvent]) {
        let mut st = self.lock();
        if events
            .iter()
            .any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW))
        {
            for entry in st.mailboxes.values() {
                wake(entry);
            }
            return;
        }
        let mut woken: Vec<PathBuf> = Vec::new();
        for e in events {
            let Some(key) = st.wds.get(&e.wd).cloned() else {
                continue;
            };
            if e.mask.contains(AddWatchFlags::IN_IGNORED) {
                // The kernel dropped this watch (file or directory gone).
                st.wds.remove(&e.wd);
            }
            let st = &mut *st;
            let Some(entry) = st.mailboxes.get_mut(&key) else {
                continue;
            };
            if Some(e.wd) == entry.dir_wd {
                let index_name = std::ffi::OsStr::new(crate::index::INDEX_NAME);
                if e.name.as_deref() == Some(index_name) {
                    // A new inode at the path: watch it before waking,
                    // so a commit to it after the wake raises an event.
                    if let Ok(wd) = self.ino.add_watch(entry.index.as_path(), index_flags()) {
                        entry.index_wd = Some(wd);
                        st.wds.insert(wd, key.clone());
                    }
                } else if !e
                    .mask
                    .intersects(AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_IGNORED)
                {
                    continue;
                }
            }
            if !woken.contains(&key) {
                woken.push(key);
            }
        }
        for key in &woken {
            if let Some(entry) = st.mailboxes.get(key) {
                wake(entry);
            }
        }
    }
}

fn wake(entry: &Entry) {
    for (_, efd) in &entry.subs {
        // EAGAIN only if the counter would overflow: already readable.
        let _ = efd.write(1);
    }
}
