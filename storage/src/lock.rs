//! Open-file-description (OFD) locks with a timeout and writer priority.
//!
//! OFD locks (`F_OFD_SETLK`) belong to the open file description, not to
//! the process: closing some other descriptor of the same file in this
//! process does not drop them (the classic POSIX `fcntl` trap), and two
//! handles opened separately in one process exclude each other just as two
//! processes do. Linux NFS clients forward them to the server as ordinary
//! POSIX byte-range locks. See `docs/PROTOCOL.md`.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::lockwait::{self, Key, Waited};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockKind {
    Shared,
    Exclusive,
}

impl LockKind {
    fn name(self) -> &'static str {
        match self {
            LockKind::Shared => "shared",
            LockKind::Exclusive => "exclusive",
        }
    }
}

/// The byte the protected data lock covers. Locks are advisory, so a
/// one-byte range stands for the whole file.
const DATA: libc::off_t = 0;
/// The byte a lock taker holds while it waits for [`DATA`]: a writer
/// waiting there keeps new readers out, so back-to-back readers cannot
/// starve it.
const GATE: libc::off_t = 1;
/// Longest sleep between two tries of a contended lock.
const MAX_POLL_SLEEP: Duration = Duration::from_micros(200);

fn flock(kind: libc::c_short, start: libc::off_t, len: libc::off_t) -> libc::flock {
    // SAFETY: libc::flock is plain old data; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start;
    fl.l_len = len; // 0 = to end of file, however large it grows
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

/// Whether another open file description holds a lock on the index (a
/// reader, a writer, or a writer waiting at the gate): one `F_OFD_GETLK`,
/// nothing taken. A hint only; it may change right after.
pub fn is_in_use(fd: BorrowedFd<'_>) -> bool {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, DATA, 2);
    // SAFETY: fd is a valid open descriptor and fl a valid flock struct.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    r == 0 && fl.l_type != libc::F_UNLCK as libc::c_short
}

fn set_lock(
    fd: BorrowedFd<'_>,
    kind: libc::c_short,
    start: libc::off_t,
    len: libc::off_t,
    wait: bool,
) -> std::io::Result<bool> {
    let fl = flock(kind, start, len);
    let cmd = if wait {
        libc::F_OFD_SETLKW
    } else {
        libc::F_OFD_SETLK
    };
    loop {
        // SAFETY: fd is a valid open descriptor and fl a valid flock struct.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &fl) };
        if r == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) if !wait => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Polls for one byte lock until `deadline`, with a growing sleep:
/// F_OFD_SETLKW has no timeout, and a signal based timer would be a
/// process-wide side effect in a library. While a thread of this process
/// holds a lock on the file, the waiter sleeps until that thread releases
/// it instead ([`crate::lockwait`]).
#[allow(clippy::too_many_arguments)]
fn poll_byte(
    fd: BorrowedFd<'_>,
    key: Key,
    t: libc::c_short,
    byte: libc::off_t,
    start: Instant,
    timeout: Duration,
    kind: LockKind,
    path: &Path,
) -> Result<()> {
    let mut sleep = Duration::from_micros(20);
    loop {
        // Read before the try, so a release right after it is not missed.
        let seen = lockwait::releases(key);
        if set_lock(fd, t, byte, 1, false).map_err(|e| Error::io("lock", path, e))? {
            return Ok(());
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout {
                path: path.to_path_buf(),
                kind: kind.name(),
                waited,
            });
        }
        if lockwait::wait_for_release(key, seen, timeout - waited) != Waited::NotHeld {
            continue;
        }
        std::thread::sleep(sleep.min(timeout - waited));
        // Capped low: a commit holds the lock for about a millisecond
        // (three fsyncs), so a longer sleep mostly idles the waiter after
        // the lock is already free. One fcntl per 200 us costs little CPU.
        sleep = (sleep * 2).min(MAX_POLL_SLEEP);
    }
}

/// Takes a lock of `kind` on the file, waiting at most `timeout`. The
/// lock is held until [`unlock`] or until the descriptor's last copy is
/// closed.
///
/// Taking it is two steps: the gate byte in the same mode, then the data
/// byte, then the gate is released. A writer waiting for the data byte
/// holds the gate exclusively, so readers that arrive after it queue
/// behind it instead of overtaking it forever.
pub fn lock(fd: BorrowedFd<'_>, kind: LockKind, timeout: Duration, path: &Path) -> Result<()> {
    lock_keyed(fd, kind, timeout, path).map(|_| ())
}

/// [`lock`], returning the file's key in [`crate::lockwait`].
fn lock_keyed(fd: BorrowedFd<'_>, kind: LockKind, timeout: Duration, path: &Path) -> Result<Key> {
    let t = match kind {
        LockKind::Shared => libc::F_RDLCK,
        LockKind::Exclusive => libc::F_WRLCK,
    } as libc::c_short;
    let start = Instant::now();
    let key = Key::of(path);
    // Uncontended, both steps at once: the gate and the data byte in one
    // call, then the gate released. It succeeds exactly when the first
    // two steps below would each succeed at once, so it is the same
    // protocol with one system call fewer (docs/PROTOCOL.md §1).
    if set_lock(fd, t, DATA, 2, false).map_err(|e| Error::io("lock", path, e))? {
        let _ = set_lock(fd, libc::F_UNLCK as libc::c_short, GATE, 1, true);
        // Waiters that found the gate taken in that instant are woken as
        // by the two-step path's release of it.
        lockwait::pulse(key);
        crate::fsmode::drop_cache(fd);
        return Ok(key);
    }
    poll_byte(fd, key, t, GATE, start, timeout, kind, path)?;
    // The gate is a lock this process holds: waiters here sleep until it
    // goes instead of polling.
    lockwait::held(key);
    let r = poll_byte(fd, key, t, DATA, start, timeout, kind, path);
    let _ = set_lock(fd, libc::F_UNLCK as libc::c_short, GATE, 1, true);
    lockwait::released(key);
    r?;
    // Another host may have written under its lock: read from the
    // filesystem, not from this host's page cache (PROTOCOL.md §8).
    crate::fsmode::drop_cache(fd);
    Ok(key)
}

/// Releases this descriptor's OFD locks now. A file whose lock tells
/// other handles "a live writer owns me" is unlocked this way before it
/// is closed: a close alone does not release the lock while another
/// reference to the open file description exists, and in a process
/// whose threads start programs (the LMTP server runs sendmail) every
/// child holds such a reference from its fork to its exec. A probe that
/// does not wait (settling, recovery, verify) would meanwhile take the
/// finished writer's file for a live one's (`tests/spawn_race.rs`).
pub fn unlock(fd: BorrowedFd<'_>) {
    // Unlocking a held OFD lock cannot fail on a valid descriptor; if it
    // somehow does, closing the descriptor releases it anyway.
    let _ = set_lock(fd, libc::F_UNLCK as libc::c_short, 0, 0, true);
}

/// A file whose OFD lock, taken with [`lock`], tells other handles "a
/// live writer owns me" (a staged message, the source of a COPY's link)
/// or is a prober's moment of holding one. Dropping it releases the lock
/// with [`unlock`] before the close (see there why the close alone is not
/// enough); a file that was never locked is only closed.
#[derive(Debug)]
pub struct LockedFile(File);

impl LockedFile {
    pub fn new(file: File) -> LockedFile {
        LockedFile(file)
    }
}

impl std::ops::Deref for LockedFile {
    type Target = File;
    fn deref(&self) -> &File {
        &self.0
    }
}

impl std::ops::DerefMut for LockedFile {
    fn deref_mut(&mut self) -> &mut File {
        &mut self.0
    }
}

impl AsFd for LockedFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        unlock(self.0.as_fd());
    }
}

/// Opens the file at `path` read-write and takes `kind` on it. A new open
/// file description: the lock excludes every other handle, this
/// process's included (for tools and tests that keep a mailbox busy).
pub fn hold(path: &Path, kind: LockKind, timeout: Duration) -> Result<LockGuard> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| Error::io("open", path, e))?;
    LockGuard::acquire(Arc::new(file), kind, timeout, path)
}

/// What to run when a thread takes its first [`LockGuard`] (an index
/// lock) and when it releases its last. A server that lowers a thread's
/// CPU priority for long work uses them to hold no lock at the lower
/// priority: other processes wait for a lock, and a holder that the
/// scheduler keeps waiting would make them wait with it. Guards are
/// counted per thread: a guard dropped on another thread than the one
/// that took it leaves that one counted as holding a lock, so its
/// `last_released` does not run (the store never moves a guard).
#[derive(Clone, Copy)]
pub struct HoldHooks {
    pub first_taken: fn(),
    pub last_released: fn(),
}

static HOOKS: std::sync::OnceLock<HoldHooks> = std::sync::OnceLock::new();

thread_local! {
    /// Lock guards this thread holds.
    static HELD: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Sets the process's [`HoldHooks`] (once; false if they were set).
pub fn set_hold_hooks(hooks: HoldHooks) -> bool {
    HOOKS.set(hooks).is_ok()
}

/// Whether the calling thread holds a [`LockGuard`].
pub fn held_by_this_thread() -> bool {
    HELD.with(|h| h.get() > 0)
}

fn note_taken() {
    let before = HELD.with(|h| {
        let n = h.get();
        h.set(n + 1);
        n
    });
    if before == 0
        && let Some(h) = HOOKS.get()
    {
        (h.first_taken)();
    }
}

fn note_released() {
    let left = HELD.with(|h| {
        let n = h.get().saturating_sub(1);
        h.set(n);
        n
    });
    if left == 0
        && let Some(h) = HOOKS.get()
    {
        (h.last_released)();
    }
}

/// A held lock, released on drop.
pub struct LockGuard {
    file: Arc<File>,
    /// The file's key, counted in [`crate::lockwait`] while held.
    key: Key,
    pub kind: LockKind,
    /// A byte to zero just before unlocking (the index writer mark).
    clear_on_drop: Option<u64>,
}

impl LockGuard {
    pub fn acquire(
        file: Arc<File>,
        kind: LockKind,
        timeout: Duration,
        path: &Path,
    ) -> Result<Self> {
        let key = lock_keyed(file.as_fd(), kind, timeout, path)?;
        lockwait::held(key);
        note_taken();
        Ok(LockGuard {
            file,
            key,
            kind,
            clear_on_drop: None,
        })
    }

    /// Zero the byte at `offset` when the lock is released.
    pub fn clearing_on_release(mut self, offset: u64) -> Self {
        self.clear_on_drop = Some(offset);
        self
    }

    /// Leave the byte [`Self::clearing_on_release`] named as it is: the
    /// section did not finish, and the next locker must repair.
    pub fn keep_mark(&mut self) {
        self.clear_on_drop = None;
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unwinding from a panic inside the section (a server catches it
        // and lives on): the section did not finish, so leave the mark
        // for the next locker's repair, as a killed process would.
        // Nor after this process was told a lock is lost (shared
        // filesystem): another host may be writing; touch nothing.
        if let Some(off) = self
            .clear_on_drop
            .filter(|_| !std::thread::panicking() && !crate::fsmode::lock_lost())
        {
            use std::os::unix::fs::FileExt;
            // If this fails the next locker sees the mark and recounts:
            // extra work, never a wrong result.
            let _ = self.file.write_all_at(&[0], off);
        }
        unlock(self.file.as_fd());
        lockwait::released(self.key);
        note_released();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_hooks_run_at_a_threads_first_lock_and_last_release() {
        thread_local! {
            static EVENTS: std::cell::RefCell<Vec<&'static str>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        fn taken() {
            EVENTS.with(|e| e.borrow_mut().push("taken"));
        }
        fn released() {
            EVENTS.with(|e| e.borrow_mut().push("released"));
        }
        // Process-wide: other tests' threads run them too, on their own
        // thread-local lists.
        set_hold_hooks(HoldHooks {
            first_taken: taken,
            last_released: released,
        });
        std::thread::spawn(|| {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("f");
            std::fs::write(&p, b"x").unwrap();
            let t = Duration::from_secs(5);
            assert!(!held_by_this_thread());
            let a = hold(&p, LockKind::Shared, t).unwrap();
            let b = hold(&p, LockKind::Shared, t).unwrap();
            assert!(held_by_this_thread());
            drop(a);
            assert_eq!(EVENTS.with(|e| e.borrow().clone()), ["taken"]);
            drop(b);
            assert!(!held_by_this_thread());
            // A failed attempt takes nothing and releases nothing.
            let w = hold(&p, LockKind::Exclusive, t).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    assert!(hold(&p, LockKind::Exclusive, Duration::ZERO).is_err());
                    assert!(EVENTS.with(|e| e.borrow().is_empty()));
                });
            });
            drop(w);
            let all = ["taken", "released", "taken", "released"];
            assert_eq!(EVENTS.with(|e| e.borrow().clone()), all);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_panic_inside_the_section_leaves_the_mark() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = Arc::new(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&p)
                .unwrap(),
        );
        f.write_all_at(&[1, 1], 0).unwrap();
        let t = Duration::from_millis(30);
        let g = LockGuard::acquire(f.clone(), LockKind::Exclusive, t, &p).unwrap();
        drop(g.clearing_on_release(0));
        let g = LockGuard::acquire(f.clone(), LockKind::Exclusive, t, &p)
            .unwrap()
            .clearing_on_release(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _g = g;
            panic!("inside the section");
        }));
        assert!(r.is_err());
        let mut b = [9u8; 2];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(b, [0, 1], "cleared on a normal release, kept on a panic");
        // And the lock itself was released.
        drop(LockGuard::acquire(f, LockKind::Exclusive, t, &p).unwrap());
    }

    #[test]
    fn exclusive_excludes_across_handles_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let a = Arc::new(File::create(&p).unwrap());
        let b = Arc::new(File::open(&p).unwrap());
        let t = Duration::from_millis(30);
        let g = LockGuard::acquire(a.clone(), LockKind::Exclusive, t, &p).unwrap();
        assert!(matches!(
            LockGuard::acquire(b.clone(), LockKind::Shared, t, &p),
            Err(Error::LockTimeout { .. })
        ));
        drop(g);
        LockGuard::acquire(b.clone(), LockKind::Shared, t, &p).unwrap();
    }

    #[test]
    fn shared_locks_coexist_and_show_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let a = Arc::new(File::open(&p).unwrap());
        let b = Arc::new(File::open(&p).unwrap());
        let t = Duration::from_millis(30);
        assert!(!is_in_use(b.as_fd()));
        let g1 = LockGuard::acquire(a.clone(), LockKind::Shared, t, &p).unwrap();
        assert!(is_in_use(b.as_fd()));
        assert!(!is_in_use(a.as_fd()), "its own lock does not count");
        let _g2 = LockGuard::acquire(b.clone(), LockKind::Shared, t, &p).unwrap();
        drop(g1);
        assert!(!is_in_use(b.as_fd()));
    }

    #[test]
    fn waiting_writer_keeps_new_readers_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let open = || {
            Arc::new(
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&p)
                    .unwrap(),
            )
        };
        let (r1, w, r2) = (open(), open(), open());
        let long = Duration::from_secs(5);
        let g1 = LockGuard::acquire(r1, LockKind::Shared, long, &p).unwrap();
        let p2 = p.clone();
        let writer = std::thread::spawn(move || {
            let _g = LockGuard::acquire(w, LockKind::Exclusive, long, &p2).unwrap();
            std::time::Instant::now()
        });
        // Let the writer reach the gate, then a new reader must wait.
        std::thread::sleep(Duration::from_millis(50));
        assert!(matches!(
            LockGuard::acquire(r2.clone(), LockKind::Shared, Duration::from_millis(30), &p),
            Err(Error::LockTimeout { .. })
        ));
        drop(g1);
        writer.join().unwrap();
        LockGuard::acquire(r2, LockKind::Shared, long, &p).unwrap();
    }

    #[test]
    fn closing_another_descriptor_keeps_the_lock() {
        // The POSIX fcntl trap: with classic locks, closing any descriptor
        // of the file drops every lock the process holds on it.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let a = Arc::new(File::create(&p).unwrap());
        let t = Duration::from_millis(30);
        let _g = LockGuard::acquire(a.clone(), LockKind::Exclusive, t, &p).unwrap();
        drop(File::open(&p).unwrap());
        let c = Arc::new(File::open(&p).unwrap());
        assert!(LockGuard::acquire(c, LockKind::Exclusive, t, &p).is_err());
    }
}
