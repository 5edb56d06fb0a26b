//! A Sieve (RFC 5228) interpreter: parse, validate, run. No I/O of its own:
//! the caller hands in the message, the envelope and a [`Host`] for the
//! few questions only the store can answer (does a mailbox exist?), and
//! gets back the list of [`Action`]s to carry out. See README.md for the
//! language support and the limits.

mod compile;
mod encoded;
mod headers;
pub mod layout;
mod matcher;
mod message;
mod parse;
mod run;

pub use compile::{Extension, IncludeRef, MAX_WARNINGS, Script};
pub use message::Envelope;
pub use run::{
    Action, Context, DUPLICATE_DEFAULT_SECONDS, DUPLICATE_MAX_SECONDS, DuplicateMark, Host, Limits,
    NoHost, Outcome, RunOptions, RuntimeError,
};

use std::fmt;

/// A line and column (both from 1) in a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A compile error (syntax or validation), with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize)]
#[error("line {pos}: {message}")]
pub struct Error {
    pub pos: Pos,
    pub message: String,
}

impl Error {
    pub(crate) fn new(pos: Pos, message: impl Into<String>) -> Error {
        Error {
            pos,
            message: message.into(),
        }
    }
}

/// A construct that is valid but probably not what the author meant (an
/// invalid flag, a header name that can never match, ...): the script
/// compiles and runs; ManageSieve reports it as `OK (WARNINGS)`
/// (RFC 5804 1.3).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub pos: Pos,
    pub message: String,
}

impl Warning {
    pub(crate) fn new(pos: Pos, message: impl Into<String>) -> Warning {
        Warning {
            pos,
            message: message.into(),
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.pos, self.message)
    }
}
