//! Import into and export out of a mailbox, through the storage API: each
//! import batch is staged outside the lock and committed in one locked
//! step, so an interrupted import leaves whole messages or none of a
//! batch, never a half message.

use std::io::Write;

use storage::mailbox::{AppendOptions, Mailbox, StagedMessage};

use crate::mbox::{self, Message};

#[derive(Debug, Default)]
pub struct ImportOutcome {
    pub messages: usize,
    pub first_uid: Option<u32>,
    pub last_uid: Option<u32>,
    pub warnings: Vec<String>,
}

/// Collects staged messages and commits them in batches.
pub struct Importer<'a> {
    mbox: &'a mut Mailbox,
    staged: Vec<StagedMessage>,
    /// Messages per commit: one syncfs, one lock and one index flush per
    /// batch (PROTOCOL.md §3a, batch durability).
    batch: usize,
    pub outcome: ImportOutcome,
}

impl<'a> Importer<'a> {
    pub fn new(mbox: &'a mut Mailbox) -> Self {
        Importer {
            mbox,
            staged: Vec::new(),
            batch: crate::account::batch_size(),
            outcome: ImportOutcome::default(),
        }
    }

    pub fn add(&mut self, m: Message) -> Result<(), String> {
        let mut keywords = Vec::new();
        for k in m.keywords {
            match storage::validate_keyword(&k) {
                Ok(()) => keywords.push(k),
                Err(_) => self.outcome.warnings.push(format!(
                    "message {}: keyword {k:?} is not a valid IMAP keyword, dropped",
                    self.outcome.messages + self.staged.len() + 1
                )),
            }
        }
        let opts = AppendOptions {
            flags: m.flags,
            keywords,
            internal_date: m.internal_date,
            // Maildir and mbox keep no zone: INTERNALDATE in UTC.
            internal_zone: 0,
            sent_date: storage::sent_date::of_message(&m.bytes).unwrap_or(0),
            max_size: None,
        };
        let s = self
            .mbox
            .stage_for_batch(&m.bytes[..], opts)
            .map_err(|e| e.to_string())?;
        self.staged.push(s);
        if self.staged.len() >= self.batch {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), String> {
        let batch = std::mem::take(&mut self.staged);
        let n = batch.len();
        let uids = self.mbox.commit(batch).map_err(|e| e.to_string())?;
        if let Some(f) = uids.first() {
            self.outcome.first_uid.get_or_insert(*f);
        }
        if let Some(l) = uids.last() {
            self.outcome.last_uid = Some(*l);
        }
        self.outcome.messages += n;
        Ok(())
    }

    pub fn finish(mut self) -> Result<ImportOutcome, String> {
        self.flush()?;
        Ok(self.outcome)
    }
}

/// Every live message of the mailbox with its flags and keyword names,
/// in UID order, read from one snapshot.
pub fn export(
    mbox: &mut Mailbox,
    each: impl FnMut(u32, Message) -> Result<(), String>,
) -> Result<usize, String> {
    export_snapshot(mbox, each).map(|(n, _)| n)
}

/// [`export`], also returning the header of the snapshot the messages
/// came from (its UIDVALIDITY and `last_uid` belong to exactly them).
pub fn export_snapshot(
    mbox: &mut Mailbox,
    mut each: impl FnMut(u32, Message) -> Result<(), String>,
) -> Result<(usize, storage::Header), String> {
    let snap = mbox.snapshot().map_err(|e| e.to_string())?;
    let mut n = 0;
    for r in snap.records.iter().filter(|r| !r.is_expunged()) {
        // Checked against the record: a damaged file is an error with
        // its path, never copied out as the message.
        let bytes = match mbox.read_message_checked(r) {
            Ok(b) => b,
            // Expunged and repacked since the snapshot.
            Err(storage::Error::Expunged(_)) => continue,
            Err(e) => return Err(e.to_string()),
        };
        let keywords = r
            .keywords
            .iter()
            .filter_map(|k| snap.meta.keywords.get(k).cloned())
            .collect();
        each(
            r.uid,
            Message {
                bytes,
                flags: r.flags.intersect(storage::Flags::SYSTEM),
                keywords,
                internal_date: Some(r.internal_date),
            },
        )?;
        n += 1;
    }
    Ok((n, snap.header))
}

/// Writes the mailbox as an mboxrd file at `path` (created, not
/// overwritten: an existing file is an error).
pub fn export_mbox(mbox: &mut Mailbox, path: &std::path::Path) -> Result<usize, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    let n = export(mbox, |_, m| {
        mbox::write(&mut w, &m).map_err(|e| format!("write {}: {e}", path.display()))
    })?;
    let f = w
        .into_inner()
        .map_err(|e| format!("write {}: {e}", path.display()))?;
    f.sync_all()
        .map_err(|e| format!("fsync {}: {e}", path.display()))?;
    let _ = (&f).flush();
    Ok(n)
}

/// Writes the mailbox into the Maildir `dir` (created as needed).
pub fn export_maildir(
    mbox: &mut Mailbox,
    dir: &std::path::Path,
    warnings: &mut Vec<String>,
) -> Result<usize, String> {
    let keywords = mbox.snapshot().map_err(|e| e.to_string())?.meta.keywords;
    if keywords.len() > 26 {
        warnings.push(format!(
            "{} keywords; Maildir letters hold only the first 26",
            keywords.len()
        ));
    }
    let w = crate::maildir::Writer::create(dir, &keywords)?;
    export(mbox, |uid, m| {
        let lost = w.write(uid, &m)?;
        for k in lost {
            warnings.push(format!(
                "UID {uid}: keyword {k:?} has no Maildir letter, not exported"
            ));
        }
        Ok(())
    })
}
