//! Group commit across LMTP sessions: sessions that finish DATA for the
//! same mailbox at about the same time share one `Mailbox::commit` (one
//! lock, one directory fsync, one index fsync round) instead of queueing
//! on the lock one by one.
//!
//! Leader/follower, no extra thread: a session queues its staged messages;
//! if no commit for that mailbox is running it becomes the leader, takes
//! everything queued so far and commits it with its own mailbox handle;
//! the others wait and pick up their UIDs. While a leader's commit runs,
//! new arrivals queue up and form the next batch. A failed batch fails
//! every session in it, and nothing of it was committed (the storage
//! commit is all-or-nothing), so each gets a correct reply.
//!
//! Correctness never depends on this map: two groups for one mailbox (a
//! pruning race) only mean two commits, serialized by the index lock.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};

use storage::{Mailbox, StagedMessage};

use crate::delivery::Target;
use crate::status::{Failure, from_storage};

#[derive(Default)]
pub struct GroupCommit {
    groups: Mutex<HashMap<Target, Arc<Group>>>,
}

#[derive(Default)]
struct Group {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    next_ticket: u64,
    pending: Vec<(u64, Vec<StagedMessage>)>,
    busy: bool,
    results: HashMap<u64, Result<Vec<u32>, Failure>>,
}

impl GroupCommit {
    /// Commits `staged` (all for `target`, staged through `mbox`), possibly
    /// together with other sessions' messages. Returns this call's UIDs.
    pub fn commit(
        &self,
        target: &Target,
        mbox: &mut Mailbox,
        staged: Vec<StagedMessage>,
    ) -> Result<Vec<u32>, Failure> {
        let group = {
            let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            g.entry(target.clone()).or_default().clone()
        };
        let result = group.run(mbox, staged);
        self.prune(target, &group);
        result
    }

    fn prune(&self, target: &Target, group: &Arc<Group>) {
        let mut g = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let idle = {
            let st = group.state.lock().unwrap_or_else(|e| e.into_inner());
            !st.busy && st.pending.is_empty() && st.results.is_empty()
        };
        // Only the map and this caller hold it: nobody is about to use it.
        if idle && Arc::strong_count(group) == 2 {
            g.remove(target);
        }
    }
}

impl Group {
    fn run(&self, mbox: &mut Mailbox, staged: Vec<StagedMessage>) -> Result<Vec<u32>, Failure> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push((ticket, staged));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if !st.busy {
                st.busy = true;
                let batch = std::mem::take(&mut st.pending);
                drop(st);
                let counts: Vec<(u64, usize)> = batch.iter().map(|(t, v)| (*t, v.len())).collect();
                let all: Vec<StagedMessage> = batch.into_iter().flat_map(|(_, v)| v).collect();
                if counts.len() > 1 {
                    tracing::debug!(
                        sessions = counts.len(),
                        messages = all.len(),
                        "group commit"
                    );
                }
                // A panic here must not leave followers waiting forever.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| mbox.commit(all)))
                    .unwrap_or_else(|_| {
                        Err(storage::Error::Io {
                            op: "commit",
                            path: mbox.index_path().to_path_buf(),
                            source: std::io::Error::other("panic during commit"),
                        })
                    });
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(uids) => {
                        let mut it = uids.into_iter();
                        for (t, n) in counts {
                            st.results.insert(t, Ok(it.by_ref().take(n).collect()));
                        }
                    }
                    Err(e) => {
                        let f = from_storage(&e);
                        for (t, _) in counts {
                            st.results.insert(t, Err(f.clone()));
                        }
                    }
                }
                st.busy = false;
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}
