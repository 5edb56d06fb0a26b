//! The newest view of each mailbox that a session of this process opened,
//! for the next session that SELECTs it (issue 21: the phone's, the
//! desktop's and the webmail's sessions of one mailbox of a million
//! messages). A new view starts from it, sharing its chunks of messages
//! (`entries.rs`: copied on write), and catches up with what changed since
//! through the change log as a check does (PROTOCOL.md §7), instead of
//! reading every record into a copy of its own.
//!
//! Nothing here keeps memory alive: the chunks are held weakly (they live
//! as long as some view holds them unchanged) and so is the index file
//! they were read from. A published view whose file is closed, or any of
//! whose chunks changed or went away, is not used; the SELECT then reads
//! every record, as without it.
//!
//! Identity: a published view is found by the device and inode of the
//! index file the new handle has open. While the file it was read from is
//! open somewhere in the process (its weak reference upgrades), its inode
//! cannot be reused by another file, so an equal pair is the same file.
//! Its marks' generations then compare as a handle's own do.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::entries::PublishedEntries;

/// A view as another session may take it over.
#[derive(Debug)]
pub(super) struct Published {
    /// The index file it was read from.
    pub file: Weak<File>,
    /// Generation, records and HIGHESTMODSEQ of its last look.
    pub generation: u64,
    pub num_records: u32,
    pub mark_modseq: u64,
    pub entries: PublishedEntries,
    pub floor: u32,
    pub deleted: BTreeSet<u32>,
    pub keywords: Vec<String>,
    pub uidvalidity: u32,
    pub highestmodseq: u64,
    pub uid_next: u32,
    pub seen_below: u32,
}

type Registry = Mutex<HashMap<(u64, u64), Arc<Published>>>;

fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Default::default)
}

fn key(file: &File) -> Option<(u64, u64)> {
    let m = file.metadata().ok()?;
    Some((m.dev(), m.ino()))
}

/// Makes `p`, read from `file`, the view the next session of that file
/// starts from. Entries whose file is closed everywhere are dropped.
pub(super) fn publish(file: &File, p: Published) {
    let Some(k) = key(file) else { return };
    let mut r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|_, p| p.file.strong_count() > 0);
    r.insert(k, Arc::new(p));
}

/// The view published for the index file `file` (the same file: see the
/// module documentation), if its file is still open somewhere.
pub(super) fn find(file: &File) -> Option<Arc<Published>> {
    let k = key(file)?;
    let r = registry().lock().unwrap_or_else(|e| e.into_inner());
    r.get(&k).filter(|p| p.file.strong_count() > 0).cloned()
}
