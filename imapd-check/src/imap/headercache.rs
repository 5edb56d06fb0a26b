//! A process-wide cache of message header blocks for SEARCH, SORT and
//! THREAD, so a search over header fields (FROM, SUBJECT, HEADER ...)
//! need not open and CRC-check every message file each time.
//!
//! Safe because a message's bytes never change under (mailbox, UIDVALIDITY,
//! UID): the store's first rule. The key is the mailbox directory's device
//! and inode, the UIDVALIDITY and the UID; an entry also keeps the size and
//! CRC32 of the record it was read under, and is used only for a record
//! with the same size and CRC32. So a mailbox deleted and created again
//! (a new UIDVALIDITY, perhaps the old directory inode) or reconstructed
//! from files that changed (new sizes or CRCs in the records) never gets
//! another message's header. Bytes enter the cache only after the whole
//! file matched its record's size and CRC32 (`MessageFile::open`).
//!
//! Bounded in bytes (`imapd.header_cache`, OPERATIONS.md §6a; 0 turns it
//! off), evicted by CLOCK (second chance): a lookup marks an entry, the
//! hand passes over a marked entry once, clearing the mark, and evicts the
//! first unmarked one.

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

/// Default bound of the cache, in bytes of header data and bookkeeping.
pub const DEFAULT_BYTES: usize = 32 << 20;
/// Bookkeeping counted per entry besides its bytes (key, map and ring
/// slots, the `Arc`), so that many tiny headers are bounded too.
const ENTRY_OVERHEAD: usize = 96;

/// Mailbox directory (device, inode), UIDVALIDITY, UID.
pub type Key = (u64, u64, u32, u32);

struct Entry {
    bytes: Arc<[u8]>,
    size: u64,
    crc: u32,
    marked: bool,
}

#[derive(Default)]
struct Inner {
    map: HashMap<Key, Entry>,
    /// The CLOCK: keys in insertion order; the hand is the front.
    ring: VecDeque<Key>,
    bytes: usize,
}

pub struct HeaderCache {
    cap: AtomicUsize,
    inner: Mutex<Inner>,
}

/// The server's cache.
pub static HEADERS: LazyLock<HeaderCache> = LazyLock::new(|| HeaderCache::new(DEFAULT_BYTES));

fn cost(len: usize) -> usize {
    len + ENTRY_OVERHEAD
}

impl HeaderCache {
    pub fn new(cap: usize) -> HeaderCache {
        HeaderCache {
            cap: AtomicUsize::new(cap),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Sets the bound (the server's config, at start); shrinks to it.
    pub fn set_capacity(&self, cap: usize) {
        self.cap.store(cap, Ordering::Relaxed);
        let mut g = self.lock();
        Self::evict_to(&mut g, cap);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The header of `key` if cached for a record of this size and CRC32.
    pub fn get(&self, key: Key, size: u64, crc: u32) -> Option<Arc<[u8]>> {
        let mut g = self.lock();
        let e = g.map.get_mut(&key)?;
        if e.size != size || e.crc != crc {
            return None;
        }
        e.marked = true;
        Some(e.bytes.clone())
    }

    /// Caches `bytes`, the header of the message `key` whose whole file had
    /// `size` bytes and CRC32 `crc`. A header larger than a sixteenth of
    /// the bound is not kept.
    pub fn put(&self, key: Key, size: u64, crc: u32, bytes: Arc<[u8]>) {
        let cap = self.cap.load(Ordering::Relaxed);
        if cost(bytes.len()) > cap / 16 {
            return;
        }
        let mut g = self.lock();
        let len = bytes.len();
        let entry = Entry {
            bytes,
            size,
            crc,
            marked: false,
        };
        match g.map.insert(key, entry) {
            Some(old) => g.bytes -= cost(old.bytes.len()),
            None => g.ring.push_back(key),
        }
        g.bytes += cost(len);
        Self::evict_to(&mut g, cap);
    }

    fn evict_to(g: &mut Inner, cap: usize) {
        while g.bytes > cap {
            let Some(k) = g.ring.pop_front() else {
                break;
            };
            let Some(e) = g.map.get_mut(&k) else {
                continue;
            };
            if e.marked {
                e.marked = false;
                g.ring.push_back(k);
                continue;
            }
            if let Some(e) = g.map.remove(&k) {
                g.bytes -= cost(e.bytes.len());
            }
        }
    }

    /// Bytes held (header data plus bookkeeping), never above the bound.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.lock().bytes
    }

    #[cfg(test)]
    fn entries(&self) -> usize {
        self.lock().map.len()
    }
}

/// Where a selected mailbox's headers are cached: its directory and
/// UIDVALIDITY. `None` when the directory cannot be looked at (then
/// nothing is cached).
#[derive(Clone, Copy, Debug)]
pub struct Source {
    dev: u64,
    ino: u64,
    uidvalidity: u32,
}

impl Source {
    pub fn of(mbox: &storage::Mailbox, uidvalidity: u32) -> Option<Source> {
        let st = nix::sys::stat::fstat(mbox.dir().fd.as_fd()).ok()?;
        Some(Source {
            dev: st.st_dev,
            ino: st.st_ino,
            uidvalidity,
        })
    }

    pub fn key(&self, uid: u32) -> Key {
        (self.dev, self.ino, self.uidvalidity, uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize, b: u8) -> Arc<[u8]> {
        vec![b; n].into()
    }

    /// The bound holds whatever is put; entries over a sixteenth of it are
    /// not kept.
    #[test]
    fn stays_within_its_bound() {
        let c = HeaderCache::new(64 * 1024);
        for i in 0..10_000u32 {
            c.put((1, 2, 3, i), 100, i, bytes(300 + (i as usize % 500), 1));
            assert!(c.bytes() <= 64 * 1024, "{} bytes", c.bytes());
        }
        assert!(c.entries() > 10);
        c.put((1, 2, 3, 99_999), 1, 1, bytes(8 * 1024, 1));
        assert!(c.get((1, 2, 3, 99_999), 1, 1).is_none());
        c.set_capacity(1024);
        assert!(c.bytes() <= 1024);
    }

    /// A lookup for a record of another size or CRC32 (a reconstructed
    /// index over a changed file), another UIDVALIDITY or directory is a
    /// miss.
    #[test]
    fn other_record_or_mailbox_misses() {
        let c = HeaderCache::new(1 << 20);
        c.put((1, 2, 3, 7), 100, 0xabc, bytes(10, b'a'));
        assert_eq!(&*c.get((1, 2, 3, 7), 100, 0xabc).unwrap(), &[b'a'; 10]);
        assert!(c.get((1, 2, 3, 7), 101, 0xabc).is_none());
        assert!(c.get((1, 2, 3, 7), 100, 0xabd).is_none());
        assert!(c.get((1, 2, 4, 7), 100, 0xabc).is_none());
        assert!(c.get((1, 9, 3, 7), 100, 0xabc).is_none());
    }

    /// CLOCK: an entry looked up since the hand last passed survives the
    /// next eviction; an unmarked older one goes first.
    #[test]
    fn recently_used_entries_get_a_second_chance() {
        let per = cost(100);
        let c = HeaderCache::new(per * 16);
        for i in 0..16 {
            c.put((0, 0, 1, i), 1, 1, bytes(100, 0));
        }
        assert_eq!(c.entries(), 16);
        assert!(c.get((0, 0, 1, 0), 1, 1).is_some());
        c.put((0, 0, 1, 16), 1, 1, bytes(100, 0));
        assert!(c.get((0, 0, 1, 0), 1, 1).is_some(), "used entry evicted");
        assert!(c.get((0, 0, 1, 1), 1, 1).is_none(), "oldest unused kept");
        assert!(c.get((0, 0, 1, 16), 1, 1).is_some());
        assert_eq!(c.entries(), 16);
    }
}
