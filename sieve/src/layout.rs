//! Where a user's scripts live in the store (docs/FORMAT.md §9): names and
//! rules only, shared by `deliver` and the tools; this crate does no I/O.

/// The directory of a user's scripts, inside their store directory.
pub const SIEVE_DIR: &str = ".sieve";
/// The file naming the active script (one line: the script's name).
pub const ACTIVE_FILE: &str = "active";
/// The extension of a script file (`NAME.sieve`).
pub const EXTENSION: &str = "sieve";
/// Largest script file accepted.
pub const MAX_SCRIPT_FILE: u64 = crate::parse::MAX_SCRIPT as u64;

/// A script name: 1 to 128 bytes, no `/`, no leading `.`, no control characters.
pub fn valid_script_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with('.')
        && !n.chars().any(|c| c == '/' || c.is_control())
}

/// Largest `active` file read: a script name (at most 128 bytes) and a
/// line end, with room to spare.
pub const MAX_ACTIVE_FILE: u64 = 256;

/// The active script's name from the `active` file's content: the line
/// trimmed; `None` when empty (no script is active). Every reader of the
/// file (`deliver`, `sieve-check`, ManageSieve) goes through this.
pub fn active_name(content: &[u8]) -> Option<String> {
    Some(String::from_utf8_lossy(content).trim().to_string()).filter(|s| !s.is_empty())
}

/// The file name of script `name`.
pub fn script_file(name: &str) -> String {
    format!("{name}.{EXTENSION}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_file_content() {
        assert_eq!(active_name(b"main\n").as_deref(), Some("main"));
        assert_eq!(active_name(b" \n"), None);
        assert_eq!(active_name(b""), None);
    }

    #[test]
    fn names() {
        assert!(valid_script_name("main"));
        assert!(valid_script_name("vacation rules"));
        assert!(!valid_script_name(""));
        assert!(!valid_script_name(".hidden"));
        assert!(!valid_script_name("a/b"));
        assert!(!valid_script_name("a\nb"));
        assert!(!valid_script_name(&"x".repeat(129)));
        assert_eq!(script_file("main"), "main.sieve");
    }
}
