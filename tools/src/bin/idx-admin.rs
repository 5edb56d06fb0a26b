//! idx-admin: maintenance of one mailbox. Every subcommand works under the
//! mailbox's exclusive lock and is safe to interrupt (see each library
//! function's docs). Exit status: 0 done, 1 failed.

use std::io::BufReader;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use storage::Durability;
use storage::mailbox::Mailbox;
use storage::{Options, Store};
use tools::mbox::Quoting;
use tools::{MailboxArgs, Target, transfer};

#[derive(Parser)]
#[command(
    name = "idx-admin",
    version,
    about = "Mailbox maintenance: reconstruct, repack, recover, quarantine, import, export"
)]
struct Cli {
    /// JSON output instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct Source {
    /// An mbox file (mboxrd or mboxo).
    #[arg(long)]
    mbox: Option<std::path::PathBuf>,
    /// A Maildir directory.
    #[arg(long)]
    maildir: Option<std::path::PathBuf>,
    /// A whole Dovecot Maildir account (its INBOX directory; `-d USER`,
    /// no `-m`): every folder keeps its UIDVALIDITY, UIDs and UIDNEXT,
    /// flags, keywords, dates and subscriptions. Re-runnable.
    #[arg(long)]
    dovecot_maildir: Option<std::path::PathBuf>,
    /// A whole UW-IMAP account (`-d USER`, no `-m`): the INBOX mbox file
    /// and/or the mail directory tree (`--uw-mbox /var/mail/USER
    /// --uw-mbox ~/mail`); every folder keeps its UIDVALIDITY, UIDs,
    /// UIDNEXT, flags, keywords and dates. Re-runnable.
    #[arg(long, num_args = 1)]
    uw_mbox: Vec<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Rebuild a damaged or missing index from the message files.
    Reconstruct(MailboxArgs),
    /// Drop expunged records and delete their files.
    Repack(MailboxArgs),
    /// Clear debris of crashed writers (unlocked staged files, uncommitted
    /// files: moved into .quarantine when they hold bytes).
    Recover(MailboxArgs),
    /// Append every message of an mbox or Maildir, keeping flags and dates.
    Import {
        #[command(flatten)]
        mb: MailboxArgs,
        #[command(flatten)]
        src: Source,
        /// How `>From ` lines of the mbox are quoted (--mbox: default `rd`;
        /// --uw-mbox: by default kept as they are, as UW-IMAP served them).
        #[arg(long, value_enum)]
        quoting: Option<Quoting>,
        /// Create the mailbox first if it does not exist (spool form only).
        #[arg(long)]
        create: bool,
        /// With --dovecot-maildir or --uw-mbox: where a folder's UIDs
        /// cannot be kept (its UIDVALIDITY is taken, the mailbox exists
        /// here with another, or its X-UIDs disagree with its X-IMAP
        /// header), import under new UIDs and a UIDVALIDITY that is never
        /// the source's, instead of refusing the folder.
        #[arg(long)]
        renumber: bool,
        /// With --dovecot-maildir: the folder layout (`maildir++`, Dovecot's
        /// default, or `fs` for `LAYOUT=fs`).
        #[arg(long, value_enum, default_value = "maildir++")]
        layout: tools::dovecot::Layout,
        /// With --dovecot-maildir: Dovecot's INBOX namespace prefix
        /// (`namespace inbox { prefix = INBOX. }`), put in front of every
        /// folder name but INBOX, as Dovecot's IMAP showed them.
        #[arg(long, default_value = "")]
        dovecot_prefix: String,
        /// With --uw-mbox ~/mbox (c-client's `mbox` driver: INBOX is
        /// ~/mbox): the system mailbox `/var/mail/USER`, whose messages
        /// c-client had not moved into ~/mbox yet; they come after INBOX's.
        #[arg(long)]
        uw_spool: Option<std::path::PathBuf>,
        /// With --uw-mbox: UW-IMAP's subscriptions (`~/.mailboxlist`).
        #[arg(long)]
        mailboxlist: Option<std::path::PathBuf>,
        /// With --uw-mbox: put in front of every folder name of the tree,
        /// as UW-IMAP showed them (`mail/` when they were named
        /// `mail/...`, the tree being under the home directory).
        #[arg(long, default_value = "")]
        uw_prefix: String,
    },
    /// Write every live message to a new mbox file or a Maildir; with
    /// --dovecot-maildir DIR -d USER the whole account as Dovecot Maildir++
    /// (UIDVALIDITY, UIDs, UIDNEXT, flags, keywords, dates, subscriptions).
    Export {
        #[command(flatten)]
        mb: MailboxArgs,
        #[command(flatten)]
        dst: Source,
    },
    /// Build the full-text index (`.fts/`, derived data) of a mailbox
    /// anew from its messages, or of every mailbox of a user.
    FtsRebuild {
        #[command(flatten)]
        mb: MailboxArgs,
        /// Every mailbox of the user (`-d USER`; `-m` is ignored).
        #[arg(long)]
        all: bool,
        /// The index writer's memory budget: bytes, or with K, M or G
        /// (as `imapd.fts_memory`; at least 15M).
        #[arg(long, default_value = "64M", value_parser = fts_memory)]
        memory: usize,
    },
    /// Files recovery kept aside (`.quarantine/`): list, restore, purge.
    Quarantine {
        #[command(subcommand)]
        action: QuarantineCmd,
    },
}

#[derive(Subcommand)]
enum QuarantineCmd {
    /// List the quarantined files of a mailbox, oldest first.
    List(MailboxArgs),
    /// Append a quarantined file to the mailbox as a new message (a new
    /// UID, never its old one), then remove it from quarantine.
    Restore {
        #[command(flatten)]
        mb: MailboxArgs,
        /// Names as `list` prints them; `--all` for every one.
        names: Vec<String>,
        #[arg(long, conflicts_with = "names")]
        all: bool,
    },
    /// Delete quarantined files for good.
    Purge {
        #[command(flatten)]
        mb: MailboxArgs,
        /// Names as `list` prints them.
        names: Vec<String>,
        /// Every file quarantined more than this many days ago.
        #[arg(long, conflicts_with = "names")]
        older_than_days: Option<u64>,
    },
}

fn main() -> ExitCode {
    tools::init_tracing();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tools::err_line(&format!("idx-admin: {e}"));
            ExitCode::from(1)
        }
    }
}

fn open_store(spool: &std::path::Path, t: &Target) -> Result<Store, String> {
    let opts = Options {
        lock_timeout: t.lock_timeout,
        ..Options::default()
    };
    Store::open(spool, opts).map_err(|e| e.to_string())
}

fn open(t: &Target, create: bool) -> Result<Mailbox, String> {
    match &t.named {
        Some((spool, user, name)) => {
            let store = open_store(spool, t)?;
            if create {
                store
                    .ensure_mailbox(user, name)
                    .map_err(|e| e.to_string())?;
            }
            store.open_mailbox(user, name).map_err(|e| e.to_string())
        }
        None if create => Err("--create needs --spool/-d/-m".into()),
        None => storage::recovery::open_mailbox_at(&t.dir, Durability::Full, t.lock_timeout)
            .map_err(|e| e.to_string()),
    }
}

/// Prints the outcome of a finished operation. A closed pipe is ignored
/// (`tools::out`); another write error is one (the work is done, but
/// its report was lost).
fn emit(json: bool, v: serde_json::Value, text: String) -> Result<(), String> {
    let text = if json {
        format!(
            "{}\n",
            serde_json::to_string_pretty(&v).expect("serializable")
        )
    } else {
        text
    };
    tools::out(&text).map_err(|e| format!("writing standard output: {e}"))
}

/// Rebuilds the full-text index of `t` from its live messages; returns
/// how many were indexed.
/// `--memory`: a size as the config files write them, within what the
/// index writer accepts.
fn fts_memory(s: &str) -> Result<usize, String> {
    let n = storage::config::parse_size(s)?;
    if n < 15_000_000 {
        return Err("at least 15M".into());
    }
    Ok(n.min(4 << 30) as usize)
}

fn fts_rebuild(t: &Target, memory: usize) -> Result<u64, String> {
    let mut mbox = open(t, false)?;
    let snap = mbox.snapshot().map_err(|e| e.to_string())?;
    let mut w = fts::writer(&t.dir, snap.header.uidvalidity, memory)
        .map_err(|e| e.to_string())?
        .ok_or("the full-text index is being written by another process; try again")?;
    w.clear().map_err(|e| e.to_string())?;
    for r in snap.records.iter().filter(|r| !r.is_expunged()) {
        let sizes = (r.size, u64::from(r.header_size));
        w.add_read(r.uid, sizes, || match mbox.read_message_checked(r) {
            Ok(raw) => Ok(Some(raw)),
            Err(storage::Error::Expunged(_)) => Ok(None),
            Err(e) => Err(e),
        })
        .map_err(|e| e.to_string())?;
    }
    let n = w.added();
    w.commit().map_err(|e| e.to_string())?;
    Ok(n)
}

fn run(cli: &Cli) -> Result<(), String> {
    match &cli.cmd {
        Cmd::FtsRebuild { mb, all, memory } => {
            let targets = if *all {
                let t = mb.resolve()?;
                let Some((spool, user, _)) = &t.named else {
                    return Err("--all needs --spool/-d".into());
                };
                let names = open_store(spool, &t)?
                    .list_mailboxes(user)
                    .map_err(|e| e.to_string())?;
                names
                    .iter()
                    .map(|n| {
                        MailboxArgs {
                            mailbox: n.as_str().to_string(),
                            ..mb.clone()
                        }
                        .resolve()
                    })
                    .collect::<Result<Vec<_>, _>>()?
            } else {
                vec![mb.resolve()?]
            };
            for t in targets {
                let n = fts_rebuild(&t, *memory)?;
                emit(
                    cli.json,
                    json!({"mailbox": t.dir, "indexed": n}),
                    format!(
                        "full-text index of {} rebuilt: {n} messages
",
                        t.dir.display()
                    ),
                )?;
            }
        }
        Cmd::Reconstruct(mb) => {
            let t = mb.resolve()?;
            // Removes the full-text index too (derived data; the next
            // SEARCH or fts-rebuild builds it).
            let o = storage::recovery::reconstruct(&t.dir, Durability::Full, t.lock_timeout)
                .map_err(|e| e.to_string())?;
            let h = &o.header;
            let mut text = format!(
                "reconstructed {}: {} records ({} kept, {} rebuilt from files, {} updated from files), \
                 {} dropped (file missing), {} corrupt records dropped\n\
                 uidvalidity {}{}, last_uid {}, highestmodseq {}, generation {}\n",
                t.dir.display(),
                h.num_records,
                o.kept.len(),
                o.rebuilt.len(),
                o.updated.len(),
                o.dropped_missing.len(),
                o.dropped_corrupt.len(),
                h.uidvalidity,
                if o.uidvalidity_changed {
                    " (CHANGED)"
                } else {
                    " (kept)"
                },
                h.last_uid,
                h.highestmodseq,
                h.generation,
            );
            if !o.quarantined.is_empty() {
                text.push_str(&format!(
                    "quarantined: files of UIDs {:?} that the index does not account for (idx-admin quarantine list)\n",
                    o.quarantined
                ));
            }
            for n in &o.notes {
                text.push_str(&format!("note: {n}\n"));
            }
            emit(
                cli.json,
                json!({
                    "mailbox": t.dir, "had_index": o.had_index,
                    "uidvalidity": h.uidvalidity, "old_uidvalidity": o.old_uidvalidity,
                    "uidvalidity_changed": o.uidvalidity_changed,
                    "kept": o.kept, "rebuilt": o.rebuilt, "updated": o.updated,
                    "dropped_missing": o.dropped_missing, "dropped_corrupt_records": o.dropped_corrupt,
                    "quarantined": o.quarantined,
                    "keywords_cleared": o.keywords_cleared, "meta_reset": o.meta_reset,
                    "generation": h.generation, "num_records": h.num_records, "exists": h.exists,
                    "last_uid": h.last_uid, "highestmodseq": h.highestmodseq, "notes": o.notes,
                }),
                text,
            )?;
        }
        Cmd::Repack(mb) => {
            let t = mb.resolve()?;
            let o = open(&t, false)?.repack().map_err(|e| e.to_string())?;
            emit(
                cli.json,
                json!({"mailbox": t.dir, "removed": o.removed, "kept": o.kept}),
                format!(
                    "repacked {}: removed {} expunged messages, {} records kept\n",
                    t.dir.display(),
                    o.removed.len(),
                    o.kept
                ),
            )?;
        }
        Cmd::Recover(mb) => {
            let t = mb.resolve()?;
            let o = open(&t, false)?.recover().map_err(|e| e.to_string())?;
            emit(
                cli.json,
                json!({"mailbox": t.dir, "stage_removed": o.stage_removed,
                    "uncommitted_removed": o.uncommitted_removed,
                    "restored": o.restored, "settled": o.settled}),
                format!(
                    "recovered {}: {} staged/temporary files and {} uncommitted message files cleared (any with content kept in .quarantine), {} committed messages restored from .stage{}, {} staged names settled\n",
                    t.dir.display(),
                    o.stage_removed,
                    o.uncommitted_removed,
                    o.restored.len(),
                    if o.restored.is_empty() {
                        String::new()
                    } else {
                        format!(" (UIDs {:?})", o.restored)
                    },
                    o.settled
                ),
            )?;
        }
        Cmd::Import {
            mb,
            src,
            renumber,
            layout,
            dovecot_prefix,
            ..
        } if src.dovecot_maildir.is_some() => {
            let root = src.dovecot_maildir.as_ref().expect("guarded");
            let prefix: Vec<String> = dovecot_prefix
                .split(['.', '/'])
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            let how = DovecotImport {
                root,
                renumber: *renumber,
                layout: *layout,
                prefix,
            };
            import_dovecot(cli.json, mb, &how)?;
        }
        Cmd::Import {
            mb,
            src,
            renumber,
            quoting,
            mailboxlist,
            uw_prefix,
            uw_spool,
            ..
        } if !src.uw_mbox.is_empty() => {
            let mut how = tools::uwmbox::Sources {
                prefix: uw_prefix.clone(),
                spool: uw_spool.clone(),
                mailboxlist: mailboxlist.clone(),
                quoting: *quoting,
                ..Default::default()
            };
            for p in &src.uw_mbox {
                let slot = if p.is_dir() {
                    &mut how.tree
                } else {
                    &mut how.inbox
                };
                if slot.replace(p.clone()).is_some() {
                    return Err(
                        "--uw-mbox: give at most one INBOX file and one mail directory".into(),
                    );
                }
            }
            import_uw(cli.json, mb, &how, *renumber)?;
        }
        Cmd::Import {
            mb,
            src,
            quoting,
            create,
            ..
        } => {
            let quoting = quoting.unwrap_or(Quoting::Rd);
            let t = mb.resolve()?;
            let mut m = open(&t, *create)?;
            let mut imp = transfer::Importer::new(&mut m);
            let from = if let Some(p) = &src.mbox {
                let f = std::fs::File::open(p).map_err(|e| format!("open {}: {e}", p.display()))?;
                tools::mbox::read(BufReader::new(f), quoting, |msg| imp.add(msg))?;
                p
            } else {
                let p = src.maildir.as_ref().expect("clap group");
                tools::maildir::read(p, |msg| imp.add(msg))?;
                p
            };
            let o = imp.finish()?;
            for w in &o.warnings {
                tools::err_line(&format!("idx-admin: warning: {w}"));
            }
            emit(
                cli.json,
                json!({"mailbox": t.dir, "from": from, "messages": o.messages,
                    "first_uid": o.first_uid, "last_uid": o.last_uid, "warnings": o.warnings}),
                format!(
                    "imported {} messages from {} into {} (UIDs {})\n",
                    o.messages,
                    from.display(),
                    t.dir.display(),
                    match (o.first_uid, o.last_uid) {
                        (Some(a), Some(b)) => format!("{a}:{b}"),
                        _ => "none".into(),
                    }
                ),
            )?;
        }
        Cmd::Quarantine { action } => quarantine(cli.json, action)?,
        Cmd::Export { mb, dst } if dst.dovecot_maildir.is_some() => {
            let to = dst.dovecot_maildir.as_ref().expect("guarded");
            export_dovecot(cli.json, mb, to)?;
        }
        Cmd::Export { mb, dst } => {
            let t = mb.resolve()?;
            let mut m = open(&t, false)?;
            let mut warnings = Vec::new();
            if !dst.uw_mbox.is_empty() {
                return Err(
                    "export writes an mbox (--mbox) or a Maildir, not UW-IMAP's form".into(),
                );
            }
            let (n, to) = if let Some(p) = &dst.mbox {
                (transfer::export_mbox(&mut m, p)?, p)
            } else {
                let p = dst.maildir.as_ref().expect("clap group");
                (transfer::export_maildir(&mut m, p, &mut warnings)?, p)
            };
            for w in &warnings {
                tools::err_line(&format!("idx-admin: warning: {w}"));
            }
            emit(
                cli.json,
                json!({"mailbox": t.dir, "to": to, "messages": n, "warnings": warnings}),
                format!(
                    "exported {n} messages from {} to {}\n",
                    t.dir.display(),
                    to.display()
                ),
            )?;
        }
    }
    Ok(())
}

/// What `idx-admin import --dovecot-maildir` was asked to do.
struct DovecotImport<'a> {
    root: &'a std::path::Path,
    renumber: bool,
    layout: tools::dovecot::Layout,
    prefix: Vec<String>,
}

/// The store and user of a whole-account command (`-d USER`, no `-m`);
/// `flag` names the command's source or target option and `what` its
/// verb for the messages.
fn whole_account(
    mb: &MailboxArgs,
    flag: &str,
    what: &str,
) -> Result<(Store, storage::UserName), String> {
    let t = mb.resolve()?;
    let Some((spool, user, name)) = &t.named else {
        return Err(format!(
            "{flag} {what} a whole account: give -d USER (and --spool)"
        ));
    };
    if !name.is_inbox() {
        return Err(format!("{flag} {what} every mailbox: -m does not apply"));
    }
    Ok((open_store(spool, &t)?, user.clone()))
}

/// Imports a whole account read from `from` (a `kind` of source) and
/// prints the summary; an error when anything was left behind.
fn import_whole(
    json: bool,
    store: &Store,
    user: &storage::UserName,
    acct: &tools::dovecot::Account,
    renumber: bool,
    from: &std::path::Path,
    kind: &str,
) -> Result<(), String> {
    let report = tools::account::import_account(
        store,
        user,
        acct,
        tools::account::ImportOptions { renumber },
    )?;
    let text = tools::account::render_text(&report, from, kind);
    emit(
        json,
        serde_json::to_value(&report).expect("serializable"),
        text,
    )?;
    if report.incomplete() {
        return Err("not everything was imported (see above); fix and run again".into());
    }
    Ok(())
}

/// `idx-admin import --dovecot-maildir DIR -d USER`: the whole account.
fn import_dovecot(json: bool, mb: &MailboxArgs, how: &DovecotImport) -> Result<(), String> {
    let (store, user) = whole_account(mb, "--dovecot-maildir", "imports")?;
    let acct = tools::dovecot::read_account(how.root, how.layout, &how.prefix)?;
    import_whole(
        json,
        &store,
        &user,
        &acct,
        how.renumber,
        how.root,
        "Dovecot Maildir",
    )
}

/// `idx-admin import --uw-mbox PATH... -d USER`: the whole account.
fn import_uw(
    json: bool,
    mb: &MailboxArgs,
    how: &tools::uwmbox::Sources,
    renumber: bool,
) -> Result<(), String> {
    let (store, user) = whole_account(mb, "--uw-mbox", "imports")?;
    let acct = tools::uwmbox::read_account(how)?;
    let from = how.tree.as_ref().or(how.inbox.as_ref()).expect("a path");
    import_whole(json, &store, &user, &acct, renumber, from, "UW-IMAP mbox")
}

/// `idx-admin export --dovecot-maildir DIR -d USER`: the whole account
/// as a Dovecot Maildir++ account (`tools::dovecot_export`).
fn export_dovecot(json: bool, mb: &MailboxArgs, to: &std::path::Path) -> Result<(), String> {
    let (store, user) = whole_account(mb, "--dovecot-maildir", "exports")?;
    let report = tools::dovecot_export::export_account(&store, &user, to)?;
    emit(
        json,
        serde_json::to_value(&report).expect("serializable"),
        tools::dovecot_export::render_text(&report, to),
    )?;
    if report.incomplete() {
        return Err("not everything was exported (see above)".into());
    }
    Ok(())
}

fn quarantine(json: bool, action: &QuarantineCmd) -> Result<(), String> {
    use storage::quarantine;
    let err = |e: storage::Error| e.to_string();
    let dir_of = |mb: &MailboxArgs| -> Result<(Target, storage::Dir), String> {
        let t = mb.resolve()?;
        let d = storage::Dir::open_root(&t.dir).map_err(err)?;
        Ok((t, d))
    };
    match action {
        QuarantineCmd::List(mb) => {
            let (t, d) = dir_of(mb)?;
            let list = quarantine::list(&d).map_err(err)?;
            let mut text = String::new();
            for q in &list {
                text.push_str(&format!(
                    "{}\t{} bytes\t{}\twas {}\n",
                    q.name, q.size, q.reason, q.original
                ));
            }
            text.push_str(&format!(
                "{}: {} file(s) in quarantine\n",
                t.dir.display(),
                list.len()
            ));
            let v: Vec<_> = list
                .iter()
                .map(|q| {
                    json!({"name": q.name, "size": q.size, "since": q.since,
                        "reason": q.reason, "original": q.original})
                })
                .collect();
            emit(json, json!({"mailbox": t.dir, "files": v}), text)?;
        }
        QuarantineCmd::Restore { mb, names, all } => {
            let (t, d) = dir_of(mb)?;
            let names: Vec<String> = if *all {
                quarantine::list(&d)
                    .map_err(err)?
                    .into_iter()
                    .map(|q| q.name)
                    .collect()
            } else {
                names.clone()
            };
            if names.is_empty() {
                return Err("name the files to restore (see `quarantine list`), or --all".into());
            }
            let mut m = open(&t, false)?;
            let mut restored = Vec::new();
            for name in &names {
                let f = quarantine::open(&d, name).map_err(err)?;
                let since = f
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                let uid = m
                    .append(
                        f,
                        storage::AppendOptions {
                            internal_date: since,
                            ..Default::default()
                        },
                    )
                    .map_err(err)?;
                quarantine::remove(&d, name).map_err(err)?;
                restored.push(json!({"name": name, "uid": uid}));
            }
            let text = format!(
                "restored {} file(s) into {} as new messages\n",
                restored.len(),
                t.dir.display()
            );
            emit(json, json!({"mailbox": t.dir, "restored": restored}), text)?;
        }
        QuarantineCmd::Purge {
            mb,
            names,
            older_than_days,
        } => {
            let (t, d) = dir_of(mb)?;
            let names: Vec<String> = match older_than_days {
                Some(days) => {
                    let cutoff = storage::internals::fsutil::now() - (*days as i64) * 86_400;
                    quarantine::list(&d)
                        .map_err(err)?
                        .into_iter()
                        .filter(|q| q.since < cutoff)
                        .map(|q| q.name)
                        .collect()
                }
                None if names.is_empty() => {
                    return Err("name the files to purge, or --older-than-days N".into());
                }
                None => names.clone(),
            };
            for name in &names {
                quarantine::remove(&d, name).map_err(err)?;
            }
            emit(
                json,
                json!({"mailbox": t.dir, "purged": names}),
                format!("purged {} file(s) from {}\n", names.len(), t.dir.display()),
            )?;
        }
    }
    Ok(())
}
