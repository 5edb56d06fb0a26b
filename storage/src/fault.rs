//! Test-only fault points on the write paths.
//!
//! A fault point is a named step of a write ordering (see
//! `docs/PROTOCOL.md`). Nothing happens at one unless the environment
//! variable `MAILSTORE_TEST_FAULT` names it, as `POINT=ACTION` entries
//! separated by commas, where ACTION is
//! - `kill`: the process sends itself SIGKILL there (a crash);
//! - `error`: the operation fails there with [`Error::InjectedFault`];
//! - `pause:MS`: the process sleeps MS milliseconds there (race harness);
//! - `limit:N`: not a step but a bound the code asks for with [`limit`]
//!   (to reach paths that otherwise need a resource to run out).
//!
//! The variable is read once per process. Production never sets it.

use std::sync::OnceLock;
use std::time::Duration;

use crate::error::{Error, Result};

pub const ENV: &str = "MAILSTORE_TEST_FAULT";

#[derive(Clone, Debug)]
enum Action {
    Kill,
    Error,
    Pause(Duration),
    Limit(usize),
}

fn table() -> &'static Vec<(String, Action)> {
    static TABLE: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let Ok(spec) = std::env::var(ENV) else {
            return Vec::new();
        };
        spec.split(',')
            .filter_map(|entry| {
                let (point, action) = entry.trim().split_once('=')?;
                let action = match action {
                    "kill" => Action::Kill,
                    "error" => Action::Error,
                    a if a.starts_with("limit:") => Action::Limit(a[6..].parse().ok()?),
                    a => Action::Pause(Duration::from_millis(
                        a.strip_prefix("pause:")?.parse().ok()?,
                    )),
                };
                Some((point.to_string(), action))
            })
            .collect()
    })
}

/// Marks a step of a write ordering. Returns an injected error when the
/// environment asks for one here.
pub fn point(name: &'static str) -> Result<()> {
    let t = table();
    if t.is_empty() {
        return Ok(());
    }
    for (p, action) in t {
        if p == name {
            match action {
                Action::Kill => {
                    // SAFETY: raising a signal on ourselves has no memory effects.
                    unsafe { libc::raise(libc::SIGKILL) };
                }
                Action::Error => return Err(Error::InjectedFault(name)),
                Action::Pause(d) => std::thread::sleep(*d),
                Action::Limit(_) => {}
            }
        }
    }
    Ok(())
}

/// The bound `name=limit:N` sets in the environment, if any.
pub fn limit(name: &'static str) -> Option<usize> {
    table().iter().find_map(|(p, a)| match a {
        Action::Limit(n) if p == name => Some(*n),
        _ => None,
    })
}

static REBOOTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// For tests that build the state a power cut leaves by writing files in
/// the process that made them: from now on this process compares boot
/// stamps (`boot.rs`) as if the machine had rebooted since every write
/// so far. Production never calls it.
pub fn simulate_reboot() {
    REBOOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// `MAILSTORE_TEST_REBOOT=1` in a child's environment: the same as one
/// [`simulate_reboot`] at its start.
pub const REBOOT_ENV: &str = "MAILSTORE_TEST_REBOOT";

pub(crate) fn reboots() -> u64 {
    static FROM_ENV: OnceLock<u64> = OnceLock::new();
    let env = *FROM_ENV.get_or_init(|| {
        std::env::var(REBOOT_ENV)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    });
    env + REBOOTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Fault points outside [`POINTS`]: reached only in states a crash
/// campaign does not build in reasonable time (a change log at its
/// rotation bound); `storage/tests/crash.rs` kills at each of them.
pub const RARE_POINTS: &[&str] = &["changes.after_rotate"];

/// Every fault point in the library, in write order per operation. Crash
/// tests iterate over this list so that a new point is tested by default.
pub const POINTS: &[&str] = &[
    "append.after_stage_write",
    "append.after_stage_fsync",
    "append.after_lock",
    "append.after_link",
    "append.after_grow",
    "append.after_records",
    "append.after_header",
    "append.after_header_write_out",
    "append.after_header_fsync",
    "settle.after_dir_fsync",
    "store.after_records",
    "store.after_header",
    "expunge.after_records",
    "expunge.after_header",
    "batch.after_records",
    "batch.after_header",
    "changes.after_block",
    "repack.after_new_index",
    "repack.after_mark_superseded",
    "repack.after_log_reset",
    "repack.after_rename",
    "repack.after_unlink",
    "meta.after_write",
    "import.after_reserve_header",
    "import.after_reserve_fsync",
    "import.after_batch_staged",
    "import.after_batch_sync",
    "copy.after_stage",
    "copy.after_lock",
    "copy.after_rename",
    "copy.after_records",
    "copy.after_header",
    "move.after_stage",
    "move.after_lock",
    "move.after_journal",
    "move.after_rename",
    "move.after_records",
    "move.after_dst_commit",
    "move.after_src_records",
    "move.after_src_expunge",
    "move.after_dst_clear",
];

/// Fault points of the changes of a user's mailbox names (create, delete,
/// rename, special use; PROTOCOL.md §6, §6b), in write order:
/// `storage/tests/names_crash.rs` kills at each of them and checks that
/// the next listing, cached or not, is right.
pub const NAMES_POINTS: &[&str] = &[
    "names.after_begin",
    "create.after_link",
    "special_use.after_create",
    "delete.after_mark",
    "delete.after_commit",
    "rename.after_rename",
    "names.before_end",
];
