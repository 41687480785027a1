//! How MongoDB's errors map onto [`StoreError`](crate::StoreError): which
//! codes are outages, and the few codes the store handles itself.

use mongodb::error::{ErrorKind, WriteFailure};

use crate::StoreError;

/// Server error codes that mean "this server cannot serve you right now"
/// rather than "your request is wrong": network trouble, shutdown, elections.
const TRANSIENT_CODES: &[i32] = &[
    6,     // HostUnreachable
    7,     // HostNotFound
    89,    // NetworkTimeout
    91,    // ShutdownInProgress
    189,   // PrimarySteppedDown
    262,   // ExceededTimeLimit
    9001,  // SocketException
    10107, // NotWritablePrimary
    11600, // InterruptedAtShutdown
    11602, // InterruptedDueToReplStateChange
    13435, // NotPrimaryNoSecondaryOk
    13436, // NotPrimaryOrSecondary
];

/// Labels a driver error with what we were doing.
pub(crate) fn labelled(op: &'static str) -> impl FnOnce(mongodb::error::Error) -> StoreError {
    move |source| StoreError::Mongo { op, source }
}

/// True for a server error code that is an outage, not a bad request.
pub(crate) fn is_transient(code: i32) -> bool {
    TRANSIENT_CODES.contains(&code)
}

/// True when a driver error is an outage (see [`StoreError::is_unavailable`]).
pub(crate) fn is_unavailable(error: &mongodb::error::Error) -> bool {
    if error.contains_label("RetryableWriteError") {
        return true;
    }
    match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Authentication { .. } => true,
        ErrorKind::Command(command) => is_transient(command.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(concern)) => is_transient(concern.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => is_transient(write.code),
        _ => false,
    }
}

/// The code of a unique-index violation (E11000).
pub(crate) const DUPLICATE_KEY: i32 = 11000;

/// True when `error` says the namespace does not exist (code 26).
pub(crate) fn is_namespace_not_found(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if command.code == 26)
}

/// True when the server does not implement a command or option (code 238),
/// as FerretDB answers for some options MongoDB has.
pub(crate) fn is_not_implemented(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if command.code == 238)
}

/// True when `error` says the namespace exists already (code 48).
pub(crate) fn is_namespace_exists(error: &mongodb::error::Error) -> bool {
    matches!(error.kind.as_ref(), ErrorKind::Command(command) if command.code == 48)
}

/// True when a driver error is a duplicate key (E11000) of a single write.
pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => write.code == DUPLICATE_KEY,
        ErrorKind::Command(command) => command.code == DUPLICATE_KEY,
        _ => false,
    }
}
