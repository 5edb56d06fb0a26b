//! Outcomes of a delivery: a sysexits code for one-shot mode, an RFC 3463
//! enhanced status code that leads the one stderr line (Postfix takes a
//! leading code as the status, overriding the exit class), and the LMTP
//! reply built from the same status.

use storage::Error;

pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOUSER: u8 = 67;
pub const EX_CANTCREAT: u8 = 73;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_NOPERM: u8 = 77;

/// Why a delivery did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// sysexits code for one-shot mode.
    pub exit: u8,
    /// RFC 3463 enhanced status code, e.g. `4.2.0`.
    pub status: &'static str,
    pub text: String,
}

impl Failure {
    pub fn new(exit: u8, status: &'static str, text: impl Into<String>) -> Failure {
        Failure {
            exit,
            status,
            text: text.into(),
        }
    }

    pub fn temp(status: &'static str, text: impl Into<String>) -> Failure {
        Self::new(EX_TEMPFAIL, status, text)
    }

    pub fn usage(text: impl Into<String>) -> Failure {
        Self::new(EX_USAGE, "5.3.0", text)
    }

    /// The one stderr line: `X.Y.Z text`, control characters flattened so
    /// it can never become two lines.
    pub fn line(&self) -> String {
        format!("{} {}", self.status, one_line(&self.text))
    }

    /// The LMTP/SMTP reply for this failure (without CRLF).
    pub fn reply(&self) -> String {
        let code = match self.status {
            "4.2.2" | "4.3.1" => 452,
            s if s.starts_with('4') => 451,
            "5.1.1" | "5.1.3" | "5.2.0" | "5.7.0" | "5.7.1" => 550,
            "5.2.2" | "5.2.3" | "5.3.4" => 552,
            "5.3.0" | "5.5.2" => 501,
            _ => 554,
        };
        format!("{code} {}", self.line())
    }
}

/// Replaces CR, LF and other control characters by spaces.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Maps a storage error to an outcome. Anything not known to be permanent
/// is temporary: a retried message can still be delivered, a bounced one
/// is gone from the queue.
pub fn from_storage(e: &Error) -> Failure {
    match e {
        Error::NoSuchUser(u) => Failure::new(EX_NOUSER, "5.1.1", format!("user unknown: {u}")),
        Error::InvalidName { kind: "user", .. } => {
            Failure::new(EX_NOUSER, "5.1.3", format!("bad user name: {e}"))
        }
        Error::LockTimeout { .. } => Failure::temp("4.2.0", format!("mailbox busy: {e}")),
        // Another host may hold the lock now: nothing was touched, retry.
        Error::LockLost { .. } => Failure::temp("4.2.0", format!("mailbox lock lost: {e}")),
        Error::UnsafeFilesystem { .. } => Failure::temp("4.3.5", e.to_string()),
        Error::OverQuota { .. } => Failure::temp("4.2.2", format!("mailbox full: {e}")),
        Error::TooLarge { limit, .. } => Failure::new(
            EX_DATAERR,
            "5.2.3",
            format!("message too large (limit {limit} bytes)"),
        ),
        Error::InvalidKeyword(_) => Failure::usage(e.to_string()),
        Error::TooManyKeywords(_) | Error::UidsExhausted | Error::MailboxFull { .. } => {
            Failure::new(EX_CANTCREAT, "5.2.0", e.to_string())
        }
        Error::Symlink(_) => Failure::new(EX_NOPERM, "5.7.0", e.to_string()),
        _ if e.is_disk_full() => Failure::temp("4.3.1", format!("mail system full: {e}")),
        Error::Io { source, .. }
            if matches!(
                source.kind(),
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
            ) =>
        {
            // Usually a wrong owner or mode after a configuration change:
            // retry rather than bounce while the administrator fixes it.
            Failure::temp("4.3.0", format!("permission problem: {e}"))
        }
        Error::MailboxDeleted => Failure::temp("4.2.0", "mailbox deleted during delivery"),
        _ => Failure::temp("4.3.0", e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_lines() {
        let f = Failure::temp("4.2.2", "mailbox full\r\nsecond");
        assert_eq!(f.line(), "4.2.2 mailbox full  second");
        assert_eq!(f.reply(), "452 4.2.2 mailbox full  second");
        let f = Failure::new(EX_NOUSER, "5.1.1", "user unknown: x");
        assert_eq!(f.reply(), "550 5.1.1 user unknown: x");
        assert_eq!(
            Failure::new(EX_DATAERR, "5.6.0", "NUL").reply(),
            "554 5.6.0 NUL"
        );
    }

    #[test]
    fn storage_errors_are_temporary_unless_known_permanent() {
        let io = Error::Io {
            op: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        };
        assert_eq!(from_storage(&io).status, "4.3.1");
        assert_eq!(from_storage(&io).exit, EX_TEMPFAIL);
        let eio = Error::Io {
            op: "write",
            path: "/x".into(),
            source: std::io::Error::from_raw_os_error(libc::EIO),
        };
        assert_eq!(from_storage(&eio).exit, EX_TEMPFAIL);
        assert_eq!(
            from_storage(&Error::NoSuchUser("bob".into())).exit,
            EX_NOUSER
        );
        assert_eq!(
            from_storage(&Error::corrupt_for_test()).exit,
            EX_TEMPFAIL,
            "a corrupt index is repaired by an administrator; retry meanwhile"
        );
    }

    trait CorruptForTest {
        fn corrupt_for_test() -> Error;
    }
    impl CorruptForTest for Error {
        fn corrupt_for_test() -> Error {
            Error::Corrupt {
                path: "/x/.index".into(),
                offset: 0,
                what: "bad crc".into(),
            }
        }
    }
}
