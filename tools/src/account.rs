//! Whole-account import from Dovecot Maildir keeping UIDVALIDITY, UIDs,
//! UIDNEXT, flags, keywords, INTERNALDATE and subscriptions
//! (`idx-admin import --dovecot-maildir DIR -d USER`, OPERATIONS.md
//! "Moving in from Dovecot"), through the storage library's import write
//! paths (PROTOCOL.md §3a).
//!
//! Per folder, in increasing source UIDVALIDITY order (a UIDVALIDITY can
//! only be given when it is above every one handed out for the user):
//! - no such mailbox here: created with the source's UIDVALIDITY; if that
//!   value cannot be given, the folder is refused, or with `--renumber`
//!   created with a new UIDVALIDITY that is not the source's;
//! - the mailbox exists with the source's UIDVALIDITY (a re-run): only
//!   what is not here yet is imported: a source UID above our `last_uid`
//!   keeps its UID; one at or below it is here already when our message
//!   under that UID has the same size and CRC32. If another message holds
//!   such a UID here (a delivery here since the last run, or a
//!   UIDVALIDITY equal by chance) the folder is refused: the source's
//!   UIDVALIDITY must never name other messages under its UIDs. A UID at
//!   or below `last_uid` that is gone here was expunged here and is not
//!   brought back (reported);
//! - the mailbox exists with another UIDVALIDITY: refused (clients cache
//!   UIDs per UIDVALIDITY: the source's UIDs must never appear under ours),
//!   or with `--renumber` every message whose content is not here yet is
//!   imported under a new UID;
//! - files without a uidlist entry get new UIDs above the source's next
//!   UID, as Dovecot would give them.
//!
//! UIDNEXT continues after the source's next UID. Deliveries may run
//! meanwhile: the UIDs are checked under the mailbox lock, and a message
//! whose UID a delivery took in between is not imported (reported, exit 1).

use std::collections::{BTreeMap, HashMap, HashSet};

use storage::mailbox::{AppendOptions, Mailbox, StagedMessage};
use storage::{Error, MailboxName, Store, UserName};

use crate::dovecot::{Account, Folder, SourceMessage};

/// Messages per commit at most (each batch flushes the whole filesystem
/// once, which on a busy disk costs more than the batch's own bytes): one `syncfs`, one lock and one index
/// flush per batch (PROTOCOL.md §3a, batch durability). Each staged
/// message holds a descriptor until its commit, so the batch is also
/// kept to a quarter of the descriptors this process may open.
const BATCH_MAX: usize = 4000;

/// The messages of one commit, from the descriptor limit (raised to the
/// hard limit, as far as `BATCH_MAX` needs).
pub fn batch_size() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit fill or read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 64;
        }
        let want = (4 * BATCH_MAX as libc::rlim_t + 64).min(lim.rlim_max);
        if lim.rlim_cur < want {
            let raised = libc::rlimit {
                rlim_cur: want,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = want;
            }
        }
    }
    ((lim.rlim_cur as usize).saturating_sub(64) / 4).clamp(16, BATCH_MAX)
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ImportOptions {
    /// Import under new UIDs (and a new UIDVALIDITY, never the source's)
    /// where the source's UIDs cannot be kept, instead of refusing.
    pub renumber: bool,
}

/// What happened to one folder.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FolderReport {
    pub name: String,
    pub source_uidvalidity: Option<u32>,
    pub source_uidnext: u32,
    pub uidvalidity: Option<u32>,
    pub uidnext: Option<u32>,
    /// Whether the source's UIDs were kept.
    pub kept_uids: bool,
    /// Imported under the source's UID.
    pub imported: usize,
    /// Imported under a new UID (no uidlist entry, UID taken, or
    /// `--renumber`).
    pub renumbered: usize,
    /// Here already (an earlier run).
    pub already_here: usize,
    /// Here already, with flags or keywords changed in the source since:
    /// set to the source's (a re-run).
    pub flags_updated: usize,
    /// Imported by an earlier run and expunged in the source since:
    /// expunged here too (a re-run).
    pub expunged: usize,
    pub bytes: u64,
    /// Not imported (refused folder, unreadable file, ...), with why.
    pub refused: Option<String>,
    pub skipped: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct AccountReport {
    pub folders: Vec<FolderReport>,
    pub subscriptions_added: usize,
    pub warnings: Vec<String>,
}

impl AccountReport {
    /// Anything refused or skipped: the run did not bring everything.
    pub fn incomplete(&self) -> bool {
        self.folders
            .iter()
            .any(|f| f.refused.is_some() || !f.skipped.is_empty())
    }
}

/// One status line on standard error while folders are imported, when
/// it is a terminal (never in logs or pipes).
struct Progress {
    tty: bool,
    total: usize,
    done: std::cell::Cell<usize>,
}

impl Progress {
    fn new(acct: &Account) -> Progress {
        use std::io::IsTerminal;
        Progress {
            tty: std::io::stderr().is_terminal(),
            total: acct.folders.iter().map(|f| f.messages.len()).sum(),
            done: std::cell::Cell::new(0),
        }
    }

    fn folder(&self, name: &str, n: usize) {
        if self.tty {
            eprint!(
                "\r\x1b[K{}/{} messages; {name} ({n})",
                self.done.get(),
                self.total
            );
        }
    }

    fn done(&self, n: usize) {
        self.done.set(self.done.get() + n);
    }

    fn finish(&self) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
    }
}

/// How one folder's UIDs are handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    KeepUids,
    Renumber,
}

/// Imports every folder and the subscriptions of `acct` for `user`.
pub fn import_account(
    store: &Store,
    user: &UserName,
    acct: &Account,
    opts: ImportOptions,
) -> Result<AccountReport, String> {
    let mut report = AccountReport {
        warnings: acct.warnings.clone(),
        ..Default::default()
    };
    let mut order: Vec<&Folder> = acct.folders.iter().collect();
    // Increasing UIDVALIDITY, so each can be given; folders without one
    // (never opened by Dovecot) last.
    order.sort_by_key(|f| (f.uidvalidity.is_none(), f.uidvalidity, f.name.clone()));
    let progress = Progress::new(acct);
    for f in order {
        progress.folder(&f.name, f.messages.len());
        let mut r = FolderReport {
            name: f.name.clone(),
            source_uidvalidity: f.uidvalidity,
            source_uidnext: f.next_uid,
            warnings: f.problems.clone(),
            skipped: f.skipped.clone(),
            refused: f.refused.clone(),
            ..Default::default()
        };
        if r.refused.is_none()
            && let Err(e) = import_folder(store, user, f, opts, &mut r)
        {
            r.refused = Some(e);
        }
        progress.done(f.messages.len());
        report.folders.push(r);
    }
    progress.finish();
    let have = store.subscriptions(user).map_err(|e| e.to_string())?;
    for s in &acct.subscriptions {
        if !have.contains(s) {
            store
                .set_subscribed(user, s, true)
                .map_err(|e| format!("subscribe {s:?}: {e}"))?;
            report.subscriptions_added += 1;
        }
    }
    Ok(report)
}

/// Opens or creates the folder's mailbox and decides how UIDs go.
fn prepare(
    store: &Store,
    user: &UserName,
    name: &MailboxName,
    f: &Folder,
    opts: ImportOptions,
) -> Result<(Mailbox, Mode), String> {
    let e2s = |e: Error| e.to_string();
    if let Some(why) = &f.uids_unusable
        && !opts.renumber
    {
        return Err(format!(
            "refused: {why}; --renumber imports under new UIDs and a new UIDVALIDITY"
        ));
    }
    if !store.mailbox_exists(user, name).map_err(e2s)? {
        let created = match f.uidvalidity {
            None => store.create_mailbox(user, name).map(|()| Mode::Renumber),
            Some(v) if f.uids_unusable.is_some() => store
                .create_mailbox_avoiding(user, name, v)
                .map(|_| Mode::Renumber),
            Some(v) => match store.create_mailbox_with_uidvalidity(user, name, v) {
                Ok(()) => Ok(Mode::KeepUids),
                Err(Error::UidValidityUsed { .. }) if opts.renumber => store
                    .create_mailbox_avoiding(user, name, v)
                    .map(|_| Mode::Renumber),
                Err(Error::UidValidityUsed { wanted, last }) => {
                    return Err(format!(
                        "refused: the source's UIDVALIDITY {wanted} is not above {last}, the last one \
                         handed out for this user here, so it cannot be kept (it may have named \
                         another mailbox); --renumber imports under new UIDs and a new UIDVALIDITY"
                    ));
                }
                Err(e) => Err(e),
            },
        };
        match created {
            Ok(mode) => return Ok((store.open_mailbox(user, name).map_err(e2s)?, mode)),
            // Created meanwhile (a delivery): judged as an existing one.
            Err(Error::MailboxExists(_)) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    let mut m = store.open_mailbox(user, name).map_err(e2s)?;
    let ours = m.header().map_err(e2s)?.uidvalidity;
    match f.uidvalidity {
        _ if f.uids_unusable.is_some() => Ok((m, Mode::Renumber)),
        Some(v) if v == ours => Ok((m, Mode::KeepUids)),
        _ if opts.renumber => Ok((m, Mode::Renumber)),
        None => Ok((m, Mode::Renumber)),
        Some(v) => Err(format!(
            "refused: the mailbox exists here with UIDVALIDITY {ours}, the source's is {v}: \
             its UIDs cannot be kept; --renumber imports what is not here yet under new UIDs"
        )),
    }
}

/// A source message read and converted (CRLF), with its content key.
struct Loaded {
    bytes: Vec<u8>,
    crc: u32,
}

fn load(m: &SourceMessage) -> Result<Loaded, String> {
    if m.size > storage::format::MAX_MESSAGE_SIZE {
        return Err(format!(
            "{}: {} bytes, over the store's message size limit",
            m.path.display(),
            m.size
        ));
    }
    let raw = match &m.part {
        Some(p) => p.read(&m.path)?,
        None => std::fs::read(&m.path).map_err(|e| format!("read {}: {e}", m.path.display()))?,
    };
    let bytes = crate::mbox::to_crlf(&raw);
    let crc = crc32fast::hash(&bytes);
    Ok(Loaded { bytes, crc })
}

fn import_folder(
    store: &Store,
    user: &UserName,
    f: &Folder,
    opts: ImportOptions,
    r: &mut FolderReport,
) -> Result<(), String> {
    let name = MailboxName::new(&f.name).map_err(|e| format!("refused: {e}"))?;
    let (mut m, mode) = prepare(store, user, &name, f, opts)?;
    r.kept_uids = mode == Mode::KeepUids;
    // Resuming after a run that was killed: its staged files (no live
    // owner) go to quarantine now, not at some later settle (PROTOCOL.md
    // §3a); a writer running meanwhile holds its own and is not touched.
    m.recover().map_err(|e| format!("recover: {e}"))?;
    let snap = m.snapshot().map_err(|e| e.to_string())?;
    let last_uid = snap.header.last_uid;
    let ours: HashMap<u32, (u64, u32)> = snap
        .records
        .iter()
        .map(|rec| (rec.uid, (rec.size, rec.message_crc)))
        .collect();
    // Source messages to import under their UID, and the others.
    let mut keep: Vec<&SourceMessage> = Vec::new();
    let mut others: Vec<&SourceMessage> = Vec::new();
    let mut claimed: HashSet<u32> = HashSet::new();
    let mut clashes: Vec<u32> = Vec::new();
    // Here already: the source's flags and keywords for them now.
    let mut flag_state: Vec<(u32, storage::Flags, Vec<String>)> = Vec::new();
    for sm in &f.messages {
        match (mode, sm.uid) {
            (Mode::KeepUids, Some(u)) if u > last_uid => keep.push(sm),
            (Mode::KeepUids, Some(u)) => match ours.get(&u) {
                Some(&(size, crc)) => {
                    let same = load(sm).map(|l| (l.bytes.len() as u64, l.crc) == (size, crc));
                    match same {
                        Ok(true) => {
                            claimed.insert(u);
                            r.already_here += 1;
                            flag_state.push((u, sm.flags, valid_keywords(sm, r)));
                        }
                        Ok(false) => clashes.push(u),
                        Err(e) => r.skipped.push(e),
                    }
                }
                // Expunged here after an earlier import (or renumbered
                // by one: then the content pool below finds it).
                None => others.push(sm),
            },
            _ => others.push(sm),
        }
    }
    if !clashes.is_empty() {
        // The source's UIDVALIDITY with another message under one of its
        // UIDs: a client of the source would take one for the other.
        let shown: Vec<String> = clashes.iter().take(10).map(u32::to_string).collect();
        return Err(format!(
            "refused: this mailbox has the source's UIDVALIDITY {}, but UID {} holds another \
             message here (delivered here since an earlier import, or a UIDVALIDITY equal by \
             chance): clients that synced with the source would mistake one for the other. \
             Nothing imported into this folder (OPERATIONS.md §4a)",
            snap.header.uidvalidity,
            shown.join(",")
        ));
    }
    // Content of our messages not claimed by a source UID: what an
    // earlier run imported under new UIDs.
    let mut pool: BTreeMap<(u64, u32), usize> = BTreeMap::new();
    for rec in snap.records.iter().filter(|rec| !rec.is_expunged()) {
        if !claimed.contains(&rec.uid) {
            *pool.entry((rec.size, rec.message_crc)).or_default() += 1;
        }
    }
    let names = |uid: Option<u32>, sm: &SourceMessage| match uid {
        Some(u) => format!("UID {u} ({})", sm.path.display()),
        None => sm.path.display().to_string(),
    };
    // Under their UIDs, ascending, in batches; UIDNEXT with the last.
    let batch_max = batch_size();
    let mut pending: Vec<&SourceMessage> = keep;
    while !pending.is_empty() {
        let n = pending.len().min(batch_max);
        let last_batch = n == pending.len();
        let batch: Vec<&SourceMessage> = pending[..n].to_vec();
        let mut staged: Vec<StagedMessage> = Vec::new();
        let mut uids: Vec<u32> = Vec::new();
        let mut bytes = 0u64;
        for sm in &batch {
            match stage(&m, sm, r) {
                Ok(s) => {
                    bytes += s.size;
                    uids.push(sm.uid.expect("kept messages have UIDs"));
                    staged.push(s);
                }
                Err(e) => r.skipped.push(e),
            }
        }
        let next = last_batch.then_some(f.next_uid);
        let result = if staged.is_empty() {
            match next {
                Some(nx) => m.reserve_uids(nx).map(|_| Vec::new()),
                None => Ok(Vec::new()),
            }
        } else {
            m.commit_with_uids(staged, &uids, next)
        };
        match result {
            Ok(done) => {
                r.imported += done.len();
                r.bytes += bytes;
                pending.drain(..n);
            }
            Err(Error::UidTaken { .. }) => {
                // A delivery took UIDs meanwhile. Those messages cannot
                // keep their UIDs, and under the source's UIDVALIDITY
                // they must not get others: not imported; retry the rest.
                let now = m.header().map_err(|e| e.to_string())?.last_uid;
                let (taken, rest): (Vec<_>, Vec<_>) = pending
                    .into_iter()
                    .partition(|sm| sm.uid.is_some_and(|u| u <= now));
                for sm in &taken {
                    r.skipped.push(format!(
                        "{}: the UID was taken here meanwhile by a delivery; not imported \
                         (it would name two messages under the source's UIDVALIDITY)",
                        names(sm.uid, sm)
                    ));
                }
                pending = rest;
            }
            Err(e) => return Err(format!("commit: {e}")),
        }
    }
    if mode == Mode::KeepUids {
        // No message above our last UID, or the last batch was empty.
        m.reserve_uids(f.next_uid).map_err(|e| e.to_string())?;
    }
    // New UIDs: what is not here by content.
    let mut staged: Vec<StagedMessage> = Vec::new();
    let mut staged_bytes = 0u64;
    let mut gone_skipped = 0usize;
    for sm in others {
        let l = match load(sm) {
            Ok(l) => l,
            Err(e) => {
                r.skipped.push(e);
                continue;
            }
        };
        let key = (l.bytes.len() as u64, l.crc);
        if let Some(c) = pool.get_mut(&key).filter(|c| **c > 0) {
            *c -= 1;
            r.already_here += 1;
            continue;
        }
        if mode == Mode::KeepUids
            && let Some(u) = sm.uid
            && u <= last_uid
            && !ours.contains_key(&u)
        {
            // Its UID is ours already and it is gone here: expunged here.
            gone_skipped += 1;
            continue;
        }
        match stage_loaded(&m, sm, l, r) {
            Ok(s) => {
                staged_bytes += s.size;
                staged.push(s);
            }
            Err(e) => r.skipped.push(e),
        }
        if staged.len() >= batch_max {
            r.renumbered += commit_new(&mut m, std::mem::take(&mut staged))?;
            r.bytes += std::mem::take(&mut staged_bytes);
        }
    }
    r.renumbered += commit_new(&mut m, staged)?;
    r.bytes += staged_bytes;
    if mode == Mode::KeepUids {
        rerun_changes(&mut m, f, last_uid, &flag_state, r)?;
    }
    if gone_skipped > 0 {
        r.warnings.push(format!(
            "{gone_skipped} source messages have UIDs this mailbox handed out and no longer holds \
             (expunged here since an earlier import): not brought back"
        ));
    }
    let h = m.header().map_err(|e| e.to_string())?;
    r.uidvalidity = Some(h.uidvalidity);
    r.uidnext = Some(h.last_uid.saturating_add(1));
    Ok(())
}

/// A re-run (the mailbox has the source's UIDVALIDITY): what changed in
/// the source since the earlier run, for the messages that run brought.
fn rerun_changes(
    m: &mut Mailbox,
    f: &Folder,
    last_uid_before: u32,
    flag_state: &[(u32, storage::Flags, Vec<String>)],
    r: &mut FolderReport,
) -> Result<(), String> {
    // A message the reader could not take this time (unreadable, cut
    // short, ...) is not in `f.messages` although the source still has it:
    // then nothing is expunged on this run, only reported.
    let listed: HashSet<u32> = f.messages.iter().filter_map(|sm| sm.uid).collect();
    let unsure = !f.skipped.is_empty();
    let expunge_below = if unsure { 0 } else { f.next_uid };
    if unsure {
        r.warnings.push(
            "the source has messages that could not be read this run: nothing expunged here \
             (re-run once they read)"
                .into(),
        );
    }
    let (flags, expunged) =
        apply_source_changes(m, expunge_below, &listed, last_uid_before, flag_state)?;
    r.flags_updated += flags;
    r.expunged += expunged;
    Ok(())
}

/// For any importer that keeps a source's UIDs (Dovecot Maildir here; a
/// UW-IMAP mbox importer can call it the same way): on a re-run into a
/// mailbox that has the source's UIDVALIDITY, brings over what changed
/// in the source since the earlier run, for messages already here.
/// - `flag_state`: (UID, flags, keywords) as the source has them now, for
///   every message found here already (same UID, same content). Each is
///   set to exactly that, all in one STORE-like commit under the lock
///   (`Mailbox::set_flags_exactly`, PROTOCOL.md §3a).
/// - A live message here whose UID is below `source_next` (the source
///   handed it out) and at or below `last_uid_before` (our last UID before
///   this run: so it came from the earlier run, not this one) that is not
///   in `listed` (the source's UIDs now) was expunged in the source since:
///   expunged here in one commit (its file stays until a repack).
///
/// Both assume what OPERATIONS.md §4a requires: no mail reached this
/// store between the runs. Returns (flags updated, expunged).
pub fn apply_source_changes(
    m: &mut Mailbox,
    source_next: u32,
    listed: &HashSet<u32>,
    last_uid_before: u32,
    flag_state: &[(u32, storage::Flags, Vec<String>)],
) -> Result<(usize, usize), String> {
    let flags = m
        .set_flags_exactly(flag_state)
        .map_err(|e| format!("flag update: {e}"))?
        .len();
    let snap = m.snapshot().map_err(|e| e.to_string())?;
    let gone: Vec<u32> = snap
        .records
        .iter()
        .filter(|rec| !rec.is_expunged())
        .map(|rec| rec.uid)
        .filter(|&u| u < source_next && u <= last_uid_before && !listed.contains(&u))
        .collect();
    let expunged = if gone.is_empty() {
        0
    } else {
        m.expunge(Some(&gone), false)
            .map_err(|e| format!("expunge: {e}"))?
            .len()
    };
    Ok((flags, expunged))
}

/// The message's keywords that are valid IMAP keywords (the others are
/// reported and dropped).
fn valid_keywords(sm: &SourceMessage, r: &mut FolderReport) -> Vec<String> {
    let mut keywords = Vec::new();
    for k in &sm.keywords {
        match storage::validate_keyword(k) {
            Ok(()) => keywords.push(k.clone()),
            Err(_) => r.warnings.push(format!(
                "{}: keyword {k:?} is not a valid IMAP keyword, dropped",
                sm.path.display()
            )),
        }
    }
    keywords
}

fn commit_new(m: &mut Mailbox, staged: Vec<StagedMessage>) -> Result<usize, String> {
    m.commit(staged)
        .map(|u| u.len())
        .map_err(|e| format!("commit: {e}"))
}

fn stage(m: &Mailbox, sm: &SourceMessage, r: &mut FolderReport) -> Result<StagedMessage, String> {
    let l = load(sm)?;
    stage_loaded(m, sm, l, r)
}

fn stage_loaded(
    m: &Mailbox,
    sm: &SourceMessage,
    l: Loaded,
    r: &mut FolderReport,
) -> Result<StagedMessage, String> {
    let keywords = valid_keywords(sm, r);
    let opts = AppendOptions {
        flags: sm.flags,
        keywords,
        internal_date: Some(sm.mtime),
        internal_zone: sm.zone,
        sent_date: storage::sent_date::of_message(&l.bytes).unwrap_or(0),
        max_size: None,
    };
    m.stage_for_batch(&l.bytes[..], opts)
        .map_err(|e| format!("{}: {e}", sm.path.display()))
}

/// The summary as text: one line per folder, then what was skipped.
/// `kind` names the source's format (`Dovecot Maildir`).
pub fn render_text(r: &AccountReport, from: &std::path::Path, kind: &str) -> String {
    let mut out = format!("import of {} ({kind})\n", from.display());
    let (mut msgs, mut bytes) = (0usize, 0u64);
    for f in &r.folders {
        msgs += f.imported + f.renumbered;
        bytes += f.bytes;
        match &f.refused {
            Some(why) => out.push_str(&format!("  {}: {why}\n", f.name)),
            None => out.push_str(&format!(
                "  {}: {} imported under their UIDs, {} under new UIDs, {} here already \
                 ({} with flags updated), {} expunged as in the source; \
                 UIDVALIDITY {} (source {}), UIDNEXT {} (source {})\n",
                f.name,
                f.imported,
                f.renumbered,
                f.already_here,
                f.flags_updated,
                f.expunged,
                f.uidvalidity.map_or("-".into(), |v| v.to_string()),
                f.source_uidvalidity
                    .map_or("none".into(), |v| v.to_string()),
                f.uidnext.map_or("-".into(), |v| v.to_string()),
                f.source_uidnext,
            )),
        }
        for s in &f.skipped {
            out.push_str(&format!("    skipped: {s}\n"));
        }
        for w in &f.warnings {
            out.push_str(&format!("    warning: {w}\n"));
        }
    }
    for w in &r.warnings {
        out.push_str(&format!("  warning: {w}\n"));
    }
    out.push_str(&format!(
        "{} mailboxes, {msgs} messages, {bytes} bytes imported; {} subscriptions added\n",
        r.folders.iter().filter(|f| f.refused.is_none()).count(),
        r.subscriptions_added
    ));
    out
}
