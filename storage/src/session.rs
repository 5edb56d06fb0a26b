//! Per-session view of one mailbox (issue 3). Filled in by the session work.
