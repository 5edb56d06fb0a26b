//! Consistency checks of a mailbox (idx-inspect verify) and index reconstruction.
