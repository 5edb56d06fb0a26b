//! COPY and MOVE between two mailboxes (IMAP COPY, MOVE, UID MOVE with
//! UIDPLUS COPYUID). `docs/PROTOCOL.md` "COPY and MOVE" is the normative
//! write ordering; this comment says why it is shaped this way.
//!
//! A copy is one commit in the destination, so it is atomic like an
//! append. A move must change two index files, which no single write can
//! commit. The destination is committed first, carrying the header flag
//! `HF_MOVE_IN`, after the source has been marked `HF_MOVE_OUT`; both
//! directories hold the same journal (`.move`) naming the other mailbox
//! and the UID mapping. Every lock acquisition reads the header anyway, so
//! a locker that finds either flag (only possible after the mover died:
//! a live mover holds both exclusive locks while a flag is set) settles the
//! move before it answers, rolling it forward when the destination commit
//! happened (`HF_MOVE_IN` with the journal's token) and back otherwise. No
//! session can therefore observe a moved message in both mailboxes.
//!
//! Locks on two mailboxes are always taken in the order of their
//! directories' (device, inode), which neither repack nor rename changes,
//! so two opposite moves cannot deadlock.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AtFlags, OFlag};

use crate::error::{Error, Result};
use crate::fault;
use crate::format::{Flags, HF_MOVE_IN, HF_MOVE_OUT, Header, Keywords, Record};
use crate::fsutil::{self, Dir};
use crate::index::Durability;
use crate::lock::{LockGuard, LockKind, LockedFile};
use crate::mailbox::{Mailbox, Recount, Wanted, expunge_in, message_file_name};
use crate::names::MailboxName;

/// The journal's file name in both mailboxes' directories.
pub const JOURNAL_NAME: &str = ".move";
const JOURNAL_FIRST_LINE: &str = "mailstore-move 1";
/// The largest journal written or read (docs/FORMAT.md §7): about 2.5
/// million moved messages. A MOVE that needs more is refused before
/// anything changes ([`Error::TooLarge`]); a larger file is not read (it
/// cannot be a journal this store wrote), so a damaged or planted one
/// never sizes an allocation.
pub const MAX_JOURNAL_BYTES: u64 = 64 << 20;

/// Quota of the destination's quota root, as the caller measured it.
/// The check runs under the locks, before anything becomes visible, but
/// `used` was measured before them: concurrent deliveries may overshoot
/// it slightly, as with deliver's own check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Bytes the user stores now.
    pub used: u64,
    /// The user's limit in bytes.
    pub limit: u64,
}

/// What a copy or move did, for UIDPLUS `COPYUID`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyOutcome {
    /// UIDVALIDITY of the destination.
    pub uidvalidity: u32,
    /// (source UID, destination UID), ascending by source UID.
    pub map: Vec<(u32, u32)>,
    /// Destination generation after the commit (0 when nothing was done).
    pub dst_generation: u64,
}

impl CopyOutcome {
    /// The source UIDs, ascending (COPYUID's first set).
    pub fn source_uids(&self) -> Vec<u32> {
        self.map.iter().map(|m| m.0).collect()
    }
    /// The destination UIDs, in the order of the source UIDs (COPYUID's second set).
    pub fn dest_uids(&self) -> Vec<u32> {
        self.map.iter().map(|m| m.1).collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Copy,
    Move,
}

/// Fault point names per mode, in write order.
struct Points {
    stage: &'static str,
    lock: &'static str,
    rename: &'static str,
    records: &'static str,
    header: &'static str,
}

const COPY_POINTS: Points = Points {
    stage: "copy.after_stage",
    lock: "copy.after_lock",
    rename: "copy.after_rename",
    records: "copy.after_records",
    header: "copy.after_header",
};
const MOVE_POINTS: Points = Points {
    stage: "move.after_stage",
    lock: "move.after_lock",
    rename: "move.after_rename",
    records: "move.after_records",
    header: "move.after_dst_commit",
};

/// Copies `uids` of `src` into `dst`, keeping flags, keywords (by name)
/// and INTERNALDATE; each copy gets a new UID and MODSEQ in `dst`.
///
/// All or nothing (RFC 3501 COPY): if any UID is not a live message of
/// `src` when the locks are taken, nothing is copied and the error is
/// [`Error::Expunged`] with the first such UID. `src` and `dst` may be two
/// handles of the same mailbox (the copies are appended to it).
pub fn copy(
    src: &mut Mailbox,
    uids: &[u32],
    dst: &mut Mailbox,
    quota: Option<Quota>,
) -> Result<CopyOutcome> {
    transfer(src, uids, dst, quota, Mode::Copy)
}

/// Moves `uids` from `src` to `dst`: a copy plus an expunge of the
/// sources, atomic as seen by every session of either mailbox, even
/// across a crash (see the module comment). Same all-or-nothing rule as
/// [`copy`]. Source and destination may be two handles of one mailbox
/// (the copies are appended and the originals expunged, one lock held
/// throughout). Quota: pass `None` when source and
/// destination share a quota root (the move frees what it adds).
pub fn move_messages(
    src: &mut Mailbox,
    uids: &[u32],
    dst: &mut Mailbox,
    quota: Option<Quota>,
) -> Result<CopyOutcome> {
    transfer(src, uids, dst, quota, Mode::Move)
}

/// A message of a copy or move, ready for the destination's commit:
/// staged early (its source file linked, or copied, into the
/// destination's `.stage` before any lock), or late (placed from the
/// source straight under its new UID at the commit, under both locks:
/// past what the process may hold open, PROTOCOL.md §5).
struct Staged {
    /// The source mailbox's directory and the message's UID there.
    src: std::sync::Arc<Dir>,
    uid: u32,
    early: Option<Early>,
    placed: bool,
}

/// A staged name and the descriptor whose shared OFD lock tells
/// `Mailbox::recover` (and settling) a live writer owns it.
struct Early {
    name: String,
    stage: std::sync::Arc<Dir>,
    /// Keeps the lock until the early name is settled or dropped.
    _file: LockedFile,
}

impl Staged {
    fn late(src: &Mailbox, uid: u32) -> Staged {
        Staged {
            src: src.dir.clone(),
            uid,
            early: None,
            placed: false,
        }
    }

    /// Gives up the staged name and its descriptor: placed late instead.
    fn make_late(&mut self) {
        if let Some(e) = self.early.take() {
            let _ = e.stage.unlink(fsutil::os(e.name.as_bytes()));
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.placed {
            self.make_late();
        }
    }
}

/// Early-staged messages that give their descriptors back when staging
/// runs out of them (EMFILE), so that the commit can still open files.
const GIVE_BACK: usize = 16;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A 64-bit value no other call returns in practice: the time, the
/// process and a per-process counter, each mixed in with a bijective
/// hash step. (XOR alone let two threads collide: time 1000 with count 1
/// and time 1001 with count 0 give the same value.)
fn unique() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    mix(mix(mix(t) ^ std::process::id() as u64) ^ n)
}

/// splitmix64's finalizer: a bijection on u64 that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn dir_id(d: &Dir) -> Result<(u64, u64)> {
    let st = nix::sys::stat::fstat(d.fd.as_fd()).map_err(|e| Error::nix("stat", &d.path, e))?;
    Ok((st.st_dev, st.st_ino))
}

fn transfer(
    src: &mut Mailbox,
    uids: &[u32],
    dst: &mut Mailbox,
    quota: Option<Quota>,
    mode: Mode,
) -> Result<CopyOutcome> {
    let same = dir_id(src.dir())? == dir_id(dst.dir())?;
    let points = match mode {
        Mode::Copy => &COPY_POINTS,
        Mode::Move => &MOVE_POINTS,
    };
    let mut uids: Vec<u32> = uids.to_vec();
    uids.sort_unstable();
    uids.dedup();
    if uids.is_empty() {
        return Ok(CopyOutcome {
            uidvalidity: dst.header()?.uidvalidity,
            ..Default::default()
        });
    }

    // Phase 1: which records, read under a shared lock (which also
    // settles any half-done move involving the source).
    let before = live_records(src, &uids)?;

    // Phase 2: stage outside every lock. A hard link costs no data copy
    // and no fsync: the source file is already durable. Each staged
    // message keeps its source file open (and locked) until the commit,
    // so only as many as the process may open are staged; the rest are
    // placed late, under the locks.
    let mut early = early_room(uids.len());
    let mut staged: Vec<Staged> = Vec::with_capacity(uids.len());
    for (k, r) in before.iter().enumerate() {
        if k >= early {
            staged.push(Staged::late(src, r.uid));
            continue;
        }
        match stage_one(src, r.uid, dst) {
            Ok(s) => staged.push(s),
            // Out of descriptors after all (other threads took them):
            // this one and the rest go late, and the last few staged give
            // theirs back for the commit.
            Err(Error::Io { source, .. })
                if matches!(source.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) =>
            {
                let keep = staged.len().saturating_sub(GIVE_BACK);
                staged[keep..].iter_mut().for_each(Staged::make_late);
                early = k;
                staged.push(Staged::late(src, r.uid));
            }
            Err(e) => return Err(e),
        }
    }
    fault::point(points.stage)?;

    // Phase 3: both locks in the global order; settle leftovers first.
    let (gs, hs, gd, hd) = lock_both(src, dst, same, mode)?;
    fault::point(points.lock)?;
    let found = if same {
        dst.records_of(&hd, &uids)?
    } else {
        src.records_of(&hs, &uids)?
    };
    let now_records = uids
        .iter()
        .map(|&u| found.live(u).cloned().ok_or(Error::Expunged(u)))
        .collect::<Result<Vec<Record>>>()?;
    if let Some(q) = quota {
        let size: u64 = now_records.iter().map(|r| r.size).sum();
        if q.used.saturating_add(size) > q.limit {
            return Err(Error::OverQuota {
                used: q.used,
                size,
                limit: q.limit,
            });
        }
    }
    // Keyword indexes are per mailbox: carry them over by name.
    if same {
        dst.refresh_meta(&hd)?;
    } else {
        src.refresh_meta(&hs)?;
    }
    let src_names = if same {
        dst.meta.keywords.clone()
    } else {
        src.meta.keywords.clone()
    };
    let kw_names: Vec<Vec<String>> = now_records
        .iter()
        .map(|r| {
            r.keywords
                .iter()
                .filter_map(|i| src_names.get(i).cloned())
                .collect()
        })
        .collect();
    dst.refresh_meta(&hd)?;
    if (hd.last_uid as u64) + uids.len() as u64 > u32::MAX as u64 {
        return Err(Error::UidsExhausted);
    }
    crate::mailbox::check_room(&hd, uids.len())?;
    let map: Vec<(u32, u32)> = uids
        .iter()
        .enumerate()
        .map(|(i, &u)| (u, hd.last_uid + 1 + i as u32))
        .collect();
    let plan = Plan {
        records: now_records,
        kw_names,
        map: map.clone(),
    };

    let new_dst = match mode {
        Mode::Copy => commit_dst(dst, &hd, &plan, &mut staged, 0, points)?,
        Mode::Move => {
            let journal = Journal {
                token: unique(),
                src_name: src.name().clone(),
                src_uidvalidity: hs.uidvalidity,
                dst_name: dst.name().clone(),
                dst_uidvalidity: hd.uidvalidity,
                map: map.clone(),
            };
            let size = journal.serialize().len() as u64;
            if size > MAX_JOURNAL_BYTES {
                return Err(Error::TooLarge {
                    size,
                    limit: MAX_JOURNAL_BYTES,
                });
            }
            let moved = if same {
                move_within(dst, &hd, &plan, &mut staged, &journal)
            } else {
                move_locked(src, &hs, dst, &hd, &plan, &mut staged, &journal)
            };
            match moved {
                Ok(h) => h,
                Err(e) => {
                    // Settle from what reached the files: forward if the
                    // destination committed, back otherwise. If this fails
                    // too, the next locker of either mailbox settles.
                    let settled = if same {
                        settle_within(dst, &journal)
                    } else {
                        settle(src, dst, &journal)
                    };
                    if let Err(e2) = settled {
                        tracing::warn!(error = %e2, "could not settle a failed move; left for the next locker");
                    }
                    return Err(e);
                }
            }
        }
    };
    drop(gd);
    drop(gs);
    Ok(CopyOutcome {
        uidvalidity: hd.uidvalidity,
        map,
        dst_generation: new_dst.generation,
    })
}

/// Copies and moves of more messages than this check first how many
/// more files the process may open.
const CHECK_OPEN_FILES_FROM: usize = 256;

/// Descriptors left for the other threads of the process (connections,
/// their mailboxes and messages) while a big copy holds its own.
const OPEN_FILES_RESERVE: usize = 256;

/// How many of `n` messages to stage early: all, unless the process may
/// not open that many more files (or a test's `transfer.early=limit:N`
/// says fewer).
fn early_room(n: usize) -> usize {
    let mut room = n;
    if n > CHECK_OPEN_FILES_FROM
        && let Some(r) = open_file_room()
    {
        room = room.min(r);
    }
    fault::limit("transfer.early").map_or(room, |l| room.min(l))
}

/// How many more files this process may open now (its soft
/// `RLIMIT_NOFILE` less those open and [`OPEN_FILES_RESERVE`]); `None`
/// when that cannot be told.
fn open_file_room() -> Option<usize> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let soft = usize::try_from(soft).unwrap_or(usize::MAX);
    Some(soft.saturating_sub(open).saturating_sub(OPEN_FILES_RESERVE))
}

/// The live records of `uids` (ascending, distinct), read under one
/// shared lock: single-record reads when they are few (a MOVE of one
/// message out of a million reads a record or two, not the index).
fn live_records(src: &mut Mailbox, uids: &[u32]) -> Result<Vec<Record>> {
    let (g, h) = src.lock_current(LockKind::Shared)?;
    let found = src.records_of(&h, uids)?;
    drop(g);
    uids.iter()
        .map(|&u| found.live(u).cloned().ok_or(Error::Expunged(u)))
        .collect()
}

fn stage_one(src: &Mailbox, uid: u32, dst: &Mailbox) -> Result<Staged> {
    let src_name = message_file_name(uid);
    let src_os = fsutil::os(src_name.as_bytes());
    // Lock the inode before it gets a name in `.stage`, so that recovery
    // in the destination never takes our link for debris.
    let file = match src.dir().open_file(src_os, OFlag::O_RDONLY) {
        Ok(f) => LockedFile::new(f),
        Err(e) if e.is_not_found() => {
            return Err(Error::Expunged(uid));
        }
        Err(e) => return Err(e),
    };
    let src_path = src.dir().child_path(src_os);
    crate::lock::lock(file.as_fd(), LockKind::Shared, src.lock_timeout, &src_path)?;
    let name = format!("{}.{}.m{}", std::process::id(), fsutil::now(), unique());
    let os = fsutil::os(name.as_bytes());
    match link_message(src.dir(), uid, &dst.stage, os)? {
        Link::Made => Ok(Staged {
            src: src.dir.clone(),
            uid,
            early: Some(Early {
                name,
                stage: dst.stage.clone(),
                _file: file,
            }),
            placed: false,
        }),
        Link::Impossible => {
            // No hard link possible here: copy the bytes and make them
            // durable before any index can point at them.
            let mut out = dst
                .stage
                .open_file(os, OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL)?;
            let path = dst.stage.child_path(os);
            let staged = Staged {
                src: src.dir.clone(),
                uid,
                early: Some(Early {
                    name,
                    stage: dst.stage.clone(),
                    _file: LockedFile::new(
                        out.try_clone().map_err(|e| Error::io("dup", &path, e))?,
                    ),
                }),
                placed: false,
            };
            crate::lock::lock(out.as_fd(), LockKind::Shared, dst.lock_timeout, &path)?;
            copy_bytes(&file, &mut out, &path, dst.durability() == Durability::Full)?;
            Ok(staged)
        }
    }
}

/// What [`link_message`] did.
enum Link {
    Made,
    /// No hard link can be made here (another filesystem, a link limit,
    /// a filesystem without links): the caller copies the bytes.
    Impossible,
}

/// Hard-links message `uid` of `src` as `to` in `to_dir`; a source file
/// that is gone is [`Error::Expunged`].
fn link_message(src: &Dir, uid: u32, to_dir: &Dir, to: &std::ffi::OsStr) -> Result<Link> {
    let from = message_file_name(uid);
    let linked = nix::unistd::linkat(
        src.fd.as_fd(),
        fsutil::os(from.as_bytes()),
        to_dir.fd.as_fd(),
        to,
        AtFlags::empty(),
    );
    match linked {
        Ok(()) => Ok(Link::Made),
        Err(nix::Error::ENOENT) => Err(Error::Expunged(uid)),
        Err(nix::Error::EXDEV)
        | Err(nix::Error::EPERM)
        | Err(nix::Error::EMLINK)
        | Err(nix::Error::ENOTSUP) => Ok(Link::Impossible),
        Err(e) => Err(Error::nix("link", to_dir.child_path(to), e)),
    }
}

/// Exclusive locks on both mailboxes (shared on the source of a copy) in
/// directory order, after settling any move a dead process left behind.
fn lock_both(
    src: &mut Mailbox,
    dst: &mut Mailbox,
    same: bool,
    mode: Mode,
) -> Result<(Option<LockGuard>, Header, LockGuard, Header)> {
    if same {
        let (g, h) = dst.lock_current(LockKind::Exclusive)?;
        return Ok((None, h.clone(), g, h));
    }
    let src_kind = match mode {
        Mode::Copy => LockKind::Shared,
        Mode::Move => LockKind::Exclusive,
    };
    for _ in 0..100 {
        let (gs, hs, gd, hd) = lock_pair(src, src_kind, dst, LockKind::Exclusive)?;
        if !hs.has_pending_move() && !hd.has_pending_move() {
            return Ok((Some(gs), hs, gd, hd));
        }
        drop((gs, gd));
        if hs.has_pending_move() {
            resolve_pending(src)?;
        }
        if hd.has_pending_move() {
            resolve_pending(dst)?;
        }
    }
    Err(Error::corrupt(
        src.index_path(),
        0,
        "pending move keeps reappearing",
    ))
}

/// Snapshots of two different mailboxes read under shared locks held at
/// the same time (taken in the global order, after settling any pending
/// move): a consistent cut across both, e.g. to check that no message is
/// in both after a move.
pub fn snapshot_pair(
    a: &mut Mailbox,
    b: &mut Mailbox,
) -> Result<(crate::mailbox::Snapshot, crate::mailbox::Snapshot)> {
    for _ in 0..100 {
        let (ga, ha, gb, hb) = lock_pair(a, LockKind::Shared, b, LockKind::Shared)?;
        if ha.has_pending_move() || hb.has_pending_move() {
            drop((ga, gb));
            if ha.has_pending_move() {
                resolve_pending(a)?;
            }
            if hb.has_pending_move() {
                resolve_pending(b)?;
            }
            continue;
        }
        let snap = |m: &mut Mailbox, h: Header| -> Result<crate::mailbox::Snapshot> {
            let records = m.index.read_records(0, h.num_records)?;
            m.check_uid_order(&h, &records, 0)?;
            m.refresh_meta(&h)?;
            Ok(crate::mailbox::Snapshot {
                mark: m.mark_of(&h),
                header: h,
                records,
                meta: m.meta.clone(),
            })
        };
        let sa = snap(a, ha)?;
        let sb = snap(b, hb)?;
        drop((ga, gb));
        return Ok((sa, sb));
    }
    Err(Error::corrupt(
        a.index_path(),
        0,
        "pending move keeps reappearing",
    ))
}

/// Locks two different mailboxes in the global order. No pending-move
/// handling: callers check the headers.
fn lock_pair(
    a: &mut Mailbox,
    ka: LockKind,
    b: &mut Mailbox,
    kb: LockKind,
) -> Result<(LockGuard, Header, LockGuard, Header)> {
    if dir_id(a.dir())? <= dir_id(b.dir())? {
        let (ga, ha) = a.lock_index(ka)?;
        let (gb, hb) = b.lock_index(kb)?;
        Ok((ga, ha, gb, hb))
    } else {
        let (gb, hb) = b.lock_index(kb)?;
        let (ga, ha) = a.lock_index(ka)?;
        Ok((ga, ha, gb, hb))
    }
}

struct Plan {
    records: Vec<Record>,
    kw_names: Vec<Vec<String>>,
    map: Vec<(u32, u32)>,
}

/// The move's steps under both locks, up to the destination commit; the
/// rest is [`settle`], the same code a recovering locker runs.
fn move_locked(
    src: &mut Mailbox,
    hs: &Header,
    dst: &mut Mailbox,
    hd: &Header,
    plan: &Plan,
    staged: &mut [Staged],
    journal: &Journal,
) -> Result<Header> {
    let durable = src.durability() == Durability::Full;
    journal.write(src.dir(), durable)?;
    if durable {
        src.dir().fsync()?;
    }
    let mut marked = hs.clone();
    marked.generation = hs.generation + 1;
    marked.flags |= HF_MOVE_OUT;
    src.index.write_header(&marked)?;
    if durable {
        src.index.sync()?;
    }
    fault::point("move.after_journal")?;
    // The destination's directory fsync inside the commit also makes this
    // journal's name durable before the header that flags it.
    journal.write(dst.dir(), dst.durability() == Durability::Full)?;
    let new_dst = commit_dst(dst, hd, plan, staged, HF_MOVE_IN, &MOVE_POINTS)?;
    match settle(src, dst, journal)? {
        Settled::Forward => Ok(new_dst),
        other => Err(Error::corrupt(
            dst.index_path(),
            0,
            format!("move committed but settled as {other:?}"),
        )),
    }
}

/// A move within one mailbox (RFC 6851 and RFC 3501 allow MOVE and COPY
/// into the selected mailbox), under its one exclusive lock: the journal,
/// then the copies committed together with both `HF_MOVE_OUT` and
/// `HF_MOVE_IN` in one header, then [`settle_within`] expunges the
/// originals. A crash before that header leaves only the originals; after
/// it, the next locker rolls forward (PROTOCOL.md §6a).
fn move_within(
    m: &mut Mailbox,
    h: &Header,
    plan: &Plan,
    staged: &mut [Staged],
    journal: &Journal,
) -> Result<Header> {
    // The commit's directory fsync makes the journal's name durable
    // before the header that flags it; its bytes are fdatasynced here.
    journal.write(m.dir(), m.durability() == Durability::Full)?;
    fault::point("move.after_journal")?;
    let committed = commit_dst(m, h, plan, staged, HF_MOVE_OUT | HF_MOVE_IN, &MOVE_POINTS)?;
    match settle_within(m, journal)? {
        Settled::Forward => Ok(committed),
        other => Err(Error::corrupt(
            m.index_path(),
            0,
            format!("move within the mailbox committed but settled as {other:?}"),
        )),
    }
}

/// [`settle`] for a move whose source and destination are one mailbox
/// (its exclusive lock held): both flags were set by one commit, so
/// either the copies are committed (expunge the originals, clear the
/// flags) or nothing is.
fn settle_within(m: &mut Mailbox, j: &Journal) -> Result<Settled> {
    let h = m.index.read_header()?;
    let mine = Journal::load(m.dir()).is_some_and(|x| x.token == j.token);
    let out = h.flags & HF_MOVE_OUT != 0 && mine;
    let inn = h.flags & HF_MOVE_IN != 0 && mine;
    let durable = m.durability() == Durability::Full;
    let result = match (out, inn) {
        (true, true) => {
            expunge_sources(m, &h, j, durable)?;
            fault::point("move.after_src_expunge")?;
            let h = m.index.read_header()?;
            clear_flag(m, &h, HF_MOVE_IN, durable)?;
            fault::point("move.after_dst_clear")?;
            Settled::Forward
        }
        (true, false) => {
            clear_flag(m, &h, HF_MOVE_OUT, durable)?;
            Settled::Back
        }
        (false, true) => {
            clear_flag(m, &h, HF_MOVE_IN, durable)?;
            Settled::DstOnly
        }
        (false, false) => Settled::Nothing,
    };
    j.unlink_if_mine(m.dir())?;
    if result != Settled::Forward && result != Settled::Nothing {
        tracing::warn!(mailbox = %j.src_name, ?result, "settled an interrupted move within a mailbox");
    }
    Ok(result)
}

/// Appends the planned records to `dst` (lock held), as an append does:
/// keywords, renames, directory fsync, records, fsync, header, fsync.
fn commit_dst(
    dst: &mut Mailbox,
    old: &Header,
    plan: &Plan,
    staged: &mut [Staged],
    set_flags: u32,
    points: &Points,
) -> Result<Header> {
    let saved_meta = dst.meta.clone();
    let all: Vec<String> = plan.kw_names.iter().flatten().cloned().collect();
    let meta_changed = match dst.add_keywords(&all) {
        Ok(c) => c,
        Err(e) => {
            dst.meta = saved_meta;
            return Err(e);
        }
    };
    let durable = dst.durability() == Durability::Full;
    let mut new = old.clone();
    let mut placed: Vec<String> = Vec::new();
    let result = (|| -> Result<Header> {
        if meta_changed {
            dst.meta.save(dst.dir(), dst.durability())?;
            new.meta_generation = old.meta_generation.wrapping_add(1).max(1);
        }
        let modseq = old.highestmodseq + 1;
        let now = fsutil::now();
        let mut records = Vec::with_capacity(plan.records.len());
        for (i, (r, s)) in plan.records.iter().zip(staged.iter()).enumerate() {
            let uid = plan.map[i].1;
            let target = message_file_name(uid);
            // A file at `target` is debris of a crashed commit (above the
            // committed last_uid): kept in quarantine, not replaced by the
            // rename (files win over the index); the directory fsync below
            // makes its move durable before the header counts the UID.
            if dst.dir().exists(fsutil::os(target.as_bytes()))? {
                crate::quarantine::keep(
                    dst.dir(),
                    dst.dir(),
                    fsutil::os(target.as_bytes()),
                    crate::quarantine::Reason::Uncommitted,
                )?;
            }
            match &s.early {
                Some(e) => e.stage.rename(
                    fsutil::os(e.name.as_bytes()),
                    dst.dir(),
                    fsutil::os(target.as_bytes()),
                )?,
                None => place_late(&s.src, s.uid, dst, &target, durable)?,
            }
            placed.push(target);
            let mut kw = Keywords::default();
            for k in &plan.kw_names[i] {
                if let Some(ix) = dst.meta.find(k) {
                    kw.insert(ix);
                }
            }
            records.push(Record {
                uid,
                flags: r.flags.intersect(Flags::SYSTEM),
                modseq,
                keywords: kw,
                last_updated: now,
                ..r.clone()
            });
        }
        for s in staged.iter_mut() {
            s.placed = true;
        }
        fault::point(points.rename)?;
        if durable {
            dst.dir().fsync()?;
        }
        // Through the append path's growth, which syncs a new length
        // before records land in it (index.rs).
        dst.index
            .write_appended(old.num_records, &records, durable)?;
        fault::point(points.records)?;
        if durable {
            dst.index.sync()?;
        }
        new.generation = old.generation + 1;
        new.flags |= set_flags;
        new.num_records = old.num_records + records.len() as u32;
        new.last_uid = records.last().map(|r| r.uid).unwrap_or(old.last_uid);
        new.highestmodseq = modseq;
        new.last_append = now;
        for r in &records {
            new.count_appended(r);
        }
        dst.index.write_header(&new)?;
        if durable {
            dst.index.sync()?;
        }
        fault::point(points.header)?;
        Ok(new.clone())
    })();
    if result.is_err() {
        dst.discard_placed_unless_committed(old.generation, &placed);
    }
    result
}

/// Places a late message (COPY step 6, PROTOCOL.md §5) under both locks:
/// a hard link from the source's `UID.` to `target` in the destination,
/// or, where linking is impossible, a copy of its bytes made durable
/// before the index counts it. The source cannot lose the file meanwhile
/// (a repack needs the source's exclusive lock), and nothing else may
/// write `target` (above the destination's `last_uid`, under its lock).
fn place_late(src: &Dir, uid: u32, dst: &Mailbox, target: &str, durable: bool) -> Result<()> {
    let to = fsutil::os(target.as_bytes());
    match link_message(src, uid, dst.dir(), to)? {
        Link::Made => Ok(()),
        Link::Impossible => {
            let from = message_file_name(uid);
            let input = src.open_file(fsutil::os(from.as_bytes()), OFlag::O_RDONLY)?;
            let path = dst.dir().child_path(to);
            let mut out = dst
                .dir()
                .open_file(to, OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL)?;
            let copied = copy_bytes(&input, &mut out, &path, durable);
            if copied.is_err() {
                // Our own partial file, never counted by any index.
                let _ = dst.dir().unlink(to);
            }
            copied
        }
    }
}

fn copy_bytes(input: &File, out: &mut File, path: &std::path::Path, durable: bool) -> Result<()> {
    std::io::copy(&mut &*input, out).map_err(|e| Error::io("copy", path, e))?;
    out.flush().map_err(|e| Error::io("write", path, e))?;
    if durable {
        fsutil::fdatasync(out, path)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------
// The journal and settling.

#[derive(Clone, Debug, PartialEq, Eq)]
struct Journal {
    token: u64,
    src_name: MailboxName,
    src_uidvalidity: u32,
    dst_name: MailboxName,
    dst_uidvalidity: u32,
    map: Vec<(u32, u32)>,
}

impl Journal {
    fn serialize(&self) -> Vec<u8> {
        let mut s = format!(
            "{JOURNAL_FIRST_LINE}\ntoken {:016x}\nsrc {} {}\ndst {} {}\n",
            self.token, self.src_uidvalidity, self.src_name, self.dst_uidvalidity, self.dst_name
        );
        for (a, b) in &self.map {
            s.push_str(&format!("map {a} {b}\n"));
        }
        let crc = crc32fast::hash(s.as_bytes());
        s.push_str(&format!("crc {crc:08x}\n"));
        s.into_bytes()
    }

    fn parse(buf: &[u8]) -> Option<Journal> {
        let text = std::str::from_utf8(buf).ok()?;
        let body_end = text.trim_end_matches('\n').rfind('\n')? + 1;
        let crc =
            u32::from_str_radix(text[body_end..].trim_end().strip_prefix("crc ")?, 16).ok()?;
        if crc != crc32fast::hash(&buf[..body_end]) {
            return None;
        }
        let mut lines = text[..body_end].lines();
        if lines.next()? != JOURNAL_FIRST_LINE {
            return None;
        }
        let token = u64::from_str_radix(lines.next()?.strip_prefix("token ")?, 16).ok()?;
        let side = |l: Option<&str>, p: &str| -> Option<(u32, MailboxName)> {
            let (v, n) = l?.strip_prefix(p)?.split_once(' ')?;
            Some((v.parse().ok()?, MailboxName::new(n).ok()?))
        };
        let (src_uidvalidity, src_name) = side(lines.next(), "src ")?;
        let (dst_uidvalidity, dst_name) = side(lines.next(), "dst ")?;
        let mut map = Vec::new();
        for l in lines {
            let (a, b) = l.strip_prefix("map ")?.split_once(' ')?;
            map.push((a.parse().ok()?, b.parse().ok()?));
        }
        Some(Journal {
            token,
            src_name,
            src_uidvalidity,
            dst_name,
            dst_uidvalidity,
            map,
        })
    }

    /// Replaces `.move` in `dir` atomically (temp, fdatasync, rename).
    /// The caller makes the name durable (directory fsync).
    fn write(&self, dir: &Dir, durable: bool) -> Result<()> {
        let tmp = format!("{JOURNAL_NAME}.tmp.{}", std::process::id());
        dir.replace_file(&tmp, JOURNAL_NAME, &self.serialize(), durable)
    }

    /// The journal in `dir`; `None` when absent or unreadable (a torn
    /// journal never had its flag set: the flag is written after it).
    fn load(dir: &Dir) -> Option<Journal> {
        let f = dir
            .open_file(fsutil::os(JOURNAL_NAME.as_bytes()), OFlag::O_RDONLY)
            .ok()?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(&f, MAX_JOURNAL_BYTES + 1),
            &mut buf,
        )
        .ok()?;
        if buf.len() as u64 > MAX_JOURNAL_BYTES {
            tracing::error!(dir = %dir.path.display(), "{JOURNAL_NAME} is larger than {MAX_JOURNAL_BYTES} bytes: not a journal this store wrote");
            return None;
        }
        Journal::parse(&buf)
    }

    fn unlink_if_mine(&self, dir: &Dir) -> Result<()> {
        if Journal::load(dir).is_some_and(|j| j.token == self.token) {
            dir.unlink(fsutil::os(JOURNAL_NAME.as_bytes()))?;
        }
        Ok(())
    }
}

/// How a pending move was settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Settled {
    /// The destination had committed: the source was expunged.
    Forward,
    /// The destination had not committed: the source flag was cleared.
    Back,
    /// Only the destination's flag was left to clear.
    DstOnly,
    Nothing,
}

/// Settles the move of `j` with both exclusive locks held, from the state
/// on disk alone: the source is flagged `HF_MOVE_OUT` and the destination
/// `HF_MOVE_IN`, each with a journal of this token, exactly while the
/// corresponding step is pending.
fn settle(s: &mut Mailbox, d: &mut Mailbox, j: &Journal) -> Result<Settled> {
    let hs = s.index.read_header()?;
    let hd = d.index.read_header()?;
    let mine = |dir: &Dir| Journal::load(dir).is_some_and(|x| x.token == j.token);
    let out = hs.flags & HF_MOVE_OUT != 0 && mine(s.dir());
    let inn = hd.flags & HF_MOVE_IN != 0 && mine(d.dir());
    let durable_s = s.durability() == Durability::Full;
    let durable_d = d.durability() == Durability::Full;
    let result = match (out, inn) {
        (true, true) => {
            expunge_sources(s, &hs, j, durable_s)?;
            fault::point("move.after_src_expunge")?;
            clear_flag(d, &hd, HF_MOVE_IN, durable_d)?;
            fault::point("move.after_dst_clear")?;
            Settled::Forward
        }
        (true, false) => {
            clear_flag(s, &hs, HF_MOVE_OUT, durable_s)?;
            Settled::Back
        }
        (false, true) => {
            clear_flag(d, &hd, HF_MOVE_IN, durable_d)?;
            Settled::DstOnly
        }
        (false, false) => Settled::Nothing,
    };
    j.unlink_if_mine(s.dir())?;
    j.unlink_if_mine(d.dir())?;
    if result != Settled::Forward && result != Settled::Nothing {
        tracing::warn!(src = %j.src_name, dst = %j.dst_name, ?result, "settled an interrupted move");
    }
    Ok(result)
}

/// Expunges the journal's source UIDs and clears `HF_MOVE_OUT` in one
/// commit of the source (the expunge's commit point is its header).
fn expunge_sources(s: &mut Mailbox, hs: &Header, j: &Journal, durable: bool) -> Result<()> {
    let mut uids: Vec<u32> = j.map.iter().map(|m| m.0).collect();
    uids.sort_unstable();
    uids.dedup();
    // The journal's records only (single-record reads when they are few,
    // as for STORE): a MOVE costs what it moves, not the mailbox.
    let work = s.working_set(hs, &Wanted::uids(uids.clone()))?;
    let modseq = hs.highestmodseq + 1;
    let mut after = work.records.clone();
    let touched = expunge_in(&mut after, Some(&uids), false, modseq, fsutil::now());
    let writes = work.rewrites(&after, touched.into_iter().map(|i| i as usize));
    s.index
        .write_records_at(writes.iter().map(|w| (w.slot, w.after)))?;
    fault::point("move.after_src_records")?;
    // By delta from the records rewritten, or from the count of every
    // record when the header needed a recount (Working::counts). A settler
    // killed between its record writes and its header left records
    // already marked that this run skips, and its
    // writer mark: the lock this run took recounted the header from every
    // record first (PROTOCOL.md §4), so the delta is exact.
    let mut new = hs.clone();
    Recount::from_work(&work).apply(&mut new, &writes);
    // Stamp the in-place change explicitly: if a dead settler already
    // marked every record, this run writes none, and sessions must still
    // rescan old records to see the expunges.
    new.highestmodseq = modseq;
    new.inplace_modseq = modseq;
    new.generation = hs.generation + 1;
    new.flags &= !HF_MOVE_OUT;
    s.index.write_header(&new)?;
    if durable {
        s.index.sync()?;
    }
    Ok(())
}

fn clear_flag(m: &mut Mailbox, h: &Header, flag: u32, durable: bool) -> Result<()> {
    let mut new = h.clone();
    new.generation = h.generation + 1;
    new.flags &= !flag;
    m.index.write_header(&new)?;
    if durable {
        m.index.sync()?;
    }
    Ok(())
}

/// Called by a locker that found `HF_MOVE_OUT` or `HF_MOVE_IN` in `mb`'s
/// header (holding no lock on `mb`): settles that move, taking both
/// mailboxes' exclusive locks in the global order.
pub(crate) fn resolve_pending(mb: &mut Mailbox) -> Result<()> {
    let (g, h) = mb.lock_index(LockKind::Exclusive)?;
    if !h.has_pending_move() {
        return Ok(());
    }
    let is_src = h.flags & HF_MOVE_OUT != 0;
    let Some(j) = Journal::load(mb.dir()) else {
        // Cannot happen unless the journal was removed by hand: the flag
        // is written only after the journal is durable. Keep the messages
        // where they are (never lost; a move may show twice).
        tracing::error!(mailbox = %mb.name(), "pending move without a readable journal; clearing the flag");
        let durable = mb.durability() == Durability::Full;
        clear_flag(mb, &h, HF_MOVE_OUT | HF_MOVE_IN, durable)?;
        return Ok(());
    };
    if j.src_name == j.dst_name
        && j.src_uidvalidity == j.dst_uidvalidity
        && j.src_uidvalidity == h.uidvalidity
    {
        // A move within this very mailbox: one lock is both.
        settle_within(mb, &j)?;
        drop(g);
        return Ok(());
    }
    drop(g);
    let (other_name, other_uv) = if is_src {
        (&j.dst_name, j.dst_uidvalidity)
    } else {
        (&j.src_name, j.src_uidvalidity)
    };
    if let Some(mut other) = find_mailbox(mb, other_name, other_uv)? {
        let (s, d) = if is_src {
            (&mut *mb, &mut other)
        } else {
            (&mut other, &mut *mb)
        };
        match lock_pair(s, LockKind::Exclusive, d, LockKind::Exclusive) {
            Ok((gs, _, gd, _)) => {
                settle(s, d, &j)?;
                drop((gs, gd));
                return Ok(());
            }
            Err(Error::MailboxDeleted) => {}
            Err(e) => return Err(e),
        }
    }
    // The other mailbox is gone (deleted): the source keeps its messages
    // (a destination that committed was deleted with its copies); a
    // destination just drops its flag.
    let (g, h) = mb.lock_index(LockKind::Exclusive)?;
    if h.has_pending_move() && Journal::load(mb.dir()).is_some_and(|x| x.token == j.token) {
        let durable = mb.durability() == Durability::Full;
        clear_flag(mb, &h, HF_MOVE_OUT | HF_MOVE_IN, durable)?;
        j.unlink_if_mine(mb.dir())?;
        tracing::warn!(mailbox = %mb.name(), other = %other_name, "settled a move whose other mailbox is gone");
    }
    drop(g);
    Ok(())
}

/// Opens the user's mailbox `name` if its UIDVALIDITY is `uv`; otherwise
/// (renamed since, e.g. with a parent) searches the user's mailboxes for
/// that UIDVALIDITY, which is unique per user.
///
/// The user's directory is found by walking up from the mailbox's own
/// directory to the first one holding the user's `.uidvalidity` file,
/// not by the depth of `mb`'s name: a rename of a parent may have moved
/// the mailbox to another depth since `mb` was opened, and counting
/// levels would then search the wrong subtree (or above the user).
fn find_mailbox(mb: &Mailbox, name: &MailboxName, uv: u32) -> Result<Option<Mailbox>> {
    let Some(user) = user_dir_of(mb.dir())? else {
        return Ok(None);
    };
    let open = |n: &MailboxName| -> Result<Option<Mailbox>> {
        let mut d = user.open_dir(fsutil::os(b"."))?;
        d.path = user.path.clone();
        for c in n.encoded_components() {
            d = match d.open_dir(fsutil::os(c.as_bytes())) {
                Ok(x) => x,
                Err(e) if e.is_not_found() => {
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
        }
        let mut m = match Mailbox::open_dir(n.clone(), d, mb.durability(), mb.lock_timeout) {
            Ok(m) => m,
            Err(Error::NoSuchMailbox(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Raw header read: no settling from here (no recursion).
        let h = match m.lock_index(LockKind::Shared) {
            Ok((_g, h)) => h,
            Err(Error::MailboxDeleted) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok((h.uidvalidity == uv).then_some(m))
    };
    if let Some(m) = open(name)? {
        return Ok(Some(m));
    }
    let mut names = Vec::new();
    crate::tree::walk(&user, &mut Vec::new(), &mut names, 0)?;
    for n in names {
        if &n != mb.name()
            && let Some(m) = open(&n)?
        {
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// The user directory above the mailbox directory `dir`: the nearest
/// ancestor holding `.uidvalidity` (the store creates it with the user's
/// first mailbox; mailbox names never start with a dot). `None` if no
/// ancestor within the deepest nesting allowed holds one.
fn user_dir_of(dir: &fsutil::Dir) -> Result<Option<fsutil::Dir>> {
    let mut d = dir.open_dir(fsutil::os(b".."))?;
    let mut path = dir.path.parent().map(|p| p.to_path_buf());
    for _ in 0..=crate::names::MAX_DEPTH {
        if d.exists(fsutil::os(crate::layout::UIDVALIDITY_FILE.as_bytes()))? {
            d.path = path.unwrap_or_default();
            return Ok(Some(d));
        }
        d = d.open_dir(fsutil::os(b".."))?;
        path = path.and_then(|p| p.parent().map(|p| p.to_path_buf()));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trip_and_corruption() {
        let j = Journal {
            token: 0xdead_beef_0123,
            src_name: MailboxName::new("INBOX").unwrap(),
            src_uidvalidity: 7,
            dst_name: MailboxName::new("Archive/2024 old").unwrap(),
            dst_uidvalidity: 9,
            map: vec![(1, 10), (5, 11)],
        };
        let b = j.serialize();
        assert_eq!(Journal::parse(&b), Some(j));
        let mut c = b.clone();
        c[30] ^= 1;
        assert_eq!(Journal::parse(&c), None);
        assert_eq!(Journal::parse(&b[..b.len() - 5]), None);
    }
}
