//! Group commit within this server process (docs/PROTOCOL.md §3 and
//! §4a): sessions that write the same mailbox at the same time join one
//! lock hold and one flush instead of queueing on the mailbox lock behind
//! each other's flushes.
//!
//! Two kinds of group, each per mailbox: flag-only STOREs and EXPUNGEs
//! ([`Mailbox::write_batch`]: each step its own MODSEQ), and APPENDs
//! ([`Mailbox::commit`] of every session's staged messages: all-or-none
//! per session, UIDs in order). A session queues its step under the
//! mailbox's entry in a process-wide table (keyed by the mailbox
//! directory's device and inode, which a repack or rename does not
//! change). If no session of the mailbox is committing that kind, it
//! becomes the leader: it takes every step queued by then (its own and
//! the others', in arrival order, at most [`MAX_BATCH`]; a write batch
//! takes them once it holds the exclusive lock), commits them through its
//! own handle and hands each session its own outcome. The others wait;
//! one whose step was left for a later batch becomes the next leader. No
//! session returns before the flush of the batch holding its step, and a
//! failed batch fails every step in it.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};

use storage::mailbox::{BatchOp, BatchOutcome, FlagOp, StoreOutcome};
use storage::{Error, Flags, Mailbox, StagedMessage};

/// The most steps one lock hold commits; the rest wait for the next one.
pub const MAX_BATCH: usize = 256;

/// A mailbox directory: device and inode.
type Key = (u64, u64);

struct Queue<Op, Out> {
    next_id: u64,
    waiting: Vec<(u64, Op)>,
    done: HashMap<u64, Result<Out, Error>>,
    leader: bool,
}

struct Slot<Op, Out> {
    queue: Mutex<Queue<Op, Out>>,
    cond: Condvar,
}

impl<Op, Out> Default for Slot<Op, Out> {
    fn default() -> Self {
        Slot {
            queue: Mutex::new(Queue {
                next_id: 0,
                waiting: Vec::new(),
                done: HashMap::new(),
                leader: false,
            }),
            cond: Condvar::new(),
        }
    }
}

type Table<Op, Out> = LazyLock<Mutex<HashMap<Key, Arc<Slot<Op, Out>>>>>;

/// Flag changes and expunges (`Mailbox::write_batch`).
static WRITES: Table<BatchOp, BatchOutcome> = LazyLock::new(Default::default);
/// Appends: each session's staged messages (`Mailbox::commit`).
static APPENDS: Table<Vec<StagedMessage>, Vec<u32>> = LazyLock::new(Default::default);
/// Sessions between staging and the end of their commit, per mailbox.
static APPENDING: LazyLock<Mutex<HashMap<Key, usize>>> = LazyLock::new(Default::default);

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
    match write(mbox, step)? {
        BatchOutcome::Store(o) => Ok(o),
        BatchOutcome::Expunge(_) => Err(mixed_up()),
    }
}

/// [`Mailbox::expunge`], committed with other sessions' steps. `hint`:
/// the UIDs the session's view holds as \Deleted (a speed-up only, see
/// [`BatchOp::Expunge`]).
pub fn expunge(
    mbox: &mut Mailbox,
    uids: Option<Vec<u32>>,
    require_deleted: bool,
    hint: Vec<u32>,
) -> Result<Vec<u32>, Error> {
    let step = BatchOp::Expunge {
        uids,
        require_deleted,
        hint,
    };
    match write(mbox, step)? {
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
/// process queue for the same mailbox meanwhile (the leader takes them
/// under the lock). Returns once the step is durable (or failed), with
/// what its own call would have returned.
fn write(mbox: &mut Mailbox, op: BatchOp) -> Result<BatchOutcome, Error> {
    join(&WRITES, key(mbox)?, op, |take| mbox.write_batch(take))
}

/// A session about to stage messages for a mailbox: counted until
/// dropped (after its commit).
pub struct Appending {
    key: Key,
    /// Other sessions of this process were appending to the mailbox when
    /// this one started.
    pub others: bool,
}

impl Drop for Appending {
    fn drop(&mut self) {
        let mut m = lock(&APPENDING);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Counts this session as appending to `mbox` until the guard is
/// dropped. With company, staging should flush each message outside the
/// lock (ordered, `Mailbox::set_unordered_appends(false)`), so the
/// sessions' flushes overlap and the group's commit is one index flush;
/// alone, the unordered append's one flush inside the lock is cheaper
/// (PROTOCOL.md §3).
pub fn enter_append(mbox: &Mailbox) -> Result<Appending, Error> {
    let key = key(mbox)?;
    let mut m = lock(&APPENDING);
    let n = m.entry(key).or_default();
    let others = *n > 0;
    *n += 1;
    Ok(Appending { key, others })
}

/// [`Mailbox::commit`] of `staged`, together with the messages other
/// sessions of this process stage for the same mailbox meanwhile: one
/// lock hold, one generation for all of them. Returns this call's UIDs,
/// in order, once they are durable.
pub fn append(
    mbox: &mut Mailbox,
    ticket: &Appending,
    staged: Vec<StagedMessage>,
) -> Result<Vec<u32>, Error> {
    join(&APPENDS, ticket.key, staged, |take| {
        let batch = take();
        let counts: Vec<usize> = batch.iter().map(Vec::len).collect();
        let uids = mbox.commit(batch.into_iter().flatten().collect())?;
        let mut rest = uids.as_slice();
        Ok(counts
            .into_iter()
            .map(|n| {
                let (mine, more) = rest.split_at(n.min(rest.len()));
                rest = more;
                mine.to_vec()
            })
            .collect())
    })
}

/// Queues `op` for the mailbox `key` and waits for its outcome, leading
/// the commit when nobody else is: `lead` gets a function that takes the
/// queued steps (call it once, when the steps should be taken) and
/// returns one outcome per step taken, in order.
fn join<Op, Out>(
    table: &'static Table<Op, Out>,
    key: Key,
    op: Op,
    lead: impl FnMut(&mut dyn FnMut() -> Vec<Op>) -> Result<Vec<Out>, Error>,
) -> Result<Out, Error> {
    let slot = Arc::clone(lock(table).entry(key).or_default());
    let result = run(&slot, op, lead);
    // Drop the entry once nobody uses it (the table holds one reference,
    // this call another; others only get one under the table's lock).
    let mut slots = lock(table);
    if Arc::strong_count(&slot) == 2 {
        let q = lock(&slot.queue);
        if q.waiting.is_empty() && q.done.is_empty() && !q.leader {
            drop(q);
            slots.remove(&key);
        }
    }
    result
}

fn run<Op, Out>(
    slot: &Slot<Op, Out>,
    op: Op,
    mut lead: impl FnMut(&mut dyn FnMut() -> Vec<Op>) -> Result<Vec<Out>, Error>,
) -> Result<Out, Error> {
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
        let mut take = || {
            let mut q = lock(&slot.queue);
            let n = q.waiting.len().min(MAX_BATCH);
            q.waiting
                .drain(..n)
                .map(|(id, op)| {
                    ids.push(id);
                    op
                })
                .collect()
        };
        // A panic while leading (a bug) must not leave the others waiting
        // for ever: they get an error, then the panic goes on.
        let mut panicked = None;
        let result =
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lead(&mut take))) {
                Ok(r) => r,
                Err(p) => {
                    panicked = Some(p);
                    Err(Error::Io {
                        op: "group commit",
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other("the committing session failed"),
                    })
                }
            };
        q = lock(&slot.queue);
        q.leader = false;
        match result {
            Ok(outcomes) if outcomes.len() == ids.len() => {
                for (id, o) in ids.into_iter().zip(outcomes) {
                    q.done.insert(id, Ok(o));
                }
            }
            Ok(_) => {
                for id in ids {
                    q.done.insert(id, Err(mixed_up()));
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
                    // The lock itself failed (the steps were never
                    // taken): our step fails with it; the others try
                    // for themselves.
                    q.waiting.retain(|(w, _)| *w != id);
                    q.done.insert(id, Err(e));
                }
                // Otherwise our step was left for a later batch: lead it.
            }
        }
        slot.cond.notify_all();
        if let Some(p) = panicked {
            q.done.remove(&id);
            drop(q);
            std::panic::resume_unwind(p);
        }
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
