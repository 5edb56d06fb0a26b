//! Validation (RFC 5228 section 3.2 `require`, the argument rules of each
//! command and test) from the generic tree into the typed program the
//! interpreter runs.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use crate::parse::{self, RawArg, RawCommand, RawTest};
use crate::{Error, Pos, Warning, encoded};

/// Most warnings kept for one script (a hostile script could otherwise
/// make a list as long as itself); later ones are counted in one line.
pub const MAX_WARNINGS: usize = 32;

/// The extensions this interpreter implements (the `require` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Extension {
    // At most 32 (a bit each in `Script::extensions`).
    Fileinto,
    Envelope,
    EncodedCharacter,
    Reject,
    Ereject,
    Imap4flags,
    Copy,
    Body,
    Variables,
    Relational,
    Subaddress,
    Mailbox,
    Environment,
    Vacation,
    VacationSeconds,
    Regex,
    AsciiNumeric,
    Date,
    Index,
    Ihave,
    Include,
    Duplicate,
}

// Each extension has a bit in `Script::extensions`.
const _: () = assert!(Extension::ALL.len() <= 32 && (Extension::Duplicate as usize) < 32);

impl Extension {
    /// The extension's bit in [`Script`]'s set.
    fn bit(self) -> u32 {
        1 << self as u32
    }

    pub const ALL: &'static [(&'static str, Extension)] = &[
        ("fileinto", Extension::Fileinto),
        ("envelope", Extension::Envelope),
        ("encoded-character", Extension::EncodedCharacter),
        ("reject", Extension::Reject),
        ("ereject", Extension::Ereject),
        ("imap4flags", Extension::Imap4flags),
        ("copy", Extension::Copy),
        ("body", Extension::Body),
        ("variables", Extension::Variables),
        ("relational", Extension::Relational),
        ("subaddress", Extension::Subaddress),
        ("mailbox", Extension::Mailbox),
        ("environment", Extension::Environment),
        ("vacation", Extension::Vacation),
        ("vacation-seconds", Extension::VacationSeconds),
        ("regex", Extension::Regex),
        ("comparator-i;ascii-numeric", Extension::AsciiNumeric),
        ("date", Extension::Date),
        ("index", Extension::Index),
        ("ihave", Extension::Ihave),
        ("include", Extension::Include),
        ("duplicate", Extension::Duplicate),
    ];

    pub fn from_name(name: &str) -> Option<Extension> {
        let name = name.to_ascii_lowercase();
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, e)| *e)
    }

    /// The `require` capability string list (what ManageSieve's SIEVE
    /// capability and `ihave` report).
    pub fn names() -> impl Iterator<Item = &'static str> {
        Self::ALL.iter().map(|(n, _)| *n)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparator {
    Octet,
    AsciiCasemap,
    AsciiNumeric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchType {
    Is,
    Contains,
    Matches,
    Regex,
    Value(Relation),
    Count(Relation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPart {
    All,
    Localpart,
    Domain,
    User,
    Detail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchOpts {
    pub comparator: Comparator,
    pub match_type: MatchType,
    /// `:index N` (RFC 5260), with `:last`.
    pub index: Option<(u64, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTransform {
    Raw,
    Text,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    True,
    False,
    Not(Box<Test>),
    AllOf(Vec<Test>),
    AnyOf(Vec<Test>),
    Exists(Vec<String>),
    Size {
        over: bool,
        limit: u64,
    },
    Header {
        opts: MatchOpts,
        names: Vec<String>,
        keys: Vec<String>,
    },
    Address {
        opts: MatchOpts,
        part: AddressPart,
        names: Vec<String>,
        keys: Vec<String>,
    },
    Envelope {
        opts: MatchOpts,
        part: AddressPart,
        names: Vec<String>,
        keys: Vec<String>,
    },
    Body {
        opts: MatchOpts,
        transform: BodyTransform,
        content: Option<Vec<String>>,
        keys: Vec<String>,
    },
    Str {
        opts: MatchOpts,
        sources: Vec<String>,
        keys: Vec<String>,
    },
    HasFlag {
        opts: MatchOpts,
        vars: Vec<String>,
        keys: Vec<String>,
    },
    MailboxExists(Vec<String>),
    Environment {
        opts: MatchOpts,
        name: String,
        keys: Vec<String>,
    },
    Date {
        opts: MatchOpts,
        zone: Zone,
        header: Option<String>,
        part: String,
        keys: Vec<String>,
    },
    Ihave(Vec<String>),
    /// RFC 7352.
    Duplicate {
        handle: Option<String>,
        source: DupSource,
        seconds: Option<u64>,
        last: bool,
    },
}

/// What identifies a message for `duplicate` (RFC 7352 3.1).
#[derive(Debug, Clone, PartialEq)]
pub enum DupSource {
    MessageId,
    Header(String),
    UniqueId(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Zone {
    Local,
    Original,
    Fixed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagOp {
    Set,
    Add,
    Remove,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    Lower,
    Upper,
    LowerFirst,
    UpperFirst,
    QuoteWildcard,
    QuoteRegex,
    Length,
}

impl Modifier {
    fn precedence(self) -> u8 {
        match self {
            Modifier::Lower | Modifier::Upper => 40,
            Modifier::LowerFirst | Modifier::UpperFirst => 30,
            Modifier::QuoteWildcard => 20,
            Modifier::QuoteRegex => 15,
            Modifier::Length => 10,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Vacation {
    /// Seconds between two answers to one sender (`:days` × 86400 or `:seconds`).
    pub period: Option<u64>,
    pub subject: Option<String>,
    pub from: Option<String>,
    pub addresses: Vec<String>,
    pub mime: bool,
    pub handle: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    If(Vec<(Test, Vec<Command>)>, Option<Vec<Command>>),
    Stop,
    Keep {
        flags: Option<Vec<String>>,
    },
    Discard,
    Redirect {
        address: String,
        copy: bool,
    },
    FileInto {
        mailbox: String,
        copy: bool,
        create: bool,
        flags: Option<Vec<String>>,
    },
    Reject {
        reason: String,
        extended: bool,
    },
    Flag {
        op: FlagOp,
        var: Option<String>,
        flags: Vec<String>,
    },
    Set {
        name: String,
        value: String,
        modifiers: Vec<Modifier>,
    },
    Vacation(Vacation),
    /// RFC 6609: run another script of the user (or a global one).
    Include {
        global: bool,
        once: bool,
        optional: bool,
        name: String,
    },
    /// RFC 6609 3.3: end the current (included) script.
    Return,
    /// RFC 6609 3.4: variables shared with the including and included scripts.
    Global(Vec<String>),
    /// RFC 5463 `error`: end the run with a runtime error (this message).
    Error(String),
}

/// An if/elsif chain being built: the branches and the else block.
type IfChain = (Vec<(Test, Vec<Command>)>, Option<Vec<Command>>);

/// A compiled script.
#[derive(Debug, Clone)]
pub struct Script {
    pub(crate) commands: Vec<Command>,
    /// The extensions required, one bit each (`1 << e as u32`): asked on
    /// every run, so not a hashed set.
    extensions: u32,
    warnings: Vec<Warning>,
    includes: Vec<IncludeRef>,
    mailboxes: Vec<(Pos, String)>,
}

/// An `include` of the script, as written (RFC 6609 3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncludeRef {
    pub pos: Pos,
    pub global: bool,
    pub optional: bool,
    pub name: String,
}

/// What validation collects besides the program: warnings and includes,
/// shared by the validators of nested `ihave` blocks.
#[derive(Default)]
struct Notes {
    warnings: Vec<Warning>,
    dropped: usize,
    includes: Vec<IncludeRef>,
    mailboxes: Vec<(Pos, String)>,
}

impl Script {
    /// Whether running the script may look at the message body: it
    /// requires `body` (RFC 5173), or `include` (RFC 6609), whose scripts
    /// may.
    pub fn needs_body(&self) -> bool {
        self.uses_any(&[Extension::Body, Extension::Include])
    }

    /// Parses and validates a script.
    pub fn compile(src: &str) -> Result<Script, Error> {
        let raw = parse::parse(src)?;
        let mut v = Validator {
            ext: HashSet::new(),
            notes: Rc::default(),
        };
        let mut commands = Vec::new();
        let mut requires_done = false;
        for c in &raw {
            if c.name == "require" {
                if requires_done {
                    return Err(Error::new(
                        c.pos,
                        "require must come before any other command",
                    ));
                }
                v.require(c)?;
                continue;
            }
            requires_done = true;
        }
        let body: Vec<RawCommand> = raw.into_iter().filter(|c| c.name != "require").collect();
        let mut chain: Option<IfChain> = None;
        v.block(&body, &mut commands, &mut chain)?;
        let notes = std::mem::take(&mut *v.notes.borrow_mut());
        let mut warnings = notes.warnings;
        if notes.dropped > 0 {
            let pos = warnings.last().map_or(Pos::default(), |w| w.pos);
            warnings.push(Warning::new(
                pos,
                format!("{} more warnings not shown", notes.dropped),
            ));
        }
        Ok(Script {
            commands,
            extensions: v.ext.iter().fold(0, |bits, &e| bits | e.bit()),
            warnings,
            includes: notes.includes,
            mailboxes: notes.mailboxes,
        })
    }

    /// What the script does that is valid but probably not meant (in the
    /// order found, at most [`MAX_WARNINGS`] and a count of the rest):
    /// ManageSieve's `OK (WARNINGS)` (RFC 5804 1.3), `sieve-check check`.
    pub fn warnings(&self) -> &[Warning] {
        &self.warnings
    }

    /// The script's `include` commands, in order (ManageSieve warns about
    /// a personal one that does not exist at upload, as Pigeonhole does).
    pub fn includes(&self) -> &[IncludeRef] {
        &self.includes
    }

    /// The mailbox names of `fileinto` known at compile time (without
    /// variables), with where they are: a store checks them against its
    /// own naming rules (a name it cannot take keeps the message in
    /// INBOX at delivery), as ManageSieve and sieve-check do.
    pub fn fileinto_mailboxes(&self) -> &[(Pos, String)] {
        &self.mailboxes
    }

    /// Warnings for the `fileinto` mailbox names that `check` (the
    /// store's naming rule) refuses: valid Sieve, but the message would
    /// be kept in INBOX instead (RFC 5228 4.1 leaves a mailbox that
    /// cannot be used to the implementation).
    pub fn mailbox_warnings(&self, check: impl Fn(&str) -> Result<(), String>) -> Vec<Warning> {
        self.mailboxes
            .iter()
            .filter_map(|(pos, name)| {
                check(name).err().map(|e| {
                    Warning::new(
                        *pos,
                        format!(
                            "fileinto: mailbox name '{}' cannot be used here ({e}); \
                             the message would be kept in INBOX",
                            sanitize(name)
                        ),
                    )
                })
            })
            .collect()
    }

    pub fn uses(&self, e: Extension) -> bool {
        self.extensions & e.bit() != 0
    }

    /// Whether the script requires any of `exts`.
    pub fn uses_any(&self, exts: &[Extension]) -> bool {
        exts.iter().any(|&e| self.uses(e))
    }
}

struct Validator {
    ext: HashSet<Extension>,
    notes: Rc<RefCell<Notes>>,
}

/// Tagged arguments and positional ones, split.
struct Args {
    tags: Vec<(String, Pos, Option<RawArg>)>,
    positional: Vec<RawArg>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Param {
    None,
    Str,
    List,
    Num,
}

fn str_of(a: &RawArg, what: &str) -> Result<String, Error> {
    match a {
        // "x" or a one-string list ["x"], as Pigeonhole accepts.
        RawArg::Strings { list, .. } if list.len() == 1 => Ok(list[0].clone()),
        other => Err(Error::new(other.pos(), format!("{what} must be a string"))),
    }
}

fn list_of(a: &RawArg, what: &str) -> Result<Vec<String>, Error> {
    match a {
        RawArg::Strings { list, .. } => Ok(list.clone()),
        other => Err(Error::new(
            other.pos(),
            format!("{what} must be a string list"),
        )),
    }
}

impl Validator {
    fn has(&self, e: Extension) -> bool {
        self.ext.contains(&e)
    }

    fn warn(&self, pos: Pos, message: String) {
        let mut n = self.notes.borrow_mut();
        if n.warnings.len() < MAX_WARNINGS {
            n.warnings.push(Warning::new(pos, message));
        } else {
            n.dropped += 1;
        }
    }

    /// A string whose value is known at compile time: with `variables`,
    /// one without `${` (RFC 5229 3: it may expand to anything).
    fn literal(&self, s: &str) -> bool {
        !(self.has(Extension::Variables) && s.contains("${"))
    }

    /// RFC 5228 2.4.2.2 / RFC 5322 3.6.8: a header field name is 1*ftext.
    /// An invalid one can never match (Pigeonhole warns: "specified
    /// header field name '...' is invalid", `sieve_command_verify_headers_argument`).
    fn check_header_names(&self, names: &[String], pos: Pos) {
        for n in names.iter().filter(|n| self.literal(n)) {
            if !valid_header_name(n) {
                self.warn(
                    pos,
                    format!("specified header field name '{}' is invalid", sanitize(n)),
                );
            }
        }
    }

    /// RFC 5232 3 / RFC 3501 flags: a system flag or an atom. An invalid
    /// one is dropped at delivery (Pigeonhole warns once per command, for
    /// the first: `ext_imapflags_command_validate`).
    fn check_flags(&self, flags: &[String], pos: Pos, what: &str) {
        let bad = flags
            .iter()
            .filter(|f| self.literal(f))
            .flat_map(|f| f.split_ascii_whitespace())
            .find(|f| !valid_flag(f));
        if let Some(f) = bad {
            self.warn(
                pos,
                format!(
                    "IMAP flag '{}' specified for {what} is invalid and will be ignored \
                     (only the first invalid one is reported)",
                    sanitize(f)
                ),
            );
        }
    }

    fn need(&self, e: Extension, pos: Pos, what: &str) -> Result<(), Error> {
        if self.has(e) {
            Ok(())
        } else {
            let name = Extension::ALL
                .iter()
                .find(|(_, x)| *x == e)
                .map_or("?", |(n, _)| *n);
            Err(Error::new(pos, format!("{what} needs require \"{name}\"")))
        }
    }

    fn require(&mut self, c: &RawCommand) -> Result<(), Error> {
        if c.block.is_some() || !c.tests.is_empty() || c.args.len() != 1 {
            return Err(Error::new(c.pos, "require takes one string list"));
        }
        for name in list_of(&c.args[0], "require's argument")? {
            let lower = name.to_ascii_lowercase();
            if lower == "comparator-i;octet" || lower == "comparator-i;ascii-casemap" {
                continue;
            }
            match Extension::from_name(&lower) {
                Some(e) => {
                    self.ext.insert(e);
                    if e == Extension::VacationSeconds {
                        self.ext.insert(Extension::Vacation);
                    }
                }
                None => {
                    return Err(Error::new(
                        c.args[0].pos(),
                        format!("unsupported extension '{name}'"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Decodes `${hex:..}`/`${unicode:..}` when encoded-character is required.
    fn s(&self, s: String) -> String {
        if self.has(Extension::EncodedCharacter) {
            encoded::decode(&s)
        } else {
            s
        }
    }
    fn sl(&self, l: Vec<String>) -> Vec<String> {
        l.into_iter().map(|s| self.s(s)).collect()
    }

    fn split(
        &self,
        args: &[RawArg],
        what: &str,
        spec: &dyn Fn(&str) -> Option<Param>,
    ) -> Result<Args, Error> {
        let mut out = Args {
            tags: Vec::new(),
            positional: Vec::new(),
        };
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            match a {
                RawArg::Tag(t, p) => {
                    if !out.positional.is_empty() {
                        return Err(Error::new(
                            *p,
                            format!("tag ':{t}' after the positional arguments of {what}"),
                        ));
                    }
                    let Some(param) = spec(t) else {
                        return Err(Error::new(*p, format!("unknown tag ':{t}' for {what}")));
                    };
                    if out.tags.iter().any(|(x, _, _)| x == t) {
                        return Err(Error::new(*p, format!("tag ':{t}' given twice")));
                    }
                    let value = match param {
                        Param::None => None,
                        _ => {
                            let v = it.next().ok_or_else(|| {
                                Error::new(*p, format!("tag ':{t}' needs an argument"))
                            })?;
                            let ok = match (param, v) {
                                (Param::Num, RawArg::Num(..)) => true,
                                (Param::Str, RawArg::Strings { list, .. }) => list.len() == 1,
                                (Param::List, RawArg::Strings { .. }) => true,
                                _ => false,
                            };
                            if !ok {
                                let kind = match param {
                                    Param::Num => "a number",
                                    Param::Str => "a string",
                                    _ => "a string list",
                                };
                                return Err(Error::new(
                                    v.pos(),
                                    format!("tag ':{t}' needs {kind}"),
                                ));
                            }
                            Some(v.clone())
                        }
                    };
                    out.tags.push((t.clone(), *p, value));
                }
                other => out.positional.push(other.clone()),
            }
        }
        Ok(out)
    }

    /// The tags shared by tests: comparator, match type, address part, index.
    fn match_spec(t: &str) -> Option<Param> {
        match t {
            "comparator" | "value" | "count" => Some(Param::Str),
            "is" | "contains" | "matches" | "regex" | "all" | "localpart" | "domain" | "user"
            | "detail" | "last" => Some(Param::None),
            "index" => Some(Param::Num),
            _ => None,
        }
    }

    fn match_opts(&self, a: &Args, allow_part: bool) -> Result<(MatchOpts, AddressPart), Error> {
        let mut comparator = Comparator::AsciiCasemap;
        let mut mt: Option<(MatchType, Pos)> = None;
        let mut part: Option<AddressPart> = None;
        let mut index = None;
        let mut last = None;
        for (t, p, v) in &a.tags {
            let set_mt = |mt: &mut Option<(MatchType, Pos)>, m| {
                if mt.is_some() {
                    return Err(Error::new(*p, "more than one match type"));
                }
                *mt = Some((m, *p));
                Ok(())
            };
            let rel = |v: &Option<RawArg>| -> Result<Relation, Error> {
                let s = str_of(v.as_ref().expect("checked"), "relation")?;
                Ok(match s.to_ascii_lowercase().as_str() {
                    "gt" => Relation::Gt,
                    "ge" => Relation::Ge,
                    "lt" => Relation::Lt,
                    "le" => Relation::Le,
                    "eq" => Relation::Eq,
                    "ne" => Relation::Ne,
                    _ => return Err(Error::new(*p, format!("unknown relational operator '{s}'"))),
                })
            };
            match t.as_str() {
                "comparator" => {
                    let s = str_of(v.as_ref().expect("checked"), "comparator")?;
                    comparator = match s.to_ascii_lowercase().as_str() {
                        "i;octet" => Comparator::Octet,
                        "i;ascii-casemap" => Comparator::AsciiCasemap,
                        "i;ascii-numeric" => {
                            self.need(Extension::AsciiNumeric, *p, "comparator i;ascii-numeric")?;
                            Comparator::AsciiNumeric
                        }
                        _ => return Err(Error::new(*p, format!("unknown comparator '{s}'"))),
                    };
                }
                "is" => set_mt(&mut mt, MatchType::Is)?,
                "contains" => set_mt(&mut mt, MatchType::Contains)?,
                "matches" => set_mt(&mut mt, MatchType::Matches)?,
                "regex" => {
                    self.need(Extension::Regex, *p, ":regex")?;
                    set_mt(&mut mt, MatchType::Regex)?
                }
                "value" => {
                    self.need(Extension::Relational, *p, ":value")?;
                    set_mt(&mut mt, MatchType::Value(rel(v)?))?
                }
                "count" => {
                    self.need(Extension::Relational, *p, ":count")?;
                    set_mt(&mut mt, MatchType::Count(rel(v)?))?
                }
                "all" | "localpart" | "domain" | "user" | "detail" => {
                    if !allow_part {
                        return Err(Error::new(*p, format!("unknown tag ':{t}'")));
                    }
                    if part.is_some() {
                        return Err(Error::new(*p, "more than one address part"));
                    }
                    if t == "user" || t == "detail" {
                        self.need(Extension::Subaddress, *p, &format!(":{t}"))?;
                    }
                    part = Some(match t.as_str() {
                        "all" => AddressPart::All,
                        "localpart" => AddressPart::Localpart,
                        "domain" => AddressPart::Domain,
                        "user" => AddressPart::User,
                        _ => AddressPart::Detail,
                    });
                }
                "index" => {
                    self.need(Extension::Index, *p, ":index")?;
                    let Some(RawArg::Num(n, _)) = v else {
                        unreachable!()
                    };
                    if *n == 0 {
                        return Err(Error::new(*p, ":index starts at 1"));
                    }
                    index = Some(*n);
                }
                "last" => {
                    self.need(Extension::Index, *p, ":last")?;
                    last = Some(*p);
                }
                _ => {}
            }
        }
        if let (Some(p), None) = (last, index) {
            return Err(Error::new(p, ":last needs :index"));
        }
        let match_type = mt.map_or(MatchType::Is, |(m, _)| m);
        if comparator == Comparator::AsciiNumeric
            && matches!(
                match_type,
                MatchType::Contains | MatchType::Matches | MatchType::Regex
            )
        {
            return Err(Error::new(
                mt.expect("set").1,
                "i;ascii-numeric supports only :is, :value and :count",
            ));
        }
        Ok((
            MatchOpts {
                comparator,
                match_type,
                index: index.map(|i| (i, last.is_some())),
            },
            part.unwrap_or(AddressPart::All),
        ))
    }

    fn positional(&self, a: &Args, n: usize, what: &str, at: Pos) -> Result<Vec<RawArg>, Error> {
        if a.positional.len() != n {
            return Err(Error::new(
                a.positional.get(n).map_or(at, RawArg::pos),
                format!(
                    "{what} takes {n} positional argument{}, found {}",
                    if n == 1 { "" } else { "s" },
                    a.positional.len()
                ),
            ));
        }
        Ok(a.positional.clone())
    }

    fn no_tests(&self, tests: &[RawTest], what: &str) -> Result<(), Error> {
        match tests.first() {
            Some(t) => Err(Error::new(t.pos, format!("{what} takes no test"))),
            None => Ok(()),
        }
    }

    fn check_keys(&self, opts: &MatchOpts, keys: &[String], pos: Pos) -> Result<(), Error> {
        if opts.match_type == MatchType::Regex && !self.has(Extension::Variables) {
            for k in keys {
                crate::matcher::compile_regex(k, opts.comparator)
                    .map_err(|e| Error::new(pos, format!("bad regular expression: {e}")))?;
            }
        }
        Ok(())
    }

    fn test(&self, t: &RawTest) -> Result<Test, Error> {
        let name = t.name.as_str();
        let simple = |test: Test| -> Result<Test, Error> {
            if !t.args.is_empty() {
                return Err(Error::new(
                    t.args[0].pos(),
                    format!("{name} takes no argument"),
                ));
            }
            self.no_tests(&t.tests, name)?;
            Ok(test)
        };
        match name {
            "true" => simple(Test::True),
            "false" => simple(Test::False),
            "not" => {
                if !t.args.is_empty() || t.tests.len() != 1 {
                    return Err(Error::new(t.pos, "not takes exactly one test"));
                }
                Ok(Test::Not(Box::new(self.test(&t.tests[0])?)))
            }
            "allof" | "anyof" => {
                if !t.args.is_empty() || t.tests.is_empty() {
                    return Err(Error::new(t.pos, format!("{name} takes a test list")));
                }
                let l = t
                    .tests
                    .iter()
                    .map(|x| self.test(x))
                    .collect::<Result<_, _>>()?;
                Ok(if name == "allof" {
                    Test::AllOf(l)
                } else {
                    Test::AnyOf(l)
                })
            }
            "exists" => {
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|_| None)?;
                let p = self.positional(&a, 1, name, t.pos)?;
                let names = self.sl(list_of(&p[0], "header names")?);
                self.check_header_names(&names, p[0].pos());
                Ok(Test::Exists(names))
            }
            "size" => {
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|t| {
                    matches!(t, "over" | "under").then_some(Param::None)
                })?;
                if a.tags.len() != 1 {
                    return Err(Error::new(
                        t.pos,
                        "size needs exactly one of :over or :under",
                    ));
                }
                let p = self.positional(&a, 1, name, t.pos)?;
                let RawArg::Num(limit, _) = p[0] else {
                    return Err(Error::new(p[0].pos(), "size needs a number"));
                };
                Ok(Test::Size {
                    over: a.tags[0].0 == "over",
                    limit,
                })
            }
            "header" | "address" | "envelope" | "string" | "hasflag" | "environment" => {
                self.no_tests(&t.tests, name)?;
                match name {
                    "envelope" => self.need(Extension::Envelope, t.pos, "envelope")?,
                    "string" => self.need(Extension::Variables, t.pos, "string")?,
                    "hasflag" => self.need(Extension::Imap4flags, t.pos, "hasflag")?,
                    "environment" => self.need(Extension::Environment, t.pos, "environment")?,
                    _ => {}
                }
                let a = self.split(&t.args, name, &Self::match_spec)?;
                let is_addr = name == "address" || name == "envelope";
                let (opts, part) = self.match_opts(&a, is_addr)?;
                if opts.index.is_some() && !matches!(name, "header" | "address") {
                    return Err(Error::new(
                        t.pos,
                        format!(":index is not allowed on {name}"),
                    ));
                }
                if name == "hasflag" {
                    let (vars, keys) = match a.positional.len() {
                        1 => (vec![], list_of(&a.positional[0], "flags")?),
                        2 => {
                            self.need(Extension::Variables, t.pos, "hasflag with variables")?;
                            (
                                list_of(&a.positional[0], "variable list")?,
                                list_of(&a.positional[1], "flags")?,
                            )
                        }
                        _ => return Err(Error::new(t.pos, "hasflag takes 1 or 2 string lists")),
                    };
                    let keys = self.sl(keys);
                    self.check_keys(&opts, &keys, t.pos)?;
                    return Ok(Test::HasFlag { opts, vars, keys });
                }
                let p = self.positional(&a, 2, name, t.pos)?;
                let keys = self.sl(list_of(&p[1], "key list")?);
                self.check_keys(&opts, &keys, p[1].pos())?;
                if name == "environment" {
                    let n = self.s(str_of(&p[0], "environment item name")?);
                    return Ok(Test::Environment {
                        opts,
                        name: n.to_ascii_lowercase(),
                        keys,
                    });
                }
                let names = self.sl(list_of(&p[0], "header list")?);
                if name == "header" {
                    self.check_header_names(&names, p[0].pos());
                }
                Ok(match name {
                    "header" => Test::Header { opts, names, keys },
                    "address" => Test::Address {
                        opts,
                        part,
                        names,
                        keys,
                    },
                    "envelope" => {
                        for n in &names {
                            let l = n.to_ascii_lowercase();
                            if l != "from" && l != "to" && !self.has(Extension::Variables) {
                                return Err(Error::new(
                                    p[0].pos(),
                                    format!("unknown envelope part '{n}'"),
                                ));
                            }
                        }
                        Test::Envelope {
                            opts,
                            part,
                            names,
                            keys,
                        }
                    }
                    _ => Test::Str {
                        opts,
                        sources: names,
                        keys,
                    },
                })
            }
            "body" => {
                self.need(Extension::Body, t.pos, "body")?;
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|x| match x {
                    "raw" | "text" => Some(Param::None),
                    "content" => Some(Param::List),
                    _ => Self::match_spec(x),
                })?;
                let mut transform = BodyTransform::Text;
                let mut content = None;
                let mut n_transforms = 0;
                let mut rest = Args {
                    tags: vec![],
                    positional: a.positional.clone(),
                };
                for (tag, p, v) in a.tags {
                    match tag.as_str() {
                        "raw" => {
                            transform = BodyTransform::Raw;
                            n_transforms += 1;
                        }
                        "text" => n_transforms += 1,
                        "content" => {
                            content =
                                Some(self.sl(list_of(v.as_ref().expect("checked"), "types")?));
                            n_transforms += 1;
                        }
                        _ => rest.tags.push((tag, p, v)),
                    }
                }
                if n_transforms > 1 {
                    return Err(Error::new(t.pos, "more than one body transform"));
                }
                let (opts, _) = self.match_opts(&rest, false)?;
                if opts.index.is_some() {
                    return Err(Error::new(t.pos, ":index is not allowed on body"));
                }
                let p = self.positional(&rest, 1, name, t.pos)?;
                let keys = self.sl(list_of(&p[0], "key list")?);
                self.check_keys(&opts, &keys, p[0].pos())?;
                Ok(Test::Body {
                    opts,
                    transform,
                    content,
                    keys,
                })
            }
            "mailboxexists" => {
                self.need(Extension::Mailbox, t.pos, "mailboxexists")?;
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|_| None)?;
                let p = self.positional(&a, 1, name, t.pos)?;
                Ok(Test::MailboxExists(
                    self.sl(list_of(&p[0], "mailbox names")?),
                ))
            }
            "ihave" => {
                self.need(Extension::Ihave, t.pos, "ihave")?;
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|_| None)?;
                let p = self.positional(&a, 1, name, t.pos)?;
                Ok(Test::Ihave(list_of(&p[0], "capabilities")?))
            }
            "date" | "currentdate" => {
                self.need(Extension::Date, t.pos, name)?;
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|x| match x {
                    "zone" => Some(Param::Str),
                    "originalzone" => Some(Param::None),
                    _ => Self::match_spec(x),
                })?;
                let mut zone = Zone::Local;
                let mut rest = Args {
                    tags: vec![],
                    positional: a.positional.clone(),
                };
                for (tag, p, v) in a.tags {
                    match tag.as_str() {
                        "zone" => {
                            if zone != Zone::Local {
                                return Err(Error::new(p, "more than one zone"));
                            }
                            let arg = v.as_ref().expect("checked");
                            let z = self.s(str_of(arg, "zone")?);
                            // RFC 5260 4.1: "+hhmm"/"-hhmm"; another never
                            // matches (Pigeonhole's tst-date.c warns).
                            if self.literal(&z) && crate::run::parse_zone(&z).is_none() {
                                self.warn(
                                    arg.pos(),
                                    format!(
                                        "specified :zone argument '{}' is not a valid timezone",
                                        sanitize(&z)
                                    ),
                                );
                            }
                            zone = Zone::Fixed(z)
                        }
                        "originalzone" => {
                            if name == "currentdate" || zone != Zone::Local {
                                return Err(Error::new(p, ":originalzone not allowed here"));
                            }
                            zone = Zone::Original
                        }
                        "all" | "localpart" | "domain" | "user" | "detail" => {
                            return Err(Error::new(p, format!("unknown tag ':{tag}'")));
                        }
                        _ => rest.tags.push((tag, p, v)),
                    }
                }
                let (opts, _) = self.match_opts(&rest, false)?;
                let n = if name == "date" { 3 } else { 2 };
                let p = self.positional(&rest, n, name, t.pos)?;
                let header = (n == 3).then(|| str_of(&p[0], "header name")).transpose()?;
                if let Some(h) = &header {
                    self.check_header_names(std::slice::from_ref(h), p[0].pos());
                }
                let part = str_of(&p[n - 2], "date part")?.to_ascii_lowercase();
                if !crate::run::DATE_PARTS.contains(&part.as_str()) {
                    return Err(Error::new(
                        p[n - 2].pos(),
                        format!("unknown date part '{part}'"),
                    ));
                }
                let keys = self.sl(list_of(&p[n - 1], "key list")?);
                self.check_keys(&opts, &keys, t.pos)?;
                Ok(Test::Date {
                    opts,
                    zone,
                    header,
                    part,
                    keys,
                })
            }
            "duplicate" => {
                self.need(Extension::Duplicate, t.pos, "duplicate")?;
                self.no_tests(&t.tests, name)?;
                let a = self.split(&t.args, name, &|x| match x {
                    "handle" | "header" | "uniqueid" => Some(Param::Str),
                    "seconds" => Some(Param::Num),
                    "last" => Some(Param::None),
                    _ => None,
                })?;
                self.positional(&a, 0, name, t.pos)?;
                let mut handle = None;
                let mut source = DupSource::MessageId;
                let mut seconds = None;
                let mut last = false;
                for (tag, p, v) in &a.tags {
                    match (tag.as_str(), v) {
                        ("handle", Some(x)) => handle = Some(self.s(str_of(x, ":handle")?)),
                        ("header" | "uniqueid", Some(x)) => {
                            if source != DupSource::MessageId {
                                return Err(Error::new(*p, ":header and :uniqueid together"));
                            }
                            let v = self.s(str_of(x, tag)?);
                            source = if tag == "header" {
                                DupSource::Header(v)
                            } else {
                                DupSource::UniqueId(v)
                            };
                        }
                        ("seconds", Some(RawArg::Num(n, _))) => seconds = Some(*n),
                        ("last", None) => last = true,
                        _ => {}
                    }
                }
                Ok(Test::Duplicate {
                    handle,
                    source,
                    seconds,
                    last,
                })
            }
            "valid_notify_method"
            | "notify_method_capability"
            | "spamtest"
            | "virustest"
            | "metadata"
            | "servermetadata"
            | "metadataexists"
            | "servermetadataexists"
            | "specialuse_exists"
            | "valid_ext_list" => Err(Error::new(t.pos, format!("test '{name}' is not supported"))),
            _ => Err(Error::new(t.pos, format!("unknown test '{name}'"))),
        }
    }

    fn flags_tag(&self, v: &Option<RawArg>, what: &str) -> Result<Vec<String>, Error> {
        let arg = v.as_ref().expect("checked");
        let flags = self.sl(list_of(arg, ":flags")?);
        self.check_flags(&flags, arg.pos(), what);
        Ok(flags)
    }

    /// The block of an `if`/`elsif`. Behind `ihave` (RFC 5463 4) the
    /// named extensions are usable inside it as if required; a block behind
    /// an `ihave` this implementation cannot satisfy never runs, so its
    /// commands are not validated (it compiles to nothing).
    fn guarded_block(&self, test: &Test, b: &[RawCommand]) -> Result<Vec<Command>, Error> {
        let mut body = Vec::new();
        match test {
            Test::Ihave(names) if names.iter().all(|n| capability_known(n)) => {
                let mut inner = Validator {
                    ext: self.ext.clone(),
                    notes: self.notes.clone(),
                };
                inner
                    .ext
                    .extend(names.iter().filter_map(|n| Extension::from_name(n)));
                inner.block(b, &mut body, &mut None)?;
            }
            Test::Ihave(_) => {}
            _ => self.block(b, &mut body, &mut None)?,
        }
        Ok(body)
    }

    /// Validates a block; `chain` carries an if/elsif sequence across commands.
    fn block(
        &self,
        cmds: &[RawCommand],
        out: &mut Vec<Command>,
        chain: &mut Option<IfChain>,
    ) -> Result<(), Error> {
        for c in cmds {
            let name = c.name.as_str();
            if name == "elsif" || name == "else" {
                let Some((branches, _)) = chain.as_mut() else {
                    return Err(Error::new(c.pos, format!("{name} without a preceding if")));
                };
                let Some(b) = &c.block else {
                    return Err(Error::new(c.pos, format!("{name} needs a block")));
                };
                if name == "elsif" {
                    if c.tests.len() != 1 || !c.args.is_empty() {
                        return Err(Error::new(c.pos, "elsif takes exactly one test"));
                    }
                    let test = self.test(&c.tests[0])?;
                    let body = self.guarded_block(&test, b)?;
                    branches.push((test, body));
                } else {
                    let mut body = Vec::new();
                    self.block(b, &mut body, &mut None)?;
                    if !c.tests.is_empty() || !c.args.is_empty() {
                        return Err(Error::new(c.pos, "else takes no argument"));
                    }
                    let (b, _) = chain.take().expect("checked");
                    out.push(Command::If(b, Some(body)));
                }
                continue;
            }
            if let Some((b, e)) = chain.take() {
                out.push(Command::If(b, e));
            }
            if name == "if" {
                let Some(b) = &c.block else {
                    return Err(Error::new(c.pos, "if needs a block"));
                };
                if c.tests.len() != 1 || !c.args.is_empty() {
                    return Err(Error::new(c.pos, "if takes exactly one test"));
                }
                let test = self.test(&c.tests[0])?;
                let body = self.guarded_block(&test, b)?;
                *chain = Some((vec![(test, body)], None));
                continue;
            }
            if name == "require" {
                return Err(Error::new(
                    c.pos,
                    "require is only allowed at the start of the script",
                ));
            }
            if c.block.is_some() {
                return Err(Error::new(c.pos, format!("{name} takes no block")));
            }
            self.no_tests(&c.tests, name)?;
            out.push(self.command(c)?);
        }
        if let Some((b, e)) = chain.take() {
            out.push(Command::If(b, e));
        }
        Ok(())
    }

    fn command(&self, c: &RawCommand) -> Result<Command, Error> {
        let name = c.name.as_str();
        let none = |_: &str| None;
        match name {
            "stop" | "discard" => {
                let a = self.split(&c.args, name, &none)?;
                self.positional(&a, 0, name, c.pos)?;
                Ok(if name == "stop" {
                    Command::Stop
                } else {
                    Command::Discard
                })
            }
            "keep" => {
                let flags_ok = self.has(Extension::Imap4flags);
                let a = self.split(&c.args, name, &|t| {
                    (t == "flags" && flags_ok).then_some(Param::List)
                })?;
                self.positional(&a, 0, name, c.pos)?;
                let flags = match a.tags.first() {
                    Some((_, _, v)) => Some(self.flags_tag(v, "keep :flags")?),
                    None => None,
                };
                Ok(Command::Keep { flags })
            }
            "fileinto" => {
                self.need(Extension::Fileinto, c.pos, "fileinto")?;
                let (fl, cp, mb) = (
                    self.has(Extension::Imap4flags),
                    self.has(Extension::Copy),
                    self.has(Extension::Mailbox),
                );
                let a = self.split(&c.args, name, &|t| match t {
                    "flags" if fl => Some(Param::List),
                    "copy" if cp => Some(Param::None),
                    "create" if mb => Some(Param::None),
                    _ => None,
                })?;
                let p = self.positional(&a, 1, name, c.pos)?;
                let mut flags = None;
                for (t, _, v) in &a.tags {
                    if t == "flags" {
                        flags = Some(self.flags_tag(v, "fileinto :flags")?);
                    }
                }
                let has = |x: &str| a.tags.iter().any(|(t, _, _)| t == x);
                let mailbox = self.s(str_of(&p[0], "mailbox")?);
                if self.literal(&mailbox) {
                    let mut n = self.notes.borrow_mut();
                    if n.mailboxes.len() < MAX_WARNINGS {
                        n.mailboxes.push((p[0].pos(), mailbox.clone()));
                    }
                }
                Ok(Command::FileInto {
                    mailbox,
                    copy: has("copy"),
                    create: has("create"),
                    flags,
                })
            }
            "redirect" => {
                let cp = self.has(Extension::Copy);
                let a = self.split(&c.args, name, &|t| {
                    (t == "copy" && cp).then_some(Param::None)
                })?;
                let p = self.positional(&a, 1, name, c.pos)?;
                let address = self.s(str_of(&p[0], "address")?);
                if !self.has(Extension::Variables) && !valid_address(&address) {
                    return Err(Error::new(
                        p[0].pos(),
                        format!("redirect: invalid address '{address}'"),
                    ));
                }
                Ok(Command::Redirect {
                    address,
                    copy: !a.tags.is_empty(),
                })
            }
            "reject" | "ereject" => {
                let ext = if name == "reject" {
                    Extension::Reject
                } else {
                    Extension::Ereject
                };
                self.need(ext, c.pos, name)?;
                let a = self.split(&c.args, name, &none)?;
                let p = self.positional(&a, 1, name, c.pos)?;
                Ok(Command::Reject {
                    reason: self.s(str_of(&p[0], "reason")?),
                    extended: name == "ereject",
                })
            }
            "setflag" | "addflag" | "removeflag" => {
                self.need(Extension::Imap4flags, c.pos, name)?;
                let a = self.split(&c.args, name, &none)?;
                let (var, flags) = match a.positional.len() {
                    1 => (None, list_of(&a.positional[0], "flags")?),
                    2 => {
                        self.need(Extension::Variables, c.pos, "a flag variable")?;
                        let v = str_of(&a.positional[0], "variable name")?;
                        if !valid_var_name(&v, self.has(Extension::Include)) {
                            return Err(Error::new(
                                a.positional[0].pos(),
                                format!("invalid variable name '{v}'"),
                            ));
                        }
                        (
                            Some(v.to_ascii_lowercase()),
                            list_of(&a.positional[1], "flags")?,
                        )
                    }
                    _ => return Err(Error::new(c.pos, format!("{name} takes 1 or 2 arguments"))),
                };
                let flags = self.sl(flags);
                self.check_flags(&flags, c.pos, &format!("the {name} command"));
                Ok(Command::Flag {
                    op: match name {
                        "setflag" => FlagOp::Set,
                        "addflag" => FlagOp::Add,
                        _ => FlagOp::Remove,
                    },
                    var,
                    flags,
                })
            }
            "set" => {
                self.need(Extension::Variables, c.pos, "set")?;
                let rx = self.has(Extension::Regex);
                let a = self.split(&c.args, name, &|t| match t {
                    "lower" | "upper" | "lowerfirst" | "upperfirst" | "quotewildcard"
                    | "length" => Some(Param::None),
                    "quoteregex" if rx => Some(Param::None),
                    _ => None,
                })?;
                let p = self.positional(&a, 2, name, c.pos)?;
                let var = str_of(&p[0], "variable name")?;
                if !valid_var_name(&var, self.has(Extension::Include)) {
                    return Err(Error::new(
                        p[0].pos(),
                        format!("invalid variable name '{var}'"),
                    ));
                }
                let mut modifiers: Vec<Modifier> = Vec::new();
                for (t, pos, _) in &a.tags {
                    let m = match t.as_str() {
                        "lower" => Modifier::Lower,
                        "upper" => Modifier::Upper,
                        "lowerfirst" => Modifier::LowerFirst,
                        "upperfirst" => Modifier::UpperFirst,
                        "quotewildcard" => Modifier::QuoteWildcard,
                        "quoteregex" => Modifier::QuoteRegex,
                        _ => Modifier::Length,
                    };
                    if modifiers.iter().any(|x| x.precedence() == m.precedence()) {
                        return Err(Error::new(*pos, "two modifiers of the same precedence"));
                    }
                    modifiers.push(m);
                }
                modifiers.sort_by_key(|m| std::cmp::Reverse(m.precedence()));
                Ok(Command::Set {
                    name: var.to_ascii_lowercase(),
                    value: self.s(str_of(&p[1], "value")?),
                    modifiers,
                })
            }
            "vacation" => {
                self.need(Extension::Vacation, c.pos, "vacation")?;
                let secs = self.has(Extension::VacationSeconds);
                let a = self.split(&c.args, name, &|t| match t {
                    "days" => Some(Param::Num),
                    "seconds" if secs => Some(Param::Num),
                    "subject" | "from" | "handle" => Some(Param::Str),
                    "addresses" => Some(Param::List),
                    "mime" => Some(Param::None),
                    _ => None,
                })?;
                let p = self.positional(&a, 1, name, c.pos)?;
                let mut v = Vacation {
                    period: None,
                    subject: None,
                    from: None,
                    addresses: vec![],
                    mime: false,
                    handle: None,
                    reason: self.s(str_of(&p[0], "reason")?),
                };
                for (t, pos, val) in &a.tags {
                    match (t.as_str(), val) {
                        ("days" | "seconds", Some(RawArg::Num(n, _))) => {
                            if v.period.is_some() {
                                return Err(Error::new(*pos, ":days and :seconds together"));
                            }
                            v.period = Some(if t == "days" {
                                // RFC 5230 4.1: the minimum is normally 1 and
                                // never 0; 0 is raised to it (Pigeonhole:
                                // "specified :days value '0' is under the
                                // minimum"). `:seconds 0` is allowed (RFC 6131 2).
                                if *n == 0 {
                                    self.warn(
                                        *pos,
                                        "specified :days value '0' is under the minimum; \
                                         1 day is used"
                                            .into(),
                                    );
                                }
                                (*n).max(1).saturating_mul(86400)
                            } else {
                                *n
                            });
                        }
                        ("subject", Some(x)) => v.subject = Some(self.s(str_of(x, ":subject")?)),
                        ("from", Some(x)) => v.from = Some(self.s(str_of(x, ":from")?)),
                        ("handle", Some(x)) => v.handle = Some(self.s(str_of(x, ":handle")?)),
                        ("addresses", Some(x)) => v.addresses = self.sl(list_of(x, ":addresses")?),
                        ("mime", None) => v.mime = true,
                        _ => {}
                    }
                }
                Ok(Command::Vacation(v))
            }
            "include" => {
                self.need(Extension::Include, c.pos, "include")?;
                let a = self.split(&c.args, name, &|t| {
                    matches!(t, "personal" | "global" | "once" | "optional").then_some(Param::None)
                })?;
                let has = |x: &str| a.tags.iter().any(|(t, _, _)| t == x);
                if has("personal") && has("global") {
                    return Err(Error::new(c.pos, ":personal and :global together"));
                }
                let p = self.positional(&a, 1, name, c.pos)?;
                let script = self.s(str_of(&p[0], "script name")?);
                if !crate::layout::valid_script_name(&script) {
                    return Err(Error::new(
                        p[0].pos(),
                        format!("invalid script name '{script}'"),
                    ));
                }
                self.notes.borrow_mut().includes.push(IncludeRef {
                    pos: p[0].pos(),
                    global: has("global"),
                    optional: has("optional"),
                    name: script.clone(),
                });
                Ok(Command::Include {
                    global: has("global"),
                    once: has("once"),
                    optional: has("optional"),
                    name: script,
                })
            }
            "return" => {
                self.need(Extension::Include, c.pos, "return")?;
                let a = self.split(&c.args, name, &none)?;
                self.positional(&a, 0, name, c.pos)?;
                Ok(Command::Return)
            }
            "global" => {
                self.need(Extension::Include, c.pos, "global")?;
                self.need(Extension::Variables, c.pos, "global")?;
                let a = self.split(&c.args, name, &none)?;
                let p = self.positional(&a, 1, name, c.pos)?;
                let names = list_of(&p[0], "variable names")?;
                for n in &names {
                    if !valid_var_name(n, false) {
                        return Err(Error::new(
                            p[0].pos(),
                            format!("invalid variable name '{n}'"),
                        ));
                    }
                }
                Ok(Command::Global(
                    names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                ))
            }
            // RFC 5463 5: the script ends with a runtime error carrying the message.
            "error" => {
                self.need(Extension::Ihave, c.pos, "error")?;
                let a = self.split(&c.args, name, &none)?;
                let p = self.positional(&a, 1, name, c.pos)?;
                Ok(Command::Error(self.s(str_of(&p[0], "message")?)))
            }
            "notify" | "denotify" | "extracttext" | "foreverypart" | "break" | "replace"
            | "enclose" | "addheader" | "deleteheader" => Err(Error::new(
                c.pos,
                format!("command '{name}' is not supported"),
            )),
            _ => Err(Error::new(c.pos, format!("unknown command '{name}'"))),
        }
    }
}

/// RFC 5322 3.6.8: `1*ftext`, printable US-ASCII except the colon.
fn valid_header_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// An IMAP flag (RFC 3501 9 `flag`) the store accepts: one of the five
/// settable system flags, or a keyword atom of at most 100 bytes.
fn valid_flag(f: &str) -> bool {
    if let Some(sys) = f.strip_prefix('\\') {
        return ["seen", "answered", "flagged", "deleted", "draft"]
            .iter()
            .any(|x| sys.eq_ignore_ascii_case(x));
    }
    !f.is_empty()
        && f.len() <= 100
        && f.bytes().all(|b| {
            b > b' '
                && b < 0x7f
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b']')
        })
}

/// A script's string in a warning: controls replaced, at most 80 chars.
fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(80)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 80 {
        out.push_str("...");
    }
    out
}

/// RFC 5229 3: an identifier; with `global_ns`, also `global.IDENT` (RFC 6609 3.5).
fn valid_var_name(s: &str, global_ns: bool) -> bool {
    let mut parts = s.split('.');
    let last = parts.next_back().unwrap_or("");
    let ident = |x: &str| {
        !x.is_empty()
            && x.len() <= 64
            && x.bytes()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && x.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
    };
    match parts.next() {
        None => ident(last),
        Some(ns) => {
            global_ns && ns.eq_ignore_ascii_case("global") && parts.next().is_none() && ident(last)
        }
    }
}

/// A `require`/`ihave` capability this implementation has (the two base
/// comparators need no extension).
pub(crate) fn capability_known(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    l == "comparator-i;octet"
        || l == "comparator-i;ascii-casemap"
        || Extension::from_name(&l).is_some()
}

/// A plausible RFC 5321 mailbox: local@domain, no spaces or angle brackets.
pub(crate) fn valid_address(s: &str) -> bool {
    let s = s.trim();
    let Some((l, d)) = s.rsplit_once('@') else {
        return false;
    };
    !l.is_empty()
        && !d.is_empty()
        && s.len() <= 320
        && !s
            .bytes()
            .any(|c| c <= b' ' || c == b'<' || c == b'>' || c >= 0x7f)
        && d.bytes().all(|c| {
            c.is_ascii_alphanumeric()
                || c == b'.'
                || c == b'-'
                || c == b'['
                || c == b']'
                || c == b':'
        })
}
