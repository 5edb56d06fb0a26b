//! A Cyrus-style mail store as a library: one directory per mailbox, one
//! file per message named by its UID, and one index file per mailbox whose
//! header carries a generation counter. An IMAP, POP3, JMAP or LMTP server
//! links it to store and serve mail; any number of such processes (and the
//! project's `deliver`, `imapd-check` and admin tools) can work on one
//! spool at once.
//!
//! # The model
//!
//! * A [`Store`] is a spool directory, opened once per process and shared
//!   by every thread. Users ([`UserName`]) own mailboxes ([`MailboxName`],
//!   `INBOX` and any other names, with `/` as the hierarchy separator); a
//!   user exists when their INBOX does.
//! * A mailbox is a directory: the messages (`UID.` files, never changed
//!   after they are committed), the `.index` (a header and one 128-byte
//!   record per message: UID, flags, keywords, dates, size, MODSEQ, CRC),
//!   `.meta` (keyword names) and `.stage/` (messages being delivered).
//! * Every change is a **commit**: the writer takes the mailbox's
//!   exclusive lock, writes, and bumps the header's **generation** last,
//!   making it durable before unlocking. So "did anything change?" is one
//!   shared lock and one header read, whatever the mailbox size. The byte
//!   layout is in `docs/FORMAT.md`, the lock and write ordering of every
//!   operation in `docs/PROTOCOL.md`.
//! * A [`Mailbox`] is one handle on one mailbox (its open files): open one
//!   per session with [`Store::open_mailbox`]; its methods take `&mut self`.
//!   It appends ([`Mailbox::append`]), changes flags ([`Mailbox::store`]),
//!   expunges ([`Mailbox::expunge`]) and reads messages
//!   ([`Mailbox::open_message`]).
//! * A [`SessionView`] is what one client has been told about a selected
//!   mailbox: its sequence-number to UID map, the flags last reported, the
//!   expunges not yet reported, and the mark (generation) of its last
//!   look. [`SessionView::check`] compares that mark with the index and
//!   returns the [`Update`]s (`EXPUNGE`, `EXISTS`, `FETCH`...) the client
//!   must be sent, in the order they must be sent.
//! * A [`watch::Watch`] waits for the next commit (IMAP IDLE), blocking,
//!   async (cargo feature `tokio`), or through a file descriptor in the
//!   server's own event loop.
//!
//! # What a session calls, and why
//!
//! IMAP's sequence numbers are positions the client computed; they may
//! only move when the client is told (RFC 3501 section 7.4.1, RFC 9051
//! section 7.5.1). Other processes commit at any time, so a session never
//! reads "the mailbox now": it reads its [`SessionView`], and moves the
//! view forward only where the protocol allows.
//!
//! | when | call | why |
//! |---|---|---|
//! | SELECT / EXAMINE | [`Store::open_mailbox`], [`SessionView::open`]; report [`SessionView::len`], [`SessionView::uidvalidity`], [`SessionView::uid_next`], [`SessionView::first_unseen`] | the view starts at this generation |
//! | SELECT / EXAMINE of a mailbox another session of the process shows | [`SessionView::share`] of that session's fresh view (kept by the server), then [`session::SharedView::open`] through this session's handle | the fresh view, sharing the other's records, at the cost of what changed since it was shared |
//! | SELECT / EXAMINE of the mailbox already selected | [`Store::still_names`] (the name's index file is the old handle's; or [`Mailbox::same_index`] against a handle opened by the name), then [`SessionView::reopen`] through the old handle | the fresh view, at the cost of what changed since the last look |
//! | FETCH, STORE, SEARCH, COPY by sequence number | [`SessionView::resolve_seqs`], [`SessionView::record`], [`Mailbox::open_message`]; then [`SessionView::check`] with [`Allow::NoExpunge`] | EXPUNGE may not be sent while the client's numbers are in use; expunges are held, the message keeps its number |
//! | NOOP, CHECK, IDLE, EXPUNGE, UID commands | [`SessionView::check`] with [`Allow::AllUpdates`] | every update may go out, held expunges first |
//! | after LIST, STATUS or other commands | [`SessionView::check_if_free`] | updates may be sent but need not: do not wait behind a writer |
//! | the session's own STORE / EXPUNGE | [`Mailbox::store`] / [`Mailbox::expunge`], then [`SessionView::apply_own_store`] (its FETCH responses; [`SessionView::fold_own_store`] when the answer is read from the view) / [`SessionView::apply_own_expunge`] | so a later check does not report them again as someone else's |
//! | IDLE | [`watch::Watch::new`] at SELECT; [`watch::Watch::wait`] from [`SessionView::mark`] (or poll [`watch::Watch::fd`]), then [`SessionView::check`] with [`Allow::AllUpdates`] | a wake only says "look": the check decides what changed |
//! | APPEND, delivery | [`Store::open_mailbox`], [`Mailbox::append`] (or [`Mailbox::stage`] then [`Mailbox::commit`] for a batch) | returns the UID once committed |
//!
//! A check with nothing new costs one shared lock and one header read; a
//! session that never checks never learns of other sessions' changes (and
//! holds expunged messages' records in memory until it does). The
//! `session_loop` example (`storage/examples/session_loop.rs`) is a
//! complete loop built from this table:
//!
//! ```
//! # fn main() -> mailstore::Result<()> {
//! use mailstore::{AppendOptions, Allow, MailboxName, Options, SessionView, Store, Update, UserName};
//!
//! # let tmp = tempfile::tempdir().unwrap();
//! let store = Store::open(tmp.path(), Options::default())?;
//! let user = UserName::new("alice")?;
//! store.ensure_mailbox(&user, &MailboxName::inbox())?;
//!
//! // SELECT INBOX
//! let mut mbox = store.open_mailbox(&user, &MailboxName::inbox())?;
//! let mut view = SessionView::open(&mut mbox)?;
//! assert_eq!(view.len(), 0);
//!
//! // Meanwhile a delivery (another handle: another thread or process).
//! let mut delivery = store.open_mailbox(&user, &MailboxName::inbox())?;
//! let uid = delivery.append(&b"Subject: hi\r\n\r\nhello\r\n"[..], AppendOptions::default())?;
//!
//! // NOOP: the session learns of it, as `* 1 EXISTS`.
//! let updates = view.check(&mut mbox, Allow::AllUpdates)?;
//! assert_eq!(updates, vec![Update::Exists(1)]);
//! assert_eq!(view.uid(1), Some(uid));
//! # Ok(()) }
//! ```
//!
//! # Promises
//!
//! * **Durable on return.** With [`Durability::Full`] (the default), a
//!   write that returns `Ok` has made its commit durable: the message
//!   bytes, their names and the index header are fsynced before
//!   [`Mailbox::append`] or [`Mailbox::commit`] returns the UID, and a
//!   flag change or expunge is fsynced before it returns. A server may
//!   acknowledge (IMAP `OK`, LMTP `250`, exit 0) then, not before.
//!   [`Durability::Relaxed`] skips every fsync: tests and benchmarks only.
//! * **Acknowledged messages stay.** A committed message stays, byte for
//!   byte, under its UID until it is expunged and repacked away; a UID and
//!   a generation are never handed out twice under one UIDVALIDITY.
//! * **Processes.** Every writer takes the mailbox's exclusive OFD lock on
//!   `.index`, readers a shared one; any number of processes may use one
//!   spool on a local filesystem. A writer killed at any step leaves the
//!   old or the new state, and the next locker repairs what it left
//!   (`docs/PROTOCOL.md`). NFS is untested (`docs/PROTOCOL.md` section 8);
//!   use [`watch::force_polling`] there.
//! * **Threads.** [`Store`] is `Send + Sync`: share one. A [`Mailbox`] is
//!   `Send`: use one handle per session (two handles in one process lock
//!   against each other as two processes do). A [`SessionView`] belongs to
//!   the handle it was opened with; pass that same handle to its calls.
//! * **Bounded.** Every count and size read from disk is checked before it
//!   sizes an allocation or a loop; damage is reported as
//!   [`Error::Corrupt`] with the file and byte offset, never used and never
//!   a panic.
//!
//! ```
//! fn shared<T: Send + Sync>() {}
//! fn sendable<T: Send>() {}
//! shared::<mailstore::Store>();
//! shared::<mailstore::watch::Watch>();
//! sendable::<mailstore::Mailbox>();
//! sendable::<mailstore::SessionView>();
//! ```
//!
//! # Errors and the replies they map to
//!
//! Every fallible call returns [`Error`]. [`Error::is_temporary`] says
//! whether retrying later may succeed (an MTA must be told to retry, not
//! bounce), [`Error::is_disk_full`] singles out ENOSPC/EDQUOT/EFBIG. The
//! project's own servers map them as follows (IMAP response codes of
//! RFC 5530 and RFC 9051 section 7.1; LMTP replies of RFC 2033 with the
//! enhanced status codes of RFC 3463):
//!
//! | error | IMAP | LMTP |
//! |---|---|---|
//! | [`Error::NoSuchUser`] | `NO` (LOGIN: `[AUTHENTICATIONFAILED]`) | `550 5.1.1` |
//! | [`Error::InvalidName`] | `NO [CANNOT]` | `550 5.1.3` (user name) |
//! | [`Error::NoSuchMailbox`] | `NO [NONEXISTENT]`; APPEND/COPY/MOVE: `NO [TRYCREATE]` | `550 5.2.0` (or deliver to INBOX) |
//! | [`Error::MailboxExists`] | `NO [ALREADYEXISTS]` | - |
//! | [`Error::HasChildren`] | `NO [HASCHILDREN]` | - |
//! | [`Error::LockTimeout`] | `NO [INUSE]` | `451 4.2.0` |
//! | [`Error::Corrupt`] | `NO [CORRUPTION]` (details to the log) | `451 4.3.0` |
//! | [`Error::Expunged`], [`Error::NoSuchUid`] | `NO [EXPUNGEISSUED]`; FETCH of body data: `NO` (RFC 2180 4.1.1) | - |
//! | [`Error::TooLarge`] | `NO [TOOBIG]` | `552 5.2.3` |
//! | [`Error::OverQuota`] | `NO [OVERQUOTA]` | `452 4.2.2` (or `552 5.2.2`) |
//! | [`Error::TooManyKeywords`], [`Error::MailboxFull`], [`Error::UidsExhausted`] | `NO [LIMIT]` | `550 5.2.0` |
//! | [`Error::InvalidKeyword`] | `NO [CANNOT]` | - |
//! | [`Error::MailboxDeleted`] | selected mailbox: `* BYE`, end the session | `451 4.2.0` |
//! | [`Error::Symlink`] | `NO [SERVERBUG]` | `550 5.7.0` |
//! | [`Error::Io`] | `NO [SERVERBUG]` | disk full `452 4.3.1`, else `451 4.3.0` |
//! | [`Error::UidTaken`], [`Error::UidPlan`], [`Error::UidValidityUsed`] | import tools only | - |
//! | [`Error::InjectedFault`] | tests only (`MAILSTORE_TEST_FAULT`) | temporary |
//!
//! # Versions: the crate and the on-disk format
//!
//! The index header carries a format version ([`format::VERSION`], 4
//! today; `docs/FORMAT.md` section 5). Every release reads every earlier
//! format version and writes the newest, upgrading a mailbox slot by slot
//! as it commits; it refuses a version it does not know (as corruption at
//! offset 8), never guessing. So:
//!
//! * a crate release that **writes a new format version** is a semver-major
//!   release, and every process on a spool (linked servers, `deliver`,
//!   `imapd-check`, tools) must be upgraded together: an older binary
//!   treats the newer slot as damage and refuses to write;
//! * any other release keeps the format, and processes built on different
//!   such releases can share a spool.
//!
//! `storage/CHANGELOG.md` lists the releases and the format each writes.
//!
//! # Configuration
//!
//! [`Config`] reads the project's `key = value` file
//! (`MAILSTORE_CONFIG`, else `/etc/mailstore.conf`): the spool, quotas,
//! the lock timeout and the message size limit. A linking server may
//! use it or build [`Options`] itself.
//!
//! # Surface
//!
//! The types above, re-exported at the crate root, are the surface a
//! server needs; the modules hold the rest of the public API:
//! [`config`], [`error`], [`mailbox`], [`names`], [`session`], [`store`],
//! [`watch`], [`transfer`] (COPY and MOVE), [`special_use`],
//! [`subscriptions`], [`recent`] (`\Recent`), [`dedup`] (duplicate
//! delivery suppression), [`scriptdir`] (per-user script directories),
//! [`import`] (keeping a source's UIDs), and for tools [`verify`],
//! [`recovery`] and [`quarantine`]. `mailstore::internals` (hidden from
//! these docs) is for the project's own binaries and tests only and is not
//! covered by semver.

#![deny(missing_docs)]

mod boot;
pub mod config;
pub mod dedup;
pub mod error;
pub mod format;
mod fsmode;
pub mod group;
pub mod import;
mod layout;
mod listcache;
mod lockwait;
pub mod mailbox;
mod namegen;
pub mod names;
pub mod quarantine;
pub mod recent;
pub mod recovery;
mod repack_list;
pub mod scriptdir;
pub mod sent_date;
pub mod session;
pub mod sharedfs;
pub mod special_use;
pub mod store;
pub mod subscriptions;
pub mod transfer;
mod tree;
pub mod verify;
pub mod watch;

pub use config::Config;
#[doc(hidden)]
pub mod internals;
// The crate's own code names them at the root, as before.
use internals::{changelog, fault, fsutil, index, lock, meta, stage, unordered};

pub use error::{Error, Result};
pub use format::{Flags, Header, Keywords, Record};
pub use fsutil::Dir;
pub use layout::SORT_KEYS_FILE;
pub use mailbox::{AppendOptions, Changes, FlagOp, Mailbox, StagedMessage};
pub use meta::validate_keyword;
pub use names::{MailboxName, UserName};
pub use session::{Allow, SessionView, Update};
pub use store::{Durability, Options, Store};
