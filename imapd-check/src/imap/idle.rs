//! IDLE (RFC 2177): push changes as other processes commit them.
//!
//! Woken through a `storage::watch::Watch` (the library's one inotify
//! watcher per process) when the mailbox's `.index` changes or is
//! replaced; each wake
//! re-checks the generation under the shared lock, so an event only ever
//! causes a check, never a report by itself. A check that finds a writer
//! holding the lock does not wait: it looks again 2 ms later, so DONE is
//! answered at once (the command's own check then waits, as after any
//! command on the selected mailbox). A slow timer covers a lost
//! event (a fast one when the kernel refused the watch). The check right
//! after `+ idling` reports what was committed between the client's last
//! command and IDLE (cyrus-imapd#3668).

use std::time::{Duration, Instant};

use storage::session::Allow;
use storage::watch::Watch;

use storage::Error;

use super::conn::{Done, Fail, Session, Stop, bad, ok};

/// How often IDLE re-checks without any event while the mailbox is
/// watched: only a lost event needs it (an overflowed inotify queue
/// already wakes everyone), so it is slow, and spread over the sessions
/// so that a thousand idlers do not check at the same instant.
const FALLBACK: Duration = Duration::from_secs(30);
/// How soon it looks again when a check found a writer holding the index
/// lock. IDLE does not wait for the lock, so that a DONE sent meanwhile is
/// answered at once; a commit whose write came before the watch was set
/// up still gets reported within this delay.
const BUSY_RETRY: Duration = Duration::from_millis(2);

/// How long a session idles at least before its view is made compact
/// (`SessionView::compact`): the records are read again at DONE, which a
/// client that leaves IDLE at once (to send a command) need not pay for.
const COMPACT_AFTER: Duration = Duration::from_secs(1);
/// Idle time per message of the view before it is made compact: a
/// thousand times what reading one record again at DONE costs (about
/// 60 ns: 59 ms for 1,000,000 messages, docs/BENCHMARKS.md), so that the
/// read at DONE is at most a thousandth of the time spent idle. Small
/// mailboxes compact after [`COMPACT_AFTER`]; one of 1,000,000 messages
/// after a minute, and a client leaving IDLE sooner finds its view whole.
const COMPACT_PER_MESSAGE: Duration = Duration::from_micros(60);

/// When a view of `len` messages is made compact, counted from the start
/// of IDLE.
fn compact_delay(len: u32) -> Duration {
    COMPACT_PER_MESSAGE.saturating_mul(len).max(COMPACT_AFTER)
}

/// Checks without waiting for the lock; true if it must be tried again.
/// With `compact`, after a check that went through (so no expunge is
/// held), the view is made compact.
fn look(s: &mut Session, compact: bool) -> Result<bool, Fail> {
    let done = s.look(Allow::AllUpdates).map_err(Fail::Stop)?;
    // Updates mean the check read records (all of them after a flag
    // change): memory to give back, as after making the view compact.
    let mut freed = !s.buf.is_empty();
    s.flush_buf()?;
    s.out.flush()?;
    if compact
        && done
        && let Some(sel) = s.sel.as_mut()
        && !sel.view.is_compact()
    {
        freed |= sel.view.compact();
        if sel.view.is_compact() {
            sel.shared.set_compact(true);
        }
    }
    if freed {
        super::trim_heap_soon();
    }
    Ok(!done)
}

/// Ends the compact form of the view before the session answers other
/// commands: its records are read again (or taken from the view another
/// session of the mailbox offered, `SessionView::expand_from`), and what
/// changed since the last look is queued for the client (before IDLE's
/// tagged OK, where RFC 2177 allows any untagged response). A mailbox that cannot be read again ends
/// the session: its view could no longer answer FETCH.
fn expand(s: &mut Session) -> Result<(), Fail> {
    let Some(sel) = s.sel.as_mut() else {
        return Ok(());
    };
    let was_compact = sel.view.is_compact();
    // From the view another session offered when there is one (no read
    // of the index; sharedviews.rs), else by reading every record.
    let from_shared = if was_compact {
        match sel.shared.start_view(&mut sel.mbox) {
            Ok(Some(fresh)) => sel.view.expand_from(fresh),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        }
    } else {
        Ok(None)
    };
    let expanded = match from_shared {
        Ok(Some(ups)) => Ok(ups),
        Ok(None) => sel.view.expand(&mut sel.mbox),
        Err(e) => Err(e),
    };
    match expanded {
        Ok(ups) => {
            if was_compact {
                // Full again, every update sent: what a fresh SELECT gives.
                sel.shared.set_compact(false);
                sel.shared.offer(&sel.mbox, &sel.view);
            }
            s.write_updates(&ups);
            Ok(())
        }
        Err(Error::MailboxDeleted) => {
            s.sel = None;
            s.flush_buf()?;
            Err(Fail::Stop(Stop::Bye("Selected mailbox was deleted".into())))
        }
        Err(e) => {
            tracing::warn!("cannot read the selected mailbox again after IDLE: {e}");
            s.sel = None;
            s.flush_buf()?;
            Err(Fail::Stop(Stop::Bye(
                "Cannot read the selected mailbox".into(),
            )))
        }
    }
}

pub(super) fn idle(s: &mut Session, _tag: &str) -> Result<Done, Fail> {
    s.buf.extend_from_slice(b"+ idling\r\n");
    s.flush_buf()?;
    s.out.flush()?;
    // Nothing buffered while waiting: an idler costs its thread and little
    // else.
    s.input.release();
    let end = wait(s);
    match end {
        // The connection ends: nothing more to answer.
        Err(Fail::Stop(_)) => {}
        _ => expand(s)?,
    }
    end
}

/// Reports changes until the client's DONE (or anything else it sends).
fn wait(s: &mut Session) -> Result<Done, Fail> {
    // Watch first, then check: a commit after the check raises an event.
    let sub = match &s.sel {
        Some(sel) => Some(Watch::new(&sel.mbox).map_err(std::io::Error::other)?),
        None => None,
    };
    let every = match &sub {
        Some(sub) if sub.is_notified() => {
            // 0..10 s of jitter, different for each session.
            FALLBACK + Duration::from_millis(sub.id_hint() % 10_000)
        }
        // Polling (no inotify watch, or forced for a shared filesystem).
        _ => storage::watch::poll_interval(),
    };
    let len = s.sel.as_ref().map_or(0, |sel| sel.view.len());
    let compact_at = Instant::now() + compact_delay(len);
    let mut busy = look(s, false)?;
    loop {
        let mut timeout = if busy { BUSY_RETRY } else { every };
        let compact = s.sel.as_ref().is_some_and(|sel| !sel.view.is_compact());
        if compact && !busy {
            // Zero once due: the look below makes it compact.
            timeout = timeout.min(compact_at.saturating_duration_since(Instant::now()));
        }
        let (input, event) = s.input.wait(sub.as_ref().map(|s| s.fd()), timeout)?;
        if event && let Some(sub) = &sub {
            sub.drain();
        }
        if event || !input {
            // poll(2) counts whole milliseconds: it may wake a little early.
            let due = Instant::now() + Duration::from_millis(1) >= compact_at;
            busy = look(s, compact && due)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_views_idle_longer_before_they_are_made_compact() {
        assert_eq!(compact_delay(0), COMPACT_AFTER);
        assert_eq!(compact_delay(1_100), COMPACT_AFTER);
        assert_eq!(compact_delay(100_000), Duration::from_secs(6));
        assert_eq!(compact_delay(1_000_000), Duration::from_secs(60));
        assert_eq!(
            compact_delay(u32::MAX),
            Duration::from_micros(60) * u32::MAX
        );
    }
}
