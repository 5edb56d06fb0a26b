//! LMTP server mode (RFC 2033): on stdin/stdout (`--lmtp`) or on a unix
//! or TCP socket (`--lmtp --listen`), one thread per connection.
//!
//! - Extensions: PIPELINING, ENHANCEDSTATUSCODES, 8BITMIME, SIZE.
//! - RCPT: the local part before `+` names the user (`--lmtp-full-address`:
//!   the whole address), `+detail` names a mailbox used when it exists.
//!   Unknown user → `550 5.1.1`; over quota → `452 4.2.2` (`552 5.2.2`
//!   with `--quota-hard`); other temporary problems → `451 4.x.x`.
//! - DATA: dot-unstuffed, normalized as in one-shot mode (CRLF, NUL
//!   refused), `Return-Path:` from MAIL FROM put first (Postfix adds none
//!   over LMTP). The message is kept in memory up to 1 MiB, beyond that in
//!   an unlinked file in the spool, then staged once per recipient; all
//!   recipients in one mailbox are committed together (one lock, one
//!   fsync round), and each recipient gets its own reply, in RCPT order.
//!   Concurrent sessions delivering into one mailbox share commits too
//!   (see [`crate::group`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::delivery::{Settings, Target, address_detail, empty_failure, nul_failure};
use crate::group::{GroupCommit, Stored, Submission};
use crate::input::{Buffers, Normalizer};
use crate::status::{Failure, from_storage};

pub struct LmtpOptions {
    pub full_address: bool,
    pub max_connections: usize,
    pub socket_mode: u32,
}

struct Ctx {
    settings: Settings,
    /// Compiled Sieve scripts, shared by all sessions.
    scripts: crate::filter::ScriptCache,
    group: GroupCommit,
    opts: LmtpOptions,
    hostname: String,
}

const MAX_LINE: usize = 4096;
const MAX_RCPTS: usize = 1000;
const MEM_LIMIT: usize = 1 << 20;
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The host's name, read once per process (Sieve's `environment` and
/// vacation ask for it on every delivery).
pub(crate) fn hostname() -> String {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "localhost".into())
    })
    .clone()
}

fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::temp("4.3.0", format!("{what}: {e}"))
}

pub fn serve_stdio(settings: Settings, opts: LmtpOptions) -> Result<(), Failure> {
    let ctx = Ctx {
        scripts: Default::default(),
        group: GroupCommit::new(settings.dedup_window),
        settings,
        opts,
        hostname: hostname(),
    };
    let r = BufReader::with_capacity(64 * 1024, io::stdin());
    let w = BufWriter::new(io::stdout());
    match Session::new(&ctx, r, w).run() {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(io_failure("LMTP session", e)),
    }
}

pub fn serve_listen(settings: Settings, opts: LmtpOptions, addr: &str) -> Result<(), Failure> {
    let ctx = Arc::new(Ctx {
        scripts: Default::default(),
        group: GroupCommit::new(settings.dedup_window),
        settings,
        opts,
        hostname: hostname(),
    });
    let active = Arc::new(AtomicUsize::new(0));
    if let Some(path) = addr.strip_prefix("unix:") {
        use std::os::unix::fs::FileTypeExt;
        // A socket left by an earlier run would make bind fail; anything
        // else at that path is not ours to remove.
        if let Ok(md) = std::fs::symlink_metadata(path)
            && md.file_type().is_socket()
        {
            let _ = std::fs::remove_file(path);
        }
        let l = std::os::unix::net::UnixListener::bind(path)
            .map_err(|e| io_failure(&format!("bind {path}"), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(ctx.opts.socket_mode))
            .map_err(|e| io_failure(&format!("chmod {path}"), e))?;
        tracing::info!(listen = addr, "LMTP server ready");
        for conn in l.incoming() {
            match conn {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(IDLE_TIMEOUT));
                    let w = s.try_clone().map_err(|e| io_failure("clone socket", e))?;
                    spawn_session(&ctx, &active, s, w);
                }
                Err(e) => tracing::warn!("accept: {e}"),
            }
        }
    } else {
        let a = addr.strip_prefix("tcp:").unwrap_or(addr);
        let l = std::net::TcpListener::bind(a).map_err(|e| io_failure(&format!("bind {a}"), e))?;
        tracing::info!(listen = %l.local_addr().map(|x| x.to_string()).unwrap_or_default(), "LMTP server ready");
        for conn in l.incoming() {
            match conn {
                Ok(s) => {
                    let _ = s.set_read_timeout(Some(IDLE_TIMEOUT));
                    let _ = s.set_nodelay(true);
                    let w = s.try_clone().map_err(|e| io_failure("clone socket", e))?;
                    spawn_session(&ctx, &active, s, w);
                }
                Err(e) => tracing::warn!("accept: {e}"),
            }
        }
    }
    Ok(())
}

fn spawn_session<R, W>(ctx: &Arc<Ctx>, active: &Arc<AtomicUsize>, r: R, mut w: W)
where
    R: Read + Send + 'static,
    W: Write + Send + 'static,
{
    if active.fetch_add(1, Ordering::SeqCst) >= ctx.opts.max_connections {
        active.fetch_sub(1, Ordering::SeqCst);
        let _ = w.write_all(b"421 4.3.2 too many connections, try again later\r\n");
        return;
    }
    let ctx = ctx.clone();
    let slot = ConnectionSlot(active.clone());
    std::thread::spawn(move || {
        let _slot = slot;
        let r = BufReader::with_capacity(64 * 1024, r);
        // A panic ends this session only (the client sees the connection
        // close and retries), is logged, and gives its slot back.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Session::new(&ctx, r, BufWriter::new(w)).run()
        }));
        match run {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!("LMTP session ended: {e}"),
            Err(_) => tracing::error!(
                "LMTP session ended by an internal error: {}",
                crate::take_panic_message()
            ),
        }
    });
}

/// One of `--max-connections`, given back when the session's thread
/// ends, however it ends.
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Rcpt {
    target: Target,
    /// The address as given in RCPT TO (Sieve's envelope "to").
    address: String,
}

#[derive(Default)]
struct Txn {
    sender: Option<String>,
    size_hint: u64,
    rcpts: Vec<Rcpt>,
}

struct Session<'c, R, W: Write> {
    ctx: &'c Ctx,
    r: BufReader<R>,
    w: BufWriter<W>,
    greeted: bool,
    txn: Txn,
    /// The last message's normalizer buffers, for the next DATA.
    bufs: Option<Buffers>,
}

enum Line {
    Ok(String),
    TooLong,
    Eof,
}

impl<'c, R: Read, W: Write> Session<'c, R, W> {
    fn new(ctx: &'c Ctx, r: BufReader<R>, w: BufWriter<W>) -> Self {
        Session {
            ctx,
            r,
            w,
            greeted: false,
            txn: Txn::default(),
            bufs: None,
        }
    }

    fn reply(&mut self, s: &str) -> io::Result<()> {
        self.w.write_all(s.as_bytes())?;
        self.w.write_all(b"\r\n")
    }

    /// Reads one command line (bounded); flushes pending replies first
    /// unless more pipelined input is already buffered.
    fn read_line(&mut self) -> io::Result<Line> {
        if self.r.buffer().is_empty() {
            self.w.flush()?;
        }
        let mut line = Vec::new();
        let mut too_long = false;
        loop {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                return Ok(Line::Eof);
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(p) => (p + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take <= MAX_LINE {
                line.extend_from_slice(&buf[..take]);
            } else {
                too_long = true;
            }
            self.r.consume(take);
            if done {
                break;
            }
        }
        if too_long {
            return Ok(Line::TooLong);
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(Line::Ok(String::from_utf8_lossy(&line).into_owned()))
    }

    fn run(mut self) -> io::Result<()> {
        let greeting = format!("220 {} LMTP deliver ready", self.ctx.hostname);
        self.reply(&greeting)?;
        loop {
            let line = match self.read_line()? {
                Line::Eof => break,
                Line::TooLong => {
                    self.reply("500 5.5.2 line too long")?;
                    continue;
                }
                Line::Ok(l) => l,
            };
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
                None => (line.trim().to_ascii_uppercase(), String::new()),
            };
            match verb.as_str() {
                "LHLO" => self.lhlo(&arg)?,
                "MAIL" => self.mail(&arg)?,
                "RCPT" => self.rcpt(&arg)?,
                "DATA" => self.data()?,
                "RSET" => {
                    self.txn = Txn::default();
                    self.reply("250 2.0.0 OK")?
                }
                "NOOP" => {
                    // Test hook: proves that a session's panic is contained.
                    if std::env::var_os("DELIVER_TEST_PANIC_ON_NOOP").is_some() {
                        panic!("DELIVER_TEST_PANIC_ON_NOOP is set");
                    }
                    self.reply("250 2.0.0 OK")?
                }
                "QUIT" => {
                    self.reply(&format!("221 2.0.0 {} closing", self.ctx.hostname))?;
                    self.w.flush()?;
                    return Ok(());
                }
                "HELO" | "EHLO" => self.reply("500 5.5.1 this is LMTP: use LHLO")?,
                "VRFY" => self.reply("252 2.5.2 send some mail, I'll try my best")?,
                _ => self.reply("500 5.5.2 command not recognized")?,
            }
        }
        self.w.flush()
    }

    fn lhlo(&mut self, arg: &str) -> io::Result<()> {
        if arg.is_empty() {
            return self.reply("501 5.5.4 LHLO needs a host name");
        }
        self.greeted = true;
        self.txn = Txn::default();
        let size = match self.ctx.settings.max_size {
            Some(n) => format!("SIZE {n}"),
            None => "SIZE".into(),
        };
        let host = self.ctx.hostname.clone();
        self.reply(&format!("250-{host}"))?;
        self.reply("250-PIPELINING")?;
        self.reply("250-ENHANCEDSTATUSCODES")?;
        self.reply("250-8BITMIME")?;
        self.reply(&format!("250 {size}"))
    }

    fn mail(&mut self, arg: &str) -> io::Result<()> {
        if !self.greeted {
            return self.reply("503 5.5.1 send LHLO first");
        }
        if self.txn.sender.is_some() {
            return self.reply("503 5.5.1 nested MAIL command");
        }
        let Some((addr, params)) = path_arg(arg, "FROM:") else {
            return self.reply("501 5.5.4 syntax: MAIL FROM:<address>");
        };
        let mut size = 0u64;
        for p in params.split_whitespace() {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_uppercase().as_str() {
                "SIZE" => match v.parse() {
                    Ok(n) => size = n,
                    Err(_) => return self.reply("501 5.5.4 bad SIZE"),
                },
                "BODY" if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
                _ => return self.reply(&format!("555 5.5.4 unsupported parameter {p}")),
            }
        }
        if let Some(max) = self.ctx.settings.max_size
            && size > max
        {
            return self.reply(&format!("552 5.3.4 message size exceeds {max} bytes"));
        }
        self.txn.sender = Some(addr);
        self.txn.size_hint = size;
        self.reply("250 2.1.0 sender OK")
    }

    fn rcpt(&mut self, arg: &str) -> io::Result<()> {
        if self.txn.sender.is_none() {
            return self.reply("503 5.5.1 send MAIL first");
        }
        let Some((addr, _params)) = path_arg(arg, "TO:") else {
            return self.reply("501 5.5.4 syntax: RCPT TO:<address>");
        };
        if self.txn.rcpts.len() >= MAX_RCPTS {
            return self.reply("452 4.5.3 too many recipients");
        }
        let (user, detail) = split_recipient(&addr, self.ctx.opts.full_address);
        let s = &self.ctx.settings;
        let resolved = s.resolve(&user, None, detail.as_deref()).or_else(|f| {
            // Mail systems fold case; a store user is usually lower case.
            let lower = user.to_lowercase();
            if f.status == "5.1.1" && lower != user {
                s.resolve(&lower, None, detail.as_deref())
            } else {
                Err(f)
            }
        });
        let target = match resolved {
            Ok(t) => t,
            Err(f) => return self.reply(&f.reply()),
        };
        if let Err(f) = s.check_quota(&target.user, self.txn.size_hint) {
            return self.reply(&f.reply());
        }
        self.txn.rcpts.push(Rcpt {
            target,
            address: addr,
        });
        self.reply("250 2.1.5 recipient OK")
    }

    fn data(&mut self) -> io::Result<()> {
        if self.txn.sender.is_none() {
            return self.reply("503 5.5.1 send MAIL first");
        }
        if self.txn.rcpts.is_empty() {
            return self.reply("503 5.5.1 no valid recipients");
        }
        self.reply("354 end data with <CR><LF>.<CR><LF>")?;
        self.w.flush()?;
        let start = Instant::now();
        let sender = self.txn.sender.clone();
        let spool = self.ctx.settings.store.root().to_path_buf();
        let max = self.ctx.settings.max_size;
        let bufs = self.bufs.take().unwrap_or_default();
        let mut norm =
            Normalizer::with_buffers(DotReader::new(&mut self.r), false, sender.as_deref(), bufs);
        let mut body = Body::Mem(Vec::new());
        let mut too_large = false;
        let mut spill_error = None;
        let mut produced = 0u64;
        loop {
            // Straight from the normalizer's buffer into the body.
            let chunk = match norm.next_chunk() {
                Ok([]) => break,
                Ok(c) => c,
                Err(e) => {
                    if norm.bad.is_none() {
                        return Err(e);
                    }
                    io::copy(norm.inner_mut(), &mut io::sink())?;
                    break;
                }
            };
            produced += chunk.len() as u64;
            if too_large || spill_error.is_some() {
                continue;
            }
            if max.is_some_and(|m| produced > m) {
                too_large = true;
                continue;
            }
            if let Err(e) = body.write(chunk, &spool) {
                spill_error = Some(e);
            }
        }
        norm.headers.finish();
        let (bad, content_bytes, output_bytes) = (norm.bad, norm.content_bytes, norm.output_bytes);
        let headers = std::mem::take(&mut norm.headers);
        self.bufs = Some(norm.into_buffers());
        let rcpts = std::mem::take(&mut self.txn);
        let outcome: Result<(), Failure> = if bad.is_some() {
            Err(nul_failure())
        } else if content_bytes == 0 {
            Err(empty_failure())
        } else if too_large {
            Err(Failure::new(
                crate::status::EX_DATAERR,
                "5.3.4",
                format!("message size exceeds {} bytes", max.unwrap_or(0)),
            ))
        } else if let Some(e) = spill_error {
            Err(io_failure("spool message", e))
        } else {
            Ok(())
        };
        let replies = match outcome {
            Err(f) => vec![f.reply(); rcpts.rcpts.len()],
            Ok(()) => {
                let meta = MessageMeta {
                    start,
                    message_id: headers.message_id,
                    sent_date: headers
                        .date
                        .as_deref()
                        .and_then(storage::sent_date::parse)
                        .unwrap_or(0),
                    size: output_bytes,
                };
                self.store_all(&rcpts.rcpts, rcpts.sender.as_deref(), &body, &meta, start)
            }
        };
        for r in replies {
            self.reply(&r)?;
        }
        Ok(())
    }

    /// Stores one copy per recipient; recipients sharing a mailbox are
    /// committed together. Returns one reply per recipient, in order.
    ///
    /// With duplicate suppression on and a Message-ID, recipients sharing
    /// a mailbox get one copy (the first is "delivered", the others
    /// "duplicate"), and none if the mailbox's duplicate log already has
    /// it; every one of them gets 250.
    fn store_all(
        &self,
        rcpts: &[Rcpt],
        sender: Option<&str>,
        body: &Body,
        meta: &MessageMeta,
        start: Instant,
    ) -> Vec<String> {
        let s = &self.ctx.settings;
        let mut replies = vec![String::new(); rcpts.len()];
        let filtered = self.store_filtered(rcpts, sender, body, meta, &mut replies);
        let mut groups: BTreeMap<&Target, Vec<usize>> = BTreeMap::new();
        for (i, r) in rcpts.iter().enumerate() {
            if !filtered[i] {
                groups.entry(&r.target).or_default().push(i);
            }
        }
        let key = s.dedup_key(meta.message_id.as_deref());
        for (target, idx) in groups {
            // Copies to store: one per recipient, or one in all when
            // duplicates are suppressed.
            let copies = if key.is_some() { 1 } else { idx.len() };
            let result = (|| -> Result<Stored, Failure> {
                s.check_quota(&target.user, meta.size * copies as u64)?;
                let mut mbox = s
                    .store
                    .open_mailbox(&target.user, &target.mailbox)
                    .map_err(|e| from_storage(&e))?;
                let in_flight = self.ctx.group.enter(target);
                mbox.set_unordered_appends(in_flight.others == 0);
                let mut staged = Vec::with_capacity(copies);
                for _ in 0..copies {
                    let mut opts = s.append_options();
                    opts.sent_date = meta.sent_date;
                    staged.push(
                        mbox.stage(body.reader(), opts)
                            .map_err(|e| from_storage(&e))?,
                    );
                }
                let sub = Submission { staged, key };
                self.ctx.group.commit(target, &mut mbox, sub)
            })();
            match result {
                Ok(Stored::Duplicate) => {
                    tracing::info!(
                        user = %target.user,
                        mailbox = %target.mailbox,
                        message_id = meta.message_id.as_deref().unwrap_or(""),
                        recipients = idx.len(),
                        elapsed_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
                        "duplicate suppressed"
                    );
                    for &i in &idx {
                        replies[i] = duplicate_reply(&target.user);
                    }
                }
                Ok(Stored::Uids(uids)) => {
                    // With suppression on, one copy for several recipients.
                    let copies = uids.len();
                    for (&i, uid) in idx.iter().zip(uids) {
                        tracing::info!(
                            user = %target.user,
                            mailbox = %target.mailbox,
                            uid,
                            size = meta.size,
                            message_id = meta.message_id.as_deref().unwrap_or(""),
                            elapsed_ms = format_args!("{:.3}", start.elapsed().as_secs_f64() * 1000.0),
                            "delivered"
                        );
                        replies[i] = format!("250 2.0.0 delivered to {} uid {uid}", target.user);
                    }
                    if idx.len() > copies {
                        tracing::info!(
                            user = %target.user,
                            mailbox = %target.mailbox,
                            message_id = meta.message_id.as_deref().unwrap_or(""),
                            recipients = idx.len() - copies,
                            "duplicate suppressed"
                        );
                    }
                    for &i in &idx[copies..] {
                        replies[i] = duplicate_reply(&target.user);
                    }
                }
                Err(f) => {
                    tracing::warn!(user = %target.user, mailbox = %target.mailbox, "{}", f.line());
                    for &i in &idx {
                        replies[i] = f.reply();
                    }
                }
            }
        }
        replies
    }
}

impl<R: Read, W: Write> Session<'_, R, W> {
    /// Recipients with an active Sieve script: each runs its script and
    /// gets its own reply (`550 5.7.1` for a rejection). Returns which
    /// recipients were handled here; the others are stored as usual.
    fn store_filtered(
        &self,
        rcpts: &[Rcpt],
        sender: Option<&str>,
        body: &Body,
        meta: &MessageMeta,
        replies: &mut [String],
    ) -> Vec<bool> {
        let start = meta.start;
        use crate::filter;
        let s = &self.ctx.settings;
        let mut handled = vec![false; rcpts.len()];
        let with_script: Vec<(usize, filter::ActiveScript)> = (0..rcpts.len())
            .filter_map(|i| {
                let user = &rcpts[i].target.user;
                Some((i, self.ctx.scripts.active_script(&s.store, user)?))
            })
            .collect();
        if with_script.is_empty() {
            return handled;
        }
        let limit = filter::MAX_FILTERED_MESSAGE as u64;
        // In memory (up to MEM_LIMIT, below the limit): used where it is.
        let message: std::borrow::Cow<[u8]> = match body {
            Body::Mem(v) => v.as_slice().into(),
            Body::File(..) => {
                let mut m = Vec::with_capacity(meta.size.min(limit) as usize + 1);
                if let Err(e) = body.reader().take(limit + 1).read_to_end(&mut m) {
                    for (i, _) in &with_script {
                        handled[*i] = true;
                        replies[*i] = io_failure("read spooled message", e.kind().into()).reply();
                    }
                    return handled;
                }
                m.into()
            }
        };
        if message.len() as u64 > limit {
            tracing::warn!("sieve: message larger than {limit} bytes, not filtered; implicit keep");
            return handled;
        }
        for (i, script) in with_script {
            handled[i] = true;
            let r = &rcpts[i];
            let result = filter::filter_and_store(
                s,
                Some(&self.ctx.group),
                &self.ctx.scripts,
                &script,
                &r.target,
                &message,
                sender,
                Some(&r.address),
                meta.sent_date,
                meta.message_id.as_deref(),
            );
            replies[i] = match result {
                Ok(done) => {
                    filter::log_done(
                        &r.target.user,
                        &done,
                        message.len(),
                        meta.message_id.as_deref(),
                        start,
                    );
                    match done {
                        filter::Done::Stored(list) => format!(
                            "250 2.0.0 delivered to {} ({} mailbox{})",
                            r.target.user,
                            list.len(),
                            if list.len() == 1 { "" } else { "es" }
                        ),
                        filter::Done::Discarded => {
                            format!("250 2.0.0 discarded for {} by sieve", r.target.user)
                        }
                        filter::Done::Rejected(reason) => {
                            let text = filter::reject_text(&reason);
                            tracing::info!(user = %r.target.user, reason = %text, "rejected by sieve");
                            Failure::new(crate::status::EX_NOPERM, "5.7.1", text).reply()
                        }
                    }
                }
                Err(f) => {
                    tracing::warn!(user = %r.target.user, "{}", f.line());
                    f.reply()
                }
            };
        }
        handled
    }
}

fn duplicate_reply(user: &storage::UserName) -> String {
    format!("250 2.0.0 duplicate for {user} suppressed, not stored again")
}

struct MessageMeta {
    /// When DATA began (for the log lines' elapsed times).
    start: Instant,
    message_id: Option<String>,
    sent_date: i64,
    size: u64,
}

/// `FROM:<addr> params` → (addr, params). Accepts a space after the colon
/// and a bare address without brackets.
fn path_arg(arg: &str, prefix: &str) -> Option<(String, String)> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    if let Some(r) = rest.strip_prefix('<') {
        let end = r.find('>')?;
        let addr = &r[..end];
        // Drop a source route (@a,@b:user@host).
        let addr = match addr.starts_with('@') {
            true => addr.split_once(':').map_or(addr, |(_, a)| a),
            false => addr,
        };
        Some((addr.to_string(), r[end + 1..].trim().to_string()))
    } else {
        let (a, p) = rest.split_once(' ').unwrap_or((rest, ""));
        (!a.is_empty()).then(|| (a.to_string(), p.trim().to_string()))
    }
}

/// (user, detail) of a recipient address.
fn split_recipient(addr: &str, full_address: bool) -> (String, Option<String>) {
    let (local, domain) = match addr.rsplit_once('@') {
        Some((l, d)) => (l, Some(d)),
        None => (addr, None),
    };
    let local = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or(local);
    let detail = address_detail(addr).map(str::to_string);
    let base = local.split_once('+').map_or(local, |(b, _)| b);
    if full_address {
        let user = match domain {
            Some(d) => format!("{base}@{}", d.to_ascii_lowercase()),
            None => base.to_string(),
        };
        (user, detail)
    } else {
        (base.to_string(), detail)
    }
}

/// The DATA body: in memory while small, else an unlinked file.
enum Body {
    Mem(Vec<u8>),
    File(File, u64),
}

impl Body {
    fn write(&mut self, data: &[u8], spool: &std::path::Path) -> io::Result<()> {
        if let Body::Mem(v) = self
            && v.len() + data.len() > MEM_LIMIT
        {
            let f = tempfile::tempfile_in(spool)?;
            f.write_all_at(v, 0)?;
            *self = Body::File(f, v.len() as u64);
        }
        match self {
            Body::Mem(v) => v.extend_from_slice(data),
            Body::File(f, len) => {
                f.write_all_at(data, *len)?;
                *len += data.len() as u64;
            }
        }
        Ok(())
    }

    fn reader(&self) -> Box<dyn Read + '_> {
        match self {
            Body::Mem(v) => Box::new(&v[..]),
            Body::File(f, len) => Box::new(FileReader {
                f,
                pos: 0,
                len: *len,
            }),
        }
    }
}

struct FileReader<'a> {
    f: &'a File,
    pos: u64,
    len: u64,
}

impl Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.len - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.f.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a DATA body up to the terminating `.` line, removing the
/// leading dot of stuffed lines. A lone `.` ends the data whether it is
/// followed by CRLF or a bare LF. End of input before it is an error.
pub struct DotReader<'a, R> {
    r: &'a mut BufReader<R>,
    state: Dot,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dot {
    LineStart,
    Mid,
    /// A line started with `.`, which was dropped.
    Period,
    /// `.` then CR at line start.
    PeriodCr,
    Done,
}

impl<'a, R: Read> DotReader<'a, R> {
    pub fn new(r: &'a mut BufReader<R>) -> Self {
        DotReader {
            r,
            state: Dot::LineStart,
        }
    }
}

impl<R: Read> Read for DotReader<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < out.len() && self.state != Dot::Done {
            let buf = self.r.fill_buf()?;
            if buf.is_empty() {
                if n > 0 {
                    return Ok(n);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in DATA",
                ));
            }
            match self.state {
                Dot::LineStart => {
                    if buf[0] == b'.' {
                        self.r.consume(1);
                        self.state = Dot::Period;
                    } else {
                        self.state = Dot::Mid;
                    }
                }
                Dot::Period => match buf[0] {
                    b'\r' => {
                        self.r.consume(1);
                        self.state = Dot::PeriodCr;
                    }
                    b'\n' => {
                        self.r.consume(1);
                        self.state = Dot::Done;
                    }
                    _ => self.state = Dot::Mid,
                },
                Dot::PeriodCr => {
                    if buf[0] == b'\n' {
                        self.r.consume(1);
                        self.state = Dot::Done;
                    } else {
                        // ".\rX": the CR belongs to the line.
                        out[n] = b'\r';
                        n += 1;
                        self.state = Dot::Mid;
                    }
                }
                Dot::Mid => {
                    // Whole lines at once, up to the first line that starts
                    // with `.` or the end of what is buffered; the state
                    // machine looks at each line start only there.
                    let avail = &buf[..buf.len().min(out.len() - n)];
                    let mut take = avail.len();
                    for p in memchr::memchr_iter(b'\n', avail) {
                        if avail.get(p + 1).is_none_or(|&b| b == b'.') {
                            take = p + 1;
                            self.state = Dot::LineStart;
                            break;
                        }
                    }
                    out[n..n + take].copy_from_slice(&avail[..take]);
                    n += take;
                    self.r.consume(take);
                }
                Dot::Done => {}
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn undot(input: &[u8]) -> (io::Result<Vec<u8>>, Vec<u8>) {
        let mut r = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let res = DotReader::new(&mut r).read_to_end(&mut out).map(|_| out);
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).unwrap();
        (res, rest)
    }

    #[test]
    fn dot_unstuffing_and_terminator() {
        let (got, rest) = undot(b"a\r\n..b\r\n.c\r\n.\r\nQUIT\r\n");
        assert_eq!(got.unwrap(), b"a\r\n.b\r\nc\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        let (got, _) = undot(b".\n");
        assert_eq!(got.unwrap(), b"");
        let (got, _) = undot(b".\rx\r\n.\r\n");
        assert_eq!(got.unwrap(), b"\rx\r\n");
        assert!(undot(b"a\r\nb").0.is_err());
    }

    /// RFC 5321 4.5.2 read line by line: a line that is `.` alone ends
    /// the data, a leading `.` of any other line is dropped. `None`: the
    /// input ends before the terminator. Also what follows it.
    fn undot_reference(input: &[u8]) -> (Option<Vec<u8>>, Vec<u8>) {
        let mut out = Vec::new();
        let mut rest = input;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |p| p + 1);
            let (line, after) = rest.split_at(end);
            if line == b".\r\n" || line == b".\n" {
                return (Some(out), after.to_vec());
            }
            out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
            rest = after;
        }
        (None, Vec::new())
    }

    proptest::proptest! {
        #[test]
        fn unstuffing_matches_the_line_rule_however_it_is_read(
            input in proptest::collection::vec(
                proptest::sample::select(vec![b'a', b'.', b'\r', b'\n']),
                0..120,
            ),
            capacity in 1usize..24,
            reads in proptest::collection::vec(1usize..24, 1..6),
        ) {
            let mut r = BufReader::with_capacity(capacity, &input[..]);
            let mut d = DotReader::new(&mut r);
            let mut got = Vec::new();
            let mut failed = false;
            for i in 0.. {
                let mut buf = vec![0; reads[i % reads.len()]];
                match d.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let mut rest = Vec::new();
            r.read_to_end(&mut rest).unwrap();
            let (want, want_rest) = undot_reference(&input);
            match want {
                Some(w) => {
                    proptest::prop_assert!(!failed);
                    proptest::prop_assert_eq!(got, w);
                    proptest::prop_assert_eq!(rest, want_rest);
                }
                None => proptest::prop_assert!(failed),
            }
        }
    }

    #[test]
    fn addresses() {
        assert_eq!(
            path_arg("FROM:<a@b> SIZE=10", "FROM:"),
            Some(("a@b".into(), "SIZE=10".into()))
        );
        assert_eq!(path_arg("from: <>", "FROM:"), Some(("".into(), "".into())));
        assert_eq!(
            path_arg("TO:<@r1,@r2:u@h>", "TO:"),
            Some(("u@h".into(), "".into()))
        );
        assert_eq!(path_arg("TO:", "TO:"), None);
        assert_eq!(
            split_recipient("bob+lists@Example.org", false),
            ("bob".into(), Some("lists".into()))
        );
        assert_eq!(
            split_recipient("bob+x@Example.org", true),
            ("bob@example.org".into(), Some("x".into()))
        );
        assert_eq!(split_recipient("\"bob\"@h", false), ("bob".into(), None));
    }
}
