//! How the store picks the UIDVALIDITY of a mailbox it creates: a new
//! value, one that avoids a given value (an import under new UIDs), or
//! exactly a given one (an import keeping a source's UIDs, PROTOCOL.md
//! §3a); never one handed out before for that user.

use crate::error::{Error, Result};

/// How [`crate::Store`] picks the UIDVALIDITY of a mailbox it creates.
#[derive(Clone, Copy, Debug)]
pub(crate) enum UidValidityChoice {
    /// The clock, above every value handed out before.
    New,
    /// As `New`, but never this value.
    Avoiding(u32),
    /// This value, which must be above every value handed out before.
    Exactly(u32),
}

impl UidValidityChoice {
    /// The value to hand out after `last` (the last one handed out) at
    /// clock time `now`.
    pub(crate) fn pick(self, last: u32, now: u32) -> Result<u32> {
        let fresh = now.max(last.saturating_add(1));
        match self {
            UidValidityChoice::New => Ok(fresh),
            UidValidityChoice::Avoiding(v) if fresh == v => {
                fresh.checked_add(1).ok_or(Error::UidValidityUsed {
                    wanted: u32::MAX,
                    last,
                })
            }
            UidValidityChoice::Avoiding(_) => Ok(fresh),
            UidValidityChoice::Exactly(v) if v > last => Ok(v),
            UidValidityChoice::Exactly(v) => Err(Error::UidValidityUsed { wanted: v, last }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::UidValidityChoice;

    #[test]
    fn uidvalidity_choice() {
        assert_eq!(UidValidityChoice::New.pick(10, 5).unwrap(), 11);
        assert_eq!(UidValidityChoice::New.pick(10, 50).unwrap(), 50);
        assert_eq!(UidValidityChoice::Avoiding(50).pick(10, 50).unwrap(), 51);
        assert_eq!(UidValidityChoice::Avoiding(11).pick(10, 5).unwrap(), 12);
        assert_eq!(UidValidityChoice::Exactly(11).pick(10, 50).unwrap(), 11);
        assert!(UidValidityChoice::Exactly(10).pick(10, 50).is_err());
        assert!(
            UidValidityChoice::Avoiding(u32::MAX)
                .pick(u32::MAX - 1, 5)
                .is_err()
        );
    }
}
