//! Names of the store's files that several modules use: in a mailbox
//! directory the index file, the message files (`UID.`), the staging
//! directory, the full-text index and the special-use attribute; in a
//! user's directory the UIDVALIDITY counter, the name lock and the names
//! generation (docs/FORMAT.md §1 and §4). Kept below every module that
//! names them, so that none of them imports the mailbox handle, the
//! store or the index only for a file name.

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

/// In a mailbox directory: the full-text index (the `fts` crate's
/// `fts::DIR`, which does not depend on this one), derived from the
/// messages; reconstruct removes it (PROTOCOL.md §11).
pub const FTS_DIR: &str = ".fts";

/// In a mailbox directory: the IMAP server's sort and thread keys of its
/// messages (FORMAT.md §10), derived from the messages and checked
/// against each record, so reconstruct may leave it.
pub const SORT_KEYS_FILE: &str = ".sortkeys";

/// In a mailbox directory: its special-use attribute (RFC 6154).
pub const SPECIAL_USE_FILE: &str = ".special-use";

/// In a user's directory: the last UIDVALIDITY handed out.
pub const UIDVALIDITY_FILE: &str = ".uidvalidity";

/// In a user's directory: the lock every change of the user's mailbox
/// names takes (`Store::lock_names`).
pub const NAMES_LOCK: &str = ".names.lock";

/// In a user's directory: the names generation (`namegen.rs`).
pub const NAMES_GEN_FILE: &str = ".names.gen";
