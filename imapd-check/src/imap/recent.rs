//! `\Recent` in a session (RFC 3501 2.3.2, 6.3.1, 6.3.2, 7.3.2).
//!
//! A message is `\Recent` in the one session that is first told of it.
//! The claim is shared between sessions through the store
//! (`storage::recent`): a read-write session (SELECT) claims the UIDs it
//! learns of, at SELECT and whenever new messages appear (any command's
//! check, NOOP, IDLE); a read-only one (EXAMINE) shows as `\Recent` those
//! nobody has claimed yet when it learns of them, and claims nothing. A
//! failure to read or write the claim is logged and shows nothing as
//! `\Recent`: it never fails a command.

use storage::session::SessionView;
use storage::{Error, Mailbox};

/// The UIDs that are `\Recent` in this session.
#[derive(Debug, Default)]
pub struct Recent {
    /// Inclusive UID ranges, ascending and disjoint.
    ranges: Vec<(u32, u32)>,
    /// The highest UID this session has been told of.
    told: u32,
    /// IMAP4rev2 has no `\Recent` (RFC 9051 2.3.2): nothing is learnt,
    /// claimed or shown.
    off: bool,
}

impl Recent {
    /// For an IMAP4rev2 session: never anything `\Recent`, no claim.
    pub fn off() -> Recent {
        Recent {
            off: true,
            ..Default::default()
        }
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.ranges.iter().any(|&(lo, hi)| lo <= uid && uid <= hi)
    }

    /// Learns of the messages of `view` above those told before: claims
    /// them (`claim`) or only looks (read-only). Returns whether anything
    /// was new.
    pub fn learn(&mut self, mbox: &Mailbox, view: &SessionView, claim: bool) -> bool {
        if self.off {
            return false;
        }
        let up_to = view.last_uid().unwrap_or(0);
        if up_to <= self.told {
            return false;
        }
        let uidvalidity = view.uidvalidity();
        let claimed: Result<u32, Error> = if claim {
            mbox.recent_claim(uidvalidity, up_to)
        } else {
            mbox.recent_claimed(uidvalidity)
        };
        match claimed {
            Ok(before) => {
                let lo = before.max(self.told) + 1;
                if lo <= up_to {
                    self.ranges.push((lo, up_to));
                }
            }
            Err(e) => tracing::warn!("\\Recent not known: {e}"),
        }
        self.told = up_to;
        true
    }

    /// How many messages of `view` are `\Recent` here.
    pub fn count(&self, view: &SessionView) -> u32 {
        if self.ranges.is_empty() {
            return 0;
        }
        view.uids().filter(|&uid| self.contains(uid)).count() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let mut r = Recent::default();
        assert!(!r.contains(1));
        r.ranges.push((3, 5));
        r.ranges.push((9, 9));
        assert!(r.contains(3) && r.contains(5) && r.contains(9));
        assert!(!r.contains(2) && !r.contains(6) && !r.contains(10));
    }
}
