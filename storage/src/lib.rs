//! A Cyrus-style mail store: one directory per mailbox, one file per message
//! named by UID, and one index file whose header carries a generation counter.
//!
//! Writers take an exclusive lock, write, bump the generation last and make it
//! durable; readers re-check the generation under a shared lock. See
//! `docs/FORMAT.md` for the byte layout and `docs/PROTOCOL.md` for the lock and
//! write ordering that every public operation here follows.

mod boot;
pub mod config;
pub mod dedup;
pub mod error;
pub mod fault;
pub mod format;
pub mod fsutil;
pub mod import;
pub mod index;
pub mod lock;
pub mod mailbox;
pub mod meta;
pub mod names;
pub mod quarantine;
pub mod recent;
pub mod recovery;
mod repack_list;
pub mod scriptdir;
pub mod session;
pub mod sharedfs;
pub mod special_use;
pub mod stage;
pub mod store;
pub mod subscriptions;
pub mod transfer;
pub mod unordered;
pub mod verify;

pub use error::{Error, Result};
pub use format::{Flags, Header, Keywords, Record};
pub use mailbox::{AppendOptions, Changes, FlagOp, Mailbox, StagedMessage};
pub use names::{MailboxName, UserName};
pub use store::{Durability, Options, Store};
