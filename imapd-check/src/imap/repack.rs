//! Repacking after EXPUNGE.
//!
//! An expunged message keeps its index record (and its file) until a
//! repack. Every check after another session's flag change, and every
//! STORE and EXPUNGE, reads all records, so a mailbox whose clients expunge
//! would get slower with every message ever expunged (measured: the load
//! benchmark's INBOX of 1,000 live messages grew past 10,000 records in
//! two minutes, and our ops/s fell by half). After an EXPUNGE or CLOSE
//! the server repacks once the expunged records outnumber both
//! [`REPACK_MIN`] and the live ones: each expunged message is then copied
//! about once, amortized. Sessions that still hold an expunge they have
//! not reported keep its sequence number; a FETCH of its body then gets a
//! NO (RFC 2180 4.1.1, `storage::session`).

use storage::Mailbox;

/// Expunged records tolerated whatever the mailbox size.
const REPACK_MIN: u32 = 1000;

/// Repacks `mbox` if enough of its records are expunged. A failure is
/// logged: the expunge itself is done, and the next one tries again.
pub(super) fn after_expunge(mbox: &mut Mailbox) {
    let h = match mbox.header() {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("not repacking after EXPUNGE: {e}");
            return;
        }
    };
    let dead = h.num_records.saturating_sub(h.exists);
    if dead < REPACK_MIN || dead < h.exists {
        return;
    }
    match mbox.repack() {
        Ok(o) => tracing::debug!(removed = o.removed.len(), kept = o.kept, "repacked"),
        Err(e) => tracing::warn!("repack after EXPUNGE failed: {e}"),
    }
}
