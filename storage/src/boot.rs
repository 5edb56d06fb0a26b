//! Which boot of the machine wrote a header slot.
//!
//! A header slot of an append is followed by a *boot stamp* (FORMAT.md
//! §1): the kernel's boot ID at the time of the write, bound to that slot
//! by a CRC32 over the ID and the slot's own CRC. A reader that finds the
//! stamp of the current boot on the newest slot knows no power cut came
//! between that commit and now: the page cache still holds everything the
//! writer wrote before its header (staged messages, records), so the
//! commit is complete by construction, and anything on disk that does
//! not match it is damage, never a torn commit to be rolled back
//! (PROTOCOL.md §3). Only a slot written before the last boot (or by a
//! version without stamps) is judged on the evidence of the disk.

use std::sync::OnceLock;

/// Bytes of a stamp: 16 of boot ID, 4 of CRC32.
pub const STAMP_SIZE: usize = 20;

/// The running kernel's boot ID, or `None` where `/proc` does not say.
fn kernel_boot_id() -> Option<[u8; 16]> {
    static ID: OnceLock<Option<[u8; 16]>> = OnceLock::new();
    *ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: Vec<u8> = text.bytes().filter(|b| b.is_ascii_hexdigit()).collect();
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (i, pair) in hex.chunks_exact(2).enumerate() {
            id[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        Some(id)
    })
}

/// The boot ID stamps are compared with: the kernel's, changed by each
/// [`crate::fault::simulate_reboot`] (tests that build power-loss states
/// in one process).
fn current() -> Option<[u8; 16]> {
    let mut id = kernel_boot_id()?;
    let reboots = crate::fault::reboots();
    for (i, b) in reboots.to_le_bytes().iter().enumerate() {
        id[i] ^= b;
    }
    Some(id)
}

fn stamp_crc(id: &[u8; 16], header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(id);
    h.update(&header[header.len() - 4..]);
    h.finalize()
}

/// The stamp to write after the encoded header `header` (all zeros when
/// the boot ID is unknown: such a slot is judged on evidence).
pub fn stamp(header: &[u8]) -> [u8; STAMP_SIZE] {
    let mut out = [0u8; STAMP_SIZE];
    if let Some(id) = current() {
        out[..16].copy_from_slice(&id);
        out[16..].copy_from_slice(&stamp_crc(&id, header).to_le_bytes());
    }
    out
}

/// Whether `stamp` says that the slot holding `header` was written during
/// the current boot.
pub fn written_this_boot(header: &[u8], stamp: &[u8]) -> bool {
    let Some(id) = current() else {
        return false;
    };
    stamp.len() == STAMP_SIZE
        && stamp[..16] == id
        && stamp[16..] == stamp_crc(&id, header).to_le_bytes()
}

/// Bytes of a count stamp ([`count_stamp`]).
pub const COUNT_STAMP_SIZE: usize = 20;

/// The count stamp (FORMAT.md §2, offset 2056): the boot ID when a writer
/// last recounted the header from every record, and a CRC32 binding it.
/// All zeros when the boot ID is unknown (never current).
pub fn count_stamp() -> [u8; COUNT_STAMP_SIZE] {
    let mut out = [0u8; COUNT_STAMP_SIZE];
    if let Some(id) = current() {
        out[..16].copy_from_slice(&id);
        out[16..].copy_from_slice(&stamp_crc(&id, b"CNTS").to_le_bytes());
    }
    out
}

/// Whether `stamp` is a count stamp of the current boot.
pub fn counted_this_boot(stamp: &[u8]) -> bool {
    let Some(id) = current() else {
        return false;
    };
    stamp.len() == COUNT_STAMP_SIZE
        && stamp[..16] == id
        && stamp[16..] == stamp_crc(&id, b"CNTS").to_le_bytes()
}
