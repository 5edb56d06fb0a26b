//! Group commit within one process: threads that write the same mailbox
//! at the same time share one lock hold and one flush instead of queueing
//! on the mailbox lock behind each other's flushes (docs/PROTOCOL.md §3
//! and §4a say why that is safe: the commits they share are the store's
//! ordinary all-or-nothing commits).
//!
//! Leader/follower, with no thread of its own. A thread queues its step
//! under a key (a mailbox); if no thread is committing for that key it
//! becomes the leader: it takes the steps queued by then (its own and the
//! others', in arrival order, at most the groups' batch limit), commits
//! them through its own mailbox handle and hands each thread the outcome
//! of its own step. The others wait; one whose step was left for a later
//! batch leads the next one. No thread returns before the commit that
//! held its step ended, and a failed commit fails every step in it.
//!
//! Correctness never depends on the grouping: two groups for one mailbox
//! only mean two commits, ordered by the index lock. The IMAP server
//! groups flag changes, expunges and appends; `deliver`'s LMTP server
//! groups deliveries.
//!
//! [`Company`] answers the other question a writer asks first: is anyone
//! else of this process writing the mailbox right now (then each staged
//! message is flushed outside the lock, so that the flushes overlap)?

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The error a failed batch hands to every step in it.
pub trait BatchError: Sized {
    /// The same failure, for another step of the batch (errors holding an
    /// `io::Error` are not `Clone`).
    fn for_another(&self) -> Self;
    /// The leading thread panicked while committing (a bug); `message`
    /// is the panic's.
    fn leader_panicked(message: &str) -> Self;
    /// The leader's commit gave another number of outcomes than it took
    /// steps (a bug).
    fn miscounted() -> Self;
}

/// The queues of [`Groups`], by key.
type Slots<K, Op, Out, E> = Mutex<HashMap<K, Arc<Slot<Op, Out, E>>>>;

/// Group commits, one queue per key.
pub struct Groups<K, Op, Out, E> {
    slots: Slots<K, Op, Out, E>,
    max_batch: usize,
}

struct Slot<Op, Out, E> {
    queue: Mutex<Queue<Op, Out, E>>,
    cond: Condvar,
}

struct Queue<Op, Out, E> {
    next_id: u64,
    waiting: Vec<(u64, Op)>,
    done: HashMap<u64, Result<Out, E>>,
    leading: bool,
}

impl<Op, Out, E> Default for Slot<Op, Out, E> {
    fn default() -> Self {
        Slot {
            queue: Mutex::new(Queue {
                next_id: 0,
                waiting: Vec::new(),
                done: HashMap::new(),
                leading: false,
            }),
            cond: Condvar::new(),
        }
    }
}

/// A poisoned lock is taken anyway: the queues are consistent at every
/// unlock, and one thread's bug must not wedge the others.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<K: Eq + Hash + Clone, Op, Out, E: BatchError> Groups<K, Op, Out, E> {
    /// Groups whose commits take at most `max_batch` steps (at least one).
    pub fn new(max_batch: usize) -> Self {
        Groups {
            slots: Mutex::new(HashMap::new()),
            max_batch: max_batch.max(1),
        }
    }

    /// Queues `op` under `key` and waits for its outcome, leading the
    /// commit when no other thread is. `lead` gets a function that takes
    /// the queued steps (call it once, when the steps should be taken:
    /// for example once the mailbox lock is held) and returns one outcome
    /// per step taken, in order; an error fails every step taken. A
    /// `lead` that returns an error without taking any step (the lock
    /// itself failed) fails only this call's step.
    pub fn join(
        &self,
        key: K,
        op: Op,
        lead: impl FnMut(&mut dyn FnMut() -> Vec<Op>) -> Result<Vec<Out>, E>,
    ) -> Result<Out, E> {
        let slot = Arc::clone(lock(&self.slots).entry(key.clone()).or_default());
        let result = self.run(&slot, op, lead);
        // The entry goes once nobody uses it: the table holds one
        // reference, this call another, and others only get one under the
        // table's lock.
        let mut slots = lock(&self.slots);
        if Arc::strong_count(&slot) == 2 {
            let q = lock(&slot.queue);
            if q.waiting.is_empty() && q.done.is_empty() && !q.leading {
                drop(q);
                slots.remove(&key);
            }
        }
        result
    }

    fn run(
        &self,
        slot: &Slot<Op, Out, E>,
        op: Op,
        mut lead: impl FnMut(&mut dyn FnMut() -> Vec<Op>) -> Result<Vec<Out>, E>,
    ) -> Result<Out, E> {
        let mut q = lock(&slot.queue);
        let id = q.next_id;
        q.next_id += 1;
        q.waiting.push((id, op));
        loop {
            if let Some(r) = q.done.remove(&id) {
                return r;
            }
            if q.leading {
                q = slot.cond.wait(q).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            q.leading = true;
            drop(q);
            let mut ids = Vec::new();
            let mut take = || {
                let mut q = lock(&slot.queue);
                let n = q.waiting.len().min(self.max_batch);
                q.waiting
                    .drain(..n)
                    .map(|(id, op)| {
                        ids.push(id);
                        op
                    })
                    .collect()
            };
            // A panic while leading (a bug) must not leave the others
            // waiting for ever, nor end this thread's session: every step
            // taken fails with an error that says so.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lead(&mut take)))
                .unwrap_or_else(|p| {
                    let message = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    tracing::error!("group commit ended by an internal error: {message}");
                    Err(E::leader_panicked(&message))
                });
            q = lock(&slot.queue);
            q.leading = false;
            match result {
                Ok(outcomes) if outcomes.len() == ids.len() => {
                    for (id, o) in ids.into_iter().zip(outcomes) {
                        q.done.insert(id, Ok(o));
                    }
                }
                Ok(_) => {
                    for id in ids {
                        q.done.insert(id, Err(E::miscounted()));
                    }
                }
                Err(e) => {
                    for &other in ids.iter().filter(|&&o| o != id) {
                        q.done.insert(other, Err(e.for_another()));
                    }
                    if ids.contains(&id) {
                        q.done.insert(id, Err(e));
                    } else if ids.is_empty() {
                        // Nothing was taken: only this step fails; the
                        // others try for themselves.
                        q.waiting.retain(|(w, _)| *w != id);
                        q.done.insert(id, Err(e));
                    }
                    // Otherwise this step was left for a later batch:
                    // lead it.
                }
            }
            slot.cond.notify_all();
        }
    }
}

/// Threads of this process between staging messages for a mailbox and
/// the end of their commit, per key.
pub struct Company<K> {
    map: Arc<Mutex<HashMap<K, usize>>>,
}

impl<K> Default for Company<K> {
    fn default() -> Self {
        Company {
            map: Arc::default(),
        }
    }
}

impl<K: Eq + Hash + Clone> Company<K> {
    /// Counts this thread under `key` until the returned guard is
    /// dropped; the guard says how many were there before it.
    pub fn enter(&self, key: K) -> Present<K> {
        let mut m = lock(&self.map);
        let n = m.entry(key.clone()).or_default();
        let others = *n;
        *n += 1;
        Present {
            map: Arc::clone(&self.map),
            key,
            others,
        }
    }
}

/// One thread's stay in a [`Company`].
pub struct Present<K: Eq + Hash> {
    map: Arc<Mutex<HashMap<K, usize>>>,
    key: K,
    /// Threads under the same key when this one entered.
    pub others: usize,
}

impl<K: Eq + Hash> Drop for Present<K> {
    fn drop(&mut self) {
        let mut m = lock(&self.map);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// The store's errors, as the IMAP server's groups hand them out.
impl BatchError for crate::Error {
    fn for_another(&self) -> Self {
        use crate::Error;
        match self {
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

    fn leader_panicked(message: &str) -> Self {
        crate::Error::Io {
            op: "group commit",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("the committing session failed: {message}")),
        }
    }

    fn miscounted() -> Self {
        crate::Error::Io {
            op: "group commit",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other("outcome of another kind than its step"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[derive(Debug, PartialEq)]
    struct Failed(String);

    impl BatchError for Failed {
        fn for_another(&self) -> Self {
            Failed(self.0.clone())
        }
        fn leader_panicked(message: &str) -> Self {
            Failed(format!("panicked: {message}"))
        }
        fn miscounted() -> Self {
            Failed("miscounted".into())
        }
    }

    /// Every thread gets the outcome of its own step; steps of threads
    /// that arrive while a commit runs go into a later one, in order.
    #[test]
    fn each_step_gets_its_own_outcome() {
        let groups: Groups<u32, u32, u32, Failed> = Groups::new(4);
        let commits = Mutex::new(Vec::new());
        let start = Barrier::new(8);
        std::thread::scope(|s| {
            for i in 0..8u32 {
                let (groups, commits, start) = (&groups, &commits, &start);
                s.spawn(move || {
                    start.wait();
                    let out = groups.join(7, i, |take| {
                        let steps = take();
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        lock(commits).push(steps.len());
                        Ok(steps.iter().map(|x| x * 10).collect())
                    });
                    assert_eq!(out, Ok(i * 10));
                });
            }
        });
        let sizes = lock(&commits).clone();
        assert_eq!(sizes.iter().sum::<usize>(), 8);
        assert!(sizes.iter().all(|&n| (1..=4).contains(&n)), "{sizes:?}");
        assert!(lock(&groups.slots).is_empty(), "entry left behind");
    }

    /// A failed commit fails every step it took; a panicking leader fails
    /// its batch with an error (and returns one itself).
    #[test]
    fn failures_reach_every_step_of_the_batch() {
        let groups: Groups<u32, u32, u32, Failed> = Groups::new(8);
        let out = groups.join(1, 5, |take| {
            take();
            Err(Failed("disk".into()))
        });
        assert_eq!(out, Err(Failed("disk".into())));
        let out = groups.join(1, 5, |take| {
            take();
            panic!("bug")
        });
        assert_eq!(out, Err(Failed("panicked: bug".into())));
        let out = groups.join(1, 5, |take| {
            take();
            Ok(vec![])
        });
        assert_eq!(out, Err(Failed("miscounted".into())));
        // The lock failed before anything was taken.
        let out = groups.join(1, 5, |_| Err(Failed("lock".into())));
        assert_eq!(out, Err(Failed("lock".into())));
        assert!(lock(&groups.slots).is_empty());
    }

    #[test]
    fn company_counts_who_is_there() {
        let c: Company<&str> = Company::default();
        let a = c.enter("INBOX");
        let b = c.enter("INBOX");
        let other = c.enter("Junk");
        assert_eq!((a.others, b.others, other.others), (0, 1, 0));
        drop((a, b, other));
        assert!(lock(&c.map).is_empty());
        assert_eq!(c.enter("INBOX").others, 0);
    }
}
