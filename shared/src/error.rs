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

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::Config(_) | Error::InvalidInput(_) | Error::Protocol(_) => {
                tonic::Status::invalid_argument(message)
            }
            Error::Conflict(_) => tonic::Status::failed_precondition(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::Io { .. } | Error::Internal(_) => tonic::Status::internal(message),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        let connection_broke = message.starts_with("h2 protocol error")
            || (matches!(status.code(), tonic::Code::Unknown | tonic::Code::Cancelled)
                && matches!(
                    message.as_str(),
                    "transport error" | "operation was canceled"
                ));
        if connection_broke {
            // Also what a client in the clear sees from a coordinator that serves TLS.
            return Error::Unavailable(format!(
                "the connection to the coordinator broke ({message}); if it serves TLS, \
                 pass --tls-ca FILE (the CA that signed its certificate)"
            ));
        }
        match status.code() {
            tonic::Code::InvalidArgument => Error::InvalidInput(message),
            tonic::Code::FailedPrecondition | tonic::Code::AlreadyExists => {
                Error::Conflict(message)
            }
            tonic::Code::NotFound => Error::NotFound(message),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                Error::Unauthenticated(message)
            }
            tonic::Code::Unavailable => {
                Error::Unavailable(format!("coordinator unavailable: {message}"))
            }
            _ => Error::Internal(message),
        }
    }
}
