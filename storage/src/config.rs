//! Store configuration: spool location, quota, defaults shared by the binaries.
