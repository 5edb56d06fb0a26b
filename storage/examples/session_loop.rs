//! A minimal IMAP-like session on standard input and output: SELECT a
//! mailbox, answer FETCH and NOOP with the updates RFC 3501 allows at each
//! point, and IDLE (RFC 2177) by waiting for a committed change.
//!
//! ```text
//! session_loop SPOOL USER
//! ```
//!
//! Commands, one a line, `TAG COMMAND [ARG]`: `SELECT mailbox`,
//! `FETCH seq` (flags, UID and size of one message), `NOOP`,
//! `IDLE seconds` (ends by itself once it sent updates or after that many
//! seconds, where a real server waits for the client's `DONE`), `LOGOUT`. Replies are IMAP-shaped lines. It is
//! not an IMAP server (no parser, no literals), just the calls one makes
//! on the store, in order, as the crate documentation explains them.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::Duration;

use mailstore::watch::{Waited, Watch};
use mailstore::{Allow, Mailbox, MailboxName, Options, SessionView, Store, Update, UserName};

/// The selected mailbox: the handle, the view of what the client was told,
/// and the watch that IDLE waits on.
struct Selected {
    mbox: Mailbox,
    view: SessionView,
    watch: Watch,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spool, user] = args.as_slice() else {
        eprintln!("usage: session_loop SPOOL USER");
        std::process::exit(64);
    };
    let store = Store::open(&PathBuf::from(spool), Options::default())?;
    let user = UserName::new(user)?;
    let mut sel: Option<Selected> = None;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let (Some(tag), Some(cmd)) = (words.next(), words.next()) else {
            continue;
        };
        let arg = words.next();
        let reply = match (cmd.to_ascii_uppercase().as_str(), sel.as_mut()) {
            ("LOGOUT", _) => {
                writeln!(out, "* BYE")?;
                writeln!(out, "{tag} OK LOGOUT completed")?;
                return Ok(());
            }
            ("SELECT", _) => {
                sel = None;
                match select(&store, &user, arg.unwrap_or("INBOX"), &mut out) {
                    Ok(s) => {
                        sel = Some(s);
                        "OK [READ-WRITE] SELECT completed".to_string()
                    }
                    Err(e) => no(&e),
                }
            }
            (_, None) => "BAD no mailbox selected".to_string(),
            ("NOOP", Some(s)) => {
                // NOOP may carry every update, EXPUNGE included
                // (RFC 3501 6.1.2, 7.4.1).
                match s.view.check(&mut s.mbox, Allow::AllUpdates) {
                    Ok(ups) => {
                        send(&ups, &mut out)?;
                        "OK NOOP completed".to_string()
                    }
                    Err(e) => no(&e),
                }
            }
            ("FETCH", Some(s)) => fetch(s, arg, &mut out)?,
            ("IDLE", Some(s)) => {
                let secs = arg.and_then(|a| a.parse().ok()).unwrap_or(30);
                idle(s, Duration::from_secs(secs), &mut out)?
            }
            _ => "BAD unknown command".to_string(),
        };
        writeln!(out, "{tag} {reply}")?;
        out.flush()?;
    }
    Ok(())
}

/// SELECT: open the mailbox, take the view (the client's sequence numbers
/// start here) and tell the client what it holds (RFC 3501 6.3.1).
fn select(
    store: &Store,
    user: &UserName,
    name: &str,
    out: &mut impl Write,
) -> mailstore::Result<Selected> {
    let mut mbox = store.open_mailbox(user, &MailboxName::new(name)?)?;
    let view = SessionView::open(&mut mbox)?;
    // Made now, before any wait: a commit after the view's mark is either
    // seen by the wait's first look or raises an event.
    let watch = Watch::new(&mbox)?;
    let _ = writeln!(out, "* {} EXISTS", view.len());
    let _ = writeln!(out, "* OK [UIDVALIDITY {}]", view.uidvalidity());
    let _ = writeln!(out, "* OK [UIDNEXT {}]", view.uid_next());
    Ok(Selected { mbox, view, watch })
}

/// FETCH by sequence number: served from the view, and followed by the
/// updates allowed while a sequence-number command runs, i.e. no EXPUNGE
/// (RFC 3501 7.4.1): the numbers the client sent must keep their meaning.
fn fetch(s: &mut Selected, arg: Option<&str>, out: &mut impl Write) -> std::io::Result<String> {
    let Some(seq) = arg.and_then(|a| a.parse::<u32>().ok()) else {
        return Ok("BAD FETCH needs a sequence number".to_string());
    };
    let Some(rec) = s.view.record(seq) else {
        return Ok("BAD no such message".to_string());
    };
    let flags = flag_names(rec.flags);
    writeln!(
        out,
        "* {seq} FETCH (UID {} RFC822.SIZE {} FLAGS ({}))",
        rec.uid, rec.size, flags
    )?;
    Ok(match s.view.check(&mut s.mbox, Allow::NoExpunge) {
        Ok(ups) => {
            send(&ups, out)?;
            "OK FETCH completed".to_string()
        }
        Err(e) => no(&e),
    })
}

/// IDLE: after the continuation, wait for a commit and send what changed
/// (everything is allowed), until the time is up or updates went out.
fn idle(s: &mut Selected, secs: Duration, out: &mut impl Write) -> std::io::Result<String> {
    writeln!(out, "+ idling")?;
    out.flush()?;
    let deadline = std::time::Instant::now() + secs;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let mark = s.view.mark();
        match s.watch.wait(&mut s.mbox, &mark, left) {
            Ok(Waited::TimedOut) => return Ok("OK IDLE terminated".to_string()),
            Ok(Waited::Changed) => match s.view.check(&mut s.mbox, Allow::AllUpdates) {
                // Empty when the commit changed nothing this client
                // sees (e.g. a flag it was already told): wait on.
                Ok(ups) if ups.is_empty() => {}
                Ok(ups) => {
                    send(&ups, out)?;
                    return Ok("OK IDLE terminated".to_string());
                }
                Err(e) => return Ok(no(&e)),
            },
            Err(e) => return Ok(no(&e)),
        }
    }
}

/// Writes the untagged responses, in the order the view gives them.
fn send(ups: &[Update], out: &mut impl Write) -> std::io::Result<()> {
    for u in ups {
        match u {
            Update::Expunge(seq) => writeln!(out, "* {seq} EXPUNGE")?,
            Update::Vanished(uids) => writeln!(out, "* VANISHED {uids:?}")?,
            Update::Exists(n) => writeln!(out, "* {n} EXISTS")?,
            Update::Flags(kw) => writeln!(out, "* FLAGS ({})", kw.join(" "))?,
            Update::Fetch {
                seq,
                uid,
                flags,
                keywords,
                modseq,
            } => {
                let mut names = flag_names(*flags);
                for k in keywords {
                    names.push(' ');
                    names.push_str(k);
                }
                let names = names.trim_start().to_string();
                writeln!(
                    out,
                    "* {seq} FETCH (UID {uid} FLAGS ({names}) MODSEQ ({modseq}))"
                )?;
            }
        }
    }
    Ok(())
}

/// The IMAP names of the system flags in `f`, space-separated.
fn flag_names(f: mailstore::Flags) -> String {
    f.names().join(" ")
}

/// A tagged NO for a storage error (the response codes of RFC 5530).
fn no(e: &mailstore::Error) -> String {
    use mailstore::Error;
    let code = match e {
        Error::NoSuchMailbox(_) | Error::NoSuchUser(_) => "NONEXISTENT",
        Error::LockTimeout { .. } => "INUSE",
        Error::Corrupt { .. } => "CORRUPTION",
        Error::MailboxDeleted => "NONEXISTENT",
        _ => "SERVERBUG",
    };
    format!("NO [{code}] {e}")
}
