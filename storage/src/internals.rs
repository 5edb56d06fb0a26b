//! Internals for the project's own binaries, tools and tests: the lock,
//! the index file, directory handles, the keyword table, staging, fault
//! injection.
//!
//! **Not part of the library's API and not covered by semver**: anything
//! here may change or vanish in any release. A server linking this crate
//! uses the documented modules; if it needs something from here, that is
//! a missing public API (please report it). The files stay at the top of
//! `src/` (`#[path]`); the crate's own code names them at the root.

#[path = "changelog.rs"]
pub mod changelog;
#[path = "fault.rs"]
pub mod fault;
#[path = "fsutil.rs"]
pub mod fsutil;
#[path = "index.rs"]
pub mod index;
#[path = "lock.rs"]
pub mod lock;
#[path = "meta.rs"]
pub mod meta;
#[path = "stage.rs"]
pub mod stage;
#[path = "unordered.rs"]
pub mod unordered;
