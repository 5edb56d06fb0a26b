//! Sieve at delivery: the recipient's active script (`USER/.sieve/`, see
//! docs/FORMAT.md) is compiled (cached by mtime, size and content hash),
//! run on the message, and its actions turned into a [`Plan`]: the
//! mailboxes to append to with their flags, a rejection, or nothing.
//!
//! A script that cannot be read or compiled, a runtime error or a limit
//! never loses mail: the plan is then the implicit keep (the default
//! target), with a warning in the log naming the user and the reason.
//! Redirect and vacation are sent through `--sendmail` (module
//! `outbound`); without it a redirect keeps the message instead (if the
//! script stores it nowhere else) and both are logged.

use std::collections::HashMap;
use std::ffi::OsString;
use std::hash::{Hash, Hasher};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use blake2::digest::consts::U16;
use blake2::{Blake2b, Digest};
use sieve::layout::{
    ACTIVE_FILE, MAX_ACTIVE_FILE, MAX_SCRIPT_FILE, SIEVE_DIR, active_name, script_file,
    valid_script_name,
};
use sieve::{Action, Envelope, Host, RunOptions, Script};
use storage::dedup::Key;
use storage::{Flags, MailboxName, Store, UserName};

use crate::delivery::{Settings, Target};
use crate::status::{Failure, from_storage};

/// Largest message a script runs on; a larger one is kept in the default
/// mailbox without running the script (logged).
pub const MAX_FILTERED_MESSAGE: usize = 32 << 20;
/// How long the per-mailbox duplicate logs remember a multi-mailbox
/// delivery at least: longer than Postfix retries a deferred message
/// (`maximal_queue_lifetime`, 5 days by default).
const RETRY_WINDOW: u64 = 6 * 86400;

/// One append of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Append {
    pub target: Target,
    pub flags: Flags,
    pub keywords: Vec<String>,
    /// The mailbox is created when the append finds it missing
    /// (`fileinto :create`, or `--autocreate`); planning does not look.
    pub create: bool,
}

/// What a script decided for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Append to each (at least one).
    Store(Vec<Append>),
    /// `reject`/`ereject`: refuse with this reason (5.7.1).
    Reject(String),
    /// `discard` (or only actions not stored): accepted, stored nowhere.
    Discard,
}

/// A compiled script with what it was compiled from.
struct Cached {
    /// Device, inode, size, mtime and ctime (ns) of the file when read.
    stamp: Stamp,
    /// Hash of the source.
    hash: u64,
    /// When the file was read (ns since the epoch, taken before the read).
    read_at: i128,
    script: Arc<Script>,
}

/// What identifies one version of a script file without reading it.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i128,
    ctime: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| s as i128 * 1_000_000_000 + n as i128;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: ns(meta.mtime(), meta.mtime_nsec()),
            ctime: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// How much older than the read a file's ctime must be for its stamp
/// alone to prove it unchanged: well above any filesystem's timestamp
/// granularity (ext4 takes the coarse clock, ticks of a few ms).
const STAMP_MARGIN_NS: i128 = 2_000_000_000;

/// Compiled scripts by path (an LMTP server compiles a script once).
/// A cached script is reused without reading the file again while its
/// device, inode, size, mtime and ctime stay the same and its ctime was
/// already [`STAMP_MARGIN_NS`] old when it was read: any later write or
/// replacement (a rename gives a new inode) changes ctime to a later
/// tick. A file changed too recently for that is read again and its
/// content hash compared, as Git does with "racily clean" files.
///
/// The users' `.sieve/active` files are cached the same way: an LMTP
/// delivery stats the file (one call, as an absent one costs) instead of
/// opening and reading it.
///
/// Both maps are keyed by the path's bytes: hashing a `Path` walks its
/// components, a cost paid on every delivery.
#[derive(Default)]
pub struct ScriptCache {
    map: Mutex<HashMap<OsString, Cached>>,
    active: Mutex<HashMap<OsString, CachedActive>>,
}

/// What a user's `.sieve/active` said, with the stamp it was read at.
struct CachedActive {
    stamp: Stamp,
    read_at: i128,
    /// Its content: the active script's path, or why it cannot be used.
    script: Option<ActiveScript>,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// The path of `user`'s active script, when they have one.
pub fn active_script_path(store: &Store, user: &UserName) -> Result<Option<PathBuf>, String> {
    let dir = store.root().join(user.encoded()).join(SIEVE_DIR);
    // One open (ENOENT without a script) on every delivery's path, so
    // not `storage::scriptdir::ScriptDir`, which opens each level.
    let bytes = match read_bounded(&dir.join(ACTIVE_FILE), MAX_ACTIVE_FILE) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.join(ACTIVE_FILE).display())),
    };
    active_path(&dir, &bytes)
}

/// The script path an `active` file's content names (`None`: no script).
fn active_path(dir: &Path, content: &[u8]) -> Result<Option<PathBuf>, String> {
    let Some(name) = active_name(content) else {
        return Ok(None);
    };
    if !valid_script_name(&name) {
        return Err(format!("invalid active script name {name:?}"));
    }
    Ok(Some(dir.join(script_file(&name))))
}

/// Reads a file without following a symlink (the spool never follows
/// one), refusing more than `max` bytes.
fn read_bounded(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let len = f.metadata()?.len();
    if len > max {
        return Err(std::io::Error::other(format!(
            "larger than {max} bytes ({len})"
        )));
    }
    let mut out = Vec::with_capacity(len as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(out)
}

impl ScriptCache {
    /// [`active_script`], for a long-running server: `user`'s
    /// `.sieve/active` is stat'ed (ENOENT: no script, one call as before)
    /// and read again only when its stamp changed or was too recent to
    /// prove it unchanged (the rule of [`ScriptCache::load`]; `active` is
    /// replaced by rename, a new inode).
    pub fn active_script(&self, store: &Store, user: &UserName) -> Option<ActiveScript> {
        let mut path = store.root().join(user.encoded());
        path.push(SIEVE_DIR);
        path.push(ACTIVE_FILE);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Err(format!("{}: {e}", path.display()))),
        };
        let stamp = Stamp::of(&meta);
        if meta.is_file() {
            let map = self.active.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(path.as_os_str())
                && c.stamp == stamp
                && stamp.ctime < c.read_at - STAMP_MARGIN_NS
            {
                return c.script.clone();
            }
        }
        let read_at = now_ns();
        let dir = path.parent().expect("joined above");
        let script = match read_bounded(&path, MAX_ACTIVE_FILE) {
            Ok(b) => active_path(dir, &b).transpose(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => Some(Err(format!("{}: {e}", path.display()))),
        };
        let mut map = self.active.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(
            path.into_os_string(),
            CachedActive {
                stamp,
                read_at,
                script: script.clone(),
            },
        );
        script
    }

    /// Loads and compiles the script at `path` (or takes it from the cache).
    pub fn load(&self, path: &Path) -> Result<Arc<Script>, String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let stamp = Stamp::of(&meta);
        if meta.is_file() {
            let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = map.get(path.as_os_str())
                && c.stamp == stamp
                && stamp.ctime < c.read_at - STAMP_MARGIN_NS
            {
                return Ok(c.script.clone());
            }
        }
        let read_at = now_ns();
        let src =
            read_bounded(path, MAX_SCRIPT_FILE).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        src.hash(&mut h);
        let hash = h.finish();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get_mut(path.as_os_str())
            && (c.stamp.size, c.hash) == (stamp.size, hash)
        {
            // Same content: remember the new stamp, so the next hit
            // need not read the file.
            c.stamp = stamp;
            c.read_at = read_at;
            return Ok(c.script.clone());
        }
        let text = String::from_utf8(src).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        let script = Arc::new(
            Script::compile(&text)
                .map_err(|e| format!("{}:{}: {}", path.display(), e.pos, e.message))?,
        );
        if map.len() > 10_000 {
            map.clear();
        }
        map.insert(
            path.as_os_str().to_os_string(),
            Cached {
                stamp,
                hash,
                read_at,
                script: script.clone(),
            },
        );
        Ok(script)
    }
}

struct StoreHost<'a> {
    store: &'a Store,
    user: &'a UserName,
    global_dir: Option<&'a Path>,
}

impl Host for StoreHost<'_> {
    fn mailbox_exists(&self, name: &str) -> bool {
        MailboxName::new(name)
            .ok()
            .is_some_and(|n| self.store.mailbox_exists(self.user, &n).unwrap_or(false))
    }

    /// Looks the key up in the user's `.sieve/.dedup` (absent: not seen).
    fn duplicate_seen(&self, key: &str, seconds: u64) -> bool {
        seen(
            self.store,
            self.user,
            &duplicate_key(key),
            storage::internals::fsutil::now(),
            seconds,
        )
    }

    /// `include :personal` reads the user's `.sieve/NAME.sieve`,
    /// `include :global` the `--sieve-global-dir`'s (none: not found).
    fn include(&self, global: bool, name: &str) -> Result<Option<String>, String> {
        if !valid_script_name(name) {
            return Err("invalid script name".into());
        }
        let dir = if global {
            match self.global_dir {
                Some(d) => d.to_path_buf(),
                None => return Ok(None),
            }
        } else {
            self.store.root().join(self.user.encoded()).join(SIEVE_DIR)
        };
        match read_bounded(&dir.join(script_file(name)), MAX_SCRIPT_FILE) {
            Ok(b) => String::from_utf8(b)
                .map(Some)
                .map_err(|_| "not UTF-8".to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// The duplicate-log key of one multi-mailbox delivery: the message's
/// bytes and the user, so that Postfix's retry of the same queue file
/// finds what the crashed attempt already committed.
pub fn retry_key(user: &UserName, message: &[u8]) -> Key {
    let mut h = Blake2b::<U16>::new();
    h.update(b"sieve-delivery\0");
    h.update(user.as_str().as_bytes());
    h.update(b"\0");
    h.update(message);
    Key(h.finalize().into())
}

/// The duplicate window for multi-mailbox deliveries.
pub fn retry_window(settings: &Settings) -> u64 {
    settings.dedup_window.max(RETRY_WINDOW)
}

fn sender_address(sender: Option<&str>) -> String {
    sender
        .map(|s| {
            s.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .unwrap_or_default()
}

/// Runs the recipient's script, carries its plan out and, once that
/// succeeded, records its `duplicate` marks (RFC 7352 3).
#[allow(clippy::too_many_arguments)]
pub fn filter_and_store(
    settings: &Settings,
    group: Option<&crate::group::GroupCommit>,
    cache: &ScriptCache,
    script: &ActiveScript,
    target: &Target,
    message: &[u8],
    sender: Option<&str>,
    recipient: Option<&str>,
    sent_date: i64,
    message_id: Option<&str>,
) -> Result<Done, Failure> {
    let p = plan(settings, cache, script, target, message, sender, recipient)?;
    let user = &target.user;
    // Redirects first: a failure defers the whole delivery before
    // anything is stored, and the retry does not send one twice.
    if let Some(cmd) = &settings.sendmail {
        for a in &p.outbound {
            if let Action::Redirect { address, .. } = a {
                crate::outbound::redirect(
                    settings,
                    cmd,
                    user,
                    &p.recipient,
                    &p.sender,
                    message,
                    address,
                )?;
            }
        }
    }
    let done = execute(settings, group, p.plan, message, sent_date, message_id)?;
    if let Some(cmd) = &settings.sendmail
        && !matches!(done, Done::Rejected(_))
    {
        for a in p
            .outbound
            .iter()
            .filter(|a| matches!(a, Action::Vacation { .. }))
        {
            let parsed = mail_parser::MessageParser::default().parse_headers(message);
            let subject = parsed.as_ref().and_then(|m| m.subject());
            let id = parsed
                .as_ref()
                .and_then(|m| m.message_id())
                .map(|i| format!("<{i}>"));
            let refs = parsed.as_ref().map(|m| {
                m.references()
                    .as_text_list()
                    .map(|l| {
                        l.iter()
                            .map(|r| format!("<{r}>"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            });
            let original = crate::outbound::Original {
                subject,
                message_id: id.as_deref(),
                references: refs.as_deref().filter(|r| !r.is_empty()),
            };
            crate::outbound::vacation(
                settings,
                cmd,
                user,
                &p.recipient,
                &original,
                a,
                &crate::lmtp::hostname(),
            );
        }
    }
    if !p.duplicates.is_empty() {
        record_duplicates(&settings.store, user, &p.duplicates);
    }
    Ok(done)
}

/// What a script decided, with what the caller needs to carry it out.
pub struct Planned {
    pub plan: Plan,
    /// `duplicate` marks to record after a successful delivery.
    pub duplicates: Vec<sieve::DuplicateMark>,
    /// Redirects and vacation replies to send (with `--sendmail`).
    pub outbound: Vec<Action>,
    /// The envelope as the script saw it.
    pub recipient: String,
    pub sender: String,
}

/// The `duplicate` log of a user: `.sieve/.dedup` (FORMAT.md §9).
fn duplicate_log(store: &Store, user: &UserName) -> storage::Result<storage::dedup::DedupLog> {
    let root = storage::Dir::open_root(store.root())?;
    let home = root.open_dir(storage::internals::fsutil::os(user.encoded().as_bytes()))?;
    let dir = home.open_dir(storage::internals::fsutil::os(SIEVE_DIR.as_bytes()))?;
    storage::dedup::DedupLog::open_in(&dir, store.options().lock_timeout)
}

fn duplicate_key(key: &str) -> Key {
    let mut h = Blake2b::<U16>::new();
    h.update(b"sieve-duplicate\0");
    h.update(key.as_bytes());
    Key(h.finalize().into())
}

/// How long entries of a user's `.sieve/.dedup` are kept: the longest
/// period anything in it needs (vacation, FORMAT.md §9).
const TRACKING_WINDOW: u64 = crate::outbound::MAX_VACATION_PERIOD;

/// Whether `key` is in the user's `.sieve/.dedup` within `window` seconds
/// (a log that cannot be read counts as "no", logged).
pub fn seen(store: &Store, user: &UserName, key: &Key, now: i64, window: u64) -> bool {
    match duplicate_log(store, user).and_then(|mut log| Ok(log.lock()?.contains(key, now, window)))
    {
        Ok(seen) => seen,
        Err(e) => {
            tracing::warn!(user = %user, "sieve: tracking log: {e}; taken as not seen");
            false
        }
    }
}

/// Adds keys to the user's `.sieve/.dedup`; a failure is logged only (the
/// mail is stored or sent already).
pub fn remember(store: &Store, user: &UserName, keys: &[Key], now: i64) {
    let result = duplicate_log(store, user)
        .and_then(|mut log| log.lock()?.record(keys, now, TRACKING_WINDOW));
    if let Err(e) = result {
        tracing::warn!(user = %user, "sieve: could not update the tracking log: {e}");
    }
}

/// Records delivered messages' `duplicate` identities.
fn record_duplicates(store: &Store, user: &UserName, marks: &[sieve::DuplicateMark]) {
    let keys: Vec<Key> = marks.iter().map(|m| duplicate_key(&m.key)).collect();
    remember(store, user, &keys, storage::internals::fsutil::now());
}

/// Runs `user`'s active script on `message` (normalized, complete): the
/// plan and the `duplicate` marks to record after it is carried out.
/// Without an active script, the plan is the default target.
pub fn plan(
    settings: &Settings,
    cache: &ScriptCache,
    script: &ActiveScript,
    default: &Target,
    message: &[u8],
    sender: Option<&str>,
    recipient: Option<&str>,
) -> Result<Planned, Failure> {
    let user = &default.user;
    let recipient = recipient
        .map(|r| {
            r.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .unwrap_or_else(|| user.to_string());
    let sender = sender_address(sender);
    let planned = |plan: Plan| Planned {
        plan,
        duplicates: Vec::new(),
        outbound: Vec::new(),
        recipient: recipient.clone(),
        sender: sender.clone(),
    };
    let keep = || {
        Plan::Store(vec![Append {
            target: default.clone(),
            flags: settings.flags,
            keywords: settings.keywords.clone(),
            create: false,
        }])
    };
    let path = match script {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(user = %user, "sieve: {e}; implicit keep");
            return Ok(planned(keep()));
        }
    };
    let script = match cache.load(path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(user = %user, "sieve: script not used: {e}; implicit keep");
            return Ok(planned(keep()));
        }
    };
    if message.len() > MAX_FILTERED_MESSAGE {
        tracing::warn!(user = %user, size = message.len(), "sieve: message too large to filter; implicit keep");
        return Ok(planned(keep()));
    }
    let now = storage::internals::fsutil::now();
    let mut opts = RunOptions {
        now,
        // Read only by `date` and `currentdate` (RFC 5260), in this
        // script or one it includes.
        local_offset: if reads_dates(&script) {
            local_utc_offset(now)
        } else {
            0
        },
        ..RunOptions::default()
    };
    if reads_environment(&script) {
        let env = &mut opts.environment;
        env.reserve(6);
        env.insert("location".into(), "MDA".into());
        env.insert("phase".into(), "during".into());
        env.insert("name".into(), "mailstore deliver".into());
        env.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        env.insert("host".into(), crate::lmtp::hostname());
        if let Some((_, d)) = recipient.rsplit_once('@') {
            env.insert("domain".into(), d.to_string());
        }
    }
    // The envelope takes the strings, and gives them back after the run.
    let envelope = Envelope {
        from: sender,
        to: recipient,
    };
    let host = StoreHost {
        store: &settings.store,
        user,
        global_dir: settings.sieve_global_dir.as_deref(),
    };
    let outcome = script.evaluate(message, &envelope, &opts, &host);
    let Envelope {
        from: sender,
        to: recipient,
    } = envelope;
    if let Some(e) = &outcome.error {
        tracing::warn!(user = %user, script = %path.display(), "sieve: runtime error: {e}; implicit keep");
    }
    let (plan, outbound) = to_plan(settings, default, &outcome.actions, message, &recipient)?;
    Ok(Planned {
        plan,
        duplicates: outcome.duplicates,
        outbound,
        recipient,
        sender,
    })
}

/// Whether a run of `script` can read the environment (RFC 5183): it
/// requires `environment`, or may turn it on behind `ihave` (RFC 5463) or
/// in an included script (RFC 6609). Other scripts never look, so their
/// deliveries do not build the map.
fn reads_environment(script: &Script) -> bool {
    use sieve::Extension::{Environment, Ihave, Include};
    script.uses_any(&[Environment, Ihave, Include])
}

/// Whether a run of `script` can read the local zone's offset: it
/// requires `date` (RFC 5260), or may turn it on behind `ihave` or in an
/// included script (as [`reads_environment`]).
fn reads_dates(script: &Script) -> bool {
    use sieve::Extension::{Date, Ihave, Include};
    script.uses_any(&[Date, Ihave, Include])
}

/// The local zone's offset from UTC at `now`, in seconds (the process's
/// `TZ`, else /etc/localtime), for Sieve dates without `:zone`.
fn local_utc_offset(now: i64) -> i64 {
    let t: libc::time_t = now as libc::time_t;
    // SAFETY: localtime_r only writes the struct passed; a zeroed tm is valid.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if ok { tm.tm_gmtoff as i64 } else { 0 }
}

/// System flags and valid keywords of a flag list; others are dropped (logged).
fn convert_flags(user: &UserName, list: &[String]) -> (Flags, Vec<String>) {
    let mut flags = Flags::empty();
    let mut keywords: Vec<String> = Vec::new();
    for f in list {
        if f.starts_with('\\') {
            match Flags::from_name(f) {
                Some(x) => flags = flags.union(x),
                None => {
                    tracing::info!(user = %user, flag = %f, "sieve: unknown system flag ignored")
                }
            }
        } else if storage::validate_keyword(f).is_ok() {
            if !keywords.iter().any(|k| k.eq_ignore_ascii_case(f)) {
                keywords.push(f.clone());
            }
        } else {
            tracing::info!(user = %user, flag = %f, "sieve: invalid keyword ignored");
        }
    }
    (flags, keywords)
}

/// The appends of a run's actions, and the redirects and vacation replies
/// to send (only with `--sendmail`; without it a redirect keeps the message).
fn to_plan(
    settings: &Settings,
    default: &Target,
    actions: &[Action],
    message: &[u8],
    recipient: &str,
) -> Result<(Plan, Vec<Action>), Failure> {
    let mut outbound = Vec::new();
    let mut reject = None;
    let can_send = settings.sendmail.is_some();
    let user = &default.user;
    let mut out: Vec<Append> = Vec::new();
    let add = |out: &mut Vec<Append>, target: Target, list: &[String], create: bool| {
        let (mut flags, mut keywords) = convert_flags(user, list);
        flags = flags.union(settings.flags);
        for k in &settings.keywords {
            if !keywords.contains(k) {
                keywords.push(k.clone());
            }
        }
        match out.iter_mut().find(|a| a.target == target) {
            Some(a) => {
                a.create |= create;
                a.flags = a.flags.union(flags);
                for k in keywords {
                    if !a.keywords.contains(&k) {
                        a.keywords.push(k);
                    }
                }
            }
            None => out.push(Append {
                target,
                flags,
                keywords,
                create,
            }),
        }
    };
    let mut redirected = false;
    for a in actions {
        match a {
            Action::Reject { reason, .. } => reject = Some(reason.clone()),
            Action::Keep { flags } => add(&mut out, default.clone(), flags, false),
            Action::FileInto {
                mailbox,
                flags,
                create,
            } => {
                let create = *create || settings.autocreate;
                let target = match MailboxName::new(mailbox) {
                    // Created, if missing, when the append opens it
                    // (`execute`): no lookup here for the usual case.
                    Ok(name) if create => Some(name),
                    Ok(name) => {
                        let exists = settings
                            .store
                            .mailbox_exists(user, &name)
                            .map_err(|e| from_storage(&e))?;
                        if exists {
                            Some(name)
                        } else {
                            tracing::warn!(user = %user, mailbox = %mailbox, "sieve: fileinto: mailbox does not exist; kept in the default mailbox");
                            None
                        }
                    }
                    Err(e) => {
                        tracing::warn!(user = %user, mailbox = %mailbox, "sieve: fileinto: {e}; kept in the default mailbox");
                        None
                    }
                };
                let target = target.map_or_else(
                    || default.clone(),
                    |mailbox| Target {
                        user: user.clone(),
                        mailbox,
                    },
                );
                add(&mut out, target, flags, create);
            }
            Action::Redirect { address, .. } => {
                if !can_send {
                    redirected = true;
                    tracing::warn!(user = %user, to = %address, "sieve: redirect not carried out (no --sendmail configured); message kept");
                } else if crate::outbound::redirect_loops(message, recipient) {
                    redirected = true;
                    tracing::warn!(user = %user, to = %address, "sieve: redirect not carried out: the message was already redirected here (loop); message kept");
                } else {
                    outbound.push(a.clone());
                }
            }
            Action::Vacation { to, .. } => {
                if can_send {
                    outbound.push(a.clone());
                } else {
                    tracing::info!(user = %user, to = %to, "sieve: vacation reply not sent (no --sendmail configured)");
                }
            }
        }
    }
    if out.is_empty() && redirected {
        add(&mut out, default.clone(), &[], false);
    }
    let plan = if let Some(r) = reject {
        Plan::Reject(r)
    } else if out.is_empty() {
        Plan::Discard
    } else {
        Plan::Store(out)
    };
    Ok((plan, outbound))
}

/// What one recipient's filtered delivery did, for the log and the reply.
#[derive(Debug)]
pub enum Done {
    /// Appended: each mailbox with its UID (`None`: a duplicate, already there).
    Stored(Vec<(Target, Option<u32>)>),
    Rejected(String),
    Discarded,
}

/// Carries out a plan for a message held in memory.
///
/// One mailbox: staged and committed as any delivery (with the configured
/// duplicate suppression; in LMTP through `group`, the commit shared with
/// other sessions). Several: committed one after the other, each
/// with a key of the message and user in its duplicate log ([`retry_key`],
/// kept [`retry_window`]): if a crash or error stops the delivery after
/// some mailboxes were committed, Postfix's retry finds them in their logs
/// and appends only to the others. No mailbox gets the message twice,
/// except if the process dies in the instant between a commit and the
/// log record that follows it (docs/PROTOCOL.md).
pub fn execute(
    settings: &Settings,
    group: Option<&crate::group::GroupCommit>,
    plan: Plan,
    message: &[u8],
    sent_date: i64,
    message_id: Option<&str>,
) -> Result<Done, Failure> {
    let appends = match plan {
        Plan::Reject(r) => return Ok(Done::Rejected(r)),
        Plan::Discard => return Ok(Done::Discarded),
        Plan::Store(a) => a,
    };
    let user = appends[0].target.user.clone();
    settings.check_quota(&user, message.len() as u64 * appends.len() as u64)?;
    let several = appends.len() > 1;
    let (key, window) = if several {
        (Some(retry_key(&user, message)), retry_window(settings))
    } else {
        (settings.dedup_key(message_id), settings.dedup_window)
    };
    let mut done = Vec::with_capacity(appends.len());
    for a in appends {
        let store = &settings.store;
        let (user, name) = (&a.target.user, &a.target.mailbox);
        let mut mbox = match store.open_mailbox(user, name) {
            Err(storage::Error::NoSuchMailbox(_)) if a.create => store
                .ensure_mailbox(user, name)
                .and_then(|_| store.open_mailbox(user, name)),
            r => r,
        }
        .map_err(|e| from_storage(&e))?;
        let mut opts = settings.append_options();
        opts.flags = a.flags;
        opts.keywords = a.keywords.clone();
        opts.sent_date = sent_date;
        // LMTP, one mailbox: share the commit with other sessions (as
        // without a script); its window is the configured one.
        let in_flight = group.filter(|_| !several).map(|g| g.enter(&a.target));
        if let Some(f) = &in_flight {
            mbox.set_unordered_appends(f.others == 0);
        }
        let staged = mbox.stage(message, opts).map_err(|e| from_storage(&e))?;
        let sub = crate::group::Submission {
            staged: vec![staged],
            key,
        };
        let stored = match group.filter(|_| !several) {
            Some(g) => g.commit(&a.target, &mut mbox, sub)?,
            None => crate::group::commit_batch(&mut mbox, window, vec![sub])
                .pop()
                .expect("one result per submission")?,
        };
        drop(in_flight);
        storage::internals::fault::point("sieve.between_mailboxes")
            .map_err(|e| from_storage(&e))?;
        done.push((
            a.target,
            match stored {
                crate::group::Stored::Uids(u) => u.first().copied(),
                crate::group::Stored::Duplicate => None,
            },
        ));
    }
    Ok(Done::Stored(done))
}

/// A user's active script as `.sieve/active` names it, read once per
/// delivery: its path, or why `active` cannot be used ([`plan`] then logs
/// that and keeps the message).
pub type ActiveScript = Result<PathBuf, String>;

/// `user`'s active script; `None` when they have none.
pub fn active_script(store: &Store, user: &UserName) -> Option<ActiveScript> {
    active_script_path(store, user).transpose()
}

/// One-shot delivery through the user's active script: the normalized
/// message is read into memory (up to [`MAX_FILTERED_MESSAGE`]; a larger
/// one is streamed into the default mailbox unfiltered, logged), the
/// script's plan carried out. A rejection is exit 77 (EX_NOPERM) with
/// `5.7.1 REASON` on stderr, as `dovecot-lda -e` does; nothing is stored.
pub fn deliver_one_shot(
    settings: &Settings,
    cache: &ScriptCache,
    script: &ActiveScript,
    target: &Target,
    input: impl Read,
    sender: Option<&str>,
    recipient: Option<&str>,
) -> Result<(), Failure> {
    let start = std::time::Instant::now();
    let mut norm = crate::input::Normalizer::new(input, true, sender);
    let mut message = Vec::new();
    let limit = settings.max_size.map_or(MAX_FILTERED_MESSAGE, |m| {
        (m as usize).min(MAX_FILTERED_MESSAGE)
    });
    let read = (&mut norm).take(limit as u64 + 1).read_to_end(&mut message);
    if norm.bad == Some(crate::input::BadInput::Nul) {
        return Err(crate::delivery::nul_failure());
    }
    read.map_err(|e| Failure::temp("4.3.0", format!("read message: {e}")))?;
    if norm.content_bytes == 0 {
        return Err(crate::delivery::empty_failure());
    }
    if message.len() > limit {
        if let Some(m) = settings.max_size
            && message.len() as u64 > m
        {
            return Err(from_storage(&storage::Error::TooLarge {
                size: message.len() as u64,
                limit: m,
            }));
        }
        tracing::warn!(user = %target.user, "sieve: message larger than {MAX_FILTERED_MESSAGE} bytes, not filtered; implicit keep");
        // Already normalized: no second Return-Path (sender None).
        let rest = std::io::Cursor::new(message).chain(norm);
        let d = settings.deliver_stream(target, rest, None)?;
        tracing::info!(user = %target.user, mailbox = %target.mailbox, uid = d.uid, "delivered");
        return Ok(());
    }
    norm.headers.finish();
    let sent_date = norm
        .headers
        .date
        .as_deref()
        .and_then(storage::sent_date::parse)
        .unwrap_or(0);
    let message_id = norm.headers.message_id.take();
    let done = filter_and_store(
        settings,
        None,
        cache,
        script,
        target,
        &message,
        sender,
        recipient,
        sent_date,
        message_id.as_deref(),
    )?;
    log_done(
        &target.user,
        &done,
        message.len(),
        message_id.as_deref(),
        start,
    );
    match done {
        Done::Rejected(reason) => Err(Failure::new(
            crate::status::EX_NOPERM,
            "5.7.1",
            reject_text(&reason),
        )),
        _ => Ok(()),
    }
}

/// The rejection text for stderr or the LMTP reply: one line, bounded.
pub fn reject_text(reason: &str) -> String {
    let mut t: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if t.is_empty() {
        t = "rejected by the recipient's Sieve filter".into();
    }
    if t.len() > 400 {
        let mut end = 400;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        t.truncate(end);
    }
    t
}

/// The log lines of a filtered delivery.
pub fn log_done(
    user: &UserName,
    done: &Done,
    size: usize,
    message_id: Option<&str>,
    start: std::time::Instant,
) {
    let message_id = message_id.unwrap_or("");
    let elapsed_ms = format!("{:.3}", start.elapsed().as_secs_f64() * 1000.0);
    let elapsed_ms = elapsed_ms.as_str();
    match done {
        Done::Stored(list) => {
            for (t, uid) in list {
                match uid {
                    Some(uid) => {
                        tracing::info!(user = %user, mailbox = %t.mailbox, uid, size, message_id, elapsed_ms = %elapsed_ms, "delivered")
                    }
                    None => {
                        tracing::info!(user = %user, mailbox = %t.mailbox, message_id, elapsed_ms = %elapsed_ms, "duplicate suppressed")
                    }
                }
            }
        }
        // One-shot: the exit's status line says it (nothing may come before it on stderr).
        Done::Rejected(_) => {}
        Done::Discarded => tracing::info!(user = %user, message_id, "discarded by sieve"),
    }
}
