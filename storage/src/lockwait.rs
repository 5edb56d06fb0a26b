//! Waiting for a lock that another thread of this process holds.
//!
//! OFD locks have no wait with a timeout, so a contended [`crate::lock`]
//! polls. When the holder is another thread of the same process (an IMAP
//! server's sessions of one mailbox), polling is pure waste: the waiters
//! wake every few hundred microseconds only to find the lock still taken,
//! and their context switches compete for the CPU with the holder. This
//! table lets such a waiter sleep until a thread of this process releases
//! a lock on the same file instead.
//!
//! Per file (by the path it is locked through) it counts the locks this process holds
//! through [`crate::lock::LockGuard`] and the gate byte held inside
//! [`crate::lock::lock`] (both always released in pairs), and keeps a
//! release counter with a condition variable. A waiter reads the counter
//! *before* its try, so a release between the try and the wait is never
//! missed. It sleeps on the condition only while this process holds a lock
//! on the file, and even then at most [`MAX_LOCAL_WAIT`]: a holder in
//! another process (or a descriptor closed without an unlock, which
//! releases silently) is caught by the next try. This is a hint that saves
//! tries; whether a lock is free is always decided by the kernel.
//!
//! An entry lives while some lock is counted or some thread waits, so the
//! table holds only files in use, whatever number of files a long-running
//! process touches.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Longest sleep on the condition before the next try: bounds the delay
/// when the holder that matters is in another process.
pub const MAX_LOCAL_WAIT: Duration = Duration::from_millis(2);

/// A file's identity here: a hash of the path it was locked by. Taken from
/// the path rather than from `fstat`, which costs a system call per lock
/// and, on a FUSE mount, a round trip that revalidates the file's cached
/// pages (PROTOCOL.md §8 decides when those are dropped, not this hint).
/// Two paths of one file (a symlink, another spool root) only mean that
/// their waiters poll; a file replaced by rename under the same path (a
/// repack) only means an early wake-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key(u64);

impl Key {
    /// The key of the file locked through `path`.
    pub fn of(path: &Path) -> Key {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        Key(BuildHasherDefault::<DefaultHasher>::default().hash_one(path))
    }
}

#[derive(Default)]
struct Entry {
    /// Locks of this process on the file, as counted by [`held`].
    holds: u32,
    /// Threads inside [`wait_for_release`].
    waiters: u32,
    /// Bumped by every counted release.
    releases: u64,
    cond: Arc<Condvar>,
}

/// Shards of the table, so that the waiters and holders of one busy file
/// (every session appending to one INBOX) do not queue on the same mutex
/// as the locks of other files (a STATUS of another mailbox).
const SHARDS: usize = 16;

/// The shard of the table that holds `key`'s entry.
fn table(key: Key) -> MutexGuard<'static, HashMap<Key, Entry>> {
    static TABLE: LazyLock<[Mutex<HashMap<Key, Entry>>; SHARDS]> =
        LazyLock::new(|| std::array::from_fn(|_| Mutex::default()));
    // A panic while a shard is locked leaves only counters behind; the
    // counts are hints, so a poisoned lock is taken as it is.
    TABLE[(key.0 % SHARDS as u64) as usize]
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The release counter of the file now: read it before trying the lock.
pub fn releases(key: Key) -> u64 {
    table(key).get(&key).map_or(0, |e| e.releases)
}

/// Counts a lock this process now holds on the file.
pub fn held(key: Key) {
    table(key).entry(key).or_default().holds += 1;
}

/// Counts the release of a lock counted by [`held`] and wakes the threads
/// waiting for the file.
pub fn released(key: Key) {
    let mut t = table(key);
    let Some(e) = t.get_mut(&key) else {
        return;
    };
    e.holds = e.holds.saturating_sub(1);
    e.releases += 1;
    if e.waiters > 0 {
        e.cond.notify_all();
    } else if e.holds == 0 {
        t.remove(&key);
    }
}

/// Wakes the threads waiting for the file as a counted release would,
/// for a lock held only inside one call (the gate of [`crate::lock`]'s
/// one-call acquisition). Nothing when no thread of this process has an
/// entry for the file: then nobody waits on it here.
pub fn pulse(key: Key) {
    let mut t = table(key);
    if let Some(e) = t.get_mut(&key) {
        e.releases += 1;
        if e.waiters > 0 {
            e.cond.notify_all();
        }
    }
}

/// How [`wait_for_release`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// A lock of this process on the file was released: try again now.
    Released,
    /// The bound passed with this process still holding: try again.
    TimedOut,
    /// This process holds no lock on the file: the holder is elsewhere,
    /// poll.
    NotHeld,
}

/// If this process holds a lock on the file, sleeps until one of its locks
/// on it is released after `seen` (the value of [`releases`] before the
/// failed try), or at most `max` (and never more than [`MAX_LOCAL_WAIT`]).
pub fn wait_for_release(key: Key, seen: u64, max: Duration) -> Waited {
    let deadline = Instant::now() + max.min(MAX_LOCAL_WAIT);
    let mut t = table(key);
    let cond = match t.get_mut(&key) {
        Some(e) if e.releases != seen => return Waited::Released,
        Some(e) if e.holds > 0 => {
            e.waiters += 1;
            e.cond.clone()
        }
        _ => return Waited::NotHeld,
    };
    let outcome = loop {
        let e = t.get(&key).expect("kept while a waiter is registered");
        if e.releases != seen {
            break Waited::Released;
        }
        let now = Instant::now();
        if now >= deadline {
            break Waited::TimedOut;
        }
        t = cond
            .wait_timeout(t, deadline - now)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    };
    let e = t.get_mut(&key).expect("kept while a waiter is registered");
    e.waiters -= 1;
    if e.waiters == 0 && e.holds == 0 {
        t.remove(&key);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_release_wakes_the_waiter_and_entries_go_away() {
        let k = Key(u64::MAX);
        let long = Duration::from_secs(10);
        assert_eq!(wait_for_release(k, releases(k), long), Waited::NotHeld);
        held(k);
        let seen = releases(k);
        let t = std::thread::spawn(move || {
            loop {
                match wait_for_release(k, seen, long) {
                    Waited::TimedOut => continue,
                    w => return w,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        released(k);
        // Only the release ends the loop: without it the waiter would
        // time out forever, and once nothing is held it would see NotHeld.
        assert_eq!(t.join().unwrap(), Waited::Released);
        assert!(!table(k).contains_key(&k), "no entry once nothing is held");
    }

    /// A pulse wakes a waiter as a release does and makes no entry where
    /// nothing is held.
    #[test]
    fn a_pulse_wakes_the_waiter_and_leaves_no_entry() {
        let k = Key(u64::MAX - 2);
        pulse(k);
        assert!(!table(k).contains_key(&k));
        held(k);
        let seen = releases(k);
        let t = std::thread::spawn(move || {
            loop {
                match wait_for_release(k, seen, Duration::from_secs(10)) {
                    Waited::TimedOut => continue,
                    w => return w,
                }
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        pulse(k);
        assert_eq!(t.join().unwrap(), Waited::Released);
        released(k);
        assert!(!table(k).contains_key(&k));
    }

    #[test]
    fn a_release_before_the_wait_is_not_missed() {
        let k = Key(u64::MAX - 1);
        held(k);
        let seen = releases(k);
        held(k);
        released(k);
        assert_eq!(
            wait_for_release(k, seen, Duration::from_secs(10)),
            Waited::Released
        );
        released(k);
        assert!(!table(k).contains_key(&k));
    }
}
