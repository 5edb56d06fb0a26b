//! One inotify instance for the whole server, shared by every IDLE.
//!
//! A per-session inotify instance does not scale: the kernel's default
//! `fs.inotify.max_user_instances` is 128, so the 129th IDLE of a server
//! would fail. Here one watcher thread holds the only inotify fd, with one
//! pair of watches per mailbox that some session idles on (the `.index`
//! file, and the mailbox directory for a repack that renames a new
//! `.index` into place), counted by how many sessions use them. Each
//! session gets an eventfd that the watcher makes readable; the session
//! polls it together with its socket.
//!
//! A wake only tells a session to look: it then re-checks the generation
//! under the shared lock (see `idle.rs`), never reports from the event
//! itself. A watch is in place before the session's first check, and a
//! replaced `.index` is watched again before anyone is woken, so a commit
//! is either seen by a check or raises an event. An overflowed event queue
//! wakes everyone.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent, WatchDescriptor};

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

/// The mailboxes being watched and who waits on them.
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
    next_id: u64,
}

pub struct Watcher {
    ino: Inotify,
    state: Mutex<State>,
}

/// One session's interest in one mailbox; dropping it ends the interest
/// (and the watches, when it was the last).
pub struct Subscription {
    key: PathBuf,
    id: u64,
    efd: Arc<EventFd>,
    /// False when the kernel refused a watch (e.g. `max_user_watches`):
    /// the session must then rely on its fallback timer.
    pub watched: bool,
}

static WATCHER: OnceLock<Option<&'static Watcher>> = OnceLock::new();

/// The server's watcher, started on first use; `None` when inotify is
/// unavailable (the caller polls instead).
fn watcher() -> Option<&'static Watcher> {
    WATCHER
        .get_or_init(|| match Watcher::start() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!("inotify unavailable, IDLE falls back to polling: {e}");
                None
            }
        })
        .as_ref()
        .copied()
}

/// Watches the mailbox whose index is `index` for this session. Errors
/// only when no eventfd can be made (out of descriptors).
pub fn subscribe(index: &Path) -> std::io::Result<Subscription> {
    let efd = Arc::new(EventFd::from_flags(
        EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK,
    )?);
    let key = index.parent().unwrap_or(Path::new("/")).to_path_buf();
    let Some(w) = watcher() else {
        return Ok(Subscription {
            key,
            id: u64::MAX,
            efd,
            watched: false,
        });
    };
    let mut st = w.lock();
    let id = st.next_id;
    st.next_id += 1;
    let entry = match st.mailboxes.remove(&key) {
        Some(e) => e,
        None => {
            let index_wd = w.ino.add_watch(index, index_flags()).ok();
            let dir_wd = w.ino.add_watch(key.as_path(), dir_flags()).ok();
            Entry {
                index: index.to_path_buf(),
                index_wd,
                dir_wd,
                subs: Vec::new(),
            }
        }
    };
    let watched = entry.index_wd.is_some() && entry.dir_wd.is_some();
    for wd in entry.index_wd.iter().chain(entry.dir_wd.iter()) {
        st.wds.insert(*wd, key.clone());
    }
    let mut entry = entry;
    entry.subs.push((id, efd.clone()));
    st.mailboxes.insert(key.clone(), entry);
    Ok(Subscription {
        key,
        id,
        efd,
        watched,
    })
}

impl Subscription {
    /// Readable when the mailbox may have changed.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.efd.as_fd()
    }

    /// A number that differs between sessions (to spread their timers).
    pub fn id_hint(&self) -> u64 {
        self.id
    }

    /// Consumes pending wakes.
    pub fn drain(&self) {
        let _ = self.efd.read();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
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
            .name("idle-watcher".into())
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
                    // Sessions still have their fallback timer.
                    tracing::error!("inotify read failed, IDLE watcher stops: {e}");
                    return;
                }
            };
            self.dispatch(&events);
        }
    }

    /// Wakes the sessions of every mailbox an event may concern.
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
                let index_name = std::ffi::OsStr::new(storage::index::INDEX_NAME);
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
