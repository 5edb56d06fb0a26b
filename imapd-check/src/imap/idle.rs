//! IDLE (RFC 2177): push changes as other processes commit them.
//!
//! Woken by inotify on the mailbox's `.index` (writes, attribute changes,
//! the file being moved or deleted) and on its directory (a repack renames
//! a new `.index` into place), never by polling; each wake re-checks the
//! generation under the shared lock, so an event only ever causes a
//! check, never a report by itself. A slow timer covers a lost event.
//! The check right after `+ idling` reports what was committed between
//! the client's last command and IDLE (cyrus-imapd#3668).

use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use storage::session::Allow;

use super::conn::{Done, Fail, Session, Stop, bad, ok};

/// How often IDLE re-checks without any event.
const FALLBACK: Duration = Duration::from_secs(2);

fn index_flags() -> AddWatchFlags {
    AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_DELETE_SELF
}

struct Watches {
    ino: Inotify,
    index: Option<WatchDescriptor>,
    dir: Option<WatchDescriptor>,
}

impl Watches {
    fn new(index_path: Option<&std::path::Path>) -> std::io::Result<Watches> {
        let ino = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)?;
        let mut w = Watches {
            ino,
            index: None,
            dir: None,
        };
        if let Some(p) = index_path {
            w.index = w.ino.add_watch(p, index_flags()).ok();
            if let Some(d) = p.parent() {
                w.dir = w
                    .ino
                    .add_watch(d, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CREATE)
                    .ok();
            }
        }
        Ok(w)
    }

    /// Drains events; true if any may mean a change to the index.
    fn drain(&mut self, index_path: Option<&std::path::Path>) -> bool {
        let mut relevant = false;
        let mut rewatch = false;
        while let Ok(events) = self.ino.read_events() {
            if events.is_empty() {
                break;
            }
            for e in events {
                if Some(e.wd) == self.dir {
                    if e.name.as_deref() == Some(std::ffi::OsStr::new(storage::index::INDEX_NAME)) {
                        relevant = true;
                        rewatch = true;
                    }
                } else {
                    relevant = true;
                }
            }
        }
        if rewatch && let Some(p) = index_path {
            // A new inode at the path: watch it (the old watch dies with
            // the old file).
            self.index = self.ino.add_watch(p, index_flags()).ok();
        }
        relevant
    }
}

pub(super) fn idle(s: &mut Session, _tag: &str) -> Result<Done, Fail> {
    s.buf.extend_from_slice(b"+ idling\r\n");
    s.flush_buf()?;
    s.out.flush()?;
    let index_path = s
        .sel
        .as_ref()
        .map(|sel| sel.mbox.index_path().to_path_buf());
    // Watch first, then check: a commit after the check raises an event.
    let mut w = Watches::new(index_path.as_deref())?;
    s.check(Allow::AllUpdates).map_err(Fail::Stop)?;
    s.flush_buf()?;
    s.out.flush()?;
    loop {
        let (input, event) = s.input.wait(w.ino.as_fd(), FALLBACK)?;
        if event && w.drain(index_path.as_deref()) || !input && !event {
            s.check(Allow::AllUpdates).map_err(Fail::Stop)?;
            s.flush_buf()?;
            s.out.flush()?;
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
