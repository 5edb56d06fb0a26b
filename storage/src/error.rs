//! Typed errors. Binaries turn these into sysexits codes and one-line
//! messages at their edge; the library never exits or prints.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// The result of every fallible call of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the store. The crate documentation has
/// the table of the IMAP and LMTP replies each one maps to; see also
/// [`Error::is_temporary`] and [`Error::is_disk_full`].
///
/// ```
/// # fn main() -> mailstore::Result<()> {
/// use mailstore::{AppendOptions, Error, MailboxName, Options, Store, UserName};
/// # let tmp = tempfile::tempdir().unwrap();
/// let store = Store::open(tmp.path(), Options::default())?;
/// let nobody = UserName::new("nobody")?;
/// // An unknown user: permanent (LMTP 550 5.1.1).
/// let err = store.open_mailbox(&nobody, &MailboxName::inbox()).unwrap_err();
/// assert!(matches!(err, Error::NoSuchUser(_) | Error::NoSuchMailbox(_)));
/// assert!(!err.is_temporary());
///
/// let user = UserName::new("alice")?;
/// store.ensure_mailbox(&user, &MailboxName::inbox())?;
/// let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
/// let opts = AppendOptions { max_size: Some(4), ..AppendOptions::default() };
/// // Over the size limit: permanent (IMAP NO [TOOBIG], LMTP 552 5.2.3).
/// let err = mbox.append(&b"too long"[..], opts).unwrap_err();
/// assert!(matches!(err, Error::TooLarge { size: 8, limit: 4 }));
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A user, mailbox or keyword name that the store refuses.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What was being named: `"user"` or `"mailbox"`.
        kind: &'static str,
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The user has no INBOX in the store.
    #[error("no such user {0:?} (no INBOX in the store)")]
    NoSuchUser(String),
    /// The mailbox does not exist (or a delete of it is in progress).
    #[error("no such mailbox {0:?}")]
    NoSuchMailbox(String),
    /// A create or rename target that exists already.
    #[error("mailbox {0:?} already exists")]
    MailboxExists(String),
    /// A delete or rename refused because the mailbox has children.
    #[error("mailbox {0:?} has child mailboxes")]
    HasChildren(String),
    /// A lock was not granted within the store's lock timeout
    /// ([`crate::Options::lock_timeout`]): another process holds it.
    /// Temporary.
    #[error("timed out after {waited:?} waiting for the {kind} lock on {path}")]
    LockTimeout {
        /// The locked file.
        path: PathBuf,
        /// `"shared"` or `"exclusive"`.
        kind: &'static str,
        /// How long the call waited.
        waited: Duration,
    },
    /// Damage found on disk, never used: a CRC mismatch, a count beyond
    /// the file, a bad magic... `idx-inspect verify` and
    /// `idx-admin reconstruct` are the tools for it.
    #[error("corrupt {path} at byte offset {offset}: {what}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damage in `path`.
        offset: u64,
        /// What is wrong there.
        what: String,
    },
    /// A symbolic link where the store expects a file or directory; the
    /// store never follows one.
    #[error("refusing to follow a symlink at {0}")]
    Symlink(PathBuf),
    /// An operating system error.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation that failed (`"open"`, `"fsync"`...).
        op: &'static str,
        /// The file or directory it was applied to.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: io::Error,
    },
    /// No message with this UID in the mailbox.
    #[error("no message with UID {0}")]
    NoSuchUid(u32),
    /// The message was expunged, and its file removed by a repack.
    #[error("UID {0} has been expunged")]
    Expunged(u32),
    /// A message over [`crate::AppendOptions::max_size`].
    #[error("message of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The message's size in bytes.
        size: u64,
        /// The limit in bytes.
        limit: u64,
    },
    /// Storing the message would exceed the user's quota.
    #[error("over quota: {used} + {size} bytes exceeds {limit} bytes")]
    OverQuota {
        /// Bytes the user stores now.
        used: u64,
        /// Bytes the operation would add.
        size: u64,
        /// The user's limit in bytes.
        limit: u64,
    },
    /// The mailbox's keyword table is full (the limit is given).
    #[error("too many keywords in mailbox (limit {0})")]
    TooManyKeywords(usize),
    /// A keyword that is not an IMAP atom (see [`crate::validate_keyword`]).
    #[error("invalid keyword {0:?}")]
    InvalidKeyword(String),
    /// The mailbox was deleted while this handle had it open.
    #[error("mailbox was deleted")]
    MailboxDeleted,
    /// The mailbox handed out UID 2^32-1; it needs a new UIDVALIDITY.
    #[error("mailbox has reached the highest UID")]
    UidsExhausted,
    /// The index holds the most records it may.
    #[error(
        "mailbox holds {limit} records, the most an index may hold (expunge and repack to make room)"
    )]
    MailboxFull {
        /// The record limit.
        limit: u32,
    },
    /// An import asked for a UID at or below the mailbox's `last_uid`
    /// (taken meanwhile, e.g. by a delivery), or for UIDs out of order.
    #[error("UID {uid} is not above the mailbox's last UID {last_uid}")]
    UidTaken {
        /// The UID asked for.
        uid: u32,
        /// The mailbox's highest UID handed out.
        last_uid: u32,
    },
    /// An import's UID plan is inconsistent (what is wrong with it).
    #[error("import UID plan: {0}")]
    UidPlan(String),
    /// A mailbox may be created with a given UIDVALIDITY only when the
    /// value is above every one handed out for the user before.
    #[error("UIDVALIDITY {wanted} is not above {last}, the last handed out for this user")]
    UidValidityUsed {
        /// The UIDVALIDITY asked for.
        wanted: u32,
        /// The last one handed out for the user.
        last: u32,
    },
    /// A test-only failure injected at the named fault point
    /// (`MAILSTORE_TEST_FAULT`); never raised otherwise.
    #[error("injected fault at {0}")]
    InjectedFault(&'static str),
    /// On a shared filesystem, an error on the locked index that says this
    /// host may no longer hold its lock (PROTOCOL.md §8): the operation
    /// stopped without touching any path; the next locker repairs.
    #[error("lock on {path} may be lost: {source}")]
    LockLost {
        /// The index whose lock may be lost.
        path: PathBuf,
        /// What the filesystem answered.
        #[source]
        source: io::Error,
    },
    /// The spool is on a filesystem the store refuses (sharedfs.rs).
    #[error("refusing the spool at {path}: {what}")]
    UnsafeFilesystem {
        /// The spool's root.
        path: PathBuf,
        /// Which filesystem, and what to do about it.
        what: &'static str,
    },
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
        if crate::fsmode::means_lock_lost(errno)
            && (errno == Some(libc::ESHUTDOWN)
                || path.file_name() == Some(std::ffi::OsStr::new(crate::layout::INDEX_NAME)))
        {
            crate::fsmode::note_lock_lost();
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
