//! Flotilla's error kinds and their one mapping to gRPC codes and exit codes.

use crate::config::ConfigError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes, documented in the README.
pub mod exit_code {
    /// Everything asked for was done.
    pub const OK: i32 = 0;
    /// An unexpected failure (I/O, internal error).
    pub const FAILURE: i32 = 1;
    /// Bad command line or invalid experiment file.
    pub const INVALID_INPUT: i32 = 2;
    /// The experiment ended with runs that failed for good and `continue_on_error: false`,
    /// or was cancelled.
    pub const EXPERIMENT_FAILED: i32 = 3;
    /// The coordinator could not be reached.
    pub const UNAVAILABLE: i32 = 4;
    /// The token was refused.
    pub const UNAUTHENTICATED: i32 = 5;
    /// The experiment exists with a different config.
    pub const CONFLICT: i32 = 6;
    /// No such experiment.
    pub const NOT_FOUND: i32 = 7;
    /// The experiment's budget ran out before every run could start: the
    /// results are partial.
    pub const BUDGET_EXHAUSTED: i32 = 8;
    /// Interrupted with Ctrl+C.
    pub const INTERRUPTED: i32 = 130;
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    InvalidInput(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Unavailable(String),
    /// The cause is part of the message (not a `source`), so that it survives
    /// the trip through a gRPC status.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            cause: source,
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) | Error::InvalidInput(_) => exit_code::INVALID_INPUT,
            Error::Conflict(_) => exit_code::CONFLICT,
            Error::NotFound(_) => exit_code::NOT_FOUND,
            Error::Unauthenticated(_) => exit_code::UNAUTHENTICATED,
            Error::Unavailable(_) => exit_code::UNAVAILABLE,
            Error::Io { .. } | Error::Protocol(_) | Error::Internal(_) => exit_code::FAILURE,
        }
    }
}
