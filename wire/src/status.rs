//! Errors as gRPC statuses and back, so that each side says what went wrong
//! in the other's terms. (A conversion function each way: both types belong
//! to other crates, so `From` cannot be implemented here.)

use flotilla_shared::Error;
use tonic::{Code, Status};

/// The status a handler answers `error` with.
pub fn status_of(error: Error) -> Status {
    let message = error.to_string();
    match error {
        Error::Config(_) | Error::InvalidInput(_) | Error::Protocol(_) => {
            Status::invalid_argument(message)
        }
        Error::Conflict(_) => Status::failed_precondition(message),
        Error::NotFound(_) => Status::not_found(message),
        Error::Unauthenticated(_) => Status::unauthenticated(message),
        Error::Unavailable(_) => Status::unavailable(message),
        Error::Io { .. } | Error::Internal(_) => Status::internal(message),
    }
}

/// What a client makes of a status it got.
pub fn error_of(status: Status) -> Error {
    let message = status.message().to_string();
    let connection_broke = message.starts_with("h2 protocol error")
        || (matches!(status.code(), Code::Unknown | Code::Cancelled)
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
        Code::InvalidArgument => Error::InvalidInput(message),
        Code::FailedPrecondition | Code::AlreadyExists => Error::Conflict(message),
        Code::NotFound => Error::NotFound(message),
        Code::Unauthenticated | Code::PermissionDenied => Error::Unauthenticated(message),
        Code::Unavailable => Error::Unavailable(format!("coordinator unavailable: {message}")),
        _ => Error::Internal(message),
    }
}

/// `result.or_status()?` in a handler: the domain error answered as a status.
pub trait OrStatus<T> {
    fn or_status(self) -> Result<T, Status>;
}

impl<T> OrStatus<T> for Result<T, Error> {
    fn or_status(self) -> Result<T, Status> {
        self.map_err(status_of)
    }
}
