//! The interpreter: runs a compiled script against one message and
//! envelope, and returns the actions (RFC 5228 section 2.10: implicit
//! keep, duplicate actions, errors that fall back to keep).

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use mail_parser::{DateTime, Message};
use serde::Serialize;

use crate::compile::{
    AddressPart, BodyTransform, Command, Comparator, DupSource, Extension, FlagOp, MatchOpts,
    MatchType, Modifier, Script, Test, Vacation, Zone, valid_address,
};
use crate::headers::HeaderIndex;
use crate::matcher::{self, OverBudget};
use crate::message::{self, Envelope};

/// What only the store can answer.
pub trait Host {
    /// `mailboxexists` (RFC 5490 3.1).
    fn mailbox_exists(&self, name: &str) -> bool;

    /// The source of a script for `include` (RFC 6609): the user's own
    /// (`global` false) or a global one. `Ok(None)`: there is none.
    fn include(&self, global: bool, name: &str) -> Result<Option<String>, String> {
        let _ = (global, name);
        Ok(None)
    }

    /// `duplicate` (RFC 7352): was `key` recorded within the last `seconds`?
    /// The caller records [`Outcome::duplicates`] after a successful delivery.
    fn duplicate_seen(&self, key: &str, seconds: u64) -> bool {
        let _ = (key, seconds);
        false
    }
}

/// RFC 7352's period when the script gives none (Pigeonhole's default).
pub const DUPLICATE_DEFAULT_SECONDS: u64 = 12 * 3600;
/// The longest period honoured (longer ones are cut to it).
pub const DUPLICATE_MAX_SECONDS: u64 = 7 * 86400;

/// A `duplicate` test's identity to record once the delivery succeeded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DuplicateMark {
    /// Handle and unique id, NUL-separated.
    pub key: String,
    pub seconds: u64,
}

/// Deepest chain of includes (Pigeonhole's `sieve_include_max_nesting_depth` is 10).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Most scripts included in one run (Pigeonhole's `sieve_include_max_includes` is 255).
pub const MAX_INCLUDES: usize = 64;

/// A host with no mailboxes (dry runs without a store).
pub struct NoHost;

impl Host for NoHost {
    fn mailbox_exists(&self, _: &str) -> bool {
        false
    }
}

/// Bounds on one run.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Work units one run may use: one per command and test, one per byte
    /// compared, one per pattern × text cell of a `:matches`.
    pub budget: u64,
    /// Most actions (Pigeonhole's `sieve_max_actions` is 32).
    pub max_actions: usize,
    /// Most redirects (Pigeonhole's `sieve_max_redirects` is 4).
    pub max_redirects: usize,
    /// Most variables, and longest value of one (RFC 5229 6 asks for limits).
    pub max_variables: usize,
    pub max_variable_len: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            budget: 50_000_000,
            max_actions: 32,
            max_redirects: 4,
            max_variables: 255,
            max_variable_len: 4096,
        }
    }
}

/// Everything a run reads besides the message.
pub struct Context<'a> {
    /// The message, as delivered.
    pub raw: &'a [u8],
    /// mail-parser's parse of `raw`, for a script that may test the body
    /// (RFC 5173): its header fields are read then too. `None`: header
    /// fields are found by the header index (module `headers`, the same
    /// fields mail-parser's header-only parse finds), and a body test,
    /// if one runs, parses the message then.
    pub message: Option<&'a Message<'a>>,
    pub envelope: &'a Envelope,
    /// RFC 5183 items (`domain`, `host`, `location`, `name`, `phase`, ...).
    pub environment: &'a HashMap<String, String>,
    /// The recipient delimiter for subaddress (RFC 5233), usually `+`.
    pub delimiter: &'a str,
    /// Now (seconds since the epoch) and the local zone's offset in seconds,
    /// for `currentdate` and `date` without `:zone`.
    pub now: i64,
    pub local_offset: i64,
}

/// One action for the caller to carry out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Action {
    /// Store into INBOX (explicit `keep` or the implicit keep).
    Keep {
        flags: Vec<String>,
    },
    FileInto {
        mailbox: String,
        flags: Vec<String>,
        /// `:create` (RFC 5490): create the mailbox if it is missing.
        create: bool,
    },
    Redirect {
        address: String,
        copy: bool,
    },
    Reject {
        reason: String,
        extended: bool,
    },
    /// RFC 5230: the caller checks and records the per-sender period.
    Vacation {
        /// Where the reply goes (the envelope sender).
        to: String,
        period: u64,
        subject: Option<String>,
        from: Option<String>,
        mime: bool,
        handle: String,
        reason: String,
        /// `None`: send (subject to the period); else why not (RFC 5230 4.5-4.6).
        suppressed: Option<String>,
    },
}

/// A runtime error: the run falls back to implicit keep (RFC 5228 2.10.6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{0}")]
pub struct RuntimeError(pub String);

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The actions in order; the implicit keep, when in effect, is the last one.
    pub actions: Vec<Action>,
    pub implicit_keep: bool,
    /// Set when the run failed: `actions` is then the implicit keep alone.
    pub error: Option<RuntimeError>,
    /// `duplicate` tests to record after a successful delivery (RFC 7352 3).
    pub duplicates: Vec<DuplicateMark>,
}

pub const DATE_PARTS: &[&str] = &[
    "year", "month", "day", "date", "julian", "hour", "minute", "second", "time", "iso8601",
    "std11", "zone", "weekday",
];

enum Flow {
    Next,
    Stop,
    /// `return`: end the current script (RFC 6609 3.3).
    Return,
}

struct Run<'a> {
    ctx: &'a Context<'a>,
    host: &'a dyn Host,
    limits: &'a Limits,
    /// The budget, regular expressions and match variables.
    matching: Matching,
    vars_on: bool,
    actions: Vec<Action>,
    implicit_keep: bool,
    flags: Vec<String>,
    /// The current script's own variables.
    vars: HashMap<String, String>,
    /// RFC 6609 global variables, and the names the current script declared.
    globals: HashMap<String, String>,
    declared: HashSet<String>,
    /// Scripts being included (loop check), and every one included (`:once`).
    include_stack: Vec<(bool, String)>,
    included: HashSet<(bool, String)>,
    duplicates: Vec<DuplicateMark>,
    redirects: usize,
    /// The addresses of header fields already parsed in this run, by
    /// where the field's value is in the message (scripts test From in
    /// several rules).
    address_cache: HashMap<usize, message::Addresses<'a>, BuildHasherDefault<OffsetHasher>>,
    /// Scratch vectors of the header and address tests, kept from test
    /// to test: the fields found, their decoded values.
    found: Vec<&'a [u8]>,
    texts: Vec<Cow<'a, str>>,
    /// The header fields of `raw`, indexed on the first look (without
    /// `Context::message`).
    index: OnceCell<HeaderIndex>,
    /// mail-parser's parse, made on the first body test (without
    /// `Context::message`).
    parsed: OnceCell<Option<Message<'a>>>,
}

/// Hashes the keys of [`Run::address_cache`], where fields' values start
/// in the message: a multiply and a fold, not SipHash (the keys are
/// distinct offsets, a few per run). The fold brings the product's high
/// bits, which depend on all of the offset's, into the low bits that
/// pick the bucket.
#[derive(Default)]
struct OffsetHasher(u64);

impl Hasher for OffsetHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.0 = self.0.rotate_left(32) ^ n as u64;
    }
}

fn over(_: OverBudget) -> RuntimeError {
    RuntimeError("CPU limit exceeded".into())
}

impl Script {
    /// Runs the script. Never fails: a runtime error or limit gives the
    /// implicit keep alone, with the error in [`Outcome::error`].
    pub fn run(&self, ctx: &Context<'_>, host: &dyn Host, limits: &Limits) -> Outcome {
        let mut r = Run {
            ctx,
            host,
            limits,
            matching: Matching {
                budget: limits.budget,
                regex_cache: HashMap::new(),
                matched: Vec::new(),
            },
            vars_on: self.uses(Extension::Variables),
            actions: Vec::new(),
            implicit_keep: true,
            flags: Vec::new(),
            vars: HashMap::new(),
            globals: HashMap::new(),
            declared: HashSet::new(),
            include_stack: Vec::new(),
            included: HashSet::new(),
            duplicates: Vec::new(),
            redirects: 0,
            address_cache: HashMap::default(),
            found: Vec::new(),
            texts: Vec::new(),
            index: OnceCell::new(),
            parsed: OnceCell::new(),
        };
        match r.block(&self.commands) {
            Ok(_) => {
                if r.implicit_keep {
                    let flags = r.flags.clone();
                    r.actions.push(Action::Keep { flags });
                }
                Outcome {
                    actions: r.actions,
                    implicit_keep: r.implicit_keep,
                    error: None,
                    duplicates: r.duplicates,
                }
            }
            Err(e) => Outcome {
                actions: vec![Action::Keep { flags: Vec::new() }],
                implicit_keep: true,
                error: Some(e),
                duplicates: Vec::new(),
            },
        }
    }
}

/// Splits flag strings on spaces, drops duplicates (case-insensitive).
fn flag_list(strings: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in strings {
        for f in s.split_ascii_whitespace() {
            if !out.iter().any(|x| x.eq_ignore_ascii_case(f)) {
                out.push(f.to_string());
            }
        }
    }
    out
}

impl<'a> Run<'a> {
    fn tick(&mut self, n: u64) -> Result<(), RuntimeError> {
        matcher::charge(&mut self.matching.budget, n).map_err(over)
    }

    /// The header index of the message, built on the first look.
    fn index(&self) -> &HeaderIndex {
        self.index.get_or_init(|| HeaderIndex::build(self.ctx.raw))
    }

    /// The raw values of the message's `name` header fields, in order
    /// (at most [`message::MAX_VALUES`]).
    fn header_values(&self, name: &str) -> Vec<&'a [u8]> {
        let mut out = Vec::new();
        self.header_values_into(name, &mut out);
        out
    }

    /// [`Run::header_values`], appended to `out`.
    fn header_values_into(&self, name: &str, out: &mut Vec<&'a [u8]>) {
        let raw = self.ctx.raw;
        match self.ctx.message {
            Some(m) => out.extend(message::raw_headers(raw, m.root_part(), name)),
            None => self
                .index()
                .values_into(raw, name, message::MAX_VALUES, out),
        }
    }

    /// The fields a header, address or date test looks at: those of each
    /// name in turn, narrowed by `:index` per name (RFC 5260 4), appended
    /// to `out`.
    fn fields_into(&self, names: &[String], opts: &MatchOpts, out: &mut Vec<&'a [u8]>) {
        for n in names {
            let start = out.len();
            self.header_values_into(n, out);
            pick_index(out, start, opts);
        }
    }

    /// Whether the message has a `name` header field.
    fn has_header(&self, name: &str) -> bool {
        match self.ctx.message {
            Some(m) => !message::raw_headers(self.ctx.raw, m.root_part(), name).is_empty(),
            None => self.index().contains(self.ctx.raw, name),
        }
    }

    /// mail-parser's parse of the whole message, for body tests.
    fn parsed(&self) -> Result<&Message<'a>, RuntimeError> {
        if let Some(m) = self.ctx.message {
            return Ok(m);
        }
        let raw = self.ctx.raw;
        self.parsed
            .get_or_init(|| mail_parser::MessageParser::default().parse(raw))
            .as_ref()
            .ok_or_else(|| RuntimeError("message could not be parsed".into()))
    }

    /// Variable expansion (RFC 5229 3), when the script requires variables.
    fn x(&self, s: &str) -> String {
        if !self.vars_on || !s.contains("${") {
            return s.to_string();
        }
        let cap = self.limits.max_variable_len.max(s.len()).saturating_mul(4);
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            let after = &rest[i + 2..];
            let end = after.find('}');
            let name = end.map(|e| &after[..e]);
            match name {
                Some(n) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
                    let idx: usize = n.parse().unwrap_or(usize::MAX);
                    out.push_str(self.matching.matched.get(idx).map_or("", String::as_str));
                    rest = &after[n.len() + 1..];
                }
                Some(n) if is_ident(n) || global_name(n).is_some() => {
                    out.push_str(self.get_var(n).map_or("", String::as_str));
                    rest = &after[n.len() + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
            if out.len() > cap {
                break;
            }
        }
        out.push_str(rest);
        truncate(&mut out, cap);
        out
    }

    fn xl(&self, l: &[String]) -> Vec<String> {
        l.iter().map(|s| self.x(s)).collect()
    }

    /// [`Run::xl`] without a copy (nor a new list) when nothing in it
    /// expands: the tests' header names and keys, on every delivery.
    fn xlc<'s>(&self, l: &'s [String]) -> Cow<'s, [String]> {
        if self.vars_on && l.iter().any(|s| s.contains("${")) {
            Cow::Owned(self.xl(l))
        } else {
            Cow::Borrowed(l)
        }
    }

    fn block(&mut self, cmds: &[Command]) -> Result<Flow, RuntimeError> {
        for c in cmds {
            self.tick(1)?;
            match self.command(c)? {
                Flow::Next => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Next)
    }

    fn push(&mut self, a: Action) -> Result<(), RuntimeError> {
        if self.actions.len() >= self.limits.max_actions {
            return Err(RuntimeError(format!(
                "too many actions (limit {})",
                self.limits.max_actions
            )));
        }
        let rejecting = self
            .actions
            .iter()
            .any(|a| matches!(a, Action::Reject { .. }));
        let conflicts = match &a {
            Action::Reject { .. } => self.actions.iter().any(|x| {
                matches!(
                    x,
                    Action::Keep { .. }
                        | Action::FileInto { .. }
                        | Action::Vacation { .. }
                        | Action::Reject { .. }
                )
            }),
            Action::Keep { .. } | Action::FileInto { .. } | Action::Vacation { .. } => rejecting,
            Action::Redirect { .. } => false,
        };
        if conflicts {
            return Err(RuntimeError(
                "reject conflicts with another action (keep, fileinto, vacation, reject)".into(),
            ));
        }
        self.actions.push(a);
        Ok(())
    }

    fn command(&mut self, c: &Command) -> Result<Flow, RuntimeError> {
        match c {
            Command::If(branches, els) => {
                for (t, body) in branches {
                    if self.test(t)? {
                        return self.block(body);
                    }
                }
                if let Some(b) = els {
                    return self.block(b);
                }
            }
            Command::Stop => return Ok(Flow::Stop),
            Command::Keep { flags } => {
                let flags = match flags {
                    Some(f) => flag_list(&self.xl(f)),
                    None => self.flags.clone(),
                };
                self.implicit_keep = false;
                let stored = self.actions.iter().any(|a| match a {
                    Action::Keep { .. } => true,
                    Action::FileInto { mailbox, .. } => mailbox.eq_ignore_ascii_case("INBOX"),
                    _ => false,
                });
                if !stored {
                    self.push(Action::Keep { flags })?;
                }
            }
            Command::Discard => self.implicit_keep = false,
            Command::FileInto {
                mailbox,
                copy,
                create,
                flags,
            } => {
                let mailbox = self.x(mailbox);
                if mailbox.is_empty() || mailbox.contains('\0') {
                    return Err(RuntimeError(format!(
                        "fileinto: invalid mailbox {mailbox:?}"
                    )));
                }
                let flags = match flags {
                    Some(f) => flag_list(&self.xl(f)),
                    None => self.flags.clone(),
                };
                if !copy {
                    self.implicit_keep = false;
                }
                // RFC 5228 2.10.3: never the same mailbox twice.
                let inbox = mailbox.eq_ignore_ascii_case("INBOX");
                let dup = self.actions.iter().any(|a| match a {
                    Action::FileInto { mailbox: m, .. } => *m == mailbox,
                    Action::Keep { .. } => inbox,
                    _ => false,
                });
                if !dup {
                    self.push(Action::FileInto {
                        mailbox,
                        flags,
                        create: *create,
                    })?;
                }
            }
            Command::Redirect { address, copy } => {
                let address = self.x(address);
                if !valid_address(&address) {
                    return Err(RuntimeError(format!(
                        "redirect: invalid address {address:?}"
                    )));
                }
                if !copy {
                    self.implicit_keep = false;
                }
                let dup = self.actions.iter().any(
                    |a| matches!(a, Action::Redirect { address: x, .. } if x.eq_ignore_ascii_case(&address)),
                );
                if !dup {
                    self.redirects += 1;
                    if self.redirects > self.limits.max_redirects {
                        return Err(RuntimeError(format!(
                            "too many redirects (limit {})",
                            self.limits.max_redirects
                        )));
                    }
                    self.push(Action::Redirect {
                        address,
                        copy: *copy,
                    })?;
                }
            }
            Command::Reject { reason, extended } => {
                let reason = self.x(reason);
                self.implicit_keep = false;
                self.push(Action::Reject {
                    reason,
                    extended: *extended,
                })?;
            }
            Command::Flag { op, var, flags } => {
                let given = flag_list(&self.xl(flags));
                let current = match var {
                    None => self.flags.clone(),
                    Some(v) => flag_list(&[self.get_var(v).cloned().unwrap_or_default()]),
                };
                let new = match op {
                    FlagOp::Set => given,
                    FlagOp::Add => flag_list(&[current.join(" "), given.join(" ")]),
                    FlagOp::Remove => current
                        .into_iter()
                        .filter(|f| !given.iter().any(|g| g.eq_ignore_ascii_case(f)))
                        .collect(),
                };
                match var {
                    None => self.flags = new,
                    Some(v) => self.set_var(v, new.join(" "))?,
                }
            }
            Command::Set {
                name,
                value,
                modifiers,
            } => {
                let mut v = self.x(value);
                for m in modifiers {
                    v = modify(*m, &v);
                }
                self.set_var(name, v)?;
            }
            Command::Vacation(v) => {
                if self
                    .actions
                    .iter()
                    .any(|a| matches!(a, Action::Vacation { .. }))
                {
                    return Err(RuntimeError("more than one vacation action".into()));
                }
                let a = self.vacation(v);
                self.push(a)?;
            }
            Command::Include {
                global,
                once,
                optional,
                name,
            } => return self.include(*global, *once, *optional, name),
            Command::Return => return Ok(Flow::Return),
            Command::Global(names) => {
                for n in names {
                    if self.vars.contains_key(n) {
                        return Err(RuntimeError(format!(
                            "variable '{n}' declared global after it was set"
                        )));
                    }
                    self.declared.insert(n.clone());
                }
            }
            Command::Error(m) => return Err(RuntimeError(format!("error command: {}", self.x(m)))),
        }
        Ok(Flow::Next)
    }

    /// Where a variable lives: the global table (`global.NAME`, or a name
    /// the current script declared `global`) or the script's own.
    fn var_slot(&self, name: &str) -> (bool, String) {
        let lower = name.to_ascii_lowercase();
        match global_name(&lower) {
            Some(g) => (true, g.to_string()),
            None => (self.declared.contains(&lower), lower),
        }
    }

    fn get_var(&self, name: &str) -> Option<&String> {
        match self.var_slot(name) {
            (true, k) => self.globals.get(&k),
            (false, k) => self.vars.get(&k),
        }
    }

    fn set_var(&mut self, name: &str, mut v: String) -> Result<(), RuntimeError> {
        let (global, key) = self.var_slot(name);
        let table = if global {
            &mut self.globals
        } else {
            &mut self.vars
        };
        if !table.contains_key(&key) && table.len() >= self.limits.max_variables {
            return Err(RuntimeError(format!(
                "too many variables (limit {})",
                self.limits.max_variables
            )));
        }
        truncate(&mut v, self.limits.max_variable_len);
        table.insert(key, v);
        Ok(())
    }

    /// RFC 6609 3.2: runs another script in this run (same actions, own
    /// variables except the global ones), bounded in depth and count.
    fn include(
        &mut self,
        global: bool,
        once: bool,
        optional: bool,
        name: &str,
    ) -> Result<Flow, RuntimeError> {
        let key = (global, name.to_string());
        if once && self.included.contains(&key) {
            return Ok(Flow::Next);
        }
        if self.include_stack.contains(&key) {
            return Err(RuntimeError(format!(
                "include loop: script '{name}' includes itself"
            )));
        }
        if self.include_stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(RuntimeError(format!(
                "includes nested too deeply (limit {MAX_INCLUDE_DEPTH})"
            )));
        }
        if self.included.len() >= MAX_INCLUDES && !self.included.contains(&key) {
            return Err(RuntimeError(format!(
                "too many included scripts (limit {MAX_INCLUDES})"
            )));
        }
        let src = match self.host.include(global, name) {
            Ok(Some(src)) => src,
            Ok(None) if optional => return Ok(Flow::Next),
            Ok(None) => {
                return Err(RuntimeError(format!("include: script '{name}' not found")));
            }
            Err(e) => return Err(RuntimeError(format!("include: script '{name}': {e}"))),
        };
        self.tick(src.len() as u64)?;
        let script = Script::compile(&src).map_err(|e| {
            RuntimeError(format!(
                "include: script '{name}': line {}: {}",
                e.pos, e.message
            ))
        })?;
        self.included.insert(key.clone());
        self.include_stack.push(key);
        let saved = (
            self.vars_on,
            std::mem::take(&mut self.vars),
            std::mem::take(&mut self.declared),
        );
        self.vars_on = script.uses(Extension::Variables);
        let flow = self.block(&script.commands);
        (self.vars_on, self.vars, self.declared) = saved;
        self.include_stack.pop();
        Ok(match flow? {
            Flow::Stop => Flow::Stop,
            Flow::Next | Flow::Return => Flow::Next,
        })
    }

    /// RFC 5230: the parameters, and whether the rules forbid an answer.
    fn vacation(&self, v: &Vacation) -> Action {
        let subject = v.subject.as_ref().map(|s| self.x(s));
        let from = v.from.as_ref().map(|s| self.x(s));
        let reason = self.x(&v.reason);
        let addresses = self.xl(&v.addresses);
        let handle = match &v.handle {
            Some(h) => self.x(h),
            // As Pigeonhole derives it, so that both agree on "already answered".
            None => format!(
                "{}{}{}{}",
                reason,
                subject.as_deref().unwrap_or("<default-subject>"),
                from.as_deref().unwrap_or("<default-from>"),
                if v.mime { "<MIME>" } else { "<NO-MIME>" }
            ),
        };
        let env = self.ctx.envelope;
        let sender = env.from.to_ascii_lowercase();
        let header = |n: &str| -> Vec<String> {
            self.header_values(n)
                .into_iter()
                .map(message::decode_text)
                .collect()
        };
        let local = message::split_address(&sender).0;
        let mut suppressed = None;
        if sender.is_empty() {
            suppressed = Some("null envelope sender".to_string());
        } else if local == "mailer-daemon"
            || local.starts_with("owner-")
            || local.ends_with("-request")
            || local == "listserv"
            || local == "majordomo"
        {
            suppressed = Some(format!("sender {sender} is a list or system address"));
        } else if header("auto-submitted")
            .iter()
            .any(|v| !v.eq_ignore_ascii_case("no"))
        {
            suppressed = Some("message is auto-submitted".into());
        } else if [
            "list-id",
            "list-help",
            "list-subscribe",
            "list-unsubscribe",
            "list-post",
            "list-owner",
            "list-archive",
        ]
        .iter()
        .any(|h| !header(h).is_empty())
        {
            suppressed = Some("message is from a mailing list".into());
        } else if header("precedence")
            .iter()
            .any(|p| ["bulk", "list", "junk"].contains(&p.to_ascii_lowercase().as_str()))
        {
            suppressed = Some("message has Precedence bulk, list or junk".into());
        } else {
            let mine: Vec<String> = std::iter::once(env.to.clone())
                .chain(addresses)
                .map(|a| a.to_ascii_lowercase())
                .collect();
            let found = ["to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc"]
                .iter()
                .flat_map(|h| self.header_values(h))
                .filter_map(message::decode_addresses)
                .flatten()
                .any(|a| mine.contains(&a.to_ascii_lowercase()));
            if !found {
                suppressed = Some("the recipient is not in To, Cc or Bcc".into());
            } else if mine.contains(&sender) {
                suppressed = Some("the sender is the recipient".into());
            }
        }
        Action::Vacation {
            to: env.from.clone(),
            period: v.period.unwrap_or(7 * 86400),
            subject,
            from,
            mime: v.mime,
            handle,
            reason,
            suppressed,
        }
    }

    fn test(&mut self, t: &Test) -> Result<bool, RuntimeError> {
        self.tick(1)?;
        let raw = self.ctx.raw;
        Ok(match t {
            Test::True => true,
            Test::False => false,
            Test::Not(t) => !self.test(t)?,
            Test::AllOf(l) => {
                for t in l {
                    if !self.test(t)? {
                        return Ok(false);
                    }
                }
                true
            }
            Test::AnyOf(l) => {
                for t in l {
                    if self.test(t)? {
                        return Ok(true);
                    }
                }
                false
            }
            Test::Exists(names) => self.xlc(names).iter().all(|n| self.has_header(n)),
            Test::Size { over, limit } => {
                let size = raw.len() as u64;
                if *over { size > *limit } else { size < *limit }
            }
            Test::Header {
                opts, names, keys, ..
            } => {
                // The fields and their decoded values go in vectors kept
                // from test to test (no allocation per test).
                let mut found = std::mem::take(&mut self.found);
                let mut texts = std::mem::take(&mut self.texts);
                self.fields_into(&self.xlc(names), opts, &mut found);
                texts.extend(found.iter().map(|v| message::decode_text_cow(v)));
                let hit = self.match_values(opts, &texts, keys);
                found.clear();
                texts.clear();
                (self.found, self.texts) = (found, texts);
                hit?
            }
            Test::Address {
                opts,
                part,
                names,
                keys,
            } => {
                let mut found = std::mem::take(&mut self.found);
                let mut texts = std::mem::take(&mut self.texts);
                self.fields_into(&self.xlc(names), opts, &mut found);
                // Each field's addresses are parsed once per run; the
                // usual forms are compared in the message's bytes.
                let delim = self.ctx.delimiter;
                for &h in &found {
                    let at = h.as_ptr() as usize - raw.as_ptr() as usize;
                    let parsed = self
                        .address_cache
                        .entry(at)
                        .or_insert_with(|| message::parse_addresses(h));
                    match parsed {
                        message::Addresses::One(a) => {
                            texts.extend(address_part(a, *part, delim).map(Cow::Borrowed))
                        }
                        message::Addresses::List(list) => texts.extend(
                            list.iter()
                                .filter_map(|a| address_part(a, *part, delim))
                                .map(|p| Cow::Owned(p.to_string())),
                        ),
                        message::Addresses::Invalid if *part == AddressPart::All => {
                            texts.push(message::decode_text_cow(h))
                        }
                        message::Addresses::Invalid => {}
                    }
                }
                let hit = self.match_values(opts, &texts, keys);
                found.clear();
                texts.clear();
                (self.found, self.texts) = (found, texts);
                hit?
            }
            Test::Envelope {
                opts,
                part,
                names,
                keys,
            } => {
                let env = self.ctx.envelope;
                let mut values = Vec::new();
                for n in self.xlc(names).iter() {
                    let v = match n.to_ascii_lowercase().as_str() {
                        "from" => &env.from,
                        "to" => &env.to,
                        _ => continue,
                    };
                    if v.is_empty() {
                        if *part == AddressPart::All {
                            values.push(String::new());
                        }
                    } else if let Some(p) = address_part(v, *part, self.ctx.delimiter) {
                        values.push(p.to_string());
                    }
                }
                self.match_values(opts, &values, keys)?
            }
            Test::Body {
                opts,
                transform,
                content,
                keys,
            } => {
                let msg = self.parsed()?;
                let texts = match (transform, content) {
                    (BodyTransform::Raw, _) => vec![message::raw_body(msg)],
                    (_, Some(types)) => message::body_texts(msg, Some(&self.xl(types))),
                    (_, None) => message::body_texts(msg, None),
                };
                self.tick(texts.iter().map(|t| t.len() as u64 / 64).sum())?;
                self.match_values(opts, &texts, keys)?
            }
            Test::Str {
                opts,
                sources,
                keys,
            } => {
                let mut values = self.xl(sources);
                if matches!(opts.match_type, MatchType::Count(_)) {
                    values.retain(|v| !v.is_empty());
                }
                self.match_values(opts, &values, keys)?
            }
            Test::HasFlag { opts, vars, keys } => {
                let values = if vars.is_empty() {
                    self.flags.clone()
                } else {
                    let strings: Vec<String> = vars
                        .iter()
                        .map(|v| self.get_var(v).cloned().unwrap_or_default())
                        .collect();
                    flag_list(&strings)
                };
                self.match_values(opts, &values, keys)?
            }
            Test::MailboxExists(names) => {
                self.xl(names).iter().all(|n| self.host.mailbox_exists(n))
            }
            Test::Environment { opts, name, keys } => {
                match self.ctx.environment.get(name.as_str()) {
                    Some(v) => {
                        let v = v.clone();
                        self.match_values(opts, &[v], keys)?
                    }
                    None => false,
                }
            }
            Test::Date {
                opts,
                zone,
                header,
                part,
                keys,
            } => {
                let dates: Vec<DateTime> = match header {
                    None => vec![DateTime::from_timestamp(self.ctx.now)],
                    Some(h) => {
                        let h = self.x(h);
                        let mut all = Vec::new();
                        self.fields_into(std::slice::from_ref(&h), opts, &mut all);
                        all.into_iter()
                            .filter_map(|v| {
                                let text = message::decode_text(v);
                                // A Received field's date follows its last ';'.
                                let d = text.rsplit(';').next().unwrap_or(&text).trim();
                                DateTime::parse_rfc822(d)
                            })
                            .collect()
                    }
                };
                let mut values = Vec::new();
                for d in dates {
                    if !(1..=12).contains(&d.month) || d.day == 0 || d.year == 0 {
                        continue;
                    }
                    let d = match zone {
                        Zone::Original if header.is_some() => d,
                        Zone::Fixed(z) => match parse_zone(&self.x(z)) {
                            Some(off) => d.to_timezone(off),
                            None => continue,
                        },
                        _ => d.to_timezone(self.ctx.local_offset),
                    };
                    values.push(date_part(&d, part));
                }
                self.match_values(opts, &values, keys)?
            }
            Test::Ihave(names) => names.iter().all(|n| crate::compile::capability_known(n)),
            Test::Duplicate {
                handle,
                source,
                seconds,
                last,
            } => {
                let id = match source {
                    DupSource::MessageId => self
                        .header_values("message-id")
                        .first()
                        .map(|v| message::decode_text(v)),
                    DupSource::Header(h) => self
                        .header_values(&self.x(h))
                        .first()
                        .map(|v| message::decode_text(v)),
                    DupSource::UniqueId(u) => Some(self.x(u)),
                };
                // RFC 7352 3.1: no identity, no duplicate (and nothing tracked).
                let Some(id) = id.filter(|i| !i.is_empty()) else {
                    return Ok(false);
                };
                let handle = handle.as_ref().map(|h| self.x(h)).unwrap_or_default();
                let key = format!("{handle}\0{id}");
                let period = seconds
                    .unwrap_or(DUPLICATE_DEFAULT_SECONDS)
                    .min(DUPLICATE_MAX_SECONDS);
                let seen = self.host.duplicate_seen(&key, period);
                // :last restarts the period at every occurrence.
                if (!seen || *last) && !self.duplicates.iter().any(|d| d.key == key) {
                    self.duplicates.push(DuplicateMark {
                        key,
                        seconds: period,
                    });
                }
                seen
            }
        })
    }

    /// Any value matches any key; :count compares the number of values.
    fn match_values<S: AsRef<str>>(
        &mut self,
        opts: &MatchOpts,
        values: &[S],
        keys: &[String],
    ) -> Result<bool, RuntimeError> {
        let keys = self.xlc(keys);
        match_keys(&mut self.matching, self.vars_on, opts, values, &keys)
    }
}

/// What matching changes in a run: the budget, the compiled regular
/// expressions, the match variables. Apart from the rest of [`Run`] so
/// that values borrowed from the run's caches can be matched.
struct Matching {
    budget: u64,
    regex_cache: HashMap<(String, bool), regex::Regex>,
    matched: Vec<String>,
}

/// [`Run::match_values`] with the keys expanded.
fn match_keys<S: AsRef<str>>(
    m: &mut Matching,
    vars_on: bool,
    opts: &MatchOpts,
    values: &[S],
    keys: &[String],
) -> Result<bool, RuntimeError> {
    // RFC 5231 4.2: the count, as a decimal string, is compared with
    // the key by the test's comparator (so i;ascii-numeric for numbers).
    if let MatchType::Count(rel) = opts.match_type {
        let n = values.len().to_string();
        return Ok(keys
            .iter()
            .any(|k| matcher::relation_holds(rel, matcher::compare(&n, k, opts.comparator))));
    }
    let want_caps = vars_on && matches!(opts.match_type, MatchType::Matches | MatchType::Regex);
    let mut caps = Vec::new();
    for k in keys.iter() {
        let re = if opts.match_type == MatchType::Regex {
            let ci = opts.comparator == Comparator::AsciiCasemap;
            let key = (k.to_string(), ci);
            if !m.regex_cache.contains_key(&key) {
                matcher::charge(&mut m.budget, k.len() as u64 * 100).map_err(over)?;
                let re = matcher::compile_regex(k, opts.comparator)
                    .map_err(|e| RuntimeError(format!("bad regular expression {k:?}: {e}")))?;
                m.regex_cache.insert(key.clone(), re);
            }
            m.regex_cache.get(&key).cloned()
        } else {
            None
        };
        for v in values {
            let hit = matcher::matches(
                opts.match_type,
                opts.comparator,
                v.as_ref(),
                k,
                want_caps.then_some(&mut caps),
                &mut m.budget,
                re.as_ref(),
            )
            .map_err(over)?;
            if hit {
                if want_caps {
                    caps.truncate(10);
                    m.matched = std::mem::take(&mut caps);
                }
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// The part of an address an address or envelope test compares (RFC
/// 5228 2.7.4, RFC 5233 for `:user` and `:detail` with `delim`).
fn address_part<'s>(a: &'s str, part: AddressPart, delim: &str) -> Option<&'s str> {
    let (local, domain) = message::split_address(a);
    Some(match part {
        AddressPart::All => a,
        AddressPart::Localpart => local,
        AddressPart::Domain => domain?,
        AddressPart::User => match local.split_once(delim).filter(|_| !delim.is_empty()) {
            Some((u, _)) => u,
            None => local,
        },
        AddressPart::Detail => local.split_once(delim).filter(|_| !delim.is_empty())?.1,
    })
}

/// `global.NAME` (RFC 6609 3.5) → `NAME`.
fn global_name(s: &str) -> Option<&str> {
    let (ns, name) = s.split_once('.')?;
    (ns.eq_ignore_ascii_case("global") && is_ident(name)).then_some(name)
}

fn is_ident(s: &str) -> bool {
    s.bytes()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// `:index N [:last]` (RFC 5260 4) on the fields `all[start..]`, in
/// place: one field, counted from the top or the bottom.
fn pick_index(all: &mut Vec<&[u8]>, start: usize, opts: &MatchOpts) {
    if let Some((n, last)) = opts.index {
        let n = n as usize;
        let count = all.len() - start;
        if n == 0 || n > count {
            all.truncate(start);
            return;
        }
        let i = start + if last { count - n } else { n - 1 };
        all[start] = all[i];
        all.truncate(start + 1);
    }
}

/// RFC 5229 4: the modifiers of `set`.
fn modify(m: Modifier, v: &str) -> String {
    match m {
        Modifier::Lower => v.to_lowercase(),
        Modifier::Upper => v.to_uppercase(),
        Modifier::LowerFirst | Modifier::UpperFirst => {
            let mut c = v.chars();
            match c.next() {
                Some(f) => {
                    let f: String = if m == Modifier::UpperFirst {
                        f.to_uppercase().collect()
                    } else {
                        f.to_lowercase().collect()
                    };
                    f + c.as_str()
                }
                None => String::new(),
            }
        }
        Modifier::QuoteWildcard => {
            let mut out = String::new();
            for c in v.chars() {
                if matches!(c, '*' | '?' | '\\') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        Modifier::QuoteRegex => regex::escape(v),
        Modifier::Length => v.chars().count().to_string(),
    }
}

/// "+hhmm" / "-hhmm" to seconds east of UTC.
pub(crate) fn parse_zone(z: &str) -> Option<i64> {
    let b = z.as_bytes();
    if b.len() != 5 || !b[1..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sign = match b[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let h: i64 = z[1..3].parse().ok()?;
    let m: i64 = z[3..5].parse().ok()?;
    (h < 24 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// RFC 5260 4.2's date parts.
fn date_part(d: &DateTime, part: &str) -> String {
    let zone = format!(
        "{}{:02}{:02}",
        if d.tz_before_gmt { '-' } else { '+' },
        d.tz_hour,
        d.tz_minute
    );
    match part {
        "year" => format!("{:04}", d.year),
        "month" => format!("{:02}", d.month),
        "day" => format!("{:02}", d.day),
        "date" => format!("{:04}-{:02}-{:02}", d.year, d.month, d.day),
        "julian" => (d.to_timestamp_local().div_euclid(86400) + 40587).to_string(),
        "hour" => format!("{:02}", d.hour),
        "minute" => format!("{:02}", d.minute),
        "second" => format!("{:02}", d.second),
        "time" => format!("{:02}:{:02}:{:02}", d.hour, d.minute, d.second),
        // RFC 3339 via RFC 5260 4.2: "Z" for UTC, as Pigeonhole writes it.
        "iso8601" => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{}",
            d.year,
            d.month,
            d.day,
            d.hour,
            d.minute,
            d.second,
            if zone == "+0000" {
                "Z".to_string()
            } else {
                format!("{}:{}", &zone[..3], &zone[3..])
            }
        ),
        "std11" => {
            const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
            const MONTHS: [&str; 12] = [
                "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
            ];
            format!(
                "{}, {} {} {:04} {:02}:{:02}:{:02} {}",
                DAYS[d.day_of_week() as usize % 7],
                d.day,
                MONTHS[(d.month as usize - 1) % 12],
                d.year,
                d.hour,
                d.minute,
                d.second,
                zone
            )
        }
        "zone" => zone,
        "weekday" => d.day_of_week().to_string(),
        _ => String::new(),
    }
}

/// Everything about a run besides the script, message and envelope.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub environment: HashMap<String, String>,
    pub delimiter: Cow<'static, str>,
    pub now: i64,
    pub local_offset: i64,
    pub limits: Limits,
}

impl Default for RunOptions {
    fn default() -> RunOptions {
        RunOptions {
            environment: HashMap::new(),
            delimiter: "+".into(),
            now: 0,
            local_offset: 0,
            limits: Limits::default(),
        }
    }
}

impl Script {
    /// Parses `raw` (with mail-parser) and runs the script on it. A message
    /// mail-parser cannot parse at all is a runtime error (implicit keep).
    pub fn evaluate(
        &self,
        raw: &[u8],
        envelope: &Envelope,
        opts: &RunOptions,
        host: &dyn Host,
    ) -> Outcome {
        // Only the body test (and an included script, which may use it)
        // looks past the header: other scripts get no mail-parser parse
        // at all. Their tests find header fields with the header index
        // (module `headers`: the fields mail-parser's header-only parse
        // finds, built on the first look) and decode only the values
        // they read (`message`). A message mail-parser would find no
        // header field in is the same runtime error as before.
        let parsed = if self.needs_body() {
            match mail_parser::MessageParser::default().parse(raw) {
                Some(m) => Some(m),
                None => return unparsable(),
            }
        } else if HeaderIndex::has_field(raw) {
            None
        } else {
            return unparsable();
        };
        let ctx = Context {
            raw,
            message: parsed.as_ref(),
            envelope,
            environment: &opts.environment,
            delimiter: &opts.delimiter,
            now: opts.now,
            local_offset: opts.local_offset,
        };
        self.run(&ctx, host, &opts.limits)
    }
}

/// The outcome for a message that cannot be parsed: implicit keep.
fn unparsable() -> Outcome {
    Outcome {
        actions: vec![Action::Keep { flags: Vec::new() }],
        implicit_keep: true,
        error: Some(RuntimeError("message could not be parsed".into())),
        duplicates: Vec::new(),
    }
}
