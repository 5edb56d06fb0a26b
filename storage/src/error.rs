//! Typed errors. Binaries turn these into sysexits codes and one-line
//! messages at their edge; the library never exits or prints.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    #[error("no such user {0:?} (no INBOX in the store)")]
    NoSuchUser(String),
    #[error("no such mailbox {0:?}")]
    NoSuchMailbox(String),
    #[error("mailbox {0:?} already exists")]
    MailboxExists(String),
    #[error("mailbox {0:?} has child mailboxes")]
    HasChildren(String),
    #[error("timed out after {waited:?} waiting for the {kind} lock on {path}")]
    LockTimeout {
        path: PathBuf,
        kind: &'static str,
        waited: Duration,
    },
    #[error("corrupt {path} at byte offset {offset}: {what}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
    #[error("refusing to follow a symlink at {0}")]
    Symlink(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no message with UID {0}")]
    NoSuchUid(u32),
    #[error("UID {0} has been expunged")]
    Expunged(u32),
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge { size: u64, limit: u64 },
    #[error("over quota: {used} + {size} bytes exceeds {limit} bytes")]
    OverQuota { used: u64, size: u64, limit: u64 },
    #[error("too many keywords in mailbox (limit {0})")]
    TooManyKeywords(usize),
    #[error("invalid keyword {0:?}")]
    InvalidKeyword(String),
    #[error("mailbox was deleted")]
    MailboxDeleted,
    #[error("mailbox has reached the highest UID")]
    UidsExhausted,
    #[error(
        "mailbox holds {limit} records, the most an index may hold (expunge and repack to make room)"
    )]
    MailboxFull { limit: u32 },
    /// An import asked for a UID at or below the mailbox's `last_uid`
    /// (taken meanwhile, e.g. by a delivery), or for UIDs out of order.
    #[error("UID {uid} is not above the mailbox's last UID {last_uid}")]
    UidTaken { uid: u32, last_uid: u32 },
    #[error("import UID plan: {0}")]
    UidPlan(String),
    /// A mailbox may be created with a given UIDVALIDITY only when the
    /// value is above every one handed out for the user before.
    #[error("UIDVALIDITY {wanted} is not above {last}, the last handed out for this user")]
    UidValidityUsed { wanted: u32, last: u32 },
    #[error("injected fault at {0}")]
    InjectedFault(&'static str),
    /// On a shared filesystem, an error on the locked index that says this
    /// host may no longer hold its lock (PROTOCOL.md §8): the operation
    /// stopped without touching any path; the next locker repairs.
    #[error("lock on {path} may be lost: {source}")]
    LockLost {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The spool is on a filesystem the store refuses (sharedfs.rs).
    #[error("refusing the spool at {path}: {what}")]
    UnsafeFilesystem { path: PathBuf, what: &'static str },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        if source.raw_os_error() == Some(libc::ELOOP) {
            return Error::Symlink(path.into());
        }
        let path = path.into();
        // An evicted Ceph client answers a read of a descriptor it holds
        // with ENOENT: lost too, for I/O on an open index (not its open).
        let errno = match source.raw_os_error() {
            Some(libc::ENOENT) if matches!(op, "read" | "write" | "fsync" | "lock") => {
                Some(libc::EIO)
            }
            e => e,
        };
        // ESHUTDOWN: the Ceph client was evicted; every file is gone.
        if crate::sharedfs::means_lock_lost(errno)
            && (errno == Some(libc::ESHUTDOWN)
                || path.file_name() == Some(std::ffi::OsStr::new(crate::index::INDEX_NAME)))
        {
            crate::sharedfs::note_lock_lost();
            return Error::LockLost { path, source };
        }
        Error::Io { op, path, source }
    }

    /// An I/O error saying that the file or directory does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    pub(crate) fn nix(op: &'static str, path: impl Into<PathBuf>, e: nix::Error) -> Self {
        Self::io(op, path, io::Error::from(e))
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }

    /// True when retrying later may succeed: lock timeouts, disk full,
    /// quota, transient I/O. Delivery agents map this to a temporary failure.
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Error::LockTimeout { .. }
                | Error::LockLost { .. }
                | Error::OverQuota { .. }
                | Error::InjectedFault(_)
                | Error::Io { .. }
        )
    }

    /// True when the failure is a lack of space (ENOSPC, EDQUOT, EFBIG).
    pub fn is_disk_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            ),
            _ => false,
        }
    }
}
