//! The one error type of the core; the Python layer maps it to
//! ValueError / TypeError in a single place.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Unknown extraction mode.
    BadMode(String),
    /// A group with no solutions.
    EmptyGroup { group: usize },
    /// Two parallel inputs of different lengths.
    LengthMismatch { what: &'static str, expected: usize, got: usize },
    /// An index pair outside the texts.
    PairOutOfRange { pair: usize, index: i64, n: usize },
    /// A value of the wrong type (raised as TypeError).
    NotAString { what: String },
    /// Bandit parameters or state that make no sense.
    BadBandit(String),
}

impl Error {
    /// Whether Python should see a TypeError rather than a ValueError.
    pub fn is_type_error(&self) -> bool {
        matches!(self, Error::NotAString { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadMode(m) => {
                write!(f, "mode must be 'auto', 'strict' or 'flexible', got {m:?}")
            }
            Error::EmptyGroup { group } => write!(f, "group {group} has no solutions"),
            Error::LengthMismatch { what, expected, got } => {
                write!(f, "{what} has {got} entries, expected {expected} (one per group)")
            }
            Error::PairOutOfRange { pair, index, n } => {
                write!(f, "pairs[{pair}] holds index {index}, outside 0..{n}")
            }
            Error::NotAString { what } => write!(f, "{what}"),
            Error::BadBandit(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}
