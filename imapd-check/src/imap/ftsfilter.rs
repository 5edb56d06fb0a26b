//! SEARCH BODY/TEXT (and SUBJECT, HEADER, FROM, TO, CC and BCC, whose
//! needles the index holds among its header terms) through the
//! mailbox's full-text index (the `fts` crate): before a search reads
//! the messages, the index names the UIDs
//! that may match; the others are skipped without being opened. Every
//! message that is not skipped is still tested by `search::matches`,
//! which reads it unless the index proves the key (the needle is one of
//! the message's indexed words: `fts::words`), so the answer is the
//! direct scan's (RFC 3501 6.4.4 substring semantics) whatever the index
//! holds (`imap_fts.rs` compares them): UIDs above its high-water mark, and every
//! message when it is missing, unreadable, locked or of another
//! UIDVALIDITY, are read as without it. Expunged messages are left out by
//! the session's view.
//!
//! The index is caught up here, lazily: up to [`FtsConfig::batch`]
//! messages above its mark (and at most [`STEP_TIME`]) per SEARCH, by
//! the process that gets its lock; the rest are searched directly until
//! a later SEARCH indexes them. Once caught up, documents of expunged
//! messages are purged when they are more than an eighth of the index.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use imap_codec::imap_types::search::SearchKey;
use storage::session::SessionView;
use storage::{Error, Mailbox};

use super::criteria::Crit;

/// Indexing time one SEARCH spends at most catching up.
pub const STEP_TIME: Duration = Duration::from_secs(2);

/// Segments larger than this are not merged while catching up (a merge
/// would hold up the SEARCH); `idx-admin fts-rebuild` merges them.
const MERGE_MAX_DOCS: usize = 5_000;

/// `imapd.fts`, `imapd.fts_memory`, `imapd.fts_batch`.
#[derive(Clone, Debug)]
pub struct FtsConfig {
    /// Use and build the index (default on).
    pub on: bool,
    /// The index writer's memory budget in bytes.
    pub memory: usize,
    /// Messages one SEARCH indexes at most.
    pub batch: u32,
}

impl Default for FtsConfig {
    fn default() -> Self {
        FtsConfig {
            on: true,
            memory: 64 << 20,
            batch: 20_000,
        }
    }
}

/// The UIDs that may match: all above `high`, and `uids` up to it; and
/// for each BODY or TEXT key (by address), the UIDs that certainly match
/// it (the needle is one of their words).
pub struct Filter {
    high: u32,
    uids: Vec<u32>,
    proven: HashMap<usize, Vec<u32>>,
}

impl Filter {
    /// False when the message cannot match the criteria.
    pub fn may_match(&self, uid: u32) -> bool {
        uid > self.high || self.uids.binary_search(&uid).is_ok()
    }

    /// True when message `uid` certainly matches `key` (one of the
    /// criteria's BODY, TEXT, SUBJECT, FROM, TO, CC or BCC keys), without
    /// reading it.
    pub fn proves(&self, key: &SearchKey, uid: u32) -> bool {
        self.proven
            .get(&(key as *const SearchKey as usize))
            .is_some_and(|v| v.binary_search(&uid).is_ok())
    }
}

/// Whether the index can narrow these criteria: some BODY, TEXT,
/// SUBJECT, HEADER, FROM, TO, CC or BCC key with a needle of at least
/// three bytes that every match must meet.
fn has_probe(c: &Crit) -> bool {
    match c {
        Crit::All(v) => v.iter().any(has_probe),
        Crit::Or(a, b) => has_probe(a) && has_probe(b),
        Crit::Key(
            SearchKey::Body(s)
            | SearchKey::Text(s)
            | SearchKey::Subject(s)
            | SearchKey::Header(_, s)
            | SearchKey::From(s)
            | SearchKey::To(s)
            | SearchKey::Cc(s)
            | SearchKey::Bcc(s),
        ) => fts::probe(s.as_ref()).is_some(),
        _ => false,
    }
}

/// Sorted UIDs up to the mark that may match `c`; `None`: any may.
/// Adds the UIDs proven to match each BODY/TEXT key to `proven`.
fn possible(
    c: &Crit,
    snap: &fts::Snapshot,
    proven: &mut HashMap<usize, Vec<u32>>,
) -> fts::Result<Option<Vec<u32>>> {
    Ok(match c {
        Crit::All(v) => {
            let mut acc: Option<Vec<u32>> = None;
            for k in v {
                if let Some(s) = possible(k, snap, proven)? {
                    acc = Some(match acc {
                        None => s,
                        Some(a) => a
                            .into_iter()
                            .filter(|u| s.binary_search(u).is_ok())
                            .collect(),
                    });
                }
            }
            acc
        }
        Crit::Or(a, b) => match (possible(a, snap, proven)?, possible(b, snap, proven)?) {
            (Some(mut x), Some(y)) => {
                x.extend(y);
                x.sort_unstable();
                x.dedup();
                Some(x)
            }
            _ => None,
        },
        Crit::Key(key @ (SearchKey::Body(s) | SearchKey::Text(s))) => {
            let Some(p) = fts::probe(s.as_ref()) else {
                return Ok(None);
            };
            if let Ok(needle) = std::str::from_utf8(s.as_ref()) {
                let text = matches!(key, SearchKey::Text(_));
                let sure = snap.proven(needle, text)?;
                if !sure.is_empty() {
                    proven.insert(*key as *const SearchKey as usize, sure);
                }
            }
            Some(snap.candidates(&p)?)
        }
        // A header value holds the needle, as written or decoded
        // (search.rs `header_text_has`), or an address field's rebuilt
        // addresses do (`address_value_has`): the index has each field's
        // trigrams unfolded and decoded, and those of the addresses of
        // From, To, Cc and Bcc (`fts::Writer::add`).
        Crit::Key(
            key @ (SearchKey::Subject(s)
            | SearchKey::Header(_, s)
            | SearchKey::From(s)
            | SearchKey::To(s)
            | SearchKey::Cc(s)
            | SearchKey::Bcc(s)),
        ) => {
            let Some(p) = fts::probe(s.as_ref()) else {
                return Ok(None);
            };
            // A needle that is a whole address of the field, or its
            // domain or local part, proves it (`fts::address::address_parts`).
            let field = match key {
                SearchKey::From(_) => Some("from"),
                SearchKey::To(_) => Some("to"),
                SearchKey::Cc(_) => Some("cc"),
                SearchKey::Bcc(_) => Some("bcc"),
                _ => None,
            };
            let sure = match (field, key) {
                (Some(field), _) => snap.proven_address(field, s.as_ref())?,
                // A one-word needle that is a word of the Subject does.
                (None, SearchKey::Subject(_)) => match std::str::from_utf8(s.as_ref()) {
                    Ok(needle) => snap.proven_subject(needle)?,
                    Err(_) => Vec::new(),
                },
                _ => Vec::new(),
            };
            if !sure.is_empty() {
                proven.insert(*key as *const SearchKey as usize, sure);
            }
            Some(snap.header_candidates(&p)?)
        }
        _ => None,
    })
}

/// The filter for a SEARCH of `crit` in the view, after catching the
/// index up; `None` (search every message) when the index is off, of no
/// use to these criteria, or cannot be read.
pub fn prepare(cfg: &FtsConfig, crit: &Crit, mbox: &Mailbox, view: &SessionView) -> Option<Filter> {
    if !cfg.on || !has_probe(crit) {
        return None;
    }
    // A damaged index must not end the session: tantivy may panic on
    // segment files it cannot make sense of.
    let run = std::panic::AssertUnwindSafe(|| filter(cfg, crit, mbox, view));
    std::panic::catch_unwind(run).unwrap_or_else(|_| {
        tracing::error!(
            dir = %mbox.dir().path.display(),
            "full-text index failed; searching without it"
        );
        None
    })
}

fn filter(cfg: &FtsConfig, crit: &Crit, mbox: &Mailbox, view: &SessionView) -> Option<Filter> {
    let dir = &mbox.dir().path;
    let uv = view.uidvalidity();
    if let Err(e) = catch_up(cfg, mbox, view) {
        tracing::warn!("full-text index not updated: {e}");
    }
    let snap = match fts::snapshot(dir, uv) {
        Ok(Some(s)) => s,
        Ok(None) => return None,
        Err(e) => {
            tracing::warn!("searching without the full-text index: {e}");
            return None;
        }
    };
    let mut proven = HashMap::new();
    match possible(crit, &snap, &mut proven) {
        Ok(Some(uids)) => Some(Filter {
            high: snap.high_water(),
            uids,
            proven,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("searching without the full-text index: {e}");
            None
        }
    }
}

/// Indexes the view's messages above the index's mark (bounded), and
/// purges expunged ones once caught up. Does nothing when another process
/// holds the index.
fn catch_up(cfg: &FtsConfig, mbox: &Mailbox, view: &SessionView) -> fts::Result<()> {
    let dir = &mbox.dir().path;
    let uv = view.uidvalidity();
    let max_uid = view.uid(view.len()).unwrap_or(0);
    if let Ok(Some(s)) = fts::snapshot(dir, uv)
        && s.high_water() >= max_uid
        && !needs_purge(&s, view)
    {
        return Ok(());
    }
    let Some(mut w) = fts::writer(dir, uv, cfg.memory)? else {
        return Ok(());
    };
    w.limit_merges(MERGE_MAX_DOCS);
    let start = Instant::now();
    let mut caught_up = true;
    let from = w.high_water();
    for m in view.iter().filter(|m| !m.expunged && m.uid > from) {
        if w.added() >= u64::from(cfg.batch) || start.elapsed() > STEP_TIME {
            caught_up = false;
            break;
        }
        let sizes = (m.record.size, u64::from(m.record.header_size));
        w.add_read(m.uid, sizes, || match mbox.read_message_checked(m.record) {
            Ok(raw) => Ok(Some(raw)),
            Err(Error::Expunged(_)) => Ok(None),
            Err(e) => Err(e),
        })?;
    }
    let mut changed = w.added() > 0;
    if caught_up {
        let s = w.snapshot()?;
        if needs_purge(&s, view) {
            let gone: Vec<u32> = s
                .indexed()?
                .into_iter()
                .filter(|&u| u <= max_uid && view.seq(u).is_none_or(|q| view.is_expunged(q)))
                .collect();
            tracing::debug!(
                n = gone.len(),
                "purging expunged messages from the full-text index"
            );
            changed |= !gone.is_empty();
            w.remove(&gone);
        }
    }
    if !changed {
        return Ok(());
    }
    // Kill points for the crash tests (PROTOCOL.md §11); not in
    // storage's POINTS list, whose tests do not search.
    let fault = |p| storage::internals::fault::point(p).is_ok();
    if !fault("fts.before_commit") {
        return Ok(());
    }
    w.commit()?;
    fault("fts.after_commit");
    Ok(())
}

/// More documents than live messages by an eighth (and 8).
fn needs_purge(s: &fts::Snapshot, view: &SessionView) -> bool {
    let live = u64::from(view.len());
    s.documents() > live + live / 8 + 8
}
