//! Group commit within this server process (docs/PROTOCOL.md §3 and
//! §4a), through `storage::group`: sessions that write the same mailbox
//! at the same time join one lock hold and one flush instead of queueing
//! on the mailbox lock behind each other's flushes.
//!
//! Two kinds of group, each per mailbox: flag-only STOREs and EXPUNGEs
//! ([`Mailbox::write_batch`]: each step its own MODSEQ; the leader takes
//! the steps once it holds the exclusive lock), and APPENDs
//! ([`Mailbox::commit`] of every session's staged messages: all-or-none
//! per session, UIDs in order), at most [`MAX_BATCH`] steps a commit.
//! The key is the mailbox directory's device and inode, which a repack or
//! rename does not change.

use std::sync::LazyLock;

use storage::group::{Company, Groups, Present};
use storage::mailbox::{BatchOp, BatchOutcome, CommitSpan, FlagOp, StoreOutcome};
use storage::{Error, Flags, Mailbox, StagedMessage};

/// The most steps one lock hold commits; the rest wait for the next one.
pub const MAX_BATCH: usize = 256;

/// A mailbox directory: device and inode.
type Key = (u64, u64);

/// Flag changes and expunges (`Mailbox::write_batch`).
static WRITES: LazyLock<Groups<Key, BatchOp, BatchOutcome, Error>> =
    LazyLock::new(|| Groups::new(MAX_BATCH));
/// Appends: each session's staged messages (`Mailbox::commit`).
static APPENDS: LazyLock<Groups<Key, Vec<StagedMessage>, Vec<u32>, Error>> =
    LazyLock::new(|| Groups::new(MAX_BATCH));
/// Sessions between staging and the end of their commit, per mailbox.
static APPENDING: LazyLock<Company<Key>> = LazyLock::new(Company::default);

fn key(mbox: &Mailbox) -> Result<Key, Error> {
    mbox.dir_id()
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
        BatchOutcome::Expunge { .. } => Err(mixed_up()),
    }
}

/// [`Mailbox::expunge`], committed with other sessions' steps: the
/// expunged UIDs and, when no other step joined the commit, its span.
/// `hint`: the UIDs the session's view holds as \Deleted (a speed-up
/// only, see [`BatchOp::Expunge`]).
pub fn expunge(
    mbox: &mut Mailbox,
    uids: Option<Vec<u32>>,
    require_deleted: bool,
    hint: Vec<u32>,
) -> Result<(Vec<u32>, Option<CommitSpan>), Error> {
    let step = BatchOp::Expunge {
        uids,
        require_deleted,
        hint,
    };
    match write(mbox, step)? {
        BatchOutcome::Expunge { gone, span } => Ok((gone, span)),
        BatchOutcome::Store(_) => Err(mixed_up()),
    }
}

/// An outcome of the other kind than its step: a bug here, reported as
/// an error rather than a panic.
fn mixed_up() -> Error {
    <Error as storage::group::BatchError>::miscounted()
}

/// Commits `op` on `mbox`, together with the steps other sessions of this
/// process queue for the same mailbox meanwhile (the leader takes them
/// under the lock). Returns once the step is durable (or failed), with
/// what its own call would have returned.
fn write(mbox: &mut Mailbox, op: BatchOp) -> Result<BatchOutcome, Error> {
    WRITES.join(key(mbox)?, op, |take| mbox.write_batch(take))
}

/// A session about to stage messages for a mailbox: counted until
/// dropped (after its commit).
pub struct Appending {
    key: Key,
    /// Other sessions of this process were appending to the mailbox when
    /// this one started.
    pub others: bool,
    _present: Present<Key>,
}

/// Counts this session as appending to `mbox` until the guard is
/// dropped. With company, staging should flush each message outside the
/// lock (ordered, `Mailbox::set_unordered_appends(false)`), so the
/// sessions' flushes overlap and the group's commit is one index flush;
/// alone, the unordered append's one flush inside the lock is cheaper
/// (PROTOCOL.md §3).
pub fn enter_append(mbox: &Mailbox) -> Result<Appending, Error> {
    let key = key(mbox)?;
    let present = APPENDING.enter(key);
    Ok(Appending {
        key,
        others: present.others > 0,
        _present: present,
    })
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
    APPENDS.join(ticket.key, staged, |take| {
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
