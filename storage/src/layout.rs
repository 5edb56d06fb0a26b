//! Names of a mailbox directory's entries that the mailbox handle, the
//! staging area, recovery, the checks and the error classification all
//! use: the index file, the message files (`UID.`) and the staging
//! directory (docs/FORMAT.md §1 and §4). Kept below every module that
//! names them, so that none of them imports the mailbox handle or the
//! index only for a file name.

/// The index file of a mailbox directory.
pub const INDEX_NAME: &str = ".index";

/// The mailbox subdirectory where messages are written before their commit.
pub const STAGE_DIR: &str = ".stage";

/// The file name of the message with `uid`.
pub fn message_file_name(uid: u32) -> String {
    format!("{uid}.")
}

/// Parses a message file name back into its UID.
pub fn parse_message_file_name(name: &[u8]) -> Option<u32> {
    let digits = name.strip_suffix(b".")?;
    if digits.is_empty() || digits[0] == b'0' || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
