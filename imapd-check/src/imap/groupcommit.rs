//! Group commit of flag changes and expunges within this server process
//! (docs/PROTOCOL.md §4a): sessions that write the same mailbox at the
//! same time join one lock hold and one flush instead of queueing on the
//! mailbox lock behind each other's flushes.
//!
//! A session queues its step under the mailbox's entry in a process-wide
//! table (keyed by the mailbox directory's device and inode, which a
//! repack or rename does not change). If no session of the mailbox is
//! committing, it becomes the leader: it takes the exclusive lock through
//! its own handle, then takes every step queued by then (its own and the
//! others', in arrival order, at most [`MAX_BATCH`]), commits them with
//! [`Mailbox::write_batch`] (each step its own MODSEQ, one flush) and
//! hands each session its own outcome. The others wait for their outcome;
//! one whose step was left for a later batch becomes the next leader. No
//! session returns before the flush of the batch holding its step.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use storage::mailbox::{BatchOp, BatchOutcome, FlagOp, StoreOutcome};
use storage::{Error, Flags, Mailbox};

/// The most steps one lock hold commits; the rest wait for the next one.
pub const MAX_BATCH: usize = 256;

/// A mailbox directory: device and inode.
type Key = (u64, u64);

#[derive(Default)]
struct Queue {
    next_id: u64,
    waiting: Vec<(u64, BatchOp)>,
    done: HashMap<u64, Result<BatchOutcome, Error>>,
    leader: bool,
}

#[derive(Default)]
struct Slot {
    queue: Mutex<Queue>,
    cond: Condvar,
}

static SLOTS: LazyLock<Mutex<HashMap<Key, Arc<Slot>>>> = LazyLock::new(Default::default);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking leader (a bug) must not wedge every other session: the
    // queue's state stays consistent at every unlock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(mbox: &Mailbox) -> Result<Key, Error> {
    let st = nix::sys::stat::fstat(mbox.dir().fd.as_fd()).map_err(|e| Error::Io {
        op: "fstat",
        path: mbox.dir().path.clone(),
        source: e.into(),
    })?;
    Ok((st.st_dev, st.st_ino))
}

/// [`Mailbox::store`] of flags only, committed with other sessions' steps.
pub fn store(
    mbox: &mut Mailbox,
    uids: Vec<u32>,
    op: FlagOp,
    flags: Flags,
    unchanged_since: Option<u64>,
) -> Result<StoreOutcome, Error> {
    let step = BatchOp::Store {
        uids,
        op,
        flags,
        unchanged_since,
    };
    match commit(mbox, step)? {
        BatchOutcome::Store(o) => Ok(o),
        BatchOutcome::Expunge(_) => Err(mixed_up()),
    }
}

/// [`Mailbox::expunge`], committed with other sessions' steps.
pub fn expunge(
    mbox: &mut Mailbox,
    uids: Option<Vec<u32>>,
    require_deleted: bool,
) -> Result<Vec<u32>, Error> {
    let step = BatchOp::Expunge {
        uids,
        require_deleted,
    };
    match commit(mbox, step)? {
        BatchOutcome::Expunge(g) => Ok(g),
        BatchOutcome::Store(_) => Err(mixed_up()),
    }
}

/// An outcome of the other kind than its step: a bug here, reported as
/// an error rather than a panic.
fn mixed_up() -> Error {
    Error::Io {
        op: "group commit",
        path: std::path::PathBuf::new(),
        source: std::io::Error::other("outcome of another kind than its step"),
    }
}

/// Commits `op` on `mbox`, together with the steps other sessions of this
/// process queue for the same mailbox meanwhile. Returns once the step is
/// durable (or failed), with what its own call would have returned.
pub fn commit(mbox: &mut Mailbox, op: BatchOp) -> Result<BatchOutcome, Error> {
    let key = key(mbox)?;
    let slot = Arc::clone(lock(&SLOTS).entry(key).or_default());
    let result = run(&slot, mbox, op);
    // Drop the entry once nobody uses it (the table holds one reference,
    // this call another).
    let mut slots = lock(&SLOTS);
    if Arc::strong_count(&slot) == 2 {
        let q = lock(&slot.queue);
        if q.waiting.is_empty() && q.done.is_empty() && !q.leader {
            drop(q);
            slots.remove(&key);
        }
    }
    result
}

fn run(slot: &Slot, mbox: &mut Mailbox, op: BatchOp) -> Result<BatchOutcome, Error> {
    let mut q = lock(&slot.queue);
    let id = q.next_id;
    q.next_id += 1;
    q.waiting.push((id, op));
    loop {
        if let Some(r) = q.done.remove(&id) {
            return r;
        }
        if q.leader {
            q = slot.cond.wait(q).unwrap_or_else(|e| e.into_inner());
            continue;
        }
        q.leader = true;
        drop(q);
        let mut ids = Vec::new();
        let result = mbox.write_batch(|| {
            let mut q = lock(&slot.queue);
            let n = q.waiting.len().min(MAX_BATCH);
            q.waiting
                .drain(..n)
                .map(|(id, op)| {
                    ids.push(id);
                    op
                })
                .collect()
        });
        q = lock(&slot.queue);
        q.leader = false;
        match result {
            Ok(outcomes) => {
                for (id, o) in ids.into_iter().zip(outcomes) {
                    q.done.insert(id, Ok(o));
                }
            }
            Err(e) => {
                // Every step of the batch failed with it; the leader keeps
                // the original, the others get a copy.
                for &other in ids.iter().filter(|&&o| o != id) {
                    q.done.insert(other, Err(copy_error(&e)));
                }
                if ids.contains(&id) {
                    q.done.insert(id, Err(e));
                } else if ids.is_empty() {
                    // The lock itself failed (`collect` never ran): our
                    // step fails with it; the others try for themselves.
                    q.waiting.retain(|(w, _)| *w != id);
                    q.done.insert(id, Err(e));
                }
                // Otherwise our step was left for a later batch: lead it.
            }
        }
        slot.cond.notify_all();
    }
}

/// The same error for another session whose step was in the failed batch
/// (`storage::Error` holds an `io::Error`, which is not `Clone`).
fn copy_error(e: &Error) -> Error {
    match e {
        Error::LockTimeout { path, kind, waited } => Error::LockTimeout {
            path: path.clone(),
            kind,
            waited: *waited,
        },
        Error::Corrupt { path, offset, what } => Error::Corrupt {
            path: path.clone(),
            offset: *offset,
            what: what.clone(),
        },
        Error::MailboxDeleted => Error::MailboxDeleted,
        Error::Io { op, path, source } => Error::Io {
            op,
            path: path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        },
        other => Error::Io {
            op: "group commit",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}
