//! IDLE (RFC 2177): push changes as other processes commit them.
//!
//! Woken by the server's shared inotify watcher (`watch.rs`) when the
//! mailbox's `.index` changes or is replaced, never by polling; each wake
//! re-checks the generation under the shared lock, so an event only ever
//! causes a check, never a report by itself. A check that finds a writer
//! holding the lock does not wait: it looks again 2 ms later, so DONE is
//! answered at once (the command's own check then waits, as after any
//! command on the selected mailbox). A slow timer covers a lost
//! event (a fast one when the kernel refused the watch). The check right
//! after `+ idling` reports what was committed between the client's last
//! command and IDLE (cyrus-imapd#3668).

use std::time::Duration;

use storage::session::Allow;

use super::conn::{Done, Fail, Session, Stop, bad, ok};
use super::watch;

/// How often IDLE re-checks without any event while the mailbox is
/// watched: only a lost event needs it (an overflowed inotify queue
/// already wakes everyone), so it is slow, and spread over the sessions
/// so that a thousand idlers do not check at the same instant.
const FALLBACK: Duration = Duration::from_secs(30);
/// How often it re-checks when no watch could be set up.
const UNWATCHED: Duration = Duration::from_secs(2);
/// How often it re-checks on a shared filesystem (storage::sharedfs):
/// inotify there only sees this host's writes, never another host's, so
/// the generation is polled (one shared lock and one header read).
const SHARED_POLL: Duration = Duration::from_secs(1);
/// How soon it looks again when a check found a writer holding the index
/// lock. IDLE does not wait for the lock, so that a DONE sent meanwhile is
/// answered at once; a commit whose write came before the watch was set
/// up still gets reported within this delay.
const BUSY_RETRY: Duration = Duration::from_millis(2);

/// Checks without waiting for the lock; true if it must be tried again.
fn look(s: &mut Session) -> Result<bool, Fail> {
    let done = s.look(Allow::AllUpdates).map_err(Fail::Stop)?;
    s.flush_buf()?;
    s.out.flush()?;
    Ok(!done)
}

pub(super) fn idle(s: &mut Session, _tag: &str) -> Result<Done, Fail> {
    s.buf.extend_from_slice(b"+ idling\r\n");
    s.flush_buf()?;
    s.out.flush()?;
    // Nothing buffered while waiting: an idler costs its thread and little
    // else.
    s.input.release();
    let index_path = s
        .sel
        .as_ref()
        .map(|sel| sel.mbox.index_path().to_path_buf());
    // Watch first, then check: a commit after the check raises an event.
    let sub = match &index_path {
        Some(p) => Some(watch::subscribe(p)?),
        None => None,
    };
    let every = match &sub {
        _ if storage::sharedfs::active() => SHARED_POLL,
        Some(sub) if sub.watched => {
            // 0..10 s of jitter, different for each session.
            FALLBACK + Duration::from_millis(sub.id_hint() % 10_000)
        }
        _ => UNWATCHED,
    };
    let mut busy = look(s)?;
    loop {
        let timeout = if busy { BUSY_RETRY } else { every };
        let (input, event) = s.input.wait(sub.as_ref().map(|s| s.fd()), timeout)?;
        if event && let Some(sub) = &sub {
            sub.drain();
        }
        if event || !input {
            busy = look(s)?;
        }
        if input {
            let line = s.input.read_line(s.limits.line);
            match line {
                Ok(Some(l)) if l.trim_ascii().eq_ignore_ascii_case(b"DONE") => {
                    return ok("IDLE terminated");
                }
                Ok(Some(_)) => return bad("Expected DONE"),
                Ok(None) => return Err(Fail::Stop(Stop::Logout)),
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return bad("Expected DONE");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}
