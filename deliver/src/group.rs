//! Group commit across LMTP sessions: sessions that finish DATA for the
//! same mailbox at about the same time share one `Mailbox::commit` (one
//! lock, one directory fsync, one index fsync round) instead of queueing
//! on the lock one by one.
//!
//! Leader/follower through `storage::group`, no extra thread: a session
//! queues its staged messages; if no commit for that mailbox is running
//! it becomes the leader, takes everything queued so far and commits it
//! with its own mailbox handle; the others wait and pick up their UIDs.
//! While a leader's commit runs, new arrivals queue up and form the next
//! batch. A failed batch fails every session in it, and nothing of it was
//! committed (the storage commit is all-or-nothing), so each gets a
//! correct reply.
//!
//! With duplicate suppression on (`--dedup-window`), the leader runs
//! [`commit_batch`], which holds the mailbox's duplicate log lock across
//! filtering the batch, the commit and recording the new Message-IDs: two
//! sessions (or processes) delivering one Message-ID store it once, and so
//! does a batch that holds it twice.

use std::collections::HashMap;

use storage::dedup::{DedupLog, Key};
use storage::group::{BatchError, Company, Groups, Present};
use storage::{Mailbox, StagedMessage};

use crate::delivery::Target;
use crate::status::{Failure, from_storage};

/// Staged copies of one message for one mailbox, with the duplicate key
/// of its Message-ID (`None`: never suppressed).
pub struct Submission {
    pub staged: Vec<StagedMessage>,
    pub key: Option<Key>,
}

/// What became of a [`Submission`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Committed; one UID per staged copy.
    Uids(Vec<u32>),
    /// A duplicate within the window: accepted, not stored again.
    Duplicate,
}

pub struct GroupCommit {
    groups: Groups<Target, Submission, Result<Stored, Failure>, Failure>,
    /// Sessions between staging and the end of their commit, per mailbox.
    in_flight: Company<Target>,
    /// Duplicate suppression window in seconds; 0 = off.
    dedup_window: u64,
}

/// One session's stay between staging and the end of its commit
/// ([`GroupCommit::enter`]).
pub type InFlight = Present<Target>;

impl GroupCommit {
    pub fn new(dedup_window: u64) -> GroupCommit {
        GroupCommit {
            // Every submission queued by then: a batch is bounded by the
            // sessions the server runs.
            groups: Groups::new(usize::MAX),
            in_flight: Company::default(),
            dedup_window,
        }
    }

    /// A session is about to stage messages for `target`; the returned
    /// guard says how many other sessions are delivering there right now
    /// (`others`), and counts this one until it is dropped (after the
    /// commit). With company, staging flushes each message outside the
    /// mailbox lock (ordered appends), so concurrent sessions' flushes
    /// overlap; alone, one flush inside the lock is cheaper (PROTOCOL.md
    /// §3).
    pub fn enter(&self, target: &Target) -> InFlight {
        self.in_flight.enter(target.clone())
    }

    /// Commits `sub` (all for `target`, staged through `mbox`), possibly
    /// together with other sessions' messages. Returns this call's UIDs,
    /// or that it was a suppressed duplicate.
    pub fn commit(
        &self,
        target: &Target,
        mbox: &mut Mailbox,
        sub: Submission,
    ) -> Result<Stored, Failure> {
        let window = self.dedup_window;
        self.groups
            .join(target.clone(), sub, |take| {
                let batch = take();
                if batch.len() > 1 {
                    tracing::debug!(sessions = batch.len(), "group commit");
                }
                Ok(commit_batch(mbox, window, batch))
            })
            .and_then(|r| r)
    }
}

/// A failed batch's error for each of its sessions.
impl BatchError for Failure {
    fn for_another(&self) -> Self {
        self.clone()
    }

    fn leader_panicked(message: &str) -> Self {
        from_storage(&storage::Error::Io {
            op: "commit",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other(format!("panic during commit: {message}")),
        })
    }

    fn miscounted() -> Self {
        from_storage(&storage::Error::Io {
            op: "commit",
            path: std::path::PathBuf::new(),
            source: std::io::Error::other("one result per submission expected"),
        })
    }
}

/// What the duplicate filter decided for one submission.
enum Fate {
    /// Goes into the commit, as the next `n` staged messages.
    Commit(usize),
    /// Recorded in the log within the window: accepted, not stored.
    Logged,
    /// Same key as an earlier submission of this batch: it is stored
    /// exactly when that one is.
    SameAs(usize),
}

/// Commits one batch for `mbox` in one [`Mailbox::commit`]; returns one
/// result per submission, in order. A failed commit fails every
/// submission that depended on it, and nothing of it was committed.
///
/// `window > 0` turns on duplicate suppression, in this order (see
/// `docs/PROTOCOL.md`, "Duplicate log"): exclusive lock on the mailbox's
/// `.dedup` (lock timeout: a temporary failure for the whole batch) →
/// drop every submission whose key is in the log within the window or
/// appeared earlier in the batch (its staged files are removed on drop)
/// → commit the rest → only after the commit returned Ok, record their
/// keys → unlock. Never recorded before the commit: a key recorded for a
/// message that was not stored would make its retry be suppressed.
/// Submissions without a key are never suppressed, and a batch with no
/// key does not touch the log at all.
pub fn commit_batch(
    mbox: &mut Mailbox,
    window: u64,
    batch: Vec<Submission>,
) -> Vec<Result<Stored, Failure>> {
    let n = batch.len();
    if window == 0 || batch.iter().all(|s| s.key.is_none()) {
        let counts: Vec<usize> = batch.iter().map(|s| s.staged.len()).collect();
        let all: Vec<StagedMessage> = batch.into_iter().flat_map(|s| s.staged).collect();
        return match mbox.commit(all) {
            Ok(uids) => {
                let mut it = uids.into_iter();
                counts
                    .into_iter()
                    .map(|c| Ok(Stored::Uids(it.by_ref().take(c).collect())))
                    .collect()
            }
            Err(e) => vec![Err(from_storage(&e)); n],
        };
    }
    let mut log = match DedupLog::open(mbox) {
        Ok(l) => l,
        Err(e) => return vec![Err(from_storage(&e)); n],
    };
    let log_path = log.path().to_path_buf();
    // Lock order: this lock, then the index lock inside the commit.
    let mut locked = match log.lock() {
        Ok(l) => l,
        Err(e) => return vec![Err(from_storage(&e)); n],
    };
    let now = storage::internals::fsutil::now();
    let mut first_with: HashMap<Key, usize> = HashMap::new();
    let mut fates = Vec::with_capacity(n);
    let mut all = Vec::new();
    let mut new_keys = Vec::new();
    for (i, sub) in batch.into_iter().enumerate() {
        let fate = match sub.key {
            Some(k) if locked.contains(&k, now, window) => Fate::Logged,
            Some(k) if first_with.contains_key(&k) => Fate::SameAs(first_with[&k]),
            key => {
                if let Some(k) = key {
                    first_with.insert(k, i);
                    new_keys.push(k);
                }
                Fate::Commit(sub.staged.len())
            }
        };
        if let Fate::Commit(_) = fate {
            all.extend(sub.staged);
        } // else: dropped here, which removes the staged files.
        fates.push(fate);
    }
    let committed = mbox.commit(all);
    if committed.is_ok() && !new_keys.is_empty() {
        // No fsync: a lost entry only means that a later duplicate is
        // stored again, never that a message is lost. A failure here must
        // not fail the delivery either: the messages are committed, and a
        // retry would store them twice.
        if let Err(e) = locked.record(&new_keys, now, window) {
            tracing::warn!(
                path = %log_path.display(),
                "could not record delivered Message-IDs in the duplicate log: {e}"
            );
        }
    }
    drop(locked);
    let mut uids = match committed {
        Ok(u) => Ok(u.into_iter()),
        Err(e) => Err(from_storage(&e)),
    };
    let mut out: Vec<Result<Stored, Failure>> = Vec::with_capacity(n);
    for fate in fates {
        let r = match fate {
            Fate::Logged => Ok(Stored::Duplicate),
            Fate::SameAs(i) => out[i].clone().map(|_| Stored::Duplicate),
            Fate::Commit(c) => match &mut uids {
                Ok(it) => Ok(Stored::Uids(it.by_ref().take(c).collect())),
                Err(f) => Err(f.clone()),
            },
        };
        out.push(r);
    }
    out
}
