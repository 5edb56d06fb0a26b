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
        let i = self.ranges.partition_point(|&(_, hi)| hi < uid);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= uid)
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
                match self.ranges.last_mut() {
                    // Right after the last range (messages learnt one
                    // delivery at a time): one range, not one per learn.
                    Some(last) if lo <= up_to && last.1.checked_add(1) == Some(lo) => {
                        last.1 = up_to;
                    }
                    _ if lo <= up_to => self.ranges.push((lo, up_to)),
                    _ => {}
                }
            }
            Err(e) => tracing::warn!("\\Recent not known: {e}"),
        }
        self.told = up_to;
        true
    }

    /// How many messages of `view` are `\Recent` here: two lookups in
    /// the view per range, not a pass over the mailbox (the `* n RECENT`
    /// after every delivery to a big mailbox, issue 21).
    pub fn count(&self, view: &SessionView) -> u32 {
        self.ranges
            .iter()
            .map(|&(lo, hi)| view.count_in_uid_range(lo, hi))
            .sum()
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

    /// RFC 3501 2.3.2: the count of `* n RECENT` is the messages of the
    /// view in the session's ranges, whatever the number of ranges, and
    /// UIDs learnt right after the last range extend it.
    #[test]
    fn count_and_merged_ranges() {
        let tmp = tempfile::tempdir().unwrap();
        let store = storage::Store::open(tmp.path(), storage::Options::default()).unwrap();
        let user = storage::UserName::new("u").unwrap();
        store
            .ensure_mailbox(&user, &storage::MailboxName::inbox())
            .unwrap();
        let mut mbox = store
            .open_mailbox(&user, &storage::MailboxName::inbox())
            .unwrap();
        for _ in 0..6 {
            mbox.append(&b"Subject: a\r\n\r\na\r\n"[..], Default::default())
                .unwrap();
        }
        let view = SessionView::open(&mut mbox).unwrap();
        let mut r = Recent::default();
        assert_eq!(r.count(&view), 0);
        r.ranges = vec![(2, 3), (5, 5), (6, 9)];
        assert_eq!(r.count(&view), 4);
        // Learning UIDs 1-6 claims them all: after a first claim of 1-3
        // (told 3), the next learn's range starts at 4 and is merged.
        let mut r = Recent::default();
        r.ranges.push((1, 3));
        r.told = 3;
        assert!(r.learn(&mbox, &view, false));
        assert_eq!(r.ranges, vec![(1, 6)]);
        assert_eq!(r.count(&view), 6);
        assert!(r.contains(1) && r.contains(6) && !r.contains(7));
    }
}
