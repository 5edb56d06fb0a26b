//! Index reconstruction from the message files (`idx-admin reconstruct`),
//! and opening a mailbox by directory path for maintenance tools.
//!
//! Reconstruct keeps whatever of the old index is still trustworthy:
//! UIDVALIDITY, last_uid, highestmodseq and creation time from a valid
//! header slot (or, failing that, from a slot whose CRC is intact even if
//! its values broke an invariant), flags and keywords from every record
//! whose CRC is intact and whose file still exists. Everything else is
//! rebuilt from the files: records with a bad CRC are dropped and their
//! files re-added with default flags, orphan files get records, records
//! whose file changed get its size and CRC. UIDs are the file names, so
//! they are always kept; UIDVALIDITY is bumped only when no header
//! survives, because then the old value is unknown and clients must not
//! trust their caches.
//!
//! The new index is written to a temporary name, made durable, renamed
//! over `.index` while the old file is held exclusively, and the old file
//! is then marked superseded, exactly like `Mailbox::repack`: sessions
//! holding the old file reopen at their next lock. Interrupting it at any
//! point leaves either the old index or the new one in place.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::OFlag;

use crate::error::{Error, Result};
use crate::format::{
    Flags, HEADER_SIZE, HF_SUPERSEDED, Header, Keywords, MAGIC, RECORD_SIZE, RECORDS_OFFSET,
    Record, SLOT_OFFSETS,
};
use crate::fsutil::{self, Dir};
use crate::index::{Durability, INDEX_NAME, IndexFile};
use crate::lock::{LockGuard, LockKind};
use crate::mailbox::{Mailbox, STAGE_DIR, message_file_name, parse_message_file_name};
use crate::meta::Meta;
use crate::names::MailboxName;
use crate::verify::read_raw_records;

/// Opens the mailbox whose directory is `path` (for maintenance tools
/// that are given a directory rather than spool, user and name). The name
/// is taken from the directory's last component, for messages only.
pub fn open_mailbox_at(
    path: &Path,
    durability: Durability,
    lock_timeout: Duration,
) -> Result<Mailbox> {
    let dir = Dir::open_root(path)?;
    let leaf = path
        .file_name()
        .and_then(|s| s.to_str())
        .and_then(|s| MailboxName::from_encoded(&[s]))
        .unwrap_or_else(MailboxName::inbox);
    Mailbox::open_dir(leaf, dir, durability, lock_timeout)
}

/// What reconstruct did, for the operator.
#[derive(Clone, Debug, Default)]
pub struct ReconstructOutcome {
    /// UIDVALIDITY of the index before, when a header survived.
    pub old_uidvalidity: Option<u32>,
    /// UIDVALIDITY of the rebuilt index.
    pub uidvalidity: u32,
    /// True when UIDVALIDITY had to change (no header survived).
    pub uidvalidity_changed: bool,
    /// UIDs whose record was kept as it was.
    pub kept: Vec<u32>,
    /// UIDs whose record was rebuilt from the file (bad or missing record).
    pub rebuilt: Vec<u32>,
    /// UIDs whose record was kept but size/CRC updated from the file.
    pub updated: Vec<u32>,
    /// UIDs whose live record was dropped because the file is gone.
    pub dropped_missing: Vec<u32>,
    /// Record numbers dropped because their CRC or fields were bad.
    pub dropped_corrupt: Vec<u32>,
    /// UIDs whose file the valid old header does not account for (an
    /// uncommitted append, or a message a repack removed from the index
    /// before its unlink): moved into `.quarantine/`, not adopted.
    pub quarantined: Vec<u32>,
    /// Keyword bits cleared because `.meta` has no name for them.
    pub keywords_cleared: u32,
    /// `.meta` could not be read and was reset to an empty table.
    pub meta_reset: bool,
    /// A `.index` existed before (false: created from scratch).
    pub had_index: bool,
    /// The rebuilt index's header.
    pub header: Header,
    /// Other things the operator should know, one sentence each.
    pub notes: Vec<String>,
}

/// Values salvaged from a header slot whose CRC is intact, even if it
/// failed an invariant (offsets per docs/FORMAT.md, v1).
struct Salvage {
    generation: u64,
    last_uid: u32,
    uidvalidity: u32,
    highestmodseq: u64,
    created: i64,
    meta_generation: u32,
}

fn salvage_slot(buf: &[u8], slot: usize) -> Option<Salvage> {
    let off = SLOT_OFFSETS[slot] as usize;
    let b = buf.get(off..off + HEADER_SIZE)?;
    let stored = u32::from_le_bytes(b[124..128].try_into().ok()?);
    if b[0..8] != MAGIC || stored != crc32fast::hash(&b[..124]) {
        return None;
    }
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4"));
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    let uidvalidity = u32_at(44);
    // Counters no writer can reach (docs/FORMAT.md §7) are not salvaged:
    // the new header adds to them.
    if u64_at(24) >= crate::format::MAX_COUNTER || u64_at(48) >= crate::format::MAX_COUNTER {
        return None;
    }
    (uidvalidity != 0).then(|| Salvage {
        generation: u64_at(24),
        last_uid: u32_at(40),
        uidvalidity,
        highestmodseq: u64_at(48),
        created: u64_at(80) as i64,
        meta_generation: u32_at(76),
    })
}

/// Rebuilds the index of the mailbox directory `path`. See module docs.
///
/// Follows the lock protocol of every writer (PROTOCOL.md §1, §5): it
/// locks `.index` exclusively and then checks that the file it locked is
/// still the one at the path and not deleted. A repack or another
/// reconstruct may have replaced it while this one waited for the lock;
/// building from the replaced file would drop whatever was committed to
/// the new one since. Then it starts over on the current file.
pub fn reconstruct(
    path: &Path,
    durability: Durability,
    lock_timeout: Duration,
) -> Result<ReconstructOutcome> {
    let dir = Dir::open_root(path)?;
    // A reconstruct may make a mailbox of a directory without an index:
    // a change of the user's names (PROTOCOL.md §6b), under the name lock
    // taken before any index lock as every such change does.
    let _names = match user_dir_of(path) {
        Some(user) => Some(crate::namegen::NamesChange::begin_at(
            &Dir::open_root(user)?,
            lock_timeout,
        )?),
        None => None,
    };
    for _ in 0..100 {
        if let Some(out) = reconstruct_once(&dir, path, durability, lock_timeout)? {
            return Ok(out);
        }
    }
    Err(Error::corrupt(
        dir.child_path(fsutil::os(INDEX_NAME.as_bytes())),
        0,
        "index keeps being replaced during reconstruct",
    ))
}

/// One attempt of [`reconstruct`]; `None` when the index was replaced
/// (or created) by someone else meanwhile and the caller must start over.
fn reconstruct_once(
    dir: &Dir,
    path: &Path,
    durability: Durability,
    lock_timeout: Duration,
) -> Result<Option<ReconstructOutcome>> {
    let mut out = ReconstructOutcome::default();
    let old = match IndexFile::open(dir) {
        Ok(i) => Some(i),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    out.had_index = old.is_some();
    let _old_guard = match &old {
        Some(i) => Some(LockGuard::acquire(
            i.file.clone(),
            LockKind::Exclusive,
            lock_timeout,
            &i.path,
        )?),
        None => None,
    };
    if let Some(idx) = &old {
        match idx.at_path(dir)? {
            Some(true) => {}
            // Replaced while we waited: the file we hold is history.
            Some(false) => return Ok(None),
            None => return Err(Error::MailboxDeleted),
        }
        if idx.read_header().is_ok_and(|h| h.is_deleted()) {
            return Err(Error::MailboxDeleted);
        }
    }
    dir.mkdir(fsutil::os(STAGE_DIR.as_bytes()))?;

    // What survives of the old index.
    let mut header_src: Option<Salvage> = None;
    let mut old_records: Vec<Record> = Vec::new();
    let mut old_generation = 0u64;
    let mut old_header: Option<Header> = None;
    let mut raw_uidvalidity: Vec<u32> = Vec::new();
    let mut burned_uid = 0u32;
    // Whether the committed records are damaged (a bad CRC, a zeroed or
    // missing record, UIDs out of order): a file without a record may
    // then be a lost record's message.
    let mut records_damaged = false;
    if let Some(idx) = &old {
        let mut buf = vec![0u8; SLOT_OFFSETS[1] as usize + HEADER_SIZE];
        let n = fsutil::read_at_most(&idx.file, &mut buf, 0, &idx.path)?;
        buf.truncate(n);
        for off in SLOT_OFFSETS {
            if let Some(b) = buf.get(off as usize + 44..off as usize + 48) {
                raw_uidvalidity.push(u32::from_le_bytes(b.try_into().expect("4 bytes")));
            }
        }
        if let Ok(hr) = idx.read_header_detail() {
            old_header = Some(hr.header.clone());
        }
        let salvaged: Vec<Salvage> = [0, 1]
            .iter()
            .filter_map(|s| salvage_slot(&buf, *s))
            .collect();
        old_generation = salvaged.iter().map(|s| s.generation).max().unwrap_or(0);
        // UIDs a CRC-intact slot gave out stay given out, even those of a
        // newest commit passed over as torn: never hand a UID out twice.
        burned_uid = salvaged.iter().map(|s| s.last_uid).max().unwrap_or(0);
        // A fully valid header wins; otherwise the CRC-intact slot with
        // the highest generation.
        header_src = match &old_header {
            Some(h) => Some(Salvage {
                generation: h.generation,
                last_uid: h.last_uid,
                uidvalidity: h.uidvalidity,
                highestmodseq: h.highestmodseq,
                created: h.created,
                meta_generation: h.meta_generation,
            }),
            None => salvaged.into_iter().max_by_key(|s| s.generation),
        };
        if old_header.is_none() && header_src.is_some() {
            out.notes.push(
                "no header slot passed every check; values taken from a slot with an intact CRC"
                    .into(),
            );
        }
        let len = idx.file_len()?;
        // With a valid header, its records are the committed ones; records
        // past num_records belong to an append that never committed. With
        // none, every complete record in the file is a candidate (used
        // only if its file exists).
        let in_file = (len.saturating_sub(RECORDS_OFFSET) / RECORD_SIZE as u64) as u32;
        let count = old_header
            .as_ref()
            .map_or(in_file, |h| h.num_records.min(in_file));
        records_damaged = count < old_header.as_ref().map_or(0, |h| h.num_records);
        let mut prev_uid = 0u32;
        for raw in read_raw_records(idx, 0, count)? {
            match raw.record {
                Ok(r) => {
                    records_damaged |= r.uid <= prev_uid;
                    prev_uid = prev_uid.max(r.uid);
                    old_records.push(r);
                }
                Err(_) => {
                    records_damaged = true;
                    if !is_zero_record(idx, raw.offset)? {
                        out.dropped_corrupt.push(raw.recno);
                    }
                }
            }
        }
    }

    // A power loss may have taken the `UID.` name of recently delivered
    // messages while their staged name survived (PROTOCOL.md §3): give
    // them their names back before files are paired with records, or they
    // would be dropped as missing.
    // Only with a readable header: without one, a staged file that
    // matches no surviving record is not known to be debris.
    if old_header.is_some() {
        let stage = dir.open_dir(fsutil::os(STAGE_DIR.as_bytes()))?;
        let live: Vec<Record> = old_records
            .iter()
            .filter(|r| !r.is_expunged())
            .cloned()
            .collect();
        let tidy = crate::stage::tidy(dir, &stage, &live, durability == Durability::Full)?;
        if !tidy.restored.is_empty() {
            out.notes.push(format!(
                "restored the file names of UIDs {:?} from .stage (lost in a crash)",
                tidy.restored
            ));
        }
    }

    let meta = match Meta::load(dir) {
        Ok(m) => m,
        Err(e) => {
            out.meta_reset = true;
            out.notes.push(format!(
                "keyword table unreadable ({e}); reset to empty, keyword flags lost"
            ));
            let m = Meta::default();
            m.save(dir, durability)?;
            m
        }
    };

    // The message files are the truth for which UIDs exist.
    let mut files: BTreeMap<u32, std::fs::File> = BTreeMap::new();
    for (name, _) in dir.entries()? {
        if let Some(uid) = parse_message_file_name(&name) {
            let f = dir.open_file(fsutil::os(&name), OFlag::O_RDONLY)?;
            let is_file = f
                .metadata()
                .map(|m| m.is_file())
                .map_err(|e| Error::io("stat", dir.child_path(fsutil::os(&name)), e))?;
            if is_file {
                files.insert(uid, f);
            } else {
                out.notes.push(format!(
                    "{} is not a regular file; ignored",
                    String::from_utf8_lossy(&name)
                ));
            }
        }
    }

    // Old records by UID; the first valid one for a UID wins.
    let mut by_uid: BTreeMap<u32, Record> = BTreeMap::new();
    for r in old_records {
        by_uid.entry(r.uid).or_insert(r);
    }
    // Without a valid header every file is a message (nothing says
    // otherwise); with one, only files at or below its last UID, and only
    // when its records are damaged (the file may be a lost record's).
    let trusted_header = old_header.is_some();
    let repacked = crate::repack_list::read(dir)?;
    let adoptable = |uid: u32| !trusted_header || (records_damaged && uid <= burned_uid);
    let now = fsutil::now();
    let old_hms = header_src.as_ref().map_or(0, |s| s.highestmodseq);
    let max_rec_modseq = by_uid.values().map(|r| r.modseq).max().unwrap_or(0);
    let modseq = old_hms.max(max_rec_modseq) + 1;
    let mut records: Vec<Record> = Vec::new();
    let mut uids: Vec<u32> = by_uid.keys().chain(files.keys()).copied().collect();
    uids.sort_unstable();
    uids.dedup();
    for uid in uids {
        let file = files.get(&uid);
        let path = dir.child_path(fsutil::os(message_file_name(uid).as_bytes()));
        match (by_uid.remove(&uid), file) {
            (Some(r), _) if r.is_expunged() => {
                // Keep the expunge; a later repack deletes the file.
                if file.is_some() {
                    records.push(r);
                }
            }
            (Some(mut r), Some(f)) => {
                let info = scan_file(f, &path)?;
                if info.size != r.size || info.crc != r.message_crc {
                    r.size = info.size;
                    r.message_crc = info.crc;
                    r.header_size = info.header_size;
                    r.modseq = modseq;
                    r.last_updated = now;
                    out.updated.push(uid);
                } else {
                    out.kept.push(uid);
                }
                records.push(r);
            }
            (Some(_), None) => out.dropped_missing.push(uid),
            (None, Some(_)) if !adoptable(uid) && uid <= burned_uid && repacked.contains(&uid) => {
                // Expunged and dropped by a repack killed before its
                // unlinks (repack_list.rs): finish its step.
                files.remove(&uid);
                dir.unlink(fsutil::os(message_file_name(uid).as_bytes()))?;
            }
            (None, Some(_)) if !adoptable(uid) => {
                // With a valid header, a file it does not account for is
                // not a message it committed: above last_uid, an append
                // that never committed; at or below it, a file whose
                // record a repack or expunge removed (a repack killed
                // before its unlinks). Adopting it would resurrect an
                // expunged or moved message. Files win over the index,
                // so it is kept in quarantine, not deleted.
                let reason = if uid > burned_uid {
                    crate::quarantine::Reason::Uncommitted
                } else {
                    crate::quarantine::Reason::Orphan
                };
                files.remove(&uid);
                crate::quarantine::keep(
                    dir,
                    dir,
                    fsutil::os(message_file_name(uid).as_bytes()),
                    reason,
                )?;
                out.quarantined.push(uid);
            }
            (None, Some(f)) => {
                let info = scan_file(f, &path)?;
                let mtime = f.metadata().ok().and_then(|m| m.modified().ok()).map(unix);
                records.push(Record {
                    uid,
                    flags: Flags::empty(),
                    internal_date: mtime.unwrap_or(now),
                    sent_date: 0,
                    size: info.size,
                    header_size: info.header_size,
                    message_crc: info.crc,
                    modseq,
                    keywords: Keywords::default(),
                    last_updated: now,
                    internal_zone: 0,
                });
                out.rebuilt.push(uid);
            }
            (None, None) => {}
        }
    }
    for r in records.iter_mut() {
        let bad: Vec<usize> = r
            .keywords
            .iter()
            .filter(|k| *k >= meta.keywords.len())
            .collect();
        if !bad.is_empty() {
            for k in bad {
                r.keywords.remove(k);
                out.keywords_cleared += 1;
            }
            r.modseq = modseq;
            r.last_updated = now;
        }
    }

    let (uidvalidity, changed) = match &header_src {
        Some(s) => (s.uidvalidity, false),
        None => {
            // The new value must differ from whatever clients cached: above
            // the current time and above any value still legible in the
            // damaged slots (their CRC is bad, the field may be intact).
            let legible = raw_uidvalidity.iter().copied().max().unwrap_or(0);
            let fresh = (now.clamp(1, u32::MAX as i64) as u32).max(legible.saturating_add(1));
            (claim_user_uidvalidity(path, fresh, lock_timeout)?, true)
        }
    };
    out.old_uidvalidity = header_src.as_ref().map(|s| s.uidvalidity);
    out.uidvalidity = uidvalidity;
    out.uidvalidity_changed = changed;
    if changed {
        out.notes.push(format!(
            "UIDVALIDITY changed to {uidvalidity}: no header survived, so the old value is unknown and clients must resynchronize"
        ));
    }

    let max_uid = records.iter().map(|r| r.uid).max().unwrap_or(0);
    let mut h = Header {
        // Keep flags other writers rely on (a pending MOVE, say); the
        // replacement marks are about files, not about this mailbox.
        flags: old_header.as_ref().map_or(0, |h| {
            h.flags & !(HF_SUPERSEDED | crate::format::HF_DELETED)
        }),
        generation: 0,
        num_records: records.len() as u32,
        exists: 0,
        last_uid: header_src
            .as_ref()
            .map_or(0, |s| s.last_uid)
            .max(max_uid)
            .max(burned_uid),
        uidvalidity,
        highestmodseq: modseq,
        total_bytes: 0,
        seen: 0,
        deleted: 0,
        flagged: 0,
        meta_generation: header_src
            .as_ref()
            .map_or(0, |s| s.meta_generation)
            .wrapping_add(1)
            .max(1),
        created: header_src.as_ref().map_or(now, |s| s.created),
        last_append: old_header.as_ref().map_or(0, |h| h.last_append),
        // A new file: readers see a new epoch and rescan everything.
        inplace_modseq: modseq,
        append_from: records.len() as u32,
        append_crc: 0,
        // Records of expunged messages may not have survived: QRESYNC
        // clients with an older MODSEQ get the fallback answer.
        removed_modseq: modseq,
    };
    // num_records <= last_uid holds: UIDs are unique and non-zero.
    for r in records.iter().filter(|r| !r.is_expunged()) {
        h.exists += 1;
        h.total_bytes += r.size;
        h.seen += r.flags.contains(Flags::SEEN) as u32;
        h.deleted += r.flags.contains(Flags::DELETED) as u32;
        h.flagged += r.flags.contains(Flags::FLAGGED) as u32;
    }
    // The old file's SUPERSEDED mark takes old + 1, the new file old + 2:
    // no generation number is written twice (PROTOCOL.md §5).
    h.generation = old_generation + 2;

    if durability == Durability::Full {
        // The files may be a dead writer's that never got their flush (an
        // unordered append) or debris adopted as messages: each one the
        // new index names is made durable before that index is.
        for r in &records {
            if let Some(f) = files.get(&r.uid) {
                let path = dir.child_path(fsutil::os(message_file_name(r.uid).as_bytes()));
                fsutil::fdatasync(f, &path)?;
            }
        }
        dir.fsync()?;
    }
    // Same temporary name pattern as repack, so `Mailbox::recover` removes
    // it if we die before the rename.
    let tmp = format!("{INDEX_NAME}.new.{}", std::process::id());
    dir.unlink(fsutil::os(tmp.as_bytes()))?;
    let fresh = IndexFile::write_new(dir, &tmp, &h, &records, durability)?;
    let _new_guard = LockGuard::acquire(
        fresh.file.clone(),
        LockKind::Exclusive,
        lock_timeout,
        &fresh.path,
    )?;
    crate::fault::point("reconstruct.after_new_index")?;
    // As in repack: when the old header is readable, mark it superseded
    // before the rename, so a holder that finds the mark on the file still
    // at the path knows the replacement died and rolls it back. A garbage
    // old header is marked only after the rename, since rolling back to a
    // synthesized header would pair it with records it does not describe.
    let mark = |gen_floor: u64| {
        let mut m = old_header.clone().unwrap_or_else(|| h.clone());
        m.generation = m.generation.max(gen_floor) + 1;
        m.flags |= HF_SUPERSEDED;
        m
    };
    if let (Some(idx), Some(_)) = (&old, &old_header) {
        idx.write_header(&mark(old_generation))?;
    }
    crate::fault::point("reconstruct.after_mark_superseded")?;
    // The change log describes the old file's slots: reset before the
    // new file is published, and rebuilt empty (PROTOCOL.md §5).
    crate::changelog::reset(dir)?;
    // So does the full-text index, which may hold the old bytes of a
    // message this reconstruct records anew under the same UID: removed
    // before the new file is published (its removal made durable with
    // the rename, below), PROTOCOL.md §11.
    remove_fts(dir)?;
    if old.is_some() {
        dir.rename(
            fsutil::os(tmp.as_bytes()),
            dir,
            fsutil::os(INDEX_NAME.as_bytes()),
        )?;
    } else if !dir.link_no_replace(
        fsutil::os(tmp.as_bytes()),
        dir,
        fsutil::os(INDEX_NAME.as_bytes()),
    )? {
        // No index when we started, one now (a create, or another
        // reconstruct): never rename over a file we did not lock.
        dir.unlink(fsutil::os(tmp.as_bytes()))?;
        return Ok(None);
    } else {
        dir.unlink(fsutil::os(tmp.as_bytes()))?;
    }
    if durability == Durability::Full {
        dir.fsync()?;
    }
    crate::fault::point("reconstruct.after_rename")?;
    if let (Some(idx), None) = (&old, &old_header) {
        idx.write_header(&mark(old_generation))?;
    }
    out.header = h;
    Ok(Some(out))
}

/// Removes the mailbox's full-text index (`.fts/`, derived data), if any.
fn remove_fts(dir: &Dir) -> Result<()> {
    let path = dir.child_path(fsutil::os(crate::layout::FTS_DIR.as_bytes()));
    match std::fs::remove_dir_all(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("remove the full-text index", path, e))
        }
        _ => Ok(()),
    }
}

/// The store hands out UIDVALIDITY values from `SPOOL/USER/.uidvalidity`
/// (always increasing). If the mailbox lives under such a file, claim the
/// next value from it too, so the new value is above every value ever
/// handed out for that user; otherwise `candidate` stands.
fn claim_user_uidvalidity(mailbox: &Path, candidate: u32, timeout: Duration) -> Result<u32> {
    let Some(user_dir) = user_dir_of(mailbox) else {
        return Ok(candidate);
    };
    let path = user_dir.join(".uidvalidity");
    let file = std::sync::Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| Error::Io {
                op: "open",
                path: path.clone(),
                source: e,
            })?,
    );
    let _g = LockGuard::acquire(file.clone(), LockKind::Exclusive, timeout, &path)?;
    let mut buf = [0u8; 4];
    let n = fsutil::read_at_most(&file, &mut buf, 0, &path)?;
    let last = if n == 4 { u32::from_le_bytes(buf) } else { 0 };
    if last == u32::MAX {
        // Nothing is left above it (see Store::next_uidvalidity).
        return Err(Error::corrupt(
            &path,
            0,
            "the last UIDVALIDITY handed out is 4294967295: none is left above it",
        ));
    }
    let next = candidate.max(last + 1);
    fsutil::write_all_at(&file, &next.to_le_bytes(), 0, &path)?;
    fsutil::fdatasync(&file, &path)?;
    Ok(next)
}

/// The user directory above the mailbox directory `mailbox` (the nearest
/// ancestor holding `.uidvalidity`), if it lies in a spool.
fn user_dir_of(mailbox: &Path) -> Option<&Path> {
    mailbox
        .ancestors()
        .skip(1)
        .take(crate::names::MAX_DEPTH + 1)
        .find(|p| p.join(crate::layout::UIDVALIDITY_FILE).is_file())
}

fn is_zero_record(idx: &IndexFile, off: u64) -> Result<bool> {
    let mut b = [0u8; RECORD_SIZE];
    let n = fsutil::read_at_most(&idx.file, &mut b, off, &idx.path)?;
    Ok(n == RECORD_SIZE && b.iter().all(|x| *x == 0))
}

fn unix(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Size, CRC32 and header-block length of a stored message file.
pub struct FileInfo {
    /// Bytes.
    pub size: u64,
    /// CRC32 of the whole file.
    pub crc: u32,
    /// Bytes of the header block, blank line included.
    pub header_size: u32,
}

/// Reads a message file once: size, CRC32 of the whole file, and where
/// the header block ends (the first empty line, CRLF or LF, within the
/// first 256 KiB; the whole file otherwise, as append does).
pub fn scan_file(f: &std::fs::File, path: &Path) -> Result<FileInfo> {
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head: Vec<u8> = Vec::new();
    let mut off = 0u64;
    loop {
        let n = fsutil::read_at_most(f, &mut buf, off, path)?;
        h.update(&buf[..n]);
        if head.len() < 256 * 1024 {
            head.extend_from_slice(&buf[..n]);
        }
        off += n as u64;
        if n < buf.len() {
            break;
        }
    }
    let find = |needle: &[u8]| head.windows(needle.len()).position(|w| w == needle);
    let end = match (
        find(b"\r\n\r\n").map(|p| p + 4),
        find(b"\n\n").map(|p| p + 2),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(FileInfo {
        size: off,
        crc: h.finalize(),
        header_size: end.map_or(off, |e| e as u64).min(u32::MAX as u64) as u32,
    })
}
