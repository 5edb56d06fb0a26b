//! Machinery of the all-processes campaign (`tests/tests/reliability_campaign.rs`,
//! issue 15): every kind of process that writes the store running at once
//! against one user, SIGKILLed at random, with IMAP watchers that hold the
//! store to its promise while it runs and a final accounting after it.
//!
//! The pieces:
//! - [`Procs`]: every child process the campaign starts that may be killed,
//!   by kind. A child is reaped only after it left the table (`waitid`
//!   with `WNOWAIT` first), so the killer never signals a reused PID; a
//!   kill is counted when the reaper sees the child died of SIGKILL.
//! - [`Ledger`]: what was sent (every message carries a unique token, and
//!   its exact stored bytes are a function of the token: [`expected`]),
//!   what was acknowledged, the intents actors log *before* an EXPUNGE or
//!   a MOVE, what the watchers saw under every (mailbox, UIDVALIDITY, UID),
//!   and the problems found.
//! - Actors: one-shot `deliver` loops, a `deliver --lmtp` server (restarted
//!   when killed) with LMTP clients (this test binary re-executed, see
//!   [`lmtp_client_main`]), IMAP sessions (`imapd-check serve --stdio`)
//!   doing STORE, STORE \Deleted + UID EXPUNGE, UID MOVE and APPEND, and
//!   admin workers running `idx-admin repack|reconstruct|recover`, some
//!   with a test-only pause fault point to widen the race windows.
//! - [`Watcher`]: an IMAP session per mailbox that mirrors the server's
//!   sequence numbers, records every message's content, and flags a UID
//!   whose content changes, a message that leaves its view without an
//!   intent covering it, UIDs that do not ascend; it starts a fresh session
//!   now and then (a live session never shows a reused UID below its
//!   floor; a fresh one does).
//! - [`final_check`]: after everything stopped and `idx-admin recover`:
//!   verify, every acknowledged message present exactly once with its
//!   bytes, nothing seen lost, nothing twice.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use storage::{MailboxName, Options, Store, UserName};

use crate::bin;
use crate::reliability::{Rng, crlf, deliver_cmd, token_message};

pub const USER: &str = "campaign";
pub const MAILBOXES: &[&str] = &["INBOX", "Archive"];
/// The envelope sender of LMTP transactions; deliver puts it first.
pub const SENDER: &str = "sender@example.org";
/// A child of a kind that is not a session (deliver, idx-admin) running
/// longer than this is a hang.
const HANG: Duration = Duration::from_secs(120);
/// Longest wait for one IMAP or LMTP reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

// ------------------------------------------------------------ messages

/// The message sent for `token` (its Message-ID and last body line carry
/// the token). Mostly small; one in 23 is over 64 KiB.
pub fn message(token: &str) -> Vec<u8> {
    let h = crc32fast::hash(token.as_bytes());
    let lines = if h.is_multiple_of(23) {
        2500 + (h % 500) as usize
    } else {
        (h % 40) as usize
    };
    token_message(token, lines)
}

/// What the store must hold for `token`, from the way it came in (the
/// token's first letter): `d` one-shot deliver (bare LF to CRLF), `l` LMTP
/// (Return-Path first, CRLF on the wire), `a` IMAP APPEND (sent as CRLF).
pub fn expected(token: &str) -> Option<Vec<u8>> {
    match token.as_bytes().first()? {
        b'd' | b'a' => Some(crlf(&message(token))),
        b'l' => {
            let mut v = format!("Return-Path: <{SENDER}>\r\n").into_bytes();
            v.extend_from_slice(&crlf(&message(token)));
            Some(v)
        }
        _ => None,
    }
}

/// The token from a `Message-ID: <TOKEN@reliability.test>` header block.
fn token_of_header(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let start = text.find('<')? + 1;
    let end = start + text[start..].find("@reliability.test>")?;
    Some(text[start..end].to_string())
}

// ----------------------------------------------------------- processes

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Deliver,
    LmtpServer,
    LmtpClient,
    Imap,
    Repack,
    Reconstruct,
    Recover,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Deliver,
        Kind::LmtpServer,
        Kind::LmtpClient,
        Kind::Imap,
        Kind::Repack,
        Kind::Reconstruct,
        Kind::Recover,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deliver => "deliver",
            Kind::LmtpServer => "lmtp-server",
            Kind::LmtpClient => "lmtp-client",
            Kind::Imap => "imap",
            Kind::Repack => "repack",
            Kind::Reconstruct => "reconstruct",
            Kind::Recover => "recover",
        }
    }
    /// How often the killer picks this kind when one is running.
    fn weight(self) -> u64 {
        match self {
            Kind::Deliver => 4,
            Kind::LmtpServer => 1,
            Kind::LmtpClient => 2,
            Kind::Imap => 3,
            Kind::Repack | Kind::Reconstruct | Kind::Recover => 2,
        }
    }
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Whether our child `pid` has exited, without reaping it (`WNOWAIT`):
/// a zombie keeps its PID, so the killer cannot hit a reused one. With
/// `block`, waits for the exit.
fn wait_exited(pid: u32, block: bool) -> bool {
    let flags = libc::WEXITED | libc::WNOWAIT | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: waitid writes only into `info`.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags) };
        if r == 0 {
            // SAFETY: si_pid is set (non-zero) when a child was found.
            return unsafe { info.si_pid() } != 0;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return false;
        }
    }
}

struct Entry {
    kind: Kind,
    started: Instant,
    hung: bool,
}

/// The killable children, and what became of them.
#[derive(Default)]
pub struct Procs {
    live: Mutex<HashMap<u32, Entry>>,
    kills: Mutex<BTreeMap<Kind, u64>>,
    runs: Mutex<BTreeMap<Kind, u64>>,
}

impl Procs {
    /// Spawns `cmd`; a `kind` makes it a target of the killer.
    pub fn spawn(&self, cmd: &mut Command, kind: Option<Kind>) -> Child {
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        if let Some(kind) = kind {
            self.live.lock().unwrap().insert(
                child.id(),
                Entry {
                    kind,
                    started: Instant::now(),
                    hung: false,
                },
            );
            *self.runs.lock().unwrap().entry(kind).or_default() += 1;
        }
        child
    }

    /// Waits for `child` to end, takes it out of the table while it is
    /// still a zombie (its PID cannot be reused yet), then reaps it.
    /// Returns the status and whether the campaign's killer ended it.
    pub fn reap(&self, child: &mut Child) -> (ExitStatus, bool) {
        let pid = child.id();
        wait_exited(pid, true);
        let entry = self.live.lock().unwrap().remove(&pid);
        let status = child.wait().expect("wait");
        let killed = status.signal() == Some(libc::SIGKILL);
        let by_killer = match entry {
            Some(e) if killed && !e.hung => {
                *self.kills.lock().unwrap().entry(e.kind).or_default() += 1;
                true
            }
            _ => false,
        };
        (status, by_killer)
    }

    /// Reads the child's stderr to its end, then [`Procs::reap`].
    pub fn reap_with_stderr(&self, child: &mut Child) -> (ExitStatus, bool, String) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let (status, by_killer) = self.reap(child);
        (status, by_killer, err)
    }

    /// SIGKILLs one running child of a kind picked by weight; returns it.
    pub fn kill_random(&self, rng: &mut Rng) -> Option<Kind> {
        let live = self.live.lock().unwrap();
        let mut by_kind: BTreeMap<Kind, Vec<u32>> = BTreeMap::new();
        for (pid, e) in live.iter() {
            if !e.hung {
                by_kind.entry(e.kind).or_default().push(*pid);
            }
        }
        let total: u64 = by_kind.keys().map(|k| k.weight()).sum();
        if total == 0 {
            return None;
        }
        let mut pick = rng.below(total);
        for (kind, pids) in by_kind.iter_mut() {
            if pick < kind.weight() {
                pids.sort_unstable();
                let pid = pids[rng.below(pids.len() as u64) as usize];
                sigkill(pid);
                return Some(*kind);
            }
            pick -= kind.weight();
        }
        None
    }

    /// Kills (not counted as a campaign kill) every child of a one-shot
    /// kind running longer than [`HANG`]; returns what it found.
    pub fn kill_hung(&self) -> Vec<String> {
        let mut live = self.live.lock().unwrap();
        let mut out = Vec::new();
        for (pid, e) in live.iter_mut() {
            let one_shot = !matches!(e.kind, Kind::LmtpServer | Kind::LmtpClient | Kind::Imap);
            if one_shot && !e.hung && e.started.elapsed() > HANG {
                e.hung = true;
                out.push(format!("{} pid {pid} ran for {:?}", e.kind.name(), HANG));
                sigkill(*pid);
            }
        }
        out
    }

    /// Ends a child at the end of the campaign: out of the table first, so
    /// the kill is not counted.
    pub fn stop_kill(&self, pid: u32) {
        self.live.lock().unwrap().remove(&pid);
        sigkill(pid);
    }

    pub fn kills(&self) -> BTreeMap<Kind, u64> {
        self.kills.lock().unwrap().clone()
    }
    pub fn total_kills(&self) -> u64 {
        self.kills.lock().unwrap().values().sum()
    }
    pub fn runs(&self) -> BTreeMap<Kind, u64> {
        self.runs.lock().unwrap().clone()
    }
}

// -------------------------------------------------------------- ledger

#[derive(Clone, Debug)]
enum Intent {
    Expunge { mailbox: String },
    Move { from: String, to: String },
}

#[derive(Clone, Debug)]
struct Sent {
    mailbox: String,
    acked: bool,
}

/// What a watcher learned about one (mailbox, UIDVALIDITY, UID).
#[derive(Clone, Debug)]
struct Seen {
    token: Option<String>,
    size: u64,
    crc: Option<u32>,
    /// Reported as changed already (each UID counts once).
    changed: bool,
}

#[derive(Default)]
struct SeenTable {
    by_uid: HashMap<(String, u32, u32), Seen>,
    max_uid: HashMap<(String, u32), u32>,
    tokens: HashSet<String>,
    uidvalidity: HashMap<String, u32>,
}

/// Kinds of problem: each one is a broken promise (or a harness bug) and
/// fails the campaign.
pub const FAILURES: &[&str] = &[
    "lost",
    "keyword-lost",
    "changed",
    "duplicated",
    "vanished",
    "seen-then-lost",
    "wrong-bytes",
    "uid-not-ascending",
    "unknown-message",
    "uidvalidity-changed",
    "view-inconsistent",
    "verify",
    "recover",
    "hang",
    "crash",
    "harness",
];

/// The shared record of the campaign.
#[derive(Default)]
pub struct Ledger {
    sent: Mutex<HashMap<String, Sent>>,
    intents: Mutex<HashMap<String, Vec<Intent>>>,
    seen: Mutex<SeenTable>,
    /// (token, actor) -> the state of that actor's own keyword after its
    /// last acknowledged STORE, `None` after one whose outcome is unknown.
    keywords: Mutex<HashMap<(String, usize), Option<bool>>>,
    /// A timeline of admin runs and keyword STOREs, for problem reports
    /// (written to `events.log` with `CAMPAIGN_KEEP`).
    events: Mutex<Vec<String>>,
    /// (mailbox, UIDVALIDITY, UID) reported vanished (each counts once).
    vanished: Mutex<HashSet<(String, u32, u32)>>,
    problems: Mutex<BTreeMap<&'static str, u64>>,
    samples: Mutex<Vec<String>>,
    stats: Mutex<BTreeMap<String, u64>>,
}

impl Ledger {
    pub fn sent(&self, token: &str, mailbox: &str) {
        let old = self.sent.lock().unwrap().insert(
            token.to_string(),
            Sent {
                mailbox: mailbox.to_string(),
                acked: false,
            },
        );
        if old.is_some() {
            self.problem(
                "harness",
                format!("token {token} sent twice: the campaign's bookkeeping is wrong"),
            );
        }
    }

    pub fn ack(&self, token: &str) {
        if let Some(s) = self.sent.lock().unwrap().get_mut(token) {
            s.acked = true;
        } else {
            self.problem(
                "unknown-message",
                format!("{token} acknowledged but never sent"),
            );
        }
    }

    /// Logged before the command that may remove `token` from `mailbox`.
    pub fn intend_expunge(&self, token: &str, mailbox: &str) {
        self.intend(
            token,
            Intent::Expunge {
                mailbox: mailbox.to_string(),
            },
        );
    }

    /// Logged before a UID MOVE of `token`.
    pub fn intend_move(&self, token: &str, from: &str, to: &str) {
        self.intend(
            token,
            Intent::Move {
                from: from.to_string(),
                to: to.to_string(),
            },
        );
    }

    fn intend(&self, token: &str, i: Intent) {
        self.intents
            .lock()
            .unwrap()
            .entry(token.to_string())
            .or_default()
            .push(i);
    }

    /// Before a STORE of `actor`'s own keyword on `tokens` (outcome
    /// unknown until `keyword_done`).
    /// Adds a line to the timeline, stamped with the time since the start.
    pub fn event(&self, line: String) {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        let t = T0.get_or_init(Instant::now).elapsed().as_secs_f64();
        self.events.lock().unwrap().push(format!("{t:10.3} {line}"));
    }

    /// Writes the timeline to `path`.
    pub fn write_events(&self, path: &Path) {
        let _ = std::fs::write(path, self.events.lock().unwrap().join("\n"));
    }

    /// The timeline lines that mention `needle`.
    fn events_of(&self, needle: &str) -> Vec<String> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    pub fn keyword_sent(&self, tokens: &[String], actor: usize) {
        let mut k = self.keywords.lock().unwrap();
        for t in tokens {
            k.insert((t.clone(), actor), None);
        }
    }

    /// The STORE was answered OK: the keyword is now `set` on `tokens`.
    pub fn keyword_done(&self, tokens: &[String], actor: usize, set: bool) {
        let mut k = self.keywords.lock().unwrap();
        for t in tokens {
            k.insert((t.clone(), actor), Some(set));
        }
    }

    /// Whether an intent logged for `token` satisfies `pred`.
    fn any_intent(&self, token: &str, pred: impl Fn(&Intent) -> bool) -> bool {
        self.intents
            .lock()
            .unwrap()
            .get(token)
            .is_some_and(|v| v.iter().any(pred))
    }

    fn has_move_intent(&self, token: &str) -> bool {
        self.any_intent(token, |i| matches!(i, Intent::Move { .. }))
    }

    /// A user asked for `token` to leave `mailbox` (EXPUNGE or MOVE).
    fn covered(&self, token: &str, mailbox: &str) -> bool {
        self.any_intent(token, |i| match i {
            Intent::Expunge { mailbox: m } => m == mailbox,
            Intent::Move { from, .. } => from == mailbox,
        })
    }

    /// The intents logged for `token`, for problem reports.
    fn intents_of(&self, token: &str) -> String {
        let v = self
            .intents
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .unwrap_or_default();
        let parts: Vec<String> = v
            .iter()
            .map(|i| match i {
                Intent::Expunge { mailbox } => format!("expunge from {mailbox}"),
                Intent::Move { from, to } => format!("move {from} -> {to}"),
            })
            .collect();
        if parts.is_empty() {
            "no intents".to_string()
        } else {
            format!("intents: {}", parts.join(", "))
        }
    }

    fn has_expunge_intent(&self, token: &str) -> bool {
        self.any_intent(token, |i| matches!(i, Intent::Expunge { .. }))
    }

    pub fn stat(&self, key: impl Into<String>) {
        *self.stats.lock().unwrap().entry(key.into()).or_default() += 1;
    }

    pub fn problem(&self, kind: &'static str, detail: String) {
        *self.problems.lock().unwrap().entry(kind).or_default() += 1;
        let n = self.count(kind);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 100 && n <= 12 {
            eprintln!("campaign problem: {kind}: {detail}");
            s.push(format!("{kind}: {detail}"));
        }
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.problems
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    pub fn problems(&self) -> BTreeMap<&'static str, u64> {
        self.problems.lock().unwrap().clone()
    }
    pub fn samples(&self) -> Vec<String> {
        self.samples.lock().unwrap().clone()
    }
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.lock().unwrap().clone()
    }

    fn token_at(&self, mailbox: &str, v: u32, uid: u32) -> Option<String> {
        self.seen
            .lock()
            .unwrap()
            .by_uid
            .get(&(mailbox.to_string(), v, uid))
            .and_then(|s| s.token.clone())
    }

    fn note_uidvalidity(&self, mailbox: &str, v: u32) {
        let old = self
            .seen
            .lock()
            .unwrap()
            .uidvalidity
            .insert(mailbox.to_string(), v);
        if let Some(old) = old
            && old != v
        {
            self.problem(
                "uidvalidity-changed",
                format!("{mailbox}: UIDVALIDITY {old} -> {v}"),
            );
        }
    }

    /// Records what a session saw under (mailbox, v, uid): its size, and
    /// the full body or only the token from its Message-ID.
    fn observe(
        &self,
        who: &str,
        (mailbox, v, uid): (&str, u32, u32),
        size: Option<u64>,
        body: Option<&[u8]>,
        header_token: Option<String>,
    ) {
        let token = match body {
            Some(b) => crate::reliability::token_of(b),
            None => header_token,
        };
        let size = size.or(body.map(|b| b.len() as u64));
        let crc = body.map(crc32fast::hash);
        if let (Some(b), Some(t)) = (body, token.as_ref()) {
            match expected(t) {
                Some(want) if want == b => {}
                Some(want) => self.problem(
                    "wrong-bytes",
                    format!(
                        "{who}: {mailbox} UID {uid} ({t}): served {} bytes, {} expected",
                        b.len(),
                        want.len()
                    ),
                ),
                None => self.problem(
                    "unknown-message",
                    format!("{who}: {mailbox} UID {uid}: unknown token {t}"),
                ),
            }
        }
        if body.is_some() && token.is_none() {
            self.problem(
                "unknown-message",
                format!("{who}: {mailbox} UID {uid}: a message without a token"),
            );
        }
        let mut late = None;
        let mut changed = None;
        {
            let mut seen = self.seen.lock().unwrap();
            let key = (mailbox.to_string(), v, uid);
            if let Some(t) = &token {
                seen.tokens.insert(t.clone());
            }
            match seen.by_uid.get_mut(&key) {
                None => {
                    let max = seen.max_uid.entry((mailbox.to_string(), v)).or_default();
                    if uid < *max {
                        late = Some(*max);
                    } else {
                        *max = uid;
                    }
                    seen.by_uid.insert(
                        key,
                        Seen {
                            token: token.clone(),
                            size: size.unwrap_or(0),
                            crc,
                            changed: false,
                        },
                    );
                }
                Some(s) => {
                    let mut why = Vec::new();
                    if let (Some(a), Some(b)) = (&s.token, &token)
                        && a != b
                    {
                        why.push(format!("token {a} -> {b}"));
                    }
                    if let Some(sz) = size
                        && s.token.is_some()
                        && sz != s.size
                    {
                        why.push(format!("size {} -> {sz}", s.size));
                    }
                    if let (Some(a), Some(b)) = (s.crc, crc)
                        && a != b
                    {
                        why.push(format!("crc {a:08x} -> {b:08x}"));
                    }
                    if s.token.is_none() && token.is_some() {
                        s.token = token.clone();
                        s.size = size.unwrap_or(s.size);
                    }
                    if s.crc.is_none() {
                        s.crc = crc;
                    }
                    if !why.is_empty() && !s.changed {
                        s.changed = true;
                        changed = Some(why.join(", "));
                    }
                }
            }
        }
        if let Some(max) = late
            && !token.as_ref().is_some_and(|t| self.covered(t, mailbox))
        {
            let acked = token.as_ref().and_then(|t| {
                self.sent.lock().unwrap().get(t).map(|s| {
                    if s.acked {
                        "acknowledged"
                    } else {
                        "not acknowledged"
                    }
                })
            });
            // (A message expunged right after it arrived may be fetched
            // late by a session that still holds it: only a message
            // nobody asked to remove counts.)
            self.problem(
                "uid-not-ascending",
                format!(
                    "{who}: {mailbox} UID {uid} ({token:?}, {acked:?}) first seen after UID {max} (UIDVALIDITY {v}); {:?}",
                    token.as_ref().map(|t| self.events_of(&format!("\"{t}\"")))
                ),
            );
        }
        if let Some(why) = changed {
            self.problem(
                "changed",
                format!("{who}: {mailbox} UIDVALIDITY {v} UID {uid} changed content: {why}"),
            );
        }
    }

    /// A message left a session's view (an EXPUNGE, or missing from a
    /// fresh session): some user must have asked for it.
    fn removed(&self, who: &str, mailbox: &str, v: u32, uid: u32, how: &str) {
        let Some(token) = self.token_at(mailbox, v, uid) else {
            return;
        };
        if !self.covered(&token, mailbox)
            && self
                .vanished
                .lock()
                .unwrap()
                .insert((mailbox.to_string(), v, uid))
        {
            let acked = self
                .sent
                .lock()
                .unwrap()
                .get(&token)
                .is_some_and(|s| s.acked);
            self.problem(
                "vanished",
                format!(
                    "{who}: {mailbox} UID {uid} ({token}, {}) {how} without an EXPUNGE or MOVE asked for it",
                    if acked {
                        "acknowledged"
                    } else {
                        "not acknowledged"
                    }
                ),
            );
        }
    }
}

// ---------------------------------------------------------------- IMAP

/// One response: its text with literals left out (`{N}` stays), and the
/// literals in order.
#[derive(Debug, Default)]
pub struct Resp {
    pub text: String,
    pub lits: Vec<Vec<u8>>,
}

enum Untagged {
    Expunge(u32),
    Exists(u32),
    Fetch {
        seq: u32,
        uid: Option<u32>,
        size: Option<u64>,
        body: Option<Vec<u8>>,
        header: Option<Vec<u8>>,
    },
    UidValidity(u32),
    Bye,
    Other,
}

fn number_after(text: &str, key: &str) -> Option<u64> {
    let i = text.find(key)? + key.len();
    text[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Resp {
    fn parse(&self) -> Untagged {
        let t = self.text.as_str();
        let Some(rest) = t.strip_prefix("* ") else {
            return Untagged::Other;
        };
        if rest.starts_with("BYE") {
            return Untagged::Bye;
        }
        if let Some(v) = number_after(rest, "[UIDVALIDITY ") {
            return Untagged::UidValidity(v as u32);
        }
        let mut words = rest.splitn(3, ' ');
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            return Untagged::Other;
        };
        let Ok(n) = n.parse::<u32>() else {
            return Untagged::Other;
        };
        match what.trim_end() {
            "EXPUNGE" => Untagged::Expunge(n),
            "EXISTS" => Untagged::Exists(n),
            "FETCH" => {
                let mut body = None;
                let mut header = None;
                if let Some(l) = self.lits.first() {
                    if rest.contains("BODY[] {") {
                        body = Some(l.clone());
                    } else if rest.contains("BODY[HEADER") {
                        header = Some(l.clone());
                    }
                }
                Untagged::Fetch {
                    seq: n,
                    uid: number_after(rest, "UID ").map(|u| u as u32),
                    size: number_after(rest, "RFC822.SIZE "),
                    body,
                    header,
                }
            }
            _ => Untagged::Other,
        }
    }
}

/// A session that ended before its greeting (reaped already).
#[derive(Debug)]
pub struct SpawnError {
    pub err: io::Error,
    pub status: ExitStatus,
    pub by_killer: bool,
}

/// `imapd-check serve --stdio` for the campaign user, driven over pipes.
pub struct Imap {
    pub child: Child,
    w: ChildStdin,
    r: ChildStdout,
    buf: Vec<u8>,
    pos: usize,
    n: u64,
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "session closed")
}

impl Imap {
    pub fn spawn(
        procs: &Procs,
        spool: &Path,
        kind: Option<Kind>,
        log: &Path,
    ) -> Result<Imap, SpawnError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("session log");
        let mut cmd = store_cmd("imapd-check");
        cmd.args(["serve", "--stdio", "-d", USER, "--spool"])
            .arg(spool)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = procs.spawn(&mut cmd, kind);
        let w = child.stdin.take().expect("stdin");
        let r = child.stdout.take().expect("stdout");
        let mut i = Imap {
            child,
            w,
            r,
            buf: Vec::new(),
            pos: 0,
            n: 0,
        };
        let err = match i.read_resp() {
            Ok(g) if g.text.starts_with("* PREAUTH") => return Ok(i),
            Ok(g) => io::Error::other(format!("greeting: {}", g.text)),
            Err(e) => e,
        };
        let (status, by_killer) = i.finish(procs);
        Err(SpawnError {
            err,
            status,
            by_killer,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        }
        let mut pfd = libc::pollfd {
            fd: self.r.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, REPLY_TIMEOUT.as_millis() as i32) };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no reply from the IMAP session",
            ));
        }
        let mut chunk = [0u8; 65536];
        let got = self.r.read(&mut chunk)?;
        if got == 0 {
            return Err(eof());
        }
        self.buf.extend_from_slice(&chunk[..got]);
        Ok(())
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.pos..].iter().position(|&b| b == b'\n') {
                let line = self.buf[self.pos..self.pos + i + 1].to_vec();
                self.pos += i + 1;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() - self.pos < n {
            self.fill()?;
        }
        let v = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(v)
    }

    pub fn read_resp(&mut self) -> io::Result<Resp> {
        let mut r = Resp::default();
        loop {
            let line = self.read_line()?;
            let s = String::from_utf8_lossy(&line);
            let s = s.trim_end_matches(['\r', '\n']);
            r.text.push_str(s);
            // A literal: `{N}` at the end of the line.
            let lit = s
                .strip_suffix('}')
                .and_then(|p| p.rfind('{').map(|i| &p[i + 1..]))
                .and_then(|n| n.parse::<usize>().ok());
            match lit {
                Some(n) => {
                    let bytes = self.read_n(n)?;
                    r.lits.push(bytes);
                }
                None => return Ok(r),
            }
        }
    }

    /// Sends `c` (with `literal` appended as a LITERAL+ literal when
    /// given); returns the untagged responses and the tagged status line.
    pub fn cmd_lit(&mut self, c: &str, literal: Option<&[u8]>) -> io::Result<(Vec<Resp>, String)> {
        self.n += 1;
        let tag = format!("c{}", self.n);
        let mut out = format!("{tag} {c}").into_bytes();
        if let Some(l) = literal {
            out.extend_from_slice(format!(" {{{}+}}\r\n", l.len()).as_bytes());
            out.extend_from_slice(l);
        }
        out.extend_from_slice(b"\r\n");
        self.w.write_all(&out)?;
        self.w.flush()?;
        let mut lines = Vec::new();
        let prefix = format!("{tag} ");
        loop {
            let r = self.read_resp()?;
            if let Some(rest) = r.text.strip_prefix(&prefix) {
                return Ok((lines, rest.to_string()));
            }
            lines.push(r);
        }
    }

    pub fn cmd(&mut self, c: &str) -> io::Result<(Vec<Resp>, String)> {
        self.cmd_lit(c, None)
    }

    /// LOGOUT, close, reap.
    pub fn logout(mut self, procs: &Procs) -> (ExitStatus, bool) {
        let _ = self.cmd("LOGOUT");
        drop(self.w);
        procs.reap(&mut self.child)
    }

    /// After an I/O error: make sure it is gone, then reap.
    pub fn finish(mut self, procs: &Procs) -> (ExitStatus, bool) {
        drop(self.w);
        // A session that is still running after an error (a timeout) is
        // killed; one that died already (its pipe closes a moment before
        // it becomes a zombie) is only reaped. Never `try_wait`: that
        // would reap it while the killer may still pick its PID.
        let pid = self.child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !wait_exited(pid, false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if !wait_exited(pid, false) {
            procs.stop_kill(pid);
        }
        procs.reap(&mut self.child)
    }
}

/// A workspace binary with a clean environment: no fault points, no
/// spool or configuration from outside.
fn store_cmd(name: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env_remove("MAILSTORE_TEST_FAULT")
        .env_remove("MAILSTORE_SPOOL")
        .env("MAILSTORE_CONFIG", "/dev/null");
    c
}

fn uid_set(uids: &[u32]) -> String {
    uids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The tail of a log file, for problem reports.
fn tail(path: &Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

// ------------------------------------------------------------ watchers

/// A message of a session's view: its UID once fetched, and the highest
/// UID the session knew when it appeared.
#[derive(Clone, Copy, Debug)]
struct Slot {
    uid: Option<u32>,
    above: u32,
    /// Its body was fetched in this session (an unsolicited FETCH of its
    /// flags may give the UID first).
    fetched: bool,
}

/// An IMAP session that mirrors the server's view of one mailbox and
/// checks it (module documentation).
pub struct Watcher {
    pub name: String,
    mailbox: String,
    spool: PathBuf,
    log: PathBuf,
    ledger: Arc<Ledger>,
    procs: Arc<Procs>,
    conn: Option<Imap>,
    v: u32,
    /// UID by sequence number; `None` until fetched.
    list: Vec<Slot>,
    /// Highest UID this session has known.
    floor: u32,
    /// The last session's UIDVALIDITY and UIDs, checked by the next one.
    prev: Option<(u32, Vec<u32>)>,
    started: Instant,
    session_len: Duration,
    last_sweep: Instant,
    rng: Rng,
}

impl Watcher {
    pub fn new(
        name: String,
        mailbox: &str,
        spool: &Path,
        log: PathBuf,
        ledger: Arc<Ledger>,
        procs: Arc<Procs>,
        seed: u64,
    ) -> Watcher {
        Watcher {
            name,
            mailbox: mailbox.to_string(),
            spool: spool.to_path_buf(),
            log,
            ledger,
            procs,
            conn: None,
            v: 0,
            list: Vec::new(),
            floor: 0,
            prev: None,
            started: Instant::now(),
            session_len: Duration::ZERO,
            last_sweep: Instant::now(),
            rng: Rng::new(seed),
        }
    }

    fn known(&self) -> Vec<u32> {
        self.list.iter().filter_map(|s| s.uid).collect()
    }

    /// Applies untagged responses in order (sequence numbers move with
    /// every EXPUNGE).
    fn apply(&mut self, resps: Vec<Resp>) {
        for r in resps {
            match r.parse() {
                Untagged::Expunge(n) => {
                    let i = n as usize;
                    if i == 0 || i > self.list.len() {
                        self.ledger.problem(
                            "view-inconsistent",
                            format!(
                                "{}: {} EXPUNGE {n} with {} messages",
                                self.name,
                                self.mailbox,
                                self.list.len()
                            ),
                        );
                        continue;
                    }
                    if let Some(uid) = self.list.remove(i - 1).uid {
                        self.ledger
                            .removed(&self.name, &self.mailbox, self.v, uid, "expunged");
                        self.ledger.stat("watcher.expunge-seen");
                    } else {
                        self.ledger.stat("watcher.expunge-before-fetch");
                    }
                }
                Untagged::Exists(n) => {
                    let n = n as usize;
                    if n < self.list.len() {
                        self.ledger.problem(
                            "view-inconsistent",
                            format!(
                                "{}: {} EXISTS {n} below the {} messages known",
                                self.name,
                                self.mailbox,
                                self.list.len()
                            ),
                        );
                    }
                    let above = self.floor;
                    self.list.resize(
                        n.max(self.list.len()),
                        Slot {
                            uid: None,
                            above,
                            fetched: false,
                        },
                    );
                }
                Untagged::Fetch {
                    seq,
                    uid,
                    size,
                    body,
                    header,
                } => {
                    let i = seq as usize;
                    let Some(uid) = uid else { continue };
                    if i == 0 || i > self.list.len() {
                        self.ledger.problem(
                            "view-inconsistent",
                            format!(
                                "{}: {} FETCH for message {seq} with {} known",
                                self.name,
                                self.mailbox,
                                self.list.len()
                            ),
                        );
                        continue;
                    }
                    match self.list[i - 1].uid {
                        None => {
                            // A message that appeared in this session has
                            // a UID above every UID known before it did,
                            // and the view ascends with the sequence
                            // numbers. (Unsolicited FETCHes may fill a
                            // later message first.)
                            let above = self.list[i - 1].above;
                            let before = self.list[..i - 1].iter().rev().find_map(|s| s.uid);
                            let after = self.list[i..].iter().find_map(|s| s.uid);
                            if uid <= above
                                || before.is_some_and(|b| b >= uid)
                                || after.is_some_and(|a| a <= uid)
                            {
                                self.ledger.problem(
                                    "uid-not-ascending",
                                    format!(
                                        "{}: {} message {seq} has UID {uid}: UID before it {before:?}, after it {after:?}, known when it appeared {above}",
                                        self.name, self.mailbox
                                    ),
                                );
                            }
                            self.floor = self.floor.max(uid);
                            self.list[i - 1].uid = Some(uid);
                        }
                        Some(u) if u != uid => {
                            self.ledger.problem(
                                "view-inconsistent",
                                format!(
                                    "{}: {} message {seq} was UID {u}, now UID {uid}",
                                    self.name, self.mailbox
                                ),
                            );
                            self.list[i - 1].uid = Some(uid);
                        }
                        Some(_) => {}
                    }
                    if body.is_some() {
                        self.list[i - 1].fetched = true;
                    }
                    if body.is_some() || header.is_some() {
                        self.ledger.observe(
                            &self.name,
                            (&self.mailbox, self.v, uid),
                            size,
                            body.as_deref(),
                            header.as_deref().and_then(token_of_header),
                        );
                    }
                }
                Untagged::UidValidity(_) | Untagged::Bye | Untagged::Other => {}
            }
        }
    }

    fn cmd(&mut self, c: &str) -> io::Result<String> {
        let conn = self.conn.as_mut().expect("session");
        let (resps, status) = conn.cmd(c)?;
        if std::env::var_os("CAMPAIGN_TRACE").is_some() {
            let mut t = format!("> {c}\n");
            for r in &resps {
                t.push_str(&format!("< {}\n", r.text));
            }
            t.push_str(&format!("< {status}\n"));
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log.with_extension("trace"))
                .and_then(|mut f| f.write_all(t.as_bytes()));
        }
        if resps.iter().any(|r| r.text.starts_with("* BYE")) {
            self.ledger.problem(
                "uidvalidity-changed",
                format!("{}: {} session got BYE during {c}", self.name, self.mailbox),
            );
        }
        self.apply(resps);
        Ok(status)
    }

    fn start(&mut self) -> io::Result<()> {
        let conn = match Imap::spawn(&self.procs, &self.spool, None, &self.log) {
            Ok(c) => c,
            Err(e) => {
                self.ledger.problem(
                    "crash",
                    format!(
                        "{}: watcher session did not start ({}, {}): {}",
                        self.name,
                        e.err,
                        e.status,
                        tail(&self.log)
                    ),
                );
                return Ok(());
            }
        };
        self.conn = Some(conn);
        self.list.clear();
        self.floor = 0;
        let (resps, status) = self
            .conn
            .as_mut()
            .unwrap()
            .cmd(&format!("SELECT {}", self.mailbox))?;
        if !status.starts_with("OK") {
            return Err(io::Error::other(format!("SELECT: {status}")));
        }
        let mut v = None;
        for r in &resps {
            if let Untagged::UidValidity(x) = r.parse() {
                v = Some(x);
            }
        }
        self.v = v.ok_or_else(|| io::Error::other("SELECT without UIDVALIDITY"))?;
        self.ledger.note_uidvalidity(&self.mailbox, self.v);
        self.apply(resps);
        self.fetch_new()?;
        // What the last session knew and this one does not have must have
        // been asked for.
        if let Some((pv, uids)) = self.prev.take()
            && pv == self.v
        {
            let now: HashSet<u32> = self.known().into_iter().collect();
            if self.list.iter().all(|s| s.uid.is_some()) {
                for u in uids {
                    if !now.contains(&u) {
                        self.ledger.removed(
                            &self.name,
                            &self.mailbox,
                            self.v,
                            u,
                            "missing from a new session",
                        );
                    }
                }
            }
        }
        self.started = Instant::now();
        self.session_len = Duration::from_millis(8000 + self.rng.below(12000));
        Ok(())
    }

    /// Fetches every message of the view not fetched yet (full bodies),
    /// in sequence order, so that the first sight of UIDs ascends.
    fn fetch_new(&mut self) -> io::Result<()> {
        for _ in 0..3 {
            let Some(first) = self.list.iter().position(|s| !s.fetched) else {
                return Ok(());
            };
            self.cmd(&format!(
                "FETCH {}:* (UID RFC822.SIZE BODY.PEEK[])",
                first + 1
            ))?;
            self.cmd("NOOP")?;
        }
        Ok(())
    }

    /// Every UID's token and size again, and a few bodies.
    fn sweep(&mut self) -> io::Result<()> {
        self.cmd("UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")?;
        let known = self.known();
        if !known.is_empty() {
            let pick: Vec<u32> = (0..3)
                .map(|_| known[self.rng.below(known.len() as u64) as usize])
                .collect();
            self.cmd(&format!(
                "UID FETCH {} (UID RFC822.SIZE BODY.PEEK[])",
                uid_set(&pick)
            ))?;
        }
        // Within one view, UIDs ascend with the sequence numbers.
        let k = self.known();
        if k.windows(2).any(|w| w[0] >= w[1]) {
            self.ledger.problem(
                "uid-not-ascending",
                format!("{}: {} view not ascending", self.name, self.mailbox),
            );
        }
        self.last_sweep = Instant::now();
        Ok(())
    }

    fn end_session(&mut self, logout: bool) {
        let Some(conn) = self.conn.take() else { return };
        let uids = self.known();
        if self.list.iter().all(|s| s.uid.is_some()) {
            self.prev = Some((self.v, uids));
        } else {
            self.prev = None;
        }
        let (status, _) = if logout {
            conn.logout(&self.procs)
        } else {
            conn.finish(&self.procs)
        };
        if !status.success() {
            self.ledger.problem(
                "crash",
                format!(
                    "{}: watcher session on {} ended with {status}: {}",
                    self.name,
                    self.mailbox,
                    tail(&self.log)
                ),
            );
        }
    }

    /// One step of the watch loop.
    fn step(&mut self) -> io::Result<()> {
        if self.conn.is_none() {
            return self.start();
        }
        self.cmd("NOOP")?;
        self.fetch_new()?;
        if self.last_sweep.elapsed() > Duration::from_millis(1500) {
            self.sweep()?;
        }
        if self.started.elapsed() > self.session_len {
            self.end_session(true);
        }
        Ok(())
    }

    fn step_or_restart(&mut self) {
        if let Err(e) = self.step() {
            self.ledger.problem(
                "crash",
                format!(
                    "{}: watcher session on {}: {e}: {}",
                    self.name,
                    self.mailbox,
                    tail(&self.log)
                ),
            );
            self.end_session(false);
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Watches until `stop`, then a last look and one fresh session.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::Relaxed) {
            self.step_or_restart();
            std::thread::sleep(Duration::from_millis(50 + self.rng.below(150)));
        }
        self.finish_watch();
    }

    /// A last NOOP and sweep, then a fresh session checked against it.
    pub fn finish_watch(&mut self) {
        self.step_or_restart();
        if self.conn.is_some() {
            let _ = self.sweep();
            self.end_session(true);
        }
        self.step_or_restart();
        if self.conn.is_some() {
            let _ = self.sweep();
            self.end_session(true);
        }
    }
}

// -------------------------------------------------------------- actors

/// What every actor thread needs.
#[derive(Clone)]
pub struct Env {
    pub spool: PathBuf,
    pub dir: PathBuf,
    pub ledger: Arc<Ledger>,
    pub procs: Arc<Procs>,
    pub stop: Arc<AtomicBool>,
}

impl Env {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn other(mailbox: &str) -> &'static str {
    if mailbox == MAILBOXES[0] {
        MAILBOXES[1]
    } else {
        MAILBOXES[0]
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(60).collect()
}

/// One-shot `deliver` in a loop; exit 0 acknowledges.
pub fn deliver_loop(env: Env, id: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    while !env.stopping() {
        let token = format!("d{id}-{n}");
        n += 1;
        let mailbox = if rng.chance(70) { "INBOX" } else { "Archive" };
        let input = message(&token);
        env.ledger.sent(&token, mailbox);
        let mut cmd = deliver_cmd(&env.spool, USER);
        if mailbox != "INBOX" {
            cmd.args(["-m", mailbox]);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = env.procs.spawn(&mut cmd, Some(Kind::Deliver));
        if let Some(mut w) = child.stdin.take() {
            let _ = w.write_all(&input);
        }
        let (status, by_killer, err) = env.procs.reap_with_stderr(&mut child);
        env.ledger
            .event(format!("deliver \"{token}\" to {mailbox}: {status}"));
        match status.code() {
            Some(0) => {
                env.ledger.ack(&token);
                env.ledger.stat("deliver.acknowledged");
            }
            Some(75) => env
                .ledger
                .stat(format!("deliver.exit 75: {}", first_line(&err))),
            Some(c) => env.ledger.problem(
                "crash",
                format!("deliver {token} exited {c}: {}", first_line(&err)),
            ),
            None if by_killer => {}
            None => env.ledger.problem(
                "crash",
                format!("deliver {token} ended by {status}: {}", first_line(&err)),
            ),
        }
    }
}

/// The LMTP server, restarted whenever it dies, until `stop`.
pub fn lmtp_server_loop(env: Env, sock: PathBuf, log: PathBuf) {
    while !env.stopping() {
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("lmtp log");
        let mut cmd = store_cmd("deliver");
        cmd.arg("--lmtp")
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .arg("--spool")
            .arg(&env.spool)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf);
        let mut child = env.procs.spawn(&mut cmd, Some(Kind::LmtpServer));
        let pid = child.id();
        // Wait for the end, or for the stop flag (then end it ourselves).
        let watcher_env = env.clone();
        let done = Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let stopper = std::thread::spawn(move || {
            while !done2.load(Ordering::Relaxed) {
                if watcher_env.stopping() && watcher_env.stop_lmtp() {
                    watcher_env.procs.stop_kill(pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let (status, by_killer) = env.procs.reap(&mut child);
        done.store(true, Ordering::Relaxed);
        let _ = stopper.join();
        if !by_killer && !env.stopping() {
            env.ledger.problem(
                "crash",
                format!("LMTP server ended by {status}: {}", tail(&log)),
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Env {
    /// The LMTP server stops once every client has: the stop file exists
    /// and no client is left.
    fn stop_lmtp(&self) -> bool {
        self.dir.join("lmtp-clients-done").exists()
    }
}

/// Runs LMTP client processes (this test binary re-executed with
/// `worker_env` set) one after the other until `stop`; their stdout
/// tells what was sent and acknowledged.
pub fn lmtp_client_loop(env: Env, mut worker: Command) {
    let mut runs = 0u64;
    while !env.stopping() {
        runs += 1;
        worker
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        worker.env("CAMPAIGN_LMTP_RUN", runs.to_string());
        let mut child = env.procs.spawn(&mut worker, Some(Kind::LmtpClient));
        let out = child.stdout.take().expect("stdout");
        let mut errout = child.stderr.take().expect("stderr");
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = errout.read_to_string(&mut s);
            s
        });
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let mut w = line.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("SENT"), Some(t), Some(m)) => {
                    env.ledger.event(format!("lmtp \"{t}\" sent to {m}"));
                    env.ledger.sent(t, m)
                }
                (Some("ACK"), Some(t), _) => {
                    env.ledger.event(format!("lmtp \"{t}\" 250"));
                    env.ledger.ack(t);
                    env.ledger.stat("lmtp.acknowledged");
                }
                (Some("TEMP"), Some(_), _) => {
                    let reply: String = line.splitn(3, ' ').nth(2).unwrap_or("").to_string();
                    env.ledger.stat(format!("lmtp.4xx: {}", first_line(&reply)));
                }
                (Some("PROBLEM"), _, _) => env.ledger.problem("hang", line.clone()),
                _ => {}
            }
        }
        let (status, by_killer) = env.procs.reap(&mut child);
        let err = err_reader.join().unwrap_or_default();
        if !status.success() && !by_killer {
            env.ledger.problem(
                "crash",
                format!("LMTP client ended by {status}: {}", first_line(&err)),
            );
        }
    }
}

/// The LMTP client process: transactions of one recipient each over
/// `sock` until the file `stop` exists. Prints `SENT TOKEN MAILBOX`
/// before DATA, `ACK TOKEN` after reading 250, `TEMP TOKEN REPLY` for a
/// 4xx.
pub fn lmtp_client_main(sock: &Path, stop: &Path, id: &str, run: u64, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut n = 0u64;
    let out = io::stdout();
    let say = |s: String| {
        let mut o = out.lock();
        let _ = writeln!(o, "{s}");
        let _ = o.flush();
    };
    while !stop.exists() {
        let Ok(s) = std::os::unix::net::UnixStream::connect(sock) else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        // The final reply line of one command (`NNN ` after `NNN-` lines).
        let reply = |r: &mut BufReader<std::os::unix::net::UnixStream>| -> io::Result<String> {
            loop {
                let mut l = String::new();
                if r.read_line(&mut l)? == 0 {
                    return Err(eof());
                }
                if l.len() < 4 || l.as_bytes()[3] != b'-' {
                    return Ok(l.trim_end().to_string());
                }
            }
        };
        let session = (|| -> io::Result<()> {
            if !reply(&mut r)?.starts_with("220") {
                return Err(io::Error::other("greeting"));
            }
            w.write_all(b"LHLO campaign.test\r\n")?;
            reply(&mut r)?;
            for _ in 0..1 + rng.below(8) {
                if stop.exists() {
                    break;
                }
                // Client id and run number, not the PID: PIDs are reused
                // in a long campaign, and a token must name one message.
                let token = format!("l{id}-{run}-{n}");
                n += 1;
                let mailbox = if rng.chance(70) { "INBOX" } else { "Archive" };
                let rcpt = if mailbox == "INBOX" {
                    format!("{USER}@campaign.test")
                } else {
                    format!("{USER}+{mailbox}@campaign.test")
                };
                w.write_all(format!("MAIL FROM:<{SENDER}>\r\n").as_bytes())?;
                let m = reply(&mut r)?;
                if !m.starts_with('2') {
                    say(format!("TEMP {token} MAIL {m}"));
                    continue;
                }
                w.write_all(format!("RCPT TO:<{rcpt}>\r\n").as_bytes())?;
                let rc = reply(&mut r)?;
                if !rc.starts_with('2') {
                    say(format!("TEMP {token} RCPT {rc}"));
                    w.write_all(b"RSET\r\n")?;
                    reply(&mut r)?;
                    continue;
                }
                w.write_all(b"DATA\r\n")?;
                let d = reply(&mut r)?;
                if !d.starts_with("354") {
                    say(format!("TEMP {token} DATA {d}"));
                    continue;
                }
                say(format!("SENT {token} {mailbox}"));
                let mut body = crlf(&message(&token));
                body.extend_from_slice(b".\r\n");
                w.write_all(&body)?;
                let done = reply(&mut r)?;
                if done.starts_with("250") {
                    say(format!("ACK {token}"));
                } else {
                    say(format!("TEMP {token} {done}"));
                }
            }
            w.write_all(b"QUIT\r\n")?;
            let _ = reply(&mut r);
            Ok(())
        })();
        if let Err(e) = session
            && matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            )
        {
            say(format!(
                "PROBLEM lmtp client {id}: no reply within {REPLY_TIMEOUT:?}"
            ));
        }
    }
}

/// The keyword only IMAP actor `id` sets and clears.
fn actor_keyword(id: usize) -> String {
    format!("$Actor{id}")
}

/// Reads `uid -> token` of the selected mailbox.
fn uid_tokens(c: &mut Imap) -> io::Result<Vec<(u32, String)>> {
    let (resps, _) = c.cmd("UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")?;
    let mut out = Vec::new();
    for r in resps {
        if let Untagged::Fetch {
            uid: Some(uid),
            header: Some(h),
            ..
        } = r.parse()
            && let Some(t) = token_of_header(&h)
        {
            out.push((uid, t));
        }
    }
    Ok(out)
}

/// One IMAP session's worth of user actions; returns at the first I/O
/// error (the session was killed).
fn imap_session(env: &Env, c: &mut Imap, rng: &mut Rng, id: usize, n: &mut u64) -> io::Result<()> {
    for _ in 0..2 + rng.below(6) {
        if env.stopping() {
            break;
        }
        let mailbox = MAILBOXES[rng.below(MAILBOXES.len() as u64) as usize];
        let (_, st) = c.cmd(&format!("SELECT {mailbox}"))?;
        if !st.starts_with("OK") {
            env.ledger.stat(format!("imap.SELECT {}", first_line(&st)));
            continue;
        }
        // UID -> token as of now; a UID never changes identity, so the map
        // stays right for the messages still there.
        let msgs = uid_tokens(c)?;
        for _ in 0..1 + rng.below(6) {
            if env.stopping() {
                break;
            }
            let pick = |rng: &mut Rng, k: usize| -> Vec<(u32, String)> {
                let mut v: Vec<(u32, String)> = (0..k.min(msgs.len()))
                    .map(|_| msgs[rng.below(msgs.len() as u64) as usize].clone())
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            let roll = rng.below(100);
            let (what, status) = if msgs.is_empty() || roll < 10 {
                // APPEND a new message to either mailbox.
                let token = format!("a{id}-{n}");
                *n += 1;
                let to = MAILBOXES[rng.below(MAILBOXES.len() as u64) as usize];
                env.ledger.sent(&token, to);
                let (_, st) = c.cmd_lit(
                    &format!("APPEND {to} (\\Seen)"),
                    Some(&crlf(&message(&token))),
                )?;
                if st.starts_with("OK") {
                    env.ledger.ack(&token);
                    env.ledger.stat("imap.append-acknowledged");
                }
                ("APPEND", st)
            } else if roll < 45 {
                let k = 1 + rng.below(3) as usize;
                let set = pick(rng, k);
                let uids: Vec<u32> = set.iter().map(|x| x.0).collect();
                let op = if rng.chance(60) { "+" } else { "-" };
                if rng.chance(50) {
                    // This actor's own keyword: only it changes it, so the
                    // final state must be what its last acknowledged STORE
                    // left (the audit saw a \Flagged lost to a rebuild).
                    let tokens: Vec<String> = set.iter().map(|x| x.1.clone()).collect();
                    env.ledger.keyword_sent(&tokens, id);
                    let what = format!(
                        "UID STORE {} {op}FLAGS ({})",
                        uid_set(&uids),
                        actor_keyword(id)
                    );
                    env.ledger
                        .event(format!("imap {id} {mailbox} sent {what} for {tokens:?}"));
                    let (_, st) = c.cmd(&what)?;
                    env.ledger
                        .event(format!("imap {id} {mailbox} {st} {what} for {tokens:?}"));
                    if st.starts_with("OK") {
                        env.ledger.keyword_done(&tokens, id, op == "+");
                    }
                    ("STORE keyword", st)
                } else {
                    let f = ["\\Seen", "\\Flagged", "$Campaign"][rng.below(3) as usize];
                    let (_, st) =
                        c.cmd(&format!("UID STORE {} {op}FLAGS ({f})", uid_set(&uids)))?;
                    ("STORE", st)
                }
            } else if roll < 75 {
                // Expunge more when the mailbox grows, so it stays bounded.
                let k = if msgs.len() > 500 {
                    1 + rng.below(msgs.len() as u64 / 12) as usize
                } else {
                    1 + rng.below(3) as usize
                };
                let set = pick(rng, k);
                for (_, t) in &set {
                    env.ledger.intend_expunge(t, mailbox);
                }
                let uids: Vec<u32> = set.iter().map(|x| x.0).collect();
                let (_, st) = c.cmd(&format!(
                    "UID STORE {} +FLAGS.SILENT (\\Deleted)",
                    uid_set(&uids)
                ))?;
                if !st.starts_with("OK") {
                    ("STORE \\Deleted", st)
                } else {
                    let (_, st) = c.cmd(&format!("UID EXPUNGE {}", uid_set(&uids)))?;
                    ("EXPUNGE", st)
                }
            } else if roll < 95 {
                let k = 1 + rng.below(3) as usize;
                let set = pick(rng, k);
                let to = other(mailbox);
                for (_, t) in &set {
                    env.ledger.intend_move(t, mailbox, to);
                }
                let uids: Vec<u32> = set.iter().map(|x| x.0).collect();
                let (_, st) = c.cmd(&format!("UID MOVE {} {to}", uid_set(&uids)))?;
                ("MOVE", st)
            } else {
                let (_, st) = c.cmd("NOOP")?;
                ("NOOP", st)
            };
            if status.starts_with("OK") {
                env.ledger.stat(format!("imap.{what} ok"));
            } else {
                env.ledger
                    .stat(format!("imap.{what} {}", first_line(&status)));
            }
        }
    }
    Ok(())
}

/// IMAP sessions one after the other until `stop`.
pub fn imap_actor_loop(env: Env, id: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let log = env.dir.join(format!("imap-actor-{id}.log"));
    let mut n = 0u64;
    while !env.stopping() {
        let mut c = match Imap::spawn(&env.procs, &env.spool, Some(Kind::Imap), &log) {
            Ok(c) => c,
            Err(e) => {
                if !e.by_killer {
                    env.ledger.problem(
                        "crash",
                        format!(
                            "IMAP session {id} did not start ({}, {}): {}",
                            e.err,
                            e.status,
                            tail(&log)
                        ),
                    );
                }
                continue;
            }
        };
        let r = imap_session(&env, &mut c, &mut rng, id, &mut n);
        let (status, by_killer) = match r {
            Ok(()) => c.logout(&env.procs),
            Err(_) => c.finish(&env.procs),
        };
        if !status.success() && !by_killer {
            env.ledger.problem(
                "crash",
                format!("IMAP session {id} ended by {status}: {}", tail(&log)),
            );
        }
    }
}

/// The pause fault points of an admin command.
fn pause_points(op: &str) -> &'static [&'static str] {
    match op {
        "repack" => &[
            "repack.after_new_index",
            "repack.after_mark_superseded",
            "repack.after_rename",
        ],
        "reconstruct" => &[
            "reconstruct.after_new_index",
            "reconstruct.after_mark_superseded",
            "reconstruct.after_rename",
        ],
        _ => &[],
    }
}

/// The admin commands the workers run: `CAMPAIGN_ADMIN=repack,recover`
/// leaves reconstruct out (to tell which one breaks something); default
/// all three.
pub fn admin_ops() -> Vec<String> {
    match std::env::var("CAMPAIGN_ADMIN") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|o| o.trim().to_string()).collect(),
        _ => ["repack", "reconstruct", "recover"]
            .map(String::from)
            .to_vec(),
    }
}

/// `idx-admin repack|reconstruct|recover` on a random mailbox in a loop,
/// some runs paused at a fault point.
pub fn admin_loop(env: Env, seed: u64) {
    let mut rng = Rng::new(seed);
    while !env.stopping() {
        let (op, kind) = match rng.below(10) {
            0..=3 => ("repack", Kind::Repack),
            4..=6 => ("reconstruct", Kind::Reconstruct),
            _ => ("recover", Kind::Recover),
        };
        if !admin_ops().iter().any(|o| o == op) {
            continue;
        }
        let mailbox = MAILBOXES[rng.below(MAILBOXES.len() as u64) as usize];
        let mut cmd = store_cmd("idx-admin");
        cmd.arg(op)
            .arg("--spool")
            .arg(&env.spool)
            .args(["-d", USER, "-m", mailbox])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let points = pause_points(op);
        if !points.is_empty() && rng.chance(40) {
            let p = points[rng.below(points.len() as u64) as usize];
            cmd.env(
                "MAILSTORE_TEST_FAULT",
                format!("{p}=pause:{}", 50 + rng.below(1450)),
            );
            env.ledger.stat(format!("admin.{op} paused"));
        }
        let mut child = env.procs.spawn(&mut cmd, Some(kind));
        let pid = child.id();
        env.ledger.event(format!(
            "admin {pid} {op} {mailbox} start {:?}",
            cmd.get_envs()
                .find(|(k, _)| *k == "MAILSTORE_TEST_FAULT")
                .and_then(|(_, v)| v)
        ));
        let (status, by_killer, err) = env.procs.reap_with_stderr(&mut child);
        env.ledger
            .event(format!("admin {pid} {op} {mailbox} end {status}"));
        match status.code() {
            Some(0) => env.ledger.stat(format!("admin.{op} ok")),
            Some(c) => env
                .ledger
                .stat(format!("admin.{op} exit {c}: {}", first_line(&err))),
            None if by_killer => {}
            None => env.ledger.problem(
                "crash",
                format!("idx-admin {op} ended by {status}: {}", first_line(&err)),
            ),
        }
        std::thread::sleep(Duration::from_millis(rng.below(150)));
    }
}

/// SIGKILLs a random running child every 20–130 ms until `stop` (or
/// until `max_kills`), and kills hung one-shot children.
pub fn killer_loop(env: Env, seed: u64) {
    let mut rng = Rng::new(seed);
    while !env.stopping() {
        std::thread::sleep(Duration::from_millis(20 + rng.below(110)));
        if env.stopping() {
            break;
        }
        env.procs.kill_random(&mut rng);
        for h in env.procs.kill_hung() {
            env.ledger.problem("hang", h);
        }
    }
}

// --------------------------------------------------------- final check

fn admin(args: &[&str], spool: &Path, mailbox: &str) -> crate::Output {
    crate::run(
        store_cmd(args[0])
            .args(&args[1..])
            .arg("--spool")
            .arg(spool)
            .args(["-d", USER, "-m", mailbox]),
        Duration::from_secs(300),
    )
}

/// What the final check found.
#[derive(Debug, Default)]
pub struct Final {
    pub acknowledged: u64,
    pub unacknowledged_present: u64,
    pub present: u64,
    pub expunged_by_intent: u64,
    /// Actor keywords compared with their last acknowledged STORE.
    pub keywords_checked: u64,
    /// Files in the mailboxes' `.quarantine/` (debris recovery kept).
    pub quarantined: u64,
}

/// Token -> quarantined files holding it, over every mailbox.
fn quarantine(store: &Store, user: &UserName, f: &mut Final) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for m in MAILBOXES {
        let q = store
            .mailbox_path(user, &MailboxName::new(m).unwrap())
            .join(".quarantine");
        let Ok(rd) = std::fs::read_dir(&q) else {
            continue;
        };
        for e in rd.flatten() {
            f.quarantined += 1;
            if let Some(t) = std::fs::read(e.path())
                .ok()
                .and_then(|b| crate::reliability::token_of(&b))
            {
                out.entry(t).or_default().push(e.path());
            }
        }
    }
    out
}

/// After every actor stopped: `idx-admin recover` and `idx-inspect verify`
/// per mailbox, then the accounting of every token.
pub fn final_check(spool: &Path, ledger: &Ledger) -> Final {
    for m in MAILBOXES {
        let rec = admin(&["idx-admin", "recover"], spool, m);
        if rec.code() != Some(0) {
            ledger.problem(
                "recover",
                format!("idx-admin recover {m}: {}{}", rec.stdout, rec.stderr),
            );
        }
        let ver = admin(&["idx-inspect", "verify"], spool, m);
        if ver.code() != Some(0) {
            ledger.problem(
                "verify",
                format!(
                    "idx-inspect verify {m} exit {:?}: {}{}",
                    ver.code(),
                    ver.stdout.chars().take(2000).collect::<String>(),
                    ver.stderr
                ),
            );
        }
    }
    // token -> (mailbox, uid, bytes)
    let mut found: BTreeMap<String, Vec<(String, u32, Vec<u8>)>> = BTreeMap::new();
    // (mailbox, uid) -> keyword names, lower case
    let mut kws: HashMap<(String, u32), HashSet<String>> = HashMap::new();
    let store = Store::open(spool, Options::default()).expect("open store");
    let user = UserName::new(USER).unwrap();
    for m in MAILBOXES {
        let mut mb = match store.open_mailbox(&user, &MailboxName::new(m).unwrap()) {
            Ok(mb) => mb,
            Err(e) => {
                ledger.problem("verify", format!("open {m}: {e}"));
                continue;
            }
        };
        let snap = match mb.snapshot() {
            Ok(s) => s,
            Err(e) => {
                ledger.problem("verify", format!("snapshot {m}: {e}"));
                continue;
            }
        };
        let mut prev = 0;
        for r in &snap.records {
            if r.uid <= prev {
                ledger.problem(
                    "uid-not-ascending",
                    format!("{m}: index UID {} after {prev}", r.uid),
                );
            }
            prev = r.uid;
            if r.is_expunged() {
                continue;
            }
            kws.insert(
                (m.to_string(), r.uid),
                r.keywords
                    .iter()
                    .filter_map(|k| snap.meta.keywords.get(k))
                    .map(|k| k.to_ascii_lowercase())
                    .collect(),
            );
            match mb.read_message(r.uid) {
                Ok(b) => match crate::reliability::token_of(&b) {
                    Some(t) => found.entry(t).or_default().push((m.to_string(), r.uid, b)),
                    None => {
                        ledger.problem("unknown-message", format!("{m} UID {}: no token", r.uid))
                    }
                },
                Err(e) => ledger.problem("lost", format!("{m} UID {}: unreadable: {e}", r.uid)),
            }
        }
    }
    let sent = ledger.sent.lock().unwrap().clone();
    let seen_tokens = ledger.seen.lock().unwrap().tokens.clone();
    let mut f = Final::default();
    let quarantined = quarantine(&store, &user, &mut f);
    for (t, copies) in &found {
        f.present += 1;
        if copies.len() > 1 {
            let wh: Vec<String> = copies
                .iter()
                .map(|c| format!("{} UID {}", c.0, c.1))
                .collect();
            ledger.problem(
                "duplicated",
                format!("{t} stored {} times: {}", copies.len(), wh.join(", ")),
            );
        }
        for (m, uid, b) in copies {
            if expected(t).as_deref() != Some(b.as_slice()) {
                ledger.problem(
                    "wrong-bytes",
                    format!(
                        "{t} in {m} UID {uid}: {} bytes differ from what was sent",
                        b.len()
                    ),
                );
            }
        }
        match sent.get(t) {
            None => ledger.problem("unknown-message", format!("{t} stored but never sent")),
            Some(s) if !s.acked => f.unacknowledged_present += 1,
            Some(_) => {}
        }
    }
    // Each actor's own keyword is as its last acknowledged STORE left it,
    // on messages stored once that no MOVE touched (a STORE racing a MOVE
    // may land on the source copy).
    for ((t, actor), state) in ledger.keywords.lock().unwrap().iter() {
        let Some(set) = state else { continue };
        let Some([(m, uid, _)]) = found.get(t).map(Vec::as_slice) else {
            continue;
        };
        if ledger.has_move_intent(t) {
            continue;
        }
        f.keywords_checked += 1;
        let name = actor_keyword(*actor).to_ascii_lowercase();
        let has = kws
            .get(&(m.clone(), *uid))
            .is_some_and(|k| k.contains(&name));
        if has != *set {
            ledger.problem(
                "keyword-lost",
                format!(
                    "{t} in {m} UID {uid}: {} is {}, its last acknowledged STORE {} it; {:?}",
                    actor_keyword(*actor),
                    if has { "set" } else { "not set" },
                    if *set { "set" } else { "cleared" },
                    ledger.events_of(&format!("\"{t}\""))
                ),
            );
        }
    }
    // What the quarantine holds (for the report; not a failure).
    for t in quarantined.keys() {
        let what = if found.contains_key(t) {
            "a copy of a message still present"
        } else if ledger.has_expunge_intent(t) {
            "a message expunged on purpose"
        } else if sent.get(t).is_some_and(|s| s.acked) {
            "an acknowledged message missing from its mailbox"
        } else {
            "a message never acknowledged"
        };
        ledger.stat(format!("quarantine: {what}"));
    }
    for (t, s) in &sent {
        if s.acked {
            f.acknowledged += 1;
        }
        if found.contains_key(t) {
            continue;
        }
        if ledger.has_expunge_intent(t) {
            if s.acked {
                f.expunged_by_intent += 1;
            }
            continue;
        }
        if s.acked {
            ledger.problem(
                "lost",
                format!(
                    "{t} (to {}) acknowledged, not in any mailbox, never expunged ({}; quarantined as {:?})",
                    s.mailbox,
                    ledger.intents_of(t),
                    quarantined.get(t)
                ),
            );
        } else if seen_tokens.contains(t) {
            ledger.problem(
                "seen-then-lost",
                format!(
                    "{t} (to {}) was seen by a watcher, now in no mailbox, never expunged",
                    s.mailbox
                ),
            );
        }
    }
    f
}
