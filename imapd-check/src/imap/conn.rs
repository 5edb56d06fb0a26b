//! One IMAP connection: reads commands, keeps the session state
//! (not authenticated / authenticated / selected), writes responses.
//!
//! Every selected-state operation goes through the `Selected` handle of
//! this connection (its own `Mailbox` and `SessionView`), never a global
//! "current mailbox" (seed 004). After each command, before the tagged
//! reply, the view is checked against the index with the allowance the
//! command permits (no EXPUNGE while answering FETCH, STORE or SEARCH by
//! sequence number).

use std::io::{self, Write};
use std::sync::Arc;

use imap_codec::CommandCodec;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::extensions::enable::CapabilityEnable;
use storage::session::{Allow, SessionView, Update};
use storage::{Error, Mailbox, MailboxName, Store, UserName};

use super::config::ServerConfig;
use super::io::{Assembled, Input, Limits, tag_of};
use super::login::Switch;
use super::server::Net;
use super::stream::Shared;
use super::wire;

pub const CAPS: &str = "IMAP4rev1 IMAP4rev2 LITERAL+ SASL-IR ENABLE IDLE UIDPLUS MOVE UNSELECT CONDSTORE QRESYNC CHILDREN \
     ID NAMESPACE LIST-EXTENDED LIST-STATUS SPECIAL-USE CREATE-SPECIAL-USE STATUS=SIZE \
     QUOTA QUOTA=RES-STORAGE MULTIAPPEND \
     ESEARCH SEARCHRES SORT SORT=DISPLAY ESORT THREAD=ORDEREDSUBJECT THREAD=REFERENCES BINARY";

pub(super) struct Selected {
    pub name: MailboxName,
    pub mbox: Mailbox,
    pub view: SessionView,
    pub read_only: bool,
    /// The messages `\Recent` in this session.
    pub recent: super::recent::Recent,
    /// This session's place among those of the process that have the
    /// mailbox selected (their views start from each other's).
    pub shared: super::sharedviews::Member,
}

impl Selected {
    /// Learns of new messages for `\Recent` (a SELECT claims them); the
    /// `* N RECENT` line when anything was new.
    pub(super) fn learn_recent(&mut self) -> Option<String> {
        self.recent
            .learn(&self.mbox, &self.view, !self.read_only)
            .then(|| format!("* {} RECENT\r\n", self.recent.count(&self.view)))
    }
}

pub struct Session {
    pub(super) store: Store,
    pub(super) user: Option<UserName>,
    /// Where a network client comes from (None on stdio).
    pub(super) net: Option<Net>,
    pub(super) cfg: Arc<ServerConfig>,
    /// The transport under `input` and `out` (TLS, COMPRESS, deadlines).
    pub(super) stream: Shared,
    /// STARTTLS or COMPRESS to switch on after the current reply.
    pub(super) switch: Option<Switch>,
    /// The tag of the command in progress.
    pub(super) tag: String,
    /// Before login, reads fail after this (the pre-login timeout).
    login_deadline: Option<std::time::Instant>,
    pub(super) out: Box<dyn Write + Send>,
    pub(super) input: Input,
    pub(super) sel: Option<Selected>,
    pub(super) condstore: bool,
    /// ENABLE QRESYNC was answered (RFC 7162 3.2.3).
    pub(super) qresync: bool,
    /// ENABLE IMAP4rev2 was answered (RFC 9051 6.3.1; `rev2.rs`).
    pub(super) rev2: bool,
    /// The `RETURN (...)` options of the SEARCH being run (ESEARCH).
    pub(super) search_return: Option<super::esearch::ReturnOpts>,
    /// SEARCHRES (RFC 5182): the UIDs `$` stands for, ascending.
    pub(super) saved: Vec<u32>,
    /// The command being run had `$` written as `searchres::MARK`.
    pub(super) dollar: bool,
    /// The BINARY items of the FETCH being run that imap-codec got as BODY.
    pub(super) binary_alias: Vec<Option<super::binary::Flavor>>,
    pub(super) limits: Limits,
    /// Untagged responses of the command in progress.
    pub(super) buf: Vec<u8>,
}

/// Ends the connection.
#[derive(Debug)]
pub(super) enum Stop {
    Io(io::Error),
    Logout,
    Bye(String),
}

/// A command's failure: a tagged NO/BAD, or the end of the connection.
#[derive(Debug)]
pub(super) enum Fail {
    No(Option<&'static str>, String),
    Bad(String),
    Stop(Stop),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Stop(Stop::Io(e))
    }
}

impl From<Error> for Fail {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NoSuchMailbox(_) | Error::NoSuchUser(_) => Some("NONEXISTENT"),
            Error::MailboxExists(_) => Some("ALREADYEXISTS"),
            Error::TooLarge { .. } => Some("TOOBIG"),
            Error::OverQuota { .. } => Some("OVERQUOTA"),
            Error::LockTimeout { .. } => Some("INUSE"),
            Error::LockLost { .. } | Error::UnsafeFilesystem { .. } => Some("UNAVAILABLE"),
            Error::Expunged(_) => Some("EXPUNGEISSUED"),
            Error::InvalidName { .. } | Error::InvalidKeyword(_) => Some("CANNOT"),
            Error::TooManyKeywords(_) | Error::MailboxFull { .. } | Error::UidsExhausted => {
                Some("LIMIT")
            }
            Error::Corrupt { .. } => Some("CORRUPTION"),
            _ => Some("SERVERBUG"),
        };
        // Paths and internals go to the log, not to the client.
        let text = match code {
            Some("CORRUPTION") => {
                tracing::error!("{e}");
                "Stored data is corrupt; the administrator can run idx-inspect verify".to_string()
            }
            Some("SERVERBUG") => {
                tracing::error!("{e}");
                "Internal server error (logged)".to_string()
            }
            Some("INUSE") => "Mailbox is busy, try again".to_string(),
            Some("UNAVAILABLE") => {
                tracing::warn!("{e}");
                "Mailbox storage is unavailable, try again".to_string()
            }
            _ => e.to_string(),
        };
        Fail::No(code, text)
    }
}

/// A successful command's tagged OK.
pub(super) struct Done {
    pub code: Option<String>,
    pub text: String,
}

pub(super) fn ok(text: &str) -> Result<Done, Fail> {
    Ok(Done {
        code: None,
        text: text.to_string(),
    })
}

pub(super) fn ok_code(code: String, text: &str) -> Result<Done, Fail> {
    Ok(Done {
        code: Some(code),
        text: text.to_string(),
    })
}

pub(super) fn bad<T>(text: &str) -> Result<T, Fail> {
    Err(Fail::Bad(text.to_string()))
}

pub(super) fn no<T>(code: Option<&'static str>, text: &str) -> Result<T, Fail> {
    Err(Fail::No(code, text.to_string()))
}

impl Session {
    pub fn new(
        store: Store,
        user: Option<UserName>,
        net: Option<Net>,
        cfg: Arc<ServerConfig>,
        stream: Shared,
    ) -> Session {
        Session {
            store,
            user,
            net,
            limits: cfg.limits,
            cfg,
            out: Box::new(stream.writer()),
            input: Input::new(stream.clone()),
            stream,
            switch: None,
            tag: String::new(),
            login_deadline: None,
            sel: None,
            condstore: false,
            qresync: false,
            rev2: false,
            search_return: None,
            saved: Vec::new(),
            dollar: false,
            binary_alias: Vec::new(),
            buf: Vec::new(),
        }
    }

    /// Reads before login fail after `at` (the pre-login timeout).
    pub fn with_login_deadline(mut self, at: std::time::Instant) -> Session {
        self.login_deadline = Some(at);
        self
    }

    pub(super) fn caps(&self) -> String {
        self.capabilities()
    }

    /// Reads time out at the pre-login deadline before login, and an
    /// autologout period after the last command once logged in (RFC 3501
    /// 5.4; an IDLE is a command, so it ends that long after it began).
    fn arm_timer(&self) {
        let at = match self.user {
            Some(_) => Some(std::time::Instant::now() + self.cfg.autologout),
            None => self.login_deadline,
        };
        self.stream.lock().set_deadline(at);
    }

    fn timed_out(&mut self) -> io::Result<()> {
        let text: &[u8] = if self.user.is_some() {
            b"* BYE Autologout; idle for too long\r\n"
        } else {
            b"* BYE Login timeout\r\n"
        };
        self.out.write_all(text)?;
        self.out.flush()
    }

    /// Runs the connection to its end.
    pub fn run(mut self) -> io::Result<()> {
        if let Some(u) = self.user.clone() {
            self.ensure_inbox(&u);
        }
        let greeting = match &self.user {
            Some(u) => format!(
                "* PREAUTH [CAPABILITY {}] imapd-check ready, logged in as {u}\r\n",
                self.caps()
            ),
            None => format!("* OK [CAPABILITY {}] imapd-check ready\r\n", self.caps()),
        };
        self.out.write_all(greeting.as_bytes())?;
        loop {
            self.out.flush()?;
            if let Some(sw) = self.switch.take() {
                self.apply_switch(sw)?;
            }
            self.arm_timer();
            self.input.release();
            // Waiting for the client: the next command is most likely
            // cheap (slice.rs).
            super::slice::short();
            let limits = self.read_limits();
            let assembled = match self.input.read_command(&mut self.out, &limits) {
                Ok(a) => a,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => return self.timed_out(),
                Err(e) => return if is_disconnect(&e) { Ok(()) } else { Err(e) },
            };
            let bytes = match assembled {
                Assembled::Eof => return Ok(()),
                Assembled::LineTooLong => {
                    self.out.write_all(b"* BAD Line too long\r\n")?;
                    continue;
                }
                Assembled::LiteralTooBig { tag, close } => {
                    let line = match tag {
                        Some(t) => format!("{t} NO [TOOBIG] Literal too big\r\n"),
                        None => "* BAD Literal too big\r\n".to_string(),
                    };
                    self.out.write_all(line.as_bytes())?;
                    if close {
                        self.out.write_all(
                            b"* BYE Not reading that many octets of a refused literal\r\n",
                        )?;
                        self.out.flush()?;
                        return Ok(());
                    }
                    continue;
                }
                Assembled::CommandTooLong { tag } => {
                    let line = match tag {
                        Some(t) => format!("{t} BAD Command too long\r\n"),
                        None => "* BAD Command too long\r\n".to_string(),
                    };
                    self.out.write_all(line.as_bytes())?;
                    self.out
                        .write_all(b"* BYE Command too long to find its end\r\n")?;
                    self.out.flush()?;
                    return Ok(());
                }
                Assembled::Command(b) => b,
            };
            // IMAP4rev2: UTF-8 in quoted strings (imap-codec: RFC 3501).
            let bytes = match self.rev2 {
                true => super::rev2::utf8_quoted_to_literals(&bytes).unwrap_or(bytes),
                false => bytes,
            };
            // What imap-codec cannot parse (rewrite.rs).
            let bytes = match self.rewrite(bytes) {
                Ok(b) => b,
                Err(line) => {
                    self.out.write_all(line.as_bytes())?;
                    continue;
                }
            };
            let cmd = match CommandCodec::default().decode(&bytes) {
                Ok((b"", cmd)) => cmd,
                // What imap-codec cannot parse (extparse.rs says which).
                _ if let Some((tag, name, ext)) = super::extparse::parse(&bytes) => {
                    match self.handle_ext(&tag, name, ext, &bytes) {
                        Ok(()) => continue,
                        Err(s) => return self.stop(s),
                    }
                }
                _ => {
                    self.unparsed();
                    let line = match tag_of(&bytes) {
                        Some(t) => format!("{t} BAD Syntax error in command\r\n"),
                        None => "* BAD Syntax error, no valid tag\r\n".to_string(),
                    };
                    self.out.write_all(line.as_bytes())?;
                    continue;
                }
            };
            if let Err(s) = self.handle(cmd) {
                return self.stop(s);
            }
        }
    }

    fn stop(&mut self, s: Stop) -> io::Result<()> {
        match s {
            Stop::Logout => self.out.flush(),
            Stop::Bye(text) => {
                self.out.write_all(format!("* BYE {text}\r\n").as_bytes())?;
                self.out.flush()
            }
            Stop::Io(e) if e.kind() == io::ErrorKind::TimedOut => self.timed_out(),
            Stop::Io(e) => {
                if is_disconnect(&e) {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// A command parsed by `extparse` (LIST-EXTENDED, CREATE with USE,
    /// MULTIAPPEND); authenticated state only.
    fn handle_ext(
        &mut self,
        tag: &str,
        name: &str,
        cmd: Result<super::extparse::ExtCommand, super::extparse::Error>,
        bytes: &[u8],
    ) -> Result<(), Stop> {
        use super::extparse::ExtCommand;
        // As for LIST and APPEND parsed by imap-codec (`post_check`).
        let post = match cmd {
            Ok(ExtCommand::List(_)) => PostCheck::Skip,
            _ => PostCheck::Wait,
        };
        let result = match cmd {
            Err(e) => bad(e),
            Ok(_) if self.user.is_none() => bad("Log in first"),
            Ok(ExtCommand::List(l)) => self.list_extended(&l),
            Ok(ExtCommand::Create { mailbox, uses }) => self.create_with_use(&mailbox, &uses),
            Ok(ExtCommand::Append { mailbox, messages }) => {
                self.multiappend(&mailbox, &messages, bytes)
            }
        };
        let result = match result {
            Err(Fail::Stop(s)) => return Err(s),
            r => r,
        };
        self.finish(tag, name, (Allow::AllUpdates, post), false, result)
    }

    fn handle(&mut self, cmd: Command<'_>) -> Result<(), Stop> {
        let tag = cmd.tag.as_ref().to_string();
        self.tag.clone_from(&tag);
        let name = cmd.body.name();
        let allow = post_allowance(&cmd.body);
        // Commands that only read: if the mailbox turns out corrupt when
        // looked at after them, their reply says so.
        let reads = matches!(
            cmd.body,
            CommandBody::Noop
                | CommandBody::Check
                | CommandBody::Fetch { .. }
                | CommandBody::Search { .. }
                | CommandBody::Sort { .. }
                | CommandBody::Thread { .. }
        );
        let post = post_check(&cmd.body);
        if works_long(&cmd.body) {
            super::slice::heavy();
        }
        let result = self.dispatch(&tag, cmd.body);
        let result = match result {
            Err(Fail::Stop(s)) => return Err(s),
            r => r,
        };
        self.finish(&tag, name, (allow, post), reads, result)
    }

    /// After a command: the session check, then the tagged reply.
    fn finish(
        &mut self,
        tag: &str,
        name: &str,
        (allow, post): (Allow, PostCheck),
        reads: bool,
        mut result: Result<Done, Fail>,
    ) -> Result<(), Stop> {
        if self.sel.is_some() && post != PostCheck::Skip && !matches!(result, Err(Fail::Bad(_))) {
            match self.try_check(allow, post == PostCheck::Wait)? {
                Err(e @ Error::Corrupt { .. }) if reads && result.is_ok() => {
                    result = Err(Fail::from(e));
                }
                Err(e) => tracing::warn!("session check failed: {e}"),
                Ok(()) => {}
            }
        }
        self.announce_held_expunges();
        let line = match result {
            Ok(d) => match d.code {
                Some(c) => format!("{tag} OK [{c}] {}\r\n", d.text),
                None => format!("{tag} OK {}\r\n", d.text),
            },
            Err(Fail::No(Some(c), t)) => format!("{tag} NO [{c}] {}\r\n", one_line(&t)),
            Err(Fail::No(None, t)) => format!("{tag} NO {}\r\n", one_line(&t)),
            Err(Fail::Bad(t)) => format!("{tag} BAD {name}: {}\r\n", one_line(&t)),
            Err(Fail::Stop(s)) => return Err(s),
        };
        self.buf.extend_from_slice(line.as_bytes());
        // Back to short slices before the reply goes out, not after: a
        // heavy command's thread has used more than its share of the CPU,
        // and the scheduler makes it wait that off at its next chance to
        // run. Here, that is now, before the client has the reply; after
        // the reply, it would be while the client's next command (most
        // likely a cheap one) waits to be read (slice.rs).
        super::slice::short();
        self.flush_buf().map_err(Stop::Io)
    }

    pub(super) fn flush_buf(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        if self.buf.capacity() > 64 * 1024 {
            // Do not keep a big response's buffer for the connection's life.
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Looks at the index and queues what the client must be told.
    pub(super) fn check(&mut self, allow: Allow) -> Result<(), Stop> {
        if let Err(e) = self.try_check(allow, true)? {
            tracing::warn!("session check failed: {e}");
        }
        Ok(())
    }

    /// Like `check`, but does not wait for a writer holding the index
    /// lock (then nothing is checked now; a later check reports it).
    /// False if it was busy.
    pub(super) fn look(&mut self, allow: Allow) -> Result<bool, Stop> {
        match self.check_now(allow, false)? {
            Ok(done) => Ok(done),
            Err(e) => {
                tracing::warn!("session check failed: {e}");
                Ok(true)
            }
        }
    }

    /// Like `check`, giving back a failure that does not end the session.
    /// Without `wait`, a busy index (a writer holds or waits for its lock)
    /// is not waited for: nothing is reported now, the next check will.
    fn try_check(&mut self, allow: Allow, wait: bool) -> Result<Result<(), Error>, Stop> {
        self.check_now(allow, wait).map(|r| r.map(|_| ()))
    }

    /// Checks the selected mailbox and queues its updates; `Ok(false)`
    /// when, without `wait`, the index was busy and nothing was checked.
    pub(super) fn check_now(
        &mut self,
        allow: Allow,
        wait: bool,
    ) -> Result<Result<bool, Error>, Stop> {
        let Some(sel) = self.sel.as_mut() else {
            return Ok(Ok(true));
        };
        let checked = if wait {
            sel.view.check(&mut sel.mbox, allow).map(Some)
        } else {
            sel.view.check_if_free(&mut sel.mbox, allow)
        };
        match checked {
            Ok(Some(ups)) => {
                self.write_updates(&ups);
                Ok(Ok(true))
            }
            Ok(None) => Ok(Ok(false)),
            Err(Error::MailboxDeleted) => {
                self.sel = None;
                self.flush_buf().map_err(Stop::Io)?;
                Err(Stop::Bye("Selected mailbox was deleted".into()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    pub(super) fn write_updates(&mut self, ups: &[Update]) {
        for u in ups {
            match u {
                Update::Expunge(seq) => self
                    .buf
                    .extend_from_slice(format!("* {seq} EXPUNGE\r\n").as_bytes()),
                Update::Vanished(uids) => super::qresync::vanished_lines(
                    &mut self.buf,
                    false,
                    &super::qresync::uid_ranges(uids),
                ),
                Update::Exists(n) => {
                    self.buf
                        .extend_from_slice(format!("* {n} EXISTS\r\n").as_bytes());
                    // RFC 3501 7.3.2: the count of \Recent goes with it.
                    if let Some(line) = self.sel.as_mut().and_then(Selected::learn_recent) {
                        self.buf.extend_from_slice(line.as_bytes());
                    }
                }
                Update::Flags(kw) => {
                    let read_only = self.sel.as_ref().is_some_and(|s| s.read_only);
                    self.write_flags(kw, read_only)
                }
                Update::Fetch {
                    seq,
                    uid,
                    flags,
                    keywords,
                    modseq,
                } => {
                    self.buf
                        .extend_from_slice(format!("* {seq} FETCH (UID {uid} FLAGS ").as_bytes());
                    let recent = self.sel.as_ref().is_some_and(|s| s.recent.contains(*uid));
                    wire::message_flags(&mut self.buf, *flags, recent, keywords);
                    if self.condstore {
                        self.buf
                            .extend_from_slice(format!(" MODSEQ ({modseq})").as_bytes());
                    }
                    self.buf.extend_from_slice(b")\r\n");
                }
            }
        }
    }

    /// FLAGS and PERMANENTFLAGS; a read-only mailbox (EXAMINE) has no
    /// permanent flags (RFC 3501 6.3.2: `PERMANENTFLAGS ()`). `\Recent`
    /// is in FLAGS, never in PERMANENTFLAGS: no client can set it (6.4.6).
    pub(super) fn write_flags(&mut self, keywords: &[String], read_only: bool) {
        let all = storage::Flags::SYSTEM;
        self.buf.extend_from_slice(b"* FLAGS ");
        // IMAP4rev2 has no \Recent (RFC 9051 2.3.2).
        wire::message_flags(&mut self.buf, all, !self.rev2, keywords);
        if read_only {
            self.buf.extend_from_slice(
                b"\r\n* OK [PERMANENTFLAGS ()] No permanent flags (read-only)\r\n",
            );
            return;
        }
        self.buf.extend_from_slice(b"\r\n* OK [PERMANENTFLAGS ");
        let mut perm = Vec::new();
        wire::flag_list(&mut perm, all, keywords);
        perm.pop();
        self.buf.extend_from_slice(&perm);
        self.buf.extend_from_slice(b" \\*)] Flags permitted\r\n");
    }

    pub(super) fn user(&self) -> Result<UserName, Fail> {
        match &self.user {
            Some(u) => Ok(u.clone()),
            None => bad("Not authenticated"),
        }
    }

    pub(super) fn selected(&mut self) -> Result<&mut Selected, Fail> {
        match self.sel.as_mut() {
            Some(s) => Ok(s),
            None => bad("No mailbox selected"),
        }
    }

    fn dispatch(&mut self, tag: &str, body: CommandBody<'_>) -> Result<Done, Fail> {
        // Commands of any state first.
        match body {
            CommandBody::Capability => {
                self.buf
                    .extend_from_slice(format!("* CAPABILITY {}\r\n", self.caps()).as_bytes());
                return ok("CAPABILITY completed");
            }
            CommandBody::Noop => return ok("NOOP completed"),
            CommandBody::Id { parameters } => return self.id(parameters.as_deref()),
            CommandBody::Logout => {
                self.buf.extend_from_slice(b"* BYE Logging out\r\n");
                self.buf
                    .extend_from_slice(format!("{tag} OK LOGOUT completed\r\n").as_bytes());
                self.flush_buf()?;
                return Err(Fail::Stop(Stop::Logout));
            }
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let pass: &[u8] = password.declassify().as_ref();
                return self.login(&user, pass);
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let ir = initial_response.map(|s| s.declassify().to_vec());
                return self.authenticate(&mechanism, ir);
            }
            CommandBody::StartTLS => return self.starttls(),
            _ => {}
        }
        if self.user.is_none() {
            return bad("Log in first");
        }
        match body {
            CommandBody::Enable { capabilities } => {
                let mut enabled = Vec::new();
                for c in capabilities.as_ref() {
                    if matches!(c, CapabilityEnable::CondStore) {
                        self.enable_condstore();
                        enabled.push("CONDSTORE");
                    } else if c.to_string().eq_ignore_ascii_case("QRESYNC") {
                        self.enable_qresync();
                        enabled.push("QRESYNC");
                    } else if c.to_string().eq_ignore_ascii_case("IMAP4rev2") {
                        self.enable_rev2();
                        enabled.push("IMAP4rev2");
                    }
                }
                self.buf.extend_from_slice(
                    format!("* ENABLED {}\r\n", enabled.join(" "))
                        .trim_end()
                        .as_bytes(),
                );
                self.buf.extend_from_slice(b"\r\n");
                ok("ENABLE completed")
            }
            CommandBody::Select {
                mailbox,
                parameters,
            } => {
                self.saved.clear();
                self.select(&mailbox, &parameters, false)
            }
            CommandBody::Examine {
                mailbox,
                parameters,
            } => {
                self.saved.clear();
                self.select(&mailbox, &parameters, true)
            }
            CommandBody::Create { mailbox } => self.create(&mailbox),
            CommandBody::Delete { mailbox } => self.delete(&mailbox),
            CommandBody::Rename { from, to } => self.rename(&from, &to),
            CommandBody::Subscribe { mailbox } => self.subscribe(&mailbox, true),
            CommandBody::Unsubscribe { mailbox } => self.subscribe(&mailbox, false),
            CommandBody::List {
                reference,
                mailbox_wildcard,
            } => self.list_extended(&super::extparse::ListCommand {
                reference: match reference {
                    imap_codec::imap_types::mailbox::Mailbox::Inbox => b"INBOX".to_vec(),
                    imap_codec::imap_types::mailbox::Mailbox::Other(o) => o.as_ref().to_vec(),
                },
                patterns: vec![list_pattern(&mailbox_wildcard)],
                ..Default::default()
            }),
            CommandBody::Namespace => self.namespace(),
            CommandBody::GetQuotaRoot { mailbox } => self.get_quota_root(&mailbox),
            CommandBody::GetQuota { root } => self.get_quota(&root),
            CommandBody::SetQuota { .. } => self.set_quota(),
            CommandBody::Lsub {
                reference,
                mailbox_wildcard,
            } => self.lsub(&reference, &list_pattern(&mailbox_wildcard)),
            CommandBody::Status {
                mailbox,
                item_names,
            } => self.status(&mailbox, &item_names),
            CommandBody::Append {
                mailbox,
                flags,
                date,
                message,
            } => self.append(&mailbox, &flags, date.as_ref(), message),
            CommandBody::Idle => super::idle::idle(self, tag),
            CommandBody::Compress { algorithm } => self.compress(&algorithm),
            CommandBody::Check => {
                self.selected()?;
                ok("CHECK completed")
            }
            CommandBody::Close => {
                let sel = self.selected()?;
                if !sel.read_only {
                    let hint = sel.view.deleted_uids();
                    super::groupcommit::expunge(&mut sel.mbox, None, true, hint)?;
                    super::repack::after_expunge(&mut sel.mbox);
                }
                self.sel = None;
                self.saved.clear();
                ok("CLOSE completed")
            }
            CommandBody::Unselect => {
                self.selected()?;
                self.sel = None;
                self.saved.clear();
                ok("UNSELECT completed")
            }
            CommandBody::Expunge => self.expunge(None),
            CommandBody::ExpungeUid { sequence_set } => self.expunge(Some(&sequence_set)),
            CommandBody::Search {
                charset,
                criteria,
                uid,
            } => self.search(
                tag,
                charset.as_ref().map(|c| c.as_ref()),
                criteria.as_ref(),
                uid,
            ),
            CommandBody::Sort {
                sort_criteria,
                charset,
                search_criteria,
                uid,
            } => self.sort(
                tag,
                sort_criteria.as_ref(),
                charset.as_ref(),
                search_criteria.as_ref(),
                uid,
            ),
            CommandBody::Thread {
                algorithm,
                charset,
                search_criteria,
                uid,
            } => self.thread(&algorithm, charset.as_ref(), search_criteria.as_ref(), uid),
            CommandBody::Fetch {
                sequence_set,
                macro_or_item_names,
                uid,
                modifiers,
            } => {
                use imap_codec::imap_types::IntoStatic;
                self.fetch(
                    &sequence_set,
                    macro_or_item_names.into_static(),
                    uid,
                    &modifiers,
                )
            }
            CommandBody::Store {
                sequence_set,
                kind,
                response,
                flags,
                uid,
                modifiers,
            } => self.store(&sequence_set, kind, response, &flags, uid, &modifiers),
            CommandBody::Copy {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, false),
            CommandBody::Move {
                sequence_set,
                mailbox,
                uid,
            } => self.copy(&sequence_set, &mailbox, uid, true),
            other => bad(&format!("{} is not supported", other.name())),
        }
    }
}

/// What the check after a command may send: no EXPUNGE while answering
/// FETCH, STORE, SEARCH (or COPY) by sequence number.
/// Commands that may keep a CPU busy for long (reading many records or
/// message files, parsing a message): they run with the kernel's default
/// slice, the rest with short ones (slice.rs). SELECT and EXAMINE are
/// heavy only when they read every record (`open_view`): a re-SELECT
/// that catches up costs what a NOOP costs.
fn works_long(body: &CommandBody) -> bool {
    matches!(
        body,
        CommandBody::Fetch { .. }
            | CommandBody::Search { .. }
            | CommandBody::Sort { .. }
            | CommandBody::Thread { .. }
            | CommandBody::Append { .. }
            | CommandBody::Copy { .. }
            | CommandBody::Move { .. }
    )
}

fn post_allowance(body: &CommandBody) -> Allow {
    match body {
        CommandBody::Fetch { uid: false, .. }
        | CommandBody::Store { uid: false, .. }
        | CommandBody::Search { uid: false, .. }
        | CommandBody::Sort { uid: false, .. }
        | CommandBody::Thread { uid: false, .. }
        | CommandBody::Copy { uid: false, .. } => Allow::NoExpunge,
        _ => Allow::AllUpdates,
    }
}

/// How the selected mailbox is looked at after a command. RFC 3501
/// section 7 lets the server send its updates after any command but
/// requires them after none in particular (NOOP is the command for
/// polling, RFC 3501 6.1.2); an update not sent now goes out after a later
/// command, never lost.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PostCheck {
    /// Commands on the selected mailbox, NOOP and CHECK: wait for a
    /// commit in progress, so a client polling with NOOP always sees a
    /// commit that completed before it.
    Wait,
    /// Commands that only read it (FETCH, SEARCH) and IDLE (which looked
    /// while idling): look if no writer holds the lock, else not now.
    IfFree,
    /// Commands about other mailboxes or none: not at all. Also SELECT
    /// and EXAMINE, whose view was just read or caught up under its own
    /// lock: a second look at once would only read the header again.
    Skip,
}

fn post_check(body: &CommandBody) -> PostCheck {
    match body {
        CommandBody::List { .. }
        | CommandBody::Lsub { .. }
        | CommandBody::Status { .. }
        | CommandBody::Subscribe { .. }
        | CommandBody::Unsubscribe { .. }
        | CommandBody::Select { .. }
        | CommandBody::Examine { .. }
        | CommandBody::Capability => PostCheck::Skip,
        CommandBody::Fetch { .. } | CommandBody::Search { .. } | CommandBody::Idle => {
            PostCheck::IfFree
        }
        _ => PostCheck::Wait,
    }
}

fn list_pattern(m: &imap_codec::imap_types::mailbox::ListMailbox) -> Vec<u8> {
    use imap_codec::imap_types::mailbox::ListMailbox;
    match m {
        ListMailbox::Token(t) => t.as_ref().to_vec(),
        ListMailbox::String(s) => s.as_ref().to_vec(),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset | io::ErrorKind::UnexpectedEof
    )
}
