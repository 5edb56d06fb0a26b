//! One ManageSieve connection (RFC 5804): the greeting, the commands of
//! section 2, the non-authenticated and authenticated states, and the
//! response codes. The transport (TLS through STARTTLS), the password
//! check with its delays and lock-outs, the connection and per-user
//! limits and the timeouts are the IMAP server's (`crate::imap`).

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine;
use sieve::layout::valid_script_name;
use storage::{MailboxName, Options, Store, UserName};

use super::scripts::{ScriptError, Scripts};
use super::wire::{self, Arg, Read, ReadLimits};
use crate::imap::auth::parse_plain;
use crate::imap::io::Input;
use crate::imap::limits::{IpSlot, UserSlot};
use crate::imap::login::Check;
use crate::imap::server::Server;
use crate::imap::stream::{Shared, Writer};

/// What the implementation calls itself (RFC 5804 1.7 IMPLEMENTATION).
const IMPLEMENTATION: &str = concat!("mailstore imapd-check ", env!("CARGO_PKG_VERSION"));
/// Largest string before login (an AUTHENTICATE PLAIN response).
const PRE_AUTH_LITERAL: u64 = 8 * 1024;

/// After a command: go on, or end the connection.
enum Flow {
    Go,
    Close,
}

type Res = std::io::Result<Flow>;

pub struct Session {
    server: Arc<Server>,
    peer: IpAddr,
    trusted: bool,
    exempt: bool,
    failures: u32,
    stream: Shared,
    input: Input,
    out: crate::imap::io::Output<Writer>,
    user: Option<UserName>,
    scripts: Option<Scripts>,
    user_slot: Option<UserSlot>,
    _ip_slot: IpSlot,
    login_deadline: Instant,
}

/// The arguments a command takes: strings and numbers in order.
fn strings<const N: usize>(args: &[Arg]) -> Option<[&[u8]; N]> {
    if args.len() != N {
        return None;
    }
    let v: Vec<&[u8]> = args
        .iter()
        .map(|a| match a {
            Arg::Str(s) => Some(&s[..]),
            Arg::Num(_) => None,
        })
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

fn utf8(s: &[u8]) -> Option<&str> {
    std::str::from_utf8(s).ok()
}

impl Session {
    pub fn new(server: Arc<Server>, stream: Shared, peer: IpAddr, slot: IpSlot) -> Session {
        let cfg = &server.cfg;
        Session {
            trusted: cfg.is_trusted(peer),
            exempt: cfg.is_exempt(peer),
            login_deadline: Instant::now() + cfg.login_timeout,
            failures: 0,
            input: Input::new(stream.clone()),
            out: stream.writer(),
            stream,
            user: None,
            scripts: None,
            user_slot: None,
            _ip_slot: slot,
            peer,
            server,
        }
    }

    fn tls_active(&self) -> bool {
        self.stream.lock().is_tls()
    }

    /// Logging in is allowed over TLS or from a trusted network.
    fn login_allowed(&self) -> bool {
        self.trusted || self.tls_active()
    }

    fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.out.write_all(bytes)
    }

    fn reply(&mut self, kind: &str, code: Option<&str>, text: &str) -> Res {
        let r = wire::response(kind, code, text);
        self.send(&r)?;
        Ok(Flow::Go)
    }

    fn ok(&mut self, text: &str) -> Res {
        self.reply("OK", None, text)
    }

    fn no(&mut self, code: Option<&str>, text: &str) -> Res {
        self.reply("NO", code, text)
    }

    /// The capability lines (RFC 5804 1.7), without the final OK.
    fn capabilities(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut cap = |name: &str, value: Option<&str>| {
            out.extend_from_slice(&wire::string(name.as_bytes()));
            if let Some(v) = value {
                out.push(b' ');
                out.extend_from_slice(&wire::string(v.as_bytes()));
            }
            out.extend_from_slice(b"\r\n");
        };
        cap("IMPLEMENTATION", Some(IMPLEMENTATION));
        let sasl = if self.user.is_none() && self.login_allowed() {
            "PLAIN"
        } else {
            ""
        };
        cap("SASL", Some(sasl));
        let ext: Vec<&str> = sieve::Extension::names().collect();
        cap("SIEVE", Some(&ext.join(" ")));
        if self.user.is_none() && self.server.tls.is_some() && !self.tls_active() {
            cap("STARTTLS", None);
        }
        let redirects = sieve::Limits::default().max_redirects.to_string();
        cap("MAXREDIRECTS", Some(&redirects));
        if let Some(u) = &self.user {
            cap("OWNER", Some(u.as_str()));
        }
        cap("UNAUTHENTICATE", None);
        cap("VERSION", Some("1.0"));
        out
    }

    fn read_limits(&self) -> ReadLimits {
        let l = &self.server.cfg.limits;
        let literal = match &self.scripts {
            // A script, plus room for the command's other strings.
            Some(s) => s.max_script_size() + 4096,
            None => PRE_AUTH_LITERAL,
        };
        ReadLimits {
            line: l.line,
            command_lines: l.command_lines,
            literal,
            swallow: if self.user.is_some() {
                l.swallow
            } else {
                PRE_AUTH_LITERAL
            },
        }
    }

    /// Reads time out at the pre-login deadline before login, and an
    /// autologout period after the last command once logged in.
    fn arm_timer(&self) {
        let at = match self.user {
            Some(_) => Instant::now() + self.server.cfg.autologout,
            None => self.login_deadline,
        };
        self.stream.lock().set_deadline(Some(at));
    }

    pub fn run(mut self) -> std::io::Result<()> {
        let caps = self.capabilities();
        self.send(&caps)?;
        self.ok("ManageSieve ready")?;
        self.out.flush()?;
        loop {
            self.arm_timer();
            let lim = self.read_limits();
            let read = match wire::read_command(&mut self.input, &lim) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    let _ = self.reply("BYE", None, "Disconnected for inactivity");
                    let _ = self.out.flush();
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let flow = match read {
                Read::Eof => return Ok(()),
                Read::TooLong => {
                    self.reply("BYE", None, "Command line too long")?;
                    Flow::Close
                }
                Read::Bad(why) => self.no(None, &format!("Syntax error: {why}"))?,
                Read::TooBig { name, close } => {
                    let limit = lim.literal;
                    if matches!(name.as_str(), "PUTSCRIPT" | "CHECKSCRIPT") && self.user.is_some() {
                        self.no(
                            Some("QUOTA/MAXSIZE"),
                            &format!("Script too large (at most {limit} bytes)"),
                        )?;
                    } else {
                        self.no(None, &format!("String too long (at most {limit} bytes)"))?;
                    }
                    if close {
                        self.reply("BYE", None, "Too much data")?;
                        Flow::Close
                    } else {
                        Flow::Go
                    }
                }
                Read::Command { name, args } => self.command(&name, &args)?,
            };
            self.out.flush()?;
            if let Flow::Close = flow {
                return Ok(());
            }
        }
    }

    fn command(&mut self, name: &str, args: &[Arg]) -> Res {
        match (name, self.user.is_some()) {
            ("CAPABILITY", _) if args.is_empty() => {
                let caps = self.capabilities();
                self.send(&caps)?;
                self.ok("Capability completed")
            }
            ("NOOP", _) => self.noop(args),
            ("LOGOUT", _) if args.is_empty() => {
                self.ok("Logout completed")?;
                Ok(Flow::Close)
            }
            ("STARTTLS", false) if args.is_empty() => self.starttls(),
            ("AUTHENTICATE", false) => self.authenticate(args),
            ("STARTTLS" | "AUTHENTICATE", true) => self.no(None, "Already authenticated"),
            (
                "HAVESPACE" | "PUTSCRIPT" | "LISTSCRIPTS" | "SETACTIVE" | "GETSCRIPT"
                | "DELETESCRIPT" | "RENAMESCRIPT" | "CHECKSCRIPT" | "UNAUTHENTICATE",
                false,
            ) => self.no(None, "Authenticate first"),
            ("HAVESPACE", true) => self.havespace(args),
            ("PUTSCRIPT", true) => self.putscript(args),
            ("LISTSCRIPTS", true) if args.is_empty() => self.listscripts(),
            ("SETACTIVE", true) => self.setactive(args),
            ("GETSCRIPT", true) => self.getscript(args),
            ("DELETESCRIPT", true) => self.deletescript(args),
            ("RENAMESCRIPT", true) => self.renamescript(args),
            ("CHECKSCRIPT", true) => self.checkscript(args),
            ("UNAUTHENTICATE", true) if args.is_empty() => self.unauthenticate(),
            ("CAPABILITY" | "LOGOUT" | "STARTTLS" | "LISTSCRIPTS" | "UNAUTHENTICATE", _) => {
                self.no(None, "This command takes no arguments")
            }
            _ => self.no(None, "Unknown command"),
        }
    }

    /// RFC 5804 2.15: NOOP with an optional tag echoed in a TAG code.
    fn noop(&mut self, args: &[Arg]) -> Res {
        match args {
            [] => self.ok("Done"),
            [Arg::Str(tag)] => {
                let code = format!("TAG {}", String::from_utf8_lossy(&wire::string(tag)));
                self.reply("OK", Some(&code), "Done")
            }
            _ => self.no(None, "NOOP takes one string at most"),
        }
    }

    /// RFC 5804 2.2: OK, the TLS handshake, then the capabilities again.
    fn starttls(&mut self) -> Res {
        let Some(tls) = self.server.tls.as_ref().map(|t| t.session()) else {
            return self.no(None, "TLS is not configured");
        };
        if self.tls_active() {
            return self.no(None, "TLS is already active");
        }
        let session = tls?;
        self.ok("Begin TLS negotiation now")?;
        self.out.flush()?;
        // Plaintext pipelined after STARTTLS could be an attacker's
        // injection (CVE-2011-0411): dropped.
        let rest = self.input.take_buffered();
        if !rest.is_empty() {
            tracing::warn!(
                bytes = rest.len(),
                "managesieve: dropped plaintext pipelined after STARTTLS"
            );
        }
        self.stream.lock().start_tls(session)?;
        let caps = self.capabilities();
        self.send(&caps)?;
        self.ok("TLS negotiation successful")
    }

    /// Reads the client's SASL response to a `""` challenge: one string
    /// on a line of its own (`"*"` cancels).
    fn sasl_response(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        let mut lim = self.read_limits();
        lim.literal = PRE_AUTH_LITERAL;
        Ok(match wire::read_sasl_response(&mut self.input, &lim)? {
            Read::Command { args, .. } => match strings::<1>(&args) {
                Some([s]) => Some(s.to_vec()),
                None => Some(Vec::new()),
            },
            Read::Bad(_) | Read::TooBig { close: false, .. } => Some(Vec::new()),
            Read::Eof | Read::TooLong | Read::TooBig { close: true, .. } => None,
        })
    }

    /// RFC 5804 2.1 with SASL PLAIN (RFC 4616), initial response or not.
    fn authenticate(&mut self, args: &[Arg]) -> Res {
        let (mech, ir) = match args {
            [Arg::Str(m)] => (m, None),
            [Arg::Str(m), Arg::Str(ir)] => (m, Some(ir.clone())),
            _ => return self.no(None, "Syntax: AUTHENTICATE mechanism [initial-response]"),
        };
        if !mech.eq_ignore_ascii_case(b"PLAIN") {
            return self.no(None, "Unsupported authentication mechanism (only PLAIN)");
        }
        if !self.login_allowed() {
            return self.no(
                Some("ENCRYPT-NEEDED"),
                "Authenticate over TLS: use STARTTLS",
            );
        }
        let b64 = match ir {
            Some(ir) => ir,
            None => {
                self.send(b"\"\"\r\n")?;
                self.out.flush()?;
                match self.sasl_response()? {
                    None => return Ok(Flow::Close),
                    Some(r) => r,
                }
            }
        };
        if b64 == b"*" {
            return self.no(None, "Authentication cancelled");
        }
        let Ok(msg) = base64::engine::general_purpose::STANDARD.decode(&b64) else {
            return self.no(None, "Invalid base64");
        };
        let Some((user, pass)) = parse_plain(&msg) else {
            return self.no(None, "Authentication failed");
        };
        self.login(&user, &pass)
    }

    fn login(&mut self, user: &str, pass: &[u8]) -> Res {
        let server = self.server.clone();
        match server.check_password(self.peer, self.exempt, user, pass) {
            Check::LockedOut => {
                tracing::warn!(peer = %self.peer, "managesieve: login refused: too many failures from this address");
                self.reply(
                    "BYE",
                    Some("TRYLATER"),
                    "Too many failed logins from your address; try again later",
                )?;
                return Ok(Flow::Close);
            }
            Check::Failed(delay) => {
                tracing::info!(user, peer = %self.peer, "managesieve: authentication failed");
                std::thread::sleep(delay);
                self.failures += 1;
                self.no(None, "Authentication failed")?;
                if self.failures >= server.cfg.max_login_failures_per_connection {
                    self.reply("BYE", None, "Too many failed logins")?;
                    return Ok(Flow::Close);
                }
                return Ok(Flow::Go);
            }
            Check::Passed => {}
        }
        let Ok(name) = UserName::new(user) else {
            return self.no(None, "Authentication failed");
        };
        match server
            .slots
            .login(name.as_str(), server.cfg.max_connections_per_user)
        {
            Ok(slot) => self.user_slot = Some(slot),
            Err(_) => {
                tracing::warn!(user, peer = %self.peer, "managesieve: too many sessions for this user");
                return self.no(Some("TRYLATER"), "Too many sessions for this user");
            }
        }
        // The user's directory, as an IMAP login makes it.
        match Store::open(&server.root, Options::default())
            .and_then(|s| s.ensure_mailbox(&name, &MailboxName::inbox()))
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user, error = %e, "managesieve: could not create the user's INBOX")
            }
        }
        tracing::info!(user, peer = %self.peer, "managesieve: logged in");
        self.scripts = Some(Scripts::new(
            server.root.clone(),
            name.encoded(),
            &server.cfg.managesieve,
        ));
        self.user = Some(name);
        self.ok("Logged in")
    }

    /// RFC 5804 2.14.
    fn unauthenticate(&mut self) -> Res {
        self.user = None;
        self.scripts = None;
        self.user_slot = None;
        self.login_deadline = Instant::now() + self.server.cfg.login_timeout;
        self.ok("Unauthenticated")
    }

    fn scripts(&self) -> &Scripts {
        self.scripts.as_ref().expect("authenticated")
    }

    /// A refused script operation as its response.
    fn refused(&mut self, e: ScriptError) -> Res {
        let code = match &e {
            ScriptError::NonExistent => Some("NONEXISTENT"),
            ScriptError::AlreadyExists => Some("ALREADYEXISTS"),
            ScriptError::Active => Some("ACTIVE"),
            ScriptError::MaxScripts(_) => Some("QUOTA/MAXSCRIPTS"),
            ScriptError::MaxSize(_) => Some("QUOTA/MAXSIZE"),
            ScriptError::Storage(_) => Some("QUOTA"),
            ScriptError::Io(err) => {
                tracing::error!(user = ?self.user.as_ref().map(|u| u.as_str()), error = %err, "managesieve: store error");
                return self.no(
                    Some("TRYLATER"),
                    "Temporary failure in the store; try again later",
                );
            }
        };
        self.no(code, &e.to_string())
    }

    fn done(&mut self, r: Result<(), ScriptError>, text: &str) -> Res {
        match r {
            Ok(()) => self.ok(text),
            Err(e) => self.refused(e),
        }
    }

    /// A script name argument, checked (`None`: the reply was sent).
    fn name_arg<'a>(&mut self, raw: &'a [u8]) -> std::io::Result<Option<&'a str>> {
        // RFC 5804 1.6 also rules out the line and paragraph separators.
        let allowed = |n: &&str| valid_script_name(n) && !n.contains(['\u{2028}', '\u{2029}']);
        match utf8(raw).filter(allowed) {
            Some(n) => Ok(Some(n)),
            None => {
                self.no(None, "Invalid script name")?;
                Ok(None)
            }
        }
    }

    /// Compiles a script; the error, with line and column, as the NO
    /// text (what `sievec` and Pigeonhole report). `Some(warnings)` when
    /// it compiles: one `line:col: text` each (RFC 5804 1.3), with a
    /// non-optional personal `include` of a script the user does not
    /// have (Pigeonhole: "does not exist (ignored during upload)"; it may
    /// be uploaded next). `uploading`: the name being stored, which will
    /// exist.
    fn validate(
        &mut self,
        name: &str,
        content: &[u8],
        uploading: Option<&str>,
    ) -> std::io::Result<Option<Vec<String>>> {
        let Some(src) = utf8(content) else {
            self.no(None, "Script is not UTF-8")?;
            return Ok(None);
        };
        match sieve::Script::compile(src) {
            Ok(script) => {
                let mut out: Vec<String> = script
                    .warnings()
                    .iter()
                    .chain(&script.mailbox_warnings(mailbox_name_ok))
                    .map(|w| w.to_string())
                    .collect();
                let personal = script
                    .includes()
                    .iter()
                    .filter(|i| !i.global && !i.optional);
                let mut have: Option<Vec<String>> = None;
                for i in personal {
                    if uploading == Some(i.name.as_str()) {
                        continue;
                    }
                    let have = have.get_or_insert_with(|| {
                        self.scripts()
                            .list()
                            .map(|l| l.into_iter().map(|(n, _)| n).collect())
                            .unwrap_or_default()
                    });
                    if !have.contains(&i.name) && out.len() <= sieve::MAX_WARNINGS {
                        out.push(format!(
                            "{}: included personal script '{}' does not exist (ignored during upload)",
                            i.pos, i.name
                        ));
                    }
                }
                Ok(Some(out))
            }
            Err(e) => {
                self.no(
                    None,
                    &format!("{name}:{}:{}: error: {}", e.pos.line, e.pos.col, e.message),
                )?;
                Ok(None)
            }
        }
    }

    /// OK, with `(WARNINGS) "line:col: text"` when there are any (RFC 5804
    /// 1.3, 2.6, 2.8, 2.12; Pigeonhole gives them on SETACTIVE too).
    /// Several are joined with "; " into one quoted line, cut to fit one:
    /// a multi-line literal is allowed by the RFC, but sieve-connect (and
    /// other line-based clients) then take the OK for a failure.
    fn ok_warnings(&mut self, warnings: &[String], text: &str) -> Res {
        if warnings.is_empty() {
            return self.ok(text);
        }
        let mut line = warnings.join("; ");
        let max = wire::MAX_QUOTED - 8;
        if line.len() > max {
            let mut end = max;
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            line.truncate(end);
            line.push_str(" ...");
        }
        self.reply("OK", Some("WARNINGS"), &line)
    }

    /// RFC 5804 2.5.
    fn havespace(&mut self, args: &[Arg]) -> Res {
        let [Arg::Str(name), Arg::Num(size)] = args else {
            return self.no(None, "Syntax: HAVESPACE name size");
        };
        let Some(name) = self.name_arg(name)? else {
            return Ok(Flow::Go);
        };
        let r = self.scripts().have_space(name, *size);
        self.done(r, "Putscript would succeed")
    }

    /// RFC 5804 2.6: validated, then stored in one step.
    fn putscript(&mut self, args: &[Arg]) -> Res {
        let Some([name, content]) = strings::<2>(args) else {
            return self.no(None, "Syntax: PUTSCRIPT name script");
        };
        let Some(name) = self.name_arg(name)? else {
            return Ok(Flow::Go);
        };
        if content.len() as u64 > self.scripts().max_script_size() {
            let e = ScriptError::MaxSize(self.scripts().max_script_size());
            return self.refused(e);
        }
        let Some(warnings) = self.validate(name, content, Some(name))? else {
            return Ok(Flow::Go);
        };
        match self.scripts().put(name, content) {
            Ok(()) => {
                tracing::info!(user = ?self.user.as_ref().map(|u| u.as_str()), script = name, warnings = warnings.len(), "managesieve: script stored");
                self.ok_warnings(&warnings, "Script stored")
            }
            Err(e) => self.refused(e),
        }
    }

    /// RFC 5804 2.12: validation only.
    fn checkscript(&mut self, args: &[Arg]) -> Res {
        let Some([content]) = strings::<1>(args) else {
            return self.no(None, "Syntax: CHECKSCRIPT script");
        };
        match self.validate("script", content, None)? {
            Some(warnings) => self.ok_warnings(&warnings, "Script is valid"),
            None => Ok(Flow::Go),
        }
    }

    /// RFC 5804 2.7.
    fn listscripts(&mut self) -> Res {
        let list = match self.scripts().list() {
            Ok(l) => l,
            Err(e) => return self.refused(e),
        };
        for (name, active) in list {
            let mut line = wire::string(name.as_bytes());
            if active {
                line.extend_from_slice(b" ACTIVE");
            }
            line.extend_from_slice(b"\r\n");
            self.send(&line)?;
        }
        self.ok("Listscripts completed")
    }

    /// RFC 5804 2.8: `""` deactivates; a script must compile to become
    /// active.
    fn setactive(&mut self, args: &[Arg]) -> Res {
        let Some([name]) = strings::<1>(args) else {
            return self.no(None, "Syntax: SETACTIVE name");
        };
        if name.is_empty() {
            let r = self.scripts().set_active(None);
            return self.done(r, "No script is active");
        }
        let Some(name) = self.name_arg(name)? else {
            return Ok(Flow::Go);
        };
        let content = match self.scripts().get(name) {
            Ok(c) => c,
            Err(e) => return self.refused(e),
        };
        let Some(warnings) = self.validate(name, &content, Some(name))? else {
            return Ok(Flow::Go);
        };
        match self.scripts().set_active(Some(name)) {
            Ok(()) => self.ok_warnings(&warnings, "Script is active"),
            Err(e) => self.refused(e),
        }
    }

    /// RFC 5804 2.9: the script as a string, then OK.
    fn getscript(&mut self, args: &[Arg]) -> Res {
        let Some([name]) = strings::<1>(args) else {
            return self.no(None, "Syntax: GETSCRIPT name");
        };
        let Some(name) = self.name_arg(name)? else {
            return Ok(Flow::Go);
        };
        match self.scripts().get(name) {
            Ok(content) => {
                let mut s = format!("{{{}}}\r\n", content.len()).into_bytes();
                s.extend_from_slice(&content);
                s.extend_from_slice(b"\r\n");
                self.send(&s)?;
                self.ok("Getscript completed")
            }
            Err(e) => self.refused(e),
        }
    }

    /// RFC 5804 2.10: the active script is refused with (ACTIVE).
    fn deletescript(&mut self, args: &[Arg]) -> Res {
        let Some([name]) = strings::<1>(args) else {
            return self.no(None, "Syntax: DELETESCRIPT name");
        };
        let Some(name) = self.name_arg(name)? else {
            return Ok(Flow::Go);
        };
        let r = self.scripts().delete(name);
        self.done(r, "Script deleted")
    }

    /// RFC 5804 2.11.1.
    fn renamescript(&mut self, args: &[Arg]) -> Res {
        let Some([old, new]) = strings::<2>(args) else {
            return self.no(None, "Syntax: RENAMESCRIPT old new");
        };
        let Some(old) = self.name_arg(old)? else {
            return Ok(Flow::Go);
        };
        let Some(new) = self.name_arg(new)? else {
            return Ok(Flow::Go);
        };
        let r = self.scripts().rename(old, new);
        self.done(r, "Script renamed")
    }
}

/// The store's rule for mailbox names, for the `fileinto` warnings.
fn mailbox_name_ok(name: &str) -> Result<(), String> {
    storage::MailboxName::new(name)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
